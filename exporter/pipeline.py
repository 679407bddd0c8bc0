"""The service runtime of the one engine: read, deduplicate, assemble, attribute, commit.

Request threads read their spans with the engine's ``read_span`` (so a bad span is refused
in the request's own answer) and hand them to one writer thread, then wait. The writer
takes every request waiting, assembles and attributes their spans (``engine.effects_of``),
plans the ledger increments, commits the whole group in ONE SQLite transaction (group
commit) and only then applies the plan to what /metrics shows and wakes the requests: a
200 means durable, and a failed commit changes nothing visible (counters never go down).

Dedupe (R8): every (trace id, span id) of the last ``dedupe_retention`` seconds is kept by
the store (on disk, indexed, and in Bloom filters in memory, so that a new id costs no disk
read), and a span of a trace still open is known to the assembler. After the requests are
answered, the writer checkpoints the store's journal when it is due. The writer owns the
assembler and the store; the ledger has its own lock and is read by /metrics.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from exporter.store import Batch, PendingSpan, Store
from otel_processor import metrics as m
from otel_processor.assembly import (
    DEFAULT_RUNAWAY_MAX_CALLS,
    DEFAULT_RUNAWAY_MAX_TOKENS,
    Assembler,
    Ready,
)
from otel_processor.conventions import InvalidSpan, SpanRecord
from otel_processor.directory import Directory
from otel_processor.directory_source import DirectorySource
from otel_processor.engine import LINK, effects_of, read_span
from otel_processor.ledger import Increment, Ledger
from otel_processor.periods import Calendar, Periods, PeriodSink, earliest_kept
from otel_processor.prices import PriceCatalog

logger = logging.getLogger(__name__)

_THREAD_NAME = "llm-token-exporter-writer"
#: Seconds a trace may stay incomplete before it is attributed with what is known.
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_MAX_TRACES = 50_000  # open traces held
DEFAULT_MAX_SPANS = 500_000  # spans of open traces held
#: Seconds a (trace id, span id) is remembered for duplicate detection (R8).
DEFAULT_DEDUPE_RETENTION = 3600.0
DEFAULT_COMMIT_MAX_DELAY = 0.005  # seconds a group commit may wait for company
_PRUNE_EVERY = 30.0  # seconds between prunes of the durable dedupe table
_TICK = 0.5  # seconds the writer sleeps when idle before it closes idle traces


@dataclass
class _Request:
    # (trace id, span id, parent id, record, accepted, client)
    spans: list[tuple[bytes, bytes, bytes | None, SpanRecord, bool, str | None]]
    increments: list[Increment]
    done: threading.Event | None = None
    ok: bool = False
    duplicates: int = 0


@dataclass(frozen=True)
class Outcome:
    """What the writer did with one request's spans."""

    ok: bool  # durable; False: not stored, the client should retry
    accepted: int
    rejected: int
    duplicates: int
    message: str = ""


@dataclass
class _Group:
    batch: Batch = field(default_factory=Batch)
    new: dict[bytes, PendingSpan] = field(default_factory=dict)  # trace+span id -> new span


