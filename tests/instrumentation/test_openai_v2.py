"""The official ``opentelemetry-instrumentation-openai-v2`` through our processor.

The instrumentation makes the model-call spans (``chat``/``embeddings``, tokens from the
response's ``usage``); the agent, workflow and tool spans are the application's own, made
here as an application would, with the caller on the root span (``enduser.id``,
``tenant.id``) or on the Resource: the instrumentation copies neither onto its spans.

Every test runs in both of the instrumentation's modes: the default (semconv 1.30:
``gen_ai.system``) and ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``
(``gen_ai.provider.name``, through opentelemetry-util-genai).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from opentelemetry.instrumentation._semconv import (
    _OpenTelemetrySemanticConventionStability as _SemconvStability,
)
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.trace import Tracer
from opentelemetry.util.genai.handler import TelemetryHandler

from tests.fakes.openai_server import Usage
from tests.instrumentation.conftest import (
    CACHED,
    Pipeline,
    chat,
    embed,
    io,
    stream,
    worked_example_expected,
)

pytestmark = pytest.mark.instrumentation

_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


@pytest.fixture(params=["default", "gen_ai_latest_experimental"])
def instrumented(request, monkeypatch, pipeline) -> Iterator[Any]:
    """``instrumented(resource=None) -> Pipeline`` with the OpenAI client instrumented."""
    if request.param == "default":
        monkeypatch.delenv(_OPT_IN, raising=False)
    else:
        monkeypatch.setenv(_OPT_IN, request.param)
    instrumentor = OpenAIInstrumentor()

    def make(resource: dict[str, Any] | None = None) -> Pipeline:
        p = pipeline(resource=resource)
        # The opt-in is read once per process; forget it so this test's mode applies.
        _SemconvStability._initialized = False
        instrumentor.instrument(tracer_provider=p.provider)
        return p

    yield make
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    _SemconvStability._initialized = False


# -- the application's own spans, as attribution.md's conventions name them -------------


def _caller(user: str | None, tenant: str | None) -> dict[str, str]:
    attrs = {}
    if user is not None:
        attrs["enduser.id"] = user
    if tenant is not None:
        attrs["tenant.id"] = tenant
    return attrs


@contextmanager
def agent(tracer: Tracer, agent_id: str, user=None, tenant=None) -> Iterator[None]:
    attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": agent_id}
    with tracer.start_as_current_span(
        f"invoke_agent {agent_id}", attributes={**attrs, **_caller(user, tenant)}
    ):
        yield


@contextmanager
def workflow(
    tracer: Tracer, workflow_id: str, chatflow: bool = False, user=None, tenant=None
) -> Iterator[None]:
    attrs = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.id": workflow_id}
    if chatflow:
        attrs["gen_ai.workflow.type"] = "chatflow"
    with tracer.start_as_current_span(
        f"invoke_workflow {workflow_id}", attributes={**attrs, **_caller(user, tenant)}
    ):
        yield


@contextmanager
def tool(tracer: Tracer, name: str) -> Iterator[None]:
    attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
    with tracer.start_as_current_span(f"execute_tool {name}", attributes=attrs):
        yield


# -- tests --------------------------------------------------------------------------------


def test_worked_example_counts_exactly_through_real_openai_calls(instrumented, client):
    p = instrumented()
    t = p.tracer
    # trace 1: alice@acme talks to support-bot; its chat workflow, then a tool that runs
    # the summarize workflow
    with agent(t, "support-bot", user="alice", tenant="acme"):
        with workflow(t, "support-chat", chatflow=True):
            chat(client, "gpt-4o")  # 100, 50
        with tool(t, "summarizer"):
            with workflow(t, "summarize"):
                chat(client, "gpt-4o-mini")  # 200, 20
    # trace 2: bob@acme runs translate, which runs summarize
    with workflow(t, "translate", user="bob", tenant="acme"):
        chat(client, "qwen-max")  # 30, 30
        with workflow(t, "summarize"):
            chat(client, "gpt-4o-mini", Usage(10, 5))
    # trace 3: dave, in no tenant
    with agent(t, "support-bot", user="dave"):
        with workflow(t, "support-chat", chatflow=True):
            chat(client, "gpt-4o", Usage(1000, 500))
    # trace 4: carol@globex
    with agent(t, "support-bot", user="carol", tenant="globex"):
        chat(client, "gpt-4o", Usage(7, 3))

    p.check(worked_example_expected())


def test_streamed_chat_with_include_usage_counts_the_final_usage_chunk(instrumented, client):
    p = instrumented()
    with workflow(p.tracer, "summarize", user="alice", tenant="acme"):
        chunks = stream(client, "gpt-4o", include_usage=True)
    assert chunks[-1].usage.prompt_tokens == 100  # the fake really sent the usage chunk

    p.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_workflow_tokens_total": io("acme", "summarize", input=100, output=50),
            "llm_member_tokens_total": io("acme", "alice", input=100, output=50),
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
        }
    )


def test_streamed_chat_without_include_usage_reports_no_tokens(instrumented, client):
    # OpenAI sends no usage on a stream unless asked: the instrumentation has nothing to
    # report, and we count the request without inventing tokens.
    p = instrumented()
    with workflow(p.tracer, "summarize", user="alice", tenant="acme"):
        stream(client, "gpt-4o", include_usage=False)

    p.check(
        {
            "llm_model_tokens_total": {},
            "llm_unattributed_tokens_total": {},
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
        }
    )


def test_embeddings_count_as_input_tokens_only(instrumented, client):
    p = instrumented()
    with workflow(p.tracer, "summarize", user="bob", tenant="acme"):
        embed(client)  # 12 prompt tokens

    p.check(
        {
            "llm_model_tokens_total": io("acme", "text-embedding-3-small", input=12),
            "llm_workflow_tokens_total": io("acme", "summarize", input=12),
            "llm_member_tokens_total": io("acme", "bob", input=12),
        }
    )


def test_cached_prompt_tokens_stay_inside_input_as_openai_v2_reports_no_cache_detail(
    instrumented, client
):
    # openai-v2 2.4b0 reads only prompt/completion tokens of a chat completion; its
    # cache-read attribute exists only on the (not yet wrapped) Responses API path. The
    # 1024 cached tokens are therefore counted, as input, and nothing as cache.
    p = instrumented()
    with agent(p.tracer, "support-bot", user="alice", tenant="acme"):
        chat(client, "gpt-4o", CACHED)

    p.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=1200, output=80),
            "llm_model_cache_tokens_total": {},
            "llm_agent_tokens_total": io("acme", "support-bot", input=1200, output=80),
        }
    )


def test_caller_and_tenant_are_read_from_the_resource(instrumented, client):
    # A single-user service may set the caller once, on the Resource.
    p = instrumented(resource={"enduser.id": "bob", "tenant.id": "acme"})
    chat(client, "qwen-max")

    p.check(
        {
            "llm_model_tokens_total": io("acme", "qwen-max", input=30, output=30),
            "llm_member_tokens_total": io("acme", "bob", input=30, output=30),
        }
    )


def test_a_caller_outside_the_billing_tenant_is_unattributed_not_member(instrumented, client):
    p = instrumented()
    with agent(p.tracer, "support-bot", user="carol", tenant="acme"):  # carol is globex's
        chat(client, "gpt-4o")
    with agent(p.tracer, "support-bot", user="dave"):  # dave is in no tenant
        chat(client, "gpt-4o-mini")
    with agent(p.tracer, "support-bot"):  # no caller at all
        chat(client, "qwen-max")

    p.check(
        {
            "llm_model_tokens_total": {},
            "llm_agent_tokens_total": {},
            "llm_member_tokens_total": {},
            "llm_unattributed_tokens_total": {("not_member",): 150 + 220, ("no_caller",): 60},
        }
    )


@pytest.mark.parametrize("typed_on_span", [True, False], ids=["type-attribute", "directory"])
def test_chat_workflow_tokens_count_for_the_agent_not_the_workflow(
    instrumented, client, typed_on_span
):
    # support-chat is a chat workflow either by gen_ai.workflow.type=chatflow or because
    # the directory binds it to support-bot.
    p = instrumented()
    with agent(p.tracer, "support-bot", user="alice", tenant="acme"):
        with workflow(p.tracer, "support-chat", chatflow=typed_on_span):
            chat(client, "gpt-4o")
            stream(client, "gpt-4o-mini")

    p.check(
        {
            "llm_agent_tokens_total": io("acme", "support-bot", input=300, output=70),
            "llm_workflow_tokens_total": {},
            "llm_workflow_runs_total": {},
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
        }
    )


def test_a_failed_call_counts_an_error_request_and_no_tokens(instrumented, client):
    p = instrumented()
    with agent(p.tracer, "support-bot", user="alice", tenant="acme"):
        with pytest.raises(openai.NotFoundError):
            chat(client, "no-such-model")

    p.check(
        {
            "llm_model_tokens_total": {},
            "llm_model_requests_total": {("acme", "no-such-model", "error"): 1},
        }
    )


def test_agent_and_workflow_spans_made_by_opentelemetry_util_genai(instrumented, client):
    p = instrumented()
    handler = TelemetryHandler(tracer_provider=p.provider)
    with p.tracer.start_as_current_span("request", attributes=_caller("alice", "acme")):
        with handler.invoke_local_agent("openai") as invocation:
            invocation.agent_id = "support-bot"
            with handler.workflow("summarize"):
                chat(client, "gpt-4o-mini")

    p.check(
        {
            "llm_agent_tokens_total": io("acme", "support-bot", input=200, output=20),
            "llm_workflow_tokens_total": io("acme", "summarize", input=200, output=20),
        }
    )
