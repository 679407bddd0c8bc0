"""``traceloop-sdk`` (OpenLLMetry) through our processor.

``Traceloop.init(processor=...)`` puts our processor into the TracerProvider it builds;
its ``@agent``, ``@workflow`` and ``@tool`` decorators make the agent, workflow and tool
spans (``traceloop.span.kind``, ``traceloop.entity.name``), its OpenAI instrumentation the
model-call spans, and the association properties ``user_id``/``tenant_id`` reach every
span started after they are set. Traceloop has no chat-workflow marker: that support-chat
is support-bot's chat workflow comes from the directory.
"""

from __future__ import annotations

import os

# Before traceloop is imported: no metrics pipeline to a vendor, no anonymous telemetry.
os.environ.setdefault("TRACELOOP_METRICS_ENABLED", "false")
os.environ.setdefault("TRACELOOP_TELEMETRY", "false")

from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import openai  # noqa: E402
import pytest  # noqa: E402
from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from prometheus_client import CollectorRegistry  # noqa: E402
from traceloop.sdk import Traceloop  # noqa: E402
from traceloop.sdk.decorators import agent, tool, workflow  # noqa: E402
from traceloop.sdk.instruments import Instruments  # noqa: E402

from otel_processor import TokenAttributionProcessor  # noqa: E402
from tests.fakes.openai_server import Usage  # noqa: E402
from tests.instrumentation.conftest import (  # noqa: E402
    CACHED,
    DIRECTORY,
    Readout,
    Relay,
    chat,
    embed,
    io,
    stream,
    worked_example_expected,
)

pytestmark = pytest.mark.instrumentation


@pytest.fixture(scope="session")
def relay() -> Relay:
    relay = Relay()
    Traceloop.init(
        app_name="llm-token-exporter-tests",
        processor=relay,
        disable_batch=True,
        telemetry_enabled=False,
        instruments={Instruments.OPENAI},  # only what we drive: no requests/urllib3 spans
    )
    return relay


class _Pipeline:
    def __init__(self, relay: Relay) -> None:
        self.registry = CollectorRegistry()
        self.processor = TokenAttributionProcessor(
            directory=str(DIRECTORY), prices=None, registry=self.registry
        )
        self.captured = InMemorySpanExporter()
        relay.targets = (self.processor, SimpleSpanProcessor(self.captured))
        self.readout = Readout(self.registry, self.captured)

    def check(self, expected: dict[str, dict[tuple[str, ...], int]]) -> None:
        assert self.processor.force_flush(10_000)  # the processor counts on its worker
        self.readout.check(expected)


@pytest.fixture
def pipeline(relay: Relay) -> Iterator[_Pipeline]:
    # Association properties are attached to the context and never detached by traceloop:
    # run each test in a context of its own so none leaks into the next.
    token = otel_context.attach(otel_context.Context())
    p = _Pipeline(relay)
    try:
        yield p
    finally:
        relay.targets = ()
        p.processor.shutdown()
        otel_context.detach(token)


def as_caller(user: str | None = None, tenant: str | None = None) -> None:
    """What an application does per request, before it enters its agent or workflow."""
    props = {}
    if user is not None:
        props["user_id"] = user
    if tenant is not None:
        props["tenant_id"] = tenant
    Traceloop.set_association_properties(props)


# -- the application: traceloop-decorated functions --------------------------------------


@workflow(name="support-chat")
def support_chat(client: openai.OpenAI, usage: Usage | None = None) -> None:
    chat(client, "gpt-4o", usage)


@workflow(name="summarize")
def summarize(client: openai.OpenAI, usage: Usage | None = None) -> None:
    chat(client, "gpt-4o-mini", usage)


@tool(name="summarizer")
def summarizer(client: openai.OpenAI) -> None:
    summarize(client)


@agent(name="support-bot")
def support_bot(client: openai.OpenAI, usage: Usage | None = None, use_tool: bool = False):
    support_chat(client, usage)
    if use_tool:
        summarizer(client)


@agent(name="support-bot")
def support_bot_direct(client: openai.OpenAI, usage: Usage | None = None) -> None:
    chat(client, "gpt-4o", usage)


@workflow(name="translate")
def translate(client: openai.OpenAI) -> None:
    chat(client, "qwen-max")
    summarize(client, Usage(10, 5))


# -- tests --------------------------------------------------------------------------------


