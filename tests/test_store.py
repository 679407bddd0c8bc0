"""The SQLite ledger: what is committed comes back exactly, whole batches only, after a kill."""

from __future__ import annotations

import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import typing
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.store import (
    FILENAME,
    SCHEMA_VERSION,
    Batch,
    Loaded,
    PendingSpan,
    Store,
    StoreError,
)
from otel_processor.conventions import SpanRecord

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL_CALL = SpanRecord(
    kind="model", input_tokens=120, output_tokens=30, has_usage=True, model="gpt-4o",
    caller="alice", tenant="acme", duration_ns=1_500_000,
)
AGENT_RUN = SpanRecord(kind="agent", agent_id="support-bot", caller="alice")
AWKWARD = [
    "", " ", "|", "a|b", '"', "'", "\\", "[", "]", ",", "\x00", "\x1f", "\n", "\t",
    "é", "日本語", "😀", "\u200b", "\ud800", "\udfff", '["x"]', "null", "__overflow__",
]


def trace(n: int) -> bytes:
    return n.to_bytes(16, "big")


def span_id(n: int) -> bytes:
    return n.to_bytes(8, "big")


def pending(t: int, s: int, record=MODEL_CALL, *, parent: int | None = None,
            attributed: bool = False, at: float = 100.0) -> PendingSpan:
    return PendingSpan(trace(t), span_id(s), None if parent is None else span_id(parent),
                       record, attributed, at)


def reload(state_dir) -> Loaded:
    """What a restarted service would find."""
    store = Store(state_dir)
    try:
        return store.load()
    finally:
        store.close()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path)
    yield s
    s.close()


# -- round trips ---------------------------------------------------------------------------


def test_a_committed_batch_loads_back_exactly_after_reopening(store, tmp_path):
    store.commit(Batch(
        new_spans=[pending(1, 1, AGENT_RUN, attributed=True, at=10.0),
                   pending(1, 2, parent=1, at=10.5), pending(2, 7, at=11.0)],
        increments=[("llm_model_tokens", ("acme", "gpt-4o", "input"), 120),
                    ("llm_model_tokens", ("acme", "gpt-4o", "output"), 30),
                    ("llm_agent_invocations", ("acme", "support-bot"), 1),
                    ("llm_exporter_duplicate_spans", (), 2)],
        agent_users=[("acme", "support-bot", "alice")],
        seen=[(trace(1), span_id(1), 10.0), (trace(1), span_id(2), 10.5),
              (trace(2), span_id(7), 11.0)],
    ))
    store.commit(Batch(attributed=[(trace(1), span_id(2))]))
    store.close()

    assert reload(tmp_path) == Loaded(
        totals={
            "llm_model_tokens": {("acme", "gpt-4o", "input"): 120,
                                 ("acme", "gpt-4o", "output"): 30},
            "llm_agent_invocations": {("acme", "support-bot"): 1},
            "llm_exporter_duplicate_spans": {(): 2},
        },
        agent_users={("acme", "support-bot", "alice")},
        pending=[pending(1, 1, AGENT_RUN, attributed=True, at=10.0),
                 pending(1, 2, parent=1, attributed=True, at=10.5), pending(2, 7, at=11.0)],
        seen=[(trace(1), span_id(1), 10.0), (trace(1), span_id(2), 10.5),
              (trace(2), span_id(7), 11.0)],
    )


def test_increments_add_up_within_a_batch_and_across_commits(store, tmp_path):
    key = ("acme", "gpt-4o", "input")
    store.commit(Batch(increments=[("llm_model_tokens", key, 5), ("llm_model_tokens", key, 7)]))
    store.commit(Batch(increments=[("llm_model_tokens", key, 30)]))
    store.close()
    store = Store(tmp_path)
    store.commit(Batch(increments=[("llm_model_tokens", key, 100)]))
    store.close()

    assert reload(tmp_path).totals == {"llm_model_tokens": {key: 142}}


def test_a_zero_increment_creates_the_series_at_zero(store, tmp_path):
    store.commit(Batch(increments=[("llm_unattributed_tokens", ("no_caller",), 0)]))
    store.close()

    assert reload(tmp_path).totals == {"llm_unattributed_tokens": {("no_caller",): 0}}


