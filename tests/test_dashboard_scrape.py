"""Every range panel, on a real Prometheus scraping real exporters that move.

The exporter service (``exporter.server.start_server``) receives the worked example over
OTLP/HTTP; a real Prometheus 2.42 scrapes it every second. Then the exporter stops and
starts again on the same state directory at a new address (what every Kubernetes pod
restart does: a new IP, so a new ``instance``), Prometheus is repointed (config reload),
and more is sent. Every range panel, evaluated at explicit times through the HTTP API,
must show exactly what was sent inside its range, to the token (tests/dashboard_oracle.py
computes that from the calls themselves). A per-series difference counts the moved
exporter's whole ledger again; the dashboards sum over exporters first.

The same with two exporters behind a load balancer (two state directories, whole traces
routed by trace id, two targets), one of them restarted at a new address; and with one
of two exporters losing its ledger (a counter reset, as an in-process runtime without
``state_dir`` does): no number goes negative, and where the sum over exporters went down
the panels count the reset exporter from zero.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from exporter.config import Config
from exporter.server import RunningServer, start_server
from tests import service as svc
from tests.dashboard_grafana import OVERVIEW, SRE, View, panel, run, value
from tests.dashboard_oracle import ORACLE, Directory, check, observe
from tests.dashboard_world import Expected, _worked_example_expected
from tests.prom import Prometheus
from tests.scenarios import WORKED_EXAMPLE_DIRECTORY, worked_example

DIRECTORY = Directory.load(WORKED_EXAMPLE_DIRECTORY)
TENANTS = ("acme", "globex")
#: A query that sees every attributed token: how long to wait for a scrape.
ALL_TOKENS = "sum(llm_model_tokens_total) or vector(0)"


def _exporter(state: Path, port: int = 0) -> RunningServer:
    return start_server(Config(
        listen=f"127.0.0.1:{port}", directory=str(WORKED_EXAMPLE_DIRECTORY),
        state_dir=str(state), threads=4, sqlite_synchronous="NORMAL", log_level="WARNING"))


class Scraper:
    """A real Prometheus scraping ``targets`` every second, repointed by a config reload."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.targets = list(targets)
        self.prom = Prometheus(workdir, self.targets, interval="1s",
                               extra_args=["--web.enable-lifecycle"])
        self._config = workdir / "prometheus.yml"

    def repoint(self, targets: list[str]) -> None:
        text = self._config.read_text()
        for old, new in zip(self.targets, targets, strict=True):
            text = text.replace(repr(old), repr(new))
        self._config.write_text(text)
        self.targets = list(targets)
        assert requests.post(self.prom.url + "/-/reload", timeout=10).status_code == 200
        for target in targets:
            assert self.prom.wait_for(f'up{{instance="{target}"}}', 1) == 1, target

    def settled(self, tokens: float) -> int:
        """Waits until Prometheus has scraped ``tokens`` attributed tokens in all, then
        returns a whole second after that, once it is in the past: an instant at which
        every target's last sample holds what was sent so far."""
        assert self.prom.wait_for(ALL_TOKENS, tokens) == tokens
        at = math.ceil(time.time()) + 1
        time.sleep(max(0.0, at - time.time()) + 0.2)
        return at

    def stop(self) -> None:
        self.prom.stop()


@pytest.fixture
def scraper(tmp_path) -> Iterator[Callable[[list[str]], Scraper]]:
    started = []

    def start(targets: list[str]) -> Scraper:
        s = Scraper(tmp_path / f"prom{len(started)}", targets)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def exporters() -> Iterator[Callable[..., RunningServer]]:
    running: list[RunningServer] = []

    def start(state: Path, port: int = 0) -> RunningServer:
        server = _exporter(state, port)
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()  # idempotent


