"""What the README and the user docs promise: their commands run as written, and every name
they give is real (config keys, span attributes, directory keys, links).

The README's first command is run for real, in a copy of the repository, in a fresh
virtualenv of the system's ``python3`` (on Debian, the distribution's externally managed
Python, PEP 668): what a newcomer types first. It installs from the package index as any
``pip install`` does; the demo it runs serves on 127.0.0.1 only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.config import CONFIG_ENV, ENV_PREFIX, Config
from otel_processor import conventions, directory
from otel_processor.directory import parse_directory

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: The user docs this repository ships, besides the README (docs/ and its index).
DOCS = sorted((ROOT / "docs").glob("*.md"))
#: Where a user reads the names this file checks.
USER_TEXTS = [README, *DOCS, ROOT / "exporter" / "data" / "example-config.yaml"]
#: The system's python3 on Debian and Ubuntu, where `pip install` outside a venv is refused.
SYSTEM_PYTHON = Path("/usr/bin/python3")
INSTALL_TIMEOUT = 900  # seconds: a fresh venv installs every dependency from the index


def _first_block(text: str) -> list[str]:
    """The commands of the README's first fenced code block (comments and blanks left out)."""
    block = re.search(r"^```\w*\n(.*?)^```", text, re.M | re.S)
    assert block, "README.md has no code block"
    return [line.strip() for line in block.group(1).splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _commands() -> tuple[str, str]:
    commands = _first_block(README.read_text())
    assert len(commands) == 2, commands
    return commands[0], commands[1]


def test_the_readme_starts_with_install_and_demo_then_the_tests_both_in_a_virtualenv():
    install, tests = _commands()
    assert install.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert install.endswith("pip install -e . && llm-token-exporter demo")
    assert tests.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert tests.endswith("make test")


def test_ci_runs_the_readmes_test_command_as_written():
    _, tests = _commands()
    script = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in script.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == tests, "the last command of .ci/run is the README's test command"
    # inside the virtualenv, nothing needs to override PEP 668
    assert "PIP_BREAK_SYSTEM_PACKAGES" not in script


#: What a copy leaves out when the tree is not a git checkout (what .gitignore ignores),
#: anywhere, and at the top only.
_NOT_SOURCE = (".git", ".venv", ".venvs", "__pycache__", "*.egg-info", ".pytest_cache",
               ".ruff_cache", ".hypothesis", "node_modules")
_NOT_SOURCE_AT_TOP = {"build", "dist", "data"}


def _ignored(directory: str, names: list[str]) -> set[str]:
    ignored = shutil.ignore_patterns(*_NOT_SOURCE)(directory, names)
    if Path(directory) == ROOT:
        ignored |= _NOT_SOURCE_AT_TOP & set(names)
    return ignored


def _repository_copy(into: Path) -> Path:
    """The files a clone would have (tracked, plus new files not ignored) copied to ``into``."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, timeout=60,
    )
    if listing.returncode != 0:  # a source tree that is no git checkout
        shutil.copytree(ROOT, into, ignore=_ignored)
        return into
    listed = listing.stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is left out
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


def _system_python_path() -> str:
    """A PATH whose python3 is the system's, as a newcomer's shell has it (no pyenv shims,
    no virtualenv); where there is no /usr/bin/python3, the interpreter running the tests'
    base installation."""
    if SYSTEM_PYTHON.exists():
        return "/usr/bin:/bin"
    return os.pathsep.join([str(Path(sys.base_prefix) / "bin"), "/usr/bin", "/bin"])


def test_the_install_and_demo_command_runs_as_written_in_a_fresh_virtualenv(tmp_path):
    install, _ = _commands()
    repo = _repository_copy(tmp_path / "llm-token-exporter")
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_BREAK_SYSTEM_PACKAGES",
                        "PIP_USER", "PYENV_VERSION")
           and not k.startswith(ENV_PREFIX)}
    env["PATH"] = _system_python_path()
    done = subprocess.run(["bash", "-c", install], cwd=repo, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    hint = ("" if "ensurepip is not available" not in done.stdout + done.stderr else
            "\n(Debian's python3 needs python3-venv: apt-get install python3-venv, as .ci/run "
            "does)")
    assert done.returncode == 0, (
        f"`{install}` exited {done.returncode}{hint}\n--- stdout (end)\n{done.stdout[-3000:]}"
        f"\n--- stderr (end)\n{done.stderr[-3000:]}"
    )
    assert "Tenant Acme Corp (acme): core resource consumption" in done.stdout
    assert re.search(r"^Sent [\d,]+ spans in [\d,]+ traces \(200 conversations\) over "
                     r"OTLP/HTTP to http://127\.0\.0\.1:\d+ in ", done.stdout, re.M)
    # stderr is no terminal here: plain progress lines, no bar redrawn with carriage returns
    assert "\r" not in done.stderr
    assert "sent 200/200 conversations" in done.stderr
    venv_python = repo / ".venv" / "bin" / "python"
    assert (repo / ".venv" / "bin" / "llm-token-exporter").exists()
    # the OTLP/HTTP exporter only: no gRPC stack comes with the install
    found = subprocess.run(
        [str(venv_python), "-c", "import importlib.util as u; print(u.find_spec('grpc') is None)"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert found.stdout.strip() == "True", found


# --- names the docs give are real ------------------------------------------------------


def _env_names(text: str) -> set[str]:
    return set(re.findall(rf"\b{ENV_PREFIX}[A-Z0-9_]*[A-Z0-9]\b", text))


def _not_a_key(name: str) -> bool:
    """Kubernetes' service links (``<SERVICE>_SERVICE_HOST``, ``<SERVICE>_PORT_4318_TCP``, ...)
    for a Service named llm-token-exporter: the docs name them to say why they are off."""
    return name.startswith((ENV_PREFIX + "SERVICE_", ENV_PREFIX + "PORT"))


@pytest.mark.parametrize("path", USER_TEXTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_environment_variable_the_docs_name_is_a_config_key(path):
    real = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Config)} | {CONFIG_ENV}
    unknown = {name for name in _env_names(path.read_text()) - real if not _not_a_key(name)}
    assert not unknown, f"{path.relative_to(ROOT)} names no config key: {sorted(unknown)}"


def test_the_env_name_check_sees_the_collector_example():
    # the README's collector example reads the bearer token from the environment
    assert "LLM_TOKEN_EXPORTER_AUTH_TOKEN" in _env_names(README.read_text())


def test_the_readmes_config_table_names_real_keys():
    section = README.read_text().partition("### Configuration")[2].partition("\n### ")[0]
    keys = {key for row in re.findall(r"^\| (`.+?`) \|", section, re.M)
            for key in re.findall(r"`([a-z_]+)`", row)}
    assert keys >= {"listen", "directory", "state_dir", "auth_token"}
    assert keys <= {f.name for f in dataclasses.fields(Config)}


def _conventions_names() -> set[str]:
    """Every attribute name in conventions.py's tables (its public constants, AGENT_ID,
    CALLER, TENANT, ..., and the table its one-pass scan reads)."""
    names = set()
    for constant, value in vars(conventions).items():
        public = constant.isupper() and not constant.startswith("_")
        if public and isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            names.update(value)
    for table in conventions._FIELD_TABLES.values():  # every name the one-pass scan reads
        names.update(table)
    names.add(conventions.OPENINFERENCE_METADATA)
    return names


def _kind_values() -> set[str]:
    return (set(conventions._OPERATION_KIND) | set(conventions._OPENINFERENCE_KIND)
            | set(conventions._TRACELOOP_KIND) | set(conventions._MODEL_OPERATIONS))


def _inline_code(page: str) -> set[str]:
    """Every `inline code` span of a Markdown page (fenced blocks left out)."""
    prose = re.sub(r"^```.*?^```", "", page, flags=re.M | re.S)
    return set(re.findall(r"`([^`\n]+)`", prose))


def test_every_span_attribute_the_code_reads_is_on_the_conventions_page():
    page = (ROOT / "docs" / "conventions.md").read_text()
    written = _inline_code(page)
    names = _conventions_names()
    assert {"enduser.id", "tenant.id", "gen_ai.usage.input_tokens"} <= names  # the scan works
    missing = sorted(names - written)
    assert not missing, f"docs/conventions.md does not name {missing}"
    missing = sorted(_kind_values() - written)
    assert not missing, f"docs/conventions.md does not name the kind values {missing}"


def test_every_directory_key_the_parser_accepts_is_on_the_directory_page():
    page = (ROOT / "docs" / "directory.md").read_text()
    written = _inline_code(page)
    keys = {*directory._ROOT_KEYS, *directory._TENANT_KEYS, *directory._MEMBER_KEYS,
            *directory._AGENT_KEYS, *directory._WORKFLOW_KEYS}
    kinds = {directory.KIND_AGENT, directory.KIND_ASSISTANT, directory.KIND_WORKFLOW,
             directory.KIND_CHATFLOW}
    assert not sorted(keys - written), sorted(keys - written)
    assert not sorted(kinds - written), sorted(kinds - written)


def _examples(page: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page, re.M | re.S)


def test_the_directory_pages_examples_are_valid_directories():
    page = (ROOT / "docs" / "directory.md").read_text()
    [example] = _examples(page, "yaml")
    parsed = parse_directory(yaml.safe_load(example))
    assert set(parsed.tenants) == {"acme", "globex"}
    assert parsed.tenants_of("bob") == {"acme", "globex"}  # a member of several tenants
    assert parsed.chatflow_agent("support-chat") == "support-bot"
    assert parsed.workflows["summarize"].kind == directory.KIND_WORKFLOW
    [example] = _examples(page, "json")
    parsed = parse_directory(json.loads(example))
    assert parsed.chatflow_agent("support-chat") == "support-bot"


def test_the_unknown_key_example_is_what_the_parser_says():
    page = (ROOT / "docs" / "directory.md").read_text()
    with pytest.raises(directory.DirectoryError) as refused:
        parse_directory({"tenants": [{"id": "acme", "memberz": []}]})
    assert f"`{refused.value}`" in page


# --- nothing points where a user cannot follow ----------------------------------------

#: Documents users do not have (the project's internal spec, seeds and product notes).
UNREACHABLE = ("shared/", "seed", "PRD", "views.md", "§")


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_to_documents_users_cannot_open(path):
    text = path.read_text()
    found = [word for word in UNREACHABLE if word in text]
    assert not found, f"{path.relative_to(ROOT)} refers to {found}"


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", text, re.M)}


MY_DOCS = [README, *(ROOT / "docs" / name for name in ("README.md", "directory.md",
                                                        "conventions.md"))]


@pytest.mark.parametrize("path", MY_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    text = path.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.relative_to(ROOT)} links to missing {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked.read_text()), f"{target}: no such heading"


def test_the_license_the_readme_names_is_there():
    assert "[LICENSE](LICENSE)" in README.read_text()
    assert (ROOT / "LICENSE").is_file()
