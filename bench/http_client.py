"""A minimal HTTP client for the benchmarks, plus the request bodies they send.

The client is `http.client` on purpose: it adds the least client-side work (the same for both paths being
compared), and it lets us choose the connection behaviour explicitly:

- `fresh` (default): one TCP connection per request, `Connection: close`. This is what the headline figures
  use. Both local servers (the emulator and the local API) are `http.server` handlers that write the
  response headers and the body in two `send` calls on a socket without TCP_NODELAY; on a kept-alive
  connection Linux's delayed ACK can then hold the body back ~40 ms (Nagle), depending on timing. A new
  connection starts in quick-ACK mode, so neither path pays that local-only stall.
- `KeepAlive`: one persistent connection, as the OpenAI SDK uses; used to show that stall.
"""

from __future__ import annotations

import http.client
import io
import json
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

TIMEOUT_S = 60.0


@dataclass
class Target:
    """Where one request goes and with which key."""

    url: str  # full URL, e.g. http://127.0.0.1:1234/v1/images/generations
    api_key: str

    @property
    def host_port_path(self) -> tuple[str, int, str]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80, parts.path


@dataclass
class Body:
    data: bytes
    content_type: str


@dataclass
class Answer:
    status: int
    seconds: float
    payload: bytes

    def json(self) -> Any:
        return json.loads(self.payload)


def _headers(target: Target, body: Body, *, close: bool) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {target.api_key}",
        "Content-Type": body.content_type,
        "User-Agent": "imagegw-bench",
        "Accept": "application/json",
    }
    if close:
        headers["Connection"] = "close"
    return headers


def post(
    target: Target, body: Body, *, timeout: float = TIMEOUT_S, headers: dict[str, str] | None = None
) -> Answer:
    """POST on a fresh connection; the time covers connect, send, and reading the whole response."""
    host, port, path = target.host_port_path
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        sent = {**_headers(target, body, close=True), **(headers or {})}
        conn.request("POST", path, body=body.data, headers=sent)
        response = conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        return Answer(response.status, elapsed, payload)
    finally:
        conn.close()


def get(target: Target, *, timeout: float = TIMEOUT_S) -> Answer:
    """GET on a fresh connection, with the target's key."""
    host, port, path = target.host_port_path
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=_headers(target, Body(b"", "application/json"), close=True))
        response = conn.getresponse()
        payload = response.read()
        return Answer(response.status, time.perf_counter() - started, payload)
    finally:
        conn.close()


class KeepAlive:
    """One persistent connection (what an SDK client does); reconnects if the server closed it."""

    def __init__(self, target: Target, *, timeout: float = TIMEOUT_S) -> None:
        self.target = target
        host, port, self._path = target.host_port_path
        self._conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def post(self, body: Body) -> Answer:
        started = time.perf_counter()
        self._conn.request(
            "POST", self._path, body=body.data, headers=_headers(self.target, body, close=False)
        )
        response = self._conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        if response.will_close:
            self._conn.close()
        return Answer(response.status, elapsed, payload)

    def close(self) -> None:
        self._conn.close()


def get_json(url: str, *, timeout: float = 10.0) -> Any:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/", headers={"Connection": "close"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def post_json(url: str, obj: Any, *, timeout: float = 10.0) -> Any:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        data = json.dumps(obj).encode()
        conn.request(
            "POST",
            parts.path or "/",
            body=data,
            headers={"Connection": "close", "Content-Type": "application/json"},
        )
        return json.loads(conn.getresponse().read() or b"null")
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- bodies


def json_body(obj: dict[str, Any]) -> Body:
    return Body(json.dumps(obj).encode("utf-8"), "application/json")


def multipart_body(fields: dict[str, str], files: list[tuple[str, str, str, bytes]]) -> Body:
    """multipart/form-data as SDKs send it; files are (field, filename, content type, bytes)."""
    boundary = "bench-" + uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode("utf-8") + b"\r\n")
    for name, filename, content_type, data in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return Body(out.getvalue(), f"multipart/form-data; boundary={boundary}")


def sample_png(size: int = 1024, variant: int = 0) -> bytes:
    """A photo-like RGB PNG (~1.1 MB at 1024x1024): smooth noise over gradients, deterministic per variant.

    Real edit inputs are photographs or generated images of about this size; a flat test image would make
    every byte-proportional step (base64, multipart split, upload) look free.
    """
    from PIL import Image

    rng = random.Random(variant)
    small = max(1, size // 16)
    grad = Image.linear_gradient("L").resize((size, size))
    channels = []
    for index in range(3):
        noise = Image.frombytes("L", (small, small), rng.randbytes(small * small))
        smooth = noise.resize((size, size), Image.Resampling.BICUBIC)
        channels.append(Image.blend(smooth, grad.rotate(90 * ((index + variant) % 4)), 0.4))
    out = io.BytesIO()
    Image.merge("RGB", channels).save(out, "PNG", compress_level=1)
    return out.getvalue()
