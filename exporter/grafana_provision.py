"""Grafana per tenant (issue 11): one Grafana organization per tenant, its one data source
pinned to the tenant query gateway with that tenant's token, and the tenant dashboards with
no ``tenant`` (nor ``datasource``) variable. ``llm-token-exporter grafana-provision`` writes:

``OUT/orgs.json``
    tenant -> Grafana org id. Grafana's file provisioning cannot create organizations (and
    refuses to start when a provisioning file names an org that does not exist, since
    Grafana 7.2), so the orgs are made over the HTTP API by ``create-orgs.sh``. The ids are
    kept from one run to the next (the file is read back); a new tenant gets the next id.
``OUT/create-orgs.sh``
    POSIX sh + curl: creates each missing org (``POST /api/orgs``), refuses to go on when an
    id is another org's or Grafana gives another id, then (``GRAFANA_PROVISIONING_DIR``)
    copies the provisioning files in and asks Grafana to reload them.
``OUT/provisioning/datasources/llm-tenant-<t>.yaml``
    the org's data source: Prometheus type, the gateway URL, header ``X-Tenant-Token`` whose
    value is ``$VAR`` (Grafana expands environment variables in provisioning files) when the
    exporter config reads the token from ``token_env: VAR``; in clear (file mode 0600, with a
    warning) only when the config itself holds it in clear.
``OUT/provisioning/dashboards/llm-tenant-<t>.yaml``
    the org's dashboard provider, reading ``OUT/provisioning/llm-tenant-dashboards/<t>/``.
``OUT/provisioning/llm-tenant-dashboards/<t>/<lang>/*.json``
    copies of ``grafana/dashboards/<lang>/llm-tenant-*.json``: the ``tenant`` and
    ``datasource`` variables removed, ``$tenant`` replaced by the tenant id, every
    Prometheus data source reference pinned to the org's data source, links to dashboards
    the org does not have (the cross-tenant drill-down) dropped.

docs/grafana-tenants.md is the step by step.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

__all__ = [
    "DEFAULT_GATEWAY_URL",
    "ENV_NAME",
    "HEADER",
    "ProvisionError",
    "Provisioned",
    "TenantSecret",
    "datasource_uid",
    "pin_dashboard",
    "provision",
    "token_env_names",
]

HEADER = "X-Tenant-Token"
DEFAULT_GATEWAY_URL = "http://exporter:4318/tenant-api"
#: Where Grafana reads its provisioning directory (the providers' paths are under it).
DEFAULT_PROVISIONING_PATH = "/etc/grafana/provisioning"
#: Org 1 is Grafana's "Main Org." (the platform's own view): tenants start at 2.
FIRST_ORG_ID = 2
LANGUAGES = ("en", "zh")
PREFIX = "llm-tenant-"
DASHBOARDS_DIR = "llm-tenant-dashboards"
DATASOURCE_NAME = "LLM tokens"
#: The variables a tenant's copy of a dashboard no longer has.
PINNED_VARIABLES = ("tenant", "datasource")
#: What Grafana expands as ``$VAR`` in a provisioning file.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Grafana's variable syntaxes: $name, ${name}, ${name:format}, [[name]], [[name:format]].
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::([\w-]+))?\}|\[\[(\w+)(?::([\w-]+))?\]\]")
_DASHBOARD_URL = re.compile(r"/d/([A-Za-z0-9_-]+)")


class ProvisionError(Exception):
    """The provisioning cannot be written (a bad orgs.json, no dashboards, ...)."""


@dataclass(frozen=True)
class TenantSecret:
    """How a tenant's data source gets its gateway token: from Grafana's environment
    variable ``env``, or ``token`` in clear when the exporter config holds it in clear."""

    tenant: str
    env: str = ""
    token: str = field(default="", repr=False)


@dataclass
class Provisioned:
    """What :func:`provision` wrote: tenant -> org id, and what to tell the operator."""

    orgs: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- Names ---------------------------------------------------------------------------------


def _slug(tenant: str, limit: int) -> str:
    """A file name and Grafana uid part (letters, digits, - and _) naming ``tenant``; a
    tenant id with other characters (``. : @``) or too long gets a hash, so two never meet."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", tenant)
    if safe == tenant and len(safe) <= limit:
        return safe
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:8]
    return f"{safe[: limit - 9]}-{digest}"


