"""What a Grafana 11.6 panel shows, computed by Grafana's own code.

Two halves:

1. :func:`prometheus_to_frames` (and :func:`panel_frames` for a panel of several queries)
   turns Prometheus HTTP API answers into the data frames Grafana's Prometheus data source
   hands to a panel. It follows two pieces of Grafana, written after reading them (not
   copied): the backend's converter (pkg/promlib: one frame per series, a ``Time`` field
   and a number field carrying the series' labels, named after ``__name__`` when the
   series has one, ``displayNameFromDS`` from the legend format; an empty answer is one
   frame without fields) and the frontend's ``transformV2`` of ``@grafana/prometheus``
   11.6.0 (``format: table`` queries of one request become one frame per refId: ``Time``,
   one string field per label in sorted order, then ``Value``, or ``Value #<refId>`` when
   the request has more than one table query).

2. :func:`apply_transformations` runs panels' ``transformations`` (and, when given, their
   ``fieldConfig`` through ``applyFieldOverrides``) with ``@grafana/data`` 11.6, the package
   Grafana's frontend is built from, a whole batch of panels per request to one Node
   process that the test session keeps (``tests/grafana_js/run.cjs --serve``; its header
   documents the JSON contract).

Needs Node (>= 18) and npm on PATH: the first use runs ``npm ci`` in tests/grafana_js when
its node_modules is missing or older than its package-lock.json (under a file lock, so
parallel pytest workers wait for one install). CI can install it up front with
``npm ci --prefix tests/grafana_js``. Without node or npm a test fails, never skips: a
missing Grafana must not look like a pass.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import math
import os
import re
import select
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import pytest

JS_DIR = Path(__file__).resolve().parent / "grafana_js"
RUNNER = JS_DIR / "run.cjs"
_STAMP = ".installed-from-lock.sha256"  # inside node_modules: which lock it was built from

Format = Literal["table", "time_series", "heatmap"]

# -- Node and the npm packages ----------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the Grafana transformation tests need Node "
                    f"and npm (then `npm ci --prefix tests/grafana_js`)")
    return path


def _lock_digest() -> str:
    return hashlib.sha256((JS_DIR / "package-lock.json").read_bytes()).hexdigest()


def _installed() -> bool:
    stamp = JS_DIR / "node_modules" / _STAMP
    if stamp.is_file() and stamp.read_text().strip() == _lock_digest():
        return True
    # installed by hand or by CI (`npm ci --prefix tests/grafana_js`): the hidden lockfile npm
    # writes must list what package-lock.json pins
    hidden = JS_DIR / "node_modules" / ".package-lock.json"
    if not hidden.is_file():
        return False
    want = json.loads((JS_DIR / "package-lock.json").read_text())["packages"]
    have = json.loads(hidden.read_text())["packages"]
    return all(have.get(k, {}).get("version") == v.get("version")
               for k, v in want.items() if k and not v.get("dev"))


def ensure_node_modules() -> None:
    """``npm ci`` in tests/grafana_js unless its node_modules already matches the lock."""
    if _installed():
        return
    npm = _tool("npm")
    with open(JS_DIR / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be installing: wait for it
        try:
            if _installed():
                return
            done = subprocess.run(
                [npm, "ci", "--prefix", str(JS_DIR), "--no-audit", "--no-fund"],
                cwd=JS_DIR, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                pytest.fail(f"npm ci in {JS_DIR} failed ({done.returncode}):\n"
                            f"{done.stdout}\n{done.stderr}")
            (JS_DIR / "node_modules" / _STAMP).write_text(_lock_digest() + "\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- Prometheus answers to Grafana data frames -------------------------------------------------

_LEGEND = re.compile(r"\{\{\s*(.+?)\s*\}\}")


def _result(result: Any) -> tuple[str, list]:
    """(resultType, result) from an /api/v1/query(_range) answer, its "data" object, or the
    bare result list (tests/prom.py's ``query``): vector when the items have "value"."""
    if isinstance(result, Mapping) and "data" in result:
        if result.get("status", "success") != "success":
            raise ValueError(f"Prometheus answered an error: {result.get('error')}")
        result = result["data"]
    if isinstance(result, Mapping):
        return result["resultType"], result["result"]
    items = list(result)
    if any("values" in r for r in items):
        return "matrix", items
    return "vector", items


def _go_quote(value: str) -> str:
    """Go's %q for a label value (printable text: a JSON string, unescaped non-ASCII)."""
    return json.dumps(value, ensure_ascii=False)


def _metric_name(labels: Mapping[str, str]) -> str:
    """pkg/promlib's metricNameFromLabels: ``name{a="x", b="y"}``, ``{}`` without labels."""
    name = labels.get("__name__", "")
    rest = sorted(f"{k}={_go_quote(v)}" for k, v in labels.items() if k != "__name__")
    if not rest:
        return name if "__name__" in labels else "{}"
    return f"{name}{{{', '.join(rest)}}}"


def _series_name(labels: Mapping[str, str], legend_format: str | None, expr: str) -> str:
    """The backend's getName: the legend format filled with labels (a missing label gives
    ""), else the series' name; ``{}`` (no labels, no format) becomes the expression."""
    legend = _metric_name(labels)
    if legend_format == "__auto":
        raise NotImplementedError("legendFormat __auto is not modelled")
    if legend_format:
        legend = _LEGEND.sub(lambda m: labels.get(m.group(1).strip(), ""), legend_format)
    return expr if legend == "{}" else legend


def _sample(text: str) -> float:
    return float(text)  # Python parses "NaN", "+Inf", "-Inf" as Go's ParseFloat does


def _time_ms(t: float) -> int:
    return int(t * 1000.0)  # Go: time.UnixMilli(int64(fv * 1000.0))


def _frame_json(ref_id: str, fields: list[dict], meta: dict | None = None,
                name: str | None = None) -> dict:
    """A DataFrameJSON (what /api/ds/query returns), non-finite numbers as entities."""
    schema_fields, values, entities = [], [], []
    for f in fields:
        sf = {"name": f["name"], "type": f["type"]}
        for key in ("config", "labels"):
            if f.get(key) is not None:
                sf[key] = f[key]
        schema_fields.append(sf)
        col, ent = [], {}
        for i, v in enumerate(f["values"]):
            if isinstance(v, float) and not math.isfinite(v):
                ent.setdefault("NaN" if math.isnan(v) else "Inf" if v > 0 else "NegInf",
                               []).append(i)
                col.append(None)
            else:
                col.append(v)
        values.append(col)
        entities.append(ent or None)
    schema: dict = {"refId": ref_id, "fields": schema_fields}
    if name is not None:
        schema["name"] = name
    if meta is not None:
        schema["meta"] = meta
    data: dict = {"values": values}
    if any(entities):
        data["entities"] = entities
    return {"schema": schema, "data": data}


def backend_frames(result: Any, ref_id: str, *, legend_format: str | None = None,
                   expr: str = "", step_ms: int | None = None) -> list[dict]:
    """The frames Grafana's backend makes of one query's answer (before the frontend)."""
    result_type, items = _result(result)
    frames: list[dict] = []
    if result_type == "scalar":
        t, v = items
        frames.append({"meta": {"type": "numeric-multi", "custom": {"resultType": "scalar"}},
                       "fields": [("Time", [_time_ms(t)]), ("Value", [_sample(v)], {})]})
    elif result_type in ("vector", "matrix"):
        for series in items:
            labels = dict(series.get("metric", {}))
            points = [series["value"]] if "value" in series else series.get("values", [])
            if "histogram" in series or "histograms" in series:
                raise NotImplementedError("native histograms are not modelled")
            frames.append({
                "meta": {"type": "timeseries-multi", "custom": {"resultType": result_type}},
                "fields": [("Time", [_time_ms(t) for t, _ in points]),
                           (labels.get("__name__", "Value"), [_sample(v) for _, v in points],
                            labels)]})
    else:
        raise NotImplementedError(f"result type {result_type}")
    out = []
    for i, fr in enumerate(frames):
        (tname, tvals), (vname, vvals, labels) = fr["fields"]
        time_field = {"name": tname, "type": "time", "values": tvals}
        if step_ms:
            time_field["config"] = {"interval": step_ms}
        value_field = {"name": vname, "type": "number", "values": vvals, "labels": labels}
        shown = _series_name(labels, legend_format, expr)
        if shown:
            value_field["config"] = {"displayNameFromDS": shown}
        meta = fr["meta"]
        if i == 0:
            meta = {**meta, "executedQueryString": f"Expr: {expr}\nStep: {step_ms or 0}ms"}
        out.append(_frame_json(ref_id, [time_field, value_field], meta))
    if not out:  # "Add frame to attach metadata"
        out.append(_frame_json(ref_id, [], {"executedQueryString":
                                            f"Expr: {expr}\nStep: {step_ms or 0}ms"}))
    return out


def _columns(frame: dict) -> list[dict]:
    schema, data = frame["schema"], frame["data"]
    cols = []
    for i, f in enumerate(schema["fields"]):
        values = list(data["values"][i])
        for kind, idx in ((data.get("entities") or [None] * (i + 1))[i] or {}).items():
            for j in idx:
                values[j] = {"NaN": math.nan, "Inf": math.inf, "NegInf": -math.inf}[kind]
        cols.append({**f, "values": values})
    return cols


def _to_table(frames: list[dict], table_refs: int) -> list[dict]:
    """transformV2's transformDFToTable: one frame per refId, in order of appearance."""
    if not frames or (len(frames) == 1 and not any(frames[0]["data"]["values"])):
        return frames  # one frame of no rows (an empty answer) stays as it is
    by_ref: dict[str, list[dict]] = {}
    for fr in frames:
        by_ref.setdefault(fr["schema"]["refId"], []).append(fr)
    out = []
    for ref, group in by_ref.items():
        value_name = f"Value #{ref}" if table_refs > 1 else "Value"
        labels: list[str] = []
        for fr in group:
            cols = _columns(fr)
            for name in sorted((cols[1].get("labels") or {}) if len(cols) > 1 else {}):
                if name not in labels:
                    labels.append(name)
        times: list = []
        values: list = []
        label_values: dict[str, list[str]] = {n: [] for n in labels}
        interval = None
        for fr in group:
            cols = _columns(fr)
            if interval is None and cols:
                interval = (cols[0].get("config") or {}).get("interval")
            if len(cols) < 2:
                continue
            times += cols[0]["values"]
            for v in cols[1]["values"]:
                values.append(v)
                for n in labels:
                    label_values[n].append((cols[1].get("labels") or {}).get(n, ""))
        time_field = {"name": "Time", "type": "time", "values": times,
                      "config": {"interval": interval} if interval is not None else {}}
        fields = [time_field,
                  *({"name": n, "type": "string", "config": {"filterable": True},
                     "values": label_values[n]} for n in labels),
                  {"name": value_name, "type": "number", "config": {}, "values": values}]
        if any(b < a for a, b in pairwise(times)):  # sortDataFrame(frame, 0): stable
            order = sorted(range(len(times)), key=lambda k: times[k])
            for f in fields:
                f["values"] = [f["values"][k] for k in order]
        meta = {**(group[0]["schema"].get("meta") or {}),
                "preferredVisualisationType": "rawPrometheus"}
        out.append(_frame_json(ref, fields, meta))
    return out


def transform_v2(frames: list[dict], targets: Sequence[Mapping]) -> list[dict]:
    """The frontend's transformV2 for one request: table queries to tables; the other
    frames first, marked for a graph."""
    fmt = {t["refId"]: t.get("format") for t in targets}
    tables = [f for f in frames if fmt.get(f["schema"]["refId"]) == "table"]
    if any(fmt.get(f["schema"]["refId"]) == "heatmap" for f in frames):
        raise NotImplementedError("format heatmap is not modelled")
    others = []
    for f in frames:
        if fmt.get(f["schema"]["refId"]) != "table":
            meta = {**(f["schema"].get("meta") or {}), "preferredVisualisationType": "graph"}
            others.append({"schema": {**f["schema"], "meta": meta}, "data": f["data"]})
    table_refs = len({f["schema"]["refId"] for f in tables})
    return others + _to_table(tables, table_refs)


def prometheus_to_frames(result: Any, query_ref: str, *, format: Format = "time_series",
                         instant: bool = True, legend_format: str | None = None,
                         expr: str = "", step_ms: int | None = None) -> list[dict]:
    """The frames a panel gets from one Prometheus query (a request of that query alone).

    ``result``: an /api/v1/query or /api/v1/query_range answer (whole, its "data", or the
    "result" list). ``format``/``legend_format``: the target's. ``instant`` is checked
    against the answer's type. ``expr`` is the name Grafana gives a series without labels
    (and the executed query string). Returns DataFrameJSON dicts for :func:`apply_transformations`.
    For a panel of several queries use :func:`panel_frames`: with more than one table query
    the value columns are ``Value #<refId>``.
    """
    result_type, _ = _result(result)
    if instant and result_type == "matrix" or not instant and result_type == "vector":
        raise ValueError(f"instant={instant} but Prometheus answered a {result_type}")
    frames = backend_frames(result, query_ref, legend_format=legend_format, expr=expr,
                            step_ms=step_ms)
    return transform_v2(frames, [{"refId": query_ref, "format": format}])


def panel_frames(targets: Sequence[Mapping], results: Mapping[str, Any], *,
                 exprs: Mapping[str, str] | None = None) -> list[dict]:
    """All the frames of one panel request: ``targets`` as in the dashboard JSON,
    ``results`` refId -> Prometheus answer (a target without a result is left out, like a
    hidden query), ``exprs`` refId -> the interpolated expression (default: the target's)."""
    frames: list[dict] = []
    sent = [t for t in targets if t["refId"] in results and not t.get("hide")]
    for t in sent:
        expr = (exprs or {}).get(t["refId"], t.get("expr", ""))
        frames += backend_frames(results[t["refId"]], t["refId"],
                                 legend_format=t.get("legendFormat"), expr=expr)
    return transform_v2(frames, sent)


# -- @grafana/data in Node ---------------------------------------------------------------------

_NONFINITE = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}


