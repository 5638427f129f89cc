"""What a warm function keeps between invocations: the encoder, the release it serves and
the live item index (vectors, categories and popularity)."""
from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from recsys.collaborative import Collaborative
from recsys.index import ItemIndex
from recsys.popularity import LivePopularity, PopularityCounters
from recsys.ports import Items, PopularityShards, Releases
from recsys.release import Release, ReleaseError, open_release
from recsys.scoring import DEFAULT_WEIGHTS, BlendWeights

log = logging.getLogger(__name__)

# Items written up to this long before the newest one we saw are read again, so a
# writer whose clock lags a little is not missed. Re-reading an item is harmless.
CLOCK_SKEW_SECONDS = 5.0
# How often a warm function reads the items changed since its release (a by_update Query).
ITEMS_REFRESH_SECONDS = 1.0
# How often a warm function lists the popularity counters (one S3 LIST; a GET per changed shard).
POPULARITY_REFRESH_SECONDS = 2.0
# How often a warm function reads the release pointer (one small S3 GET); one that holds
# no release yet reads it as often as it reads the items, so the first release lands at once.
RELEASE_CHECK_SECONDS = 30.0
# A refresh step that raised (a store down, a corrupt object, an item the store cannot read
# back) is tried again after this long, doubling on each failure in a row up to the cap.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0


