"""The PromQL of the dashboards: exact token counts between two instants.

**What the panels assume.** The exporter's counters never reset: the service keeps its
totals in a durable ledger (``state_dir``) that a restart, a new pod or a new address
carries over, and the in-process processor does the same with ``state_dir``. The tokens
between two instants are then exactly "the counter summed over every exporter at the end,
minus the same sum at the start".

**Sum over exporters first, then subtract.** A counter is one series per scrape target
(``instance``, ``pod``, ...). When an exporter comes back at a new address (every
Kubernetes pod restart) its ledger continues under a new series with no past sample; a
per-series difference would count that whole ledger again. So every count is taken after
aggregating away the target's identity, by the panel's own labels only::

    sum by (K) (x) - (sum by (K) (x offset $__range) or sum by (K) (x) * 0)

``or ... * 0`` gives 0 to a key (a model, an agent, a member) that did not exist at the
start, so it counts from 0. Several exporters behind a load balancer (each its own target)
are summed the same way.

**Never negative.** A counter that does reset (an in-process runtime without
``state_dir``, or an exporter whose state was lost) makes that difference too small, or
negative. A negative difference is impossible without a reset, so there the query falls
back to the per-series count, in which a series that went down, or that is new, counts
its value at the end (the tokens since its restart)::

    (<difference> >= 0) or sum by (K) ((x - x offset $__range) >= 0 or x)

Either way the number is a lower bound in that case: the tokens counted before the
restart inside the range are lost. ``increase()`` is not used: it drops the first sample
of a new series, extrapolates to the range's edges, and reads every sample of the range
(a 30-day range over many series would exceed Prometheus's sample limit).

**Calendar periods from the exporter.** "Today", "yesterday", "this month" and "last
month" are the exporter's own gauges (``llm_period_*``, docs/budgets.md): each tenant's
day and month in its timezone, exact however long Prometheus keeps data, read at the
evaluation time alone (never the dashboard's range). Several exporters each hold their
share, so amounts are summed over them; bounds (``llm_period_end_timestamp_seconds``) and
budget limits are the same on each and taken once (``max``), as the alert rules do
(prometheus/build_rules.py).
"""

from __future__ import annotations

from collections.abc import Callable

RANGE = "$__range"

#: A function (selector, wrap) -> expression: a counter at one instant, where ``wrap``
#: aggregates a selector (``sum by (K) (...)``) or leaves it per series.
Point = Callable[[str, Callable[[str], str]], str]


def _offset(shift: str | None) -> str:
    return f" offset {shift}" if shift else ""


def at_end(shift: str | None = None) -> Point:
    """The evaluation time (the range's end), moved back by ``shift``."""
    return lambda sel, wrap: wrap(sel + _offset(shift))


def back(duration: str) -> Point:
    """``duration`` before the evaluation time (``$__range``, ``1h``)."""
    return lambda sel, wrap: wrap(f"{sel} offset {duration}")


def _group(by: str | None) -> Callable[[str], str]:
    return (lambda s: f"sum by ({by}) ({s})") if by else (lambda s: f"sum({s})")


def _series(s: str) -> str:
    return s


#: The dashboard range's start, and its end (the evaluation time).
RANGE_START = back(RANGE)
END = at_end()


def between(sel: str, by: str | None = None, start: Point = RANGE_START,
            end: Point = END) -> str:
    """The tokens of counter ``sel`` from ``start`` to ``end``, per ``by`` labels (or in
    total), summed over exporters; see the module doc."""
    group = _group(by)
    e, s = end(sel, group), start(sel, group)
    exact = f"({e} - ({s} or {e} * 0))"
    es, ss = end(sel, _series), start(sel, _series)
    fallback = group(f"({es} - {ss}) >= 0 or {es}")
    return f"({exact} >= 0 or {fallback})"


def total(sel: str, by: str | None = None, rng: str = RANGE) -> str:
    """The tokens of the last ``rng`` (default: the dashboard's time range)."""
    return between(sel, by, start=back(rng))


def named(expr: str, key: str, info: str, id_label: str | None = None) -> str:
    """``expr`` (one series per ``key``, e.g. ``"agent"`` or ``"tenant, member"``) with the
    display ``name`` from an ``_info`` metric; a key missing from the directory shows its id
    (``id_label``, default ``key``) as its name, so nothing is dropped."""
    id_label = id_label or key
    # topk: one name per key even while exporters disagree (mid-way through a directory
    # refresh), so that the join is never many-to-many
    return (
        f"(({expr}) * on({key}) group_left(name) topk by ({key}) (1, max by ({key}, name) "
        f"({info})))"
        f' or on({key}) label_replace({expr}, "name", "$1", "{id_label}", "(.*)")'
    )


def pct_change(now: str, before: str) -> str:
    """(now − before) / before × 100; empty when ``before`` is 0 or missing."""
    return f"(({now}) - ({before})) / (({before}) > 0) * 100"


def sel(metric: str, *matchers: str) -> str:
    """A selector: ``sel("x_total", 'tenant="$tenant"', 'type="input"')``."""
    return f"{metric}{{{','.join(matchers)}}}" if matchers else metric


# -- Calendar periods and budgets (the exporter's gauges) ------------------------------------

BUDGET_KEY = "tenant, scope, id"


def period(metric: str, name: str, *matchers: str, by: str | None = None) -> str:
    """A period gauge (``llm_period_tokens``, ``llm_period_cost_usd``, ...) of period
    ``name`` (today, yesterday, month, last_month), summed over exporters (each holds its
    share), per ``by`` labels or in total."""
    return _group(by)(sel(metric, f'period="{name}"', *matchers))


def budget_used_per_limit(*matchers: str, by: str = "tenant") -> str:
    """Used / limit of the budgets ``matchers`` select, the larger of tokens and USD (the
    exporter's ``llm_budget_ratio``), per ``by``: the use summed over exporters, the limit
    taken once (``max``), like the rule ``tenant_scope_id:llm_budget_used_per_limit:max_ratio``.
    A limit of 0 gives no ratio (no division by zero)."""
    parts = []
    for kind in ("tokens", "usd"):
        used = f"sum by ({BUDGET_KEY}) ({sel('llm_budget_used_' + kind, *matchers)})"
        limit = f"max by ({BUDGET_KEY}) ({sel('llm_budget_limit_' + kind, *matchers)})"
        parts.append(f'label_replace({used} / ({limit} > 0), "limit", "{kind}", "", "")')
    return f"max by ({by}) ({' or '.join(parts)})"


def month_end_cost(*matchers: str) -> str:
    """Each tenant's cost at the end of its month, projected from the last day's pace, as
    the alert MonthEndOverBudget projects a budget's use: this month's cost + its rate over
    the last day × the seconds left until the tenant's month ends (in its timezone). The
    month's cost drops to 0 when a month begins and rate() takes that for a counter reset,
    so a day across the turn still measures the spending in it. A tenant whose cost has
    too few samples for a rate shows its cost so far."""
    cost = sel("llm_period_cost_usd", 'period="month"', *matchers)
    end = sel("llm_period_end_timestamp_seconds", 'period="month"', *matchers)
    used = f"sum by (tenant) ({cost})"
    return (f"({used} + sum by (tenant) (rate({cost}[1d])) * on(tenant) "
            f"max by (tenant) ({end} - time()) or {used})")
