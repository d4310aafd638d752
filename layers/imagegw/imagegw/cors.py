"""CORS for browser clients: origins allowed by IMAGEGW_CORS_ALLOW_ORIGINS (template parameter
CorsAllowOrigins), none by default.

- Every answer to a request from an allowed origin carries `Access-Control-Allow-Origin: <that origin>`
  and `Access-Control-Expose-Headers` (x-request-id and the retry headers the SDKs read); errors included,
  since the headers are added to the finished proxy response, whoever produced it.
- A preflight (OPTIONS) from an allowed origin is answered 204 with the methods of the path and the headers
  the client asked for, when each is one the API reads (authorization, content-type, openai-*,
  x-stainless-*, idempotency-key, prefer...); one from any other origin, or with CORS off, is a 403 without
  CORS headers, so the browser refuses.
- `Vary: Origin` whenever CORS is on. Never `*`, never Access-Control-Allow-Credentials: keys travel in the
  Authorization header, not in cookies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

EXPOSE_HEADERS = (
    "x-request-id, x-should-retry, retry-after, retry-after-ms, location, preference-applied, "
    "x-imagegw-job-id, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests"
)
ALLOWED_HEADERS = frozenset(
    {"authorization", "content-type", "accept", "idempotency-key", "prefer", "user-agent", "x-request-id"}
)
ALLOWED_PREFIXES = ("openai-", "x-stainless-")
MAX_AGE_SECONDS = "600"


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if str(key).lower() == name:
            return str(value)
    return None


def request_origin(event: Mapping[str, Any]) -> str | None:
    origin = _header(event.get("headers"), "origin")
    return origin.strip().rstrip("/").lower() if origin else None


def is_preflight(event: Mapping[str, Any]) -> bool:
    """A CORS preflight: OPTIONS with Access-Control-Request-Method (any other OPTIONS is a 404: no route
    serves that method)."""
    method = str(event.get("httpMethod", "")).upper()
    return method == "OPTIONS" and _header(event.get("headers"), "access-control-request-method") is not None


def allowed_request_headers(requested: str | None) -> str:
    """The headers of Access-Control-Request-Headers the API reads (others are left out)."""
    names = [h.strip().lower() for h in (requested or "").split(",") if h.strip()]
    kept = [h for h in names if h in ALLOWED_HEADERS or h.startswith(ALLOWED_PREFIXES)]
    return ", ".join(dict.fromkeys(kept or ["authorization", "content-type"]))


def preflight(event: Mapping[str, Any], origins: frozenset[str], methods: Iterable[str]) -> dict[str, Any]:
    """The proxy response to an OPTIONS request."""
    origin = request_origin(event)
    if origin is None or origin not in origins:
        body = {
            "error": {
                "message": "This origin may not call the API from a browser (CORS): ask the deployment's "
                "operator to add it to CorsAllowOrigins.",
                "type": "invalid_request_error",
                "param": None,
                "code": "cors_origin_not_allowed",
            }
        }
        headers = {"Content-Type": "application/json", **({"Vary": "Origin"} if origins else {})}
        return {"statusCode": 403, "headers": headers, "body": json.dumps(body), "isBase64Encoded": False}
    headers = {
        "Access-Control-Allow-Origin": _header(event.get("headers"), "origin") or origin,
        "Access-Control-Allow-Methods": ", ".join(sorted({*methods, "OPTIONS"})),
        "Access-Control-Allow-Headers": allowed_request_headers(
            _header(event.get("headers"), "access-control-request-headers")
        ),
        "Access-Control-Max-Age": MAX_AGE_SECONDS,
        "Vary": "Origin",
    }
    return {"statusCode": 204, "headers": headers, "body": "", "isBase64Encoded": False}


def add_cors_headers(
    event: Mapping[str, Any], result: dict[str, Any], origins: frozenset[str]
) -> dict[str, Any]:
    """The proxy response with the CORS headers an allowed origin needs to read it."""
    if not origins:
        return result
    extra = {"Vary": "Origin"}
    origin = request_origin(event)
    if origin is not None and origin in origins:
        extra["Access-Control-Allow-Origin"] = _header(event.get("headers"), "origin") or origin
        extra["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    multi = result.get("multiValueHeaders")
    if isinstance(multi, dict):
        for key, value in extra.items():
            multi[key] = [value]
    else:
        result["headers"] = {**(result.get("headers") or {}), **extra}
    return result
