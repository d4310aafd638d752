"""Providers: one upstream call each, over HTTP, classified into typed failures.

The provider types are listed by name in `imagegw.upstream.provider_types.PROVIDER_TYPES`; the routes
document names the type of each configured provider. A factory receives the provider's config (`options`
holds any extra fields, e.g. a region) and the `ProviderContext` (which can carry a boto3 client under
`clients`).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import requests
import urllib3

from imagegw.domain import GeneratedImage, ImageFile, Operation, UpstreamResult
from imagegw.request.image_urls import PUBLIC_INTERNET, FetchError, FetchRules, fetch_https
from imagegw.upstream.config import ProviderConfig, RoutesError
from imagegw.upstream.credentials import Credentials
from imagegw.upstream.failures import (
    RouteFault,
    TransientFailure,
    UpstreamFailure,
    UpstreamMalformed,
    UpstreamRejected,
    chain_of,
    is_timeout,
)
from imagegw.upstream.wire import check_image, classify_status, parse_json_images, parse_sse_images, scrub

CONNECT_TIMEOUT_S = 3.05
MAX_BODY_BYTES = 256 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
DEFAULT_AZURE_API_VERSION = "2025-04-01-preview"
USER_AGENT = "imagegw/0.1"


class Provider(Protocol):
    """One attempt against one upstream. Returns the images or raises a `failures` type; never retries."""

    def call(
        self,
        *,
        operation: Operation,
        model: str,
        params: Mapping[str, Any],
        images: Sequence[ImageFile],
        mask: ImageFile | None,
        stream: bool,
        timeout: float,
        markup: ImageFile | None = None,  # passed only when the request has one
    ) -> UpstreamResult: ...


@dataclass
class ProviderContext:
    """What a provider factory may use: the HTTP session, the credentials, and any SDK clients."""

    session: requests.Session
    credentials: Credentials
    clients: Mapping[str, Any] = field(default_factory=dict)
    # Images an upstream answers as URLs are fetched under the image_url rules (https, public addresses,
    # redirects re-checked, a size limit, one deadline); tests pass their own rules to reach 127.0.0.1.
    fetch_rules: FetchRules = PUBLIC_INTERNET


ProviderFactory = Callable[[ProviderConfig, ProviderContext], Provider]


# --------------------------------------------------------------------------------------------------
# HTTP plumbing shared by the OpenAI-wire providers


@dataclass
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TransientFailure("The upstream did not answer in time.", timed_out=True)
    return left


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, requests.Timeout) or is_timeout(exc)


def _before_sending(exc: BaseException) -> bool:
    """The connection was never made (refused, unresolvable, connect timeout): nothing was sent."""
    never_connected = (
        requests.ConnectTimeout
        | urllib3.exceptions.NewConnectionError
        | urllib3.exceptions.ConnectTimeoutError
    )
    return any(isinstance(item, never_connected) for item in chain_of(exc))


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket the body streams from: the pooled connection's, or (HTTP/1.0, `Connection: close`,
    where the connection has already let go of it) the one behind the response's file object."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is None:
        socket_io = getattr(getattr(getattr(response.raw, "_fp", None), "fp", None), "raw", None)
        sock = getattr(socket_io, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _read_body(response: requests.Response, deadline: float) -> bytes:
    """The whole body, or a timeout at the deadline. Each read takes what one recv brings (`read1`) with
    the socket's timeout set to the time left, so neither a stalled nor a trickling upstream (a few bytes
    at a time, each read well inside a fixed timeout) can hold the function past its deadline."""
    chunks: list[bytes] = []
    total = 0
    sock = _socket_of(response)
    while True:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(_remaining(deadline))
        chunk = response.raw.read1(CHUNK_BYTES, decode_content=True)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise UpstreamMalformed("The upstream answer is larger than the gateway accepts.")
        chunks.append(chunk)
        _remaining(deadline)


def http_request(
    session: requests.Session,
    method: str,
    url: str,
    *,
    deadline: float,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    data: Any = None,
    allow_redirects: bool = False,
) -> _Answer:
    """One HTTP exchange that ends by `deadline`; errors are typed and carry no URL or host."""
    timeout = _remaining(deadline)
    try:
        response = session.request(
            method,
            url,
            params=params,
            headers=dict(headers or {}),
            data=data,
            timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout),
            stream=True,
            allow_redirects=allow_redirects,
        )
        try:
            body = _read_body(response, deadline)
        finally:
            response.close()
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        sent = not _before_sending(exc)  # the ledger rule: an attempt sent may have been billed
        if _is_timeout(exc) or time.monotonic() >= deadline:
            raise TransientFailure(
                "The upstream did not answer in time.", timed_out=True, sent=sent
            ) from None
        raise TransientFailure(
            "The upstream could not be reached or dropped the connection.", sent=sent
        ) from None
    except TimeoutError:
        raise TransientFailure("The upstream did not answer in time.", timed_out=True, sent=True) from None
    return _Answer(response.status_code, response.headers, body)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _file_part(image: ImageFile, fallback: str) -> tuple[str, io.BytesIO, str]:
    return (image.filename or fallback, io.BytesIO(image.data), image.mimetype)


def multipart_body(
    fields_in: Mapping[str, Any],
    images: Sequence[ImageFile],
    mask: ImageFile | None,
    markup: ImageFile | None = None,
) -> Any:
    """A streaming multipart body: scalars as strings, objects as bracketed fields (`svg[reasoning][effort]`,
    as OpenAI's multipart takes them), one image as `image`, several as repeated `image[]`, each file with
    its own filename and content type, then `mask` and `markup`. Built per attempt (it is consumed)."""
    from requests_toolbelt import MultipartEncoder

    parts: list[tuple[str, Any]] = []
    for key, value in fields_in.items():
        parts.extend(_form_fields(key, value))
    name = "image" if len(images) == 1 else "image[]"
    parts.extend((name, _file_part(image, "image.png")) for image in images)
    if mask is not None:
        parts.append(("mask", _file_part(mask, "mask.png")))
    if markup is not None:
        parts.append(("markup", _file_part(markup, "markup.png")))
    return MultipartEncoder(fields=parts)


def _form_fields(name: str, value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [pair for key, member in value.items() for pair in _form_fields(f"{name}[{key}]", member)]
    return [(name, _form_value(value))]


# --------------------------------------------------------------------------------------------------
# OpenAI-compatible


class OpenAIProvider:
    """Anything that speaks the OpenAI Images API at `{base_url}/images/...` with a Bearer key."""

    model_in_body = True

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        if not config.url:
            raise RoutesError(f"providers.{config.name} needs a base_url")
        self.config = config
        self._session = context.session
        self._credentials = context.credentials
        self._fetch_rules = context.fetch_rules

    @classmethod
    def create(cls, config: ProviderConfig, context: ProviderContext) -> Provider:
        return cls(config, context)

    # -- what differs between OpenAI and Azure --

    def endpoint(self, operation: Operation, model: str) -> tuple[str, dict[str, str]]:
        return f"{self.config.url}/images/{operation}", {}

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    # -- the call --

    def call(
        self,
        *,
        operation: Operation,
        model: str,
        params: Mapping[str, Any],
        images: Sequence[ImageFile],
        mask: ImageFile | None,
        stream: bool,
        timeout: float,
        markup: ImageFile | None = None,
    ) -> UpstreamResult:
        deadline = time.monotonic() + timeout
        key = self._credentials.api_key(self.config.credential)
        try:
            return self._call(operation, model, params, images, mask, stream, deadline, key, markup)
        except UpstreamRejected as exc:  # its message goes back to the client: no host, URL or key in it
            exc.message = scrub(exc.message, [key or "", self.config.url, urlsplit(self.config.url).netloc])
            raise

    def _call(
        self,
        operation: Operation,
        model: str,
        params: Mapping[str, Any],
        images: Sequence[ImageFile],
        mask: ImageFile | None,
        stream: bool,
        deadline: float,
        key: str | None,
        markup: ImageFile | None = None,
    ) -> UpstreamResult:
        url, query = self.endpoint(operation, model)
        body: dict[str, Any] = {"model": model} if self.model_in_body else {}
        body.update({k: v for k, v in params.items() if v is not None})
        if stream:
            body["stream"] = True
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "text/event-stream" if stream else "application/json",
            **self.auth_headers(key),
        }
        data: Any
        if operation == "generations":
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        else:
            data = multipart_body(body, images, mask, markup)
            headers["Content-Type"] = data.content_type
        answer = http_request(
            self._session, "POST", url, deadline=deadline, params=query, headers=headers, data=data
        )
        if not 200 <= answer.status < 300:
            raise classify_status(answer.status, answer.body, answer.headers)
        content_type = answer.headers.get("content-type", "").lower()
        if "text/event-stream" in content_type or (
            stream and answer.body.lstrip()[:6] in (b"event:", b"data: ", b"data:{")
        ):
            return parse_sse_images(answer.body)
        parsed = parse_json_images(answer.body)
        generated = []
        try:
            for item, revised in zip(parsed.items, parsed.revised_prompts, strict=True):
                data_bytes = item if isinstance(item, bytes) else self._download(item, deadline)
                generated.append(GeneratedImage(data_bytes, revised))
        except UpstreamFailure as exc:
            exc.sent = True  # the generation itself succeeded (and was billed); only a download failed
            raise
        return UpstreamResult(images=generated, usage=parsed.usage, meta=parsed.meta)

    def _download(self, url: str, deadline: float) -> bytes:
        """An image the upstream answered as a URL, fetched like a client's image_url (https, public
        addresses, redirects re-checked, a size limit) within the same deadline; no credentials sent."""
        try:
            data = fetch_https(url, MAX_BODY_BYTES, timeout=_remaining(deadline), rules=self._fetch_rules)
        except FetchError as exc:
            if exc.timed_out:
                raise TransientFailure("The upstream did not answer in time.", timed_out=True) from None
            if exc.status is not None and (exc.status == 429 or exc.status >= 500):
                raise TransientFailure(
                    f"Downloading the upstream image answered {exc.status}.", status=exc.status
                ) from None
            raise UpstreamMalformed(f"The upstream image URL could not be fetched: {exc}") from None
        check_image(data, "downloaded image")
        return data


# --------------------------------------------------------------------------------------------------
# Azure OpenAI


class AzureOpenAIProvider(OpenAIProvider):
    """`{endpoint}/openai/deployments/{deployment}/images/{op}?api-version=...` with an `api-key` header.

    The route's `deployment` (default: its `model`) names the deployment; the body carries no model.
    Azure OpenAI serves generations and edits, not variations (translate them to an edit).
    """

    model_in_body = False

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        if not config.url:
            raise RoutesError(f"providers.{config.name} needs an endpoint")
        super().__init__(config, context)
        self.api_version = config.api_version or DEFAULT_AZURE_API_VERSION

    def endpoint(self, operation: Operation, model: str) -> tuple[str, dict[str, str]]:
        if operation == "variations":
            raise RouteFault("Azure OpenAI does not serve image variations.")
        deployment = quote(model, safe="")
        return (
            f"{self.config.url}/openai/deployments/{deployment}/images/{operation}",
            {"api-version": self.api_version},
        )

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"api-key": key} if key else {}
