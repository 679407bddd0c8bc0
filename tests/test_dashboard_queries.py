"""Every query of every dashboard panel, run by the real Prometheus on known data.

The data: the real exporter (``TokenAttributionProcessor``) attributes a timeline of traces;
its registry is sampled on a scrape grid (hourly from August 2025, every 60 s in the last
7 hours before T0 = 2025-10-02 06:00 UTC), written as OpenMetrics with timestamps and
backfilled with ``promtool tsdb create-blocks-from openmetrics``. Prometheus 2.42 then
serves that TSDB, and every panel target is sent through its HTTP API the way Grafana
would: variables substituted (``$tenant``, ``${search:regex}`` escaped like Grafana,
``$__range``, ``${__from:date:seconds}`` of the panel's own time range), instant queries
at the range's end.

The timeline:

- attribution.md's worked example at 04:30 (inside a 3 h range ending at T0), after a
  baseline of its traces 1, 3 and 4 at 01:30 (before that range): over 3 h, acme and
  globex see exactly the worked example's numbers, and trace 2's series (translate,
  qwen-max, bob) are created inside the range;
- a second tenant, initech, with a call every 6 h since August and a dense mix of calls in
  the last 7 h: more than 10 agents and members, a chat workflow, an agent missing from the
  directory, an acme agent, cache reads, errors, an unpriced model, a rejected span,
  unattributed calls, and series first created inside the range.

Expected numbers come from attribution.md (worked example) and from a plain sum over the
calls' own token counts (:class:`Expected`), never from the exporter's output.

Three health series cannot come from the in-process processor (it sees no duplicates, has
no pending traces once spans end, and stamps the directory load with the wall clock): they
are written with known values (:func:`_synthetic`).
"""

from __future__ import annotations

import calendar
import json
import re
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from opentelemetry.trace import Tracer

from tests.conftest import Pipeline
from tests.prom import Prometheus, binary
from tests.scenarios import agent, caller, chat, tool, worked_example, workflow

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
DIRECTORY = Path(__file__).parent / "fixtures" / "dashboards" / "directory.yaml"

H = 3600
DAY = 86400


def _utc(*args: int) -> int:
    return calendar.timegm(datetime(*args, tzinfo=timezone.utc).timetuple())


T0 = _utc(2025, 10, 2, 6)  # the dashboards' "now"
E2 = _utc(2025, 9, 2, 6)  # a second "now", for the month before (31-day August)
START = _utc(2025, 8, 1)
DENSE = T0 - 7 * H  # scrapes every 60 s from here on, hourly before

# -- The scenario -----------------------------------------------------------------------------

MEMBERS = {
    "acme": ("alice", "bob"),
    "globex": ("carol",),
    "initech": ("peter", "samir", "michael", "milton", "bill", "joanna", "tom", "nina", "drew",
                "slydell", "porter", "lawrence"),
}
NAMES = {
    "alice": "Alice Wang", "bob": "Bob Li", "carol": "Carol Chen", "peter": "Peter Gibbons",
    "samir": "Samir Nagheenanajar", "michael": "Michael Bolton",
    "milton": "Milton Waddams (Stapler)", "bill": "Bill Lumbergh", "joanna": "Joanna Bright",
    "tom": "Tom Smykowski", "nina": "Nina Park", "drew": "Drew Carter",
    "slydell": "Bob Slydell", "porter": "Bob Porter", "lawrence": "Lawrence Hunt",
}
INITECH_AGENTS = {
    "tps-helper": "TPS Report Helper", "stapler-finder": "Stapler Finder",
    "memo-writer": "Memo Writer", "budget-bot": "Budget Bot", "flair-coach": "Flair Coach",
    "printer-fixer": "Printer Fixer", "minutes": "Meeting Minutes",
    "expense-check": "Expense Check", "code-review": "Code Review",
    "schedule-bot": "Schedule Bot", "conclusions": "Jump to Conclusions",
}
AGENT_NAMES = {"support-bot": "Support Bot", "faq-bot": "FAQ Bot", **INITECH_AGENTS}
AGENT_OWNER = {"support-bot": "acme", "faq-bot": "acme", **dict.fromkeys(INITECH_AGENTS,
                                                                          "initech")}
WORKFLOW_NAMES = {"summarize": "Summarize", "translate": "Translate",
                  "report-gen": "Report Generator", "cover-sheet": "Cover Sheet Check"}
WORKFLOW_OWNER = {"summarize": "acme", "translate": "acme", "report-gen": "initech",
                  "cover-sheet": "initech"}
CHATFLOW = {"tps-helper": "tps-chat"}
UNLISTED_AGENT = "draft-helper"  # in no directory: shows its id
#: USD per million tokens (input, output, cache read), as in the packaged price catalog.
PRICES = {
    "gpt-4o": ("2.50", "10.00", "1.25"), "gpt-4o-mini": ("0.15", "0.60", "0.075"),
    "claude-sonnet-4-5": ("3.00", "15.00", "0.30"), "deepseek-chat": ("0.27", "1.10", "0.07"),
    "qwen-max": ("1.60", "6.40", "1.60"),
}
UNPRICED = "llama-3-70b-local"


@dataclass(frozen=True)
class Usage:
    """One attributed model call: what the cost metrics count."""

    at: float
    tenant: str
    member: str
    model: str
    input: int
    output: int
    cache_read: int = 0
    agent: str | None = None
    workflow: str | None = None
    error: bool = False

    @property
    def tokens(self) -> int:
        return self.input + self.output

    @property
    def cost(self) -> Decimal:
        if self.model not in PRICES:
            return Decimal(0)
        p_in, p_out, p_cache = (Decimal(p) for p in PRICES[self.model])
        usd = ((self.input - self.cache_read) * p_in + self.cache_read * p_cache
               + self.output * p_out)
        return usd / 1_000_000


