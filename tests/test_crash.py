"""SIGKILL the service mid-stream: after a restart on the same state, nothing lost or doubled."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests import service as svc
from tests.prom import free_port
from tests.scenarios import WORKED_EXAMPLE_DIRECTORY, worked_example

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 30


class ServerProcess:
    """``llm-token-exporter serve`` in its own process, killed for real."""

    def __init__(self, port: int, state_dir: Path, log: Path, env: dict | None = None) -> None:
        self._env = env or {}
        self.url = f"http://127.0.0.1:{port}"
        self._args = [
            sys.executable, "-m", "exporter.cli", "serve",
            "--listen", f"127.0.0.1:{port}",
            "--state-dir", str(state_dir),
            "--directory", str(WORKED_EXAMPLE_DIRECTORY),
        ]
        self._log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self._env}
        with open(self._log, "ab") as log:
            self.proc = subprocess.Popen(self._args, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            assert self.proc.poll() is None, self._log.read_text()
            time.sleep(0.1)
        raise AssertionError("server did not start: " + self._log.read_text())

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def send_with_retry(exporter: OTLPSpanExporter, batch) -> int:
    """What a client does: retry until the batch is acknowledged; returns the attempts."""
    attempts = 0
    while True:
        attempts += 1
        if exporter.export(batch) is SpanExportResult.SUCCESS:
            return attempts
        time.sleep(0.05)


# every group checkpointed (kills land in checkpoints too), and the default (kills land
# between checkpoints: the restart replays the journal)
@pytest.mark.parametrize("checkpoint_interval", ["0", "1"])
def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(tmp_path, checkpoint_interval):
    spans = svc.record_spans(lambda tracer: [worked_example(tracer) for _ in range(REPEAT)])
    rng = random.Random(11)
    rng.shuffle(spans)  # children and parents of a trace land in different batches
    sizes = svc.random_sizes(len(spans), 5)
    batches, i = [], 0
    for n in sizes:
        batches.append(spans[i:i + n])
        i += n

    server = ServerProcess(free_port(), tmp_path / "state", tmp_path / "server.log",
                           {"LLM_TOKEN_EXPORTER_CHECKPOINT_INTERVAL": checkpoint_interval})
    server.start()
    exporter = OTLPSpanExporter(endpoint=server.url + "/v1/traces", timeout=5)

    go, killed_at, acknowledged = threading.Event(), [], [0]

    def kill_and_restart_later():  # a kill that lands while requests are in flight
        go.wait(60)
        server.kill()
        killed_at.append(acknowledged[0])
        server.start()

    try:
        half = len(batches) // 2
        for batch in batches[:half]:
            send_with_retry(exporter, batch)
        # traces are half received here: kill between two acknowledged batches
        server.kill()
        server.start()
        killer = threading.Thread(target=kill_and_restart_later)
        killer.start()
        for batch in batches[half:]:
            send_with_retry(exporter, batch)
            acknowledged[0] += 1
            if acknowledged[0] == 3:
                go.set()
        killer.join()
        assert killed_at and killed_at[0] < len(batches) - half  # the kill landed mid-stream
        samples = svc.metrics(server.url)
    finally:
        server.stop()

    svc.assert_worked_example(samples, times=REPEAT)
