"""The tenant query gateway (issue 11, part 1): exporter/gateway.py.

Three layers: the query check on a hostile corpus (no Prometheus needed); the HTTP surface
(auth, refused endpoints, parameters) on a Flask test client; and end to end, the real
service on 127.0.0.1 in front of the real Prometheus 2.42 serving the dashboard world
(tests/dashboard_world.py: acme, globex, initech): every query of the tenant dashboards
passes and answers exactly what Prometheus answers, and generated queries never return
another tenant's series. The generated queries have an oracle independent of the gateway's
own reasoning: a second Prometheus holding only one tenant's series must give the same
answer to every query the gateway accepts for that tenant.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import gateway as gw
from exporter.config import Config, ConfigError, load_config
from exporter.gateway import GatewayConfig, GatewayTenant, Refused, check_query, pin_match
from tests.dashboard_grafana import View, dashboards, exprs, panel_range
from tests.dashboard_world import (  # noqa: F401 (fixtures)
    T0,
    backfilled_prometheus,
    expected_fixture,
    openmetrics,
    prom_fixture,
    scenario,
    series,
    world_fixture,
)

TENANTS = ("acme", "globex", "initech")
TOKENS = {t: f"{t}-gateway-token-0123456789" for t in TENANTS}
T = "acme"  # the tenant of the corpus

# -- The query check ---------------------------------------------------------------------------

LONG = 'llm_model_tokens_total{tenant="acme"}' + ' or llm_model_tokens_total{tenant="acme"}' * 250
HOSTILE = {
    # another tenant, or none
    "other tenant": 'llm_model_tokens_total{tenant="globex"}',
    "other tenant, single quotes": "llm_model_tokens_total{tenant='globex'}",
    "look-alike tenant (Cyrillic a)": 'llm_model_tokens_total{tenant="\u0430cme"}',
    "empty tenant": 'llm_model_tokens_total{tenant=""}',
    "no tenant matcher": "llm_model_tokens_total",
    "no tenant matcher, other labels": 'sum(rate(llm_model_tokens_total{model="gpt-4o"}[5m]))',
    "no tenant matcher inside a function": 'absent(llm_model_tokens_total{type="input"})',
    "heat metric by tenant, not owner_tenant": 'llm_agent_invocations_total{tenant="acme"}',
    "tenant metric by owner_tenant": 'llm_model_tokens_total{owner_tenant="acme"}',
    # regex and negative tenant matchers
    "regex .*": 'llm_model_tokens_total{tenant=~".*"}',
    "regex equal to the tenant": 'llm_model_tokens_total{tenant=~"acme"}',
    "regex alternation": 'llm_model_tokens_total{tenant=~"acme|globex"}',
    "negative": 'llm_model_tokens_total{tenant!="x"}',
    "negative regex": 'llm_model_tokens_total{tenant!~"globex"}',
    "pinned plus negative": 'llm_model_tokens_total{tenant="acme",tenant!="globex"}',
    # two tenant matchers
    "two tenant matchers": 'llm_model_tokens_total{tenant="acme",tenant="globex"}',
    "the same tenant matcher twice": 'llm_model_tokens_total{tenant="acme",tenant="acme"}',
    "quoted label name": 'llm_model_tokens_total{"tenant"="globex"}',
    "or inside the braces": 'llm_model_tokens_total{tenant="acme" or tenant="globex"}',
    # across tenants
    "or across tenants":
        'llm_model_tokens_total{tenant="acme"} or llm_model_tokens_total{tenant="globex"}',
    "unless across tenants":
        'llm_model_tokens_total{tenant="acme"} unless llm_model_tokens_total{tenant="globex"}',
    "and on() with an unpinned side":
        'llm_model_tokens_total{tenant="acme"} and on() llm_model_tokens_total',
    "group_left from another tenant":
        'llm_model_tokens_total{tenant="acme"} * on(model) group_left() '
        'sum by (model) (llm_model_tokens_total{tenant="globex"})',
    "scalar() of another tenant":
        'llm_model_tokens_total{tenant="acme"} * scalar(sum(llm_model_tokens_total))',
    "topk parameter from another tenant":
        'topk(scalar(count(llm_model_tokens_total{tenant="globex"})), '
        'llm_model_tokens_total{tenant="acme"})',
    # the catalogue join (names of the agents in the tenant's own series) misused
    "catalogue join without on(agent)":
        'llm_agent_tokens_total{tenant="acme"} * on() group_left(name) '
        'topk(1, llm_agent_info)',
    "catalogue join dropping the id":
        'vector(1) * on(agent) group_left(name) topk(1, max by (name) (llm_agent_info))',
    "catalogue join copying the creator":
        'llm_agent_tokens_total{tenant="acme"} * on(agent) group_left(name, creator) '
        'max by (agent, name, creator) (llm_agent_info)',
    "catalogue join with an invented agent id":
        'label_replace(vector(1), "agent", "secret", "", "") * on(agent) group_left(name) '
        'max by (agent, name) (llm_agent_info)',
    "catalogue join with absent() inventing an agent id":
        'absent(llm_agent_tokens_total{tenant="acme",agent="secret"}) * on(agent) '
        'group_left(name) max by (agent, name) (llm_agent_info)',
    "catalogue join with count_values inventing an agent id":
        'count_values("agent", llm_agent_tokens_total{tenant="acme"}) * on(agent) '
        'group_left(name) max by (agent, name) (llm_agent_info)',
    "catalogue join with another metric on the right":
        'llm_agent_tokens_total{tenant="acme"} * on(agent) group_left(name) '
        'max by (agent, name) (llm_agent_tokens_total)',
    "catalogue join by workflow on agents":
        'llm_agent_tokens_total{tenant="acme"} * on(workflow) group_left(name) '
        'max by (workflow, name) (llm_agent_info)',
    "catalogue join, group_right":
        'llm_agent_tokens_total{tenant="acme"} * on(agent) group_right(name) '
        'max by (agent, name) (llm_agent_info)',
    "catalogue join with a sum on the right":
        'llm_agent_tokens_total{tenant="acme"} * on(agent) group_left(name) '
        'sum by (agent, name) (llm_agent_info)',
    # rewriting the tenant label
    "label_replace onto tenant":
        'label_replace(llm_model_tokens_total{tenant="acme"}, "tenant", "globex", "", "")',
    "label_replace onto owner_tenant":
        'label_replace(llm_agent_info{owner_tenant="acme"}, "owner_tenant", "x", "", "")',
    "label_join onto tenant":
        'label_join(llm_model_tokens_total{tenant="acme"}, "tenant", "", "model")',
    "label_replace of a vector() onto tenant":
        'label_replace(vector(1), "tenant", "globex", "", "")',
    "count_values writing tenant": 'count_values("tenant", llm_model_tokens_total{tenant="acme"})',
    # subqueries
    "subquery": 'max_over_time(llm_model_tokens_total{tenant="acme"}[1h:5m])',
    "subquery hiding an unpinned selector": "max_over_time(sum(llm_model_tokens_total)[1h:])",
    "rate over a subquery": 'rate(llm_model_tokens_total{tenant="acme"}[30m:1m])',
    # the metric name
    "__name__ regex": '{__name__=~".+"}',
    "__name__ regex pinned": '{__name__=~".+",tenant="acme"}',
    "__name__ equality": '{__name__="llm_model_tokens_total",tenant="acme"}',
    "name plus __name__": 'llm_model_tokens_total{__name__=~".+",tenant="acme"}',
    "quoted metric name": '{"llm_model_tokens_total",tenant="acme"}',
    "metric without a tenant label": "llm_unattributed_tokens_total",
    "exporter health": 'llm_exporter_spans_received_total{tenant="acme"}',
    "scrape metric": 'up{tenant="acme"}',
    "ALERTS": 'ALERTS{tenant="acme"}',
    "recording rule without tenant": 'model:llm_tokens:rate5m{tenant="acme"}',
    "recording rule of a job": 'job:llm_tokens:rate30m{tenant="acme"}',
    # syntax where the parser and Prometheus may disagree
    "backtick string": "llm_model_tokens_total{tenant=`acme`}",
    "backtick in a regex": 'llm_model_tokens_total{tenant="acme",model=~`.*`}',
    "hex escape to the tenant": 'llm_model_tokens_total{tenant="\\x61cme"}',
    "unicode escape to the tenant": 'llm_model_tokens_total{tenant="\\u0061cme"}',
    "escaped quote": 'llm_model_tokens_total{tenant="acme\\", tenant=~\\".*"}',
    "octal escape": 'llm_model_tokens_total{tenant="\\141cme"}',
    "comment hiding a selector": 'llm_model_tokens_total{tenant="acme"} # or up\n',
    "NUL byte": 'llm_model_tokens_total{tenant="acme"}\x00 or up',
    # size
    "very long query": LONG,
    "deep nesting": "(" * 40 + 'llm_model_tokens_total{tenant="acme"}' + ")" * 40,
    # not PromQL
    "empty": "",
    "garbage": "llm_model_tokens_total{tenant=",
}

ACCEPTED = {
    "pinned selector": 'llm_model_tokens_total{tenant="acme"}',
    "single quotes": "llm_model_tokens_total{tenant='acme'}",
    "other matchers, regexes on other labels":
        'llm_model_tokens_total{model=~"gpt.*",type!="output",tenant="acme"}',
    "rate, sum by, offset, @":
        'sum by (model) (rate(llm_model_tokens_total{tenant="acme"}[5m] offset 1h @ end()))',
    "owner_tenant": 'max by (agent) (llm_agent_users{owner_tenant="acme"})',
    "binary op, both pinned":
        'llm_model_tokens_total{tenant="acme"} or on(model) '
        'llm_model_cost_usd_total{tenant="acme"}',
    "label_replace onto another label":
        'label_replace(llm_agent_info{owner_tenant="acme"}, "name", "$1", "agent", "(.*)")',
    "count_values onto another label":
        'count_values("n", llm_model_tokens_total{tenant="acme"})',
    "absent pinned": 'absent(llm_model_tokens_total{tenant="acme",model="nope"})',
    "histogram_quantile":
        'histogram_quantile(0.9, sum by (le) (rate('
        'llm_model_call_duration_seconds_bucket{tenant="acme"}[5m])))',
    "topk": 'topk(3, llm_member_tokens_total{tenant="acme"})',
    "recording rule with tenant": 'tenant:llm_tokens:rate5m{tenant="acme"}',
    "recording rule with tenant and more": 'tenant_agent:llm_tokens:rate5m{tenant="acme"}',
    "no selector (Grafana's health check)": "1+1",
    "vector()": "vector(1)",
    "multi-line": 'sum(\n  llm_model_tokens_total{tenant="acme"}\n)',
    "catalogue join (the overview's top 10)":
        'sum by (agent) (llm_agent_tokens_total{tenant="acme"}) * on(agent) group_left(name) '
        'topk by (agent) (1, max by (agent, name) (llm_agent_info))',
    "a hash inside a string": 'llm_model_tokens_total{tenant="acme",model!="#"}',
}


@pytest.mark.parametrize("query", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_queries_are_refused(query):
    with pytest.raises(Refused) as info:
        check_query(query, T)
    assert info.value.status in (400, 403)
    assert info.value.message


@pytest.mark.parametrize("query", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_pinned_queries_are_accepted(query):
    check_query(query, T)


def test_refusals_say_why():
    def why(q):
        with pytest.raises(Refused) as info:
            check_query(q, T)
        return info.value.status, info.value.message

    assert why('llm_model_tokens_total{tenant="globex"}') == (
        403, 'llm_model_tokens_total: tenant="globex" is not your tenant')
    assert why("llm_model_tokens_total") == (
        403, 'llm_model_tokens_total: needs exactly one matcher tenant="acme", found 0')
    assert why('llm_model_tokens_total{tenant=~".*"}')[1] == (
        "llm_model_tokens_total: tenant must be matched with =, not a regex or !=")
    assert why(LONG) == (400, "query longer than 8192 bytes")
    assert why("llm_model_tokens_total{tenant=`acme`}")[0] == 400
    assert why("llm_unattributed_tokens_total")[1] == (
        "metric llm_unattributed_tokens_total is not available to tenants")


def test_every_metric_of_the_contract_has_its_tenant_label():
    from otel_processor import metrics as m

    assert gw.METRICS["llm_model_tokens_total"] == "tenant"
    assert gw.METRICS["llm_member_info"] == "tenant"
    assert gw.METRICS["llm_model_call_duration_seconds_bucket"] == "tenant"
    for name in ("llm_agent_invocations_total", "llm_agent_users", "llm_workflow_runs_total",
                 "llm_agent_info", "llm_workflow_info"):
        assert gw.METRICS[name] == "owner_tenant", name
    assert not any(n.startswith("llm_exporter_") for n in gw.METRICS)
    assert m.UNATTRIBUTED_TOKENS.name + "_total" not in gw.METRICS


def test_every_tenant_recording_rule_is_readable_and_no_other():
    import yaml

    rules = yaml.safe_load((Path(__file__).parent.parent / "prometheus" / "rules"
                            / "recording.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            keeps_tenant = "tenant" in rule["record"].split(":")[0].split("_")
            assert (gw.tenant_label_of(rule["record"]) == "tenant") == keeps_tenant, rule


def test_match_selectors_are_pinned_or_checked():
    assert pin_match("llm_member_info", T) == 'llm_member_info{tenant="acme"}'
    assert pin_match('llm_agent_info{agent=~"a.*"}', T) == (
        'llm_agent_info{owner_tenant="acme",agent=~"a.*"}')
    assert pin_match("llm_member_info{name='O\"Neil'}", T) == (
        'llm_member_info{tenant="acme",name="O\\"Neil"}')
    assert pin_match('llm_member_info{tenant="acme"}', T) == 'llm_member_info{tenant="acme"}'
    for bad in ('llm_member_info{tenant="globex"}', 'llm_member_info{tenant=~".*"}',
                '{__name__=~".+"}', "up", "sum(llm_member_info)",
                'rate(llm_model_tokens_total{tenant="acme"}[5m])'):
        with pytest.raises(Refused):
            pin_match(bad, T)


# -- Configuration -----------------------------------------------------------------------------


def _config_file(tmp_path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_gateway_config_from_the_file_with_token_env(tmp_path):
    path = _config_file(tmp_path, """
