"""The upstream layer against two upstream emulators over real HTTP on 127.0.0.1.

Emulator A and B both require an API key; the keys come from a (moto) Secrets Manager secret, read the
way Lambda reads it. Backoff sleeps are recorded instead of slept, and the cool-down clock is fake, so
the only real waiting is the hung-upstream test (about one second).
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import boto3
import pytest
from helpers.fakes import FakeClock
from moto import mock_aws
from PIL import Image

from imagegw.domain import ImageFile, ImageRequest
from imagegw.errors import ApiError, InvalidRequest, UpstreamError, UpstreamTimeout
from imagegw.request.catalog import Catalog
from imagegw.settings import Settings
from imagegw.upstream import CooldownTracker, build_router, shipped_routes_document
from imagegw_dev.emulator import Emulator

KEY_A = "sk-emulator-a-0123456789abcdef"
KEY_B = "sk-emulator-b-fedcba9876543210"
AZURE_VERSION = "2025-04-01-preview"
SECRET_ID = "imagegw/upstream-test"


# ----- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu_a():
    with Emulator(api_key=KEY_A) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def emu_b():
    with Emulator(api_key=KEY_B) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu_a, emu_b):
    emu_a.reset()
    emu_b.reset()
    yield
    emu_a.reset()
    emu_b.reset()


@pytest.fixture
def secrets_client():
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(
            Name=SECRET_ID,
            SecretString=json.dumps({"a": {"api_key": KEY_A}, "b": {"api_key": KEY_B}}),
        )
        yield client


def routes(emu_a: Emulator, emu_b: Emulator) -> dict[str, Any]:
    shipped = shipped_routes_document()
    route_a = {"provider": "emu-a", "model": "gpt-image-1.5"}
    route_b = {"provider": "emu-b", "model": "gpt-image-1.5"}
    return {
        "providers": {
            "emu-a": {"type": "openai", "base_url": emu_a.base_url + "/v1", "credential": "a"},
            "emu-b": {"type": "openai", "base_url": emu_b.base_url + "/v1", "credential": "b"},
            "azure": {
                "type": "azure",
                "endpoint": emu_b.base_url,
                "api_version": AZURE_VERSION,
                "credential": "b",
            },
        },
        "translations": shipped["translations"],
        "models": {
            "gpt-image-1.5": [route_a, route_b],  # A first, B on failover
            "gpt-image-1-mini": [{"provider": "emu-a", "model": "gpt-image-1-mini"}],  # one route only
            "dall-e-3": [{**route_a, "translate": "dall-e-3"}],
            "dall-e-2": [{**route_a, "translate": "dall-e-2"}],
            "gpt-image-2": [{"provider": "azure", "model": "gpt-image-2", "deployment": "img-deploy"}],
        },
    }


@pytest.fixture
def make_router(tmp_path, emu_a, emu_b, secrets_client):
    def make(**overrides: Any):
        path = tmp_path / "routes.json"
        path.write_text(json.dumps(routes(emu_a, emu_b)))
        values = {
            "max_attempts": 3,
            "attempt_timeout_seconds": 10.0,
            "cooldown_seconds": 30.0,
            "routes_source": str(path),
            "upstream_secret_id": SECRET_ID,
        }
        cooldowns = overrides.pop("cooldowns", None) or CooldownTracker()
        sleeps = overrides.pop("sleeps", [])
        values.update(overrides)
        settings = Settings("b", "k", "u", "j", "i", "q", **values)
        return build_router(
            settings, Catalog.load(), secrets_client=secrets_client, sleep=sleeps.append, cooldowns=cooldowns
        )

    return make


def gen(model: str = "gpt-image-1.5", **params: Any) -> ImageRequest:
    base = {
        "prompt": "a small otter",
        "n": 1,
        "size": "1024x1024",
        "quality": "low",
        "response_format": "b64_json",
    }
    return ImageRequest("generations", model, {**base, **params})


def soon(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def png(size=(64, 64), alpha: bool = False) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA" if alpha else "RGB", size, (0, 90, 200, 0) if alpha else (0, 90, 200)).save(
        out, format="PNG"
    )
    return out.getvalue()


def jpeg(size=(64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 90, 0)).save(out, format="JPEG")
    return out.getvalue()


# ----- the happy path --------------------------------------------------------------------------------


def test_generation_uses_the_key_from_the_secret_and_returns_usage(make_router, emu_a, emu_b):
    result = make_router().call(gen(), deadline=soon())
    assert result.route == "emu-a:gpt-image-1.5"
    assert len(result.images) == 1 and size_of(result.images[0].data) == (1024, 1024)
    assert result.usage is not None and result.usage["total_tokens"] > 0
    assert result.meta["quality"] == "low"
    (seen,) = emu_a.requests
    assert seen.headers["authorization"] == f"Bearer {KEY_A}"
    assert "response_format" not in seen.json and not emu_b.requests


def test_streaming_collects_partials_and_final_images(make_router, emu_a):
    result = make_router().call(gen(stream=True, partial_images=2, n=1), deadline=soon())
    assert len(result.partial_images) == 2 and len(result.images) == 1
    assert result.usage is not None and emu_a.requests[0].json["stream"] is True


# ----- retries and failover --------------------------------------------------------------------------


def test_429_then_success_is_retried_once_and_succeeds(make_router, emu_a, emu_b):
    emu_a.add_faults({"status": 429, "retry_after": "1"})
    sleeps: list[float] = []
    result = make_router(sleeps=sleeps).call(gen(), deadline=soon())
    assert result.route == "emu-a:gpt-image-1.5"
    assert len(emu_a.requests) == 2 and not emu_b.requests
    assert sleeps == [1.0]  # the upstream's retry-after, honoured


def test_500_on_route_a_fails_over_to_route_b(make_router, emu_a, emu_b):
    emu_a.set_fault_mode({"status": 500})
    sleeps: list[float] = []
    result = make_router(sleeps=sleeps).call(gen(), deadline=soon())
    assert result.route == "emu-b:gpt-image-1.5"
    assert len(emu_a.requests) == 3 and len(emu_b.requests) == 1  # max_attempts on A, then B
    assert emu_b.requests[0].headers["authorization"] == f"Bearer {KEY_B}"
    assert len(sleeps) == 2 and all(0 <= s <= 1.0 for s in sleeps)  # full-jitter backoff


def test_dropped_connection_is_retried(make_router, emu_a):
    emu_a.add_faults({"drop": True})
    assert make_router().call(gen(), deadline=soon()).route == "emu-a:gpt-image-1.5"
    assert len(emu_a.requests) == 2


def test_every_route_failing_is_a_502_that_says_do_not_retry(make_router, emu_a, emu_b):
    emu_a.set_fault_mode({"status": 503})
    emu_b.set_fault_mode({"status": 502})
    with pytest.raises(UpstreamError) as info:
        make_router().call(gen(), deadline=soon())
    assert (info.value.status, info.value.code, info.value.headers) == (
        502,
        "upstream_error",
        {"x-should-retry": "false"},
    )


def test_hung_upstream_ends_in_upstream_timeout_before_the_deadline(make_router, emu_a, emu_b):
    emu_a.add_faults({"delay": 5.0})
    budget = 1.2
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as info:
        make_router().call(gen(), deadline=started + budget)
    elapsed = time.monotonic() - started
    assert (info.value.status, info.value.code) == (504, "timeout")
    assert 0.7 < elapsed < budget  # waited for the upstream, but stopped before the deadline
    assert len(emu_a.requests) == 1 and not emu_b.requests


def test_upstream_400_reaches_the_caller_with_its_message_and_is_not_retried(make_router, emu_a, emu_b):
    emu_a.add_faults({"status": 400, "message": "Your prompt was rejected: otters are not allowed."})
    with pytest.raises(InvalidRequest) as info:
        make_router().call(gen(), deadline=soon())
    assert info.value.status == 400
    assert info.value.message.startswith("Your prompt was rejected: otters are not allowed.")
    assert len(emu_a.requests) == 1 and not emu_b.requests


def test_upstream_400_with_param_and_code_from_the_emulators_own_validation(make_router, emu_a):
    request = gen(model="gpt-image-1-mini", size="5000x5000")  # the emulator refuses sides above 4096
    with pytest.raises(InvalidRequest) as info:
        make_router().call(request, deadline=soon())
    assert (info.value.param, info.value.code) == ("size", "invalid_value")
    assert "5000x5000" in info.value.message and len(emu_a.requests) == 1


@pytest.mark.parametrize("fault", [{"malformed_json": True}, {"truncated_b64": True}])
def test_malformed_json_and_truncated_base64_are_502(make_router, emu_a, fault):
    emu_a.add_faults(fault)
    with pytest.raises(UpstreamError) as info:
        make_router().call(gen(model="gpt-image-1-mini"), deadline=soon())
    assert info.value.status == 502 and not isinstance(info.value, UpstreamTimeout)
    assert len(emu_a.requests) == 1  # a broken answer is not retried on the same route


@pytest.mark.parametrize("fault", [{"malformed_json": True}, {"truncated_b64": True}])
def test_broken_streams_are_502(make_router, emu_a, fault):
    emu_a.add_faults(fault)
    with pytest.raises(UpstreamError) as info:
        make_router().call(gen(model="gpt-image-1-mini", stream=True, partial_images=1), deadline=soon())
    assert info.value.status == 502


def test_truncated_base64_on_route_a_fails_over_to_b(make_router, emu_a, emu_b):
    emu_a.add_faults({"truncated_b64": True})
    assert make_router().call(gen(), deadline=soon()).route == "emu-b:gpt-image-1.5"


# ----- translation of retired models -----------------------------------------------------------------


def test_dall_e_3_reaches_the_upstream_as_the_current_model_and_returns_at_the_clients_size(
    make_router, emu_a
):
    request = ImageRequest(
        "generations",
        "dall-e-3",
        {
            "prompt": "a lighthouse at dawn",
            "n": 1,
            "size": "1792x1024",
            "quality": "hd",
            "style": "natural",
            "response_format": "url",
        },
    )
    result = make_router().call(request, deadline=soon())
    (seen,) = emu_a.requests
    assert seen.path == "/v1/images/generations"
    assert seen.json == {
        "model": "gpt-image-1.5",
        "prompt": "a lighthouse at dawn\n\nStyle: natural, realistic, understated.",
        "n": 1,
        "size": "1536x1024",
        "quality": "high",
    }
    assert size_of(result.images[0].data) == (1792, 1024)
    assert result.images[0].revised_prompt == seen.json["prompt"]
    assert result.usage is not None  # for metering; the service renders dall-e-3 without it


def test_dall_e_2_small_generation_is_resized_back(make_router, emu_a):
    request = ImageRequest(
        "generations",
        "dall-e-2",
        {"prompt": "a cat", "n": 2, "size": "256x256", "quality": "standard", "response_format": "url"},
    )
    result = make_router().call(request, deadline=soon())
    assert emu_a.requests[0].json["size"] == "1024x1024" and emu_a.requests[0].json["quality"] == "low"
    assert [size_of(img.data) for img in result.images] == [(256, 256), (256, 256)]
    assert all(img.revised_prompt is None for img in result.images)


def test_dall_e_2_variation_is_served_as_an_edit(make_router, emu_a):
    source = ImageFile(
        "image", png((256, 256)), filename="otter.png", format="png", width=256, height=256, mode="RGB"
    )
    request = ImageRequest(
        "variations", "dall-e-2", {"n": 1, "size": "256x256", "response_format": "url"}, images=[source]
    )
    result = make_router().call(request, deadline=soon())
    (seen,) = emu_a.requests
    assert seen.path == "/v1/images/edits"
    assert seen.form["model"] == "gpt-image-1.5" and seen.form["prompt"].startswith("Create a variation")
    assert [(f[0], f[1], f[2]) for f in seen.files] == [("image", "otter.png", "image/png")]
    assert size_of(result.images[0].data) == (256, 256)


# ----- multipart edits -------------------------------------------------------------------------------


def test_multipart_edits_forward_every_file_with_its_name_and_type(make_router, emu_a):
    images = [
        ImageFile(
            "image[0]", png(), filename="body-lotion.png", format="png", width=64, height=64, mode="RGB"
        ),
        ImageFile("image[1]", jpeg(), filename="soap.jpg", format="jpeg", width=64, height=64, mode="RGB"),
    ]
    mask = ImageFile(
        "mask", png(alpha=True), filename="mask.png", format="png", width=64, height=64, mode="RGBA"
    )
    request = ImageRequest(
        "edits",
        "gpt-image-1.5",
        {
            "prompt": "a gift basket",
            "n": 1,
            "size": "1024x1024",
            "quality": "low",
            "input_fidelity": "low",
            "response_format": "b64_json",
        },
        images=images,
        mask=mask,
    )
    result = make_router().call(request, deadline=soon())
    (seen,) = emu_a.requests
    assert seen.path == "/v1/images/edits"
    assert [(f[0], f[1], f[2], f[3]) for f in seen.files] == [
        ("image[]", "body-lotion.png", "image/png", len(images[0].data)),
        ("image[]", "soap.jpg", "image/jpeg", len(images[1].data)),
        ("mask", "mask.png", "image/png", len(mask.data)),
    ]
    assert seen.form["input_fidelity"] == "low" and seen.form["n"] == "1"
    assert result.usage is not None and result.usage["input_tokens_details"]["image_tokens"] == 130


def test_a_retried_edit_sends_the_files_again(make_router, emu_a):
    emu_a.add_faults({"status": 503})
    image = ImageFile("image", png(), filename="a.png", format="png", width=64, height=64, mode="RGB")
    request = ImageRequest(
        "edits",
        "gpt-image-1.5",
        {"prompt": "p", "n": 1, "size": "1024x1024", "quality": "low"},
        images=[image],
    )
    make_router().call(request, deadline=soon())
    assert [r.files for r in emu_a.requests] == [[("image", "a.png", "image/png", len(image.data))]] * 2


# ----- Azure -----------------------------------------------------------------------------------------


def test_azure_provider_uses_deployment_path_api_version_and_api_key(make_router, emu_b):
    result = make_router().call(gen(model="gpt-image-2"), deadline=soon())
    assert result.route == "azure:img-deploy"
    (seen,) = emu_b.requests
    assert seen.path == "/openai/deployments/img-deploy/images/generations"
    assert seen.query == {"api-version": AZURE_VERSION}
    assert seen.deployment == "img-deploy"
    assert seen.headers["api-key"] == KEY_B and "authorization" not in seen.headers
    assert "model" not in seen.json


def test_azure_edit_is_multipart_on_the_deployment(make_router, emu_b):
    image = ImageFile("image", png(), filename="in.png", format="png", width=64, height=64, mode="RGB")
    request = ImageRequest(
        "edits", "gpt-image-2", {"prompt": "p", "n": 1, "size": "1024x1024", "quality": "low"}, images=[image]
    )
    make_router().call(request, deadline=soon())
    (seen,) = emu_b.requests
    assert seen.path == "/openai/deployments/img-deploy/images/edits"
    assert seen.files == [("image", "in.png", "image/png", len(image.data))]


# ----- cool-down -------------------------------------------------------------------------------------


def test_cooldown_skips_a_failing_route_and_returns_after_the_cooldown(make_router, emu_a, emu_b):
    clock = FakeClock()
    cooldowns = CooldownTracker(clock)
    router = make_router(cooldowns=cooldowns, cooldown_seconds=30.0)
    emu_a.set_fault_mode({"status": 500})
    assert router.call(gen(), deadline=soon()).route == "emu-b:gpt-image-1.5"  # 3 failures on A: cooled
    assert len(emu_a.requests) == 3

    emu_a.set_fault_mode(None)  # A has recovered, but is still cooling down
    assert router.call(gen(), deadline=soon()).route == "emu-b:gpt-image-1.5"
    assert len(emu_a.requests) == 3  # skipped without a request

    clock.now += 31
    assert router.call(gen(), deadline=soon()).route == "emu-a:gpt-image-1.5"
    assert len(emu_a.requests) == 4


def test_400s_never_cool_a_route_down(make_router, emu_a):
    cooldowns = CooldownTracker(FakeClock())
    router = make_router(cooldowns=cooldowns)
    emu_a.add_faults(*[{"status": 400}] * 4)
    for _ in range(4):
        with pytest.raises(InvalidRequest):
            router.call(gen(), deadline=soon())
    assert router.call(gen(), deadline=soon()).route == "emu-a:gpt-image-1.5"


# ----- nothing leaks ---------------------------------------------------------------------------------


LEAKY = "Upstream said: see http://{host}/v1/images/generations with key {key} at {host}"


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500},
        {"status": 400, "message": LEAKY},
        {"status": 429, "retry_after": "1", "message": LEAKY},
        {"status": 401},
        {"malformed_json": True},
        {"truncated_b64": True},
        {"drop": True},
        {"delay": 3.0},
    ],
)
def test_no_secret_or_host_in_any_raised_error(make_router, emu_a, emu_b, fault):
    host = emu_a.base_url.removeprefix("http://")
    if "message" in fault:
        fault = {**fault, "message": fault["message"].format(host=host, key=KEY_A)}
    emu_a.set_fault_mode(fault)
    emu_b.set_fault_mode(fault)
    with pytest.raises(ApiError) as info:
        make_router().call(gen(), deadline=time.monotonic() + (0.8 if "delay" in fault else 10))
    text = json.dumps(info.value.body()) + json.dumps(info.value.headers) + str(info.value)
    for secret in (KEY_A, KEY_B, "127.0.0.1", str(emu_a.port), str(emu_b.port), SECRET_ID, "sk-"):
        assert secret not in text, (secret, text)


def test_wrong_upstream_key_is_a_502_not_the_upstreams_401(tmp_path, emu_a, emu_b):
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(
            Name=SECRET_ID,
            SecretString=json.dumps(
                {"a": {"api_key": "sk-wrong-key-123456"}, "b": {"api_key": "sk-wrong-key-654321"}}
            ),
        )
        path = tmp_path / "routes.json"
        path.write_text(json.dumps(routes(emu_a, emu_b)))
        settings = Settings(
            "b", "k", "u", "j", "i", "q", routes_source=str(path), upstream_secret_id=SECRET_ID
        )
        router = build_router(settings, Catalog.load(), secrets_client=client, cooldowns=CooldownTracker())
        with pytest.raises(UpstreamError) as info:
            router.call(gen(), deadline=soon())
    assert info.value.status == 502 and "sk-wrong" not in info.value.message
    assert len(emu_a.requests) == 1 and len(emu_b.requests) == 1  # no retry on a refused key: fail over


def test_no_secret_or_host_in_any_log_record(make_router, emu_a, emu_b, caplog):
    host = emu_a.base_url.removeprefix("http://")
    caplog.set_level("DEBUG", logger="imagegw")
    leaky = LEAKY.format(host=host, key=KEY_A)
    emu_a.add_faults(
        {"status": 500, "message": leaky}, {"drop": True}, {"status": 401}, {"malformed_json": True}
    )
    emu_b.add_faults({"status": 400, "message": leaky})
    router = make_router(max_attempts=2)
    with pytest.raises(ApiError):
        router.call(gen(), deadline=soon())  # A: 500, drop -> B: 400
    with pytest.raises(ApiError):
        router.call(gen(model="gpt-image-1-mini"), deadline=soon())  # A: 401
    with pytest.raises(ApiError):
        router.call(gen(model="gpt-image-1-mini"), deadline=soon())  # A: malformed
    attempts = [r for r in caplog.records if r.getMessage() == "upstream attempt"]
    assert [getattr(r, "outcome", None) for r in attempts] == [
        "retry",
        "failover",
        "rejected",
        "failover",
        "failover",
    ]
    assert all(getattr(r, "upstream_route", "").startswith("emu-") for r in attempts)
    ours = [r for r in caplog.records if r.name.split(".")[0] == "imagegw"]  # not botocore's DEBUG noise
    assert len(ours) >= len(attempts) > 0
    dumped = "\n".join(json.dumps(r.__dict__, default=str) for r in ours)
    for secret in (KEY_A, KEY_B, host, emu_b.base_url, "sk-emulator"):
        assert secret not in dumped, secret
