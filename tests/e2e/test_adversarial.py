"""Hostile and malformed HTTP requests, sent raw through the local stack (API Gateway emulation, the real
handlers, moto, the upstream emulator): each is answered with the right 4xx and exactly OpenAI's error
body, never a 5xx or a hang, and nothing is left half-done: no upstream call, no stored object, no quota
held. Then the failures that happen after admission (an upstream failure, a response too large for
Lambda): refunded, nothing stored.

Gateways elsewhere answer malformed bodies with 5xx (LiteLLM: 13 of 83 bad inputs; docs/lessons.md).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from helpers.answers import check_error, check_images_response
from helpers.aws import stack_aws
from helpers.images import corrupt_png, gif, noise_png, png, png_header_only, truncated_png
from requests.structures import CaseInsensitiveDict

from imagegw.accounts.keys import KeyStore, NewKey

JSON = "application/json"
ANSWER_WITHIN_S = 10.0
OWN_KEY = object()  # the case sends the module's API key
BOUNDARY = "adversarial0boundary0x7f"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
ASYNC = {"Prefer": "respond-async"}


# ---------------------------------------------------------------------------------------------- bodies


def js(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def part(
    name: str | None, value: bytes | str, filename: str | None = None, ctype: str | None = None
) -> bytes:
    """One multipart part, byte for byte; `name` None leaves the name out of Content-Disposition."""
    disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if ctype is not None:
        head += f"Content-Type: {ctype}\r\n"
    data = value.encode("utf-8") if isinstance(value, str) else value
    return head.encode("utf-8") + b"\r\n" + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def img(data: bytes, name: str = "image", filename: str = "image.png", ctype: str = "image/png") -> bytes:
    return part(name, data, filename, ctype)


def gpt_edit(*parts: bytes) -> bytes:
    return form(part("model", "gpt-image-1.5"), part("prompt", "add a hat"), *parts)


def dalle2_edit(*parts: bytes) -> bytes:
    return form(part("model", "dall-e-2"), part("prompt", "add a hat"), *parts)


def json_edit(images: Any) -> bytes:
    return js({"model": "gpt-image-1.5", "prompt": "add a hat", "images": images})


SMALL = png(64, 64)
SQUARE = png(256, 256)
WIDE = png(256, 128)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'
BOMB = png_header_only(20_000, 20_000)  # over twice Pillow's limit: Image.open raises
HALF_BOMB = png_header_only(10_000, 10_000)  # between once and twice: Pillow only warns
OK_GEN = js({"model": "dall-e-3", "prompt": "A cute little sea otter"})
DEEP_ARRAY = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
HUGE_N = b'{"prompt": "otter", "n": 99999999999999999999999999999}'
DIGITS_N = b'{"prompt": "otter", "n": ' + b"9" * 5000 + b"}"  # over Python's 4300-digit int limit
NEGATIVE_N = b'{"prompt": "otter", "n": -99999999999999999999}'
DUPLICATE_N = b'{"model": "dall-e-3", "prompt": "otter", "n": 1, "n": 5}'
SURROGATE = b'{"model": "dall-e-3", "prompt": "otter \\ud800"}'  # valid JSON, not valid Unicode
SURROGATE_USER = b'{"model": "gpt-image-1.5", "prompt": "otter", "user": "\\udfff"}'
UTF16 = '{"model": "dall-e-3", "prompt": "otter"}'.encode("utf-16")  # with its BOM
NON_ASCII_KEY = "Bearer sk-\u00fc\u00f1\u00ee\u00e7\u00f8d\u00e9-key".encode()
LOOPBACK = [{"image_url": "https://127.0.0.1:1/x.png"}]
LONG_NAME = "a" * 3_200_000
DATA_URL_IMAGE = {"image_url": "data:image/png;base64," + base64.b64encode(png(64, 64)).decode()}


# ---------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    path: str  # under the API's /v1
    body: bytes = b""
    status: int = 400
    code: str | None = None
    param: str | None = None
    content_type: str | None = JSON
    type: str = "invalid_request_error"
    method: str = "POST"
    auth: Any = OWN_KEY  # str/bytes: the Authorization header as sent; None: no header
    headers: dict[str, str] = field(default_factory=dict)
    gateway: bool = False  # answered by API Gateway itself: x-amzn-RequestId, no x-request-id
    message: str | None = None  # a fragment the message must contain


def gen(
    id: str, body: bytes, status: int = 400, code: str | None = None, param: str | None = None, **kw: Any
) -> Case:
    return Case(id, "/images/generations", body, status, code, param, **kw)


def edit(
    id: str, body: bytes, status: int = 400, code: str | None = None, param: str | None = None, **kw: Any
) -> Case:
    kw.setdefault("content_type", MULTIPART)
    return Case(id, "/images/edits", body, status, code, param, **kw)


def var(
    id: str, body: bytes, status: int = 400, code: str | None = None, param: str | None = None, **kw: Any
) -> Case:
    kw.setdefault("content_type", MULTIPART)
    return Case(id, "/images/variations", body, status, code, param, **kw)


def job(
    id: str,
    job_id: str,
    status: int = 404,
    code: str | None = "job_not_found",
    param: str | None = "job_id",
    **kw: Any,
) -> Case:
    kw.setdefault("method", "GET")
    return Case(id, "/images/jobs/" + job_id, b"", status, code, param, content_type=None, **kw)


def route_404(id: str, path: str, method: str = "POST", body: bytes = OK_GEN) -> Case:
    """API Gateway's own answer (GatewayResponses MISSING_AUTHENTICATION_TOKEN, mapped to 404)."""
    return Case(id, path, body, 404, "unknown_url", method=method, gateway=True)


