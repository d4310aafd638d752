"""Providers over real HTTP against a scripted server on 127.0.0.1: what the emulator cannot be made to do
(URL answers, bodies that trickle past the deadline, keys echoed in errors, odd content types)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from helpers.tls import LocalAuthority, ScriptedTlsServer, answer_status, redirect, serve, trickle
from PIL import Image

from imagegw.domain import ImageFile
from imagegw.upstream import (
    AzureOpenAIProvider,
    Credentials,
    OpenAIProvider,
    ProviderContext,
    RouteFault,
    TransientFailure,
    UpstreamMalformed,
    UpstreamRejected,
    new_http_session,
)
from imagegw.upstream.config import ProviderConfig

KEY = "sk-unit-0123456789abcdef"


def png(size=(16, 16)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0
    trickle: float = 0.0  # seconds between body chunks


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Upstream:
    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.seen: list[Seen] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.seen.append(
                    Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                queue = upstream.replies.get(self.path.split("?")[0]) or [Reply(404, b"{}")]
                reply = queue.pop(0) if len(queue) > 1 else queue[0]
                time.sleep(reply.delay)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if reply.trickle:
                    for i in range(0, len(reply.body), 16):
                        self.wfile.write(reply.body[i : i + 16])
                        self.wfile.flush()
                        time.sleep(reply.trickle)
                else:
                    self.wfile.write(reply.body)

            do_GET = do_POST = _serve

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # clients that hang up mid-body are what some tests are about

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FixedKey(Credentials):
    def __init__(self, key: str | None) -> None:
        super().__init__("")
        self.key = key
        self.invalidated = False

    def api_key(self, name: str | None) -> str | None:
        return self.key

    def invalidate(self) -> None:
        self.invalidated = True


@pytest.fixture(scope="module")
def upstream():
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _clean(upstream):
    upstream.replies.clear()
    upstream.seen.clear()


def openai(upstream, key: str | None = KEY) -> OpenAIProvider:
    cfg = ProviderConfig("o", "openai", url=upstream.url + "/v1", credential="openai")
    return OpenAIProvider(cfg, ProviderContext(new_http_session(), FixedKey(key)))


def call(provider, operation="generations", *, images=(), mask=None, stream=False, timeout=5.0, **params):
    return provider.call(
        operation=operation,
        model="gpt-image-1.5",
        params={"prompt": "p", "n": 1, **params},
        images=list(images),
        mask=mask,
        stream=stream,
        timeout=timeout,
    )


def ok(*items: dict, **top: Any) -> Reply:
    return Reply(body=json.dumps({"created": 1, "data": list(items), **top}).encode())


def test_generation_request_shape_and_auth(upstream):
    upstream.replies["/v1/images/generations"] = [
        ok({"b64_json": base64.b64encode(png()).decode()}, usage={"total_tokens": 7}, size="1024x1024")
    ]
    result = call(openai(upstream), quality="high", user=None)
    (seen,) = upstream.seen
    assert seen.path == "/v1/images/generations" and seen.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(seen.body) == {"model": "gpt-image-1.5", "prompt": "p", "n": 1, "quality": "high"}
    assert result.images[0].data == png() and result.usage == {"total_tokens": 7}
    assert result.meta == {"size": "1024x1024"}


def test_no_key_means_no_authorization_header(upstream):
    upstream.replies["/v1/images/generations"] = [ok({"b64_json": base64.b64encode(png()).decode()})]
    call(openai(upstream, key=None))
    assert "authorization" not in upstream.seen[0].headers


@pytest.fixture(scope="module")
def image_host():
    """Where URL answers point: a TLS server signed by a test authority (the download uses the image_url
    fetcher, which speaks only https to allowed addresses)."""
    authority = LocalAuthority()
    server = ScriptedTlsServer(authority)
    yield server
    server.close()


def downloading(upstream, image_host, key: str | None = KEY) -> OpenAIProvider:
    cfg = ProviderConfig("o", "openai", url=upstream.url + "/v1", credential="openai")
    rules = image_host.authority.loopback_rules()
    return OpenAIProvider(cfg, ProviderContext(new_http_session(), FixedKey(key), fetch_rules=rules))


def test_url_answers_are_downloaded_without_credentials(upstream, image_host):
    url = image_host.route("/files/a.png", serve(png()))
    upstream.replies["/v1/images/generations"] = [ok({"url": url, "revised_prompt": "rp"})]
    result = call(downloading(upstream, image_host))
    assert result.images[0].data == png() and result.images[0].revised_prompt == "rp"
    assert KEY.encode() not in image_host.heads[-1]
    assert b"authorization" not in image_host.heads[-1].lower()


def test_a_truncated_downloaded_image_is_malformed(upstream, image_host):
    url = image_host.route("/files/b.png", serve(png()[:40]))
    upstream.replies["/v1/images/generations"] = [ok({"url": url})]
    with pytest.raises(UpstreamMalformed):
        call(downloading(upstream, image_host))


def test_a_download_server_error_is_transient(upstream, image_host):
    url = image_host.route("/files/c.png", answer_status(503))
    upstream.replies["/v1/images/generations"] = [ok({"url": url})]
    with pytest.raises(TransientFailure):
        call(downloading(upstream, image_host))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/files/x.png",  # plain http
        "https://169.254.169.254/latest/meta-data/x.png",  # instance metadata
        "https://[64:ff9b::a9fe:a9fe]/x.png",  # the same through NAT64
        "https://10.0.0.1/x.png",
    ],
)
def test_url_answers_are_held_to_the_image_url_rules(upstream, url):
    """Before: plain requests.get (http allowed, redirects followed, no address check). The default rules
    refuse these before any connect (the session's connect guard would fail the test otherwise)."""
    upstream.replies["/v1/images/generations"] = [ok({"url": url})]
    with pytest.raises(UpstreamMalformed, match="could not be fetched"):
        call(openai(upstream))


def test_a_download_redirected_to_a_private_address_is_refused(upstream, image_host):
    url = image_host.route("/files/moved.png", redirect("https://169.254.169.254/x.png"))
    upstream.replies["/v1/images/generations"] = [ok({"url": url})]
    with pytest.raises(UpstreamMalformed, match="not public"):
        call(downloading(upstream, image_host))


def test_a_download_trickling_its_headers_stops_at_the_deadline(upstream, image_host):
    url = image_host.route("/files/slow.png", trickle(b"HTTP/1.1 200 OK\r\n", every=0.3))
    upstream.replies["/v1/images/generations"] = [ok({"url": url})]
    started = time.monotonic()
    with pytest.raises(TransientFailure):
        call(downloading(upstream, image_host), timeout=2.0)
    assert time.monotonic() - started < 3.0


def test_a_body_trickling_past_the_timeout_is_cut_at_the_deadline(upstream):
    body = json.dumps({"data": [{"b64_json": base64.b64encode(png((64, 64))).decode()}]}).encode()
    # 16 bytes every 0.4 s: the whole body would take several seconds.
    upstream.replies["/v1/images/generations"] = [Reply(body=body, trickle=0.4)]
    assert len(body) / 16 * 0.4 > 5
    started = time.monotonic()
    with pytest.raises(TransientFailure) as info:
        call(openai(upstream), timeout=0.6)
    assert info.value.timed_out and time.monotonic() - started < 2.5


def test_a_slow_answer_times_out(upstream):
    upstream.replies["/v1/images/generations"] = [Reply(delay=4.0, body=b"{}")]
    started = time.monotonic()
    with pytest.raises(TransientFailure) as info:
        call(openai(upstream), timeout=0.3)
    assert info.value.timed_out and time.monotonic() - started < 2.5
    assert info.value.sent  # the request went out: the upstream may bill it (the ledger rule)


def test_a_refused_connection_is_transient_and_names_no_host():
    cfg = ProviderConfig("o", "openai", url="http://127.0.0.1:9/v1")
    provider = OpenAIProvider(cfg, ProviderContext(new_http_session(), FixedKey(None)))
    with pytest.raises(TransientFailure) as info:
        call(provider, timeout=1.0)
    assert "127.0.0.1" not in info.value.message and not info.value.timed_out
    assert not info.value.sent  # nothing reached the upstream: nothing to charge


def test_a_400_echoing_the_key_and_host_is_scrubbed(upstream):
    message = f"Bad request from key {KEY} to {upstream.url}/v1/images/generations via {upstream.url[7:]}"
    upstream.replies["/v1/images/generations"] = [
        Reply(
            400,
            json.dumps(
                {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "param": "prompt",
                        "code": "bad",
                    }
                }
            ).encode(),
        )
    ]
    with pytest.raises(UpstreamRejected) as info:
        call(openai(upstream))
    assert KEY not in info.value.message and "127.0.0.1" not in info.value.message
    assert info.value.message.startswith("Bad request from key") and info.value.param == "prompt"


