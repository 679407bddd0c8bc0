"""Span attributes -> one normalised :class:`SpanRecord`.

This module is the only place that knows attribute names. The tables below mirror
``docs/conventions.md`` row by row; the first attribute present wins.
Resource attributes are merged *under* span attributes (a span's own value wins); caller
and tenant from the resource are kept apart, as a fallback once no span of the chain names
one (see ``attribution._nearest``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from sys import intern as _intern
from typing import Any

MODEL = "model"
AGENT = "agent"
#: Not a kind of span: the record the assembly hands out, at a trace's close, for the usage
#: of a span that is no model call and counts nowhere else (``llm_unclassified_usage_tokens``).
UNCLASSIFIED = "unclassified"
WORKFLOW = "workflow"
TOOL = "tool"
OTHER = "other"

#: Above this a token count on one span is not believed (a bug or an attack, not usage).
MAX_TOKENS_PER_SPAN = 10**10
#: Ids longer than this are refused: they would become unbounded label values.
MAX_ID_LENGTH = 256
# An integer id of more bits has more than MAX_ID_LENGTH digits (a digit is log2(10) < 4
# bits): refused before str(), which raises beyond Python's 4300-digit limit.
_MAX_ID_BITS = 4 * MAX_ID_LENGTH
_MAX_TOKEN_DIGITS = len(str(MAX_TOKENS_PER_SPAN))

_MODEL_OPERATIONS = frozenset({
    "chat", "text_completion", "generate_content", "embeddings",
    # LiteLLM's OpenTelemetry callback writes its call type when it is not "completion"
    "acompletion", "atext_completion", "embedding", "aembedding",
})
#: The Vercel AI SDK's model-call spans (``ai.operationId``, or the first word of
#: ``operation.name``): the inner ``do*`` spans only. The outer ``ai.generateText`` span
#: repeats the total of its steps: it is no model call (R1).
_VERCEL_MODEL_OPERATIONS = frozenset({
    "ai.generateText.doGenerate", "ai.streamText.doStream", "ai.generateObject.doGenerate",
    "ai.streamObject.doStream", "ai.embed.doEmbed", "ai.embedMany.doEmbed",
})
#: Values of ``dify.workflow_id`` that name no workflow (Dify writes ``unknown`` on the outer
#: app span of a request that runs none); compared after strip() and lower().
PLACEHOLDER_IDS = frozenset({"unknown", "none", "null", "undefined"})
#: Providers whose OpenLIT instrumentation reports ``gen_ai.usage.input_tokens`` without the
#: cache tokens (the provider API's own count): their input is read as input + cache.
#: Every other OpenLIT instrumentation reports input with the cache, as the semconv does.
OPENLIT_INPUT_EXCLUDES_CACHE = frozenset({"anthropic", "aws.bedrock"})
OPENLIT_SDK_NAME = "openlit"
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
    # Dify: the app id, stable across publishes (each publish makes a new workflow row, so
    # dify.workflow_id changes with every version); the workflow row id only without one.
    "dify.app_id",
    "dify.workflow_id",
    "cozeloop.workflow_id",
)
INPUT_TOKENS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "ai.usage.inputTokens",
    "ai.usage.promptTokens",
    "ai.usage.tokens",
)
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "ai.usage.outputTokens",
    "ai.usage.completionTokens",
)
CACHE_READ_TOKENS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "ai.usage.inputTokenDetails.cacheReadTokens",
    "ai.usage.cachedInputTokens",
)
CACHE_WRITE_TOKENS = (
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "ai.usage.inputTokenDetails.cacheWriteTokens",
)
#: Reasoning tokens: part of output (as cache tokens are part of input), also counted alone.
REASONING_TOKENS = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "gen_ai.usage.completion_tokens_details.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
    "ai.usage.outputTokenDetails.reasoningTokens",
    "ai.usage.reasoningTokens",
)
REQUEST_MODEL = ("gen_ai.request.model", "ai.model.id")
# OpenInference's model_name is the response model; its requested model sits in the JSON
# invocation parameters (read by _openinference_model).
RESPONSE_MODEL = (
    "gen_ai.response.model", "llm.model_name", "embedding.model_name", "ai.response.model",
)
OPENINFERENCE_PARAMETERS = ("llm.invocation_parameters", "embedding.invocation_parameters")
PROVIDER = (
    "gen_ai.provider.name", "gen_ai.system", "llm.system", "llm.provider", "ai.model.provider",
)
CALLER = (
    "enduser.id",
    "user.id",
    "gen_ai.user.id",
    "langfuse.user.id",
    "traceloop.association.properties.user_id",
    "gen_ai.user",
    "gen_ai.request.user",
    "ai.telemetry.metadata.userId",
    "ai.settings.context.userId",
    "metadata.user_api_key_end_user_id",
    "llm.user",
    "metadata.user_api_key_user_id",
    # Coze Loop JS: its baggage user_id, from the span context's W3C tracestate (below)
    "cozeloop.tracestate.user_id",
)
TENANT = (
    "tenant.id",
    "dify.tenant_id",
    "cozeloop.workspace_id",
    "traceloop.association.properties.tenant_id",
    "ai.telemetry.metadata.tenantId",
    "ai.settings.context.tenantId",
)
CONVERSATION = (
    "gen_ai.conversation.id", "session.id", "dify.conversation.id", "conversation_id",
    "ai.telemetry.metadata.sessionId",
)
#: Coze Loop's JS SDK (``@cozeloop/ai``): plain names, read only on a span that carries
#: ``cozeloop_span_type`` (generic names are never read from any other span).
COZE_JS_SPAN_TYPE = "cozeloop_span_type"
COZE_JS_FIELDS = {"input": "input_tokens", "output": "output_tokens", "model": "model_name",
                  "reasoning": "reasoning_tokens"}
#: Coze Loop JS keeps a trace's ``baggages`` (``user_id``, ``message_id``, ``thread_id``) in
#: the W3C tracestate of its span context, not in attributes (``@cozeloop/ai``
#: ``tracer/wrapper.ts`` ``injectBaggages``); an OTLP span carries it as ``trace_state``.
#: Its ``user_id`` is read as this attribute, for Coze Loop JS spans only
#: (:func:`with_tracestate_caller`).
COZE_JS_TRACESTATE_CALLER = "cozeloop.tracestate.user_id"
_TRACESTATE_USER_KEY = "user_id"
WORKFLOW_TYPE = ("gen_ai.workflow.type",)
DIFY_APP_MODE = ("dify.app.mode", "dify.app_mode")
OPENINFERENCE_METADATA = "metadata"
#: LiteLLM proxy: the allowlisted keys of the calling key's team metadata, a JSON object
#: (``LITELLM_OTEL_BAGGAGE_TEAM_METADATA_KEYS=tenant_id``); its ``tenant_id`` is the tenant.
LITELLM_TEAM_METADATA = "litellm.team.metadata"


def with_tracestate_caller(attributes: Mapping, trace_state: object) -> Mapping:
    """``attributes`` of a span, with Coze Loop JS's ``user_id`` from the span's tracestate
    added as :data:`COZE_JS_TRACESTATE_CALLER` when the span is a Coze Loop JS span (it has
    ``cozeloop_span_type``) and the tracestate has that key; else ``attributes`` as given.

    ``trace_state`` is the W3C header's text (``"user_id=alice,rojo=00f0"``, as OTLP sends
    it) or the SDK's ``TraceState`` (a mapping). Never raises: a tracestate it cannot read
    names no caller.
    """
    if not trace_state or COZE_JS_SPAN_TYPE not in attributes:
        return attributes
    user = None
    try:
        if isinstance(trace_state, str):
            for member in trace_state.split(","):
                key, _, value = member.partition("=")
                if key.strip() == _TRACESTATE_USER_KEY:
                    user = value.strip()
                    break
        elif isinstance(trace_state, Mapping):
            user = trace_state.get(_TRACESTATE_USER_KEY)
    except Exception:
        return attributes
    if not isinstance(user, str) or not user:
        return attributes
    return {**attributes, COZE_JS_TRACESTATE_CALLER: user}


class InvalidSpan(ValueError):
    """A span whose data cannot be believed; ``reason`` is a bounded label value."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _unreadable(exc: BaseException) -> InvalidSpan:
    """Whatever else reading one span raised: that span is refused, nothing more."""
    return InvalidSpan("invalid_attribute", f"attributes could not be read ({type(exc).__name__})")