def _own_folder(parent: Path) -> Path:
    """A new folder under `parent` for one catalog's release files, removed when the process exits."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="release-", dir=parent))
    atexit.register(shutil.rmtree, folder, True)
    return folder


class Unavailable(RuntimeError):
    """A store the request needs took none of its work or cannot answer now (the API
    answers 503 with Retry-After); the client should send it again later."""
    code = "unavailable"


class LiveCatalog:
    """The current release's item vectors plus every item encoded since, kept fresh, and
    the release's collaborative model and blend weights.

    The first call loads the release the pointer names; later calls read only the items
    changed since (a Query on the items table's by_update index), at most once per
    `refresh_seconds`, and follow the pointer to a new release at most once per
    `release_seconds`. A release that fails its checks is refused (logged, and kept in
    `release_error`) and the one loaded before keeps serving. With a popularity store,
    the shards' live counters replace the snapshot's counts once any hold an interaction,
    and bring how often each item was shown; they are listed at most once per
    `popularity_seconds`, and a shard's object is read again only when its ETag changed.
    Until a release lands the pointer is read every `refresh_seconds`.

    A step that raises (the pointer, the items, the counters) leaves what was loaded
    serving: the error is logged and kept in `refresh_error`, and the step is retried
    with backoff (RETRY_FIRST_SECONDS doubling to RETRY_MAX_SECONDS). Only a function that
    never loaded anything raises to its caller.

    Loaded (`waiting_for()` is empty) means: the pointer was read (a release is held, or
    there is none yet), the items changed since that release were read, and the
    popularity counters were listed once. The first `index()` does all three.
    """

    def __init__(self, releases: Releases, items: Items, encoder_version: str, dim: int,
                 refresh_seconds: float = ITEMS_REFRESH_SECONDS, clock: Callable[[], float] = time.time,
                 popularity: PopularityShards | None = None,
                 popularity_seconds: float = POPULARITY_REFRESH_SECONDS,
                 release_seconds: float = RELEASE_CHECK_SECONDS, collaborative: bool = True,
                 release_dir: Path | None = None) -> None:
        self.releases, self.items, self.encoder_version, self.dim = releases, items, encoder_version, dim
        # Where the release's files are downloaded and memory-mapped from (a folder of this
        # catalog's own under it, removed at exit); None: read into memory.
        self.release_dir = _own_folder(release_dir) if release_dir is not None else None
        self.with_collaborative = collaborative
        self.refresh_seconds, self.clock = refresh_seconds, clock
        self.popularity, self.popularity_seconds = popularity, popularity_seconds
        self.release_seconds = release_seconds
        self.release: Release | None = None
        self.release_error: str | None = None
        self._release_checked_at = float("-inf")
        self._index: ItemIndex | None = None
        self._collaborative: Collaborative | None = None
        self._watermark = 0.0
        self._refreshed_at = float("-inf")
        self._shards: dict[str, tuple[str, PopularityCounters]] = {}  # key -> (ETag, counters)
        self._live: LivePopularity | None = None
        self._popularity_at = float("-inf")
        self.refresh_error: str | None = None
        self._failures = 0
        self._retry_at = float("-inf")

    def waiting_for(self) -> list[str]:
        """What is not loaded yet: "release" (the pointer never read), "items" (the items
        changed since the release never read), "popularity" (the counters never listed)."""
        waiting = []
        if self._index is None:
            waiting.append("release")
        if self._refreshed_at == float("-inf"):
            waiting.append("items")
        if self.popularity is not None and self._popularity_at == float("-inf"):
            waiting.append("popularity")
        return waiting

    def index(self) -> ItemIndex:
        if self._index is not None and self.clock() < self._retry_at:
            return self._current()  # backing off after a failed refresh: serve what is loaded
        try:
            self._refresh_due()
        except Exception as error:  # any store fault: keep serving the last good state
            self._failures += 1
            self._retry_at = self.clock() + min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (self._failures - 1))
            self.refresh_error = f"{type(error).__name__}: {str(error)[:300]}"
            self._release_checked_at = float("-inf")  # the retry reads the pointer again too
            log.error("catalog refresh failed (%d in a row; serving the last good state): %s",
                      self._failures, self.refresh_error)
            if self._index is None:
                raise Unavailable(f"the catalog could not be loaded yet ({self.refresh_error})") from error
        else:
            self._failures, self.refresh_error = 0, None
        return self._current()

    def _refresh_due(self) -> None:
        every = self.release_seconds if self.release is not None else min(self.release_seconds, self.refresh_seconds)
        if self._index is None or self.clock() - self._release_checked_at >= every:
            self._follow_pointer()
        changed = 0
        if self.clock() - self._refreshed_at >= self.refresh_seconds:
            changed = self.refresh()
        if self.popularity is not None and self.clock() - self._popularity_at >= self.popularity_seconds:
            changed += self.refresh_popularity()
        if changed and self._live is not None:
            self._set_live_counts()

    def scorer(self) -> tuple[Collaborative | None, BlendWeights]:
        """The release's collaborative model aligned with the index (None before the first
        release) and the blend weights published with it."""
        self.index()
        if self.release is None:
            return None, DEFAULT_WEIGHTS
        if self.release.collaborative is None:
            return None, self.release.weights
        if self._collaborative is None:  # aligned on first use
            self._collaborative = Collaborative(self.release.collaborative, self._current())
        return self._collaborative, self.release.weights

    def refresh_popularity(self) -> int:
        """Read the shards' counters that changed since the last look; returns how many did."""
        if self.popularity is None:
            return 0
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
        """Read items changed since the last look; returns how many the index changed.

        A retired item (deleted or unavailable) keeps its row, masked (ItemIndex.available).
        """
        changed, index = 0, self._current()
        revised = []  # rows whose vector changed: what was derived from the old one is redone
        for item in self.items.changed_since(self._watermark - CLOCK_SKEW_SECONDS):
            if item.vector is not None and item.vector.shape == (self.dim,):
                new = item.item_id not in index.rows
                index.upsert(item.item_id, item.vector, categories=item.categories, attributes=item.attributes,
                             available=item.available)
                if new:
                    index.set_prior(item.item_id)
                else:
                    revised.append(index.rows[item.item_id])
                changed += 1
            elif item.item_id in index.rows:
                # Written, not (re-)encoded yet: its filters and a retirement apply now, its
                # old vector serves until the new one comes; coming back waits for that.
                index.update(item.item_id, item.categories, item.attributes, available=False if not item.available
                             else None)
                changed += 1
            self._watermark = max(self._watermark, item.updated_at)
        if revised and self._collaborative is not None:
            self._collaborative.revise(revised)
        self._refreshed_at = self.clock()
        return changed

    def _current(self) -> ItemIndex:
        if self._index is None:
            raise RuntimeError("the live catalog has no index before its first load")
        return self._index

    def _follow_pointer(self) -> None:
        self._release_checked_at = self.clock()
        version = self.releases.current()
        if self._index is not None and (version is None or (self.release and version == self.release.version)):
            return
        if version is None:
            self._index = ItemIndex(self.dim)
            return
        folder = self.release_dir

        def read(name: str) -> bytes | Path:
            return self.releases.read(version, name) if folder is None else self.releases.fetch(version, name, folder)

        try:
            release = open_release(self.releases.manifest(version), read, self.encoder_version, self.dim,
                                   self.with_collaborative)
        except (ReleaseError, ValueError, KeyError) as error:
            self.release_error = f"release {version} refused: {error}"
            log.error(self.release_error)
            if self._index is None:
                self._index = ItemIndex(self.dim)
            return
        self.release, self.release_error = release, None
        self._index, self._watermark = release.index, release.updated_at
        if folder is not None:  # the releases served before: their maps stay valid until dropped
            for other in folder.iterdir():
                if other.name != version:
                    shutil.rmtree(other, ignore_errors=True)
        self._collaborative = None
        self._refreshed_at = float("-inf")  # read the items written since this release's snapshot
        if self._live is not None:
            self._set_live_counts()

    def _set_live_counts(self) -> None:
        """Impressions always; the counts only once the counters hold an interaction (lists
        served before any event must not wipe the snapshot's popularity)."""
        live = self._live
        if live is None:
            return
        interacted = bool(live.popular.any())
        self._current().set_live_counts(live.item_ids, live.popular if interacted else None,
                                    live.recent if interacted else None, live.impressions)
