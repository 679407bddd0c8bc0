"""LiteLLM's OpenTelemetry callback (litellm 1.110.2, the SDK) through both runtimes.

``litellm.integrations.opentelemetry.OpenTelemetry`` (what ``litellm.callbacks = ["otel"]``
builds) writes one ``litellm_request`` span per call when the call has finished (from
LiteLLM's logging thread), with ``gen_ai.usage.*``, ``gen_ai.request.model``,
``llm.user`` (the call's ``user=``) and ``metadata.*`` (LiteLLM's standard logging
metadata: ``metadata.user_api_key_user_id`` and friends, which the proxy fills and an SDK
caller may pass in ``metadata=``), and a ``raw_gen_ai_request`` child with the provider's
raw response (``llm.openai.*``, no token attributes).

Runtimes:

- ``in_process``: our ``TokenAttributionProcessor`` on the SDK ``TracerProvider`` that
  LiteLLM is given (``OpenTelemetry(tracer_provider=...)``; without one LiteLLM reuses the
  global SDK provider, or makes one and sets it global);
- ``service``: LiteLLM's own exporter, configured as a user configures it
  (``OTEL_EXPORTER=otlp_http``, ``OTEL_ENDPOINT=<service>/v1/traces``, here through
  ``OpenTelemetryConfig``), into a real ``llm-token-exporter serve`` on 127.0.0.1; the
  application's own spans go there from the application's provider.

Every test runs in both of LiteLLM's semconv modes: the default and
``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` (CLIENT spans,
``gen_ai.provider.name``, ``gen_ai.usage.cache_*``).

Nesting: LiteLLM parents its span on ``metadata={"litellm_parent_otel_span": span}`` (the
documented way). Under an active span *without* that, it writes no span of its own but
sets the call's attributes on the active span (the application's agent span becomes a
``chat`` span): see ``test_under_an_active_span_litellm_rewrites_that_span``.

The proxy is ``test_litellm_proxy.py``'s (its own venv); its ``LITELLM_OTEL_V2`` tracing
and virtual keys from Postgres are not covered (EMITTED.md).
"""

from __future__ import annotations

import os

# Before litellm is imported: never fetch the model cost map from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

import litellm  # noqa: E402
import pytest  # noqa: E402
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402
from litellm.integrations.opentelemetry import (  # noqa: E402
    OpenTelemetry,
    OpenTelemetryConfig,
)
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import Tracer  # noqa: E402

from tests.fakes.openai_server import FakeOpenAIServer, Usage  # noqa: E402
from tests.instrumentation.conftest import (  # noqa: E402
    CACHED,
    MESSAGES,
    USAGE,
    AppSpans,
    Exporter,
    Readout,
    io,
    worked_example_expected,
)

pytestmark = [
    pytest.mark.instrumentation,
    # litellm 1.110.2's own pydantic models warn on import and on every call.
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
]

_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


class _Logged(CustomLogger):
    """Counts the calls LiteLLM has finished logging (its callbacks run in list order, so
    once this one has seen a call, the OpenTelemetry callback before it has too)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()
        self._cond = threading.Condition()

    def _saw(self, kwargs: dict) -> None:
        with self._cond:
            self._seen.add(str(kwargs.get("litellm_call_id")))
            self._cond.notify_all()

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._saw(kwargs)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._saw(kwargs)

    def wait(self, count: int, timeout: float = 15.0) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self._seen) >= count, timeout)
        assert ok, f"LiteLLM logged {len(self._seen)} of {count} calls in {timeout} s"


#: Left out of a failure's span listing: content, LiteLLM's cost and raw response, and
#: the ~40 ``metadata.*`` keys that are ``''`` unless the proxy fills them.
_NOISE = (
    "gen_ai.input",
    "gen_ai.output",
    "gen_ai.system_instructions",
    "gen_ai.cost.",
    "llm.openai.",
    "llm.None.",
    "hidden_params",
    "metadata.usage_object",
)


def _describe(span: Any) -> str:
    parent = f"{span.parent.span_id:016x}" if span.parent else "-"
    attrs = {
        k: v for k, v in (span.attributes or {}).items() if v != "" and not k.startswith(_NOISE)
    }
    return f"  {span.name} [{span.context.span_id:016x} <- {parent}] {attrs}"


class _Gate(CustomLogger):
    """Holds LiteLLM's logging of every call until opened: put before the OpenTelemetry
    callback, it delays the ``litellm_request`` spans until the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.open.set()

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        assert self.open.wait(30), "the test never opened the gate"

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        assert self.open.wait(30), "the test never opened the gate"