@dataclass
class Expected:
    """What the exporter must count, written down from the calls themselves."""

    usage: list[Usage] = field(default_factory=list)
    invocations: list[tuple[float, str, str, str | None]] = field(default_factory=list)
    runs: list[tuple[float, str, str]] = field(default_factory=list)
    unattributed: list[tuple[float, str, int]] = field(default_factory=list)
    rejected: list[tuple[float, str]] = field(default_factory=list)

    def calls(self, start: float, end: float, **match: str) -> list[Usage]:
        return [u for u in self.usage if start < u.at <= end
                and all(getattr(u, k) == v for k, v in match.items())]

    def by(self, key: str, start: float, end: float, **match: str) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for u in self.calls(start, end, **match):
            if getattr(u, key) is not None:
                out[getattr(u, key)] += u.tokens
        return dict(out)


@dataclass(frozen=True)
class Call:
    """One model call of the second scenario, under at most one agent (with its chat
    workflow) and one workflow, by ``caller`` acting for ``tenant``."""

    at: float
    caller: str | None
    model: str
    input: int
    output: int
    agent: str | None = None
    chatflow: bool = False
    workflow: str | None = None
    cache_read: int = 0
    error: bool = False
    tenant: str | None = "initech"

    def emit(self, tracer: Tracer) -> None:
        attrs = caller(self.caller, self.tenant) if self.caller else {"tenant.id": self.tenant}
        with ExitStack() as stack:
            if self.agent:
                stack.enter_context(agent(tracer, self.agent, **attrs))
                attrs = {}
            if self.chatflow:
                stack.enter_context(workflow(tracer, CHATFLOW[self.agent], chat=True))
            if self.workflow:
                stack.enter_context(workflow(tracer, self.workflow, **attrs))
                attrs = {}
            extra = dict(attrs)
            if self.cache_read:
                extra["gen_ai.usage.cache_read.input_tokens"] = self.cache_read
            if self.error:
                extra["error.type"] = "timeout"
            chat(tracer, self.model, self.input, self.output, **extra)

    def expect(self, e: Expected) -> None:
        tokens = self.input + self.output
        if self.agent:
            e.invocations.append((self.at, AGENT_OWNER.get(self.agent, ""), self.agent,
                                  self.caller))
        if self.workflow:
            e.runs.append((self.at, WORKFLOW_OWNER[self.workflow], self.workflow))
        if self.caller is None:
            e.unattributed.append((self.at, "no_caller", tokens))
        elif self.caller not in MEMBERS.get(self.tenant, ()):
            e.unattributed.append((self.at, "not_member", tokens))
        else:
            e.usage.append(Usage(self.at, self.tenant, self.caller, self.model, self.input,
                                 self.output, self.cache_read, self.agent, self.workflow,
                                 self.error))


# The worked example, trace by trace (tests/scenarios.py writes all four at once).
def _trace1(t: Tracer) -> None:
    with agent(t, "support-bot", **caller("alice", "acme")):
        with workflow(t, "support-chat", chat=True):
            chat(t, "gpt-4o", 100, 50)
        with tool(t, "summarize"), workflow(t, "summarize"):
            chat(t, "gpt-4o-mini", 200, 20)


def _trace3(t: Tracer) -> None:
    with agent(t, "support-bot", **caller("dave", None)):
        with workflow(t, "support-chat", chat=True):
            chat(t, "gpt-4o", 1000, 500)


def _trace4(t: Tracer) -> None:
    with agent(t, "support-bot", **caller("carol", "globex")):
        chat(t, "gpt-4o", 7, 3)


def _worked_example_expected(at: float, traces: tuple[int, ...], e: Expected) -> None:
    """attribution.md's table of the worked example, for the traces given."""
    if 1 in traces:
        e.usage += [Usage(at, "acme", "alice", "gpt-4o", 100, 50, agent="support-bot"),
                    Usage(at, "acme", "alice", "gpt-4o-mini", 200, 20, agent="support-bot",
                          workflow="summarize")]
        e.invocations.append((at, "acme", "support-bot", "alice"))
        e.runs.append((at, "acme", "summarize"))
    if 2 in traces:
        e.usage += [Usage(at, "acme", "bob", "qwen-max", 30, 30, workflow="translate"),
                    Usage(at, "acme", "bob", "gpt-4o-mini", 10, 5, workflow="translate")]
        e.runs += [(at, "acme", "translate"), (at, "acme", "summarize")]
    if 3 in traces:
        e.unattributed.append((at, "not_member", 1500))
        e.invocations.append((at, "acme", "support-bot", "dave"))
    if 4 in traces:
        e.usage.append(Usage(at, "globex", "carol", "gpt-4o", 7, 3, agent="support-bot"))
        e.invocations.append((at, "acme", "support-bot", "carol"))


BASELINE_AT = T0 - 4.5 * H + 30  # 01:30:30: before a 3 h range, inside a 6 h one
EXAMPLE_AT = T0 - 1.5 * H + 30  # 04:30:30


def _background() -> Iterator[Call]:
    """Every 6 hours since August: peter asks the TPS Report Helper (its chat workflow)."""
    at = START + 20 * 60 + 30
    while at <= T0:
        day = datetime.fromtimestamp(at, timezone.utc)
        yield Call(at, "peter", "gpt-4o-mini", 1000 + 10 * day.day + day.hour, 100 + day.day,
                   agent="tps-helper", chatflow=True)
        at += 6 * H


_DENSE_MEMBERS = MEMBERS["initech"][:11]
_AGENTS = tuple(INITECH_AGENTS)
_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", UNPRICED)


