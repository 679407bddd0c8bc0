"""The directory: validation (table-driven), queries, the demo document, and its sources.

HTTP behaviour is exercised against a real server on 127.0.0.1, never a mock.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from otel_processor.conventions import MAX_ID_LENGTH
from otel_processor.directory import Directory, DirectoryError, Member, Tenant, parse_directory
from otel_processor.directory_source import (
    DirectorySource,
    default_directory_path,
    load_directory,
)

CASES = yaml.safe_load((Path(__file__).parent / "fixtures" / "directory_cases.yaml").read_text())
THREAD_NAME = "otel-processor-directory-refresh"

GOOD = """
tenants:
  - id: acme
    members: [{id: alice}, {id: bob}]
agents:
  - {id: support-bot, owner_tenant: acme}
workflows:
  - {id: support-chat, owner_tenant: acme, kind: chatflow, agent: support-bot}
"""
CHANGED = """
tenants:
  - id: acme
    members: [{id: alice}, {id: bob}, {id: zed}]
"""
INVALID = "tenants:\n  - id: acme\n    members: [{name: Nobody}]\n"


def _plain(directory: Directory) -> dict:
    """A directory as plain data, None fields left out (the fixture file's `expect` form)."""

    def fields(obj) -> dict:
        return {k: v for k, v in dataclasses.asdict(obj).items() if v is not None}

    tenants = [
        {"id": t.id, "name": t.name, "members": [fields(m) for m in t.members]}
        for t in directory.tenants.values()
    ]
    return {
        "tenants": tenants,
        "agents": [fields(a) for a in directory.agents.values()],
        "workflows": [fields(w) for w in directory.workflows.values()],
    }


@pytest.mark.parametrize("case", CASES["invalid"], ids=lambda c: c["name"])
def test_invalid_directory_is_refused_with_an_error_naming_the_field(case):
    with pytest.raises(DirectoryError) as info:
        parse_directory(case["doc"])
    assert str(info.value) == case["error"]


@pytest.mark.parametrize("case", CASES["valid"], ids=lambda c: c["name"])
def test_valid_directory_gives_exactly_the_expected_objects(case):
    assert _plain(parse_directory(case["doc"])) == case["expect"]


def test_fixture_case_names_are_unique():
    names = [c["name"] for c in CASES["invalid"] + CASES["valid"]]
    assert len(names) == len(set(names))


def test_id_longer_than_a_span_may_carry_is_refused():
    long_id = "a" * (MAX_ID_LENGTH + 1)
    with pytest.raises(DirectoryError) as info:
        parse_directory({"tenants": [{"id": "acme", "members": [{"id": long_id}]}]})
    assert str(info.value) == (f"tenants[0].members[0].id: longer than {MAX_ID_LENGTH} characters")
    ok = parse_directory({"tenants": [{"id": "a" * MAX_ID_LENGTH}]})
    assert list(ok.tenants) == ["a" * MAX_ID_LENGTH]


@pytest.mark.parametrize(
    ("field", "doc"),
    [
        ("tenants[0].id", r'{"tenants": [{"id": "acme\ud800"}]}'),
        ("tenants[0].name", r'{"tenants": [{"id": "acme", "name": "\ud800Acme"}]}'),
        (
            "tenants[0].members[0].email",
            r'{"tenants": [{"id": "acme", "members": [{"id": "alice", "email": "a\udfff@x"}]}]}',
        ),
        (
            "agents[0].creator",
            r'{"tenants": [{"id": "acme"}], '
            r'"agents": [{"id": "bot", "owner_tenant": "acme", "creator": "al\ud800ice"}]}',
        ),
    ],
    ids=["tenant_id", "tenant_name", "member_email", "agent_creator"],
)
def test_text_with_a_lone_surrogate_is_refused_naming_the_field(field, doc):
    # json.loads (and PyYAML) accept the escape; the label's UTF-8 encoding would not.
    with pytest.raises(DirectoryError) as info:
        parse_directory(json.loads(doc))
    assert str(info.value).startswith(f"{field}: contains a lone surrogate U+D")
    assert str(info.value).endswith(", which a metric label cannot carry")


def test_json_file_with_a_lone_surrogate_is_refused_and_a_surrogate_pair_is_one_character(
    tmp_path,
):
    lone = tmp_path / "lone.json"
    lone.write_text(r'{"tenants": [{"id": "acme", "members": [{"id": "al", "name": "A\ud800"}]}]}')
    with pytest.raises(DirectoryError) as info:
        load_directory(lone)
    assert str(info.value) == (
        f"{lone}: tenants[0].members[0].name: contains a lone surrogate U+D800 at character 2, "
        "which a metric label cannot carry"
    )
    pair = tmp_path / "pair.json"  # json.dumps escapes an emoji as a surrogate pair by default
    pair.write_text(json.dumps({"tenants": [{"id": "acme", "name": "Acme \U0001f600"}]}))
    assert r"\ud83d\ude00" in pair.read_text()
    assert load_directory(pair).tenants["acme"].name == "Acme \U0001f600"


def test_the_engine_the_model_the_rules_and_the_ledger_import_no_io_library():
    # The model, the rules and the ledger import no I/O library: they can be read, tested and
    # reused without a file, a network or a database.
    pure = ["directory", "prices", "conventions", "attribution", "ledger", "assembly", "engine"]
    io_libraries = ["requests", "yaml", "sqlite3", "urllib3", "flask"]
    code = (
        "import sys\n"
        + "".join(f"import otel_processor.{name}\n" for name in pure)
        + f"print(sorted(m for m in {io_libraries!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_member_of_two_tenants_is_a_member_of_both():
    d = parse_directory(
        {
            "tenants": [
                {"id": "initech", "members": [{"id": "erin"}]},
                {"id": "umbrella", "members": [{"id": "erin"}, {"id": "judy"}]},
            ]
        }
    )
    assert d.tenants_of("erin") == frozenset({"initech", "umbrella"})
    assert d.tenants_of("judy") == frozenset({"umbrella"})
    assert d.is_member("initech", "erin") and d.is_member("umbrella", "erin")
    assert not d.is_member("initech", "judy")


def test_queries_answer_from_the_parsed_document():
    d = parse_directory(yaml.safe_load(GOOD))
    assert d.tenants_of("alice") == frozenset({"acme"})
    assert d.tenants_of("dave") == frozenset()
    assert d.member("acme", "bob") == Member(id="bob", name="bob")
    assert d.member("acme", "dave") is None
    assert d.member("globex", "bob") is None
    assert d.chatflow_agent("support-chat") == "support-bot"
    assert d.is_chatflow("support-chat")
    assert d.chatflow_agent("unknown") is None and not d.is_chatflow("unknown")
    assert d.agent_owner("support-bot") == "acme"
    assert d.workflow_owner("support-chat") == "acme"
    assert d.agent_owner("ghost") == "" and d.workflow_owner("ghost") == ""


def test_empty_directory_knows_nobody():
    d = Directory.empty()
    assert (len(d.tenants), len(d.agents), len(d.workflows)) == (0, 0, 0)
    assert d.tenants_of("alice") == frozenset()
    assert not d.is_member("acme", "alice")
    assert d.agent_owner("support-bot") == ""


def test_directory_built_from_mappings_or_iterables_is_the_same():
    acme = Tenant("acme", "Acme", (Member("alice", "Alice"),))
    assert _plain(Directory({"acme": acme})) == _plain(Directory([acme]))


def test_directory_is_read_only():
    d = Directory([Tenant("acme", "Acme", (Member("alice", "Alice"),))])
    with pytest.raises(TypeError):
        d.tenants["globex"] = Tenant("globex", "Globex", ())  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.tenants["acme"].name = "Other"  # type: ignore[misc]


# --- the packaged demo directory ---------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> Directory:
    return load_directory(default_directory_path())


def test_demo_directory_ships_in_the_package():
    path = default_directory_path()
    assert path.name == "demo-directory.yaml"
    assert path.parent.parent.name == "otel_processor"
    assert path.is_file()


def test_demo_directory_contains_the_worked_example_exactly(demo):
    assert [m.id for m in demo.tenants["acme"].members] == ["alice", "bob"]
    assert [m.id for m in demo.tenants["globex"].members] == ["carol"]
    assert demo.tenants_of("alice") == demo.tenants_of("bob") == frozenset({"acme"})
    assert demo.tenants_of("carol") == frozenset({"globex"})
    assert demo.tenants_of("dave") == frozenset()
    owned = {
        tenant: sorted(a.id for a in assets if a.owner_tenant == tenant)
        for tenant in ("acme", "globex")
        for assets in [list(demo.agents.values()) + list(demo.workflows.values())]
    }
    assert owned == {
        "acme": ["summarize", "support-bot", "support-chat", "translate"],
        "globex": [],
    }
    assert demo.agents["support-bot"].kind == "agent"
    assert demo.chatflow_agent("support-chat") == "support-bot"
    for workflow in ("summarize", "translate"):
        assert demo.workflows[workflow].kind == "workflow"
        assert demo.chatflow_agent(workflow) is None


def test_demo_directory_has_a_realistic_rest(demo):
    sizes = {t.id: len(t.members) for t in demo.tenants.values()}
    assert sizes == {"acme": 2, "globex": 1, "initech": 5, "umbrella": 4}
    shared = {
        m
        for t in demo.tenants.values()
        for m in (x.id for x in t.members)
        if len(demo.tenants_of(m)) > 1
    }
    assert shared == {"erin"}  # nobody from the worked example: its R2 answers stay the same
    for tenant in demo.tenants.values():
        for member in tenant.members:
            assert member.name != member.id and member.email and member.mis and member.phone
    chatflows = {w.agent: w.id for w in demo.workflows.values() if w.kind == "chatflow"}
    assert set(chatflows) == set(demo.agents)  # every agent has its chat workflow
    for asset in list(demo.agents.values()) + list(demo.workflows.values()):
        assert asset.name != asset.id
        assert demo.is_member(asset.owner_tenant, asset.creator)
        assert asset.created_at.endswith("Z") and len(asset.created_at) == 20


# --- load_directory from files ------------------------------------------------------------


def test_load_directory_reads_json_and_yaml_files_alike(tmp_path):
    doc = yaml.safe_load(GOOD)
    (tmp_path / "d.json").write_text(json.dumps(doc))
    (tmp_path / "d.yml").write_text(GOOD)
    from_json = load_directory(tmp_path / "d.json")
    from_yaml = load_directory(str(tmp_path / "d.yml"))
    assert _plain(from_json) == _plain(from_yaml) == _plain(parse_directory(doc))


def test_load_directory_error_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(INVALID)
    with pytest.raises(DirectoryError) as info:
        load_directory(path)
    assert str(info.value) == f"{path}: tenants[0].members[0].id: required"


def test_load_directory_refuses_a_missing_file_and_broken_yaml(tmp_path):
    with pytest.raises(DirectoryError) as info:
        load_directory(tmp_path / "nowhere.yaml")
    assert str(info.value) == f"{tmp_path / 'nowhere.yaml'}: cannot read: No such file or directory"
    (tmp_path / "broken.yaml").write_text("tenants: [\n")
    with pytest.raises(DirectoryError) as info:
        load_directory(tmp_path / "broken.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'broken.yaml'}: not valid YAML or JSON: ")


# --- a real HTTP server --------------------------------------------------------------------


class DirectoryServer:
    """A real HTTP server on 127.0.0.1 serving one document whose answers the test sets."""

    def __init__(self) -> None:
        self.body = GOOD.encode()
        self.etag: str | None = '"v1"'
        self.status = 200
        self.delay = 0.0
        self.if_none_match: list[str | None] = []  # appended by the server thread, read after
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.if_none_match.append(self.headers.get("If-None-Match"))
                time.sleep(server.delay)
                try:
                    if server.etag is not None and self.headers.get("If-None-Match") == server.etag:
                        self.send_response(304)
                        self.send_header("ETag", server.etag)
                        self.end_headers()
                        return
                    self.send_response(server.status)
                    self.send_header("Content-Type", "application/yaml")
                    self.send_header("Content-Length", str(len(server.body)))
                    if server.etag is not None:
                        self.send_header("ETag", server.etag)
                    self.end_headers()
                    self.wfile.write(server.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout case)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/directory.yaml"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="test-directory-server",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server():
    s = DirectoryServer()
    yield s
    s.close()


@pytest.fixture
def clock():
    return FakeClock()


def test_url_source_loads_the_directory_and_records_the_success_time(server, clock):
    source = DirectorySource(server.url, clock=clock)
    assert not source.ready and source.current.tenants == {}
    assert source.refresh() is True
    assert source.ready
    assert source.current.chatflow_agent("support-chat") == "support-bot"
    assert (source.last_success, source.refresh_failures, source.last_error) == (1000.0, 0, None)


def test_unchanged_url_answers_304_and_the_directory_is_kept(server, clock):
    source = DirectorySource(server.url, clock=clock)
    source.refresh()
    first = source.current
    clock.now = 1060.0
    assert source.refresh() is True
    assert source.current is first
    assert source.last_success == 1060.0 and source.refresh_failures == 0
    assert server.if_none_match == [None, '"v1"']


def test_changed_url_document_replaces_the_directory_and_its_etag(server, clock):
    source = DirectorySource(server.url, clock=clock)
    source.refresh()
    server.body, server.etag = CHANGED.encode(), '"v2"'
    assert source.refresh() is True
    assert [m.id for m in source.current.tenants["acme"].members] == ["alice", "bob", "zed"]
    source.refresh()
    assert server.if_none_match == [None, '"v1"', '"v2"']


def _break_with_status_500(server):
    server.status = 500


def _break_with_invalid_yaml(server):
    server.body = b"tenants: [\n"


def _break_with_invalid_directory(server):
    server.body = b"tenants: [{id: acme}]\nworkflows: [{id: w, owner_tenant: acme, kind: chatflow}]"


def _break_with_timeout(server):
    server.delay = 1.0


@pytest.mark.parametrize(
    ("breakage", "error"),
    [
        (_break_with_status_500, "{url}: HTTP 500"),
        (_break_with_invalid_yaml, "{url}: not valid YAML or JSON: "),
        (_break_with_invalid_directory, "{url}: workflows[0].agent: required for kind chatflow"),
        (_break_with_timeout, "{url}: ReadTimeout: "),
    ],
    ids=["status_500", "invalid_yaml", "invalid_directory", "timeout"],
)
def test_refresh_failure_keeps_last_good_directory_and_counts_it(
    server, clock, caplog, breakage, error
):
    source = DirectorySource(server.url, clock=clock, timeout=0.2)
    assert source.refresh()
    good = source.current
    breakage(server)
    server.etag = '"v2"'  # no 304 for the client's "v1": the broken answer must be read
    clock.now = 2000.0
    with caplog.at_level(logging.WARNING, logger="otel_processor.directory_source"):
        assert source.refresh() is False
    assert source.current is good and source.ready
    assert source.refresh_failures == 1
    assert source.last_success == 1000.0
    expected = error.format(url=server.url)
    if expected.endswith(": "):
        assert source.last_error.startswith(expected)
    else:
        assert source.last_error == expected
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert server.url in caplog.records[0].getMessage()


def test_failure_log_says_whether_a_directory_was_ever_loaded(server, clock, caplog):
    server.status = 503
    source = DirectorySource(server.url, clock=clock)
    with caplog.at_level(logging.WARNING, logger="otel_processor.directory_source"):
        source.refresh()
        server.status = 200
        source.refresh()
        server.status, server.etag = 500, '"v2"'
        source.refresh()
    assert [r.getMessage() for r in caplog.records] == [
        f"directory not loaded (no directory has loaded yet; spans wait): {server.url}: HTTP 503",
        f"directory not loaded, last good kept: {server.url}: HTTP 500",
    ]


def test_describe_names_the_source_without_credentials(tmp_path):
    url = "https://reader:s3cret@hr.example:8443/d.yaml?token=abc123#top"
    assert DirectorySource(url).describe() == "https://hr.example:8443/d.yaml?<redacted>"
    assert DirectorySource(tmp_path / "d.yaml").describe() == str(tmp_path / "d.yaml")
    assert DirectorySource(Directory.empty()).describe() == "<in-memory directory>"


def test_failures_before_the_first_success_leave_the_source_not_ready(server, clock):
    server.status = 503
    source = DirectorySource(server.url, clock=clock)
    assert source.refresh() is False and source.refresh() is False
    assert not source.ready and source.last_success is None
    assert source.current.tenants == {}
    assert source.refresh_failures == 2
    server.status = 200
    assert source.refresh() is True and source.ready
    assert source.last_error is None


def test_credentials_in_the_url_stay_out_of_errors(server, clock):
    server.status = 500
    url = server.url.replace("http://", "http://reader:s3cret@") + "?token=abc123"
    source = DirectorySource(url, clock=clock)
    source.refresh()
    assert (
        source.last_error
        == server.url.replace("/directory.yaml", "/directory.yaml?<redacted>") + ": HTTP 500"
    )


class BrokenSession:
    """A session whose transport fails in a way requests never would."""

    def get(self, url, **kwargs):
        raise RuntimeError("transport exploded")


def test_refresh_never_raises_even_when_the_session_breaks(clock):
    source = DirectorySource(
        "https://directory.example/d.yaml", session=BrokenSession(), clock=clock
    )
    assert source.refresh() is False
    assert source.refresh_failures == 1
    assert (
        source.last_error == "https://directory.example/d.yaml: RuntimeError: transport exploded"
    )


def test_load_directory_reads_a_url_and_refuses_a_non_2xx_answer(server):
    assert _plain(load_directory(server.url)) == _plain(parse_directory(yaml.safe_load(GOOD)))
    server.status = 404
    server.etag = None
    with pytest.raises(DirectoryError) as info:
        load_directory(server.url)
    assert str(info.value) == f"{server.url}: HTTP 404"


# --- file sources --------------------------------------------------------------------------


def test_file_that_becomes_invalid_keeps_the_last_good_directory(tmp_path, clock):
    path = tmp_path / "directory.yaml"
    path.write_text(GOOD)
    source = DirectorySource(path, clock=clock)
    assert source.refresh()
    good = source.current
    path.write_text(INVALID)
    clock.now = 2000.0
    assert source.refresh() is False
    assert source.current is good
    assert source.refresh_failures == 1 and source.last_success == 1000.0
    assert source.last_error == f"{path}: tenants[0].members[0].id: required"


def _rewrite_keeping_mtime(path: Path, text: str) -> None:
    before = path.stat()
    path.write_text(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_poll_rereads_a_file_only_when_its_mtime_or_size_changed(tmp_path, clock):
    path = tmp_path / "directory.yaml"
    path.write_text(GOOD)
    source = DirectorySource(path, clock=clock)
    assert source.poll()
    first = source.current
    _rewrite_keeping_mtime(path, GOOD.replace("bob", "eve"))  # same size, same mtime
    clock.now = 1060.0
    assert source.poll() is True  # unchanged and good: still in force, still fresh
    assert source.current is first and source.last_success == 1060.0
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert source.poll() is True
    assert [m.id for m in source.current.tenants["acme"].members] == ["alice", "eve"]


def test_refresh_rereads_a_file_even_when_unchanged_on_the_surface(tmp_path, clock):
    path = tmp_path / "directory.yaml"
    path.write_text(GOOD)
    source = DirectorySource(path, clock=clock)
    source.refresh()
    _rewrite_keeping_mtime(path, GOOD.replace("bob", "eve"))
    assert source.refresh() is True
    assert [m.id for m in source.current.tenants["acme"].members] == ["alice", "eve"]


def test_unchanged_invalid_file_is_counted_once(tmp_path, clock):
    path = tmp_path / "directory.yaml"
    path.write_text(GOOD)
    source = DirectorySource(path, clock=clock)
    source.poll()
    path.write_text(INVALID)
    assert source.poll() is False and source.poll() is False
    assert source.refresh_failures == 1 and source.last_success == 1000.0
    path.write_text(CHANGED)
    assert source.poll() is True
    assert source.current.is_member("acme", "zed") and source.last_error is None


def test_missing_file_is_a_counted_failure(tmp_path, clock):
    source = DirectorySource(tmp_path / "absent.yaml", clock=clock)
    assert source.poll() is False and source.poll() is False
    assert source.refresh_failures == 2 and not source.ready
    assert (
        source.last_error == f"{tmp_path / 'absent.yaml'}: cannot read: No such file or directory"
    )


def test_directory_object_source_is_ready_and_starts_no_thread(clock):
    directory = parse_directory(yaml.safe_load(GOOD))
    source = DirectorySource(directory, clock=clock)
    assert source.ready and source.current is directory and source.last_success == 1000.0
    source.start()
    assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]
    clock.now = 1100.0
    assert source.refresh() is True and source.last_success == 1100.0
    source.stop()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), True, "60"])
