"""A realistic, deterministic multi-tenant workload, and the totals the views must show.

:func:`generate` builds conversations from a directory as plain data (:class:`TraceSpec`);
:func:`emit` turns one trace into real OpenTelemetry spans with the GenAI semantic
conventions; :func:`expected_totals` works out, from the same data and independently of
``otel_processor.attribution``, what every tenant's overview must show.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from otel_processor.directory import Directory

__all__ = ["SpanSpec", "TraceSpec", "UNPRICED_MODELS", "emit", "expected_totals", "generate"]

MODEL_OPERATIONS = frozenset({"chat", "embeddings"})
#: Models the workload uses that the packaged price catalog does not list (R7).
UNPRICED_MODELS = frozenset({"llama-3-70b-local"})
REASONS = ("no_caller", "not_member", "ambiguous_tenant")
_DIMENSIONS = ("agents", "workflows", "models", "members")
_TARGET_KEY = {"invoke_agent": "gen_ai.agent.id", "invoke_workflow": "gen_ai.workflow.id",
               "execute_tool": "gen_ai.tool.name"}
# (request model, dated snapshot the response may name, provider, weight); immutable.
_CHAT_MODELS = (
    ("gpt-4o", "gpt-4o-2024-08-06", "openai", 4),
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", 6),
    ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "anthropic", 3),
    ("qwen-max", None, "dashscope", 2),
    ("deepseek-chat", None, "deepseek", 2),
    ("llama-3-70b-local", None, "vllm", 1),
)
_PROVIDERS = {m[0]: m[2] for m in _CHAT_MODELS} | {"text-embedding-3-small": "openai"}
_CACHING = frozenset({"gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"})
# (shape, weight); the shapes are described in _conversation. Immutable.
_SHAPES = (("agent_chat", 30), ("agent_tool_workflow", 15), ("sub_agent", 8),
           ("workflow_run", 20), ("chatflow_app", 7), ("unlisted_agent", 4), ("outsider", 5),
           ("scheduled", 5), ("ambiguous", 2))
_UNLISTED_AGENT = "draft-helper"  # an agent missing from the directory (R6: keeps its id)
_SUB_AGENT = "web-researcher"


@dataclass(frozen=True)
class SpanSpec:
    """One span to emit. ``target`` is the agent id, workflow id, tool name or request model."""

    operation: str  # invoke_agent | invoke_workflow | execute_tool | chat | embeddings
    target: str
    children: tuple[SpanSpec, ...] = ()
    chatflow: bool = False  # gen_ai.workflow.type=chatflow on the span
    response_model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    caller: str | None = None
    tenant: str | None = None
    conversation: str | None = None
    error: bool = False

    def attributes(self) -> dict[str, str | int]:
        """The span's attributes, GenAI semantic conventions."""
        op = self.operation
        attrs: dict[str, str | int] = {"gen_ai.operation.name": op}
        if op in _TARGET_KEY:
            attrs[_TARGET_KEY[op]] = self.target
            if self.chatflow:
                attrs["gen_ai.workflow.type"] = "chatflow"
        else:
            attrs["gen_ai.provider.name"] = _PROVIDERS.get(self.target, "openai")
            attrs["gen_ai.request.model"] = self.target
            attrs["gen_ai.response.model"] = self.response_model or self.target
            attrs["gen_ai.usage.input_tokens"] = self.input_tokens
            if op != "embeddings":
                attrs["gen_ai.usage.output_tokens"] = self.output_tokens
            if self.cache_read_tokens:
                attrs["gen_ai.usage.cache_read.input_tokens"] = self.cache_read_tokens
        for key, value in (("enduser.id", self.caller), ("tenant.id", self.tenant),
                           ("gen_ai.conversation.id", self.conversation),
                           ("error.type", "timeout" if self.error else None)):
            if value is not None:
                attrs[key] = value
        return attrs

    def walk(self) -> Iterator[SpanSpec]:
        """This span and its descendants, parents first."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True)
class TraceSpec:
    """One trace: a turn of a conversation (agent chats have 1-3 turns, other shapes 1)."""

    conversation: str
    turn: int
    shape: str
    root: SpanSpec

    @property
    def span_count(self) -> int:
        return sum(1 for _ in self.root.walk())


class _Catalog:
    """What the generator picks from, read once from the directory."""

    def __init__(self, directory: Directory) -> None:
        self.seats = [(t.id, m.id) for t in directory.tenants.values() for m in t.members]
        counts = Counter(m for _, m in self.seats)
        self.multi = sorted(m for m, n in counts.items() if n > 1)
        self.outsiders = [u for u in ("dave", "guest-1", "guest-2", "guest-3") if u not in counts]
        every = directory.workflows.values()
        flows = [w for w in every if w.kind == "chatflow"]
        self.chatflow_of = {w.agent: w.id for w in flows}
        self.agents = {a.id: a.owner_tenant for a in directory.agents.values()}
        self.workflows = {w.id: w.owner_tenant for w in every if w.kind != "chatflow"}
        self.flows = {w.id: w.owner_tenant for w in flows}

    def supports(self, shape: str) -> bool:
        needs = {"agent_chat": self.agents, "agent_tool_workflow": self.agents and self.workflows,
                 "sub_agent": self.agents, "workflow_run": self.workflows,
                 "chatflow_app": self.flows, "outsider": self.agents and self.outsiders,
                 "scheduled": self.workflows, "ambiguous": self.agents and self.multi}
        return bool(self.seats) and bool(needs.get(shape, True))

    @staticmethod
    def pick(rng: random.Random, owners: dict[str, str], tenant: str | None) -> str:
        """Mostly an asset of ``tenant`` when it owns any, sometimes another tenant's."""
        own = [a for a, owner in owners.items() if owner == tenant]
        return rng.choice(own if own and rng.random() < 0.85 else list(owners))


