"""Calendar periods and budgets (issue 10, part 1): exact today / yesterday / month / last
month per tenant in its own timezone, on both runtimes, across a restart; budgets and their
states.

The clock is injected: spans end at chosen instants around local midnight, a month end and
DST changes, and the runtime's "now" is set where the test needs it.
"""

from __future__ import annotations

import calendar as _calendar
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from otel_processor.budgets import BudgetError, Budgets, load_budgets, parse_budgets
from otel_processor.periods import (
    MAX_FUTURE_SECONDS,
    MAX_LATE_SECONDS,
    Calendar,
    CalendarError,
    Periods,
    PeriodSink,
    counted_at,
)
from tests.conftest import Pipeline, ServicePipeline
from tests.scenarios import caller, worked_example

NY = ZoneInfo("America/New_York")
SH = ZoneInfo("Asia/Shanghai")


def local(tz, *args) -> float:
    """Unix seconds of a local wall time (fold 0 where it is ambiguous)."""
    return datetime(*args, tzinfo=tz).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def call(tracer, end: float, tokens: tuple[int, int], user: str = "alice",
         tenant: str = "acme", model: str = "gpt-4o") -> None:
    """One model call of ``user`` ending at unix time ``end`` (started 1 s before)."""
    end_ns = round(end * 1e9)
    span = tracer.start_span(f"chat {model}", start_time=end_ns - 10**9, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model, "gen_ai.usage.input_tokens": tokens[0],
        "gen_ai.usage.output_tokens": tokens[1], **caller(user, tenant)})
    span.end(end_time=end_ns)


BUDGETS_YAML = """
timezone: UTC
tenants:
  acme:
    timezone: America/New_York
    monthly_tokens: 1000
    monthly_usd: "0.01"
    members:
      alice: {monthly_tokens: 400}
    agents:
      support-bot: {monthly_usd: "0.001", thresholds: [10, 20, 30]}
  globex:
    timezone: Asia/Shanghai
"""


@pytest.fixture
def budgets_file(tmp_path):
    path = tmp_path / "budgets.yaml"
    path.write_text(BUDGETS_YAML)
    return path


@pytest.fixture(params=["in_process", "service"])
def make(request, tmp_path, budgets_file):
    made = []

    def build(clock, state_dir=None):
        if request.param == "in_process":
            p = Pipeline(budgets=budgets_file, wall_clock=clock,
                         state_dir=state_dir)
        else:
            p = ServicePipeline(clock=clock, state_dir=state_dir or tmp_path / "state",
                                budgets=str(budgets_file))
        made.append(p)
        return p

    yield build
    for p in made:
        p.close()


def period(p, tenant: str, name: str) -> int:
    return p.tokens("llm_period_tokens", tenant=tenant, period=name)


# -- the calendar ------------------------------------------------------------------------------


def test_a_local_day_of_a_dst_change_has_its_real_length():
    cal = Calendar({"acme": "America/New_York"})
    spring = cal.bounds("acme", local(NY, 2026, 3, 8, 12))
    start, end = spring["today"][1:]
    assert spring["today"][0] == "2026-03-08"
    assert end - start == 23 * 3600  # clocks go forward at 02:00
    autumn = cal.bounds("acme", local(NY, 2026, 11, 1, 12))
    assert autumn["today"][2] - autumn["today"][1] == 25 * 3600
    assert autumn["yesterday"] == ("2026-10-31", local(NY, 2026, 10, 31), local(NY, 2026, 11, 1))
    assert autumn["month"] == ("2026-11", local(NY, 2026, 11, 1), local(NY, 2026, 12, 1))
    assert autumn["last_month"] == ("2026-10", local(NY, 2026, 10, 1), local(NY, 2026, 11, 1))


def test_a_skipped_midnight_starts_the_day_at_the_transition():
    # America/Santiago moves from 00:00 to 01:00 on 2026-09-06: no local midnight that day
    cal = Calendar({"t": "America/Santiago"})
    day = cal.bounds("t", _calendar.timegm((2026, 9, 6, 18, 0, 0)))["today"]
    assert day[0] == "2026-09-06"
    assert day[1] == _calendar.timegm((2026, 9, 6, 4, 0, 0))  # 00:00 -04 = 01:00 -03
    assert cal.day_of("t", day[1] - 1).day == "2026-09-05"
    assert cal.day_of("t", day[1]).day == "2026-09-06"


def test_unknown_timezones_are_refused_with_their_name():
    with pytest.raises(CalendarError, match="Mars/Olympus"):
        Calendar({"acme": "Mars/Olympus"})


