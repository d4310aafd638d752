"""openapi.yaml is kept true: schemathesis generates requests from it (valid and invalid) against the local
stack and checks every answer: no server error, a documented status and content type, a body that matches
its schema. Bounded in time (and one worker: Python 3.11's ast module is not safe to use from two threads,
which hypothesis does when it describes its strategies)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
BUDGET_S = 60


def test_the_api_keeps_to_its_openapi_document(stack, tmp_path):
    st = Path(sys.executable).with_name("st")
    command = [
        str(st), "run", str(ROOT / "openapi.yaml"),
        "--url", stack["api_url"],
        "--header", f"Authorization: Bearer {stack['api_key']}",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "10",
        "--max-time", str(BUDGET_S),
        "--seed", "1",
        "--workers", "1",
        "--request-timeout", "30",
        "--no-shrink",
        "--report-dir", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(  # in tmp_path: schemathesis keeps a cache in its working directory
        command, capture_output=True, text=True, timeout=BUDGET_S + 120, env=env, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "passed" in done.stdout
