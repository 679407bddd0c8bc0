"""The service end to end on 127.0.0.1: real OTLP/HTTP exporter in, /metrics out."""

from __future__ import annotations

import gzip
import random
import threading
import time

import pytest
import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from tests import service as svc
from tests.scenarios import worked_example

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def test_worked_example_one_span_per_request_in_end_order(server):
    running = server()
    svc.send_live(running.url, worked_example)
    samples = svc.metrics(running.url)
    svc.assert_worked_example(samples)
    assert svc.value(samples, "llm_exporter_spans_received_total", transport="otlp_http") == 15
    assert svc.value(samples, "llm_exporter_traces_pending") == 4  # kept for late children


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_worked_example_split_differently_and_shuffled(server, seed):
    running = server()
    spans = svc.record_spans(worked_example)
    random.Random(seed).shuffle(spans)  # parents before children, children before parents
    svc.send_batches(running.url, spans, svc.random_sizes(len(spans), seed))
    svc.assert_worked_example(svc.metrics(running.url))


def test_the_same_request_twice_counts_once(server):
    running = server()
    body = encode_spans(svc.record_spans(worked_example)).SerializeToString()
    for _ in range(2):
        answer = requests.post(running.url + "/v1/traces", data=body, headers=PROTOBUF)
        assert answer.status_code == 200
    samples = svc.metrics(running.url)
    svc.assert_worked_example(samples)
    assert svc.value(samples, "llm_exporter_duplicate_spans_total") == 15


def test_incomplete_trace_is_attributed_after_the_idle_timeout(server):
    running = server(trace_idle_timeout=0.5)
    spans = [s for s in svc.record_spans(worked_example) if s.parent is not None]
    # roots withheld: nothing can complete; after the timeout, what is known is counted
    svc.send_batches(running.url, spans, [len(spans)])
    # the counters, not the pending gauge: the gauge drops as the writer closes the traces,
    # the counters show once that group is committed, a moment later
    samples = svc.metrics_when(running.url, "llm_unattributed_tokens_total", 1955,
                               timeout=10, reason="no_caller")
    assert svc.value(samples, "llm_exporter_traces_pending") == 0
    assert svc.value(samples, "llm_exporter_traces_flushed_total", reason="timeout") == 4
    # the callers sat on the withheld roots: every token is counted, as no_caller
    assert svc.value(samples, "llm_unattributed_tokens_total", reason="no_caller") == 1955


def test_restart_keeps_totals_and_pending_traces(server, tmp_path):
    first = server()
    spans = svc.record_spans(worked_example)
    roots = [s for s in spans if s.parent is None]
    children = [s for s in spans if s.parent is not None]
    svc.send_batches(first.url, children, [len(children)])
    first.stop()
    second = server()  # same state dir
    svc.send_batches(second.url, roots, [len(roots)])
    svc.assert_worked_example(svc.metrics(second.url))
    second.stop()
    third = server()
    svc.assert_worked_example(svc.metrics(third.url))


