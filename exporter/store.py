"""The service's durable ledger: totals, agent users, pending spans and seen span ids in SQLite.

One file, ``<state_dir>/ledger.sqlite3``, in WAL mode. :meth:`Store.commit` writes one
:class:`Batch` in one transaction: a batch is wholly on disk or not at all. With
``synchronous="FULL"`` (the default) it is on disk when ``commit`` returns, so the HTTP 200
sent after it survives a process kill and a power loss; ``"NORMAL"`` survives a process kill
only.

Single writer: one thread at a time uses the store. The service's writer thread calls
``commit`` once per group of requests; ``load`` runs before it starts (or on it, after a
failed commit) and ``close`` after it stops. Overlapping calls are refused with
:class:`StoreError`, not serialised: they are a bug in the caller.

The store keeps no business rules (no caps, no dedupe policy): it persists what it is given.
Totals are exact integers, far beyond 64 bits (see ``totals`` below).
"""

from __future__ import annotations

import json
import logging
import operator
import os
import pathlib
import sqlite3
import threading
from dataclasses import dataclass, field, fields

from otel_processor.conventions import SpanRecord
from otel_processor.ledger import Increment

SCHEMA_VERSION = 1
FILENAME = "ledger.sqlite3"
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
_BUSY_TIMEOUT_MS = 5_000  # only another process (a backup, the sqlite3 shell) can hold the lock
_KEY_CACHE_SIZE = 65_536
_TRACE_ID_SIZE, _SPAN_ID_SIZE = 16, 8
_LOW = 2**62

logger = logging.getLogger(__name__)

# ASCII JSON: canonical for a given tuple, and it round-trips every Python str exactly (lone
# surrogates and NUL included, which SQLite's UTF-8 TEXT could not take raw).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
# A SpanRecord is stored as the JSON array of its fields in dataclass order; that order is
# kept once per database in record_formats, so a record written by another version loads.
_RECORD_FIELDS = tuple(f.name for f in fields(SpanRecord))
_record_values = operator.attrgetter(*_RECORD_FIELDS)

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
    # seq (the rowid) is the received order: a new row always gets max(seq) + 1.
    "CREATE TABLE pending (seq INTEGER PRIMARY KEY, trace_id BLOB NOT NULL,"
    " span_id BLOB NOT NULL, parent_id BLOB, format INTEGER NOT NULL, record TEXT NOT NULL,"
    " attributed INTEGER NOT NULL, received_at REAL NOT NULL)",
    # Lookups and updates by id, and deletes by trace (a prefix), are O(log n).
    "CREATE UNIQUE INDEX pending_span ON pending (trace_id, span_id)",
    # One row per time `at`: the ids seen then, 24 bytes each (trace id + span id). No index
    # on ids: the writer dedupes in memory from Loaded.seen, and an index on random ids would
    # dirty about one page per id per commit once it is large.
    "CREATE TABLE seen (at REAL NOT NULL, ids BLOB NOT NULL)",
    "CREATE INDEX seen_at ON seen (at)",  # pruning and loading oldest first: O(log n)
)
#: version n -> statements taking a database from n to n + 1 (none yet).
_MIGRATIONS: dict[int, tuple[str, ...]] = {}

_INSERT_SPAN = (
    "INSERT INTO pending (trace_id, span_id, parent_id, format, record, attributed,"
    " received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trace_id, span_id) DO NOTHING"
)
_MARK_ATTRIBUTED = "UPDATE pending SET attributed = 1 WHERE trace_id = ? AND span_id = ?"
_DROP_TRACE = "DELETE FROM pending WHERE trace_id = ?"
_ADD_TOTAL = (
    "INSERT INTO totals (key, high, low) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
    f" high = high + excluded.high + (low + excluded.low) / {_LOW},"
    f" low = (low + excluded.low) % {_LOW}"
)
_ADD_USER = "INSERT INTO agent_users (key) VALUES (?) ON CONFLICT (key) DO NOTHING"
_ADD_SEEN = "INSERT INTO seen (at, ids) VALUES (?, ?)"
_PRUNE_SEEN = "DELETE FROM seen WHERE at < ?"


class StoreError(Exception):
    """The ledger cannot be opened, read or written; the message names the file."""


