"""What each ops command does, as functions the tests call too."""
from __future__ import annotations

import base64
import csv
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from recsys import privacy
from recsys.adapters.aws import aws_client
from recsys.adapters.events import RawEventLog
from recsys.adapters.profiles import ProfileRepository
from recsys.adapters.tracking import ImpressionStore
from recsys.events import parse_event
from recsys.settings import Settings

log = logging.getLogger(__name__)
RELEASE_DATA = Path(__file__).resolve().parents[1] / "build" / "release-data"
EXPORT_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "type", "event_id", "dwell_seconds", "query")


def redrive(settings: Settings) -> dict[str, int]:
    """Puts every dead-lettered event back on the events stream, then deletes its message.

    Two kinds of message: records the events function parked (they carry the payload and
    the reason) and the mapping's batch info after retries (the records are read back from
    the stream by sequence number, within the stream's retention). A record that is still
    not a valid event is not put back, where it would only be parked again: a parked one
    stays in the queue (`still_invalid`), one read back from a batch is parked as a message
    of its own with the reason, so the batch's message can go. A message is deleted only
    once all its records are on the stream (`not_put` otherwise, kept for the next
    redrive). Only messages that were in the queue when the redrive began are taken, each
    once: a record that fails again comes back as a new message, which is left for the
    next redrive instead of looping forever.
    """
    settings.require("events_stream", "events_dead_letter_queue")
    sqs = aws_client("sqs", settings.region, settings.endpoint_url)
    kinesis = aws_client("kinesis", settings.region, settings.endpoint_url)
    queue = settings.events_dead_letter_queue
    started_ms = int(time.time() * 1000)
    counts = {"messages": 0, "records": 0, "left_for_later": 0, "still_invalid": 0}
    seen: set[str] = set()
    while True:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       AttributeNames=["SentTimestamp"]).get("Messages", [])
        older = [m for m in messages if int(m.get("Attributes", {}).get("SentTimestamp", 0)) < started_ms
                 and m["MessageId"] not in seen]
        for message in messages:
            if message not in older:  # new since the redrive began, or taken already: visible again at once
                sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"],
                                              VisibilityTimeout=0)
                counts["left_for_later"] += message["MessageId"] not in seen
        if not older:
            return counts
        for message in older:
            seen.add(message["MessageId"])
            body = json.loads(message["Body"])
            if "KinesisBatchInfo" in body:
                records = []
                for record in _read_back(kinesis, body["KinesisBatchInfo"]):
                    reason = _invalid(record["Data"])
                    if reason is None:
                        records.append(record)
                    else:
                        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({
                            "condition": "InvalidRecord", "reason": reason,
                            "data": base64.b64encode(record["Data"]).decode()}))
                        counts["still_invalid"] += 1
            else:
                payload = base64.b64decode(body["data"])
                if _invalid(payload) is not None:  # stays parked with its reason, to be fixed by hand
                    counts["still_invalid"] += 1
                    continue
                records = [{"Data": payload, "PartitionKey": _partition_key(payload)}]
            unsent = _put_in_order(kinesis, settings.events_stream, records)
            if unsent:  # kept in the queue (visible again after its timeout) for the next redrive
                counts["not_put"] = counts.get("not_put", 0) + unsent
                continue
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            counts["messages"] += 1
            counts["records"] += len(records)


def _invalid(payload: bytes) -> str | None:
    """Why the payload is not a valid event (what the events function would park it for), or None."""
    try:
        parse_event(json.loads(payload), now=time.time())
    except ValueError as error:
        return str(error)
    return None


def _put_in_order(kinesis, stream: str, records: list[dict], attempts: int = 3) -> int:
    """Puts the records, retrying what Kinesis refused (throttling); returns how many were
    never taken. Chunks go one at a time, each retried before the next goes, so a user's
    records keep their order. A message whose records were not all taken is redriven again
    later: the profiles and the popularity counters skip an event id they have applied."""
    for start in range(0, len(records), 500):
        pending = records[start:start + 500]
        for attempt in range(attempts):
            response = kinesis.put_records(StreamName=stream, Records=pending)
            if not response.get("FailedRecordCount"):
                break
            pending = [r for r, result in zip(pending, response["Records"], strict=True) if "ErrorCode" in result]
            time.sleep(0.1 * 2 ** attempt)
        else:
            return len(pending) + max(0, len(records) - (start + 500))
    return 0


