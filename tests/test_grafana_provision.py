"""``llm-token-exporter grafana-provision`` (issue 11 part 2): one Grafana org per tenant,
its data source pinned to the tenant gateway with the tenant's own token, and the tenant
dashboards without a tenant variable whose every query the gateway accepts for that tenant
and refuses for any other. Run in-process with ``main([...])``, once as the console script,
and ``create-orgs.sh`` once against a fake Grafana HTTP API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sysconfig
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from exporter import gateway
from exporter import grafana_provision as gp
from exporter.cli import main
from tests.dashboard_grafana import DASHBOARDS, View, interpolate

#: The demo directory's tenants (the packaged default directory), in its order.
DEMO_TENANTS = ("acme", "globex", "initech", "umbrella")
ACME_TOKEN = "acme-gateway-token-0123456789abcdef"
INITECH_TOKEN = "initech-clear-token-$9876543210"
CONFIG = """\
gateway:
  prometheus_url: http://prometheus:9090
  tenants:
    acme: {token_env: ACME_GATEWAY_TOKEN}
    globex: {token_env: GLOBEX_GATEWAY_TOKEN}
    initech: {token: "INITECH"}
""".replace("INITECH", INITECH_TOKEN)
GATEWAY_URL = "http://exporter.example:4318/tenant-api"
PROVISIONED = ("acme", "globex", "initech")  # umbrella has no gateway token
_MATCHER = re.compile(r'\b(tenant|owner_tenant)\s*(=~|!=|!~|=)\s*"([^"]*)"')


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("LLM_TOKEN_EXPORTER_") or name.endswith("_GATEWAY_TOKEN"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    """acme's token is set here, globex's is not (Grafana's environment has it)."""
    monkeypatch.setenv("ACME_GATEWAY_TOKEN", ACME_TOKEN)
    path = tmp_path / "exporter.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def _run(config: Path, out: Path, *extra: str) -> int:
    return main(["grafana-provision", "--config", str(config), "--out", str(out),
                 "--gateway-url", GATEWAY_URL, *extra])


@pytest.fixture
def written(config, tmp_path, capsys) -> tuple[Path, str, str]:
    out = tmp_path / "grafana-tenants"
    assert _run(config, out) == 0
    stdout, stderr = capsys.readouterr()
    return out, stdout, stderr


def _orgs(out: Path) -> dict[str, int]:
    doc = json.loads((out / "orgs.json").read_text(encoding="utf-8"))
    return {o["tenant"]: o["orgId"] for o in doc["orgs"]}


def _datasource(out: Path, tenant: str) -> tuple[dict, str]:
    path = out / "provisioning" / "datasources" / f"llm-tenant-{tenant}.yaml"
    text = path.read_text(encoding="utf-8")
    (ds,) = yaml.safe_load(text)["datasources"]
    return ds, text


def _dashboards(out: Path, tenant: str) -> dict[str, dict]:
    root = out / "provisioning" / gp.DASHBOARDS_DIR / tenant
    return {p.relative_to(root).as_posix(): json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(root.rglob("*.json"))}


def _targets(dashboard: dict):
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            yield p, t


def _originals() -> dict[str, dict]:
    return {f"{lang}/{p.name}": json.loads(p.read_text(encoding="utf-8"))
            for lang in ("en", "zh") for p in sorted((DASHBOARDS / lang).glob("llm-tenant-*"))}


# -- Orgs and data sources -----------------------------------------------------------------


def test_every_tenant_with_a_token_gets_its_own_org(written):
    out, stdout, stderr = written
    orgs = _orgs(out)
    assert list(orgs) == list(PROVISIONED)
    assert sorted(orgs.values()) == list(range(gp.FIRST_ORG_ID, gp.FIRST_ORG_ID + 3))
    assert stdout.startswith("wrote 3 tenants under ")
    assert "acme (org 2), globex (org 3), initech (org 4)" in stdout
    for tenant, org_id in orgs.items():
        provider = yaml.safe_load((out / "provisioning" / "dashboards" /
                                   f"llm-tenant-{tenant}.yaml").read_text(encoding="utf-8"))
        (p,) = provider["providers"]
        assert p["orgId"] == org_id
        assert p["options"]["path"] == (f"/etc/grafana/provisioning/{gp.DASHBOARDS_DIR}/"
                                        f"{tenant}")
        assert p["options"]["foldersFromFilesStructure"] is True
    script = (out / "create-orgs.sh").read_text(encoding="utf-8")
    assert [line for line in script.splitlines() if line.startswith("org ")] == [
        "org 2 'acme'", "org 3 'globex'", "org 4 'initech'"]
    assert os.stat(out / "create-orgs.sh").st_mode & stat.S_IXUSR


def test_a_directory_tenant_without_a_token_is_skipped_with_a_warning(written):
    out, _, stderr = written
    assert ("warning: tenant umbrella: no gateway token (gateway.tenants.umbrella in the "
            "exporter config): skipped") in stderr.splitlines()
    assert not (out / "provisioning" / "datasources" / "llm-tenant-umbrella.yaml").exists()
    assert not (out / "provisioning" / gp.DASHBOARDS_DIR / "umbrella").exists()


def test_strict_refuses_a_tenant_without_a_token_and_writes_nothing(config, tmp_path, capsys):
    out = tmp_path / "strict"
    assert _run(config, out, "--strict") == 1
    _, err = capsys.readouterr()
    assert err == ("error: tenant umbrella: no gateway token (gateway.tenants.umbrella in "
                   "the config)\n")
    assert not out.exists()


def test_each_data_source_is_the_gateway_with_its_own_token_reference(written):
    out, _, stderr = written
    orgs = _orgs(out)
    uids = set()
    for tenant in PROVISIONED:
        ds, _ = _datasource(out, tenant)
        assert ds["orgId"] == orgs[tenant]
        assert ds["type"] == "prometheus" and ds["access"] == "proxy"
        assert ds["url"] == GATEWAY_URL
        assert ds["uid"] == gp.datasource_uid(tenant)
        assert ds["isDefault"] is True and ds["editable"] is False
        assert ds["jsonData"]["httpHeaderName1"] == "X-Tenant-Token"
        uids.add(ds["uid"])
    assert len(uids) == len(PROVISIONED)
    # token_env: a reference Grafana expands from its environment ($VAR: no double expansion)
    assert _datasource(out, "acme")[0]["secureJsonData"] == {
        "httpHeaderValue1": "$ACME_GATEWAY_TOKEN"}
    assert _datasource(out, "globex")[0]["secureJsonData"] == {
        "httpHeaderValue1": "$GLOBEX_GATEWAY_TOKEN"}
    # GLOBEX_GATEWAY_TOKEN is not set here: said, not needed
    assert ("note: GLOBEX_GATEWAY_TOKEN is not set here; Grafana must have it in its "
            "environment (tenant globex)") in stderr.splitlines()
    # token: in the config -> in clear, $ escaped as $$, the file private, with a warning
    ds, _ = _datasource(out, "initech")
    assert ds["secureJsonData"] == {"httpHeaderValue1": INITECH_TOKEN.replace("$", "$$")}
    path = out / "provisioning" / "datasources" / "llm-tenant-initech.yaml"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "warning: tenant initech: the exporter config holds its token in clear" in stderr


def test_no_secret_in_clear_where_an_env_reference_is_used(written):
    out, stdout, stderr = written
    clear = out / "provisioning" / "datasources" / "llm-tenant-initech.yaml"
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert ACME_TOKEN not in text, path
            assert gp.placeholder_token("GLOBEX_GATEWAY_TOKEN") not in text, path
            if path != clear:
                assert INITECH_TOKEN not in text and "initech-clear-token" not in text, path
    assert ACME_TOKEN not in stdout + stderr and INITECH_TOKEN not in stdout + stderr


# -- Dashboards ----------------------------------------------------------------------------


def test_the_dashboards_have_no_tenant_variable_and_are_pinned(written):
    out, _, _ = written
    originals = _originals()
    for tenant in PROVISIONED:
        uid = gp.datasource_uid(tenant)
        got = _dashboards(out, tenant)
        assert sorted(got) == sorted(originals)
        for name, d in got.items():
            names = [v["name"] for v in d["templating"]["list"]]
            assert "tenant" not in names and "datasource" not in names, name
            text = json.dumps(d, ensure_ascii=False)
            assert not re.search(r"\$tenant|\$\{tenant|\[\[tenant|\$\{?datasource", text), name
            assert d["uid"] == originals[name]["uid"] and d["id"] is None
            for p in d["panels"]:
                assert p["datasource"] == {"type": "prometheus", "uid": uid}
                for t in p["targets"]:
                    assert t["datasource"] == {"type": "prometheus", "uid": uid}
                for link in p.get("links", []) + [
                        x for x in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])]:
                    # the cross-tenant drill-down is not in the tenant's org: no link to it
                    assert not link["url"].startswith("/d/llm-drilldown"), (name, link)


