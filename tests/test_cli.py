"""The ``llm-token-exporter`` command, run in-process with ``main([...])`` and once for real.

``serve`` and ``demo`` run against fake ``exporter.server`` / ``exporter.demo`` modules that
record the config they are given: the CLI's job is resolving it, not serving.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import types
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.config import Config
from otel_processor.directory_source import default_directory_path

#: What check-config says about the packaged defaults (the demo directory and the catalog).
DEFAULTS_OK = (
    "config OK: listen 0.0.0.0:4318, state dir ./data; "
    "directory: 4 tenants, 11 members (12 memberships), 4 agents, 8 workflows "
    "(4 chat workflows); prices: 16 models\n"
)
BROKEN_DIRECTORY = "tenants:\n  - id: acme\n    members: [{id: alice}, {name: Nobody}]\n"
BROKEN_PRICES = "models:\n  - {model: gpt-x, input: 1}\n"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, tmp_path):
    """No LLM_TOKEN_EXPORTER_* from the outside; ./data resolves inside tmp_path."""
    for name in list(os.environ):
        if name.startswith("LLM_TOKEN_EXPORTER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fake_module(monkeypatch):
    """Install a fake module whose entry point records its calls and returns ``code``."""

    def install(module: str, function: str, code=0, *, also=None) -> list:
        calls = []

        def entry(config, **kwargs):
            calls.append((config, kwargs))
            if also is not None:
                also(config)
            return code

        fake = types.ModuleType(module)
        setattr(fake, function, entry)
        monkeypatch.setitem(sys.modules, module, fake)
        # once the real module was imported, `from package import name` reads the
        # package's attribute, not sys.modules: replace both
        package, _, name = module.rpartition(".")
        if package in sys.modules:
            monkeypatch.setattr(sys.modules[package], name, fake, raising=False)
        return calls

    return install


def test_check_config_on_the_packaged_defaults_reports_what_it_found(capsys):
    assert main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (DEFAULTS_OK, "")


def test_check_config_names_the_broken_directory_field(tmp_path, capsys):
    (tmp_path / "directory.yaml").write_text(BROKEN_DIRECTORY)
    assert main(["check-config", "--directory", "directory.yaml"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: directory: directory.yaml: tenants[0].members[1].id: required\n"


def test_check_config_names_an_unknown_directory_key_and_the_near_one(tmp_path, capsys):
    (tmp_path / "directory.yaml").write_text("tenants:\n  - id: acme\n    memberz: [{id: alice}]\n")
    assert main(["check-config", "--directory", "directory.yaml"]) == 1
    assert capsys.readouterr().err == (
        "error: directory: directory.yaml: tenants[0].memberz: unknown key; "
        "did you mean 'members'?\n"
    )


def test_check_config_reports_each_problem_on_its_own_line(tmp_path, capsys):
    (tmp_path / "directory.yaml").write_text(BROKEN_DIRECTORY)
    (tmp_path / "prices.yaml").write_text(BROKEN_PRICES)
    (tmp_path / "data").write_text("a file where the state directory should be")
    code = main(["check-config", "--directory", "directory.yaml", "--prices", "prices.yaml"])
    assert code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: state_dir './data': exists and is not a directory",
        "error: directory: directory.yaml: tenants[0].members[1].id: required",
        "error: prices: prices.yaml: models[0].output: required",
    ]


def test_check_config_reads_the_config_file_and_the_environment(tmp_path, monkeypatch, capsys):
    (tmp_path / "directory.yaml").write_text(BROKEN_DIRECTORY)
    (tmp_path / "config.yaml").write_text("listen: 127.0.0.1:9000\nstate_dir: /srv/state\n")
    monkeypatch.setenv("LLM_TOKEN_EXPORTER_CONFIG", "config.yaml")
    monkeypatch.setenv("LLM_TOKEN_EXPORTER_DIRECTORY", str(default_directory_path()))
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out.startswith(
        "config OK: listen 127.0.0.1:9000, state dir /srv/state; directory: 4 tenants"
    )
    assert main(["check-config", "--directory", "directory.yaml"]) == 1  # the flag wins


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_check_config_fetches_a_directory_url(capsys):
    handler = partial(_QuietFiles, directory=str(default_directory_path().parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="test-directory-http", daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["check-config", "--directory", f"{url}/{default_directory_path().name}"]) == 0
        assert capsys.readouterr().out == DEFAULTS_OK
        assert main(["check-config", "--directory", f"{url}/missing.yaml"]) == 1
        assert capsys.readouterr().err == f"error: directory: {url}/missing.yaml: HTTP 404\n"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--listen", "nowhere"], "listen='nowhere' (from --listen): must be HOST:PORT"),
        (["serve", "--log-level", "loud"], "log_level='loud' (from --log-level): must be one of"),
        (["check-config", "--prices", "https://x.example/p.yaml"], "prices='https://x.example"),
        (["check-config", "--config", "missing.yaml"], "config file 'missing.yaml': cannot read"),
    ],
    ids=["serve_listen", "serve_log_level", "check_config_prices_url", "missing_config_file"],
)
def test_bad_config_exits_2_with_one_line(argv, message, capsys, fake_module):
    calls = fake_module("exporter.server", "serve")
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and message in err
    assert err.startswith(f"llm-token-exporter {argv[0]}: ")
    assert calls == []


def test_serve_passes_the_resolved_config_and_returns_its_exit_code(
    tmp_path, monkeypatch, fake_module
):
    calls = fake_module("exporter.server", "serve", code=3)
    (tmp_path / "config.yaml").write_text("threads: 2\nstate_dir: /srv/file\nlisten: h:1\n")
    monkeypatch.setenv("LLM_TOKEN_EXPORTER_STATE_DIR", "/srv/env")
    monkeypatch.setenv("LLM_TOKEN_EXPORTER_LISTEN", "h:2")
    argv = [
        "serve",
        "--config",
        "config.yaml",
        "--listen",
        "h:3",
        "--directory",
        "d.yaml",
        "--prices",
        "p.yaml",
        "--auth-token",
        "tok",
        "--log-level",
        "debug",
    ]
    assert main(argv) == 3
    [(config, kwargs)] = calls
    assert kwargs == {}
    assert (config.threads, config.state_dir, config.listen) == (2, "/srv/env", "h:3")
    assert (config.directory, config.prices, config.auth_token) == ("d.yaml", "p.yaml", "tok")
    assert config.log_level == "DEBUG"


def test_serve_without_a_config_file_runs_on_the_defaults(fake_module):
    calls = fake_module("exporter.server", "serve", code=None)
    assert main(["serve"]) == 0
    assert calls[0][0].listen == "0.0.0.0:4318" and calls[0][0].state_dir == "./data"


def test_demo_runs_on_a_free_port_in_a_temporary_state_dir_removed_after(monkeypatch, fake_module):
    monkeypatch.setenv("LLM_TOKEN_EXPORTER_THREADS", "not a number")  # the demo ignores it
    existed = []
    calls = fake_module(
        "exporter.demo", "main", also=lambda config: existed.append(Path(config.state_dir).is_dir())
    )
    assert main(["demo"]) == 0
    [(config, kwargs)] = calls
    assert existed == [True] and kwargs == {"progress": True}
    assert config.listen == "127.0.0.1:0" and config.threads == 8
    assert not Path(config.state_dir).exists()


def test_demo_flags(tmp_path, fake_module):
    calls = fake_module("exporter.demo", "main", code=4)
    argv = ["demo", "--listen", "127.0.0.1:9999", "--state-dir", "state", "--no-progress"]
    assert main(argv) == 4
    [(config, kwargs)] = calls
    assert (config.listen, config.state_dir, kwargs) == (
        "127.0.0.1:9999",
        "state",
        {"progress": False},
    )


def test_version_and_usage(capsys):
    assert main(["--version"]) == 0
    assert (
        capsys.readouterr().out == f"llm-token-exporter {metadata.version('llm-token-exporter')}\n"
    )
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err
    assert main(["serve", "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_console_script_runs_check_config(tmp_path):
    script = shutil.which("llm-token-exporter", path=sysconfig.get_path("scripts"))
    assert script, "the console script is not installed: run `python -m pip install -e .`"
    env = {"PATH": sysconfig.get_path("scripts"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [script, "check-config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, DEFAULTS_OK, "")


def test_serve_help_shows_each_flags_default_and_variable(capsys):
    assert main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the width
    for flag, key in (("--listen", "listen"), ("--state-dir", "state_dir"),
                      ("--log-level", "log_level")):
        default = {f.name: f.default for f in dataclasses.fields(Config)}[key]
        assert f"(default: {default}; env LLM_TOKEN_EXPORTER_{key.upper()})" in text, flag
    assert "(default: 0.0.0.0:4318; env LLM_TOKEN_EXPORTER_LISTEN)" in text
    assert "(default: the demo directory shipped in the package; env " in text
    assert "(default: the list-price catalog shipped in the package; env " in text
    assert "(default: none: ingestion is unauthenticated; env LLM_TOKEN_EXPORTER_AUTH_TOKEN)" in (
        text
    )
    assert "(default: none; env LLM_TOKEN_EXPORTER_CONFIG)" in text


def _taken_port():
    """A listening socket on 127.0.0.1 (the caller closes it) and its port."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken, taken.getsockname()[1]


