"""Shared by the instrumentation test files, each run in its own venv.

Only the OpenTelemetry SDK, ``openai``, prometheus-client and our package are imported
here at module level: each venv has a different instrumentation, and this file must import
in all of them (the OTLP/HTTP exporter only when a test starts a service).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from otel_processor import TokenAttributionProcessor
from tests.fakes.openai_server import FakeOpenAIServer, Usage

HERE = Path(__file__).parent
#: The worked example's directory: acme (alice, bob), globex (carol); dave is in none.
DIRECTORY = HERE / "directory.yaml"

#: What each model reports unless a call sends other numbers (``Usage(...).header()``).
USAGE = {
    "gpt-4o": Usage(100, 50),
    "gpt-4o-mini": Usage(200, 20),
    "qwen-max": Usage(30, 30),
    "text-embedding-3-small": Usage(12),
}
#: A prompt served mostly from OpenAI's prompt cache: cached is part of prompt.
CACHED = Usage(1200, 80, cached=1024)

#: Label order of each metric, as contract.md lists them.
LABELS = {
    "llm_model_tokens_total": ("tenant", "model", "type"),
    "llm_model_cache_tokens_total": ("tenant", "model", "type"),
    "llm_model_requests_total": ("tenant", "model", "outcome"),
    "llm_agent_tokens_total": ("tenant", "agent", "type"),
    "llm_workflow_tokens_total": ("tenant", "workflow", "type"),
    "llm_member_tokens_total": ("tenant", "member", "type"),
    "llm_agent_invocations_total": ("owner_tenant", "agent"),
    "llm_agent_users": ("owner_tenant", "agent"),
    "llm_workflow_runs_total": ("owner_tenant", "workflow"),
    "llm_unattributed_tokens_total": ("reason",),
    "llm_unpriced_tokens_total": ("model",),
    "llm_exporter_spans_rejected_total": ("reason",),
}


def io(*key: str, input: int, output: int = 0) -> dict[tuple[str, ...], int]:  # noqa: A002
    """The ``type=input``/``type=output`` samples of one token series; zeros are absent."""
    out = {}
    if input:
        out[(*key, "input")] = input
    if output:
        out[(*key, "output")] = output
    return out


def worked_example_expected() -> dict[str, dict[tuple[str, ...], int]]:
    """attribution.md's worked example, as every instrumentation must count it.

    acme: agent 370 (150 + 220); workflows summarize 220, translate 75 (60 + 15: the
    nested summarize run belongs to the outermost workflow, translate); support-chat never
    appears; members alice 370, bob 75. globex: carol 10. dave's 1500 are not_member.
    """
    return {
        "llm_model_tokens_total": {
            **io("acme", "gpt-4o", input=100, output=50),
            **io("acme", "gpt-4o-mini", input=200 + 10, output=20 + 5),
            **io("acme", "qwen-max", input=30, output=30),
            **io("globex", "gpt-4o", input=7, output=3),
        },
        "llm_agent_tokens_total": {
            **io("acme", "support-bot", input=100 + 200, output=50 + 20),
            **io("globex", "support-bot", input=7, output=3),
        },
        "llm_workflow_tokens_total": {
            **io("acme", "summarize", input=200, output=20),
            **io("acme", "translate", input=30 + 10, output=30 + 5),
        },
        "llm_member_tokens_total": {
            **io("acme", "alice", input=300, output=70),
            **io("acme", "bob", input=40, output=35),
            **io("globex", "carol", input=7, output=3),
        },
        "llm_model_cache_tokens_total": {},
        "llm_model_requests_total": {
            ("acme", "gpt-4o", "ok"): 1,
            ("acme", "gpt-4o-mini", "ok"): 2,
            ("acme", "qwen-max", "ok"): 1,
            ("globex", "gpt-4o", "ok"): 1,
        },
        "llm_unattributed_tokens_total": {("not_member",): 1500},
        # Heat is platform-wide (R6): alice, dave and carol each talked to support-bot.
        "llm_agent_invocations_total": {("acme", "support-bot"): 3},
        "llm_agent_users": {("acme", "support-bot"): 3},
        "llm_workflow_runs_total": {("acme", "summarize"): 2, ("acme", "translate"): 1},
    }


class Readout:
    """Reads a registry as ``{labels in contract order: value}``, non-zero samples only,
    relative to a baseline taken at construction (so a shared registry reads per test)."""

    def __init__(self, registry: CollectorRegistry, spans: InMemorySpanExporter | None = None):
        self.registry = registry
        self.spans = spans
        self._baseline = self._read()

    def _read(self) -> dict[str, dict[tuple[str, ...], float]]:
        out: dict[str, dict[tuple[str, ...], float]] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                order = LABELS.get(sample.name) or tuple(sorted(sample.labels))
                key = tuple(sample.labels.get(name, "") for name in order)
                out.setdefault(sample.name, {})[key] = sample.value
        return out

    def series(self, metric: str) -> dict[tuple[str, ...], float]:
        now = self._read().get(metric, {})
        before = self._baseline.get(metric, {})
        changed = {key: value - before.get(key, 0) for key, value in now.items()}
        return {key: _exact(value) for key, value in changed.items() if value != 0}

    def check(self, expected: dict[str, dict[tuple[str, ...], int]]) -> None:
        """Every metric named in ``expected`` has exactly those non-zero series."""
        got = {metric: self.series(metric) for metric in expected}
        if got != expected:
            lines = [
                f"{metric}:\n  expected {expected[metric]}\n  got      {got[metric]}"
                for metric in expected
                if got[metric] != expected[metric]
            ]
            pytest.fail("\n".join(lines) + "\n\nspans:\n" + self.describe_spans(), pytrace=False)

    def describe_spans(self) -> str:
        if self.spans is None:
            return "(not captured)"
        return "\n".join(describe(span) for span in self.spans.get_finished_spans())


def _exact(value: float) -> Any:
    return int(value) if value == int(value) else value


#: Prompt and completion text: long, and never read by our conventions.
_CONTENT_ATTRIBUTES = (
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.input",
    "gen_ai.output",
    "llm.input_messages",
    "llm.output_messages",
    "input.",
    "output.",
    "embedding.embeddings",
    "traceloop.entity.input",
    "traceloop.entity.output",
)


def describe(span: ReadableSpan) -> str:
    """One span, its parent and the attributes our conventions read (for failure output)."""
    parent = f"{span.parent.span_id:016x}" if span.parent else "-"
    keep = {
        k: v for k, v in (span.attributes or {}).items() if not k.startswith(_CONTENT_ATTRIBUTES)
    }
    return f"  {span.name} [{span.context.span_id:016x} <- {parent}] {keep}"


class AppSpans:
    """The application's own spans, on ``self.tracer``: an agent, a workflow (a chat
    workflow with ``chatflow=True``), a tool, or any span."""

    tracer: Any

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[None]:
        with self.tracer.start_as_current_span(name, attributes=attributes):
            yield

    def agent(self, agent_id: str, **attributes: Any):
        attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": agent_id}
        return self.span(f"invoke_agent {agent_id}", **attrs, **attributes)

    def workflow(self, workflow_id: str, chatflow: bool = False, **attributes: Any):
        attrs = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.id": workflow_id}
        if chatflow:
            attrs["gen_ai.workflow.type"] = "chatflow"
        return self.span(f"invoke_workflow {workflow_id}", **attrs, **attributes)

    def tool(self, name: str):
        attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        return self.span(f"execute_tool {name}", **attrs)


class Relay(SpanProcessor):
    """Forwards to the current test's processors.

    For instrumentations whose tracer provider is fixed per process (``Traceloop.init``
    builds one, a singleton; OpenLIT takes the global one once): the relay is the provider's
    processor, and each test sets ``targets`` to its own fresh processors and registry.
    Processors chained in front of it (traceloop's ``on_start``, which copies association
    properties onto the span) run for the targets exactly as for a processor passed
    directly.
    """

    def __init__(self) -> None:
        self.targets: tuple[SpanProcessor, ...] = ()  # replaced whole between tests

    def on_start(self, span, parent_context=None) -> None:
        for target in self.targets:
            target.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for target in self.targets:
            target.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(target.force_flush(timeout_millis) for target in self.targets)


class Exporter:
    """A real ``llm-token-exporter serve`` on 127.0.0.1 (the instrumentation directory, no
    prices): the service runtime. Its state goes to ``state_dir``, else to a temporary
    directory that :meth:`close` removes."""

    def __init__(self, state_dir: str | None = None) -> None:
        from exporter.config import load_config
        from exporter.server import start_server

        self._tmp = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="llm-token-exporter-")
            state_dir = self._tmp.name
        overrides = {
            "listen": "127.0.0.1:0",
            "directory": str(DIRECTORY),
            "state_dir": state_dir,
            "sqlite_synchronous": "NORMAL",
            "log_level": "WARNING",
        }
        self.server = start_server(load_config(None, env={}, overrides=overrides))
        self.registry = self.server.service.registry
        self.url = self.server.url
        #: where senders post OTLP/HTTP
        self.traces_url = self.url + "/v1/traces"

    def span_processor(self) -> SimpleSpanProcessor:
        """A processor that exports each span as it ends to this service (OTLP/HTTP)."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return SimpleSpanProcessor(OTLPSpanExporter(endpoint=self.traces_url))

    def close(self) -> None:
        self.server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


