"""The metric catalogue (the README's metrics section): names, labels, help texts.

Counters are keyed by tuples in label order. ``free`` marks the label positions that carry
ids (unbounded in principle); past a metric's series cap they are replaced by
:data:`OVERFLOW` so that totals stay exact while cardinality stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

OVERFLOW = "__overflow__"


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # without the _total suffix for counters (prometheus-client adds it)
    kind: str  # "counter" | "gauge" | "info"
    labels: tuple[str, ...]
    help: str
    free: tuple[int, ...] = ()  # positions of id labels, replaced by OVERFLOW past the cap
    usd: bool = False  # values are kept in integer pico-USD and exposed in USD


_T = "type"

MODEL_TOKENS = Family(
    "llm_model_tokens", "counter", ("tenant", "model", _T),
    "Tokens of the billing tenant's members by model (caller attribution).", (0, 1))
MODEL_CACHE_TOKENS = Family(
    "llm_model_cache_tokens", "counter", ("tenant", "model", _T),
    "Cache read/write tokens (part of input) of the tenant's members by model.", (0, 1))
MODEL_REASONING_TOKENS = Family(
    "llm_model_reasoning_tokens", "counter", ("tenant", "model"),
    "Reasoning tokens (part of output, priced as output) of the tenant's members by model.",
    (0, 1))
MODEL_REQUESTS = Family(
    "llm_model_requests", "counter", ("tenant", "model", "outcome"),
    "Model calls of the tenant's members by outcome.", (0, 1))
AGENT_TOKENS = Family(
    "llm_agent_tokens", "counter", ("tenant", "agent", _T),
    "Tokens of the tenant's members under the outermost agent, chat workflows included.",
    (0, 1))
WORKFLOW_TOKENS = Family(
    "llm_workflow_tokens", "counter", ("tenant", "workflow", _T),
    "Tokens of the tenant's members under the outermost workflow that is not a chat workflow.",
    (0, 1))
MEMBER_TOKENS = Family(
    "llm_member_tokens", "counter", ("tenant", "member", _T),
    "Tokens by calling member of the billing tenant.", (0, 1))
MODEL_COST = Family(
    "llm_model_cost_usd", "counter", ("tenant", "model"),
    "Cost in USD from the price catalog, by model.", (0, 1), usd=True)
AGENT_COST = Family(
    "llm_agent_cost_usd", "counter", ("tenant", "agent"),
    "Cost in USD from the price catalog, by outermost agent.", (0, 1), usd=True)
WORKFLOW_COST = Family(
    "llm_workflow_cost_usd", "counter", ("tenant", "workflow"),
    "Cost in USD from the price catalog, by outermost non-chat workflow.", (0, 1), usd=True)
MEMBER_COST = Family(
    "llm_member_cost_usd", "counter", ("tenant", "member"),
    "Cost in USD from the price catalog, by calling member.", (0, 1), usd=True)
SERVICE_TOKENS = Family(
    "llm_service_tokens", "counter", ("tenant", "service", _T),
    "Tokens of the tenant's members by service (agent, assistant, workflow, tool, direct) "
    "of the nearest enclosing component.", (0,))
SERVICE_CALLS = Family(
    "llm_service_calls", "counter", ("tenant", "service"),
    "Model calls of the tenant's members by service of the nearest enclosing component.",
    (0,))
RUNAWAY_TRACES = Family(
    "llm_runaway_traces", "counter", ("tenant", "agent"),
    "Traces over a runaway limit (attributed model calls or their tokens), once per trace, "
    "by tenant and outermost agent of the call that went over.",
    (0, 1))

AGENT_INVOCATIONS = Family(
    "llm_agent_invocations", "counter", ("owner_tenant", "agent"),
    "Agent invocations (conversation turns), platform-wide, all callers.", (0, 1))
AGENT_USERS = Family(
    "llm_agent_users", "gauge", ("owner_tenant", "agent"),
    "Distinct callers of the agent ever, platform-wide.", (0, 1))
WORKFLOW_RUNS = Family(
    "llm_workflow_runs", "counter", ("owner_tenant", "workflow"),
    "Workflow runs (chat workflows excluded), platform-wide, all callers.", (0, 1))

AGENT_INFO = Family(
    "llm_agent", "info", ("owner_tenant", "agent", "name", "creator", "created_at"),
    "Agents in the directory.")
WORKFLOW_INFO = Family(
    "llm_workflow", "info", ("owner_tenant", "workflow", "name", "creator", "created_at"),
    "Workflows in the directory (chat workflows excluded).")
MEMBER_INFO = Family(
    "llm_member", "info", ("tenant", "member", "name", "search"),
    "Tenant members in the directory.")

UNATTRIBUTED_TOKENS = Family(
    "llm_unattributed_tokens", "counter", ("reason",),
    "Tokens excluded from cost metrics, by reason.")
UNCLASSIFIED_USAGE_TOKENS = Family(
    "llm_unclassified_usage_tokens", "counter", ("reason",),
    "Tokens (input + output) reported by spans that are no model call, with no model call "
    "under them that reported usage, by reason (the kind of span).")
#: ``llm_unclassified_usage_tokens``' reasons: the kind of the span that reported usage.
UNCLASSIFIED_REASONS = ("unknown_kind", "tool_span", "workflow_span")
UNPRICED_TOKENS = Family(
    "llm_unpriced_tokens", "counter", ("model",),
    "Attributed tokens of models missing from the price catalog.", (0,))
SPANS_RECEIVED = Family(
    "llm_exporter_spans_received", "counter", ("transport",), "Spans received.")
SPANS_REJECTED = Family(
    "llm_exporter_spans_rejected", "counter", ("reason",), "Spans refused, by reason.")
DUPLICATE_SPANS = Family(
    "llm_exporter_duplicate_spans", "counter", (), "Spans delivered again and counted once.")
TRACES_PENDING = Family(
    "llm_exporter_traces_pending", "gauge", (), "Traces with spans still awaiting ancestors.")
TRACES_FLUSHED = Family(
    "llm_exporter_traces_flushed", "counter", ("reason",), "Traces attributed, by reason.")
DIRECTORY_LAST_SUCCESS = Family(
    "llm_exporter_directory_last_success_timestamp_seconds", "gauge", (),
    "Unix time of the last successful directory load.")
DIRECTORY_FAILURES = Family(
    "llm_exporter_directory_refresh_failures", "counter", (),
    "Directory loads or refreshes that failed (the last good directory stayed in force).")
SERIES_OVERFLOW = Family(
    "llm_exporter_series_overflow", "counter", ("metric",),
    "Increments folded into the __overflow__ series because a metric hit its series cap.")

# Calendar periods and budgets (gauges, from the runtime's period rows: periods.py,
# budgets.py). ``period``: today, yesterday, month, last_month in the tenant's timezone.
PERIOD_TOKENS = Family(
    "llm_period_tokens", "gauge", ("tenant", "period", _T),
    "Tokens of the tenant's members in a calendar period of the tenant's timezone.")
PERIOD_COST = Family(
    "llm_period_cost_usd", "gauge", ("tenant", "period"),
    "Cost in USD of the tenant's members in a calendar period (priced tokens only).")
PERIOD_UNPRICED = Family(
    "llm_period_unpriced_tokens", "gauge", ("tenant", "period"),
    "Tokens of the period with no price (not in llm_period_cost_usd).")
PERIOD_START = Family(
    "llm_period_start_timestamp_seconds", "gauge", ("tenant", "period"),
    "Unix time the calendar period starts, in the tenant's timezone.")
PERIOD_END = Family(
    "llm_period_end_timestamp_seconds", "gauge", ("tenant", "period"),
    "Unix time the calendar period ends (the next one's start).")
_B = ("tenant", "scope", "id")
BUDGET_LIMIT_TOKENS = Family(
    "llm_budget_limit_tokens", "gauge", _B,
    "Monthly token limit of a budget (scope tenant, member or agent).")
BUDGET_LIMIT_USD = Family(
    "llm_budget_limit_usd", "gauge", _B, "Monthly USD limit of a budget.")
BUDGET_USED_TOKENS = Family(
    "llm_budget_used_tokens", "gauge", _B,
    "Input + output tokens of the budget's scope this calendar month.")
BUDGET_USED_USD = Family(
    "llm_budget_used_usd", "gauge", _B, "Cost in USD of the budget's scope this month.")
BUDGET_RATIO = Family(
    "llm_budget_ratio", "gauge", _B,
    "Used / limit this month, the larger of tokens and USD (1 = the budget is spent).")
BUDGET_THRESHOLD = Family(
    "llm_budget_threshold_ratio", "gauge", (*_B, "state"),
    "The budget's thresholds as ratios, by the state they start (warning, throttle, "
    "exhausted).")
PERIOD_GAUGES = (PERIOD_TOKENS, PERIOD_COST, PERIOD_UNPRICED, PERIOD_START, PERIOD_END)
BUDGET_GAUGES = (BUDGET_LIMIT_TOKENS, BUDGET_LIMIT_USD, BUDGET_USED_TOKENS, BUDGET_USED_USD,
                 BUDGET_RATIO, BUDGET_THRESHOLD)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A histogram kept in the ledger as two counters: observations per bucket (label
    ``le``, not cumulative: each observation adds to one bucket) and the sum in ns."""

    family: Family  # name and help as exposed; labels without ``le``
    bounds_ns: tuple[int, ...]  # upper bounds, inclusive, ascending; +Inf implied

    @property
    def buckets(self) -> str:
        return self.family.name + ":buckets"  # ledger family of (labels..., le) -> count

    @property
    def sum_ns(self) -> str:
        return self.family.name + ":sum_ns"  # ledger family of (labels...) -> total ns


