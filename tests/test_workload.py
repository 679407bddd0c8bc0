"""The demo workload through the real SDK and processor equals its independently computed totals."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from exporter.workload import SpanSpec, TraceSpec, emit, expected_totals, generate
from otel_processor import TokenAttributionProcessor
from otel_processor.directory_source import default_directory_path, load_directory
from tests.scenarios import WORKED_EXAMPLE_DIRECTORY

DEMO = load_directory(default_directory_path())


@pytest.fixture(scope="module")
def workload():
    return generate(DEMO)


@pytest.fixture(scope="module")
def registry(workload):
    registry = CollectorRegistry()
    provider = TracerProvider()
    provider.add_span_processor(
        TokenAttributionProcessor(directory=default_directory_path(), registry=registry)
    )
    tracer = provider.get_tracer("test_workload")
    for trace in workload:
        emit(tracer, trace)
    provider.shutdown()
    return registry


def _samples(registry: CollectorRegistry, name: str) -> list[tuple[dict, float]]:
    return [(s.labels, s.value) for f in registry.collect() for s in f.samples if s.name == name]


def _totals_from_registry(registry: CollectorRegistry) -> dict:
    """The registry read back in expected_totals' shape."""
    tenants: dict = defaultdict(lambda: {"total": 0, **{k: defaultdict(int) for k in _DIMS}})
    for dimension, (metric, label) in _DIMS.items():
        for labels, value in _samples(registry, metric):
            tenants[labels["tenant"]][dimension][labels[label]] += int(value)
    for view in tenants.values():
        view["total"] = sum(view["models"].values())
    out = {"tenants": tenants, "unattributed": {}, "unpriced": {}}
    for labels, value in _samples(registry, "llm_unattributed_tokens_total"):
        out["unattributed"][labels["reason"]] = int(value)
    for labels, value in _samples(registry, "llm_unpriced_tokens_total"):
        out["unpriced"][labels["model"]] = int(value)
    for key, metric, label in (("agent_invocations", "llm_agent_invocations_total", "agent"),
                               ("workflow_runs", "llm_workflow_runs_total", "workflow")):
        out[key] = {labels[label]: int(value) for labels, value in _samples(registry, metric)}
    return _plain(out)


_DIMS = {
    "agents": ("llm_agent_tokens_total", "agent"),
    "workflows": ("llm_workflow_tokens_total", "workflow"),
    "models": ("llm_model_tokens_total", "model"),
    "members": ("llm_member_tokens_total", "member"),
}


def _plain(value):
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in sorted(value.items())}
    return value


def test_every_number_in_the_registry_equals_the_independently_computed_totals(
    workload, registry
):
    expected = expected_totals(workload, DEMO)
    assert _totals_from_registry(registry) == expected
    assert set(expected["tenants"]) == {"acme", "globex", "initech", "umbrella"}
    assert all(expected["unattributed"].values())  # every reason occurs


def test_heat_metrics_carry_the_owner_tenant_and_an_empty_one_for_unlisted_assets(registry):
    for labels, _ in _samples(registry, "llm_agent_invocations_total"):
        agent = DEMO.agents.get(labels["agent"])
        assert labels["owner_tenant"] == (agent.owner_tenant if agent else "")
    for labels, _ in _samples(registry, "llm_workflow_runs_total"):
        assert labels["owner_tenant"] == DEMO.workflows[labels["workflow"]].owner_tenant


def test_failed_calls_are_counted_with_outcome_error(workload, registry):
    errors = sum(1 for t in workload for s in t.root.walk() if s.error)
    counted = sum(
        value for labels, value in _samples(registry, "llm_model_requests_total")
        if labels["outcome"] == "error"
    )
    assert 0 < counted <= errors  # outsiders' failed calls are unattributed


def test_the_same_seed_gives_the_same_traces_and_another_seed_does_not():
    assert generate(DEMO, seed=7) == generate(DEMO, seed=7)
    assert generate(DEMO, seed=7) != generate(DEMO, seed=8)
    assert len({t.conversation for t in generate(DEMO, conversations=25)}) == 25


