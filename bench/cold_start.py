"""Benchmark 3: cold start of an API handler as Lambda runs it, against `import boto3` and the same clients.

What the issue asks for: the API handler's import plus the clients it builds, at most 1.3x a fresh process
that imports boto3 and builds the same clients. Every variant is a fresh interpreter (rotating order, many
trials) that times itself with perf_counter, interpreter start-up excluded:

- floor:    `import boto3`, then the same `session.client(...)` / `session.resource(...)` calls, in the same
            order, that `build_service` made in a discovery run (recorded, not hard-coded: when the wiring
            changes, the floor follows);
- handler:  `import app` of functions/generations with a *layer directory* first on sys.path, as Lambda
            puts /opt/python there, then `build_service(Settings.from_env())`: the clients and routes the
            first request builds (no AWS call is made). LAMBDA_TASK_ROOT is set, so tracing is on, as
            deployed with `Tracing: Active`.

The layer directory is built by the benchmark the way layers/imagegw/Makefile builds it: the layer's
requirements and their dependencies, copied from this environment, minus what the Lambda runtime provides
(boto3, botocore, s3transfer, ...), plus the imagegw package. Two copies: without any .pyc file (what the
layer shipped before it compiled bytecode: Lambda's /opt is read-only, so every import compiles) and with
bytecode (what the Makefile ships when a Python 3.13 is available). PYTHONDONTWRITEBYTECODE=1 everywhere,
so no run writes a cache the next one reads; boto3 itself is the environment's, compiled, as the runtime's.

Headline: ratio of the medians (handler import + build_service) / (import boto3 + the same clients).
Note: with LAMBDA_TASK_ROOT set, the X-Ray SDK touches its marker file /tmp/.aws-xray/initialized.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import measure
from local import ROOT

HANDLER_DIR = ROOT / "functions" / "generations"
LAYER_REQUIREMENTS = ROOT / "layers" / "imagegw" / "requirements.txt"
IMAGEGW = ROOT / "layers" / "imagegw" / "imagegw"
# What layers/imagegw/Makefile removes again (RUNTIME_PROVIDED): the Lambda runtime ships them.
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer", "python-dateutil", "six"}
# Loaded only by the requests that need them; a cold start that loads one has lost its laziness.
WATCHED = ("PIL", "aws_xray_sdk", "requests_toolbelt", "imagegw.upstream.bedrock", "sqlite3")

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
    "PYTHONDONTWRITEBYTECODE": "1",
}

_HANDLER_PROBE = """
import json, sys, time
started, cpu_started = time.perf_counter(), time.process_time()
sys.path[:0] = [{handler_dir!r}, {layer!r}]
import app
imported, cpu_imported = time.perf_counter(), time.process_time()
import boto3.session
made, depth = [], [0]
for kind in ("client", "resource"):
    def recording(self, service, *args, _original=getattr(boto3.session.Session, kind), _kind=kind, **kwargs):
        if not depth[0]:  # what wiring asks for, not the client a resource makes for itself
            made.append([_kind, service])
        depth[0] += 1
        try:
            return _original(self, service, *args, **kwargs)
        finally:
            depth[0] -= 1
    setattr(boto3.session.Session, kind, recording)
from imagegw.settings import Settings
from imagegw.wiring import build_service
built_from, cpu_built_from = time.perf_counter(), time.process_time()
build_service(Settings.from_env())
done, cpu_done = time.perf_counter(), time.process_time()
assert sys.modules["imagegw"].__file__.startswith({layer!r}), sys.modules["imagegw"].__file__
print(json.dumps({{"import_s": imported - started, "build_s": done - built_from, "clients": made,
    "cpu_s": (cpu_imported - cpu_started) + (cpu_done - cpu_built_from),
    "loaded": [name for name in {watched!r} if name in sys.modules], "modules": len(sys.modules)}}))
"""

_FLOOR_PROBE = """
import json, sys, time
started, cpu_started = time.perf_counter(), time.process_time()
import boto3
imported = time.perf_counter()
session = boto3.session.Session()
for kind, service in {clients!r}:
    getattr(session, kind)(service)
done, cpu_done = time.perf_counter(), time.process_time()
print(json.dumps({{"import_s": imported - started, "build_s": done - imported, "clients": {clients!r},
    "cpu_s": cpu_done - cpu_started,
    "loaded": [], "modules": len(sys.modules)}}))
"""


# ---------------------------------------------------------------------------------------------- the layer


# Run by the interpreter the probes use (its site-packages are the layer's source): the layer's requirements
# and everything they pull in (extras followed), minus the runtime's own, as top-level paths to copy.
_LAYER_CONTENTS = """
import json, sys
from importlib import metadata
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
lines = [l.split("#")[0].strip() for l in open(sys.argv[1], encoding="utf-8")]
todo, wanted = [Requirement(l) for l in lines if l], []
while todo:
    req = todo.pop()
    name = canonicalize_name(req.name)
    if name in wanted or name in {runtime!r}:
        continue
    wanted.append(name)
    extras = [*req.extras, ""]
    for raw in metadata.distribution(name).requires or []:
        dep = Requirement(raw)
        if dep.marker is None or any(dep.marker.evaluate({{"extra": e}}) for e in extras):
            todo.append(dep)
