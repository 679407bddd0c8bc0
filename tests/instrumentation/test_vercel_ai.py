"""The Vercel AI SDK in Node (``ai`` 6.0.325, ``@ai-sdk/openai`` 3.0.141) through the service.

``node/vercel_ai.mjs`` calls ``generateText`` and ``streamText`` with
``experimental_telemetry: {isEnabled: true, metadata: {userId, tenantId}}`` against the
fake OpenAI server, with the OpenTelemetry JS SDK (``NodeTracerProvider``) exporting over
OTLP/HTTP (JSON, ``@opentelemetry/exporter-trace-otlp-http``) to a real
``llm-token-exporter serve`` on 127.0.0.1, and flushes before it exits. The numbers read
from the service's registry must be exactly what the fake server returned.

Only the service runtime applies: the in-process ``TokenAttributionProcessor`` is a Python
span processor, and a Node application has no Python SDK to put it in.

The SDK makes two spans per call: ``ai.generateText`` (the call, with the usage summed over
its steps) and, under it, ``ai.generateText.doGenerate`` (one per model request;
``ai.streamText`` / ``ai.streamText.doStream`` for a stream). Both carry ``ai.usage.*``:
only the ``do*`` span is the model call, so every figure below would double if the outer
one were counted too. Agents and workflows are the application's own spans (the AI SDK
makes none), as an application would make them with ``@opentelemetry/api``.

Node and the npm packages: ``.ci/instrumentation.sh vercel-ai`` runs ``npm ci`` in
``tests/instrumentation/node`` (skipped when ``node_modules`` matches the lock).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAIServer, Usage
from tests.instrumentation.conftest import (
    CACHED,
    HERE,
    USAGE,
    Exporter,
    Readout,
    io,
    worked_example_expected,
)

pytestmark = pytest.mark.instrumentation

NODE_PROJECT = HERE / "node"
SCRIPT = NODE_PROJECT / "vercel_ai.mjs"
#: Span attributes left out of a failure's span listing (long, and never read).
_CONTENT = ("ai.prompt", "ai.response.text", "ai.response.providerMetadata")


class NodeRun:
    """One run of the Node script: its per-call results and the spans it made."""

    def __init__(self, results: dict[str, dict[str, Any]], spans: list[dict[str, Any]]):
        self.results = results
        self.spans = spans

    def usage(self, call_id: str) -> dict[str, Any]:
        result = self.results[call_id]
        assert "usage" in result, f"call {call_id} failed in the AI SDK: {result}"
        return result["usage"]

    def describe_spans(self) -> str:
        lines = []
        for span in self.spans:
            attrs = {k: v for k, v in span["attributes"].items() if not k.startswith(_CONTENT)}
            lines.append(f"  {span['name']} [{span['spanId']} <- {span['parentSpanId']}] {attrs}")
        return "\n".join(lines)


class Service:
    """A real ``llm-token-exporter serve`` on 127.0.0.1 (the instrumentation directory, no
    prices), and the Node script pointed at it and at the fake OpenAI server."""

    def __init__(self, fake: FakeOpenAIServer) -> None:
        self.fake = fake
        self.exporter = Exporter()
        self.readout = Readout(self.exporter.registry)
        self.last_run: NodeRun | None = None

    def run(self, steps: list[dict[str, Any]], processor: str = "batch") -> NodeRun:
        """Runs ``node vercel_ai.mjs`` on ``steps`` (see the script) and waits for it: the
        script exits after its exporter's flush, and the service answers an export only
        once it has counted it."""
        with tempfile.TemporaryDirectory(prefix="vercel-ai-") as tmp:
            plan_file = Path(tmp) / "plan.json"
            spans_file = Path(tmp) / "spans.json"
            plan = {
                "baseURL": self.fake.base_url,
                "otlpEndpoint": self.exporter.traces_url,
                "processor": processor,
                "spansOut": str(spans_file),
                "steps": steps,
            }
            plan_file.write_text(json.dumps(plan))
            done = subprocess.run(
                [_node(), str(SCRIPT), str(plan_file)],
                cwd=NODE_PROJECT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"node failed ({done.returncode}):\n{done.stderr}"
            lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
            assert lines and lines[-1] == {"flushed": True}, done.stdout + done.stderr
            results = {line["id"]: line for line in lines[:-1]}
            self.last_run = NodeRun(results, json.loads(spans_file.read_text()))
        return self.last_run

    def check(self, expected: dict[str, dict[tuple[str, ...], int]]) -> None:
        try:
            self.readout.check(expected)
        except pytest.fail.Exception as exc:
            spans = self.last_run.describe_spans() if self.last_run else "(no run)"
            raise pytest.fail.Exception(
                f"{exc.msg.split(chr(10) + chr(10) + 'spans:')[0]}\n\nspans (as Node made "
                f"them):\n{spans}",
                pytrace=False,
            ) from None

    def close(self) -> None:
        self.exporter.close()


def _node() -> str:
    node = shutil.which("node")
    assert node, "node is not on PATH (the Vercel AI SDK tests need Node.js >= 20.6)"
    assert (NODE_PROJECT / "node_modules" / "ai").is_dir(), (
        "tests/instrumentation/node has no node_modules: run `bash .ci/instrumentation.sh "
        "vercel-ai` (it runs npm ci there)"
    )
    return node


@pytest.fixture
def service(fake_openai: FakeOpenAIServer) -> Iterator[Service]:
    running = Service(fake_openai)
    try:
        yield running
    finally:
        running.close()


# -- the plan's building blocks ------------------------------------------------------------


def generate(call_id: str, model: str, usage: Usage | None = None, **metadata: str) -> dict:
    return _call("generateText", call_id, model, usage, metadata)


def stream(call_id: str, model: str, usage: Usage | None = None, **metadata: str) -> dict:
    return _call("streamText", call_id, model, usage, metadata)


def _call(kind: str, call_id: str, model: str, usage: Usage | None, metadata: dict) -> dict:
    step: dict[str, Any] = {"call": kind, "id": call_id, "model": model, "metadata": metadata}
    if usage is not None:
        step["usage"] = usage.header()["X-Fake-Usage"]
    return step


def agent(agent_id: str, *steps: dict, **attributes: str) -> dict:
    attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": agent_id, **attributes}
    return {"span": f"invoke_agent {agent_id}", "attributes": attrs, "steps": list(steps)}


def workflow(workflow_id: str, *steps: dict, chatflow: bool = False, **attributes: str) -> dict:
    attrs = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.id": workflow_id}
    if chatflow:
        attrs["gen_ai.workflow.type"] = "chatflow"
    attrs.update(attributes)
    return {"span": f"invoke_workflow {workflow_id}", "attributes": attrs, "steps": list(steps)}


def tool(name: str, *steps: dict) -> dict:
    attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
    return {"span": f"execute_tool {name}", "attributes": attrs, "steps": list(steps)}


def request(*steps: dict, **attributes: str) -> dict:
    """An application's own root span (an HTTP handler, say) with the caller on it."""
    return {"span": "POST /chat", "attributes": attributes, "steps": list(steps)}


