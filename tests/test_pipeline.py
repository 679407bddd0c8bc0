"""The service's writer path with a fake clock: dedupe window and idle traces, no sleeping."""

from __future__ import annotations

import pytest

from exporter.otlp import WireSpan
from exporter.pipeline import Pipeline
from exporter.store import Store
from otel_processor.directory_source import DirectorySource
from otel_processor.ledger import Ledger
from otel_processor.prices_source import load_prices
from tests.scenarios import WORKED_EXAMPLE_DIRECTORY

T = b"\x01" * 16
ROOT, CHAT = b"\x02" * 8, b"\x03" * 8


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def span(span_id, parent=None, **attributes) -> WireSpan:
    return WireSpan(T, span_id, parent, "s", attributes, {}, False, 0, 1)


ROOT_SPAN = span(ROOT, None, **{"gen_ai.operation.name": "invoke_agent",
                                "gen_ai.agent.id": "support-bot", "enduser.id": "alice",
                                "tenant.id": "acme"})
CHAT_SPAN = span(CHAT, ROOT, **{"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                "gen_ai.usage.input_tokens": 8, "gen_ai.usage.output_tokens": 2})


@pytest.fixture
def make(tmp_path):
    made = []

    def build(**kwargs) -> tuple[Pipeline, Clock]:
        clock = Clock()
        directory = DirectorySource(WORKED_EXAMPLE_DIRECTORY)
        directory.refresh()
        fields = dict(idle_timeout=30.0, max_traces=100, max_spans=1000, dedupe_retention=60.0)
        store_options = kwargs.pop("store_options", {})
        fields.update(kwargs)
        pipeline = Pipeline(store=Store(tmp_path / "state", **store_options), directory=directory,
                            prices=load_prices(None), ledger=Ledger(), clock=clock, **fields)
        pipeline.start()
        made.append(pipeline)
        return pipeline, clock

    yield build
    for pipeline in made:
        pipeline.close()


def alice_tokens(pipeline: Pipeline) -> int:
    snap = pipeline.ledger.snapshot()
    return sum(snap.value("llm_member_tokens", "acme", "alice", t) for t in ("input", "output"))


def test_a_span_resent_within_the_retention_window_counts_once(make):
    pipeline, clock = make()
    assert pipeline.submit([CHAT_SPAN, ROOT_SPAN]).ok
    clock.now += 59
    outcome = pipeline.submit([CHAT_SPAN, ROOT_SPAN])
    assert (outcome.ok, outcome.accepted, outcome.duplicates) == (True, 0, 2)
    assert alice_tokens(pipeline) == 10
    assert pipeline.ledger.snapshot().value("llm_exporter_duplicate_spans") == 2


def test_the_retention_window_is_bounded_in_time(make):
    pipeline, clock = make(idle_timeout=10.0)
    assert pipeline.submit([CHAT_SPAN, ROOT_SPAN]).ok
    clock.now += 61  # past the window (and past the idle timeout: the trace is closed)
    assert pipeline.submit([]).ok
    assert pipeline.submit([CHAT_SPAN, ROOT_SPAN]).accepted == 2  # no longer recognised
    assert alice_tokens(pipeline) == 20


def test_an_incomplete_trace_is_attributed_when_idle_with_what_is_known(make):
    pipeline, clock = make(idle_timeout=30.0)
    assert pipeline.submit([CHAT_SPAN]).ok  # its parent never comes
    assert pipeline.pending_traces == 1
    clock.now += 29
    pipeline.submit([])
    assert pipeline.pending_traces == 1
    clock.now += 2
    pipeline.submit([])
    snap = pipeline.ledger.snapshot()
    assert pipeline.pending_traces == 0
    assert snap.value("llm_exporter_traces_flushed", "timeout") == 1
    assert snap.value("llm_unattributed_tokens", "no_caller") == 10


def test_spans_the_normaliser_refuses_are_counted_and_answered(make):
    pipeline, _ = make()
    bad = span(b"\x04" * 8, ROOT, **{"gen_ai.operation.name": "chat",
                                     "gen_ai.usage.input_tokens": -1})
    outcome = pipeline.submit([bad, CHAT_SPAN, ROOT_SPAN], [("invalid_span_id", 2)])
    assert (outcome.ok, outcome.accepted, outcome.rejected) == (True, 2, 3)
    snap = pipeline.ledger.snapshot()
    assert snap.value("llm_exporter_spans_rejected", "invalid_token_count") == 1
    assert snap.value("llm_exporter_spans_rejected", "invalid_span_id") == 2
    assert snap.value("llm_exporter_spans_received", "otlp_http") == 5


def test_a_span_resent_after_its_trace_closed_and_was_checkpointed_counts_once(make):
    """The window is on disk: once checkpointed and closed, only the store knows an id."""
    pipeline, clock = make(idle_timeout=1.0, store_options={"checkpoint_interval": 0.0})
    assert pipeline.submit([CHAT_SPAN, ROOT_SPAN]).ok
    for i in range(20):  # twenty other traces, each group checkpointed
        trace_id = bytes([0x10 + i]) * 16
        other = WireSpan(trace_id, b"\x09" * 8, None, "s", {}, {}, False, 0, 1)
        clock.now += 0.5
        assert pipeline.submit([other]).ok
    clock.now += 2  # the first trace is closed too: only the dedupe window knows it
    assert pipeline.submit([]).ok
    outcome = pipeline.submit([CHAT_SPAN, ROOT_SPAN])
    assert (outcome.ok, outcome.accepted, outcome.duplicates) == (True, 0, 2)
    assert alice_tokens(pipeline) == 10


class _FailingStore(Store):
    """A store whose commits fail while ``failing`` is set (a full disk)."""

    failing = False

    def commit(self, batch):
        if self.failing:
            from exporter.store import StoreError

            raise StoreError("disk full")
        return super().commit(batch)


def test_a_failed_commit_changes_nothing_visible_and_the_retry_counts_once(tmp_path):
    store = _FailingStore(tmp_path / "state")
    directory = DirectorySource(WORKED_EXAMPLE_DIRECTORY)
    directory.refresh()
    pipeline = Pipeline(store=store, directory=directory, prices=load_prices(None),
                        ledger=Ledger(), idle_timeout=30.0, max_traces=100, max_spans=1000,
                        dedupe_retention=60.0, clock=Clock())
    pipeline.start()
    try:
        assert pipeline.submit([ROOT_SPAN]).ok
        before = pipeline.ledger.snapshot().counters
        store.failing = True
        outcome = pipeline.submit([CHAT_SPAN])
        assert not outcome.ok  # answered 503: the client retries
        assert pipeline.ledger.snapshot().counters == before
        store.failing = False
        assert pipeline.submit([CHAT_SPAN]).ok  # the retry
        assert alice_tokens(pipeline) == 10
    finally:
        pipeline.close()


def test_the_pipeline_is_not_ready_before_a_directory_loaded(tmp_path):
    directory = DirectorySource(tmp_path / "missing.yaml")
    directory.refresh()
    pipeline = Pipeline(store=Store(tmp_path / "state"), directory=directory,
                        prices=load_prices(None), ledger=Ledger(), idle_timeout=30.0,
                        max_traces=100, max_spans=1000, dedupe_retention=60.0)
    try:
        assert pipeline.ready is False
    finally:
        pipeline.close()


def test_a_refusal_is_counted_without_waiting_for_a_commit_and_committed_with_the_next(make):
    import time

    pipeline, _ = make()
    pipeline.stop()  # no writer: nothing can be committed now
    started = time.monotonic()
    for _ in range(1000):  # a flood of unauthenticated requests
        pipeline.count("unauthorized")
    assert time.monotonic() - started < 1.0
    assert pipeline.ledger.snapshot().value("llm_exporter_spans_rejected", "unauthorized") == 0
    pipeline.start()
    assert pipeline.submit([CHAT_SPAN, ROOT_SPAN]).ok  # the next group carries the counts
    assert pipeline.ledger.snapshot().value("llm_exporter_spans_rejected", "unauthorized") == 1000
