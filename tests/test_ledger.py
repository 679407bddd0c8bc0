"""The ledger: exact totals by tuple key, bounded label values, overflow counted."""

from __future__ import annotations

import pytest

from otel_processor.ledger import Ledger
from otel_processor.metrics import OVERFLOW
from tests.scenarios import agent, caller, chat


def test_past_the_cap_new_ids_fold_into_overflow_and_totals_stay_exact():
    ledger = Ledger(max_series_per_metric=2)
    ledger.add([("llm_member_tokens", ("acme", f"m{i}", "input"), 10 + i) for i in range(5)])
    snap = ledger.snapshot()
    table = snap.counters["llm_member_tokens"]
    assert table == {
        ("acme", "m0", "input"): 10,
        ("acme", "m1", "input"): 11,
        (OVERFLOW, OVERFLOW, "input"): 12 + 13 + 14,  # ids fold, the type label stays
    }
    assert sum(table.values()) == sum(10 + i for i in range(5))
    assert snap.value("llm_exporter_series_overflow", "llm_member_tokens") == 3


def test_a_known_series_keeps_counting_past_the_cap():
    ledger = Ledger(max_series_per_metric=1)
    ledger.add([("llm_model_tokens", ("acme", "gpt-4o", "input"), 1)])
    ledger.add([("llm_model_tokens", ("acme", "other", "input"), 1)])
    ledger.add([("llm_model_tokens", ("acme", "gpt-4o", "input"), 5)])
    assert ledger.snapshot().value("llm_model_tokens", "acme", "gpt-4o", "input") == 6


def test_a_plan_is_what_the_ledger_will_add_and_changes_nothing_until_applied():
    ledger = Ledger(max_series_per_metric=1)
    plan = ledger.plan([("llm_unpriced_tokens", ("a",), 1), ("llm_unpriced_tokens", ("b",), 2)])
    assert plan.increments == [
        ("llm_unpriced_tokens", ("a",), 1),
        ("llm_unpriced_tokens", (OVERFLOW,), 2),
        ("llm_exporter_series_overflow", ("llm_unpriced_tokens",), 1),
    ]
    assert ledger.snapshot().counters["llm_unpriced_tokens"] == {}  # a failed commit: nothing
    ledger.apply(plan)
    persisted: dict = {}
    for name, key, amount in plan.increments:  # what the service's store keeps
        persisted.setdefault(name, {})
        persisted[name][key] = persisted[name].get(key, 0) + amount
    again = Ledger(max_series_per_metric=1)
    again.load(persisted)  # a restart gives back exactly the same state
    assert again.snapshot().counters == ledger.snapshot().counters


def test_a_plan_counts_keys_it_creates_itself_against_the_cap():
    ledger = Ledger(max_series_per_metric=2)
    plan = ledger.plan([("llm_unpriced_tokens", (k,), 1) for k in "abcab"])
    assert plan.increments == [
        ("llm_unpriced_tokens", ("a",), 2), ("llm_unpriced_tokens", ("b",), 2),
        ("llm_unpriced_tokens", (OVERFLOW,), 1),
        ("llm_exporter_series_overflow", ("llm_unpriced_tokens",), 1)]


def test_distinct_agent_users_are_bounded_and_the_overflow_counted():
    ledger = Ledger(max_agent_users=2)
    plan = ledger.add([], [("acme", "bot", "alice"), ("acme", "bot", "alice"),
                           ("acme", "bot", "bob"), ("acme", "bot", "carol")])
    assert plan.agent_users == [("acme", "bot", "alice"), ("acme", "bot", "bob")]
    snap = ledger.snapshot()
    assert snap.agent_users == {("acme", "bot"): 2}
    assert snap.value("llm_exporter_series_overflow", "llm_agent_users") == 1


def test_agent_users_series_are_capped_like_every_family():
    ledger = Ledger(max_series_per_metric=3)
    ledger.add([], [("acme", f"agent-{i}", f"user-{i}") for i in range(50)])
    snap = ledger.snapshot()
    assert len(snap.agent_users) == 4  # three agents, and the overflow series
    assert snap.agent_users[(OVERFLOW, OVERFLOW)] == 47
    assert snap.value("llm_exporter_series_overflow", "llm_agent_users") == 47


def test_load_restores_persisted_totals():
    ledger = Ledger()
    ledger.load({"llm_model_tokens": {("acme", "gpt-4o", "input"): 9}, "gone_family": {(): 1}},
                [("acme", "bot", "alice")])
    snap = ledger.snapshot()
    assert snap.value("llm_model_tokens", "acme", "gpt-4o", "input") == 9
    assert snap.agent_users == {("acme", "bot"): 1}


def test_a_cap_below_one_is_refused():
    with pytest.raises(ValueError, match="max_series_per_metric"):
        Ledger(max_series_per_metric=0)


def test_the_processor_exports_the_overflow_series_and_counts_it(pipeline):
    p = pipeline(ledger=Ledger(max_series_per_metric=4))
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        for i in range(4):
            chat(p.tracer, f"model-{i}", 10, 0)
    # llm_model_tokens_total holds (acme, model-0, input|output) and (acme, model-1, ...)
    assert p.tokens("llm_model_tokens_total", tenant="acme", model="model-0") == 10
    assert p.tokens("llm_model_tokens_total", tenant=OVERFLOW, model=OVERFLOW) == 20
    assert p.value("llm_exporter_series_overflow_total", metric="llm_model_tokens") == 4
    assert p.tokens("llm_member_tokens_total", tenant="acme", member="alice") == 40
