"""The service split (docs/attribution.md, "Service split"), on both runtimes, exact.

Each attributed model call counts under the service of its nearest enclosing component: a
tool span is ``tool``; an agent span (or a chat workflow bound to an agent) is ``agent``, or
``assistant`` when the directory marks the agent ``kind: assistant``; any other workflow
is ``workflow``; nothing of the kind above the call is ``direct``.
"""

from __future__ import annotations

import pytest

from tests.scenarios import agent, caller, chat, tool, worked_example, workflow

DIRECTORY = """
tenants:
  - id: acme
    members: [{id: alice}, {id: bob}]
  - id: globex
    members: [{id: carol}]
agents:
  - {id: support-bot, owner_tenant: acme}
  - {id: helper, owner_tenant: acme, kind: assistant}
workflows:
  - {id: support-chat, owner_tenant: acme, kind: chatflow, agent: support-bot}
  - {id: helper-chat, owner_tenant: acme, kind: chatflow, agent: helper}
  - {id: summarize, owner_tenant: acme}
"""

TOKENS = "llm_service_tokens_total"
CALLS = "llm_service_calls_total"
SERVICES = ("agent", "assistant", "workflow", "tool", "direct")


@pytest.fixture
def split(runtime, tmp_path):
    path = tmp_path / "directory.yaml"
    path.write_text(DIRECTORY)

    def make():
        return runtime(directory=path)

    return make


def by_service(p, tenant: str = "acme") -> dict[str, tuple[int, int, int]]:
    """service -> (input, output, calls) of ``tenant``, for the services that have any."""
    out = {}
    for service in SERVICES:
        labels = {"tenant": tenant, "service": service}
        tin = p.value(TOKENS, type="input", **labels)
        tout = p.value(TOKENS, type="output", **labels)
        calls = p.value(CALLS, **labels)
        if tin or tout or calls:
            assert tin == int(tin) and tout == int(tout) and calls == int(calls)
            out[service] = (int(tin), int(tout), int(calls))
    return out


def test_a_call_outside_any_component_is_direct(split):
    p = split()
    chat(p.tracer, "gpt-4o", 11, 4, **caller("alice", "acme"))
    assert by_service(p) == {"direct": (11, 4, 1)}


def test_a_call_under_a_span_that_is_no_component_is_direct(split):
    p = split()
    with p.tracer.start_as_current_span("handle request", attributes=caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 11, 4)
        chat(p.tracer, "gpt-4o", 1, 2)
    assert by_service(p) == {"direct": (12, 6, 2)}


def test_a_call_in_an_agent_is_agent(split):
    p = split()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 100, 50)
    assert by_service(p) == {"agent": (100, 50, 1)}


def test_a_call_in_an_assistant_agent_is_assistant(split):
    p = split()
    with agent(p.tracer, "helper", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 30, 3)
        chat(p.tracer, "gpt-4o-mini", 7, 1)
    assert by_service(p) == {"assistant": (37, 4, 2)}


