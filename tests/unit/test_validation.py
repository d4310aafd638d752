"""The table-driven validation suite: requests as API Gateway delivers them -> parse_request -> validate.

Each error case asserts the HTTP status, the OpenAI `code` and `param`, and (where the contract gives
OpenAI's wording, or where our own wording matters) a fragment of the message. The positive cases run every
curl example of the seed and check the documented defaults.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from helpers.builders import file, json_request, multipart_request
from helpers.images import (
    corrupt_png,
    gif,
    jpeg,
    padded,
    palette_png_with_transparency,
    png,
    png_header_only,
    truncated_png,
    webp,
)

from imagegw.domain import HttpRequest, ImageRequest
from imagegw.errors import ApiError, InvalidRequest
from imagegw.request.catalog import Catalog
from imagegw.request.image_urls import FetchError, resolve_image_urls
from imagegw.request.parsing import parse_request
from imagegw.request.validation import validate

CATALOG = Catalog.load()
MB = 1024 * 1024
GPT_SIZES = "Supported values are: '1024x1024', '1024x1536', '1536x1024', and 'auto'."
MIMETYPES = "Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'."

# https URLs a fake fetcher serves (no network in unit tests).
URLS = {
    "https://img.example/otter.png": png(256, 256),
    "https://img.example/otter.jpg": jpeg(256, 256),
    "https://img.example/text.txt": b"hello, not an image",
}


def fake_fetcher(url: str, max_bytes: int) -> bytes:
    if url not in URLS:
        raise FetchError("the server answered HTTP 404.")
    return URLS[url]


def run(request: HttpRequest) -> ImageRequest:
    """What the service does: parse, fetch image URLs (faked), validate."""
    operation = request.path.rsplit("/", 1)[-1]
    raw = parse_request(operation, request)  # type: ignore[arg-type]
    raw = resolve_image_urls(raw, fake_fetcher, catalog=CATALOG)
    return validate(raw, CATALOG)


def gen(**body: object) -> HttpRequest:
    return json_request("generations", body)


def edit(fields: dict | list) -> HttpRequest:
    return multipart_request("edits", fields)


def json_edit(**body: object) -> HttpRequest:
    return json_request("edits", body)


def var(fields: dict | list) -> HttpRequest:
    return multipart_request("variations", fields)


OTTER = file(png(256, 256), "otter.png")  # square RGBA PNG: a valid dall-e-2 edit without mask
MASK = file(png(256, 256), "mask.png")
RGB_SQUARE = file(png(256, 256, "RGB"), "rgb.png")
LONG = "x" * 32001


@dataclass
class Bad:
    id: str
    request: Callable[[], HttpRequest]
    status: int
    code: str | None
    param: str | None
    fragment: str = ""


NON_UTF8_CT = "multipart/form-data; boundary=b0"
NON_UTF8_MULTIPART = b'--b0\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n\xff\xfe\r\n--b0--\r\n'


# fmt: off
BAD: list[Bad] = [
    # ---- body and content type
    Bad("empty-body", lambda: json_request("generations", b""), 400, "missing_required_parameter", "prompt",
        "Missing required parameter: 'prompt'."),
    Bad("empty-object", lambda: gen(), 400, "missing_required_parameter", "prompt"),
    Bad("malformed-json", lambda: json_request("generations", '{"prompt": '), 400, "invalid_json", None,
        "We could not parse the JSON body of your request."),
    Bad("json-array", lambda: json_request("generations", [1, 2]), 400, "invalid_type", None,
        "expected an object, but got an array instead"),
    Bad("json-string", lambda: json_request("generations", '"a prompt"'), 400, "invalid_type", None,
        "got a string"),
    Bad("json-number", lambda: json_request("generations", "42"), 400, "invalid_type", None,
        "got an integer"),
    Bad("json-null", lambda: json_request("generations", "null"), 400, "invalid_type", None, "got null"),
    Bad("non-utf8", lambda: json_request("generations", b'{"prompt": "\xff\xfe"}'), 400, "invalid_json",
        None),
    Bad("deep-nesting", lambda: json_request("generations", "[" * 100_000 + "]" * 100_000), 400,
        "invalid_json", None),
    Bad("1e999", lambda: json_request("generations", '{"prompt": "x", "n": 1e999}'), 400, "invalid_json",
        None),
    Bad("nan", lambda: json_request("generations", '{"prompt": "x", "n": NaN}'), 400, "invalid_json", None),
    Bad("huge-int", lambda: json_request("generations", '{"prompt": "x", "n": ' + "9" * 5000 + "}"), 400,
        "invalid_json", None),
    Bad("text-plain", lambda: json_request("generations", '{"prompt": "x"}', content_type="text/plain"), 415,
        "unsupported_media_type", None, "Unsupported Content-Type 'text/plain'"),
    Bad("form-urlencoded", lambda: json_request("generations", "prompt=x",
        content_type="application/x-www-form-urlencoded"), 415, "unsupported_media_type", None),
    Bad("multipart-generations", lambda: multipart_request("generations", {"prompt": "x"}), 415,
        "unsupported_media_type", None, "application/json"),
    Bad("too-large", lambda: json_request("generations", b" " * (6 * MB + 1)), 413, "request_too_large", None,
        "image_url"),
    # ---- model
    Bad("unknown-model", lambda: gen(model="foo", prompt="x"), 404, "model_not_found", "model",
        "The model 'foo' does not exist or you do not have access to it."),
    Bad("model-int", lambda: gen(model=3, prompt="x"), 400, "invalid_type", "model",
        "Invalid type for 'model': expected a string, but got an integer instead."),
    Bad("model-list", lambda: gen(model=["dall-e-3"], prompt="x"), 400, "invalid_type", "model", "an array"),
    Bad("model-huge", lambda: gen(model="m" * 100_000, prompt="x"), 404, "model_not_found", "model",
        "mmm..."),
    Bad("unknown-snapshot", lambda: gen(model="gpt-image-2-2026", prompt="x"), 404, "model_not_found",
        "model"),
    Bad("dall-e-3-edits", lambda: edit({"model": "dall-e-3", "image": OTTER, "prompt": "x"}), 400,
        "invalid_value", "model", "Invalid value: 'dall-e-3'. Supported values are: 'dall-e-2'"),
    Bad("gpt-variations", lambda: var({"model": "gpt-image-1", "image": OTTER}), 400, "invalid_value",
        "model",
        "Supported values are: 'dall-e-2' and 'nova-canvas'."),
    # ---- prompt
    Bad("prompt-int", lambda: gen(prompt=5), 400, "invalid_type", "prompt",
        "Invalid type for 'prompt': expected a string, but got an integer instead."),
    Bad("prompt-empty", lambda: gen(prompt=""), 400, "empty_string", "prompt"),
    Bad("prompt-null", lambda: gen(prompt=None), 400, "missing_required_parameter", "prompt"),
    # an unpaired surrogate escape is valid JSON but not Unicode: no upstream can take it
    Bad("prompt-lone-surrogate", lambda: json_request("generations",
        b'{"model": "dall-e-3", "prompt": "ot\\ud800"}'), 400, "invalid_value", "prompt",
        "not valid Unicode"),
    Bad("user-lone-surrogate", lambda: gen(model="gpt-image-1", prompt="otter", user="\udfff"), 400,
        "invalid_value", "user"),
    Bad("svg-model-lone-surrogate", lambda: gen(model="gpt-image-2.5", prompt="otter", output_format="svg",
        svg={"model": "\ud83e"}), 400, "invalid_value", "svg.model"),
    Bad("prompt-long-dall-e-2", lambda: gen(prompt="x" * 1192), 400, None, "prompt",
        "Prompt must be length 1000 or less. Your prompt length is 1192. Please reduce your prompt length."),
    Bad("prompt-long-dall-e-3", lambda: gen(model="dall-e-3", prompt="x" * 4001), 400, None, "prompt",
        "Prompt must be length 4000 or less. Your prompt length is 4001."),
    Bad("prompt-long-gpt", lambda: gen(model="gpt-image-1", prompt=LONG), 400, None, "prompt",
        "Prompt must be length 32000 or less."),
    Bad("prompt-long-edit", lambda: edit({"image": OTTER, "prompt": "y" * 1001}), 400, None, "prompt",
        "length 1000 or less"),
    # ---- n
    Bad("n-zero", lambda: gen(prompt="x", n=0), 400, "integer_below_min_value", "n",
        "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead."),
    Bad("n-eleven", lambda: gen(prompt="x", n=11), 400, "integer_above_max_value", "n",
        "Invalid 'n': integer above maximum value. Expected a value <= 10, but got 11 instead."),
    Bad("n-string-json", lambda: gen(prompt="x", n="2"), 400, "invalid_type", "n",
        "expected an integer, but got a string instead"),
    Bad("n-decimal", lambda: gen(prompt="x", n=1.5), 400, "invalid_type", "n", "a decimal number"),
    Bad("n-bool", lambda: gen(prompt="x", n=True), 400, "invalid_type", "n", "a boolean"),
    Bad("n-dall-e-3", lambda: gen(model="dall-e-3", prompt="x", n=2), 400, None, "n",
        "You must provide n=1 for this model."),
    Bad("n-text-multipart", lambda: edit({"image": OTTER, "prompt": "x", "n": "two"}), 400, "invalid_type",
        "n"),
    Bad("n-eleven-multipart", lambda: var({"image": OTTER, "n": "11"}), 400, "integer_above_max_value", "n"),
    # ---- size
    Bad("size-dall-e-2", lambda: gen(prompt="x", size="1792x1024"), 400, "invalid_value", "size",
        "Invalid value: '1792x1024'. Supported values are: '256x256', '512x512', and '1024x1024'."),
    Bad("size-gpt-image-1", lambda: gen(model="gpt-image-1", prompt="x", size="512x512"), 400,
        "invalid_value",
        "size", "Invalid value: '512x512'. " + GPT_SIZES),
    Bad("size-dall-e-3", lambda: gen(model="dall-e-3", prompt="x", size="256x256"), 400, "invalid_value",
        "size",
        "'1024x1024', '1792x1024', and '1024x1792'"),
    Bad("size-int", lambda: gen(prompt="x", size=1024), 400, "invalid_type", "size"),
    Bad("size-div16", lambda: gen(model="gpt-image-2", prompt="x", size="1792x936"), 400, "invalid_value",
        "size",
        "Invalid size '1792x936'. Width and height must both be divisible by 16."),
    Bad("size-4096", lambda: gen(model="gpt-image-2", prompt="x", size="4096x4096"), 400, "invalid_value",
        "size",
        "Invalid size '4096x4096'."),
    Bad("size-aspect", lambda: gen(model="gpt-image-2", prompt="x", size="3200x1024"), 400, "invalid_value",
        "size", "aspect ratio must be between 1:3 and 3:1"),
    Bad("size-max-pixels", lambda: gen(model="gpt-image-2", prompt="x", size="3840x2176"), 400,
        "invalid_value",
        "size", "at most 8294400 pixels"),
    Bad("size-min-pixels", lambda: gen(model="gpt-image-2-2026-04-21", prompt="x", size="512x512"), 400,
        "invalid_value", "size", "at least 655360 pixels"),
    Bad("size-word", lambda: gen(model="gpt-image-2", prompt="x", size="big"), 400, "invalid_value", "size",
        "Invalid value: 'big'. " + GPT_SIZES),
    Bad("size-edge-2.6", lambda: gen(model="gpt-image-2.6", prompt="x", size="4000x2000"), 400,
        "invalid_value",
        "size", "longest edge"),
    Bad("size-variation", lambda: var({"image": OTTER, "size": "1024x1536"}), 400, "invalid_value", "size"),
    # ---- parameters a model does not take
    Bad("style-dall-e-2", lambda: gen(prompt="x", style="vivid"), 400, "unknown_parameter", "style",
        "Unknown parameter: 'style'."),
    Bad("style-gpt", lambda: gen(model="gpt-image-1.5", prompt="x", style="natural"), 400,
        "unknown_parameter",
        "style"),
    Bad("stream-dall-e-3", lambda: gen(model="dall-e-3", prompt="x", stream=True), 400, "unknown_parameter",
        "stream"),
    Bad("stream-dall-e-2", lambda: gen(model="dall-e-2", prompt="x", stream=True), 400, "unknown_parameter",
        "stream"),
    Bad("background-dall-e-3", lambda: gen(model="dall-e-3", prompt="x", background="auto"), 400,
        "unknown_parameter", "background"),
    Bad("seed", lambda: gen(prompt="x", seed=42), 400, "unknown_parameter", "seed",
        "Unknown parameter: 'seed'."),
    Bad("input-fidelity-generations", lambda: gen(model="gpt-image-1", prompt="x", input_fidelity="high"),
        400,
        "unknown_parameter", "input_fidelity"),
    Bad("complexity-gpt-image-2", lambda: gen(model="gpt-image-2", prompt="x", complexity="high"), 400,
        "unknown_parameter", "complexity"),
    Bad("images-in-generations", lambda: gen(model="gpt-image-1", prompt="x", images=[]), 400,
        "unknown_parameter", "images"),
    Bad("quality-variations", lambda: var({"image": OTTER, "quality": "standard"}), 400, "unknown_parameter",
        "quality"),
    Bad("prompt-variations", lambda: var({"image": OTTER, "prompt": "x"}), 400, "unknown_parameter",
        "prompt"),
    Bad("mask-variations", lambda: var({"image": OTTER, "mask": MASK}), 400, "unknown_parameter", "mask"),
    Bad("unknown-multipart-field", lambda: edit({"image": OTTER, "prompt": "x", "foo": "bar"}), 400,
        "unknown_parameter", "foo"),
    Bad("input-fidelity-gpt-image-2", lambda: edit({"model": "gpt-image-2", "image": OTTER, "prompt": "x",
        "input_fidelity": "high"}), 400, "unknown_parameter", "input_fidelity"),
    # ---- enum values
    Bad("style-value", lambda: gen(model="dall-e-3", prompt="x", style="cartoon"), 400, "invalid_value",
        "style",
        "Invalid value: 'cartoon'. Supported values are: 'vivid' and 'natural'."),
    Bad("quality-dall-e-3", lambda: gen(model="dall-e-3", prompt="x", quality="high"), 400, "invalid_value",
        "quality", "'standard', 'hd', and 'auto'"),
    Bad("quality-hd-gpt", lambda: gen(model="gpt-image-1", prompt="x", quality="hd"), 400, "invalid_value",
        "quality", "Supported values are: 'low', 'medium', 'high', and 'auto'."),
    Bad("quality-xhigh-gpt-image-2", lambda: gen(model="gpt-image-2", prompt="x", quality="xhigh"), 400,
        "invalid_value", "quality"),
    Bad("quality-int", lambda: gen(model="gpt-image-1", prompt="x", quality=3), 400, "invalid_type",
        "quality"),
    Bad("background-value", lambda: gen(model="gpt-image-1", prompt="x", background="none"), 400,
        "invalid_value", "background", "'transparent', 'opaque', and 'auto'"),
    Bad("output-format-value", lambda: gen(model="gpt-image-1", prompt="x", output_format="bmp"), 400,
        "invalid_value", "output_format", "'png', 'jpeg', and 'webp'"),
    Bad("output-format-gif-gpt-image-1", lambda: gen(model="gpt-image-1", prompt="x", output_format="gif"),
        400,
        "invalid_value", "output_format"),
    Bad("moderation-value", lambda: gen(model="gpt-image-1", prompt="x", moderation="high"), 400,
        "invalid_value", "moderation", "'low' and 'auto'"),
    Bad("response-format-value", lambda: gen(prompt="x", response_format="png"), 400, "invalid_value",
        "response_format", "'url' and 'b64_json'"),
    Bad("complexity-value", lambda: gen(model="gpt-image-2.5", prompt="x", complexity="extreme"), 400,
        "invalid_value", "complexity"),
    Bad("input-fidelity-mini", lambda: edit({"model": "gpt-image-1-mini", "image": OTTER, "prompt": "x",
        "input_fidelity": "high"}), 400, "invalid_value", "input_fidelity", "Supported values are: 'low'."),
    Bad("input-fidelity-value", lambda: edit({"model": "gpt-image-1", "image": OTTER, "prompt": "x",
        "input_fidelity": "max"}), 400, "invalid_value", "input_fidelity"),
    Bad("user-int", lambda: gen(prompt="x", user=42), 400, "invalid_type", "user"),
    # ---- integer ranges and combinations
    Bad("compression-101", lambda: gen(model="gpt-image-1", prompt="x", output_format="jpeg",
        output_compression=101), 400, "integer_above_max_value", "output_compression"),
    Bad("compression-negative", lambda: gen(model="gpt-image-1", prompt="x", output_format="webp",
        output_compression=-1), 400, "integer_below_min_value", "output_compression"),
    Bad("compression-png", lambda: gen(model="gpt-image-1", prompt="x", output_format="png",
        output_compression=50), 400, "invalid_value", "output_compression", "'jpeg' or 'webp', not 'png'"),
    Bad("compression-default-png", lambda: gen(model="gpt-image-1", prompt="x", output_compression=50), 400,
        "invalid_value", "output_compression"),
    Bad("partial-images-4", lambda: gen(model="gpt-image-1", prompt="x", stream=True, partial_images=4), 400,
        "integer_above_max_value", "partial_images", "Expected a value <= 3, but got 4 instead."),
    Bad("partial-images-no-stream", lambda: gen(model="gpt-image-1", prompt="x", partial_images=2), 400,
        "invalid_value", "partial_images", "'stream' is true"),
    Bad("partial-images-stream-false", lambda: gen(model="gpt-image-1", prompt="x", stream=False,
        partial_images=1), 400, "invalid_value", "partial_images"),
    Bad("stream-string-json", lambda: gen(model="gpt-image-1", prompt="x", stream="yes"), 400, "invalid_type",
        "stream", "expected a boolean"),
    Bad("stream-text-multipart", lambda: edit({"model": "gpt-image-1", "image": OTTER, "prompt": "x",
        "stream": "maybe"}), 400, "invalid_type", "stream"),
    Bad("transparent-jpeg", lambda: gen(model="gpt-image-1", prompt="x", background="transparent",
        output_format="jpeg"), 400, "invalid_value", "background", "'transparent' is only supported"),
    # ---- multipart structure
    Bad("no-boundary", lambda: json_request("edits", b"--x\r\n", content_type="multipart/form-data"), 400,
        "invalid_multipart_body", None, "no boundary"),
    Bad("wrong-boundary", lambda: json_request("edits", edit({"prompt": "x"}).body,
        content_type="multipart/form-data; boundary=not-the-one"), 400, "invalid_multipart_body", None),
    Bad("garbage-multipart", lambda: json_request("edits", b"--b\r\nno headers here--b--",
        content_type="multipart/form-data; boundary=b"), 400, "invalid_multipart_body", None),
    Bad("prompt-as-file", lambda: edit([("image", OTTER), ("prompt", ("p.txt", b"\xff\xfe", ""))]), 400,
        "invalid_type", "prompt", "expected a string, but got a file instead"),
    Bad("non-utf8-field", lambda: json_request("edits", NON_UTF8_MULTIPART, content_type=NON_UTF8_CT), 400,
        "invalid_value", "prompt", "not valid UTF-8"),
    Bad("edits-text-plain", lambda: json_request("edits", b"x", content_type="text/plain"), 415,
        "unsupported_media_type", None),
    Bad("variations-json", lambda: json_request("variations", {"model": "dall-e-2"}), 415,
        "unsupported_media_type", None, "multipart/form-data"),
    # ---- edit and variation images (multipart)
    Bad("edit-no-image", lambda: edit({"prompt": "x"}), 400, "missing_required_parameter", "image",
        "Missing required parameter: 'image'."),
    Bad("variation-no-image", lambda: var({"n": "2"}), 400, "missing_required_parameter", "image"),
    Bad("image-as-text", lambda: edit({"image": "otter.png", "prompt": "x"}), 400, "invalid_type", "image",
        "Invalid type for 'image': expected one of an array of files or file, but got a string instead."),
    Bad("image-not-an-image", lambda: edit([("model", "gpt-image-1"), ("prompt", "x"),
        ("image[]", file(b"\x00\x01 raw bytes", "upload", "application/octet-stream"))]), 400,
        "unsupported_file_mimetype", "image[0]",
        "Invalid file 'image[0]': unsupported mimetype ('application/octet-stream'). " + MIMETYPES),
    Bad("image-gif-gpt", lambda: edit({"model": "gpt-image-1", "prompt": "x", "image": file(gif(), "a.gif",
        "application/octet-stream")}), 400, "unsupported_file_mimetype", "image", "('image/gif')"),
    Bad("dall-e-2-jpeg", lambda: edit({"image": file(jpeg(256, 256), "o.jpg", "image/jpeg"), "prompt": "x",
        "mask": MASK}), 400, "unsupported_file_mimetype", "image",
        "unsupported mimetype ('image/jpeg'). Supported file formats are 'image/png'."),
    Bad("dall-e-2-not-square", lambda: edit({"image": file(png(256, 128)), "prompt": "x"}), 400,
        "invalid_image", "image", "must be square"),
    Bad("variation-not-square", lambda: var({"image": file(png(300, 200))}), 400, "invalid_image", "image"),
    Bad("dall-e-2-4mb", lambda: edit({"image": file(padded(png(256, 256), 4 * MB)), "prompt": "x"}), 400,
        "image_too_large", "image", "smaller than 4 MB"),
    Bad("variation-4mb", lambda: var({"image": file(padded(png(256, 256), 4 * MB + 10))}), 400,
        "image_too_large",
        "image"),
    Bad("dall-e-2-rgb-no-mask", lambda: edit({"image": RGB_SQUARE, "prompt": "x"}), 400, None, "image",
        "Invalid input image - format must be in ['RGBA', 'LA', 'L'], got RGB."),
    Bad("dall-e-2-palette-no-mask", lambda: edit({"image": file(palette_png_with_transparency()),
        "prompt": "x"}), 400, None, "image", "got P."),
    Bad("dall-e-2-two-images", lambda: edit([("model", "dall-e-2"), ("prompt", "x"), ("image[]", OTTER),
        ("image[]", OTTER)]), 400, "array_above_max_length", "image",
        "Expected an array with maximum length 1, but got an array with length 2 instead."),
    Bad("gpt-17-images", lambda: edit([("model", "gpt-image-1"), ("prompt", "x")]
        + [("image[]", OTTER)] * 17), 400, "array_above_max_length", "image", "maximum length 16"),
    Bad("corrupt-png", lambda: edit([("model", "gpt-image-1"), ("prompt", "x"), ("image[]", OTTER),
        ("image[]", file(corrupt_png()))]), 400, "invalid_image", "image[1]", "could not be read"),
    # a truncated PNG opens (its header is whole) but must not reach the upstream
    Bad("truncated-png", lambda: edit({"model": "gpt-image-1", "prompt": "x",
        "image": file(truncated_png())}), 400, "invalid_image", "image", "could not be read"),
    Bad("truncated-mask", lambda: edit({"image": file(png(128, 128)), "prompt": "x",
        "mask": file(truncated_png())}), 400, "invalid_image", "mask"),
    # decompression bombs: over twice Pillow's limit (it raises), and between once and twice (it only warns)
    Bad("png-bomb-20000", lambda: edit({"model": "gpt-image-1", "prompt": "x",
        "image": file(png_header_only(20_000, 20_000))}), 400, "image_too_large", "image",
        "at most 89,478,485 pixels"),
    Bad("png-bomb-10000", lambda: edit({"model": "gpt-image-1", "prompt": "x",
        "image": file(png_header_only(10_000, 10_000))}), 400, "image_too_large", "image"),
    Bad("variation-bomb", lambda: var({"image": file(png_header_only(20_000, 20_000))}), 400,
        "image_too_large", "image"),
    Bad("indexed-bad-image", lambda: edit([("model", "gpt-image-1"), ("prompt", "x"), ("image[3]", OTTER),
        ("image[7]", file(b"GIF? no", "x.bin", "application/octet-stream"))]), 400,
        "unsupported_file_mimetype",
        "image[7]"),
    # ---- masks
    Bad("mask-jpeg", lambda: edit({"image": OTTER, "prompt": "x", "mask": file(jpeg(256, 256), "m.jpg")}),
        400,
        "unsupported_file_mimetype", "mask", "Supported file formats are 'image/png'."),
    Bad("mask-size", lambda: edit({"image": OTTER, "prompt": "x", "mask": file(png(128, 128))}), 400,
        "invalid_image", "mask", "same dimensions as the first image (256x256), but it is 128x128"),
    Bad("mask-no-alpha", lambda: edit({"image": RGB_SQUARE, "prompt": "x", "mask": file(png(256, 256,
        "RGB"))}),
        400, "invalid_image", "mask", "alpha channel"),
    Bad("mask-4mb", lambda: edit({"model": "gpt-image-1", "image": OTTER, "prompt": "x",
        "mask": file(padded(png(256, 256), 4 * MB))}), 400, "image_too_large", "mask"),
    Bad("mask-as-text", lambda: edit({"image": OTTER, "prompt": "x", "mask": "mask.png"}), 400,
        "invalid_type",
        "mask", "Invalid type for 'mask': expected a file, but got a string instead."),
    Bad("two-masks", lambda: edit([("image", OTTER), ("prompt", "x"), ("mask", MASK), ("mask", MASK)]), 400,
        "invalid_type", "mask"),
    Bad("gpt-mask-dims-vs-first", lambda: edit([("model", "gpt-image-1"), ("prompt", "x"),
        ("image[]", file(jpeg(512, 256), "a.jpg")), ("image[]", OTTER), ("mask", MASK)]), 400,
        "invalid_image",
        "mask", "(512x256)"),
    # ---- JSON edits
    Bad("json-edit-dall-e-2", lambda: json_edit(model="dall-e-2", prompt="x",
        images=[{"image_url": "https://img.example/otter.png"}]), 415, "unsupported_media_type", "model",
        "multipart/form-data"),
    Bad("json-edit-no-images", lambda: json_edit(model="gpt-image-1", prompt="x"), 400,
        "missing_required_parameter", "images", "Missing required parameter: 'images'."),
    Bad("json-edit-images-string", lambda: json_edit(prompt="x", images="https://img.example/otter.png"), 400,
        "invalid_type", "images", "expected an array of objects, but got a string instead"),
    Bad("json-edit-images-empty", lambda: json_edit(prompt="x", images=[]), 400, "empty_array", "images"),
    Bad("json-edit-ref-string", lambda: json_edit(prompt="x", images=["https://img.example/otter.png"]), 400,
        "invalid_type", "images[0]"),
    Bad("json-edit-file-id", lambda: json_edit(prompt="x", images=[{"file_id": "file-abc123"}]), 400,
        "unsupported_parameter", "images[0]",
        "`file_id` references are not supported by this gateway; use image_url."),
    Bad("json-edit-mask-file-id", lambda: json_edit(prompt="x",
        images=[{"image_url": "https://img.example/otter.png"}], mask={"file_id": "file-m"}), 400,
        "unsupported_parameter", "mask"),
    Bad("json-edit-ref-unknown-key", lambda: json_edit(prompt="x",
        images=[{"url": "https://a.example/x.png"}]),
        400, "unknown_parameter", "images[0].url"),
    Bad("json-edit-ref-empty", lambda: json_edit(prompt="x", images=[{}]), 400, "missing_required_parameter",
        "images[0]"),
    Bad("json-edit-http", lambda: json_edit(prompt="x",
        images=[{"image_url": "http://img.example/otter.png"}]),
        400, "invalid_image_url", "images[0]", "https URL or a base64 data URL"),
    Bad("json-edit-file-url", lambda: json_edit(prompt="x", images=[{"image_url": "file:///etc/passwd"}]),
        400,
        "invalid_image_url", "images[0]"),
    Bad("json-edit-bad-data-url", lambda: json_edit(prompt="x",
        images=[{"image_url": "data:image/png;base64,@@@not base64@@@"}]), 400, "invalid_image_url",
        "images[0]"),
    Bad("json-edit-data-url-text", lambda: json_edit(prompt="x",
        images=[{"image_url": "data:text/plain;base64,aGVsbG8="}]), 400, "unsupported_file_mimetype",
        "images[0]",
        "unsupported mimetype ('text/plain')"),
    Bad("json-edit-fetch-404", lambda: json_edit(prompt="x",
        images=[{"image_url": "https://img.example/nope"}]),
        400, "invalid_image_url", "images[0]", "HTTP 404"),
    Bad("json-edit-fetched-text", lambda: json_edit(prompt="x",
        images=[{"image_url": "https://img.example/otter.png"},
        {"image_url": "https://img.example/text.txt"}]),
        400, "unsupported_file_mimetype", "images[1]"),
    Bad("json-edit-17", lambda: json_edit(prompt="x",
        images=[{"image_url": "https://img.example/nope"}] * 17),
        400, "array_above_max_length", "images", "maximum length 16"),
    Bad("json-edit-image-key", lambda: json_edit(prompt="x", image="https://img.example/otter.png",
        images=[{"image_url": "https://img.example/otter.png"}]), 400, "unknown_parameter", "image"),
    # ---- newest models: complexity, GIF and SVG output, markup
    Bad("complexity-auto", lambda: gen(model="gpt-image-2.5-flare", prompt="x", complexity="auto"), 400,
        "invalid_value", "complexity", "Supported values are: 'low', 'medium', and 'high'."),
    Bad("frame-count-without-gif", lambda: gen(model="gpt-image-2.5-flare", prompt="x", frame_count=4), 400,
        "invalid_value", "frame_count", "only supported when 'output_format' is 'gif', not 'png'"),
    Bad("frame-count-17", lambda: gen(model="gpt-image-2.6-flare", prompt="x", output_format="gif",
        frame_count=17), 400, "integer_above_max_value", "frame_count"),
    Bad("frame-duration-zero", lambda: gen(model="gpt-image-2.5", prompt="x", output_format="gif",
        frame_duration_ms=0), 400, "integer_below_min_value", "frame_duration_ms"),
    Bad("gif-stream", lambda: gen(model="gpt-image-2.5-sunburst", prompt="x", output_format="gif",
        stream=True),
        400, "invalid_value", "output_format", "'gif' is only supported when 'stream' is false, not true"),
    Bad("svg-n2", lambda: gen(model="gpt-image-2.5-sunburst", prompt="x", output_format="svg", n=2), 400,
        "invalid_value", "output_format", "'svg' is only supported when 'n' is 1, not 2"),
    Bad("svg-object-without-svg-output", lambda: gen(model="gpt-image-2.5-sunburst", prompt="x",
        svg={"model": "m"}), 400, "invalid_value", "svg"),
    Bad("svg-unknown-member", lambda: gen(model="gpt-image-2.5-sunburst", prompt="x", output_format="svg",
        svg={"author": "m"}), 400, "unknown_parameter", "svg.author", "Unknown parameter: 'svg.author'."),
    Bad("svg-effort", lambda: gen(model="gpt-image-2.5-sunburst", prompt="x", output_format="svg",
        svg={"reasoning": {"effort": "huge"}}), 400, "invalid_value", "svg.reasoning.effort"),
    Bad("svg-string", lambda: gen(model="gpt-image-2.5-sunburst", prompt="x", output_format="svg", svg="m"),
        400, "invalid_type", "svg", "expected an object, but got a string instead"),
    Bad("svg-multipart-effort", lambda: edit([("model", "gpt-image-2.6-sunburst"), ("image", OTTER),
        ("prompt", "x"), ("output_format", "svg"), ("svg[reasoning][effort]", "huge")]), 400, "invalid_value",
        "svg.reasoning.effort"),
    Bad("svg-on-gpt-image-2", lambda: gen(model="gpt-image-2", prompt="x", output_format="svg"), 400,
        "invalid_value", "output_format"),
    Bad("markup-and-mask", lambda: edit({"model": "gpt-image-2.5-flare", "image": OTTER, "prompt": "x",
        "mask": MASK, "markup": MASK}), 400, "invalid_value", "markup", "cannot be combined with 'mask'"),
    Bad("markup-gpt-image-2", lambda: edit({"model": "gpt-image-2", "image": OTTER, "prompt": "x",
        "markup": MASK}), 400, "unknown_parameter", "markup"),
    Bad("markup-dims", lambda: edit({"model": "gpt-image-2.5-flare", "image": OTTER, "prompt": "x",
        "markup": file(png(64, 64))}), 400, "invalid_image", "markup", "same dimensions as the first image"),
    Bad("markup-no-alpha", lambda: edit({"model": "gpt-image-2.5-flare", "image": OTTER, "prompt": "x",
        "markup": file(png(256, 256, "RGB"))}), 400, "invalid_image", "markup", "alpha channel"),
    Bad("markup-as-text", lambda: edit({"model": "gpt-image-2.5-flare", "image": OTTER, "prompt": "x",
        "markup": "k.png"}), 400, "invalid_type", "markup"),
    Bad("safety-identifier-int", lambda: gen(model="gpt-image-1.5", prompt="x", safety_identifier=7), 400,
        "invalid_type", "safety_identifier"),
    Bad("json-edit-style", lambda: json_edit(model="gpt-image-2", prompt="x", style="vivid",
        images=[{"image_url": "https://img.example/otter.png"}]), 400, "unknown_parameter", "style"),
]
# fmt: on


def test_the_suite_is_big_enough():
    assert len(BAD) >= 70
    assert len({case.id for case in BAD}) == len(BAD)


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_bad_requests_get_openai_errors(case: Bad):
    with pytest.raises(ApiError) as info:
        run(case.request())
    err = info.value
    assert (err.status, err.code, err.param) == (case.status, case.code, case.param), err.message
    assert case.fragment in err.message
    body = err.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error"
    assert 400 <= err.status < 500
    assert len(err.message) < 1000  # client input is never echoed at length


# ---------------------------------------------------------------------------------------------- positive


def test_seed_generation_dall_e_3_basic():
    req = run(gen(model="dall-e-3", prompt="A cute little sea otter", n=1, size="1024x1024"))
    assert req.model == "dall-e-3"
    assert req.params == {
        "prompt": "A cute little sea otter",
        "n": 1,
        "size": "1024x1024",
        "quality": "standard",
        "style": "vivid",
        "response_format": "url",
    }


def test_seed_generation_dall_e_3_hd_vivid():
    req = run(
        gen(model="dall-e-3", prompt="A cute little sea otter", quality="hd", style="vivid", size="1024x1024")
    )
    assert req.params["quality"] == "hd" and req.params["style"] == "vivid" and req.n == 1


def test_seed_generation_b64_json():
    req = run(gen(model="dall-e-3", prompt="A cute little sea otter", response_format="b64_json"))
    assert req.params["response_format"] == "b64_json"
    assert req.params["size"] == "1024x1024"


def test_seed_edit_dall_e_2_with_mask_defaults_to_dall_e_2():
    req = run(
        edit(
            [
                ("image", OTTER),
                ("mask", MASK),
                ("prompt", "A cute little sea otter wearing a beret"),
                ("n", "2"),
                ("size", "1024x1024"),
            ]
        )
    )
    assert req.model == "dall-e-2" and req.operation == "edits"
    assert req.params == {
        "prompt": "A cute little sea otter wearing a beret",
        "n": 2,
        "size": "1024x1024",
        "quality": "standard",
        "response_format": "url",
    }
    assert [img.field_name for img in req.images] == ["image"]
    assert (req.images[0].format, req.images[0].width, req.images[0].height) == ("png", 256, 256)
    assert req.mask is not None and req.mask.field_name == "mask" and req.mask.mode == "RGBA"


def test_seed_edit_gpt_image_1_multi_image():
    names = ["body-lotion.png", "bath-bomb.png", "incense-kit.png", "soap.png"]
    fields = [("model", "gpt-image-1")]
    fields += [("image[]", file(png(300 + i, 200), name)) for i, name in enumerate(names)]
    fields += [("prompt", "Create an elegant gift basket containing these four items"), ("quality", "high")]
    req = run(edit(fields))
    assert req.model == "gpt-image-1"
    assert [img.field_name for img in req.images] == ["image[0]", "image[1]", "image[2]", "image[3]"]
    assert [img.filename for img in req.images] == names
    assert [img.width for img in req.images] == [300, 301, 302, 303]
    assert req.params == {
        "prompt": "Create an elegant gift basket containing these four items",
        "quality": "high",
        "n": 1,
        "size": "auto",
        "response_format": "b64_json",
    }


def test_seed_variation():
    req = run(var([("image", OTTER), ("n", "2"), ("size", "1024x1024")]))
    assert req.model == "dall-e-2" and req.operation == "variations"
    assert req.params == {"n": 2, "size": "1024x1024", "response_format": "url"}
    assert len(req.images) == 1 and req.mask is None


def test_default_generation_is_dall_e_2_with_seed_defaults():
    req = run(gen(prompt="otter"))
    assert req.model == "dall-e-2"
    assert req.params == {
        "prompt": "otter",
        "n": 1,
        "size": "1024x1024",
        "quality": "standard",
        "response_format": "url",
    }


def test_null_model_means_the_default():
    assert run(gen(model=None, prompt="x")).model == "dall-e-2"


def test_an_empty_model_name_is_an_empty_string_error_not_a_silent_default():
    """Once given, the model is a name: "" is the client's mistake (a blank form field, an unset variable),
    answered like an empty prompt, instead of quietly running (and charging) dall-e-2."""
    with pytest.raises(InvalidRequest) as info:
        run(gen(model="", prompt="x"))
    assert (info.value.status, info.value.code, info.value.param) == (400, "empty_string", "model")
    assert info.value.message.startswith("Invalid 'model': empty string.")


@pytest.mark.parametrize(
    ("field", "value"), [("n", "\u0663"), ("n", "\uff12"), ("output_compression", "\u0665\u0660")]
)
def test_multipart_integers_are_ascii_digits_only(field, value):
    """int() reads digits of every script ("\u0663" is 3); OpenAI's form parser does not."""
    with pytest.raises(InvalidRequest) as info:
        run(
            edit(
                {
                    "model": "gpt-image-1.5",
                    "prompt": "x",
                    "output_format": "jpeg",
                    field: value,
                    "image": OTTER,
                }
            )
        )
    assert (info.value.code, info.value.param) == ("invalid_type", field)


