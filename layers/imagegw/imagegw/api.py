"""The HTTP side: a Powertools REST resolver for the API's endpoints, and the one error mapper hook.

Each API function (functions/*/app.py) names the endpoint it serves and registers only that one, as
API Gateway sends it only that path; tests and the local stack may build an app with all of them.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from imagegw import cors
from imagegw.domain import ApiResponse, HttpRequest, Operation
from imagegw.errors import ApiError, NotFound, to_error_response
from imagegw.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from imagegw.model_listing import ModelListing
    from imagegw.service import ImageService

T = TypeVar("T")

# The API's endpoints by the name each handler file uses: (method, path, operation for image requests).
ENDPOINTS: dict[str, tuple[str, str, Operation | None]] = {
    "generations": ("POST", "/v1/images/generations", "generations"),
    "edits": ("POST", "/v1/images/edits", "edits"),
    "variations": ("POST", "/v1/images/variations", "variations"),
    "job_status": ("GET", "/v1/images/jobs/<job_id>", None),
    "models": ("GET", "/v1/models", None),
}
# More paths an endpoint's function serves: the models function answers both paths of one resource (the
# same code and warm container; a second function would only add a cold start).
MORE_PATHS: dict[str, tuple[tuple[str, str], ...]] = {"models": (("GET", "/v1/models/<model>"),)}


def paths_of(endpoint: str) -> tuple[tuple[str, str], ...]:
    """Every (method, path) the endpoint's function serves."""
    method, path, _ = ENDPOINTS[endpoint]
    return ((method, path), *MORE_PATHS.get(endpoint, ()))


def create_app(
    service_factory: Callable[[], ImageService],
    endpoints: Iterable[str] = tuple(ENDPOINTS),
    listing_factory: Callable[[], ModelListing] | None = None,
) -> APIGatewayRestResolver:
    """`service_factory` (and `listing_factory`, for the models endpoint) are called once, on first use,
    so importing a handler makes no AWS call."""
    app = APIGatewayRestResolver()
    service = _once(service_factory)
    listing = _once(listing_factory or _no_listing)

    def image_request(operation: Operation) -> Callable[[], Response]:
        def serve_operation() -> Response:
            http = _begin(app)
            context = app.lambda_context
            remaining = context.get_remaining_time_in_millis if context else (lambda: 900_000)
            return to_response(service().handle(operation, http, remaining), http.request_id)

        return serve_operation

    def job_status(job_id: str) -> Response:
        http = _begin(app, job_id=job_id)
        return to_response(service().job_status(http, job_id), http.request_id)

    def list_models() -> Response:
        http = _begin(app)
        return to_response(listing().list(http), http.request_id)

    def retrieve_model(model: str) -> Response:
        http = _begin(app)
        return to_response(listing().retrieve(http, model), http.request_id)

    views: dict[str, Callable[..., Response]] = {
        "job_status": job_status,
        "models": list_models,
        "/v1/models/<model>": retrieve_model,
    }
    for name in endpoints:
        for method, path in paths_of(name):
            operation = ENDPOINTS[name][2] if path == ENDPOINTS[name][1] else None
            view = image_request(operation) if operation else views.get(path) or views[name]
            app.route(path, method)(view)
    _error_handlers(app)
    return app


def _once(factory: Callable[[], T]) -> Callable[[], T]:
    box: list[T] = []

    def get() -> T:
        if not box:
            box.append(factory())
        return box[0]

    return get


def _no_listing() -> ModelListing:
    raise NotFound("This function does not serve the models endpoint.", code="unknown_url")


def _begin(app: APIGatewayRestResolver, **keys: str) -> HttpRequest:
    http = http_request(app.current_event.raw_event)
    logger.append_keys(request_id=http.request_id, path=http.path, **keys)
    return http


def _error_handlers(app: APIGatewayRestResolver) -> None:
    @app.not_found
    def not_found(_: Exception) -> Response:
        event = app.current_event
        raise NotFound(f"Invalid URL ({event.http_method} {event.path})", code="unknown_url")

    @app.exception_handler(Exception)
    def handle_error(exc: Exception) -> Response:
        request_id = request_id_of(app.current_event.raw_event)
        if not isinstance(exc, ApiError):
            logger.exception("unhandled error")
        mapped = to_error_response(exc)
        return Response(
            status_code=mapped.status,
            content_type="application/json",
            body=json.dumps(mapped.body),
            headers={**mapped.headers, "x-request-id": request_id},
        )


