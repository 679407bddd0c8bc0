"""LangChain and LangGraph, traced by traceloop-sdk 0.62.4 and its LangChain instrumentation
(``opentelemetry-instrumentation-langchain`` 0.62.4), through both runtimes.

What traceloop writes for a LangGraph run (EMITTED.md has the whole record):

- its wrapper of ``Pregel.stream`` opens ``invoke_agent <graph>`` (``gen_ai.operation.name=
  invoke_agent``, ``gen_ai.agent.name=<graph>``, ``gen_ai.provider.name=langgraph``), the
  graph being ``LangGraph`` unless compiled with ``name=``;
- under it the graph's root chain run is ``<graph>.workflow`` (``traceloop.span.kind=
  workflow``, ``traceloop.entity.name=<graph>``, but also ``gen_ai.operation.name=
  invoke_agent`` and ``gen_ai.agent.id=<the run's uuid>``, provider ``langgraph``);
- each node is ``execute_task <node>`` (``traceloop.span.kind=task``), a node called
  ``agent`` included;
- each chat model call is ``ChatOpenAI.chat`` (``gen_ai.operation.name=chat``, the usage in
  ``gen_ai.usage.*``); no other span repeats its totals, and traceloop's OpenAI
  instrumentation makes no second span for the same call (it is suppressed);
- the run's ``config={"metadata": {...}}`` is written on every span of the run as
  ``traceloop.association.properties.<key>``, as ``Traceloop.set_association_properties``.

What we count (attribution.md, "LangChain and LangGraph"): the caller and tenant from the
association properties ``user_id`` and ``tenant_id``; the two spans traceloop writes for the
graph itself are no agent and no workflow (a graph is no agent by itself, and its tokens
never land on an agent or workflow ``LangGraph``, nor on one agent per run id); a graph is
an agent, or a workflow, when the application opens one around it (``@agent``,
``@workflow``, or an ``invoke_agent`` span with ``gen_ai.agent.id``).

Runtimes: ``in_process`` (our processor behind traceloop's) and ``service`` (OTLP/HTTP to a
real ``llm-token-exporter serve`` on 127.0.0.1).
"""

from __future__ import annotations

import os

# Before traceloop is imported: no metrics pipeline to a vendor, no anonymous telemetry.
os.environ.setdefault("TRACELOOP_METRICS_ENABLED", "false")
os.environ.setdefault("TRACELOOP_TELEMETRY", "false")

from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import SpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from prometheus_client import CollectorRegistry  # noqa: E402
from traceloop.sdk import Traceloop  # noqa: E402
from traceloop.sdk.decorators import agent, workflow  # noqa: E402
from traceloop.sdk.instruments import Instruments  # noqa: E402

from otel_processor import TokenAttributionProcessor  # noqa: E402
from tests.instrumentation.conftest import CACHED, DIRECTORY, Exporter, Readout, Relay, chat, io  # noqa: E402
from tests.instrumentation.langgraph_app import model, support_graph  # noqa: E402

pytestmark = pytest.mark.instrumentation

ALICE = {"user_id": "alice", "tenant_id": "acme"}
#: The service split's labels, in the order Readout gives labels it does not know (sorted).
SERVICE = "llm_service_tokens_total"


@pytest.fixture(scope="session")
def relay() -> Relay:
    relay = Relay()
    Traceloop.init(
        app_name="llm-token-exporter-tests",
        processor=relay,
        disable_batch=True,
        telemetry_enabled=False,
        # LangChain's instrumentation, and OpenAI's too, as a default init would have it:
        # the model call must still make one span, not two.
        instruments={Instruments.LANGCHAIN, Instruments.OPENAI},
    )
    return relay


class Runtime:
    """Our counters behind traceloop's provider: in process, or a real service."""

    def __init__(self, runtime: str, relay: Relay) -> None:
        self.captured = InMemorySpanExporter()
        self._server = None
        if runtime == "in_process":
            self.registry = CollectorRegistry()
            self.processor: SpanProcessor = TokenAttributionProcessor(
                directory=str(DIRECTORY), prices=None, registry=self.registry
            )
        else:
            self._server = Exporter()
            self.registry = self._server.registry
            self.processor = self._server.span_processor()
        self._relay = relay
        relay.targets = (self.processor, SimpleSpanProcessor(self.captured))
        self.readout = Readout(self.registry, self.captured)

    def check(self, expected: dict[str, dict[tuple[str, ...], int]]) -> None:
        assert self.processor.force_flush(10_000)
        self.readout.check(expected)

    def spans(self, name: str) -> list[Any]:
        return [s for s in self.captured.get_finished_spans() if s.name == name]

    def close(self) -> None:
        self._relay.targets = ()
        self.processor.shutdown()
        if self._server is not None:
            self._server.close()


