"""``/metrics`` rendered fast: the ledger's counters as text, with a line prefix per series.

prometheus-client builds a sample object per series and escapes its labels at every
scrape; with tens of thousands of series that is most of a scrape, and during full ingest
load it competes for the interpreter with the writer. Here the ledger's counters are
rendered from a snapshot with each series' ``name{labels}`` prefix cached (series never
disappear: the cache grows with the series, bounded by the series caps), and only the
value is formatted per scrape. The other families (histograms, gauges, catalogue, health:
few series, or few changes) go through prometheus-client. The output is the same as
``generate_latest`` of the collector's registry, in the text format and in OpenMetrics
(tested).
"""

from __future__ import annotations

from prometheus_client.openmetrics.exposition import generate_latest as _om_latest
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from otel_processor import metrics as m
from otel_processor.collector import TokenCollector
from otel_processor.prices import PICO_PER_USD

_MAX_CACHED = 1_000_000  # series prefixes kept; cleared past it (series caps keep it far)


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Rest:
    """A registry's worth of the collector's other families, for prometheus-client."""

    def __init__(self, collector: TokenCollector, snap) -> None:
        self._collector, self._snap = collector, snap

    def collect(self):
        return self._collector.collect_rest(self._snap)


class Renderer:
    """Renders a :class:`TokenCollector` for ``/metrics``; one per collector.

    Thread-safe: the cache is a dict that only grows (entries are written whole), read
    and written under the GIL; two scrapes at once at worst build a prefix twice.
    """

    def __init__(self, collector: TokenCollector) -> None:
        self._collector = collector
        self._prefixes: dict[tuple[str, tuple[str, ...]], str] = {}  # see the class doc

    def render(self, openmetrics: bool = False) -> bytes:
        snap = self._collector.ledger.snapshot()
        lines: list[str] = []
        prefixes = self._prefixes
        if len(prefixes) > _MAX_CACHED:
            prefixes.clear()
        for family in m.LEDGER_COUNTERS:
            name = family.name + "_total"
            head = family.name if openmetrics else name
            lines.append(f"# HELP {head} {_escape_help(family.help)}\n"
                         f"# TYPE {head} counter\n")
            table = snap.counters.get(family.name, {})
            scale = PICO_PER_USD if family.usd else None
            order = sorted(range(len(family.labels)), key=family.labels.__getitem__)
            labels = family.labels
            for key in sorted(table):
                prefix = prefixes.get((family.name, key))
                if prefix is None:
                    if labels:  # by label name, as prometheus-client writes them
                        text = ",".join(f'{labels[i]}="{_escape_value(key[i])}"' for i in order)
                        prefix = f"{name}{{{text}}} "
                    else:
                        prefix = name + " "
                    prefixes[(family.name, key)] = prefix
                value = table[key]
                lines.append(prefix + floatToGoString(value / scale if scale else value) + "\n")
            if not openmetrics:
                lines.append("")
        registry = CollectorRegistry()
        registry.register(_Rest(self._collector, snap))
        if openmetrics:
            rest = _om_latest(registry).decode()  # ends with "# EOF\n"
        else:
            from prometheus_client.exposition import generate_latest

            rest = generate_latest(registry).decode()
        return ("".join(lines) + rest).encode()
