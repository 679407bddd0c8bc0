"""Wiring and serving: one process, threads, a production WSGI server (waitress).

Waitress is pure Python, maintained by the Pylons project, and serves a WSGI app with a
fixed pool of threads in one process: the ledger, the assembler and the SQLite store live
in that one process, so no state is split across workers (gunicorn's pre-fork model would
split them). It buffers request bodies itself and sits well behind an OpenTelemetry
Collector or a load balancer.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from exporter.app import Limits, create_app
from exporter.config import Config
from exporter.pipeline import Pipeline
from exporter.store import Store
from otel_processor.budgets import Budgets, load_budgets
from otel_processor.collector import Health, TokenCollector
from otel_processor.directory_source import DirectorySource
from otel_processor.exposition import Renderer
from otel_processor.ledger import Ledger
from otel_processor.periods import Periods
from otel_processor.prices_source import load_prices

logger = logging.getLogger(__name__)


@dataclass
class Service:
    """Everything one exporter process runs, built from a :class:`Config`."""

    config: Config
    directory: DirectorySource
    store: Store
    pipeline: Pipeline
    registry: CollectorRegistry
    app: object
    budgets: Budgets

    def close(self) -> None:
        """Stop the writer (queued work is committed), the directory refresh, the store."""
        self.pipeline.close()
        self.directory.stop()


def build_service(config: Config, *, clock: Callable[[], float] = time.time) -> Service:
    """Open the state, load directory and prices, and build the app (no server yet).

    ``clock`` is the wall clock (unix seconds) of the pipeline and the calendar periods.

    Raises :class:`~exporter.store.StoreError` (``StateDirLocked`` when another process
    holds the state directory) before anything else is started.
    """
    store = Store(config.state_dir, synchronous=config.sqlite_synchronous,
                  checkpoint_interval=config.checkpoint_interval)
    try:
        prices = load_prices(config.prices_path)
        budgets = load_budgets(config.budgets)
        directory = DirectorySource(
            config.directory_source,
            refresh_interval=config.directory_refresh_interval,
            timeout=config.directory_timeout,
        )
        directory.refresh()
    except BaseException:
        store.close()
        raise
    ledger = Ledger(max_series_per_metric=config.max_series_per_metric)
    periods = Periods(budgets.calendar, max_ids_per_scope=config.max_series_per_metric,
                      never_fold=budgets.by_key)
    pipeline = Pipeline(
        store=store,
        directory=directory,
        prices=prices,
        ledger=ledger,
        idle_timeout=config.trace_idle_timeout,
        max_traces=config.max_open_traces,
        max_spans=config.max_pending_spans,
        runaway_max_calls=config.runaway_max_calls,
        runaway_max_tokens=config.runaway_max_tokens,
        dedupe_retention=config.dedupe_retention,
        commit_max_delay=config.commit_max_delay_ms / 1000.0,
        periods=periods,
        clock=clock,
    )
    registry = CollectorRegistry()
    collector = TokenCollector(
        ledger,
        lambda: directory.current,
        health=Health(
            pending_traces=lambda: pipeline.pending_traces,
            directory_last_success=lambda: directory.last_success,
            directory_failures=lambda: directory.refresh_failures,
        ),
        search_contact_fields=config.search_contact_fields,
        periods=periods,
        budgets=budgets,
        clock=pipeline.wall_clock,
    )
    registry.register(collector)

    def readiness() -> list[str]:
        problems = []
        if not directory.ready:
            problems.append(f"directory not loaded ({directory.last_error})")
        if not pipeline.running:
            problems.append("writer not running")
        if not store.seen_ids_ready:
            problems.append("seen span ids of the dedupe window still being read back")
        return problems

    app = create_app(
        pipeline=pipeline,
        registry=registry,
        readiness=readiness,
        limits=Limits(
            max_body_bytes=config.max_body_bytes,
            max_decompressed_bytes=config.max_decompressed_bytes,
            max_spans_per_request=config.max_spans_per_request,
            max_values_per_request=config.max_values_per_request,
            max_inflight_requests=config.max_inflight_requests,
        ),
        auth_token=config.auth_token,
        renderer=Renderer(collector),
        budgets=budgets,
        api_token=config.api_token,
        metrics_token=config.metrics_token,
        gateway=config.gateway,
    )
    directory.start()
    pipeline.start()
    return Service(config, directory, store, pipeline, registry, app, budgets)


def _counting_channel(count):
    """A waitress channel whose request parser counts the requests waitress refuses."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser
    from waitress.utilities import RequestEntityTooLarge

    class CountingParser(HTTPRequestParser):
        def received(self, data):
            had_error = self.error is not None
            consumed = super().received(data)
            if not had_error and self.error is not None:
                too_large = isinstance(self.error, RequestEntityTooLarge)
                count("too_large" if too_large else "bad_request")
            return consumed

    return type("CountingChannel", (HTTPChannel,), {"parser_class": CountingParser})


