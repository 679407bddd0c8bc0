from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from otel_processor import TokenAttributionProcessor
from tests.scenarios import WORKED_EXAMPLE_DIRECTORY


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden /metrics files from the current output",
    )


class Pipeline:
    """A real TracerProvider with our processor, and a way to read the registry."""

    def __init__(self, directory=WORKED_EXAMPLE_DIRECTORY, resource=None, **kwargs) -> None:
        self.registry = CollectorRegistry()
        self.processor = TokenAttributionProcessor(
            directory=directory, registry=self.registry, **kwargs
        )
        self.provider = TracerProvider(resource=resource or Resource.create({}))
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("tests")

    def value(self, name: str, **labels: str) -> float:
        """A sample's value, 0 when the series does not exist."""
        return self.registry.get_sample_value(name, labels) or 0

    def samples(self, name: str) -> dict[tuple, float]:
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

    def close(self) -> None:
        self.provider.shutdown()


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
