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

#: family name -> positions of its id labels (folded past the series cap)
_FREE = {
    **{f.name: f.free for f in (*m.LEDGER_COUNTERS, m.AGENT_USERS)},
    **dict(m.HISTOGRAM_TABLES),
}


def _observe(out: list, histogram: m.Histogram, labels: tuple[str, ...], ns: int) -> None:
    """One observation: a count in its bucket (the first bound it does not exceed) and ns."""
    le = "+Inf"
    for bound, text in zip(histogram.bounds_ns, m.LATENCY_BOUNDS_S, strict=True):
        if ns <= bound:
            le = str(text)
            break
    out.append((histogram.buckets, (*labels, le), 1))
    out.append((histogram.sum_ns, labels, ns))


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
    if event.duration_ns is not None:
        _observe(out, m.MODEL_DURATION, (t, model), event.duration_ns)
    if event.time_to_first_token_ns is not None:
        _observe(out, m.MODEL_TTFT, (t, model), event.time_to_first_token_ns)
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


@dataclass
class Plan:
    """What a group of increments will change, decided before anything changes.

    ``increments`` are final, one per series: ids past a series cap already folded into
    ``__overflow__``, the overflow counts (of increments folded) included;
    ``agent_users`` are the (owner, agent, caller) triples new
    to the ledger. A durable runtime commits exactly this, then :meth:`Ledger.apply` shows it.
    """

    increments: list[Increment] = field(default_factory=list)
    agent_users: list[tuple[str, str, str]] = field(default_factory=list)


class Ledger:
    """Exact totals by tuple key; thread-safe; bounded.

    Changes go plan -> (commit) -> apply: :meth:`plan` decides the final keys without
    changing anything, :meth:`apply` adds a plan. What :meth:`snapshot` shows therefore only
    ever grows, and a failed commit between the two changes nothing visible. One writer at a
    time plans and applies (the service's writer thread, the in-process worker): a plan is
    only valid against the state it was made on.
    """

    def __init__(
        self,
        *,
        max_series_per_metric: int = DEFAULT_MAX_SERIES_PER_METRIC,
        max_agent_users: int = DEFAULT_MAX_AGENT_USERS,
    ) -> None:
        if max_series_per_metric < 1:
            raise ValueError(f"max_series_per_metric must be >= 1, got {max_series_per_metric}")
        if max_agent_users < 1:
            raise ValueError(f"max_agent_users must be >= 1, got {max_agent_users}")
        self._max_series = max_series_per_metric
        self._max_agent_users = max_agent_users
        self._lock = threading.Lock()
        # family name -> label values -> amount; guarded by _lock
        self._counters: dict[str, dict[tuple[str, ...], int]] = {
            name: {} for name in (*(f.name for f in m.LEDGER_COUNTERS),
                                  *(n for n, _ in m.HISTOGRAM_TABLES))
        }
        for name, keys in m.KNOWN_SERIES.items():
            for key in keys:
                self._counters[name][key] = 0
        # (owner_tenant, agent) -> distinct callers; guarded by _lock. Keys are capped like a
        # metric's series (they are llm_agent_users' series), callers in total.
        self._agent_users: dict[tuple[str, str], set[str]] = {}
        self._agent_user_pairs = 0  # guarded by _lock

    # -- plan and apply ----------------------------------------------------------------

    def plan(
        self,
        increments: Iterable[Increment],
        agent_users: Iterable[tuple[str, str, str]] = (),
    ) -> Plan:
        """The final form of ``increments`` and ``agent_users``; changes nothing."""
        out = Plan()
        summed: dict[tuple[str, tuple[str, ...]], list[int]] = {}  # series -> [amount, n]
        for name, key, amount in increments:
            entry = summed.get((name, key))
            if entry is None:
                summed[(name, key)] = [amount, 1]
            else:
                entry[0] += amount
                entry[1] += 1
        with self._lock:
            new_keys: dict[str, set[tuple[str, ...]]] = {}  # keys this plan creates
            overflow: dict[str, int] = {}  # family -> increments folded
            for (name, key), (amount, n) in summed.items():
                table = self._counters[name]
                if key not in table:
                    created = new_keys.setdefault(name, set())
                    if key not in created:
                        if len(table) + len(created) >= self._max_series:
                            overflow[name] = overflow.get(name, 0) + n
                            key = _folded(name, key)
                            if key not in table:
                                created.add(key)
                        else:
                            created.add(key)
                out.increments.append((name, key, amount))
            users_new: dict[tuple[str, str], set[str]] = {}
            pairs = self._agent_user_pairs
            series = len(self._agent_users)
            for owner, agent, caller in agent_users:
                key = (owner, agent)
                known = self._agent_users.get(key)
                planned = users_new.get(key)
                if known is None and planned is None and series >= self._max_series:
                    overflow[m.AGENT_USERS.name] = overflow.get(m.AGENT_USERS.name, 0) + 1
                    key = _folded(m.AGENT_USERS.name, key)
                    known, planned = self._agent_users.get(key), users_new.get(key)
                if (known is not None and caller in known) or (
                    planned is not None and caller in planned
                ):
                    continue
                if pairs >= self._max_agent_users:
                    overflow[m.AGENT_USERS.name] = overflow.get(m.AGENT_USERS.name, 0) + 1
                    continue
                if known is None and planned is None:
                    series += 1
                users_new.setdefault(key, set()).add(caller)
                pairs += 1
                out.agent_users.append((*key, caller))
            for name, n in overflow.items():
                out.increments.append((m.SERIES_OVERFLOW.name, (name,), n))
        return out

    def apply(self, plan: Plan) -> None:
        """Add a plan made by :meth:`plan` (after its commit, for a durable runtime)."""
        with self._lock:
            counters = self._counters
            for name, key, amount in plan.increments:
                table = counters[name]
                table[key] = table.get(key, 0) + amount
            for owner, agent, caller in plan.agent_users:
                users = self._agent_users.setdefault((owner, agent), set())
                if caller not in users:
                    users.add(caller)
                    self._agent_user_pairs += 1

    def add(
        self,
        increments: Iterable[Increment],
        agent_users: Iterable[tuple[str, str, str]] = (),
    ) -> Plan:
        """Plan and apply at once (a runtime without a durable store); returns the plan."""
        plan = self.plan(increments, agent_users)
        self.apply(plan)
        return plan

    def record(self, event: UsageEvent | Unattributed | HeatEvent) -> None:
        """Add one attribution result."""
        increments, user = effects(event)
        self.add(increments, (user,) if user is not None else ())

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
                users = self._agent_users.setdefault((owner, agent), set())
                if caller not in users:
                    users.add(caller)
                    self._agent_user_pairs += 1

    def _after_fork(self) -> None:
        """In a forked child: a lock another thread of the parent held is never released."""
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                {name: dict(table) for name, table in self._counters.items()},
                {key: len(users) for key, users in self._agent_users.items()},
            )


def _folded(name: str, key: tuple[str, ...]) -> tuple[str, ...]:
    """``key`` with its id labels replaced by ``__overflow__`` (the series cap)."""
    free = _FREE[name]
    return tuple(m.OVERFLOW if i in free else v for i, v in enumerate(key))
