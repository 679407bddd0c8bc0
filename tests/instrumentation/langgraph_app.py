"""The LangChain application both LangChain suites drive (test_langchain.py through
OpenInference, test_langgraph_traceloop.py through traceloop): a chat model pointed at the
fake OpenAI server and a two-node LangGraph graph. Imported only from those venvs."""

from __future__ import annotations

from typing import Any, TypedDict

from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph

from tests.fakes.openai_server import FakeOpenAIServer, Usage


def model(fake: FakeOpenAIServer, name: str = "gpt-4o", usage: Usage | None = None) -> ChatOpenAI:
    """``usage`` overrides the fake server's numbers for the model."""
    return ChatOpenAI(
        model=name, base_url=fake.base_url, api_key="x", max_retries=0,
        default_headers=usage.header() if usage else None,
    )


class State(TypedDict, total=False):
    question: str
    answer: str


def support_graph(fake: FakeOpenAIServer, name: str | None = None) -> Any:
    """START -> support-bot (gpt-4o) -> agent (gpt-4o-mini) -> END; both nodes call a model.

    The node "agent" is what LangGraph's prebuilt agents call their model node (OpenInference
    makes it an AGENT span, by its name alone)."""
    def node(llm: ChatOpenAI) -> Any:
        return lambda state: {"answer": llm.invoke(state["question"]).content}

    graph = StateGraph(State)
    graph.add_node("support-bot", node(model(fake)))
    graph.add_node("agent", node(model(fake, "gpt-4o-mini")))
    graph.add_edge(START, "support-bot")
    graph.add_edge("support-bot", "agent")
    graph.add_edge("agent", END)
    return graph.compile(name=name) if name else graph.compile()
