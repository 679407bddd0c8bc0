"""The service's configuration, resolved in one place.

Precedence, highest first: explicit overrides (the CLI flags), the environment
(``LLM_TOKEN_EXPORTER_<KEY>``), the YAML config file, the defaults below. The config file is the
``path`` argument, else ``LLM_TOKEN_EXPORTER_CONFIG``. The keys are the fields of :class:`Config`
and nowhere else: each field carries its default, what it expects and how it is checked.
``exporter/data/example-config.yaml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import pathlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from exporter import limits, pipeline, store
from exporter.gateway import GatewayConfig
from otel_processor import assembly
from otel_processor.directory_source import (
    DEFAULT_REFRESH_INTERVAL,
    DEFAULT_TIMEOUT,
    default_directory_path,
)
from otel_processor.ledger import DEFAULT_MAX_SERIES_PER_METRIC
from otel_processor.prices_source import default_prices_path

ENV_PREFIX = "LLM_TOKEN_EXPORTER_"
#: The environment variable naming the config file (when no path is given).
CONFIG_ENV = ENV_PREFIX + "CONFIG"
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_REDACTED = "<redacted>"
#: What Kubernetes sets in every pod for a Service named ``llm-token-exporter``
#: (``LLM_TOKEN_EXPORTER_PORT``, ``..._SERVICE_HOST``, ``..._PORT_4318_TCP_ADDR``, ...): not
#: config keys, and no config key has these shapes.
_SERVICE_LINK = re.compile(r"PORT|SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?")


class ConfigError(ValueError):
    """A bad config value or file; the message names the key, the value and where it came from,
    e.g. ``max_body_bytes='abc' (from LLM_TOKEN_EXPORTER_MAX_BODY_BYTES): must be a positive
    integer``."""

    def __init__(self, message: str, *, key: str = "", source: str = "") -> None:
        super().__init__(message)
        self.key, self.source = key, source


def _split_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); an IPv6 host is written in brackets: ``[::1]:4318``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("must be HOST:PORT, e.g. 0.0.0.0:4318")
    if host.startswith("[") or host.endswith("]"):
        try:
            if not (host.startswith("[") and host.endswith("]")):
                raise ValueError
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host} is not a bracketed IPv6 address, e.g. [::1]") from None
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 host goes in brackets, e.g. [::1]:4318")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port!r}")
    return host, int(port)


def _listen(text: str) -> str:
    _split_listen(text)
    return text


def _one_of(*choices: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text.upper() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text.upper()

    return check


def _test(predicate: Callable[[Any], bool]) -> Callable[[Any], Any]:
    """A check from a predicate; a False answer is reported as "must be <expect>"."""

    def check(value: Any) -> Any:
        if not predicate(value):
            raise ValueError
        return value

    return check


_positive = _test(lambda v: v > 0)
_not_negative = _test(lambda v: v >= 0)
_not_empty = _test(bool)
_no_whitespace = _test(lambda v: not any(c.isspace() for c in v))
_path_or_http_url = _test(lambda v: "://" not in v or v.lower().startswith(("http://", "https://")))
_path = _test(lambda v: "://" not in v)
_any = _test(lambda v: True)


def _key(default: Any, expect: str, check: Callable[[Any], Any], *, secret: bool = False) -> Any:
    """One config key: its default (whose type is the key's type), what it expects (for the error
    message) and its check, which returns the normalised value or raises ValueError. A secret is
    left out of ``repr`` and of error messages."""
    return field(
        default=default,
        repr=not secret,
        metadata={"expect": expect, "check": check, "secret": secret},
    )


@dataclass(frozen=True)
class Config:
    """The resolved configuration; every value is checked, also when built directly."""

    listen: str = _key("0.0.0.0:4318", "HOST:PORT", _listen)
    #: A file path or an http(s) URL; "" is the demo directory shipped in the package.
    directory: str = _key("", "a file path or an http(s) URL", _path_or_http_url)
    #: A file path; "" is the price catalog shipped in the package.
    prices: str = _key("", "a file path", _path)
    #: The budgets file (monthly limits, thresholds, each tenant's timezone; see
    #: docs/budgets.md); "": no budgets, every tenant's calendar in UTC.
    budgets: str = _key("", "a file path", _path)
    state_dir: str = _key("./data", "a directory path", _not_empty)
    directory_refresh_interval: float = _key(
        DEFAULT_REFRESH_INTERVAL, "a positive number of seconds", _positive
    )
    directory_timeout: float = _key(DEFAULT_TIMEOUT, "a positive number of seconds", _positive)
    #: The bearer token POST /v1/traces requires; "" is no authentication.
    auth_token: str = _key("", "a token without whitespace", _no_whitespace, secret=True)
    #: The bearer token GET /v1/budgets requires (a gateway's budget pre-check); "" is
    #: auth_token, and no authentication when that is "" too.
    api_token: str = _key("", "a token without whitespace", _no_whitespace, secret=True)
    #: The bearer token GET /metrics requires ("" is none): /metrics lists every member of
    #: every tenant (docs/threat-model.md); give it to Prometheus as credentials_file.
    metrics_token: str = _key("", "a token without whitespace", _no_whitespace, secret=True)
    max_body_bytes: int = _key(limits.DEFAULT_MAX_BODY_BYTES, "a positive integer", _positive)
    max_decompressed_bytes: int = _key(
        limits.DEFAULT_MAX_DECOMPRESSED_BYTES, "a positive integer", _positive
    )
    max_spans_per_request: int = _key(
        limits.DEFAULT_MAX_SPANS_PER_REQUEST, "a positive integer", _positive
    )
    #: Messages (protobuf) or objects (JSON) one request may hold: bounds the work and
    #: memory of decoding a body that inflates to millions of empty values.
    max_values_per_request: int = _key(
        limits.DEFAULT_MAX_VALUES_PER_REQUEST, "a positive integer", _positive
    )
    #: Seconds a trace may stay incomplete before it is attributed with what is known.
    trace_idle_timeout: float = _key(
        pipeline.DEFAULT_IDLE_TIMEOUT, "a positive number of seconds", _positive
    )
    max_open_traces: int = _key(pipeline.DEFAULT_MAX_TRACES, "a positive integer", _positive)
    max_pending_spans: int = _key(pipeline.DEFAULT_MAX_SPANS, "a positive integer", _positive)
    #: Seconds a (trace id, span id) is remembered for duplicate detection.
    dedupe_retention: float = _key(
        pipeline.DEFAULT_DEDUPE_RETENTION, "a positive number of seconds", _positive
    )
    #: A trace whose attributed model calls go over this many calls, or this many tokens
    #: (input + output), counts once in llm_runaway_traces_total; 0 turns a limit off.
    runaway_max_calls: int = _key(
        assembly.DEFAULT_RUNAWAY_MAX_CALLS, "an integer >= 0 (0: off)", _not_negative
    )
    runaway_max_tokens: int = _key(
        assembly.DEFAULT_RUNAWAY_MAX_TOKENS, "an integer >= 0 (0: off)", _not_negative
    )
    max_series_per_metric: int = _key(
        DEFAULT_MAX_SERIES_PER_METRIC, "a positive integer", _positive
    )
    #: Whether email, mis id and phone go into llm_member_info's ``search`` label.
    search_contact_fields: bool = _key(False, "true or false (also yes/no, on/off, 1/0)", _any)
    threads: int = _key(8, "a positive integer", _positive)
    #: Open client connections at most; past it new ones wait in the listen backlog.
    max_connections: int = _key(1000, "a positive integer", _positive)
    #: Seconds a connection may stay silent (idle keep-alive, or a request that stops
    #: mid-way) before it is closed: half-open clients cannot hold the server.
    connection_timeout: float = _key(10.0, "a positive number of seconds", _positive)
    #: Requests in flight or waiting for a worker thread beyond this are shed with 503 and
    #: Retry-After.
    max_inflight_requests: int = _key(
        limits.DEFAULT_MAX_INFLIGHT_REQUESTS, "a positive integer", _positive
    )
    #: Group commit: how long a batch may wait for company, in milliseconds.
    commit_max_delay_ms: float = _key(
        pipeline.DEFAULT_COMMIT_MAX_DELAY * 1000.0, "a number of milliseconds >= 0", _not_negative
    )
    #: Seconds between checkpoints of the journal into the SQLite ledger (sooner when it
    #: grows); 0: after every group commit.
    checkpoint_interval: float = _key(
        store.DEFAULT_CHECKPOINT_INTERVAL, "a number of seconds >= 0", _not_negative
    )
    sqlite_synchronous: str = _key(
        store.DEFAULT_SYNCHRONOUS, "FULL or NORMAL", _one_of("FULL", "NORMAL")
    )
    log_level: str = _key(
        "INFO", "a log level", _one_of("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    )
    #: The tenant query gateway under /tenant-api/ (docs/tenant-gateway.md): a mapping,
    #: in the config file only (prometheus_url, tenants: {id: {token_env|token}}, timeout);
    #: {} is off. Its tokens are secrets.
    gateway: GatewayConfig = _key(
        GatewayConfig(), "a mapping in the config file", GatewayConfig.parse, secret=True
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _accept(f, getattr(self, f.name), "Config()"))

    @property
    def host(self) -> str:
        """The host to bind, without IPv6 brackets ("::1")."""
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The port to bind; 0 is a free port chosen by the system."""
        return _split_listen(self.listen)[1]

    @property
    def directory_source(self) -> str:
        """The directory to load: ``directory``, or the packaged demo directory when empty."""
        return self.directory or str(default_directory_path())

    @property
    def prices_path(self) -> str:
        """The price catalog to load: ``prices``, or the packaged catalog when empty."""
        return self.prices or str(default_prices_path())