@dataclass(slots=True)
class SpanRecord:
    """What attribution needs from one span; cheap to keep, never changed once built.

    Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``,
    which made building a record four times slower (measured: 5.6 us against 1.3 us), and
    one is built for every span an application ends. Records are shared (``_EMPTY``,
    the engine's ``LINK``): nothing may assign to one.
    """

    kind: str = OTHER
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0  # part of output_tokens
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
    time_to_first_token_ns: int | None = None  # streamed model calls that report it
    end_ns: int | None = None  # a model call's end (unix ns): the calendar period it counts in
    # Only on a record the assembly makes at a trace's close (UNCLASSIFIED): why the usage
    # of a span that is no model call counts nowhere else (a bounded label value).
    unclassified: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


# attribute name -> ((field, rank), ...): one pass over a span's attributes finds every
# field; the lowest rank (the earliest name in the tables above) wins. Immutable.
#: Time to first token of a streamed model call, in seconds (OpenLIT; AI SDK 7's
#: ``@ai-sdk/otel``) or milliseconds
#: (Vercel AI SDK's ``ai.streamText.doStream`` spans).
TTFT_SECONDS = ("gen_ai.server.time_to_first_token", "gen_ai.response.time_to_first_token",
                "gen_ai.client.operation.time_to_first_chunk")
