"""Powertools Logger, Metrics and Tracer, one of each per container.

Tracing is off outside Lambda (POWERTOOLS_TRACE_DISABLED is set by the local stack and tests).
"""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="imagegw")
metrics = Metrics(namespace="imagegw", service="imagegw")
tracer = Tracer(service="imagegw")
