"""exporter.config: precedence, coercion and validation (table-driven), and the example config."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from exporter.config import CONFIG_ENV, Config, ConfigError, load_config

CASES = yaml.safe_load((Path(__file__).parent / "fixtures" / "config_cases.yaml").read_text())
EXAMPLE = Path(__file__).parent.parent / "exporter" / "data" / "example-config.yaml"
FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _ids(cases: list[dict]) -> list[str]:
    return [case["name"] for case in cases]


def _load(case: dict, tmp_path: Path) -> tuple[Config, str]:
    """Run load_config as the case says; return the config and the config file's path."""
    env = dict(case.get("env") or {})
    path = case.get("path")
    file = ""
    if "file" in case:
        file = str(tmp_path / "config.yaml")
        Path(file).write_text(case["file"])
        if case.get("file_via", "argument") == "env":
            env[CONFIG_ENV] = file
        else:
            path = file
    return load_config(path, env=env, overrides=case.get("overrides")), file


def test_case_names_are_unique():
    names = _ids(CASES["valid"] + CASES["invalid"])
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES["valid"], ids=_ids(CASES["valid"]))
def test_valid_config_resolves_to_the_expected_values(case, tmp_path):
    config, _ = _load(case, tmp_path)
    expect = case["expect"]
    for name, value in expect.items():
        assert getattr(config, name) == value, name
    for name, f in FIELDS.items():
        value = getattr(config, name)
        assert type(value) is type(f.default), name
        if name not in expect:
            assert value == f.default, name


@pytest.mark.parametrize("case", CASES["invalid"], ids=_ids(CASES["invalid"]))
def test_invalid_config_is_refused_naming_key_value_and_source(case, tmp_path):
    with pytest.raises(ConfigError) as info:
        _load(case, tmp_path)
    message = str(info.value)
    assert case["error"].replace("{file}", str(tmp_path / "config.yaml")) in message
    for hidden in case.get("not_in_error", []):
        assert hidden not in message
    assert "\n" not in message


def test_config_error_carries_the_key_and_the_source():
    with pytest.raises(ConfigError) as info:
        load_config(env={"LLM_TOKEN_EXPORTER_THREADS": "none"})
    assert (info.value.key, info.value.source) == ("threads", "LLM_TOKEN_EXPORTER_THREADS")
    assert isinstance(info.value, ValueError)


def test_environment_none_reads_os_environ(monkeypatch):
    monkeypatch.setenv("LLM_TOKEN_EXPORTER_THREADS", "12")
    assert load_config().threads == 12


def test_config_built_directly_is_checked_too():
    with pytest.raises(ConfigError, match=r"threads=0 \(from Config\(\)\): must be a positive"):
        Config(threads=0)
    with pytest.raises(ConfigError, match="listen='nowhere'"):
        dataclasses.replace(Config(), listen="nowhere")
    assert Config(log_level="warning").log_level == "WARNING"


def test_repr_leaves_the_auth_token_out():
    config = Config(auth_token="s3cret-token")
    assert "s3cret-token" not in repr(config)
    assert config.auth_token == "s3cret-token"


def test_empty_directory_and_prices_mean_the_packaged_ones(tmp_path):
    from otel_processor.directory_source import default_directory_path
    from otel_processor.prices_source import default_prices_path

    config = Config()
    assert config.directory_source == str(default_directory_path())
    assert config.prices_path == str(default_prices_path())
    chosen = Config(directory="https://hr.example/d.yaml", prices=str(tmp_path / "p.yaml"))
    assert chosen.directory_source == "https://hr.example/d.yaml"
    assert chosen.prices_path == str(tmp_path / "p.yaml")


def test_directory_defaults_are_the_directory_sources_own():
    from otel_processor import directory_source

    assert FIELDS["directory_refresh_interval"].default == directory_source.DEFAULT_REFRESH_INTERVAL
    assert FIELDS["directory_timeout"].default == directory_source.DEFAULT_TIMEOUT


def _example_keys() -> dict:
    """The example config's commented-out `# key: value` lines, as YAML."""
    lines = re.findall(r"^# (\w+: .*)$", EXAMPLE.read_text(), flags=re.MULTILINE)
    return yaml.safe_load("\n".join(lines))


def test_example_config_documents_every_key_with_its_default():
    documented = _example_keys()
    assert list(documented) and set(documented) == set(FIELDS)
    assert load_config(None, env={}, overrides=documented) == Config()


def test_example_config_loads_as_shipped_and_uncommented(tmp_path):
    assert load_config(EXAMPLE, env={}) == Config()
    uncommented = tmp_path / "config.yaml"
    uncommented.write_text(re.sub(r"^# (\w+: )", r"\1", EXAMPLE.read_text(), flags=re.M))
    assert load_config(uncommented, env={}) == Config()


def test_every_key_has_an_environment_variable():
    env = {f"LLM_TOKEN_EXPORTER_{name.upper()}": "" for name in FIELDS}
    assert load_config(None, env=env) == Config()  # all known; empty means unset


def test_kubernetes_service_link_variables_are_not_taken_for_config_keys():
    env = {"LLM_TOKEN_EXPORTER_PORT": "tcp://10.0.0.1:4318",
           "LLM_TOKEN_EXPORTER_SERVICE_HOST": "10.0.0.1",
           "LLM_TOKEN_EXPORTER_SERVICE_PORT": "4318",
           "LLM_TOKEN_EXPORTER_SERVICE_PORT_HTTP": "4318",
           "LLM_TOKEN_EXPORTER_PORT_4318_TCP": "tcp://10.0.0.1:4318",
           "LLM_TOKEN_EXPORTER_PORT_4318_TCP_ADDR": "10.0.0.1",
           "LLM_TOKEN_EXPORTER_THREADS": "4"}
    assert load_config(None, env=env) == Config(threads=4)
    with pytest.raises(ConfigError, match="LLM_TOKEN_EXPORTER_PORTS"):
        load_config(None, env={"LLM_TOKEN_EXPORTER_PORTS": "1"})
