"""Every curl example of the seed specification (../shared/seed/000_d261553fdaf1b2bd.txt), sent as raw HTTP
byte for byte as curl sends it, answers 200 with the documented shape; and errors keep OpenAI's error
body and an `x-request-id` all the way through the stack (API Gateway emulation, Lambda handler)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import curl
from helpers.answers import check_error, check_images_response
from PIL import Image, ImageDraw

# The seed's -d bodies, verbatim (curl -d sends them as-is, newlines included).
GENERATION_BASIC = """{
"model": "dall-e-3",
"prompt": "A cute little sea otter",
"n": 1,
"size": "1024x1024"
}"""
GENERATION_HD_VIVID = """{
"model": "dall-e-3",
"prompt": "A cute little sea otter",
"quality": "hd",
"style": "vivid",
"size": "1024x1024"
}"""
GENERATION_B64 = """{
"model": "dall-e-3",
"prompt": "A cute little sea otter",
"response_format": "b64_json"
}"""
PRODUCTS = ("body-lotion.png", "bath-bomb.png", "incense-kit.png", "soap.png")


def _save(path: Path, image: Image.Image) -> None:
    out = io.BytesIO()
    image.save(out, format="PNG")
    path.write_bytes(out.getvalue())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The seed's input files: otter.png square RGBA (dall-e-2 edits), mask.png of the same size with a
    fully transparent area to edit, and the four product pictures of the gpt-image-1 example."""
    folder = tmp_path_factory.mktemp("seed-files")
    otter = Image.new("RGBA", (1024, 1024), (70, 110, 140, 255))
    ImageDraw.Draw(otter).ellipse((300, 300, 724, 724), fill=(120, 80, 50, 255))
    _save(folder / "otter.png", otter)
    mask = Image.new("RGBA", (1024, 1024), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (300, 200, 724, 420))  # where the beret goes
    _save(folder / "mask.png", mask)
    for index, name in enumerate(PRODUCTS):
        _save(folder / name, Image.new("RGB", (512, 512), (60 * index, 200 - 40 * index, 120)))
    return folder


@pytest.fixture
def curl_post(stack):
    """POST like curl: its User-Agent and Accept, the Authorization header, the body verbatim."""

    def post(path: str, body: bytes, content_type: str | None, **headers: str) -> requests.Response:
        sent = {**curl.CURL_HEADERS, "Authorization": f"Bearer {stack['api_key']}", **headers}
        if content_type is not None:
            sent["Content-Type"] = content_type
        return requests.post(stack["api_url"] + path, data=body, headers=sent, timeout=60)

    return post