def test_a_401_is_a_route_fault_suspecting_the_credentials(upstream):
    upstream.replies["/v1/images/generations"] = [Reply(401, b'{"error": {"message": "Incorrect API key"}}')]
    with pytest.raises(RouteFault) as info:
        call(openai(upstream))
    assert info.value.credentials_suspect


def test_a_streamed_answer_is_parsed(upstream):
    event = {
        "type": "image_generation.completed",
        "b64_json": base64.b64encode(png()).decode(),
        "usage": {"total_tokens": 3},
    }
    body = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
    upstream.replies["/v1/images/generations"] = [
        Reply(body=body, headers={"Content-Type": "text/event-stream"})
    ]
    result = call(openai(upstream), stream=True, partial_images=0)
    assert json.loads(upstream.seen[0].body)["stream"] is True
    assert upstream.seen[0].headers["accept"] == "text/event-stream"
    assert result.usage == {"total_tokens": 3}


def test_multipart_edit_with_several_images_and_a_mask(upstream):
    upstream.replies["/v1/images/edits"] = [ok({"b64_json": base64.b64encode(png()).decode()})]
    images = [
        ImageFile("image[0]", png(), filename="a.png", format="png"),
        ImageFile("image[1]", b"\xff\xd8\xff" + b"jpegish", filename="b.jpg", format="jpeg"),
    ]
    mask = ImageFile("mask", png(), filename="m.png", format="png")
    call(openai(upstream), "edits", images=images, mask=mask, input_fidelity="high", n=2)
    seen = upstream.seen[0]
    assert seen.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = seen.body
    assert body.count(b'name="image[]"; filename="a.png"') == 1
    assert body.count(b'name="image[]"; filename="b.jpg"') == 1
    assert b"Content-Type: image/jpeg" in body and b'name="mask"; filename="m.png"' in body
    assert b'name="n"\r\n\r\n2\r\n' in body and b'name="model"\r\n\r\ngpt-image-1.5\r\n' in body


