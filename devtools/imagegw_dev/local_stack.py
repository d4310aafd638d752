"""The local stack behind `make dev`: what `sam local` would do, without Docker.

- moto's server (in-process) stands in for S3, DynamoDB, SQS, Secrets Manager and SSM; the bucket, tables and
  queues are created from the resources `template.yaml` declares (same key schemas, TTLs and redrive).
- An HTTP server turns each request into an API Gateway REST proxy event (payload v1; bodies of the
  template's binary media types base64-encoded with `isBase64Encoded: true`), invokes the same handler
  modules Lambda runs (`functions/*/app.py`), and turns the result back into an HTTP response. Like
  Lambda, each concurrent request gets its own warm "container" (a separately imported handler module).
- The upstream is the built-in emulator (a test double), or any OpenAI-compatible service.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import importlib.util
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from imagegw_dev.template import NO_VALUE, evaluate, load_template, parameter_values, resources

REGION = "us-east-1"
LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024
API_GATEWAY_PAYLOAD_LIMIT = 10 * 1024 * 1024
DEFAULT_API_TIMEOUT_MS = 29_000
UPSTREAM_SECRET_NAME = "imagegw/upstream"  # noqa: S105 - a secret's name, not its value


def project_root() -> Path:
    """The checkout holding template.yaml: the working directory, else the source tree of this package."""
    for candidate in (Path.cwd(), *Path(__file__).resolve().parents):
        if (candidate / "template.yaml").is_file() and (candidate / "functions").is_dir():
            return candidate
    raise FileNotFoundError("template.yaml not found: run from the imagegw checkout")


# ---------------------------------------------------------------------------------------------------------
# AWS resources in moto, from the template


@dataclass
class LocalResources:
    endpoint_url: str
    bucket: str
    tables: dict[str, str]  # logical id -> table name
    queues: dict[str, str]  # logical id -> queue URL
    upstream_secret_id: str

    def env(self) -> dict[str, str]:
        """The settings a deployed function gets from template.yaml, pointed at the local resources."""
        return {
            "IMAGEGW_BUCKET": self.bucket,
            "IMAGEGW_KEYS_TABLE": self.tables["KeysTable"],
            "IMAGEGW_USAGE_TABLE": self.tables["UsageTable"],
            "IMAGEGW_JOBS_TABLE": self.tables["JobsTable"],
            "IMAGEGW_IDEMPOTENCY_TABLE": self.tables["IdempotencyTable"],
            "IMAGEGW_JOBS_QUEUE_URL": self.queues["JobsQueue"],
            "IMAGEGW_UPSTREAM_SECRET_ID": self.upstream_secret_id,
        }


def aws_env(endpoint_url: str) -> dict[str, str]:
    """Environment that points every boto3 client at moto and away from any real account."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "imagegw",
    }


