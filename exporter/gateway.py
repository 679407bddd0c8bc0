"""The tenant query gateway (issue 11): a Prometheus-compatible read API under ``/tenant-api/``
that lets a tenant read its own series and nothing else.

A tenant's Grafana data source points at ``http://HOST:4318/tenant-api`` with the header
``X-Tenant-Token`` in its secure JSON. Every query is parsed with ``promql-parser`` (the real
PromQL grammar) and refused unless every selector in it names a tenant metric by plain name
and carries exactly one equality matcher ``tenant="<the tenant>"`` (``owner_tenant`` for the
heat and catalogue metrics); accepted queries go to Prometheus unchanged. ``series`` and the
label endpoints are pinned the same way. Everything else under ``/tenant-api/`` is refused.
docs/tenant-gateway.md gives the rules and the reasons.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import promql_parser as pp
import requests
from flask import Blueprint, Response, current_app, request

from otel_processor import metrics as m

__all__ = [
    "GatewayConfig",
    "GatewayTenant",
    "Refused",
    "bp",
    "check_query",
    "install",
    "pin_match",
    "tenant_label_of",
]

TENANT = "tenant"
OWNER_TENANT = "owner_tenant"
_TENANT_LABELS = frozenset({TENANT, OWNER_TENANT})
#: Longest query text accepted, in UTF-8 bytes (the tenant dashboards' longest is ~1 KiB).
MAX_QUERY_BYTES = 8192
#: Deepest nesting of brackets accepted: the parser's time grows with depth, and the
#: dashboards nest fewer than 10.
MAX_DEPTH = 32
#: Most match[] selectors one series or label request may carry.
MAX_MATCHERS = 16
DEFAULT_TIMEOUT = 30.0
#: Queries forwarded at once at most (past it: 503): the service's worker threads (8 by
#: default) also take the spans, which slow tenant queries must not starve.
DEFAULT_MAX_CONCURRENT = 4
_MIN_TOKEN_CHARS = 16
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,255}")
_STATE = "llm_token_exporter_gateway"

logger = logging.getLogger(__name__)

# -- Which metrics a tenant may read, and by which label --------------------------------------


def _exposed(family: m.Family) -> list[str]:
    if family.kind == "counter":
        return [family.name + "_total"]
    if family.kind == "info":
        return [family.name + "_info"]
    if family.kind == "histogram":
        return [family.name + suffix for suffix in ("_bucket", "_sum", "_count")]
    return [family.name]


def _catalogue() -> dict[str, str]:
    families = [v for v in vars(m).values() if isinstance(v, m.Family)]
    families += [h.family for h in m.HISTOGRAMS]
    names: dict[str, str] = {}
    for family in families:
        label = next((x for x in (TENANT, OWNER_TENANT) if x in family.labels), None)
        if label is not None:  # metrics without a tenant label are no tenant's
            for name in _exposed(family):
                names[name] = label
    return names


#: Metric name -> the label that names its tenant (metrics with neither are refused).
METRICS: Mapping[str, str] = _catalogue()
#: Recording rules whose level keeps ``tenant`` (``tenant:...``, ``tenant_agent:...``,
#: ``tenant_scope_id_limit:...``: prometheus/rules/recording.yml).
_TENANT_RULE = re.compile(r"tenant(_[a-z0-9]+)*:[A-Za-z0-9_:]+")


def tenant_label_of(name: str) -> str | None:
    """The label that names a metric's tenant, None when tenants may not read it."""
    if name in METRICS:
        return METRICS[name]
    return TENANT if _TENANT_RULE.fullmatch(name) else None


def _names_regex(label: str) -> str:
    names = sorted(n for n, lbl in METRICS.items() if lbl == label)
    if label == TENANT:
        names.append(_TENANT_RULE.pattern)
    return "|".join(names)


# -- The query check ---------------------------------------------------------------------------


class Refused(Exception):
    """A request the gateway does not forward: ``status`` 400 (malformed) or 403."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _scan(text: str) -> None:
    """The raw text checks, before parsing: size, characters where the parser and Prometheus
    could read the text differently (backticks, backslash escapes, comments), nesting."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_QUERY_BYTES:
        raise Refused(400, f"query longer than {MAX_QUERY_BYTES} bytes")
    if "`" in text:
        raise Refused(400, "backtick strings are not accepted: use double quotes")
    if "\\" in text:
        raise Refused(400, "backslash escapes are not accepted")
    if any((c < " " and c not in "\t\n\r") or c == "\x7f" for c in text):
        raise Refused(400, "control characters are not accepted")
    quote = ""
    depth = 0
    for c in text:
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise Refused(400, f"brackets nested deeper than {MAX_DEPTH}")
        elif c in ")]}":
            depth -= 1
        elif c == "#":
            raise Refused(400, "comments are not accepted")