gateway:
  prometheus_url: http://127.0.0.1:9090/
  tenants:
    acme: {token_env: ACME_GATEWAY_TOKEN}
    globex: {token: "globex-secret-0123456789"}
""")
    config = load_config(path, env={"ACME_GATEWAY_TOKEN": "acme-secret-0123456789"})
    assert config.gateway == GatewayConfig(
        "http://127.0.0.1:9090",
        (GatewayTenant("acme", "acme-secret-0123456789"),
         GatewayTenant("globex", "globex-secret-0123456789")))
    assert config.gateway.enabled
    assert "secret" not in repr(config)
    assert not Config().gateway.enabled


@pytest.mark.parametrize(("text", "error"), [
    ("gateway: http://x", "must be a mapping"),
    ("gateway: {tenants: {acme: {token: abcdefghijklmnopq}}}", "prometheus_url: must be"),
    ("gateway: {prometheus_url: 'ftp://x', tenants: {a: {token: abcdefghijklmnopq}}}",
     "prometheus_url: must be an http(s) URL"),
    ("gateway: {prometheus_url: 'http://x'}", "tenants: must map"),
    ("gateway: {prometheus_url: 'http://x', tenants: {acme: {token: short}}}",
     "tenants.acme: the token must have at least 16 characters"),
    ("gateway: {prometheus_url: 'http://x', tenants: {acme: {token_env: NOPE}}}",
     "tenants.acme.token_env: the environment variable NOPE is not set"),
    ("gateway: {prometheus_url: 'http://x', tenants: {acme: {tokn: abcdefghijklmnopq}}}",
     "tenants.acme: must be {token_env: VAR} or {token: TOKEN}"),
    ("gateway: {prometheus_url: 'http://x', tenants: {'a\"b': {token: abcdefghijklmnopq}}}",
     "is not a tenant id"),
    ("gateway: {prometheus_url: 'http://x', tenants: {a: {token: abcdefghijklmnopq},"
     " b: {token: abcdefghijklmnopq}}}", "two tenants have the same token"),
    ("gateway: {prometheus_url: 'http://x', timeout: 0, tenants: {a: {token: abcdefghijklmnopq}}}",
     "timeout: must be a positive number"),
    ("gateway: {prometheus_url: 'http://x', tenant: {}}", "unknown key 'tenant'"),
    ("gateway: {prometheus_url: 'http://x', max_concurrent: 0, "
     "tenants: {a: {token: abcdefghijklmnopq}}}", "max_concurrent: must be a positive integer"),
])
def test_bad_gateway_config_is_refused_clearly(tmp_path, text, error):
    path = _config_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert error in message and f"(from {path})" in message and message.startswith("gateway=")
    assert "abcdefghijklmnopq" not in message
    assert info.value.key == "gateway"


def test_gateway_is_not_read_from_the_environment():
    with pytest.raises(ConfigError, match="must be a mapping in the config file"):
        load_config(None, env={"LLM_TOKEN_EXPORTER_GATEWAY": "http://127.0.0.1:9090"})


# -- The HTTP surface (a Flask test client; nothing reaches Prometheus) -----------------------


def _client(config: GatewayConfig | None = None):
    app = Flask("test")
    gw.install(app, config or GatewayConfig(
        "http://127.0.0.1:9", tuple(GatewayTenant(t, k) for t, k in TOKENS.items()), 2.0))
    return app.test_client()


def _h(tenant: str = T) -> dict:
    return {"X-Tenant-Token": TOKENS[tenant]}


def test_the_gateway_is_off_unless_configured():
    client = _client(GatewayConfig())
    for path in ("/tenant-api/api/v1/query?query=1", "/tenant-api/api/v1/labels", "/tenant-api/"):
        r = client.get(path, headers=_h())
        assert r.status_code == 404, path


def test_no_or_unknown_token_is_401():
    client = _client()
    for headers in ({}, {"X-Tenant-Token": ""}, {"X-Tenant-Token": "nope"},
                    {"X-Tenant-Token": TOKENS[T] + "x"}, {"Authorization": f"Bearer {TOKENS[T]}"}):
        r = client.post("/tenant-api/api/v1/query", data={"query": "1+1"}, headers=headers)
        assert r.status_code == 401, headers
        assert r.json["status"] == "error" and "X-Tenant-Token" in r.json["error"]


@pytest.mark.parametrize("method,path", [
    ("GET", "/federate"), ("GET", "/api/v1/rules"), ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/targets"), ("GET", "/api/v1/status/config"),
    ("GET", "/api/v1/status/buildinfo"), ("GET", "/api/v1/metadata"),
    ("GET", "/api/v1/query_exemplars"), ("POST", "/api/v1/write"),
    ("POST", "/api/v1/admin/tsdb/delete_series"), ("POST", "/api/v1/admin/tsdb/snapshot"),
    ("PUT", "/api/v1/admin/tsdb/clean_tombstones"), ("GET", "/api/v1/alertmanagers"),
    ("GET", "/api/v1/format_query"), ("GET", "/api/v1/targets/metadata"), ("GET", "/"),
    ("GET", "/graph"), ("POST", "/-/quit"), ("POST", "/api/v1/label/tenant/values"),
])
def test_other_endpoints_are_refused(method, path):
    r = _client().open("/tenant-api" + path, method=method, headers=_h())
    assert r.status_code in (403, 404, 405), r.status_code
    assert r.status_code != 200


def test_refused_queries_answer_403_or_400_in_prometheus_form():
    client = _client()
    r = client.post("/tenant-api/api/v1/query", headers=_h(),
                    data={"query": 'llm_model_tokens_total{tenant="globex"}'})
    assert r.status_code == 403
    assert r.json == {"status": "error", "errorType": "forbidden",
                      "error": 'llm_model_tokens_total: tenant="globex" is not your tenant'}
    r = client.get("/tenant-api/api/v1/query_range", headers=_h(),
                   query_string={"query": "foo{", "start": "0", "end": "1", "step": "1"})
    assert r.status_code == 400 and r.json["errorType"] == "bad_data"
    r = client.get("/tenant-api/api/v1/query", headers=_h())
    assert r.status_code == 400


def test_a_query_given_twice_is_refused():
    """Prometheus reads the form and the URL together: a second copy could be the one it
    evaluates."""
    r = _client().post("/tenant-api/api/v1/query?query=up", headers=_h(),
                       data={"query": 'llm_model_tokens_total{tenant="acme"}'})
    assert r.status_code == 400 and "more than once" in r.json["error"]


def test_series_and_label_requests_check_their_selectors():
    client = _client()
    for path in ("/tenant-api/api/v1/series", "/tenant-api/api/v1/labels",
                 "/tenant-api/api/v1/label/tenant/values"):
        r = client.get(path, headers=_h(),
                       query_string={"match[]": 'llm_member_info{tenant="globex"}'})
        assert r.status_code == 403, path
        r = client.get(path, headers=_h(), query_string={"match[]": '{__name__=~".+"}'})
        assert r.status_code == 403, path
    r = client.get("/tenant-api/api/v1/label/bad-name/values", headers=_h())
    assert r.status_code in (400, 404)


def test_queries_past_max_concurrent_are_shed_with_503():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    arrived, release = threading.Event(), threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            arrived.set()
            release.wait(10)
            body = b'{"status":"success","data":{"resultType":"scalar","result":[0,"2"]}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    client = _client(GatewayConfig(url, (GatewayTenant(T, TOKENS[T]),), 10.0, 1))
    try:
        first: list = []
        waiting = threading.Thread(target=lambda: first.append(client.post(
            "/tenant-api/api/v1/query", headers=_h(), data={"query": "1+1"})))
        waiting.start()
        assert arrived.wait(10)  # the first query holds the one slot
        r = client.post("/tenant-api/api/v1/query", headers=_h(), data={"query": "1+1"})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        release.set()
        waiting.join(10)
        assert first[0].status_code == 200 and first[0].json["data"]["result"] == [0, "2"]
    finally:
        release.set()
        server.shutdown()


def test_prometheus_unreachable_is_502():
    r = _client().post("/tenant-api/api/v1/query", headers=_h(), data={"query": "1+1"})
    assert r.status_code == 502 and r.json["status"] == "error"


# -- End to end: the real service in front of the real Prometheus -----------------------------


def _only(data: dict, tenant: str) -> dict:
    """The world's series of one tenant, and nothing else but the catalogue entries
    (llm_agent_info, llm_workflow_info) of the agents and workflows its own series name:
    the one thing a tenant may read beyond its series, their display names (the catalogue
    join, docs/tenant-gateway.md)."""
    own = {key: samples for key, samples in data.items()
           if dict(key[1]).get(gw.tenant_label_of(key[0]) or "\0") == tenant}
    ids = {(label, value) for _, labels in own for label, value in labels
           if label in ("agent", "workflow")}
    named = {key: samples for key, samples in data.items()
             if key[0] in ("llm_agent_info", "llm_workflow_info")
             and any(pair in ids for pair in key[1])}
    return {**named, **own}


ORACLE_TENANTS = ("acme", "initech")


@pytest.fixture(scope="module")
def only(tmp_path_factory) -> dict:
    """tenant -> a Prometheus holding only that tenant's series of the same world."""
    data = series(scenario())
    servers = {}
    try:
        for tenant in ORACLE_TENANTS:
            servers[tenant] = backfilled_prometheus(
                tmp_path_factory.mktemp(f"only-{tenant}"), openmetrics(_only(data, tenant)))
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def service(prom, tmp_path_factory):
    from exporter.server import start_server

    state = tmp_path_factory.mktemp("gateway-state")
    config = load_config(None, env={}, overrides={
        "listen": "127.0.0.1:0", "state_dir": str(state), "log_level": "WARNING",
        "sqlite_synchronous": "NORMAL",
        "gateway": {"prometheus_url": prom.url,
                    "tenants": {t: {"token": k} for t, k in TOKENS.items()}},
    })
    running = start_server(config)
    try:
        yield running
    finally:
        running.stop()