def _call(rng: random.Random, *, embeddings: bool = False) -> SpanSpec:
    if embeddings:
        return SpanSpec("embeddings", "text-embedding-3-small", input_tokens=rng.randint(50, 1500))
    model, snapshot, _, _ = rng.choices(_CHAT_MODELS, [m[3] for m in _CHAT_MODELS])[0]
    tin, tout = rng.randint(150, 3000), rng.randint(20, 700)
    cached = rng.randint(64, tin // 2) if model in _CACHING and rng.random() < 0.3 else 0
    error = rng.random() < 0.03  # a failed call still bills its prompt
    response = snapshot if snapshot and rng.random() < 0.5 else model
    return SpanSpec("chat", model, response_model=response, input_tokens=tin,
                    output_tokens=0 if error else tout, cache_read_tokens=cached, error=error)


def _calls(rng: random.Random, *, rag: bool = False) -> tuple[SpanSpec, ...]:
    head = (_call(rng, embeddings=True),) if rag else ()
    return head + tuple(_call(rng) for _ in range(rng.randint(1, 2)))


def _workflow(rng: random.Random, cat: _Catalog, workflow: str, depth: int = 0) -> SpanSpec:
    body = _calls(rng, rag=rng.random() < 0.3)
    if depth == 0 and len(cat.workflows) > 1 and rng.random() < 0.3:
        inner = rng.choice(sorted(w for w in cat.workflows if w != workflow))
        body += (_workflow(rng, cat, inner, depth + 1),)  # a workflow run inside another
    return SpanSpec("invoke_workflow", workflow, children=body)


def _agent(rng: random.Random, cat: _Catalog, agent: str, shape: str, tenant: str | None):
    body = _calls(rng)
    if shape == "agent_tool_workflow":
        workflow = cat.pick(rng, cat.workflows, tenant)
        body += (SpanSpec("execute_tool", workflow, (_workflow(rng, cat, workflow),)),)
    flow = cat.chatflow_of.get(agent)
    children = (SpanSpec("invoke_workflow", flow, body, chatflow=True),) if flow else body
    if shape == "sub_agent":
        children += (SpanSpec("invoke_agent", _SUB_AGENT, _calls(rng)),)
    return SpanSpec("invoke_agent", agent, children)


def _conversation(rng: random.Random, cat: _Catalog, shape: str, conv: str) -> list[TraceSpec]:
    """Agent chats (plain, a tool running a workflow, a sub-agent, an agent missing from the
    directory), workflow runs, chat workflows run directly (known from the directory only), and
    outsiders, cron runs without a caller, multi-tenant callers who name no tenant."""
    home, caller = rng.choice(cat.seats)
    tenant: str | None = home
    if shape == "outsider":  # a user in no tenant, naming one or none: not_member
        caller, tenant = rng.choice(cat.outsiders), rng.choice([None, home])
    elif shape == "scheduled":  # a cron run: no caller anywhere
        caller, tenant = None, None
    elif shape == "ambiguous":  # a member of several tenants who names none
        caller, tenant = rng.choice(cat.multi), None
    elif caller not in cat.multi and rng.random() < 0.2:
        tenant = None  # R2: the caller's only tenant is the billing tenant
    if shape in ("workflow_run", "scheduled"):
        workflow = cat.pick(rng, cat.workflows, home)
        roots = [_workflow(rng, cat, workflow)]
    elif shape == "chatflow_app":  # a chat workflow run directly, known from the directory only
        flow = cat.pick(rng, cat.flows, home)
        roots = [SpanSpec("invoke_workflow", flow, _calls(rng)) for _ in range(rng.randint(1, 3))]
    else:
        agent = _UNLISTED_AGENT if shape == "unlisted_agent" else cat.pick(rng, cat.agents, home)
        roots = [_agent(rng, cat, agent, shape, home) for _ in range(rng.randint(1, 3))]
    return [
        TraceSpec(conv, turn, shape, replace(root, caller=caller, tenant=tenant, conversation=conv))
        for turn, root in enumerate(roots, 1)
    ]


def generate(directory: Directory, *, seed: int = 7, conversations: int = 200) -> list[TraceSpec]:
    """The workload: ``conversations`` conversations over the directory's tenants and assets.

    Deterministic: the same directory, seed and size give equal traces.
    """
    if conversations < 0:
        raise ValueError(f"conversations: must be >= 0, got {conversations!r}")
    rng = random.Random(seed)
    cat = _Catalog(directory)
    shapes = [(name, weight) for name, weight in _SHAPES if cat.supports(name)]
    names, weights = zip(*shapes, strict=True) if shapes else ((), ())
    traces: list[TraceSpec] = []
    for n in range(conversations if shapes else 0):
        shape = rng.choices(names, weights)[0]
        traces += _conversation(rng, cat, shape, f"conv-{n + 1:04d}")
    return traces


def emit(tracer: Tracer, trace: TraceSpec) -> None:
    """Emit one trace as real spans (a new trace id, whatever span is current)."""
    _emit(tracer, trace.root, Context())


def _emit(tracer: Tracer, spec: SpanSpec, context: Context | None = None) -> None:
    kind = SpanKind.CLIENT if spec.operation in MODEL_OPERATIONS else SpanKind.INTERNAL
    with tracer.start_as_current_span(f"{spec.operation} {spec.target}", context=context,
                                      kind=kind, attributes=spec.attributes()) as span:
        for child in spec.children:
            _emit(tracer, child)
        if spec.error:
            span.set_status(Status(StatusCode.ERROR, "upstream timeout"))


def expected_totals(traces: Iterable[TraceSpec], directory: Directory) -> dict:
    """What the metrics must say, from the trace tree alone (not from the attribution code):
    ``{"tenants": {tenant: {"total", "agents", "workflows", "models", "members"}},
    "unattributed": {reason: tokens}, "unpriced": {model: tokens}, "agent_invocations":
    {agent: n}, "workflow_runs": {workflow: n}}``, keys sorted; tokens are input + output."""
    members = {t.id: {m.id for m in t.members} for t in directory.tenants.values()}
    out: dict = {"tenants": {}, "unattributed": dict.fromkeys(REASONS, 0), "unpriced": Counter(),
                 "agent_invocations": Counter(), "workflow_runs": Counter()}
    for trace in traces:
        _account(trace.root, (None, None, None, None), directory, members, out)
    return _plain(out)


def _plain(value):  # Counters to plain dicts, sorted by key, all the way down
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in sorted(value.items())}
    return value


