"""The calendar-period and budget panels (issue 10), run by the real Prometheus on the main
world.

The main world's exporter lives in the simulated time (``tests/dashboard_world.py``): its
wall clock is the scrape being sampled and each span ends at its call's time, so its
``llm_period_*`` and ``llm_budget_*`` gauges are those of a real deployment on those days,
with acme in Asia/Shanghai, initech in America/New_York and globex in UTC
(:data:`~tests.dashboard_world.BUDGETS`). Every expected number is computed here from the
calls themselves (``Expected.usage``: time, tenant, tokens, cost) in the tenant's
timezone, never from the exporter's output.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tests.dashboard_grafana import (
    OVERVIEW,
    ROOT,
    SRE,
    View,
    panel,
    run,
    series,
    show,
    single,
    value,
)
from tests.dashboard_world import (  # noqa: F401 (fixtures)
    BUDGETS,
    E2,
    PRICES,
    T0,
    TIMEZONES,
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
from tests.dashboard_world import at as V

DAY = 86400
TENANTS = sorted(TIMEZONES)
#: Range lengths to try: the period panels must not depend on them.
RANGES = [60, 3 * H, 2 * DAY, 45 * DAY]
#: Evaluation times: the dashboards' two "now"s, a day across every tenant's month turn
#: (acme's October began at 30 September 16:00 UTC, globex's at 00:00, initech's at 04:00),
#: and a day whose yesterday had nothing (the world begins on 1 August, 00:20 UTC: 31 July,
#: 20:20 in New York).
NOWS = {"2025-10-02 06:00": T0, "2025-09-02 06:00": E2,
        "2025-10-01 12:00": _utc(2025, 10, 1, 12), "2025-08-01 02:00": _utc(2025, 8, 1, 2)}


# -- The calendar, from the calls -------------------------------------------------------------


def _local(tenant: str, t: float) -> date:
    return datetime.fromtimestamp(t, timezone.utc).astimezone(ZoneInfo(TIMEZONES[tenant])).date()


def _month(d: date) -> tuple[int, int]:
    return d.year, d.month


def _previous_month(d: date) -> tuple[int, int]:
    return _month(d.replace(day=1) - timedelta(days=1))


def in_period(tenant: str, name: str, at: float, now: float) -> bool:
    """Whether a call of ``tenant`` at ``at`` is in its period ``name`` as at ``now``."""
    if at > now:
        return False
    day, today = _local(tenant, at), _local(tenant, now)
    return {"today": day == today, "yesterday": day == today - timedelta(days=1),
            "month": _month(day) == _month(today),
            "last_month": _month(day) == _previous_month(today)}[name]


def calls(e: Expected, name: str, now: float, tenant: str | None = None) -> list:
    return [u for u in e.usage if (tenant is None or u.tenant == tenant)
            and in_period(u.tenant, name, u.at, now)]


def tokens(e: Expected, name: str, now: float, tenant: str | None = None) -> int:
    return sum(u.tokens for u in calls(e, name, now, tenant))


def cost(e: Expected, name: str, now: float, tenant: str | None = None) -> Decimal:
    return sum((u.cost for u in calls(e, name, now, tenant)), Decimal(0))


def unpriced(e: Expected, name: str, now: float, tenant: str | None = None) -> int:
    return sum(u.tokens for u in calls(e, name, now, tenant) if u.model not in PRICES)


def pct(now: float, before: float) -> float | None:
    """The % change the panels show: none when there is nothing to compare with."""
    return (now - before) / before * 100 if before else None


def month_end(tenant: str, now: float) -> float:
    """When the tenant's month ends: the next 1st, 00:00 in its timezone."""
    d = _local(tenant, now)
    first = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
    return datetime(first.year, first.month, 1, tzinfo=ZoneInfo(TIMEZONES[tenant])).timestamp()


def forecast(e: Expected, tenant: str, now: float) -> float:
    """This month's cost + the cost of the last 24 hours per second × the seconds left in
    the tenant's month (the alert MonthEndOverBudget's projection)."""
    last_day = sum((u.cost for u in e.calls(now - DAY, now, tenant=tenant)), Decimal(0))
    return float(cost(e, "month", now, tenant)) + float(last_day) / DAY * (
        month_end(tenant, now) - now)


def budget_percent(e: Expected, tenant: str, now: float) -> float | None:
    """Used / limit of the tenant's budget, the larger of tokens and USD, in %."""
    b = BUDGETS["tenants"].get(tenant, {})
    ratios = []
    if "monthly_tokens" in b:
        ratios.append(tokens(e, "month", now, tenant) / b["monthly_tokens"])
    if "monthly_usd" in b:
        ratios.append(float(cost(e, "month", now, tenant) / Decimal(b["monthly_usd"])))
    return max(ratios) * 100 if ratios else None