def _address(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


def _sent(e: Expected, times: int = 1) -> None:
    """Books ``times`` worked examples, sent now."""
    for _ in range(times):
        _worked_example_expected(time.time(), (1, 2, 3, 4), e)


def _tokens(e: Expected) -> int:
    return sum(u.tokens for u in e.usage)


def _traces(seed_spans) -> dict[int, list]:
    """The worked example's spans, trace by trace."""
    out: dict[int, list] = {}
    for span in seed_spans:
        out.setdefault(span.context.trace_id, []).append(span)
    return out


def _send_routed(urls: list[str]) -> None:
    """One worked example, each whole trace to one exporter chosen by its trace id (a
    load balancer's routing); recorded again until every exporter gets a trace."""
    for _ in range(50):
        traces = _traces(svc.record_spans(worked_example))
        routes = {tid: tid % len(urls) for tid in traces}
        if len(set(routes.values())) == len(urls):
            break
    else:
        raise AssertionError("no trace ids that reach every exporter")
    for tid, spans in traces.items():
        svc.send_batches(urls[routes[tid]], spans, [len(spans)])


def _assert_panels(prom: Prometheus, e: Expected, start: float, end: float) -> None:
    for tenant in TENANTS:
        view = View(at=end, range_s=end - start, tenant=tenant)
        wrong = check(prom, e, DIRECTORY, view)
        assert not wrong, f"{tenant}, ({start}, {end}]:\n" + "\n".join(wrong)


def _old_card(prom: Prometheus, start: float, end: float) -> float:
    """Total tokens with the per-series difference the dashboards used before."""
    x = 'llm_model_tokens_total{tenant="acme"}'
    return prom.scalar(f"sum({x} - ({x} offset {round(end - start)}s or {x} * 0))", end)


def test_a_restart_at_a_new_address_is_not_counted_again(tmp_path, exporters, scraper):
    state = tmp_path / "state"
    e = Expected()
    begin = math.floor(time.time())
    first = exporters(state)
    s = scraper([_address(first)])
    svc.send_live(first.url, worked_example)
    _sent(e)
    t1 = s.settled(_tokens(e))
    first.stop()  # the pod goes; the new one gets a new address, the same volume
    second = exporters(state)
    assert _address(second) != _address(first)
    s.repoint([_address(second)])
    svc.send_live(second.url, worked_example)
    _sent(e)
    t2 = s.settled(_tokens(e))
    # what was sent in each range, to the token: one worked example, then both
    _assert_panels(s.prom, e, t1, t2)
    _assert_panels(s.prom, e, begin, t2)
    _assert_panels(s.prom, e, begin, t1)
    # the per-series difference counts the moved ledger again: 445 + 445 for 445
    assert _old_card(s.prom, t1, t2) == 2 * 445
    view = View(at=t2, range_s=t2 - t1, tenant="acme")
    assert value(run(s.prom, panel(OVERVIEW, "Total tokens"), view)) == 445
    # the calendar panels see both runs (unless this test straddled midnight UTC)
    if time.gmtime(begin).tm_yday == time.gmtime(t2).tm_yday:
        assert value(run(s.prom, panel(SRE, "Tokens today"), view)) == _tokens(e)
        assert value(run(s.prom, panel(SRE, "Tokens this month"), view)) == _tokens(e)
        assert value(run(s.prom, panel(SRE, "Today vs yesterday"), view)) is None


def test_two_exporters_behind_a_load_balancer_one_restarted_elsewhere(tmp_path, exporters,
                                                                      scraper):
    e = Expected()
    begin = math.floor(time.time())
    one, two = exporters(tmp_path / "one"), exporters(tmp_path / "two")
    s = scraper([_address(one), _address(two)])
    _send_routed([one.url, two.url])
    _sent(e)
    t1 = s.settled(_tokens(e))
    two.stop()
    moved = exporters(tmp_path / "two")  # same ledger, new address
    s.repoint([_address(one), _address(moved)])
    for _ in range(2):
        _send_routed([one.url, moved.url])
        _sent(e)
    t2 = s.settled(_tokens(e))
    _assert_panels(s.prom, e, t1, t2)
    _assert_panels(s.prom, e, begin, t2)
    # each exporter got a trace (of any tenant, attributed or not): both addresses hold series
    assert {r["metric"]["instance"] for r in s.prom.query(
        'count by (instance) ({__name__=~"llm_model_tokens_total|llm_unattributed_tokens_total"})',
        t2)} == {_address(one), _address(moved)}


def test_a_counter_reset_of_one_exporter_never_goes_negative(tmp_path, exporters, scraper):
    """``two`` loses its ledger (a fresh state directory: what an in-process runtime
    without state_dir does on a restart) at the same address. The sum over exporters
    goes down; the panels then count each series from its value after the reset."""
    e = Expected()
    one, two = exporters(tmp_path / "one"), exporters(tmp_path / "two")
    port = two.port
    s = scraper([_address(one), _address(two)])
    svc.send_live(one.url, worked_example)
    for _ in range(2):
        svc.send_live(two.url, worked_example)
    _sent(e, 3)
    t1 = s.settled(_tokens(e))
    two.stop()
    reset = exporters(tmp_path / "two-lost", port)  # same address, empty ledger
    assert s.prom.wait_for(f'up{{instance="127.0.0.1:{port}"}}', 1) == 1
    svc.send_live(reset.url, worked_example)
    _sent(e)
    t2 = s.settled(2 * (445 + 10))  # what the two exporters hold now: one example each
    x = 'llm_model_tokens_total{tenant="acme"}'
    plain = s.prom.scalar(f"sum({x}) - sum({x} offset {t2 - t1}s)", t2)
    assert plain == 445 * 2 - 445 * 3  # the bare difference is negative
    for tenant in TENANTS:
        view = View(at=t2, range_s=t2 - t1, tenant=tenant)
        for (uid, title), shown in observe(s.prom, ORACLE, view).items():
            assert _numbers(shown) >= 0, (uid, title)
    # here every key went down, so each counts from the reset: exact again
    _assert_panels(s.prom, e, t1, t2)


def _numbers(shown) -> float:
    """The smallest number a panel shows (0 when it shows none)."""
    if isinstance(shown, dict):
        return min((_numbers(v) for v in shown.values()), default=0)
    if isinstance(shown, list | tuple):
        return min((_numbers(v) for v in shown), default=0)
    return shown if isinstance(shown, int | float) else 0
