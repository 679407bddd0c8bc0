"""The Prometheus rules, config and unit tests (prometheus/), checked with the real promtool.

promtool comes with Debian's ``prometheus`` package (``apt-get install -y prometheus``, which
.ci/run does); these tests fail, not skip, without it. Beyond promtool, they hold the rules
to the monitoring-mixin conventions (style habit 14) and to the metric contract: every alert
has ``for``, ``severity``, ``summary``, ``description`` and a ``runbook_url`` whose anchor
exists in docs/runbook.md, and a promtool case where it fires and one where it must not; the
rules read only series the exporter exposes, series recorded here and the collector's own
metrics. The rule files are generated (prometheus/build_rules.py, tests/test_rules_generator.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from otel_processor import metrics as m

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/llm-token-exporter/llm-token-exporter/blob/main/docs/runbook.md#"
#: The alerts of views.md §5, the series cap's, the OpenTelemetry Collector's (issue 8) and
#: cost governance's (issue 10: budgets, burn rates, the month-end forecast, runaway traces,
#: cost spikes).
REQUIRED_ALERTS = {
    "TokenSpike", "RunawayAgent", "UnattributedTokens", "UnpricedModel",
    "ExporterDown", "DirectoryStale", "SpansRejected", "SeriesOverflow",
    "CollectorExportFailed", "CollectorQueueFull", "CollectorSpansRefused",
    "BudgetWarning", "BudgetCritical", "BudgetExhausted", "BudgetBurnRateFast",
    "BudgetBurnRateSlow", "MonthEndOverBudget", "RunawayTrace", "CostSpike",
    "UnclassifiedUsage",
}
#: The period and budget gauges of issue 10 the budget rules read, with their labels (gauges:
#: no suffix). The rules may read them before otel_processor.metrics has them (they are being
#: added alongside); once a family is there, its labels must be these.
BUDGET_METRICS = {
    "llm_period_tokens": ("tenant", "period", "type"),
    "llm_period_cost_usd": ("tenant", "period"),
    "llm_period_unpriced_tokens": ("tenant", "period"),
    "llm_period_start_timestamp_seconds": ("tenant", "period"),
    "llm_period_end_timestamp_seconds": ("tenant", "period"),
    "llm_budget_limit_tokens": ("tenant", "scope", "id"),
    "llm_budget_limit_usd": ("tenant", "scope", "id"),
    "llm_budget_used_tokens": ("tenant", "scope", "id"),
    "llm_budget_used_usd": ("tenant", "scope", "id"),
    "llm_budget_ratio": ("tenant", "scope", "id"),
    "llm_budget_threshold_ratio": ("tenant", "scope", "id", "state"),
}
#: The collector's own metrics the rules may read, as Prometheus names them with the telemetry
#: reader of otel-collector/config.yaml (collector-contrib 0.137: the exporterhelper and
#: receiverhelper counters, with `_total`). otelcol_processor_dropped_spans is not there: the
#: collector removed it (it was always 0); the memory_limiter's refusals are the receiver's.
COLLECTOR_METRICS = {
    "otelcol_exporter_send_failed_spans_total", "otelcol_exporter_enqueue_failed_spans_total",
    "otelcol_exporter_sent_spans_total", "otelcol_exporter_queue_size",
    "otelcol_exporter_queue_capacity", "otelcol_receiver_accepted_spans_total",
    "otelcol_receiver_refused_spans_total", "otelcol_processor_refused_spans_total",
}
SEVERITIES = {"critical", "warning"}
_PROMTOOL_TIMEOUT = 300  # seconds; the week-long unit tests take a few


def _promtool(*args: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package "
            "(apt-get install -y prometheus), as .ci/run does"
        )
    done = subprocess.run(
        [promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=_PROMTOOL_TIMEOUT
    )
    if done.returncode != 0:
        pytest.fail(
            f"promtool {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )


def _relative(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def _groups() -> list[dict]:
    return [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]


def _rules(kind: str) -> list[dict]:
    return [r for g in _groups() for r in g["rules"] if kind in r]


def _alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in _rules("alert")}


def _github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _exposed_metric_names() -> set[str]:
    """Every sample name the exporter exposes (the contract, from otel_processor.metrics)."""
    names = set()
    for family in vars(m).values():
        if isinstance(family, m.Family):
            suffix = {"counter": "_total", "gauge": "", "info": "_info"}[family.kind]
            names.add(family.name + suffix)
    return names


def test_there_are_rule_and_test_files():
    assert _relative(RULE_FILES) == [
        "prometheus/rules/alerts.yml", "prometheus/rules/recording.yml"
    ]
    assert TEST_FILES, "no promtool unit tests in prometheus/tests/"


def test_rule_files_pass_promtool_check_rules():
    _promtool("check", "rules", *_relative(RULE_FILES))


def test_prometheus_config_and_its_rule_files_pass_promtool_check_config():
    # rule_files are relative to prometheus.yml: the same paths work in the repository and in
    # the compose stack, which mounts prometheus/ at /etc/prometheus.
    _promtool("check", "config", "prometheus/prometheus.yml")


def test_promtool_unit_tests_pass():
    _promtool("test", "rules", *_relative(TEST_FILES))


def test_the_issue_s_alerts_all_exist():
    assert REQUIRED_ALERTS <= set(_alerts())


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_alert_has_for_severity_summary_description_and_a_runbook_section(name):
    rule = _alerts()[name]
    assert re.fullmatch(r"(?:[A-Z][a-z0-9]+)+", name), "alert names are <Thing><Condition>"
    assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{name}: no `for`"
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    assert annotations.get("summary"), f"{name}: no summary"
    assert "{{" in annotations.get("description", ""), f"{name}: description is not templated"
    url = annotations.get("runbook_url", "")
    assert url.startswith(RUNBOOK_URL), url
    headings = re.findall(r"^#{2,3} (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    assert url.removeprefix(RUNBOOK_URL) in {_github_anchor(h) for h in headings}, (
        f"{name}: {url} has no heading in docs/runbook.md"
    )


def test_recording_rules_are_named_level_metric_operations_and_recorded_once():
    names = [rule["record"] for rule in _rules("record")]
    for name in names:
        assert re.fullmatch(r"[a-z_]+:llm_[a-z0-9_]+:[a-z0-9_]+", name), name
    assert len(names) == len(set(names))


def test_the_budget_gauges_the_rules_read_have_the_labels_they_expect():
    families = {f.name: f for f in vars(m).values() if isinstance(f, m.Family)}
    for name, labels in BUDGET_METRICS.items():
        if name in families:  # not yet everywhere: the rules are written against the contract
            assert families[name].kind == "gauge", name
            assert sorted(families[name].labels) == sorted(labels), name


def test_rules_read_only_metrics_the_exporter_exposes_and_series_recorded_here():
    exposed = _exposed_metric_names() | set(BUDGET_METRICS)
    recorded = {rule["record"] for rule in _rules("record")}
    for rule in (r for g in _groups() for r in g["rules"]):
        expr = rule["expr"]
        # Series names: llm_..., otelcol_..., or level:metric:operations; not label names or
        # functions. No series is selected by a regex on __name__, which this would not see.
        assert "__name__" not in expr, rule.get("alert") or rule.get("record")
        without_labels = re.sub(r"\{[^}]*\}", "", expr)
        for name in re.findall(r"(?<![\w:])llm_\w+(?![\w:(])", without_labels):
            assert name in exposed, f"{rule.get('alert') or rule.get('record')}: {name}"
        for name in re.findall(r"(?<![\w:])otelcol_\w+(?![\w:(])", without_labels):
            assert name in COLLECTOR_METRICS, f"{rule.get('alert')}: {name}"
        for name in re.findall(r"(?<![\w:])[a-z_]+:llm_\w+:\w+", without_labels):
            assert name in recorded, f"{rule.get('alert') or rule.get('record')}: {name}"


def _alert_cases() -> dict[str, list[bool]]:
    """For each alert name, one bool per promtool case: does it expect the alert to fire?"""
    cases: dict[str, list[bool]] = {}
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    return cases


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_every_alert_has_a_promtool_case_that_fires_and_one_that_must_not(name):
    cases = _alert_cases().get(name, [])
    assert True in cases, f"{name}: no promtool case where it fires"
    assert False in cases, f"{name}: no promtool case where it must not fire (exp_alerts: [])"


def test_firing_cases_check_labels_and_every_annotation_exactly():
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                for alert in case.get("exp_alerts") or []:
                    assert "severity" in alert["exp_labels"], (path.name, case["alertname"])
                    assert set(alert["exp_annotations"]) == {
                        "summary", "description", "runbook_url"
                    }, (path.name, case["alertname"])


def test_unit_test_files_evaluate_every_rule_group_in_a_fixed_order():
    # promtool evaluates the groups missing from group_eval_order in no fixed order; an alert
    # reading a series recorded in the same evaluation then sees it or not at random.
    every = [g["name"] for g in _groups()]
    for path in TEST_FILES:
        test = yaml.safe_load(path.read_text())
        files = [(path.parent / f).resolve() for f in test["rule_files"]]
        loaded = [g["name"] for f in files for g in yaml.safe_load(f.read_text())["groups"]]
        assert sorted(test.get("group_eval_order", [])) == sorted(loaded), path.name
        if any(f.name == "alerts.yml" for f in files):
            assert sorted(loaded) == sorted(every), f"{path.name}: not every rule file"