def test_every_query_names_only_its_tenant_and_the_gateway_accepts_it(written):
    out, _, _ = written
    originals = _originals()
    checked = 0
    for tenant in PROVISIONED:
        other = next(t for t in DEMO_TENANTS if t != tenant)
        for name, d in _dashboards(out, tenant).items():
            original = dict(_targets_by_ref(originals[name]))
            for p, t in _targets(d):
                view = View(at=1_750_000_000, tenant=tenant)
                query = interpolate(t["expr"], view.at - view.range_s, view.at, view)
                matchers = _MATCHER.findall(query)
                assert matchers, (name, p["title"])
                assert {(op, value) for _, op, value in matchers} == {("=", tenant)}, query
                gateway.check_query(query, tenant)  # accepted for its tenant ...
                with pytest.raises(gateway.Refused):
                    gateway.check_query(query, other)  # ... and only for it
                # exactly the query of the committed dashboard with $tenant = the tenant
                before = original[(p["title"], t["refId"])]
                assert query == interpolate(before, view.at - view.range_s, view.at, view)
                checked += 1
    assert checked > 3 * 2 * 15


def _targets_by_ref(dashboard: dict):
    for p, t in _targets(dashboard):
        yield (p["title"], t["refId"]), t["expr"]


def test_one_language(config, tmp_path, capsys):
    out = tmp_path / "zh-only"
    assert _run(config, out, "--lang", "zh") == 0
    assert {n.split("/")[0] for n in _dashboards(out, "acme")} == {"zh"}


