"""The job as GET /v1/images/jobs/{id} answers it: fresh URLs, b64 only when asked and small, no owner."""

from __future__ import annotations

import base64
import json
from typing import Any

from helpers.fakes import InMemoryImageStore

from imagegw.jobs.submission import job_view

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
S3_URL = "https://bucket.s3.amazonaws.com/{key}?X-Amz-Signature=fresh"


def succeeded(response_format: str, size: int = 40) -> dict[str, Any]:
    return {
        "job_id": "job_1",
        "key_id": "key_1",
        "status": "succeeded",
        "operation": "generations",
        "model": "gpt-image-1.5",
        "created": 100,
        "updated": 110,
        "started": 101,
        "finished": 110,
        "response_format": response_format,
        "result": {
            "created": 109,
            "images": [{"key": "images/2026/11/28/job_1/0.png", "bytes": size, "format": "png"}],
            "usage": {"total_tokens": 10},
            "meta": {"output_format": "png", "quality": "low"},
        },
    }


def test_a_succeeded_job_has_fresh_urls_and_b64_only_when_asked_and_small():
    store = InMemoryImageStore(S3_URL)
    store.objects["images/2026/11/28/job_1/0.png"] = PNG
    asked_b64 = job_view(succeeded("b64_json"), store).to_dict()
    assert asked_b64 == {
        "id": "job_1",
        "object": "image.job",
        "status": "succeeded",
        "created": 100,
        "updated": 110,
        "started": 101,
        "finished": 110,
        "model": "gpt-image-1.5",
        "operation": "generations",
        "result": {
            "created": 109,
            "data": [
                {
                    "url": "https://bucket.s3.amazonaws.com/images/2026/11/28/job_1/0.png?X-Amz-Signature=fresh",
                    "b64_json": base64.b64encode(PNG).decode(),
                }
            ],
            "output_format": "png",
            "quality": "low",
            "usage": {"total_tokens": 10},
        },
        "error": None,
    }
    assert "b64_json" not in job_view(succeeded("url"), store).to_dict()["result"]["data"][0]
    too_big = job_view(succeeded("b64_json", size=5 * 1024 * 1024), store).to_dict()
    assert list(too_big["result"]["data"][0]) == ["url"]


def test_a_failed_job_shows_its_error_and_never_its_owner():
    record = {
        "job_id": "job_2",
        "key_id": "key_1",
        "status": "failed",
        "created": 1,
        "error": {
            "message": "m",
            "type": "server_error",
            "param": None,
            "code": "upstream_error",
            "status": 502,
        },
        "last_error": {"status": 502},
    }
    view = job_view(record, InMemoryImageStore(S3_URL)).to_dict()
    assert view["status"] == "failed" and view["result"] is None
    assert view["error"]["code"] == "upstream_error"
    assert "key_id" not in json.dumps(view) and "last_error" not in view


def test_a_retrying_job_shows_no_error_yet():
    view = job_view(
        {"job_id": "job_3", "status": "queued", "last_error": {"status": 502}}, InMemoryImageStore(S3_URL)
    ).to_dict()
    assert view["status"] == "queued" and view["error"] is None and view["result"] is None
