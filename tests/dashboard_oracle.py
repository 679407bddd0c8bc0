"""What every range panel must show, computed from what was sent (never from the exporter).

``ORACLE[(uid, title)](ctx)`` gives a panel's numbers for a time range from an
:class:`Expected` (the calls, invocations, runs, unattributed tokens, rejected and
duplicate spans, each with its time) and the directory; :func:`observe` reads the same
shape off what the panel shows: the real Prometheus answers its queries, Grafana's own
``@grafana/data`` applies its transformations and field config (all the panels of one
check in one request to Node). :func:`range_panels` are the panels whose queries use
``$__range``: the oracle knows each of them (a test checks it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.dashboard_grafana import (
    ASSETS,
    DRILL,
    OVERVIEW,
    SRE,
    View,
    all_panels,
    bar_list,
    panel,
    series,
    show,
    single,
    table,
)
from tests.dashboard_world import PRICES, Expected


@dataclass(frozen=True)
class Directory:
    """The parts of a directory file the dashboards show."""

    agents: dict[str, dict]
    workflows: dict[str, dict]  # chat workflows left out, as the exporter does
    members: dict[str, dict[str, str]]  # tenant -> member -> name

    @classmethod
    def load(cls, path: Path) -> Directory:
        doc = yaml.safe_load(path.read_text())
        return cls(
            agents={a["id"]: a for a in doc.get("agents", [])},
            workflows={w["id"]: w for w in doc.get("workflows", [])
                       if w.get("kind") != "chatflow"},
            members={t["id"]: {m["id"]: m["name"] for m in t.get("members", [])}
                     for t in doc.get("tenants", [])})

    def creator(self, asset: dict) -> str:
        """The creator as the dashboards show them: their name in the asset's owner tenant,
        else the one name all their tenants agree on, else their id."""
        who = asset.get("creator", "")
        owner = self.members.get(asset.get("owner_tenant"), {})
        if who in owner:
            return owner[who]
        names = {m[who] for m in self.members.values() if who in m}
        return names.pop() if len(names) == 1 else who


@dataclass(frozen=True)
class Ctx:
    e: Expected
    d: Directory
    start: float
    end: float
    tenant: str

    def calls(self, **match):
        return self.e.calls(self.start, self.end, **match)

    def mine(self):
        return self.calls(tenant=self.tenant)

    def inside(self, at: float) -> bool:
        return self.start < at <= self.end


def _ranked(totals: dict[str, float], names: Callable[[str], str], n: int = 10) -> list:
    order = sorted(((names(k), v) for k, v in totals.items() if v > 0), key=lambda kv: -kv[1])
    if len(order) > n:
        assert order[n - 1][1] != order[n][1], "a tie at the top-10 cut"
    return order[:n]


def _sum_by(calls, key: str, value: Callable = lambda u: u.tokens) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for u in calls:
        if getattr(u, key) is not None:
            out[getattr(u, key)] += value(u)
    return dict(out)


def _cost(u) -> float:
    return float(u.cost)


def _agent_name(c: Ctx, a: str) -> str:
    return c.d.agents.get(a, {}).get("name", a)


def _workflow_name(c: Ctx, w: str) -> str:
    return c.d.workflows.get(w, {}).get("name", w)


def _member_name(c: Ctx, tenant: str, m: str) -> str:
    return c.d.members.get(tenant, {}).get(m, m)


def _detail(c: Ctx, key: str, header: str, names: dict | None) -> list[dict]:
    out = []
    for k, total in _sum_by(c.mine(), key).items():
        if not total:
            continue
        row = {header: (names or {}).get(k, {}).get("name", k), "Total": total,
               "Input": sum(u.input for u in c.mine() if getattr(u, key) == k),
               "Output": sum(u.output for u in c.mine() if getattr(u, key) == k)}
        if names is not None:  # an asset missing from the directory: empty cells
            row["Created at"] = names[k]["created_at"] if k in names else ""
            row["Creator"] = c.d.creator(names[k]) if k in names else ""
        out.append(row)
    return sorted(out, key=lambda r: -r["Total"])


def _owned(c: Ctx, kind: str) -> list[dict]:
    assets = c.d.agents if kind == "agent" else c.d.workflows
    heat = c.e.invocations if kind == "agent" else c.e.runs
    ids = {a for a, v in assets.items() if v["owner_tenant"] == c.tenant}
    ids |= {h[2] for h in heat if h[1] == c.tenant and h[0] <= c.end}
    tokens = _sum_by(c.mine(), kind)
    out = []
    for a in ids:
        name = assets.get(a, {}).get("name", a)
        count = sum(1 for h in heat if h[1] == c.tenant and h[2] == a and c.inside(h[0]))
        if kind == "agent":
            out.append({"Agent": name, "Conversations": count, "Tokens": tokens.get(a, 0)})
        else:
            out.append({"Workflow": name, "Runs": count, "Tokens": tokens.get(a, 0)})
    return out


def _shares(c: Ctx, part: Callable, whole: Callable) -> dict[str, float]:
    out = {}
    for m in {u.model for u in c.calls()}:
        calls = c.calls(model=m)
        if sum(whole(u) for u in calls):
            out[m] = sum(part(u) for u in calls) / sum(whole(u) for u in calls) * 100
    return out


def _model_detail(c: Ctx) -> list[dict]:
    rows_ = _detail(c, "model", "Model", None)
    total = sum(u.tokens for u in c.mine())
    for r in rows_:
        r["Share"] = r["Total"] / total * 100
    return rows_


def _member_ranking(c: Ctx) -> list[dict]:
    totals = _sum_by(c.mine(), "member")
    order = sorted((m for m, v in totals.items() if v), key=lambda m: -totals[m])
    return [{"Rank": i + 1, "Member": _member_name(c, c.tenant, m), "Total": totals[m],
             "Input": sum(u.input for u in c.mine() if u.member == m),
             "Output": sum(u.output for u in c.mine() if u.member == m)}
            for i, m in enumerate(order)]


def _unattributed(c: Ctx) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for at, reason, n in c.e.unattributed:
        if c.inside(at):
            out[reason] += n
    return dict(out)


def _unattributed_share(c: Ctx) -> float | None:
    un = sum(_unattributed(c).values())
    both = un + sum(u.tokens for u in c.calls())
    return un / both * 100 if both else None


#: The service split's services (attribution.md); a service has a row once it was used.
SERVICES = ("agent", "assistant", "workflow", "tool", "direct")


def _services(c: Ctx) -> list[dict]:
    """Tokens and calls per service in the range; a service used before the range (its
    series exists) has a row of zeros."""
    used = {u.service for u in c.e.usage if u.at <= c.end}
    assert used <= set(SERVICES), used
    return [{"Service": s, "Tokens": sum(u.tokens for u in c.calls() if u.service == s),
             "Calls": sum(1 for u in c.calls() if u.service == s)} for s in sorted(used)]


def _priced(m: str) -> bool:
    return m in PRICES


ORACLE: dict[tuple[str, str], Callable[[Ctx], object]] = {
    (OVERVIEW, "Agent tokens"): lambda c: sum(u.tokens for u in c.mine() if u.agent),
    (OVERVIEW, "Workflow tokens"): lambda c: sum(u.tokens for u in c.mine() if u.workflow),
    (OVERVIEW, "Total tokens"): lambda c: sum(u.tokens for u in c.mine()),
    (OVERVIEW, "Cost (USD)"): lambda c: sum(_cost(u) for u in c.mine()),
    (OVERVIEW, "Model consumption top 10"):
        lambda c: _ranked(_sum_by(c.mine(), "model"), lambda k: k),
    (OVERVIEW, "Agent consumption top 10"):
        lambda c: _ranked(_sum_by(c.mine(), "agent"), lambda k: _agent_name(c, k)),
    (OVERVIEW, "Workflow consumption top 10"):
        lambda c: _ranked(_sum_by(c.mine(), "workflow"), lambda k: _workflow_name(c, k)),
    (OVERVIEW, "Member tokens top 10"):
        lambda c: [{"Member": n, "Tokens": v} for n, v in _ranked(
            _sum_by(c.mine(), "member"), lambda k: _member_name(c, c.tenant, k))],
    (ASSETS, "Agents owned by the tenant"): lambda c: _owned(c, "agent"),
    (ASSETS, "Workflows owned by the tenant"): lambda c: _owned(c, "workflow"),
    (DRILL, "Model consumption detail"): _model_detail,
    (DRILL, "Agent consumption detail"): lambda c: _detail(c, "agent", "Agent", c.d.agents),
    (DRILL, "Workflow consumption detail"):
        lambda c: _detail(c, "workflow", "Workflow", c.d.workflows),
    (DRILL, "Member ranking"): _member_ranking,
    (SRE, "Service usage"): lambda c: _services(c),
    (SRE, "Cost share by model"):
        lambda c: {m: v for m, v in _sum_by(c.calls(), "model", _cost).items() if v > 0},
    (SRE, "Top tenants"): lambda c: _ranked(_sum_by(c.calls(), "tenant"), lambda k: k),
    (SRE, "Top members"): lambda c: [
        {"Member": _member_name(c, t, m), "Tenant": t, "Tokens": v} for (t, m), v in _ranked(
            _sum_by([_Pair(u) for u in c.calls()], "key"), lambda k: k)],
    (SRE, "Error rate by model"): lambda c: _shares(c, lambda u: u.error, lambda u: 1),
    (SRE, "Cache read share by model"):
        lambda c: _shares(c, lambda u: u.cache_read, lambda u: u.input),
    (SRE, "Unattributed tokens by reason"): _unattributed,
    (SRE, "Unpriced tokens by model"): lambda c: {
        m: v for m, v in _sum_by(c.calls(), "model").items() if not _priced(m) and v},
    (SRE, "Rejected spans by reason"): lambda c: {
        r: n for r, n in _count(c, c.e.rejected).items() if n},
    (SRE, "Unattributed share"): _unattributed_share,
    (SRE, "Duplicate spans"): lambda c: sum(n for at, n in c.e.duplicates if c.inside(at)),
}


class _Pair:
    """A call keyed by (tenant, member), for the top members."""

    def __init__(self, u) -> None:
        self.key = (u.tenant, u.member)
        self.tokens = u.tokens


def _count(c: Ctx, events) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for at, reason in events:
        if c.inside(at):
            out[reason] += 1
    return dict(out)


def range_panels() -> set[tuple[str, str]]:
    return {(uid, p["title"]) for uid, p in all_panels("en")
            if any("$__range" in t["expr"] for t in p["targets"])}


# -- Reading a panel the same way -------------------------------------------------------------


def observe(prom, keys, view: View) -> dict[tuple[str, str], object]:
    """Each panel's numbers as the viewer reads them, in the oracle's shape: a table's rows,
    a bar chart's bars, a stat's value (or its values by name), a bar gauge's or a pie's
    values by name. One request to Node for all of ``keys``."""
    keys = sorted(keys)
    panels = [panel(uid, title) for uid, title in keys]
    out = {}
    for (uid, title), p, frames in zip(keys, panels, show(prom, [(p, view) for p in panels]),
                                       strict=True):
        if p["type"] == "table":
            got = table(frames)
            if uid == ASSETS:  # Users is not a range number (distinct callers ever)
                got = [{k: v for k, v in r.items() if k != "Users"} for r in got]
        elif p["type"] == "barchart":
            got = bar_list(p, frames)
        elif p["type"] == "stat" and len(p["targets"]) == 1:
            got = single(frames)
        else:
            got = series(frames)
        out[(uid, title)] = got
    return out


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1, abs(b))
    return a == b


def same(got, want, *, unordered: bool = False) -> bool:
    """Numbers equal (floats within 1e-9 relative), structure identical. Tables whose
    sort column has ties (the asset lists) compare as sets."""
    if isinstance(want, dict) and isinstance(got, dict):
        return set(got) == set(want) and all(same(got[k], want[k]) for k in want)
    if isinstance(want, list | tuple) and isinstance(got, list | tuple):
        if unordered:
            key = repr
            got, want = sorted(got, key=key), sorted(want, key=key)
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want, strict=True))
    return _close(got, want)


def check(prom, e: Expected, d: Directory, view: View, keys=None) -> list[str]:
    """Every range panel (or those of ``keys``) against the oracle; the mismatches."""
    ctx = Ctx(e, d, view.at - view.range_s, view.at, view.tenant)
    wrong = []
    shown = observe(prom, keys or ORACLE, view)
    for uid, title in sorted(shown):
        want = ORACLE[(uid, title)](ctx)
        got = shown[(uid, title)]
        if isinstance(want, dict) and title == "Unattributed tokens by reason":
            got = {k: v for k, v in (got or {}).items() if v}  # reasons with no tokens
        # tables whose sort column can tie: the asset lists, the services with no call
        if not same(got, want, unordered=uid == ASSETS or title == "Service usage"):
            wrong.append(f"{uid} / {title}: got {got!r}, want {want!r}")
    return wrong