def _decode(frames: list[dict]) -> list[dict]:
    for frame in frames:
        for f in frame["fields"]:
            if f["type"] == "number":
                f["values"] = [_NONFINITE.get(v, v) if isinstance(v, str) else v
                               for v in f["values"]]
    return frames


class _Worker:
    """One Node process running ``run.cjs --serve`` for the whole test session (started on
    first use, again if it died): a Node start and the load of @grafana/data cost about a
    third of a second, a request to a running one milliseconds. One request at a time."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        atexit.register(self.close)

    def _start(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        ensure_node_modules()
        env = {**os.environ, "TZ": "UTC", "LC_ALL": "en_US.UTF-8", "LANG": "en_US.UTF-8"}
        if self._stderr is not None:
            self._stderr.close()  # a dead worker's
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close)
        self._proc = subprocess.Popen(
            [_tool("node"), str(RUNNER), "--serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, cwd=JS_DIR, env=env,
            text=True, encoding="utf-8")
        return self._proc

    def _failed(self, why: str) -> RuntimeError:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        err = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            err = self._stderr.read().decode("utf-8", "replace")
        code = proc.returncode if proc is not None else None
        return RuntimeError(f"{RUNNER.name} --serve {why} (exit {code}):\n{err}")

    def ask(self, request: str, timeout: float = 300) -> Any:
        proc = self._start()
        try:
            proc.stdin.write(request + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise self._failed(f"took no request ({e})") from e
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise self._failed(f"did not answer in {timeout} s")
        line = proc.stdout.readline()
        if not line:
            raise self._failed("exited")
        answer = json.loads(line)
        if isinstance(answer, dict) and "fatal" in answer:
            raise RuntimeError(f"{RUNNER.name} refused the request:\n{answer['fatal']}")
        return answer

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


_WORKER = _Worker()


def apply_transformations(jobs: Iterable[Mapping]) -> list[list[dict]]:
    """Run every job in one request to Node; each job's output frames, in order.

    A job: ``{"frames": [...], "transformations": [...], "fieldConfig"?: {...},
    "variables"?: {...}}`` (frames from :func:`prometheus_to_frames` / :func:`panel_frames`
    or plain ``{"fields": [{"name", "type", "values"}]}``). An output frame: ``{"name",
    "refId", "length", "meta", "fields": [{"name", "type", "labels", "config", "values",
    "displayName", "state": {"displayName"}, "display"?}]}``; ``displayName`` is the column
    header Grafana shows, ``display`` the formatted values (only with a fieldConfig).
    A job Grafana rejects raises RuntimeError.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    answers = _WORKER.ask(json.dumps(jobs, allow_nan=False))
    errors = [(i, a["error"]) for i, a in enumerate(answers) if "error" in a]
    if errors:
        raise RuntimeError("\n\n".join(f"job {i}: {e}" for i, e in errors))
    return [_decode(a["frames"]) for a in answers]


