"""Items-table stream consumer: encodes new or changed item text and stores the vector."""
from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from recsys import wiring
from recsys.settings import get_settings

logger = Logger()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
item_encoder = wiring.item_encoder(get_settings())


@logger.inject_lambda_context
def lambda_handler(event, context):
    records = [DynamoDBRecord(r) for r in event["Records"]]
    failures = item_encoder.apply({_sequence(r): (r.dynamodb.new_image if r.dynamodb else None) or {}
                                   for r in records})

    def record_handler(record: DynamoDBRecord) -> None:
        error = failures.get(_sequence(record))
        if error is not None:
            logger.warning("item not encoded", sequence_number=_sequence(record), reason=str(error))
            raise error

    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)


def _sequence(record: DynamoDBRecord) -> str:
    return str(record.dynamodb.sequence_number if record.dynamodb else record.event_id)
