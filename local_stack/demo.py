"""Loads the demo: the MovieLens catalog and its 610 users, through the paths a deployment uses.

The catalog goes in as the build job publishes it (items table + vector snapshot);
the users' ratings go in as events through POST /events, Kinesis and the events function.
"""
from __future__ import annotations

import csv
import logging
import threading
import time
from pathlib import Path
from typing import Any

from local_stack.client import ApiClient
from local_stack.stack import LocalStack
from model_build import catalog as catalog_stage
from model_build import collaborative as collaborative_stage
from model_build import paths
from model_build.data import read_interactions, title_and_rest
from model_build.publish import publish_release, write_items
from recsys.settings import Settings

log = logging.getLogger("local_stack")
EVENTS_PER_REQUEST = 500


def load_demo(stack: LocalStack, client: ApiClient, data: Path, catalog_npz: Path) -> dict:
    """Publishes the models and the catalog snapshot, then writes the items while the users'
    events flow; returns once the stack is ready (`LocalStack.ready`: the streams drained
    and read by every function). The catalog is embedded with the stack's encoder
    (`LocalStack.model_dir`, else the layer's); the collaborative model is the
    collaborative.npz beside the catalog, its new-item maps fitted in that encoder's space."""
    model = stack.model_dir or paths.ENCODER_MODEL
    collaborative_npz = catalog_npz.with_name("collaborative.npz")
    # Nothing to do when current; a catalog of another encoder or other data is rebuilt.
    catalog_stage.run(data, model, catalog_npz, cache=catalog_npz.with_name("vector_cache.npz"))
    collaborative_stage.run(data, collaborative_npz, catalog_npz)
    settings = Settings.from_env(stack.environment_of("ApiFunction"))
    written_at = time.time()
    # To the stack's bucket only: each start would otherwise leave another ~85 MB copy under build/releases.
    version, index, model_version = publish_release(settings, data, catalog_npz, collaborative_npz,
                                                    model, written_at)
    stack.loading("the demo's items and events")
    # A daemon thread, not an executor: Ctrl-C must not wait for the items to be written.
    written: dict[str, Any] = {}
    items = threading.Thread(target=lambda: written.update(count=write_items(settings, data, index, model_version,
                                                                             written_at)),
                             name="demo-items", daemon=True)
    items.start()
    users = load_users(stack, client, data)
    items.join()
    if "count" not in written:
        raise RuntimeError("writing the demo's items failed; see the log above")
    stack.ready()
    return {"items": written["count"], "release": version, "model_version": model_version, **users}


def put_items(admin: ApiClient, path: Path) -> int:
    """Writes each row of a CSV of items through PUT /items/{item_id} (the admin key), as a
    shop's catalog feed would: columns item_id and title (or text), optional description and
    categories ("|"-separated); every other column becomes an attribute. Returns how many
    were written; the first refused row raises with the API's answer."""
    written = 0
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            item_id, title = row.pop("item_id", None), row.pop("title", None) or row.pop("text", None)
            if not item_id or not title or None in row:
                raise ValueError(f"{path}: row {written + 1} needs item_id and title (or text), and no more fields "
                                 f"than the header (quote a field with a comma)")
            title, rest = title_and_rest(title.strip())  # a long text goes on in the description
            description = " ".join(part for part in (rest, row.pop("description", "") or "") if part)
            body: dict[str, Any] = {"title": title, "description": description}
            categories = row.pop("categories", "")
            if categories:
                body["categories"] = categories.split("|")
            body["attributes"] = {name: value for name, value in row.items() if value}
            status, answer = admin.put(f"/items/{item_id}", body)
            if status != 200:
                raise RuntimeError(f"{path}: PUT /items/{item_id} answered {status}: {answer}")
            written += 1
    return written


def rating_events(data: Path) -> list[dict]:
    """Every interaction as the event it is (a rating, or a choice where the ratings are one
    value: model_build.data.rating_kind), grouped by user: a user's history arrives in order and
    together, as a backfill would send it, so each batch touches few profiles."""
    return [r.as_event().to_json() for r in sorted(read_interactions(data), key=lambda r: (r.user_id, r.timestamp))]


def load_users(stack: LocalStack, client: ApiClient, data: Path, timeout: float = 600) -> dict:
    """Posts every interaction as an event (`rating_events`), then waits until every consumer of the stream (profiles,
    popularity) has applied them."""
    events = rating_events(data)
    mappings = stack.mappings_reading("EventsStream")
    before = {m.name: m.processed for m in mappings}
    accepted = 0
    for start in range(0, len(events), EVENTS_PER_REQUEST):
        status, body = client.post("/events", {"events": events[start:start + EVENTS_PER_REQUEST]})
        if status != 202 or body["errors"]:
            raise RuntimeError(f"loading ratings failed at event {start}: {status} {body}")
        accepted += body["accepted"]
    log.info("posted %d events; applied so far: %s", accepted,
             ", ".join(f"{m.name} {m.processed - before[m.name]}" for m in mappings))
    deadline = time.time() + timeout
    for mapping in mappings:
        while mapping.processed - before[mapping.name] < accepted:
            if time.time() > deadline:
                raise RuntimeError(f"{mapping.name}: only {mapping.processed - before[mapping.name]} of {accepted} "
                                   f"events applied in {timeout:.0f} s")
            time.sleep(0.2)
    return {"events": accepted, "users": len({e["user_id"] for e in events}),
            "dead_lettered": sum(m.dead_lettered for m in mappings)}
