"""Exact totals by tuple key, with a series cap per metric.

Attributed events become *increments* ``(family name, label values, amount)``; the ledger
adds them up under one lock. The service's durable store persists the same increments, so
the in-memory ledger and the store never disagree on what an event is worth.
Amounts are integers: tokens, counts, and cost in pico-USD (exact, see ``prices.py``).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
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


_LE = (*(str(text) for text in m.LATENCY_BOUNDS_S), "+Inf")  # bucket labels, by index


def _observe(out: list, histogram: m.Histogram, labels: tuple[str, ...], ns: int) -> None:
    """One observation: a count in its bucket (the first bound it does not exceed) and ns."""
    le = _LE[bisect_left(histogram.bounds_ns, ns)]
    out.append((histogram.buckets, (*labels, le), 1))
    out.append((histogram.sum_ns, labels, ns))


class _UsageKeys:
    """The label tuples (and the increments of constant amount) of one label combination.

    Built once per (tenant, model, caller, agent, workflow, outcome, service) and shared: a span
    then allocates only the increments whose amount is its own, and the keys, already
    untracked by the garbage collector, cost it nothing.
    """

    __slots__ = ("model_in", "model_out", "request", "member_in", "member_out", "cache_read",
                 "cache_write", "agent_in", "agent_out", "workflow_in", "workflow_out",
                 "model", "member", "agent", "workflow", "unpriced", "duration", "ttft",
                 "service_in", "service_out", "service_call")

    def __init__(self, t: str, model: str, caller: str, agent: str | None,
                 workflow: str | None, outcome: str, service: str) -> None:
        self.model_in, self.model_out = (t, model, "input"), (t, model, "output")
        self.request = (_MODEL_REQUESTS, (t, model, outcome), 1)
        self.member_in, self.member_out = (t, caller, "input"), (t, caller, "output")
        self.cache_read, self.cache_write = (t, model, "read"), (t, model, "write")
        self.agent_in = self.agent_out = self.workflow_in = self.workflow_out = None
        if agent is not None:
            self.agent_in, self.agent_out = (t, agent, "input"), (t, agent, "output")
        if workflow is not None:
            self.workflow_in = (t, workflow, "input")
            self.workflow_out = (t, workflow, "output")
        self.model = (t, model)
        self.member = (t, caller)
        self.agent = (t, agent)
        self.workflow = (t, workflow)
        self.unpriced = (model,)
        self.duration = tuple((m.MODEL_DURATION.buckets, (t, model, le), 1) for le in _LE)
        self.ttft = tuple((m.MODEL_TTFT.buckets, (t, model, le), 1) for le in _LE)
        self.service_in, self.service_out = (t, service, "input"), (t, service, "output")
        self.service_call = (_SERVICE_CALLS, (t, service), 1)


_MODEL_TOKENS = m.MODEL_TOKENS.name
_MODEL_REQUESTS = m.MODEL_REQUESTS.name
_MODEL_CACHE_TOKENS = m.MODEL_CACHE_TOKENS.name
_MODEL_REASONING_TOKENS = m.MODEL_REASONING_TOKENS.name
_MEMBER_TOKENS = m.MEMBER_TOKENS.name
_AGENT_TOKENS = m.AGENT_TOKENS.name
_WORKFLOW_TOKENS = m.WORKFLOW_TOKENS.name
_MODEL_COST = m.MODEL_COST.name
_MEMBER_COST = m.MEMBER_COST.name
_AGENT_COST = m.AGENT_COST.name
_WORKFLOW_COST = m.WORKFLOW_COST.name
_UNPRICED_TOKENS = m.UNPRICED_TOKENS.name
_SERVICE_TOKENS = m.SERVICE_TOKENS.name
_SERVICE_CALLS = m.SERVICE_CALLS.name
_DURATION_BOUNDS = m.MODEL_DURATION.bounds_ns
_DURATION_SUM = m.MODEL_DURATION.sum_ns
_TTFT_BOUNDS = m.MODEL_TTFT.bounds_ns
_TTFT_SUM = m.MODEL_TTFT.sum_ns

#: label combination -> its keys; cleared when full. Read and written without a lock (the
#: service's writer and the in-process worker may both run): dict get, set and clear are
#: each atomic under the GIL, and a lost entry is only built again.
_USAGE_KEYS: dict[tuple, _UsageKeys] = {}
_USAGE_KEYS_SIZE = 8192


def usage_increments(event: UsageEvent) -> list[Increment]:
    """What one attributed model call adds to the cost metrics (R1-R5, R7)."""
    agent, workflow = event.agent, event.workflow
    combination = (event.tenant, event.model, event.caller, agent, workflow, event.outcome,
                   event.service)
    keys = _USAGE_KEYS.get(combination)
    if keys is None:
        if len(_USAGE_KEYS) >= _USAGE_KEYS_SIZE:
            _USAGE_KEYS.clear()
        keys = _USAGE_KEYS[combination] = _UsageKeys(*combination)
    tin, tout = event.input_tokens, event.output_tokens
    out: list[Increment] = [
        (_MODEL_TOKENS, keys.model_in, tin),
        (_MODEL_TOKENS, keys.model_out, tout),
        keys.request,
        (_MEMBER_TOKENS, keys.member_in, tin),
        (_MEMBER_TOKENS, keys.member_out, tout),
        (_SERVICE_TOKENS, keys.service_in, tin),
        (_SERVICE_TOKENS, keys.service_out, tout),
        keys.service_call,
    ]
    if event.cache_read_tokens:
        out.append((_MODEL_CACHE_TOKENS, keys.cache_read, event.cache_read_tokens))
    if event.cache_write_tokens:
        out.append((_MODEL_CACHE_TOKENS, keys.cache_write, event.cache_write_tokens))
    if event.reasoning_tokens:
        out.append((_MODEL_REASONING_TOKENS, keys.model, event.reasoning_tokens))
    if agent is not None:
        out.append((_AGENT_TOKENS, keys.agent_in, tin))
        out.append((_AGENT_TOKENS, keys.agent_out, tout))
    if workflow is not None:
        out.append((_WORKFLOW_TOKENS, keys.workflow_in, tin))
        out.append((_WORKFLOW_TOKENS, keys.workflow_out, tout))
    ns = event.duration_ns
    if ns is not None:
        out.append(keys.duration[bisect_left(_DURATION_BOUNDS, ns)])
        out.append((_DURATION_SUM, keys.model, ns))
    ns = event.time_to_first_token_ns
    if ns is not None:
        out.append(keys.ttft[bisect_left(_TTFT_BOUNDS, ns)])
        out.append((_TTFT_SUM, keys.model, ns))
    cost = event.cost_pico
    if cost is None:
        out.append((_UNPRICED_TOKENS, keys.unpriced, tin + tout))
    else:
        out.append((_MODEL_COST, keys.model, cost))
        out.append((_MEMBER_COST, keys.member, cost))
        if agent is not None:
            out.append((_AGENT_COST, keys.agent, cost))
        if workflow is not None:
            out.append((_WORKFLOW_COST, keys.workflow, cost))
    return out


_REASONS: dict[str, tuple[str]] = {}  # reason -> its label tuple (a handful of reasons)


def unattributed_increments(event: Unattributed) -> list[Increment]:
    key = _REASONS.get(event.reason)
    if key is None:
        key = (event.reason,)
        if len(_REASONS) < 64:
            _REASONS[event.reason] = key
    return [(m.UNATTRIBUTED_TOKENS.name, key, event.tokens)]


_UNCLASSIFIED_KEYS = {reason: (reason,) for reason in m.UNCLASSIFIED_REASONS}


def unclassified_increments(reason: str, tokens: int) -> list[Increment]:
    """Usage of a span that is no model call and counts nowhere else (input + output)."""
    key = _UNCLASSIFIED_KEYS.get(reason) or (reason,)
    return [(m.UNCLASSIFIED_USAGE_TOKENS.name, key, tokens)]


#: (kind, owner tenant, asset) -> its increment (of 1); cleared when full, like _USAGE_KEYS
_HEAT: dict[tuple[str, str, str], Increment] = {}
_HEAT_SIZE = 8192


def heat_increments(event: HeatEvent) -> list[Increment]:
    return [_heat_increment(event)]


def _heat_increment(event: HeatEvent) -> Increment:
    kind, owner, asset = event.kind, event.owner_tenant, event.asset
    increment = _HEAT.get((kind, owner, asset))
    if increment is None:
        name = m.AGENT_INVOCATIONS.name if kind == AGENT_INVOCATION else m.WORKFLOW_RUNS.name
        increment = (name, (owner, asset), 1)
        if len(_HEAT) >= _HEAT_SIZE:
            _HEAT.clear()
        _HEAT[(kind, owner, asset)] = increment
    return increment


def heat_effects(event: HeatEvent) -> tuple[list[Increment], tuple[str, str, str] | None]:
    """``effects`` of a heat event."""
    user = None
    if event.kind == AGENT_INVOCATION and event.caller is not None:
        user = (event.owner_tenant, event.asset, event.caller)
    return [_heat_increment(event)], user


def effects(
    event: UsageEvent | Unattributed | HeatEvent,
) -> tuple[list[Increment], tuple[str, str, str] | None]:
    """An attribution result as increments, and the (owner, agent, caller) it makes known."""
    if isinstance(event, UsageEvent):
        return usage_increments(event), None
    if isinstance(event, Unattributed):
        return unattributed_increments(event), None
    return heat_effects(event)


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
