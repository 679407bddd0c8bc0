"""The dashboards as Grafana 11.6's own code shows them (tests/grafana_frames.py).

- Prometheus answers become the data frames of Grafana's Prometheus data source;
- every transformation id the dashboards use runs through @grafana/data 11.6 (in Node) on
  small known frames, with the exact rows and column headers it must give;
- end to end: the real Prometheus serves a tiny backfilled TSDB, the drill-down's "Member
  ranking" table runs its four queries, and its transformations and field config run
  through @grafana/data: the rows a tenant admin sees, formatted;
- every committed dashboard parses with the 11.6 build of grafana-foundation-sdk.

Needs Node and npm (tests/grafana_js: ``npm ci --prefix tests/grafana_js``, run on first use
when missing), promtool and prometheus, and the grafana-foundation-sdk Python package; each
test fails, never skips, when one is missing.
"""

from __future__ import annotations

import calendar
import json
import math
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests import grafana_frames as gf
from tests.prom import Prometheus, binary

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"


def dashboard_files() -> list[Path]:
    """Every committed dashboard: grafana/dashboards/*.json and any language subfolder."""
    return sorted(DASHBOARDS.rglob("*.json"))


def english(name: str) -> dict:
    """A dashboard by file name: its en/ copy when the dashboards have language folders."""
    for path in (DASHBOARDS / "en" / name, DASHBOARDS / name):
        if path.is_file():
            return json.loads(path.read_text())
    raise AssertionError(f"no {name} under {DASHBOARDS}")


def frame(ref: str, **columns: tuple[str, list]) -> dict:
    """A plain frame: column name -> (type, values)."""
    return {"refId": ref, "fields": [{"name": n, "type": t, "values": v}
                                     for n, (t, v) in columns.items()]}


def table(ref: str, value: str, labels: dict[str, list[str]], values: list[float],
          t: int = 1_000) -> dict:
    """A table frame as the Prometheus data source makes it: Time, labels, value."""
    return frame(ref, Time=("time", [t] * len(values)),
                 **{k: ("string", v) for k, v in labels.items()},
                 **{value: ("number", values)})


def run_one(frames: list[dict], transformations: list[dict], **job) -> list[dict]:
    (out,) = gf.apply_transformations([{"frames": frames, "transformations": transformations,
                                        **job}])
    return out


# -- Prometheus answers to data frames --------------------------------------------------------


def _vector(*series: tuple[dict, str], at: float = 1759384800.0) -> dict:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": m, "value": [at, v]} for m, v in series]}}


def _fields(fr: dict) -> list[tuple]:
    """(name, type, values, labels) of a DataFrameJSON's fields."""
    return [(f["name"], f["type"], v, f.get("labels"))
            for f, v in zip(fr["schema"]["fields"], fr["data"]["values"], strict=True)]


def test_an_instant_table_query_is_one_frame_time_labels_and_value():
    """Labels are sorted series by series: a label first seen in a later series comes
    after the earlier series' labels, not in alphabetical order."""
    answer = _vector(({"tenant": "acme", "model": "b"}, "10"),
                     ({"model": "a", "tenant": "acme", "agent": "x"}, "2.5"))
    (fr,) = gf.prometheus_to_frames(answer, "A", format="table", instant=True,
                                    legend_format=None)
    assert fr["schema"]["refId"] == "A"
    assert _fields(fr) == [
        ("Time", "time", [1759384800000, 1759384800000], None),
        ("model", "string", ["b", "a"], None),
        ("tenant", "string", ["acme", "acme"], None),
        ("agent", "string", ["", "x"], None),  # a label a series lacks is ""
        ("Value", "number", [10.0, 2.5], None),
    ]
    assert fr["schema"]["meta"]["preferredVisualisationType"] == "rawPrometheus"


