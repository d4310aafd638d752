"""The local stack behind `make dev`: what `sam local` would do, without Docker.

- moto's server (in-process) stands in for S3, DynamoDB, SQS, Secrets Manager and SSM; the bucket, tables and
  queues are created from the resources `template.yaml` declares (same key schemas, TTLs and redrive).
- An HTTP server turns each request into an API Gateway REST proxy event (payload v1; bodies of the
  template's binary media types base64-encoded with `isBase64Encoded: true`), invokes the same handler
  modules Lambda runs (`functions/*/app.py`), and turns the result back into an HTTP response. Like
  Lambda, each concurrent request gets its own warm "container" (a separately imported handler module).
- The upstream is the built-in emulator (a test double), or any OpenAI-compatible service.
- Functions the template subscribes to SQS queues (the jobs worker) are run by a local SQS event source
  mapping, with partial batch responses as Lambda reads them.

Modules: `stack` (the whole stack, `LocalStack`), `resources` (moto resources from the template),
`api_gateway` (the HTTP front, proxy events, gateway errors), `functions` (warm handler modules, the
Lambda context), `sqs_events` (the SQS event source), `template_values` (parameter defaults and refs).
"""

from imagegw_dev.local_stack.api_gateway import (
    API_GATEWAY_PAYLOAD_LIMIT,
    LAMBDA_PAYLOAD_LIMIT,
    ApiGateway,
    ApiRoute,
    api_routes,
    gateway_responses,
    is_binary,
    to_proxy_event,
)
from imagegw_dev.local_stack.functions import FunctionPool, LambdaContext
from imagegw_dev.local_stack.resources import (
    REGION,
    LocalResources,
    aws_env,
    create_queue,
    create_resources,
    create_table,
    moto_session,
)
from imagegw_dev.local_stack.sqs_events import (
    QueueSubscription,
    SqsEventSource,
    failed_message_ids,
    sqs_event,
    sqs_subscriptions,
)
from imagegw_dev.local_stack.stack import LocalStack, StackConfig, project_root

__all__ = [
    "API_GATEWAY_PAYLOAD_LIMIT",
    "LAMBDA_PAYLOAD_LIMIT",
    "REGION",
    "ApiGateway",
    "ApiRoute",
    "FunctionPool",
    "LambdaContext",
    "LocalResources",
    "LocalStack",
    "QueueSubscription",
    "SqsEventSource",
    "StackConfig",
    "api_routes",
    "aws_env",
    "create_queue",
    "create_resources",
    "create_table",
    "failed_message_ids",
    "gateway_responses",
    "is_binary",
    "moto_session",
    "project_root",
    "sqs_event",
    "sqs_subscriptions",
    "to_proxy_event",
]
