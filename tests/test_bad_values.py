"""Issue 7: one bad value refuses one span, never the batch.

Each test here is a value that once escaped as an uncaught exception (a 500 from the
service, every good span of the request lost) or was stored and then broke every /metrics
scrape. The request-level tests decode a body with :func:`exporter.otlp.decode_request` and
normalise each span as the service's pipeline does, so they show what the service keeps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

import exporter.otlp as otlp
from exporter.otlp import OtlpError, decode_request
from otel_processor.conventions import InvalidSpan, SpanRecord, from_fields, normalize, scan

PB, JS = "application/x-protobuf", "application/json"
LIMITS = {"max_body_bytes": 4 << 20, "max_decompressed_bytes": 16 << 20, "max_spans": 1000}
TRACE = bytes(range(1, 17))
GOOD, BAD = bytes(range(1, 9)), bytes(range(11, 19))
CHAT = {"gen_ai.operation.name": "chat"}


def decode(body: bytes, content_type: str = JS):
    return decode_request(body, content_type, None, **LIMITS)


def refusal(body: bytes, content_type: str = JS) -> OtlpError:
    with pytest.raises(OtlpError) as caught:
        decode(body, content_type)
    return caught.value


def normalise_all(result) -> tuple[dict[bytes, SpanRecord], dict[str, int]]:
    """What the service's pipeline does with a decoded request (the span name passed too, as
    the in-process processor does): records, and refusals by reason, decode's and the
    normaliser's together. Anything else raised is the bug."""
    records: dict[bytes, SpanRecord] = {}
    refused = dict(result.rejected)
    for wire in result.spans:
        try:
            records[wire.span_id] = normalize(wire.attributes, wire.resource_attributes,
                                              error=wire.error, name=wire.name)
        except InvalidSpan as exc:
            refused[exc.reason] = refused.get(exc.reason, 0) + 1
    return records, refused


def js_string(text: str) -> str:
    """A JSON string literal; ``ensure_ascii`` writes a lone surrogate as its escape."""
    return json.dumps(text)


def js_attr(key: str, value_json: str) -> str:
    return f'{{"key": {js_string(key)}, "value": {value_json}}}'


def js_str_attr(key: str, value: str) -> str:
    return js_attr(key, f'{{"stringValue": {js_string(value)}}}')


def js_body(*spans: tuple[bytes, list[str]], resource: list[str] = ()) -> bytes:
    """An OTLP JSON body written as text: json.dumps cannot write what these tests need
    (1000 nested levels, integers of 5000 digits)."""
    written = ", ".join(
        f'{{"traceId": "{TRACE.hex()}", "spanId": "{span_id.hex()}", "name": "chat", '
        f'"attributes": [{", ".join(attrs)}]}}'
        for span_id, attrs in spans
    )
    return (f'{{"resourceSpans": [{{"resource": {{"attributes": [{", ".join(resource)}]}}, '
            f'"scopeSpans": [{{"spans": [{written}]}}]}}]}}').encode()


def chat_attrs(**extra: str) -> list[str]:
    """A chat span that counts 5 input tokens for alice, plus ``extra`` string attributes."""
    attrs = [js_str_attr("gen_ai.operation.name", "chat"),
             js_attr("gen_ai.usage.input_tokens", '{"intValue": "5"}'),
             js_str_attr("enduser.id", "alice")]
    return attrs + [js_str_attr(k, v) for k, v in extra.items()]


def assert_only_the_bad_span_is_refused(body: bytes, reason: str, content_type: str = JS):
    records, refused = normalise_all(decode(body, content_type))
    assert list(records) == [GOOD]
    assert (records[GOOD].input_tokens, records[GOOD].caller) == (5, "alice")
    assert refused == {reason: 1}


# --- token counts written as strings ---------------------------------------------------------


