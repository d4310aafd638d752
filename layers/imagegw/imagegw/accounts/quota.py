"""The key item's ledger: admission and settlement, each ONE conditional write to the key item.

Admission (`KeyLedger.admit`) is one UpdateItem on the key item, found by the hash of the raw key. Its
condition authenticates the key (exists, active, unexpired), applies the rate limit and the job cap and
checks the quota; its update takes a rate-limit count, reserves the quota and records the reservation as a
hold (`hold#<request or job id>`). It returns the whole item (ALL_NEW), so no read is needed before it.
When the condition fails the item as it was (ALL_OLD) says why: 401, 429 (rate, jobs in flight, quota).

DynamoDB conditions have no arithmetic, so the key item carries what a condition needs:

    free_images, free_credits      quota - used, kept beside used_* by every write that moves them; checked
                                   as `free_images >= :n`
    free_basis_images,             the quota `free_*` was computed against: an admin who edits
    free_basis_credits             `quota_images` directly leaves them unequal, and the next admission
                                   re-bases `free_*` (one extra write) before it reserves
    rate#<window start>            requests admitted in that minute (`rate#2026-11-28T03:25:00Z`); counted
                                   under `rate < rate_limit_per_minute`; older windows are removed by the
                                   next synchronous settlement (the admission's ALL_NEW names them), or,
                                   for a key used only asynchronously, once STALE_WINDOWS_SWEEP pile up
    hold#<id>                      {images, credits, expires, at, job}: one reservation not yet settled
    jobs_in_flight                 holds of async jobs; capped by `max_jobs_in_flight` (the key's own, else
                                   the deployment's IMAGEGW_MAX_JOBS_IN_FLIGHT)

Settlement removes the hold (condition: the hold still exists), so it happens at most once per request or
job id; `imagegw.accounts.admission` sends it in one transaction with the usage counters and log record.
A hold past its `expires` (a Lambda killed between admission and settlement) is released by the key's
next admission that sees it (an extra write, only then); see `SYNC_HOLD_SECONDS` and `JOB_HOLD_SECONDS`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from imagegw.errors import ApiError, InvalidApiKey, QuotaExceeded, RateLimited

QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
RATE_WINDOW_SECONDS = 60
HOLD_PREFIX = "hold#"
RATE_PREFIX = "rate#"
# A synchronous request's hold outlives any invocation that could still settle it: 900 s is Lambda's
# maximum function timeout (the API functions' own is about 30 s).
SYNC_HOLD_SECONDS = 900
# A job's hold outlives every delivery of its message: the jobs queue keeps a message 4 days
# (template.yaml MessageRetentionPeriod; a test checks they agree). A delivery after the release is still
# charged once (admission.Accounts.settle charges without a hold, once per id).
JOB_HOLD_SECONDS = 345_600
# A job's settlement happens in the worker, which never sees the item: its admission removes the past
# rate windows itself once this many are on the item (an extra write every few active minutes).
STALE_WINDOWS_SWEEP = 8
_MAX_ATTEMPTS = 4
_deserializer = TypeDeserializer()


def quota_exceeded() -> QuotaExceeded:
    # Retrying cannot help until an admin raises the quota: tell the SDK not to retry.
    return QuotaExceeded(QUOTA_MESSAGE, headers={"x-should-retry": "false"})


class JobsInFlightExceeded(ApiError):
    status = 429
    type = "requests"
    default_code = "too_many_jobs_in_flight"


class HeldAlready(Exception):
    """The id already holds a reservation (a redelivered job admitted before): `hold` is its value."""

    def __init__(self, item: dict[str, Any], hold: dict[str, Any]) -> None:
        super().__init__("already held")
        self.item = item
        self.hold = hold


@dataclass(frozen=True)
class Hold:
    """One admission's reservation on the key item."""

    id: str
    images: int
    credits: Decimal
    expires: int
    at: float  # when it was admitted (epoch seconds): also the usage log record's time
    job: bool = False

    @property
    def attribute(self) -> str:
        return HOLD_PREFIX + self.id

    def value(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "credits": self.credits,
            "expires": self.expires,
            "at": Decimal(str(self.at)),
            "job": self.job,
        }

    @classmethod
    def of(cls, hold_id: str, value: dict[str, Any]) -> Hold:
        return cls(
            hold_id,
            int(value.get("images", 0)),
            Decimal(str(value.get("credits", 0))),
            int(value.get("expires", 0)),
            float(value.get("at", 0)),
            bool(value.get("job", False)),
        )


