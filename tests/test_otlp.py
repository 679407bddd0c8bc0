"""exporter.otlp: OTLP/HTTP request decoding and answers, against the real SDK encoder."""

from __future__ import annotations

import base64
import gzip
import json
import tracemalloc
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from exporter.otlp import OtlpError, WireSpan, decode_request, encode_response, encode_status
from otel_processor.conventions import READ_NAMES

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
PB, JS = "application/x-protobuf", "application/json"
LIMITS = {"max_body_bytes": 4 << 20, "max_decompressed_bytes": 16 << 20, "max_spans": 1000}
TRACE, SPAN, PARENT = bytes(range(1, 17)), bytes(range(1, 9)), bytes(range(11, 19))
#: What decoding keeps: the names the engine reads, and the resource's service.name.
KEPT = READ_NAMES | {"service.name"}
# Read names that these tests give values of every kind (any read name would do).
READ_A, READ_B, READ_C = "gen_ai.request.model", "metadata", "llm.invocation_parameters"


def kept(attributes) -> dict:
    return {k: v for k, v in dict(attributes).items() if k in KEPT}


def decode(body, content_type=PB, encoding=None, **limits):
    return decode_request(body, content_type, encoding, **{**LIMITS, **limits})


def refusal(body, content_type=PB, encoding=None, **limits) -> OtlpError:
    with pytest.raises(OtlpError) as caught:
        decode(body, content_type, encoding, **limits)
    return caught.value


@pytest.fixture(scope="module")
def sdk_spans():
    """Two finished spans from a real TracerProvider: a root and an erroring child."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bot", "tenant.id": "t1"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("invoke_agent", attributes={"gen_ai.agent.id": "bot"}):
        with tracer.start_as_current_span("chat", attributes={
            "gen_ai.usage.input_tokens": 1200, "gen_ai.request.temperature": 0.5,
            "gen_ai.request.stream": False, "gen_ai.request.stop_sequences": ("END", "STOP"),
            "ids": (1, 2, 3), "enduser.id": "alice",
        }) as child:
            child.set_status(StatusCode.ERROR, "boom")
    provider.shutdown()
    return exporter.get_finished_spans()


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """The OTLP JSON form: protobuf's JSON mapping with integer enums and hex ids."""
    doc = json_format.MessageToDict(request, use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(doc).encode()


def pb_request(*spans: Span, resource_attributes=()) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=PbResource(attributes=list(resource_attributes)),
        scope_spans=[ScopeSpans(spans=list(spans))],
    )])


def pb_span(trace_id=TRACE, span_id=SPAN, parent=b"", **fields) -> Span:
    return Span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name="s", **fields)


def kv(key: str, **value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


# --- round trips ----------------------------------------------------------------------------


def test_protobuf_from_the_sdk_encoder_gives_back_ids_attributes_resource_status_and_times(
    sdk_spans,
):
    body = encode_spans(sdk_spans).SerializeToString()
    result = decode(body)
    assert result.rejected == [] and result.error_message == ""
    by_id = {w.span_id: w for w in result.spans}
    assert len(by_id) == 2
    for span in sdk_spans:
        wire = by_id[span.context.span_id.to_bytes(8, "big")]
        assert wire.trace_id == span.context.trace_id.to_bytes(16, "big")
        expected_parent = span.parent.span_id.to_bytes(8, "big") if span.parent else None
        assert wire.parent_span_id == expected_parent
        assert wire.name == span.name
        assert wire.attributes == kept(span.attributes)
        assert wire.resource_attributes == kept(span.resource.attributes)
        assert wire.error is (span.status.status_code is StatusCode.ERROR)
        assert (wire.start_ns, wire.end_ns) == (span.start_time, span.end_time)
    chat = next(w for w in result.spans if w.name == "chat")
    assert chat.attributes == {"gen_ai.usage.input_tokens": 1200, "enduser.id": "alice"}
    # telemetry.sdk.name is read (OpenLIT's resources say "openlit"): kept with the rest
    assert chat.resource_attributes == {"service.name": "bot", "tenant.id": "t1",
                                        "telemetry.sdk.name": "opentelemetry"}
    assert chat.error is True


def test_spans_of_one_resource_share_one_resource_attributes_dict(sdk_spans):
    first, second = decode(encode_spans(sdk_spans).SerializeToString()).spans
    assert first.resource_attributes is second.resource_attributes


def test_json_form_of_the_sdk_request_decodes_to_the_same_wire_spans(sdk_spans):
    request = encode_spans(sdk_spans)
    from_json = decode(otlp_json(request), JS).spans
    assert from_json == decode(request.SerializeToString()).spans
    assert from_json[0].resource_attributes is from_json[1].resource_attributes


def test_handwritten_json_per_spec_decodes_to_the_attributes_that_are_read():
    # The fixture carries a value of every kind; those under names nobody reads are skipped
    # (every kind under a read name: test_every_read_name_is_decoded_with_its_value).
    (span,) = decode((FIXTURES / "chat_span.json").read_bytes(), JS).spans
    resource = {"service.name": "support-bot", "tenant.id": "acme"}
    assert span == WireSpan(
        trace_id=bytes.fromhex("5b8efff798038103d269b633813fc60c"),
        span_id=bytes.fromhex("eee19b7ec3c1b174"),
        parent_span_id=bytes.fromhex("eee19b7ec3c1b173"),
        name="chat gpt-4o",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 35,
        },
        resource_attributes=resource,
        error=True,
        start_ns=1_700_000_000_000_000_000,
        end_ns=1_700_000_001_500_000_000,
    )