class LiteLLM(AppSpans):
    """LiteLLM's OpenTelemetry callback on one runtime, the application's tracer, and the
    calls, all against the fake OpenAI server.

    Each call waits until LiteLLM has logged it (its span has ended) before it returns, so
    the spans end in the order a synchronous instrumentation's would; ``held()`` lets them
    end later, after the application's spans, as they often do in an application."""

    def __init__(self, runtime: str, fake: FakeOpenAIServer, pipeline_factory: Any) -> None:
        self.fake = fake
        self.captured = InMemorySpanExporter()  # every span, for waiting and for failures
        self.logged = _Logged()
        self.gate = _Gate()
        self.calls = 0
        self._server = None
        if runtime == "in_process":
            p = pipeline_factory()
            self.app_provider = p.provider
            self.litellm_provider = p.provider
            self.registry = p.registry
            self.otel = OpenTelemetry(config=OpenTelemetryConfig(), tracer_provider=p.provider)
        else:
            self._server = Exporter()
            self.registry = self._server.registry
            endpoint = self._server.traces_url
            # LiteLLM's own provider and BatchSpanProcessor(OTLP/HTTP exporter), private
            # (skip_set_global) so each test has its own.
            self.otel = OpenTelemetry(
                config=OpenTelemetryConfig(
                    exporter="otlp_http", endpoint=endpoint, skip_set_global=True
                )
            )
            self.litellm_provider = self.otel._tracer_provider
            assert isinstance(self.litellm_provider, TracerProvider)
            self.app_provider = TracerProvider(
                resource=Resource.create({"service.name": "instrumentation-tests"})
            )
            self.app_provider.add_span_processor(self._server.span_processor())
            self.app_provider.add_span_processor(SimpleSpanProcessor(self.captured))
        self.litellm_provider.add_span_processor(SimpleSpanProcessor(self.captured))
        self.tracer: Tracer = self.app_provider.get_tracer("tests.instrumentation")
        self.readout = Readout(self.registry)
        # litellm copies `callbacks` into its success/failure lists at a call's setup and
        # keeps them there: a test's callbacks must be reset, not just replaced.
        litellm.logging_callback_manager._reset_all_callbacks()
        litellm.callbacks = [self.gate, self.otel, self.logged]

    # -- calls ---------------------------------------------------------------------------

    def _kwargs(self, model: str, usage: Usage | None, parent: bool, **kwargs: Any) -> dict:
        metadata = dict(kwargs.pop("metadata", None) or {})
        if parent:
            metadata["litellm_parent_otel_span"] = trace.get_current_span()
        self.calls += 1
        return {
            "model": f"openai/{model}",
            "messages": MESSAGES,
            "api_base": self.fake.base_url,
            "api_key": "sk-test",
            "num_retries": 0,
            "extra_headers": usage.header() if usage else None,
            "metadata": metadata or None,
            **kwargs,
        }

    def chat(self, model: str, usage: Usage | None = None, parent: bool = True, **kw: Any):
        """``litellm.completion``, its span parented on the current span (when there is one
        and ``parent``)."""
        parent = parent and trace.get_current_span().get_span_context().is_valid
        try:
            return litellm.completion(**self._kwargs(model, usage, parent, **kw))
        finally:
            self._logged()

    def stream(self, model: str, usage: Usage | None = None, parent: bool = True, **kw: Any):
        parent = parent and trace.get_current_span().get_span_context().is_valid
        kwargs = self._kwargs(model, usage, parent, **kw)
        chunks = list(
            litellm.completion(**kwargs, stream=True, stream_options={"include_usage": True})
        )
        self._logged()
        return chunks

    def embed(self, model: str = "text-embedding-3-small", **kw: Any):
        parent = trace.get_current_span().get_span_context().is_valid
        kwargs = self._kwargs(model, None, parent, **kw)
        kwargs.pop("messages")
        kwargs.pop("num_retries")
        reply = litellm.embedding(**kwargs, input=["reset password", "forgot password"])
        self._logged()
        return reply

    def _logged(self) -> None:
        if self.gate.open.is_set():
            self.logged.wait(self.calls)

    @contextmanager
    def held(self) -> Iterator[None]:
        """LiteLLM logs no call made in the block until the block has ended."""
        self.gate.open.clear()
        try:
            yield
        finally:
            self.gate.open.set()

    # -- reading -------------------------------------------------------------------------

    def settle(self) -> None:
        """Waits until LiteLLM has logged every call made, then flushes both providers (the
        service answers an export once it has counted it)."""
        self.logged.wait(self.calls)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the logging thread ends its span right after
            spans = self.captured.get_finished_spans()
            if sum(1 for s in spans if "litellm.call_id" in (s.attributes or {})) >= self.calls:
                break
            time.sleep(0.02)
        assert self.litellm_provider.force_flush(10_000)
        assert self.app_provider.force_flush(10_000)

    def check(self, expected: dict[str, dict[tuple[str, ...], int]]) -> None:
        self.settle()
        try:
            self.readout.check(expected)
        except pytest.fail.Exception as exc:
            spans = "\n".join(_describe(span) for span in self.captured.get_finished_spans())
            metrics = exc.msg.split("\n\nspans:")[0]
            raise pytest.fail.Exception(f"{metrics}\n\nspans:\n{spans}", pytrace=False) from None

    def close(self) -> None:
        self.gate.open.set()
        litellm.logging_callback_manager._reset_all_callbacks()
        if self._server is not None:
            self.litellm_provider.shutdown()
            self.app_provider.shutdown()
            self._server.close()