class Pipeline:
    """A real TracerProvider with a span capture and one runtime behind it (fresh registry):
    ``in_process``, our processor; ``service``, an OTLP/HTTP exporter to an
    :class:`Exporter` of its own."""

    def __init__(
        self,
        resource: dict[str, Any] | None = None,
        provider_class: type[TracerProvider] = TracerProvider,
        runtime: str = "in_process",
    ) -> None:
        self._exporter: Exporter | None = None
        if runtime == "in_process":
            self.registry = CollectorRegistry()
            self.processor: SpanProcessor = TokenAttributionProcessor(
                directory=str(DIRECTORY), prices=None, registry=self.registry
            )
        elif runtime == "service":
            self._exporter = Exporter()
            self.registry = self._exporter.registry
            self.processor = self._exporter.span_processor()
        else:
            raise ValueError(f"unknown runtime {runtime!r}")
        self.captured = InMemorySpanExporter()
        self.provider = provider_class(
            resource=Resource.create({"service.name": "instrumentation-tests", **(resource or {})})
        )
        self.provider.add_span_processor(self.processor)
        self.provider.add_span_processor(SimpleSpanProcessor(self.captured))
        self.tracer = self.provider.get_tracer("tests.instrumentation")
        self.readout = Readout(self.registry, self.captured)

    def check(self, expected: dict[str, dict[tuple[str, ...], int]]) -> None:
        # in_process: the processor counts on its worker; service: the exporter is
        # synchronous and the service answers an export once it has counted it.
        assert self.provider.force_flush(10_000)
        self.readout.check(expected)

    def series(self, metric: str) -> dict[tuple[str, ...], float]:
        assert self.provider.force_flush(10_000)
        return self.readout.series(metric)

    def spans(self, name: str) -> list[ReadableSpan]:
        assert self.provider.force_flush(10_000)
        return [s for s in self.captured.get_finished_spans() if s.name == name]

    def close(self) -> None:
        self.provider.shutdown()
        if self._exporter is not None:
            self._exporter.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """A skipped instrumentation test is a failure: these tests exist to run in CI.

    (An expected failure, ``xfail(strict=True)``, is not a skip: it documents a known gap
    and turns into a failure when the gap is fixed.)"""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"instrumentation tests must not be skipped: {report.longrepr}"
    return report


