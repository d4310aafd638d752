"""What a cold start loads, checked without timing (the figures are `make bench`'s: docs/benchmarks.md).

Each API handler is imported as Lambda does (its function directory and the layer on sys.path), then builds
its service as the first request does, in a fresh interpreter; what it must not have loaded by then is only
needed on some requests (Pillow, multipart uploads, Bedrock, jobs' worker side) or is tracing that is off.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from imagegw.observability import NoTracer, make_tracer, tracing_enabled

ROOT = Path(__file__).resolve().parents[2]
API_HANDLERS = ("generations", "edits", "variations", "job_status")

SETTINGS = {
    "IMAGEGW_BUCKET": "imagegw-test-images",
    "IMAGEGW_KEYS_TABLE": "KeysTable",
    "IMAGEGW_USAGE_TABLE": "UsageTable",
    "IMAGEGW_JOBS_TABLE": "JobsTable",
    "IMAGEGW_IDEMPOTENCY_TABLE": "IdempotencyTable",
    "IMAGEGW_JOBS_QUEUE_URL": "http://127.0.0.1:9/000000000000/JobsQueue",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "imagegw",
}

# Loaded only by the requests that need them: images (Pillow), multipart uploads upstream, Bedrock routes.
NEVER_AT_COLD_START = ("PIL", "requests_toolbelt", "imagegw.upstream.bedrock", "sqlite3")

_PROBE = """
import json, sys
sys.path[:0] = [{function_dir!r}, {layer!r}]
import app
from imagegw.settings import Settings
from imagegw.wiring import build_service
build_service(Settings.from_env())
import botocore.client, http.client

def by_xray(cls, name):  # the X-Ray SDK patches methods with wrapt's FunctionWrapper
    return type(cls.__dict__[name]).__name__ == "FunctionWrapper"