def _account(span: SpanSpec, ctx: tuple, directory: Directory, members: dict, out: dict) -> None:
    """Pass (outermost agent, outermost workflow, nearest caller, nearest tenant) down."""
    agent, workflow, caller, tenant = ctx
    caller, tenant = span.caller or caller, span.tenant or tenant
    if span.operation == "invoke_agent":
        out["agent_invocations"][span.target] += 1
        agent = agent or span.target
    elif span.operation == "invoke_workflow":
        asset = directory.workflows.get(span.target)
        bound = asset.agent if asset is not None and asset.kind == "chatflow" else None
        if span.chatflow or bound:
            if bound and agent is None:  # a bound chat workflow stands for its agent
                out["agent_invocations"][bound] += 1
                agent = bound
        else:
            out["workflow_runs"][span.target] += 1
            workflow = workflow or span.target
    elif span.operation in MODEL_OPERATIONS:
        _usage(span, agent, workflow, caller, tenant, members, out)
    for child in span.children:
        _account(child, (agent, workflow, caller, tenant), directory, members, out)


def _usage(span, agent, workflow, caller, tenant, members, out) -> None:
    tokens = span.input_tokens + span.output_tokens
    if caller is None:
        reason = "no_caller"
    elif tenant is not None:
        reason = None if caller in members.get(tenant, ()) else "not_member"
    else:  # no tenant named: the caller's only tenant, if there is exactly one
        mine = [t for t, ms in members.items() if caller in ms]
        tenant = mine[0] if len(mine) == 1 else None
        reason = None if tenant else ("ambiguous_tenant" if mine else "not_member")
    if reason is not None:
        out["unattributed"][reason] += tokens
        return
    view = out["tenants"].setdefault(tenant, {"total": 0, **{k: Counter() for k in _DIMENSIONS}})
    view["total"] += tokens
    for dimension, key in zip(_DIMENSIONS, (agent, workflow, span.target, caller), strict=True):
        if key is not None:
            view[dimension][key] += tokens
    if span.target in UNPRICED_MODELS:
        out["unpriced"][span.target] += tokens
