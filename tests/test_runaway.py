"""Runaway traces (docs/runbook.md, "Runaway traces"), on both runtimes, exact.

Per open trace, the attributed model calls and their tokens (input + output) are counted; the
first attributed call that takes the trace over ``runaway_max_calls`` calls or
``runaway_max_tokens`` tokens increments ``llm_runaway_traces_total{tenant, agent}`` once,
with that call's billing tenant and outermost agent (``none`` outside any agent). A limit of
0 is off. Unattributed calls do not count.
"""

from __future__ import annotations

import pytest
import yaml

from exporter.config import ConfigError, load_config
from otel_processor import TokenAttributionProcessor
from otel_processor.assembly import Assembler
from otel_processor.conventions import MODEL, SpanRecord
from otel_processor.directory import parse_directory
from otel_processor.engine import NO_AGENT, effects_of
from otel_processor.prices import PriceCatalog
from otel_processor.prices_source import load_prices
from tests.scenarios import WORKED_EXAMPLE_DIRECTORY, agent, caller, chat

RUNAWAY = "llm_runaway_traces_total"


def runaways(p) -> dict[tuple[str, str], int]:
    """(tenant, agent) -> runaway traces, for the series that exist."""
    out = {}
    for labels, value in p.samples(RUNAWAY).items():
        assert value == int(value)
        out[(dict(labels)["tenant"], dict(labels)["agent"])] = int(value)
    return {k: v for k, v in out.items() if v}


def test_a_trace_of_three_calls_over_a_limit_of_two_counts_once(runtime):
    p = runtime(runaway_max_calls=2)
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        for _ in range(3):
            chat(p.tracer, "gpt-4o", 10, 5)
    assert runaways(p) == {("acme", "support-bot"): 1}


def test_a_trace_at_the_limit_is_no_runaway(runtime):
    p = runtime(runaway_max_calls=2, runaway_max_tokens=30)
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        chat(p.tracer, "gpt-4o", 10, 5)
        chat(p.tracer, "gpt-4o", 10, 5)
    assert runaways(p) == {}
    assert p.value(RUNAWAY, tenant="acme", agent="support-bot") == 0


def test_a_trace_far_over_both_limits_counts_once(runtime):
    p = runtime(runaway_max_calls=2, runaway_max_tokens=100)
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        for _ in range(20):
            chat(p.tracer, "gpt-4o", 100, 100)
    assert runaways(p) == {("acme", "support-bot"): 1}


def test_one_big_call_crosses_the_token_limit_with_its_own_labels(runtime):
    p = runtime(runaway_max_calls=0, runaway_max_tokens=1000)
    with p.tracer.start_as_current_span("request"):
        chat(p.tracer, "gpt-4o", 10, 10, **caller("alice", "acme"))  # direct: agent "none"
        with agent(p.tracer, "support-bot", **caller("carol", "globex")):
            chat(p.tracer, "gpt-4o", 900, 100)  # 1020 > 1000: this call crosses it
        chat(p.tracer, "gpt-4o", 500, 500, **caller("alice", "acme"))  # over already
    assert runaways(p) == {("globex", "support-bot"): 1}


def test_a_call_outside_any_agent_is_labelled_none(runtime):
    p = runtime(runaway_max_calls=1)
    with p.tracer.start_as_current_span("request", attributes=caller("bob", "acme")):
        chat(p.tracer, "gpt-4o", 1, 1)
        chat(p.tracer, "gpt-4o", 1, 1)
    assert runaways(p) == {("acme", NO_AGENT): 1}


def test_two_runaway_traces_count_two(runtime):
    p = runtime(runaway_max_calls=2)
    for _ in range(2):
        with agent(p.tracer, "support-bot", **caller("alice", "acme")):
            for _ in range(4):
                chat(p.tracer, "gpt-4o", 1, 1)
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):  # under the limit
        chat(p.tracer, "gpt-4o", 1, 1)
    assert runaways(p) == {("acme", "support-bot"): 2}


def test_limits_of_zero_disable_the_check(runtime):
    p = runtime(runaway_max_calls=0, runaway_max_tokens=0)
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):
        for _ in range(60):
            chat(p.tracer, "gpt-4o", 5000, 5000)
    assert runaways(p) == {}
    assert p.tokens("llm_agent_tokens_total", tenant="acme", agent="support-bot") == 600_000


