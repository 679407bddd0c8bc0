"""The Vercel AI SDK 7 in Node (``ai`` 7.0.173, ``@ai-sdk/openai`` 4.0.118, ``@ai-sdk/otel``
1.0.173) through the service.

In AI SDK 7 the ``ai`` package makes no OpenTelemetry spans itself: ``node-ai7/vercel_ai_7.mjs``
registers ``@ai-sdk/otel``'s integration once (``registerTelemetry(new OpenTelemetry(
{runtimeContext: true}))``) and calls ``generateText`` / ``streamText`` / ``embed`` /
``embedMany`` with ``runtimeContext: {userId, tenantId}`` and ``telemetry:
{includeRuntimeContext: {userId: true, tenantId: true}}`` against the fake OpenAI server,
with the OpenTelemetry JS SDK (``NodeTracerProvider``) exporting over OTLP/HTTP (JSON) to a
real ``llm-token-exporter serve`` on 127.0.0.1. The numbers read from the service's registry
must be exactly what the fake server returned.

Only the service runtime applies: the in-process ``TokenAttributionProcessor`` is a Python
span processor, and a Node application has no Python SDK to put it in.

``@ai-sdk/otel``'s ``OpenTelemetry`` writes the GenAI semantic conventions, a tree per call:
``invoke_agent {model}`` (the call, with the total of its steps in ``gen_ai.usage.*``) ->
``step N`` (``agent_step``) -> ``chat {model}`` (one model request, **the model call**) and
``execute_tool {name}`` for the tools the SDK runs. The outer span is no agent of the
platform: its name carries the model id; it becomes an agent only when the application
names it (``telemetry.functionId``, written as ``gen_ai.agent.name``). Agents and workflows
are otherwise the application's own spans, as an application would make them with
``@opentelemetry/api``. ``LegacyOpenTelemetry`` writes the 6.x ``ai.*`` spans instead.

Tool-call steps need a model that calls a tool: ``ToolCallingServer`` below (its own small
server: the shared fake answers text only) answers the first request of a call with a call
of ``lookup`` (usage ``TOOL_STEP``) and the request with the tool's result with text (usage
``ANSWER``).

Node and the npm packages: ``.ci/instrumentation.sh vercel-ai-7`` runs ``npm ci`` in
``tests/instrumentation/node-ai7`` once the script lists it in ``NODE_PROJECT``; until then
run ``npm ci`` there by hand.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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

NODE_PROJECT = HERE / "node-ai7"
SCRIPT = NODE_PROJECT / "vercel_ai_7.mjs"
#: Span attributes left out of a failure's span listing (long, and never read).
_CONTENT = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
            "gen_ai.tool.definitions", "ai.prompt", "ai.response.text",
            "ai.response.providerMetadata")

#: What the tool-calling model reports for the step that calls the tool, and for the answer.
TOOL_STEP = Usage(40, 8)
ANSWER = Usage(100, 50)


class NodeRun:
    """One run of the Node script: its per-call results and the spans it made."""

    def __init__(self, results: dict[str, dict[str, Any]], spans: list[dict[str, Any]]):
        self.results = results
        self.spans = spans

    def usage(self, call_id: str) -> dict[str, Any]:
        result = self.results[call_id]
        assert "usage" in result, f"call {call_id} failed in the AI SDK: {result}"
        return result["usage"]

    def named(self, prefix: str) -> list[dict[str, Any]]:
        return [span for span in self.spans if span["name"].startswith(prefix)]

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

    def run(
        self,
        steps: list[dict[str, Any]],
        processor: str = "batch",
        integration: str = "otel",
        options: dict[str, Any] | None = None,
    ) -> NodeRun:
        """Runs ``node vercel_ai_7.mjs`` on ``steps`` (see the script) and waits for it: the
        script exits after its exporter's flush, and the service answers an export only
        once it has counted it."""
        with tempfile.TemporaryDirectory(prefix="vercel-ai-7-") as tmp:
            plan_file = Path(tmp) / "plan.json"
            spans_file = Path(tmp) / "spans.json"
            plan = {
                "baseURL": self.fake.base_url,
                "otlpEndpoint": self.exporter.traces_url,
                "processor": processor,
                "integration": integration,
                "spansOut": str(spans_file),
                "steps": steps,
            }
            if options is not None:
                plan["options"] = options
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
        "tests/instrumentation/node-ai7 has no node_modules: run `npm ci` there (or `bash "
        ".ci/instrumentation.sh vercel-ai-7` once its NODE_PROJECT map lists node-ai7)"
    )
    return node


@pytest.fixture
def service(fake_openai: FakeOpenAIServer) -> Iterator[Service]:
    running = Service(fake_openai)
    try:
        yield running
    finally:
        running.close()


# -- a model that calls a tool ---------------------------------------------------------------


class ToolCallingServer:
    """An OpenAI Chat Completions server on 127.0.0.1 whose model calls the tool it is
    offered: a request whose last message is not a tool result is answered with a call of
    its first tool (usage ``TOOL_STEP``), the next one with text (usage ``ANSWER``); both
    non-streaming and as an SSE stream that ends with a usage chunk. ``requests`` holds the
    request bodies."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: one response per connection
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                message, usage, finish = server.answer(body)
                model = body["model"] + "-2024-08-06"
                if not body.get("stream"):
                    self._send("application/json", json.dumps({
                        "id": f"chatcmpl-tool{len(server.requests)}",
                        "object": "chat.completion", "created": 1_730_000_000,
                        "model": model,
                        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                        "usage": usage.chat_json(),
                    }))
                    return
                delta = dict(message)
                if "tool_calls" in delta:
                    delta["tool_calls"] = [{"index": 0, **delta["tool_calls"][0]}]
                chunks = [
                    {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                    {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
                    {"choices": [], "usage": usage.chat_json()},
                ]
                events = "".join(
                    "data: " + json.dumps({"id": "chatcmpl-tool", "object":
                                           "chat.completion.chunk", "created": 1_730_000_000,
                                           "model": model, **chunk}) + "\n\n"
                    for chunk in chunks
                )
                self._send("text/event-stream", events + "data: [DONE]\n\n")

            def _send(self, content_type: str, text: str) -> None:
                raw = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @staticmethod
    def answer(body: dict[str, Any]) -> tuple[dict[str, Any], Usage, str]:
        messages = body.get("messages") or []
        if body.get("tools") and not (messages and messages[-1].get("role") == "tool"):
            name = body["tools"][0]["function"]["name"]
            call = {"id": "call_lookup_1", "type": "function",
                    "function": {"name": name, "arguments": json.dumps({"topic": "password"})}}
            return {"role": "assistant", "content": None, "tool_calls": [call]}, TOOL_STEP, (
                "tool_calls")
        return {"role": "assistant", "content": "Use the 'Forgot password' link."}, ANSWER, "stop"

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def tool_model() -> Iterator[ToolCallingServer]:
    server = ToolCallingServer()
    try:
        yield server
    finally:
        server.close()


# -- the plan's building blocks ------------------------------------------------------------


def generate(call_id: str, model: str, usage: Usage | None = None, **context: str) -> dict:
    return _call("generateText", call_id, model, usage, context)


def stream(call_id: str, model: str, usage: Usage | None = None, **context: str) -> dict:
    return _call("streamText", call_id, model, usage, context)


def _call(kind: str, call_id: str, model: str, usage: Usage | None, context: dict) -> dict:
    step: dict[str, Any] = {"call": kind, "id": call_id, "model": model, "context": context}
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


ALICE = {"userId": "alice", "tenantId": "acme"}


# -- the scenarios of test_vercel_ai.py, on AI SDK 7 ------------------------------------------


@pytest.mark.parametrize("processor", ["batch", "simple"])
def test_worked_example_counts_exactly_through_real_ai_sdk_calls(service, processor):
    # The caller and tenant are what an AI SDK 7 application passes on each call: its
    # runtimeContext {userId, tenantId}, included in telemetry. Every call is also an
    # `invoke_agent gpt-4o` span of the SDK's: it must add no agent and no invocation.
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
    assert _as_usage(run.usage("t1a")) == USAGE["gpt-4o"]
    assert _as_usage(run.usage("t1b")) == USAGE["gpt-4o-mini"]
    assert _as_usage(run.usage("t2a")) == USAGE["qwen-max"]
    assert _as_usage(run.usage("t2b")) == Usage(10, 5)
    assert _as_usage(run.usage("t3")) == Usage(1000, 500)
    assert _as_usage(run.usage("t4")) == Usage(7, 3)
    # the SDK's spans are the GenAI semconv ones, one invoke_agent per call
    assert len(run.named("invoke_agent ")) == 3 + 6  # the application's 3, the SDK's 6
    assert len(run.named("chat ")) == 6

    expected = worked_example_expected()
    # As with 6.x: the callers are only on the SDK's spans, under the agent span, so the
    # agent has invocations (3, support-bot's only) but no users.
    expected["llm_agent_users"] = {}
    service.check(expected)


def test_streamed_text_counts_the_final_usage_chunk(service):
    run = service.run([workflow("summarize", stream("s", "gpt-4o", **ALICE))])
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
            "llm_agent_invocations_total": {},
            "llm_unattributed_tokens_total": {},
        }
    )


