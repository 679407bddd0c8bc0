"""The journal under the store: kill -9 during a checkpoint and during a replay loses nothing,
doubles nothing, and no total ever goes back; torn frames are dropped, whole ones kept."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.journal import PREFIX, Journal
from exporter.store import FILENAME, Batch, PendingSpan, Store
from otel_processor.conventions import SpanRecord

ROOT = Path(__file__).resolve().parent.parent
SPANS_PER_BATCH = 400

# Commits batches of SPANS_PER_BATCH new spans (each trace left open, so every span reaches
# the database at a checkpoint), their seen ids and a counter of batches; checkpoints only
# when told; each batch adds two calendar-period rows, one of 5 * 10**18 pico-USD (past 2**63
# in two batches: the ledger carries). Prints "committed N" after each batch and
# "checkpoint N" / "done N" around each checkpoint.
_WRITER = """
import sys
from exporter.store import Batch, PendingSpan, Store
from otel_processor.conventions import SpanRecord
state, first, batches, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = Store(state, checkpoint_interval=1e9)
record = SpanRecord(kind="model", input_tokens=3, caller="alice", tenant="acme", model="m")
n = first
for _ in range(batches):
    t = n.to_bytes(16, "big")
    spans = [PendingSpan(t, (i + 1).to_bytes(8, "big"), None, record, i % 2 == 0, float(n))
             for i in range(SPANS_PER_BATCH)]
    store.commit(Batch(new_spans=spans, seen=[(s.trace_id, s.span_id, float(n)) for s in spans],
                       increments=[("batches", (), 1), ("tokens", ("acme",), 3 * len(spans))],
                       agent_users=[("acme", "bot", f"u{n}")],
                       periods=[("acme", "2026-12", "tenant", "acme", 3 * len(spans), 1,
                                 5 * 10**18, 0, 1),
                                ("acme", "2026-12-01", "tenant", "acme", 1, 0, 0, 2, 1)]))
    n += 1
    print("committed", n, flush=True)
    if every and (n - first) % every == 0:
        print("checkpoint", n, flush=True)
        store.checkpoint()
        print("done", n, flush=True)
