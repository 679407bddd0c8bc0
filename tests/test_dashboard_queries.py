"""Every query of every dashboard panel, run by the real Prometheus on known data.

The data is the main world of ``tests/dashboard_world.py`` (the real exporter, backfilled
into Prometheus 2.42 with promtool). Each target is sent through Prometheus's HTTP API the
way Grafana would (``tests/dashboard_grafana.py``): variables substituted (``$tenant``,
``$__range``), instant queries at the range's end; the answers become Grafana's data frames
and the panel's transformations and field config run through Grafana's own
``@grafana/data`` (``tests/grafana_frames.py``), so tables and charts are read as the panel
shows them. Expected numbers come from attribution.md's worked example and from plain
sums over the calls' own token counts, never from the exporter's output.

Concerns with files of their own: ``test_dashboard_scrape.py`` (a real Prometheus scraping
exporters that restart at new addresses), ``test_dashboard_search.py``,
``test_dashboard_creators.py``, ``test_dashboard_calendar.py``, ``test_dashboard_i18n.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests import grafana_frames as gf
from tests.dashboard_grafana import (
    ASSETS,
    DRILL,
    OVERVIEW,
    SRE,
    View,
    bar_list,
    bars,
    dashboards,
    panel,
    rows,
    rows_of,
    run,
    series,
    show,
    value,
)
from tests.dashboard_oracle import ORACLE, Directory, check, range_panels
from tests.dashboard_world import (  # noqa: F401 (fixtures)
    AGENT_NAMES,
    DIRECTORY,
    DIRECTORY_LAST_LOAD,
    INITECH_AGENTS,
    NAMES,
    PENDING_NOW,
    T0,
    UNLISTED_AGENT,
    UNPRICED,
    WORKFLOW_NAMES,
    Expected,
    H,
    _utc,
    approx,
    expected_fixture,
    prom_fixture,
    ranked,
    world_fixture,
)
from tests.dashboard_world import at as V

DAY = 86400


def _all_targets() -> Iterator[tuple[str, str]]:
    for uid, d in dashboards().items():
        for p in d["panels"]:
            yield uid, p["title"]


# -- Every query runs -------------------------------------------------------------------------


@pytest.mark.parametrize(("uid", "title"), list(_all_targets()))
def test_every_panel_query_runs_on_prometheus_and_returns_data(prom, uid, title):
    p = panel(uid, title)
    for tenant in ("acme", "initech"):
        results = run(prom, p, V(tenant=tenant))
        for ref, result in results.items():
            assert result, f"{uid} / {title} / {ref} is empty for {tenant}"


# -- §1 Tenant overview: the worked example, exactly ------------------------------------------


def test_acme_cards_show_the_worked_example_numbers(prom):
    view = V(tenant="acme")
    cards = {t: value(run(prom, panel(OVERVIEW, t), view))
             for t in ("Agent tokens", "Workflow tokens", "Total tokens", "Cost (USD)")}
    assert cards["Agent tokens"] == 370
    assert cards["Workflow tokens"] == 295
    assert cards["Total tokens"] == 445
    assert cards["Cost (USD)"] == approx(Decimal("0.0010365"))


def test_acme_top_tens_show_the_worked_example_numbers(prom):
    view = V(tenant="acme")
    charts = [panel(OVERVIEW, t) for t in ("Model consumption top 10",
                                          "Agent consumption top 10",
                                          "Workflow consumption top 10")]
    members = panel(OVERVIEW, "Member tokens top 10")
    *shown, table = show(prom, [(p, view) for p in [*charts, members]])
    assert [bar_list(p, frames) for p, frames in zip(charts, shown, strict=True)] == [
        [("gpt-4o-mini", 235), ("gpt-4o", 150), ("qwen-max", 60)],
        [("Support Bot", 370)],
        [("Summarize", 220), ("Translate", 75)]]
    (frame,) = table
    assert gf.columns(frame) == ["Member", "Tokens"]
    assert gf.rows(frame) == [
        {"Member": "Alice Wang", "Tokens": 370}, {"Member": "Bob Li", "Tokens": 75}]
    assert gf.rows(frame, formatted=True) == [
        {"Member": "Alice Wang", "Tokens": "370"}, {"Member": "Bob Li", "Tokens": "75"}]


def test_globex_sees_only_carols_ten_tokens(prom):
    view = V(tenant="globex")
    assert value(run(prom, panel(OVERVIEW, "Agent tokens"), view)) == 10
    assert value(run(prom, panel(OVERVIEW, "Workflow tokens"), view)) == 0
    assert value(run(prom, panel(OVERVIEW, "Total tokens"), view)) == 10
    agents = panel(OVERVIEW, "Agent consumption top 10")
    workflows = panel(OVERVIEW, "Workflow consumption top 10")
    members = panel(OVERVIEW, "Member tokens top 10")
    a, w, m = show(prom, [(agents, view), (workflows, view), (members, view)])
    assert bar_list(agents, a) == [("Support Bot", 10)]
    assert bar_list(workflows, w) == []
    assert gf.rows(m[0]) == [{"Member": "Carol Chen", "Tokens": 10}]


# -- Exact ranges -----------------------------------------------------------------------------


def test_a_range_subtracts_the_baseline_and_counts_new_series_from_zero(prom):
    """Over 3 h the baseline run before the range is subtracted, and trace 2's series,
    created inside the range, count in full; over 6 h both runs count."""
    def card(title, hours):
        return value(run(prom, panel(OVERVIEW, title), V(range_s=hours * H)))

    assert (card("Agent tokens", 3), card("Agent tokens", 6)) == (370, 740)
    assert (card("Workflow tokens", 3), card("Workflow tokens", 6)) == (295, 515)
    assert (card("Total tokens", 3), card("Total tokens", 6)) == (445, 815)
    p = panel(OVERVIEW, "Model consumption top 10")
    assert bars(prom, p, V(range_s=6 * H)) == [
        ("gpt-4o-mini", 455), ("gpt-4o", 300), ("qwen-max", 60)]


def test_increase_would_not_be_exact_on_the_same_data(prom):
    """Why the dashboards do not use increase(): qwen-max's series appears inside the range
    and increase() drops its first sample, the raw difference does not."""
    sel = 'llm_model_tokens_total{tenant="acme",model="qwen-max"}'
    raw = prom.query(f"sum({sel} - ({sel} offset 3h or {sel} * 0))", T0)
    assert float(raw[0]["value"][1]) == 60
    increase = prom.query(f"sum(increase({sel}[3h]))", T0)
    assert float(increase[0]["value"][1]) != 60


# -- §1 and §3 for initech: ten of more, names, search ----------------------------------------


@pytest.mark.parametrize("hours", [3, 6])
def test_initech_overview_matches_its_calls(prom, expected, hours):
    view = V(tenant="initech", range_s=hours * H)
    start, end = T0 - hours * H, T0
    calls = expected.calls(start, end, tenant="initech")
    assert value(run(prom, panel(OVERVIEW, "Total tokens"), view)) == sum(
        u.tokens for u in calls)
    assert value(run(prom, panel(OVERVIEW, "Agent tokens"), view)) == sum(
        u.tokens for u in calls if u.agent)
    assert value(run(prom, panel(OVERVIEW, "Workflow tokens"), view)) == sum(
        u.tokens for u in calls if u.workflow)
    assert value(run(prom, panel(OVERVIEW, "Cost (USD)"), view)) == approx(
        sum(u.cost for u in calls))
    agent_names = {**AGENT_NAMES}  # the unlisted agent keeps its id
    charts = (("Model consumption top 10", "model", {}),
              ("Agent consumption top 10", "agent", agent_names),
              ("Workflow consumption top 10", "workflow", WORKFLOW_NAMES))
    members = panel(OVERVIEW, "Member tokens top 10")
    panels = [panel(OVERVIEW, title) for title, _, _ in charts]
    *shown, table = show(prom, [(p, view) for p in [*panels, members]])
    for (title, key, names), p, frames in zip(charts, panels, shown, strict=True):
        assert bar_list(p, frames) == ranked(
            expected.by(key, start, end, tenant="initech"), names), title
    want = ranked(expected.by("member", start, end, tenant="initech"), NAMES)
    assert [(r["Member"], r["Tokens"]) for r in gf.rows(table[0])] == want


def test_initech_top_ten_cuts_eleven_agents_and_shows_foreign_and_unlisted_ones(prom, expected):
    view = V(tenant="initech", range_s=6 * H)
    p = panel(OVERVIEW, "Agent consumption top 10")
    shown = bars(prom, p, view)
    used = expected.by("agent", T0 - 6 * H, T0, tenant="initech")
    assert len(used) > 10 and len(shown) == 10
    labels = {name for name, _ in shown}
    assert UNLISTED_AGENT in labels  # no directory entry: its id
    assert "FAQ Bot" in labels  # acme's agent, called by initech's members


def _drill(prom, title: str, view: View) -> list[dict]:
    p = panel(DRILL, title)
    return rows(prom, p, view)


def test_model_detail_has_totals_inputs_outputs_and_share(prom, expected):
    assert _drill(prom, "Model consumption detail", V()) == [
        {"Model": "gpt-4o-mini", "Total": 235, "Input": 210, "Output": 25,
         "Share": pytest.approx(235 / 445 * 100)},
        {"Model": "gpt-4o", "Total": 150, "Input": 100, "Output": 50,
         "Share": pytest.approx(150 / 445 * 100)},
        {"Model": "qwen-max", "Total": 60, "Input": 30, "Output": 30,
         "Share": pytest.approx(60 / 445 * 100)},
    ]
    view = V(tenant="initech", range_s=6 * H)
    calls = expected.calls(T0 - 6 * H, T0, tenant="initech")
    tenant_total = sum(u.tokens for u in calls)
    table = _drill(prom, "Model consumption detail", view)
    want = sorted(
        ({"Model": m, "Total": sum(u.tokens for u in calls if u.model == m),
          "Input": sum(u.input for u in calls if u.model == m),
          "Output": sum(u.output for u in calls if u.model == m)}
         for m in {u.model for u in calls}), key=lambda r: -r["Total"])
    for row in want:
        row["Share"] = pytest.approx(row["Total"] / tenant_total * 100)
    assert table == want
    assert sum(r["Share"] for r in table) == pytest.approx(100)


@pytest.mark.parametrize(("uid", "title", "columns"), [
    (DRILL, "Model consumption detail", ["Model", "Total", "Input", "Output", "Share"]),
    (DRILL, "Agent consumption detail",
     ["Agent", "Total", "Input", "Output", "Created at", "Creator"]),
    (DRILL, "Workflow consumption detail",
     ["Workflow", "Total", "Input", "Output", "Created at", "Creator"]),
    (DRILL, "Member ranking", ["Rank", "Member", "Total", "Input", "Output"]),
    (ASSETS, "Agents owned by the tenant", ["Agent", "Conversations", "Users", "Tokens"]),
    (ASSETS, "Workflows owned by the tenant", ["Workflow", "Runs", "Tokens"]),
    (OVERVIEW, "Member tokens top 10", ["Member", "Tokens"]),
    (SRE, "Top members", ["Member", "Tenant", "Tokens"]),
    (SRE, "Service usage", ["Service", "Tokens", "Calls"]),
])
def test_tables_show_their_columns_in_order(prom, uid, title, columns):
    p = panel(uid, title)
    (frames,) = show(prom, [(p, V())])
    (frame,) = frames
    assert gf.columns(frame) == columns
    assert frame["length"] and all(list(r) == columns for r in gf.rows(frame))


def test_agent_and_workflow_details_join_names_creation_and_creator(prom):
    assert _drill(prom, "Agent consumption detail", V()) == [
        {"Agent": "Support Bot", "Total": 370, "Input": 300, "Output": 70,
         "Created at": "2025-10-01T08:00:00Z", "Creator": "Alice Wang"}]
    assert _drill(prom, "Workflow consumption detail", V()) == [
        {"Workflow": "Summarize", "Total": 220, "Input": 200, "Output": 20,
         "Created at": "2025-10-02T09:30:00Z", "Creator": "Bob Li"},
        {"Workflow": "Translate", "Total": 75, "Input": 40, "Output": 35,
         "Created at": "2025-10-03T10:00:00Z", "Creator": "Bob Li"}]


def test_initech_agent_detail_lists_every_agent_with_fallbacks(prom, expected):
    view = V(tenant="initech", range_s=6 * H)
    calls = expected.calls(T0 - 6 * H, T0, tenant="initech")
    table = _drill(prom, "Agent consumption detail", view)
    want = {a: (sum(u.tokens for u in calls if u.agent == a),
                sum(u.input for u in calls if u.agent == a),
                sum(u.output for u in calls if u.agent == a))
            for a in {u.agent for u in calls if u.agent}}
    assert len(table) == len(want) > 10  # all of them, not a top 10
    got = {r["Agent"]: (r["Total"], r["Input"], r["Output"]) for r in table}
    assert got == {AGENT_NAMES.get(a, a): v for a, v in want.items()}
    assert [r["Total"] for r in table] == sorted((r["Total"] for r in table), reverse=True)
    creators = {r["Agent"]: r["Creator"] for r in table}
    assert creators["Code Review"] == "former-dev"  # not a member: the id
    assert creators["Budget Bot"] == "Bob Porter"
    assert creators["FAQ Bot"] == "Bob Li"  # a member of another tenant
    unlisted = next(r for r in table if r["Agent"] == UNLISTED_AGENT)
    assert unlisted["Creator"] == "" and unlisted["Created at"] == ""


def test_workflow_detail_never_shows_a_chat_workflow(prom, expected):
    view = V(tenant="initech", range_s=6 * H)
    calls = expected.calls(T0 - 6 * H, T0, tenant="initech")
    table = _drill(prom, "Workflow consumption detail", view)
    assert {r["Workflow"]: r["Total"] for r in table} == {
        WORKFLOW_NAMES[w]: t for w, t in expected.by(
            "workflow", T0 - 6 * H, T0, tenant="initech").items()}
    assert all("chat" not in r["Workflow"].lower() for r in table)
    assert any(u.agent == "tps-helper" for u in calls)  # its chat workflow ran


def test_member_ranking_ranks_every_member(prom, expected):
    assert _drill(prom, "Member ranking", V()) == [
        {"Rank": 1, "Member": "Alice Wang", "Total": 370, "Input": 300, "Output": 70},
        {"Rank": 2, "Member": "Bob Li", "Total": 75, "Input": 40, "Output": 35}]
    view = V(tenant="initech", range_s=3 * H)
    table = _drill(prom, "Member ranking", view)
    tokens = expected.by("member", T0 - 3 * H, T0, tenant="initech")
    assert [(r["Rank"], r["Member"], r["Total"]) for r in table] == [
        (i + 1, name, total) for i, (name, total) in enumerate(ranked(tokens, NAMES, 99))]
    assert "Lawrence Hunt" in {r["Member"] for r in table}  # first seen inside the range


# -- §2 Tenant assets: heat is platform-wide, tokens are the tenant's -------------------------


def _assets(prom, title: str, view: View) -> list[dict]:
    p = panel(ASSETS, title)
    return rows(prom, p, view)


def test_acme_assets_separate_heat_from_cost(prom):
    agents, workflows = rows_of(prom, [(panel(ASSETS, "Agents owned by the tenant"), V()),
                                       (panel(ASSETS, "Workflows owned by the tenant"), V())])
    assert agents == [
        {"Agent": "Support Bot", "Conversations": 3, "Users": 3, "Tokens": 370},
        # only initech's members called it: heat, no cost for acme
        {"Agent": "FAQ Bot", "Conversations": 1, "Users": 2, "Tokens": 0},
    ]
    assert workflows == [
        {"Workflow": "Summarize", "Runs": 2, "Tokens": 220},
        {"Workflow": "Translate", "Runs": 1, "Tokens": 75},
    ]


def test_initech_assets_list_every_owned_asset(prom, expected):
    view = V(tenant="initech", range_s=6 * H)
    start, end = T0 - 6 * H, T0
    table = _assets(prom, "Agents owned by the tenant", view)
    tokens = expected.by("agent", start, end, tenant="initech")
    conversations: dict[str, int] = defaultdict(int)
    users: dict[str, set] = defaultdict(set)
    for at, owner, agent_id, who in expected.invocations:
        if owner == "initech":
            if start < at <= end:
                conversations[agent_id] += 1
            if at <= end and who:
                users[agent_id].add(who)
    assert {r["Agent"]: (r["Conversations"], r["Users"], r["Tokens"]) for r in table} == {
        name: (conversations[a], len(users[a]), tokens.get(a, 0))
        for a, name in INITECH_AGENTS.items()}
    runs: dict[str, int] = defaultdict(int)
    for at, owner, wf in expected.runs:
        if owner == "initech" and start < at <= end:
            runs[wf] += 1
    table = _assets(prom, "Workflows owned by the tenant", view)
    wf_tokens = expected.by("workflow", start, end, tenant="initech")
    assert {r["Workflow"]: (r["Runs"], r["Tokens"]) for r in table} == {
        WORKFLOW_NAMES[w]: (runs[w], wf_tokens.get(w, 0)) for w in ("report-gen", "cover-sheet")}


# -- §4 SRE: usage and cost governance --------------------------------------------------------


def _sre(prom, title: str, view: View | None = None) -> dict[str, list[dict]]:
    return run(prom, panel(SRE, title), view or V())


def _tokens(expected: Expected, start: float, end: float) -> int:
    return sum(u.tokens for u in expected.calls(start, end))


def _shown(prom, title: str, view: View | None = None) -> dict[str, float]:
    """A bar gauge's bars (or a chart's series) by the name Grafana shows."""
    (frames,) = show(prom, [(panel(SRE, title), view or V())])
    return series(frames)


def test_token_rate_by_model_over_the_last_ten_minutes(prom, expected):
    rate = _shown(prom, "Token rate by model", V(rate_interval="10m"))
    window = expected.calls(T0 - 600, T0)
    assert window, "the scenario must have a call in the last 10 minutes"
    want = defaultdict(float)
    for u in window:
        want[u.model] += u.tokens / 600
    assert {m: r for m, r in rate.items() if r} == pytest.approx(dict(want))


@pytest.mark.parametrize("hours", [3, 48])
def test_service_usage_splits_tokens_and_calls_by_service(prom, expected, hours):
    """The nearest enclosing component: the worked example's split (attribution.md) plus
    initech's calls and acme's direct and tool calls of 1 October."""
    start, end = T0 - hours * H, T0
    table = rows(prom, panel(SRE, "Service usage"), V(range_s=hours * H))
    calls = expected.calls(start, end)
    want = {s: (sum(u.tokens for u in calls if u.service == s),
                sum(1 for u in calls if u.service == s))
            for s in ("agent", "workflow", "tool", "direct")}
    assert {r["Service"]: (r["Tokens"], r["Calls"]) for r in table} == want
    assert [r["Tokens"] for r in table] == sorted((r["Tokens"] for r in table), reverse=True)
    assert sum(r["Tokens"] for r in table) == _tokens(expected, start, end)
    assert sum(r["Calls"] for r in table) == len(calls)
    if hours == 48:
        assert all(r["Calls"] for r in table)  # every service but the assistant was used


def test_top_tenants_and_top_members_across_the_platform(prom, expected):
    start, end = T0 - 3 * H, T0
    tenants = defaultdict(int)
    members = defaultdict(int)
    for u in expected.calls(start, end):
        tenants[u.tenant] += u.tokens
        members[(u.tenant, u.member)] += u.tokens
    p = panel(SRE, "Top tenants")
    shown = bars(prom, p, V())
    assert shown == ranked(tenants, {})
    assert shown[-2:] == [("acme", 445), ("globex", 10)]
    p = panel(SRE, "Top members")
    got = [(r["Member"], r["Tenant"], r["Tokens"]) for r in rows(prom, p, V())]
    want = ranked({k: v for k, v in members.items()}, {})
    assert got == [(NAMES[m], t, v) for (t, m), v in want]


def test_errors_and_cache_reads_per_model(prom, expected):
    calls = expected.calls(T0 - 3 * H, T0)
    models = {u.model for u in calls}
    errors = _shown(prom, "Error rate by model")
    assert errors == {m: pytest.approx(
        sum(u.error for u in calls if u.model == m)
        / sum(1 for u in calls if u.model == m) * 100) for m in models}
    assert any(errors.values())
    cache = _shown(prom, "Cache read share by model")
    assert cache == {m: pytest.approx(
        sum(u.cache_read for u in calls if u.model == m)
        / sum(u.input for u in calls if u.model == m) * 100) for m in models}
    assert cache["qwen-max"] == 0 and cache["gpt-4o"] > 0


def test_attribution_health(prom, expected):
    start, end = T0 - 3 * H, T0
    unattributed, six, unpriced, rejected = (series(frames) for frames in show(prom, [
        (panel(SRE, "Unattributed tokens by reason"), V()),
        (panel(SRE, "Unattributed tokens by reason"), V(range_s=6 * H)),
        (panel(SRE, "Unpriced tokens by model"), V()),
        (panel(SRE, "Rejected spans by reason"), V())]))
    # the panel's second query: usage on spans that are no model call, none in this world
    none = {f"unclassified: {r}": 0 for r in ("unknown_kind", "tool_span", "workflow_span")}
    assert unattributed == {"not_member": 1500, "no_caller": 0, "ambiguous_tenant": 0, **none}
    assert six == {"not_member": 1500 + 1500 + 500, "no_caller": 200, "ambiguous_tenant": 0,
                   **none}
    assert unpriced == {UNPRICED: sum(u.tokens for u in expected.calls(
        start, end, model=UNPRICED))}
    assert rejected == {"invalid_token_count": 1}
    share = value(_sre(prom, "Unattributed share"))
    attributed = _tokens(expected, start, end)
    assert share == pytest.approx(1500 / (1500 + attributed) * 100)
    assert value(_sre(prom, "Duplicate spans")) == 3  # 2 + 1 inside the range, 5 before
    assert value(_sre(prom, "Pending traces")) == PENDING_NOW
    assert value(_sre(prom, "Directory age")) == T0 - DIRECTORY_LAST_LOAD


# -- Every range panel against the oracle -----------------------------------------------------


def test_the_oracle_knows_every_range_panel():
    assert set(ORACLE) == range_panels()


@pytest.mark.parametrize("hours", [1, 3, 6, 48])
@pytest.mark.parametrize("tenant", ["acme", "globex", "initech"])
def test_every_range_panel_shows_what_was_sent_in_the_range(prom, expected, tenant, hours):
    wrong = check(prom, expected, Directory.load(DIRECTORY), V(tenant=tenant, range_s=hours * H))
    assert not wrong, "\n".join(wrong)