@pytest.mark.parametrize("call", [generate, stream], ids=["generateText", "streamText"])
def test_cached_prompt_tokens_are_counted_as_cache_read_inside_input(service, call):
    # @ai-sdk/otel writes gen_ai.usage.input_tokens=1200 (cached included, as OpenAI counts)
    # and gen_ai.usage.cache_read.input_tokens=1024 on the chat span.
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
    # No runtime context: the caller and tenant are on the request span above the call.
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
    run = service.run([agent("support-bot", generate("x", "no-such-model", **ALICE))])
    assert "does not exist" in run.results["x"]["error"]  # the fake server's 404
    # the SDK's invoke_agent no-such-model span is no agent either
    assert [s["status"] for s in run.named("invoke_agent no-such-model")] == [2]

    service.check(
        {
            "llm_model_tokens_total": {},
            "llm_model_requests_total": {("acme", "no-such-model", "error"): 1},
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
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


# -- what is new in AI SDK 7 ---------------------------------------------------------------


@pytest.mark.parametrize("call", [generate, stream], ids=["generateText", "streamText"])
def test_tool_call_steps_count_each_model_request_once(service, tool_model, call):
    # Two steps: the model calls `lookup` (40/8), the SDK runs it (its execute_tool span),
    # the model answers (100/50). The invoke_agent span repeats the total (140/58): a
    # roll-up, counted nowhere.
    step = {**call("t", "gpt-4o", **ALICE), "tool": True, "baseURL": tool_model.base_url}
    run = service.run([agent("support-bot", step)])
    assert [_as_usage(u) for u in run.results["t"]["steps"]] == [TOOL_STEP, ANSWER]
    assert _as_usage(run.usage("t")) == Usage(140, 58)
    (root,) = run.named("invoke_agent gpt-4o")
    assert (root["attributes"]["gen_ai.usage.input_tokens"],
            root["attributes"]["gen_ai.usage.output_tokens"]) == (140, 58)
    assert [s["attributes"]["gen_ai.tool.name"] for s in run.named("execute_tool")] == ["lookup"]
    assert len(run.named("chat gpt-4o")) == 2

    service.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=140, output=58),
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 2},
            "llm_agent_tokens_total": io("acme", "support-bot", input=140, output=58),
            "llm_member_tokens_total": io("acme", "alice", input=140, output=58),
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
            "llm_unattributed_tokens_total": {},
            "llm_unclassified_usage_tokens_total": {},
        }
    )