def test_coze_loop_js_caller_is_read_from_the_span_trace_state_in_both_encodings():
    # @cozeloop/ai keeps its baggages in the span context's tracestate: OTLP's trace_state
    coze = pb_span(trace_state="user_id=alice,message_id=m-1",
                   attributes=[kv("cozeloop_span_type", string_value="model")])
    other = pb_span(span_id=b"\x02" * 8, trace_state="user_id=alice",
                    attributes=[kv("gen_ai.operation.name", string_value="chat")])
    request = pb_request(coze, other)
    for spans in (decode(request.SerializeToString()).spans, decode(otlp_json(request), JS).spans):
        assert spans[0].attributes == {"cozeloop_span_type": "model",
                                       "cozeloop.tracestate.user_id": "alice"}
        assert spans[1].attributes == {"gen_ai.operation.name": "chat"}  # not Coze Loop JS


def test_nested_values_flatten_the_same_from_protobuf_and_json():
    inner = KeyValueList(values=[kv("b", bytes_value=b"\x01\xff"), kv("n", int_value=-3)])
    nested = [
        kv(READ_A, array_value=ArrayValue(values=[
            AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)])),
            AnyValue(kvlist_value=KeyValueList(values=[kv("k", string_value="v")])),
            AnyValue(),
        ])),
        kv(READ_B, kvlist_value=KeyValueList(values=[
            kv("inner", kvlist_value=inner),
            kv("list", array_value=ArrayValue(values=[AnyValue(double_value=1.5)])),
        ])),
        KeyValue(key=READ_C),  # an empty AnyValue: the key is left out
    ]
    request = pb_request(pb_span(attributes=nested))
    expected = {READ_A: ((1,), '{"k":"v"}', None),
                READ_B: '{"inner":{"b":"01ff","n":-3},"list":[1.5]}'}
    assert decode(request.SerializeToString()).spans[0].attributes == expected
    assert decode(otlp_json(request), JS).spans[0].attributes == expected


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", " gzip "])
def test_gzip_bodies_inflate_in_both_encodings(sdk_spans, encoding):
    request = encode_spans(sdk_spans)
    plain = decode(request.SerializeToString()).spans
    assert decode(gzip.compress(request.SerializeToString()), PB, encoding).spans == plain
    assert decode(gzip.compress(otlp_json(request)), JS, encoding).spans == plain


def test_concatenated_gzip_members_inflate_as_one_body():
    body = pb_request(pb_span()).SerializeToString()
    doubled = gzip.compress(body[:7]) + gzip.compress(body[7:])
    assert len(decode(doubled, PB, "gzip").spans) == 1


@pytest.mark.parametrize("content_type", [
    "application/json; charset=utf-8", "Application/JSON", " application/json ",
])
def test_json_content_type_ignores_parameters_and_case(content_type):
    assert decode(b"{}", content_type).spans == []


@pytest.mark.parametrize("encoding", [None, "identity", ""])
def test_empty_requests_are_a_full_success(encoding):
    for body, content_type in ((b"", PB), (b"{}", JS), (b'{"resourceSpans": []}', JS)):
        result = decode(body, content_type, encoding)
        assert (result.spans, result.rejected, result.error_message) == ([], [], "")


