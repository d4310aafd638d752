"""Lambda's SQS event source mapping in front of the jobs worker: long-poll a batch, invoke the function
with the SQS event, delete what succeeded, leave the rest to the queue's visibility timeout and redrive."""

from __future__ import annotations

import base64
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagegw_dev.local_stack.functions import FunctionPool, function_pool
from imagegw_dev.local_stack.resources import REGION
from imagegw_dev.local_stack.template_values import ref_target, template_number
from imagegw_dev.template import resources


@dataclass
class QueueSubscription:
    """An SQS event of a function in the template: which queue feeds it, how many records at a time."""

    function_name: str
    queue: str  # the queue's logical id
    function: FunctionPool
    batch_size: int = 10
    report_batch_item_failures: bool = False


def sqs_subscriptions(template: dict[str, Any], root: Path) -> list[QueueSubscription]:
    """The SQS events of the template's functions, each bound to a pool of its handler module."""
    found = []
    for name, props in resources(template, "AWS::Serverless::Function").items():
        for event in (props.get("Events") or {}).values():
            if event.get("Type") != "SQS":
                continue
            spec = event.get("Properties") or {}
            queue = ref_target(spec.get("Queue"))
            if queue is None:
                continue
            response_types = spec.get("FunctionResponseTypes") or []
            found.append(
                QueueSubscription(
                    function_name=name,
                    queue=queue,
                    function=function_pool(name, props, template, root),
                    batch_size=int(template_number(spec.get("BatchSize"), template, 10)),
                    report_batch_item_failures="ReportBatchItemFailures" in response_types,
                )
            )
    return found


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source passes to the function, from ReceiveMessage's messages."""
    records = []
    for message in messages:
        attributes = {k: str(v) for k, v in (message.get("Attributes") or {}).items()}
        message_attributes = {}
        for name, value in (message.get("MessageAttributes") or {}).items():
            item: dict[str, Any] = {
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value.get("DataType", "String"),
            }
            if "StringValue" in value:
                item["stringValue"] = value["StringValue"]
            if "BinaryValue" in value:
                item["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
            message_attributes[name] = item
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message.get("Body", ""),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def failed_message_ids(result: Any, message_ids: list[str], report_batch_item_failures: bool) -> set[str]:
    """Which messages stay on the queue after an invocation, as Lambda decides it."""
    if not report_batch_item_failures:
        return set()
    if result is None:
        return set()
    failures = result.get("batchItemFailures") if isinstance(result, dict) else "invalid"
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(message_ids)
    failed = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if identifier not in message_ids:
            return set(message_ids)  # an invalid response fails the whole batch
        failed.add(identifier)
    return failed


class SqsEventSource:
    """Lambda's SQS event source mapping, locally: long-poll a batch, invoke the function with the SQS
    event, delete the messages that succeeded. The rest (listed in `batchItemFailures`, or the whole batch
    when the function raised) stay on the queue: they come back after the visibility timeout, and move to
    the dead-letter queue after the redrive policy's maxReceiveCount."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        subscription: QueueSubscription,
        *,
        pollers: int = 2,
        quiet: bool = False,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.subscription = subscription
        self.queue_arn: str = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.quiet = quiet
        self._pollers = pollers
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> SqsEventSource:
        for index in range(self._pollers):
            name = f"sqs:{self.subscription.queue}->{self.subscription.function_name}:{index}"
            thread = threading.Thread(target=self._run, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once(wait_seconds=1)
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._log(f"polling {self.subscription.queue} failed: {exc!r}")
                self._stop.wait(1)

    def poll_once(self, wait_seconds: int = 0) -> int:
        """One receive-invoke-delete cycle; the number of messages received."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(10, self.subscription.batch_size),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        ids = [m["MessageId"] for m in messages]
        try:
            result = self.subscription.function.invoke(sqs_event(messages, self.queue_arn))
            failed = failed_message_ids(result, ids, self.subscription.report_batch_item_failures)
        except Exception as exc:  # the invocation failed: every message of the batch is retried
            self._log(f"{self.subscription.function_name} failed on a batch of {len(ids)}: {exc!r}")
            failed = set(ids)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(messages)

    def _log(self, text: str) -> None:
        if not self.quiet:
            print(f"imagegw local: {text}", file=sys.stderr, flush=True)
