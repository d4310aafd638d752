"""Turns an upstream result into the OpenAI response body: JSON (url / b64_json) or an SSE stream."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

from imagegw.delivery.storage import ImageStore, image_key
from imagegw.domain import ApiResponse, ImageRequest, UpstreamResult
from imagegw.errors import RequestTooLarge
from imagegw.images import sniff_output_format

# Lambda's synchronous response limit is 6 MB including the envelope; keep a margin for headers.
MAX_SYNC_BODY_BYTES = 6 * 1024 * 1024 - 64 * 1024

GPT_TOP_LEVEL = ("background", "output_format", "quality", "size")


def render(
    request: ImageRequest,
    result: UpstreamResult,
    *,
    store: ImageStore,
    request_id: str,
    created: int,
    gpt_model: bool,
) -> tuple[ApiResponse, list[str]]:
    """Build the client's response; returns it with the S3 keys written (to delete if a later step fails)."""
    formats = [sniff_output_format(img.data) or "png" for img in result.images]
    if request.stream:
        return _render_stream(request, result, created, formats), []
    stored: list[str] = []
    try:
        return _render_json(request, result, store, request_id, created, gpt_model, formats, stored), stored
    except BaseException:
        # The caller only learns which objects to remove from a returned answer: clean up here what a
        # failed answer (a later put failing, the body over Lambda's limit) already wrote.
        with contextlib.suppress(Exception):
            store.delete(stored)
        raise


def _render_json(
    request: ImageRequest,
    result: UpstreamResult,
    store: ImageStore,
    request_id: str,
    created: int,
    gpt_model: bool,
    formats: list[str],
    stored: list[str],
) -> ApiResponse:
    data: list[dict[str, Any]] = []
    as_url = request.params.get("response_format") == "url"
    for index, (image, fmt) in enumerate(zip(result.images, formats, strict=True)):
        item: dict[str, Any] = {}
        if as_url:
            key = image_key("images", request_id, index, fmt, created)
            store.put_image(key, image.data, fmt)
            stored.append(key)
            item["url"] = store.presign(key)
        else:
            item["b64_json"] = base64.b64encode(image.data).decode("ascii")
        if image.revised_prompt:
            item["revised_prompt"] = image.revised_prompt
        data.append(item)
    body: dict[str, Any] = {"created": created, "data": data}
    if gpt_model:
        body.update(_gpt_meta(request, result, formats))
        if result.usage is not None:
            body["usage"] = result.usage
    text = json.dumps(body, separators=(",", ":"))
    if len(text) > MAX_SYNC_BODY_BYTES:
        raise RequestTooLarge(
            f"The response would be {len(text) / 1_000_000:.1f} MB, over the 6 MB limit of a synchronous "
            "response. Use response_format=url, or a smaller n.",
            param="response_format",
            code="response_too_large",
        )
    return ApiResponse(200, text)


def _gpt_meta(request: ImageRequest, result: UpstreamResult, formats: list[str]) -> dict[str, Any]:
    meta = {k: result.meta[k] for k in GPT_TOP_LEVEL if result.meta.get(k) is not None}
    meta.setdefault("output_format", formats[0] if formats else request.params.get("output_format", "png"))
    return meta


def _render_stream(
    request: ImageRequest, result: UpstreamResult, created: int, formats: list[str]
) -> ApiResponse:
    prefix = "image_edit" if request.operation == "edits" else "image_generation"
    meta = {
        "size": result.meta.get("size") or request.params.get("size", "auto"),
        "quality": result.meta.get("quality") or request.params.get("quality", "auto"),
        "background": result.meta.get("background") or request.params.get("background", "auto"),
        "output_format": result.meta.get("output_format") or (formats[0] if formats else "png"),
    }
    chunks = []

    def partials(images: list[bytes]) -> None:
        for index, partial in enumerate(images):
            event = {
                "type": f"{prefix}.partial_image",
                "b64_json": base64.b64encode(partial).decode("ascii"),
                "created_at": created,
                **meta,
                "partial_image_index": index,
            }
            chunks.append(sse(event["type"], event))

    # As the upstream streamed them: each image's partials (indexed from 0) then that image completed.
    # Partials the upstream did not tie to an image (a synthesized stream) all come first.
    grouped = any(image.partials for image in result.images)
    if not grouped:
        partials(result.partial_images)
    for image, usage in zip(result.images, _per_image_usage(result), strict=True):
        if grouped:
            partials(image.partials)
        event = {
            "type": f"{prefix}.completed",
            "b64_json": base64.b64encode(image.data).decode("ascii"),
            "created_at": created,
            **meta,
            "usage": usage,
        }
        chunks.append(sse(event["type"], event))
    text = "".join(chunks)
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


def _per_image_usage(result: UpstreamResult) -> list[dict[str, Any]]:
    """The usage of each completed event: clients add them up, so together they make the request's total.

    Each image's own figure when the upstream streamed one per image; else the whole total on the first
    image and zero usage on the others (a total cannot be split into consistent per-image parts).
    """
    if result.images and all(image.usage is not None for image in result.images):
        return [dict(image.usage or {}) for image in result.images]
    return [
        dict(result.usage or empty_usage()) if index == 0 else empty_usage()
        for index in range(len(result.images))
    ]


def empty_usage() -> dict[str, Any]:
    return {
        "total_tokens": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
    }
