"""Identify images by their bytes (magic numbers); Pillow loads only where pixels are needed."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any


def sniff_format(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def sniff_output_format(data: bytes) -> str | None:
    """The format of an image an upstream generated: the raster formats, or `svg` for an SVG document.

    Only for outputs (gpt-image-2.5+ `output_format: svg`): inputs are raster images, and a text part
    that happens to start with `<svg` must stay text (see `parsing`).
    """
    fmt = sniff_format(data)
    if fmt is not None:
        return fmt
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<svg") or (head.startswith((b"<?xml", b"<!DOCTYPE", b"<!--")) and b"<svg" in head):
        return "svg"
    return None


MIMETYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "svg": "image/svg+xml",
}
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class ImageUnreadable(ValueError):
    """The bytes carry an image signature, but Pillow cannot read the image's header."""


class ImageTooLarge(ImageUnreadable):
    """The header declares more pixels than MAX_PIXELS: a decompression bomb for whatever decodes it."""


# Pillow's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS, about 89.5 million pixels; Pillow only
# warns between it and twice it). An input over it is refused, so no such image is ever sent upstream.
MAX_PIXELS = 89_478_485


# Pixels an image may have where the gateway decodes it (the Bedrock request builder, resizing, format
# conversion): 4 bytes per RGBA pixel and up to three working copies (convert, paste, resize) make about
# 300 MB at 25 million pixels, which fits the API function's 1024 MB next to the request's input budget
# (tests/unit/test_template.py keeps the template's memory and these budgets in step). Checked from the
# header, before any pixel is decoded. Inputs the gateway only passes on are held to MAX_PIXELS alone.
DECODE_PIXEL_BUDGET = 25_000_000


def open_within_budget(data: bytes, budget: int = DECODE_PIXEL_BUDGET) -> Any:
    """A lazily opened Pillow image whose header declares at most `budget` pixels; ImageTooLarge over it,
    ImageUnreadable when the header cannot be read. Nothing is decoded until the caller asks."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except Exception as exc:  # Pillow raises many types for bad headers
        raise ImageUnreadable(str(exc)) from exc
    width, height = img.size
    if width * height > budget:
        img.close()
        raise ImageTooLarge(f"{width}x{height} pixels is over the {budget:,}-pixel budget")
    return img


@dataclass(frozen=True)
class ImageInfo:
    format: str  # png, jpeg, webp, gif (from the magic number)
    width: int
    height: int
    mode: str  # Pillow mode: RGBA, RGB, LA, L, P...
    has_alpha: bool  # an alpha channel, or a transparency entry (palette / tRNS)


def probe(data: bytes) -> ImageInfo:
    """Format, dimensions and mode from the image header: `Image.open` is lazy and decodes no pixels.

    A PNG's chunk structure and checksums are verified too (`verify` reads the chunks to IEND without
    decompressing them), so a truncated or corrupted PNG is refused here rather than by the upstream.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageUnreadable("not an image")
    from PIL import Image  # heavy: loaded on the first image, not at cold start

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            mode = img.mode
            transparency = "transparency" in img.info
            if fmt == "png" and width * height <= MAX_PIXELS:
                img.verify()
    except Image.DecompressionBombError as exc:  # over twice MAX_PIXELS (below that Pillow only warns)
        raise ImageTooLarge(str(exc)) from exc
    except Exception as exc:  # Pillow raises many types for bad headers and truncated data
        raise ImageUnreadable(str(exc)) from exc
    if width <= 0 or height <= 0:
        raise ImageUnreadable("empty image")
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(f"{width}x{height} pixels")
    return ImageInfo(fmt, width, height, mode, mode in ALPHA_MODES or transparency)


def mimetype_of(fmt: str) -> str:
    return MIMETYPES.get(fmt, f"image/{fmt}")
