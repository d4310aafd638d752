"""Lambda handler for POST /v1/images/edits: everything lives in the imagegw layer."""

from imagegw.api import make_api_handler

lambda_handler = make_api_handler("edits")
