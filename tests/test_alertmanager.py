"""The shipped Alertmanager configuration, run by the real Alertmanager (Debian's
``prometheus-alertmanager``) on 127.0.0.1: alerts posted to its API are inhibited exactly
as ``alertmanager/alertmanager.yml`` says, and no others.

Fails when the binary is missing (``.ci/run`` installs it): a missing Alertmanager must
never look like a pass.
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tests.prom import binary, free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "alertmanager" / "alertmanager.yml"


@pytest.fixture
def alertmanager(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "alertmanager.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [binary("prometheus-alertmanager"), f"--config.file={CONFIG}",
         f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "Alertmanager not ready in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_amtool_accepts_the_configuration():
    out = subprocess.run([binary("amtool"), "check-config", str(CONFIG)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


FIRING = [
    {"alertname": "RunawayAgent", "tenant": "acme", "agent": "support-bot",
     "severity": "critical"},
    {"alertname": "TokenSpike", "tenant": "acme", "severity": "critical"},
    {"alertname": "CostSpike", "tenant": "acme", "severity": "critical"},
    {"alertname": "CostSpike", "tenant": "globex", "severity": "critical"},
    {"alertname": "RunawayTrace", "tenant": "acme", "agent": "support-bot",
     "severity": "warning"},
    {"alertname": "RunawayTrace", "tenant": "acme", "agent": "summarizer",
     "severity": "warning"},
    {"alertname": "RunawayTrace", "tenant": "globex", "agent": "support-bot",
     "severity": "warning"},
    {"alertname": "ExporterDown", "job": "llm-token-exporter", "instance": "exporter-0:4318",
     "severity": "critical"},
    {"alertname": "CollectorQueueFull", "job": "otel-collector", "instance": "collector:8888",
     "severity": "critical"},
]
#: (alertname, tenant, agent) of the alerts the configuration inhibits, with what does it
INHIBITED = {
    ("TokenSpike", "acme", None): "RunawayAgent",
    ("CostSpike", "acme", None): "RunawayAgent",
    ("RunawayTrace", "acme", "support-bot"): "RunawayAgent",
    ("CollectorQueueFull", None, None): "ExporterDown",
}


def test_inhibitions(alertmanager):
    now = datetime.now(timezone.utc)
    alerts = [{"labels": labels, "startsAt": now.isoformat(),
               "endsAt": (now + timedelta(hours=1)).isoformat()} for labels in FIRING]
    assert requests.post(f"{alertmanager}/api/v2/alerts", json=alerts,
                         timeout=5).status_code == 200
    deadline = time.monotonic() + 20
    while True:
        got = requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        sources = {}
        for alert in got:
            labels = alert["labels"]
            key = (labels["alertname"], labels.get("tenant"), labels.get("agent"))
            inhibitors = alert["status"]["inhibitedBy"]
            sources[key] = inhibitors
        if len(sources) == len(FIRING) and all(
                bool(sources[key]) == (key in INHIBITED) for key in sources):
            break
        assert time.monotonic() < deadline, sources
        time.sleep(0.2)
    names = {(a["labels"]["alertname"], a["labels"].get("tenant"), a["labels"].get("agent")):
             a["fingerprint"] for a in got}
    for key, source in INHIBITED.items():
        source_fp = {fp for (name, *_), fp in names.items() if name == source}
        assert set(sources[key]) <= source_fp, (key, sources[key])
    # the others page: another tenant's spike, another agent's runaway trace, the source
    assert not sources[("CostSpike", "globex", None)]
    assert not sources[("RunawayTrace", "acme", "summarizer")]
    assert not sources[("RunawayTrace", "globex", "support-bot")]
    assert not sources[("RunawayAgent", "acme", "support-bot")]
    assert not sources[("ExporterDown", None, None)]
