"""Exact totals by tuple key, with a series cap per metric.

Attributed events become *increments* ``(family name, label values, amount)``; the ledger
adds them up under one lock. The service's durable store persists the same increments, so
the in-memory ledger and the store never disagree on what an event is worth.
Amounts are integers: tokens, counts, and cost in pico-USD (exact, see ``prices.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from otel_processor import metrics as m
from otel_processor.attribution import (
    AGENT_INVOCATION,
    HeatEvent,
    Unattributed,
    UsageEvent,
)

Increment = tuple[str, tuple[str, ...], int]

#: Distinct label sets per metric before ids fold into ``__overflow__``.
DEFAULT_MAX_SERIES_PER_METRIC = 20_000
#: Distinct (agent, caller) pairs remembered for ``llm_agent_users``.
DEFAULT_MAX_AGENT_USERS = 1_000_000

_FAMILIES = {f.name: f for f in m.LEDGER_COUNTERS}


def usage_increments(event: UsageEvent) -> list[Increment]:
    """What one attributed model call adds to the cost metrics (R1-R5, R7)."""
    t, model = event.tenant, event.model
    tin, tout = event.input_tokens, event.output_tokens
    out: list[Increment] = [
        (m.MODEL_TOKENS.name, (t, model, "input"), tin),
        (m.MODEL_TOKENS.name, (t, model, "output"), tout),
        (m.MODEL_REQUESTS.name, (t, model, event.outcome), 1),
        (m.MEMBER_TOKENS.name, (t, event.caller, "input"), tin),
        (m.MEMBER_TOKENS.name, (t, event.caller, "output"), tout),
    ]
    if event.cache_read_tokens:
        out.append((m.MODEL_CACHE_TOKENS.name, (t, model, "read"), event.cache_read_tokens))
    if event.cache_write_tokens:
        out.append((m.MODEL_CACHE_TOKENS.name, (t, model, "write"), event.cache_write_tokens))
    if event.agent is not None:
        out.append((m.AGENT_TOKENS.name, (t, event.agent, "input"), tin))
        out.append((m.AGENT_TOKENS.name, (t, event.agent, "output"), tout))
    if event.workflow is not None:
        out.append((m.WORKFLOW_TOKENS.name, (t, event.workflow, "input"), tin))
        out.append((m.WORKFLOW_TOKENS.name, (t, event.workflow, "output"), tout))
    cost = event.cost_pico
    if cost is None:
        out.append((m.UNPRICED_TOKENS.name, (model,), tin + tout))
    else:
        out.append((m.MODEL_COST.name, (t, model), cost))
        out.append((m.MEMBER_COST.name, (t, event.caller), cost))
        if event.agent is not None:
            out.append((m.AGENT_COST.name, (t, event.agent), cost))
        if event.workflow is not None:
            out.append((m.WORKFLOW_COST.name, (t, event.workflow), cost))
    return out


def unattributed_increments(event: Unattributed) -> list[Increment]:
    return [(m.UNATTRIBUTED_TOKENS.name, (event.reason,), event.tokens)]


def heat_increments(event: HeatEvent) -> list[Increment]:
    if event.kind == AGENT_INVOCATION:
        return [(m.AGENT_INVOCATIONS.name, (event.owner_tenant, event.asset), 1)]
    return [(m.WORKFLOW_RUNS.name, (event.owner_tenant, event.asset), 1)]


def effects(
    event: UsageEvent | Unattributed | HeatEvent,
) -> tuple[list[Increment], tuple[str, str, str] | None]:
    """An attribution result as increments, and the (owner, agent, caller) it makes known."""
    if isinstance(event, UsageEvent):
        return usage_increments(event), None
    if isinstance(event, Unattributed):
        return unattributed_increments(event), None
    user = None
    if event.kind == AGENT_INVOCATION and event.caller is not None:
        user = (event.owner_tenant, event.asset, event.caller)
    return heat_increments(event), user


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of the ledger, taken under its lock."""

    counters: dict[str, dict[tuple[str, ...], int]]
    agent_users: dict[tuple[str, str], int] = field(default_factory=dict)

    def value(self, family: str, *labels: str) -> int:
        return self.counters.get(family, {}).get(tuple(labels), 0)