class Gateway:
    def __init__(self, url: str) -> None:
        self.url = url + "/tenant-api"
        self.session = requests.Session()

    def post(self, path: str, tenant: str, **params) -> requests.Response:
        return self.session.post(self.url + path, data=params, headers=_h(tenant), timeout=30)

    def get(self, path: str, tenant: str, **params) -> requests.Response:
        return self.session.get(self.url + path, params=params, headers=_h(tenant), timeout=30)


@pytest.fixture(scope="module")
def gateway(service) -> Gateway:
    return Gateway(service.url)


def _direct(prom, path: str, **params) -> requests.Response:
    return requests.post(prom.url + path, data=params, timeout=30)


def _canonical(answer: dict) -> list:
    result = answer["data"]["result"]
    if answer["data"]["resultType"] in ("scalar", "string"):
        return result
    return sorted(json.dumps(s, sort_keys=True) for s in result)


def _assert_only(answer: dict, tenant: str, query: str) -> None:
    data = answer["data"]
    if data["resultType"] not in ("vector", "matrix"):
        return
    for s in data["result"]:
        for label in ("tenant", "owner_tenant"):
            assert s["metric"].get(label, tenant) == tenant, (query, s["metric"])


def _tenant_queries():
    for uid, d in dashboards().items():
        if not uid.startswith("llm-tenant-"):
            continue
        for p in d["panels"]:
            for t in p.get("targets", []):
                yield uid, p, t["refId"]


