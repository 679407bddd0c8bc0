"""OTLP/HTTP trace requests: bytes in, validated spans out, and the answers back.

Pure: no Flask, no I/O beyond the bytes given. Follows the OTLP/HTTP specification
(https://opentelemetry.io/docs/specs/otlp/#otlphttp): binary protobuf and the OTLP JSON
mapping (hex trace/span ids, lowerCamelCase keys, unknown keys ignored, 64-bit integers as
numbers or decimal strings), optional gzip, 4xx bodies as ``google.rpc.Status``.

JSON is read by a hand-written walker over ``json.loads`` rather than ``json_format.Parse``
with a hex-to-base64 pre-pass: about ten times faster (``json_format.Parse`` alone takes
longer than this whole path), it names the offending field in a 400, and one unreadable
attribute refuses one span instead of the request. Enum names (``"STATUS_CODE_ERROR"``) are
tolerated although OTLP asks for integers; snake_case keys are unknown fields, so ignored.

Only the attributes the engine reads are kept (``conventions.READ_NAMES``, plus the
resource's ``service.name``, which the pipeline charges open-trace capacity to); the others
are skipped by name, their values neither converted nor checked. So a value that could not
be read (nested too deep, not base64, ...) refuses its span only when it is under a name
that is read: an attribute nobody reads costs nothing and refuses nothing. (In JSON the
shape of every key-value is still checked: one that is not an object is a 400, a key that
is not a string refuses the span.) Skipping them is most of what makes decoding cheap: a
span carries some twenty attributes, of which attribution reads a handful. This holds as
long as conventions reads attributes only through ``scan`` (so only ``READ_NAMES``).

Whole-request failures raise :class:`OtlpError`; spans that are individually invalid are
refused one by one and counted (partial success). Because OTLP has no code for "too many
spans", a request over ``max_spans`` is answered 413 like an oversized body: not retryable
as is, the client has to send smaller batches.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from exporter.otlp_bounds import (
    DEFAULT_MAX_VALUES_PER_REQUEST,
    MAX_GZIP_MEMBERS,
    TooMany,
    check_json,
    check_protobuf,
)
from otel_processor.conventions import COZE_JS_SPAN_TYPE, READ_NAMES, with_tracestate_caller

__all__ = [
    "JSON", "PROTOBUF", "DecodeResult", "OtlpError", "WireSpan",
    "decode_request", "encode_response", "encode_status",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_STATUS_CODE_ERROR = 2
_STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
#: array/kvlist values nested deeper than this refuse the span (bounds the recursion).
_MAX_VALUE_DEPTH = 32
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_ZERO_TRACE_ID, _ZERO_SPAN_ID = bytes(16), bytes(8)
_NOT_HEX = b"\xff"  # stands for a JSON id that is not hex: wrong length, so refused as invalid
_INT_RE = re.compile(r"-?[0-9]{1,20}")  # 64 bits need at most 20 digits
_PB_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value"})
_JSON_TYPE = {dict: "an object", list: "an array", str: "a string"}
#: The attribute names kept, of spans and resources alike; any other is skipped unread.
_KEPT = READ_NAMES | {"service.name"}


@dataclass(slots=True)
class WireSpan:
    """One span as received, ids validated.

    ``attributes`` holds the span's attributes that are read (see the module docstring) as
    Python: str, int, float, bool; bytes as a hex string; arrays as tuples; kvlists as a
    compact JSON string. ``resource_attributes`` is one dict shared by all spans of a
    resource: read it, never mutate it.

    Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``, which
    made building one five times slower (about 2.9 us against 0.55 us), and one is built for
    every span received. Nothing assigns to a WireSpan once built.
    """

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    attributes: dict[str, object]
    resource_attributes: Mapping[str, object]
    error: bool
    start_ns: int
    end_ns: int


class OtlpError(Exception):
    """The whole request is refused: answer ``status`` with an :func:`encode_status` body.

    ``reason`` is a bounded label value for ``llm_exporter_spans_rejected_total``;
    ``message`` is for humans (the ``google.rpc.Status`` message).
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass
class DecodeResult:
    """Accepted spans, plus ``(reason, count)`` of the spans refused individually."""

    spans: list[WireSpan]
    rejected: list[tuple[str, int]]
    error_message: str  # for partial_success.error_message, "" when nothing was refused


