"""Lambda handler for GET /v1/images/jobs/{job_id}: everything lives in the imagegw layer."""

from imagegw.api import make_api_handler

lambda_handler = make_api_handler("job_status")
