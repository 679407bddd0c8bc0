"""OpenLIT (``openlit`` 1.45.0) through both runtimes, its OpenAI and Anthropic paths.

``openlit.init()`` has no ``tracer=`` parameter in 1.45.0: it reuses the global SDK
TracerProvider when one is set (else it makes one, with ``telemetry.sdk.name=openlit`` on
the Resource, and an OTLP or console exporter), and its instrumentors take their tracer
from the global provider once, when ``init`` runs. So ``init`` runs once per process, on a
global provider whose only processor is a relay to the current test's processors:

- ``in_process``: our ``TokenAttributionProcessor`` (fresh registry) and a capture;
- ``service``: an OTLP/HTTP span exporter to a real ``llm-token-exporter serve`` on
  127.0.0.1 (its ``/v1/traces``), and a capture.

OpenLIT's model-call spans (``chat <model>``, ``embeddings <model>``, kind CLIENT) carry
``telemetry.sdk.name=openlit`` themselves, so our conventions know them even on an
application's Resource. The caller is the call's ``user=`` (``gen_ai.request.user``) on
the OpenAI path; Anthropic's path records no caller (not even ``metadata.user_id``), so
there it is on the root span (``enduser.id``). The tenant is on the root span
(``tenant.id``). The agent, workflow and tool spans are the application's own.

OpenLIT reports Anthropic's ``gen_ai.usage.input_tokens`` as the API's count, which
excludes the cache tokens; our conventions add them back for OpenLIT's anthropic provider
(``OPENLIT_INPUT_EXCLUDES_CACHE``).
"""

from __future__ import annotations

import os

# Before openlit is imported or initialised: no log exporter (console) for its events.
os.environ.setdefault("OTEL_LOGS_EXPORTER", "none")

import json  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import anthropic  # noqa: E402
import openai  # noqa: E402
import openlit  # noqa: E402
import pytest  # noqa: E402
from openlit._instrumentors import MODULE_NAME_MAP  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import Tracer  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from otel_processor import TokenAttributionProcessor  # noqa: E402
from tests.fakes.anthropic_server import AnthropicUsage, FakeAnthropicServer  # noqa: E402
from tests.fakes.openai_server import Usage  # noqa: E402
from tests.instrumentation.conftest import (  # noqa: E402
    CACHED,
    DIRECTORY,
    MESSAGES,
    AppSpans,
    Exporter,
    Readout,
    Relay,
    chat,
    describe,
    embed,
    io,
    stream,
    worked_example_expected,
)

pytestmark = pytest.mark.instrumentation

#: The only instrumentors OpenLIT may install here: no HTTP client or framework spans (the
#: service runtime's own OTLP export goes through requests/urllib3).
_ENABLED = ("openai", "anthropic")
CLAUDE = "claude-sonnet-4-5"
#: What the fake Anthropic server reports for CLAUDE: Anthropic's input excludes the cache.
CLAUDE_USAGE = AnthropicUsage(40, 25)


@pytest.fixture(scope="session")
def relay() -> Iterator[Relay]:
    relay = Relay()
    provider = TracerProvider(resource=Resource.create({"service.name": "instrumentation-tests"}))
    provider.add_span_processor(relay)
    trace.set_tracer_provider(provider)
    with tempfile.TemporaryDirectory(prefix="openlit-pricing-") as tmp:
        pricing = os.path.join(tmp, "pricing.json")  # no fetch of OpenLIT's price list
        with open(pricing, "w", encoding="utf-8") as f:
            json.dump({}, f)
        openlit.init(
            service_name="instrumentation-tests",
            disable_batch=True,
            disable_metrics=True,
            disable_events=True,
            capture_message_content=False,
            pricing_json=pricing,
            disabled_instrumentors=[name for name in MODULE_NAME_MAP if name not in _ENABLED],
        )
    assert trace.get_tracer_provider() is provider  # reused, not replaced
    yield relay
    provider.shutdown()


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer({CLAUDE: CLAUDE_USAGE}) as server:
        yield server


