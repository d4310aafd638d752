"""Stability AI's models on Bedrock through the Router over real HTTP: boto3's bedrock-runtime client,
SigV4-signed with fake credentials, talks to the upstream emulator's Stability wire format. Also the retired
Nova Canvas name, served by translation to them (the shipped `nova-canvas-variations` translation)."""

from __future__ import annotations

import io
import json
import time

import boto3
import pytest
from helpers.images import png_file
from PIL import Image

from imagegw.domain import ImageRequest
from imagegw.errors import InvalidRequest, UpstreamError
from imagegw.request.catalog import Catalog
from imagegw.settings import Settings
from imagegw.upstream import CooldownTracker, build_router, shipped_routes_document

SD35 = "stability.sd3-5-large-v1:0"
CORE = "stability.stable-image-core-v1:1"
ULTRA = "stability.stable-image-ultra-v1:1"
INPAINT = "stability.stable-image-inpaint-v1:0"


@pytest.fixture
def router(tmp_path, emu):
    shipped = shipped_routes_document()
    doc = {
        "providers": {"bedrock": {"type": "bedrock", "region": "us-west-2"}},
        "translations": {"nova-canvas-variations": shipped["translations"]["nova-canvas-variations"]},
        "models": {
            "sd3.5-large": [{"provider": "bedrock", "model": SD35}],
            "stable-image-core": [
                {"provider": "bedrock", "model": CORE, "operations": ["generations"]},
                {"provider": "bedrock", "model": INPAINT, "operations": ["edits"]},
            ],
            "stable-image-ultra": [{"provider": "bedrock", "model": ULTRA}],
            "nova-canvas": [
                {"provider": "bedrock", "model": CORE, "operations": ["generations"]},
                {"provider": "bedrock", "model": INPAINT, "operations": ["edits"]},
                {
                    "provider": "bedrock",
                    "model": SD35,
                    "operations": ["variations"],
                    "translate": "nova-canvas-variations",
                },
            ],
        },
    }
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(doc))
    settings = Settings("b", "k", "u", "j", "i", "q", routes_source=str(path), attempt_timeout_seconds=10.0)
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=emu.base_url,
        region_name="us-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return build_router(
        settings,
        Catalog.load(),
        sleep=lambda _: None,
        cooldowns=CooldownTracker(),
        clients={"bedrock-runtime": client},
    )


def soon() -> float:
    return time.monotonic() + 15


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.mark.parametrize(
    ("model", "upstream"), [("sd3.5-large", SD35), ("stable-image-core", CORE), ("stable-image-ultra", ULTRA)]
)
def test_a_generation_is_signed_and_asks_the_nearest_ratio_then_fits_the_size(router, emu, model, upstream):
    params = {"prompt": "an otter", "n": 2, "size": "1536x1024", "seed": 7, "negative_prompt": "blur"}
    result = router.call(ImageRequest("generations", model, params), deadline=soon())
    assert result.route == f"bedrock:{upstream}" and result.usage is None
    assert [opened(i.data).size for i in result.images] == [(1536, 1024), (1536, 1024)]
    first, second = emu.requests
    assert first.path == f"/model/{upstream.replace(':', '%3A')}/invoke"
    assert first.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    expected = {
        "prompt": "an otter",
        "aspect_ratio": "3:2",
        "output_format": "png",
        "seed": 7,
        "negative_prompt": "blur",
    }
    if model == "sd3.5-large":
        expected["mode"] = "text-to-image"
    assert first.json == expected
    assert second.json["seed"] == 8  # one image per call; the seed moves on


def test_an_aspect_ratio_is_sent_as_given_and_the_image_keeps_the_models_resolution(router, emu):
    params = {
        "prompt": "a lighthouse",
        "n": 1,
        "size": "auto",
        "aspect_ratio": "16:9",
        "output_format": "jpeg",
    }
    result = router.call(ImageRequest("generations", "stable-image-core", params), deadline=soon())
    img = opened(result.images[0].data)
    assert img.format == "JPEG" and img.size == (1344, 768)
    assert emu.requests[0].json["aspect_ratio"] == "16:9" and emu.requests[0].json["output_format"] == "jpeg"


