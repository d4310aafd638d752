"""The routes document the local stack uses: the shipped routes pointed at a local upstream."""

from imagegw.upstream import shipped_routes_document
from imagegw_dev.local_routes import local_routes


def test_local_routes_point_the_shipped_routes_at_a_local_upstream():
    doc, creds = local_routes("http://127.0.0.1:8089/v1/", "sk-emulator-1")
    assert doc["providers"]["openai"]["base_url"] == "http://127.0.0.1:8089/v1"
    assert creds == {"openai": {"api_key": "sk-emulator-1"}}
    assert doc["models"] == shipped_routes_document()["models"]
    doc, creds = local_routes("http://127.0.0.1:8089/v1", "")
    assert creds == {} and "credential" not in doc["providers"]["openai"]
