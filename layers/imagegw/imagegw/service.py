"""The pipeline: authenticate, parse, validate, admit, fetch image URLs, upstream, respond, settle.

Nothing costly happens before admission (no image fetch, no S3 write, no queue message), and every
entry point (sync, `Prefer: respond-async`, the SQS worker) is admitted by the same `Accounts.admit`.
Settlement follows the ledger rule (`imagegw.accounts.admission.ledger_rule`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from imagegw.accounts.admission import Accounts, Admission, Credential, Outcome
from imagegw.delivery.render import Delivery, deliver
from imagegw.delivery.storage import ImageStore
from imagegw.domain import (
    ApiResponse,
    Caller,
    HttpRequest,
    ImageRequest,
    Operation,
    RawRequest,
    UpstreamResult,
)
from imagegw.errors import ApiError, NotFound, RequestTooLarge, ServiceUnavailable, UpstreamTimeout
from imagegw.observability import logger
from imagegw.request.catalog import Catalog
from imagegw.request.image_urls import resolve_image_urls
from imagegw.request.parsing import parse_request
from imagegw.request.validation import awaits_fetch, validate
from imagegw.settings import Settings

# Stop upstream work this long before the Lambda itself would be killed, to answer a clean 504.
LAMBDA_SAFETY_MARGIN_S = 1.5


class Upstream(Protocol):
    """What the pipeline needs of the upstream side (imagegw.upstream.router.Router)."""

    def call(self, request: ImageRequest, *, deadline: float) -> UpstreamResult: ...


class Jobs(Protocol):
    """What the pipeline needs of the job queue (imagegw.jobs.submission.AsyncJobs): the jobs worker runs
    this pipeline, so the pipeline reaches the jobs side only through this."""

    def new_id(self) -> str: ...

    def check_submittable(self, request: ImageRequest) -> None: ...

    def submit(self, admission: Admission, raw: RawRequest, http: HttpRequest) -> ApiResponse: ...

    def keep(self, job_id: str, caller: Caller, request: ImageRequest, delivery: Delivery) -> None: ...

    def status(self, caller: Caller, job_id: str) -> ApiResponse: ...


# Settles a failed job attempt only when it returns True (the jobs worker keeps the hold for a retry).
SettleFailure = Callable[[BaseException, Outcome], bool]


@dataclass
class ImageService:
    settings: Settings
    catalog: Catalog
    accounts: Accounts
    upstream: Upstream
    store: ImageStore
    clock: Callable[[], float] = time.time
    jobs: Jobs | None = None  # `Prefer: respond-async` and GET /v1/images/jobs/{id}

    def handle(self, operation: Operation, http: HttpRequest, remaining_ms: Callable[[], int]) -> ApiResponse:
        authorization = http.authorization
        credential = self.accounts.credential(authorization)  # 401 for a missing header: no AWS call
        try:
            raw = parse_request(operation, http)
            request = validate(raw, self.catalog, awaiting_fetch=True)
        except ApiError:
            self.accounts.authenticate(authorization)  # a bad key is told 401 before its body's 400
            raise
        logger.append_keys(model=request.model, operation=operation)
        if http.respond_async:
            return self._submit_job(credential, raw, request, http)
        deadline = time.monotonic() + min(
            self.settings.sync_deadline_seconds, remaining_ms() / 1000 - LAMBDA_SAFETY_MARGIN_S
        )
        admission = self.accounts.admit(credential, request, http.request_id)
        logger.append_keys(key=admission.caller.display)
        return self.execute(admission, raw, deadline).response

    def execute(
        self,
        admission: Admission,
        raw: RawRequest,
        deadline: float,
        *,
        also: Callable[[Delivery], Sequence[dict[str, Any]]] | None = None,
        settle_failure: SettleFailure | None = None,
    ) -> Delivery:
        """Fetch, call the upstream, answer; settle by the ledger rule. `also` (the jobs worker): writes
        that must happen with the settlement, in its transaction (strict: an error is raised)."""
        started = time.monotonic()
        result: UpstreamResult | None = None
        try:
            request = self._fetched(admission, raw)
            if deadline <= time.monotonic():
                raise UpstreamTimeout("The request ran out of time before the upstream could be called.")
            result = self.upstream.call(request, deadline=deadline)
            delivery = self._deliver(request, result, admission.request_id)
        except BaseException as exc:
            outcome = _failure_outcome(exc, result, started)
            if settle_failure is None or settle_failure(exc, outcome):
                self.accounts.settle(admission, outcome)
            if result is not None and isinstance(exc, RequestTooLarge):
                raise self._keep(admission, result, exc) from None
            raise
        outcome = Outcome(200, _ms_since(started), result)
        extra = list(also(delivery)) if also is not None else []
        self.accounts.settle(admission, outcome, also=extra, strict=also is not None)
        logger.append_keys(upstream_route=result.route)
        return delivery

    def _fetched(self, admission: Admission, raw: RawRequest) -> ImageRequest:
        """Fetch the request's image URLs (only now, after admission) and check their bytes."""
        if not awaits_fetch(raw):
            return admission.request
        resolve_image_urls(raw, catalog=self.catalog, max_total_bytes=self.settings.max_request_input_bytes)
        checked = validate(raw, self.catalog)
        # The parameters were validated before admission (and may carry the worker's url override):
        # what is new is the images.
        admission.request = replace(checked, params=admission.request.params)
        return admission.request

    def _deliver(self, request: ImageRequest, result: UpstreamResult, request_id: str) -> Delivery:
        return deliver(
            request,
            result,
            store=self.store,
            request_id=request_id,
            created=int(self.clock()),
            gpt_model=self.catalog.get(request.model).gpt,
        )

    def _keep(self, admission: Admission, result: UpstreamResult, error: RequestTooLarge) -> ApiError:
        """Images too large to answer are still the client's (they are charged): store them as a finished
        job and name it in the 413."""
        if self.jobs is None:
            return error
        request = admission.request
        stored_as_urls = replace(
            request, params={**request.params, "response_format": "url", "stream": False}
        )
        job_id = self.jobs.new_id()
        try:
            delivery = self._deliver(stored_as_urls, result, job_id)
            self.jobs.keep(job_id, admission.caller, stored_as_urls, delivery)
        except Exception:
            logger.exception("could not keep the images of a too-large answer")
            return error
        return RequestTooLarge(
            f"{error.message} The images were made (and charged) and are kept as job {job_id}: "
            f"GET /v1/images/jobs/{job_id} with this API key returns their URLs.",
            param=error.param,
            code=error.code,
            headers={**error.headers, "x-imagegw-job-id": job_id},
        )

    def _submit_job(
        self, credential: Credential, raw: RawRequest, request: ImageRequest, http: HttpRequest
    ) -> ApiResponse:
        """Admit the job now (429/403 at once, nothing written), then queue it (imagegw.jobs.submission).
        Its hold stays on the key until the worker settles it; a job that is not queued is refunded."""
        if self.jobs is None:
            raise ServiceUnavailable("Asynchronous jobs are not available on this gateway.")
        self.jobs.check_submittable(request)
        admission = self.accounts.admit(credential, request, self.jobs.new_id(), job=True)
        started = time.monotonic()
        try:
            self._fetched(admission, raw)
            return self.jobs.submit(admission, raw, http)
        except BaseException as exc:
            self.accounts.settle(admission, _failure_outcome(exc, None, started))
            raise

    def job_status(self, http: HttpRequest, job_id: str) -> ApiResponse:
        """GET /v1/images/jobs/{job_id}: only the key that submitted the job may read it."""
        caller = self.accounts.authenticate(http.authorization)
        if self.jobs is None:
            raise NotFound(f"No job found with id '{job_id}'.", param="job_id", code="job_not_found")
        return self.jobs.status(caller, job_id)


def _failure_outcome(exc: BaseException, result: UpstreamResult | None, started: float) -> Outcome:
    status = exc.status if isinstance(exc, ApiError) else 500
    code = exc.code if isinstance(exc, ApiError) else "internal_error"
    maybe_billed = bool(getattr(exc, "maybe_billed", False))
    return Outcome(status, _ms_since(started), result, code, maybe_billed=maybe_billed)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
