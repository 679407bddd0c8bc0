"""The fast /metrics renderer writes exactly what prometheus-client writes, both formats."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from otel_processor import metrics as m
from otel_processor.collector import TokenCollector
from otel_processor.directory import Directory
from otel_processor.exposition import Renderer
from otel_processor.ledger import Ledger

# label values as the engine lets them through: encodable text, escapes included
label = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ['"', "\\", "\n", "a\"b\\c\nd", "", "__overflow__"])
families = st.sampled_from([f for f in m.LEDGER_COUNTERS if f.labels])


@settings(max_examples=200, deadline=None)
@given(increments=st.lists(st.tuples(families, st.lists(label, min_size=3, max_size=3),
                                     st.integers(0, 10**15)), max_size=30))
def test_the_renderer_writes_what_prometheus_client_writes(increments):
    ledger = Ledger()
    ledger.add([(f.name, tuple(values[: len(f.labels)]), amount)
                for f, values, amount in increments])
    ledger.add([], [("acme", "bot", "alice")])
    collector = TokenCollector(ledger, Directory.empty)
    registry = CollectorRegistry()
    registry.register(collector)
    renderer = Renderer(collector)
    for _ in range(2):  # the second time from the prefix cache
        assert renderer.render().decode() == generate_latest(registry).decode()
        assert renderer.render(openmetrics=True).decode() == \
            openmetrics_latest(registry).decode()


def test_the_service_serves_the_fast_rendering(tmp_path):
    import requests

    from exporter.config import Config
    from exporter.server import start_server
    from tests import service as svc
    from tests.scenarios import WORKED_EXAMPLE_DIRECTORY, worked_example

    running = start_server(Config(listen="127.0.0.1:0", directory=str(WORKED_EXAMPLE_DIRECTORY),
                                  state_dir=str(tmp_path / "state")))
    try:
        svc.send_live(running.url, worked_example)
        registry = running.service.registry
        served = requests.get(running.url + "/metrics", timeout=10).text
        expected = generate_latest(registry).decode()
        drop = ("directory_last_success", "traces_pending")  # may move between the two reads
        assert [x for x in served.splitlines() if not any(d in x for d in drop)] == \
            [x for x in expected.splitlines() if not any(d in x for d in drop)]
    finally:
        running.stop()
