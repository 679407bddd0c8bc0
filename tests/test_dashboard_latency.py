"""The SRE dashboard's latency panels, on histograms whose every bucket count is chosen.

Model calls with chosen durations and times to first token go through the real exporter
(span start and end set explicitly), its registry is sampled every 60 s and backfilled into
Prometheus 2.42, and the panels' range queries run as a time series panel sends them; the
answers become Grafana's frames and run through ``@grafana/data`` (legend names, field
config). The expected percentiles are worked out by hand from Prometheus's rule: find the
bucket where rank = q × count falls, then interpolate linearly inside it, from the bucket
below's upper bound (0 for the first bucket); a rank beyond the last finite bucket gives
that bucket's bound (300 s).

Exact, not approximate: every series exists from a call 90 minutes earlier, and the
evaluation times and the rate window (10 minutes) fall on the scrape grid, so each bucket's
rate is its increase in the window over 600 s with no extrapolation (Prometheus 2.x's range
includes a sample at its start), and the quantile depends on the counts only.
"""

from __future__ import annotations

import pytest
from opentelemetry.trace import Tracer

from tests import grafana_frames as gf
from tests.dashboard_grafana import SRE, View, job, lines, panel, shown_series
from tests.dashboard_world import DIRECTORY, _utc, backfilled_prometheus, openmetrics, sample
from tests.scenarios import caller

T = _utc(2025, 10, 9, 12)  # the dashboard's "now", on the scrape grid
MIN = 60
PRE = T - 90 * MIN + 30  # one call of every model: its series exist before any window
AT = T - 8 * MIN + 30  # the calls the panels measure: inside the windows ending at T-5m, T
STEP = 5 * MIN  # the time series panel's step
VIEW = View(at=T, range_s=20 * MIN, rate_interval="10m")

LATENCY = "Call latency by model (p50, p95, p99)"
TTFT = "Time to first token by model (p50, p95)"

GPT, CLAUDE, LLAMA, EMBED, IDLE = ("gpt-4o", "claude-sonnet-4-5", "llama-3-70b-local",
                                   "text-embedding-3-small", "deepseek-chat")

#: The calls at AT: (model, duration s, time to first token s or None, error, caller, tenant)
#: repeated n times.
CALLS = [
    # all in one bucket, (0.5, 1] and (0.25, 0.5]; two tenants, summed
    (6, GPT, 0.7, 0.3, False, "alice", "acme"),
    (4, GPT, 0.7, 0.3, False, "peter", "initech"),
    # spread: (1, 2.5] x10, (2.5, 5] x8, (10, 20] x2; first token (0.1, 0.25] x15, (0.5, 1] x5
    (10, CLAUDE, 1.8, 0.2, False, "peter", "initech"),
    (5, CLAUDE, 3.2, 0.2, True, "peter", "initech"),
    (3, CLAUDE, 3.2, 0.8, False, "peter", "initech"),
    (2, CLAUDE, 12.5, 0.8, True, "peter", "initech"),
    # one call in (0.05, 0.1], one beyond the last bound (+Inf); not streamed
    (1, LLAMA, 0.07, None, False, "peter", "initech"),
    (1, LLAMA, 400.0, None, False, "peter", "initech"),
    # the first bucket, from 0 to 50 ms
    (4, EMBED, 0.01, None, False, "alice", "acme"),
]

#: By hand (module doc): rank = q x count, bucket (lo, hi] with c calls, r below it:
#: lo + (hi - lo) x (rank - r) / c.
WANT_LATENCY = {
    f"{GPT} p50": 0.5 + 0.5 * 0.5,  # 10 calls in (0.5, 1]: 0.75
    f"{GPT} p95": 0.5 + 0.5 * 0.95,  # 0.975
    f"{GPT} p99": 0.5 + 0.5 * 0.99,  # 0.995
    f"{CLAUDE} p50": 1 + 1.5 * 10 / 10,  # rank 10 of 20: the top of (1, 2.5]: 2.5
    f"{CLAUDE} p95": 10 + 10 * 1 / 2,  # rank 19: 18 below 10 s, 2 in (10, 20]: 15
    f"{CLAUDE} p99": 10 + 10 * 1.8 / 2,  # rank 19.8: 19
    f"{LLAMA} p50": 0.05 + 0.05 * 1 / 1,  # rank 1 of 2: the top of (0.05, 0.1]: 0.1
    f"{LLAMA} p95": 300,  # rank 1.9: in +Inf, the last finite bound
    f"{LLAMA} p99": 300,
    f"{EMBED} p50": 0.05 * 0.5,  # the first bucket starts at 0: 0.025
    f"{EMBED} p95": 0.05 * 0.95,  # 0.0475
    f"{EMBED} p99": 0.05 * 0.99,  # 0.0495
}
WANT_TTFT = {
    f"{GPT} p50": 0.25 + 0.25 * 0.5,  # 10 in (0.25, 0.5]: 0.375
    f"{GPT} p95": 0.25 + 0.25 * 0.95,  # 0.4875
    f"{CLAUDE} p50": 0.1 + 0.15 * 10 / 15,  # rank 10, 15 in (0.1, 0.25]: 0.2
    f"{CLAUDE} p95": 0.5 + 0.5 * 4 / 5,  # rank 19, 15 below 0.5 s, 5 in (0.5, 1]: 0.9
}