def test_multipart_edit_sends_objects_as_bracketed_fields_and_the_markup_file(upstream):
    # OpenAI's multipart takes objects as `svg[reasoning][effort]` fields, never a JSON string.
    upstream.replies["/v1/images/edits"] = [ok({"b64_json": base64.b64encode(png()).decode()})]
    markup = ImageFile("markup", png(), filename="arrows.png", format="png")
    openai(upstream).call(
        operation="edits",
        model="gpt-image-2.5",
        params={"prompt": "p", "output_format": "svg", "svg": {"model": "m", "reasoning": {"effort": "low"}}},
        images=[ImageFile("image", png(), filename="a.png", format="png")],
        mask=None,
        stream=False,
        timeout=5,
        markup=markup,
    )
    body = upstream.seen[0].body
    assert b'name="svg[model]"\r\n\r\nm\r\n' in body
    assert b'name="svg[reasoning][effort]"\r\n\r\nlow\r\n' in body
    assert b'name="svg"' not in body
    assert b'name="markup"; filename="arrows.png"\r\nContent-Type: image/png' in body


def test_a_single_image_is_sent_as_image(upstream):
    upstream.replies["/v1/images/variations"] = [ok({"b64_json": base64.b64encode(png()).decode()})]
    provider = openai(upstream)
    provider.call(
        operation="variations",
        model="dall-e-2",
        params={"n": 1},
        images=[ImageFile("image", png())],
        mask=None,
        stream=False,
        timeout=5,
    )
    assert b'name="image"; filename="image"' in upstream.seen[0].body


def test_azure_paths_header_and_no_variations(upstream):
    upstream.replies["/openai/deployments/img%20prod/images/generations"] = [
        ok({"b64_json": base64.b64encode(png()).decode()})
    ]
    cfg = ProviderConfig("az", "azure", url=upstream.url, api_version="2025-04-01-preview", credential="az")
    provider = AzureOpenAIProvider(cfg, ProviderContext(new_http_session(), FixedKey(KEY)))
    provider.call(
        operation="generations",
        model="img prod",
        params={"prompt": "p"},
        images=[],
        mask=None,
        stream=False,
        timeout=5,
    )
    seen = upstream.seen[0]
    assert seen.path == "/openai/deployments/img%20prod/images/generations?api-version=2025-04-01-preview"
    assert seen.headers["api-key"] == KEY and "authorization" not in seen.headers
    assert "model" not in json.loads(seen.body)
    with pytest.raises(RouteFault):
        provider.call(
            operation="variations", model="d", params={}, images=[], mask=None, stream=False, timeout=5
        )
