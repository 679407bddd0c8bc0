"""Issue 12 part 3: LangGraph and LangChain traced by traceloop's LangChain instrumentation
(``opentelemetry-instrumentation-langchain`` 0.62.4, of traceloop-sdk 0.62.4).

Spans have the shape that package emits (``tests/instrumentation/EMITTED.md``; the real
package is driven in ``tests/instrumentation/test_langgraph_traceloop.py``):

- ``invoke_agent LangGraph``: its wrapper of ``Pregel.stream``, ``gen_ai.operation.name=
  invoke_agent``, ``gen_ai.agent.name=<graph>``, ``gen_ai.provider.name=langgraph``;
- ``LangGraph.workflow``: the graph's root chain run, ``traceloop.span.kind=workflow``,
  ``traceloop.entity.name=<graph>``, and also ``gen_ai.operation.name=invoke_agent``,
  ``gen_ai.agent.id=<the run's uuid>`` (``gen_ai.provider.name=langchain`` for a plain chain);
- ``execute_task <node>``: each node, ``traceloop.span.kind=task``;
- ``ChatOpenAI.chat``: the model call, ``gen_ai.operation.name=chat`` and its usage.

Decided (attribution.md, "LangChain and LangGraph"): the framework's own spans for a graph,
a chain or a node are context, never an agent or a workflow; the application's ``@agent`` /
``@workflow`` (or an ``invoke_agent`` span with an id) around the run names it. Rules are run
through both runtimes with exact token numbers.
"""

from __future__ import annotations

import pytest

from otel_processor.conventions import AGENT, MODEL, OTHER, TOOL, WORKFLOW, normalize

RUN_ID = "01a232aa-39da-763d-9a1c-f245680cb72b"
ALICE = {"traceloop.association.properties.user_id": "alice",
         "traceloop.association.properties.tenant_id": "acme"}


def graph_wrapper(graph: str = "LangGraph") -> dict:
    return {"gen_ai.provider.name": "langgraph", "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": graph, "gen_ai.workflow.nodes": ("support-bot", "agent")}


def root_chain(graph: str = "LangGraph", provider: str = "langgraph") -> dict:
    return {"traceloop.workflow.name": graph, "traceloop.entity.path": "",
            "traceloop.span.kind": "workflow", "traceloop.entity.name": graph,
            "gen_ai.provider.name": provider, "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": graph, "gen_ai.agent.id": RUN_ID,
            "gen_ai.task.status": "success"}


def node(name: str) -> dict:
    return {"traceloop.workflow.name": "LangGraph", "traceloop.span.kind": "task",
            "traceloop.entity.name": name, "gen_ai.provider.name": "langgraph",
            "gen_ai.operation.name": "execute_task", "gen_ai.task.name": name,
            "traceloop.association.properties.langgraph_node": name}


def chat_call(model: str, tin: int, tout: int) -> dict:
    return {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model, "gen_ai.response.model": model + "-2024-08-06",
            "gen_ai.usage.input_tokens": tin, "gen_ai.usage.output_tokens": tout,
            "gen_ai.usage.total_tokens": tin + tout, "gen_ai.usage.cache_read.input_tokens": 0,
            "traceloop.workflow.name": "LangGraph"}


# -- classification --------------------------------------------------------------------------


def test_the_graph_spans_traceloop_writes_are_no_agent_and_no_workflow():
    wrapper = normalize({**graph_wrapper(), **ALICE}, name="invoke_agent LangGraph")
    assert (wrapper.kind, wrapper.agent_id, wrapper.caller, wrapper.tenant) == (
        OTHER, None, "alice", "acme")  # context: its caller and tenant still count
    root = normalize(root_chain(), name="LangGraph.workflow")
    assert (root.kind, root.agent_id, root.workflow_id) == (OTHER, None, None)
    # compile(name="support-bot") names both spans after an agent: still the graph's own
    named = normalize(graph_wrapper("support-bot"), name="invoke_agent support-bot")
    assert (named.kind, named.agent_id) == (OTHER, None)
    assert normalize(root_chain("support-bot"), name="support-bot.workflow").kind == OTHER
    # a plain LangChain chain's root (provider langchain), any case
    assert normalize(root_chain("RunnableSequence", "langchain")).kind == OTHER
    assert normalize({**graph_wrapper(), "gen_ai.provider.name": " LangGraph "}).kind == OTHER


def test_a_node_is_a_task_and_the_model_call_still_a_model_call():
    assert normalize(node("agent"), name="execute_task agent").kind == OTHER
    call = normalize({**chat_call("gpt-4o", 100, 50), **ALICE}, name="ChatOpenAI.chat")
    assert (call.kind, call.model, call.input_tokens, call.output_tokens, call.caller) == (
        MODEL, "gpt-4o", 100, 50, "alice")
    # a model call whose provider is the framework (OpenLIT's LangChain spans) still counts
    framework_call = normalize({**chat_call("gpt-4o", 1, 1), "gen_ai.provider.name": "langchain"})
    assert framework_call.kind == MODEL
    # a LangChain tool stays a tool
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.provider.name": "langgraph",
            "traceloop.span.kind": "tool", "gen_ai.tool.name": "search"}
    assert normalize(tool, name="execute_tool search").kind == TOOL


