"""Validate a parsed request against the model catalog: one ImageRequest out, or an OpenAI-worded 4xx.

Every rule comes from the catalog entry (models.json); nothing here names a model. Order of checks:
model -> unknown parameters -> missing required -> each parameter's type and value -> combinations ->
input images, mask and markup.

Defaults (the OpenAI Images API reference's, made precise; all of them are catalog data):
- model: dall-e-2; gpt-image-1 when the request needs a GPT model: a parameter dall-e-2 does not take but
  gpt-image-1 does (background, output_format, stream, input_fidelity...), a JSON edit (JSON edits are for
  GPT models only), or more input images than dall-e-2 takes. `model: null` or "" means the default.
- n 1; size 1024x1024, except GPT edits: auto (the API reference: "auto (default)" for gpt-image-1 edits);
  quality standard for dall-e (both endpoints), auto for GPT models; style vivid (dall-e-3);
  response_format: the model's default_response_format (url for dall-e, b64_json for GPT); `url` is
  accepted for every model (the gateway stores the image and signs a 60-minute URL).
- Multipart scalars are text: integers and booleans (true/false/1/0) are converted; JSON values are strict
  (n must be a JSON integer; 2.0 is accepted, "2" is not). null means "not sent".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from imagegw.domain import ImageFile, ImageRequest, RawRequest
from imagegw.errors import ApiError, InvalidRequest, ModelNotFound, UnsupportedMediaType
from imagegw.images import MAX_PIXELS, ImageTooLarge, ImageUnreadable, mimetype_of, probe, sniff_format
from imagegw.request.catalog import Catalog, ImageLimits, Inputs, MaskLimits, ModelSpec, ParamSpec, SizeRule

# ASCII digits only: `int()` also reads other scripts' digits ("\u0663" is 3), which no upstream takes.
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,18}")
_SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}
_MAX_ECHO = 200  # a client's value is echoed in messages up to this many characters

# Wording for strings over max_length, per parameter (OpenAI's own for the prompt).
_TOO_LONG = {
    "prompt": (
        "Prompt must be length {max} or less. Your prompt length is {length}. "
        "Please reduce your prompt length.",
        None,
    ),
}
_TOO_LONG_DEFAULT = (
    "Invalid '{name}': string too long. Expected a string with maximum length {max}, "
    "but got a string with length {length} instead.",
    "string_above_max_length",
)


def validate(raw: RawRequest, catalog: Catalog, *, awaiting_fetch: bool = False) -> ImageRequest:
    """The request as the model takes it. `awaiting_fetch`: images still to be fetched (a JSON edit's
    URLs, a job's S3 inputs) are checked for everything but their bytes; the service validates again
    after fetching them, which happens only after admission."""
    op = raw.operation
    spec = choose_model(raw, catalog)
    if op == "edits" and not raw.multipart and not spec.json_edits:
        raise UnsupportedMediaType(
            f"The model '{spec.name}' takes edits as multipart/form-data only (image files in the 'image' "
            "field); JSON edits with image URLs are for the GPT image models.",
            param="model",
        )
    sent = {k: v for k, v in raw.fields.items() if k != "model" and v is not None}
    for name in sent:
        if not spec.takes(op, name):
            raise InvalidRequest(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    specs = spec.params.get(op, {})
    for pspec in specs.values():
        if pspec.required and pspec.name not in sent:
            raise missing(pspec.name)
    params: dict[str, Any] = {}
    for name, value in sent.items():
        params[name] = _check_param(specs[name], value, text=raw.multipart)
    _check_combinations(params, specs)
    for pspec in specs.values():
        if pspec.name not in params and pspec.default is not None:
            params[pspec.name] = pspec.default
    images, mask = _check_inputs(raw, spec, awaiting_fetch)
    return ImageRequest(
        operation=op, model=spec.name, params=params, images=images, mask=mask, markup=raw.markup
    )


# ---------------------------------------------------------------------------------------------- model


def choose_model(raw: RawRequest, catalog: Catalog) -> ModelSpec:
    """The client's model, or the default: dall-e-2, or gpt-image-1 when the request needs a GPT model.

    "Needs" (the API reference's rule, made precise): a parameter the default model does not take but the GPT
    default does, a JSON edit (GPT only), or more input images than the default model takes.
    """
    op = raw.operation
    model = raw.fields.get("model")
    if model is None:
        return _default_model(raw, catalog)
    if model == "":  # a name that is required once given: not a silent default
        raise InvalidRequest(
            "Invalid 'model': empty string. Expected a string with minimum length 1, but got an empty "
            "string instead.",
            param="model",
            code="empty_string",
        )
    if not isinstance(model, str):
        raise InvalidRequest(
            f"Invalid type for 'model': expected a string, but got {type_name(model)} instead.",
            param="model",
            code="invalid_type",
        )
    if len(model) > _MAX_ECHO:
        raise ModelNotFound(_echo(model))  # never echo megabytes back
    spec = catalog.get(model)
    if not spec.serves(op):
        raise InvalidRequest(
            f"Invalid value: '{_echo(model)}'. Supported values are: {oxford(catalog.serving(op))}.",
            param="model",
            code="invalid_value",
        )
    return spec


def _default_model(raw: RawRequest, catalog: Catalog) -> ModelSpec:
    op = raw.operation
    base = catalog.get(catalog.default_model)
    gpt = catalog.get(catalog.gpt_default_model)
    if not gpt.serves(op):
        return base
    if op == "edits" and not raw.multipart and not base.json_edits:
        return gpt
    base_params, gpt_params = base.params_for(op), gpt.params_for(op)
    for name, value in raw.fields.items():
        if value is not None and name != "model" and name not in base_params and name in gpt_params:
            return gpt
    base_inputs = base.inputs_for(op)
    if base_inputs is not None and len(raw.images) > base_inputs.image.max_count:
        return gpt
    return base


# ---------------------------------------------------------------------------------------------- params


def _check_param(spec: ParamSpec, value: Any, *, text: bool) -> Any:
    """The typed value (multipart text converted), or InvalidRequest."""
    name = spec.name
    if spec.type == "integer":
        number = _as_int(name, value, text)
        if spec.min is not None and number < spec.min:
            raise InvalidRequest(
                f"Invalid '{name}': integer below minimum value. Expected a value >= {spec.min}, "
                f"but got {number} instead.",
                param=name,
                code="integer_below_min_value",
            )
        if spec.max is not None and number > spec.max:
            message = spec.max_message or (
                f"Invalid '{name}': integer above maximum value. Expected a value <= {spec.max}, "
                f"but got {number} instead."
            )
            raise InvalidRequest(message, param=name, code=spec.max_code)
        return number
    if spec.type in ("number", "boolean", "object"):
        return _TYPE_CHECKS[spec.type](spec, value, text)
    if not isinstance(value, str):
        raise invalid_type(name, "a string", value)
    if spec.type == "string":
        if spec.required and value == "":
            raise InvalidRequest(
                f"Invalid '{name}': empty string. Expected a string with minimum length 1, "
                "but got an empty string instead.",
                param=name,
                code="empty_string",
            )
        if spec.max_length is not None and len(value) > spec.max_length:
            template, code = _TOO_LONG.get(name, _TOO_LONG_DEFAULT)
            raise InvalidRequest(
                template.format(name=name, max=spec.max_length, length=len(value)), param=name, code=code
            )
        if not _is_unicode(value):
            # JSON can carry an unpaired surrogate escape ("\ud800"): no upstream can take it (the request
            # would fail upstream, be retried and cool the route down for the client's own mistake).
            raise InvalidRequest(
                f"Invalid '{name}': the string is not valid Unicode (it contains an unpaired surrogate "
                "escape such as '\\ud800').",
                param=name,
                code="invalid_value",
            )
        return value
    if value in spec.values:
        return value
    if spec.type == "size" and spec.custom is not None:
        match = _SIZE.fullmatch(value)
        if match:
            _check_custom_size(value, int(match[1]), int(match[2]), spec.custom)
            return value
        raise invalid_value(
            name, value, spec.values, suffix=" Custom sizes are also accepted, as 'WIDTHxHEIGHT'."
        )
    raise invalid_value(name, value, spec.values)


def _check_number(spec: ParamSpec, value: Any, *, text: bool) -> float:
    """A JSON number (multipart: its text) within min..max."""
    name = spec.name
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif text and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise invalid_type(name, "a number", value)
    if spec.min is not None and number < spec.min:
        raise InvalidRequest(
            f"Invalid '{name}': number below minimum value. Expected a value >= {_num(spec.min)}, "
            f"but got {_num(number)} instead.",
            param=name,
            code="decimal_below_min_value",
        )
    if spec.max is not None and number > spec.max:
        raise InvalidRequest(
            f"Invalid '{name}': number above maximum value. Expected a value <= {_num(spec.max)}, "
            f"but got {_num(number)} instead.",
            param=name,
            code="decimal_above_max_value",
        )
    return number


def _check_object(spec: ParamSpec, value: Any, *, text: bool) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_type(spec.name, "an object", value)
    checked: dict[str, Any] = {}
    for key, member in value.items():
        sub = spec.properties.get(key)
        if sub is None:
            qualified = f"{spec.name}.{key}"
            raise InvalidRequest(
                f"Unknown parameter: '{qualified}'.", param=qualified, code="unknown_parameter"
            )
        if member is not None:
            checked[key] = _check_param(sub, member, text=text)
    for key, sub in spec.properties.items():
        if sub.required and key not in checked:
            raise missing(sub.name)
    return checked


_TYPE_CHECKS: dict[str, Callable[[ParamSpec, Any, bool], Any]] = {
    "number": lambda spec, value, text: _check_number(spec, value, text=text),
    "boolean": lambda spec, value, text: _as_bool(spec.name, value, text),
    "object": lambda spec, value, text: _check_object(spec, value, text=text),
}


def _check_custom_size(size: str, width: int, height: int, rule: SizeRule) -> None:
    problem = None
    if width % rule.multiple_of or height % rule.multiple_of:
        problem = f"Width and height must both be divisible by {rule.multiple_of}."
    elif max(width, height) > rule.max_aspect_ratio * min(width, height):
        ratio = _num(rule.max_aspect_ratio)
        problem = f"The aspect ratio must be between 1:{ratio} and {ratio}:1."
    elif max(width, height) > rule.max_edge:
        problem = f"The longest edge must be at most {rule.max_edge} pixels."
    elif width * height > rule.max_pixels:
        problem = f"The image must have at most {rule.max_pixels} pixels (e.g. 3840x2160)."
    elif width * height < rule.min_pixels:
        problem = f"The image must have at least {rule.min_pixels} pixels (e.g. 1024x640)."
    if problem:
        raise InvalidRequest(f"Invalid size '{size}'. {problem}", param="size", code="invalid_value")


def _check_combinations(params: Mapping[str, Any], specs: Mapping[str, ParamSpec]) -> None:
    """`requires` / `value_requires`: e.g. output_compression needs jpeg/webp, partial_images needs stream."""
    for name, value in params.items():
        spec = specs[name]
        needs = [(other, allowed, "it") for other, allowed in spec.requires.items()]
        if isinstance(value, str) and value in spec.value_requires:
            needs.extend(
                (other, allowed, f"'{value}'") for other, allowed in spec.value_requires[value].items()
            )
        for other, allowed, subject in needs:
            other_spec = specs.get(other)
            actual = params.get(other, other_spec.upstream_default if other_spec else None)
            if actual not in allowed:
                raise InvalidRequest(
                    f"Invalid value for '{name}': {subject} is only supported when '{other}' is "
                    f"{oxford(allowed, conj='or')}, not {_literal(actual)}.",
                    param=name,
                    code="invalid_value",
                )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_int(name: str, value: Any, text: bool) -> int:
    if isinstance(value, bool):
        raise invalid_type(name, "an integer", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if text and isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value)
    raise invalid_type(name, "an integer", value)


def _as_bool(name: str, value: Any, text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[value.strip().lower()]
    raise invalid_type(name, "a boolean", value)


# ---------------------------------------------------------------------------------------------- images


def awaits_fetch(raw: RawRequest) -> bool:
    """Some input image is known by its URL only (its bytes are fetched after admission)."""
    return any(img.source_url and not img.data for img in [*raw.images, raw.mask, raw.markup] if img)


def _check_inputs(
    raw: RawRequest, spec: ModelSpec, awaiting_fetch: bool = False
) -> tuple[list[ImageFile], ImageFile | None]:
    inputs = spec.inputs_for(raw.operation)
    field = "image" if raw.multipart else "images"
    if inputs is None:
        if raw.images:
            raise InvalidRequest(f"Unknown parameter: '{field}'.", param=field, code="unknown_parameter")
        for name, overlay in (("mask", raw.mask), ("markup", raw.markup)):
            if overlay is not None:
                raise InvalidRequest(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
        return [], None
    if not raw.images:
        raise missing(field)
    check_image_count(len(raw.images), inputs, field)
    for name, overlay, limits in (("mask", raw.mask, inputs.mask), ("markup", raw.markup, inputs.markup)):
        if overlay is None:
            continue
        if limits is None:
            raise InvalidRequest(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
        if limits.excludes_mask and raw.mask is not None:
            raise InvalidRequest(
                f"Invalid '{name}': it cannot be combined with 'mask'; send one or the other.",
                param=name,
                code="invalid_value",
            )
    if awaiting_fetch and awaits_fetch(raw):
        return raw.images, raw.mask  # the byte checks follow the fetch
    for image in raw.images:
        check_file(image, inputs.image.formats, inputs.image.max_bytes)
        _check_image(image, inputs.image)
    for name, overlay, limits in (("mask", raw.mask, inputs.mask), ("markup", raw.markup, inputs.markup)):
        if overlay is None or limits is None:
            continue
        check_file(overlay, limits.formats, limits.max_bytes)
        _check_overlay(name, overlay, raw.images[0], limits)
    if raw.mask is None and inputs.image.modes_without_mask:
        first = raw.images[0]
        if first.mode not in inputs.image.modes_without_mask:
            allowed = list(inputs.image.modes_without_mask)
            raise InvalidRequest(
                f"Invalid input image - format must be in {allowed}, got {first.mode}.",
                param=first.field_name,
            )
    return raw.images, raw.mask


def check_image_count(count: int, inputs: Inputs, field: str) -> None:
    if count > inputs.image.max_count:
        raise InvalidRequest(
            f"Invalid '{field}': array too long. Expected an array with maximum length "
            f"{inputs.image.max_count}, but got an array with length {count} instead.",
            param=field,
            code="array_above_max_length",
        )


def check_file(image: ImageFile, formats: Iterable[str], max_bytes: int) -> None:
    """Bytes limit, magic-number format, and the header read by Pillow; fills format/size/mode."""
    name = image.field_name
    if image.source_url is not None and not image.data:
        # A wiring fault, not the client's: the service must call image_urls.resolve_image_urls first.
        raise ApiError("Image URLs were not fetched before validation.")
    if len(image.data) >= max_bytes:
        raise InvalidRequest(
            f"Invalid file '{name}': files must be smaller than {_mb(max_bytes)}, but this one is "
            f"{len(image.data) / (1024 * 1024):.1f} MB.",
            param=name,
            code="image_too_large",
        )
    fmt = sniff_format(image.data)
    if fmt is None or fmt not in formats:
        supported = oxford(sorted(mimetype_of(f) for f in formats))
        found = mimetype_of(fmt) if fmt else (image.declared_type or "application/octet-stream")
        raise InvalidRequest(
            f"Invalid file '{name}': unsupported mimetype ('{found}'). "
            f"Supported file formats are {supported}.",
            param=name,
            code="unsupported_file_mimetype",
        )
    try:
        info = probe(image.data)
    except ImageTooLarge:
        raise InvalidRequest(
            f"Invalid file '{name}': the image is too large; images of at most {MAX_PIXELS:,} pixels "
            "are accepted.",
            param=name,
            code="image_too_large",
        ) from None
    except ImageUnreadable:
        raise InvalidRequest(
            f"Invalid file '{name}': the {fmt.upper()} image could not be read; it may be corrupt or "
            "truncated.",
            param=name,
            code="invalid_image",
        ) from None
    image.format, image.width, image.height = info.format, info.width, info.height
    image.mode, image.has_alpha = info.mode, info.has_alpha


def _check_image(image: ImageFile, limits: ImageLimits) -> None:
    if limits.square and image.width != image.height:
        raise InvalidRequest(
            f"Invalid file '{image.field_name}': the image must be square, but it is "
            f"{image.width}x{image.height}.",
            param=image.field_name,
            code="invalid_image",
        )


def _check_overlay(name: str, overlay: ImageFile, first: ImageFile, limits: MaskLimits) -> None:
    """A mask or markup: the first image's dimensions, and an alpha channel (transparency carries meaning)."""
    if limits.same_size_as_image and (overlay.width, overlay.height) != (first.width, first.height):
        raise InvalidRequest(
            f"Invalid file '{name}': the {name} must have the same dimensions as the first image "
            f"({first.width}x{first.height}), but it is {overlay.width}x{overlay.height}.",
            param=overlay.field_name,
            code="invalid_image",
        )
    if limits.alpha_required and not overlay.has_alpha:
        raise InvalidRequest(
            f"Invalid file '{name}': the {name} must have an alpha channel (its transparent pixels carry "
            f"the meaning), but its mode is {overlay.mode}.",
            param=overlay.field_name,
            code="invalid_image",
        )


# ---------------------------------------------------------------------------------------------- wording


def missing(name: str) -> InvalidRequest:
    return InvalidRequest(
        f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
    )


def invalid_value(name: str, value: str, supported: Iterable[Any], suffix: str = "") -> InvalidRequest:
    return InvalidRequest(
        f"Invalid value: '{_echo(value)}'. Supported values are: {oxford(supported)}.{suffix}",
        param=name,
        code="invalid_value",
    )


def invalid_type(name: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{name}': expected {expected}, but got {type_name(value)} instead.",
        param=name,
        code="invalid_type",
    )


def type_name(value: Any) -> str:
    """JSON wording for a value's type, as OpenAI's messages use it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, ImageFile):
        return "a file"
    return "an unsupported value"


def oxford(items: Iterable[Any], conj: str = "and") -> str:
    """'a'; 'a' and 'b'; 'a', 'b', and 'c' (values quoted, booleans as JSON)."""
    quoted = [_literal(item) for item in items]
    if len(quoted) <= 1:
        return "".join(quoted)
    if len(quoted) == 2:
        return f"{quoted[0]} {conj} {quoted[1]}"
    return f"{', '.join(quoted[:-1])}, {conj} {quoted[-1]}"


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    return f"'{value}'"


def _echo(value: str) -> str:
    return value if len(value) <= _MAX_ECHO else value[:_MAX_ECHO] + "..."


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size % (1024 * 1024) else f"{size // (1024 * 1024)} MB"
