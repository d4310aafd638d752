"""HttpRequest objects as the API layer hands them to the service: body already decoded to bytes; and
the API Gateway proxy events a deployed handler receives (`api_event`).

Multipart bodies are built with requests_toolbelt's MultipartEncoder the way the openai SDK sends them:
text fields without a filename, files with a filename and a (sometimes useless) Content-Type.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from requests_toolbelt import MultipartEncoder

from imagegw.domain import HttpRequest, Operation

FilePart = tuple[str, bytes, str]  # (filename, bytes, content type)
Field = tuple[str, str | FilePart]


def http(operation: Operation, body: bytes, content_type: str | None) -> HttpRequest:
    headers = {"authorization": "Bearer sk-test"}
    if content_type is not None:
        headers["content-type"] = content_type
    return HttpRequest("POST", f"/v1/images/{operation}", headers, body, "req-test")


def json_request(
    operation: Operation, body: Any, *, content_type: str | None = "application/json"
) -> HttpRequest:
    """`body` as a dict/list/scalar (serialised), or str/bytes sent verbatim."""
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        data = json.dumps(body).encode("utf-8")
    return http(operation, data, content_type)


def multipart_request(operation: Operation, fields: list[Field] | dict[str, Any]) -> HttpRequest:
    """Fields as (name, value) pairs; a value is text, or (filename, bytes, content type) for a file."""
    items = list(fields.items()) if isinstance(fields, dict) else list(fields)
    encoder = MultipartEncoder(fields=[(name, _part(value)) for name, value in items])
    return http(operation, encoder.to_string(), encoder.content_type)


def _part(value: Any) -> Any:
    if isinstance(value, (int, bool)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


def file(data: bytes, filename: str = "image.png", content_type: str = "image/png") -> FilePart:
    return (filename, data, content_type)


def api_event(method: str, path: str, raw_key: str, body: Any = None, **headers: str) -> dict[str, Any]:
    """An API Gateway (REST, proxy) event for `path` under the `api` stage, as the template's API hands it
    to a deployed handler; a GET's last path segment is the `job_id` path parameter."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {
            "Host": "abc123.execute-api.us-east-1.amazonaws.com",
            "Authorization": f"Bearer {raw_key}",
            "Content-Type": "application/json",
            **headers,
        },
        "pathParameters": {"job_id": path.rsplit("/", 1)[-1]} if method == "GET" else None,
        "requestContext": {"requestId": str(uuid.uuid4()), "path": "/api" + path, "stage": "api"},
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }
