"""The service's figures: ingest throughput, /metrics time, memory under steady load.

    python benchmarks/ingest.py throughput [--batches 240] [--rounds 8] [--clients 4]
    python benchmarks/ingest.py metrics [--series 10000] [--under-load]
    python benchmarks/ingest.py memory [--seconds 600] [--rate SPANS_PER_S]

throughput: 512-span protobuf batches (the demo workload's shapes) POSTed by several client
threads to a real server on 127.0.0.1 (decode, assemble, attribute, durable group commit
with synchronous=FULL), in spans/s, and as a ratio to bare protobuf decoding plus attribute
walking of the same payloads, in rounds interleaved with it (target >= 0.25, in CPU per
span: the service's whole process, every thread, against the bare decode).
metrics: GET /metrics with N series in the ledger (target <= 0.25 s).
memory: resident size sampled while spans arrive at a steady rate (by default half of the
capacity measured by `throughput`), with the pending-trace bounds in force.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from exporter.config import Config  # noqa: E402
from exporter.server import start_server  # noqa: E402
from exporter.workload import emit, generate  # noqa: E402
from otel_processor.directory_source import default_directory_path, load_directory  # noqa: E402

BATCH = 512
HEADERS = {"Content-Type": "application/x-protobuf"}


class _Semconv(SpanProcessor):
    """Adds the request and response attributes real instrumentation sets beside the few
    that attribution reads (the OpenTelemetry GenAI and HTTP semantic conventions), so that
    payloads have realistic attribute counts: decoding them is most of a receiver's work."""

    _MODEL = {
        "gen_ai.request.temperature": 0.7, "gen_ai.request.top_p": 1.0,
        "gen_ai.request.max_tokens": 1024, "gen_ai.request.frequency_penalty": 0.0,
        "gen_ai.request.presence_penalty": 0.0, "gen_ai.request.seed": 42,
        "gen_ai.request.stop_sequences": ("\n\n",), "gen_ai.output.type": "text",
        "gen_ai.response.id": "chatcmpl-0123456789abcdef",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.openai.request.service_tier": "auto",
        "gen_ai.openai.response.service_tier": "default",
        "gen_ai.openai.response.system_fingerprint": "fp_0123456789",
        "server.address": "api.openai.com", "server.port": 443,
    }
    _OTHER = {
        "http.request.method": "POST", "http.response.status_code": 200,
        "url.scheme": "https", "server.address": "platform.internal", "server.port": 8443,
        "network.protocol.version": "1.1", "user_agent.original": "platform-agent/1.0",
    }

    def on_start(self, span, parent_context=None) -> None:
        attributes = span.attributes or {}
        chat = attributes.get("gen_ai.operation.name") in ("chat", "embeddings")
        span.set_attributes(self._MODEL if chat else self._OTHER)


def make_batches(n_batches: int, seed: int = 1) -> list[bytes]:
    """Protobuf bodies of BATCH spans each, all with distinct ids, with realistic attribute
    counts (:class:`_Semconv`)."""
    directory = load_directory(default_directory_path())
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({
        "service.name": "bench", "service.version": "1.4.2", "telemetry.sdk.language": "python",
        "deployment.environment.name": "production", "host.name": "platform-7f9c"}))
    provider.add_span_processor(_Semconv())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    spans = []
    while len(spans) < n_batches * BATCH:
        for trace in generate(directory, seed=seed, conversations=200):
            emit(tracer, trace)
        spans = memory.get_finished_spans()
        seed += 1
    bodies = []
    for i in range(n_batches):
        bodies.append(encode_spans(spans[i * BATCH:(i + 1) * BATCH]).SerializeToString())
    return bodies


def bare_decode(bodies: list[bytes]) -> float:
    """Seconds to decode the bodies and read every attribute key and value: the floor of
    any receiver in Python."""
    start = time.perf_counter()
    for body in bodies:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            for kv in rs.resource.attributes:
                value = kv.value
                kind = value.WhichOneof("value")
                _ = (kv.key, getattr(value, kind) if kind else None)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    _ = (span.trace_id, span.span_id, span.parent_span_id, span.name)
                    for kv in span.attributes:
                        value = kv.value
                        kind = value.WhichOneof("value")
                        _ = (kv.key, getattr(value, kind) if kind else None)
    return time.perf_counter() - start


def post_all(url: str, bodies: list[bytes], clients: int) -> float:
    queue = list(reversed(bodies))
    lock = threading.Lock()
    errors = []

    def client():
        session = requests.Session()
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            answer = session.post(url + "/v1/traces", data=body, headers=HEADERS, timeout=60)
            if answer.status_code != 200:
                errors.append(answer.status_code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} requests failed: {errors[:5]}")
    return elapsed


