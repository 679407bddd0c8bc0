"""The HTTP surface: ``create_app(...)`` with one Blueprint.

``POST /v1/traces`` answers as the OTLP/HTTP specification says; ``GET /metrics``
negotiates the exposition format; ``GET /healthz`` and ``GET /readyz``. Every refusal is
counted in ``llm_exporter_spans_rejected_total{reason}``; a request refused before its
spans could be read counts once.
"""

from __future__ import annotations

import hmac
import json
import threading

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter import gateway as tenant_gateway
from exporter.limits import Limits
from exporter.otlp import OtlpError, decode_request, encode_response, encode_status
from exporter.pipeline import Pipeline
from otel_processor.budgets import Budgets
from otel_processor.periods import AGENT, MEMBER, TENANT

__all__ = ["Limits", "bp", "create_app"]

_RETRY_AFTER_SECONDS = "2"


class _Inflight:
    """Requests being ingested; past the limit the server sheds load (503)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0
        self._lock = threading.Lock()  # guards _count

    def enter(self) -> bool:
        with self._lock:
            if self._count >= self._limit:
                return False
            self._count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._count -= 1


bp = Blueprint("llm_token_exporter", __name__)


def _state() -> dict:
    return current_app.extensions["llm_token_exporter"]


def _bearer_ok(token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (always, when no token
    is configured); compared in constant time."""
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _status(content_type: str | None, code: int, message: str, **headers: str) -> Response:
    body, media = encode_status(content_type, message)
    return Response(body, status=code, content_type=media, headers=headers)


@bp.post("/v1/traces")
def traces() -> Response:
    state = _state()
    pipeline: Pipeline = state["pipeline"]
    limits: Limits = state["limits"]
    content_type = request.headers.get("Content-Type")
    if not _bearer_ok(state["auth_token"]):
        pipeline.count("unauthorized")
        return _status(content_type, 401, "missing or wrong bearer token",
                       **{"WWW-Authenticate": "Bearer"})
    if not pipeline.ready:
        # No directory has loaded yet (attributing now would bill every token as not_member
        # for good), or the dedupe window's ids are still being read back after a restart.
        # The OTLP exporter retries a 503 after Retry-After.
        pipeline.count("not_ready")
        return _status(content_type, 503,
                       "not ready (no directory loaded yet, or the seen span ids still being"
                       " read back), retry later",
                       **{"Retry-After": _RETRY_AFTER_SECONDS})
    length = request.content_length
    if length is not None and length > limits.max_body_bytes:
        pipeline.count("too_large")
        return _status(content_type, 413, f"body over {limits.max_body_bytes} bytes")
    inflight: _Inflight = state["inflight"]
    if state["backlog"]() >= limits.max_inflight_requests or not inflight.enter():
        pipeline.count("overloaded")
        return _status(content_type, 503, "overloaded, retry later",
                       **{"Retry-After": _RETRY_AFTER_SECONDS})
    try:
        body = request.stream.read(limits.max_body_bytes + 1)
        try:
            decoded = decode_request(
                body,
                content_type,
                request.headers.get("Content-Encoding"),
                max_body_bytes=limits.max_body_bytes,
                max_decompressed_bytes=limits.max_decompressed_bytes,
                max_spans=limits.max_spans_per_request,
                max_values=limits.max_values_per_request,
            )
        except OtlpError as exc:
            pipeline.count(exc.reason)
            return _status(content_type, exc.status, exc.message)
        outcome = pipeline.submit(decoded.spans, decoded.rejected, timeout=limits.submit_timeout)
    finally:
        inflight.leave()
    if not outcome.ok:
        return _status(content_type, 503, "spans not stored, retry later",
                       **{"Retry-After": _RETRY_AFTER_SECONDS})
    body, media = encode_response(content_type, outcome.rejected, outcome.message)
    return Response(body, status=200, content_type=media)


def _json(code: int, doc: dict, **headers: str) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")) + "\n", status=code,
                    content_type="application/json", headers=headers)


