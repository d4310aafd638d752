"""The Amazon Bedrock runtime wire: InvokeModel (POST /model/{modelId}/invoke) with Nova Canvas JSON, or,
for a model id naming `stability.`, Stability AI's JSON (below: text-to-image by aspect ratio, SD3.5's
image-to-image, Stable Image Inpaint's image + mask (white = edit), answered `{"seeds", "finish_reasons",
"images"}` with one image in the output_format asked).

The body is Nova Canvas JSON (taskType TEXT_IMAGE, INPAINTING with maskImage (black = edit) or maskPrompt,
IMAGE_VARIATION), answered `{"images": [b64 PNG...]}`. The SigV4 signature is not checked (nor the API
key). An error status answers Bedrock's error shape: `{"message": ...}` with `x-amzn-ErrorType` (429
ThrottlingException, 400 ValidationException, 403 AccessDeniedException, 404 ResourceNotFoundException,
408 ModelTimeoutException, 503 ServiceUnavailableException, other 5xx InternalServerException).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imagegw_dev.emulator.drawing import draw_image, edit_image, encode_image, open_image, vary_image
from imagegw_dev.emulator.errors import ApiError
from imagegw_dev.emulator.faults import Fault, parse_directives, truncate_b64

if TYPE_CHECKING:
    from PIL import Image

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


def error_answer(status: int, message: str | None = None) -> tuple[dict[str, Any], str]:
    """(body, x-amzn-ErrorType) of Bedrock runtime's error shape, as botocore's rest-json parser reads it."""
    code, default = _BEDROCK_ERRORS.get(
        status, ("InternalServerException" if status >= 500 else "ValidationException", "")
    )
    text = message or default or "An internal server error occurred. Retry your request."
    return {"message": text}, code


def _nova_resolution(config: Mapping[str, Any]) -> tuple[int, int]:
    """Nova Canvas's size rules: sides 320-4096 and multiples of 16, ratio 1:4..4:1, <= 4,194,304 pixels."""
    width, height = config.get("width", 1024), config.get("height", 1024)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (width, height)):
        raise ApiError(400, "Malformed input request: width and height must be integers.")
    if not (320 <= width <= 4096 and 320 <= height <= 4096):
        raise ApiError(400, f"Width and height must be between 320-4096 pixels ({width}x{height}).")
    if width % 16 or height % 16:
        raise ApiError(400, f"Width and height must be evenly divisible by 16 ({width}x{height}).")
    if width > 4 * height or height > 4 * width:
        raise ApiError(400, f"The aspect ratio must be between 1:4 and 4:1 ({width}x{height}).")
    if width * height > 4_194_304:
        raise ApiError(400, f"The total pixel count must be at most 4,194,304 ({width}x{height}).")
    return width, height


def _nova_image(value: Any, param: str, *, check_size: bool = True) -> Image.Image:
    """A base64 image of a Nova Canvas request, held to Nova's input rules (no transparent pixels)."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"Malformed input request: {param} must be a base64 string.")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"Malformed input request: {param} is not valid base64.") from None
    img = open_image(param, None, data)
    transparent = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    if transparent and img.convert("RGBA").getchannel("A").getextrema()[0] != 255:
        raise ApiError(400, f"The {param} must not contain transparent or translucent pixels.")
    if check_size and not (320 <= img.width <= 4096 and 320 <= img.height <= 4096):
        raise ApiError(400, f"The {param} sides must be between 320-4096 pixels ({img.width}x{img.height}).")
    return img


@dataclass
class NovaRequest:
    """The task of a Nova Canvas request, its parameters and its text prompt (directives stripped)."""

    task: str
    params: dict[str, Any]
    raw_text: str
    prompt: str
    directive: Fault | None


def read_request(doc: Mapping[str, Any]) -> NovaRequest:
    """The task and prompt of a request body; its directive is the fault it asks for."""
    task = doc.get("taskType")
    if task not in _NOVA_TASKS:
        raise ApiError(400, f"Malformed input request: unsupported taskType {task!r} in the emulator.")
    task_params = doc.get(_NOVA_TASKS[task])
    if not isinstance(task_params, dict):
        raise ApiError(400, f"Malformed input request: {_NOVA_TASKS[task]} is required.")
    raw_text = task_params.get("text", "")
    if not isinstance(raw_text, str):
        raise ApiError(400, "Malformed input request: text must be a string.")
    prompt, directive = parse_directives(raw_text)
    return NovaRequest(task, task_params, raw_text, prompt, directive)


def _image_count(config: Mapping[str, Any]) -> int:
    n = config.get("numberOfImages", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 5:
        raise ApiError(400, "Malformed input request: numberOfImages must be an integer from 1 to 5.")
    if config.get("quality", "standard") not in ("standard", "premium"):
        raise ApiError(400, "Malformed input request: quality must be standard or premium.")
    return n


def _text_image(request: NovaRequest, config: Mapping[str, Any], seed: str, n: int) -> list[Image.Image]:
    if not request.prompt or len(request.raw_text) > 1024:
        raise ApiError(400, "Malformed input request: text must be 1-1024 characters long.")
    width, height = _nova_resolution(config)
    return [draw_image(request.prompt, seed, i, width, height, False) for i in range(n)]


def _nova_mask(value: Any, image: Image.Image) -> Image.Image:
    """A Nova maskImage (black = edit here, white = keep) as OpenAI's mask (alpha 0 = edit here)."""
    nova_mask = _nova_image(value, "maskImage", check_size=False)
    if nova_mask.size != image.size:
        raise ApiError(400, "The maskImage must have the same size as the image.")
    colours = nova_mask.convert("RGB").getcolors(maxcolors=2**24) or []
    if any(colour not in ((0, 0, 0), (255, 255, 255)) for _, colour in colours):
        raise ApiError(400, "The maskImage must contain only pure black and pure white pixels.")
    mask = nova_mask.convert("RGBA")  # black (edit here) becomes alpha 0, OpenAI's convention
    mask.putalpha(nova_mask.convert("L").point(lambda v: 0 if v < 128 else 255))
    return mask