@pytest.mark.parametrize(
    "extra",
    [{"background": "transparent"}, {"output_format": "webp"}, {"moderation": "low"}, {"stream": True}],
)
def test_gpt_only_parameter_switches_the_default_to_gpt_image_1(extra):
    req = run(gen(prompt="x", **extra))
    assert req.model == "gpt-image-1"
    assert req.params["response_format"] == "b64_json"
    assert req.params["quality"] == "auto" and req.params["size"] == "1024x1024"


def test_gpt_only_parameter_switches_multipart_edits_too():
    req = run(edit({"image": file(jpeg(300, 200), "a.jpg"), "prompt": "x", "input_fidelity": "high"}))
    assert req.model == "gpt-image-1" and req.params["input_fidelity"] == "high"


def test_more_images_than_dall_e_2_takes_switches_the_default():
    req = run(edit([("prompt", "x"), ("image[]", OTTER), ("image[]", OTTER)]))
    assert req.model == "gpt-image-1"


def test_json_edits_default_to_gpt_image_1():
    req = run(json_edit(prompt="x", images=[{"image_url": "https://img.example/otter.png"}]))
    assert req.model == "gpt-image-1"
    assert req.params["size"] == "auto" and req.params["quality"] == "auto"


def test_json_edit_with_urls_data_urls_and_mask():
    import base64

    data_url = "data:image/png;base64," + base64.b64encode(png(256, 256)).decode()
    req = run(
        json_edit(
            model="gpt-image-1.5",
            prompt="x",
            images=[{"image_url": "https://img.example/otter.jpg"}, {"image_url": data_url}],
            mask={"image_url": data_url},
            output_format="jpeg",
            output_compression=80,
        )
    )
    assert [img.field_name for img in req.images] == ["images[0]", "images[1]"]
    assert [img.format for img in req.images] == ["jpeg", "png"]
    assert req.mask is not None and req.mask.format == "png" and req.mask.has_alpha
    assert req.params["output_compression"] == 80


