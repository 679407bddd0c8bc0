"""The Vercel AI SDK 7 through ``@ai-sdk/otel``'s ``OpenTelemetry`` integration.

AI SDK 7 (npm ``ai`` 7.0.173) makes no spans itself: ``registerTelemetry(new
OpenTelemetry())`` from ``@ai-sdk/otel`` 1.0.173 does (``src/open-telemetry.ts``), with the
GenAI semantic conventions. Every ``generateText`` / ``streamText`` / ``generateObject`` call
is a tree (captured from the real packages by ``tests/instrumentation/node-ai7``)::

    invoke_agent {modelId}   gen_ai.operation.name=invoke_agent, gen_ai.request.model, the
                             total of its steps in gen_ai.usage.*; gen_ai.agent.name only
                             when the call has telemetry.functionId
      step N                 gen_ai.operation.name=agent_step (no usage by default)
        chat {modelId}       gen_ai.operation.name=chat, that step's gen_ai.usage.*: the
                             model call
        execute_tool {name}  a tool the SDK ran (under the step)

``ai.settings.context.<key>`` (the call's runtimeContext) is on the root and step spans,
not on ``chat``, and only with ``new OpenTelemetry({runtimeContext: true})`` and the key in
``telemetry.includeRuntimeContext``.

The root span is no agent of the platform unless the application names it: the span name
carries the *model* id (``agentSpanName`` defaults to ``modelId``), and reading it as an
agent id (docs/attribution.md, "Agent and workflow ids in the span name") would make an
agent ``gpt-4o`` per model, with an invocation per call. With ``telemetry.functionId`` the
SDK writes it as ``gen_ai.agent.name``: the application named an agent, and it is one.
"""

from __future__ import annotations

import pytest

from otel_processor.conventions import AGENT, MODEL, OTHER, normalize

TOKENS = "llm_model_tokens_total"

#: The root span's attributes as @ai-sdk/otel 1.0.173 writes them for
#: generateText({model: openai.chat("gpt-4o"), runtimeContext: {userId: "alice"}, ...}).
ROOT = {
    "gen_ai.operation.name": "invoke_agent",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "ai.settings.context.userId": "alice",
    "gen_ai.response.finish_reasons": ("stop",),
}
STEP = {"gen_ai.operation.name": "agent_step", "ai.settings.context.userId": "alice"}


def chat(tin: int, tout: int, **extra) -> dict:
    return {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": tin, "gen_ai.usage.output_tokens": tout, **extra,
    }


def rolled_up(tin: int, tout: int, **extra) -> dict:
    return {**ROOT, "gen_ai.usage.input_tokens": tin, "gen_ai.usage.output_tokens": tout,
            **extra}


# -- one span -------------------------------------------------------------------------------


def test_the_root_span_named_after_its_model_is_no_agent():
    record = normalize(rolled_up(140, 58), name="invoke_agent gpt-4o")
    assert (record.kind, record.agent_id) == (OTHER, None)
    # still context for the calls below it
    assert record.caller == "alice"


@pytest.mark.parametrize("model", ["gpt-4o", " gpt-4o"])
def test_a_failed_call_root_without_usage_is_no_agent_either(model):
    attrs = {**ROOT, "gen_ai.request.model": model, "http.response.status_code": 404}
    assert normalize(attrs, error=True, name="invoke_agent gpt-4o").kind == OTHER


def test_function_id_names_the_agent():
    # telemetry: {functionId: "support-bot"} -> gen_ai.agent.name (span name: the model,
    # or the functionId with new OpenTelemetry({agentSpanName: "functionId"}))
    for name in ("invoke_agent gpt-4o", "invoke_agent support-bot"):
        record = normalize({**rolled_up(100, 50), "gen_ai.agent.name": "support-bot"},
                           name=name)
        assert (record.kind, record.agent_id) == (AGENT, "support-bot")


def test_an_agent_span_the_application_names_still_takes_its_id_from_its_name():
    # agentSpanName: a callback's name, or an application's own span: not the model
    record = normalize(ROOT, name="invoke_agent support-bot")
    assert (record.kind, record.agent_id) == (AGENT, "support-bot")
    plain = normalize({"gen_ai.operation.name": "invoke_agent"}, name="invoke_agent gpt-4o")
    assert (plain.kind, plain.agent_id) == (AGENT, "gpt-4o")  # no model named: as before


def test_the_chat_span_is_the_model_call_and_the_step_is_context():
    record = normalize(chat(100, 50, **{"gen_ai.usage.cache_read.input_tokens": 20}),
                       name="chat gpt-4o")
    assert (record.kind, record.input_tokens, record.output_tokens,
            record.cache_read_tokens) == (MODEL, 100, 50, 20)
    assert normalize(STEP, name="step 1").kind == OTHER


def test_time_to_first_chunk_of_a_streamed_call_is_read_in_seconds():
    record = normalize(chat(100, 50, **{"gen_ai.client.operation.time_to_first_chunk": 0.136}),
                       name="chat gpt-4o")
    assert record.time_to_first_token_ns == 136_000_000


# -- whole traces, both runtimes --------------------------------------------------------------


def span(p, name: str, attrs: dict):
    return p.tracer.start_as_current_span(name, attributes=attrs)


