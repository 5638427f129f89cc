"""Served lists (impressions, DynamoDB with a TTL) and the online metrics counters (DynamoDB)."""
from __future__ import annotations

from typing import Any

from recsys.adapters.aws import aws_client
from recsys.ports import Impression
from recsys.settings import Settings


class ImpressionStore:
    """Impressions in DynamoDB by recommendation_id (TTL `expires_at`); the by_user index
    (keys only) finds a user's impressions to erase them."""

    def __init__(self, settings: Settings) -> None:
        self.table = settings.impressions_table
        self.retention = settings.impression_retention_days * 86_400
        self.dynamodb = aws_client("dynamodb", settings.region, settings.endpoint_url)

    def put(self, impression: Impression) -> None:
        item = {"recommendation_id": {"S": impression.recommendation_id}, "user_id": {"S": impression.user_id},
                "variant": {"S": impression.variant}, "model_version": {"S": impression.model_version},
                "created_at": {"N": repr(impression.created_at)},
                "items": {"L": [{"S": i} for i in impression.items]},
                "expires_at": {"N": str(int(impression.created_at + self.retention))}}
        if impression.explored:
            item["explored"] = {"L": [{"S": i} for i in impression.explored]}
        self.dynamodb.put_item(TableName=self.table, Item=item)

    def get(self, recommendation_id: str) -> Impression | None:
        found = self.dynamodb.get_item(TableName=self.table, Key={"recommendation_id": {"S": recommendation_id}})
        item = found.get("Item")
        if item is None:
            return None
        return Impression(item["recommendation_id"]["S"], item["user_id"]["S"], item["variant"]["S"],
                          item["model_version"]["S"], [i["S"] for i in item["items"]["L"]],
                          float(item["created_at"]["N"]), [i["S"] for i in item.get("explored", {}).get("L", [])])

    def ids_of(self, user_id: str) -> list[str]:
        ids = []
        for page in self.dynamodb.get_paginator("query").paginate(
                TableName=self.table, IndexName="by_user", KeyConditionExpression="user_id = :u",
                ExpressionAttributeValues={":u": {"S": user_id}}):
            ids += [item["recommendation_id"]["S"] for item in page["Items"]]
        return ids

    def erase(self, user_id: str) -> int:
        """Deletes every impression of the user; returns how many."""
        ids = self.ids_of(user_id)
        for start in range(0, len(ids), 25):
            requests = [{"DeleteRequest": {"Key": {"recommendation_id": {"S": i}}}} for i in ids[start:start + 25]]
            while requests:
                unprocessed = self.dynamodb.batch_write_item(RequestItems={self.table: requests})
                requests = unprocessed.get("UnprocessedItems", {}).get(self.table, [])
        return len(ids)


METRIC_COUNTERS = ("impressions", "clicks", "conversions")


class MetricsStore:
    """Online metrics: one item per (variant, day) whose counters are only ever added to."""

    def __init__(self, settings: Settings) -> None:
        self.table = settings.metrics_table
        self.dynamodb = aws_client("dynamodb", settings.region, settings.endpoint_url)

    def add(self, variant: str, day: str, **counts: int) -> None:
        counts = {name: n for name, n in counts.items() if n}
        if set(counts) - set(METRIC_COUNTERS):
            raise ValueError(f"unknown counters {sorted(set(counts) - set(METRIC_COUNTERS))}")
        if not counts:
            return
        self.dynamodb.update_item(
            TableName=self.table, Key={"variant": {"S": variant}, "day": {"S": day}},
            UpdateExpression="ADD " + ", ".join(f"#{name} :{name}" for name in counts),
            ExpressionAttributeNames={f"#{name}": name for name in counts},
            ExpressionAttributeValues={f":{name}": {"N": str(n)} for name, n in counts.items()})

    def read(self, first_day: str, last_day: str, variant: str | None = None) -> list[dict[str, Any]]:
        """Counters per (variant, day) within the days, by variant then day. Without a
        variant the table is scanned: it holds one small item per variant and day."""
        values = {":a": {"S": first_day}, ":b": {"S": last_day}}
        if variant is not None:
            pages = self.dynamodb.get_paginator("query").paginate(
                TableName=self.table, KeyConditionExpression="variant = :v AND #d BETWEEN :a AND :b",
                ExpressionAttributeNames={"#d": "day"}, ExpressionAttributeValues={**values, ":v": {"S": variant}})
        else:
            pages = self.dynamodb.get_paginator("scan").paginate(
                TableName=self.table, FilterExpression="#d BETWEEN :a AND :b",
                ExpressionAttributeNames={"#d": "day"}, ExpressionAttributeValues=values)
        rows = [{"variant": item["variant"]["S"], "day": item["day"]["S"],
                 **{name: int(item.get(name, {}).get("N", "0")) for name in METRIC_COUNTERS}}
                for page in pages for item in page["Items"]]
        return sorted(rows, key=lambda r: (r["variant"], r["day"]))