@pytest.mark.parametrize("text", [
    pytest.param("\u00b2", id="superscript-two"),  # str.isdigit() is True, int() refuses it
    pytest.param("\u0661\u0662", id="arabic-indic-digits"),  # int() reads it; not ASCII
    pytest.param("\uff17", id="fullwidth-seven"),
    pytest.param("9" * 5000, id="5000-digits"),  # over int()'s 4300-digit limit
    pytest.param("+5", id="signed"),
])
def test_a_token_count_string_that_is_not_ascii_digits_is_refused_as_a_token_count(text):
    with pytest.raises(InvalidSpan) as info:
        normalize({**CHAT, "gen_ai.usage.output_tokens": text})
    assert info.value.reason == "invalid_token_count"


def test_a_superscript_token_count_refuses_its_span_and_the_request_keeps_the_others():
    body = js_body((GOOD, chat_attrs()),
                   (BAD, chat_attrs(**{"gen_ai.usage.output_tokens": "\u00b2"})))
    assert_only_the_bad_span_is_refused(body, "invalid_token_count")


def test_leading_zeros_and_surrounding_whitespace_still_read_exactly():
    record = normalize({**CHAT, "gen_ai.usage.input_tokens": "\t" + "0" * 30 + "7 "})
    assert record.input_tokens == 7


@pytest.mark.parametrize("value", [10**5000, -(10**5000)], ids=["huge", "huge-negative"])
def test_an_integer_too_long_to_print_is_refused_as_a_token_count(value):
    # in-process spans may carry any Python int; the refusal's message must not print it
    with pytest.raises(InvalidSpan) as info:
        normalize({**CHAT, "gen_ai.usage.input_tokens": value})
    assert info.value.reason == "invalid_token_count"


# --- values nested 1000 deep -----------------------------------------------------------------


def js_nested(kind: str, depth: int) -> str:
    if kind == "arrayValue":
        opening, closing = '{"arrayValue": {"values": [', "]}}"
    else:
        opening, closing = '{"kvlistValue": {"values": [{"key": "k", "value": ', "}]}}"
    return opening * depth + '{"stringValue": "leaf"}' + closing * depth


def pb_field(field: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field, written by hand."""
    length, size = b"", len(payload)
    while True:
        byte, size = size & 0x7F, size >> 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            return bytes([field << 3 | 2]) + length + payload


def pb_nested(kind: str, depth: int) -> bytes:
    """An AnyValue nested ``depth`` levels, encoded by hand: the Python protobuf API itself
    refuses to build one deeper than its parser's limit."""
    value = pb_field(1, b"leaf")  # AnyValue.string_value
    for _ in range(depth):
        if kind == "arrayValue":
            value = pb_field(5, pb_field(1, value))  # AnyValue.array_value -> .values
        else:  # AnyValue.kvlist_value -> KeyValueList.values -> KeyValue{key, value}
            value = pb_field(6, pb_field(1, pb_field(1, b"k") + pb_field(2, value)))
    return value


def pb_body_with_deep_span(kind: str, depth: int) -> bytes:
    good = Span(trace_id=TRACE, span_id=GOOD, name="chat").SerializeToString()
    bad = Span(trace_id=TRACE, span_id=BAD, name="chat").SerializeToString()
    name = b"gen_ai.request.model"  # a name the engine reads: an unread one is never converted
    bad += pb_field(9, pb_field(1, name) + pb_field(2, pb_nested(kind, depth)))  # attributes
    scope_spans = pb_field(2, good) + pb_field(2, bad)  # ScopeSpans.spans, twice
    # request.resource_spans -> ResourceSpans.scope_spans
    return pb_field(1, pb_field(2, scope_spans))


@pytest.mark.parametrize("kind", ["arrayValue", "kvlistValue"])
def test_the_hand_written_protobuf_nesting_is_what_the_protobuf_library_writes(kind):
    if kind == "arrayValue":
        expected = AnyValue(array_value=ArrayValue(values=[
            AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="leaf")]))]))
    else:
        expected = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(
            kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(
                string_value="leaf"))])))]))
    assert pb_nested(kind, 2) == expected.SerializeToString()