def to_response(api: ApiResponse, request_id: str) -> Response:
    return Response(
        status_code=api.status,
        content_type=api.content_type,
        body=api.body,
        headers={**api.headers, "x-request-id": request_id},
    )


def request_id_of(event: dict[str, Any]) -> str:
    """`req_` plus API Gateway's own request id, so access logs and client reports correlate."""
    cached = event.get("_imagegw_request_id")
    if cached:
        return str(cached)
    aws_id = (event.get("requestContext") or {}).get("requestId") or uuid.uuid4().hex
    request_id = "req_" + str(aws_id).replace("-", "")
    event["_imagegw_request_id"] = request_id
    return request_id


def http_request(event: dict[str, Any]) -> HttpRequest:
    raw_body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(raw_body)
    else:
        body = raw_body.encode("utf-8", errors="surrogateescape")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    return HttpRequest(
        method=event.get("httpMethod", ""),
        path=event.get("path", ""),
        headers=headers,
        body=body,
        request_id=request_id_of(event),
        path_params=dict(event.get("pathParameters") or {}),
        base_url=base_url_of(event, headers),
    )


def base_url_of(event: dict[str, Any], headers: dict[str, str]) -> str:
    """Where the client reached this API: scheme, host and any stage or base path before the route.

    API Gateway's requestContext.path is the path as requested (`/api/v1/images/...` on the execute-api
    host, with a custom domain's base path otherwise); `path` is the route alone.
    """
    host = headers.get("host")
    if not host:
        return ""
    scheme = headers.get("x-forwarded-proto") or ("https" if host.endswith(".amazonaws.com") else "http")
    route = str(event.get("path") or "")
    requested = str((event.get("requestContext") or {}).get("path") or route)
    prefix = requested[: -len(route)] if route and requested.endswith(route) else ""
    return f"{scheme.split(',')[0].strip()}://{host}{prefix.rstrip('/')}"


def serve(
    app: APIGatewayRestResolver,
    event: dict[str, Any],
    context: Any,
    cors_origins: frozenset[str] = frozenset(),
    methods: Iterable[str] = (),
) -> dict[str, Any]:
    """Resolve one API Gateway event (a CORS preflight is answered here) and write the access log line
    (never the key, prompt or bytes)."""
    started = time.monotonic()
    if cors.is_preflight(event):
        result = cors.preflight(event, cors_origins, methods)
    else:
        result = cors.add_cors_headers(event, app.resolve(event, context), cors_origins)
    status = int(result.get("statusCode", 500))
    latency_ms = int((time.monotonic() - started) * 1000)
    headers = result.get("multiValueHeaders") or {}  # the REST resolver answers multi-value headers only
    metrics.add_metric(name=f"Status{status // 100}xx", unit="Count", value=1)
    metrics.add_metric(name="Latency", unit="Milliseconds", value=latency_ms)
    if status >= 500 and "x-should-retry" in headers:
        metrics.add_metric(name="UpstreamFailures", unit="Count", value=1)
    logger.info(
        "request finished",
        extra={
            "request_id": request_id_of(event),
            "path": event.get("path"),
            "status": status,
            "latency_ms": latency_ms,
        },
    )
    return result


def make_api_handler(endpoint: str) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda entry point of the API function serving `endpoint` (a key of ENDPOINTS): settings
    validated once, at cold start."""
    from aws_lambda_powertools.logging import correlation_paths

    from imagegw.settings import Settings
    from imagegw.wiring import build_model_listing, build_service

    settings = Settings.from_env()
    app = create_app(lambda: build_service(settings), [endpoint], lambda: build_model_listing(settings))
    methods = {method for method, _ in paths_of(endpoint)}

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
    @tracer.capture_lambda_handler(capture_response=False)  # no base64 images or presigned URLs in traces
    @metrics.log_metrics
    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return serve(app, event, context, settings.cors_origins, methods)

    return lambda_handler
