"""The budget API under load: GET /v1/budgets/<tenant>?member=... from many clients.

    python benchmarks/budget_api.py [--seconds 10] [--clients 200] [--threads 8]

The service runs in its own process (the packaged demo directory, a budgets file written to
a temporary directory, some demo workload ingested first so that the members have usage);
``--clients`` threads of this process, each with its own keep-alive ``requests.Session``,
ask for the budget of a member (cycling over the directory's members) for ``--seconds``:
requests/s, and p50 / p99 / max latency as the clients see it. The service answers with
``threads`` worker threads (config key, default 8) and holds up to ``max_connections``
(1000) connections: with more clients than threads, a request waits for a free thread,
and that queueing is part of the latency printed. The clients share this process's GIL:
their CPU use is printed too (near one core means the clients, not the service, are the
limit).

Then the answer itself, in this process: ``Budgets.usage(...)`` and ``as_json()`` (and
the ``json.dumps`` of the answer) on a ``Periods`` holding realistic rows, min and median
of many rounds, against the latency seen over HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import _cpu_seconds, _drain, _serve_in_subprocess, make_batches, post_all  # noqa: E402

from otel_processor.budgets import parse_budgets  # noqa: E402
from otel_processor.directory_source import default_directory_path, load_directory  # noqa: E402
from otel_processor.periods import (  # noqa: E402
    AGENT,
    MEMBER,
    MODEL,
    TENANT,
    WORKFLOW,
    Periods,
)

ZONES = ("Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC")


def budgets_doc(directory) -> dict:
    """A budget per tenant, per member (every second one) and per agent, each tenant in
    its own timezone."""
    tenants = {}
    for i, tenant in enumerate(directory.tenants.values()):
        tenants[tenant.id] = {
            "timezone": ZONES[i % len(ZONES)], "monthly_tokens": 5_000_000,
            "monthly_usd": "250",
            "members": {m.id: {"monthly_tokens": 1_000_000}
                        for m in tenant.members[::2]},
            "agents": {a.id: {"monthly_usd": "25.50", "thresholds": [60, 90, 100]}
                       for a in directory.agents.values() if a.owner_tenant == tenant.id},
        }
    return {"timezone": "UTC", "tenants": tenants}


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def http_load(url: str, pairs: list[tuple[str, str]], clients: int, seconds: float):
    """Latencies (s) of every request answered during ``seconds``, and the failures."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[int] = []
    start_line = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(k: int) -> None:
        session = requests.Session()
        mine = latencies[k]
        n = k
        session.get(url + f"/v1/budgets/{pairs[0][0]}", timeout=30)  # open the connection
        start_line.wait()
        while not stop.is_set():
            tenant, member = pairs[n % len(pairs)]
            n += clients
            t0 = time.perf_counter()
            answer = session.get(f"{url}/v1/budgets/{tenant}", params={"member": member},
                                 timeout=30)
            mine.append(time.perf_counter() - t0)
            if answer.status_code != 200:
                failures.append(answer.status_code)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    start_line.wait()
    cpu, began = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    client_cpu = time.process_time() - cpu
    return [x for mine in latencies for x in mine], failures, elapsed, client_cpu


def realistic_periods(directory, budgets, now: float) -> Periods:
    """Every tenant's today, yesterday, this and last month, each with rows for every
    member, agent, workflow and a dozen models: the in-memory table a busy service holds,
    padded with 5 000 more members per tenant (its lookups are dict lookups: the size
    hardly matters, but it is realistic)."""
    periods = Periods(budgets.calendar)
    rows = []
    for tenant in directory.tenants.values():
        b = budgets.calendar.bounds(tenant.id, now)
        day, yesterday, month, last = (b[k][0] for k in ("today", "yesterday", "month",
                                                         "last_month"))
        for period in (day, yesterday):
            rows.append((tenant.id, period, TENANT, tenant.id, 10**6, 10**5, 10**10, 0, 900))
        members = [m.id for m in tenant.members] + [f"user-{i}" for i in range(5000)]
        for period in (month, last):
            rows.append((tenant.id, period, TENANT, tenant.id, 10**7, 10**6, 10**11, 0, 9000))
            rows += [(tenant.id, period, MEMBER, m, 1000, 100, 10**7, 0, 9) for m in members]
            rows += [(tenant.id, period, AGENT, a, 10**5, 10**4, 10**9, 0, 90)
                     for a in directory.agents]
            rows += [(tenant.id, period, WORKFLOW, w, 10**5, 10**4, 10**9, 0, 90)
                     for w in directory.workflows]
            rows += [(tenant.id, period, MODEL, f"model-{i}", 10**5, 10**4, 10**9, 0, 90)
                     for i in range(12)]
    periods.apply(rows)
    return periods


