"""Async jobs end to end inside one process: the real handler modules (functions/jobs_worker, generations,
job_status) run as the local stack runs them, against moto (mock_aws: S3, DynamoDB, SQS, Secrets Manager,
resources created from template.yaml) and the upstream emulator over real HTTP on 127.0.0.1.

SQS batches are received from moto's SQS and turned into Lambda's SQS event by the local stack's own event
source (`imagegw_dev.local_stack.SqsEventSource`), so partial batch responses are honoured as Lambda would:
succeeded messages deleted, failed ones redelivered, and after maxReceiveCount moved to the DLQ.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from helpers.aws import deployed_function_env
from helpers.builders import api_event
from PIL import Image
from requests_toolbelt import MultipartEncoder

from imagegw.accounts.keys import KeyStore
from imagegw_dev.emulator import Emulator
from imagegw_dev.local_stack import (
    FunctionPool,
    QueueSubscription,
    SqsEventSource,
    sqs_event,
)

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_KEY = "sk-emulator-jobs-0123456789"
MAX_RECEIVE_COUNT = 2
OK_REQUEST = {
    "model": "gpt-image-1.5",
    "prompt": "A cute little sea otter",
    "size": "1024x1024",
    "quality": "low",
}


# ----- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator():
    with Emulator(api_key=UPSTREAM_KEY) as emu:
        yield emu


@pytest.fixture
def aws(emulator, tmp_path, monkeypatch):
    """Fresh moto resources from template.yaml and the settings env a deployed function would get."""
    emulator.reset()
    with deployed_function_env(
        emulator.base_url, UPSTREAM_KEY, tmp_path, monkeypatch, max_receive_count=MAX_RECEIVE_COUNT
    ) as resources:
        yield Aws(resources.tables, resources.queues, resources.bucket)


class Aws:
    def __init__(self, tables: dict[str, str], queues: dict[str, str], bucket: str) -> None:
        self.tables = tables
        self.queues = queues
        self.bucket = bucket
        self.sqs = boto3.client("sqs", region_name="us-east-1")
        self.s3 = boto3.client("s3", region_name="us-east-1")
        self.dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        self.keys = KeyStore(self.dynamodb.Table(tables["KeysTable"]))

    def job(self, job_id: str) -> dict[str, Any] | None:
        item = self.dynamodb.Table(self.tables["JobsTable"]).get_item(Key={"job_id": job_id}).get("Item")
        return json.loads(json.dumps(item, default=float)) if item else None

    def key_item(self, key_id: str) -> dict[str, Any]:
        return self.keys.get(key_id)

    def image_keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="images/")
        return [obj["Key"] for obj in listed.get("Contents", [])]

    def poison_queue(self) -> tuple[str, str]:
        """A queue with visibility timeout 0 and a redrive policy (maxReceiveCount 2) to a DLQ."""
        name = "poison-" + uuid.uuid4().hex[:8]
        dlq = self.sqs.create_queue(QueueName=name + "-dlq")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
        queue = self.sqs.create_queue(
            QueueName=name, Attributes={"VisibilityTimeout": "0", "RedrivePolicy": json.dumps(redrive)}
        )["QueueUrl"]
        return queue, dlq


@pytest.fixture
def worker(aws):
    """The jobs worker handler module, loaded the way the local stack loads it (one warm container)."""
    pool = FunctionPool(
        "JobsWorkerFunction", ROOT / "functions" / "jobs_worker", "app.lambda_handler", 60, 1024
    )
    pool.warm()
    return pool


@pytest.fixture
def key(aws):
    return aws.keys.create("jobs test key")


def message(
    job_id: str, raw_key: str, request: dict[str, Any], operation: str = "generations", **extra: Any
) -> str:
    """A job message as an event-driven caller sends it: with its own API key."""
    body = {
        "version": 1,
        "job_id": job_id,
        "operation": operation,
        "request": request,
        "caller": {"api_key": raw_key},
    }
    return json.dumps({**body, **extra})


def receive_event(aws: Aws, queue_url: str, expected: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    while len(messages) < expected:
        got = aws.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
        ).get("Messages", [])
        assert got, f"expected {expected} messages, got {len(messages)}"
        messages += got
    return sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:JobsQueue")


def png_bytes(size: tuple[int, int] = (256, 256), mode: str = "RGBA") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (10, 200, 30, 0) if mode == "RGBA" else (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


# ----- the worker on SQS batches ---------------------------------------------------------------------------


def test_a_batch_reports_exactly_its_transient_failures(aws, worker, key, emulator):
    queue = aws.queues["JobsQueue"]
    jobs = {f"job_ok_{i}": dict(OK_REQUEST, prompt=f"otter number {i}") for i in range(7)}
    jobs["job_bad_n"] = {"model": "dall-e-3", "prompt": "two otters", "n": 2}
    jobs["job_bad_size"] = dict(OK_REQUEST, size="512x512")
    jobs["job_upstream_500"] = dict(OK_REQUEST, prompt="[[emulator:500]] a failing otter")
    for job_id, request in jobs.items():
        aws.sqs.send_message(QueueUrl=queue, MessageBody=message(job_id, key.raw_key, request))
    event = receive_event(aws, queue, 10)
    by_job = {json.loads(r["body"])["job_id"]: r["messageId"] for r in event["Records"]}

    result = worker.invoke(event)

    assert result == {"batchItemFailures": [{"itemIdentifier": by_job["job_upstream_500"]}]}
    for i in range(7):
        job = aws.job(f"job_ok_{i}")
        assert job["status"] == "succeeded", job
        assert job["key_id"] == key.key_id and job["operation"] == "generations"
        assert job["model"] == "gpt-image-1.5"
        [image] = job["result"]["images"]
        assert image["key"].startswith("images/") and image["bytes"] > 0
        assert job["result"]["usage"]["total_tokens"] > 0
        assert {"created", "updated", "started", "finished", "expires_at"} <= set(job)
    bad_n = aws.job("job_bad_n")
    assert bad_n["status"] == "failed"
    assert bad_n["error"] == {
        "message": "You must provide n=1 for this model.",
        "type": "invalid_request_error",
        "param": "n",
        "code": None,
        "status": 400,
    }
    bad_size = aws.job("job_bad_size")
    assert bad_size["status"] == "failed"
    assert bad_size["error"]["status"] == 400 and bad_size["error"]["param"] == "size"
    assert bad_size["error"]["code"] == "invalid_value"
    retrying = aws.job("job_upstream_500")
    assert retrying["status"] == "queued"  # SQS delivers it again
    assert retrying["last_error"]["status"] == 502 and retrying["last_error"]["type"] == "server_error"
    assert "error" not in retrying
    assert len(aws.image_keys()) == 7
    assert len(emulator.requests) == 8  # 7 generations and the failing one; invalid jobs never go upstream


def test_a_duplicated_message_makes_one_generation_one_charge_one_result(aws, worker, key, emulator):
    queue = aws.queues["JobsQueue"]
    body = message("job_twice", key.raw_key, OK_REQUEST)
    aws.sqs.send_message(QueueUrl=queue, MessageBody=body)
    aws.sqs.send_message(QueueUrl=queue, MessageBody=body)

    assert worker.invoke(receive_event(aws, queue, 2)) == {"batchItemFailures": []}
    # ... and once more later, in another batch (an SQS redelivery after a lost delete)
    aws.sqs.send_message(QueueUrl=queue, MessageBody=body)
    assert worker.invoke(receive_event(aws, queue, 1)) == {"batchItemFailures": []}

    assert len(emulator.requests) == 1
    assert int(aws.key_item(key.key_id)["used_images"]) == 1
    assert len(aws.image_keys()) == 1
    job = aws.job("job_twice")
    assert job["status"] == "succeeded"
    assert [img["key"] for img in job["result"]["images"]] == aws.image_keys()


def test_a_poison_message_ends_in_the_dlq_with_its_error_on_the_job(aws, worker, key, emulator):
    queue, dlq = aws.poison_queue()
    body = message("job_poison", key.raw_key, dict(OK_REQUEST, prompt="[[emulator:500]] always failing"))
    aws.sqs.send_message(QueueUrl=queue, MessageBody=body)
    source = SqsEventSource(
        aws.sqs, queue, QueueSubscription("JobsWorkerFunction", "Poison", worker, 10, True), quiet=True
    )

    assert source.poll_once() == 1  # attempt 1: recorded, retried
    first = aws.job("job_poison")
    assert first["status"] == "queued" and first["attempts"] == 1
    assert first["last_error"]["code"] == "upstream_error"
    assert source.poll_once() == 1  # attempt 2 = maxReceiveCount: the job fails with the last error
    assert source.poll_once() == 0  # SQS moved the message to the DLQ

    [dead] = aws.sqs.receive_message(QueueUrl=dlq, AttributeNames=["All"]).get("Messages", [])
    assert json.loads(dead["Body"])["job_id"] == "job_poison"
    job = aws.job("job_poison")
    assert job["status"] == "failed" and job["attempts"] == 2
    assert job["error"]["status"] == 502 and job["error"]["code"] == "upstream_error"
    assert job["error"]["message"]
    assert len(emulator.requests) == 2
    assert int(aws.key_item(key.key_id)["used_images"]) == 0  # failed attempts are refunded


def test_malformed_messages_never_block_the_batch(aws, worker, key):
    queue = aws.queues["JobsQueue"]
    bodies = [
        "this is not JSON",
        json.dumps({"version": 2, "job_id": "job_future", "caller": {"key_id": key.key_id}}),
        json.dumps({"version": 1, "operation": "generations", "request": OK_REQUEST}),
        message("job_no_such_operation", key.raw_key, OK_REQUEST, operation="upscales"),
        message("job_fine", key.raw_key, OK_REQUEST),
    ]
    for body in bodies:
        aws.sqs.send_message(QueueUrl=queue, MessageBody=body)

    assert worker.invoke(receive_event(aws, queue, len(bodies))) == {"batchItemFailures": []}

    future = aws.job("job_future")
    assert future["status"] == "failed" and future["key_id"] == key.key_id
    assert future["error"]["code"] == "invalid_job_message" and future["error"]["param"] == "version"
    assert aws.job("job_no_such_operation")["error"]["param"] == "operation"
    assert aws.job("job_fine")["status"] == "succeeded"


def test_a_revoked_key_fails_its_queued_job_and_another_keys_job_id_is_left_alone(aws, worker, key):
    queue = aws.queues["JobsQueue"]
    other = aws.keys.create("someone else")
    aws.sqs.send_message(QueueUrl=queue, MessageBody=message("job_mine", key.raw_key, OK_REQUEST))
    assert worker.invoke(receive_event(aws, queue, 1)) == {"batchItemFailures": []}
    aws.keys.revoke(other.key_id)
    aws.sqs.send_message(QueueUrl=queue, MessageBody=message("job_theirs", other.raw_key, OK_REQUEST))
    # the other key tries to take over (or overwrite) job_mine: ignored
    aws.sqs.send_message(QueueUrl=queue, MessageBody=message("job_mine", other.raw_key, {"prompt": 1}))

    assert worker.invoke(receive_event(aws, queue, 2)) == {"batchItemFailures": []}

    theirs = aws.job("job_theirs")
    assert theirs["status"] == "failed"
    assert theirs["error"]["status"] == 401 and theirs["error"]["code"] == "invalid_api_key"
    mine = aws.job("job_mine")
    assert mine["status"] == "succeeded" and mine["key_id"] == key.key_id


def test_edit_inputs_come_from_s3_and_results_are_announced(aws, worker, key):
    queue = aws.queues["JobsQueue"]
    reply = aws.sqs.create_queue(QueueName="replies")["QueueUrl"]
    aws.s3.put_object(Bucket=aws.bucket, Key=f"uploads/{key.key_id}/otter.png", Body=png_bytes())
    aws.s3.put_object(Bucket=aws.bucket, Key=f"uploads/{key.key_id}/photo.png", Body=png_bytes(mode="RGB"))
    edit = message(
        "job_edit",
        key.raw_key,
        {"model": "dall-e-2", "prompt": "add a hat", "n": "2", "size": "256x256"},
        operation="edits",
        inputs={"images": [{"key": f"uploads/{key.key_id}/otter.png", "filename": "otter.png"}]},
        reply={"queue_url": reply},
    )
    no_alpha = message(
        "job_edit_rgb",
        key.raw_key,
        {"model": "dall-e-2", "prompt": "add a hat"},
        operation="edits",
        inputs={"images": [{"key": f"uploads/{key.key_id}/photo.png", "field": "image"}]},
    )
    missing = message(
        "job_edit_missing",
        key.raw_key,
        {"model": "gpt-image-1.5", "prompt": "add a hat"},
        operation="edits",
        inputs={"images": [{"key": f"uploads/{key.key_id}/nope.png"}]},
    )
    variation = message(
        "job_variation",
        key.raw_key,
        {"model": "dall-e-2", "size": "256x256"},
        operation="variations",
        inputs={"images": [{"key": f"uploads/{key.key_id}/photo.png", "filename": "photo.png"}]},
    )
    for body in (edit, no_alpha, missing, variation):
        aws.sqs.send_message(QueueUrl=queue, MessageBody=body)

    assert worker.invoke(receive_event(aws, queue, 4)) == {"batchItemFailures": []}

    job = aws.job("job_edit")
    assert job["status"] == "succeeded", job
    assert len(job["result"]["images"]) == 2
    rgb = aws.job("job_edit_rgb")["error"]
    assert rgb["status"] == 400 and rgb["param"] == "image" and "got RGB" in rgb["message"]
    assert aws.job("job_edit_missing")["error"]["code"] == "input_not_found"
    assert aws.job("job_variation")["status"] == "succeeded"
    [announced] = aws.sqs.receive_message(QueueUrl=reply).get("Messages", [])
    view = json.loads(announced["Body"])
    assert view["version"] == 1 and view["id"] == "job_edit" and view["status"] == "succeeded"
    assert len(view["result"]["data"]) == 2 and view["result"]["data"][0]["url"].startswith("https://")


def test_the_sample_event_runs_through_the_worker_handler(aws, worker):
    event = json.loads((ROOT / "events" / "sqs_jobs_batch.json").read_text())
    raw_keys = {json.loads(r["body"])["caller"]["api_key"] for r in event["Records"]}
    for raw_key in raw_keys:  # the sample's key, as an admin would have created it
        aws.keys.import_key(raw_key, "sample events")

    assert worker.invoke(event) == {"batchItemFailures": []}

    for record in event["Records"]:
        job = aws.job(json.loads(record["body"])["job_id"])
        assert job["status"] == "succeeded", job
        assert job["source"] == "sqs"


# ----- the HTTP side: Prefer: respond-async, then GET /v1/images/jobs/{id} ----------------------------------


def test_async_generation_over_the_api_handlers(aws, worker, key, emulator):
    generations = FunctionPool(
        "GenerationsFunction", ROOT / "functions" / "generations", "app.lambda_handler", 30, 1024
    )
    status = FunctionPool(
        "JobStatusFunction", ROOT / "functions" / "job_status", "app.lambda_handler", 30, 1024
    )
    request = dict(OK_REQUEST, response_format="b64_json")

    queued = generations.invoke(
        api_event("POST", "/v1/images/generations", key.raw_key, request, Prefer="respond-async")
    )

    assert queued["statusCode"] == 202, queued
    answer = json.loads(queued["body"])
    job_id = answer["id"]
    base = "https://abc123.execute-api.us-east-1.amazonaws.com/api"
    assert answer == {
        "id": job_id,
        "object": "image.job",
        "status": "queued",
        "status_url": f"{base}/v1/images/jobs/{job_id}",
        "created": answer["created"],
        "model": "gpt-image-1.5",
        "operation": "generations",
    }
    headers = {k.lower(): ", ".join(v) for k, v in queued["multiValueHeaders"].items()}
    assert headers["preference-applied"] == "respond-async"
    assert headers["location"] == answer["status_url"]
    assert emulator.requests == []  # nothing ran yet

    pending = status.invoke(api_event("GET", f"/v1/images/jobs/{job_id}", key.raw_key))
    assert pending["statusCode"] == 200
    assert json.loads(pending["body"])["status"] == "queued"

    assert worker.invoke(receive_event(aws, aws.queues["JobsQueue"], 1)) == {"batchItemFailures": []}

    done = status.invoke(api_event("GET", f"/v1/images/jobs/{job_id}", key.raw_key))
    view = json.loads(done["body"])
    assert view["status"] == "succeeded" and view["error"] is None
    [item] = view["result"]["data"]
    assert item["url"].startswith("https://") and base64.b64decode(item["b64_json"]).startswith(b"\x89PNG")
    assert view["result"]["usage"]["total_tokens"] > 0

    stranger = aws.keys.create("a stranger")
    hidden = status.invoke(api_event("GET", f"/v1/images/jobs/{job_id}", stranger.raw_key))
    unknown = status.invoke(api_event("GET", "/v1/images/jobs/job_does_not_exist", stranger.raw_key))
    assert hidden["statusCode"] == unknown["statusCode"] == 404
    assert json.loads(hidden["body"])["error"]["code"] == json.loads(unknown["body"])["error"]["code"]


def test_async_streaming_is_refused_and_invalid_requests_fail_synchronously(aws, key):
    generations = FunctionPool(
        "GenerationsFunction", ROOT / "functions" / "generations", "app.lambda_handler", 30, 1024
    )
    streaming = generations.invoke(
        api_event(
            "POST",
            "/v1/images/generations",
            key.raw_key,
            dict(OK_REQUEST, stream=True),
            Prefer="respond-async",
        )
    )
    invalid = generations.invoke(
        api_event(
            "POST", "/v1/images/generations", key.raw_key, dict(OK_REQUEST, n=11), Prefer="respond-async"
        )
    )
    assert streaming["statusCode"] == 400 and json.loads(streaming["body"])["error"]["param"] == "stream"
    assert invalid["statusCode"] == 400 and json.loads(invalid["body"])["error"]["param"] == "n"
    assert aws.sqs.receive_message(QueueUrl=aws.queues["JobsQueue"]).get("Messages", []) == []


def test_an_async_markup_edit_carries_its_markup_to_the_upstream(aws, worker, key, emulator):
    """`markup` (gpt-image-2.5+) goes through the job like the images and the mask: stored in S3 by the
    HTTP side, named in the message's `inputs.markup`, read back by the worker and sent upstream."""
    edits = FunctionPool("EditsFunction", ROOT / "functions" / "edits", "app.lambda_handler", 30, 1024)
    form = MultipartEncoder(
        fields=[
            ("model", "gpt-image-2.5"),
            ("prompt", "follow the arrows"),
            ("quality", "low"),
            ("image", ("otter.png", png_bytes(), "image/png")),
            ("markup", ("arrows.png", png_bytes(), "image/png")),
        ]
    )
    event = api_event("POST", "/v1/images/edits", key.raw_key, Prefer="respond-async")
    event["headers"]["Content-Type"] = form.content_type
    event["body"] = base64.b64encode(form.to_string()).decode("ascii")
    event["isBase64Encoded"] = True

    queued = edits.invoke(event)

    assert queued["statusCode"] == 202, queued
    job_id = json.loads(queued["body"])["id"]
    batch = receive_event(aws, aws.queues["JobsQueue"], 1)
    inputs = json.loads(batch["Records"][0]["body"])["inputs"]
    assert inputs["markup"]["field"] == "markup" and inputs["markup"]["filename"] == "arrows.png"
    stored = aws.s3.get_object(Bucket=aws.bucket, Key=inputs["markup"]["key"])["Body"].read()
    assert stored == png_bytes()

    assert worker.invoke(batch) == {"batchItemFailures": []}

    job = aws.job(job_id)
    assert job["status"] == "succeeded", job
    [upstream] = emulator.requests
    assert [(f[0], f[1]) for f in upstream.files] == [("image", "otter.png"), ("markup", "arrows.png")]


