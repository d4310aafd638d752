"""The local stack creates what template.yaml declares: tables (keys, indexes, TTL), bucket and queues."""

import json
from pathlib import Path

from imagegw.settings import required_env_names
from imagegw_dev.local_stack import moto_session
from imagegw_dev.template import load_template, resources

TEMPLATE = load_template(Path(__file__).resolve().parents[2] / "template.yaml")


def test_tables_have_the_templates_key_schemas_indexes_and_ttl(local_stack):
    dynamodb = moto_session().client("dynamodb", endpoint_url=local_stack.resources.endpoint_url)
    declared = resources(TEMPLATE, "AWS::DynamoDB::Table")
    assert set(local_stack.resources.tables) == set(declared)
    for logical_id, props in declared.items():
        table = dynamodb.describe_table(TableName=local_stack.resources.tables[logical_id])["Table"]
        assert table["KeySchema"] == props["KeySchema"], logical_id
        assert {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]} == {
            a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]
        }
        indexes = {g["IndexName"]: g["KeySchema"] for g in table.get("GlobalSecondaryIndexes", [])}
        assert indexes == {g["IndexName"]: g["KeySchema"] for g in props.get("GlobalSecondaryIndexes", [])}
        ttl = dynamodb.describe_time_to_live(TableName=table["TableName"])["TimeToLiveDescription"]
        if props.get("TimeToLiveSpecification", {}).get("Enabled"):
            assert ttl["AttributeName"] == props["TimeToLiveSpecification"]["AttributeName"]


def test_queues_exist_with_the_templates_size_limit_and_redrive(local_stack):
    sqs = moto_session().client("sqs", endpoint_url=local_stack.resources.endpoint_url)
    declared = resources(TEMPLATE, "AWS::SQS::Queue")
    assert set(local_stack.resources.queues) == set(declared)
    jobs = sqs.get_queue_attributes(
        QueueUrl=local_stack.resources.queues["JobsQueue"], AttributeNames=["All"]
    )
    attributes = jobs["Attributes"]
    assert attributes["MaximumMessageSize"] == str(declared["JobsQueue"]["MaximumMessageSize"])
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":JobsDeadLetterQueue")


def test_bucket_exists_and_every_required_setting_is_set(local_stack):
    s3 = moto_session().client("s3", endpoint_url=local_stack.resources.endpoint_url)
    assert s3.head_bucket(Bucket=local_stack.resources.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert set(required_env_names()) <= set(local_stack.resources.env())
