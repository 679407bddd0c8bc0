"""Every convention and rename of conventions.md reads into the same record."""

from __future__ import annotations

import math

import pytest

from otel_processor.conventions import (
    AGENT,
    MODEL,
    OTHER,
    TOOL,
    WORKFLOW,
    InvalidSpan,
    normalize,
    span_kind,
)


@pytest.mark.parametrize(
    ("attrs", "kind"),
    [
        ({"gen_ai.operation.name": "chat"}, MODEL),
        ({"gen_ai.operation.name": "text_completion"}, MODEL),
        ({"gen_ai.operation.name": "generate_content"}, MODEL),
        ({"gen_ai.operation.name": "embeddings"}, MODEL),
        ({"openinference.span.kind": "LLM"}, MODEL),
        ({"openinference.span.kind": "EMBEDDING"}, MODEL),
        ({"gen_ai.span.kind": "LLM"}, MODEL),
        ({"cozeloop.span_type": "model"}, MODEL),
        ({"llm.request.type": "chat"}, MODEL),
        ({"gen_ai.operation.name": "invoke_agent"}, AGENT),
        ({"openinference.span.kind": "AGENT"}, AGENT),
        ({"traceloop.span.kind": "agent"}, AGENT),
        ({"gen_ai.operation.name": "invoke_workflow"}, WORKFLOW),
        ({"traceloop.span.kind": "workflow"}, WORKFLOW),
        ({"dify.workflow_id": "wf"}, WORKFLOW),
        ({"workflow_mode": 1}, WORKFLOW),
        ({"gen_ai.operation.name": "execute_tool"}, TOOL),
        ({"openinference.span.kind": "TOOL"}, TOOL),
        ({"traceloop.span.kind": "tool"}, TOOL),
        ({"openinference.span.kind": "CHAIN"}, OTHER),
        ({"http.method": "GET"}, OTHER),
        # an LLM node inside a Dify workflow carries the workflow id too: the model call wins
        ({"gen_ai.span.kind": "LLM", "dify.workflow_id": "wf"}, MODEL),
    ],
)
def test_span_kind_reads_every_convention(attrs, kind):
    assert span_kind(attrs) == kind


def _chat(**attrs):
    return normalize({"gen_ai.operation.name": "chat", **attrs})


@pytest.mark.parametrize(
    ("inp", "out"),
    [
        ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"),
        ("gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens"),
        ("llm.token_count.prompt", "llm.token_count.completion"),
    ],
)
def test_token_counts_are_read_under_old_and_new_names(inp, out):
    record = _chat(**{inp: 12, out: 5})
    assert (record.input_tokens, record.output_tokens, record.has_usage) == (12, 5, True)


def test_new_name_wins_over_old_name():
    record = _chat(**{"gen_ai.usage.input_tokens": 12, "gen_ai.usage.prompt_tokens": 99})
    assert record.input_tokens == 12


@pytest.mark.parametrize(
    "name",
    [
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ],
)
def test_cache_read_names(name):
    assert _chat(**{"gen_ai.usage.input_tokens": 10, name: 4}).cache_read_tokens == 4


@pytest.mark.parametrize(
    "name",
    [
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ],
)
def test_cache_write_names(name):
    assert _chat(**{"gen_ai.usage.input_tokens": 10, name: 3}).cache_write_tokens == 3


def test_cache_beyond_input_is_read_as_input_that_excludes_the_cache():
    record = _chat(**{
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.cache_read_input_tokens": 50,
        "gen_ai.usage.cache_creation_input_tokens": 5,
    })
    assert (record.input_tokens, record.cache_read_tokens, record.cache_write_tokens) == (65, 50, 5)


@pytest.mark.parametrize(
    ("attrs", "model", "response"),
    [
        ({"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06"},
         "gpt-4o", "gpt-4o-2024-08-06"),
        ({"gen_ai.response.model": "gpt-4o-2024-08-06"}, None, "gpt-4o-2024-08-06"),
        ({"llm.model_name": "qwen-max"}, None, "qwen-max"),
        ({"embedding.model_name": "text-embedding-3-small"}, None, "text-embedding-3-small"),
        # OpenInference: the requested model is in the invocation parameters
        ({"llm.model_name": "gpt-4o-2024-08-06",
          "llm.invocation_parameters": '{"model": "gpt-4o", "temperature": 0}'},
         "gpt-4o", "gpt-4o-2024-08-06"),
        ({"embedding.invocation_parameters": '{"model": "text-embedding-3-small"}'},
         "text-embedding-3-small", None),
        ({"llm.invocation_parameters": "not json"}, None, None),
    ],
)
def test_model_is_the_requested_name(attrs, model, response):
    record = _chat(**attrs)
    assert (record.model, record.response_model) == (model, response)


@pytest.mark.parametrize(
    "name",
    ["gen_ai.provider.name", "gen_ai.system", "llm.system", "llm.provider"],
)
def test_provider_names(name):
    assert _chat(**{name: "openai"}).provider == "openai"


@pytest.mark.parametrize(
    "name",
    [
        "enduser.id",
        "user.id",
        "gen_ai.user.id",
        "langfuse.user.id",
        "traceloop.association.properties.user_id",
        "gen_ai.user",
    ],
)
def test_caller_names(name):
    assert normalize({name: "alice"}).caller == "alice"


