"""The image fetcher against hostile servers and addresses: a local TLS server signed by a test authority,
reached through the real fetcher (only the address rules and trusted authority are the test's own).

Every fetch here must end by its deadline plus one second, and no address outside 127.0.0.1 is ever
connected to (tests/conftest.py turns such a connect into a failure).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from helpers.builders import json_request
from helpers.images import png
from helpers.tls import (
    LocalAuthority,
    ScriptedTlsServer,
    redirect,
    serve,
    stall_after_accept,
    stall_mid_handshake,
    trickle,
)

from imagegw.errors import InvalidRequest
from imagegw.request import image_urls
from imagegw.request.catalog import Catalog
from imagegw.request.image_urls import (
    FetchError,
    InputBudget,
    fetch_https,
    is_public_address,
    resolve_image_urls,
)
from imagegw.request.parsing import parse_request

PNG = png(64, 64)
DEADLINE_S = 2.0
CATALOG = Catalog.load()


@pytest.fixture(scope="module")
def authority() -> LocalAuthority:
    return LocalAuthority()


@pytest.fixture
def server(authority):
    running = ScriptedTlsServer(authority)
    yield running
    running.close()


def fetch(authority: LocalAuthority, url: str, max_bytes: int = 1024 * 1024) -> bytes:
    return fetch_https(url, max_bytes, timeout=DEADLINE_S, rules=authority.loopback_rules())


def timed_failure(authority: LocalAuthority, url: str, match: str) -> float:
    started = time.monotonic()
    with pytest.raises(FetchError, match=match):
        fetch(authority, url)
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------- the path


def test_a_good_image_comes_through_the_real_tls_path(authority, server):
    assert fetch(authority, server.route("/ok.png", serve(PNG))) == PNG
    assert fetch(authority, server.route("/chunked.png", serve(PNG, length=False))) == PNG


def test_the_default_rules_refuse_the_test_server(server):
    """Without the test's own rules, loopback is refused before any connect: there is no switch to flip."""
    with pytest.raises(FetchError, match="not public"):
        fetch_https(server.route("/ok.png", serve(PNG)), 1024 * 1024, timeout=DEADLINE_S)
    assert server.requests == []


def test_an_untrusted_certificate_is_a_failed_connection(authority, server):
    other = LocalAuthority()
    rules = image_urls.FetchRules(
        address_allowed=lambda a: a == "127.0.0.1", tls_context=other.client_context
    )
    with pytest.raises(FetchError, match="connection failed"):
        fetch_https(server.route("/ok.png", serve(PNG)), 1024, timeout=DEADLINE_S, rules=rules)


# ---------------------------------------------------------------------------------------------- deadlines


def test_headers_trickled_a_byte_at_a_time_stop_at_the_deadline(authority, server):
    """Each byte arrives well inside any per-read timeout; only an overall deadline stops it (before the
    fix: 10 s per read, so the fetch ran as long as the server kept trickling)."""
    url = server.route("/trickle-headers", trickle(b"HTTP/1.1 200 OK\r\n", every=0.3))
    assert timed_failure(authority, url, "timed out") < DEADLINE_S + 1


def test_a_trickled_status_line_stops_at_the_deadline(authority, server):
    url = server.route("/trickle-status", trickle(b"", every=0.3, filler=b"HTTP/1.1 200 OK"))
    assert timed_failure(authority, url, "timed out|connection failed") < DEADLINE_S + 1


def test_a_trickled_body_stops_at_the_deadline(authority, server):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n" + PNG[:16]
    url = server.route("/trickle-body", trickle(head, every=0.3, filler=b"\0"))
    assert timed_failure(authority, url, "timed out") < DEADLINE_S + 1


def test_a_server_that_never_starts_tls_stops_at_the_deadline(authority, server):
    server.on_accept = stall_after_accept(30)
    assert timed_failure(authority, server.url("/x.png"), "timed out") < DEADLINE_S + 1


def test_a_handshake_that_stalls_stops_at_the_deadline(authority, server):
    server.on_accept = stall_mid_handshake(30)
    assert timed_failure(authority, server.url("/x.png"), "timed out|connection failed") < DEADLINE_S + 1


# ---------------------------------------------------------------------------------------------- sizes


def test_a_body_over_the_limit_is_cut_off_with_or_without_a_length(authority, server):
    big = PNG + b"\0" * (3 * 1024 * 1024)
    with pytest.raises(FetchError, match="larger than the limit"):
        fetch(authority, server.route("/declared.png", serve(big)), 1024 * 1024)
    with pytest.raises(FetchError, match="larger than the limit"):
        fetch(authority, server.route("/undeclared.png", serve(big, length=False)), 1024 * 1024)