@dataclass
class Admitted:
    item: dict[str, Any]  # the key item after the admission (ALL_NEW)
    hold: Hold
    stale: list[str] = field(default_factory=list)  # rate windows of past minutes, for settle to remove


@dataclass(frozen=True)
class Adjustment:
    """How settlement moves the key item's counters (positive charges, negative refunds)."""

    images: int
    credits: Decimal


class KeyLedger:
    def __init__(
        self, keys_table: Any, clock: Callable[[], float] = time.time, *, max_jobs_in_flight: int = 20
    ) -> None:
        self._table = keys_table
        self._client = keys_table.meta.client  # thread-safe; from a resource, it takes plain values
        self._clock = clock
        self._max_jobs = max_jobs_in_flight

    @property
    def table_name(self) -> str:
        return str(self._table.name)

    # ----- admission ---------------------------------------------------------------------------------

    def admit(
        self, key_hash: str, display: str, hold_id: str, images: int, credits: Decimal, *, job: bool
    ) -> Admitted:
        """Authenticate, rate-limit and reserve in one conditional write; returns `Admitted`."""
        for _ in range(_MAX_ATTEMPTS):
            now = self._clock()
            expires = int(now) + (JOB_HOLD_SECONDS if job else SYNC_HOLD_SECONDS)
            hold = Hold(hold_id, images, credits, expires, now, job)
            admitted, item = self._try_admit(key_hash, hold, window_label(_window_start(now)), job)
            if admitted:
                return Admitted(item, hold, stale_windows(item, now))
            self._explain(item, hold, display, now, job)  # raises, or repairs the item: try again
        raise quota_exceeded()

    def _try_admit(self, key_hash: str, hold: Hold, window: str, job: bool) -> tuple[bool, dict[str, Any]]:
        """(True, the item after) when admitted; else (False, the item as it was: empty when none)."""
        names = {"#status": "status", "#hold": hold.attribute, "#rate": RATE_PREFIX + window}
        values: dict[str, Any] = {
            ":active": "active",
            ":now": int(self._clock()),
            ":i": hold.images,
            ":c": hold.credits,
            ":neg_i": -hold.images,
            ":neg_c": -hold.credits,
            ":hold": hold.value(),
            ":zero": 0,
            ":one": 1,
        }
        adds = "used_images :i, used_credits :c, free_images :neg_i, free_credits :neg_c"
        conditions = [
            "attribute_exists(key_hash)",
            "#status = :active",
            "(attribute_not_exists(expires) OR expires > :now)",
            "attribute_not_exists(#hold)",
            "(attribute_not_exists(rate_limit_per_minute) OR attribute_not_exists(#rate)"
            " OR #rate < rate_limit_per_minute)",
            "(attribute_not_exists(quota_images)"
            " OR (quota_images = free_basis_images AND free_images >= :i))",
            "(attribute_not_exists(quota_credits)"
            " OR (quota_credits = free_basis_credits AND free_credits >= :c))",
        ]
        if job:
            adds += ", jobs_in_flight :one"
            values[":cap"] = self._max_jobs
            conditions.append(
                "((attribute_exists(max_jobs_in_flight) AND (jobs_in_flight < max_jobs_in_flight"
                " OR (attribute_not_exists(jobs_in_flight) AND max_jobs_in_flight > :zero)))"
                " OR (attribute_not_exists(max_jobs_in_flight) AND (attribute_not_exists(jobs_in_flight)"
                " OR jobs_in_flight < :cap)))"
            )
        try:
            answer = self._client.update_item(
                TableName=self.table_name,
                Key={"key_hash": key_hash},
                UpdateExpression=(
                    f"SET #hold = :hold, last_used = :now, #rate = if_not_exists(#rate, :zero) + :one "
                    f"ADD {adds}"
                ),
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            return False, _old_item(exc) or {}
        return True, dict(answer.get("Attributes") or {})

    def _explain(self, item: dict[str, Any], hold: Hold, display: str, now: float, job: bool) -> None:
        """Why the admission's condition failed, from the item as it was: raise the client's error, or
        repair the item (re-base `free_*`, release expired holds) and return so the caller retries."""
        check_usable(item, display, now)
        held = item.get(hold.attribute)
        if held is not None:
            raise HeldAlready(item, held)
        limit = item.get("rate_limit_per_minute")
        count = item.get(RATE_PREFIX + window_label(_window_start(now)))
        if limit is not None and count is not None and int(count) >= int(limit):
            raise rate_limited(int(limit), now)
        if self.release_expired(item, now):
            return
        if job and not self._job_room(item):
            raise JobsInFlightExceeded(
                f"This API key already has {int(item.get('jobs_in_flight', 0))} jobs queued or running, "
                f"its limit. Wait for one to finish (GET /v1/images/jobs/{{id}}), then submit again."
            )
        if self._rebase(item):
            return
        for kind, wanted in (("images", Decimal(hold.images)), ("credits", hold.credits)):
            quota = item.get(f"quota_{kind}")
            if quota is not None and (wanted > Decimal(str(quota)) or item.get(f"free_{kind}", 0) < wanted):
                raise quota_exceeded()
        # The item changed between the write and now (a concurrent settle): try again.

    def _job_room(self, item: dict[str, Any]) -> bool:
        cap = item.get("max_jobs_in_flight")
        cap = self._max_jobs if cap is None else int(cap)
        return int(item.get("jobs_in_flight", 0)) < cap

    def _rebase(self, item: dict[str, Any]) -> bool:
        """Bring `free_*` in line with a quota edited directly (or an item from before `free_*`)."""
        sets, conditions = [], []
        values: dict[str, Any] = {}
        for kind in ("images", "credits"):
            quota = item.get(f"quota_{kind}")
            if quota is None or item.get(f"free_basis_{kind}") == quota:
                continue
            values[f":q_{kind}"] = quota
            values[f":u_{kind}"] = item.get(f"used_{kind}", 0)
            sets.append(f"free_{kind} = :q_{kind} - :u_{kind}, free_basis_{kind} = :q_{kind}")
            conditions.append(f"quota_{kind} = :q_{kind} AND used_{kind} = :u_{kind}")
        if not sets:
            return False
        self._conditional_update(item["key_hash"], "SET " + ", ".join(sets), " AND ".join(conditions), values)
        return True

    def release_expired(self, item: dict[str, Any], now: float) -> bool:
        """Release the holds past their `expires` (their Lambda never settled): True when some were."""
        expired = [hold for hold in holds_of(item) if hold.expires <= now]
        if not expired:
            return False
        names = {f"#h{i}": hold.attribute for i, hold in enumerate(expired)}
        images = sum(hold.images for hold in expired)
        credits = sum((hold.credits for hold in expired), Decimal(0))
        jobs = sum(1 for hold in expired if hold.job)
        values: dict[str, Any] = {":i": -images, ":c": -credits, ":fi": images, ":fc": credits, ":j": -jobs}
        self._conditional_update(
            item["key_hash"],
            f"REMOVE {', '.join(names)} "
            "ADD used_images :i, used_credits :c, free_images :fi, free_credits :fc, jobs_in_flight :j",
            " AND ".join(f"attribute_exists({name})" for name in names),
            values,
            names,
        )
        from imagegw.observability import logger

        logger.warning("expired holds released", extra={"holds": [hold.id for hold in expired]})
        return True

    def remove_windows(self, key_hash: str, names: list[str]) -> None:
        """Remove past rate windows (async-only keys, whose settlements cannot name them)."""
        aliases = {f"#w{i}": name for i, name in enumerate(names)}
        self._conditional_update(
            key_hash, f"REMOVE {', '.join(aliases)}", "attribute_exists(key_hash)", {}, aliases
        )

    def undo(self, key_hash: str, admitted: Admitted) -> None:
        """Take back an admission refused after the write (a model the key may not use)."""
        hold = admitted.hold
        window = RATE_PREFIX + window_label(_window_start(hold.at))
        self._conditional_update(
            key_hash,
            "REMOVE #hold ADD used_images :i, used_credits :c, free_images :fi, free_credits :fc, "
            "#rate :minus" + (", jobs_in_flight :minus" if hold.job else ""),
            "attribute_exists(#hold)",
            {":i": -hold.images, ":c": -hold.credits, ":fi": hold.images, ":fc": hold.credits, ":minus": -1},
            {"#hold": hold.attribute, "#rate": window},
        )

    def _conditional_update(
        self,
        key_hash: str,
        expression: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> None:
        """A repair write; losing the race to another one is fine (the caller re-reads by retrying)."""
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"key_hash": key_hash},
                UpdateExpression=expression,
                ConditionExpression=condition,
                **({"ExpressionAttributeValues": values} if values else {}),
                **({"ExpressionAttributeNames": names} if names else {}),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise

    # ----- settlement (transaction items: admission.Accounts.settle sends them) ----------------------

    def settle_item(self, key_hash: str, hold: Hold, adjust: Adjustment, stale: list[str]) -> dict[str, Any]:
        """Remove the hold and move the counters by `adjust`, only while the hold is still there."""
        names = {"#hold": hold.attribute, **{f"#s{i}": name for i, name in enumerate(stale)}}
        removes = ", ".join(["#hold", *(f"#s{i}" for i in range(len(stale)))])
        adds = "used_images :i, used_credits :c, free_images :fi, free_credits :fc"
        values: dict[str, Any] = {
            ":i": adjust.images,
            ":c": adjust.credits,
            ":fi": -adjust.images,
            ":fc": -adjust.credits,
        }
        if hold.job:
            adds += ", jobs_in_flight :j"
            values[":j"] = -1
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": {"key_hash": key_hash},
                "UpdateExpression": f"REMOVE {removes} ADD {adds}",
                "ConditionExpression": "attribute_exists(#hold)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def charge_item(self, key_hash: str, adjust: Adjustment) -> dict[str, Any]:
        """Charge without a hold (it expired and was released before a late settlement)."""
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": {"key_hash": key_hash},
                "UpdateExpression": "ADD used_images :i, used_credits :c, free_images :fi, free_credits :fc",
                "ConditionExpression": "attribute_exists(key_hash)",
                "ExpressionAttributeValues": {
                    ":i": adjust.images,
                    ":c": adjust.credits,
                    ":fi": -adjust.images,
                    ":fc": -adjust.credits,
                },
            }
        }


