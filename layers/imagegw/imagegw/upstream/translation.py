"""From a validated client request to what one route's upstream is asked, and back.

- Gateway parameters (`catalog.GATEWAY_PARAMS`) are never forwarded as the client sent them: the upstream
  is asked for b64_json where its model takes `response_format` (never sent to GPT image models), and the
  stream flag travels separately (with `partial_images` when the upstream model streams).
- A route's `translate` (retired dall-e / gpt-image-1 requests served by a current model) maps values
  (quality hd -> high, sizes to the target's nearest), folds `style` into the prompt, may serve an
  operation as another (variations as an edit with a fixed prompt), and on the way back resizes the images
  to the size the client asked for and supplies `revised_prompt`.
- Whatever the upstream model does not take (catalog `takes`) is dropped.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from imagegw.domain import ImageFile, ImageRequest, Operation, UpstreamResult
from imagegw.errors import ModelNotFound
from imagegw.request.catalog import GATEWAY_PARAMS
from imagegw.upstream.config import Route
from imagegw.upstream.failures import UpstreamMalformed

if TYPE_CHECKING:
    from imagegw.request.catalog import Catalog, ModelSpec

_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
STREAM_PARAMS = ("partial_images",)


@dataclass
class UpstreamCall:
    """Exactly what a provider is asked for one route."""

    operation: Operation
    model: str  # the route's target: the upstream model, or the Azure deployment
    params: dict[str, Any]
    images: list[ImageFile]
    mask: ImageFile | None
    stream: bool
    markup: ImageFile | None = None  # edits (gpt-image-2.5+): the transparent PNG guiding the edit


@dataclass
class Plan:
    call: UpstreamCall
    resize_to: tuple[int, int] | None = None  # the client's size, when the upstream is asked for another
    revised_prompt: str | None = None  # the prompt sent upstream, when the client's model promises one


def prepare(request: ImageRequest, route: Route, catalog: Catalog) -> Plan:
    translation = route.translate
    operation: Operation = request.operation
    override = translation.operations.get(operation) if translation else None
    if override is not None:
        operation = override.operation
    params = {k: v for k, v in request.params.items() if k not in GATEWAY_PARAMS}
    requested_size = request.params.get("size")
    images = list(request.images)
    mask = request.mask
    markup = request.markup

    if translation is not None:
        for name, table in translation.map.items():
            if name in params and _table_key(params[name]) in table:
                params[name] = table[_table_key(params[name])]
        style = params.get("style")
        if isinstance(style, str) and style in translation.style_prompt:
            params.pop("style")
            prompt = str(params.get("prompt") or "").rstrip()
            params["prompt"] = f"{prompt}\n\n{translation.style_prompt[style]}".strip()
        if override is not None and override.prompt:
            params["prompt"] = override.prompt
        params.update(translation.set)
        if request.operation in ("variations", "edits") and operation == "edits":
            images = images[:1] if request.operation == "variations" else images
            if mask is None and translation.mask_from_image and request.operation == "edits" and images:
                # dall-e-2 semantics: without a mask, the image's own transparency marks the area to edit.
                mask = replace(images[0], field_name="mask", filename="mask.png")
        if operation == "generations":
            images, mask, markup = [], None, None

    spec = _spec(catalog, route.model)
    stream = request.stream
    if spec is not None:
        params = {k: v for k, v in params.items() if spec.takes(operation, k)}
        if spec.takes(operation, "response_format") and not spec.gpt:
            params["response_format"] = "b64_json"  # dall-e style upstreams default to url; GPT never gets it
        stream = stream and spec.takes(operation, "stream")
        inputs = spec.inputs_for(operation)
        if inputs is None or inputs.markup is None:
            markup = None  # like a parameter the upstream model does not take
    if stream:
        for name in STREAM_PARAMS:
            if request.params.get(name) is not None and (spec is None or spec.takes(operation, name)):
                params[name] = request.params[name]

    resize_to = None
    if translation is not None and translation.resize_to_requested:
        wanted = _parse_size(requested_size)
        if wanted is not None and params.get("size") != requested_size:
            resize_to = wanted
    revised = None
    if translation is not None and translation.revised_prompt and isinstance(params.get("prompt"), str):
        revised = params["prompt"]
    call = UpstreamCall(operation, route.target, params, images, mask, stream, markup)
    return Plan(call, resize_to, revised)


def finish(result: UpstreamResult, plan: Plan) -> UpstreamResult:
    """The upstream's result in the client's terms: its size, its revised_prompt."""
    images = result.images
    meta = dict(result.meta)
    if plan.resize_to is not None:
        images = [replace(img, data=fit_to(img.data, plan.resize_to)) for img in images]
        meta["size"] = f"{plan.resize_to[0]}x{plan.resize_to[1]}"
    if plan.revised_prompt is not None:
        images = [replace(img, revised_prompt=img.revised_prompt or plan.revised_prompt) for img in images]
    return replace(result, images=images, meta=meta)


def cover_crop(img: Any, size: tuple[int, int]) -> Any:
    """Scale to cover `size`, then centre-crop (ImageOps.fit), with a cheap integer reduce before LANCZOS
    (reducing_gap): several times faster on the 4x shrink dall-e-2's small sizes need, no visible loss."""
    from PIL import Image

    scale = max(size[0] / img.width, size[1] / img.height)
    cover = (max(size[0], math.ceil(img.width * scale)), max(size[1], math.ceil(img.height * scale)))
    resized = img.resize(cover, Image.Resampling.LANCZOS, reducing_gap=2.0)
    left, top = (cover[0] - size[0]) // 2, (cover[1] - size[1]) // 2
    return resized.crop((left, top, left + size[0], top + size[1]))


def fit_to(data: bytes, size: tuple[int, int]) -> bytes:
    """The image scaled to cover `size` and centre-cropped to it, in its own format; as-is if it fits."""
    from PIL import UnidentifiedImageError

    from imagegw.images import ImageUnreadable, open_within_budget

    try:
        with open_within_budget(data) as img:  # an upstream's image: decoded only within the budget
            if img.size == size:
                return data
            fmt = img.format or "PNG"
            fitted = cover_crop(img, size)
    except (ImageUnreadable, UnidentifiedImageError, OSError, ValueError):
        raise UpstreamMalformed("The upstream returned an image that could not be decoded.") from None
    out = io.BytesIO()
    if fmt == "JPEG":
        fitted.convert("RGB").save(out, format=fmt, quality=92)
    else:
        fitted.save(out, format=fmt)
    return out.getvalue()


def convert_format(data: bytes, fmt: str, compression: Any = None) -> bytes:
    """PNG bytes as JPEG or WebP (quality = output_compression when given, else 92)."""
    from PIL import UnidentifiedImageError

    from imagegw.images import ImageUnreadable, open_within_budget

    quality = compression if isinstance(compression, int) and not isinstance(compression, bool) else 92
    try:
        with open_within_budget(data) as img:  # an upstream's image: decoded only within the budget
            out = io.BytesIO()
            if fmt == "jpeg":
                img.convert("RGB").save(out, format="JPEG", quality=max(1, min(100, quality)))
            else:
                img.save(out, format="WEBP", quality=max(1, min(100, quality)))
    except (ImageUnreadable, UnidentifiedImageError, OSError, ValueError):
        raise UpstreamMalformed("The upstream returned an image that could not be decoded.") from None
    return out.getvalue()


def _spec(catalog: Catalog, model: str) -> ModelSpec | None:
    try:
        return catalog.get(model)
    except ModelNotFound:
        return None  # an upstream-only name: forward the parameters as they are


def _table_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_size(value: Any) -> tuple[int, int] | None:
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None
