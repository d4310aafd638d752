"""API keys in DynamoDB: stored as SHA-256 hashes plus a display prefix, never in plain text."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .domain import Caller
from .errors import InvalidApiKey

KEY_PREFIX = "sk-"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def mask_key(raw_key: str) -> str:
    """OpenAI's own masking in 401 messages: first five and last two characters."""
    if len(raw_key) <= 8:
        return "***"
    return f"{raw_key[:5]}***{raw_key[-2:]}"


def new_raw_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)  # 43 URL-safe characters from the OS CSPRNG


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


class KeyStore:
    def __init__(self, table: Any, clock: Any = time.time) -> None:
        self._table = table
        self._clock = clock

    def create(self, name: str, owner: str = "", **attributes: Any) -> NewKey:
        raw = new_raw_key()
        item: dict[str, Any] = {
            "key_hash": hash_key(raw),
            "key_id": "key_" + secrets.token_hex(8),
            "display": f"{raw[:6]}...{raw[-4:]}",
            "name": name,
            "owner": owner,
            "created": int(self._clock()),
            "status": "active",
            **{k: v for k, v in attributes.items() if v is not None},
        }
        self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(key_hash)")
        return NewKey(raw, item)

    def import_key(self, raw_key: str, name: str, owner: str = "") -> dict[str, Any]:
        """Store a caller-chosen key (the local stack's fixed dev key); idempotent."""
        item = {
            "key_hash": hash_key(raw_key),
            "key_id": "key_" + hash_key(raw_key)[:16],
            "display": f"{raw_key[:6]}...{raw_key[-4:]}",
            "name": name,
            "owner": owner,
            "created": int(self._clock()),
            "status": "active",
        }
        self._table.put_item(Item=item)
        return item

    def authenticate(self, authorization: str | None) -> Caller:
        raw = bearer_token(authorization)
        digest = hash_key(raw)
        item = self._table.get_item(Key={"key_hash": digest}).get("Item")
        # Compare digests in constant time even though the lookup already matched: the read may come
        # from a cache or an index in future, and the comparison must never be the timing oracle.
        if not item or not hmac.compare_digest(str(item.get("key_hash", "")), digest):
            raise InvalidApiKey(f"Incorrect API key provided: {mask_key(raw)}.")
        if item.get("status") != "active":
            raise InvalidApiKey(f"The API key {item.get('display')} has been revoked.", code="key_revoked")
        expires = item.get("expires")
        if expires is not None and int(expires) <= self._clock():
            raise InvalidApiKey(f"The API key {item.get('display')} has expired.", code="key_expired")
        return caller_from_item(item)


def caller_from_item(item: dict[str, Any]) -> Caller:
    def opt_int(name: str) -> int | None:
        value = item.get(name)
        return None if value is None else int(value)

    allowed = item.get("allowed_models")
    return Caller(
        key_hash=item["key_hash"],
        key_id=item["key_id"],
        display=item.get("display", ""),
        name=item.get("name", ""),
        allowed_models=list(allowed) if allowed else None,
        quota_images=opt_int("quota_images"),
        rate_limit_per_minute=opt_int("rate_limit_per_minute"),
    )
