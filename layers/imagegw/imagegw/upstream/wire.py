"""The OpenAI Images wire format as an upstream speaks it: bodies, SSE streams, errors, retry hints.

Pure functions over bytes and headers (no HTTP here), so each rule is unit-tested directly.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from imagegw.domain import GeneratedImage, UpstreamResult
from imagegw.images import sniff_output_format
from imagegw.upstream.failures import (
    RouteFault,
    TransientFailure,
    UpstreamFailure,
    UpstreamMalformed,
    UpstreamRejected,
)

META_KEYS = ("background", "output_format", "quality", "size")
MAX_RETRY_AFTER_S = 120.0

# Statuses whose request is worth sending again (the SDK retries the same set).
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Statuses the client caused: the upstream's message goes back to the client, nothing is retried.
CLIENT_STATUSES = frozenset({400, 413, 422})
# Upstream error codes that retrying on the same route will not fix.
NOT_RETRYABLE_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})


# --------------------------------------------------------------------------------------------------
# Images


def decode_image_b64(value: Any, what: str = "image") -> bytes:
    """Strict base64 of a whole image, else UpstreamMalformed (never a half image stored and served)."""
    if not isinstance(value, str) or not value:
        raise UpstreamMalformed(f"The upstream returned an empty or non-string {what}.")
    compact = value.replace("\n", "").replace("\r", "")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise UpstreamMalformed(f"The upstream returned an {what} that is not valid base64.") from None
    check_image(data, what)
    return data


def check_image(data: bytes, what: str = "image") -> str:
    """The sniffed format of a complete image or SVG document; UpstreamMalformed if unknown or cut short."""
    fmt = sniff_output_format(data)
    if fmt is None:
        raise UpstreamMalformed(f"The upstream returned an {what} in no known image format.")
    if not _looks_complete(data, fmt):
        raise UpstreamMalformed(f"The upstream returned a truncated {what}.")
    return fmt


def _looks_complete(data: bytes, fmt: str) -> bool:
    tail = data[-64:].rstrip(b"\x00\r\n ")
    if fmt == "png":
        return tail.endswith(b"IEND\xaeB`\x82")
    if fmt == "jpeg":
        return b"\xff\xd9" in tail[-16:]
    if fmt == "webp":
        return len(data) >= int.from_bytes(data[4:8], "little") + 8
    if fmt == "gif":
        return tail.endswith(b";")
    if fmt == "svg":
        return tail.endswith(b"</svg>")
    return False


# --------------------------------------------------------------------------------------------------
# JSON answers


@dataclass
class ParsedImages:
    """A JSON images answer: each item is image bytes, or a URL still to download."""

    items: list[bytes | str]
    revised_prompts: list[str | None]
    usage: dict[str, Any] | None
    meta: dict[str, Any]


def json_object(body: bytes) -> dict[str, Any]:
    """An upstream answer's JSON object; UpstreamMalformed for anything else."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UpstreamMalformed("The upstream answered with a body that is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise UpstreamMalformed("The upstream answered with JSON that is not an object.")
    return doc


def parse_json_images(body: bytes) -> ParsedImages:
    doc = json_object(body)
    if isinstance(doc.get("error"), dict) and not doc.get("data"):
        raise error_from_body(200, doc, {})
    data = doc.get("data")
    if not isinstance(data, list) or not data:
        raise UpstreamMalformed("The upstream answered without any image.")
    items: list[bytes | str] = []
    revised: list[str | None] = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise UpstreamMalformed("The upstream answered with an image entry that is not an object.")
        if entry.get("b64_json") is not None:
            items.append(decode_image_b64(entry["b64_json"], f"image {index}"))
        elif isinstance(entry.get("url"), str) and entry["url"].startswith(("https://", "http://")):
            items.append(entry["url"])
        else:
            raise UpstreamMalformed("The upstream answered with an image entry without b64_json or url.")
        prompt = entry.get("revised_prompt")
        revised.append(prompt if isinstance(prompt, str) and prompt else None)
    usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else None
    meta = {k: doc[k] for k in META_KEYS if isinstance(doc.get(k), str)}
    return ParsedImages(items, revised, usage, meta)


# --------------------------------------------------------------------------------------------------
# Server-sent events


@dataclass
class SseEvent:
    event: str
    data: str


def iter_sse(text: str) -> Iterator[SseEvent]:
    """Events of an SSE body (multi-line data joined with newlines; comments and ids ignored)."""
    event, data_lines = "", list[str]()
    for raw in re.split(r"\r\n|\r|\n", text):
        if raw == "":
            if data_lines:
                yield SseEvent(event or "message", "\n".join(data_lines))
            event, data_lines = "", list[str]()
            continue
        if raw.startswith(":"):
            continue
        name, _, value = raw.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data_lines.append(value)
    if data_lines:
        yield SseEvent(event or "message", "\n".join(data_lines))


