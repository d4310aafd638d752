"""The jobs worker: one SQS record at a time, under Powertools batch processing (partial batch responses).

For each record:
- a malformed message (not JSON, wrong version, no job id...) fails its job when a job id is known and is
  reported processed: it never blocks the batch and is never retried;
- the job runs at most once per job id (Powertools idempotency on `job_id`, plus the job record: a
  succeeded job is never run again), so a message delivered twice makes one upstream call, one charge
  and one result;
- the message's request goes through the SAME `parse_request` / `validate` path as an HTTP request (the
  worker rebuilds the HTTP body: JSON, or multipart with the input images read from S3);
- an error the caller caused (4xx) fails the job with the error body the HTTP API would give; the record
  is processed (no retry);
- anything else (upstream failures and timeouts, 5xx, a per-minute rate limit, AWS errors) is recorded on
  the job and raised, so SQS delivers the message again; at `ApproximateReceiveCount >=
  jobs_max_receive_count` (the queue's maxReceiveCount) the job is marked failed with that last error,
  and SQS moves the message to the dead-letter queue.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from botocore.exceptions import ClientError

from imagegw.delivery.outputs import ImagesResponse
from imagegw.delivery.render import Delivery
from imagegw.delivery.storage import CONTENT_TYPES
from imagegw.domain import HttpRequest, ImageFile, ImageRequest, RawRequest
from imagegw.errors import ApiError, InvalidRequest, RateLimited, RequestTooLarge
from imagegw.images import sniff_format
from imagegw.jobs.messages import VERSION, InputRef, JobMessage, MalformedMessage, parse_body, parse_message
from imagegw.jobs.store import FAILED, SUCCEEDED, CallerLookup, JobConflict, JobStore
from imagegw.jobs.submission import asked_response_format, error_of, job_view
from imagegw.observability import logger, metrics
from imagegw.request.image_urls import resolve_image_urls
from imagegw.request.parsing import parse_request
from imagegw.request.validation import validate
from imagegw.service import LAMBDA_SAFETY_MARGIN_S, ImageService

IDEMPOTENCY_KEY_PREFIX = "imagegw-job"
# An input image larger than this is refused before it is read (the largest upstream limit is 50 MB).
MAX_INPUT_BYTES = 64 * 1024 * 1024
# Without a Lambda context (tests, scripts) a job gets this long.
DEFAULT_REMAINING_MS = 900_000
_UNREADABLE = {"NoSuchKey", "NoSuchBucket", "AccessDenied", "404", "403", "InvalidObjectState"}


def is_final_error(exc: BaseException) -> bool:
    """Errors the caller caused (4xx) end the job; a per-minute rate limit and everything else is retried."""
    return isinstance(exc, ApiError) and 400 <= exc.status < 500 and not isinstance(exc, RateLimited)


def is_final_record(record: dict[str, Any]) -> bool:
    """A succeeded job, or one failed for the caller's fault, is never run again (a 5xx failure is: a DLQ
    redrive runs the job once more)."""
    if record.get("status") == SUCCEEDED:
        return True
    if record.get("status") != FAILED:
        return False
    error = record.get("error") or {}
    return 400 <= int(error.get("status", 500)) < 500 and error.get("code") != RateLimited.default_code


@dataclass
class JobWorker:
    service: ImageService
    jobs: JobStore
    callers: CallerLookup
    s3_client: Any
    bucket: str
    sqs_client: Any
    persistence_store: BasePersistenceLayer
    max_receive_count: int = 3
    idempotency_expires_seconds: int = 24 * 3600
    _config: IdempotencyConfig = field(init=False, repr=False)
    _run_once: Callable[..., dict[str, Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._config = IdempotencyConfig(
            event_key_jmespath="job_id",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=self.idempotency_expires_seconds,
        )
        self._run_once = idempotent_function(
            data_keyword_argument="job",
            persistence_store=self.persistence_store,
            config=self._config,
            key_prefix=IDEMPOTENCY_KEY_PREFIX,
        )(self._run)

    # ----- the record handler BatchProcessor calls -------------------------------------------------

    def process_record(self, record: SQSRecord, lambda_context: Any = None) -> dict[str, Any]:
        """Returns when the record is done with (processed); raises to have SQS deliver it again."""
        receive_count = int(record.attributes.approximate_receive_count or 1)
        try:
            message = parse_body(record.body)
        except MalformedMessage as exc:
            return self._reject(exc, record.message_id)
        logger.append_keys(job_id=message.job_id)
        try:
            existing = self._claim(message)
            if existing is not None and is_final_record(existing):
                logger.info("job already finished: message dropped", extra={"status": existing["status"]})
                return {"job_id": message.job_id, "status": existing["status"]}
            if lambda_context is not None:
                self._config.register_lambda_context(lambda_context)
            remaining: Callable[[], int] = (
                lambda_context.get_remaining_time_in_millis
                if lambda_context
                else lambda: DEFAULT_REMAINING_MS
            )
            return self._run_once(job=message.to_json(), receive_count=receive_count, remaining_ms=remaining)
        except JobConflict:
            logger.warning("the job id belongs to another caller's job: message dropped")
            return {"job_id": message.job_id, "status": "conflict"}
        finally:
            logger.remove_keys(["job_id"])

    def _claim(self, message: JobMessage) -> dict[str, Any] | None:
        """The job's record (created for a message sent straight to the queue); JobConflict if not ours."""
        existing = self.jobs.get(message.job_id)
        if existing is None:
            model = message.request.get("model")
            try:
                self.jobs.create(
                    job_id=message.job_id,
                    key_id=message.key_id,
                    operation=message.operation,
                    model=model if isinstance(model, str) else "",
                    source="sqs",
                )
                return None
            except JobConflict:
                existing = self.jobs.get(message.job_id)
        if existing is not None and existing.get("key_id") != message.key_id:
            raise JobConflict(message.job_id)
        return existing

    def _reject(self, exc: MalformedMessage, message_id: str) -> dict[str, Any]:
        logger.warning(
            "malformed job message",
            extra={"message_id": message_id, "job_id": exc.job_id, "reason": exc.message},
        )
        metrics.add_metric(name="JobMessagesMalformed", unit="Count", value=1)
        recorded = False
        if exc.job_id:
            recorded = self.jobs.record_malformed(exc.job_id, exc.key_id, error_of(exc))
        return {"job_id": exc.job_id, "status": "failed" if recorded else "dropped"}

    # ----- one job, at most once per job id ----------------------------------------------------------

    def _run(
        self, *, job: dict[str, Any], receive_count: int, remaining_ms: Callable[[], int]
    ) -> dict[str, Any]:
        message = parse_message(job)
        job_id = message.job_id
        try:
            caller = self.callers.caller(message.key_id)
            request = self._validated(message)
            asked = asked_response_format(request, self.service.catalog)
            request.params["response_format"] = "url"  # results always go to S3 (docs/jobs.md)
            self.jobs.start(
                job_id, message.key_id, attempt=receive_count, model=request.model, response_format=asked
            )
            deadline = time.monotonic() + remaining_ms() / 1000 - LAMBDA_SAFETY_MARGIN_S
            result = job_result(self.service.execute(caller, request, job_id, deadline))
        except JobConflict:
            logger.info("job finished elsewhere while this attempt started")
            return {"job_id": job_id, "status": "skipped"}
        except Exception as exc:
            error = error_of(exc)
            if not isinstance(exc, ApiError):
                logger.exception("unexpected error in a job")
            if is_final_error(exc):
                logger.info("job failed", extra={"status": error["status"], "code": error.get("code")})
                self._finish(message, lambda: self.jobs.fail(job_id, error), "JobsFailed")
                return {"job_id": job_id, "status": FAILED}
            if receive_count >= self.max_receive_count:
                logger.warning("job failed on its last attempt", extra={"attempt": receive_count})
                self._finish(message, lambda: self.jobs.fail(job_id, error), "JobsFailed")
            else:
                logger.warning("job attempt failed; SQS will retry", extra={"attempt": receive_count})
                metrics.add_metric(name="JobAttemptsFailed", unit="Count", value=1)
                with contextlib.suppress(JobConflict):
                    self.jobs.retry_later(job_id, error)
            raise
        self._finish(message, lambda: self.jobs.succeed(job_id, result), "JobsSucceeded")
        return {"job_id": job_id, "status": SUCCEEDED}

    def _finish(self, message: JobMessage, write: Callable[[], None], metric: str) -> None:
        try:
            write()
        except JobConflict:
            logger.info("job record already final")
            return
        metrics.add_metric(name=metric, unit="Count", value=1)
        if message.reply_queue_url:
            self._announce(message)

    def _announce(self, message: JobMessage) -> None:
        """Best effort: the job record is the source of truth, a lost announcement loses nothing."""
        try:
            record = self.jobs.get(message.job_id)
            if record is None:
                return
            body = {"version": VERSION, **job_view(record, self.service.store).to_dict()}
            self.sqs_client.send_message(QueueUrl=message.reply_queue_url, MessageBody=json.dumps(body))
        except Exception:
            logger.exception("could not announce the job's result to its reply queue")

    # ----- the request, rebuilt as the HTTP API would have received it --------------------------------

    def _validated(self, message: JobMessage) -> ImageRequest:
        """The message's request through the same parse/validate path as an HTTP request.

        Without inputs the request is the JSON body the HTTP API would get (`parse_request`, image URLs
        fetched, `validate`). With inputs it is what the parser would have made of the same request: a
        multipart form (files named `image`, `image[N]`, `mask`, `markup`; text scalars accepted) or, when
        the files are named `images[N]`, a JSON edit whose image URLs were already resolved.
        """
        catalog = self.service.catalog
        if message.images or message.mask or message.markup:
            multipart = not any(ref.field.startswith("images[") for ref in message.images)
            raw = RawRequest(
                operation=message.operation,
                fields=dict(message.request),
                images=[self._input(ref) for ref in message.images],
                mask=self._input(message.mask) if message.mask else None,
                multipart=multipart,
                markup=self._input(message.markup) if message.markup else None,
            )
        else:
            body = json.dumps(message.request).encode("utf-8")
            http = HttpRequest(
                method="POST",
                path=f"/v1/images/{message.operation}",
                headers={"content-type": "application/json", "content-length": str(len(body))},
                body=body,
                request_id=message.job_id,
            )
            raw = resolve_image_urls(
                parse_request(message.operation, http),
                catalog=catalog,
                max_total_bytes=self.service.settings.max_request_input_bytes,
            )
        request = validate(raw, catalog)
        if request.stream:
            raise InvalidRequest(
                "Streaming (stream=true) cannot be used in a queued job.",
                param="stream",
                code="invalid_value",
            )
        return request

    def _input(self, ref: InputRef) -> ImageFile:
        data = self._load(ref.bucket, ref.key, ref.field)
        fmt = sniff_format(data)
        return ImageFile(
            field_name=ref.field,
            data=data,
            filename=ref.filename,
            declared_type=CONTENT_TYPES.get(fmt or "", "application/octet-stream"),
        )

    def _load(self, bucket: str | None, key: str, param: str) -> bytes:
        try:
            obj = self.s3_client.get_object(Bucket=bucket or self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _UNREADABLE:
                raise InvalidRequest(
                    f"Input image '{key}' could not be read from S3.", param=param, code="input_not_found"
                ) from None
            raise
        if int(obj.get("ContentLength", 0)) > MAX_INPUT_BYTES:
            obj["Body"].close()
            raise RequestTooLarge(f"Input image '{key}' is over {MAX_INPUT_BYTES // 2**20} MB.", param=param)
        data: bytes = obj["Body"].read()
        return data


def job_result(delivery: Delivery) -> dict[str, Any]:
    """What the job record keeps of a url-mode answer: S3 keys instead of the (expiring) URLs."""
    answer = delivery.answer
    assert isinstance(answer, ImagesResponse)  # jobs never stream (validated before the upstream call)
    images = []
    for item, saved in zip(answer.data, delivery.stored, strict=True):
        image: dict[str, Any] = {"key": saved.key, "bytes": saved.bytes, "format": saved.format}
        if item.revised_prompt:
            image["revised_prompt"] = item.revised_prompt
        images.append(image)
    meta = {k: getattr(answer, k) for k in ("background", "output_format", "quality", "size")}
    result: dict[str, Any] = {
        "created": answer.created,
        "images": images,
        "meta": {k: v for k, v in meta.items() if v is not None},
    }
    if answer.usage is not None:
        result["usage"] = answer.usage
    return result
