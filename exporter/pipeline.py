"""The service's span path: normalise, deduplicate, assemble, attribute, commit durably.

Request threads normalise their spans (so a bad span is refused in the request's own
answer) and hand them to one writer thread, then wait. The writer takes every request
waiting, assembles and attributes their spans, and commits the whole group in ONE SQLite
transaction (group commit) before it wakes the requests: a 200 means durable. The writer
owns the assembler, the dedupe window and the store; the ledger has its own lock and is
read by /metrics.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from exporter.assembly import Assembler, Ready
from exporter.store import Batch, PendingSpan, Store
from otel_processor import metrics as m
from otel_processor.attribution import attribute_usage, heat_event
from otel_processor.conventions import MODEL, InvalidSpan, SpanRecord, normalize
from otel_processor.directory import Directory, DirectorySource
from otel_processor.ledger import Increment, Ledger, effects
from otel_processor.prices import PriceCatalog

logger = logging.getLogger(__name__)

_THREAD_NAME = "llm-token-exporter-writer"
_DEFAULT_MAX_SEEN = 1_000_000  # dedupe ids kept in memory at most (about 100 bytes each)
_PRUNE_EVERY = 30.0  # seconds between prunes of the durable dedupe table
_TICK = 0.5  # seconds the writer sleeps when idle before it closes idle traces


@dataclass
class _Request:
    spans: list[tuple[bytes, bytes, bytes | None, SpanRecord]]
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
        idle_timeout: float,
        max_traces: int,
        max_spans: int,
        dedupe_retention: float,
        commit_max_delay: float = 0.005,
        max_seen: int = _DEFAULT_MAX_SEEN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._directory = directory
        self._prices = prices
        self.ledger = ledger
        self._clock = clock
        self._retention = dedupe_retention
        self._delay = commit_max_delay
        self._max_seen = max_seen
        self._assembler_args = dict(
            idle_timeout=idle_timeout, max_traces=max_traces, max_spans=max_spans
        )
        self._queue: queue.Queue[_Request | None] = queue.Queue()  # thread-safe hand-off
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self._load()

    # -- state -------------------------------------------------------------------------

    def _load(self) -> None:
        """Build the writer's state from the store (at start, and after a failed commit)."""
        loaded = self._store.load()
        self.ledger.reset()
        self.ledger.load(loaded.totals, loaded.agent_users)
        self._assembler = Assembler(**self._assembler_args)  # writer thread only
        # A restart gives open traces a fresh idle window: their other spans are likely
        # being retried by clients right now, however long the outage was.
        now = self._clock()
        for p in loaded.pending:
            self._assembler.add(
                p.trace_id, p.span_id, p.parent_id, p.record,
                now=max(p.received_at, now), attributed=p.attributed,
            )
        seen = loaded.seen[-self._max_seen:]  # oldest first: keep the newest
        self._seen: OrderedDict[bytes, float] = OrderedDict(  # writer thread only
            (t + s, at) for t, s, at in seen
        )

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
        items: list[tuple[bytes, bytes, bytes | None, SpanRecord]] = []
        refused: dict[str, int] = dict(rejected) if rejected else {}
        for span in spans:
            try:
                record = normalize(
                    span.attributes,
                    span.resource_attributes,
                    error=span.error,
                    duration_ns=max(0, span.end_ns - span.start_ns),
                )
            except InvalidSpan as exc:
                refused[exc.reason] = refused.get(exc.reason, 0) + 1
                continue
            items.append((span.trace_id, span.span_id, span.parent_span_id, record))
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
        return Outcome(True, len(items) - request.duplicates, n_refused, request.duplicates,
                       message)

    def count(self, reason: str, n: int = 1, *, timeout: float = 5.0) -> None:
        """Count a whole request refused before its spans could be read.

        Waits (at most ``timeout``) until the count is committed, so that a client that
        reads /metrics after its refusal sees it counted.
        """
        request = _Request([], [(m.SPANS_REJECTED.name, (reason,), n)], threading.Event())
        self._queue.put(request)
        request.done.wait(timeout)

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
            group = [] if first is _IDLE else [first]
            stop = self._gather(group)
            try:
                self._process(group)
            except Exception:
                logger.exception("commit failed; reloading the durable state")
                for request in group:
                    request.ok = False
                try:
                    self._load()
                except Exception:
                    logger.exception("reload failed")
            for request in group:
                if request.done is not None:
                    request.done.set()
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
            group.append(item)

    def _process(self, requests: list[_Request]) -> None:
        now = self._clock()
        g = _Group()
        batch = g.batch
        touched: dict[bytes, None] = {}
        pending_increments: list[Increment] = []
        for request in requests:
            pending_increments += request.increments
            for trace_id, span_id, parent_id, record in request.spans:
                key = trace_id + span_id
                if key in self._seen or not self._assembler.add(
                    trace_id, span_id, parent_id, record, now=now
                ):
                    request.duplicates += 1
                    continue
                self._seen[key] = now
                batch.seen.append((trace_id, span_id, now))
                g.new[key] = PendingSpan(trace_id, span_id, parent_id, record, False, now)
                touched[trace_id] = None
            if request.duplicates:
                pending_increments.append((m.DUPLICATE_SPANS.name, (), request.duplicates))
        directory = self._directory.current
        for trace_id in touched:
            for ready in self._assembler.ready(trace_id):
                self._attribute(ready, directory, g, pending_increments)
        closed = self._assembler.close_over_capacity() + self._assembler.close_idle(now)
        for c in closed:
            for ready in c.leftovers:
                self._attribute(ready, directory, g, pending_increments)
            pending_increments.append((m.TRACES_FLUSHED.name, (c.reason,), 1))
        dropped = {c.trace_id for c in closed}
        batch.dropped_traces = list(dropped)
        batch.new_spans = [p for p in g.new.values() if p.trace_id not in dropped]
        self._forget_seen(now, batch)
        if (batch.new_spans or batch.dropped_traces or pending_increments or batch.attributed
                or batch.prune_seen_before is not None):
            self.ledger.add(pending_increments, applied=batch.increments)
            self._store.commit(batch)
        for request in requests:
            request.ok = True

    def _attribute(
        self, ready: Ready, directory: Directory, g: _Group, increments: list[Increment]
    ) -> None:
        record = ready.record
        if record.kind == MODEL:
            event = attribute_usage(record, ready.ancestors, directory, self._prices)
        else:
            event = heat_event(record, ready.ancestors, directory)
        key = ready.trace_id + ready.span_id
        new = g.new.get(key)
        if new is not None:
            g.new[key] = PendingSpan(new.trace_id, new.span_id, new.parent_id, new.record, True,
                                     new.received_at)
        else:
            g.batch.attributed.append((ready.trace_id, ready.span_id))
        if event is None:
            return
        incs, user = effects(event)
        increments += incs
        if user is not None and self.ledger.add_agent_user(*user):
            g.batch.agent_users.append(user)

    def _forget_seen(self, now: float, batch: Batch) -> None:
        seen = self._seen
        horizon = now - self._retention
        while seen:
            key, at = next(iter(seen.items()))
            if at >= horizon and len(seen) <= self._max_seen:
                break
            del seen[key]
        if now - self._last_prune >= _PRUNE_EVERY:
            batch.prune_seen_before = horizon
            self._last_prune = now

    def close(self) -> None:
        self.stop()
        self._store.close()


_IDLE = _Request([], [])  # a tick with nothing queued: close idle traces all the same
