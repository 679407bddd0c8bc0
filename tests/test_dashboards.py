"""The structure of the committed Grafana dashboards, and that they are not stale.

What Grafana provisions is grafana/dashboards/*.json; grafana/build_dashboards.py writes
it. The queries themselves run against a real Prometheus in test_dashboard_queries.py.
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

#: views.md, panel by panel: (dashboard uid, title, panel type).
VIEWS = [
    # §1 Tenant overview
    ("llm-tenant-overview", "Agent tokens", "stat"),
    ("llm-tenant-overview", "Workflow tokens", "stat"),
    ("llm-tenant-overview", "Total tokens", "stat"),
    ("llm-tenant-overview", "Cost (USD)", "stat"),
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
    # §4 SRE (budget use: a later issue; latency: no duration metric yet, see the docs)
    ("llm-sre-governance", "Tokens today", "stat"),
    ("llm-sre-governance", "Today vs yesterday", "stat"),
    ("llm-sre-governance", "Tokens this month", "stat"),
    ("llm-sre-governance", "This month vs last month", "stat"),
    ("llm-sre-governance", "Service usage", "stat"),
    ("llm-sre-governance", "Token rate by model", "timeseries"),
    ("llm-sre-governance", "Cost, last hour", "stat"),
    ("llm-sre-governance", "Cost share by model", "piechart"),
    ("llm-sre-governance", "Month-end cost forecast", "stat"),
    ("llm-sre-governance", "Top tenants", "barchart"),
    ("llm-sre-governance", "Top members", "table"),
    ("llm-sre-governance", "Error rate by model", "bargauge"),
    ("llm-sre-governance", "Cache read share by model", "bargauge"),
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


def load() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def all_panels():
    for uid, d in load().items():
        for p in d["panels"]:
            yield uid, p


def by_title(uid: str, title: str) -> dict:
    (found,) = [p for p in load()[uid]["panels"] if p["title"] == title]
    return found


def _generator():
    spec = importlib.util.spec_from_file_location("build_dashboards",
                                                  GRAFANA / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_are_what_the_generator_writes():
    generated = _generator().render()
    committed = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    stale = sorted(set(generated) ^ set(committed)) + sorted(
        name for name in set(generated) & set(committed) if generated[name] != committed[name])
    assert not stale, f"stale: {stale}; run python grafana/build_dashboards.py"


def test_each_dashboard_has_a_stable_unique_uid_tags_and_the_grafana_11_schema():
    dashboards = load()
    assert set(dashboards) == UIDS
    for name, d in dashboards.items():
        assert d["uid"] == name  # file name = uid
        assert d["tags"] and "llm-token-exporter" in d["tags"]
        assert 39 <= d["schemaVersion"] <= 41
        assert d["title"] and d["description"]
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(titles)) == len(titles)


def test_datasource_variable_defaults_to_the_provisioned_uid():
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    (prometheus,) = [ds for ds in provisioned if ds["type"] == "prometheus"]
    for d in load().values():
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


def test_panel_ids_are_unique_and_grid_positions_do_not_overlap():
    for uid, d in load().items():
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


@pytest.mark.parametrize(("uid", "panel"), list(all_panels()),
                         ids=lambda x: x if isinstance(x, str) else x["title"])
def test_every_panel_has_a_description_a_unit_and_the_datasource_variable(uid, panel):
    assert len(panel["description"]) > 40, "the (i) tooltip states the counting logic"
    assert panel["fieldConfig"]["defaults"]["unit"]
    assert panel["datasource"] == DS
    refs = [t["refId"] for t in panel["targets"]]
    assert len(refs) == len(set(refs))
    for t in panel["targets"]:
        assert t["datasource"] == DS
        assert t["expr"].strip()
        if panel["type"] != "timeseries":
            assert t["instant"] is True and t["range"] is False


@pytest.mark.parametrize(("uid", "title", "kind"), VIEWS)
def test_the_panels_of_views_md_are_present_with_their_type(uid, title, kind):
    assert by_title(uid, title)["type"] == kind


def test_no_other_panels_than_those_listed():
    listed = {(uid, title) for uid, title, _ in VIEWS}
    assert {(uid, p["title"]) for uid, p in all_panels()} == listed


def test_top_tens_are_horizontal_bar_charts_limited_to_ten():
    for _, p in all_panels():
        if p["type"] == "barchart":
            assert p["options"]["orientation"] == "horizontal"
            assert p["options"]["xField"]
            assert p["targets"][0]["expr"].startswith("topk(10, ")
    assert by_title("llm-tenant-overview", "Member tokens top 10")["targets"][0][
        "expr"].startswith("topk(10, ")


@pytest.mark.parametrize("title", DRILL_DOWNS)
def test_drill_downs_merge_instant_queries_sorted_by_total(title):
    p = by_title("llm-drilldown", title)
    steps = [s["id"] for s in p["transformations"]]
    assert steps[0] == "merge" and "organize" in steps and "sortBy" in steps
    assert len(p["targets"]) >= 4
    assert all(t["format"] == "table" for t in p["targets"])
    assert p["options"]["sortBy"] == [{"displayName": "Total", "desc": True}]
    renamed = next(s for s in p["transformations"] if s["id"] == "organize")["options"]
    assert {"Total", "Input", "Output"} <= set(renamed["renameByName"].values())
    search = [t["expr"] for t in p["targets"] if "search" in t["expr"]]
    assert search, "the search box filters the table"


def test_search_is_a_textbox_used_only_inside_backtick_strings():
    variables = {v["name"]: v for v in load()["llm-drilldown"]["templating"]["list"]}
    assert variables["search"]["type"] == "textbox"
    for _, p in all_panels():
        for t in p["targets"]:
            for m in re.finditer(r"\$\{search(:\w+)?\}", t["expr"]):
                assert m.group(1) == ":regex", "regex-escape the search text"
                before = t["expr"][:m.start()]
                assert before.count("`") % 2 == 1, "inside a backtick string"


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


def test_cards_say_the_agent_and_workflow_cards_overlap():
    for title in ("Agent tokens", "Workflow tokens"):
        description = by_title("llm-tenant-overview", title)["description"]
        assert "not additive" in description and "chat workflow" in description


def test_view_all_links_carry_the_tenant_and_the_time_range():
    d = load()["llm-tenant-overview"]
    linked = [p for p in d["panels"] if p["type"] != "stat"]
    assert len(linked) == 4
    for p in linked:
        (link,) = p["links"]
        assert link["title"] == "View all"
        assert link["url"].startswith("/d/llm-drilldown/")
        assert "var-tenant=${tenant:percentencode}" in link["url"]
        assert "${__url_time_range}" in link["url"]


def test_range_panels_use_the_exact_difference_not_increase():
    for uid, p in all_panels():
        for t in p["targets"]:
            assert "increase(" not in t["expr"], (uid, p["title"])
            if "$__range" in t["expr"]:
                assert " offset $__range or " in t["expr"], (uid, p["title"])


def test_tenant_dashboards_filter_every_cost_query_by_the_tenant():
    for uid in ("llm-tenant-overview", "llm-tenant-assets", "llm-drilldown"):
        variables = {v["name"] for v in load()[uid]["templating"]["list"]}
        assert "tenant" in variables
        for p in load()[uid]["panels"]:
            for t in p["targets"]:
                for selector in re.findall(r"llm_\w+_(?:tokens|cost_usd)_total(\{[^}]*\})?",
                                           t["expr"]):
                    assert 'tenant="$tenant"' in selector, (uid, p["title"], t["expr"])


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_each_dashboard_has_a_doc_page_naming_every_panel(uid):
    page = ROOT / "docs" / "dashboards" / f"{uid}.md"
    text = page.read_text()
    assert f"`{uid}`" in text.splitlines()[0]
    missing = [p["title"] for p in load()[uid]["panels"] if p["title"] not in text]
    assert not missing, f"{page.name} does not describe {missing}"