def _dense() -> Iterator[Call]:
    """A call every 10 minutes in the last 7 hours, plus calls chosen for what they test."""
    for i in range(42):
        at = DENSE + 5 * 60 + 30 + i * 600  # 23:05:30 ... 05:55:30
        model = _MODELS[i % 4]
        if model == UNPRICED and at > T0 - 1 * H:
            model = "deepseek-chat"  # a model first used inside the range
        shape = i % 3
        agent_id = _AGENTS[(i * 4) % 11] if shape != 2 else None
        wf = ("report-gen", "cover-sheet")[i % 2] if shape == 2 or i % 5 == 0 else None
        cached = model in ("gpt-4o", "claude-sonnet-4-5", "deepseek-chat") and i % 2 == 0
        inp = 300 + 37 * i + 11 * (i % 11) ** 2
        yield Call(at, _DENSE_MEMBERS[i % 11], model, inp, 20 + 3 * i, agent=agent_id,
                   chatflow=agent_id == "tps-helper", workflow=wf,
                   cache_read=inp // 4 if cached else 0, error=i % 7 == 3)
    yield Call(T0 - 4.5 * H - 20 * 60 + 30, "samir", "gpt-4o-mini", 400, 40, agent="faq-bot")
    yield Call(T0 - 20 * 60 + 30, "drew", "gpt-4o-mini", 2500, 250, agent="faq-bot")
    yield Call(T0 - 1.75 * H + 30, "nina", "gpt-4o", 3000, 300, agent=UNLISTED_AGENT)
    yield Call(T0 - 1.25 * H + 30, "lawrence", "claude-sonnet-4-5", 2000, 200,
               agent="budget-bot")  # a member first seen inside the range
    yield Call(T0 - 3.5 * H + 30, "zed", "gpt-4o", 450, 50)  # not a member of initech
    yield Call(T0 - 3.3 * H + 30, None, "gpt-4o", 180, 20)  # no caller


REJECTED_AT = T0 - 0.5 * H + 30


@dataclass
class Scenario:
    events: list[tuple[float, Callable[[Tracer], None]]]
    expected: Expected


def scenario() -> Scenario:
    e = Expected()
    events: list[tuple[float, Callable[[Tracer], None]]] = []
    for call in [*_background(), *_dense()]:
        call.expect(e)
        events.append((call.at, call.emit))

    def baseline(t: Tracer) -> None:
        _trace1(t)
        _trace3(t)
        _trace4(t)

    events.append((BASELINE_AT, baseline))
    _worked_example_expected(BASELINE_AT, (1, 3, 4), e)
    events.append((EXAMPLE_AT, worked_example))
    _worked_example_expected(EXAMPLE_AT, (1, 2, 3, 4), e)

    def invalid(t: Tracer) -> None:
        chat(t, "gpt-4o", -5, 1, **caller("peter", "initech"))

    events.append((REJECTED_AT, invalid))
    e.rejected.append((REJECTED_AT, "invalid_token_count"))
    events.sort(key=lambda item: item[0])
    return Scenario(events, e)


# -- From the exporter to a TSDB --------------------------------------------------------------

DUPLICATES = ((T0 - 5 * H + 30, 5), (T0 - 1.83 * H, 2), (T0 - 0.83 * H, 1))
PENDING_NOW = 3
DIRECTORY_LAST_LOAD = T0 - 20 * 60  # refreshed every 5 minutes, then failing


def _synthetic(t: float) -> dict[tuple[str, tuple], float]:
    """The three health series the in-process processor cannot produce (module doc)."""
    return {
        ("llm_exporter_duplicate_spans_total", ()): sum(n for at, n in DUPLICATES if at <= t),
        ("llm_exporter_traces_pending", ()): PENDING_NOW if t >= T0 - 120 else 0,
        ("llm_exporter_directory_last_success_timestamp_seconds", ()):
            min(t // 300 * 300, DIRECTORY_LAST_LOAD),
    }


def grid() -> list[int]:
    return [*range(START - H, DENSE, H), *range(DENSE, T0 + 1, 60)]


def series(sc: Scenario) -> dict[tuple[str, tuple], list[tuple[int, float]]]:
    """Run the events through the real exporter and sample its registry on the grid."""
    pipeline = Pipeline(directory=DIRECTORY, search_contact_fields=True)
    out: dict[tuple[str, tuple], list[tuple[int, float]]] = defaultdict(list)
    try:
        pending = list(sc.events)
        snapshot: dict[tuple[str, tuple], float] = {}
        changed = True
        for t in grid():
            while pending and pending[0][0] <= t:
                pending.pop(0)[1](pipeline.tracer)
                changed = True
            if changed:
                pipeline.flush()
                snapshot = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in pipeline.registry.collect() for s in family.samples
                }
                changed = False
            now = {**snapshot, **_synthetic(t)}
            for key, value in now.items():
                out[key].append((t, value))
    finally:
        pipeline.close()
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics(data: dict[tuple[str, tuple], list[tuple[int, float]]]) -> str:
    lines = []
    for name in sorted({name for name, _ in data}):
        lines.append(f"# TYPE {name} unknown")
        for (metric, labels), samples in sorted(data.items()):
            if metric != name:
                continue
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            head = f"{name}{{{text}}}" if text else name
            lines += [f"{head} {value!r} {t}" for t, value in samples]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfilled_prometheus(workdir: Path, text: str) -> Prometheus:
    """Prometheus 2.42 serving a TSDB that promtool backfilled; nothing is scraped."""
    data = workdir / "data.om"
    data.write_text(text)
    tsdb = workdir / "tsdb"
    subprocess.run(
        [binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
         "--max-block-duration=1488h", str(data), str(tsdb)],
        check=True, capture_output=True)
    return Prometheus(workdir / "server", [], tsdb=tsdb,
                      extra_args=["--storage.tsdb.retention.time=10y"])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[tuple[Prometheus, Expected]]:
    sc = scenario()
    prom = backfilled_prometheus(tmp_path_factory.mktemp("dashboards"), openmetrics(series(sc)))
    try:
        yield prom, sc.expected
    finally:
        prom.stop()


@pytest.fixture(scope="module")
def prom(world) -> Prometheus:
    return world[0]


@pytest.fixture(scope="module")
def expected(world) -> Expected:
    return world[1]


# -- What Grafana does with a panel -----------------------------------------------------------


def dashboards() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panel(uid: str, title: str) -> dict:
    found = [p for p in dashboards()[uid]["panels"] if p["title"] == title]
    assert len(found) == 1, (uid, title)
    return found[0]


def grafana_regex(value: str) -> str:
    """Grafana's ``${var:regex}`` escaping (``escapeRegex`` of @grafana/data)."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


@dataclass(frozen=True)
class View:
    """The dashboard's state: its time range ending at ``at`` and its variables."""

    at: float = T0
    range_s: int = 3 * H
    tenant: str = "acme"
    search: str = ""
    rate_interval: str = "10m"


def panel_range(p: dict, view: View) -> tuple[float, float]:
    """The panel's time range: the dashboard's, or its relative-time override (UTC)."""
    override = p.get("timeFrom")
    if override is None:
        return view.at - view.range_s, view.at
    now = datetime.fromtimestamp(view.at, timezone.utc)
    if override == "now/d":
        start = now.replace(hour=0, minute=0, second=0)
    elif override == "now/M":
        start = now.replace(day=1, hour=0, minute=0, second=0)
    else:
        raise AssertionError(f"unknown timeFrom {override!r}")
    return start.timestamp(), view.at


_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::([^}]+))?\}")


