"""The HTTP side of jobs: `Prefer: respond-async` submissions (202) and `GET /v1/images/jobs/{id}`.

A submission is authenticated, parsed, validated and admitted exactly like a synchronous request (429
and 403 at once, nothing written; the admission's hold, under the job id, stays on the key until the
worker settles it); then, instead of calling the upstream, its image URLs are fetched, the input files
(images, mask, markup) go to S3 (`inputs/<yyyy>/<mm>/<dd>/<job_id>/...`), the job record is written
(queued, with the message's digest and the hold: what the worker trusts) and the job message is sent to
the jobs queue.

Results are always stored in S3 (the worker asks for `response_format=url` whatever the request said);
the job record lists the keys, and every GET signs fresh 60-minute URLs. When the request asked for
`b64_json` (explicitly, or by the model's default) and the images are small, GET adds `b64_json` too.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from imagegw.delivery.outputs import Image, ImagesResponse, Job, JobAccepted
from imagegw.delivery.render import Delivery, json_body
from imagegw.delivery.storage import ImageStore
from imagegw.domain import ApiResponse, Caller, HttpRequest, ImageFile, ImageRequest, RawRequest
from imagegw.errors import (
    Gone,
    InvalidRequest,
    NotFound,
    RequestTooLarge,
    ServiceUnavailable,
    to_error_response,
)
from imagegw.images import sniff_format
from imagegw.jobs.messages import JOB_ID_RE, MAX_MESSAGE_BYTES, InputRef, JobMessage
from imagegw.jobs.store import FAILED, SUCCEEDED, JobStore, job_result
from imagegw.observability import logger
from imagegw.request.catalog import Catalog

if TYPE_CHECKING:
    from imagegw.accounts.admission import Admission

# GET adds b64_json only up to this many image bytes in total (base64 adds a third; Lambda answers <= 6 MB).
INLINE_B64_MAX_BYTES = 3 * 1024 * 1024


def new_job_id() -> str:
    return "job_" + secrets.token_hex(16)


def error_of(exc: BaseException) -> dict[str, Any]:
    """The OpenAI error object the HTTP API would answer for `exc`, plus its HTTP status."""
    mapped = to_error_response(exc)
    return {**mapped.body["error"], "status": mapped.status}


def asked_response_format(request: ImageRequest, catalog: Catalog) -> str:
    asked = request.params.get("response_format")
    return str(asked) if asked else catalog.get(request.model).default_response_format


class AsyncJobs:
    def __init__(
        self,
        *,
        jobs: JobStore,
        store: ImageStore,
        sqs_client: Any,
        queue_url: str,
        catalog: Catalog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._jobs = jobs
        self._store = store
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._catalog = catalog
        self._clock = clock

    @staticmethod
    def new_id() -> str:
        return new_job_id()

    @staticmethod
    def check_submittable(request: ImageRequest) -> None:
        """What only a queued job refuses: checked before admission."""
        if request.stream:
            raise InvalidRequest(
                "Streaming (stream=true) cannot be combined with 'Prefer: respond-async'.",
                param="stream",
                code="invalid_value",
            )

    def submit(self, admission: Admission, raw: RawRequest, http: HttpRequest) -> ApiResponse:
        """Queue an admitted job (its id is the admission's); the caller refunds it if this raises."""
        caller, request, job_id = admission.caller, admission.request, admission.request_id
        message, uploads = self._message(job_id, caller, raw, request)
        body = message.dumps()
        if len(body.encode("utf-8")) > MAX_MESSAGE_BYTES:
            raise RequestTooLarge("The job's parameters are over the 1 MiB limit of a queued job.")
        stored: list[str] = []
        try:
            for ref, image in uploads:
                self._store.put_image(ref.key, image.data, image.format or sniff_format(image.data) or "bin")
                stored.append(ref.key)
            record = self._jobs.create(
                job_id=job_id,
                key_id=caller.key_id,
                operation=request.operation,
                model=request.model,
                source="http",
                request_id=http.request_id,
                response_format=asked_response_format(request, self._catalog),
                digest=message.digest(),
                hold=admission.hold,
            )
        except BaseException:
            self._discard(stored, job_id)
            raise
        self._queue(job_id, body, stored)
        logger.info(
            "job queued", extra={"job_id": job_id, "model": request.model, "operation": request.operation}
        )
        status_url = f"{http.base_url}/v1/images/jobs/{job_id}"
        answer = JobAccepted(job_id, status_url, record["created"], request.model, request.operation)
        return ApiResponse(
            202, json_body(answer), headers={"Preference-Applied": "respond-async", "Location": status_url}
        )

    def keep(self, job_id: str, caller: Caller, request: ImageRequest, delivery: Delivery) -> None:
        """A finished job holding the stored images a synchronous answer could not carry (413)."""
        self._jobs.create_finished(
            job_id=job_id,
            key_id=caller.key_id,
            operation=request.operation,
            model=request.model,
            result=job_result(delivery),
        )

    def _message(
        self, job_id: str, caller: Caller, raw: RawRequest, request: ImageRequest
    ) -> tuple[JobMessage, list[tuple[InputRef, ImageFile]]]:
        """The job message, and the input files to store under `inputs/<yyyy>/<mm>/<dd>/<job_id>/`."""
        stem = time.strftime(f"inputs/%Y/%m/%d/{job_id}", time.gmtime(self._clock()))
        images = [(self._input_ref(f"{stem}/{i}", image), image) for i, image in enumerate(raw.images)]
        overlays = {
            name: (self._input_ref(f"{stem}/{name}", file), file)
            for name, file in (("mask", raw.mask), ("markup", raw.markup))
            if file is not None
        }
        message = JobMessage(
            job_id=job_id,
            operation=request.operation,
            request=request_fields(raw),
            key_id=caller.key_id,
            images=tuple(ref for ref, _ in images),
            mask=overlays["mask"][0] if "mask" in overlays else None,
            markup=overlays["markup"][0] if "markup" in overlays else None,
        )
        return message, [*images, *overlays.values()]

    def _queue(self, job_id: str, body: str, stored: list[str]) -> None:
        """Send the job message; a job that could not be queued is failed and its inputs removed."""
        try:
            self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=body)
        except Exception as exc:
            logger.exception("could not queue a job", extra={"job_id": job_id})
            unavailable = ServiceUnavailable("The job could not be queued. Please try again.")
            try:
                self._jobs.fail(job_id, error_of(unavailable))
            except Exception:
                logger.exception("could not mark the unqueued job failed", extra={"job_id": job_id})
            self._discard(stored, job_id)
            raise unavailable from exc

    def status(self, caller: Caller, job_id: str) -> ApiResponse:
        record = self._jobs.get(job_id) if JOB_ID_RE.fullmatch(job_id or "") else None
        # Another key's job is answered exactly like a job that does not exist.
        if record is None or record.get("key_id") != caller.key_id:
            raise NotFound(f"No job found with id '{job_id}'.", param="job_id", code="job_not_found")
        return ApiResponse(200, json_body(job_view(record, self._store)))

    def _discard(self, keys: list[str], job_id: str) -> None:
        """Inputs of a job that was never queued: no worker will read them (best effort)."""
        try:
            self._store.delete(keys)
        except Exception:
            logger.exception("could not delete the inputs of an unqueued job", extra={"job_id": job_id})

    @staticmethod
    def _input_ref(stem: str, image: ImageFile) -> InputRef:
        fmt = image.format or sniff_format(image.data)
        ext = {"jpeg": "jpg", None: "bin"}.get(fmt, fmt)
        return InputRef(key=f"{stem}.{ext}", filename=image.filename, field=image.field_name)


