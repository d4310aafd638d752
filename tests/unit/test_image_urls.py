"""The image-URL fetcher of JSON edits: model limits, order, and the address and redirect guards."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from helpers.builders import json_request
from helpers.images import jpeg, png

from imagegw.domain import RawRequest
from imagegw.errors import ApiError, InvalidRequest
from imagegw.request import image_urls
from imagegw.request.catalog import Catalog
from imagegw.request.image_urls import FetchError, fetch_https, is_public_address, resolve_image_urls
from imagegw.request.parsing import parse_request
from imagegw.request.validation import validate

CATALOG = Catalog.load()
PNG = png(64, 64)


def json_edit(**body: Any) -> RawRequest:
    return parse_request("edits", json_request("edits", {"prompt": "x", **body}))


def test_resolve_fetches_in_order_with_the_model_limits():
    calls: list[tuple[str, int]] = []

    def fetcher(url: str, max_bytes: int) -> bytes:
        calls.append((url, max_bytes))
        return png(100, 100) if "mask" in url else jpeg(100, 100)

    raw = json_edit(
        images=[{"image_url": f"https://a.example/{i}.jpg"} for i in range(5)],
        mask={"image_url": "https://a.example/mask.png"},
    )
    resolve_image_urls(raw, fetcher, catalog=CATALOG)
    assert sorted(calls) == sorted(
        [(f"https://a.example/{i}.jpg", 50 * 1024 * 1024) for i in range(5)]
        + [("https://a.example/mask.png", 4 * 1024 * 1024)]
    )
    req = validate(raw, CATALOG)
    assert [img.format for img in req.images] == ["jpeg"] * 5 and req.mask is not None


def test_resolve_without_urls_calls_nothing():
    raw = parse_request("generations", json_request("generations", {"prompt": "x"}))

    def fetcher(url: str, max_bytes: int) -> bytes:
        raise AssertionError("no fetch expected")

    assert resolve_image_urls(raw, fetcher) is raw


def test_resolve_refuses_too_many_before_fetching():
    raw = json_edit(model="gpt-image-2", images=[{"image_url": "https://a.example/x.png"}] * 17)

    def fetcher(url: str, max_bytes: int) -> bytes:
        raise AssertionError("no fetch expected")

    with pytest.raises(InvalidRequest) as info:
        resolve_image_urls(raw, fetcher, catalog=CATALOG)
    assert info.value.code == "array_above_max_length"


def test_resolve_raises_model_errors_first():
    raw = json_edit(model="nope", images=[{"image_url": "https://a.example/x.png"}])
    with pytest.raises(ApiError) as info:
        resolve_image_urls(raw, lambda url, limit: b"", catalog=CATALOG)
    assert info.value.status == 404


def test_resolve_names_the_failing_image():
    def fetcher(url: str, max_bytes: int) -> bytes:
        if url.endswith("2.png"):
            raise FetchError("timed out after 10 s.")
        return png()

    raw = json_edit(images=[{"image_url": f"https://a.example/{i}.png"} for i in range(4)])
    with pytest.raises(InvalidRequest) as info:
        resolve_image_urls(raw, fetcher, catalog=CATALOG)
    assert (info.value.param, info.value.code) == ("images[2]", "invalid_image_url")
    assert "timed out" in info.value.message


def test_empty_fetched_body_is_a_400():
    raw = json_edit(images=[{"image_url": "https://a.example/0.png"}])
    with pytest.raises(InvalidRequest) as info:
        resolve_image_urls(raw, lambda url, limit: b"", catalog=CATALOG)
    assert info.value.param == "images[0]"


def test_validate_without_resolving_is_a_loud_wiring_error():
    raw = json_edit(images=[{"image_url": "https://a.example/0.png"}])
    with pytest.raises(ApiError) as info:
        validate(raw, CATALOG)
    assert info.value.status == 500


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # instance metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("not-an-ip", False),
    ],
)
def test_only_public_addresses_are_fetched(address, public):
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://img.example/x.png", "only https"),
        ("ftp://img.example/x.png", "only https"),
        ("https://user:pw@img.example/x.png", "credentials"),
        ("https://localhost/x.png", "not public"),
        ("https://127.0.0.1/x.png", "not public"),
        ("https://[::1]/x.png", "not public"),
        ("https://169.254.169.254/latest/meta-data/", "not public"),
        ("https://10.0.0.8:8443/x.png", "not public"),
        ("https://img.example:99999/x.png", "invalid port"),
    ],
)
def test_fetch_refuses_unsafe_targets_without_connecting(url, reason, monkeypatch):
    def no_connect(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("must not connect")

    monkeypatch.setattr(socket, "create_connection", no_connect)
    with pytest.raises(FetchError) as info:
        fetch_https(url, 1024)
    assert reason in str(info.value)


def test_dns_names_resolving_to_private_addresses_are_refused(monkeypatch):
    def fake_getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(FetchError, match="not public"):
        fetch_https("https://rebind.example/x.png", 1024)


def test_redirects_are_checked_again_and_limited(monkeypatch):
    hops: list[str] = []

    def fake_get_once(url: str, max_bytes: int, deadline: float, rules: Any) -> tuple[int, str | None, bytes]:
        hops.append(url)
        if url == "https://a.example/start":
            return 302, "/next", b""
        if url == "https://a.example/next":
            return 301, "https://b.example/final.png", b""
        if url == "https://b.example/final.png":
            return 200, None, PNG
        return 302, url + "x", b""

    monkeypatch.setattr(image_urls, "_get_once", fake_get_once)
    assert fetch_https("https://a.example/start", 1024) == PNG
    assert hops == ["https://a.example/start", "https://a.example/next", "https://b.example/final.png"]
    with pytest.raises(FetchError, match="too many redirects"):
        fetch_https("https://loop.example/", 1024)


def test_fetched_bodies_must_be_images_and_200(monkeypatch):
    monkeypatch.setattr(image_urls, "_get_once", lambda url, limit, deadline, rules: (200, None, b"<html>"))
    with pytest.raises(FetchError, match="did not return an image"):
        fetch_https("https://a.example/x", 1024)
    monkeypatch.setattr(image_urls, "_get_once", lambda url, limit, deadline, rules: (404, None, b""))
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_https("https://a.example/x", 1024)