# --- whole-request refusals -----------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/grpc",
                                          "application/protobuf", "application/jsonx"])
def test_other_content_types_are_refused_with_415(content_type):
    error = refusal(b"{}", content_type)
    assert (error.status, error.reason) == (415, "unsupported_media_type")


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, br"])
def test_other_content_encodings_are_refused_with_415(encoding):
    error = refusal(b"{}", JS, encoding)
    assert (error.status, error.reason) == (415, "unsupported_encoding")


def test_a_gzip_bomb_is_stopped_at_the_limit_without_inflating_it():
    bomb = gzip.compress(bytes(10 << 20), compresslevel=9)
    assert len(bomb) < 20_000
    tracemalloc.start()
    try:
        error = refusal(bomb, PB, "gzip", max_decompressed_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (error.status, error.reason) == (413, "too_large")
    assert peak < 3 << 20  # the 10 MB never exist: at most ~2x the 1 MB limit


def test_a_body_over_the_size_limit_is_refused_with_413_before_decoding():
    error = refusal(b"\xff" * 1001, PB, max_body_bytes=1000)
    assert (error.status, error.reason) == (413, "too_large")


def test_a_plain_body_over_the_decompressed_limit_is_refused_with_413():
    error = refusal(b"{}" + b" " * 100, JS, max_decompressed_bytes=100)
    assert (error.status, error.reason) == (413, "too_large")


@pytest.mark.parametrize("body", [
    pytest.param(gzip.compress(b"x" * 1000)[:-12], id="truncated"),
    pytest.param(b"\x1f\x8b\x08\x00garbage", id="corrupt"),
    pytest.param(b"{}", id="not-gzip"),
    pytest.param(gzip.compress(b"{}") + b"trailing", id="trailing-garbage"),
])
def test_bad_gzip_is_refused_with_400(body):
    error = refusal(body, JS, "gzip")
    assert (error.status, error.reason) == (400, "decode_error")


def test_truncated_protobuf_is_refused_with_400(sdk_spans):
    body = encode_spans(sdk_spans).SerializeToString()
    error = refusal(body[: len(body) // 2])
    assert (error.status, error.reason) == (400, "decode_error")


@pytest.mark.parametrize("content_type", [PB, JS])
def test_more_spans_than_the_limit_are_refused_with_413(content_type):
    request = pb_request(pb_span(), pb_span(), pb_span())
    body = request.SerializeToString() if content_type == PB else otlp_json(request)
    error = refusal(body, content_type, max_spans=2)
    assert (error.status, error.reason) == (413, "too_many_spans")
    assert len(decode(body, content_type, max_spans=3).spans) == 3


_SPAN = '{"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708"'


@pytest.mark.parametrize(("body", "named"), [
    (b"not json", "not JSON"),
    (b"\xff\xfe{", "not JSON"),
    (b"[" * 100_000, "not JSON"),
    (b"[]", "body: expected an object"),
    (b'{"resourceSpans": "x"}', "body.resourceSpans: expected an array"),
    (b'{"resourceSpans": [1]}', "resourceSpans[0]: expected an object"),
    (b'{"resourceSpans": [{"resource": []}]}', "resourceSpans[0].resource: expected an object"),
    (b'{"resourceSpans": [{"resource": {"attributes": {}}}]}',
     "resourceSpans[0].resource.attributes: expected an array"),
    (b'{"resourceSpans": [{"scopeSpans": {}}]}', "resourceSpans[0].scopeSpans: expected an array"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": 3}]}]}',
     "resourceSpans[0].scopeSpans[0].spans: expected an array"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": ["s"]}]}]}',
     "resourceSpans[0].scopeSpans[0].spans[0]: expected an object"),
    (('{"resourceSpans": [{"scopeSpans": [{"spans": [' + _SPAN + ', "attributes": "a"}]}]}]}')
     .encode(), "spans[0].attributes: expected an array"),
    (('{"resourceSpans": [{"scopeSpans": [{"spans": [' + _SPAN + ', "attributes": [1]}]}]}]}')
     .encode(), "spans[0].attributes[0]: expected an object"),
    (('{"resourceSpans": [{"scopeSpans": [{"spans": [' + _SPAN + ', "name": 5}]}]}]}').encode(),
     "spans[0].name: expected a string"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 12}]}]}]}',
     "spans[0].traceId: expected a string"),
    (('{"resourceSpans": [{"scopeSpans": [{"spans": [' + _SPAN
      + ', "startTimeUnixNano": "soon"}]}]}]}').encode(), "spans[0].startTimeUnixNano"),
    (('{"resourceSpans": [{"scopeSpans": [{"spans": [' + _SPAN
      + ', "endTimeUnixNano": -1}]}]}]}').encode(), "spans[0].endTimeUnixNano"),
    (('{"resourceSpans": [{"scopeSpans": [{"spans": [' + _SPAN
      + ', "status": {"code": "BAD"}}]}]}]}').encode(), "spans[0].status.code"),
])
def test_json_of_the_wrong_shape_is_refused_with_400_naming_the_field(body, named):
    error = refusal(body, JS)
    assert (error.status, error.reason) == (400, "decode_error")
    assert named in error.message


