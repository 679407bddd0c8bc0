"""Trace assembly: spans in any order, attributed once their ancestors are known."""

from __future__ import annotations

import itertools

import pytest

from otel_processor.assembly import CAPACITY, COMPLETE, TIMEOUT, Assembler
from otel_processor.conventions import AGENT, MODEL, OTHER, WORKFLOW, SpanRecord

T = b"t" * 16
ROOT, WF, TOOL, CHAT = b"r" * 8, b"w" * 8, b"x" * 8, b"c" * 8
SPANS = {
    ROOT: (None, SpanRecord(kind=AGENT, agent_id="bot", caller="alice")),
    WF: (ROOT, SpanRecord(kind=WORKFLOW, workflow_id="wf")),
    TOOL: (WF, SpanRecord(kind=OTHER)),
    CHAT: (TOOL, SpanRecord(kind=MODEL, input_tokens=3)),
}


def make(**kw) -> Assembler:
    return Assembler(**{"idle_timeout": 10.0, "max_traces": 100, "max_spans": 1000, **kw})


@pytest.mark.parametrize("order", list(itertools.permutations(SPANS)))
def test_every_arrival_order_attributes_each_counted_span_once_with_its_full_chain(order):
    a = make()
    ready = []
    for span_id in order:
        parent, record = SPANS[span_id]
        a.add(T, span_id, parent, record, now=0.0)
        ready += a.ready(T)
    by_id = {r.span_id: r for r in ready}
    assert sorted(by_id) == sorted([ROOT, WF, CHAT])  # the tool span is context only
    assert len(ready) == 3
    assert [r.kind for r in by_id[CHAT].ancestors] == [OTHER, WORKFLOW, AGENT]
    assert by_id[ROOT].ancestors == ()


def test_a_duplicate_span_id_is_refused():
    a = make()
    assert a.add(T, ROOT, None, SPANS[ROOT][1], now=0.0) is True
    assert a.add(T, ROOT, None, SPANS[ROOT][1], now=0.0) is False
    assert a.open_spans == 1


def test_an_idle_trace_closes_with_what_is_known():
    a = make(idle_timeout=5.0)
    a.add(T, CHAT, TOOL, SPANS[CHAT][1], now=0.0)
    a.add(T, TOOL, WF, SPANS[TOOL][1], now=1.0)
    assert a.ready(T) == []
    assert a.close_idle(5.5) == []
    (closed,) = a.close_idle(6.0)
    assert closed.reason == TIMEOUT
    (left,) = closed.leftovers
    assert left.span_id == CHAT and [r.kind for r in left.ancestors] == [OTHER]
    assert a.open_traces == 0 and a.open_spans == 0


def test_an_idle_trace_with_nothing_waiting_closes_as_complete():
    a = make(idle_timeout=5.0)
    for span_id, (parent, record) in SPANS.items():
        a.add(T, span_id, parent, record, now=0.0)
    assert len(a.ready(T)) == 3
    (closed,) = a.close_idle(100.0)
    assert (closed.reason, closed.leftovers) == (COMPLETE, ())


def test_capacity_closes_the_oldest_traces_first():
    a = make(max_traces=2)
    for i in range(4):
        a.add(bytes([i]) * 16, CHAT, TOOL, SPANS[CHAT][1], now=float(i))
    closed = a.close_over_capacity()
    assert [c.trace_id for c in closed] == [bytes([0]) * 16, bytes([1]) * 16]
    assert {c.reason for c in closed} == {CAPACITY}
    assert a.open_traces == 2


def test_span_bound_is_kept_too():
    a = make(max_spans=3)
    for i in range(4):
        a.add(T, bytes([i]) * 8, None, SpanRecord(kind=OTHER), now=0.0)
    assert len(a.close_over_capacity()) == 1
    assert a.open_spans == 0


def test_a_parent_cycle_never_completes_and_closes_with_a_partial_chain():
    a = make(idle_timeout=1.0)
    a.add(T, b"a" * 8, b"b" * 8, SpanRecord(kind=AGENT, agent_id="x"), now=0.0)
    a.add(T, b"b" * 8, b"a" * 8, SpanRecord(kind=OTHER, caller="alice"), now=0.0)
    a.add(T, CHAT, b"a" * 8, SpanRecord(kind=MODEL, input_tokens=1), now=0.0)
    assert a.ready(T) == []
    (closed,) = a.close_idle(2.0)
    chat = next(r for r in closed.leftovers if r.span_id == CHAT)
    assert [r.kind for r in chat.ancestors] == [AGENT, OTHER]


def test_one_clients_orphans_evict_its_own_traces_first_not_anothers():
    """60 000 orphan spans (their roots never come) from one client beside 20 real traces
    of another that wait for their roots: capacity goes from the client that holds most."""
    a = make(max_spans=1000, max_traces=10_000)
    for i in range(20):  # the honest client's traces: a model call waiting for its root
        trace = b"h%015d" % i
        a.add(trace, b"chat%04d" % i, b"root%04d" % i, SpanRecord(kind=MODEL, input_tokens=5),
              now=0.0, client="honest")
    closed = []
    for i in range(60_000):
        a.add(b"o%015d" % i, b"span%04d" % (i % 10_000), b"gone%04d" % (i % 10_000),
              SpanRecord(kind=MODEL, input_tokens=1), now=1.0, client="noisy")
        closed += a.close_over_capacity()
    assert len(closed) == 60_000 - (1000 - 20)
    assert all(c.trace_id.startswith(b"o") for c in closed)  # only the noisy client's
    for i in range(20):  # the honest roots arrive: every honest call is complete
        a.add(b"h%015d" % i, b"root%04d" % i, None,
              SpanRecord(kind=AGENT, agent_id="bot", caller="alice"), now=2.0, client="honest")
        ready = {r.span_id: r for r in a.ready(b"h%015d" % i)}
        assert ready[b"chat%04d" % i].ancestors[0].caller == "alice"
