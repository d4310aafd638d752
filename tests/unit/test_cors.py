"""CORS: preflights for the allowed origins only, and the headers a browser needs on every answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from imagegw import cors
from imagegw.api import create_app, serve
from imagegw.errors import InvalidApiKey
from imagegw.settings import Settings, SettingsError

ORIGINS = frozenset({"https://app.example.com", "http://localhost:5173"})


def event(method: str = "OPTIONS", path: str = "/v1/images/generations", **headers: str) -> dict[str, Any]:
    return {
        "httpMethod": method,
        "path": path,
        "resource": path,
        "headers": dict(headers),
        "requestContext": {"requestId": "abc", "path": path},
        "body": None,
        "isBase64Encoded": False,
    }


def preflight_from(origin: str, requested: str = "authorization,content-type") -> dict[str, Any]:
    return event(
        Origin=origin,
        **{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": requested},
    )


def test_a_preflight_from_an_allowed_origin_echoes_it():
    result = cors.preflight(preflight_from("https://app.example.com"), ORIGINS, ["POST"])
    headers = result["headers"]
    assert result["statusCode"] == 204
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert headers["Access-Control-Allow-Methods"] == "OPTIONS, POST"
    assert headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert headers["Vary"] == "Origin" and "Access-Control-Allow-Credentials" not in headers
    assert "*" not in headers.values()


def test_the_sdk_headers_are_allowed_and_unknown_ones_left_out():
    requested = (
        "Authorization, Content-Type, X-Stainless-OS, x-stainless-retry-count, OpenAI-Organization, x-evil"
    )
    result = cors.preflight(preflight_from("http://localhost:5173", requested), ORIGINS, ["GET"])
    allowed = result["headers"]["Access-Control-Allow-Headers"].split(", ")
    assert allowed == [
        "authorization",
        "content-type",
        "x-stainless-os",
        "x-stainless-retry-count",
        "openai-organization",
    ]


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example.com.evil.example", "null"])
def test_a_preflight_from_another_origin_is_refused_without_cors_headers(origin):
    result = cors.preflight(preflight_from(origin), ORIGINS, ["POST"])
    assert result["statusCode"] == 403
    assert not any(k.lower().startswith("access-control-") for k in result["headers"])
    assert json.loads(result["body"])["error"]["code"] == "cors_origin_not_allowed"


def test_with_cors_off_every_preflight_is_refused():
    result = cors.preflight(preflight_from("https://app.example.com"), frozenset(), ["POST"])
    assert result["statusCode"] == 403 and "Vary" not in result["headers"]


def test_answers_to_an_allowed_origin_carry_the_cors_headers_errors_included():
    # A full app: the request has no valid key, so the answer is the error mapper's 401.
    app = create_app(lambda: FailingService())  # type: ignore[arg-type, return-value]
    request = event("POST", Origin="https://app.example.com", Authorization="Bearer sk-bad")
    request["body"] = "{}"
    result = serve(app, request, None, ORIGINS, ["POST"])
    assert result["statusCode"] == 401
    headers = result["multiValueHeaders"]
    assert headers["Access-Control-Allow-Origin"] == ["https://app.example.com"]
    assert "x-request-id" in headers["Access-Control-Expose-Headers"][0]
    assert headers["Vary"] == ["Origin"]
    other = serve(app, event("POST", Origin="https://evil.example"), None, ORIGINS, ["POST"])
    assert "Access-Control-Allow-Origin" not in other["multiValueHeaders"]
    assert other["multiValueHeaders"]["Vary"] == ["Origin"]


def test_the_preflight_goes_through_serve_before_any_route():
    app = create_app(lambda: FailingService(), ["generations"])  # type: ignore[arg-type, return-value]
    result = serve(app, preflight_from("https://app.example.com"), None, ORIGINS, ["POST"])
    assert result["statusCode"] == 204


def test_no_cors_headers_when_cors_is_off():
    result = cors.add_cors_headers(
        event("GET", Origin="https://app.example.com"), {"headers": {}}, frozenset()
    )
    assert result == {"headers": {}}


class FailingService:
    def handle(self, *args: Any, **kwargs: Any) -> Any:
        raise InvalidApiKey("Incorrect API key provided: sk-bad.")


def test_settings_take_a_list_of_origins_and_refuse_wildcards_and_paths():
    base = {
        "IMAGEGW_BUCKET": "b",
        "IMAGEGW_KEYS_TABLE": "k",
        "IMAGEGW_USAGE_TABLE": "u",
        "IMAGEGW_JOBS_TABLE": "j",
        "IMAGEGW_IDEMPOTENCY_TABLE": "i",
        "IMAGEGW_JOBS_QUEUE_URL": "q",
    }
    settings = Settings.from_env(
        {**base, "IMAGEGW_CORS_ALLOW_ORIGINS": "https://App.example.com/, http://localhost:5173"}
    )
    assert settings.cors_origins == ORIGINS
    assert Settings.from_env(base).cors_origins == frozenset()
    for bad in ("*", "https://app.example.com/path", "app.example.com", "https://*.example.com"):
        with pytest.raises(SettingsError):
            Settings.from_env({**base, "IMAGEGW_CORS_ALLOW_ORIGINS": bad})


def test_an_options_request_that_is_not_a_preflight_is_the_apis_404():
    app = create_app(lambda: FailingService(), ["generations"])  # type: ignore[arg-type, return-value]
    plain = event("OPTIONS", Origin="https://app.example.com")  # no Access-Control-Request-Method
    result = serve(app, plain, None, ORIGINS, ["POST"])
    assert result["statusCode"] == 404
    assert json.loads(result["body"])["error"]["code"] == "unknown_url"