@pytest.mark.parametrize("amounts", [
    [2**63 - 1, 1],
    [2**62 - 1, 1, 2**62],
    [2**100, 2**100, -(2**99)],
    [-5, 3],
    [-(2**63), -(2**63)],
])
def test_totals_stay_exact_beyond_64_bits(store, tmp_path, amounts):
    for amount in amounts:
        store.commit(Batch(increments=[("llm_model_cost_usd", ("acme", "gpt-4o"), amount)]))
    store.close()

    assert reload(tmp_path).totals == {"llm_model_cost_usd": {("acme", "gpt-4o"): sum(amounts)}}


def test_a_span_already_pending_keeps_its_first_copy(store, tmp_path):
    store.commit(Batch(new_spans=[pending(1, 1, MODEL_CALL, at=1.0)]))
    store.commit(Batch(new_spans=[pending(1, 1, AGENT_RUN, attributed=True, at=2.0)]))
    store.close()

    assert reload(tmp_path).pending == [pending(1, 1, MODEL_CALL, at=1.0)]


def test_attributed_marks_only_the_named_spans(store, tmp_path):
    store.commit(Batch(new_spans=[pending(1, 1), pending(1, 2), pending(2, 1)]))
    store.commit(Batch(attributed=[(trace(1), span_id(2)), (trace(9), span_id(9))]))
    store.close()

    assert [p.attributed for p in reload(tmp_path).pending] == [False, True, False]


def test_dropping_a_trace_removes_all_its_pending_spans_and_no_other(store, tmp_path):
    store.commit(Batch(new_spans=[pending(1, 1), pending(2, 1), pending(1, 2)]))
    store.commit(Batch(new_spans=[pending(1, 3), pending(3, 1)], dropped_traces=[trace(1)]))
    store.close()

    assert reload(tmp_path).pending == [pending(2, 1), pending(3, 1)]


def test_pending_spans_load_in_received_order(store, tmp_path):
    store.commit(Batch(new_spans=[pending(5, 1), pending(1, 1), pending(9, 1)]))
    store.commit(Batch(dropped_traces=[trace(9)]))
    store.commit(Batch(new_spans=[pending(0, 1), pending(5, 2)]))
    store.close()

    assert [(p.trace_id, p.span_id) for p in reload(tmp_path).pending] == [
        (trace(5), span_id(1)), (trace(1), span_id(1)), (trace(0), span_id(1)),
        (trace(5), span_id(2)),
    ]


def test_prune_removes_only_seen_ids_older_than_the_cutoff(store, tmp_path):
    store.commit(Batch(seen=[(trace(1), span_id(1), 10.0), (trace(2), span_id(1), 20.0)]))
    store.commit(Batch(seen=[(trace(3), span_id(1), 30.0)], prune_seen_before=20.0))
    store.close()

    assert reload(tmp_path).seen == [(trace(2), span_id(1), 20.0), (trace(3), span_id(1), 30.0)]


def test_seen_ids_load_oldest_first_each_once_at_its_latest_time(store, tmp_path):
    store.commit(Batch(seen=[(trace(1), span_id(1), 30.0), (trace(2), span_id(2), 10.0)]))
    store.commit(Batch(seen=[(trace(2), span_id(2), 40.0), (trace(3), span_id(3), 20.0)]))
    store.close()

    assert reload(tmp_path).seen == [
        (trace(3), span_id(3), 20.0), (trace(1), span_id(1), 30.0), (trace(2), span_id(2), 40.0),
    ]


def test_agent_users_are_a_set(store, tmp_path):
    store.commit(Batch(agent_users=[("acme", "bot", "alice"), ("acme", "bot", "alice")]))
    store.commit(Batch(agent_users=[("acme", "bot", "alice"), ("acme", "bot", "bob")]))
    store.close()

    assert reload(tmp_path).agent_users == {("acme", "bot", "alice"), ("acme", "bot", "bob")}


