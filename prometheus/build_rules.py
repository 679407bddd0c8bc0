"""Generates the Prometheus rules: prometheus/rules/alerts.yml and recording.yml.

    python prometheus/build_rules.py            # rewrite prometheus/rules/*.yml (defaults)
    python prometheus/build_rules.py --check    # exit 1 when the committed files are stale
    python prometheus/build_rules.py --selector 'job="llm",namespace="ai"' \\
        --runbook-url-base https://wiki.example.com/llm/runbook --out-dir /etc/prometheus/rules
    python prometheus/build_rules.py --config site.yaml --out-dir ...

The monitoring-mixin habit: the rules are written once, here, against a few settings, and
rendered for a site. The committed files are the rendering with the defaults, which are the
compose stack's (`docker-compose.yml`, `prometheus/prometheus.yml`):

- ``selector``: the label matchers of the exporter's scrape job (``job="llm-token-exporter"``),
  in the alerts that look for the exporter's target (ExporterDown). The rules over the
  exporter's own series (``llm_*``) match them in any job, as they always have: every rule
  sums over ``instance`` and keeps ``job``.
- ``collector_selector``: the label matchers of the OpenTelemetry Collector's telemetry
  scrape job (``job="otel-collector"``), in every alert over ``otelcol_*`` series.
- ``runbook_url_base``: the runbook's URL; every alert's ``runbook_url`` is this plus
  ``#<alert name in lower case>`` (the heading's anchor in docs/runbook.md).

A ``--config`` file is a YAML mapping of those keys; flags override it. Standard library and
PyYAML (a dependency of the project) only. The output is checked by parsing it back: a
rendering that YAML would read differently from the rules written here is an error.
``tests/test_rules_generator.py`` fails when the committed files differ from the defaults'
rendering; ``promtool test rules prometheus/tests/*.yml`` tests what the rules mean. The
Kubernetes copies (deploy/kubernetes/components/prometheus-operator/rules/) are made from the
committed files by ``python deploy/kubernetes/sync_dashboards.py``: run it after this script.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent / "rules"
GENERATOR = "prometheus/build_rules.py"


@dataclass(frozen=True)
class Config:
    """The settings a site changes; the defaults are the compose stack's."""

    selector: str = 'job="llm-token-exporter"'
    collector_selector: str = 'job="otel-collector"'
    runbook_url_base: str = (
        "https://github.com/llm-token-exporter/llm-token-exporter/blob/main/docs/runbook.md"
    )

    def __post_init__(self) -> None:
        for name in ("selector", "collector_selector"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _SELECTOR.fullmatch(value):
                raise ValueError(
                    f"{name} must be label matchers without braces, e.g. "
                    f'job="llm-token-exporter",namespace="ai"; got {value!r}'
                )
        base = self.runbook_url_base
        if not isinstance(base, str) or not re.fullmatch(r"\S+", base) or "#" in base:
            raise ValueError(f"runbook_url_base must be a URL without a #fragment; got {base!r}")

    def runbook(self, alert: str) -> str:
        return f"{self.runbook_url_base}#{alert.lower()}"


_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(rf"{_MATCHER}(?:,{_MATCHER})*")


def select(metric: str, selector: str) -> str:
    """``metric{selector}``: a series selector with a configured set of matchers."""
    return metric + "{" + selector + "}"


# -- The rules, as data -----------------------------------------------------------------------


@dataclass
class Rule:
    """One alerting or recording rule. Multi-line text is written as it is laid out here:
    ``expr`` as a literal block, ``description`` as a folded one (its lines joined by spaces),
    ``comment`` as ``#`` lines (above ``expr`` for an alert, above the rule for a record)."""

    expr: str
    alert: str = ""
    record: str = ""
    comment: str = ""
    for_: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    description: str = ""
    runbook_url: str = ""
    gap: bool = False  # a blank line before this rule (alerts always have one between them)


@dataclass
class Group:
    name: str
    rules: list[Rule]
    interval: str = ""
    comment: str = ""


@dataclass
class RuleFile:
    name: str
    header: str
    groups: list[Group]


def _lines(text: str) -> list[str]:
    """``text`` without its common indentation and without blank lines at its ends."""
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return [line[indent:].rstrip() for line in lines]


def _alert(
    config: Config, name: str, *, comment: str, expr: str, for_: str, severity: str,
    summary: str, description: str,
) -> Rule:
    return Rule(
        alert=name, comment=comment, expr=expr, for_=for_, labels={"severity": severity},
        summary=summary, description=description, runbook_url=config.runbook(name),
    )


def _per_limit(template: str) -> str:
    """``template`` for each kind of budget limit, ``KIND`` replaced by ``tokens`` and ``usd``,
    the result labelled ``limit="tokens"`` or ``limit="usd"``."""
    return "\n".join(
        ("or\n" if kind == "usd" else "")
        + f'label_replace(\n  {template.replace("KIND", kind)}, "limit", "{kind}", "", ""\n)'
        for kind in ("tokens", "usd")
    )


def recording_rules(config: Config) -> RuleFile:
    """The recording rules; they read only the exporter's series, in any job."""
    del config  # no setting applies to them
    tokens = Group("llm-token-exporter.tokens.rules", [
        Rule(
            comment="Tokens per second of each billing tenant's members (input + output), all "
                    "models.",
            record="tenant:llm_tokens:rate5m",
            expr="sum by (tenant) (rate(llm_model_tokens_total[5m]))",
        ),
        Rule(
            comment="The tenant's rate over the last day, sampled every evaluation: "
                    "TokenSpike's z-score.",
            record="tenant:llm_tokens:avg_over_time_1d_rate5m",
            expr="avg_over_time(tenant:llm_tokens:rate5m[1d])",
        ),
        Rule(
            record="tenant:llm_tokens:stddev_over_time_1d_rate5m",
            expr="stddev_over_time(tenant:llm_tokens:rate5m[1d])",
        ),
        Rule(
            gap=True,
            comment="Tokens per second under each outermost agent, per billing tenant "
                    "(RunawayAgent).",
            record="tenant_agent:llm_tokens:rate5m",
            expr="sum by (tenant, agent) (rate(llm_agent_tokens_total[5m]))",
        ),
        Rule(
            record="tenant_agent:llm_tokens:rate15m",
            expr="sum by (tenant, agent) (rate(llm_agent_tokens_total[15m]))",
        ),
        Rule(
            gap=True,
            comment='Tokens per second by model, all tenants ("Token rate by model").',
            record="model:llm_tokens:rate5m",
            expr="sum by (model) (rate(llm_model_tokens_total[5m]))",
        ),
        Rule(
            comment='Cache-read share of input tokens by model ("Cache"); NaN without input '
                    "tokens.",
            record="model:llm_cache_read_tokens_per_input_tokens:ratio_rate5m",
            expr="""
                sum by (model) (rate(llm_model_cache_tokens_total{type="read"}[5m]))
                  /
                sum by (model) (rate(llm_model_tokens_total{type="input"}[5m]))
            """,
        ),
        Rule(
            comment='Model calls per second by outcome, and the error share ("error rate").',
            record="model_outcome:llm_requests:rate5m",
            expr="sum by (model, outcome) (rate(llm_model_requests_total[5m]))",
        ),
        Rule(
            record="model:llm_request_errors_per_requests:ratio_rate5m",
            expr="""
                sum by (model) (model_outcome:llm_requests:rate5m{outcome="error"})
                  /
                sum by (model) (model_outcome:llm_requests:rate5m)
            """,
        ),
    ])
    baseline = Group(
        "llm-token-exporter.baseline.rules",
        comment="""
            An agent's baseline for RunawayAgent: its average over a week, so that a weekday-only
            agent is not "10x its baseline" every Monday morning (a 1-day average would be Sunday's).
            A week of raw samples per series is the costliest query here: every 2 minutes, not every
            evaluation (2m stays well inside the 5-minute lookback, so the series has no gaps).
        """,  # noqa: E501 (as the comment is laid out in the YAML)
        interval="2m",
        rules=[Rule(
            record="tenant_agent:llm_tokens:rate1w",
            expr="sum by (tenant, agent) (rate(llm_agent_tokens_total[1w]))",
        )],
    )
    cost = Group("llm-token-exporter.cost.rules", [
        Rule(
            comment='USD per second; multiply by 3600 for USD per hour ("Cost per hour").',
            record="model:llm_cost_usd:rate1h",
            expr="sum by (model) (rate(llm_model_cost_usd_total[1h]))",
        ),
        Rule(
            record="tenant:llm_cost_usd:rate1h",
            expr="sum by (tenant) (rate(llm_model_cost_usd_total[1h]))",
        ),
        Rule(
            gap=True,
            comment="""
                A tenant's USD per second over 5 minutes, and its mean and standard deviation
                over the last day, sampled every evaluation: CostSpike's z-score (TokenSpike's,
                on cost).
            """,
            record="tenant:llm_cost_usd:rate5m",
            expr="sum by (tenant) (rate(llm_model_cost_usd_total[5m]))",
        ),
        Rule(
            record="tenant:llm_cost_usd:avg_over_time_1d_rate5m",
            expr="avg_over_time(tenant:llm_cost_usd:rate5m[1d])",
        ),
        Rule(
            record="tenant:llm_cost_usd:stddev_over_time_1d_rate5m",
            expr="stddev_over_time(tenant:llm_cost_usd:rate5m[1d])",
        ),
    ])
    budget = Group(
        "llm-token-exporter.budget.rules",
        comment="""
            Budgets (one per tenant, member or agent with a limit: labels tenant, scope, id), for
            the Budget* alerts, over every exporter: each exporter keeps its own ledger and
            exposes the part of a budget's use it has seen (architecture.md "Beyond one
            machine"), so the use is summed over `instance` and the ratio is taken here, not read
            from llm_budget_ratio (one exporter's share; the same number with one exporter). The
            limits and thresholds are configuration, the same on every exporter: max, not sum.
            `limit` is "tokens" or "usd": a budget has a series per limit it sets.
        """,  # noqa: E501 (as the comment is laid out in the YAML)
        rules=[
            Rule(
                comment="This calendar month's use (in the tenant's timezone), and the limit.",
                record="tenant_scope_id_limit:llm_budget_used:sum",
                expr=_per_limit("sum by (tenant, scope, id) (llm_budget_used_KIND)"),
            ),
            Rule(
                record="tenant_scope_id_limit:llm_budget_limit:max",
                expr=_per_limit("max by (tenant, scope, id) (llm_budget_limit_KIND)"),
            ),
            Rule(
                comment="""
                    Used / limit, the larger of the two limits (llm_budget_ratio, over every
                    exporter): BudgetWarning, BudgetCritical, BudgetExhausted.
                """,
                record="tenant_scope_id:llm_budget_used_per_limit:max_ratio",
                expr="""
                    max by (tenant, scope, id) (
                        tenant_scope_id_limit:llm_budget_used:sum
                      /
                        tenant_scope_id_limit:llm_budget_limit:max
                    )
                """,
            ),
            Rule(
                gap=True,
                comment="""
                    The even pace: the limit spread over this month's length in seconds (28 to 31
                    days, from the tenant's own month). A burn rate is the use's rate over it: 1
                    uses the limit up exactly at the end of the month.
                """,
                record="tenant_scope_id_limit:llm_budget_limit:per_second_of_month",
                expr="""
                    tenant_scope_id_limit:llm_budget_limit:max
                      / on (tenant) group_left ()
                    max by (tenant) (
                        llm_period_end_timestamp_seconds{period="month"}
                      - llm_period_start_timestamp_seconds{period="month"}
                    )
                """,
            ),
            Rule(
                gap=True,
                comment="""
                    The use per second over the burn-rate windows (5m, 30m, 1h, 6h) and
                    MonthEndOverBudget's day. The use drops to 0 when a month begins, and rate()
                    takes that for a counter reset: a window across it still measures the
                    spending in it.
                """,
                record="tenant_scope_id_limit:llm_budget_used:rate5m",
                expr=_per_limit("sum by (tenant, scope, id) (rate(llm_budget_used_KIND[5m]))"),
            ),
            *(Rule(
                record=f"tenant_scope_id_limit:llm_budget_used:rate{window}",
                expr=_per_limit(
                    f"sum by (tenant, scope, id) (rate(llm_budget_used_KIND[{window}]))"
                ),
            ) for window in ("30m", "1h", "6h", "1d")),
        ],
    )
    attribution = Group("llm-token-exporter.attribution.rules", [
        Rule(
            comment="Tokens no tenant pays for, by reason (no_caller, not_member, "
                    "ambiguous_tenant).",
            record="reason:llm_unattributed_tokens:rate5m",
            expr="sum by (reason) (rate(llm_unattributed_tokens_total[5m]))",
        ),
        Rule(
            comment="""
                UnattributedTokens: the unattributed share of all tokens seen, over 30 minutes.
                Attributed tokens are llm_model_tokens_total (every caller-attributed token has a
                model); unattributed ones are counted apart, so all tokens = the two added.
            """,
            record="job:llm_unattributed_tokens:rate30m",
            expr="sum by (job) (rate(llm_unattributed_tokens_total[30m]))",
        ),
        Rule(
            record="job:llm_tokens:rate30m",
            expr="sum by (job) (rate(llm_model_tokens_total[30m]))",
        ),
        Rule(
            comment="""
                `or ... * 0`: before the first attributed token llm_model_tokens_total has no series
                at all, and the share must then be 100 %, not missing.
            """,
            record="job:llm_unattributed_tokens_per_tokens:ratio_rate30m",
            expr="""
                job:llm_unattributed_tokens:rate30m
                  /
                (
                    job:llm_unattributed_tokens:rate30m
                  +
                    (job:llm_tokens:rate30m or job:llm_unattributed_tokens:rate30m * 0)
                )
            """,
        ),
    ])
    return RuleFile(
        name="recording.yml",
        header="""
            Recording rules of llm-token-exporter, named level:metric:operations (monitoring-mixin
            conventions): `level` is the labels the result keeps, `metric` the counter without its
            `_total`, `operations` what was applied, newest first. The alerts in alerts.yml and the
            SRE dashboard read these series; a panel that must be exact for any time range queries
            the counters directly (increase over the range), not these fixed windows.

            Exact sums need every exporter: each instance has its own ledger (architecture.md "Beyond
            one machine"), so every rule sums over `instance`.
        """,  # noqa: E501 (as the comment is laid out in the YAML)
        groups=[tokens, baseline, cost, budget, attribution],
    )


def alerting_rules(config: Config) -> RuleFile:
    c = config
    spend = Group("llm-token-exporter.spend.alerts", [
        _alert(
            c, "TokenSpike",
            comment="""
                A tenant's token rate far above its usual rate for this hour, all three at once:
                  3   x the same 5 minutes one week ago (weekly seasonality: Monday 10:00 vs
                        Monday 10:00), so a tenant's usual daily peak does not page;
                  3   standard deviations above its mean over the last day (z-score), so a tenant
                      that has simply grown since last week (steady all day) does not either;
                  50  tokens/s absolute floor (180k tokens an hour), so a tiny tenant going from
                      2 to 20 tokens/s does not.
                A tenant with no data one week ago has nothing to compare with and does not fire
                (RunawayAgent still covers a looping agent). __overflow__ is many tenants folded
                together by the series cap, not a tenant.
            """,
            expr="""
                (
                    tenant:llm_tokens:rate5m{tenant!="__overflow__"}
                  > 3 * (tenant:llm_tokens:rate5m offset 1w)
                )
                and
                (
                    (tenant:llm_tokens:rate5m - tenant:llm_tokens:avg_over_time_1d_rate5m)
                  / tenant:llm_tokens:stddev_over_time_1d_rate5m
                  > 3
                )
                and
                tenant:llm_tokens:rate5m > 50
            """,
            for_="15m", severity="warning",
            summary="Tenant {{ $labels.tenant }} is spending tokens far faster than usual.",
            description="""
                Tenant {{ $labels.tenant }} spends {{ $value | humanize }} tokens/s (5-minute
                rate), more than 3 times the
                {{ with printf "tenant:llm_tokens:rate5m{tenant='%s'} offset 1w" $labels.tenant | query }}{{ . | first | value | humanize }}{{ end }}
                tokens/s of the same time last week and more than 3 standard deviations above
                its 1-day average of
                {{ with printf "tenant:llm_tokens:avg_over_time_1d_rate5m{tenant='%s'}" $labels.tenant | query }}{{ . | first | value | humanize }}{{ end }}
                tokens/s, for 15 minutes.
            """,  # noqa: E501 (a template line is one line)
        ),
        _alert(
            c, "CostSpike",
            comment="""
                TokenSpike on cost: a tenant's USD per hour far above its usual cost for this
                hour, all three at once:
                  3   x the same 5 minutes one week ago (weekly seasonality);
                  3   standard deviations above its mean over the last day (z-score);
                  5   USD an hour absolute floor (120 USD a day), so a small tenant going from
                      0.50 to 5 USD an hour does not page.
                It also catches what TokenSpike cannot: the same tokens moved to a dearer model.
                A tenant with no data one week ago does not fire; __overflow__ is not a tenant.
                The value is USD per hour (3600 x the rate per second).
            """,
            expr="""
                (
                    3600 * tenant:llm_cost_usd:rate5m{tenant!="__overflow__"}
                  > 3 * 3600 * (tenant:llm_cost_usd:rate5m offset 1w)
                )
                and
                (
                    (tenant:llm_cost_usd:rate5m - tenant:llm_cost_usd:avg_over_time_1d_rate5m)
                  / tenant:llm_cost_usd:stddev_over_time_1d_rate5m
                  > 3
                )
                and
                tenant:llm_cost_usd:rate5m * 3600 > 5
            """,
            for_="15m", severity="warning",
            summary="Tenant {{ $labels.tenant }} is spending money far faster than usual.",
            description="""
                Tenant {{ $labels.tenant }} spends {{ $value | humanize }} USD an hour (5-minute
                rate), more than 3 times the
                {{ with printf "3600 * tenant:llm_cost_usd:rate5m{tenant='%s'} offset 1w" $labels.tenant | query }}{{ . | first | value | humanize }}{{ end }}
                USD an hour of the same time last week and more than 3 standard deviations above
                its 1-day average of
                {{ with printf "3600 * tenant:llm_cost_usd:avg_over_time_1d_rate5m{tenant='%s'}" $labels.tenant | query }}{{ . | first | value | humanize }}{{ end }}
                USD an hour, for 15 minutes.
            """,  # noqa: E501 (a template line is one line)
        ),
        _alert(
            c, "RunawayAgent",
            comment="""
                The loop pattern (seeds/004: "an agent in a loop can burn through hundreds of
                dollars in minutes"): one agent, for one billing tenant, over 15 minutes,
                  10   x its own average over the last week, and at least
                  100  tokens/s (360k tokens an hour, about 1-5 USD an hour at list prices), so that
                       a rarely used agent having one busy conversation does not page;
                or, for an agent that has no week of history (its counter did not exist a week
                ago: a new agent, or a new Prometheus), whose weekly average means nothing,
                  1000 tokens/s (3.6M tokens an hour): a new agent that loops is the case to catch.
                A week, not a day: a weekday-only agent's Monday morning is far above its Sunday.
            """,
            expr="""
                (
                    tenant_agent:llm_tokens:rate15m{agent!="__overflow__", tenant!="__overflow__"}
                  > 10 * tenant_agent:llm_tokens:rate1w
                  and
                    tenant_agent:llm_tokens:rate15m > 100
                  and on (tenant, agent)
                    max by (tenant, agent) (llm_agent_tokens_total offset 1w)
                )
                or
                (
                    tenant_agent:llm_tokens:rate15m{agent!="__overflow__", tenant!="__overflow__"}
                  > 1000
                  unless on (tenant, agent)
                    max by (tenant, agent) (llm_agent_tokens_total offset 1w)
                )
            """,
            for_="10m", severity="critical",
            summary="Agent {{ $labels.agent }} is burning tokens far above its baseline; it may "
                    "be looping.",
            description="""
                Agent {{ $labels.agent }}, called by members of tenant {{ $labels.tenant }}, has
                used {{ $value | humanize }} tokens/s over the last 15 minutes, for 10 minutes; its
                average over the last week is
                {{ with printf "tenant_agent:llm_tokens:rate1w{tenant='%s',agent='%s'}" $labels.tenant $labels.agent | query }}{{ . | first | value | humanize }}{{ end }}
                tokens/s (the alert fires above 10 times that and 100 tokens/s, or above 1000
                tokens/s for an agent first seen less than a week ago).
            """,  # noqa: E501 (a template line is one line)
        ),
        _alert(
            c, "RunawayTrace",
            comment="""
                Any trace that went over a runaway limit in the last 15 minutes: more attributed
                model calls (runaway_max_calls, 50 by default) or tokens (runaway_max_tokens,
                200 000) in one trace than a turn needs, counted once per trace by the exporter
                under the tenant and outermost agent of the call that went over (`none`: outside
                any agent). One trace is enough: the exporter's limits are the threshold. No
                `for`: the count is already the event. The second branch catches the first
                runaway of a tenant and agent, whose series appears already at 1 (as in
                UnpricedModel).
            """,
            expr="""
                sum by (tenant, agent) (increase(llm_runaway_traces_total[15m])) > 0
                or
                sum by (tenant, agent) (
                    llm_runaway_traces_total
                  unless
                    llm_runaway_traces_total offset 15m
                ) > 0
            """,
            for_="0m", severity="warning",
            summary="A trace {{ if eq $labels.agent \"none\" }}outside any agent{{ else }}of agent "
                    "{{ $labels.agent }}{{ end }} went over the runaway limits (tenant "
                    "{{ $labels.tenant }}).",
            description="""
                In the last 15 minutes, {{ $value | humanize }} trace(s) of tenant
                {{ $labels.tenant }}
                {{ if eq $labels.agent "none" }}outside any agent{{ else }}under agent {{ $labels.agent }}{{ end }}
                went over a runaway limit: more model calls (runaway_max_calls, 50 by default) or
                more tokens (runaway_max_tokens, 200 000 by default) in one trace than a turn
                needs. It may be a loop.
            """,  # noqa: E501 (a template line is one line)
        ),
    ])
    # Whose budget: "tenant acme", "member alice in tenant acme", "agent support-bot in ...".
    who = ('{{ $labels.scope }} {{ $labels.id }}{{ if ne $labels.scope "tenant" }} in tenant '
           '{{ $labels.tenant }}{{ end }}')
    unit = '{{ if eq $labels.limit "usd" }}USD{{ else }}tokens{{ end }}'
    kind = '{{ if eq $labels.limit "usd" }}USD{{ else }}token{{ end }}'

    def threshold(state: str) -> str:
        return (
            '{{ with printf "max(llm_budget_threshold_ratio{tenant=\'%s\',scope=\'%s\','
            f"id='%s',state='{state}'}})\" $labels.tenant $labels.scope $labels.id | query }}}}"
            "{{ . | first | value | humanizePercentage }}{{ end }}"
        )

    def budget_value(series: str, factor: str = "") -> str:
        return (
            f'{{{{ with printf "{factor}{series}{{tenant=\'%s\',scope=\'%s\',id=\'%s\','
            "limit='%s'}\" $labels.tenant $labels.scope $labels.id $labels.limit | query }}"
            "{{ . | first | value | humanize }}{{ end }}"
        )

    def reached(state: str) -> str:
        return f"""
            (
                tenant_scope_id:llm_budget_used_per_limit:max_ratio
              >= on (tenant, scope, id)
                max by (tenant, scope, id) (llm_budget_threshold_ratio{{state="{state}"}})
            )
        """

    def _join(*parts: str) -> str:
        return "\n".join("\n".join(_lines(part)) for part in parts)

    def burning(long: str, short: str, factor: float) -> str:
        """Multi-window burn rate: over ``factor`` both over ``long`` and over ``short``,
        for a budget not yet exhausted."""
        def over(window: str) -> str:
            return f"""
                (
                    tenant_scope_id_limit:llm_budget_used:rate{window}
                  / tenant_scope_id_limit:llm_budget_limit:per_second_of_month
                  > {factor}
                )
            """
        return _join(over(long), "and", over(short), "unless on (tenant, scope, id)",
                     reached("exhausted"))

    budgets = Group("llm-token-exporter.budget.alerts", [
        _alert(
            c, "BudgetWarning",
            comment="""
                A budget's use this month (the larger of used/limit over its token and USD
                limits, all exporters summed) is at or over its own warning threshold
                (llm_budget_threshold_ratio{state="warning"}, 0.5 by default, per budget), and
                under its throttle threshold: of BudgetWarning, BudgetCritical and
                BudgetExhausted exactly the highest reached fires (`unless`), so no
                Alertmanager inhibition is needed. The use drops to 0 when the tenant's month
                begins, and the alert resolves.
            """,
            expr=_join(reached("warning"), "unless on (tenant, scope, id)", reached("throttle")),
            for_="5m", severity="warning",
            summary=f"The budget of {who} is over its warning threshold.",
            description=f"""
                The monthly budget of {who} is {{{{ $value | humanizePercentage }}}} used (the
                larger of its token and USD shares, over every exporter), at or over its
                warning threshold of
                {threshold("warning")}
                and under its throttle threshold of
                {threshold("throttle")}.
            """,
        ),
        _alert(
            c, "BudgetCritical",
            comment="""
                At or over the budget's throttle threshold (0.8 by default) and under its
                exhausted threshold: critical, the budget is close to being used up.
            """,
            expr=_join(reached("throttle"), "unless on (tenant, scope, id)", reached("exhausted")),
            for_="5m", severity="critical",
            summary=f"The budget of {who} is over its throttle threshold.",
            description=f"""
                The monthly budget of {who} is {{{{ $value | humanizePercentage }}}} used (the
                larger of its token and USD shares, over every exporter), at or over its
                throttle threshold of
                {threshold("throttle")}
                and under its exhausted threshold of
                {threshold("exhausted")}.
            """,
        ),
        _alert(
            c, "BudgetExhausted",
            comment="""
                At or over the budget's exhausted threshold (1.0 by default): the month's budget
                is used up, and everything spent from now on is over it.
            """,
            expr=reached("exhausted"),
            for_="5m", severity="critical",
            summary=f"The budget of {who} is exhausted.",
            description=f"""
                The monthly budget of {who} is {{{{ $value | humanizePercentage }}}} used (the
                larger of its token and USD shares, over every exporter), at or over its
                exhausted threshold of
                {threshold("exhausted")}:
                what it spends until the end of the month is over budget.
            """,
        ),
        _alert(
            c, "BudgetBurnRateFast",
            comment="""
                Multi-window, multi-burn-rate (Google SRE workbook, "Alerting on SLOs"), on a
                monthly budget: the burn rate is the use's rate over the even pace (limit / the
                month's seconds); at 1 the limit is used up exactly at the end of the month.
                Page at 14.4: 2 % of a 30-day month's limit in 1 hour (1.9 % of a 31-day one,
                2.1 % of February), the whole limit in about 2 days; over the last hour and
                confirmed over the last 5 minutes (1/12 of it), so it resolves minutes after the
                burn stops. For tokens and USD limits (label `limit`), every scope. Not for a
                budget already exhausted: BudgetExhausted has paged for it.
            """,
            expr=burning("1h", "5m", 14.4),
            for_="2m", severity="critical",
            summary=f"The {kind} budget of {who} is burning fast.",
            description=f"""
                The {kind} budget of {who} is being used {{{{ $value | printf "%.1f" }}}} times as
                fast as the pace that uses it up at the end of the month, over the last hour and
                the last 5 minutes (threshold 14.4: 2 % of a 30-day month's limit an hour):
                {budget_value("tenant_scope_id_limit:llm_budget_used:rate1h", "3600 * ")}
                {unit} in the last hour, of a limit of
                {budget_value("tenant_scope_id_limit:llm_budget_limit:max")}
                {unit} for the month.
            """,
        ),
        _alert(
            c, "BudgetBurnRateSlow",
            comment="""
                The ticket tier: burn rate over 6, 5 % of a 30-day month's limit in 6 hours (the
                whole limit in 5 days), over the last 6 hours and confirmed over the last 30
                minutes. A burn just over 1 (over budget by the month's end, but slowly) is
                MonthEndOverBudget's.
            """,
            expr=burning("6h", "30m", 6),
            for_="15m", severity="warning",
            summary=f"The {kind} budget of {who} is burning faster than it can last.",
            description=f"""
                The {kind} budget of {who} is being used {{{{ $value | printf "%.1f" }}}} times as
                fast as the pace that uses it up at the end of the month, over the last 6 hours
                and the last 30 minutes (threshold 6: 5 % of a 30-day month's limit in 6 hours):
                {budget_value("tenant_scope_id_limit:llm_budget_used:rate6h", "21600 * ")}
                {unit} in the last 6 hours, of a limit of
                {budget_value("tenant_scope_id_limit:llm_budget_limit:max")}
                {unit} for the month.
            """,
        ),
        _alert(
            c, "MonthEndOverBudget",
            comment="""
                The month-end forecast: this month's use plus the last day's pace times the
                seconds left until the tenant's month ends (llm_period_end_timestamp_seconds,
                in the tenant's timezone), over the limit, while the use is still under it
                (then BudgetExhausted's). Not predict_linear(): its horizon is one scalar, and
                each tenant's month ends at its own instant. Not deriv(): a least-squares slope
                through the drop to 0 at the month's start is meaningless; rate() is
                reset-aware, and on a use that only grows it is the slope through the window's
                ends. A day, not hours, so that a busy morning is not projected onto a month.
                Not before the month is a day old: until then the day's pace is partly last
                month's, and the month's few hours too little to judge.
            """,
            expr="""
                (
                    tenant_scope_id_limit:llm_budget_used:sum
                  +
                    tenant_scope_id_limit:llm_budget_used:rate1d
                  * on (tenant) group_left ()
                    max by (tenant) (llm_period_end_timestamp_seconds{period="month"} - time())
                )
                > tenant_scope_id_limit:llm_budget_limit:max
                and
                tenant_scope_id_limit:llm_budget_used:sum < tenant_scope_id_limit:llm_budget_limit:max
                and on (tenant)
                max by (tenant) (time() - llm_period_start_timestamp_seconds{period="month"}) > 86400
            """,  # noqa: E501
            for_="1h", severity="warning",
            summary=f"The {kind} budget of {who} will be over its limit by the end of the month.",
            description=f"""
                At the pace of the last day
                ({budget_value("tenant_scope_id_limit:llm_budget_used:rate1d", "3600 * ")}
                {unit} an hour), the {kind} budget of {who} reaches {{{{ $value | humanize }}}}
                {unit} by the end of the month, over its limit of
                {budget_value("tenant_scope_id_limit:llm_budget_limit:max")}
                {unit}; it has used
                {budget_value("tenant_scope_id_limit:llm_budget_used:sum")}
                {unit} so far.
            """,
        ),
    ])
    attribution = Group("llm-token-exporter.attribution.alerts", [
        _alert(
            c, "UnattributedTokens",
            comment="""
                More than 5 % of all tokens seen over 30 minutes are paid by no tenant (no caller,
                a caller in no tenant, or a caller in several tenants who names none), and at least
                1 token/s of them (1,800 tokens in 30 minutes), so that one cron run on a quiet
                platform does not fire.
            """,
            expr="""
                job:llm_unattributed_tokens_per_tokens:ratio_rate30m > 0.05
                and on (job)
                job:llm_unattributed_tokens:rate30m > 1
            """,
            for_="15m", severity="warning",
            summary="A notable share of LLM tokens cannot be attributed to a tenant.",
            description="""
                {{ $value | humanizePercentage }} of the tokens {{ $labels.job }} saw over the last
                30 minutes
                ({{ with printf "job:llm_unattributed_tokens:rate30m{job='%s'}" $labels.job | query }}{{ . | first | value | humanize }}{{ end }}
                tokens/s) are attributed to no tenant (threshold 5 %), for 15 minutes. Break them
                down with sum by (reason) (rate(llm_unattributed_tokens_total[30m])).
            """,  # noqa: E501 (a template line is one line)
        ),
        _alert(
            c, "UnpricedModel",
            comment="""
                Any token of a model missing from the price catalog in the last hour: its cost is
                counted as 0, so every cost panel and budget under-reports. The second branch
                catches a model whose series is new: increase() needs two samples, and a model
                used once shows up already at its final value.
            """,
            expr="""
                sum by (model) (increase(llm_unpriced_tokens_total[1h])) > 0
                or
                sum by (model) (llm_unpriced_tokens_total unless llm_unpriced_tokens_total offset 1h) > 0
            """,  # noqa: E501
            for_="10m", severity="warning",
            summary="Model {{ $labels.model }} is missing from the price catalog.",
            description="""
                {{ $value | humanize }} tokens of model {{ $labels.model }} in the last hour have
                no price in the catalog, so their cost counts as 0 USD.
            """,
        ),
        _alert(
            c, "UnclassifiedUsage",
            comment="""
                Any token in the last hour on a span that is no model call, with no model call
                under it that reported usage (llm_unclassified_usage_tokens_total): an
                instrumentation whose model calls the exporter does not recognise. Those tokens
                are in no tenant's metrics. The series exist at 0 from the first scrape, so
                increase() sees the first tokens.
            """,
            expr="""
                sum by (job, reason) (increase(llm_unclassified_usage_tokens_total[1h])) > 0
            """,
            for_="10m", severity="warning",
            summary="LLM usage on spans that are not recognised as model calls.",
            description="""
                {{ $value | humanize }} tokens in the last hour were reported by spans of kind
                {{ $labels.reason }} that {{ $labels.job }} does not recognise as model calls,
                with no model call under them: they are in no tenant's metrics.
            """,
        ),
        _alert(
            c, "SeriesOverflow",
            comment="""
                An exporter folded ids into __overflow__ in the last hour: a metric reached
                max_series_per_metric distinct series (20,000 by default), so the tokens of every id
                first seen since are counted together under __overflow__ (totals stay exact, the
                per-id numbers of new ids are lost). The cap is too low for the platform, or an id
                explodes (a request id used as agent or member id). Any fold counts: once a metric
                is at its cap, every new id folds. The second branch catches the first fold, whose
                series appears already at its value (as in UnpricedModel).
            """,
            expr="""
                sum by (job, instance, metric) (increase(llm_exporter_series_overflow_total[1h])) > 0
                or
                sum by (job, instance, metric) (
                    llm_exporter_series_overflow_total
                  unless
                    llm_exporter_series_overflow_total offset 1h
                ) > 0
            """,  # noqa: E501
            for_="15m", severity="warning",
            summary="Metric {{ $labels.metric }} has reached its series cap; new ids fold into "
                    "__overflow__.",
            description="""
                The exporter {{ $labels.instance }} has folded {{ $value | humanize }} increments
                of {{ $labels.metric }} into its __overflow__ series in the last hour: the metric
                has max_series_per_metric distinct series, so ids first seen since are counted
                together under __overflow__ (totals stay exact, per-id numbers do not).
            """,
        ),
    ])
    up = select("up", c.selector)
    send_failed = select("otelcol_exporter_send_failed_spans_total", c.collector_selector)
    enqueue_failed = select("otelcol_exporter_enqueue_failed_spans_total", c.collector_selector)
    refused = select("otelcol_receiver_refused_spans_total", c.collector_selector)
    pipeline = Group("llm-token-exporter.pipeline.alerts", [
        _alert(
            c, "ExporterDown",
            comment="""
                The exporter is unreachable for 5 minutes, or Prometheus has no exporter target at
                all (absent). Critical: while it is down the collector queues and then drops spans,
                and nothing else here can fire.
            """,
            expr=f"""
                {up} == 0
                or
                absent({up})
            """,
            for_="5m", severity="critical",
            summary="The LLM token exporter cannot be scraped.",
            description="""
                {{ if $labels.instance }}Prometheus has failed to scrape the exporter
                {{ $labels.instance }} (job {{ $labels.job }}){{ else }}Prometheus has no target
                at all for job {{ $labels.job }}{{ end }} for 5 minutes: token counts, alerts and
                dashboards are not being updated.
            """,
        ),
        _alert(
            c, "DirectoryStale",
            comment="""
                The last successful directory load is more than 15 minutes old (it refreshes every
                60 s by default, so 15 failed refreshes in a row). An exporter that has never loaded
                its directory exposes no timestamp but counts failures: its directory is infinitely
                old (+Inf), the second branch.
            """,
            expr="""
                time() - llm_exporter_directory_last_success_timestamp_seconds > 15 * 60
                or
                (
                    llm_exporter_directory_refresh_failures_total > 0
                  unless on (job, instance)
                    llm_exporter_directory_last_success_timestamp_seconds
                ) * 0 + Inf
            """,
            for_="5m", severity="warning",
            summary="The exporter's tenant directory is stale.",
            description="""
                The exporter {{ $labels.instance }} has
                {{ if eq ($value | humanizeDuration) "+Inf" }}never loaded its tenant directory
                since it started: it knows no member, so every token counts as
                unattributed{{ else }}not loaded its tenant directory for
                {{ $value | humanizeDuration }} (threshold 15m): it keeps the last good one, so
                members, agents and workflows added since are unknown to it{{ end }}.
            """,
        ),
        _alert(
            c, "SpansRejected",
            comment="""
                More than 0.1 refusals/s (6 a minute) of one reason, over 10 minutes. A refused
                span's tokens are not counted unless the sender retries it (OTLP senders retry
                429/503, i.e. `overloaded`; never a 4xx).
            """,
            expr="""
                sum by (job, reason) (rate(llm_exporter_spans_rejected_total[10m])) > 0.1
            """,
            for_="10m", severity="warning",
            summary="The exporter is refusing spans ({{ $labels.reason }}).",
            description="""
                {{ $labels.job }} has refused {{ $value | printf "%.2f" }} spans/s with reason
                {{ $labels.reason }} over the last 10 minutes (threshold 0.1/s, for 10 minutes; a
                request refused before its spans could be read counts once).
            """,
        ),
        # The collector between the applications and the exporter (otel-collector/config.yaml),
        # from its own telemetry (collector-contrib 0.137: the exporterhelper and receiverhelper
        # counters, `_total` in Prometheus).
        _alert(
            c, "CollectorExportFailed",
            comment="""
                The collector gave up on spans it had accepted: exports that failed after every
                retry (retry_on_failure: 10 minutes in otel-collector/config.yaml) or that the
                exporter refused for good (a 4xx answer is not retried). They are lost: their
                tokens are never counted, and the applications believe them delivered. Over 5
                minutes, for 5 minutes: a failure that lasts, not one bad batch (the collector's
                log has those). The counter exists from the first export (it counts 0 on success).
            """,
            expr=f"""
                sum by (job, instance, exporter) (
                  increase({send_failed}[5m])
                ) > 0
            """,  # noqa: E501
            for_="5m", severity="critical",
            summary="The OpenTelemetry Collector is losing spans it cannot deliver "
                    "({{ $labels.exporter }}).",
            description="""
                The collector {{ $labels.instance }} (job {{ $labels.job }}) failed to deliver
                {{ $value | humanize }} spans through exporter {{ $labels.exporter }} in the last
                5 minutes, and has been failing for 5 minutes: each failed after every retry or
                was refused for good, and is lost (its tokens are never counted).
            """,
        ),
        _alert(
            c, "CollectorQueueFull",
            comment="""
                The exporter's sending queue (sending_queue: 5000 batches in
                otel-collector/config.yaml) is full, so the collector drops the spans it cannot
                enqueue: the exporter takes spans more slowly than the applications send them, or
                not at all while it retries. The batch processor in front does not pass the error
                back to the applications: the spans are lost. Over 5 minutes, for 5 minutes.
            """,
            expr=f"""
                sum by (job, instance, exporter) (
                  increase({enqueue_failed}[5m])
                ) > 0
            """,  # noqa: E501
            for_="5m", severity="critical",
            summary="The OpenTelemetry Collector's sending queue is full: it drops spans "
                    "({{ $labels.exporter }}).",
            description="""
                The collector {{ $labels.instance }} (job {{ $labels.job }}) dropped
                {{ $value | humanize }} spans in the last 5 minutes because the sending queue of
                exporter {{ $labels.exporter }} was full, and has been dropping for 5 minutes:
                those spans are lost (their tokens are never counted).
            """,
        ),
        _alert(
            c, "CollectorSpansRefused",
            comment="""
                The collector's receiver refuses spans: the pipeline behind it said no (the
                memory_limiter, near the collector's memory limit, is the usual one). The sender is
                told to retry later (gRPC UNAVAILABLE, HTTP 503), and drops the spans once it gives
                up. Brief refusals are the limiter doing its job: any in every 5 minutes, for 10
                minutes. A warning: the senders still hold the spans for a while.
            """,
            expr=f"""
                sum by (job, instance, receiver, transport) (
                  increase({refused}[5m])
                ) > 0
            """,  # noqa: E501
            for_="10m", severity="warning",
            summary="The OpenTelemetry Collector is refusing spans from applications "
                    "({{ $labels.receiver }}/{{ $labels.transport }}).",
            description="""
                The collector {{ $labels.instance }} (job {{ $labels.job }}) refused
                {{ $value | humanize }} spans on receiver {{ $labels.receiver }}
                ({{ $labels.transport }}) in the last 5 minutes, and has been refusing for 10
                minutes: the senders are told to retry later, and drop the spans when they give
                up.
            """,
        ),
    ])
    return RuleFile(
        name="alerts.yml",
        header="""
            Alerts of llm-token-exporter (spend, budgets, attribution, the pipeline), and of the
            OpenTelemetry Collector in front of it. Monitoring-mixin
            conventions: names <Thing><Condition>, a `for`, a `severity` (critical pages, warning
            goes to a queue), a `summary`, a `description` with the numbers, and a `runbook_url`
            into docs/runbook.md, one section per alert.

            Thresholds are written into the expressions, each with a comment that says why; change
            them in prometheus/build_rules.py and in docs/runbook.md together. Tested by
            prometheus/tests/ (promtool test rules). The series named tenant:..., tenant_agent:...
            and job:... come from recording.yml.
        """,
        groups=[spend, budgets, attribution, pipeline],
    )


# -- Writing ----------------------------------------------------------------------------------


def _quoted(value: str) -> str:
    """``value`` as a YAML scalar: plain when YAML reads it back as the same string."""
    try:
        if yaml.safe_load(f"k: {value}") == {"k": value} and "\n" not in value:
            return value
    except yaml.YAMLError:
        pass
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}".rstrip() if line else f"{indent}#" for line in _lines(text)]


def _literal(key: str, text: str, indent: str, block: bool = False) -> list[str]:
    """A literal block (its text ends with a newline), or a plain scalar for one line unless
    ``block``."""
    lines = _lines(text)
    if len(lines) == 1 and not block:
        return [f"{indent}{key}: {_quoted(lines[0])}"]
    return [f"{indent}{key}: |"] + [f"{indent}  {line}" if line else "" for line in lines]


def _folded(key: str, text: str, indent: str) -> list[str]:
    lines = _lines(text)
    for line in lines:
        # Folding joins lines with one space: a blank line, an indented line or doubled
        # spaces would come back as something else.
        if not line or line != line.strip() or "  " in line:
            raise ValueError(f"{key}: cannot fold {line!r}")
    if len(lines) == 1:
        return [f"{indent}{key}: {_quoted(lines[0])}"]
    return [f"{indent}{key}: >-"] + [f"{indent}  {line}" for line in lines]


def _rule(rule: Rule) -> list[str]:
    out: list[str] = []
    if rule.alert:
        out.append(f"      - alert: {rule.alert}")
        if rule.comment:
            out += _comment(rule.comment, "        ")
        out += _literal("expr", rule.expr, "        ", block=True)
        out.append(f"        for: {rule.for_}")
        out.append("        labels:")
        out += [f"          {k}: {_quoted(v)}" for k, v in rule.labels.items()]
        out.append("        annotations:")
        out.append(f"          summary: {_quoted(rule.summary)}")
        out += _folded("description", rule.description, "          ")
        out.append(f"          runbook_url: {_quoted(rule.runbook_url)}")
    else:
        if rule.comment:
            out += _comment(rule.comment, "      ")
        out.append(f"      - record: {rule.record}")
        out += _literal("expr", rule.expr, "        ")
    return out


