"""Fetching https images: public addresses only, within a deadline, a size limit and a per-request budget.

The service calls `resolve_image_urls` between `parse_request` and `validate`, which reads the images. The
same fetcher downloads the images an upstream answers as URLs (`upstream.providers`).
"""

from __future__ import annotations

import functools
import io
import ipaddress
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imagegw.domain import ImageFile, RawRequest
from imagegw.errors import InvalidRequest
from imagegw.request.catalog import Catalog

FETCH_TIMEOUT_S = 10.0
MAX_REDIRECTS = 3
DEFAULT_FETCH_LIMIT = 50 * 1024 * 1024
# What one request may bring in, all images together (fetched, data URLs, multipart files): a quarter of
# the API function's 1024 MB by default (IMAGEGW_MAX_REQUEST_INPUT_MB, template parameter MaxRequestInputMB).
DEFAULT_REQUEST_INPUT_BYTES = 256 * 1024 * 1024
MB = 1024 * 1024

Fetcher = Callable[[str, int], bytes]


class FetchError(Exception):
    """An image URL could not be fetched; the message is safe to show the client. `status` is the HTTP
    status a server answered (when that was the failure); `timed_out` tells a deadline from the rest."""

    def __init__(self, message: str, *, status: int | None = None, timed_out: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.timed_out = timed_out


def resolve_image_urls(
    raw: RawRequest,
    fetcher: Fetcher | None = None,
    *,
    catalog: Catalog | None = None,
    max_total_bytes: int = DEFAULT_REQUEST_INPUT_BYTES,
) -> RawRequest:
    """Fetch the https images of a JSON edit (in parallel), within the chosen model's limits; in place.

    Call between `parse_request` and `validate`. Count and byte limits come from the model's catalog
    entry, so an over-long list is refused before anything is fetched; all images together stay within
    `max_total_bytes` (what the function's memory can hold), counted while they stream in.
    """
    images = [img for img in [*raw.images, raw.mask, raw.markup] if img is not None]
    pending = [img for img in images if img.source_url and not img.data]
    if not pending:
        return raw
    from imagegw.request.validation import check_image_count, choose_model

    spec = choose_model(raw, catalog or Catalog.load())
    inputs = spec.inputs_for(raw.operation)
    if inputs is None or not spec.json_edits:
        return raw  # validate answers for the model
    check_image_count(len(raw.images), inputs, "images")
    fetch = fetcher or fetch_https
    budget = InputBudget(max_total_bytes - sum(len(img.data) for img in images))

    def one(img: ImageFile) -> None:
        wanted = _limit_for(img, raw, inputs)
        granted = budget.reserve(wanted)
        total = f"the images of one request may total at most {max_total_bytes // MB} MB"
        try:
            if granted <= 0:
                raise _unfetchable(img, f"{total}.")
            img.data = fetch(img.source_url or "", granted)
        except FetchError as exc:
            raise _unfetchable(img, f"{exc} ({total})" if granted < wanted else str(exc)) from None
        finally:
            budget.settle(granted, len(img.data))
        if not img.data:
            raise _unfetchable(img, "the response was empty.")

    if len(pending) == 1:
        one(pending[0])
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(pending))) as pool:
            for future in [pool.submit(one, img) for img in pending]:
                future.result()  # re-raises the first failure in list order
    return raw


def _limit_for(img: ImageFile, raw: RawRequest, inputs: Any) -> int:
    if img is raw.mask and inputs.mask is not None:
        return int(inputs.mask.max_bytes)
    if img is raw.markup and inputs.markup is not None:
        return int(inputs.markup.max_bytes)
    return int(inputs.image.max_bytes)


def _unfetchable(img: ImageFile, reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"Could not fetch '{img.field_name}' from its image_url: {reason}",
        param=img.field_name,
        code="invalid_image_url",
    )


class InputBudget:
    """The bytes one request may still bring in, shared by its parallel fetches. Each fetch reserves its
    whole limit before it starts (waiting while others hold the rest) and gives back what it did not use,
    so the bytes held and in flight never exceed the budget."""

    def __init__(self, total: int) -> None:
        self._left = max(0, total)
        self._busy = 0
        self._changed = threading.Condition()

    def reserve(self, wanted: int) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self._left >= wanted or self._busy == 0)
            granted = min(wanted, self._left)
            self._left -= granted
            self._busy += 1
            return granted

    def settle(self, granted: int, used: int) -> None:
        with self._changed:
            self._left += granted - min(used, granted)
            self._busy -= 1
            self._changed.notify_all()


# ---------------------------------------------------------------------------------------------- addresses

_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: operator-local, any embedding
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: mapped (::ffff:0:0/96), IPv4-compatible (::/96),
    NAT64 (64:ff9b::/96), 6to4 (2002::/16), Teredo (2001::/32: server and de-obfuscated client)."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _NAT64_WELL_KNOWN or ip in _IPV4_COMPATIBLE:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    return []


