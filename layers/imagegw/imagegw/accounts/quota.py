"""Quotas and rate limits, enforced with single conditional DynamoDB writes (no read-modify-write).

Quota: the counters `used_images` / `used_credits` live on the key item. A reservation is ONE UpdateItem
`ADD used_images :n, used_credits :c` whose condition says the key still exists, is active and unexpired,
its quota is still the one the caller was authenticated with, and `used <= quota - n`. DynamoDB condition
expressions have no arithmetic, so `quota - n` is computed here and the quota itself is part of the
condition (`quota_images = :quota`): if an admin changes the quota in between, the write fails and is
retried with the new value. Concurrent reservations are serialized by DynamoDB on the item, so a quota
of 10 admits exactly 10 images however many requests race. A refund is `ADD used_images -:n`.

Rate limit: a fixed one-minute window per key in the usage table (pk `rate#<key_id>`, sk the window
start `2026-11-28T03:25:00Z`, TTL `expires_at`), counted with `ADD requests :1` under the condition
`requests < :limit`. A refused request is told the seconds left in the window (`retry-after`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from imagegw.accounts.keys import caller_from_item
from imagegw.domain import Caller
from imagegw.errors import InvalidApiKey, QuotaExceeded, RateLimited

QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
RATE_WINDOW_SECONDS = 60
_MAX_ATTEMPTS = 3
_deserializer = TypeDeserializer()


def quota_exceeded() -> QuotaExceeded:
    # Retrying cannot help until an admin raises the quota: tell the SDK not to retry.
    return QuotaExceeded(QUOTA_MESSAGE, headers={"x-should-retry": "false"})


@dataclass(frozen=True)
class Reservation:
    images: int
    credits: Decimal


class QuotaLedger:
    """Reserve, refund and adjust a key's usage counters on its key item."""

    def __init__(self, keys_table: Any, clock: Callable[[], float] = time.time) -> None:
        self._table = keys_table
        self._clock = clock

    def reserve(self, caller: Caller, images: int, credits: Decimal) -> Reservation:
        for _ in range(_MAX_ATTEMPTS):
            current = self._try_reserve(caller, images, credits)
            if current is None:
                return Reservation(images, credits)
            caller = current  # the quota changed since authentication: try again against the new one
        raise quota_exceeded()

    def adjust(self, key_hash: str, images: int, credits: Decimal) -> None:
        """Add (or, negative, refund) to the counters; never creates an item for a deleted key.

        Thread-safe (settle runs it alongside the usage writes).
        """
        if images == 0 and credits == 0:
            return
        try:
            # The low-level client, not the resource: settle may run this off the request's thread.
            self._table.meta.client.update_item(
                TableName=self._table.name,
                Key={"key_hash": key_hash},
                UpdateExpression="ADD used_images :i, used_credits :c",
                ConditionExpression="attribute_exists(key_hash)",
                ExpressionAttributeValues={":i": images, ":c": credits},
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise

    def _try_reserve(self, caller: Caller, images: int, credits: Decimal) -> Caller | None:
        """None when reserved; the key's current state when its quota changed; raises otherwise."""
        now = int(self._clock())
        conditions = [
            "attribute_exists(key_hash)",
            "#status = :active",
            "(attribute_not_exists(expires) OR expires > :now)",
        ]
        values: dict[str, Any] = {":i": images, ":c": credits, ":active": "active", ":now": now}
        if caller.quota_images is None:
            conditions.append("attribute_not_exists(quota_images)")
        else:
            if images > caller.quota_images:
                raise quota_exceeded()
            conditions.append(
                "quota_images = :qi AND (attribute_not_exists(used_images) OR used_images <= :max_i)"
            )
            values[":qi"] = caller.quota_images
            values[":max_i"] = caller.quota_images - images
        if caller.quota_credits is None:
            conditions.append("attribute_not_exists(quota_credits)")
        else:
            if credits > caller.quota_credits:
                raise quota_exceeded()
            conditions.append(
                "quota_credits = :qc AND (attribute_not_exists(used_credits) OR used_credits <= :max_c)"
            )
            values[":qc"] = caller.quota_credits
            values[":max_c"] = caller.quota_credits - credits
        try:
            self._table.update_item(
                Key={"key_hash": caller.key_hash},
                UpdateExpression="ADD used_images :i, used_credits :c SET last_used = :now",
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return None
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            item = _old_item(exc) or self._read(caller.key_hash)
        # Why did the condition fail? Decide from the item as it was.
        if not item or item.get("status") != "active":
            raise InvalidApiKey(f"The API key {caller.display} has been revoked.")
        expires = item.get("expires")
        if expires is not None and int(expires) <= now:
            raise InvalidApiKey(f"The API key {caller.display} has expired.")
        current = caller_from_item(item)
        if (current.quota_images, current.quota_credits) != (caller.quota_images, caller.quota_credits):
            return current
        raise quota_exceeded()

    def _read(self, key_hash: str) -> dict[str, Any] | None:
        return self._table.get_item(Key={"key_hash": key_hash}, ConsistentRead=True).get("Item")


class RateLimiter:
    """Requests per minute per key: a fixed window counted atomically in the usage table."""

    def __init__(
        self, usage_table: Any, clock: Callable[[], float] = time.time, window: int = RATE_WINDOW_SECONDS
    ) -> None:
        self._table = usage_table
        self._clock = clock
        self._window = window

    def hit(self, caller: Caller) -> None:
        limit = caller.rate_limit_per_minute
        if limit is None:
            return
        now = self._clock()
        start = int(now // self._window) * self._window
        end = start + self._window
        try:
            self._table.update_item(
                Key={"pk": f"rate#{caller.key_id}", "sk": window_label(start)},
                UpdateExpression="ADD requests :one SET expires_at = :ttl",
                ConditionExpression="attribute_not_exists(requests) OR requests < :limit",
                ExpressionAttributeValues={":one": 1, ":limit": limit, ":ttl": end + self._window},
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            retry_after = max(1, math.ceil(end - now))
            error = RateLimited(
                f"Rate limit exceeded: this API key allows {limit} requests per minute. "
                f"Please try again in {retry_after}s.",
                retry_after=retry_after,
            )
            error.headers["retry-after-ms"] = str(max(1, math.ceil((end - now) * 1000)))
            raise error from None


def window_label(start: int) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _old_item(exc: ClientError) -> dict[str, Any] | None:
    """The item as it was when the condition failed (ReturnValuesOnConditionCheckFailure=ALL_OLD)."""
    raw: Any = exc.response.get("Item")
    if not isinstance(raw, dict) or not raw:
        return None
    return {name: _deserializer.deserialize(value) for name, value in raw.items()}