def test_the_workload_covers_every_shape_the_demo_promises(workload):
    spans = [s for t in workload for s in t.root.walk()]
    assert {t.shape for t in workload} == {
        "agent_chat", "agent_tool_workflow", "sub_agent", "workflow_run", "chatflow_app",
        "unlisted_agent", "outsider", "scheduled", "ambiguous",
    }
    models = {s.target for s in spans if s.operation in ("chat", "embeddings")}
    assert {"gpt-4o", "gpt-4o-mini", "llama-3-70b-local", "text-embedding-3-small"} <= models
    assert any(s.response_model == "gpt-4o-2024-08-06" for s in spans)
    assert any(s.cache_read_tokens for s in spans)
    assert any(s.error for s in spans)
    # erin is a member of initech and umbrella and names each of them
    assert {t.root.tenant for t in workload if t.root.caller == "erin"} >= {"initech", "umbrella"}
    # an agent's chat workflow calls a tool that runs a regular workflow
    assert any(
        s.chatflow and any(c.operation == "execute_tool" for c in s.children) for s in spans
    )


def test_emitted_spans_follow_the_genai_conventions_one_trace_each(workload):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test_workload")
    sample = [t for t in workload if t.shape == "agent_tool_workflow"][:3]
    for trace in sample:
        emit(tracer, trace)
    spans = exporter.get_finished_spans()
    assert len(spans) == sum(t.span_count for t in sample)
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == len({s.context.trace_id for s in spans}) == len(sample)
    root = roots[0].attributes
    assert root["gen_ai.operation.name"] == "invoke_agent"
    assert {"enduser.id", "gen_ai.agent.id", "gen_ai.conversation.id"} <= set(root)
    by_id = {s.context.span_id: s for s in spans}
    flows = [s for s in spans if s.attributes.get("gen_ai.workflow.type") == "chatflow"]
    assert flows and all(by_id[s.parent.span_id].parent is None for s in flows)
    chats = [s for s in spans if s.attributes["gen_ai.operation.name"] == "chat"]
    assert all(isinstance(s.attributes["gen_ai.usage.input_tokens"], int) for s in chats)
    provider.shutdown()


def test_failed_calls_are_emitted_with_an_error_status():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    failed = SpanSpec("chat", "gpt-4o", input_tokens=10, error=True)
    emit(provider.get_tracer("t"), TraceSpec("c", 1, "agent_chat", failed))
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "timeout"


def _worked_example() -> list[TraceSpec]:
    def chat(model, tin, tout):
        return SpanSpec("chat", model, input_tokens=tin, output_tokens=tout)

    def root(span, caller, tenant):
        return TraceSpec(caller, 1, "example", replace(span, caller=caller, tenant=tenant))

    def support_chat(*call):
        return SpanSpec("invoke_workflow", "support-chat", (chat(*call),), chatflow=True)

    summarize = SpanSpec("invoke_workflow", "summarize", (chat("gpt-4o-mini", 200, 20),))
    support = ("invoke_agent", "support-bot")
    return [
        root(SpanSpec(*support, (
            support_chat("gpt-4o", 100, 50),
            SpanSpec("execute_tool", "summarize", (summarize,)),
        )), "alice", "acme"),
        root(SpanSpec("invoke_workflow", "translate", (
            chat("qwen-max", 30, 30),
            SpanSpec("invoke_workflow", "summarize", (chat("gpt-4o-mini", 10, 5),)),
        )), "bob", "acme"),
        root(SpanSpec(*support, (support_chat("gpt-4o", 1000, 500),)), "dave", None),
        root(SpanSpec(*support, (chat("gpt-4o", 7, 3),)), "carol", "globex"),
    ]


def test_expected_totals_reproduce_the_worked_example_table():
    directory = load_directory(WORKED_EXAMPLE_DIRECTORY)
    totals = expected_totals(_worked_example(), directory)
    acme = totals["tenants"]["acme"]
    assert acme["agents"] == {"support-bot": 370}
    assert acme["workflows"] == {"summarize": 220, "translate": 75}
    assert acme["models"] == {"gpt-4o": 150, "gpt-4o-mini": 235, "qwen-max": 60}
    assert acme["members"] == {"alice": 370, "bob": 75}
    assert totals["tenants"]["globex"]["total"] == 10
    assert totals["unattributed"] == {"ambiguous_tenant": 0, "no_caller": 0, "not_member": 1500}
    assert totals["agent_invocations"] == {"support-bot": 3}
    assert totals["workflow_runs"] == {"summarize": 2, "translate": 1}