def test_several_table_queries_name_their_values_by_refid_and_keep_an_empty_one():
    targets = [{"refId": r, "format": "table", "expr": f"q{r}"} for r in "ABC"]
    frames = gf.panel_frames(targets, {
        "A": _vector(({"model": "a"}, "1")),
        "B": {"status": "success", "data": {"resultType": "vector", "result": []}},
        "C": [{"metric": {"model": "a"}, "value": [1759384800, "3"]}],  # tests/prom.py's list
    })
    assert [[n for n, *_ in _fields(f)] for f in frames] == [
        ["Time", "model", "Value #A"], ["Time", "Value #B"], ["Time", "model", "Value #C"]]
    assert frames[1]["data"]["values"] == [[], []]


def test_a_lone_empty_table_query_is_a_frame_without_fields():
    (fr,) = gf.prometheus_to_frames([], "A", format="table", instant=True, legend_format=None)
    assert fr["schema"]["fields"] == [] and fr["schema"]["refId"] == "A"


def test_time_series_frames_carry_labels_and_the_legend():
    answer = _vector(({"model": "gpt-4o"}, "7"), ({"__name__": "up", "job": "x"}, "1"))
    frames = gf.prometheus_to_frames(answer, "A", format="time_series", instant=True,
                                     legend_format="{{model}} tokens")
    assert [_fields(f) for f in frames] == [
        [("Time", "time", [1759384800000], None),
         ("Value", "number", [7.0], {"model": "gpt-4o"})],
        [("Time", "time", [1759384800000], None),
         ("up", "number", [1.0], {"__name__": "up", "job": "x"})],  # named by __name__
    ]
    assert [f["schema"]["fields"][1]["config"]["displayNameFromDS"] for f in frames] == [
        "gpt-4o tokens", " tokens"]  # a label the series lacks fills in as ""
    plain = gf.prometheus_to_frames(answer, "A", format="time_series", instant=True,
                                    legend_format=None)
    assert [f["schema"]["fields"][1]["config"]["displayNameFromDS"] for f in plain] == [
        '{model="gpt-4o"}', 'up{job="x"}']
    (bare,) = gf.prometheus_to_frames(_vector(({}, "3")), "A", format="time_series",
                                      instant=True, legend_format=None, expr="sum(x)")
    assert bare["schema"]["fields"][1]["config"]["displayNameFromDS"] == "sum(x)"


def test_a_range_query_is_one_frame_per_series():
    answer = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"model": "a"}, "values": [[100, "1"], [160, "2"]]},
        {"metric": {"model": "b"}, "values": [[160, "5"]]}]}}
    frames = gf.prometheus_to_frames(answer, "A", format="time_series", instant=False,
                                     legend_format="{{model}}")
    assert [_fields(f) for f in frames] == [
        [("Time", "time", [100000, 160000], None),
         ("Value", "number", [1.0, 2.0], {"model": "a"})],
        [("Time", "time", [160000], None), ("Value", "number", [5.0], {"model": "b"})]]
    with pytest.raises(ValueError):
        gf.prometheus_to_frames(answer, "A", format="time_series", instant=True,
                                legend_format=None)


def test_non_finite_samples_reach_grafana_and_come_back():
    answer = _vector(({"m": "a"}, "NaN"), ({"m": "b"}, "+Inf"), ({"m": "c"}, "-Inf"),
                     ({"m": "d"}, "4"))
    frames = gf.prometheus_to_frames(answer, "A", format="table", instant=True,
                                     legend_format=None)
    (out,) = run_one(frames, [])
    values = gf.rows(out)
    assert [r["m"] for r in values] == ["a", "b", "c", "d"]
    v = [r["Value"] for r in values]
    assert math.isnan(v[0]) and v[1:] == [math.inf, -math.inf, 4]


# -- Each transformation the dashboards use, on known frames ----------------------------------

TESTED = {"merge", "sortBy", "organize", "calculateField", "filterByValue"}


