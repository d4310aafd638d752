"""Upstream emulator: a TEST DOUBLE of the upstream image services (OpenAI, Azure OpenAI, Amazon Bedrock).

It is NOT an image model. It speaks the OpenAI Images wire format over real HTTP and answers with
deterministic placeholder pictures drawn with Pillow (same inputs, same bytes), so the gateway can be
developed and tested locally without calling a paid upstream. Use it for local development and tests only.

Routes
    POST /v1/images/generations                         JSON
    POST /v1/images/edits                               multipart (image, image[], image[N], mask) or JSON
    POST /v1/images/variations                          multipart
    POST /openai/deployments/{deployment}/images/generations|edits?api-version=...   (Azure OpenAI)
    POST /model/{modelId}/invoke                        Amazon Bedrock runtime InvokeModel, Nova Canvas JSON
    GET  /files/<id>.<ext>                              images previously answered as `url`
    POST /_emulator/faults   {"faults": [...]} queues faults, {"mode": {...}|null} sets/clears the fault mode
    GET  /_emulator/faults   the queued faults and the mode
    GET  /_emulator/requests the recorded image requests
    POST /_emulator/reset    clears recorded requests and faults
    GET  /_emulator/health   {"ok": true}

Faults (see `Fault`) are taken, for each image request, from (first match wins): a `[[emulator:...]]`
directive in the prompt (that request only; the queue is left alone), else the next queued fault
(consumed), else the fault mode. Directive tokens, comma-separated or in several directives:
`500` (any 3-digit status; `429` also sets retry-after: 1), `delay=2.5`, `retry-after=3`, `drop`,
`malformed`, `truncated`. The directive is stripped from the prompt before drawing.

Usage tokens (GPT image models): text_tokens = ceil(len(prompt) / 4); image_tokens = 65 per input image
(the mask is not counted; 0 for generations); output_tokens = n * ceil(B * W * H / 1024**2) where B is
272 (low), 1056 (medium), 4160 (high), 8320 (xhigh), 16640 (max), OpenAI's own per-1024x1024 figures
for gpt-image-1; input_tokens = text + image; total = input + output. Quality auto/standard answers
"medium", hd answers "high".

Output formats: png, jpeg, webp; for GPT image models without streaming also gif (animated: `frame_count`
frames, default 4, `frame_duration_ms` each, default 250) and svg (a drawn SVG document, n=1).

Bedrock (`POST /model/{modelId}/invoke`, e.g. boto3 `bedrock-runtime` with `endpoint_url` = the base URL):
the body is Nova Canvas JSON (taskType TEXT_IMAGE, INPAINTING with maskImage (black = edit) or maskPrompt,
IMAGE_VARIATION), answered `{"images": [b64 PNG...]}`. The SigV4 signature is not checked (nor the API
key), the request is recorded. Faults apply the same way (a directive in the text prompt, the queue, the
mode); an error status answers Bedrock's error shape: `{"message": ...}` with `x-amzn-ErrorType` (429
ThrottlingException, 400 ValidationException, 403 AccessDeniedException, 404 ResourceNotFoundException,
408 ModelTimeoutException, 503 ServiceUnavailableException, other 5xx InternalServerException).

Streaming (`stream: true`, GPT image models): for each of the n images, `partial_images` partial events
(downscaled, blocky versions of the final image) then one completed event carrying that image's usage.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import io
import json
import math
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Emulator", "Fault", "RecordedRequest", "main"]

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_SIDE = 4096
MAX_STORED_FILES = 512
DEFAULT_SIZE = (1024, 1024)
DEFAULT_CLI_PORT = 8089
INPUT_IMAGE_TOKENS = 65
OUTPUT_TOKENS_PER_1024_SQUARE = {"low": 272, "medium": 1056, "high": 4160, "xhigh": 8320, "max": 16640}
_QUALITY_ALIASES = {"auto": "medium", "standard": "medium", "hd": "high"}
_CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "svg": "image/svg+xml",
}
DEFAULT_FRAME_COUNT = 4
DEFAULT_FRAME_DURATION_MS = 250
_SIZE_RE = re.compile(r"(\d{1,5})x(\d{1,5})")
_DIRECTIVE_RE = re.compile(r"\s*\[\[emulator:([^\]]*)\]\]\s*", re.IGNORECASE)
_OPENAI_ROUTE = re.compile(r"/v1/images/(generations|edits|variations)")
_AZURE_ROUTE = re.compile(r"/openai/deployments/([^/]+)/images/(generations|edits)")
_BEDROCK_ROUTE = re.compile(r"/model/([^/]+)/invoke")
_BEDROCK_ERRORS = {
    400: ("ValidationException", "Malformed input request, please reformat your input and try again."),
    401: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "The specified model could not be found."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request."),
    424: ("ModelErrorException", "The model failed to process the request."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    503: ("ServiceUnavailableException", "The service is temporarily unavailable."),
}
_NOVA_TASKS = {
    "TEXT_IMAGE": "textToImageParams",
    "INPAINTING": "inPaintingParams",
    "IMAGE_VARIATION": "imageVariationParams",
}
_FILE_ROUTE = re.compile(r"/files/([A-Za-z0-9_-]+)\.(png|jpeg|webp|gif|svg)")
_IMAGE_FIELD = re.compile(r"image(\[\d*\])?")
_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),(.*)", re.DOTALL)
_DISPOSITION_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


# --------------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """What the emulator does wrong for one image request (or every request, as the fault mode).

    `delay` is applied first; then `drop` closes the socket without any response; else a `status`
    (other than 200) answers an OpenAI-format error with `retry_after` as the `retry-after` header and
    `message` as the error message; else the normal answer is sent, spoiled by `malformed_json`
    (a 200 body that is not JSON) or `truncated_b64` (b64_json cut so it is neither valid base64 nor
    a whole image; for `url` answers the served file is cut in half).
    """

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    drop: bool = False
    malformed_json: bool = False
    truncated_b64: bool = False
    message: str | None = None

    @classmethod
    def coerce(cls, value: Fault | Mapping[str, Any]) -> Fault:
        """A Fault from a Fault or a dict with the same field names (ValueError on anything else)."""
        if isinstance(value, Fault):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"a fault must be a Fault or an object, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {unknown}; known: {sorted(known)}")
        status = value.get("status")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
            raise ValueError("fault 'status' must be an integer or null")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("fault 'status' must be between 100 and 599")
        retry_after = value.get("retry_after")
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, str | int | float):
                raise ValueError("fault 'retry_after' must be a string or a number")
            retry_after = str(retry_after)
        delay = value.get("delay", 0.0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ValueError("fault 'delay' must be a number of seconds >= 0")
        flags = {}
        for name in ("drop", "malformed_json", "truncated_b64"):
            flag = value.get(name, False)
            if not isinstance(flag, bool):
                raise ValueError(f"fault '{name}' must be a boolean")
            flags[name] = flag
        message = value.get("message")
        if message is not None and not isinstance(message, str):
            raise ValueError("fault 'message' must be a string or null")
        return cls(status=status, retry_after=retry_after, delay=float(delay), message=message, **flags)


@dataclass
class RecordedRequest:
    """One image request as the emulator received it."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str | None, str | None, int]] = field(default_factory=list)
    deployment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = [list(f) for f in self.files]
        return out