# ----- hostile input through the queue ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://[::1", "https://a]b/", "https://\u2100/", "https://[64:ff9b::a9fe:a9fe]/x.png"],
)
def test_an_unusable_image_url_in_a_queued_job_fails_it_at_once_never_retried(
    aws, worker, key, emulator, url
):
    """These raised ValueError in urlsplit (or reached for a NAT64 metadata address): a transient failure,
    redelivered until the dead-letter queue. Now the job fails on its first receive with the 400."""
    queue = aws.queues["JobsQueue"]
    request = {"model": "gpt-image-1.5", "prompt": "a hat", "images": [{"image_url": url}]}
    aws.sqs.send_message(QueueUrl=queue, MessageBody=message("job_bad_url", key.raw_key, request, "edits"))

    assert worker.invoke(receive_event(aws, queue, 1)) == {"batchItemFailures": []}

    job = aws.job("job_bad_url")
    assert job["status"] == "failed"
    assert (job["error"]["status"], job["error"]["code"]) == (400, "invalid_image_url")
    assert job["error"]["param"] == "images[0]"
    assert emulator.requests == [] and aws.image_keys() == []


def test_a_job_whose_images_expired_answers_410_and_signs_nothing(aws, worker, key, emulator):
    """Images live ImageRetentionDays, job records 7 days: the status of a job whose images the bucket has
    expired was a 500 (b64) or links to deleted objects (url)."""
    generations = FunctionPool(
        "GenerationsFunction", ROOT / "functions" / "generations", "app.lambda_handler", 30, 1024
    )
    status = FunctionPool(
        "JobStatusFunction", ROOT / "functions" / "job_status", "app.lambda_handler", 30, 1024
    )
    for response_format in ("b64_json", "url"):
        request = dict(OK_REQUEST, response_format=response_format)
        queued = generations.invoke(
            api_event("POST", "/v1/images/generations", key.raw_key, request, Prefer="respond-async")
        )
        job_id = json.loads(queued["body"])["id"]
        assert worker.invoke(receive_event(aws, aws.queues["JobsQueue"], 1)) == {"batchItemFailures": []}
        keys = [image["key"] for image in aws.job(job_id)["result"]["images"]]
        aws.s3.delete_objects(Bucket=aws.bucket, Delete={"Objects": [{"Key": k} for k in keys]})  # lifecycle

        expired = status.invoke(api_event("GET", f"/v1/images/jobs/{job_id}", key.raw_key))

        assert expired["statusCode"] == 410, expired
        error = json.loads(expired["body"])["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            "job_expired",
            "job_id",
        )
        assert "expired" in error["message"] and "X-Amz" not in expired["body"]


