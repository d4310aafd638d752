"""Lambda handler for GET /v1/models and GET /v1/models/{model}: everything lives in the imagegw layer."""

from imagegw.api import make_api_handler

lambda_handler = make_api_handler("models")
