"""The attribution rules R1-R9 (``docs/attribution.md``), as pure functions.

No I/O, no clock, no state: a normalised usage span and its ancestors, a directory and a
price catalog in; an attributed event (or the reason it cannot be attributed) and heat
events out. Read this module side by side with the spec: each function names its rule.

``ancestors`` is always ordered from the parent up to the root (nearest first), so the
*outermost* agent or workflow is the *last* match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from otel_processor.conventions import AGENT, MODEL, TOOL, WORKFLOW, SpanRecord
from otel_processor.directory import KIND_ASSISTANT, Directory
from otel_processor.prices import PriceCatalog

#: Label value for an agent/workflow span that names no id, or a model call without a model.
UNKNOWN = "unknown"

NO_CALLER = "no_caller"
NOT_MEMBER = "not_member"
AMBIGUOUS_TENANT = "ambiguous_tenant"

AGENT_INVOCATION = "agent_invocation"
WORKFLOW_RUN = "workflow_run"

#: The service split's values (the ``service`` label): the nearest enclosing component.
SERVICE_AGENT = "agent"
SERVICE_ASSISTANT = "assistant"
SERVICE_WORKFLOW = "workflow"
SERVICE_TOOL = "tool"
SERVICE_DIRECT = "direct"
SERVICES = (SERVICE_AGENT, SERVICE_ASSISTANT, SERVICE_WORKFLOW, SERVICE_TOOL, SERVICE_DIRECT)


@dataclass(slots=True)  # not frozen: built per span, and frozen init is 4x slower
class UsageEvent:
    """One model call's tokens, attributed to a billing tenant and its member (R2-R5, R7)."""

    tenant: str
    caller: str
    model: str
    agent: str | None
    workflow: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_pico: int | None  # None: the model has no price (R7, counted as unpriced)
    outcome: str
    duration_ns: int | None = None  # the call's latency, when the span says
    time_to_first_token_ns: int | None = None
    service: str = SERVICE_DIRECT  # the service split: see service_of
    reasoning_tokens: int = 0  # part of output_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)  # not frozen: built per span, and frozen init is 4x slower
class Unattributed:
    """A model call excluded from cost metrics, with the reason (R3)."""

    reason: str
    tokens: int
    model: str


@dataclass(slots=True)  # not frozen: built per span, and frozen init is 4x slower
class HeatEvent:
    """An agent invocation or a workflow run, platform-wide (R6)."""

    kind: str  # AGENT_INVOCATION or WORKFLOW_RUN
    asset: str
    owner_tenant: str
    caller: str | None


def _nearest(record: SpanRecord, ancestors: Sequence[SpanRecord], field: str) -> str | None:
    """R2: the value on the span itself, else on its nearest ancestor that has one.

    A value on any span of the chain wins over the resource's: a resource attribute is the
    process's default, a span attribute names this request. Resources are read last, in the
    same order (the usage span's own resource first).
    """
    value = getattr(record, field)
    if value is not None:
        return value
    for ancestor in ancestors:
        value = getattr(ancestor, field)
        if value is not None:
            return value
    resource_field = "resource_" + field
    value = getattr(record, resource_field)
    if value is not None:
        return value
    for ancestor in ancestors:
        value = getattr(ancestor, resource_field)
        if value is not None:
            return value
    return None


def billing_tenant(caller: str | None, tenant: str | None, directory: Directory) -> str:
    """R2 + R3: the billing tenant of a caller, or raise :class:`NotAttributable`."""
    if caller is None:
        raise NotAttributable(NO_CALLER)
    if tenant is not None:
        if directory.is_member(tenant, caller):
            return tenant
        raise NotAttributable(NOT_MEMBER)
    tenants = directory.tenants_of(caller)
    if len(tenants) == 1:
        return next(iter(tenants))
    raise NotAttributable(AMBIGUOUS_TENANT if tenants else NOT_MEMBER)


class NotAttributable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_chat_workflow(record: SpanRecord, directory: Directory) -> bool:
    """R5: a chat workflow, known from the span or from the directory."""
    return record.chat_workflow or (
        record.workflow_id is not None and directory.is_chatflow(record.workflow_id)
    )


def _agent_of(record: SpanRecord, directory: Directory) -> str | None:
    """The agent this span stands for: an agent span, or a chat workflow bound to an agent."""
    if record.kind == AGENT:
        return record.agent_id or UNKNOWN
    if record.kind == WORKFLOW and record.workflow_id is not None:
        return directory.chatflow_agent(record.workflow_id)
    return None


def _flow_of_invocation(
    agent: str, ancestors: Sequence[SpanRecord], directory: Directory
) -> bool:
    """R5: whether a bound chat workflow of ``agent`` is the flow of the invocation above it."""
    for ancestor in ancestors:  # nearest first
        if ancestor.kind == AGENT:
            return ancestor.agent_id is None or ancestor.agent_id == agent
        above = _agent_of(ancestor, directory)
        if above is not None:
            return above == agent
    return False


def model_label(record: SpanRecord) -> str:
    """The requested model is what admins recognise; dated snapshots would split the bars."""
    return record.model or record.response_model or UNKNOWN