def test_the_defaults_are_50_calls_and_200000_tokens(runtime):
    p = runtime()
    with agent(p.tracer, "support-bot", **caller("alice", "acme")):  # 50 calls: at the limit
        for _ in range(50):
            chat(p.tracer, "gpt-4o", 1, 1)
    with agent(p.tracer, "support-bot", **caller("bob", "acme")):  # 51 calls: over it
        for _ in range(51):
            chat(p.tracer, "gpt-4o", 1, 1)
    with agent(p.tracer, "support-bot", **caller("carol", "globex")):  # 200 001 tokens
        chat(p.tracer, "gpt-4o", 100_000, 100_000)
        chat(p.tracer, "gpt-4o", 1, 0)
    assert runaways(p) == {("acme", "support-bot"): 1, ("globex", "support-bot"): 1}


def test_an_unattributed_call_does_not_count(runtime):
    p = runtime(runaway_max_calls=2, runaway_max_tokens=100)
    with p.tracer.start_as_current_span("request"):
        chat(p.tracer, "gpt-4o", 10, 10, **caller("alice", "acme"))
        for _ in range(5):  # not a member of acme: unattributed (not_member)
            chat(p.tracer, "gpt-4o", 500, 500, **caller("mallory", "acme"))
        chat(p.tracer, "gpt-4o", 10, 10, **caller("alice", "acme"))
    assert p.value("llm_unattributed_tokens_total", reason="not_member") == 5000
    assert runaways(p) == {}


# -- the engine and the assembler, directly ------------------------------------------------


def _model(tokens: int, caller_id: str = "alice") -> SpanRecord:
    return SpanRecord(kind=MODEL, model="gpt-4o", input_tokens=tokens, output_tokens=0,
                      caller=caller_id, tenant="acme")


def test_the_count_is_kept_per_open_trace_and_shared_by_ready_and_leftovers():
    directory = parse_directory(yaml.safe_load(WORKED_EXAMPLE_DIRECTORY.read_text()))
    prices = load_prices(None)
    a = Assembler(idle_timeout=10.0, max_traces=10, max_spans=100,
                  runaway_max_calls=2, runaway_max_tokens=0)
    found = []
    for i in range(2):  # two calls whose parent is known: ready now
        a.add(b"t", bytes([i]), None, _model(1), now=0.0)
    for ready in a.ready(b"t"):
        found += effects_of(ready.record, ready.ancestors, directory, prices, ready.usage)[0]
    for i in range(2, 5):  # three more waiting for a parent that never comes
        a.add(b"t", bytes([i]), b"missing", _model(1), now=0.0)
    assert a.ready(b"t") == []
    for ready in a.close(b"t", "timeout").leftovers:
        found += effects_of(ready.record, ready.ancestors, directory, prices, ready.usage)[0]
    assert [i for i in found if i[0] == "llm_runaway_traces"] == [
        ("llm_runaway_traces", ("acme", NO_AGENT), 1)]


def test_without_a_trace_usage_effects_of_counts_no_runaway():
    directory = parse_directory(yaml.safe_load(WORKED_EXAMPLE_DIRECTORY.read_text()))
    found, _ = effects_of(_model(10**9), (), directory, PriceCatalog({}))
    assert not [i for i in found if i[0] == "llm_runaway_traces"]


@pytest.mark.parametrize("kw", [
    {"runaway_max_calls": -1}, {"runaway_max_tokens": -5}, {"runaway_max_calls": 1.5},
    {"runaway_max_tokens": True}, {"runaway_max_calls": "3"},
])
def test_the_assembler_and_the_processor_refuse_bad_limits(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        Assembler(idle_timeout=1.0, max_traces=1, max_spans=1, **kw)
    with pytest.raises(ValueError, match=next(iter(kw))):
        TokenAttributionProcessor(directory=WORKED_EXAMPLE_DIRECTORY, **kw)


# -- config ---------------------------------------------------------------------------------


def test_the_config_keys_default_to_50_calls_and_200000_tokens():
    config = load_config(None, env={})
    assert (config.runaway_max_calls, config.runaway_max_tokens) == (50, 200_000)


def test_the_config_keys_accept_zero_and_text():
    config = load_config(None, env={"LLM_TOKEN_EXPORTER_RUNAWAY_MAX_CALLS": "0",
                                    "LLM_TOKEN_EXPORTER_RUNAWAY_MAX_TOKENS": "1_000_000"})
    assert (config.runaway_max_calls, config.runaway_max_tokens) == (0, 1_000_000)


@pytest.mark.parametrize("key, value, shown", [
    ("runaway_max_calls", "-1", "'-1'"),
    ("runaway_max_calls", "many", "'many'"),
    ("runaway_max_tokens", "1.5", "'1.5'"),
    ("runaway_max_tokens", "-200", "'-200'"),
])
def test_bad_config_values_are_refused_naming_the_key(key, value, shown):
    with pytest.raises(ConfigError) as raised:
        load_config(None, env={}, overrides={key: value})
    assert str(raised.value) == (
        f"{key}={shown} (from --{key.replace('_', '-')}): must be an integer >= 0 (0: off)")