@pytest.fixture(params=["in_process", "service"])
def runtime(request, relay) -> Iterator[Runtime]:
    # Association properties are attached to the context and never detached by traceloop:
    # each test runs in a context of its own so none leaks into the next.
    token = otel_context.attach(otel_context.Context())
    made = Runtime(request.param, relay)
    try:
        yield made
    finally:
        made.close()
        otel_context.detach(token)


def as_caller(user: str | None = None, tenant: str | None = None) -> None:
    """What an application does per request, before it enters its agent or workflow."""
    props = {}
    if user is not None:
        props["user_id"] = user
    if tenant is not None:
        props["tenant_id"] = tenant
    Traceloop.set_association_properties(props)


def both_nodes(tenant: str = "acme", member: str = "alice", runs: int = 1) -> dict:
    """One graph run's model, member and request series: gpt-4o 100/50 + gpt-4o-mini 200/20."""
    return {
        "llm_model_tokens_total": {
            **io(tenant, "gpt-4o", input=100 * runs, output=50 * runs),
            **io(tenant, "gpt-4o-mini", input=200 * runs, output=20 * runs),
        },
        "llm_member_tokens_total": io(tenant, member, input=300 * runs, output=70 * runs),
        "llm_model_requests_total": {
            (tenant, "gpt-4o", "ok"): runs, (tenant, "gpt-4o-mini", "ok"): runs,
        },
        "llm_unattributed_tokens_total": {},
        "llm_unclassified_usage_tokens_total": {},
    }


def service(name: str, tenant: str = "acme", input: int = 300, output: int = 70) -> dict:  # noqa: A002
    return {(name, tenant, "input"): input, (name, tenant, "output"): output}


# -- tests --------------------------------------------------------------------------------


def test_a_chat_model_call_reads_the_caller_from_the_association_properties(
    runtime, fake_openai
):
    model(fake_openai).invoke("How do I reset my password?", config={"metadata": ALICE})
    as_caller("bob")  # acme, his only tenant
    model(fake_openai, "qwen-max").invoke("hi")

    runtime.check(
        {
            "llm_model_tokens_total": {
                **io("acme", "gpt-4o", input=100, output=50),
                **io("acme", "qwen-max", input=30, output=30),
            },
            "llm_member_tokens_total": {
                **io("acme", "alice", input=100, output=50),
                **io("acme", "bob", input=30, output=30),
            },
            "llm_agent_tokens_total": {},
            "llm_unattributed_tokens_total": {},
            SERVICE: {**service("direct", input=130, output=80)},
        }
    )
    first, second = runtime.spans("ChatOpenAI.chat")
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.request.model"] == "gpt-4o"
    assert first.attributes["traceloop.association.properties.user_id"] == "alice"
    assert second.attributes["traceloop.association.properties.user_id"] == "bob"
    # traceloop's OpenAI instrumentation is suppressed under LangChain's: one span a call
    assert runtime.spans("openai.chat") == []


def test_the_openai_instrumentation_is_on_and_counts_a_direct_call_once(
    runtime, fake_openai, client
):
    # (so the single span above is LangChain's suppression at work, not an idle instrumentor)
    as_caller("alice", "acme")
    chat(client, "gpt-4o-mini")
    model(fake_openai).invoke("hi")

    runtime.check(
        {
            "llm_model_tokens_total": {
                **io("acme", "gpt-4o-mini", input=200, output=20),
                **io("acme", "gpt-4o", input=100, output=50),
            },
            "llm_model_requests_total": {("acme", "gpt-4o-mini", "ok"): 1,
                                         ("acme", "gpt-4o", "ok"): 1},
        }
    )
    assert len(runtime.spans("openai.chat")) == 1
    assert len(runtime.spans("ChatOpenAI.chat")) == 1


