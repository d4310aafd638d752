"""Stability AI's image models on Amazon Bedrock (InvokeModel JSON), for the `bedrock` provider type.

A route model whose id names `stability.` (a model id, an inference profile such as `us.stability...`, or
an ARN) is called with Stability's body instead of Nova Canvas's:

- Stable Diffusion 3.5 Large (`stability.sd3-5-large-v1:0`): generations -> `mode: text-to-image` with
  `aspect_ratio`; edits -> `mode: image-to-image` of the first image with `strength` (default 0.7).
- Stable Image Core / Ultra (`stability.stable-image-core-v1:1`, `stability.stable-image-ultra-v1:1`):
  generations with `aspect_ratio`.
- Stable Image Inpaint (`stability.stable-image-inpaint-v1:0`), the masked edits of the client-facing
  `stable-image-core` (its routes send `"operations": ["edits"]` here): `image` + `mask`. OpenAI's mask
  (alpha 0 = edit here) becomes Stability's (white = edit here, black = keep); without a mask the image's
  own transparency is the mask, else the edit is refused with a 400 naming `mask`.

Common fields: `prompt`, `negative_prompt`, `seed` (0..4294967294), `output_format` (png or jpeg asked
upstream; webp, or jpeg with output_compression, is converted here from png). One image per call: n images
are n calls (a given seed moves on by one for each). The answer is `{"images": [b64], "finish_reasons":
[null | "Filter reason: ..." | "Inference error"], "seeds": [...]}`: a filter reason is the client's 400
`moderation_blocked`, an inference error is retried.

Sizes: Stability takes an aspect ratio, not pixels. The `aspect_ratio` parameter is sent as given (the
image comes at the model's own resolution for it); otherwise a `WxH` size asks for the nearest ratio and
the images are scaled (cover + centre crop) to exactly that size; `auto` is 1:1 at the model's resolution
(edits: the input's own size).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from imagegw.domain import ImageFile, Operation
from imagegw.upstream.failures import RouteFault, TransientFailure, UpstreamMalformed, UpstreamRejected
from imagegw.upstream.translation import convert_format, fit_to
from imagegw.upstream.wire import decode_image_b64, json_object, scrub

ASPECT_RATIOS: dict[str, float] = {
    "1:1": 1.0,
    "16:9": 16 / 9,
    "9:16": 9 / 16,
    "21:9": 21 / 9,
    "9:21": 9 / 21,
    "3:2": 3 / 2,
    "2:3": 2 / 3,
    "5:4": 5 / 4,
    "4:5": 4 / 5,
}
MAX_SEED = 4_294_967_294
DEFAULT_STRENGTH = 0.7
MAX_INPUT_PIXELS = 4_194_304  # input images above this are scaled down before they are sent


def stability_kind(model_id: str) -> str | None:
    """ "sd3.5", "core", "ultra" or "inpaint" for a Stability model id (or profile/ARN naming one)."""
    name = model_id.lower()
    if "stability." not in name:
        return None
    for marker, kind in (
        ("sd3-5", "sd3.5"),
        ("stable-image-inpaint", "inpaint"),
        ("stable-image-ultra", "ultra"),
        ("stable-image-core", "core"),
    ):
        if marker in name:
            return kind
    return "core"  # another Stability text-to-image model: Core's body is the common subset


def nearest_ratio(width: int, height: int) -> str:
    """The aspect ratio Stability takes closest to width:height (compared on a log scale)."""
    import math

    wanted = math.log(width / height)
    return min(ASPECT_RATIOS, key=lambda name: abs(math.log(ASPECT_RATIOS[name]) - wanted))


def _size(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, str) or "x" not in value:
        return None
    left, _, right = value.partition("x")
    if not (left.isdigit() and right.isdigit()) or int(left) < 1 or int(right) < 1:
        return None
    return int(left), int(right)


def _text(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _b64_png(img: Any) -> str:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def _open(data: bytes, what: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError):
        raise UpstreamRejected(f"The {what} could not be decoded.", status=400, param=what) from None
    return img


def _bounded(img: Any) -> Any:
    """The image scaled down (same ratio) to at most MAX_INPUT_PIXELS."""
    from PIL import Image

    pixels = img.width * img.height
    if pixels <= MAX_INPUT_PIXELS:
        return img
    scale = (MAX_INPUT_PIXELS / pixels) ** 0.5
    size = (max(64, int(img.width * scale)), max(64, int(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def edit_area(img: Any) -> Any | None:
    """An L image, 255 (white: edit) where `img` is fully transparent and 0 (black: keep) elsewhere;
    None if no pixel is fully transparent."""
    if img.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in img.info:
        return None
    alpha = img.convert("RGBA").getchannel("A")
    area = alpha.point(lambda a: 255 if a == 0 else 0)
    return area if area.getextrema()[1] == 255 else None


class StabilityRequest:
    """One client request as Stability bodies (one per image) and what to do with each answer."""

    def __init__(
        self,
        kind: str,
        operation: Operation,
        params: Mapping[str, Any],
        images: Sequence[ImageFile],
        mask: ImageFile | None,
    ) -> None:
        self.kind = kind
        self.params = dict(params)
        n = self.params.get("n", 1)
        self.n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
        fmt = str(self.params.get("output_format") or "png").lower()
        self.output_format = "jpeg" if fmt == "jpg" else fmt
        # Stability is asked for png or jpeg; webp, or jpeg at a chosen compression, is made here from png.
        compressed = self.output_format == "jpeg" and self.params.get("output_compression") is not None
        self.convert = self.output_format not in ("png", "jpeg") or compressed
        self.body: dict[str, Any] = {"output_format": "png" if self.convert else self.output_format}
        if prompt := _text(self.params, "prompt"):
            self.body["prompt"] = prompt
        if negative := _text(self.params, "negative_prompt"):
            self.body["negative_prompt"] = negative
        self.resize_to = _size(self.params.get("size"))
        if operation == "generations" and kind != "inpaint":
            self._generation()
        elif operation == "edits" and kind == "sd3.5":
            self._image_to_image(images)
        elif operation == "edits" and kind == "inpaint":
            self._inpaint(images, mask)
        else:
            # Routes that send edits to Core or Ultra, say: the deployer's to fix, not the client's.
            raise RouteFault(f"This Stability model does not serve {operation}: route them by operation.")

    def _generation(self) -> None:
        ratio = self.params.get("aspect_ratio")
        if isinstance(ratio, str) and ratio in ASPECT_RATIOS:
            self.resize_to = None  # the client chose the ratio: the model's own resolution for it
        else:
            ratio = nearest_ratio(*self.resize_to) if self.resize_to else "1:1"
        self.body["aspect_ratio"] = ratio
        if self.kind == "sd3.5":
            self.body["mode"] = "text-to-image"

    def _image_to_image(self, images: Sequence[ImageFile]) -> None:
        if not images:
            raise UpstreamRejected("An edit needs an image.", status=400, param="image")
        source = _bounded(_open(images[0].data, "image").convert("RGB"))
        strength = self.params.get("strength", DEFAULT_STRENGTH)
        if isinstance(strength, bool) or not isinstance(strength, int | float):
            strength = DEFAULT_STRENGTH
        self.body.update(mode="image-to-image", image=_b64_png(source), strength=float(strength))

    def _inpaint(self, images: Sequence[ImageFile], mask: ImageFile | None) -> None:
        from PIL import Image

        if not images:
            raise UpstreamRejected("An edit needs an image.", status=400, param="image")
        source = _open(images[0].data, "image")
        area = edit_area(_open(mask.data, "mask")) if mask is not None else edit_area(source)
        if area is None:
            raise UpstreamRejected(
                "This model edits a masked area only: send a mask (or an image) whose fully transparent "
                "pixels mark the area to edit.",
                status=400,
                param="mask",
                code="invalid_value" if mask is not None else "missing_required_parameter",
            )
        rgb = _bounded(source.convert("RGB"))
        if area.size != rgb.size:
            area = area.resize(rgb.size, Image.Resampling.NEAREST)  # nearest: stays pure black and white
        self.body.update(image=_b64_png(rgb), mask=_b64_png(area))
        grow = self.params.get("grow_mask")
        if isinstance(grow, int) and not isinstance(grow, bool):
            self.body["grow_mask"] = grow

    def bodies(self) -> list[dict[str, Any]]:
        seed = self.params.get("seed")
        out = []
        for i in range(self.n):
            body = dict(self.body)
            if isinstance(seed, int) and not isinstance(seed, bool):
                body["seed"] = (seed + i) % (MAX_SEED + 1)
            out.append(body)
        return out

    def parse(self, payload: bytes) -> list[bytes]:
        return parse_answer(payload)

    def finish(self, data: bytes) -> bytes:
        """An answered image at the client's size and in the client's format."""
        if self.resize_to is not None:
            data = fit_to(data, self.resize_to)
        if self.convert:
            data = convert_format(data, self.output_format, self.params.get("output_compression"))
        return data


def parse_answer(body: bytes) -> list[bytes]:
    """The images of `{"images": [b64...], "finish_reasons": [...], "seeds": [...]}`."""
    doc = json_object(body)
    reasons = doc.get("finish_reasons") or []
    if not isinstance(reasons, list):
        raise UpstreamMalformed("The upstream answer's finish_reasons are not a list.")
    for reason in reasons:
        _check_reason(reason)
    items = doc.get("images")
    if not isinstance(items, list) or not items:
        raise UpstreamMalformed("The upstream answer holds no image.")
    return [decode_image_b64(item, "image") for item in items]


def _check_reason(reason: Any) -> None:
    if reason is None:
        return
    text = str(reason)
    if text.lower().startswith("filter reason"):
        raise UpstreamRejected(
            f"The request was blocked by the upstream's content filter ({scrub(text)}).",
            status=400,
            code="moderation_blocked",
        )
    raise TransientFailure(f"The upstream could not make the image ({scrub(text)}).")