_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(kind: type, value: Any) -> Any:
    """``value`` (text from the environment or a flag, or a YAML scalar) as ``kind``."""
    if kind is GatewayConfig:  # a mapping, checked by GatewayConfig.parse
        if isinstance(value, (Mapping, GatewayConfig)):
            return value
        raise ValueError("must be a mapping in the config file (prometheus_url, tenants), "
                         "not a single value")
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError
        try:
            value = kind(text)  # int() reads "8_388_608"; float() reads "1e3" and "0.5"
        except ValueError:
            raise ValueError from None  # reported as "must be <expect>"
    if kind is bool:
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
    elif kind is str:
        if isinstance(value, str):
            return value.strip()
        raise ValueError("must be a string (quote it in YAML)")
    elif not isinstance(value, bool) and isinstance(value, (int, float)):
        if kind is float and math.isfinite(value):
            return float(value)
        if kind is int and (isinstance(value, int) or float(value).is_integer()):
            return int(value)
    raise ValueError


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _accept(f: dataclasses.Field, value: Any, source: str) -> Any:
    """Coerce and check one value, or raise :class:`ConfigError` naming key, value and source."""
    try:
        return f.metadata["check"](_coerce(type(f.default), value))
    except (ValueError, OverflowError) as exc:
        reason = (str(exc) if isinstance(exc, ValueError) and exc.args else "") or (
            f"must be {f.metadata['expect']}"
        )
        shown = _REDACTED if f.metadata["secret"] else _shorten(repr(value))
        message = f"{f.name}={shown} (from {source}): {reason}"
        raise ConfigError(message, key=f.name, source=source) from None