def interpolate(expr: str, start: float, end: float, view: View) -> str:
    rng = round(end - start)
    values = {"tenant": view.tenant, "search": view.search, "__range": f"{rng}s",
              "__range_s": str(rng), "__rate_interval": view.rate_interval,
              "__from": str(int(start * 1000)), "__to": str(int(end * 1000))}

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        fmt = m.group(3)
        if name.isdigit():
            return m.group(0)  # label_replace's "$1", not a variable
        assert name in values, f"unknown variable ${name} in {expr}"
        value = values[name]
        if fmt is None:
            return value
        if fmt == "regex":
            return grafana_regex(value)
        if fmt == "date:seconds":
            return str(round(int(value) / 1000))
        raise AssertionError(f"unknown format {fmt}")

    return _VARIABLE.sub(sub, expr)


def run(prom: Prometheus, p: dict, view: View) -> dict[str, list[dict]]:
    """Every target of the panel: refId -> Prometheus's result."""
    start, end = panel_range(p, view)
    return {t["refId"]: prom.query(interpolate(t["expr"], start, end, view), end)
            for t in p["targets"]}


def _organize(p: dict) -> dict:
    steps = [s for s in p.get("transformations", []) if s["id"] == "organize"]
    return steps[0]["options"] if steps else {"renameByName": {}, "excludeByName": {}}


def rows(p: dict, results: dict[str, list[dict]]) -> list[dict]:
    """A table or bar chart as Grafana shows it: each query a table (one column per label,
    "Value" or "Value #<refId>"), merged on their shared columns, sorted by the panel's
    sort transformation, ranked when asked, renamed and hidden by its organize step."""
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
    for step in p.get("transformations", []):
        if step["id"] == "sortBy":
            (sort,) = step["options"]["sort"]
            table.sort(key=lambda r, f=sort["field"]: r.get(f, float("-inf")),
                       reverse=sort["desc"])
        elif step["id"] == "calculateField" and step["options"]["mode"] == "index":
            for i, row in enumerate(table):
                row[step["options"]["alias"]] = i
        elif step["id"] == "calculateField" and step["options"]["mode"] == "binary":
            opts = step["options"]
            left = opts["binary"]["left"]["matcher"]["options"]
            assert opts["binary"]["operator"] == "+"
            for row in table:
                row[opts["alias"]] = row[left] + float(opts["binary"]["right"]["fixed"])
    org = _organize(p)
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


def bars(p: dict, results: dict[str, list[dict]]) -> list[tuple[str, float]]:
    """A horizontal bar chart: (y label, x value), top to bottom."""
    x_field = p["options"]["xField"]
    return [(r[x_field], r["Tokens"]) for r in rows(p, results)]


def value(results: dict[str, list[dict]], ref: str = "A") -> float | None:
    result = results[ref]
    if not result:
        return None
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def by_label(results: dict[str, list[dict]], label: str, ref: str = "A") -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in results[ref]}


def ranked(tokens: dict[str, int], names: dict[str, str], n: int = 10) -> list[tuple]:
    """The top ``n`` by tokens, largest first, as (name, tokens); no tie at the cut."""
    order = sorted(tokens.items(), key=lambda kv: -kv[1])
    if len(order) > n:
        assert order[n - 1][1] != order[n][1], "a tie at the top-10 cut: change the scenario"
    return [(names.get(k, k), v) for k, v in order[:n]]


def approx(x: Decimal | float) -> object:
    return pytest.approx(float(x), rel=1e-9, abs=1e-12)


OVERVIEW, ASSETS, DRILL, SRE = ("llm-tenant-overview", "llm-tenant-assets", "llm-drilldown",
                                "llm-sre-governance")


def _all_targets() -> Iterator[tuple[str, str]]:
    for uid, d in dashboards().items():
        for p in d["panels"]:
            yield uid, p["title"]


# -- Every query runs -------------------------------------------------------------------------


