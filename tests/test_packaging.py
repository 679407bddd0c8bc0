"""The package's metadata: its license, and that it declares exactly what it imports.

Read from pyproject.toml and from the installed metadata (``pip install -e .`` writes it),
with ``packaging``'s parser; imports are read from the source with ``ast``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "llm-token-exporter"
FIRST_PARTY = frozenset({"exporter", "otel_processor"})
#: SHA-256 of the Apache License 2.0 as the ASF publishes it
#: (https://www.apache.org/licenses/LICENSE-2.0.txt), which Debian ships as
#: /usr/share/common-licenses/Apache-2.0.
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"

try:
    import tomllib
except ImportError:  # Python 3.10: the installed metadata is checked instead
    tomllib = None


def _pyproject() -> dict:
    if tomllib is None:
        pytest.skip("tomllib is Python 3.11+; the installed metadata is checked on 3.10 too")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_license_is_an_spdx_expression_with_its_file():
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0"  # not the deprecated {text = ...} table
    assert project["license-files"] == ["LICENSE"]


def test_the_build_backend_understands_spdx_licenses():
    [setuptools] = [Requirement(r) for r in _pyproject()["build-system"]["requires"]
                    if Requirement(r).name == "setuptools"]
    # PEP 639 `license` strings and `license-files` need setuptools 77
    assert not setuptools.specifier.contains("76.99") and setuptools.specifier.contains("77.0")


def test_the_installed_metadata_carries_the_license():
    found = metadata.metadata(DISTRIBUTION)
    assert found["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in (found.get_all("License-File") or [])


def test_the_license_file_is_the_apache_2_text():
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256
    words = text.decode().split()
    assert words[:5] == ["Apache", "License", "Version", "2.0,", "January"]


# --- what is imported is what is declared ------------------------------------------------


def _imports() -> dict[str, str]:
    """Every absolute third-party module imported by the two packages -> where (file:line)."""
    found: dict[str, str] = {}
    for package in sorted(FIRST_PARTY):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    # `from google.rpc import status_pb2`: the submodule, where it is one
                    names = [_submodule(node.module, alias.name) for alias in node.names]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top in FIRST_PARTY or top in sys.stdlib_module_names or top == "__future__":
                        continue
                    found.setdefault(name, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def _submodule(module: str, name: str) -> str:
    dotted = f"{module}.{name}"
    try:
        return dotted if importlib.util.find_spec(dotted) is not None else module
    except (ImportError, ValueError):  # `name` is a function or class, not a module
        return module


@cache
def _files_of(distribution: str) -> frozenset[Path]:
    dist = metadata.distribution(distribution)
    return frozenset(Path(dist.locate_file(f)).resolve() for f in dist.files or ())


def _distribution_of(module: str) -> str:
    """The installed distribution that holds ``module``'s file: namespace packages
    (``opentelemetry``, ``google``) are shared by several, so the top-level name alone,
    what ``packages_distributions()`` maps, does not tell which."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{module} is not installed"
    if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
        wanted = Path(spec.origin).resolve()
    else:  # a namespace package: any file in it
        location = Path(next(iter(spec.submodule_search_locations)))
        wanted = next(p for p in sorted(location.rglob("*.py")) if p.is_file()).resolve()
    top = module.partition(".")[0]
    candidates = metadata.packages_distributions().get(top, [])
    owners = {canonicalize_name(d) for d in candidates if wanted in _files_of(d)}
    assert len(owners) == 1, f"{module}: held by {owners or 'no distribution'} of {candidates}"
    return owners.pop()


def _declared() -> set[str]:
    """The distributions the package requires (no extra)."""
    names = set()
    for text in metadata.requires(DISTRIBUTION) or ():
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            names.add(canonicalize_name(requirement.name))
    return names


def test_every_third_party_import_is_a_declared_dependency():
    imports = _imports()
    otlp = "opentelemetry.proto.collector.trace.v1.trace_service_pb2"
    assert {"yaml", "google.rpc.status_pb2", otlp} <= set(imports), sorted(imports)  # seen
    declared = _declared()
    undeclared = {}
    for module, where in sorted(imports.items()):
        owner = _distribution_of(module)
        if owner not in declared:
            undeclared[module] = (owner, where)
    assert not undeclared, f"imported but not declared (distribution, where): {undeclared}"


def test_the_direct_imports_of_the_otlp_receiver_are_declared_not_inherited():
    # opentelemetry-proto, protobuf and google.rpc used to come only through the exporter
    assert {"opentelemetry-proto", "protobuf", "googleapis-common-protos"} <= _declared()
    assert "opentelemetry-exporter-otlp-proto-http" in _declared()


def _closure(name: str, extras: frozenset[str] = frozenset(), seen: set | None = None) -> set:
    """``name`` and everything it requires, transitively, as installed requirements say
    (markers evaluated here, extras followed)."""
    seen = set() if seen is None else seen
    key = canonicalize_name(name)
    if key in seen:
        return seen
    seen.add(key)
    try:
        requirements = metadata.requires(name) or ()
    except metadata.PackageNotFoundError:
        return seen  # not installed here: nothing below it to follow
    environment = default_environment()
    for text in requirements:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is not None and not any(
            marker.evaluate({**environment, "extra": extra}) for extra in (extras or {""})
        ):
            continue
        _closure(requirement.name, frozenset(requirement.extras), seen)
    return seen


def test_grpcio_is_not_required_and_nothing_imports_grpc():
    needed = _closure(DISTRIBUTION)
    assert "opentelemetry-exporter-otlp-proto-http" in needed  # the walk follows requirements
    assert "grpcio" not in needed
    assert "opentelemetry-exporter-otlp" not in needed  # the meta package pulls the gRPC one
    assert not [m for m in _imports() if m.partition(".")[0] == "grpc"]
    grep = [str(p.relative_to(ROOT)) for package in sorted(FIRST_PARTY)
            for p in sorted((ROOT / package).rglob("*.py"))
            if re.search(r"^\s*(import|from)\s+grpc\b", p.read_text(), re.M)]
    assert not grep, grep


def test_the_test_extra_has_what_these_tests_import():
    extras = {canonicalize_name(Requirement(r).name) for r in metadata.requires(DISTRIBUTION)
              if Requirement(r).marker is not None
              and Requirement(r).marker.evaluate({"extra": "test"})}
    assert {"pytest", "hypothesis", "packaging"} <= extras
