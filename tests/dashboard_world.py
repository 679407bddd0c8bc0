"""The data the dashboard tests run on, built with the real exporter.

The main world: the real exporter (``TokenAttributionProcessor``) attributes a timeline of
traces; its registry is sampled on a scrape grid (hourly from August 2025, every 60 s in
the last 7 hours before T0 = 2025-10-02 06:00 UTC), written as OpenMetrics with timestamps
and backfilled with ``promtool tsdb create-blocks-from openmetrics``. Prometheus 2.42 then
serves that TSDB.

The timeline:

- attribution.md's worked example at 04:30 (inside a 3 h range ending at T0), after a
  baseline of its traces 1, 3 and 4 at 01:30 (before that range): over 3 h, acme and
  globex see exactly the worked example's numbers, and trace 2's series (translate,
  qwen-max, bob) are created inside the range;
- a second tenant, initech, with a call every 6 h since August and a dense mix of calls in
  the last 7 h: more than 10 agents and members, a chat workflow, an agent missing from the
  directory, an acme agent, cache reads, errors, an unpriced model, a rejected span,
  unattributed calls, streamed calls that report a time to first token, and series first
  created inside the range.

Expected numbers come from attribution.md (worked example) and from a plain sum over the
calls' own token counts (:class:`Expected`), never from the exporter's output.

Three health series cannot come from the in-process processor (it sees no duplicates, has
no pending traces once spans end, and stamps the directory load with the wall clock): they
are written with known values (:func:`_synthetic`).
"""

from __future__ import annotations

import calendar
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from unittest import mock

import pytest
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.trace import Tracer

from otel_processor.budgets import parse_budgets
from tests.conftest import Pipeline
from tests.dashboard_grafana import View
from tests.prom import Prometheus, binary
from tests.scenarios import agent, caller, chat, tool, worked_example, workflow

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
    service: str | None = None  # the nearest enclosing component (attribution.md)

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
    duplicates: list[tuple[float, int]] = field(default_factory=list)

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
    ttft: float | None = None  # a streamed call's time to first token, in seconds
    under_tool: str | None = None  # a tool span between the agent (or workflow) and the call

    @property
    def service(self) -> str:
        """The service split's service: the nearest enclosing component (no agent of the
        world's directory is an assistant)."""
        if self.under_tool:
            return "tool"
        if self.workflow:
            return "workflow"
        return "agent" if self.agent else "direct"

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
            if self.under_tool:
                stack.enter_context(tool(tracer, self.under_tool))
            extra = dict(attrs)
            if self.cache_read:
                extra["gen_ai.usage.cache_read.input_tokens"] = self.cache_read
            if self.error:
                extra["error.type"] = "timeout"
            if self.ttft is not None:
                extra["gen_ai.server.time_to_first_token"] = self.ttft
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
                                 self.error, self.service))


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
        e.usage += [Usage(at, "acme", "alice", "gpt-4o", 100, 50, agent="support-bot",
                          service="agent"),
                    Usage(at, "acme", "alice", "gpt-4o-mini", 200, 20, agent="support-bot",
                          workflow="summarize", service="workflow")]
        e.invocations.append((at, "acme", "support-bot", "alice"))
        e.runs.append((at, "acme", "summarize"))
    if 2 in traces:
        e.usage += [Usage(at, "acme", "bob", "qwen-max", 30, 30, workflow="translate",
                          service="workflow"),
                    Usage(at, "acme", "bob", "gpt-4o-mini", 10, 5, workflow="translate",
                          service="workflow")]
        e.runs += [(at, "acme", "translate"), (at, "acme", "summarize")]
    if 3 in traces:
        e.unattributed.append((at, "not_member", 1500))
        e.invocations.append((at, "acme", "support-bot", "dave"))
    if 4 in traces:
        e.usage.append(Usage(at, "globex", "carol", "gpt-4o", 7, 3, agent="support-bot",
                             service="agent"))
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
                   cache_read=inp // 4 if cached else 0, error=i % 7 == 3,
                   ttft=0.15 + 0.05 * (i % 7) if i % 2 else None)
    yield Call(T0 - 4.5 * H - 20 * 60 + 30, "samir", "gpt-4o-mini", 400, 40, agent="faq-bot")
    yield Call(T0 - 20 * 60 + 30, "drew", "gpt-4o-mini", 2500, 250, agent="faq-bot")
    yield Call(T0 - 1.75 * H + 30, "nina", "gpt-4o", 3000, 300, agent=UNLISTED_AGENT)
    yield Call(T0 - 1.25 * H + 30, "lawrence", "claude-sonnet-4-5", 2000, 200,
               agent="budget-bot")  # a member first seen inside the range
    yield Call(T0 - 3.5 * H + 30, "zed", "gpt-4o", 450, 50)  # not a member of initech
    yield Call(T0 - 3.3 * H + 30, None, "gpt-4o", 180, 20)  # no caller


def _acme_before() -> Iterator[Call]:
    """alice's calls of acme before the 6-hour ranges: one last month, one yesterday in
    acme's timezone (Asia/Shanghai: 1 October 11:00 local), one on 1 October 17:10 UTC,
    which is already 2 October in Shanghai; one direct and one under a tool, so that acme
    has a yesterday and a last month, its days are not UTC's, and every service but the
    assistant has calls."""
    yield Call(_utc(2025, 9, 10, 10, 0, 30), "alice", "gpt-4o-mini", 200, 20, tenant="acme")
    yield Call(_utc(2025, 10, 1, 3, 0, 30), "alice", "gpt-4o", 40, 10, tenant="acme")
    yield Call(_utc(2025, 10, 1, 17, 10, 30), "alice", "gpt-4o-mini", 60, 6,
               agent="support-bot", under_tool="search", tenant="acme")