def _text(rule_file: RuleFile, config: Config) -> str:
    out = [
        f"# GENERATED by {GENERATOR}: change the script, not this file. Settings:",
        *(f"#   {f.name:<20}{getattr(config, f.name)}" for f in fields(config)),
        "#",
    ]
    out += _comment(rule_file.header, "")
    out.append("groups:")
    for number, group in enumerate(rule_file.groups):
        if number:
            out.append("")
        if group.comment:
            out += _comment(group.comment, "  ")
        out.append(f"  - name: {group.name}")
        if group.interval:
            out.append(f"    interval: {group.interval}")
        out.append("    rules:")
        for index, rule in enumerate(group.rules):
            if index and (rule.gap or rule.alert):
                out.append("")
            out += _rule(rule)
    return "\n".join(out) + "\n"


def _expected(rule_file: RuleFile) -> dict:
    """What YAML must read from the rendering of ``rule_file``."""
    groups = []
    for group in rule_file.groups:
        rules = []
        for r in group.rules:
            expr = "\n".join(_lines(r.expr))
            expr = expr + "\n" if "\n" in expr or r.alert else expr
            if r.alert:
                rules.append({
                    "alert": r.alert, "expr": expr, "for": r.for_, "labels": r.labels,
                    "annotations": {
                        "summary": r.summary, "description": " ".join(_lines(r.description)),
                        "runbook_url": r.runbook_url,
                    },
                })
            else:
                rules.append({"record": r.record, "expr": expr})
        groups.append({"name": group.name, **({"interval": group.interval}
                                               if group.interval else {}), "rules": rules})
    return {"groups": groups}