def file_slug(tenant: str) -> str:
    return _slug(tenant, 64)


def datasource_uid(tenant: str) -> str:
    """The uid of the tenant's data source (Grafana uids: at most 40 characters)."""
    return "llm-gw-" + _slug(tenant, 33)


# -- The exporter config's token references ------------------------------------------------


def token_env_names(config_path: str | os.PathLike | None) -> dict[str, str]:
    """tenant -> the environment variable of its ``token_env`` in the config file's
    ``gateway.tenants`` (``token:`` tenants are not in it). The file is read as it is; its
    checks are load_config's (an unreadable file gives {} here and an error there)."""
    if config_path is None:
        return {}
    try:
        doc = yaml.safe_load(Path(config_path).read_bytes())
    except (OSError, yaml.YAMLError):
        return {}
    gateway = doc.get("gateway") if isinstance(doc, Mapping) else None
    tenants = gateway.get("tenants") if isinstance(gateway, Mapping) else None
    if not isinstance(tenants, Mapping):
        return {}
    return {str(name): spec["token_env"] for name, spec in tenants.items()
            if isinstance(spec, Mapping) and isinstance(spec.get("token_env"), str)}


def placeholder_token(var: str) -> str:
    """A stand-in for an unset ``token_env`` variable, so that the config loads where the
    secrets are not (CI): the data source only references the variable."""
    return f"unset-{hashlib.sha256(var.encode()).hexdigest()[:24]}"


# -- Dashboards ----------------------------------------------------------------------------


