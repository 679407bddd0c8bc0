"""Trace assembly: which ancestors a span has, when its spans arrive in any order.

Spans of one trace arrive across requests and services, children usually before parents.
The assembler keeps a compact skeleton per open trace (ids, parent link, normalised
record) and hands out a span for attribution as soon as its ancestors up to a root are
known. A trace idle for ``idle_timeout`` is closed: what is still waiting is attributed
with the ancestors that are known (reason ``timeout``), or nothing was waiting
(``complete``). Past ``max_traces`` open traces or ``max_spans`` spans, the oldest trace
is closed the same way (``capacity``).

Both runtimes use it: the service's writer thread (ids are bytes, traces close when idle)
and the in-process worker (ids are the SDK's ints, a trace closes as soon as none of its
spans is open). Ids are opaque hashable values here.

Runaway traces: each open trace has a :class:`TraceUsage`, shared by every :class:`Ready` of
the trace (those handed out while it is open and its leftovers at close). The runtimes pass
it to ``engine.effects_of``, which charges it with each *attributed* model call; the first
call that takes the trace over ``runaway_max_calls`` calls or ``runaway_max_tokens`` tokens
(input + output) is told so, once per trace. A limit of 0 is off. The count lives as long
as the trace is open: a trace reopened later (a late span, a restart of the service)
starts from zero and may count again.

Usage on a span that is no model call (an agent, workflow, tool or other span reporting
tokens) is decided when its trace closes, with every span of the trace known: a span with a
descendant that reported usage (a model call, or a span counted this way) repeats their
totals and counts nowhere (R1); otherwise, innermost first, an agent span's usage counts as
that agent's own model call (a remote agent: Bedrock Agents, Azure AI Foundry), and any other
span's as ``llm_unclassified_usage_tokens{reason}``. Those records are handed out with the
trace's leftovers (``Closed.leftovers``).

Not thread-safe: one owner (the service's writer thread, or the in-process worker) calls
everything here; ``open_traces`` and ``open_spans`` may be read from any thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from otel_processor.conventions import (
    AGENT,
    MODEL,
    OTHER,
    TOOL,
    UNCLASSIFIED,
    WORKFLOW,
    SpanRecord,
)

COMPLETE = "complete"
TIMEOUT = "timeout"
CAPACITY = "capacity"

#: Deeper chains are cut (a guard against pathological or cyclic input).
MAX_DEPTH = 256
#: Runaway limits of a trace: attributed model calls, and their input + output tokens.
DEFAULT_RUNAWAY_MAX_CALLS = 50
DEFAULT_RUNAWAY_MAX_TOKENS = 200_000
_COUNTED_KINDS = frozenset({MODEL, AGENT, WORKFLOW})

#: context fields of a record -> the one record that carries only them (cleared when full)
_CONTEXTS: dict[tuple, SpanRecord] = {}
_CONTEXTS_SIZE = 65_536


def context_of(record: SpanRecord) -> SpanRecord:
    """What an attributed span still gives its trace: the fields attribution reads of an
    ancestor (kind, caller, tenant and their resource fallbacks, agent, workflow), shared.

    An open trace stays as context for late children for ``idle_timeout`` after its spans
    are attributed; most of its records then carry the same few fields, so they share one
    object instead of each keeping its tokens, model and times (measured: about a third of
    the memory of open traces under steady load).
    """
    key = (record.kind, record.caller, record.tenant, record.resource_caller,
           record.resource_tenant, record.agent_id, record.workflow_id, record.chat_workflow)
    context = _CONTEXTS.get(key)
    if context is None:
        if len(_CONTEXTS) >= _CONTEXTS_SIZE:
            _CONTEXTS.clear()
        context = _CONTEXTS[key] = SpanRecord(
            kind=record.kind, caller=record.caller, tenant=record.tenant,
            resource_caller=record.resource_caller, resource_tenant=record.resource_tenant,
            agent_id=record.agent_id, workflow_id=record.workflow_id,
            chat_workflow=record.chat_workflow)
    return context


#: A span in assembly: (parent id, record). A tuple: built for every span, and cheaper than
#: any object; whether it still waits for attribution is ``_Trace.waiting``'s business.
_Node = tuple  # tuple[bytes | None, SpanRecord]


class TraceUsage:
    """The attributed model calls of one open trace and their tokens, against the limits."""

    __slots__ = ("max_calls", "max_tokens", "calls", "tokens", "over")

    def __init__(self, max_calls: int, max_tokens: int) -> None:
        self.max_calls, self.max_tokens = max_calls, max_tokens  # 0: that limit is off
        self.calls = 0
        self.tokens = 0
        self.over = False  # went over a limit already: told once

    def charge(self, tokens: int) -> bool:
        """Count one attributed model call; True only for the call that first goes over."""
        self.calls += 1
        self.tokens += tokens
        if self.over:
            return False
        if (self.max_calls and self.calls > self.max_calls) or (
            self.max_tokens and self.tokens > self.max_tokens
        ):
            self.over = True
            return True
        return False


@dataclass(slots=True)  # not frozen: built per span, and frozen init is 4x slower
class Ready:
    """A span to attribute now, with its ancestors (nearest first), and its trace's usage
    (None: the runaway limits are off)."""

    trace_id: bytes
    span_id: bytes
    record: SpanRecord
    ancestors: tuple[SpanRecord, ...]
    usage: TraceUsage | None = None


@dataclass(slots=True)  # not frozen: built per span, and frozen init is 4x slower
class Closed:
    """A trace taken out of assembly, and why."""

    trace_id: bytes
    reason: str  # COMPLETE, TIMEOUT or CAPACITY
    leftovers: tuple[Ready, ...]  # spans attributed with a partial chain


class _Trace:
    __slots__ = ("spans", "last_seen", "waiting", "started", "client", "usage", "rollups",
                 "usage_parents")

    def __init__(self, now: float, client=None) -> None:
        self.client = client  # who sent its first span (fairness of capacity)
        self.spans: dict[bytes, _Node] = {}
        self.last_seen = now
        self.waiting: dict[bytes, None] = {}  # span ids still to attribute, arrival order
        self.started: set | None = None  # in process: spans started and not yet ended
        self.usage: TraceUsage | None = None  # made when a span is first handed out
        # spans that are no model call and report usage: decided at close (_own_usage)
        self.rollups: dict[bytes, SpanRecord] | None = None
        self.usage_parents: list | None = None  # parent ids of model calls that report usage


class Assembler:
    """Open traces, bounded by traces and spans; see the module docstring."""

    def __init__(
        self,
        *,
        idle_timeout: float,
        max_traces: int,
        max_spans: int,
        runaway_max_calls: int = DEFAULT_RUNAWAY_MAX_CALLS,
        runaway_max_tokens: int = DEFAULT_RUNAWAY_MAX_TOKENS,
    ) -> None:
        if idle_timeout <= 0 or max_traces < 1 or max_spans < 1:
            raise ValueError("idle_timeout, max_traces and max_spans must be positive")
        check_runaway_limits(runaway_max_calls, runaway_max_tokens)
        # None: both off, no usage is kept
        self._limits = (runaway_max_calls, runaway_max_tokens) if (
            runaway_max_calls or runaway_max_tokens) else None
        self._idle_timeout = idle_timeout
        self._max_traces = max_traces
        self._max_spans = max_spans
        # trace id -> open trace, least recently touched first
        self._traces: OrderedDict[bytes, _Trace] = OrderedDict()
        self._span_count = 0
        # Capacity is shared fairly: past a bound, the client holding the most spans loses
        # its own oldest trace first, so one client's orphans cannot flush another's traces.
        self._client_traces: dict[object, OrderedDict] = {}  # client -> its trace ids, oldest first
        self._client_spans: dict[object, int] = {}  # client -> spans held

    @property
    def open_traces(self) -> int:
        return len(self._traces)

    @property
    def open_spans(self) -> int:
        return self._span_count

    def __contains__(self, ids: tuple[bytes, bytes]) -> bool:
        trace = self._traces.get(ids[0])
        return trace is not None and ids[1] in trace.spans

    def _trace(self, trace_id, now: float, client) -> _Trace:
        """The open trace, created for ``client`` or touched (most recent last)."""
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = _Trace(now, client)
            ids = self._client_traces.get(client)
            if ids is None:
                ids = self._client_traces[client] = OrderedDict()
            ids[trace_id] = None
        else:
            self._traces.move_to_end(trace_id)
            self._client_traces[trace.client].move_to_end(trace_id)
            if now > trace.last_seen:
                trace.last_seen = now
        return trace

    def _count(self, trace: _Trace, n: int) -> None:
        self._span_count += n
        self._client_spans[trace.client] = self._client_spans.get(trace.client, 0) + n

    def started(self, trace_id, span_id, *, now: float) -> None:
        """A span of the trace started (in process): the trace stays open until it ends.

        Counts against ``max_spans`` like an ended span, so that spans that never end are
        bounded too.
        """
        trace = self._trace(trace_id, now, None)
        if trace.started is None:
            trace.started = set()
        if span_id not in trace.started:
            trace.started.add(span_id)
            self._count(trace, 1)

    def finished(self, trace_id) -> bool:
        """Whether every span of the trace that was seen starting has ended."""
        trace = self._traces.get(trace_id)
        return trace is not None and not trace.started

    def add(
        self,
        trace_id: bytes,
        span_id: bytes,
        parent_id: bytes | None,
        record: SpanRecord,
        *,
        now: float,
        attributed: bool = False,
        client=None,
    ) -> bool:
        """Add a span (False if the trace already holds this span id: a duplicate).

        ``client`` (the service: the sender's ``service.name``) is whom the trace's
        capacity is charged to; a trace belongs to the client of its first span.
        """
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._trace(trace_id, now, client)
        else:  # self._trace(trace_id, now, client), inline: this runs for every span
            if span_id in trace.spans:
                return False
            self._traces.move_to_end(trace_id)
            self._client_traces[trace.client].move_to_end(trace_id)
            if now > trace.last_seen:
                trace.last_seen = now
        if record.has_usage:
            if record.kind == MODEL:
                if trace.usage_parents is None:
                    trace.usage_parents = []
                trace.usage_parents.append(parent_id)
            elif record.kind != UNCLASSIFIED:
                if trace.rollups is None:
                    trace.rollups = {}
                trace.rollups[span_id] = record
        if not attributed and record.kind in _COUNTED_KINDS:  # counted; others are context
            trace.spans[span_id] = (parent_id, record)
            trace.waiting[span_id] = None
        else:
            trace.spans[span_id] = (parent_id, context_of(record))
        started = trace.started
        if started is not None and span_id in started:
            started.discard(span_id)  # counted once, when it started
        else:
            self._span_count += 1  # self._count(trace, 1)
            spans = self._client_spans
            spans[trace.client] = spans.get(trace.client, 0) + 1
        return True

    def ready(self, trace_id: bytes) -> list[Ready]:
        """Spans of the trace whose ancestors are all known, now marked attributed."""
        trace = self._traces.get(trace_id)
        if trace is None or not trace.waiting:
            return []
        out = []
        spans, waiting = trace.spans, trace.waiting
        usage = self._usage(trace)
        models = 0  # model calls handed out now: one may wrap another (_wrappers)
        for span_id in list(waiting):
            parent_id, record = spans[span_id]
            ancestors = _complete_chain(spans, parent_id)
            if ancestors is not None:
                del waiting[span_id]
                out.append(Ready(trace_id, span_id, record, ancestors, usage))
                spans[span_id] = (parent_id, context_of(record))
                if record.kind == MODEL:
                    models += 1
        if models > 1:
            wrappers = _wrappers(spans, out)
            if wrappers:
                out = [_as_nothing(r) if r.span_id in wrappers else r for r in out]
        return out

    def _usage(self, trace: _Trace) -> TraceUsage | None:
        usage = trace.usage
        if usage is None and self._limits is not None:
            usage = trace.usage = TraceUsage(*self._limits)
        return usage

    def close_idle(self, now: float) -> list[Closed]:
        """Close traces idle for ``idle_timeout`` (oldest first)."""
        out = []
        deadline = now - self._idle_timeout
        while self._traces:
            trace_id, trace = next(iter(self._traces.items()))
            if trace.last_seen > deadline:
                break
            out.append(self._close(trace_id, TIMEOUT))
        return out

    def close_over_capacity(self) -> list[Closed]:
        """Close traces until both bounds hold: the oldest trace of the client that holds
        the most (traces past the trace bound, spans past the span bound)."""
        out = []
        while self._traces:
            if len(self._traces) > self._max_traces:
                share = {c: len(ids) for c, ids in self._client_traces.items()}
            elif self._span_count > self._max_spans:
                share = self._client_spans
            else:
                break
            heaviest = max(share, key=share.__getitem__)
            out.append(self._close(next(iter(self._client_traces[heaviest])), CAPACITY))
        return out

    @property
    def over_capacity(self) -> bool:
        return len(self._traces) > self._max_traces or self._span_count > self._max_spans

    def close(self, trace_id, reason: str = COMPLETE) -> Closed | None:
        """Close one trace now (its spans are all in); None when it is not open."""
        if trace_id not in self._traces:
            return None
        return self._close(trace_id, reason)

    def close_all(self) -> Iterator[Closed]:
        while self._traces:
            yield self._close(next(iter(self._traces)), TIMEOUT)

    def _close(self, trace_id: bytes, reason: str) -> Closed:
        trace = self._traces.pop(trace_id)
        held = len(trace.spans) + len(trace.started or ())
        self._span_count -= held
        client = trace.client
        ids = self._client_traces[client]
        del ids[trace_id]
        spans = self._client_spans.get(client, 0) - held
        if ids:
            self._client_spans[client] = spans
        else:  # forget a client that holds nothing: bounded by open traces
            del self._client_traces[client]
            self._client_spans.pop(client, None)
        own = _own_usage(trace_id, trace, self._usage(trace)) if trace.rollups else ()
        if not trace.waiting:
            return Closed(trace_id, COMPLETE if reason in (TIMEOUT, COMPLETE) else reason, own)
        usage = self._usage(trace)
        leftovers = [
            Ready(trace_id, span_id, node[1], _chain(trace, node, complete_only=False), usage)
            for span_id, node in ((i, trace.spans[i]) for i in trace.waiting)
        ]
        if sum(r.record.kind == MODEL for r in leftovers) > 1:
            wrappers = _wrappers(trace.spans, leftovers)
            leftovers = [_as_nothing(r) if r.span_id in wrappers else r for r in leftovers]
        return Closed(trace_id, reason, (*leftovers, *own))


_UNCLASSIFIED_REASON = {TOOL: "tool_span", WORKFLOW: "workflow_span"}  # else unknown_kind


#: What a wrapper is handed out as: attributed (the runtimes mark it so), counting nothing.
_NOTHING = SpanRecord(kind=OTHER)


def _as_nothing(ready: Ready) -> Ready:
    return Ready(ready.trace_id, ready.span_id, _NOTHING, ready.ancestors, ready.usage)


def _wrappers(spans: dict, handed: list) -> set:
    """Of the model calls in ``handed`` (handed out together), those around another of them:
    they count nothing, the calls inside them do (R1: usage nested in usage counts once, at
    the innermost span). A model call that reports no usage and has model calls under it
    wraps the requests it made (AI SDK 7's ``embeddings`` span around one span per request);
    one that reports usage around one that reports usage repeats it (two instrumentations on
    one call: OpenLIT's LangChain span, current while its OpenAI span runs). A call that
    reports usage around one that reports none still counts (its usage is the only one)."""
    models = {r.span_id: r.record.has_usage for r in handed if r.record.kind == MODEL}
    found = set()
    for own, has_usage in models.items():
        node = spans.get(own)
        parent_id = node[0] if node is not None else None
        depth = 0
        while parent_id is not None and parent_id != own and depth < MAX_DEPTH:
            around = models.get(parent_id)
            if around is not None and (has_usage or not around):
                found.add(parent_id)
            parent = spans.get(parent_id)
            if parent is None:
                break
            parent_id = parent[0]
            depth += 1
    return found


def _cover(spans: dict, parent_id, covered: set) -> None:
    """Mark ``parent_id`` and its ancestors as having a descendant that reported usage."""
    depth = 0
    while parent_id is not None and parent_id not in covered and depth < MAX_DEPTH:
        covered.add(parent_id)
        parent = spans.get(parent_id)
        if parent is None:
            return
        parent_id = parent[0]
        depth += 1


def _own_usage(trace_id, trace: _Trace, usage: TraceUsage | None) -> tuple[Ready, ...]:
    """The usage of the trace's spans that are no model call and that no descendant's usage
    covers, innermost first: an agent span's as a model call of that agent, any other span's
    as unclassified usage. A span with a descendant that reported usage (a model call, or a
    span counted here) repeats their totals: nothing (R1)."""
    spans = trace.spans
    covered: set = set()
    for parent_id in trace.usage_parents or ():
        _cover(spans, parent_id, covered)
    candidates = []
    for span_id, record in trace.rollups.items():  # type: ignore[union-attr]
        node = spans.get(span_id)
        if node is not None:
            candidates.append((_chain(trace, node, complete_only=False), span_id, record, node))
    candidates.sort(key=lambda c: -len(c[0]))  # deepest first: the innermost usage counts
    out = []
    for chain, span_id, record, node in candidates:
        if span_id in covered:
            continue
        if record.kind == AGENT:
            call = SpanRecord(
                kind=MODEL, input_tokens=record.input_tokens,
                output_tokens=record.output_tokens, cache_read_tokens=record.cache_read_tokens,
                cache_write_tokens=record.cache_write_tokens,
                reasoning_tokens=record.reasoning_tokens, has_usage=True, model=record.model,
                response_model=record.response_model, provider=record.provider,
                caller=record.caller, tenant=record.tenant,
                resource_caller=record.resource_caller, resource_tenant=record.resource_tenant,
                conversation=record.conversation, outcome=record.outcome, end_ns=record.end_ns)
            out.append(Ready(trace_id, span_id, call, (context_of(record), *chain), usage))
        else:
            out.append(Ready(trace_id, span_id, SpanRecord(
                kind=UNCLASSIFIED, input_tokens=record.input_tokens,
                output_tokens=record.output_tokens,
                unclassified=_UNCLASSIFIED_REASON.get(record.kind, "unknown_kind")), chain, usage))
        _cover(spans, node[0], covered)
    return tuple(out)


def check_runaway_limits(max_calls: object, max_tokens: object) -> None:
    """Raise ValueError unless both runaway limits are integers >= 0 (0: off)."""
    for name, value in (("runaway_max_calls", max_calls), ("runaway_max_tokens", max_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0 (0: off), got {value!r}")


def _chain(trace: _Trace, node: _Node, *, complete_only: bool):
    """The ancestors of ``node`` up to a root, nearest first.

    With ``complete_only``, None while an ancestor is missing (wait for it); otherwise
    the ancestors known so far. A parent cycle or a chain beyond MAX_DEPTH stops the walk:
    such a chain never completes and is attributed when the trace closes.
    """
    if complete_only:
        return _complete_chain(trace.spans, node[0])
    ancestors: list[SpanRecord] = []
    seen: set[bytes] = set()
    parent_id = node[0]
    while parent_id is not None:
        parent = trace.spans.get(parent_id)
        if parent is None or parent_id in seen or len(ancestors) >= MAX_DEPTH:
            return tuple(ancestors)
        seen.add(parent_id)
        ancestors.append(parent[1])
        parent_id = parent[0]
    return tuple(ancestors)


def _complete_chain(spans: dict, parent_id) -> tuple[SpanRecord, ...] | None:
    """``_chain(..., complete_only=True)`` from a parent id: the ancestors, or None.

    Without a set of ids seen: a parent cycle never reaches a root, so it runs into
    MAX_DEPTH and gives None, as a cycle found on the way would.
    """
    if parent_id is None:
        return ()
    ancestors: list[SpanRecord] = []
    while parent_id is not None:
        parent = spans.get(parent_id)
        if parent is None or len(ancestors) >= MAX_DEPTH:
            return None
        parent_id, record = parent
        ancestors.append(record)
    return tuple(ancestors)
