"""The OpenAI Images wire (OpenAI and Azure OpenAI routes): requests in, JSON answers and SSE streams out.

Usage tokens (GPT image models): text_tokens = ceil(len(prompt) / 4); image_tokens = 65 per input image
(the mask is not counted; 0 for generations); output_tokens = n * ceil(B * W * H / 1024**2) where B is
272 (low), 1056 (medium), 4160 (high), 8320 (xhigh), 16640 (max), OpenAI's own per-1024x1024 figures
for gpt-image-1; input_tokens = text + image; total = input + output. Quality auto/standard answers
"medium", hd answers "high".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from imagegw_dev.emulator.drawing import (
    DEFAULT_FRAME_COUNT,
    DEFAULT_FRAME_DURATION_MS,
    blocky,
    draw_image,
    draw_svg,
    edit_image,
    encode_gif,
    encode_image,
    open_image,
    vary_image,
)
from imagegw_dev.emulator.errors import ApiError
from imagegw_dev.emulator.faults import Fault, parse_directives, truncate_b64

if TYPE_CHECKING:
    from PIL import Image

MAX_SIDE = 4096
DEFAULT_SIZE = (1024, 1024)
INPUT_IMAGE_TOKENS = 65
OUTPUT_TOKENS_PER_1024_SQUARE = {"low": 272, "medium": 1056, "high": 4160, "xhigh": 8320, "max": 16640}
_QUALITY_ALIASES = {"auto": "medium", "standard": "medium", "hd": "high"}
CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "svg": "image/svg+xml",
}
_SIZE_RE = re.compile(r"(\d{1,5})x(\d{1,5})")
_IMAGE_FIELD = re.compile(r"image(\[\d*\])?")
_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),(.*)", re.DOTALL)
_DISPOSITION_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def fault_error(fault: Fault, status: int, model: str) -> ApiError:
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
    return ApiError(status, fault.message or f"{message} (emulated)", type=kind, code=code, headers=headers)


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
        raise ApiError(
            400,
            f"Invalid type for '{name}': expected an integer, but got {_type_name(value)} instead.",
            param=name,
            code="invalid_type",
        )
    if number > hi:
        raise ApiError(
            400,
            f"Invalid '{name}': integer above maximum value. "
            f"Expected a value <= {hi}, but got {number} instead.",
            param=name,
            code="integer_above_max_value",
        )
    if number < lo:
        raise ApiError(
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
    raise ApiError(
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
    raise ApiError(
        400, f"Invalid value: '{value}'. Supported values are: {listed}.", param=name, code="invalid_value"
    )


def _parse_size(value: Any) -> tuple[int, int]:
    if value is None or value == "" or value == "auto":
        return DEFAULT_SIZE
    match = _SIZE_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ApiError(
            400,
            f"Invalid value: '{value}'. "
            "The size must be 'auto' or of the form 'WIDTHxHEIGHT', e.g. '1024x1024'.",
            param="size",
            code="invalid_value",
        )
    width, height = int(match.group(1)), int(match.group(2))
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ApiError(
            400,
            f"Invalid size '{value}'. Width and height must be between 1 and {MAX_SIDE} in the emulator.",
            param="size",
            code="invalid_value",
        )
    return width, height


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


@dataclass
class _Upload:
    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Body:
    params: dict[str, Any] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    uploads: list[_Upload] = field(default_factory=list)
    images: list[tuple[str, str | None, bytes]] = field(default_factory=list)  # (param, content type, bytes)
    mask: tuple[str, str | None, bytes] | None = None
    error: ApiError | None = None


def _disposition(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, raw in _DISPOSITION_PARAM.findall(";" + value.partition(";")[2]):
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        out[key.lower()] = raw
    return out


def _parse_multipart(body: Body, raw: bytes, content_type: str) -> None:
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    try:
        parts = MultipartDecoder(raw, content_type).parts
    except Exception as exc:
        raise ApiError(400, f"Could not parse the multipart/form-data body: {exc}") from None
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
        raise ApiError(
            400,
            f"Invalid '{param}': the emulator accepts data URLs only, not file_id.",
            param=param,
            code="invalid_value",
        )
    if isinstance(url, Mapping):  # {"image_url": {"url": ...}} as some clients send it
        url = url.get("url")
    match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise ApiError(
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
        raise ApiError(
            400, f"Invalid '{param}': the data URL is not valid base64.", param=param, code="invalid_value"
        ) from None
    return param, mime or None, data


def _parse_json_edit(body: Body) -> None:
    params = body.params
    images = params.get("images")
    if images is None and "image" in params:
        images = params["image"] if isinstance(params["image"], list) else [params["image"]]
    if images is not None:
        if not isinstance(images, list):
            raise ApiError(
                400, "Invalid type for 'images': expected an array.", param="images", code="invalid_type"
            )
        body.images = [_decode_data_url(item, f"images[{i}]") for i, item in enumerate(images)]
    if params.get("mask") is not None:
        body.mask = _decode_data_url(params["mask"], "mask")


def parse_body(kind: str, raw: bytes, content_type: str) -> Body:
    body = Body()
    mime = content_type.split(";", 1)[0].strip().lower()
    try:
        if mime == "multipart/form-data":
            if kind == "generations":
                raise ApiError(400, "The generations endpoint expects a JSON body (application/json).")
            _parse_multipart(body, raw, content_type)
        elif kind == "variations":
            raise ApiError(400, "The variations endpoint expects a multipart/form-data body.")
        else:
            try:
                parsed = json.loads(raw.decode("utf-8")) if raw.strip() else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ApiError(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                    "sent was not valid JSON.)",
                ) from None
            if not isinstance(parsed, dict):
                raise ApiError(400, "The request body must be a JSON object.")
            body.json = parsed
            body.params = parsed
            if kind == "edits":
                _parse_json_edit(body)
    except ApiError as exc:
        body.error = exc
    return body


@dataclass
class Job:
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


@dataclass
class _Output:
    """What the answer's images are encoded as."""

    format: str
    frame_count: int
    frame_duration_ms: int
    compression: int | None
    transparent: bool