def is_public_address(address: str) -> bool:
    """Only globally routable unicast addresses: no loopback, private, link-local, CGNAT, reserved, and no
    IPv6 form that leads to an IPv4 address that is not public."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL_USE:
            return False
        inner = embedded_ipv4(ip)
        if inner:
            return all(_is_public(v4) for v4 in inner)
    return _is_public(ip)


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local  # fec0::/10, deprecated
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or site_local)


@dataclass(frozen=True)
class FetchRules:
    """Which addresses a fetch may connect to and which certificates it trusts. Deployed code only ever
    uses PUBLIC_INTERNET (there is no setting for anything else); tests pass their own rules in code to
    reach a local TLS server signed by a test authority."""

    address_allowed: Callable[[str], bool] = is_public_address
    tls_context: Callable[[], Any] | None = None  # None: the system's trusted authorities

    def context(self) -> Any:
        import ssl

        return self.tls_context() if self.tls_context is not None else ssl.create_default_context()


PUBLIC_INTERNET = FetchRules()


def check_https_url(url: str) -> urllib.parse.SplitResult:
    """The parts of a fetchable URL (https, a host, no credentials, a valid port); FetchError otherwise.
    `urlsplit` raises ValueError on some malformed URLs (`https://[::1`, `https://\\u2100/`)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise FetchError("the URL is not valid.") from None
    try:
        port = parts.port
    except ValueError:
        raise FetchError("the URL has an invalid port.") from None
    if parts.scheme.lower() != "https" or not host:
        raise FetchError("only https URLs can be fetched.")
    if parts.username or parts.password:
        raise FetchError("URLs with credentials are not fetched.")
    if port == 0:
        raise FetchError("the URL has an invalid port.")
    return parts


# ---------------------------------------------------------------------------------------------- fetching


def fetch_https(
    url: str,
    max_bytes: int = DEFAULT_FETCH_LIMIT,
    *,
    timeout: float = FETCH_TIMEOUT_S,
    rules: FetchRules = PUBLIC_INTERNET,
) -> bytes:
    """GET an image over https, connecting only to allowed (public) addresses (checked after DNS
    resolution, and pinned so the TLS connection goes to the address that was checked), within `timeout`
    seconds overall (connect, TLS, status line, headers and body), at most `max_bytes`, following up to 3
    redirects (each checked again). The body must be an image."""
    from imagegw.images import sniff_format

    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = _get_once(url, max_bytes, deadline, rules)
        if status in (301, 302, 303, 307, 308) and location:
            url = urllib.parse.urljoin(url, location)
            continue
        if status != 200:
            raise FetchError(f"the server answered HTTP {status}.", status=status)
        if sniff_format(body) is None:
            raise FetchError("the URL did not return an image (PNG, JPEG, WEBP or GIF).")
        return body
    raise FetchError("too many redirects.")


@functools.cache
def _pinned_connection() -> Any:
    """http.client.HTTPSConnection to a vetted IP address, with SNI and certificate checks against the URL's
    host name, and every socket operation (connect, handshake, each read and write) bounded by the time
    left to one overall deadline: a server that trickles its headers a byte at a time cannot stretch it.
    Built on first use: the network stack's imports stay out of the cold start."""
    import http.client
    import socket
    import ssl

    class DeadlineSSLSocket(ssl.SSLSocket):
        deadline = 0.0

        def _time_left(self) -> None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline")
            self.settimeout(left)

        def do_handshake(self, block: bool = False) -> None:
            self._time_left()
            super().do_handshake(block)

        def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
            self._time_left()
            return super().recv_into(buffer, nbytes or 0, flags)

        def sendall(self, data: Any, flags: int = 0) -> None:
            self._time_left()
            super().sendall(data, flags)

    class PinnedHTTPSConnection(http.client.HTTPSConnection):
        def __init__(self, host: str, port: int, address: str, deadline: float, context: Any) -> None:
            super().__init__(host, port, timeout=max(0.001, deadline - time.monotonic()), context=context)
            self._address = address
            self._deadline = deadline
            self._tls = context

        def connect(self) -> None:
            sock = socket.create_connection(
                (self._address, self.port), max(0.001, self._deadline - time.monotonic())
            )
            self._tls.sslsocket_class = DeadlineSSLSocket
            tls = self._tls.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
            tls.deadline = self._deadline
            tls.do_handshake()
            self.sock = tls

    return PinnedHTTPSConnection


def _get_once(url: str, max_bytes: int, deadline: float, rules: FetchRules) -> tuple[int, str | None, bytes]:
    """One GET, no redirect followed: (status, Location, body); the body only for a 200."""
    import http.client
    import ssl

    host, port, address, target = _vetted_target(url, rules)
    if deadline <= time.monotonic():
        raise FetchError("timed out.", timed_out=True)
    conn = _pinned_connection()(host, port, address, deadline, rules.context())
    try:
        conn.request("GET", target, headers={"Accept": "image/*", "User-Agent": "imagegw/1"})
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, resp.getheader("location"), b""
        declared = resp.getheader("content-length")
        if declared and declared.isdigit() and int(declared) >= max_bytes:
            raise FetchError(_too_large(max_bytes))
        return 200, None, _read_body(resp, max_bytes)
    except FetchError:
        raise
    except TimeoutError:
        raise FetchError("timed out.", timed_out=True) from None
    except (OSError, http.client.HTTPException, ssl.SSLError, ValueError):
        raise FetchError("the connection failed.") from None
    finally:
        conn.close()


def _too_large(max_bytes: int) -> str:
    return f"the image is larger than the limit of {max_bytes / MB:.0f} MB."


def _vetted_target(url: str, rules: FetchRules) -> tuple[str, int, str, str]:
    """(host, port, a vetted address, request target) for an https URL; FetchError otherwise."""
    import socket

    parts = check_https_url(url)
    host = parts.hostname or ""
    port = parts.port or 443
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        raise FetchError("the host name could not be resolved.") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(rules.address_allowed(a) for a in addresses):
        raise FetchError("the host resolves to an address that is not public.")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, addresses[0], target


def _read_body(resp: Any, max_bytes: int) -> bytes:
    """The body, at most `max_bytes`, into one growing buffer (no list of chunks joined at the end: one
    copy of the image in memory); each read is bounded by the deadline through the socket."""
    body = io.BytesIO()
    while True:
        chunk = resp.read1(256 * 1024)
        if not chunk:
            return body.getvalue()
        if body.tell() + len(chunk) >= max_bytes:
            raise FetchError(_too_large(max_bytes))
        body.write(chunk)
