"""Issue 7 as properties: whatever the values, one span is refused at most, never more.

(a) ``conventions.normalize`` raises nothing but :class:`InvalidSpan` for any value under any
attribute name it reads, and a record it returns holds only strings that a /metrics scrape can
encode (text and OpenMetrics). (b) ``decode_request`` raises nothing but :class:`OtlpError`
for any body, and what it returns normalises as (a) says: the service's whole path.
"""

from __future__ import annotations

import dataclasses
import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.otlp import OtlpError, decode_request
from otel_processor import conventions
from otel_processor.conventions import InvalidSpan, SpanRecord, normalize
from tests.test_bad_values import js_nested, pb_field, pb_nested

PB, JS = "application/x-protobuf", "application/json"
LIMITS = {"max_body_bytes": 4 << 20, "max_decompressed_bytes": 16 << 20, "max_spans": 8}
TRACE, SPAN = bytes(range(1, 17)), bytes(range(1, 9))

#: Every attribute name conventions reads: its tables, the single-name fields included.
NAMES = sorted({name for names in conventions._FIELD_TABLES.values() for name in names})
ID_FIELDS = ("model", "response_model", "provider", "agent_id", "workflow_id", "caller",
             "tenant", "resource_caller", "resource_tenant", "conversation")
REASONS = {"invalid_attribute", "invalid_token_count"}


class _OneLabel:
    """A collector exposing one sample whose label holds ``value``, as the ledger's would."""

    def __init__(self, value: str) -> None:
        self.value = value

    def collect(self):
        family = CounterMetricFamily("llm_test_tokens", "Tokens.", labels=["value"])
        family.add_metric([self.value], 1)
        yield family


def expose(value: str) -> None:
    """Encode ``value`` as a label the way /metrics does, in both exposition formats."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_OneLabel(value))
    generate_latest(registry)
    generate_openmetrics(registry)


def assert_scrapable(record: SpanRecord) -> None:
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if isinstance(value, str):
            value.encode("utf-8")
            expose(value)
    for field in ID_FIELDS:
        value = getattr(record, field)
        assert value is None or 0 < len(value) <= conventions.MAX_ID_LENGTH
    assert min(record.input_tokens, record.output_tokens, record.cache_read_tokens,
               record.cache_write_tokens) >= 0


def test_the_scrape_check_has_teeth_a_lone_surrogate_label_fails_to_encode():
    # the failure the property guards against: every /metrics scrape answered 500
    with pytest.raises(UnicodeEncodeError):
        expose("\ud800")


# --- (a) conventions ----------------------------------------------------------------------------

_CHARS = st.characters(exclude_categories=())  # surrogates (Cs) and control characters included
_TEXT = (
    st.text(_CHARS, max_size=12)
    | st.text(st.sampled_from("0123456789 \t\n²٣７+-.e\ud800\udfff\x00\"\\"), max_size=14)
    | st.sampled_from([
        "", "  ", "chat", "invoke_agent", "LLM", "agent", "workflow", "model", "3",
        "chatflow", "advanced-chat", "0" * 40 + "12", "9" * 5000, "x" * 300,
        '{"tenant_id": "acme"}', '{"tenant_id": "\\ud800"}', '{"tenant_id": 12}',
        '{"model": "gpt-4o"}', '{"model": ["x"]}', '{"model": 1' + "0" * 5000 + "}",
        '{"tenant_id": ' + "[" * 50_000, '{"model": ' + "{" * 50_000,
        '{"tenant_id": [' + "[" * 900 + "]" * 900 + "]}",
    ])
)
_JSON_DOC = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(_CHARS, max_size=6),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["tenant_id", "model", "x"]), inner, max_size=3),
    max_leaves=12,
).map(json.dumps)
_INTS = st.integers() | st.sampled_from([
    -1, 0, 2**63, -(2**63) - 1, conventions.MAX_TOKENS_PER_SPAN,
    conventions.MAX_TOKENS_PER_SPAN + 1, 10**300, 10**5000, -(10**5000),
])
_SCALAR = (st.none() | st.booleans() | _INTS | st.floats() | _TEXT | _JSON_DOC
           | st.binary(max_size=3))
_VALUE = _SCALAR | st.lists(_SCALAR, max_size=3).map(tuple)
_OPERATION = st.sampled_from(["chat", "invoke_agent", "invoke_workflow", "execute_tool"]) | _TEXT
_ATTRIBUTES = st.dictionaries(st.sampled_from(NAMES), _VALUE, max_size=8)
_NAME = st.none() | _TEXT | st.builds(
    "{} {}".format, st.sampled_from(["invoke_agent", "invoke_workflow"]), _TEXT)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(attrs=_ATTRIBUTES, operation=st.none() | _OPERATION,
       resource=st.none() | _ATTRIBUTES, name=_NAME, error=st.booleans(),
       duration_ns=st.none() | st.integers(min_value=0, max_value=2**64))
def test_any_value_under_any_name_conventions_reads_refuses_at_most_that_span(
    attrs, operation, resource, name, error, duration_ns
):
    if operation is not None:
        attrs = {**attrs, "gen_ai.operation.name": operation}
    try:
        record = normalize(attrs, resource, name=name, error=error, duration_ns=duration_ns)
    except InvalidSpan as exc:
        assert exc.reason in REASONS
        return
    assert_scrapable(record)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), value=_VALUE, operation=_OPERATION)
def test_one_value_alone_under_each_name_refuses_at_most_that_span(name, value, operation):
    # one attribute at a time: no other value can mask the one that would raise
    try:
        record = normalize({"gen_ai.operation.name": operation, name: value}, {name: value},
                           name=value if isinstance(value, str) else None)
    except InvalidSpan as exc:
        assert exc.reason in REASONS
        return
    assert_scrapable(record)


# --- (b) the OTLP decoder, then the normaliser ---------------------------------------------------


def normalise_all(result) -> None:
    for wire in result.spans:
        assert len(wire.trace_id) == 16 and len(wire.span_id) == 8
        try:
            record = normalize(wire.attributes, wire.resource_attributes, error=wire.error,
                               name=wire.name)
        except InvalidSpan as exc:
            assert exc.reason in REASONS
        else:
            assert_scrapable(record)


def decode_and_normalise(body: bytes, content_type: str, encoding: str | None = None) -> None:
    """The service's path for one request: decode, then normalise every span decoded."""
    try:
        result = decode_request(body, content_type, encoding, **LIMITS)
    except OtlpError as error:
        assert (error.status, error.reason) in {(400, "decode_error"), (413, "too_many_spans"),
                                                (413, "too_large")}
        return
    normalise_all(result)