def _read_back(kinesis, info: dict) -> list[dict]:
    stream_name = info["streamArn"].rsplit("/", 1)[-1]
    iterator = kinesis.get_shard_iterator(StreamName=stream_name, ShardId=info["shardId"],
                                          ShardIteratorType="AT_SEQUENCE_NUMBER",
                                          StartingSequenceNumber=info["startSequenceNumber"])["ShardIterator"]
    end = int(info["endSequenceNumber"])
    found: list[dict[str, Any]] = []
    while iterator:
        response = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        for record in response["Records"]:
            if int(record["SequenceNumber"]) > end:
                return found
            found.append({"Data": record["Data"], "PartitionKey": record["PartitionKey"]})
        if not response["Records"]:
            return found
        iterator = response.get("NextShardIterator")
    return found


def _partition_key(payload: bytes) -> str:
    try:
        user = json.loads(payload).get("user_id")
    except (ValueError, AttributeError):
        user = None
    return user if isinstance(user, str) and user else "dead-letter"


def export_events(settings: Settings, out: Path) -> dict[str, Any]:
    """Every raw applied event as CSV (columns EXPORT_COLUMNS; rating is the value of a
    rating event and empty otherwise), the build job's training data."""
    settings.require("raw_events_bucket")
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(EXPORT_COLUMNS)
        for event in RawEventLog(settings).events():
            writer.writerow([event.user_id, event.item_id or "", "" if event.value is None else event.value,
                             event.timestamp, event.type, event.event_id,
                             "" if event.dwell_seconds is None else event.dwell_seconds, event.query or ""])
            count += 1
    return {"events": count, "out": str(out)}


def export_items(settings: Settings, out: Path) -> dict[str, Any]:
    """Every item of the live catalog as JSON lines (model_build.live_items.export)."""
    from model_build.live_items import export
    return export(settings, out)


def release(settings: Settings, work: Path = RELEASE_DATA) -> dict[str, Any]:
    """A release built from the live catalog and the applied events, published to the stack:
    export the items and the events into `work`, embed (only what the vector cache lacks),
    train the collaborative models and fit the blend, publish with the export's snapshot
    time. Warm functions switch to it at their next pointer check (RELEASE_CHECK_SECONDS)."""
    from model_build import catalog, collaborative, paths, publish

    started = time.perf_counter()
    if work.exists():
        shutil.rmtree(work)
    items = export_items(settings, work / "items.jsonl")
    events = export_events(settings, work / "events.csv")
    catalog_npz, collaborative_npz = work / "catalog.npz", work / "collaborative.npz"
    model = settings.model_dir or paths.ENCODER_MODEL  # the functions' encoder: its release is the one they load
    if catalog.run(work, model, catalog_npz) or \
            collaborative.run(work, collaborative_npz, catalog_npz, fit=True):
        raise RuntimeError("release: a build stage failed (see above)")
    published = publish.publish(settings, work, catalog_npz, collaborative_npz, model,
                                snapshot_at=items["exported_at"])
    return {**published, "exported_items": items["items"], "events": events["events"],
            "seconds": round(time.perf_counter() - started, 1)}


def refold_profiles(settings: Settings, users: list[str] | None = None) -> dict[str, Any]:
    """Every profile's vectors folded again from the user's raw events in the functions'
    encoder's space (`recsys.profile.refold_vectors`): what a release that changes the
    encoder needs. Until then a profile's vectors of the old encoder read as absent
    (`recsys.profile.in_encoder`: the lists lean on the collaborative history, which is kept),
    and its next event starts them afresh. Item events take the live catalog's vectors (an
    item it no longer holds moves nothing); search queries are encoded again. Each profile is
    written with the optimistic lock, its raw events re-read on a conflict (the events
    function logs an event before it writes the profile), so running it while events flow,
    or again, is safe. `users`: only these (default: every profile)."""
    from model_build.progress import progress
    from recsys.adapters.artifacts import S3Releases
    from recsys.adapters.items import ItemRepository
    from recsys.ingest import encode_each, update_profile
    from recsys.live import LiveCatalog
    from recsys.profile import refold_vectors
    from recsys.wiring import encoder_for

    settings.require("profiles_table", "items_table", "artifacts_bucket", "raw_events_bucket")
    encoder = encoder_for(settings)
    index = LiveCatalog(S3Releases(settings), ItemRepository(settings), encoder.version, encoder.dim,
                        collaborative=False).index()
    profiles, raw_events = ProfileRepository(settings), RawEventLog(settings)
    counts = {"profiles": 0, "events": 0, "unencodable_queries": 0}
    for user_id in progress(sorted(profiles.user_ids()) if users is None else users, "refold profiles",
                            unit="profile"):
        def refold(profile, user_id=user_id) -> bool:
            events = list(raw_events.events(user_id))
            queries = sorted({e.query for e in events if e.type == "search" and e.query})
            encoded = dict(zip(queries, encode_each(encoder, queries), strict=True))
            refused = {q for q, vector in encoded.items() if isinstance(vector, Exception)}

            def vector_of(event):
                if event.type == "search":
                    return None if not event.query or event.query in refused else encoded[event.query]
                return index.vector(event.item_id) if event.item_id else None

            refold_vectors(profile, events, vector_of, encoder.version)
            counts["events"] += len(events)
            counts["unencodable_queries"] += len(refused)
            return True

        stored = profiles.get(user_id)
        if stored is not None and update_profile(profiles, user_id, refold, current=stored):
            counts["profiles"] += 1
    return {**counts, "encoder": encoder.version}


