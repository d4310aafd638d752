"""API Gateway in front of the handler modules: routes from the template, REST (v1) proxy events, API
Gateway's own error answers (the template's GatewayResponses), and the HTTP server clients talk to."""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from imagegw_dev.local_stack.functions import FunctionPool, function_pool
from imagegw_dev.local_stack.template_values import template_number
from imagegw_dev.template import NO_VALUE, evaluate, parameter_values, resources

LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024
API_GATEWAY_PAYLOAD_LIMIT = 10 * 1024 * 1024
DEFAULT_API_TIMEOUT_MS = 29_000


@dataclass
class ApiRoute:
    method: str
    path: str
    pattern: re.Pattern[str]
    function: FunctionPool
    timeout_ms: int

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None


def api_routes(template: dict[str, Any], root: Path) -> tuple[list[ApiRoute], list[str]]:
    """The API routes and binary media types the template declares, bound to their handler modules."""
    routes: list[ApiRoute] = []
    pools: dict[str, FunctionPool] = {}
    for name, props in resources(template, "AWS::Serverless::Function").items():
        for event in (props.get("Events") or {}).values():
            if event.get("Type") != "Api":
                continue
            spec = event["Properties"]
            pool = pools.setdefault(name, function_pool(name, props, template, root))
            path = spec["Path"]
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
            integration_ms = template_number(spec.get("TimeoutInMillis"), template, DEFAULT_API_TIMEOUT_MS)
            routes.append(
                ApiRoute(spec["Method"].upper(), path, re.compile(regex), pool, int(integration_ms))
            )
    binary_types: list[str] = []
    for props in resources(template, "AWS::Serverless::Api").values():
        binary_types += [str(t).replace("~1", "/") for t in props.get("BinaryMediaTypes") or []]
    return routes, binary_types


def is_binary(content_type: str, binary_types: list[str]) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return bool(media) and any(fnmatch.fnmatch(media, pattern.lower()) for pattern in binary_types)


