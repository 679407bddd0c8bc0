"""LangChain and LangGraph, traced by ``openinference-instrumentation-langchain`` 0.1.80,
through both runtimes.

OpenInference's ``LangChainInstrumentor`` turns every LangChain run into a span: the chat
model call is an ``LLM`` span (``llm.token_count.*``, ``llm.model_name``), a LangGraph graph
root and its nodes are ``CHAIN`` spans named after the graph (``LangGraph`` unless compiled
with ``name=``) and the node, except that a run whose name contains "agent" is an ``AGENT``
span. The run's ``config={"metadata": {...}}`` is copied, as one JSON ``metadata``
attribute, onto every span of the run (``using_attributes(user_id=...)`` adds ``user.id``).

What we count (attribution.md, "LangChain and LangGraph"): the caller and tenant from
``metadata`` (``user_id``, ``tenant_id``) or ``user.id``; a ``CHAIN`` span, the graph root
included, is context and names no agent; a LangGraph node that is ``AGENT`` only by its
name (its ``metadata`` has ``langgraph_node``) is no agent either; a graph is an agent when
the application opens an agent span around it.

Runtimes: ``in_process`` (our processor on the provider) and ``service`` (OTLP/HTTP to a
real ``llm-token-exporter serve`` on 127.0.0.1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openinference.instrumentation import using_attributes
from openinference.instrumentation.langchain import LangChainInstrumentor

from tests.fakes.openai_server import FakeOpenAIServer, Usage
from tests.instrumentation.conftest import USAGE, Pipeline, io
from tests.instrumentation.langgraph_app import model, support_graph

pytestmark = pytest.mark.instrumentation

ALICE = {"user_id": "alice", "tenant_id": "acme"}


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """Answers with the requested model name (OpenInference reads the response model)."""
    with FakeOpenAIServer(USAGE, snapshot_suffix="") as server:
        yield server


@pytest.fixture(params=["in_process", "service"])
def runtime(request, pipeline) -> Iterator[Pipeline]:
    made = pipeline(runtime=request.param)  # closed by the pipeline fixture
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=made.provider)
    try:
        yield made
    finally:
        instrumentor.uninstrument()


BOTH_NODES = {
    "llm_model_tokens_total": {
        **io("acme", "gpt-4o", input=100, output=50),
        **io("acme", "gpt-4o-mini", input=200, output=20),
    },
    "llm_member_tokens_total": io("acme", "alice", input=300, output=70),
    "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1, ("acme", "gpt-4o-mini", "ok"): 1},
    "llm_unattributed_tokens_total": {},
}


# -- tests --------------------------------------------------------------------------------


def test_a_chat_model_call_reads_the_caller_from_the_run_metadata(runtime, fake_openai):
    model(fake_openai).invoke("How do I reset my password?", config={"metadata": ALICE})
    model(fake_openai, "qwen-max").invoke("hi", config={"metadata": {"user_id": "bob"}})

    runtime.check(
        {
            "llm_model_tokens_total": {
                **io("acme", "gpt-4o", input=100, output=50),
                **io("acme", "qwen-max", input=30, output=30),  # bob: acme, his only tenant
            },
            "llm_member_tokens_total": {
                **io("acme", "alice", input=100, output=50),
                **io("acme", "bob", input=30, output=30),
            },
            "llm_agent_tokens_total": {},
            "llm_unattributed_tokens_total": {},
        }
    )
    span = runtime.spans("ChatOpenAI")[0]
    assert span.attributes["openinference.span.kind"] == "LLM"
    assert '"user_id": "alice"' in span.attributes["metadata"]


def test_a_chat_model_call_reads_the_caller_from_using_attributes(runtime, fake_openai):
    with using_attributes(user_id="carol", metadata={"tenant_id": "globex"}):
        model(fake_openai, usage=Usage(7, 3)).invoke("hi")
    with using_attributes(user_id="dave"):  # in no tenant
        model(fake_openai, "gpt-4o-mini").invoke("hi")
    model(fake_openai, "qwen-max").invoke("hi")  # no caller at all

    runtime.check(
        {
            "llm_model_tokens_total": io("globex", "gpt-4o", input=7, output=3),
            "llm_member_tokens_total": io("globex", "carol", input=7, output=3),
            "llm_unattributed_tokens_total": {("not_member",): 220, ("no_caller",): 60},
        }
    )
    assert runtime.spans("ChatOpenAI")[0].attributes["user.id"] == "carol"


def test_a_langgraph_graph_is_no_agent_unless_the_application_names_one(runtime, fake_openai):
    support_graph(fake_openai).invoke({"question": "hi"}, config={"metadata": ALICE})

    runtime.check(
        {
            **BOTH_NODES,
            "llm_agent_tokens_total": {},
            "llm_agent_invocations_total": {},
            "llm_agent_users": {},
            "llm_workflow_tokens_total": {},
        }
    )
    (root,) = runtime.spans("LangGraph")
    assert root.attributes["openinference.span.kind"] == "CHAIN"
    assert runtime.spans("support-bot")[0].attributes["openinference.span.kind"] == "CHAIN"
    (agent_node,) = runtime.spans("agent")  # AGENT by its name only: no agent "agent"
    assert agent_node.attributes["openinference.span.kind"] == "AGENT"
    assert '"langgraph_node": "agent"' in agent_node.attributes["metadata"]


def test_a_graph_named_after_an_agent_is_still_no_agent(runtime, fake_openai):
    # compile(name=...) names the root CHAIN span; the id is not read from a CHAIN's name,
    # nor from metadata.agent_id, which LangChain copies onto every span of the run.
    graph = support_graph(fake_openai, name="support-bot")
    graph.invoke({"question": "hi"}, config={"metadata": {**ALICE, "agent_id": "support-bot"}})

    runtime.check({**BOTH_NODES, "llm_agent_tokens_total": {}, "llm_agent_invocations_total": {}})


def test_an_agent_span_around_the_graph_makes_the_graph_an_agent(runtime, fake_openai):
    graph = support_graph(fake_openai)
    attrs = {"openinference.span.kind": "AGENT", "agent.name": "support-bot"}
    with runtime.tracer.start_as_current_span("support-bot", attributes=attrs):
        graph.invoke({"question": "hi"}, config={"metadata": ALICE})
    with runtime.tracer.start_as_current_span(
        "invoke_agent support-bot",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "support-bot"},
    ):
        graph.invoke({"question": "hi"}, config={"metadata": {"user_id": "carol"}})

    runtime.check(
        {
            "llm_model_tokens_total": {
                **io("acme", "gpt-4o", input=100, output=50),
                **io("acme", "gpt-4o-mini", input=200, output=20),
                **io("globex", "gpt-4o", input=100, output=50),
                **io("globex", "gpt-4o-mini", input=200, output=20),
            },
            "llm_agent_tokens_total": {
                **io("acme", "support-bot", input=300, output=70),
                **io("globex", "support-bot", input=300, output=70),
            },
            "llm_member_tokens_total": {
                **io("acme", "alice", input=300, output=70),
                **io("globex", "carol", input=300, output=70),
            },
            # one invocation per graph run: the "agent" node is no sub-agent
            "llm_agent_invocations_total": {("acme", "support-bot"): 2},
        }
    )
    # each LangGraph root is a child of the application's agent span
    outer = [s for s in runtime.spans("support-bot") if "agent.name" in s.attributes]
    outer += runtime.spans("invoke_agent support-bot")
    roots = runtime.spans("LangGraph")
    assert [r.parent.span_id for r in roots] == [o.context.span_id for o in outer]