TTFT_MILLISECONDS = ("ai.response.msToFirstChunk", "ai.stream.msToFirstChunk")

_FIELD_TABLES = {
    "ttft_s": TTFT_SECONDS,
    "ttft_ms": TTFT_MILLISECONDS,
    "agent_id": AGENT_ID,
    "workflow_id": WORKFLOW_ID,
    "input": INPUT_TOKENS,
    "output": OUTPUT_TOKENS,
    "cache_read": CACHE_READ_TOKENS,
    "cache_write": CACHE_WRITE_TOKENS,
    "reasoning": REASONING_TOKENS,
    "model": REQUEST_MODEL,
    "response_model": RESPONSE_MODEL,
    "provider": PROVIDER,
    "caller": CALLER,
    "tenant": TENANT,
    "conversation": CONVERSATION,
    "workflow_type": WORKFLOW_TYPE,
    "app_mode": DIFY_APP_MODE,
    "op": ("gen_ai.operation.name",),
    "oi_kind": ("openinference.span.kind",),
    "dify_kind": ("gen_ai.span.kind",),
    "coze_type": ("cozeloop.span_type",),
    "coze_js_type": (COZE_JS_SPAN_TYPE,),
    **{"coze_js_" + field: (name,) for field, name in COZE_JS_FIELDS.items()},
    "ai_op": ("ai.operationId", "operation.name"),
    "sdk": ("telemetry.sdk.name",),
    "tl_request": ("llm.request.type",),
    "tl_kind": ("traceloop.span.kind",),
    "dify_workflow": ("dify.workflow_id",),
    "workflow_mode": ("workflow_mode",),
    "error_type": ("error.type",),
    "metadata": (OPENINFERENCE_METADATA,),
    "team_metadata": (LITELLM_TEAM_METADATA,),
    "oi_parameters": OPENINFERENCE_PARAMETERS,
}
_INDEX: dict[str, tuple[tuple[str, int], ...]] = {}
for _field, _names in _FIELD_TABLES.items():
    for _rank, _name in enumerate(_names):
        _INDEX[_name] = (*_INDEX.get(_name, ()), (_field, _rank))
del _field, _names, _rank, _name
#: Every span and resource attribute name this module reads (exact names: ``scan`` looks
#: names up in ``_INDEX`` and nothing else reads attributes). A receiver may keep only these.
READ_NAMES: frozenset[str] = frozenset(_INDEX)


