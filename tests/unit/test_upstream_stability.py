"""Stability AI on Bedrock: request bodies and answers (the pure mapping of upstream/stability.py)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from helpers.images import png_file
from PIL import Image

from imagegw.upstream.failures import RouteFault, TransientFailure, UpstreamMalformed, UpstreamRejected
from imagegw.upstream.stability import StabilityRequest, nearest_ratio, parse_answer, stability_kind


def decoded(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def png_bytes(size=(64, 64), fmt="PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("stability.sd3-5-large-v1:0", "sd3.5"),
        ("us.stability.sd3-5-large-v1:0", "sd3.5"),
        ("stability.stable-image-core-v1:1", "core"),
        ("arn:aws:bedrock:us-west-2::foundation-model/stability.stable-image-ultra-v1:1", "ultra"),
        ("stability.stable-image-inpaint-v1:0", "inpaint"),
        ("amazon.nova-canvas-v1:0", None),
    ],
)
def test_stability_kind(model, kind):
    assert stability_kind(model) == kind


@pytest.mark.parametrize(
    ("size", "ratio"),
    [((1024, 1024), "1:1"), ((1536, 1024), "3:2"), ((1024, 1536), "2:3"), ((1920, 1080), "16:9"),
     ((2560, 1080), "21:9"), ((1280, 1024), "5:4"), ((256, 512), "9:16")],
)  # fmt: skip
def test_nearest_ratio(size, ratio):
    assert nearest_ratio(*size) == ratio


def test_generation_bodies_one_per_image_with_moving_seed():
    plan = StabilityRequest(
        "sd3.5", "generations", {"prompt": "p", "n": 3, "size": "1344x768", "seed": 4294967294}, [], None
    )
    bodies = plan.bodies()
    assert len(bodies) == 3
    expected = {"output_format": "png", "prompt": "p", "aspect_ratio": "16:9", "mode": "text-to-image"}
    assert bodies[0] == {**expected, "seed": 4294967294}
    assert [b["seed"] for b in bodies] == [4294967294, 0, 1]
    assert plan.resize_to == (1344, 768)


def test_core_has_no_mode_and_an_aspect_ratio_wins_over_the_size():
    plan = StabilityRequest(
        "core", "generations", {"prompt": "p", "size": "1024x1024", "aspect_ratio": "9:21"}, [], None
    )
    (body,) = plan.bodies()
    assert body == {"output_format": "png", "prompt": "p", "aspect_ratio": "9:21"}
    assert plan.resize_to is None


def test_auto_size_is_square_at_the_models_resolution():
    plan = StabilityRequest("ultra", "generations", {"prompt": "p", "size": "auto"}, [], None)
    assert plan.bodies()[0]["aspect_ratio"] == "1:1" and plan.resize_to is None


@pytest.mark.parametrize(
    ("fmt", "compression", "asked", "converted"),
    [
        ("png", None, "png", False),
        ("jpeg", None, "jpeg", False),
        ("jpeg", 40, "png", True),
        ("webp", None, "png", True),
    ],
)
def test_output_format_asked_and_converted(fmt, compression, asked, converted):
    params = {"prompt": "p", "output_format": fmt, "output_compression": compression}
    plan = StabilityRequest("core", "generations", params, [], None)
    assert plan.bodies()[0]["output_format"] == asked and plan.convert is converted
    out = plan.finish(png_bytes())  # the upstream's bytes are kept unless they are converted
    with Image.open(io.BytesIO(out)) as img:
        assert img.format == ({"jpeg": "JPEG", "webp": "WEBP"}[fmt] if converted else "PNG")


def test_finish_scales_to_the_client_size():
    plan = StabilityRequest("core", "generations", {"prompt": "p", "size": "1280x720"}, [], None)
    with Image.open(io.BytesIO(plan.finish(png_bytes((1344, 768))))) as img:
        assert img.size == (1280, 720)


def test_sd35_edit_is_image_to_image_of_the_first_image():
    plan = StabilityRequest("sd3.5", "edits", {"prompt": "p", "strength": 0.3}, [png_file((300, 200))], None)
    (body,) = plan.bodies()
    assert body["mode"] == "image-to-image" and body["strength"] == 0.3 and "aspect_ratio" not in body
    assert decoded(body["image"]).size == (300, 200) and decoded(body["image"]).mode == "RGB"
    default = StabilityRequest("sd3.5", "edits", {"prompt": "p"}, [png_file()], None).bodies()[0]
    assert default["strength"] == 0.7


def test_a_huge_input_is_scaled_down_before_it_is_sent():
    plan = StabilityRequest("sd3.5", "edits", {"prompt": "p"}, [png_file((4096, 2048))], None)
    width, height = decoded(plan.bodies()[0]["image"]).size
    assert width * height <= 4_194_304 and abs(width / height - 2) < 0.01


def test_inpaint_mask_is_white_where_the_openai_mask_is_transparent():
    image = png_file((128, 128))
    mask = png_file((128, 128), (0, 0, 0, 255), hole=(32, 32, 96, 96), name="mask")
    plan = StabilityRequest("inpaint", "edits", {"prompt": "p", "grow_mask": 2, "seed": 5}, [image], mask)
    (body,) = plan.bodies()
    sent = decoded(body["mask"]).convert("L")
    assert sent.getpixel((64, 64)) == 255 and sent.getpixel((5, 5)) == 0
    assert [i for i, count in enumerate(sent.histogram()) if count] == [0, 255]
    assert body["grow_mask"] == 2 and body["seed"] == 5 and "aspect_ratio" not in body and "mode" not in body


def test_inpaint_without_mask_uses_the_images_transparency_else_refuses():
    holed = png_file((128, 128), hole=(0, 0, 64, 64))
    body = StabilityRequest("inpaint", "edits", {"prompt": "p"}, [holed], None).bodies()[0]
    assert decoded(body["mask"]).convert("L").getpixel((10, 10)) == 255
    assert decoded(body["image"]).mode == "RGB"
    with pytest.raises(UpstreamRejected) as info:
        StabilityRequest("inpaint", "edits", {"prompt": "p"}, [png_file((256, 256), mode="RGB")], None)
    assert info.value.param == "mask" and info.value.status == 400
    opaque_mask = png_file((256, 256), (0, 0, 0, 255), name="mask")
    with pytest.raises(UpstreamRejected) as info:
        StabilityRequest("inpaint", "edits", {"prompt": "p"}, [png_file((256, 256))], opaque_mask)
    assert info.value.param == "mask" and info.value.code == "invalid_value"


def test_an_operation_the_model_does_not_serve_is_a_route_fault():
    with pytest.raises(RouteFault):
        StabilityRequest("core", "edits", {"prompt": "p"}, [png_file()], None)
    with pytest.raises(RouteFault):
        StabilityRequest("inpaint", "generations", {"prompt": "p"}, [], None)
    with pytest.raises(RouteFault):
        StabilityRequest("sd3.5", "variations", {}, [png_file()], None)


def answer(**doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_parse_answer():
    b64 = base64.b64encode(png_bytes()).decode()
    assert parse_answer(answer(seeds=[1], finish_reasons=[None], images=[b64])) == [png_bytes()]
    with pytest.raises(UpstreamRejected) as info:
        parse_answer(answer(finish_reasons=["Filter reason: prompt"]))
    assert info.value.code == "moderation_blocked" and info.value.status == 400
    with pytest.raises(TransientFailure):
        parse_answer(answer(finish_reasons=["Inference error"], images=[]))
    for bad in (b"{", b"[]", answer(images=[]), answer(images="x"), answer(finish_reasons="x", images=[b64])):
        with pytest.raises(UpstreamMalformed):
            parse_answer(bad)
    with pytest.raises(UpstreamMalformed):
        parse_answer(answer(images=["bm90IGFuIGltYWdl"]))