@pytest.mark.parametrize(
    "attrs",
    [
        {"tenant.id": "acme"},
        {"dify.tenant_id": "acme"},
        {"cozeloop.workspace_id": "acme"},
        {"traceloop.association.properties.tenant_id": "acme"},
        {"metadata": '{"tenant_id": "acme", "other": 1}'},
    ],
)
def test_tenant_names(attrs):
    assert normalize(attrs).tenant == "acme"


def test_openinference_metadata_that_is_not_json_is_ignored():
    assert normalize({"metadata": "tenant_id=acme"}).tenant is None


@pytest.mark.parametrize(
    ("attrs", "agent_id"),
    [
        ({"gen_ai.agent.id": "a1", "gen_ai.agent.name": "Bot"}, "a1"),
        ({"gen_ai.agent.name": "bot"}, "bot"),
        ({"agent.name": "bot"}, "bot"),
        ({"traceloop.entity.name": "bot"}, "bot"),
    ],
)
def test_agent_id_names(attrs, agent_id):
    assert normalize({"gen_ai.operation.name": "invoke_agent", **attrs}).agent_id == agent_id


@pytest.mark.parametrize(
    ("attrs", "workflow_id", "chat"),
    [
        ({"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.id": "w"}, "w", False),
        ({"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "w"}, "w", False),
        ({"traceloop.span.kind": "workflow", "traceloop.entity.name": "w"}, "w", False),
        ({"dify.workflow_id": "w"}, "w", False),
        ({"dify.workflow_id": "w", "dify.app.mode": "advanced-chat"}, "w", True),
        ({"workflow_mode": 3, "cozeloop.workflow_id": "w"}, "w", True),
        ({"workflow_mode": "1", "cozeloop.workflow_id": "w"}, "w", False),
        ({"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.id": "w",
          "gen_ai.workflow.type": "chatflow"}, "w", True),
    ],
)
def test_workflow_id_and_chat_workflow(attrs, workflow_id, chat):
    record = normalize(attrs)
    assert (record.kind, record.workflow_id, record.chat_workflow) == (WORKFLOW, workflow_id, chat)


@pytest.mark.parametrize(
    "conversation",
    ["gen_ai.conversation.id", "session.id", "dify.conversation.id", "conversation_id"],
)
def test_conversation_names(conversation):
    assert normalize({conversation: "c1"}).conversation == "c1"


def test_resource_attributes_sit_under_span_attributes():
    record = normalize(
        {"gen_ai.operation.name": "chat", "enduser.id": "alice"},
        {"enduser.id": "service-account", "tenant.id": "acme", "gen_ai.provider.name": "openai"},
    )
    assert (record.caller, record.tenant) == ("alice", None)
    assert (record.resource_caller, record.resource_tenant) == ("service-account", "acme")
    assert record.provider == "openai"


def test_outcome():
    assert _chat().outcome == "ok"
    assert _chat(**{"error.type": "timeout"}).outcome == "error"
    assert normalize({"gen_ai.operation.name": "chat"}, error=True).outcome == "error"


def test_a_model_call_without_usage_has_no_usage():
    record = _chat(**{"gen_ai.request.model": "gpt-4o"})
    assert (record.has_usage, record.total_tokens) == (False, 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120), (" 7 ", 7), (120.0, 120), (0, 0)],
)
def test_integral_token_counts_in_other_types_are_read_exactly(value, expected):
    assert _chat(**{"gen_ai.usage.input_tokens": value}).input_tokens == expected


@pytest.mark.parametrize(
    "value",
    # "²" passes str.isdigit() but not int(): more in test_bad_values
    ["abc", "-5", "1e3", -1, 1.5, math.nan, math.inf, 10**11, True, (1, 2), "²", "٣"],
)
def test_unbelievable_token_counts_are_refused_with_a_reason(value):
    with pytest.raises(InvalidSpan) as info:
        _chat(**{"gen_ai.usage.output_tokens": value})
    assert info.value.reason == "invalid_token_count"


@pytest.mark.parametrize("value", [("a", "b"), 1.5, True, "x" * 300, "\ud800"])
def test_ids_that_are_not_short_utf8_strings_are_refused(value):
    with pytest.raises(InvalidSpan) as info:
        normalize({"enduser.id": value})
    assert info.value.reason == "invalid_attribute"


def test_integer_ids_are_read_as_strings():
    assert normalize({"enduser.id": 42}).caller == "42"


@pytest.mark.parametrize(
    ("attrs", "name", "field", "expected"),
    [
        ({"gen_ai.operation.name": "invoke_workflow"}, "invoke_workflow summarize",
         "workflow_id", "summarize"),
        ({"gen_ai.operation.name": "invoke_agent"}, "invoke_agent support-bot",
         "agent_id", "support-bot"),
        ({"openinference.span.kind": "AGENT"}, "support-bot", "agent_id", "support-bot"),
        ({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "a1"}, "invoke_agent x",
         "agent_id", "a1"),
        ({"gen_ai.operation.name": "invoke_agent"}, None, "agent_id", None),
    ],
)
def test_an_id_only_the_span_name_carries_is_read_from_it(attrs, name, field, expected):
    assert getattr(normalize(attrs, name=name), field) == expected
