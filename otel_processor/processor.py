"""``TokenAttributionProcessor``: attribution inside the application's own TracerProvider.

At ``on_start`` a span is remembered (O(1), under a short lock) with its parent, so that
when a model call ends its ancestors are still open and can be read: no finished trace is
buffered. At ``on_end`` the span is normalised and attributed; the ledger is in memory.
Nothing here raises into the application or waits on I/O: the directory refreshes on its
own background thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from otel_processor import metrics as m
from otel_processor.attribution import attribute_usage, heat_event
from otel_processor.collector import Health, TokenCollector
from otel_processor.conventions import (
    AGENT,
    MODEL,
    OTHER,
    WORKFLOW,
    InvalidSpan,
    SpanRecord,
    from_fields,
    kind_of,
    normalize,
    scan,
)
from otel_processor.directory import Directory, DirectorySource
from otel_processor.ledger import Ledger
from otel_processor.prices import PriceCatalog, load_prices

logger = logging.getLogger(__name__)

_DEFAULT_MAX_OPEN_SPANS = 100_000
_DEFAULT_REFRESH_INTERVAL = 60.0
#: Deeper ancestor chains are cut here (a guard, not a limit real traces reach).
_MAX_DEPTH = 256
_ATTRIBUTED_KINDS = frozenset({MODEL, AGENT, WORKFLOW})
_OTHER_RECORD = SpanRecord(kind=OTHER)


class _Open:
    """A started span not yet ended, as its descendants see it.

    ``record`` is normalised lazily and again whenever the span's attribute count changed
    (an instrumentation may set its ids after the start). ``parked`` holds descendants'
    spans waiting for this span's attributes (it had none when they ended).
    """

    __slots__ = ("span", "trace_id", "record", "seen_attrs", "open", "parked")

    def __init__(self, span: Span, trace_id: int) -> None:
        self.span = span
        self.trace_id = trace_id
        self.record: SpanRecord | None = None
        self.seen_attrs = -1
        self.open = True  # guarded by the processor's _lock
        self.parked: list | None = None  # guarded by the processor's _lock


class TokenAttributionProcessor(SpanProcessor):
    """Attributes every LLM token of the spans it sees and exports the contract's metrics.

    Args:
        directory: members and assets: a YAML/JSON file path, an http(s) URL, or a
            :class:`~otel_processor.directory.Directory` / ``DirectorySource``. It is loaded
            once here (so the first spans are attributed against it) and then refreshed
            every ``refresh_interval`` seconds on a background thread.
        prices: a price catalog file, a :class:`PriceCatalog`, or ``None`` for the
            packaged defaults.
        registry: the ``CollectorRegistry`` that receives the metrics; a new one (never the
            global registry) when ``None``, available as :attr:`registry`.
        max_open_spans: bound on spans started and not yet ended; past it the oldest is
            forgotten and counted in ``llm_exporter_traces_flushed_total{reason="capacity"}``.
        search_contact_fields: put email, mis id and phone into ``llm_member_info``'s
            ``search`` label (off by default: they are personal data).
    """

    def __init__(
        self,
        directory: str | os.PathLike | Directory | DirectorySource,
        prices: str | os.PathLike | PriceCatalog | None = None,
        registry: CollectorRegistry | None = None,
        *,
        max_open_spans: int = _DEFAULT_MAX_OPEN_SPANS,
        refresh_interval: float = _DEFAULT_REFRESH_INTERVAL,
        search_contact_fields: bool = False,
        ledger: Ledger | None = None,
    ) -> None:
        if max_open_spans < 1:
            raise ValueError(f"max_open_spans must be >= 1, got {max_open_spans!r}")
        if isinstance(directory, DirectorySource):
            self._directory = directory
        else:
            self._directory = DirectorySource(directory, refresh_interval=refresh_interval)
            self._directory.refresh()
            if not isinstance(directory, Directory):
                self._directory.start()
        self._prices = prices if isinstance(prices, PriceCatalog) else load_prices(prices)
        self.ledger = ledger or Ledger()
        self._max_open = max_open_spans
        self._lock = threading.Lock()
        self._open: dict[int, _Open] = {}  # span id -> open span; guarded by _lock, bounded
        self._traces: dict[int, int] = {}  # trace id -> open spans; guarded by _lock
        self._parked = 0  # spans waiting in _Open.parked; guarded by _lock, <= max_open_spans
        self._shutdown = False
        self.registry = registry if registry is not None else CollectorRegistry()
        health = Health(
            pending_traces=lambda: len(self._traces),
            directory_last_success=lambda: self._directory.last_success,
            directory_failures=lambda: self._directory.refresh_failures,
        )
        self._collector = TokenCollector(
            self.ledger,
            lambda: self._directory.current,
            health=health,
            search_contact_fields=search_contact_fields,
        )
        self.registry.register(self._collector)

    # -- SpanProcessor -------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self._shutdown:
            return
        try:
            ctx = span.context
            entry = _Open(span, ctx.trace_id)
            released = None
            with self._lock:
                if len(self._open) >= self._max_open:
                    released = self._forget_oldest()
                self._open[ctx.span_id] = entry
                self._traces[ctx.trace_id] = self._traces.get(ctx.trace_id, 0) + 1
            if released:
                self._attribute_all(released)
        except Exception:  # never raise into the application
            logger.exception("llm-token-exporter: on_start failed")

    def on_end(self, span: ReadableSpan) -> None:
        if self._shutdown:
            self._count(m.SPANS_REJECTED.name, ("shutdown",))
            return
        try:
            self._on_end(span)
        except InvalidSpan as exc:
            logger.debug("llm-token-exporter: span refused: %s", exc)
            self._count(m.SPANS_REJECTED.name, (exc.reason,))
        except Exception:  # never raise into the application
            logger.exception("llm-token-exporter: on_end failed")
            self._count(m.SPANS_REJECTED.name, ("internal_error",))

    def shutdown(self) -> None:
        """Stop the directory refresh; idempotent. The metrics stay readable."""
        if self._shutdown:
            return
        self._shutdown = True
        self._directory.stop()
        released = []
        with self._lock:
            for entry in self._open.values():
                entry.open = False
                released += entry.parked or ()
                entry.parked = None
            self._open.clear()
            self._traces.clear()
            self._parked = 0
        try:  # what waited for an ancestor's attributes is counted with what is known
            self._attribute_all(released)
        except Exception:
            logger.exception("llm-token-exporter: shutdown failed to count waiting spans")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing to flush: a span is counted when it ends, or when the open ancestor it
        waits for ends (see :class:`_Open`)."""
        return True

    # -- internals -----------------------------------------------------------------------

    def _on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        released = None
        with self._lock:
            entry = self._open.pop(ctx.span_id, None)
            if entry is not None:  # None: forgotten for capacity, already released
                self._release_trace(ctx.trace_id)
                entry.open = False
                released, entry.parked = entry.parked, None
                if released:
                    self._parked -= len(released)
        self._count(m.SPANS_RECEIVED.name, ("in_process",))
        attributes = _attributes_of(span)
        record = entry.record if entry is not None else None
        if record is not None and entry.seen_attrs == len(attributes) and record.kind != MODEL:
            # read already as an ancestor of its children, and unchanged since
            if record.kind not in _ATTRIBUTED_KINDS:
                record = None
        else:
            found = scan(attributes)
            record = None
            if kind_of(found) in _ATTRIBUTED_KINDS:
                duration = None
                if span.end_time is not None and span.start_time is not None:
                    duration = span.end_time - span.start_time
                record = from_fields(
                    found,
                    _resource_attributes(span),
                    error=span.status.status_code is StatusCode.ERROR,
                    duration_ns=duration,
                    name=span.name,
                )
        if record is not None:
            parent = span.parent
            self._attribute(record, self._chain(parent.span_id if parent is not None else None))
        if released:  # descendants that waited for this span's attributes
            self._attribute_all(released)

    def _chain(self, parent_id: int | None) -> list[_Open]:
        """The open ancestors, nearest first."""
        entries: list[_Open] = []
        with self._lock:
            while parent_id is not None and len(entries) < _MAX_DEPTH:
                entry = self._open.get(parent_id)
                if entry is None:
                    break
                entries.append(entry)
                parent = entry.span.parent
                parent_id = parent.span_id if parent is not None else None
        return entries

    @staticmethod
    def _records(entries: list[_Open]) -> tuple[list[SpanRecord], _Open | None]:
        """Ancestor records, and the nearest open ancestor that has no attributes yet."""
        records = []
        blocker = None
        for entry in entries:
            span = entry.span
            n = _attribute_count(span)
            record = entry.record
            if record is None or entry.seen_attrs != n:
                record = entry.record = _context_record(span)
                entry.seen_attrs = n
            if n == 0 and blocker is None and entry.open:
                blocker = entry
            records.append(record)
        return records, blocker

    def _attribute(self, record: SpanRecord, entries: list[_Open]) -> None:
        records, blocker = self._records(entries)
        if blocker is not None:
            # Some instrumentations (opentelemetry-util-genai) set an agent's or workflow's
            # attributes only when it ends: wait for it, bounded.
            with self._lock:
                if blocker.open and self._parked < self._max_open:
                    if blocker.parked is None:
                        blocker.parked = []
                    blocker.parked.append((record, entries))
                    self._parked += 1
                    return
            records, _ = self._records(entries)
        directory = self._directory.current
        if record.kind == MODEL:
            self.ledger.record(attribute_usage(record, records, directory, self._prices))
        else:
            event = heat_event(record, records, directory)
            if event is not None:
                self.ledger.record(event)

    def _attribute_all(self, waiting: list) -> None:
        for record, entries in waiting:
            try:
                self._attribute(record, entries)
            except Exception:
                logger.exception("llm-token-exporter: attribution of a waiting span failed")
                self._count(m.SPANS_REJECTED.name, ("internal_error",))

    def _forget_oldest(self) -> list:
        """Forget the oldest open span; returns the spans that waited for it."""
        # caller holds _lock; dicts keep insertion order, so the first key is the oldest
        span_id = next(iter(self._open))
        entry = self._open.pop(span_id)
        self._release_trace(entry.trace_id)
        entry.open = False
        released, entry.parked = entry.parked or [], None
        self._parked -= len(released)
        self.ledger.add([(m.TRACES_FLUSHED.name, ("capacity",), 1)])
        return released

    def _release_trace(self, trace_id: int) -> None:
        # caller holds _lock
        left = self._traces.get(trace_id, 0) - 1
        if left > 0:
            self._traces[trace_id] = left
        else:
            self._traces.pop(trace_id, None)

    def _count(self, family: str, key: tuple[str, ...]) -> None:
        try:
            self.ledger.add([(family, key, 1)])
        except Exception:
            logger.exception("llm-token-exporter: counting failed")


