"""The span processor's contract with its host: never raise, never block, bounded memory."""

from __future__ import annotations

import math
import os
import time

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


def test_spans_wait_for_a_first_directory_and_are_then_counted_exactly(pipeline, tmp_path):
    from otel_processor.directory_source import DirectorySource

    path = tmp_path / "directory.yaml"
    source = DirectorySource(path)
    assert source.refresh() is False  # not there yet: nothing has ever loaded
    p = pipeline(directory=source)
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 4, 4)
    assert p.processor.force_flush(300) is False  # the spans wait for a directory
    assert p.registry.get_sample_value("llm_unattributed_tokens_total",
                                       {"reason": "not_member"}) == 0
    path.write_text(WORKED_EXAMPLE_DIRECTORY.read_text())
    assert source.refresh() is True
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 8
    assert p.value("llm_unattributed_tokens_total", reason="not_member") == 0
    assert p.value("llm_exporter_directory_refresh_failures_total") == 1


def test_spans_that_do_not_fit_while_no_directory_loaded_are_counted_as_no_directory(
    pipeline, tmp_path
):
    from otel_processor.directory_source import DirectorySource

    source = DirectorySource(tmp_path / "missing.yaml")
    p = pipeline(directory=source, max_queue_size=4)
    for _ in range(6):
        chat(p.tracer, "gpt-4o", 1, 1, **caller("alice", "acme"))
    p.processor.shutdown()  # still no directory: what waited is refused, counted
    assert p.value("llm_exporter_spans_rejected_total", reason="no_directory") == 6
    assert p.value("llm_exporter_spans_received_total", transport="in_process") == 6
    assert p.value("llm_unattributed_tokens_total", reason="not_member") == 0


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
    assert processor.force_flush()
    tokens = registry.get_sample_value(
        "llm_agent_tokens_total", {"tenant": "acme", "agent": "support-bot", "type": "input"})
    assert tokens == 6
    provider.shutdown()


def test_open_spans_are_bounded_and_the_overflow_is_counted(pipeline):
    p = pipeline(max_open_spans=10)
    spans = [p.tracer.start_span(f"s{i}") for i in range(25)]
    assert p.value("llm_exporter_traces_flushed_total", reason="capacity") == 15
    assert p.value("llm_exporter_traces_pending") == 10
    for span in spans:
        span.end()
    assert p.value("llm_exporter_traces_pending") == 0
    assert p.value("llm_exporter_traces_flushed_total", reason="complete") == 25


def test_the_queue_is_bounded_and_what_does_not_fit_is_counted(pipeline):
    p = pipeline(max_queue_size=8, schedule_delay=60)
    p.processor._wake_at = 10**9  # the worker sleeps: the queue fills up
    for _ in range(20):
        chat(p.tracer, "gpt-4o", 1, 1, **caller("alice", "acme"))
    assert len(p.processor._queue) == 8  # starts and ends of the first four
    assert p.value("llm_exporter_spans_rejected_total", reason="queue_full") == 16
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 8
    assert p.value("llm_exporter_spans_received_total", transport="in_process") == 20


