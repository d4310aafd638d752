"""The Bedrock models of the catalog (Stability AI's, and the retired Nova Canvas name): their rules are
checked before any upstream call, with OpenAI-format errors."""

from __future__ import annotations

import pytest
from helpers.builders import file, json_request, multipart_request
from helpers.images import jpeg, png

from imagegw.domain import HttpRequest, ImageRequest
from imagegw.errors import ApiError
from imagegw.request.catalog import Catalog
from imagegw.request.parsing import parse_request
from imagegw.request.validation import validate

CATALOG = Catalog.load()
STABILITY = ["sd3.5-large", "stable-image-core", "stable-image-ultra"]


def run(request: HttpRequest) -> ImageRequest:
    operation = request.path.rsplit("/", 1)[-1]
    return validate(parse_request(operation, request), CATALOG)  # type: ignore[arg-type]


def gen(**body: object) -> HttpRequest:
    return json_request("generations", body)


def refused(request: HttpRequest) -> ApiError:
    with pytest.raises(ApiError) as info:
        run(request)
    return info.value


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("stability.sd3-5-large-v1:0", "sd3.5-large"),
        ("stability.stable-image-core-v1:1", "stable-image-core"),
        ("stability.stable-image-ultra-v1:1", "stable-image-ultra"),
        ("amazon.nova-canvas-v1:0", "nova-canvas"),
    ],
)
def test_the_bedrock_model_id_is_an_alias_that_keeps_its_name(alias, name):
    spec = CATALOG.get(alias)
    assert spec.name == alias and spec.canonical == name
    assert run(gen(model=alias, prompt="x")).model == alias


def test_listing_fields():
    assert CATALOG.get("nova-canvas").listing.retired == "2026-09-30"
    assert CATALOG.get("nova-canvas").listing.owned_by == "amazon"
    for name in STABILITY:
        listing = CATALOG.get(name).listing
        assert listing.owned_by == "stability-ai" and listing.upstream_types == {"bedrock"}
        assert listing.retired is None and listing.created > 0
    # identity is never inherited through `extends`
    assert CATALOG.get("gpt-image-1-mini").listing.retired is None
    assert CATALOG.get("stable-image-ultra").listing.aliases == ("stability.stable-image-ultra-v1:1",)


@pytest.mark.parametrize("model", STABILITY)
def test_stability_generation_defaults_and_extensions(model):
    req = run(gen(model=model, prompt="an otter", seed=42, negative_prompt="blur", output_format="webp"))
    assert req.params["seed"] == 42 and req.params["negative_prompt"] == "blur"
    assert req.params["size"] == "1024x1024" and req.params["n"] == 1
    assert req.params["response_format"] == "url"


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"seed": -1}, 400, "integer_below_min_value", "seed"),
        ({"seed": 4294967295}, 400, "integer_above_max_value", "seed"),
        ({"seed": "7"}, 400, "invalid_type", "seed"),
        ({"negative_prompt": "x" * 10001}, 400, "string_above_max_length", "negative_prompt"),
        ({"n": 5}, 400, "integer_above_max_value", "n"),
        ({"aspect_ratio": "4:3", "size": "auto"}, 400, "invalid_value", "aspect_ratio"),
        ({"aspect_ratio": "16:9", "size": "1024x1024"}, 400, "invalid_value", "aspect_ratio"),
        ({"size": "3000x1000"}, 400, "invalid_value", "size"),
        ({"size": "4096x4096"}, 400, "invalid_value", "size"),
        ({"output_format": "gif"}, 400, "invalid_value", "output_format"),
        ({"output_compression": 50}, 400, "invalid_value", "output_compression"),
        ({"quality": "hd"}, 400, "unknown_parameter", "quality"),
        ({"strength": 0.5}, 400, "unknown_parameter", "strength"),
        ({"prompt": "x" * 10001}, 400, None, "prompt"),
    ],
)
def test_stability_generation_rules(body, status, code, param):
    error = refused(gen(**{"model": "sd3.5-large", "prompt": "x", **body}))
    assert (error.status, error.param) == (status, param)
    if code is not None:
        assert error.code == code