def test_implausible_end_times_count_when_they_are_attributed():
    now = 1_800_000_000.0
    assert counted_at(None, now) == now
    assert counted_at(round((now - 5) * 1e9), now) == now - 5
    assert counted_at(round((now + MAX_FUTURE_SECONDS + 1) * 1e9), now) == now
    assert counted_at(round((now - MAX_LATE_SECONDS - 1) * 1e9), now) == now
    assert counted_at(0, now) == now


def test_ids_past_the_cap_fold_into_overflow_and_totals_stay_exact():
    periods = Periods(Calendar(), max_ids_per_scope=2)
    rows = {("t", "2026-12", "member", m): [1, 2, 0, 3, 1] for m in ("a", "b", "c", "d")}
    planned = periods.plan(rows)
    periods.apply(planned)
    held = periods.snapshot()
    assert held[("t", "2026-12", "member", "a")] == (1, 2, 0, 3, 1)
    assert held[("t", "2026-12", "member", "__overflow__")] == (2, 4, 0, 6, 2)
    assert sum(v[0] for v in held.values()) == 4



def test_a_scope_with_a_budget_never_folds():
    periods = Periods(Calendar(), max_ids_per_scope=1, never_fold=[("t", "member", "z")])
    rows = {("t", "2026-12", "member", m): [1, 0, 0, 0, 1] for m in ("a", "b", "z")}
    periods.apply(periods.plan(rows))
    assert sorted(k[3] for k in periods.snapshot()) == ["__overflow__", "a", "z"]


def test_prune_keeps_yesterday_today_last_and_this_month():
    cal = Calendar({"acme": "Asia/Shanghai"})
    periods = Periods(cal)
    keys = ["2026-11-29", "2026-11-30", "2026-12-01", "2026-10", "2026-11", "2026-12"]
    periods.apply([("acme", k, "tenant", "acme", 1, 0, 0, 0, 1) for k in keys])
    periods.prune(local(SH, 2026, 12, 1, 0, 30))
    assert sorted(k[1] for k in periods.snapshot()) == [
        "2026-11", "2026-11-30", "2026-12", "2026-12-01"]


# -- both runtimes --------------------------------------------------------------------------------


def test_calls_around_local_midnight_and_month_end_land_in_their_periods(make):
    now = local(NY, 2026, 3, 8, 12)  # a Sunday noon, just after the DST change
    p = make(Clock(now))
    call(p.tracer, local(NY, 2026, 2, 28, 23, 59, 59), (1, 2))  # last month's last second
    call(p.tracer, local(NY, 2026, 3, 1, 0, 0, 1), (10, 20))  # this month's first
    call(p.tracer, local(NY, 2026, 3, 7, 23, 59, 59), (100, 200))  # yesterday, last second
    call(p.tracer, local(NY, 2026, 3, 8, 0, 0, 0), (1000, 2000))  # today, first instant
    call(p.tracer, local(NY, 2026, 3, 8, 3, 30), (4000, 5000))  # after the 02:00 jump
    assert period(p, "acme", "last_month") == 3
    assert period(p, "acme", "month") == 30 + 300 + 3000 + 9000
    assert period(p, "acme", "yesterday") == 300
    assert period(p, "acme", "today") == 3000 + 9000
    # in UTC (globex's calendar is Shanghai, acme's New York), the same calls would split
    # otherwise: 2026-03-08 00:00 New York is 05:00 UTC
    assert p.value("llm_period_start_timestamp_seconds", tenant="acme",
                   period="today") == local(NY, 2026, 3, 8)
    assert p.value("llm_period_end_timestamp_seconds", tenant="acme",
                   period="today") == local(NY, 2026, 3, 9)
    assert p.value("llm_period_end_timestamp_seconds", tenant="acme",
                   period="month") == local(NY, 2026, 4, 1)
    # the ledger's totals agree: the period split adds up to the member's tokens
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 3 + 12330


def test_today_moves_at_the_tenants_midnight_not_at_utcs(make):
    clock = Clock(local(SH, 2026, 12, 1, 7, 59))  # 23:59 UTC on 30 November
    p = make(clock)
    call(p.tracer, clock.now - 60, (5, 5), user="carol", tenant="globex")
    assert period(p, "globex", "today") == 10  # in Shanghai it is 1 December already
    assert period(p, "globex", "month") == 10
    assert period(p, "globex", "last_month") == 0
    assert period(p, "acme", "today") == 0
    clock.now = local(SH, 2026, 12, 2, 0, 0, 1)
    assert period(p, "globex", "today") == 0
    assert period(p, "globex", "yesterday") == 10
    assert period(p, "globex", "month") == 10