def test_an_agent_unknown_to_the_directory_or_without_id_is_agent(split):
    p = split()
    with agent(p.tracer, "stranger-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 5, 5)
    with p.tracer.start_as_current_span(
        "agent", attributes={"gen_ai.operation.name": "invoke_agent", **caller("bob", "acme")}
    ):
        chat(p.tracer, "gpt-4o", 2, 1)
    assert by_service(p) == {"agent": (7, 6, 2)}


def test_a_call_in_a_plain_workflow_is_workflow(split):
    p = split()
    with workflow(p.tracer, "summarize", **caller("bob", "acme")):
        chat(p.tracer, "qwen-max", 30, 30)
    assert by_service(p) == {"workflow": (30, 30, 1)}


def test_a_chat_workflow_bound_to_an_agent_counts_as_that_agent(split):
    p = split()
    # with and without the agent span above it: the bound chat workflow stands for the agent
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        with workflow(p.tracer, "support-chat", chat=True):
            chat(p.tracer, "gpt-4o", 100, 50)
    with workflow(p.tracer, "support-chat", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 10, 5)
    assert by_service(p) == {"agent": (110, 55, 2)}


def test_a_chat_workflow_bound_to_an_assistant_counts_as_assistant(split):
    p = split()
    with workflow(p.tracer, "helper-chat", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 20, 2)
    # the nearest component decides: the assistant's chat workflow inside a plain agent
    with agent(p.tracer, "support-bot", **caller("bob", "acme")):
        with workflow(p.tracer, "helper-chat", chat=True):
            chat(p.tracer, "gpt-4o", 3, 1)
    assert by_service(p) == {"assistant": (23, 3, 2)}


def test_a_call_under_a_tool_span_is_tool_whatever_encloses_the_tool(split):
    p = split()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 100, 10)  # the agent's own call
        with tool(p.tracer, "search"):
            chat(p.tracer, "gpt-4o-mini", 40, 4)
    with agent(p.tracer, "helper", **caller("alice", "acme")), tool(p.tracer, "lookup"):
        chat(p.tracer, "gpt-4o-mini", 6, 2)
    with tool(p.tracer, "cli"), p.tracer.start_as_current_span("x", attributes=caller(
        "bob", "acme"
    )):
        chat(p.tracer, "gpt-4o-mini", 1, 1)  # a plain span between: the tool is nearest
    assert by_service(p) == {"agent": (100, 10, 1), "tool": (47, 7, 3)}


def test_the_nearest_component_wins(split):
    p = split()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        with workflow(p.tracer, "summarize"):
            chat(p.tracer, "gpt-4o", 8, 2)  # a workflow inside an agent: workflow
            with tool(p.tracer, "fetch"), agent(p.tracer, "helper"):
                chat(p.tracer, "gpt-4o", 5, 5)  # an assistant called by a tool: assistant
            with tool(p.tracer, "fetch"):
                chat(p.tracer, "gpt-4o", 3, 0)  # a tool inside the workflow: tool
    assert by_service(p) == {"workflow": (8, 2, 1), "assistant": (5, 5, 1), "tool": (3, 0, 1)}
    # the other families are unchanged: all three calls are support-bot's (outermost agent)
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 23


def test_unattributed_calls_add_nothing_to_the_service_split(split):
    p = split()
    chat(p.tracer, "gpt-4o", 9, 9)  # no caller
    with agent(p.tracer, "helper", **caller("dave", None)):  # in no tenant
        chat(p.tracer, "gpt-4o", 7, 7)
    with tool(p.tracer, "x"):
        chat(p.tracer, "gpt-4o", 1, 1, **caller("carol", "acme"))  # not acme's member
    assert p.value("llm_unattributed_tokens_total", reason="no_caller") == 18
    assert p.value("llm_unattributed_tokens_total", reason="not_member") == 16
    assert p.samples(TOKENS) == {}
    assert p.samples(CALLS) == {}


def test_each_tenant_has_its_own_split_and_error_calls_count(split):
    p = split()
    with agent(p.tracer, "support-bot", **caller("carol", "globex")):
        chat(p.tracer, "gpt-4o", 7, 3, **{"error.type": "timeout"})
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 1, 1)
    assert by_service(p, "globex") == {"agent": (7, 3, 1)}
    assert by_service(p, "acme") == {"agent": (1, 1, 1)}
    assert set(p.samples(CALLS)) == {
        (("service", "agent"), ("tenant", "globex")),
        (("service", "agent"), ("tenant", "acme")),
    }


def test_the_worked_example_split(runtime):
    """docs/attribution.md's worked example: the numbers of its "service split" row."""
    p = runtime()
    worked_example(p.tracer)
    # trace 1: gpt-4o in support-chat (bound to support-bot): agent; gpt-4o-mini in
    # summarize (called by a tool, but the workflow is nearer): workflow; trace 2: workflow
    assert by_service(p, "acme") == {"agent": (100, 50, 1), "workflow": (240, 55, 3)}
    assert by_service(p, "globex") == {"agent": (7, 3, 1)}


