"""API keys: format and entropy, hash-only storage, constant-time check, the 401s, admin operations."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from decimal import Decimal

import boto3
import pytest
from helpers.aws import create_tables
from helpers.fakes import FakeClock
from moto import mock_aws

from imagegw.accounts import keys as keys_module
from imagegw.accounts.keys import (
    KeyNotFound,
    KeyStore,
    bearer_token,
    display_key,
    hash_key,
    mask_key,
    new_raw_key,
    public_view,
)
from imagegw.errors import InvalidApiKey, to_error_response

KEY_RE = re.compile(r"^sk-[A-Za-z0-9_-]{43}$")


@pytest.fixture
def keys_table(aws_env):
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        create_tables(dynamodb, {"KeysTable": "keys"})
        yield dynamodb.Table("keys")


@pytest.fixture
def clock():
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def store(keys_table, clock):
    return KeyStore(keys_table, clock)


def raw_scan(table) -> list[dict]:
    """Every item as DynamoDB stores it (attribute-value JSON), through a plain low-level client."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    return client.scan(TableName=table.name)["Items"]


def bearer(raw: str) -> str:
    return f"Bearer {raw}"


# -- format and entropy -------------------------------------------------------------------------------


def test_new_key_is_sk_plus_43_url_safe_characters():
    for _ in range(200):
        assert KEY_RE.match(new_raw_key())


def test_new_key_comes_from_the_os_csprng(monkeypatch):
    calls = []
    real = keys_module.secrets.token_urlsafe

    def spy(nbytes):
        calls.append(nbytes)
        return real(nbytes)

    monkeypatch.setattr(keys_module.secrets, "token_urlsafe", spy)
    new_raw_key()
    assert calls == [32]  # 256 bits from `secrets`, not `random`


def test_new_keys_are_unique_and_spread_over_the_whole_alphabet():
    raws = [new_raw_key() for _ in range(3000)]
    assert len(set(raws)) == len(raws)
    # The first 42 characters carry 6 full bits each (the last one carries 4).
    chars = Counter(c for raw in raws for c in raw[3:45])
    assert len(chars) == 64
    total = sum(chars.values())
    entropy = -sum(n / total * math.log2(n / total) for n in chars.values())
    assert entropy > 5.98  # bits per character, the ideal being 6


def test_hash_is_sha256_hex_and_display_is_short():
    raw = "sk-" + "a" * 43
    assert hash_key(raw) == hashlib.sha256(raw.encode()).hexdigest()
    assert display_key(raw) == "sk-aaa...aaaa"
    assert mask_key("sk-abcdefghijklmnopqrstuvwxyz") == "sk-ab***yz"
    assert mask_key("short") == "***"


def test_hash_accepts_any_header_text():
    assert len(hash_key("sk-\udcff\u00e9")) == 64  # lone surrogates and non-ASCII never crash


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer   ", "Basic abc", "sk-abc"],
)
def test_bearer_token_refuses_missing_or_malformed_headers(header):
    with pytest.raises(InvalidApiKey) as caught:
        bearer_token(header)
    assert caught.value.status == 401
    assert caught.value.code == "invalid_api_key"


def test_bearer_token_is_case_insensitive_and_trims():
    assert bearer_token("bearer  sk-abc ") == "sk-abc"


# -- storage ------------------------------------------------------------------------------------------


def test_only_the_hash_and_display_are_stored(store, keys_table):
    created = [
        store.create("one", "alice", quota_images=5, allowed_models=["dall-e-3"]),
        store.create("two", rate_limit_per_minute=3, quota_credits=Decimal("12.5")),
    ]
    raw_items = raw_scan(keys_table)
    dump = json.dumps(raw_items)
    assert len(raw_items) == 2
    for new in created:
        assert KEY_RE.match(new.raw_key)
        assert new.raw_key not in dump
        assert new.raw_key[3:] not in dump
        assert new.raw_key[6:-4] not in dump  # nothing beyond the display's 3 + 4 characters
        assert hash_key(new.raw_key) in dump
        assert new.item["display"] == display_key(new.raw_key)
        assert new.item["key_id"].startswith("key_") and len(new.item["key_id"]) == 20
    stored = {i["name"]["S"]: i for i in raw_items}
    assert stored["one"]["quota_images"] == {"N": "5"}
    assert stored["one"]["allowed_models"] == {"L": [{"S": "dall-e-3"}]}
    assert stored["one"]["status"] == {"S": "active"}
    assert stored["two"]["rate_limit_per_minute"] == {"N": "3"}
    assert stored["two"]["quota_credits"] == {"N": "12.5"}
    assert "quota_images" not in stored["two"]


@pytest.mark.parametrize(
    "kwargs",
    [{"quota_images": -1}, {"quota_credits": "-1"}, {"rate_limit_per_minute": 0}],
)
def test_create_refuses_nonsense(store, kwargs):
    with pytest.raises(ValueError):
        store.create("bad", **kwargs)


