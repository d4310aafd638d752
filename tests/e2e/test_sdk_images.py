"""The official `openai` SDK against the local stack: every catalog model generates, edits (one image, a
list, a mask, JSON image URLs), variations and streams work, and every answer is what OpenAI answers:
it parses in the SDK, conforms to the ImagesResponse / stream event schemas of OpenAI's OpenAPI spec,
and every image decodes (every URL downloads) at the requested size and format.

Kept fast: small sizes where a model allows them, quality low, n small.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import openai
import pytest
import requests
from helpers.answers import b64_image, check_images_response, check_stream_event, parse_sse
from openai.types import ImagesResponse
from PIL import Image

from imagegw.request.catalog import Catalog

CATALOG = Catalog.load()
# Dated snapshots clients send (the SDK's ImageModel list); each resolves through its entry's pattern.
SNAPSHOTS = ["gpt-image-2-2026-04-21", "gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.5-flare-2026-09-08"]
GENERATION_MODELS = [*CATALOG.serving("generations"), *SNAPSHOTS]
PROMPT = "A cute little sea otter"


def is_gpt(model: str) -> bool:
    return CATALOG.get(model).gpt


def png(width: int = 64, height: int = 64, colour: tuple[int, ...] = (30, 140, 200, 255)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def mask_png(width: int = 64, height: int = 64) -> bytes:
    """Opaque, with a fully transparent top-left quarter: the area to edit."""
    img = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    img.paste((0, 0, 0, 0), (0, 0, width // 2, height // 2))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes, mimetype: str = "image/png") -> str:
    return f"data:{mimetype};base64,{base64.b64encode(data).decode('ascii')}"


def raw_json(raw: Any) -> dict[str, Any]:
    """The body of an SDK `with_raw_response` answer, after checking the SDK parses it."""
    parsed = raw.parse()
    assert isinstance(parsed, ImagesResponse)
    assert parsed._request_id and parsed._request_id.startswith("req_")
    assert raw.headers["x-request-id"] == parsed._request_id
    body: dict[str, Any] = json.loads(raw.text)
    return body


def upstream_requests(emulator_url: str) -> list[dict[str, Any]]:
    answer = requests.get(emulator_url + "/_emulator/requests", timeout=5)
    answer.raise_for_status()
    recorded: list[dict[str, Any]] = answer.json()["requests"]
    return recorded


# ---------------------------------------------------------------------------------------------- generations


def generation_case(model: str) -> dict[str, Any]:
    if model == "dall-e-2":
        return {"size": "256x256", "n": 2}
    if model == "dall-e-3" or "bedrock" in CATALOG.get(model).listing.upstream_types:
        return {"size": "1024x1024"}  # Bedrock models: quality is not one of their parameters
    return {"size": "1024x1024", "quality": "low"}


def test_generation_models_cover_the_catalog_and_snapshots():
    assert {"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-2"} <= set(GENERATION_MODELS)
    for snapshot in SNAPSHOTS:
        assert CATALOG.get(snapshot).name == snapshot


@pytest.mark.parametrize("model", GENERATION_MODELS)
def test_generate_with_each_model(client, model):
    case = generation_case(model)
    raw = client.images.with_raw_response.generate(model=model, prompt=PROMPT, **case)
    check_images_response(
        raw_json(raw),
        n=case.get("n", 1),
        size=case["size"],
        gpt=is_gpt(model),
        as_url=not is_gpt(model),  # dall-e answers URLs by default, GPT models b64_json
        revised_prompt=model == "dall-e-3",
    )


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("gpt-image-2", "1280x720"),
        ("gpt-image-2-2026-04-21", "720x1280"),
        ("gpt-image-2.5-flare", "1152x896"),
    ],
)
def test_custom_size_comes_back_at_that_size(client, model, size):
    raw = client.images.with_raw_response.generate(model=model, prompt=PROMPT, size=size, quality="low")
    [image] = check_images_response(raw_json(raw), size=size, gpt=True)
    assert f"{image.width}x{image.height}" == size


def test_custom_size_below_the_pixel_minimum_is_a_400(client):
    # 1024x576 is divisible by 16 and 16:9, but under gpt-image-2's 655,360-pixel minimum.
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="gpt-image-2", prompt=PROMPT, size="1024x576")
    assert caught.value.code == "invalid_value"
    assert caught.value.param == "size"
    assert caught.value.request_id and caught.value.request_id.startswith("req_")


@pytest.mark.parametrize(
    ("fmt", "extra"),
    [
        ("png", {"background": "transparent"}),
        ("jpeg", {"output_compression": 60}),
        ("webp", {"background": "opaque", "output_compression": 80}),
    ],
)
def test_output_formats(client, fmt, extra):
    raw = client.images.with_raw_response.generate(
        model="gpt-image-1.5", prompt=PROMPT, size="1024x1024", quality="low", output_format=fmt, **extra
    )
    body = raw_json(raw)
    [image] = check_images_response(body, size="1024x1024", fmt=fmt, gpt=True)
    if extra.get("background") == "transparent":
        assert body["background"] == "transparent"
        assert image.mode == "RGBA"


def test_animated_gif_output(client):
    # gpt-image-2.5+ (preview): `output_format: gif` with `frame_count` frames; the SDK types it.
    raw = client.images.with_raw_response.generate(
        model="gpt-image-2.5-sunburst",
        prompt=PROMPT,
        size="1024x640",
        quality="low",
        output_format="gif",
        frame_count=3,
    )
    [image] = check_images_response(raw_json(raw), size="1024x640", fmt="gif", gpt=True)
    assert image.n_frames == 3


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_svg_output(client, response_format):
    raw = client.images.with_raw_response.generate(
        model="gpt-image-2.6",
        prompt="A logo of a sea otter",
        size="1024x1024",
        quality="low",
        output_format="svg",
        response_format=response_format,
    )
    body = raw_json(raw)
    check_images_response(body, size="1024x1024", fmt="svg", gpt=True, as_url=response_format == "url")
    if response_format == "url":
        served = requests.get(body["data"][0]["url"], timeout=10)
        assert served.headers["content-type"] == "image/svg+xml"


def test_response_format_url_for_a_gpt_model(client):
    raw = client.images.with_raw_response.generate(
        model="gpt-image-1", prompt=PROMPT, size="1024x1024", quality="low", response_format="url"
    )
    check_images_response(raw_json(raw), size="1024x1024", gpt=True, as_url=True)


def test_response_format_b64_json_for_dall_e_3(client):
    raw = client.images.with_raw_response.generate(
        model="dall-e-3",
        prompt=PROMPT,
        size="1024x1792",
        quality="hd",
        style="natural",
        response_format="b64_json",
    )
    check_images_response(raw_json(raw), size="1024x1792", gpt=False, revised_prompt=True)


def test_default_model_is_dall_e_2(client):
    raw = client.images.with_raw_response.generate(prompt=PROMPT, size="256x256")
    check_images_response(raw_json(raw), size="256x256", gpt=False, as_url=True)


def test_sdk_error_carries_the_openai_error_and_request_id(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="no-such-model", prompt=PROMPT)
    error = caught.value
    assert error.status_code == 404
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert error.request_id and error.request_id.startswith("req_")


# ---------------------------------------------------------------------------------------------- edits


def test_edit_one_image(client, emulator_control):
    raw = client.images.with_raw_response.edit(
        model="gpt-image-1.5",
        image=("otter.png", png(), "image/png"),
        prompt="Add a red beret",
        size="1024x1024",
        quality="low",
    )
    check_images_response(raw_json(raw), size="1024x1024", gpt=True)
    [upstream] = upstream_requests(emulator_control)
    assert [f[0] for f in upstream["files"]] == ["image"]


def test_edit_with_a_list_of_four_images(client, emulator_control):
    # A list goes as four `image[]` parts; raw bytes arrive as application/octet-stream.
    colours = [(255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255), (255, 255, 0, 255)]
    raw = client.images.with_raw_response.edit(
        model="gpt-image-1",
        image=[png(colour=colour) for colour in colours],
        prompt="Create an elegant gift basket containing these four items",
        size="1536x1024",
        quality="low",
    )
    body = raw_json(raw)
    check_images_response(body, size="1536x1024", gpt=True)
    assert body["usage"]["input_tokens_details"]["image_tokens"] > 0
    [upstream] = upstream_requests(emulator_control)
    assert [f[0] for f in upstream["files"]] == ["image[]"] * 4


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-2"])
def test_edit_with_a_mask(client, emulator_control, model):
    raw = client.images.with_raw_response.edit(
        model=model,
        image=("room.png", png(), "image/png"),
        mask=("mask.png", mask_png(), "image/png"),
        prompt="Add a window",
        size="1024x1024",
        quality="low",
        output_format="jpeg",
    )
    check_images_response(raw_json(raw), size="1024x1024", fmt="jpeg", gpt=True)
    [upstream] = upstream_requests(emulator_control)
    assert sorted(f[0] for f in upstream["files"]) == ["image", "mask"]


def test_edit_forwards_markup_and_svg_options(client, emulator_control):
    # gpt-image-2.5+: the markup file and the `svg` object (multipart `svg[...]` fields) reach the upstream.
    raw = client.images.with_raw_response.edit(
        model="gpt-image-2.5-flare",
        image=("photo.png", png(), "image/png"),
        markup=("arrows.png", mask_png(), "image/png"),
        prompt="Follow the arrows",
        size="1024x1024",
        quality="low",
        output_format="svg",
        svg={"model": "gpt-5", "reasoning": {"effort": "low"}},
    )
    check_images_response(raw_json(raw), size="1024x1024", fmt="svg", gpt=True)
    [upstream] = upstream_requests(emulator_control)
    assert sorted(f[0] for f in upstream["files"]) == ["image", "markup"]
    assert upstream["form"]["svg[model]"] == "gpt-5"
    assert upstream["form"]["svg[reasoning][effort]"] == "low"
    assert "svg" not in upstream["form"]


def test_dall_e_2_edit_with_a_mask(client):
    raw = client.images.with_raw_response.edit(
        model="dall-e-2",
        image=("otter.png", png(), "image/png"),
        mask=("mask.png", mask_png(), "image/png"),
        prompt="A cute little sea otter wearing a beret",
        size="256x256",
        n=2,
    )
    check_images_response(raw_json(raw), n=2, size="256x256", gpt=False, as_url=True)


def test_dall_e_2_edit_transparency_as_mask_b64(client):
    raw = client.images.with_raw_response.edit(
        image=("otter.png", mask_png(), "image/png"),  # no mask: the image's own transparency marks the area
        prompt="A cute little sea otter wearing a beret",
        size="512x512",
        response_format="b64_json",
    )
    check_images_response(raw_json(raw), size="512x512", gpt=False)


def test_json_edit_over_raw_http(api, emulator_control):
    response = api(
        "/images/edits",
        json={
            "model": "gpt-image-2",
            "prompt": "Put both in one picture",
            "images": [{"image_url": data_url(png())}, {"image_url": data_url(png(colour=(9, 9, 9, 255)))}],
            "mask": {"image_url": data_url(mask_png())},
            "size": "1024x1536",
            "quality": "low",
            "output_format": "webp",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"].startswith("req_")
    check_images_response(response.json(), size="1024x1536", fmt="webp", gpt=True)
    [upstream] = upstream_requests(emulator_control)
    assert len(upstream["files"]) == 3  # two images and the mask, forwarded as files


def test_json_edit_through_the_sdk(client):
    # openai 3.57 has no typed JSON edit (images.edit always sends multipart); its generic `post` sends the
    # JSON body the way the API reference documents it.
    result = client.post(
        "/images/edits",
        cast_to=ImagesResponse,
        body={
            "model": "gpt-image-1.5",
            "prompt": "Add a watercolor effect to this image",
            "images": [{"image_url": data_url(png())}],
            "size": "1024x1024",
            "quality": "low",
        },
    )
    assert result._request_id and result._request_id.startswith("req_")
    check_images_response(result.to_dict(), size="1024x1024", gpt=True)


# ---------------------------------------------------------------------------------------------- variations


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_create_variation(client):
    raw = client.images.with_raw_response.create_variation(
        image=("otter.png", png(), "image/png"), n=2, size="256x256"
    )
    check_images_response(raw_json(raw), n=2, size="256x256", gpt=False, as_url=True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_create_variation_b64_json(client):
    raw = client.images.with_raw_response.create_variation(
        model="dall-e-2", image=png(), size="512x512", response_format="b64_json"
    )
    check_images_response(raw_json(raw), size="512x512", gpt=False)


# ---------------------------------------------------------------------------------------------- streaming


def stream_events(stream: Any) -> list[dict[str, Any]]:
    events = [event.to_dict() for event in stream]
    assert events, "the stream carried no event"
    return events


def test_stream_generation(client):
    stream = client.images.generate(
        model="gpt-image-1", prompt=PROMPT, size="1024x1024", quality="low", stream=True, partial_images=2
    )
    events = stream_events(stream)
    assert [e["type"] for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [e["partial_image_index"] for e in events[:2]] == [0, 1]
    for event in events:
        check_stream_event(event, kind="generations", size="1024x1024")


def test_stream_generation_custom_size_webp(client):
    stream = client.images.generate(
        model="gpt-image-2",
        prompt=PROMPT,
        size="1280x720",
        quality="low",
        output_format="webp",
        stream=True,
        partial_images=1,
    )
    events = stream_events(stream)
    assert [e["type"] for e in events] == ["image_generation.partial_image", "image_generation.completed"]
    for event in events:
        check_stream_event(event, kind="generations", size="1280x720", fmt="webp")


def test_stream_edit(client):
    stream = client.images.edit(
        model="gpt-image-1.5",
        image=("otter.png", png(), "image/png"),
        prompt="Add a red beret",
        size="1024x1024",
        quality="low",
        stream=True,
        partial_images=2,
    )
    events = stream_events(stream)
    assert [e["type"] for e in events] == [
        "image_edit.partial_image",
        "image_edit.partial_image",
        "image_edit.completed",
    ]
    for event in events:
        check_stream_event(event, kind="edits", size="1024x1024")


def test_stream_of_two_images_reports_each_image_on_its_own(client):
    # Clients add up the completed events' usage: each must be its own image's, not the request's total.
    # Each image's partials come before it, indexed from 0 per image.
    def stream(n: int) -> list[dict[str, Any]]:
        return stream_events(
            client.images.generate(
                model="gpt-image-1.5",
                prompt=PROMPT,
                size="1024x1024",
                quality="low",
                stream=True,
                partial_images=1,
                n=n,
            )
        )

    [_, single] = stream(1)
    pair = stream(2)
    assert [(e["type"], e.get("partial_image_index")) for e in pair] == [
        ("image_generation.partial_image", 0),
        ("image_generation.completed", None),
    ] * 2
    for event in pair:
        check_stream_event(event, kind="generations", size="1024x1024")
        if event["type"] == "image_generation.completed":
            assert event["usage"] == single["usage"]


def test_stream_over_raw_http(api):
    response = api(
        "/images/generations",
        json={
            "model": "gpt-image-1-mini",
            "prompt": PROMPT,
            "quality": "low",
            "stream": True,
            "partial_images": 1,
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"].startswith("req_")
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["image_generation.partial_image", "image_generation.completed"]
    for name, data in events:
        assert data["type"] == name
        check_stream_event(data, kind="generations", size="1024x1024")


def test_stream_without_partial_images_is_one_completed_event(client):
    events = stream_events(
        client.images.generate(
            model="gpt-image-2", prompt=PROMPT, size="1024x1024", quality="low", stream=True
        )
    )
    assert [e["type"] for e in events] == ["image_generation.completed"]
    b64_image(events[0]["b64_json"], size="1024x1024")