class _BadAttribute(Exception):
    """An attribute value that cannot be read: the span carrying it is refused."""


class _OversizedInt:
    """Stands for a JSON integer beyond Python's int() digit limit (4300 by default): of no
    JSON type, so refused wherever it stands (an attribute's span, or the request for a
    field such as a timestamp)."""

    __slots__ = ()


_OVERSIZED_INT = _OversizedInt()


def decode_request(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    *,
    max_body_bytes: int,
    max_decompressed_bytes: int,
    max_spans: int,
    max_values: int = DEFAULT_MAX_VALUES_PER_REQUEST,
) -> DecodeResult:
    """Decode an OTLP/HTTP ``ExportTraceServiceRequest`` body.

    Raises :class:`OtlpError`: 415 ``unsupported_media_type`` / ``unsupported_encoding``,
    413 ``too_large`` (body over ``max_body_bytes`` or over ``max_decompressed_bytes`` once
    decompressed, checked while inflating so that a gzip bomb is stopped early),
    413 ``too_many_spans``, 400 ``decode_error``. Spans with an invalid id or an unreadable
    value under a name that is read are refused individually: reasons ``missing_trace_id``,
    ``invalid_trace_id``, ``invalid_span_id``, ``invalid_parent_span_id``,
    ``invalid_attribute`` (also for any unforeseen failure reading one span's or its
    resource's attributes: one bad value never costs the request; values under names that
    are not read are skipped unread, see the module docstring). An all-zero parent span id
    is read as "no parent" (a root), not refused. Raises nothing but :class:`OtlpError`.
    """
    media = _media_type(content_type)
    if media != PROTOBUF and media != JSON:
        raise OtlpError(415, "unsupported_media_type",
                        f"unsupported Content-Type {content_type!r}: send {PROTOBUF} or {JSON}")
    if len(body) > max_body_bytes:
        raise OtlpError(413, "too_large", f"body of {len(body)} bytes is over {max_body_bytes}")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip":
        body = _gunzip(body, max_decompressed_bytes)
    elif encoding not in ("identity", ""):
        raise OtlpError(415, "unsupported_encoding",
                        f"unsupported Content-Encoding {content_encoding!r}: send gzip or none")
    elif len(body) > max_decompressed_bytes:
        raise OtlpError(413, "too_large", f"body is over {max_decompressed_bytes} bytes")
    try:  # bounded work: counted before decoding, at C speed where possible
        if media == PROTOBUF:
            check_protobuf(body, max_spans=max_spans, max_values=max_values)
        else:
            check_json(body, max_values=max_values)
    except TooMany as exc:
        reason = "too_many_spans" if exc.what == "spans" else "too_many_values"
        raise OtlpError(413, reason, f"{exc}: send smaller batches") from None
    rejected: dict[str, int] = {}
    if media == PROTOBUF:
        spans = _from_protobuf(body, max_spans, rejected)
    else:
        spans = _from_json(body, max_spans, rejected)
    message = ""
    if rejected:
        detail = ", ".join(f"{reason}: {n}" for reason, n in rejected.items())
        message = f"{sum(rejected.values())} spans refused ({detail})"
    return DecodeResult(spans, list(rejected.items()), message)


def encode_response(
    content_type_of_request: str | None, rejected_spans: int, error_message: str
) -> tuple[bytes, str]:
    """``ExportTraceServiceResponse`` body and its Content-Type, in the request's encoding.

    ``partial_success`` is set only when spans were refused or a message is given (the
    specification allows a warning with ``rejected_spans`` 0); otherwise it stays unset.
    """
    partial = bool(rejected_spans or error_message)
    if _media_type(content_type_of_request) == JSON:
        doc: dict[str, object] = {}
        if partial:
            part: dict[str, object] = {}
            if rejected_spans:
                part["rejectedSpans"] = str(rejected_spans)  # int64: a string in proto3 JSON
            if error_message:
                part["errorMessage"] = error_message
            doc["partialSuccess"] = part
        return json.dumps(doc).encode(), JSON
    response = trace_service_pb2.ExportTraceServiceResponse()
    if partial:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = error_message
    return response.SerializeToString(), PROTOBUF