@pytest.mark.parametrize("value", AWKWARD)
def test_awkward_label_values_round_trip_exactly(store, tmp_path, value):
    store.commit(Batch(
        increments=[("fam", (value, "x", value), 1), ("fam", (value,), 2)],
        agent_users=[(value, value, "x")],
    ))
    store.close()

    loaded = reload(tmp_path)
    assert loaded.totals == {"fam": {(value, "x", value): 1, (value,): 2}}
    assert loaded.agent_users == {(value, value, "x")}


# Every code point, lone surrogates included, and the awkward values above.
LABEL_TEXT = st.text(st.characters(exclude_categories=())) | st.sampled_from(AWKWARD)


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.tuples(LABEL_TEXT, st.lists(LABEL_TEXT, max_size=4).map(tuple)),
                     max_size=8, unique=True))
def test_any_label_tuples_round_trip_exactly(tmp_path_factory, keys):
    state_dir = tmp_path_factory.mktemp("labels")
    with_store = Store(state_dir)
    with_store.commit(Batch(increments=[(family, labels, 1) for family, labels in keys]))
    with_store.close()

    expected: dict[str, dict[tuple[str, ...], int]] = {}
    for family, labels in keys:
        expected.setdefault(family, {})[labels] = 1
    assert reload(state_dir).totals == expected


def _strategy(hint) -> st.SearchStrategy:
    options = typing.get_args(hint)
    if options:  # X | None
        return st.one_of(*map(_strategy, options))
    return {str: LABEL_TEXT, int: st.integers(), bool: st.booleans(), type(None): st.none()}[hint]


HINTS = typing.get_type_hints(SpanRecord)
RECORDS = st.builds(SpanRecord, **{f.name: _strategy(HINTS[f.name]) for f in fields(SpanRecord)})


@settings(max_examples=60, deadline=None)
@given(records=st.lists(RECORDS, min_size=1, max_size=5))
def test_any_span_record_round_trips_exactly(tmp_path_factory, records):
    state_dir = tmp_path_factory.mktemp("records")
    spans = [pending(1, i, r) for i, r in enumerate(records)]
    with_store = Store(state_dir)
    with_store.commit(Batch(new_spans=spans))
    with_store.close()

    assert reload(state_dir).pending == spans


def test_a_pending_span_written_by_another_span_record_loads_by_field_name(store, tmp_path):
    store.close()
    db = sqlite3.connect(tmp_path / FILENAME)  # as an older program would have written it
    db.execute("INSERT INTO record_formats (id, fields) VALUES (99, ?)",
               ('["caller","gone_field","input_tokens","kind"]',))
    db.execute("INSERT INTO pending (trace_id, span_id, parent_id, format, record, attributed,"
               " received_at) VALUES (?, ?, NULL, 99, ?, 0, 5.0)",
               (trace(1), span_id(1), '["bob",123,77,"model"]'))
    db.commit()
    db.close()

    assert reload(tmp_path).pending == [
        pending(1, 1, SpanRecord(kind="model", input_tokens=77, caller="bob"), at=5.0)
    ]


# -- all or nothing ------------------------------------------------------------------------

BASELINE = Batch(
    new_spans=[pending(1, 1)], increments=[("fam", ("a",), 10)],
    agent_users=[("acme", "bot", "alice")], seen=[(trace(1), span_id(1), 1.0)],
)


def _with_good_parts(**bad) -> Batch:
    """A batch that changes everything the baseline holds, plus one bad part."""
    good = dict(
        new_spans=[pending(2, 1)], attributed=[(trace(1), span_id(1))],
        dropped_traces=[trace(1)], increments=[("fam", ("a",), 5), ("fam", ("b",), 1)],
        agent_users=[("acme", "bot", "bob")], seen=[(trace(2), span_id(1), 2.0)],
        prune_seen_before=1.5,
    )
    for name, value in bad.items():
        good[name] = good[name] + value if isinstance(value, list) else value
    return Batch(**good)