def test_one_requests_images_together_stay_within_the_input_budget(authority, server):
    """16 images each under the per-image limit, but together over the request's budget: refused while they
    stream in, naming the budget; the budget is never exceeded by bytes held."""
    image = PNG + b"\0" * (3 * 1024 * 1024)
    url = server.route("/three-mb.png", serve(image))
    body = {"model": "gpt-image-1.5", "prompt": "x", "images": [{"image_url": url}] * 16}
    raw = parse_request("edits", json_request("edits", body))
    fetched: list[int] = []

    def fetcher(target: str, max_bytes: int) -> bytes:
        data = fetch(authority, target, max_bytes)
        fetched.append(len(data))
        return data

    with pytest.raises(InvalidRequest) as info:
        resolve_image_urls(raw, fetcher, catalog=CATALOG, max_total_bytes=20 * 1024 * 1024)
    assert info.value.code == "invalid_image_url" and info.value.param.startswith("images[")
    assert "may total at most 20 MB" in info.value.message
    assert sum(fetched) <= 20 * 1024 * 1024


def test_the_budget_is_shared_by_parallel_fetches():
    budget = InputBudget(100)
    assert budget.reserve(60) == 60
    released = threading.Event()
    got: list[int] = []

    def second() -> None:
        got.append(budget.reserve(60))  # waits: only 40 left while the first holds its 60
        released.set()

    threading.Thread(target=second, daemon=True).start()
    assert not released.wait(0.2)
    budget.settle(60, 10)  # the first used 10 of its 60
    assert released.wait(2) and got == [60]
    budget.settle(60, 60)
    assert budget.reserve(60) == 30  # 100 - 10 - 60: what is left, no more


# ---------------------------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254 (instance metadata)
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::a00:1",  # RFC 8215 local-use NAT64
        "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::c0a8:101",  # IPv4-compatible 192.168.1.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        # Teredo: server 65.54.227.120, client 10.0.0.1 obfuscated (bits inverted: f5ff:fffe)
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",
        "::ffff:169.254.169.254",
        "::",
        "fd00:ec2::254",  # the IPv6 instance metadata endpoint
        "fec0::1",  # deprecated site-local, which Python counts as global
    ],
)
def test_ipv6_forms_that_lead_to_private_addresses_are_refused(address):
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address",
    ["64:ff9b::5db8:d822", "2002:5db8:d822::1", "::ffff:93.184.216.34", "2606:4700:4700::1111"],
)
def test_the_same_forms_leading_to_public_addresses_stay_public(address):
    assert is_public_address(address)


@pytest.mark.parametrize("address", ["64:ff9b::a9fe:a9fe", "::a00:1", "2002:a9fe:a9fe::1"])
def test_a_name_resolving_to_an_embedded_private_address_never_connects(monkeypatch, address):
    def fake_getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(FetchError, match="not public"):
        fetch_https("https://nat64.example/x.png", 1024, timeout=DEADLINE_S)


def test_a_redirect_to_a_private_address_is_refused_before_connecting(authority, server):
    url = server.route("/to-metadata", redirect("https://169.254.169.254/latest/meta-data/"))
    with pytest.raises(FetchError, match="not public"):
        fetch_https(
            url,
            1024,
            timeout=DEADLINE_S,
            rules=image_urls.FetchRules(
                address_allowed=lambda a: a == "127.0.0.1" or image_urls.is_public_address(a),
                tls_context=authority.client_context,
            ),
        )
    assert server.requests == ["/to-metadata"]


def test_a_redirect_to_http_is_refused(authority, server):
    url = server.route("/to-http", redirect(server.url("/ok.png").replace("https", "http")))
    with pytest.raises(FetchError, match="only https"):
        fetch(authority, url)


@pytest.mark.parametrize("url", ["https://[::1", "https://a]b/", "https://\u2100/", "https://[v1.x]/"])
def test_urls_that_urlsplit_cannot_read_are_a_fetch_error(url):
    with pytest.raises(FetchError):
        fetch_https(url, 1024, timeout=DEADLINE_S)


@pytest.mark.parametrize("url", ["https://[::1", "https://a]b/", "https://\u2100/"])
def test_urls_that_urlsplit_cannot_read_are_400_naming_the_image(url):
    body = {"model": "gpt-image-1.5", "prompt": "x", "images": [{"image_url": url}]}
    with pytest.raises(InvalidRequest) as info:
        parse_request("edits", json_request("edits", body))
    assert (info.value.status, info.value.code, info.value.param) == (400, "invalid_image_url", "images[0]")


def test_the_session_guard_refuses_any_connect_off_the_machine():
    """The guard every test runs under (tests/conftest.py): a filter that let an address through would
    fail the test here, before a packet left."""
    with socket.socket() as sock:
        sock.settimeout(0.1)
        with pytest.raises(AssertionError, match="not loopback"):
            sock.connect(("192.0.2.1", 443))  # TEST-NET-1
    with pytest.raises(AssertionError, match="not loopback"):
        socket.create_connection(("198.51.100.7", 443), timeout=0.1)
