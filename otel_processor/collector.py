"""A prometheus-client custom collector: the contract's families from a ledger snapshot.

Scrape-time only: it copies the ledger under its lock (``Ledger.snapshot``) and yields
metric families; nothing here is on the span path. No other module builds families.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from otel_processor import metrics as m
from otel_processor.budgets import STATES, Budgets
from otel_processor.directory import Directory
from otel_processor.ledger import Ledger, Snapshot
from otel_processor.periods import (
    COST,
    INPUT,
    OUTPUT,
    TENANT,
    UNPRICED,
    Periods,
)
from otel_processor.prices import PICO_PER_USD


class Health:
    """What the collector reads of the pipeline's state besides the ledger."""

    def __init__(
        self,
        *,
        pending_traces: Callable[[], int] = lambda: 0,
        directory_last_success: Callable[[], float | None] = lambda: None,
        directory_failures: Callable[[], int] = lambda: 0,
    ) -> None:
        self.pending_traces = pending_traces
        self.directory_last_success = directory_last_success
        self.directory_failures = directory_failures


def member_search(member, *, include_contact: bool) -> str:
    """The ``search`` label: lower-cased name, and contact fields when the config allows."""
    parts = [member.name]
    if include_contact:
        parts += [member.email, member.mis, member.phone]
    return "|".join(p.lower() for p in parts if p)