def _unknown(name: str, source: str, known: list[str]) -> ConfigError:
    folded = {key.lower(): key for key in known}  # "State_Dir" still finds "state_dir"
    guess = difflib.get_close_matches(name.lower(), list(folded), n=1)
    hint = f"; did you mean {folded[guess[0]]!r}?" if guess else ""
    return ConfigError(f"unknown key {name!r} (from {source}){hint}", key=name, source=source)


def _with_env(name: str, value: Any, env: Mapping[str, str], source: str) -> Any:
    """The gateway's mapping, checked, its ``token_env`` read from ``env`` (load_config's)."""
    if name != "gateway" or not isinstance(value, Mapping):
        return value
    try:
        return GatewayConfig.parse(value, env)
    except ValueError as exc:
        message = f"gateway={_REDACTED} (from {source}): {exc}"
        raise ConfigError(message, key="gateway", source=source) from None


def _read_file(path: str, source: str) -> Mapping:
    where = f"config file {path!r}" + (f" (from {source})" if source else "")
    try:
        doc = yaml.safe_load(pathlib.Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}", key="config") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{where}: not valid YAML: {detail}", key="config") from None
    if doc is None:  # an empty file, or one with only comments
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where}: must be a mapping of keys to values", key="config")
    return doc


def load_config(
    path: str | os.PathLike | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Resolve the configuration: ``overrides`` > ``env`` > the config file > the defaults.

    ``env`` None reads ``os.environ``. An empty environment variable and a None override or file
    value count as not set. Environment values and text overrides are parsed (ints accept ``_``,
    bools true/false, yes/no, on/off, 1/0). Every value given is checked, also one that a higher
    layer overrides. Raises :class:`ConfigError` for an unknown key (with a suggestion), an
    unreadable file, or a bad value.
    """
    env = os.environ if env is None else env
    # Every value is checked where it comes from, so a bad file value is reported even when the
    # environment overrides it: the file stays wrong for the next run without that variable.
    chosen: dict[str, object] = {}
    if path is None and env.get(CONFIG_ENV, "").strip():
        path, path_source = env[CONFIG_ENV].strip(), CONFIG_ENV
    else:
        path_source = ""
    if path is not None:
        where = os.fspath(path)
        for name, value in _read_file(where, path_source).items():
            if name not in _FIELDS:
                raise _unknown(str(name), where, list(_FIELDS))
            if value is not None:
                chosen[name] = _accept(_FIELDS[name], _with_env(name, value, env, where), where)
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        if _SERVICE_LINK.fullmatch(var[len(ENV_PREFIX) :]):
            continue  # Kubernetes' variables for a Service named llm-token-exporter
        name = var[len(ENV_PREFIX) :].lower()
        if name not in _FIELDS or var != var.upper():
            raise _unknown(var, "the environment", [ENV_PREFIX + k.upper() for k in _FIELDS])
        if value.strip():
            chosen[name] = _accept(_FIELDS[name], value, var)
    for name, value in (overrides or {}).items():
        if name not in _FIELDS:
            raise _unknown(name, "overrides", list(_FIELDS))
        if value is not None:
            source = "--" + name.replace("_", "-")
            chosen[name] = _accept(_FIELDS[name], _with_env(name, value, env, source), source)
    return Config(**chosen)