@pytest.mark.parametrize(("uid", "title"), list(_all_targets()))
def test_every_panel_query_runs_on_prometheus_and_returns_data(prom, uid, title):
    p = panel(uid, title)
    for tenant in ("acme", "initech"):
        results = run(prom, p, View(tenant=tenant))
        for ref, result in results.items():
            assert result, f"{uid} / {title} / {ref} is empty for {tenant}"


# -- §1 Tenant overview: the worked example, exactly ------------------------------------------


def test_acme_cards_show_the_worked_example_numbers(prom):
    view = View(tenant="acme")
    cards = {t: value(run(prom, panel(OVERVIEW, t), view))
             for t in ("Agent tokens", "Workflow tokens", "Total tokens", "Cost (USD)")}
    assert cards["Agent tokens"] == 370
    assert cards["Workflow tokens"] == 295
    assert cards["Total tokens"] == 445
    assert cards["Cost (USD)"] == approx(Decimal("0.0010365"))


def test_acme_top_tens_show_the_worked_example_numbers(prom):
    view = View(tenant="acme")

    def chart(title):
        p = panel(OVERVIEW, title)
        return bars(p, run(prom, p, view))

    assert chart("Model consumption top 10") == [
        ("gpt-4o-mini", 235), ("gpt-4o", 150), ("qwen-max", 60)]
    assert chart("Agent consumption top 10") == [("Support Bot", 370)]
    assert chart("Workflow consumption top 10") == [("Summarize", 220), ("Translate", 75)]
    members = panel(OVERVIEW, "Member tokens top 10")
    assert rows(members, run(prom, members, view)) == [
        {"Member": "Alice Wang", "Tokens": 370}, {"Member": "Bob Li", "Tokens": 75}]


def test_globex_sees_only_carols_ten_tokens(prom):
    view = View(tenant="globex")
    assert value(run(prom, panel(OVERVIEW, "Agent tokens"), view)) == 10
    assert value(run(prom, panel(OVERVIEW, "Workflow tokens"), view)) == 0
    assert value(run(prom, panel(OVERVIEW, "Total tokens"), view)) == 10
    agents = panel(OVERVIEW, "Agent consumption top 10")
    assert bars(agents, run(prom, agents, view)) == [("Support Bot", 10)]
    workflows = panel(OVERVIEW, "Workflow consumption top 10")
    assert bars(workflows, run(prom, workflows, view)) == []
    members = panel(OVERVIEW, "Member tokens top 10")
    assert rows(members, run(prom, members, view)) == [{"Member": "Carol Chen", "Tokens": 10}]


# -- Exact ranges -----------------------------------------------------------------------------


def test_a_range_subtracts_the_baseline_and_counts_new_series_from_zero(prom):
    """Over 3 h the baseline run before the range is subtracted, and trace 2's series,
    created inside the range, count in full; over 6 h both runs count."""
    def card(title, hours):
        return value(run(prom, panel(OVERVIEW, title), View(range_s=hours * H)))

    assert (card("Agent tokens", 3), card("Agent tokens", 6)) == (370, 740)
    assert (card("Workflow tokens", 3), card("Workflow tokens", 6)) == (295, 515)
    assert (card("Total tokens", 3), card("Total tokens", 6)) == (445, 815)
    p = panel(OVERVIEW, "Model consumption top 10")
    assert bars(p, run(prom, p, View(range_s=6 * H))) == [
        ("gpt-4o-mini", 455), ("gpt-4o", 300), ("qwen-max", 60)]


def test_increase_would_not_be_exact_on_the_same_data(prom):
    """Why the dashboards do not use increase(): qwen-max's series appears inside the range
    and increase() drops its first sample, the raw difference does not."""
    sel = 'llm_model_tokens_total{tenant="acme",model="qwen-max"}'
    raw = prom.query(f"sum({sel} - ({sel} offset 3h or {sel} * 0))", T0)
    assert float(raw[0]["value"][1]) == 60
    increase = prom.query(f"sum(increase({sel}[3h]))", T0)
    assert float(increase[0]["value"][1]) != 60


# -- §1 and §3 for initech: ten of more, names, search ----------------------------------------


@pytest.mark.parametrize("hours", [3, 6])
def test_initech_overview_matches_its_calls(prom, expected, hours):
    view = View(tenant="initech", range_s=hours * H)
    start, end = T0 - hours * H, T0
    calls = expected.calls(start, end, tenant="initech")
    assert value(run(prom, panel(OVERVIEW, "Total tokens"), view)) == sum(
        u.tokens for u in calls)
    assert value(run(prom, panel(OVERVIEW, "Agent tokens"), view)) == sum(
        u.tokens for u in calls if u.agent)
    assert value(run(prom, panel(OVERVIEW, "Workflow tokens"), view)) == sum(
        u.tokens for u in calls if u.workflow)
    assert value(run(prom, panel(OVERVIEW, "Cost (USD)"), view)) == approx(
        sum(u.cost for u in calls))
    agent_names = {**AGENT_NAMES}  # the unlisted agent keeps its id
    for title, key, names in (("Model consumption top 10", "model", {}),
                              ("Agent consumption top 10", "agent", agent_names),
                              ("Workflow consumption top 10", "workflow", WORKFLOW_NAMES)):
        p = panel(OVERVIEW, title)
        assert bars(p, run(prom, p, view)) == ranked(
            expected.by(key, start, end, tenant="initech"), names), title
    members = panel(OVERVIEW, "Member tokens top 10")
    want = ranked(expected.by("member", start, end, tenant="initech"), NAMES)
    assert [(r["Member"], r["Tokens"]) for r in rows(members, run(prom, members, view))] == want


