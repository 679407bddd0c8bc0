"""The dashboards' English texts. Same keys as texts_zh.py (a test checks it)."""

TEXTS: dict[str, str] = {
    # -- shared sentences --------------------------------------------------------------------
    "common.caller": "Caller attribution: only tokens of calls made by members of this tenant "
                     "count.",
    "common.heat": "Counts the whole platform, including users outside this tenant.",
    "common.cost": "Counts only this tenant's members.",
    "common.range": "Over the selected time range, exact: the counters summed over every "
                    "exporter at the range's end, minus the same sum at its start (an exporter "
                    "restarted at a new address is not counted twice).",
    "common.period": "Independent of the dashboard's time range: the exporter's own calendar "
                     "periods (llm_period_*, docs/budgets.md), each tenant's day and month in "
                     "its timezone (the budgets file's; UTC unless set), exact however long "
                     "Prometheus keeps data; as at the range's end (now, for a range ending "
                     "now), summed over exporters.",
    "common.no_data_yesterday": "No data (never ∞ or an error) when the day or month "
                                "compared with had no tokens.",
    "link.menu": "LLM tokens",
    "link.view_all": "View all",
    # -- variables ---------------------------------------------------------------------------
    "var.datasource.label": "Data source",
    "var.datasource.description": "The Prometheus that scrapes the exporters.",
    "var.tenant.label": "Tenant",
    "var.tenant.description": "Tenants of the directory (llm_member_info). Isolation between "
                              "tenants is NOT enforced by this variable: see the docs.",
    "var.search.label": "Search",
    "var.search.description": "Filters the rows of the tables in the browser: case-insensitive, "
                              "the text taken literally (no wildcards); matches the name or id "
                              "(members: also email, mis id and phone when the exporter exports "
                              "them). Never sent to Prometheus.",
    # -- column headers ----------------------------------------------------------------------
    "col.tokens": "Tokens",
    "col.total": "Total",
    "col.input": "Input",
    "col.output": "Output",
    "col.share": "Share",
    "col.model": "Model",
    "col.agent": "Agent",
    "col.workflow": "Workflow",
    "col.member": "Member",
    "col.tenant": "Tenant",
    "col.rank": "Rank",
    "col.created_at": "Created at",
    "col.creator": "Creator",
    "col.conversations": "Conversations",
    "col.users": "Users",
    "col.runs": "Runs",
    "col.service": "Service",
    "col.calls": "Calls",
    # -- §1 tenant overview ------------------------------------------------------------------
    "overview.title": "LLM tokens: tenant overview",
    "overview.description": "Core resource consumption of one tenant: "
                            "caller-attributed tokens and cost by agent, workflow, model and "
                            "member.",
    "overview.agent_tokens.title": "Agent tokens",
    "overview.agent_tokens.description":
        "{@common.caller} The sum of all tokens consumed when this tenant's members call "
        "agents: the agent's own model calls plus everything it calls (workflows, tools, "
        "sub-agents). An agent's chat workflow counts for the agent, never as a workflow. "
        "Overlaps with Workflow tokens where an agent runs a workflow: the two cards are not "
        "additive. {@common.range}",
    "overview.workflow_tokens.title": "Workflow tokens",
    "overview.workflow_tokens.description":
        "{@common.caller} The sum of all tokens consumed by the workflow runs of this "
        "tenant's members (the outermost workflow counts). An agent's chat workflow is not a "
        "workflow here: its tokens count for the agent. Overlaps with Agent tokens where an "
        "agent runs a workflow: the two cards are not additive. {@common.range}",
    "overview.total_tokens.title": "Total tokens",
    "overview.total_tokens.description":
        "{@common.caller} Every token of every model call of this tenant's members (input + "
        "output), inside agents, workflows or neither. {@common.range}",
    "overview.cost.title": "Cost (USD)",
    "overview.cost.description":
        "{@common.caller} The cost of Total tokens at the price catalog's prices (input, "
        "output, cache read and cache write priced apart). Tokens of a model missing from the "
        "catalog have no cost. {@common.range}",
    "overview.today.title": "Tokens today",
    "overview.today.description":
        "{@common.caller} Tokens (input + output) of this tenant's members today, the "
        "tenant's day in its timezone, exact. {@common.period}",
    "overview.today_vs_yesterday.title": "Today vs yesterday",
    "overview.today_vs_yesterday.description":
        "{@common.caller} Change of today's tokens so far against all of yesterday's, in %: "
        "(today − yesterday) / yesterday × 100, days in the tenant's timezone. Early in a day "
        "it is negative by construction (part of a day against a whole one). "
        "{@common.no_data_yesterday} {@common.period}",
    "overview.month.title": "Tokens this month",
    "overview.month.description":
        "{@common.caller} Tokens (input + output) of this tenant's members this calendar "
        "month, in the tenant's timezone, exact. {@common.period}",
    "overview.month_vs_last.title": "This month vs last month",
    "overview.month_vs_last.description":
        "{@common.caller} Change of this month's tokens so far against all of last month's, "
        "in %: (this month − last month) / last month × 100, months in the tenant's timezone. "
        "{@common.no_data_yesterday} {@common.period}",
    "overview.cost_month.title": "Cost this month",
    "overview.cost_month.description":
        "{@common.caller} Cost in USD of this tenant's tokens this month (its timezone), at "
        "the price catalog's prices, exact. Tokens of a model missing from the catalog have "
        "no cost: Unpriced tokens this month counts them, and while it is above 0 this cost "
        "is partial. {@common.period}",
    "overview.unpriced_month.title": "Unpriced tokens this month",
    "overview.unpriced_month.description":
        "{@common.caller} Tokens this month of models missing from the price catalog "
        "(llm_period_unpriced_tokens): no cost figure includes them. Above 0, Cost this month "
        "and Cost (USD) are partial: add the model to the catalog. {@common.period}",
    "overview.budget.title": "Budget use",
    "overview.budget.description":
        "{@common.caller} This tenant's monthly budget used so far, in %: used / limit, the "
        "larger of tokens and USD (the budgets file's tenant budget), the use summed over "
        "exporters and the limit taken once, as the budget alerts and GET "
        "/v1/budgets/<tenant> compute it. Marks at 50, 80 and 100 % (the default thresholds: "
        "warning, throttle, exhausted; a budget with thresholds of its own is alerted at "
        "those). No data when the tenant has no budget. {@common.period}",
    "overview.model_top.title": "Model consumption top 10",
    "overview.model_top.description":
        "{@common.caller} Tokens (input + output) this tenant's members consumed per model; "
        "the 10 largest. {@common.range}",
    "overview.agent_top.title": "Agent consumption top 10",
    "overview.agent_top.description":
        "{@common.caller} Tokens this tenant's members consumed per agent (the outermost "
        "agent: its own calls, its chat workflow, the workflows and tools it calls), agents of "
        "other tenants included; the 10 largest. An agent missing from the directory shows "
        "its id. {@common.range}",
    "overview.workflow_top.title": "Workflow consumption top 10",
    "overview.workflow_top.description":
        "{@common.caller} Tokens this tenant's members consumed per workflow (the outermost "
        "workflow run); an agent's chat workflow never appears here, its tokens count for the "
        "agent. The 10 largest. {@common.range}",
    "overview.member_top.title": "Member tokens top 10",
    "overview.member_top.description":
        "{@common.caller} The 10 members of this tenant who consumed the most tokens (input + "
        "output). {@common.range}",
    # -- §2 tenant assets --------------------------------------------------------------------
    "assets.title": "LLM tokens: tenant assets",
    "assets.description": "The agents and workflows a tenant owns: heat metrics "
                          "count the whole platform, the token (cost) column counts only the "
                          "tenant's members.",
    "assets.heat.range": "{@common.heat} Over the selected time range.",
    "assets.heat.ever": "{@common.heat} Distinct callers ever (not limited to the time range).",
    "assets.cost.range": "{@common.cost} Over the selected time range.",
    "assets.agents.title": "Agents owned by the tenant",
    "assets.agents.description":
        "Every agent this tenant owns (from the directory). Conversations and Users are heat "
        "metrics: {@common.heat} Conversations are agent invocations (conversation turns, "
        "sub-agents included) in the time range; Users are distinct callers ever. Tokens is a "
        "cost metric: {@common.cost} It is the agent's tokens (its own calls, chat workflow, "
        "workflows and tools it calls) in the time range. {@common.range}",
    "assets.workflows.title": "Workflows owned by the tenant",
    "assets.workflows.description":
        "Every workflow this tenant owns (from the directory; chat workflows are part of their "
        "agent and never listed). Runs is a heat metric: {@common.heat} Runs are workflow runs "
        "(nested runs included) in the time range. Tokens is a cost metric: {@common.cost} It "
        "is the tokens of runs where the workflow is the outermost one, in the time range. "
        "{@common.range}",
    # -- §3 drill-down -----------------------------------------------------------------------
    "drilldown.title": "LLM tokens: drill-down",
    "drilldown.description": "The \"View all\" targets of the tenant overview: "
                             "every model, agent, workflow and member of a tenant with total, "
                             "input and output tokens, sortable and searchable.",
    "drilldown.search_note": "Search: filters the rows in the browser (case-insensitive, "
                             "literal); it never changes a query.",
    "drilldown.share.formula": "Share = this model's total / the tenant's total over all models "
                               "in the time range × 100 (the search box does not change the "
                               "denominator).",
    "drilldown.rank.description": "Position by total tokens among all of the tenant's members "
                                  "in the time range, largest first; a search hides rows but "
                                  "does not change a rank.",
    "drilldown.model.title": "Model consumption detail",
    "drilldown.model.description":
        "{@common.caller} Every model this tenant's members used in the time range: total "
        "(input + output), input and output tokens, and the model's share of the tenant's "
        "tokens. {@drilldown.share.formula} {@drilldown.search_note} It matches part of the "
        "model name. {@common.range}",
    "drilldown.agent.title": "Agent consumption detail",
    "drilldown.agent.description":
        "{@common.caller} Every agent this tenant's members used in the time range (agents "
        "owned by other tenants included): total (input + output), input and output tokens; "
        "its creation time and creator from the directory (the creator's name in the agent's "
        "owner tenant; an agent missing from the directory shows its id and no creator). An "
        "agent's tokens are its own calls plus its chat workflow, the workflows and tools it "
        "calls. {@drilldown.search_note} It matches part of the agent's name or id. "
        "{@common.range}",
    "drilldown.workflow.title": "Workflow consumption detail",
    "drilldown.workflow.description":
        "{@common.caller} Every workflow this tenant's members ran in the time range (the "
        "outermost workflow counts; an agent's chat workflow never appears): total (input + "
        "output), input and output tokens; its creation time and creator from the directory "
        "(the creator's name in the workflow's owner tenant). {@drilldown.search_note} It "
        "matches part of the workflow's name or id. {@common.range}",
    "drilldown.member.title": "Member ranking",
    "drilldown.member.description":
        "{@common.caller} Every member of this tenant who consumed tokens in the time range, "
        "ranked by total tokens (input + output), largest first. {@drilldown.search_note} It "
        "matches part of the member's name, email, mis id or phone (contact fields only when "
        "the exporter is configured to export them) or id; the rank stays the member's "
        "position among all members. {@common.range}",
    # -- §4 SRE ------------------------------------------------------------------------------
    "sre.title": "LLM tokens: usage and cost governance",
    "sre.description": "The platform SRE's view: usage today and this month, budgets, the "
                       "month-end forecast, service usage, token rate, cost, top tenants and "
                       "members, errors, latency, cache and the health of attribution. Days "
                       "and months are each tenant's (its timezone); the time axis is UTC.",
    "sre.today.title": "Tokens today",
    "sre.today.description": "Attributed tokens (input + output) of every tenant today, each "
                             "tenant's own day (its timezone), exact. {@common.period}",
    "sre.today_vs_yesterday.title": "Today vs yesterday",
    "sre.today_vs_yesterday.description":
        "Change of today's tokens so far against all of yesterday's, in %: (today − "
        "yesterday) / yesterday × 100, every tenant, each in its timezone. Early in a day it "
        "is negative by construction (part of a day against a whole one): Token rate by model "
        "shows the shape of the day. {@common.no_data_yesterday} {@common.period}",
    "sre.month.title": "Tokens this month",
    "sre.month.description": "Attributed tokens (input + output) of every tenant this calendar "
                             "month, each tenant's own month (its timezone), exact. "
                             "{@common.period}",
    "sre.month_vs_last.title": "This month vs last month",
    "sre.month_vs_last.description":
        "Change of this month's tokens so far against all of last month's, in %: (this month "
        "− last month) / last month × 100, every tenant, each in its timezone. Exact for any "
        "retention (no range query into last month). {@common.no_data_yesterday} "
        "{@common.period}",
    "sre.cost_hour.title": "Cost, last hour",
    "sre.cost_hour.description": "Cost in USD of every tenant's attributed tokens in the hour "
                                 "before the range's end (the cost per hour now), exact, from "
                                 "the price catalog; the range's start does not matter. "
                                 "Unpriced tokens, last hour are not in it.",
    "sre.unpriced_hour.title": "Unpriced tokens, last hour",
    "sre.unpriced_hour.description":
        "Attributed tokens of models missing from the price catalog in the hour before the "
        "range's end (llm_unpriced_tokens_total), every tenant, exact; the range's start does "
        "not matter. They have no cost: above 0, Cost, last hour is partial.",
    "sre.cost_month.title": "Cost this month",
    "sre.cost_month.description":
        "Cost in USD of every tenant's attributed tokens this month (llm_period_cost_usd), "
        "each tenant's own month, exact. Tokens without a price have no cost: above 0, "
        "Unpriced tokens this month makes this figure partial. {@common.period}",
    "sre.unpriced_month.title": "Unpriced tokens this month",
    "sre.unpriced_month.description":
        "Attributed tokens this month of models missing from the price catalog "
        "(llm_period_unpriced_tokens), every tenant: no cost figure includes them. Above 0, "
        "Cost this month and the month-end forecasts are partial: add the model to the "
        "catalog (Unpriced tokens by model). {@common.period}",
    "sre.forecast_note": "This month's cost + its rate over the last 24 hours × the seconds "
                         "left until the tenant's month ends (llm_period_end_timestamp_seconds, "
                         "its timezone), the way the alert MonthEndOverBudget projects a "
                         "budget. A trend, not a bill: on a month's first day the last 24 "
                         "hours are partly last month's. Unpriced tokens are not in it.",
    "sre.forecast.title": "Month-end cost forecast",
    "sre.forecast.description": "Every tenant's cost at the end of its month, projected from "
                                "the last day's pace, summed: {@sre.forecast_note} "
                                "{@common.period}",
    "sre.forecast_tenant.title": "Month-end cost forecast by tenant",
    "sre.forecast_tenant.description": "Each tenant's cost at the end of its month, projected "
                                       "from the last day's pace: {@sre.forecast_note} "
                                       "{@common.period}",
    "sre.budget.title": "Budget use",
    "sre.budget.description":
        "Each tenant's monthly budget (the budgets file's tenant budgets) used so far, in %: "
        "used / limit, the larger of tokens and USD, the use summed over exporters and the "
        "limit taken once, as the budget alerts compute it. Colours from 50, 80 and 100 % "
        "(the default thresholds: warning, throttle, exhausted; one set for the panel, a "
        "tenant with thresholds of its own is alerted at those). The bar is full at 100 %, "
        "the value shows beyond it. Tenants without a budget are not listed; member and agent "
        "budgets: GET /v1/budgets/<tenant>. {@common.period}",
    "sre.rate.title": "Token rate by model",
    "sre.rate.description": "Attributed tokens per second (input + output) per model, all "
                            "tenants: rate over $__rate_interval. Unattributed tokens are not "
                            "included (see Attribution health).",
    "sre.rate.axis": "tokens/s",
    "sre.cost_share.title": "Cost share by model",
    "sre.cost_share.description": "Each model's share of the cost (USD) of all tenants' "
                                  "attributed tokens in the time range, exact. Unpriced models "
                                  "have no cost and do not appear. {@common.range}",
    "sre.services.title": "Service usage",
    "sre.services.description":
        "Tokens (input + output) and model calls of every tenant's members per service, in "
        "the time range, exact (llm_service_tokens_total, llm_service_calls_total). The "
        "service is the call's nearest enclosing component: agent, assistant (an agent the "
        "directory marks as one), workflow, tool (an operator call) or direct (outside all "
        "of them). Every attributed call is in exactly one service: the rows add up to all "
        "attributed tokens and calls. A service without calls in the range shows 0; one "
        "never used has no row. {@common.range}",
    "sre.top_tenants.title": "Top tenants",
    "sre.top_tenants.description": "The 10 tenants whose members consumed the most attributed "
                                   "tokens (input + output) in the time range, exact.",
    "sre.top_members.title": "Top members",
    "sre.top_members.description": "The 10 members of any tenant who consumed the most "
                                   "attributed tokens (input + output) in the time range, "
                                   "exact; a member of several tenants has one row per tenant.",
    "sre.errors.title": "Error rate by model",
    "sre.errors.description": "Share of model calls with outcome error (span status ERROR or "
                              "error.type), per model, all tenants, in the time range: errors / "
                              "calls × 100.",
    "sre.quantile_note": "Prometheus interpolates linearly inside a bucket (bounds 50 ms, "
                         "100 ms, 250 ms, 500 ms, 1 s, 2.5 s, 5 s, 10 s, 20 s, 30 s, 60 s, "
                         "120 s, 300 s): a percentile is exact to its bucket only, and one "
                         "beyond 300 s shows as 300 s. A model without calls in the window has "
                         "no point.",
    "sre.latency.title": "Call latency by model (p50, p95, p99)",
    "sre.latency.description":
        "Duration of model calls (the model-call span, start to end) per model, all tenants: "
        "the 50th, 95th and 99th percentiles over $__rate_interval, from the histogram "
        "llm_model_call_duration_seconds (attributed calls: those of tenant members). "
        "{@sre.quantile_note}",
    "sre.ttft.title": "Time to first token by model (p50, p95)",
    "sre.ttft.description":
        "Time from the request to the first streamed token per model, all tenants: the 50th "
        "and 95th percentiles over $__rate_interval, from the histogram "
        "llm_model_time_to_first_token_seconds. Only streamed calls whose span reports it "
        "(gen_ai.server.time_to_first_token or an equivalent attribute) count: a model called "
        "without streaming has no line. {@sre.quantile_note}",
    "sre.cache.title": "Cache read share by model",
    "sre.cache.description": "Share of input tokens read from the provider's prompt cache, per "
                             "model, all tenants, in the time range: cache-read tokens / input "
                             "tokens × 100 (cache tokens are part of input).",
    "sre.unattributed.title": "Unattributed tokens by reason",
    "sre.unattributed.description": "Tokens left out of every tenant's cost metrics, by reason, "
                                    "in the time range: no_caller (no user id on the span or "
                                    "its ancestors), not_member (the caller is not a member of "
                                    "the tenant), ambiguous_tenant (no tenant given, member of "
                                    "several); and, as \"unclassified\", tokens on spans that "
                                    "are no model call with no model call under them, by kind "
                                    "of span (unknown_kind, tool_span, workflow_span).",
    "sre.unattributed.unclassified_legend": "unclassified: {{reason}}",
    "sre.unpriced.title": "Unpriced tokens by model",
    "sre.unpriced.description": "Attributed tokens of models missing from the price catalog, "
                                "in the time range: they have no cost. Add the model to the "
                                "catalog.",
    "sre.rejected.title": "Rejected spans by reason",
    "sre.rejected.description": "Spans the exporter refused (counted and skipped, never "
                                "attributed), by reason, in the time range.",
    "sre.unattributed_share.title": "Unattributed share",
    "sre.unattributed_share.description": "Unattributed tokens / (attributed + unattributed "
                                          "tokens) × 100, in the time range. A rise means a "
                                          "stale directory or instrumentation missing user or "
                                          "tenant ids.",
    "sre.duplicates.title": "Duplicate spans",
    "sre.duplicates.description": "Spans delivered again (an OTLP client retrying) and counted "
                                  "once, in the time range.",
    "sre.pending.title": "Pending traces",
    "sre.pending.description": "Traces whose spans are still waiting for their ancestors, now, "
                               "summed over exporters.",
    "sre.directory_age.title": "Directory age",
    "sre.directory_age.description": "Time since the directory (members and assets) was last "
                                     "loaded successfully, now; the oldest over exporters. A "
                                     "stale directory misattributes new members and assets.",
}