def encode_status(content_type_of_request: str | None, code_message: str) -> tuple[bytes, str]:
    """``google.rpc.Status`` body (message only; the spec lets ``code`` be omitted) for 4xx/5xx.

    JSON when the request was JSON, protobuf otherwise (also for an unsupported media type).
    """
    if _media_type(content_type_of_request) == JSON:
        return json.dumps({"message": code_message}).encode(), JSON
    return status_pb2.Status(message=code_message).SerializeToString(), PROTOBUF


def _media_type(content_type: str | None) -> str:
    return content_type.split(";", 1)[0].strip().lower() if content_type else ""


def _gunzip(data: bytes, limit: int) -> bytes:
    """Inflate (possibly multi-member) gzip, never producing more than ``limit + 1`` bytes."""
    parts: list[bytes] = []
    total = 0
    while True:
        if len(parts) >= MAX_GZIP_MEMBERS:  # each member copies the rest: keep it linear
            raise OtlpError(400, "decode_error",
                            f"gzip body of more than {MAX_GZIP_MEMBERS} members")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = inflater.decompress(data, limit - total + 1)  # max_length >= 1, never 0
        except zlib.error as exc:
            raise OtlpError(400, "decode_error", f"gzip body does not inflate: {exc}") from None
        total += len(chunk)
        if total > limit:
            raise OtlpError(413, "too_large", f"body inflates to more than {limit} bytes")
        parts.append(chunk)
        if not inflater.eof:  # all input consumed without reaching the end of the stream
            raise OtlpError(400, "decode_error", "gzip body is truncated")
        data = inflater.unused_data
        if not data:
            return parts[0] if len(parts) == 1 else b"".join(parts)


def _id_problem(trace_id: bytes, span_id: bytes, parent_span_id: bytes) -> str | None:
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
        return "invalid_trace_id" if trace_id else "missing_trace_id"
    if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        return "invalid_span_id"
    if parent_span_id and len(parent_span_id) != 8:
        return "invalid_parent_span_id"
    return None


def _too_many(count: int, max_spans: int) -> OtlpError:
    return OtlpError(413, "too_many_spans", f"more than {max_spans} spans in one request "
                     f"({count} so far): send smaller batches")


# --- protobuf -------------------------------------------------------------------------------


def _from_protobuf(body: bytes, max_spans: int, rejected: dict[str, int]) -> list[WireSpan]:
    try:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    except (DecodeError, ValueError, RecursionError) as exc:
        raise OtlpError(400, "decode_error", f"body is not an ExportTraceServiceRequest: {exc}"
                        ) from None
    count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if count > max_spans:
        raise _too_many(count, max_spans)
    spans: list[WireSpan] = []
    # Hot loop (every span received): names hoisted into locals, the valid-ids test inlined
    # (_id_problem names the reason only for a span that fails it).
    append, attributes_of, problem_of, wire = spans.append, _pb_attributes, _id_problem, WireSpan
    zero_trace, zero_span, error_code = _ZERO_TRACE_ID, _ZERO_SPAN_ID, _STATUS_CODE_ERROR
    coze = COZE_JS_SPAN_TYPE
    for rs in request.resource_spans:
        try:
            resource_attributes = attributes_of(rs.resource.attributes)
        except Exception:  # _BadAttribute, or anything unforeseen: refuses this resource's spans
            resource_attributes = None
        for ss in rs.scope_spans:
            for span in ss.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                if (len(trace_id) == 16 and len(span_id) == 8 and trace_id != zero_trace
                        and span_id != zero_span and (not parent or len(parent) == 8)):
                    try:
                        attributes = attributes_of(span.attributes)
                    except Exception:  # _BadAttribute, or anything unforeseen: this span only
                        reason = "invalid_attribute"
                    else:
                        reason = None if resource_attributes is not None else "invalid_attribute"
                        if coze in attributes:  # Coze Loop JS: its caller is in the tracestate
                            attributes = with_tracestate_caller(attributes, span.trace_state)
                else:
                    reason = problem_of(trace_id, span_id, parent)
                if reason is not None:
                    rejected[reason] = rejected.get(reason, 0) + 1
                    continue
                append(wire(
                    trace_id, span_id, None if not parent or parent == zero_span else parent,
                    span.name, attributes, resource_attributes,
                    span.status.code == error_code,
                    span.start_time_unix_nano, span.end_time_unix_nano,
                ))
    return spans


