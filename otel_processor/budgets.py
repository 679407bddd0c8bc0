"""Monthly budgets per tenant, member and agent, and each tenant's calendar timezone.

The budgets file (YAML or JSON), every key optional::

    timezone: UTC                   # calendar periods of tenants not listed below
    tenants:
      acme:
        timezone: Asia/Shanghai     # acme's days and months
        monthly_tokens: 5000000     # input + output tokens per calendar month
        monthly_usd: 250            # cost per calendar month (a number or a decimal string)
        thresholds: [50, 80, 100]   # percent: warning, throttle, exhausted
        members:
          alice: {monthly_tokens: 1000000}
        agents:
          translate: {monthly_usd: "25.50", thresholds: [60, 90, 100]}

A budget has a token limit, a USD limit, or both; its ratio is the larger of used / limit.
Members and agents inherit their tenant's thresholds unless they set their own. The state
is ``ok`` below the first threshold, then ``warning``, ``throttle`` and ``exhausted``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from otel_processor.periods import (
    AGENT,
    COST,
    INPUT,
    MEMBER,
    MONTH,
    OUTPUT,
    TENANT,
    Calendar,
    CalendarError,
    Periods,
)
from otel_processor.prices import PICO_PER_USD

DEFAULT_THRESHOLDS = (50, 80, 100)
STATES = ("ok", "warning", "throttle", "exhausted")
WARNING, THROTTLE, EXHAUSTED = "warning", "throttle", "exhausted"
_LIMIT_KEYS = ("monthly_tokens", "monthly_usd", "thresholds")


class BudgetError(ValueError):
    """A budgets file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Budget:
    tenant: str
    scope: str  # tenant, member or agent
    id: str  # the tenant's, member's or agent's id
    limit_tokens: int | None
    limit_pico: int | None  # USD, in pico-USD (exact)
    thresholds: tuple[Decimal, Decimal, Decimal]  # percent, ascending

    @property
    def limit_usd(self) -> float | None:
        return None if self.limit_pico is None else self.limit_pico / PICO_PER_USD


@dataclass(frozen=True)
class Usage:
    """One scope's usage of one month, and what its budget (if any) makes of it."""

    tenant: str
    scope: str
    id: str
    period: str  # YYYY-MM, the tenant's calendar month
    used_tokens: int
    used_pico: int
    budget: Budget | None

    @property
    def used_usd(self) -> float:
        return self.used_pico / PICO_PER_USD

    @property
    def ratio(self) -> float | None:
        b = self.budget
        if b is None:
            return None
        ratios = []
        if b.limit_tokens is not None:
            ratios.append(Decimal(self.used_tokens) / b.limit_tokens)
        if b.limit_pico is not None:
            ratios.append(Decimal(self.used_pico) / b.limit_pico)
        return float(max(ratios))

    @property
    def state(self) -> str:
        b = self.budget
        if b is None:
            return "ok"
        # exact: compared in integers, not through the float ratio
        percent = max(
            ([Decimal(self.used_tokens) * 100 / b.limit_tokens] if b.limit_tokens else [])
            + ([Decimal(self.used_pico) * 100 / b.limit_pico] if b.limit_pico else [])
        )
        state = "ok"
        for name, threshold in zip(STATES[1:], b.thresholds, strict=True):
            if percent >= threshold:
                state = name
        return state

    def as_json(self) -> dict[str, Any]:
        b = self.budget
        return {
            "tenant": self.tenant, "scope": self.scope, "id": self.id, "period": self.period,
            "used_tokens": self.used_tokens,
            "limit_tokens": None if b is None else b.limit_tokens,
            "used_usd": self.used_usd,
            "limit_usd": None if b is None else b.limit_usd,
            "ratio": self.ratio, "state": self.state,
            "thresholds": None if b is None else [float(t) / 100 for t in b.thresholds],
        }


@dataclass
class Budgets:
    calendar: Calendar = field(default_factory=Calendar)
    by_key: dict[tuple[str, str, str], Budget] = field(default_factory=dict)

    def usage(self, periods: Periods, tenant: str, scope: str, id_: str,
              now: float) -> Usage:
        """``scope``'s usage this month (the tenant's calendar), with its budget."""
        month = self.calendar.bounds(tenant, now)[MONTH][0]
        amounts = periods.amounts(tenant, month, scope, id_)
        return Usage(tenant, scope, id_, month, amounts[INPUT] + amounts[OUTPUT],
                     amounts[COST], self.by_key.get((tenant, scope, id_)))


def load_budgets(path: str | os.PathLike | None) -> Budgets:
    """The budgets file at ``path`` (``None`` or "": no budgets, every tenant in UTC)."""
    if not path:
        return Budgets()
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise BudgetError(f"{source}: cannot read the budgets file: {exc}") from exc
    try:
        doc = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise BudgetError(f"{source}: not valid YAML/JSON: {exc}") from exc
    return parse_budgets(doc if doc is not None else {}, source)


