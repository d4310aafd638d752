"""Real image bytes made with Pillow, small and fast: the validation reads headers, never pixels."""

from __future__ import annotations

import functools
import io
import os
import struct
import zlib

from PIL import Image

from imagegw.domain import ImageFile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def image_bytes(
    fmt: str = "png", width: int = 64, height: int = 64, mode: str = "RGBA", **save: object
) -> bytes:
    img = Image.new(mode, (width, height))
    out = io.BytesIO()
    img.save(out, format=fmt.upper(), **save)
    return out.getvalue()


def png(width: int = 64, height: int = 64, mode: str = "RGBA") -> bytes:
    return image_bytes("png", width, height, mode)


def jpeg(width: int = 64, height: int = 64) -> bytes:
    return image_bytes("jpeg", width, height, "RGB")


def webp(width: int = 64, height: int = 64) -> bytes:
    return image_bytes("webp", width, height, "RGBA")


def gif(width: int = 64, height: int = 64) -> bytes:
    return image_bytes("gif", width, height, "P")


def palette_png_with_transparency(width: int = 64, height: int = 64) -> bytes:
    img = Image.new("P", (width, height))
    out = io.BytesIO()
    img.save(out, format="PNG", transparency=0)
    return out.getvalue()


def corrupt_png() -> bytes:
    """The PNG signature, then bytes that are not a PNG header: right magic, unreadable image."""
    return PNG_MAGIC + b"\x00\x00\x00\x0dNOPE" + b"\x00" * 40


def padded(data: bytes, size: int) -> bytes:
    """The same image grown to `size` bytes (trailing bytes after IEND: still opens, only bigger)."""
    return data + b"\x00" * max(0, size - len(data))


def noise_png(width: int = 128, height: int = 128, mode: str = "RGB") -> bytes:
    """Random pixels: a PNG that hardly compresses."""
    out = io.BytesIO()
    Image.frombytes(mode, (width, height), os.urandom(width * height * len(mode))).save(out, format="PNG")
    return out.getvalue()


def truncated_png() -> bytes:
    """A real PNG cut off in its pixel data: the header still opens, the image does not decode."""
    return noise_png(128, 128)[:2000]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG whose header claims width x height RGBA with a few bytes of pixel data: a
    decompression bomb for whatever decodes it (20000x20000 RGBA is 1.6 GB of pixels)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@functools.cache
def zero_png(width: int, height: int) -> bytes:
    """A complete, valid RGBA PNG of width x height transparent-black pixels: all zeros compress ~1000:1,
    so 9459x9459 (358 MB once decoded) is a file of about 350 KB. Cached: made once per session."""
    row = b"\0" * (1 + 4 * width)  # filter byte + pixels
    deflate = zlib.compressobj(9)
    parts = [deflate.compress(row) for _ in range(height)]
    parts.append(deflate.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def png_file(
    size: tuple[int, int] = (512, 512),
    colour: tuple[int, int, int, int] = (20, 120, 220, 255),
    hole: tuple[int, int, int, int] | None = None,
    name: str = "image",
    mode: str = "RGBA",
) -> ImageFile:
    """A validated PNG input as providers receive it: one colour, with a fully transparent `hole` (the
    area an OpenAI mask, or the image's own transparency, marks for editing)."""
    img = Image.new("RGBA", size, colour)
    if hole is not None:
        img.paste((0, 0, 0, 0), hole)
    out = io.BytesIO()
    img.convert(mode).save(out, format="PNG")
    return ImageFile(name, out.getvalue(), f"{name}.png", "image/png", "png", size[0], size[1], mode)
