"""The ledger over the real handlers: every upstream success charged exactly once, admission before any
work on every entry point, two DynamoDB calls per synchronous request.

The handler modules (functions/generations, edits, job_status, jobs_worker) run in this process as the
local stack runs them, against moto (resources created from template.yaml) and the upstream emulator over
HTTP on 127.0.0.1. AWS calls are counted by moto's request recorder.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from helpers.aws import deployed_function_env
from helpers.builders import api_event
from moto.moto_api import recorder
from PIL import Image

from imagegw.accounts.keys import KeyStore, NewKey
from imagegw_dev.emulator import Emulator
from imagegw_dev.local_stack import FunctionPool, sqs_event

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_KEY = "sk-emulator-ledger-0123456789"
SYNC_DEADLINE_S = 3  # the deadline test's own (ten 4K images take the emulator longer than that)
GEN = {"model": "gpt-image-1.5", "prompt": "A cute little sea otter", "size": "1024x1024", "quality": "low"}


def png_bytes(size: tuple[int, int] = (256, 256)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", size, (10, 200, 30, 255)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def emulator():
    with Emulator(api_key=UPSTREAM_KEY) as emu:
        yield emu


class Aws:
    def __init__(self, tables: dict[str, str], queues: dict[str, str], bucket: str) -> None:
        self.tables, self.queues, self.bucket = tables, queues, bucket
        self.sqs = boto3.client("sqs", region_name="us-east-1")
        self.s3 = boto3.client("s3", region_name="us-east-1")
        self.dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        self.keys = KeyStore(self.dynamodb.Table(tables["KeysTable"]))

    def key_item(self, key: NewKey) -> dict[str, Any]:
        table = self.dynamodb.Table(self.tables["KeysTable"])
        return table.get_item(Key={"key_hash": key.item["key_hash"]}, ConsistentRead=True)["Item"]

    def used(self, key: NewKey) -> int:
        return int(self.key_item(key).get("used_images", 0))

    def job(self, job_id: str) -> dict[str, Any] | None:
        item = self.dynamodb.Table(self.tables["JobsTable"]).get_item(Key={"job_id": job_id}).get("Item")
        return json.loads(json.dumps(item, default=float)) if item else None

    def jobs(self) -> list[dict[str, Any]]:
        return self.dynamodb.Table(self.tables["JobsTable"]).scan()["Items"]

    def objects(self, prefix: str = "") -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for obj in listed.get("Contents", [])]

    def queued(self) -> list[dict[str, Any]]:
        got = self.sqs.receive_message(
            QueueUrl=self.queues["JobsQueue"], MaxNumberOfMessages=10, AttributeNames=["All"]
        )
        return got.get("Messages", [])


@pytest.fixture
def aws(emulator, tmp_path, monkeypatch):
    emulator.reset()
    with deployed_function_env(
        emulator.base_url, UPSTREAM_KEY, tmp_path, monkeypatch, max_receive_count=3
    ) as resources:
        yield Aws(resources.tables, resources.queues, resources.bucket)


def pool(name: str, directory: str) -> FunctionPool:
    functions = FunctionPool(name, ROOT / "functions" / directory, "app.lambda_handler", 30, 1024)
    functions.warm()
    return functions


@pytest.fixture
def api(aws):
    """The API's handlers by endpoint: generations, edits and job status."""
    return {
        "generations": pool("GenerationsFunction", "generations"),
        "edits": pool("EditsFunction", "edits"),
        "job_status": pool("JobStatusFunction", "job_status"),
    }


@pytest.fixture
def worker(aws):
    return pool("JobsWorkerFunction", "jobs_worker")


def generate(
    api: dict[str, FunctionPool], key: NewKey, body: dict[str, Any], **headers: str
) -> dict[str, Any]:
    return api["generations"].invoke(
        api_event("POST", "/v1/images/generations", key.raw_key, body, **headers)
    )


def submit(api: dict[str, FunctionPool], key: NewKey, body: dict[str, Any]) -> dict[str, Any]:
    return generate(api, key, body, Prefer="respond-async")


def error_of(response: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(response["body"])["error"])


def headers_of(response: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): ", ".join(v) for k, v in (response.get("multiValueHeaders") or {}).items()}


def job_view(api: dict[str, FunctionPool], key: NewKey, job_id: str) -> dict[str, Any]:
    answer = api["job_status"].invoke(api_event("GET", f"/v1/images/jobs/{job_id}", key.raw_key))
    assert answer["statusCode"] == 200, answer
    return dict(json.loads(answer["body"]))