def test_the_service_split_adds_up_to_the_tenant_totals(split):
    p = split()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 100, 10)
        with tool(p.tracer, "search"):
            chat(p.tracer, "gpt-4o-mini", 40, 4)
        with workflow(p.tracer, "summarize"):
            chat(p.tracer, "gpt-4o-mini", 9, 1)
    chat(p.tracer, "qwen-max", 3, 3, **caller("bob", "acme"))
    split_tokens = sum(v for v in p.samples(TOKENS).values())
    model_tokens = sum(v for v in p.samples("llm_model_tokens_total").values())
    assert split_tokens == model_tokens == 170
    assert sum(p.samples(CALLS).values()) == sum(
        p.samples("llm_model_requests_total").values()) == 4


def test_past_the_series_cap_tenants_fold_and_the_service_label_stays():
    """The same cap as every family: the tenant (an id) folds into ``__overflow__``, the
    service (one of five values) is kept, and the totals stay exact."""
    from otel_processor.attribution import UsageEvent
    from otel_processor.ledger import Ledger, usage_increments
    from otel_processor.metrics import OVERFLOW

    ledger = Ledger(max_series_per_metric=2)
    for i in range(4):
        event = UsageEvent(f"t{i}", "alice", "gpt-4o", None, None, 10 + i, i, 0, 0, None,
                           "ok", service="tool")
        ledger.add(usage_increments(event))
    snap = ledger.snapshot()
    assert snap.counters["llm_service_calls"] == {
        ("t0", "tool"): 1, ("t1", "tool"): 1, (OVERFLOW, "tool"): 2}
    assert snap.counters["llm_service_tokens"] == {
        ("t0", "tool", "input"): 10, ("t0", "tool", "output"): 0,
        (OVERFLOW, "tool", "input"): 11 + 12 + 13, (OVERFLOW, "tool", "output"): 1 + 2 + 3,
    }
    assert snap.value("llm_exporter_series_overflow", "llm_service_calls") == 2
    assert snap.value("llm_exporter_series_overflow", "llm_service_tokens") == 6  # t1-t3


def test_the_documented_example(split):
    """docs/attribution.md, "The service split": the example's table, row for row."""
    p = split()
    alice = caller("alice", "acme")
    chat(p.tracer, "gpt-4o", 10, 5, **alice)
    with agent(p.tracer, "support-bot", **alice):
        chat(p.tracer, "gpt-4o", 100, 10)
    with agent(p.tracer, "support-bot", **alice), tool(p.tracer, "search"):
        chat(p.tracer, "gpt-4o-mini", 40, 4)
    with agent(p.tracer, "support-bot", **alice), workflow(p.tracer, "summarize"):
        chat(p.tracer, "gpt-4o-mini", 9, 1)
    with workflow(p.tracer, "helper-chat", chat=True, **alice):
        chat(p.tracer, "gpt-4o", 20, 2)
    split_ = by_service(p)
    assert {s: tin + tout for s, (tin, tout, _) in split_.items()} == {
        "direct": 15, "agent": 110, "tool": 44, "workflow": 10, "assistant": 22}
    assert {s: calls for s, (_, _, calls) in split_.items()} == dict.fromkeys(split_, 1)
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 164
    assert sum(p.samples(TOKENS).values()) == 201



def test_a_chat_workflow_of_no_known_agent_is_looked_through(split):
    """R5 gives such a span's tokens to no workflow: what encloses it decides."""
    p = split()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        with workflow(p.tracer, "unbound-chat", chat=True):
            chat(p.tracer, "gpt-4o", 7, 3)
    with workflow(p.tracer, "unbound-chat", chat=True, **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 2, 1)
    assert by_service(p) == {"agent": (7, 3, 1), "direct": (2, 1, 1)}
