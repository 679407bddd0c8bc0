"""pydantic-ai (``pydantic-ai-slim[openai]`` 2.68.0) through both runtimes.

pydantic-ai instruments itself: ``Agent(..., capabilities=[Instrumentation(settings=
InstrumentationSettings(tracer_provider=...))])`` writes an agent run span (``invoke_agent <name>``,
``gen_ai.operation.name=invoke_agent``, ``gen_ai.agent.name``) and under it one ``chat
<model>`` span per model request, with ``gen_ai.usage.*``. The run's ``metadata=`` (where an
application puts its user and tenant ids) is written on the agent run span **when that span
ends**, after its model calls have ended, as one JSON string attribute ``metadata``
(``capabilities/instrumentation.py``, ``_run_span_end_attributes``). The caller and tenant
are read from that JSON (``user_id``, ``tenant_id``): the in-process processor must wait
for the agent span to end before it attributes the model calls.

Runtimes:

- ``in_process``: our ``TokenAttributionProcessor`` on the provider pydantic-ai is given;
- ``service``: that provider exports over OTLP/HTTP (``SimpleSpanProcessor``) to a real
  ``llm-token-exporter serve`` on 127.0.0.1.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.capabilities import Instrumentation
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.fakes.openai_server import FakeOpenAIServer, Usage
from tests.instrumentation.conftest import CACHED, Pipeline, describe, io

pytestmark = pytest.mark.instrumentation


@pytest.fixture(params=["in_process", "service"])
def runtime(request, pipeline) -> Pipeline:
    return pipeline(runtime=request.param)  # closed by the pipeline fixture


def make_agent(runtime: Pipeline, fake: FakeOpenAIServer, name: str = "support-bot") -> Agent:
    """``Agent('openai:gpt-4o')``, its OpenAI provider pointed at the fake server."""
    model = OpenAIChatModel(
        "gpt-4o",
        provider=OpenAIProvider(base_url=fake.base_url, api_key="sk-test"),
    )
    return Agent(
        model,
        name=name,
        # pydantic-ai 2.x: the Instrumentation capability (Agent(instrument=...) is gone);
        # per agent, so each test has its own provider (Agent.instrument_all is global).
        capabilities=[
            Instrumentation(settings=InstrumentationSettings(tracer_provider=runtime.provider))
        ],
    )


def run(agent: Agent, usage: Usage | None = None, **metadata: str) -> Any:
    settings = {"extra_headers": usage.header()} if usage else None
    return agent.run_sync(
        "How do I reset my password?", metadata=metadata or None, model_settings=settings
    )


def _agent_span(runtime: Pipeline) -> Any:
    spans = [
        s for s in runtime.captured.get_finished_spans()
        if (s.attributes or {}).get("gen_ai.operation.name") == "invoke_agent"
    ]
    assert spans, "\n".join(describe(s) for s in runtime.captured.get_finished_spans())
    return spans[-1]


# -- tests --------------------------------------------------------------------------------


def test_caller_and_tenant_come_from_the_run_metadata_written_at_the_agent_span_end(
    runtime, fake_openai
):
    agent = make_agent(runtime, fake_openai)
    result = run(agent, user_id="alice", tenant_id="acme")
    assert result.usage.input_tokens == 100  # what the fake server returned
    assert result.usage.output_tokens == 50

    runtime.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=100, output=50),
            "llm_agent_tokens_total": io("acme", "support-bot", input=100, output=50),
            "llm_member_tokens_total": io("acme", "alice", input=100, output=50),
            "llm_model_requests_total": {("acme", "gpt-4o", "ok"): 1},
            "llm_unattributed_tokens_total": {},
            "llm_agent_invocations_total": {("acme", "support-bot"): 1},
        }
    )
    # What pydantic-ai really wrote (EMITTED.md): the metadata as JSON, on the agent span.
    attrs = _agent_span(runtime).attributes
    assert json.loads(attrs["metadata"]) == {"user_id": "alice", "tenant_id": "acme"}
    assert attrs["gen_ai.agent.name"] == "support-bot"


def test_each_run_is_attributed_to_its_own_caller(runtime, fake_openai):
    agent = make_agent(runtime, fake_openai)
    run(agent, user_id="alice", tenant_id="acme")
    run(agent, Usage(7, 3), user_id="carol", tenant_id="globex")
    run(agent, Usage(1000, 500), user_id="dave")  # dave is in no tenant
    run(agent, Usage(30, 30))  # no metadata: no caller

    runtime.check(
        {
            "llm_model_tokens_total": {
                **io("acme", "gpt-4o", input=100, output=50),
                **io("globex", "gpt-4o", input=7, output=3),
            },
            "llm_agent_tokens_total": {
                **io("acme", "support-bot", input=100, output=50),
                **io("globex", "support-bot", input=7, output=3),
            },
            "llm_member_tokens_total": {
                **io("acme", "alice", input=100, output=50),
                **io("globex", "carol", input=7, output=3),
            },
            "llm_unattributed_tokens_total": {("not_member",): 1500, ("no_caller",): 60},
        }
    )


def test_cached_prompt_tokens_are_read_from_the_semconv_cache_attribute(runtime, fake_openai):
    # pydantic-ai writes gen_ai.usage.cache_read.input_tokens (part of input_tokens).
    agent = make_agent(runtime, fake_openai)
    run(agent, CACHED, user_id="alice", tenant_id="acme")

    runtime.check(
        {
            "llm_model_tokens_total": io("acme", "gpt-4o", input=1200, output=80),
            "llm_model_cache_tokens_total": {("acme", "gpt-4o", "read"): 1024},
            "llm_agent_tokens_total": io("acme", "support-bot", input=1200, output=80),
            "llm_member_tokens_total": io("acme", "alice", input=1200, output=80),
        }
    )


def test_the_nearest_span_naming_each_wins_field_by_field(runtime, fake_openai):
    # The run's metadata names only the caller; the tenant comes from the application's
    # outer span. The agent span is nearer the model call than that span: its metadata
    # caller (bob) wins over the outer span's enduser.id (alice).
    agent = make_agent(runtime, fake_openai)
    tracer = runtime.provider.get_tracer("tests.instrumentation")
    with tracer.start_as_current_span(
        "request", attributes={"enduser.id": "alice", "tenant.id": "acme"}
    ):
        run(agent, user_id="bob")

    runtime.check(
        {
            "llm_member_tokens_total": io("acme", "bob", input=100, output=50),
            "llm_agent_tokens_total": io("acme", "support-bot", input=100, output=50),
        }
    )
