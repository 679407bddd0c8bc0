"""``openinference-instrumentation-openai`` (Arize Phoenix) through our processor.

OpenInference's instrumentation makes the model-call spans (``openinference.span.kind``
``LLM``/``EMBEDDING``, ``llm.token_count.*``) and copies ``using_attributes(user_id=...,
session_id=..., metadata={"tenant_id": ...})`` onto every span it makes. The application's
own spans come from OpenInference's ``TracerProvider``/``OITracer``, which copies the same
context attributes: agents are ``AGENT`` spans with ``agent.name``. OpenInference has no
workflow kind, so a workflow is a ``CHAIN`` span that says it is one with our
conventions (``gen_ai.operation.name=invoke_workflow``, ``gen_ai.workflow.id``).

OpenInference records the *response* model in ``llm.model_name`` (the requested one only
inside the JSON ``llm.invocation_parameters``), so most tests use a server that answers with
the requested name; the dated-snapshot case is its own (expected-to-fail) test below.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from openinference.instrumentation import TracerProvider as OITracerProvider
from openinference.instrumentation import using_attributes
from openinference.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.trace import Tracer

from tests.fakes.openai_server import FakeOpenAIServer, Usage
from tests.instrumentation.conftest import (
    CACHED,
    USAGE,
    Pipeline,
    chat,
    embed,
    io,
    stream,
    worked_example_expected,
)

pytestmark = pytest.mark.instrumentation


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """Answers with the requested model name (no dated snapshot); see the module doc."""
    with FakeOpenAIServer(USAGE, snapshot_suffix="") as server:
        yield server


@pytest.fixture
def instrumented(pipeline) -> Iterator[Any]:
    """``instrumented() -> Pipeline`` with the OpenAI client instrumented by OpenInference."""
    instrumentor = OpenAIInstrumentor()

    def make() -> Pipeline:
        p = pipeline(provider_class=OITracerProvider)
        instrumentor.instrument(tracer_provider=p.provider)
        return p

    yield make
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@contextmanager
def caller(user: str, tenant: str | None = None, session: str = "conv-1") -> Iterator[None]:
    metadata = {"tenant_id": tenant} if tenant is not None else {}
    with using_attributes(user_id=user, session_id=session, metadata=metadata):
        yield


@contextmanager
def agent(tracer: Tracer, agent_id: str) -> Iterator[None]:
    with tracer.start_as_current_span(
        agent_id, openinference_span_kind="agent", attributes={"agent.name": agent_id}
    ):
        yield


@contextmanager
def workflow(tracer: Tracer, workflow_id: str, chatflow: bool = False) -> Iterator[None]:
    attrs = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.id": workflow_id}
    if chatflow:
        attrs["gen_ai.workflow.type"] = "chatflow"
    with tracer.start_as_current_span(
        workflow_id, openinference_span_kind="chain", attributes=attrs
    ):
        yield


@contextmanager
def tool(tracer: Tracer, name: str) -> Iterator[None]:
    with tracer.start_as_current_span(
        name, openinference_span_kind="tool", attributes={"tool.name": name}
    ):
        yield


# -- tests --------------------------------------------------------------------------------


def test_worked_example_counts_exactly_through_openinference(instrumented, client):
    p = instrumented()
    t = p.tracer
    with caller("alice", "acme"), agent(t, "support-bot"):  # trace 1
        with workflow(t, "support-chat", chatflow=True):
            chat(client, "gpt-4o")  # 100, 50
        with tool(t, "summarizer"), workflow(t, "summarize"):
            chat(client, "gpt-4o-mini")  # 200, 20
    with caller("bob", "acme"), workflow(t, "translate"):  # trace 2
        chat(client, "qwen-max")  # 30, 30
        with workflow(t, "summarize"):
            chat(client, "gpt-4o-mini", Usage(10, 5))
    with caller("dave"), agent(t, "support-bot"):  # trace 3: dave is in no tenant
        with workflow(t, "support-chat", chatflow=True):
            chat(client, "gpt-4o", Usage(1000, 500))
    with caller("carol", "globex"), agent(t, "support-bot"):  # trace 4
        chat(client, "gpt-4o", Usage(7, 3))

    p.check(worked_example_expected())


def test_streamed_chat_with_include_usage_counts_the_final_usage_chunk(instrumented, client):
    p = instrumented()
    with caller("alice", "acme"), workflow(p.tracer, "summarize"):
        chunks = stream(client, "gpt-4o", include_usage=True)
    assert chunks[-1].usage.total_tokens == 150

    p.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_workflow_tokens_total": io("acme", "summarize", input=100, output=50),
            "llm_member_tokens_total": io("acme", "alice", input=100, output=50),
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
        }
    )


def test_streamed_chat_without_include_usage_reports_no_tokens(instrumented, client):
    p = instrumented()
    with caller("alice", "acme"), workflow(p.tracer, "summarize"):
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
    with caller("bob", "acme"), workflow(p.tracer, "summarize"):
        embed(client)

    p.check(
        {
            "llm_model_tokens_total": io("acme", "text-embedding-3-small", input=12),
            "llm_workflow_tokens_total": io("acme", "summarize", input=12),
            "llm_member_tokens_total": io("acme", "bob", input=12),
        }
    )


def test_cached_prompt_tokens_count_as_cache_read_inside_input(instrumented, client):
    # llm.token_count.prompt_details.cache_read, part of llm.token_count.prompt
    p = instrumented()
    with caller("alice", "acme"), agent(p.tracer, "support-bot"):
        chat(client, "gpt-4o", CACHED)
        stream(client, "gpt-4o", CACHED)

    p.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=2400, output=160),
            "llm_model_cache_tokens_total": {("acme", "gpt-4o", "read"): 2048},
            "llm_agent_tokens_total": io("acme", "support-bot", input=2400, output=160),
        }
    )


def test_a_caller_outside_the_billing_tenant_is_unattributed_not_member(instrumented, client):
    p = instrumented()
    with caller("carol", "acme"), agent(p.tracer, "support-bot"):  # carol is globex's
        chat(client, "gpt-4o")
    with caller("dave"), agent(p.tracer, "support-bot"):  # in no tenant
        chat(client, "gpt-4o-mini")
    with agent(p.tracer, "support-bot"):  # no using_attributes: no caller
        chat(client, "qwen-max")

    p.check(
        {
            "llm_model_tokens_total": {},
            "llm_member_tokens_total": {},
            "llm_unattributed_tokens_total": {("not_member",): 150 + 220, ("no_caller",): 60},
        }
    )


@pytest.mark.parametrize("typed_on_span", [True, False], ids=["type-attribute", "directory"])
def test_chat_workflow_tokens_count_for_the_agent_not_the_workflow(
    instrumented, client, typed_on_span
):
    p = instrumented()
    with caller("alice", "acme"), agent(p.tracer, "support-bot"):
        with workflow(p.tracer, "support-chat", chatflow=typed_on_span):
            chat(client, "gpt-4o")
            embed(client)

    p.check(
        {
            "llm_agent_tokens_total": io("acme", "support-bot", input=112, output=50),
            "llm_workflow_tokens_total": {},
            "llm_workflow_runs_total": {},
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
            "llm_agent_users": {("acme", "support-bot"): 1},
        }
    )


def test_a_failed_call_counts_an_error_request_and_no_tokens(instrumented, client):
    p = instrumented()
    with caller("alice", "acme"), agent(p.tracer, "support-bot"):
        with pytest.raises(openai.NotFoundError):
            chat(client, "no-such-model")

    p.check({"llm_model_tokens_total": {}, "llm_unattributed_tokens_total": {}})
    # The model label of a failed call is covered by the expected failure below.
    errors = {k: v for k, v in p.series("llm_model_requests_total").items() if k[2] == "error"}
    assert list(errors.values()) == [1] and next(iter(errors))[0] == "acme"


def test_the_model_label_is_the_requested_model_not_the_dated_snapshot(instrumented):
    p = instrumented()
    with FakeOpenAIServer(USAGE) as dated:  # answers gpt-4o-2024-08-06 for gpt-4o
        client = openai.OpenAI(base_url=dated.base_url, api_key="sk-test", max_retries=0)
        with caller("alice", "acme"), agent(p.tracer, "support-bot"):
            chat(client, "gpt-4o")
            with pytest.raises(openai.NotFoundError):
                chat(client, "no-such-model")

    p.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_model_requests_total": {
                ("acme", "gpt-4o", "ok"): 1,
                ("acme", "no-such-model", "error"): 1,
            },
        }
    )


def test_an_agent_made_with_the_oitracer_decorator_is_named_by_its_span(instrumented, client):
    p = instrumented()

    @p.tracer.agent(name="support-bot")
    def support_bot(question: str) -> str:
        return chat(client, "gpt-4o").choices[0].message.content

    with caller("alice", "acme"):
        support_bot("How do I reset my password?")

    p.check({"llm_agent_tokens_total": io("acme", "support-bot", input=100, output=50)})