def test_worked_example_counts_exactly_through_traceloop_decorators(pipeline, client):
    as_caller("alice", "acme")
    support_bot(client, use_tool=True)  # trace 1: gpt-4o 100/50 + gpt-4o-mini 200/20
    as_caller("bob", "acme")
    translate(client)  # trace 2: qwen-max 30/30 + gpt-4o-mini 10/5
    as_caller("dave")
    support_bot(client, Usage(1000, 500))  # trace 3: dave is in no tenant
    as_caller("carol", "globex")
    support_bot_direct(client, Usage(7, 3))  # trace 4

    pipeline.check(worked_example_expected())


def test_streamed_chat_with_include_usage_counts_the_final_usage_chunk(pipeline, client):
    @workflow(name="summarize")
    def streamed_summary() -> list[Any]:
        return stream(client, "gpt-4o", include_usage=True)

    as_caller("alice", "acme")
    chunks = streamed_summary()
    assert chunks[-1].usage.completion_tokens == 50

    pipeline.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_workflow_tokens_total": io("acme", "summarize", input=100, output=50),
            "llm_member_tokens_total": io("acme", "alice", input=100, output=50),
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
        }
    )


def test_streamed_chat_without_include_usage_reports_no_tokens(pipeline, client):
    # traceloop 0.62.4 does not estimate a stream's tokens (no tiktoken): nothing is
    # reported, nothing is invented.
    @workflow(name="summarize")
    def streamed_summary() -> None:
        stream(client, "gpt-4o", include_usage=False)

    as_caller("alice", "acme")
    streamed_summary()

    pipeline.check(
        {
            "llm_model_tokens_total": {},
            "llm_unattributed_tokens_total": {},
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
        }
    )


def test_embeddings_count_as_input_tokens_only(pipeline, client):
    @workflow(name="summarize")
    def index_documents() -> None:
        embed(client)

    as_caller("bob", "acme")
    index_documents()

    pipeline.check(
        {
            "llm_model_tokens_total": io("acme", "text-embedding-3-small", input=12),
            "llm_model_cache_tokens_total": {},
            "llm_workflow_tokens_total": io("acme", "summarize", input=12),
            "llm_member_tokens_total": io("acme", "bob", input=12),
        }
    )


def test_cached_prompt_tokens_count_as_cache_read_inside_input(pipeline, client):
    # traceloop reports gen_ai.usage.cache_read.input_tokens from
    # prompt_tokens_details.cached_tokens, and input_tokens including them.
    as_caller("alice", "acme")
    support_bot_direct(client, CACHED)

    pipeline.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=1200, output=80),
            "llm_model_cache_tokens_total": {("acme", "gpt-4o", "read"): 1024},
            "llm_agent_tokens_total": io("acme", "support-bot", input=1200, output=80),
            "llm_member_tokens_total": io("acme", "alice", input=1200, output=80),
        }
    )


def test_a_caller_outside_the_billing_tenant_is_unattributed_not_member(pipeline, client):
    as_caller("carol", "acme")  # carol is globex's
    support_bot_direct(client)  # gpt-4o 150
    as_caller("dave")  # in no tenant
    summarize(client)  # gpt-4o-mini 220
    as_caller()  # no caller at all
    translate(client)  # 60 + 15

    pipeline.check(
        {
            "llm_model_tokens_total": {},
            "llm_agent_tokens_total": {},
            "llm_member_tokens_total": {},
            "llm_unattributed_tokens_total": {("not_member",): 150 + 220, ("no_caller",): 75},
        }
    )


def test_chat_workflow_tokens_count_for_the_agent_not_the_workflow(pipeline, client):
    as_caller("alice", "acme")
    support_bot(client)  # support-bot -> support-chat (a chatflow in the directory) -> gpt-4o

    pipeline.check(
        {
            "llm_agent_tokens_total": io("acme", "support-bot", input=100, output=50),
            "llm_workflow_tokens_total": {},
            "llm_workflow_runs_total": {},
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
            "llm_agent_users": {("acme", "support-bot"): 1},
        }
    )


def test_a_bound_chat_workflow_without_an_agent_span_stands_for_its_agent(pipeline, client):
    as_caller("bob", "acme")
    support_chat(client)  # no @agent above: the directory binds support-chat to support-bot

    pipeline.check(
        {
            "llm_agent_tokens_total": io("acme", "support-bot", input=100, output=50),
            "llm_workflow_tokens_total": {},
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
        }
    )


def test_a_failed_call_counts_an_error_request_and_no_tokens(pipeline, client):
    @workflow(name="summarize")
    def broken() -> None:
        with pytest.raises(openai.NotFoundError):
            chat(client, "no-such-model")

    as_caller("alice", "acme")
    broken()

    pipeline.check(
        {
            "llm_model_tokens_total": {},
            "llm_model_requests_total": {("acme", "no-such-model", "error"): 1},
            "llm_workflow_runs_total": {("acme", "summarize"): 1},
        }
    )
