"""What a warm function keeps between invocations: the encoder and the live item index
(vectors, categories and popularity)."""
from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache

from recsys.collaborative import Collaborative, CollaborativeModel
from recsys.index import ItemIndex
from recsys.popularity import LivePopularity, PopularityCounters
from recsys.scoring import DEFAULT_WEIGHTS, BlendWeights
from recsys.settings import Settings
from recsys.storage import CatalogSnapshots, ItemRepository, PopularityStore

# Items written up to this long before the newest one we saw are read again, so a
# writer whose clock lags a little is not missed. Re-reading an item is harmless.
CLOCK_SKEW_SECONDS = 5.0
# How often a warm function lists the popularity counters (one S3 LIST; a GET per changed shard).
POPULARITY_REFRESH_SECONDS = 2.0


class LiveCatalog:
    """The published snapshot of item vectors plus every item encoded since, kept fresh,
    and the collaborative model with the blend weights published next to it.

    The first call loads the snapshot from S3; later calls read only the items
    changed since (a Query on the items table's by_update index), at most once per
    `refresh_seconds`. With a popularity store, the shards' live counters replace the
    snapshot's counts once any exist; they are listed at most once per
    `popularity_seconds`, and a shard's object is read again only when its ETag changed.
    """

    def __init__(self, snapshots: CatalogSnapshots, items: ItemRepository, dim: int,
                 refresh_seconds: float = 1.0, clock: Callable[[], float] = time.time,
                 popularity: PopularityStore | None = None,
                 popularity_seconds: float = POPULARITY_REFRESH_SECONDS) -> None:
        self.snapshots, self.items, self.dim = snapshots, items, dim
        self.refresh_seconds, self.clock = refresh_seconds, clock
        self.popularity, self.popularity_seconds = popularity, popularity_seconds
        self._index: ItemIndex | None = None
        self._collaborative: tuple[Collaborative | None, BlendWeights] | None = None
        self._watermark = 0.0
        self._refreshed_at = float("-inf")
        self._shards: dict[str, tuple[str, PopularityCounters]] = {}  # key -> (ETag, counters)
        self._live: LivePopularity | None = None
        self._popularity_at = float("-inf")

    def index(self) -> ItemIndex:
        if self._index is None:
            self._load_snapshot()
        changed = 0
        if self.clock() - self._refreshed_at >= self.refresh_seconds:
            changed = self.refresh()
        if self.popularity is not None and self.clock() - self._popularity_at >= self.popularity_seconds:
            changed += self.refresh_popularity()
        if changed and self._live is not None:
            self._index.set_live_counts(self._live.item_ids, self._live.popular, self._live.recent)
        return self._index

    def scorer(self) -> tuple[Collaborative | None, BlendWeights]:
        """The collaborative model aligned with the index (None when none is published) and
        the blend weights fitted with it (the defaults without one)."""
        index = self.index()
        if self._collaborative is None:
            data = self.snapshots.load_collaborative()
            if data is None:
                self._collaborative = (None, DEFAULT_WEIGHTS)
            else:
                model, meta = CollaborativeModel.from_npz(data)
                weights = BlendWeights.from_json(str(meta["blend"])) if "blend" in meta else DEFAULT_WEIGHTS
                self._collaborative = (Collaborative(model, index), weights)
        return self._collaborative

    def refresh_popularity(self) -> int:
        """Read the shards' counters that changed since the last look; returns how many did."""
        listed = self.popularity.etags()
        stale = [key for key, etag in listed.items() if self._shards.get(key, ("",))[0] != etag]
        gone = set(self._shards) - set(listed)
        for key in stale:
            counters, etag = self.popularity.get(key)
            self._shards[key] = (etag, counters)
        for key in gone:
            del self._shards[key]
        if stale or gone:
            self._live = LivePopularity.combine([counters for _, counters in self._shards.values()]) \
                if self._shards else None
        self._popularity_at = self.clock()
        return len(stale) + len(gone)

    def refresh(self) -> int:
        """Read items changed since the last look; returns how many vectors changed."""
        changed = 0
        for item in self.items.changed_since(self._watermark - CLOCK_SKEW_SECONDS):
            if item.vector is not None and item.vector.shape == (self.dim,):
                new = item.item_id not in self._index.rows
                self._index.upsert(item.item_id, item.vector, categories=item.categories,
                                   attributes=item.attributes)
                if new:
                    self._index.set_prior(item.item_id)
                changed += 1
            self._watermark = max(self._watermark, item.updated_at)
        self._refreshed_at = self.clock()
        return changed

    def _load_snapshot(self) -> None:
        loaded = self.snapshots.load()
        if loaded is None:
            self._index = ItemIndex(self.dim)
            return
        index, meta = loaded
        if index.dim != self.dim:
            raise RuntimeError(f"catalog snapshot has {index.dim}-d vectors, the encoder makes {self.dim}-d")
        self._index, self._watermark = index, float(meta.get("updated_at", 0.0))


@lru_cache(maxsize=1)
def encoder(model_dir: str | None = None):
    from recsys.encoder import Encoder
    if model_dir is None:
        from encoder_model import MODEL_DIR
        model_dir = str(MODEL_DIR)
    return Encoder(model_dir)


def encoder_for(settings: Settings):
    return encoder(str(settings.model_dir) if settings.model_dir else None)
