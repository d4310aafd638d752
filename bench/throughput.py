"""Benchmark 2: requests per second with N concurrent clients, through the gateway vs direct to the emulator.

Each client is a thread sending a bounded number of requests one after another (fresh connection each).
For every round, each concurrency level runs both paths back to back, in alternating order; the figure is
the per-round ratio gateway rps / direct rps (median and p90 over rounds).

The clients share the benchmark process with the local stack (which is how `make dev` runs: emulator, moto
and the API in one Python process), so every path competes for the same GIL and the same 2 cores.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import measure
from gateway_overhead import BenchError, Scenario
from http_client import Target, post
from local import BenchStack


def _burst(target: Target, sc: Scenario, clients: int, per_client: int) -> tuple[float, list[float], float]:
    """(wall seconds, latencies in ms, process CPU seconds) for `clients` threads x `per_client` requests.

    The process CPU covers every thread: the clients, and the local stack's servers (moto, emulator, API).
    """
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        start.wait(timeout=30)
        for _ in range(per_client):
            try:
                answer = post(target, sc.body)
                ok, detail = answer.status == 200, f"HTTP {answer.status}: {answer.payload[:200]!r}"
            except OSError as exc:
                ok, detail = False, repr(exc)
                answer = None
            with lock:
                if ok and answer is not None:
                    latencies.append(measure.ms(answer.seconds))
                else:
                    failures.append(detail)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait(timeout=30)
    started, cpu0 = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join(timeout=120)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    if any(thread.is_alive() for thread in threads):
        raise BenchError("throughput clients did not finish within 120 s")
    if failures:
        raise BenchError(f"{len(failures)} failed requests at concurrency {clients}: {failures[0]}")
    return wall, latencies, cpu


def run(
    stack: BenchStack, sc: Scenario, *, levels: list[int], rounds: int, requests_at: dict[int, int]
) -> dict[str, Any]:
    paths = {"direct": stack.direct(sc.path), "gateway": stack.gateway(sc.path)}
    top = max(levels)
    # Warm-up at the highest concurrency: the local stack gives each concurrent request its own warm
    # "container" (a separately imported handler with its own clients), as Lambda scales out; those cold
    # starts belong to benchmark 3, not here.
    for _ in range(2):
        for target in paths.values():
            _burst(target, sc, top, 2)
    rps: dict[int, dict[str, list[float]]] = {n: {"direct": [], "gateway": []} for n in levels}
    lat: dict[int, dict[str, list[float]]] = {n: {"direct": [], "gateway": []} for n in levels}
    cpu: dict[int, dict[str, list[float]]] = {n: {"direct": [], "gateway": []} for n in levels}
    for index in range(rounds):
        for n in levels:
            order = ["direct", "gateway"] if (index + n) % 2 == 0 else ["gateway", "direct"]
            for name in order:
                per_client = requests_at[n]
                wall, latencies, cpu_s = _burst(paths[name], sc, n, per_client)
                rps[n][name].append(n * per_client / wall)
                lat[n][name].extend(latencies)
                cpu[n][name].append(measure.ms(cpu_s) / (n * per_client))
        stack.reset_emulator()
    results: dict[str, Any] = {"scenario": sc.key, "label": sc.label, "rounds": rounds, "levels": {}}
    for n in levels:
        results["levels"][str(n)] = {
            "requests_per_client": requests_at[n],
            "direct_rps": measure.summary(rps[n]["direct"]),
            "gateway_rps": measure.summary(rps[n]["gateway"]),
            "ratio_gateway_direct": measure.summary(measure.paired(rps[n]["gateway"], rps[n]["direct"])),
            "direct_latency_ms": measure.summary(lat[n]["direct"]),
            "gateway_latency_ms": measure.summary(lat[n]["gateway"]),
            "direct_cpu_ms_per_request": measure.summary(cpu[n]["direct"]),
            "gateway_cpu_ms_per_request": measure.summary(cpu[n]["gateway"]),
            "ratio_cpu_gateway_direct": measure.summary(measure.paired(cpu[n]["gateway"], cpu[n]["direct"])),
        }
    return results


def report(results: dict[str, Any]) -> str:
    f, r = measure.fmt_ms, measure.fmt_ratio
    rows = []
    for n, level in results["levels"].items():
        rows.append(
            [
                n,
                str(int(n) * level["requests_per_client"]),
                f"{level['direct_rps']['median']:.1f} / {level['direct_rps']['p90']:.1f}",
                f"{level['gateway_rps']['median']:.1f} / {level['gateway_rps']['p90']:.1f}",
                f"{r(level['ratio_gateway_direct']['median'])} / {r(level['ratio_gateway_direct']['p90'])}",
                f"{f(level['direct_latency_ms']['median'])} / {f(level['direct_latency_ms']['p90'])}",
                f"{f(level['gateway_latency_ms']['median'])} / {f(level['gateway_latency_ms']['p90'])}",
                f"{f(level['direct_cpu_ms_per_request']['median'])} / "
                f"{f(level['gateway_cpu_ms_per_request']['median'])}",
            ]
        )
    return "\n".join(
        [
            f"2. Throughput under concurrency: {results['label']} ({results['rounds']} interleaved rounds)",
            measure.table(
                [
                    "clients",
                    "requests",
                    "direct rps",
                    "gateway rps",
                    "gateway/direct rps",
                    "direct latency ms",
                    "gateway latency ms",
                    "CPU ms/request direct / gateway",
                ],
                rows,
            ),
            "   (med / p90 over rounds; CPU = the whole process, stack and clients, per request; medians)",
        ]
    )
