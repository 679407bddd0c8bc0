"""``llm-token-exporter demo`` end to end: real server, real OTLP/HTTP, printed views exact."""

from __future__ import annotations

import io
import re

from exporter.config import Config
from exporter.workload import expected_totals, generate
from otel_processor.directory_source import default_directory_path, load_directory

_BAR = re.compile(r"^  (.+?) +█+ +([\d,]+)$")
_CARD = re.compile(r"^  (Agent tokens|Workflow tokens|Total tokens) +([\d,]+)$")


def _sections(text: str) -> dict[str, dict]:
    """Each tenant's printed cards and top-10 rows ([(label, tokens)] in order), by tenant."""
    out: dict[str, dict] = {}
    current: dict = {}
    chart = ""
    for line in text.splitlines():
        if line.startswith("Tenant "):
            current = out.setdefault(line.split()[1].rstrip(":"), {"cards": {}})
        elif line.endswith("top 10"):
            chart = line.split()[0].lower()
            current[chart] = []
        elif card := _CARD.match(line):
            current["cards"][card[1]] = int(card[2].replace(",", ""))
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
        assert printed[tenant] == _expected_rows(totals["tenants"][tenant], directory), tenant
    for reason, tokens in totals["unattributed"].items():
        assert re.search(rf"^  {reason} +{tokens:,}$", text, re.M), reason
    assert re.search(r"^Sent [\d,]+ spans in [\d,]+ traces \(200 conversations\)", text, re.M)
    assert "200/200 conversations" in capsys.readouterr().err
