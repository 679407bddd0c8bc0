"""What a tenant admin sees on the tenant overview dashboard, read back from ``/metrics``.

Pure functions, no I/O: :func:`parse_metrics` reads Prometheus exposition text,
:func:`tenant_view` builds one tenant's cards and top-10 lists from it, and :func:`render`
draws them as text. Numbers are summed over ``type`` (input + output), as the panels do;
display names come from the ``_info`` series, ids stand in where a name is missing. The
tenant's own name is in no metric: the caller passes it (the demo reads it from the
directory).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "Bar", "Sample", "Samples", "TenantView", "format_usd", "parse_metrics", "render",
    "tenant_view", "tenants", "unattributed", "unpriced",
]

TOP = 10
_CENT = Decimal("0.01")
_SIGNIFICANT = 4  # digits of a cost below one dollar
_LABEL_WIDTH = 24  # longer names are cut with an ellipsis
_MIN_BAR_WIDTH = 10
_BLOCK = "█"


@dataclass(frozen=True)
class Sample:
    """One exposition sample: its name (``_total`` included), labels and value."""

    name: str
    labels: Mapping[str, str]
    value: float


class Samples:
    """Parsed exposition samples, looked up by sample name. Immutable once built."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        by_name: dict[str, list[Sample]] = {}
        for sample in samples:
            by_name.setdefault(sample.name, []).append(sample)
        self._by_name = {name: tuple(found) for name, found in by_name.items()}

    def named(self, name: str) -> tuple[Sample, ...]:
        """Every sample called ``name`` (empty when there is none)."""
        return self._by_name.get(name, ())

    def sum_by(self, name: str, label: str, **match: str) -> dict[str, float]:
        """``sum by (label) (name{match})``."""
        out: dict[str, float] = {}
        for sample in self.named(name):
            if all(sample.labels.get(k) == v for k, v in match.items()):
                key = sample.labels.get(label, "")
                out[key] = out.get(key, 0.0) + sample.value
        return out

    def __len__(self) -> int:
        return sum(len(found) for found in self._by_name.values())


@dataclass(frozen=True)
class Bar:
    """One row of a top-10: the id, the name shown, and its tokens."""

    id: str
    label: str
    tokens: int


@dataclass(frozen=True)
class TenantView:
    """One tenant's overview: the four cards and the four top-10 lists, largest first.

    ``name`` is the tenant's display name ("" shows the id). ``unpriced`` are the tenant's
    models that have no price at all in this tenant: their tokens are in the token cards but
    in no cost, largest first.
    """

    tenant: str
    agent_tokens: int
    workflow_tokens: int
    total_tokens: int
    cost_usd: Decimal
    models: tuple[Bar, ...]
    agents: tuple[Bar, ...]
    workflows: tuple[Bar, ...]
    members: tuple[Bar, ...]
    name: str = ""
    unpriced: tuple[Bar, ...] = ()


