"""The span processor's cost, as a ratio to the SDK's own cost of a span, in one run.

Two trace shapes: an LLM trace (agent -> workflow -> tool -> model call, the attributes real
instrumentation sets) and a plain HTTP + DB trace with no LLM span (what most of a host
application's spans are). For each, interleaved rounds of the same work:

- the SDK alone (a TracerProvider without processors): the baseline;
- the application thread with our processor: CPU time of the emitting thread only, the
  worker asleep (``on_start``/``on_end`` append to the queue, nothing else);
- the total with our processor: CPU time of the whole process for emitting the round and
  draining it on the worker (``force_flush``), so work moved to the background counts.

Each figure is the minimum over many short rounds (the machine is shared and noisy; the
minimum is the run least disturbed). Ratios are ``(with - SDK) / SDK``; targets: hot path
<= 0.15, total <= 0.7.

    python benchmarks/processor_overhead.py [--traces 1000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_processor import TokenAttributionProcessor  # noqa: E402

DIRECTORY = ROOT / "otel_processor" / "data" / "demo-directory.yaml"
RESOURCE = Resource.create({"service.name": "llm-platform", "tenant.id": "acme"})


def llm_trace(tracer, i: int) -> None:
    with tracer.start_as_current_span("invoke_agent support-bot", attributes={
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": "support-bot",
        "gen_ai.conversation.id": f"conv-{i % 97}",
        "enduser.id": "alice" if i % 2 else "bob",
    }):
        with tracer.start_as_current_span("invoke_workflow summarize", attributes={
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.id": "summarize",
        }):
            with tracer.start_as_current_span("execute_tool search", attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "search",
            }):
                with tracer.start_as_current_span("chat gpt-4o", attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.response.model": "gpt-4o-2024-08-06",
                    "gen_ai.usage.input_tokens": 100 + i % 7,
                    "gen_ai.usage.output_tokens": 20 + i % 3,
                    "gen_ai.response.finish_reasons": ("stop",),
                }):
                    pass


def http_db_trace(tracer, i: int) -> None:
    with tracer.start_as_current_span("GET /api/orders/{id}", attributes={
        "http.request.method": "GET",
        "http.route": "/api/orders/{id}",
        "url.path": f"/api/orders/{i}",
        "http.response.status_code": 200,
        "server.address": "shop.example",
        "enduser.id": "alice",
    }):
        for statement in ("SELECT * FROM orders WHERE id = ?", "SELECT * FROM lines WHERE o = ?"):
            with tracer.start_as_current_span("SELECT shop", attributes={
                "db.system.name": "postgresql",
                "db.namespace": "shop",
                "db.query.text": statement,
                "server.address": "db.internal",
            }):
                pass


SHAPES = {"llm (agent > workflow > tool > chat)": (llm_trace, 4),
          "http + db (no LLM span)": (http_db_trace, 3)}


def _round(provider, shape, traces: int, processor=None) -> tuple[float, float]:
    """(CPU s of this thread while emitting, CPU s of the process incl. the drain)."""
    tracer = provider.get_tracer("bench")
    gc.collect()
    gc.disable()
    try:
        proc0, thread0 = time.process_time(), time.thread_time()
        for i in range(traces):
            shape(tracer, i)
        thread = time.thread_time() - thread0
        if processor is not None:
            assert processor.force_flush(60_000)
        return thread, time.process_time() - proc0
    finally:
        gc.enable()


def measure(shape, spans_per_trace: int, traces: int, rounds: int) -> dict[str, float]:
    bare = TracerProvider(resource=RESOURCE)
    processor = TokenAttributionProcessor(DIRECTORY, registry=CollectorRegistry(),
                                          schedule_delay=3600.0)
    processor._wake_at = 10**9  # the worker sleeps until force_flush: the hot path alone
    ours = TracerProvider(resource=RESOURCE)
    ours.add_span_processor(processor)
    _round(bare, shape, traces)  # warm up both
    _round(ours, shape, traces, processor)
    sdk, hot, total = [], [], []
    for _ in range(rounds):  # interleaved, so drift hits both alike
        sdk.append(_round(bare, shape, traces)[0])
        thread, process = _round(ours, shape, traces, processor)
        hot.append(thread)
        total.append(process)
    processor.shutdown()
    n = traces * spans_per_trace
    return {"sdk": min(sdk) / n * 1e6, "hot": min(hot) / n * 1e6, "total": min(total) / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=1000, help="traces per round")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; min of {args.rounds} interleaved rounds of "
          f"{args.traces} traces; CPU time per span")
    print(f"{'shape':38} {'SDK':>8} {'app thread':>11} {'total':>8} {'hot ratio':>10} "
          f"{'total ratio':>12}")
    for name, (shape, spans) in SHAPES.items():
        r = measure(shape, spans, args.traces, args.rounds)
        hot_ratio = (r["hot"] - r["sdk"]) / r["sdk"]
        total_ratio = (r["total"] - r["sdk"]) / r["sdk"]
        print(f"{name:38} {r['sdk']:6.2f}us {r['hot']:9.2f}us {r['total']:6.2f}us "
              f"{hot_ratio:9.3f}x {total_ratio:11.3f}x")
    print("targets: hot ratio <= 0.15, total ratio <= 0.7")

    # Memory: what the worker holds stays bounded however many spans never end.
    small = TokenAttributionProcessor(DIRECTORY, registry=CollectorRegistry(),
                                      max_open_spans=1000)
    leak = TracerProvider(resource=RESOURCE)
    leak.add_span_processor(small)
    tracer = leak.get_tracer("leak")
    for i in range(25_000):
        tracer.start_span("never ended")
        if i % 5000 == 4999:
            assert small.force_flush(60_000)
    print(f"spans held after 25000 never-ended spans: {small._assembler.open_spans} "
          f"(bound 1000)")
    small.shutdown()


if __name__ == "__main__":
    main()
