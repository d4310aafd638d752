"""Parse an HTTP request body into a RawRequest: JSON or multipart/form-data, as clients really send them.

Every malformed body becomes a 4xx with an OpenAI-format error; nothing here can raise a 5xx for client
input. JSON edits reference images by URL: data URLs are decoded here; https URLs are fetched later, after
admission, by `imagegw.request.image_urls.resolve_image_urls`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from imagegw.domain import HttpRequest, ImageFile, Operation, RawRequest
from imagegw.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType
from imagegw.request.image_urls import FetchError, check_https_url

# The body as the handler receives it (already base64-decoded). A guard: AWS Lambda refuses events over
# 6 MB, so behind API Gateway a body this large never arrives (API Gateway answers 413: docs/deploy.md).
MAX_BODY_BYTES = 6 * 1024 * 1024

JSON = "application/json"
MULTIPART = "multipart/form-data"
# Which body types each endpoint takes (JSON edits are further limited to models with json_edits).
ACCEPTS: dict[str, tuple[str, ...]] = {
    "generations": (JSON,),
    "edits": (MULTIPART, JSON),
    "variations": (MULTIPART,),
}

# `image[N]`; `images[N]` too: the JSON edit's names, as a queued job re-sends its inputs.
_IMAGE_INDEXED = re.compile(r"images?\[([0-9]{1,4})\]")
_IMAGE_LIST = ("image", "image[]", "images[]")
_NESTED_FIELD = re.compile(r"([A-Za-z_]\w*)((?:\[[^\[\]]+\])+)")  # svg[reasoning][effort]
_NESTED_KEY = re.compile(r"\[([^\[\]]+)\]")
OVERLAYS = ("mask", "markup")  # single-file edit inputs besides the images
_DISPOSITION_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')
_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE)

_INVALID_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)


_NOT_UTF8 = (
    "We could not parse the JSON body of your request: it is not valid UTF-8 (it arrived with U+FFFD "
    "replacement characters). Encode the body as UTF-8; to send U+FFFD itself, escape it as \\ufffd."
)


def parse_request(operation: Operation, http: HttpRequest) -> RawRequest:
    body = http.body or b""
    if len(body) > MAX_BODY_BYTES:
        raise RequestTooLarge(
            f"The request body is {len(body) / (1024 * 1024):.1f} MB, over this gateway's limit of "
            f"{MAX_BODY_BYTES // (1024 * 1024)} MB. Send large input images by URL instead: a JSON "
            'request to /v1/images/edits with "images": [{"image_url": "https://..."}] (or a smaller image).'
        )
    media_type = http.content_type.split(";", 1)[0].strip().lower()
    accepted = ACCEPTS[operation]
    if media_type == "" and JSON in accepted:
        media_type = JSON  # curl without -H, or a client that forgot the header: try JSON
    if media_type not in accepted:
        shown = media_type or "none"
        raise UnsupportedMediaType(
            f"Unsupported Content-Type '{shown}' for /v1/images/{operation}. Send {' or '.join(accepted)}."
        )
    if media_type == JSON:
        return _parse_json(operation, body)
    return _parse_multipart(operation, body, http.content_type)


# ---------------------------------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def _parse_json(operation: Operation, body: bytes) -> RawRequest:
    if not body.strip():
        return RawRequest(operation=operation, fields={})
    try:
        text = body.decode("utf-8-sig")
        data = json.loads(text, parse_float=_parse_float, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidRequest(_INVALID_JSON, code="invalid_json") from None
    if "\ufffd" in text:
        # API Gateway hands a text body to Lambda as a string, replacing bytes that are not UTF-8 with
        # U+FFFD: a raw replacement character is the mark of a body that was not valid UTF-8 when sent.
        raise InvalidRequest(_NOT_UTF8, code="invalid_json")
    if not isinstance(data, dict):
        from imagegw.request.validation import type_name

        raise InvalidRequest(
            f"Invalid type for request body: expected an object, but got {type_name(data)} instead.",
            code="invalid_type",
        )
    raw = RawRequest(operation=operation, fields=data)
    if operation == "edits":
        _split_image_refs(raw)
    return raw


def _split_image_refs(raw: RawRequest) -> None:
    """JSON edits: `images: [{"image_url": ...}]` and `mask: {...}` become ImageFiles (https: unfetched)."""
    fields = raw.fields
    refs = fields.pop("images", None)
    mask = fields.pop("mask", None)
    markup = fields.pop("markup", None)
    if refs is not None:
        if not isinstance(refs, list):
            raise _ref_type("images", "an array of objects", refs)
        if not refs:
            raise InvalidRequest(
                "Invalid 'images': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="images",
                code="empty_array",
            )
        raw.images = [_image_ref(f"images[{index}]", ref) for index, ref in enumerate(refs)]
    if mask is not None:
        raw.mask = _image_ref("mask", mask)
    if markup is not None:
        raw.markup = _image_ref("markup", markup)
    raw.image_urls = [img.source_url for img in raw.images if img.source_url]
    raw.mask_url = raw.mask.source_url if raw.mask is not None else None


def _image_ref(name: str, ref: Any) -> ImageFile:
    if not isinstance(ref, dict):
        raise _ref_type(name, "an object", ref)
    for key in ref:
        if key not in ("image_url", "file_id"):
            raise InvalidRequest(
                f"Unknown parameter: '{name}.{key}'.", param=f"{name}.{key}", code="unknown_parameter"
            )
    if ref.get("file_id") is not None:
        raise InvalidRequest(
            "`file_id` references are not supported by this gateway; use image_url.",
            param=name,
            code="unsupported_parameter",
        )
    url = ref.get("image_url")
    if url is None:
        raise InvalidRequest(
            f"Missing required parameter: '{name}.image_url'.", param=name, code="missing_required_parameter"
        )
    if not isinstance(url, str):
        raise _ref_type(f"{name}.image_url", "a string", url)
    if url[:5].lower() == "data:":
        return _data_url_image(name, url)
    if url[:8].lower() == "https://":
        try:
            parts = check_https_url(url)
        except FetchError as exc:
            raise InvalidRequest(
                f"Invalid '{name}.image_url': {exc}", param=name, code="invalid_image_url"
            ) from None
        return ImageFile(field_name=name, data=b"", filename=_url_filename(parts.path), source_url=url)
    raise InvalidRequest(
        f"Invalid '{name}.image_url': expected an https URL or a base64 data URL.",
        param=name,
        code="invalid_image_url",
    )


def _data_url_image(name: str, url: str) -> ImageFile:
    match = _DATA_URL.match(url)
    if match is None:
        raise _bad_data_url(name)
    payload = url[match.end() :]
    try:
        if ";base64" in match[2].lower():
            compact = re.sub(r"\s+", "", payload)
            data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        else:
            data = urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise _bad_data_url(name) from None
    declared = match[1].strip().lower() or "application/octet-stream"
    return ImageFile(field_name=name, data=data, filename=name, declared_type=declared)


def _bad_data_url(name: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid '{name}.image_url': the data URL could not be decoded (expected "
        "'data:image/png;base64,...').",
        param=name,
        code="invalid_image_url",
    )


def _ref_type(name: str, expected: str, value: Any) -> InvalidRequest:
    from imagegw.request.validation import invalid_type  # validation imports this module: imported on use

    return invalid_type(name, expected, value)


def _url_filename(path: str) -> str:
    return path.rsplit("/", 1)[-1][:100] or "image"


# ---------------------------------------------------------------------------------------------- multipart


def _parse_multipart(operation: Operation, body: bytes, content_type: str) -> RawRequest:
    form = _Form()
    for part in _multipart_parts(body, content_type):
        form.add(part)
    return form.request(operation)


def _multipart_parts(body: bytes, content_type: str) -> list[Any]:
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    boundary = _boundary(content_type)
    if not boundary:
        raise _bad_multipart("the Content-Type header has no boundary")
    delimiter = b"--" + boundary.encode("latin-1", "replace")
    if body.strip() in (b"", delimiter + b"--"):
        return []  # a form without fields
    if delimiter not in body:
        raise _bad_multipart("the body does not contain the boundary given in the Content-Type header")
    try:
        return list(MultipartDecoder(body, content_type).parts)
    except Exception:  # the decoder raises its own types, UnicodeDecodeError, AttributeError...
        raise _bad_multipart("the body could not be split into parts") from None


@dataclass
class _Form:
    """The parts of a multipart body, sorted into fields, images, mask and markup as they arrive."""

    fields: dict[str, Any] = field(default_factory=dict)
    plain: list[tuple[str, ImageFile]] = field(default_factory=list)  # `image` and `image[]`, in order
    indexed: list[tuple[int, ImageFile]] = field(default_factory=list)  # `image[N]`
    overlays: dict[str, ImageFile] = field(default_factory=dict)

    def add(self, part: Any) -> None:
        name, filename = _disposition(part.headers.get(b"content-disposition", b""))
        if not name:
            raise _bad_multipart("a part has no Content-Disposition name")
        declared = part.headers.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()
        is_file = filename is not None or _looks_like_file(declared, part.content)
        index_match = _IMAGE_INDEXED.fullmatch(name)
        if name in _IMAGE_LIST or index_match:
            if not is_file:
                raise InvalidRequest(
                    "Invalid type for 'image': expected one of an array of files or file, "
                    "but got a string instead.",
                    param="image",
                    code="invalid_type",
                )
            image = _file(name, filename, declared, part.content)
            if index_match:
                self.indexed.append((int(index_match[1]), image))
            else:
                self.plain.append((name, image))
        elif name in OVERLAYS:
            if not is_file or name in self.overlays:
                got = "an array of files" if is_file else "a string"
                raise InvalidRequest(
                    f"Invalid type for '{name}': expected a file, but got {got} instead.",
                    param=name,
                    code="invalid_type",
                )
            self.overlays[name] = _file(name, filename, declared, part.content)
        elif is_file:
            self.fields[name] = _file(name, filename, declared, part.content)  # validation answers for it
        else:
            _set_field(self.fields, name, _utf8_text(name, part.content))

    def request(self, operation: Operation) -> RawRequest:
        images = [image for _, image in self.plain]
        for position, image in enumerate(images):
            # One bare `image` keeps its name (as errors call it); lists are named by position.
            if not (len(self.plain) == 1 and self.plain[0][0] == "image" and not self.indexed):
                image.field_name = f"image[{position}]"
        images.extend(image for _, image in sorted(self.indexed, key=lambda pair: pair[0]))
        return RawRequest(
            operation=operation,
            fields=self.fields,
            images=images,
            mask=self.overlays.get("mask"),
            markup=self.overlays.get("markup"),
            multipart=True,
        )


def _utf8_text(name: str, content: bytes) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"Invalid value for '{name}': the text is not valid UTF-8.", param=name, code="invalid_value"
        ) from None


def _set_field(fields: dict[str, Any], name: str, text: str) -> None:
    """A text part: `n` -> fields["n"]; `svg[reasoning][effort]` -> fields["svg"]["reasoning"]["effort"]."""
    match = _NESTED_FIELD.fullmatch(name)
    path = [match[1], *_NESTED_KEY.findall(match[2])] if match else [name]
    node = fields
    for depth, key in enumerate(path[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            shown = "".join([path[0], *(f"[{k}]" for k in path[1 : depth + 1])])
            raise InvalidRequest(
                f"Invalid type for '{shown}': expected an object, but got a string instead.",
                param=shown,
                code="invalid_type",
            )
        node = child
    if isinstance(node.get(path[-1]), dict):
        raise InvalidRequest(
            f"Invalid type for '{name}': expected an object, but got a string instead.",
            param=name,
            code="invalid_type",
        )
    node[path[-1]] = text


def _boundary(content_type: str) -> str:
    for _, key, quoted, bare in _params(content_type):
        if key.lower() == "boundary":
            return quoted if quoted is not None else bare
    return ""


def _params(header: str) -> list[tuple[str, str, str | None, str]]:
    params = []
    for match in _DISPOSITION_PARAM.finditer(header):
        quoted = match[2].replace('\\"', '"') if match[2] is not None else None
        params.append((match[0], match[1], quoted, match[3] or ""))
    return params


def _disposition(raw: bytes) -> tuple[str, str | None]:
    """(name, filename) from a Content-Disposition header; filename None when the part is a text field."""
    header = raw.decode("utf-8", "replace")
    name, filename = "", None
    for _, key, quoted, bare in _params(header):
        value = quoted if quoted is not None else bare
        key = key.lower()
        if key == "name":
            name = value
        elif key == "filename":
            filename = value
        elif key == "filename*" and "''" in value:
            filename = urllib.parse.unquote(value.split("''", 1)[1])
    return name, filename


def _looks_like_file(declared: str, content: bytes) -> bool:
    """A part without a filename is still a file if its type says so or its bytes are an image."""
    from imagegw.images import sniff_format

    if declared and not declared.startswith("text/"):
        return True
    return sniff_format(content) is not None


def _file(name: str, filename: str | None, declared: str, content: bytes) -> ImageFile:
    return ImageFile(
        field_name=name,
        data=content,
        filename=filename or "image",
        declared_type=declared or "application/octet-stream",
    )


def _bad_multipart(reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"Could not parse the multipart/form-data body: {reason}.", code="invalid_multipart_body"
    )
