"""The one span path both runtimes share: span -> record -> attribution -> increments.

The in-process processor (``processor.py``) and the service (``exporter/pipeline.py``) are
thin runtimes around this module: they differ only in how a span arrives (an SDK span at
``on_end``, a wire span in an OTLP request) and where totals are kept (memory, or the
durable store). Both read a span with :func:`read_span` from the same inputs, assemble it
with :class:`~otel_processor.assembly.Assembler`, and turn what is ready into ledger
increments with :func:`effects_of`. No I/O, no clock, no thread here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from otel_processor import metrics as m
from otel_processor.assembly import TraceUsage
from otel_processor.attribution import UsageEvent, attribute_usage, heat_event
from otel_processor.conventions import MODEL, OTHER, UNCLASSIFIED, SpanRecord, normalize
from otel_processor.directory import Directory
from otel_processor.ledger import (
    Increment,
    heat_effects,
    unattributed_increments,
    unclassified_increments,
    usage_increments,
)
from otel_processor.periods import PeriodSink
from otel_processor.prices import PriceCatalog

__all__ = ["LINK", "NO_AGENT", "effects_of", "read_span"]

#: What stands in the assembly for a span that was refused: it breaks no chain of its
#: descendants (their caller may sit above it) and carries nothing itself.
LINK = SpanRecord(kind=OTHER)

AgentUser = tuple[str, str, str]

#: ``llm_runaway_traces``' agent label for a call outside any agent.
NO_AGENT = "none"
_RUNAWAY = m.RUNAWAY_TRACES.name


def read_span(
    name: str | None,
    attributes: Mapping | None,
    resource_attributes: Mapping | None,
    *,
    error: bool,
    start_ns: int | None,
    end_ns: int | None,
) -> SpanRecord:
    """One span, live or from the wire, as a record; only ``InvalidSpan`` escapes.

    ``name`` is the span name (the id of an agent or workflow span whose attributes carry
    none), ``error`` whether its status is ERROR.
    """
    duration = None
    if start_ns is not None and end_ns is not None:
        duration = max(0, end_ns - start_ns)
    # normalize raises nothing but InvalidSpan, whatever the data (conventions.py)
    return normalize(attributes, resource_attributes, error=error, duration_ns=duration,
                     name=name, end_ns=end_ns)


def effects_of(
    record: SpanRecord,
    ancestors: Sequence[SpanRecord],
    directory: Directory,
    prices: PriceCatalog,
    usage: TraceUsage | None = None,
    periods: PeriodSink | None = None,
) -> tuple[list[Increment], AgentUser | None]:
    """A counted span with its ancestors (nearest first) as ledger increments, and the
    (owner, agent, caller) it makes known to ``llm_agent_users``.

    ``usage`` is the span's trace's (``Ready.usage``): an attributed model call is charged to
    it, and the call that first takes the trace over a runaway limit adds one
    ``llm_runaway_traces{tenant, agent}`` (its billing tenant, its outermost agent or
    :data:`NO_AGENT`). Unattributed calls are not charged. An attributed call is also
    added to ``periods``, in the calendar periods of its end (``periods.py``). A record of
    kind ``UNCLASSIFIED`` (made by the assembly at a trace's close) is unclassified usage.
    """
    if record.kind == MODEL:
        event = attribute_usage(record, ancestors, directory, prices)
        if type(event) is UsageEvent:
            out = usage_increments(event)
            if usage is not None and usage.charge(event.input_tokens + event.output_tokens):
                out.append((_RUNAWAY, (event.tenant, event.agent or NO_AGENT), 1))
            if periods is not None:
                periods.add(event, record.end_ns)
            return out, None
        return unattributed_increments(event), None
    if record.kind == UNCLASSIFIED:  # handed out by the assembly at a trace's close
        return unclassified_increments(record.unclassified or "unknown_kind",
                                       record.input_tokens + record.output_tokens), None
    heat = heat_event(record, ancestors, directory)
    if heat is None:
        return [], None
    return heat_effects(heat)