def test_every_transformation_the_dashboards_use_is_tested_here():
    used: dict[str, set[str]] = {}
    for path in dashboard_files():
        for p in json.loads(path.read_text()).get("panels", []):
            for t in p.get("transformations", []):
                used.setdefault(t["id"], set()).add(f"{path.name}: {p.get('title')}")
    assert used, "the dashboards use no transformation: this harness tests nothing"
    untested = {k: sorted(v) for k, v in used.items() if k not in TESTED}
    assert not untested, f"add a test for these transformations: {untested}"


def test_merge_joins_tables_on_their_shared_columns():
    out = run_one([
        table("A", "Value #A", {"model": ["a", "b"]}, [5, 10]),
        table("B", "Value #B", {"model": ["a"]}, [3]),
        table("C", "Value #C", {"model": ["b", "c"], "name": ["Bee", "Sea"]}, [1, 2]),
    ], [{"id": "merge", "options": {}}])
    (merged,) = out
    assert gf.columns(merged) == ["Time", "model", "Value #A", "Value #B", "name", "Value #C"]
    assert gf.rows(merged) == [
        {"Time": 1000, "model": "a", "Value #A": 5, "Value #B": 3, "name": None,
         "Value #C": None},
        {"Time": 1000, "model": "b", "Value #A": 10, "Value #B": None, "name": "Bee",
         "Value #C": 1},
        {"Time": 1000, "model": "c", "Value #A": None, "Value #B": None, "name": "Sea",
         "Value #C": 2},
    ]


def test_merge_keeps_rows_apart_when_their_time_differs():
    """Why every query of a table must be instant at the same time: merge matches on Time."""
    (merged,) = run_one([table("A", "Value #A", {"model": ["a"]}, [5], t=1_000),
                         table("B", "Value #B", {"model": ["a"]}, [3], t=2_000)],
                        [{"id": "merge", "options": {}}])
    assert gf.rows(merged) == [
        {"Time": 1000, "model": "a", "Value #A": 5, "Value #B": None},
        {"Time": 2000, "model": "a", "Value #A": None, "Value #B": 3}]


def test_sort_by_orders_rows_descending_and_ascending():
    frames = [table("A", "Value", {"model": ["a", "b", "c"]}, [5, 10, 7])]
    desc = run_one(frames, [{"id": "sortBy", "options": {
        "fields": {}, "sort": [{"field": "Value", "desc": True}]}}])
    assert [r["model"] for r in gf.rows(desc[0])] == ["b", "c", "a"]
    asc = run_one(frames, [{"id": "sortBy", "options": {"fields": {}, "sort": [
        {"field": "model"}]}}])
    assert [r["model"] for r in gf.rows(asc[0])] == ["a", "b", "c"]
    missing = run_one(frames, [{"id": "sortBy", "options": {"fields": {}, "sort": [
        {"field": "Value #A", "desc": True}]}}])  # no such field: rows stay as they were
    assert [r["model"] for r in gf.rows(missing[0])] == ["a", "b", "c"]


def test_organize_hides_orders_and_renames_by_display_name():
    (out,) = run_one([table("A", "Value #A", {"model": ["a"], "tenant": ["acme"]}, [5])],
                     [{"id": "organize", "options": {
                         "excludeByName": {"Time": True, "tenant": True},
                         "indexByName": {"Value #A": 0, "model": 1},
                         "renameByName": {"model": "Model", "Value #A": "Total"}}}])
    assert gf.columns(out) == ["Total", "Model"]
    assert [f["name"] for f in out["fields"]] == ["Value #A", "model"]  # renamed for display
    assert [f["config"].get("displayName") for f in out["fields"]] == ["Total", "Model"]
    assert [f["state"]["displayName"] for f in out["fields"]] == ["Total", "Model"]
    assert gf.rows(out) == [{"Total": 5, "Model": "a"}]


