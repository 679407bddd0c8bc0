"""What Grafana does with a dashboard panel, for the tests: the committed JSON, the
variables substituted into each query, the queries sent to a real Prometheus, and the
panel's transformations applied to the results.

The transformations are emulated here, by hand (:func:`transform`, and nothing else
calls the emulation): that one function is to be replaced by Grafana's own
``@grafana/data`` (tests/grafana_js). Everything Prometheus computes is real.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

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


def run(prom: Prometheus, p: dict, view: View) -> dict[str, list[dict]]:
    """Every target of the panel, as an instant query at the range's end: refId ->
    Prometheus's result."""
    start, end = panel_range(p, view)
    return {t["refId"]: prom.query(interpolate(t["expr"], start, end, view), end)
            for t in p["targets"]}


# -- The transformations (emulated) -----------------------------------------------------------


def _interpolate_options(value, variables: dict[str, str]):
    """Transformation options with the dashboard variables substituted in every string
    (raw format), as Grafana does before a transformation runs."""
    if isinstance(value, str):
        return _substitute(value, variables)
    if isinstance(value, list):
        return [_interpolate_options(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate_options(v, variables) for k, v in value.items()}
    return value


def _matches(matcher: dict, cell) -> bool:
    """A value matcher of "Filter data by values"."""
    options = matcher["options"]
    if matcher["id"] == "substring":  # "Contains substring", case-insensitive (11.6)
        if options["value"] == "":
            return True
        return isinstance(cell, str) and bool(cell) and options["value"].lower() in cell.lower()
    raise AssertionError(f"matcher {matcher['id']} is not emulated")


def _frames(results: dict[str, list[dict]]) -> list[tuple[set, list[dict]]]:
    """Each query a table: one column per label, "Value" or "Value #<refId>"."""
    multi = len(results) > 1
    frames = []
    for ref, result in results.items():
        if not result:
            continue
        cols = sorted(set().union(*(r["metric"] for r in result)) - {"__name__"})
        value = f"Value #{ref}" if multi else "Value"
        frames.append((set(cols), [
            {**{c: r["metric"].get(c, "") for c in cols}, value: float(r["value"][1])}
            for r in result]))
    return frames


def transform(p: dict, results: dict[str, list[dict]], view: View) -> list[dict]:
    """A table or bar chart as Grafana shows it: the queries' tables merged on their
    shared columns, then the panel's transformations in order (sort, calculated fields,
    filter by value, organize)."""
    frames = _frames(results)
    if not frames:
        return []
    keys = sorted(set.intersection(*(cols for cols, _ in frames)))
    merged: dict[tuple, dict] = {}
    for _, frame in frames:
        for row in frame:
            into = merged.setdefault(tuple(row[k] for k in keys), {})
            clash = {k for k in row if k in into and into[k] != row[k]}
            assert not clash, f"merge would split a row on {clash}: {into} / {row}"
            into.update(row)
    table = list(merged.values())
    variables = {"search": view.search, "tenant": view.tenant}
    org = {"renameByName": {}, "excludeByName": {}, "indexByName": {}}
    for step in p.get("transformations", []):
        opts = _interpolate_options(step["options"], variables)
        if step["id"] == "merge":
            continue  # done above (a single frame also passes through unchanged)
        if step["id"] == "sortBy":
            (sort,) = opts["sort"]
            table.sort(key=lambda r, f=sort["field"]: r.get(f, float("-inf")),
                       reverse=sort["desc"])
        elif step["id"] == "calculateField" and opts["mode"] == "index":
            for i, row in enumerate(table):
                row[opts["alias"]] = i
        elif step["id"] == "calculateField" and opts["mode"] == "binary":
            left = opts["binary"]["left"]["matcher"]["options"]
            assert opts["binary"]["operator"] == "+"
            for row in table:
                row[opts["alias"]] = row[left] + float(opts["binary"]["right"]["fixed"])
        elif step["id"] == "filterByValue":
            assert opts["type"] == "include" and opts["match"] == "any"
            fields = set().union(*table) if table else set()  # the merged frame's fields
            table = [row for row in table if any(
                f["fieldName"] in fields and _matches(f["config"], row.get(f["fieldName"]))
                for f in opts["filters"])]
        elif step["id"] == "organize":
            org = opts
        else:
            raise AssertionError(f"transformation {step['id']} is not emulated")
    produced = set().union(*table) if table else set()
    unknown = set(org.get("indexByName", {})) - produced
    assert not unknown or not table, f"organize orders fields no query returns: {unknown}"
    position = org.get("indexByName", {})
    out = []
    for row in table:
        kept = sorted((k for k in row if not org["excludeByName"].get(k)),
                      key=lambda k: position.get(k, len(position)))
        out.append({org["renameByName"].get(k, k): row[k] for k in kept})
    return out


# -- Reading a panel --------------------------------------------------------------------------


def rows(prom: Prometheus, p: dict, view: View) -> list[dict]:
    """A table panel's rows (or a bar chart's bars) as the viewer sees them."""
    return transform(p, run(prom, p, view), view)


def bars(prom: Prometheus, p: dict, view: View) -> list[tuple[str, float]]:
    """A horizontal bar chart: (y label, x value), top to bottom."""
    x_field = p["options"]["xField"]
    (value_field,) = [name for name in p["transformations"][-1]["options"]["renameByName"]
                      .values() if name != x_field]
    return [(r[x_field], r[value_field]) for r in rows(prom, p, view)]


def value(results: dict[str, list[dict]], ref: str = "A") -> float | None:
    result = results[ref]
    if not result:
        return None
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def by_label(results: dict[str, list[dict]], label: str, ref: str = "A") -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in results[ref]}