# --------------------------------------------------------------------------------------------------
# Errors and small helpers
# --------------------------------------------------------------------------------------------------


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _fault_error(fault: Fault, status: int, model: str) -> _ApiError:
    headers = {"retry-after": fault.retry_after} if fault.retry_after is not None else {}
    kind, code, message = "server_error", None, "The server had an error while processing your request."
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
        message = f"Rate limit reached for {model} on images per minute (IPM). Please try again later."
    elif status == 401:
        kind, code, message = "invalid_request_error", "invalid_api_key", "Incorrect API key provided."
    elif status == 403:
        kind, code, message = (
            "permission_error",
            "model_not_allowed",
            "You are not allowed to use this model.",
        )
    elif status == 404:
        kind, code = "invalid_request_error", "model_not_found"
        message = f"The model '{model}' does not exist or you do not have access to it."
    elif status in (408, 504):
        kind, code, message = "server_error", "timeout", "Request timed out."
    elif status == 503:
        message = "The engine is currently overloaded, please try again later."
    elif status < 500:
        kind, message = "invalid_request_error", "Invalid request."
    return _ApiError(status, fault.message or f"{message} (emulated)", type=kind, code=code, headers=headers)


def _parse_directives(prompt: str) -> tuple[str, Fault | None]:
    groups = [m.group(1) for m in _DIRECTIVE_RE.finditer(prompt)]
    if not groups:
        return prompt, None
    fault = Fault()
    for group in groups:
        for raw in group.split(","):
            word = raw.strip().lower()
            value = word.partition("=")[2].strip()
            try:
                if re.fullmatch(r"\d{3}", word):
                    fault.status = int(word)
                    if word == "429" and fault.retry_after is None:
                        fault.retry_after = "1"
                elif word.startswith("delay="):
                    fault.delay = float(value)
                    if not math.isfinite(fault.delay) or fault.delay < 0:
                        raise ValueError(word)
                elif word.startswith(("retry-after=", "retry_after=")) and value:
                    fault.retry_after = value
                elif word == "drop":
                    fault.drop = True
                elif word in ("malformed", "malformed_json"):
                    fault.malformed_json = True
                elif word in ("truncated", "truncated_b64"):
                    fault.truncated_b64 = True
                else:
                    raise ValueError(word)
            except ValueError:
                raise _ApiError(
                    400,
                    f"Unknown emulator directive '[[emulator:{group}]]' (token {raw.strip()!r}).",
                    param="prompt",
                    code="invalid_value",
                ) from None
    return _DIRECTIVE_RE.sub(" ", prompt).strip(), fault


