"""API keys in DynamoDB: stored as SHA-256 hashes plus a display prefix, never in plain text.

Key item (KeysTable, hash key `key_hash`, GSI `by_key_id` on `key_id`):

    key_hash               S   SHA-256 hex of the raw key (the only form of the key that is stored)
    key_id                 S   `key_` + 16 hex chars: the public handle admins use
    display                S   `sk-AbC...wxyz`: what logs and listings show
    name, owner            S
    created                N   epoch seconds
    expires                N   epoch seconds (optional)
    status                 S   active | revoked     (revoked_at N when revoked)
    allowed_models         L   of S, fnmatch patterns (optional; absent = every model)
    quota_images           N   optional
    quota_credits          N   optional, USD cents estimated from the price table
    rate_limit_per_minute  N   optional
    max_jobs_in_flight     N   optional; async jobs queued or running at once (default: the deployment's)
    used_images            N   reserved + used images, kept by `quota.KeyLedger` with atomic ADD
    used_credits           N   the same in estimated USD cents
    free_images, free_credits, free_basis_images, free_basis_credits    N   quota - used, and the quota
                               it was computed against (`quota` explains why admission needs them)
    jobs_in_flight         N   async jobs admitted and not yet settled
    hold#<id>              M   one admitted request or job not yet settled (`quota.Hold`)
    rate#<window start>    N   requests admitted in that minute
    last_used              N   epoch seconds of the last admitted request

Every request writes the key item (its admission is a conditional write, never cached), so a revocation
takes effect on the very next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from imagegw.domain import Caller
from imagegw.errors import InvalidApiKey

KEY_PREFIX = "sk-"
KEY_ID_INDEX = "by_key_id"
# Keys we issue are 46 characters; anything much longer is not a key and is refused without a lookup.
MAX_KEY_LENGTH = 256


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()


def mask_key(raw_key: str) -> str:
    """OpenAI's own masking in 401 messages: first five and last two characters."""
    if len(raw_key) <= 8:
        return "***"
    return f"{raw_key[:5]}***{raw_key[-2:]}"


def display_key(raw_key: str) -> str:
    """The short form stored with the key and shown in logs and listings: `sk-AbC...wxyz`."""
    return f"{raw_key[:6]}...{raw_key[-4:]}"