@pytest.fixture(params=["default", "gen_ai_latest_experimental"])
def semconv(request, monkeypatch) -> str:
    if request.param == "default":
        monkeypatch.delenv(_OPT_IN, raising=False)
    else:
        monkeypatch.setenv(_OPT_IN, request.param)
    return request.param


@pytest.fixture(params=["in_process", "service"])
def lite(request, semconv, fake_openai, pipeline, monkeypatch) -> Iterator[LiteLLM]:
    monkeypatch.delenv("USE_OTEL_LITELLM_REQUEST_SPAN", raising=False)
    made = LiteLLM(request.param, fake_openai, pipeline)
    try:
        yield made
    finally:
        made.close()


# -- tests --------------------------------------------------------------------------------


def test_worked_example_counts_exactly_through_real_litellm_calls(lite):
    # The caller is the call's `user=` (llm.user); each member's tenant is the one tenant
    # they belong to. The agent, workflow and tool spans are the application's.
    with lite.agent("support-bot"):
        with lite.workflow("support-chat", chatflow=True):
            lite.chat("gpt-4o", user="alice")  # 100, 50
        with lite.tool("summarizer"):
            with lite.workflow("summarize"):
                chunks = lite.stream("gpt-4o-mini", user="alice")  # 200, 20
    with lite.workflow("translate"):
        lite.chat("qwen-max", user="bob")  # 30, 30
        with lite.workflow("summarize"):
            lite.chat("gpt-4o-mini", Usage(10, 5), user="bob")
    with lite.agent("support-bot"):
        with lite.workflow("support-chat", chatflow=True):
            lite.chat("gpt-4o", Usage(1000, 500), user="dave")
    with lite.agent("support-bot"):
        reply = lite.chat("gpt-4o", Usage(7, 3), user="carol")
    # what the fake server returned is what LiteLLM saw
    assert chunks[-1].usage.prompt_tokens == USAGE["gpt-4o-mini"].prompt
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 3)

    expected = worked_example_expected()
    # Distinct users are the callers found on the agent span or its ancestors
    # (attribution.md); here the callers are only on LiteLLM's spans.
    expected["llm_agent_users"] = {}
    lite.check(expected)