def run_queued(aws: Aws, worker: FunctionPool) -> list[dict[str, Any]]:
    """Deliver what is in the jobs queue to the worker once; returns the records delivered."""
    messages = aws.queued()
    if messages:
        result = worker.invoke(sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:JobsQueue"))
        assert result == {"batchItemFailures": []}
    return messages


def deliver(worker: FunctionPool, *bodies: str) -> dict[str, Any]:
    """Hand the worker messages as SQS would (a sender other than the gateway, or a redelivery)."""
    messages = [
        {
            "MessageId": str(uuid.uuid4()),
            "ReceiptHandle": "rh-" + uuid.uuid4().hex,
            "Body": body,
            "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(time.time() * 1000))},
            "MD5OfBody": "",
        }
        for body in bodies
    ]
    result: dict[str, Any] = worker.invoke(
        sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:JobsQueue")
    )
    return result


# ----- AWS calls, counted by moto's request recorder ----------------------------------------------------


@contextmanager
def aws_calls(tmp_path: Path) -> Iterator[Counter[str]]:
    """Counts the AWS calls made inside the block by service and operation (`dynamodb:UpdateItem`,
    `s3:PUT`); SQS polling and the like are counted too, under their own service."""
    calls: Counter[str] = Counter()
    saved = recorder._location
    recorder._location = str(tmp_path / "recording.jsonl")
    recorder.reset_recording()
    recorder.start_recording()
    try:
        yield calls
    finally:
        recorder.stop_recording()
        text = Path(recorder._location).read_text() if Path(recorder._location).exists() else ""
        recorder._location = saved
        for line in text.splitlines():
            entry = json.loads(line)
            headers = {k.lower(): v for k, v in entry["headers"].items()}
            scope = headers.get("authorization", "").split("Credential=")[-1].split("/")
            service = scope[3] if len(scope) > 3 else "?"
            operation = headers.get("x-amz-target", "").rpartition(".")[2] or entry["method"]
            calls[f"{service}:{operation}"] += 1


def of_service(calls: Counter[str], service: str) -> Counter[str]:
    return Counter({name: n for name, n in calls.items() if name.startswith(service + ":")})


def test_a_b64_generation_makes_two_dynamodb_calls_and_no_s3_call(aws, api, tmp_path):
    key = aws.keys.create("counted", quota_images=10, rate_limit_per_minute=100)
    generate(api, key, GEN)  # warm: routes and credentials load on the first request
    with aws_calls(tmp_path) as calls:
        answer = generate(api, key, dict(GEN, response_format="b64_json"))
    assert answer["statusCode"] == 200, answer
    assert of_service(calls, "dynamodb") == {"dynamodb:UpdateItem": 1, "dynamodb:TransactWriteItems": 1}
    assert of_service(calls, "s3") == {}
    assert aws.used(key) == 2


def test_a_url_generation_puts_one_object_per_image(aws, api, tmp_path):
    key = aws.keys.create("counted urls")
    generate(api, key, GEN)
    with aws_calls(tmp_path) as calls:
        answer = generate(api, key, dict(GEN, n=3, response_format="url"))
    assert answer["statusCode"] == 200, answer
    assert of_service(calls, "dynamodb") == {"dynamodb:UpdateItem": 1, "dynamodb:TransactWriteItems": 1}
    assert of_service(calls, "s3") == {"s3:PUT": 3}


# ----- charged for what the upstream produced --------------------------------------------------------


def test_a_streamed_answer_too_large_to_return_is_charged_and_its_images_kept(aws, api, emulator):
    key = aws.keys.create("too large", quota_images=20)
    body = {
        "model": "gpt-image-2",
        "prompt": "ten very detailed otters",
        "n": 10,
        "size": "3840x2160",
        "stream": True,
        "partial_images": 3,
    }
    answer = generate(api, key, body)

    assert answer["statusCode"] == 413, answer["body"][:300]
    error = error_of(answer)
    assert error["code"] == "response_too_large"
    job_id = headers_of(answer)["x-imagegw-job-id"]
    assert f"GET /v1/images/jobs/{job_id}" in error["message"]
    assert len(emulator.requests) == 1
    assert aws.used(key) == 10  # the upstream made ten images: the key pays for ten
    view = job_view(api, key, job_id)
    assert view["status"] == "succeeded" and len(view["result"]["data"]) == 10
    assert all(item["url"].startswith("https://") for item in view["result"]["data"])
    assert len(aws.objects("images/")) == 10
    stranger = aws.keys.create("stranger")
    hidden = api["job_status"].invoke(api_event("GET", f"/v1/images/jobs/{job_id}", stranger.raw_key))
    assert hidden["statusCode"] == 404


def test_a_deadline_after_the_upstream_accepted_is_charged(aws, emulator, monkeypatch):
    monkeypatch.setenv("IMAGEGW_SYNC_DEADLINE_SECONDS", str(SYNC_DEADLINE_S))
    api = {"generations": pool("GenerationsFunction", "generations")}  # reads the setting at cold start
    key = aws.keys.create("deadline", quota_images=5)
    started = time.monotonic()
    answer = generate(api, key, dict(GEN, prompt=f"[[emulator:delay={SYNC_DEADLINE_S + 5}]] slow otter"))
    assert answer["statusCode"] == 504, answer
    assert time.monotonic() - started < SYNC_DEADLINE_S + 2
    assert len(emulator.requests) == 1
    assert aws.used(key) == 1  # sent, then no answer in time: the upstream may have billed it


def test_an_upstream_error_answer_is_refunded(aws, api, emulator):
    key = aws.keys.create("refund", quota_images=5)
    answer = generate(api, key, dict(GEN, prompt="[[emulator:500]] failing otter"))
    assert answer["statusCode"] == 502, answer
    assert aws.used(key) == 0
    assert not any(name.startswith("hold#") for name in aws.key_item(key))


# ----- admission before any work ---------------------------------------------------------------------


@pytest.fixture
def fetches(monkeypatch):
    """Every image URL the gateway fetches (the fetcher is replaced: tests never leave 127.0.0.1)."""
    fetched: list[str] = []

    def fetch(url: str, max_bytes: int = 0, **_: Any) -> bytes:
        fetched.append(url)
        return png_bytes()

    monkeypatch.setattr("imagegw.request.image_urls.fetch_https", fetch)
    return fetched


JSON_EDIT = {
    "model": "gpt-image-1.5",
    "prompt": "add a hat",
    "quality": "low",
    "images": [{"image_url": "https://images.example.com/otter.png"}],
}


def edit(api: dict[str, FunctionPool], key: NewKey, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    return api["edits"].invoke(api_event("POST", "/v1/images/edits", key.raw_key, body, **headers))


def test_a_key_that_may_not_use_the_model_gets_403_before_any_image_is_fetched(aws, api, emulator, fetches):
    only_dalle = aws.keys.create("dall-e only", allowed_models=["dall-e-3"])
    exhausted = aws.keys.create("no quota left", quota_images=0)
    for key, status in ((only_dalle, 403), (exhausted, 429)):
        for headers in ({}, {"Prefer": "respond-async"}):
            answer = edit(api, key, JSON_EDIT, **headers)
            assert answer["statusCode"] == status, answer
    assert fetches == [] and emulator.requests == []
    assert aws.used(only_dalle) == 0 and aws.objects() == [] and aws.jobs() == []
    allowed = aws.keys.create("allowed")
    admitted = edit(api, allowed, JSON_EDIT)
    assert admitted["statusCode"] == 200, admitted["body"][:300]  # the same request, admitted: fetched
    assert fetches == ["https://images.example.com/otter.png"]


def test_async_submissions_over_quota_or_rate_get_429_at_once_with_nothing_written(aws, api):
    over_quota = aws.keys.create("quota", quota_images=1)
    over_rate = aws.keys.create("rate", rate_limit_per_minute=1)
    assert submit(api, over_quota, dict(GEN, n=2))["statusCode"] == 429
    assert submit(api, over_rate, GEN)["statusCode"] == 202
    refused = submit(api, over_rate, GEN)
    assert refused["statusCode"] == 429 and error_of(refused)["code"] == "rate_limit_exceeded"
    quota = submit(api, over_quota, dict(GEN, n=2))
    assert error_of(quota)["code"] == "insufficient_quota"
    assert len(aws.jobs()) == 1 and len(aws.queued()) == 1 and aws.objects() == []
    assert aws.used(over_quota) == 0


def test_the_per_key_cap_on_jobs_in_flight(aws, api, worker):
    key = aws.keys.create("capped", max_jobs_in_flight=2)
    assert [submit(api, key, GEN)["statusCode"] for _ in range(2)] == [202, 202]
    refused = submit(api, key, GEN)
    assert refused["statusCode"] == 429
    assert error_of(refused)["code"] == "too_many_jobs_in_flight"
    assert "2 jobs queued or running" in error_of(refused)["message"]
    assert len(aws.jobs()) == 2
    assert len(run_queued(aws, worker)) == 2  # the worker settles both: room again
    assert int(aws.key_item(key)["jobs_in_flight"]) == 0
    assert submit(api, key, GEN)["statusCode"] == 202


# ----- jobs cannot be forged, and are charged at most once ---------------------------------------------


def message(job_id: str, request: dict[str, Any], caller: dict[str, str], **extra: Any) -> str:
    body = {"version": 1, "job_id": job_id, "operation": "generations", "request": request, "caller": caller}
    return json.dumps({**body, **extra})


def test_a_message_naming_only_a_key_id_is_refused(aws, worker, emulator, caplog, monkeypatch):
    from imagegw.jobs import worker as worker_module

    metrics: list[str] = []
    original = worker_module.metrics.add_metric
    monkeypatch.setattr(
        worker_module.metrics,
        "add_metric",
        lambda name, **kw: (metrics.append(name), original(name=name, **kw))[1],
    )
    victim = aws.keys.create("victim")
    result = deliver(worker, message("job_forged", GEN, {"key_id": victim.key_id}))
    assert result == {"batchItemFailures": []}
    assert emulator.requests == [] and aws.used(victim) == 0 and aws.job("job_forged") is None
    assert "job message refused: not the job that was admitted" in caplog.messages
    assert metrics == ["JobMessagesRefused"]


def test_tampered_replayed_and_duplicated_messages_are_charged_at_most_once(aws, api, worker, emulator):
    key = aws.keys.create("owner", quota_images=5)
    other = aws.keys.create("other")
    job_id = json.loads(submit(api, key, GEN)["body"])["id"]
    [queued] = aws.queued()
    original = queued["Body"]
    tampered = json.loads(original)
    tampered["request"]["n"] = 4  # more images on the owner's bill
    moved = json.loads(original)
    moved["caller"] = {"key_id": other.key_id}  # billed to another key
    taken = json.loads(original)
    taken["caller"] = {"api_key": other.raw_key}  # another key claims the job

    deliver(worker, json.dumps(tampered), json.dumps(moved), json.dumps(taken))
    assert emulator.requests == [] and aws.job(job_id)["status"] == "queued"

    deliver(worker, original, original)  # duplicated in one batch
    deliver(worker, original)  # replayed later
    assert len(emulator.requests) == 1
    assert aws.job(job_id)["status"] == "succeeded"
    assert aws.used(key) == 1 and aws.used(other) == 0
    assert not any(name.startswith("hold#") for name in aws.key_item(key))


def test_a_message_with_its_callers_api_key_is_admitted_like_a_request(aws, worker, emulator):
    key = aws.keys.create("event-driven", quota_images=1)
    body = message("job_direct", GEN, {"api_key": key.raw_key})
    deliver(worker, body)
    deliver(worker, body)
    job = aws.job("job_direct")
    assert job["status"] == "succeeded" and job["key_id"] == key.key_id and job["source"] == "sqs"
    assert len(emulator.requests) == 1 and aws.used(key) == 1
    deliver(worker, message("job_over_quota", GEN, {"api_key": key.raw_key}))
    assert aws.job("job_over_quota")["error"]["code"] == "insufficient_quota"
    assert len(emulator.requests) == 1
    deliver(worker, message("job_bad_key", GEN, {"api_key": "sk-" + "x" * 43}))
    assert aws.job("job_bad_key")["error"]["status"] == 401


def test_a_reservation_left_by_a_killed_worker_is_released_and_a_late_delivery_charged_once(
    aws, api, worker, emulator
):
    key = aws.keys.create("killed", quota_images=2)
    job_id = json.loads(submit(api, key, GEN)["body"])["id"]
    [queued] = aws.queued()  # a worker took the message, then its Lambda was killed: no settlement
    item = aws.key_item(key)
    assert int(item["used_images"]) == 1 and int(item["jobs_in_flight"]) == 1
    hold = f"hold#{job_id}"
    assert item[hold]["job"] is True
    # The hold outlives every delivery (JOB_HOLD_SECONDS = the queue's retention); make it past that.
    aws.dynamodb.Table(aws.tables["KeysTable"]).update_item(
        Key={"key_hash": key.item["key_hash"]},
        UpdateExpression="SET #h.expires = :past",
        ExpressionAttributeNames={"#h": hold},
        ExpressionAttributeValues={":past": int(time.time()) - 1},
    )

    assert generate(api, key, GEN)["statusCode"] == 200  # the key's next admission releases it

    item = aws.key_item(key)
    assert hold not in item
    assert int(item["used_images"]) == 1 and int(item["jobs_in_flight"]) == 0
    deliver(worker, queued["Body"])  # SQS delivers it once more after all: charged, once
    deliver(worker, queued["Body"])
    assert aws.job(job_id)["status"] == "succeeded"
    assert aws.used(key) == 2 and len(emulator.requests) == 2


# ----- metering: what the upstream cost beside what the key is charged ----------------------------------


def test_a_translated_request_is_charged_at_least_its_upstream_cost(aws, api):
    key = aws.keys.create("translated")
    answer = generate(api, key, {"model": "dall-e-3", "prompt": "an otter", "quality": "hd"})
    assert answer["statusCode"] == 200, answer
    usage = aws.dynamodb.Table(aws.tables["UsageTable"])
    [log] = [i for i in usage.scan()["Items"] if i["pk"].startswith(f"log#{key.key_id}#")]
    assert log["model"] == "dall-e-3" and log["upstream_model"] != "dall-e-3"
    assert log["upstream_cost_cents"] > 0
    assert log["cost_cents"] >= log["upstream_cost_cents"]
    assert log["cost_cents"] >= 8  # never below the list price either


def test_a_job_that_ends_before_the_upstream_call_gives_its_hold_back(aws, api, worker, emulator):
    key = aws.keys.create("revoked while queued", quota_images=3)
    job_id = json.loads(submit(api, key, GEN)["body"])["id"]
    assert f"hold#{job_id}" in aws.key_item(key)
    aws.keys.revoke(key.key_id)
    run_queued(aws, worker)
    job = aws.job(job_id)
    assert job["status"] == "failed" and job["error"]["status"] == 401
    item = aws.key_item(key)
    assert f"hold#{job_id}" not in item
    assert int(item["used_images"]) == 0 and int(item["jobs_in_flight"]) == 0
    assert emulator.requests == []


def test_a_callers_message_cannot_read_what_the_gateway_wrote(aws, api, worker, emulator):
    owner = aws.keys.create("owner")
    answer = generate(api, owner, dict(GEN, response_format="url"))
    assert answer["statusCode"] == 200
    [result] = aws.objects("images/")
    thief = aws.keys.create("thief")
    body = message(
        "job_theft",
        {"model": "gpt-image-1.5", "prompt": "copy this", "quality": "low"},
        {"api_key": thief.raw_key},
        operation="edits",
        inputs={"images": [{"key": result, "filename": "x.png"}]},
    )
    deliver(worker, body)
    job = aws.job("job_theft")
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_job_message"
    assert len(emulator.requests) == 1 and aws.used(thief) == 0


def test_a_direct_job_whose_key_is_revoked_before_it_runs_fails_and_gives_its_hold_back(aws, worker):
    key = aws.keys.create("revoked later", quota_images=2)
    body = message(
        "job_revoked", dict(GEN, prompt="[[emulator:500]] first attempt fails"), {"api_key": key.raw_key}
    )
    deliver(worker, body)  # admitted, then a transient failure: SQS will deliver it again
    assert aws.job("job_revoked")["status"] == "queued" and "hold#job_revoked" in aws.key_item(key)
    aws.keys.revoke(key.key_id)
    deliver(worker, body)
    job = aws.job("job_revoked")
    assert job["status"] == "failed" and job["error"]["status"] == 401
    assert "hold#job_revoked" not in aws.key_item(key) and aws.used(key) == 0


def test_a_direct_json_edit_job_fetches_its_urls_after_admission_and_stores_its_result(
    aws, worker, emulator, fetches
):
    key = aws.keys.create("direct json edit")
    edit_request = {**JSON_EDIT, "response_format": "b64_json"}
    deliver(worker, message("job_json_edit", edit_request, {"api_key": key.raw_key}, operation="edits"))
    job = aws.job("job_json_edit")
    assert job["status"] == "succeeded", job
    assert fetches == ["https://images.example.com/otter.png"]
    [image] = job["result"]["images"]
    assert image["key"].startswith("images/") and image["key"] in aws.objects("images/")
    refused = aws.keys.create("dall-e only", allowed_models=["dall-e-3"])
    deliver(worker, message("job_json_refused", JSON_EDIT, {"api_key": refused.raw_key}, operation="edits"))
    assert aws.job("job_json_refused")["error"]["status"] == 403
    assert len(fetches) == 1 and len(emulator.requests) == 1
