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

**Calendar windows without the dashboard range.** "Today" and "this month" are found from
the evaluation time alone (the end of the dashboard's range, "now" for a relative range):
a subquery with a one-day step is evaluated at UTC midnights (Prometheus aligns subquery
steps to multiples of the step since the epoch), ``last_over_time`` takes the last one,
and ``day_of_month() == 1`` keeps only the first of a month.
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


def midnight(shift: str | None = None) -> Point:
    """00:00 UTC of the day of the evaluation time (moved back by ``shift``)."""
    return lambda sel, wrap: f"last_over_time(({wrap(sel)})[1d:1d]{_offset(shift)})"


def month_start(shift: str | None = None) -> Point:
    """00:00 UTC of the 1st of the month of the evaluation time (moved back by ``shift``):
    the last midnight in 31 days that is a 1st."""
    return lambda sel, wrap: (
        f"last_over_time(({wrap(sel)} and on() day_of_month() == 1)[31d:1d]{_offset(shift)})")


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


# -- Calendar windows (UTC) -------------------------------------------------------------------

#: Seconds since 00:00 UTC on the 1st of this month, at the evaluation time.
MONTH_ELAPSED = "((day_of_month() - 1) * 86400 + time() % 86400)"
#: The day of last month that "the same time last month" falls on: this day of the month,
#: or the last day of last month when it is shorter; as the number of days to go back
#: (max(this day of the month, days of last month)).
_LAST_MONTH_SHIFT = ("clamp_min(day_of_month(), "
                     "scalar(days_in_month(time() - 86400 * day_of_month())))")


def today(selector: str) -> str:
    return between(selector, start=midnight())


def yesterday_same_hours(selector: str) -> str:
    """From 00:00 UTC yesterday to this time of day yesterday."""
    return between(selector, start=midnight("1d"), end=at_end("1d"))


def this_month(selector: str) -> str:
    return between(selector, start=month_start())


def last_month_same_time(selector: str) -> str:
    """From the 1st of last month, 00:00 UTC, to the same day and time of day last month
    (its last day when last month is shorter): this month's window moved back by 28 to 31
    days, one branch per possible shift, gated by the shift the evaluation time needs."""
    branches = [f"({between(selector, start=month_start(f'{n}d'), end=at_end(f'{n}d'))}"
                f" and on() ({_LAST_MONTH_SHIFT} == {n}))" for n in (28, 29, 30, 31)]
    return "(" + " or ".join(branches) + ")"