class Raw(str):
    """JSON text written verbatim: what json.dumps cannot write (5000-digit integers, nesting
    beyond the recursion limit)."""


def write(obj) -> str:
    if isinstance(obj, Raw):
        return str(obj)
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {write(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list):
        return "[" + ", ".join(write(v) for v in obj) + "]"
    return json.dumps(obj)  # a lone surrogate is written as its escape


_RAW = st.sampled_from([
    Raw("1" + "0" * 400), Raw("-1" + "0" * 400), Raw("1" + "0" * 5000), Raw("1e400"),
    Raw('"\\ud800"'), Raw('"a\\udfffb"'), Raw('"\\u0000"'), Raw("[" * 3000 + "]" * 3000),
    Raw(js_nested("arrayValue", 40)), Raw(js_nested("kvlistValue", 40)),
    Raw(js_nested("arrayValue", 1000)),
])
_JSON_SCALAR = (st.none() | st.booleans() | st.integers() | st.floats() | _TEXT | _RAW
                | st.sampled_from([TRACE.hex(), SPAN.hex(), "STATUS_CODE_ERROR", "42", "NaN"]))
_NASTY_VALUES = st.sampled_from([
    {"doubleValue": Raw("1" + "0" * 400)}, {"doubleValue": Raw("-1" + "0" * 400)},
    {"doubleValue": Raw("1" + "0" * 5000)}, {"intValue": Raw("1" + "0" * 5000)},
    {"stringValue": Raw('"\\ud800"')}, {"stringValue": "\u00b2"}, {"stringValue": "9" * 5000},
    {"stringValue": '{"tenant_id": ' + "[" * 50_000}, {"stringValue": '{"model": "\\udfff"}'},
    Raw(js_nested("arrayValue", 40)), Raw(js_nested("kvlistValue", 40)),
    Raw(js_nested("kvlistValue", 1000)),
])
_KINDS = ["stringValue", "intValue", "doubleValue", "boolValue", "bytesValue"]
_READABLE_VALUE = st.one_of(  # what a client means to send, so the normaliser sees values
    st.builds(lambda v: {"stringValue": v}, _TEXT),
    st.builds(lambda v: {"intValue": v}, st.integers(-(2**63), 2**63 - 1)
              | st.integers(-(2**63), 2**63 - 1).map(str)),
    st.builds(lambda v: {"doubleValue": v}, st.floats()),
    st.builds(lambda v: {"boolValue": v}, st.booleans()),
)
_ANY_VALUE = st.deferred(lambda: st.one_of(
    *[_READABLE_VALUE] * 6,  # each unreadable value refuses its span: mostly readable ones
    st.builds(lambda kind, raw: {kind: raw}, st.sampled_from(_KINDS), _JSON_SCALAR),
    st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(_ANY_VALUE, max_size=2)),
    st.builds(lambda kvs: {"kvlistValue": {"values": kvs}}, st.lists(_KEY_VALUE, max_size=2)),
    _NASTY_VALUES,
    _JSON_SCALAR,  # not an AnyValue at all
    st.fixed_dictionaries({}, optional={  # no kind, several kinds, odd containers
        "stringValue": _JSON_SCALAR, "intValue": _JSON_SCALAR, "doubleValue": _JSON_SCALAR,
        "arrayValue": _JSON_SCALAR, "kvlistValue": st.fixed_dictionaries(
            {}, optional={"values": st.lists(_KEY_VALUE, max_size=2) | _JSON_SCALAR}),
    }),
))
_KEY_VALUE = st.fixed_dictionaries({"key": st.sampled_from(NAMES) | _TEXT, "value": _ANY_VALUE})
_JS_ATTRIBUTES = st.lists(_KEY_VALUE, max_size=4)
# Well shaped: a body of the wrong shape is refused whole (a 400) before any value is read,
# so these reach every value; test_otlp's random JSON covers the wrong shapes.
_JS_SPAN = st.fixed_dictionaries(
    {"traceId": st.just(TRACE.hex()), "spanId": st.sampled_from([SPAN.hex()] * 4 + ["00" * 8]),
     "attributes": _JS_ATTRIBUTES},
    optional={"name": _TEXT, "status": st.fixed_dictionaries({"code": st.integers(0, 2)})},
)
_JS_DOC = st.fixed_dictionaries({"resourceSpans": st.lists(st.fixed_dictionaries(
    {"scopeSpans": st.lists(st.fixed_dictionaries(
        {"spans": st.lists(_JS_SPAN, min_size=1, max_size=3)}), min_size=1, max_size=2)},
    optional={"resource": st.fixed_dictionaries({"attributes": _JS_ATTRIBUTES})},
), min_size=1, max_size=2)})
# Any shape: the same keys, any JSON (raw text included) under them.
_JS_ANY = st.recursive(
    _JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from([
        "resourceSpans", "resource", "attributes", "scopeSpans", "spans", "traceId", "spanId",
        "parentSpanId", "name", "status", "code", "startTimeUnixNano", "key", "value", "values",
        *_KINDS, "arrayValue", "kvlistValue"]), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_JS_DOC, gzipped=st.booleans())
