"""Lambda handler for the jobs queue (SQS, partial batch responses): everything lives in the imagegw layer."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from imagegw.observability import logger, metrics, tracer
from imagegw.wiring import worker_from_env

# Always a partial batch response, even when every record failed (SQS then redelivers each one).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
worker = worker_from_env()  # settings validated at cold start; AWS clients made on the first record


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=worker.process_record, processor=processor, context=context
    )
