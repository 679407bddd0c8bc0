"""The span processor's cost per span, as a ratio to the SDK's own cost of a span.

Realistic shape: agent -> workflow -> tool -> model call (4 spans a trace, 1 usage span),
with the attributes real instrumentation sets. Both runs use the same TracerProvider
setup in the same process; the baseline has no processor at all. Prints figures and the
ratio ``(with - without) / without``; the issue's target is <= 0.15.

    python benchmarks/processor_overhead.py [--traces 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_processor import TokenAttributionProcessor  # noqa: E402

DIRECTORY = ROOT / "otel_processor" / "data" / "demo-directory.yaml"
RESOURCE = Resource.create({"service.name": "llm-platform", "tenant.id": "acme"})


def one_trace(tracer, i: int) -> None:
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


def run(provider: TracerProvider, traces: int) -> float:
    tracer = provider.get_tracer("bench")
    gc.collect()
    start = time.perf_counter()
    for i in range(traces):
        one_trace(tracer, i)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    bare = TracerProvider(resource=RESOURCE)
    registry = CollectorRegistry()
    processor = TokenAttributionProcessor(DIRECTORY, registry=registry)
    with_proc = TracerProvider(resource=RESOURCE)
    with_proc.add_span_processor(processor)

    run(bare, 2000)  # warm up both
    run(with_proc, 2000)
    base, ours = [], []
    for _ in range(args.rounds):  # interleaved, so drift hits both alike
        base.append(run(bare, args.traces))
        ours.append(run(with_proc, args.traces))
    spans = args.traces * 4
    b, o = statistics.median(base), statistics.median(ours)
    per_span_base = b / spans * 1e6
    per_span_ours = o / spans * 1e6
    print(f"python {sys.version.split()[0]}, {args.rounds} rounds x {args.traces} traces "
          f"x 4 spans (agent -> workflow -> tool -> chat)")
    print(f"SDK alone:            {per_span_base:7.2f} us/span")
    print(f"SDK + processor:      {per_span_ours:7.2f} us/span")
    print(f"processor cost:       {per_span_ours - per_span_base:7.2f} us/span")
    print(f"ratio (cost / SDK):   {(o - b) / b:7.3f} x   (target <= 0.15)")

    # Memory: open spans stay bounded however many are started and never ended.
    small = TokenAttributionProcessor(DIRECTORY, registry=CollectorRegistry(), max_open_spans=1000)
    leak = TracerProvider(resource=RESOURCE)
    leak.add_span_processor(small)
    tracer = leak.get_tracer("leak")
    tracemalloc.start()
    for _ in range(5000):
        tracer.start_span("never ended")
    mid = tracemalloc.get_traced_memory()[0]
    for _ in range(20000):
        tracer.start_span("never ended")
    end = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"open spans tracked after 25000 never-ended spans: {len(small._open)} "
          f"(bound 1000); traced memory {mid / 1e6:.2f} MB -> {end / 1e6:.2f} MB")
    size = len(generate_latest(registry))
    print(f"/metrics exposition of the run: {size} bytes")
    processor.shutdown()
    small.shutdown()


if __name__ == "__main__":
    main()