print("finished", n, flush=True)
sys.stdout.flush()
import os, signal
os.kill(os.getpid(), signal.SIGKILL)  # never a clean close: the journal is what is left
""".replace("SPANS_PER_BATCH", str(SPANS_PER_BATCH))

_OPEN = """
import sys
from exporter.store import Store
print("opening", flush=True)
Store(sys.argv[1])
print("opened", flush=True)
import os, signal
os.kill(os.getpid(), signal.SIGKILL)
"""


def _python(code: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(child: subprocess.Popen, word: str) -> int:
    while True:
        line = child.stdout.readline()
        assert line, child.stderr.read()
        parts = line.split()
        if parts[0] == word:
            return int(parts[1]) if len(parts) > 1 else 0


def _kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(60)
    child.stdout.close()
    child.stderr.close()


def _checkpointed_seq(state: Path) -> int:
    db = sqlite3.connect(state / FILENAME)  # recovers the WAL like the next store would
    try:
        return db.execute("SELECT seq FROM journal_state").fetchone()[0]
    finally:
        db.close()


def _check(state: Path, batches: int) -> None:
    """Exactly ``batches`` batches are in the ledger, whole."""
    store = Store(state)
    try:
        loaded = store.load(periods_since="")
        keys = [s.trace_id + s.span_id for s in loaded.pending]
        seen = store.seen_before(keys)
        count = store.seen_count()
    finally:
        store.close()
    assert loaded.totals == {"batches": {(): batches},
                             "tokens": {("acme",): 3 * SPANS_PER_BATCH * batches}}
    assert len(loaded.pending) == len(set(keys)) == SPANS_PER_BATCH * batches
    assert [s.attributed for s in loaded.pending[:4]] == [True, False, True, False][:len(keys)]
    assert len(seen) == count == len(keys)
    assert loaded.agent_users == {("acme", "bot", f"u{n}") for n in range(batches)}
    assert sorted(loaded.periods) == ([] if not batches else [
        ("acme", "2026-12", "tenant", "acme", 3 * SPANS_PER_BATCH * batches, batches,
         5 * 10**18 * batches, 0, batches),
        ("acme", "2026-12-01", "tenant", "acme", batches, 0, 0, 2 * batches, batches)])


def test_a_kill_during_a_checkpoint_loses_nothing_and_doubles_nothing(tmp_path):
    state = tmp_path / "state"
    batches, cut_short = 0, 0
    # Each round commits 30 batches (12 000 spans) and checkpoints them; the kill lands at
    # another point of the checkpoint each time (or just after it).
    for delay in (0.0, 0.005, 0.01, 0.02, 0.04, 0.08):
        child = _python(_WRITER, state, batches, 30, 30)
        n = _wait_for(child, "checkpoint")
        time.sleep(delay)
        _kill(child)
        assert n == batches + 30
        if _checkpointed_seq(state) < n:
            cut_short += 1  # the kill landed before the checkpoint's commit
        _check(state, n)  # no more, no less: every commit was acknowledged before it
        batches = n
    assert cut_short >= 1  # at least one kill really landed inside a checkpoint


def test_a_kill_during_a_replay_loses_nothing_and_the_next_replay_finishes_it(tmp_path):
    state = tmp_path / "state"
    child = _python(_WRITER, state, 0, 120, 0)  # 48 000 spans only in the journal
    n = _wait_for(child, "finished")
    _kill(child)
    assert n == 120 and _checkpointed_seq(state) == 0
    journal_bytes = sum(p.stat().st_size for p in state.glob(PREFIX + "*"))
    interrupted = 0
    for delay in (0.05, 0.15, 0.3):
        opener = _python(_OPEN, state)
        _wait_for(opener, "opening")
        time.sleep(delay)
        finished = opener.poll() is not None
        _kill(opener)
        interrupted += not finished and _checkpointed_seq(state) == 0
    assert interrupted >= 1, "no kill landed during a replay"
    assert journal_bytes > 1_000_000
    _check(state, 120)


def test_totals_never_go_back_across_kills_at_any_point(tmp_path):
    state = tmp_path / "state"
    seen_totals, batches = [], 0
    for delay in (0.0, 0.003, 0.007, 0.015, 0.03):
        child = _python(_WRITER, state, batches, 200, 7)  # checkpoints every 7 batches
        _wait_for(child, "committed")
        time.sleep(delay)
        _kill(child)
        store = Store(state)
        try:
            total = store.load().totals.get("batches", {}).get((), 0)
        finally:
            store.close()
        assert total >= batches  # what was in the ledger before the kill is still there
        seen_totals.append(total)
        batches = total
    assert seen_totals == sorted(seen_totals) and seen_totals[-1] > 0


_THREE_THEN_DIE = """
import os, signal, sys
from exporter.store import Batch, Store
store = Store(sys.argv[1], checkpoint_interval=1e9)
for _ in range(3):
    store.commit(Batch(increments=[("fam", ("a",), 1)]))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_torn_last_frame_is_dropped_and_the_frames_before_it_kept(tmp_path):
    child = _python(_THREE_THEN_DIE, tmp_path)
    child.communicate(timeout=60)
    (path,) = tmp_path.glob(PREFIX + "*")
    path.write_bytes(path.read_bytes()[:-3])  # the last frame cut short, as by a crash

    reopened = Store(tmp_path)
    try:
        assert reopened.load().totals == {"fam": {("a",): 2}}
    finally:
        reopened.close()


def test_a_frame_with_a_bad_checksum_ends_its_file_but_not_the_next(tmp_path):
    journal = Journal(tmp_path, ("kind",), sync=False)
    journal.start(1)
    journal.append(1, "one")
    journal.append(2, "two")
    first = journal.files()[0]
    journal.start(3)
    journal.append(3, "three")
    journal.close()
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # a bit flipped in frame 2's payload
    first.write_bytes(bytes(data))

    assert [(seq, value) for seq, _, value in Journal(tmp_path, ("kind",), sync=False).read()
            ] == [(1, "one"), (3, "three")]


def test_a_closed_store_leaves_no_journal_behind(tmp_path):
    store = Store(tmp_path)
    store.commit(Batch(new_spans=[PendingSpan(b"t" * 16, b"s" * 8, None, SpanRecord(), False,
                                              1.0)], increments=[("fam", (), 1)]))
    assert any(tmp_path.glob(PREFIX + "*"))
    store.close()

    assert not list(tmp_path.glob(PREFIX + "*"))
    assert _checkpointed_seq(tmp_path) == 1