#: The budgets file of the main world (docs/budgets.md): acme in Shanghai (UTC+8) with a
#: token and a USD limit, initech in New York (UTC-4 in September and October) with its
#: own thresholds, a member and an agent budget; globex has no budget and UTC days.
BUDGETS = {
    "timezone": "UTC",
    "tenants": {
        "acme": {"timezone": "Asia/Shanghai", "monthly_tokens": 1000, "monthly_usd": "0.005",
                 "members": {"alice": {"monthly_tokens": 600}}},
        "initech": {"timezone": "America/New_York", "monthly_tokens": 200000,
                    "monthly_usd": "0.05", "thresholds": [60, 90, 100],
                    "members": {"peter": {"monthly_tokens": 5000}},
                    "agents": {"tps-helper": {"monthly_usd": "0.01"}}},
    },
}
TIMEZONES = {"acme": "Asia/Shanghai", "initech": "America/New_York", "globex": "UTC"}

REJECTED_AT = T0 - 0.5 * H + 30


@dataclass
class Scenario:
    events: list[tuple[float, Callable[[Tracer], None]]]
    expected: Expected


def scenario() -> Scenario:
    e = Expected()
    events: list[tuple[float, Callable[[Tracer], None]]] = []
    for call in [*_background(), *_dense(), *_acme_before()]:
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
    e.duplicates += DUPLICATES
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


def sample(events: list[tuple[float, Callable[[Tracer], None]]], times: list[int],
           directory: Path, synthetic: Callable[[float], dict] = lambda t: {},
           budgets: dict | None = None,
           ) -> dict[tuple[str, tuple], list[tuple[int, float]]]:
    """Run ``events`` (time, function of a tracer) through the real exporter and sample
    its registry at ``times``, as a scrape would.

    The exporter lives in the simulated time: its wall clock (which day is "today" for the
    calendar periods and budgets) is the scrape time being sampled, and the spans an event
    emits start and end at the event's time (the SDK's clock, ``time_ns`` in
    ``opentelemetry.sdk.trace``, returns it while the event runs; spans given explicit
    times keep them). A call then counts in the period of its own time, never in the
    wall clock's today. ``budgets``: a budgets document (docs/budgets.md)."""
    clock = [float(times[0]) if times else 0.0]
    pipeline = Pipeline(directory=directory, search_contact_fields=True,
                        budgets=parse_budgets(budgets or {}), wall_clock=lambda: clock[0])
    out: dict[tuple[str, tuple], list[tuple[int, float]]] = defaultdict(list)
    try:
        pending = sorted(events, key=lambda item: item[0])
        snapshot: dict[tuple[str, tuple], float] = {}
        changed = True
        for t in times:
            clock[0] = float(t)
            while pending and pending[0][0] <= t:
                at, emit = pending.pop(0)
                ns = round(at * 1e9)
                with mock.patch.object(sdk_trace, "time_ns", lambda ns=ns: ns):
                    emit(pipeline.tracer)
                changed = True
            # the periods turn on the hour in every zone of the world (whole-hour offsets):
            # sampled again on each hour even without a new call
            if changed or t % H == 0:
                pipeline.flush()
                snapshot = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in pipeline.registry.collect() for s in family.samples
                }
                changed = False
            now = {**snapshot, **synthetic(t)}
            for key, value in now.items():
                out[key].append((t, value))
    finally:
        pipeline.close()
    return out


def series(sc: Scenario) -> dict[tuple[str, tuple], list[tuple[int, float]]]:
    return sample(sc.events, grid(), DIRECTORY, _synthetic, BUDGETS)


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


@pytest.fixture(scope="session", name="world")
def world_fixture(tmp_path_factory) -> Iterator[tuple[Prometheus, Expected]]:
    """The main world's Prometheus and what it must show (import the three fixtures
    ``world_fixture, prom_fixture, expected_fixture`` into a test module to use them)."""
    sc = scenario()
    prom = backfilled_prometheus(tmp_path_factory.mktemp("dashboards"), openmetrics(series(sc)))
    try:
        yield prom, sc.expected
    finally:
        prom.stop()


@pytest.fixture(scope="session", name="prom")
def prom_fixture(world) -> Prometheus:
    return world[0]


@pytest.fixture(scope="session", name="expected")
def expected_fixture(world) -> Expected:
    return world[1]



def ranked(tokens: dict[str, int], names: dict[str, str], n: int = 10) -> list[tuple]:
    """The top ``n`` by tokens, largest first, as (name, tokens); no tie at the cut."""
    order = sorted(tokens.items(), key=lambda kv: -kv[1])
    if len(order) > n:
        assert order[n - 1][1] != order[n][1], "a tie at the top-10 cut: change the scenario"
    return [(names.get(k, k), v) for k, v in order[:n]]


def approx(x: Decimal | float) -> object:
    return pytest.approx(float(x), rel=1e-9, abs=1e-12)


def at(**kwargs) -> View:
    """The main world's view: a 3-hour range ending at T0, acme, unless told."""
    return View(**{"at": T0, **kwargs})
