"""Benchmark 3: cold start, as the time to import a handler module in a fresh interpreter vs `import boto3`.

Each trial starts one fresh subprocess per variant, in a rotating order:

- floor:                   `import boto3` (the design's target: "near the floor of importing boto3")
- handler, as deployed:    `runpy.run_path("functions/generations/app.py")` with the IMAGEGW_* settings and
                           LAMBDA_TASK_ROOT set, so Powertools' Tracer is active as under `Tracing: Active`
- handler, tracing off:    the same with POWERTOOLS_TRACE_DISABLED=true (the local stack and tests)

Each subprocess times its own import with perf_counter (interpreter start-up excluded) and reports whether
Pillow (`PIL`) is in sys.modules; the parent also times the whole process. A fourth variant also times
`build_service(settings)`: the clients and routes the first request builds (no AWS call is made). For two
variants, one `-X importtime` run says which packages the handler imports on top of boto3.
Note: with LAMBDA_TASK_ROOT set, the X-Ray SDK touches its marker file /tmp/.aws-xray/initialized.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import measure
from local import ROOT

HANDLER = "functions/generations/app.py"

_PROBE = """
import json, sys, time
started = time.perf_counter()
{body}
elapsed = time.perf_counter() - started
extra = {{}}
{after}
print(json.dumps({{"import_s": elapsed, "pil": "PIL" in sys.modules, "xray": "aws_xray_sdk" in sys.modules,
    "requests": "requests" in sys.modules, "modules": len(sys.modules), **extra}}))
"""

_BUILD_SERVICE = """
from imagegw.settings import Settings
from imagegw.wiring import build_service
t0 = time.perf_counter()
build_service(Settings.from_env())
extra["build_service_s"] = time.perf_counter() - t0
extra["pil_after_build"] = "PIL" in sys.modules
"""

SETTINGS = {
    "IMAGEGW_BUCKET": "imagegw-bench-images",
    "IMAGEGW_KEYS_TABLE": "KeysTable",
    "IMAGEGW_USAGE_TABLE": "UsageTable",
    "IMAGEGW_JOBS_TABLE": "JobsTable",
    "IMAGEGW_IDEMPOTENCY_TABLE": "IdempotencyTable",
    "IMAGEGW_JOBS_QUEUE_URL": "http://127.0.0.1:9/000000000000/JobsQueue",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "POWERTOOLS_SERVICE_NAME": "imagegw",
    "POWERTOOLS_METRICS_NAMESPACE": "imagegw",
}


def _base_env() -> dict[str, str]:
    drop = ("AWS_", "IMAGEGW_", "POWERTOOLS_", "LAMBDA_", "_X_AMZN", "_HANDLER", "PYTHONPROFILE")
    # Bytecode caches are used and written as by any run (gitignored; a deployed layer ships them too).
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


@dataclass
class Probe:
    body: str  # the import being timed
    env: dict[str, str]
    after: str = ""  # more work after the timed import (its own timing goes to `extra`)

    @property
    def code(self) -> str:
        return _PROBE.format(body=self.body, after=self.after)


HANDLER_IMPORT = f"import runpy\nrunpy.run_path({HANDLER!r})"


def variants() -> dict[str, Probe]:
    base = _base_env()
    deployed = {
        **base,
        **SETTINGS,
        "LAMBDA_TASK_ROOT": str(ROOT / "functions" / "generations"),
        "AWS_LAMBDA_FUNCTION_NAME": "GenerationsFunction",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    }
    tracing_off = {**base, **SETTINGS, "POWERTOOLS_TRACE_DISABLED": "true"}
    return {
        "floor": Probe("import boto3", {**base, **SETTINGS}),
        "handler_deployed": Probe(HANDLER_IMPORT, deployed),
        "handler_tracing_off": Probe(HANDLER_IMPORT, tracing_off),
        "first_request": Probe(HANDLER_IMPORT, tracing_off, after=_BUILD_SERVICE),
    }


LABELS = {
    "floor": "import boto3 (floor)",
    "handler_deployed": "handler, as deployed (tracing on)",
    "handler_tracing_off": "handler, tracing off (local, tests)",
    "first_request": "handler + build_service, tracing off",
}


def _once(probe: Probe) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", probe.code],
        cwd=ROOT,
        env=probe.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cold-start probe failed ({done.returncode}): {done.stderr[-1500:]}")
    line = done.stdout.strip().splitlines()[-1]
    facts: dict[str, Any] = json.loads(line)
    facts["process_s"] = wall
    return facts


def attribution(probe: Probe) -> dict[str, float]:
    """Import self-times (ms) by top-level package of what the code imports after `import boto3`
    (one `python -X importtime` run: a where-does-it-go view, not a measurement to compare)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import boto3\n" + probe.body],
        cwd=ROOT,
        env=probe.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    groups: dict[str, float] = {}
    after_boto3 = False
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, self_us, _, name = (part.strip() for part in line.replace("import time:", "|", 1).split("|"))
        if not after_boto3:
            after_boto3 = name == "boto3"
            continue
        top = name.split(".")[0]
        groups[top] = groups.get(top, 0.0) + int(self_us) / 1000
    return dict(sorted(groups.items(), key=lambda item: -item[1]))