def erase_user(settings: Settings, user_id: str) -> dict[str, int]:
    """What DELETE /users/{user_id} does (recsys.privacy.erase_user)."""
    settings.require("profiles_table", "raw_events_bucket")
    impressions = ImpressionStore(settings) if settings.impressions_table else None
    return privacy.erase_user(user_id, ProfileRepository(settings), RawEventLog(settings), impressions,
                              time.time())


def batch_recommendations(settings: Settings, out: str, k: int = 50, users: Path | None = None) -> dict[str, Any]:
    """Lists for every profiled user (or the ids in `users`, one per line) as JSON lines, ranked
    by the API's own code (`Recommender.ranked`: the live catalog, the release's collaborative
    model and blend, each user's variant) without recording them as served. `out` is a path
    or an s3://bucket/key URL (written locally, then uploaded). A user whose stored profile
    cannot be read gets no list and is named in `unreadable`."""
    from model_build.progress import progress
    from recsys.wiring import recommender as build_recommender

    recommender = build_recommender(settings)
    if users is not None:
        ids = [line.strip() for line in users.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        ids = sorted(recommender.profiles.user_ids())
    target = urlparse(out) if out.startswith("s3://") else None
    local = Path(tempfile.mkstemp(suffix=".jsonl")[1]) if target else Path(out)
    local.parent.mkdir(parents=True, exist_ok=True)
    written, unreadable = 0, []
    with open(local, "w", encoding="utf-8") as f:
        for user_id in progress(ids, "batch recommendations", unit="user"):
            try:
                variant, _, _, ranked = recommender.ranked(user_id, k)
            except ValueError as error:  # a stored profile that cannot be read: the others still get lists
                log.warning("no list for %s: its profile cannot be read: %s", user_id, error)
                unreadable.append(user_id)
                continue
            f.write(json.dumps({"user_id": user_id, "variant": variant.name,
                                "model_version": recommender.encoder.version,
                                "items": [item.to_json(n) for n, item in enumerate(ranked)]}) + "\n")
            written += 1
    if target:
        aws_client("s3", settings.region, settings.endpoint_url).upload_file(str(local), target.netloc,
                                                                               target.path.lstrip("/"))
        local.unlink()
    release = recommender.catalog.release
    return {"users": written, "k": k, "out": out, "release": release.version if release else None,
            "unreadable": unreadable}


USER_TOKEN_DEFAULT_SECONDS = 3600
USER_TOKEN_MAX_SECONDS = 30 * 24 * 3600


def user_token(settings: Settings, user_id: str, seconds: int = USER_TOKEN_DEFAULT_SECONDS,
               now: float | None = None) -> dict[str, Any]:
    """A token binding `user_id` for `seconds` (recsys.tokens), signed with the first secret of
    USER_TOKEN_SECRET: what a server hands its signed-in user's app for the x-user-token header
    when the stack has user tokens on. The secret is read from the environment (a deployed
    stack's NoEcho parameter is never in its outputs)."""
    from recsys.events import ID_CHARACTERS, ID_PATTERN, MAX_ID_LENGTH
    from recsys.tokens import TOKEN_HEADER, UserTokens, parse_secrets

    settings.require("user_token_secret")
    if len(user_id) > MAX_ID_LENGTH or not ID_PATTERN.fullmatch(user_id):
        raise ValueError(f"user ids are 1-{MAX_ID_LENGTH} characters of {ID_CHARACTERS}")
    if not 1 <= seconds <= USER_TOKEN_MAX_SECONDS:
        raise ValueError(f"a token lasts 1-{USER_TOKEN_MAX_SECONDS} seconds")
    expires_at = int(time.time() if now is None else now) + seconds
    token = UserTokens(parse_secrets(settings.user_token_secret)).sign(user_id, expires_at)
    return {"user_id": user_id, "expires_at": expires_at, "header": TOKEN_HEADER, "token": token}
