"""CORS through the local stack (started with IMAGEGW_CORS_ALLOW_ORIGINS, as `make dev` takes it): what a
browser at the allowed origin gets, and what any other origin does not."""

from __future__ import annotations

import requests
from conftest import CORS_ORIGIN

SDK_HEADERS = "authorization,content-type,x-stainless-os,x-stainless-lang,x-stainless-retry-count"


def preflight(stack, path: str, origin: str, method: str = "POST") -> requests.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": SDK_HEADERS,
    }
    return requests.options(stack["api_url"] + path, headers=headers, timeout=10)


def test_a_preflight_from_the_configured_origin_is_answered_with_that_origin(stack):
    for path, method in (("/images/generations", "POST"), ("/models", "GET"), ("/models/dall-e-3", "GET")):
        response = preflight(stack, path, CORS_ORIGIN, method)
        assert response.status_code == 204, path
        assert response.headers["Access-Control-Allow-Origin"] == CORS_ORIGIN
        assert method in response.headers["Access-Control-Allow-Methods"]
        assert response.headers["Access-Control-Allow-Headers"] == SDK_HEADERS.replace(",", ", ")
        assert "Access-Control-Allow-Credentials" not in response.headers


def test_a_preflight_from_another_origin_is_not(stack):
    response = preflight(stack, "/images/generations", "https://evil.example")
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


def test_answers_and_errors_to_the_allowed_origin_carry_the_cors_headers(stack):
    ok = requests.get(
        stack["api_url"] + "/models",
        headers={"Origin": CORS_ORIGIN, "Authorization": f"Bearer {stack['api_key']}"},
        timeout=10,
    )
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == CORS_ORIGIN
    assert "x-request-id" in ok.headers["Access-Control-Expose-Headers"]
    refused = requests.post(
        stack["api_url"] + "/images/generations",
        json={"prompt": "x"},
        headers={"Origin": CORS_ORIGIN, "Authorization": "Bearer sk-wrong"},
        timeout=10,
    )
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == CORS_ORIGIN
    # API Gateway's own answer (no function involved) is readable too, from the template's GatewayResponses
    unknown = requests.get(stack["api_url"] + "/nope", headers={"Origin": CORS_ORIGIN}, timeout=10)
    assert unknown.status_code == 404 and unknown.headers["Access-Control-Allow-Origin"] == CORS_ORIGIN
    other = requests.get(stack["api_url"] + "/models", headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in other.headers