@pytest.mark.parametrize("bad", [
    pytest.param(_with_good_parts(increments=[("fam", ("c",), "3")]), id="str amount"),
    pytest.param(_with_good_parts(increments=[("fam", ("c",), 1.0)]), id="float amount"),
    pytest.param(_with_good_parts(increments=[("fam", ("c",), True)]), id="bool amount"),
    pytest.param(_with_good_parts(increments=[("fam", ("c", 1), 3)]), id="int label"),
    pytest.param(_with_good_parts(increments=[("fam", ["c"], 3)]), id="list labels"),
    pytest.param(_with_good_parts(increments=[(None, ("c",), 3)]), id="no family"),
    pytest.param(_with_good_parts(increments=[("fam", ("c",), 2**126)]), id="amount too big"),
    pytest.param(_with_good_parts(agent_users=[("acme", "bot")]), id="short agent user"),
    pytest.param(_with_good_parts(seen=[(b"short", span_id(1), 3.0)]), id="short seen id"),
    # Refused by SQLite inside the transaction, after the spans and updates were written:
    pytest.param(_with_good_parts(dropped_traces=[[1]]), id="unbindable trace id"),
    pytest.param(_with_good_parts(new_spans=[PendingSpan(None, span_id(3), None, MODEL_CALL,
                                                         False, 2.0)]), id="null trace id"),
    pytest.param(_with_good_parts(prune_seen_before="soon"), id="unorderable prune"),
])
def test_a_failing_batch_leaves_nothing_of_it_behind(store, tmp_path, bad):
    store.commit(BASELINE)
    before = store.load()

    with pytest.raises(StoreError, match=str(tmp_path / FILENAME)):
        store.commit(bad)
    store.close()

    assert reload(tmp_path) == before


def test_an_overflow_found_by_sqlite_rolls_the_batch_back(store, tmp_path):
    top = (2**63 - 1) * 2**62  # stored as high = 2**63 - 1 (the INTEGER maximum), low = 0
    store.commit(Batch(increments=[("fam", ("a",), top)]))

    with pytest.raises(StoreError, match="CHECK constraint failed"):
        store.commit(_with_good_parts(increments=[("fam", ("a",), 2**62)]))
    store.close()

    assert reload(tmp_path) == Loaded({"fam": {("a",): top}}, set(), [], [])


def test_the_store_commits_again_after_a_failed_batch(store, tmp_path):
    with pytest.raises(StoreError):
        store.commit(Batch(increments=[("fam", ("a",), 1), ("fam", ("a",), None)]))
    store.commit(Batch(increments=[("fam", ("a",), 1)]))
    store.close()

    assert reload(tmp_path).totals == {"fam": {("a",): 1}}


# -- opening, closing, threads -------------------------------------------------------------


def test_the_state_dir_is_created_and_the_database_is_in_wal_mode(tmp_path):
    state_dir = tmp_path / "a" / "b"
    Store(state_dir).close()

    db = sqlite3.connect(state_dir / FILENAME)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()


def test_a_database_of_a_newer_schema_is_refused_naming_the_path(store, tmp_path):
    store.close()
    db = sqlite3.connect(tmp_path / FILENAME)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()

    with pytest.raises(StoreError, match=rf"{tmp_path / FILENAME}: written by a newer version"):
        Store(tmp_path)


def test_a_file_that_is_not_a_database_is_refused_naming_the_path(tmp_path):
    (tmp_path / FILENAME).write_bytes(b"this is not sqlite, just text " * 100)

    with pytest.raises(StoreError, match=rf"{tmp_path / FILENAME}: cannot open the ledger"):
        Store(tmp_path)


def test_a_database_of_another_program_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / FILENAME)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()

    with pytest.raises(StoreError, match=r"not a ledger \(tables \['users'\]\)"):
        Store(tmp_path)


def test_a_state_dir_that_is_a_file_is_refused_naming_the_path(tmp_path):
    (tmp_path / "state").write_text("")

    with pytest.raises(StoreError, match="cannot open the ledger"):
        Store(tmp_path / "state")


def test_an_unknown_synchronous_mode_is_refused_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="synchronous must be one of .* got 'SOMETIMES'"):
        Store(tmp_path, synchronous="SOMETIMES")


