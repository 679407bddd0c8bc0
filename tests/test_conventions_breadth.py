"""Issue 12: conventions of the Vercel AI SDK, LiteLLM, OpenLIT, Dify, Coze Loop JS; reasoning
tokens; usage on remote agent spans; and no usage ignored silently (unclassified usage).

Spans have the shape the real packages emit (names read in their sources: see
``docs/conventions.md``). Rules are run through both runtimes with exact token numbers.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource

from otel_processor.conventions import MODEL, OTHER, WORKFLOW, normalize, span_kind

TOKENS = "llm_model_tokens_total"
UNCLASSIFIED = "llm_unclassified_usage_tokens_total"


def tokens(p, tenant: str, model: str) -> tuple[int, int]:
    return (int(p.value(TOKENS, tenant=tenant, model=model, type="input")),
            int(p.value(TOKENS, tenant=tenant, model=model, type="output")))


def unclassified(p) -> dict[str, int]:
    return {r: int(p.value(UNCLASSIFIED, reason=r))
            for r in ("unknown_kind", "tool_span", "workflow_span")}


def span(p, name: str, **attrs):
    return p.tracer.start_as_current_span(name, attributes=attrs)


# -- 1. Vercel AI SDK ------------------------------------------------------------------------

VERCEL_MODEL_OPS = ["ai.generateText.doGenerate", "ai.streamText.doStream",
                    "ai.generateObject.doGenerate", "ai.streamObject.doStream",
                    "ai.embed.doEmbed", "ai.embedMany.doEmbed"]


@pytest.mark.parametrize("op", VERCEL_MODEL_OPS)
def test_vercel_inner_spans_are_model_calls(op):
    assert span_kind({"ai.operationId": op, "operation.name": op}) == MODEL
    # operation.name carries the functionId after a space
    assert span_kind({"operation.name": f"{op} my-function"}) == MODEL


@pytest.mark.parametrize("op", ["ai.generateText", "ai.streamText", "ai.generateObject",
                                "ai.streamObject", "ai.embed", "ai.embedMany", "ai.toolCall"])
def test_vercel_outer_spans_are_no_model_call(op):
    assert span_kind({"ai.operationId": op, "operation.name": op}) == OTHER


def test_vercel_v6_do_generate_reads_usage_model_and_caller():
    # ai 6.0.326 dist/index.js, the attributes of an ai.generateText.doGenerate span
    record = normalize({
        "operation.name": "ai.generateText.doGenerate chat", "ai.operationId":
        "ai.generateText.doGenerate", "ai.model.provider": "openai.chat",
        "ai.model.id": "gpt-4o", "ai.response.model": "gpt-4o-2024-08-06",
        "ai.usage.inputTokens": 120, "ai.usage.outputTokens": 30,
        "ai.usage.cachedInputTokens": 20, "ai.usage.inputTokenDetails.cacheReadTokens": 20,
        "ai.usage.inputTokenDetails.cacheWriteTokens": 5,
        "ai.usage.outputTokenDetails.reasoningTokens": 8, "ai.usage.reasoningTokens": 8,
        "ai.telemetry.metadata.userId": "alice", "ai.telemetry.metadata.tenantId": "acme",
        "ai.telemetry.metadata.sessionId": "s1",
    })
    assert (record.kind, record.input_tokens, record.output_tokens) == (MODEL, 120, 30)
    assert (record.cache_read_tokens, record.cache_write_tokens) == (20, 5)
    assert record.reasoning_tokens == 8
    assert (record.model, record.response_model, record.provider) == (
        "gpt-4o", "gpt-4o-2024-08-06", "openai.chat")
    assert (record.caller, record.tenant, record.conversation) == ("alice", "acme", "s1")


def test_vercel_v4_names_and_embeddings():
    v4 = normalize({"ai.operationId": "ai.streamText.doStream", "ai.model.id": "gpt-4o-mini",
                    "ai.usage.promptTokens": 11, "ai.usage.completionTokens": 4,
                    "ai.stream.msToFirstChunk": 250})
    assert (v4.input_tokens, v4.output_tokens, v4.time_to_first_token_ns) == (11, 4, 250_000_000)
    embed = normalize({"ai.operationId": "ai.embedMany.doEmbed", "ai.usage.tokens": 64,
                       "ai.model.id": "text-embedding-3-small"})
    assert (embed.kind, embed.input_tokens, embed.output_tokens) == (MODEL, 64, 0)


def test_ai_sdk_7_context_names_the_caller_and_tenant():
    record = normalize({"ai.operationId": "ai.generateText.doGenerate",
                        "ai.settings.context.userId": "bob",
                        "ai.settings.context.tenantId": "acme"})
    assert (record.caller, record.tenant) == ("bob", "acme")


def test_vercel_generate_text_counts_its_steps_once(quick_runtime):
    """The outer ai.generateText repeats its steps' totals: counted once, from the steps."""
    p = quick_runtime()
    meta = {"ai.telemetry.metadata.userId": "alice", "ai.model.id": "gpt-4o",
            "ai.model.provider": "openai.chat"}
    with span(p, "ai.generateText", **{"operation.name": "ai.generateText",
                                       "ai.operationId": "ai.generateText",
                                       "ai.usage.inputTokens": 300, "ai.usage.outputTokens": 45,
                                       **meta}):
        for tin, tout in ((100, 15), (200, 30)):
            with span(p, "ai.generateText.doGenerate", **{
                    "operation.name": "ai.generateText.doGenerate",
                    "ai.operationId": "ai.generateText.doGenerate",
                    "ai.usage.inputTokens": tin, "ai.usage.outputTokens": tout,
                    "gen_ai.system": "openai.chat", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": tin, "gen_ai.usage.output_tokens": tout,
                    **meta}):
                pass
    p.wait_closed(1)
    assert tokens(p, "acme", "gpt-4o") == (300, 45)
    assert p.value("llm_model_requests_total", tenant="acme", model="gpt-4o", outcome="ok") == 2
    assert unclassified(p) == {"unknown_kind": 0, "tool_span": 0, "workflow_span": 0}


