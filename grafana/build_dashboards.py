"""Generates the Grafana dashboards (tenant overview, assets, drill-down, SRE) as JSON, in
English and Simplified Chinese.

    python grafana/build_dashboards.py           # rewrite grafana/dashboards/{en,zh}/*.json
    python grafana/build_dashboards.py --check   # exit 1 when the committed JSON is stale

Standard library only. The code is the package ``grafana/dashboards_src/`` (one module per
dashboard, the PromQL in ``promql.py``, the words in ``texts_en.py`` and ``texts_zh.py``);
this file is its command line. ``tests/test_dashboards.py`` fails when the committed JSON
differs from what this script writes, and the ``tests/test_dashboard_*.py`` files run every
query against a real Prometheus with known data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from dashboards_src import LANGUAGES, render  # noqa: E402


def committed() -> dict[str, str]:
    """Every JSON file under grafana/dashboards/, by relative path."""
    return {p.relative_to(OUT).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(OUT.rglob("*.json"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when grafana/dashboards/ differs from the generated JSON")
    args = parser.parse_args(argv)
    files = render()
    have = committed()
    if args.check:
        stale = sorted(name for name in set(files) | set(have)
                       if files.get(name) != have.get(name))
        for name in stale:
            print(f"stale: grafana/dashboards/{name} (run python grafana/build_dashboards.py)",
                  file=sys.stderr)
        return 1 if stale else 0
    for name in set(have) - set(files):  # a dashboard renamed or moved: no stale copy
        (OUT / name).unlink()
    for name, text in files.items():
        path = OUT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} dashboards ({', '.join(LANGUAGES)}) under {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
