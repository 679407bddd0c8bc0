"""The directory model: tenants, their members, and the assets (agents, workflows) they own.

A :class:`Directory` is an immutable snapshot, shared between threads without a lock.
:func:`parse_directory` validates an already decoded YAML/JSON document (the format:
``docs/directory.md``) and names the offending field. This module does no I/O and imports no I/O
library: reading, decoding and refreshing a directory is :mod:`otel_processor.directory_source`.
Attribution (R3, R5, R6) only reads a directory.
"""

from __future__ import annotations

import datetime as _dt
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from otel_processor.conventions import MAX_ID_LENGTH

KIND_AGENT = "agent"
KIND_ASSISTANT = "assistant"
KIND_WORKFLOW = "workflow"
KIND_CHATFLOW = "chatflow"
_MEMBER_EXTRAS = ("email", "mis", "phone", "avatar_url")
# The keys each mapping of the document may have (docs/directory.md); any other is refused.
_ROOT_KEYS = ("tenants", "agents", "workflows")
_TENANT_KEYS = ("id", "name", "members")
_MEMBER_KEYS = ("id", "name", *_MEMBER_EXTRAS)
_AGENT_KEYS = ("id", "name", "owner_tenant", "creator", "created_at", "kind")
_WORKFLOW_KEYS = ("id", "name", "owner_tenant", "kind", "agent", "creator", "created_at")
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
    """An agent or a workflow. ``kind`` is ``agent`` or ``assistant`` for an agent, ``workflow``
    or ``chatflow`` for a workflow; a chatflow's ``agent`` is the agent it powers (R5).
    ``created_at`` is ``YYYY-MM-DDTHH:MM:SSZ`` or ""."""

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


def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _mapping(value: object, path: str, known: tuple[str, ...]) -> Mapping:
    """``value`` as a mapping whose keys are all ``known``; an unknown key is refused with the
    near known key suggested (a misspelt key would otherwise be silently empty)."""
    if not isinstance(value, Mapping):
        raise DirectoryError(f"{path or 'directory'}: must be a mapping, got {_kind_of(value)}")
    for key in value:
        if key in known:
            continue
        shown = key if isinstance(key, str) and key.isprintable() else repr(key)
        guess = difflib.get_close_matches(str(key).lower(), known, n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        raise DirectoryError(f"{_field(path, shown)}: unknown key{hint}")
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
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A lone surrogate (what a JSON "\ud800" escape decodes to) has no UTF-8 form: a label
        # carrying it would break the whole /metrics exposition, not just its own series.
        raise DirectoryError(
            f"{path}: contains a lone surrogate U+{ord(text[exc.start]):04X} at character "
            f"{exc.start + 1}, which a metric label cannot carry"
        ) from None
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
    entry = _mapping(raw, path, _TENANT_KEYS)
    tenant_id = _text(entry.get("id"), f"{path}.id", required=True)
    members: dict[str, Member] = {}
    for j, raw_member in enumerate(_list(entry, "members", f"{path}.members")):
        where = f"{path}.members[{j}]"
        item = _mapping(raw_member, where, _MEMBER_KEYS)
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
        entry = _mapping(raw, path, _AGENT_KEYS if agents is None else _WORKFLOW_KEYS)
        asset_id = _text(entry.get("id"), f"{path}.id", required=True)
        if asset_id in assets:
            raise DirectoryError(f"{path}.id: duplicate {key[:-1]} id {asset_id!r}")
        owner = _text(entry.get("owner_tenant"), f"{path}.owner_tenant", required=True)
        if owner not in tenants:
            raise DirectoryError(f"{path}.owner_tenant: unknown tenant {owner!r}")
        agent = None
        if agents is None:
            kind = _text(entry.get("kind"), f"{path}.kind", default=KIND_AGENT)
            if kind not in (KIND_AGENT, KIND_ASSISTANT):
                raise DirectoryError(f"{path}.kind: must be agent or assistant, got {kind!r}")
        else:
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

    Raises :class:`DirectoryError` naming the first offending field: a key the format does not
    know (with the near known key suggested), a missing or ill-typed value, a duplicate id, a
    reference to an unknown tenant or agent, or text that a metric label cannot carry.
    """
    root = _mapping(doc, "", _ROOT_KEYS)
    tenants: dict[str, Tenant] = {}
    for i, raw in enumerate(_list(root, "tenants", "tenants", required=True)):
        tenant = _parse_tenant(raw, f"tenants[{i}]")
        if tenant.id in tenants:
            raise DirectoryError(f"tenants[{i}].id: duplicate tenant id {tenant.id!r}")
        tenants[tenant.id] = tenant
    agents = _parse_assets(root, "agents", tenants, None)
    workflows = _parse_assets(root, "workflows", tenants, agents)
    return Directory(tenants.values(), agents.values(), workflows.values())