# --- per-span refusals (partial success) ----------------------------------------------------


@pytest.mark.parametrize(("span", "reason"), [
    (pb_span(trace_id=b""), "missing_trace_id"),
    (pb_span(trace_id=TRACE[:8]), "invalid_trace_id"),
    (pb_span(trace_id=bytes(16)), "invalid_trace_id"),
    (pb_span(span_id=b""), "invalid_span_id"),
    (pb_span(span_id=TRACE), "invalid_span_id"),
    (pb_span(span_id=bytes(8)), "invalid_span_id"),
    (pb_span(parent=SPAN[:4]), "invalid_parent_span_id"),
])
@pytest.mark.parametrize("content_type", [PB, JS])
def test_a_span_with_a_bad_id_is_refused_alone(span, reason, content_type):
    request = pb_request(pb_span(span_id=PARENT), span, pb_span(parent=PARENT))
    body = request.SerializeToString() if content_type == PB else otlp_json(request)
    result = decode(body, content_type)
    assert [w.span_id for w in result.spans] == [PARENT, SPAN]
    assert result.rejected == [(reason, 1)]
    assert result.error_message == f"1 spans refused ({reason}: 1)"


def test_refusals_are_counted_by_reason():
    request = pb_request(pb_span(trace_id=b""), pb_span(trace_id=b""), pb_span(span_id=b"x"),
                         pb_span())
    result = decode(request.SerializeToString())
    assert len(result.spans) == 1
    assert result.rejected == [("missing_trace_id", 2), ("invalid_span_id", 1)]
    assert result.error_message == "3 spans refused (missing_trace_id: 2, invalid_span_id: 1)"


@pytest.mark.parametrize("content_type", [PB, JS])
def test_an_all_zero_parent_span_id_reads_as_a_root(content_type):
    request = pb_request(pb_span(parent=bytes(8)))
    body = request.SerializeToString() if content_type == PB else otlp_json(request)
    assert decode(body, content_type).spans[0].parent_span_id is None


def test_json_ids_are_case_insensitive_hex_and_non_hex_ids_are_refused():
    def span(trace_id):
        return {"traceId": trace_id, "spanId": "0102030405060708"}
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        span("0102030405060708090A0B0C0D0E0F10"), span("AQIDBAUGBwgJCgsMDQ4PEA=="),
        span("0102030405060708090a0b0c0d0e0fzz"), span("01 02030405060708090a0b0c0d0e0f10"),
    ]}]}]}
    result = decode(json.dumps(doc).encode(), JS)
    assert [w.trace_id for w in result.spans] == [TRACE]
    assert result.rejected == [("invalid_trace_id", 3)]


def test_snake_case_keys_are_unknown_fields_in_json_and_ignored():
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"trace_id": TRACE.hex(), "spanId": SPAN.hex(), "name": "s"}]}]}]}
    assert decode(json.dumps(doc).encode(), JS).rejected == [("missing_trace_id", 1)]


def test_json_64_bit_integers_read_as_numbers_or_decimal_strings_up_to_their_limits():
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": TRACE.hex(), "spanId": SPAN.hex(),
        "startTimeUnixNano": "18446744073709551615", "endTimeUnixNano": 1.7e18,
        "attributes": [{"key": READ_A, "value": {"intValue": "-9223372036854775808"}},
                       {"key": READ_B, "value": {"intValue": 3.0}},
                       {"key": READ_C, "value": {"doubleValue": "-Infinity"}}],
    }]}]}]}
    (span,) = decode(json.dumps(doc).encode(), JS).spans
    assert (span.start_ns, span.end_ns) == (2**64 - 1, 1_700_000_000_000_000_000)
    assert span.attributes == {READ_A: -(2**63), READ_B: 3, READ_C: float("-inf")}
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"] = str(2**64)
    assert "startTimeUnixNano" in refusal(json.dumps(doc).encode(), JS).message