def new_raw_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)  # 43 URL-safe characters (256 bits) from the OS CSPRNG


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise InvalidApiKey(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidApiKey("Invalid Authorization header. Expected 'Authorization: Bearer YOUR_KEY'.")
    return token


@dataclass
class NewKey:
    raw_key: str  # shown once, never stored
    item: dict[str, Any]

    @property
    def key_id(self) -> str:
        return str(self.item["key_id"])


class KeyNotFound(LookupError):
    pass


class KeyStore:
    def __init__(self, table: Any, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._clock = clock

    @property
    def table(self) -> Any:
        return self._table

    # -- admin side ---------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        owner: str = "",
        *,
        allowed_models: list[str] | None = None,
        quota_images: int | None = None,
        quota_credits: Decimal | float | int | str | None = None,
        rate_limit_per_minute: int | None = None,
        expires: int | None = None,
        max_jobs_in_flight: int | None = None,
    ) -> NewKey:
        """Issue a new key; the raw key is in the result only and must be shown to the admin once."""
        if not name:
            raise ValueError("a key needs a name")
        if quota_images is not None and quota_images < 0:
            raise ValueError("quota_images must not be negative")
        if quota_credits is not None and Decimal(str(quota_credits)) < 0:
            raise ValueError("quota_credits must not be negative")
        if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
            raise ValueError("rate_limit_per_minute must be at least 1")
        if max_jobs_in_flight is not None and max_jobs_in_flight < 0:
            raise ValueError("max_jobs_in_flight must not be negative")
        models = [m.strip() for m in allowed_models or [] if m.strip()]
        raw = new_raw_key()
        item = self._new_item(raw, new_key_id(), name, owner)
        credits = None if quota_credits is None else Decimal(str(quota_credits))
        optional = {
            "allowed_models": models or None,
            "quota_images": quota_images,
            "free_images": quota_images,
            "free_basis_images": quota_images,
            "quota_credits": credits,
            "free_credits": credits,
            "free_basis_credits": credits,
            "rate_limit_per_minute": rate_limit_per_minute,
            "expires": expires,
            "max_jobs_in_flight": max_jobs_in_flight,
        }
        item.update({k: v for k, v in optional.items() if v is not None})
        self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(key_hash)")
        return NewKey(raw, item)

    def import_key(self, raw_key: str, name: str, owner: str = "") -> dict[str, Any]:
        """Store a caller-chosen key (the local stack's fixed dev key); idempotent, keeps existing usage."""
        item = self._new_item(raw_key, "key_" + hash_key(raw_key)[:16], name, owner)
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(key_hash)")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            existing = self._table.get_item(Key={"key_hash": item["key_hash"]}, ConsistentRead=True)
            return dict(existing.get("Item") or item)
        return item

    def _new_item(self, raw_key: str, key_id: str, name: str, owner: str) -> dict[str, Any]:
        """An active key with no usage yet; only the hash and the display form of the raw key are kept."""
        return {
            "key_hash": hash_key(raw_key),
            "key_id": key_id,
            "display": display_key(raw_key),
            "name": name,
            "owner": owner,
            "created": int(self._clock()),
            "status": "active",
            "used_images": 0,
            "used_credits": Decimal(0),
            "jobs_in_flight": 0,
        }

    def get(self, key_id: str) -> dict[str, Any]:
        """The key item for a key id (through the `by_key_id` index, then a consistent read)."""
        found = self._table.query(
            IndexName=KEY_ID_INDEX, KeyConditionExpression=Key("key_id").eq(key_id), Limit=1
        )
        items = found.get("Items") or []
        if not items:
            raise KeyNotFound(key_id)
        fresh = self._table.get_item(Key={"key_hash": items[0]["key_hash"]}, ConsistentRead=True).get("Item")
        if not fresh:
            raise KeyNotFound(key_id)
        return dict(fresh)

    def list_keys(self) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {}
        while True:
            page = self._table.scan(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def revoke(self, key_id: str) -> dict[str, Any]:
        """Mark the key revoked; the next request with it is refused (no caching anywhere)."""
        item = self.get(key_id)
        if item.get("status") == "revoked":
            return item
        now = int(self._clock())
        try:
            updated = self._table.update_item(
                Key={"key_hash": item["key_hash"]},
                UpdateExpression="SET #s = :revoked, revoked_at = :now",
                ConditionExpression="attribute_exists(key_hash)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":revoked": "revoked", ":now": now},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise KeyNotFound(key_id) from exc
            raise
        return dict(updated["Attributes"])

    # -- request side -------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Caller:
        raw = bearer_token(authorization)
        if len(raw) > MAX_KEY_LENGTH:
            raise InvalidApiKey(f"Incorrect API key provided: {mask_key(raw)}.")
        digest = hash_key(raw)
        # A strongly consistent read of the key item on every request: no cache, so revocation and
        # expiry apply to the very next request.
        item = self._table.get_item(Key={"key_hash": digest}, ConsistentRead=True).get("Item")
        # Compare digests in constant time even though the lookup already matched: the read may come
        # from a cache or an index in future, and the comparison must never be the timing oracle.
        if not item or not hmac.compare_digest(str(item.get("key_hash", "")), digest):
            raise InvalidApiKey(f"Incorrect API key provided: {mask_key(raw)}.")
        if item.get("status") != "active":
            raise InvalidApiKey(f"The API key {mask_key(raw)} has been revoked.")
        expires = item.get("expires")
        if expires is not None and int(expires) <= self._clock():
            raise InvalidApiKey(f"The API key {mask_key(raw)} has expired.")
        return caller_from_item(item)


def caller_from_item(item: dict[str, Any]) -> Caller:
    def opt_int(name: str) -> int | None:
        value = item.get(name)
        return None if value is None else int(value)

    allowed = item.get("allowed_models")
    credits = item.get("quota_credits")
    return Caller(
        key_hash=item["key_hash"],
        key_id=item["key_id"],
        display=item.get("display", ""),
        name=item.get("name", ""),
        allowed_models=list(allowed) if allowed else None,
        quota_images=opt_int("quota_images"),
        rate_limit_per_minute=opt_int("rate_limit_per_minute"),
        quota_credits=None if credits is None else Decimal(str(credits)),
        owner=item.get("owner", ""),
        expires=opt_int("expires"),
    )


def public_view(item: dict[str, Any]) -> dict[str, Any]:
    """A key item as admins may see it: everything but the hash."""
    return {k: v for k, v in item.items() if k != "key_hash"}