def test_the_calendar_oracle_itself():
    """acme's day is Shanghai's: 1 October 03:00 UTC is its 1 October, 11:00; 30 September
    17:00 UTC is already its October. initech's is New York's (UTC-4)."""
    assert _local("acme", _utc(2025, 9, 30, 17)) == date(2025, 10, 1)
    assert in_period("acme", "yesterday", _utc(2025, 10, 1, 3), T0)
    assert in_period("initech", "yesterday", _utc(2025, 10, 2, 3), T0)  # 1 Oct 23:00 EDT
    assert in_period("initech", "today", _utc(2025, 10, 2, 5), T0)
    assert month_end("acme", T0) == _utc(2025, 10, 31, 16)
    assert month_end("initech", T0) == _utc(2025, 11, 1, 4)
    assert month_end("globex", E2) == _utc(2025, 10, 1)


# -- Today / this month -----------------------------------------------------------------------


def _card(prom, uid: str, title: str, now: float, range_s: float = 3 * H,
          tenant: str = "acme") -> float | None:
    return value(run(prom, panel(uid, title), View(at=now, range_s=range_s, tenant=tenant)))


def _cards(e: Expected, now: float, tenant: str | None = None) -> dict[str, float | None]:
    day, month = tokens(e, "today", now, tenant), tokens(e, "month", now, tenant)
    return {
        "Tokens today": day,
        "Today vs yesterday": pct(day, tokens(e, "yesterday", now, tenant)),
        "Tokens this month": month,
        "This month vs last month": pct(month, tokens(e, "last_month", now, tenant)),
        "Cost this month": float(cost(e, "month", now, tenant)),
        "Unpriced tokens this month": unpriced(e, "month", now, tenant),
    }


def _same(got: float | None, want: float | None) -> bool:
    if want is None or got is None:
        return got is want
    return got == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("range_s", RANGES)
@pytest.mark.parametrize("now", list(NOWS.values()), ids=list(NOWS))
def test_sre_today_and_this_month_are_every_tenants_own_periods(prom, expected, now, range_s):
    want = _cards(expected, now)
    got = {title: _card(prom, SRE, title, now, range_s) for title in want}
    assert all(_same(got[k], want[k]) for k in want), (got, want)
    assert want["Tokens this month"]


@pytest.mark.parametrize("now", list(NOWS.values()), ids=list(NOWS))
@pytest.mark.parametrize("tenant", TENANTS)
def test_overview_today_and_this_month_are_the_tenants_own(prom, expected, tenant, now):
    want = _cards(expected, now, tenant)
    for range_s in (3 * H, 45 * DAY):
        got = {title: _card(prom, OVERVIEW, title, now, range_s, tenant) for title in want}
        assert all(_same(got[k], want[k]) for k in want), (tenant, range_s, got, want)


def test_the_timezones_matter(expected):
    """The world is built so that UTC days would give other numbers: acme's and
    initech's today at T0 differ from their UTC day's."""
    for tenant in ("acme", "initech"):
        utc_day = sum(u.tokens for u in expected.calls(_utc(2025, 10, 2), T0, tenant=tenant))
        assert tokens(expected, "today", T0, tenant) != utc_day, tenant
    assert tokens(expected, "yesterday", T0, "acme")  # alice's calls on 1 October, Shanghai
    assert tokens(expected, "last_month", T0, "acme")


def test_a_change_against_nothing_is_no_data_not_infinity(prom, expected):
    """Yesterday (or last month) without tokens: the % change is empty, so Grafana shows
    "No data", never ∞, NaN or an error; today's number is still shown."""
    first_day = NOWS["2025-08-01 02:00"]
    assert tokens(expected, "yesterday", first_day) == 0
    assert tokens(expected, "today", first_day) > 0
    assert tokens(expected, "yesterday", T0, "globex") == 0
    assert tokens(expected, "last_month", T0, "globex") == 0
    cases = [(SRE, "Today vs yesterday", View(at=first_day)),
             (SRE, "This month vs last month", View(at=first_day)),
             (OVERVIEW, "Today vs yesterday", V(tenant="globex")),
             (OVERVIEW, "This month vs last month", V(tenant="globex"))]
    for uid, title, view in cases:
        (result,) = run(prom, panel(uid, title), view).values()
        assert result == [], (uid, title, result)  # no series: not +Inf, not NaN
    shown = show(prom, [(panel(uid, title), view) for uid, title, view in cases])
    assert [single(frames) for frames in shown] == [None] * len(cases)
    assert _card(prom, OVERVIEW, "Tokens today", T0, tenant="globex") == tokens(
        expected, "today", T0, "globex") == 20  # trace 4, twice


