"""Kinesis consumer: applies a batch of user events to their profiles."""
from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from recsys import wiring
from recsys.settings import get_settings

logger = Logger()
processor = BatchProcessor(event_type=EventType.KinesisDataStreams)
ingestor = wiring.event_ingestor(get_settings())


@logger.inject_lambda_context
def lambda_handler(event, context):
    records = [KinesisStreamRecord(r) for r in event["Records"]]
    failures = ingestor.apply({r.kinesis.sequence_number: r.kinesis.data_as_bytes() for r in records})

    def record_handler(record: KinesisStreamRecord) -> None:
        error = failures.get(record.kinesis.sequence_number)
        if error is not None:
            logger.warning("event not applied", sequence_number=record.kinesis.sequence_number,
                           reason=str(error))
            raise error

    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