def parse_budgets(doc: Any, source: str = "budgets") -> Budgets:
    if not isinstance(doc, Mapping):
        raise BudgetError(f"{source}: expected a mapping with 'timezone' and 'tenants'")
    _only(doc, ("timezone", "tenants"), source)
    default = _text(doc.get("timezone", "UTC"), f"{source}: timezone")
    tenants = doc.get("tenants") or {}
    if not isinstance(tenants, Mapping):
        raise BudgetError(f"{source}: tenants must be a mapping of tenant id to settings")
    zones: dict[str, str] = {}
    out: dict[tuple[str, str, str], Budget] = {}
    for tenant, settings in tenants.items():
        where = f"{source}: tenants.{tenant}"
        tenant = _text(tenant, where)
        settings = settings or {}
        if not isinstance(settings, Mapping):
            raise BudgetError(f"{where}: expected a mapping")
        _only(settings, ("timezone", "members", "agents", *_LIMIT_KEYS), where)
        if "timezone" in settings:
            zones[tenant] = _text(settings["timezone"], f"{where}.timezone")
        thresholds = _thresholds(settings.get("thresholds", DEFAULT_THRESHOLDS),
                                 f"{where}.thresholds")
        budget = _budget(settings, tenant, TENANT, tenant, thresholds, where)
        if budget is not None:
            out[(tenant, TENANT, tenant)] = budget
        for scope, key in ((MEMBER, "members"), (AGENT, "agents")):
            entries = settings.get(key) or {}
            if not isinstance(entries, Mapping):
                raise BudgetError(f"{where}.{key}: expected a mapping of id to limits")
            for id_, limits in entries.items():
                w = f"{where}.{key}.{id_}"
                id_ = _text(id_, w)
                if not isinstance(limits, Mapping):
                    raise BudgetError(f"{w}: expected monthly_tokens and/or monthly_usd")
                _only(limits, _LIMIT_KEYS, w)
                own = _thresholds(limits.get("thresholds", thresholds), f"{w}.thresholds")
                b = _budget(limits, tenant, scope, id_, own, w)
                if b is None:
                    raise BudgetError(f"{w}: set monthly_tokens and/or monthly_usd")
                out[(tenant, scope, id_)] = b
    try:
        calendar = Calendar(zones, default)
    except CalendarError as exc:
        raise BudgetError(f"{source}: {exc}") from None
    return Budgets(calendar, out)


def _only(mapping: Mapping, known: tuple[str, ...], where: str) -> None:
    unknown = [k for k in mapping if k not in known]
    if unknown:
        raise BudgetError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BudgetError(f"{where}: expected a non-empty string, got {value!r:.60}")
    return value.strip()


def _budget(settings: Mapping, tenant: str, scope: str, id_: str,
            thresholds: tuple, where: str) -> Budget | None:
    tokens = settings.get("monthly_tokens")
    usd = settings.get("monthly_usd")
    if tokens is None and usd is None:
        return None
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)
                               or tokens < 1):
        raise BudgetError(f"{where}.monthly_tokens: expected a positive integer, "
                          f"got {tokens!r:.40}")
    pico = None
    if usd is not None:
        try:
            if isinstance(usd, bool):
                raise InvalidOperation
            amount = Decimal(str(usd))
        except InvalidOperation:
            raise BudgetError(f"{where}.monthly_usd: expected a positive number, "
                              f"got {usd!r:.40}") from None
        if not amount.is_finite() or amount <= 0:
            raise BudgetError(f"{where}.monthly_usd: expected a positive number, got {usd!r}")
        pico_exact = amount * PICO_PER_USD
        if pico_exact != pico_exact.to_integral_value():
            raise BudgetError(f"{where}.monthly_usd: more than 12 decimal places: {usd!r}")
        pico = int(pico_exact)
    return Budget(tenant, scope, id_, tokens, pico, thresholds)


def _thresholds(value: Any, where: str) -> tuple[Decimal, Decimal, Decimal]:
    if isinstance(value, tuple) and len(value) == 3 and all(
            isinstance(v, Decimal) for v in value):
        return value  # inherited, checked already
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise BudgetError(f"{where}: expected three percentages [warning, throttle, "
                          f"exhausted], got {value!r:.60}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise BudgetError(f"{where}: {v!r:.40} is not a number")
        try:
            d = Decimal(str(v))
        except InvalidOperation:
            raise BudgetError(f"{where}: {v!r:.40} is not a number") from None
        if not d.is_finite() or d <= 0:
            raise BudgetError(f"{where}: thresholds must be positive percentages, got {v!r}")
        out.append(d)
    if not out[0] < out[1] < out[2]:
        raise BudgetError(f"{where}: thresholds must ascend (warning < throttle < exhausted),"
                          f" got {list(value)}")
    return tuple(out)
