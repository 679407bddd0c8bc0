"""Today, yesterday, this month, last month: independent of the dashboard's time range.

Grafana applies a panel's relative time ("now/d") only while the dashboard's range is
relative too; with an absolute range it is ignored and such a panel counts the dashboard's
range instead. So no panel has one (tests/test_dashboards.py): the calendar panels find
their window from the evaluation time alone, the range's end. These tests evaluate them
with many range lengths (a relative and an absolute range differ only in where they
start) and check the same, exact numbers, on the main world and on a synthetic counter
whose every value is known, at month ends, month starts, exact midnights and leap-free
February.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tests.dashboard_grafana import SRE, View, panel, run, shown_series, value
from tests.dashboard_world import (  # noqa: F401 (fixtures)
    E2,
    T0,
    UNPRICED,
    Expected,
    H,
    _utc,
    approx,
    backfilled_prometheus,
    expected_fixture,
    openmetrics,
    prom_fixture,
    world_fixture,
)

DAY = 86400
CALENDAR = ["Tokens today", "Today vs yesterday", "Tokens this month", "This month vs last month",
            "Cost, last hour", "Month-end cost forecast"]
#: Range lengths to try: the result must not depend on them.
RANGES = [60, 3 * H, 2 * DAY, 45 * DAY]


def _sre(prom, title: str, at: float, range_s: float) -> float | None:
    return value(run(prom, panel(SRE, title), View(at=at, range_s=range_s)))


def _tokens(expected: Expected, start: float, end: float) -> int:
    return sum(u.tokens for u in expected.calls(start, end))


# -- The main world ---------------------------------------------------------------------------


@pytest.mark.parametrize("range_s", RANGES)
@pytest.mark.parametrize("now", [T0, E2], ids=["2025-10-02", "2025-09-02"])
def test_today_and_this_month_against_yesterday_and_last_month(prom, expected, now, range_s):
    day = datetime.fromtimestamp(now, timezone.utc)
    midnight = _utc(day.year, day.month, day.day)
    first = _utc(day.year, day.month, 1)
    last_month = 30 if day.month == 10 else 31  # September, August
    today = _tokens(expected, midnight, now)
    yesterday = _tokens(expected, midnight - DAY, now - DAY)
    month = _tokens(expected, first, now)
    before = _tokens(expected, first - last_month * DAY, now - last_month * DAY)
    assert _sre(prom, "Tokens today", now, range_s) == today
    assert _sre(prom, "Today vs yesterday", now, range_s) == pytest.approx(
        (today - yesterday) / yesterday * 100)
    assert _sre(prom, "Tokens this month", now, range_s) == month
    assert before, "the scenario must have calls in last month's window"
    assert _sre(prom, "This month vs last month", now, range_s) == pytest.approx(
        (month - before) / before * 100)


@pytest.mark.parametrize("range_s", RANGES)
def test_cost_panels(prom, expected, range_s):
    hour = sum(u.cost for u in expected.calls(T0 - H, T0))
    assert _sre(prom, "Cost, last hour", T0, range_s) == approx(hour)
    first = _utc(2025, 10, 1)
    month_cost = sum(u.cost for u in expected.calls(first, T0))
    forecast = month_cost / Decimal(T0 - first) * DAY * 31
    assert _sre(prom, "Month-end cost forecast", T0, range_s) == approx(forecast)


def test_cost_share_is_a_range_panel(prom, expected):
    share = shown_series(prom, panel(SRE, "Cost share by model"), View(at=T0))  # the slices
    want: dict[str, Decimal] = defaultdict(Decimal)
    for u in expected.calls(T0 - 3 * H, T0):
        want[u.model] += u.cost
    assert share == {m: approx(c) for m, c in want.items() if c}
    assert UNPRICED not in share


# -- A synthetic counter, every value known ---------------------------------------------------

STEP = 240  # a sample every 4 minutes: always within Prometheus's 5-minute lookback
BEGIN = _utc(2024, 12, 30)
END = _utc(2025, 5, 2)
LATE = _utc(2025, 3, 10, 7)  # the second series first appears here


def _series() -> dict[str, dict[int, float]]:
    """Three counters by sample time: tokens of tenant a, tokens of tenant b (from LATE),
    cost of tenant a."""
    out: dict[str, dict[int, float]] = {"a": {}, "b": {}, "cost": {}}
    totals = {"a": 0, "b": 0, "cost": 0.0}
    for k, t in enumerate(range(BEGIN, END + 1, STEP)):
        totals["a"] += 1 + k % 7 + (k // 360) % 5
        totals["cost"] += (1 + k % 5) / 1000
        out["a"][t] = totals["a"]
        out["cost"][t] = totals["cost"]
        if t >= LATE:
            totals["b"] += 2 + k % 3
            out["b"][t] = totals["b"]
    return out


SERIES = _series()


def _at(name: str, t: float) -> float:
    """The counter's value at ``t``: its last sample at or before ``t`` (0 before it
    exists)."""
    grid_t = BEGIN + (int(t) - BEGIN) // STEP * STEP
    return SERIES[name].get(grid_t, 0)


def _tokens_at(t: float) -> float:
    return _at("a", t) + _at("b", t)


def _utc_dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def _same_time_last_month(t: float) -> tuple[float, float]:
    """(1st of last month 00:00, the same day of the month and time of day last month,
    its last day when last month is shorter), from the calendar."""
    d = _utc_dt(t)
    year, month = (d.year, d.month - 1) if d.month > 1 else (d.year - 1, 12)
    length = calendar.monthrange(year, month)[1]
    end = d.replace(year=year, month=month, day=min(d.day, length))
    return _utc(year, month, 1), end.timestamp()


def _pct(now: float, before: float) -> float | None:
    return (now - before) / before * 100 if before > 0 else None


def truth(t: float) -> dict[str, float | None]:
    d = _utc_dt(t)
    midnight = _utc(d.year, d.month, d.day)
    first = _utc(d.year, d.month, 1)
    today = _tokens_at(t) - _tokens_at(midnight)
    yesterday = _tokens_at(t - DAY) - _tokens_at(midnight - DAY)
    month = _tokens_at(t) - _tokens_at(first)
    start, end = _same_time_last_month(t)
    last_month = _tokens_at(end) - _tokens_at(start)
    cost = _at("cost", t) - _at("cost", first)
    elapsed = t - first
    days = calendar.monthrange(d.year, d.month)[1]
    return {
        "Tokens today": today,
        "Today vs yesterday": _pct(today, yesterday),
        "Tokens this month": month,
        "This month vs last month": _pct(month, last_month),
        "Cost, last hour": _at("cost", t) - _at("cost", t - H),
        "Month-end cost forecast": cost / elapsed * days * DAY if elapsed > 0 else None,
    }


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    labels = {"a": ("llm_model_tokens_total", (("model", "m1"), ("tenant", "a"),
                                               ("type", "input"))),
              "b": ("llm_model_tokens_total", (("model", "m2"), ("tenant", "b"),
                                               ("type", "output"))),
              "cost": ("llm_model_cost_usd_total", (("model", "m1"), ("tenant", "a")))}
    data = {labels[name]: sorted(samples.items()) for name, samples in SERIES.items()}
    server = backfilled_prometheus(tmp_path_factory.mktemp("calendar"), openmetrics(data))
    try:
        yield server
    finally:
        server.stop()


POINTS = {
    "31 March, after a 28-day February": _utc(2025, 3, 31, 10),
    "29 March (February has no 29th)": _utc(2025, 3, 29, 6),
    "1 March 00:00:00 exactly": _utc(2025, 3, 1),
    "mid-March, off the sample grid": _utc(2025, 3, 15, 12, 34, 56),
    "a series born this month": _utc(2025, 3, 20, 18),
    "30 April, after a 31-day March": _utc(2025, 4, 30, 23, 59),
    "31 January, after a 31-day December": _utc(2025, 1, 31, 18),
    "1 May 00:30": _utc(2025, 5, 1, 0, 30),
    "just before midnight": _utc(2025, 2, 14, 23, 59, 59),
}


@pytest.mark.parametrize("t", list(POINTS.values()), ids=list(POINTS))
def test_calendar_panels_are_exact_for_any_range_ending_at_t(synthetic, t):
    want = truth(t)
    assert want["This month vs last month"] is not None or _utc_dt(t).day == 1
    for range_s in RANGES:
        for title in CALENDAR:
            got = _sre(synthetic, title, t, range_s)
            if want[title] is None:
                assert got is None, (title, range_s)
            else:
                assert got == pytest.approx(want[title], rel=1e-9), (title, range_s)


def test_the_calendar_windows_are_what_the_descriptions_say():
    """The oracle itself: 31 March compares with 1-28 February, 30 April with 1-30 March."""
    assert _same_time_last_month(_utc(2025, 3, 31, 10)) == (
        _utc(2025, 2, 1), _utc(2025, 2, 28, 10))
    assert _same_time_last_month(_utc(2025, 4, 30, 23, 59)) == (
        _utc(2025, 3, 1), _utc(2025, 3, 30, 23, 59))
    assert _same_time_last_month(_utc(2025, 1, 31, 18)) == (
        _utc(2024, 12, 1), _utc(2024, 12, 31, 18))
    assert (datetime(2025, 3, 1, tzinfo=timezone.utc) - timedelta(days=28)).day == 1
