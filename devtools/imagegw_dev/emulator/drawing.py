"""Deterministic placeholder pictures drawn with Pillow: same inputs, same bytes.

Pillow is imported lazily so importing the emulator stays cheap.
"""

from __future__ import annotations

import hashlib
import io
import random
from typing import TYPE_CHECKING

from imagegw_dev.emulator.errors import ApiError

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_FRAME_COUNT = 4
DEFAULT_FRAME_DURATION_MS = 250


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


def blocky(img: Image.Image, step: int, of: int) -> Image.Image:
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


def sniff_image(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def open_image(param: str, content_type: str | None, data: bytes) -> Image.Image:
    from PIL import Image

    if sniff_image(data) is None:
        raise ApiError(
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
        raise ApiError(
            400, f"Invalid file '{param}': the image could not be decoded.", param=param, code="invalid_image"
        ) from None
    return img
