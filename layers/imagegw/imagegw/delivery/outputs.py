"""What clients receive, as typed data: modelled on openai-python's own types.

`ImagesResponse` and `Image` (`types/images_response.py`, `types/image.py`), the stream events
(`types/image_gen_stream_event.py`, `types/image_edit_stream_event.py`), and imagegw's own job object.
Every answer is built as one of these and turned into JSON in one place (`imagegw.delivery.render`), for
the synchronous API and the jobs worker alike. `to_dict` leaves out what OpenAI leaves out (a field that
does not apply is absent, not null), except where the job object promises `null`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

JOB_OBJECT = "image.job"


class TokenDetails(TypedDict, total=False):
    text_tokens: int
    image_tokens: int


class Usage(TypedDict, total=False):
    """As the upstream reported it: passed through, so newer fields (output_tokens_details) survive."""

    total_tokens: int
    input_tokens: int
    output_tokens: int
    input_tokens_details: TokenDetails
    output_tokens_details: TokenDetails


def empty_usage() -> Usage:
    return {
        "total_tokens": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
    }


def _present(pairs: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in pairs.items() if value is not None}


@dataclass(frozen=True)
class Image:
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _present({"url": self.url, "b64_json": self.b64_json, "revised_prompt": self.revised_prompt})


@dataclass(frozen=True)
class ImagesResponse:
    """`background`, `output_format`, `quality`, `size` and `usage` are for the GPT image models only."""

    created: int
    data: list[Image]
    background: str | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None
    usage: Usage | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "data": [image.to_dict() for image in self.data],
            **_present(
                {
                    "background": self.background,
                    "output_format": self.output_format,
                    "quality": self.quality,
                    "size": self.size,
                    "usage": self.usage,
                }
            ),
        }


@dataclass(frozen=True)
class ImageStreamEvent:
    """`image_generation.partial_image` / `.completed`, `image_edit.partial_image` / `.completed`."""

    type: str
    b64_json: str
    created_at: int
    size: str
    quality: str
    background: str
    output_format: str
    partial_image_index: int | None = None  # partial images only
    usage: Usage | None = None  # completed events only

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "b64_json": self.b64_json,
            "created_at": self.created_at,
            "size": self.size,
            "quality": self.quality,
            "background": self.background,
            "output_format": self.output_format,
            **_present({"partial_image_index": self.partial_image_index, "usage": self.usage}),
        }


JobStatus = Literal["queued", "running", "succeeded", "failed"]


@dataclass(frozen=True)
class JobAccepted:
    """The 202 answer to `Prefer: respond-async`."""

    id: str
    status_url: str
    created: int
    model: str
    operation: str
    status: JobStatus = "queued"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": JOB_OBJECT,
            "status": self.status,
            "status_url": self.status_url,
            "created": self.created,
            "model": self.model,
            "operation": self.operation,
        }


@dataclass(frozen=True)
class Job:
    """A job as `GET /v1/images/jobs/{id}` (and a reply queue) receives it; `result` and `error` are null
    until the job ends, and only one of them is set then."""

    id: str
    status: str
    created: int | None
    model: str | None
    operation: str | None
    updated: int | None = None
    started: int | None = None
    finished: int | None = None
    result: ImagesResponse | None = None
    error: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": JOB_OBJECT,
            "status": self.status,
            "created": self.created,
            "updated": self.updated,
            "started": self.started,
            "finished": self.finished,
            "model": self.model,
            "operation": self.operation,
            "result": self.result.to_dict() if self.result is not None else None,
            "error": self.error,
        }