def _image_count(params: Mapping[str, Any], model: str) -> int:
    n = _int_param(params, "n", 1, 1, 10) or 1
    if model.lower().startswith("dall-e-3") and n != 1:
        raise ApiError(400, "You must provide n=1 for this model.", param="n")
    return n


def _output(params: Mapping[str, Any]) -> _Output:
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
        raise ApiError(
            400,
            "Transparent background is not supported for output_format 'jpeg'; use 'png' or 'webp'.",
            param="background",
            code="invalid_value",
        )
    return _Output(output_format, frame_count, frame_duration_ms, compression, transparent)


def _quality(params: Mapping[str, Any]) -> str:
    quality_in = _choice_param(
        params, "quality", ("low", "medium", "high", "xhigh", "max", "auto", "standard", "hd")
    )
    return _QUALITY_ALIASES.get(quality_in or "auto", quality_in or "medium")


def _streaming(params: Mapping[str, Any], model: str, gpt: bool) -> tuple[bool, int]:
    """(stream, partial_images)."""
    stream = _bool_param(params, "stream")
    partial_images = _int_param(params, "partial_images", 0, 0, 3) or 0
    if stream and not gpt:
        raise ApiError(
            400, f"Streaming is not supported for the model '{model}'.", param="stream", code="invalid_value"
        )
    return stream, partial_images


def _check_format_fits(output_format: str, n: int, stream: bool, gpt: bool) -> None:
    if output_format in ("gif", "svg") and (stream or not gpt):
        raise ApiError(
            400,
            f"output_format '{output_format}' is only supported for GPT image models without streaming.",
            param="output_format",
            code="invalid_value",
        )
    if output_format == "svg" and n != 1:
        raise ApiError(400, "output_format 'svg' supports n=1 only.", param="n", code="invalid_value")


def _input_images(kind: str, body: Body) -> tuple[list[Image.Image], Image.Image | None, str]:
    """(inputs, mask, seed) of an edit or a variation; nothing for a generation."""
    if kind not in ("edits", "variations"):
        return [], None, ""
    if "image" in body.form:
        raise ApiError(
            400,
            "Invalid type for 'image': expected one of an array of files or file, but got a string instead.",
            param="image",
            code="invalid_type",
        )
    if not body.images:
        name = "images" if body.json is not None else "image"
        raise ApiError(
            400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
        )
    if kind == "variations":
        body.images = body.images[:1]
    inputs = [open_image(*item) for item in body.images]
    mask = open_image(*body.mask) if body.mask is not None and kind == "edits" else None
    return inputs, mask, hashlib.sha256(body.images[0][2]).hexdigest()