def test_checkpoints_are_due_by_time_and_write_one_row_per_trace(tmp_path):
    now = [0.0]
    store = Store(tmp_path, checkpoint_interval=1.0, clock=lambda: now[0])
    try:
        spans = [PendingSpan(b"t" * 16, bytes([0] * 7 + [i + 1]), None, SpanRecord(), False, 1.0)
                 for i in range(50)]
        store.commit(Batch(new_spans=spans))
        assert not store.checkpoint_due()
        now[0] = 1.0
        assert store.checkpoint_due()
        store.checkpoint()
        assert not store.checkpoint_due()
        db = sqlite3.connect(tmp_path / FILENAME)
        assert db.execute("SELECT count(*) FROM pending_chunks").fetchone() == (1,)
        db.close()
        assert len(store.load().pending) == 50
    finally:
        store.close()


@pytest.mark.parametrize("marks_before_checkpoint", [True, False])
def test_marks_and_drops_across_checkpoints_load_as_if_applied_in_order(
        tmp_path, marks_before_checkpoint):
    store = Store(tmp_path, checkpoint_interval=1e9)
    t1, t2 = b"\x01" * 16, b"\x02" * 16

    def span(t, s):
        return PendingSpan(t, bytes([0] * 7 + [s]), None, SpanRecord(), False, float(s))

    store.commit(Batch(new_spans=[span(t1, 1), span(t1, 2), span(t2, 1)]))
    if not marks_before_checkpoint:
        store.checkpoint()
    store.commit(Batch(attributed=[(t1, span(t1, 2).span_id)]))
    store.checkpoint()
    store.commit(Batch(dropped_traces=[t2], new_spans=[span(t1, 3)]))
    store.commit(Batch(new_spans=[span(t2, 4)]))  # a late span of the dropped trace
    expected = [(t1, 1, False), (t1, 2, True), (t1, 3, False), (t2, 4, False)]

    def shown(loaded):
        return [(p.trace_id, p.span_id[-1], p.attributed) for p in loaded.pending]

    assert shown(store.load()) == expected
    store.checkpoint()
    assert shown(store.load()) == expected
    store.close()
    reopened = Store(tmp_path)
    try:
        assert shown(reopened.load()) == expected
    finally:
        reopened.close()


# -- any sequence of batches, checkpoints and reopenings loads as if applied in order ----

_OPS = st.lists(st.one_of(
    st.tuples(st.just("spans"), st.lists(st.tuples(st.integers(1, 4), st.integers(1, 6)),
                                         max_size=6)),
    st.tuples(st.just("mark"), st.integers(0, 50)),
    st.tuples(st.just("drop"), st.integers(1, 4)),
    st.tuples(st.just("seen"), st.lists(st.tuples(st.integers(1, 9), st.integers(0, 1000)),
                                        max_size=4)),
    st.tuples(st.just("prune"), st.integers(0, 1000)),  # over several buckets of 300 s
    st.tuples(st.just("count"), st.integers(0, 3)),
    st.just(("checkpoint",)),
    st.just(("reopen",)),
), max_size=30)