def test_calculate_field_row_index_and_a_binary_operation_rank_rows():
    (out,) = run_one([table("A", "Value", {"member": ["x", "y", "z"]}, [9, 8, 7])], [
        {"id": "calculateField", "options": {"mode": "index", "index": {"asPercentile": False},
                                             "alias": "Row", "timeSeries": False}},
        {"id": "calculateField", "options": {"mode": "binary", "alias": "Rank",
                                             "timeSeries": False, "binary": {
                                                 "left": {"matcher": {"id": "byName",
                                                                      "options": "Row"}},
                                                 "operator": "+", "right": {"fixed": "1"}}}},
    ])
    assert gf.columns(out) == ["Time", "member", "Value", "Row", "Rank"]
    assert [(r["Row"], r["Rank"]) for r in gf.rows(out)] == [(0, 1), (1, 2), (2, 3)]


def test_field_config_names_and_formats_columns_like_the_table():
    field_config = {"defaults": {"unit": "locale", "decimals": 0}, "overrides": [
        {"matcher": {"id": "byName", "options": "Share"},
         "properties": [{"id": "unit", "value": "percent"}, {"id": "decimals", "value": 2}]},
        {"matcher": {"id": "byName", "options": "model"},
         "properties": [{"id": "displayName", "value": "Model name"}]}]}
    (out,) = run_one([table("A", "Share", {"model": ["a"]}, [52.8089887640])], [],
                     fieldConfig=field_config)
    assert gf.columns(out) == ["Time", "Model name", "Share"]
    assert gf.rows(out, formatted=True) == [
        {"Time": "1970-01-01 00:00:01", "Model name": "a", "Share": "52.81%"}]
    (big,) = run_one([table("A", "Value", {}, [1234567.4])], [], fieldConfig=field_config)
    assert gf.rows(big, formatted=True)[0]["Value"] == "1,234,567"


def test_an_unknown_transformation_fails_the_job():
    with pytest.raises(RuntimeError, match="not found"):
        run_one([table("A", "Value", {}, [1])], [{"id": "noSuchTransformation"}])


def test_a_batch_answers_every_job_in_order():
    jobs = [{"frames": [table("A", "Value", {"n": [str(i)]}, [i])], "transformations": []}
            for i in range(40)]
    outs = gf.apply_transformations(jobs)
    assert [gf.rows(o[0])[0]["n"] for o in outs] == [str(i) for i in range(40)]


# -- End to end: a drill-down table from a real Prometheus ------------------------------------


def _utc(*args: int) -> int:
    return calendar.timegm(datetime(*args, tzinfo=timezone.utc).timetuple())


T0 = _utc(2025, 10, 2, 6)
H = 3600
RANGE = 3 * H

#: (metric, labels) -> [(time, value)]: acme's members over a 3 h range ending at T0.
SERIES: dict[tuple[str, tuple], list[tuple[int, float]]] = {}


def _series(metric: str, samples: list[tuple[int, float]], **labels: str) -> None:
    SERIES[(metric, tuple(sorted(labels.items())))] = samples


def _tokens(tenant: str, member: str, kind: str, samples: list[tuple[int, float]]) -> None:
    _series("llm_member_tokens_total", samples, tenant=tenant, member=member, type=kind)


def _info(tenant: str, member: str, name: str, search: str) -> None:
    _series("llm_member_info", [(T0 - RANGE, 1), (T0 - 2 * H, 1), (T0 - H, 1), (T0, 1)],
            tenant=tenant, member=member, name=name, search=search)


B = T0 - RANGE
_tokens("acme", "alice", "input", [(B, 1000), (T0 - H, 1500), (T0, 2200)])  # +1200
_tokens("acme", "alice", "output", [(B, 10), (T0, 80)])  # +70
_tokens("acme", "bob", "input", [(T0 - H, 40), (T0, 40)])  # created in the range: 40
_tokens("acme", "bob", "output", [(T0 - H, 35), (T0, 35)])
_tokens("acme", "erin", "input", [(T0 - 2 * H, 5), (T0, 25)])  # in no directory: her id
_tokens("acme", "erin", "output", [(T0 - 2 * H, 5), (T0, 5)])
_tokens("acme", "dave", "input", [(B, 50), (T0, 50)])  # nothing in the range: not shown
_tokens("globex", "carol", "input", [(B, 0), (T0, 900)])  # another tenant
_info("acme", "alice", "Alice Wang", "alice wang alice@acme.example")
_info("acme", "bob", "Bob Li", "bob li bob@acme.example")
_info("acme", "dave", "Dave Null", "dave null")
_info("globex", "carol", "Carol Chen", "carol chen")