TENANT_TARGETS = list(_tenant_queries())


def test_the_tenant_dashboards_have_queries():
    assert len(TENANT_TARGETS) > 15


@pytest.mark.parametrize(("uid", "p", "ref"), TENANT_TARGETS,
                         ids=[f"{u}/{p['title']}/{r}" for u, p, r in TENANT_TARGETS])
def test_every_tenant_dashboard_query_passes_and_returns_only_that_tenant(
        prom, gateway, uid, p, ref):
    for tenant in TENANTS:
        view = View(at=T0, tenant=tenant)
        query = exprs(p, view)[ref]
        start, end = panel_range(p, view)
        for path, params in (("/api/v1/query", {"query": query, "time": str(end)}),
                             ("/api/v1/query_range", {"query": query, "start": str(start),
                                                      "end": str(end), "step": "300"})):
            r = gateway.post(path, tenant, **params)
            assert r.status_code == 200, (tenant, query, r.text)
            answer = r.json()
            assert answer["status"] == "success"
            _assert_only(answer, tenant, query)
            # forwarded unchanged: exactly Prometheus's own answer
            assert _canonical(answer) == _canonical(_direct(prom, path, **params).json())
        # a viewer who changes $tenant is refused
        other = next(t for t in TENANTS if t != tenant)
        stolen = exprs(p, View(at=T0, tenant=other))[ref]
        r = gateway.post("/api/v1/query", tenant, query=stolen, time=str(T0))
        assert r.status_code == 403, (tenant, stolen)


