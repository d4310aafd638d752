"""The jobs worker: one SQS record at a time, under Powertools batch processing (partial batch responses).

For each record:
- the worker runs only a job admitted under the gateway's own control: the job record written at
  submission (a message naming a `key_id`) or, for a message carrying its caller's `api_key`, written
  here after that key was authenticated and the job admitted like any request. A message that is not
  the one its record admitted (another owner, another digest) or has no record is refused: not run,
  nothing charged, logged and counted (`JobMessagesRefused`);
- a malformed message (not JSON, wrong version, no job id...) fails its job when a job id is known and is
  reported processed: it never blocks the batch and is never retried;
- the job runs at most once per job id (Powertools idempotency on `job_id`, plus the job record: a
  succeeded job is never run again), so a message delivered twice makes one upstream call, one charge
  and one result; the job's success is written in the settlement's transaction (charged exactly when
  succeeded), so no failure after the charge can make a redelivery call the upstream again;
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
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from botocore.exceptions import ClientError

from imagegw.accounts.admission import Admission, Outcome
from imagegw.accounts.keys import caller_from_item
from imagegw.accounts.quota import HeldAlready, Hold, JobsInFlightExceeded
from imagegw.delivery.storage import CONTENT_TYPES
from imagegw.domain import HttpRequest, ImageFile, ImageRequest, RawRequest
from imagegw.errors import ApiError, InvalidApiKey, InvalidRequest, RateLimited, RequestTooLarge
from imagegw.images import sniff_format
from imagegw.jobs.messages import VERSION, InputRef, JobMessage, MalformedMessage, parse_body, parse_message
from imagegw.jobs.store import FAILED, SUCCEEDED, CallerLookup, JobConflict, JobStore, job_result
from imagegw.jobs.submission import asked_response_format, error_of, job_view
from imagegw.observability import logger, metrics
from imagegw.request.parsing import parse_request
from imagegw.request.validation import validate
from imagegw.service import LAMBDA_SAFETY_MARGIN_S, ImageService

IDEMPOTENCY_KEY_PREFIX = "imagegw-job"
# An input image larger than this is refused before it is read (the largest upstream limit is 50 MB).
MAX_INPUT_BYTES = 64 * 1024 * 1024
# Without a Lambda context (tests, scripts) a job gets this long.
DEFAULT_REMAINING_MS = 900_000
# Where the gateway writes in its bucket: results (`images/`) and submitted inputs (`inputs/`).
# Where callers that send jobs straight to the queue upload their input files: uploads/<key_id>/...
UPLOADS_PREFIX = "uploads/"
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
            existing = self._admitted(message, receive_count)
            if is_final_record(existing):
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
        except ForgedMessage as exc:
            return self._refuse(message, exc.reason)
        except AdmissionRefused as exc:
            return {"job_id": message.job_id, "status": exc.status}
        finally:
            logger.remove_keys(["job_id"])

    # ----- what the worker trusts: the job record written under admission -----------------------------

    def _admitted(self, message: JobMessage, receive_count: int) -> dict[str, Any]:
        """The job's record, written under admission: at submission (the gateway's messages, which name
        a key id) or now (a message carrying its caller's API key). ForgedMessage when the message is not
        the one its record admitted."""
        record = self.jobs.get(message.job_id)
        if message.api_key is None:
            if record is None or record.get("source") != "http":
                raise ForgedMessage("no job was submitted with this id; a message naming only a key id")
            if record.get("key_id") != message.key_id:
                raise ForgedMessage("the message names another key than its job's")
        elif record is None:
            return self._admit_message(message, receive_count)
        else:
            if not self._owned(record, message.api_key):
                raise ForgedMessage("the job id belongs to another key's job")
        if record.get("digest") != message.digest():
            raise ForgedMessage("the message differs from the one its job admitted")
        return record

    def _owned(self, record: dict[str, Any], api_key: str) -> bool:
        """The message's API key is the job's owner's (revoked since, perhaps: the job then fails 401 and
        its hold is given back, as for any job whose key was revoked while it waited)."""
        try:
            credential = self.service.accounts.credential(f"Bearer {api_key}")
        except InvalidApiKey:
            return False
        item = self.callers.lookup(str(record.get("key_id")))
        return item is not None and hmac.compare_digest(str(item.get("key_hash", "")), credential.key_hash)

    def _admit_message(self, message: JobMessage, receive_count: int) -> dict[str, Any]:
        """A message sent straight to the queue: its API key authenticated and the job admitted like any
        request (validated first, its inputs read only after admission); then its record is written."""
        accounts = self.service.accounts
        try:
            credential = accounts.credential(f"Bearer {message.api_key}")
            self._check_own_inputs(message)
            request = self._validated(self._raw(message, load=False))
            try:
                admission = accounts.admit(credential, request, message.job_id, job=True)
                key_id, hold = admission.caller.key_id, admission.hold
            except HeldAlready as held:  # an earlier delivery admitted it, then stopped before the record
                key_id, hold = str(held.item["key_id"]), Hold.of(message.job_id, held.hold)
        except ApiError as exc:
            if not is_final_error(exc) or isinstance(exc, JobsInFlightExceeded):
                raise  # over the rate or the job cap: SQS delivers the message again later
            logger.info("job message refused at admission", extra={"status": exc.status, "code": exc.code})
            metrics.add_metric(name="JobsRefused", unit="Count", value=1)
            self.jobs.record_malformed(message.job_id, None, error_of(exc))
            raise AdmissionRefused(FAILED) from None
        try:
            return self.jobs.create(
                job_id=message.job_id,
                key_id=key_id,
                operation=message.operation,
                model=request.model,
                source="sqs",
                digest=message.digest(),
                hold=hold,
            )
        except JobConflict:
            record = self.jobs.get(message.job_id) or {}
            if record.get("key_id") != key_id or record.get("digest") != message.digest():
                raise ForgedMessage("the job id belongs to another job") from None
            return record

    def _check_own_inputs(self, message: JobMessage, key_id: str | None = None) -> None:
        """A message sent straight to the queue names its input files in the gateway's bucket under
        `uploads/` (or in a bucket of the caller's own), never the objects the gateway writes itself
        (results under `images/`, submitted jobs' inputs under `inputs/`). Once the caller's key id is
        known, only its own `uploads/<key_id>/`: one key cannot have the worker read another's uploads."""
        allowed = f"{UPLOADS_PREFIX}{key_id}/" if key_id else UPLOADS_PREFIX
        overlays = (("mask", message.mask), ("markup", message.markup))
        refs: list[tuple[str, InputRef | None]] = [("inputs.images", ref) for ref in message.images]
        refs += [(f"inputs.{name}", ref) for name, ref in overlays]
        for where, ref in refs:
            if ref is None or (ref.bucket and ref.bucket != self.bucket):
                continue
            if not ref.key.startswith(allowed):
                raise MalformedMessage(
                    f"'{where}' names '{ref.key}': a job sent to the queue reads its inputs from this "
                    f"gateway's bucket under '{UPLOADS_PREFIX}<key_id>/' (its own key id), or from a bucket "
                    "of your own.",
                    job_id=message.job_id,
                    param=where,
                )

    def _refuse(self, message: JobMessage, reason: str) -> dict[str, Any]:
        """A message that does not match what was admitted: not run, nothing charged, recorded."""
        logger.warning("job message refused: not the job that was admitted", extra={"reason": reason})
        metrics.add_metric(name="JobMessagesRefused", unit="Count", value=1)
        return {"job_id": message.job_id, "status": "refused"}

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
        unrun: Admission | None = None  # the job's hold, until the service takes over its settlement
        try:
            record = self.jobs.get(job_id) or {}
            key_id = str(record.get("key_id"))
            key_item = self.callers.lookup(key_id)
            unrun = _unrun(message, record, key_item)
            caller = self.callers.usable(key_item, key_id)
            if record.get("source") == "sqs":
                self._check_own_inputs(message, caller.key_id)
            raw = self._raw(message, load=True)
            request = self._validated(raw)
            asked = asked_response_format(request, self.service.catalog)
            request.params["response_format"] = "url"  # results always go to S3 (docs/jobs.md)
            self.jobs.start(job_id, key_id, attempt=receive_count, model=request.model, response_format=asked)
            admission = self.service.accounts.resume(caller, request, _hold_of(job_id, record))
            deadline = time.monotonic() + remaining_ms() / 1000 - LAMBDA_SAFETY_MARGIN_S
            unrun = None
            self.service.execute(
                admission,
                raw,
                deadline,
                also=lambda delivery: [self.jobs.succeed_item(job_id, job_result(delivery))],
                settle_failure=lambda exc, outcome: self._settles(exc, outcome, receive_count),
            )
        except JobConflict:
            logger.info("job finished elsewhere while this attempt started")
            return {"job_id": job_id, "status": "skipped"}
        except Exception as exc:
            if unrun is not None and self._settles(exc, Outcome(0, 0), receive_count):
                self.service.accounts.settle(unrun, Outcome(error_of(exc)["status"], 0, None, _code(exc)))
            return self._failed(message, exc, receive_count)
        metrics.add_metric(name="JobsSucceeded", unit="Count", value=1)
        if message.reply_queue_url:
            self._announce(message)
        return {"job_id": job_id, "status": SUCCEEDED}

    def _settles(self, exc: BaseException, outcome: Outcome, receive_count: int) -> bool:
        """A failed attempt settles its hold when the job ends here, or when the attempt may have been
        billed (charged now; a retry is then not charged again). Otherwise the hold waits for the retry."""
        return is_final_error(exc) or receive_count >= self.max_receive_count or outcome.maybe_billed

    def _failed(self, message: JobMessage, exc: Exception, receive_count: int) -> dict[str, Any]:
        job_id = message.job_id
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
        raise exc

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

    def _raw(self, message: JobMessage, *, load: bool) -> RawRequest:
        """The message's request as the HTTP API would have parsed it, for the same validation.

        Without inputs it is the JSON body the HTTP API would get (`parse_request`; image URLs are
        fetched by the service, after admission). With inputs it is what the parser would have made of
        the same request: a multipart form (files named `image`, `image[N]`, `mask`, `markup`; text
        scalars accepted) or, when the files are named `images[N]`, a JSON edit whose images are known.
        `load=False` (before admission): the inputs are named but not read.
        """
        if message.images or message.mask or message.markup:
            multipart = not any(ref.field.startswith("images[") for ref in message.images)

            def read(ref: InputRef | None) -> ImageFile | None:
                return None if ref is None else self._input(ref) if load else _pending(ref)

            return RawRequest(
                operation=message.operation,
                fields=dict(message.request),
                images=[image for ref in message.images if (image := read(ref)) is not None],
                mask=read(message.mask),
                multipart=multipart,
                markup=read(message.markup),
            )
        body = json.dumps(message.request).encode("utf-8")
        http = HttpRequest(
            method="POST",
            path=f"/v1/images/{message.operation}",
            headers={"content-type": "application/json", "content-length": str(len(body))},
            body=body,
            request_id=message.job_id,
        )
        return parse_request(message.operation, http)

    def _validated(self, raw: RawRequest) -> ImageRequest:
        """`validate`, images not fetched yet; a job cannot stream."""
        request = validate(raw, self.service.catalog, awaiting_fetch=True)
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


class ForgedMessage(Exception):
    """The message is not the job its record admitted (or no job was admitted for it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AdmissionRefused(Exception):
    """A message sent straight to the queue was refused at admission: its job is recorded failed."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _pending(ref: InputRef) -> ImageFile:
    """An input named by the message, not read yet (before admission)."""
    return ImageFile(field_name=ref.field, data=b"", filename=ref.filename, source_url=f"s3://{ref.key}")


def _unrun(message: JobMessage, record: dict[str, Any], key_item: dict[str, Any] | None) -> Admission | None:
    """The job's admission as its record keeps it, to refund a job that ends before the upstream call
    (an unreadable input, a revoked key): nothing was sent."""
    if key_item is None:
        return None
    hold = _hold_of(message.job_id, record)
    placeholder = ImageRequest(message.operation, str(record.get("model") or ""), {"n": hold.images})
    return Admission(caller_from_item(key_item), placeholder, message.job_id, hold)


def _code(exc: BaseException) -> str | None:
    return exc.code if isinstance(exc, ApiError) else "internal_error"


def _hold_of(job_id: str, record: dict[str, Any]) -> Hold:
    """The admission's hold as the job record keeps it (absent on records from before holds: a hold of
    nothing, so settlement charges the job once, without one)."""
    return Hold.of(job_id, record.get("hold") or {})