def test_variation_defaults_to_dall_e_2_even_with_gpt_parameters():
    with pytest.raises(ApiError) as info:
        run(var({"image": OTTER, "background": "opaque"}))
    assert info.value.code == "unknown_parameter" and info.value.param == "background"


def test_response_format_url_is_accepted_for_every_model():
    for name in CATALOG.serving("generations"):
        req = run(gen(model=name, prompt="x", response_format="url"))
        assert req.params["response_format"] == "url"


def _all_model_names() -> list[str]:
    return [
        *CATALOG.serving("generations"),
        "gpt-image-2-2026-04-21",
        "gpt-image-2.5-sunburst-2026-09-08",
        "gpt-image-2.5-flare-2026-09-08",
        "gpt-image-2.5-2026-10-01",
    ]


@pytest.mark.parametrize("model", _all_model_names())
def test_every_catalog_model_validates_a_generation(model):
    req = run(gen(model=model, prompt="A cute little sea otter"))
    spec = CATALOG.get(model)
    assert req.model == model
    assert req.params["n"] == 1 and req.params["size"] == "1024x1024"
    assert req.params["response_format"] == spec.default_response_format
    assert set(req.params) <= spec.params_for("generations")


@pytest.mark.parametrize("model", [m for m in _all_model_names() if CATALOG.get(m).serves("edits")])
def test_every_edit_model_validates_a_multipart_edit(model):
    req = run(edit({"model": model, "image": OTTER, "prompt": "x"}))
    assert req.model == model and len(req.images) == 1