def _attributes_of(span: ReadableSpan) -> Mapping:
    """A snapshot of a span's attributes as a plain dict.

    The SDK's public ``span.attributes`` is a read-only proxy over ``BoundedAttributes``,
    whose iteration runs in Python and copies the keys under a lock: about as costly as the
    rest of attribution. The dict behind it is copied here in C, under the SDK's own lock.
    Falls back to the public API when the SDK's internals differ.
    """
    bounded = getattr(span, "_attributes", None)
    inner = getattr(bounded, "_dict", None)
    lock = getattr(bounded, "_lock", None)
    if isinstance(inner, dict) and lock is not None:
        with lock:
            return inner.copy()
    return span.attributes or {}


def _attribute_count(span: ReadableSpan) -> int:
    bounded = getattr(span, "_attributes", None)
    inner = getattr(bounded, "_dict", None)
    if isinstance(inner, dict):
        return len(inner)
    return len(span.attributes or ())


def _resource_attributes(span: ReadableSpan) -> Mapping | None:
    resource = span.resource
    return resource.attributes if resource is not None else None


def _context_record(span: Span) -> SpanRecord:
    """An ancestor as attribution needs it; an unreadable one only breaks no chain."""
    try:
        return normalize(_attributes_of(span), _resource_attributes(span), name=span.name)
    except InvalidSpan:
        return _OTHER_RECORD