def _inpainting(request: NovaRequest, seed: str, n: int) -> list[Image.Image]:
    task_params = request.params
    image = _nova_image(task_params.get("image"), "image")
    has_mask_image = task_params.get("maskImage") is not None
    if has_mask_image == (task_params.get("maskPrompt") is not None):
        raise ApiError(400, "Malformed input request: exactly one of maskImage or maskPrompt.")
    mask = _nova_mask(task_params.get("maskImage"), image) if has_mask_image else None
    width, height = image.size
    prompt = request.prompt or "inpaint"
    return [edit_image(prompt, seed, i, width, height, [image], mask, False) for i in range(n)]


def _variation(request: NovaRequest, config: Mapping[str, Any], n: int) -> list[Image.Image]:
    sources = request.params.get("images")
    if not isinstance(sources, list) or not 1 <= len(sources) <= 5:
        raise ApiError(400, "Malformed input request: images must hold 1 to 5 images.")
    images = [_nova_image(item, f"images[{i}]") for i, item in enumerate(sources)]
    strength = request.params.get("similarityStrength", 0.7)
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.2 <= strength <= 1:
        raise ApiError(400, "Malformed input request: similarityStrength must be from 0.2 to 1.0.")
    width, height = _nova_resolution(config)
    first = hashlib.sha256(images[0].tobytes()).hexdigest()
    seed = f"{first}{request.prompt}{strength}"
    return [vary_image(images[0], seed, i, width, height) for i in range(n)]


def pictures(model_id: str, doc: Mapping[str, Any], request: NovaRequest) -> list[Image.Image]:
    """The pictures a Nova Canvas request asks for, or an ApiError for the first rule it breaks."""
    config = doc.get("imageGenerationConfig") or {}
    if not isinstance(config, dict):
        raise ApiError(400, "Malformed input request: imageGenerationConfig must be an object.")
    n = _image_count(config)
    seed = f"{model_id}\x00{config.get('seed', '')}"
    if request.task == "TEXT_IMAGE":
        return _text_image(request, config, seed, n)
    if request.task == "INPAINTING":
        return _inpainting(request, seed, n)
    return _variation(request, config, n)


def answer(images: list[Image.Image], fault: Fault | None) -> tuple[bytes, bool]:
    """(body, whether the fault spoiled it into something that is not JSON)."""
    encoded = [base64.b64encode(encode_image(p, "png", None)).decode("ascii") for p in images]
    if fault is not None and fault.truncated_b64:
        encoded = [truncate_b64(b64) for b64 in encoded]
    text = json.dumps({"images": encoded})
    if fault is not None and fault.malformed_json:
        return text[: max(1, len(text) // 3)].encode("ascii"), True
    return text.encode("ascii"), False


# ----- Stability AI on Bedrock (Stable Diffusion 3.5 Large, Stable Image Core / Ultra / Inpaint) -------

# Output sizes by aspect ratio (Stable Diffusion 3.5 Large's 1-megapixel table; used for every model here).
STABILITY_SIZES = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
    "9:21": (640, 1536),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "5:4": (1088, 896),
    "4:5": (896, 1088),
}
_STABILITY_COMMON = {"prompt", "negative_prompt", "seed", "output_format"}
_STABILITY_KEYS = {
    "sd3.5": _STABILITY_COMMON | {"mode", "aspect_ratio", "image", "strength"},
    "core": _STABILITY_COMMON | {"mode", "aspect_ratio"},
    "ultra": _STABILITY_COMMON | {"mode", "aspect_ratio"},
    "inpaint": _STABILITY_COMMON | {"image", "mask", "grow_mask", "style_preset"},
}


def stability_kind(model_id: str) -> str | None:
    """The Stability model a Bedrock model id names, or None (then it is Nova Canvas)."""
    name = model_id.lower()
    if "stability." not in name:
        return None
    for marker, kind in (("sd3-5", "sd3.5"), ("inpaint", "inpaint"), ("ultra", "ultra"), ("core", "core")):
        if marker in name:
            return kind
    raise ApiError(404, "The provided model identifier is invalid.")


@dataclass
class StabilityRequest:
    kind: str
    doc: dict[str, Any]
    prompt: str
    directive: Fault | None


def read_stability(kind: str, doc: Mapping[str, Any]) -> StabilityRequest:
    """The request held to the model's JSON schema: known keys only, a 1-10,000 character prompt."""
    extra = sorted(set(doc) - _STABILITY_KEYS[kind])
    if extra:
        raise ApiError(400, f"Malformed input request: #: extraneous key [{extra[0]}] is not permitted.")
    raw = doc.get("prompt")
    if not isinstance(raw, str) or not 1 <= len(raw) <= 10_000:
        raise ApiError(400, "Malformed input request: #/prompt: expected a string of 1-10000 characters.")
    for key in ("negative_prompt",):
        if key in doc and (not isinstance(doc[key], str) or len(doc[key]) > 10_000):
            raise ApiError(400, f"Malformed input request: #/{key}: expected a string of at most 10000.")
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 4_294_967_294:
        raise ApiError(400, "Malformed input request: #/seed: expected an integer from 0 to 4294967294.")
    if doc.get("output_format", "png") not in ("png", "jpeg"):
        raise ApiError(400, "Malformed input request: #/output_format: png or jpeg.")
    prompt, directive = parse_directives(raw)
    return StabilityRequest(kind, dict(doc), prompt, directive)


def _stability_image(value: Any, param: str) -> Image.Image:
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"Malformed input request: #/{param}: expected a base64 string.")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"Malformed input request: #/{param} is not valid base64.") from None
    img = open_image(param, None, data)
    if min(img.size) < 64 or img.width * img.height > 9_437_184:
        raise ApiError(400, f"The {param} must have sides of at least 64 and at most 9,437,184 pixels.")
    return img