@pytest.mark.parametrize(
    "size", ["2048x1152", "3840x2160", "2160x3840", "1536x864", "1024x1024", "auto", "2880x2880", "1024x640"]
)
def test_gpt_image_2_custom_sizes(size):
    assert run(gen(model="gpt-image-2", prompt="x", size=size)).params["size"] == size


def test_newest_models_take_their_extras():
    req = run(
        gen(
            model="gpt-image-2.6",
            prompt="x",
            quality="xhigh",
            complexity="high",
            output_format="svg",
            svg={"model": "author-1", "reasoning": {"effort": "xhigh"}},
            size="3840x2160",
        )
    )
    assert req.params["svg"] == {"model": "author-1", "reasoning": {"effort": "xhigh"}}
    assert req.params["quality"] == "xhigh" and req.params["output_format"] == "svg"
    req = run(gen(model="gpt-image-2.5", prompt="x", quality="max", output_format="gif"))
    assert req.params["quality"] == "max"


def test_multipart_scalars_are_typed():
    req = run(
        edit(
            [
                ("model", "gpt-image-1"),
                ("image", OTTER),
                ("prompt", "x"),
                ("n", "3"),
                ("stream", "true"),
                ("partial_images", "2"),
                ("output_format", "webp"),
                ("output_compression", "75"),
                ("background", "transparent"),
                ("user", "u-1"),
            ]
        )
    )
    assert req.params["n"] == 3 and req.params["stream"] is True and req.params["partial_images"] == 2
    assert req.params["output_compression"] == 75 and req.params["user"] == "u-1"
    assert req.stream and req.n == 3