def to_proxy_event(
    method: str,
    raw_path: str,
    headers: dict[str, str],
    body: bytes,
    binary_types: list[str],
    route: ApiRoute,
    request_id: str | None = None,
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as API Gateway builds it."""
    parts = urlsplit(raw_path)
    query = parse_qsl(parts.query, keep_blank_values=True)
    multi_query: dict[str, list[str]] = {}
    for key, value in query:
        multi_query.setdefault(key, []).append(value)
    binary = is_binary(headers.get("Content-Type", headers.get("content-type", "")), binary_types)
    if not body:
        event_body: str | None = None
    elif binary:
        event_body = base64.b64encode(body).decode("ascii")
    else:
        event_body = body.decode("utf-8", errors="replace")
    path_params = route.match(method, parts.path)
    request_id = request_id or str(uuid.uuid4())
    return {
        "resource": route.path,
        "path": parts.path,
        "httpMethod": method,
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": dict(query) or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_params or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route.path,
            "httpMethod": method,
            # The path as requested: the local URL has no stage prefix (like a custom domain without a
            # base path), so absolute links the API builds (job status URLs) point back here.
            "path": parts.path,
            "stage": "local",
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTimeEpoch": int(time.time() * 1000),
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent", "")},
            "accountId": "123456789012",
            "apiId": "local",
        },
        "body": event_body,
        "isBase64Encoded": bool(binary and body),
    }


# API Gateway's own answers (no function involved): response type -> (default status, its message).
# Documented: the types and default statuses (API Gateway developer guide, "Gateway response types").
# The messages, and which type answers a body over Lambda's limit, are what API Gateway is reported to send.
GATEWAY_DEFAULTS = {
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long"),  # reported for a Lambda event over 6 MB
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out"),
    "INTEGRATION_FAILURE": (504, "Internal server error"),  # not emulated: Lambda failing to run at all
    "DEFAULT_5XX": (502, "Internal server error"),
}

# A body over API Gateway's 10 MB payload quota is refused before any gateway response applies: reported as
# a plain-text 413 that the API cannot customise.
OVER_API_GATEWAY_LIMIT = (
    413,
    {"Content-Type": "text/plain"},
    f"HTTP content length exceeded {API_GATEWAY_PAYLOAD_LIMIT} bytes.".encode(),
)


class ApiGateway:
    """Routes HTTP requests to handler pools the way API Gateway's Lambda proxy integration does.

    API Gateway's own errors are rendered from the template's GatewayResponses, as a deployment answers them.
    """

    def __init__(
        self,
        routes: list[ApiRoute],
        binary_types: list[str],
        gateway_responses: dict[str, Any] | None = None,
        template: dict[str, Any] | None = None,
    ) -> None:
        self.routes = routes
        self.binary_types = binary_types
        self.gateway_responses = gateway_responses or {}
        # What the gateway responses' conditions read: the parameters' defaults, and CorsAllowOrigins as
        # `IMAGEGW_CORS_ALLOW_ORIGINS=... make dev` sets it.
        self.template = template or {}
        self.parameters = parameter_values(
            self.template, {"CorsAllowOrigins": os.environ.get("IMAGEGW_CORS_ALLOW_ORIGINS", "")}
        )

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One request; like API Gateway, every answer carries `x-amzn-RequestId`, its own errors included."""
        request_id = str(uuid.uuid4())
        status, out_headers, payload = self._handle(method, raw_path, headers, body, request_id)
        return status, {**out_headers, "x-amzn-RequestId": request_id}, payload

    def _handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes, request_id: str
    ) -> tuple[int, dict[str, str], bytes]:
        if len(body) > API_GATEWAY_PAYLOAD_LIMIT:
            status, plain_headers, plain = OVER_API_GATEWAY_LIMIT
            return status, dict(plain_headers), plain
        path = urlsplit(raw_path).path
        route = next((r for r in self.routes if r.match(method, path) is not None), None)
        if route is None:
            return self.gateway_error("MISSING_AUTHENTICATION_TOKEN", request_id, headers)
        event = to_proxy_event(method, raw_path, headers, body, self.binary_types, route, request_id)
        if len(json.dumps(event)) > LAMBDA_PAYLOAD_LIMIT:
            # Lambda refuses an event over its 6 MB payload limit before the function runs; API Gateway is
            # reported to answer it as REQUEST_TOO_LARGE (413), and sending it again cannot succeed.
            return self.gateway_error("REQUEST_TOO_LARGE", request_id, headers)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = route.function.invoke(event)
            except Exception as exc:  # an unhandled error in the function: API Gateway answers 502
                outcome["error"] = exc

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(route.timeout_ms / 1000)
        if worker.is_alive():
            return self.gateway_error("INTEGRATION_TIMEOUT", request_id, headers)
        result = outcome.get("result")
        if not isinstance(result, dict) or len(json.dumps(result)) > LAMBDA_PAYLOAD_LIMIT:
            return self.gateway_error("DEFAULT_5XX", request_id, headers)
        raw_body = result.get("body") or ""
        payload = base64.b64decode(raw_body) if result.get("isBase64Encoded") else raw_body.encode("utf-8")
        out_headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        for key, values in (result.get("multiValueHeaders") or {}).items():
            out_headers[str(key)] = ", ".join(str(v) for v in values)
        return int(result.get("statusCode", 502)), out_headers, payload

    def gateway_error(
        self, response_type: str, request_id: str = "", request_headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """API Gateway's own answer of one response type, as the template's GatewayResponses shape it."""
        status, message = GATEWAY_DEFAULTS.get(response_type) or HTTP_REFUSALS[response_type]
        custom = self.gateway_responses.get(response_type) or self.gateway_responses.get(
            "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
        )
        body = json.dumps({"message": message})
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": response_type}
        if custom:
            status = int(custom.get("StatusCode", status))
            rendered = (custom.get("ResponseTemplates") or {}).get("application/json")
            if rendered:
                body = str(rendered).replace("$context.error.messageString", json.dumps(message))
            mapped = ((custom.get("ResponseParameters") or {}).get("Headers")) or {}
            for name, expression in mapped.items():
                source = evaluate(expression, self.template, self.parameters)
                if source is NO_VALUE or not isinstance(source, str):
                    continue  # a header the template's conditions leave out
                value = _mapped_header(source, request_id, request_headers or {})
                if value is not None:
                    headers[str(name)] = value
        return status, headers, body.encode()


def _mapped_header(source: str, request_id: str, request_headers: dict[str, str]) -> str | None:
    """A gateway response header's value from its mapping expression: 'static', context.requestId or
    method.request.header.NAME (the sources API Gateway's parameter mapping takes)."""
    if len(source) >= 2 and source[0] == source[-1] == "'":
        return source[1:-1]
    if source == "context.requestId":
        return request_id
    prefix = "method.request.header."
    if source.startswith(prefix):
        wanted = source[len(prefix) :].lower()
        return next((v for k, v in request_headers.items() if k.lower() == wanted), None)
    return None


def gateway_responses(template: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for props in resources(template, "AWS::Serverless::Api").values():
        found.update(props.get("GatewayResponses") or {})
    return found


# What http.server refuses before any routing (its own HTML pages otherwise), answered the way API Gateway
# answers a request it will not pass on: JSON in the template's DEFAULT_4XX shape, never a 5xx.
HTTP_REFUSALS = {
    "REQUEST_HEADERS_TOO_LARGE": (431, "Request Header Fields Too Large"),
    "REQUEST_URI_TOO_LONG": (414, "Request-URI Too Long"),
    "BAD_REQUEST": (400, "Bad Request"),
}


def refusal_type(code: int) -> str:
    """The gateway answer for one of http.server's own error codes."""
    if code == 501:  # no do_<METHOD>: a method no route serves, as API Gateway answers it
        return "MISSING_AUTHENTICATION_TOKEN"
    if code == 431:
        return "REQUEST_HEADERS_TOO_LARGE"
    if code == 414:
        return "REQUEST_URI_TOO_LONG"
    return "BAD_REQUEST"  # a malformed request line or header, an HTTP version it does not speak (505)


class _HttpHandler(BaseHTTPRequestHandler):
    server_version = "imagegw-local"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds the body back until
    # the client's delayed ACK (~40 ms on every kept-alive request).
    disable_nagle_algorithm = True
    gateway: ApiGateway
    quiet = False

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # API Gateway accepts chunked uploads and hands the function the whole body.
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._read_body()
        headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
        status, out_headers, payload = self.gateway.handle(self.command, self.path, headers, body)
        self.send_response(status)
        for key, value in out_headers.items():
            if key.lower() not in {"content-length", "connection", "transfer-encoding"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has the headers of the GET answer, and no body
            self.wfile.write(payload)

    # Every method API Gateway takes reaches the routing, so that a method a resource does not serve gets
    # the same 404 answer a deployed API gives (not http.server's own 501 HTML page).
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's refusals (unknown methods such as TRACE, headers or a request line over its limits,
        malformed requests) as API Gateway-like JSON answers with a request id, instead of HTML 501/431."""
        request_id = str(uuid.uuid4())
        status, headers, payload = self.gateway.gateway_error(refusal_type(code), request_id)
        self.close_connection = True
        self.request_version = "HTTP/1.1"  # an unreadable request line leaves HTTP/0.9: no status line at all
        self.send_response(status)
        for key, value in {**headers, "x-amzn-RequestId": request_id}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)