def test_streamed_chat_with_include_usage_counts_the_final_usage_chunk(lite):
    with lite.workflow("summarize"):
        chunks = lite.stream("gpt-4o", user="alice")
    assert chunks[-1].usage.prompt_tokens == 100
    assert lite.fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}

    lite.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_workflow_tokens_total": io("acme", "summarize", input=100, output=50),
            "llm_member_tokens_total": io("acme", "alice", input=100, output=50),
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
        }
    )


def test_the_caller_may_come_from_litellm_metadata_user_api_key_user_id(lite):
    # What the proxy sets for a virtual key's user, which an SDK caller may pass too.
    lite.chat("qwen-max", metadata={"user_api_key_user_id": "bob"})

    lite.check(
        {
            "llm_model_tokens_total": io("acme", "qwen-max", input=30, output=30),
            "llm_member_tokens_total": io("acme", "bob", input=30, output=30),
            "llm_unattributed_tokens_total": {},
        }
    )


def test_embeddings_count_as_input_tokens_only(lite):
    with lite.workflow("summarize"):
        lite.embed(user="bob")  # 12 prompt tokens

    lite.check(
        {
            "llm_model_tokens_total": io("acme", "text-embedding-3-small", input=12),
            "llm_workflow_tokens_total": io("acme", "summarize", input=12),
            "llm_member_tokens_total": io("acme", "bob", input=12),
            "llm_model_requests_total": {("acme", "text-embedding-3-small", "ok"): 1},
        }
    )


def test_cached_prompt_tokens_stay_inside_input_as_litellm_reports_no_cache_detail(lite):
    # For an OpenAI answer LiteLLM writes no cache attribute in either mode: its
    # gen_ai_latest_experimental mode writes gen_ai.usage.cache_read.input_tokens only from
    # the usage object's cache_read_input_tokens (Anthropic's field), not from OpenAI's
    # prompt_tokens_details.cached_tokens. The 1024 cached tokens appear only inside
    # metadata.usage_object, a Python repr (not JSON). So they are counted as input, and
    # nothing as cache.
    with lite.agent("support-bot"):
        reply = lite.chat("gpt-4o", CACHED, user="alice")
    assert reply.usage.prompt_tokens_details.cached_tokens == 1024

    lite.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=1200, output=80),
            "llm_model_cache_tokens_total": {},
            "llm_agent_tokens_total": io("acme", "support-bot", input=1200, output=80),
        }
    )


def test_a_caller_outside_the_billing_tenant_is_unattributed_not_member(lite):
    with lite.span("POST /chat", **{"tenant.id": "acme"}):
        with lite.agent("support-bot"):
            lite.chat("gpt-4o", user="carol")  # carol is globex's
    with lite.agent("support-bot"):
        lite.chat("gpt-4o-mini", user="dave")  # dave is in no tenant
    with lite.agent("support-bot"):
        lite.chat("qwen-max")  # no caller at all

    lite.check(
        {
            "llm_model_tokens_total": {},
            "llm_agent_tokens_total": {},
            "llm_member_tokens_total": {},
            "llm_unattributed_tokens_total": {("not_member",): 150 + 220, ("no_caller",): 60},
        }
    )


def test_a_failed_call_counts_an_error_request_and_no_tokens(lite):
    with lite.agent("support-bot"):
        with pytest.raises(litellm.NotFoundError):
            lite.chat("no-such-model", user="alice")

    lite.check(
        {
            "llm_model_tokens_total": {},
            "llm_model_requests_total": {("acme", "no-such-model", "error"): 1},
            "llm_unattributed_tokens_total": {},
        }
    )


def test_chat_workflow_tokens_count_for_the_agent_not_the_workflow(lite):
    with lite.agent("support-bot"):
        with lite.workflow("support-chat"):  # a chat workflow by the directory
            lite.chat("gpt-4o", user="alice")
            lite.stream("gpt-4o-mini", user="alice")

    lite.check(
        {
            "llm_agent_tokens_total": io("acme", "support-bot", input=300, output=70),
            "llm_workflow_tokens_total": {},
            "llm_workflow_runs_total": {},
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
        }
    )