BAD_JSON = {"code": "invalid_json"}
NOT_OBJECT = {"code": "invalid_type", "message": "expected an object"}
MISSING_PROMPT = {"code": "missing_required_parameter", "param": "prompt"}
MEDIA = {"status": 415, "code": "unsupported_media_type"}
BAD_FORM = {"code": "invalid_multipart_body"}
NO_KEY = {"status": 401, "code": "invalid_api_key"}
TYPE = "invalid_type"
VALUE = "invalid_value"

# fmt: off
CASES = [
    # ----- bodies that are not a JSON object
    gen("empty-body", b"", **MISSING_PROMPT),
    gen("whitespace-body", b" \r\n\t ", **MISSING_PROMPT),
    gen("null", b"null", **NOT_OBJECT),
    gen("json-array", b'[{"model": "dall-e-3", "prompt": "otter"}]', **NOT_OBJECT),
    gen("json-string", b'"A cute little sea otter"', **NOT_OBJECT),
    gen("json-number", b"42", **NOT_OBJECT),
    gen("json-true", b"true", **NOT_OBJECT),
    gen("truncated-json", b'{"model": "dall-e-3", "prompt": "otter",', **BAD_JSON),
    gen("trailing-garbage", OK_GEN + b"{}", **BAD_JSON),
    gen("json-with-comment", b'{"prompt": "otter" /* hi */}', **BAD_JSON),
    gen("single-quotes", b"{'prompt': 'otter'}", **BAD_JSON),
    gen("non-utf8-bytes", b"\xff\xfe\xfd\x80\x81", **BAD_JSON),
    gen("utf16-with-bom", UTF16, **BAD_JSON),
    gen("gzip-body-unannounced", zlib.compress(OK_GEN), **BAD_JSON),
    gen("nested-10k-arrays", DEEP_ARRAY, **BAD_JSON),
    gen("nested-10k-objects", DEEP_OBJECT, **BAD_JSON),
    gen("nested-10k-in-a-field", b'{"prompt": "otter", "user": ' + DEEP_ARRAY + b"}", **BAD_JSON),
    gen("1e999", b'{"prompt": "otter", "n": 1e999}', **BAD_JSON),
    gen("minus-1e999", b'{"prompt": "otter", "n": -1e999}', **BAD_JSON),
    gen("NaN", b'{"prompt": "otter", "n": NaN}', **BAD_JSON),
    gen("Infinity", b'{"prompt": "otter", "n": Infinity}', **BAD_JSON),
    gen("raw-null-byte-in-string", b'{"prompt": "ot\x00ter"}', **BAD_JSON),
    # ----- wrong types and absurd values
    gen("n-huge-int", HUGE_N, code="integer_above_max_value", param="n"),
    gen("n-5000-digits", DIGITS_N, **BAD_JSON),
    gen("n-huge-negative", NEGATIVE_N, code="integer_below_min_value", param="n"),
    gen("n-1e308", b'{"prompt": "otter", "n": 1e308}', code="integer_above_max_value", param="n"),
    gen("n-fraction", js({"prompt": "otter", "n": 1.5}), code=TYPE, param="n"),
    gen("n-string", js({"prompt": "otter", "n": "2"}), code=TYPE, param="n"),
    gen("n-bool", js({"prompt": "otter", "n": True}), code=TYPE, param="n"),
    gen("model-list", js({"model": ["dall-e-3"], "prompt": "otter"}), code=TYPE, param="model"),
    gen("model-dict", js({"model": {"name": "dall-e-3"}, "prompt": "otter"}), code=TYPE, param="model"),
    gen("model-number", js({"model": 3, "prompt": "otter"}), code=TYPE, param="model"),
    gen("model-bool", js({"model": True, "prompt": "otter"}), code=TYPE, param="model"),
    gen("model-10k-chars", js({"model": "m" * 10_000, "prompt": "otter"}), 404, "model_not_found", "model"),
    gen("model-null-byte", js({"model": "dall-e-3\0", "prompt": "otter"}), 404, "model_not_found", "model"),
    gen("prompt-list", js({"model": "dall-e-3", "prompt": ["an", "otter"]}), code=TYPE, param="prompt"),
    gen("prompt-number", js({"model": "dall-e-3", "prompt": 42}), code=TYPE, param="prompt"),
    gen("prompt-object", js({"model": "dall-e-3", "prompt": {"text": "otter"}}), code=TYPE, param="prompt"),
    gen("prompt-empty", js({"model": "dall-e-3", "prompt": ""}), code="empty_string", param="prompt"),
    gen("prompt-200k-chars", js({"model": "dall-e-3", "prompt": "o" * 200_000}), param="prompt",
        message="Prompt must be length 4000 or less"),
    gen("prompt-200k-emoji", js({"model": "gpt-image-1.5", "prompt": "\U0001f9a6" * 200_000}),
        param="prompt"),
    gen("prompt-lone-surrogate", SURROGATE, code=VALUE, param="prompt", message="not valid Unicode"),
    gen("user-lone-surrogate", SURROGATE_USER, code=VALUE, param="user"),
    gen("size-null-byte", js({"model": "dall-e-3", "prompt": "o", "size": "1024x1024\0"}), code=VALUE,
        param="size"),
    gen("size-absurd", js({"model": "gpt-image-2", "prompt": "o", "size": "99999x99999"}), code=VALUE,
        param="size"),
    gen("key-with-null-byte", js({"prompt": "otter", "prompt\0": "x"}), code="unknown_parameter",
        param="prompt\0"),
    gen("duplicate-keys-last-wins", DUPLICATE_N, param="n", message="You must provide n=1"),
    gen("quality-list", js({"model": "dall-e-3", "prompt": "o", "quality": ["hd"]}), code=TYPE,
        param="quality"),
    gen("unknown-parameter", js({"model": "dall-e-3", "prompt": "o", "seed": 42}), code="unknown_parameter",
        param="seed"),
    # echoed in message and param, a 3.2 MB key made an answer over Lambda's 6 MB: a 502
    gen("unknown-key-3mb", b'{"prompt": "otter", "' + LONG_NAME.encode() + b'": 1}', code="unknown_parameter",
        param=LONG_NAME[:200] + "..."),
    # ----- content types
    gen("text-plain", OK_GEN, content_type="text/plain", **MEDIA),
    gen("form-urlencoded", b"model=dall-e-3&prompt=otter", content_type="application/x-www-form-urlencoded",
        **MEDIA),
    gen("multipart-on-generations", form(part("prompt", "otter")), content_type=MULTIPART, **MEDIA),
    gen("no-content-type-is-read-as-json", js({"model": "dall-e-3"}), content_type=None, **MISSING_PROMPT),
    var("json-on-variations", OK_GEN, content_type=JSON, **MEDIA),
    var("no-content-type-on-variations", b"", content_type=None, **MEDIA),
    edit("multipart-mixed", form(img(SMALL)), content_type=f"multipart/mixed; boundary={BOUNDARY}", **MEDIA),
    # ----- multipart bodies that are not well formed
    edit("multipart-no-boundary", gpt_edit(), content_type="multipart/form-data", **BAD_FORM),
    edit("multipart-empty-boundary", gpt_edit(), content_type="multipart/form-data; boundary=", **BAD_FORM),
    edit("multipart-wrong-boundary", gpt_edit(), content_type="multipart/form-data; boundary=nope",
         **BAD_FORM),
    edit("multipart-unclosed-quote", gpt_edit(), content_type='multipart/form-data; boundary="x', **BAD_FORM),
    edit("multipart-json-body", OK_GEN, **BAD_FORM),
    edit("multipart-truncated", gpt_edit(img(SMALL))[:-200], **BAD_FORM),
    edit("multipart-part-without-name", gpt_edit(part(None, "x")), **BAD_FORM),
    edit("multipart-empty-form", form(), **MISSING_PROMPT),
    edit("multipart-300-images", gpt_edit(*(img(SMALL, "image[]") for _ in range(300))),
         code="array_above_max_length", param="image"),
    edit("multipart-300-text-parts", gpt_edit(*(part(f"x{i}", "1") for i in range(300))),
         code="unknown_parameter", param="x0"),
    edit("multipart-part-name-3mb", gpt_edit(part(LONG_NAME, "1")), code="unknown_parameter",
         param=LONG_NAME[:200] + "..."),
    edit("multipart-text-not-utf8", form(part("model", "gpt-image-1.5"), part("prompt", b"caf\xe9"),
         img(SMALL)), code=VALUE, param="prompt"),
    edit("multipart-n-not-a-number", gpt_edit(part("n", "two"), img(SMALL)), code=TYPE, param="n"),
    edit("multipart-n-40-digits", gpt_edit(part("n", "9" * 40), img(SMALL)), code=TYPE, param="n"),
    edit("multipart-stream-maybe", gpt_edit(part("stream", "maybe"), img(SMALL)), code=TYPE, param="stream"),
    # ----- input images
    edit("image-as-text", gpt_edit(part("image", "https://example.com/otter.png")), code=TYPE, param="image"),
    edit("image-missing", gpt_edit(), code="missing_required_parameter", param="image"),
    edit("image-zero-bytes", gpt_edit(img(b"")), code="unsupported_file_mimetype", param="image"),
    edit("image-truncated-png", gpt_edit(img(truncated_png())), code="invalid_image", param="image"),
    edit("image-png-magic-then-garbage", gpt_edit(img(corrupt_png())), code="invalid_image", param="image"),
    edit("image-gif", gpt_edit(img(gif(), filename="o.gif", ctype="image/gif")),
         code="unsupported_file_mimetype", param="image", message="('image/gif')"),
    edit("image-svg", gpt_edit(img(SVG, filename="o.svg", ctype="image/svg+xml")),
         code="unsupported_file_mimetype", param="image", message="('image/svg+xml')"),
    edit("image-20000x20000-bomb", gpt_edit(img(BOMB)), code="image_too_large", param="image"),
    edit("image-10000x10000-bomb", gpt_edit(img(HALF_BOMB)), code="image_too_large", param="image"),
    edit("image-bomb-dall-e-2", dalle2_edit(img(BOMB)), code="image_too_large", param="image"),
    edit("image-index-overflow", gpt_edit(img(SMALL, "image[99999999999]")), code="unknown_parameter",
         param="image[99999999999]"),
    edit("image-list-second-corrupt", gpt_edit(img(SMALL, "image[]"), img(corrupt_png(), "image[]")),
         code="invalid_image", param="image[1]"),
    edit("dall-e-2-over-4mb", dalle2_edit(img(SQUARE + b"\0" * (4 * 1024 * 1024))), code="image_too_large",
         param="image"),
    edit("dall-e-2-not-square", dalle2_edit(img(WIDE)), code="invalid_image", param="image"),
    edit("mask-different-size", dalle2_edit(img(SQUARE), img(png(128, 128), "mask")), code="invalid_image",
         param="mask"),
    edit("mask-truncated", dalle2_edit(img(SQUARE), img(truncated_png(), "mask")), code="invalid_image",
         param="mask"),
    edit("mask-as-text", gpt_edit(img(SMALL), part("mask", "transparent")), code=TYPE, param="mask"),
    edit("mask-twice", gpt_edit(img(SMALL), img(SMALL, "mask"), img(SMALL, "mask")), code=TYPE, param="mask"),
    edit("markup-on-a-model-without-it", gpt_edit(img(SMALL), img(SMALL, "markup")),
         code="unknown_parameter", param="markup"),
    edit("markup-with-mask", form(part("model", "gpt-image-2.5"), part("prompt", "hat"), img(SMALL),
         img(SMALL, "mask"), img(SMALL, "markup")), code=VALUE, param="markup"),
    var("variation-not-square", form(img(WIDE)), code="invalid_image", param="image"),
    var("variation-with-prompt", form(img(SQUARE), part("prompt", "otter")), code="unknown_parameter",
        param="prompt"),
    var("variation-bomb", form(img(BOMB)), code="image_too_large", param="image"),
    var("variation-gif", form(img(gif(256, 256), filename="o.gif")), code="unsupported_file_mimetype",
        param="image"),
    # ----- JSON edits
    edit("json-edit-images-string", json_edit("x.png"), code=TYPE, param="images", content_type=JSON),
    edit("json-edit-images-empty", json_edit([]), code="empty_array", param="images", content_type=JSON),
    edit("json-edit-http-url", json_edit([{"image_url": "http://127.0.0.1/x.png"}]), code="invalid_image_url",
         param="images[0]", content_type=JSON),
    edit("json-edit-loopback-url", json_edit(LOOPBACK), code="invalid_image_url", param="images[0]",
         content_type=JSON),
    edit("json-edit-bad-data-url", json_edit([{"image_url": "data:image/png;base64,!!!"}]),
         code="invalid_image_url", param="images[0]", content_type=JSON),
    edit("json-edit-file-id", json_edit([{"file_id": "file-123"}]), code="unsupported_parameter",
         param="images[0]", content_type=JSON),
    edit("json-edit-dall-e-2", js({"model": "dall-e-2", "prompt": "hat", "images": LOOPBACK}), param="model",
         content_type=JSON, **MEDIA),
    # ----- image_url forms that urlsplit cannot read (were 500s), and addresses that are not public,
    # however they are written: refused before any connection
    *(edit(f"image-url-{name}", json_edit([{"image_url": url}]), code="invalid_image_url", param="images[0]",
           content_type=JSON, message=fragment)
      for name, url, fragment in [
          ("unclosed-ipv6-bracket", "https://[::1", "not valid"),
          ("stray-bracket", "https://a]b/", "not valid"),
          ("nfkc-slash-in-host", "https://\u2100/", "not valid"),
          ("port-out-of-range", "https://img.example:99999/x.png", "invalid port"),
          ("metadata-v4", "https://169.254.169.254/latest/meta-data/", "not public"),
          ("metadata-v6", "https://[fd00:ec2::254]/latest/meta-data/", "not public"),
          ("nat64-metadata", "https://[64:ff9b::a9fe:a9fe]/latest/meta-data/", "not public"),
          ("nat64-loopback", "https://[64:ff9b::7f00:1]/x.png", "not public"),
          ("nat64-local-use", "https://[64:ff9b:1::a00:1]/x.png", "not public"),
          ("ipv4-compatible-private", "https://[::a00:1]/x.png", "not public"),
          ("ipv4-compatible-metadata", "https://[::a9fe:a9fe]/x.png", "not public"),
          ("6to4-metadata", "https://[2002:a9fe:a9fe::1]/x.png", "not public"),
          ("6to4-private", "https://[2002:c0a8:101::1]/x.png", "not public"),
          ("teredo-private-client", "https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/x.png", "not public"),
          ("ipv4-mapped-loopback", "https://[::ffff:127.0.0.1]/x.png", "not public"),
          ("decimal-loopback", "https://2130706433/x.png", "not public"),
          ("short-loopback", "https://127.1/x.png", "not public"),
          ("localhost", "https://localhost/x.png", "not public"),
          ("zero-address", "https://0.0.0.0/x.png", "not public"),
      ]),
    edit("image-url-mask-6to4", js({"model": "gpt-image-1.5", "prompt": "hat", "images": [DATA_URL_IMAGE],
         "mask": {"image_url": "https://[2002:a9fe:a9fe::1]/m.png"}}), code="invalid_image_url", param="mask",
         content_type=JSON, message="not public"),
    # ----- strictness
    gen("model-empty-string", js({"model": "", "prompt": "otter"}), code="empty_string", param="model"),
    edit("multipart-model-empty", form(part("model", ""), part("prompt", "hat"), img(SMALL)),
         code="empty_string", param="model"),
    edit("multipart-n-arabic-indic-digit", gpt_edit(part("n", "\u0663"), img(SMALL)), code=TYPE, param="n"),
    edit("multipart-n-fullwidth-digit", gpt_edit(part("n", "\uff12"), img(SMALL)), code=TYPE, param="n"),
    gen("json-string-not-utf8", b'{"model": "dall-e-3", "prompt": "caf\xe9"}', **BAD_JSON),
    gen("json-overlong-utf8", b'{"model": "dall-e-3", "prompt": "\xc0\xaf"}', **BAD_JSON),
    gen("compression-over-int64", js({"model": "gpt-image-1.5", "prompt": "o", "output_format": "jpeg",
        "output_compression": 2**64}), code="integer_above_max_value", param="output_compression"),
    gen("partial-images-over-int64", js({"model": "gpt-image-1.5", "prompt": "o", "stream": True,
        "partial_images": -(2**64)}), code="integer_below_min_value", param="partial_images"),
    # ----- Authorization
    gen("auth-missing", OK_GEN, auth=None, **NO_KEY),
    gen("auth-empty", OK_GEN, auth="", **NO_KEY),
    gen("auth-bearer-alone", OK_GEN, auth="Bearer", **NO_KEY),
    gen("auth-bearer-spaces", OK_GEN, auth="Bearer    ", **NO_KEY),
    gen("auth-basic", OK_GEN, auth="Basic dXNlcjpwYXNzd29yZA==", **NO_KEY),
    gen("auth-10kb-key", OK_GEN, auth="Bearer sk-" + "k" * 10_240, **NO_KEY),
    gen("auth-non-ascii-key", OK_GEN, auth=NON_ASCII_KEY, **NO_KEY),
    gen("auth-wrong-key", OK_GEN, auth="Bearer sk-not-a-key-0123456789abcdef", **NO_KEY),
    edit("auth-missing-on-a-bad-edit", gpt_edit(), auth=None, **NO_KEY),
    job("auth-missing-on-jobs", "job_x", auth=None, param=None, **NO_KEY),
    # ----- methods and paths
    *(route_404(f"{method}-on-{name}", f"/images/{name}", method, b"" if method == "GET" else OK_GEN)
      for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS")
      for name in ("generations", "edits", "variations")),
    route_404("POST-on-jobs", "/images/jobs/job_x"),
    route_404("DELETE-on-jobs", "/images/jobs/job_x", "DELETE", b""),
    route_404("OPTIONS-on-jobs", "/images/jobs/job_x", "OPTIONS", b""),
    route_404("trailing-slash", "/images/generations/"),
    route_404("upper-case-path", "/IMAGES/GENERATIONS"),
    # the query string is not a second way to send parameters
    Case("query-string", "/images/generations?model=dall-e-3&prompt=otter&api-version=1",
         js({"model": "dall-e-3"}), **MISSING_PROMPT),
    # ----- async jobs
    gen("async-with-stream", js({"model": "gpt-image-1.5", "prompt": "otter", "stream": True}), code=VALUE,
        param="stream", headers=ASYNC),
    gen("async-with-bad-json", b"{", headers=ASYNC, **BAD_JSON),
    var("async-variation-not-square", form(img(WIDE)), code="invalid_image", param="image", headers=ASYNC),
    edit("async-bomb", gpt_edit(img(BOMB)), code="image_too_large", param="image", headers=ASYNC),
    job("job-id-path-traversal", "..%2F..%2Fetc%2Fpasswd"),
    job("job-id-dot-dot", ".."),
    job("job-id-null-byte", "job_%00abc"),
    job("job-id-quotes", "job_'%22%3B--"),
    job("job-id-4k-chars", "job_" + "a" * 4000),
    job("job-id-unicode", urllib.parse.quote("job_\u00fc\U0001f9a6")),
    job("job-id-with-query", "job_x?job_id=../../secret"),
    route_404("job-path-escapes-route", "/images/jobs/../generations", "GET", b""),
    route_404("job-id-empty", "/images/jobs/", "GET", b""),
]
# fmt: on


