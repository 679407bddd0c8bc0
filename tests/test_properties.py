"""Property tests over random trace trees, emitted through the real SDK, on both runtimes.

An independent oracle walks the same tree top-down (passing the context down rather than
looking it up) and must agree with each runtime to the token. Spans end in a random order
(children after their parents too: streaming, async, fire-and-forget).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace

from tests.conftest import RUNTIMES, Pipeline

DIRECTORY = """
tenants:
  - id: acme
    members: [{id: alice}, {id: erin}]
  - id: globex
    members: [{id: carol}, {id: erin}]
agents:
  - {id: bot-a, owner_tenant: acme}
  - {id: bot-b, owner_tenant: globex}
workflows:
  - {id: chat-a, owner_tenant: acme, kind: chatflow, agent: bot-a}
  - {id: wf-x, owner_tenant: acme}
  - {id: wf-y, owner_tenant: globex}
"""
MEMBERS = {"acme": {"alice", "erin"}, "globex": {"carol", "erin"}}
CHATFLOW_AGENT = {"chat-a": "bot-a"}
AGENT_OWNER = {"bot-a": "acme", "bot-b": "globex"}  # any other id: unknown, owner ""
WORKFLOW_OWNER = {"chat-a": "acme", "wf-x": "acme", "wf-y": "globex"}


@dataclass
class Node:
    kind: str  # agent, workflow, chatflow, tool, other, model
    ident: str = ""
    caller: str | None = None
    tenant: str | None = None
    tokens: tuple[int, int] = (0, 0)
    children: list[Node] = field(default_factory=list)


callers = st.sampled_from([None, None, "alice", "carol", "erin", "dave"])
tenants = st.sampled_from([None, None, "acme", "globex", "nowhere"])
model_leaf = st.builds(
    Node,
    kind=st.just("model"),
    ident=st.sampled_from(["gpt-4o", "gpt-4o-mini", "unpriced-x"]),
    caller=callers,
    tenant=tenants,
    tokens=st.tuples(st.integers(0, 5000), st.integers(0, 5000)),
)


def _inner(children):
    return st.builds(
        Node,
        kind=st.sampled_from(["agent", "workflow", "chatflow", "tool", "other"]),
        ident=st.sampled_from(["bot-a", "bot-b", "wf-x", "wf-y", "chat-a", "t"]),
        caller=callers,
        tenant=tenants,
        children=st.lists(children, max_size=3),
    )


trees = st.recursive(model_leaf, _inner, max_leaves=12)


def _attributes(node: Node) -> dict:
    attrs: dict = {}
    if node.caller:
        attrs["enduser.id"] = node.caller
    if node.tenant:
        attrs["tenant.id"] = node.tenant
    if node.kind == "model":
        attrs.update({
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": node.ident,
            "gen_ai.usage.input_tokens": node.tokens[0],
            "gen_ai.usage.output_tokens": node.tokens[1],
        })
    elif node.kind == "agent":
        attrs.update({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": node.ident})
    elif node.kind in ("workflow", "chatflow"):
        attrs.update({"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.id": node.ident})
        if node.kind == "chatflow":
            attrs["gen_ai.workflow.type"] = "chatflow"
    elif node.kind == "tool":
        attrs["gen_ai.operation.name"] = "execute_tool"
    return attrs


def emit(tracer, node: Node, rng: random.Random | None = None) -> None:
    """Start the tree's spans top-down; end them children first, or in ``rng``'s order."""
    started = []

    def start(n: Node, context) -> None:
        span = tracer.start_span(n.kind, context=context, attributes=_attributes(n))
        started.append(span)
        inner = trace.set_span_in_context(span)
        for child in n.children:
            start(child, inner)

    start(node, None)
    if rng is None:
        started.reverse()
    else:
        rng.shuffle(started)
    for span in started:
        span.end()


@dataclass
class Oracle:
    models: Counter = field(default_factory=Counter)  # (tenant, model) -> tokens
    members: Counter = field(default_factory=Counter)
    agents: Counter = field(default_factory=Counter)
    workflows: Counter = field(default_factory=Counter)
    unattributed: Counter = field(default_factory=Counter)
    invocations: Counter = field(default_factory=Counter)  # (owner, agent) -> turns
    runs: Counter = field(default_factory=Counter)  # (owner, workflow) -> runs
    tokens_in: int = 0

    def walk(self, node, caller=None, tenant=None, agent=None, workflow=None, nearest=None):
        """``nearest``: the agent that the nearest agent-standing ancestor stands for."""
        caller = node.caller or caller
        tenant = node.tenant or tenant
        if node.kind == "model":
            total = sum(node.tokens)
            self.tokens_in += total
            billing, reason = _billing(caller, tenant)
            if billing is None:
                self.unattributed[reason] += total
                return
            self.models[(billing, node.ident)] += total
            self.members[(billing, caller)] += total
            if agent:
                self.agents[(billing, agent)] += total
            if workflow:
                self.workflows[(billing, workflow)] += total
            return
        if node.kind == "agent":
            self.invocations[(AGENT_OWNER.get(node.ident, ""), node.ident)] += 1
        if agent is None and node.kind == "agent":
            agent = node.ident
        is_chat = node.kind == "chatflow" or node.ident in CHATFLOW_AGENT
        bound = CHATFLOW_AGENT.get(node.ident) if node.kind in ("workflow", "chatflow") else None
        if bound is not None and nearest != bound:  # R5: not the flow of that invocation
            self.invocations[(AGENT_OWNER[bound], bound)] += 1
        if node.kind in ("workflow", "chatflow") and is_chat:
            agent = agent or bound
        elif node.kind == "workflow":
            self.runs[(WORKFLOW_OWNER.get(node.ident, ""), node.ident)] += 1
            if workflow is None:
                workflow = node.ident
        if node.kind == "agent":
            nearest = node.ident
        elif bound is not None:
            nearest = bound
        for child in node.children:
            self.walk(child, caller, tenant, agent, workflow, nearest)


def _billing(caller, tenant):
    if caller is None:
        return None, "no_caller"
    if tenant is not None:
        return (tenant, None) if caller in MEMBERS.get(tenant, ()) else (None, "not_member")
    found = [t for t, members in MEMBERS.items() if caller in members]
    if len(found) == 1:
        return found[0], None
    return None, "ambiguous_tenant" if found else "not_member"


def _by(p: Pipeline, metric: str, label: str) -> Counter:
    out: Counter = Counter()
    for key, value in p.samples(metric).items():
        labels = dict(key)
        out[(labels["tenant"], labels[label])] += int(value)
    return +out


def _heat(p: Pipeline, metric: str, label: str) -> Counter:
    out: Counter = Counter()
    for key, value in p.samples(metric).items():
        labels = dict(key)
        out[(labels["owner_tenant"], labels[label])] += int(value)
    return +out


def _state(p: Pipeline) -> dict[str, Counter]:
    unattributed: Counter = Counter()
    for k, v in p.samples("llm_unattributed_tokens_total").items():
        unattributed[dict(k)["reason"]] += int(v)
    return {
        "models": _by(p, "llm_model_tokens_total", "model"),
        "members": _by(p, "llm_member_tokens_total", "member"),
        "agents": _by(p, "llm_agent_tokens_total", "agent"),
        "workflows": _by(p, "llm_workflow_tokens_total", "workflow"),
        "invocations": _heat(p, "llm_agent_invocations_total", "agent"),
        "runs": _heat(p, "llm_workflow_runs_total", "workflow"),
        "unattributed": unattributed,
    }


def _check(p: Pipeline, forest, rng) -> None:
    """What the forest adds to the runtime's counters is what the oracle says."""
    before = _state(p)
    oracle = Oracle()
    for tree in forest:
        emit(p.tracer, tree, rng)
        oracle.walk(tree)
    after = _state(p)
    got = {name: +(after[name] - before[name]) for name in after}
    assert got["models"] == +oracle.models
    assert got["members"] == +oracle.members
    assert got["agents"] == +oracle.agents
    assert got["workflows"] == +oracle.workflows
    assert got["invocations"] == +oracle.invocations
    assert got["runs"] == +oracle.runs
    # per tenant, the sum over members equals the sum over models
    for tenant in ("acme", "globex"):
        by_member = sum(v for (t, _), v in got["members"].items() if t == tenant)
        by_model = sum(v for (t, _), v in got["models"].items() if t == tenant)
        assert by_member == by_model
    # tokens in = attributed + unattributed: none lost, none counted twice
    attributed = sum(got["models"].values())
    assert oracle.tokens_in == attributed + sum(got["unattributed"].values())
    assert got["unattributed"] == +oracle.unattributed


@pytest.mark.parametrize(("runtime_name", "examples"), [("in_process", 80), ("service", 40)])
@pytest.mark.parametrize("shuffled", [False, True], ids=["children-first", "any-end-order"])
def test_random_trace_trees_agree_with_an_independent_oracle(
    tmp_path_factory, runtime_name, examples, shuffled
):
    path = tmp_path_factory.mktemp("dir") / "directory.yaml"
    path.write_text(DIRECTORY)
    p = RUNTIMES[runtime_name](directory=path)  # one per test: each example adds to it

    @settings(max_examples=examples, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(forest=st.lists(trees, min_size=1, max_size=4), seed=st.integers(0, 2**32))
    def check(forest, seed):
        _check(p, forest, random.Random(seed) if shuffled else None)

    try:
        check()
    finally:
        p.close()