paths = set()
for name in wanted:
    dist = metadata.distribution(name)
    for file in dist.files or []:
        top = file.parts[0]
        if not top.endswith((".dist-info", ".data")) and top not in ("..", "bin", "__pycache__"):
            paths.add(str(dist.locate_file(top)))
print(json.dumps(sorted(paths)))
"""


def build_layer(target: Path, imagegw_dir: Path = IMAGEGW, interpreter: str = sys.executable) -> Path:
    """`target`/python as the layer's zip has it, without bytecode, from `interpreter`'s packages."""
    python = target / "python"
    python.mkdir(parents=True)
    done = subprocess.run(
        [
            interpreter,
            "-c",
            _LAYER_CONTENTS.format(runtime=sorted(RUNTIME_PROVIDED)),
            str(LAYER_REQUIREMENTS),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for source in map(Path, json.loads(done.stdout)):
        if source.is_dir():
            shutil.copytree(source, python / source.name, ignore=skip, dirs_exist_ok=True)
        elif source.exists():
            shutil.copy2(source, python / source.name)
    shutil.copytree(imagegw_dir, python / "imagegw", ignore=skip)
    return python


def compile_layer(python: Path, interpreter: str = sys.executable) -> None:
    """As the Makefile does, with the probes' interpreter (bytecode is per Python version)."""
    subprocess.run(
        [
            interpreter,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            str(python),
        ],
        capture_output=True,
        timeout=300,
        check=True,
    )


# ---------------------------------------------------------------------------------------------- probes


@dataclass
class Probe:
    label: str
    code: str
    env: dict[str, str]
    interpreter: str = sys.executable


def _base_env() -> dict[str, str]:
    drop = ("AWS_", "IMAGEGW_", "POWERTOOLS_", "LAMBDA_", "_X_AMZN", "_HANDLER", "PYTHON")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _lambda_env(tracing: bool) -> dict[str, str]:
    env = {**_base_env(), **SETTINGS}
    if tracing:
        env.update(
            LAMBDA_TASK_ROOT=str(HANDLER_DIR),
            AWS_LAMBDA_FUNCTION_NAME="GenerationsFunction",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1024",
            AWS_EXECUTION_ENV="AWS_Lambda_python3.13",
        )
    else:
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
    return env


def handler_probe(
    label: str, layer: Path, *, tracing: bool = True, interpreter: str = sys.executable
) -> Probe:
    code = _HANDLER_PROBE.format(handler_dir=str(HANDLER_DIR), layer=str(layer), watched=WATCHED)
    return Probe(label, code, _lambda_env(tracing), interpreter)


def floor_probe(clients: list[list[str]], interpreter: str = sys.executable) -> Probe:
    return Probe(
        "import boto3 + the same clients (floor)",
        _FLOOR_PROBE.format(clients=clients),
        {**_base_env(), **SETTINGS},
        interpreter,
    )