def _pb_attributes(key_values) -> dict[str, object]:
    """The attributes kept (:data:`_KEPT`) as Python; any other is skipped by its name."""
    out: dict[str, object] = {}
    kept, scalars = _KEPT, _PB_SCALARS
    for kv in key_values:
        key = kv.key
        if key not in kept:
            continue
        value = kv.value
        # Most values read are non-empty strings or non-zero integers: only the member of a
        # oneof that is set reads other than its default, so these two reads are exact and
        # cheaper than WhichOneof + getattr (an empty string or a zero falls through to it).
        scalar = value.string_value or value.int_value
        if scalar:
            out[key] = scalar
            continue
        kind = value.WhichOneof("value")
        if kind in scalars:
            out[key] = getattr(value, kind)
        elif kind == "array_value":  # inlined: arrays of scalars are common (stop sequences, tags)
            items = []
            for item in value.array_value.values:
                kind = item.WhichOneof("value")
                items.append(getattr(item, kind) if kind in scalars
                             else _pb_value(item, kind, 1, False))
            out[key] = tuple(items)
        elif kind is not None:  # an empty AnyValue carries nothing: the key is left out
            out[key] = _pb_value(value, kind, 0, False)
    return out


def _pb_value(value, kind: str | None, depth: int, plain: bool) -> object:
    """AnyValue -> Python; ``plain`` builds JSON-ready lists/dicts (inside a kvlist)."""
    if kind is None or kind in _PB_SCALARS:
        return None if kind is None else getattr(value, kind)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if depth >= _MAX_VALUE_DEPTH:
        raise _BadAttribute("nested too deep")
    depth += 1
    if kind == "array_value":
        items = [_pb_value(v, v.WhichOneof("value"), depth, plain)
                 for v in value.array_value.values]
        return items if plain else tuple(items)
    mapping = {kv.key: _pb_value(kv.value, kv.value.WhichOneof("value"), depth, True)
               for kv in value.kvlist_value.values}
    return mapping if plain else json.dumps(mapping, separators=(",", ":"))


# --- JSON -----------------------------------------------------------------------------------


def _bad(path: str, expected: str, got: object) -> OtlpError:
    return OtlpError(400, "decode_error", f"{path}: expected {expected}, got {type(got).__name__}")


def _get(obj: dict, key: str, kind: type, path: str):
    """``obj[key]`` when absent/null (-> None) or of JSON type ``kind``; else a 400."""
    value = obj.get(key)
    if value is None or type(value) is kind:
        return value
    raise _bad(f"{path}.{key}", _JSON_TYPE[kind], value)