def _pin_text(text: str, values: Mapping[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(5)
        if name not in values:
            return m.group(0)  # $__range, $1 of label_replace, ...
        value = values[name]
        if fmt in (None, "raw", "text", "regex", "pipe", "csv", "singlequote", "doublequote"):
            if fmt == "singlequote":
                return f"'{value}'"
            if fmt == "doublequote":
                return f'"{value}"'
            return re.escape(value) if fmt == "regex" else value
        if fmt == "percentencode":
            return urllib.parse.quote(value, safe="")
        if fmt == "queryparam":
            return f"var-{name}={urllib.parse.quote(value, safe='')}"
        raise ProvisionError(f"unknown variable format ${{{name}:{fmt}}} in {text[:80]!r}")

    return _VARIABLE.sub(sub, text)


def _linked_uid(link: object) -> str | None:
    if not isinstance(link, Mapping) or not isinstance(link.get("url"), str):
        return None
    m = _DASHBOARD_URL.match(link["url"])
    return m.group(1) if m else None


def _walk(node: object, values: Mapping[str, str], uid: str, kept: frozenset[str]) -> object:
    if isinstance(node, str):
        return _pin_text(node, values)
    if isinstance(node, list):
        return [_walk(x, values, uid, kept) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "links" and isinstance(value, list):  # links to dashboards the org lacks
            value = [x for x in value if _linked_uid(x) in (None, *kept)]
        value = _walk(value, values, uid, kept)
        if key == "datasource" and isinstance(value, dict) and value.get("type") == "prometheus":
            value = {**value, "uid": uid}
        out[key] = value
    return out


def pin_dashboard(dashboard: Mapping, tenant: str, uid: str,
                  kept: Iterable[str] = ()) -> dict:
    """A tenant's copy of a dashboard: no ``tenant`` nor ``datasource`` variable, ``tenant``
    substituted everywhere, Prometheus references pinned to the data source ``uid``; links
    to a ``/d/<uid>`` not in ``kept`` (the dashboards the org has) dropped."""
    pinned = copy.deepcopy(dict(dashboard))
    templating = pinned.setdefault("templating", {})
    templating["list"] = [v for v in templating.get("list", [])
                          if v.get("name") not in PINNED_VARIABLES]
    values = {"tenant": tenant, "datasource": uid}
    pinned = _walk(pinned, values, uid, frozenset(kept))
    pinned["id"] = None
    return pinned


def tenant_dashboards(src: Path, languages: Sequence[str]) -> dict[str, dict[str, dict]]:
    """lang -> file name -> dashboard, of ``src/<lang>/llm-tenant-*.json``."""
    found: dict[str, dict[str, dict]] = {}
    for lang in languages:
        files = sorted((src / lang).glob(f"{PREFIX}*.json"))
        if not files:
            raise ProvisionError(f"no {PREFIX}*.json in {src / lang} (run "
                                 "python grafana/build_dashboards.py, or pass --dashboards)")
        found[lang] = {}
        for path in files:
            try:
                found[lang][path.name] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ProvisionError(f"{path}: {exc}") from None
    return found


# -- Org ids -------------------------------------------------------------------------------


def _read_orgs(path: Path) -> dict[str, int]:
    """tenant -> org id of an earlier run (its tenants and its retired ones)."""
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        entries = list(doc.get("orgs", [])) + list(doc.get("retired", []))
        ids = {str(e["tenant"]): int(e["orgId"]) for e in entries}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ProvisionError(f"{path}: not an orgs.json of grafana-provision ({exc}); "
                             "fix or remove it") from None
    if len(set(ids.values())) != len(ids) or any(i < FIRST_ORG_ID for i in ids.values()):
        raise ProvisionError(f"{path}: org ids must be distinct and at least {FIRST_ORG_ID}")
    return ids


def assign_org_ids(tenants: Sequence[str], earlier: Mapping[str, int]) -> dict[str, int]:
    """Earlier ids kept; a new tenant gets the next id after every id ever given (Grafana's
    org ids only grow: a deleted org's id is not given again)."""
    ids = {t: earlier[t] for t in tenants if t in earlier}
    next_id = max([FIRST_ORG_ID - 1, *earlier.values()]) + 1
    for t in tenants:
        if t not in ids:
            ids[t] = next_id
            next_id += 1
    return ids


# -- Files ---------------------------------------------------------------------------------


def _header(lines: Iterable[str]) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def _yaml(doc: object) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)


def datasource_file(tenant: str, org_id: int, secret: TenantSecret, gateway_url: str) -> str:
    if secret.env:
        value = f"${secret.env}"  # $VAR, not ${VAR}: a value with a $ is not expanded twice
        where = f"Grafana's environment variable {secret.env} (never this file)"
    else:
        value = secret.token.replace("$", "$$")  # a literal $ in a provisioning file is $$
        where = "THIS FILE, in clear (the exporter config has `token:`; prefer `token_env:`)"
    doc = {
        "apiVersion": 1,
        "datasources": [{
            "name": DATASOURCE_NAME,
            "uid": datasource_uid(tenant),
            "orgId": org_id,
            "type": "prometheus",
            "access": "proxy",
            "url": gateway_url,
            "isDefault": True,
            "editable": False,
            "jsonData": {
                "httpMethod": "POST",
                "timeInterval": "15s",
                "httpHeaderName1": HEADER,
                # the gateway answers queries only: no ruler, no alert manager
                "manageAlerts": False,
                "prometheusType": "Prometheus",
            },
            "secureJsonData": {"httpHeaderValue1": value},
        }],
    }
    return _header([
        f"Tenant {tenant}: org {org_id}'s only data source, the tenant query gateway",
        f"({HEADER} identifies the tenant; the gateway refuses any other tenant's series).",
        f"The token comes from {where}.",
        "Written by `llm-token-exporter grafana-provision`: edit the exporter config, not this.",
    ]) + _yaml(doc)


def provider_file(tenant: str, org_id: int, path: str) -> str:
    doc = {
        "apiVersion": 1,
        "providers": [{
            "name": f"{PREFIX}{file_slug(tenant)}",
            "orgId": org_id,
            "type": "file",
            "disableDeletion": True,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 60,
            "options": {"path": path, "foldersFromFilesStructure": True},
        }],
    }
    return _header([
        f"Tenant {tenant}: the tenant dashboards of org {org_id}, pinned to the tenant (no",
        "tenant variable) and to the org's gateway data source. Folders: en/, zh/.",
        "Written by `llm-token-exporter grafana-provision`.",
    ]) + _yaml(doc)


_SCRIPT = r"""#!/bin/sh
# Creates the Grafana organizations of the tenants (orgs.json), written by
# `llm-token-exporter grafana-provision`. Grafana cannot create orgs from provisioning files
# and refuses to start when a provisioning file names a missing org: run this BEFORE the
# tenants' provisioning files are where Grafana reads them.
#
#   GRAFANA_URL=http://127.0.0.1:3000 GRAFANA_USER=admin GRAFANA_PASSWORD=... \
#   GRAFANA_PROVISIONING_DIR=path/of/grafana/provisioning sh create-orgs.sh
#
# GRAFANA_USER must be a Grafana server admin (basic auth: creating orgs needs one).
# With GRAFANA_PROVISIONING_DIR (the host directory Grafana reads as its provisioning
# directory), the tenants' files are then copied there and Grafana reloads them; without
# it, copy provisioning/ there yourself and restart Grafana (or call the reload endpoints).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
url=${GRAFANA_URL:-http://127.0.0.1:3000}
auth="${GRAFANA_USER:-admin}:${GRAFANA_PASSWORD:?set GRAFANA_PASSWORD (a server admin's)}"
body=$(mktemp)
trap 'rm -f "$body"' EXIT

api() {  # METHOD PATH [JSON]: prints the HTTP status, the body goes to $body
    if [ $# -gt 2 ]; then
        curl -sS -o "$body" -w '%{http_code}' -u "$auth" -X "$1" \
            -H 'Content-Type: application/json' --data "$3" "$url$2"
    else
        curl -sS -o "$body" -w '%{http_code}' -u "$auth" -X "$1" "$url$2"
    fi
}

org() {  # ID NAME: the org ID must be NAME, created when missing
    status=$(api GET "/api/orgs/$1")
    if [ "$status" = 200 ]; then
        if ! tr -d ' \n' < "$body" | grep -qF "\"name\":\"$2\""; then
            echo "org $1 exists and is not named $2: $(cat "$body")" >&2
            echo "give tenant $2 another id in orgs.json, run grafana-provision again" >&2
            exit 1
        fi
        echo "org $1 ($2): exists"
        return
    fi
    [ "$status" = 404 ] || { echo "GET /api/orgs/$1: HTTP $status $(cat "$body")" >&2; exit 1; }
    status=$(api POST /api/orgs "{\"name\":\"$2\"}")
    [ "$status" = 200 ] || { echo "POST /api/orgs $2: HTTP $status $(cat "$body")" >&2; exit 1; }
    if ! tr -d ' \n"' < "$body" | grep -qE "(^|[{,])orgId:$1([,}]|$)"; then
        echo "Grafana gave org $2 another id than $1: $(cat "$body")" >&2
        echo "put that id in orgs.json for tenant $2, run grafana-provision again" >&2
        exit 1
    fi
    echo "org $1 ($2): created"
}

__ORGS__
if [ -n "${GRAFANA_PROVISIONING_DIR:-}" ]; then
    dest=$GRAFANA_PROVISIONING_DIR
    mkdir -p "$dest/datasources" "$dest/dashboards"
    rm -f "$dest"/datasources/llm-tenant-*.yaml "$dest"/dashboards/llm-tenant-*.yaml
    rm -rf "$dest/llm-tenant-dashboards"
    cp "$here"/provisioning/datasources/llm-tenant-*.yaml "$dest/datasources/"
    cp "$here"/provisioning/dashboards/llm-tenant-*.yaml "$dest/dashboards/"
    cp -R "$here/provisioning/llm-tenant-dashboards" "$dest/"
    for kind in datasources dashboards; do
        status=$(api POST "/api/admin/provisioning/$kind/reload")
        [ "$status" = 200 ] || { echo "reload $kind: HTTP $status $(cat "$body")" >&2; exit 1; }
        echo "reloaded $kind"
    done
fi
"""


def _script(orgs: Mapping[str, int]) -> str:
    lines = [f"org {org_id} '{tenant}'" for tenant, org_id in
             sorted(orgs.items(), key=lambda kv: kv[1])]
    return _SCRIPT.replace("__ORGS__", "\n".join(lines))


def _write(path: Path, text: str, files: list[Path], *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:  # created 0600: the token is never readable by others, not even briefly
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    files.append(path)


def provision(
    out: Path,
    tenants: Sequence[str],
    secrets: Mapping[str, TenantSecret],
    *,
    gateway_url: str = DEFAULT_GATEWAY_URL,
    languages: Sequence[str] = LANGUAGES,
    dashboards: Path,
    provisioning_path: str = DEFAULT_PROVISIONING_PATH,
) -> Provisioned:
    """Write the provisioning of every tenant of ``tenants`` (the directory's, in order)
    that has a secret; the others are warned about (the caller refuses them beforehand when
    strict). Earlier output under ``out`` is replaced; org ids are kept."""
    done = Provisioned()
    sources = tenant_dashboards(dashboards, languages)
    chosen = [t for t in tenants if t in secrets]
    done.warnings += [f"tenant {t}: no gateway token (gateway.tenants.{t} in the exporter "
                      "config): skipped" for t in tenants if t not in secrets]
    done.warnings += [f"gateway tenant {t} is not in the directory: skipped"
                      for t in secrets if t not in tenants]
    orgs_path = out / "orgs.json"
    earlier = _read_orgs(orgs_path)
    done.orgs = assign_org_ids(chosen, earlier)
    retired = {t: i for t, i in earlier.items() if t not in done.orgs}
    done.notes += [f"tenant {t} (org {i}) is no longer provisioned: delete its org in Grafana "
                   f"(DELETE /api/orgs/{i}), or it keeps its data source and dashboards"
                   for t, i in sorted(retired.items(), key=lambda kv: kv[1])]

    root = out / "provisioning"
    for sub in ("datasources", "dashboards"):
        for stale in (root / sub).glob(f"{PREFIX}*.yaml"):
            stale.unlink()
    shutil.rmtree(root / DASHBOARDS_DIR, ignore_errors=True)
    kept = frozenset(d.get("uid", "") for files in sources.values() for d in files.values())
    for tenant in chosen:
        org_id, secret, slug = done.orgs[tenant], secrets[tenant], file_slug(tenant)
        if not secret.env:
            done.warnings.append(
                f"tenant {tenant}: the exporter config holds its token in clear (token:), so "
                f"provisioning/datasources/{PREFIX}{slug}.yaml does too (mode 0600); use "
                "token_env: to write only a reference")
        _write(root / "datasources" / f"{PREFIX}{slug}.yaml",
               datasource_file(tenant, org_id, secret, gateway_url), done.files,
               private=not secret.env)
        grafana_dir = f"{provisioning_path.rstrip('/')}/{DASHBOARDS_DIR}/{slug}"
        _write(root / "dashboards" / f"{PREFIX}{slug}.yaml",
               provider_file(tenant, org_id, grafana_dir), done.files)
        for lang, files in sources.items():
            for name, dashboard in files.items():
                pinned = pin_dashboard(dashboard, tenant, datasource_uid(tenant), kept)
                text = json.dumps(pinned, indent=2, ensure_ascii=False) + "\n"
                _write(root / DASHBOARDS_DIR / slug / lang / name, text, done.files)

    doc = {
        "comment": "Grafana org per tenant, written by llm-token-exporter grafana-provision; "
                   "ids are kept by the next run (edit one when Grafana gave another)",
        "orgs": [{"tenant": t, "name": t, "orgId": i, "datasourceUid": datasource_uid(t)}
                 for t, i in sorted(done.orgs.items(), key=lambda kv: kv[1])],
        "retired": [{"tenant": t, "orgId": i}
                    for t, i in sorted(retired.items(), key=lambda kv: kv[1])],
    }
    _write(orgs_path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n", done.files)
    script = out / "create-orgs.sh"
    _write(script, _script(done.orgs), done.files)
    script.chmod(0o755)
    return done
