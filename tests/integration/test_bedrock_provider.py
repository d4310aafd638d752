"""The `bedrock` provider (Amazon Nova Canvas) through the Router, over real HTTP: boto3's bedrock-runtime
client, SigV4-signed with fake credentials, talks to the upstream emulator's `POST /model/{id}/invoke`.

Backoff sleeps are recorded instead of slept; the emulator draws real PNGs, so sizes are checked on bytes.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import boto3
import pytest
from helpers.images import png_file
from PIL import Image

from imagegw.domain import ImageRequest
from imagegw.errors import InvalidRequest
from imagegw.request.catalog import Catalog
from imagegw.settings import Settings
from imagegw.upstream import CooldownTracker, build_router
from imagegw_dev.emulator import Emulator

NOVA = "amazon.nova-canvas-v1:0"


@pytest.fixture
def make_router(tmp_path, emu):
    def make(sleeps: list[float] | None = None):
        doc = {
            "providers": {
                "bedrock": {"type": "bedrock", "region": "us-east-1"},
                "openai": {"type": "openai", "base_url": emu.base_url + "/v1"},
            },
            "models": {
                "dall-e-2": [{"provider": "bedrock", "model": NOVA}],
                "gpt-image-1.5": [
                    {"provider": "bedrock", "model": NOVA},
                    {"provider": "openai", "model": "gpt-image-1.5"},
                ],
            },
        }
        path = tmp_path / "routes.json"
        path.write_text(json.dumps(doc))
        settings = Settings(
            "b",
            "k",
            "u",
            "j",
            "i",
            "q",
            routes_source=str(path),
            max_attempts=3,
            attempt_timeout_seconds=10.0,
        )
        client = boto3.client(
            "bedrock-runtime",
            endpoint_url=emu.base_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        return build_router(
            settings,
            Catalog.load(),
            sleep=(sleeps if sleeps is not None else []).append,
            cooldowns=CooldownTracker(),
            clients={"bedrock-runtime": client},
        )

    return make


def soon(seconds: float = 15.0) -> float:
    return time.monotonic() + seconds


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def nova_requests(emu: Emulator) -> list[Any]:
    return [r for r in emu.requests if r.path.startswith("/model/")]


def test_generation_honours_size_and_n(make_router, emu):
    request = ImageRequest(
        "generations", "gpt-image-1.5", {"prompt": "an otter", "n": 2, "size": "1536x1024"}
    )
    result = make_router().call(request, deadline=soon())
    assert result.route == f"bedrock:{NOVA}" and result.usage is None
    assert [size_of(img.data) for img in result.images] == [(1536, 1024), (1536, 1024)]
    (seen,) = emu.requests
    assert seen.path == "/model/amazon.nova-canvas-v1%3A0/invoke" and seen.deployment == NOVA
    assert seen.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert seen.json["taskType"] == "TEXT_IMAGE"
    assert seen.json["textToImageParams"] == {"text": "an otter"}
    config = seen.json["imageGenerationConfig"]
    assert (config["numberOfImages"], config["width"], config["height"]) == (2, 1536, 1024)


def test_a_size_below_novas_minimum_is_asked_at_320_and_scaled_back(make_router, emu):
    request = ImageRequest("generations", "dall-e-2", {"prompt": "a boat", "n": 1, "size": "256x256"})
    result = make_router().call(request, deadline=soon())
    assert size_of(result.images[0].data) == (256, 256)
    assert emu.requests[0].json["imageGenerationConfig"]["width"] == 320


def test_inpainting_edit_changes_the_transparent_area_only(make_router, emu):
    image = png_file((512, 512), (20, 120, 220, 255))
    mask = png_file((512, 512), (0, 0, 0, 255), hole=(128, 128, 384, 384), name="mask")
    request = ImageRequest("edits", "gpt-image-1.5", {"prompt": "a red hat", "n": 1}, [image], mask)
    result = make_router().call(request, deadline=soon())
    (out,) = result.images
    with Image.open(io.BytesIO(out.data)) as img:
        assert img.size == (512, 512)
        assert img.convert("RGB").getpixel((20, 20)) == (20, 120, 220)  # kept
        assert img.convert("RGB").getpixel((256, 256)) != (20, 120, 220)  # edited
    (seen,) = emu.requests
    assert seen.json["taskType"] == "INPAINTING" and "maskImage" in seen.json["inPaintingParams"]


def test_variations_are_served_by_a_backend_that_makes_them(make_router, emu):
    source = png_file((256, 256), (200, 40, 40, 255))
    request = ImageRequest("variations", "dall-e-2", {"n": 2, "size": "256x256"}, [source])
    result = make_router().call(request, deadline=soon())
    assert result.route == f"bedrock:{NOVA}"
    assert len(result.images) == 2 and all(size_of(img.data) == (256, 256) for img in result.images)
    assert result.images[0].data != result.images[1].data
    (seen,) = emu.requests
    params = seen.json["imageVariationParams"]
    assert seen.json["taskType"] == "IMAGE_VARIATION"
    assert len(params["images"]) == 1 and params["similarityStrength"] == 0.7


def test_throttling_then_success_is_retried_by_the_router(make_router, emu):
    emu.add_faults({"status": 429})
    sleeps: list[float] = []
    request = ImageRequest("generations", "dall-e-2", {"prompt": "x", "n": 1, "size": "512x512"})
    result = make_router(sleeps).call(request, deadline=soon())
    assert result.route == f"bedrock:{NOVA}"
    assert len(nova_requests(emu)) == 2  # botocore did not retry on its own: the router did, once
    assert len(sleeps) == 1


def test_validation_exception_is_the_clients_400(make_router, emu):
    emu.add_faults({"status": 400, "message": "The text prompt is too long. See https://docs.example.com"})
    request = ImageRequest("generations", "gpt-image-1.5", {"prompt": "x", "n": 1})
    with pytest.raises(InvalidRequest) as info:
        make_router().call(request, deadline=soon())
    assert info.value.status == 400
    assert info.value.message.startswith("The text prompt is too long.")
    assert "docs.example.com" not in info.value.message
    assert len(emu.requests) == 1  # neither retried nor failed over


def test_access_denied_fails_over_to_the_openai_route(make_router, emu):
    emu.add_faults({"status": 403})
    request = ImageRequest(
        "generations", "gpt-image-1.5", {"prompt": "x", "n": 1, "size": "1024x1024", "quality": "low"}
    )
    result = make_router().call(request, deadline=soon())
    assert result.route == "openai:gpt-image-1.5"
    assert [r.path for r in emu.requests] == [
        "/model/amazon.nova-canvas-v1%3A0/invoke",
        "/v1/images/generations",
    ]