@pytest.fixture
def claude(fake_anthropic: FakeAnthropicServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake_anthropic.base_url, api_key="sk-ant-test", max_retries=0
    )


class Runtime(AppSpans):
    """The relay's targets for one runtime, the application's tracer, and the readout."""

    def __init__(self, runtime: str, relay: Relay) -> None:
        self.relay = relay
        self.captured = InMemorySpanExporter()
        self.processor: TokenAttributionProcessor | None = None
        self._server = None
        if runtime == "in_process":
            self.registry = CollectorRegistry()
            self.processor = TokenAttributionProcessor(
                directory=str(DIRECTORY), prices=None, registry=self.registry
            )
            first: SpanProcessor = self.processor
        else:
            self._server = Exporter()
            self.registry = self._server.registry
            first = self._server.span_processor()
        relay.targets = (first, SimpleSpanProcessor(self.captured))
        self.tracer: Tracer = trace.get_tracer("tests.instrumentation")
        self.readout = Readout(self.registry, self.captured)

    def check(self, expected: dict[str, dict[tuple[str, ...], int]]) -> None:
        # in_process: the processor counts on its worker; service: the exporter is
        # synchronous and the service answers an export once it has counted it.
        assert self.relay.force_flush(10_000)
        self.readout.check(expected)

    def close(self) -> None:
        self.relay.targets = ()
        if self.processor is not None:
            self.processor.shutdown()
        if self._server is not None:
            self._server.close()


@pytest.fixture(params=["in_process", "service"])
def lit(request, relay) -> Iterator[Runtime]:
    made = Runtime(request.param, relay)
    try:
        yield made
    finally:
        made.close()


def message(client: anthropic.Anthropic, usage: AnthropicUsage | None = None, **kw: Any):
    return client.messages.create(
        model=kw.pop("model", CLAUDE),
        max_tokens=256,
        messages=MESSAGES,
        extra_headers=usage.header() if usage else None,
        **kw,
    )


def _model_spans(lit: Runtime) -> list[ReadableSpan]:
    return [
        s
        for s in lit.captured.get_finished_spans()
        if (s.attributes or {}).get("telemetry.sdk.name") == "openlit"
    ]


# -- the OpenAI path ----------------------------------------------------------------------


def test_worked_example_counts_exactly_through_openlit(lit, client):
    # The caller is each call's `user=`; the tenant is on the root span.
    with lit.agent("support-bot", **{"tenant.id": "acme"}):
        with lit.workflow("support-chat", chatflow=True):
            chat(client, "gpt-4o", user="alice")  # 100, 50
        with lit.tool("summarizer"):
            with lit.workflow("summarize"):
                chat(client, "gpt-4o-mini", user="alice")  # 200, 20
    with lit.workflow("translate", **{"tenant.id": "acme"}):
        chat(client, "qwen-max", user="bob")  # 30, 30
        with lit.workflow("summarize"):
            chat(client, "gpt-4o-mini", Usage(10, 5), user="bob")
    with lit.agent("support-bot", **{"enduser.id": "dave"}):  # dave is in no tenant
        with lit.workflow("support-chat", chatflow=True):
            chat(client, "gpt-4o", Usage(1000, 500), user="dave")
    with lit.agent("support-bot", **{"tenant.id": "globex"}):
        chat(client, "gpt-4o", Usage(7, 3), user="carol")

    expected = worked_example_expected()
    # Distinct users are the callers found on the agent span or its ancestors
    # (attribution.md); here the callers are on OpenLIT's model spans
    # (gen_ai.request.user), and only dave's agent span names its caller.
    expected["llm_agent_users"] = {("acme", "support-bot"): 1}
    lit.check(expected)