def _children(node) -> list:
    if isinstance(node, (pp.ParenExpr, pp.UnaryExpr)):
        return [node.expr]
    if isinstance(node, pp.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, pp.AggregateExpr):
        return [node.expr] if node.param is None else [node.param, node.expr]
    if isinstance(node, pp.Call):
        return list(node.args)
    if isinstance(node, pp.MatrixSelector):
        return [node.vector_selector]
    return []


def _check_selector(vs, tenant: str, *, pin: bool = False) -> str | None:
    """Refuse a selector not pinned to ``tenant``; with ``pin``, one without any tenant
    matcher is accepted and the label to add is returned."""
    matchers = vs.matchers
    if matchers.or_matchers:
        raise Refused(403, "`or` inside a selector's braces is not accepted")
    name = vs.name
    if any(x.name == "__name__" for x in matchers.matchers) or not name:
        raise Refused(403, "name the metric plainly (no __name__ matcher): "
                           f"{_shorten(str(vs))}")
    label = tenant_label_of(name)
    if label is None:
        raise Refused(403, f"metric {name} is not available to tenants")
    pinned = [x for x in matchers.matchers if x.name == label]
    if not pinned and pin:
        return label
    if len(pinned) != 1:
        raise Refused(403, f"{name}: needs exactly one matcher {label}=\"{tenant}\", "
                           f"found {len(pinned)}")
    (x,) = pinned
    if x.op != pp.MatchOp.Equal:
        raise Refused(403, f"{name}: {label} must be matched with =, not a regex or !=")
    if x.value != tenant:
        raise Refused(403, f"{name}: {label}=\"{_shorten(x.value)}\" is not your tenant")
    return None


def _string_arg(node) -> str | None:
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    return node.val if isinstance(node, pp.StringLiteral) else None


def _writes(node) -> str | None:
    """The label a label_replace, label_join or count_values writes, else None."""
    if isinstance(node, pp.Call) and node.func.name in ("label_replace", "label_join"):
        return (_string_arg(node.args[1]) if len(node.args) > 1 else None) or ""
    if isinstance(node, pp.AggregateExpr) and str(node.op) == "count_values":
        return _string_arg(node.param) or ""
    return None


def _check_node(node, tenant: str, guarded: frozenset[str]) -> None:
    """One node; ``guarded``: id labels the node may not invent (it is on the left of a
    catalogue join on them)."""
    if isinstance(node, pp.VectorSelector):
        _check_selector(node, tenant)
    elif isinstance(node, pp.SubqueryExpr):
        raise Refused(403, "subqueries are not accepted through the tenant gateway")
    written = _writes(node)
    if written is not None and (written in _TENANT_LABELS | guarded or written in (
            "", "__name__")):
        func = node.func.name if isinstance(node, pp.Call) else "count_values"
        raise Refused(403, f"{func} may not write the label {written!r}")
    if guarded and isinstance(node, pp.Call) and node.func.name.startswith("absent"):
        raise Refused(403, "absent() may not feed a join with the agent or workflow catalogue")


#: The catalogue metrics a tenant's series may be joined with for display names, by the id
#: label of the join: ``<tenant's series> * on(agent) group_left(name) max by (agent, name)
#: (llm_agent_info)`` (the tenant overview's top-10 charts name agents of other owners that
#: the tenant's members called).
_CATALOGUE = {"llm_agent_info": "agent", "llm_workflow_info": "workflow"}
_CATALOGUE_AGGREGATIONS = frozenset({"max", "min", "group", "topk", "bottomk"})


