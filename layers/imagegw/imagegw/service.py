"""The pipeline: authenticate -> parse -> validate -> admit -> upstream -> store/respond -> settle."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from imagegw.accounts.admission import Accounts, Outcome
from imagegw.delivery.render import Delivery, deliver
from imagegw.delivery.storage import ImageStore
from imagegw.domain import ApiResponse, Caller, HttpRequest, ImageRequest, Operation, UpstreamResult
from imagegw.errors import ApiError, NotFound, ServiceUnavailable, UpstreamTimeout
from imagegw.jobs.submission import prefers_async
from imagegw.observability import logger
from imagegw.request.catalog import Catalog
from imagegw.request.image_urls import resolve_image_urls
from imagegw.request.parsing import parse_request
from imagegw.request.validation import validate
from imagegw.settings import Settings

if TYPE_CHECKING:
    from imagegw.domain import RawRequest
    from imagegw.jobs.submission import AsyncJobs

# Stop upstream work this long before the Lambda itself would be killed, to answer a clean 504.
LAMBDA_SAFETY_MARGIN_S = 1.5


class Upstream(Protocol):
    """What the pipeline needs of the upstream side (imagegw.upstream.router.Router)."""

    def call(self, request: ImageRequest, *, deadline: float) -> UpstreamResult: ...


@dataclass
class ImageService:
    settings: Settings
    catalog: Catalog
    accounts: Accounts
    upstream: Upstream
    store: ImageStore
    clock: Callable[[], float] = time.time
    jobs: AsyncJobs | None = None  # `Prefer: respond-async` and GET /v1/images/jobs/{id}

    def handle(self, operation: Operation, http: HttpRequest, remaining_ms: Callable[[], int]) -> ApiResponse:
        caller = self.accounts.authenticate(http.headers.get("authorization"))
        raw = resolve_image_urls(
            parse_request(operation, http),
            catalog=self.catalog,
            max_total_bytes=self.settings.max_request_input_bytes,
        )
        request = validate(raw, self.catalog)
        logger.append_keys(model=request.model, operation=operation, key=caller.display)
        if prefers_async(http.headers):
            # Refuse a model the key may not use now, not minutes later in the worker; quota and rate
            # limits are taken when the job runs.
            self.accounts.check_model(caller, request.model, http.request_id)
            return self._submit_job(caller, raw, request, http)
        deadline = time.monotonic() + min(
            self.settings.sync_deadline_seconds, remaining_ms() / 1000 - LAMBDA_SAFETY_MARGIN_S
        )
        return self.execute(caller, request, http.request_id, deadline).response

    def execute(self, caller: Caller, request: ImageRequest, request_id: str, deadline: float) -> Delivery:
        """Admit, call the upstream, answer; quota is refunded and stored objects removed on any failure."""
        started = time.monotonic()
        admission = self.accounts.admit(caller, request, request_id)
        result: UpstreamResult | None = None
        try:
            if deadline <= time.monotonic():
                raise UpstreamTimeout("The request ran out of time before the upstream could be called.")
            result = self.upstream.call(request, deadline=deadline)
            delivery = deliver(
                request,
                result,
                store=self.store,
                request_id=request_id,
                created=int(self.clock()),
                gpt_model=self.catalog.get(request.model).gpt,
            )
        except BaseException as exc:
            status = exc.status if isinstance(exc, ApiError) else 500
            code = exc.code if isinstance(exc, ApiError) else "internal_error"
            self.accounts.settle(admission, Outcome(status, _ms_since(started), None, code))
            raise
        self.accounts.settle(admission, Outcome(200, _ms_since(started), result))
        logger.append_keys(upstream_route=result.route)
        return delivery

    def _submit_job(
        self, caller: Caller, raw: RawRequest, request: ImageRequest, http: HttpRequest
    ) -> ApiResponse:
        """Queue the validated request as a job and answer 202 (imagegw.jobs.submission)."""
        if self.jobs is None:
            raise ServiceUnavailable("Asynchronous jobs are not available on this gateway.")
        return self.jobs.submit(caller, raw, request, http)

    def job_status(self, http: HttpRequest, job_id: str) -> ApiResponse:
        """GET /v1/images/jobs/{job_id}: only the key that submitted the job may read it."""
        caller = self.accounts.authenticate(http.headers.get("authorization"))
        if self.jobs is None:
            raise NotFound(f"No job found with id '{job_id}'.", param="job_id", code="job_not_found")
        return self.jobs.status(caller, job_id)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
