"""The in-process runtime inside the LiteLLM proxy: our ``TokenAttributionProcessor`` on
the TracerProvider that the proxy's OpenTelemetry callback writes to.

Named in the proxy's config as a callback (``litellm_settings.callbacks:
["tests.instrumentation.litellm_proxy.inprocess.handler", "otel"]``), so the proxy imports
this module while it loads its config, before it builds the ``otel`` callback. LiteLLM's
callback reuses a global SDK ``TracerProvider`` when there is one
(``OpenTelemetry._get_or_create_provider``): this module sets one, with our processor, so
every span of the proxy (LiteLLM's and FastAPI's own) goes through it. Should the
callback's provider exist already, the processor is added to it instead.

The processor's registry is served on ``127.0.0.1:$LLM_TOKEN_EXPORTER_TEST_METRICS_PORT``
(prometheus_client's exposition server) for the test to read.
"""

from __future__ import annotations

import os
import sys

from litellm.integrations.custom_logger import CustomLogger
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server

from otel_processor import TokenAttributionProcessor

processor = TokenAttributionProcessor(
    directory=os.environ["LLM_TOKEN_EXPORTER_TEST_DIRECTORY"], prices=None
)
_existing = trace.get_tracer_provider()
if isinstance(_existing, TracerProvider):
    _existing.add_span_processor(processor)
    provider = _existing
    INSTALLED = "on the existing global TracerProvider"
else:
    provider = TracerProvider(resource=Resource.create({"service.name": "litellm-proxy"}))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    INSTALLED = "on a new global TracerProvider"
#: The test reads this line in the proxy's log.
print(f"llm-token-exporter: TokenAttributionProcessor {INSTALLED}", file=sys.stderr, flush=True)
start_http_server(
    int(os.environ["LLM_TOKEN_EXPORTER_TEST_METRICS_PORT"]),
    addr="127.0.0.1",
    registry=processor.registry,
)


class _Installed(CustomLogger):
    """Nothing to log: the config names this instance only to get the module imported."""


handler = _Installed()
