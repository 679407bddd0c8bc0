"""The tenant query gateway's latency: the tenant dashboards' queries sent to Prometheus
directly and through ``/tenant-api/``, interleaved in one run.

    python benchmarks/gateway.py [--rounds 20] [--tenants acme,initech]

Prometheus 2.42 (Debian's ``prometheus``) serves the dashboard tests' world
(tests/dashboard_world.py: the real exporter's series of acme, globex and initech, backfilled
with promtool); the service runs in its own process (``llm-token-exporter serve`` with a
``gateway:`` config pointing at that Prometheus). Every query of the tenant dashboards
(grafana/dashboards/en/llm-tenant-*.json, variables substituted as Grafana does, an instant
query at the range's end as the panels ask), for each tenant, is sent once direct and once
through the gateway in each round, the order of the two alternating, each client with its
own keep-alive session, one request at a time: p50 and p99 of each, their ratios, and the
median of the per-query difference (what the gateway adds). Then the check alone in this
process: ``check_query`` on each query, median over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import _serve_in_subprocess  # noqa: E402

from exporter.gateway import check_query  # noqa: E402
from tests.dashboard_grafana import View, dashboards, exprs, panel_range  # noqa: E402
from tests.dashboard_world import (  # noqa: E402
    T0,
    backfilled_prometheus,
    openmetrics,
    scenario,
    series,
)

TOKEN = "benchmark-gateway-token-{tenant}-0123456789"


def tenant_queries(tenants: list[str]) -> list[tuple[str, str, float]]:
    """(tenant, query, time) of every target of the tenant dashboards."""
    out = []
    for uid, d in dashboards().items():
        if not uid.startswith("llm-tenant-"):
            continue
        for p in d["panels"]:
            for tenant in tenants:
                view = View(at=T0, tenant=tenant)
                _, end = panel_range(p, view)
                out += [(tenant, q, end) for q in exprs(p, view).values()]
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tenants", default="acme,initech")
    args = parser.parse_args()
    tenants = args.tenants.split(",")
    queries = tenant_queries(tenants)

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        work = Path(tmp)
        print("building the dashboard world (the real exporter, promtool backfill) ...",
              flush=True)
        (work / "prom").mkdir()
        prom = backfilled_prometheus(work / "prom", openmetrics(series(scenario())))
        config = work / "config.yaml"
        lines = ["gateway:", f"  prometheus_url: {prom.url}", "  tenants:"]
        lines += [f"    {t}: {{token: {TOKEN.format(tenant=t)}}}" for t in tenants]
        config.write_text("\n".join(lines) + "\n")
        proc, url = _serve_in_subprocess(str(work / "state"),
                                         {"LLM_TOKEN_EXPORTER_CONFIG": str(config)})
        try:
            direct, through = requests.Session(), requests.Session()

            def send(via: str, tenant: str, query: str, at: float) -> float:
                params = {"query": query, "time": str(at)}
                start = time.perf_counter()
                if via == "direct":
                    r = direct.post(prom.url + "/api/v1/query", data=params, timeout=30)
                else:
                    r = through.post(url + "/tenant-api/api/v1/query", data=params,
                                     headers={"X-Tenant-Token": TOKEN.format(tenant=tenant)},
                                     timeout=30)
                elapsed = time.perf_counter() - start
                if r.status_code != 200:
                    raise SystemExit(f"{via}: {r.status_code} {r.text[:300]}\n{query}")
                return elapsed

            for tenant, query, at in queries:  # warm both paths (connections, caches)
                send("direct", tenant, query, at)
                send("gateway", tenant, query, at)
            times: dict[str, list[float]] = {"direct": [], "gateway": []}
            added: list[float] = []
            for i in range(args.rounds):
                for j, (tenant, query, at) in enumerate(queries):
                    order = ("direct", "gateway") if (i + j) % 2 == 0 else ("gateway", "direct")
                    pair = {via: send(via, tenant, query, at) for via in order}
                    for via, elapsed in pair.items():
                        times[via].append(elapsed)
                    added.append(pair["gateway"] - pair["direct"])
        finally:
            proc.terminate()
            proc.wait(30)
            prom.stop()

    checks = []
    for _ in range(args.rounds):
        for tenant, query, _at in queries:
            start = time.perf_counter()
            check_query(query, tenant)
            checks.append(time.perf_counter() - start)

    n = len(times["direct"])
    print(f"{len(queries)} queries (the tenant dashboards' targets x {len(tenants)} tenants),"
          f" {args.rounds} rounds: {n} requests each way, interleaved")
    print(f"{'':10} {'p50 ms':>8} {'p99 ms':>8}")
    stats = {}
    for via in ("direct", "gateway"):
        p50, p99 = percentile(times[via], 0.5) * 1e3, percentile(times[via], 0.99) * 1e3
        stats[via] = (p50, p99)
        print(f"{via:10} {p50:8.2f} {p99:8.2f}")
    print(f"ratio gateway/direct: p50 {stats['gateway'][0] / stats['direct'][0]:.2f} x, "
          f"p99 {stats['gateway'][1] / stats['direct'][1]:.2f} x")
    print(f"added by the gateway per query: median {statistics.median(added) * 1e3:.2f} ms")
    print(f"check_query alone (this process): median {statistics.median(checks) * 1e3:.3f} ms,"
          f" max {max(checks) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
