"""The ingest path against hostile or heavy traffic, on 127.0.0.1: half-open connections,
overload, slow directory servers."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from tests import service as svc
from tests.scenarios import worked_example

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def test_half_open_connections_do_not_block_a_healthy_client(server):
    running = server(connection_timeout=3.0)
    port = running.port
    silent = []
    try:
        for _ in range(150):  # more than waitress's default connection limit of 100
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/x-protobuf\r\nContent-Length: 1000\r\n\r\n")  # then silence
            silent.append(s)
        started = time.monotonic()
        answer = requests.get(running.url + "/readyz", timeout=10)
        assert answer.status_code == 200
        assert time.monotonic() - started < 2.0
        svc.send_live(running.url, worked_example)
        svc.assert_worked_example(svc.metrics(running.url))
        time.sleep(5)  # past connection_timeout: the silent ones are closed by the server
        closed = 0
        for s in silent:
            s.settimeout(1)
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(silent)
    finally:
        for s in silent:
            s.close()


def test_overload_is_shed_with_503_where_requests_queue_and_nothing_is_lost(server):
    running = server(threads=2, max_inflight_requests=2)
    spans = svc.record_spans(worked_example)
    bodies = [encode_spans([span]).SerializeToString() for span in spans]
    statuses: list[int] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        body = bodies[i % len(bodies)]
        for _ in range(50):  # retried until stored, as the OTLP exporter does on 503
            r = requests.post(running.url + "/v1/traces", data=body, headers=PROTOBUF,
                              timeout=30)
            with lock:
                statuses.append(r.status_code)
            if r.status_code == 200:
                return
            assert r.status_code == 503 and r.headers["Retry-After"] == "2"
            time.sleep(0.01)
        raise AssertionError("never stored")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 503 in statuses  # shed, not queued without bound
    samples = svc.metrics_when(running.url, "llm_exporter_spans_rejected_total",
                               statuses.count(503), reason="overloaded")
    assert svc.value(samples, "llm_exporter_spans_rejected_total",
                     reason="overloaded") == statuses.count(503)
    # 48 clients sent the 15 spans of the worked example, each stored once at least
    assert svc.value(samples, "llm_exporter_duplicate_spans_total") == 48 - len(spans)
    svc.assert_worked_example(samples)


def test_a_directory_server_that_trickles_is_cut_off_at_the_deadline_and_counted():
    """A server that sends its headers, then one byte a second: each read is within the
    socket timeout, the whole answer is not."""
    import http.server

    from otel_processor.directory_source import DirectorySource

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/yaml")
            self.end_headers()
            try:
                for _ in range(30):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        source = DirectorySource(f"http://127.0.0.1:{httpd.server_port}/dir.yaml", timeout=1.0)
        started = time.monotonic()
        assert source.refresh() is False
        assert time.monotonic() - started < 3.0
        assert source.refresh_failures == 1
        assert "within 1 s" in source.last_error
    finally:
        httpd.shutdown()
        httpd.server_close()


def _inflating(raw: bytes) -> bytes:
    import gzip

    return gzip.compress(raw, compresslevel=9)


@pytest.mark.parametrize(
    ("raw", "media", "reason"),
    [
        pytest.param(b"\x0a\x00" * (32 * 1024 * 1024), "application/x-protobuf",
                     "too_many_values", id="protobuf-32M-empty-resource-spans"),
        pytest.param(b'{"resourceSpans":[' + b"{}," * (23 * 1024 * 1024) + b"{}]}",
                     "application/json", "too_many_values", id="json-23M-empty-objects"),
    ],
)
def test_a_small_body_that_inflates_to_millions_of_empty_values_is_refused_cheaply(
    raw, media, reason
):
    import resource

    from exporter.otlp import OtlpError, decode_request

    body = _inflating(raw)
    assert len(body) < 256 * 1024 < 64 * 1024 * 1024 <= len(raw)
    before = resource.getrusage(resource.RUSAGE_SELF)
    with pytest.raises(OtlpError) as refused:
        decode_request(body, media, "gzip", max_body_bytes=8 << 20,
                       max_decompressed_bytes=128 << 20, max_spans=20_000)
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert (refused.value.status, refused.value.reason) == (413, reason)
    assert after.ru_utime - before.ru_utime < 5.0  # was 176 s of CPU
    assert after.ru_maxrss - before.ru_maxrss < 400 * 1024  # KiB: was 2.1 GB


def _len(field: int, payload: bytes) -> bytes:
    size, out = len(payload), bytearray()
    while True:
        out.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not out[-1] & 0x80:
            break
    return bytes([field << 3 | 2]) + bytes(out) + payload


def test_a_span_of_millions_of_empty_attributes_is_refused_before_decoding():
    from exporter.otlp import OtlpError, decode_request

    span = _len(1, b"\x01" * 16) + _len(2, b"\x02" * 8) + b"\x4a\x00" * 3_000_000
    body = _len(1, _len(2, _len(2, span)))  # resource spans > scope spans > span
    with pytest.raises(OtlpError) as refused:
        decode_request(body, "application/x-protobuf", None, max_body_bytes=16 << 20,
                       max_decompressed_bytes=16 << 20, max_spans=20_000)
    assert (refused.value.status, refused.value.reason) == (413, "too_many_values")


def test_a_body_of_many_gzip_members_is_refused_in_linear_time():
    import gzip

    from exporter.otlp import OtlpError, decode_request

    body = gzip.compress(b"") * 400_000  # about 8 MiB of empty members
    started = time.process_time()
    with pytest.raises(OtlpError) as refused:
        decode_request(body, "application/x-protobuf", "gzip", max_body_bytes=16 << 20,
                       max_decompressed_bytes=64 << 20, max_spans=20_000)
    assert refused.value.status == 400 and "members" in str(refused.value)
    assert time.process_time() - started < 1.0  # was about a minute


def test_the_bounds_let_a_real_batch_through_and_count_it_exactly(server):
    running = server(max_values_per_request=200)
    spans = svc.record_spans(worked_example)
    svc.send_batches(running.url, spans, [len(spans)])
    svc.assert_worked_example(svc.metrics(running.url))
    body = encode_spans(spans * 10).SerializeToString()  # 150 spans and their attributes
    answer = requests.post(running.url + "/v1/traces", data=body, headers=PROTOBUF)
    assert answer.status_code == 413
    samples = svc.metrics_when(running.url, "llm_exporter_spans_rejected_total", 1,
                               reason="too_many_values")
    assert svc.value(samples, "llm_exporter_spans_rejected_total", reason="too_many_values") == 1


def test_a_body_that_waitress_itself_refuses_is_counted(server):
    running = server(max_body_bytes=1024 * 1024)  # waitress refuses past twice that
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/x-protobuf\r\nContent-Length: 20000000\r\n\r\n")
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")
    samples = svc.metrics_when(running.url, "llm_exporter_spans_rejected_total", 1,
                               reason="too_large")
    assert svc.value(samples, "llm_exporter_spans_rejected_total", reason="too_large") == 1
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    samples = svc.metrics_when(running.url, "llm_exporter_spans_rejected_total", 1,
                               reason="bad_request")
    assert svc.value(samples, "llm_exporter_spans_rejected_total", reason="bad_request") == 1


def _exact_counts(body: bytes) -> tuple[int, int, int]:
    """Spans, groups and values as the exact walk of otlp_bounds counts them."""
    from exporter import otlp_bounds

    big = 1 << 40
    values = otlp_bounds._count(body, big, big, True)
    spans = groups = 0
    for field, start, end in otlp_bounds._fields(body, 0, len(body)):
        if field == 1:
            groups += 1
            for field2, s2, e2 in otlp_bounds._fields(body, start, end):
                groups += 1
                if field2 == 2:
                    spans += sum(1 for f3, _, _ in otlp_bounds._fields(body, s2, e2) if f3 == 2)
    return spans, groups, values


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 6), st.integers(0, 3),
                          st.binary(max_size=40)), min_size=1, max_size=8))
def test_the_tag_byte_bounds_are_never_below_the_exact_counts(shapes):
    """The fast path passes a body only when the tag bytes bound what the walk counts."""
    from exporter.otlp_bounds import tag_byte_bounds

    resource_spans = []
    for n_spans, n_attrs, n_events, noise in shapes:
        spans = []
        for _ in range(n_spans):
            attrs = [_len(9, _len(1, b"k%d" % a + noise) + _len(2, _len(1, noise)))
                     for a in range(n_attrs)]
            events = [_len(11, _len(3, _len(1, b"e"))) for _ in range(n_events)]
            spans.append(_len(2, _len(1, noise[:16].ljust(16, b"\x01")) + _len(2, b"\x02" * 8)
                              + b"".join(attrs) + b"".join(events)))
        scope = _len(1, _len(1, noise) + _len(3, _len(1, b"scope-attr")))
        resource = _len(1, _len(1, _len(1, b"service.name") + _len(2, _len(1, noise))))
        resource_spans.append(_len(1, resource + _len(2, scope + b"".join(spans))))
    body = b"".join(resource_spans)
    bounds, exact = tag_byte_bounds(body), _exact_counts(body)
    assert all(b >= e for b, e in zip(bounds, exact, strict=True)), (bounds, exact)


def test_the_tag_byte_bounds_hold_on_real_batches():
    from exporter.otlp_bounds import tag_byte_bounds

    spans = svc.record_spans(lambda tracer: [worked_example(tracer) for _ in range(20)])
    body = encode_spans(spans).SerializeToString()
    bounds, exact = tag_byte_bounds(body), _exact_counts(body)
    assert exact[0] == len(spans)
    assert all(b >= e for b, e in zip(bounds, exact, strict=True)), (bounds, exact)
