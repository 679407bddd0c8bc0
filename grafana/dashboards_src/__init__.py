"""The generator of the Grafana dashboards (tenant overview, tenant assets, drill-down, SRE),
one module per dashboard, written once per language from one source.

``render()`` returns every file of ``grafana/dashboards/`` as it must be committed:
``<lang>/<uid>.json`` for each language of :data:`LANGUAGES` (English keeps the base uids,
Chinese appends ``-zh``). ``grafana/build_dashboards.py`` is the command line.
Standard library only.
"""

from __future__ import annotations

import json

from . import assets, drilldown, overview, sre
from .common import UID_ASSETS, UID_DRILLDOWN, UID_OVERVIEW, UID_SRE, uid
from .text import TABLES, Text

LANGUAGES = ("en", "zh")
#: The base uid of each dashboard -> its builder (a function of the language's texts).
BUILDERS = {UID_OVERVIEW: overview.build, UID_ASSETS: assets.build,
            UID_DRILLDOWN: drilldown.build, UID_SRE: sre.build}


def build(lang: str) -> tuple[dict[str, dict], Text]:
    """Every dashboard in ``lang`` by uid, and the texts (with the keys they used)."""
    t = Text(lang)
    return {uid(base, lang): make(t) for base, make in BUILDERS.items()}, t


def render() -> dict[str, str]:
    """Relative path under grafana/dashboards/ -> JSON text, exactly as committed."""
    out = {}
    for lang in LANGUAGES:
        dashboards, _ = build(lang)
        for name, d in dashboards.items():
            out[f"{lang}/{name}.json"] = json.dumps(d, indent=2, ensure_ascii=False) + "\n"
    return out


__all__ = ["BUILDERS", "LANGUAGES", "TABLES", "Text", "build", "render", "uid"]
