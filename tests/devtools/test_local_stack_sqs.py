"""The local stack's SQS event source: received messages as Lambda's SQS event, partial batch responses."""

import pytest

from imagegw_dev.local_stack import failed_message_ids, sqs_event


def test_received_messages_become_lambdas_sqs_event():
    received = [
        {
            "MessageId": "m-1",
            "ReceiptHandle": "rh-1",
            "MD5OfBody": "abc",
            "Body": '{"version": 1}',
            "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1700000000000"},
            "MessageAttributes": {"kind": {"StringValue": "job", "DataType": "String"}},
        }
    ]
    event = sqs_event(received, "arn:aws:sqs:us-east-1:123456789012:JobsQueue")
    assert event == {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "rh-1",
                "body": '{"version": 1}',
                "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1700000000000"},
                "messageAttributes": {
                    "kind": {
                        "stringValue": "job",
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": "String",
                    }
                },
                "md5OfBody": "abc",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:JobsQueue",
                "awsRegion": "us-east-1",
            }
        ]
    }


@pytest.mark.parametrize(
    ("result", "report", "failed"),
    [
        ({"batchItemFailures": []}, True, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, True, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, True, {"a", "b"}),  # invalid: whole batch
        ({"batchItemFailures": "b"}, True, {"a", "b"}),
        (None, True, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, False, set()),  # not enabled: ignored
    ],
)
def test_partial_batch_responses_as_lambda_reads_them(result, report, failed):
    assert failed_message_ids(result, ["a", "b"], report) == failed