def test_webp_is_asked_as_png_and_converted(router, emu):
    params = {"prompt": "a fox", "n": 1, "output_format": "webp"}
    result = router.call(ImageRequest("generations", "sd3.5-large", params), deadline=soon())
    assert opened(result.images[0].data).format == "WEBP"
    assert emu.requests[0].json["output_format"] == "png"


def test_sd35_edit_is_image_to_image_with_strength(router, emu):
    params = {"prompt": "as a watercolour", "n": 1, "strength": 0.4, "size": "auto"}
    image = png_file((640, 512))
    result = router.call(ImageRequest("edits", "sd3.5-large", params, [image]), deadline=soon())
    assert opened(result.images[0].data).size == (640, 512)
    sent = emu.requests[0].json
    assert sent["mode"] == "image-to-image" and sent["strength"] == 0.4 and "aspect_ratio" not in sent


def test_core_edits_are_inpainted_and_edit_only_the_masked_area(router, emu):
    image = png_file((512, 512), (20, 120, 220, 255))
    mask = png_file((512, 512), (0, 0, 0, 255), hole=(128, 128, 384, 384), name="mask")
    params = {"prompt": "a red hat", "n": 1, "grow_mask": 0, "size": "auto"}
    result = router.call(ImageRequest("edits", "stable-image-core", params, [image], mask), deadline=soon())
    out = opened(result.images[0].data).convert("RGB")
    assert out.getpixel((20, 20)) == (20, 120, 220)  # kept
    assert out.getpixel((256, 256)) != (20, 120, 220)  # edited
    sent = emu.requests[0].json
    assert set(sent) == {"prompt", "image", "mask", "output_format", "grow_mask"}
    assert emu.requests[0].deployment == INPAINT and result.model == INPAINT


def test_inpaint_without_mask_or_transparency_is_the_clients_400(router, emu):
    image = png_file((512, 512))
    with pytest.raises(InvalidRequest) as info:
        router.call(
            ImageRequest("edits", "stable-image-core", {"prompt": "x", "n": 1}, [image]), deadline=soon()
        )
    assert info.value.param == "mask" and emu.requests == []


def test_edits_routed_to_a_model_that_cannot_edit_fail_before_sending(router, emu):
    # validation refuses edits on stable-image-ultra; this is a routes document sending edits to Ultra
    image = png_file((512, 512), hole=(0, 0, 64, 64))
    with pytest.raises(UpstreamError) as info:
        router.call(
            ImageRequest("edits", "stable-image-ultra", {"prompt": "x", "n": 1}, [image]), deadline=soon()
        )
    assert emu.requests == [] and not info.value.maybe_billed


def test_an_upstream_validation_error_is_the_clients_400(router, emu):
    emu.add_faults({"status": 400, "message": "Malformed input request: prompt too long"})
    with pytest.raises(InvalidRequest):
        router.call(
            ImageRequest("generations", "stable-image-ultra", {"prompt": "x", "n": 1}), deadline=soon()
        )
    assert len(emu.requests) == 1


def test_the_retired_nova_canvas_name_is_served_by_its_successors(router, emu):
    gen = ImageRequest(
        "generations", "nova-canvas", {"prompt": "a boat", "n": 1, "size": "1280x720", "quality": "premium"}
    )
    result = router.call(gen, deadline=soon())
    assert result.route == f"bedrock:{CORE}" and opened(result.images[0].data).size == (1280, 720)
    assert emu.requests[-1].json["aspect_ratio"] == "16:9" and "quality" not in emu.requests[-1].json

    image = png_file((512, 512), hole=(0, 0, 100, 100))
    edit = ImageRequest("edits", "nova-canvas", {"prompt": "a hat", "n": 1, "size": "auto"}, [image])
    assert router.call(edit, deadline=soon()).route == f"bedrock:{INPAINT}"

    variation = ImageRequest("variations", "nova-canvas", {"n": 1, "size": "auto"}, [png_file((512, 512))])
    result = router.call(variation, deadline=soon())
    assert result.route == f"bedrock:{SD35}" and opened(result.images[0].data).size == (512, 512)
    sent = emu.requests[-1].json
    assert sent["mode"] == "image-to-image" and sent["prompt"] and 0 < sent["strength"] < 1
