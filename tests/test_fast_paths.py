"""The writer's fast paths give exactly what the plain rules give, on random inputs.

``usage_increments`` builds its keys once per label combination, ``attribute_usage`` walks
the ancestors once for both the outermost agent and workflow (and once, nearest first, for
the service split), ``effects_of`` dispatches
without ``effects``, and the assembler walks complete chains without a set of ids seen.
Each is checked here against a plain version (the rules as written before the fast paths).
"""

from __future__ import annotations

import random

import pytest
import yaml

from otel_processor import ledger
from otel_processor import metrics as m
from otel_processor.assembly import MAX_DEPTH, Assembler, context_of
from otel_processor.attribution import (
    AGENT_INVOCATION,
    WORKFLOW_RUN,
    HeatEvent,
    NotAttributable,
    Unattributed,
    UsageEvent,
    _agent_of,
    _nearest,
    attribute_usage,
    billing_tenant,
    heat_event,
    is_chat_workflow,
    model_label,
    outermost,
)
from otel_processor.conventions import AGENT, MODEL, OTHER, TOOL, WORKFLOW, SpanRecord
from otel_processor.directory import Directory, parse_directory
from otel_processor.engine import effects_of
from otel_processor.prices import PriceCatalog
from otel_processor.prices_source import load_prices

DIRECTORY = """
tenants:
  - id: acme
    members: [{id: alice}, {id: erin}]
  - id: globex
    members: [{id: carol}, {id: erin}]
agents:
  - {id: bot-a, owner_tenant: acme}
  - {id: bot-b, owner_tenant: globex}
  - {id: bot-c, owner_tenant: acme, kind: assistant}
workflows:
  - {id: chat-a, owner_tenant: acme, kind: chatflow, agent: bot-a}
  - {id: chat-b, owner_tenant: globex, kind: chatflow, agent: bot-b}
  - {id: chat-c, owner_tenant: acme, kind: chatflow, agent: bot-c}
  - {id: wf-x, owner_tenant: acme}
  - {id: wf-y, owner_tenant: globex}
"""



def outermost_agent(ancestors, directory):
    """R4 as first written: the outermost ancestor that stands for an agent."""
    for ancestor in reversed(ancestors):
        agent = _agent_of(ancestor, directory)
        if agent is not None:
            return agent
    return None


def outermost_workflow(ancestors, directory):
    """R5 as first written: the outermost workflow ancestor that is not a chat workflow."""
    for ancestor in reversed(ancestors):
        if ancestor.kind == WORKFLOW and not is_chat_workflow(ancestor, directory):
            return ancestor.workflow_id or "unknown"
    return None


def plain_service(ancestors, directory):
    """The service split as written: the nearest tool, agent (or bound chat workflow), or
    workflow ancestor; an agent the directory marks ``kind: assistant`` is ``assistant``."""
    for ancestor in ancestors:
        if ancestor.kind == TOOL:
            return "tool"
        agent = _agent_of(ancestor, directory)
        if agent is not None:
            entry = directory.agents.get(agent)
            return "assistant" if entry is not None and entry.kind == "assistant" else "agent"
        if ancestor.kind == WORKFLOW and not ancestor.chat_workflow:
            return "workflow"  # a chat workflow of no known agent is looked through
    return "direct"


@pytest.fixture(scope="module")
def directory() -> Directory:
    return parse_directory(yaml.safe_load(DIRECTORY))


@pytest.fixture(scope="module")
def prices() -> PriceCatalog:
    return load_prices()


# -- the plain versions ------------------------------------------------------------------


def plain_observe(out, histogram, labels, ns):
    le = "+Inf"
    for bound, text in zip(histogram.bounds_ns, m.LATENCY_BOUNDS_S, strict=True):
        if ns <= bound:
            le = str(text)
            break
    out.append((histogram.buckets, (*labels, le), 1))
    out.append((histogram.sum_ns, labels, ns))


