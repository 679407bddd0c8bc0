"""The directory: tenants, their members, and the assets (agents, workflows) they own.

A :class:`Directory` is an immutable snapshot, shared between threads without a lock.
:func:`parse_directory` validates a decoded YAML/JSON document (``contract.md``, "Directory")
and names the offending field. :class:`DirectorySource` keeps the last good directory in force
while it refreshes from a file or an http(s) URL. Attribution (R3, R5, R6) only reads it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.resources
import logging
import os
import pathlib
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import requests
import yaml

from otel_processor.conventions import MAX_ID_LENGTH

logger = logging.getLogger(__name__)

KIND_AGENT = "agent"
KIND_WORKFLOW = "workflow"
KIND_CHATFLOW = "chatflow"
#: A directory document larger than this is refused (a misconfigured URL, not a directory).
MAX_DOCUMENT_BYTES = 64 * 2**20
_THREAD_NAME = "otel-processor-directory-refresh"
_MEMBER_EXTRAS = ("email", "mis", "phone", "avatar_url")
_NO_TENANTS: frozenset[str] = frozenset()


class DirectoryError(ValueError):
    """An unreadable or invalid directory; the message names the field, e.g.
    ``tenants[0].members[2].id: required``."""


@dataclass(frozen=True, slots=True)
class Member:
    """A member of one tenant; ``id`` is the caller id that spans carry."""

    id: str
    name: str
    email: str | None = None
    mis: str | None = None
    phone: str | None = None
    avatar_url: str | None = None


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant and its members (in document order)."""

    id: str
    name: str
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Asset:
    """An agent or a workflow. ``kind`` is ``agent``, ``workflow`` or ``chatflow``; a chatflow's
    ``agent`` is the agent it powers (R5). ``created_at`` is ``YYYY-MM-DDTHH:MM:SSZ`` or ""."""

    id: str
    name: str
    owner_tenant: str
    creator: str
    created_at: str
    kind: str
    agent: str | None = None


def _values(items: Iterable | Mapping) -> Iterable:
    return items.values() if isinstance(items, Mapping) else items


class Directory:
    """An immutable snapshot of tenants, members and assets; every query is one dict lookup.

    Build it with :func:`parse_directory` (validated), or from already valid objects
    (iterables of, or mappings by id to, :class:`Tenant` and :class:`Asset`).
    """

    __slots__ = ("tenants", "agents", "workflows", "_members", "_tenants_of")

    def __init__(
        self,
        tenants: Iterable[Tenant] = (),
        agents: Iterable[Asset] = (),
        workflows: Iterable[Asset] = (),
    ) -> None:
        # Everything is built here and never mutated afterwards: read-only, no lock needed.
        self.tenants: Mapping[str, Tenant] = MappingProxyType({t.id: t for t in _values(tenants)})
        self.agents: Mapping[str, Asset] = MappingProxyType({a.id: a for a in _values(agents)})
        self.workflows: Mapping[str, Asset] = MappingProxyType(
            {w.id: w for w in _values(workflows)}
        )
        members: dict[tuple[str, str], Member] = {}
        tenants_of: dict[str, set[str]] = {}
        for tenant in self.tenants.values():
            for member in tenant.members:
                members[(tenant.id, member.id)] = member
                tenants_of.setdefault(member.id, set()).add(tenant.id)
        self._members = members
        self._tenants_of = {m: frozenset(ts) for m, ts in tenants_of.items()}

    @classmethod
    def empty(cls) -> Directory:
        """A directory with nothing in it: every caller is a member of no tenant."""
        return cls()

    def tenants_of(self, member_id: str) -> frozenset[str]:
        """The tenants ``member_id`` is a member of (empty when none)."""
        return self._tenants_of.get(member_id, _NO_TENANTS)

    def is_member(self, tenant_id: str, member_id: str) -> bool:
        """Whether ``member_id`` is a member of ``tenant_id`` (R3)."""
        return (tenant_id, member_id) in self._members

    def member(self, tenant_id: str, member_id: str) -> Member | None:
        """The member entry of ``member_id`` in ``tenant_id``, or None."""
        return self._members.get((tenant_id, member_id))

    def chatflow_agent(self, workflow_id: str) -> str | None:
        """The agent a chat workflow is bound to (R5); None for anything else."""
        workflow = self.workflows.get(workflow_id)
        if workflow is None or workflow.kind != KIND_CHATFLOW:
            return None
        return workflow.agent

    def is_chatflow(self, workflow_id: str) -> bool:
        """Whether the directory declares ``workflow_id`` a chat workflow."""
        workflow = self.workflows.get(workflow_id)
        return workflow is not None and workflow.kind == KIND_CHATFLOW

    def agent_owner(self, agent_id: str) -> str:
        """The agent's owner tenant; "" when the agent is unknown (R6)."""
        agent = self.agents.get(agent_id)
        return agent.owner_tenant if agent is not None else ""

    def workflow_owner(self, workflow_id: str) -> str:
        """The workflow's owner tenant; "" when the workflow is unknown (R6)."""
        workflow = self.workflows.get(workflow_id)
        return workflow.owner_tenant if workflow is not None else ""

    def __repr__(self) -> str:
        return (
            f"Directory({len(self.tenants)} tenants, {len(self._members)} memberships, "
            f"{len(self.agents)} agents, {len(self.workflows)} workflows)"
        )


