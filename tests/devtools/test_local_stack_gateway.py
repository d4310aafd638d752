"""The local stack's API Gateway: proxy events as API Gateway builds them, and its own error answers."""

import base64
import json
import re
import time
from pathlib import Path

import pytest

from imagegw_dev.local_stack import (
    API_GATEWAY_PAYLOAD_LIMIT,
    ApiGateway,
    ApiRoute,
    api_routes,
    gateway_responses,
    is_binary,
    to_proxy_event,
)
from imagegw_dev.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")


class FakePool:
    name = "Fake"

    def __init__(self, answer=None, delay=0.0, error=None):
        self.answer = answer or {
            "statusCode": 200,
            "multiValueHeaders": {"x-request-id": ["req_1"]},
            "body": "{}",
        }
        self.delay = delay
        self.error = error
        self.events = []

    def invoke(self, event):
        self.events.append(event)
        time.sleep(self.delay)
        if self.error:
            raise self.error
        return self.answer


def route(path, pool, method="POST", timeout_ms=2000):
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
    return ApiRoute(method, path, re.compile(regex), pool, timeout_ms)


def gateway(pool, **kw):
    _, binary = api_routes(TEMPLATE, ROOT)
    return ApiGateway([route("/v1/images/edits", pool, **kw)], binary, gateway_responses(TEMPLATE))


def test_routes_and_binary_media_types_come_from_the_template():
    routes, binary = api_routes(TEMPLATE, ROOT)
    assert {(r.method, r.path) for r in routes} >= {
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/images/edits"),
        ("POST", "/v1/images/variations"),
        ("GET", "/v1/images/jobs/{job_id}"),
    }
    assert "multipart/form-data" in binary
    assert all(r.timeout_ms == 29000 for r in routes)


@pytest.mark.parametrize(
    ("content_type", "binary"),
    [
        ("multipart/form-data; boundary=abc", True),
        ("image/png", True),
        ("application/json", False),
        ("application/json; charset=utf-8", False),
        ("", False),
    ],
)
def test_binary_media_type_matching(content_type, binary):
    _, types = api_routes(TEMPLATE, ROOT)
    assert is_binary(content_type, types) is binary


def test_multipart_bodies_arrive_base64_encoded_like_api_gateway_sends_them():
    pool = FakePool()
    body = b"--b\r\nContent-Disposition: form-data; name=image\r\n\r\n\x89PNG\xff\x00\r\n--b--\r\n"
    status, headers, _ = gateway(pool).handle(
        "POST", "/v1/images/edits?x=1", {"Content-Type": "multipart/form-data; boundary=b"}, body
    )
    assert status == 200 and headers["x-request-id"] == "req_1"
    [event] = pool.events
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body
    assert event["queryStringParameters"] == {"x": "1"}
    assert event["requestContext"]["requestId"]
    assert event["resource"] == "/v1/images/edits"


def test_json_bodies_arrive_as_text():
    pool = FakePool()
    gateway(pool).handle("POST", "/v1/images/edits", {"Content-Type": "application/json"}, b'{"a": 1}')
    assert pool.events[0]["isBase64Encoded"] is False
    assert pool.events[0]["body"] == '{"a": 1}'


def test_path_parameters():
    pool = FakePool()
    gw = ApiGateway([route("/v1/images/jobs/{job_id}", pool, method="GET")], [], {})
    gw.handle("GET", "/v1/images/jobs/job_42", {}, b"")
    assert pool.events[0]["pathParameters"] == {"job_id": "job_42"}


def error_of(answer):
    status, _headers, body = answer
    return status, json.loads(body)["error"]


def test_unknown_route_is_the_templates_openai_shaped_404():
    status, error = error_of(gateway(FakePool()).handle("POST", "/v1/images/nope", {}, b""))
    assert status == 404 and error["code"] == "unknown_url"


def test_body_over_api_gateways_limit_is_its_plain_413_that_no_gateway_response_shapes():
    pool = FakePool()
    body = b"x" * (API_GATEWAY_PAYLOAD_LIMIT + 1)
    status, headers, payload = gateway(pool).handle("POST", "/v1/images/nope", {}, body)
    assert status == 413 and pool.events == []
    assert headers["Content-Type"] == "text/plain" and b"10485760" in payload
    assert headers["x-amzn-RequestId"]