def _openmetrics() -> str:
    lines = []
    for name in sorted({m for m, _ in SERIES}):
        lines.append(f"# TYPE {name} unknown")
        for (metric, labels), samples in sorted(SERIES.items()):
            if metric == name:
                text = ",".join(f'{k}="{v}"' for k, v in labels)
                lines += [f"{name}{{{text}}} {v} {t}" for t, v in samples]
    return "\n".join(lines + ["# EOF"]) + "\n"


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    work = tmp_path_factory.mktemp("grafana-e2e")
    (work / "data.om").write_text(_openmetrics())
    subprocess.run([binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                    str(work / "data.om"), str(work / "tsdb")], check=True, capture_output=True)
    server = Prometheus(work / "server", [], tsdb=work / "tsdb",
                        extra_args=["--storage.tsdb.retention.time=10y"])
    try:
        yield server
    finally:
        server.stop()


def _escape_regex(value: str) -> str:
    """Grafana's ${var:regex} (escapeRegex of @grafana/data)."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def interpolate(expr: str, variables: dict[str, str]) -> str:
    """$name, ${name} and ${name:regex}; "$1" (label_replace) stays."""
    def sub(m: re.Match) -> str:
        name, fmt = m.group(1) or m.group(2), m.group(3)
        if name.isdigit():
            return m.group(0)
        value = variables[name]
        return _escape_regex(value) if fmt == "regex" else value
    return re.sub(r"\$(\w+)|\$\{(\w+)(?::(\w+))?\}", sub, expr)


def panel_job(prom: Prometheus, panel: dict, **variables: str) -> dict:
    """A job for the panel: its queries run at T0 over a 3 h range, its transformations and
    field config."""
    values = {"tenant": "acme", "search": "", "__range": f"{RANGE}s", "__range_s": str(RANGE),
              "__interval": "1m", "__rate_interval": "4m", "datasource": "prometheus",
              **variables}
    exprs = {t["refId"]: interpolate(t["expr"], values) for t in panel["targets"]}
    assert all(t.get("instant") and not t.get("range") for t in panel["targets"])
    results = {ref: prom.query(expr, T0) for ref, expr in exprs.items()}
    # the search reaches no query: Grafana substitutes it into the table's filter step
    return gf.panel_job(panel, gf.panel_frames(panel["targets"], results, exprs=exprs),
                        variables={"search": values["search"]})


def test_member_ranking_shows_a_tenant_admin_the_ranked_members(prom):
    panel = next(p for p in english("llm-drilldown.json")["panels"]
                 if p["title"] == "Member ranking")
    everyone, bob = gf.apply_transformations([panel_job(prom, panel),
                                              panel_job(prom, panel, search="BOB@")])
    (shown,) = everyone
    assert gf.columns(shown) == ["Rank", "Member", "Total", "Input", "Output"]
    assert gf.rows(shown) == [
        {"Rank": 1, "Member": "Alice Wang", "Total": 1270, "Input": 1200, "Output": 70},
        {"Rank": 2, "Member": "Bob Li", "Total": 75, "Input": 40, "Output": 35},
        {"Rank": 3, "Member": "erin", "Total": 30, "Input": 25, "Output": 5},
    ]
    assert gf.rows(shown, formatted=True)[0] == {
        "Rank": "1", "Member": "Alice Wang", "Total": "1,270", "Input": "1,200", "Output": "70"}
    (searched,) = bob
    assert gf.rows(searched) == [  # the rank among all the tenant's members stays
        {"Rank": 2, "Member": "Bob Li", "Total": 75, "Input": 40, "Output": 35}]


def test_filter_by_value_keeps_the_rows_whose_column_contains_the_text_whatever_it_is():
    """The drill-down tables' search: a literal, case-insensitive substring match in Grafana
    (no query sees the text, so no text can change what a query returns)."""
    frame = {"refId": "A", "fields": [
        {"name": "member", "type": "string", "values": ["alice", "bob", "x`y", "a\\b"]},
        {"name": "Value", "type": "number", "values": [1, 2, 3, 4]}]}
    step = {"id": "filterByValue", "options": {"type": "include", "match": "any", "filters": [
        {"fieldName": "member", "config": {"id": "substring", "options": {"value": "${search}"}}}]}}
    jobs = [{"frames": [frame], "transformations": [step], "variables": {"search": text}}
            for text in ("BO", "`", "\\", "nobody")]
    found = [[gf.rows(f) for f in frames] for frames in gf.apply_transformations(jobs)]
    assert found[0] == [[{"member": "bob", "Value": 2}]]
    assert found[1] == [[{"member": "x`y", "Value": 3}]]
    assert found[2] == [[{"member": "a\\b", "Value": 4}]]
    assert found[3] == [[]]


# -- grafana-foundation-sdk 11.6 --------------------------------------------------------------


def _sdk():
    try:
        from grafana_foundation_sdk.cog import plugins
        from grafana_foundation_sdk.cog.encoder import JSONEncoder
        from grafana_foundation_sdk.models import prometheus
        from grafana_foundation_sdk.models.dashboard import Dashboard
    except ImportError as e:  # pragma: no cover - a missing dependency must fail
        pytest.fail(f"grafana-foundation-sdk is not installed ({e}): "
                    "pip install 'grafana-foundation-sdk==1769699379!11.6.0'")
    plugins.register_default_plugins()
    return Dashboard, JSONEncoder, prometheus


def _lost(before, after, path: str = "") -> list[str]:
    """What a round trip dropped or changed (keys it added are defaults, not losses)."""
    if isinstance(before, dict):
        if not isinstance(after, dict):
            return [f"{path}: became {after!r}"]
        out = []
        for k, v in before.items():
            out += _lost(v, after[k], f"{path}.{k}") if k in after else [f"{path}.{k} dropped"]
        return out
    if isinstance(before, list):
        if not isinstance(after, list) or len(before) != len(after):
            return [f"{path}: became {after!r}"]
        return [x for i, (b, a) in enumerate(zip(before, after, strict=True))
                for x in _lost(b, a, f"{path}[{i}]")]
    same = before == after and (type(before) is type(after) or
                                {type(before), type(after)} <= {int, float})
    return [] if same else [f"{path}: {before!r} became {after!r}"]


#: What the 11.6 schema has no place for and Grafana itself writes: a new dashboard's null
#: id, and a query variable's "definition" (the query as the variable editor shows it).
BENIGN = re.compile(r"^(\.id dropped|\.templating\.list\[\d+\]\.definition dropped)$")


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: str(p.relative_to(DASHBOARDS)))
def test_every_dashboard_parses_with_the_11_6_foundation_sdk(path):
    Dashboard, JSONEncoder, prometheus = _sdk()
    raw = json.loads(path.read_text())
    model = Dashboard.from_json(raw)
    for panel, p in zip(model.panels, raw["panels"], strict=True):
        where = f"{path.name}: {p.get('title')}"
        if p["type"] == "row":
            continue
        assert type(panel.options).__module__.endswith(f".{p['type']}"), \
            f"{where}: panel type {p['type']} is not one of 11.6's"
        for target in panel.targets or []:
            assert isinstance(target, prometheus.Dataquery), f"{where}: {target!r}"
    if raw.get("id") is None:
        assert model.id_val is None
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    lost = [x for x in _lost(raw, again) if not BENIGN.match(x)]
    assert not lost, f"{path.name}: the 11.6 model does not keep:\n" + "\n".join(lost)