def check_usable(item: dict[str, Any], display: str, now: float) -> None:
    """401 for a key item that is missing, revoked or expired."""
    if not item:
        raise InvalidApiKey(f"Incorrect API key provided: {display}.")
    if item.get("status") != "active":
        raise InvalidApiKey(f"The API key {display} has been revoked.")
    expires = item.get("expires")
    if expires is not None and int(expires) <= now:
        raise InvalidApiKey(f"The API key {display} has expired.")


def rate_limited(limit: int, now: float) -> RateLimited:
    end = _window_start(now) + RATE_WINDOW_SECONDS
    retry_after = max(1, math.ceil(end - now))
    error = RateLimited(
        f"Rate limit exceeded: this API key allows {limit} requests per minute. "
        f"Please try again in {retry_after}s.",
        retry_after=retry_after,
    )
    error.headers["retry-after-ms"] = str(max(1, math.ceil((end - now) * 1000)))
    return error


def stale_windows(item: dict[str, Any], now: float) -> list[str]:
    """Rate-window attributes of minutes already over (the current one still counts)."""
    current = RATE_PREFIX + window_label(_window_start(now))
    return sorted(name for name in item if name.startswith(RATE_PREFIX) and name < current)


def holds_of(item: dict[str, Any]) -> list[Hold]:
    return [
        Hold.of(name[len(HOLD_PREFIX) :], value)
        for name, value in item.items()
        if name.startswith(HOLD_PREFIX) and isinstance(value, dict)
    ]


def window_label(start: int) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window_start(now: float) -> int:
    return int(now // RATE_WINDOW_SECONDS) * RATE_WINDOW_SECONDS


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _old_item(exc: ClientError) -> dict[str, Any] | None:
    """The item as it was when the condition failed (ReturnValuesOnConditionCheckFailure=ALL_OLD)."""
    raw: Any = exc.response.get("Item")
    if not isinstance(raw, dict) or not raw:
        return None
    return {name: _deserializer.deserialize(value) for name, value in raw.items()}