def test_a_call_outside_any_agent_makes_no_agent(service, tool_model):
    step = {**generate("t", "gpt-4o", **ALICE), "tool": True, "baseURL": tool_model.base_url}
    service.run([step, stream("s", "qwen-max", **ALICE)])

    service.check(
        {
            "llm_model_tokens_total": {**io("acme", "gpt-4o", input=140, output=58),
                                       **io("acme", "qwen-max", input=30, output=30)},
            "llm_member_tokens_total": io("acme", "alice", input=170, output=88),
            "llm_agent_tokens_total": {},
            "llm_agent_invocations_total": {},
            "llm_agent_users": {},
            "llm_unclassified_usage_tokens_total": {},
        }
    )


def test_a_function_id_names_the_agent(service, tool_model):
    # telemetry: {functionId: "support-bot"}: @ai-sdk/otel writes gen_ai.agent.name on the
    # invoke_agent span (its name stays `invoke_agent gpt-4o` by default): the application
    # named an agent, and the call is that agent's, with the caller on its span.
    step = {**generate("t", "gpt-4o", **ALICE), "functionId": "support-bot", "tool": True,
            "baseURL": tool_model.base_url}
    run = service.run([step])
    (root,) = run.named("invoke_agent gpt-4o")
    assert root["attributes"]["gen_ai.agent.name"] == "support-bot"

    service.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=140, output=58),
            "llm_agent_tokens_total": io("acme", "support-bot", input=140, output=58),
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
            "llm_agent_users": {("acme", "support-bot"): 1},
            "llm_unclassified_usage_tokens_total": {},
        }
    )


def test_agent_span_name_function_id_names_the_span_too(service):
    run = service.run(
        [{**generate("g", "gpt-4o", **ALICE), "functionId": "support-bot"}],
        options={"runtimeContext": True, "agentSpanName": "functionId"},
    )
    assert [s["name"] for s in run.named("invoke_agent")] == ["invoke_agent support-bot"]

    service.check(
        {
            "llm_agent_tokens_total": io("acme", "support-bot", input=100, output=50),
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
        }
    )