def test_the_tenant_dashboards_data_matches_a_prometheus_of_that_tenant_alone(gateway, only):
    for tenant, alone in only.items():
        for _, p, ref in TENANT_TARGETS:
            query = exprs(p, View(at=T0, tenant=tenant))[ref]
            through = gateway.post("/api/v1/query", tenant, query=query, time=str(T0)).json()
            assert _canonical(through) == _canonical(
                _direct(alone, "/api/v1/query", query=query, time=str(T0)).json()), query


def test_the_tenant_variable_lists_only_the_tenant(gateway):
    """The dashboards' $tenant variable: label_values(llm_member_info, tenant)."""
    for tenant in TENANTS:
        r = gateway.get("/api/v1/label/tenant/values", tenant, **{"match[]": "llm_member_info"},
                        start=str(T0 - 3600), end=str(T0))
        assert r.status_code == 200 and r.json()["data"] == [tenant]
        r = gateway.get("/api/v1/label/tenant/values", tenant)
        assert r.json()["data"] == [tenant]
        r = gateway.get("/api/v1/label/owner_tenant/values", tenant)
        assert set(r.json()["data"]) <= {tenant}


def test_series_and_labels_are_the_tenants_only(prom, gateway):
    for tenant in TENANTS:
        found = gateway.post("/api/v1/series", tenant, **{"match[]": "llm_model_tokens_total"},
                             start=str(T0 - 86400), end=str(T0)).json()["data"]
        assert found and {s["tenant"] for s in found} == {tenant}
        every = gateway.post("/api/v1/series", tenant, start=str(T0 - 86400),
                             end=str(T0)).json()["data"]
        assert every and all(s.get("tenant", s.get("owner_tenant")) == tenant for s in every)
        names = gateway.get("/api/v1/label/__name__/values", tenant).json()["data"]
        assert names and all(gw.tenant_label_of(n) for n in names)
        labels = gateway.post("/api/v1/labels", tenant).json()["data"]
        assert "tenant" in labels and "reason" not in labels  # llm_unattributed_tokens' label
        r = gateway.post("/api/v1/series", tenant, **{"match[]": 'llm_member_info{tenant=~".*"}'})
        assert r.status_code == 403
    # the direct answer has the other tenants
    direct = requests.get(prom.url + "/api/v1/label/tenant/values", timeout=30).json()["data"]
    assert set(TENANTS) <= set(direct)


