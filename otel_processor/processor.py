"""``TokenAttributionProcessor``: attribution inside the application's own TracerProvider.

The in-process runtime of the one engine (``engine.py``). The application's threads do O(1)
work: ``on_start`` and ``on_end`` append the span to a bounded queue, as the SDK's
``BatchSpanProcessor`` does. A named daemon worker reads each span, assembles its trace
(``assembly.py``) and, once no span of the trace that it saw start is still open,
attributes the trace's model calls, agents and workflows with every ancestor known, then
adds the increments to the ledger (plan, commit when ``state_dir`` is given, apply). So a
child that ends after its parent (streaming, async, fire-and-forget) still finds it, and
an agent span that sets its attributes only when it ends is read with them.

Nothing here raises into the application or waits on I/O: a full queue is counted
(``llm_exporter_spans_rejected_total{reason="queue_full"}``), the directory refreshes on
its own thread, and until a directory has loaded once spans wait in the queue (what does
not fit is counted as ``no_directory``). ``force_flush`` drains the queue. After ``fork``
the child starts its own worker and directory refresh.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from otel_processor import metrics as m
from otel_processor.assembly import (
    DEFAULT_RUNAWAY_MAX_CALLS,
    DEFAULT_RUNAWAY_MAX_TOKENS,
    Assembler,
    Closed,
    check_runaway_limits,
)
from otel_processor.budgets import Budgets, load_budgets
from otel_processor.collector import Health, TokenCollector
from otel_processor.conventions import COZE_JS_SPAN_TYPE, with_tracestate_caller
from otel_processor.directory import Directory
from otel_processor.directory_source import DEFAULT_REFRESH_INTERVAL, DirectorySource
from otel_processor.engine import LINK, effects_of, read_span
from otel_processor.ledger import Increment, Ledger
from otel_processor.periods import Periods, PeriodSink, add_amounts, earliest_kept
from otel_processor.prices import PriceCatalog
from otel_processor.prices_source import load_prices

logger = logging.getLogger(__name__)

_DEFAULT_MAX_QUEUE_SIZE = 65_536  # span starts and ends waiting for the worker
_DEFAULT_MAX_OPEN_SPANS = 100_000  # spans of open traces held by the worker
_DEFAULT_MAX_OPEN_TRACES = 50_000
#: A trace with a span that never ends is attributed with what is known after this.
_DEFAULT_TRACE_TIMEOUT = 300.0
_DEFAULT_SCHEDULE_DELAY = 0.1  # seconds the worker sleeps between drains
#: A trace whose spans have all ended is attributed at once and kept this long as context,
#: for a span that starts after its parent ended.
_DEFAULT_CONTEXT_LINGER = 30.0
_DEFAULT_SHUTDOWN_TIMEOUT = 30.0
_THREAD_NAME = "otel-processor-token-attribution"
_TRANSPORT = ("in_process",)
_ERROR = StatusCode.ERROR


class _Flush:
    """A marker in the queue: everything queued before it is counted once it is set."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class TokenAttributionProcessor(SpanProcessor):
    """Attributes every LLM token of the spans it sees and exports the contract's metrics.

    Args:
        directory: members and assets: a YAML/JSON file path, an http(s) URL, or a
            :class:`~otel_processor.directory.Directory` / ``DirectorySource``. Loaded once
            here, then refreshed every ``refresh_interval`` seconds on a background thread;
            until a first load succeeds, spans wait in the queue.
        prices: a price catalog file, a :class:`PriceCatalog`, or ``None`` for the
            packaged defaults.
        registry: the ``CollectorRegistry`` that receives the metrics; a new one (never the
            global registry) when ``None``, available as :attr:`registry`.
        max_queue_size: span starts and ends waiting for the worker; past it spans are
            counted in ``llm_exporter_spans_rejected_total{reason="queue_full"}``.
        max_open_spans / max_open_traces: what the worker holds of open traces; past it the
            oldest trace is attributed with what is known
            (``llm_exporter_traces_flushed_total{reason="capacity"}``).
        trace_timeout: seconds after which a trace with a span that never ended is
            attributed with what is known (``reason="timeout"``).
        context_linger: seconds a trace whose spans have all ended is kept, already
            attributed, as context for a span that starts only after its parent ended
            (LiteLLM writes its span from a logging thread after the call returns);
            ``force_flush`` and ``shutdown`` close them at once.
        runaway_max_calls / runaway_max_tokens: a trace whose attributed model calls go over
            this many calls, or this many tokens (input + output), counts once in
            ``llm_runaway_traces_total{tenant, agent}``; 0 turns a limit off.
        state_dir: keep the counters in the service's durable store in this directory, so
            they survive a restart of the host process (one process per directory).
        budgets: monthly budgets and each tenant's timezone: a budgets file
            (docs/budgets.md) or a :class:`~otel_processor.budgets.Budgets`; ``None``: no
            budgets, calendar periods in UTC.
        wall_clock: unix seconds now (which day is today for the calendar periods).
        search_contact_fields: put email, mis id and phone into ``llm_member_info``'s
            ``search`` label (off by default: they are personal data).
    """

    def __init__(
        self,
        directory: str | os.PathLike | Directory | DirectorySource,
        prices: str | os.PathLike | PriceCatalog | None = None,
        registry: CollectorRegistry | None = None,
        *,
        max_queue_size: int = _DEFAULT_MAX_QUEUE_SIZE,
        max_open_spans: int = _DEFAULT_MAX_OPEN_SPANS,
        max_open_traces: int = _DEFAULT_MAX_OPEN_TRACES,
        trace_timeout: float = _DEFAULT_TRACE_TIMEOUT,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        schedule_delay: float = _DEFAULT_SCHEDULE_DELAY,
        search_contact_fields: bool = False,
        runaway_max_calls: int = DEFAULT_RUNAWAY_MAX_CALLS,
        runaway_max_tokens: int = DEFAULT_RUNAWAY_MAX_TOKENS,
        ledger: Ledger | None = None,
        state_dir: str | os.PathLike | None = None,
        budgets: str | os.PathLike | Budgets | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        context_linger: float = _DEFAULT_CONTEXT_LINGER,
    ) -> None:
        for name, value in (("max_queue_size", max_queue_size),
                            ("max_open_spans", max_open_spans),
                            ("max_open_traces", max_open_traces)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, value in (("trace_timeout", trace_timeout), ("schedule_delay", schedule_delay),
                            ("context_linger", context_linger)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        check_runaway_limits(runaway_max_calls, runaway_max_tokens)
        self.budgets = budgets if isinstance(budgets, Budgets) else load_budgets(budgets)
        self._wall_clock = wall_clock
        self.periods = Periods(self.budgets.calendar, never_fold=self.budgets.by_key)
        self.ledger = ledger or Ledger()
        self._store = None  # opened first: a second process on the directory is refused
        if state_dir is not None:
            from exporter.store import Store  # the service's durable ledger, same schema

            self._store = Store(state_dir)
            loaded = self._store.load(earliest_kept(wall_clock()))
            self.ledger.load(loaded.totals, loaded.agent_users)
            self.periods.load(loaded.periods)
        if isinstance(directory, DirectorySource):
            self._directory = directory
        else:
            self._directory = DirectorySource(directory, refresh_interval=refresh_interval)
            self._directory.refresh()
            self._directory.start()
        self._prices = prices if isinstance(prices, PriceCatalog) else load_prices(prices)
        self._clock = clock
        self._max_queue = max_queue_size
        self._delay = float(schedule_delay)
        self._linger = float(context_linger)
        self._assembler_args = dict(idle_timeout=float(trace_timeout), max_traces=max_open_traces,
                                    max_spans=max_open_spans,
                                    runaway_max_calls=runaway_max_calls,
                                    runaway_max_tokens=runaway_max_tokens)
        self._shutdown = False
        self._init_runtime()
        self.registry = registry if registry is not None else CollectorRegistry()
        health = Health(
            pending_traces=lambda: self._assembler.open_traces,
            directory_last_success=lambda: self._directory.last_success,
            directory_failures=lambda: self._directory.refresh_failures,
        )
        self._collector = TokenCollector(
            self.ledger,
            lambda: self._directory.current,
            health=health,
            search_contact_fields=search_contact_fields,
            periods=self.periods,
            budgets=self.budgets,
            clock=wall_clock,
        )
        self.registry.register(self._collector)
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: (ref() or _nothing)())

    def _init_runtime(self) -> None:
        """The worker's state and thread (at start, and again in a forked child)."""
        # Span starts (as 1-tuples) and ends, oldest first. Bounded: the hot path checks the
        # length before appending; append and popleft are atomic, so no lock is needed.
        self._queue: deque = deque()
        self._wake = threading.Event()
        self._wake_at = max(1, self._max_queue // 2)
        self._drops_lock = threading.Lock()
        self._drops: dict[str, int] = {}  # reason -> spans not queued; guarded by _drops_lock
        self._assembler = Assembler(**self._assembler_args)  # worker thread only
        # traces whose spans have all ended -> when; kept as context until the linger
        # passes (oldest first); worker only
        self._finished: OrderedDict[int, float] = OrderedDict()
        # increments and users planned but not yet committed (a failing store); worker only
        self._unsaved: dict[tuple[str, tuple[str, ...]], int] = {}
        self._unsaved_users: dict[tuple[str, str, str], None] = {}
        self._unsaved_periods: dict[tuple[str, str, str, str], list[int]] = {}
        self._last_prune = 0.0  # wall clock of the last prune of the periods in memory
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
        self._worker.start()

    # -- SpanProcessor: the application's threads ---------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        queue = self._queue
        if not self._shutdown and len(queue) < self._max_queue:
            queue.append((span,))  # a lost start only means a late child may miss its parent

    def on_end(self, span: ReadableSpan) -> None:
        try:
            queue = self._queue
            if self._shutdown:
                self._count_now(m.SPANS_REJECTED.name, ("shutdown",))
            elif len(queue) < self._max_queue:
                queue.append(span)
                if len(queue) >= self._wake_at:
                    self._wake.set()
            else:
                self._drop("queue_full" if self._directory.ready else "no_directory")
        except Exception:  # never raise into the application
            logger.exception("llm-token-exporter: on_end failed")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Count every span that ended before this call; False if that took too long (or no
        directory has loaded yet: the spans wait for it)."""
        if self._shutdown or not self._worker.is_alive():
            return True
        marker = _Flush()
        self._queue.append(marker)  # past the bound on purpose: a marker holds no span
        self._wake.set()
        return marker.done.wait(max(0, timeout_millis) / 1000.0)

    def shutdown(self) -> None:
        """Count what is queued, attribute open traces with what is known, stop; idempotent.

        The metrics stay readable; spans ending later are counted as rejected (shutdown).
        """
        if self._shutdown:
            return
        self._shutdown = True
        self._stopping = True
        self._wake.set()
        self._worker.join(_DEFAULT_SHUTDOWN_TIMEOUT)
        self._directory.stop()
        if self._store is not None and not self._worker.is_alive():
            self._store.close()

    # -- the worker ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay)
            self._wake.clear()
            stopping = self._stopping
            try:
                if self._directory.ready:
                    self._drain(final=stopping)
                elif stopping:
                    self._refuse_queued("no_directory")
            except Exception:  # the worker must survive anything one batch does
                logger.exception("llm-token-exporter: attribution worker failed on a batch")
            if stopping:
                return

    def _drain(self, *, final: bool = False) -> None:
        queue, popleft = self._queue, self._queue.popleft
        assembler = self._assembler
        directory = self._directory.current
        prices = self._prices
        increments: list[Increment] = []
        users: list[tuple[str, str, str]] = []
        flushes: list[_Flush] = []
        received = 0
        now = self._clock()
        sink = PeriodSink(self.periods.calendar, self._wall_clock())
        while queue:
            item = popleft()
            kind = type(item)
            if kind is tuple:
                ctx = item[0].context
                assembler.started(ctx.trace_id, ctx.span_id, now=now)
                continue
            if kind is _Flush:
                flushes.append(item)
                continue
            received += 1
            trace_id = self._ended(item, assembler, increments, now)
            if trace_id is not None and assembler.finished(trace_id):
                # attributed now; kept as context for a span that starts late (LiteLLM
                # writes its span from a logging thread once the call has returned)
                self._attribute_ready(assembler.ready(trace_id), directory, prices,
                                      increments, users, sink)
                self._finished[trace_id] = now
                self._finished.move_to_end(trace_id)
        closed = self._close_finished(now, everything=final or bool(flushes))
        closed += assembler.close_over_capacity() + assembler.close_idle(now)
        if final:
            closed += list(assembler.close_all())
        for c in closed:
            self._attribute(c, directory, prices, increments, users, sink)
        if received:
            increments.append((m.SPANS_RECEIVED.name, _TRANSPORT, received))
        increments += self._take_drops()
        self._commit(increments, users, sink.rows)
        if sink.now - self._last_prune >= 60.0:
            self._last_prune = sink.now
            self.periods.prune(sink.now)
        for flush in flushes:
            flush.done.set()

    def _refuse_queued(self, reason: str) -> None:
        """Stopping before any directory loaded: what waited for it is counted, refused."""
        queue = self._queue
        ended = 0
        while queue:
            item = queue.popleft()
            if type(item) is _Flush:
                item.done.set()
            elif type(item) is not tuple:
                ended += 1
        increments = self._take_drops()
        if ended:
            increments += [(m.SPANS_REJECTED.name, (reason,), ended),
                           (m.SPANS_RECEIVED.name, _TRANSPORT, ended)]
        self._commit(increments, [])

    def _ended(self, span: ReadableSpan, assembler: Assembler, increments: list, now: float):
        """Read an ended span into the assembly; its trace id, None when unusable."""
        try:
            ctx = span.context
            trace_id, span_id = ctx.trace_id, ctx.span_id
            parent = span.parent
            parent_id = parent.span_id if parent is not None else None
        except Exception:
            logger.exception("llm-token-exporter: a span without a context")
            increments.append((m.SPANS_REJECTED.name, ("internal_error",), 1))
            return None
        try:
            resource = span.resource
            attributes = _attributes_of(span)
            if COZE_JS_SPAN_TYPE in attributes:  # its caller is in the tracestate
                attributes = with_tracestate_caller(attributes, span.context.trace_state)
            record = read_span(
                span.name,
                attributes,
                resource.attributes if resource is not None else None,
                error=span.status.status_code is _ERROR,
                start_ns=span.start_time,
                end_ns=span.end_time,
            )
        except Exception as exc:  # InvalidSpan, or a span object that fails when read
            reason = getattr(exc, "reason", "internal_error")
            if reason == "internal_error":
                logger.exception("llm-token-exporter: a span could not be read")
            increments.append((m.SPANS_REJECTED.name, (reason,), 1))
            record = LINK  # it still links its descendants to their ancestors
        assembler.add(trace_id, span_id, parent_id, record, now=now)
        return trace_id

    def _close_finished(self, now: float, *, everything: bool) -> list[Closed]:
        """Close the traces whose spans have all ended, once they have been kept
        ``context_linger`` seconds as context (all of them at a flush or shutdown, and as
        many as it takes when the open traces are over a bound)."""
        finished, closed = self._finished, []
        deadline = now - self._linger
        assembler = self._assembler
        while finished:
            trace_id, at = next(iter(finished.items()))
            # past a bound, finished traces go first (complete, nothing lost), open ones
            # only if that is not enough (close_over_capacity)
            if not everything and at > deadline and not assembler.over_capacity:
                break
            del finished[trace_id]
            if assembler.finished(trace_id):  # else reopened: back when it ends
                c = assembler.close(trace_id)
                if c is not None:
                    closed.append(c)
        return closed

    @staticmethod
    def _attribute(closed: Closed | None, directory, prices, increments, users,
                   sink: PeriodSink) -> None:
        if closed is None:
            return
        TokenAttributionProcessor._attribute_ready(closed.leftovers, directory, prices,
                                                   increments, users, sink)
        increments.append((m.TRACES_FLUSHED.name, (closed.reason,), 1))

    @staticmethod
    def _attribute_ready(readys, directory, prices, increments, users,
                         sink: PeriodSink) -> None:
        for ready in readys:
            try:
                found, user = effects_of(ready.record, ready.ancestors, directory, prices,
                                         ready.usage, sink)
            except Exception:
                logger.exception("llm-token-exporter: attribution failed for one span")
                increments.append((m.SPANS_REJECTED.name, ("internal_error",), 1))
                continue
            increments += found
            if user is not None:
                users.append(user)

    def _commit(self, increments: list[Increment], users: list[tuple[str, str, str]],
                periods: dict | None = None) -> None:
        """Plan, commit (with a store), then apply: what /metrics shows never goes down."""
        if self._store is None:
            if increments or users:
                self.ledger.add(increments, users)
            if periods:
                self.periods.apply(self.periods.plan(periods))
            return
        unsaved, unsaved_users = self._unsaved, self._unsaved_users
        for name, key, amount in increments:
            unsaved[(name, key)] = unsaved.get((name, key), 0) + amount
        for user in users:
            unsaved_users[user] = None
        unsaved_periods = self._unsaved_periods
        for key, amounts in (periods or {}).items():
            add_amounts(unsaved_periods, key, amounts)
        if not unsaved and not unsaved_users and not unsaved_periods:
            return
        from exporter.store import Batch

        plan = self.ledger.plan([(n, k, a) for (n, k), a in unsaved.items()], unsaved_users)
        rows = self.periods.plan(unsaved_periods)
        try:
            self._store.commit(Batch(increments=plan.increments, agent_users=plan.agent_users,
                                     periods=rows))
        except Exception:  # kept, aggregated by series (bounded), for the next drain
            logger.exception("llm-token-exporter: counters not saved; retrying")
            return
        self.ledger.apply(plan)
        self.periods.apply(rows)
        unsaved.clear()
        unsaved_users.clear()
        unsaved_periods.clear()
        try:  # journalled already: a failed checkpoint loses nothing, the next one retries
            if self._store.checkpoint_due():
                self._store.checkpoint()
        except Exception:
            logger.exception("llm-token-exporter: checkpoint failed; the journal keeps it")

    # -- counting from the application's threads (rare paths) ---------------------------

    def _drop(self, reason: str) -> None:
        with self._drops_lock:
            self._drops[reason] = self._drops.get(reason, 0) + 1

    def _take_drops(self) -> list[Increment]:
        with self._drops_lock:
            drops, self._drops = self._drops, {}
        out = [(m.SPANS_REJECTED.name, (reason,), n) for reason, n in drops.items()]
        if drops:
            out.append((m.SPANS_RECEIVED.name, _TRANSPORT, sum(drops.values())))
        return out

    def _count_now(self, family: str, key: tuple[str, ...]) -> None:
        """After shutdown (no worker): count in memory at once."""
        try:
            self.ledger.add([(family, key, 1), (m.SPANS_RECEIVED.name, _TRANSPORT, 1)])
        except Exception:
            logger.exception("llm-token-exporter: counting failed")

    # -- fork ----------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """A forked child (a pre-fork server's worker) gets its own worker and refresh.

        The parent's queue and open traces are the parent's to count. A durable store is
        not shared with a child: its counters stay in memory (logged).
        """
        if self._shutdown:
            return
        self.ledger._after_fork()
        self.periods._after_fork()
        if self._store is not None:
            self._store = None
            logger.warning("llm-token-exporter: forked child counts in memory only; give "
                           "each process its own state_dir")
        self._init_runtime()
        self._directory.after_fork()


def _nothing() -> None:
    return None


def _attributes_of(span: ReadableSpan) -> Mapping:
    """An ended span's attributes as a plain dict.

    The SDK's public ``span.attributes`` is a read-only proxy whose iteration runs in
    Python; an ended SDK span no longer changes, so the dict behind it is read directly.
    Falls back to the public API when the SDK's internals differ.
    """
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    if isinstance(inner, dict):
        return inner
    return span.attributes or {}
