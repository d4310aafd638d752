"""DynamoDB adapters for jobs: the job record (JobsTable) and the caller lookup by key id (KeysTable).

A job record (HASH `job_id`, TTL attribute `expires_at`):

    job_id, key_id (the owner), operation, model, source (http | sqs | kept), request_id,
    digest (sha256 of the job message as admitted: `messages.JobMessage.digest`; the worker runs only a
    message with this digest), hold (the admission's reservation: images, credits, expires, at, job),
    status: queued -> running -> succeeded | failed  (running -> queued again when a retry is due),
    created, updated, started, finished (epoch seconds), attempts (SQS receive count of the last attempt),
    response_format (what the request asked for), result | error, last_error (of the latest attempt)

`result` is `{"created", "images": [{"key", "bytes", "format", "revised_prompt"?}], "usage"?, "meta"}`;
`error` and `last_error` are the OpenAI error object the HTTP API would answer plus its `status`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from imagegw.accounts.keys import KeyNotFound, KeyStore, caller_from_item
from imagegw.delivery.outputs import ImagesResponse
from imagegw.domain import Caller
from imagegw.errors import InvalidApiKey

if TYPE_CHECKING:
    from imagegw.accounts.quota import Hold
    from imagegw.delivery.render import Delivery

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
ACTIVE = (QUEUED, RUNNING)


class JobConflict(Exception):
    """The job id is taken by another caller's job, or the job is already finished."""