def _catalogue_join(node) -> str | None:
    """The id label when ``node`` is ``lhs * on(<id>) group_left(name) <catalogue>`` whose
    right side reads only llm_agent_info (or llm_workflow_info) by that id, else None."""
    if not isinstance(node, pp.BinaryExpr) or str(node.op) != "*":
        return None
    mod = node.modifier
    if (mod is None or mod.card != pp.VectorMatchCardinality.ManyToOne or mod.return_bool
            or mod.matching is None or mod.matching.type != pp.LabelModifierType.Include
            or len(mod.matching.labels) != 1 or not set(mod.group_labels or ()) <= {"name"}):
        return None
    (id_label,) = mod.matching.labels
    stack = [node.rhs]
    selectors = 0
    while stack:
        n = stack.pop()
        if isinstance(n, pp.ParenExpr):
            stack.append(n.expr)
        elif isinstance(n, pp.AggregateExpr):
            if str(n.op) not in _CATALOGUE_AGGREGATIONS or not (
                    n.param is None or isinstance(n.param, pp.NumberLiteral)):
                return None
            if (n.modifier is None or n.modifier.type != pp.AggModifierType.By
                    or id_label not in n.modifier.labels
                    or not set(n.modifier.labels) <= {id_label, "name"}):
                return None  # the id is kept: the join finds names of the left's ids only
            stack.append(n.expr)
        elif isinstance(n, pp.VectorSelector):
            ms = n.matchers
            if (_CATALOGUE.get(n.name or "") != id_label or n.offset is not None
                    or n.at is not None or ms.or_matchers
                    or any(x.name == "__name__" for x in ms.matchers)):
                return None
            selectors += 1
        else:
            return None
    return id_label if selectors else None


def _parse(text: str):
    _scan(text)
    try:
        return pp.parse(text)
    except Exception as exc:  # the parser raises ValueError or its own error types
        message = _shorten(" ".join(str(exc).split()))
        raise Refused(400, f"cannot parse the query: {message}") from None


def check_query(text: str, tenant: str) -> None:
    """Raise :class:`Refused` unless every selector of the PromQL ``text`` reads only
    ``tenant``'s series of tenant metrics (the rules: docs/tenant-gateway.md)."""
    stack = [(_parse(text), frozenset())]
    while stack:
        node, guarded = stack.pop()
        _check_node(node, tenant, guarded)
        id_label = _catalogue_join(node)
        if id_label is not None:  # the right side is checked: only the left is walked
            stack.append((node.lhs, guarded | {id_label}))
        else:
            stack.extend((child, guarded) for child in _children(node))


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a Go string literal too (no backslashes)


def _op(op) -> str:
    for match_op, text in ((pp.MatchOp.Equal, "="), (pp.MatchOp.NotEqual, "!="),
                           (pp.MatchOp.Re, "=~"), (pp.MatchOp.NotRe, "!~")):
        if op == match_op:
            return text
    raise Refused(400, f"unknown matcher {op!r}")


def pin_match(text: str, tenant: str) -> str:
    """A ``match[]`` selector of ``series`` or a label endpoint, checked like a query's
    selector; one without a tenant matcher gets ``tenant="<tenant>"`` (or ``owner_tenant``)
    added. Returns the selector to forward."""
    expr = _parse(text)
    if not isinstance(expr, pp.VectorSelector):
        raise Refused(400, "match[] must be a series selector, e.g. llm_member_info")
    label = _check_selector(expr, tenant, pin=True)
    if label is None:
        return text
    matchers = [f"{label}={_quote(tenant)}"]
    matchers += [f"{x.name}{_op(x.op)}{_quote(x.value)}" for x in expr.matchers.matchers]
    return f"{expr.name}{{{','.join(matchers)}}}"