def test_json_status_code_may_be_given_by_name():
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": TRACE.hex(), "spanId": SPAN.hex(), "status": {"code": "STATUS_CODE_ERROR"}},
        {"traceId": TRACE.hex(), "spanId": PARENT.hex(), "status": {"code": 1}},
    ]}]}]}
    assert [w.error for w in decode(json.dumps(doc).encode(), JS).spans] == [True, False]


@pytest.mark.parametrize("value", [
    {"intValue": "twelve"}, {"intValue": "1.5"}, {"intValue": 2**63}, {"intValue": True},
    {"stringValue": 3}, {"boolValue": "true"}, {"doubleValue": "fast"}, {"bytesValue": "%%"},
    {"stringValue": "a", "intValue": "1"}, {"arrayValue": []}, {"arrayValue": {"values": 1}},
    {"kvlistValue": {"values": [{"key": 1}]}}, "plain", {"intValue": "9" * 5000},
    {"intValue": "-9223372036854775809"}, {"doubleValue": True},
    {"doubleValue": 10**400},  # beyond a double: float() raises OverflowError, not ValueError
])
@pytest.mark.parametrize("read", [True, False], ids=["read", "unread"])
def test_a_json_span_with_an_unreadable_attribute_is_refused_alone_when_it_is_read(value, read):
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": TRACE.hex(), "spanId": SPAN.hex(),
         "attributes": [{"key": READ_A if read else "app.unread", "value": value},
                        {"key": READ_B, "value": {"stringValue": "kept"}}]},
        {"traceId": TRACE.hex(), "spanId": PARENT.hex()},
    ]}]}]}
    result = decode(json.dumps(doc).encode(), JS)
    if read:
        assert [w.span_id for w in result.spans] == [PARENT]
        assert result.rejected == [("invalid_attribute", 1)]
    else:  # a name nobody reads: its value is neither converted nor checked
        assert [(w.span_id, w.attributes) for w in result.spans] == [
            (SPAN, {READ_B: "kept"}), (PARENT, {})]
        assert result.rejected == []


def test_an_unreadable_resource_attribute_refuses_the_spans_of_that_resource_only():
    spans = [{"traceId": TRACE.hex(), "spanId": SPAN.hex()}]
    doc = {"resourceSpans": [
        {"resource": {"attributes": [{"key": 1}]}, "scopeSpans": [{"spans": spans * 2}]},
        {"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]},
    ]}
    result = decode(json.dumps(doc).encode(), JS)
    assert len(result.spans) == 1 and result.rejected == [("invalid_attribute", 2)]


@pytest.mark.parametrize("content_type", [PB, JS])
def test_values_nested_deeper_than_32_levels_refuse_the_span(content_type):
    def nest(depth):
        value = AnyValue(string_value="leaf")
        for _ in range(depth):
            value = AnyValue(array_value=ArrayValue(values=[value]))
        return value
    request = pb_request(pb_span(attributes=[KeyValue(key=READ_A, value=nest(33))]),
                         pb_span(span_id=PARENT, attributes=[KeyValue(key=READ_A, value=nest(32))]))
    body = request.SerializeToString() if content_type == PB else otlp_json(request)
    result = decode(body, content_type)
    assert [w.span_id for w in result.spans] == [PARENT]
    assert result.rejected == [("invalid_attribute", 1)]


def _nest(depth: int) -> AnyValue:
    value = AnyValue(string_value="leaf")
    for _ in range(depth):
        value = AnyValue(array_value=ArrayValue(values=[value]))
    return value


@pytest.mark.parametrize("content_type", [PB, JS])
def test_an_unreadable_value_under_a_name_nobody_reads_refuses_nothing(content_type):
    # Too deep to read (33 levels), under names the engine never reads: skipped by name,
    # on the span and on its resource alike; what is read is kept.
    deep = KeyValue(key="app.payload", value=_nest(33))
    request = pb_request(
        pb_span(attributes=[deep, kv(READ_A, string_value="gpt-4o"), deep]),
        resource_attributes=[deep, kv("service.name", string_value="bot")],
    )
    body = request.SerializeToString() if content_type == PB else otlp_json(request)
    result = decode(body, content_type)
    assert result.rejected == [] and result.error_message == ""
    (span,) = result.spans
    assert span.attributes == {READ_A: "gpt-4o"}
    assert span.resource_attributes == {"service.name": "bot"}


def _value_of_kind(i: int) -> tuple[AnyValue, object]:
    """The i-th of a cycle of AnyValues of every kind, and what decoding gives for it."""
    cases = [
        (AnyValue(string_value=f"s{i}"), f"s{i}"),
        (AnyValue(int_value=i - 5), i - 5),  # zero and negatives included
        (AnyValue(double_value=i + 0.5), i + 0.5),
        (AnyValue(bool_value=i % 2 == 0), i % 2 == 0),
        (AnyValue(bytes_value=bytes([i, 255])), bytes([i, 255]).hex()),
        (AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="a"),
                                                 AnyValue(int_value=i)])), ("a", i)),
        (AnyValue(kvlist_value=KeyValueList(values=[kv("k", int_value=i)])), f'{{"k":{i}}}'),
        (AnyValue(string_value=""), ""),  # an empty string is a value (scan ignores it)
    ]
    return cases[i % len(cases)]


