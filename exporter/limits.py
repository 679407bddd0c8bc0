"""What one OTLP/HTTP request may cost: the ingest limits and their defaults.

Their own module so that the configuration imports the defaults from their owner without
importing the web framework.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.otlp_bounds import DEFAULT_MAX_VALUES_PER_REQUEST

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_SPANS_PER_REQUEST = 20_000
DEFAULT_MAX_INFLIGHT_REQUESTS = 64
DEFAULT_SUBMIT_TIMEOUT = 30.0  # seconds a request waits for its durable commit


@dataclass
class Limits:
    """The limits ``POST /v1/traces`` enforces (see ``exporter/otlp.py`` for the answers)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    max_spans_per_request: int = DEFAULT_MAX_SPANS_PER_REQUEST
    max_values_per_request: int = DEFAULT_MAX_VALUES_PER_REQUEST
    max_inflight_requests: int = DEFAULT_MAX_INFLIGHT_REQUESTS
    submit_timeout: float = DEFAULT_SUBMIT_TIMEOUT
