"""imagegw benchmarks: `make bench` (full, ~2 minutes) or `python bench/run.py --quick` (~30 s).

1. gateway overhead   the same requests direct to the upstream emulator vs through the local stack's API
2. throughput         N concurrent clients through the gateway vs direct (requests/s ratio)
3. cold start         importing a handler module in a fresh interpreter vs `import boto3`
4. validation cost    parse_request + validate per request, against the overhead measured in 1

Everything runs on 127.0.0.1 and stops by itself (bounded loops, and a watchdog that ends a stuck run).
The machine these run on is shared and noisy: every headline is a ratio measured within one run, with medians
and p90 over interleaved trials. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import cold_start
import gateway_overhead
import measure
import throughput
import validation_cost
from http_client import sample_png
from local import ROOT, BenchStack, quiet_stdout

BENCHMARKS = ("overhead", "throughput", "cold", "validation")

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "overhead_trials": 8,
        "keepalive_trials": 8,
        "breakdown_trials": 5,
        "levels": [1, 4, 8],
        "throughput_rounds": 2,
        "requests_at": {1: 4, 4: 2, 8: 2},
        "cold_trials": 3,
        "validation_repeats": 3,
        "validation_target_s": 0.03,
        "watchdog_s": 150,
    },
    "full": {
        "overhead_trials": 36,
        "keepalive_trials": 20,
        "breakdown_trials": 12,
        "levels": [1, 4, 8],
        "throughput_rounds": 6,
        "requests_at": {1: 8, 4: 4, 8: 3},
        "cold_trials": 12,
        "validation_repeats": 7,
        "validation_target_s": 0.1,
        "watchdog_s": 420,
    },
}


def force_tcp_nodelay() -> list[str]:
    """DIAGNOSTIC ONLY (--tcp-nodelay): set TCP_NODELAY on the local servers' sockets, in this process.

    Both local HTTP servers write a response's headers and its body in two sends; on a kept-alive
    connection Nagle's algorithm then waits for the client's delayed ACK (~40 ms on Linux) before sending
    the body. `StreamRequestHandler.disable_nagle_algorithm` is the standard switch; this shows the effect
    of the suggested one-line fix without editing the package.
    """
    import imagegw_dev.emulator.server
    import imagegw_dev.local_stack

    patched = []
    handlers = ((imagegw_dev.local_stack, "_HttpHandler"), (imagegw_dev.emulator.server, "_Handler"))
    for module, name in handlers:
        handler = getattr(module, name, None)
        if handler is not None:
            handler.disable_nagle_algorithm = True
            patched.append(f"{module.__name__}.{name}")
    return patched


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_start": os.getloadavg(),
    }


def git_revision() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {text}", file=sys.stderr, flush=True)


def headlines(results: dict[str, Any]) -> list[str]:
    r = measure.fmt_ratio
    lines = []
    overhead = results.get("overhead")
    if overhead:
        for fig in overhead["scenarios"].values():
            lines.append(
                f"gateway/direct latency, {fig['label']}: {r(fig['ratio_gateway_direct']['median'])} "
                f"(p90 {r(fig['ratio_gateway_direct']['p90'])}), +{fig['added_ms']['median']:.1f} ms"
            )
    tput = results.get("throughput")
    if tput:
        for n, level in tput["levels"].items():
            lines.append(
                f"gateway/direct requests/s at {n} client(s): {r(level['ratio_gateway_direct']['median'])} "
                f"(p90 {r(level['ratio_gateway_direct']['p90'])})"
            )
    cold = results.get("cold")
    if cold:
        for name in ("handler_deployed", "handler_tracing_off"):
            entry = cold["variants"].get(name)
            if entry:
                lines.append(
                    f"{entry['label']} / import boto3: {r(entry['ratio_import_vs_floor']['median'])} "
                    f"(p90 {r(entry['ratio_import_vs_floor']['p90'])}); Pillow loaded: "
                    f"{'yes' if entry['pil_imported'] else 'no'}"
                )
    validation = results.get("validation")
    if validation:
        for case in validation["cases"].values():
            if "fraction_of_gateway_added" in case:
                lines.append(
                    f"parse+validate, {case['label']}: {measure.fmt_us(case['total_us']['median'])} us = "
                    f"{measure.fmt_pct(case['fraction_of_gateway_added'])} of the gateway's added time"
                )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer trials: a ~30 s run")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write every figure as JSON to PATH")
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, help="run only this benchmark (repeatable)"
    )
    parser.add_argument(
        "--tcp-nodelay",
        action="store_true",
        help="diagnostic: force TCP_NODELAY on the local servers (not the shipped code; see docs)",
    )
    args = parser.parse_args(argv)
    profile_name = "quick" if args.quick else "full"
    profile = PROFILES[profile_name]
    selected = set(args.only or BENCHMARKS)
    progress = Progress()
    faulthandler.dump_traceback_later(profile["watchdog_s"], exit=True)  # a stuck run ends by itself

    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": profile_name,
        "config": {k: v for k, v in profile.items() if k != "watchdog_s"},
        "machine": machine(),
        "git": git_revision(),
        "note": "shared, noisy machine: compare ratios within this run, not absolute times across runs",
    }
    if args.tcp_nodelay:
        results["diagnostic_tcp_nodelay"] = force_tcp_nodelay()
    out: TextIO = sys.stdout
    out.write(
        f"imagegw benchmarks ({profile_name}) {results['date']} | {results['machine']['cpus']} CPUs "
        f"{results['machine']['cpu_model']} | Python {results['machine']['python']} | git "
        f"{results['git']['commit']}{' (dirty)' if results['git']['dirty'] else ''}\n"
        "shared noisy machine: read the ratios; absolute ms are context only\n\n"
    )
    if args.tcp_nodelay:
        out.write(
            "DIAGNOSTIC RUN: TCP_NODELAY forced on "
            f"{', '.join(results['diagnostic_tcp_nodelay']) or 'nothing (handlers not found)'}: "
            "these figures are not the shipped code's\n\n"
        )
    out.flush()

    pngs = [sample_png(1024, variant) for variant in range(4)]

    # Without the stack running first: fewer background threads competing with the subprocesses.
    if "cold" in selected:
        progress("cold start: fresh interpreters")
        results["cold"] = cold_start.run(trials=profile["cold_trials"])
    if "validation" in selected:
        progress("validation cost: parse_request + validate (timeit)")
        results["validation"] = validation_cost.run(
            pngs, repeats=profile["validation_repeats"], target_s=profile["validation_target_s"]
        )

    if selected & {"overhead", "throughput"}:
        with quiet_stdout() as real_stdout:
            out = real_stdout
            progress("starting the local stack (moto, emulator, API) on 127.0.0.1")
            stack = BenchStack()
            try:
                stack.start()
                if "overhead" in selected:
                    progress("gateway overhead: direct vs gateway vs in-process handler")
                    results["overhead"] = gateway_overhead.run(
                        stack,
                        pngs[0],
                        trials=profile["overhead_trials"],
                        keepalive_trials=profile["keepalive_trials"],
                        breakdown_trials=profile["breakdown_trials"],
                    )
                if "throughput" in selected:
                    progress("throughput: concurrent clients")
                    scenario = gateway_overhead.scenarios(pngs[0])[0]
                    results["throughput"] = throughput.run(
                        stack,
                        scenario,
                        levels=profile["levels"],
                        rounds=profile["throughput_rounds"],
                        requests_at=profile["requests_at"],
                    )
            finally:
                progress("stopping the local stack")
                stack.stop()
        out = sys.stdout

    if "validation" in results:
        validation_cost.attach_overhead(results["validation"], results.get("overhead"))
    results["machine"]["load_average_end"] = os.getloadavg()
    results["elapsed_s"] = round(time.monotonic() - progress.started, 1)

    sections = [
        ("overhead", gateway_overhead.report),
        ("throughput", throughput.report),
        ("cold", cold_start.report),
        ("validation", validation_cost.report),
    ]
    for key, render in sections:
        if key in results:
            out.write(render(results[key]) + "\n\n")
    out.write("Headline ratios (this run)\n")
    for line in headlines(results):
        out.write(f"  - {line}\n")
    load = results["machine"]
    out.write(
        f"\nload average start {load['load_average_start'][0]:.2f}, end {load['load_average_end'][0]:.2f}; "
        f"elapsed {results['elapsed_s']} s\n"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        out.write(f"results written to {args.json}\n")
    faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    sys.exit(main())