def test_under_an_active_span_litellm_rewrites_that_span(lite):
    # No litellm_parent_otel_span: LiteLLM finds the active span and, instead of a span of
    # its own, sets the call's attributes on it (gen_ai.operation.name=chat, usage,
    # llm.user) -- from its logging thread, so the application must not end that span
    # before LiteLLM has logged the call. The tokens still count once, for the model and
    # the member; the application's span is now a chat span, so there is no agent.
    with lite.span("POST /chat"):
        lite.chat("gpt-4o", user="alice", parent=False)  # returns once LiteLLM logged it

    lite.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_member_tokens_total": io("acme", "alice", input=100, output=50),
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
        }
    )


def test_use_otel_litellm_request_span_nests_under_the_active_agent(lite, monkeypatch):
    # USE_OTEL_LITELLM_REQUEST_SPAN=true: a litellm_request span under the active span.
    monkeypatch.setenv("USE_OTEL_LITELLM_REQUEST_SPAN", "true")
    with lite.agent("support-bot"):
        lite.chat("gpt-4o-mini", user="bob", parent=False)

    lite.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o-mini", input=200, output=20),
            "llm_agent_tokens_total": io("acme", "support-bot", input=200, output=20),
            "llm_member_tokens_total": io("acme", "bob", input=200, output=20),
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
        }
    )


def test_litellm_spans_that_end_after_their_parents_still_count_for_them(lite):
    # LiteLLM writes its span from its logging thread once the call has returned, so in an
    # application the agent's and workflow's spans (here, every span of the trace) have
    # often ended before it. Its tokens still belong to them.
    with lite.held():
        with lite.workflow("translate"):
            lite.chat("qwen-max", user="bob")  # 30, 30
            with lite.workflow("summarize"):
                lite.chat("gpt-4o-mini", Usage(10, 5), user="bob")
        with lite.agent("support-bot"):
            lite.chat("gpt-4o", Usage(7, 3), user="carol")
    # the gate is open: LiteLLM now ends its three spans, after their traces' roots

    lite.check(
        {
            "llm_model_tokens_total": {
                **io("acme", "qwen-max", input=30, output=30),
                **io("acme", "gpt-4o-mini", input=10, output=5),
                **io("globex", "gpt-4o", input=7, output=3),
            },
            "llm_workflow_tokens_total": io("acme", "translate", input=40, output=35),
            "llm_agent_tokens_total": io("globex", "support-bot", input=7, output=3),
            "llm_member_tokens_total": {
                **io("acme", "bob", input=40, output=35),
                **io("globex", "carol", input=7, output=3),
            },
            "llm_workflow_runs_total": {("acme", "summarize"): 1, ("acme", "translate"): 1},
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
        }
    )


def test_the_otel_callback_named_in_litellm_callbacks_exports_to_the_service(
    fake_openai, monkeypatch
):
    # What a LiteLLM SDK user writes: litellm.callbacks = ["otel"] and OTEL_EXPORTER /
    # OTEL_ENDPOINT. LiteLLM then builds OpenTelemetry() from the environment, makes its own
    # SDK TracerProvider (BatchSpanProcessor + OTLP/HTTP exporter) and sets it as the
    # global one -- once per process, so this test alone uses it (the others pass their
    # provider, or skip_set_global).
    monkeypatch.delenv(_OPT_IN, raising=False)
    service = Exporter()
    try:
        monkeypatch.setenv("OTEL_EXPORTER", "otlp_http")
        monkeypatch.setenv("OTEL_ENDPOINT", service.traces_url)
        readout = Readout(service.registry)
        logged = _Logged()
        litellm.logging_callback_manager._reset_all_callbacks()
        litellm.callbacks = ["otel", logged]
        reply = litellm.completion(
            model="openai/gpt-4o",
            messages=MESSAGES,
            api_base=fake_openai.base_url,
            api_key="sk-test",
            num_retries=0,
            user="alice",
        )
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (100, 50)
        logged.wait(1)
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider), provider  # LiteLLM's own
        assert provider.force_flush(10_000)

        readout.check(
            {
                "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
                "llm_member_tokens_total": io("acme", "alice", input=100, output=50),
                "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
                "llm_unattributed_tokens_total": {},
            }
        )
    finally:
        litellm.logging_callback_manager._reset_all_callbacks()
        service.close()