def test_initech_top_ten_cuts_eleven_agents_and_shows_foreign_and_unlisted_ones(prom, expected):
    view = View(tenant="initech", range_s=6 * H)
    p = panel(OVERVIEW, "Agent consumption top 10")
    shown = bars(p, run(prom, p, view))
    used = expected.by("agent", T0 - 6 * H, T0, tenant="initech")
    assert len(used) > 10 and len(shown) == 10
    labels = {name for name, _ in shown}
    assert UNLISTED_AGENT in labels  # no directory entry: its id
    assert "FAQ Bot" in labels  # acme's agent, called by initech's members


def _drill(prom, title: str, view: View) -> list[dict]:
    p = panel(DRILL, title)
    return rows(p, run(prom, p, view))


def test_model_detail_has_totals_inputs_outputs_and_share(prom, expected):
    assert _drill(prom, "Model consumption detail", View()) == [
        {"Model": "gpt-4o-mini", "Total": 235, "Input": 210, "Output": 25,
         "Share": pytest.approx(235 / 445 * 100)},
        {"Model": "gpt-4o", "Total": 150, "Input": 100, "Output": 50,
         "Share": pytest.approx(150 / 445 * 100)},
        {"Model": "qwen-max", "Total": 60, "Input": 30, "Output": 30,
         "Share": pytest.approx(60 / 445 * 100)},
    ]
    view = View(tenant="initech", range_s=6 * H)
    calls = expected.calls(T0 - 6 * H, T0, tenant="initech")
    tenant_total = sum(u.tokens for u in calls)
    table = _drill(prom, "Model consumption detail", view)
    want = sorted(
        ({"Model": m, "Total": sum(u.tokens for u in calls if u.model == m),
          "Input": sum(u.input for u in calls if u.model == m),
          "Output": sum(u.output for u in calls if u.model == m)}
         for m in {u.model for u in calls}), key=lambda r: -r["Total"])
    for row in want:
        row["Share"] = pytest.approx(row["Total"] / tenant_total * 100)
    assert table == want
    assert sum(r["Share"] for r in table) == pytest.approx(100)


def test_model_search_filters_rows_but_not_the_share_denominator(prom, expected):
    calls = expected.calls(T0 - 6 * H, T0, tenant="initech")
    tenant_total = sum(u.tokens for u in calls)
    table = _drill(prom, "Model consumption detail",
                   View(tenant="initech", range_s=6 * H, search="GPT-4O"))
    assert {r["Model"] for r in table} == {"gpt-4o", "gpt-4o-mini"}
    for row in table:
        assert row["Share"] == pytest.approx(row["Total"] / tenant_total * 100)


@pytest.mark.parametrize(("uid", "title", "columns"), [
    (DRILL, "Model consumption detail", ["Model", "Total", "Input", "Output", "Share"]),
    (DRILL, "Agent consumption detail",
     ["Agent", "Total", "Input", "Output", "Created at", "Creator"]),
    (DRILL, "Workflow consumption detail",
     ["Workflow", "Total", "Input", "Output", "Created at", "Creator"]),
    (DRILL, "Member ranking", ["Rank", "Member", "Total", "Input", "Output"]),
    (ASSETS, "Agents owned by the tenant", ["Agent", "Conversations", "Users", "Tokens"]),
    (ASSETS, "Workflows owned by the tenant", ["Workflow", "Runs", "Tokens"]),
    (OVERVIEW, "Member tokens top 10", ["Member", "Tokens"]),
    (SRE, "Top members", ["Member", "Tenant", "Tokens"]),
])
def test_tables_show_their_columns_in_order(prom, uid, title, columns):
    p = panel(uid, title)
    table = rows(p, run(prom, p, View()))
    assert table and all(list(r) == columns for r in table)


def test_agent_and_workflow_details_join_names_creation_and_creator(prom):
    assert _drill(prom, "Agent consumption detail", View()) == [
        {"Agent": "Support Bot", "Total": 370, "Input": 300, "Output": 70,
         "Created at": "2025-10-01T08:00:00Z", "Creator": "Alice Wang"}]
    assert _drill(prom, "Workflow consumption detail", View()) == [
        {"Workflow": "Summarize", "Total": 220, "Input": 200, "Output": 20,
         "Created at": "2025-10-02T09:30:00Z", "Creator": "Bob Li"},
        {"Workflow": "Translate", "Total": 75, "Input": 40, "Output": 35,
         "Created at": "2025-10-03T10:00:00Z", "Creator": "Bob Li"}]


def test_initech_agent_detail_lists_every_agent_with_fallbacks(prom, expected):
    view = View(tenant="initech", range_s=6 * H)
    calls = expected.calls(T0 - 6 * H, T0, tenant="initech")
    table = _drill(prom, "Agent consumption detail", view)
    want = {a: (sum(u.tokens for u in calls if u.agent == a),
                sum(u.input for u in calls if u.agent == a),
                sum(u.output for u in calls if u.agent == a))
            for a in {u.agent for u in calls if u.agent}}
    assert len(table) == len(want) > 10  # all of them, not a top 10
    got = {r["Agent"]: (r["Total"], r["Input"], r["Output"]) for r in table}
    assert got == {AGENT_NAMES.get(a, a): v for a, v in want.items()}
    assert [r["Total"] for r in table] == sorted((r["Total"] for r in table), reverse=True)
    creators = {r["Agent"]: r.get("Creator", "") for r in table}
    assert creators["Code Review"] == "former-dev"  # not a member: the id
    assert creators["Budget Bot"] == "Bob Porter"
    assert creators["FAQ Bot"] == "Bob Li"  # a member of another tenant
    unlisted = next(r for r in table if r["Agent"] == UNLISTED_AGENT)
    assert unlisted.get("Creator", "") == "" and unlisted.get("Created at", "") == ""