@dataclass(frozen=True, slots=True)
class PendingSpan:
    """A span kept until its trace is attributed (or dropped)."""

    trace_id: bytes  # 16 bytes
    span_id: bytes  # 8 bytes
    parent_id: bytes | None
    record: SpanRecord
    attributed: bool  # already counted; kept only as context for late children
    received_at: float


@dataclass(slots=True)
class Batch:
    """What one group commit changes; applied in field order, in one transaction.

    A new span whose id is already pending keeps the first copy; ``dropped_traces`` apply
    after ``new_spans`` and ``attributed``; an id in ``seen`` twice counts at its latest time
    (ids must be 16 + 8 bytes); ``prune_seen_before`` applies last. Increments on the same
    key add up, zero included (it creates the series, as in the in-memory ledger).
    """

    new_spans: list[PendingSpan] = field(default_factory=list)
    attributed: list[tuple[bytes, bytes]] = field(default_factory=list)
    dropped_traces: list[bytes] = field(default_factory=list)
    increments: list[Increment] = field(default_factory=list)
    agent_users: list[tuple[str, str, str]] = field(default_factory=list)
    seen: list[tuple[bytes, bytes, float]] = field(default_factory=list)
    prune_seen_before: float | None = None


@dataclass
class Loaded:
    """Everything the store holds, as :meth:`Store.load` read it."""

    totals: dict[str, dict[tuple[str, ...], int]]  # family -> label values -> amount
    agent_users: set[tuple[str, str, str]]
    pending: list[PendingSpan]  # in received order
    seen: list[tuple[bytes, bytes, float]]  # oldest first, each id once


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


