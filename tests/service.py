"""Helpers for tests that run the real service on 127.0.0.1."""

from __future__ import annotations

import random
from collections.abc import Sequence

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families


def metrics(url: str) -> dict[tuple, float]:
    """``/metrics`` as {(sample name, sorted labels...): value}."""
    text = requests.get(url + "/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, *sorted(labels.items())), 0)


def tokens(samples: dict, name: str, **labels: str) -> int:
    return int(sum(value(samples, name, type=t, **labels) for t in ("input", "output")))


def record_spans(scenario, resource: Resource | None = None) -> list[ReadableSpan]:
    """The spans a scenario makes, in end order, without sending them anywhere."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource or Resource.create({"service.name": "t"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    scenario(provider.get_tracer("tests"))
    provider.shutdown()
    return list(memory.get_finished_spans())


def send_live(url: str, scenario, **exporter_kwargs) -> None:
    """Run a scenario with the real SDK and OTLP/HTTP exporter: one request per span."""
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", **exporter_kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scenario(provider.get_tracer("tests"))
    provider.shutdown()


def send_batches(url: str, spans: Sequence[ReadableSpan], sizes: Sequence[int], **kwargs) -> None:
    """Send recorded spans through the real exporter in batches of the given sizes."""
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", **kwargs)
    i = 0
    for size in sizes:
        assert exporter.export(spans[i:i + size]) is SpanExportResult.SUCCESS
        i += size
    assert i == len(spans)
    exporter.shutdown()


def random_sizes(total: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    while total:
        n = rng.randint(1, min(total, 5))
        sizes.append(n)
        total -= n
    return sizes


def assert_worked_example(samples: dict, times: int = 1) -> None:
    """attribution.md's worked example table, ``times`` over, on parsed /metrics samples."""
    expected_tokens = [
        ("llm_agent_tokens_total", {"tenant": "acme", "agent": "support-bot"}, 370),
        ("llm_workflow_tokens_total", {"tenant": "acme", "workflow": "summarize"}, 220),
        ("llm_workflow_tokens_total", {"tenant": "acme", "workflow": "translate"}, 75),
        ("llm_model_tokens_total", {"tenant": "acme", "model": "gpt-4o-mini"}, 235),
        ("llm_model_tokens_total", {"tenant": "acme", "model": "gpt-4o"}, 150),
        ("llm_model_tokens_total", {"tenant": "acme", "model": "qwen-max"}, 60),
        ("llm_member_tokens_total", {"tenant": "acme", "member": "alice"}, 370),
        ("llm_member_tokens_total", {"tenant": "acme", "member": "bob"}, 75),
        ("llm_agent_tokens_total", {"tenant": "globex", "agent": "support-bot"}, 10),
        ("llm_member_tokens_total", {"tenant": "globex", "member": "carol"}, 10),
    ]
    for name, labels, total in expected_tokens:
        assert tokens(samples, name, **labels) == total * times, (name, labels)
    expected_values = [
        ("llm_agent_invocations_total", {"owner_tenant": "acme", "agent": "support-bot"}, 3),
        ("llm_workflow_runs_total", {"owner_tenant": "acme", "workflow": "summarize"}, 2),
        ("llm_workflow_runs_total", {"owner_tenant": "acme", "workflow": "translate"}, 1),
        ("llm_unattributed_tokens_total", {"reason": "not_member"}, 1500),
    ]
    for name, labels, count in expected_values:
        assert value(samples, name, **labels) == count * times, (name, labels)
    # distinct users do not scale with repetitions: alice, dave, carol
    assert value(samples, "llm_agent_users", owner_tenant="acme", agent="support-bot") == 3
    assert not any(k[0] == "llm_workflow_tokens_total" and ("workflow", "support-chat") in k
                   for k in samples)


def metrics_when(url: str, name: str, expected: float, timeout: float = 5.0, **labels: str):
    """``/metrics`` once the sample ``name{labels}`` reads ``expected`` (refusals are
    committed with the writer's next group, within a second): the samples, or the last
    ones read when it never did."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        samples = metrics(url)
        if value(samples, name, **labels) == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)
