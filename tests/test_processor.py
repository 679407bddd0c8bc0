"""The span processor's contract with its host: never raise, never block, bounded memory."""

from __future__ import annotations

import logging
import math

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from prometheus_client import CollectorRegistry

from otel_processor import TokenAttributionProcessor
from tests.scenarios import WORKED_EXAMPLE_DIRECTORY, agent, caller, chat


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("many", "invalid_token_count"),
        (-3, "invalid_token_count"),
        (math.nan, "invalid_token_count"),
        (10**15, "invalid_token_count"),
    ],
)
def test_bad_token_counts_are_counted_and_the_next_span_still_counts(pipeline, value, reason):
    p = pipeline()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", value, 1)
        chat(p.tracer, "gpt-4o", 10, 1)
    assert p.value("llm_exporter_spans_rejected_total", reason=reason) == 1
    assert p.tokens("llm_model_tokens_total", tenant="acme", model="gpt-4o") == 11


def test_token_count_written_as_a_string_is_counted_exactly(pipeline):
    p = pipeline()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", "120", "3")
    assert p.tokens("llm_model_tokens_total", tenant="acme", model="gpt-4o") == 123


def test_spans_without_ids_are_counted_under_unknown(pipeline):
    p = pipeline()
    with p.tracer.start_as_current_span(
        "invoke_agent",
        attributes={"gen_ai.operation.name": "invoke_agent", **caller("alice", "acme")},
    ):
        with p.tracer.start_as_current_span(
            "invoke_workflow", attributes={"gen_ai.operation.name": "invoke_workflow"}
        ):
            chat(p.tracer, "", 5, 5)
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="unknown") == 10
    assert p.tokens("llm_workflow_tokens_total", tenant="acme", workflow="unknown") == 10
    assert p.tokens("llm_model_tokens_total", tenant="acme", model="unknown") == 10


def test_every_span_is_counted_as_received(pipeline):
    p = pipeline()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 1, 1)
        with p.tracer.start_as_current_span("http GET"):
            pass
    assert p.value("llm_exporter_spans_received_total", transport="in_process") == 3
    assert p.value("llm_exporter_spans_received_total", transport="otlp_http") == 0


def test_a_directory_that_fails_to_load_is_counted_and_the_tokens_are_not_lost(pipeline, tmp_path):
    missing = tmp_path / "nope.yaml"
    p = pipeline(directory=missing)
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 4, 4)
    # the background thread retries at once when nothing was ever loaded: 1 or 2 attempts
    assert p.value("llm_exporter_directory_refresh_failures_total") in (1, 2)
    assert p.value("llm_unattributed_tokens_total", reason="not_member") == 8


def test_an_invalid_directory_is_counted_and_the_last_good_one_stays(pipeline, tmp_path):
    path = tmp_path / "directory.yaml"
    path.write_text(WORKED_EXAMPLE_DIRECTORY.read_text())
    p = pipeline(directory=path)
    path.write_text("tenants: [{members: 3}]\n")
    assert p.processor._directory.refresh() is False
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 4, 4)
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 8
    assert p.value("llm_exporter_directory_refresh_failures_total") == 1
    assert p.value("llm_exporter_directory_last_success_timestamp_seconds") > 0


class _FixedIds(IdGenerator):
    """Hands out the span ids a test asks for, to build parent cycles."""

    def __init__(self, span_ids):
        self._span_ids = iter(span_ids)

    def generate_span_id(self) -> int:
        return next(self._span_ids)

    def generate_trace_id(self) -> int:
        return 0xABC


def test_a_parent_cycle_ends_the_walk_instead_of_hanging(tmp_path):
    registry = CollectorRegistry()
    processor = TokenAttributionProcessor(WORKED_EXAMPLE_DIRECTORY, registry=registry)
    provider = TracerProvider(id_generator=_FixedIds([2, 1, 3]))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")

    def ctx(span_id):
        sc = trace.SpanContext(
            0xABC, span_id, is_remote=False, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(sc))

    b = tracer.start_span("b", context=ctx(1), attributes=caller("alice", "acme"))  # id 2
    a = tracer.start_span("a", context=ctx(2), attributes={  # id 1: a -> b -> a ...
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "support-bot"})
    model = tracer.start_span("chat", context=trace.set_span_in_context(a), attributes={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 6, "gen_ai.usage.output_tokens": 1})
    model.end()
    a.end()
    b.end()
    tokens = registry.get_sample_value(
        "llm_agent_tokens_total", {"tenant": "acme", "agent": "support-bot", "type": "input"})
    assert tokens == 6
    provider.shutdown()


