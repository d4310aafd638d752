"""Submitting an async job (Prefer: respond-async): inputs to S3, a message on the queue, a 202 answer."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from helpers.fakes import InMemoryImageStore

from imagegw.accounts.admission import Admission
from imagegw.accounts.quota import Hold
from imagegw.domain import Caller, HttpRequest, ImageFile, ImageRequest, RawRequest
from imagegw.errors import InvalidRequest, ServiceUnavailable
from imagegw.jobs.submission import AsyncJobs, new_job_id
from imagegw.request.catalog import Catalog

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
CALLER = Caller(key_hash="h" * 64, key_id="key_0123456789abcdef", display="sk-abc...wxyz")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("respond-async", True),
        ("RESPOND-ASYNC", True),
        ("wait=10, respond-async", True),
        ("respond-async; foo=bar", True),
        ("return=minimal", False),
        ("respond-asyncly", False),
        ("", False),
    ],
)
def test_prefer_header(header, expected):
    headers = {"prefer": header} if header else {}
    assert HttpRequest("POST", "/v1/images/generations", headers, b"", "req_1").respond_async is expected


class FakeJobs:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def now(self) -> int:
        return 1_800_000_000

    def create(self, **fields: Any) -> dict[str, Any]:
        record = {**fields, "status": "queued", "created": self.now()}
        self.records[fields["job_id"]] = record
        return record

    def fail(self, job_id: str, error: dict[str, Any]) -> None:
        self.records[job_id].update(status="failed", error=error)

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.records.get(job_id)


class FakeSqs:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        if self.fail:
            raise ConnectionError("sqs is down")
        self.sent.append(kwargs)
        return {"MessageId": "m1"}


def async_jobs(sqs: FakeSqs | None = None) -> tuple[AsyncJobs, FakeJobs, InMemoryImageStore, FakeSqs]:
    jobs, store, queue = FakeJobs(), InMemoryImageStore(), sqs or FakeSqs()
    frontend = AsyncJobs(
        jobs=jobs,  # type: ignore[arg-type]
        store=store,
        sqs_client=queue,
        queue_url="https://sqs.local/JobsQueue",
        catalog=Catalog.load(),
        clock=lambda: 1_800_000_000,
    )
    return frontend, jobs, store, queue


def admitted(request: ImageRequest) -> Admission:
    """What the service hands a submission: the job admitted under a fresh job id."""
    return Admission(CALLER, request, new_job_id(), Hold("held", request.n, Decimal(4), 1_800_345_600, 1.8e9))


def http(base_url: str = "https://api.example.com/api") -> HttpRequest:
    return HttpRequest(
        "POST", "/v1/images/edits", {"prefer": "respond-async"}, b"", "req_1", base_url=base_url
    )


def test_a_multipart_edit_is_queued_with_its_images_in_s3():
    frontend, jobs, store, queue = async_jobs()
    image = ImageFile(field_name="image[0]", data=PNG, filename="otter.png", format="png")
    mask = ImageFile(field_name="mask", data=PNG, filename="mask.png", format="png")
    raw = RawRequest(
        "edits", {"model": "gpt-image-1.5", "prompt": "hat", "n": "2"}, [image], mask, multipart=True
    )
    request = ImageRequest("edits", "gpt-image-1.5", {"prompt": "hat", "n": 2}, [image], mask)

    response = frontend.submit(admitted(request), raw, http())

    assert response.status == 202
    body = json.loads(response.body)
    job_id = body["id"]
    assert job_id.startswith("job_") and body["status"] == "queued" and body["object"] == "image.job"
    assert body["status_url"] == f"https://api.example.com/api/v1/images/jobs/{job_id}"
    assert response.headers == {"Preference-Applied": "respond-async", "Location": body["status_url"]}
    [sent] = queue.sent
    assert sent["QueueUrl"] == "https://sqs.local/JobsQueue"
    message = json.loads(sent["MessageBody"])
    stem = f"inputs/2027/01/15/{job_id}"
    assert message == {
        "version": 1,
        "job_id": job_id,
        "operation": "edits",
        "request": {"model": "gpt-image-1.5", "prompt": "hat", "n": "2"},
        "caller": {"key_id": CALLER.key_id},
        "inputs": {
            "images": [{"key": f"{stem}/0.png", "filename": "otter.png", "field": "image[0]"}],
            "mask": {"key": f"{stem}/mask.png", "filename": "mask.png", "field": "mask"},
        },
    }
    assert set(store.objects) == {f"{stem}/0.png", f"{stem}/mask.png"}
    record = jobs.records[job_id]
    assert (
        record["key_id"] == CALLER.key_id and record["source"] == "http" and record["request_id"] == "req_1"
    )
    assert record["response_format"] == "b64_json"  # the GPT models' default


def test_a_markup_edit_is_queued_with_its_markup_in_s3():
    frontend, _, store, queue = async_jobs()
    image = ImageFile(field_name="image", data=PNG, filename="otter.png", format="png")
    markup = ImageFile(field_name="markup", data=PNG + b"k", filename="arrows.png", format="png")
    raw = RawRequest(
        "edits", {"model": "gpt-image-2.5", "prompt": "hat"}, [image], multipart=True, markup=markup
    )
    request = ImageRequest("edits", "gpt-image-2.5", {"prompt": "hat"}, [image], markup=markup)

    response = frontend.submit(admitted(request), raw, http())

    job_id = json.loads(response.body)["id"]
    stem = f"inputs/2027/01/15/{job_id}"
    inputs = json.loads(queue.sent[0]["MessageBody"])["inputs"]
    assert inputs["mask"] is None
    assert inputs["markup"] == {"key": f"{stem}/markup.png", "filename": "arrows.png", "field": "markup"}
    assert store.objects[f"{stem}/markup.png"] == PNG + b"k"
    assert set(store.objects) == {f"{stem}/0.png", f"{stem}/markup.png"}


def test_async_streaming_is_refused():
    frontend, _, _, queue = async_jobs()
    raw = RawRequest("generations", {"prompt": "otter", "stream": True})
    request = ImageRequest("generations", "gpt-image-1.5", {"prompt": "otter", "stream": True})
    with pytest.raises(InvalidRequest) as caught:
        frontend.check_submittable(request)  # before admission: nothing reserved, nothing written
    assert caught.value.param == "stream" and queue.sent == []
    assert raw.fields["stream"] is True


def test_a_job_that_cannot_be_queued_is_a_503_and_recorded_failed():
    frontend, jobs, _, _ = async_jobs(FakeSqs(fail=True))
    raw = RawRequest("generations", {"model": "dall-e-3", "prompt": "otter"})
    request = ImageRequest("generations", "dall-e-3", {"prompt": "otter", "response_format": "url"})
    with pytest.raises(ServiceUnavailable):
        frontend.submit(admitted(request), raw, http())
    [record] = jobs.records.values()
    assert record["status"] == "failed" and record["error"]["status"] == 503
    assert record["response_format"] == "url"


def test_the_inputs_of_a_job_that_cannot_be_queued_are_deleted():
    frontend, jobs, store, _ = async_jobs(FakeSqs(fail=True))
    image = ImageFile(field_name="image", data=PNG, filename="otter.png", format="png")
    mask = ImageFile(field_name="mask", data=PNG, filename="mask.png", format="png")
    raw = RawRequest("edits", {"model": "gpt-image-1.5", "prompt": "hat"}, [image], mask, multipart=True)
    request = ImageRequest("edits", "gpt-image-1.5", {"prompt": "hat"}, [image], mask)
    with pytest.raises(ServiceUnavailable):
        frontend.submit(admitted(request), raw, http())
    assert store.objects == {}  # nothing a worker would ever read is left behind
    [record] = jobs.records.values()
    assert record["status"] == "failed"


def test_another_keys_job_is_not_found():
    frontend, jobs, _, _ = async_jobs()
    jobs.records["job_1"] = {"job_id": "job_1", "key_id": "key_other", "status": "queued"}
    for job_id in ("job_1", "job_missing", "../../etc"):
        with pytest.raises(Exception) as caught:
            frontend.status(CALLER, job_id)
        assert getattr(caught.value, "status", None) == 404
        assert caught.value.code == "job_not_found"  # type: ignore[attr-defined]