@pytest.mark.parametrize("content_type", [PB, JS])
def test_every_read_name_is_decoded_with_its_value(content_type):
    names = sorted(KEPT)
    assert "service.name" in names and len(READ_NAMES) > 50  # the tables, not a handful
    pairs = [(name, _value_of_kind(i)) for i, name in enumerate(names)]
    attributes = [KeyValue(key=name, value=value) for name, (value, _) in pairs]
    unread = [kv("http.request.method", string_value="POST"), kv("server.port", int_value=443),
              kv("gen_ai.request.temperature", double_value=0.7)]
    request = pb_request(pb_span(attributes=unread + attributes + unread),
                         resource_attributes=attributes + unread)
    body = request.SerializeToString() if content_type == PB else otlp_json(request)
    (span,) = decode(body, content_type).spans
    expected = {name: decoded for name, (_, decoded) in pairs}
    assert span.attributes == expected
    assert span.resource_attributes == expected


# --- robustness -----------------------------------------------------------------------------


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512), st.sampled_from([None, "gzip"]))
def test_random_protobuf_bytes_never_raise_anything_but_otlp_error(body, encoding):
    try:
        result = decode(body, PB, encoding)
    except OtlpError as error:
        assert error.status in (400, 413)
    else:
        assert all(len(w.trace_id) == 16 and len(w.span_id) == 8 for w in result.spans)


@settings(max_examples=300)
@given(st.data())
def test_a_mutated_real_protobuf_body_never_raises_anything_but_otlp_error(sdk_spans, data):
    body = bytearray(encode_spans(sdk_spans).SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(body))
    except OtlpError as error:
        assert (error.status, error.reason) == (400, "decode_error")


_OTLP_KEYS = st.sampled_from([
    "resourceSpans", "resource", "attributes", "scopeSpans", "spans", "traceId", "spanId",
    "parentSpanId", "name", "status", "code", "startTimeUnixNano", "key", "value", "stringValue",
    "intValue", "doubleValue", "boolValue", "bytesValue", "arrayValue", "kvlistValue", "values",
])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=34)
    | st.sampled_from([TRACE.hex(), SPAN.hex(), "STATUS_CODE_ERROR", "42"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_OTLP_KEYS, inner, max_size=5),
    max_leaves=40,
)


_SCALAR = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
           | st.sampled_from(["42", "-7", "1.5", "NaN", "3q2+7w==", TRACE.hex(), SPAN.hex()]))
_ANY_VALUE = st.deferred(lambda: _SCALAR | st.fixed_dictionaries({}, optional={
    "stringValue": _SCALAR, "intValue": _SCALAR, "doubleValue": _SCALAR, "boolValue": _SCALAR,
    "bytesValue": _SCALAR,
    "arrayValue": st.fixed_dictionaries({}, optional={"values": st.lists(_ANY_VALUE, max_size=3)}),
    "kvlistValue": st.fixed_dictionaries({}, optional={"values": st.lists(_KEY_VALUE, max_size=3)}),
}))
_KEY_VALUE = st.fixed_dictionaries({"key": st.text(max_size=3) | _SCALAR},
                                   optional={"value": _ANY_VALUE})