# ---------------------------------------------------------------------------------------------- sending


@dataclass
class Answer:
    """What came back, shaped like the requests.Response that helpers.answers.check_error reads."""

    status_code: int
    headers: CaseInsensitiveDict
    content: bytes
    elapsed: float

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def send(api_url: str, case: Case, api_key: str) -> Answer:
    """The request exactly as the case says: no header added but Host and Content-Length."""
    base = urllib.parse.urlsplit(api_url)
    conn = http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port, timeout=ANSWER_WITHIN_S)
    started = time.monotonic()
    try:
        conn.putrequest(case.method, base.path + case.path, skip_accept_encoding=True)
        auth = f"Bearer {api_key}" if case.auth is OWN_KEY else case.auth
        if auth is not None:
            conn.putheader("Authorization", auth if isinstance(auth, bytes) else auth.encode("latin-1"))
        if case.content_type is not None:
            conn.putheader("Content-Type", case.content_type)
        for name, value in case.headers.items():
            conn.putheader(name, value)
        if case.body or case.method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(case.body)))
        conn.endheaders(case.body or None)
        response = conn.getresponse()
        content = response.read()
        return Answer(
            response.status, CaseInsensitiveDict(response.getheaders()), content, time.monotonic() - started
        )
    finally:
        conn.close()