print(json.dumps({{
    "loaded": sorted(name for name in sys.modules if name.split(".")[0] in {tops!r} or name in {names!r}),
    "botocore_patched": by_xray(botocore.client.BaseClient, "_make_api_call"),
    "httplib_patched": by_xray(http.client.HTTPConnection, "getresponse"),
    "requests_patched": "requests" in sys.modules and by_xray(sys.modules["requests"].Session, "request"),
}}))
"""


def cold_start(handler: str, extra_env: dict[str, str]) -> dict[str, object]:
    names = [*NEVER_AT_COLD_START, "aws_xray_sdk"]
    code = _PROBE.format(
        function_dir=str(ROOT / "functions" / handler),
        layer=str(ROOT / "layers" / "imagegw"),
        tops=sorted({n.split(".")[0] for n in names}),
        names=names,
    )
    drop = ("AWS_", "IMAGEGW_", "POWERTOOLS_", "LAMBDA_", "_X_AMZN", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, **SETTINGS, **extra_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    facts: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return facts


def loaded_modules(facts: dict[str, object]) -> set[str]:
    loaded = facts["loaded"]
    assert isinstance(loaded, list)
    return set(loaded)


@pytest.mark.parametrize("handler", API_HANDLERS)
def test_a_cold_start_with_tracing_off_loads_neither_the_xray_sdk_nor_what_only_some_requests_need(handler):
    facts = cold_start(handler, {"POWERTOOLS_TRACE_DISABLED": "true"})
    loaded = loaded_modules(facts)
    for name in (*NEVER_AT_COLD_START, "aws_xray_sdk"):
        assert name not in loaded, f"{name} loaded at cold start"
    assert not facts["botocore_patched"] and not facts["requests_patched"] and not facts["httplib_patched"]


@pytest.mark.parametrize("handler", API_HANDLERS)
def test_a_cold_start_in_lambda_traces_aws_upstream_and_image_url_calls_and_loads_nothing_else(
    handler, tmp_path
):
    # As Lambda runs it with `Tracing: Active`: LAMBDA_TASK_ROOT set, tracing not disabled. The X-Ray SDK
    # then writes its marker file under /tmp; no segment is sent (nothing is invoked).
    facts = cold_start(handler, {"LAMBDA_TASK_ROOT": str(tmp_path), "AWS_LAMBDA_FUNCTION_NAME": handler})
    loaded = loaded_modules(facts)
    assert "aws_xray_sdk" in loaded
    assert facts["botocore_patched"] and facts["requests_patched"] and facts["httplib_patched"]
    for name in NEVER_AT_COLD_START:
        assert name not in loaded, f"{name} loaded at cold start"


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({"LAMBDA_TASK_ROOT": "/var/task"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "false"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "1"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_CHALICE_CLI_MODE": "true"}, False),
        ({}, False),
    ],
)
def test_tracing_is_on_only_in_lambda_and_not_disabled(env, enabled):
    assert tracing_enabled(env) is enabled


def test_with_tracing_off_the_handler_decorators_return_the_function_itself():
    tracer = make_tracer({})
    assert isinstance(tracer, NoTracer)

    def handler(event, context):
        return {"event": event}

    assert tracer.capture_lambda_handler(handler) is handler
    assert tracer.capture_method(handler) is handler


# ----- the layer ships bytecode for the runtime's Python ------------------------------------------------


def _python313() -> str | None:
    found = shutil.which("python3.13")
    if found is None:
        return None
    probe = subprocess.run([found, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"], **_QUIET)
    return found if probe.returncode == 0 and probe.stdout.strip() == "True" else None


_QUIET: dict = {"capture_output": True, "text": True, "timeout": 60, "check": False}


def _make_bytecode(artifacts: Path, python: str) -> subprocess.CompletedProcess[str]:
    shutil.copytree(ROOT / "layers/imagegw/imagegw", artifacts / "python" / "imagegw")
    return subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(ROOT / "layers/imagegw"),
            "bytecode",
            f"ARTIFACTS_DIR={artifacts}",
            f"PYTHON_RUNTIME={python}",
        ],
        **_QUIET,
    )


def test_without_python313_the_layer_still_builds_from_sources_and_says_so(tmp_path):
    done = _make_bytecode(tmp_path, sys.executable if sys.version_info[:2] != (3, 13) else "/nonexistent")
    assert done.returncode == 0, done.stderr
    assert "without bytecode" in done.stderr
    assert not list((tmp_path / "python").rglob("*.pyc"))


def test_the_layer_ships_unchecked_hash_bytecode_for_python313(tmp_path):
    python = _python313()
    if python is None:
        pytest.skip("no working python3.13 on PATH")
    done = _make_bytecode(tmp_path, python)
    assert done.returncode == 0, done.stderr
    sources = list((tmp_path / "python" / "imagegw").rglob("*.py"))
    assert sources
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
        assert compiled.exists(), compiled
        flags = int.from_bytes(compiled.read_bytes()[4:8], "little")
        assert flags == 0b01, f"{compiled}: not hash-based with the source unchecked"


# ----- SnapStart runtime hooks ----------------------------------------------------------------------------


def test_under_snapstart_the_random_state_shared_by_restored_environments_is_reseeded(monkeypatch):
    import random
    import types

    from imagegw import wiring

    registered: list = []
    fake = types.ModuleType("snapshot_restore_py")
    fake.register_after_restore = lambda func, *args, **kwargs: registered.append((func, args, kwargs))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", fake)
    assert wiring.register_snapstart_hooks() is True
    assert len(registered) == 1

    random.seed(1234)  # the state every environment restored from one snapshot would start from
    from_snapshot = [random.random() for _ in range(4)]
    random.seed(1234)
    for func, args, kwargs in registered:  # what Lambda runs after each restore
        func(*args, **kwargs)
    assert [random.random() for _ in range(4)] != from_snapshot


def test_without_the_snapstart_library_no_hook_is_registered(monkeypatch):
    from imagegw import wiring

    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # import fails, as off Lambda
    assert wiring.register_snapstart_hooks() is False


def test_building_the_service_is_left_to_the_first_request_so_no_connection_is_in_a_snapshot():
    # Importing a handler (Lambda's init, which SnapStart snapshots) makes no boto3 session or client.
    code = (
        "import sys; sys.path[:0] = [{f!r}, {layer!r}]\n"
        "import boto3.session\n"
        "made = []\n"
        "boto3.session.Session.__init__ = lambda self, *a, **k: made.append(1)\n"
        "import app\n"
        "print(len(made))"
    ).format(f=str(ROOT / "functions" / "generations"), layer=str(ROOT / "layers" / "imagegw"))
    drop = ("AWS_", "IMAGEGW_", "POWERTOOLS_", "LAMBDA_", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, **SETTINGS, "POWERTOOLS_TRACE_DISABLED": "true"},
        **_QUIET,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "0"


def test_the_stand_in_tracer_takes_both_decorator_forms_the_tracer_takes():
    tracer = NoTracer()

    def handler(event: Any, context: Any) -> str:
        return "answered"

    assert tracer.capture_lambda_handler(handler) is handler
    assert tracer.capture_lambda_handler(capture_response=False)(handler) is handler
    assert tracer.capture_method(handler) is handler
    assert tracer.capture_method(capture_response=False)(handler) is handler