class Store:
    """The SQLite ledger at ``<state_dir>/ledger.sqlite3`` (see the module docstring)."""

    def __init__(self, state_dir: str | os.PathLike, *, synchronous: str = "FULL") -> None:
        mode = str(synchronous).upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
        self.path = pathlib.Path(state_dir) / FILENAME
        # Held for the whole of each call: commit and load refuse to wait for it (overlap is
        # a caller bug), close waits for it (an in-flight commit finishes first).
        self._busy = threading.Lock()
        # (family, labels) -> totals key text; guarded by _busy, cleared when full
        self._keys: dict[tuple[str, tuple[str, ...]], str] = {}
        self._db: sqlite3.Connection | None = None  # guarded by _busy; None once closed
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread off: the store is opened on the main thread and handed to the
            # writer thread; _busy refuses concurrent use instead.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._configure(mode)
            self._format = self._migrate()  # this program's record format id; immutable
        except (OSError, sqlite3.Error, StoreError) as exc:
            if self._db is not None:
                self._db.close()
                self._db = None
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{self.path}: cannot open the ledger: {exc}") from exc

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
        db.execute("PRAGMA cache_size = -32768")  # 32 MiB: the hot pages of totals and pending
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
                for statement in _MIGRATIONS[version]:
                    db.execute(statement)
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

    def load(self) -> Loaded:
        """Read back everything committed: totals, agent users, pending spans, seen ids."""
        db = self._enter()
        try:
            db.execute("BEGIN")  # one snapshot for all the reads
            try:
                return self._read(db)
            finally:
                db.execute("COMMIT")
        except Exception as exc:
            raise StoreError(f"{self.path}: cannot read the ledger: {exc}") from exc
        finally:
            self._busy.release()

    def _read(self, db: sqlite3.Connection) -> Loaded:
        totals: dict[str, dict[tuple[str, ...], int]] = {}
        for key, high, low in db.execute("SELECT key, high, low FROM totals"):
            family, *labels = json.loads(key)
            totals.setdefault(family, {})[tuple(labels)] = high * _LOW + low
        users = {tuple(json.loads(key)) for (key,) in db.execute("SELECT key FROM agent_users")}
        decoders = {
            format_id: self._decoder(json.loads(names))
            for format_id, names in db.execute("SELECT id, fields FROM record_formats")
        }
        pending = [
            PendingSpan(trace, span, parent, decoders[fmt](text), bool(done), at)
            for trace, span, parent, fmt, text, done, at in db.execute(
                "SELECT trace_id, span_id, parent_id, format, record, attributed, received_at"
                " FROM pending ORDER BY seq"
            )
        ]
        latest: dict[bytes, float] = {}  # an id seen twice counts at its latest time
        size = _TRACE_ID_SIZE + _SPAN_ID_SIZE
        for at, ids in db.execute("SELECT at, ids FROM seen ORDER BY at, rowid"):
            for i in range(0, len(ids), size):
                key = ids[i : i + size]
                latest.pop(key, None)
                latest[key] = at
        seen = [(key[:_TRACE_ID_SIZE], key[_TRACE_ID_SIZE:], at) for key, at in latest.items()]
        return Loaded(totals, users, pending, seen)

    def _decoder(self, names: list[str]):
        """A function: record text written with field ``names`` -> this program's SpanRecord."""
        if names == list(_RECORD_FIELDS):
            return lambda text: SpanRecord(*json.loads(text))
        # Written by another SpanRecord: match by name; a field since removed is dropped.
        removed = [name for name in names if name not in _RECORD_FIELDS]
        if removed:
            logger.warning("%s: pending spans lose removed fields %s", self.path, removed)

        def decode(text: str) -> SpanRecord:
            values = zip(names, json.loads(text), strict=True)
            return SpanRecord(**{n: v for n, v in values if n in _RECORD_FIELDS})

        return decode

    def commit(self, batch: Batch) -> None:
        """Apply ``batch`` in one transaction, durable on return; nothing of it on error.

        Raises :class:`StoreError` (chained to the cause) after rolling back, for bad data
        (an amount that is not an int, a label that is not a str, a NULL id) as for I/O.
        """
        db = self._enter()
        try:
            rows = self._prepare(batch)  # encoded before BEGIN: the lock is held for SQL only
            if rows is not None:
                self._write(db, *rows, batch.prune_seen_before)
        except Exception as exc:
            raise StoreError(f"{self.path}: batch not committed, nothing written: {exc}") from exc
        finally:
            self._busy.release()

    def _prepare(self, batch: Batch) -> tuple | None:
        """The batch as SQL parameter rows; None when there is nothing to write."""
        fmt = self._format
        spans = [
            (s.trace_id, s.span_id, s.parent_id, fmt, _encode(_record_values(s.record)),
             int(s.attributed), s.received_at)
            for s in batch.new_spans
        ]
        sums: dict[tuple[str, tuple[str, ...]], int] = {}
        for family, labels, amount in batch.increments:
            if type(amount) is not int:
                raise TypeError(f"{family}{labels}: amount {amount!r} is not an int")
            key = (family, labels)
            sums[key] = sums.get(key, 0) + amount
        totals = [(self._key(key), *divmod(amount, _LOW)) for key, amount in sums.items()]
        users = [(_encode(_strings(user, "agent user", 3)),) for user in batch.agent_users]
        by_time: dict[float, bytearray] = {}
        for trace, span, at in batch.seen:
            if len(trace) != _TRACE_ID_SIZE or len(span) != _SPAN_ID_SIZE:
                raise ValueError(f"seen id {trace!r}, {span!r} is not 16 + 8 bytes")
            ids = by_time.get(at)
            if ids is None:
                ids = by_time[at] = bytearray()
            ids += trace
            ids += span
        seen = [(_time(at, "seen at"), bytes(ids)) for at, ids in by_time.items()]
        dropped = [(trace,) for trace in batch.dropped_traces]
        prune = batch.prune_seen_before
        if prune is not None:
            _time(prune, "prune_seen_before")
        elif not (spans or batch.attributed or dropped or totals or users or seen):
            return None
        return spans, batch.attributed, dropped, totals, users, seen

    def _key(self, key: tuple[str, tuple[str, ...]]) -> str:
        text = self._keys.get(key)
        if text is None:
            family, labels = key
            if type(labels) is not tuple:
                raise TypeError(f"{family}: labels {labels!r:.80} are not a tuple")
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            text = self._keys[key] = _encode(_strings((family, *labels), "family and labels"))
        return text

    def _write(self, db, spans, attributed, dropped, totals, users, seen, prune) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_INSERT_SPAN, spans)
            db.executemany(_MARK_ATTRIBUTED, attributed)
            db.executemany(_DROP_TRACE, dropped)
            db.executemany(_ADD_TOTAL, totals)
            db.executemany(_ADD_USER, users)
            db.executemany(_ADD_SEEN, seen)
            if prune is not None:
                db.execute(_PRUNE_SEEN, (prune,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.exception("%s: rollback failed", self.path)
            raise

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close; idempotent."""
        with self._busy:  # waits for an in-flight commit
            db, self._db = self._db, None
            if db is None:
                return
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                logger.warning("%s: WAL checkpoint at close failed", self.path, exc_info=True)
            finally:
                db.close()
