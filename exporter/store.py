"""The service's durable ledger: totals, agent users, pending spans and seen span ids in SQLite.

One file, ``<state_dir>/ledger.sqlite3``, in WAL mode. :meth:`Store.commit` writes one
:class:`Batch` in one transaction: a batch is wholly on disk or not at all. With
``synchronous="FULL"`` (the default) it is on disk when ``commit`` returns, so the HTTP 200
sent after it survives a process kill and a power loss; ``"NORMAL"`` survives a process kill
only.

Single writer: one thread at a time uses the store. The service's writer thread calls
``commit`` once per group of requests, and ``seen_before`` before it; ``load`` runs before it
starts (or on it, after a failed commit) and ``close`` after it stops. Overlapping calls are
refused with :class:`StoreError`, not serialised: they are a bug in the caller.

One store per state directory: a store holds an exclusive ``flock`` on ``<state_dir>/lock``
from open to ``close``, and a second one on the same directory (from another process, or
from this one) is refused with :class:`StateDirLocked`. Two services on one state (as in a
rolling update) would both attribute the pending spans they load, and neither would dedupe
against the other.

Seen span ids stay on disk, indexed (``seen_ids`` below): ``load`` does not read them, and
the writer asks :meth:`Store.seen_before` about the ids its in-memory recent set does not
hold, so memory stays bounded however many ids the dedupe window holds (tens of millions).

The store keeps no business rules (no caps, no dedupe policy): it persists what it is given.
Totals are exact integers, far beyond 64 bits (see ``totals`` below).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import operator
import os
import pathlib
import socket
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

from otel_processor.conventions import SpanRecord
from otel_processor.ledger import Increment

SCHEMA_VERSION = 2
FILENAME = "ledger.sqlite3"
LOCK_FILENAME = "lock"
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
DEFAULT_SYNCHRONOUS = "FULL"  # a 200 survives a power loss
_BUSY_TIMEOUT_MS = 5_000  # only another process (a backup, the sqlite3 shell) can hold the lock
_KEY_CACHE_SIZE = 65_536
_TRACE_ID_SIZE, _SPAN_ID_SIZE = 16, 8
_SEEN_ID_SIZE = _TRACE_ID_SIZE + _SPAN_ID_SIZE
# Ids per lookup statement: under SQLite's 999-parameter floor of older builds, and large
# enough that statement overhead is small next to the index seeks.
_LOOKUP_CHUNK = 500
_LOW = 2**62

logger = logging.getLogger(__name__)

# ASCII JSON: canonical for a given tuple, and it round-trips every Python str exactly (lone
# surrogates and NUL included, which SQLite's UTF-8 TEXT could not take raw).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
# A SpanRecord is stored as the JSON array of its fields in dataclass order; that order is
# kept once per database in record_formats, so a record written by another version loads.
_RECORD_FIELDS = tuple(f.name for f in fields(SpanRecord))
_record_values = operator.attrgetter(*_RECORD_FIELDS)

# One row per seen span id: id = trace id (16 bytes) + span id (8), at = when last seen.
# Keyed by id so that seen_before is a few index seeks per id and nothing is loaded into
# memory. The price: ids are random, so a commit dirties about one leaf page per new trace
# (spans of one trace share a prefix, hence a page), and so does pruning: at 10 M ids, 2000
# spans of 2000 traces write ~8 MiB of WAL, 50-100 ms a commit (measured; 20 ms for 200).
_CREATE_SEEN_IDS = "CREATE TABLE seen_ids (id BLOB PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID"
# Pruning by time: O(log n) to find the cut, then the old rows in order; `at` only grows,
# so inserts here append at the right edge (few dirty pages).
_CREATE_SEEN_IDS_AT = "CREATE INDEX seen_ids_at ON seen_ids (at)"

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
    _CREATE_SEEN_IDS,
    _CREATE_SEEN_IDS_AT,
)

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
# An id seen again keeps its latest time, whatever the order of the commits.
_ADD_SEEN = (
    "INSERT INTO seen_ids (id, at) VALUES (?, ?)"
    " ON CONFLICT (id) DO UPDATE SET at = max(at, excluded.at)"
)
_PRUNE_SEEN = "DELETE FROM seen_ids WHERE at < ?"
_LOOKUP_SEEN = f"SELECT id FROM seen_ids WHERE id IN ({', '.join('?' * _LOOKUP_CHUNK)})"
_COUNT_SEEN = "SELECT count(*) FROM seen_ids"
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
    db.execute(_CREATE_SEEN_IDS)
    db.execute(_CREATE_SEEN_IDS_AT)
    while rows := db.execute(_OLD_SEEN_ROWS).fetchall():
        db.executemany(_ADD_SEEN, (
            (ids[i : i + _SEEN_ID_SIZE], at)
            for _, at, ids in rows
            for i in range(0, len(ids) - _SEEN_ID_SIZE + 1, _SEEN_ID_SIZE)
        ))
        db.execute("DELETE FROM seen WHERE rowid <= ?", (rows[-1][0],))
    db.execute("DROP TABLE seen")  # empty now; its index seen_at goes with it


#: version n -> steps taking a database from n to n + 1, in one transaction with the rest
#: of the upgrade: SQL text, or a function of the connection for what SQL does badly.
_MIGRATIONS: dict[int, tuple[str | Callable[[sqlite3.Connection], None], ...]] = {
    1: (_seen_ids_from_schema_1,),
}


class StoreError(Exception):
    """The ledger cannot be opened, read or written; the message names the file."""


class StateDirLocked(StoreError):
    """Another store (another process, or this one) holds the state directory.

    The message is one line naming the directory and the holder as it recorded itself.
    """


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
    after ``new_spans`` and ``attributed``; an id in ``seen`` (16 + 8 bytes) already stored,
    or in ``seen`` twice, keeps its latest time; ``prune_seen_before`` applies last and
    forgets the seen ids older than it. Increments on the same key add up, zero included (it
    creates the series, as in the in-memory ledger).
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
    """What :meth:`Store.load` reads back: all but the seen ids (see :meth:`Store.seen_before`)."""

    totals: dict[str, dict[tuple[str, ...], int]]  # family -> label values -> amount
    agent_users: set[tuple[str, str, str]]
    pending: list[PendingSpan]  # in received order


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

    def __init__(
        self, state_dir: str | os.PathLike, *, synchronous: str = DEFAULT_SYNCHRONOUS
    ) -> None:
        mode = str(synchronous).upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
        self.path = pathlib.Path(state_dir) / FILENAME
        # Held for the whole of each call: commit, load and the seen queries refuse to wait
        # for it (overlap is a caller bug), close waits for it (an in-flight commit finishes).
        self._busy = threading.Lock()
        # (family, labels) -> totals key text; guarded by _busy, cleared when full
        self._keys: dict[tuple[str, tuple[str, ...]], str] = {}
        self._db: sqlite3.Connection | None = None  # guarded by _busy; None once closed
        # fd of <state_dir>/lock, flocked; guarded by _busy; None once closed
        self._lock: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = self._lock_state_dir()  # before SQLite: a refused store reads nothing
            # check_same_thread off: the store is opened on the main thread and handed to the
            # writer thread; _busy refuses concurrent use instead.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._configure(mode)
            self._format = self._migrate()  # this program's record format id; immutable
        except (OSError, sqlite3.Error, StoreError) as exc:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._lock is not None:
                os.close(self._lock)  # releases the flock
                self._lock = None
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{self.path}: cannot open the ledger: {exc}") from exc

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

    def load(self) -> Loaded:
        """Read back what is committed: totals, agent users, pending spans (not seen ids)."""
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
        return Loaded(totals, users, pending)

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

    def seen_before(self, keys: Sequence[bytes]) -> set[bytes]:
        """The ``keys`` (trace id + span id, 24 bytes each) that a committed batch has seen.

        An id counts until a ``prune_seen_before`` past its time removes it. Index seeks, a
        few per key, in statements of :data:`_LOOKUP_CHUNK` keys under one read snapshot;
        memory is that of the answer. Raises :class:`StoreError` for a key that is not 24
        bytes (it could never match, and would hide a caller bug) as for I/O.
        """
        db = self._enter()
        try:
            keys = list(keys)
            if not keys:
                return set()
            for key in keys:
                if type(key) is not bytes or len(key) != _SEEN_ID_SIZE:
                    raise ValueError(f"seen key {key!r:.80} is not 24 bytes")
            found: set[bytes] = set()
            db.execute("BEGIN")  # one snapshot for all the chunks
            try:
                for start in range(0, len(keys), _LOOKUP_CHUNK):
                    chunk = keys[start : start + _LOOKUP_CHUNK]
                    # One statement text, prepared once (the module caches it): the last
                    # chunk is padded with its own first key, which IN ignores.
                    chunk += chunk[:1] * (_LOOKUP_CHUNK - len(chunk))
                    found.update(key for (key,) in db.execute(_LOOKUP_SEEN, chunk))
            finally:
                db.execute("COMMIT")
            return found
        except Exception as exc:
            raise StoreError(f"{self.path}: cannot look up seen ids: {exc}") from exc
        finally:
            self._busy.release()

    def seen_count(self) -> int:
        """How many seen ids are stored; counts the whole index, O(n): for tests, rarely else."""
        db = self._enter()
        try:
            return db.execute(_COUNT_SEEN).fetchone()[0]
        except Exception as exc:
            raise StoreError(f"{self.path}: cannot count seen ids: {exc}") from exc
        finally:
            self._busy.release()

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
        latest: dict[bytes, float] = {}  # an id twice in the batch: one row, latest time
        for trace, span, at in batch.seen:
            if len(trace) != _TRACE_ID_SIZE or len(span) != _SPAN_ID_SIZE:
                raise ValueError(f"seen id {trace!r}, {span!r} is not 16 + 8 bytes")
            _time(at, "seen at")
            key = bytes(trace) + bytes(span)
            if key not in latest or at > latest[key]:
                latest[key] = at
        # In id order: each upsert finds its path down the index mostly in the pages the one
        # before it used (measured: 15 % less time than in arrival order).
        seen = sorted(latest.items())
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
        """Checkpoint the WAL into the database file, close, release the state directory.

        Idempotent. The directory lock goes last: the next store opens a checkpointed file.
        """
        with self._busy:  # waits for an in-flight commit
            db, self._db = self._db, None
            lock, self._lock = self._lock, None
            if db is None:
                return
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                logger.warning("%s: WAL checkpoint at close failed", self.path, exc_info=True)
            finally:
                try:
                    db.close()
                finally:
                    if lock is not None:
                        os.close(lock)  # releases the flock (the only fd of this description)