# ----------------------------------------------------------------------------------- what a request leaves


class Ledger:
    """Everything a request could leave behind: a key's quota counters and objects in the bucket."""

    def __init__(self, stack: dict[str, Any]) -> None:
        self.s3 = stack_aws(stack, "s3")
        self.bucket = stack["bucket"]
        self.keys_table = stack_aws(stack, "dynamodb", resource=True).Table(stack["tables"]["keys"])

    def objects(self, prefix: str = "") -> set[str]:
        found: set[str] = set()
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.update(obj["Key"] for obj in page.get("Contents", []))
        return found

    def used(self, key: NewKey) -> tuple[int, float]:
        """(used_images, used_credits) on the key item, read as the next request would."""
        item = self.keys_table.get_item(Key={"key_hash": key.item["key_hash"]}, ConsistentRead=True)["Item"]
        return int(item.get("used_images", 0)), float(item.get("used_credits", 0))

    def new_key(self, name: str, quota_images: int = 5) -> NewKey:
        return KeyStore(self.keys_table).create(name, quota_images=quota_images)


@pytest.fixture(scope="module")
def ledger(stack) -> Ledger:
    return Ledger(stack)


@pytest.fixture(scope="module")
def table_key(ledger) -> NewKey:
    """The table's own key, with an image quota, so that any charge or held reservation shows."""
    return ledger.new_key("adversarial table")