def test_event_over_lambdas_limit_is_the_templates_413_naming_json_edits_and_not_retried():
    pool = FakePool()
    body = b"x" * (5 * 1024 * 1024)  # 5 MB: under API Gateway's limit, over Lambda's once base64-encoded
    answer = gateway(pool).handle("POST", "/v1/images/edits", {"Content-Type": "image/png"}, body)
    status, error = error_of(answer)
    headers = answer[1]
    assert status == 413 and pool.events == []
    assert error == {
        "message": error["message"],
        "type": "invalid_request_error",
        "param": None,
        "code": "request_too_large",
    }
    assert "JSON edit" in error["message"] and "image_url" in error["message"]
    assert headers["x-should-retry"] == "false"
    assert headers["x-request-id"] == headers["x-amzn-RequestId"]  # $context.requestId


def test_json_body_just_under_lambdas_limit_reaches_the_function():
    pool = FakePool()
    body = b'{"prompt": "' + b"x" * (6 * 1024 * 1024 - 4096) + b'"}'
    status, _, _ = gateway(pool).handle(
        "POST", "/v1/images/edits", {"Content-Type": "application/json"}, body
    )
    assert status == 200 and len(pool.events) == 1


def test_gateway_responses_carry_the_request_id_header_the_template_maps():
    status, headers, _ = gateway(FakePool()).handle("POST", "/v1/images/nope", {}, b"")
    assert status == 404 and headers["x-request-id"] == headers["x-amzn-RequestId"]


def test_api_functions_get_the_timeout_the_template_derives_from_the_api_timeout():
    routes, _ = api_routes(TEMPLATE, ROOT)
    assert {r.function.timeout_s for r in routes} == {34}


def test_every_answer_carries_api_gateways_request_id():
    for answer in (
        gateway(FakePool()).handle("POST", "/v1/images/edits", {}, b""),
        gateway(FakePool()).handle("POST", "/v1/images/nope", {}, b""),
    ):
        assert answer[1]["x-amzn-RequestId"]


def test_integration_timeout_is_504_naming_the_async_path():
    status, error = error_of(
        gateway(FakePool(delay=0.5), timeout_ms=100).handle("POST", "/v1/images/edits", {}, b"")
    )
    assert status == 504 and error["code"] == "timeout"
    assert "Prefer: respond-async" in error["message"]


def test_function_crash_is_502():
    status, error = error_of(
        gateway(FakePool(error=RuntimeError("boom"))).handle("POST", "/v1/images/edits", {}, b"")
    )
    assert status == 502 and error["type"] == "server_error"
    assert "boom" not in error["message"]


def test_proxy_event_shape_for_sam_local_invoke():
    pool = FakePool()
    event = to_proxy_event(
        "POST",
        "/v1/images/edits",
        {"Content-Type": "application/json"},
        b"{}",
        [],
        route("/v1/images/edits", pool),
    )
    assert {
        "resource",
        "path",
        "httpMethod",
        "headers",
        "multiValueHeaders",
        "requestContext",
        "body",
        "isBase64Encoded",
        "queryStringParameters",
        "pathParameters",
        "stageVariables",
    } <= set(event)


def test_chunked_request_bodies_reach_the_function_whole():
    import http.client
    import threading
    from http.server import ThreadingHTTPServer

    from imagegw_dev.local_stack.api_gateway import _HttpHandler

    pool = FakePool()
    handler = type("Handler", (_HttpHandler,), {"gateway": gateway(pool), "quiet": True})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        conn.request(
            "POST",
            "/v1/images/edits",
            body=iter([b'{"prompt": ', b'"otter"}']),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        assert conn.getresponse().status == 200
    finally:
        server.shutdown()
    assert pool.events[0]["body"] == '{"prompt": "otter"}'


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD", "GET"])
def test_a_method_the_route_does_not_serve_is_the_templates_404_not_a_501(method):
    import http.client
    import threading
    from http.server import ThreadingHTTPServer

    from imagegw_dev.local_stack.api_gateway import _HttpHandler

    pool = FakePool()
    handler = type("Handler", (_HttpHandler,), {"gateway": gateway(pool), "quiet": True})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        conn.request(method, "/v1/images/edits")
        response = conn.getresponse()
        body = response.read()
    finally:
        server.shutdown()
    assert response.status == 404 and response.getheader("x-amzn-RequestId")
    if method == "HEAD":
        assert body == b"" and int(response.getheader("Content-Length")) > 0
    else:
        assert json.loads(body)["error"]["code"] == "unknown_url"
    assert pool.events == []
