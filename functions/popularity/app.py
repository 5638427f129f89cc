"""Kinesis consumer: folds a batch of user events into its shard's popularity counters."""
from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import KinesisStreamEvent

from recsys import wiring
from recsys.settings import get_settings

logger = Logger()
counter = wiring.popularity_counter(get_settings())


@logger.inject_lambda_context
def lambda_handler(event, context):
    records = list(KinesisStreamEvent(event).records)
    shards = {r.event_id.split(":", 1)[0] for r in records}
    if len(shards) != 1:
        raise ValueError(f"a Kinesis batch comes from one shard, this one from {sorted(shards)}")
    applied = counter.apply(shards.pop(), [(r.kinesis.sequence_number, r.kinesis.data_as_bytes()) for r in records])
    logger.info("popularity batch", extra=applied)
    return applied