def test_public_view_drops_the_hash(store):
    view = public_view(store.create("x").item)
    assert "key_hash" not in view
    assert view["display"].startswith("sk-")


# -- authenticate -------------------------------------------------------------------------------------


def test_authenticate_returns_the_caller(store, clock):
    new = store.create(
        "app",
        "bob",
        allowed_models=["gpt-image-*"],
        quota_images=3,
        quota_credits=100,
        rate_limit_per_minute=9,
    )
    caller = store.authenticate(bearer(new.raw_key))
    assert caller.key_id == new.key_id
    assert caller.key_hash == hash_key(new.raw_key)
    assert caller.display == display_key(new.raw_key)
    assert (caller.name, caller.owner) == ("app", "bob")
    assert caller.allowed_models == ["gpt-image-*"]
    assert caller.quota_images == 3
    assert caller.quota_credits == Decimal(100)
    assert caller.rate_limit_per_minute == 9
    assert new.raw_key not in repr(caller)


def test_missing_key_is_401():
    with pytest.raises(InvalidApiKey) as caught:
        KeyStore(table=None).authenticate(None)
    response = to_error_response(caught.value)
    assert response.status == 401
    assert response.body["error"]["code"] == "invalid_api_key"
    assert response.body["error"]["type"] == "invalid_request_error"


def test_wrong_key_is_401_with_openai_wording(store):
    store.create("real")
    wrong = "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    with pytest.raises(InvalidApiKey) as caught:
        store.authenticate(bearer(wrong))
    body = to_error_response(caught.value).body["error"]
    assert body == {
        "message": "Incorrect API key provided: sk-ab***FG.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_overlong_token_is_refused_without_a_lookup(clock):
    class NoTable:
        def get_item(self, **_):
            raise AssertionError("no lookup expected")

    with pytest.raises(InvalidApiKey):
        KeyStore(NoTable(), clock).authenticate(bearer("sk-" + "x" * 5000))


def test_digests_are_compared_in_constant_time(store, monkeypatch):
    new = store.create("ct")
    seen = []
    real = keys_module.hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    store.authenticate(bearer(new.raw_key))
    assert seen == [(hash_key(new.raw_key), hash_key(new.raw_key))]


def test_key_lookup_is_a_strongly_consistent_read(store, keys_table, monkeypatch):
    new = store.create("consistent")
    calls = []
    real = keys_table.get_item

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(keys_table, "get_item", spy)
    store.authenticate(bearer(new.raw_key))
    assert calls[0]["ConsistentRead"] is True


def test_revocation_applies_to_the_next_request(store):
    new = store.create("soon revoked")
    assert store.authenticate(bearer(new.raw_key)).key_id == new.key_id
    revoked = store.revoke(new.key_id)
    assert revoked["status"] == "revoked"
    with pytest.raises(InvalidApiKey) as caught:
        store.authenticate(bearer(new.raw_key))
    assert caught.value.status == 401
    assert caught.value.code == "invalid_api_key"
    assert "revoked" in caught.value.message
    assert new.raw_key not in caught.value.message


def test_expired_key_is_401(store, clock):
    new = store.create("short lived", expires=int(clock.now) + 60)
    store.authenticate(bearer(new.raw_key))
    clock.now += 60
    with pytest.raises(InvalidApiKey) as caught:
        store.authenticate(bearer(new.raw_key))
    assert caught.value.code == "invalid_api_key"
    assert "expired" in caught.value.message


# -- admin operations ---------------------------------------------------------------------------------


def test_get_list_and_revoke_by_key_id(store):
    a, b = store.create("a"), store.create("b")
    assert store.get(a.key_id)["name"] == "a"
    assert {i["key_id"] for i in store.list_keys()} == {a.key_id, b.key_id}
    store.revoke(a.key_id)
    assert store.revoke(a.key_id)["status"] == "revoked"  # idempotent
    assert store.get(b.key_id)["status"] == "active"
    with pytest.raises(KeyNotFound):
        store.get("key_doesnotexist")
    with pytest.raises(KeyNotFound):
        store.revoke("key_doesnotexist")


def test_import_key_is_idempotent_and_keeps_usage(store, keys_table):
    raw = "sk-local-development-key-0123456789"
    first = store.import_key(raw, name="dev", owner="make dev")
    keys_table.update_item(
        Key={"key_hash": first["key_hash"]},
        UpdateExpression="ADD used_images :n",
        ExpressionAttributeValues={":n": 3},
    )
    again = store.import_key(raw, name="dev", owner="make dev")
    assert again["key_id"] == first["key_id"]
    assert again["used_images"] == 3
    assert store.authenticate(bearer(raw)).key_id == first["key_id"]
    assert raw not in json.dumps(raw_scan(keys_table))