def test_stream_with_partial_images_json():
    req = run(gen(model="gpt-image-1", prompt="x", stream=True, partial_images=0))
    assert req.params["stream"] is True and req.params["partial_images"] == 0


def test_transparent_with_png_and_webp_is_fine():
    for fmt in ("png", "webp"):
        req = run(gen(model="gpt-image-1", prompt="x", background="transparent", output_format=fmt))
        assert req.params["background"] == "transparent"


def test_null_values_are_omitted_not_errors():
    req = run(gen(model="dall-e-3", prompt="x", n=None, size=None, style=None, quality=None, user=None))
    assert req.params["n"] == 1 and req.params["style"] == "vivid" and "user" not in req.params


def test_charset_in_content_type_is_fine():
    request = json_request("generations", {"prompt": "x"}, content_type="application/json; charset=utf-8")
    assert run(request).model == "dall-e-2"


def test_missing_content_type_is_read_as_json():
    assert run(json_request("generations", {"prompt": "x"}, content_type=None)).params["prompt"] == "x"


def test_dall_e_2_edit_modes_without_mask():
    for mode in ("RGBA", "LA", "L"):
        req = run(edit({"image": file(png(64, 64, mode)), "prompt": "x"}))
        assert req.images[0].mode == mode


def test_gpt_edit_accepts_jpeg_webp_png_non_square():
    fields = [
        ("model", "gpt-image-1"),
        ("prompt", "x"),
        ("image[]", file(jpeg(640, 480), "a.jpg")),
        ("image[]", file(webp(320, 200), "b.webp")),
        ("image[]", file(png(10, 30), "c.png")),
    ]
    req = run(edit(fields))
    assert [img.format for img in req.images] == ["jpeg", "webp", "png"]