def request_fields(raw: RawRequest) -> dict[str, Any]:
    """The request's parameters as the client sent them, without its images (they travel as inputs)."""
    return dict(raw.fields)


def job_view(record: dict[str, Any], store: ImageStore, inline_b64_max: int = INLINE_B64_MAX_BYTES) -> Job:
    """A job as GET /v1/images/jobs/{id} answers it: fresh URLs, never S3 keys or the owner."""
    status = record.get("status")
    result = record.get("result") if status == SUCCEEDED else None
    return Job(
        id=record["job_id"],
        status=str(status),
        created=record.get("created"),
        updated=record.get("updated"),
        started=record.get("started"),
        finished=record.get("finished"),
        model=record.get("model"),
        operation=record.get("operation"),
        result=_stored_result(result, record.get("response_format"), store, inline_b64_max)
        if result
        else None,
        error=record.get("error") if status == FAILED else None,
    )


def _stored_result(
    result: dict[str, Any], response_format: str | None, store: ImageStore, inline_b64_max: int
) -> ImagesResponse:
    """A succeeded job's result as an ImagesResponse, from the S3 keys its record keeps."""
    images = result.get("images") or []
    # All images of a job are stored together and expire together (the bucket's lifecycle rule,
    # ImageRetentionDays; job records live longer): one HEAD tells whether there is anything to sign.
    if images and not store.exists(images[0]["key"]):
        raise Gone(
            "The images of this job have expired: generated images are kept for a limited number of days "
            "(ImageRetentionDays) and the job record longer. Send the request again to generate new ones.",
            param="job_id",
            code="job_expired",
        )
    inline = (
        response_format == "b64_json" and sum(int(img.get("bytes", 0)) for img in images) <= inline_b64_max
    )
    data = [
        Image(
            url=store.presign(image["key"]),
            b64_json=base64.b64encode(store.get(image["key"])).decode("ascii") if inline else None,
            revised_prompt=image.get("revised_prompt") or None,
        )
        for image in images
    ]
    meta = result.get("meta") or {}
    return ImagesResponse(
        created=result.get("created"),  # type: ignore[arg-type]
        data=data,
        background=meta.get("background"),
        output_format=meta.get("output_format"),
        quality=meta.get("quality"),
        size=meta.get("size"),
        usage=result.get("usage"),
    )
