"""Accounts inside the real pipeline (ImageService: parse, validate, admit, upstream, render, settle), with
DynamoDB from moto, a fake upstream router and an in-memory image store."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import boto3
import pytest
from helpers.aws import create_tables
from helpers.fakes import InMemoryImageStore
from moto import mock_aws
from PIL import Image
from requests_toolbelt import MultipartEncoder

from imagegw.accounts.admission import Accounts
from imagegw.accounts.keys import KeyStore
from imagegw.accounts.usage import UsageReader, day_of
from imagegw.domain import GeneratedImage, HttpRequest, ImageRequest, UpstreamResult
from imagegw.errors import ApiError, InvalidApiKey, ModelNotAllowed, QuotaExceeded, UpstreamError
from imagegw.request.catalog import Catalog
from imagegw.service import ImageService
from imagegw.settings import Settings

REGION = "us-east-1"


@pytest.fixture
def dynamodb(aws_env):
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name=REGION)
        create_tables(resource, {"KeysTable": "keys", "UsageTable": "usage"})
        yield resource


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


class FakeUpstream:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def call(self, request: ImageRequest, *, deadline: float) -> UpstreamResult:
        self.calls += 1
        if self.fail:
            raise UpstreamError()
        return UpstreamResult([GeneratedImage(png()) for _ in range(request.n)], route="fake")


SETTINGS = Settings(
    bucket="bucket",
    keys_table="keys",
    usage_table="usage",
    jobs_table="jobs",
    idempotency_table="idem",
    jobs_queue_url="http://127.0.0.1/queue",
)


@pytest.fixture
def service(dynamodb):
    return ImageService(
        settings=SETTINGS,
        catalog=Catalog.load(),
        accounts=Accounts.from_settings(SETTINGS, dynamodb),
        upstream=FakeUpstream(),
        store=InMemoryImageStore(),
    )


def call(service: ImageService, raw_key: str | None, body: dict, request_id: str = "req_1"):
    headers = {"content-type": "application/json"}
    if raw_key:
        headers["authorization"] = f"Bearer {raw_key}"
    http = HttpRequest("POST", "/v1/images/generations", headers, json.dumps(body).encode(), request_id)
    return service.handle("generations", http, lambda: 60_000)


BODY = {"model": "dall-e-2", "prompt": "a lighthouse", "n": 2, "size": "256x256"}


def test_success_is_metered(service, dynamodb):
    new = KeyStore(dynamodb.Table("keys")).create("svc", quota_images=5)
    response = call(service, new.raw_key, BODY)
    assert response.status == 200
    assert KeyStore(dynamodb.Table("keys")).get(new.key_id)["used_images"] == 2
    reader = UsageReader(dynamodb.Table("usage"))
    day = datetime.now(UTC).date()
    (row,) = reader.days(new.key_id, day, day)
    assert (row["requests"], row["images"], row["cost_cents"]) == (1, 2, Decimal("3.2"))  # 2 x $0.016
    (log,) = reader.log(new.key_id, day)
    assert log["pk"] == f"log#{new.key_id}#{day_of(time.time())}"
    assert (log["request_id"], log["status"], log["operation"], log["upstream_route"]) == (
        "req_1",
        200,
        "generations",
        "fake",
    )


def test_upstream_failure_refunds(service, dynamodb):
    new = KeyStore(dynamodb.Table("keys")).create("svc", quota_images=2)
    service.upstream.fail = True
    with pytest.raises(UpstreamError):
        call(service, new.raw_key, BODY)
    assert KeyStore(dynamodb.Table("keys")).get(new.key_id)["used_images"] == 0
    service.upstream.fail = False
    assert call(service, new.raw_key, BODY).status == 200  # the whole quota is still there


def test_refusals_never_reach_the_upstream(service, dynamodb):
    store = KeyStore(dynamodb.Table("keys"))
    limited = store.create("quota", quota_images=1)
    only_dalle3 = store.create("models", allowed_models=["dall-e-3"])
    revoked = store.create("revoked")
    store.revoke(revoked.key_id)
    cases: list[tuple[str | None, type[ApiError]]] = [
        (None, InvalidApiKey),
        ("sk-not-a-real-key-at-all-000000000000000000", InvalidApiKey),
        (revoked.raw_key, InvalidApiKey),
        (only_dalle3.raw_key, ModelNotAllowed),
        (limited.raw_key, QuotaExceeded),  # n=2 > 1
    ]
    for raw, error in cases:
        with pytest.raises(error):
            call(service, raw, BODY)
    assert service.upstream.calls == 0


def test_a_bad_key_is_401_before_its_bodys_400_and_a_good_key_gets_the_400(service, dynamodb):
    bad_body = {"model": "dall-e-2", "prompt": "a lighthouse", "n": 99}
    with pytest.raises(InvalidApiKey):
        call(service, "sk-not-a-real-key-at-all-000000000000000000", bad_body)
    new = KeyStore(dynamodb.Table("keys")).create("svc", quota_images=5)
    with pytest.raises(ApiError) as caught:
        call(service, new.raw_key, bad_body)
    assert caught.value.status == 400 and caught.value.param == "n"
    assert KeyStore(dynamodb.Table("keys")).get(new.key_id)["used_images"] == 0  # refused before admission
    assert service.upstream.calls == 0


def test_a_stable_image_core_edit_is_reserved_and_charged_at_the_inpaintings_price(service, dynamodb):
    """Core's masked edits are Stability's inpainting ($0.07 an image, Core's generations $0.04): the credit
    reservation before the call is the edit's price, so a 10-cent quota admits one edit, not two."""
    store = KeyStore(dynamodb.Table("keys"))
    new = store.create("core", quota_credits=10)
    holed = Image.new("RGBA", (64, 64), (10, 20, 30, 255))
    holed.paste((0, 0, 0, 0), (16, 16, 48, 48))
    image = io.BytesIO()
    holed.save(image, "PNG")
    encoder = MultipartEncoder(
        fields={
            "model": "stable-image-core",
            "prompt": "a hat",
            "image": ("o.png", image.getvalue(), "image/png"),
        }
    )
    headers = {"content-type": encoder.content_type, "authorization": f"Bearer {new.raw_key}"}
    body = encoder.to_string()  # an encoder is read once

    def edit(request_id: str):
        http = HttpRequest("POST", "/v1/images/edits", headers, body, request_id)
        return service.handle("edits", http, lambda: 60_000)

    assert edit("req_edit_1").status == 200
    assert store.get(new.key_id)["used_credits"] == Decimal(7)
    with pytest.raises(QuotaExceeded):
        edit("req_edit_2")  # 7 + 7 > 10, refused before the upstream
    assert service.upstream.calls == 1