class Pipeline:
    """Owns the writer thread; request threads call :meth:`submit`."""

    def __init__(
        self,
        *,
        store: Store,
        directory: DirectorySource,
        prices: PriceCatalog,
        ledger: Ledger,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_traces: int = DEFAULT_MAX_TRACES,
        max_spans: int = DEFAULT_MAX_SPANS,
        runaway_max_calls: int = DEFAULT_RUNAWAY_MAX_CALLS,
        runaway_max_tokens: int = DEFAULT_RUNAWAY_MAX_TOKENS,
        dedupe_retention: float = DEFAULT_DEDUPE_RETENTION,
        commit_max_delay: float = DEFAULT_COMMIT_MAX_DELAY,
        periods: Periods | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._directory = directory
        self._prices = prices
        self.ledger = ledger
        #: usage by calendar period (each tenant's timezone); the writer plans and applies
        self.periods = periods if periods is not None else Periods(Calendar())
        self._clock = clock
        self._retention = dedupe_retention
        self._delay = commit_max_delay
        self._assembler_args = dict(
            idle_timeout=idle_timeout, max_traces=max_traces, max_spans=max_spans,
            runaway_max_calls=runaway_max_calls, runaway_max_tokens=runaway_max_tokens,
        )
        self._queue: queue.Queue[_Request | None] = queue.Queue()  # thread-safe hand-off
        self._refused_lock = threading.Lock()
        self._refused: dict[str, int] = {}  # reason -> whole requests; guarded by _refused_lock
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self._load()

    # -- state -------------------------------------------------------------------------

    def _load(self, *, ledger: bool = True) -> None:
        """Build the writer's state from the store: at start, and after a failed commit
        (then without the ledger, which shows only committed totals already)."""
        loaded = self._store.load(earliest_kept(self._clock()) if ledger else None)
        if ledger:
            self.ledger.load(loaded.totals, loaded.agent_users)
            self.periods.load(loaded.periods)
        self._assembler = Assembler(**self._assembler_args)  # writer thread only
        # A restart gives open traces a fresh idle window: their other spans are likely
        # being retried by clients right now, however long the outage was.
        now = self._clock()
        for p in loaded.pending:
            self._assembler.add(
                p.trace_id, p.span_id, p.parent_id, p.record,
                now=max(p.received_at, now), attributed=p.attributed,
            )

    def wall_clock(self) -> float:
        """The pipeline's clock (unix seconds): which day is today for the periods."""
        return self._clock()

    def directory_tenants(self):
        """The tenant ids of the current directory."""
        return self._directory.current.tenants

    @property
    def ready(self) -> bool:
        """Whether spans can be taken: a directory has loaded at least once (attributing
        without one would bill every token as not_member), and the store has read the seen
        ids of the dedupe window back (a few seconds after a restart over millions)."""
        return self._directory.ready and self._store.seen_ids_ready

    @property
    def pending_traces(self) -> int:
        return self._assembler.open_traces

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    # -- request threads ---------------------------------------------------------------

    def submit(
        self,
        spans: Sequence,
        rejected: Sequence[tuple[str, int]] = (),
        *,
        timeout: float = 30.0,
    ) -> Outcome:
        """Normalise ``spans`` (``WireSpan``s), commit them durably, and say what happened."""
        items: list = []  # as _Request.spans
        refused: dict[str, int] = dict(rejected) if rejected else {}
        for span in spans:
            try:
                record = read_span(span.name, span.attributes, span.resource_attributes,
                                   error=span.error, start_ns=span.start_ns, end_ns=span.end_ns)
            except InvalidSpan as exc:
                refused[exc.reason] = refused.get(exc.reason, 0) + 1
                record = LINK  # refused, yet it still links its descendants to their ancestors
                items.append((span.trace_id, span.span_id, span.parent_span_id, record, False,
                              _client_of(span)))
                continue
            items.append((span.trace_id, span.span_id, span.parent_span_id, record, True,
                          _client_of(span)))
        n_refused = sum(refused.values())
        increments: list[Increment] = [
            (m.SPANS_RECEIVED.name, ("otlp_http",), len(spans) + sum(n for _, n in rejected))
        ]
        increments += [(m.SPANS_REJECTED.name, (r,), n) for r, n in refused.items()]
        request = _Request(items, increments, threading.Event())
        self._queue.put(request)
        if not request.done.wait(timeout) or not request.ok:
            return Outcome(False, 0, n_refused, 0, "not stored; retry")
        message = ", ".join(f"{n} {r}" for r, n in sorted(refused.items()))
        accepted = sum(1 for item in items if item[4]) - request.duplicates
        return Outcome(True, max(0, accepted), n_refused, request.duplicates, message)

    def count(self, reason: str, n: int = 1) -> None:
        """Count a whole request refused before its spans could be read; never waits.

        The count is kept in memory and committed with the writer's next group (within
        ``_TICK`` when nothing else comes), so a flood of refused requests costs no commit
        each and cannot slow the requests that are accepted.
        """
        with self._refused_lock:
            self._refused[reason] = self._refused.get(reason, 0) + n
        self._queue.put(_WAKE)

    def _take_refused(self) -> list[Increment]:
        with self._refused_lock:
            refused, self._refused = self._refused, {}
        return [(m.SPANS_REJECTED.name, (reason,), n) for reason, n in refused.items()]

    # -- writer thread -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop; idempotent. Open traces stay in the store."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=_TICK)
            except queue.Empty:
                first = _IDLE
            if first is None:
                return
            group = [] if first is _IDLE or first is _WAKE else [first]
            stop = self._gather(group)
            try:
                self._process(group)
            except Exception:
                # Nothing of the group is visible (plan -> commit -> apply): the clients
                # retry. The writer's own state is rebuilt from what is committed.
                logger.exception("commit failed; the group is answered 503 and retried")
                for request in group:
                    request.ok = False
                try:
                    self._load(ledger=False)
                except Exception:
                    logger.exception("reload failed")
            for request in group:
                if request.done is not None:
                    request.done.set()
            self._checkpoint_if_due()
            if stop:
                return

    def _gather(self, group: list[_Request]) -> bool:
        """Take what else is waiting (group commit); True if a stop was queued."""
        deadline = time.monotonic() + self._delay if group else 0.0
        while True:
            try:
                wait = deadline - time.monotonic()
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            if item is not _WAKE:
                group.append(item)

    def _process(self, requests: list[_Request]) -> None:
        now = self._clock()
        refused = self._take_refused()
        try:
            self._process_group(requests, now, refused)
        except BaseException:
            for _, (reason,), n in refused:  # not committed: counted with a later group
                self.count(reason, n)
            raise

    def _process_group(self, requests: list[_Request], now: float, refused) -> None:
        g = _Group()
        batch = g.batch
        touched: dict[bytes, None] = {}
        increments: list[Increment] = list(refused)
        users: list[tuple[str, str, str]] = []
        sink = PeriodSink(self.periods.calendar, now)
        on_disk = self._seen_on_disk(requests)
        for request in requests:
            increments += request.increments
            for trace_id, span_id, parent_id, record, accepted, client in request.spans:
                key = trace_id + span_id
                if key in on_disk or not self._assembler.add(
                    trace_id, span_id, parent_id, record, now=now, client=client
                ):
                    if accepted:
                        request.duplicates += 1
                    continue
                batch.seen.append((trace_id, span_id, now))
                g.new[key] = PendingSpan(trace_id, span_id, parent_id, record, False, now)
                touched[trace_id] = None
            if request.duplicates:
                increments.append((m.DUPLICATE_SPANS.name, (), request.duplicates))
        directory = self._directory.current
        for trace_id in touched:
            for ready in self._assembler.ready(trace_id):
                self._attribute(ready, directory, g, increments, users, sink)
        closed = self._assembler.close_over_capacity() + self._assembler.close_idle(now)
        for c in closed:
            for ready in c.leftovers:
                self._attribute(ready, directory, g, increments, users, sink)
            increments.append((m.TRACES_FLUSHED.name, (c.reason,), 1))
        dropped = {c.trace_id for c in closed}
        batch.dropped_traces = list(dropped)
        batch.new_spans = [p for p in g.new.values() if p.trace_id not in dropped]
        self._forget_seen(now, batch)
        plan = self.ledger.plan(increments, users)
        batch.increments, batch.agent_users = plan.increments, plan.agent_users
        rows = sink.rows
        batch.periods = self.periods.plan(rows) if rows else []
        if (batch.new_spans or batch.dropped_traces or batch.increments or batch.attributed
                or batch.agent_users or batch.prune_seen_before is not None or batch.periods):
            self._store.commit(batch)
        self.ledger.apply(plan)  # only once committed: what /metrics shows never goes down
        if batch.periods:
            self.periods.apply(batch.periods)
        for request in requests:
            request.ok = True

    def _seen_on_disk(self, requests: list[_Request]) -> set[bytes]:
        """Ids of the group that the store has seen within the window."""
        candidates = [
            trace_id + span_id for request in requests for trace_id, span_id, *_ in request.spans
        ]
        return self._store.seen_before(candidates) if candidates else set()

    def _checkpoint_if_due(self) -> None:
        """Checkpoint the store's journal (the requests are answered already). A failure
        loses nothing: the journal keeps it, and the next checkpoint tries again."""
        try:
            if self._store.checkpoint_due():
                self._store.checkpoint()
        except Exception:
            logger.exception("checkpoint failed; the journal keeps every batch")

    def _attribute(
        self, ready: Ready, directory: Directory, g: _Group, increments: list[Increment],
        users: list[tuple[str, str, str]], sink: PeriodSink,
    ) -> None:
        found, user = effects_of(ready.record, ready.ancestors, directory, self._prices,
                                 ready.usage, sink)
        key = ready.trace_id + ready.span_id
        new = g.new.get(key)
        if new is not None:
            new.attributed = True  # built by this group, not committed yet: nobody else holds it
        else:
            g.batch.attributed.append((ready.trace_id, ready.span_id))
        increments += found
        if user is not None:
            users.append(user)

    def _forget_seen(self, now: float, batch: Batch) -> None:
        """Prune the store's dedupe window now and then."""
        if now - self._last_prune >= _PRUNE_EVERY:
            batch.prune_seen_before = now - self._retention
            self._last_prune = now
            self.periods.prune(now)  # periods of memory: the store keeps every row

    def close(self) -> None:
        self.stop()
        self._store.close()


def _client_of(span) -> str | None:
    """Whom a span's share of open-trace capacity is charged to: its ``service.name``."""
    name = span.resource_attributes.get("service.name") if span.resource_attributes else None
    return name if type(name) is str else None


_IDLE = _Request([], [])  # a tick with nothing queued: close idle traces all the same
_WAKE = _Request([], [])  # a refusal was counted: commit it with the next group
