"""The API Gateway event side of the handlers: body decoding, request ids, header handling."""

import base64

from imagegw.api import http_request, request_id_of


def event(body, *, b64=False, headers=None, request_id="c6af9ac6-7b61-11e6-9a41-93e8deadbeef"):
    return {
        "httpMethod": "POST",
        "path": "/v1/images/edits",
        "headers": headers
        or {"Content-Type": "multipart/form-data; boundary=x", "Authorization": "Bearer k"},
        "requestContext": {"requestId": request_id},
        "body": body,
        "isBase64Encoded": b64,
    }


def test_base64_bodies_are_decoded_to_the_exact_bytes():
    raw = bytes(range(256)) * 4
    request = http_request(event(base64.b64encode(raw).decode(), b64=True))
    assert request.body == raw


def test_text_bodies_become_utf8_bytes():
    request = http_request(event('{"prompt": "Loutre de mer \u00e9"}'))
    assert request.body == '{"prompt": "Loutre de mer \u00e9"}'.encode()


def test_missing_body_is_empty_bytes():
    assert http_request(event(None)).body == b""


def test_header_names_are_lower_cased():
    request = http_request(
        event("{}", headers={"Content-Type": "application/json", "AUTHORIZATION": "Bearer k"})
    )
    assert request.content_type == "application/json"
    assert request.headers["authorization"] == "Bearer k"


def test_request_id_derives_from_api_gateway_and_is_stable():
    e = event("{}")
    first = request_id_of(e)
    assert first == "req_c6af9ac67b6111e69a4193e8deadbeef"
    assert request_id_of(e) == first
    assert http_request(e).request_id == first


def test_request_id_without_request_context_is_generated():
    e = event("{}")
    del e["requestContext"]
    assert request_id_of(e).startswith("req_")
    assert len(request_id_of(e)) == 36
