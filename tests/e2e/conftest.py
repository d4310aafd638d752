"""The e2e tier: the local stack (`imagegw dev`) runs as a subprocess; tests speak HTTP to it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import requests
from helpers.aws import stack_aws

from imagegw.accounts.keys import KeyStore

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90
CORS_ORIGIN = "https://app.example.test"  # the one browser origin the e2e stack allows


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("stack")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IMAGEGW_"))}
    env.update({"PORT": "0", "IMAGEGW_DEV_API_KEY": "sk-e2e-" + "k" * 40, "PYTHONUNBUFFERED": "1"})
    # The stack gets the tests' loopback-only guard at start-up (its sitecustomize): a request that makes
    # it connect anywhere but 127.0.0.1 fails instead of leaving the machine.
    guard = str(ROOT / "tests" / "helpers" / "loopback_site")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [guard, env.get("PYTHONPATH")]))
    env["IMAGEGW_CORS_ALLOW_ORIGINS"] = CORS_ORIGIN  # as `IMAGEGW_CORS_ALLOW_ORIGINS=... make dev` takes it
    log_path = state_dir / "stack.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imagegw_dev.cli", "dev", "--quiet", "--state-dir", str(state_dir)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    state_file = state_dir / "local.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not state_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"local stack did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.1)
    state = json.loads(state_file.read_text())  # written last, after the server listens, and whole (renamed)
    state["api_key"] = env["IMAGEGW_DEV_API_KEY"]
    state["log_path"] = str(log_path)
    yield state
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def client(stack):
    return openai.OpenAI(base_url=stack["api_url"], api_key=stack["api_key"], max_retries=0, timeout=60)


@pytest.fixture
def api(stack):
    """Raw HTTP, as curl sends it."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack['api_key']}"

    def post(path, **kwargs):
        return session.post(stack["api_url"] + path, timeout=60, **kwargs)

    post.session = session
    return post


@pytest.fixture(scope="session")
def stack_keys(stack):
    """The stack's keys table, to create more keys the way `imagegw keys create` does."""
    return KeyStore(stack_aws(stack, "dynamodb", resource=True).Table(stack["tables"]["keys"]))


@pytest.fixture
def emulator_control(stack):
    """The emulator's own HTTP control endpoints, to make the upstream misbehave for one test."""
    base = stack["emulator_url"]
    requests.post(base + "/_emulator/reset", timeout=5)
    yield base
    requests.post(base + "/_emulator/reset", timeout=5)