def test_image_identified_by_bytes_not_declared_type():
    req = run(edit({"image": file(png(64, 64), "upload", "application/octet-stream"), "prompt": "x"}))
    assert req.images[0].format == "png" and req.images[0].mimetype == "image/png"


def test_prompt_at_exactly_the_limit_is_fine():
    assert run(gen(prompt="x" * 1000)).params["prompt"] == "x" * 1000


def test_validated_params_never_hold_fields_the_model_does_not_take():
    req = run(gen(model="gpt-image-1", prompt="x", user="me"))
    assert set(req.params) <= CATALOG.get("gpt-image-1").params_for("generations")
    assert "model" not in req.params


def test_error_body_is_json_serialisable():
    with pytest.raises(ApiError) as info:
        run(gen(prompt="x", n=11))
    assert json.loads(json.dumps(info.value.body()))["error"]["param"] == "n"


def test_gif_output_with_frames():
    req = run(
        gen(
            model="gpt-image-2.5-flare",
            prompt="x",
            output_format="gif",
            frame_count=12,
            frame_duration_ms=120,
        )
    )
    assert req.params["frame_count"] == 12 and req.params["frame_duration_ms"] == 120


def test_markup_edit():
    req = run(
        edit({"model": "gpt-image-2.5-sunburst-2026-09-08", "image": OTTER, "prompt": "x", "markup": MASK})
    )
    assert req.markup is not None and req.markup.field_name == "markup" and req.markup.has_alpha
    assert req.mask is None