# -- Cost this month and its unpriced tokens --------------------------------------------------


def test_unpriced_tokens_stand_next_to_every_cost_card(prom, expected):
    """Cost this month, Cost, last hour: each has its unpriced tokens beside it, and they
    are not 0 where the world has unpriced calls (a cost figure is never silently
    partial)."""
    assert unpriced(expected, "month", T0) > 0
    for at in (T0, T0 - 2 * H):
        hour = sum(u.tokens for u in expected.calls(at - H, at) if u.model not in PRICES)
        assert _card(prom, SRE, "Unpriced tokens, last hour", at) == hour
    assert _card(prom, SRE, "Unpriced tokens, last hour", T0 - 2 * H) > 0
    assert _card(prom, SRE, "Unpriced tokens, last hour", T0) == 0  # none in the last hour
    assert _card(prom, OVERVIEW, "Unpriced tokens this month", T0, tenant="initech") == (
        unpriced(expected, "month", T0, "initech")) > 0
    for uid, titles in ((SRE, ("Cost this month", "Cost, last hour",
                               "Month-end cost forecast", "Month-end cost forecast by tenant")),
                        (OVERVIEW, ("Cost this month",))):
        for title in titles:
            assert "Unpriced" in panel(uid, title)["description"], title


# -- Month-end forecast -----------------------------------------------------------------------


@pytest.mark.parametrize("now", [T0, E2, NOWS["2025-10-01 12:00"]],
                         ids=["2025-10-02", "2025-09-02", "across every month turn"])
def test_month_end_forecast_per_tenant_and_in_total(prom, expected, now):
    want = {tenant: forecast(expected, tenant, now) for tenant in TENANTS}
    assert any(want.values())
    (frames,) = show(prom, [(panel(SRE, "Month-end cost forecast by tenant"), View(at=now))])
    got = series(frames)
    assert got == {t: approx(v) for t, v in want.items()}
    assert _card(prom, SRE, "Month-end cost forecast", now) == approx(sum(want.values()))


def test_the_forecast_is_the_month_end_alerts_projection(prom):
    """The panel's projection for a tenant with a USD budget is the left-hand side of
    MonthEndOverBudget (prometheus/rules/alerts.yml), its recorded series written out."""
    rules = (ROOT / "prometheus" / "rules" / "alerts.yml").read_text()
    assert "tenant_scope_id_limit:llm_budget_used:rate1d" in rules
    assert 'llm_period_end_timestamp_seconds{period="month"} - time()' in rules
    alert = ('sum by (tenant, scope, id) (llm_budget_used_usd{scope="tenant"}) + '
             'sum by (tenant, scope, id) (rate(llm_budget_used_usd{scope="tenant"}[1d])) '
             '* on (tenant) group_left () max by (tenant) '
             '(llm_period_end_timestamp_seconds{period="month"} - time())')
    p = panel(SRE, "Month-end cost forecast by tenant")
    (expr,) = (t["expr"] for t in p["targets"])
    for now in (T0, E2, NOWS["2025-10-01 12:00"]):
        alert_says = {r["metric"]["tenant"]: float(r["value"][1])
                      for r in prom.query(alert, now)}
        panel_says = {r["metric"]["tenant"]: float(r["value"][1]) for r in prom.query(expr, now)}
        assert set(alert_says) == {"acme", "initech"}
        for tenant, v in alert_says.items():
            assert panel_says[tenant] == approx(v)


# -- Budget use -------------------------------------------------------------------------------


@pytest.mark.parametrize("now", [T0, E2, NOWS["2025-10-01 12:00"]],
                         ids=["2025-10-02", "2025-09-02", "across every month turn"])
def test_budget_use_per_tenant_is_used_over_limit_the_larger_of_tokens_and_usd(
        prom, expected, now):
    want = {t: budget_percent(expected, t, now) for t in TENANTS}
    (frames,) = show(prom, [(panel(SRE, "Budget use"), View(at=now))])
    assert series(frames) == {t: approx(v) for t, v in want.items() if v is not None}
    for tenant in TENANTS:  # the overview's gauge: the same number, no data without a budget
        got = _card(prom, OVERVIEW, "Budget use", now, tenant=tenant)
        assert _same(got, want[tenant]), (tenant, got, want[tenant])