def test_gzip_json_and_partial_success(server):
    running = server()
    good = svc.record_spans(worked_example)
    body = encode_spans(good).SerializeToString()
    answer = requests.post(running.url + "/v1/traces", data=gzip.compress(body),
                           headers={**PROTOBUF, "Content-Encoding": "gzip"})
    assert answer.status_code == 200
    svc.assert_worked_example(svc.metrics(running.url))
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "ok",
         "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "-4"}}]},
        {"traceId": "ab" * 15, "spanId": "ce" * 8, "name": "short trace id"},
        {"spanId": "cf" * 8, "name": "no trace id"},
        {"traceId": "ab" * 16, "spanId": "d0" * 9, "name": "long span id"},
    ]}]}]}
    answer = requests.post(running.url + "/v1/traces", json=doc)
    assert answer.status_code == 200
    assert answer.json()["partialSuccess"]["rejectedSpans"] == "4"
    samples = svc.metrics(running.url)
    assert svc.value(samples, "llm_exporter_spans_rejected_total",
                     reason="invalid_token_count") == 1
    assert svc.value(samples, "llm_exporter_spans_rejected_total", reason="invalid_trace_id") == 1
    assert svc.value(samples, "llm_exporter_spans_rejected_total", reason="missing_trace_id") == 1
    assert svc.value(samples, "llm_exporter_spans_rejected_total", reason="invalid_span_id") == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        pytest.param(b"\x0a\x05\x0a\x03", PROTOBUF, 400, "decode_error", id="truncated-protobuf"),
        pytest.param(bytes(random.Random(4).randbytes(300)), PROTOBUF, 400, "decode_error",
                     id="random-bytes"),
        pytest.param(b'{"resourceSpans": "nope"}', {"Content-Type": "application/json"}, 400,
                     "decode_error", id="json-wrong-types"),
        pytest.param(b"hello", {"Content-Type": "text/plain"}, 415, "unsupported_media_type",
                     id="wrong-content-type"),
        pytest.param(gzip.compress(bytes(50 * 1024 * 1024)),
                     {**PROTOBUF, "Content-Encoding": "gzip"}, 413, "too_large", id="gzip-bomb"),
        pytest.param(bytes(3 * 1024 * 1024), PROTOBUF, 413, "too_large", id="oversized-body"),
    ],
)
def test_bad_requests_get_the_right_status_are_counted_and_the_server_keeps_serving(
    server, body, headers, status, reason
):
    running = server(max_body_bytes=2 * 1024 * 1024, max_decompressed_bytes=8 * 1024 * 1024)
    answer = requests.post(running.url + "/v1/traces", data=body, headers=headers)
    assert answer.status_code == status
    samples = svc.metrics_when(running.url, "llm_exporter_spans_rejected_total", 1, reason=reason)
    assert svc.value(samples, "llm_exporter_spans_rejected_total", reason=reason) == 1
    svc.send_live(running.url, worked_example)
    svc.assert_worked_example(svc.metrics(running.url))


def test_bearer_token_is_required_when_configured(server):
    running = server(auth_token="s3cret")
    body = encode_spans(svc.record_spans(worked_example)).SerializeToString()
    url = running.url + "/v1/traces"
    assert requests.post(url, data=body, headers=PROTOBUF).status_code == 401
    wrong = {**PROTOBUF, "Authorization": "Bearer nope"}
    assert requests.post(url, data=body, headers=wrong).status_code == 401
    samples = svc.metrics_when(running.url, "llm_exporter_spans_rejected_total", 2,
                               reason="unauthorized")
    assert svc.value(samples, "llm_exporter_spans_rejected_total", reason="unauthorized") == 2
    assert svc.tokens(samples, "llm_member_tokens_total", tenant="acme", member="alice") == 0
    svc.send_live(running.url, worked_example, headers={"Authorization": "Bearer s3cret"})
    svc.assert_worked_example(svc.metrics(running.url))


def test_metrics_negotiates_openmetrics_and_health_endpoints_answer(server):
    running = server()
    plain = requests.get(running.url + "/metrics")
    assert plain.headers["Content-Type"].startswith("text/plain")
    om = requests.get(running.url + "/metrics",
                      headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    assert requests.get(running.url + "/healthz").status_code == 200
    assert requests.get(running.url + "/readyz").status_code == 200


def test_it_sheds_load_with_503_and_retry_after_and_answers_503_when_not_stored(server):
    running = server(max_inflight_requests=1)
    state = running.service.app.extensions["llm_token_exporter"]
    state["limits"].submit_timeout = 1.0
    pipeline = running.service.pipeline
    pipeline.stop()  # the writer is gone: nothing can be made durable
    assert requests.get(running.url + "/readyz").status_code == 503
    body = encode_spans(svc.record_spans(worked_example)).SerializeToString()
    answers = {}

    def first():
        answers["first"] = requests.post(running.url + "/v1/traces", data=body, headers=PROTOBUF)

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(0.3)  # the first request holds the only in-flight slot
    second = requests.post(running.url + "/v1/traces", data=body, headers=PROTOBUF)
    thread.join()
    assert (second.status_code, second.headers["Retry-After"]) == (503, "2")
    assert (answers["first"].status_code, answers["first"].headers["Retry-After"]) == (503, "2")
    pipeline.start()  # the first request's spans were queued: they are committed now
    retry = requests.post(running.url + "/v1/traces", data=body, headers=PROTOBUF)
    assert retry.status_code == 200  # the client retries the same spans: counted once
    samples = svc.metrics(running.url)
    assert svc.value(samples, "llm_exporter_spans_rejected_total", reason="overloaded") == 1
    assert svc.tokens(samples, "llm_member_tokens_total", tenant="acme", member="alice") == 370