def test_any_values_in_an_otlp_json_body_refuse_at_most_their_spans(doc, gzipped):
    body = write(doc).encode()  # ASCII: json.dumps escapes surrogates as a client would
    if gzipped:
        body = gzip.compress(body)
    decode_and_normalise(body, JS, "gzip" if gzipped else None)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_JS_ANY)
def test_a_json_body_of_any_shape_is_decoded_or_refused_as_a_request_never_raising(doc):
    decode_and_normalise(write(doc).encode(), JS)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=512) | st.text(_CHARS, max_size=64).map(
    lambda t: t.encode("utf-8", "surrogatepass")), content_type=st.sampled_from([PB, JS]))
def test_random_bytes_are_decoded_or_refused_as_a_request_never_raising(body, content_type):
    decode_and_normalise(body, content_type)


_PB_VALUE = st.deferred(lambda: st.one_of(
    st.builds(AnyValue, string_value=st.text(max_size=8) | st.sampled_from(NAMES)),
    st.builds(AnyValue, int_value=st.integers(-(2**63), 2**63 - 1)),
    st.builds(AnyValue, double_value=st.floats()),
    st.builds(AnyValue, bool_value=st.booleans()),
    st.builds(AnyValue, bytes_value=st.binary(max_size=4)),
    st.just(AnyValue()),
    st.builds(lambda vs: AnyValue(array_value=ArrayValue(values=vs)),
              st.lists(_PB_VALUE, max_size=3)),
    st.builds(lambda kvs: AnyValue(kvlist_value=KeyValueList(values=kvs)),
              st.lists(_PB_KEY_VALUE, max_size=3)),
))
_PB_KEY_VALUE = st.builds(KeyValue, key=st.sampled_from(NAMES) | st.text(max_size=4),
                          value=_PB_VALUE)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(attributes=st.lists(_PB_KEY_VALUE, max_size=6), resource=st.lists(_PB_KEY_VALUE, max_size=3),
       deep=st.none() | st.tuples(st.sampled_from(["arrayValue", "kvlistValue"]),
                                  st.integers(0, 1000)))
def test_any_protobuf_attributes_are_decoded_or_refused_never_raising(attributes, resource, deep):
    span = Span(trace_id=TRACE, span_id=SPAN, name="s", attributes=attributes).SerializeToString()
    if deep is not None:  # written by hand: the protobuf API refuses to build this deep
        span += pb_field(9, pb_field(1, b"deep") + pb_field(2, pb_nested(*deep)))
    resource_spans = (pb_field(1, Resource(attributes=resource).SerializeToString())
                      + pb_field(2, pb_field(2, span)))  # resource, scope_spans[0].spans[0]
    decode_and_normalise(pb_field(1, resource_spans), PB)
