"""The Creator column of the agent and workflow details, when one person is spelled two
ways in two tenants.

A member id may belong to several tenants, each with its own display name. The creator is
joined on (tenant, member) against the asset's owner tenant; a creator who is not a member
of the owner tenant shows the one name all their tenants agree on, else their id. A join on
the member alone fails with "many-to-many matching not allowed" and blanks the column:
the last test shows that the old query does, on the same data.
"""

from __future__ import annotations

import pytest
import yaml

from tests.dashboard_grafana import DRILL, View, panel, rows
from tests.dashboard_world import backfilled_prometheus, openmetrics, sample
from tests.scenarios import agent, caller, chat, workflow

T = 1_760_000_000  # 2025-10-09 08:53:20 UTC
CREATED = "2025-10-01T08:00:00Z"

DIRECTORY = {
    "tenants": [
        {"id": "acme", "name": "Acme", "members": [
            {"id": "alice", "name": "Alice Wang"}, {"id": "bob", "name": "Bob Li"}]},
        {"id": "globex", "name": "Globex", "members": [
            {"id": "bob", "name": "Robert Li"}, {"id": "carol", "name": "Carol Chen"}]},
        {"id": "initech", "name": "Initech", "members": [{"id": "dana", "name": "Dana Scully"}]},
    ],
    "agents": [
        # (agent, owner, creator) -> the creator's name shown
        {"id": "acme-bot", "name": "Acme Bot", "owner_tenant": "acme", "creator": "bob",
         "created_at": CREATED},
        {"id": "globex-bot", "name": "Globex Bot", "owner_tenant": "globex", "creator": "bob",
         "created_at": CREATED},
        {"id": "helper", "name": "Helper", "owner_tenant": "initech", "creator": "carol",
         "created_at": CREATED},
        {"id": "orphan", "name": "Orphan", "owner_tenant": "initech", "creator": "bob",
         "created_at": CREATED},
        {"id": "ghost", "name": "Ghost", "owner_tenant": "acme", "creator": "former-dev",
         "created_at": CREATED},
    ],
    "workflows": [
        {"id": "acme-flow", "name": "Acme Flow", "owner_tenant": "acme", "creator": "bob",
         "created_at": CREATED},
        {"id": "globex-flow", "name": "Globex Flow", "owner_tenant": "globex",
         "creator": "bob", "created_at": CREATED},
    ],
}
CREATORS = {
    "Acme Bot": "Bob Li",  # bob as acme spells him
    "Globex Bot": "Robert Li",  # bob as globex spells him
    "Helper": "Carol Chen",  # not in initech; one name wherever she is
    "Orphan": "bob",  # not in initech; two names elsewhere: the id, not a guess
    "Ghost": "former-dev",  # in no tenant
    "Acme Flow": "Bob Li",
    "Globex Flow": "Robert Li",
}


def _calls(t) -> None:
    """alice (acme) calls every agent and workflow."""
    for i, a in enumerate(d["id"] for d in DIRECTORY["agents"]):
        with agent(t, a, **caller("alice", "acme")):
            chat(t, "gpt-4o", 100 + i, 10)
    for i, w in enumerate(d["id"] for d in DIRECTORY["workflows"]):
        with workflow(t, w, **caller("alice", "acme")):
            chat(t, "gpt-4o-mini", 200 + i, 20)


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("creators")
    directory = workdir / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    data = sample([(T - 1800, _calls)], list(range(T - 3600, T + 1, 60)), directory)
    server = backfilled_prometheus(workdir, openmetrics(data))
    try:
        yield server
    finally:
        server.stop()


VIEW = View(at=T, range_s=3600, tenant="acme")


@pytest.mark.parametrize(("title", "column"), [("Agent consumption detail", "Agent"),
                                               ("Workflow consumption detail", "Workflow")])
def test_each_creator_is_named_as_the_owner_tenant_spells_them(prom, title, column):
    table = rows(prom, panel(DRILL, title), VIEW)
    assert table, title
    assert {r[column]: r["Creator"] for r in table} == {
        name: creator for name, creator in CREATORS.items()
        if name in {r[column] for r in table}}
    assert len(table) == {"Agent": 5, "Workflow": 2}[column]
    assert all(r["Created at"] == CREATED for r in table)


def test_the_old_join_on_the_member_alone_fails_on_this_directory(prom):
    """The query before the fix, on the same data: Prometheus refuses it."""
    old = ('(label_replace(llm_agent_info, "member", "$1", "creator", "(.*)")) * on(member) '
           'group_left(creator_name) max by (member, creator_name) (label_replace('
           'llm_member_info, "creator_name", "$1", "name", "(.*)"))')
    with pytest.raises(AssertionError, match="many-to-many|duplicate series"):
        prom.query(old, T)
