"""Known scenarios built with the real OpenTelemetry SDK, shared by the tests.

``worked_example`` is the rules' public worked example (``docs/attribution.md``), span for span.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry.trace import Tracer

FIXTURES = Path(__file__).parent / "fixtures"
WORKED_EXAMPLE_DIRECTORY = FIXTURES / "worked_example_directory.yaml"


@contextmanager
def agent(tracer: Tracer, agent_id: str, **attrs) -> Iterator[None]:
    with tracer.start_as_current_span(
        f"invoke_agent {agent_id}",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": agent_id, **attrs},
    ):
        yield


@contextmanager
def workflow(tracer: Tracer, workflow_id: str, chat: bool = False, **attrs) -> Iterator[None]:
    base = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.id": workflow_id}
    if chat:
        base["gen_ai.workflow.type"] = "chatflow"
    name = f"invoke_workflow {workflow_id}"
    with tracer.start_as_current_span(name, attributes={**base, **attrs}):
        yield


@contextmanager
def tool(tracer: Tracer, name: str) -> Iterator[None]:
    with tracer.start_as_current_span(
        f"execute_tool {name}",
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name},
    ):
        yield


def chat(tracer: Tracer, model: str, input_tokens: int, output_tokens: int, **attrs) -> None:
    with tracer.start_as_current_span(
        f"chat {model}",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            **attrs,
        },
    ):
        pass


def caller(user: str, tenant: str | None) -> dict:
    attrs = {"enduser.id": user}
    if tenant is not None:
        attrs["tenant.id"] = tenant
    return attrs


def worked_example(tracer: Tracer) -> None:
    """The four traces of attribution.md's worked example."""
    # trace 1: alice, acme
    with agent(tracer, "support-bot", **caller("alice", "acme")):
        with workflow(tracer, "support-chat", chat=True):
            chat(tracer, "gpt-4o", 100, 50)
        with tool(tracer, "summarize"), workflow(tracer, "summarize"):
            chat(tracer, "gpt-4o-mini", 200, 20)
    # trace 2: bob, acme
    with workflow(tracer, "translate", **caller("bob", "acme")):
        chat(tracer, "qwen-max", 30, 30)
        with workflow(tracer, "summarize"):
            chat(tracer, "gpt-4o-mini", 10, 5)
    # trace 3: dave, no tenant
    with agent(tracer, "support-bot", **caller("dave", None)):
        with workflow(tracer, "support-chat", chat=True):
            chat(tracer, "gpt-4o", 1000, 500)
    # trace 4: carol, globex
    with agent(tracer, "support-bot", **caller("carol", "globex")):
        chat(tracer, "gpt-4o", 7, 3)
