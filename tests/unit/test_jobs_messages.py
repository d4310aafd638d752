"""The async job message: what the front end puts on the queue and the worker reads back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from imagegw.jobs.messages import InputRef, JobMessage, MalformedMessage, parse_body, parse_message


def valid(**overrides: Any) -> dict[str, Any]:
    document = {
        "version": 1,
        "job_id": "job_1",
        "operation": "generations",
        "request": {"model": "gpt-image-1.5", "prompt": "otter", "n": 1},
        "caller": {"key_id": "key_1"},
    }
    document.update(overrides)
    return document


def test_a_message_round_trips():
    message = JobMessage(
        job_id="job_abc",
        operation="edits",
        request={"model": "dall-e-2", "prompt": "hat", "n": "2"},
        key_id="key_1",
        images=(
            InputRef("inputs/a.png", "a.png", "image[0]", "other-bucket"),
            InputRef("inputs/b.png", "b", "image[1]"),
        ),
        mask=InputRef("inputs/m.png", "m.png", "mask"),
        reply_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/replies",
    )
    document = json.loads(message.dumps())
    assert document["version"] == 1
    assert document["inputs"]["images"][0] == {
        "key": "inputs/a.png",
        "filename": "a.png",
        "field": "image[0]",
        "bucket": "other-bucket",
    }
    assert parse_body(message.dumps()) == message


def test_input_fields_default_to_what_the_multipart_parser_names_them():
    one = parse_message(
        valid(operation="edits", inputs={"images": [{"key": "k/x.png"}], "mask": {"key": "k/m"}})
    )
    assert one.images == (InputRef("k/x.png", "x.png", "image"),)
    assert one.mask == InputRef("k/m", "m", "mask")
    two = parse_message(valid(operation="edits", inputs={"images": [{"key": "a"}, {"key": "b"}]}))
    assert [ref.field for ref in two.images] == ["image[0]", "image[1]"]


def test_a_markup_input_round_trips_and_is_left_out_when_absent():
    message = JobMessage(
        job_id="job_markup",
        operation="edits",
        request={"model": "gpt-image-2.5", "prompt": "hat"},
        key_id="key_1",
        images=(InputRef("inputs/a.png", "a.png", "image"),),
        markup=InputRef("inputs/k.png", "k.png", "markup"),
    )
    document = json.loads(message.dumps())
    assert document["inputs"] == {
        "images": [{"key": "inputs/a.png", "filename": "a.png", "field": "image"}],
        "mask": None,
        "markup": {"key": "inputs/k.png", "filename": "k.png", "field": "markup"},
    }
    assert parse_body(message.dumps()) == message
    # a message without markup is exactly what it was before markup existed
    plain = JobMessage("job_plain", "edits", {"prompt": "hat"}, "key_1", images=message.images)
    assert "markup" not in json.loads(plain.dumps())["inputs"]
    only = parse_message(
        valid(operation="edits", inputs={"images": [{"key": "a"}], "markup": {"key": "k/m"}})
    )
    assert only.markup == InputRef("k/m", "m", "markup") and only.mask is None


@pytest.mark.parametrize(
    ("body", "param", "job_id"),
    [
        ("not json", None, None),
        ("[1, 2]", None, None),
        (json.dumps(valid(version=2)), "version", "job_1"),
        (json.dumps(valid(version=True)), "version", "job_1"),
        (json.dumps(valid(version="1")), "version", "job_1"),
        (json.dumps(valid(job_id=None)), "job_id", None),
        (json.dumps(valid(job_id="has spaces")), "job_id", None),
        (json.dumps(valid(job_id="x" * 200)), "job_id", None),
        (json.dumps(valid(operation="upscales")), "operation", "job_1"),
        (json.dumps(valid(request="prompt=otter")), "request", "job_1"),
        (json.dumps(valid(caller={})), "caller.key_id", "job_1"),
        (json.dumps(valid(priority=5)), "priority", "job_1"),
        (json.dumps(valid(inputs={"images": "inputs/a.png"})), "inputs.images", "job_1"),
        (json.dumps(valid(inputs={"images": [{"bucket": "b"}]})), "inputs.images[0]", "job_1"),
        (
            json.dumps(valid(inputs={"images": [{"key": "a", "data": "iVBOR"}]})),
            "inputs.images[0].data",
            "job_1",
        ),
        (json.dumps(valid(reply={"queue_url": 5})), "reply", "job_1"),
        (json.dumps(valid(inputs={"images": [], "markup": "k.png"})), "inputs.markup", "job_1"),
        (json.dumps(valid(inputs={"images": [], "overlay": {"key": "k"}})), "inputs", "job_1"),
    ],
)
def test_malformed_messages_are_named_and_keep_the_job_id_when_known(body, param, job_id):
    with pytest.raises(MalformedMessage) as caught:
        parse_body(body)
    error = caught.value
    assert error.status == 400 and error.code == "invalid_job_message"
    assert error.param == param
    assert error.job_id == job_id
    assert error.message.startswith("Invalid job message: ")


def test_a_malformed_message_keeps_its_caller_when_known():
    with pytest.raises(MalformedMessage) as caught:
        parse_message(valid(version=3, caller={"key_id": "key_9"}))
    assert caught.value.key_id == "key_9"