# -- 2. LiteLLM --------------------------------------------------------------------------------

def test_litellm_callers_and_call_types():
    base = {"gen_ai.operation.name": "acompletion", "gen_ai.request.model": "gpt-4o"}
    assert normalize({**base, "metadata.user_api_key_user_id": "bob"}).caller == "bob"
    assert normalize({**base, "llm.user": "carol",
                      "metadata.user_api_key_user_id": "bob"}).caller == "carol"
    assert normalize({**base, "metadata.user_api_key_end_user_id": "dave", "llm.user": "carol",
                      "metadata.user_api_key_user_id": "bob"}).caller == "dave"
    # a team is no billing tenant: not read
    assert normalize({**base, "metadata.user_api_key_team_id": "team-1"}).tenant is None
    for op in ("acompletion", "atext_completion", "embedding", "aembedding"):
        assert span_kind({"gen_ai.operation.name": op}) == MODEL


def test_litellm_proxy_call_is_attributed_to_the_keys_user(quick_runtime):
    p = quick_runtime()
    with span(p, "litellm_request", **{
            "gen_ai.operation.name": "acompletion", "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 9,
            "gen_ai.usage.total_tokens": 49, "metadata.user_api_key_user_id": "bob",
            "metadata.user_api_key_team_id": "team-1"}):
        pass
    p.wait_closed(1)
    assert tokens(p, "acme", "gpt-4o-mini") == (40, 9)
    assert p.value("llm_member_tokens_total", tenant="acme", member="bob", type="input") == 40


def test_litellm_team_metadata_names_the_tenant():
    call = {"gen_ai.operation.name": "acompletion", "metadata.user_api_key_user_id": "carol"}
    record = normalize({**call, "litellm.team.metadata": '{"tenant_id": "acme"}'})
    assert (record.caller, record.tenant) == ("carol", "acme")
    # a tenant attribute of the span wins; no tenant_id, or no JSON object, names none
    assert normalize({**call, "litellm.team.metadata": '{"tenant_id": "acme"}',
                      "tenant.id": "globex"}).tenant == "globex"
    for raw in ('{"region": "eu"}', "not json", '["tenant_id"]', '{"tenant_id": ""}'):
        assert normalize({**call, "litellm.team.metadata": raw}).tenant is None


def test_a_team_tenant_the_caller_is_no_member_of_is_not_member(quick_runtime):
    # carol is a member of globex only: her key's team says acme, so acme does not pay
    p = quick_runtime()
    with span(p, "litellm_request", **{
            "gen_ai.operation.name": "acompletion", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 50,
            "metadata.user_api_key_user_id": "carol",
            "litellm.team.metadata": '{"tenant_id": "acme"}'}):
        pass
    p.wait_closed(1)
    assert p.value("llm_unattributed_tokens_total", reason="not_member") == 150
    assert tokens(p, "globex", "gpt-4o") == (0, 0)