def test_safety_identifier_is_taken_everywhere_user_is_except_variations():
    for name in CATALOG.serving("generations"):
        assert run(gen(model=name, prompt="x", safety_identifier="h")).params["safety_identifier"] == "h"
    with pytest.raises(ApiError):
        run(var({"image": OTTER, "safety_identifier": "h"}))


# ---------------------------------------------------------------------------------------------- never a 5xx

# fmt: off
FUZZ_VALUES: list[object] = [
    None, True, False, 0, 1, -1, 2, 11, 1.5, 2.0, 10**30, "", "x", "auto", "low", "high", "png", "gif", "svg",
    "1024x1024", "2048x1152", "0x0", "16x99999", "x" * 5000, "\x00", [], [1], {}, {"a": 1}, {"model": "m"},
    {"reasoning": {"effort": "high"}}, {"reasoning": "high"}, [{"image_url": "https://img.example/otter.png"}],
]
FUZZ_FIELDS = [
    "model", "prompt", "n", "size", "quality", "style", "response_format", "background", "moderation",
    "output_format", "output_compression", "stream", "partial_images", "input_fidelity", "user", "complexity",
    "frame_count", "frame_duration_ms", "svg", "safety_identifier", "images", "mask", "markup", "seed",
]
FUZZ_MODELS = [None, "", 7, *CATALOG.names(), "gpt-image-2-2026-04-21", "nope"]
# fmt: on


