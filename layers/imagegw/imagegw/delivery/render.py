"""Turns an upstream result into what the client receives, then into its body: the one place answers
are serialised (JSON for url / b64_json, an SSE stream for `stream: true`, the job object).

`deliver` builds the typed answer (`imagegw.delivery.outputs`), storing the images in S3 first in url
mode; the synchronous API answers its rendered body, the jobs worker keeps the typed answer and the
stored keys (no JSON round trip).
"""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import dataclass
from typing import Any, Protocol, cast

from imagegw.delivery.outputs import Image, ImagesResponse, ImageStreamEvent, Usage, empty_usage
from imagegw.delivery.storage import ImageStore, image_key
from imagegw.domain import ApiResponse, ImageRequest, UpstreamResult
from imagegw.errors import RequestTooLarge
from imagegw.images import sniff_output_format

# Lambda's synchronous response limit is 6 MB including the envelope; keep a margin for headers.
MAX_SYNC_BODY_BYTES = 6 * 1024 * 1024 - 64 * 1024

GPT_TOP_LEVEL = ("background", "output_format", "quality", "size")


class Serialisable(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StoredImage:
    key: str
    bytes: int
    format: str


@dataclass(frozen=True)
class Delivery:
    """An answer ready to send: the typed answer, its rendered response and the S3 objects it wrote."""

    answer: ImagesResponse | list[ImageStreamEvent]
    response: ApiResponse
    stored: list[StoredImage]

    @property
    def stored_keys(self) -> list[str]:
        return [image.key for image in self.stored]


def deliver(
    request: ImageRequest,
    result: UpstreamResult,
    *,
    store: ImageStore,
    request_id: str,
    created: int,
    gpt_model: bool,
) -> Delivery:
    """Build and render the client's answer. An answer that fails half-way (a later put failing, the body
    over Lambda's limit) removes what it already wrote: the caller only learns of objects it is handed."""
    formats = [sniff_output_format(img.data) or "png" for img in result.images]
    if request.stream:
        events = stream_events(request, result, created, formats)
        return Delivery(events, sse_response(events), [])
    stored: list[StoredImage] = []
    try:
        answer = images_response(request, result, store, request_id, created, gpt_model, formats, stored)
        return Delivery(answer, json_response(answer), stored)
    except BaseException:
        with contextlib.suppress(Exception):
            store.delete([image.key for image in stored])
        raise


def json_body(answer: Serialisable) -> str:
    return json.dumps(answer.to_dict(), separators=(",", ":"))


def json_response(answer: ImagesResponse) -> ApiResponse:
    text = json_body(answer)
    if len(text) > MAX_SYNC_BODY_BYTES:
        raise RequestTooLarge(
            f"The response would be {len(text) / 1_000_000:.1f} MB, over the 6 MB limit of a synchronous "
            "response. Use response_format=url, or a smaller n.",
            param="response_format",
            code="response_too_large",
        )
    return ApiResponse(200, text)


def sse_response(events: list[ImageStreamEvent]) -> ApiResponse:
    text = "".join(sse(event.type, event.to_dict()) for event in events)
    if len(text) > MAX_SYNC_BODY_BYTES:
        raise RequestTooLarge(
            f"The streamed response would be {len(text) / 1_000_000:.1f} MB, over the 6 MB limit of a "
            "synchronous response. Use fewer partial_images, a smaller n, or stream=false with "
            "response_format=url.",
            param="stream",
            code="response_too_large",
        )
    return ApiResponse(200, text, content_type="text/event-stream")


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def images_response(
    request: ImageRequest,
    result: UpstreamResult,
    store: ImageStore,
    request_id: str,
    created: int,
    gpt_model: bool,
    formats: list[str],
    stored: list[StoredImage],
) -> ImagesResponse:
    """`stored` collects each object as it is written, so a failure part-way can remove them."""
    as_url = request.params.get("response_format") == "url"
    data: list[Image] = []
    for index, (image, fmt) in enumerate(zip(result.images, formats, strict=True)):
        if as_url:
            key = image_key("images", request_id, index, fmt, created)
            store.put_image(key, image.data, fmt)
            stored.append(StoredImage(key, len(image.data), fmt))
            data.append(Image(url=store.presign(key), revised_prompt=image.revised_prompt or None))
        else:
            b64 = base64.b64encode(image.data).decode("ascii")
            data.append(Image(b64_json=b64, revised_prompt=image.revised_prompt or None))
    if not gpt_model:
        return ImagesResponse(created=created, data=data)
    meta = {k: result.meta[k] for k in GPT_TOP_LEVEL if result.meta.get(k) is not None}
    meta.setdefault("output_format", formats[0] if formats else request.params.get("output_format", "png"))
    return ImagesResponse(created=created, data=data, **meta, usage=result.usage)  # type: ignore[arg-type]


def stream_events(
    request: ImageRequest, result: UpstreamResult, created: int, formats: list[str]
) -> list[ImageStreamEvent]:
    """As the upstream streamed them: each image's partials (indexed from 0) then that image completed.
    Partials the upstream did not tie to an image (a synthesized stream) all come first."""
    prefix = "image_edit" if request.operation == "edits" else "image_generation"
    meta = {
        "size": result.meta.get("size") or request.params.get("size", "auto"),
        "quality": result.meta.get("quality") or request.params.get("quality", "auto"),
        "background": result.meta.get("background") or request.params.get("background", "auto"),
        "output_format": result.meta.get("output_format") or (formats[0] if formats else "png"),
    }

    def partials(images: list[bytes]) -> list[ImageStreamEvent]:
        return [
            ImageStreamEvent(f"{prefix}.partial_image", _b64(partial), created, **meta, partial_image_index=i)
            for i, partial in enumerate(images)
        ]

    grouped = any(image.partials for image in result.images)
    events = [] if grouped else partials(result.partial_images)
    for image, usage in zip(result.images, _per_image_usage(result), strict=True):
        if grouped:
            events += partials(image.partials)
        events.append(ImageStreamEvent(f"{prefix}.completed", _b64(image.data), created, **meta, usage=usage))
    return events


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _per_image_usage(result: UpstreamResult) -> list[Usage]:
    """The usage of each completed event: clients add them up, so together they make the request's total.

    Each image's own figure when the upstream streamed one per image; else the whole total on the first
    image and zero usage on the others (a total cannot be split into consistent per-image parts).
    """
    if result.images and all(image.usage is not None for image in result.images):
        return [cast(Usage, dict(image.usage or {})) for image in result.images]
    return [
        cast(Usage, dict(result.usage or empty_usage())) if index == 0 else empty_usage()
        for index in range(len(result.images))
    ]
