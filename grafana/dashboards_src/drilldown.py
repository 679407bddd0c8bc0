"""§3 Drill-down tables: the "View all" targets of the overview, every model, agent,
workflow and member of a tenant, filtered in the browser by the search box."""

from __future__ import annotations

from .common import TENANT, UID_DRILLDOWN, uid
from .panels import (
    Grid,
    column,
    dashboard,
    datasource_variable,
    search_variable,
    table,
    target,
    tenant_variable,
)
from .promql import sel, total
from .text import Text

MODEL_TOKENS = sel("llm_model_tokens_total", TENANT)


def _by_type(metric: str, key: str, rows: str) -> list[str]:
    """Input and output tokens per ``key`` of the rows ``rows`` selects."""
    typed = [sel(metric, TENANT, 'type="' + t + '"') for t in ("input", "output")]
    return [f"{total(selector, key)} and on({key}) {rows}" for selector in typed]


def one(by: str, expr: str) -> str:
    """One series per ``by``: ``expr`` can have two when exporters are mid-way through a
    directory refresh (two names for one id); a join must never see both."""
    return f"topk by ({by}) (1, {expr})"


def creator_info(kind: str) -> str:
    """``llm_<kind>_info`` with ``creator_name``: the creator's name as a member of the
    asset's owner tenant; else their name if every tenant that has them spells it the same;
    else their id. Joined on (tenant, member): one person in two tenants may have two
    names, and a join on the member alone would be many-to-many."""
    info = f"llm_{kind}_info"
    keyed = f'label_replace({info}, "member", "$1", "creator", "(.*)")'
    names = 'label_replace(llm_member_info, "creator_name", "$1", "name", "(.*)")'
    in_owner = one("owner_tenant, member", "max by (owner_tenant, member, creator_name) "
                   f'(label_replace({names}, "owner_tenant", "$1", "tenant", "(.*)"))')
    spellings = f"max by (member, creator_name) ({names})"
    unambiguous = f"{spellings} and on(member) (count by (member) ({spellings}) == 1)"
    return (f"(({keyed}) * on(owner_tenant, member) group_left(creator_name) {in_owner})"
            f" or on({kind}) (({keyed}) * on(member) group_left(creator_name) "
            f"({unambiguous}))"
            f' or on({kind}) label_replace({info}, "creator_name", "$1", "creator", "(.*)")')


def _asset_detail(t: Text, kind: str) -> dict:
    """Total, input and output per agent or workflow for the tenant, with name, creation
    time and creator from the directory; the search box matches the name or the id."""
    metric = f"llm_{kind}_tokens_total"
    rows = f"({total(sel(metric, TENANT), kind)} > 0)"
    inputs, outputs = _by_type(metric, kind, rows)
    details = one(kind, f"max by ({kind}, name, created_at, creator_name) "
                        f"({creator_info(kind)})")
    names = (f"({details} and on({kind}) {rows})"
             f' or on({kind}) label_replace({rows}, "name", "$1", "{kind}", "(.*)")')
    header = t(f"col.{kind}")
    return table(
        t(f"drilldown.{kind}.title"), t(f"drilldown.{kind}.description"),
        [target(rows, "A"), target(inputs, "B"), target(outputs, "C"), target(names, "D")],
        rename={"name": header, "Value #A": t("col.total"), "Value #B": t("col.input"),
                "Value #C": t("col.output"), "created_at": t("col.created_at"),
                "creator_name": t("col.creator")},
        exclude=[kind, "Value #D"],
        order=[header, t("col.total"), t("col.input"), t("col.output"), t("col.created_at"),
               t("col.creator")],
        sort_field="Value #A", search=[kind, "name"],
        columns=[column(t("col.total"), description=t("common.cost"))])


def _model_detail(t: Text) -> dict:
    metric = "llm_model_tokens_total"
    rows = f"({total(sel(metric, TENANT), 'model')} > 0)"
    inputs, outputs = _by_type(metric, "model", rows)
    share = f"{rows} / scalar({total(MODEL_TOKENS)}) * 100"
    return table(
        t("drilldown.model.title"), t("drilldown.model.description"),
        [target(rows, "A"), target(inputs, "B"), target(outputs, "C"), target(share, "D")],
        rename={"model": t("col.model"), "Value #A": t("col.total"),
                "Value #B": t("col.input"), "Value #C": t("col.output"),
                "Value #D": t("col.share")},
        exclude=[], order=[t("col.model"), t("col.total"), t("col.input"), t("col.output"),
                           t("col.share")],
        sort_field="Value #A", search=["model"],
        columns=[column(t("col.share"), unit="percent", decimals=2,
                        description=t("drilldown.share.formula")),
                 column(t("col.total"), description=t("common.cost"))])


def _member_ranking(t: Text) -> dict:
    metric = "llm_member_tokens_total"
    info = sel("llm_member_info", TENANT)
    rows = f"({total(sel(metric, TENANT), 'member')} > 0)"
    inputs, outputs = _by_type(metric, "member", rows)
    names = (f"({one('member', f'max by (member, name, search) ({info})')} and on(member) "
             f"{rows})"
             f' or on(member) label_replace({rows}, "name", "$1", "member", "(.*)")')
    rank = [  # the position by total among all of the tenant's members, before the search
        {"id": "calculateField", "options": {
            "mode": "index", "index": {"asPercentile": False}, "alias": "Row",
            "timeSeries": False}},
        {"id": "calculateField", "options": {
            "mode": "binary", "alias": "Rank", "timeSeries": False,
            "binary": {"left": {"matcher": {"id": "byName", "options": "Row"}},
                       "operator": "+", "right": {"fixed": "1"}}}},
    ]
    return table(
        t("drilldown.member.title"), t("drilldown.member.description"),
        [target(rows, "A"), target(inputs, "B"), target(outputs, "C"), target(names, "D")],
        rename={"Rank": t("col.rank"), "name": t("col.member"), "Value #A": t("col.total"),
                "Value #B": t("col.input"), "Value #C": t("col.output")},
        exclude=["member", "search", "Value #D", "Row"],
        order=[t("col.rank"), t("col.member"), t("col.total"), t("col.input"),
               t("col.output")],
        sort_field="Value #A", extra_transformations=rank, search=["member", "name", "search"],
        columns=[column(t("col.rank"), description=t("drilldown.rank.description")),
                 column(t("col.total"), description=t("common.cost"))])


def build(t: Text) -> dict:
    g = Grid()
    g.row(10, (24, _model_detail(t)))
    g.row(10, (24, _asset_detail(t, "agent")))
    g.row(10, (24, _asset_detail(t, "workflow")))
    g.row(12, (24, _member_ranking(t)))
    return dashboard(
        t, uid(UID_DRILLDOWN, t.lang), t("drilldown.title"), t("drilldown.description"),
        g.panels, [datasource_variable(t), tenant_variable(t), search_variable(t)],
        time_from="now-7d")