def test_a_langchain_chain_is_no_agent_and_no_workflow(runtime, fake_openai):
    # traceloop makes a root chain "<chain>.workflow" with gen_ai.operation.name=invoke_agent
    # and provider langchain, whatever the chain.
    chain = ChatPromptTemplate.from_messages([("user", "{question}")]) | model(fake_openai)
    chain.invoke({"question": "hi"}, config={"metadata": ALICE})

    runtime.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_member_tokens_total": io("acme", "alice", input=100, output=50),
            "llm_agent_tokens_total": {},
            "llm_agent_invocations_total": {},
            "llm_workflow_tokens_total": {},
            "llm_workflow_runs_total": {},
            SERVICE: service("direct", input=100, output=50),
        }
    )
    (root,) = runtime.spans("RunnableSequence.workflow")
    assert root.attributes["traceloop.span.kind"] == "workflow"
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.provider.name"] == "langchain"


def test_cached_prompt_tokens_count_as_cache_read_inside_input(runtime, fake_openai):
    model(fake_openai, usage=CACHED).invoke("hi", config={"metadata": ALICE})

    runtime.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=1200, output=80),
            "llm_model_cache_tokens_total": {("acme", "gpt-4o", "read"): 1024},
            "llm_member_tokens_total": io("acme", "alice", input=1200, output=80),
        }
    )
    (span,) = runtime.spans("ChatOpenAI.chat")
    assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == 1024


def test_a_langgraph_graph_is_no_agent_and_no_workflow_by_itself(runtime, fake_openai):
    support_graph(fake_openai).invoke({"question": "hi"}, config={"metadata": ALICE})
    as_caller("carol")  # globex, her only tenant
    support_graph(fake_openai).invoke({"question": "hi"})

    runtime.check(
        {
            **both_nodes(),
            "llm_model_tokens_total": {
                **both_nodes()["llm_model_tokens_total"],
                **both_nodes("globex")["llm_model_tokens_total"],
            },
            "llm_member_tokens_total": {
                **io("acme", "alice", input=300, output=70),
                **io("globex", "carol", input=300, output=70),
            },
            "llm_model_requests_total": {
                **both_nodes()["llm_model_requests_total"],
                **both_nodes("globex")["llm_model_requests_total"],
            },
            "llm_agent_tokens_total": {},
            "llm_agent_invocations_total": {},
            "llm_agent_users": {},
            "llm_workflow_tokens_total": {},
            "llm_workflow_runs_total": {},
            SERVICE: {**service("direct"), **service("direct", "globex")},
        }
    )
    # What traceloop wrote, and what made the graph an agent "LangGraph" (and one agent per
    # run id) before the conventions knew it.
    wrapper = runtime.spans("invoke_agent LangGraph")[0]
    assert wrapper.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert wrapper.attributes["gen_ai.agent.name"] == "LangGraph"
    assert wrapper.attributes["gen_ai.provider.name"] == "langgraph"
    root = runtime.spans("LangGraph.workflow")[0]
    assert root.parent.span_id == wrapper.context.span_id
    assert root.attributes["traceloop.span.kind"] == "workflow"
    assert root.attributes["traceloop.entity.name"] == "LangGraph"
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.provider.name"] == "langgraph"
    assert len(root.attributes["gen_ai.agent.id"]) == 36  # the run's uuid
    node = runtime.spans("execute_task agent")[0]  # the node "agent" is a task
    assert node.attributes["traceloop.span.kind"] == "task"
    assert node.attributes["traceloop.association.properties.langgraph_node"] == "agent"
    assert "gen_ai.usage.input_tokens" not in root.attributes  # no totals repeated


def test_a_graph_named_after_an_agent_is_still_no_agent(runtime, fake_openai):
    # compile(name=...) names both graph spans ("invoke_agent support-bot", with
    # gen_ai.agent.name=support-bot); metadata.agent_id becomes an association property.
    graph = support_graph(fake_openai, name="support-bot")
    graph.invoke({"question": "hi"}, config={"metadata": {**ALICE, "agent_id": "support-bot"}})

    runtime.check(
        {
            **both_nodes(),
            "llm_agent_tokens_total": {},
            "llm_agent_invocations_total": {},
            "llm_workflow_tokens_total": {},
            "llm_workflow_runs_total": {},
        }
    )
    (wrapper,) = runtime.spans("invoke_agent support-bot")
    assert wrapper.attributes["gen_ai.agent.name"] == "support-bot"
    assert runtime.spans("support-bot.workflow")[0].attributes["gen_ai.agent.name"] == (
        "support-bot"
    )


