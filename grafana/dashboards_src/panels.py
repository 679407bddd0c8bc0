"""Grafana 11.6 panel, variable and dashboard JSON (schemaVersion 41), with explicit grid
positions. Every text comes from the caller (the language's text table)."""

from __future__ import annotations

from .text import Text

SCHEMA_VERSION = 41
PLUGIN_VERSION = "11.6.0"
#: The uid pinned in provisioning/datasources/prometheus.yaml: the variable's default.
DATASOURCE_UID = "prometheus"
DS = {"type": "prometheus", "uid": "${datasource}"}
TAG = "llm-token-exporter"


def target(expr: str, ref: str = "A", *, fmt: str | None = "table", legend: str | None = None,
           instant: bool = True) -> dict:
    t = {"datasource": DS, "editorMode": "code", "expr": expr, "instant": instant,
         "range": not instant, "refId": ref}
    if fmt:
        t["format"] = fmt
    if legend is not None:
        t["legendFormat"] = legend
    return t


def steps(*colours: tuple[str, float | None]) -> dict:
    """Absolute thresholds: (colour, from value), the first from None."""
    return {"mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in colours]}


BASE = steps(("text", None))
#: The seed's colours for a change in %: growth green, decline red.
GROWTH = steps(("red", None), ("green", 0))
#: A budget's use in %: the default thresholds of docs/budgets.md (warning 50 %, throttle
#: 80 %, exhausted 100 %). A panel's colours are one set for all its series: a budget with
#: thresholds of its own is coloured by these (its own state is the alerts' and the API's).
BUDGET = steps(("green", None), ("yellow", 50), ("orange", 80), ("red", 100))


class Grid:
    """Hands out panel ids and explicit grid positions, row by row (24 columns)."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self._y = 0

    def row(self, height: int, *panels: tuple[int, dict]) -> None:
        x = 0
        for width, p in panels:
            p["id"] = len(self.panels) + 1
            p["gridPos"] = {"h": height, "w": width, "x": x, "y": self._y}
            self.panels.append(p)
            x += width
        assert x <= 24, x
        self._y += height


def panel(kind: str, title: str, description: str, unit: str, targets: list[dict], *,
          options: dict, custom: dict | None = None, overrides: list | None = None,
          transformations: list | None = None, links: list | None = None,
          decimals: int | None = None, thresholds: dict | None = None,
          color: str = "thresholds", extra: dict | None = None) -> dict:
    defaults: dict = {"unit": unit, "color": {"mode": color},
                      "thresholds": thresholds or BASE, "mappings": []}
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
    return out


REDUCE = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def stat(title: str, description: str, unit: str, targets: list[dict], *,
         decimals: int | None = 0, text_mode: str = "value", thresholds: dict | None = None,
         color_mode: str = "none") -> dict:
    return panel(
        "stat", title, description, unit, targets, decimals=decimals, thresholds=thresholds,
        options={"reduceOptions": REDUCE, "orientation": "auto", "textMode": text_mode,
                 "wideLayout": True, "colorMode": color_mode, "graphMode": "none",
                 "justifyMode": "auto", "showPercentChange": False},
    )


def organize(rename: dict[str, str], exclude: list[str], order: list[str]) -> dict:
    """Grafana's organize step; every key is an original field name (before the rename),
    ``order`` lists the columns shown by their new names."""
    original = {new: old for old, new in rename.items()}
    return {"id": "organize", "options": {
        "excludeByName": {name: True for name in exclude},
        "indexByName": {original.get(name, name): i for i, name in enumerate(order)},
        "renameByName": rename,
    }}


def sort_by(field: str) -> dict:
    return {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": field, "desc": True}]}}


#: The search box's variable, as it appears in a transformation (never in a query).
SEARCH_VALUE = "${search}"


def search_filter(fields: list[str]) -> dict:
    """Keeps the rows where one of ``fields`` contains the search box's text: Grafana's
    "Filter data by values" with its "Contains substring" matcher (case-insensitive, the
    text taken literally; an empty box keeps every row). It runs in the browser on the rows
    the queries returned: the text never reaches Prometheus."""
    return {"id": "filterByValue", "options": {
        "type": "include", "match": "any",
        "filters": [{"fieldName": f, "config": {"id": "substring",
                                                 "options": {"value": SEARCH_VALUE}}}
                    for f in fields]}}


def barchart(title: str, description: str, expr: str, label: str, label_title: str,
             tokens_title: str, *, exclude: list[str], links: list | None = None) -> dict:
    """A horizontal top-10 bar chart: one instant query, y = ``label``, x = tokens."""
    return panel(
        "barchart", title, description, "locale", [target(expr)], decimals=0,
        color="palette-classic", links=links,
        transformations=[
            sort_by("Value"),
            organize({label: label_title, "Value": tokens_title}, ["Time", *exclude],
                     [label_title, tokens_title]),
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
        thresholds=thresholds or steps(("blue", None)), extra=extra,
        options={"orientation": "horizontal", "displayMode": "basic", "reduceOptions": REDUCE,
                 "showUnfilled": True, "valueMode": "color", "namePlacement": "auto",
                 "sizing": "auto", "minVizHeight": 16, "minVizWidth": 8, "maxVizHeight": 300,
                 "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom",
                            "calcs": []}},
    )


def gauge(title: str, description: str, unit: str, targets: list[dict], *,
          decimals: int | None = 0, max_value: float, thresholds: dict) -> dict:
    """A round gauge from 0 to ``max_value``, the thresholds marked on its rim."""
    return panel(
        "gauge", title, description, unit, targets, decimals=decimals, thresholds=thresholds,
        extra={"min": 0, "max": max_value},
        options={"reduceOptions": REDUCE, "orientation": "auto", "showThresholdLabels": False,
                 "showThresholdMarkers": True, "sizing": "auto", "minVizHeight": 75,
                 "minVizWidth": 75})


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
          exclude: list[str], order: list[str], sort_field: str, columns: list[dict],
          extra_transformations: list | None = None, search: list[str] | None = None,
          links: list | None = None) -> dict:
    """Instant queries joined into one table: merge (rows with the same labels), sort by
    ``sort_field`` (an original field name), the extra steps, the search filter on the
    ``search`` fields (original names), then organize (rename, hide, order). Columns are
    sortable by a click on their header."""
    steps = []
    if len(targets) > 1:
        steps.append({"id": "merge", "options": {}})
    steps.append(sort_by(sort_field))
    steps += extra_transformations or []
    if search:
        steps.append(search_filter(search))
    steps.append(organize(rename, ["Time", *exclude], order))
    return panel(
        "table", title, description, "locale", targets, decimals=0, links=links,
        transformations=steps, overrides=columns,
        custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False,
                "filterable": False},
        options={"showHeader": True, "cellHeight": "sm", "sortBy": [
            {"displayName": rename[sort_field], "desc": True}],
            "footer": {"show": False, "reducer": ["sum"], "countRows": False, "fields": ""}},
    )


def view_all(t: Text, dashboard_uid: str, slug: str) -> list[dict]:
    """A "View all" link to the drill-down, carrying the tenant, the data source and the
    time range."""
    url = (f"/d/{dashboard_uid}/{slug}?var-datasource=${{datasource:percentencode}}"
           "&var-tenant=${tenant:percentencode}&${__url_time_range}")
    return [{"title": t("link.view_all"), "url": url, "targetBlank": False}]


# -- Variables and the dashboard --------------------------------------------------------------


def datasource_variable(t: Text) -> dict:
    return {"type": "datasource", "name": "datasource", "label": t("var.datasource.label"),
            "description": t("var.datasource.description"),
            "query": "prometheus", "regex": "", "hide": 0, "includeAll": False,
            "multi": False, "refresh": 1, "skipUrlSync": False, "options": [],
            "current": {"selected": False, "text": "Prometheus", "value": DATASOURCE_UID}}


def tenant_variable(t: Text) -> dict:
    query = "label_values(llm_member_info, tenant)"
    return {"type": "query", "name": "tenant", "label": t("var.tenant.label"), "datasource": DS,
            "definition": query,
            "query": {"qryType": 1, "query": query,
                      "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "description": t("var.tenant.description"),
            "refresh": 2, "sort": 1, "regex": "", "hide": 0, "includeAll": False,
            "multi": False, "skipUrlSync": False, "options": [], "current": {}}


def search_variable(t: Text) -> dict:
    return {"type": "textbox", "name": "search", "label": t("var.search.label"),
            "description": t("var.search.description"),
            "query": "", "hide": 0, "skipUrlSync": False,
            "current": {"selected": False, "text": "", "value": ""},
            "options": [{"selected": True, "text": "", "value": ""}]}


def dashboard(t: Text, uid: str, title: str, description: str, panels: list[dict],
              variables: list, *, time_from: str, timezone: str = "browser") -> dict:
    tags = [TAG, t.lang]
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
        # the dashboards of the same language (both tags): a menu of 4, not 8
        "links": [{"title": t("link.menu"), "type": "dashboards", "tags": tags,
                   "asDropdown": True, "includeVars": True, "keepTime": True,
                   "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}],
        "panels": panels,
        "refresh": "",
        "schemaVersion": SCHEMA_VERSION,
        "tags": tags,
        "templating": {"list": variables},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": timezone,
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }
