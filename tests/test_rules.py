"""One test per attribution rule, each failing when its rule is broken (real SDK spans)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import Status, StatusCode

from tests.scenarios import agent, caller, chat, tool, workflow

TWO_TENANTS = """
tenants:
  - id: acme
    members: [{id: alice}, {id: erin}]
  - id: globex
    members: [{id: carol}, {id: erin}]
agents:
  - {id: support-bot, owner_tenant: acme}
  - {id: helper-bot, owner_tenant: globex}
workflows:
  - {id: support-chat, owner_tenant: acme, kind: chatflow, agent: support-bot}
  - {id: summarize, owner_tenant: acme}
"""


@pytest.fixture
def pipeline(runtime):
    """Every rule is stated once and run on both runtimes (in process, and the service)."""
    return runtime


@pytest.fixture
def two_tenants(tmp_path):
    path = tmp_path / "directory.yaml"
    path.write_text(TWO_TENANTS)
    return path


def test_roll_up_tokens_on_agent_and_workflow_spans_are_not_counted_again(pipeline):
    p = pipeline()
    rollup = {"gen_ai.usage.input_tokens": 999, "gen_ai.usage.output_tokens": 999}
    with agent(p.tracer, "support-bot", **caller("alice", "acme"), **rollup):
        with workflow(p.tracer, "summarize", **rollup):
            chat(p.tracer, "gpt-4o", 10, 5)
    assert p.tokens("llm_model_tokens_total", tenant="acme", model="gpt-4o") == 15
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 15
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 15


@pytest.mark.parametrize(
    "chat_attrs",
    [
        pytest.param({"gen_ai.workflow.type": "chatflow"}, id="semconv-extension"),
        pytest.param({"dify.app.mode": "advanced-chat"}, id="dify-advanced-chat"),
        pytest.param({"workflow_mode": 3}, id="coze-workflow-mode-3"),
    ],
)
def test_chat_workflow_marked_on_the_span_counts_for_the_agent_not_the_workflow(
    pipeline, chat_attrs
):
    p = pipeline()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        with workflow(p.tracer, "unlisted-chat", **chat_attrs):
            chat(p.tracer, "gpt-4o", 40, 2)
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 42
    assert p.samples("llm_workflow_tokens_total") == {}
    assert p.samples("llm_workflow_runs_total") == {}


def test_chat_workflow_known_only_from_the_directory_counts_for_the_agent(pipeline):
    p = pipeline()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        with workflow(p.tracer, "support-chat"):  # no type attribute: the directory binds it
            chat(p.tracer, "gpt-4o", 40, 2)
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 42
    assert p.samples("llm_workflow_tokens_total") == {}
    assert p.value("llm_agent_invocations_total", owner_tenant="acme", agent="support-bot") == 1


def test_bound_chat_workflow_without_agent_span_stands_for_an_agent_invocation(pipeline):
    p = pipeline()
    with workflow(p.tracer, "support-chat", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 40, 2)
        with workflow(p.tracer, "summarize"):
            chat(p.tracer, "gpt-4o-mini", 7, 1)
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 50
    assert p.tokens("llm_workflow_tokens_total", tenant="acme", workflow="summarize") == 8
    assert p.value("llm_agent_invocations_total", owner_tenant="acme", agent="support-bot") == 1
    assert p.value("llm_agent_users", owner_tenant="acme", agent="support-bot") == 1
    assert p.value("llm_workflow_runs_total", owner_tenant="acme", workflow="summarize") == 1


def test_chat_workflow_under_another_agent_is_a_turn_of_its_own_agent(pipeline, two_tenants):
    """R5/R6: only the nearest agent-standing ancestor that is the same agent suppresses it."""
    p = pipeline(directory=two_tenants)
    with agent(p.tracer, "helper-bot", **caller("carol", "globex")):
        with workflow(p.tracer, "support-chat"):  # support-bot's chat workflow, as a sub-agent
            chat(p.tracer, "gpt-4o", 20, 5)
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        with workflow(p.tracer, "support-chat"):  # that invocation's own flow
            chat(p.tracer, "gpt-4o", 1, 1)
    with p.tracer.start_as_current_span(
        "invoke_agent", attributes={"gen_ai.operation.name": "invoke_agent",
                                    **caller("alice", "acme")}):
        with workflow(p.tracer, "support-chat"):  # an agent span without an id: its flow
            chat(p.tracer, "gpt-4o", 1, 1)
    assert p.value("llm_agent_invocations_total", owner_tenant="acme", agent="support-bot") == 2
    assert p.value("llm_agent_invocations_total", owner_tenant="globex", agent="helper-bot") == 1
    assert p.value("llm_agent_invocations_total", owner_tenant="", agent="unknown") == 1
    assert p.value("llm_agent_users", owner_tenant="acme", agent="support-bot") == 2
    # R4: the tokens go to the outermost agent
    assert p.tokens("llm_agent_tokens_total", tenant="globex", agent="helper-bot") == 25
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 2
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="unknown") == 2


def test_an_agent_id_only_in_the_span_name_is_read(pipeline):
    p = pipeline()
    with p.tracer.start_as_current_span(
        "invoke_agent support-bot",
        attributes={"gen_ai.operation.name": "invoke_agent", **caller("alice", "acme")}):
        chat(p.tracer, "gpt-4o", 3, 4)
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 7
    assert p.value("llm_agent_invocations_total", owner_tenant="acme", agent="support-bot") == 1


def test_a_model_call_that_ends_after_its_agent_is_attributed_to_it(pipeline):
    from opentelemetry import trace

    p = pipeline()
    root = p.tracer.start_span("invoke_agent support-bot", attributes={
        "gen_ai.operation.name": "invoke_agent", **caller("alice", "acme")})
    call = p.tracer.start_span("chat gpt-4o", context=trace.set_span_in_context(root),
                               attributes={"gen_ai.operation.name": "chat",
                                           "gen_ai.request.model": "gpt-4o",
                                           "gen_ai.usage.input_tokens": 8,
                                           "gen_ai.usage.output_tokens": 2})
    root.end()  # fire-and-forget: the agent returned first
    call.end()
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 10
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 10


def test_regular_workflow_called_by_an_agent_counts_in_both_dimensions(pipeline):
    p = pipeline()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        with tool(p.tracer, "summarize"), workflow(p.tracer, "summarize"):
            chat(p.tracer, "gpt-4o-mini", 200, 20)
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 220
    assert p.tokens("llm_workflow_tokens_total", tenant="acme", workflow="summarize") == 220


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        pytest.param({}, "no_caller", id="no-caller"),
        pytest.param(caller("dave", None), "not_member", id="member-of-no-tenant"),
        pytest.param(caller("carol", "acme"), "not_member", id="not-member-of-given-tenant"),
        pytest.param(caller("alice", "initech"), "not_member", id="unknown-tenant"),
    ],
)
def test_non_members_are_excluded_from_cost_metrics_and_counted_by_reason(
    pipeline, attrs, reason
):
    p = pipeline()
    with agent(p.tracer, "support-bot", **attrs):
        chat(p.tracer, "gpt-4o", 100, 23)
    assert p.value("llm_unattributed_tokens_total", reason=reason) == 123
    assert p.samples("llm_model_tokens_total") == {}
    assert p.samples("llm_agent_tokens_total") == {}
    assert p.samples("llm_member_tokens_total") == {}
    # heat still counts every caller
    assert p.value("llm_agent_invocations_total", owner_tenant="acme", agent="support-bot") == 1


def test_caller_in_two_tenants_is_resolved_by_tenant_id(pipeline, two_tenants):
    p = pipeline(directory=two_tenants)
    with workflow(p.tracer, "summarize", **caller("erin", "globex")):
        chat(p.tracer, "gpt-4o", 10, 1)
    with workflow(p.tracer, "summarize", **caller("erin", "acme")):
        chat(p.tracer, "gpt-4o", 20, 2)
    assert p.tokens("llm_member_tokens_total", tenant="globex", member="erin") == 11
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="erin") == 22


def test_caller_in_two_tenants_without_tenant_id_is_ambiguous(pipeline, two_tenants):
    p = pipeline(directory=two_tenants)
    with workflow(p.tracer, "summarize", **caller("erin", None)):
        chat(p.tracer, "gpt-4o", 10, 1)
    with workflow(p.tracer, "summarize", **caller("alice", None)):  # one tenant: resolved
        chat(p.tracer, "gpt-4o", 5, 5)
    assert p.value("llm_unattributed_tokens_total", reason="ambiguous_tenant") == 11
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 10
    assert p.samples("llm_workflow_tokens_total").keys() == {
        (("tenant", "acme"), ("type", "input"), ("workflow", "summarize")),
        (("tenant", "acme"), ("type", "output"), ("workflow", "summarize")),
    }


def test_tenant_on_the_resource_only_is_the_billing_tenant(pipeline, two_tenants):
    p = pipeline(directory=two_tenants, resource=Resource.create({"tenant.id": "globex"}))
    with agent(p.tracer, "helper-bot", **caller("erin", None)):
        chat(p.tracer, "gpt-4o", 8, 2)
    assert p.tokens("llm_agent_tokens_total", tenant="globex", agent="helper-bot") == 10
    assert p.value("llm_unattributed_tokens_total", reason="ambiguous_tenant") == 0


def test_span_attribute_overrides_the_resource_and_nearest_ancestor_wins(pipeline, two_tenants):
    p = pipeline(directory=two_tenants, resource=Resource.create({"tenant.id": "globex"}))
    with agent(p.tracer, "helper-bot", **caller("carol", None)):
        with workflow(p.tracer, "summarize", **caller("erin", "acme")):
            chat(p.tracer, "gpt-4o", 8, 2)
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="erin") == 10
    assert p.tokens("llm_member_tokens_total", tenant="globex", member="carol") == 0


def test_outermost_agent_and_outermost_workflow_take_the_tokens(pipeline):
    p = pipeline()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        with agent(p.tracer, "sub-agent"):
            with workflow(p.tracer, "translate"):
                with workflow(p.tracer, "summarize"):
                    chat(p.tracer, "gpt-4o", 30, 3)
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 33
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="sub-agent") == 0
    assert p.tokens("llm_workflow_tokens_total", tenant="acme", workflow="translate") == 33
    assert p.tokens("llm_workflow_tokens_total", tenant="acme", workflow="summarize") == 0
    # heat: every agent span and every workflow span is an invocation / a run
    assert p.value("llm_agent_invocations_total", owner_tenant="acme", agent="support-bot") == 1
    assert p.value("llm_agent_invocations_total", owner_tenant="", agent="sub-agent") == 1
    assert p.value("llm_workflow_runs_total", owner_tenant="acme", workflow="summarize") == 1
    assert p.value("llm_workflow_runs_total", owner_tenant="acme", workflow="translate") == 1


def test_cache_tokens_are_part_of_input_and_billed_at_cache_prices(pipeline):
    p = pipeline()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(
            p.tracer, "claude-sonnet-4-5", 1000, 100,
            **{
                "gen_ai.usage.cache_read.input_tokens": 600,
                "gen_ai.usage.cache_creation.input_tokens": 200,
            },
        )
    assert p.value("llm_model_tokens_total", tenant="acme", model="claude-sonnet-4-5",
                   type="input") == 1000
    assert p.value("llm_model_cache_tokens_total", tenant="acme", model="claude-sonnet-4-5",
                   type="read") == 600
    assert p.value("llm_model_cache_tokens_total", tenant="acme", model="claude-sonnet-4-5",
                   type="write") == 200
    # 3.00 input, 15.00 output, 0.30 cache read, 3.75 cache write USD per million tokens
    pico = 200 * 3_000_000 + 600 * 300_000 + 200 * 3_750_000 + 100 * 15_000_000
    cost = p.value("llm_model_cost_usd_total", tenant="acme", model="claude-sonnet-4-5")
    assert cost == pico / 1e12


def test_dated_snapshot_is_priced_by_its_base_model_and_labelled_by_the_request(pipeline):
    p = pipeline()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 1_000_000, 0, **{"gen_ai.response.model": "gpt-4o-2024-08-06"})
    assert p.value("llm_model_cost_usd_total", tenant="acme", model="gpt-4o") == 2.5
    assert p.samples("llm_unpriced_tokens_total") == {}


def test_unpriced_model_gets_no_invented_cost_and_its_tokens_are_counted(pipeline):
    p = pipeline()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "mystery-model-7b", 70, 7)
    assert p.tokens("llm_model_tokens_total", tenant="acme", model="mystery-model-7b") == 77
    assert p.value("llm_unpriced_tokens_total", model="mystery-model-7b") == 77
    assert p.samples("llm_model_cost_usd_total") == {}
    assert p.samples("llm_agent_cost_usd_total") == {}


def test_outcome_is_error_for_an_error_status_or_an_error_type(pipeline):
    p = pipeline()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        with p.tracer.start_as_current_span(
            "chat gpt-4o",
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            span.set_status(Status(StatusCode.ERROR, "rate limited"))
        chat(p.tracer, "gpt-4o", 1, 1, **{"error.type": "timeout"})
        chat(p.tracer, "gpt-4o", 1, 1)
    assert p.value("llm_model_requests_total", tenant="acme", model="gpt-4o", outcome="error") == 2
    assert p.value("llm_model_requests_total", tenant="acme", model="gpt-4o", outcome="ok") == 1


def test_model_call_latency_and_time_to_first_token_land_in_exact_buckets(pipeline):
    from opentelemetry import trace

    p = pipeline()
    root = p.tracer.start_span("invoke_agent support-bot", start_time=0, attributes={
        "gen_ai.operation.name": "invoke_agent", **caller("alice", "acme")})
    ctx = trace.set_span_in_context(root)
    ms = 1_000_000
    for i, (duration_ms, ttft) in enumerate([(30, None), (50, 0.2), (51, None),
                                              (2_000, 1.5), (400_000, None)]):
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                 "gen_ai.usage.input_tokens": 1, "gen_ai.usage.output_tokens": 1}
        if ttft is not None:
            attrs["gen_ai.server.time_to_first_token"] = ttft
        start = (i + 1) * 10**12
        p.tracer.start_span("chat gpt-4o", context=ctx, start_time=start,
                            attributes=attrs).end(end_time=start + duration_ms * ms)
    root.end(end_time=10**13)
    labels = {"tenant": "acme", "model": "gpt-4o"}
    buckets = {le: p.value("llm_model_call_duration_seconds_bucket", le=le, **labels)
               for le in ("0.05", "0.1", "2.5", "300", "+Inf")}
    assert buckets == {"0.05": 2, "0.1": 3, "2.5": 4, "300": 4, "+Inf": 5}  # <= le, inclusive
    assert p.value("llm_model_call_duration_seconds_count", **labels) == 5
    assert p.value("llm_model_call_duration_seconds_sum", **labels) == 402.131
    ttft = {le: p.value("llm_model_time_to_first_token_seconds_bucket", le=le, **labels)
            for le in ("0.1", "0.25", "1", "2.5", "+Inf")}
    assert ttft == {"0.1": 0, "0.25": 1, "1": 1, "2.5": 2, "+Inf": 2}
    assert p.value("llm_model_time_to_first_token_seconds_sum", **labels) == 1.7
