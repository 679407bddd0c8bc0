"""The tenant overview read back from /metrics: the worked example's numbers, exactly."""

from __future__ import annotations

from decimal import Decimal

import pytest
from prometheus_client import generate_latest

from exporter.views import (
    Bar,
    TenantView,
    format_usd,
    parse_metrics,
    render,
    tenant_view,
    tenants,
    unattributed,
    unpriced,
)
from tests.scenarios import worked_example


@pytest.fixture
def exposition(pipeline) -> str:
    p = pipeline()
    worked_example(p.tracer)
    p.flush()
    return generate_latest(p.registry).decode()


ACME = TenantView(
    tenant="acme",
    agent_tokens=370,
    workflow_tokens=295,
    total_tokens=445,
    cost_usd=Decimal("0.0010365"),  # 0.00075 + 0.0000465 + 0.00024, exactly
    models=(Bar("gpt-4o-mini", "gpt-4o-mini", 235), Bar("gpt-4o", "gpt-4o", 150),
            Bar("qwen-max", "qwen-max", 60)),
    agents=(Bar("support-bot", "Support Bot", 370),),
    workflows=(Bar("summarize", "Summarize", 220), Bar("translate", "Translate", 75)),
    members=(Bar("alice", "Alice Wang", 370), Bar("bob", "Bob Li", 75)),
)

ACME_RENDERED = "\n".join([
    "Tenant acme: core resource consumption",
    "  Agent tokens           370",
    "  Workflow tokens        295",
    "  Total tokens           445",
    "  Cost             $0.001037",
    "  (agent and workflow tokens overlap where an agent runs a workflow)",
    "",
    "Model consumption top 10",
    "  gpt-4o-mini  ████████████████████████████████████████████████████████████  235",
    "  gpt-4o       ██████████████████████████████████████                        150",
    "  qwen-max     ███████████████                                                60",
    "",
    "Agent consumption top 10",
    "  Support Bot  ████████████████████████████████████████████████████████████  370",
    "",
    "Workflow consumption top 10",
    "  Summarize  ██████████████████████████████████████████████████████████████  220",
    "  Translate  █████████████████████                                            75",
    "",
    "Member tokens top 10",
    "  Alice Wang  █████████████████████████████████████████████████████████████  370",
    "  Bob Li      ████████████                                                    75",
])


def test_acme_admin_sees_the_worked_example_overview(exposition):
    assert tenant_view(parse_metrics(exposition), "acme") == ACME


def test_globex_sees_only_carols_ten_tokens(exposition):
    view = tenant_view(parse_metrics(exposition), "globex")
    assert (view.agent_tokens, view.workflow_tokens, view.total_tokens) == (10, 0, 10)
    assert view.cost_usd == Decimal("0.0000475")  # 7 x 2.50 + 3 x 10.00 per million
    assert view.models == (Bar("gpt-4o", "gpt-4o", 10),)
    assert view.agents == (Bar("support-bot", "Support Bot", 10),)
    assert view.workflows == ()
    assert view.members == (Bar("carol", "Carol Chen", 10),)


def test_acme_renders_exactly_as_the_golden_text(exposition):
    assert render(tenant_view(parse_metrics(exposition), "acme")) == ACME_RENDERED


def test_every_rendered_line_fits_the_width(exposition):
    text = render(tenant_view(parse_metrics(exposition), "acme"), width=80)
    assert max(len(line) for line in text.splitlines()) == 80


def test_tenants_and_unattributed_tokens_are_read_back(exposition):
    samples = parse_metrics(exposition)
    assert tenants(samples) == ["acme", "globex"]
    assert unattributed(samples) == {"ambiguous_tenant": 0, "no_caller": 0, "not_member": 1500}
    assert unpriced(samples) == {}


