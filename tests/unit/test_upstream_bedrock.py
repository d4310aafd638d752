"""The Bedrock (Amazon Nova Canvas) provider without a network: request mapping, mask conversion, sizes,
answers and error mapping (a botocore Stubber stands in for the service)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from PIL import Image

from imagegw.domain import ImageFile
from imagegw.upstream import (
    PROVIDER_TYPES,
    BedrockProvider,
    Credentials,
    ProviderContext,
    RouteFault,
    TransientFailure,
    UpstreamMalformed,
    UpstreamRejected,
    new_http_session,
)
from imagegw.upstream.bedrock import (
    NovaRequest,
    classify_client_error,
    nova_quality,
    nova_size,
    parse_answer,
)
from imagegw.upstream.config import ProviderConfig, RoutesError, parse_routes

MODEL = "amazon.nova-canvas-v1:0"


def png(size=(64, 64), colour=(0, 90, 200, 255), mode="RGBA") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGBA" else colour[:3]).save(out, format="PNG")
    return out.getvalue()


def holed(size=(256, 256), box=(64, 64, 128, 128)) -> bytes:
    """An opaque RGBA PNG with a fully transparent rectangle (OpenAI: edit there)."""
    img = Image.new("RGBA", size, (10, 20, 30, 255))
    img.paste((0, 0, 0, 0), box)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def image_file(data: bytes, name: str = "image") -> ImageFile:
    with Image.open(io.BytesIO(data)) as img:
        return ImageFile(name, data, f"{name}.png", "image/png", "png", img.width, img.height, img.mode)


def decode(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def provider(**options: Any) -> BedrockProvider:
    config = ProviderConfig("bedrock", "bedrock", options={"region": "us-east-1", **options})
    context = ProviderContext(new_http_session(), Credentials(""))
    return BedrockProvider(config, context)


# ----- registry and construction -------------------------------------------------------------------


def test_bedrock_is_a_registered_provider_type_and_routes_accept_it():
    built = PROVIDER_TYPES["bedrock"](
        ProviderConfig("nova", "bedrock", options={"region": "us-east-1"}),
        ProviderContext(new_http_session(), Credentials("")),
    )
    assert isinstance(built, BedrockProvider)
    assert built.config.name == "nova"
    doc = {
        "providers": {"bedrock": {"type": "bedrock", "region": "us-west-2"}},
        "models": {"dall-e-2": [{"provider": "bedrock", "model": MODEL}]},
    }
    config = parse_routes(doc, PROVIDER_TYPES)
    assert config.providers["bedrock"].options == {"region": "us-west-2"}
    assert config.routes_for("dall-e-2", "variations")[0].label == f"bedrock:{MODEL}"


def test_a_region_is_required_unless_a_client_is_given():
    context = ProviderContext(new_http_session(), Credentials(""))
    with pytest.raises(RoutesError, match=r"providers\.nova needs a region"):
        BedrockProvider(ProviderConfig("nova", "bedrock"), context)
    with pytest.raises(RoutesError, match="endpoint_url"):
        provider(endpoint_url="ftp://x")
    given = boto3.client("bedrock-runtime", region_name="eu-west-1")
    with_client = ProviderContext(new_http_session(), Credentials(""), clients={"bedrock-runtime": given})
    assert BedrockProvider(ProviderConfig("nova", "bedrock"), with_client)._clients == {}  # nothing made yet


def test_each_attempt_client_has_the_attempt_timeout_and_no_retries():
    p = provider(endpoint_url="http://127.0.0.1:9")
    client = p._client(7.3)
    config = client.meta.config
    assert (config.read_timeout, config.connect_timeout) == (7.0, 3.05)
    assert config.retries["total_max_attempts"] == 1
    assert client.meta.endpoint_url == "http://127.0.0.1:9" and client.meta.region_name == "us-east-1"
    assert p._client(7.4) is client  # kept per timeout (0.5 s steps)
    assert p._client(0.1).meta.config.read_timeout == 0.2


def test_a_given_client_is_the_template_for_region_endpoint_and_credentials():
    given = boto3.client(
        "bedrock-runtime",
        region_name="eu-central-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="AKIDTEMPLATE",
        aws_secret_access_key="secret-template",
    )
    context = ProviderContext(new_http_session(), Credentials(""), clients={"bedrock-runtime": given})
    copy = BedrockProvider(ProviderConfig("nova", "bedrock"), context)._client(5)
    assert copy is not given
    assert (copy.meta.region_name, copy.meta.endpoint_url) == ("eu-central-1", "http://127.0.0.1:9")
    assert copy._request_signer._credentials.access_key == "AKIDTEMPLATE"
    assert copy.meta.config.retries["total_max_attempts"] == 1


# ----- sizes and quality -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "nova"),
    [
        ((1024, 1024), (1024, 1024)),
        ((1792, 1024), (1792, 1024)),
        ((1536, 1024), (1536, 1024)),
        ((256, 256), (320, 320)),
        ((512, 512), (512, 512)),
        ((4096, 4096), (2048, 2048)),
        ((5000, 100), (4096, 1024)),
        ((100, 5000), (1024, 4096)),
        ((1000, 1000), (992, 992)),
        ((1335, 335), (1280, 320)),
    ],
)
def test_sizes_nova_does_not_take_become_the_nearest_it_does(asked, nova):
    w, h = nova_size(*asked)
    assert (w, h) == nova
    assert 320 <= w <= 4096 and 320 <= h <= 4096 and w % 16 == 0 and h % 16 == 0
    assert w <= 4 * h and h <= 4 * w and w * h <= 4_194_304


@pytest.mark.parametrize(
    ("quality", "nova"), [("high", "premium"), ("hd", "premium"), ("low", "standard"), (None, "standard")]
)
def test_quality(quality, nova):
    assert nova_quality(quality) == nova


# ----- request mapping -------------------------------------------------------------------------------


def test_generation_maps_prompt_n_size_quality_and_extras():
    plan = NovaRequest(
        "generations",
        {"prompt": "an otter", "n": 2, "size": "1536x1024", "quality": "high", "seed": 7, "cfg_scale": 6.5},
        [],
        None,
    )
    (body,) = plan.bodies()
    assert body == {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "an otter"},
        "imageGenerationConfig": {
            "numberOfImages": 2,
            "quality": "premium",
            "width": 1536,
            "height": 1024,
            "cfgScale": 6.5,
            "seed": 7,
        },
    }
    assert plan.resize_to is None


def test_generation_of_a_size_nova_does_not_take_is_scaled_back_and_n_above_5_is_batched():
    plan = NovaRequest("generations", {"prompt": "x", "n": 7, "size": "256x256", "seed": 1}, [], None)
    bodies = plan.bodies()
    assert [b["imageGenerationConfig"]["numberOfImages"] for b in bodies] == [5, 2]
    assert [b["imageGenerationConfig"]["seed"] for b in bodies] == [1, 2]  # a second batch, other images
    assert bodies[0]["imageGenerationConfig"]["width"] == 320 and plan.resize_to == (256, 256)
    with Image.open(io.BytesIO(plan.finish(png((320, 320))))) as img:
        assert img.size == (256, 256)


def test_auto_size_is_1024_square_and_jpeg_is_converted():
    plan = NovaRequest(
        "generations",
        {"prompt": "x", "size": "auto", "output_format": "jpeg", "output_compression": 50},
        [],
        None,
    )
    assert plan.bodies()[0]["imageGenerationConfig"]["width"] == 1024
    out = plan.finish(png((1024, 1024)))
    assert out[:3] == b"\xff\xd8\xff"


def test_edit_mask_alpha_0_becomes_nova_black_and_the_rest_white():
    image = image_file(png((256, 256), (200, 30, 30, 255)))
    mask = image_file(holed((256, 256), (64, 64, 128, 128)), "mask")
    plan = NovaRequest("edits", {"prompt": "a hat", "n": 1, "quality": "low"}, [image], mask)
    (body,) = plan.bodies()
    assert body["taskType"] == "INPAINTING"
    params = body["inPaintingParams"]
    assert params["text"] == "a hat" and "maskPrompt" not in params
    assert "width" not in body["imageGenerationConfig"]  # INPAINTING answers at the image's size
    nova_mask = decode(params["maskImage"])
    source = decode(params["image"])
    assert nova_mask.size == source.size == (320, 320)  # 256 is below Nova's 320: both scaled alike
    colours = {colour for _, colour in nova_mask.convert("RGB").getcolors()}
    assert colours == {(0, 0, 0), (255, 255, 255)}  # pure black and white only
    assert nova_mask.convert("RGB").getpixel((120, 120)) == (0, 0, 0)  # inside the hole: edit
    assert nova_mask.convert("RGB").getpixel((10, 10)) == (255, 255, 255)  # outside: keep
    assert source.mode == "RGB" and plan.resize_to == (256, 256)


def test_edit_without_mask_uses_the_images_own_transparency_and_flattens_it():
    plan = NovaRequest("edits", {"prompt": "fill"}, [image_file(holed((512, 512)))], None)
    params = plan.bodies()[0]["inPaintingParams"]
    assert decode(params["maskImage"]).convert("RGB").getpixel((100, 100)) == (0, 0, 0)
    source = decode(params["image"])
    assert source.mode == "RGB" and source.getpixel((100, 100)) == (255, 255, 255)  # no transparent pixel
    assert plan.resize_to is None


def test_edit_without_any_mask_takes_a_mask_prompt_or_is_refused_cleanly():
    opaque = image_file(png((512, 512)))
    params = NovaRequest("edits", {"prompt": "red", "mask_prompt": "the sofa"}, [opaque], None).bodies()[0]
    assert params["inPaintingParams"]["maskPrompt"] == "the sofa"
    assert "maskImage" not in params["inPaintingParams"]
    with pytest.raises(UpstreamRejected) as info:
        NovaRequest("edits", {"prompt": "red"}, [opaque], None)
    assert (info.value.status, info.value.param, info.value.code) == (
        400,
        "mask",
        "missing_required_parameter",
    )


def test_a_mask_without_transparent_pixels_is_refused():
    with pytest.raises(UpstreamRejected) as info:
        NovaRequest(
            "edits", {"prompt": "x"}, [image_file(png((512, 512)))], image_file(png((512, 512)), "mask")
        )
    assert info.value.param == "mask" and info.value.status == 400


def test_variation_maps_images_similarity_and_an_optional_text():
    images = [image_file(png((256, 256))), image_file(png((512, 512), (1, 2, 3, 255)))]
    plan = NovaRequest("variations", {"n": 3, "size": "512x512"}, images, None)
    (body,) = plan.bodies()
    params = body["imageVariationParams"]
    assert body["taskType"] == "IMAGE_VARIATION"
    assert len(params["images"]) == 2 and params["similarityStrength"] == 0.7 and "text" not in params
    assert [decode(b).size for b in params["images"]] == [(320, 320), (512, 512)]
    config = body["imageGenerationConfig"]
    assert (config["numberOfImages"], config["width"], config["height"]) == (3, 512, 512)
    translated = NovaRequest(
        "variations", {"prompt": "keep the subject", "similarity_strength": 0.9}, images[:1], None
    ).bodies()[0]
    assert translated["imageVariationParams"]["text"] == "keep the subject"
    assert translated["imageVariationParams"]["similarityStrength"] == 0.9
    assert translated["imageGenerationConfig"]["width"] == 320  # no size: the input's, as Nova takes it


# ----- answers and errors ----------------------------------------------------------------------------


def test_answer_images_are_decoded_and_broken_answers_are_malformed():
    good = base64.b64encode(png()).decode()
    assert parse_answer(json.dumps({"images": [good, good]}).encode()) == [png(), png()]
    with pytest.raises(UpstreamMalformed):
        parse_answer(b"{not json")
    with pytest.raises(UpstreamMalformed):
        parse_answer(json.dumps({"images": [good[: len(good) // 2 + 1]]}).encode())
    with pytest.raises(UpstreamMalformed):
        parse_answer(json.dumps({"images": []}).encode())
    assert parse_answer(json.dumps({"images": [good], "error": "Some images were blocked."}).encode()) == [
        png()
    ]


def test_every_image_blocked_is_a_400_moderation_blocked():
    body = json.dumps({"images": [], "error": "All of the generated images have been blocked."}).encode()
    with pytest.raises(UpstreamRejected) as info:
        parse_answer(body)
    assert (info.value.status, info.value.code) == (400, "moderation_blocked")


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ThrottlingException", 429, TransientFailure),
        ("ServiceUnavailableException", 503, TransientFailure),
        ("ModelTimeoutException", 408, TransientFailure),
        ("ModelNotReadyException", 429, TransientFailure),
        ("InternalServerException", 500, TransientFailure),
        ("SomethingNew", 502, TransientFailure),
        ("AccessDeniedException", 403, RouteFault),
        ("ResourceNotFoundException", 404, RouteFault),
        ("ServiceQuotaExceededException", 400, RouteFault),
        ("ModelErrorException", 424, RouteFault),
        ("ValidationException", 400, UpstreamRejected),
    ],
)
def test_client_errors_are_classified(code, status, kind):
    failure = classify_client_error(code, status, "some message")
    assert type(failure) is kind
    if kind is UpstreamRejected:
        assert failure.status == 400 and failure.message == "some message"


def stubbed(p: BedrockProvider) -> Stubber:
    client = p._client(10)
    stubber = Stubber(client)
    p._client = lambda timeout: client  # type: ignore[method-assign]
    return stubber


def call(p: BedrockProvider, operation="generations", **params: Any):
    return p.call(
        operation=operation,
        model=MODEL,
        params={"prompt": "x", "n": 1, **params},
        images=[],
        mask=None,
        stream=False,
        timeout=10,
    )


def test_validation_exception_reaches_the_client_scrubbed():
    p = provider(endpoint_url="http://127.0.0.1:9")
    stubber = stubbed(p)
    stubber.add_client_error(
        "invoke_model",
        service_error_code="ValidationException",
        service_message="Bad width for https://bedrock-runtime.us-east-1.amazonaws.com sk-abcdefghij123",
        http_status_code=400,
    )
    with stubber, pytest.raises(UpstreamRejected) as info:
        call(p)
    assert info.value.status == 400
    assert "amazonaws.com" not in info.value.message and "sk-abcdefghij123" not in info.value.message
    assert info.value.message.startswith("Bad width for")


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [("ThrottlingException", 429, TransientFailure), ("AccessDeniedException", 403, RouteFault)],
)
def test_provider_raises_the_classified_failure(code, status, kind):
    p = provider(endpoint_url="http://127.0.0.1:9")
    stubber = stubbed(p)
    stubber.add_client_error("invoke_model", service_error_code=code, http_status_code=status)
    with stubber, pytest.raises(kind) as info:
        call(p)
    assert info.value.status == status


def test_provider_answers_images_at_the_size_asked_and_no_usage():
    p = provider(endpoint_url="http://127.0.0.1:9")
    stubber = stubbed(p)
    answer = json.dumps({"images": [base64.b64encode(png((320, 320))).decode()] * 2}).encode()
    stubber.add_response("invoke_model", {"body": io.BytesIO(answer), "contentType": "application/json"})
    with stubber:
        result = call(p, n=2, size="256x256")
    assert result.usage is None and len(result.images) == 2
    with Image.open(io.BytesIO(result.images[0].data)) as img:
        assert img.size == (256, 256)


def test_connection_refused_is_transient():
    p = provider(endpoint_url="http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(TransientFailure):
        call(p)
