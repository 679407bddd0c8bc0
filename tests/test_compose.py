"""The compose stack (docker-compose.yml, Dockerfile, otel-collector/, alertmanager/,
grafana/provisioning/).

``docker-compose config`` (Debian's ``docker-compose`` package, which .ci/run installs)
validates the compose file; these tests fail, not skip, without it. The other tests read the
files and check that they agree with each other, and run the load generator's script against
a real exporter. No container is started: CI has no Docker daemon.
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from exporter.config import Config
from exporter.server import start_server

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
BIND = "${BIND_ADDRESS:-127.0.0.1}:"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services() -> dict[str, dict]:
    return _compose()["services"]


def test_docker_compose_config_accepts_the_compose_file():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose not found: install Debian's docker-compose package "
            "(apt-get install -y docker-compose), as .ci/run does"
        )
    env = {k: v for k, v in os.environ.items() if k not in ("BIND_ADDRESS", "COMPOSE_FILE")}
    done = subprocess.run(
        [binary, "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    if done.returncode != 0:
        pytest.fail(f"docker-compose config exited {done.returncode}:\n{done.stdout}{done.stderr}")


def test_the_stack_has_its_services():
    assert set(_services()) == {
        "exporter", "otel-collector", "prometheus", "alertmanager", "grafana", "loadgen"
    }


def test_every_port_is_bound_to_localhost_by_default():
    for name, service in _services().items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith(BIND), (name, port)


def test_grafana_has_no_anonymous_access_and_its_password_comes_from_the_environment():
    env = _services()["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-change-me}"
    mounts = _services()["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts


def _bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts, the host side resolved as
    compose does, relative to the compose file's directory. Named volumes are left out."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):  # the long syntax
            if volume.get("type") != "bind":
                continue
            source, target = volume["source"], volume["target"]
        else:
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
            if not rest or not source.startswith((".", "/")):
                continue  # an anonymous or a named volume
        mounts[posixpath.normpath(target)] = (COMPOSE_FILE.parent / source).resolve()
    return mounts


def test_every_dashboard_provider_reads_a_mount_of_the_repository_s_dashboards():
    # Grafana logs "Cannot read directory" and provisions nothing when a provider's path is
    # not where the compose file mounts the JSON. Both layouts must work: today's flat
    # grafana/dashboards/*.json and subdirectories (en/, zh/), each its own Grafana folder.
    grafana = _services()["grafana"]
    mounts = _bind_mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    provider_files = sorted((provisioning / "dashboards").glob("*.y*ml"))
    providers = [p for f in provider_files for p in yaml.safe_load(f.read_text())["providers"]]
    assert providers, f"no dashboard provider in {provisioning / 'dashboards'}"
    provisioned: set[Path] = set()
    for provider in providers:
        name, options = provider["name"], provider["options"]
        assert provider.get("type", "file") == "file", name
        path = posixpath.normpath(options["path"])
        assert path in mounts, (
            f"provider {name} reads {path}, which no volume of the grafana service mounts "
            f"(mounted: {sorted(mounts)})"
        )
        host = mounts[path]
        assert host.is_dir() and host.is_relative_to(ROOT), (name, host)
        dashboards = set(host.rglob("*.json"))  # Grafana walks the subdirectories too
        assert dashboards, f"provider {name}: no dashboard JSON in {host}"
        if any(d.parent != host for d in dashboards):
            # Without it every subdirectory's dashboards land in the one `folder`.
            assert options.get("foldersFromFilesStructure") is True, (
                f"provider {name}: dashboards in subdirectories of {host} need "
                "foldersFromFilesStructure: true to get a folder each"
            )
        if options.get("foldersFromFilesStructure"):
            # Grafana then ignores `folder`, and a folderUid puts every subdirectory in it.
            assert not provider.get("folder") and not provider.get("folderUid"), name
        provisioned |= dashboards
    generated = set((ROOT / "grafana" / "dashboards").rglob("*.json"))
    assert generated and generated <= provisioned, sorted(map(str, generated - provisioned))


def test_services_built_from_the_exporter_image_have_only_healthchecks_they_can_pass():
    # The image's HEALTHCHECK asks the exporter's /healthz: a container of the same image that
    # runs something else (loadgen) would be unhealthy for ever unless it disables it.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", dockerfile, re.MULTILINE)
    services = _services()
    image = services["exporter"]["image"]
    assert "healthcheck" not in services["exporter"]  # the image's, against its own server
    others = [name for name, service in services.items()
              if name != "exporter" and (service.get("image") == image or "build" in service)]
    assert "loadgen" in others
    for name in others:
        service = services[name]
        runs_serve = "entrypoint" not in service and "serve" in service.get("command", ["serve"])
        if runs_serve:
            continue
        healthcheck = service.get("healthcheck", {})
        assert healthcheck.get("disable") is True or healthcheck.get("test") in (
            ["NONE"], "NONE"
        ), f"{name} inherits the exporter's HEALTHCHECK but runs no exporter"
    depends = [dep for service in services.values()
               if isinstance(service.get("depends_on"), dict)
               for dep, how in service["depends_on"].items()
               if (how or {}).get("condition") == "service_healthy"]
    assert set(depends) <= {"exporter"}, depends


def _rules_config():
    spec = importlib.util.spec_from_file_location("build_rules",
                                                  ROOT / "prometheus" / "build_rules.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.Config()


def test_prometheus_scrapes_the_collector_s_own_metrics_under_the_job_the_alerts_name():
    collector = yaml.safe_load((ROOT / "otel-collector" / "config.yaml").read_text())
    (reader,) = collector["service"]["telemetry"]["metrics"]["readers"]
    exporter = reader["pull"]["exporter"]["prometheus"]
    # Every interface of the container (the default is localhost), port 8888; counters with
    # their `_total`, units and scope labels left out: the names the alerts use.
    assert (exporter["host"], exporter["port"]) == ("0.0.0.0", 8888)
    assert exporter["without_type_suffix"] is False
    assert exporter["without_units"] is True and exporter["without_scope_info"] is True
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["otel-collector"]["static_configs"][0]["targets"] == ["otel-collector:8888"]
    assert "otel-collector" in _services()
    # The generated rules' default selectors are this stack's job names.
    defaults = _rules_config()
    assert defaults.selector == 'job="llm-token-exporter"' and "llm-token-exporter" in jobs
    assert defaults.collector_selector == 'job="otel-collector"'


def test_prometheus_reads_the_repository_s_config_rules_and_alertmanager():
    prometheus = _services()["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    # Relative to prometheus.yml: valid in the repository and under /etc/prometheus.
    assert config["rule_files"] == ["rules/*.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    exporter_targets = jobs["llm-token-exporter"]["static_configs"][0]["targets"]
    assert exporter_targets == ["exporter:4318"]
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]
    assert "./alertmanager:/etc/alertmanager:ro" in _services()["alertmanager"]["volumes"]


def test_the_collector_forwards_to_the_exporter_with_otlphttp():
    service = _services()["otel-collector"]
    assert service["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert "./otel-collector/config.yaml:/etc/otelcol-contrib/config.yaml:ro" in service["volumes"]
    config = yaml.safe_load((ROOT / "otel-collector" / "config.yaml").read_text())
    exporter = config["exporters"]["otlphttp/llm-token-exporter"]
    assert exporter["endpoint"] == "http://exporter:4318"
    assert exporter["compression"] == "gzip"
    assert exporter["retry_on_failure"]["enabled"] and exporter["sending_queue"]["enabled"]
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["exporters"] == ["otlphttp/llm-token-exporter"]
    # Listening on every interface of the container (the collector's default is localhost).
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def test_alertmanager_groups_by_alert_and_tenant_and_routes_to_known_receivers():
    config = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    route = config["route"]
    assert route["group_by"] == ["alertname", "tenant"]
    receivers = {r["name"] for r in config["receivers"]}
    assert route["receiver"] in receivers
    assert {r["receiver"] for r in route.get("routes", [])} <= receivers


def test_alertmanager_inhibitions_name_alerts_that_exist():
    config = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    alerts = {rule["alert"] for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
              for group in yaml.safe_load(path.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    for inhibit in config["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            found = re.fullmatch(r'alertname(=~?)"([^"]*)"', matcher)
            assert found, matcher
            names = found.group(2).split("|") if found.group(1) == "=~" else [found.group(2)]
            assert set(names) <= alerts, matcher


def test_the_exporter_image_runs_serve_as_a_non_root_user_with_a_healthcheck():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    user = re.search(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert user and not user.group(1).startswith(("root", "0"))
    assert re.search(r"^EXPOSE 4318$", dockerfile, re.MULTILINE)
    assert re.search(r"^VOLUME /data$", dockerfile, re.MULTILINE)
    assert "/healthz" in dockerfile and "HEALTHCHECK" in dockerfile
    assert 'ENTRYPOINT ["llm-token-exporter"]' in dockerfile
    assert 'CMD ["serve", "--listen", "0.0.0.0:4318", "--state-dir", "/data"]' in dockerfile
    assert _services()["exporter"]["build"] == "."
    assert "exporter-data:/data" in _services()["exporter"]["volumes"]


def test_the_docker_build_context_keeps_only_what_the_image_installs():
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:][:4] == [
        "!pyproject.toml", "!README.md", "!otel_processor/", "!exporter/"
    ]


def _received(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    found = re.search(r'^llm_exporter_spans_received_total\{transport="otlp_http"\} (\S+)$',
                      text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_the_load_generator_sends_the_demo_workload_until_stopped(tmp_path):
    loadgen = _services()["loadgen"]
    assert loadgen["entrypoint"] == ["python", "-c"]
    env = dict(loadgen["environment"])
    assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://otel-collector:4318/v1/traces"
    running = start_server(Config(listen="127.0.0.1:0", state_dir=str(tmp_path / "state")))
    try:
        env.update(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=running.url + "/v1/traces",
                   LOADGEN_INTERVAL_SECONDS="0.2")
        script = loadgen["command"][0]
        process = subprocess.Popen(
            [sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, **env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while _received(running.url) == 0 and time.monotonic() < deadline:
                assert process.poll() is None, process.communicate()
                time.sleep(0.2)
            assert _received(running.url) > 0, "no span arrived within 60 s"
        finally:
            process.terminate()  # SIGTERM, as `docker compose stop` sends
            out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert re.search(r"^round 1 sent \d+ traces$", out, re.MULTILINE), out
    finally:
        running.stop()
