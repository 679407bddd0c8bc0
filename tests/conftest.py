from __future__ import annotations

import random
import time

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from prometheus_client import CollectorRegistry

from otel_processor import TokenAttributionProcessor
from tests.scenarios import WORKED_EXAMPLE_DIRECTORY


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden /metrics files from the current output",
    )


class _SystemIds(RandomIdGenerator):
    """Ids from the OS: hypothesis reseeds ``random`` for every example, which would make
    the SDK's ids repeat (and the service count the repeats once, as R8 says)."""

    _rng = random.SystemRandom()

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


class Pipeline:
    """A real TracerProvider with our processor, and a way to read the registry."""

    def __init__(self, directory=WORKED_EXAMPLE_DIRECTORY, resource=None, **kwargs) -> None:
        self.registry = CollectorRegistry()
        self.processor = TokenAttributionProcessor(
            directory=directory, registry=self.registry, **kwargs
        )
        self.provider = TracerProvider(
            resource=resource or Resource.create({}), id_generator=_SystemIds())
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("tests")

    def flush(self) -> None:
        """Wait until the processor's worker has counted every span ended so far."""
        assert self.processor.force_flush(10_000), "the processor did not flush in 10 s"

    def value(self, name: str, **labels: str) -> float:
        """A sample's value, 0 when the series does not exist (after a flush)."""
        self.flush()
        return self.registry.get_sample_value(name, labels) or 0

    def samples(self, name: str) -> dict[tuple, float]:
        self.flush()
        out = {}
        for family in self.registry.collect():
            for s in family.samples:
                if s.name == name:
                    out[tuple(sorted(s.labels.items()))] = s.value
        return out

    def tokens(self, metric: str, **labels: str) -> int:
        """input + output of a token counter (``sum`` over ``type``)."""
        total = sum(self.value(metric, type=t, **labels) for t in ("input", "output"))
        assert total == int(total)
        return int(total)

    def wait_closed(self, traces: int, timeout: float = 15) -> None:
        """Wait until ``traces`` traces were taken out of assembly (counted in full): usage on
        a span that is no model call is decided when its trace closes."""
        self.flush()
        deadline = time.monotonic() + timeout
        while True:
            done = sum(self.value("llm_exporter_traces_flushed_total", reason=r)
                       for r in ("complete", "timeout", "capacity"))
            if done >= traces or time.monotonic() > deadline:
                assert done >= traces, f"{done} of {traces} traces closed"
                return
            time.sleep(0.05)

    def close(self) -> None:
        self.provider.shutdown()


class ServicePipeline(Pipeline):
    """The same surface, on the service runtime: the real SDK and OTLP/HTTP exporter send
    each span (one request per span, in end order) to a real server on 127.0.0.1, whose
    registry is read after the exporter's flush."""

    def __init__(self, directory=WORKED_EXAMPLE_DIRECTORY, resource=None, *, clock=None,
                 state_dir=None, **kwargs) -> None:
        """``clock``: the service's wall clock (``time.time`` when None); ``state_dir``: a
        state directory to keep (a temporary one when None); ``kwargs``: config keys."""
        import tempfile
        import time

        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        from exporter.config import load_config
        from exporter.server import start_server

        self._state = tempfile.TemporaryDirectory(prefix="llm-token-exporter-test-")
        overrides = {"listen": "127.0.0.1:0", "directory": str(directory),
                     "state_dir": str(state_dir or self._state.name),
                     "sqlite_synchronous": "NORMAL", "log_level": "WARNING", **kwargs}
        self.server = start_server(load_config(None, env={}, overrides=overrides),
                                   clock=clock or time.time)
        self.registry = self.server.service.registry
        self.url = self.server.url
        self.provider = TracerProvider(
            resource=resource or Resource.create({}), id_generator=_SystemIds())
        self.provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=self.server.url + "/v1/traces")))
        self.tracer = self.provider.get_tracer("tests")

    def flush(self) -> None:
        assert self.provider.force_flush(10_000)

    def close(self) -> None:
        self.provider.shutdown()
        self.server.stop()
        self._state.cleanup()


RUNTIMES = {"in_process": Pipeline, "service": ServicePipeline}


def _factory(runtime: str, made: list, **defaults):
    def make(**kwargs) -> Pipeline:
        p = RUNTIMES[runtime](**{**defaults, **kwargs})
        made.append(p)
        return p
    return make


@pytest.fixture(params=sorted(RUNTIMES))
def runtime(request):
    """A factory of pipelines on each runtime in turn: tests that state a rule use it."""
    made: list = []
    yield _factory(request.param, made)
    for p in made:
        p.close()


@pytest.fixture(params=sorted(RUNTIMES))
def quick_runtime(request):
    """As ``runtime``, the service closing an idle trace after 0.3 s: usage on a span that is
    no model call, and a trace whose root never arrives, are decided when the trace closes
    (``Pipeline.wait_closed``)."""
    made: list = []
    defaults = {"trace_idle_timeout": 0.3} if request.param == "service" else {}
    yield _factory(request.param, made, **defaults)
    for p in made:
        p.close()


@pytest.fixture
def server(tmp_path):
    """A factory of real services on 127.0.0.1 (the worked example's directory, state in
    ``tmp_path / "state"`` unless given), stopped after the test."""
    from exporter.config import Config
    from exporter.server import start_server

    started = []

    def start(**overrides):
        fields = dict(listen="127.0.0.1:0", directory=str(WORKED_EXAMPLE_DIRECTORY),
                      state_dir=str(tmp_path / "state"), threads=4)
        fields.update(overrides)
        running = start_server(Config(**fields))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def pipeline():
    made = []

    def make(**kwargs) -> Pipeline:
        p = Pipeline(**kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