def test_worked_example_today_equals_the_ledger(make):
    clock = Clock(0.0)
    p = make(clock)
    import time

    clock.now = time.time()
    worked_example(p.tracer)
    p.flush()
    for tenant in ("acme", "globex"):
        ledger = sum(v for labels, v in p.samples("llm_member_tokens_total").items()
                     if ("tenant", tenant) in labels)
        assert period(p, tenant, "today") == ledger
        assert period(p, tenant, "month") == ledger
    assert period(p, "acme", "today") == 445
    cost = p.value("llm_period_cost_usd", tenant="acme", period="month")
    ledger_cost = sum(v for labels, v in p.samples("llm_member_cost_usd_total").items()
                      if ("tenant", "acme") in labels)
    assert cost == pytest.approx(ledger_cost, rel=1e-12)


def test_periods_are_the_same_after_a_restart(make, tmp_path):
    now = local(NY, 2026, 12, 1, 9)
    state = tmp_path / "restart-state"
    p = make(Clock(now), state_dir=state)
    call(p.tracer, local(NY, 2026, 11, 30, 23, 0), (7, 3))
    call(p.tracer, local(NY, 2026, 12, 1, 1, 0), (70, 30))
    p.flush()
    before = {name: period(p, "acme", name)
              for name in ("today", "yesterday", "month", "last_month")}
    assert before == {"today": 100, "yesterday": 10, "month": 100, "last_month": 10}
    p.close()
    p = make(Clock(now), state_dir=state)
    after = {name: period(p, "acme", name)
             for name in ("today", "yesterday", "month", "last_month")}
    assert after == before
    call(p.tracer, local(NY, 2026, 12, 1, 2, 0), (1, 1))
    assert period(p, "acme", "today") == 102


# -- budgets ----------------------------------------------------------------------------------


def test_budget_states_at_each_threshold(make):
    now = local(NY, 2026, 12, 15, 12)
    p = make(Clock(now))
    labels = {"tenant": "acme", "scope": "member", "id": "alice"}
    assert p.value("llm_budget_limit_tokens", **labels) == 400
    assert p.value("llm_budget_threshold_ratio", state="warning", **labels) == 0.5
    assert p.value("llm_budget_threshold_ratio", state="throttle", **labels) == 0.8
    assert p.value("llm_budget_threshold_ratio", state="exhausted", **labels) == 1.0
    budgets = p.processor.budgets if hasattr(p, "processor") else p.server.service.budgets
    periods = (p.processor.periods if hasattr(p, "processor")
               else p.server.service.pipeline.periods)
    expected = [(199, "ok"), (1, "warning"), (119, "warning"), (1, "throttle"),
                (79, "throttle"), (1, "exhausted"), (500, "exhausted")]
    used = 0
    for tokens, state in expected:
        call(p.tracer, now - 60, (tokens, 0))
        used += tokens
        p.flush()
        assert p.value("llm_budget_used_tokens", **labels) == used
        assert p.value("llm_budget_ratio", **labels) == used / 400
        assert budgets.usage(periods, "acme", "member", "alice", now).state == state, used


def test_a_usd_budget_and_the_larger_ratio(make):
    now = local(NY, 2026, 12, 15, 12)
    p = make(Clock(now))
    # gpt-4o: 2.50 / 10.00 USD per million: 1000 in + 500 out = 0.0075 USD
    call(p.tracer, now - 60, (1000, 500))
    p.flush()
    tenant = {"tenant": "acme", "scope": "tenant", "id": "acme"}
    assert p.value("llm_budget_used_usd", **tenant) == 0.0075
    assert p.value("llm_budget_limit_usd", **tenant) == 0.01
    # tokens: 1500 of 1000 (1.5) beat USD: 0.0075 of 0.01 (0.75)
    assert p.value("llm_budget_ratio", **tenant) == 1.5


def test_agent_budget_with_its_own_thresholds(make):
    now = local(NY, 2026, 12, 15, 12)
    p = make(Clock(now))
    worked_example(p.tracer)  # its spans end now (the real clock): outside this month
    p.flush()
    agent = {"tenant": "acme", "scope": "agent", "id": "support-bot"}
    assert p.value("llm_budget_threshold_ratio", state="warning", **agent) == 0.1
    assert p.value("llm_budget_limit_usd", **agent) == 0.001