def test_an_aspect_ratio_alone_is_accepted_and_a_custom_size_within_the_rule():
    assert (
        run(gen(model="stable-image-ultra", prompt="x", aspect_ratio="21:9")).params["aspect_ratio"] == "21:9"
    )
    assert run(gen(model="stable-image-core", prompt="x", size="1280x720")).params["size"] == "1280x720"


def test_sd35_edit_strength_is_a_number_from_0_to_1():
    image = file(png(256, 256, "RGB"), "otter.png")
    ok = run(
        multipart_request(
            "edits", {"model": "sd3.5-large", "image": image, "prompt": "x", "strength": "0.25"}
        )
    )
    assert ok.params["strength"] == 0.25 and ok.params["size"] == "auto"  # an edit keeps the input's size
    for value, code in (
        ("1.5", "decimal_above_max_value"),
        ("-0.1", "decimal_below_min_value"),
        ("x", "invalid_type"),
    ):
        error = refused(
            multipart_request(
                "edits", {"model": "sd3.5-large", "image": image, "prompt": "x", "strength": value}
            )
        )
        assert (error.param, error.code) == ("strength", code)
    error = refused(json_request("edits", {"model": "sd3.5-large", "prompt": "x", "strength": True}))
    assert error.status in (400, 415)


def test_every_stability_model_generates_and_ultra_does_not_edit():
    for model in STABILITY:
        assert CATALOG.get(model).serves("generations")
    image = file(png(256, 256), "otter.png")
    error = refused(
        multipart_request("edits", {"model": "stable-image-ultra", "image": image, "prompt": "x"})
    )
    assert (error.status, error.code, error.param) == (400, "invalid_value", "model")
    # there is no separate edit-only name: inpainting is stable-image-core's masked edit
    assert refused(gen(model="stable-image-inpaint", prompt="x")).status == 404


def test_core_edits_are_masked_edits_with_grow_mask():
    rgba = file(png(256, 256), "otter.png")
    req = run(
        multipart_request(
            "edits", {"model": "stable-image-core", "image": rgba, "prompt": "x", "grow_mask": "3"}
        )
    )
    assert req.params["grow_mask"] == 3 and req.params["size"] == "auto"
    assert "strength" not in CATALOG.get("stable-image-core").params_for("edits")
    rgb = file(jpeg(256, 256), "otter.jpg", "image/jpeg")
    error = refused(multipart_request("edits", {"model": "stable-image-core", "image": rgb, "prompt": "x"}))
    assert error.status == 400 and error.param in ("image", "mask")
    mask = file(png(256, 256), "mask.png")
    ok = run(
        multipart_request("edits", {"model": "stable-image-core", "image": rgb, "mask": mask, "prompt": "x"})
    )
    assert ok.mask is not None
    error = refused(
        multipart_request(
            "edits", {"model": "stable-image-core", "image": rgba, "prompt": "x", "grow_mask": "21"}
        )
    )
    assert (error.param, error.code) == ("grow_mask", "integer_above_max_value")
    # generations keep their own size default and take no grow_mask
    assert run(gen(model="stable-image-core", prompt="x")).params["size"] == "1024x1024"
    error = refused(gen(model="stable-image-core", prompt="x", grow_mask=3))
    assert (error.status, error.param) == (400, "grow_mask")


def test_nova_canvas_keeps_its_own_rules():
    req = run(gen(model="nova-canvas", prompt="x", quality="premium", cfg_scale=6.5, seed=3))
    assert req.params["quality"] == "premium" and req.params["cfg_scale"] == 6.5
    assert refused(gen(model="nova-canvas", prompt="x" * 1025)).param == "prompt"
    assert refused(gen(model="nova-canvas", prompt="x", cfg_scale=11)).code == "decimal_above_max_value"
    assert refused(gen(model="nova-canvas", prompt="x", size="4096x256")).param == "size"
    image = file(png(512, 512), "otter.png")
    var = run(
        multipart_request(
            "variations", {"model": "nova-canvas", "image": image, "similarity_strength": "0.5"}
        )
    )
    assert var.params["similarity_strength"] == 0.5 and var.params["size"] == "auto"
    error = refused(
        multipart_request(
            "variations", {"model": "nova-canvas", "image": image, "similarity_strength": "0.1"}
        )
    )
    assert (error.param, error.code) == ("similarity_strength", "decimal_below_min_value")
