"""Span attributes -> one normalised :class:`SpanRecord`.

This module is the only place that knows attribute names. The tables below mirror
``shared/spec/conventions.md`` row by row; the first attribute present wins.
Resource attributes are merged *under* span attributes (a span's own value wins); caller
and tenant from the resource are kept apart, as a fallback once no span of the chain names
one (see ``attribution._nearest``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODEL = "model"
AGENT = "agent"
WORKFLOW = "workflow"
TOOL = "tool"
OTHER = "other"

#: Above this a token count on one span is not believed (a bug or an attack, not usage).
MAX_TOKENS_PER_SPAN = 10**10
#: Ids longer than this are refused: they would become unbounded label values.
MAX_ID_LENGTH = 256

_MODEL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
_OPERATION_KIND = {
    **{op: MODEL for op in _MODEL_OPERATIONS},
    "invoke_agent": AGENT,
    "create_agent": OTHER,
    "invoke_workflow": WORKFLOW,
    "execute_tool": TOOL,
}
_OPENINFERENCE_KIND = {"LLM": MODEL, "EMBEDDING": MODEL, "AGENT": AGENT, "TOOL": TOOL}
_TRACELOOP_KIND = {"agent": AGENT, "workflow": WORKFLOW, "tool": TOOL}

AGENT_ID = ("gen_ai.agent.id", "gen_ai.agent.name", "agent.name", "traceloop.entity.name")
WORKFLOW_ID = (
    "gen_ai.workflow.id",
    "gen_ai.workflow.name",
    "traceloop.entity.name",
    "dify.workflow_id",
    "cozeloop.workflow_id",
)
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
CACHE_READ_TOKENS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
CACHE_WRITE_TOKENS = (
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
)
REQUEST_MODEL = ("gen_ai.request.model", "llm.model_name", "embedding.model_name")
RESPONSE_MODEL = ("gen_ai.response.model",)
PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.system", "llm.provider")
CALLER = (
    "enduser.id",
    "user.id",
    "gen_ai.user.id",
    "langfuse.user.id",
    "traceloop.association.properties.user_id",
    "gen_ai.user",
)
TENANT = (
    "tenant.id",
    "dify.tenant_id",
    "cozeloop.workspace_id",
    "traceloop.association.properties.tenant_id",
)
CONVERSATION = ("gen_ai.conversation.id", "session.id", "dify.conversation.id", "conversation_id")
WORKFLOW_TYPE = ("gen_ai.workflow.type",)
DIFY_APP_MODE = ("dify.app.mode", "dify.app_mode")
OPENINFERENCE_METADATA = "metadata"


class InvalidSpan(ValueError):
    """A span whose data cannot be believed; ``reason`` is a bounded label value."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """What attribution needs from one span; immutable, cheap to keep."""

    kind: str = OTHER
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    has_usage: bool = False
    model: str | None = None
    response_model: str | None = None
    provider: str | None = None
    agent_id: str | None = None
    workflow_id: str | None = None
    chat_workflow: bool = False
    caller: str | None = None
    tenant: str | None = None
    # From the resource: a fallback once no span of the chain names a caller / tenant.
    resource_caller: str | None = None
    resource_tenant: str | None = None
    conversation: str | None = None
    outcome: str = "ok"
    duration_ns: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class _Merged(Mapping):
    """Span attributes over resource attributes, without copying either."""

    __slots__ = ("_top", "_bottom")

    def __init__(self, top: Mapping, bottom: Mapping) -> None:
        self._top, self._bottom = top, bottom

    def __getitem__(self, key: str) -> Any:
        try:
            return self._top[key]
        except KeyError:
            return self._bottom[key]

    def get(self, key: str, default: Any = None) -> Any:
        value = self._top.get(key)
        return self._bottom.get(key, default) if value is None else value

    def __contains__(self, key: object) -> bool:
        return key in self._top or key in self._bottom

    def __iter__(self):
        yield from self._top
        yield from (k for k in self._bottom if k not in self._top)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _first(attrs: Mapping, names: tuple[str, ...]) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _ident(attrs: Mapping, names: tuple[str, ...], field: str) -> str | None:
    value = _first(attrs, names)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidSpan("invalid_attribute", f"{field} must be a string, got {value!r:.60}")
    value = str(value).strip()
    if len(value) > MAX_ID_LENGTH:
        raise InvalidSpan("invalid_attribute", f"{field} longer than {MAX_ID_LENGTH} characters")
    return value or None


def _tokens(attrs: Mapping, names: tuple[str, ...], field: str) -> int | None:
    value = _first(attrs, names)
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidSpan("invalid_token_count", f"{field} is a boolean")
    if isinstance(value, str):
        # Lenient on a decimal integer written as a string ("120"): nothing is lost.
        text = value.strip()
        if not text.isdigit():
            raise InvalidSpan("invalid_token_count", f"{field}={value!r:.40} is not an integer")
        value = int(text)
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise InvalidSpan("invalid_token_count", f"{field}={value!r} is not an integer")
        value = int(value)
    elif not isinstance(value, int):
        raise InvalidSpan("invalid_token_count", f"{field} has type {type(value).__name__}")
    if value < 0:
        raise InvalidSpan("invalid_token_count", f"{field}={value} is negative")
    if value > MAX_TOKENS_PER_SPAN:
        raise InvalidSpan("invalid_token_count", f"{field}={value} is beyond {MAX_TOKENS_PER_SPAN}")
    return value


def span_kind(attrs: Mapping) -> str:
    """Classify a span: model call, agent, workflow, tool or other (first match wins)."""
    op = attrs.get("gen_ai.operation.name")
    if op is not None:
        kind = _OPERATION_KIND.get(op)
        if kind is not None:
            return kind
    oi = attrs.get("openinference.span.kind")
    if oi is not None:
        kind = _OPENINFERENCE_KIND.get(str(oi).upper())
        if kind is not None:
            return kind
    if attrs.get("gen_ai.span.kind") == "LLM" or attrs.get("cozeloop.span_type") == "model":
        return MODEL
    if attrs.get("llm.request.type") is not None:
        return MODEL
    tl = attrs.get("traceloop.span.kind")
    if tl is not None:
        kind = _TRACELOOP_KIND.get(tl)
        if kind is not None:
            return kind
    if attrs.get("dify.workflow_id") is not None or attrs.get("workflow_mode") is not None:
        return WORKFLOW
    return OTHER


def _metadata_tenant(attrs: Mapping) -> str | None:
    raw = attrs.get(OPENINFERENCE_METADATA)
    if not isinstance(raw, str) or "tenant_id" not in raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    value = doc.get("tenant_id") if isinstance(doc, dict) else None
    return _ident({"tenant_id": value}, ("tenant_id",), "metadata.tenant_id")


def _is_chat_workflow(attrs: Mapping) -> bool:
    if attrs.get("gen_ai.workflow.type") == "chatflow":
        return True
    if _first(attrs, DIFY_APP_MODE) == "advanced-chat":
        return True
    mode = attrs.get("workflow_mode")
    return mode is not None and str(mode) == "3"


def normalize(
    attributes: Mapping | None,
    resource_attributes: Mapping | None = None,
    *,
    error: bool = False,
    duration_ns: int | None = None,
) -> SpanRecord:
    """Read one span into a :class:`SpanRecord`.

    ``error`` is true when the span's status is ERROR. Raises :class:`InvalidSpan` for data
    that cannot be believed (a negative token count, an id that is not a string, ...).
    """
    span_attrs: Mapping = attributes or {}
    attrs = _Merged(span_attrs, resource_attributes) if resource_attributes else span_attrs
    kind = span_kind(attrs)
    caller = _ident(span_attrs, CALLER, "caller")
    tenant = _ident(span_attrs, TENANT, "tenant") or _metadata_tenant(span_attrs)
    res_caller = res_tenant = None
    if resource_attributes:
        res_caller = _ident(resource_attributes, CALLER, "resource caller")
        res_tenant = _ident(resource_attributes, TENANT, "resource tenant")
    conversation = _ident(attrs, CONVERSATION, "conversation")
    if error or attrs.get("error.type") is not None:
        outcome = "error"
    else:
        outcome = "ok"
    if kind == MODEL:
        tin = _tokens(attrs, INPUT_TOKENS, "input_tokens")
        tout = _tokens(attrs, OUTPUT_TOKENS, "output_tokens")
        cread = _tokens(attrs, CACHE_READ_TOKENS, "cache_read_tokens")
        cwrite = _tokens(attrs, CACHE_WRITE_TOKENS, "cache_write_tokens")
        has_usage = not (tin is None and tout is None and cread is None and cwrite is None)
        tin, tout, cread, cwrite = tin or 0, tout or 0, cread or 0, cwrite or 0
        if cread + cwrite > tin:
            # Cache tokens are part of input (semconv). More cache than input can only mean an
            # Anthropic-style count where input excludes the cache: add it back, lose nothing.
            tin += cread + cwrite
        return SpanRecord(
            kind=MODEL,
            input_tokens=tin,
            output_tokens=tout,
            cache_read_tokens=cread,
            cache_write_tokens=cwrite,
            has_usage=has_usage,
            model=_ident(attrs, REQUEST_MODEL, "model"),
            response_model=_ident(attrs, RESPONSE_MODEL, "response_model"),
            provider=_ident(attrs, PROVIDER, "provider"),
            caller=caller,
            tenant=tenant,
            resource_caller=res_caller,
            resource_tenant=res_tenant,
            conversation=conversation,
            outcome=outcome,
            duration_ns=duration_ns,
        )
    return SpanRecord(
        kind=kind,
        agent_id=_ident(attrs, AGENT_ID, "agent_id") if kind == AGENT else None,
        workflow_id=_ident(attrs, WORKFLOW_ID, "workflow_id") if kind == WORKFLOW else None,
        chat_workflow=kind == WORKFLOW and _is_chat_workflow(attrs),
        caller=caller,
        tenant=tenant,
        resource_caller=res_caller,
        resource_tenant=res_tenant,
        conversation=conversation,
        outcome=outcome,
        duration_ns=duration_ns,
    )