def test_children_that_end_after_their_parent_find_their_ancestors(pipeline):
    p = pipeline()
    root = p.tracer.start_span("invoke_agent support-bot", attributes={
        "gen_ai.operation.name": "invoke_agent", **caller("alice", "acme")})
    ctx = trace.set_span_in_context(root)
    wf = p.tracer.start_span("invoke_workflow summarize", context=ctx, attributes={
        "gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.id": "summarize"})
    stream = p.tracer.start_span("chat gpt-4o", context=trace.set_span_in_context(wf),
                                 attributes={"gen_ai.operation.name": "chat",
                                             "gen_ai.request.model": "gpt-4o"})
    root.end()  # the agent returns while the response still streams
    wf.end()
    assert p.samples("llm_model_tokens_total") == {}  # waits for its open child
    stream.set_attributes({"gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 12})
    stream.end()
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 42
    assert p.tokens("llm_workflow_tokens_total", tenant="acme", workflow="summarize") == 42
    assert p.value("llm_agent_invocations_total", owner_tenant="acme", agent="support-bot") == 1


def test_on_end_does_constant_work_and_the_worker_counts(pipeline):
    p = pipeline(schedule_delay=60)
    p.processor._wake_at = 10**9
    chat(p.tracer, "gpt-4o", 3, 3, **caller("alice", "acme"))
    assert len(p.processor._queue) == 2  # its start and its end, nothing read yet
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 6


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


def test_on_end_never_raises_into_the_application(pipeline):
    p = pipeline()

    class Broken(dict):
        def items(self):
            raise RuntimeError("boom")

    span = p.tracer.start_span("x")
    span._attributes = Broken(x=1)  # an attribute mapping that explodes when read
    span.end()
    assert p.value("llm_exporter_spans_rejected_total", reason="invalid_attribute") == 1
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 1, 1)
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 2


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


def test_an_ancestor_is_read_as_it_ended_for_all_its_children(pipeline):
    """As in the service, which sees each span once it ended: a caller the agent learns
    after its first model call still covers that call."""
    p = pipeline()
    with agent(p.tracer, "support-bot") as _:
        chat(p.tracer, "gpt-4o", 1, 1)  # no caller yet
        trace.get_current_span().set_attributes(caller("alice", "acme"))
        chat(p.tracer, "gpt-4o", 10, 2)
    assert p.value("llm_unattributed_tokens_total", reason="no_caller") == 0
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 14


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


def test_a_forked_child_runs_its_own_worker_and_directory_refresh(tmp_path):
    """A pre-fork server's worker: the child counts its spans and refreshes the directory."""
    path = tmp_path / "directory.yaml"
    path.write_text(WORKED_EXAMPLE_DIRECTORY.read_text())
    registry = CollectorRegistry()
    processor = TokenAttributionProcessor(path, registry=registry, refresh_interval=0.05)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's atexit
        code = 1
        try:
            path.write_text(path.read_text().replace("id: bob", "id: bobby"))
            deadline = time.monotonic() + 10
            while processor._directory.current.tenants_of("bobby") == frozenset():
                if time.monotonic() > deadline:
                    raise SystemExit("the child's directory never refreshed")
                time.sleep(0.02)
            with agent(tracer, "support-bot", **caller("bobby", "acme")):
                chat(tracer, "gpt-4o", 5, 2)
            assert processor.force_flush(10_000)
            value = registry.get_sample_value(
                "llm_member_tokens_total", {"tenant": "acme", "member": "bobby", "type": "input"})
            os.write(write, str(value).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    reported = os.read(read, 100).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert float(reported) == 5
    provider.shutdown()


def test_with_a_state_dir_counters_survive_a_restart_of_the_host(tmp_path):
    from exporter.store import StateDirLocked

    state = tmp_path / "state"

    def run() -> tuple[TracerProvider, CollectorRegistry]:
        registry = CollectorRegistry()
        provider = TracerProvider()
        provider.add_span_processor(TokenAttributionProcessor(
            WORKED_EXAMPLE_DIRECTORY, registry=registry, state_dir=state))
        tracer = provider.get_tracer("t")
        with agent(tracer, "support-bot", **caller("alice", "acme")):
            chat(tracer, "gpt-4o", 10, 5)
        return provider, registry

    first, _ = run()
    with pytest.raises(StateDirLocked, match="in use"):  # one process per state directory
        TokenAttributionProcessor(WORKED_EXAMPLE_DIRECTORY, state_dir=state)
    first.shutdown()  # the host stops: counted, committed, the directory released
    second, registry = run()
    second.force_flush()
    labels = {"tenant": "acme", "member": "alice", "type": "input"}
    assert registry.get_sample_value("llm_member_tokens_total", labels) == 20
    assert registry.get_sample_value("llm_agent_users",
                                     {"owner_tenant": "acme", "agent": "support-bot"}) == 1
    second.shutdown()


def test_a_span_that_starts_after_its_parent_ended_still_finds_it(pipeline):
    """LiteLLM writes its model-call span from a logging thread once the call returned:
    the agent span above it has often ended, and the worker has seen its trace finish.
    The trace stays as context (``context_linger``) and the late span counts for its agent."""
    p = pipeline()
    tracer = p.tracer
    with tracer.start_as_current_span(
        "invoke_agent support-bot",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "support-bot",
                    **caller("alice", "acme")},
    ) as parent:
        ctx = trace.set_span_in_context(parent)
    time.sleep(0.5)  # the worker drains (every 0.1 s): the trace is finished, lingering
    start = time.time_ns() - 10**9  # started before it was written, as LiteLLM's is
    late = tracer.start_span("chat gpt-4o", context=ctx, start_time=start, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 8})
    late.end()
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 20
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 20
    assert p.value("llm_exporter_traces_flushed_total", reason="complete") == 1


def test_context_linger_must_be_positive():
    with pytest.raises(ValueError, match="context_linger"):
        TokenAttributionProcessor(WORKED_EXAMPLE_DIRECTORY, context_linger=0)


def test_finished_traces_make_room_before_open_ones_are_flushed_for_capacity(pipeline):
    """Traces kept as context (all their spans ended) are closed as complete when the
    bounds are reached: capacity flushes stay for traces still open."""
    p = pipeline(max_open_traces=5, context_linger=3600)
    for i in range(20):
        with p.tracer.start_as_current_span(
            f"invoke_agent support-bot {i}",
            attributes={"gen_ai.operation.name": "invoke_agent",
                        "gen_ai.agent.id": "support-bot", **caller("alice", "acme")},
        ):
            chat(p.tracer, "gpt-4o", 3, 2)
        time.sleep(0.02)
    time.sleep(0.3)
    assert p.processor._assembler.open_traces <= 5
    assert p.value("llm_exporter_traces_flushed_total", reason="capacity") == 0
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 100
    assert p.value("llm_exporter_traces_flushed_total", reason="complete") == 20
