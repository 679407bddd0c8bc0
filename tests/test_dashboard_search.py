"""The drill-down's search box: filtered in Grafana, never sent to Prometheus.

The four drill-down tables run the same queries whatever the search box holds (no query
contains the variable: tests/test_dashboards.py checks it on every dashboard); their
"Filter data by values" step keeps the rows whose name or id contains the text,
case-insensitively and literally. Here the queries run on the real Prometheus and the
filter (with the tables' other transformations) runs in Grafana's own @grafana/data
(tests/dashboard_grafana.py, tests/grafana_frames.py): hostile texts (a
backtick, quotes, a backslash, a crafted PromQL escape) cause no query error and can only
hide rows of the tenant shown, never add one.
"""

from __future__ import annotations

import pytest
import yaml

from tests.dashboard_grafana import DRILL, panel, rows, rows_of, run
from tests.dashboard_world import (  # noqa: F401 (fixtures)
    DIRECTORY,
    MEMBERS,
    T0,
    UNLISTED_AGENT,
    H,
    expected_fixture,
    prom_fixture,
    world_fixture,
)
from tests.dashboard_world import at as V

TABLES = {"Model consumption detail": "Model", "Agent consumption detail": "Agent",
          "Workflow consumption detail": "Workflow", "Member ranking": "Member"}


def _drill(prom, title: str, view) -> list[dict]:
    return rows(prom, panel(DRILL, title), view)


def _directory() -> dict:
    return yaml.safe_load(DIRECTORY.read_text())


def _member_fields(tenant: str) -> dict[str, list[str]]:
    """What the member search matches, from the directory itself: the id, the name and the
    exporter's ``search`` label (lower-cased name, email, mis, phone, "|"-joined)."""
    (t,) = [t for t in _directory()["tenants"] if t["id"] == tenant]
    out = {}
    for m in t["members"]:
        label = "|".join(str(m[k]).lower() for k in ("name", "email", "mis", "phone") if m.get(k))
        out[m["name"]] = [m["id"], m["name"], label]
    return out


def _asset_fields(kind: str) -> dict[str, list[str]]:
    """Name -> (id, name) of the directory's agents or workflows; an asset missing from the
    directory shows (and matches) its id."""
    out = {a["name"]: [a["id"], a["name"]] for a in _directory()[kind]}
    out[UNLISTED_AGENT] = [UNLISTED_AGENT]
    return out


def _contains(fields: list[str], text: str) -> bool:
    return text == "" or any(text.lower() in f.lower() for f in fields)


# -- What the search finds --------------------------------------------------------------------


def test_model_search_filters_rows_but_not_the_share_denominator(prom, expected):
    calls = expected.calls(T0 - 6 * H, T0, tenant="initech")
    tenant_total = sum(u.tokens for u in calls)
    table = _drill(prom, "Model consumption detail",
                   V(tenant="initech", range_s=6 * H, search="GPT-4O"))
    assert {r["Model"] for r in table} == {"gpt-4o", "gpt-4o-mini"}
    for row in table:
        assert row["Share"] == pytest.approx(row["Total"] / tenant_total * 100)


@pytest.mark.parametrize(("search", "members"), [
    ("", None),
    ("BILL", ["Bill Lumbergh"]),  # case-insensitive name
    ("samir@initech", ["Samir Nagheenanajar"]),  # email
    ("pgibbons", ["Peter Gibbons"]),  # mis id
    ("+1-555-0113", ["Michael Bolton"]),  # phone: "+" is literal
    ("(stapler)", ["Milton Waddams (Stapler)"]),  # parentheses are literal
    ("bill.", []),  # "." is literal: "bill." would match "Bill " as a regex
    ("bob ", ["Bob Porter", "Bob Slydell"]),
    ("lawrence", ["Lawrence Hunt"]),  # an id
])
def test_member_search_matches_name_email_mis_and_phone_and_keeps_the_rank(prom, search,
                                                                           members):
    view = V(tenant="initech", range_s=6 * H)
    p = panel(DRILL, "Member ranking")
    everyone, table = rows_of(prom, [(p, view), (p, V(tenant="initech", range_s=6 * H,
                                                       search=search))])
    assert [r["Rank"] for r in everyone] == list(range(1, 13))
    if members is None:
        assert table == everyone
        return
    assert sorted(r["Member"] for r in table) == members
    # the rank is the position among all members, not among the rows shown
    assert table == [r for r in everyone if r["Member"] in members]


@pytest.mark.parametrize(("title", "search", "shown"), [
    ("Agent consumption detail", "helper", {"TPS Report Helper", UNLISTED_AGENT}),
    ("Agent consumption detail", "FAQ", {"FAQ Bot"}),
    ("Workflow consumption detail", "report", {"Report Generator"}),
    ("Workflow consumption detail", "cover-sheet", {"Cover Sheet Check"}),  # the id
])
def test_asset_search_matches_name_or_id(prom, title, search, shown):
    table = _drill(prom, title, V(tenant="initech", range_s=6 * H, search=search))
    assert {r[title.split()[0]] for r in table} == shown


# -- What the search cannot do ----------------------------------------------------------------

HOSTILE = [
    "`",
    '"',
    "'",
    "\\",
    "\\`",
    "`} or llm_member_info{tenant=\"acme\"} or llm_member_info{x=~`",  # the old escape
    '"} or llm_member_info{tenant="acme"} or llm_member_info{x="',
    "`) or on() vector(1) or (`",
    ".*",
    "(?i)",
    "${tenant}",
    "$__range",
    "|",  # the separator of the search label: matches every member with contact fields
    "bob\\",
    "Bob Li",  # acme's member, searched from initech
]


@pytest.mark.parametrize("search", HOSTILE)
def test_no_search_text_errors_or_shows_another_tenants_rows(prom, search):
    view = V(tenant="initech", range_s=6 * H)
    searched = V(tenant="initech", range_s=6 * H, search=search)
    initech = {name for name, _ in _member_fields("initech").items()}
    others = {name for t in ("acme", "globex") for name in _member_fields(t)}
    panels = [panel(DRILL, title) for title in TABLES]
    # no query error (prom.query raises on one); one request to Node for the 8 tables
    shown = rows_of(prom, [(p, v) for p in panels for v in (view, searched)])
    for (title, column), p, everyone, table in zip(TABLES.items(), panels, shown[::2],
                                                   shown[1::2], strict=True):
        # the queries are the same with and without the text: it never reaches them
        assert run(prom, p, searched) == run(prom, p, view)
        assert all(row in everyone for row in table), "a search only hides rows"
        if title == "Member ranking":
            fields = _member_fields("initech")
            assert {r["Member"] for r in table} <= initech
            assert not {r["Member"] for r in table} & others
        elif title == "Model consumption detail":
            fields = {r["Model"]: [r["Model"]] for r in everyone}
        else:
            fields = _asset_fields("agents" if column == "Agent" else "workflows")
        assert [r[column] for r in table] == [
            r[column] for r in everyone if _contains(fields[r[column]], search)], search
    assert MEMBERS["initech"]  # the scenario has members to hide