def _type_name(value: Any) -> str:
    return {str: "a string", bool: "a boolean", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _int_param(params: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None:
        raise _ApiError(
            400,
            f"Invalid type for '{name}': expected an integer, but got {_type_name(value)} instead.",
            param=name,
            code="invalid_type",
        )
    if number > hi:
        raise _ApiError(
            400,
            f"Invalid '{name}': integer above maximum value. "
            f"Expected a value <= {hi}, but got {number} instead.",
            param=name,
            code="integer_above_max_value",
        )
    if number < lo:
        raise _ApiError(
            400,
            f"Invalid '{name}': integer below minimum value. "
            f"Expected a value >= {lo}, but got {number} instead.",
            param=name,
            code="integer_below_min_value",
        )
    return number


def _bool_param(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", ""):
        return value.strip().lower() in ("true", "1")
    raise _ApiError(
        400,
        f"Invalid type for '{name}': expected a boolean, but got {_type_name(value)} instead.",
        param=name,
        code="invalid_type",
    )


def _choice_param(params: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.lower() in allowed:
        return value.lower()
    listed = ", ".join(f"'{a}'" for a in allowed)
    raise _ApiError(
        400, f"Invalid value: '{value}'. Supported values are: {listed}.", param=name, code="invalid_value"
    )


def _parse_size(value: Any) -> tuple[int, int]:
    if value is None or value == "" or value == "auto":
        return DEFAULT_SIZE
    match = _SIZE_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _ApiError(
            400,
            f"Invalid value: '{value}'. "
            "The size must be 'auto' or of the form 'WIDTHxHEIGHT', e.g. '1024x1024'.",
            param="size",
            code="invalid_value",
        )
    width, height = int(match.group(1)), int(match.group(2))
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise _ApiError(
            400,
            f"Invalid size '{value}'. Width and height must be between 1 and {MAX_SIDE} in the emulator.",
            param="size",
            code="invalid_value",
        )
    return width, height


def _sniff_image(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _is_gpt_image(model: str) -> bool:
    return model.lower().startswith(("gpt-image", "chatgpt-image"))


def _mask_key(key: str) -> str:
    return f"{key[:5]}***{key[-2:]}" if len(key) > 8 else "***"


def _usage(prompt: str, input_images: int, width: int, height: int, quality: str, n: int) -> dict[str, Any]:
    text_tokens = math.ceil(len(prompt) / 4)
    image_tokens = INPUT_IMAGE_TOKENS * input_images
    per_image = math.ceil(OUTPUT_TOKENS_PER_1024_SQUARE.get(quality, 1056) * width * height / (1024 * 1024))
    output_tokens = per_image * n
    input_tokens = text_tokens + image_tokens
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
    }


def _truncate_b64(b64: str) -> str:
    # 4k+1 characters can never be valid base64, strict or lenient, and half a PNG is not an image.
    return b64[: (len(b64) // 2) // 4 * 4 + 1]


# --------------------------------------------------------------------------------------------------
# Drawing (Pillow is imported lazily so importing this module stays cheap)
# --------------------------------------------------------------------------------------------------


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def _draw_shapes(img: Image.Image, rng: random.Random, count: int) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    width, height = img.size
    side = max(1, min(width, height))
    for _ in range(count):
        fill = (*_colour(rng), 255)
        x0, y0 = rng.randrange(width), rng.randrange(height)
        w, h = rng.randint(side // 10 + 1, side // 2 + 1), rng.randint(side // 10 + 1, side // 2 + 1)
        kind = rng.randrange(4)
        if kind == 0:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=fill)
        elif kind == 1:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=fill)
        elif kind == 2:
            points = [(rng.randrange(width), rng.randrange(height)) for _ in range(3)]
            draw.polygon(points, fill=fill)
        else:
            draw.line((x0, y0, rng.randrange(width), rng.randrange(height)), fill=fill, width=side // 40 + 1)


def draw_image(
    prompt: str, model: str, index: int, width: int, height: int, transparent: bool
) -> Image.Image:
    """A deterministic picture for (prompt, model, index): a background colour plus some shapes."""
    from PIL import Image

    rng = _rng(prompt, model, index)
    background = _colour(rng)
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0) if transparent else (*background, 255))
    _draw_shapes(img, rng, rng.randint(6, 12))
    return img if transparent else img.convert("RGB")


def _selection(mask: Image.Image | None, first: Image.Image, width: int, height: int) -> Image.Image:
    """L image, 255 where the edit goes: the mask's alpha==0, else the image's alpha==0, else the centre."""
    from PIL import Image, ImageDraw

    def transparent_pixels(img: Image.Image) -> Image.Image | None:
        if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
            return None
        alpha = img.convert("RGBA").getchannel("A").point(lambda a: 255 if a == 0 else 0)
        alpha = alpha.resize((width, height), Image.Resampling.NEAREST)
        return alpha if alpha.getbbox() is not None else None

    selected = transparent_pixels(mask) if mask is not None else transparent_pixels(first)
    if selected is None:
        selected = Image.new("L", (width, height), 0)
        ImageDraw.Draw(selected).rectangle(
            (width // 4, height // 4, width * 3 // 4 - 1, height * 3 // 4 - 1), fill=255
        )
    return selected


def edit_image(
    prompt: str,
    model: str,
    index: int,
    width: int,
    height: int,
    inputs: list[Image.Image],
    mask: Image.Image | None,
    transparent: bool,
) -> Image.Image:
    """The first input resized to the output size, with the selected area painted in the prompt's colour."""
    from PIL import Image

    base = inputs[0].convert("RGBA").resize((width, height), Image.Resampling.BILINEAR)
    selected = _selection(mask, inputs[0], width, height)
    overlay = Image.new("RGBA", (width, height), (*_colour(_rng("edit-colour", prompt)), 255))
    _draw_shapes(overlay, _rng("edit", prompt, model, index), 3)
    box = selected.getbbox() or (0, 0, width, height)
    thumb_side = max(8, min(box[2] - box[0], box[3] - box[1]) // 4)
    x = box[0]
    for other in inputs[1:]:
        thumb = other.convert("RGBA")
        thumb.thumbnail((thumb_side, thumb_side))
        overlay.paste(thumb, (x, box[1]), thumb)
        x += thumb_side
    out = Image.composite(overlay, base, selected)
    if transparent:
        return out
    flat = Image.new("RGB", (width, height), (255, 255, 255))
    flat.paste(out, (0, 0), out)
    return flat


def vary_image(source: Image.Image, seed: str, index: int, width: int, height: int) -> Image.Image:
    """The input at the output size, with a hue shift and a few small shapes chosen by index."""
    from PIL import Image

    rng = _rng("variation", seed, index)
    shift = rng.randint(24, 232)
    hue, sat, val = (
        source.convert("RGB").resize((width, height), Image.Resampling.BILINEAR).convert("HSV").split()
    )
    hue = hue.point(lambda h: (h + shift) % 256)
    sat = sat.point(lambda s: max(s, 96))
    out = Image.merge("HSV", (hue, sat, val)).convert("RGB")
    _draw_shapes(out, rng, 2)
    return out


def _blocky(img: Image.Image, step: int, of: int) -> Image.Image:
    """A low-detail version of the final image for partial image `step` of `of`."""
    from PIL import Image

    factor = 2 ** (of - step + 2)
    width, height = img.size
    small = img.resize((max(1, width // factor), max(1, height // factor)), Image.Resampling.BILINEAR)
    return small.resize((width, height), Image.Resampling.NEAREST)


def encode_gif(img: Image.Image, frame_count: int, frame_duration_ms: int) -> bytes:
    """An animated GIF of `frame_count` frames: the picture sliding sideways, one step per frame."""
    from PIL import ImageChops

    width = img.size[0]
    frames = [ImageChops.offset(img, width * k // frame_count, 0) for k in range(frame_count)]
    buf = io.BytesIO()
    frames[0].save(
        buf, "GIF", save_all=True, append_images=frames[1:], duration=frame_duration_ms, loop=0, disposal=2
    )
    return buf.getvalue()


def draw_svg(prompt: str, model: str, index: int, width: int, height: int, transparent: bool) -> bytes:
    """A deterministic SVG document for (prompt, model, index): a background and some shapes."""
    rng = _rng("svg", prompt, model, index)
    side = max(1, min(width, height))

    def hex_colour() -> str:
        red, green, blue = _colour(rng)
        return f"#{red:02x}{green:02x}{blue:02x}"

    shapes = [] if transparent else [f'<rect width="100%" height="100%" fill="{hex_colour()}"/>']
    for _ in range(rng.randint(4, 8)):
        fill = hex_colour()
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randint(side // 20 + 1, side // 4 + 1)
        if rng.random() < 0.5:
            shapes.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="{fill}"/>')
        else:
            shapes.append(f'<rect x="{x}" y="{y}" width="{r * 2}" height="{r}" fill="{fill}"/>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(shapes)}</svg>'
    ).encode()


def encode_image(img: Image.Image, output_format: str, compression: int | None) -> bytes:
    buf = io.BytesIO()
    quality = 100 if compression is None else max(1, compression)
    if output_format == "gif":
        return encode_gif(img, DEFAULT_FRAME_COUNT, DEFAULT_FRAME_DURATION_MS)
    if output_format == "jpeg":
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    elif output_format == "webp":
        img.save(buf, "WEBP", quality=quality, method=0)
    else:
        img.save(buf, "PNG", optimize=False, compress_level=1)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Request parsing
# --------------------------------------------------------------------------------------------------


@dataclass
class _Upload:
    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class _Body:
    params: dict[str, Any] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    uploads: list[_Upload] = field(default_factory=list)
    images: list[tuple[str, str | None, bytes]] = field(default_factory=list)  # (param, content type, bytes)
    mask: tuple[str, str | None, bytes] | None = None
    error: _ApiError | None = None


def _disposition(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, raw in _DISPOSITION_PARAM.findall(";" + value.partition(";")[2]):
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        out[key.lower()] = raw
    return out


def _parse_multipart(body: _Body, raw: bytes, content_type: str) -> None:
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    try:
        parts = MultipartDecoder(raw, content_type).parts
    except Exception as exc:
        raise _ApiError(400, f"Could not parse the multipart/form-data body: {exc}") from None
    for part in parts:
        headers = {k.decode("latin-1").lower(): v.decode("utf-8", "replace") for k, v in part.headers.items()}
        params = _disposition(headers.get("content-disposition", ""))
        name = params.get("name", "")
        filename = params.get("filename")
        if filename is None and "filename*" in params:
            filename = params["filename*"].split("''", 1)[-1]
        if filename is None:
            body.form[name] = part.content.decode("utf-8", "replace")
        else:
            body.uploads.append(_Upload(name, filename, headers.get("content-type"), part.content))
    body.params = dict(body.form)
    images = [u for u in body.uploads if _IMAGE_FIELD.fullmatch(u.field)]
    for i, upload in enumerate(images):
        param = upload.field
        if upload.field == "image[]" or (upload.field == "image" and len(images) > 1):
            param = f"image[{i}]"
        body.images.append((param, upload.content_type, upload.data))
    masks = [u for u in body.uploads if u.field == "mask"]
    if masks:
        body.mask = ("mask", masks[0].content_type, masks[0].data)


def _decode_data_url(value: Any, param: str) -> tuple[str, str | None, bytes]:
    url = value.get("image_url") if isinstance(value, Mapping) else None
    if isinstance(value, Mapping) and "file_id" in value and url is None:
        raise _ApiError(
            400,
            f"Invalid '{param}': the emulator accepts data URLs only, not file_id.",
            param=param,
            code="invalid_value",
        )
    if isinstance(url, Mapping):  # {"image_url": {"url": ...}} as some clients send it
        url = url.get("url")
    match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise _ApiError(
            400,
            f"Invalid '{param}': expected an object with 'image_url' holding a data URL "
            "(data:image/png;base64,...); the emulator does not fetch remote URLs.",
            param=param,
            code="invalid_value",
        )
    mime, options, payload = match.groups()
    try:
        if ";base64" in options.lower():
            data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
        else:
            data = unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise _ApiError(
            400, f"Invalid '{param}': the data URL is not valid base64.", param=param, code="invalid_value"
        ) from None
    return param, mime or None, data


def _parse_json_edit(body: _Body) -> None:
    params = body.params
    images = params.get("images")
    if images is None and "image" in params:
        images = params["image"] if isinstance(params["image"], list) else [params["image"]]
    if images is not None:
        if not isinstance(images, list):
            raise _ApiError(
                400, "Invalid type for 'images': expected an array.", param="images", code="invalid_type"
            )
        body.images = [_decode_data_url(item, f"images[{i}]") for i, item in enumerate(images)]
    if params.get("mask") is not None:
        body.mask = _decode_data_url(params["mask"], "mask")


def _parse_body(kind: str, raw: bytes, content_type: str) -> _Body:
    body = _Body()
    mime = content_type.split(";", 1)[0].strip().lower()
    try:
        if mime == "multipart/form-data":
            if kind == "generations":
                raise _ApiError(400, "The generations endpoint expects a JSON body (application/json).")
            _parse_multipart(body, raw, content_type)
        elif kind == "variations":
            raise _ApiError(400, "The variations endpoint expects a multipart/form-data body.")
        else:
            try:
                parsed = json.loads(raw.decode("utf-8")) if raw.strip() else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise _ApiError(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                    "sent was not valid JSON.)",
                ) from None
            if not isinstance(parsed, dict):
                raise _ApiError(400, "The request body must be a JSON object.")
            body.json = parsed
            body.params = parsed
            if kind == "edits":
                _parse_json_edit(body)
    except _ApiError as exc:
        body.error = exc
    return body


# --------------------------------------------------------------------------------------------------
# The job: one validated image request
# --------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    kind: str
    model: str
    prompt: str
    n: int
    width: int
    height: int
    output_format: str
    compression: int | None
    transparent: bool
    quality: str
    response_format: str
    stream: bool
    partial_images: int
    inputs: list[Image.Image]
    mask: Image.Image | None
    seed: str
    frame_count: int = DEFAULT_FRAME_COUNT
    frame_duration_ms: int = DEFAULT_FRAME_DURATION_MS

    @property
    def gpt(self) -> bool:
        return _is_gpt_image(self.model)

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def background(self) -> str:
        return "transparent" if self.transparent else "opaque"

    def render(self, index: int) -> Image.Image:
        if self.kind == "generations":
            return draw_image(self.prompt, self.model, index, self.width, self.height, self.transparent)
        if self.kind == "edits":
            return edit_image(
                self.prompt,
                self.model,
                index,
                self.width,
                self.height,
                self.inputs,
                self.mask,
                self.transparent,
            )
        return vary_image(self.inputs[0], self.seed, index, self.width, self.height)

    def encode(self, index: int) -> bytes:
        """Image `index` in the job's output format (gif: animated; svg: a drawn SVG document)."""
        if self.output_format == "svg":
            return draw_svg(self.prompt, self.model, index, self.width, self.height, self.transparent)
        if self.output_format == "gif":
            return encode_gif(self.render(index), self.frame_count, self.frame_duration_ms)
        return encode_image(self.render(index), self.output_format, self.compression)

    def usage(self, n: int) -> dict[str, Any]:
        return _usage(self.prompt, len(self.inputs), self.width, self.height, self.quality, n)


def _open_image(param: str, content_type: str | None, data: bytes) -> Image.Image:
    from PIL import Image

    if _sniff_image(data) is None:
        raise _ApiError(
            400,
            f"Invalid file '{param}': unsupported mimetype ('{content_type or 'application/octet-stream'}'). "
            "Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'.",
            param=param,
            code="unsupported_file_mimetype",
        )
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception:
        raise _ApiError(
            400, f"Invalid file '{param}': the image could not be decoded.", param=param, code="invalid_image"
        ) from None
    return img


def _build_job(kind: str, model: str, prompt: str, body: _Body, *, deployment: bool = False) -> _Job:
    params = body.params
    gpt = _is_gpt_image(model)
    n = _int_param(params, "n", 1, 1, 10) or 1
    if model.lower().startswith("dall-e-3") and n != 1:
        raise _ApiError(400, "You must provide n=1 for this model.", param="n")
    width, height = _parse_size(params.get("size"))
    output_format = params.get("output_format")
    if isinstance(output_format, str) and output_format.lower() == "jpg":
        output_format = "jpeg"
    output_format = _choice_param(
        {"output_format": output_format}, "output_format", ("png", "jpeg", "webp", "gif", "svg")
    )
    output_format = output_format or "png"
    frame_count = _int_param(params, "frame_count", None, 2, 16) or DEFAULT_FRAME_COUNT
    frame_duration_ms = _int_param(params, "frame_duration_ms", None, 1, 60_000) or DEFAULT_FRAME_DURATION_MS
    compression = _int_param(params, "output_compression", None, 0, 100)
    background = _choice_param(params, "background", ("transparent", "opaque", "auto"))
    transparent = background == "transparent"
    if transparent and output_format == "jpeg":
        raise _ApiError(
            400,
            "Transparent background is not supported for output_format 'jpeg'; use 'png' or 'webp'.",
            param="background",
            code="invalid_value",
        )
    quality_in = _choice_param(
        params, "quality", ("low", "medium", "high", "xhigh", "max", "auto", "standard", "hd")
    )
    quality = _QUALITY_ALIASES.get(quality_in or "auto", quality_in or "medium")
    # An Azure deployment is named, not its model: one not named after dall-e is taken for a gpt-image
    # deployment, which answers base64 (the gateway asks dall-e deployments for b64_json explicitly).
    default_format = "b64_json" if deployment and not model.lower().startswith("dall-e") else "url"
    response_format = _choice_param(params, "response_format", ("url", "b64_json")) or default_format
    if gpt:
        response_format = "b64_json"
    stream = _bool_param(params, "stream")
    partial_images = _int_param(params, "partial_images", 0, 0, 3) or 0
    if stream and not gpt:
        raise _ApiError(
            400, f"Streaming is not supported for the model '{model}'.", param="stream", code="invalid_value"
        )
    if output_format in ("gif", "svg") and (stream or not gpt):
        raise _ApiError(
            400,
            f"output_format '{output_format}' is only supported for GPT image models without streaming.",
            param="output_format",
            code="invalid_value",
        )
    if output_format == "svg" and n != 1:
        raise _ApiError(400, "output_format 'svg' supports n=1 only.", param="n", code="invalid_value")
    inputs: list[Image.Image] = []
    mask = None
    seed = ""
    if kind in ("edits", "variations"):
        if "image" in body.form:
            raise _ApiError(
                400,
                "Invalid type for 'image': expected one of an array of files or file, "
                "but got a string instead.",
                param="image",
                code="invalid_type",
            )
        if not body.images:
            name = "images" if body.json is not None else "image"
            raise _ApiError(
                400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
            )
        if kind == "variations":
            body.images = body.images[:1]
        inputs = [_open_image(*item) for item in body.images]
        if body.mask is not None and kind == "edits":
            mask = _open_image(*body.mask)
        seed = hashlib.sha256(body.images[0][2]).hexdigest()
    return _Job(
        kind=kind,
        model=model,
        prompt=prompt,
        n=n,
        width=width,
        height=height,
        output_format=output_format,
        compression=compression,
        transparent=transparent,
        quality=quality,
        response_format=response_format,
        stream=stream,
        partial_images=partial_images,
        inputs=inputs,
        mask=mask,
        seed=seed,
        frame_count=frame_count,
        frame_duration_ms=frame_duration_ms,
    )


def _nova_resolution(config: Mapping[str, Any]) -> tuple[int, int]:
    """Nova Canvas's size rules: sides 320-4096 and multiples of 16, ratio 1:4..4:1, <= 4,194,304 pixels."""
    width, height = config.get("width", 1024), config.get("height", 1024)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (width, height)):
        raise _ApiError(400, "Malformed input request: width and height must be integers.")
    if not (320 <= width <= 4096 and 320 <= height <= 4096):
        raise _ApiError(400, f"Width and height must be between 320-4096 pixels ({width}x{height}).")
    if width % 16 or height % 16:
        raise _ApiError(400, f"Width and height must be evenly divisible by 16 ({width}x{height}).")
    if width > 4 * height or height > 4 * width:
        raise _ApiError(400, f"The aspect ratio must be between 1:4 and 4:1 ({width}x{height}).")
    if width * height > 4_194_304:
        raise _ApiError(400, f"The total pixel count must be at most 4,194,304 ({width}x{height}).")
    return width, height


def _nova_image(value: Any, param: str, *, check_size: bool = True) -> Image.Image:
    """A base64 image of a Nova Canvas request, held to Nova's input rules (no transparent pixels)."""
    if not isinstance(value, str) or not value:
        raise _ApiError(400, f"Malformed input request: {param} must be a base64 string.")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _ApiError(400, f"Malformed input request: {param} is not valid base64.") from None
    img = _open_image(param, None, data)
    transparent = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    if transparent and img.convert("RGBA").getchannel("A").getextrema()[0] != 255:
        raise _ApiError(400, f"The {param} must not contain transparent or translucent pixels.")
    if check_size and not (320 <= img.width <= 4096 and 320 <= img.height <= 4096):
        raise _ApiError(400, f"The {param} sides must be between 320-4096 pixels ({img.width}x{img.height}).")
    return img


# --------------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # client went away, socket closed by stop()
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds the body back until
    # the client's delayed ACK (~40 ms on every kept-alive request).
    disable_nagle_algorithm = True
    server_version = "imagegw-emulator/1"
    sys_version = ""
    timeout = 60
    server: _Server

    request_id = ""
    _headers_sent = False

    # ----- plumbing -------------------------------------------------------------------------------

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if self.emulator.log_requests:
            sys.stderr.write(f"emulator: {self.address_string()} {format % args}\n")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.emulator.log_requests:
            sys.stderr.write(f'emulator: {self.address_string()} "{self.requestline}" {code}\n')

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed request lines, unsupported methods...: answer in OpenAI format, not HTML.
        self.request_id = self.request_id or "req_" + secrets.token_hex(16)
        self.close_connection = True
        self._send_json(code, _ApiError(code, message or explain or "Bad request.").body())

    def _begin(self, status: int, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        self._headers_sent = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("x-request-id", self.request_id)
        for key, value in (headers or {}).items():
            self.send_header(key, value)

    def _send_bytes(
        self, status: int, payload: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self._begin(status, content_type, headers)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _send_json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(obj).encode("utf-8"), "application/json", headers)

    def _send_error(self, error: _ApiError) -> None:
        self._send_json(error.status, error.body(), error.headers)

    def _drop(self) -> None:
        self.close_connection = True
        if self.emulator.log_requests:
            sys.stderr.write(f'emulator: {self.address_string()} "{self.requestline}" dropped\n')
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    self.close_connection = True
                    raise _ApiError(400, "Invalid chunked request body.") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    self.close_connection = True
                    raise _ApiError(413, "Request body too large.", code="request_too_large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            self.close_connection = True
            raise _ApiError(400, "Invalid Content-Length header.") from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise _ApiError(
                413,
                f"Request body too large: {length} bytes (the emulator takes up to {MAX_BODY_BYTES}).",
                code="request_too_large",
            )
        return self.rfile.read(length) if length > 0 else b""

    # ----- dispatch -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self.request_id = "req_" + secrets.token_hex(16)
        self._headers_sent = False
        try:
            self._route()
        except _ApiError as exc:
            if not self._headers_sent:
                self._send_error(exc)
            else:
                self.close_connection = True
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            if not self._headers_sent:
                self._send_error(
                    _ApiError(
                        500, f"Emulator internal error: {type(exc).__name__}: {exc}", type="server_error"
                    )
                )

    def _route(self) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        method = self.command
        if method in ("GET", "HEAD") and (match := _FILE_ROUTE.fullmatch(path)):
            self._serve_file(match.group(1), match.group(2))
            return
        if path.startswith("/_emulator/"):
            self._control(method, path)
            return
        if method == "POST":
            if match := _OPENAI_ROUTE.fullmatch(path):
                self._image_request(match.group(1), None, path, query)
                return
            if match := _AZURE_ROUTE.fullmatch(path):
                self._image_request(match.group(2), match.group(1), path, query)
                return
            if match := _BEDROCK_ROUTE.fullmatch(path):
                self._bedrock_request(unquote_to_bytes(match.group(1)).decode("utf-8", "replace"), path)
                return
        if method in ("POST", "PUT", "PATCH"):
            self._read_body()
        raise _ApiError(404, f"Invalid URL ({method} {path})")

    def _serve_file(self, file_id: str, ext: str) -> None:
        stored = self.emulator._get_file(file_id)
        if stored is None or stored[1] != _CONTENT_TYPES[ext]:
            raise _ApiError(404, f"No such file: {file_id}.{ext}", code="not_found")
        self._send_bytes(200, stored[0], stored[1], {"Cache-Control": "private, max-age=3600"})

    def _control(self, method: str, path: str) -> None:
        emu = self.emulator
        raw = self._read_body() if method in ("POST", "PUT", "PATCH") else b""
        if path == "/_emulator/health" and method == "GET":
            self._send_json(200, {"ok": True})
        elif path == "/_emulator/requests" and method == "GET":
            self._send_json(200, {"requests": [r.to_dict() for r in emu._snapshot()]})
        elif path == "/_emulator/reset" and method == "POST":
            emu.reset()
            self._send_json(200, {"ok": True})
        elif path == "/_emulator/faults" and method == "GET":
            self._send_json(200, emu._fault_state())
        elif path == "/_emulator/faults" and method == "POST":
            try:
                payload = json.loads(raw or b"{}")
                if not isinstance(payload, dict) or not set(payload) <= {"faults", "mode"}:
                    raise ValueError('expected {"faults": [...]} and/or {"mode": {...}|null}')
                faults = payload.get("faults", [])
                if not isinstance(faults, list):
                    raise ValueError("'faults' must be an array")
                queued = [Fault.coerce(f) for f in faults]
                mode = Fault.coerce(payload["mode"]) if payload.get("mode") is not None else None
            except ValueError as exc:  # JSONDecodeError is a ValueError
                raise _ApiError(
                    400, f"Invalid fault request: {exc}", param="faults", code="invalid_value"
                ) from None
            emu.add_faults(*queued)
            if "mode" in payload:
                emu.set_fault_mode(mode)
            self._send_json(200, emu._fault_state())
        else:
            raise _ApiError(404, f"Invalid URL ({method} {path})")

    # ----- image requests -------------------------------------------------------------------------

    def _image_request(self, kind: str, deployment: str | None, path: str, query: dict[str, str]) -> None:
        emu = self.emulator
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        record = RecordedRequest("POST", path, query, headers, deployment=deployment)
        try:
            raw = self._read_body()
        except _ApiError:
            emu._record(record)
            raise
        body = _parse_body(kind, raw, headers.get("content-type", ""))
        record.json, record.form = body.json, dict(body.form)
        record.files = [(u.field, u.filename, u.content_type, len(u.data)) for u in body.uploads]
        emu._record(record)

        if deployment is not None:
            if not query.get("api-version"):
                raise _ApiError(
                    400,
                    "The api-version query parameter (?api-version=) is required for all requests.",
                    param="api-version",
                    code="MissingApiVersionParameter",
                )
            if emu.api_key is not None and headers.get("api-key") != emu.api_key:
                raise _ApiError(
                    401,
                    "Access denied due to invalid subscription key or wrong API endpoint. "
                    "Make sure to provide a valid key for an active subscription "
                    "and use a correct regional API endpoint for your resource.",
                    code="invalid_api_key",
                )
        elif emu.api_key is not None:
            auth = headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or token.strip() != emu.api_key:
                message = (
                    f"Incorrect API key provided: {_mask_key(token.strip())}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys."
                    if token.strip()
                    else "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                )
                raise _ApiError(401, message, code="invalid_api_key")
        if body.error is not None:
            raise body.error

        params = body.params
        model_param = params.get("model")
        model = deployment or (model_param if isinstance(model_param, str) and model_param else "dall-e-2")
        prompt = ""
        directive: Fault | None = None
        if kind != "variations":
            raw_prompt = params.get("prompt")
            if not isinstance(raw_prompt, str):
                raise _ApiError(
                    400,
                    "Missing required parameter: 'prompt'.",
                    param="prompt",
                    code="missing_required_parameter",
                )
            prompt, directive = _parse_directives(raw_prompt)

        fault = emu._next_fault(directive)
        if fault is not None:
            if fault.delay > 0:
                emu._stopping.wait(fault.delay)
            if fault.drop:
                self._drop()
                return
            if fault.status is not None and fault.status != 200:
                raise _fault_error(fault, fault.status, model)

        job = _build_job(kind, model, prompt, body, deployment=deployment is not None)
        if job.stream:
            self._stream(job, fault)
        else:
            self._respond(job, fault)

    # ----- Amazon Bedrock (Nova Canvas) -----------------------------------------------------------

    def _send_bedrock_error(self, status: int, message: str | None = None) -> None:
        """Bedrock runtime's error shape, as botocore's rest-json parser reads it."""
        code, default = _BEDROCK_ERRORS.get(
            status, ("InternalServerException" if status >= 500 else "ValidationException", "")
        )
        text = message or default or "An internal server error occurred. Retry your request."
        self._send_json(
            status, {"message": text}, {"x-amzn-ErrorType": code, "x-amzn-RequestId": self.request_id}
        )

    def _bedrock_request(self, model_id: str, path: str) -> None:
        emu = self.emulator
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        record = RecordedRequest("POST", path, {}, headers, deployment=model_id)
        try:
            raw = self._read_body()
        except _ApiError as exc:
            emu._record(record)
            self._send_bedrock_error(exc.status, exc.message)
            return
        try:
            doc = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = None
        record.json = doc if isinstance(doc, dict) else None
        emu._record(record)
        try:
            if not isinstance(doc, dict):
                raise _ApiError(400, "Malformed input request: the body must be a JSON object.")
            self._nova(model_id, doc)
        except _ApiError as exc:
            if not self._headers_sent:
                self._send_bedrock_error(exc.status, exc.message)
            else:
                self.close_connection = True

    def _nova(self, model_id: str, doc: dict[str, Any]) -> None:
        task = doc.get("taskType")
        if task not in _NOVA_TASKS:
            raise _ApiError(400, f"Malformed input request: unsupported taskType {task!r} in the emulator.")
        task_params = doc.get(_NOVA_TASKS[task])
        if not isinstance(task_params, dict):
            raise _ApiError(400, f"Malformed input request: {_NOVA_TASKS[task]} is required.")
        raw_text = task_params.get("text", "")
        if not isinstance(raw_text, str):
            raise _ApiError(400, "Malformed input request: text must be a string.")
        prompt, directive = _parse_directives(raw_text)
        fault = self.emulator._next_fault(directive)
        if fault is not None:
            if fault.delay > 0:
                self.emulator._stopping.wait(fault.delay)
            if fault.drop:
                self._drop()
                return
            if fault.status is not None and fault.status != 200:
                raise _ApiError(fault.status, fault.message or "")
        config = doc.get("imageGenerationConfig") or {}
        if not isinstance(config, dict):
            raise _ApiError(400, "Malformed input request: imageGenerationConfig must be an object.")
        n = config.get("numberOfImages", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 5:
            raise _ApiError(400, "Malformed input request: numberOfImages must be an integer from 1 to 5.")
        if config.get("quality", "standard") not in ("standard", "premium"):
            raise _ApiError(400, "Malformed input request: quality must be standard or premium.")
        seed = f"{model_id}\x00{config.get('seed', '')}"
        pictures: list[Image.Image] = []
        if task == "TEXT_IMAGE":
            if not prompt or len(raw_text) > 1024:
                raise _ApiError(400, "Malformed input request: text must be 1-1024 characters long.")
            width, height = _nova_resolution(config)
            pictures = [draw_image(prompt, seed, i, width, height, False) for i in range(n)]
        elif task == "INPAINTING":
            image = _nova_image(task_params.get("image"), "image")
            has_mask_image = task_params.get("maskImage") is not None
            if has_mask_image == (task_params.get("maskPrompt") is not None):
                raise _ApiError(400, "Malformed input request: exactly one of maskImage or maskPrompt.")
            mask = None
            if has_mask_image:
                nova_mask = _nova_image(task_params.get("maskImage"), "maskImage", check_size=False)
                if nova_mask.size != image.size:
                    raise _ApiError(400, "The maskImage must have the same size as the image.")
                colours = nova_mask.convert("RGB").getcolors(maxcolors=2**24) or []
                if any(colour not in ((0, 0, 0), (255, 255, 255)) for _, colour in colours):
                    raise _ApiError(400, "The maskImage must contain only pure black and pure white pixels.")
                mask = nova_mask.convert("RGBA")  # black (edit here) becomes alpha 0, OpenAI's convention
                mask.putalpha(nova_mask.convert("L").point(lambda v: 0 if v < 128 else 255))
            width, height = image.size
            pictures = [
                edit_image(prompt or "inpaint", seed, i, width, height, [image], mask, False)
                for i in range(n)
            ]
        else:
            sources = task_params.get("images")
            if not isinstance(sources, list) or not 1 <= len(sources) <= 5:
                raise _ApiError(400, "Malformed input request: images must hold 1 to 5 images.")
            images = [_nova_image(item, f"images[{i}]") for i, item in enumerate(sources)]
            strength = task_params.get("similarityStrength", 0.7)
            if (
                isinstance(strength, bool)
                or not isinstance(strength, int | float)
                or not 0.2 <= strength <= 1
            ):
                raise _ApiError(400, "Malformed input request: similarityStrength must be from 0.2 to 1.0.")
            width, height = _nova_resolution(config)
            first = hashlib.sha256(images[0].tobytes()).hexdigest()
            pictures = [
                vary_image(images[0], f"{first}{prompt}{strength}", i, width, height) for i in range(n)
            ]
        encoded = [base64.b64encode(encode_image(p, "png", None)).decode("ascii") for p in pictures]
        if fault is not None and fault.truncated_b64:
            encoded = [_truncate_b64(b64) for b64 in encoded]
        text = json.dumps({"images": encoded})
        if fault is not None and fault.malformed_json:
            self._send_bytes(200, text[: max(1, len(text) // 3)].encode("ascii"), "application/json")
            return
        self._send_bytes(200, text.encode("ascii"), "application/json", {"x-amzn-RequestId": self.request_id})

    def _respond(self, job: _Job, fault: Fault | None) -> None:
        truncated = fault is not None and fault.truncated_b64
        host = self.headers.get("Host")
        base = f"http://{host}" if host else self.emulator.base_url
        items: list[dict[str, Any]] = []
        for index in range(job.n):
            data = job.encode(index)
            item: dict[str, Any]
            if job.response_format == "url":
                if truncated:
                    data = data[: len(data) // 2]
                file_id = self.emulator._store_file(data, _CONTENT_TYPES[job.output_format])
                item = {"url": f"{base}/files/{file_id}.{job.output_format}"}
            else:
                b64 = base64.b64encode(data).decode("ascii")
                item = {"b64_json": _truncate_b64(b64) if truncated else b64}
            if job.model.lower().startswith("dall-e-3"):
                item["revised_prompt"] = f"{job.prompt}, rendered in detail"
            items.append(item)
        answer: dict[str, Any] = {"created": int(time.time()), "data": items}
        if job.gpt:
            answer.update(
                background=job.background,
                output_format=job.output_format,
                quality=job.quality,
                size=job.size,
                usage=job.usage(job.n),
            )
        if fault is not None and fault.malformed_json:
            text = json.dumps(answer)
            self._send_bytes(
                200,
                text[: max(1, len(text) // 3)].encode("ascii") + b"<!-- upstream cut -->",
                "application/json",
            )
            return
        self._send_json(200, answer)

    def _stream(self, job: _Job, fault: Fault | None) -> None:
        prefix = "image_generation" if job.kind == "generations" else "image_edit"
        self.close_connection = True
        self._begin(200, "text/event-stream", {"Cache-Control": "no-cache", "Connection": "close"})
        self.end_headers()
        for name, data in self._events(job, prefix, fault):
            self.wfile.write(f"event: {name}\ndata: {data}\n\n".encode())
            self.wfile.flush()

    def _events(self, job: _Job, prefix: str, fault: Fault | None) -> Iterator[tuple[str, str]]:
        common = {
            "size": job.size,
            "quality": job.quality,
            "background": job.background,
            "output_format": job.output_format,
        }
        for index in range(job.n):
            final = job.render(index)
            for step in range(job.partial_images):
                b64 = base64.b64encode(
                    encode_image(_blocky(final, step, job.partial_images), job.output_format, job.compression)
                ).decode("ascii")
                event: dict[str, Any] = {
                    "type": f"{prefix}.partial_image",
                    "b64_json": b64,
                    "created_at": int(time.time()),
                    **common,
                    "partial_image_index": step,
                }
                yield f"{prefix}.partial_image", json.dumps(event)
            b64 = base64.b64encode(encode_image(final, job.output_format, job.compression)).decode("ascii")
            if fault is not None and fault.truncated_b64:
                b64 = _truncate_b64(b64)
            event = {
                "type": f"{prefix}.completed",
                "b64_json": b64,
                "created_at": int(time.time()),
                **common,
                "usage": job.usage(1),
            }
            text = json.dumps(event)
            if fault is not None and fault.malformed_json:
                text = text[: max(1, len(text) // 3)]
            yield f"{prefix}.completed", text


# --------------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------------


class Emulator:
    """A real HTTP test double of OpenAI / Azure OpenAI / Bedrock (Nova Canvas) image endpoints, served from
    a daemon thread.

    >>> with Emulator() as emu:
    ...     client = OpenAI(base_url=emu.base_url + "/v1", api_key="x")
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.log_requests = False  # one access-log line per request to stderr (the CLI turns it on)
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._mode: Fault | None = None
        self._files: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def base_url(self) -> str:
        """http://host:port, without /v1 (the actual port once started)."""
        host = self.host
        if host in ("", "0.0.0.0"):  # noqa: S104 - only used to build a URL a client can reach
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> Emulator:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]  # keep the port: a restart serves on the same base_url
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes requests sleeping in a delay fault
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- faults and records ---------------------------------------------------------------------

    def add_faults(self, *faults: Fault | dict[str, Any]) -> None:
        """Queue faults; each image request consumes one, in order."""
        coerced = [Fault.coerce(f) for f in faults]
        with self._lock:
            self._faults.extend(coerced)

    def set_fault_mode(self, fault: Fault | dict[str, Any] | None) -> None:
        """Apply `fault` to every image request (after queued faults run out) until cleared with None."""
        coerced = Fault.coerce(fault) if fault is not None else None
        with self._lock:
            self._mode = coerced

    def reset(self) -> None:
        """Forget recorded requests, queued faults and the fault mode (served files stay)."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self._mode = None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def _next_fault(self, directive: Fault | None) -> Fault | None:
        if directive is not None:
            return directive
        with self._lock:
            return self._faults.popleft() if self._faults else self._mode

    def _fault_state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "faults": [asdict(f) for f in self._faults],
                "mode": asdict(self._mode) if self._mode is not None else None,
            }

    def _store_file(self, data: bytes, content_type: str) -> str:
        file_id = "img-" + hashlib.sha256(data).hexdigest()[:32]
        with self._lock:
            self._files[file_id] = (data, content_type)
            self._files.move_to_end(file_id)
            while len(self._files) > MAX_STORED_FILES:
                self._files.popitem(last=False)
        return file_id

    def _get_file(self, file_id: str) -> tuple[bytes, str] | None:
        with self._lock:
            return self._files.get(file_id)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

_DESCRIPTION = """\
Run the upstream emulator: a TEST DOUBLE of upstream image services (OpenAI, Azure OpenAI, Bedrock).
It is NOT an image model and generates nothing meaningful: it answers the OpenAI Images API
(generations, edits, variations; Azure deployment routes too) and Amazon Bedrock's InvokeModel for
Nova Canvas (POST /model/{modelId}/invoke, signature not checked) with deterministic placeholder
pictures (coloured shapes drawn from a hash of the prompt), and can inject faults (errors, delays,
dropped connections, malformed bodies). For local development and tests only; never point real
users or production traffic at it.
"""

_EPILOG = """\
examples:
  imagegw emulator --port 8089
  OPENAI_BASE_URL=http://127.0.0.1:8089/v1 python my_client.py
  curl -X POST localhost:8089/_emulator/faults -d '{"faults":[{"status":429,"retry_after":"1"}]}'
  a prompt containing [[emulator:500]], [[emulator:429]], [[emulator:delay=2.5]], [[emulator:drop]],
  [[emulator:malformed]] or [[emulator:truncated]] makes that one request fail that way.
"""


def main(argv: list[str] | None = None) -> int:
    """`imagegw emulator --port N [--host H] [--api-key K]`: serve until Ctrl-C."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["emulator"]:
        args_in = args_in[1:]
    parser = argparse.ArgumentParser(
        prog="imagegw emulator",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_CLI_PORT,
        help=f"port to listen on (default {DEFAULT_CLI_PORT}; 0 picks a free port)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="if set, require 'Authorization: Bearer KEY' (OpenAI) or 'api-key: KEY' (Azure)",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    args = parser.parse_args(args_in)

    emulator = Emulator(host=args.host, port=args.port, api_key=args.api_key)
    emulator.log_requests = not args.quiet
    try:
        emulator.start()
    except OSError as exc:
        print(f"imagegw emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(
        f"imagegw emulator (a TEST DOUBLE, not an image model) serving on {emulator.base_url} "
        f"(OpenAI base URL {emulator.base_url}/v1); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, _terminate)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    print("imagegw emulator: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