def test_hostile_queries_are_refused_over_http(gateway):
    for name, query in HOSTILE.items():
        r = gateway.post("/api/v1/query", T, query=query, time=str(T0))
        assert r.status_code in (400, 403), name
        assert r.json()["status"] == "error", name


def test_prometheus_errors_pass_through(gateway):
    r = gateway.post("/api/v1/query_range", T, query='llm_model_tokens_total{tenant="acme"}',
                     start=str(T0), end=str(T0 - 60), step="60")
    assert r.status_code == 400 and r.json()["errorType"] == "bad_data"


# -- Generated queries: nothing accepted reads another tenant ---------------------------------

_METRICS = sorted(n for n in gw.METRICS if not n.startswith("llm_model_reasoning"))
_TENANT_VALUES = st.sampled_from([*TENANTS, "", "nobody"])


#: Matchers on other labels, mostly letting series through (so that answers are not empty).
_OTHER_MATCHERS = st.sampled_from(['model!="x"', 'type=~".*"', 'agent!~"nope"',
                                   'model=~".*"', 'period!="x"'])


@st.composite
def _hostile(draw, tenant: str, label: str) -> str:
    """A tenant matcher that must not pass (or, with another pinned one, is harmless)."""
    kind = draw(st.sampled_from(["other-tenant", "other-tenant", "other-tenant", "regex",
                                 "regex", "negative", "wrong-tenant-label", "none"]))
    others = [t for t in TENANTS if t != tenant]
    if kind == "other-tenant":
        return f'{label}="{draw(st.sampled_from([*others, *others, "nobody"]))}"'
    if kind == "regex":
        value = draw(st.sampled_from([".*", ".+", tenant, f"{tenant}|{others[0]}", "[a-z].*"]))
        return f'{label}{draw(st.sampled_from(["=~", "!~"]))}"{value}"'
    if kind == "negative":
        return f'{label}!="{draw(st.sampled_from([tenant, *others, ""]))}"'
    if kind == "wrong-tenant-label":
        other = "owner_tenant" if label == "tenant" else "tenant"
        return f'{other}="{tenant}"'
    return draw(_OTHER_MATCHERS)  # and no tenant matcher