def test_refresh_interval_must_be_a_positive_number(bad, tmp_path):
    with pytest.raises(ValueError) as info:
        DirectorySource(tmp_path / "d.yaml", refresh_interval=bad)
    assert str(info.value) == f"refresh_interval: must be a positive number of seconds, got {bad!r}"


# --- the background thread -----------------------------------------------------------------


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _refresh_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_start_runs_one_named_daemonic_thread_and_stop_is_idempotent(tmp_path):
    path = tmp_path / "directory.yaml"
    path.write_text(GOOD)
    source = DirectorySource(path, refresh_interval=0.05)
    source.start()
    source.start()
    try:
        threads = _refresh_threads()
        assert len(threads) == 1 and threads[0].daemon
        assert _wait_until(lambda: source.ready)
    finally:
        source.stop()
        source.stop()
    assert _refresh_threads() == []


def test_background_thread_picks_up_a_changed_file(tmp_path):
    path = tmp_path / "directory.yaml"
    path.write_text(GOOD)
    source = DirectorySource(path, refresh_interval=0.02)
    source.start()
    try:
        assert _wait_until(lambda: source.ready)
        path.write_text(CHANGED)
        assert _wait_until(lambda: source.current.is_member("acme", "zed"))
    finally:
        source.stop()
    assert source.refresh_failures == 0


def test_source_can_be_started_again_after_stop(server):
    source = DirectorySource(server.url, refresh_interval=0.02)
    source.start()
    source.stop()
    source.start()
    try:
        assert _wait_until(lambda: source.ready)
        assert len(_refresh_threads()) == 1
    finally:
        source.stop()
