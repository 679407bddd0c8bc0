"""GET /v1/budgets/<tenant> (issue 10, part 2): a gateway's budget pre-check, on the real
service over HTTP on 127.0.0.1, with an injected clock."""

from __future__ import annotations

import requests

from tests.conftest import ServicePipeline
from tests.test_periods import BUDGETS_YAML, NY, Clock, call, local

NOW = local(NY, 2026, 12, 15, 12)


def _service(tmp_path, **overrides):
    path = tmp_path / "budgets.yaml"
    path.write_text(BUDGETS_YAML)
    return ServicePipeline(clock=Clock(NOW), budgets=str(path), **overrides)


def get(p, path, token="api-secret", **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(p.url + path, params=params, headers=headers, timeout=10)


def test_states_of_a_member_budget_as_it_fills(tmp_path):
    p = _service(tmp_path, api_token="api-secret")
    try:
        used = 0
        for tokens, state in [(0, "ok"), (199, "ok"), (1, "warning"), (120, "throttle"),
                              (80, "exhausted"), (1, "exhausted")]:
            if tokens:
                call(p.tracer, NOW - 30, (tokens, 0))
                p.flush()
                used += tokens
            r = get(p, "/v1/budgets/acme", member="alice")
            assert r.status_code == 200
            assert r.headers["Content-Type"] == "application/json"
            doc = r.json()
            assert round(doc.pop("used_usd") * 1e12) == used * 2_500_000  # pico-USD, exact
            assert doc == {
                "tenant": "acme", "scope": "member", "id": "alice", "period": "2026-12",
                "used_tokens": used, "limit_tokens": 400,
                "limit_usd": None, "ratio": used / 400, "state": state,
                "thresholds": [0.5, 0.8, 1.0],
            }, used
        tenant = get(p, "/v1/budgets/acme").json()
        assert tenant["scope"] == "tenant" and tenant["id"] == "acme"
        assert tenant["used_tokens"] == used and tenant["limit_tokens"] == 1000
        assert tenant["limit_usd"] == 0.01
        assert tenant["state"] == "ok"  # 401 of 1000 tokens (40 %); 0.001 of 0.01 USD
    finally:
        p.close()


def test_agent_scope_and_scopes_without_a_budget(tmp_path):
    p = _service(tmp_path, api_token="api-secret")
    try:
        agent = get(p, "/v1/budgets/acme", agent="support-bot").json()
        assert agent["scope"] == "agent" and agent["limit_usd"] == 0.001
        assert agent["thresholds"] == [0.1, 0.2, 0.3] and agent["state"] == "ok"
        bob = get(p, "/v1/budgets/acme", member="bob").json()
        assert bob["limit_tokens"] is None and bob["limit_usd"] is None
        assert bob["ratio"] is None and bob["state"] == "ok" and bob["used_tokens"] == 0
        globex = get(p, "/v1/budgets/globex").json()  # a timezone, no limits
        assert globex["state"] == "ok" and globex["period"] == "2026-12"
    finally:
        p.close()


def test_bad_requests_and_auth(tmp_path):
    p = _service(tmp_path, api_token="api-secret")
    try:
        assert get(p, "/v1/budgets/acme", token=None).status_code == 401
        r = get(p, "/v1/budgets/acme", token="wrong")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert get(p, "/v1/budgets/nobody").status_code == 404
        assert get(p, "/v1/budgets/acme", member="alice", agent="x").status_code == 400
        assert get(p, "/v1/budgets/acme", team="x").status_code == 400
        assert get(p, "/v1/budgets/acme", member="").status_code == 400
        assert "error" in get(p, "/v1/budgets/nobody").json()
    finally:
        p.close()


def test_the_ingest_token_guards_the_api_when_no_api_token_is_set(tmp_path):
    p = _service(tmp_path, auth_token="ingest-secret")
    try:
        assert get(p, "/v1/budgets/acme", token=None).status_code == 401
        assert get(p, "/v1/budgets/acme", token="ingest-secret").status_code == 200
    finally:
        p.provider.shutdown()  # its exporter has no token: nothing was sent
        p.server.stop()
