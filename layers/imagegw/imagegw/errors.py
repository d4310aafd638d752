"""Domain errors and the one mapper that turns them into OpenAI-format error responses.

Code raises these with the OpenAI `type`, `code` and `param`; nothing branches on message text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# An error names what the client sent (a parameter's name, a job id): never at any length. An unknown key
# of 3 MB echoed in both `message` and `param` made a response over Lambda's 6 MB limit (a 502).
MAX_MESSAGE_CHARS = 2000
MAX_PARAM_CHARS = 200


class ApiError(Exception):
    status = 500
    type = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        message = _bounded(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        self.param = _bounded(param, MAX_PARAM_CHARS) if param is not None else None
        self.code = code if code is not None else self.default_code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(ApiError):
    status = 400
    type = "invalid_request_error"


class InvalidApiKey(ApiError):
    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class ModelNotAllowed(ApiError):
    status = 403
    type = "permission_error"
    default_code = "model_not_allowed"


class NotFound(ApiError):
    status = 404
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.", param="model"
        )


class Gone(ApiError):
    """What was asked for existed but has expired (a job whose images the bucket no longer keeps)."""

    status = 410
    type = "invalid_request_error"


class RequestTooLarge(ApiError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class RateLimited(ApiError):
    status = 429
    type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"retry-after": str(max(1, retry_after))})


class QuotaExceeded(ApiError):
    status = 429
    type = "insufficient_quota"
    default_code = "insufficient_quota"


class UpstreamError(ApiError):
    """The upstream failed after retries and failover; the gateway already retried.

    `maybe_billed`: some attempt was sent and not answered with an error (it timed out or the connection
    dropped after the request went out, or the answer was unusable): the upstream may have billed it, so
    the ledger rule charges the reservation instead of refunding it.
    """

    status = 502
    type = "server_error"
    default_code = "upstream_error"

    def __init__(
        self,
        message: str = "The upstream image service failed. Please try again later.",
        *,
        maybe_billed: bool = False,
        **kw: Any,
    ):
        kw.setdefault("headers", {"x-should-retry": "false"})
        super().__init__(message, **kw)
        self.maybe_billed = maybe_billed


class UpstreamTimeout(UpstreamError):
    status = 504
    default_code = "timeout"

    def __init__(self, message: str = "The upstream image service did not answer in time.", **kw: Any):
        super().__init__(message, **kw)


class ServiceUnavailable(ApiError):
    status = 503
    type = "server_error"
    default_code = "service_unavailable"


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class ErrorResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def to_error_response(exc: BaseException) -> ErrorResponse:
    """The one mapper: any exception becomes an OpenAI error body; unknown ones become a bare 500."""
    if isinstance(exc, ApiError):
        return ErrorResponse(exc.status, exc.body(), exc.headers)
    internal = ApiError("The server had an error while processing your request. Sorry about that!")
    return ErrorResponse(500, internal.body(), {})