def rule_files(config: Config) -> list[RuleFile]:
    return [alerting_rules(config), recording_rules(config)]


def render(config: Config | None = None) -> dict[str, str]:
    """File name -> YAML text; with the default config, exactly as committed."""
    config = config or Config()
    files = {}
    for rule_file in rule_files(config):
        text = _text(rule_file, config)
        if yaml.safe_load(text) != _expected(rule_file):
            raise AssertionError(f"{rule_file.name}: the YAML written reads back differently")
        files[rule_file.name] = text
    return files


def load_config(path: str | None, overrides: dict[str, str | None]) -> Config:
    settings: dict[str, str] = {}
    if path:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in fields(Config)}
        if not isinstance(loaded, dict) or set(loaded) - known:
            raise ValueError(f"{path}: a mapping of {', '.join(sorted(known))} only")
        settings.update(loaded)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return replace(Config(), **settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="a YAML file: selector, collector_selector, "
                                         "runbook_url_base")
    parser.add_argument("--selector", help=f"the exporter's job (default {Config.selector})")
    parser.add_argument("--collector-selector",
                        help=f"the collector's job (default {Config.collector_selector})")
    parser.add_argument("--runbook-url-base",
                        help=f"the runbook's URL (default {Config.runbook_url_base})")
    parser.add_argument("--out-dir", type=Path, default=OUT,
                        help="where to write alerts.yml and recording.yml (default: "
                             "prometheus/rules/)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the files in --out-dir differ from the rendering")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, {
            "selector": args.selector, "collector_selector": args.collector_selector,
            "runbook_url_base": args.runbook_url_base,
        })
    except (OSError, ValueError, TypeError, yaml.YAMLError) as exc:
        parser.error(str(exc))
    files = render(config)
    if args.check:
        stale = [name for name, text in files.items()
                 if not (args.out_dir / name).is_file()
                 or (args.out_dir / name).read_text() != text]
        for name in stale:
            print(f"stale: {args.out_dir / name} (run python {GENERATOR})", file=sys.stderr)
        return 1 if stale else 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out_dir / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