def _python(probe: Probe, *options: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [probe.interpreter, *options, "-c", probe.code if code is None else code],
        cwd=ROOT,
        env=probe.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _once(probe: Probe) -> dict[str, Any]:
    started = time.perf_counter()
    done = _python(probe)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cold-start probe {probe.label!r} failed: {done.stderr[-1500:]}")
    facts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    facts["process_s"] = wall
    facts["total_s"] = facts["import_s"] + facts["build_s"]
    return facts


def attribution(probe: Probe) -> dict[str, float]:
    """Import self-times (ms) by top-level package of what the handler imports after `import boto3`
    (one `python -X importtime` run: a where-does-it-go view, not a measurement to compare)."""
    done = _python(probe, "-X", "importtime", code="import boto3\n" + probe.code)
    groups: dict[str, float] = {}
    after_boto3 = False
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if not match:
            continue
        if not after_boto3:
            after_boto3 = match.group(2) == "boto3"
            continue
        top = match.group(2).split(".")[0]
        groups[top] = groups.get(top, 0.0) + int(match.group(1)) / 1000
    return dict(sorted(groups.items(), key=lambda item: -item[1]))


# ---------------------------------------------------------------------------------------------- run


def run(*, trials: int, imagegw_dir: Path = IMAGEGW, interpreter: str = sys.executable) -> dict[str, Any]:
    """`interpreter`: the Python the probes run, with boto3 and the layer's requirements installed (the
    project's environment by default; a Python 3.13 one measures with Lambda's version)."""
    with tempfile.TemporaryDirectory(prefix="imagegw-bench-layer-") as tmp:
        sources = build_layer(Path(tmp) / "sources", imagegw_dir, interpreter)
        compiled = build_layer(Path(tmp) / "compiled", imagegw_dir, interpreter)
        compile_layer(compiled, interpreter)
        py = {"interpreter": interpreter}
        handlers = {
            "compiled": handler_probe("handler, layer with bytecode (as built now)", compiled, **py),
            "sources": handler_probe("handler, layer without bytecode (as built before)", sources, **py),
            "local": handler_probe(
                "handler, tracing off (local stack, tests)", compiled, tracing=False, **py
            ),
        }
        discovery = _once(handlers["compiled"])  # also warms the page cache
        probes = {"floor": floor_probe(discovery["clients"], interpreter), **handlers}
        samples = _interleaved(probes, trials)
        results = _figures(probes, samples, trials)
        results["clients"] = [f"{kind}({service!r})" for kind, service in discovery["clients"]]
        results["python"] = _version(interpreter)
        results["beyond_boto3_self_ms"] = attribution(handlers["compiled"])
    return results


def _version(interpreter: str) -> str:
    done = subprocess.run(
        [interpreter, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def _interleaved(probes: dict[str, Probe], trials: int) -> dict[str, list[dict[str, Any]]]:
    names = list(probes)
    for name in names:
        _once(probes[name])  # warm-up
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for index in range(trials):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(_once(probes[name]))
    return samples


def _figures(
    probes: dict[str, Probe], samples: dict[str, list[dict[str, Any]]], trials: int
) -> dict[str, Any]:
    def series(name: str, field: str) -> list[float]:
        return [measure.ms(s[field]) for s in samples[name]]

    floor_total = measure.median(series("floor", "total_s"))
    floor_cpu = measure.median(series("floor", "cpu_s"))
    results: dict[str, Any] = {"trials": trials, "variants": {}}
    for name, probe in probes.items():
        total, cpu = series(name, "total_s"), series(name, "cpu_s")
        results["variants"][name] = {
            "label": probe.label,
            "import_ms": measure.summary(series(name, "import_s")),
            "build_ms": measure.summary(series(name, "build_s")),
            "total_ms": measure.summary(total),
            "cpu_ms": measure.summary(cpu),
            "process_ms": measure.summary(series(name, "process_s")),
            "ratio_of_medians": measure.median(total) / floor_total,
            "cpu_ratio_of_medians": measure.median(cpu) / floor_cpu,
            "paired_ratio": measure.summary(measure.paired(total, series("floor", "total_s"))),
            "loaded": sorted({m for s in samples[name] for m in s["loaded"]}),
            "modules": samples[name][-1]["modules"],
        }
    return results


TARGET = 1.3  # issue 11: at most 1.3x the floor


def report(results: dict[str, Any]) -> str:
    f, r = measure.fmt_ms, measure.fmt_ratio
    rows = []
    for entry in results["variants"].values():
        rows.append(
            [
                entry["label"],
                f(entry["import_ms"]["median"]),
                f(entry["build_ms"]["median"]),
                f"{f(entry['total_ms']['median'])} / {f(entry['total_ms']['p90'])}",
                r(entry["ratio_of_medians"]),
                f(entry["cpu_ms"]["median"]),
                r(entry["cpu_ratio_of_medians"]),
                ", ".join(entry["loaded"]) or "-",
            ]
        )
    out = [
        f"3. Cold start ({results['trials']} interleaved fresh interpreters per variant, Python "
        f"{results.get('python', '?')})",
        measure.table(
            ["variant", "import ms", "clients ms", "total ms", "/ floor", "CPU ms", "CPU / floor", "loaded"],
            rows,
        ),
        "   (total = import + build_service, wall time, med / p90; CPU = the same span's process CPU time;",
        f"    / floor = ratio of the medians, target <= {TARGET}x; loaded = of {', '.join(WATCHED)})",
        f"   clients built by build_service, and by the floor: {', '.join(results['clients'])}",
    ]
    groups = results.get("beyond_boto3_self_ms") or {}
    top = ", ".join(f"{name} {ms:.0f}" for name, ms in list(groups.items())[:8])
    out.append(f"   on top of boto3, layer with bytecode (self ms, one -X importtime run): {top}")
    return "\n".join(out)


def headline(results: dict[str, Any]) -> str:
    r = measure.fmt_ratio
    after, before = results["variants"]["compiled"], results["variants"]["sources"]
    verdict = "within" if max(after["ratio_of_medians"], after["cpu_ratio_of_medians"]) <= TARGET else "OVER"
    return (
        f"cold start, handler import + clients / (import boto3 + same clients): wall "
        f"{r(after['ratio_of_medians'])}, CPU {r(after['cpu_ratio_of_medians'])} ({verdict} the {TARGET}x "
        f"target); layer without bytecode: wall {r(before['ratio_of_medians'])}, CPU "
        f"{r(before['cpu_ratio_of_medians'])}"
    )