def moto_session() -> Any:
    """A boto3 session with moto's placeholder credentials, whatever the environment holds."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's placeholder credentials
        region_name=REGION,
    )


def create_resources(
    template: dict[str, Any], endpoint_url: str, upstream_credentials: dict[str, Any]
) -> LocalResources:

    session = moto_session()
    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    tables = {}
    for logical_id, props in resources(template, "AWS::DynamoDB::Table").items():
        tables[logical_id] = logical_id
        create_table(dynamodb, logical_id, props)

    s3 = session.client("s3", endpoint_url=endpoint_url)
    buckets = list(resources(template, "AWS::S3::Bucket"))
    bucket = "imagegw-local-images"
    if buckets:
        s3.create_bucket(Bucket=bucket)

    sqs = session.client("sqs", endpoint_url=endpoint_url)
    queue_props = resources(template, "AWS::SQS::Queue")
    queues: dict[str, str] = {}
    # Dead-letter queues first, so redrive policies can name them.
    ordered = sorted(queue_props, key=lambda lid: "RedrivePolicy" in queue_props[lid])
    for logical_id in ordered:
        queues[logical_id] = create_queue(sqs, logical_id, queue_props[logical_id], queues)

    secrets_client = session.client("secretsmanager", endpoint_url=endpoint_url)
    secret = secrets_client.create_secret(
        Name=UPSTREAM_SECRET_NAME, SecretString=json.dumps(upstream_credentials)
    )
    return LocalResources(endpoint_url, bucket, tables, queues, secret["ARN"])


def create_table(dynamodb: Any, name: str, props: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = [
            {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
            for g in props["GlobalSecondaryIndexes"]
        ]
    dynamodb.create_table(**kwargs)
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
        )


def create_queue(sqs: Any, name: str, props: dict[str, Any], created: dict[str, str]) -> str:
    attributes = {}
    for key in ("MaximumMessageSize", "VisibilityTimeout", "MessageRetentionPeriod"):
        if isinstance(props.get(key), int | str) and str(props[key]).isdigit():
            attributes[key] = str(props[key])
    redrive = props.get("RedrivePolicy")
    if redrive:
        target = _ref_target(redrive.get("deadLetterTargetArn"))
        max_receive = redrive.get("maxReceiveCount")
        if not (isinstance(max_receive, int) or str(max_receive).isdigit()):
            max_receive = 3  # a template parameter: the local stack uses the parameter's default
        if target in created:
            arn = f"arn:aws:sqs:{REGION}:123456789012:{target}"
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": int(max_receive)}
            )
    url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


def _ref_target(value: Any) -> str | None:
    """The logical id behind `!GetAtt X.Arn` / `!Ref X` in whichever form the loader produced."""
    if isinstance(value, dict):
        for key in ("Fn::GetAtt", "Ref"):
            if key in value:
                inner = value[key]
                if isinstance(inner, list):
                    return str(inner[0])
                return str(inner).split(".")[0]
    return None


def parameter_default(template: dict[str, Any], name: str, fallback: Any) -> Any:
    return (template.get("Parameters") or {}).get(name, {}).get("Default", fallback)


# ---------------------------------------------------------------------------------------------------------
# API Gateway in front of the handler modules


@dataclass
class LambdaContext:
    """What Powertools and our handlers read from the Lambda context object."""

    function_name: str
    timeout_s: float
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


class FunctionPool:
    """Warm containers of one function: each concurrent invocation gets its own imported handler module."""

    def __init__(self, name: str, code_dir: Path, handler: str, timeout_s: float, memory_mb: int) -> None:
        self.name = name
        self._code_dir = code_dir
        self._module_name, _, self._attr = handler.rpartition(".")
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._idle: list[Callable[..., Any]] = []
        self._lock = threading.Lock()
        self._loaded = 0

    def _load(self) -> Callable[..., Any]:
        with self._lock:
            self._loaded += 1
            index = self._loaded
        path = self._code_dir / (self._module_name.replace(".", "/") + ".py")
        spec = importlib.util.spec_from_file_location(f"imagegw_local_{self.name}_{index}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        handler: Callable[..., Any] = getattr(module, self._attr)
        return handler

    def warm(self) -> None:
        handler = self._load()
        with self._lock:
            self._idle.append(handler)

    def invoke(self, event: dict[str, Any]) -> Any:
        with self._lock:
            handler = self._idle.pop() if self._idle else None
        if handler is None:
            handler = self._load()  # a cold start
        try:
            context = LambdaContext(self.name, self.timeout_s, self.memory_mb)
            return handler(event, context)
        finally:
            with self._lock:
                self._idle.append(handler)


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
    globals_fn = (template.get("Globals") or {}).get("Function") or {}
    routes: list[ApiRoute] = []
    pools: dict[str, FunctionPool] = {}
    for name, props in resources(template, "AWS::Serverless::Function").items():
        timeout = _number(props.get("Timeout", globals_fn.get("Timeout")), template, 30)
        memory = _number(props.get("MemorySize", globals_fn.get("MemorySize")), template, 1024)
        code_dir = root / str(props["CodeUri"])
        for event in (props.get("Events") or {}).values():
            if event.get("Type") != "Api":
                continue
            spec = event["Properties"]
            pool = pools.setdefault(
                name, FunctionPool(name, code_dir, props["Handler"], timeout, int(memory))
            )
            path = spec["Path"]
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
            integration_ms = _number(spec.get("TimeoutInMillis"), template, DEFAULT_API_TIMEOUT_MS)
            routes.append(
                ApiRoute(spec["Method"].upper(), path, re.compile(regex), pool, int(integration_ms))
            )
    binary_types: list[str] = []
    for props in resources(template, "AWS::Serverless::Api").values():
        binary_types += [str(t).replace("~1", "/") for t in props.get("BinaryMediaTypes") or []]
    return routes, binary_types


def _number(value: Any, template: dict[str, Any], fallback: float) -> float:
    if isinstance(value, dict) and "Ref" in value:
        value = parameter_default(template, value["Ref"], fallback)
    try:
        return float(value)
    except (TypeError, ValueError):
        return fallback


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
GATEWAY_DEFAULTS = {
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long"),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out"),
    "INTEGRATION_FAILURE": (504, "Internal server error"),
    "DEFAULT_5XX": (502, "Internal server error"),
}


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
        self.template = template or {}

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One request; like API Gateway, every answer carries `x-amzn-RequestId`, its own errors included."""
        request_id = str(uuid.uuid4())
        status, out_headers, payload = self._handle(method, raw_path, headers, body, request_id)
        if "x-amzn-ErrorType" in out_headers:  # API Gateway's own answer: its ResponseParameters headers
            out_headers.update(self.gateway_headers(out_headers["x-amzn-ErrorType"], status, headers))
        return status, {**out_headers, "x-amzn-RequestId": request_id}, payload

    def _handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes, request_id: str
    ) -> tuple[int, dict[str, str], bytes]:
        path = urlsplit(raw_path).path
        route = next((r for r in self.routes if r.match(method, path) is not None), None)
        if route is None:
            return self.gateway_error("MISSING_AUTHENTICATION_TOKEN")
        if len(body) > API_GATEWAY_PAYLOAD_LIMIT:
            return self.gateway_error("REQUEST_TOO_LARGE")
        event = to_proxy_event(method, raw_path, headers, body, self.binary_types, route, request_id)
        if len(json.dumps(event)) > LAMBDA_PAYLOAD_LIMIT:
            # Lambda refuses an invocation over its 6 MB payload limit before the function runs;
            # API Gateway reports an integration failure.
            return self.gateway_error("INTEGRATION_FAILURE")
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
            return self.gateway_error("INTEGRATION_TIMEOUT")
        result = outcome.get("result")
        if not isinstance(result, dict) or len(json.dumps(result)) > LAMBDA_PAYLOAD_LIMIT:
            return self.gateway_error("DEFAULT_5XX")
        raw_body = result.get("body") or ""
        payload = base64.b64decode(raw_body) if result.get("isBase64Encoded") else raw_body.encode("utf-8")
        out_headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        for key, values in (result.get("multiValueHeaders") or {}).items():
            out_headers[str(key)] = ", ".join(str(v) for v in values)
        return int(result.get("statusCode", 502)), out_headers, payload

    def gateway_error(self, response_type: str) -> tuple[int, dict[str, str], bytes]:
        status, message = GATEWAY_DEFAULTS[response_type]
        custom = self.gateway_responses.get(response_type) or self.gateway_responses.get(
            "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
        )
        body = json.dumps({"message": message})
        if custom:
            status = int(custom.get("StatusCode", status))
            rendered = (custom.get("ResponseTemplates") or {}).get("application/json")
            if rendered:
                body = str(rendered).replace("$context.error.messageString", json.dumps(message))
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": response_type}
        return status, headers, body.encode()

    def gateway_headers(self, response_type: str, status: int, request: dict[str, str]) -> dict[str, str]:
        """The template's ResponseParameters headers of a gateway response, for this request: static
        'values', method.request.header.NAME, and conditions on the parameters (CorsAllowOrigins is
        IMAGEGW_CORS_ALLOW_ORIGINS here, as `make dev` takes it)."""
        custom = self.gateway_responses.get(response_type) or self.gateway_responses.get(
            "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
        )
        wanted = ((custom or {}).get("ResponseParameters") or {}).get("Headers") or {}
        params = parameter_values(
            self.template, {"CorsAllowOrigins": os.environ.get("IMAGEGW_CORS_ALLOW_ORIGINS", "")}
        )
        lowered = {k.lower(): v for k, v in request.items()}
        out: dict[str, str] = {}
        for name, expression in wanted.items():
            value = evaluate(expression, self.template, params)
            if value is NO_VALUE or not isinstance(value, str):
                continue
            if len(value) >= 2 and value[0] == value[-1] == "'":
                out[name] = value[1:-1]
            elif value.lower().startswith("method.request.header."):
                found = lowered.get(value.split(".", 3)[3].lower())
                if found is not None:
                    out[name] = found
        return out