# -- 3. OpenLIT --------------------------------------------------------------------------------

def _openlit_chat(provider: str, **extra):
    return {"telemetry.sdk.name": "openlit", "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider, "gen_ai.request.model": "claude-sonnet-4",
            "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20,
            "gen_ai.usage.cache_read.input_tokens": 40,
            "gen_ai.usage.cache_creation.input_tokens": 10, **extra}


@pytest.mark.parametrize(("provider", "expected"), [
    ("anthropic", 150), ("aws.bedrock", 150), ("openai", 100), ("groq", 100)])
def test_openlit_input_and_cache_by_provider(provider, expected):
    record = normalize(_openlit_chat(provider))
    assert (record.input_tokens, record.cache_read_tokens, record.cache_write_tokens) == (
        expected, 40, 10)
    # the same, identified by the resource
    attrs = _openlit_chat(provider)
    del attrs["telemetry.sdk.name"]
    assert normalize(attrs, {"telemetry.sdk.name": "openlit"}).input_tokens == expected
    # not OpenLIT: cache below input is part of it (the semconv)
    assert normalize(attrs, {"telemetry.sdk.name": "opentelemetry"}).input_tokens == 100


def test_openlit_anthropic_call_counts_its_cache_as_input(quick_runtime):
    p = quick_runtime(resource=Resource.create({"telemetry.sdk.name": "openlit"}))
    attrs = _openlit_chat("anthropic", **{"gen_ai.request.user": "alice"})
    del attrs["telemetry.sdk.name"]
    with span(p, "chat claude-sonnet-4", **attrs):
        pass
    p.wait_closed(1)
    assert tokens(p, "acme", "claude-sonnet-4") == (150, 20)
    assert p.value("llm_model_cache_tokens_total", tenant="acme", model="claude-sonnet-4",
                   type="read") == 40


# -- 4. Dify placeholder workflow id ------------------------------------------------------------

@pytest.mark.parametrize("placeholder", ["unknown", "UNKNOWN", " none ", "null", "undefined"])
def test_dify_placeholder_workflow_id_is_no_id(placeholder):
    record = normalize({"dify.workflow_id": placeholder, "dify.tenant_id": "acme"})
    assert (record.kind, record.workflow_id, record.tenant) == (OTHER, None, "acme")
    real = normalize({"dify.workflow_id": "wf-1"})
    assert (real.kind, real.workflow_id) == (WORKFLOW, "wf-1")


