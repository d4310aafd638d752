from imagegw.errors import (
    MAX_MESSAGE_CHARS,
    MAX_PARAM_CHARS,
    InvalidApiKey,
    InvalidRequest,
    ModelNotFound,
    QuotaExceeded,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    to_error_response,
)


def test_invalid_request_maps_to_openai_body():
    mapped = to_error_response(
        InvalidRequest(
            "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter"
        )
    )
    assert mapped.status == 400
    assert mapped.body == {
        "error": {
            "message": "Missing required parameter: 'prompt'.",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "missing_required_parameter",
        }
    }


def test_status_type_and_code_per_class():
    cases = [
        (InvalidApiKey("x"), 401, "invalid_request_error", "invalid_api_key"),
        (ModelNotFound("foo"), 404, "invalid_request_error", "model_not_found"),
        (QuotaExceeded("x"), 429, "insufficient_quota", "insufficient_quota"),
        (RateLimited("x", retry_after=7), 429, "requests", "rate_limit_exceeded"),
        (UpstreamError(), 502, "server_error", "upstream_error"),
        (UpstreamTimeout(), 504, "server_error", "timeout"),
    ]
    for exc, status, type_, code in cases:
        mapped = to_error_response(exc)
        assert (mapped.status, mapped.body["error"]["type"], mapped.body["error"]["code"]) == (
            status,
            type_,
            code,
        )


def test_model_not_found_wording():
    body = to_error_response(ModelNotFound("foo")).body["error"]
    assert body["message"] == "The model 'foo' does not exist or you do not have access to it."
    assert body["param"] == "model"


def test_retry_headers():
    assert to_error_response(RateLimited("slow down", retry_after=7)).headers == {"retry-after": "7"}
    assert to_error_response(UpstreamError()).headers == {"x-should-retry": "false"}
    assert to_error_response(UpstreamTimeout()).headers == {"x-should-retry": "false"}


def test_unknown_exceptions_become_a_bare_500_without_details():
    mapped = to_error_response(RuntimeError("secret host upstream.internal:8443"))
    assert mapped.status == 500
    assert "upstream.internal" not in mapped.body["error"]["message"]
    assert mapped.body["error"]["type"] == "server_error"


def test_what_the_client_sent_is_echoed_at_a_bounded_length():
    name = "a" * 3_000_000  # an unknown key of 3 MB: echoed twice, the answer was over Lambda's 6 MB
    mapped = to_error_response(InvalidRequest(f"Unknown parameter: '{name}'.", param=name))
    error = mapped.body["error"]
    assert len(error["message"]) == MAX_MESSAGE_CHARS + 3 and error["message"].endswith("aaa...")
    assert error["param"] == "a" * MAX_PARAM_CHARS + "..."
    short = InvalidRequest("Unknown parameter: 'seed'.", param="seed")
    assert (short.message, short.param) == ("Unknown parameter: 'seed'.", "seed")
