"""The panels read at the range's end alone: independent of the dashboard's time range.

Grafana applies a panel's relative time ("now/d") only while the dashboard's range is
relative too; with an absolute range it is ignored and such a panel counts the dashboard's
range instead. So no panel has one (tests/test_dashboards.py): the calendar panels find
their window from the evaluation time alone, the range's end. Today, yesterday, this month
and last month are the exporter's own calendar periods (``llm_period_*``, each tenant's
timezone): tests/test_dashboard_budgets.py checks them, with many range lengths too. Here:
the cost of the last hour, with many range lengths, on the main world and on a synthetic
counter whose every value is known, at month ends, month starts and exact midnights.
"""

from __future__ import annotations

from collections import defaultdict
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
CALENDAR = ["Cost, last hour"]
#: Range lengths to try: the result must not depend on them.
RANGES = [60, 3 * H, 2 * DAY, 45 * DAY]


def _sre(prom, title: str, at: float, range_s: float) -> float | None:
    return value(run(prom, panel(SRE, title), View(at=at, range_s=range_s)))


# -- The main world ---------------------------------------------------------------------------


@pytest.mark.parametrize("range_s", RANGES)
def test_cost_panels(prom, expected, range_s):
    for now in (T0, E2, T0 - 2 * H):
        hour = sum(u.cost for u in expected.calls(now - H, now))
        assert _sre(prom, "Cost, last hour", now, range_s) == approx(hour)
        unpriced = sum(u.tokens for u in expected.calls(now - H, now, model=UNPRICED))
        assert _sre(prom, "Unpriced tokens, last hour", now, range_s) == unpriced


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


def truth(t: float) -> dict[str, float | None]:
    return {"Cost, last hour": _at("cost", t) - _at("cost", t - H)}


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
    for range_s in RANGES:
        for title in CALENDAR:
            got = _sre(synthetic, title, t, range_s)
            assert got == pytest.approx(want[title], rel=1e-9), (title, range_s)