def _as_usage(reported: dict[str, Any]) -> Usage:
    """What the AI SDK returned for a call, as the fake server's ``Usage``."""
    details = reported.get("inputTokenDetails") or {}
    return Usage(
        reported["inputTokens"],
        reported["outputTokens"],
        cached=details.get("cacheReadTokens") or 0,
        reasoning=(reported.get("outputTokenDetails") or {}).get("reasoningTokens") or 0,
    )


# -- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("processor", ["batch", "simple"])
def test_worked_example_counts_exactly_through_real_ai_sdk_calls(service, processor):
    # The caller and tenant are what an AI SDK application passes on each call:
    # experimental_telemetry.metadata {userId, tenantId}. The agent and workflow spans are
    # the application's, with no caller on them. "simple" exports each span as it ends, so
    # the service receives every model call before its ancestors.
    alice = {"userId": "alice", "tenantId": "acme"}
    bob = {"userId": "bob", "tenantId": "acme"}
    run = service.run(
        [
            agent(
                "support-bot",
                workflow("support-chat", generate("t1a", "gpt-4o", **alice), chatflow=True),
                tool("summarizer", workflow("summarize", stream("t1b", "gpt-4o-mini", **alice))),
            ),
            workflow(
                "translate",
                generate("t2a", "qwen-max", **bob),
                workflow("summarize", stream("t2b", "gpt-4o-mini", Usage(10, 5), **bob)),
            ),
            agent(
                "support-bot",
                workflow(
                    "support-chat",
                    generate("t3", "gpt-4o", Usage(1000, 500), userId="dave"),
                    chatflow=True,
                ),
            ),
            agent(
                "support-bot",
                stream("t4", "gpt-4o", Usage(7, 3), userId="carol", tenantId="globex"),
            ),
        ],
        processor=processor,
    )
    # What the fake server returned is what the AI SDK saw (the expected figures below).
    assert _as_usage(run.usage("t1a")) == USAGE["gpt-4o"]
    assert _as_usage(run.usage("t1b")) == USAGE["gpt-4o-mini"]
    assert _as_usage(run.usage("t2a")) == USAGE["qwen-max"]
    assert _as_usage(run.usage("t2b")) == Usage(10, 5)
    assert _as_usage(run.usage("t3")) == Usage(1000, 500)
    assert _as_usage(run.usage("t4")) == Usage(7, 3)

    expected = worked_example_expected()
    # The table's gpt-4o and gpt-4o-mini answers carry no cached tokens (the cache figures
    # of the worked example are zero); distinct users are the callers found on the agent
    # span or its ancestors (attribution.md), and here the callers are only on the model
    # calls, so the agent has invocations (3) but no users.
    expected["llm_agent_users"] = {}
    service.check(expected)


