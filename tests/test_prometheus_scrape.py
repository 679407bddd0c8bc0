"""A real Prometheus scraping the exporter returns the exact totals, across a restart."""

from __future__ import annotations

import pytest

from exporter.config import Config
from exporter.server import start_server
from tests import service as svc
from tests.prom import Prometheus, free_port
from tests.scenarios import WORKED_EXAMPLE_DIRECTORY, worked_example

QUERIES = {
    'sum(llm_agent_tokens_total{tenant="acme"})': 370,
    'sum(llm_workflow_tokens_total{tenant="acme"})': 295,
    'sum(llm_model_tokens_total{tenant="acme",model="gpt-4o-mini"})': 235,
    'sum(llm_member_tokens_total{tenant="acme",member="bob"})': 75,
    'sum(llm_agent_invocations_total{owner_tenant="acme"})': 3,
    'sum(llm_unattributed_tokens_total{reason="not_member"})': 1500,
}


@pytest.fixture
def prometheus(tmp_path):
    started = []

    def start(targets):
        p = Prometheus(tmp_path / "prom", targets)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_prometheus_sees_exact_totals_before_and_after_an_exporter_restart(tmp_path, prometheus):
    port = free_port()
    config = Config(listen=f"127.0.0.1:{port}", directory=str(WORKED_EXAMPLE_DIRECTORY),
                    state_dir=str(tmp_path / "state"), threads=4)
    running = start_server(config)
    try:
        svc.send_live(running.url, worked_example)
        prom = prometheus([f"127.0.0.1:{port}"])
        for expr, expected in QUERIES.items():
            assert prom.wait_for(expr, expected) == expected, expr
    finally:
        running.stop()
    assert prom.wait_for('up{job="llm-token-exporter"}', 0) == 0
    running = start_server(config)  # same port, same state directory
    try:
        assert prom.wait_for('up{job="llm-token-exporter"}', 1) == 1
        for expr, expected in QUERIES.items():
            assert prom.wait_for(expr, expected) == expected, expr
        resets = prom.scalar('sum(resets(llm_agent_tokens_total{tenant="acme"}[5m]))')
        assert resets == 0
    finally:
        running.stop()


def test_a_metrics_token_keeps_strangers_out_and_prometheus_in(tmp_path):
    """``metrics_token``: /metrics lists every member of every tenant; Prometheus scrapes it
    with the token from a credentials file."""
    import requests

    port = free_port()
    config = Config(listen=f"127.0.0.1:{port}", directory=str(WORKED_EXAMPLE_DIRECTORY),
                    state_dir=str(tmp_path / "state"), threads=4,
                    metrics_token="scrape-secret-0123456789")
    running = start_server(config)
    token_file = tmp_path / "token"
    token_file.write_text("scrape-secret-0123456789\n")
    prom = Prometheus(tmp_path / "prom", [f"127.0.0.1:{port}"], bearer_token_file=token_file)
    try:
        r = requests.get(running.url + "/metrics", timeout=10)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert "alice" not in r.text
        wrong = requests.get(running.url + "/metrics", timeout=10,
                             headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        svc.send_live(running.url, worked_example)
        for expr, expected in QUERIES.items():
            assert prom.wait_for(expr, expected) == expected, expr
        assert prom.wait_for('up{job="llm-token-exporter"}', 1) == 1
        assert requests.get(running.url + "/healthz", timeout=10).status_code == 200
    finally:
        prom.stop()
        running.stop()
