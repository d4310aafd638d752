"""Request bodies byte for byte as curl builds them, for replaying the seed's curl examples over HTTP.

`-F name=value` is a text part (no Content-Type); `-F name=@path` a file part with the file's base name
as `filename` and a Content-Type guessed from the extension (curl's table: png, jpg/jpeg, webp, gif, else
application/octet-stream); the boundary is curl's (24 dashes and 22 alphanumerics). `-d TEXT` sends
the text as-is, newlines included (only `-d @file` strips them). curl adds `Expect: 100-continue` to
bodies over 1 MiB; the seed's fixture files are far below that, so it is not modelled.
"""

from __future__ import annotations

import secrets
import string
from pathlib import Path

CURL_HEADERS = {"User-Agent": "curl/8.5.0", "Accept": "*/*"}

_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}
_ALPHABET = string.ascii_letters + string.digits


def form(*options: str, cwd: Path) -> tuple[bytes, str]:
    """The body and Content-Type of `curl -F OPTION ...`; `@path` is read relative to `cwd`."""
    boundary = "-" * 24 + "".join(secrets.choice(_ALPHABET) for _ in range(22))
    chunks: list[bytes] = []
    for option in options:
        name, sep, value = option.partition("=")
        if not sep:
            raise ValueError(f"not a -F option: {option!r}")
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        if value.startswith("@"):
            path = cwd / value[1:]
            content_type = _TYPES.get(path.suffix.lower(), "application/octet-stream")
            head += f'; filename="{path.name}"\r\nContent-Type: {content_type}'
            data = path.read_bytes()
        else:
            data = value.encode("utf-8")
        chunks.append(head.encode("utf-8") + b"\r\n\r\n" + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"