def test_close_is_idempotent_and_checkpoints_the_wal(store, tmp_path):
    store.commit(BASELINE)
    store.close()
    store.close()

    wal = tmp_path / (FILENAME + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    with pytest.raises(StoreError, match="store is closed"):
        store.commit(BASELINE)


def test_a_store_opened_on_one_thread_commits_on_another(store, tmp_path):
    thread = threading.Thread(target=store.commit, args=(BASELINE,))
    thread.start()
    thread.join()
    store.close()

    assert reload(tmp_path).totals == {"fam": {("a",): 10}}


def test_overlapping_calls_from_two_threads_are_refused(store):
    inside, release = threading.Event(), threading.Event()

    class SlowIncrements(list):
        def __iter__(self):
            inside.set()
            release.wait(10)
            return super().__iter__()

    writer = threading.Thread(
        target=store.commit, args=(Batch(increments=SlowIncrements([("fam", ("a",), 1)])),)
    )
    writer.start()
    assert inside.wait(10)
    try:
        with pytest.raises(StoreError, match="used by two threads at once"):
            store.commit(BASELINE)
        with pytest.raises(StoreError, match="used by two threads at once"):
            store.load()
    finally:
        release.set()
        writer.join()
    assert store.load().totals == {"fam": {("a",): 1}}


# -- durability against a killed process ---------------------------------------------------

_COMMIT_THEN_DIE = """
import os, signal, sys
from exporter.store import Batch, PendingSpan, Store
from otel_processor.conventions import SpanRecord
store = Store(sys.argv[1])
span = PendingSpan(b"t" * 16, b"s" * 8, None, SpanRecord(kind="model", input_tokens=7), True, 1.5)
store.commit(Batch(new_spans=[span], increments=[("fam", ("a",), 42)],
                   agent_users=[("o", "a", "c")], seen=[(b"t" * 16, b"s" * 8, 1.5)]))
print("committed", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

_COMMIT_FOREVER = """
import sys
from exporter.store import Batch, PendingSpan, Store
from otel_processor.conventions import SpanRecord
store = Store(sys.argv[1], synchronous=sys.argv[2])
record = SpanRecord(kind="model", input_tokens=1)
n = int(sys.argv[3])
while True:
    t = n.to_bytes(16, "big")
    spans = [PendingSpan(t, i.to_bytes(8, "big"), None, record, False, float(n))
             for i in range(1, 51)]
    store.commit(Batch(
        new_spans=spans, seen=[(s.trace_id, s.span_id, float(n)) for s in spans],
        increments=[(f, (str(k),), 1) for f in ("a", "b") for k in range(300)]))
    n += 1
    print(n, flush=True)
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_batch_committed_just_before_sigkill_is_there_after_reopening(tmp_path):
    child = _python(_COMMIT_THEN_DIE, str(tmp_path))
    out, err = child.communicate(timeout=60)

    assert (child.returncode, out) == (-signal.SIGKILL, "committed\n"), err
    assert (tmp_path / (FILENAME + "-wal")).stat().st_size > 0  # recovered from the WAL
    assert reload(tmp_path) == Loaded(
        totals={"fam": {("a",): 42}},
        agent_users={("o", "a", "c")},
        pending=[PendingSpan(b"t" * 16, b"s" * 8, None, SpanRecord(kind="model", input_tokens=7),
                             True, 1.5)],
        seen=[(b"t" * 16, b"s" * 8, 1.5)],
    )


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_a_writer_killed_while_committing_leaves_whole_batches_only(tmp_path, synchronous):
    committed = 0
    # Five kills, each a few commits in and at another point of a commit's ~10 ms.
    for kill_after, delay in ((3, 0.0), (6, 0.002), (4, 0.005), (5, 0.008), (7, 0.012)):
        child = _python(_COMMIT_FOREVER, str(tmp_path), synchronous, str(committed))
        reported = committed
        while reported < committed + kill_after:
            line = child.stdout.readline()
            assert line, child.stderr.read()
            reported = int(line)
        time.sleep(delay)  # a real process: where the kill lands is the point of the test
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=60)
        reported = int(out.split()[-1]) if out.split() else reported

        loaded = reload(tmp_path)
        batches = loaded.totals["a"][("0",)]
        assert batches in (reported, reported + 1)  # + 1: killed after COMMIT, before print
        assert loaded.totals == {f: {(str(k),): batches for k in range(300)} for f in "ab"}
        assert len(loaded.pending) == len(loaded.seen) == 50 * batches
        committed = batches
