"""The request and result objects that flow through the pipeline: parse -> validate -> route -> store."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

Operation = Literal["generations", "edits", "variations"]
OPERATIONS: tuple[Operation, ...] = ("generations", "edits", "variations")


@dataclass
class HttpRequest:
    """What a handler needs from an API Gateway REST (v1) proxy event, body already decoded to bytes."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    request_id: str
    path_params: dict[str, str] = field(default_factory=dict)
    # Scheme, host and stage prefix the client used (https://ID.execute-api.../api); "" when unknown.
    base_url: str = ""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def respond_async(self) -> bool:
        """RFC 7240: `Prefer: respond-async` (among other comma-separated preferences, any case)."""
        for preference in self.headers.get("prefer", "").split(","):
            if preference.split(";")[0].split("=")[0].strip().lower() == "respond-async":
                return True
        return False


@dataclass
class ApiResponse:
    """What a handler answers: rendered once, by imagegw.api, as the API Gateway proxy response."""

    status: int
    body: str
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageFile:
    """An input image, identified by its bytes (never by the part's declared Content-Type)."""

    field_name: str  # as the error `param` names it: image, image[0], mask
    data: bytes
    filename: str = "image"
    declared_type: str = "application/octet-stream"
    format: str | None = None  # png, jpeg, webp, gif (sniffed); None when not an image
    width: int = 0
    height: int = 0
    mode: str = ""  # Pillow mode: RGBA, RGB, LA, L, P...
    has_alpha: bool = False  # an alpha channel or a transparency entry (filled by validation)
    # JSON edits: the https URL the bytes come from; `data` stays empty until image_urls.resolve_image_urls.
    source_url: str | None = None

    @property
    def mimetype(self) -> str:
        return {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}.get(
            self.format or "", self.declared_type
        )


@dataclass
class RawRequest:
    """A parsed body before validation: scalars as the client sent them (multipart gives strings)."""

    operation: Operation
    fields: dict[str, Any]
    images: list[ImageFile] = field(default_factory=list)
    mask: ImageFile | None = None
    image_urls: list[str] = field(default_factory=list)  # JSON edits: https or data URLs, fetched later
    mask_url: str | None = None
    multipart: bool = False
    markup: ImageFile | None = None  # edits (gpt-image-2.5+): a transparent PNG guiding the edit


@dataclass
class ImageRequest:
    """A validated request: `params` holds exactly what the client-facing model takes, defaults applied."""

    operation: Operation
    model: str
    params: dict[str, Any]
    images: list[ImageFile] = field(default_factory=list)
    mask: ImageFile | None = None
    markup: ImageFile | None = None  # edits (gpt-image-2.5+): forwarded as the multipart `markup` file

    @property
    def n(self) -> int:
        return int(self.params.get("n", 1))

    @property
    def stream(self) -> bool:
        return bool(self.params.get("stream", False))


@dataclass
class GeneratedImage:
    data: bytes
    revised_prompt: str | None = None
    usage: dict[str, Any] | None = None  # this image's own usage, when a stream reported it per image
    partials: list[bytes] = field(default_factory=list)  # its partial images, when streamed before it


@dataclass
class UpstreamResult:
    images: list[GeneratedImage]
    usage: dict[str, Any] | None = None
    partial_images: list[bytes] = field(default_factory=list)
    # Top-level facts the upstream reported (background, output_format, quality, size).
    meta: dict[str, Any] = field(default_factory=dict)
    route: str = ""  # which route served it, for logs and the usage log
    model: str = ""  # the model that route called (the usage log prices its usage at this model's rates)


@dataclass
class Caller:
    """The authenticated API key, as the rest of the pipeline sees it (never the raw key)."""

    key_hash: str
    key_id: str
    display: str  # e.g. "sk-ab...yz"
    name: str = ""
    allowed_models: list[str] | None = None
    quota_images: int | None = None
    rate_limit_per_minute: int | None = None
    quota_credits: Decimal | None = None  # USD cents, estimated from the price table
    owner: str = ""
    expires: int | None = None  # epoch seconds