def _text(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def test_an_agent_without_info_is_shown_by_its_id():
    samples = parse_metrics(_text(
        "# TYPE llm_agent_tokens_total counter",
        'llm_agent_tokens_total{tenant="t",agent="draft-helper",type="input"} 4',
        'llm_agent_tokens_total{tenant="t",agent="draft-helper",type="output"} 1',
        'llm_agent_tokens_total{tenant="t",agent="known",type="input"} 5',
        "# TYPE llm_agent_info gauge",
        'llm_agent_info{owner_tenant="t",agent="known",name="Known Agent"} 1',
    ))
    assert tenant_view(samples, "t").agents == (
        Bar("draft-helper", "draft-helper", 5), Bar("known", "Known Agent", 5)
    )


def test_top_lists_keep_the_ten_largest_and_break_ties_by_name_ignoring_case():
    lines = ["# TYPE llm_model_tokens_total counter"]
    lines += [f'llm_model_tokens_total{{tenant="t",model="m{i:02d}",type="input"}} {100 + i}'
              for i in range(12)]
    lines += ['llm_model_tokens_total{tenant="t",model="b",type="input"} 111',
              'llm_model_tokens_total{tenant="t",model="A",type="output"} 111',
              'llm_model_tokens_total{tenant="other",model="zz",type="input"} 999']
    view = tenant_view(parse_metrics(_text(*lines)), "t")
    assert [b.id for b in view.models] == ["A", "b", "m11", "m10", "m09", "m08", "m07", "m06",
                                           "m05", "m04"]
    assert view.total_tokens == sum(range(100, 112)) + 222


def test_cost_is_summed_exactly_then_shown_in_cents_from_one_dollar():
    samples = parse_metrics(_text(
        "# TYPE llm_model_cost_usd_total counter",
        'llm_model_cost_usd_total{tenant="t",model="a"} 0.1',
        'llm_model_cost_usd_total{tenant="t",model="b"} 0.2',
        'llm_model_cost_usd_total{tenant="t",model="c"} 1234.0000005',
    ))
    view = tenant_view(samples, "t")
    assert view.cost_usd == Decimal("1234.3000005")  # exact: 0.1 + 0.2 is 0.3 here
    assert "  Cost             $1,234.30" in render(view).splitlines()


@pytest.mark.parametrize(("amount", "shown"), [
    ("0", "$0.00"),
    ("0.0010365", "$0.001037"),  # four significant digits, half up
    ("0.0123", "$0.0123"),
    ("0.5", "$0.50"),  # at least cents
    ("0.936487", "$0.9365"),
    ("0.99996", "$1.00"),  # rounds up to a dollar: cents
    ("0.000000001", "$0.000000001"),
    ("1", "$1.00"),
    ("12.345", "$12.35"),
    ("1234567.891", "$1,234,567.89"),
])
def test_costs_are_rounded_as_a_person_reads_them(amount, shown):
    assert format_usd(Decimal(amount)) == shown


def test_an_empty_tenant_renders_zero_cards_and_no_usage():
    text = render(tenant_view(parse_metrics(""), "nobody"))
    assert "  Total tokens         0" in text.splitlines()  # as wide as "$0.00"
    assert "  Cost             $0.00" in text.splitlines()
    assert text.count("(no usage)") == 4


def test_the_tenant_is_shown_by_its_name_and_its_id():
    view = tenant_view(parse_metrics(""), "acme", name="Acme Corp")
    assert render(view).splitlines()[0] == "Tenant Acme Corp (acme): core resource consumption"
    assert render(tenant_view(parse_metrics(""), "acme", name="acme")).startswith(
        "Tenant acme: core"
    )


UNPRICED = _text(
    "# TYPE llm_model_tokens_total counter",
    'llm_model_tokens_total{tenant="t",model="local",type="input"} 700',
    'llm_model_tokens_total{tenant="t",model="local",type="output"} 300',
    'llm_model_tokens_total{tenant="t",model="gpt-4o",type="input"} 50',
    'llm_model_tokens_total{tenant="t",model="mixed",type="input"} 40',
    'llm_model_tokens_total{tenant="u",model="local",type="input"} 5',
    "# TYPE llm_model_cost_usd_total counter",
    'llm_model_cost_usd_total{tenant="t",model="gpt-4o"} 0.000125',
    'llm_model_cost_usd_total{tenant="t",model="mixed"} 0.0001',
    "# TYPE llm_unpriced_tokens_total counter",
    'llm_unpriced_tokens_total{model="local"} 1005',
    'llm_unpriced_tokens_total{model="mixed"} 15',
)


def test_each_model_without_a_price_gets_a_line_with_the_tenants_tokens():
    samples = parse_metrics(UNPRICED)
    view = tenant_view(samples, "t")
    # "mixed" was priced for some calls (it has a cost here): its unpriced share in this
    # tenant is unknown, so it is only in the platform-wide unpriced() total
    assert view.unpriced == (Bar("local", "local", 1000),)
    assert tenant_view(samples, "u").unpriced == (Bar("local", "local", 5),)
    assert unpriced(samples) == {"local": 1005, "mixed": 15}
    lines = render(view).splitlines()
    assert "  No price for local: 1,000 tokens not in the cost" in lines
    assert view.total_tokens == 1090  # the unpriced tokens are in the token cards


def test_a_long_unpriced_model_name_is_cut_to_the_width():
    view = TenantView("t", 0, 0, 0, Decimal(0), (), (), (), (),
                      unpriced=(Bar("m" * 120, "m" * 120, 12_345),))
    [line] = [line for line in render(view, width=80).splitlines() if "No price" in line]
    assert len(line) == 80 and line.endswith("…: 12,345 tokens not in the cost")


def test_small_rows_keep_one_block_and_long_names_are_cut():
    view = TenantView("t", 0, 0, 0, Decimal(0), models=(
        Bar("big", "big", 1_000_000), Bar("x" * 40, "x" * 40, 1)), agents=(), workflows=(),
        members=())
    chart = render(view, width=60).splitlines()[8:10]
    assert chart[0].startswith("  big  ") and chart[0].endswith("  1,000,000")
    assert chart[1].startswith("  " + "x" * 23 + "…  █ ")
    assert {len(line) for line in chart} == {60}