@bp.get("/v1/budgets/<tenant>")
def budget(tenant: str) -> Response:
    """This month's usage of a tenant (or ``?member=`` / ``?agent=`` of it) against its
    budget, for a gateway's pre-check: answered from memory."""
    state = _state()
    if not _bearer_ok(state["api_token"]):
        return _json(401, {"error": "missing or wrong bearer token"},
                     **{"WWW-Authenticate": "Bearer"})
    pipeline: Pipeline = state["pipeline"]
    if not pipeline.ready:
        return _json(503, {"error": "not ready"}, **{"Retry-After": _RETRY_AFTER_SECONDS})
    args = request.args
    unknown = [k for k in args if k not in ("member", "agent")]
    if unknown or ("member" in args and "agent" in args):
        return _json(400, {"error": "ask for the tenant, or one of ?member= and ?agent="})
    scope, id_ = TENANT, tenant
    for name, s in (("member", MEMBER), ("agent", AGENT)):
        if name in args:
            scope, id_ = s, args[name]
            if not id_:
                return _json(400, {"error": f"{name} is empty"})
    budgets: Budgets = state["budgets"]
    known = tenant in pipeline.directory_tenants() or (tenant, TENANT, tenant) in budgets.by_key
    if not known and (tenant, scope, id_) not in budgets.by_key:
        return _json(404, {"error": f"unknown tenant {tenant!r}"})
    usage = budgets.usage(pipeline.periods, tenant, scope, id_, pipeline.wall_clock())
    return _json(200, usage.as_json())


@bp.get("/metrics")
def metrics() -> Response:
    state = _state()
    if not _bearer_ok(state["metrics_token"]):
        return Response("missing or wrong bearer token\n", status=401,
                        content_type="text/plain", headers={"WWW-Authenticate": "Bearer"})
    encoder, content_type = choose_encoder(request.headers.get("Accept"))
    renderer = state["renderer"]
    if renderer is None:
        return Response(encoder(state["registry"]), status=200, content_type=content_type)
    body = renderer.render(openmetrics=content_type.startswith("application/openmetrics-text"))
    return Response(body, status=200, content_type=content_type)


@bp.get("/healthz")
def healthz() -> Response:
    return Response("ok\n", status=200, content_type="text/plain")


@bp.get("/readyz")
def readyz() -> Response:
    problems = _state()["readiness"]()
    if problems:
        return Response("not ready: " + "; ".join(problems) + "\n", status=503,
                        content_type="text/plain")
    return Response("ready\n", status=200, content_type="text/plain")


def create_app(
    *,
    pipeline: Pipeline,
    registry: CollectorRegistry,
    readiness,
    limits: Limits | None = None,
    auth_token: str = "",
    renderer=None,
    budgets: Budgets | None = None,
    api_token: str = "",
    metrics_token: str = "",
    gateway: tenant_gateway.GatewayConfig | None = None,
) -> Flask:
    """The Flask application: routes from the Blueprint, state injected, no globals.

    ``readiness`` is a callable returning a list of problems (empty when ready).
    ``gateway``: the tenant query gateway under /tenant-api/ (exporter/gateway.py); None or
    not configured: /tenant-api/ answers 404.
    """
    limits = limits or Limits()
    app = Flask("llm_token_exporter")
    app.extensions["llm_token_exporter"] = {
        "pipeline": pipeline,
        "registry": registry,
        "readiness": readiness,
        "limits": limits,
        "auth_token": auth_token,
        "api_token": api_token or auth_token,
        "metrics_token": metrics_token,
        "budgets": budgets or Budgets(),
        # renders the registry's collector faster (otel_processor/exposition.py); None:
        # prometheus-client renders the registry
        "renderer": renderer,
        "inflight": _Inflight(limits.max_inflight_requests),
        # requests waiting for a worker thread (set by the server that runs the app)
        "backlog": lambda: 0,
    }
    app.register_blueprint(bp)
    tenant_gateway.install(app, gateway or tenant_gateway.GatewayConfig())
    return app
