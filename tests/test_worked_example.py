"""attribution.md's worked example through the real SDK: exactly the table's numbers."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from tests.scenarios import worked_example

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "worked_example.prom"


def test_acme_admin_sees_the_worked_example_numbers(runtime):
    p = runtime()
    worked_example(p.tracer)

    # cards
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 370
    workflow_total = sum(
        p.tokens("llm_workflow_tokens_total", tenant="acme", workflow=w)
        for w in ("summarize", "translate")
    )
    assert workflow_total == 295
    # top models
    assert p.tokens("llm_model_tokens_total", tenant="acme", model="gpt-4o-mini") == 235
    assert p.tokens("llm_model_tokens_total", tenant="acme", model="gpt-4o") == 150
    assert p.tokens("llm_model_tokens_total", tenant="acme", model="qwen-max") == 60
    # top workflows: the chat workflow never appears
    assert p.tokens("llm_workflow_tokens_total", tenant="acme", workflow="summarize") == 220
    assert p.tokens("llm_workflow_tokens_total", tenant="acme", workflow="translate") == 75
    workflows = {dict(k)["workflow"] for k in p.samples("llm_workflow_tokens_total")}
    assert workflows == {"summarize", "translate"}
    # top members
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 370
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="bob") == 75
    # agent list: tokens are acme's members only; heat is platform-wide
    assert p.value("llm_agent_invocations_total", owner_tenant="acme", agent="support-bot") == 3
    assert p.value("llm_agent_users", owner_tenant="acme", agent="support-bot") == 3
    # workflow list
    assert p.value("llm_workflow_runs_total", owner_tenant="acme", workflow="summarize") == 2
    assert p.value("llm_workflow_runs_total", owner_tenant="acme", workflow="translate") == 1
    workflow_runs = {dict(k)["workflow"] for k in p.samples("llm_workflow_runs_total")}
    assert workflow_runs == {"summarize", "translate"}
    # unattributed
    assert p.value("llm_unattributed_tokens_total", reason="not_member") == 1500
    assert p.value("llm_unattributed_tokens_total", reason="no_caller") == 0
    assert p.value("llm_unattributed_tokens_total", reason="ambiguous_tenant") == 0


def test_globex_sees_its_own_ten_tokens_and_acme_does_not(runtime):
    p = runtime()
    worked_example(p.tracer)
    assert p.tokens("llm_agent_tokens_total", tenant="globex", agent="support-bot") == 10
    assert p.tokens("llm_model_tokens_total", tenant="globex", model="gpt-4o") == 10
    assert p.tokens("llm_member_tokens_total", tenant="globex", member="carol") == 10
    tenants = {dict(k)["tenant"] for k in p.samples("llm_model_tokens_total")}
    assert tenants == {"acme", "globex"}


def test_worked_example_costs_follow_the_price_catalog(runtime):
    p = runtime()
    worked_example(p.tracer)
    # gpt-4o 2.50/10.00, gpt-4o-mini 0.15/0.60, qwen-max 1.60/6.40 USD per million tokens
    gpt4o = (100 * 2.5 + 50 * 10.0) / 1e6
    mini = (210 * 0.15 + 25 * 0.60) / 1e6
    qwen = (30 * 1.6 + 30 * 6.4) / 1e6
    assert p.value("llm_model_cost_usd_total", tenant="acme", model="gpt-4o") == gpt4o
    assert p.value("llm_model_cost_usd_total", tenant="acme", model="gpt-4o-mini") == mini
    assert p.value("llm_model_cost_usd_total", tenant="acme", model="qwen-max") == qwen
    member_cost = p.value("llm_member_cost_usd_total", tenant="acme", member="bob")
    assert round(member_cost * 1e12) == round((30 * 1.6 + 30 * 6.4 + 10 * 0.15 + 5 * 0.6) * 1e6)


def test_worked_example_exposition_matches_the_golden_file(pipeline, request):
    p = pipeline()
    worked_example(p.tracer)
    p.flush()
    text = generate_latest(p.registry).decode()
    text = "\n".join(
        line for line in text.splitlines()
        if "directory_last_success" not in line  # a wall-clock time
        and "_timestamp_seconds" not in line  # today's calendar periods: tests/test_periods.py
        and "_seconds_" not in line  # latencies of real spans: test_rules tests them exactly
    ) + "\n"
    if request.config.getoption("--update-golden"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
