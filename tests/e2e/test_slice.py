"""The foundation's vertical slice: a dall-e-3 generation through the local stack returns a real image."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from PIL import Image

SEED_REQUEST = {"model": "dall-e-3", "prompt": "A cute little sea otter", "n": 1, "size": "1024x1024"}


def test_seed_generation_returns_a_real_image_url(api):
    response = api("/images/generations", json=SEED_REQUEST)
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert isinstance(body["created"], int)
    [item] = body["data"]
    assert item["revised_prompt"]
    image = Image.open(io.BytesIO(requests.get(item["url"], timeout=10).content))
    assert image.size == (1024, 1024)


def test_sdk_generation(client):
    result = client.images.generate(**SEED_REQUEST)
    assert result.data[0].url
    assert result._request_id.startswith("req_")


def test_missing_key_is_401_in_openai_format(stack):
    response = requests.post(stack["api_url"] + "/images/generations", json=SEED_REQUEST, timeout=10)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert response.headers["x-request-id"].startswith("req_")


def test_wrong_key_is_401_and_masked(stack):
    wrong = "sk-wrong" + "x" * 40
    response = requests.post(
        stack["api_url"] + "/images/generations",
        json=SEED_REQUEST,
        headers={"Authorization": f"Bearer {wrong}"},
        timeout=10,
    )
    assert response.status_code == 401
    message = response.json()["error"]["message"]
    assert wrong not in message
    assert message == "Incorrect API key provided: sk-wr***xx."


def test_ctrl_c_stops_the_local_stack_cleanly(tmp_path):
    """`make dev` in the foreground: Ctrl-C (SIGINT) stops every part and exits 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IMAGEGW_"))}
    env["PORT"] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagegw_dev.cli", "dev", "--quiet", "--state-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "local.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
        api_url = json.loads((tmp_path / "local.json").read_text())["api_url"]  # written whole, then renamed
        assert not (tmp_path / "local.json.partial").exists()
        proc.send_signal(signal.SIGINT)  # at once: a Ctrl-C while start-up finishes must work too
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "stopping..." in output
    with pytest.raises(requests.ConnectionError):
        requests.get(api_url, timeout=2)
