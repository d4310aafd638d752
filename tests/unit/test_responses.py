"""Rendering an upstream result as the client's answer: JSON bodies and SSE streams."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from helpers.fakes import InMemoryImageStore
from PIL import Image

from imagegw.delivery import render as responses
from imagegw.delivery.render import deliver
from imagegw.domain import GeneratedImage, ImageRequest, UpstreamResult
from imagegw.errors import RequestTooLarge

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><circle r="4"/></svg>'


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(out, format="PNG")
    return out.getvalue()


def usage(total_in: int, total_out: int) -> dict[str, Any]:
    return {
        "total_tokens": total_in + total_out,
        "input_tokens": total_in,
        "output_tokens": total_out,
        "input_tokens_details": {"text_tokens": total_in, "image_tokens": 0},
    }


def run(request: ImageRequest, result: UpstreamResult, store: InMemoryImageStore | None = None) -> Any:
    delivery = deliver(
        request, result, store=store or InMemoryImageStore(), request_id="req_1", created=100, gpt_model=True
    )
    return delivery.response


def events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]


def stream_request(n: int = 2) -> ImageRequest:
    return ImageRequest("generations", "gpt-image-1", {"n": n, "stream": True, "partial_images": 1})


def test_stream_completed_events_carry_each_images_own_usage():
    # Clients add up the usage of the completed events: the request's total must not be counted n times.
    result = UpstreamResult(
        images=[GeneratedImage(png(), usage=usage(2, 272)), GeneratedImage(png(), usage=usage(2, 272))],
        usage=usage(4, 544),
    )
    completed = [e for e in events(run(stream_request(), result).body) if e["type"].endswith("completed")]
    assert [e["usage"] for e in completed] == [usage(2, 272), usage(2, 272)]


def test_stream_without_per_image_usage_puts_the_total_on_the_first_image():
    result = UpstreamResult(images=[GeneratedImage(png()), GeneratedImage(png())], usage=usage(4, 544))
    completed = [e for e in events(run(stream_request(), result).body) if e["type"].endswith("completed")]
    assert completed[0]["usage"] == usage(4, 544)
    assert completed[1]["usage"] == usage(0, 0)


def test_stream_of_one_image_carries_the_total():
    result = UpstreamResult(images=[GeneratedImage(png())], usage=usage(3, 272))
    [completed] = events(run(stream_request(1), result).body)
    assert completed["usage"] == usage(3, 272)


def test_svg_output_is_stored_as_svg_and_reported_as_svg():
    store = InMemoryImageStore()
    request = ImageRequest(
        "generations", "gpt-image-2.5", {"n": 1, "output_format": "svg", "response_format": "url"}
    )
    result = UpstreamResult(images=[GeneratedImage(SVG)], usage=usage(1, 10))
    body = json.loads(run(request, result, store).body)
    [(key, data)] = store.objects.items()
    fmt = store.formats[key]
    assert key.endswith("/0.svg") and fmt == "svg" and data == SVG
    assert body["output_format"] == "svg"
    assert body["data"][0]["url"].startswith("https://bucket.example/")


def test_svg_output_as_b64_json():
    request = ImageRequest("generations", "gpt-image-2.5", {"n": 1, "output_format": "svg"})
    body = json.loads(run(request, UpstreamResult(images=[GeneratedImage(SVG)])).body)
    assert base64.b64decode(body["data"][0]["b64_json"]) == SVG
    assert body["output_format"] == "svg"


def test_stream_of_two_images_sends_each_images_partials_before_it():
    first, second = (
        GeneratedImage(png(), partials=[b"a0", b"a1"]),
        GeneratedImage(png(), partials=[b"b0", b"b1"]),
    )
    result = UpstreamResult(images=[first, second], partial_images=[b"a0", b"b0", b"a1", b"b1"])
    sent = events(run(stream_request(), result).body)
    assert [(e["type"].split(".")[1], e.get("partial_image_index")) for e in sent] == [
        ("partial_image", 0),
        ("partial_image", 1),
        ("completed", None),
        ("partial_image", 0),
        ("partial_image", 1),
        ("completed", None),
    ]
    assert [base64.b64decode(e["b64_json"]) for e in sent if "partial_image_index" in e] == [
        b"a0",
        b"a1",
        b"b0",
        b"b1",
    ]


def test_stream_partials_not_tied_to_an_image_come_first():
    result = UpstreamResult(images=[GeneratedImage(png())], partial_images=[b"p0", b"p1"])
    sent = events(run(stream_request(1), result).body)
    assert [e.get("partial_image_index") for e in sent] == [0, 1, None]


class FailingThirdPut(InMemoryImageStore):
    def put_image(self, key: str, data: bytes, fmt: str) -> None:
        if len(self.objects) == 2:
            raise OSError("S3 is unavailable")
        super().put_image(key, data, fmt)


def test_a_failed_put_leaves_no_objects_behind():
    store = FailingThirdPut()
    request = ImageRequest("generations", "dall-e-2", {"prompt": "p", "n": 3, "response_format": "url"})
    result = UpstreamResult(images=[GeneratedImage(png()) for _ in range(3)])
    with pytest.raises(OSError):
        deliver(request, result, store=store, request_id="req_1", created=100, gpt_model=False)
    assert store.objects == {}


def test_an_answer_over_lambdas_limit_leaves_no_objects_behind(monkeypatch):
    monkeypatch.setattr(responses, "MAX_SYNC_BODY_BYTES", 100)
    store = InMemoryImageStore()
    request = ImageRequest("generations", "dall-e-2", {"prompt": "p", "n": 2, "response_format": "url"})
    result = UpstreamResult(images=[GeneratedImage(png(), revised_prompt="x" * 200) for _ in range(2)])
    with pytest.raises(RequestTooLarge):
        deliver(request, result, store=store, request_id="req_1", created=100, gpt_model=False)
    assert store.objects == {}