def test_the_budget_world_covers_both_limits_and_the_thresholds(expected):
    """acme is over 80 % on tokens (its USD use is lower), initech's larger ratio is its
    USD; globex has no budget; member and agent budgets are not in the tenant panels."""
    acme_tokens = tokens(expected, "month", T0, "acme") / 1000
    acme_usd = float(cost(expected, "month", T0, "acme") / Decimal("0.005"))
    assert 0.8 < acme_tokens < 1 and acme_usd < acme_tokens
    initech_usd = float(cost(expected, "month", T0, "initech") / Decimal("0.05"))
    assert initech_usd > tokens(expected, "month", T0, "initech") / 200000
    assert budget_percent(expected, "globex", T0) is None


def test_budget_thresholds_are_the_defaults_in_the_panels():
    for uid in (SRE, OVERVIEW):
        steps = panel(uid, "Budget use")["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps] == [None, 50, 80, 100]
        assert panel(uid, "Budget use")["fieldConfig"]["defaults"]["unit"] == "percent"


# -- Several exporters: use summed, limits and bounds once ------------------------------------


@pytest.fixture(scope="module")
def scaled_out(tmp_path_factory):
    """Two exporters of one deployment: each holds its share of acme's month and of its
    budget's use; both export the same limits and bounds."""
    t0 = _utc(2025, 10, 10)
    times = range(t0 - 2 * DAY, t0 + 1, 300)
    data: dict[tuple[str, tuple], list[tuple[int, float]]] = defaultdict(list)
    key = (("id", "acme"), ("scope", "tenant"), ("tenant", "acme"))
    for t in times:
        elapsed = t - (t0 - 2 * DAY)
        for instance, share in (("a:1", 1), ("b:1", 3)):
            inst = (("instance", instance),)
            used_tokens = share * elapsed // 600
            used_usd = share * elapsed / 8_640_000
            data[("llm_budget_used_tokens", (*key, *inst))].append((t, used_tokens))
            data[("llm_budget_used_usd", (*key, *inst))].append((t, used_usd))
            data[("llm_budget_limit_tokens", (*key, *inst))].append((t, 2000))
            data[("llm_budget_limit_usd", (*key, *inst))].append((t, 0.5))
            data[("llm_budget_ratio", (*key, *inst))].append((t, 0.0))  # ignored
            month = (("period", "month"), ("tenant", "acme"))
            data[("llm_period_tokens", (*month, ("type", "input"), *inst))].append(
                (t, used_tokens))
            data[("llm_period_tokens", (*month, ("type", "output"), *inst))].append((t, 0))
            data[("llm_period_cost_usd", (*month, *inst))].append((t, used_usd))
            data[("llm_period_end_timestamp_seconds", (*month, *inst))].append(
                (t, _utc(2025, 11, 1)))
    server = backfilled_prometheus(tmp_path_factory.mktemp("scaled"), openmetrics(dict(data)))
    try:
        yield server, t0
    finally:
        server.stop()


def test_scaled_out_exporters_sum_their_use_and_count_the_limit_once(scaled_out):
    prom, t0 = scaled_out
    elapsed = 2 * DAY
    used_tokens = 4 * elapsed // 600  # 1 + 3 shares
    used_usd = 4 * elapsed / 8_640_000
    view = View(at=t0, tenant="acme")
    ratio = max(used_tokens / 2000, used_usd / 0.5) * 100
    assert value(run(prom, panel(OVERVIEW, "Budget use"), view)) == approx(ratio)
    (frames,) = show(prom, [(panel(SRE, "Budget use"), view)])
    assert series(frames) == {"acme": approx(ratio)}
    assert value(run(prom, panel(OVERVIEW, "Tokens this month"), view)) == used_tokens
    rate = 4 / 8_640_000  # USD per second, both exporters
    want = used_usd + rate * (_utc(2025, 11, 1) - t0)
    assert _card(prom, SRE, "Month-end cost forecast", t0) == approx(want)


def test_acme_sees_the_numbers_of_the_docs(prom):
    """docs/dashboards/llm-tenant-overview.md's example, at T0."""
    cards = {title: _card(prom, OVERVIEW, title, T0, tenant="acme")
             for title in ("Tokens today", "Tokens this month", "Budget use")}
    assert cards == {"Tokens today": 881, "Tokens this month": 931,
                     "Budget use": pytest.approx(93.1)}
    assert _card(prom, OVERVIEW, "Today vs yesterday", T0, tenant="globex") is None
