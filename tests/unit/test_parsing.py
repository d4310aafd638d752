"""parse_request: bodies as real clients send them (JSON and multipart)."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from helpers.builders import file, http, json_request, multipart_request
from helpers.images import jpeg, png

from imagegw.domain import ImageFile, RawRequest
from imagegw.errors import ApiError, InvalidRequest
from imagegw.request import parsing
from imagegw.request.catalog import Catalog
from imagegw.request.parsing import parse_request
from imagegw.request.validation import validate

CATALOG = Catalog.load()
PNG = png(64, 64)


# ---------------------------------------------------------------------------------------------- JSON


def test_json_fields_pass_through_untouched():
    raw = parse_request("generations", json_request("generations", {"prompt": "x", "n": 2, "stream": True}))
    assert raw == RawRequest(operation="generations", fields={"prompt": "x", "n": 2, "stream": True})


def test_json_with_bom_and_charset():
    body = b"\xef\xbb\xbf" + json.dumps({"prompt": "otter \u00e9"}).encode()
    raw = parse_request("generations", http("generations", body, "Application/JSON; charset=UTF-8"))
    assert raw.fields == {"prompt": "otter \u00e9"}


def test_whitespace_body_is_an_empty_object():
    assert parse_request("generations", json_request("generations", b" \r\n ")).fields == {}


def test_json_edit_splits_image_refs_keeping_order():
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    raw = parse_request(
        "edits",
        json_request(
            "edits",
            {
                "prompt": "x",
                "images": [{"image_url": "https://a.example/one.png"}, {"image_url": data_url}],
                "mask": {"image_url": "https://a.example/mask.png"},
            },
        ),
    )
    assert raw.fields == {"prompt": "x"} and not raw.multipart
    assert [img.field_name for img in raw.images] == ["images[0]", "images[1]"]
    assert raw.images[0].source_url == "https://a.example/one.png" and raw.images[0].data == b""
    assert raw.images[0].filename == "one.png"
    assert raw.images[1].data == PNG and raw.images[1].declared_type == "image/png"
    assert raw.mask is not None and raw.mask.source_url == "https://a.example/mask.png"
    assert raw.image_urls == ["https://a.example/one.png"] and raw.mask_url == "https://a.example/mask.png"


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64," + base64.b64encode(PNG).decode().rstrip("="),  # padding left off
        "data:image/png;base64," + "\n".join(base64.encodebytes(PNG).decode().split()),  # line breaks
        "DATA:image/png;BASE64," + base64.b64encode(PNG).decode(),
        "data:;base64," + base64.b64encode(PNG).decode(),
        "data:image/png," + "".join(f"%{byte:02x}" for byte in PNG),  # percent-encoded
    ],
)
def test_data_url_variants_decode(url):
    raw = parse_request("edits", json_request("edits", {"prompt": "x", "images": [{"image_url": url}]}))
    assert raw.images[0].data == PNG


def test_json_generations_keep_images_as_a_field_for_validation_to_refuse():
    raw = parse_request("generations", json_request("generations", {"prompt": "x", "images": []}))
    assert raw.fields["images"] == [] and raw.images == []


@pytest.mark.parametrize("body", ["[", "{'prompt': 'x'}", '{"prompt": "x",}', "\x00", '{"n": Infinity}'])
def test_malformed_json_is_a_400(body):
    with pytest.raises(InvalidRequest) as info:
        parse_request("generations", json_request("generations", body))
    assert info.value.code == "invalid_json" and info.value.status == 400


# ---------------------------------------------------------------------------------------------- multipart


def test_single_image_field_keeps_its_name():
    raw = parse_request("edits", multipart_request("edits", {"image": file(PNG, "otter.png"), "prompt": "x"}))
    assert raw.multipart and raw.fields == {"prompt": "x"}
    assert [(img.field_name, img.filename, img.declared_type) for img in raw.images] == [
        ("image", "otter.png", "image/png")
    ]


def test_image_list_is_named_by_position():
    raw = parse_request(
        "edits",
        multipart_request(
            "edits", [("image[]", file(PNG, "a.png")), ("prompt", "x"), ("image[]", file(PNG, "b.png"))]
        ),
    )
    assert [(img.field_name, img.filename) for img in raw.images] == [
        ("image[0]", "a.png"),
        ("image[1]", "b.png"),
    ]


def test_repeated_bare_image_fields_become_a_list():
    raw = parse_request(
        "edits", multipart_request("edits", [("image", file(PNG, "a.png")), ("image", file(PNG))])
    )
    assert [img.field_name for img in raw.images] == ["image[0]", "image[1]"]


def test_indexed_images_are_sorted_by_index():
    fields = [(f"image[{i}]", file(PNG, f"{i}.png")) for i in (2, 10, 0, 1)]
    raw = parse_request("edits", multipart_request("edits", fields))
    assert [img.field_name for img in raw.images] == ["image[0]", "image[1]", "image[2]", "image[10]"]
    assert [img.filename for img in raw.images] == ["0.png", "1.png", "2.png", "10.png"]


def test_part_without_filename_but_image_bytes_is_a_file():
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\n'
        + PNG
        + b'\r\n--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n--b--\r\n'
    )
    raw = parse_request("edits", http("edits", body, 'multipart/form-data; boundary="b"'))
    assert raw.images[0].data == PNG and raw.images[0].filename == "image"
    assert raw.fields == {"prompt": "x"}


def test_part_without_filename_with_binary_content_type_is_a_file():
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"\r\nContent-Type: application/octet-stream'
        b"\r\n\r\nraw\r\n--b--\r\n"
    )
    raw = parse_request("edits", http("edits", body, "multipart/form-data; boundary=b"))
    assert raw.images[0].data == b"raw" and raw.images[0].declared_type == "application/octet-stream"


def test_rfc5987_filename():
    body = (
        b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename*=UTF-8''loutre%20%C3%A9.png"
        b"\r\nContent-Type: image/png\r\n\r\n" + PNG + b"\r\n--b--\r\n"
    )
    raw = parse_request("edits", http("edits", body, "multipart/form-data; boundary=b"))
    assert raw.images[0].filename == "loutre \u00e9.png"


def test_mask_and_markup_are_single_files():
    raw = parse_request(
        "edits",
        multipart_request(
            "edits", [("image", file(PNG)), ("mask", file(PNG, "m.png")), ("markup", file(PNG, "k.png"))]
        ),
    )
    assert raw.mask is not None and raw.mask.field_name == "mask" and raw.mask.filename == "m.png"
    assert raw.markup is not None and raw.markup.field_name == "markup" and raw.markup.filename == "k.png"


def test_nested_text_fields_become_objects():
    raw = parse_request(
        "edits",
        multipart_request(
            "edits", [("svg[model]", "author-1"), ("svg[reasoning][effort]", "high"), ("n", "1")]
        ),
    )
    assert raw.fields == {"svg": {"model": "author-1", "reasoning": {"effort": "high"}}, "n": "1"}


def test_conflicting_nested_fields_are_a_400():
    with pytest.raises(InvalidRequest) as info:
        parse_request("edits", multipart_request("edits", [("svg", "x"), ("svg[model]", "y")]))
    assert (info.value.code, info.value.param) == ("invalid_type", "svg")
    with pytest.raises(InvalidRequest):
        parse_request("edits", multipart_request("edits", [("svg[model]", "y"), ("svg", "x")]))


def test_unknown_file_parts_stay_as_fields_for_validation():
    raw = parse_request("edits", multipart_request("edits", {"image": file(PNG), "thumbnail": file(PNG)}))
    assert isinstance(raw.fields["thumbnail"], ImageFile)


@pytest.mark.parametrize("body", [b"--b--\r\n", b"", b"\r\n"])
def test_empty_multipart_body_is_just_empty(body):
    raw = parse_request("edits", http("edits", body, "multipart/form-data; boundary=b"))
    assert raw.fields == {} and raw.images == [] and raw.multipart


def test_a_part_without_a_name_is_a_400():
    body = b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n"
    with pytest.raises(InvalidRequest) as info:
        parse_request("edits", http("edits", body, "multipart/form-data; boundary=b"))
    assert info.value.code == "invalid_multipart_body"


def test_multipart_mixed_is_415():
    with pytest.raises(ApiError) as info:
        parse_request("edits", http("edits", b"--b--", "multipart/mixed; boundary=b"))
    assert info.value.status == 415


def test_variations_without_content_type_is_415():
    with pytest.raises(ApiError) as info:
        parse_request("variations", http("variations", b"", None))
    assert info.value.status == 415 and "'none'" in info.value.message


def test_body_at_the_limit_is_parsed_and_one_byte_more_is_413():
    body = b'{"prompt": "x"}' + b" " * (parsing.MAX_BODY_BYTES - 15)
    assert parse_request("generations", json_request("generations", body)).fields == {"prompt": "x"}
    with pytest.raises(ApiError) as info:
        parse_request("generations", json_request("generations", body + b" "))
    assert info.value.status == 413 and info.value.code == "request_too_large"


# ------------------------------------------------------------------------------------------- the openai SDK


@pytest.fixture
def sdk():
    """The official openai client, with a transport that captures the HTTP request instead of sending it."""
    httpx = pytest.importorskip("httpx2")
    openai = pytest.importorskip("openai")
    captured: list[Any] = []

    def handler(request):
        captured.append(request)
        return httpx.Response(200, json={"created": 1, "data": [{"b64_json": "AA=="}]})

    client = openai.OpenAI(
        api_key="sk-test",
        base_url="http://gateway.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        max_retries=0,
    )

    def last(operation):
        request = captured[-1]
        headers = {k.lower(): v for k, v in request.headers.items()}
        return validate(
            parse_request(operation, http(operation, request.content, headers.get("content-type"))), CATALOG
        )

    return client, last


def test_sdk_generate(sdk):
    client, last = sdk
    client.images.generate(model="gpt-image-2", prompt="otter", size="2048x1152", quality="high", n=2)
    req = last("generations")
    assert req.model == "gpt-image-2" and req.params["size"] == "2048x1152" and req.n == 2


def test_sdk_edit_with_a_list_mask_and_options(sdk):
    client, last = sdk
    client.images.edit(
        model="gpt-image-1.5",
        image=[("a.png", png(300, 200), "image/png"), jpeg(300, 200)],
        mask=("m.png", png(300, 200), "image/png"),
        prompt="basket",
        input_fidelity="high",
        output_format="webp",
        output_compression=70,
        safety_identifier="hash-1",
    )
    req = last("edits")
    assert [img.field_name for img in req.images] == ["image[0]", "image[1]"]
    assert [img.format for img in req.images] == ["png", "jpeg"]
    assert req.params["output_compression"] == 70 and req.params["safety_identifier"] == "hash-1"


def test_sdk_edit_single_raw_bytes_default_model(sdk):
    client, last = sdk
    client.images.edit(image=png(256, 256), prompt="beret", n=2, size="512x512")
    req = last("edits")
    assert req.model == "dall-e-2" and req.images[0].field_name == "image" and req.n == 2
    assert req.images[0].declared_type == "application/octet-stream" and req.images[0].format == "png"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_sdk_variation(sdk):
    client, last = sdk
    client.images.create_variation(image=png(256, 256), n=3, response_format="b64_json")
    req = last("variations")
    assert req.model == "dall-e-2" and req.params == {
        "n": 3,
        "size": "1024x1024",
        "response_format": "b64_json",
    }


def test_sdk_edit_with_svg_markup_and_stream_flag(sdk):
    client, last = sdk
    client.images.edit(
        model="gpt-image-2.5-sunburst",
        image=png(1024, 1024),
        markup=("k.png", png(1024, 1024), "image/png"),
        prompt="logo",
        output_format="svg",
        svg={"model": "author-1", "reasoning": {"effort": "high"}},
        complexity="low",
        stream=False,
    )
    req = last("edits")
    assert req.params["svg"] == {"model": "author-1", "reasoning": {"effort": "high"}}
    assert req.params["stream"] is False and req.markup is not None and req.markup.width == 1024


def test_sdk_stream_generation(sdk):
    client, last = sdk
    with contextlib.suppress(Exception):  # the fake answer is no event stream; the request is what matters
        client.images.generate(model="gpt-image-1-mini", prompt="x", stream=True, partial_images=2)
    req = last("generations")
    assert req.stream and req.params["partial_images"] == 2


def test_json_edit_names_are_accepted_in_multipart_too():
    """A queued JSON edit is re-sent as multipart with its original part names (images[N])."""
    raw = parse_request(
        "edits",
        multipart_request("edits", [("images[1]", file(PNG, "b.png")), ("images[0]", file(PNG, "a.png"))]),
    )
    assert [(img.field_name, img.filename) for img in raw.images] == [
        ("images[0]", "a.png"),
        ("images[1]", "b.png"),
    ]


def test_a_json_body_that_was_not_utf8_is_invalid_json_even_after_api_gateway_replaced_its_bytes():
    """API Gateway gives Lambda a text body as a string, with bytes that are not UTF-8 replaced by U+FFFD:
    "caf\\xe9" arrives as "caf\\ufffd" and used to run as a prompt. A raw U+FFFD is refused; the escaped
    form still means the character."""
    mangled = '{"model": "dall-e-3", "prompt": "caf\ufffd"}'.encode()
    with pytest.raises(InvalidRequest) as info:
        parse_request("generations", http("generations", mangled, "application/json"))
    assert (info.value.code, info.value.param) == ("invalid_json", None)
    assert "not valid UTF-8" in info.value.message
    escaped = parse_request(
        "generations", http("generations", b'{"prompt": "caf\\ufffd"}', "application/json")
    )
    assert escaped.fields["prompt"] == "caf\ufffd"
