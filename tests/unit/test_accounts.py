"""Accounts: 403 model, 429 quota and rate (with retry-after), refunds, usage counters and the usage log."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import boto3
import pytest
from helpers.aws import create_tables
from helpers.fakes import FakeClock
from moto import mock_aws

from imagegw.accounts import admission as accounts_module
from imagegw.accounts.admission import Accounts, Admission, Outcome
from imagegw.accounts.keys import KeyStore, hash_key
from imagegw.accounts.quota import QuotaLedger
from imagegw.accounts.usage import UsageReader, UsageRecorder, day_of, totals
from imagegw.domain import GeneratedImage, ImageRequest, UpstreamResult
from imagegw.errors import InvalidApiKey, ModelNotAllowed, QuotaExceeded, RateLimited, to_error_response
from imagegw.settings import Settings

T0 = 1_800_000_010.5  # 10.5 s into a minute window (2027-01-15T08:00:00Z + 10.5 s)


@pytest.fixture
def dynamodb(aws_env):
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        create_tables(resource, {"KeysTable": "keys", "UsageTable": "usage"})
        yield resource


@pytest.fixture
def clock():
    return FakeClock(T0)


@pytest.fixture
def store(dynamodb, clock):
    return KeyStore(dynamodb.Table("keys"), clock)


@pytest.fixture
def accounts(dynamodb, store, clock):
    return Accounts(store, usage_table=dynamodb.Table("usage"), clock=clock)


def request(model="dall-e-3", n=1, operation="generations", **params) -> ImageRequest:
    base = {"prompt": "a sea otter holding a secret", "n": n, "size": "1024x1024"}
    return ImageRequest(operation=operation, model=model, params={**base, **params})


def success(images=1, usage=None, route="openai-primary") -> Outcome:
    result = UpstreamResult([GeneratedImage(b"png") for _ in range(images)], usage=usage, route=route)
    return Outcome(200, 1234, result)


def failure(status=502, code="upstream_error") -> Outcome:
    return Outcome(status, 987, None, code)


def key_item(store: KeyStore, key_id: str) -> dict:
    return store.get(key_id)


def login(accounts: Accounts, raw: str):
    return accounts.authenticate(f"Bearer {raw}")


# -- authenticate -------------------------------------------------------------------------------------


def test_authenticate_rejects_missing_wrong_and_revoked_keys(accounts, store):
    new = store.create("k")
    assert login(accounts, new.raw_key).key_id == new.key_id
    for header in (None, "Bearer sk-wrongwrongwrongwrongwrongwrongwrongwrongwrong"):
        with pytest.raises(InvalidApiKey):
            accounts.authenticate(header)
    store.revoke(new.key_id)
    with pytest.raises(InvalidApiKey):
        login(accounts, new.raw_key)


def test_revocation_between_authenticate_and_admit_is_401(accounts, store):
    new = store.create("k", quota_images=5)
    caller = login(accounts, new.raw_key)
    store.revoke(new.key_id)
    with pytest.raises(InvalidApiKey) as caught:
        accounts.admit(caller, request(), "req-1")
    assert caught.value.status == 401
    assert key_item(store, new.key_id)["used_images"] == 0


# -- 403 model ----------------------------------------------------------------------------------------


def test_model_not_allowed_is_403(accounts, store):
    new = store.create("k", allowed_models=["dall-e-3", "gpt-image-1*"])
    caller = login(accounts, new.raw_key)
    accounts.admit(caller, request("dall-e-3"), "r1")
    accounts.admit(caller, request("gpt-image-1-mini", quality="low"), "r2")  # pattern
    with pytest.raises(ModelNotAllowed) as caught:
        accounts.admit(caller, request("dall-e-2"), "r3")
    response = to_error_response(caught.value)
    assert response.status == 403
    assert response.body["error"]["type"] == "permission_error"
    assert response.body["error"]["code"] == "model_not_allowed"
    assert response.body["error"]["param"] == "model"
    assert key_item(store, new.key_id)["used_images"] == 2  # nothing reserved for the refused one


# -- 429 quota ----------------------------------------------------------------------------------------


def test_image_quota_is_reserved_and_then_429(accounts, store):
    new = store.create("k", quota_images=3)
    caller = login(accounts, new.raw_key)
    accounts.admit(caller, request(model="dall-e-2", n=2), "r1")
    with pytest.raises(QuotaExceeded):
        accounts.admit(caller, request(model="dall-e-2", n=2), "r2")  # 2 + 2 > 3: nothing partial
    accounts.admit(caller, request(model="dall-e-2", n=1), "r3")
    with pytest.raises(QuotaExceeded) as caught:
        accounts.admit(caller, request(model="dall-e-2", n=1), "r4")
    response = to_error_response(caught.value)
    assert response.status == 429
    assert response.body["error"] == {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
    assert response.headers.get("x-should-retry") == "false"
    assert key_item(store, new.key_id)["used_images"] == 3


def test_request_bigger_than_the_whole_quota_is_429_without_a_write(accounts, store):
    new = store.create("k", quota_images=2)
    with pytest.raises(QuotaExceeded):
        accounts.admit(login(accounts, new.raw_key), request(model="dall-e-2", n=3), "r1")
    assert key_item(store, new.key_id)["used_images"] == 0


def test_zero_quota_admits_nothing(accounts, store):
    new = store.create("k", quota_images=0)
    with pytest.raises(QuotaExceeded):
        accounts.admit(login(accounts, new.raw_key), request(), "r1")


def test_failed_request_refunds_its_reservation(accounts, store):
    new = store.create("k", quota_images=1, quota_credits=10)
    caller = login(accounts, new.raw_key)
    admission = accounts.admit(caller, request(quality="hd"), "r1")  # dall-e-3 hd: 8 cents
    item = key_item(store, new.key_id)
    assert (item["used_images"], item["used_credits"]) == (1, Decimal(8))
    with pytest.raises(QuotaExceeded):
        accounts.admit(caller, request(quality="hd"), "r2")
    accounts.settle(admission, failure())
    item = key_item(store, new.key_id)
    assert (item["used_images"], item["used_credits"]) == (0, Decimal(0))
    accounts.admit(caller, request(quality="hd"), "r3")  # the refunded quota is usable again


def test_settle_is_applied_once(accounts, store):
    new = store.create("k", quota_images=5)
    admission = accounts.admit(login(accounts, new.raw_key), request(), "r1")
    accounts.settle(admission, failure())
    accounts.settle(admission, failure())
    assert key_item(store, new.key_id)["used_images"] == 0
    rows = UsageReader(accounts_usage_table(accounts)).log(new.key_id, _today())
    assert len(rows) == 1


def test_fewer_images_than_reserved_are_refunded(accounts, store):
    new = store.create("k", quota_images=10)
    admission = accounts.admit(login(accounts, new.raw_key), request(model="dall-e-2", n=4), "r1")
    accounts.settle(admission, success(images=3))
    item = key_item(store, new.key_id)
    assert item["used_images"] == 3
    assert item["used_credits"] == Decimal(6)  # 3 x $0.02


def test_credit_quota_uses_the_estimate_then_the_actual_cost(accounts, store):
    new = store.create("k", quota_credits=30)
    caller = login(accounts, new.raw_key)
    req = request(model="gpt-image-1", quality="high")
    admission = accounts.admit(caller, req, "r1")
    assert admission.reserved_credits == Decimal("16.64")  # 4160 tokens x $40 / 1M
    usage = {
        "input_tokens": 50,
        "output_tokens": 1000,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
        "total_tokens": 1050,
    }
    accounts.settle(admission, success(usage=usage))
    # actual: (50 x 5 + 1000 x 40) / 1M USD = 4.025 cents
    assert key_item(store, new.key_id)["used_credits"] == Decimal("4.025")
    accounts.admit(caller, req, "r2")
    with pytest.raises(QuotaExceeded):
        accounts.admit(caller, req, "r3")  # 4.025 + 16.64 + 16.64 > 30


def test_quota_changed_after_authentication_is_honoured(accounts, store, dynamodb):
    new = store.create("k", quota_images=1)
    caller = login(accounts, new.raw_key)
    accounts.admit(caller, request(), "r1")
    dynamodb.Table("keys").update_item(
        Key={"key_hash": hash_key(new.raw_key)},
        UpdateExpression="SET quota_images = :q",
        ExpressionAttributeValues={":q": 3},
    )
    accounts.admit(caller, request(), "r2")  # the stale caller still says 1: the new quota wins
    accounts.admit(caller, request(), "r3")
    with pytest.raises(QuotaExceeded):
        accounts.admit(caller, request(), "r4")


def test_keys_without_quota_are_admitted_and_counted(accounts, store):
    new = store.create("k")
    caller = login(accounts, new.raw_key)
    for i in range(5):
        accounts.settle(accounts.admit(caller, request(model="dall-e-2"), f"r{i}"), success())
    item = key_item(store, new.key_id)
    assert item["used_images"] == 5
    assert item["last_used"] == int(T0)


# -- 429 rate -----------------------------------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after_until_the_next_window(accounts, store, clock):
    new = store.create("k", rate_limit_per_minute=2)
    caller = login(accounts, new.raw_key)
    accounts.admit(caller, request(), "r1")
    accounts.admit(caller, request(), "r2")
    with pytest.raises(RateLimited) as caught:
        accounts.admit(caller, request(), "r3")
    response = to_error_response(caught.value)
    assert response.status == 429
    assert response.body["error"]["code"] == "rate_limit_exceeded"
    assert response.body["error"]["message"].startswith("Rate limit exceeded")
    assert response.headers["retry-after"] == "50"  # 49.5 s left in the minute, rounded up
    assert response.headers["retry-after-ms"] == "49500"
    assert key_item(store, new.key_id)["used_images"] == 2  # the refused request reserved nothing
    clock.now += 49.5  # the next window
    accounts.admit(caller, request(), "r4")


def test_rate_window_items_expire(accounts, store, dynamodb):
    new = store.create("k", rate_limit_per_minute=5)
    accounts.admit(login(accounts, new.raw_key), request(), "r1")
    items = dynamodb.Table("usage").scan()["Items"]
    rate = [i for i in items if i["pk"] == f"rate#{new.key_id}"]
    assert len(rate) == 1
    assert rate[0]["sk"] == "2027-01-15T08:00:00Z"
    assert rate[0]["requests"] == 1
    assert rate[0]["expires_at"] == 1_800_000_000 + 120


# -- usage counters and the usage log -----------------------------------------------------------------


def test_usage_counters_and_log_records(accounts, store, dynamodb):
    new = store.create("k")
    caller = login(accounts, new.raw_key)
    ok = accounts.admit(caller, request(quality="hd"), "req-ok")
    accounts.settle(ok, success())
    gpt = accounts.admit(caller, request(model="gpt-image-1", quality="low"), "req-gpt")
    usage = {
        "input_tokens": 20,
        "output_tokens": 272,
        "total_tokens": 292,
        "input_tokens_details": {"text_tokens": 20, "image_tokens": 0},
    }
    accounts.settle(gpt, success(usage=usage, route="azure"))
    failed = accounts.admit(caller, request(), "req-failed")
    accounts.settle(failed, failure(504, "timeout"))

    reader = UsageReader(dynamodb.Table("usage"))
    days = reader.days(new.key_id, _today(), _today())
    assert len(days) == 1
    day = days[0]
    assert day["pk"] == f"key#{new.key_id}" and day["sk"] == f"day#{day_of(T0)}"
    assert (day["requests"], day["succeeded"], day["failed"], day["images"]) == (3, 2, 1, 2)
    assert (day["input_tokens"], day["output_tokens"]) == (20, 272)
    # dall-e-3 hd 8 cents + gpt-image-1: (20 x 5 + 272 x 40) / 1M USD = 1.098 cents
    assert day["cost_cents"] == Decimal("9.098")
    assert day["expires_at"] > T0 + 300 * 86400

    models = {m["model"]: m for m in reader.models(new.key_id, _today(), _today())}
    assert models["dall-e-3"]["requests"] == 2 and models["dall-e-3"]["failed"] == 1
    assert models["gpt-image-1"]["cost_cents"] == Decimal("1.098")
    assert models["gpt-image-1"]["day"] == day_of(T0)
    # The per-model counters live on the day item (no separate item, no extra write); unmoved ones are absent.
    assert day["model#dall-e-3#requests"] == 2 and day["model#gpt-image-1#output_tokens"] == 272
    assert "model#dall-e-3#input_tokens" not in day
    sks = [i["sk"] for i in dynamodb.Table("usage").scan()["Items"] if i["pk"] == f"key#{new.key_id}"]
    assert sks == [f"day#{day_of(T0)}"]

    log = {r["request_id"]: r for r in reader.log(new.key_id, _today())}
    assert set(log) == {"req-ok", "req-gpt", "req-failed"}
    first = log["req-ok"]
    assert first["pk"] == f"log#{new.key_id}#{day_of(T0)}"
    assert first["sk"].endswith("#req-ok") and first["sk"].startswith("2027-01-15T08:00:10.500Z")
    assert (first["model"], first["operation"], first["status"], first["latency_ms"]) == (
        "dall-e-3",
        "generations",
        200,
        1234,
    )
    assert (first["size"], first["quality"], first["images"]) == ("1024x1024", "hd", 1)
    assert first["cost_cents"] == Decimal(8)
    assert first["upstream_route"] == "openai-primary"
    assert first["expires_at"] == int(T0) + 30 * 86400
    assert log["req-gpt"]["output_tokens"] == 272
    assert (log["req-failed"]["status"], log["req-failed"]["error_code"]) == (504, "timeout")
    assert log["req-failed"]["images"] == 0
    assert all("prompt" not in r for r in log.values())


def test_prompts_are_logged_only_when_enabled(dynamodb, store, clock):
    new = store.create("k")
    table = dynamodb.Table("usage")
    for flag, request_id in ((False, "r-off"), (True, "r-on")):
        accounts = Accounts(store, usage_table=table, clock=clock, log_prompts=flag)
        accounts.settle(accounts.admit(login(accounts, new.raw_key), request(), request_id), success())
    log = {r["request_id"]: r for r in UsageReader(table).log(new.key_id, _today())}
    assert "prompt" not in log["r-off"]
    assert log["r-on"]["prompt"] == "a sea otter holding a secret"


def test_no_raw_key_or_prompt_in_the_usage_table(accounts, store, dynamodb):
    new = store.create("k", rate_limit_per_minute=10)
    accounts.settle(accounts.admit(login(accounts, new.raw_key), request(), "r1"), success())
    dump = json.dumps(boto3.client("dynamodb", region_name="us-east-1").scan(TableName="usage")["Items"])
    assert new.raw_key not in dump
    assert hash_key(new.raw_key) not in dump
    assert "sea otter" not in dump


def test_settle_never_raises(store, clock, dynamodb, monkeypatch):
    new = store.create("k", quota_images=2)
    errors: list[str] = []
    monkeypatch.setattr(accounts_module.logger, "error", lambda message, **_: errors.append(message))
    # Every write fails: tables that do not exist (the quota refund, the usage counters, the usage log).
    down = Accounts(KeyStore(dynamodb.Table("no-keys"), clock), usage_table=dynamodb.Table("no-usage"))
    caller = login(Accounts(store, clock=clock), new.raw_key)
    admission = Admission(caller, request(), "r1", reserved_images=1, reserved=True, admitted_at=T0)
    down.settle(admission, failure())  # logged, not raised
    assert sorted(errors) == [
        "could not record the usage counters",
        "could not settle the quota reservation",
        "could not write the usage log record",
    ]


def test_a_failed_usage_write_does_not_stop_the_refund(store, clock, dynamodb):
    new = store.create("k", quota_images=2)
    accounts = Accounts(store, usage_table=dynamodb.Table("no-usage"), clock=clock)
    admission = accounts.admit(login(accounts, new.raw_key), request(n=2), "r1")
    assert key_item(store, new.key_id)["used_images"] == 2
    accounts.settle(admission, failure())
    assert key_item(store, new.key_id)["used_images"] == 0


def test_settle_writes_concurrently(accounts, store, dynamodb, monkeypatch):
    # The three writes (quota adjust, usage counters, usage log) touch three items and do not depend on
    # each other: each waits here until all three have started, which only passes if they overlap.
    barrier = threading.Barrier(3, timeout=5)
    for cls, name in ((QuotaLedger, "adjust"), (UsageRecorder, "add_counters"), (UsageRecorder, "put_log")):
        original = getattr(cls, name)

        def meeting(*args, _original=original, **kwargs):
            barrier.wait()
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, name, meeting)
    new = store.create("k", quota_images=5)
    admission = accounts.admit(login(accounts, new.raw_key), request(n=3), "r1")
    accounts.settle(admission, success(images=1))  # 2 of the 3 reserved images are refunded
    assert not barrier.broken
    assert key_item(store, new.key_id)["used_images"] == 1
    reader = UsageReader(dynamodb.Table("usage"))
    assert [r["request_id"] for r in reader.log(new.key_id, _today())] == ["r1"]
    assert reader.days(new.key_id, _today(), _today())[0]["images"] == 1


def test_per_model_usage_written_before_the_day_item_carried_it_is_still_read(accounts, store, dynamodb):
    new = store.create("k")
    table = dynamodb.Table("usage")
    day = day_of(T0)
    # The former layout: one item per key, day and model.
    table.put_item(
        Item={
            "pk": f"key#{new.key_id}",
            "sk": f"model#{day}#dall-e-3",
            "key_id": new.key_id,
            "day": day,
            "model": "dall-e-3",
            "requests": 4,
            "succeeded": 4,
            "failed": 0,
            "images": 4,
            "cost_cents": Decimal(16),
        }
    )
    accounts.settle(accounts.admit(login(accounts, new.raw_key), request(), "r1"), success())
    rows = UsageReader(table).models(new.key_id, _today(), _today())
    assert sorted((r["model"], r["day"], r["requests"], r["images"]) for r in rows) == [
        ("dall-e-3", day, 1, 1),
        ("dall-e-3", day, 4, 4),
    ]
    assert totals(rows)["cost_cents"] == Decimal(20)


def test_without_a_usage_table_quota_still_applies(store, clock):
    new = store.create("k", quota_images=1, rate_limit_per_minute=1)
    accounts = Accounts(store, clock=clock)
    caller = login(accounts, new.raw_key)
    accounts.settle(accounts.admit(caller, request(), "r1"), success())
    with pytest.raises(QuotaExceeded):
        accounts.admit(caller, request(), "r2")


def test_from_settings(dynamodb, store, clock):
    settings = Settings(
        bucket="b",
        keys_table="keys",
        usage_table="usage",
        jobs_table="jobs",
        idempotency_table="idem",
        jobs_queue_url="http://127.0.0.1/q",
        log_prompts=True,
    )
    accounts = Accounts.from_settings(settings, dynamodb, clock=clock)
    new = store.create("k")
    accounts.settle(accounts.admit(login(accounts, new.raw_key), request(), "r1"), success())
    log = UsageReader(dynamodb.Table("usage")).log(new.key_id, _today())
    assert log[0]["prompt"].startswith("a sea otter")


def accounts_usage_table(accounts: Accounts):
    return boto3.resource("dynamodb", region_name="us-east-1").Table("usage")


def _today():
    from datetime import UTC, datetime

    return datetime.fromtimestamp(T0, UTC).date()