def test_the_caller_is_the_calls_user_and_the_tenant_the_root_spans(lit, client):
    with lit.agent("support-bot", **{"tenant.id": "acme"}):
        reply = chat(client, "gpt-4o", user="alice")
    assert reply.usage.prompt_tokens == 100
    (span,) = _model_spans(lit)
    assert span.attributes["gen_ai.request.user"] == "alice"

    lit.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_agent_tokens_total": io("acme", "support-bot", input=100, output=50),
            "llm_member_tokens_total": io("acme", "alice", input=100, output=50),
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
        }
    )


def test_streamed_chat_with_include_usage_counts_the_final_usage_chunk(lit, client):
    with lit.workflow("summarize", **{"tenant.id": "acme", "enduser.id": "alice"}):
        chunks = stream(client, "gpt-4o", include_usage=True)
    assert chunks[-1].usage.prompt_tokens == 100

    lit.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_workflow_tokens_total": io("acme", "summarize", input=100, output=50),
            "llm_member_tokens_total": io("acme", "alice", input=100, output=50),
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
        }
    )


def test_streamed_chat_without_include_usage_counts_openlits_estimate(lit, client):
    # OpenAI sends no usage on such a stream; OpenLIT then *estimates* the tokens
    # (ceil(len(text) / 2) of the prompt and of the reply) and reports the estimate as
    # gen_ai.usage.input_tokens/output_tokens, with nothing on the span to say so. We
    # count what it reports (see EMITTED.md).
    with lit.workflow("summarize", **{"tenant.id": "acme", "enduser.id": "alice"}):
        stream(client, "gpt-4o", include_usage=False)
    (span,) = _model_spans(lit)
    estimated_in = span.attributes["gen_ai.usage.input_tokens"]
    estimated_out = span.attributes["gen_ai.usage.output_tokens"]
    assert (estimated_in, estimated_out) == (17, 21)  # not the 100/50 the model used

    lit.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=17, output=21),
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
        }
    )


def test_embeddings_count_as_input_tokens_only(lit, client):
    with lit.workflow("summarize", **{"tenant.id": "acme", "enduser.id": "bob"}):
        embed(client)  # 12 prompt tokens

    lit.check(
        {
            "llm_model_tokens_total": io("acme", "text-embedding-3-small", input=12),
            "llm_workflow_tokens_total": io("acme", "summarize", input=12),
            "llm_member_tokens_total": io("acme", "bob", input=12),
        }
    )


def test_openai_cached_prompt_tokens_count_as_cache_read_inside_input(lit, client):
    # OpenLIT's OpenAI input includes the cached tokens (as OpenAI's prompt_tokens does):
    # nothing is added back.
    with lit.agent("support-bot", **{"tenant.id": "acme"}):
        chat(client, "gpt-4o", CACHED, user="alice")

    lit.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=1200, output=80),
            "llm_model_cache_tokens_total": {("acme", "gpt-4o", "read"): 1024},
            "llm_member_tokens_total": io("acme", "alice", input=1200, output=80),
        }
    )


def test_a_caller_outside_the_billing_tenant_is_unattributed_not_member(lit, client):
    with lit.agent("support-bot", **{"tenant.id": "acme"}):
        chat(client, "gpt-4o", user="carol")  # carol is globex's
    with lit.agent("support-bot"):
        chat(client, "gpt-4o-mini", user="dave")  # dave is in no tenant
    with lit.agent("support-bot"):
        chat(client, "qwen-max")  # no caller at all (gen_ai.request.user is "")

    lit.check(
        {
            "llm_model_tokens_total": {},
            "llm_member_tokens_total": {},
            "llm_unattributed_tokens_total": {("not_member",): 150 + 220, ("no_caller",): 60},
        }
    )


def test_a_failed_openai_call_counts_an_error_request_and_no_tokens(lit, client):
    with lit.agent("support-bot", **{"tenant.id": "acme", "enduser.id": "alice"}):
        with pytest.raises(openai.NotFoundError):
            chat(client, "no-such-model", user="alice")

    lit.check(
        {
            "llm_model_tokens_total": {},
            "llm_model_requests_total": {("acme", "no-such-model", "error"): 1},
        }
    )