def ok(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text[:1000]
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"].startswith("req_")
    body: dict[str, Any] = response.json()
    return body


# ---------------------------------------------------------------------------------------------- create


@pytest.mark.parametrize(
    ("body", "as_url"),
    [(GENERATION_BASIC, True), (GENERATION_HD_VIVID, True), (GENERATION_B64, False)],
    ids=["basic", "hd-vivid", "b64_json"],
)
def test_create_image_examples(curl_post, body, as_url):
    answer = ok(curl_post("/images/generations", body.encode(), "application/json"))
    # The seed's response example: created, data[{url, revised_prompt}]; b64_json when asked for.
    check_images_response(answer, size="1024x1024", gpt=False, as_url=as_url, revised_prompt=True)


# ---------------------------------------------------------------------------------------------- edit


def test_dall_e_2_edit_example(curl_post, files):
    body, content_type = curl.form(
        "image=@otter.png",
        "mask=@mask.png",
        "prompt=A cute little sea otter wearing a beret",
        "n=2",
        "size=1024x1024",
        cwd=files,
    )
    answer = ok(curl_post("/images/edits", body, content_type))
    check_images_response(answer, n=2, size="1024x1024", gpt=False, as_url=True)


def test_gpt_image_1_multi_image_edit_example(curl_post, files, emulator_control):
    body, content_type = curl.form(
        "model=gpt-image-1",
        *(f"image[]=@{name}" for name in PRODUCTS),
        "prompt=Create an elegant gift basket containing these four items",
        "quality=high",
        cwd=files,
    )
    answer = ok(curl_post("/images/edits", body, content_type))
    # The seed's gpt-image-1 example: data[{b64_json}] and usage; size auto, so any size.
    check_images_response(answer, size=None, gpt=True)
    assert answer["quality"] == "high"
    assert answer["usage"]["input_tokens_details"]["image_tokens"] > 0
    [upstream] = requests.get(emulator_control + "/_emulator/requests", timeout=5).json()["requests"]
    assert [(f[0], f[1]) for f in upstream["files"]] == [("image[]", name) for name in PRODUCTS]


# ---------------------------------------------------------------------------------------------- variations


def test_variation_example(curl_post, files):
    body, content_type = curl.form("image=@otter.png", "n=2", "size=1024x1024", cwd=files)
    answer = ok(curl_post("/images/variations", body, content_type))
    check_images_response(answer, n=2, size="1024x1024", gpt=False, as_url=True)


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_model_is_404_model_not_found(curl_post):
    body = json.dumps({"model": "dall-e-9", "prompt": "A cute little sea otter"}).encode()
    error = check_error(
        curl_post("/images/generations", body, "application/json"), 404, code="model_not_found", param="model"
    )
    assert error["message"] == "The model 'dall-e-9' does not exist or you do not have access to it."


@pytest.mark.parametrize(
    "authorization", [None, "Bearer sk-not-a-key-0123456789abcdef"], ids=["missing", "wrong"]
)
def test_bad_key_is_401(stack, authorization):
    headers = {**curl.CURL_HEADERS, "Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    response = requests.post(
        stack["api_url"] + "/images/generations", data=GENERATION_BASIC.encode(), headers=headers, timeout=30
    )
    error = check_error(response, 401, code="invalid_api_key")
    assert "sk-not-a-key-0123456789abcdef" not in error["message"]


def huge_edit(files: Path, megabytes: int = 11) -> tuple[bytes, str]:
    """A multipart edit over API Gateway's 10 MB limit (or another size): the function never runs."""
    big = files / f"huge-{megabytes}.png"
    big.write_bytes((files / "otter.png").read_bytes() + b"\0" * (megabytes * 1024 * 1024))
    return curl.form(f"image=@{big.name}", "prompt=A cute little sea otter", cwd=files)


def test_body_over_api_gateways_limit_is_its_plain_413(curl_post, files):
    # Over 10 MB API Gateway answers before any gateway response applies: a 413 the API cannot shape.
    response = curl_post("/images/edits", *huge_edit(files))
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/plain")


def test_body_over_lambdas_limit_is_413_naming_the_alternative_and_not_retried(curl_post, files):
    # 7 MB is under API Gateway's 10 MB but over Lambda's 6 MB once base64-encoded into the event.
    response = curl_post("/images/edits", *huge_edit(files, megabytes=7))
    error = check_error(response, 413, code="request_too_large", request_id=False)
    assert "JSON edit" in error["message"] and "image_url" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-request-id"] == response.headers["x-amzn-RequestId"]


def test_unknown_route_is_404_in_openai_format(curl_post):
    response = curl_post("/images/generate", GENERATION_BASIC.encode(), "application/json")
    check_error(response, 404, code="unknown_url", request_id=False)


@pytest.mark.parametrize("case", ["oversized", "unknown-route"])
def test_gateway_answered_errors_carry_x_request_id(curl_post, files, case):
    if case == "oversized":
        response = curl_post("/images/edits", *huge_edit(files))
    else:
        response = curl_post("/images/generate", GENERATION_BASIC.encode(), "application/json")
    assert response.status_code in (404, 413)
    # API Gateway sends its request id as x-amzn-RequestId, and so does the local stack; the template's
    # gateway responses also map it to x-request-id, which the plain over-10-MB 413 does not get.
    assert response.headers.get("x-amzn-RequestId")
    if case == "unknown-route":
        assert response.headers["x-request-id"] == response.headers["x-amzn-RequestId"]


def test_wrong_content_type_is_415(curl_post):
    response = curl_post("/images/generations", GENERATION_BASIC.encode(), "text/plain")
    check_error(response, 415, code="unsupported_media_type")


def test_json_body_on_variations_is_415(curl_post):
    response = curl_post("/images/variations", GENERATION_BASIC.encode(), "application/json")
    check_error(response, 415, code="unsupported_media_type")


def test_malformed_json_is_400(curl_post):
    response = curl_post(
        "/images/generations", b'{"model": "dall-e-3", "prompt": "otter",', "application/json"
    )
    error = check_error(response, 400, code="invalid_json")
    assert error["message"].startswith("We could not parse the JSON body of your request.")


def test_validation_error_keeps_openai_wording(curl_post):
    body = json.dumps({"model": "dall-e-3", "prompt": "A cute little sea otter", "n": 2}).encode()
    error = check_error(curl_post("/images/generations", body, "application/json"), 400, code=None, param="n")
    assert error["message"] == "You must provide n=1 for this model."