@pytest.fixture
def quota_key(ledger) -> NewKey:
    return ledger.new_key("adversarial after admission")


def upstream_requests(emulator_url: str) -> list[dict[str, Any]]:
    answer = requests.get(emulator_url + "/_emulator/requests", timeout=5)
    found: list[dict[str, Any]] = answer.json()["requests"]
    return found


def post(stack: dict[str, Any], key: NewKey, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key.raw_key}", **kwargs.pop("headers", {})}
    return requests.post(stack["api_url"] + path, headers=headers, timeout=60, **kwargs)


# ---------------------------------------------------------------------------------------------- 1. the table


def test_the_table_covers_every_endpoint():
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"
    paths = {case.path.split("?")[0] for case in CASES}
    for endpoint in ("generations", "edits", "variations"):
        assert f"/images/{endpoint}" in paths
    assert any(path.startswith("/images/jobs/") for path in paths)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_request_is_a_clean_4xx_and_leaves_nothing_behind(
    stack, emulator_control, ledger, table_key, case
):
    before, used = ledger.objects(), ledger.used(table_key)

    answer = send(stack["api_url"], case, table_key.raw_key)

    assert answer.elapsed < ANSWER_WITHIN_S
    assert 400 <= answer.status_code < 500, f"{answer.status_code}: {answer.text[:500]}"
    error = check_error(
        answer,  # type: ignore[arg-type]
        case.status,
        code=case.code,
        type=case.type,
        param=case.param,
        request_id=not case.gateway,
    )
    assert error["message"].strip()
    if case.message:
        assert case.message in error["message"], error["message"]
    assert answer.headers.get("x-amzn-RequestId"), "API Gateway sends its request id on every answer"
    assert len(answer.content) < 8 * 1024, "an error must not echo the request back"
    assert table_key.raw_key not in answer.text
    # Nothing half-done: the upstream was never asked, nothing was stored, no quota is held.
    assert upstream_requests(emulator_control) == []
    assert ledger.objects() == before
    assert ledger.used(table_key) == used


