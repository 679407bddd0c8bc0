"""The rules generator (prometheus/build_rules.py) and the rule files it wrote.

The committed prometheus/rules/*.yml are its rendering with the default settings, which are
the compose stack's job names and the repository's runbook; another rendering puts a site's
selectors and runbook everywhere the defaults were, and is valid for promtool, which tests
what it means (here with a site's job names; prometheus/tests/ with the defaults). promtool
comes with Debian's ``prometheus`` package: these tests fail, not skip, without it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "prometheus" / "build_rules.py"
RULES = ROOT / "prometheus" / "rules"
DEFAULT_SELECTOR = 'job="llm-token-exporter"'
DEFAULT_COLLECTOR_SELECTOR = 'job="otel-collector"'
DEFAULT_RUNBOOK = "https://github.com/llm-token-exporter/llm-token-exporter/blob/main/docs/runbook.md"
SITE = {
    "selector": 'job="llm-prod",namespace="ai"',
    "collector_selector": 'job=~"otelcol-(eu|us)"',
    "runbook_url_base": "https://wiki.example.com/sre/llm-runbook",
}


def _generator():
    spec = importlib.util.spec_from_file_location("build_rules", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _alerts(text: str) -> dict[str, dict]:
    return {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"]
            if "alert" in r}


def _promtool(*args: str, cwd: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's prometheus package "
                    "(apt-get install -y prometheus), as .ci/run does")
    done = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        pytest.fail(f"promtool {' '.join(args)} exited {done.returncode}:\n"
                    f"{done.stdout}\n{done.stderr}")


def test_the_defaults_are_the_compose_stack_s_job_names_and_the_repository_s_runbook():
    config = _generator().Config()
    assert config.selector == DEFAULT_SELECTOR
    assert config.collector_selector == DEFAULT_COLLECTOR_SELECTOR
    assert config.runbook_url_base == DEFAULT_RUNBOOK


def test_the_committed_rule_files_are_the_generator_s_output_with_the_defaults():
    build = _generator()
    files = build.render()
    assert sorted(files) == sorted(p.name for p in RULES.glob("*.yml"))
    for name, text in files.items():
        assert (RULES / name).read_text() == text, (
            f"prometheus/rules/{name} is stale: run python prometheus/build_rules.py"
        )
    assert build.main(["--check"]) == 0


def test_a_site_s_selectors_and_runbook_replace_the_defaults_wherever_they_were():
    build = _generator()
    default = _alerts(build.render()["alerts.yml"])
    site = _alerts(build.render(build.Config(**SITE))["alerts.yml"])
    assert set(site) == set(default)

    def as_site(text: str) -> str:
        return (text.replace(DEFAULT_SELECTOR, SITE["selector"])
                    .replace(DEFAULT_COLLECTOR_SELECTOR, SITE["collector_selector"])
                    .replace(DEFAULT_RUNBOOK, SITE["runbook_url_base"]))

    selected = set()
    for name, rule in default.items():
        # Everything else is unchanged; each default that was there is the site's now.
        assert site[name]["expr"] == as_site(rule["expr"]), name
        assert site[name]["annotations"] == {
            key: as_site(value) for key, value in rule["annotations"].items()
        }, name
        assert {k: v for k, v in site[name].items() if k not in ("expr", "annotations")} == {
            k: v for k, v in rule.items() if k not in ("expr", "annotations")
        }, name
        for old in (DEFAULT_SELECTOR, DEFAULT_COLLECTOR_SELECTOR, DEFAULT_RUNBOOK):
            assert old not in yaml.safe_dump(site[name]), (name, old)
        assert site[name]["annotations"]["runbook_url"] == (
            f"{SITE['runbook_url_base']}#{name.lower()}"
        )
        if DEFAULT_SELECTOR in rule["expr"] or DEFAULT_COLLECTOR_SELECTOR in rule["expr"]:
            selected.add(name)
    # The alerts that name a job: the exporter's target, and every collector alert.
    assert selected == {
        "ExporterDown", "CollectorExportFailed", "CollectorQueueFull", "CollectorSpansRefused",
    }
    assert 'up{job="llm-prod",namespace="ai"} == 0' in site["ExporterDown"]["expr"]
    assert 'absent(up{job="llm-prod",namespace="ai"})' in site["ExporterDown"]["expr"]
    # The recording rules read the exporter's series in any job: no setting reaches them.
    assert (build.render(build.Config(**SITE))["recording.yml"].split("\n#\n", 1)[1]
            == build.render()["recording.yml"].split("\n#\n", 1)[1])


def test_a_site_s_rendering_passes_promtool_and_alerts_on_the_site_s_jobs_only(tmp_path):
    build = _generator()
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(SITE))
    rules = tmp_path / "rules"
    assert build.main(["--config", str(config), "--out-dir", str(rules)]) == 0
    assert build.main(["--config", str(config), "--out-dir", str(rules), "--check"]) == 0
    assert build.main(["--out-dir", str(rules), "--check"]) == 1  # the defaults differ
    _promtool("check", "rules", "rules/alerts.yml", "rules/recording.yml", cwd=tmp_path)
    groups = [g["name"] for f in ("alerts.yml", "recording.yml")
              for g in yaml.safe_load((rules / f).read_text())["groups"]]
    runbook = SITE["runbook_url_base"]
    test = {
        "rule_files": ["rules/recording.yml", "rules/alerts.yml"],
        "evaluation_interval": "1m",
        "group_eval_order": groups,
        "tests": [{
            "interval": "1m",
            "input_series": [
                # The site's exporter is up; a target of the old job name is down (not ours).
                {"series": 'up{job="llm-prod",namespace="ai",instance="a:4318"}',
                 "values": "1x30"},
                {"series": 'up{job="llm-token-exporter",instance="old:4318"}',
                 "values": "0x30"},
                # The site's collector loses spans; one of the default job name too.
                {"series": 'otelcol_exporter_send_failed_spans_total{exporter="otlphttp",'
                           'job="otelcol-eu",instance="c:8888"}', "values": "0+10x30"},
                {"series": 'otelcol_exporter_send_failed_spans_total{exporter="otlphttp",'
                           'job="otel-collector",instance="d:8888"}', "values": "0+10x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "ExporterDown", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "CollectorExportFailed", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "job": "otelcol-eu",
                                   "instance": "c:8888", "exporter": "otlphttp"},
                    "exp_annotations": {
                        "summary": "The OpenTelemetry Collector is losing spans it cannot "
                                   "deliver (otlphttp).",
                        "description": "The collector c:8888 (job otelcol-eu) failed to "
                                       "deliver 50 spans through exporter otlphttp in the "
                                       "last 5 minutes, and has been failing for 5 minutes: "
                                       "each failed after every retry or was refused for "
                                       "good, and is lost (its tokens are never counted).",
                        "runbook_url": f"{runbook}#collectorexportfailed",
                    },
                }]},
            ],
        }, {
            "interval": "1m",
            # No target of the site's job at all: absent() names its equality matchers.
            "input_series": [{"series": 'up{job="llm-token-exporter",instance="old:4318"}',
                              "values": "1x30"}],
            "alert_rule_test": [{
                "eval_time": "10m", "alertname": "ExporterDown", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "job": "llm-prod",
                                   "namespace": "ai"},
                    "exp_annotations": {
                        "summary": "The LLM token exporter cannot be scraped.",
                        "description": "Prometheus has no target at all for job llm-prod for "
                                       "5 minutes: token counts, alerts and dashboards are "
                                       "not being updated.",
                        "runbook_url": f"{runbook}#exporterdown",
                    },
                }],
            }],
        }],
    }
    (tmp_path / "site_test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    _promtool("test", "rules", "site_test.yml", cwd=tmp_path)


@pytest.mark.parametrize("settings", [
    {"selector": ""},
    {"selector": '{job="x"}'},
    {"selector": "job=x"},
    {"collector_selector": 'job="a" or vector(1)'},
    {"runbook_url_base": "https://example.com/runbook.md#top"},
    {"runbook_url_base": ""},
])
def test_settings_that_would_write_broken_rules_are_refused(settings):
    build = _generator()
    with pytest.raises(ValueError):
        build.Config(**settings)


def test_the_command_line_refuses_bad_settings_and_unknown_config_keys(tmp_path, capsys):
    build = _generator()
    with pytest.raises(SystemExit) as exited:
        build.main(["--selector", "job=x", "--out-dir", str(tmp_path)])
    assert exited.value.code == 2
    config = tmp_path / "site.yaml"
    config.write_text("selector: 'job=\"x\"'\njob: y\n")
    with pytest.raises(SystemExit) as exited:
        build.main(["--config", str(config), "--out-dir", str(tmp_path)])
    assert exited.value.code == 2
    assert "selector" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.yml"))


def test_a_stale_or_missing_rule_file_is_reported_by_check(tmp_path, capsys):
    build = _generator()
    assert build.main(["--out-dir", str(tmp_path)]) == 0
    (tmp_path / "alerts.yml").write_text((tmp_path / "alerts.yml").read_text() + "\n")
    (tmp_path / "recording.yml").unlink()
    assert build.main(["--out-dir", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "stale: " in err and "alerts.yml" in err and "recording.yml" in err