def test_dify_app_span_without_workflow_runs_no_workflow(quick_runtime):
    p = quick_runtime()
    with span(p, "dify.app", **{"dify.workflow_id": "unknown", "user.id": "alice"}):
        with span(p, "llm", **{"gen_ai.span.kind": "LLM", "gen_ai.request.model": "qwen-max",
                               "gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 3}):
            pass
    p.wait_closed(1)
    assert tokens(p, "acme", "qwen-max") == (30, 3)
    assert p.value("llm_workflow_tokens_total", tenant="acme", workflow="unknown",
                   type="input") == 0
    assert p.value("llm_workflow_runs_total", owner_tenant="", workflow="unknown") == 0
    assert p.value("llm_service_calls_total", tenant="acme", service="direct") == 1


# -- 5. Coze Loop JS SDK -------------------------------------------------------------------------

def test_coze_loop_js_model_span():
    record = normalize({"cozeloop_span_type": "model", "cozeloop_span_name": "chat",
                        "input_tokens": 12, "output_tokens": 5, "model_name": "doubao-pro",
                        "reasoning_tokens": 2, "user.id": "alice"})
    assert (record.kind, record.input_tokens, record.output_tokens, record.model) == (
        MODEL, 12, 5, "doubao-pro")
    assert record.reasoning_tokens == 2


def test_generic_names_are_read_only_on_coze_loop_spans():
    # not a Coze Loop span: input_tokens / model_name are someone else's, never read
    record = normalize({"gen_ai.operation.name": "chat", "input_tokens": "not a number",
                        "output_tokens": 7, "model_name": "x"})
    assert (record.input_tokens, record.output_tokens, record.model) == (0, 0, None)
    assert normalize({"input_tokens": 5, "output_tokens": 5}).has_usage is False


def test_coze_loop_js_call_is_counted(quick_runtime):
    p = quick_runtime()
    with span(p, "chat", **{"cozeloop_span_type": "model", "input_tokens": 12,
                            "output_tokens": 5, "model_name": "doubao-pro",
                            "user.id": "bob"}):
        pass
    p.wait_closed(1)
    assert tokens(p, "acme", "doubao-pro") == (12, 5)


def _under_coze_baggages(user_id: str):
    """A context whose span context carries Coze Loop JS's baggages in its W3C tracestate,
    as ``@cozeloop/ai``'s ``injectBaggages`` makes it (spans started in it inherit it)."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    parent = SpanContext(trace_id=0x5B8EFFF798038103D269B633813FC60C, span_id=0xEEE19B7EC3C1B174,
                         is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED),
                         trace_state=TraceState([("user_id", user_id), ("message_id", "m-1")]))
    return otel_context.attach(otel_trace.set_span_in_context(NonRecordingSpan(parent)))


def test_coze_loop_js_caller_comes_from_the_tracestate(quick_runtime):
    from opentelemetry import context as otel_context

    p = quick_runtime()
    token = _under_coze_baggages("bob")
    try:
        with span(p, "chat.model", **{"cozeloop_span_type": "model", "input_tokens": 12,
                                      "output_tokens": 5, "model_name": "doubao-pro"}):
            pass
    finally:
        otel_context.detach(token)
    p.wait_closed(1)  # its parent (the context's span) never arrives: closed when idle
    assert tokens(p, "acme", "doubao-pro") == (12, 5)
    assert p.value("llm_member_tokens_total", tenant="acme", member="bob", type="input") == 12


def test_the_tracestate_names_a_caller_of_coze_loop_js_spans_only(quick_runtime):
    from opentelemetry import context as otel_context

    p = quick_runtime()
    token = _under_coze_baggages("bob")
    try:  # not a Coze Loop JS span: a tracestate key user_id is someone else's
        with span(p, "chat qwen-max", **{"gen_ai.operation.name": "chat",
                                         "gen_ai.request.model": "qwen-max",
                                         "gen_ai.usage.input_tokens": 7}):
            pass
    finally:
        otel_context.detach(token)
    p.wait_closed(1)
    assert p.value("llm_unattributed_tokens_total", reason="no_caller") == 7


def test_tracestate_caller_reads_the_header_text_and_the_sdk_mapping():
    from opentelemetry.trace import TraceState

    from otel_processor.conventions import COZE_JS_TRACESTATE_CALLER, with_tracestate_caller

    coze = {"cozeloop_span_type": "model"}
    for state in ("user_id=alice,message_id=m-1", " rojo=00f0 , user_id = alice ",
                  TraceState([("user_id", "alice")])):
        assert with_tracestate_caller(coze, state)[COZE_JS_TRACESTATE_CALLER] == "alice"
    for state in ("", None, "message_id=m-1", "user_id=", "garbage", 42):
        assert with_tracestate_caller(coze, state) is coze
    other = {"gen_ai.operation.name": "chat"}
    assert with_tracestate_caller(other, "user_id=alice") is other
    # an attribute on the span still wins over the tracestate
    record = normalize(with_tracestate_caller({**coze, "user.id": "carol"}, "user_id=alice"))
    assert record.caller == "carol"


# -- 6. Reasoning tokens -------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
    "gen_ai.usage.completion_tokens_details.reasoning_tokens",
    "llm.token_count.completion_details.reasoning", "ai.usage.outputTokenDetails.reasoningTokens",
    "ai.usage.reasoningTokens"])
def test_reasoning_token_names(name):
    record = normalize({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 50,
                        name: 30})
    assert (record.output_tokens, record.reasoning_tokens) == (50, 30)


def test_reasoning_tokens_are_output_and_counted_on_their_own(quick_runtime):
    p = quick_runtime()
    with span(p, "chat o3", **{"gen_ai.operation.name": "chat", "gen_ai.request.model": "o3",
                               "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 50,
                               "gen_ai.usage.reasoning.output_tokens": 30, "user.id": "alice"}):
        pass
    p.wait_closed(1)
    assert tokens(p, "acme", "o3") == (10, 50)
    assert p.value("llm_model_reasoning_tokens_total", tenant="acme", model="o3") == 30


# -- 7. Remote agents, and 8. unclassified usage ----------------------------------------------

def _agent(p, **attrs):
    return span(p, "invoke_agent support-bot", **{
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "support-bot",
        "user.id": "alice", **attrs})


def test_remote_agent_usage_counts_as_the_agents_call(quick_runtime):
    """Bedrock Agents / Azure AI Foundry: the usage sits on invoke_agent, no call below."""
    p = quick_runtime()
    with _agent(p, **{"gen_ai.provider.name": "aws.bedrock",
                      "gen_ai.request.model": "claude-sonnet-4",
                      "gen_ai.usage.input_tokens": 500, "gen_ai.usage.output_tokens": 70}):
        with span(p, "execute_tool lookup", **{"gen_ai.operation.name": "execute_tool"}):
            pass
    p.wait_closed(1)
    assert tokens(p, "acme", "claude-sonnet-4") == (500, 70)
    assert p.value("llm_agent_tokens_total", tenant="acme", agent="support-bot",
                   type="input") == 500
    assert p.value("llm_service_tokens_total", tenant="acme", service="agent",
                   type="output") == 70
    assert p.value("llm_agent_invocations_total", owner_tenant="acme", agent="support-bot") == 1
    assert unclassified(p) == {"unknown_kind": 0, "tool_span": 0, "workflow_span": 0}


def test_agent_usage_over_model_calls_is_a_rollup(quick_runtime):
    p = quick_runtime()
    with _agent(p, **{"gen_ai.usage.input_tokens": 130, "gen_ai.usage.output_tokens": 13}):
        with span(p, "chain", **{"openinference.span.kind": "CHAIN",
                                 "llm.token_count.prompt": 130,
                                 "llm.token_count.completion": 13}):
            for tin, tout in ((100, 10), (30, 3)):
                with span(p, "chat gpt-4o", **{"gen_ai.operation.name": "chat",
                                               "gen_ai.request.model": "gpt-4o",
                                               "gen_ai.usage.input_tokens": tin,
                                               "gen_ai.usage.output_tokens": tout}):
                    pass
    p.wait_closed(1)
    assert tokens(p, "acme", "gpt-4o") == (130, 13)
    assert tokens(p, "acme", "unknown") == (0, 0)
    assert unclassified(p) == {"unknown_kind": 0, "tool_span": 0, "workflow_span": 0}


def test_nested_remote_agents_count_the_innermost_usage_once(quick_runtime):
    p = quick_runtime()
    with _agent(p, **{"gen_ai.usage.input_tokens": 90, "gen_ai.usage.output_tokens": 9}):
        with span(p, "invoke_agent helper", **{
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "helper",
                "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 60,
                "gen_ai.usage.output_tokens": 6}):
            pass
    p.wait_closed(1)
    # the outer agent's usage covers the inner one's: counted once, the inner span's
    assert tokens(p, "acme", "gpt-4o") == (60, 6)
    assert tokens(p, "acme", "unknown") == (0, 0)
    # R4: the outermost agent
    assert p.value("llm_agent_tokens_total", tenant="acme", agent="support-bot",
                   type="input") == 60


def test_usage_on_spans_that_are_no_model_call_is_unclassified(quick_runtime):
    """tokens in = attributed + unattributed + unclassified."""
    p = quick_runtime()
    with span(p, "root", **{"user.id": "alice"}):
        with span(p, "ai.generateText", **{"ai.operationId": "ai.generateText",
                                           "ai.usage.inputTokens": 70,
                                           "ai.usage.outputTokens": 7}):
            pass  # its doGenerate spans were not exported
        with span(p, "execute_tool search", **{"gen_ai.operation.name": "execute_tool",
                                               "gen_ai.usage.input_tokens": 20}):
            pass
        with span(p, "invoke_workflow summarize", **{
                "gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.id": "summarize",
                "gen_ai.usage.input_tokens": 8, "gen_ai.usage.output_tokens": 2}):
            pass
        with span(p, "chat gpt-4o", **{"gen_ai.operation.name": "chat",
                                       "gen_ai.request.model": "gpt-4o",
                                       "gen_ai.usage.input_tokens": 5,
                                       "gen_ai.usage.output_tokens": 1}):
            pass
    p.wait_closed(1)
    assert unclassified(p) == {"unknown_kind": 77, "tool_span": 20, "workflow_span": 10}
    assert tokens(p, "acme", "gpt-4o") == (5, 1)
    assert p.value("llm_unattributed_tokens_total", reason="no_caller") == 0


# -- pydantic-ai: the caller and tenant in the run's JSON metadata ------------------------------

#: The agent run span pydantic-ai-slim 2.68.0 ends (tests/instrumentation/EMITTED.md).
PYDANTIC_AI_AGENT = {
    "model_name": "gpt-4o", "agent_name": "support-bot", "gen_ai.agent.name": "support-bot",
    "gen_ai.operation.name": "invoke_agent", "logfire.msg": "support-bot run",
    "gen_ai.aggregated_usage.input_tokens": 100, "gen_ai.aggregated_usage.output_tokens": 50,
    "metadata": '{"user_id":"alice","tenant_id":"acme"}',
}


def test_pydantic_ai_metadata_names_the_caller_and_the_tenant():
    record = normalize(PYDANTIC_AI_AGENT)
    assert (record.kind, record.agent_id) == ("agent", "support-bot")
    assert (record.caller, record.tenant) == ("alice", "acme")
    assert record.input_tokens == 0  # gen_ai.aggregated_usage.* is not read
    # an attribute of the tables wins, field by field
    record = normalize({**PYDANTIC_AI_AGENT, "enduser.id": "bob"})
    assert (record.caller, record.tenant) == ("bob", "acme")
    record = normalize({**PYDANTIC_AI_AGENT, "tenant.id": "globex"})
    assert (record.caller, record.tenant) == ("alice", "globex")
    # an integer id is read as OpenInference's metadata tenant always was
    assert normalize({"metadata": '{"user_id": 42}'}).caller == "42"
    # not JSON, not an object, or no such key: nothing
    for raw in ("user_id=alice", '["user_id"]', '{"user_ids": "alice"}', '{"user_id": null}'):
        assert normalize({"metadata": raw}).caller is None, raw


def test_metadata_json_is_parsed_only_when_it_can_name_a_missing_field(monkeypatch):
    import otel_processor.conventions as conventions

    calls = []
    real = conventions.json.loads
    monkeypatch.setattr(conventions.json, "loads", lambda raw: calls.append(raw) or real(raw))
    normalize({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"})
    normalize({"metadata": '{"session": "s1"}'})  # names neither key
    normalize({**PYDANTIC_AI_AGENT, "enduser.id": "bob", "tenant.id": "acme"})
    assert calls == []
    normalize(PYDANTIC_AI_AGENT)
    assert len(calls) == 1  # once for both fields


def test_pydantic_ai_metadata_written_when_the_agent_span_ends_counts(quick_runtime):
    """The run's metadata is set on the agent span after its model call ended."""
    p = quick_runtime()
    attrs = {k: v for k, v in PYDANTIC_AI_AGENT.items() if k != "metadata"}
    with span(p, "invoke_agent support-bot", **attrs) as agent:
        with span(p, "chat gpt-4o", **{"gen_ai.operation.name": "chat",
                                       "gen_ai.request.model": "gpt-4o",
                                       "gen_ai.usage.input_tokens": 100,
                                       "gen_ai.usage.output_tokens": 50}):
            pass
        agent.set_attribute("metadata", '{"user_id":"bob","tenant_id":"acme"}')
    p.wait_closed(1)
    assert tokens(p, "acme", "gpt-4o") == (100, 50)
    assert p.value("llm_member_tokens_total", tenant="acme", member="bob", type="input") == 100
    assert p.value("llm_unattributed_tokens_total", reason="no_caller") == 0


# -- LangChain / LangGraph through OpenInference ---------------------------------------------

# openinference-instrumentation-langchain 0.1.80: a LangGraph node run named "agent" is an
# AGENT span by its name alone; LangChain's run metadata is on every span of the run.
LANGGRAPH_NODE = {
    "openinference.span.kind": "AGENT",
    "metadata": '{"user_id": "alice", "tenant_id": "acme", "ls_integration": "langgraph",'
                ' "langgraph_step": 2, "langgraph_node": "agent"}',
}


def test_a_langgraph_node_agent_by_its_name_only_is_no_agent():
    from otel_processor.conventions import AGENT

    record = normalize(LANGGRAPH_NODE, name="agent")
    assert (record.kind, record.agent_id, record.caller) == (OTHER, None, "alice")
    # a graph root, or a node that is a CHAIN: context, no agent
    root = {"openinference.span.kind": "CHAIN", "metadata": '{"ls_integration": "langgraph"}'}
    assert normalize(root, name="LangGraph").kind == OTHER
    # named explicitly, a node is an agent; an AGENT span outside LangGraph is named by its name
    named = normalize({**LANGGRAPH_NODE, "agent.name": "support-bot"}, name="agent")
    assert (named.kind, named.agent_id) == (AGENT, "support-bot")
    plain = normalize({"openinference.span.kind": "AGENT", "metadata": '{"x": 1}'}, name="bot")
    assert (plain.kind, plain.agent_id) == (AGENT, "bot")
    assert normalize({**LANGGRAPH_NODE, "metadata": "{not json"}, name="agent").kind == AGENT


def test_a_langgraph_run_inside_an_agent_span_counts_one_invocation(quick_runtime):
    p = quick_runtime()
    with span(p, "support-bot", **{"openinference.span.kind": "AGENT",
                                   "agent.name": "support-bot"}):
        with span(p, "LangGraph", **{"openinference.span.kind": "CHAIN",
                                     "metadata": '{"user_id": "alice"}'}):
            with span(p, "agent", **LANGGRAPH_NODE):
                with span(p, "ChatOpenAI", **{"openinference.span.kind": "LLM",
                                              "llm.model_name": "gpt-4o",
                                              "llm.token_count.prompt": 100,
                                              "llm.token_count.completion": 50,
                                              "metadata": LANGGRAPH_NODE["metadata"]}):
                    pass
    p.wait_closed(1)
    assert tokens(p, "acme", "gpt-4o") == (100, 50)
    assert p.value("llm_agent_tokens_total", tenant="acme", agent="support-bot",
                   type="input") == 100
    assert p.value("llm_agent_invocations_total", owner_tenant="acme", agent="support-bot") == 1
    assert p.value("llm_agent_invocations_total", owner_tenant="", agent="agent") == 0


# -- Model calls around model calls (two instrumentations on one call) ---------------------------

def _model(p, name: str, usage: tuple[int, int] | None, **extra):
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", **extra}
    if usage is not None:
        attrs.update({"gen_ai.usage.input_tokens": usage[0],
                      "gen_ai.usage.output_tokens": usage[1]})
    return span(p, name, **attrs)


def _requests(p) -> int:
    return int(p.value("llm_model_requests_total", tenant="acme", model="gpt-4o", outcome="ok"))


def test_a_model_call_inside_a_model_call_that_repeats_its_usage_counts_once(quick_runtime):
    # OpenLIT's LangChain span is current while its OpenAI span runs: both report the call
    p = quick_runtime()
    with span(p, "agent", **{"gen_ai.operation.name": "invoke_agent",
                             "gen_ai.agent.id": "support-bot", "enduser.id": "alice"}):
        with _model(p, "chat ChatOpenAI", (100, 50), **{"telemetry.sdk.name": "openlit"}):
            with _model(p, "chat gpt-4o", (100, 50)):
                pass
    p.wait_closed(1)
    assert tokens(p, "acme", "gpt-4o") == (100, 50)
    assert _requests(p) == 1
    assert p.value("llm_agent_tokens_total", tenant="acme", agent="support-bot",
                   type="input") == 100


def test_a_model_call_with_usage_around_one_without_still_counts_its_usage(quick_runtime):
    # the outer call's usage is the only one: it counts (and so does the request inside)
    p = quick_runtime()
    with span(p, "root", **{"enduser.id": "alice"}):
        with _model(p, "chat outer", (100, 50)):
            with _model(p, "chat inner", None):
                pass
    p.wait_closed(1)
    assert tokens(p, "acme", "gpt-4o") == (100, 50)
    assert _requests(p) == 2


def test_sibling_model_calls_each_count(quick_runtime):
    p = quick_runtime()
    with span(p, "root", **{"enduser.id": "alice"}):
        with _model(p, "chat 1", (100, 50)):
            pass
        with _model(p, "chat 2", (30, 3)):
            pass
    p.wait_closed(1)
    assert tokens(p, "acme", "gpt-4o") == (130, 53)
    assert _requests(p) == 2