def ai_sdk_7_call(p, root_extra: dict | None = None) -> None:
    """One generateText with a tool: step 1 calls `lookup` (40/8), step 2 answers (100/50);
    the root repeats the total (140/58)."""
    with span(p, "invoke_agent gpt-4o", rolled_up(140, 58, **(root_extra or {}))):
        with span(p, "step 1", STEP):
            with span(p, "chat gpt-4o", chat(40, 8)):
                pass
            with span(p, "execute_tool lookup", {"gen_ai.operation.name": "execute_tool",
                                                 "gen_ai.tool.name": "lookup"}):
                pass
        with span(p, "step 2", STEP):
            with span(p, "chat gpt-4o", chat(100, 50)):
                pass


def agents(p) -> dict:
    return {dict(k)["agent"]: v for k, v in p.samples("llm_agent_invocations_total").items()}


def test_a_call_outside_any_agent_counts_its_steps_once_and_no_agent(quick_runtime):
    p = quick_runtime()
    ai_sdk_7_call(p)
    p.wait_closed(1)
    assert p.tokens(TOKENS, tenant="acme", model="gpt-4o") == 140 + 58
    assert p.value("llm_model_requests_total", tenant="acme", model="gpt-4o", outcome="ok") == 2
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 198
    assert agents(p) == {}
    assert p.samples("llm_agent_tokens_total") == {}
    assert p.value("llm_service_calls_total", tenant="acme", service="direct") == 2
    assert sum(p.samples("llm_unclassified_usage_tokens_total").values()) == 0


def test_a_call_inside_the_applications_agent_is_that_agents(quick_runtime):
    p = quick_runtime()
    with span(p, "invoke_agent support-bot", {"gen_ai.operation.name": "invoke_agent",
                                              "gen_ai.agent.id": "support-bot"}):
        ai_sdk_7_call(p)
    p.wait_closed(1)
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 198
    assert agents(p) == {"support-bot": 1}
    assert p.tokens(TOKENS, tenant="acme", model="gpt-4o") == 198


def test_a_call_with_a_function_id_is_that_agent(quick_runtime):
    p = quick_runtime()
    ai_sdk_7_call(p, {"gen_ai.agent.name": "support-bot"})
    p.wait_closed(1)
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 198
    assert agents(p) == {"support-bot": 1}
    assert p.tokens(TOKENS, tenant="acme", model="gpt-4o") == 198  # the root's total: not added


def test_an_embed_call_counts_one_request(quick_runtime):
    p = quick_runtime()
    embeddings = {"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
                  "gen_ai.request.model": "text-embedding-3-small",
                  "ai.settings.context.userId": "alice"}
    with span(p, "embeddings text-embedding-3-small", embeddings):
        with span(p, "embeddings text-embedding-3-small",
                  {**embeddings, "gen_ai.usage.input_tokens": 12}):
            pass
    p.wait_closed(1)
    assert p.tokens(TOKENS, tenant="acme", model="text-embedding-3-small") == 12
    assert p.value("llm_model_requests_total", tenant="acme", model="text-embedding-3-small",
                   outcome="ok") == 1


EMBEDDINGS = {"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
              "gen_ai.request.model": "text-embedding-3-small",
              "ai.settings.context.userId": "alice"}


def requests_of(p, model: str) -> dict[str, int]:
    return {outcome: int(p.value("llm_model_requests_total", tenant="acme", model=model,
                                 outcome=outcome)) for outcome in ("ok", "error")}


def test_an_embed_many_call_counts_each_request_inside_it(quick_runtime):
    # embedMany: one root span around one span per request the SDK made (each with usage)
    p = quick_runtime()
    with span(p, "embeddings text-embedding-3-small", EMBEDDINGS):
        for tokens in (12, 30):
            with span(p, "embeddings text-embedding-3-small",
                      {**EMBEDDINGS, "gen_ai.usage.input_tokens": tokens}):
                pass
    p.wait_closed(1)
    assert p.tokens(TOKENS, tenant="acme", model="text-embedding-3-small") == 42
    assert requests_of(p, "text-embedding-3-small") == {"ok": 2, "error": 0}


def test_a_failed_embed_call_counts_one_error(quick_runtime):
    # both spans fail and report no usage: the request inside is the one error
    from opentelemetry.trace import Status, StatusCode

    p = quick_runtime()
    with span(p, "embeddings text-embedding-3-small", EMBEDDINGS) as root:
        with span(p, "embeddings text-embedding-3-small", EMBEDDINGS) as inner:
            inner.set_status(Status(StatusCode.ERROR))
        root.set_status(Status(StatusCode.ERROR))
    p.wait_closed(1)
    assert requests_of(p, "text-embedding-3-small") == {"ok": 0, "error": 1}


def test_a_model_call_without_usage_and_no_call_inside_is_still_a_request(quick_runtime):
    # a streamed call without include_usage: no usage, but one request
    p = quick_runtime()
    with span(p, "agent", {"gen_ai.operation.name": "invoke_agent",
                           "gen_ai.agent.id": "support-bot", "enduser.id": "alice"}):
        with span(p, "chat gpt-4o", {"gen_ai.operation.name": "chat",
                                     "gen_ai.request.model": "gpt-4o"}):
            pass
    p.wait_closed(1)
    assert requests_of(p, "gpt-4o") == {"ok": 1, "error": 0}