def test_budgets_file_errors_name_the_key(tmp_path):
    cases = {
        "tenants: {acme: {monthly_tokens: -1}}": "tenants.acme.monthly_tokens",
        "tenants: {acme: {monthly_usd: abc}}": "tenants.acme.monthly_usd",
        "tenants: {acme: {thresholds: [80, 50, 100]}}": "must ascend",
        "tenants: {acme: {thresholds: [50, 80]}}": "three percentages",
        "tenants: {acme: {timezone: Nowhere/City}}": "Nowhere/City",
        "tenants: {acme: {members: {alice: {}}}}": "tenants.acme.members.alice",
        "tenants: {acme: {monthy_tokens: 5}}": "unknown key 'monthy_tokens'",
        "timezone: [1]": "timezone",
        "- 1": "expected a mapping",
    }
    for text, message in cases.items():
        path = tmp_path / "b.yaml"
        path.write_text(text)
        with pytest.raises(BudgetError, match=message.replace("[", r"\[")):
            load_budgets(path)
    with pytest.raises(BudgetError, match="cannot read"):
        load_budgets(tmp_path / "missing.yaml")


def test_usd_limits_are_exact_decimals():
    b = parse_budgets({"tenants": {"t": {"monthly_usd": "0.1"}}})
    assert b.by_key[("t", "tenant", "t")].limit_pico == 10**11
    b = parse_budgets({"tenants": {"t": {"monthly_usd": 0.1, "thresholds": [50, 80.5, 100]}}})
    assert b.by_key[("t", "tenant", "t")].limit_pico == 10**11
    assert b.by_key[("t", "tenant", "t")].thresholds == (Decimal(50), Decimal("80.5"),
                                                         Decimal(100))


def test_no_budgets_file_means_utc_and_no_budget_series(pipeline):
    p = pipeline()
    assert isinstance(p.processor.budgets, Budgets)
    assert p.samples("llm_budget_ratio") == {}
    sink = PeriodSink(p.processor.budgets.calendar, 0.0)
    assert sink.calendar.timezone_name("anyone") == "UTC"


# -- the store ----------------------------------------------------------------------------------


def test_the_store_adds_rows_across_checkpoints_and_loads_the_periods_asked_for(tmp_path):
    import sqlite3

    from exporter.store import FILENAME, Batch, Store, StoreError

    store = Store(tmp_path, checkpoint_interval=0)
    rows = [("acme", "2026-10", "member", "alice", 1, 2, 2**62 + 5, 0, 1),
            ("acme", "2026-11-30", "tenant", "acme", 3, 4, 7, 1, 1),
            ("acme", "2026-12", "member", "alice", 5, 6, 9, 0, 2)]
    store.commit(Batch(periods=rows))
    store.checkpoint()
    store.commit(Batch(periods=rows[:1]))  # journalled, not checkpointed yet
    assert sorted(store.load(periods_since="2026-11").periods) == sorted(rows[1:])
    assert store.load().periods == []
    for bad in [("acme", "2026-12", "member", "alice", -1, 0, 0, 0, 1),
                ("acme", "2026-12", "member", 5, 1, 0, 0, 0, 1),
                ("acme", "2026-12", "member", "alice", 1.5, 0, 0, 0, 1),
                ("acme", "2026-12", "member", "alice", 1)]:
        with pytest.raises(StoreError, match="period row"):
            store.commit(Batch(periods=[bad]))
    store.close()
    store = Store(tmp_path)
    assert sorted(store.load(periods_since="").periods) == sorted([
        ("acme", "2026-10", "member", "alice", 2, 4, 2**63 + 10, 0, 2), *rows[1:]])
    store.close()
    # the high and low words of a cost past 2**63 pico-USD
    db = sqlite3.connect(tmp_path / FILENAME)
    assert db.execute("SELECT cost_high, cost_low FROM period_usage WHERE period = '2026-10'"
                      ).fetchall() == [(2, 10)]
    db.close()


def test_a_schema_3_state_gains_the_period_table(tmp_path):
    import sqlite3

    from exporter.store import FILENAME, SCHEMA_VERSION, Batch, Store

    store = Store(tmp_path)
    store.commit(Batch(increments=[("x", (), 1)]))
    store.close()
    db = sqlite3.connect(tmp_path / FILENAME)
    db.execute("DROP TABLE period_usage")
    db.execute("UPDATE schema_version SET version = 3")
    db.commit()
    db.close()
    store = Store(tmp_path)
    assert store.load().totals == {"x": {(): 1}}
    store.commit(Batch(periods=[("t", "2026-12", "tenant", "t", 1, 1, 1, 0, 1)]))
    assert store.load(periods_since="").periods == [("t", "2026-12", "tenant", "t", 1, 1, 1, 0, 1)]
    store.close()
    db = sqlite3.connect(tmp_path / FILENAME)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()
