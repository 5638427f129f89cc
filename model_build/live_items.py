"""The live catalog as the build job reads it: every item of the items table, exported as
JSON lines into a dataset directory (`items.jsonl`, which model_build.data reads over the
CSV sources), so items the API added are in the next release."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from recsys.adapters.items import ItemRepository
from recsys.settings import Settings


def export(settings: Settings, out: Path) -> dict[str, Any]:
    """Every item of the live catalog as JSON lines (each as PUT /items/{id} takes it, with its
    item_id): what the build job reads beside the CSV sources (model_build.data), so items
    the API added are in the next release. `exported_at`, taken before the scan starts, is
    the release's snapshot time (`model_build publish --snapshot-at`): the functions read
    again every item written since."""
    settings.require("items_table")
    exported_at = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out, "w", encoding="utf-8") as f:
        for item in ItemRepository(settings).all():
            f.write(json.dumps({"item_id": item.item_id, **{k: v for k, v in item.to_json().items()
                                                            if k != "item_id"}}) + "\n")
            count += 1
    return {"items": count, "out": str(out), "exported_at": exported_at}
