"""The real Prometheus (Debian's ``prometheus``), started by a test on 127.0.0.1.

A test that needs it fails when the binary is missing: `.ci/run` installs it, and a
missing Prometheus must never look like a pass.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests


def binary(name: str = "prometheus") -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `apt-get install -y prometheus` (.ci/run does)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """One Prometheus server scraping ``targets`` every ``interval``."""

    def __init__(self, workdir: Path, targets: list[str], interval: str = "1s",
                 rule_files: list[str] = (), tsdb: Path | None = None,
                 extra_args: list[str] = (), bearer_token_file: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        lines = [
            "global:",
            f"  scrape_interval: {interval}",
            f"  evaluation_interval: {interval}",
        ]
        if rule_files:
            lines.append("rule_files:")
            lines += [f"  - {f}" for f in rule_files]
        if targets:
            lines += [
                "scrape_configs:",
                "  - job_name: llm-token-exporter",
                "    static_configs:",
                f"      - targets: [{', '.join(repr(t) for t in targets)}]",
            ]
            if bearer_token_file is not None:
                lines += ["    authorization:", "      type: Bearer",
                          f"      credentials_file: {bearer_token_file}"]
        config.write_text("\n".join(lines) + "\n")
        self._log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            [
                binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={tsdb or workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-admin-api",
                *extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._log.close()
                log = Path(self._log.name).read_text()
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}: {log}")
            try:
                if requests.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready")

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr}
        if at is not None:
            params["time"] = str(at)
        # POST: dashboard queries can be longer than a comfortable URL
        answer = requests.post(self.url + "/api/v1/query", data=params, timeout=30).json()
        if answer["status"] != "success":
            raise AssertionError(f"{answer.get('error')}\n{expr}")
        return answer["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """A range query (what a time series panel sends): the matrix's series."""
        params = {"query": expr, "start": str(start), "end": str(end), "step": str(step)}
        answer = requests.post(self.url + "/api/v1/query_range", data=params,
                               timeout=30).json()
        if answer["status"] != "success":
            raise AssertionError(f"{answer.get('error')}\n{expr}")
        return answer["data"]["result"]

    def scalar(self, expr: str, at: float | None = None) -> float | None:
        """The value of a one-element vector, None when empty."""
        result = self.query(expr, at)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, expected: float, timeout: float = 30.0) -> float | None:
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.scalar(expr)
            if got == expected:
                return got
            time.sleep(0.25)
        return got

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._log.close()