class TokenCollector(Collector):
    """Yields every metric family from a snapshot of the ledger and the directory."""

    def __init__(
        self,
        ledger: Ledger,
        directory: Callable[[], Directory],
        *,
        health: Health | None = None,
        search_contact_fields: bool = False,
        periods: Periods | None = None,
        budgets: Budgets | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._directory = directory
        self._health = health or Health()
        self._search_contact_fields = search_contact_fields
        self._periods = periods
        self._budgets = budgets or Budgets()
        self._clock = clock  # wall clock: which day is today

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    def describe(self) -> list[Metric]:
        # Registration must not call collect(): the directory may not be loaded yet.
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self._ledger.snapshot()
        for family in m.LEDGER_COUNTERS:
            yield _counter(family, snap)
        yield from self.collect_rest(snap)

    def collect_rest(self, snap: Snapshot) -> Iterator[Metric]:
        """Every family but the ledger's counters (which ``exposition.py`` renders itself)."""
        for histogram in m.HISTOGRAMS:
            yield _histogram(histogram, snap)
        yield from self._heat_gauges(snap)
        directory = self._directory()
        yield from self._info(directory)
        if self._periods is not None:
            yield from self._period_families(directory)
        yield from self._health_families()

    def _period_families(self, directory: Directory) -> Iterator[Metric]:
        """Each tenant's today, yesterday, month and last month, and every budget."""
        now = self._clock()
        periods, budgets = self._periods, self._budgets
        calendar = budgets.calendar
        fams = {f.name: GaugeMetricFamily(f.name, f.help, labels=f.labels)
                for f in (*m.PERIOD_GAUGES, *m.BUDGET_GAUGES)}
        tokens, cost = fams[m.PERIOD_TOKENS.name], fams[m.PERIOD_COST.name]
        unpriced = fams[m.PERIOD_UNPRICED.name]
        start, end = fams[m.PERIOD_START.name], fams[m.PERIOD_END.name]
        tenants = (set(directory.tenants) | periods.tenants()
                   | {key[0] for key in budgets.by_key})
        for tenant in sorted(tenants):
            for name, (period, begins, ends) in calendar.bounds(tenant, now).items():
                amounts = periods.amounts(tenant, period, TENANT, tenant)
                tokens.add_metric((tenant, name, "input"), amounts[INPUT])
                tokens.add_metric((tenant, name, "output"), amounts[OUTPUT])
                cost.add_metric((tenant, name), amounts[COST] / PICO_PER_USD)
                unpriced.add_metric((tenant, name), amounts[UNPRICED])
                start.add_metric((tenant, name), begins)
                end.add_metric((tenant, name), ends)
        for key in sorted(budgets.by_key):
            usage = budgets.usage(periods, *key, now)
            b = usage.budget
            if b.limit_tokens is not None:
                fams[m.BUDGET_LIMIT_TOKENS.name].add_metric(key, b.limit_tokens)
            if b.limit_pico is not None:
                fams[m.BUDGET_LIMIT_USD.name].add_metric(key, b.limit_usd)
            fams[m.BUDGET_USED_TOKENS.name].add_metric(key, usage.used_tokens)
            fams[m.BUDGET_USED_USD.name].add_metric(key, usage.used_usd)
            fams[m.BUDGET_RATIO.name].add_metric(key, usage.ratio)
            for state, threshold in zip(STATES[1:], b.thresholds, strict=True):
                fams[m.BUDGET_THRESHOLD.name].add_metric((*key, state), float(threshold) / 100)
        yield from fams.values()

    def _heat_gauges(self, snap: Snapshot) -> Iterator[Metric]:
        family = m.AGENT_USERS
        users = GaugeMetricFamily(family.name, family.help, labels=family.labels)
        for key, count in sorted(snap.agent_users.items()):
            users.add_metric(key, count)
        yield users

    def _info(self, directory: Directory) -> Iterator[Metric]:
        agents = InfoMetricFamily(m.AGENT_INFO.name, m.AGENT_INFO.help, labels=m.AGENT_INFO.labels)
        for a in directory.agents.values():
            agents.add_metric((a.owner_tenant, a.id, a.name, a.creator, a.created_at), {})
        yield agents
        wf = InfoMetricFamily(
            m.WORKFLOW_INFO.name, m.WORKFLOW_INFO.help, labels=m.WORKFLOW_INFO.labels
        )
        for w in directory.workflows.values():
            if w.kind != "chatflow":  # R5: the workflow dimension never shows a chat workflow
                wf.add_metric((w.owner_tenant, w.id, w.name, w.creator, w.created_at), {})
        yield wf
        members = InfoMetricFamily(
            m.MEMBER_INFO.name, m.MEMBER_INFO.help, labels=m.MEMBER_INFO.labels
        )
        contact = self._search_contact_fields
        for tenant in directory.tenants.values():
            for mem in tenant.members:
                search = member_search(mem, include_contact=contact)
                members.add_metric((tenant.id, mem.id, mem.name, search), {})
        yield members

    def _health_families(self) -> Iterator[Metric]:
        h = self._health
        yield GaugeMetricFamily(m.TRACES_PENDING.name, m.TRACES_PENDING.help, h.pending_traces())
        last = h.directory_last_success()
        gauge = GaugeMetricFamily(m.DIRECTORY_LAST_SUCCESS.name, m.DIRECTORY_LAST_SUCCESS.help)
        if last is not None:
            gauge.add_metric((), last)
        yield gauge
        yield CounterMetricFamily(
            m.DIRECTORY_FAILURES.name, m.DIRECTORY_FAILURES.help, h.directory_failures()
        )


def _counter(family: m.Family, snap: Snapshot) -> Metric:
    out = CounterMetricFamily(family.name, family.help, labels=family.labels)
    table = snap.counters.get(family.name, {})
    for key in sorted(table):
        value = table[key]
        out.add_metric(key, value / PICO_PER_USD if family.usd else value)
    return out


def _histogram(histogram: m.Histogram, snap: Snapshot) -> Metric:
    """Cumulative buckets, count and sum (in seconds) from the ledger's per-bucket counts."""
    family = histogram.family
    out = HistogramMetricFamily(family.name, family.help, labels=family.labels)
    per_series: dict[tuple[str, ...], dict[str, int]] = {}
    for (*labels, le), count in snap.counters.get(histogram.buckets, {}).items():
        per_series.setdefault(tuple(labels), {})[le] = count
    sums = snap.counters.get(histogram.sum_ns, {})
    bounds = [str(b) for b in m.LATENCY_BOUNDS_S] + ["+Inf"]
    for labels in sorted(per_series):
        counts = per_series[labels]
        running, buckets = 0, []
        for le in bounds:
            running += counts.get(le, 0)
            buckets.append((le, running))
        out.add_metric(labels, buckets, sum_value=sums.get(labels, 0) / 1e9)
    return out