def plain_usage_increments(event: UsageEvent):
    t, model = event.tenant, event.model
    tin, tout = event.input_tokens, event.output_tokens
    out = [
        (m.MODEL_TOKENS.name, (t, model, "input"), tin),
        (m.MODEL_TOKENS.name, (t, model, "output"), tout),
        (m.MODEL_REQUESTS.name, (t, model, event.outcome), 1),
        (m.MEMBER_TOKENS.name, (t, event.caller, "input"), tin),
        (m.MEMBER_TOKENS.name, (t, event.caller, "output"), tout),
        (m.SERVICE_TOKENS.name, (t, event.service, "input"), tin),
        (m.SERVICE_TOKENS.name, (t, event.service, "output"), tout),
        (m.SERVICE_CALLS.name, (t, event.service), 1),
    ]
    if event.cache_read_tokens:
        out.append((m.MODEL_CACHE_TOKENS.name, (t, model, "read"), event.cache_read_tokens))
    if event.cache_write_tokens:
        out.append((m.MODEL_CACHE_TOKENS.name, (t, model, "write"), event.cache_write_tokens))
    if event.agent is not None:
        out.append((m.AGENT_TOKENS.name, (t, event.agent, "input"), tin))
        out.append((m.AGENT_TOKENS.name, (t, event.agent, "output"), tout))
    if event.workflow is not None:
        out.append((m.WORKFLOW_TOKENS.name, (t, event.workflow, "input"), tin))
        out.append((m.WORKFLOW_TOKENS.name, (t, event.workflow, "output"), tout))
    if event.duration_ns is not None:
        plain_observe(out, m.MODEL_DURATION, (t, model), event.duration_ns)
    if event.time_to_first_token_ns is not None:
        plain_observe(out, m.MODEL_TTFT, (t, model), event.time_to_first_token_ns)
    cost = event.cost_pico
    if cost is None:
        out.append((m.UNPRICED_TOKENS.name, (model,), tin + tout))
    else:
        out.append((m.MODEL_COST.name, (t, model), cost))
        out.append((m.MEMBER_COST.name, (t, event.caller), cost))
        if event.agent is not None:
            out.append((m.AGENT_COST.name, (t, event.agent), cost))
        if event.workflow is not None:
            out.append((m.WORKFLOW_COST.name, (t, event.workflow), cost))
    return out


def plain_attribute_usage(record, ancestors, directory, prices):
    model = model_label(record)
    caller = _nearest(record, ancestors, "caller")
    try:
        tenant = billing_tenant(caller, _nearest(record, ancestors, "tenant"), directory)
    except NotAttributable as exc:
        return Unattributed(exc.reason, record.total_tokens, model)
    price = prices.lookup(record.response_model, record.model)
    cost = None
    if price is not None:
        cost = price.cost_pico(record.input_tokens, record.output_tokens,
                               record.cache_read_tokens, record.cache_write_tokens)
    return UsageEvent(
        tenant=tenant, caller=caller, model=model,
        agent=outermost_agent(ancestors, directory),
        workflow=outermost_workflow(ancestors, directory),
        input_tokens=record.input_tokens, output_tokens=record.output_tokens,
        cache_read_tokens=record.cache_read_tokens,
        cache_write_tokens=record.cache_write_tokens,
        cost_pico=cost, outcome=record.outcome, duration_ns=record.duration_ns,
        time_to_first_token_ns=record.time_to_first_token_ns,
        service=plain_service(ancestors, directory),
    )


def plain_effects(event):
    if isinstance(event, UsageEvent):
        return plain_usage_increments(event), None
    if isinstance(event, Unattributed):
        return [(m.UNATTRIBUTED_TOKENS.name, (event.reason,), event.tokens)], None
    user = None
    if event.kind == AGENT_INVOCATION and event.caller is not None:
        user = (event.owner_tenant, event.asset, event.caller)
    name = m.AGENT_INVOCATIONS.name if event.kind == AGENT_INVOCATION else m.WORKFLOW_RUNS.name
    return [(name, (event.owner_tenant, event.asset), 1)], user


def plain_chain(spans, parent_id, *, complete_only):
    ancestors, seen = [], set()
    while parent_id is not None:
        parent = spans.get(parent_id)
        if parent is None or parent_id in seen or len(ancestors) >= MAX_DEPTH:
            return None if complete_only else tuple(ancestors)
        seen.add(parent_id)
        ancestors.append(parent[1])
        parent_id = parent[0]
    return tuple(ancestors)


# -- random inputs -----------------------------------------------------------------------

MAYBE = [None, None, None]


