"""The monthly report (issue 10, part 7): one tenant's calendar month per model, agent,
workflow and member, read from the state directory while the service runs.

The service is real (spans over OTLP/HTTP, the clock injected); the report's figures are
compared with what the ledger counts (the service's own period rows and counters) and with
sums computed from the calls, in all three formats, with calls still in the journal (a
checkpoint an hour away) and checkpointed, in process and as a command in its own process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from exporter import report as report_module
from exporter.cli import main
from exporter.report import (
    OVERFLOW_NAME,
    ReportError,
    format_csv,
    format_json,
    format_table,
    monthly_report,
    read_month,
)
from exporter.store import FILENAME, Batch, Store
from otel_processor.directory_source import load_directory
from tests.conftest import ServicePipeline
from tests.scenarios import WORKED_EXAMPLE_DIRECTORY, agent, caller, workflow

ROOT = Path(__file__).resolve().parent.parent
NY = ZoneInfo("America/New_York")
SH = ZoneInfo("Asia/Shanghai")
BUDGETS = "timezone: UTC\ntenants:\n  acme: {timezone: America/New_York}\n" \
          "  globex: {timezone: Asia/Shanghai}\n"
#: pico-USD per token (input, output) of the packaged catalog; in-house-llm has no price
PRICES = {"gpt-4o": (2_500_000, 10_000_000), "gpt-4o-mini": (150_000, 600_000)}
SECTIONS = {"models": "model", "agents": "agent", "workflows": "workflow",
            "members": "member"}


def local(tz, *args) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def call(tracer, end: float, tokens: tuple[int, int], user: str, tenant: str,
         model: str = "gpt-4o") -> None:
    """One model call ending at unix time ``end``, a child of the current span if any."""
    end_ns = round(end * 1e9)
    span = tracer.start_span(f"chat {model}", start_time=end_ns - 10**9, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model, "gen_ai.usage.input_tokens": tokens[0],
        "gen_ai.usage.output_tokens": tokens[1], **caller(user, tenant)})
    span.end(end_time=end_ns)


#: (tenant, month in its timezone, member, agent, workflow, model, tokens) of every call
CALLS = []


def _send(p, end, tokens, user, tenant, model="gpt-4o", agent_id=None, workflow_id=None,
          chat=False, month=None) -> None:
    if agent_id is not None:
        with agent(p.tracer, agent_id, **caller(user, tenant)):
            if workflow_id is not None:
                with workflow(p.tracer, workflow_id, chat=chat):
                    call(p.tracer, end, tokens, user, tenant, model)
            else:
                call(p.tracer, end, tokens, user, tenant, model)
    elif workflow_id is not None:
        with workflow(p.tracer, workflow_id, **caller(user, tenant)):
            call(p.tracer, end, tokens, user, tenant, model)
    else:
        call(p.tracer, end, tokens, user, tenant, model)
    # a chat workflow counts as its agent (attribution.md, R5): no workflow row of its own
    CALLS.append((tenant, month, user, agent_id, None if chat else workflow_id, model, tokens))


def november(p) -> None:
    """acme (New York) and globex (Shanghai) in November, one call at each month edge."""
    _send(p, local(NY, 2026, 11, 5, 10), (100, 50), "alice", "acme", month="2026-11")
    _send(p, local(NY, 2026, 11, 20, 10), (200, 20), "alice", "acme", agent_id="support-bot",
          workflow_id="support-chat", chat=True, month="2026-11")
    # 23:59:30 in New York is 04:59:30 UTC on 1 December: November for acme
    _send(p, local(NY, 2026, 11, 30, 23, 59, 30), (30, 30), "bob", "acme",
          model="in-house-llm", workflow_id="translate", month="2026-11")
    _send(p, local(SH, 2026, 11, 30, 23), (1000, 500), "carol", "globex", month="2026-11")


def december(p) -> None:
    # 00:00:30 in New York on 1 December: the new month for acme
    _send(p, local(NY, 2026, 12, 1, 0, 0, 30), (10, 5), "bob", "acme", model="gpt-4o-mini",
          workflow_id="summarize", month="2026-12")
    _send(p, local(NY, 2026, 12, 9, 8), (7, 3), "alice", "acme", agent_id="support-bot",
          month="2026-12")
    # 00:00:30 in Shanghai on 1 December is 16:00:30 UTC on 30 November: globex's December
    _send(p, local(SH, 2026, 12, 1, 0, 0, 30), (40, 60), "carol", "globex",
          model="gpt-4o-mini", month="2026-12")


NOW = local(NY, 2026, 12, 10, 12)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """No LLM_TOKEN_EXPORTER_* from the outside."""
    for name in list(os.environ):
        if name.startswith("LLM_TOKEN_EXPORTER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def budgets_file(tmp_path):
    path = tmp_path / "budgets.yaml"
    path.write_text(BUDGETS)
    return path


@pytest.fixture
def service(tmp_path, budgets_file):
    made = []

    def start(**config):
        p = ServicePipeline(clock=Clock(NOW), state_dir=tmp_path / "state",
                            budgets=str(budgets_file), **config)
        made.append(p)
        return p

    CALLS.clear()
    yield start
    for p in made:
        p.close()


def _expected_from_calls(tenant: str, month: str) -> dict:
    """(scope, id) -> [input, output, cost_pico, unpriced, calls], from the calls sent."""
    rows: dict = {}
    for t, m, user, agent_id, workflow_id, model, (tin, tout) in CALLS:
        if (t, m) != (tenant, month):
            continue
        price = PRICES.get(model)
        cost, unpriced = ((tin * price[0] + tout * price[1], 0) if price
                          else (0, tin + tout))
        for key in [("tenant", tenant), ("member", user), ("model", model),
                    *([("agent", agent_id)] if agent_id else []),
                    *([("workflow", workflow_id)] if workflow_id else [])]:
            row = rows.setdefault(key, [0, 0, 0, 0, 0])
            for i, v in enumerate((tin, tout, cost, unpriced, 1)):
                row[i] += v
    return rows


def _ledger_rows(p, tenant: str, month: str) -> dict:
    """The service's own period rows of ``tenant``'s ``month`` (in memory)."""
    return {(scope, id_): list(amounts)
            for (t, period, scope, id_), amounts in
            p.server.service.pipeline.periods.snapshot().items()
            if (t, period) == (tenant, month)}


def _report_rows(report: dict) -> dict:
    rows = {("tenant", report["tenant"]): report["total"]} if report["total"]["calls"] else {}
    for key, scope in SECTIONS.items():
        for line in report[key]:
            rows[(scope, line["id"])] = line
    return {k: [line["input_tokens"], line["output_tokens"], line["cost_pico"],
                line["unpriced_tokens"], line["calls"]] for k, line in rows.items()}


def _checkpointed_rows(state: Path, tenant: str, month: str) -> int:
    db = sqlite3.connect(f"file:{state / FILENAME}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM period_usage WHERE tenant = ? AND period = ?",
                          (tenant, month)).fetchone()[0]
    finally:
        db.close()


def _check_formats(report: dict) -> None:
    """csv and json carry the same figures as the report, costs as exact decimals; the
    table shows every id and name, costs to 6 decimals."""
    from decimal import Decimal

    assert json.loads(format_json(report)) == report
    lines = list(csv.DictReader(io.StringIO(format_csv(report))))
    by_section: dict = {}
    for line in lines:
        by_section.setdefault(line["section"], []).append(line)
    for key, scope in SECTIONS.items():
        got = by_section.get(scope, [])
        assert [(g["id"], g["name"]) for g in got] == [(x["id"], x["name"]) for x in report[key]]
        for g, x in zip(got, report[key], strict=True):
            assert [int(g[c]) for c in ("input_tokens", "output_tokens", "total_tokens",
                                        "calls", "unpriced_tokens")] == [
                x["input_tokens"], x["output_tokens"], x["total_tokens"], x["calls"],
                x["unpriced_tokens"]]
            assert Decimal(g["cost_usd"]) * 10**12 == x["cost_pico"]
    (total,) = by_section["total"]
    assert Decimal(total["cost_usd"]) * 10**12 == report["total"]["cost_pico"]
    assert int(total["total_tokens"]) == report["total"]["total_tokens"]
    table = format_table(report)
    for key in SECTIONS:
        for line in report[key]:
            row = next(t for t in table.splitlines() if t.startswith(line["id"] + " "))
            assert line["name"] in row
            cost = (Decimal(line["cost_pico"]) / 10**12).quantize(Decimal("0.000001"))
            assert row.split()[-2] == str(cost) and row.split()[-1] == str(
                line["unpriced_tokens"])


def _run_cli(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_TOKEN_EXPORTER_")}
    return subprocess.run([sys.executable, "-m", "exporter.cli", *argv], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


# -- against the running service ------------------------------------------------------------------


def test_the_report_equals_the_ledger_while_the_service_runs(service, tmp_path, budgets_file):
    state = tmp_path / "state"
    directory = load_directory(WORKED_EXAMPLE_DIRECTORY)
    # checkpoints an hour away: every row is still in the journal
    p = service(checkpoint_interval=3600)
    november(p)
    december(p)
    p.flush()
    for tenant in ("acme", "globex"):
        for month in ("2026-11", "2026-12"):
            assert _checkpointed_rows(state, tenant, month) == 0
            report = monthly_report(state, tenant, month, directory=directory)
            assert report["as_of"]["journal_frames"] > 0
            assert _report_rows(report) == _ledger_rows(p, tenant, month)
            assert _report_rows(report) == _expected_from_calls(tenant, month), (tenant, month)
            _check_formats(report)
    # the months add up to the ledger's counters of the tenant (all the calls were in them)
    for tenant in ("acme", "globex"):
        counted = sum(v for labels, v in p.samples("llm_member_tokens_total").items()
                      if ("tenant", tenant) in labels)
        months = sum(monthly_report(state, tenant, m)["total"]["total_tokens"]
                     for m in ("2026-11", "2026-12"))
        assert months == counted
    acme = monthly_report(state, "acme", "2026-11", directory=directory)
    # names from the directory; the month edges in the tenant's timezone
    assert acme["tenant_name"] == "Acme Corp"
    assert {m["id"]: m["name"] for m in acme["members"]} == {"alice": "Alice Wang",
                                                             "bob": "Bob Li"}
    assert {a["id"]: a["name"] for a in acme["agents"]}["support-bot"] == "Support Bot"
    assert {w["id"]: w["name"] for w in acme["workflows"]} == {"translate": "Translate"}
    assert {m["id"]: m["name"] for m in acme["models"]} == {
        "gpt-4o": "gpt-4o", "in-house-llm": "in-house-llm"}
    assert acme["total"] == {"id": "acme", "name": "Acme Corp", "input_tokens": 330,
                             "output_tokens": 100, "total_tokens": 430, "calls": 3,
                             "cost_pico": 300 * 2_500_000 + 70 * 10_000_000,
                             "cost_usd": "0.00145", "unpriced_tokens": 60}
    globex_dec = monthly_report(state, "globex", "2026-12")
    assert globex_dec["total"]["total_tokens"] == 100  # 16:00 UTC on 30 Nov, Dec in Shanghai
    # the command, in its own process, while the service runs
    done = _run_cli("report", "--state-dir", str(state), "--tenant", "acme", "--month",
                    "2026-11", "--format", "json", "--directory", str(WORKED_EXAMPLE_DIRECTORY))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert json.loads(done.stdout) == {**acme, "timezone": None}
    done = _run_cli("report", "--state-dir", str(state), "--tenant", "acme", "--month",
                    "2026-11", "--format", "csv", "--directory", str(WORKED_EXAMPLE_DIRECTORY))
    assert done.returncode == 0 and done.stdout == format_csv(acme)


def test_checkpointed_rows_and_journal_frames_add_up(service, tmp_path):
    state = tmp_path / "state"
    p = service(checkpoint_interval=3600)
    november(p)
    p.flush()
    p.close()  # the close checkpoints every row into SQLite
    assert _checkpointed_rows(state, "acme", "2026-11") > 0
    before = monthly_report(state, "acme", "2026-11")  # the service stopped
    assert before["as_of"]["journal_frames"] == 0
    assert _report_rows(before) == _expected_from_calls("acme", "2026-11")
    p = service(checkpoint_interval=3600)
    # one more November call, in the journal only, on top of the checkpointed ones
    _send(p, local(NY, 2026, 11, 30, 12), (1, 2), "alice", "acme", month="2026-11")
    december(p)
    p.flush()
    for tenant in ("acme", "globex"):
        for month in ("2026-11", "2026-12"):
            report = monthly_report(state, tenant, month)
            assert _report_rows(report) == _ledger_rows(p, tenant, month)
            assert _report_rows(report) == _expected_from_calls(tenant, month)
    assert monthly_report(state, "acme", "2026-11")["as_of"]["journal_frames"] > 0
    # names fall back to the ids (no directory given to the function)
    assert {m["name"] for m in monthly_report(state, "acme", "2026-11")["members"]} == {
        "alice", "bob"}


def test_checkpoints_every_second_while_the_report_reads(service, tmp_path):
    state = tmp_path / "state"
    p = service(checkpoint_interval=0)  # a checkpoint after every group commit
    november(p)
    december(p)
    p.flush()
    assert _checkpointed_rows(state, "acme", "2026-12") > 0
    for tenant in ("acme", "globex"):
        for month in ("2026-11", "2026-12"):
            report = monthly_report(state, tenant, month)
            assert _report_rows(report) == _ledger_rows(p, tenant, month)


def test_ids_past_the_series_cap_appear_as_overflow(service, tmp_path):
    state = tmp_path / "state"
    p = service(max_series_per_metric=2)
    for i, model in enumerate(("gpt-4o", "gpt-4o-mini", "in-house-llm", "other-llm")):
        _send(p, local(NY, 2026, 12, 2, 10 + i), (10 * (i + 1), 1), "alice", "acme",
              model=model, month="2026-12")
    p.flush()
    report = monthly_report(state, "acme", "2026-12")
    models = {m["id"]: m for m in report["models"]}
    assert "__overflow__" in models and models["__overflow__"]["name"] == OVERFLOW_NAME
    assert sum(m["total_tokens"] for m in report["models"]) == report["total"]["total_tokens"]
    assert report["total"]["total_tokens"] == 10 + 20 + 30 + 40 + 4
    assert any("__overflow__" in note for note in report["notes"])
    assert _report_rows(report) == _ledger_rows(p, "acme", "2026-12")


# -- the reader against a store in this process: races with checkpoints ---------------------------


def _row(i: int) -> tuple:
    return ("t", "2026-12", "tenant", "t", i, 2 * i, i * 10**6, 0, 1)


def test_a_checkpoint_between_the_two_reads_starts_the_read_again(tmp_path, monkeypatch):
    store = Store(tmp_path, synchronous="OFF", checkpoint_interval=3600)
    try:
        store.commit(Batch(periods=[_row(1)]))
        store.checkpoint()
        store.commit(Batch(periods=[_row(2)]))
        store.commit(Batch(periods=[_row(3)]))
        real = report_module.Journal
        moved = []

        class Racing(real):
            def read(self):
                if not moved:  # after the SQLite read: a checkpoint, then one more frame
                    moved.append(1)
                    store.checkpoint()
                    store.commit(Batch(periods=[_row(4)]))
                return super().read()

        monkeypatch.setattr(report_module, "Journal", Racing)
        got = read_month(tmp_path, "t", "2026-12")
        assert got["attempts"] == 2
        assert got["rows"] == {("tenant", "t"): [10, 20, 10 * 10**6, 0, 4]}
        assert (got["checkpoint_seq"], got["last_frame"]) == (3, 4)
    finally:
        store.close()


def test_a_torn_last_frame_is_where_the_read_stops(tmp_path):
    store = Store(tmp_path, synchronous="OFF", checkpoint_interval=3600)
    try:
        store.commit(Batch(periods=[_row(1)]))
        (current,) = sorted(tmp_path.glob("journal.*"))[-1:]
        with open(current, "ab") as f:  # the writer in the middle of its next append
            f.write(b"\xff\x00\x00\x00\x12\x34\x56\x78" + b"\x02" + b"\x00" * 7 + b"abc")
        got = read_month(tmp_path, "t", "2026-12")
        assert got["rows"] == {("tenant", "t"): [1, 2, 10**6, 0, 1]}
        assert got["journal_frames"] == 1
    finally:
        store.close()


def test_every_read_is_a_prefix_of_the_commits_while_the_writer_checkpoints(tmp_path):
    store = Store(tmp_path, synchronous="OFF", checkpoint_interval=3600)
    n = 400
    done = threading.Event()
    errors = []

    def writer():
        try:
            for i in range(1, n + 1):
                store.commit(Batch(periods=[_row(i)]))
                if i % 3 == 0:
                    store.checkpoint()
        except Exception as exc:  # reported by the test
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen, retried = 0, 0
    try:
        while not done.is_set() or seen < n:
            got = read_month(tmp_path, "t", "2026-12")
            retried += got["attempts"] > 1
            tin, tout, cost, unpriced, k = got["rows"].get(("tenant", "t"), [0, 0, 0, 0, 0])
            assert k >= seen  # never back in time
            assert (tin, tout, cost, unpriced) == (k * (k + 1) // 2, k * (k + 1),
                                                   k * (k + 1) // 2 * 10**6, 0)
            seen = k
            if done.is_set() and errors:
                break
    finally:
        thread.join()
        store.close()
    assert not errors
    assert seen == n


# -- the command --------------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path):
    """A state directory with one checkpointed row and one in the journal."""
    state = tmp_path / "state"
    store = Store(state, synchronous="OFF", checkpoint_interval=3600)
    store.commit(Batch(periods=[("acme", "2026-11", "tenant", "acme", 10, 5, 75 * 10**8, 0, 1),
                                ("acme", "2026-11", "member", "alice", 10, 5, 75 * 10**8, 0, 1)]))
    store.checkpoint()
    store.commit(Batch(periods=[("acme", "2026-11", "tenant", "acme", 1, 1, 0, 2, 1),
                                ("acme", "2026-11", "member", "bob", 1, 1, 0, 2, 1)]))
    yield state
    store.close()


def test_the_command_prints_each_format(ledger, capsys):
    argv = ["report", "--state-dir", str(ledger), "--tenant", "acme", "--month", "2026-11",
            "--directory", str(WORKED_EXAMPLE_DIRECTORY)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[0] == "acme (Acme Corp), 2026-11"
    assert "Alice Wang" in out and "0.007500" in out
    assert main([*argv, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"]["cost_usd"] == "0.0075" and doc["total"]["calls"] == 2
    assert doc["total"]["unpriced_tokens"] == 2
    assert main([*argv, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "acme,2026-11,total,acme,Acme Corp,11,6,17,2,0.0075,2")


def test_the_command_shows_the_tenants_timezone_from_the_config(ledger, tmp_path, capsys,
                                                                budgets_file):
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {ledger}\nbudgets: {budgets_file}\n"
                      f"directory: {WORKED_EXAMPLE_DIRECTORY}\n")
    assert main(["report", "--config", str(config), "--tenant", "acme",
                 "--month", "2026-11"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "acme (Acme Corp), 2026-11 (America/New_York)")


def test_an_unknown_tenant_or_an_empty_month_is_an_empty_report(ledger, capsys):
    argv = ["report", "--state-dir", str(ledger), "--directory", str(WORKED_EXAMPLE_DIRECTORY)]
    assert main([*argv, "--tenant", "nobody", "--month", "2026-11", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["members"] == [] and doc["total"]["calls"] == 0
    assert "tenant 'nobody' is not in the directory" in doc["notes"]
    assert main([*argv, "--tenant", "acme", "--month", "2025-01"]) == 0
    out = capsys.readouterr().out
    assert "note: no usage of tenant 'acme' in 2025-01 in this ledger" in out


def test_a_directory_that_does_not_load_leaves_the_ids_as_names(ledger, tmp_path, capsys):
    assert main(["report", "--state-dir", str(ledger), "--tenant", "acme", "--month",
                 "2026-11", "--directory", str(tmp_path / "missing.yaml"),
                 "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "names are the ids" in err and "missing.yaml" in err
    assert {m["name"] for m in json.loads(out)["members"]} == {"alice", "bob"}


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "26-11", "2026-11-01", "november"])
def test_a_bad_month_is_a_usage_error(ledger, month, capsys):
    assert main(["report", "--state-dir", str(ledger), "--tenant", "acme",
                 "--month", month]) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "--month" in err


def test_a_state_dir_without_a_ledger_is_one_line_and_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for state, message in ((tmp_path / "none", "not a directory"),
                           (empty, "no ledger here")):
        assert main(["report", "--state-dir", str(state), "--tenant", "acme",
                     "--month", "2026-11"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        assert err.startswith("llm-token-exporter report: ") and message in err
    with pytest.raises(ReportError, match="no ledger here"):
        read_month(empty, "acme", "2026-11")