def server(state_dir: str, **overrides):
    fields = dict(listen="127.0.0.1:0", state_dir=state_dir, threads=8)
    fields.update(overrides)
    return start_server(Config(**fields))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain(pid: int, quiet: float = 0.004, timeout: float = 30.0) -> None:
    """Wait until the service's process is idle (less than ``quiet`` s of CPU in 0.25 s):
    the work moved to its writer thread after the last answer is done, and counted."""
    deadline = time.monotonic() + timeout
    before = _cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = _cpu_seconds(pid)
        if now - before < quiet:
            return
        before = now


def throughput(args) -> float:
    """Rounds of distinct batches, each decoded bare in this process and then sent to the
    service, interleaved: wall-clock rates (the median round's ratio) and CPU per span (the
    service's whole process against the bare decode, min of the rounds: the machine is
    shared and noisy, and CPU time counts every thread's work, the writer's included)."""
    per_round = args.batches // args.rounds
    bodies = make_batches(4 + per_round * args.rounds)
    rounds = []
    with tempfile.TemporaryDirectory() as state:
        # Traces close 1 s after their last span (30 s by default): within the round that
        # brought them, so that closing them (each trace once, whatever the timeout) is
        # counted too.
        proc, url = _serve_in_subprocess(state, {"LLM_TOKEN_EXPORTER_TRACE_IDLE_TIMEOUT": "1"})
        try:
            post_all(url, bodies[:4], args.clients)  # warm up (counted once, fine)
            _drain(proc.pid)
            for r in range(args.rounds):
                chunk = bodies[4 + r * per_round:4 + (r + 1) * per_round]
                n = len(chunk) * BATCH
                cpu = time.process_time()
                bare_wall = bare_decode(chunk)
                bare_cpu = time.process_time() - cpu
                server_cpu = _cpu_seconds(proc.pid)
                elapsed = post_all(url, chunk, args.clients)
                _drain(proc.pid)  # the checkpoint and the closing of the round's traces
                server_cpu = _cpu_seconds(proc.pid) - server_cpu
                rounds.append((n / bare_wall, n / elapsed, bare_cpu / n, server_cpu / n))
        finally:
            proc.terminate()
            proc.wait(30)
    wall_ratios = sorted(ingest / bare for bare, ingest, _, _ in rounds)
    bare_us = min(r[2] for r in rounds) * 1e6
    server_us = min(r[3] for r in rounds) * 1e6
    ingest_rate = statistics.median(r[1] for r in rounds)
    print(f"{args.rounds} rounds x {per_round} batches x {BATCH} distinct spans, "
          f"{args.clients} client threads, synchronous=FULL")
    print(f"bare protobuf decode + attribute walk:  {statistics.median(r[0] for r in rounds):8.0f}"
          f" spans/s (median round), {bare_us:5.1f} us CPU/span (min)")
    print(f"ingest end to end (durable):            {ingest_rate:8.0f} spans/s (median round), "
          f"{server_us:5.1f} us CPU/span of the service process (min)")
    print(f"ratio ingest / bare, wall clock:        {statistics.median(wall_ratios):8.3f} x "
          f"(median round; rounds from {wall_ratios[0]:.3f} to {wall_ratios[-1]:.3f})")
    print(f"ratio ingest / bare, CPU per span:      {bare_us / server_us:8.3f} x (target >= 0.25)")
    return ingest_rate


def metrics(args) -> None:
    with tempfile.TemporaryDirectory() as state:
        running = server(state, max_series_per_metric=max(20_000, args.series))
        try:
            ledger = running.service.pipeline.ledger
            # N series: (tenant, member, type) token counters
            types = ("input", "output")
            ledger.add(("llm_member_tokens", (f"t{i % 50}", f"m{i // 2}", types[i % 2]), i + 1)
                       for i in range(args.series))
            session = requests.Session()

            def scrapes(n: int) -> tuple[list[float], bytes]:
                times, body = [], b""
                for _ in range(n):
                    start = time.perf_counter()
                    body = session.get(running.url + "/metrics", timeout=30).content
                    times.append(time.perf_counter() - start)
                return times, body

            idle, body = scrapes(10)
            loaded = []
            if args.under_load:
                # full ingest load from another process while scraping, interleaved with
                # idle rounds so that drift hits both alike
                import subprocess

                loader = subprocess.Popen([sys.executable, __file__, "_load", running.url,
                                           str(args.clients)], cwd=ROOT)
                try:
                    time.sleep(3)  # the loader builds its payloads, then posts
                    loaded, _ = scrapes(10)
                finally:
                    loader.terminate()
                    loader.wait(30)
        finally:
            running.stop()
    print(f"/metrics with {args.series} member series (+ the fixed families): "
          f"{len(body) / 1e6:.2f} MB; idle: median {statistics.median(idle) * 1000:.0f} ms, "
          f"max {max(idle) * 1000:.0f} ms")
    if loaded:
        print(f"during full ingest load ({args.clients} client threads in another process): "
              f"median {statistics.median(loaded) * 1000:.0f} ms, "
              f"max {max(loaded) * 1000:.0f} ms; ratio to idle "
              f"{statistics.median(loaded) / statistics.median(idle):.2f} x (target <= 2)")


