"""The routes document the local stack uses: the shipped routes pointed at a local upstream."""

from imagegw.upstream import PROVIDER_TYPES, shipped_routes_document
from imagegw.upstream.config import parse_routes
from imagegw_dev.local_routes import local_routes


def test_local_routes_point_the_shipped_routes_at_a_local_upstream():
    doc, creds = local_routes("http://127.0.0.1:8089/v1/", "sk-emulator-1")
    assert doc["providers"]["openai"]["base_url"] == "http://127.0.0.1:8089/v1"
    assert creds == {"openai": {"api_key": "sk-emulator-1"}}
    assert doc["models"] == shipped_routes_document()["models"]
    doc, creds = local_routes("http://127.0.0.1:8089/v1", "")
    assert creds == {} and "credential" not in doc["providers"]["openai"]


def test_with_the_emulator_every_bedrock_model_is_routed_and_core_edits_go_to_inpainting():
    doc, _ = local_routes("http://127.0.0.1:8089/v1", "", bedrock_url="http://127.0.0.1:8089")
    assert doc["providers"]["bedrock"]["endpoint_url"] == "http://127.0.0.1:8089"
    for name in ("sd3.5-large", "stable-image-core", "stable-image-ultra", "nova-canvas"):
        assert doc["models"][name], name
    config = parse_routes(doc, PROVIDER_TYPES)
    [edit] = config.routes_for("stable-image-core", "edits")
    [generate] = config.routes_for("stable-image-core", "generations")
    assert edit.model == "stability.stable-image-inpaint-v1:0"
    assert generate.model == "stability.stable-image-core-v1:1"
    assert [r.model for r in config.routes_for("stable-image-ultra", "generations")] == [
        "stability.stable-image-ultra-v1:1"
    ]
