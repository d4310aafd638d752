"""What ends a job and what lets it run again: the caller's own errors are final, transient ones are not."""

from __future__ import annotations

import pytest

from imagegw.errors import (
    InvalidApiKey,
    InvalidRequest,
    ModelNotAllowed,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from imagegw.jobs.submission import error_of
from imagegw.jobs.worker import is_final_error, is_final_record


@pytest.mark.parametrize(
    ("exc", "final"),
    [
        (InvalidRequest("bad", param="size"), True),
        (InvalidApiKey("revoked"), True),
        (ModelNotAllowed("no"), True),
        (QuotaExceeded("out of quota"), True),
        (RateLimited("slow down", retry_after=3), False),
        (UpstreamError(), False),
        (UpstreamTimeout(), False),
        (ServiceUnavailable("later"), False),
        (RuntimeError("boom"), False),
    ],
)
def test_only_the_callers_own_errors_end_a_job(exc, final):
    assert is_final_error(exc) is final


def test_a_job_runs_again_only_after_a_transient_failure():
    assert is_final_record({"status": "succeeded"})
    assert is_final_record({"status": "failed", "error": {"status": 400, "code": "invalid_value"}})
    assert not is_final_record({"status": "failed", "error": {"status": 502, "code": "upstream_error"}})
    assert not is_final_record({"status": "queued"})
    assert not is_final_record({"status": "running"})


def test_error_of_is_the_http_error_body_plus_status():
    assert error_of(InvalidRequest("Bad size.", param="size", code="invalid_value")) == {
        "message": "Bad size.",
        "type": "invalid_request_error",
        "param": "size",
        "code": "invalid_value",
        "status": 400,
    }
    internal = error_of(KeyError("secret detail"))
    assert internal["status"] == 500 and "secret detail" not in internal["message"]