def test_the_applications_own_agent_and_workflow_spans_still_count():
    decorated_agent = {"gen_ai.agent.name": "support-bot", "traceloop.span.kind": "agent",
                       "traceloop.entity.name": "support-bot", **ALICE}
    record = normalize(decorated_agent, name="support-bot.agent")
    assert (record.kind, record.agent_id) == (AGENT, "support-bot")
    decorated_workflow = {"traceloop.span.kind": "workflow", "traceloop.entity.name": "summarize",
                          "traceloop.workflow.name": "summarize"}
    record = normalize(decorated_workflow, name="summarize.workflow")
    assert (record.kind, record.workflow_id) == (WORKFLOW, "summarize")
    otel = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "support-bot",
            "gen_ai.provider.name": "openai"}
    record = normalize(otel, name="invoke_agent support-bot")
    assert (record.kind, record.agent_id) == (AGENT, "support-bot")


# -- both runtimes, exact numbers --------------------------------------------------------------


def span(p, name: str, attrs: dict):
    return p.tracer.start_as_current_span(name, attributes=attrs)


def run_graph(p, graph: str = "LangGraph", caller: dict | None = None) -> None:
    """One traceloop-instrumented graph run: support-bot (gpt-4o 100/50) then agent
    (gpt-4o-mini 200/20)."""
    caller = ALICE if caller is None else caller
    with span(p, f"invoke_agent {graph}", {**graph_wrapper(graph), **caller}):
        with span(p, f"{graph}.workflow", {**root_chain(graph), **caller}):
            with span(p, "execute_task support-bot", {**node("support-bot"), **caller}):
                with span(p, "ChatOpenAI.chat", {**chat_call("gpt-4o", 100, 50), **caller}):
                    pass
            with span(p, "execute_task agent", {**node("agent"), **caller}):
                with span(p, "ChatOpenAI.chat", {**chat_call("gpt-4o-mini", 200, 20), **caller}):
                    pass


def samples(p, metric: str) -> dict[tuple, float]:
    return {tuple(v for _, v in labels): value for labels, value in p.samples(metric).items()
            if value}


@pytest.mark.parametrize("graph", ["LangGraph", "support-bot"])
def test_a_bare_graph_run_counts_its_calls_and_no_agent_or_workflow(quick_runtime, graph):
    p = quick_runtime()
    run_graph(p, graph)
    p.wait_closed(1)

    assert p.tokens("llm_model_tokens_total", tenant="acme", model="gpt-4o") == 150
    assert p.tokens("llm_model_tokens_total", tenant="acme", model="gpt-4o-mini") == 220
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 370
    assert samples(p, "llm_agent_tokens_total") == {}
    assert samples(p, "llm_agent_invocations_total") == {}
    assert samples(p, "llm_workflow_tokens_total") == {}
    assert samples(p, "llm_workflow_runs_total") == {}
    assert p.tokens("llm_service_tokens_total", tenant="acme", service="direct") == 370
    assert samples(p, "llm_unattributed_tokens_total") == {}


def test_a_graph_inside_an_agent_is_that_agent_invoked_once(quick_runtime):
    p = quick_runtime()
    decorated = {"gen_ai.agent.name": "support-bot", "traceloop.span.kind": "agent",
                 "traceloop.entity.name": "support-bot", **ALICE}
    with span(p, "support-bot.agent", decorated):
        run_graph(p)
    p.wait_closed(1)

    assert p.value("llm_agent_tokens_total", tenant="acme", agent="support-bot",
                   type="input") == 300
    assert p.value("llm_agent_tokens_total", tenant="acme", agent="support-bot",
                   type="output") == 70
    assert samples(p, "llm_agent_invocations_total") == {("support-bot", "acme"): 1}
    assert p.tokens("llm_service_tokens_total", tenant="acme", service="agent") == 370
    assert samples(p, "llm_workflow_tokens_total") == {}


def test_a_graph_inside_a_workflow_is_that_workflow_run_once(quick_runtime):
    p = quick_runtime()
    decorated = {"traceloop.span.kind": "workflow", "traceloop.entity.name": "summarize",
                 "traceloop.workflow.name": "summarize", **ALICE}
    with span(p, "summarize.workflow", decorated):
        run_graph(p)
    p.wait_closed(1)

    assert p.tokens("llm_workflow_tokens_total", tenant="acme", workflow="summarize") == 370
    assert samples(p, "llm_workflow_runs_total") == {("acme", "summarize"): 1}
    assert samples(p, "llm_agent_tokens_total") == {}
    assert samples(p, "llm_agent_invocations_total") == {}
    assert p.tokens("llm_service_tokens_total", tenant="acme", service="workflow") == 370
