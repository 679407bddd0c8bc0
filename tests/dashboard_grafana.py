"""What Grafana does with a dashboard panel, for the tests: the committed JSON, the
variables substituted into each query, the queries sent to a real Prometheus, and what
the panel shows.

Prometheus computes every number; Grafana's own code does the rest: the answers become
the data frames of Grafana's Prometheus data source (:func:`tests.grafana_frames.panel_frames`)
and the panel's transformations and field config run through ``@grafana/data`` 11.6 in
Node (:func:`tests.grafana_frames.apply_transformations`, one Node process for the test
session): :func:`show` sends a whole list of panels in one request. Nothing here emulates
a transformation.

The stat cards of the tests that read :func:`value` take Prometheus's answer as it is: a
stat has no transformation, and its one instant value is the number it shows (the
oracle, :mod:`tests.dashboard_oracle`, reads every range panel through Grafana, stats
included).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests import grafana_frames as gf
from tests.prom import Prometheus

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
LANGUAGES = ("en", "zh")

OVERVIEW, ASSETS, DRILL, SRE = ("llm-tenant-overview", "llm-tenant-assets", "llm-drilldown",
                                "llm-sre-governance")


def uid_in(base: str, lang: str) -> str:
    return base if lang == "en" else f"{base}-{lang}"


def dashboards(lang: str = "en") -> dict[str, dict]:
    """The committed dashboards of one language, by uid (= file name)."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((DASHBOARDS / lang).glob("*.json"))}


def panel(uid: str, title: str, lang: str = "en") -> dict:
    found = [p for p in dashboards(lang)[uid_in(uid, lang)]["panels"] if p["title"] == title]
    assert len(found) == 1, (uid, title)
    return found[0]


def all_panels(lang: str = "en"):
    for uid, d in dashboards(lang).items():
        for p in d["panels"]:
            yield uid, p


@dataclass(frozen=True)
class View:
    """The dashboard's state: its time range ending at ``at`` and its variables."""

    at: float = 0.0
    range_s: float = 3 * 3600
    tenant: str = "acme"
    search: str = ""
    rate_interval: str = "10m"


def panel_range(p: dict, view: View) -> tuple[float, float]:
    """The panel's time range: the dashboard's (no panel overrides it)."""
    assert "timeFrom" not in p and "timeShift" not in p, p["title"]
    return view.at - view.range_s, view.at


# -- The queries ------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::([^}]+))?\}")