def gateway_responses(template: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for props in resources(template, "AWS::Serverless::Api").values():
        found.update(props.get("GatewayResponses") or {})
    return found


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

    def __getattr__(self, name: str) -> Any:
        # Any other method (TRACE, QUERY...) too: API Gateway answers it with its 404, never a 501 page.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)


# ---------------------------------------------------------------------------------------------------------
# Lambda's SQS event source mapping in front of the jobs worker


@dataclass
class QueueSubscription:
    """An SQS event of a function in the template: which queue feeds it, how many records at a time."""

    function_name: str
    queue: str  # the queue's logical id
    function: FunctionPool
    batch_size: int = 10
    report_batch_item_failures: bool = False


def sqs_subscriptions(template: dict[str, Any], root: Path) -> list[QueueSubscription]:
    globals_fn = (template.get("Globals") or {}).get("Function") or {}
    found = []
    for name, props in resources(template, "AWS::Serverless::Function").items():
        for event in (props.get("Events") or {}).values():
            if event.get("Type") != "SQS":
                continue
            spec = event.get("Properties") or {}
            queue = _ref_target(spec.get("Queue"))
            if queue is None:
                continue
            timeout = _number(props.get("Timeout", globals_fn.get("Timeout")), template, 30)
            memory = _number(props.get("MemorySize", globals_fn.get("MemorySize")), template, 1024)
            pool = FunctionPool(name, root / str(props["CodeUri"]), props["Handler"], timeout, int(memory))
            response_types = spec.get("FunctionResponseTypes") or []
            found.append(
                QueueSubscription(
                    function_name=name,
                    queue=queue,
                    function=pool,
                    batch_size=int(_number(spec.get("BatchSize"), template, 10)),
                    report_batch_item_failures="ReportBatchItemFailures" in response_types,
                )
            )
    return found


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source passes to the function, from ReceiveMessage's messages."""
    records = []
    for message in messages:
        attributes = {k: str(v) for k, v in (message.get("Attributes") or {}).items()}
        message_attributes = {}
        for name, value in (message.get("MessageAttributes") or {}).items():
            item: dict[str, Any] = {
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value.get("DataType", "String"),
            }
            if "StringValue" in value:
                item["stringValue"] = value["StringValue"]
            if "BinaryValue" in value:
                item["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
            message_attributes[name] = item
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message.get("Body", ""),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def failed_message_ids(result: Any, message_ids: list[str], report_batch_item_failures: bool) -> set[str]:
    """Which messages stay on the queue after an invocation, as Lambda decides it."""
    if not report_batch_item_failures:
        return set()
    if result is None:
        return set()
    failures = result.get("batchItemFailures") if isinstance(result, dict) else "invalid"
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(message_ids)
    failed = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if identifier not in message_ids:
            return set(message_ids)  # an invalid response fails the whole batch
        failed.add(identifier)
    return failed


class SqsEventSource:
    """Lambda's SQS event source mapping, locally: long-poll a batch, invoke the function with the SQS
    event, delete the messages that succeeded. The rest (listed in `batchItemFailures`, or the whole batch
    when the function raised) stay on the queue: they come back after the visibility timeout, and move to
    the dead-letter queue after the redrive policy's maxReceiveCount."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        subscription: QueueSubscription,
        *,
        pollers: int = 2,
        quiet: bool = False,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.subscription = subscription
        self.queue_arn: str = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.quiet = quiet
        self._pollers = pollers
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> SqsEventSource:
        for index in range(self._pollers):
            name = f"sqs:{self.subscription.queue}->{self.subscription.function_name}:{index}"
            thread = threading.Thread(target=self._run, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once(wait_seconds=1)
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._log(f"polling {self.subscription.queue} failed: {exc!r}")
                self._stop.wait(1)

    def poll_once(self, wait_seconds: int = 0) -> int:
        """One receive-invoke-delete cycle; the number of messages received."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(10, self.subscription.batch_size),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        ids = [m["MessageId"] for m in messages]
        try:
            result = self.subscription.function.invoke(sqs_event(messages, self.queue_arn))
            failed = failed_message_ids(result, ids, self.subscription.report_batch_item_failures)
        except Exception as exc:  # the invocation failed: every message of the batch is retried
            self._log(f"{self.subscription.function_name} failed on a batch of {len(ids)}: {exc!r}")
            failed = set(ids)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(messages)

    def _log(self, text: str) -> None:
        if not self.quiet:
            print(f"imagegw local: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# The whole stack


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    port: int = 3000
    api_key: str | None = None  # a fixed dev key; a random one when None
    upstream_base_url: str | None = None  # an OpenAI-compatible service instead of the emulator
    upstream_api_key: str | None = None
    quiet: bool = False
    root: Path | None = None
    state_dir: Path | None = None  # where local.json is written (default: <root>/.imagegw)
    extra_env: dict[str, str] = field(default_factory=dict)


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.root = config.root or project_root()
        self.api_key = config.api_key or ("sk-dev-" + secrets.token_urlsafe(24))
        self._stoppers: list[Callable[[], None]] = []
        self.emulator: Any = None
        self.resources: LocalResources | None = None
        self.http: ThreadingHTTPServer | None = None
        self.pools: dict[str, FunctionPool] = {}

    @property
    def api_url(self) -> str:
        assert self.http is not None
        host, port = self.http.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> LocalStack:
        from moto.server import ThreadedMotoServer

        from imagegw_dev.emulator import Emulator

        template = load_template(self.root / "template.yaml")
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-call access log drowns ours
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        self._stoppers.append(moto.stop)
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ.update(aws_env(endpoint))

        if self.config.upstream_base_url:
            upstream_url, upstream_key = self.config.upstream_base_url, self.config.upstream_api_key or ""
        else:
            upstream_key = "sk-emulator-" + secrets.token_hex(8)
            self.emulator = Emulator(api_key=upstream_key).start()
            self._stoppers.append(self.emulator.stop)
            upstream_url = self.emulator.base_url + "/v1"

        from imagegw_dev.local_routes import local_routes

        bedrock_url = self.emulator.base_url if self.emulator is not None else None
        routes_doc, credentials = local_routes(upstream_url, upstream_key, bedrock_url)
        self.resources = create_resources(template, endpoint, credentials)
        state_dir = self.config.state_dir or (self.root / ".imagegw")
        state_dir.mkdir(parents=True, exist_ok=True)
        routes_file = state_dir / "routes.local.json"
        routes_file.write_text(json.dumps(routes_doc, indent=2))
        os.environ.update(self.resources.env())
        os.environ["IMAGEGW_ROUTES_SOURCE"] = str(routes_file)
        os.environ.update(self.config.extra_env)

        self._seed_key()
        routes, binary_types = api_routes(template, self.root)
        gateway = ApiGateway(routes, binary_types, gateway_responses(template), template)
        self.pools = {r.function.name: r.function for r in routes}
        for pool in self.pools.values():
            pool.warm()  # import once up front, as a provisioned container would

        handler = type("Handler", (_HttpHandler,), {"gateway": gateway, "quiet": self.config.quiet})
        self.http = ThreadingHTTPServer((self.config.host, self.config.port), handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self._stoppers.append(self.http.server_close)
        self._stoppers.append(self.http.shutdown)
        self._start_event_sources(template)
        self._write_state(state_dir)
        return self

    def _start_event_sources(self, template: dict[str, Any]) -> None:
        """Run the functions the template subscribes to SQS queues (the jobs worker) against moto's SQS."""

        assert self.resources is not None
        sqs = moto_session().client("sqs", endpoint_url=self.resources.endpoint_url)
        for subscription in sqs_subscriptions(template, self.root):
            queue_url = self.resources.queues.get(subscription.queue)
            if queue_url is None:
                continue
            subscription.function.warm()
            source = SqsEventSource(sqs, queue_url, subscription, quiet=self.config.quiet).start()
            self._stoppers.append(source.stop)

    def function_pool(self, name: str) -> FunctionPool:
        """The warm containers of one API function, to invoke it with an event directly."""
        return self.pools[name]

    def _seed_key(self) -> None:
        import boto3

        from imagegw.accounts.keys import KeyStore

        assert self.resources is not None
        table = boto3.resource("dynamodb").Table(self.resources.tables["KeysTable"])
        KeyStore(table).import_key(self.api_key, name="local development key", owner="make dev")

    def _write_state(self, state_dir: Path) -> None:
        assert self.resources is not None
        state = {
            "endpoint_url": self.resources.endpoint_url,
            "region": REGION,
            "tables": {
                "keys": self.resources.tables["KeysTable"],
                "usage": self.resources.tables["UsageTable"],
                "jobs": self.resources.tables["JobsTable"],
                "idempotency": self.resources.tables["IdempotencyTable"],
            },
            "bucket": self.resources.bucket,
            "queues": self.resources.queues,
            "api_url": self.api_url,
            "emulator_url": self.emulator.base_url if self.emulator else None,
        }
        (state_dir / "local.json").write_text(json.dumps(state, indent=2))

    def stop(self) -> None:
        while self._stoppers:
            stopper = self._stoppers.pop()
            with contextlib.suppress(Exception):  # best effort on shutdown
                stopper()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