@pytest.mark.parametrize("kind", ["arrayValue", "kvlistValue"])
def test_a_json_value_nested_1000_deep_is_a_clean_400_because_json_loads_cannot_read_it(kind):
    # 1000 AnyValue levels are 3000-4000 JSON levels: beyond json.loads's recursion limit,
    # so there is no request to keep spans of; a 400 names the problem.
    body = js_body((GOOD, chat_attrs()),
                   (BAD, [js_attr("gen_ai.request.model", js_nested(kind, 1000))]))
    error = refusal(body)
    assert (error.status, error.reason) == (400, "decode_error")


@pytest.mark.parametrize("kind", ["arrayValue", "kvlistValue"])
def test_a_protobuf_value_nested_1000_deep_is_a_clean_400_from_the_parsers_depth_limit(kind):
    error = refusal(pb_body_with_deep_span(kind, 1000), PB)
    assert (error.status, error.reason) == (400, "decode_error")


@pytest.mark.parametrize("kind", ["arrayValue", "kvlistValue"])
def test_a_json_value_nested_deep_but_readable_refuses_its_span_alone(kind):
    # 100 levels are 300-400 JSON levels: json.loads reads them, the walker stops at 32
    body = js_body((GOOD, chat_attrs()),
                   (BAD, [js_attr("gen_ai.request.model", js_nested(kind, 100))]))
    assert_only_the_bad_span_is_refused(body, "invalid_attribute")


def test_a_protobuf_value_nested_beyond_32_but_within_the_parsers_limit_refuses_its_span_alone():
    # upb stops at 100 message levels: 40 arrays (2 messages a level) are within it. A kvlist
    # level is 3 messages, so 32 of them already make the whole body undecodable.
    result = decode(pb_body_with_deep_span("arrayValue", 40), PB)
    assert [w.span_id for w in result.spans] == [GOOD]
    assert result.rejected == [("invalid_attribute", 1)]


@pytest.mark.parametrize(("key", "document", "field"), [
    ("metadata", '{"tenant_id": ' + "[" * 100_000, "tenant"),
    ("llm.invocation_parameters", '{"model": ' + "[" * 100_000, "model"),
    ("metadata", '{"tenant_id": "acme", "x": ' + "[" * 5000 + "]" * 5000 + "}", "tenant"),
], ids=["metadata-unclosed", "invocation-parameters-unclosed", "metadata-well-formed"])
def test_a_json_string_attribute_too_deep_to_parse_is_ignored_like_any_unreadable_json(
    key, document, field
):
    # This was the RecursionError behind the 500: conventions' json.loads of an OpenInference
    # metadata / invocation-parameters string (the OTLP decoder already bounded its own).
    assert getattr(normalize({**CHAT, key: document}), field) is None


def test_a_span_with_a_too_deep_metadata_string_does_not_lose_the_request():
    body = js_body((GOOD, chat_attrs()),
                   (BAD, chat_attrs(metadata='{"tenant_id": ' + "[" * 100_000)))
    records, refused = normalise_all(decode(body))
    assert set(records) == {GOOD, BAD} and refused == {}
    assert records[BAD].tenant is None


# --- numbers beyond float and int --------------------------------------------------------------


@pytest.mark.parametrize("value", [
    pytest.param('{"doubleValue": 1' + "0" * 400 + "}", id="double-400-digits"),
    pytest.param('{"doubleValue": -1' + "0" * 400 + "}", id="double-minus-400-digits"),
    pytest.param('{"doubleValue": 1' + "0" * 5000 + "}", id="double-5000-digits"),
    pytest.param('{"intValue": 1' + "0" * 5000 + "}", id="int-5000-digits"),
])
def test_a_number_too_large_for_its_kind_refuses_its_span_alone(value):
    # 400 digits: float() overflows. 5000: json.loads itself refuses an integer over Python's
    # 4300-digit limit, so the body is read again leniently rather than refused whole.
    body = js_body((GOOD, chat_attrs()), (BAD, [js_attr("gen_ai.request.model", value)]))
    assert_only_the_bad_span_is_refused(body, "invalid_attribute")


def test_an_integer_too_long_for_python_elsewhere_in_the_body_is_still_a_400_naming_it():
    body = (f'{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{{"traceId": "{TRACE.hex()}", '
            f'"spanId": "{GOOD.hex()}", "startTimeUnixNano": 1{"0" * 5000}}}]}}]}}]}}').encode()
    error = refusal(body)
    assert (error.status, error.reason) == (400, "decode_error")
    assert "startTimeUnixNano" in error.message