_ATTRIBUTES = st.lists(_KEY_VALUE, max_size=3)
_OTLP_SPAN = st.fixed_dictionaries(
    {"traceId": st.sampled_from([TRACE.hex(), "", "00" * 16, "zz"]) | _SCALAR,
     "spanId": st.sampled_from([SPAN.hex(), PARENT.hex(), "0" * 16]) | _SCALAR},
    optional={"parentSpanId": _SCALAR, "name": _SCALAR, "attributes": _ATTRIBUTES | _SCALAR,
              "status": st.fixed_dictionaries({}, optional={"code": _SCALAR}) | _SCALAR,
              "startTimeUnixNano": _SCALAR, "endTimeUnixNano": _SCALAR},
)
_OTLP_DOC = st.fixed_dictionaries({"resourceSpans": st.lists(st.fixed_dictionaries(
    {"scopeSpans": st.lists(st.fixed_dictionaries({"spans": st.lists(_OTLP_SPAN, max_size=4)}),
                            max_size=2)},
    optional={"resource": st.fixed_dictionaries({"attributes": _ATTRIBUTES})},
), max_size=2)})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON | _OTLP_DOC)
def test_random_json_never_raises_anything_but_otlp_error(doc):
    try:
        result = decode(json.dumps(doc).encode(), JS, max_spans=6)
    except OtlpError as error:
        assert (error.status, error.reason) in ((400, "decode_error"), (413, "too_many_spans"))
    else:
        assert all(w.trace_id == TRACE for w in result.spans)


# --- answers --------------------------------------------------------------------------------


def test_full_success_leaves_partial_success_unset_in_both_encodings():
    body, content_type = encode_response(PB, 0, "")
    assert content_type == PB
    assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
    body, content_type = encode_response("application/json; charset=utf-8", 0, "")
    assert (json.loads(body), content_type) == ({}, JS)


@pytest.mark.parametrize("content_type", [PB, JS])
def test_partial_success_round_trips_rejected_spans_and_message(content_type):
    body, answered = encode_response(content_type, 3, "3 spans refused (missing_trace_id: 3)")
    assert answered == content_type
    if content_type == PB:
        response = ExportTraceServiceResponse.FromString(body)
    else:
        response = json_format.Parse(body, ExportTraceServiceResponse())
    assert response.partial_success.rejected_spans == 3
    assert response.partial_success.error_message == "3 spans refused (missing_trace_id: 3)"


@pytest.mark.parametrize(("request_type", "answered"), [
    (PB, PB), (JS, JS), ("APPLICATION/JSON; charset=utf-8", JS), ("text/plain", PB), (None, PB),
])
def test_status_bodies_round_trip_in_the_request_encoding(request_type, answered):
    body, content_type = encode_status(request_type, "body is not JSON")
    assert content_type == answered
    if answered == PB:
        status = status_pb2.Status.FromString(body)
    else:
        status = json_format.Parse(body, status_pb2.Status())
    assert status.message == "body is not JSON"


def test_refusal_errors_carry_status_reason_and_message():
    error = refusal(b"{}", "text/xml")
    assert error.message == str(error) and "text/xml" in error.message
    assert status_pb2.Status.FromString(encode_status(None, error.message)[0]).message == (
        error.message)


@pytest.mark.parametrize("content_type", [PB, JS])
def test_the_partial_success_answer_counts_what_decode_refused(content_type):
    request = pb_request(pb_span(), pb_span(trace_id=b""))
    body = request.SerializeToString() if content_type == PB else otlp_json(request)
    result = decode(body, content_type)
    rejected = sum(n for _, n in result.rejected)
    answer, _ = encode_response(content_type, rejected, result.error_message)
    parsed = (ExportTraceServiceResponse.FromString(answer) if content_type == PB
              else json_format.Parse(answer, ExportTraceServiceResponse()))
    assert parsed.partial_success.rejected_spans == 1
    assert parsed.partial_success.error_message == "1 spans refused (missing_trace_id: 1)"


@pytest.mark.parametrize(("code", "error"), [
    (Status.STATUS_CODE_ERROR, True),
    (Status.STATUS_CODE_OK, False),
    (Status.STATUS_CODE_UNSET, False),
])
def test_only_the_error_status_code_marks_a_span_as_error(code, error):
    request = pb_request(pb_span(status=Status(code=code)))
    assert decode(request.SerializeToString()).spans[0].error is error
