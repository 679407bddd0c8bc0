"""Property tests over random trace trees, emitted through the real SDK.

An independent oracle walks the same tree top-down (passing the context down rather than
looking it up) and must agree with the processor to the token.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Pipeline

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


def emit(tracer, node: Node) -> None:
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
    with tracer.start_as_current_span(node.kind, attributes=attrs):
        for child in node.children:
            emit(tracer, child)


@dataclass
class Oracle:
    models: Counter = field(default_factory=Counter)  # (tenant, model) -> tokens
    members: Counter = field(default_factory=Counter)
    agents: Counter = field(default_factory=Counter)
    workflows: Counter = field(default_factory=Counter)
    unattributed: Counter = field(default_factory=Counter)
    tokens_in: int = 0

    def walk(self, node, caller=None, tenant=None, agent=None, workflow=None):
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
        if agent is None and node.kind == "agent":
            agent = node.ident
        is_chat = node.kind == "chatflow" or node.ident in CHATFLOW_AGENT
        if node.kind in ("workflow", "chatflow") and is_chat:
            agent = agent or CHATFLOW_AGENT.get(node.ident)
        elif node.kind == "workflow" and workflow is None:
            workflow = node.ident
        for child in node.children:
            self.walk(child, caller, tenant, agent, workflow)


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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(forest=st.lists(trees, min_size=1, max_size=4))
def test_random_trace_trees_agree_with_an_independent_oracle(tmp_path_factory, forest):
    path = tmp_path_factory.mktemp("dir") / "directory.yaml"
    path.write_text(DIRECTORY)
    p = Pipeline(directory=path)
    try:
        oracle = Oracle()
        for tree in forest:
            emit(p.tracer, tree)
            oracle.walk(tree)
        models = _by(p, "llm_model_tokens_total", "model")
        members = _by(p, "llm_member_tokens_total", "member")
        assert models == +oracle.models
        assert members == +oracle.members
        assert _by(p, "llm_agent_tokens_total", "agent") == +oracle.agents
        assert _by(p, "llm_workflow_tokens_total", "workflow") == +oracle.workflows
        # per tenant, the sum over members equals the sum over models
        for tenant in ("acme", "globex"):
            by_member = sum(v for (t, _), v in members.items() if t == tenant)
            by_model = sum(v for (t, _), v in models.items() if t == tenant)
            assert by_member == by_model
        # tokens in = attributed + unattributed: none lost, none counted twice
        unattributed = {
            dict(k)["reason"]: int(v) for k, v in p.samples("llm_unattributed_tokens_total").items()
        }
        assert oracle.tokens_in == sum(models.values()) + sum(unattributed.values())
        assert +Counter(unattributed) == +oracle.unattributed
    finally:
        p.close()
