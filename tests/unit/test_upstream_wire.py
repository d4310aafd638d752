"""The upstream wire format: JSON and SSE answers, base64 checks, error classification, retry hints."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from imagegw.upstream.failures import RouteFault, TransientFailure, UpstreamMalformed, UpstreamRejected
from imagegw.upstream.wire import (
    add_usage,
    classify_status,
    decode_image_b64,
    iter_sse,
    parse_json_images,
    parse_sse_images,
    retry_after_seconds,
    scrub,
)


def png(size=(8, 8), colour=(200, 10, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def fmt_bytes(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, format=fmt)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ----- base64 and image checks -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_whole_images_of_every_format_decode(fmt):
    data = fmt_bytes(fmt)
    assert decode_image_b64(b64(data)) == data


def test_wrapped_base64_lines_are_accepted():
    data = png()
    text = b64(data)
    assert decode_image_b64("\n".join(text[i : i + 20] for i in range(0, len(text), 20))) == data


@pytest.mark.parametrize(
    "value",
    [
        "",
        None,
        123,
        "not base64 at all!!",
        "abcde",  # 4k+1 characters: never valid
        b64(b"hello world, not an image"),
    ],
)
def test_garbage_is_malformed(value):
    with pytest.raises(UpstreamMalformed):
        decode_image_b64(value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_a_truncated_image_with_valid_base64_is_malformed(fmt):
    data = fmt_bytes(fmt)
    cut = data[: (len(data) * 2 // 3) // 3 * 3]  # still valid base64 once encoded, but half an image
    with pytest.raises(UpstreamMalformed):
        decode_image_b64(b64(cut))


def test_truncated_base64_as_the_emulator_cuts_it_is_malformed():
    text = b64(png((64, 64)))
    with pytest.raises(UpstreamMalformed):
        decode_image_b64(text[: (len(text) // 2) // 4 * 4 + 1])


# ----- JSON answers ----------------------------------------------------------------------------------


def test_json_answer_with_b64_url_revised_prompt_usage_and_meta():
    body = json.dumps(
        {
            "created": 1,
            "data": [{"b64_json": b64(png()), "revised_prompt": "better"}, {"url": "https://files/x.png"}],
            "usage": {"total_tokens": 3},
            "size": "1024x1024",
            "quality": "high",
            "background": "opaque",
            "output_format": "png",
            "extra": "ignored",
        }
    ).encode()
    parsed = parse_json_images(body)
    assert parsed.items == [png(), "https://files/x.png"]
    assert parsed.revised_prompts == ["better", None]
    assert parsed.usage == {"total_tokens": 3}
    assert parsed.meta == {
        "size": "1024x1024",
        "quality": "high",
        "background": "opaque",
        "output_format": "png",
    }


@pytest.mark.parametrize(
    "body",
    [
        b'{"created": 1, "data": [{"b64_json": "iVBOR',
        b"<html>502 Bad Gateway</html>",
        b"[]",
        b'{"created": 1, "data": []}',
        b'{"created": 1}',
        b'{"data": [{"url": "file:///etc/passwd"}]}',
        b'{"data": ["x"]}',
        b"\xff\xfe",
    ],
)
def test_malformed_json_answers(body):
    with pytest.raises(UpstreamMalformed):
        parse_json_images(body)


# ----- SSE -------------------------------------------------------------------------------------------


def sse(*events: dict) -> bytes:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def test_stream_collects_partials_in_order_completed_images_and_summed_usage():
    usage = {
        "total_tokens": 10,
        "input_tokens": 4,
        "output_tokens": 6,
        "input_tokens_details": {"text_tokens": 4},
    }
    body = (
        sse(
            {
                "type": "image_generation.partial_image",
                "b64_json": b64(png(colour=(1, 1, 1))),
                "partial_image_index": 1,
            },
            {
                "type": "image_generation.partial_image",
                "b64_json": b64(png(colour=(0, 0, 0))),
                "partial_image_index": 0,
            },
            {
                "type": "image_generation.completed",
                "b64_json": b64(png()),
                "size": "1024x1024",
                "usage": usage,
            },
            {"type": "image_generation.completed", "b64_json": b64(png()), "quality": "low", "usage": usage},
        )
        + b"data: [DONE]\n\n"
    )
    result = parse_sse_images(body)
    assert [p == png(colour=(0, 0, 0)) for p in result.partial_images] == [True, False]
    assert len(result.images) == 2
    assert result.usage == {
        "total_tokens": 20,
        "input_tokens": 8,
        "output_tokens": 12,
        "input_tokens_details": {"text_tokens": 8},
    }
    assert result.meta == {"size": "1024x1024", "quality": "low"}
    assert [image.usage for image in result.images] == [usage, usage]  # each image keeps its own


def test_stream_ties_each_images_partials_to_it():
    red, green, blue = (png(colour=c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    body = sse(
        {"type": "image_generation.partial_image", "b64_json": b64(red), "partial_image_index": 0},
        {"type": "image_generation.completed", "b64_json": b64(png())},
        {"type": "image_generation.partial_image", "b64_json": b64(blue), "partial_image_index": 1},
        {"type": "image_generation.partial_image", "b64_json": b64(green), "partial_image_index": 0},
        {"type": "image_generation.completed", "b64_json": b64(png())},
    )
    first, second = parse_sse_images(body).images
    assert first.partials == [red]
    assert second.partials == [green, blue]


def test_stream_images_without_usage_have_none():
    result = parse_sse_images(sse({"type": "image_generation.completed", "b64_json": b64(png())}))
    assert result.images[0].usage is None and result.usage is None


SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect/></svg>\n'


@pytest.mark.parametrize("data", [SVG, SVG.split(b"\n", 1)[1], b"\xef\xbb\xbf" + SVG])
def test_svg_documents_decode(data):
    # gpt-image-2.5+ `output_format: svg` answers an SVG document as the b64_json image
    assert decode_image_b64(b64(data)) == data


@pytest.mark.parametrize("data", [SVG[:60], b"<html><svg></svg></html>", b"<?xml version='1.0'?><rss/>"])
def test_cut_or_non_svg_markup_is_malformed(data):
    with pytest.raises(UpstreamMalformed):
        decode_image_b64(b64(data))


def test_edit_stream_events_and_crlf_line_endings():
    body = sse({"type": "image_edit.completed", "b64_json": b64(png())}).replace(b"\n", b"\r\n")
    assert len(parse_sse_images(body).images) == 1


def test_stream_error_event_from_the_client_side_is_rejected():
    body = sse({"type": "image_generation.partial_image", "b64_json": b64(png())}) + (
        b'event: error\ndata: {"type": "error", "error": {"message": "Blocked by moderation.", '
        b'"type": "invalid_request_error", "code": "moderation_blocked", "param": null}}\n\n'
    )
    with pytest.raises(UpstreamRejected) as info:
        parse_sse_images(body)
    assert info.value.message == "Blocked by moderation." and info.value.code == "moderation_blocked"


def test_stream_server_error_event_is_transient():
    body = b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n'
    with pytest.raises(TransientFailure):
        parse_sse_images(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        sse({"type": "image_generation.partial_image", "b64_json": b64(png())}),
        b'event: image_generation.completed\ndata: {"type": "image_generation.completed", "b64_json": "iVB',
        sse({"type": "image_generation.completed", "b64_json": b64(png())[:41]}),
    ],
)
def test_streams_without_a_whole_completed_image_are_malformed(body):
    with pytest.raises(UpstreamMalformed):
        parse_sse_images(body)


def test_iter_sse_joins_multiline_data_and_skips_comments():
    events = list(iter_sse(": hello\nevent: x\ndata: a\ndata: b\n\ndata: c"))
    assert [(e.event, e.data) for e in events] == [("x", "a\nb"), ("message", "c")]


def test_add_usage_adds_nested_numbers():
    assert add_usage({"a": 1, "d": {"x": 1}}, {"a": 2, "d": {"x": 3, "y": 1}, "s": "k"}) == {
        "a": 3,
        "d": {"x": 4, "y": 1},
        "s": "k",
    }


# ----- errors ----------------------------------------------------------------------------------------


def err(message="m", type_="invalid_request_error", param=None, code=None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def test_400_is_rejected_with_message_param_and_code():
    failure = classify_status(400, err("Invalid size.", param="size", code="invalid_value"), {})
    assert isinstance(failure, UpstreamRejected)
    assert (failure.message, failure.param, failure.code, failure.status) == (
        "Invalid size.",
        "size",
        "invalid_value",
        400,
    )


def test_400_without_a_json_body_gets_a_generic_message():
    failure = classify_status(400, b"<html>bad</html>", {})
    assert isinstance(failure, UpstreamRejected) and "400" in failure.message


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 520])
def test_retryable_statuses_are_transient(status):
    failure = classify_status(status, err(), {"Retry-After": "2"})
    assert isinstance(failure, TransientFailure) and failure.retryable
    assert failure.retry_after == 2.0
    assert failure.timed_out == (status in (408, 504))


@pytest.mark.parametrize("status", [401, 403, 404, 405, 415])
def test_configuration_statuses_are_route_faults(status):
    failure = classify_status(status, err(), {})
    assert isinstance(failure, RouteFault)
    assert failure.credentials_suspect == (status in (401, 403))


def test_quota_exhausted_429_is_a_route_fault_not_a_retry():
    assert isinstance(classify_status(429, err(code="insufficient_quota"), {}), RouteFault)


def test_x_should_retry_false_is_honoured():
    failure = classify_status(503, b"", {"x-should-retry": "false"})
    assert isinstance(failure, TransientFailure) and not failure.retryable


def test_azure_style_error_body():
    body = json.dumps({"error": {"code": "contentFilter", "message": "Filtered."}}).encode()
    failure = classify_status(400, body, {})
    assert isinstance(failure, UpstreamRejected) and failure.code == "contentFilter"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, None),  # in the past
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "100000"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers, expected):
    assert retry_after_seconds(headers) == expected


def test_retry_after_http_date():
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, now=5.0) == 5.0


def test_scrub_removes_urls_hosts_ips_and_keys():
    text = (
        "Failed at https://myres.openai.azure.com/openai/deployments/x?api-version=1 "
        "host myres.openai.azure.com, 10.0.0.12:8443, localhost:9001, key sk-proj-abcdefghijkl, "
        "and 0123456789abcdef0123456789abcdef. Invalid file 'image.png'."
    )
    out = scrub(text, secrets=["0123456789abcdef0123456789abcdef"])
    for leaked in ("azure.com", "10.0.0.12", "localhost", "sk-proj", "0123456789abcdef", "https://"):
        assert leaked not in out
    assert "Invalid file 'image.png'." in out
