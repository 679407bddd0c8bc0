"""The structure of the committed Grafana dashboards, and that they are not stale.

What Grafana provisions is grafana/dashboards/en/*.json and grafana/dashboards/zh/*.json;
grafana/build_dashboards.py writes them. The queries themselves run against a real
Prometheus in the tests/test_dashboard_*.py files; the two languages are compared in
test_dashboard_i18n.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
PROVIDER = GRAFANA / "provisioning" / "dashboards" / "provider.yaml"

UIDS = {"llm-tenant-overview", "llm-tenant-assets", "llm-drilldown", "llm-sre-governance"}
DS = {"type": "prometheus", "uid": "${datasource}"}

#: Every panel, dashboard by dashboard: (dashboard uid, title, panel type).
VIEWS = [
    # §1 Tenant overview
    ("llm-tenant-overview", "Agent tokens", "stat"),
    ("llm-tenant-overview", "Workflow tokens", "stat"),
    ("llm-tenant-overview", "Total tokens", "stat"),
    ("llm-tenant-overview", "Cost (USD)", "stat"),
    ("llm-tenant-overview", "Tokens today", "stat"),
    ("llm-tenant-overview", "Today vs yesterday", "stat"),
    ("llm-tenant-overview", "Tokens this month", "stat"),
    ("llm-tenant-overview", "This month vs last month", "stat"),
    ("llm-tenant-overview", "Cost this month", "stat"),
    ("llm-tenant-overview", "Unpriced tokens this month", "stat"),
    ("llm-tenant-overview", "Budget use", "gauge"),
    ("llm-tenant-overview", "Model consumption top 10", "barchart"),
    ("llm-tenant-overview", "Agent consumption top 10", "barchart"),
    ("llm-tenant-overview", "Workflow consumption top 10", "barchart"),
    ("llm-tenant-overview", "Member tokens top 10", "table"),
    # §2 Tenant assets
    ("llm-tenant-assets", "Agents owned by the tenant", "table"),
    ("llm-tenant-assets", "Workflows owned by the tenant", "table"),
    # §3 Drill-down tables
    ("llm-drilldown", "Model consumption detail", "table"),
    ("llm-drilldown", "Agent consumption detail", "table"),
    ("llm-drilldown", "Workflow consumption detail", "table"),
    ("llm-drilldown", "Member ranking", "table"),
    # §4 SRE
    ("llm-sre-governance", "Tokens today", "stat"),
    ("llm-sre-governance", "Today vs yesterday", "stat"),
    ("llm-sre-governance", "Tokens this month", "stat"),
    ("llm-sre-governance", "This month vs last month", "stat"),
    ("llm-sre-governance", "Cost, last hour", "stat"),
    ("llm-sre-governance", "Unpriced tokens, last hour", "stat"),
    ("llm-sre-governance", "Cost this month", "stat"),
    ("llm-sre-governance", "Unpriced tokens this month", "stat"),
    ("llm-sre-governance", "Month-end cost forecast", "stat"),
    ("llm-sre-governance", "Budget use", "bargauge"),
    ("llm-sre-governance", "Month-end cost forecast by tenant", "bargauge"),
    ("llm-sre-governance", "Service usage", "table"),
    ("llm-sre-governance", "Token rate by model", "timeseries"),
    ("llm-sre-governance", "Cost share by model", "piechart"),
    ("llm-sre-governance", "Top tenants", "barchart"),
    ("llm-sre-governance", "Top members", "table"),
    ("llm-sre-governance", "Error rate by model", "bargauge"),
    ("llm-sre-governance", "Cache read share by model", "bargauge"),
    ("llm-sre-governance", "Call latency by model (p50, p95, p99)", "timeseries"),
    ("llm-sre-governance", "Time to first token by model (p50, p95)", "timeseries"),
    ("llm-sre-governance", "Unattributed tokens by reason", "bargauge"),
    ("llm-sre-governance", "Unpriced tokens by model", "bargauge"),
    ("llm-sre-governance", "Rejected spans by reason", "bargauge"),
    ("llm-sre-governance", "Unattributed share", "stat"),
    ("llm-sre-governance", "Duplicate spans", "stat"),
    ("llm-sre-governance", "Pending traces", "stat"),
    ("llm-sre-governance", "Directory age", "stat"),
]

DRILL_DOWNS = ["Model consumption detail", "Agent consumption detail",
               "Workflow consumption detail", "Member ranking"]
HEAT = "Counts the whole platform, including users outside this tenant."
COST = "Counts only this tenant's members."


LANGUAGES = ("en", "zh")


def uid_in(base: str, lang: str) -> str:
    return base if lang == "en" else f"{base}-{lang}"


def load(lang: str = "en") -> dict[str, dict]:
    """The committed dashboards of one language (grafana/dashboards/<lang>/), by file name."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((DASHBOARDS / lang).glob("*.json"))}