def outermost(
    ancestors: Sequence[SpanRecord], directory: Directory
) -> tuple[str | None, str | None]:
    """R4 and R5, in one walk from the root: the outermost agent-invocation ancestor (a chat
    workflow bound to an agent stands in for it) and the outermost workflow ancestor that is
    not a chat workflow."""
    agent = workflow = None
    for ancestor in reversed(ancestors):  # root first: the first match is the outermost
        kind = ancestor.kind
        if kind == AGENT:
            if agent is None:
                agent = ancestor.agent_id or UNKNOWN
                if workflow is not None:
                    break
        elif kind == WORKFLOW:
            workflow_id = ancestor.workflow_id
            if agent is None and workflow_id is not None:
                agent = directory.chatflow_agent(workflow_id)  # a bound chat workflow (R5)
            if workflow is None and not ancestor.chat_workflow and (
                workflow_id is None or not directory.is_chatflow(workflow_id)
            ):
                workflow = workflow_id or UNKNOWN
            if agent is not None and workflow is not None:
                break
    return agent, workflow


def _agent_service(agent_id: str | None, directory: Directory) -> str:
    """``assistant`` for an agent the directory marks ``kind: assistant``, else ``agent``."""
    if agent_id is not None:
        asset = directory.agents.get(agent_id)
        if asset is not None and asset.kind == KIND_ASSISTANT:
            return SERVICE_ASSISTANT
    return SERVICE_AGENT


def service_of(ancestors: Sequence[SpanRecord], directory: Directory) -> str:
    """The service split: the service of the nearest enclosing component of a model call.

    A tool span is ``tool``; an agent span is ``assistant`` or ``agent`` (the directory's
    ``kind``); a chat workflow bound to an agent stands for that agent (R5), one bound to
    none is looked through; any other workflow span is ``workflow``; no such ancestor is
    ``direct``.
    """
    for ancestor in ancestors:  # nearest first: the first match is the nearest
        kind = ancestor.kind
        if kind == TOOL:
            return SERVICE_TOOL
        if kind == AGENT:
            return _agent_service(ancestor.agent_id, directory)
        if kind == WORKFLOW:
            workflow_id = ancestor.workflow_id
            if workflow_id is not None:
                bound = directory.chatflow_agent(workflow_id)
                if bound is not None:
                    return _agent_service(bound, directory)
            if ancestor.chat_workflow:  # a chat workflow of no known agent: looked through,
                continue  # as R5 gives its tokens to no workflow
            return SERVICE_WORKFLOW
    return SERVICE_DIRECT


def attribute_usage(
    record: SpanRecord,
    ancestors: Sequence[SpanRecord],
    directory: Directory,
    prices: PriceCatalog,
) -> UsageEvent | Unattributed:
    """R1-R5, R7: a model call and its ancestors to an attributed event or a reason."""
    if record.kind != MODEL:
        raise ValueError("only model-call spans carry usage (R1)")
    model = record.model or record.response_model or UNKNOWN  # model_label
    caller = _nearest(record, ancestors, "caller")
    try:
        tenant = billing_tenant(caller, _nearest(record, ancestors, "tenant"), directory)
    except NotAttributable as exc:
        return Unattributed(exc.reason, record.input_tokens + record.output_tokens, model)
    tin, tout = record.input_tokens, record.output_tokens
    cache_read, cache_write = record.cache_read_tokens, record.cache_write_tokens
    price = prices.lookup(record.response_model, record.model)
    cost = None if price is None else price.cost_pico(tin, tout, cache_read, cache_write)
    if ancestors:
        agent, workflow = outermost(ancestors, directory)
        service = service_of(ancestors, directory)
    else:
        agent = workflow = None
        service = SERVICE_DIRECT
    return UsageEvent(
        tenant, caller,  # type: ignore[arg-type]  # billing_tenant refused None
        model, agent, workflow, tin, tout, cache_read, cache_write, cost, record.outcome,
        record.duration_ns, record.time_to_first_token_ns, service, record.reasoning_tokens,
    )


def heat_event(
    record: SpanRecord, ancestors: Sequence[SpanRecord], directory: Directory
) -> HeatEvent | None:
    """R6: an agent invocation or workflow run, over all callers, with the owner tenant.

    Every agent span counts (sub-agents too). A chat workflow bound to an agent counts as
    an invocation of that agent unless it is the flow of an invocation already counted: its
    nearest ancestor that stands for an agent is that same agent, or an agent span without
    an id (R5).
    Every non-chat workflow span is a run, nested runs included.
    """
    if record.kind == AGENT:
        agent = record.agent_id or UNKNOWN
        caller = _nearest(record, ancestors, "caller")
        return HeatEvent(AGENT_INVOCATION, agent, directory.agent_owner(agent), caller)
    if record.kind != WORKFLOW:
        return None
    if is_chat_workflow(record, directory):
        agent = _agent_of(record, directory)
        if agent is None or _flow_of_invocation(agent, ancestors, directory):
            return None
        caller = _nearest(record, ancestors, "caller")
        return HeatEvent(AGENT_INVOCATION, agent, directory.agent_owner(agent), caller)
    workflow = record.workflow_id or UNKNOWN
    caller = _nearest(record, ancestors, "caller")
    return HeatEvent(WORKFLOW_RUN, workflow, directory.workflow_owner(workflow), caller)
