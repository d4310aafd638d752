"""The upstream emulator (imagegw_dev.emulator), driven over real HTTP on 127.0.0.1 by the official SDK."""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests
from PIL import Image, ImageChops, ImageDraw, ImageStat

from imagegw_dev.emulator import Emulator, Fault, RecordedRequest, main

KEY = "sk-test-emulator-0123456789"
AZURE_VERSION = "2025-04-01-preview"


# ----- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu():
    with Emulator(api_key=KEY) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu):
    emu.reset()
    yield
    emu.reset()


@pytest.fixture
def client(emu):
    c = openai.OpenAI(base_url=emu.base_url + "/v1", api_key=KEY, max_retries=0, timeout=10)
    yield c
    c.close()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def _png(size=(1024, 1024), colour=(20, 120, 200), hole: tuple[int, int, int, int] | None = None) -> bytes:
    """A PNG; with `hole`, an RGBA image whose box is fully transparent (alpha 0)."""
    img = Image.new("RGBA" if hole else "RGB", size, (*colour, 255) if hole else colour)
    draw = ImageDraw.Draw(img)
    draw.rectangle((size[0] // 8, size[1] // 8, size[0] // 3, size[1] // 3), fill=(250, 250, 0))
    if hole:
        draw.rectangle(hole, fill=(0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _decode(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
    img.load()
    return img


def _diff(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> float:
    """Mean absolute RGB difference of two images inside `box`."""
    d = ImageChops.difference(a.convert("RGB").crop(box), b.convert("RGB").crop(box))
    return sum(ImageStat.Stat(d).mean) / 3


def _gen(emu, body: dict, **kw) -> requests.Response:
    return requests.post(
        emu.base_url + "/v1/images/generations", json=body, headers=_auth(), timeout=10, **kw
    )


# ----- generations via the SDK ---------------------------------------------------------------------


def test_dalle3_url_downloads_and_revised_prompt(client):
    raw = client.images.with_raw_response.generate(model="dall-e-3", prompt="a lighthouse at dusk")
    assert raw.headers["x-request-id"].startswith("req_")
    result = raw.parse()
    assert result.usage is None
    (item,) = result.data
    assert item.b64_json is None
    assert item.revised_prompt == "a lighthouse at dusk, rendered in detail"
    download = requests.get(item.url, timeout=10)
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(download.content))
    assert (img.format, img.size) == ("PNG", (1024, 1024))


def test_dalle2_b64_json_n_images_differ(client):
    result = client.images.generate(prompt="three cats", n=3, size="256x256", response_format="b64_json")
    images = [_decode(d.b64_json) for d in result.data]
    assert [i.size for i in images] == [(256, 256)] * 3
    assert all(d.url is None and d.revised_prompt is None for d in result.data)
    assert len({d.b64_json for d in result.data}) == 3


@pytest.mark.parametrize(
    ("output_format", "size", "quality", "pil_format", "answered_quality", "per_image"),
    [
        ("png", "1536x1024", None, "PNG", "medium", 1584),
        ("jpeg", "1024x1536", "low", "JPEG", "low", 408),
        ("webp", "1024x1024", "high", "WEBP", "high", 4160),
        ("png", "auto", "auto", "PNG", "medium", 1056),
    ],
)
def test_gpt_image_b64_size_format_usage(
    client, output_format, size, quality, pil_format, answered_quality, per_image
):
    prompt = "a red bicycle leaning on a wall"
    kwargs = {"quality": quality} if quality else {}
    result = client.images.generate(
        model="gpt-image-1", prompt=prompt, size=size, output_format=output_format, n=2, **kwargs
    )
    expected_size = "1024x1024" if size == "auto" else size
    for item in result.data:
        assert item.url is None
        img = _decode(item.b64_json)
        assert img.format == pil_format
        assert "x".join(map(str, img.size)) == expected_size
    assert (result.size, result.output_format, result.quality, result.background) == (
        expected_size,
        output_format,
        answered_quality,
        "opaque",
    )
    usage = result.usage
    text_tokens = math.ceil(len(prompt) / 4)
    assert usage.input_tokens_details.text_tokens == text_tokens
    assert usage.input_tokens_details.image_tokens == 0
    assert usage.output_tokens == 2 * per_image
    assert usage.input_tokens == text_tokens
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_gpt_image_ignores_response_format_and_honours_transparency(client):
    result = client.images.generate(
        model="gpt-image-1.5",
        prompt="a sticker",
        background="transparent",
        output_format="webp",
        response_format="url",
        size="512x512",
    )
    img = _decode(result.data[0].b64_json)
    assert (img.format, img.mode, img.size) == ("WEBP", "RGBA", (512, 512))
    assert img.getchannel("A").getextrema()[0] == 0
    assert result.background == "transparent"


def test_gif_output_is_animated_with_the_frames_asked_for(client):
    result = client.images.generate(
        model="gpt-image-2.5",
        prompt="a bouncing ball",
        output_format="gif",
        size="256x256",
        frame_count=3,
        frame_duration_ms=120,
    )
    img = _decode(result.data[0].b64_json)
    assert (img.format, img.size, img.n_frames) == ("GIF", (256, 256), 3)
    assert img.info["duration"] == 120
    assert result.output_format == "gif"


def test_svg_output_is_an_svg_document_of_the_size_asked_for(client):
    result = client.images.generate(
        model="gpt-image-2.5", prompt="a logo", output_format="svg", size="1024x640"
    )
    doc = base64.b64decode(result.data[0].b64_json)
    assert doc.startswith(b"<svg ") and doc.endswith(b"</svg>")
    assert b'width="1024" height="640"' in doc
    assert result.output_format == "svg"


@pytest.mark.parametrize(
    "extra", [{"output_format": "svg", "n": 2}, {"output_format": "gif", "stream": True}]
)
def test_svg_and_gif_limits(client, extra):
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="gpt-image-2.5", prompt="x", **extra)


def test_determinism(client):
    def gen(prompt: str, n: int = 1) -> list[str]:
        return [d.b64_json for d in client.images.generate(model="gpt-image-1", prompt=prompt, n=n).data]

    first = gen("a blue whale")
    assert gen("a blue whale") == first
    assert gen("a blue whale [[emulator:delay=0]]") == first  # the directive is stripped before drawing
    assert gen("a grey whale") != first
    two = gen("a blue whale", n=2)
    assert two[0] == first[0] and two[1] != two[0]


# ----- edits and variations ------------------------------------------------------------------------


def test_edit_one_image_without_mask_changes_the_centre(client, emu):
    source = _png()
    result = client.images.edit(
        image=("in.png", source, "image/png"), prompt="add a moon", model="gpt-image-1"
    )
    out = _decode(result.data[0].b64_json)
    original = Image.open(io.BytesIO(source))
    assert out.size == (1024, 1024)
    assert _diff(out, original, (256, 256, 768, 768)) > 20  # centre half repainted
    assert _diff(out, original, (0, 0, 1024, 200)) < 1  # the rest untouched
    assert result.usage.input_tokens_details.image_tokens == 65
    (rec,) = emu.requests
    assert rec.files == [("image", "in.png", "image/png", len(source))]
    assert rec.form["prompt"] == "add a moon" and rec.form["model"] == "gpt-image-1"


def test_edit_dalle2_uses_the_images_own_transparency(client):
    source = _png(size=(512, 512), hole=(0, 0, 511, 255))  # top half transparent
    result = client.images.edit(
        image=("in.png", source, "image/png"), prompt="sky", size="512x512", response_format="b64_json"
    )
    out = _decode(result.data[0].b64_json)
    original = Image.open(io.BytesIO(source)).convert("RGB")
    assert _diff(out, original, (0, 0, 512, 256)) > 20
    assert _diff(out, original, (0, 300, 512, 512)) < 1
    assert result.usage is None


def test_edit_four_images_and_mask(client, emu):
    images = [(f"img{i}.png", _png(colour=(40 * i, 90, 160)), "image/png") for i in range(4)]
    mask = _png(hole=(0, 0, 511, 1023))  # left half transparent: edit there
    result = client.images.edit(
        image=images,
        mask=("mask.png", mask, "image/png"),
        prompt="paint the left side",
        model="gpt-image-1",
        n=2,
        quality="low",
    )
    first = Image.open(io.BytesIO(images[0][1]))
    outs = [_decode(d.b64_json) for d in result.data]
    for out in outs:
        assert _diff(out, first, (0, 0, 512, 1024)) > 20
        assert _diff(out, first, (560, 0, 1024, 1024)) < 1
    assert outs[0].tobytes() != outs[1].tobytes()
    assert result.usage.input_tokens_details.image_tokens == 4 * 65
    assert result.usage.output_tokens == 2 * 272
    (rec,) = emu.requests
    assert rec.path == "/v1/images/edits"
    assert [(f[0], f[1], f[2]) for f in rec.files] == [
        ("image[]", "img0.png", "image/png"),
        ("image[]", "img1.png", "image/png"),
        ("image[]", "img2.png", "image/png"),
        ("image[]", "img3.png", "image/png"),
        ("mask", "mask.png", "image/png"),
    ]
    assert rec.files[4][3] == len(mask)
    assert rec.form == {"prompt": "paint the left side", "model": "gpt-image-1", "n": "2", "quality": "low"}
    assert rec.headers["content-type"].startswith("multipart/form-data; boundary=")


def test_edit_multipart_indexed_fields_and_json_data_urls(emu):
    png = _png(size=(256, 256))
    r = requests.post(
        emu.base_url + "/v1/images/edits",
        headers=_auth(),
        data={"prompt": "x", "model": "gpt-image-1", "size": "256x256"},
        files=[("image[0]", ("a.png", png, "application/octet-stream")), ("image[1]", ("b.png", png))],
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["input_tokens_details"]["image_tokens"] == 130
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    body = {"model": "gpt-image-1", "prompt": "x", "size": "256x256", "images": [{"image_url": data_url}]}
    body["mask"] = {
        "image_url": "data:image/png;base64,"
        + base64.b64encode(_png((256, 256), hole=(0, 0, 99, 99))).decode()
    }
    r = requests.post(emu.base_url + "/v1/images/edits", headers=_auth(), json=body, timeout=10)
    assert r.status_code == 200, r.text
    assert _decode(r.json()["data"][0]["b64_json"]).size == (256, 256)
    assert emu.requests[-1].json["images"][0]["image_url"] == data_url
    r = requests.post(
        emu.base_url + "/v1/images/edits",
        headers=_auth(),
        json={"model": "gpt-image-1", "prompt": "x", "images": [{"file_id": "file-123"}]},
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "images[0]"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks variations deprecated
def test_variation(client, emu):
    source = _png(size=(512, 512))
    result = client.images.create_variation(
        image=("src.png", source, "image/png"), n=2, size="256x256", response_format="b64_json"
    )
    outs = [_decode(d.b64_json) for d in result.data]
    assert [o.size for o in outs] == [(256, 256)] * 2
    assert outs[0].tobytes() != outs[1].tobytes()
    shrunk = Image.open(io.BytesIO(source)).convert("RGB").resize((256, 256))
    assert _diff(outs[0], shrunk, (0, 0, 256, 256)) > 10
    again = client.images.create_variation(
        image=("src.png", source, "image/png"), n=1, size="256x256", response_format="b64_json"
    )
    assert again.data[0].b64_json == result.data[0].b64_json
    assert emu.requests[0].files[0][:2] == ("image", "src.png")


# ----- streaming -----------------------------------------------------------------------------------


def test_stream_generate_partials_then_completed(client):
    stream = client.images.generate(
        model="gpt-image-1", prompt="a fox", stream=True, partial_images=2, size="1024x1536", quality="high"
    )
    events = list(stream)
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    final = events[-1]
    assert (final.size, final.quality, final.background, final.output_format) == (
        "1024x1536",
        "high",
        "opaque",
        "png",
    )
    assert final.usage.output_tokens == 6240
    assert _decode(final.b64_json).size == (1024, 1536)
    assert all(_decode(e.b64_json).size == (1024, 1536) for e in events[:2])
    plain = client.images.generate(model="gpt-image-1", prompt="a fox", size="1024x1536", quality="high")
    assert plain.data[0].b64_json == final.b64_json


def test_stream_edit_raw_wire_format(emu):
    r = requests.post(
        emu.base_url + "/v1/images/edits",
        headers=_auth(),
        data={
            "prompt": "x",
            "model": "gpt-image-1",
            "size": "256x256",
            "stream": "true",
            "partial_images": "1",
        },
        files={"image": ("a.png", _png(size=(256, 256)), "image/png")},
        timeout=10,
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["x-request-id"].startswith("req_")
    chunks = [c for c in r.text.split("\n\n") if c]
    names = [c.split("\n")[0] for c in chunks]
    assert names == ["event: image_edit.partial_image", "event: image_edit.completed"]
    completed = json.loads(chunks[1].split("\n")[1].removeprefix("data: "))
    assert completed["type"] == "image_edit.completed"
    assert set(completed) == {
        "type",
        "b64_json",
        "created_at",
        "size",
        "quality",
        "background",
        "output_format",
        "usage",
    }
    assert abs(completed["created_at"] - time.time()) < 60


def test_stream_zero_partials(client):
    events = list(client.images.generate(model="gpt-image-1", prompt="a", stream=True, size="256x256"))
    assert [e.type for e in events] == ["image_generation.completed"]


# ----- faults --------------------------------------------------------------------------------------


def _generate(client, prompt: str = "a tree"):
    return client.images.generate(model="gpt-image-1", prompt=prompt, size="256x256")


FAULT_CASES = [
    ("429", Fault(status=429, retry_after="1"), {"status": 429, "retry_after": "1"}),
    ("500", Fault(status=500), {"status": 500}),
    ("drop", Fault(drop=True), {"drop": True}),
    ("malformed", Fault(malformed_json=True), {"malformed_json": True}),
    ("truncated", Fault(truncated_b64=True), {"truncated_b64": True}),
]


def _assert_fault(client, kind: str, prompt: str = "a tree") -> None:
    if kind == "429":
        with pytest.raises(openai.RateLimitError) as err:
            _generate(client, prompt)
        assert err.value.response.headers["retry-after"] == "1"
        assert err.value.code == "rate_limit_exceeded"
        assert err.value.response.headers["x-request-id"].startswith("req_")
    elif kind == "500":
        with pytest.raises(openai.InternalServerError) as err:
            _generate(client, prompt)
        assert err.value.status_code == 500 and err.value.type == "server_error"
    elif kind == "drop":
        with pytest.raises(openai.APIConnectionError):
            _generate(client, prompt)
    elif kind == "malformed":
        with pytest.raises(ValueError):  # the SDK fails to parse the 200 body (json.JSONDecodeError)
            _generate(client, prompt)
    elif kind == "truncated":
        result = _generate(client, prompt)
        with pytest.raises((binascii.Error, OSError)):
            _decode(result.data[0].b64_json)


@pytest.mark.parametrize(("kind", "fault", "as_dict"), FAULT_CASES, ids=[c[0] for c in FAULT_CASES])
def test_queued_fault_then_recovery(client, emu, kind, fault, as_dict):
    emu.add_faults(fault, as_dict)
    _assert_fault(client, kind)
    _assert_fault(client, kind)  # the dict form
    assert _decode(_generate(client).data[0].b64_json).size == (256, 256)  # queue consumed
    assert len(emu.requests) == 3


@pytest.mark.parametrize("kind", [c[0] for c in FAULT_CASES])
def test_prompt_directive_fault(client, emu, kind):
    emu.add_faults(Fault(status=503))
    _assert_fault(client, kind, prompt=f"a tree [[emulator:{kind}]] in winter")
    with pytest.raises(openai.InternalServerError) as err:  # the queued fault was left for the next request
        _generate(client)
    assert err.value.status_code == 503
    _generate(client)


def test_delay_fault_queued_and_directive(client, emu):
    emu.add_faults({"delay": 1.0})
    start = time.monotonic()
    _generate(client)
    assert time.monotonic() - start >= 1.0
    start = time.monotonic()
    _generate(client, "a tree [[emulator:delay=0.6]]")
    assert time.monotonic() - start >= 0.6
    start = time.monotonic()
    _generate(client)
    # Nothing lingers: the next request is not delayed (bound generous for a loaded machine).
    assert time.monotonic() - start < 0.6


def test_delay_then_status_and_custom_message(client, emu):
    emu.add_faults(Fault(status=503, delay=0.2, message="upstream overloaded"))
    start = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        _generate(client)
    assert time.monotonic() - start >= 0.2
    assert err.value.status_code == 503 and err.value.message.endswith("upstream overloaded")


def test_one_message_of_a_batch_fails(client):
    prompts = ["one", "two [[emulator:500]]", "three"]
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda p: _outcome(client, p), prompts))
    assert outcomes == ["ok", 500, "ok"]


def _outcome(client, prompt: str):
    try:
        _generate(client, prompt)
        return "ok"
    except openai.APIStatusError as exc:
        return exc.status_code


def test_fault_mode(client, emu):
    emu.set_fault_mode({"status": 502})
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            _generate(client)
    emu.add_faults(Fault(status=429, retry_after="2"))  # queued faults go first
    with pytest.raises(openai.RateLimitError):
        _generate(client)
    with pytest.raises(openai.InternalServerError):
        _generate(client)
    emu.set_fault_mode(None)
    _generate(client)


def test_faults_over_http_and_recorded_requests(client, emu):
    control = emu.base_url + "/_emulator"
    r = requests.post(
        control + "/faults", json={"faults": [{"status": 500}], "mode": {"delay": 0.01}}, timeout=5
    )
    assert (
        r.status_code == 200 and r.json()["faults"][0]["status"] == 500 and r.json()["mode"]["delay"] == 0.01
    )
    assert requests.post(control + "/faults", json={"faults": [{"bogus": 1}]}, timeout=5).status_code == 400
    with pytest.raises(openai.InternalServerError):
        _generate(client, "first")
    _generate(client, "second")
    assert requests.post(control + "/faults", json={"mode": None}, timeout=5).json() == {
        "faults": [],
        "mode": None,
    }
    recorded = requests.get(control + "/requests", timeout=5).json()["requests"]
    assert [r["json"]["prompt"] for r in recorded] == ["first", "second"]
    assert recorded[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert recorded[0]["path"] == "/v1/images/generations"
    assert all(isinstance(r, RecordedRequest) for r in emu.requests)
    assert requests.post(control + "/reset", timeout=5).json() == {"ok": True}
    assert emu.requests == []
    assert requests.get(control + "/requests", timeout=5).json() == {"requests": []}


def test_fault_rejects_unknown_fields():
    with pytest.raises(ValueError):
        Emulator().add_faults({"status": 500, "oops": True})


# ----- auth, Azure, validation ---------------------------------------------------------------------


def test_wrong_bearer_key_is_401(emu):
    bad = openai.OpenAI(base_url=emu.base_url + "/v1", api_key="sk-wrong-key-123", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.images.generate(prompt="x")
    body = err.value.body
    assert body == {
        "message": body["message"],
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert "sk-wrong-key-123" not in body["message"]
    r = requests.post(emu.base_url + "/v1/images/generations", json={"prompt": "x"}, timeout=5)
    assert r.status_code == 401 and r.headers["x-request-id"].startswith("req_")


def test_azure_generate_and_edit_with_sdk(emu):
    azure = openai.AzureOpenAI(
        azure_endpoint=emu.base_url, api_key=KEY, api_version=AZURE_VERSION, max_retries=0
    )
    result = azure.images.generate(model="gpt-image-1", prompt="a kite", size="256x256")
    assert _decode(result.data[0].b64_json).size == (256, 256) and result.usage is not None
    rec = emu.requests[-1]
    assert rec.path == "/openai/deployments/gpt-image-1/images/generations"
    assert rec.deployment == "gpt-image-1" and rec.query == {"api-version": AZURE_VERSION}
    assert rec.headers["api-key"] == KEY
    deployed = openai.AzureOpenAI(
        azure_endpoint=emu.base_url,
        azure_deployment="dall-e-3",
        api_key=KEY,
        api_version=AZURE_VERSION,
        max_retries=0,
    )
    result = deployed.images.generate(model="ignored", prompt="a kite")  # the deployment is the model
    assert result.data[0].url and result.data[0].revised_prompt == "a kite, rendered in detail"
    assert emu.requests[-1].json["model"] == "ignored"
    edit_client = openai.AzureOpenAI(
        azure_endpoint=emu.base_url,
        azure_deployment="gpt-image-1-edits",
        api_key=KEY,
        api_version=AZURE_VERSION,
        max_retries=0,
    )
    edited = edit_client.images.edit(
        image=("a.png", _png((256, 256)), "image/png"), prompt="x", size="256x256"
    )
    assert _decode(edited.data[0].b64_json).size == (256, 256)
    assert emu.requests[-1].deployment == "gpt-image-1-edits"


def test_azure_requires_api_version_and_key(emu):
    url = emu.base_url + "/openai/deployments/gpt-image-1/images/generations"
    r = requests.post(url, json={"prompt": "x"}, headers={"api-key": KEY}, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["param"] == "api-version"
    r = requests.post(url, params={"api-version": AZURE_VERSION}, json={"prompt": "x"}, timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = requests.post(
        url, params={"api-version": AZURE_VERSION}, json={"prompt": "x"}, headers=_auth(), timeout=5
    )
    assert r.status_code == 401  # Azure wants the api-key header, not a bearer key
    r = requests.post(
        url,
        params={"api-version": AZURE_VERSION},
        json={"prompt": "x", "size": "256x256"},
        headers={"api-key": KEY},
        timeout=5,
    )
    assert r.status_code == 200 and r.json()["size"] == "256x256"


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "param"),
    [
        ("/v1/images/generations", {"model": "gpt-image-1"}, 400, "missing_required_parameter", "prompt"),
        ("/v1/images/generations", {"prompt": "x", "size": "big"}, 400, "invalid_value", "size"),
        ("/v1/images/generations", {"prompt": "x", "n": 11}, 400, "integer_above_max_value", "n"),
        ("/v1/images/generations", {"prompt": "x", "model": "dall-e-3", "n": 2}, 400, None, "n"),
        (
            "/v1/images/edits",
            {"prompt": "x", "model": "gpt-image-1"},
            400,
            "missing_required_parameter",
            "images",
        ),
        ("/v1/images/generations", {"prompt": "x [[emulator:explode]]"}, 400, "invalid_value", "prompt"),
        ("/v1/models", {}, 404, None, None),
    ],
)
def test_validation_errors_in_openai_format(emu, path, body, status, code, param):
    r = requests.post(emu.base_url + path, json=body, headers=_auth(), timeout=5)
    assert r.status_code == status
    assert r.headers["x-request-id"].startswith("req_")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    if code == "missing_required_parameter" and param == "prompt":
        assert error["message"] == "Missing required parameter: 'prompt'."


def test_edit_rejects_non_images_and_missing_image(emu):
    r = requests.post(
        emu.base_url + "/v1/images/edits",
        headers=_auth(),
        data={"prompt": "x"},
        files=[("image[]", ("a.txt", b"hello", "application/octet-stream"))],
        timeout=5,
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unsupported_file_mimetype"
    assert r.json()["error"]["param"] == "image[0]"
    r = requests.post(
        emu.base_url + "/v1/images/edits",
        headers=_auth(),
        data={"prompt": "x"},
        files={"mask": ("m.png", _png((64, 64)))},
        timeout=5,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "image"


def test_unknown_file_is_404(emu):
    r = requests.get(emu.base_url + "/files/img-nope.png", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


# ----- server behaviour ----------------------------------------------------------------------------


def test_concurrent_requests(client, emu):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: _generate(client, f"tree {i}"), range(8)))
    assert len({r.data[0].b64_json for r in results}) == 8
    assert len(emu.requests) == 8


def test_client_that_disconnects_does_not_hurt(client, emu):
    emu.add_faults(Fault(delay=0.3))
    body = json.dumps({"prompt": "x", "model": "gpt-image-1", "size": "64x64"}).encode()
    host, port = emu.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    time.sleep(0.5)  # the server answers into a closed socket
    assert _decode(_generate(client).data[0].b64_json).size == (256, 256)


def test_stop_and_restart_on_the_same_port():
    emu = Emulator().start()
    url = emu.base_url
    r = requests.post(url + "/v1/images/generations", json={"prompt": "x", "size": "64x64"}, timeout=5)
    assert r.status_code == 200 and "url" in r.json()["data"][0]  # no api_key: no auth required
    emu.stop()
    with pytest.raises(requests.ConnectionError):
        requests.post(url + "/v1/images/generations", json={"prompt": "x"}, timeout=2)
    with emu:
        assert emu.base_url == url
        assert requests.get(url + "/_emulator/health", timeout=5).json() == {"ok": True}


def test_cli_help_says_test_double(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "TEST DOUBLE of upstream image services" in text
    assert "NOT an image model" in text
    assert "local development and tests only" in text
    for option in ("--port", "--host", "--api-key"):
        assert option in text


def test_cli_serves_until_ctrl_c():
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root / "layers" / "imagegw"), str(root / "devtools")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagegw_dev.emulator", "--port", "0", "--api-key", "k"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stderr.readline()
        assert "TEST DOUBLE" in line
        base = line.split("serving on ")[1].split()[0]
        r = requests.post(
            base + "/v1/images/generations",
            json={"prompt": "x", "model": "gpt-image-1", "size": "64x64"},
            headers={"Authorization": "Bearer k"},
            timeout=5,
        )
        assert r.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
        log = proc.stderr.read()
        assert "POST /v1/images/generations" in log and "200" in log
        assert "b64" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
