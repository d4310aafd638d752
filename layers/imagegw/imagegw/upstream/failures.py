"""What a provider raises when an upstream call fails, classified for the router.

These never reach the client: the router turns them into the domain errors of `imagegw.errors`
(`InvalidRequest`, `UpstreamError`, `UpstreamTimeout`). Their messages are written by us, never copied
from an exception that might carry a URL, a host or a key.

| class              | the router                                                     | counts for cool-down |
|--------------------|----------------------------------------------------------------|----------------------|
| TransientFailure   | retries on the same route (backoff, retry-after), then fails over | yes             |
| RouteFault         | fails over at once (no retry on the same route)                | yes                  |
| UpstreamMalformed  | a RouteFault: a 200 whose body is not JSON or not an image     | yes                  |
| UpstreamRejected   | answers the client with the upstream's 4xx (scrubbed); no retry | no (client-caused)  |
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class UpstreamFailure(Exception):
    """Base: `status` is the upstream HTTP status when there was one.

    `sent`: the request reached the upstream and no error answer came back (a read timeout, a connection
    dropped after sending, a 200 whose body is unusable): the upstream may have billed this attempt. False
    when nothing was sent (connection refused, connect timeout, no time left) or the upstream answered an
    error status. The router passes it on as `UpstreamError.maybe_billed` (the ledger rule).
    """

    sent_by_default = False

    def __init__(self, message: str, *, status: int | None = None, sent: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.sent = self.sent_by_default if sent is None else sent


class TransientFailure(UpstreamFailure):
    """Connection errors, timeouts, 408/409/429 and 5xx: worth another attempt."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        timed_out: bool = False,
        retryable: bool = True,
        sent: bool | None = None,
    ) -> None:
        super().__init__(message, status=status, sent=sent)
        self.retry_after = retry_after
        self.timed_out = timed_out
        # False when the upstream said `x-should-retry: false`: fail over, but do not retry this route.
        self.retryable = retryable


class RouteFault(UpstreamFailure):
    """The route itself is unusable for now: bad credentials (401/403), unknown model (404), a missing
    credential, a quota that retrying will not fix. Fail over without retrying this route."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        credentials_suspect: bool = False,
        sent: bool | None = None,
    ) -> None:
        super().__init__(message, status=status, sent=sent)
        self.credentials_suspect = credentials_suspect


class UpstreamMalformed(RouteFault):
    """A success status whose body is not what the API promises (bad JSON, truncated base64, no image)."""

    sent_by_default = True  # the upstream answered success: it may have billed the generation


class UpstreamRejected(UpstreamFailure):
    """The upstream refused the request itself (400/413/422): the client's to fix; passed through."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.param = param
        self.code = code
        self.type = type


# Timeouts as the HTTP and AWS clients name them when they wrap them in their own exception types.
TIMEOUT_ERROR_NAMES = ("ReadTimeoutError", "ConnectTimeoutError")


def chain_of(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception behind it, once each: causes, contexts, and the exceptions clients keep in
    their arguments or `reason` (urllib3's wrappers)."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend([*item.args, item.__cause__, item.__context__, getattr(item, "reason", None)])


def is_timeout(exc: BaseException) -> bool:
    return any(
        isinstance(item, TimeoutError) or type(item).__name__ in TIMEOUT_ERROR_NAMES for item in chain_of(exc)
    )