def test_a_direct_job_reads_only_its_own_keys_uploads(aws, worker, key, emulator):
    """A message sent to the queue names its inputs under uploads/<its own key id>/: another key's
    uploads, or the gateway's own images/ and inputs/, fail the job before anything is read or charged."""
    queue = aws.queues["JobsQueue"]
    aws.s3.put_object(Bucket=aws.bucket, Key="uploads/key_someoneelse00/otter.png", Body=png_bytes())
    aws.s3.put_object(Bucket=aws.bucket, Key="inputs/2026/11/28/job_x/0.png", Body=png_bytes())
    request = {"model": "dall-e-2", "prompt": "add a hat", "size": "256x256"}
    for job_id, stolen in (
        ("job_theirs", "uploads/key_someoneelse00/otter.png"),
        ("job_gw", "inputs/2026/11/28/job_x/0.png"),
    ):
        body = message(job_id, key.raw_key, request, operation="edits", inputs={"images": [{"key": stolen}]})
        aws.sqs.send_message(QueueUrl=queue, MessageBody=body)

    assert worker.invoke(receive_event(aws, queue, 2)) == {"batchItemFailures": []}

    for job_id in ("job_theirs", "job_gw"):
        error = aws.job(job_id)["error"]
        assert (error["status"], error["code"], error["param"]) == (
            400,
            "invalid_job_message",
            "inputs.images",
        )
    assert emulator.requests == []
    item = aws.key_item(key.key_id)
    assert int(item.get("used_images", 0)) == 0 and int(item.get("jobs_in_flight", 0)) == 0
    assert not [name for name in item if name.startswith("hold#")]  # every hold given back
