"""``llm-token-exporter demo`` end to end: real server, real OTLP/HTTP, printed views exact."""

from __future__ import annotations

import io
import re

from exporter.config import Config
from exporter.workload import UNPRICED_MODELS, expected_totals, generate
from otel_processor.directory_source import default_directory_path, load_directory

_BAR = re.compile(r"^  (.+?) +█+ +([\d,]+)$")
_CARD = re.compile(r"^  (Agent tokens|Workflow tokens|Total tokens) +([\d,]+)$")
_HEADER = re.compile(r"^Tenant (?:(?P<name>.+) \((?P<id>[^()]+)\)|(?P<bare>\S+)): core resource "
                     r"consumption$")
_COST = re.compile(r"^  Cost +(\$[\d,.]+)$")
_UNPRICED = re.compile(r"^  No price for (.+): ([\d,]+) tokens not in the cost$")


def _sections(text: str) -> dict[str, dict]:
    """Each tenant's printed name, cards, cost, unpriced lines and top-10 rows
    ([(label, tokens)] in order), by tenant id."""
    out: dict[str, dict] = {}
    current: dict = {}
    chart = ""
    for line in text.splitlines():
        if header := _HEADER.match(line):
            tenant = header["id"] or header["bare"]
            current = out.setdefault(tenant, {"cards": {}, "unpriced": {},
                                              "name": header["name"] or tenant})
            chart = ""
        elif line.endswith("top 10"):
            chart = line.split()[0].lower()
            current[chart] = []
        elif card := _CARD.match(line):
            current["cards"][card[1]] = int(card[2].replace(",", ""))
        elif cost := _COST.match(line):
            current["cost"] = cost[1]
        elif missing := _UNPRICED.match(line):
            current["unpriced"][missing[1]] = int(missing[2].replace(",", ""))
        elif (row := _BAR.match(line)) and chart:
            current[chart].append((row[1], int(row[2].replace(",", ""))))
    return out


def _expected_rows(totals: dict, directory) -> dict:
    def top(counts: dict, names) -> list:
        return sorted(((names(k), v) for k, v in counts.items()), key=lambda r: (-r[1], r[0]))[:10]

    def agent(k):
        return directory.agents[k].name if k in directory.agents else k

    return {
        "cards": {"Agent tokens": sum(totals["agents"].values()),
                  "Workflow tokens": sum(totals["workflows"].values()),
                  "Total tokens": totals["total"]},
        "model": top(totals["models"], str),
        "agent": top(totals["agents"], agent),
        "workflow": top(totals["workflows"], lambda k: directory.workflows[k].name),
        "member": top(totals["members"], lambda k: _member_name(directory, k)),
    }


def _member_name(directory, member_id: str) -> str:
    return next(m.name for t in directory.tenants.values() for m in t.members if m.id == member_id)


def test_demo_prints_every_tenants_numbers_as_the_workload_predicts(tmp_path, capsys):
    # Imported here, not at collection: test_cli fakes exporter.demo in sys.modules only, and
    # `from exporter import demo` would find the real module on the package once it is imported.
    from exporter.demo import main

    config = Config(listen="127.0.0.1:0", state_dir=str(tmp_path), log_level="WARNING")
    out = io.StringIO()
    assert main(config, progress=True, out=out) == 0
    text = out.getvalue()
    directory = load_directory(default_directory_path())
    totals = expected_totals(generate(directory), directory)
    printed = _sections(text)
    assert set(printed) == {"acme", "globex", "initech", "umbrella"}
    for tenant in ("acme", "globex", "initech", "umbrella"):
        shown = printed[tenant]
        assert shown["name"] == directory.tenants[tenant].name
        expected = totals["tenants"][tenant]
        rows = {k: v for k, v in shown.items() if k not in ("name", "cost", "unpriced")}
        assert rows == _expected_rows(expected, directory), tenant
        # every model of the catalog-less list this tenant used, with its tokens exactly
        assert shown["unpriced"] == {m: n for m, n in expected["models"].items()
                                     if m in UNPRICED_MODELS}, tenant
        # four significant digits below a dollar, cents above
        assert re.fullmatch(r"\$0\.0*[1-9]\d{0,3}|\$[1-9][\d,]*\.\d\d", shown["cost"]), shown
    assert "Tenant Acme Corp (acme): core resource consumption" in text.splitlines()
    for reason, tokens in totals["unattributed"].items():
        assert re.search(rf"^  {reason} +{tokens:,}$", text, re.M), reason
    assert totals["unpriced"], "the workload uses a model without a price"
    for model, tokens in totals["unpriced"].items():
        assert re.search(rf"^  {re.escape(model)} +{tokens:,}$", text, re.M), model
        assert tokens == sum(printed[t]["unpriced"].get(model, 0) for t in printed)
    assert re.search(r"^Sent [\d,]+ spans in [\d,]+ traces \(200 conversations\)", text, re.M)
    err = capsys.readouterr().err  # not a terminal: a plain line per quarter, no bar
    assert err.splitlines() == [f"sent {n}/200 conversations" for n in (50, 100, 150, 200)]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_redrawn_in_place_only_on_a_terminal():
    from exporter.demo import _Progress

    terminal = _Terminal()
    bar = _Progress(4, terminal)
    for done in range(1, 5):
        bar.update(done)
    bar.close()
    assert terminal.getvalue() == "".join(
        f"\r[{'#' * (30 * n // 4)}{'-' * (30 - 30 * n // 4)}] {n}/4 conversations"
        for n in range(1, 5)
    ) + "\n"

    log = io.StringIO()
    bar = _Progress(7, log)
    for done in range(1, 8):
        bar.update(done)
    bar.close()
    assert log.getvalue() == "".join(f"sent {n}/7 conversations\n" for n in (2, 4, 6, 7))

    bar = _Progress(7, None)  # --no-progress
    bar.update(7)
    bar.close()