def _chat(t: Tracer, at: float, model: str, seconds: float, ttft: float | None, error: bool,
          who: str, tenant: str) -> None:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
             "gen_ai.request.model": model, "gen_ai.usage.input_tokens": 10,
             "gen_ai.usage.output_tokens": 5, **caller(who, tenant)}
    if ttft is not None:
        attrs["gen_ai.server.time_to_first_token"] = ttft
    if error:
        attrs["error.type"] = "timeout"
    start = round(at * 1e9)
    t.start_span(f"chat {model}", start_time=start, attributes=attrs).end(
        end_time=start + round(seconds * 1e9))


def _before(t: Tracer) -> None:
    """A call per (model, tenant) of the window, and one of the idle model: a histogram
    series appears with its first observation, and rate() sees no increase in a series'
    first sample (a tenant's first calls of a model are not in the percentiles)."""
    firsts = {(model, ttft is not None, who, tenant)
              for _, model, _, ttft, _, who, tenant in CALLS}
    for model, streamed, who, tenant in sorted({*firsts, (IDLE, True, "peter", "initech")}):
        _chat(t, PRE, model, 0.7, 0.3 if streamed else None, False, who, tenant)


def _window(t: Tracer) -> None:
    for n, *call in CALLS:
        for _ in range(n):
            _chat(t, AT, *call)


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("latency")
    data = sample([(PRE, _before), (AT, _window)], list(range(T - 2 * 3600, T + 1, MIN)),
                  DIRECTORY)
    server = backfilled_prometheus(workdir, openmetrics(data))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shown(prom) -> dict[str, list[dict]]:
    """Both panels as Grafana shows them (one request to Node): title -> output frames."""
    panels = {title: panel(SRE, title) for title in (LATENCY, TTFT)}
    outs = gf.apply_transformations([job(prom, p, VIEW, step=STEP) for p in panels.values()])
    return dict(zip(panels, outs, strict=True))


def _exactly(got: dict[str, list[tuple[float, float]]], want: dict[str, float]) -> None:
    """Every line has a point at T-5m and at T (both windows hold the calls, the earlier
    ones none: no point there) equal to its value within 1e-9."""
    assert sorted(got) == sorted(want)
    for name, points in got.items():
        assert [t for t, _ in points] == [T - STEP, T], name
        for _, v in points:
            assert abs(v - want[name]) <= 1e-9, (name, v, want[name])


def test_the_call_latency_panel_shows_each_models_exact_percentiles(shown):
    _exactly(lines(shown[LATENCY]), WANT_LATENCY)


def test_the_time_to_first_token_panel_shows_streamed_models_only(shown):
    got = lines(shown[TTFT])
    _exactly(got, WANT_TTFT)
    assert not any(name.startswith((LLAMA, EMBED)) for name in got)  # never streamed


def test_a_model_without_calls_in_the_window_has_no_line(prom, shown):
    """deepseek-chat's only call is 90 minutes old: every bucket's rate is 0 and
    histogram_quantile gives NaN, which the panel's query drops."""
    for title in (LATENCY, TTFT):
        assert not any(name.startswith(IDLE) for name in lines(shown[title])), title
    bare = ("histogram_quantile(0.5, sum by (model, le) "
            "(rate(llm_model_call_duration_seconds_bucket[10m])))")
    (idle,) = [r for r in prom.query(bare, T) if r["metric"]["model"] == IDLE]
    assert idle["value"][1] == "NaN"


def test_the_latency_panels_are_in_seconds(shown):
    for title in (LATENCY, TTFT):
        for frame in shown[title]:
            (value,) = [f for f in frame["fields"] if f["type"] == "number"]
            assert value["config"]["unit"] == "s", title
    (gpt,) = [f for frame in shown[LATENCY] for f in frame["fields"]
              if f["displayName"] == f"{GPT} p50"]
    assert gpt["display"] == ["750 ms", "750 ms"]


def test_the_error_rate_panel_counts_the_same_calls(prom):
    """The one error-rate panel (a bar gauge over the range): 7 of claude's 20 calls
    in the last 20 minutes failed; deepseek-chat made none there and has no bar."""
    got = shown_series(prom, panel(SRE, "Error rate by model"), VIEW)
    assert got == {CLAUDE: 7 / 20 * 100, GPT: 0, LLAMA: 0, EMBED: 0}
