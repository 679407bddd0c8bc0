"""§4 SRE: usage and cost governance, every tenant."""

from __future__ import annotations

from .common import UID_SRE, uid
from .panels import (
    BUDGET,
    GROWTH,
    REDUCE,
    Grid,
    barchart,
    bargauge,
    dashboard,
    datasource_variable,
    panel,
    stat,
    steps,
    table,
    target,
)
from .promql import (
    budget_used_per_limit,
    month_end_cost,
    named,
    pct_change,
    period,
    total,
)
from .text import Text

ALL_TOKENS = "llm_model_tokens_total"
ALL_COST = "llm_model_cost_usd_total"
CALL_DURATION = "llm_model_call_duration_seconds"
TIME_TO_FIRST_TOKEN = "llm_model_time_to_first_token_seconds"


def timeseries(title: str, description: str, unit: str, targets: list[dict], *, axis: str,
               calcs: list[str]) -> dict:
    """A line per series, the legend a table on the right with ``calcs``."""
    return panel(
        "timeseries", title, description, unit, targets, color="palette-classic",
        custom={"drawStyle": "line", "lineInterpolation": "linear", "lineWidth": 1,
                "fillOpacity": 10, "gradientMode": "none", "showPoints": "never",
                "pointSize": 4, "spanNulls": False, "axisPlacement": "auto",
                "axisLabel": axis, "axisBorderShow": False,
                "axisCenteredZero": False, "axisColorMode": "text",
                "barAlignment": 0, "insertNulls": False,
                "scaleDistribution": {"type": "linear"},
                "stacking": {"mode": "none", "group": "A"},
                "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                "thresholdsStyle": {"mode": "off"}},
        options={"legend": {"showLegend": True, "displayMode": "table",
                            "placement": "right", "calcs": calcs},
                 "tooltip": {"mode": "multi", "sort": "desc"}})


def quantiles(histogram: str, *qs: float) -> list[dict]:
    """One target per quantile of ``histogram`` per model, all tenants and exporters summed
    (bucket rates add up). A model without calls in the window has a rate of 0 in every
    bucket and histogram_quantile gives NaN: ``>= 0`` drops those points (NaN compares
    false), so that such a model has no line rather than a NaN one."""
    return [target(f"histogram_quantile({q}, sum by (model, le) "
                   f"(rate({histogram}_bucket[$__rate_interval]))) >= 0", ref, fmt=None,
                   legend=f"{{{{model}}}} p{round(q * 100)}", instant=False)
            for ref, q in zip("ABC", qs, strict=False)]


PERIOD_TOKENS = "llm_period_tokens"
PERIOD_COST = "llm_period_cost_usd"
PERIOD_UNPRICED = "llm_period_unpriced_tokens"
TENANT_BUDGET = 'scope="tenant"'


def _calendar_row(t: Text) -> list[tuple[int, dict]]:
    """Today and this month from the exporter's calendar periods (each tenant's day and
    month in its timezone, exact whatever Prometheus's retention), read at the evaluation
    time (the range's end), never from the dashboard's range; the cost of the last hour and
    its unpriced tokens."""
    day, month = period(PERIOD_TOKENS, "today"), period(PERIOD_TOKENS, "month")
    return [
        (4, stat(t("sre.today.title"), t("sre.today.description"), "locale",
                 [target(day, fmt=None)])),
        (4, stat(t("sre.today_vs_yesterday.title"), t("sre.today_vs_yesterday.description"),
                 "percent",
                 [target(pct_change(day, period(PERIOD_TOKENS, "yesterday")), fmt=None)],
                 decimals=1, color_mode="value", thresholds=GROWTH)),
        (4, stat(t("sre.month.title"), t("sre.month.description"), "locale",
                 [target(month, fmt=None)])),
        (4, stat(t("sre.month_vs_last.title"), t("sre.month_vs_last.description"), "percent",
                 [target(pct_change(month, period(PERIOD_TOKENS, "last_month")), fmt=None)],
                 decimals=1, color_mode="value", thresholds=GROWTH)),
        (4, stat(t("sre.cost_hour.title"), t("sre.cost_hour.description"), "currencyUSD",
                 [target(f"{total(ALL_COST, rng='1h')} or vector(0)", fmt=None)],
                 decimals=None)),
        (4, stat(t("sre.unpriced_hour.title"), t("sre.unpriced_hour.description"), "locale",
                 [target(f"{total('llm_unpriced_tokens_total', rng='1h')} or vector(0)",
                         fmt=None)])),
    ]


def _month_rows(t: Text, g: Grid) -> None:
    """This month's cost, its unpriced tokens, the month-end forecast, budget use per
    tenant, and the service split of the range."""
    g.row(4,
          (8, stat(t("sre.cost_month.title"), t("sre.cost_month.description"), "currencyUSD",
                   [target(period(PERIOD_COST, "month"), fmt=None)], decimals=None)),
          (8, stat(t("sre.unpriced_month.title"), t("sre.unpriced_month.description"),
                   "locale", [target(period(PERIOD_UNPRICED, "month"), fmt=None)])),
          (8, stat(t("sre.forecast.title"), t("sre.forecast.description"), "currencyUSD",
                   [target(f"sum({month_end_cost()})", fmt=None)], decimals=2)))
    services = [target(total("llm_service_tokens_total", "service"), "A"),
                target(total("llm_service_calls_total", "service"), "B")]
    service, tokens, calls = t("col.service"), t("col.tokens"), t("col.calls")
    g.row(8,
          (8, bargauge(
              t("sre.budget.title"), t("sre.budget.description"), "percent",
              [target(f"{budget_used_per_limit(TENANT_BUDGET)} * 100", fmt=None,
                      legend="{{tenant}}")],
              decimals=1, max_value=100, thresholds=BUDGET)),
          (8, bargauge(
              t("sre.forecast_tenant.title"), t("sre.forecast_tenant.description"),
              "currencyUSD",
              [target(month_end_cost(), fmt=None, legend="{{tenant}}")], decimals=None)),
          (8, table(
              t("sre.services.title"), t("sre.services.description"), services,
              rename={"service": service, "Value #A": tokens, "Value #B": calls},
              exclude=[], order=[service, tokens, calls], sort_field="Value #A",
              columns=[])))


def build(t: Text) -> dict:
    g = Grid()
    g.row(4, *_calendar_row(t))
    _month_rows(t, g)
    g.row(8,
          (16, timeseries(
              t("sre.rate.title"), t("sre.rate.description"), "short",
              [target(f"sum by (model) (rate({ALL_TOKENS}[$__rate_interval]))", fmt=None,
                      legend="{{model}}", instant=False)],
              axis=t("sre.rate.axis"), calcs=["mean", "max"])),
          (8, panel(
              "piechart", t("sre.cost_share.title"), t("sre.cost_share.description"),
              "currencyUSD",
              [target(f"{total(ALL_COST, 'model')} > 0", fmt=None, legend="{{model}}")],
              color="palette-classic",
              custom={"hideFrom": {"legend": False, "tooltip": False, "viz": False}},
              options={"reduceOptions": REDUCE, "pieType": "pie", "displayLabels": ["percent"],
                       "legend": {"showLegend": True, "displayMode": "table",
                                  "placement": "right", "values": ["value", "percent"]},
                       "tooltip": {"mode": "single", "sort": "none"}})))
    top_members = "topk(10, " + named(
        f"{total('llm_member_tokens_total', 'tenant, member')} > 0", "tenant, member",
        "llm_member_info", "member") + ")"
    tokens = t("col.tokens")
    g.row(9,
          (12, barchart(t("sre.top_tenants.title"), t("sre.top_tenants.description"),
                        f"topk(10, {total(ALL_TOKENS, 'tenant')} > 0)", "tenant",
                        t("col.tenant"), tokens, exclude=[])),
          (12, table(t("sre.top_members.title"), t("sre.top_members.description"),
                     [target(top_members)],
                     rename={"tenant": t("col.tenant"), "name": t("col.member"),
                             "Value": tokens},
                     exclude=["member"], order=[t("col.member"), t("col.tenant"), tokens],
                     sort_field="Value", columns=[])))
    requests = "llm_model_requests_total"
    errors = total(f'{requests}{{outcome="error"}}', "model")
    calls = total(requests, "model")
    reads = total('llm_model_cache_tokens_total{type="read"}', "model")
    inputs = total(f'{ALL_TOKENS}{{type="input"}}', "model")
    g.row(8,
          (12, bargauge(
              t("sre.errors.title"), t("sre.errors.description"), "percent",
              [target(f"({errors} or on(model) {calls} * 0) / ({calls} > 0) * 100", fmt=None,
                      legend="{{model}}")],
              decimals=2, max_value=100,
              thresholds=steps(("green", None), ("orange", 1), ("red", 5)))),
          (12, bargauge(
              t("sre.cache.title"), t("sre.cache.description"), "percent",
              [target(f"({reads} or on(model) {inputs} * 0) / ({inputs} > 0) * 100", fmt=None,
                      legend="{{model}}")],
              decimals=1, max_value=100)))
    g.row(8,
          (12, timeseries(t("sre.latency.title"), t("sre.latency.description"), "s",
                          quantiles(CALL_DURATION, 0.5, 0.95, 0.99), axis="",
                          calcs=["lastNotNull", "max"])),
          (12, timeseries(t("sre.ttft.title"), t("sre.ttft.description"), "s",
                          quantiles(TIME_TO_FIRST_TOKEN, 0.5, 0.95), axis="",
                          calcs=["lastNotNull", "max"])))
    g.row(8,
          (8, bargauge(
              t("sre.unattributed.title"), t("sre.unattributed.description"), "locale",
              [target(total("llm_unattributed_tokens_total", "reason"), fmt=None,
                      legend="{{reason}}"),
               target(total("llm_unclassified_usage_tokens_total", "reason"), "B", fmt=None,
                      legend=t("sre.unattributed.unclassified_legend"))])),
          (8, bargauge(
              t("sre.unpriced.title"), t("sre.unpriced.description"), "locale",
              [target(f"{total('llm_unpriced_tokens_total', 'model')} > 0", fmt=None,
                      legend="{{model}}")])),
          (8, bargauge(
              t("sre.rejected.title"), t("sre.rejected.description"), "locale",
              [target(f"{total('llm_exporter_spans_rejected_total', 'reason')} > 0", fmt=None,
                      legend="{{reason}}")])))
    unattributed = total("llm_unattributed_tokens_total")
    g.row(4,
          (6, stat(t("sre.unattributed_share.title"), t("sre.unattributed_share.description"),
                   "percent",
                   [target(f"{unattributed} / (({unattributed} + {total(ALL_TOKENS)}) > 0) "
                           "* 100", fmt=None)],
                   decimals=2, color_mode="value",
                   thresholds=steps(("green", None), ("orange", 1), ("red", 5)))),
          (6, stat(t("sre.duplicates.title"), t("sre.duplicates.description"), "locale",
                   [target(f"{total('llm_exporter_duplicate_spans_total')} or vector(0)",
                           fmt=None)])),
          (6, stat(t("sre.pending.title"), t("sre.pending.description"), "locale",
                   [target("sum(llm_exporter_traces_pending)", fmt=None)])),
          (6, stat(t("sre.directory_age.title"), t("sre.directory_age.description"), "s",
                   [target("max(time() - llm_exporter_directory_last_success_timestamp_seconds)",
                           fmt=None)],
                   color_mode="value",
                   thresholds=steps(("green", None), ("orange", 600), ("red", 3600)))))
    return dashboard(
        t, uid(UID_SRE, t.lang), t("sre.title"), t("sre.description"),
        g.panels, [datasource_variable(t)], time_from="now-24h", timezone="utc")
