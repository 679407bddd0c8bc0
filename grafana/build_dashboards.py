"""Generates the Grafana dashboards of ``shared/spec/views.md`` §1-§4 as JSON.

    python grafana/build_dashboards.py           # rewrite grafana/dashboards/*.json
    python grafana/build_dashboards.py --check   # exit 1 when the committed JSON is stale

Standard library only. The committed JSON is what Grafana provisions
(``grafana/provisioning/dashboards/provider.yaml``); ``tests/test_dashboards.py`` fails when
it differs from what this script writes, and ``tests/test_dashboard_queries.py`` runs every
query against a real Prometheus with known data.

Numbers for a time range are exact. Our counters never reset (the service keeps its totals
in a durable ledger), so the tokens of a range are the raw difference of the counter between
the range's end and its start: ``x - (x offset $__range or x * 0)``. ``or`` matches series by
their labels (the metric name aside), so a series created inside the range has no start
value and counts from 0. ``increase()`` is not used: it drops a new series' first sample and
extrapolates to the range's edges.

Layout: Grafana 11.6 dashboard schema (schemaVersion 41), one ``$datasource`` variable whose
default is the provisioned data source uid, grid positions set explicitly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 41
PLUGIN_VERSION = "11.6.0"
#: The uid pinned in provisioning/datasources/prometheus.yaml: the variable's default.
DATASOURCE_UID = "prometheus"
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["llm-token-exporter"]

UID_OVERVIEW = "llm-tenant-overview"
UID_ASSETS = "llm-tenant-assets"
UID_DRILLDOWN = "llm-drilldown"
UID_SRE = "llm-sre-governance"

RANGE = "$__range"
#: A case-insensitive "contains" match of the search box. Backticks: Grafana's regex escaping
#: writes backslashes (``\.``) that a double-quoted PromQL string refuses.
SEARCH = "`(?i).*${search:regex}.*`"
TENANT = 'tenant="$tenant"'
#: The start of the panel's time range, in Unix seconds (for ``@``).
FROM_S = "${__from:date:seconds}"

# Counting-logic sentences shared by several descriptions.
CALLER = "Caller attribution: only tokens of calls made by members of this tenant count."
HEAT = "Counts the whole platform, including users outside this tenant."
COST = "Counts only this tenant's members."
RANGE_NOTE = "Over the selected time range, exact (counter at the end minus at the start)."


# -- PromQL -----------------------------------------------------------------------------------


def window(sel: str, rng: str = RANGE) -> str:
    """The exact increase of a never-resetting counter over ``rng`` (see the module doc)."""
    return f"({sel} - ({sel} offset {rng} or {sel} * 0))"


def total(sel: str, by: str | None = None, rng: str = RANGE) -> str:
    """``sum [by (labels)]`` of :func:`window`."""
    return f"sum by ({by}) {window(sel, rng)}" if by else f"sum{window(sel, rng)}"


def named(expr: str, key: str, info: str, id_label: str | None = None) -> str:
    """``expr`` (one series per ``key``, e.g. ``"agent"`` or ``"tenant, member"``) with the
    display ``name`` from an ``_info`` metric; a key missing from the directory shows its id
    (``id_label``, default ``key``) as its name, so nothing is dropped."""
    id_label = id_label or key
    return (
        f"(({expr}) * on({key}) group_left(name) max by ({key}, name) ({info}))"
        f' or on({key}) label_replace({expr}, "name", "$1", "{id_label}", "(.*)")'
    )


def pct_change(now: str, before: str) -> str:
    return f"(({now}) - ({before})) / (({before}) > 0) * 100"


# -- Panels -----------------------------------------------------------------------------------


def target(expr: str, ref: str = "A", *, fmt: str | None = "table", legend: str | None = None,
           instant: bool = True) -> dict:
    t = {"datasource": DS, "editorMode": "code", "expr": expr, "instant": instant,
         "range": not instant, "refId": ref}
    if fmt:
        t["format"] = fmt
    if legend is not None:
        t["legendFormat"] = legend
    return t


def _thresholds(*steps: tuple[str, float | None]) -> dict:
    return {"mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in steps]}


_BASE = _thresholds(("text", None))
#: The seed's colours for a change in %: growth green, decline red.
_GROWTH = _thresholds(("red", None), ("green", 0))


class Grid:
    """Hands out panel ids and explicit grid positions, row by row (24 columns)."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self._y = 0

    def row(self, height: int, *panels: tuple[int, dict]) -> None:
        x = 0
        for width, panel in panels:
            panel["id"] = len(self.panels) + 1
            panel["gridPos"] = {"h": height, "w": width, "x": x, "y": self._y}
            self.panels.append(panel)
            x += width
        assert x <= 24, x
        self._y += height


def panel(kind: str, title: str, description: str, unit: str, targets: list[dict], *,
          options: dict, custom: dict | None = None, overrides: list | None = None,
          transformations: list | None = None, links: list | None = None,
          decimals: int | None = None, thresholds: dict | None = None,
          color: str = "thresholds", time_from: str | None = None, extra: dict | None = None,
          ) -> dict:
    defaults: dict = {"unit": unit, "color": {"mode": color},
                      "thresholds": thresholds or _BASE, "mappings": []}
    if decimals is not None:
        defaults["decimals"] = decimals
    if custom is not None:
        defaults["custom"] = custom
    out = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "pluginVersion": PLUGIN_VERSION,
        "fieldConfig": {"defaults": {**defaults, **(extra or {})}, "overrides": overrides or []},
        "options": options,
        "targets": targets,
    }
    if transformations:
        out["transformations"] = transformations
    if links:
        out["links"] = links
    if time_from:
        out["timeFrom"] = time_from
        out["hideTimeOverride"] = False
    return out


_REDUCE = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def stat(title: str, description: str, unit: str, targets: list[dict], *,
         decimals: int | None = 0, text_mode: str = "value", thresholds: dict | None = None,
         color_mode: str = "none", time_from: str | None = None) -> dict:
    return panel(
        "stat", title, description, unit, targets, decimals=decimals, thresholds=thresholds,
        time_from=time_from,
        options={"reduceOptions": _REDUCE, "orientation": "auto", "textMode": text_mode,
                 "wideLayout": True, "colorMode": color_mode, "graphMode": "none",
                 "justifyMode": "auto", "showPercentChange": False},
    )


def _organize(rename: dict[str, str], exclude: list[str], order: list[str]) -> dict:
    """Grafana's organize step; every key is an original field name (before the rename),
    ``order`` lists the columns shown by their new names."""
    original = {new: old for old, new in rename.items()}
    return {"id": "organize", "options": {
        "excludeByName": {name: True for name in exclude},
        "indexByName": {original.get(name, name): i for i, name in enumerate(order)},
        "renameByName": rename,
    }}


def _sort(field: str) -> dict:
    return {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": field, "desc": True}]}}


def barchart(title: str, description: str, expr: str, label: str, label_title: str,
             *, exclude: list[str], links: list | None = None) -> dict:
    """A horizontal top-10 bar chart: one instant query, y = ``label``, x = tokens."""
    return panel(
        "barchart", title, description, "locale", [target(expr)], decimals=0,
        color="palette-classic", links=links,
        transformations=[
            _sort("Value"),
            _organize({label: label_title, "Value": "Tokens"}, ["Time", *exclude],
                      [label_title, "Tokens"]),
        ],
        custom={"axisPlacement": "auto", "axisLabel": "", "axisCenteredZero": False,
                "axisColorMode": "text", "axisBorderShow": False, "fillOpacity": 80,
                "gradientMode": "none", "lineWidth": 1, "scaleDistribution": {"type": "linear"},
                "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                "thresholdsStyle": {"mode": "off"}},
        options={"orientation": "horizontal", "xField": label_title, "showValue": "always",
                 "stacking": "none", "groupWidth": 0.7, "barWidth": 0.8, "barRadius": 0,
                 "fullHighlight": False, "xTickLabelRotation": 0, "xTickLabelSpacing": 0,
                 "xTickLabelMaxLength": 0,
                 "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom",
                            "calcs": []},
                 "tooltip": {"mode": "single", "sort": "none"}},
    )


def bargauge(title: str, description: str, unit: str, targets: list[dict], *,
             decimals: int | None = 0, max_value: float | None = None,
             thresholds: dict | None = None) -> dict:
    extra = {"min": 0}
    if max_value is not None:
        extra["max"] = max_value
    return panel(
        "bargauge", title, description, unit, targets, decimals=decimals,
        thresholds=thresholds or _thresholds(("blue", None)), extra=extra,
        options={"orientation": "horizontal", "displayMode": "basic", "reduceOptions": _REDUCE,
                 "showUnfilled": True, "valueMode": "color", "namePlacement": "auto",
                 "sizing": "auto", "minVizHeight": 16, "minVizWidth": 8, "maxVizHeight": 300,
                 "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom",
                            "calcs": []}},
    )


def column(name: str, *, unit: str | None = None, description: str | None = None,
           decimals: int | None = None) -> dict:
    props = []
    if unit:
        props.append({"id": "unit", "value": unit})
    if decimals is not None:
        props.append({"id": "decimals", "value": decimals})
    if description:
        props.append({"id": "description", "value": description})
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


def table(title: str, description: str, targets: list[dict], *, rename: dict[str, str],
          exclude: list[str], order: list[str], sort_by: str, columns: list[dict],
          extra_transformations: list | None = None, links: list | None = None) -> dict:
    """Instant queries joined into one table: merge (rows with the same labels), sort, then
    organize (rename, hide, order). Columns are sortable by a click on their header."""
    value_of_sort = next(k for k, v in rename.items() if v == sort_by)
    steps = []
    if len(targets) > 1:
        steps.append({"id": "merge", "options": {}})
    steps.append(_sort(value_of_sort))
    steps += extra_transformations or []
    steps.append(_organize(rename, ["Time", *exclude], order))
    return panel(
        "table", title, description, "locale", targets, decimals=0, links=links,
        transformations=steps, overrides=columns,
        custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False,
                "filterable": False},
        options={"showHeader": True, "cellHeight": "sm", "sortBy": [
            {"displayName": sort_by, "desc": True}],
            "footer": {"show": False, "reducer": ["sum"], "countRows": False, "fields": ""}},
    )