def _substitute(text: str, values: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        fmt = m.group(3)
        if name.isdigit():
            return m.group(0)  # label_replace's "$1", not a variable
        assert name in values, f"unknown variable ${name} in {text}"
        value = values[name]
        if fmt is None:
            return value
        if fmt == "date:seconds":
            return str(round(int(value) / 1000))
        raise AssertionError(f"unknown format {fmt} in {text}")

    return _VARIABLE.sub(sub, text)


def interpolate(expr: str, start: float, end: float, view: View) -> str:
    """A query's variables as Grafana substitutes them. The search box is not among them:
    no query may contain it (its text never reaches Prometheus)."""
    rng = round(end - start)
    values = {"tenant": view.tenant, "__range": f"{rng}s", "__range_s": str(rng),
              "__rate_interval": view.rate_interval,
              "__from": str(int(start * 1000)), "__to": str(int(end * 1000))}
    return _substitute(expr, values)


def exprs(p: dict, view: View) -> dict[str, str]:
    """refId -> the query Grafana sends."""
    start, end = panel_range(p, view)
    return {t["refId"]: interpolate(t["expr"], start, end, view) for t in p["targets"]}


def run(prom: Prometheus, p: dict, view: View) -> dict[str, list[dict]]:
    """Every target of the panel, as an instant query at the range's end: refId ->
    Prometheus's result."""
    return {ref: prom.query(expr, view.at) for ref, expr in exprs(p, view).items()}


def run_range(prom: Prometheus, p: dict, view: View, step: int) -> dict[str, list[dict]]:
    """Every target as a range query over the panel's range, every ``step`` seconds (a time
    series panel's request): refId -> Prometheus's matrix."""
    start, end = panel_range(p, view)
    return {ref: prom.query_range(expr, start, end, step)
            for ref, expr in exprs(p, view).items()}


# -- What the panel shows (Grafana's own code) ------------------------------------------------


def job(prom: Prometheus, p: dict, view: View, *, step: int | None = None) -> dict:
    """The panel as Grafana's frontend receives it: the frames of its queries' answers (an
    instant request, or a range one every ``step`` seconds), its transformations and field
    config, the dashboard's variables for the transformations' options."""
    sent = exprs(p, view)
    results = run(prom, p, view) if step is None else run_range(prom, p, view, step)
    frames = gf.panel_frames(p["targets"], results, exprs=sent)
    return gf.panel_job(p, frames, variables={"search": view.search, "tenant": view.tenant})


def show(prom: Prometheus, panels: Iterable[tuple[dict, View]]) -> list[list[dict]]:
    """Each (panel, view)'s output frames, after its transformations and field config: one
    request to Node for them all."""
    return gf.apply_transformations([job(prom, p, view) for p, view in panels])


def table(frames: Sequence[dict]) -> list[dict]:
    """A table's (or bar chart's) rows, {column header: value}, left to right; none when
    the transformations leave no frame ("No data": organize drops the field-less frame of
    an empty answer). A panel whose transformations leave several frames would show a
    frame picker: there is at most one."""
    assert len(frames) <= 1, f"{len(frames)} frames: {[gf.columns(f) for f in frames]}"
    return gf.rows(frames[0]) if frames else []


def bar_list(p: dict, frames: Sequence[dict]) -> list[tuple[str, float]]:
    """A horizontal bar chart: (y label, x value), top to bottom."""
    x_field = p["options"]["xField"]
    out = []
    for row in table(frames):
        label = row.pop(x_field)
        (value,) = row.values()
        out.append((label, value))
    return out


def series(frames: Sequence[dict]) -> dict[str, float]:
    """A stat's, bar gauge's or pie chart's values: {display name: last value}, one per
    number field (one per series)."""
    out: dict[str, float] = {}
    for frame in frames:
        for f in frame["fields"]:
            if f["type"] == "number" and f["values"]:
                assert f["displayName"] not in out, f["displayName"]
                out[f["displayName"]] = f["values"][-1]
    return out


def single(frames: Sequence[dict]) -> float | None:
    """A stat of one series: its value, None when the query returned nothing."""
    shown = series(frames)
    assert len(shown) <= 1, shown
    return next(iter(shown.values()), None)


def lines(frames: Sequence[dict]) -> dict[str, list[tuple[float, float]]]:
    """A time series panel: {display name (the legend): [(time in s, value)]}."""
    out: dict[str, list[tuple[float, float]]] = {}
    for frame in frames:
        (time,) = [f for f in frame["fields"] if f["type"] == "time"]
        for f in frame["fields"]:
            if f["type"] == "number":
                assert f["displayName"] not in out, f["displayName"]
                out[f["displayName"]] = [(t / 1000, v) for t, v in
                                         zip(time["values"], f["values"], strict=True)
                                         if v is not None and not math.isnan(v)]
    return out


def rows(prom: Prometheus, p: dict, view: View) -> list[dict]:
    """A table panel's rows (or a bar chart's bars) as the viewer sees them."""
    (frames,) = show(prom, [(p, view)])
    return table(frames)


def rows_of(prom: Prometheus, panels: Iterable[tuple[dict, View]]) -> list[list[dict]]:
    """:func:`rows` of many panels, in one request to Node."""
    return [table(frames) for frames in show(prom, panels)]


def bars(prom: Prometheus, p: dict, view: View) -> list[tuple[str, float]]:
    """A horizontal bar chart: (y label, x value), top to bottom."""
    (frames,) = show(prom, [(p, view)])
    return bar_list(p, frames)


def shown_series(prom: Prometheus, p: dict, view: View) -> dict[str, float]:
    """:func:`series` of one panel: a bar gauge's bars or a pie's slices by name."""
    (frames,) = show(prom, [(p, view)])
    return series(frames)


# -- Prometheus's answers, for the stats (no transformation) -----------------------------------


def value(results: dict[str, list[dict]], ref: str = "A") -> float | None:
    result = results[ref]
    if not result:
        return None
    assert len(result) == 1, result
    return float(result[0]["value"][1])