@settings(max_examples=80, deadline=None)
@given(_OPS)
def test_any_sequence_loads_as_if_each_batch_were_applied_in_order(tmp_path_factory, ops):
    state = tmp_path_factory.mktemp("ops")
    store = Store(state, checkpoint_interval=1e9)
    pending: dict[tuple[bytes, bytes], list] = {}  # the model: key -> [span, attributed]
    seen: dict[bytes, int] = {}
    totals: dict = {}
    serial = 0
    pruned = -1

    def tid(t):
        return bytes([t]) * 16

    try:
        for op in ops:
            kind = op[0]
            if kind == "spans":
                spans = []
                for t, s in op[1]:
                    serial += 1
                    span = PendingSpan(tid(t), bytes([0] * 7 + [s]), None,
                                       SpanRecord(input_tokens=serial), False, float(serial))
                    spans.append(span)
                    pending.setdefault((span.trace_id, span.span_id), [span, False])
                store.commit(Batch(new_spans=spans))
            elif kind == "mark" and pending:
                key = sorted(pending)[op[1] % len(pending)]
                pending[key][1] = True
                store.commit(Batch(attributed=[key]))
            elif kind == "drop":
                for key in [k for k in pending if k[0] == tid(op[1])]:
                    del pending[key]
                store.commit(Batch(dropped_traces=[tid(op[1])]))
            elif kind == "seen":
                for n, at in op[1]:
                    key = bytes([n]) * 24
                    if at >= pruned:  # older than the latest prune: forgotten already
                        seen[key] = max(seen.get(key, at), at)
                store.commit(Batch(seen=[(bytes([n]) * 16, bytes([n]) * 8, float(at))
                                         for n, at in op[1]]))
            elif kind == "prune":
                pruned = max(pruned, op[1])
                seen = {k: at for k, at in seen.items() if at >= pruned}
                store.commit(Batch(prune_seen_before=float(op[1])))
            elif kind == "count":
                totals[("fam", (str(op[1]),))] = totals.get(("fam", (str(op[1]),)), 0) + op[1]
                store.commit(Batch(increments=[("fam", (str(op[1]),), op[1])]))
            elif kind == "checkpoint":
                store.checkpoint()
            elif kind == "reopen":
                store.close()
                store = Store(state, checkpoint_interval=1e9)
            loaded = store.load()
            expected = sorted((span.received_at, span.trace_id, span.span_id, attributed)
                              for span, attributed in pending.values())
            assert [(p.received_at, p.trace_id, p.span_id, p.attributed)
                    for p in loaded.pending] == expected
            assert [p.record.input_tokens for p in loaded.pending] == [
                int(at) for at, *_ in expected]
            expected_totals: dict = {}
            for (family, labels), amount in totals.items():
                expected_totals.setdefault(family, {})[labels] = amount
            assert loaded.totals == expected_totals
            keys = [bytes([n]) * 24 for n in range(1, 10)]
            assert store.seen_before(keys) == set(seen)
    finally:
        store.close()


def test_a_restart_reads_the_ids_on_disk_back_and_then_rules_new_ids_out_in_memory(tmp_path):
    store = Store(tmp_path)
    old = [(bytes([1]) * 8 + n.to_bytes(8, "big"), b"s" * 8, 10.0) for n in range(30_000)]
    store.commit(Batch(seen=old))
    store.close()

    reopened = Store(tmp_path)
    try:
        deadline = time.monotonic() + 30
        new = [bytes([2]) * 8 + n.to_bytes(8, "big") + b"s" * 8 for n in range(20_000)]
        while True:  # until the reader has merged what is on disk
            before = reopened.disk_lookups
            assert reopened.seen_before(new[:10]) == set()
            if reopened.disk_lookups == before or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        before = reopened.disk_lookups
        assert reopened.seen_before(new) == set()
        assert reopened.disk_lookups - before < 20  # false positives only
        known = [trace + span for trace, span, _ in old[:1000]]
        assert reopened.seen_before(known) == set(known)  # answered exactly, from disk
    finally:
        reopened.close()


def test_closing_a_store_while_it_reads_ids_back_is_prompt(tmp_path):
    store = Store(tmp_path)
    store.commit(Batch(seen=[(n.to_bytes(16, "big"), b"s" * 8, 1.0) for n in range(200_000)]))
    store.close()
    started = time.monotonic()
    Store(tmp_path).close()
    assert time.monotonic() - started < 5


def test_a_restarted_store_is_not_ready_until_it_has_read_its_seen_ids_back(tmp_path):
    store = Store(tmp_path)
    assert store.seen_ids_ready  # nothing on disk to read
    for chunk in range(10):
        store.commit(Batch(seen=[((chunk * 100_000 + n).to_bytes(16, "big"), b"s" * 8, 1.0)
                                 for n in range(100_000)]))
    store.close()

    reopened = Store(tmp_path)
    try:
        assert not reopened.seen_ids_ready  # a million ids: about a second to read back
        deadline = time.monotonic() + 60
        while not reopened.seen_ids_ready and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reopened.seen_ids_ready
        before = reopened.disk_lookups
        new = [(2_000_000 + n).to_bytes(16, "big") + b"s" * 8 for n in range(5_000)]
        assert reopened.seen_before(new) == set()
        assert reopened.disk_lookups - before < 20
    finally:
        reopened.close()
