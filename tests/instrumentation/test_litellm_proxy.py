"""The LiteLLM proxy 1.110.2 (``litellm --config``), its OpenTelemetry callback, through
both runtimes.

The real proxy runs as a subprocess on 127.0.0.1 (its ``litellm`` console script, from the
plain ``litellm`` wheel plus the proxy's dependencies: see
requirements-litellm-proxy.txt), with a model list pointing at the fake OpenAI server,
``litellm_settings.callbacks: ["otel"]``, and callers and teams from
``general_settings.custom_auth`` (``litellm_proxy/auth.py``: the proxy's virtual keys,
users and teams need Postgres). The test calls it with the real ``openai`` client, as an
application calls a proxy.

Runtimes:

- ``service``: the proxy's own exporter, configured as a user configures it
  (``OTEL_EXPORTER=otlp_http``, ``OTEL_ENDPOINT=<service>/v1/traces``), into a real
  ``llm-token-exporter serve`` on 127.0.0.1 (started in this process, as in
  test_litellm.py);
- ``in_process``: our ``TokenAttributionProcessor`` inside the proxy's process, on the
  provider LiteLLM's callback writes to: the config names ``litellm_proxy/inprocess.py`` as
  a callback, so the proxy imports it while loading its config, before it builds the
  ``otel`` callback, which then reuses the global provider that module set. The
  processor's registry is served on a port of 127.0.0.1 for the test to read.

What the proxy writes, per request (see EMITTED.md): FastAPI's own server span
``POST /v1/chat/completions`` (FastAPI 0.165's native telemetry, on the global provider)
with ``fastapi.*`` children; under ``fastapi.dependencies`` LiteLLM's
``Received Proxy Server Request`` (SERVER; only team attributes, and the error on a failed
call); under it LiteLLM's service spans (``proxy_pre_call``, ``router``, ``self``: no
usage) and one model-call span, ``litellm_request`` (``chat gpt-4o``, CLIENT, with
``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``) with ``gen_ai.usage.*``,
``metadata.user_api_key_user_id``, ``metadata.user_api_key_team_id``,
``metadata.user_api_key_end_user_id`` and ``llm.user``; in the default mode it has a
``raw_gen_ai_request`` child (no usage); a failed call adds ``Failed Proxy Server Request``
(no usage, no operation). Only the model-call span counts: no double counting.

Callers: the request's ``user`` (the end user) wins over the key's owner (``user_id``); the
team is not the tenant (docs/conventions.md), the caller's one tenant is. A custom auth
must hand the proxy's span back (``parent_otel_span``, see ``litellm_proxy/auth.py``), or
LiteLLM 1.110.2 loses the usage: see the last test.

Expected figures are the usage the fake server returns for each model (conftest's
``USAGE``), which the proxy hands back to the client too (asserted).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_server import FakeOpenAIServer
from tests.instrumentation.conftest import DIRECTORY, MESSAGES, USAGE, Exporter, Readout, io

pytestmark = [pytest.mark.instrumentation]

ROOT = Path(__file__).resolve().parents[2]
_HELPERS = "tests.instrumentation.litellm_proxy"
#: The proxy refuses to start without a master key (or with a well-known one).
_MASTER_KEY = "sk-test-master-" + "0123456789abcdef" * 2
#: The models of the proxy's model list, each an OpenAI model of the fake server; a call to
#: ``no-such-model`` reaches the fake server, which answers 404 model_not_found.
_MODELS = ("gpt-4o", "gpt-4o-mini", "qwen-max", "text-embedding-3-small", "no-such-model")
_STARTUP_TIMEOUT = 180.0  # the proxy imports for 20-30 s on a busy 2-CPU machine
_COUNT_TIMEOUT = 40.0
#: Once the expected figures are read, how long they must stay so (nothing counts twice).
_SETTLE = 1.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Scraped:
    """A registry-like view of a ``/metrics`` page, for conftest's ``Readout``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def collect(self) -> Any:
        reply = httpx.get(self.url, timeout=10)
        reply.raise_for_status()
        return text_string_to_metric_families(reply.text)