def _run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The command for real, in its own process: what an operator sees on the terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_TOKEN_EXPORTER_")}
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", *argv],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        (None, ["--prices", "missing.yaml"],
         "prices: missing.yaml: cannot read: No such file or directory"),
        (("prices.yaml", BROKEN_PRICES), ["--prices", "prices.yaml"],
         "prices: prices.yaml: models[0].output: required"),
        (("state", "a file where the state directory should be"), ["--state-dir", "state"],
         "state_dir 'state': exists and is not a directory"),
        (None, ["--listen", "TAKEN"], "cannot listen on 127.0.0.1:{port}: Address already in use"),
        (("config.yaml", "threads: many\n"), ["--config", "config.yaml"],
         "threads='many' (from config.yaml): must be a positive integer"),
    ],
    ids=["prices_missing", "prices_invalid", "state_dir_is_a_file", "listen_taken",
         "bad_config_value"],
)
def test_every_startup_failure_of_serve_is_one_line_and_exit_2(tmp_path, setup, argv, message):
    if setup is not None:
        (tmp_path / setup[0]).write_text(setup[1])
    taken, port = _taken_port()
    try:
        argv = [a.replace("TAKEN", f"127.0.0.1:{port}") for a in argv]
        if "--listen" not in argv:
            argv += ["--listen", "127.0.0.1:0"]
        if "--state-dir" not in argv:
            argv += ["--state-dir", "state-ok"]
        done = _run_cli(["serve", *argv], tmp_path)
    finally:
        taken.close()
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    # no traceback, no log line before it: the one line says what and where
    assert done.stderr == f"llm-token-exporter serve: {message.format(port=port)}\n"


def test_demo_on_a_taken_address_is_one_line_and_exit_2(tmp_path):
    taken, port = _taken_port()
    try:
        done = _run_cli(["demo", "--listen", f"127.0.0.1:{port}", "--no-progress"], tmp_path)
    finally:
        taken.close()
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"llm-token-exporter demo: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )
