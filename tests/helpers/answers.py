"""Checks on what the gateway answers, end to end: every image decodes, every URL downloads, every body
conforms to OpenAI's schema, every error is an OpenAI error body with an `x-request-id`."""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any
from xml.etree import ElementTree

import requests
from PIL import Image

from . import openapi

PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}
SPEC_FORMATS = frozenset({"png", "jpeg", "webp"})  # the spec's output_format enum; the SDK adds gif, svg
GPT_TOP_LEVEL = ("background", "output_format", "quality", "size")
STANDARD_SIZES = frozenset({"1024x1024", "1024x1536", "1536x1024"})


def parse_size(size: str) -> tuple[int, int]:
    width, _, height = size.partition("x")
    return int(width), int(height)


def decode_image(data: bytes, *, size: str | None, fmt: str = "png", what: str = "image") -> Any:
    """Fully decoded (pixels, not only the header), in the expected format and size.

    An SVG (gpt-image-2.5+ `output_format: svg`) is parsed as XML: its root, width and height.
    """
    if fmt == "svg":
        return svg_document(data, size=size, what=what)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == PILLOW_FORMATS[fmt], f"{what}: {image.format}, expected {fmt}"
    if size is not None:
        assert image.size == parse_size(size), f"{what}: {image.size}, expected {size}"
    return image


def svg_document(data: bytes, *, size: str | None, what: str = "svg") -> ElementTree.Element:
    root = ElementTree.fromstring(data)  # the emulator's own output: trusted
    assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg"), f"{what}: root <{root.tag}>"
    if size is not None:
        width, height = parse_size(size)
        assert (root.get("width"), root.get("height")) == (str(width), str(height)), f"{what}: {root.attrib}"
    return root


def b64_image(text: Any, *, size: str | None, fmt: str = "png", what: str = "b64_json") -> Any:
    assert isinstance(text, str) and text, f"{what}: not a non-empty string"
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise AssertionError(f"{what}: not valid base64 ({exc})") from None
    return decode_image(data, size=size, fmt=fmt, what=what)


def url_image(url: Any, *, size: str | None, fmt: str = "png") -> Any:
    assert isinstance(url, str) and url.startswith(("http://", "https://")), f"not an absolute URL: {url!r}"
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, f"GET {url} answered {response.status_code}: {response.text[:300]}"
    return decode_image(response.content, size=size, fmt=fmt, what=url)


def check_images_response(
    body: dict[str, Any],
    *,
    n: int = 1,
    size: str | None,
    fmt: str = "png",
    gpt: bool,
    as_url: bool = False,
    revised_prompt: bool = False,
) -> list[Any]:
    """An ImagesResponse as OpenAI answers it, with `n` images that decode at `size` in `fmt`.

    `size` None: any size (`auto`). GPT models: usage and the top-level background/output_format/quality/
    size; dall-e: none of them. `revised_prompt` on every image (dall-e-3) or on none.
    """
    openapi.validate(body, "ImagesResponse", open_enums=_open_enums(size, fmt))
    assert isinstance(body["created"], int)
    data = body["data"]
    assert len(data) == n, f"{len(data)} images, expected {n}"
    images = []
    for index, item in enumerate(data):
        if as_url:
            assert set(item) - {"revised_prompt"} == {"url"}, item.keys()
            images.append(url_image(item["url"], size=size, fmt=fmt))
        else:
            assert set(item) - {"revised_prompt"} == {"b64_json"}, item.keys()
            images.append(b64_image(item["b64_json"], size=size, fmt=fmt, what=f"data[{index}].b64_json"))
        if revised_prompt:
            assert isinstance(item.get("revised_prompt"), str) and item["revised_prompt"].strip()
        else:
            assert "revised_prompt" not in item, f"data[{index}]: unexpected revised_prompt"
    if gpt:
        missing = [key for key in (*GPT_TOP_LEVEL, "usage") if key not in body]
        assert not missing, f"GPT model response without {missing}"
        assert body["output_format"] == fmt
        if size is not None:
            assert body["size"] == size
        check_usage(body["usage"])
    else:
        present = [key for key in (*GPT_TOP_LEVEL, "usage") if key in body]
        assert not present, f"dall-e response with GPT-only fields {present}"
    return images


def _open_enums(size: str | None, fmt: str) -> tuple[str, ...]:
    """The spec's enums are older than the SDK's types: custom WxH sizes, gif and svg go beyond them."""
    opened = []
    if size is not None and size not in STANDARD_SIZES:
        opened.append("size")
    if fmt not in SPEC_FORMATS:
        opened.append("output_format")
    return tuple(opened)


def check_usage(usage: dict[str, Any]) -> None:
    details = usage["input_tokens_details"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens"] == details["text_tokens"] + details["image_tokens"]
    assert usage["output_tokens"] > 0


def check_stream_event(
    event: dict[str, Any], *, kind: str, size: str | None, fmt: str = "png"
) -> Image.Image:
    """One SSE event's data: ImageGenStreamEvent / ImageEditStreamEvent, its image decodes."""
    prefix = "image_edit" if kind == "edits" else "image_generation"
    name = "ImageEditStreamEvent" if kind == "edits" else "ImageGenStreamEvent"
    openapi.validate(event, name, open_enums=_open_enums(size, fmt))
    assert event["type"] in (f"{prefix}.partial_image", f"{prefix}.completed"), event["type"]
    assert event["output_format"] == fmt
    if event["type"].endswith(".completed"):
        check_usage(event["usage"])
    return b64_image(event["b64_json"], size=size, fmt=fmt, what=event["type"])


def parse_sse(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(event name, data object) per server-sent event; stops at `data: [DONE]` as the SDK does."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data_lines = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data_lines.append(line[len("data:") :].lstrip())
        if not data_lines:
            continue
        data = "\n".join(data_lines)
        if data.startswith("[DONE]"):
            break
        events.append((name, json.loads(data)))
    return events


def check_error(
    response: requests.Response,
    status: int,
    *,
    code: str | None,
    type: str = "invalid_request_error",
    param: str | None = None,
    request_id: bool = True,
) -> dict[str, Any]:
    """An OpenAI error body (exactly message/type/param/code) with the given status and an x-request-id."""
    assert response.status_code == status, (
        f"{response.status_code} (expected {status}): {response.text[:500]}"
    )
    assert response.headers.get("content-type", "").startswith("application/json")
    if request_id:
        assert response.headers.get("x-request-id", "").startswith("req_"), dict(response.headers)
    body = response.json()
    openapi.check(body, openapi.ERROR_SCHEMA, what="the OpenAI error body")
    error: dict[str, Any] = body["error"]
    assert (error["type"], error["code"], error["param"]) == (type, code, param), error
    return error