def build_job(kind: str, model: str, prompt: str, body: Body) -> Job:
    """The validated image request, or an ApiError for the first parameter OpenAI would refuse."""
    params = body.params
    gpt = _is_gpt_image(model)
    n = _image_count(params, model)
    width, height = _parse_size(params.get("size"))
    output = _output(params)
    quality = _quality(params)
    response_format = _choice_param(params, "response_format", ("url", "b64_json")) or "url"
    if gpt:
        response_format = "b64_json"
    stream, partial_images = _streaming(params, model, gpt)
    _check_format_fits(output.format, n, stream, gpt)
    inputs, mask, seed = _input_images(kind, body)
    return Job(
        kind=kind,
        model=model,
        prompt=prompt,
        n=n,
        width=width,
        height=height,
        output_format=output.format,
        compression=output.compression,
        transparent=output.transparent,
        quality=quality,
        response_format=response_format,
        stream=stream,
        partial_images=partial_images,
        inputs=inputs,
        mask=mask,
        seed=seed,
        frame_count=output.frame_count,
        frame_duration_ms=output.frame_duration_ms,
    )


# --------------------------------------------------------------------------------------------------
# Reading a request: credentials, model, prompt
# --------------------------------------------------------------------------------------------------


def check_credentials(
    headers: Mapping[str, str], query: Mapping[str, str], deployment: str | None, api_key: str | None
) -> None:
    """Azure's api-version and api-key, or OpenAI's bearer key (when the emulator has a key)."""
    if deployment is not None:
        if not query.get("api-version"):
            raise ApiError(
                400,
                "The api-version query parameter (?api-version=) is required for all requests.",
                param="api-version",
                code="MissingApiVersionParameter",
            )
        if api_key is not None and headers.get("api-key") != api_key:
            raise ApiError(
                401,
                "Access denied due to invalid subscription key or wrong API endpoint. "
                "Make sure to provide a valid key for an active subscription "
                "and use a correct regional API endpoint for your resource.",
                code="invalid_api_key",
            )
    elif api_key is not None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != api_key:
            message = (
                f"Incorrect API key provided: {_mask_key(token.strip())}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
                if token.strip()
                else "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            raise ApiError(401, message, code="invalid_api_key")


def model_name(params: Mapping[str, Any], deployment: str | None) -> str:
    """Azure's deployment, else the `model` parameter, else OpenAI's default (dall-e-2)."""
    model_param = params.get("model")
    return deployment or (model_param if isinstance(model_param, str) and model_param else "dall-e-2")


def read_prompt(kind: str, params: Mapping[str, Any]) -> tuple[str, Fault | None]:
    """(prompt without its directives, the fault they ask for); variations have no prompt."""
    if kind == "variations":
        return "", None
    raw_prompt = params.get("prompt")
    if not isinstance(raw_prompt, str):
        raise ApiError(
            400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter"
        )
    return parse_directives(raw_prompt)


# --------------------------------------------------------------------------------------------------
# Answers: JSON and server-sent events
# --------------------------------------------------------------------------------------------------


def _answer_item(
    job: Job, index: int, truncated: bool, store_file: Callable[[bytes, str], str], base_url: str
) -> dict[str, Any]:
    data = job.encode(index)
    item: dict[str, Any]
    if job.response_format == "url":
        if truncated:
            data = data[: len(data) // 2]
        file_id = store_file(data, CONTENT_TYPES[job.output_format])
        item = {"url": f"{base_url}/files/{file_id}.{job.output_format}"}
    else:
        b64 = base64.b64encode(data).decode("ascii")
        item = {"b64_json": truncate_b64(b64) if truncated else b64}
    if job.model.lower().startswith("dall-e-3"):
        item["revised_prompt"] = f"{job.prompt}, rendered in detail"
    return item


def image_answer(
    job: Job, fault: Fault | None, store_file: Callable[[bytes, str], str], base_url: str
) -> bytes:
    """The JSON body of a 200 answer; `url` images are handed to `store_file` and served from `base_url`."""
    truncated = fault is not None and fault.truncated_b64
    items = [_answer_item(job, index, truncated, store_file, base_url) for index in range(job.n)]
    answer: dict[str, Any] = {"created": int(time.time()), "data": items}
    if job.gpt:
        answer.update(
            background=job.background,
            output_format=job.output_format,
            quality=job.quality,
            size=job.size,
            usage=job.usage(job.n),
        )
    text = json.dumps(answer)
    if fault is not None and fault.malformed_json:
        return text[: max(1, len(text) // 3)].encode("ascii") + b"<!-- upstream cut -->"
    return text.encode("utf-8")


def stream_events(job: Job, fault: Fault | None) -> Iterator[tuple[str, str]]:
    """(event name, data) for each server-sent event of a streamed answer."""
    prefix = "image_generation" if job.kind == "generations" else "image_edit"
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
                encode_image(blocky(final, step, job.partial_images), job.output_format, job.compression)
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
            b64 = truncate_b64(b64)
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
