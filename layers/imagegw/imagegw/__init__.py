"""imagegw: an OpenAI-compatible image API for AWS Lambda."""

__version__ = "0.1.0"