def test_an_agent_around_the_graph_makes_the_graph_that_agent(runtime, fake_openai):
    graph = support_graph(fake_openai)

    @agent(name="support-bot")
    def support_bot() -> Any:
        return graph.invoke({"question": "hi"})

    # a plain OpenTelemetry agent span, the caller in the run metadata (first: traceloop
    # never detaches association properties, as_caller's tenant would stay for carol)
    with trace.get_tracer("tests.instrumentation").start_as_current_span(
        "invoke_agent support-bot",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "support-bot"},
    ):
        graph.invoke({"question": "hi"}, config={"metadata": {"user_id": "carol"}})
    as_caller("alice", "acme")
    support_bot()

    runtime.check(
        {
            "llm_model_tokens_total": {
                **both_nodes()["llm_model_tokens_total"],
                **both_nodes("globex")["llm_model_tokens_total"],
            },
            "llm_agent_tokens_total": {
                **io("acme", "support-bot", input=300, output=70),
                **io("globex", "support-bot", input=300, output=70),
            },
            "llm_member_tokens_total": {
                **io("acme", "alice", input=300, output=70),
                **io("globex", "carol", input=300, output=70),
            },
            # one invocation per run: the graph's own spans are no sub-agents
            "llm_agent_invocations_total": {("acme", "support-bot"): 2},
            "llm_workflow_tokens_total": {},
            "llm_workflow_runs_total": {},
            SERVICE: {**service("agent"), **service("agent", "globex")},
            "llm_unclassified_usage_tokens_total": {},
        }
    )
    (outer,) = runtime.spans("support-bot.agent")
    assert outer.attributes["traceloop.span.kind"] == "agent"
    assert outer.attributes["traceloop.entity.name"] == "support-bot"
    wrapper = runtime.spans("invoke_agent LangGraph")[1]
    assert wrapper.parent.span_id == outer.context.span_id
    # traceloop copies the enclosing @agent's name onto the spans of the run
    assert runtime.spans("ChatOpenAI.chat")[2].attributes["gen_ai.agent.name"] == "support-bot"


def test_a_workflow_around_the_graph_makes_the_graph_that_workflow(runtime, fake_openai):
    graph = support_graph(fake_openai)

    @workflow(name="summarize")
    def summarize() -> Any:
        return graph.invoke({"question": "hi"})

    as_caller("bob", "acme")
    summarize()
    summarize()

    runtime.check(
        {
            **both_nodes(member="bob", runs=2),
            "llm_workflow_tokens_total": io("acme", "summarize", input=600, output=140),
            "llm_workflow_runs_total": {("acme", "summarize"): 2},
            "llm_agent_tokens_total": {},
            "llm_agent_invocations_total": {},
            SERVICE: service("workflow", input=600, output=140),
        }
    )
    (outer, _) = runtime.spans("summarize.workflow")
    assert outer.attributes["traceloop.span.kind"] == "workflow"
    assert outer.attributes["traceloop.entity.name"] == "summarize"


def test_a_caller_and_tenant_on_an_application_span_count_for_the_graph(runtime, fake_openai):
    # An application span (a request handler) naming the caller with plain attributes.
    with trace.get_tracer("tests.instrumentation").start_as_current_span(
        "POST /chat", attributes={"enduser.id": "alice", "tenant.id": "acme"}
    ):
        support_graph(fake_openai).invoke({"question": "hi"})
    with trace.get_tracer("tests.instrumentation").start_as_current_span(
        "POST /chat", attributes={"enduser.id": "carol", "tenant.id": "acme"}  # not acme's
    ):
        support_graph(fake_openai).invoke({"question": "hi"})

    runtime.check(
        {
            **both_nodes(),
            "llm_unattributed_tokens_total": {("not_member",): 370},
            "llm_agent_tokens_total": {},
        }
    )