# -------------------------------------------------------------------------------------- 2. after admission


def test_an_upstream_failure_is_502_refunded_and_stores_nothing(stack, emulator_control, ledger, quota_key):
    requests.post(emulator_control + "/_emulator/faults", json={"mode": {"status": 500}}, timeout=5)
    before = ledger.objects("images/")

    response = post(
        stack,
        quota_key,
        "/images/generations",
        json={
            "model": "gpt-image-1.5",
            "prompt": "an otter",
            "n": 2,
            "quality": "low",
            "response_format": "url",
        },
    )

    check_error(response, 502, type="server_error", code="upstream_error")
    assert response.headers["x-should-retry"] == "false"  # the gateway already retried
    assert len(upstream_requests(emulator_control)) >= 1  # admitted and sent: there was something to undo
    assert ledger.used(quota_key) == (0, 0.0)
    assert ledger.objects("images/") == before


def test_an_upstream_failure_on_an_edit_by_prompt_directive(stack, emulator_control, ledger, quota_key):
    before = ledger.objects()

    response = post(
        stack,
        quota_key,
        "/images/edits",
        data={"model": "dall-e-2", "prompt": "[[emulator:500]] a hat", "n": "3", "response_format": "url"},
        files={"image": ("otter.png", SQUARE, "image/png")},
    )

    check_error(response, 502, type="server_error", code="upstream_error")
    assert response.headers["x-should-retry"] == "false"
    assert ledger.used(quota_key) == (0, 0.0)
    assert ledger.objects() == before