def _load(url: str, clients: int) -> None:
    """Post distinct batches as fast as the server takes them, until terminated."""
    bodies = make_batches(40, seed=7)
    templates = [trace_service_pb2.ExportTraceServiceRequest.FromString(b) for b in bodies]
    counter = iter(range(10**12))
    lock = threading.Lock()

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                n = next(counter)
                body = _renewed(templates[n % len(templates)], n + 1_000_000)
            session.post(url + "/v1/traces", data=body, headers=HEADERS, timeout=60)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory(args) -> None:
    """The server runs in its own process (`llm-token-exporter serve`), so that its resident
    size is not mixed with the client's pre-built payloads."""
    rate = args.rate
    if rate is None:
        rate = throughput(argparse.Namespace(batches=64, rounds=4, clients=4)) / 2
    templates = [trace_service_pb2.ExportTraceServiceRequest.FromString(b)
                 for b in make_batches(args.pool)]
    per_second = max(1, round(rate / BATCH))
    print(f"steady load: {per_second} batches/s = {per_second * BATCH} spans/s for "
          f"{args.seconds} s at the default caps; every span distinct (trace ids renewed "
          f"for every batch sent)")
    with tempfile.TemporaryDirectory() as state:
        proc, url = _serve_in_subprocess(state, {})
        session = requests.Session()
        try:
            start = time.monotonic()
            next_report = start
            samples = []
            i = 0
            while time.monotonic() - start < args.seconds:
                tick = time.monotonic()
                for _ in range(per_second):
                    body = _renewed(templates[i % len(templates)], i)
                    session.post(url + "/v1/traces", data=body, headers=HEADERS, timeout=60)
                    i += 1
                if time.monotonic() >= next_report:
                    rss = _rss_mb(proc.pid)
                    samples.append(rss)
                    print(f"t={time.monotonic() - start:6.0f} s  server rss={rss:7.1f} MB",
                          flush=True)
                    next_report += 30
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        finally:
            proc.terminate()
            proc.wait(30)
    if len(samples) >= 4:
        settled = samples[len(samples) // 4:]
        print(f"after the first quarter: min {min(settled):.1f} MB, max {max(settled):.1f} MB, "
              f"growth {settled[-1] - settled[0]:+.1f} MB")


def _renewed(template, n: int) -> bytes:
    """The template's spans with new trace ids (the same for spans of one trace)."""
    prefix = n.to_bytes(8, "big")
    for rs in template.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.trace_id = prefix + span.trace_id[8:]
    return template.SerializeToString()


def _serve_in_subprocess(state: str, env: dict):
    """`llm-token-exporter serve` in its own process: the benchmark's clients and payloads
    do not share its interpreter (its GIL, its resident size)."""
    import subprocess

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LLM_TOKEN_EXPORTER_LOG_LEVEL": "WARNING", **env}
    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "serve", "--listen",
                             f"127.0.0.1:{port}", "--state-dir", state], env=env, cwd=ROOT)
    _wait_ready(requests.Session(), url)
    return proc, url


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(session: requests.Session, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if session.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--batches", type=int, default=240)
    t.add_argument("--rounds", type=int, default=8)
    t.add_argument("--clients", type=int, default=4)
    m = sub.add_parser("metrics")
    m.add_argument("--series", type=int, default=10_000)
    m.add_argument("--under-load", action="store_true",
                   help="also scrape during full ingest load from another process")
    m.add_argument("--clients", type=int, default=4)
    r = sub.add_parser("memory")
    r.add_argument("--seconds", type=int, default=600)
    r.add_argument("--rate", type=float, default=None)
    r.add_argument("--pool", type=int, default=200)
    if sys.argv[1:2] == ["_load"]:  # the load generator of `metrics --under-load`
        _load(sys.argv[2], int(sys.argv[3]))
        return
    args = parser.parse_args()
    {"throughput": throughput, "metrics": metrics, "memory": memory}[args.what](args)


if __name__ == "__main__":
    main()