def in_process(directory, budgets, pairs, rounds: int = 30, per_round: int = 2000):
    """Seconds per answer, min and median of the rounds: usage + as_json, and the same
    with the json.dumps the endpoint does."""
    now = time.time()
    periods = realistic_periods(directory, budgets, now)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    asks = [pairs[i % len(pairs)] for i in range(per_round)]
    bare, encoded, bounds = [], [], []
    calendar = budgets.calendar
    for _ in range(rounds):
        t = time.perf_counter()
        for tenant, _member in asks:
            calendar.bounds(tenant, now)
        bounds.append((time.perf_counter() - t) / per_round)
        t0 = time.perf_counter()
        for tenant, member in asks:
            budgets.usage(periods, tenant, MEMBER, member, now).as_json()
        t1 = time.perf_counter()
        for tenant, member in asks:
            dumps(budgets.usage(periods, tenant, MEMBER, member, now).as_json())
        t2 = time.perf_counter()
        bare.append((t1 - t0) / per_round)
        encoded.append((t2 - t1) / per_round)
    return len(periods.snapshot()), bare, encoded, bounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8, help="the service's `threads`")
    args = parser.parse_args()
    directory = load_directory(default_directory_path())
    doc = budgets_doc(directory)
    budgets = parse_budgets(doc)
    pairs = [(t.id, m.id) for t in directory.tenants.values() for m in t.members]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "budgets.json"
        path.write_text(json.dumps(doc))
        state = os.path.join(scratch, "state")
        proc, url = _serve_in_subprocess(state, {
            "LLM_TOKEN_EXPORTER_BUDGETS": str(path),
            "LLM_TOKEN_EXPORTER_THREADS": str(args.threads),
            "LLM_TOKEN_EXPORTER_TRACE_IDLE_TIMEOUT": "1",
            # waitress warns of every queued request ("Task queue depth is N"): the
            # latencies printed say it
            "LLM_TOKEN_EXPORTER_LOG_LEVEL": "ERROR"})
        try:
            post_all(url, make_batches(8), 4)  # usage for the members (demo workload)
            time.sleep(1.5)
            _drain(proc.pid)
            sample = requests.get(f"{url}/v1/budgets/{pairs[0][0]}",
                                  params={"member": pairs[0][1]}, timeout=10).json()
            server_cpu = _cpu_seconds(proc.pid)
            latencies, failures, elapsed, client_cpu = http_load(url, pairs, args.clients,
                                                                 args.seconds)
            server_cpu = _cpu_seconds(proc.pid) - server_cpu
        finally:
            proc.terminate()
            proc.wait(30)
    load = os.getloadavg()[0]
    rows, bare, encoded, bounds = in_process(directory, budgets, pairs)
    latencies.sort()
    n = len(latencies)
    p50, p99, worst = (_percentile(latencies, 0.5), _percentile(latencies, 0.99),
                       latencies[-1])
    print(f"GET /v1/budgets/<tenant>?member=<id>: {args.clients} keep-alive clients (threads "
          f"of one process), {len(pairs)} members, service threads={args.threads}, "
          f"{args.seconds:g} s; load average {load:.2f} on {os.cpu_count()} CPUs")
    print(f"  e.g. {json.dumps(sample, separators=(',', ':'))}")
    print(f"  {n} answers, {len(failures)} not 200{f' {sorted(set(failures))}' if failures else ''}"
          f": {n / elapsed:8.0f} requests/s")
    print(f"  latency as the clients see it: p50 {p50 * 1e3:7.2f} ms, p99 {p99 * 1e3:7.2f} ms,"
          f" max {worst * 1e3:7.2f} ms")
    print(f"  CPU: service {server_cpu / elapsed:4.2f} cores, clients {client_cpu / elapsed:4.2f}"
          f" cores; service CPU per request {server_cpu / n * 1e6:6.0f} us")
    print(f"  by Little's law {args.clients} clients / {n / elapsed:.0f} requests/s = "
          f"{args.clients / (n / elapsed) * 1e3:.1f} ms per request: mostly waiting (for one "
          f"of the {args.threads} threads, for the CPU), not the answer")
    print(f"the answer in process (Budgets.usage + as_json on {rows} period rows): "
          f"min {min(bare) * 1e6:5.1f} us, median {statistics.median(bare) * 1e6:5.1f} us; "
          f"with json.dumps min {min(encoded) * 1e6:5.1f} us, median "
          f"{statistics.median(encoded) * 1e6:5.1f} us")
    print(f"  of which the tenant's month (Calendar.bounds, zoneinfo): median "
          f"{statistics.median(bounds) * 1e6:5.1f} us")
    answer = statistics.median(encoded)
    print(f"ratios: answer / p50 latency {answer / p50:.4f}; answer / service CPU per "
          f"request {answer / (server_cpu / n):.3f}; answer < 1 ms: "
          f"{'yes' if answer < 1e-3 else 'NO'} ({1e-3 / answer:.0f} x under)")


if __name__ == "__main__":
    main()
