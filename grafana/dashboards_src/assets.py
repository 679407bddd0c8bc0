"""§2 Tenant assets: the agents and workflows a tenant owns, heat (platform-wide) beside
cost (this tenant's members)."""

from __future__ import annotations

from .common import OWNER, TENANT, UID_ASSETS, uid
from .panels import Grid, column, dashboard, datasource_variable, table, target, tenant_variable
from .promql import sel, total
from .text import Text


def _asset_table(t: Text, kind: str, key: str, heat: list[tuple[str, str, str]]) -> dict:
    """Assets owned by the tenant: one row per asset of the directory (or with heat under
    this owner), heat columns platform-wide, the token column for this tenant's members
    only. ``heat``: (header, selector, "window" for a counter | "max" for a gauge)."""
    rows = (f"(max by ({kind}) ({sel(f'llm_{kind}_info', OWNER)}) or on({kind}) "
            f"max by ({kind}) ({heat[0][1]}))")
    zero = f"{rows} * 0"
    refs = iter("ABCD")
    targets, rename, columns = [], {}, []
    for header, selector, how in heat:
        ref = next(refs)
        expr = total(selector, kind) if how == "window" else f"max by ({kind}) ({selector})"
        targets.append(target(f"{expr} or on({kind}) {zero}", ref))
        rename[f"Value #{ref}"] = header
        span = "ever" if how == "max" else "range"
        columns.append(column(header, description=t(f"assets.heat.{span}")))
    ref = next(refs)
    tokens = total(sel(f"llm_{kind}_tokens_total", TENANT), kind)
    targets.append(target(f"({tokens} and on({kind}) {rows}) or on({kind}) {zero}", ref))
    rename[f"Value #{ref}"] = t("col.tokens")
    columns.append(column(t("col.tokens"), description=t("assets.cost.range")))
    name_ref = next(refs)
    names = (f"max by ({kind}, name) ({sel(f'llm_{kind}_info', OWNER)})"
             f' or on({kind}) label_replace({rows}, "name", "$1", "{kind}", "(.*)")')
    targets.append(target(names, name_ref))
    rename["name"] = t(f"col.{kind}")
    return table(
        t(f"assets.{key}.title"), t(f"assets.{key}.description"), targets, rename=rename,
        exclude=[kind, f"Value #{name_ref}"],
        order=[t(f"col.{kind}"), *(h for h, _, _ in heat), t("col.tokens")],
        sort_field=f"Value #{ref}", columns=columns)


def build(t: Text) -> dict:
    g = Grid()
    g.row(11, (24, _asset_table(
        t, "agent", "agents",
        [(t("col.conversations"), sel("llm_agent_invocations_total", OWNER), "window"),
         (t("col.users"), sel("llm_agent_users", OWNER), "max")])))
    g.row(11, (24, _asset_table(
        t, "workflow", "workflows",
        [(t("col.runs"), sel("llm_workflow_runs_total", OWNER), "window")])))
    return dashboard(
        t, uid(UID_ASSETS, t.lang), t("assets.title"), t("assets.description"),
        g.panels, [datasource_variable(t), tenant_variable(t)], time_from="now-30d")