def apply_panel(panel: Mapping, frames: list[dict], *, field_config: bool = True,
                variables: Mapping[str, str] | None = None) -> list[dict]:
    """One panel's transformations (and fieldConfig) on its frames."""
    (out,) = apply_transformations([panel_job(panel, frames, field_config=field_config,
                                              variables=variables)])
    return out


def panel_job(panel: Mapping, frames: list[dict], *, field_config: bool = True,
              variables: Mapping[str, str] | None = None) -> dict:
    job: dict = {"frames": frames, "transformations": panel.get("transformations", [])}
    if field_config and panel.get("fieldConfig"):
        job["fieldConfig"] = panel["fieldConfig"]
    if variables:
        job["variables"] = dict(variables)
    return job


# -- Reading the result as a person does ------------------------------------------------------


def _shown(field: Mapping) -> bool:
    return not ((field.get("config") or {}).get("custom") or {}).get("hidden")


def columns(frame: Mapping) -> list[str]:
    """The column headers, left to right (fields hidden by ``custom.hidden`` left out)."""
    return [f["displayName"] for f in frame["fields"] if _shown(f)]


def rows(frame: Mapping, *, formatted: bool = False) -> list[dict]:
    """The frame's rows as {header: value}; ``formatted``: the text shown (needs a job with a
    fieldConfig)."""
    fields = [f for f in frame["fields"] if _shown(f)]
    key = "display" if formatted else "values"
    return [{f["displayName"]: f[key][i] for f in fields} for i in range(frame["length"])]