@pytest.fixture
def pipeline() -> Iterator[Any]:
    """``pipeline(resource=None, provider_class=TracerProvider, runtime="in_process")
    -> Pipeline``, closed after."""
    made: list[Pipeline] = []

    def make(**kwargs: Any) -> Pipeline:
        made.append(Pipeline(**kwargs))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(USAGE) as server:
        yield server


@pytest.fixture
def client(fake_openai: FakeOpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0)


# -- the calls every test makes, with the real openai client -------------------------------

MESSAGES = [{"role": "user", "content": "How do I reset my password?"}]


def chat(client: openai.OpenAI, model: str, usage: Usage | None = None, **kwargs: Any) -> Any:
    """A non-streaming chat completion; ``usage`` overrides the model's table entry."""
    return client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        extra_headers=usage.header() if usage else None,
        **kwargs,
    )


def stream(
    client: openai.OpenAI, model: str, usage: Usage | None = None, include_usage: bool = True
) -> list[Any]:
    """A streamed chat completion, consumed to the end (the instrumentation ends its span
    when the stream is exhausted)."""
    kwargs: dict[str, Any] = {"stream": True}
    if include_usage:
        kwargs["stream_options"] = {"include_usage": True}
    return list(chat(client, model, usage, **kwargs))


def embed(
    client: openai.OpenAI, model: str = "text-embedding-3-small", usage: Usage | None = None
) -> Any:
    return client.embeddings.create(
        model=model,
        input=["reset password", "forgot password"],
        extra_headers=usage.header() if usage else None,
    )