def view_all(dashboard_uid: str, slug: str) -> list[dict]:
    """A "View all" link to the drill-down, carrying the tenant, the data source and the
    time range."""
    url = (f"/d/{dashboard_uid}/{slug}?var-datasource=${{datasource:percentencode}}"
           "&var-tenant=${tenant:percentencode}&${__url_time_range}")
    return [{"title": "View all", "url": url, "targetBlank": False}]


# -- Variables and the dashboard --------------------------------------------------------------


def datasource_variable() -> dict:
    return {"type": "datasource", "name": "datasource", "label": "Data source",
            "query": "prometheus", "regex": "", "hide": 0, "includeAll": False,
            "multi": False, "refresh": 1, "skipUrlSync": False, "options": [],
            "current": {"selected": False, "text": "Prometheus", "value": DATASOURCE_UID}}


def tenant_variable() -> dict:
    query = "label_values(llm_member_info, tenant)"
    return {"type": "query", "name": "tenant", "label": "Tenant", "datasource": DS,
            "definition": query,
            "query": {"qryType": 1, "query": query,
                      "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "description": "Tenants of the directory (llm_member_info). Isolation between "
                           "tenants is NOT enforced by this variable: see the docs.",
            "refresh": 2, "sort": 1, "regex": "", "hide": 0, "includeAll": False,
            "multi": False, "skipUrlSync": False, "options": [], "current": {}}


def search_variable() -> dict:
    return {"type": "textbox", "name": "search", "label": "Search",
            "description": "Case-insensitive; matches the name or id (members: also email, "
                           "mis id and phone when the exporter exports them).",
            "query": "", "hide": 0, "skipUrlSync": False,
            "current": {"selected": False, "text": "", "value": ""},
            "options": [{"selected": True, "text": "", "value": ""}]}


def dashboard(uid: str, title: str, description: str, panels: list[dict], variables: list,
              *, time_from: str, timezone: str = "browser") -> dict:
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 0,
        "id": None,
        "links": [{"title": "LLM tokens", "type": "dashboards", "tags": TAGS, "asDropdown": True,
                   "includeVars": True, "keepTime": True, "icon": "external link",
                   "targetBlank": False, "tooltip": "", "url": ""}],
        "panels": panels,
        "refresh": "",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": variables},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": timezone,
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# -- §1 Tenant overview -----------------------------------------------------------------------

AGENT_TOKENS = f"llm_agent_tokens_total{{{TENANT}}}"
WORKFLOW_TOKENS = f"llm_workflow_tokens_total{{{TENANT}}}"
MODEL_TOKENS = f"llm_model_tokens_total{{{TENANT}}}"
MEMBER_TOKENS = f"llm_member_tokens_total{{{TENANT}}}"
MEMBER_INFO = f"llm_member_info{{{TENANT}}}"
MODEL_COST = f"llm_model_cost_usd_total{{{TENANT}}}"
DRILL_SLUG = "llm-tokens-drill-down"


def overview() -> dict:
    g = Grid()
    g.row(4,
          (6, stat("Agent tokens",
                   f"{CALLER} The sum of all tokens consumed when this tenant's members call "
                   "agents: the agent's own model calls plus everything it calls (workflows, "
                   "tools, sub-agents). An agent's chat workflow counts for the agent, never "
                   "as a workflow. Overlaps with Workflow tokens where an agent runs a "
                   f"workflow: the two cards are not additive. {RANGE_NOTE}",
                   "locale", [target(f"{total(AGENT_TOKENS)} or vector(0)", fmt=None)])),
          (6, stat("Workflow tokens",
                   f"{CALLER} The sum of all tokens consumed by the workflow runs of this "
                   "tenant's members (the outermost workflow counts). An agent's chat "
                   "workflow is not a workflow here: its tokens count for the agent. Overlaps "
                   "with Agent tokens where an agent runs a workflow: the two cards are not "
                   f"additive. {RANGE_NOTE}",
                   "locale", [target(f"{total(WORKFLOW_TOKENS)} or vector(0)", fmt=None)])),
          (6, stat("Total tokens",
                   f"{CALLER} Every token of every model call of this tenant's members "
                   f"(input + output), inside agents, workflows or neither. {RANGE_NOTE}",
                   "locale", [target(f"{total(MODEL_TOKENS)} or vector(0)", fmt=None)])),
          (6, stat("Cost (USD)",
                   f"{CALLER} The cost of Total tokens at the price catalog's prices (input, "
                   "output, cache read and cache write priced apart). Tokens of a model "
                   f"missing from the catalog have no cost. {RANGE_NOTE}",
                   "currencyUSD",
                   [target(f"{total(MODEL_COST)} or vector(0)", fmt=None)],
                   decimals=None)))
    models = f"topk(10, {total(MODEL_TOKENS, 'model')} > 0)"
    agents = named(f"{total(AGENT_TOKENS, 'agent')} > 0", "agent", "llm_agent_info")
    workflows = named(f"{total(WORKFLOW_TOKENS, 'workflow')} > 0", "workflow",
                      "llm_workflow_info")
    members = named(f"{total(MEMBER_TOKENS, 'member')} > 0", "member", MEMBER_INFO)
    g.row(9,
          (12, barchart("Model consumption top 10",
                        f"{CALLER} Tokens (input + output) this tenant's members consumed "
                        f"per model; the 10 largest. {RANGE_NOTE}",
                        models, "model", "Model", exclude=[],
                        links=view_all(UID_DRILLDOWN, DRILL_SLUG))),
          (12, barchart("Agent consumption top 10",
                        f"{CALLER} Tokens this tenant's members consumed per agent (the "
                        "outermost agent: its own calls, its chat workflow, the workflows and "
                        "tools it calls), agents of other tenants included; the 10 largest. "
                        "An agent missing from the directory shows its id. "
                        f"{RANGE_NOTE}",
                        f"topk(10, {agents})", "name", "Agent", exclude=["agent"],
                        links=view_all(UID_DRILLDOWN, DRILL_SLUG))))
    g.row(9,
          (12, barchart("Workflow consumption top 10",
                        f"{CALLER} Tokens this tenant's members consumed per workflow (the "
                        "outermost workflow run); an agent's chat workflow never appears "
                        f"here, its tokens count for the agent. The 10 largest. {RANGE_NOTE}",
                        f"topk(10, {workflows})", "name", "Workflow", exclude=["workflow"],
                        links=view_all(UID_DRILLDOWN, DRILL_SLUG))),
          (12, table("Member tokens top 10",
                     f"{CALLER} The 10 members of this tenant who consumed the most tokens "
                     f"(input + output). {RANGE_NOTE}",
                     [target(f"topk(10, {members})")],
                     rename={"name": "Member", "Value": "Tokens"}, exclude=["member"],
                     order=["Member", "Tokens"], sort_by="Tokens",
                     columns=[column("Tokens", description=COST)],
                     links=view_all(UID_DRILLDOWN, DRILL_SLUG))))
    return dashboard(
        UID_OVERVIEW, "LLM tokens: tenant overview",
        "Core resource consumption of one tenant (views.md §1): caller-attributed tokens and "
        "cost by agent, workflow, model and member.",
        g.panels, [datasource_variable(), tenant_variable()], time_from="now-7d")


# -- §2 Tenant assets -------------------------------------------------------------------------


def sel(metric: str, *matchers: str) -> str:
    """A selector: ``sel("x_total", TENANT, 'type="input"')``."""
    return f"{metric}{{{','.join(matchers)}}}" if matchers else metric


OWNER = 'owner_tenant="$tenant"'


def _asset_table(kind: str, title: str, description: str,
                 heat: list[tuple[str, str, str]]) -> dict:
    """Assets owned by the tenant: one row per asset of the directory (or with heat under
    this owner), heat columns platform-wide, the token column for this tenant's members
    only. ``heat``: (header, selector, "window" for a counter | "max" for a gauge)."""
    rows = (f"(max by ({kind}) ({sel(f'llm_{kind}_info', OWNER)}) or on({kind}) "
            f"max by ({kind}) ({heat[0][1]}))")
    zero = f"{rows} * 0"
    refs = iter("ABCD")
    targets, rename, columns = [], {}, []
    for header, selector, how in heat:
        ref = next(refs)
        expr = total(selector, kind) if how == "window" else f"max by ({kind}) ({selector})"
        targets.append(target(f"{expr} or on({kind}) {zero}", ref))
        rename[f"Value #{ref}"] = header
        span = ("Distinct callers ever (not limited to the time range)." if how == "max"
                else "Over the selected time range.")
        columns.append(column(header, description=f"{HEAT} {span}"))
    ref = next(refs)
    tokens = total(sel(f"llm_{kind}_tokens_total", TENANT), kind)
    targets.append(target(f"({tokens} and on({kind}) {rows}) or on({kind}) {zero}", ref))
    rename[f"Value #{ref}"] = "Tokens"
    columns.append(column("Tokens", description=f"{COST} Over the selected time range."))
    name_ref = next(refs)
    names = (f"max by ({kind}, name) ({sel(f'llm_{kind}_info', OWNER)})"
             f' or on({kind}) label_replace({rows}, "name", "$1", "{kind}", "(.*)")')
    targets.append(target(names, name_ref))
    rename["name"] = kind.capitalize()
    return table(
        title, description, targets, rename=rename, exclude=[kind, f"Value #{name_ref}"],
        order=[kind.capitalize(), *(h for h, _, _ in heat), "Tokens"], sort_by="Tokens",
        columns=columns)


def assets() -> dict:
    g = Grid()
    g.row(11, (24, _asset_table(
        "agent", "Agents owned by the tenant",
        "Every agent this tenant owns (from the directory). Conversations and Users are heat "
        f"metrics: {HEAT} Conversations are agent invocations (conversation turns, sub-agents "
        "included) in the time range; Users are distinct callers ever. Tokens is a cost "
        f"metric: {COST} It is the agent's tokens (its own calls, chat workflow, workflows "
        "and tools it calls) in the time range.",
        [("Conversations", sel("llm_agent_invocations_total", OWNER), "window"),
         ("Users", sel("llm_agent_users", OWNER), "max")])))
    g.row(11, (24, _asset_table(
        "workflow", "Workflows owned by the tenant",
        "Every workflow this tenant owns (from the directory; chat workflows are part of "
        f"their agent and never listed). Runs is a heat metric: {HEAT} Runs are workflow "
        "runs (nested runs included) in the time range. Tokens is a cost metric: "
        f"{COST} It is the tokens of runs where the workflow is the outermost one, in the "
        "time range.",
        [("Runs", sel("llm_workflow_runs_total", OWNER), "window")])))
    return dashboard(
        UID_ASSETS, "LLM tokens: tenant assets",
        "The agents and workflows a tenant owns (views.md §2): heat metrics count the whole "
        "platform, the token (cost) column counts only the tenant's members.",
        g.panels, [datasource_variable(), tenant_variable()], time_from="now-30d")


# -- §3 Drill-down tables ---------------------------------------------------------------------


def _by_type(metric: str, key: str, rows: str) -> list[str]:
    """Input and output tokens per ``key`` of the rows ``rows`` selects."""
    typed = [sel(metric, TENANT, 'type="' + t + '"') for t in ("input", "output")]
    return [f"{total(selector, key)} and on({key}) {rows}" for selector in typed]


def _creator_info(kind: str) -> str:
    """``llm_<kind>_info`` with ``creator_name``: the creator's member name, else their id."""
    info = f"llm_{kind}_info"
    keyed = f'label_replace({info}, "member", "$1", "creator", "(.*)")'
    member_names = ('max by (member, creator_name) (label_replace(llm_member_info, '
                    '"creator_name", "$1", "name", "(.*)"))')
    return (f"(({keyed}) * on(member) group_left(creator_name) {member_names})"
            f' or on({kind}) label_replace({info}, "creator_name", "$1", "creator", "(.*)")')


def _asset_detail(kind: str, title: str, description: str) -> dict:
    """Total, input and output per agent or workflow for the tenant, filtered by the search
    box (name or id), with name, creation time and creator from the directory."""
    metric = f"llm_{kind}_tokens_total"
    matched = (f"({sel(f'llm_{kind}_info', f'name=~{SEARCH}')} "
               f"or {sel(metric, TENANT, f'{kind}=~{SEARCH}')})")
    rows = f"(({total(sel(metric, TENANT), kind)} > 0) and on({kind}) {matched})"
    inputs, outputs = _by_type(metric, kind, rows)
    names = (f"(max by ({kind}, name, created_at, creator_name) ({_creator_info(kind)}) "
             f"and on({kind}) {rows})"
             f' or on({kind}) label_replace({rows}, "name", "$1", "{kind}", "(.*)")')
    return table(
        title, description,
        [target(rows, "A"), target(inputs, "B"), target(outputs, "C"), target(names, "D")],
        rename={"name": kind.capitalize(), "Value #A": "Total", "Value #B": "Input",
                "Value #C": "Output", "created_at": "Created at", "creator_name": "Creator"},
        exclude=[kind, "Value #D"],
        order=[kind.capitalize(), "Total", "Input", "Output", "Created at", "Creator"],
        sort_by="Total", columns=[column("Total", description=COST)])


def _model_detail() -> dict:
    metric = "llm_model_tokens_total"
    rows = f"({total(sel(metric, TENANT, f'model=~{SEARCH}'), 'model')} > 0)"
    inputs, outputs = _by_type(metric, "model", rows)
    share = f"{rows} / scalar({total(MODEL_TOKENS)}) * 100"
    formula = ("Share = this model's total / the tenant's total over all models in the time "
               "range × 100 (the search box does not change the denominator).")
    return table(
        "Model consumption detail",
        f"{CALLER} Every model this tenant's members used in the time range: total (input + "
        f"output), input and output tokens, and the model's share of the tenant's tokens. "
        f"{formula} Search: part of the model name. {RANGE_NOTE}",
        [target(rows, "A"), target(inputs, "B"), target(outputs, "C"), target(share, "D")],
        rename={"model": "Model", "Value #A": "Total", "Value #B": "Input",
                "Value #C": "Output", "Value #D": "Share"},
        exclude=[], order=["Model", "Total", "Input", "Output", "Share"], sort_by="Total",
        columns=[column("Share", unit="percent", decimals=2, description=formula),
                 column("Total", description=COST)])


def _member_ranking() -> dict:
    metric = "llm_member_tokens_total"
    matched = (f"({sel('llm_member_info', TENANT, f'search=~{SEARCH}')} "
               f"or {sel(metric, TENANT, f'member=~{SEARCH}')})")
    rows = f"(({total(MEMBER_TOKENS, 'member')} > 0) and on(member) {matched})"
    inputs, outputs = _by_type(metric, "member", rows)
    names = (f"(max by (member, name) ({MEMBER_INFO}) and on(member) {rows})"
             f' or on(member) label_replace({rows}, "name", "$1", "member", "(.*)")')
    rank = [
        {"id": "calculateField", "options": {
            "mode": "index", "index": {"asPercentile": False}, "alias": "Row",
            "timeSeries": False}},
        {"id": "calculateField", "options": {
            "mode": "binary", "alias": "Rank", "timeSeries": False,
            "binary": {"left": {"matcher": {"id": "byName", "options": "Row"}},
                       "operator": "+", "right": {"fixed": "1"}}}},
    ]
    return table(
        "Member ranking",
        f"{CALLER} Every member of this tenant who consumed tokens in the time range, ranked "
        "by total tokens (input + output), largest first. Search: part of the member's "
        "name, email, mis id or phone (contact fields only when the exporter is configured "
        "to export them) or id; the rank is the position among the rows shown. "
        f"{RANGE_NOTE}",
        [target(rows, "A"), target(inputs, "B"), target(outputs, "C"), target(names, "D")],
        rename={"name": "Member", "Value #A": "Total", "Value #B": "Input",
                "Value #C": "Output"},
        exclude=["member", "Value #D", "Row"],
        order=["Rank", "Member", "Total", "Input", "Output"], sort_by="Total",
        extra_transformations=rank,
        columns=[column("Rank", description="Position by total tokens, largest first."),
                 column("Total", description=COST)])


def drilldown() -> dict:
    g = Grid()
    g.row(10, (24, _model_detail()))
    g.row(10, (24, _asset_detail(
        "agent", "Agent consumption detail",
        f"{CALLER} Every agent this tenant's members used in the time range (agents owned "
        "by other tenants included): total (input + output), input and output tokens; its "
        "creation time and creator from the directory (an agent missing from the directory "
        "shows its id and no creator). An agent's tokens are its own calls plus its chat "
        "workflow, the workflows and tools it calls. Search: part of the agent's name or id. "
        f"{RANGE_NOTE}")))
    g.row(10, (24, _asset_detail(
        "workflow", "Workflow consumption detail",
        f"{CALLER} Every workflow this tenant's members ran in the time range (the outermost "
        "workflow counts; an agent's chat workflow never appears): total (input + output), "
        "input and output tokens; its creation time and creator from the directory. Search: "
        f"part of the workflow's name or id. {RANGE_NOTE}")))
    g.row(12, (24, _member_ranking()))
    return dashboard(
        UID_DRILLDOWN, "LLM tokens: drill-down",
        "The \"View all\" targets of the tenant overview (views.md §3): every model, agent, "
        "workflow and member of a tenant with total, input and output tokens, sortable and "
        "searchable.",
        g.panels, [datasource_variable(), tenant_variable(), search_variable()],
        time_from="now-7d")


# -- §4 SRE: usage and cost governance --------------------------------------------------------

ALL_TOKENS = "llm_model_tokens_total"
ALL_COST = "llm_model_cost_usd_total"


def _at_start(sel: str, shift: str) -> str:
    """Tokens from the panel range's start to its end, both moved back by ``shift``."""
    moved = f"{sel} offset {shift}"
    return f"sum({moved} - ({sel} @ {FROM_S} offset {shift} or {moved} * 0))"


def _last_month_same_time(sel: str) -> str:
    """This month's elapsed time, moved back by the length of last month: the same days and
    hours of last month. PromQL has no month unit, so one branch per possible length, gated
    by the length of the month before this range's start."""
    branches = [f"({_at_start(sel, f'{n}d')} and on() "
                f"(days_in_month(vector({FROM_S} - 1)) == {n}))" for n in (28, 29, 30, 31)]
    return "(" + " or ".join(branches) + ")"


def sre() -> dict:
    g = Grid()
    today = total(ALL_TOKENS)
    g.row(4,
          (4, stat("Tokens today",
                   "Attributed tokens (input + output) of every tenant since 00:00 UTC "
                   "today, exact.", "locale", [target(f"{today} or vector(0)", fmt=None)],
                   time_from="now/d")),
          (4, stat("Today vs yesterday",
                   "Change of today's tokens against yesterday over the same hours (00:00 "
                   "UTC to this time of day), in %: (today − yesterday) / yesterday × 100. "
                   "Empty when yesterday had none.", "percent",
                   [target(pct_change(today, _at_start(ALL_TOKENS, "1d")), fmt=None)],
                   decimals=1, time_from="now/d", color_mode="value",
                   thresholds=_GROWTH)),
          (4, stat("Tokens this month",
                   "Attributed tokens (input + output) of every tenant since the 1st of this "
                   "month, 00:00 UTC, exact.", "locale",
                   [target(f"{today} or vector(0)", fmt=None)], time_from="now/M")),
          (4, stat("This month vs last month",
                   "Change of this month's tokens against the same days and hours of last "
                   "month (from its 1st, for as long as this month has run), in %. On a day "
                   "that last month does not have (the 31st after a 30-day month), the "
                   "comparison window runs into this month. Empty when last month had none.",
                   "percent",
                   [target(pct_change(today, _last_month_same_time(ALL_TOKENS)), fmt=None)],
                   decimals=1, time_from="now/M", color_mode="value",
                   thresholds=_GROWTH)),
          (4, stat("Cost, last hour",
                   "Cost in USD of every tenant's attributed tokens in the last hour (the "
                   "cost per hour now), exact, from the price catalog.", "currencyUSD",
                   [target(f"{total(ALL_COST, rng='1h')} or vector(0)", fmt=None)],
                   decimals=None)),
          (4, stat("Month-end cost forecast",
                   "This month's cost so far, projected linearly to the end of the month: "
                   "cost since the 1st (00:00 UTC) ÷ time elapsed × length of the month. A "
                   "trend, not a bill.", "currencyUSD",
                   [target(f"{total(ALL_COST)} / $__range_s * 86400 * days_in_month()",
                           fmt=None)],
                   decimals=2, time_from="now/M")))
    g.row(8,
          (16, panel(
              "timeseries", "Token rate by model",
              "Attributed tokens per second (input + output) per model, all tenants: "
              "rate over $__rate_interval. Unattributed tokens are not included (see "
              "Attribution health).", "short",
              [target(f"sum by (model) (rate({ALL_TOKENS}[$__rate_interval]))", fmt=None,
                      legend="{{model}}", instant=False)],
              color="palette-classic",
              custom={"drawStyle": "line", "lineInterpolation": "linear", "lineWidth": 1,
                      "fillOpacity": 10, "gradientMode": "none", "showPoints": "never",
                      "pointSize": 4, "spanNulls": False, "axisPlacement": "auto",
                      "axisLabel": "tokens/s", "axisBorderShow": False,
                      "axisCenteredZero": False, "axisColorMode": "text",
                      "barAlignment": 0, "insertNulls": False,
                      "scaleDistribution": {"type": "linear"},
                      "stacking": {"mode": "none", "group": "A"},
                      "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                      "thresholdsStyle": {"mode": "off"}},
              options={"legend": {"showLegend": True, "displayMode": "table",
                                  "placement": "right", "calcs": ["mean", "max"]},
                       "tooltip": {"mode": "multi", "sort": "desc"}})),
          (8, panel(
              "piechart", "Cost share by model",
              "Each model's share of the cost (USD) of all tenants' attributed tokens in the "
              "time range, exact. Unpriced models have no cost and do not appear.",
              "currencyUSD",
              [target(f"{total(ALL_COST, 'model')} > 0", fmt=None, legend="{{model}}")],
              color="palette-classic",
              custom={"hideFrom": {"legend": False, "tooltip": False, "viz": False}},
              options={"reduceOptions": _REDUCE, "pieType": "pie", "displayLabels": ["percent"],
                       "legend": {"showLegend": True, "displayMode": "table",
                                  "placement": "right", "values": ["value", "percent"]},
                       "tooltip": {"mode": "single", "sort": "none"}})))
    g.row(5, (24, stat(
        "Service usage",
        "Tokens and calls per service, all tenants, in the time range, exact. Agent service: "
        "tokens of agent invocations (the agent's own calls, its chat workflow, the tools "
        "(operators) and workflows it calls) and agent invocations (conversation turns, all "
        "callers). Workflow service: tokens of workflow runs and the runs (all callers). "
        "Model calls: every attributed model call. Tools and assistants have no metric of "
        "their own: a tool's tokens count for the agent that called it, an assistant is an "
        "agent. Tokens are caller-attributed; invocations and runs count every caller.",
        "locale",
        [target(f"{total('llm_agent_tokens_total')} or vector(0)", "A", fmt=None,
                legend="Agent tokens"),
         target(f"{total('llm_agent_invocations_total')} or vector(0)", "B", fmt=None,
                legend="Agent invocations"),
         target(f"{total('llm_workflow_tokens_total')} or vector(0)", "C", fmt=None,
                legend="Workflow tokens"),
         target(f"{total('llm_workflow_runs_total')} or vector(0)", "D", fmt=None,
                legend="Workflow runs"),
         target(f"{total('llm_model_requests_total')} or vector(0)", "E", fmt=None,
                legend="Model calls")],
        text_mode="value_and_name")))
    top_members = "topk(10, " + named(
        f"{total('llm_member_tokens_total', 'tenant, member')} > 0", "tenant, member",
        "llm_member_info", "member") + ")"
    g.row(9,
          (12, barchart("Top tenants",
                        "The 10 tenants whose members consumed the most attributed tokens "
                        "(input + output) in the time range, exact.",
                        f"topk(10, {total(ALL_TOKENS, 'tenant')} > 0)", "tenant", "Tenant",
                        exclude=[])),
          (12, table("Top members",
                     "The 10 members of any tenant who consumed the most attributed tokens "
                     "(input + output) in the time range, exact; a member of several tenants "
                     "has one row per tenant.",
                     [target(top_members)],
                     rename={"tenant": "Tenant", "name": "Member", "Value": "Tokens"},
                     exclude=["member"], order=["Member", "Tenant", "Tokens"],
                     sort_by="Tokens", columns=[])))
    requests = "llm_model_requests_total"
    errors = total(f'{requests}{{outcome="error"}}', "model")
    calls = total(requests, "model")
    reads = total('llm_model_cache_tokens_total{type="read"}', "model")
    inputs = total(f'{ALL_TOKENS}{{type="input"}}', "model")
    g.row(8,
          (12, bargauge(
              "Error rate by model",
              "Share of model calls with outcome error (span status ERROR or error.type), "
              "per model, all tenants, in the time range: errors / calls × 100. Latency "
              "percentiles (p50/p95/p99) are not available: the exporter exports no span "
              "duration histogram yet.", "percent",
              [target(f"({errors} or on(model) {calls} * 0) / ({calls} > 0) * 100", fmt=None,
                      legend="{{model}}")],
              decimals=2, max_value=100,
              thresholds=_thresholds(("green", None), ("orange", 1), ("red", 5)))),
          (12, bargauge(
              "Cache read share by model",
              "Share of input tokens read from the provider's prompt cache, per model, all "
              "tenants, in the time range: cache-read tokens / input tokens × 100 (cache "
              "tokens are part of input).", "percent",
              [target(f"({reads} or on(model) {inputs} * 0) / ({inputs} > 0) * 100", fmt=None,
                      legend="{{model}}")],
              decimals=1, max_value=100)))
    g.row(8,
          (8, bargauge(
              "Unattributed tokens by reason",
              "Tokens left out of every tenant's cost metrics, by reason, in the time range: "
              "no_caller (no user id on the span or its ancestors), not_member (the caller is "
              "not a member of the tenant), ambiguous_tenant (no tenant given, member of "
              "several).", "locale",
              [target(total("llm_unattributed_tokens_total", "reason"), fmt=None,
                      legend="{{reason}}")])),
          (8, bargauge(
              "Unpriced tokens by model",
              "Attributed tokens of models missing from the price catalog, in the time range: "
              "they have no cost. Add the model to the catalog.", "locale",
              [target(f"{total('llm_unpriced_tokens_total', 'model')} > 0", fmt=None,
                      legend="{{model}}")])),
          (8, bargauge(
              "Rejected spans by reason",
              "Spans the exporter refused (counted and skipped, never attributed), by "
              "reason, in the time range.", "locale",
              [target(f"{total('llm_exporter_spans_rejected_total', 'reason')} > 0", fmt=None,
                      legend="{{reason}}")])))
    unattributed = total("llm_unattributed_tokens_total")
    g.row(4,
          (6, stat("Unattributed share",
                   "Unattributed tokens / (attributed + unattributed tokens) × 100, in the time "
                   "range. A rise means a stale directory or instrumentation missing user or "
                   "tenant ids.", "percent",
                   [target(f"{unattributed} / (({unattributed} + {total(ALL_TOKENS)}) > 0) "
                           "* 100", fmt=None)],
                   decimals=2, color_mode="value",
                   thresholds=_thresholds(("green", None), ("orange", 1), ("red", 5)))),
          (6, stat("Duplicate spans",
                   "Spans delivered again (an OTLP client retrying) and counted once, in the "
                   "time range.", "locale",
                   [target(f"{total('llm_exporter_duplicate_spans_total')} or vector(0)",
                           fmt=None)])),
          (6, stat("Pending traces",
                   "Traces whose spans are still waiting for their ancestors, now, summed "
                   "over exporters.", "locale",
                   [target("sum(llm_exporter_traces_pending)", fmt=None)])),
          (6, stat("Directory age",
                   "Time since the directory (members and assets) was last loaded "
                   "successfully, now; the oldest over exporters. A stale directory "
                   "misattributes new members and assets.", "s",
                   [target("max(time() - llm_exporter_directory_last_success_timestamp_seconds)",
                           fmt=None)],
                   color_mode="value",
                   thresholds=_thresholds(("green", None), ("orange", 600), ("red", 3600)))))
    return dashboard(
        UID_SRE, "LLM tokens: usage and cost governance",
        "The platform SRE's view (views.md §4): usage today and this month, token rate, cost, "
        "top tenants and members, errors, cache and the health of attribution. Days and "
        "months are UTC.",
        g.panels, [datasource_variable()], time_from="now-24h", timezone="utc")


# -- Output -----------------------------------------------------------------------------------

BUILDERS = {UID_OVERVIEW: overview, UID_ASSETS: assets, UID_DRILLDOWN: drilldown, UID_SRE: sre}


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {f"{uid}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
            for uid, build in BUILDERS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when grafana/dashboards/ differs from the generated JSON")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [name for name, text in files.items()
                 if not (OUT / name).is_file() or (OUT / name).read_text() != text]
        for name in stale:
            print(f"stale: grafana/dashboards/{name} (run python grafana/build_dashboards.py)",
                  file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
