"""The SQLite ledger: what is committed comes back exactly, whole batches only, after a kill."""

from __future__ import annotations

import datetime
import marshal
import os
import pathlib
import re
import signal
import socket
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

import exporter.store as store_module
from exporter.store import (
    FILENAME,
    LOCK_FILENAME,
    SCHEMA_VERSION,
    Batch,
    Loaded,
    PendingSpan,
    StateDirLocked,
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


def key(t: int, s: int) -> bytes:
    """A seen id as seen_before takes it: trace id + span id."""
    return trace(t) + span_id(s)


def reload(state_dir) -> Loaded:
    """What a restarted service would find."""
    store = Store(state_dir)
    try:
        return store.load()
    finally:
        store.close()


def reload_seen(state_dir, *keys: bytes) -> tuple[set[bytes], int]:
    """Which of ``keys`` a restarted service would find seen, and how many ids are stored."""
    store = Store(state_dir)
    try:
        return store.seen_before(keys), store.seen_count()
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
    )
    assert reload_seen(tmp_path, key(1, 1), key(1, 2), key(2, 7), key(2, 1)) == (
        {key(1, 1), key(1, 2), key(2, 7)}, 3
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

    assert reload_seen(tmp_path, key(1, 1), key(2, 1), key(3, 1)) == ({key(2, 1), key(3, 1)}, 2)


def test_a_prune_in_the_batch_that_sees_an_id_old_applies_after_it(store):
    store.commit(Batch(seen=[(trace(1), span_id(1), 5.0), (trace(2), span_id(1), 25.0)],
                       prune_seen_before=20.0))

    assert (store.seen_before([key(1, 1), key(2, 1)]), store.seen_count()) == ({key(2, 1)}, 1)


def test_an_id_seen_again_keeps_its_latest_time_whatever_the_commit_order(store, tmp_path):
    store.commit(Batch(seen=[(trace(1), span_id(1), 30.0), (trace(2), span_id(2), 10.0)]))
    # 1.1 seen again earlier than it was (a clock step): keeps 30. 2.2 seen later: takes 40.
    store.commit(Batch(seen=[(trace(1), span_id(1), 5.0), (trace(2), span_id(2), 40.0),
                             (trace(3), span_id(3), 20.0), (trace(3), span_id(3), 50.0),
                             (trace(3), span_id(3), 15.0)]))
    assert store.seen_count() == 3  # one row per id
    store.commit(Batch(prune_seen_before=25.0))  # times 20 and 15 would be pruned here
    store.close()

    assert reload_seen(tmp_path, key(1, 1), key(2, 2), key(3, 3)) == (
        {key(1, 1), key(2, 2), key(3, 3)}, 3
    )
    store = Store(tmp_path)
    store.commit(Batch(prune_seen_before=40.0))  # 1.1 at 30 goes, 2.2 at 40 and 3.3 at 50 stay
    assert store.seen_before([key(1, 1), key(2, 2), key(3, 3)]) == {key(2, 2), key(3, 3)}
    store.close()


def test_seen_before_answers_exactly_across_lookup_chunks(store):
    # 1234 ids: more than two statements of 500, the last one padded.
    store.commit(Batch(seen=[(trace(n), span_id(n % 7), 1.0) for n in range(0, 2468, 2)]))
    asked = [key(n, n % 7) for n in range(2468)]  # every other one was seen
    asked += [key(0, 0), key(2466, 2466 % 7)] * 3  # repeats change nothing
    asked += [key(1, 0), trace(0) + span_id(1)]  # right trace, wrong span; and the reverse

    found = store.seen_before(asked)

    assert found == {key(n, n % 7) for n in range(0, 2468, 2)}
    assert all(type(k) is bytes for k in found)
    assert store.seen_before(iter([key(2, 2)])) == {key(2, 2)}
    assert store.seen_before([]) == set()
    assert store.seen_before([key(1, 1)] * 501) == set()  # padding never answers for itself


def test_seen_before_knows_only_committed_batches(store):
    store.commit(Batch(seen=[(trace(1), span_id(1), 1.0)]))
    with pytest.raises(StoreError):
        store.commit(Batch(seen=[(trace(2), span_id(2), 2.0)], increments=[("f", (), "x")]))

    assert store.seen_before([key(1, 1), key(2, 2)]) == {key(1, 1)}


@pytest.mark.parametrize("bad", [
    pytest.param(b"x" * 23, id="23 bytes"),
    pytest.param(b"x" * 25, id="25 bytes"),
    pytest.param("x" * 24, id="str"),
    pytest.param(bytearray(24), id="bytearray"),
    pytest.param(None, id="None"),
])
def test_seen_before_refuses_a_key_that_is_not_24_bytes(store, bad):
    store.commit(Batch(seen=[(trace(1), span_id(1), 1.0)]))

    with pytest.raises(StoreError, match="cannot look up seen ids: seen key .* is not 24 bytes"):
        store.seen_before([key(1, 1), bad])
    assert store.seen_before([key(1, 1)]) == {key(1, 1)}  # and the store goes on


def test_seen_lookups_and_pruning_use_the_indexes(store, tmp_path):
    # A full scan of 70 M ids per lookup or per prune would stall the writer: check the plans.
    db = sqlite3.connect(tmp_path / FILENAME)
    lookup = db.execute(f"EXPLAIN QUERY PLAN {store_module._LOOKUP_SEEN}",
                        [7] + [b"k" * 24] * store_module._LOOKUP_CHUNK + [0.0]).fetchall()
    prune = db.execute(f"EXPLAIN QUERY PLAN {store_module._PRUNE_SEEN}", (1,)).fetchall()
    buckets = db.execute(f"EXPLAIN QUERY PLAN {store_module._NEXT_BUCKET}", (1,)).fetchall()
    db.close()

    assert [row[-1] for row in lookup] == [
        "SEARCH seen_ids USING PRIMARY KEY (bucket=? AND id=?)"]
    assert [row[-1] for row in prune] == ["SEARCH seen_ids USING PRIMARY KEY (bucket<?)"]
    assert [row[-1] for row in buckets] == ["SEARCH seen_ids USING PRIMARY KEY (bucket>?)"]


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
    spans = [(span_id(1), None, ("bob", 123, 77, "model"), False, 5.0, 1)]
    db.execute("INSERT INTO pending_chunks (trace_id, seq, format, data) VALUES (?, 1, 99, ?)",
               (trace(1), marshal.dumps((spans, []))))
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
    assert reload_seen(tmp_path, key(1, 1), key(2, 1)) == ({key(1, 1)}, 1)  # not pruned either


def test_a_total_beyond_what_sqlite_holds_refuses_the_batch(store, tmp_path):
    top = (2**63 - 1) * 2**62  # stored as high = 2**63 - 1 (the INTEGER maximum), low = 0
    store.commit(Batch(increments=[("fam", ("a",), top)]))

    with pytest.raises(StoreError, match="beyond the ledger's range"):
        store.commit(_with_good_parts(increments=[("fam", ("a",), 2**62)]))
    store.close()

    assert reload(tmp_path) == Loaded({"fam": {("a",): top}}, set(), [])


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
    with pytest.raises(StoreError, match="store is closed"):
        store.seen_before([key(1, 1)])


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
        with pytest.raises(StoreError, match="used by two threads at once"):
            store.seen_before([key(1, 1)])
        with pytest.raises(StoreError, match="used by two threads at once"):
            store.seen_count()
    finally:
        release.set()
        writer.join()
    assert store.load().totals == {"fam": {("a",): 1}}


# -- schema migrations ---------------------------------------------------------------------

# The statements of schema 1, as released: frozen here, whatever the store's schema becomes.
SCHEMA_1 = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE totals (key TEXT PRIMARY KEY,"
    " high INTEGER NOT NULL CHECK (typeof(high) = 'integer'),"
    " low INTEGER NOT NULL CHECK (typeof(low) = 'integer')) WITHOUT ROWID",
    "CREATE TABLE agent_users (key TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE record_formats (id INTEGER PRIMARY KEY, fields TEXT NOT NULL UNIQUE)",
    "CREATE TABLE pending (seq INTEGER PRIMARY KEY, trace_id BLOB NOT NULL,"
    " span_id BLOB NOT NULL, parent_id BLOB, format INTEGER NOT NULL, record TEXT NOT NULL,"
    " attributed INTEGER NOT NULL, received_at REAL NOT NULL)",
    "CREATE UNIQUE INDEX pending_span ON pending (trace_id, span_id)",
    "CREATE TABLE seen (at REAL NOT NULL, ids BLOB NOT NULL)",
    "CREATE INDEX seen_at ON seen (at)",
)


def _schema_1_database(path: pathlib.Path, seen_rows: list[tuple[float, bytes]]) -> None:
    """A ledger as version 1 wrote it: a total, an agent user, a pending span, seen blobs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for statement in SCHEMA_1:
        db.execute(statement)
    db.execute("INSERT INTO schema_version VALUES (1)")
    db.execute("INSERT INTO totals VALUES (?, 0, 42)", ('["fam","a"]',))
    db.execute("INSERT INTO agent_users VALUES (?)", ('["acme","bot","alice"]',))
    db.execute("INSERT INTO record_formats (id, fields) VALUES (1, ?)", ('["kind","caller"]',))
    db.execute("INSERT INTO pending VALUES (1, ?, ?, NULL, 1, ?, 0, 5.0)",
               (trace(1), span_id(1), '["model","bob"]'))
    db.executemany("INSERT INTO seen (at, ids) VALUES (?, ?)", seen_rows)
    db.close()


def _schema(path: pathlib.Path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"
                          " WHERE name NOT LIKE 'sqlite_autoindex_%' ORDER BY name").fetchall()
    finally:
        db.close()


def test_schema_1_seen_blobs_become_seen_ids_at_their_latest_time(tmp_path):
    _schema_1_database(tmp_path / FILENAME, [
        (10.0, key(1, 1) + key(2, 1) + key(3, 1)),
        (30.0, key(4, 1)),
        (20.0, key(1, 1) + key(4, 1)),  # 1.1 again later; 4.4 again earlier (a later row)
        (25.0, b""),  # a commit that saw nothing
    ])

    store = Store(tmp_path)
    assert store.load() == Loaded(
        totals={"fam": {("a",): 42}}, agent_users={("acme", "bot", "alice")},
        pending=[pending(1, 1, SpanRecord(kind="model", caller="bob"), at=5.0)],
    )
    assert store.seen_count() == 4
    assert store.seen_before([key(n, 1) for n in range(6)]) == {key(n, 1) for n in (1, 2, 3, 4)}
    store.commit(Batch(prune_seen_before=20.0))  # keeps 1.1 (at 20, not 10) and 4.1 (at 30)
    assert store.seen_before([key(n, 1) for n in range(6)]) == {key(1, 1), key(4, 1)}
    store.commit(Batch(prune_seen_before=30.0))
    assert store.seen_before([key(n, 1) for n in range(6)]) == {key(4, 1)}
    store.close()

    db = sqlite3.connect(tmp_path / FILENAME)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()


def test_schema_1_rows_move_in_chunks_each_id_once_at_its_latest_time(tmp_path):
    # 101 commits (more than three chunks of rows) of 40 ids, each id in two of them, the
    # commits not in time order: the latest time of an id is often not its last row's.
    rows, latest, last = [], {}, {}
    for row in range(101):
        at = 1000.0 + (row * 37) % 101
        ids = range(row * 20, row * 20 + 40)
        rows.append((at, b"".join(key(n, n) for n in ids)))
        for n in ids:
            latest[n], last[n] = max(latest.get(n, 0.0), at), at
    cut = 1050.0
    kept = {key(n, n) for n, at in latest.items() if at >= cut}
    assert 0 < len(kept) < len(latest) and kept != {key(n, n) for n in last if last[n] >= cut}
    _schema_1_database(tmp_path / FILENAME, rows)

    store = Store(tmp_path)
    assert store.seen_count() == len(latest) == 2040
    store.commit(Batch(prune_seen_before=cut))
    assert store.seen_before([key(n, n) for n in range(2100)]) == kept
    store.close()


def test_a_migrated_database_has_the_schema_of_a_fresh_one(tmp_path):
    _schema_1_database(tmp_path / "old" / FILENAME, [(1.0, key(1, 1))])
    Store(tmp_path / "old").close()
    Store(tmp_path / "new").close()

    migrated = _schema(tmp_path / "old" / FILENAME)
    assert migrated == _schema(tmp_path / "new" / FILENAME)
    assert {name for _, name, _, _ in migrated} >= {"seen_ids", "pending_chunks"}
    assert not {"seen", "seen_at", "seen_ids_at", "pending"} & {
        name for _, name, _, _ in migrated}


def test_a_failed_migration_leaves_the_schema_1_database_as_it_was(tmp_path, monkeypatch):
    _schema_1_database(tmp_path / FILENAME, [(1.0, key(1, 1))])
    before = _schema(tmp_path / FILENAME)

    def fail(db):
        db.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setitem(store_module._MIGRATIONS, 1, (*store_module._MIGRATIONS[1], fail))
    with pytest.raises(StoreError, match="cannot open the ledger: disk I/O error"):
        Store(tmp_path)
    assert _schema(tmp_path / FILENAME) == before
    db = sqlite3.connect(tmp_path / FILENAME)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    assert db.execute("SELECT at, ids FROM seen").fetchall() == [(1.0, key(1, 1))]
    db.close()

    monkeypatch.undo()
    assert reload_seen(tmp_path, key(1, 1)) == ({key(1, 1)}, 1)  # the next start migrates


# -- one store per state directory ---------------------------------------------------------

HOLDER = re.compile(r"pid (\d+) on (\S+) since (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


def _refusal(state_dir, pid: int) -> str:
    """The message a second store on ``state_dir`` gets while ``pid`` on this host holds it."""
    return (rf"^state directory {re.escape(str(state_dir))} is in use by pid {pid} on"
            rf" {re.escape(socket.gethostname())} since \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ;"
            r" stop that process or use another --state-dir$")


def test_the_lock_file_names_the_holder(store, tmp_path):
    holder = HOLDER.fullmatch((tmp_path / LOCK_FILENAME).read_text().rstrip("\n"))

    assert holder and holder.group(1, 2) == (str(os.getpid()), socket.gethostname())
    since = datetime.datetime.strptime(holder[3], "%Y-%m-%dT%H:%M:%SZ")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((now - since).total_seconds()) < 60


def test_a_second_store_in_the_same_process_is_refused_and_the_first_goes_on(store, tmp_path):
    store.commit(BASELINE)

    with pytest.raises(StateDirLocked, match=_refusal(tmp_path, os.getpid())) as refused:
        Store(tmp_path)
    assert isinstance(refused.value, StoreError) and "\n" not in str(refused.value)
    store.commit(Batch(increments=[("fam", ("a",), 1)]))  # the refusal closed nothing of ours
    assert store.load().totals == {"fam": {("a",): 11}}
    assert HOLDER.fullmatch((tmp_path / LOCK_FILENAME).read_text().rstrip("\n"))[1] == str(
        os.getpid()
    )


def test_a_relative_state_dir_is_named_absolute_in_the_refusal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = Store("state")
    try:
        with pytest.raises(StateDirLocked, match=_refusal(tmp_path / "state", os.getpid())):
            Store("state")
    finally:
        first.close()


_OPEN_AND_REPORT = """
import sys
from exporter.store import StateDirLocked, Store
try:
    Store(sys.argv[1]).close()
except StateDirLocked as exc:
    print(exc)
    sys.exit(3)
print("opened")
"""


def test_a_store_in_another_process_is_refused_while_this_one_holds_the_dir(store, tmp_path):
    child = _python(_OPEN_AND_REPORT, str(tmp_path))
    out, err = child.communicate(timeout=60)

    assert child.returncode == 3, err
    assert re.fullmatch(_refusal(tmp_path, os.getpid()), out.rstrip("\n")), out
    store.commit(BASELINE)  # still ours


def test_after_close_another_store_opens_the_dir(store, tmp_path):
    store.commit(BASELINE)
    store.close()

    child = _python(_OPEN_AND_REPORT, str(tmp_path))
    out, err = child.communicate(timeout=60)
    assert (child.returncode, out) == (0, "opened\n"), err
    again = Store(tmp_path)  # and in this process too
    assert again.load().totals == {"fam": {("a",): 10}}
    again.close()


def test_a_store_that_fails_to_open_releases_the_dir(tmp_path):
    (tmp_path / FILENAME).write_bytes(b"this is not sqlite, just text " * 100)
    with pytest.raises(StoreError, match="cannot open the ledger"):
        Store(tmp_path)
    (tmp_path / FILENAME).unlink()

    Store(tmp_path).close()  # not refused as locked by the failed attempt


_HOLD_THE_DIR = """
import sys
from exporter.store import Store
store = Store(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
"""


def test_a_lock_file_left_by_a_dead_process_blocks_nobody(tmp_path):
    holder = _python(_HOLD_THE_DIR, str(tmp_path))
    assert holder.stdout.readline() == "holding\n", holder.stderr.read()
    with pytest.raises(StateDirLocked, match=_refusal(tmp_path, holder.pid)):
        Store(tmp_path)
    holder.kill()  # no close: the kernel drops the lock, the file stays
    holder.communicate(timeout=60)
    assert f"pid {holder.pid} on" in (tmp_path / LOCK_FILENAME).read_text()

    store = Store(tmp_path)
    assert HOLDER.fullmatch((tmp_path / LOCK_FILENAME).read_text().rstrip("\n"))[1] == str(
        os.getpid()
    )
    store.close()


def test_a_stale_lock_file_with_any_content_blocks_nobody(tmp_path):
    (tmp_path / LOCK_FILENAME).write_text("pid 1 on elsewhere since 2020-01-01T00:00:00Z\n" * 50)

    store = Store(tmp_path)
    text = (tmp_path / LOCK_FILENAME).read_text()
    assert text.count("\n") == 1 and HOLDER.fullmatch(text.rstrip("\n"))  # rewritten whole
    store.close()


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
    journals = [p for p in tmp_path.iterdir() if p.name.startswith("journal.")]
    assert sum(p.stat().st_size for p in journals) > 100  # recovered from the journal
    assert reload(tmp_path) == Loaded(
        totals={"fam": {("a",): 42}},
        agent_users={("o", "a", "c")},
        pending=[PendingSpan(b"t" * 16, b"s" * 8, None, SpanRecord(kind="model", input_tokens=7),
                             True, 1.5)],
    )
    assert reload_seen(tmp_path, b"t" * 16 + b"s" * 8) == ({b"t" * 16 + b"s" * 8}, 1)


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
        # read() and not communicate(): communicate reads the pipes' fds and would miss the
        # lines readline() has already buffered
        out = child.stdout.read()
        child.wait(60)
        child.stderr.close()
        reported = int(out.split()[-1]) if out.split() else reported

        loaded = reload(tmp_path)
        batches = loaded.totals["a"][("0",)]
        assert batches in (reported, reported + 1)  # + 1: killed after COMMIT, before print
        assert loaded.totals == {f: {(str(k),): batches for k in range(300)} for f in "ab"}
        assert len(loaded.pending) == reload_seen(tmp_path)[1] == 50 * batches
        committed = batches