def run(*, trials: int) -> dict[str, Any]:
    probes = variants()
    names = list(probes)
    for name in names:  # warm the page cache and bytecode caches once
        _once(probes[name])
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for index in range(trials):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(_once(probes[name]))

    def series(name: str, field: str) -> list[float]:
        return [measure.ms(s[field]) for s in samples[name]]

    floor_import, floor_process = series("floor", "import_s"), series("floor", "process_s")
    results: dict[str, Any] = {"trials": trials, "variants": {}}
    for name in names:
        imp, proc = series(name, "import_s"), series(name, "process_s")
        last = samples[name][-1]
        entry: dict[str, Any] = {
            "label": LABELS[name],
            "import_ms": measure.summary(imp),
            "process_ms": measure.summary(proc),
            "ratio_import_vs_floor": measure.summary(measure.paired(imp, floor_import)),
            "ratio_process_vs_floor": measure.summary(measure.paired(proc, floor_process)),
            "pil_imported": any(s["pil"] for s in samples[name]),
            "xray_imported": last["xray"],
            "requests_imported": last["requests"],
            "modules": last["modules"],
        }
        if "build_service_s" in last:
            build = series(name, "build_service_s")
            both = [i + b for i, b in zip(imp, build, strict=True)]
            entry["build_service_ms"] = measure.summary(build)
            entry["ratio_build_service_vs_floor"] = measure.summary(measure.paired(build, floor_import))
            entry["import_and_build_ms"] = measure.summary(both)
            entry["ratio_import_and_build_vs_floor"] = measure.summary(measure.paired(both, floor_import))
            entry["pil_after_build_service"] = any(s["pil_after_build"] for s in samples[name])
        results["variants"][name] = entry
    for name in ("handler_deployed", "handler_tracing_off"):
        results["variants"][name]["beyond_boto3_self_ms"] = attribution(probes[name])
    return results


def report(results: dict[str, Any]) -> str:
    f, r = measure.fmt_ms, measure.fmt_ratio
    rows = []
    for entry in results["variants"].values():
        imp, ratio = entry["import_ms"], entry["ratio_import_vs_floor"]
        if "import_and_build_ms" in entry:
            imp, ratio = entry["import_and_build_ms"], entry["ratio_import_and_build_vs_floor"]
        rows.append(
            [
                entry["label"],
                f"{f(imp['median'])} / {f(imp['p90'])}",
                f"{r(ratio['median'])} / {r(ratio['p90'])}",
                f"{f(entry['process_ms']['median'])}",
                f"{r(entry['ratio_process_vs_floor']['median'])}",
                "yes" if entry.get("pil_after_build_service", entry["pil_imported"]) else "no",
                "yes" if entry["xray_imported"] else "no",
                str(entry["modules"]),
            ]
        )
    out = [
        f"3. Cold start ({results['trials']} interleaved fresh interpreters per variant)",
        measure.table(
            [
                "variant",
                "import ms",
                "/ import boto3",
                "process ms",
                "/ boto3 process",
                "PIL loaded",
                "X-Ray SDK",
                "modules",
            ],
            rows,
        ),
        "   (med / p90; import = timed inside the fresh interpreter; process = spawn to exit, median)",
    ]
    first = results["variants"].get("first_request", {})
    if "build_service_ms" in first:
        out.append(
            "   build_service (boto3 clients and routes, made on the first request; no AWS call): "
            f"{f(first['build_service_ms']['median'])} ms median = "
            f"{r(first['ratio_build_service_vs_floor']['median'])} the boto3 import"
        )
    for entry in results["variants"].values():
        groups = entry.get("beyond_boto3_self_ms")
        if groups:
            top = ", ".join(f"{name} {ms:.0f}" for name, ms in list(groups.items())[:6])
            out.append(f"   on top of boto3, {entry['label']} (self ms, one -X importtime run): {top}")
    return "\n".join(out)