def test_workflow_detail_never_shows_a_chat_workflow(prom, expected):
    view = View(tenant="initech", range_s=6 * H)
    calls = expected.calls(T0 - 6 * H, T0, tenant="initech")
    table = _drill(prom, "Workflow consumption detail", view)
    assert {r["Workflow"]: r["Total"] for r in table} == {
        WORKFLOW_NAMES[w]: t for w, t in expected.by(
            "workflow", T0 - 6 * H, T0, tenant="initech").items()}
    assert all("chat" not in r["Workflow"].lower() for r in table)
    assert any(u.agent == "tps-helper" for u in calls)  # its chat workflow ran


def test_member_ranking_ranks_every_member(prom, expected):
    assert _drill(prom, "Member ranking", View()) == [
        {"Rank": 1, "Member": "Alice Wang", "Total": 370, "Input": 300, "Output": 70},
        {"Rank": 2, "Member": "Bob Li", "Total": 75, "Input": 40, "Output": 35}]
    view = View(tenant="initech", range_s=3 * H)
    table = _drill(prom, "Member ranking", view)
    tokens = expected.by("member", T0 - 3 * H, T0, tenant="initech")
    assert [(r["Rank"], r["Member"], r["Total"]) for r in table] == [
        (i + 1, name, total) for i, (name, total) in enumerate(ranked(tokens, NAMES, 99))]
    assert "Lawrence Hunt" in {r["Member"] for r in table}  # first seen inside the range


@pytest.mark.parametrize(("search", "members"), [
    ("", None),
    ("BILL", ["Bill Lumbergh"]),  # case-insensitive name
    ("samir@initech", ["Samir Nagheenanajar"]),  # email
    ("pgibbons", ["Peter Gibbons"]),  # mis id
    ("+1-555-0113", ["Michael Bolton"]),  # phone: "+" is escaped
    ("(stapler)", ["Milton Waddams (Stapler)"]),  # parentheses are escaped
    ("bill.", []),  # "." is literal: "bill." would match "Bill " as a regex
    ("bob ", ["Bob Porter", "Bob Slydell"]),
    ("lawrence", ["Lawrence Hunt"]),  # an id
])
def test_member_search_matches_name_email_mis_and_phone(prom, expected, search, members):
    table = _drill(prom, "Member ranking",
                   View(tenant="initech", range_s=6 * H, search=search))
    if members is None:
        assert len(table) == 12
        return
    assert sorted(r["Member"] for r in table) == members
    assert [r["Rank"] for r in table] == list(range(1, len(table) + 1))


@pytest.mark.parametrize(("title", "search", "shown"), [
    ("Agent consumption detail", "helper", {"TPS Report Helper", UNLISTED_AGENT}),
    ("Agent consumption detail", "FAQ", {"FAQ Bot"}),
    ("Workflow consumption detail", "report", {"Report Generator"}),
    ("Workflow consumption detail", "cover-sheet", {"Cover Sheet Check"}),  # the id
])
def test_asset_search_matches_name_or_id(prom, title, search, shown):
    table = _drill(prom, title, View(tenant="initech", range_s=6 * H, search=search))
    assert {r[title.split()[0]] for r in table} == shown


# -- §2 Tenant assets: heat is platform-wide, tokens are the tenant's -------------------------


def _assets(prom, title: str, view: View) -> list[dict]:
    p = panel(ASSETS, title)
    return rows(p, run(prom, p, view))


def test_acme_assets_separate_heat_from_cost(prom):
    assert _assets(prom, "Agents owned by the tenant", View()) == [
        {"Agent": "Support Bot", "Conversations": 3, "Users": 3, "Tokens": 370},
        # only initech's members called it: heat, no cost for acme
        {"Agent": "FAQ Bot", "Conversations": 1, "Users": 2, "Tokens": 0},
    ]
    assert _assets(prom, "Workflows owned by the tenant", View()) == [
        {"Workflow": "Summarize", "Runs": 2, "Tokens": 220},
        {"Workflow": "Translate", "Runs": 1, "Tokens": 75},
    ]


def test_initech_assets_list_every_owned_asset(prom, expected):
    view = View(tenant="initech", range_s=6 * H)
    start, end = T0 - 6 * H, T0
    table = _assets(prom, "Agents owned by the tenant", view)
    tokens = expected.by("agent", start, end, tenant="initech")
    conversations: dict[str, int] = defaultdict(int)
    users: dict[str, set] = defaultdict(set)
    for at, owner, agent_id, who in expected.invocations:
        if owner == "initech":
            if start < at <= end:
                conversations[agent_id] += 1
            if at <= end and who:
                users[agent_id].add(who)
    assert {r["Agent"]: (r["Conversations"], r["Users"], r["Tokens"]) for r in table} == {
        name: (conversations[a], len(users[a]), tokens.get(a, 0))
        for a, name in INITECH_AGENTS.items()}
    runs: dict[str, int] = defaultdict(int)
    for at, owner, wf in expected.runs:
        if owner == "initech" and start < at <= end:
            runs[wf] += 1
    table = _assets(prom, "Workflows owned by the tenant", view)
    wf_tokens = expected.by("workflow", start, end, tenant="initech")
    assert {r["Workflow"]: (r["Runs"], r["Tokens"]) for r in table} == {
        WORKFLOW_NAMES[w]: (runs[w], wf_tokens.get(w, 0)) for w in ("report-gen", "cover-sheet")}


# -- §4 SRE: usage and cost governance --------------------------------------------------------


def _sre(prom, title: str, view: View | None = None) -> dict[str, list[dict]]:
    return run(prom, panel(SRE, title), view or View())


def _tokens(expected: Expected, start: float, end: float) -> int:
    return sum(u.tokens for u in expected.calls(start, end))