# -- Runs after the first ------------------------------------------------------------------


def test_org_ids_are_kept_and_a_dropped_tenant_is_retired(written, tmp_path, monkeypatch,
                                                          capsys):
    out, _, _ = written
    before = _orgs(out)
    # globex loses its token, umbrella gets one
    text = CONFIG.replace("globex: {token_env: GLOBEX_GATEWAY_TOKEN}",
                          "umbrella: {token_env: UMBRELLA_GATEWAY_TOKEN}")
    config = tmp_path / "second.yaml"
    config.write_text(text, encoding="utf-8")
    assert _run(config, out) == 0
    _, err = capsys.readouterr()
    after = _orgs(out)
    assert after == {"acme": before["acme"], "initech": before["initech"],
                     "umbrella": max(before.values()) + 1}
    assert (f"note: tenant globex (org {before['globex']}) is no longer provisioned: delete "
            f"its org in Grafana (DELETE /api/orgs/{before['globex']})") in err
    assert not (out / "provisioning" / "datasources" / "llm-tenant-globex.yaml").exists()
    assert not (out / "provisioning" / gp.DASHBOARDS_DIR / "globex").exists()
    # globex back: its old id again, never another tenant's
    assert _run(tmp_path / "exporter.yaml", out) == 0
    assert _orgs(out)["globex"] == before["globex"]


