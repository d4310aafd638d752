"""Every sample API event in events/ runs through its function's handler, as `sam local invoke -e` would."""

import json
from pathlib import Path

import pytest

EVENTS = Path(__file__).resolve().parents[2] / "events"

CASES = [
    ("generations.json", "GenerationsFunction", 200),
    ("edits_multipart_base64.json", "EditsFunction", 200),
    ("variations_multipart_base64.json", "VariationsFunction", 200),
    ("job_status.json", "JobStatusFunction", 404),  # a job id nobody submitted
    ("models.json", "ModelsFunction", 200),
    ("model.json", "ModelsFunction", 200),
]


@pytest.mark.parametrize(("name", "function", "status"), CASES)
def test_sample_event_through_its_handler(local_stack, name, function, status):
    event = json.loads((EVENTS / name).read_text())
    event["headers"]["Authorization"] = f"Bearer {local_stack.api_key}"
    pool = local_stack.function_pool(function)
    result = pool.invoke(event)
    assert result["statusCode"] == status, result["body"][:500]
    assert result["multiValueHeaders"]["x-request-id"][0].startswith("req_")
    body = json.loads(result["body"])
    if name == "model.json":
        assert body["id"] == "dall-e-3" and body["object"] == "model"
    elif status == 200:
        assert body["data"]
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}


def test_sample_events_without_a_key_are_refused(local_stack):
    event = json.loads((EVENTS / "generations.json").read_text())
    result = local_stack.function_pool("GenerationsFunction").invoke(event)
    assert result["statusCode"] == 401


def test_the_sample_preflight_is_refused_when_no_origin_is_configured(local_stack):
    event = json.loads((EVENTS / "preflight.json").read_text())
    result = local_stack.function_pool("GenerationsFunction").invoke(event)
    assert result["statusCode"] == 403
    headers = {
        k.lower() for k in {**(result.get("headers") or {}), **(result.get("multiValueHeaders") or {})}
    }
    assert "access-control-allow-origin" not in headers
    assert json.loads(result["body"])["error"]["code"] == "cors_origin_not_allowed"
