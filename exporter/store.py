"""The service's durable ledger: a journal of batches, checkpointed into SQLite.

Two parts in ``<state_dir>``:

- ``journal.*`` (:mod:`exporter.journal`): :meth:`Store.commit` appends one :class:`Batch`
  as one frame and, with ``synchronous="FULL"`` (the default), fdatasyncs it: the HTTP 200
  sent after ``commit`` returns survives a process kill and a power loss (``"NORMAL"`` and
  ``"OFF"``: a process kill only). One small write per group of requests, whatever it holds.
- ``ledger.sqlite3``, in WAL mode: what the journal held, merged, written by
  :meth:`Store.checkpoint` in one transaction about once a second (the writer calls it when
  :meth:`Store.checkpoint_due`), with the number of the last frame it holds; then the
  journal starts a new file and the old ones are deleted. Most spans of a second's traces
  share a row (``pending_chunks``: one row per trace per checkpoint), and totals are
  written once per series per checkpoint, not once per batch.

Opening a store replays the frames the database does not hold yet (a kill between a commit
and its checkpoint, during a checkpoint, or during an earlier replay: the replay writes
nothing until its own checkpoint, which is one transaction) and checkpoints them. A batch
is wholly in the ledger or not at all, and what was acknowledged is never lost.

Single writer: one thread at a time uses the store. The service's writer thread calls
``commit`` once per group of requests, ``seen_before`` before it and ``checkpoint`` after;
``load`` runs before it starts (or on it, after a failed commit) and ``close`` after it
stops. Overlapping calls are refused with :class:`StoreError`, not serialised: they are a
bug in the caller.

One store per state directory: a store holds an exclusive ``flock`` on ``<state_dir>/lock``
from open to ``close``, and a second one on the same directory (from another process, or
from this one) is refused with :class:`StateDirLocked`. Two services on one state (as in a
rolling update) would both attribute the pending spans they load, and neither would dedupe
against the other.

Seen span ids stay on disk, indexed (``seen_ids`` below), and in memory only as two Bloom
filters (:mod:`exporter.seen_filter`, 16 MiB): :meth:`Store.seen_before` answers an id the
filters have never seen without touching the disk, and looks up the rest exactly. Memory
stays bounded however many ids the dedupe window holds (tens of millions).

The store keeps no business rules (no caps, no dedupe policy): it persists what it is given.
Totals are exact integers, far beyond 64 bits (see ``totals`` below).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import marshal
import operator
import os
import pathlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields

from exporter.journal import Journal, JournalError
from exporter.seen_filter import DEFAULT_BITS, SeenFilter
from otel_processor.conventions import SpanRecord
from otel_processor.ledger import Increment
from otel_processor.periods import add_amounts

SCHEMA_VERSION = 4
FILENAME = "ledger.sqlite3"
LOCK_FILENAME = "lock"
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
DEFAULT_SYNCHRONOUS = "FULL"  # a 200 survives a power loss
#: Seconds between checkpoints of the journal into SQLite (at most; sooner when it grows).
DEFAULT_CHECKPOINT_INTERVAL = 1.0
_CHECKPOINT_SPANS = 100_000  # or once this many new spans wait in memory
_CHECKPOINT_JOURNAL_BYTES = 64 << 20  # or once the journal is this large
#: Commits are refused (the clients retry) once checkpoints have failed for this long a
#: journal: memory and disk stay bounded while SQLite cannot be written.
MAX_JOURNAL_BYTES = 1 << 30
_BUSY_TIMEOUT_MS = 5_000  # only another process (a backup, the sqlite3 shell) can hold the lock
_KEY_CACHE_SIZE = 65_536
_TRACE_ID_SIZE, _SPAN_ID_SIZE = 16, 8
_SEEN_ID_SIZE = _TRACE_ID_SIZE + _SPAN_ID_SIZE
# Ids per lookup statement: under SQLite's 999-parameter floor of older builds, and large
# enough that statement overhead is small next to the index seeks.
_LOOKUP_CHUNK = 500
_LOW = 2**62
_MAX_TOTAL = (2**63 - 1) * _LOW + _LOW - 1  # high is a signed 64-bit INTEGER
# Received order of a span: the frame that brought it, then its place in the frame.
_ORDER_SHIFT = 32
_MIGRATED_ORDER = -(2**62)  # spans of an older schema come before any journalled one

logger = logging.getLogger(__name__)

# ASCII JSON: canonical for a given tuple, and it round-trips every Python str exactly (lone
# surrogates and NUL included, which SQLite's UTF-8 TEXT could not take raw).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
# A SpanRecord is stored as the tuple of its fields in dataclass order; that order is kept
# once per database in record_formats (and in each journal file's header), so a record
# written by another version loads.
_RECORD_FIELDS = tuple(f.name for f in fields(SpanRecord))
_record_values = operator.attrgetter(*_RECORD_FIELDS)

# Seen span ids, by time bucket: one row per id and bucket it was seen in (id = trace id,
# 16 bytes, + span id, 8; at = when last seen in that bucket). Keyed by (bucket, id): a
# checkpoint's inserts land in the newest bucket's part of the tree (a minute of ids, not the
# whole window), a prune deletes whole old buckets in key order, and no second index is
# kept. The cost of a checkpoint stays flat as the window fills: 10 000 new ids take about
# 80-120 ms at 1.8 M ids stored with 60 s buckets, against 140-260 ms and growing with 300 s
# (measured). An exact lookup (only for ids the Bloom filters cannot rule out) is one seek
# per bucket of the window, sixty for an hour.
SEEN_BUCKET_SECONDS = 60
_CREATE_SEEN_IDS = (
    "CREATE TABLE seen_ids (bucket INTEGER NOT NULL, id BLOB NOT NULL, at REAL NOT NULL,"
    " PRIMARY KEY (bucket, id)) WITHOUT ROWID"
)
# Schema 2's seen ids (one row per id, and an index by time), for the upgrades from 1 and 2.
_V2_CREATE_SEEN_IDS = (
    "CREATE TABLE seen_ids (id BLOB PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID")
_V2_CREATE_SEEN_IDS_AT = "CREATE INDEX seen_ids_at ON seen_ids (at)"
_V2_ADD_SEEN = (
    "INSERT INTO seen_ids (id, at) VALUES (?, ?)"
    " ON CONFLICT (id) DO UPDATE SET at = max(at, excluded.at)"
)
# Pending spans, one row per trace per checkpoint that brought it spans or marks: data is
# marshal((spans, marks)) with spans [(span id, parent id, record values, attributed,
# received at, order)] and marks [span id] (spans of this row or earlier ones attributed
# since: a row's marks apply after its spans). Rows of a trace apply in seq order; a span id
# already there keeps its first copy. A dropped trace is one range delete.
_CREATE_PENDING_CHUNKS = (
    "CREATE TABLE pending_chunks (trace_id BLOB NOT NULL, seq INTEGER NOT NULL,"
    " format INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (trace_id, seq)) WITHOUT ROWID"
)
# The last journal frame the database holds (frames up to it are skipped by a replay), and
# the latest prune of the seen ids (an id counts only when seen at or after it).
_CREATE_JOURNAL_STATE = "CREATE TABLE journal_state (seq INTEGER NOT NULL, pruned REAL)"
# Usage by calendar period (otel_processor/periods.py): one row per (tenant, period, scope,
# id), amounts added by each checkpoint. Cost in pico-USD as high * 2**62 + low (as totals):
# a month's cost passes 2**63 pico-USD at 9.2 million USD.
_CREATE_PERIOD_USAGE = (
    "CREATE TABLE period_usage (tenant TEXT NOT NULL, period TEXT NOT NULL,"
    " scope TEXT NOT NULL, id TEXT NOT NULL,"
    " input INTEGER NOT NULL, output INTEGER NOT NULL,"
    " cost_high INTEGER NOT NULL, cost_low INTEGER NOT NULL,"
    " unpriced INTEGER NOT NULL, calls INTEGER NOT NULL,"
    " PRIMARY KEY (tenant, period, scope, id)) WITHOUT ROWID"
)

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    # key: JSON [family, *label values]. amount = high * 2**62 + low with 0 <= low < 2**62,
    # exact far beyond 64 bits (a pico-USD total passes 2**63 at 9.2 million USD); a REAL
    # here would mean an overflow of high, and is refused.
    "CREATE TABLE totals (key TEXT PRIMARY KEY,"
    " high INTEGER NOT NULL CHECK (typeof(high) = 'integer'),"
    " low INTEGER NOT NULL CHECK (typeof(low) = 'integer')) WITHOUT ROWID",
    "CREATE TABLE agent_users (key TEXT PRIMARY KEY) WITHOUT ROWID",  # JSON [owner, agent, caller]
    "CREATE TABLE record_formats (id INTEGER PRIMARY KEY, fields TEXT NOT NULL UNIQUE)",
    _CREATE_PENDING_CHUNKS,
    _CREATE_SEEN_IDS,
    _CREATE_JOURNAL_STATE,
    "INSERT INTO journal_state VALUES (0, NULL)",
    _CREATE_PERIOD_USAGE,
)

_SET_TOTAL = (
    "INSERT INTO totals (key, high, low) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
    " high = excluded.high, low = excluded.low"
)
_ADD_USER = "INSERT INTO agent_users (key) VALUES (?) ON CONFLICT (key) DO NOTHING"
_ADD_CHUNK = "INSERT INTO pending_chunks (trace_id, seq, format, data) VALUES (?, ?, ?, ?)"
_DROP_TRACE = "DELETE FROM pending_chunks WHERE trace_id = ?"
_ADD_PERIOD = (
    "INSERT INTO period_usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant, period, scope, id) DO UPDATE SET"
    " input = input + excluded.input, output = output + excluded.output,"
    f" cost_high = cost_high + excluded.cost_high + (cost_low + excluded.cost_low) / {2**62},"
    f" cost_low = (cost_low + excluded.cost_low) % {2**62},"
    " unpriced = unpriced + excluded.unpriced, calls = calls + excluded.calls"
)
_READ_PERIODS = (
    "SELECT tenant, period, scope, id, input, output, cost_high, cost_low, unpriced, calls"
    " FROM period_usage WHERE period >= ?"
)
# An id seen again in a bucket keeps its latest time, whatever the order of the commits.
_ADD_SEEN = (
    "INSERT INTO seen_ids (bucket, id, at) VALUES (?, ?, ?)"
    " ON CONFLICT (bucket, id) DO UPDATE SET at = max(at, excluded.at)"
)
_PRUNE_SEEN = "DELETE FROM seen_ids WHERE bucket < ?"  # whole buckets, in key order
# rows of the prune's own bucket older than it stay until the bucket goes: below the cutoff
_LOOKUP_SEEN = (
    "SELECT id FROM seen_ids WHERE bucket = ?"
    f" AND id IN ({', '.join('?' * _LOOKUP_CHUNK)}) AND at >= ?"
)
# rows, not distinct ids: DISTINCT would sort every id in memory (300 MB for 10 M)
_COUNT_SEEN = "SELECT count(*) FROM seen_ids WHERE at >= ?"
_NEXT_BUCKET = "SELECT min(bucket) FROM seen_ids WHERE bucket > ?"  # one seek


def _bucket(at: float) -> int:
    return int(at // SEEN_BUCKET_SECONDS)
# Schema 1's seen rows, oldest rowid first, a few at a time: a row is one commit's ids.
_OLD_SEEN_ROWS = "SELECT rowid, at, ids FROM seen ORDER BY rowid LIMIT 32"


def _seen_ids_from_schema_1(db: sqlite3.Connection) -> None:
    """Schema 1 -> 2: the id blobs of ``seen`` (24 bytes per id) become rows of seen_ids.

    In Python, not SQL: splitting a blob in SQL (substr in a recursive CTE) copies the blob
    once per id, quadratic in its size. Moved a few rows at a time, each deleted once copied
    (the upsert keeps an id's latest time in any order), so memory stays flat: a plain DROP
    of the full table journals, in memory (temp_store), every page it frees, 270 MB for 10 M
    ids (measured; 58 MB peak this way).
    """
    db.execute(_V2_CREATE_SEEN_IDS)
    db.execute(_V2_CREATE_SEEN_IDS_AT)
    while rows := db.execute(_OLD_SEEN_ROWS).fetchall():
        db.executemany(_V2_ADD_SEEN, (
            (ids[i : i + _SEEN_ID_SIZE], at)
            for _, at, ids in rows
            for i in range(0, len(ids) - _SEEN_ID_SIZE + 1, _SEEN_ID_SIZE)
        ))
        db.execute("DELETE FROM seen WHERE rowid <= ?", (rows[-1][0],))
    db.execute("DROP TABLE seen")  # empty now; its index seen_at goes with it


def _seen_buckets_from_schema_2(db: sqlite3.Connection) -> None:
    """Schema 2 -> 3: seen ids keyed by (time bucket, id), with no index by time."""
    db.execute("DROP INDEX seen_ids_at")
    db.execute("ALTER TABLE seen_ids RENAME TO seen_ids_2")
    db.execute(_CREATE_SEEN_IDS)
    db.create_function("llm_bucket", 1, _bucket, deterministic=True)
    db.execute("INSERT INTO seen_ids (bucket, id, at)"
               " SELECT llm_bucket(at), id, at FROM seen_ids_2 ORDER BY 1, 2")
    db.execute("DROP TABLE seen_ids_2")


def _pending_chunks_from_schema_2(db: sqlite3.Connection) -> None:
    """Schema 2 -> 3: pending rows (one per span, record as JSON) become one chunk per trace
    and record format, in received order; the journal starts at frame 0."""
    db.execute(_CREATE_PENDING_CHUNKS)
    db.execute(_CREATE_JOURNAL_STATE)
    db.execute("INSERT INTO journal_state VALUES (0, NULL)")
    chunks: dict[tuple[bytes, int], list] = {}
    for trace, span, parent, fmt, text, done, at, seq in db.execute(
        "SELECT trace_id, span_id, parent_id, format, record, attributed, received_at, seq"
        " FROM pending ORDER BY seq"
    ):
        chunks.setdefault((trace, fmt), []).append(
            (span, parent, tuple(json.loads(text)), bool(done), at, _MIGRATED_ORDER + seq))
        if len(chunks) >= 10_000:
            _write_migrated(db, chunks)
    _write_migrated(db, chunks)
    db.execute("DROP TABLE pending")  # its index pending_span goes with it


def _write_migrated(db: sqlite3.Connection, chunks: dict) -> None:
    # Several chunks of one trace (another format, or a flush above) get distinct seqs
    # below any checkpoint's.
    for (trace, fmt), spans in chunks.items():
        (n,) = db.execute("SELECT count(*) FROM pending_chunks WHERE trace_id = ?",
                          (trace,)).fetchone()
        db.execute(_ADD_CHUNK, (trace, n - 2**62, fmt, marshal.dumps((spans, []))))
    chunks.clear()


#: version n -> steps taking a database from n to n + 1, in one transaction with the rest
#: of the upgrade: SQL text, or a function of the connection for what SQL does badly.
_MIGRATIONS: dict[int, tuple[str | Callable[[sqlite3.Connection], None], ...]] = {
    1: (_seen_ids_from_schema_1,),
    2: (_pending_chunks_from_schema_2, _seen_buckets_from_schema_2),
    3: (_CREATE_PERIOD_USAGE,),
}


class StoreError(Exception):
    """The ledger cannot be opened, read or written; the message names the file."""


class StateDirLocked(StoreError):
    """Another store (another process, or this one) holds the state directory.

    The message is one line naming the directory and the holder as it recorded itself.
    """


@dataclass(slots=True)  # not frozen: two are built per span received, and frozen init
class PendingSpan:  # is about 4x slower (it sets each field through object.__setattr__)
    """A span kept until its trace is attributed (or dropped); never changed once built."""

    trace_id: bytes  # 16 bytes
    span_id: bytes  # 8 bytes
    parent_id: bytes | None
    record: SpanRecord
    attributed: bool  # already counted; kept only as context for late children
    received_at: float


@dataclass(slots=True)
class Batch:
    """What one group commit changes; applied in field order, as one.

    A new span whose id is already pending keeps the first copy; ``dropped_traces`` apply
    after ``new_spans`` and ``attributed``; an id in ``seen`` (16 + 8 bytes) already stored,
    or in ``seen`` twice, keeps its latest time; ``prune_seen_before`` applies last and
    forgets the seen ids older than it: from then on an id counts only when its latest time
    is at or after the latest prune (one seen later with an older time does not).
    Increments on the same key add up, zero included (it creates the series, as in the
    in-memory ledger).
    """

    new_spans: list[PendingSpan] = field(default_factory=list)
    attributed: list[tuple[bytes, bytes]] = field(default_factory=list)
    dropped_traces: list[bytes] = field(default_factory=list)
    increments: list[Increment] = field(default_factory=list)
    agent_users: list[tuple[str, str, str]] = field(default_factory=list)
    seen: list[tuple[bytes, bytes, float]] = field(default_factory=list)
    prune_seen_before: float | None = None
    #: calendar-period rows (``periods.Row``: tenant, period, scope, id, 5 amounts), added
    periods: list[tuple] = field(default_factory=list)


@dataclass
class Loaded:
    """What :meth:`Store.load` reads back: all but the seen ids (see :meth:`Store.seen_before`)."""

    totals: dict[str, dict[tuple[str, ...], int]]  # family -> label values -> amount
    agent_users: set[tuple[str, str, str]]
    pending: list[PendingSpan]  # in received order
    periods: list[tuple] = field(default_factory=list)  # rows of the periods asked for


def _strings(values: tuple, what: str, size: int | None = None) -> tuple:
    # Only tuples of str: JSON would bring a number back as a number, and (1,) == (True,)
    # would share a cache entry.
    if type(values) is not tuple or not all(type(v) is str for v in values) or (
        size is not None and len(values) != size
    ):
        raise TypeError(f"{what} {values!r:.80} is not a tuple of {size or 'any'} str")
    return values


def _time(value: float, what: str) -> float:
    # Seen times are compared in SQL: a str would sort after every number, never pruned.
    if type(value) is not float and type(value) is not int:
        raise TypeError(f"{what} {value!r:.40} is not a number")
    return value


def _id(value: object, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise TypeError(f"{what} {value!r:.60} is not {size} bytes")
    return value


# A frame: what one batch changes, as plain tuples (marshal writes them exactly):
# (spans [(trace, span, parent, record values, attributed, received_at)], marks [(trace,
#  span)], dropped [trace], increments [(family, labels, amount)], users [user],
#  seen [(id, at)], prune or None, period rows [(tenant, period, scope, id, *5 amounts)])
# A frame of an older version has no period rows.
_Frame = tuple
_PERIOD_AMOUNTS = 5


def _frame_of(batch: Batch) -> _Frame:
    """Validate ``batch`` and turn it into a frame; raises TypeError/ValueError on bad data."""
    spans = []
    append, values_of = spans.append, _record_values
    for s in batch.new_spans:  # inlined checks: one span received, one pass here
        trace, span, parent, at = s.trace_id, s.span_id, s.parent_id, s.received_at
        if (type(trace) is not bytes or len(trace) != _TRACE_ID_SIZE or type(span) is not bytes
                or len(span) != _SPAN_ID_SIZE or (parent is not None and (
                    type(parent) is not bytes or len(parent) != _SPAN_ID_SIZE))
                or (type(at) is not float and type(at) is not int)
                or type(s.attributed) is not bool):
            raise TypeError(f"pending span {s!r:.200} has an id of the wrong size, a time that"
                            " is not a number or an attributed flag that is not a bool")
        append((trace, span, parent, values_of(s.record), s.attributed, at))
    marks = [(_id(t, _TRACE_ID_SIZE, "trace id"), _id(s, _SPAN_ID_SIZE, "span id"))
             for t, s in batch.attributed]
    dropped = [_id(t, _TRACE_ID_SIZE, "dropped trace id") for t in batch.dropped_traces]
    increments = []
    for family, labels, amount in batch.increments:
        if type(amount) is not int:
            raise TypeError(f"{family}{labels}: amount {amount!r} is not an int")
        if type(family) is not str:
            raise TypeError(f"family {family!r:.40} is not a str")
        increments.append((family, _strings(labels, "labels"), amount))
    users = [_strings(user, "agent user", 3) for user in batch.agent_users]
    seen = []
    for trace, span, at in batch.seen:
        if type(trace) is not bytes or type(span) is not bytes or (
                len(trace) != _TRACE_ID_SIZE or len(span) != _SPAN_ID_SIZE):
            raise ValueError(f"seen id {trace!r}, {span!r} is not 16 + 8 bytes")
        seen.append((trace + span, _time(at, "seen at")))
    prune = batch.prune_seen_before
    if prune is not None:
        _time(prune, "prune_seen_before")
    periods = []
    for row in batch.periods:
        if (type(row) is not tuple or len(row) != 4 + _PERIOD_AMOUNTS
                or not all(type(v) is str for v in row[:4])
                or not all(type(v) is int and v >= 0 for v in row[4:])):
            raise TypeError(f"period row {row!r:.120} is not 4 str and 5 ints >= 0")
        periods.append(row)
    return spans, marks, dropped, increments, users, seen, prune, periods


class _Delta:
    """What the frames since the last checkpoint change, merged; written by the next one.

    The same code merges a frame as it is committed and as it is replayed after a crash.
    """

    __slots__ = ("spans", "marks", "drops", "totals", "users", "seen", "prune", "n_spans",
                 "periods")

    def __init__(self) -> None:
        # trace -> span -> (span, parent, record values, attributed, received_at, order)
        self.spans: dict[bytes, dict[bytes, tuple]] = {}
        self.marks: dict[bytes, set[bytes]] = {}  # trace -> spans attributed since
        self.drops: set[bytes] = set()  # traces whose earlier chunks go
        self.totals: set[tuple[str, tuple[str, ...]]] = set()  # series changed
        self.users: set[tuple[str, str, str]] = set()
        self.seen: dict[bytes, float] = {}  # id -> latest time
        self.prune: float | None = None
        self.n_spans = 0
        self.periods: dict[tuple, list[int]] = {}  # (tenant, period, scope, id) -> amounts

    @property
    def empty(self) -> bool:
        return not (self.spans or self.marks or self.drops or self.totals or self.users
                    or self.seen or self.prune is not None or self.periods)

    def apply(self, seq: int, frame: _Frame, totals: dict, seen_filter: SeenFilter,
              pruned: float) -> None:
        new_spans, marks, dropped, increments, users, seen, prune = frame[:7]
        if len(frame) > 7:
            staged_periods = self.periods
            for row in frame[7]:
                add_amounts(staged_periods, row[:4], row[4:])
        staged = self.spans
        base = seq << _ORDER_SHIFT
        for i, (trace, span, parent, values, attributed, at) in enumerate(new_spans):
            of_trace = staged.get(trace)
            if of_trace is None:
                of_trace = staged[trace] = {}
            if span not in of_trace:  # a second copy: the first stays
                of_trace[span] = (span, parent, values, attributed, at, base | i)
                self.n_spans += 1
        # A mark applies to the span wherever it is: earlier chunks or this one (a chunk's
        # marks apply after its spans).
        for trace, span in marks:
            of_trace = self.marks.get(trace)
            if of_trace is None:
                of_trace = self.marks[trace] = set()
            of_trace.add(span)
        for trace in dropped:
            self.n_spans -= len(staged.pop(trace, ()))
            self.marks.pop(trace, None)
            self.drops.add(trace)
        changed = self.totals
        for family, labels, amount in increments:
            key = (family, labels)
            totals[key] = totals.get(key, 0) + amount
            changed.add(key)
        self.users.update(users)
        if seen:
            latest = self.seen
            for key, at in seen:
                if at >= pruned and at > latest.get(key, -1e300):
                    latest[key] = at
            seen_filter.add_many(seen)
        if prune is not None:
            if self.prune is None or prune > self.prune:
                self.prune = prune
            self.seen = {k: at for k, at in self.seen.items() if at >= prune}
            seen_filter.pruned(prune)


def _overflows(totals: dict, increments) -> str | None:
    """The first series an increment would take beyond what the database can hold."""
    sums: dict = {}
    for family, labels, amount in increments:
        key = (family, labels)
        sums[key] = sums.get(key, totals.get(key, 0)) + amount
    for (family, labels), total in sums.items():
        if not -_MAX_TOTAL <= total <= _MAX_TOTAL:
            return f"{family}{labels}: a total of {total.bit_length()} bits"
    return None


_DEFAULT_VALUES = _record_values(SpanRecord())


def _converter(names: Sequence[str], where: str) -> Callable[[tuple], tuple] | None:
    """Record values written with field ``names`` -> this program's order (None: the same).

    Matched by name: a field since removed is dropped (with a warning), a new one takes its
    default.
    """
    names = tuple(names)
    if names == _RECORD_FIELDS:
        return None
    removed = [name for name in names if name not in _RECORD_FIELDS]
    if removed:
        logger.warning("%s: pending spans lose removed fields %s", where, removed)
    defaults = dict(zip(_RECORD_FIELDS, _DEFAULT_VALUES, strict=True))

    def convert(values: tuple) -> tuple:
        given = dict(zip(names, values, strict=True))
        return tuple(given.get(name, defaults[name]) for name in _RECORD_FIELDS)

    return convert


class Store:
    """The ledger in ``<state_dir>`` (see the module docstring)."""

    def __init__(
        self,
        state_dir: str | os.PathLike,
        *,
        synchronous: str = DEFAULT_SYNCHRONOUS,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        seen_filter_bits: int = DEFAULT_BITS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        mode = str(synchronous).upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
        self.path = pathlib.Path(state_dir) / FILENAME
        self._interval = checkpoint_interval
        self._clock = clock
        # Held for the whole of each call: commit, load, checkpoint and the seen queries
        # refuse to wait for it (overlap is a caller bug), close waits for it.
        self._busy = threading.Lock()
        # (family, labels) -> totals key text; guarded by _busy, cleared when full
        self._keys: dict[tuple[str, tuple[str, ...]], str] = {}
        self._db: sqlite3.Connection | None = None  # guarded by _busy; None once closed
        # fd of <state_dir>/lock, flocked; guarded by _busy; None once closed
        self._lock: int | None = None
        self._stop_reading = threading.Event()  # close() stops the reader of known ids
        self._reader: threading.Thread | None = None
        #: ids looked up on disk since open (the Bloom filters could not rule them out)
        self.disk_lookups = 0
        self._journal = Journal(self.path.parent, _RECORD_FIELDS,
                                sync=mode in ("FULL", "EXTRA"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = self._lock_state_dir()  # before SQLite: a refused store reads nothing
            # check_same_thread off: the store is opened on the main thread and handed to the
            # writer thread; _busy refuses concurrent use instead.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._configure(mode)
            self._format = self._migrate()  # this program's record format id; immutable
            self._open(seen_filter_bits)
        except (OSError, sqlite3.Error, StoreError, JournalError) as exc:
            self._journal.close()
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._lock is not None:
                os.close(self._lock)  # releases the flock
                self._lock = None
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{self.path}: cannot open the ledger: {exc}") from exc

    def _open(self, seen_filter_bits: int) -> None:
        """Read the totals, replay the journal past the database, checkpoint it."""
        db = self._db
        # committed totals, absolute: (family, labels) -> amount; the writer's only
        self._totals: dict[tuple[str, tuple[str, ...]], int] = {}
        for key, high, low in db.execute("SELECT key, high, low FROM totals"):
            family, *labels = json.loads(key)
            self._totals[(family, tuple(labels))] = high * _LOW + low
        self._seq, pruned = db.execute("SELECT seq, pruned FROM journal_state").fetchone()
        # the latest prune: an id counts only when seen at or after it
        self._pruned: float = -1e300 if pruned is None else pruned
        self._buckets: set[int] = set()  # the buckets of seen ids on disk
        bucket = -(2**63)
        while (bucket := db.execute(_NEXT_BUCKET, (bucket,)).fetchone()[0]) is not None:
            self._buckets.add(bucket)
        # newer than every id on disk (the end of the newest bucket): O(log n), no scan
        newest = (max(self._buckets) + 1) * SEEN_BUCKET_SECONDS if self._buckets else None
        self._filter = SeenFilter(seen_filter_bits, authoritative_after=newest)
        # the ids on disk, read back into the filter's bits by a thread of its own
        self._known: tuple[bytearray, float] | None = None  # set once, by that thread
        if newest is not None:
            self._reader = threading.Thread(target=self._read_known_ids, daemon=True,
                                            name="llm-token-exporter-seen-ids")
        self._delta = _Delta()
        replayed = 0
        converters: dict[tuple[str, ...], Callable | None] = {}
        for seq, names, frame in self._journal.read():
            if seq <= self._seq:
                continue  # checkpointed already (killed before the old files were deleted)
            if names not in converters:
                converters[names] = _converter(names, str(self._journal.directory))
            convert = converters[names]
            if convert is not None:
                spans, *rest = frame
                frame = ([(t, s, p, convert(v), a, at) for t, s, p, v, a, at in spans], *rest)
            self._apply(seq, frame)
            self._seq = seq
            replayed += 1
        if replayed:
            logger.info("%s: replayed %d journal frames", self.path.parent, replayed)
        self._journal.start(self._seq + 1)
        self._checkpoint(db)  # the replay is in the database before anything new comes
        self._last_checkpoint = self._clock()
        if self._reader is not None:
            self._reader.start()

    def _read_known_ids(self) -> None:
        """Read every seen id on disk into bits for the filter (a restart over a dedupe
        window of millions of ids: about a second per million, beside the writer). Until
        they are merged, every id the filter does not hold is looked up on disk."""
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                 check_same_thread=False)
        except sqlite3.Error:
            logger.warning("%s: seen ids not read back; looked up on disk until the window"
                           " has passed", self.path, exc_info=True)
            return
        try:
            bits, newest = self._filter.blank(), float("-inf")
            rows = db.execute("SELECT id, at FROM seen_ids")
            while chunk := rows.fetchmany(20_000):
                if self._stop_reading.is_set():
                    return
                newest = self._filter.add_into(bits, chunk, newest)
            self._known = (bits, newest)
        except sqlite3.Error:
            logger.warning("%s: seen ids not read back; looked up on disk until the window"
                           " has passed", self.path, exc_info=True)
        finally:
            db.close()

    def _apply(self, seq: int, frame: _Frame) -> None:
        prune = frame[6]
        if prune is not None and prune > self._pruned:
            self._pruned = prune
        self._delta.apply(seq, frame, self._totals, self._filter, self._pruned)

    def _lock_state_dir(self) -> int:
        """Flock ``<state_dir>/lock`` for this store's lifetime; return its fd.

        flock, not fcntl record locks: a flock belongs to the open file description, so a
        second store in this process (its own open) is refused too, and closing some other
        fd of the file elsewhere in the process does not release it. The kernel drops it
        when the process dies, however it dies: a lock file left behind blocks nobody.
        """
        path = self.path.parent / LOCK_FILENAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # EWOULDBLOCK: held by another open of the file
                text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                # The holder writes right after locking: the file is empty only in that instant.
                holder = text.splitlines()[0][:200] if text else "another process"
                raise StateDirLocked(
                    f"state directory {os.path.abspath(self.path.parent)} is in use by"
                    f" {holder}; stop that process or use another --state-dir"
                ) from None
            since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            holder = f"pid {os.getpid()} on {socket.gethostname()} since {since}\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _configure(self, synchronous: str) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        # WAL: a commit appends to the log (one fsync), readers never block the writer, and a
        # torn commit is discarded at recovery. Persistent in the file.
        journal = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if journal.lower() != "wal":
            raise StoreError(f"{self.path}: WAL journal mode unavailable (got {journal!r})")
        # FULL in WAL fsyncs the log at each commit: a 200 survives power loss. NORMAL syncs
        # only at checkpoints: a commit survives a process crash, not a power loss.
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute("PRAGMA foreign_keys = OFF")  # none declared; rows are independent
        db.execute("PRAGMA temp_store = MEMORY")  # ORDER BY sorts never touch the disk
        db.execute("PRAGMA cache_size = -8192")  # 8 MiB: the hot pages of totals and pending
        # Checkpoint every 4000 pages (16 MiB) rather than 1000: pages that several commits
        # dirty are copied once, so commits stall on a checkpoint less (measured).
        db.execute("PRAGMA wal_autocheckpoint = 4000")
        db.execute("PRAGMA journal_size_limit = 67108864")  # the WAL shrinks back to 64 MiB

    def _migrate(self) -> int:
        """Create or upgrade the schema; return the id of this program's record format."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            listed = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            tables = {name for (name,) in listed}
            if "schema_version" not in tables:
                if tables:
                    raise StoreError(f"{self.path}: not a ledger (tables {sorted(tables)})")
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            rows = db.execute("SELECT version FROM schema_version").fetchall()
            if len(rows) != 1 or type(rows[0][0]) is not int:
                raise StoreError(f"{self.path}: corrupt schema_version table {rows!r:.80}")
            version = rows[0][0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: written by a newer version (schema {version}, this program"
                    f" knows up to {SCHEMA_VERSION})"
                )
            while version < SCHEMA_VERSION:
                if version not in _MIGRATIONS:
                    raise StoreError(f"{self.path}: no migration from schema {version}")
                for step in _MIGRATIONS[version]:
                    if callable(step):
                        step(db)
                    else:
                        db.execute(step)
                version += 1
                db.execute("UPDATE schema_version SET version = ?", (version,))
            names = _encode(_RECORD_FIELDS)
            db.execute("INSERT OR IGNORE INTO record_formats (fields) VALUES (?)", (names,))
            (format_id,) = db.execute(
                "SELECT id FROM record_formats WHERE fields = ?", (names,)
            ).fetchone()
            db.execute("COMMIT")
            return format_id
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _enter(self) -> sqlite3.Connection:
        if not self._busy.acquire(blocking=False):
            raise StoreError(f"{self.path}: store used by two threads at once")
        if self._db is None:
            self._busy.release()
            raise StoreError(f"{self.path}: store is closed")
        return self._db

    # -- reading -----------------------------------------------------------------------

    def load(self, periods_since: str | None = None) -> Loaded:
        """What is committed: totals, agent users, pending spans (not seen ids), and the
        period rows of periods ``>= periods_since`` (none when ``None``)."""
        db = self._enter()
        try:
            db.execute("BEGIN")  # one snapshot for all the reads
            try:
                return self._read(db, periods_since)
            finally:
                db.execute("COMMIT")
        except Exception as exc:
            raise StoreError(f"{self.path}: cannot read the ledger: {exc}") from exc
        finally:
            self._busy.release()

    def _read(self, db: sqlite3.Connection, periods_since: str | None) -> Loaded:
        totals: dict[str, dict[tuple[str, ...], int]] = {}
        for (family, labels), amount in self._totals.items():
            totals.setdefault(family, {})[labels] = amount
        users = {tuple(json.loads(key)) for (key,) in db.execute("SELECT key FROM agent_users")}
        users |= self._delta.users
        converters = {
            format_id: _converter(json.loads(names), str(self.path))
            for format_id, names in db.execute("SELECT id, fields FROM record_formats")
        }
        delta = self._delta
        traces: dict[bytes, dict[bytes, list]] = {}
        for trace, _, fmt, data in db.execute(
            "SELECT trace_id, seq, format, data FROM pending_chunks ORDER BY trace_id, seq"
        ):
            if trace in delta.drops:
                continue
            spans, marks = marshal.loads(data)
            _merge(traces, trace, spans, marks, converters[fmt])
        for trace in delta.spans.keys() | delta.marks.keys():  # as the next chunk will
            _merge(traces, trace, delta.spans.get(trace, {}).values(),
                   delta.marks.get(trace, ()), None)
        rows = [(entry[4], trace, span, entry)
                for trace, of_trace in traces.items() for span, entry in of_trace.items()]
        rows.sort(key=operator.itemgetter(0))
        pending = [PendingSpan(trace, span, parent, SpanRecord(*values), bool(done), at)
                   for _, trace, span, (parent, values, done, at, _) in rows]
        periods = []
        if periods_since is not None:
            merged = {}
            for tenant, period, scope, id_, tin, tout, high, low, unpriced, calls in db.execute(
                    _READ_PERIODS, (periods_since,)):
                merged[(tenant, period, scope, id_)] = [tin, tout, high * _LOW + low,
                                                        unpriced, calls]
            for key, amounts in delta.periods.items():
                if key[1] >= periods_since:
                    add_amounts(merged, key, amounts)
            periods = [(*key, *amounts) for key, amounts in merged.items()]
        return Loaded(totals, users, pending, periods)

    @property
    def seen_ids_ready(self) -> bool:
        """Whether the ids on disk at open are read back into the Bloom filters (or there
        were none, or reading them failed): until then every new id would be looked up on
        disk, once per time bucket, so the service does not accept spans yet."""
        reader = self._reader
        return reader is None or not reader.is_alive()

    def seen_before(self, keys: Sequence[bytes]) -> set[bytes]:
        """The ``keys`` (trace id + span id, 24 bytes each) that a committed batch has seen.

        An id counts until a ``prune_seen_before`` past its time removes it. Ids of the last
        second are answered from memory, ids the Bloom filters rule out without the disk,
        the rest by index seeks, in statements of :data:`_LOOKUP_CHUNK` keys under one read
        snapshot. Raises :class:`StoreError` for a key that is not 24 bytes (it could never
        match, and would hide a caller bug) as for I/O.
        """
        db = self._enter()
        try:
            keys = list(keys)
            for key in keys:
                if type(key) is not bytes or len(key) != _SEEN_ID_SIZE:
                    raise ValueError(f"seen key {key!r:.80} is not 24 bytes")
            if self._known is not None:  # the ids on disk at open are read: merge them
                self._filter.merge_known(*self._known)
                self._known = None
            staged = self._delta.seen
            found = {key for key in keys if key in staged}
            rest = self._filter.maybe_seen([key for key in keys if key not in found])
            if rest:
                found |= self._lookup(db, rest)
            return found
        except Exception as exc:
            raise StoreError(f"{self.path}: cannot look up seen ids: {exc}") from exc
        finally:
            self._busy.release()

    def _lookup(self, db: sqlite3.Connection, keys: list[bytes]) -> set[bytes]:
        self.disk_lookups += len(keys)
        found: set[bytes] = set()
        cutoff = self._pruned
        buckets = sorted(b for b in self._buckets if b >= _bucket(cutoff))
        db.execute("BEGIN")  # one snapshot for all the chunks
        try:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start : start + _LOOKUP_CHUNK]
                # One statement text, prepared once (the module caches it): the last chunk
                # is padded with its own first key, which IN ignores.
                chunk += chunk[:1] * (_LOOKUP_CHUNK - len(chunk))
                for bucket in buckets:
                    found.update(key for (key,) in db.execute(
                        _LOOKUP_SEEN, (bucket, *chunk, cutoff)))
        finally:
            db.execute("COMMIT")
        return found

    def seen_count(self) -> int:
        """How many seen ids are stored, O(n): for tests, rarely else. An id seen in two
        time buckets (a minute each) counts twice."""
        db = self._enter()
        try:
            (on_disk,) = db.execute(_COUNT_SEEN, (self._pruned,)).fetchone()
            staged = list(self._delta.seen)
            return on_disk + len(staged) - len(self._lookup(db, staged) if staged else ())
        except Exception as exc:
            raise StoreError(f"{self.path}: cannot count seen ids: {exc}") from exc
        finally:
            self._busy.release()

    # -- writing -----------------------------------------------------------------------

    def commit(self, batch: Batch) -> None:
        """Journal ``batch``, durable on return; nothing of it on error.

        Raises :class:`StoreError` (chained to the cause), for bad data (an amount that is
        not an int, a label that is not a str, an id of the wrong size, a total beyond the
        ledger's range) as for I/O, and when checkpoints have been failing for so long that
        the journal is full.
        """
        self._enter()
        try:
            frame = _frame_of(batch)
            problem = _overflows(self._totals, frame[3])
            if problem:
                raise OverflowError(f"{problem} is beyond the ledger's range")
            if not any(frame[:6]) and frame[6] is None and not frame[7]:
                return
            if self._journal.bytes >= MAX_JOURNAL_BYTES:
                raise JournalError(f"the journal holds {self._journal.bytes} bytes that no "
                                   "checkpoint could write (see earlier errors)")
            seq = self._seq + 1
            if not self._journal.is_open:
                self._journal.start(seq)
            self._journal.append(seq, frame)
            self._seq = seq
            self._apply(seq, frame)
        except Exception as exc:
            raise StoreError(f"{self.path}: batch not committed, nothing written: {exc}") from exc
        finally:
            self._busy.release()

    def checkpoint_due(self) -> bool:
        """Whether :meth:`checkpoint` has work worth a transaction now."""
        delta = self._delta
        if delta.empty:
            return False
        return (self._clock() - self._last_checkpoint >= self._interval
                or delta.n_spans >= _CHECKPOINT_SPANS
                or self._journal.bytes >= _CHECKPOINT_JOURNAL_BYTES)

    def checkpoint(self) -> None:
        """Write what the journal holds into SQLite in one transaction; then start a new
        journal file and delete the old ones. On error nothing changes (the journal keeps
        everything) and :class:`StoreError` is raised; the next checkpoint tries again."""
        db = self._enter()
        try:
            self._checkpoint(db)
        except Exception as exc:
            raise StoreError(f"{self.path}: checkpoint failed, kept in the journal: {exc}"
                             ) from exc
        finally:
            self._busy.release()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        delta = self._delta
        self._last_checkpoint = self._clock()
        if delta.empty:
            return
        seq, fmt = self._seq, self._format
        chunks = []
        no_spans: dict = {}
        for trace in delta.spans.keys() | delta.marks.keys():
            spans = list(delta.spans.get(trace, no_spans).values())
            chunks.append((trace, seq, fmt,
                           marshal.dumps((spans, sorted(delta.marks.get(trace, ()))))))
        chunks.sort()
        totals = [(self._key(key), *divmod(self._totals[key], _LOW)) for key in delta.totals]
        users = [(_encode(user),) for user in delta.users]
        periods = sorted((*key, tin, tout, *divmod(cost, _LOW), unpriced, calls)
                         for key, (tin, tout, cost, unpriced, calls) in delta.periods.items())
        # in key order: each upsert reuses its neighbour's path down the tree
        seen = sorted((_bucket(at), key, at) for key, at in delta.seen.items())
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_DROP_TRACE, ((trace,) for trace in delta.drops))
            db.executemany(_ADD_CHUNK, chunks)
            db.executemany(_SET_TOTAL, totals)
            db.executemany(_ADD_USER, users)
            db.executemany(_ADD_PERIOD, periods)
            if delta.prune is not None:
                db.execute(_PRUNE_SEEN, (_bucket(delta.prune),))
            db.executemany(_ADD_SEEN, seen)
            db.execute("UPDATE journal_state SET seq = ?, pruned = ?",
                       (seq, None if self._pruned == -1e300 else self._pruned))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.exception("%s: rollback failed", self.path)
            raise
        if delta.prune is not None:
            self._buckets = {b for b in self._buckets if b >= _bucket(delta.prune)}
        self._buckets.update(bucket for bucket, _, _ in seen)
        self._delta = _Delta()
        try:  # the database holds every frame: a new file, the old ones go
            self._journal.start(seq + 1)
            self._journal.delete_before_current()
        except JournalError:
            # Harmless: a replay skips what the database holds, and the next commit opens
            # a file again if none is open.
            logger.warning("%s: journal rotation failed", self.path, exc_info=True)

    def _key(self, key: tuple[str, tuple[str, ...]]) -> str:
        text = self._keys.get(key)
        if text is None:
            family, labels = key
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            text = self._keys[key] = _encode((family, *labels))
        return text

    def close(self) -> None:
        """Checkpoint the journal and the WAL into the database file, close, release the
        state directory.

        Idempotent. The directory lock goes last: the next store opens a checkpointed file.
        """
        self._stop_reading.set()
        if self._reader is not None and self._reader.is_alive():
            self._reader.join()
        with self._busy:  # waits for an in-flight commit
            db, self._db = self._db, None
            lock, self._lock = self._lock, None
            if db is None:
                return
            try:
                self._checkpoint(db)
                self._journal.close()
                self._journal.delete_before_current()
                for path in self._journal.files():  # the empty file just started
                    path.unlink()
            except (sqlite3.Error, OSError, JournalError):
                logger.warning("%s: checkpoint at close failed; the journal keeps it",
                               self.path, exc_info=True)
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                logger.warning("%s: WAL checkpoint at close failed", self.path, exc_info=True)
            finally:
                try:
                    db.close()
                finally:
                    self._journal.close()
                    if lock is not None:
                        os.close(lock)  # releases the flock (the only fd of this description)


def _merge(traces: dict, trace: bytes, spans: Iterable, marks: Iterable,
           convert: Callable | None) -> None:
    """Apply one chunk of ``trace``: new spans (a span id there already keeps its first
    copy), then marks (attributed)."""
    of_trace = traces.get(trace)
    if of_trace is None:
        of_trace = traces[trace] = {}
    for span, parent, values, done, at, order in spans:
        if span not in of_trace:
            of_trace[span] = [parent, convert(values) if convert else values, done, at, order]
    for span in marks:
        entry = of_trace.get(span)
        if entry is not None:
            entry[2] = True