def default_matches(tenant: str) -> list[str]:
    """The tenant's series, when a series or label request names none."""
    return [f"{{__name__=~{_quote(_names_regex(label))},{label}={_quote(tenant)}}}"
            for label in (TENANT, OWNER_TENANT)]


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- Configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayTenant:
    name: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class GatewayConfig:
    """The ``gateway:`` mapping of the config file; the gateway is off without
    ``prometheus_url``."""

    prometheus_url: str = ""
    tenants: tuple[GatewayTenant, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    max_concurrent: int = DEFAULT_MAX_CONCURRENT

    @property
    def enabled(self) -> bool:
        return bool(self.prometheus_url)

    @classmethod
    def parse(cls, value: object, env: Mapping[str, str] | None = None) -> GatewayConfig:
        """The checked config from the file's mapping; raises ValueError naming the sub-key.
        ``token_env`` is read from ``env`` (``os.environ`` when None)."""
        env = os.environ if env is None else env
        if isinstance(value, GatewayConfig):
            return value
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping (prometheus_url, tenants, timeout) in the "
                             "config file")
        if not value:
            return cls()
        known = ("prometheus_url", "tenants", "timeout", "max_concurrent")
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(known)})")
        url = value.get("prometheus_url")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise ValueError("prometheus_url: must be an http(s) URL, e.g. "
                             "http://127.0.0.1:9090")
        timeout = value.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
                0 < timeout < float("inf")):
            raise ValueError("timeout: must be a positive number of seconds")
        most = value.get("max_concurrent", DEFAULT_MAX_CONCURRENT)
        if isinstance(most, bool) or not isinstance(most, int) or most < 1:
            raise ValueError("max_concurrent: must be a positive integer")
        tenants = value.get("tenants")
        if not isinstance(tenants, Mapping) or not tenants:
            raise ValueError("tenants: must map each tenant id to {token_env: VAR} or "
                             "{token: TOKEN}")
        parsed: list[GatewayTenant] = []
        for name, spec in tenants.items():
            parsed.append(_parse_tenant(name, spec, env))
        tokens = [t.token for t in parsed]
        if len(set(tokens)) != len(tokens):
            raise ValueError("tenants: two tenants have the same token")
        return cls(url.rstrip("/"), tuple(parsed), float(timeout), most)


def _parse_tenant(name: object, spec: object, env: Mapping[str, str]) -> GatewayTenant:
    if not isinstance(name, str) or not _TENANT_ID.fullmatch(name):
        raise ValueError(f"tenants: {str(name)[:40]!r} is not a tenant id (letters, digits, "
                         "_ . : @ -)")
    where = f"tenants.{name}"
    if not isinstance(spec, Mapping) or len(spec) != 1 or not (
            set(spec) <= {"token", "token_env"}):
        raise ValueError(f"{where}: must be {{token_env: VAR}} or {{token: TOKEN}}")
    if "token_env" in spec:
        var = spec["token_env"]
        if not isinstance(var, str) or not var:
            raise ValueError(f"{where}.token_env: must name an environment variable")
        token = env.get(var, "").strip()
        if not token:
            raise ValueError(f"{where}.token_env: the environment variable {var} is not set "
                             "or empty")
    else:
        token = spec["token"]
        if not isinstance(token, str):
            raise ValueError(f"{where}.token: must be a string (quote it in YAML)")
        token = token.strip()
    if len(token) < _MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ValueError(f"{where}: the token must have at least {_MIN_TOKEN_CHARS} "
                         "characters and no whitespace")
    return GatewayTenant(name, token)


# -- The HTTP surface --------------------------------------------------------------------------

bp = Blueprint("tenant_gateway", __name__, url_prefix="/tenant-api")

#: Parameters forwarded per endpoint (others are dropped); the single-valued ones may be
#: given once only (a second copy could be the one Prometheus reads).
_QUERY_PARAMS = ("query", "time", "timeout", "limit")
_RANGE_PARAMS = ("query", "start", "end", "step", "timeout", "limit")
_MATCH_PARAMS = ("start", "end", "limit")


class _Sessions(threading.local):
    def __init__(self) -> None:
        self.session = requests.Session()  # keep-alive to Prometheus, one per thread


def install(app, config: GatewayConfig) -> None:
    """Register the gateway's Blueprint on ``app``; off (404) unless ``config.enabled``."""
    app.extensions[_STATE] = {"config": config, "sessions": _Sessions(),
                              "slots": threading.BoundedSemaphore(config.max_concurrent)}
    app.register_blueprint(bp)


def _refused(exc: Refused) -> Response:
    """A refusal, logged (who tried what) and answered in Prometheus's error form."""
    tenant = request.environ.get("llm_token_exporter.tenant", "?")
    logger.info("tenant gateway: refused %s %s of tenant %s (%d): %s", request.method,
                request.path, tenant, exc.status, exc.message)
    return _error(exc.status, exc.message)


def _error(status: int, message: str, **headers: str) -> Response:
    kind = {400: "bad_data", 401: "unauthorized", 403: "forbidden", 404: "not_found",
            502: "unavailable", 503: "unavailable", 504: "timeout"}.get(status, "error")
    body = json.dumps({"status": "error", "errorType": kind, "error": message})
    return Response(body + "\n", status=status, content_type="application/json",
                    headers=headers)