def scan(attributes: Mapping) -> dict[str, Any]:
    """One pass over a span's attributes: field -> the value of its first-ranked name."""
    found: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    index = _INDEX
    for key, value in attributes.items():
        specs = index.get(key)
        if specs is None or value is None or value == "":
            continue
        for field, rank in specs:
            if rank < ranks.get(field, 99):
                ranks[field] = rank
                found[field] = value
    return found


def _ident(found: Mapping, field: str) -> str | None:
    """An id as a label value will hold it: a short string that encodes as UTF-8.

    Every string of a :class:`SpanRecord` is read here (model, provider, caller, ...): a lone
    surrogate (a JSON ``"\\ud800"`` escape) stored once would fail every /metrics scrape.
    """
    value = found.get(field)
    if value is None:
        return None
    if type(value) is str and len(value) <= MAX_ID_LENGTH and value.isascii():
        # the common case: a short ASCII id. Interned: a record lives as long as its trace
        # is open, and the same few ids recur in every span (one copy, not one per span).
        return _intern(value.strip()) or None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidSpan("invalid_attribute", f"{field} must be a string, got {value!r:.60}")
    if not isinstance(value, str) and value.bit_length() > _MAX_ID_BITS:
        raise InvalidSpan("invalid_attribute", f"{field} longer than {MAX_ID_LENGTH} characters")
    value = str(value).strip()
    if len(value) > MAX_ID_LENGTH:
        raise InvalidSpan("invalid_attribute", f"{field} longer than {MAX_ID_LENGTH} characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidSpan("invalid_attribute", f"{field} is not valid UTF-8 (a lone "
                              f"surrogate): {value!r:.60}") from None
    return _intern(value) if value else None


def _ttft_ns(found: Mapping) -> int | None:
    """Time to first token in ns; a value that is not a duration is left out (it is not
    usage: the call's tokens still count)."""
    for field, scale in (("ttft_s", 1e9), ("ttft_ms", 1e6)):
        value = found.get(field)
        if type(value) in (int, float) and math.isfinite(value) and 0 <= value <= 86_400e9 / scale:
            return round(value * scale)
    return None


def _shown(value: int) -> str:
    """An integer for a refusal's message: str() raises beyond 4300 digits."""
    return str(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"


def _tokens(found: Mapping, field: str) -> int | None:
    value = found.get(field)
    if value is None or type(value) is int and 0 <= value <= MAX_TOKENS_PER_SPAN:
        return value
    if isinstance(value, bool):
        raise InvalidSpan("invalid_token_count", f"{field} is a boolean")
    if isinstance(value, str):
        # Lenient on a decimal integer written as a string ("120"): nothing is lost. ASCII
        # digits only: str.isdigit() also holds for "²", which int() refuses, and int()
        # reads other scripts' digits, which no client writes.
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise InvalidSpan("invalid_token_count", f"{field}={value!r:.40} is not an integer")
        if len(text) > _MAX_TOKEN_DIGITS:  # int() raises beyond 4300 digits; bound it first
            text = text.lstrip("0") or "0"
            if len(text) > _MAX_TOKEN_DIGITS:
                raise InvalidSpan("invalid_token_count",
                                  f"{field} is beyond {MAX_TOKENS_PER_SPAN}")
        value = int(text)
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise InvalidSpan("invalid_token_count", f"{field}={value!r} is not an integer")
        value = int(value)
    elif not isinstance(value, int):
        raise InvalidSpan("invalid_token_count", f"{field} has type {type(value).__name__}")
    if value < 0:
        raise InvalidSpan("invalid_token_count", f"{field}={_shown(value)} is negative")
    if value > MAX_TOKENS_PER_SPAN:
        raise InvalidSpan("invalid_token_count",
                          f"{field}={_shown(value)} is beyond {MAX_TOKENS_PER_SPAN}")
    return value


def kind_of(found: Mapping) -> str:
    """Classify scanned fields: model call, agent, workflow, tool or other (first match wins).

    Only strings name a kind: a value of another type is no kind, never a lookup that raises
    (an unhashable value) or a str() that does (an integer beyond 4300 digits).
    """
    op = found.get("op")
    if isinstance(op, str):
        kind = _OPERATION_KIND.get(op)
        if kind is not None:
            return kind
    oi = found.get("oi_kind")
    if isinstance(oi, str):
        kind = _OPENINFERENCE_KIND.get(oi.upper())
        if kind is not None:
            return kind
    if (found.get("dify_kind") == "LLM" or found.get("coze_type") == "model"
            or found.get("coze_js_type") == "model"):
        return MODEL
    ai_op = found.get("ai_op")
    if isinstance(ai_op, str) and ai_op.partition(" ")[0] in _VERCEL_MODEL_OPERATIONS:
        return MODEL
    if "tl_request" in found:
        return MODEL
    tl = found.get("tl_kind")
    if isinstance(tl, str):
        kind = _TRACELOOP_KIND.get(tl)
        if kind is not None:
            return kind
    if "dify_workflow" in found or "workflow_mode" in found:
        return WORKFLOW
    return OTHER


def span_kind(attributes: Mapping) -> str:
    """Classify a span by its attributes (see :func:`kind_of`)."""
    return kind_of(scan(attributes))


def _metadata_ids(found: Mapping, caller: bool, tenant: bool) -> tuple[str | None, str | None]:
    """(caller, tenant) from the keys ``user_id`` and ``tenant_id`` of the JSON ``metadata``
    attribute (OpenInference's ``using_attributes(metadata=...)``, pydantic-ai's run
    ``metadata=``), each only where asked (no attribute of the tables named it). Parsed
    only when the attribute is present and names one of the keys."""
    raw = found.get("metadata")
    if not isinstance(raw, str):
        return None, None
    caller = caller and "user_id" in raw
    tenant = tenant and "tenant_id" in raw
    doc = _json_object(raw) if caller or tenant else None
    if doc is None:
        return None, None
    return (
        _ident({"metadata.user_id": doc.get("user_id")}, "metadata.user_id") if caller else None,
        _ident({"metadata.tenant_id": doc.get("tenant_id")}, "metadata.tenant_id")
        if tenant else None,
    )


def _json_object(raw: object, needle: str = "") -> dict | None:
    """``raw`` parsed when it is a string holding a JSON object (and ``needle``, a cheap test
    before parsing); else None: not a string, not JSON, nested beyond the parser's limit."""
    if not isinstance(raw, str) or needle not in raw:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _json_tenant(raw: object) -> str | None:
    """The ``tenant_id`` of a JSON object string (LiteLLM's ``litellm.team.metadata``)."""
    doc = _json_object(raw, "tenant_id")
    return None if doc is None else _ident({"team.tenant_id": doc.get("tenant_id")},
                                           "team.tenant_id")


def _named_after_its_model(found: Mapping, name: str | None) -> bool:
    """Whether an agent span that names no agent id is named ``invoke_agent {its requested
    model}``: the span that AI SDK 7's ``@ai-sdk/otel`` makes around every generateText /
    streamText / generateObject call (``agentSpanName`` defaults to the model id; with
    ``telemetry.functionId`` it writes ``gen_ai.agent.name``). A model is no agent."""
    model = found.get("model")
    return (type(model) is str and type(name) is str and name.startswith("invoke_agent ")
            and name[len("invoke_agent "):].strip() == model.strip() != "")


def _is_langgraph_node(found: Mapping) -> bool:
    """Whether an OpenInference span is a LangGraph node: its JSON ``metadata`` (LangChain's
    run metadata) has the key ``langgraph_node``. OpenInference's LangChain instrumentation
    makes such a node an ``AGENT`` span when its name contains "agent"; it is no agent."""
    doc = _json_object(found.get("metadata"), '"langgraph_node"')
    return doc is not None and "langgraph_node" in doc


#: Providers that name the LangChain / LangGraph framework itself, not a model vendor: on an
#: agent or workflow span, the framework's own span for a graph, chain or node.
FRAMEWORK_PROVIDERS = frozenset({"langchain", "langgraph"})


def _is_framework_span(found: Mapping) -> bool:
    """Whether an agent or workflow span is LangChain's or LangGraph's own (its provider is
    ``langgraph`` or ``langchain``): traceloop's LangChain instrumentation makes a graph run
    ``invoke_agent <graph>`` and its root chain ``<graph>.workflow`` (``invoke_agent``, a
    run uuid as ``gen_ai.agent.id``), a plain chain's root ``<chain>.workflow``. A graph,
    a chain or a node is no agent and no workflow (docs/attribution.md, LangChain)."""
    provider = found.get("provider")
    return type(provider) is str and provider.strip().lower() in FRAMEWORK_PROVIDERS


def _no_asset(kind: str, found: Mapping, name: str | None) -> bool:
    """Whether an agent or workflow span stands for no agent or workflow of the platform, but
    for a framework's or an SDK's own span (context only; docs/attribution.md):

    - a LangGraph node that OpenInference marks AGENT only because its run name contains
      "agent" (no agent id);
    - LangChain's or LangGraph's own graph, chain or node span (provider ``langchain`` /
      ``langgraph``: traceloop's ``invoke_agent <graph>``, ``<graph>.workflow``);
    - AI SDK 7's ``invoke_agent {model}`` around each call (no agent id, named after its
      own model).
    """
    if _is_framework_span(found):
        return True
    return kind == AGENT and "agent_id" not in found and (
        _is_langgraph_node(found) or _named_after_its_model(found, name))


def _openinference_model(found: Mapping) -> str | None:
    doc = _json_object(found.get("oi_parameters"), '"model"')
    return None if doc is None else _ident({"model": doc.get("model")}, "model")


def _id_from_name(name: str | None, prefix: str) -> str | None:
    """An id that only the span name carries (``invoke_workflow summarize``, an OpenInference
    decorator's ``support-bot``)."""
    if not name or name == prefix.strip():  # the bare operation name says no id
        return None
    if name.startswith(prefix):
        name = name[len(prefix):]
    return _ident({"name": name}, "name")


def _is_chat_workflow(found: Mapping) -> bool:
    if found.get("workflow_type") == "chatflow" or found.get("app_mode") == "advanced-chat":
        return True
    mode = found.get("workflow_mode")  # 3 or "3"; never str() an integer of any size
    return mode == "3" or isinstance(mode, int) and mode == 3


# Resources are few and shared by many spans: their scan is kept, keyed by identity.
# Bounded; cleared when full. Plain dict operations, atomic under the GIL.
_RESOURCE_CACHE: dict[int, tuple[Mapping, tuple]] = {}
_RESOURCE_CACHE_SIZE = 256
# never merged from the resource: resource_*, and the SDK's name (on every resource: merged,
# it would make every span one to read)
_SPAN_ONLY = ("caller", "tenant", "metadata", "sdk")


def _scan_resource(resource_attributes: Mapping) -> tuple[str | None, str | None, dict, bool]:
    """(caller, tenant, the other fields to merge under a span's, whether OpenLIT made it)
    of a resource, cached.

    Raises :class:`InvalidSpan` for a resource caller or tenant that cannot be believed
    (not cached: every span of that resource is refused the same way).
    """
    cached = _RESOURCE_CACHE.get(id(resource_attributes))
    if cached is not None and cached[0] is resource_attributes:
        return cached[1]
    found = scan(resource_attributes)
    read = (_ident(found, "caller"), _ident(found, "tenant"),
            {k: v for k, v in found.items() if k not in _SPAN_ONLY},
            found.get("sdk") == OPENLIT_SDK_NAME)
    if len(_RESOURCE_CACHE) >= _RESOURCE_CACHE_SIZE:
        _RESOURCE_CACHE.clear()
    _RESOURCE_CACHE[id(resource_attributes)] = (resource_attributes, read)
    return read


def normalize(
    attributes: Mapping | None,
    resource_attributes: Mapping | None = None,
    *,
    error: bool = False,
    duration_ns: int | None = None,
    name: str | None = None,
    end_ns: int | None = None,
) -> SpanRecord:
    """Read one span into a :class:`SpanRecord`.

    Resource attributes sit under span attributes, field by field: a span's own value wins.
    Caller and tenant from the resource are kept apart as a fallback (``resource_caller``,
    ``resource_tenant``). ``error`` is true when the span's status is ERROR. Raises
    :class:`InvalidSpan` for data that cannot be believed (a negative token count, an id
    that is not a string, ...). ``name`` is the span name: the id of an agent or workflow
    span that carries none in its attributes.

    Raises nothing else, whatever the input: an unforeseen failure reading one span is
    :class:`InvalidSpan` ``invalid_attribute`` (the try costs nothing when nothing raises).
    """
    try:
        return _from_fields(
            scan(attributes) if attributes else {}, resource_attributes, error, duration_ns, name,
            end_ns,
        )
    except InvalidSpan:
        raise
    except Exception as exc:
        raise _unreadable(exc) from exc


def from_fields(
    found: dict[str, Any],
    resource_attributes: Mapping | None = None,
    *,
    error: bool = False,
    duration_ns: int | None = None,
    name: str | None = None,
    end_ns: int | None = None,
) -> SpanRecord:
    """:func:`normalize` for attributes already read by :func:`scan` (read them once).

    Raises only :class:`InvalidSpan`, as :func:`normalize`.
    """
    try:
        return _from_fields(found, resource_attributes, error, duration_ns, name, end_ns)
    except InvalidSpan:
        raise
    except Exception as exc:
        raise _unreadable(exc) from exc


_EMPTY = SpanRecord()  # a span that names nothing we read (most spans of an application)


def _from_fields(found, resource_attributes, error, duration_ns, name, end_ns=None
                 ) -> SpanRecord:
    res_caller = res_tenant = None
    openlit = False
    if resource_attributes:
        res_caller, res_tenant, res, openlit = _scan_resource(resource_attributes)
        if res:
            found = {**res, **found}
    if not found and res_caller is None and res_tenant is None:
        return _EMPTY  # context only: neither counted nor carrying a caller or tenant
    return _record(found, res_caller, res_tenant, error, duration_ns, name, end_ns, openlit)


_TOKEN_FIELDS = ("input", "output", "cache_read", "cache_write", "reasoning")


def _coze_js(found: dict) -> dict:
    """A Coze Loop JS span's plain names, under the fields of the tables (theirs win)."""
    extra = {field: found["coze_js_" + field] for field in COZE_JS_FIELDS
             if field not in found and "coze_js_" + field in found}
    return {**found, **extra} if extra else found


def _without_placeholder(found: dict) -> dict:
    """``dify.workflow_id`` that names no workflow (``unknown``): as if absent."""
    value = found["dify_workflow"]
    if not (isinstance(value, str) and value.strip().lower() in PLACEHOLDER_IDS):
        return found
    found = {k: v for k, v in found.items() if k != "dify_workflow"}
    if found.get("workflow_id") == value:
        del found["workflow_id"]
    return found


def _usage(found: Mapping, provider: str | None, openlit: bool):
    """(input, output, cache read, cache write, reasoning, has usage) of a span."""
    tin = _tokens(found, "input")
    tout = _tokens(found, "output")
    cread = _tokens(found, "cache_read")
    cwrite = _tokens(found, "cache_write")
    reasoning = _tokens(found, "reasoning")
    has_usage = not (tin is None and tout is None and cread is None and cwrite is None)
    tin, tout, cread, cwrite = tin or 0, tout or 0, cread or 0, cwrite or 0
    reasoning = min(reasoning or 0, tout)  # part of output: never more than it
    if cread + cwrite and (
        (openlit or found.get("sdk") == OPENLIT_SDK_NAME)
        and provider is not None and provider.lower() in OPENLIT_INPUT_EXCLUDES_CACHE
    ):
        tin += cread + cwrite  # OpenLIT's count for this provider excludes the cache
    elif cread + cwrite > tin:
        # Cache tokens are part of input (semconv). More cache than input can only mean an
        # Anthropic-style count where input excludes the cache: add it back, lose nothing.
        tin += cread + cwrite
    return tin, tout, cread, cwrite, reasoning, has_usage


def _record(found, res_caller, res_tenant, error, duration_ns, name, end_ns, openlit=False
            ) -> SpanRecord:
    if "coze_js_type" in found:
        found = _coze_js(found)
    if "dify_workflow" in found:
        found = _without_placeholder(found)
    kind = kind_of(found)
    if (kind == AGENT or kind == WORKFLOW) and _no_asset(kind, found, name):
        kind = OTHER
    caller = (_ident(found, "caller") if "caller" in found else None)
    tenant = (_ident(found, "tenant") if "tenant" in found else None)
    if "metadata" in found and (caller is None or tenant is None):
        meta_caller, meta_tenant = _metadata_ids(found, caller is None, tenant is None)
        caller = caller or meta_caller
        tenant = tenant or meta_tenant
    if tenant is None and "team_metadata" in found:
        tenant = _json_tenant(found["team_metadata"])
    outcome = "error" if error or "error_type" in found else "ok"
    conversation = _ident(found, "conversation") if "conversation" in found else None
    if kind == MODEL:
        provider = _ident(found, "provider") if "provider" in found else None
        tin, tout, cread, cwrite, reasoning, has_usage = _usage(found, provider, openlit)
        return SpanRecord(
            kind=MODEL,
            input_tokens=tin,
            output_tokens=tout,
            cache_read_tokens=cread,
            cache_write_tokens=cwrite,
            reasoning_tokens=reasoning,
            has_usage=has_usage,
            model=_ident(found, "model") or _openinference_model(found),
            response_model=(
                _ident(found, "response_model") if "response_model" in found else None
            ),
            provider=provider,
            caller=caller,
            tenant=tenant,
            resource_caller=res_caller,
            resource_tenant=res_tenant,
            conversation=conversation,
            outcome=outcome,
            duration_ns=duration_ns,
            time_to_first_token_ns=_ttft_ns(found) if ("ttft_s" in found or "ttft_ms" in found)
            else None,
            end_ns=end_ns,
        )
    agent_id = workflow_id = None
    if kind == AGENT:
        agent_id = _ident(found, "agent_id") or _id_from_name(name, "invoke_agent ")
    elif kind == WORKFLOW:
        workflow_id = _ident(found, "workflow_id") or _id_from_name(name, "invoke_workflow ")
    for field in _TOKEN_FIELDS:
        if field in found:  # a span that is no model call but reports usage: the assembly
            # decides at the trace's close (a roll-up of its calls, an agent's own calls, or
            # unclassified usage)
            provider = _ident(found, "provider") if "provider" in found else None
            tin, tout, cread, cwrite, reasoning, has_usage = _usage(found, provider, openlit)
            return SpanRecord(
                kind=kind, input_tokens=tin, output_tokens=tout, cache_read_tokens=cread,
                cache_write_tokens=cwrite, reasoning_tokens=reasoning, has_usage=has_usage,
                model=_ident(found, "model") or _openinference_model(found),
                response_model=(
                    _ident(found, "response_model") if "response_model" in found else None),
                provider=provider, agent_id=agent_id, workflow_id=workflow_id,
                chat_workflow=kind == WORKFLOW and _is_chat_workflow(found),
                caller=caller, tenant=tenant, resource_caller=res_caller,
                resource_tenant=res_tenant, conversation=conversation, outcome=outcome,
                duration_ns=duration_ns, end_ns=end_ns)
    return SpanRecord(
        kind=kind,
        agent_id=agent_id,
        workflow_id=workflow_id,
        chat_workflow=kind == WORKFLOW and _is_chat_workflow(found),
        caller=caller,
        tenant=tenant,
        resource_caller=res_caller,
        resource_tenant=res_tenant,
        conversation=conversation,
        outcome=outcome,
        duration_ns=duration_ns,
    )