class Ledger:
    """Exact totals by tuple key; thread-safe; bounded."""

    def __init__(
        self,
        *,
        max_series_per_metric: int = DEFAULT_MAX_SERIES_PER_METRIC,
        max_agent_users: int = DEFAULT_MAX_AGENT_USERS,
    ) -> None:
        if max_series_per_metric < 1:
            raise ValueError(f"max_series_per_metric must be >= 1, got {max_series_per_metric}")
        self._max_series = max_series_per_metric
        self._max_agent_users = max_agent_users
        self._lock = threading.Lock()
        # family name -> label values -> amount; guarded by _lock
        self._counters: dict[str, dict[tuple[str, ...], int]] = {
            f.name: {} for f in m.LEDGER_COUNTERS
        }
        for name, keys in m.KNOWN_SERIES.items():
            for key in keys:
                self._counters[name][key] = 0
        # (owner_tenant, agent) -> distinct callers; guarded by _lock, bounded in total
        self._agent_users: dict[tuple[str, str], set[str]] = {}
        self._agent_user_pairs = 0  # guarded by _lock

    def add(
        self, increments: Iterable[Increment], applied: list[Increment] | None = None
    ) -> None:
        """Add increments; past a metric's cap its id labels fold into ``__overflow__``.

        With ``applied``, what was really added (overflow keys, overflow counts) is appended
        to it, for a store that must persist exactly what the ledger holds.
        """
        with self._lock:
            for name, key, amount in increments:
                table = self._counters[name]
                if key not in table and len(table) >= self._max_series:
                    key = self._overflow_key(name, key, applied)
                table[key] = table.get(key, 0) + amount
                if applied is not None:
                    applied.append((name, key, amount))

    def _overflow_key(
        self, name: str, key: tuple[str, ...], applied: list[Increment] | None
    ) -> tuple[str, ...]:
        # caller holds _lock
        free = _FAMILIES[name].free
        overflow = m.SERIES_OVERFLOW.name
        self._counters[overflow][(name,)] = self._counters[overflow].get((name,), 0) + 1
        if applied is not None:
            applied.append((overflow, (name,), 1))
        return tuple(m.OVERFLOW if i in free else v for i, v in enumerate(key))

    def reset(self) -> None:
        """Forget everything (before loading the durable state again)."""
        fresh = Ledger(
            max_series_per_metric=self._max_series, max_agent_users=self._max_agent_users
        )
        with self._lock:
            self._counters = fresh._counters
            self._agent_users = fresh._agent_users
            self._agent_user_pairs = 0

    def add_agent_user(self, owner_tenant: str, agent: str, caller: str) -> bool:
        """Remember a distinct caller of an agent (R6); False when the bound is reached."""
        with self._lock:
            users = self._agent_users.get((owner_tenant, agent))
            if users is None:
                users = self._agent_users[(owner_tenant, agent)] = set()
            if caller in users:
                return True
            if self._agent_user_pairs >= self._max_agent_users:
                overflow = self._counters[m.SERIES_OVERFLOW.name]
                key = (m.AGENT_USERS.name,)
                overflow[key] = overflow.get(key, 0) + 1
                return False
            users.add(caller)
            self._agent_user_pairs += 1
            return True

    def record(self, event: UsageEvent | Unattributed | HeatEvent) -> None:
        """Add one attribution result."""
        increments, user = effects(event)
        self.add(increments)
        if user is not None:
            self.add_agent_user(*user)

    def load(
        self,
        totals: dict[str, dict[tuple[str, ...], int]],
        agent_users: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        """Add persisted totals and users (a restart); unknown families are ignored."""
        with self._lock:
            for name, table in totals.items():
                mine = self._counters.get(name)
                if mine is None:
                    continue
                for key, amount in table.items():
                    mine[key] = mine.get(key, 0) + amount
        for owner, agent, caller in agent_users:
            self.add_agent_user(owner, agent, caller)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                {name: dict(table) for name, table in self._counters.items()},
                {key: len(users) for key, users in self._agent_users.items()},
            )
