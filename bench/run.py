"""imagegw benchmarks: `make bench` (full, ~4 minutes) or `make bench ARGS=--quick` (~2 minutes).

1. gateway overhead   the same requests direct to the upstream emulator vs through the local stack's API
2. throughput         N concurrent clients through the gateway vs direct (requests/s ratio)
3. cold start         handler import + the clients it builds, as Lambda runs it, vs boto3 + the same clients
4. validation cost    parse_request + validate per request, against the overhead measured in 1
5. AWS calls          DynamoDB and S3 calls per request, by mode (b64, url, stream, async)
6. vs LiteLLM         added latency over the upstream: imagegw vs LiteLLM proxy on the same emulator
                      (LiteLLM is installed into bench/.venv-litellm on first run)

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

import aws_calls
import cold_start
import gateway_overhead
import litellm_proxy
import measure
import throughput
import validation_cost
from http_client import sample_png
from local import ROOT, BenchStack, quiet_stdout

BENCHMARKS = ("overhead", "throughput", "cold", "validation", "calls", "litellm")

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "overhead_trials": 8,
        "keepalive_trials": 8,
        "breakdown_trials": 5,
        "levels": [1, 4, 8],
        "throughput_rounds": 2,
        "requests_at": {1: 4, 4: 2, 8: 2},
        "cold_trials": 5,
        "validation_repeats": 3,
        "validation_target_s": 0.03,
        "calls_requests": 2,
        "litellm_trials": 10,
        "watchdog_s": 420,
    },
    "full": {
        "overhead_trials": 36,
        "keepalive_trials": 20,
        "breakdown_trials": 12,
        "levels": [1, 4, 8],
        "throughput_rounds": 6,
        "requests_at": {1: 8, 4: 4, 8: 3},
        "cold_trials": 15,
        "validation_repeats": 7,
        "validation_target_s": 0.1,
        "calls_requests": 5,
        "litellm_trials": 30,
        "watchdog_s": 900,
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
    import imagegw_dev.local_stack.api_gateway

    patched = []
    handlers = (
        (imagegw_dev.local_stack.api_gateway, "_HttpHandler"),
        (imagegw_dev.emulator.server, "_Handler"),
    )
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
    if results.get("cold"):
        lines.append(cold_start.headline(results["cold"]))
    calls = results.get("calls")
    if calls:
        for mode, fig in calls["modes"].items():
            lines.append(
                f"AWS calls per {mode} request: {fig['dynamodb']:g} DynamoDB, {fig['s3']:g} S3"
                + (f", {fig['other_services']:g} other" if fig["other_services"] else "")
            )
    lite = results.get("litellm")
    if lite:
        arms = lite["arms"]
        imagegw, litellm = arms["imagegw"], arms["litellm"]
        lines.append(
            f"added over the upstream: imagegw +{imagegw['added_ms']['median']:.1f} ms "
            f"({r(imagegw['ratio_of_medians'])} direct), LiteLLM proxy "
            f"+{litellm['added_ms']['median']:.1f} ms ({r(litellm['ratio_of_medians'])} direct)"
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


def summary(results: dict[str, Any]) -> str:
    """The issue-11 figures in one table (README's Performance section holds a copy of it)."""
    r = measure.fmt_ratio
    rows: list[list[str]] = []
    cold = results.get("cold")
    if cold:
        after, before = cold["variants"]["compiled"], cold["variants"]["sources"]
        rows += [
            [
                "cold start: API handler import + its clients / (import boto3 + the same clients)",
                f"wall {r(after['ratio_of_medians'])}, CPU {r(after['cpu_ratio_of_medians'])} "
                f"(target <= {cold_start.TARGET}x)",
            ],
            [
                "  the same with the layer as shipped before (no bytecode)",
                f"wall {r(before['ratio_of_medians'])}, CPU {r(before['cpu_ratio_of_medians'])}",
            ],
        ]
    for mode, fig in (results.get("calls") or {}).get("modes", {}).items():
        other = f", {fig['other_services']:g} other" if fig["other_services"] else ""
        calls = f"{fig['dynamodb']:g} DynamoDB, {fig['s3']:g} S3{other}"
        rows.append([f"AWS calls per request, {mode}", calls])
    lite = results.get("litellm")
    if lite:
        for name in ("imagegw", "litellm"):
            arm = lite["arms"][name]
            rows.append(
                [
                    f"added latency over the upstream, {litellm_proxy.LABELS[name]}",
                    f"+{arm['added_ms']['median']:.1f} ms median ({r(arm['ratio_of_medians'])} direct)",
                ]
            )
    if not rows:
        return ""
    width = max(len(label) for label, _ in rows)
    lines = [f"{'figure'.ljust(width)}  this run", f"{'-' * width}  {'-' * max(len(v) for _, v in rows)}"]
    return "\n".join([*lines, *(f"{label.ljust(width)}  {value}" for label, value in rows)])


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
        "--python",
        metavar="PATH",
        default=sys.executable,
        help="interpreter for the cold-start probes, with boto3 and the layer's requirements installed "
        "(default: this one; a Python 3.13 environment measures with Lambda's version)",
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
    if "litellm" in selected:  # before the watchdog: the first run installs LiteLLM (minutes)
        litellm_proxy.ensure_installed(progress)
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
        results["cold"] = cold_start.run(trials=profile["cold_trials"], interpreter=args.python)
    if "validation" in selected:
        progress("validation cost: parse_request + validate (timeit)")
        results["validation"] = validation_cost.run(
            pngs, repeats=profile["validation_repeats"], target_s=profile["validation_target_s"]
        )

    if selected & {"overhead", "throughput", "calls", "litellm"}:
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
                if "calls" in selected:
                    progress("AWS calls per request by mode")
                    results["calls"] = aws_calls.run(stack, requests=profile["calls_requests"])
                if "litellm" in selected:
                    progress("imagegw vs LiteLLM proxy vs direct")
                    results["litellm"] = litellm_proxy.run(
                        stack, trials=profile["litellm_trials"], progress=progress
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
        ("calls", aws_calls.report),
        ("litellm", litellm_proxy.report),
    ]
    for key, render in sections:
        if key in results:
            out.write(render(results[key]) + "\n\n")
    table = summary(results)
    if table:
        out.write("Summary\n" + table + "\n\n")
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
