"""The service when things go wrong: no directory yet, hostile values, failing commits, a
second process on the same state directory. Real HTTP on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import threading

import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter.server import describe_startup
from exporter.store import Store, StoreError
from tests import service as svc
from tests.scenarios import WORKED_EXAMPLE_DIRECTORY, worked_example

JSON = {"Content-Type": "application/json"}


def _json_span(span_id: str, **attributes) -> dict:
    return {
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": span_id, "name": "s",
        "attributes": [{"key": k, "value": v} for k, v in attributes.items()],
    }


def _body(*spans) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}).encode()


CHAT = {"gen_ai.operation.name": {"stringValue": "chat"},
        "gen_ai.request.model": {"stringValue": "gpt-4o"},
        "enduser.id": {"stringValue": "alice"}, "tenant.id": {"stringValue": "acme"},
        "gen_ai.usage.input_tokens": {"intValue": "7"},
        "gen_ai.usage.output_tokens": {"intValue": "3"}}


def test_ingest_answers_503_until_a_directory_has_loaded_then_counts(server, tmp_path):
    path = tmp_path / "directory.yaml"
    running = server(directory=str(path), directory_refresh_interval=0.1)
    body = _body(_json_span("00f067aa0ba902b7", **CHAT))
    refused = requests.post(running.url + "/v1/traces", data=body, headers=JSON, timeout=10)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "2"
    assert requests.get(running.url + "/readyz", timeout=10).status_code == 503
    samples = svc.metrics_when(running.url, "llm_exporter_spans_rejected_total", 1,
                               reason="not_ready")
    assert svc.value(samples, "llm_exporter_spans_rejected_total", reason="not_ready") == 1
    assert svc.value(samples, "llm_unattributed_tokens_total", reason="not_member") == 0
    path.write_text(WORKED_EXAMPLE_DIRECTORY.read_text())
    running.service.directory.refresh()
    accepted = requests.post(running.url + "/v1/traces", data=body, headers=JSON, timeout=10)
    assert accepted.status_code == 200
    samples = svc.metrics(running.url)
    assert svc.tokens(samples, "llm_member_tokens_total", tenant="acme", member="alice") == 10


def test_a_label_value_that_cannot_be_encoded_is_refused_and_metrics_keep_answering(
    server, tmp_path
):
    running = server()
    bad = {"gen_ai.operation.name": {"stringValue": "invoke_agent"},
           "gen_ai.agent.id": {"stringValue": "\ud800"}}
    raw = _body(_json_span("00f067aa0ba902b7", **bad), _json_span("00f067aa0ba902b8", **CHAT))
    response = requests.post(running.url + "/v1/traces", data=raw, headers=JSON, timeout=10)
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    for _ in range(2):  # and after a restart
        scrape = requests.get(running.url + "/metrics", timeout=10)
        assert scrape.status_code == 200
        samples = svc.metrics(running.url)
        assert svc.value(samples, "llm_exporter_spans_rejected_total",
                         reason="invalid_attribute") == 1
        running.stop()
        running = server()


def test_a_token_count_that_is_not_ascii_digits_refuses_one_span_not_the_request(server):
    running = server()
    bad = dict(CHAT, **{"gen_ai.usage.input_tokens": {"stringValue": "²"}})
    raw = _body(_json_span("00f067aa0ba902b7", **bad), _json_span("00f067aa0ba902b8", **CHAT))
    response = requests.post(running.url + "/v1/traces", data=raw, headers=JSON, timeout=10)
    assert response.status_code == 200
    samples = svc.metrics(running.url)
    assert svc.value(samples, "llm_exporter_spans_rejected_total",
                     reason="invalid_token_count") == 1
    assert svc.tokens(samples, "llm_member_tokens_total", tenant="acme", member="alice") == 10


def test_counters_never_go_down_while_commits_fail(server, monkeypatch):
    """A full disk: every third commit fails. A scrape loop sees every counter grow only,
    and after the clients' retries the totals are exact."""
    calls = {"n": 0}
    original = Store.commit

    def flaky(self, batch):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise StoreError("disk full (test)")
        return original(self, batch)

    monkeypatch.setattr(Store, "commit", flaky)
    running = server()
    stop = threading.Event()
    problems: list[str] = []

    def scrape() -> None:
        last: dict = {}
        while not stop.is_set():
            text = requests.get(running.url + "/metrics", timeout=10).text
            for family in text_string_to_metric_families(text):
                if family.type != "counter":
                    continue
                for s in family.samples:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    if s.value < last.get(key, 0):
                        problems.append(f"{key} went from {last[key]} to {s.value}")
                    last[key] = s.value

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        spans = svc.record_spans(worked_example)
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        for _ in range(10):
            for span in spans:  # one request per span, retried on 503 as a client does
                body = encode_spans([span]).SerializeToString()
                for _attempt in range(20):
                    r = requests.post(running.url + "/v1/traces", data=body, timeout=10,
                                      headers={"Content-Type": "application/x-protobuf"})
                    if r.status_code == 200:
                        break
                    assert r.status_code == 503
                else:
                    raise AssertionError("never stored")
    finally:
        stop.set()
        scraper.join()
    assert problems == []
    assert calls["n"] > 30  # commits did fail along the way
    samples = svc.metrics(running.url)
    # the same spans ten times: R8 counts them once
    svc.assert_worked_example(samples)


def test_a_second_serve_on_the_same_state_directory_exits_2_naming_it(server, tmp_path):
    running = server()
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "serve", "--listen", "127.0.0.1:0",
         "--state-dir", str(state), "--directory", str(WORKED_EXAMPLE_DIRECTORY)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(state) in lines[0] and "in use" in lines[0]
    assert requests.get(running.url + "/readyz", timeout=10).status_code == 200


def test_startup_says_which_directory_prices_and_auth_are_in_force(server):
    running = server(directory="", auth_token="")
    lines = describe_startup(running.service.config, running.service)
    text = "\n".join(message for _, message in lines)
    assert "DEMO directory" in text
    assert "unauthenticated, on loopback only" in text  # 127.0.0.1: no warning
    exposed = dataclasses.replace(running.service.config, listen="0.0.0.0:4318")
    warnings = [m for level, m in describe_startup(exposed, running.service)
                if level == logging.WARNING]
    assert any("UNAUTHENTICATED on 0.0.0.0:4318" in m for m in warnings)
    assert "price catalog:" in text
    assert all(level in (logging.INFO, logging.WARNING) for level, _ in lines)
    secured = server(auth_token="s3cret", state_dir=running.service.config.state_dir + "2")
    text = "\n".join(m for _, m in describe_startup(secured.service.config, secured.service))
    assert "requires the bearer token" in text and "DEMO" not in text