class JobStore:
    def __init__(self, table: Any, ttl_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._ttl = ttl_seconds
        self._clock = clock

    def now(self) -> int:
        return int(self._clock())

    def create(
        self,
        *,
        job_id: str,
        key_id: str,
        operation: str,
        model: str,
        source: str,
        request_id: str = "",
        response_format: str | None = None,
        digest: str | None = None,
        hold: Hold | None = None,
    ) -> dict[str, Any]:
        """A new queued job; JobConflict when the id exists (whoever owns it)."""
        item = self._new_item(job_id, key_id, operation, model, source, QUEUED)
        item["request_id"] = request_id
        if response_format:
            item["response_format"] = response_format
        if digest:
            item["digest"] = digest
        if hold is not None:
            item["hold"] = hold.value()
        return self._put_new(item)

    def create_finished(
        self, *, job_id: str, key_id: str, operation: str, model: str, result: dict[str, Any]
    ) -> dict[str, Any]:
        """A succeeded job made by the gateway itself (a too-large answer's images, kept)."""
        item = self._new_item(job_id, key_id, operation, model, "kept", SUCCEEDED)
        item.update(finished=item["created"], response_format="url", result=to_dynamo(result))
        return self._put_new(item)

    def _new_item(
        self, job_id: str, key_id: str, operation: str, model: str, source: str, status: str
    ) -> dict[str, Any]:
        now = self.now()
        return {
            "job_id": job_id,
            "key_id": key_id,
            "operation": operation,
            "model": model,
            "source": source,
            "status": status,
            "created": now,
            "updated": now,
            "attempts": 0,
            "expires_at": now + self._ttl,
        }

    def _put_new(self, item: dict[str, Any]) -> dict[str, Any]:
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(job_id)")
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            raise JobConflict(item["job_id"]) from None
        return item

    def get(self, job_id: str) -> dict[str, Any] | None:
        item = self._table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        return from_dynamo(item) if item else None

    def start(
        self, job_id: str, key_id: str, *, attempt: int, model: str, response_format: str | None
    ) -> None:
        """running; the owner must match and the job must not be finished (else JobConflict)."""
        now = self.now()
        names = {"#s": "status", "#e": "error"}
        values: dict[str, Any] = {
            ":running": RUNNING,
            ":now": now,
            ":attempt": attempt,
            ":key": key_id,
            ":model": model,
            ":succeeded": SUCCEEDED,
        }
        sets = "#s = :running, updated = :now, started = if_not_exists(started, :now), attempts = :attempt"
        sets += ", model = :model"
        if response_format:
            sets += ", response_format = :rf"
            values[":rf"] = response_format
        self._update(
            job_id,
            "SET " + sets + " REMOVE #e, finished",
            "key_id = :key AND #s <> :succeeded",
            names,
            values,
        )

    def succeed_item(self, job_id: str, result: dict[str, Any]) -> dict[str, Any]:
        """The job succeeded, as an item of the settlement's transaction (succeeded exactly when charged)."""
        now = self.now()
        return {
            "Update": {
                "TableName": self._table.name,
                "Key": {"job_id": job_id},
                "UpdateExpression": "SET #s = :s, updated = :now, finished = :now, #r = :r REMOVE #e",
                "ConditionExpression": "attribute_exists(job_id)",
                "ExpressionAttributeNames": {"#s": "status", "#r": "result", "#e": "error"},
                "ExpressionAttributeValues": {":s": SUCCEEDED, ":now": now, ":r": to_dynamo(result)},
            }
        }

    def fail(self, job_id: str, error: dict[str, Any]) -> None:
        now = self.now()
        self._update(
            job_id,
            "SET #s = :s, updated = :now, finished = :now, #e = :e, last_error = :e",
            "attribute_exists(job_id) AND #s <> :succeeded",
            {"#s": "status", "#e": "error"},
            {":s": FAILED, ":now": now, ":e": to_dynamo(error), ":succeeded": SUCCEEDED},
        )

    def retry_later(self, job_id: str, error: dict[str, Any]) -> None:
        """The attempt failed and SQS will deliver the message again: back to queued, the error kept."""
        now = self.now()
        self._update(
            job_id,
            "SET #s = :s, updated = :now, last_error = :e",
            "attribute_exists(job_id) AND #s IN (:s, :running)",
            {"#s": "status"},
            {":s": QUEUED, ":now": now, ":e": to_dynamo(error), ":running": RUNNING},
        )

    def record_malformed(self, job_id: str, key_id: str | None, error: dict[str, Any]) -> bool:
        """A failed record for a message that could not be read; never overwrites another's or a done job."""
        now = self.now()
        values: dict[str, Any] = {
            ":failed": FAILED,
            ":now": now,
            ":e": to_dynamo(error),
            ":exp": now + self._ttl,
            ":zero": 0,
            ":sqs": "sqs",
        }
        condition = "attribute_not_exists(job_id)"
        sets = (
            "#s = :failed, updated = :now, finished = :now, created = if_not_exists(created, :now), "
            "#e = :e, last_error = :e, expires_at = if_not_exists(expires_at, :exp), "
            "attempts = if_not_exists(attempts, :zero), #src = if_not_exists(#src, :sqs)"
        )
        if key_id:
            values.update({":key": key_id, ":queued": QUEUED, ":running": RUNNING})
            condition += " OR (key_id = :key AND #s IN (:queued, :running))"
            sets += ", key_id = :key"
        try:
            self._update(
                job_id, "SET " + sets, condition, {"#s": "status", "#e": "error", "#src": "source"}, values
            )
        except JobConflict:
            return False
        return True

    def _update(
        self, job_id: str, expression: str, condition: str, names: dict[str, str], values: dict[str, Any]
    ) -> None:
        try:
            self._table.update_item(
                Key={"job_id": job_id},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            raise JobConflict(job_id) from None


class CallerLookup:
    """The caller of a queued job from its key id (KeysTable GSI `by_key_id`), checked to be usable now."""

    def __init__(self, keys: KeyStore, clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._clock = clock

    def lookup(self, key_id: str) -> dict[str, Any] | None:
        """The key item, whatever its state (a refund needs it even for a revoked key)."""
        try:
            return self._keys.get(key_id)
        except KeyNotFound:
            return None

    def usable(self, item: dict[str, Any] | None, key_id: str) -> Caller:
        """The caller of a key item that may run a job now: 401 for a missing, revoked or expired key."""
        if item is None:
            raise InvalidApiKey(f"The API key '{key_id}' of this job does not exist.")
        if item.get("status") != "active":
            raise InvalidApiKey(f"The API key {item.get('display')} has been revoked.")
        expires = item.get("expires")
        if expires is not None and int(expires) <= self._clock():
            raise InvalidApiKey(f"The API key {item.get('display')} has expired.")
        return caller_from_item(item)

    def caller(self, key_id: str) -> Caller:
        return self.usable(self.lookup(key_id), key_id)


def to_dynamo(value: Any) -> Any:
    """JSON-able data as DynamoDB takes it (floats as Decimal)."""
    return json.loads(json.dumps(value), parse_float=Decimal)


def from_dynamo(value: Any) -> Any:
    """A DynamoDB item as plain JSON-able data (Decimal to int or float)."""
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def job_result(delivery: Delivery) -> dict[str, Any]:
    """What the job record keeps of a url-mode answer: S3 keys instead of the (expiring) URLs."""
    answer = delivery.answer
    assert isinstance(answer, ImagesResponse)  # jobs never stream (validated before the upstream call)
    images = []
    for item, saved in zip(answer.data, delivery.stored, strict=True):
        image: dict[str, Any] = {"key": saved.key, "bytes": saved.bytes, "format": saved.format}
        if item.revised_prompt:
            image["revised_prompt"] = item.revised_prompt
        images.append(image)
    meta = {k: getattr(answer, k) for k in ("background", "output_format", "quality", "size")}
    result: dict[str, Any] = {
        "created": answer.created,
        "images": images,
        "meta": {k: v for k, v in meta.items() if v is not None},
    }
    if answer.usage is not None:
        result["usage"] = answer.usage
    return result