#: LLM calls take from tens of milliseconds (embeddings) to minutes (long generations).
LATENCY_BOUNDS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_NS = tuple(round(b * 1e9) for b in LATENCY_BOUNDS_S)
MODEL_DURATION = Histogram(Family(
    "llm_model_call_duration_seconds", "histogram", ("tenant", "model"),
    "Duration of the tenant's members' model calls (span duration), by model.", (0, 1)), _NS)
MODEL_TTFT = Histogram(Family(
    "llm_model_time_to_first_token_seconds", "histogram", ("tenant", "model"),
    "Time to first token of streamed model calls that report it, by model.", (0, 1)), _NS)
HISTOGRAMS = (MODEL_DURATION, MODEL_TTFT)

#: Counters kept in the ledger, in exposition order.
LEDGER_COUNTERS = (
    MODEL_TOKENS, MODEL_CACHE_TOKENS, MODEL_REASONING_TOKENS, MODEL_REQUESTS, AGENT_TOKENS,
    WORKFLOW_TOKENS, MEMBER_TOKENS, MODEL_COST, AGENT_COST, WORKFLOW_COST, MEMBER_COST,
    SERVICE_TOKENS, SERVICE_CALLS, RUNAWAY_TRACES, AGENT_INVOCATIONS, WORKFLOW_RUNS,
    UNATTRIBUTED_TOKENS, UNCLASSIFIED_USAGE_TOKENS, UNPRICED_TOKENS, SPANS_RECEIVED,
    SPANS_REJECTED, DUPLICATE_SPANS, TRACES_FLUSHED, SERIES_OVERFLOW,
)

#: Ledger families behind the histograms: (name, label positions of ids).
HISTOGRAM_TABLES = tuple(
    (name, h.family.free)
    for h in HISTOGRAMS for name in (h.buckets, h.sum_ns)
)

#: Label sets that exist from the first scrape, at 0 (style habit 8).
KNOWN_SERIES = {
    UNATTRIBUTED_TOKENS.name: (("no_caller",), ("not_member",), ("ambiguous_tenant",)),
    UNCLASSIFIED_USAGE_TOKENS.name: tuple((reason,) for reason in UNCLASSIFIED_REASONS),
    SPANS_RECEIVED.name: (("otlp_http",), ("in_process",)),
    DUPLICATE_SPANS.name: ((),),
    TRACES_FLUSHED.name: (("complete",), ("timeout",), ("capacity",)),
}