def test_validation_and_quota_refusals_charge_nothing(stack, emulator_control, ledger, quota_key):
    before = ledger.objects()
    too_many = {"model": "gpt-image-1.5", "prompt": "otters", "n": 11}
    over_quota = {"model": "gpt-image-1.5", "prompt": "otters", "n": 6}  # the key's quota is 5

    check_error(
        post(stack, quota_key, "/images/generations", json=too_many),
        400,
        code="integer_above_max_value",
        param="n",
    )
    refused = post(stack, quota_key, "/images/generations", json=over_quota)

    check_error(refused, 429, type="insufficient_quota", code="insufficient_quota")
    assert refused.headers["x-should-retry"] == "false"
    assert upstream_requests(emulator_control) == []
    assert ledger.used(quota_key) == (0, 0.0)
    assert ledger.objects() == before


# A gpt-image-1.5 edit of a noise picture: the emulator answers PNGs of about 1.7 MB each at 1024x1024, so
# three of them as b64_json (the model's default) make a body of about 7 MB, over Lambda's 6 MB.
NOISE = noise_png(256, 256)
BIG_EDIT = {"model": "gpt-image-1.5", "prompt": "add a hat", "n": "3", "size": "1024x1024"}


def test_a_response_too_large_for_lambda_is_413_charged_and_its_images_kept(
    stack, emulator_control, ledger, quota_key
):
    # The ledger rule: the upstream made (and billed) three images, so the key is charged for them even
    # though the answer cannot be sent; the images are kept as a finished job the 413 names.
    before = ledger.objects()

    response = post(stack, quota_key, "/images/edits", data=BIG_EDIT, files={"image": ("noise.png", NOISE)})

    error = check_error(response, 413, code="response_too_large", param="response_format")
    assert "response_format=url" in error["message"]
    assert len(upstream_requests(emulator_control)) == 1
    assert ledger.used(quota_key)[0] == 3
    job_id = response.headers["x-imagegw-job-id"]
    assert f"GET /v1/images/jobs/{job_id}" in error["message"]
    kept = ledger.objects() - before
    assert len(kept) == 3 and all(f"/{job_id}/" in key for key in kept)
    job = requests.get(
        f"{stack['api_url']}/images/jobs/{job_id}",
        headers={"Authorization": f"Bearer {quota_key.raw_key}"},
        timeout=30,
    )
    assert job.status_code == 200, job.text[:500]
    view = job.json()
    assert view["status"] == "succeeded" and len(view["result"]["data"]) == 3
    image = requests.get(view["result"]["data"][0]["url"], timeout=30)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    stranger = ledger.new_key("not the owner")
    hidden = requests.get(
        f"{stack['api_url']}/images/jobs/{job_id}",
        headers={"Authorization": f"Bearer {stranger.raw_key}"},
        timeout=30,
    )
    assert hidden.status_code == 404


