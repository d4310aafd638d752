"""Translation of requests for retired models (shipped routes.json defaults) and of results back."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imagegw.domain import GeneratedImage, ImageFile, ImageRequest, UpstreamResult
from imagegw.request.catalog import Catalog
from imagegw.upstream import PROVIDER_TYPES, parse_routes, shipped_routes_document
from imagegw.upstream.config import Route
from imagegw.upstream.translation import finish, fit_to, prepare


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="module")
def shipped():
    return parse_routes(shipped_routes_document(), PROVIDER_TYPES)


def route_for(shipped, model: str, operation: str = "generations") -> Route:
    return shipped.routes_for(model, operation)[0]


def png(size=(64, 64), mode="RGBA") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (10, 20, 30, 0) if mode == "RGBA" else (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


def image_file(field="image", size=(64, 64)) -> ImageFile:
    return ImageFile(
        field, png(size), filename="otter.png", format="png", width=size[0], height=size[1], mode="RGBA"
    )


DALLE3 = {
    "prompt": "an otter",
    "n": 1,
    "size": "1792x1024",
    "quality": "hd",
    "style": "natural",
    "response_format": "url",
    "user": "u1",
}


def test_dall_e_3_goes_to_the_current_model_with_translated_params(shipped, catalog):
    plan = prepare(
        ImageRequest("generations", "dall-e-3", dict(DALLE3)), route_for(shipped, "dall-e-3"), catalog
    )
    call = plan.call
    assert (call.operation, call.model, call.stream) == ("generations", "gpt-image-1.5", False)
    assert call.params == {
        "prompt": "an otter\n\nStyle: natural, realistic, understated.",
        "n": 1,
        "size": "1536x1024",
        "quality": "high",
        "user": "u1",
    }
    assert plan.resize_to == (1792, 1024)
    assert plan.revised_prompt == call.params["prompt"]


@pytest.mark.parametrize(
    ("size", "quality", "style", "sent_size", "sent_quality", "style_words"),
    [
        ("1024x1024", "standard", "vivid", "1024x1024", "medium", "vivid, dramatic"),
        ("1024x1792", "hd", "vivid", "1024x1536", "high", "vivid, dramatic"),
        ("1792x1024", "auto", "natural", "1536x1024", "auto", "natural"),
    ],
)
def test_dall_e_3_mappings(shipped, catalog, size, quality, style, sent_size, sent_quality, style_words):
    params = {**DALLE3, "size": size, "quality": quality, "style": style}
    plan = prepare(ImageRequest("generations", "dall-e-3", params), route_for(shipped, "dall-e-3"), catalog)
    assert plan.call.params["size"] == sent_size and plan.call.params["quality"] == sent_quality
    assert style_words in plan.call.params["prompt"] and "style" not in plan.call.params
    assert plan.resize_to == (None if size == sent_size else tuple(int(x) for x in size.split("x")))


def test_dall_e_2_small_sizes_go_up_and_come_back_down(shipped, catalog):
    params = {"prompt": "p", "n": 3, "size": "256x256", "quality": "standard", "response_format": "b64_json"}
    plan = prepare(ImageRequest("generations", "dall-e-2", params), route_for(shipped, "dall-e-2"), catalog)
    assert plan.call.params == {"prompt": "p", "n": 3, "size": "1024x1024", "quality": "low"}
    assert plan.resize_to == (256, 256) and plan.revised_prompt is None


def test_dall_e_2_variation_becomes_an_edit_with_a_variation_prompt(shipped, catalog):
    request = ImageRequest(
        "variations", "dall-e-2", {"n": 2, "size": "512x512", "response_format": "url"}, images=[image_file()]
    )
    plan = prepare(request, route_for(shipped, "dall-e-2", "variations"), catalog)
    assert plan.call.operation == "edits" and plan.call.model == "gpt-image-1.5"
    assert plan.call.params["prompt"].startswith("Create a variation of this image")
    assert plan.call.params["size"] == "1024x1024" and plan.call.params["n"] == 2
    assert [i.filename for i in plan.call.images] == ["otter.png"] and plan.call.mask is None
    assert plan.resize_to == (512, 512)


def test_dall_e_2_edit_without_mask_sends_the_image_as_its_own_mask(shipped, catalog):
    request = ImageRequest(
        "edits", "dall-e-2", {"prompt": "add a hat", "n": 1, "size": "1024x1024"}, images=[image_file()]
    )
    plan = prepare(request, route_for(shipped, "dall-e-2", "edits"), catalog)
    assert plan.call.mask is not None and plan.call.mask.data == request.images[0].data
    assert plan.call.mask.field_name == "mask"


def test_dall_e_2_edit_keeps_the_clients_mask(shipped, catalog):
    mask = image_file("mask")
    request = ImageRequest("edits", "dall-e-2", {"prompt": "p", "n": 1}, images=[image_file()], mask=mask)
    assert prepare(request, route_for(shipped, "dall-e-2", "edits"), catalog).call.mask is mask


def test_gpt_image_1_goes_to_gpt_image_1_5_unchanged(shipped, catalog):
    params = {
        "prompt": "p",
        "n": 1,
        "size": "1536x1024",
        "quality": "high",
        "background": "transparent",
        "output_format": "webp",
        "response_format": "b64_json",
        "stream": False,
        "input_fidelity": "high",
    }
    request = ImageRequest("edits", "gpt-image-1", params, images=[image_file(), image_file("image[1]")])
    plan = prepare(request, route_for(shipped, "gpt-image-1", "edits"), catalog)
    assert plan.call.model == "gpt-image-1.5"
    assert plan.call.params == {
        "prompt": "p",
        "n": 1,
        "size": "1536x1024",
        "quality": "high",
        "background": "transparent",
        "output_format": "webp",
        "input_fidelity": "high",
    }
    assert len(plan.call.images) == 2 and plan.resize_to is None and plan.revised_prompt is None


def test_gpt_models_never_get_response_format_and_stream_travels_as_a_flag(shipped, catalog):
    params = {"prompt": "p", "n": 1, "response_format": "url", "stream": True, "partial_images": 2}
    plan = prepare(
        ImageRequest("generations", "gpt-image-2", params), route_for(shipped, "gpt-image-2"), catalog
    )
    assert plan.call.model == "gpt-image-2"  # the wildcard route serves it as itself
    assert plan.call.stream is True
    assert plan.call.params == {"prompt": "p", "n": 1, "partial_images": 2}


def test_dall_e_upstream_is_asked_for_b64_json(catalog):
    route = Route(provider="other-gateway", model="dall-e-2")
    params = {"prompt": "p", "n": 1, "size": "256x256", "response_format": "url"}
    plan = prepare(ImageRequest("generations", "dall-e-2", params), route, catalog)
    assert plan.call.params["response_format"] == "b64_json"


def test_params_the_target_does_not_take_are_dropped(catalog):
    route = Route(provider="p", model="gpt-image-2")
    params = {"prompt": "p", "n": 1, "input_fidelity": "high", "quality": "high"}
    plan = prepare(ImageRequest("edits", "gpt-image-1", params, images=[image_file()]), route, catalog)
    assert "input_fidelity" not in plan.call.params and plan.call.params["quality"] == "high"


def test_markup_goes_to_an_upstream_model_that_takes_it(shipped, catalog):
    markup = image_file("markup")
    request = ImageRequest("edits", "gpt-image-2.5", {"prompt": "p"}, images=[image_file()], markup=markup)
    assert prepare(request, route_for(shipped, "gpt-image-2.5", "edits"), catalog).call.markup is markup
    unknown = prepare(request, Route(provider="azure", model="my-deployment"), catalog)
    assert unknown.call.markup is markup  # an upstream-only name: sent as it is, like its parameters
    older = prepare(request, Route(provider="p", model="gpt-image-2"), catalog)
    assert older.call.markup is None  # like a parameter the target does not take


def test_unknown_upstream_model_gets_params_as_they_are(catalog):
    route = Route(provider="azure", model="my-deployment-name")
    params = {"prompt": "p", "n": 1, "quality": "high", "response_format": "url"}
    plan = prepare(ImageRequest("generations", "gpt-image-1.5", params), route, catalog)
    assert plan.call.params == {"prompt": "p", "n": 1, "quality": "high"}


# ----- back to the client ----------------------------------------------------------------------------


def test_finish_resizes_to_the_clients_size_and_fills_revised_prompt(shipped, catalog):
    plan = prepare(
        ImageRequest("generations", "dall-e-3", dict(DALLE3)), route_for(shipped, "dall-e-3"), catalog
    )
    upstream = UpstreamResult(
        [GeneratedImage(png((1536, 1024), "RGB"))], usage={"total_tokens": 5}, meta={"size": "1536x1024"}
    )
    result = finish(upstream, plan)
    with Image.open(io.BytesIO(result.images[0].data)) as img:
        assert img.size == (1792, 1024) and img.format == "PNG"
    assert result.images[0].revised_prompt == plan.call.params["prompt"]
    assert result.meta["size"] == "1792x1024" and result.usage == {"total_tokens": 5}


def test_finish_keeps_the_upstreams_revised_prompt(shipped, catalog):
    plan = prepare(
        ImageRequest("generations", "dall-e-3", {**DALLE3, "size": "1024x1024"}),
        route_for(shipped, "dall-e-3"),
        catalog,
    )
    result = finish(UpstreamResult([GeneratedImage(png((1024, 1024)), "upstream's own")]), plan)
    assert result.images[0].revised_prompt == "upstream's own"


def test_fit_to_keeps_format_and_returns_same_bytes_when_size_matches():
    data = png((32, 32))
    assert fit_to(data, (32, 32)) is data
    out = io.BytesIO()
    Image.new("RGB", (100, 50), (9, 9, 9)).save(out, format="JPEG")
    with Image.open(io.BytesIO(fit_to(out.getvalue(), (40, 40)))) as img:
        assert (img.size, img.format) == ((40, 40), "JPEG")