def random_record(rng: random.Random, kind: str | None = None) -> SpanRecord:
    kind = kind or rng.choice([MODEL, MODEL, AGENT, WORKFLOW, WORKFLOW, TOOL, OTHER])
    tin = rng.choice([0, 1, 7, 1000, 123_456])
    return SpanRecord(
        kind=kind,
        input_tokens=tin,
        output_tokens=rng.choice([0, 3, 999]),
        cache_read_tokens=rng.choice([0, 0, tin // 2]),
        cache_write_tokens=rng.choice([0, 0, tin // 4]),
        model=rng.choice([*MAYBE, "gpt-4o", "gpt-4o-mini", "unpriced-x", "gpt-4o-2024-08-06"]),
        response_model=rng.choice([*MAYBE, "gpt-4o-2024-08-06", "mystery"]),
        agent_id=rng.choice([*MAYBE, "bot-a", "bot-b", "bot-c", "bot-z"]),
        workflow_id=rng.choice([*MAYBE, "chat-a", "chat-b", "chat-c", "wf-x", "wf-y", "wf-z"]),
        chat_workflow=rng.random() < 0.2,
        caller=rng.choice([*MAYBE, "alice", "carol", "erin", "dave"]),
        tenant=rng.choice([*MAYBE, "acme", "globex", "nowhere"]),
        resource_caller=rng.choice([*MAYBE, "alice", "erin"]),
        resource_tenant=rng.choice([*MAYBE, "acme", "globex"]),
        outcome=rng.choice(["ok", "ok", "error"]),
        duration_ns=rng.choice([None, 0, 1, 50_000_000, 50_000_001, 10**9, 2 * 10**12,
                                rng.randrange(0, 400 * 10**9)]),
        time_to_first_token_ns=rng.choice([None, None, 100_000_000, 100_000_001,
                                           rng.randrange(0, 400 * 10**9)]),
        has_usage=kind == MODEL and rng.random() < 0.7,  # other usage: decided at close
    )


def random_chain(rng: random.Random) -> tuple[SpanRecord, ...]:
    return tuple(random_record(rng) for _ in range(rng.choice([0, 1, 2, 3, 5, 8])))


@pytest.mark.parametrize("seed", range(5))
def test_usage_increments_are_the_plain_ones_with_the_key_cache_cold_warm_and_full(
    seed, monkeypatch
):
    rng = random.Random(seed)
    monkeypatch.setattr(ledger, "_USAGE_KEYS_SIZE", 50)  # clearing when full, too
    for _ in range(3000):
        event = UsageEvent(
            rng.choice(["acme", "globex"]), rng.choice(["alice", "erin"]),
            rng.choice(["gpt-4o", "unknown", "x"]), rng.choice([None, "bot-a", "unknown"]),
            rng.choice([None, "wf-x"]), rng.choice([0, 5, 10**6]), rng.choice([0, 2]),
            rng.choice([0, 3]), rng.choice([0, 4]), rng.choice([None, 0, 17, 10**15]),
            rng.choice(["ok", "error"]),
            rng.choice([None, 0, 50_000_000, 50_000_001, 300 * 10**9, 300 * 10**9 + 1]),
            rng.choice([None, rng.randrange(0, 10**12)]),
            rng.choice(["agent", "assistant", "workflow", "tool", "direct"]),
        )
        assert ledger.usage_increments(event) == plain_usage_increments(event)
    assert len(ledger._USAGE_KEYS) <= 50


def test_every_bucket_bound_and_its_neighbours_land_where_the_plain_loop_puts_them():
    for bound in (0, *m.MODEL_DURATION.bounds_ns):
        for ns in (bound - 1, bound, bound + 1):
            if ns < 0:
                continue
            fast, plain = [], []
            ledger._observe(fast, m.MODEL_DURATION, ("t", "m"), ns)
            plain_observe(plain, m.MODEL_DURATION, ("t", "m"), ns)
            assert fast == plain


@pytest.mark.parametrize("seed", range(5))
def test_attribution_and_effects_are_the_plain_ones_on_random_chains(seed, directory, prices):
    rng = random.Random(seed)
    for _ in range(3000):
        record = random_record(rng)
        ancestors = random_chain(rng)
        assert outermost(ancestors, directory) == (
            outermost_agent(ancestors, directory), outermost_workflow(ancestors, directory))
        if record.kind == MODEL:
            fast = attribute_usage(record, ancestors, directory, prices)
            assert fast == plain_attribute_usage(record, ancestors, directory, prices)
            expected = plain_effects(fast)
        else:
            event = heat_event(record, ancestors, directory)
            expected = ([], None) if event is None else plain_effects(event)
        assert effects_of(record, ancestors, directory, prices) == expected


def test_heat_and_unattributed_effects_are_the_plain_ones_with_the_cache_full(monkeypatch):
    monkeypatch.setattr(ledger, "_HEAT_SIZE", 3)
    rng = random.Random(7)
    for _ in range(500):
        event = HeatEvent(rng.choice([AGENT_INVOCATION, WORKFLOW_RUN]),
                          rng.choice(["bot-a", "wf-x", "unknown"]),
                          rng.choice(["acme", ""]), rng.choice([None, "alice"]))
        assert ledger.effects(event) == plain_effects(event)
        assert ledger.heat_increments(event) == plain_effects(event)[0]
        miss = Unattributed(rng.choice(["no_caller", "not_member"]), rng.randrange(9), "m")
        assert ledger.effects(miss) == plain_effects(miss)
    assert len(ledger._HEAT) <= 3


def _contexts(chain):
    return tuple(context_of(r) for r in chain)


def _handed(spans, handed):
    """What the assembly hands out for ``handed`` (span ids handed out together): a model
    call that is an ancestor of another model call among them counts nothing when it
    reports no usage (a wrapper around the requests it made) or when the call inside
    reports usage (its usage repeats it); every other span is its record."""
    wrappers = set()
    for w in handed:
        inner = spans[w][1]
        if inner.kind != MODEL:
            continue
        parent_id, depth = spans[w][0], 0
        while parent_id is not None and parent_id != w and depth < MAX_DEPTH:
            parent = spans.get(parent_id)
            if parent_id in handed and parent is not None and parent[1].kind == MODEL \
                    and (inner.has_usage or not parent[1].has_usage):
                wrappers.add(parent_id)
            if parent is None:
                break
            parent_id, depth = parent[0], depth + 1
    return [SpanRecord(kind=OTHER) if w in wrappers else spans[w][1] for w in handed]


def test_a_context_keeps_every_field_attribution_reads_of_an_ancestor():
    rng = random.Random(7)
    for _ in range(200):
        r = random_record(rng)
        c = context_of(r)
        for name in ("kind", "caller", "tenant", "resource_caller", "resource_tenant",
                     "agent_id", "workflow_id", "chat_workflow"):
            assert getattr(c, name) == getattr(r, name)
        assert c.input_tokens == c.output_tokens == 0 and c.model is None
        assert context_of(r) is c  # shared


@pytest.mark.parametrize("seed", range(20))
def test_assembly_hands_out_the_chains_a_plain_walk_finds_with_cycles_and_gaps(seed):
    """Random parent links (cycles, self-parents, missing parents, deep chains) in random
    arrival order: what becomes ready, when, and with which ancestors, is what a walk with
    a set of ids seen gives, and so is what is left when the trace closes."""
    rng = random.Random(seed)
    n = rng.choice([5, 30, 300])
    ids = [i.to_bytes(8, "big") for i in range(n)]
    links = {}
    for k, span_id in enumerate(ids):
        r = rng.random()
        if r < 0.1:
            parent = None
        elif r < 0.15:
            parent = b"missing" + bytes([k % 3])
        elif r < 0.2:
            parent = rng.choice(ids)  # may close a cycle, or be the span itself
        else:
            parent = ids[k - 1] if k else None  # deep chains (past MAX_DEPTH at n=300)
        links[span_id] = (parent, random_record(rng))
    order = list(ids)
    rng.shuffle(order)
    a = Assembler(idle_timeout=10.0, max_traces=10, max_spans=10_000)
    spans: dict = {}
    waiting: dict = {}
    trace = b"T" * 16
    for span_id in order:
        parent, record = links[span_id]
        assert a.add(trace, span_id, parent, record, now=0.0)
        assert not a.add(trace, span_id, parent, record, now=0.0)  # a duplicate
        spans[span_id] = (parent, record)
        if record.kind in (MODEL, AGENT, WORKFLOW):
            waiting[span_id] = None
        expected = []
        for w in list(waiting):
            chain = plain_chain(spans, spans[w][0], complete_only=True)
            if chain is not None:
                del waiting[w]
                expected.append((w, chain))
        # an ancestor handed out already is kept as its context (assembly.context_of): the
        # fields attribution reads of an ancestor
        got = [(r.span_id, r.record, _contexts(r.ancestors)) for r in a.ready(trace)]
        records = _handed(spans, [w for w, _ in expected])
        assert got == [(w, record, _contexts(chain))
                       for (w, chain), record in zip(expected, records, strict=True)]
    closed = a.close(trace)
    records = _handed(spans, list(waiting))
    assert [(r.span_id, r.record, _contexts(r.ancestors)) for r in closed.leftovers] == [
        (w, record, _contexts(plain_chain(spans, spans[w][0], complete_only=False)))
        for w, record in zip(waiting, records, strict=True)
    ]
    assert a.open_spans == 0 and a.open_traces == 0