def test_json_that_is_not_json_is_still_a_400():
    error = refusal(b'{"resourceSpans": [1' + b"0" * 5000 + b",]}")
    assert (error.status, error.reason) == (400, "decode_error")


# --- strings that cannot be UTF-8 -----------------------------------------------------------


IDENT_ATTRIBUTES = [
    ({**CHAT, "gen_ai.request.model": "\ud800"}, "model"),
    ({**CHAT, "gen_ai.response.model": "gpt\udfff"}, "response_model"),
    ({**CHAT, "gen_ai.provider.name": "\ud800"}, "provider"),
    ({**CHAT, "llm.invocation_parameters": '{"model": "\\ud800"}'}, "model"),
    ({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "\ud800"}, "agent_id"),
    ({"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.id": "\ud800"}, "workflow_id"),
    ({"enduser.id": "\ud800"}, "caller"),
    ({"tenant.id": "\ud800"}, "tenant"),
    ({"metadata": '{"tenant_id": "\\ud800"}'}, "tenant"),
    ({"gen_ai.conversation.id": "\ud800"}, "conversation"),
]


@pytest.mark.parametrize(("attrs", "field"), IDENT_ATTRIBUTES)
def test_an_id_that_cannot_be_utf8_is_refused_before_it_becomes_a_label(attrs, field):
    # a lone surrogate (a JSON "\ud800" escape) was stored, then every /metrics scrape
    # failed to encode it
    with pytest.raises(InvalidSpan) as info:
        normalize(attrs)
    assert info.value.reason == "invalid_attribute"


@pytest.mark.parametrize("resource", [{"enduser.id": "\ud800"}, {"tenant.id": "\udc00"}])
def test_a_resource_id_that_cannot_be_utf8_is_refused(resource):
    with pytest.raises(InvalidSpan) as info:
        normalize(CHAT, resource)
    assert info.value.reason == "invalid_attribute"


@pytest.mark.parametrize(("attrs", "name"), [
    ({"gen_ai.operation.name": "invoke_agent"}, "invoke_agent \ud800"),
    ({"gen_ai.operation.name": "invoke_workflow"}, "invoke_workflow \ud800"),
])
def test_an_id_read_from_a_span_name_that_cannot_be_utf8_is_refused(attrs, name):
    with pytest.raises(InvalidSpan) as info:
        normalize(attrs, name=name)
    assert info.value.reason == "invalid_attribute"


def test_valid_non_ascii_ids_are_kept():
    record = normalize({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "機器人-ü"})
    assert record.agent_id == "機器人-ü"


@pytest.mark.parametrize("key", ["gen_ai.agent.id", "enduser.id", "tenant.id",
                                 "gen_ai.request.model", "gen_ai.conversation.id"])
@pytest.mark.parametrize("written", ["escaped", "raw"])
def test_a_json_surrogate_in_an_id_refuses_its_span_and_the_request_keeps_the_others(
    key, written
):
    attrs = chat_attrs(**{key: "\ud800"})
    if key == "gen_ai.agent.id":
        attrs[0] = js_str_attr("gen_ai.operation.name", "invoke_agent")
    body = js_body((GOOD, chat_attrs()), (BAD, attrs))
    assert b"\\ud800" in body  # the escape, as a client would send it
    if written == "raw":  # its UTF-8-like bytes: json.loads decodes bytes with surrogatepass
        body = body.replace(b"\\ud800", "\ud800".encode("utf-8", "surrogatepass"))
    assert_only_the_bad_span_is_refused(body, "invalid_attribute")


# --- in-process values the OTLP decoders never produce -----------------------------------------