def _loads(body: bytes) -> object:
    """``json.loads``; a body it cannot read is a 400 (a recursion limit included)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        error = exc
    if type(error) is ValueError:  # an integer over int()'s digit limit: JSON all the same
        try:  # read again, each such integer standing for itself; only this case pays
            return json.loads(body, parse_int=_int_or_oversized)
        except (ValueError, RecursionError) as exc:  # JSON wrong further on
            error = exc
    raise OtlpError(400, "decode_error", f"body is not JSON: {error}")


def _int_or_oversized(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        return _OVERSIZED_INT


def _from_json(body: bytes, max_spans: int, rejected: dict[str, int]) -> list[WireSpan]:
    doc = _loads(body)
    if type(doc) is not dict:
        raise _bad("body", "an object", doc)
    spans: list[WireSpan] = []
    count = 0
    for ri, rs in enumerate(_get(doc, "resourceSpans", list, "body") or ()):
        path = f"resourceSpans[{ri}]"
        if type(rs) is not dict:
            raise _bad(path, "an object", rs)
        resource = _get(rs, "resource", dict, path) or {}
        try:
            resource_attributes = _js_attributes(resource, f"{path}.resource")
        except OtlpError:  # the request's shape is wrong: a 400 naming the field
            raise
        except Exception:  # _BadAttribute, or anything unforeseen: refuses this resource's spans
            resource_attributes = None
        for si, ss in enumerate(_get(rs, "scopeSpans", list, path) or ()):
            scope_path = f"{path}.scopeSpans[{si}]"
            if type(ss) is not dict:
                raise _bad(scope_path, "an object", ss)
            scope_spans = _get(ss, "spans", list, scope_path) or ()
            count += len(scope_spans)
            if count > max_spans:
                raise _too_many(count, max_spans)
            for pi, span in enumerate(scope_spans):
                wire = _js_span(span, f"{scope_path}.spans[{pi}]", resource_attributes, rejected)
                if wire is not None:
                    spans.append(wire)
    return spans


def _js_span(span: object, path: str, resource_attributes, rejected: dict) -> WireSpan | None:
    if type(span) is not dict:
        raise _bad(path, "an object", span)
    trace_id, span_id = _js_id(span, "traceId", path), _js_id(span, "spanId", path)
    parent = _js_id(span, "parentSpanId", path)
    status = _get(span, "status", dict, path) or {}
    code = status.get("code")
    if type(code) is str and code in _STATUS_CODES:  # OTLP wants ints; names are tolerated
        code = _STATUS_CODES[code]
    elif code is not None and type(code) is not int:
        raise _bad(f"{path}.status.code", "an integer", code)
    name = _get(span, "name", str, path) or ""
    start = _js_uint64(span, "startTimeUnixNano", path)
    end = _js_uint64(span, "endTimeUnixNano", path)
    try:
        attributes = _js_attributes(span, path)
    except OtlpError:  # the request's shape is wrong: a 400 naming the field
        raise
    except Exception:  # _BadAttribute, or anything unforeseen in this span's values
        attributes = None
    if attributes is not None and COZE_JS_SPAN_TYPE in attributes:  # caller in the tracestate
        attributes = with_tracestate_caller(attributes, span.get("traceState"))
    reason = _id_problem(trace_id, span_id, parent)
    if reason is None and (attributes is None or resource_attributes is None):
        reason = "invalid_attribute"
    if reason is not None:
        rejected[reason] = rejected.get(reason, 0) + 1
        return None
    return WireSpan(trace_id, span_id, None if parent == b"" or parent == _ZERO_SPAN_ID else parent,
                    name, attributes, resource_attributes, code == _STATUS_CODE_ERROR, start, end)


def _js_id(span: dict, key: str, path: str) -> bytes:
    text = _get(span, key, str, path)
    if not text:
        return b""
    try:
        return binascii.unhexlify(text)  # case-insensitive; refuses whitespace and odd lengths
    except (binascii.Error, ValueError):
        return _NOT_HEX


def _js_uint64(obj: dict, key: str, path: str) -> int:
    """``obj[key]`` as an unsigned 64-bit integer (absent: 0); else a 400 naming the field."""
    value = obj.get(key)
    number = 0 if value is None else _as_int(value)
    if number is None or not 0 <= number <= _UINT64_MAX:
        raise OtlpError(400, "decode_error", f"{path}.{key}: expected an unsigned 64-bit integer")
    return number


def _as_int(raw: object) -> int | None:
    """A JSON integer, also as a decimal string (proto3 JSON's form for 64-bit integers)."""
    if type(raw) is int:
        return raw
    if type(raw) is str and _INT_RE.fullmatch(raw) or type(raw) is float and raw.is_integer():
        return int(raw)
    return None


def _js_attributes(owner: dict, path: str) -> dict[str, object]:
    """The attributes kept (:data:`_KEPT`), as :func:`_pb_attributes`; any other is skipped
    by its name (its value unread). The shape is checked for all: a key-value that is not an
    object is a 400, a key that is not a string refuses the span."""
    key_values = _get(owner, "attributes", list, path)
    out: dict[str, object] = {}
    if not key_values:
        return out
    kept = _KEPT
    for kv in key_values:
        if type(kv) is not dict:  # the first one that is not: index() finds it exactly
            raise _bad(f"{path}.attributes[{key_values.index(kv)}]", "an object", kv)
        key = kv.get("key", "")  # a missing key is "", as in protobuf
        if key not in kept:  # an unhashable key raises TypeError: the span is refused
            if type(key) is not str:
                raise _BadAttribute("key is not a string")
            continue
        value = kv.get("value")
        if type(value) is dict and len(value) == 1:  # the usual {"stringValue": "..."}
            raw = value.get("stringValue")
            if type(raw) is str:
                out[key] = raw
                continue
        value = _js_value(value, 0, False)
        if value is not None:
            out[key] = value
    return out


def _js_value(value: object, depth: int, plain: bool) -> object:
    """JSON AnyValue -> Python, as :func:`_pb_value`; unreadable content raises _BadAttribute."""
    if value is None:
        return None
    if type(value) is not dict:
        raise _BadAttribute("value is not an object")
    if len(value) == 1:  # the usual shape: {"stringValue": "..."}
        ((kind, raw),) = value.items()
        if raw is None or kind not in _JS_KINDS:  # unknown keys are ignored
            return None
    else:
        kinds = [k for k in value if k in _JS_KINDS and value[k] is not None]
        if len(kinds) != 1:
            if not kinds:
                return None
            raise _BadAttribute("more than one value kind")
        kind = kinds[0]
        raw = value[kind]
    if kind in ("arrayValue", "kvlistValue"):
        if depth >= _MAX_VALUE_DEPTH or type(raw) is not dict:
            raise _BadAttribute(kind)
        items = raw.get("values") or []
        if type(items) is not list:
            raise _BadAttribute(kind)
        if kind == "arrayValue":
            seq = [_js_value(v, depth + 1, plain) for v in items]
            return seq if plain else tuple(seq)
        mapping = {}
        for kv in items:
            if type(kv) is not dict or type(kv.get("key", "")) is not str:
                raise _BadAttribute(kind)
            mapping[kv.get("key", "")] = _js_value(kv.get("value"), depth + 1, True)
        return mapping if plain else json.dumps(mapping, separators=(",", ":"))
    return _js_scalar(kind, raw)


def _js_scalar(kind: str, raw: object) -> object:
    """A non-nested JSON AnyValue; unreadable content raises _BadAttribute."""
    if kind == "stringValue" and type(raw) is str or kind == "boolValue" and type(raw) is bool:
        return raw
    if kind == "intValue":
        number = _as_int(raw)
        if number is not None and _INT64_MIN <= number <= _INT64_MAX:
            return number
    elif kind == "doubleValue" and type(raw) in (int, float, str):
        try:  # proto3 JSON: a number, or "NaN", "Infinity", "-Infinity" or a number in a string
            return float(raw)
        except (ValueError, OverflowError):  # an integer beyond a double's range overflows
            pass
    elif kind == "bytesValue" and type(raw) is str:
        try:  # proto3 JSON bytes: base64, standard or URL-safe alphabet, padding optional
            text = raw.replace("-", "+").replace("_", "/") + "=" * (-len(raw) % 4)
            return base64.b64decode(text, validate=True).hex()
        except (binascii.Error, ValueError):
            pass
    raise _BadAttribute(kind)


_JS_KINDS = frozenset({"stringValue", "boolValue", "intValue", "doubleValue", "bytesValue",
                       "arrayValue", "kvlistValue"})