class Proxy:
    """One LiteLLM proxy process on one runtime, against the fake OpenAI server."""

    def __init__(self, runtime: str, semconv: str, fake: FakeOpenAIServer) -> None:
        self.runtime = runtime
        self.fake = fake
        self._server = None
        self._dir = tempfile.TemporaryDirectory(prefix="llm-token-exporter-litellm-proxy-")
        work = Path(self._dir.name)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "LITELLM_", "USE_OTEL_", "PYTEST_"))
        }
        env.update(
            PYTHONPATH=str(ROOT),
            # never fetch the model cost map from the network
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_MASTER_KEY=_MASTER_KEY,
            LITELLM_LOG="ERROR",
            # the proxy's exporter sends its batch every 100 ms (the SDK default is 5 s)
            OTEL_BSP_SCHEDULE_DELAY="100",
            # a team's metadata key tenant_id goes onto the spans (litellm.team.metadata)
            LITELLM_OTEL_BAGGAGE_TEAM_METADATA_KEYS="tenant_id",
            NO_PROXY="127.0.0.1",
        )
        if semconv != "default":
            env["OTEL_SEMCONV_STABILITY_OPT_IN"] = semconv
        callbacks = ["otel"]
        if runtime == "service":
            self._server = Exporter(str(work / "state"))
            env.update(OTEL_EXPORTER="otlp_http", OTEL_ENDPOINT=self._server.traces_url)
            self.metrics_url = self._server.url + "/metrics"
        else:
            port = _free_port()
            env.update(
                LLM_TOKEN_EXPORTER_TEST_DIRECTORY=str(DIRECTORY),
                LLM_TOKEN_EXPORTER_TEST_METRICS_PORT=str(port),
            )
            callbacks.insert(0, f"{_HELPERS}.inprocess.handler")
            self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        config = {
            "model_list": [
                {
                    "model_name": model,
                    "litellm_params": {
                        "model": f"openai/{model}",
                        "api_base": fake.base_url,
                        "api_key": "sk-test",
                    },
                }
                for model in _MODELS
            ],
            "litellm_settings": {"callbacks": callbacks, "num_retries": 0},
            "router_settings": {"num_retries": 0},
            "general_settings": {"custom_auth": f"{_HELPERS}.auth.user_api_key_auth"},
        }
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = work / "proxy.log"
        litellm_cli = shutil.which("litellm", path=str(Path(sys.executable).parent))
        assert litellm_cli, "the litellm console script is not in this venv"
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [
                    litellm_cli,
                    "--config",
                    str(work / "config.yaml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_up()
            if runtime == "in_process":
                # set before LiteLLM built its otel callback, which then reused it
                marker = "TokenAttributionProcessor on a new global TracerProvider"
                assert marker in self.log_tail(10_000), self.log_tail()
        except BaseException:
            self.close()
            raise

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                pytest.fail(f"the proxy exited ({self._proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health/liveliness", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"the proxy did not start in {_STARTUP_TIMEOUT} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        text = self._log_path.read_text(errors="replace") if self._log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def client(self, api_key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0)

    def readout(self) -> Readout:
        return Readout(_Scraped(self.metrics_url))  # type: ignore[arg-type]

    def check(self, readout: Readout, expected: dict[str, dict[tuple[str, ...], int]]) -> None:
        """Waits until the metrics read exactly ``expected`` (the proxy exports, and the
        service counts, a moment after the call returned), and still do ``_SETTLE`` s
        later; else fails with the difference."""
        deadline = time.monotonic() + _COUNT_TIMEOUT
        while time.monotonic() < deadline:
            if {m: readout.series(m) for m in expected} == expected:
                time.sleep(_SETTLE)
                if {m: readout.series(m) for m in expected} == expected:
                    return
            time.sleep(0.2)
        try:
            readout.check(expected)
        except pytest.fail.Exception as exc:
            metrics = exc.msg.split("\n\nspans:")[0]
            raise pytest.fail.Exception(
                f"{metrics}\n\nproxy log:\n{self.log_tail(30)}", pytrace=False
            ) from None
        pytest.fail("the figures changed while they settled", pytrace=False)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        if self._server is not None:
            self._server.close()
            self._server = None
        self._dir.cleanup()


#: (runtime, LiteLLM's semconv mode): each a proxy process, started once for the module
#: (a start takes 20-30 s). The semconv modes differ in LiteLLM's spans only, so the
#: second mode runs on the service runtime alone.
_PROXIES = [
    ("in_process", "default"),
    ("service", "default"),
    ("service", "gen_ai_latest_experimental"),
]


@pytest.fixture(scope="module", params=_PROXIES, ids=["-".join(p) for p in _PROXIES])
def proxy(request, fake_openai) -> Iterator[Proxy]:
    made = Proxy(*request.param, fake_openai)
    try:
        yield made
        if made.runtime == "in_process":
            # LiteLLM added no exporter of its own (OTEL_EXPORTER unset is its console
            # exporter): no span was printed.
            assert '"trace_id"' not in made.log_tail(100_000), made.log_tail()
    finally:
        made.close()


def _chat(client: openai.OpenAI, model: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)


def _usage(reply: Any) -> tuple[int, int]:
    return reply.usage.prompt_tokens, reply.usage.completion_tokens


def _fake(model: str) -> tuple[int, int]:
    return USAGE[model].prompt, USAGE[model].completion


# -- tests --------------------------------------------------------------------------------


def test_two_members_of_two_teams_count_for_their_tenants(proxy):
    readout = proxy.readout()
    alice, carol = proxy.client("sk-alice"), proxy.client("sk-carol")
    assert _usage(_chat(alice, "gpt-4o")) == _fake("gpt-4o") == (100, 50)
    assert _usage(_chat(carol, "gpt-4o-mini")) == _fake("gpt-4o-mini") == (200, 20)
    assert _usage(_chat(alice, "qwen-max")) == _fake("qwen-max") == (30, 30)

    proxy.check(
        readout,
        {
            "llm_model_tokens_total": {
                **io("acme", "gpt-4o", input=100, output=50),
                **io("acme", "qwen-max", input=30, output=30),
                **io("globex", "gpt-4o-mini", input=200, output=20),
            },
            "llm_member_tokens_total": {
                **io("acme", "alice", input=130, output=80),
                **io("globex", "carol", input=200, output=20),
            },
            "llm_model_requests_total": {
                ("acme", "gpt-4o", "ok"): 1,
                ("acme", "qwen-max", "ok"): 1,
                ("globex", "gpt-4o-mini", "ok"): 1,
            },
            "llm_unattributed_tokens_total": {},
            "llm_agent_tokens_total": {},
            "llm_workflow_tokens_total": {},
        },
    )


def test_a_streamed_call_counts_the_final_usage_chunk(proxy):
    readout = proxy.readout()
    chunks = list(
        _chat(
            proxy.client("sk-bob"),
            "gpt-4o-mini",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert _usage(chunks[-1]) == _fake("gpt-4o-mini") == (200, 20)
    upstream = proxy.fake.requests[-1]["body"]
    assert upstream["stream"] is True
    assert upstream["stream_options"] == {"include_usage": True}

    proxy.check(
        readout,
        {
            "llm_model_tokens_total": io("acme", "gpt-4o-mini", input=200, output=20),
            "llm_member_tokens_total": io("acme", "bob", input=200, output=20),
            "llm_model_requests_total": {("acme", "gpt-4o-mini", "ok"): 1},
            "llm_unattributed_tokens_total": {},
        },
    )


def test_the_requests_user_field_is_the_caller_over_the_keys_owner(proxy):
    # `user` in the request body: LiteLLM's end user (metadata.user_api_key_end_user_id,
    # llm.user), which our conventions read before the key's owner
    # (metadata.user_api_key_user_id).
    readout = proxy.readout()
    _chat(proxy.client("sk-alice"), "qwen-max", user="bob")  # alice's key, for bob
    service = proxy.client("sk-service")  # its owner, support-app, is no member
    _chat(service, "gpt-4o", user="carol")
    _chat(service, "qwen-max")  # no end user: the owner is the caller, and no member

    proxy.check(
        readout,
        {
            "llm_model_tokens_total": {
                **io("acme", "qwen-max", input=30, output=30),
                **io("globex", "gpt-4o", input=100, output=50),
            },
            "llm_member_tokens_total": {
                **io("acme", "bob", input=30, output=30),
                **io("globex", "carol", input=100, output=50),
            },
            "llm_unattributed_tokens_total": {("not_member",): 60},
        },
    )


def test_embeddings_count_as_input_tokens_only(proxy):
    readout = proxy.readout()
    reply = proxy.client("sk-carol").embeddings.create(
        model="text-embedding-3-small", input=["reset password", "forgot password"]
    )
    assert reply.usage.prompt_tokens == USAGE["text-embedding-3-small"].prompt == 12

    proxy.check(
        readout,
        {
            "llm_model_tokens_total": io("globex", "text-embedding-3-small", input=12),
            "llm_member_tokens_total": io("globex", "carol", input=12),
            "llm_model_requests_total": {("globex", "text-embedding-3-small", "ok"): 1},
        },
    )


def test_a_failing_upstream_call_counts_one_error_request_and_no_tokens(proxy):
    readout = proxy.readout()
    with pytest.raises(openai.NotFoundError):
        _chat(proxy.client("sk-alice"), "no-such-model")
    assert proxy.fake.requests[-1]["body"]["model"] == "no-such-model"  # it went upstream

    proxy.check(
        readout,
        {
            "llm_model_tokens_total": {},
            "llm_member_tokens_total": {},
            "llm_model_requests_total": {("acme", "no-such-model", "error"): 1},
            "llm_unattributed_tokens_total": {},
        },
    )


def test_the_team_is_not_the_tenant(proxy):
    # docs/conventions.md: a LiteLLM team (metadata.user_api_key_team_id) is not read as
    # the billing tenant. bob's key is in the team "globex"; bob is a member of acme only,
    # so acme pays.
    readout = proxy.readout()
    _chat(proxy.client("sk-bob-in-globex"), "gpt-4o")

    proxy.check(
        readout,
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_member_tokens_total": io("acme", "bob", input=100, output=50),
            "llm_unattributed_tokens_total": {},
        },
    )


def test_the_teams_metadata_may_name_the_tenant(proxy):
    # docs/conventions.md: with LITELLM_OTEL_BAGGAGE_TEAM_METADATA_KEYS=tenant_id, the
    # tenant_id of the key's team metadata is the call's tenant. carol is a member of
    # globex only; her key's team bills acme: not a member, nothing to globex.
    readout = proxy.readout()
    _chat(proxy.client("sk-carol-in-acme-billing"), "gpt-4o")

    proxy.check(
        readout,
        {
            "llm_model_tokens_total": {},
            "llm_member_tokens_total": {},
            "llm_unattributed_tokens_total": {("not_member",): 150},
        },
    )


def test_a_custom_auth_that_returns_no_parent_span_loses_the_usage(proxy):
    # What the custom-auth documentation's example returns (no parent_otel_span): LiteLLM
    # writes the call's usage onto FastAPI's already ended endpoint span ("Setting
    # attribute on ended span."), so no span with the usage is exported, and the proxy's
    # own "Received Proxy Server Request" span is never ended. Nothing counts for bob; the
    # call after it, on a key that hands the proxy's span back, counts as usual.
    readout = proxy.readout()
    reply = _chat(proxy.client("sk-naive-bob"), "gpt-4o")
    assert _usage(reply) == (100, 50)  # the proxy did answer, with the usage
    _chat(proxy.client("sk-alice"), "qwen-max")

    proxy.check(
        readout,
        {
            "llm_model_tokens_total": io("acme", "qwen-max", input=30, output=30),
            "llm_member_tokens_total": io("acme", "alice", input=30, output=30),
            "llm_model_requests_total": {("acme", "qwen-max", "ok"): 1},
            "llm_unattributed_tokens_total": {},
        },
    )