@st.composite
def _selector(draw, tenant: str) -> str:
    metric = draw(st.sampled_from(_METRICS))
    label = gw.METRICS[metric]
    matchers = draw(st.lists(_OTHER_MATCHERS, max_size=2))
    pinned = f'{label}="{tenant}"'
    if draw(st.booleans()):  # a pinned selector, with other matchers
        matchers.append(pinned)
    else:  # a hostile matcher, sometimes next to the pinned one
        matchers.append(draw(_hostile(tenant, label)))
        if draw(st.integers(0, 3)) == 0:
            matchers.append(pinned)
    matchers = draw(st.permutations(matchers))
    if draw(st.integers(0, 19)) == 0:
        name = draw(st.sampled_from([".+", metric, "llm_.*"]))
        return f'{{__name__=~"{name}",{",".join(matchers)}}}'
    return f"{metric}{{{','.join(matchers)}}}"


_CATALOGUE_RIGHT = st.sampled_from([
    "max by ({id}, name) (llm_{id}_info)",
    "topk by ({id}) (1, max by ({id}, name) (llm_{id}_info))",
    "topk(1, llm_{id}_info)", "max by (name) (llm_{id}_info)",
    "topk(1, max by (name) (llm_{id}_info))", "max by ({id}, name) (llm_{other}_info)"])


def _queries(tenant: str):
    leaf = _selector(tenant)

    def extend(inner):
        rng = st.sampled_from(["5m", "1h", "1d"])
        return st.one_of(
            st.builds(lambda s, r, f: f"{f}({s}[{r}])", leaf, rng,
                      st.sampled_from(["rate", "increase", "max_over_time", "count_over_time",
                                       "last_over_time"])),
            st.builds(lambda e, op, by: f"{op} {by} ({e})", inner,
                      st.sampled_from(["sum", "max", "min", "count", "group"]),
                      st.sampled_from(["", "by (model)", "by (tenant)", "without (type)",
                                       "by (owner_tenant, agent)"])),
            st.builds(lambda e, k: f"topk({k}, {e})", inner, st.integers(1, 3)),
            st.builds(lambda a, op, b: f"({a}) {op} ({b})", inner,
                      st.sampled_from(["or", "and", "unless", "+", "/", "or on(model)",
                                       "and on()", "unless ignoring(tenant)", "> bool"]),
                      inner),
            st.builds(lambda e, dst, v: f'label_replace({e}, "{dst}", "{v}", "", "")', inner,
                      st.sampled_from(["name", "name", "tenant", "owner_tenant", "agent"]),
                      _TENANT_VALUES),
            st.builds(lambda e, dst: f'count_values("{dst}", {e})', inner,
                      st.sampled_from(["n", "n", "tenant", "owner_tenant"])),
            st.builds(lambda e: f"absent({e})", inner),
            st.builds(lambda e, o: f"{e} offset {o}", leaf, st.sampled_from(["1h", "1d"])),
            st.builds(lambda e: f"max_over_time(({e})[1h:10m])", leaf),
            st.builds(lambda e, id_, right: f"({e}) * on({id_}) group_left(name) " + right.format(
                          id=id_, other="workflow" if id_ == "agent" else "agent"),
                      inner, st.sampled_from(["agent", "workflow"]), _CATALOGUE_RIGHT),
        )

    return st.recursive(leaf, extend, max_leaves=3)


_GENERATED = st.sampled_from(TENANTS).flatmap(lambda t: st.tuples(st.just(t), _queries(t)))


def test_generated_queries_never_return_another_tenants_series(gateway, only):
    seen = {"accepted": 0, "refused": 0, "prometheus_error": 0}

    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_GENERATED)
    def check(case):
        tenant, query = case
        try:
            check_query(query, tenant)
        except Refused as exc:
            r = gateway.post("/api/v1/query", tenant, query=query, time=str(T0))
            assert r.status_code == exc.status, (query, r.text)
            seen["refused"] += 1
            return
        r = gateway.post("/api/v1/query", tenant, query=query, time=str(T0))
        if r.status_code != 200:  # Prometheus's own refusal (e.g. many-to-many matching)
            assert r.status_code in (400, 422) and r.json()["status"] == "error", r.text
            seen["prometheus_error"] += 1
            return
        seen["accepted"] += 1
        answer = r.json()
        _assert_only(answer, tenant, query)
        if tenant in only:  # the same answer as a Prometheus that has only this tenant
            alone = _direct(only[tenant], "/api/v1/query", query=query, time=str(T0)).json()
            assert _canonical(answer) == _canonical(alone), query

    check()
    print(seen)
    assert seen["accepted"] >= 15 and seen["refused"] >= 15, seen