def _stability_generation(request: StabilityRequest, seed: str) -> Image.Image:
    doc = request.doc
    if doc.get("mode", "text-to-image") != "text-to-image" or "image" in doc or "strength" in doc:
        return _image_to_image(request, seed)
    ratio = doc.get("aspect_ratio", "1:1")
    if ratio not in STABILITY_SIZES:
        raise ApiError(400, f"Malformed input request: #/aspect_ratio: {ratio!r} is not a valid enum value.")
    width, height = STABILITY_SIZES[ratio]
    return draw_image(request.prompt, seed, 0, width, height, False)


def _image_to_image(request: StabilityRequest, seed: str) -> Image.Image:
    doc = request.doc
    if request.kind != "sd3.5" or doc.get("mode") != "image-to-image":
        raise ApiError(400, "Malformed input request: #/mode: image-to-image needs mode, image and strength.")
    if "aspect_ratio" in doc:
        raise ApiError(400, "Malformed input request: aspect_ratio is for text-to-image only.")
    image = _stability_image(doc.get("image"), "image")
    strength = doc.get("strength")
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 <= strength <= 1:
        raise ApiError(400, "Malformed input request: #/strength: expected a number from 0 to 1.")
    return vary_image(image, f"{seed}{request.prompt}{strength}", 0, image.width, image.height)


def _stability_inpaint(request: StabilityRequest, seed: str) -> Image.Image:
    from PIL import Image as PILImage

    doc = request.doc
    image = _stability_image(doc.get("image"), "image")
    if "mask" in doc:
        stability_mask = _stability_image(doc["mask"], "mask")
        if stability_mask.size != image.size:
            raise ApiError(400, "The mask must have the same size as the image.")
        # Stability: white = inpaint here; as OpenAI's mask, white becomes alpha 0.
        mask = PILImage.new("RGBA", image.size, (0, 0, 0, 255))
        mask.putalpha(stability_mask.convert("L").point(lambda v: 0 if v >= 128 else 255))
    elif image.mode in ("RGBA", "LA"):
        mask = None  # the image's own transparency
    else:
        raise ApiError(400, "Malformed input request: a mask, or an image with alpha, is required.")
    grow = doc.get("grow_mask", 5)
    if isinstance(grow, bool) or not isinstance(grow, int) or not 0 <= grow <= 20:
        raise ApiError(400, "Malformed input request: #/grow_mask: expected an integer from 0 to 20.")
    return edit_image(request.prompt, seed, 0, image.width, image.height, [image.convert("RGB")], mask, False)


def stability_answer(model_id: str, request: StabilityRequest, fault: Fault | None) -> tuple[bytes, bool]:
    """(body, whether the fault spoiled it): one image, `{"seeds", "finish_reasons", "images"}`."""
    seed = f"{model_id}\x00{request.doc.get('seed', '')}"
    if request.kind == "inpaint":
        picture = _stability_inpaint(request, seed)
    else:
        picture = _stability_generation(request, seed)
    fmt = request.doc.get("output_format", "png")
    encoded = base64.b64encode(encode_image(picture, fmt, None)).decode("ascii")
    if fault is not None and fault.truncated_b64:
        encoded = truncate_b64(encoded)
    text = json.dumps({"seeds": [request.doc.get("seed", 0)], "finish_reasons": [None], "images": [encoded]})
    if fault is not None and fault.malformed_json:
        return text[: max(1, len(text) // 3)].encode("ascii"), True
    return text.encode("ascii"), False
