"""The Kubernetes manifests (deploy/kubernetes/, docs/kubernetes.md).

``kubectl kustomize`` renders the base, the base with the prometheus-operator component, the
scale-out overlay (also with the component) and a user's kustomization as docs/kubernetes.md
describes it; these tests fail, not skip, without kubectl (1.21 or newer: its built-in
kustomize must know Components). Every object of a built-in kind is validated against the
Kubernetes 1.30 schemas by ``kubernetes-validate``, strictly (an unknown field is an error);
the Prometheus Operator's kinds, which it has no schema for, are checked here by shape.

The rendered dashboards and rules must equal grafana/dashboards/ and prometheus/rules/, which
other changes edit: when they differ, run ``python deploy/kubernetes/sync_dashboards.py``.
No cluster is needed and nothing is applied.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from exporter.cli import main as cli_main
from exporter.config import ENV_PREFIX, Config

try:
    import kubernetes_validate
except ImportError:  # reported by the test that needs it, as a failure
    kubernetes_validate = None

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
BASE = K8S / "base"
COMPONENT = K8S / "components" / "prometheus-operator"
OVERLAY = K8S / "overlays" / "scale-out"
SYNC_SCRIPT = K8S / "sync_dashboards.py"
DASHBOARDS = ROOT / "grafana" / "dashboards"
RULES = ROOT / "prometheus" / "rules"
DOC = ROOT / "docs" / "kubernetes.md"

KUBERNETES_VERSION = "1.30"
#: Kinds whose schemas kubernetes-validate does not ship (CustomResourceDefinitions).
CRD_GROUPS = ("monitoring.coreos.com/",)
SYNC_HINT = "run: python deploy/kubernetes/sync_dashboards.py"
SECRET = "llm-token-exporter-auth"
TOKEN_ENV = ENV_PREFIX + "AUTH_TOKEN"
#: prometheus.yml's job names, which the alert rules name.
JOB = "llm-token-exporter"
COLLECTOR_JOB = "otel-collector"


# --- rendering ------------------------------------------------------------------------------


def _kubectl() -> str:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail(
            "kubectl not found: these tests render the manifests with `kubectl kustomize` "
            "(kubectl 1.21 or newer; Debian's kubernetes-client package is too old)"
        )
    return binary


def render(directory: Path) -> list[dict]:
    done = subprocess.run(
        [_kubectl(), "kustomize", str(directory)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} exited {done.returncode}:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _kustomization(directory: Path, body: dict) -> Path:
    """A kustomization in ``directory`` (kustomize refuses absolute paths: make them relative)."""

    def rel(path: Path) -> str:
        return os.path.relpath(path, directory)

    body = dict(body)
    for key in ("resources", "components"):
        if key in body:
            body[key] = [rel(p) if isinstance(p, Path) else p for p in body[key]]
    text = yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **body},
        sort_keys=False,
    )
    (directory / "kustomization.yaml").write_text(text)
    return directory


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(BASE)


@pytest.fixture(scope="module")
def with_component(tmp_path_factory) -> list[dict]:
    here = tmp_path_factory.mktemp("base-with-component")
    return render(_kustomization(here, {"resources": [BASE], "components": [COMPONENT]}))


@pytest.fixture(scope="module")
def overlay() -> list[dict]:
    return render(OVERLAY)


@pytest.fixture(scope="module")
def overlay_with_component(tmp_path_factory) -> list[dict]:
    here = tmp_path_factory.mktemp("overlay-with-component")
    return render(_kustomization(here, {"resources": [OVERLAY], "components": [COMPONENT]}))


def _all(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in _all(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _exporter(objects: list[dict]) -> dict:
    return _one(objects, "StatefulSet", "llm-token-exporter")


def _pod(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def _container(workload: dict, name: str) -> dict:
    found = [c for c in _pod(workload)["containers"] if c["name"] == name]
    assert len(found) == 1, f"container {name}: {len(found)} found"
    return found[0]


def _port(container: dict, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def _mount(container: dict, volume: str) -> dict:
    found = [m for m in container.get("volumeMounts", []) if m["name"] == volume]
    assert len(found) == 1, f"mount of {volume}: {len(found)} found"
    return found[0]


def _volume(workload: dict, name: str) -> dict:
    return next(v for v in _pod(workload)["volumes"] if v["name"] == name)


def _configmaps_of(volume: dict) -> list[str]:
    if "configMap" in volume:
        return [volume["configMap"]["name"]]
    return [s["configMap"]["name"] for s in volume["projected"]["sources"] if "configMap" in s]


def _mounted_file(objects: list[dict], workload: dict, container: dict, path: str) -> str:
    """The content of ``path`` inside ``container``: from the ConfigMap mounted there."""
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix) or "subPath" in mount:
            continue
        key = path[len(prefix):]
        for name in _configmaps_of(_volume(workload, mount["name"])):
            data = _one(objects, "ConfigMap", name).get("data", {})
            if key in data:
                return data[key]
    raise AssertionError(f"no ConfigMap mounted in {container['name']} provides {path}")


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _compose_collector_image() -> str:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"]["otel-collector"]["image"]


# --- the base -------------------------------------------------------------------------------


def test_the_base_renders_the_exporter_its_services_and_config_maps(base):
    kinds = Counter(o["kind"] for o in base)
    dashboards = len(list(DASHBOARDS.rglob("*.json")))
    assert kinds == {"StatefulSet": 1, "Service": 2, "ConfigMap": 2 + dashboards}, kinds


def test_no_render_ships_a_secret(base, with_component, overlay, overlay_with_component):
    for objects in (base, with_component, overlay, overlay_with_component):
        assert not _all(objects, "Secret")


def test_the_exporter_is_one_replica_whose_old_pod_stops_before_the_new_one_starts(base):
    spec = _exporter(base)["spec"]
    assert spec["replicas"] == 1
    assert spec["podManagementPolicy"] == "OrderedReady"
    # A StatefulSet's RollingUpdate deletes a pod and waits for it to be gone before it
    # creates the replacement; maxUnavailable (alpha) would allow more at once.
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert "maxUnavailable" not in spec["updateStrategy"].get("rollingUpdate", {})
    assert _selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    governing = _one(base, "Service", spec["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"


def test_the_exporter_runs_the_image_s_entrypoint_with_the_config_file(base):
    entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", _dockerfile(), re.M)
    assert entrypoint and json.loads(entrypoint.group(1)) == ["llm-token-exporter"]
    exporter = _container(_exporter(base), "exporter")
    assert "command" not in exporter  # the image's ENTRYPOINT; args replace its CMD
    assert exporter["args"] == ["serve", "--config", "/etc/llm-token-exporter/config.yaml"]
    assert exporter["image"] == "llm-token-exporter:latest"


def test_the_state_directory_is_a_volume_of_its_own_on_a_read_only_root(base):
    sts = _exporter(base)
    pod, exporter = _pod(sts), _container(sts, "exporter")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    state = _mount(exporter, claim["metadata"]["name"])
    assert not state.get("readOnly", False)
    config = yaml.safe_load(_config_text(base))
    assert config["state_dir"] == state["mountPath"]

    user = re.search(r"^USER\s+(\d+):(\d+)\s*$", _dockerfile(), re.M)
    assert user, "the Dockerfile names its user by uid:gid"
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (int(user[1]), int(user[2]))
    assert context["fsGroup"] == int(user[2])  # the volume is writable by that group
    assert exporter["securityContext"]["readOnlyRootFilesystem"] is True
    assert exporter["securityContext"]["allowPrivilegeEscalation"] is False
    assert exporter["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # Writable: the state volume and an emptyDir /tmp; the configuration is read-only.
    for mount in exporter["volumeMounts"]:
        if mount["name"] == claim["metadata"]["name"]:
            continue
        volume = _volume(sts, mount["name"])
        assert mount.get("readOnly") or "emptyDir" in volume, mount


def test_the_exporter_has_probes_and_resources(base):
    exporter = _container(_exporter(base), "exporter")
    assert _port(exporter, "http") == 4318
    assert exporter["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert exporter["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert exporter["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    resources = exporter["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_the_ingest_token_comes_from_a_secret_the_user_creates(base):
    exporter = _container(_exporter(base), "exporter")
    (token,) = [e for e in exporter["env"] if e["name"] == TOKEN_ENV]
    assert token["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "token"}
    assert f"kubectl create secret generic {SECRET}" in DOC.read_text()


def test_service_links_are_off(base, overlay):
    # Kubernetes would set LLM_TOKEN_EXPORTER_SERVICE_HOST, LLM_TOKEN_EXPORTER_PORT, ... for
    # the Service llm-token-exporter, and the exporter refuses unknown LLM_TOKEN_EXPORTER_*
    # variables as config keys.
    for objects in (base, overlay):
        for workload in _all(objects, "StatefulSet") + _all(objects, "Deployment"):
            assert _pod(workload)["enableServiceLinks"] is False


def test_the_services_reach_the_exporter_pods(base):
    labels = _exporter(base)["spec"]["template"]["metadata"]["labels"]
    service = _one(base, "Service", "llm-token-exporter")
    headless = _one(base, "Service", _exporter(base)["spec"]["serviceName"])
    assert service["spec"].get("clusterIP") != "None"
    for svc in (service, headless):
        assert _selects(svc["spec"]["selector"], labels)
        (port,) = [p for p in svc["spec"]["ports"] if p["name"] == "http"]
        assert (port["port"], port["targetPort"]) == (4318, "http")


def _config_text(objects: list[dict]) -> str:
    sts = _exporter(objects)
    exporter = _container(sts, "exporter")
    return _mounted_file(objects, sts, exporter, exporter["args"][-1])


def test_the_config_map_holds_known_keys_and_the_mounted_paths(base):
    sts = _exporter(base)
    exporter = _container(sts, "exporter")
    config = yaml.safe_load(_config_text(base))
    unknown = set(config) - {f for f in Config.__dataclass_fields__}
    assert not unknown, f"keys that exporter/config.py does not know: {unknown}"
    assert TOKEN_ENV not in json.dumps(config) and "auth_token" not in config
    # `directory` is the directory ConfigMap's file as mounted in the pod.
    directory = _mounted_file(base, sts, exporter, config["directory"])
    assert yaml.safe_load(directory)["tenants"]
    assert int(config["listen"].rpartition(":")[2]) == _port(exporter, "http")


def test_the_config_map_passes_check_config(base, tmp_path, monkeypatch, capsys):
    sts = _exporter(base)
    exporter = _container(sts, "exporter")
    config = yaml.safe_load(_config_text(base))
    directory = tmp_path / "directory.yaml"
    directory.write_text(_mounted_file(base, sts, exporter, config["directory"]))
    config["directory"] = str(directory)  # where the pod has it, here
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    for var in list(os.environ):
        if var.startswith(ENV_PREFIX):
            monkeypatch.delenv(var)
    assert cli_main(["check-config", "--config", str(path)]) == 0, capsys.readouterr().err
    assert "config OK" in capsys.readouterr().out


# --- dashboards and rules: copies of the committed files ---------------------------------------


def _sync_module():
    spec = importlib.util.spec_from_file_location("sync_dashboards", SYNC_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _expected_dashboards(source: Path) -> dict[str, tuple[str, Path]]:
    """ConfigMap name -> (folder, source file), as the sync script names them."""
    sync = _sync_module()
    out = {}
    for path in sorted(source.rglob("*.json")):
        rel = path.relative_to(source)
        parts = rel.parent.parts
        name = sync.CONFIGMAP_PREFIX + sync._name("-".join((*parts, rel.stem)))
        out[name] = (sync.dashboard_folder(parts), path)
    return out


def _assert_dashboards(objects: list[dict], source: Path) -> None:
    rendered = {
        o["metadata"]["name"]: o
        for o in _all(objects, "ConfigMap")
        if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    }
    expected = _expected_dashboards(source)
    assert set(rendered) == set(expected), SYNC_HINT
    for name, (folder, path) in expected.items():
        configmap = rendered[name]
        assert configmap["metadata"]["annotations"] == {"grafana_folder": folder}
        (content,) = configmap["data"].values()
        assert json.loads(content) == json.loads(path.read_bytes()), f"{path}: {SYNC_HINT}"
        assert content == path.read_text(encoding="utf-8"), f"{path}: {SYNC_HINT}"


def test_the_dashboard_config_maps_equal_the_committed_dashboards(base):
    _assert_dashboards(base, DASHBOARDS)


def test_the_prometheus_rules_equal_the_committed_rule_files(with_component):
    rules = {o["metadata"]["name"]: o for o in _all(with_component, "PrometheusRule")}
    files = sorted(RULES.glob("*.yml"))
    assert set(rules) == {f"llm-token-exporter-{f.stem}" for f in files}, SYNC_HINT
    for path in files:
        rule = rules[f"llm-token-exporter-{path.stem}"]
        assert rule["apiVersion"] == "monitoring.coreos.com/v1"
        assert rule["spec"] == yaml.safe_load(path.read_text()), f"{path}: {SYNC_HINT}"


def test_the_copies_are_in_sync(capsys):
    code = _sync_module().main(["--check"])
    assert code == 0, capsys.readouterr().out


def _mini_repo(tmp_path: Path) -> Path:
    """A copy of what the sync script reads and writes, with dashboards laid out as below
    (whatever layout grafana/dashboards/ has today): one at the top level, two subfolders."""
    root = tmp_path / "repo"
    shutil.copytree(K8S, root / "deploy" / "kubernetes")
    shutil.copytree(RULES, root / "prometheus" / "rules")
    first, second, *_ = sorted(DASHBOARDS.rglob("*.json"))
    source = root / "grafana" / "dashboards"
    for target, path in (("top.json", first), ("en/one.json", first), ("en/two.json", second),
                         ("zh/one.json", second)):
        (source / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, source / target)
    return root


def test_the_sync_script_copies_subfolders_removes_stale_copies_and_is_idempotent(tmp_path):
    sync = _sync_module()
    root = _mini_repo(tmp_path)
    source = root / "grafana" / "dashboards"
    target = root / "deploy" / "kubernetes" / "base" / "dashboards"
    assert sync.main(["--root", str(root), "--check"]) == 1
    assert sync.main(["--root", str(root)]) == 0
    assert sync.main(["--root", str(root), "--check"]) == 0
    assert (target / "en" / "one.json").read_bytes() == (source / "en" / "one.json").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in target.rglob("*")}
    assert sync.sync(root) == []  # idempotent: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*")} == stamps

    rendered = render(root / "deploy" / "kubernetes" / "base")
    _assert_dashboards(rendered, source)
    folders = {
        o["metadata"]["name"]: o["metadata"]["annotations"]["grafana_folder"]
        for o in _all(rendered, "ConfigMap")
        if "grafana_folder" in o["metadata"].get("annotations", {})
    }
    prefix = sync.CONFIGMAP_PREFIX
    assert folders == {
        f"{prefix}top": "LLM tokens",
        f"{prefix}en-one": "LLM tokens (en)",
        f"{prefix}en-two": "LLM tokens (en)",
        f"{prefix}zh-one": "LLM tokens (zh)",
    }

    (source / "top.json").unlink()
    edited = source / "en" / "two.json"
    edited.write_text(edited.read_text(encoding="utf-8").replace("{", "{\n  ", 1),
                      encoding="utf-8")
    (root / "prometheus" / "rules" / "extra.yml").write_text("groups: []\n")
    assert sync.differences(root) == [
        "differs: deploy/kubernetes/base/dashboards/en/two.json",
        "differs: deploy/kubernetes/base/dashboards/kustomization.yaml",
        "not in the sources: deploy/kubernetes/base/dashboards/top.json",
        "missing: deploy/kubernetes/components/prometheus-operator/rules/extra.yaml",
        "differs: deploy/kubernetes/components/prometheus-operator/rules/kustomization.yaml",
    ]
    assert sync.main(["--root", str(root)]) == 0
    assert not (target / "top.json").exists()  # a dashboard removed is removed from the copies
    assert sync.differences(root) == []


# --- the prometheus-operator component ---------------------------------------------------------


def test_the_service_monitor_scrapes_each_exporter_pod_as_job_llm_token_exporter(
    with_component, overlay_with_component
):
    prometheus = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    assert JOB in [job["job_name"] for job in prometheus["scrape_configs"]]
    assert f'up{{job="{JOB}"}}' in (RULES / "alerts.yml").read_text()
    for objects in (with_component, overlay_with_component):
        monitor = _one(objects, "ServiceMonitor", "llm-token-exporter")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        selected = [
            s for s in _all(objects, "Service")
            if _selects(spec["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        ]
        # Exactly the headless Service: every pod once.
        assert [s["metadata"]["name"] for s in selected] == [
            _exporter(objects)["spec"]["serviceName"]
        ]
        (service,) = selected
        assert service["metadata"]["labels"][spec["jobLabel"]] == JOB
        (endpoint,) = spec["endpoints"]
        assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
        assert endpoint["path"] == "/metrics"
        # instance is the pod's name, stable across restarts.
        assert {
            "sourceLabels": ["__meta_kubernetes_pod_name"],
            "targetLabel": "instance",
            "action": "replace",
        } in endpoint["relabelings"]


def test_the_front_collector_s_own_metrics_are_scraped_as_the_collector_alerts_expect(
    overlay_with_component,
):
    prometheus = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    assert COLLECTOR_JOB in [job["job_name"] for job in prometheus["scrape_configs"]]
    assert f'{{job="{COLLECTOR_JOB}"}}' in (RULES / "alerts.yml").read_text()
    objects = overlay_with_component
    monitor = _one(objects, "ServiceMonitor", "llm-token-exporter-collector")
    spec = monitor["spec"]
    selected = [
        s for s in _all(objects, "Service")
        if _selects(spec["selector"]["matchLabels"], s["metadata"].get("labels", {}))
    ]
    assert [s["metadata"]["name"] for s in selected] == ["llm-token-exporter-collector"]
    (endpoint,) = spec["endpoints"]
    assert {"targetLabel": "job", "replacement": COLLECTOR_JOB, "action": "replace"} in (
        endpoint["relabelings"]
    )
    (port,) = [p for p in selected[0]["spec"]["ports"] if p["name"] == endpoint["port"]]
    collector = _one(objects, "Deployment", "llm-token-exporter-collector")
    (container,) = _pod(collector)["containers"]
    assert _port(container, port["targetPort"]) == port["port"]
    config = _collector_config(objects, collector, container["name"])
    (reader,) = config["service"]["telemetry"]["metrics"]["readers"]
    prom = reader["pull"]["exporter"]["prometheus"]
    assert (prom["host"], prom["port"]) == ("0.0.0.0", port["port"])
    assert prom["without_type_suffix"] is False  # the alerts name the counters with _total


# --- the scale-out overlay ---------------------------------------------------------------------


def _collector_config(objects: list[dict], workload: dict, container: str) -> dict:
    found = _container(workload, container)
    path = next(a for a in found["args"] if a.startswith("--config=")).partition("=")[2]
    return yaml.safe_load(_mounted_file(objects, workload, found, path))


def _assert_pipelines_defined(config: dict) -> None:
    for name, pipeline in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{name}: {kind} {component} not defined"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]


def test_scale_out_runs_three_exporters_each_with_its_own_volume(overlay):
    sts = _exporter(overlay)
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    (claim,) = sts["spec"]["volumeClaimTemplates"]  # one claim per replica
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    _mount(_container(sts, "exporter"), claim["metadata"]["name"])


def test_each_exporter_pod_has_a_sidecar_from_otlp_grpc_to_otlp_http(overlay):
    sts = _exporter(overlay)
    sidecar = _container(sts, "otel-sidecar")
    assert sidecar["image"] == _compose_collector_image()
    assert re.fullmatch(r"otel/opentelemetry-collector-contrib:\d+\.\d+\.\d+", sidecar["image"])
    config = _collector_config(overlay, sts, "otel-sidecar")
    _assert_pipelines_defined(config)
    grpc = config["receivers"]["otlp"]["protocols"]["grpc"]
    assert int(grpc["endpoint"].rpartition(":")[2]) == _port(sidecar, "otlp-grpc") == 4317
    ((name, out),) = config["exporters"].items()
    assert name.partition("/")[0] == "otlphttp"
    port = _port(_container(sts, "exporter"), "http")
    assert out["endpoint"] == f"http://127.0.0.1:{port}"
    # A pass-through: nothing acknowledged before the exporter has it.
    assert out["sending_queue"] == {"enabled": False}
    assert "batch" not in config.get("processors", {})
    assert {e["name"] for e in sidecar["env"]} == {TOKEN_ENV}


def test_the_front_collector_routes_by_trace_id_to_the_exporter_pods(overlay):
    collector = _one(overlay, "Deployment", "llm-token-exporter-collector")
    (container,) = _pod(collector)["containers"]
    assert container["image"] == _compose_collector_image()
    config = _collector_config(overlay, collector, container["name"])
    _assert_pipelines_defined(config)
    balancer = config["exporters"]["loadbalancing"]
    assert balancer["routing_key"] == "traceID"
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing"]
    dns = balancer["resolver"]["dns"]
    sts = _exporter(overlay)
    headless = _one(overlay, "Service", dns["hostname"])
    assert dns["hostname"] == sts["spec"]["serviceName"]
    assert headless["spec"]["clusterIP"] == "None"
    (port,) = [p for p in headless["spec"]["ports"] if p["port"] == int(dns["port"])]
    assert port["targetPort"] == "otlp-grpc"
    assert _port(_container(sts, "otel-sidecar"), "otlp-grpc") == int(dns["port"])


def test_applications_reach_the_exporters_only_through_the_collector(overlay):
    services = {s["metadata"]["name"]: s for s in _all(overlay, "Service")}
    assert set(services) == {"llm-token-exporter-collector", "llm-token-exporter-headless"}
    collector = services["llm-token-exporter-collector"]
    ports = {p["name"]: p["port"] for p in collector["spec"]["ports"]}
    assert (ports["otlp-grpc"], ports["otlp-http"]) == (4317, 4318)
    pods = _one(overlay, "Deployment", "llm-token-exporter-collector")
    assert _selects(collector["spec"]["selector"], pods["spec"]["template"]["metadata"]["labels"])


# --- schemas ------------------------------------------------------------------------------------


def test_every_built_in_object_is_valid_for_kubernetes(
    base, with_component, overlay, overlay_with_component
):
    if kubernetes_validate is None:
        pytest.fail("kubernetes-validate is not installed: pip install kubernetes-validate")
    problems = []
    for objects in (base, with_component, overlay, overlay_with_component):
        for obj in objects:
            if obj["apiVersion"].startswith(CRD_GROUPS):
                continue  # shapes checked above
            where = f"{obj['kind']} {obj['metadata']['name']}"
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                problems.append(f"{where}: {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{where}: {exc.message}")
    assert not problems, "\n".join(problems)


# --- the documented way to use it ---------------------------------------------------------------


def test_a_user_kustomization_as_documented(tmp_path):
    here = tmp_path / "my-llm-tokens"
    here.mkdir()
    (here / "directory.yaml").write_text(
        "tenants:\n  - id: t1\n    members:\n      - id: m1\nagents: []\nworkflows: []\n"
    )
    _kustomization(here, {
        "namespace": "llm-tokens",
        "resources": [OVERLAY],
        "components": [COMPONENT],
        "images": [{"name": "llm-token-exporter",
                    "newName": "registry.example.com/llm-token-exporter", "newTag": "0.1.0"}],
        "configMapGenerator": [{
            "name": "llm-token-exporter-directory", "behavior": "replace",
            "files": ["directory.yaml"], "options": {"disableNameSuffixHash": True},
        }],
        "labels": [{"pairs": {"release": "kube-prometheus-stack"}, "includeSelectors": False}],
    })
    objects = render(here)
    assert {o["metadata"].get("namespace") for o in objects} == {"llm-tokens"}
    sts = _exporter(objects)
    exporter = _container(sts, "exporter")
    assert exporter["image"] == "registry.example.com/llm-token-exporter:0.1.0"
    config = yaml.safe_load(_config_text(objects))
    assert "t1" in _mounted_file(objects, sts, exporter, config["directory"])
    for kind in ("ServiceMonitor", "PrometheusRule"):
        for obj in _all(objects, kind):
            assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_the_guide_covers_install_token_component_scale_out_and_dashboards():
    text = DOC.read_text()
    for needle in (
        "kubectl apply -k deploy/kubernetes/base",
        "components/prometheus-operator",
        "overlays/scale-out",
        "sync_dashboards.py",
        "grafana_dashboard",
        "routing_key: traceID",
        "sum by",
    ):
        assert needle in text, needle
    assert "shared/" not in text
    assert "docs/kubernetes.md" in (BASE / "kustomization.yaml").read_text()
