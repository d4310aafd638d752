"""Async jobs without AWS: the message schema, `Prefer` parsing, the job view, submissions with fakes, the
retry rules, and the local stack's SQS event source translation."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest

from imagegw.accounts.admission import Admission
from imagegw.accounts.quota import Hold
from imagegw.api import base_url_of
from imagegw.domain import Caller, HttpRequest, ImageFile, ImageRequest, RawRequest
from imagegw.errors import (
    InvalidApiKey,
    InvalidRequest,
    ModelNotAllowed,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from imagegw.jobs.messages import InputRef, JobMessage, MalformedMessage, parse_body, parse_message
from imagegw.jobs.submission import AsyncJobs, error_of, job_view, new_job_id, prefers_async
from imagegw.jobs.worker import is_final_error, is_final_record
from imagegw.request.catalog import Catalog
from imagegw.settings import Settings, SettingsError, required_env_names
from imagegw_dev.local_stack import failed_message_ids, sqs_event

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
CALLER = Caller(key_hash="h" * 64, key_id="key_0123456789abcdef", display="sk-abc...wxyz")


def valid(**overrides: Any) -> dict[str, Any]:
    document = {
        "version": 1,
        "job_id": "job_1",
        "operation": "generations",
        "request": {"model": "gpt-image-1.5", "prompt": "otter", "n": 1},
        "caller": {"key_id": "key_1"},
    }
    document.update(overrides)
    return document


# ----- the message schema ------------------------------------------------------------------------------


def test_a_message_round_trips():
    message = JobMessage(
        job_id="job_abc",
        operation="edits",
        request={"model": "dall-e-2", "prompt": "hat", "n": "2"},
        key_id="key_1",
        images=(
            InputRef("inputs/a.png", "a.png", "image[0]", "other-bucket"),
            InputRef("inputs/b.png", "b", "image[1]"),
        ),
        mask=InputRef("inputs/m.png", "m.png", "mask"),
        reply_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/replies",
    )
    document = json.loads(message.dumps())
    assert document["version"] == 1
    assert document["inputs"]["images"][0] == {
        "key": "inputs/a.png",
        "filename": "a.png",
        "field": "image[0]",
        "bucket": "other-bucket",
    }
    assert parse_body(message.dumps()) == message


def test_input_fields_default_to_what_the_multipart_parser_names_them():
    one = parse_message(
        valid(operation="edits", inputs={"images": [{"key": "k/x.png"}], "mask": {"key": "k/m"}})
    )
    assert one.images == (InputRef("k/x.png", "x.png", "image"),)
    assert one.mask == InputRef("k/m", "m", "mask")
    two = parse_message(valid(operation="edits", inputs={"images": [{"key": "a"}, {"key": "b"}]}))
    assert [ref.field for ref in two.images] == ["image[0]", "image[1]"]


def test_a_markup_input_round_trips_and_is_left_out_when_absent():
    message = JobMessage(
        job_id="job_markup",
        operation="edits",
        request={"model": "gpt-image-2.5", "prompt": "hat"},
        key_id="key_1",
        images=(InputRef("inputs/a.png", "a.png", "image"),),
        markup=InputRef("inputs/k.png", "k.png", "markup"),
    )
    document = json.loads(message.dumps())
    assert document["inputs"] == {
        "images": [{"key": "inputs/a.png", "filename": "a.png", "field": "image"}],
        "mask": None,
        "markup": {"key": "inputs/k.png", "filename": "k.png", "field": "markup"},
    }
    assert parse_body(message.dumps()) == message
    # a message without markup is exactly what it was before markup existed
    plain = JobMessage("job_plain", "edits", {"prompt": "hat"}, "key_1", images=message.images)
    assert "markup" not in json.loads(plain.dumps())["inputs"]
    only = parse_message(
        valid(operation="edits", inputs={"images": [{"key": "a"}], "markup": {"key": "k/m"}})
    )
    assert only.markup == InputRef("k/m", "m", "markup") and only.mask is None


@pytest.mark.parametrize(
    ("body", "param", "job_id"),
    [
        ("not json", None, None),
        ("[1, 2]", None, None),
        (json.dumps(valid(version=2)), "version", "job_1"),
        (json.dumps(valid(version=True)), "version", "job_1"),
        (json.dumps(valid(version="1")), "version", "job_1"),
        (json.dumps(valid(job_id=None)), "job_id", None),
        (json.dumps(valid(job_id="has spaces")), "job_id", None),
        (json.dumps(valid(job_id="x" * 200)), "job_id", None),
        (json.dumps(valid(operation="upscales")), "operation", "job_1"),
        (json.dumps(valid(request="prompt=otter")), "request", "job_1"),
        (json.dumps(valid(caller={})), "caller.api_key", "job_1"),
        (json.dumps(valid(priority=5)), "priority", "job_1"),
        (json.dumps(valid(inputs={"images": "inputs/a.png"})), "inputs.images", "job_1"),
        (json.dumps(valid(inputs={"images": [{"bucket": "b"}]})), "inputs.images[0]", "job_1"),
        (
            json.dumps(valid(inputs={"images": [{"key": "a", "data": "iVBOR"}]})),
            "inputs.images[0].data",
            "job_1",
        ),
        (json.dumps(valid(reply={"queue_url": 5})), "reply", "job_1"),
        (json.dumps(valid(inputs={"images": [], "markup": "k.png"})), "inputs.markup", "job_1"),
        (json.dumps(valid(inputs={"images": [], "overlay": {"key": "k"}})), "inputs", "job_1"),
    ],
)
def test_malformed_messages_are_named_and_keep_the_job_id_when_known(body, param, job_id):
    with pytest.raises(MalformedMessage) as caught:
        parse_body(body)
    error = caught.value
    assert error.status == 400 and error.code == "invalid_job_message"
    assert error.param == param
    assert error.job_id == job_id
    assert error.message.startswith("Invalid job message: ")


def test_a_malformed_message_keeps_its_caller_when_known():
    with pytest.raises(MalformedMessage) as caught:
        parse_message(valid(version=3, caller={"key_id": "key_9"}))
    assert caught.value.key_id == "key_9"


# ----- Prefer: respond-async ---------------------------------------------------------------------------


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
    assert prefers_async(headers) is expected


# ----- what is retried -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "final"),
    [
        (InvalidRequest("bad", param="size"), True),
        (InvalidApiKey("revoked"), True),
        (ModelNotAllowed("no"), True),
        (QuotaExceeded("out of quota"), True),
        (RateLimited("slow down", retry_after=3), False),
        (UpstreamError(), False),
        (UpstreamTimeout(), False),
        (ServiceUnavailable("later"), False),
        (RuntimeError("boom"), False),
    ],
)
def test_only_the_callers_own_errors_end_a_job(exc, final):
    assert is_final_error(exc) is final


def test_a_job_runs_again_only_after_a_transient_failure():
    assert is_final_record({"status": "succeeded"})
    assert is_final_record({"status": "failed", "error": {"status": 400, "code": "invalid_value"}})
    assert not is_final_record({"status": "failed", "error": {"status": 502, "code": "upstream_error"}})
    assert not is_final_record({"status": "queued"})
    assert not is_final_record({"status": "running"})


def test_error_of_is_the_http_error_body_plus_status():
    assert error_of(InvalidRequest("Bad size.", param="size", code="invalid_value")) == {
        "message": "Bad size.",
        "type": "invalid_request_error",
        "param": "size",
        "code": "invalid_value",
        "status": 400,
    }
    internal = error_of(KeyError("secret detail"))
    assert internal["status"] == 500 and "secret detail" not in internal["message"]


# ----- the job as GET answers it ---------------------------------------------------------------------------


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_image(self, key: str, data: bytes, fmt: str) -> None:
        self.objects[key] = data

    def presign(self, key: str) -> str:
        return f"https://bucket.s3.amazonaws.com/{key}?X-Amz-Signature=fresh"

    def get(self, key: str) -> bytes:
        return self.objects[key]

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)


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
    store = FakeStore()
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
    view = job_view(record, FakeStore()).to_dict()
    assert view["status"] == "failed" and view["result"] is None
    assert view["error"]["code"] == "upstream_error"
    assert "key_id" not in json.dumps(view) and "last_error" not in view


def test_a_retrying_job_shows_no_error_yet():
    view = job_view(
        {"job_id": "job_3", "status": "queued", "last_error": {"status": 502}}, FakeStore()
    ).to_dict()
    assert view["status"] == "queued" and view["error"] is None and view["result"] is None


# ----- submissions -------------------------------------------------------------------------------------


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


def async_jobs(sqs: FakeSqs | None = None) -> tuple[AsyncJobs, FakeJobs, FakeStore, FakeSqs]:
    jobs, store, queue = FakeJobs(), FakeStore(), sqs or FakeSqs()
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


# ----- the status URL's base ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {
                "path": "/v1/images/generations",
                "requestContext": {"path": "/api/v1/images/generations"},
                "headers": {"host": "abc.execute-api.us-east-1.amazonaws.com", "x-forwarded-proto": "https"},
            },
            "https://abc.execute-api.us-east-1.amazonaws.com/api",
        ),
        (
            {
                "path": "/v1/images/generations",
                "requestContext": {"path": "/v1/images/generations"},
                "headers": {"host": "images.example.com", "x-forwarded-proto": "https"},
            },
            "https://images.example.com",
        ),
        (
            {
                "path": "/v1/images/generations",
                "requestContext": {"path": "/v1/images/generations"},
                "headers": {"host": "127.0.0.1:3000"},
            },
            "http://127.0.0.1:3000",
        ),
        ({"path": "/v1/images/generations", "headers": {}}, ""),
    ],
)
def test_base_url(event, expected):
    assert base_url_of(event, event["headers"]) == expected


# ----- settings --------------------------------------------------------------------------------------


def test_job_settings():
    required = {name: "x" for name in required_env_names()}
    settings = Settings.from_env({**required, "IMAGEGW_JOBS_MAX_RECEIVE_COUNT": "5"})
    assert settings.jobs_max_receive_count == 5
    assert settings.jobs_ttl_seconds == 7 * 24 * 3600
    with pytest.raises(SettingsError):
        Settings.from_env({**required, "IMAGEGW_JOBS_MAX_RECEIVE_COUNT": "0"})


# ----- the local stack's SQS event source ----------------------------------------------------------------


def test_received_messages_become_lambdas_sqs_event():
    received = [
        {
            "MessageId": "m-1",
            "ReceiptHandle": "rh-1",
            "MD5OfBody": "abc",
            "Body": '{"version": 1}',
            "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1700000000000"},
            "MessageAttributes": {"kind": {"StringValue": "job", "DataType": "String"}},
        }
    ]
    event = sqs_event(received, "arn:aws:sqs:us-east-1:123456789012:JobsQueue")
    assert event == {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "rh-1",
                "body": '{"version": 1}',
                "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1700000000000"},
                "messageAttributes": {
                    "kind": {
                        "stringValue": "job",
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": "String",
                    }
                },
                "md5OfBody": "abc",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:JobsQueue",
                "awsRegion": "us-east-1",
            }
        ]
    }


@pytest.mark.parametrize(
    ("result", "report", "failed"),
    [
        ({"batchItemFailures": []}, True, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, True, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, True, {"a", "b"}),  # invalid: whole batch
        ({"batchItemFailures": "b"}, True, {"a", "b"}),
        (None, True, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, False, set()),  # not enabled: ignored
    ],
)
def test_partial_batch_responses_as_lambda_reads_them(result, report, failed):
    assert failed_message_ids(result, ["a", "b"], report) == failed


# ----- who pays: caller.api_key, and the digest the job record keeps -----------------------------------


def test_a_message_carries_its_callers_api_key_never_shown():
    message = parse_message(valid(caller={"api_key": "sk-secret-key-0123456789"}))
    assert message.api_key == "sk-secret-key-0123456789" and message.key_id is None
    assert "sk-secret" not in repr(message)
    assert message.to_json()["caller"] == {"api_key": "sk-secret-key-0123456789"}


@pytest.mark.parametrize(
    "caller, param",
    [
        ({"api_key": "sk-a", "key_id": "key_1"}, "caller"),
        ({"api_key": ""}, "caller.api_key"),
        ({"api_key": 5}, "caller.api_key"),
        ({"api_key": "sk-" + "x" * 300}, "caller.api_key"),
        ({"name": "me"}, "caller.api_key"),
        ("sk-a", "caller"),
    ],
)
def test_a_caller_is_one_api_key(caller, param):
    with pytest.raises(MalformedMessage) as caught:
        parse_message(valid(caller=caller))
    assert caught.value.param == param


def test_the_digest_covers_everything_but_the_caller():
    base = parse_message(valid(caller={"key_id": "key_1"}))
    same = parse_message(valid(caller={"api_key": "sk-other"}))
    changed = parse_message(valid(caller={"key_id": "key_1"}, request={**valid()["request"], "n": 4}))
    assert base.digest() == same.digest()
    assert base.digest() != changed.digest()