class RunningServer:
    """A service served by waitress on a background thread (the demo and the tests)."""

    def __init__(self, service: Service, host: str, port: int) -> None:
        from waitress.server import create_server

        self.service = service
        self._server = create_server(
            service.app,
            host=host,
            port=port,
            threads=service.config.threads,
            # waitress refuses bigger bodies itself, before the app can count them
            max_request_body_size=2 * service.config.max_body_bytes,
            ident="llm-token-exporter",
            connection_limit=service.config.max_connections,
            channel_timeout=service.config.connection_timeout,
            cleanup_interval=max(1.0, service.config.connection_timeout / 4),
            asyncore_use_poll=True,  # select() cannot watch more than 1024 sockets
        )
        # waitress refuses some requests itself (a body over its limit, bad headers),
        # before the app runs: its parser counts them too.
        self._server.channel_class = _counting_channel(service.pipeline.count)
        # Load shedding where requests really queue: waitress's task queue, before a
        # worker thread takes them (the app sees at most `threads` requests at once).
        dispatcher = self._server.task_dispatcher
        service.app.extensions["llm_token_exporter"]["backlog"] = lambda: len(dispatcher.queue)
        self.port = self._server.effective_port
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.run, name="llm-token-exporter-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listener, then the service; idempotent."""
        if self._thread is None:
            return
        from waitress import wasyncore

        server = self._server
        # First let the worker threads finish their requests: a worker still servicing a
        # channel after the loop closed it acts on a file descriptor the next server may
        # already reuse (seen as EBADF in the next server's trigger). Then close the
        # listener, the keep-alive connections and the trigger from the loop's own thread:
        # the loop ends when its map is empty.
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=10)
        try:
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        except OSError:
            # The trigger is already closed (seen rarely in the tests, which start and stop
            # many servers in one process): close the map from here; the loop sees it empty
            # after its poll timeout and ends.
            logger.debug("waitress trigger closed; closing its connections directly")
            wasyncore.close_all(server._map, ignore_all=True)
        self._thread.join(10)
        self._thread = None
        self.service.close()


def start_server(config: Config, *, clock: Callable[[], float] = time.time) -> RunningServer:
    """Build the service and serve it in the background on ``config.listen``."""
    service = build_service(config, clock=clock)
    try:
        return RunningServer(service, config.host, config.port)
    except BaseException:  # the port is taken, say: release the state directory
        service.close()
        raise


def describe_startup(config: Config, service: Service) -> list[tuple[int, str]]:
    """What the operator must know at startup, as (log level, message) lines: the
    directory, the price catalog, the state, and who may post spans."""
    lines = [(logging.INFO, f"directory: {service.directory.describe()}"
              + ("" if service.directory.ready else " (not loaded yet: ingest answers 503)")),
             (logging.INFO, f"price catalog: {config.prices_path}"),
             (logging.INFO, f"state: {service.store.path}")]
    if not config.directory:
        lines.append((logging.WARNING,
                      "no --directory given: using the DEMO directory shipped in the package "
                      "(demo tenants acme, globex, ...); every real caller counts as not_member."
                      " Set --directory FILE_OR_URL or LLM_TOKEN_EXPORTER_DIRECTORY"))
    if config.auth_token:
        lines.append((logging.INFO, "ingest: POST /v1/traces requires the bearer token"))
    elif _loopback(config.host):
        lines.append((logging.INFO, f"ingest: unauthenticated, on loopback only ({config.listen})"))
    else:
        lines.append((logging.WARNING,
                      f"ingest: UNAUTHENTICATED on {config.listen}: anyone who reaches this port "
                      "can post usage billed to any member; set auth_token "
                      "(LLM_TOKEN_EXPORTER_AUTH_TOKEN)"))
    if config.metrics_token:
        lines.append((logging.INFO, "metrics: GET /metrics requires its bearer token"))
    elif not _loopback(config.host):
        lines.append((logging.INFO,
                      f"metrics: GET /metrics is open on {config.listen} and lists every member"
                      " of every tenant; set metrics_token unless only Prometheus reaches it"))
    if config.gateway.enabled:
        lines.append((logging.INFO, f"tenant gateway: /tenant-api/ -> "
                      f"{config.gateway.prometheus_url} for "
                      f"{len(config.gateway.tenants)} tenant(s)"))
    return lines


def _loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


#: Allocations between collections of the youngest generation, and collections of each
#: generation between collections of the next: CPython's defaults are (700, 10, 10).
_GC_THRESHOLDS = (50_000, 50, 100)


def _tune_gc() -> None:
    """The service's process: the objects built at startup (modules, the directory, the
    price catalog) are frozen out of every collection, and collections run less often.

    Every span received allocates a few dozen objects, few of them in cycles; with the
    defaults, the cyclic collector ran every few spans and walked the open traces again and
    again: 15 % of the CPU at full load (benchmarks/ingest.py). Only ``serve`` does this: in
    an application's process (the span processor) the collector is the application's.
    """
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


def serve(config: Config) -> int:
    """Serve until SIGTERM or SIGINT, then stop cleanly (queued spans are committed)."""
    running = start_server(config)
    _tune_gc()
    for level, message in describe_startup(config, running.service):
        logger.log(level, message)
    logger.info("llm-token-exporter listening on %s", running.url)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    logger.info("stopping")
    running.stop()
    return 0
