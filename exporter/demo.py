"""``llm-token-exporter demo``: the real service, a realistic workload, each tenant's view.

Starts the service on the config's address (port 0: a free port), sends the workload of
:mod:`exporter.workload` through the real OpenTelemetry SDK and its OTLP/HTTP exporter, waits
until ``/metrics`` has counted every span, then prints what each tenant's admin sees
(:mod:`exporter.views`, with the tenants' names from the directory), the tokens no tenant pays
for, the tokens no price covers, and a one-line summary.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from exporter.views import (
    Samples,
    parse_metrics,
    render,
    tenant_view,
    tenants,
    unattributed,
    unpriced,
)
from exporter.workload import emit, generate
from otel_processor.directory_source import load_directory

__all__ = ["DemoError", "main"]

SERVICE_NAME = "llm-token-exporter-demo"
_DEFAULT_TIMEOUT = 60.0  # seconds to wait for /metrics to count every span sent
_POLL_INTERVAL = 0.1
_BAR_WIDTH = 30
#: Without a terminal, progress is a plain line at each of these fractions of the workload.
_STEPS = 4
_RECEIVED = "llm_exporter_spans_received_total"


class DemoError(RuntimeError):
    """The demo could not complete; the message says what was seen and what to check."""


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _Progress:
    """On a terminal, a bar redrawn in place: ``\\r[#####-----] 120/200 conversations``.
    Elsewhere (a log, a pipe, CI), a plain line at each quarter of the workload:
    ``sent 100/200 conversations``. Silent without a stream."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self._total, self._stream, self._shown = total, stream, ""
        self._terminal = stream is not None and _is_terminal(stream)
        self._step = 0  # plain lines written so far

    def update(self, done: int) -> None:
        if self._stream is None:
            return
        if not self._terminal:
            # the quarters reached: done * _STEPS // total (all of them for an empty workload)
            reached = _STEPS * done // self._total if self._total else _STEPS
            if reached > self._step:
                self._step = reached
                self._stream.write(f"sent {done}/{self._total} conversations\n")
                self._stream.flush()
            return
        filled = _BAR_WIDTH * done // self._total if self._total else _BAR_WIDTH
        text = f"[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {done}/{self._total} conversations"
        if text != self._shown:
            self._stream.write("\r" + text)
            self._stream.flush()
            self._shown = text

    def close(self) -> None:
        if self._terminal and self._shown:
            self._stream.write("\n")
            self._stream.flush()


def _received(samples: Samples) -> int:
    found = samples.sum_by(_RECEIVED, "transport").get("otlp_http", 0.0)
    return int(found)


def _scrape(url: str) -> Samples:
    response = requests.get(url + "/metrics", timeout=10)
    response.raise_for_status()
    return parse_metrics(response.text)


def _wait_for_spans(url: str, expected: int, timeout: float) -> Samples:
    """Poll ``/metrics`` until it has counted ``expected`` OTLP spans; the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = _scrape(url)
        seen = _received(samples)
        if seen >= expected:
            return samples
        if time.monotonic() >= deadline:
            raise DemoError(
                f"{url}/metrics counted {seen} of {expected} spans after {timeout:g} s "
                f'({_RECEIVED}{{transport="otlp_http"}}); the OTLP exporter\'s log says why '
                "the rest were not delivered"
            )
        time.sleep(_POLL_INTERVAL)


def _send(url: str, traces: list, progress: _Progress, span_count: int) -> None:
    """Emit every trace through a BatchSpanProcessor and the OTLP/HTTP exporter, then flush."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces")
    # The queue holds the whole workload: the default 2048 would drop spans on a fast loop.
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=max(2048, span_count),
                           schedule_delay_millis=200, max_export_batch_size=512)
    )
    tracer = provider.get_tracer("exporter.demo")
    conversations: set[str] = set()
    try:
        for trace in traces:
            emit(tracer, trace)
            conversations.add(trace.conversation)
            progress.update(len(conversations))
    finally:
        progress.close()
        flushed = provider.force_flush()
        provider.shutdown()
    if not flushed:
        raise DemoError(f"the OTLP exporter did not flush every span to {url} in time")


def _report(samples: Samples, names: dict[str, str], out: TextIO) -> None:
    """Each tenant's view (``names``: tenant id -> display name), then the tokens that no
    tenant pays for, by reason, and the attributed tokens that no price covers, by model."""
    for tenant in tenants(samples):
        print(render(tenant_view(samples, tenant, name=names.get(tenant, ""))), file=out)
        print(file=out)
    lost = unattributed(samples)
    missing = unpriced(samples)
    width = max([len(k) for k in (*lost, *missing)] + [16])
    print("Unattributed tokens (in no tenant's cost metrics), by reason", file=out)
    for reason, tokens in lost.items():
        print(f"  {reason:<{width}}  {tokens:>12,}", file=out)
    if missing:
        print("Unpriced tokens (attributed, no price in the catalog: in no cost), by model",
              file=out)
        for model, tokens in missing.items():
            print(f"  {model:<{width}}  {tokens:>12,}", file=out)


def main(
    config,
    *,
    progress: bool = True,
    out: TextIO | None = None,
    seed: int = 7,
    conversations: int = 200,
    timeout: float = _DEFAULT_TIMEOUT,
) -> int:
    """Run the demo with ``config`` (an :class:`exporter.config.Config`); print to ``out``
    (standard output by default) and the progress to standard error: a bar on a terminal,
    a plain line at each quarter elsewhere.

    Returns 0, or 1 after one line on standard error when the spans did not all arrive.
    Give it a fresh ``state_dir``: the service's totals are durable, and a reused state
    would add earlier runs to the views.
    """
    from exporter.server import start_server  # the service is imported only when it runs

    out = out if out is not None else sys.stdout
    started = time.monotonic()
    directory = load_directory(config.directory_source)
    names = {tenant.id: tenant.name for tenant in directory.tenants.values()}
    traces = generate(directory, seed=seed, conversations=conversations)
    span_count = sum(trace.span_count for trace in traces)
    server = start_server(config)
    try:
        before = _received(_scrape(server.url))
        bar = _Progress(conversations, sys.stderr if progress else None)
        _send(server.url, traces, bar, span_count)
        samples = _wait_for_spans(server.url, before + span_count, timeout)
    except (DemoError, requests.RequestException) as exc:
        print(f"llm-token-exporter demo: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    _report(samples, names, out)
    elapsed = time.monotonic() - started
    print(
        f"\nSent {span_count:,} spans in {len(traces):,} traces ({conversations:,} "
        f"conversations) over OTLP/HTTP to {server.url} in {elapsed:.1f} s.",
        file=out,
    )
    return 0
