"""Fetching the https images of a JSON edit: public addresses only, within a deadline and a size limit.

The service calls `resolve_image_urls` between `parse_request` and `validate`, which reads the images.
"""

from __future__ import annotations

import functools
import ipaddress
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from imagegw.domain import ImageFile, RawRequest
from imagegw.errors import InvalidRequest
from imagegw.request.catalog import Catalog

FETCH_TIMEOUT_S = 10.0
MAX_REDIRECTS = 3
DEFAULT_FETCH_LIMIT = 50 * 1024 * 1024

Fetcher = Callable[[str, int], bytes]


class FetchError(Exception):
    """An image URL could not be fetched; the message is safe to show the client."""


def resolve_image_urls(
    raw: RawRequest, fetcher: Fetcher | None = None, *, catalog: Catalog | None = None
) -> RawRequest:
    """Fetch the https images of a JSON edit (in parallel), within the chosen model's limits; in place.

    Call between `parse_request` and `validate`. Count and byte limits come from the model's catalog
    entry, so an over-long list is refused before anything is fetched.
    """
    pending = [
        img
        for img in [*raw.images, raw.mask, raw.markup]
        if img is not None and img.source_url and not img.data
    ]
    if not pending:
        return raw
    from imagegw.request.validation import check_image_count, choose_model

    spec = choose_model(raw, catalog or Catalog.load())
    inputs = spec.inputs_for(raw.operation)
    if inputs is None or not spec.json_edits:
        return raw  # validate answers for the model
    check_image_count(len(raw.images), inputs, "images")
    fetch = fetcher or fetch_https

    def limit(img: ImageFile) -> int:
        if img is raw.mask and inputs.mask is not None:
            return inputs.mask.max_bytes
        if img is raw.markup and inputs.markup is not None:
            return inputs.markup.max_bytes
        return inputs.image.max_bytes

    def one(img: ImageFile) -> None:
        url = img.source_url or ""
        try:
            img.data = fetch(url, limit(img))
        except FetchError as exc:
            raise InvalidRequest(
                f"Could not fetch '{img.field_name}' from its image_url: {exc}",
                param=img.field_name,
                code="invalid_image_url",
            ) from None
        if not img.data:
            raise InvalidRequest(
                f"Could not fetch '{img.field_name}' from its image_url: the response was empty.",
                param=img.field_name,
                code="invalid_image_url",
            )

    if len(pending) == 1:
        one(pending[0])
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(pending))) as pool:
            for future in [pool.submit(one, img) for img in pending]:
                future.result()  # re-raises the first failure in list order
    return raw


def is_public_address(address: str) -> bool:
    """Only globally routable unicast addresses: no loopback, private, link-local, CGNAT, reserved."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def fetch_https(url: str, max_bytes: int = DEFAULT_FETCH_LIMIT, *, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    """GET an image over https, connecting only to public addresses (checked after DNS resolution, and
    pinned so the TLS connection goes to the address that was checked), within `timeout` seconds overall,
    at most `max_bytes`, following up to 3 redirects (each checked again). The body must be an image."""
    from imagegw.images import sniff_format

    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = _get_once(url, max_bytes, deadline)
        if status in (301, 302, 303, 307, 308) and location:
            url = urllib.parse.urljoin(url, location)
            continue
        if status != 200:
            raise FetchError(f"the server answered HTTP {status}.")
        if sniff_format(body) is None:
            raise FetchError("the URL did not return an image (PNG, JPEG, WEBP or GIF).")
        return body
    raise FetchError("too many redirects.")


@functools.cache
def _pinned_connection() -> Any:
    """http.client.HTTPSConnection to a vetted IP address, with SNI and certificate checks against the URL's
    host name. Built on first use: the network stack's imports stay out of the cold start."""
    import http.client
    import socket

    class PinnedHTTPSConnection(http.client.HTTPSConnection):
        def __init__(self, host: str, port: int, address: str, timeout: float, context: Any) -> None:
            super().__init__(host, port, timeout=timeout, context=context)
            self._address = address
            self._tls = context

        def connect(self) -> None:
            sock = socket.create_connection((self._address, self.port), self.timeout)
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)

    return PinnedHTTPSConnection


def _get_once(url: str, max_bytes: int, deadline: float) -> tuple[int, str | None, bytes]:
    """One GET, no redirect followed: (status, Location, body); the body only for a 200."""
    import http.client
    import ssl

    host, port, address, target = _vetted_target(url)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError(f"timed out after {FETCH_TIMEOUT_S:.0f} s.")
    conn = _pinned_connection()(host, port, address, remaining, ssl.create_default_context())
    try:
        conn.request("GET", target, headers={"Accept": "image/*", "User-Agent": "imagegw/1"})
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, resp.getheader("location"), b""
        declared = resp.getheader("content-length")
        if declared and declared.isdigit() and int(declared) >= max_bytes:
            raise FetchError(f"the image is larger than the limit of {max_bytes // (1024 * 1024)} MB.")
        return 200, None, _read_body(conn, resp, max_bytes, deadline)
    except FetchError:
        raise
    except TimeoutError:
        raise FetchError(f"timed out after {FETCH_TIMEOUT_S:.0f} s.") from None
    except (OSError, http.client.HTTPException, ssl.SSLError):
        raise FetchError("the connection failed.") from None
    finally:
        conn.close()


def _vetted_target(url: str) -> tuple[str, int, str, str]:
    """(host, port, a vetted public address, request target) for an https URL; FetchError otherwise."""
    import socket

    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise FetchError("only https URLs can be fetched.")
    if parts.username or parts.password:
        raise FetchError("URLs with credentials are not fetched.")
    host = parts.hostname
    try:
        port = parts.port or 443
    except ValueError:
        raise FetchError("the URL has an invalid port.") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise FetchError("the host name could not be resolved.") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise FetchError("the host resolves to an address that is not public.")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, addresses[0], target


def _read_body(conn: Any, resp: Any, max_bytes: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(f"timed out after {FETCH_TIMEOUT_S:.0f} s.")
        if conn.sock is not None:
            conn.sock.settimeout(left)  # the deadline is overall, not per read
        chunk = resp.read1(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size >= max_bytes:
            raise FetchError(f"the image is larger than the limit of {max_bytes // (1024 * 1024)} MB.")
        chunks.append(chunk)
