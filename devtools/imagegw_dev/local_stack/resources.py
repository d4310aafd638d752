"""AWS resources in moto's server, created from the resources template.yaml declares: the bucket, the
tables (same key schemas, indexes and TTLs) and the queues (same redrive), plus the upstream secret."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from imagegw_dev.local_stack.template_values import ref_target
from imagegw_dev.template import resources

REGION = "us-east-1"
UPSTREAM_SECRET_NAME = "imagegw/upstream"  # noqa: S105 - a secret's name, not its value


@dataclass
class LocalResources:
    endpoint_url: str
    bucket: str
    tables: dict[str, str]  # logical id -> table name
    queues: dict[str, str]  # logical id -> queue URL
    upstream_secret_id: str

    def env(self) -> dict[str, str]:
        """The settings a deployed function gets from template.yaml, pointed at the local resources."""
        return {
            "IMAGEGW_BUCKET": self.bucket,
            "IMAGEGW_KEYS_TABLE": self.tables["KeysTable"],
            "IMAGEGW_USAGE_TABLE": self.tables["UsageTable"],
            "IMAGEGW_JOBS_TABLE": self.tables["JobsTable"],
            "IMAGEGW_IDEMPOTENCY_TABLE": self.tables["IdempotencyTable"],
            "IMAGEGW_JOBS_QUEUE_URL": self.queues["JobsQueue"],
            "IMAGEGW_UPSTREAM_SECRET_ID": self.upstream_secret_id,
        }


def aws_env(endpoint_url: str) -> dict[str, str]:
    """Environment that points every boto3 client at moto and away from any real account."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "imagegw",
    }


def moto_session() -> Any:
    """A boto3 session with moto's placeholder credentials, whatever the environment holds."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's placeholder credentials
        region_name=REGION,
    )


def create_resources(
    template: dict[str, Any], endpoint_url: str, upstream_credentials: dict[str, Any]
) -> LocalResources:

    session = moto_session()
    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    tables = {}
    for logical_id, props in resources(template, "AWS::DynamoDB::Table").items():
        tables[logical_id] = logical_id
        create_table(dynamodb, logical_id, props)

    s3 = session.client("s3", endpoint_url=endpoint_url)
    buckets = list(resources(template, "AWS::S3::Bucket"))
    bucket = "imagegw-local-images"
    if buckets:
        s3.create_bucket(Bucket=bucket)

    sqs = session.client("sqs", endpoint_url=endpoint_url)
    queue_props = resources(template, "AWS::SQS::Queue")
    queues: dict[str, str] = {}
    # Dead-letter queues first, so redrive policies can name them.
    ordered = sorted(queue_props, key=lambda lid: "RedrivePolicy" in queue_props[lid])
    for logical_id in ordered:
        queues[logical_id] = create_queue(sqs, logical_id, queue_props[logical_id], queues)

    secrets_client = session.client("secretsmanager", endpoint_url=endpoint_url)
    secret = secrets_client.create_secret(
        Name=UPSTREAM_SECRET_NAME, SecretString=json.dumps(upstream_credentials)
    )
    return LocalResources(endpoint_url, bucket, tables, queues, secret["ARN"])


def create_table(dynamodb: Any, name: str, props: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = [
            {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
            for g in props["GlobalSecondaryIndexes"]
        ]
    dynamodb.create_table(**kwargs)
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
        )


def create_queue(sqs: Any, name: str, props: dict[str, Any], created: dict[str, str]) -> str:
    attributes = {}
    for key in ("MaximumMessageSize", "VisibilityTimeout", "MessageRetentionPeriod"):
        if isinstance(props.get(key), int | str) and str(props[key]).isdigit():
            attributes[key] = str(props[key])
    redrive = props.get("RedrivePolicy")
    if redrive:
        target = ref_target(redrive.get("deadLetterTargetArn"))
        max_receive = redrive.get("maxReceiveCount")
        if not (isinstance(max_receive, int) or str(max_receive).isdigit()):
            max_receive = 3  # a template parameter: the local stack uses the parameter's default
        if target in created:
            arn = f"arn:aws:sqs:{REGION}:123456789012:{target}"
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": int(max_receive)}
            )
    url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url