def parse_metrics(text: str) -> Samples:
    """Prometheus text exposition (what ``GET /metrics`` returns) to :class:`Samples`."""
    return Samples(
        Sample(s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    )


def _tokens(samples: Samples, metric: str, label: str, tenant: str) -> dict[str, int]:
    found = samples.sum_by(metric, label, tenant=tenant)
    return {key: int(round(value)) for key, value in found.items() if round(value) > 0}


def _names(samples: Samples, metric: str, label: str, **match: str) -> dict[str, str]:
    return {
        s.labels[label]: s.labels.get("name") or s.labels[label]
        for s in samples.named(metric)
        if label in s.labels and all(s.labels.get(k) == v for k, v in match.items())
    }


def _top(tokens: Mapping[str, int], names: Mapping[str, str], n: int) -> tuple[Bar, ...]:
    bars = [Bar(key, names.get(key, key), value) for key, value in tokens.items()]
    bars.sort(key=lambda b: (-b.tokens, b.label.casefold(), b.id))
    return tuple(bars[:n])


def _exact(value: float) -> Decimal:
    # The exposition writes each float's shortest repr, so this is the exact decimal written.
    return Decimal(repr(value))


def tenant_view(
    samples: Samples, tenant: str, *, top: int = TOP, name: str = ""
) -> TenantView:
    """The tenant overview for ``tenant`` (shown as ``name``), from parsed ``/metrics``.

    A model is in ``unpriced`` when it has tokens in ``llm_unpriced_tokens_total`` (which has
    no tenant label) and no cost series in this tenant: then every one of the tenant's calls
    of it went unpriced, and its tokens here are exact. A model priced for some calls and not
    for others (a response snapshot with a price of its own) is counted platform-wide by
    :func:`unpriced` only.
    """
    models = _tokens(samples, "llm_model_tokens_total", "model", tenant)
    agents = _tokens(samples, "llm_agent_tokens_total", "agent", tenant)
    workflows = _tokens(samples, "llm_workflow_tokens_total", "workflow", tenant)
    members = _tokens(samples, "llm_member_tokens_total", "member", tenant)
    costs = samples.sum_by("llm_model_cost_usd_total", "model", tenant=tenant)
    cost = sum((_exact(v) for v in costs.values()), Decimal(0))
    unpriced_models = {
        model: models[model] for model in unpriced(samples)
        if model in models and model not in costs
    }
    return TenantView(
        tenant=tenant,
        agent_tokens=sum(agents.values()),
        workflow_tokens=sum(workflows.values()),
        total_tokens=sum(models.values()),
        cost_usd=cost,
        models=_top(models, {}, top),
        agents=_top(agents, _names(samples, "llm_agent_info", "agent"), top),
        workflows=_top(workflows, _names(samples, "llm_workflow_info", "workflow"), top),
        members=_top(members, _names(samples, "llm_member_info", "member", tenant=tenant), top),
        name=name,
        unpriced=_top(unpriced_models, {}, len(unpriced_models)),
    )


def tenants(samples: Samples) -> list[str]:
    """Every tenant with members in the directory or with attributed tokens, sorted."""
    found = {s.labels.get("tenant", "") for s in samples.named("llm_member_info")}
    found |= {s.labels.get("tenant", "") for s in samples.named("llm_model_tokens_total")}
    return sorted(found - {""})


def unattributed(samples: Samples) -> dict[str, int]:
    """Tokens excluded from cost metrics, by reason (rule R3 of docs/attribution.md)."""
    found = samples.sum_by("llm_unattributed_tokens_total", "reason")
    return {reason: int(round(value)) for reason, value in sorted(found.items())}


def unpriced(samples: Samples) -> dict[str, int]:
    """Attributed tokens of models missing from the price catalog, by model (rule R7)."""
    found = samples.sum_by("llm_unpriced_tokens_total", "model")
    return {model: int(round(value)) for model, value in sorted(found.items()) if value}


def _fit(label: str, width: int) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _chart(title: str, bars: tuple[Bar, ...], width: int) -> list[str]:
    lines = [title]
    if not bars:
        return lines + ["  (no usage)"]
    label_width = min(max(len(b.label) for b in bars), _LABEL_WIDTH)
    values = [f"{b.tokens:,}" for b in bars]
    value_width = max(len(v) for v in values)
    bar_width = max(width - label_width - value_width - 6, _MIN_BAR_WIDTH)
    peak = bars[0].tokens
    for bar, value in zip(bars, values, strict=True):
        # Rounded half up, in integers; any usage shows at least one block.
        length = max((2 * bar.tokens * bar_width + peak) // (2 * peak), 1)
        blocks = _BLOCK * length
        label = _fit(bar.label, label_width)
        lines.append(f"  {label:<{label_width}}  {blocks:<{bar_width}}  {value:>{value_width}}")
    return lines


def format_usd(amount: Decimal) -> str:
    """A cost as a person reads it, rounded half up: cents from one dollar on
    (``$1,234.30``), four significant digits below (``$0.9365``, ``$0.001037``, ``$0.50``),
    ``$0.00`` for nothing."""
    if amount < 0:
        return "-" + format_usd(-amount)
    if amount == 0:
        return "$0.00"
    if amount < 1:
        # quantum: the 4th significant digit (0.0010365 -> 0.000001)
        digits = _SIGNIFICANT - 1 - amount.adjusted()
        rounded = amount.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
        if rounded < 1:
            text = f"{rounded:f}".rstrip("0")
            decimals = len(text.partition(".")[2])
            return "$" + (text + "0" * (2 - decimals) if decimals < 2 else text)
    return f"${amount.quantize(_CENT, rounding=ROUND_HALF_UP):,.2f}"


def render(view: TenantView, width: int = 80) -> str:
    """The overview as text: cards with thousands separators, the cost as
    :func:`format_usd` writes it, a line per model that has no price, each top-10 as bars
    scaled to its largest row. No trailing newline."""
    cards = (
        ("Agent tokens", f"{view.agent_tokens:,}"),
        ("Workflow tokens", f"{view.workflow_tokens:,}"),
        ("Total tokens", f"{view.total_tokens:,}"),
        ("Cost", format_usd(view.cost_usd)),
    )
    value_width = max(len(value) for _, value in cards)
    shown = view.tenant if not view.name or view.name == view.tenant else (
        f"{view.name} ({view.tenant})"
    )
    lines = [f"Tenant {shown}: core resource consumption"]
    lines += [f"  {name:<17}{value:>{value_width}}" for name, value in cards]
    lines.append("  (agent and workflow tokens overlap where an agent runs a workflow)")
    for bar in view.unpriced:
        rest = f": {bar.tokens:,} tokens not in the cost"
        label = _fit(bar.label, max(width - len("  No price for ") - len(rest), _MIN_BAR_WIDTH))
        lines.append(f"  No price for {label}{rest}")
    for title, bars in (
        ("Model consumption top 10", view.models),
        ("Agent consumption top 10", view.agents),
        ("Workflow consumption top 10", view.workflows),
        ("Member tokens top 10", view.members),
    ):
        lines += ["", *_chart(title, bars, width)]
    return "\n".join(lines)