def _kind_of(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _mapping(value: object, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise DirectoryError(f"{path}: must be a mapping, got {_kind_of(value)}")
    return value


def _list(doc: Mapping, key: str, path: str, *, required: bool = False) -> list:
    value = doc.get(key)
    if value is None:
        if required:
            raise DirectoryError(f"{path}: required")
        return []
    if not isinstance(value, list):
        raise DirectoryError(f"{path}: must be a list, got {_kind_of(value)}")
    return value


def _text(value: object, path: str, *, required: bool = False, default: str | None = None):
    """A string (an int is taken as its decimal text); ids are required and bounded."""
    if value is None:
        if required:
            raise DirectoryError(f"{path}: required")
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DirectoryError(f"{path}: must be a string, got {_kind_of(value)}")
    text = str(value).strip()
    if not text:
        if required:
            raise DirectoryError(f"{path}: must not be empty")
        return default
    if required and len(text) > MAX_ID_LENGTH:
        # conventions.py refuses longer ids on spans: such an entry could never match.
        raise DirectoryError(f"{path}: longer than {MAX_ID_LENGTH} characters")
    return text


def _timestamp(value: object, path: str) -> str:
    """ISO 8601 (a string, or a timestamp YAML already decoded) -> ``YYYY-MM-DDTHH:MM:SSZ``."""
    if value is None or value == "":
        return ""
    bad = DirectoryError(f"{path}: must be an ISO 8601 timestamp, got {value!r:.60}")
    if isinstance(value, _dt.datetime):
        moment = value
    elif isinstance(value, _dt.date):
        moment = _dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"  # Python 3.10's fromisoformat does not read "Z"
        try:
            moment = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise bad from None
    else:
        raise bad
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)  # a naive time is taken as UTC
    try:
        moment = moment.astimezone(_dt.timezone.utc)
    except OverflowError:
        raise bad from None
    return moment.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def _parse_tenant(raw: object, path: str) -> Tenant:
    entry = _mapping(raw, path)
    tenant_id = _text(entry.get("id"), f"{path}.id", required=True)
    members: dict[str, Member] = {}
    for j, raw_member in enumerate(_list(entry, "members", f"{path}.members")):
        where = f"{path}.members[{j}]"
        item = _mapping(raw_member, where)
        member_id = _text(item.get("id"), f"{where}.id", required=True)
        if member_id in members:
            raise DirectoryError(
                f"{where}.id: duplicate member id {member_id!r} in tenant {tenant_id!r}"
            )
        extras = {key: _text(item.get(key), f"{where}.{key}") for key in _MEMBER_EXTRAS}
        name = _text(item.get("name"), f"{where}.name", default=member_id)
        members[member_id] = Member(member_id, name, **extras)
    name = _text(entry.get("name"), f"{path}.name", default=tenant_id)
    return Tenant(tenant_id, name, tuple(members.values()))


def _parse_assets(
    root: Mapping, key: str, tenants: Mapping[str, Tenant], agents: Mapping[str, Asset] | None
) -> dict[str, Asset]:
    """``agents`` is None while parsing the agents themselves, else the agents parsed."""
    assets: dict[str, Asset] = {}
    for i, raw in enumerate(_list(root, key, key)):
        path = f"{key}[{i}]"
        entry = _mapping(raw, path)
        asset_id = _text(entry.get("id"), f"{path}.id", required=True)
        if asset_id in assets:
            raise DirectoryError(f"{path}.id: duplicate {key[:-1]} id {asset_id!r}")
        owner = _text(entry.get("owner_tenant"), f"{path}.owner_tenant", required=True)
        if owner not in tenants:
            raise DirectoryError(f"{path}.owner_tenant: unknown tenant {owner!r}")
        kind, agent = KIND_AGENT, None
        if agents is not None:
            kind = _text(entry.get("kind"), f"{path}.kind", default=KIND_WORKFLOW)
            if kind not in (KIND_WORKFLOW, KIND_CHATFLOW):
                raise DirectoryError(f"{path}.kind: must be workflow or chatflow, got {kind!r}")
            # Only a chatflow binds to an agent; a regular workflow's `agent` key is ignored.
            if kind == KIND_CHATFLOW:
                agent = _text(entry.get("agent"), f"{path}.agent")
                if agent is None:
                    raise DirectoryError(f"{path}.agent: required for kind chatflow")
                if agent not in agents:
                    raise DirectoryError(f"{path}.agent: unknown agent {agent!r}")
        assets[asset_id] = Asset(
            id=asset_id,
            name=_text(entry.get("name"), f"{path}.name", default=asset_id),
            owner_tenant=owner,
            creator=_text(entry.get("creator"), f"{path}.creator", default=""),
            created_at=_timestamp(entry.get("created_at"), f"{path}.created_at"),
            kind=kind,
            agent=agent,
        )
    return assets


def parse_directory(doc: object) -> Directory:
    """Validate a decoded YAML/JSON document and build a :class:`Directory`.

    Raises :class:`DirectoryError` naming the first offending field. Unknown keys are ignored.
    """
    root = _mapping(doc, "directory")
    tenants: dict[str, Tenant] = {}
    for i, raw in enumerate(_list(root, "tenants", "tenants", required=True)):
        tenant = _parse_tenant(raw, f"tenants[{i}]")
        if tenant.id in tenants:
            raise DirectoryError(f"tenants[{i}].id: duplicate tenant id {tenant.id!r}")
        tenants[tenant.id] = tenant
    agents = _parse_assets(root, "agents", tenants, None)
    workflows = _parse_assets(root, "workflows", tenants, agents)
    return Directory(tenants.values(), agents.values(), workflows.values())


def _is_url(source: str) -> bool:
    return source[:8].lower().startswith(("http://", "https://"))


def _describe(source: str) -> str:
    """The source for logs and errors, without credentials (userinfo, query string)."""
    if not _is_url(source):
        return source
    parts = urllib.parse.urlsplit(source)
    query = "<redacted>" if parts.query else ""
    return urllib.parse.urlunsplit(
        parts._replace(netloc=parts.netloc.rpartition("@")[2], query=query, fragment="")
    )


def _decode(data: bytes, where: str) -> Directory:
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise DirectoryError(f"{where}: not valid YAML or JSON: {detail}") from None
    try:
        return parse_directory(doc)
    except DirectoryError as exc:
        raise DirectoryError(f"{where}: {exc}") from None


def _read_file(path: str, where: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise DirectoryError(f"{where}: cannot read: {exc.strerror or exc}") from None


def _http_get(session, url: str, timeout: float, etag: str | None, where: str):
    """GET ``url`` -> (body, etag); body is None for 304 Not Modified."""
    headers = {"Accept": "application/yaml, application/json;q=0.9, */*;q=0.5"}
    if etag:
        headers["If-None-Match"] = etag
    try:
        with session.get(url, timeout=timeout, headers=headers, stream=True) as response:
            if response.status_code == 304:
                return None, response.headers.get("ETag") or etag
            if not 200 <= response.status_code < 300:
                raise DirectoryError(f"{where}: HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_content(65536):
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise DirectoryError(f"{where}: larger than {MAX_DOCUMENT_BYTES} bytes")
            return bytes(body), response.headers.get("ETag")
    except requests.RequestException as exc:
        raise DirectoryError(f"{where}: {type(exc).__name__}: {exc}") from None


def load_directory(
    source: str | os.PathLike, *, timeout: float = 10.0, session: requests.Session | None = None
) -> Directory:
    """Load and validate a directory from a YAML/JSON file or an http(s) URL.

    Raises :class:`DirectoryError` for any failure; the message starts with the source.
    """
    text = os.fspath(source)
    where = _describe(text)
    if _is_url(text):
        body, _ = _http_get(session or requests, text, timeout, None, where)
    else:
        body = _read_file(text, where)
    return _decode(body, where)


def default_directory_path() -> pathlib.Path:
    """The demo directory shipped in the package (``attribution.md``'s worked example and more)."""
    return pathlib.Path(
        str(importlib.resources.files("otel_processor").joinpath("data", "demo-directory.yaml"))
    )


class DirectorySource:
    """A directory from a file or an http(s) URL; the last good document stays in force.

    A failed load (unreadable, non-2xx, not YAML/JSON, invalid) is counted and logged, never
    raised. A URL is polled with ``If-None-Match``; 304 keeps the current directory and counts as
    success. A :class:`Directory` given directly is served as is (no thread, always ready).
    """

    def __init__(
        self,
        source: str | os.PathLike | Directory,
        *,
        refresh_interval: float = 60.0,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for field, value in (("refresh_interval", refresh_interval), ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{field}: must be a positive number of seconds, got {value!r}")
        self._interval, self._timeout, self._clock = float(refresh_interval), float(timeout), clock
        self._static = source if isinstance(source, Directory) else None
        self._source = "" if self._static is not None else os.fspath(source)
        self._url = _is_url(self._source)
        self._where = _describe(self._source) or "<in-memory directory>"
        self._session = session or requests.Session()  # reused between polls: keep-alive
        # Swapped whole by a successful load (one reference store, atomic): readers take no lock.
        self._current = self._static if self._static is not None else Directory.empty()
        # Serialises loads; guards _etag, _file_seen, _file_ok and the three health fields below
        # (written under it, read without it: each is one attribute read).
        self._load_lock = threading.Lock()
        self._etag: str | None = None
        self._file_seen: tuple[int, int] | None = None  # (mtime_ns, size) of the last file read
        self._file_ok = False
        self.refresh_failures = 0
        self.last_success: float | None = clock() if self._static is not None else None
        self.last_error: str | None = None
        # Guards _thread and _stop_event (start/stop may come from any thread).
        self._thread_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()

    @property
    def current(self) -> Directory:
        """The last good directory (:meth:`Directory.empty` until the first success)."""
        return self._current

    @property
    def ready(self) -> bool:
        """Whether a directory has been loaded at least once."""
        return self.last_success is not None

    def refresh(self) -> bool:
        """Load now (a file is always re-read); True on success, a 304 included. Never raises."""
        return self._load(force=True)

    def poll(self) -> bool:
        """What the background thread does each interval: like :meth:`refresh`, but a file is
        re-read only when its mtime or size changed. An unchanged file that failed before
        returns False without counting the failure again."""
        return self._load(force=False)

    def _load(self, *, force: bool) -> bool:
        if self._static is not None:
            self.last_success = self._clock()
            return True
        with self._load_lock:
            try:
                if self._url:
                    self._load_url()
                elif not self._load_file(force) and not self._file_ok:
                    return False  # unchanged since it failed: nothing new to count
            except Exception as exc:  # never raise: a bad directory must not stop the service
                self.refresh_failures += 1
                known = isinstance(exc, DirectoryError)
                self.last_error = str(exc) if known else f"{self._where}: {exc!r}"
                logger.warning("directory not loaded, last good kept: %s", self.last_error)
                return False
            self.last_success, self.last_error = self._clock(), None
            return True

    def _load_url(self) -> None:
        etag = self._etag if self.ready else None
        body, etag = _http_get(self._session, self._source, self._timeout, etag, self._where)
        if body is not None:
            self._current, self._etag = _decode(body, self._where), etag
        elif not self.ready:
            raise DirectoryError(f"{self._where}: 304 Not Modified without a cached document")

    def _load_file(self, force: bool) -> bool:
        """Read the file when forced or changed; False when it was left unread."""
        try:
            stat = os.stat(self._source)
        except OSError as exc:
            raise DirectoryError(f"{self._where}: cannot read: {exc.strerror}") from None
        seen = (stat.st_mtime_ns, stat.st_size)
        if not force and seen == self._file_seen:
            return False
        # Stat before read: a write racing the read changes mtime, so the next poll reads again.
        self._file_seen, self._file_ok = seen, False
        self._current = _decode(_read_file(self._source, self._where), self._where)
        self._file_ok = True
        return True

    def _run(self, stop: threading.Event) -> None:
        if not self.ready:
            self.poll()
        while not stop.wait(self._interval):
            self.poll()

    def start(self) -> None:
        """Refresh every ``refresh_interval`` in a named daemonic thread; idempotent."""
        if self._static is not None:
            return
        with self._thread_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop_event = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop_event,), name=_THREAD_NAME, daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the background thread and join it; idempotent."""
        with self._thread_lock:
            thread, self._thread = self._thread, None
            self._stop_event.set()
        if thread is not None and thread is not threading.current_thread():
            # A load in flight ends within its own timeout; the thread is daemonic regardless.
            thread.join(self._timeout + 5.0)