@pytest.mark.parametrize("attrs", [
    {"enduser.id": 10**5000},  # str() of it raises ValueError (4300-digit limit)
    {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": -(10**5000)},
], ids=["caller", "agent"])
def test_an_integer_id_too_long_to_print_is_refused(attrs):
    with pytest.raises(InvalidSpan) as info:
        normalize(attrs)
    assert info.value.reason == "invalid_attribute"


@pytest.mark.parametrize("attrs", [
    {"workflow_mode": 10**5000, "dify.workflow_id": "w"},
    {"openinference.span.kind": 10**5000},
    {"gen_ai.operation.name": ["chat"]},  # unhashable: no table lookup may raise on it
    {"traceloop.span.kind": {"agent": 1}},
], ids=["workflow-mode", "openinference-kind", "list-operation", "dict-traceloop-kind"])
def test_classifying_values_of_odd_types_reads_them_as_unknown_instead_of_raising(attrs):
    assert isinstance(normalize(attrs), SpanRecord)


class _Exploding(Mapping):
    """Attributes whose reading fails in a way conventions does not anticipate."""

    def __getitem__(self, key):
        raise KeyError(key)

    def __len__(self):
        return 1

    def __iter__(self):
        raise RuntimeError("attributes changed while read")


def test_normalize_raises_only_invalid_span_whatever_goes_wrong():
    with pytest.raises(InvalidSpan) as info:
        normalize(_Exploding())
    assert info.value.reason == "invalid_attribute"
    with pytest.raises(InvalidSpan) as info:
        normalize(CHAT, _Exploding())
    assert info.value.reason == "invalid_attribute"


def test_from_fields_raises_only_invalid_span_whatever_goes_wrong():
    with pytest.raises(InvalidSpan) as info:
        from_fields(scan(CHAT), _Exploding())
    assert info.value.reason == "invalid_attribute"
    with pytest.raises(InvalidSpan) as info:
        from_fields({"op": "invoke_agent"}, name=42)  # a name that is not a string
    assert info.value.reason == "invalid_attribute"


# --- an unexpected failure reading one span's attributes -----------------------------------------


def _failing_on(real, key: str):
    """Wrap an attribute reader so that it fails unexpectedly on attributes holding ``key``."""
    def reader(owner, *args):
        attributes = real(owner, *args)
        if key in attributes:
            raise RuntimeError("unexpected")
        return attributes
    return reader


def _kv(key: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value="1"))


def _pb_body(resource_attributes=()) -> bytes:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=list(resource_attributes)),
        scope_spans=[ScopeSpans(spans=[
            Span(trace_id=TRACE, span_id=GOOD, name="s",
                 attributes=[_kv("gen_ai.request.model")]),
            Span(trace_id=TRACE, span_id=BAD, name="s", attributes=[_kv("metadata")]),
        ])],
    )]).SerializeToString()


def test_an_unexpected_failure_reading_one_protobuf_span_refuses_that_span_alone(monkeypatch):
    monkeypatch.setattr(otlp, "_pb_attributes", _failing_on(otlp._pb_attributes, "metadata"))
    result = decode(_pb_body(), PB)
    assert [w.span_id for w in result.spans] == [GOOD]
    assert result.rejected == [("invalid_attribute", 1)]


def test_an_unexpected_failure_reading_one_json_span_refuses_that_span_alone(monkeypatch):
    monkeypatch.setattr(otlp, "_js_attributes", _failing_on(otlp._js_attributes, "metadata"))
    body = js_body((GOOD, [js_str_attr("gen_ai.request.model", "1")]),
                   (BAD, [js_str_attr("metadata", "1")]))
    result = decode(body)
    assert [w.span_id for w in result.spans] == [GOOD]
    assert result.rejected == [("invalid_attribute", 1)]


@pytest.mark.parametrize("content_type", [PB, JS])
def test_an_unexpected_failure_reading_a_resource_refuses_the_spans_of_that_resource(
    monkeypatch, content_type
):
    reader = "_pb_attributes" if content_type == PB else "_js_attributes"
    monkeypatch.setattr(otlp, reader, _failing_on(getattr(otlp, reader), "tenant.id"))
    if content_type == PB:
        body = _pb_body([_kv("tenant.id")])
    else:
        body = js_body((GOOD, []), (BAD, []), resource=[js_str_attr("tenant.id", "1")])
    result = decode(body, content_type)
    assert (result.spans, result.rejected) == ([], [("invalid_attribute", 2)])