def _random_body(rng) -> dict:
    body = {name: rng.choice(FUZZ_VALUES) for name in rng.sample(FUZZ_FIELDS, rng.randint(0, 8))}
    body["model"] = rng.choice(FUZZ_MODELS)
    if rng.random() < 0.8:
        body["prompt"] = rng.choice(["x", "A cute otter", "", 5, None])
    return body


@pytest.mark.parametrize("operation", ["generations", "edits"])
def test_random_json_bodies_never_cause_a_5xx(operation):
    import random

    rng = random.Random(20261128)
    outcomes = {"ok": 0, "4xx": 0}
    for _ in range(1500):
        try:
            run(json_request(operation, _random_body(rng)))
            outcomes["ok"] += 1
        except ApiError as err:
            assert 400 <= err.status < 500, (err.status, err.message)
            outcomes["4xx"] += 1
    assert outcomes["4xx"] > 0 and (outcomes["ok"] > 0 or operation == "edits")


@pytest.mark.parametrize("operation", ["edits", "variations"])
def test_random_multipart_bodies_never_cause_a_5xx(operation):
    import random

    rng = random.Random(7)
    files = [OTTER, MASK, RGB_SQUARE, file(jpeg(64, 32), "a.jpg"), file(corrupt_png()), file(b"", "e.png")]
    # fmt: off
    texts = ["", "x", "1", "2", "true", "false", "auto", "png", "gif", "1024x1024", "dall-e-2", "gpt-image-1",
             "gpt-image-2.5-flare", "high", "low", "\u00e9"]
    names = ["image", "image[]", "image[0]", "image[3]", "mask", "markup", "prompt", "model", "n", "size",
             "stream", "partial_images", "output_format", "svg[model]", "svg[reasoning][effort]", "quality"]
    # fmt: on
    for _ in range(400):
        fields = []
        for _ in range(rng.randint(0, 7)):
            name = rng.choice(names)
            fields.append((name, rng.choice(files) if rng.random() < 0.5 else rng.choice(texts)))
        try:
            run(multipart_request(operation, fields))
        except ApiError as err:
            assert 400 <= err.status < 500, (fields, err.status, err.message)