def _tenant_of_request(config: GatewayConfig) -> str | None:
    given = request.headers.get("X-Tenant-Token", "").encode()
    found = None
    for t in config.tenants:  # every token compared: the time does not tell which matched
        if hmac.compare_digest(given, t.token.encode()) and given:
            found = t.name
    return found


@bp.before_request
def _authenticate():
    state = current_app.extensions.get(_STATE)
    if state is None or not state["config"].enabled:
        return _error(404, "the tenant gateway is not configured")
    tenant = _tenant_of_request(state["config"])
    if tenant is None:
        return _error(401, "missing or unknown X-Tenant-Token")
    request.environ["llm_token_exporter.tenant"] = tenant
    return None


def _params(single: tuple[str, ...]) -> list[tuple[str, str]]:
    """The request's parameters (query string and form), those of ``single`` once each."""
    sources = [request.args]
    if request.method == "POST":
        sources.append(request.form)
    out: list[tuple[str, str]] = []
    for key in single:
        values = [v for s in sources for v in s.getlist(key)]
        if len(values) > 1:
            raise Refused(400, f"parameter {key} given more than once")
        if values:
            out.append((key, values[0]))
    return out


def _matches(tenant: str) -> list[tuple[str, str]]:
    sources = [request.args] + ([request.form] if request.method == "POST" else [])
    given = [v for s in sources for v in s.getlist("match[]")]
    if len(given) > MAX_MATCHERS:
        raise Refused(400, f"more than {MAX_MATCHERS} match[] selectors")
    selectors = [pin_match(v, tenant) for v in given] or default_matches(tenant)
    return [("match[]", s) for s in selectors]


def _forward(path: str, params: list[tuple[str, str]], method: str) -> Response:
    state = current_app.extensions[_STATE]
    config: GatewayConfig = state["config"]
    url = config.prometheus_url + path
    slots: threading.BoundedSemaphore = state["slots"]
    if not slots.acquire(blocking=False):
        return _error(503, f"more than {config.max_concurrent} tenant queries at once, "
                           "retry later", **{"Retry-After": "1"})
    try:
        session = state["sessions"].session
        if method == "POST":
            answer = session.post(url, data=params, timeout=config.timeout)
        else:
            answer = session.get(url, params=params, timeout=config.timeout)
    except requests.Timeout:
        return _error(504, "Prometheus did not answer in time")
    except requests.RequestException as exc:
        return _error(502, f"Prometheus unreachable: {type(exc).__name__}")
    finally:
        slots.release()
    content_type = answer.headers.get("Content-Type", "application/json")
    return Response(answer.content, status=answer.status_code, content_type=content_type)


def _tenant() -> str:
    return request.environ["llm_token_exporter.tenant"]


def _query_endpoint(path: str, names: tuple[str, ...]) -> Response:
    try:
        params = _params(names)
        query = dict(params).get("query")
        if query is None:
            raise Refused(400, "parameter query is required")
        check_query(query, _tenant())
    except Refused as exc:
        return _refused(exc)
    return _forward(path, params, request.method)


@bp.route("/api/v1/query", methods=["GET", "POST"])
def query() -> Response:
    return _query_endpoint("/api/v1/query", _QUERY_PARAMS)


@bp.route("/api/v1/query_range", methods=["GET", "POST"])
def query_range() -> Response:
    return _query_endpoint("/api/v1/query_range", _RANGE_PARAMS)


def _match_endpoint(path: str, method: str) -> Response:
    try:
        params = _params(_MATCH_PARAMS) + _matches(_tenant())
    except Refused as exc:
        return _refused(exc)
    return _forward(path, params, method)


@bp.route("/api/v1/series", methods=["GET", "POST"])
def series() -> Response:
    return _match_endpoint("/api/v1/series", "POST")


@bp.route("/api/v1/labels", methods=["GET", "POST"])
def labels() -> Response:
    return _match_endpoint("/api/v1/labels", "POST")


_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@bp.route("/api/v1/label/<name>/values", methods=["GET"])
def label_values(name: str) -> Response:
    if not _LABEL_NAME.fullmatch(name):
        return _error(400, "not a label name")
    return _match_endpoint(f"/api/v1/label/{name}/values", "GET")


@bp.route("/", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def refused(rest: str) -> Response:
    """federate, rules, alerts, targets, status, metadata, exemplars, admin, write, ..."""
    return _error(403, f"/{rest} is not available through the tenant gateway "
                       "(query, query_range, series, labels, label/<name>/values are)")