def test_streamed_text_counts_the_final_usage_chunk(service):
    run = service.run(
        [workflow("summarize", stream("s", "gpt-4o", userId="alice", tenantId="acme"))]
    )
    # @ai-sdk/openai always asks for the usage chunk, and the fake server sent it.
    chat_request = service.fake.requests[-1]["body"]
    assert chat_request["stream"] is True
    assert chat_request["stream_options"] == {"include_usage": True}
    assert _as_usage(run.usage("s")) == Usage(100, 50)

    service.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_workflow_tokens_total": io("acme", "summarize", input=100, output=50),
            "llm_member_tokens_total": io("acme", "alice", input=100, output=50),
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
            "llm_unattributed_tokens_total": {},
        }
    )


@pytest.mark.parametrize("call", [generate, stream], ids=["generateText", "streamText"])
def test_cached_prompt_tokens_are_counted_as_cache_read_inside_input(service, call):
    # The AI SDK reports ai.usage.inputTokens=1200 (cached included, as OpenAI counts) and
    # ai.usage.inputTokenDetails.cacheReadTokens=1024 (ai.usage.cachedInputTokens too).
    run = service.run([agent("support-bot", call("c", "gpt-4o", CACHED, userId="alice"))])
    assert _as_usage(run.usage("c")) == CACHED

    service.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=1200, output=80),
            "llm_model_cache_tokens_total": {("acme", "gpt-4o", "read"): 1024},
            "llm_agent_tokens_total": io("acme", "support-bot", input=1200, output=80),
            "llm_member_tokens_total": io("acme", "alice", input=1200, output=80),
        }
    )


def test_the_caller_may_be_on_the_application_span_instead(service):
    # No telemetry metadata: the caller and tenant are on the request span above the call.
    service.run([request(generate("r", "qwen-max"), **{"enduser.id": "bob", "tenant.id": "acme"})])

    service.check(
        {
            "llm_model_tokens_total": io("acme", "qwen-max", input=30, output=30),
            "llm_member_tokens_total": io("acme", "bob", input=30, output=30),
            "llm_unattributed_tokens_total": {},
        }
    )


def test_a_caller_outside_the_billing_tenant_is_unattributed_not_member(service):
    service.run(
        [
            agent("support-bot", generate("a", "gpt-4o", userId="carol", tenantId="acme")),
            agent("support-bot", stream("b", "gpt-4o-mini", userId="dave")),
            agent("support-bot", generate("c", "qwen-max")),  # no caller at all
        ]
    )

    service.check(
        {
            "llm_model_tokens_total": {},
            "llm_agent_tokens_total": {},
            "llm_member_tokens_total": {},
            "llm_unattributed_tokens_total": {("not_member",): 150 + 220, ("no_caller",): 60},
        }
    )


def test_a_failed_call_counts_an_error_request_and_no_tokens(service):
    run = service.run(
        [agent("support-bot", generate("x", "no-such-model", userId="alice", tenantId="acme"))]
    )
    assert "does not exist" in run.results["x"]["error"]  # the fake server's 404

    service.check(
        {
            "llm_model_tokens_total": {},
            "llm_model_requests_total": {("acme", "no-such-model", "error"): 1},
            "llm_unattributed_tokens_total": {},
        }
    )


def test_chat_workflow_tokens_count_for_the_agent_not_the_workflow(service):
    service.run(
        [
            agent(
                "support-bot",
                workflow(
                    "support-chat",
                    generate("g", "gpt-4o", userId="alice"),
                    stream("s", "gpt-4o-mini", userId="alice"),
                ),
            )
        ]
    )

    service.check(
        {
            "llm_agent_tokens_total": io("acme", "support-bot", input=300, output=70),
            "llm_member_tokens_total": io("acme", "alice", input=300, output=70),
            "llm_workflow_tokens_total": {},
            "llm_workflow_runs_total": {},
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
        }
    )