@pytest.mark.parametrize("now", [T0, E2], ids=["2025-10-02", "2025-09-02"])
def test_today_and_this_month_against_yesterday_and_last_month(prom, expected, now):
    day = datetime.fromtimestamp(now, timezone.utc)
    midnight = _utc(day.year, day.month, day.day)
    first = _utc(day.year, day.month, 1)
    last_month = 30 if day.month == 10 else 31  # September, August
    today = _tokens(expected, midnight, now)
    yesterday = _tokens(expected, midnight - DAY, now - DAY)
    month = _tokens(expected, first, now)
    before = _tokens(expected, first - last_month * DAY, now - last_month * DAY)
    view = View(at=now)
    assert value(_sre(prom, "Tokens today", view)) == today
    assert value(_sre(prom, "Today vs yesterday", view)) == pytest.approx(
        (today - yesterday) / yesterday * 100)
    assert value(_sre(prom, "Tokens this month", view)) == month
    assert before, "the scenario must have calls in last month's window"
    assert value(_sre(prom, "This month vs last month", view)) == pytest.approx(
        (month - before) / before * 100)


def test_cost_panels(prom, expected):
    hour = sum(u.cost for u in expected.calls(T0 - H, T0))
    assert value(_sre(prom, "Cost, last hour")) == approx(hour)
    first = _utc(2025, 10, 1)
    month_cost = sum(u.cost for u in expected.calls(first, T0))
    forecast = month_cost / Decimal(T0 - first) * DAY * 31
    assert value(_sre(prom, "Month-end cost forecast")) == approx(forecast)
    share = by_label(_sre(prom, "Cost share by model"), "model")
    want: dict[str, Decimal] = defaultdict(Decimal)
    for u in expected.calls(T0 - 3 * H, T0):
        want[u.model] += u.cost
    assert share == {m: approx(c) for m, c in want.items() if c}
    assert UNPRICED not in share


def test_token_rate_by_model_over_the_last_ten_minutes(prom, expected):
    rate = by_label(_sre(prom, "Token rate by model", View(rate_interval="10m")), "model")
    window = expected.calls(T0 - 600, T0)
    assert window, "the scenario must have a call in the last 10 minutes"
    want = defaultdict(float)
    for u in window:
        want[u.model] += u.tokens / 600
    assert {m: r for m, r in rate.items() if r} == pytest.approx(dict(want))


def test_service_usage_counts_agents_workflows_and_calls(prom, expected):
    results = _sre(prom, "Service usage")
    start, end = T0 - 3 * H, T0
    calls = expected.calls(start, end)
    assert value(results, "A") == sum(u.tokens for u in calls if u.agent)
    assert value(results, "B") == sum(1 for at, *_ in expected.invocations if start < at <= end)
    assert value(results, "C") == sum(u.tokens for u in calls if u.workflow)
    assert value(results, "D") == sum(1 for at, *_ in expected.runs if start < at <= end)
    assert value(results, "E") == len(calls)


def test_top_tenants_and_top_members_across_the_platform(prom, expected):
    start, end = T0 - 3 * H, T0
    tenants = defaultdict(int)
    members = defaultdict(int)
    for u in expected.calls(start, end):
        tenants[u.tenant] += u.tokens
        members[(u.tenant, u.member)] += u.tokens
    p = panel(SRE, "Top tenants")
    assert bars(p, run(prom, p, View())) == ranked(tenants, {})
    assert bars(p, run(prom, p, View()))[-2:] == [("acme", 445), ("globex", 10)]
    p = panel(SRE, "Top members")
    got = [(r["Member"], r["Tenant"], r["Tokens"]) for r in rows(p, run(prom, p, View()))]
    want = ranked({k: v for k, v in members.items()}, {})
    assert got == [(NAMES[m], t, v) for (t, m), v in want]


def test_errors_and_cache_reads_per_model(prom, expected):
    calls = expected.calls(T0 - 3 * H, T0)
    models = {u.model for u in calls}
    errors = by_label(_sre(prom, "Error rate by model"), "model")
    assert errors == {m: pytest.approx(
        sum(u.error for u in calls if u.model == m)
        / sum(1 for u in calls if u.model == m) * 100) for m in models}
    assert any(errors.values())
    cache = by_label(_sre(prom, "Cache read share by model"), "model")
    assert cache == {m: pytest.approx(
        sum(u.cache_read for u in calls if u.model == m)
        / sum(u.input for u in calls if u.model == m) * 100) for m in models}
    assert cache["qwen-max"] == 0 and cache["gpt-4o"] > 0


def test_attribution_health(prom, expected):
    start, end = T0 - 3 * H, T0
    unattributed = by_label(_sre(prom, "Unattributed tokens by reason"), "reason")
    assert unattributed == {"not_member": 1500, "no_caller": 0, "ambiguous_tenant": 0}
    six = by_label(_sre(prom, "Unattributed tokens by reason", View(range_s=6 * H)), "reason")
    assert six == {"not_member": 1500 + 1500 + 500, "no_caller": 200, "ambiguous_tenant": 0}
    unpriced = by_label(_sre(prom, "Unpriced tokens by model"), "model")
    assert unpriced == {UNPRICED: sum(u.tokens for u in expected.calls(
        start, end, model=UNPRICED))}
    assert by_label(_sre(prom, "Rejected spans by reason"), "reason") == {
        "invalid_token_count": 1}
    share = value(_sre(prom, "Unattributed share"))
    attributed = _tokens(expected, start, end)
    assert share == pytest.approx(1500 / (1500 + attributed) * 100)
    assert value(_sre(prom, "Duplicate spans")) == 3  # 2 + 1 inside the range, 5 before
    assert value(_sre(prom, "Pending traces")) == PENDING_NOW
    assert value(_sre(prom, "Directory age")) == T0 - DIRECTORY_LAST_LOAD