@pytest.mark.parametrize(
    ("options", "include"),
    [({}, True), ({"runtimeContext": True}, False)],
    ids=["integration-without-runtimeContext", "call-without-includeRuntimeContext"],
)
def test_the_context_is_written_only_when_both_the_integration_and_the_call_say_so(
    service, options, include
):
    # new OpenTelemetry() writes no ai.settings.context.* unless {runtimeContext: true}, and
    # the call's telemetry.includeRuntimeContext must name each key: else no caller.
    step = {**generate("g", "gpt-4o", **ALICE), "includeContext": include}
    run = service.run([step], options=options)
    assert not any(k.startswith("ai.settings.context.")
                   for s in run.spans for k in s["attributes"])

    service.check(
        {
            "llm_model_tokens_total": {},
            "llm_unattributed_tokens_total": {("no_caller",): 150},
        }
    )


def test_reasoning_tokens_need_the_usage_option(service):
    # gen_ai.* has no reasoning attribute: @ai-sdk/otel writes
    # ai.usage.outputTokenDetails.reasoningTokens (on the chat, step and invoke_agent spans)
    # only with {usage: true}. Without it the reasoning tokens are still inside output.
    reasoning = Usage(100, 50, reasoning=12)
    service.run([generate("a", "gpt-4o", reasoning, **ALICE)])
    service.check({"llm_model_reasoning_tokens_total": {}})
    service.run([generate("b", "gpt-4o", reasoning, **ALICE)],
                options={"runtimeContext": True, "usage": True})

    service.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=200, output=100),
            # (a metric conftest.LABELS does not order: labels sorted, model before tenant)
            "llm_model_reasoning_tokens_total": {("gpt-4o", "acme"): 12},
            "llm_unclassified_usage_tokens_total": {},
        }
    )


def _embed(call_id: str, kind: str = "embed", **context: str) -> dict:
    return {"call": kind, "id": call_id, "model": "text-embedding-3-small", "context": context}


def test_embeddings_count_their_tokens_once(service):
    run = service.run([_embed("e", **ALICE), _embed("m", "embedMany", **ALICE)])
    assert run.usage("e") == {"tokens": 12} and run.usage("m") == {"tokens": 12}

    service.check(
        {
            "llm_model_tokens_total": io("acme", "text-embedding-3-small", input=24),
            "llm_member_tokens_total": io("acme", "alice", input=24),
            "llm_unattributed_tokens_total": {},
        }
    )


def test_an_embed_call_counts_one_request(service):
    # the root `embeddings` span (no usage) wraps the request's span: one request, not two
    service.run([_embed("e", **ALICE), _embed("m", "embedMany", **ALICE)])
    service.check({"llm_model_requests_total": {("acme", "text-embedding-3-small", "ok"): 2}})


def test_the_legacy_integration_writes_the_6x_spans(service):
    # LegacyOpenTelemetry: ai.generateText -> ai.generateText.doGenerate, ai.usage.*, and the
    # runtime context as ai.settings.context.* (no option needed): counted as 6.x is.
    run = service.run(
        [agent("support-bot", generate("g", "gpt-4o", Usage(100, 50, cached=20, reasoning=3),
                                       **ALICE),
               stream("s", "gpt-4o-mini", **ALICE)),
         _embed("e", **ALICE)],
        integration="legacy",
    )
    assert {s["name"] for s in run.spans} >= {"ai.generateText", "ai.generateText.doGenerate",
                                             "ai.streamText", "ai.streamText.doStream",
                                             "ai.embed", "ai.embed.doEmbed"}

    service.check(
        {
            "llm_model_tokens_total": {**io("acme", "gpt-4o", input=100, output=50),
                                       **io("acme", "gpt-4o-mini", input=200, output=20),
                                       **io("acme", "text-embedding-3-small", input=12)},
            "llm_model_cache_tokens_total": {("acme", "gpt-4o", "read"): 20},
            "llm_model_reasoning_tokens_total": {("gpt-4o", "acme"): 3},
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1,
                                         ("acme", "gpt-4o-mini", "ok"): 1,
                                         ("acme", "text-embedding-3-small", "ok"): 1},
            "llm_agent_tokens_total": io("acme", "support-bot", input=300, output=70),
            "llm_member_tokens_total": io("acme", "alice", input=312, output=70),
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
        }
    )
