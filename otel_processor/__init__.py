"""Attribute LLM tokens to tenant, member, model, agent and workflow from OpenTelemetry spans.

``from otel_processor import TokenAttributionProcessor`` is the in-process entry point.
Nothing happens at import: no thread, no registry, no I/O.
"""

__all__ = ["TokenAttributionProcessor"]


def __getattr__(name: str):
    if name == "TokenAttributionProcessor":
        from otel_processor.processor import TokenAttributionProcessor

        return TokenAttributionProcessor
    raise AttributeError(name)