# -- the Anthropic path -------------------------------------------------------------------


def test_anthropic_message_counts_exactly(lit, claude):
    with lit.agent("support-bot", **{"tenant.id": "acme", "enduser.id": "alice"}):
        reply = message(claude)
    assert reply.usage.input_tokens == 40

    lit.check(
        {
            "llm_model_tokens_total": io("acme", CLAUDE, input=40, output=25),
            "llm_model_cache_tokens_total": {},
            "llm_agent_tokens_total": io("acme", "support-bot", input=40, output=25),
            "llm_member_tokens_total": io("acme", "alice", input=40, output=25),
            "llm_model_requests_total": {("acme", CLAUDE, "ok"): 1},
        }
    )


#: Prompts partly served from Anthropic's prompt cache. "mostly_cached" has more cache than
#: input, so it would be added back even without the OpenLIT rule; "mostly_uncached" is
#: counted right only because our conventions know OpenLIT's Anthropic input excludes it.
CACHED_PROMPTS = {
    "mostly_cached": AnthropicUsage(10, 80, cache_read=1000, cache_write=200),
    "mostly_uncached": AnthropicUsage(500, 80, cache_read=100, cache_write=50),
}


@pytest.mark.parametrize("prompt", list(CACHED_PROMPTS))
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
def test_anthropic_cache_tokens_are_added_back_to_openlits_input(lit, claude, streamed, prompt):
    # Anthropic's input_tokens excludes the tokens read from and written to the cache,
    # and OpenLIT reports it so: the prompt was input + cache_read + cache_write tokens.
    usage = CACHED_PROMPTS[prompt]
    with lit.workflow("summarize", **{"tenant.id": "acme", "enduser.id": "alice"}):
        if streamed:
            with claude.messages.stream(
                model=CLAUDE,
                max_tokens=256,
                messages=MESSAGES,
                extra_headers=usage.header(),
            ) as events:
                assert "".join(events.text_stream).startswith("fake reply")
        else:
            assert message(claude, usage).usage.cache_read_input_tokens == usage.cache_read
    (span,) = _model_spans(lit)
    assert span.attributes["gen_ai.provider.name"] == "anthropic"
    assert span.attributes["gen_ai.usage.input_tokens"] == usage.input
    assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == usage.cache_read
    assert span.attributes["gen_ai.usage.cache_creation.input_tokens"] == usage.cache_write
    prompt_tokens = usage.input + usage.cache_read + usage.cache_write

    lit.check(
        {
            "llm_model_tokens_total": io("acme", CLAUDE, input=prompt_tokens, output=80),
            "llm_model_cache_tokens_total": {
                ("acme", CLAUDE, "read"): usage.cache_read,
                ("acme", CLAUDE, "write"): usage.cache_write,
            },
            "llm_workflow_tokens_total": io("acme", "summarize", input=prompt_tokens, output=80),
            "llm_member_tokens_total": io("acme", "alice", input=prompt_tokens, output=80),
        }
    )


def test_a_failed_anthropic_call_leaves_a_span_without_attributes(lit, claude):
    # OpenLIT 1.45.0's Anthropic wrapper ends a failed call's span (`chat <model>`, status
    # ERROR) with no attributes at all: no operation, no model, no provider. It cannot be
    # told from any other span, so it is counted as nothing (see EMITTED.md).
    with lit.agent("support-bot", **{"tenant.id": "acme", "enduser.id": "alice"}):
        with pytest.raises(anthropic.NotFoundError):
            message(claude, model="no-such-model")
    (failed,) = [s for s in lit.captured.get_finished_spans() if s.name == "chat no-such-model"]
    assert dict(failed.attributes or {}) == {}, describe(failed)

    lit.check({"llm_model_tokens_total": {}, "llm_model_requests_total": {}})
