"""Async jobs over HTTP against the local stack: `Prefer: respond-async` answers 202, the local stack's
SQS event source runs the jobs worker on moto's SQS, and GET /v1/images/jobs/{id} serves the result to
the key that submitted the job only."""

from __future__ import annotations

import io
import time

import pytest
import requests
from PIL import Image

ASYNC = {"Prefer": "respond-async"}
POLL_TIMEOUT_S = 20


def wait_for(session: requests.Session, url: str) -> dict:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        response = session.get(url, timeout=10)
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


@pytest.fixture(scope="module")
def other_key(stack_keys) -> str:
    """A second API key."""
    return stack_keys.create("another caller").raw_key


def test_an_async_generation_completes_and_only_its_key_can_read_it(api, stack, other_key):
    request = {"model": "gpt-image-1.5", "prompt": "A cute little sea otter", "quality": "low"}

    submitted = api("/images/generations", json=request, headers=ASYNC)

    assert submitted.status_code == 202, submitted.text
    assert submitted.headers["Preference-Applied"] == "respond-async"
    assert submitted.headers["x-request-id"].startswith("req_")
    job = submitted.json()
    assert job["object"] == "image.job" and job["status"] == "queued" and job["id"].startswith("job_")
    assert job["status_url"] == f"{stack['api_url']}/images/jobs/{job['id']}"
    assert submitted.headers["Location"] == job["status_url"]

    done = wait_for(api.session, job["status_url"])

    assert done["status"] == "succeeded", done
    assert done["id"] == job["id"] and done["model"] == "gpt-image-1.5" and done["operation"] == "generations"
    assert done["error"] is None
    [item] = done["result"]["data"]
    image = Image.open(io.BytesIO(requests.get(item["url"], timeout=10).content))
    assert image.size == (1024, 1024)
    assert item["b64_json"]  # GPT image models answer b64_json by default, and this one is small
    assert done["result"]["usage"]["total_tokens"] > 0

    as_other = {"Authorization": f"Bearer {other_key}"}
    stranger = requests.get(job["status_url"], headers=as_other, timeout=10)
    missing = requests.get(f"{stack['api_url']}/images/jobs/job_{'0' * 32}", headers=as_other, timeout=10)
    assert stranger.status_code == missing.status_code == 404
    assert stranger.json() == {
        "error": {
            "message": f"No job found with id '{job['id']}'.",
            "type": "invalid_request_error",
            "param": "job_id",
            "code": "job_not_found",
        }
    }
    anonymous = requests.get(job["status_url"], timeout=10)
    assert anonymous.status_code == 401


def test_an_async_multipart_edit_from_the_sdk(client, api):
    photo = io.BytesIO()
    Image.new("RGBA", (256, 256), (30, 90, 200, 0)).save(photo, "PNG")
    raw = client.images.with_raw_response.edit(
        model="dall-e-2",
        image=("otter.png", photo.getvalue(), "image/png"),
        prompt="Add a tiny hat",
        n=2,
        size="256x256",
        extra_headers=ASYNC,
    )
    assert raw.status_code == 202
    job = raw.http_response.json()

    done = wait_for(api.session, job["status_url"])

    assert done["status"] == "succeeded", done
    assert done["operation"] == "edits" and done["model"] == "dall-e-2"
    urls = [item["url"] for item in done["result"]["data"]]
    assert len(urls) == 2
    assert all("b64_json" not in item for item in done["result"]["data"])  # dall-e-2 answers urls by default
    assert Image.open(io.BytesIO(requests.get(urls[0], timeout=10).content)).size == (256, 256)


def test_a_job_that_fails_upstream_validation_is_failed_with_the_http_error(api):
    submitted = api(
        "/images/generations",
        json={"model": "dall-e-3", "prompt": "two otters", "stream": True},
        headers=ASYNC,
    )
    assert submitted.status_code == 400  # validated before it is queued, exactly like a synchronous request
    assert submitted.json()["error"]["param"] == "stream"


def test_an_async_job_for_a_model_the_key_may_not_use_is_refused_at_once(stack, stack_keys):
    limited = stack_keys.create("dall-e only", allowed_models=["dall-e-*"])
    response = requests.post(
        stack["api_url"] + "/images/generations",
        json={"model": "gpt-image-1.5", "prompt": "A cute little sea otter"},
        headers={**ASYNC, "Authorization": f"Bearer {limited.raw_key}"},
        timeout=10,
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "model_not_allowed"