def test_open_spans_are_bounded_and_the_overflow_is_counted(pipeline):
    p = pipeline(max_open_spans=10)
    spans = [p.tracer.start_span(f"s{i}") for i in range(25)]
    assert len(p.processor._open) == 10
    assert p.value("llm_exporter_traces_flushed_total", reason="capacity") == 15
    for span in spans:
        span.end()
    assert len(p.processor._open) == 0
    assert p.value("llm_exporter_traces_pending") == 0


def test_pending_traces_counts_traces_with_open_spans(pipeline):
    p = pipeline()
    root = p.tracer.start_span("root")
    other = p.tracer.start_span("other")
    child = p.tracer.start_span("child", context=trace.set_span_in_context(root))
    assert p.value("llm_exporter_traces_pending") == 2
    child.end()
    root.end()
    assert p.value("llm_exporter_traces_pending") == 1
    other.end()
    assert p.value("llm_exporter_traces_pending") == 0


def test_on_end_never_raises_into_the_application(pipeline, caplog):
    p = pipeline()

    class Broken(dict):
        def items(self):
            raise RuntimeError("boom")

    span = p.tracer.start_span("x")
    span._attributes = Broken(x=1)  # an attribute mapping that explodes when read
    with caplog.at_level(logging.ERROR):
        span.end()
    assert p.value("llm_exporter_spans_rejected_total", reason="internal_error") == 1
    assert "on_end failed" in caplog.text


def test_ancestors_that_set_their_attributes_only_at_the_end_are_waited_for(pipeline):
    """opentelemetry-util-genai starts agent and workflow spans empty and fills them at end."""
    p = pipeline()
    root = p.tracer.start_span("invoke_agent")
    root_ctx = trace.set_span_in_context(root)
    wf = p.tracer.start_span("invoke_workflow summarize", context=root_ctx)
    with trace.use_span(wf):
        chat(p.tracer, "gpt-4o", 12, 3)
        assert p.samples("llm_model_tokens_total") == {}  # waiting, not lost
    wf.set_attribute("gen_ai.operation.name", "invoke_workflow")
    wf.end()
    root.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "support-bot",
                         **caller("alice", "acme")})
    root.end()
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 15
    assert p.tokens("llm_workflow_tokens_total", tenant="acme", workflow="summarize") == 15
    assert p.value("llm_workflow_runs_total", owner_tenant="acme", workflow="summarize") == 1
    assert p.value("llm_agent_users", owner_tenant="acme", agent="support-bot") == 1


def test_an_attribute_set_on_an_open_ancestor_after_a_first_child_is_seen_by_later_children(
    pipeline,
):
    p = pipeline()
    with agent(p.tracer, "support-bot") as _:
        chat(p.tracer, "gpt-4o", 1, 1)  # no caller yet
        trace.get_current_span().set_attributes(caller("alice", "acme"))
        chat(p.tracer, "gpt-4o", 10, 2)
    assert p.value("llm_unattributed_tokens_total", reason="no_caller") == 2
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 12


def test_waiting_spans_are_counted_at_shutdown(pipeline):
    p = pipeline()
    root = p.tracer.start_span("empty root")
    with trace.use_span(root):
        chat(p.tracer, "gpt-4o", 5, 5, **caller("alice", "acme"))
    p.processor.shutdown()
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 10


def test_shutdown_is_idempotent_and_later_spans_are_counted_not_attributed(pipeline):
    p = pipeline()
    assert p.processor.force_flush() is True
    span = p.tracer.start_span("late", attributes={"gen_ai.operation.name": "chat"})
    p.processor.shutdown()
    p.processor.shutdown()
    span.end()
    assert p.value("llm_exporter_spans_rejected_total", reason="shutdown") == 1
    assert p.processor.force_flush(10) is True


def test_the_processor_never_touches_the_global_registry():
    from prometheus_client import REGISTRY

    before = set(REGISTRY._names_to_collectors)
    processor = TokenAttributionProcessor(WORKED_EXAMPLE_DIRECTORY)
    assert set(REGISTRY._names_to_collectors) == before
    assert processor.registry is not REGISTRY
    processor.shutdown()


def test_a_plain_readable_span_without_the_sdk_internals_is_read_through_the_public_api(
    pipeline,
):
    from opentelemetry.sdk.trace import ReadableSpan

    p = pipeline()
    context = trace.SpanContext(0xAB, 0xCD, is_remote=False)
    span = ReadableSpan(
        name="chat gpt-4o",
        context=context,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 9, "gen_ai.usage.output_tokens": 1,
                    **caller("alice", "acme")},
    )
    p.processor.on_end(span)
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 10