def test_the_same_request_with_response_format_url_succeeds(stack, emulator_control, ledger, quota_key):
    before = ledger.objects("images/")

    response = post(
        stack,
        quota_key,
        "/images/edits",
        data={**BIG_EDIT, "response_format": "url"},
        files={"image": ("noise.png", NOISE)},
    )

    assert response.status_code == 200, response.text[:500]
    check_images_response(response.json(), n=3, size="1024x1024", gpt=True, as_url=True)
    request_id = response.headers["x-request-id"]
    stored = ledger.objects("images/") - before
    assert len(stored) == 3 and all(f"/{request_id}/" in key for key in stored)
    assert ledger.used(quota_key)[0] == 3


# ------------------------------------------------------------------------- 3. what the HTTP front refuses


def raw_exchange(api_url: str, head: bytes) -> tuple[int, dict[str, str], bytes, float]:
    """Bytes as written (no client library to tidy them up); the answer's status, headers and body."""
    import socket

    base = urllib.parse.urlsplit(api_url)
    started = time.monotonic()
    with socket.create_connection(
        (base.hostname or "127.0.0.1", base.port or 80), timeout=ANSWER_WITHIN_S
    ) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", data[:head_end])
                if length and len(data) >= head_end + 4 + int(length[1]):
                    break
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body, time.monotonic() - started


FRONT_REFUSALS = {
    "TRACE": (b"TRACE /v1/images/generations HTTP/1.1\r\nHost: x\r\n\r\n", 404, "unknown_url"),
    "unknown-method": (b"FROB /v1/images/generations HTTP/1.1\r\nHost: x\r\n\r\n", 404, "unknown_url"),
    "CONNECT": (b"CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: x\r\n\r\n", 404, "unknown_url"),
    "header-line-70kb": (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        431,
        None,
    ),
    "150-headers": (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
        + b"\r\n",
        431,
        None,
    ),
    "request-line-70kb": (
        b"GET /v1/images/jobs/" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
        None,
    ),
    "http-2-request-line": (b"POST /v1/images/generations HTTP/2.0\r\nHost: x\r\n\r\n", 400, None),
    "garbage-request-line": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, None),
}


@pytest.mark.parametrize("name", sorted(FRONT_REFUSALS))
def test_the_front_refuses_like_api_gateway_with_json_never_html_or_5xx(stack, emulator_control, name):
    """Methods no route serves and requests http.server will not read (its own HTML 501/431 pages before)."""
    head, status, code = FRONT_REFUSALS[name]

    answered, headers, body, elapsed = raw_exchange(stack["api_url"], head)

    assert elapsed < ANSWER_WITHIN_S
    assert answered == status, body[:300]
    assert headers["content-type"].startswith("application/json")
    assert headers.get("x-amzn-requestid")
    error = json.loads(body)["error"]
    assert error["message"].strip() and error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert b"<html" not in body.lower() and b"<!doctype" not in body.lower()
    assert upstream_requests(emulator_control) == []


# ------------------------------------------------------------------- 4. upstream faults after admission


# Each fault on an admitted request: the answer, nothing stored, and the charge the ledger rule gives: a
# refund when the upstream answered an error (nothing billed), the reservation charged when the request
# reached the upstream and may have been billed (connection dropped after sending, a 200 with a broken body).
FAULTS = {
    "server-error": ({"status": 500}, 502, "upstream_error", False),
    "overloaded": ({"status": 503}, 502, "upstream_error", False),
    "connection-dropped": ({"drop": True}, 502, "upstream_error", True),
    "body-not-json": ({"malformed_json": True}, 502, "upstream_error", True),
    "truncated-base64": ({"truncated_b64": True}, 502, "upstream_error", True),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_an_upstream_fault_is_answered_charged_by_the_ledger_rule_and_leaves_nothing(
    stack, emulator_control, ledger, quota_key, name
):
    fault, status, code, maybe_billed = FAULTS[name]
    requests.post(emulator_control + "/_emulator/faults", json={"mode": fault}, timeout=5)
    before = ledger.objects()

    response = post(
        stack,
        quota_key,
        "/images/generations",
        json={
            "model": "gpt-image-1.5",
            "prompt": "an otter",
            "n": 2,
            "quality": "low",
            "response_format": "url",
        },
    )

    check_error(response, status, type="server_error", code=code)
    assert response.headers["x-should-retry"] == "false"
    assert response.elapsed.total_seconds() < 28 + 1  # the sync deadline, plus one second
    assert len(upstream_requests(emulator_control)) >= 1
    images, credits = ledger.used(quota_key)
    if maybe_billed:
        assert images == 2 and credits > 0  # the reservation, charged once
    else:
        assert (images, credits) == (0, 0.0)
    assert ledger.objects() == before
