"""§1 Tenant overview: caller-attributed tokens and cost by agent, workflow, model, member."""

from __future__ import annotations

from .common import DRILL_SLUG, TENANT, UID_DRILLDOWN, UID_OVERVIEW, uid
from .panels import (
    BUDGET,
    GROWTH,
    Grid,
    barchart,
    column,
    dashboard,
    datasource_variable,
    gauge,
    stat,
    table,
    target,
    tenant_variable,
    view_all,
)
from .promql import budget_used_per_limit, named, pct_change, period, sel, total
from .text import Text

AGENT_TOKENS = sel("llm_agent_tokens_total", TENANT)
WORKFLOW_TOKENS = sel("llm_workflow_tokens_total", TENANT)
MODEL_TOKENS = sel("llm_model_tokens_total", TENANT)
MEMBER_TOKENS = sel("llm_member_tokens_total", TENANT)
MEMBER_INFO = sel("llm_member_info", TENANT)
MODEL_COST = sel("llm_model_cost_usd_total", TENANT)
TENANT_BUDGET = 'scope="tenant"'


def _period_tokens(name: str) -> str:
    return period("llm_period_tokens", name, TENANT)


def _calendar_row(t: Text) -> list[tuple[int, dict]]:
    """The tenant's today and this month (its own timezone) from the exporter's calendar
    periods, this month's cost and unpriced tokens, and its budget: independent of the
    dashboard's range."""
    day, month = _period_tokens("today"), _period_tokens("month")
    return [
        (3, stat(t("overview.today.title"), t("overview.today.description"), "locale",
                 [target(day, fmt=None)])),
        (3, stat(t("overview.today_vs_yesterday.title"),
                 t("overview.today_vs_yesterday.description"), "percent",
                 [target(pct_change(day, _period_tokens("yesterday")), fmt=None)],
                 decimals=1, color_mode="value", thresholds=GROWTH)),
        (3, stat(t("overview.month.title"), t("overview.month.description"), "locale",
                 [target(month, fmt=None)])),
        (3, stat(t("overview.month_vs_last.title"), t("overview.month_vs_last.description"),
                 "percent",
                 [target(pct_change(month, _period_tokens("last_month")), fmt=None)],
                 decimals=1, color_mode="value", thresholds=GROWTH)),
        (3, stat(t("overview.cost_month.title"), t("overview.cost_month.description"),
                 "currencyUSD",
                 [target(period("llm_period_cost_usd", "month", TENANT), fmt=None)],
                 decimals=None)),
        (3, stat(t("overview.unpriced_month.title"), t("overview.unpriced_month.description"),
                 "locale",
                 [target(period("llm_period_unpriced_tokens", "month", TENANT), fmt=None)])),
        (6, gauge(t("overview.budget.title"), t("overview.budget.description"), "percent",
                  [target(f"{budget_used_per_limit(TENANT, TENANT_BUDGET)} * 100",
                          fmt=None)],
                  decimals=1, max_value=100, thresholds=BUDGET)),
    ]


def build(t: Text) -> dict:
    g = Grid()
    more = view_all(t, uid(UID_DRILLDOWN, t.lang), DRILL_SLUG)
    g.row(4,
          (6, stat(t("overview.agent_tokens.title"), t("overview.agent_tokens.description"),
                   "locale", [target(f"{total(AGENT_TOKENS)} or vector(0)", fmt=None)])),
          (6, stat(t("overview.workflow_tokens.title"),
                   t("overview.workflow_tokens.description"),
                   "locale", [target(f"{total(WORKFLOW_TOKENS)} or vector(0)", fmt=None)])),
          (6, stat(t("overview.total_tokens.title"), t("overview.total_tokens.description"),
                   "locale", [target(f"{total(MODEL_TOKENS)} or vector(0)", fmt=None)])),
          (6, stat(t("overview.cost.title"), t("overview.cost.description"), "currencyUSD",
                   [target(f"{total(MODEL_COST)} or vector(0)", fmt=None)], decimals=None)))
    g.row(5, *_calendar_row(t))
    models = f"topk(10, {total(MODEL_TOKENS, 'model')} > 0)"
    agents = named(f"{total(AGENT_TOKENS, 'agent')} > 0", "agent", "llm_agent_info")
    workflows = named(f"{total(WORKFLOW_TOKENS, 'workflow')} > 0", "workflow",
                      "llm_workflow_info")
    members = named(f"{total(MEMBER_TOKENS, 'member')} > 0", "member", MEMBER_INFO)
    tokens = t("col.tokens")
    g.row(9,
          (12, barchart(t("overview.model_top.title"), t("overview.model_top.description"),
                        models, "model", t("col.model"), tokens, exclude=[], links=more)),
          (12, barchart(t("overview.agent_top.title"), t("overview.agent_top.description"),
                        f"topk(10, {agents})", "name", t("col.agent"), tokens,
                        exclude=["agent"], links=more)))
    g.row(9,
          (12, barchart(t("overview.workflow_top.title"),
                        t("overview.workflow_top.description"),
                        f"topk(10, {workflows})", "name", t("col.workflow"), tokens,
                        exclude=["workflow"], links=more)),
          (12, table(t("overview.member_top.title"), t("overview.member_top.description"),
                     [target(f"topk(10, {members})")],
                     rename={"name": t("col.member"), "Value": tokens}, exclude=["member"],
                     order=[t("col.member"), tokens], sort_field="Value",
                     columns=[column(tokens, description=t("common.cost"))], links=more)))
    return dashboard(
        t, uid(UID_OVERVIEW, t.lang), t("overview.title"), t("overview.description"),
        g.panels, [datasource_variable(t), tenant_variable(t)], time_from="now-7d")
