"""The job message on the jobs queue, version 1 (docs/jobs.md), and its strict parser.

```json
{"version": 1,
 "job_id": "job_...",
 "operation": "generations" | "edits" | "variations",
 "request": {"model": "...", "prompt": "...", "n": 1, "size": "1024x1024", ...},
 "inputs": {"images": [{"bucket": "...", "key": "...", "filename": "...", "field": "image[0]"}],
            "mask": {"key": "...", "filename": "mask.png"},
            "markup": {"key": "...", "filename": "markup.png"}},
 "caller": {"api_key": "sk-..."},
 "reply": {"queue_url": "https://sqs..."}}
```

`caller` says who pays. A message sent by an event-driven caller carries the caller's own API key
(`api_key`): the worker authenticates it exactly like a bearer key (by its hash) and admits the job like
any request. A message the gateway itself queued names the key by `key_id` only: the worker runs it only
when the job record written at submission, under admission, has the same owner and the same digest
(`JobMessage.digest`); a `key_id` message without such a record is refused as forged.

`request` holds the parameters exactly as the HTTP API takes them (the JSON body's fields; multipart
scalars may be strings); `inputs` reference input images in S3 (never inline bytes: a message is at most
1 MiB): the images, and the edit's `mask` or `markup` (gpt-image-2.5+: a transparent PNG guiding the
edit). `inputs`, its `mask` and `markup`, `reply` and `bucket` are optional.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from imagegw.domain import OPERATIONS, Operation
from imagegw.errors import InvalidRequest

VERSION = 1
# SQS's own limit is 1 MiB; keep room for message attributes.
MAX_MESSAGE_BYTES = 1024 * 1024 - 16 * 1024
JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
KEY_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MESSAGE_FIELDS = frozenset({"version", "job_id", "operation", "request", "inputs", "caller", "reply"})


class MalformedMessage(InvalidRequest):
    """The message is not a valid version-1 job message: the job fails (no retry), the batch goes on."""

    default_code = "invalid_job_message"

    def __init__(self, message: str, *, job_id: str | None = None, key_id: str | None = None, **kw: Any):
        super().__init__(f"Invalid job message: {message}", **kw)
        self.job_id = job_id
        self.key_id = key_id


@dataclass(frozen=True)
class InputRef:
    key: str
    filename: str
    field: str  # the part name the HTTP API would have received: image, image[], image[0], mask, markup
    bucket: str | None = None  # None: the gateway's own bucket

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "filename": self.filename, "field": self.field}
        if self.bucket:
            out["bucket"] = self.bucket
        return out


@dataclass(frozen=True)
class JobMessage:
    job_id: str
    operation: Operation
    request: dict[str, Any]
    key_id: str | None  # messages the gateway queued; None when the message carries an API key
    images: tuple[InputRef, ...] = ()
    mask: InputRef | None = None
    reply_queue_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    markup: InputRef | None = None  # edits (gpt-image-2.5+): the transparent PNG guiding the edit
    api_key: str | None = field(default=None, repr=False)  # an event-driven caller's own key: never logged

    def to_json(self) -> dict[str, Any]:
        message = self.without_caller()
        message["caller"] = {"api_key": self.api_key} if self.api_key else {"key_id": self.key_id}
        return message

    def without_caller(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "version": VERSION,
            "job_id": self.job_id,
            "operation": self.operation,
            "request": self.request,
        }
        if self.images or self.mask or self.markup:
            message["inputs"] = {
                "images": [ref.to_json() for ref in self.images],
                "mask": self.mask.to_json() if self.mask else None,
            }
            if self.markup:  # only when there is one: a message without one is unchanged
                message["inputs"]["markup"] = self.markup.to_json()
        if self.reply_queue_url:
            message["reply"] = {"queue_url": self.reply_queue_url}
        return message

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    def digest(self) -> str:
        """What the job record keeps of the message it admitted: everything but the caller, hashed."""
        canonical = json.dumps(self.without_caller(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_body(body: str | None) -> JobMessage:
    """An SQS message body as a job message; raises MalformedMessage (with the job id when it is known)."""
    try:
        document = json.loads(body or "")
    except (ValueError, RecursionError):
        raise MalformedMessage("the body is not JSON.") from None
    return parse_message(document)


def parse_message(document: Any) -> JobMessage:
    if not isinstance(document, dict):
        raise MalformedMessage("the body must be a JSON object.")
    job_id = document.get("job_id")
    known_id = job_id if isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id) else None
    caller = document.get("caller")
    key_id = caller.get("key_id") if isinstance(caller, dict) else None
    known_key = key_id if isinstance(key_id, str) and KEY_ID_RE.fullmatch(key_id) else None
    api_key = caller.get("api_key") if isinstance(caller, dict) else None

    def bad(message: str, param: str | None) -> MalformedMessage:
        return MalformedMessage(message, job_id=known_id, key_id=known_key, param=param)

    version = document.get("version")
    if version != VERSION or isinstance(version, bool):
        raise bad(f"unsupported version {version!r}; this worker reads version {VERSION}.", "version")
    if known_id is None:
        raise bad(
            "'job_id' is required: 1-128 characters of letters, digits, '_', '.', ':' and '-'.", "job_id"
        )
    unknown = sorted(set(document) - MESSAGE_FIELDS)
    if unknown:
        raise bad(f"unknown field '{unknown[0]}'.", unknown[0])
    operation = document.get("operation")
    if operation not in OPERATIONS:
        raise bad(f"'operation' must be one of {', '.join(OPERATIONS)}.", "operation")
    request = document.get("request")
    if not isinstance(request, dict):
        raise bad("'request' must be an object with the request's parameters.", "request")
    if not isinstance(caller, dict):
        raise bad("'caller' must be an object with the caller's 'api_key'.", "caller")
    if api_key is None and known_key is None:
        raise bad("'caller.api_key' is required.", "caller.api_key")
    if set(caller) - {"key_id", "api_key"} or len(caller) != 1:
        raise bad("'caller' must hold the caller's 'api_key' and nothing else.", "caller")
    if api_key is not None and (not isinstance(api_key, str) or not api_key or len(api_key) > 256):
        raise bad("'caller.api_key' must be an API key.", "caller.api_key")
    images, mask, markup = _inputs(document.get("inputs"), bad)
    reply = document.get("reply")
    queue_url = None
    if reply is not None:
        if not isinstance(reply, dict) or not isinstance(reply.get("queue_url", ""), str):
            raise bad("'reply' must be an object with an optional 'queue_url' string.", "reply")
        queue_url = reply.get("queue_url") or None
    return JobMessage(
        job_id=known_id,
        operation=operation,
        request=request,
        key_id=known_key if api_key is None else None,
        images=images,
        mask=mask,
        reply_queue_url=queue_url,
        markup=markup,
        api_key=api_key,
    )


def _inputs(value: Any, bad: Any) -> tuple[tuple[InputRef, ...], InputRef | None, InputRef | None]:
    if value is None:
        return (), None, None
    if not isinstance(value, dict) or not set(value) <= {"images", "mask", "markup"}:
        raise bad("'inputs' must be an object with 'images' (a list), 'mask' and 'markup'.", "inputs")
    raw_images = value.get("images") or []
    if not isinstance(raw_images, list):
        raise bad("'inputs.images' must be a list.", "inputs.images")
    default_field = "image" if len(raw_images) == 1 else None
    images = tuple(
        _ref(item, f"inputs.images[{i}]", default_field or f"image[{i}]", bad)
        for i, item in enumerate(raw_images)
    )
    mask, markup = (
        _ref(value[name], f"inputs.{name}", name, bad) if value.get(name) is not None else None
        for name in ("mask", "markup")
    )
    return images, mask, markup


def _ref(item: Any, where: str, default_field: str, bad: Any) -> InputRef:
    if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
        raise bad(f"'{where}' must be an object with an S3 'key'.", where)
    for name in ("bucket", "filename", "field"):
        if item.get(name) is not None and not isinstance(item[name], str):
            raise bad(f"'{where}.{name}' must be a string.", f"{where}.{name}")
    unknown = sorted(set(item) - {"bucket", "key", "filename", "field"})
    if unknown:
        raise bad(f"unknown field '{where}.{unknown[0]}'.", f"{where}.{unknown[0]}")
    key = item["key"]
    return InputRef(
        key=key,
        filename=item.get("filename") or key.rsplit("/", 1)[-1],
        field=item.get("field") or default_field,
        bucket=item.get("bucket") or None,
    )
