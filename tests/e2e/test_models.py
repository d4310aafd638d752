"""GET /v1/models through the local stack with the official SDK: what the key may use and the deployment
routes (the local stack routes every catalog model, Bedrock ones included, to the emulator); every listed
model answers a plain images.generate."""

from __future__ import annotations

import base64
import io

import openai
import pytest
import requests
from PIL import Image

from imagegw.request.catalog import Catalog

CATALOG = Catalog.load()


def png(size=(256, 256), hole=True) -> bytes:
    img = Image.new("RGBA", size, (30, 90, 200, 255))
    if hole:
        img.paste((0, 0, 0, 0), (64, 64, 192, 192))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def first_image(result) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    img.load()
    return img


def test_the_sdk_lists_every_routed_catalog_model(client):
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == set(CATALOG.names())  # the local stack routes them all
    for model in listed.values():
        assert model.object == "model" and model.created > 0 and model.owned_by
    assert listed["sd3.5-large"].owned_by == "stability-ai"
    nova = listed["nova-canvas"].model_dump()
    assert nova["imagegw"]["retired"] == "2026-09-30"
    assert "stability.stable-image-core-v1:1" in nova["imagegw"]["served_by"]
    assert listed["dall-e-3"].model_dump()["imagegw"]["served_by"] == ["gpt-image-1.5"]
    assert "imagegw" not in listed["gpt-image-1.5"].model_dump()


def test_every_listed_model_answers_a_plain_generate(client):
    listed = list(client.models.list())
    assert listed
    for model in listed:
        result = client.images.generate(model=model.id, prompt="A cute little sea otter")
        assert len(result.data) == 1, model.id
        assert result.data[0].url or result.data[0].b64_json, model.id


def test_a_stable_image_core_masked_edit_is_inpainted_at_the_inputs_size(client):
    result = client.images.edit(
        model="stable-image-core",
        image=("otter.png", png()),
        prompt="a hat",
        response_format="b64_json",
        extra_body={"grow_mask": 2},
    )
    img = first_image(result)
    assert img.size == (256, 256)
    assert img.convert("RGB").getpixel((8, 8)) == (30, 90, 200)  # outside the hole: kept


def test_retrieve_by_name_and_by_bedrock_id(client):
    assert client.models.retrieve("dall-e-3").id == "dall-e-3"
    alias = client.models.retrieve("stability.sd3-5-large-v1:0")
    assert alias.id == "stability.sd3-5-large-v1:0" and alias.owned_by == "stability-ai"
    assert client.models.retrieve("gpt-image-2-2026-04-21").id == "gpt-image-2-2026-04-21"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("dall-e-4")
    assert info.value.code == "model_not_found"
    expected = "The model 'dall-e-4' does not exist or you do not have access to it."
    assert info.value.body["message"] == expected


def test_a_bedrock_alias_generates_through_the_emulator(client):
    result = client.images.generate(
        model="stability.stable-image-ultra-v1:1",
        prompt="a lighthouse",
        size="1536x1024",
        response_format="b64_json",
    )
    assert first_image(result).size == (1536, 1024)


def test_a_key_allowed_only_dall_e_3_lists_only_dall_e_3(stack, stack_keys):
    limited = stack_keys.create("dall-e-3 only", allowed_models=["dall-e-3"])
    sdk = openai.OpenAI(base_url=stack["api_url"], api_key=limited.raw_key, max_retries=0, timeout=30)
    assert [m.id for m in sdk.models.list()] == ["dall-e-3"]
    assert sdk.models.retrieve("dall-e-3").id == "dall-e-3"
    with pytest.raises(openai.NotFoundError) as info:
        sdk.models.retrieve("gpt-image-1.5")
    assert info.value.code == "model_not_found"


def test_models_needs_a_valid_key(stack):
    response = requests.get(
        stack["api_url"] + "/models", headers={"Authorization": "Bearer sk-nope"}, timeout=10
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