def test_no_gateway_in_the_config_is_one_line_and_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("listen: 127.0.0.1:4318\n", encoding="utf-8")
    assert main(["grafana-provision", "--config", str(empty), "--out", "x"]) == 2
    _, err = capsys.readouterr()
    assert err == ("llm-token-exporter grafana-provision: the config has no gateway.tenants "
                   "(the tenant gateway: docs/tenant-gateway.md)\n")
    assert main(["grafana-provision"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err


def test_uids_and_file_names_of_unusual_tenant_ids():
    ids = ["a.b", "a:b", "a@b", "a-b", "x" * 200, "x" * 201]
    uids = [gp.datasource_uid(t) for t in ids]
    assert len(set(uids)) == len(ids)
    assert all(len(u) <= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", u) for u in uids)
    assert len({gp.file_slug(t) for t in ids}) == len(ids)


# -- For real ------------------------------------------------------------------------------


def test_console_script(config, tmp_path):
    script = shutil.which("llm-token-exporter", path=sysconfig.get_path("scripts"))
    assert script, "the console script is not installed: run `python -m pip install -e .`"
    env = {"PATH": sysconfig.get_path("scripts") + os.pathsep + "/usr/bin:/bin",
           "HOME": str(tmp_path), "ACME_GATEWAY_TOKEN": ACME_TOKEN}
    done = subprocess.run([script, "grafana-provision", "--config", str(config), "--out",
                           "out", "--lang", "en"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote 3 tenants under out: acme (org 2)")
    assert _datasource(tmp_path / "out", "acme")[0]["url"] == gp.DEFAULT_GATEWAY_URL
    assert sorted(_dashboards(tmp_path / "out", "acme")) == [
        "en/llm-tenant-assets.json", "en/llm-tenant-overview.json"]


class _FakeGrafana(BaseHTTPRequestHandler):
    """The org API of Grafana 11 as create-orgs.sh uses it (compact JSON, as Grafana's)."""

    orgs: dict[int, str] = {}
    next_id = 2
    calls: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, status: int, doc: dict) -> None:
        body = json.dumps(doc, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.calls.append(f"GET {self.path}")
        org_id = int(self.path.rsplit("/", 1)[1])
        if org_id in self.orgs:
            self._answer(200, {"id": org_id, "name": self.orgs[org_id], "address": {}})
        else:
            self._answer(404, {"message": "Organization not found"})

    def do_POST(self):
        self.calls.append(f"POST {self.path}")
        length = int(self.headers.get("Content-Length", 0))
        doc = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/api/orgs":
            cls = type(self)
            org_id, cls.next_id = cls.next_id, cls.next_id + 1
            self.orgs[org_id] = doc["name"]
            self._answer(200, {"message": "Organization created", "orgId": org_id})
        else:
            self._answer(200, {"message": "reloaded"})


def test_create_orgs_script_against_a_fake_grafana(written, tmp_path):
    # never skipped: .ci/run installs curl, and a machine without it fails here, saying so
    assert shutil.which("curl"), "create-orgs.sh needs curl (apt-get install curl)"
    out, _, _ = written
    _FakeGrafana.orgs, _FakeGrafana.next_id, _FakeGrafana.calls = {2: "acme"}, 3, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGrafana)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    live = tmp_path / "live"
    (live / "datasources").mkdir(parents=True)
    (live / "datasources" / "prometheus.yaml").write_text("apiVersion: 1\n")
    env = {"PATH": os.environ["PATH"], "GRAFANA_URL": f"http://127.0.0.1:{server.server_port}",
           "GRAFANA_PASSWORD": "pw", "GRAFANA_PROVISIONING_DIR": str(live)}
    try:
        done = subprocess.run(["sh", str(out / "create-orgs.sh")], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "org 2 (acme): exists", "org 3 (globex): created", "org 4 (initech): created",
            "reloaded datasources", "reloaded dashboards"]
        assert _FakeGrafana.orgs == {2: "acme", 3: "globex", 4: "initech"}
        assert (live / "datasources" / "prometheus.yaml").exists()  # the base files stay
        assert sorted(p.name for p in (live / "datasources").iterdir()) == [
            "llm-tenant-acme.yaml", "llm-tenant-globex.yaml", "llm-tenant-initech.yaml",
            "prometheus.yaml"]
        assert (live / gp.DASHBOARDS_DIR / "acme" / "en" / "llm-tenant-overview.json").exists()
        # an id that is another org's: stop before any file is copied
        shutil.rmtree(live)
        live.mkdir()
        _FakeGrafana.orgs, _FakeGrafana.next_id = {2: "someone-else"}, 3
        done = subprocess.run(["sh", str(out / "create-orgs.sh")], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert "org 2 exists and is not named acme" in done.stderr
        assert list(live.iterdir()) == []
        # Grafana gives another id than orgs.json says (an org was deleted): stop
        _FakeGrafana.orgs, _FakeGrafana.next_id = {}, 7
        done = subprocess.run(["sh", str(out / "create-orgs.sh")], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert "Grafana gave org acme another id than 2" in done.stderr
        assert list(live.iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()