def all_panels(lang: str = "en"):
    for uid, d in load(lang).items():
        for p in d["panels"]:
            yield uid, p


def every_panel():
    for lang in LANGUAGES:
        for uid, p in all_panels(lang):
            yield lang, uid, p


def by_title(uid: str, title: str, lang: str = "en") -> dict:
    (found,) = [p for p in load(lang)[uid_in(uid, lang)]["panels"] if p["title"] == title]
    return found


def _generator():
    spec = importlib.util.spec_from_file_location("build_dashboards",
                                                  GRAFANA / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_are_what_the_generator_writes():
    generator = _generator()
    generated = generator.render()
    committed = generator.committed()
    stale = sorted(set(generated) ^ set(committed)) + sorted(
        name for name in set(generated) & set(committed) if generated[name] != committed[name])
    assert not stale, f"stale: {stale}; run python grafana/build_dashboards.py"
    assert generator.main(["--check"]) == 0


def test_one_folder_per_language_and_nothing_else():
    files = sorted(p.relative_to(DASHBOARDS).as_posix() for p in DASHBOARDS.rglob("*.json"))
    assert files == sorted(f"{lang}/{uid_in(u, lang)}.json" for lang in LANGUAGES for u in UIDS)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_dashboard_has_a_stable_unique_uid_tags_and_the_grafana_11_schema(lang):
    dashboards = load(lang)
    assert set(dashboards) == {uid_in(u, lang) for u in UIDS}
    for name, d in dashboards.items():
        assert d["uid"] == name  # file name = uid
        assert len(d["uid"]) <= 40  # Grafana's limit
        assert d["tags"] == ["llm-token-exporter", lang]
        (menu,) = d["links"]
        assert menu["type"] == "dashboards" and menu["tags"] == d["tags"]  # same language
        assert 39 <= d["schemaVersion"] <= 41
        assert d["title"] and d["description"]
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(titles)) == len(titles)