@dataclass
class _StreamState:
    partials: list[tuple[int, bytes]] = field(default_factory=list)
    images: list[GeneratedImage] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def parse_sse_images(body: bytes) -> UpstreamResult:
    """A streamed answer: partial images in order, the completed image(s), the last usage reported."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise UpstreamMalformed("The upstream stream is not valid UTF-8.") from None
    state = _StreamState()
    pending = 0  # state.partials[pending:] arrived after the last completed image: they are the next one's
    for sse in iter_sse(text):
        if sse.data.strip() == "[DONE]":
            break
        try:
            data = json.loads(sse.data)
        except ValueError:
            raise UpstreamMalformed("The upstream stream carried an event that is not valid JSON.") from None
        if not isinstance(data, dict):
            raise UpstreamMalformed("The upstream stream carried an event that is not an object.")
        kind = str(data.get("type") or sse.event)
        if "error" in data or kind == "error":
            raise error_from_body(200, data, {})
        if kind.endswith(".partial_image"):
            index = data.get("partial_image_index")
            position = index if isinstance(index, int) else len(state.partials)
            state.partials.append((position, decode_image_b64(data.get("b64_json"), "partial image")))
        elif kind.endswith(".completed"):
            image = GeneratedImage(
                decode_image_b64(data.get("b64_json")),
                partials=[img for _, img in sorted(state.partials[pending:], key=lambda p: p[0])],
            )
            pending = len(state.partials)
            if isinstance(data.get("usage"), dict):
                image.usage = dict(data["usage"])  # each completed event: its image's usage
                state.usage = add_usage(state.usage, data["usage"])
            state.images.append(image)
            state.meta.update({k: data[k] for k in META_KEYS if isinstance(data.get(k), str)})
    if not state.images:
        raise UpstreamMalformed("The upstream stream ended without a completed image.")
    return UpstreamResult(
        images=state.images,
        usage=state.usage,
        partial_images=[img for _, img in sorted(state.partials, key=lambda p: p[0])],
        meta=state.meta,
    )


def add_usage(total: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    """Usage objects added field by field (nested details too); non-numbers keep the first value."""
    if total is None:
        return dict(more)
    out = dict(total)
    for key, value in more.items():
        current = out.get(key)
        if isinstance(value, dict):
            out[key] = add_usage(current if isinstance(current, dict) else None, value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = (current if isinstance(current, int | float) else 0) + value
        else:
            out.setdefault(key, value)
    return out


# --------------------------------------------------------------------------------------------------
# Errors and retry hints


def classify_status(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamFailure:
    """The failure an upstream's non-2xx answer stands for."""
    try:
        doc: Any = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        doc = None
    return error_from_body(status, doc, headers)


def error_from_body(status: int, doc: Any, headers: Mapping[str, str]) -> UpstreamFailure:
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        error = {}
    message = error.get("message") if isinstance(error.get("message"), str) else None
    code = error.get("code") if isinstance(error.get("code"), str | int) else None
    code = str(code) if code is not None else None
    param = error.get("param") if isinstance(error.get("param"), str) else None
    kind = error.get("type") if isinstance(error.get("type"), str) else None
    lowered = {k.lower(): v for k, v in headers.items()}
    should_retry = lowered.get("x-should-retry", "").strip().lower()

    if status == 200:  # an error object inside a success (a stream event, or a proxy's 200)
        if kind == "invalid_request_error" or (code or "").endswith(("policy_violation", "_blocked")):
            return UpstreamRejected(message or _generic(400), status=400, param=param, code=code, type=kind)
        return TransientFailure("The upstream reported an error inside its answer.", status=500)
    if status in CLIENT_STATUSES:
        return UpstreamRejected(message or _generic(status), status=status, param=param, code=code, type=kind)
    if status in (401, 403):
        return RouteFault(
            f"The upstream refused the gateway's credentials ({status}).",
            status=status,
            credentials_suspect=True,
        )
    if code in NOT_RETRYABLE_CODES:
        return RouteFault(f"The upstream account cannot serve requests ({code}).", status=status)
    if status in RETRYABLE_STATUSES or status >= 500:
        return TransientFailure(
            f"The upstream answered {status}.",
            status=status,
            retry_after=retry_after_seconds(headers),
            timed_out=status in (408, 504),
            retryable=should_retry != "false",
        )
    return RouteFault(f"The upstream answered {status}.", status=status)


def _generic(status: int) -> str:
    return f"The upstream image service rejected the request (HTTP {status})."


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """`retry-after-ms`, else `retry-after` (seconds or an HTTP date); None when absent or absurd."""
    lowered = {k.lower(): v for k, v in headers.items()}
    value: float | None = None
    raw_ms = lowered.get("retry-after-ms")
    raw = lowered.get("retry-after")
    try:
        if raw_ms is not None:
            value = float(raw_ms) / 1000.0
        elif raw is not None:
            value = float(raw)
    except ValueError:
        value = None
    if value is None and raw:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        value = when.timestamp() - (time.time() if now is None else now)
    if value is None or value != value or value < 0 or value > MAX_RETRY_AFTER_S:  # NaN, past, absurd
        return None
    return value


# --------------------------------------------------------------------------------------------------
# Scrubbing: upstream hosts, URLs and keys never reach a client or a log line

_URL = re.compile(r"\b(?:https?|wss?)://[^\s'\"<>)]+", re.IGNORECASE)
_KEYLIKE = re.compile(r"\b(?:sk|rk|pk|key|sess)-[A-Za-z0-9_*.\-]{6,}")
_IP_PORT = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\blocalhost(?::\d+)?\b")
_CLOUD_HOST = re.compile(
    r"\b[\w.-]+\.(?:openai\.azure\.com|azure\.com|openai\.com|amazonaws\.com|windows\.net|azure-api\.net)\b",
    re.IGNORECASE,
)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """The text without URLs, hosts, IP addresses, key-like tokens and the given secret strings."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    text = _URL.sub("[redacted-url]", text)
    text = _CLOUD_HOST.sub("[redacted-host]", text)
    text = _IP_PORT.sub("[redacted-host]", text)
    return _KEYLIKE.sub("[redacted-key]", text)