def test_uids_and_titles_differ_between_languages():
    en, zh = load("en"), load("zh")
    assert not set(en) & set(zh)
    assert not {d["title"] for d in en.values()} & {d["title"] for d in zh.values()}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_datasource_variable_defaults_to_the_provisioned_uid(lang):
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    (prometheus,) = [ds for ds in provisioned if ds["type"] == "prometheus"]
    for d in load(lang).values():
        variables = {v["name"]: v for v in d["templating"]["list"]}
        ds = variables["datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus"
        assert ds["current"]["value"] == prometheus["uid"] == "prometheus"
        for v in variables.values():
            if v["type"] == "query":
                assert v["datasource"] == DS


def test_dashboard_provider_loads_the_dashboards_folder_read_only():
    (provider,) = yaml.safe_load(PROVIDER.read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    assert provider["allowUiUpdates"] is False


@pytest.mark.parametrize("lang", LANGUAGES)
def test_panel_ids_are_unique_and_grid_positions_do_not_overlap(lang):
    for uid, d in load(lang).items():
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), uid
        cells = {}
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, (uid, p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{uid}: {p['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = p["title"]


#: The shortest (i) text that can state a counting logic (Chinese is denser).
MIN_DESCRIPTION = {"en": 40, "zh": 20}


@pytest.mark.parametrize(("lang", "uid", "panel"), list(every_panel()),
                         ids=lambda x: x if isinstance(x, str) else x["title"])
def test_every_panel_has_a_description_a_unit_and_the_datasource_variable(lang, uid, panel):
    assert len(panel["description"]) > MIN_DESCRIPTION[lang], "the (i) states the counting logic"
    assert panel["fieldConfig"]["defaults"]["unit"]
    assert panel["datasource"] == DS
    refs = [t["refId"] for t in panel["targets"]]
    assert len(refs) == len(set(refs))
    for t in panel["targets"]:
        assert t["datasource"] == DS
        assert t["expr"].strip()
        if panel["type"] != "timeseries":
            assert t["instant"] is True and t["range"] is False
    for override in panel["fieldConfig"]["overrides"]:  # a column's (i), where it has one
        for prop in override["properties"]:
            if prop["id"] == "description":
                assert len(prop["value"]) > MIN_DESCRIPTION[lang] // 2


@pytest.mark.parametrize(("uid", "title", "kind"), VIEWS)
def test_the_listed_panels_are_present_with_their_type(uid, title, kind):
    assert by_title(uid, title)["type"] == kind


def test_no_other_panels_than_those_listed():
    listed = {(uid, title) for uid, title, _ in VIEWS}
    assert {(uid, p["title"]) for uid, p in all_panels()} == listed


@pytest.mark.parametrize("lang", LANGUAGES)
def test_top_tens_are_horizontal_bar_charts_limited_to_ten(lang):
    for _, p in all_panels(lang):
        if p["type"] == "barchart":
            assert p["options"]["orientation"] == "horizontal"
            assert p["options"]["xField"]
            assert p["targets"][0]["expr"].startswith("topk(10, ")
    assert by_title("llm-tenant-overview", "Member tokens top 10")["targets"][0][
        "expr"].startswith("topk(10, ")


@pytest.mark.parametrize("title", DRILL_DOWNS)
def test_drill_downs_merge_instant_queries_sorted_by_total_and_filtered_by_the_search(title):
    p = by_title("llm-drilldown", title)
    steps = [s["id"] for s in p["transformations"]]
    assert steps[0] == "merge" and steps[-1] == "organize" and "sortBy" in steps
    assert steps.index("filterByValue") == len(steps) - 2  # after the rank, before organize
    assert len(p["targets"]) >= 4
    assert all(t["format"] == "table" for t in p["targets"])
    assert p["options"]["sortBy"] == [{"displayName": "Total", "desc": True}]
    renamed = next(s for s in p["transformations"] if s["id"] == "organize")["options"]
    assert {"Total", "Input", "Output"} <= set(renamed["renameByName"].values())


def _search_filters(p: dict) -> list[dict]:
    return [f for s in p.get("transformations", []) if s["id"] == "filterByValue"
            for f in s["options"]["filters"]]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_search_box_filters_in_grafana_and_never_reaches_a_query(lang):
    """The search text must never reach PromQL: no query of any dashboard mentions the
    variable; every drill-down table filters its rows with "Filter data by values"
    (Contains substring: literal, case-insensitive) on its name and id columns."""
    variables = {v["name"]: v for v in load(lang)[uid_in("llm-drilldown", lang)]
                 ["templating"]["list"]}
    assert variables["search"]["type"] == "textbox"
    for uid, p in all_panels(lang):
        for t in p["targets"]:
            assert "search" not in t["expr"].replace("search=", "").replace(
                "search)", ""), (uid, p["title"])
            assert not re.search(r"\$\{?search\b", t["expr"]), (uid, p["title"])
    fields = {"Model consumption detail": ["model"],
              "Agent consumption detail": ["agent", "name"],
              "Workflow consumption detail": ["workflow", "name"],
              "Member ranking": ["member", "name", "search"]}
    en_titles = [p["title"] for _, p in all_panels("en")]
    for (_, p), en_title in zip(all_panels(lang), en_titles, strict=True):
        filters = _search_filters(p)
        if en_title not in fields:
            assert not filters, p["title"]
            continue
        step = next(s for s in p["transformations"] if s["id"] == "filterByValue")
        assert step["options"]["type"] == "include" and step["options"]["match"] == "any"
        assert [f["fieldName"] for f in filters] == fields[en_title]
        for f in filters:
            assert f["config"] == {"id": "substring", "options": {"value": "${search}"}}


def test_model_share_column_states_its_formula():
    p = by_title("llm-drilldown", "Model consumption detail")
    share = next(o for o in p["fieldConfig"]["overrides"]
                 if o["matcher"]["options"] == "Share")
    props = {x["id"]: x["value"] for x in share["properties"]}
    assert props["unit"] == "percent"
    assert "total" in props["description"] and "×" in props["description"]


@pytest.mark.parametrize(("title", "heat", "cost"), [
    ("Agents owned by the tenant", ["Conversations", "Users"], ["Tokens"]),
    ("Workflows owned by the tenant", ["Runs"], ["Tokens"]),
])
def test_asset_columns_say_heat_or_cost_in_their_header(title, heat, cost):
    p = by_title("llm-tenant-assets", title)
    described = {o["matcher"]["options"]: {x["id"]: x["value"] for x in o["properties"]}
                 for o in p["fieldConfig"]["overrides"]}
    for column in heat:
        assert described[column]["description"].startswith(HEAT)
    for column in cost:
        assert described[column]["description"].startswith(COST)


def test_asset_columns_say_heat_or_cost_in_chinese_with_the_prd_wording():
    for title, heat in (("智能体列表", ["对话次数", "用户数"]), ("工作流列表", ["运行次数"])):
        p = by_title("llm-tenant-assets", title, "zh")
        described = {o["matcher"]["options"]: {x["id"]: x["value"] for x in o["properties"]}
                     for o in p["fieldConfig"]["overrides"]}
        for column in heat:
            assert described[column]["description"].startswith("统计全平台（含租户外）")
        assert described["Token消耗"]["description"].startswith("仅统计当前租户成员消耗")


def test_cards_say_the_agent_and_workflow_cards_overlap():
    for title in ("Agent tokens", "Workflow tokens"):
        description = by_title("llm-tenant-overview", title)["description"]
        assert "not additive" in description and "chat workflow" in description


@pytest.mark.parametrize("lang", LANGUAGES)
def test_view_all_links_carry_the_tenant_and_the_time_range(lang):
    d = load(lang)[uid_in("llm-tenant-overview", lang)]
    linked = [p for p in d["panels"] if p["type"] not in ("stat", "gauge")]
    assert len(linked) == 4
    for p in linked:
        (link,) = p["links"]
        assert link["title"] == {"en": "View all", "zh": "查看全部"}[lang]
        assert link["url"].startswith(f"/d/{uid_in('llm-drilldown', lang)}/")
        assert "var-tenant=${tenant:percentencode}" in link["url"]
        assert "${__url_time_range}" in link["url"]


#: The old per-series form: a series new at the range's start (an exporter at a new
#: address) would count its whole ledger again.
PER_SERIES_FIRST = re.compile(r"(\w+(?:\{[^}]*\})?) - \(\1 offset \$__range or \1 \* 0\)")
#: The start of a range, summed over exporters before any subtraction.
AGGREGATED_START = re.compile(r"sum(?: by \([^)]*\) )?\(\w+(?:\{[^}]*\})? offset \$__range\)")


#: The one rate() outside the time series: the month-end forecast's pace of the last day,
#: on the month's cost (a gauge that drops to 0 when a month begins: rate() takes that for
#: a reset), as the alert MonthEndOverBudget has it.
FORECAST_RATE = 'rate(llm_period_cost_usd{period="month"}[1d])'


@pytest.mark.parametrize("lang", LANGUAGES)
def test_range_panels_sum_over_exporters_before_subtracting_and_never_use_increase(lang):
    for uid, p in all_panels(lang):
        for t in p["targets"]:
            expr = t["expr"]
            assert "increase(" not in expr, (uid, p["title"])
            if p["type"] != "timeseries":
                assert "rate(" not in expr.replace(FORECAST_RATE, ""), (uid, p["title"])
            if "$__range" in expr:
                assert AGGREGATED_START.search(expr), (uid, p["title"])
                assert not PER_SERIES_FIRST.search(expr), (uid, p["title"])


#: The panels read at the range's end alone, on both dashboards that have them.
CALENDAR = {
    "llm-sre-governance": ["Tokens today", "Today vs yesterday", "Tokens this month",
                           "This month vs last month", "Cost, last hour",
                           "Unpriced tokens, last hour", "Cost this month",
                           "Unpriced tokens this month", "Month-end cost forecast",
                           "Budget use", "Month-end cost forecast by tenant"],
    "llm-tenant-overview": ["Tokens today", "Today vs yesterday", "Tokens this month",
                            "This month vs last month", "Cost this month",
                            "Unpriced tokens this month", "Budget use"],
}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_no_panel_overrides_the_time_range(lang):
    """Grafana ignores a panel's relative time (timeFrom) when the dashboard's range is
    absolute: no panel relies on one."""
    for uid, p in all_panels(lang):
        assert not {"timeFrom", "timeShift", "hideTimeOverride"} & set(p), (uid, p["title"])


@pytest.mark.parametrize(("uid", "title"),
                         [(uid, title) for uid, titles in CALENDAR.items() for title in titles])
def test_calendar_panels_do_not_depend_on_the_dashboard_range(uid, title):
    p = by_title(uid, title)
    for t in p["targets"]:
        assert "$__range" not in t["expr"] and "__from" not in t["expr"]
        assert "$__" not in t["expr"]
    # the (i) says so
    assert ("Independent of the dashboard's time range" in p["description"]
            or "the range's start does not matter" in p["description"]), title


#: The exporter's period and budget gauges (docs/budgets.md).
PERIOD_OR_BUDGET = re.compile(r"llm_(?:period|budget)_\w+(\{[^}]*\})?")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_period_and_budget_panels_read_the_gauges_at_one_instant(lang):
    """The period and budget gauges are this day's and month's values: never a range of
    them (they fall back to 0 when a day or month turns); the only window is the
    forecast's pace. The use is summed over exporters (each holds its share), the limit
    taken once, as the alert rules do."""
    seen = 0
    for uid, p in all_panels(lang):
        for t in p["targets"]:
            expr = t["expr"]
            if not PERIOD_OR_BUDGET.search(expr):
                continue
            seen += 1
            assert "$__" not in expr and "offset" not in expr, (uid, p["title"])
            assert "[" not in expr.replace(FORECAST_RATE, ""), (uid, p["title"])
            for selector in re.findall(r"llm_period_\w+\{[^}]*\}", expr):
                assert re.search(r'period="(today|yesterday|month|last_month)"', selector)
            used = re.findall(r"(\w+) by \([^)]*\) \(llm_budget_used_\w+", expr)
            limits = re.findall(r"(\w+) by \([^)]*\) \(llm_budget_limit_\w+", expr)
            assert set(used) <= {"sum"} and set(limits) <= {"max"}, (uid, p["title"])
            assert "llm_budget_ratio" not in expr  # one exporter's share
    assert seen >= 15


def test_tenant_dashboards_filter_every_cost_query_by_the_tenant():
    for lang in LANGUAGES:
        for base in ("llm-tenant-overview", "llm-tenant-assets", "llm-drilldown"):
            d = load(lang)[uid_in(base, lang)]
            variables = {v["name"] for v in d["templating"]["list"]}
            assert "tenant" in variables
            for p in d["panels"]:
                for t in p["targets"]:
                    for selector in re.findall(
                            r"llm_\w+_(?:tokens|cost_usd)_total(\{[^}]*\})?", t["expr"]):
                        assert 'tenant="$tenant"' in selector, (base, p["title"], t["expr"])
                    for selector in PERIOD_OR_BUDGET.findall(t["expr"]):
                        assert 'tenant="$tenant"' in selector, (base, p["title"], t["expr"])


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_each_dashboard_has_a_doc_page_naming_every_panel_in_both_languages(uid):
    page = ROOT / "docs" / "dashboards" / f"{uid}.md"
    text = page.read_text(encoding="utf-8")
    assert f"`{uid}`" in text.splitlines()[0]
    for lang in LANGUAGES:
        d = load(lang)[uid_in(uid, lang)]
        missing = [p["title"] for p in d["panels"] if p["title"] not in text]
        assert not missing, f"{page.name} does not describe {missing} ({lang})"
        assert d["title"] in text, f"{page.name} does not name the dashboard ({lang})"


#: The latency panels: title -> (histogram, quantiles in order).
LATENCY = {"Call latency by model (p50, p95, p99)":
           ("llm_model_call_duration_seconds", (0.5, 0.95, 0.99)),
           "Time to first token by model (p50, p95)":
           ("llm_model_time_to_first_token_seconds", (0.5, 0.95))}


@pytest.mark.parametrize("title", sorted(LATENCY))
def test_latency_panels_are_percentiles_per_model_in_seconds(title):
    histogram, quantiles = LATENCY[title]
    p = by_title("llm-sre-governance", title)
    assert p["type"] == "timeseries" and p["fieldConfig"]["defaults"]["unit"] == "s"
    assert [(t["expr"], t["legendFormat"], t["instant"], t["range"]) for t in p["targets"]] == [
        (f"histogram_quantile({q}, sum by (model, le) (rate({histogram}_bucket"
         "[$__rate_interval]))) >= 0", f"{{{{model}}}} p{round(q * 100)}", False, True)
        for q in quantiles]
    assert "$__rate_interval" in p["description"] and histogram in p["description"]


def test_one_error_rate_panel_per_model_in_percent():
    errors = [(uid, p["title"]) for uid, p in all_panels()
              if any('outcome="error"' in t["expr"] for t in p["targets"])]
    assert errors == [("llm-sre-governance", "Error rate by model")]
    p = by_title("llm-sre-governance", "Error rate by model")
    assert p["fieldConfig"]["defaults"]["unit"] == "percent"
    assert [t["legendFormat"] for t in p["targets"]] == ["{{model}}"]
