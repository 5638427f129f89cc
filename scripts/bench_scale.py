"""`make bench-scale`: serving at 10k, 100k and 1M items, one JSON line per catalog size.

For each size it builds (or reuses, under build/bench-scale/<n>/) a synthetic release: the
item index (clustered random unit vectors in place of encoded text, long-tail popularity,
the candidate lists the build stores with it) and a collaborative model of the shapes the
build job writes (recsys.collaborative.CollaborativeModel: item-item and sequence rows of
TrainingConfig.neighbours entries over the items with evidence, factors, maps and the
new-item transfer), whose entries follow the clusters: the bench measures the serving cost of
those shapes and the recall of candidates against the exact blend, not recommendation
quality (that is `make eval`). Then a fresh process serves it, as an API container would:

- cold_start_s: process start to the first answer (imports, reading both artifacts, the
  first ranked list), the files in the page cache as a container's download and checksum
  leave them (that read is not timed: `serve`);
- rss_mb: that process's resident memory after the first answer (peak_rss_mb: its peak while
  serving the timed calls, before the full scans that measure the baseline and the recall;
  anon_rss_mb: after those calls, the part not mapped from the release's files, which the
  kernel cannot drop and read again under memory pressure);
- p50_ms / p99_ms: recommendations computed (recsys.ranking.rank, with reasons) for a user
  with 50 history items plus a context vector, warm, one thread, 500 calls; 50 users;
- bruteforce_p50_ms: the same requests scored over the whole catalog (today's full scan)
  in the same process; candidate_recall_at_50: the share of the exact top 50 the candidates
  give, over 50 users;
- similar_p99_ms: `ranking.similar` of 500 items, k 10.

Usage: python scripts/bench_scale.py [--sizes 10000,100000,1000000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from model_build import paths
from model_build.collaborative_training import TrainingConfig, row_model
from recsys.collaborative import TRANSFER_NEIGHBOURS, CollaborativeModel, ItemRows, Transfer
from recsys.index import ItemIndex, quantized
from recsys.release import file_entry

DIM = 384
ITEMS_PER_CLUSTER = 200
COVERED = 0.6  # share of items with collaborative evidence (the rest are new items)
BENCH = paths.BUILD / "bench-scale"
FORMAT = 4  # of the synthetic release: a change rebuilds the cached ones


def build(n: int, folder: Path, seed: int = 11) -> None:
    """The synthetic release of n items, written to folder."""
    rng = np.random.default_rng(seed)
    clusters = max(1, n // ITEMS_PER_CLUSTER)
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    cluster = rng.integers(0, clusters, n)
    index = ItemIndex(DIM, capacity=n)
    for start in range(0, n, 100_000):
        block = slice(start, min(n, start + 100_000))
        vectors = centres[cluster[block]] + 0.9 * rng.normal(size=(block.stop - block.start, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index._codes[block], index._scales[block] = quantized(vectors)
    index.ids = [f"item-{r}" for r in range(n)]
    index.rows = {item_id: row for row, item_id in enumerate(index.ids)}
    index.categories = [(f"c{r % 20}",) for r in range(n)]
    index.attributes = [{} for _ in range(n)]
    covered = np.sort(rng.choice(n, size=int(COVERED * n), replace=False))
    popularity = np.zeros(n, np.float32)
    popularity[covered] = rng.zipf(1.3, size=len(covered)).clip(max=100_000)
    index._counts[:n] = popularity
    index.exact_max = 0
    print(f"bench-scale: {n} items: lists", file=sys.stderr, flush=True)
    data = index.to_npz(model_version="synthetic")
    (folder / "item_vectors.npz").write_bytes(data)
    del data
    print(f"bench-scale: {n} items: collaborative model", file=sys.stderr, flush=True)
    (folder / "collaborative.npz").write_bytes(synthetic_model(index, covered, cluster, rng).to_npz())


def synthetic_model(index: ItemIndex, covered: np.ndarray, cluster: np.ndarray,
                    rng: np.random.Generator) -> CollaborativeModel:
    """Row models whose neighbours are mostly items of the same cluster (popular ones more
    often), random factors, ridge-like maps, and for each item without evidence twenty covered
    items of its cluster to borrow from."""
    neighbours = TrainingConfig().neighbours
    covered_vectors = index.vectors_at(covered)
    by_cluster: dict[int, np.ndarray] = {}
    order = np.argsort(cluster[covered], kind="stable")
    bounds = np.searchsorted(cluster[covered][order], np.arange(cluster.max() + 2))
    for c in range(cluster.max() + 1):
        by_cluster[c] = np.arange(len(covered))[order[bounds[c]:bounds[c + 1]]]  # model rows in cluster c

    def rows_model() -> ItemRows:
        rows = rng.integers(0, len(covered), size=(len(covered), neighbours), dtype=np.int64)
        for model_row, item in enumerate(covered):
            members = by_cluster[int(cluster[item])]
            if len(members):
                local = min(len(members), neighbours // 2)
                rows[model_row, :local] = rng.choice(members, size=local, replace=False)
        weights = np.sort(rng.exponential(size=rows.shape).astype(np.float32), axis=1)[:, ::-1] / neighbours
        projection = (np.eye(DIM) * 0.05).astype(np.float32)
        return row_model(rows, np.ascontiguousarray(weights), projection, covered_vectors)

    factors = TrainingConfig().factors
    cold = np.setdiff1d(np.arange(len(index)), covered)
    transfer_rows = np.full((len(cold), TRANSFER_NEIGHBOURS), -1, np.int32)
    for at, item in enumerate(cold):
        members = by_cluster[int(cluster[item])]
        if len(members):
            transfer_rows[at, :min(len(members), TRANSFER_NEIGHBOURS)] = rng.choice(
                members, size=min(len(members), TRANSFER_NEIGHBOURS), replace=False)
    transfer_weights = np.where(transfer_rows >= 0, 1.0, 0.0).astype(np.float32)
    transfer_weights /= np.maximum(transfer_weights.sum(1, keepdims=True), 1.0)
    return CollaborativeModel(
        [index.ids[r] for r in covered], rows_model(), rows_model(),
        (0.1 * rng.normal(size=(len(covered), factors))).astype(np.float32),
        (0.01 * rng.normal(size=len(covered))).astype(np.float32), 20.0, 10.0,
        (0.01 * rng.normal(size=(DIM, factors + 1))).astype(np.float32),
        (0.01 * rng.normal(size=DIM + 1)).astype(np.float32),
        Transfer([index.ids[r] for r in cold], transfer_rows, transfer_weights))


SERVE = r'''
import json, sys, time
from pathlib import Path
import numpy as np
from model_build.data import Interaction
from recsys import ranking
from recsys.collaborative import Collaborative, CollaborativeModel
from recsys.index import ItemIndex, quantized
from recsys.profile import Profile, apply_events
from recsys.scoring import DEFAULT_WEIGHTS

folder = Path(sys.argv[1])
index, _ = ItemIndex.from_npz(folder / "item_vectors.npz")  # memory-mapped, as a container reads its release
model, _ = CollaborativeModel.from_npz(folder / "collaborative.npz")
collaborative = Collaborative(model, index)
exact_max = index.exact_max
rng = np.random.default_rng(5)
known = np.array([index.rows[i] for i in model.item_ids[:: max(1, len(model.item_ids) // 100_000)]])

def user(seed):
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, len(known) - 60))
    history = known[np.sort(rng.choice(np.arange(start, start + 60), 50, replace=False))]
    profile = Profile(user_id=f"u{seed}")
    events = [Interaction(profile.user_id, index.ids[r], 4.5, 1_000 + 60 * t).as_event()
              for t, r in enumerate(history)]
    apply_events(profile, events, lambda e: index.vector(e.item_id))
    context = index.vectors_at(np.array([int(rng.integers(0, len(index)))]))[0]
    return profile, ranking.Request(10, now=profile.last_event_at, context=context, context_text="context")

profile, request = user(0)
ranking.rank(index, profile, request, DEFAULT_WEIGHTS, collaborative)
print(json.dumps({"ready": True}), flush=True)
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
rss_mb = int(status["VmRSS"].split()[0]) / 1024
users = [user(seed) for seed in range(1, 51)]

def timed(call, count):
    spent = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        spent.append(1000 * (time.perf_counter() - started))
    return np.percentile(spent, 50), np.percentile(spent, 99)

p50, p99 = timed(lambda i: ranking.rank(index, users[i % 50][0], users[i % 50][1], DEFAULT_WEIGHTS, collaborative), 500)
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
peak_mb = int(status["VmHWM"].split()[0]) / 1024  # serving's peak, before the full scans below
anon_mb = int(status["RssAnon"].split()[0]) / 1024  # of the resident memory, what is not mapped from the files
recall = []
for profile, request in users:
    wide = ranking.Request(50, request.now, request.context, request.context_text)
    approximate = {i.item_id for i in ranking.rank(index, profile, wide, DEFAULT_WEIGHTS, collaborative, reasons=False)}
    index.exact_max = 10**12
    exact = {i.item_id for i in ranking.rank(index, profile, wide, DEFAULT_WEIGHTS, collaborative, reasons=False)}
    index.exact_max = exact_max
    recall.append(len(exact & approximate) / max(1, len(exact)))
index.exact_max = 10**12
brute50, _ = timed(lambda i: ranking.rank(index, users[i % 50][0], users[i % 50][1], DEFAULT_WEIGHTS,
                                          collaborative), 30)
index.exact_max = exact_max
items = [index.ids[int(r)] for r in rng.integers(0, len(index), 500)]
_, similar99 = timed(lambda i: ranking.similar(index, items[i], 10), 500)
print(json.dumps({"p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "bruteforce_p50_ms": round(brute50, 2),
                  "candidate_recall_at_50": round(float(np.mean(recall)), 4), "rss_mb": round(rss_mb),
                  "peak_rss_mb": round(peak_mb), "anon_rss_mb": round(anon_mb),
                  "similar_p99_ms": round(similar99, 2)}), flush=True)
'''


def serve(folder: Path) -> dict[str, float]:
    """The release served by a fresh process, one thread; its figures. First its files are
    read as a container's release load reads them (`release.file_entry`, the sha256 check of
    the files it has just downloaded), not timed: a container serves from files its download
    wrote and its check read, so they are in the page cache, whatever the bench's own files
    went through since they were built (the 1M build job evicts them: then the first run's
    p99 was 41.6 ms at 1M, the next runs' 14.7–15.5)."""
    for name in ("item_vectors.npz", "collaborative.npz"):
        file_entry(folder / name)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", SERVE, str(folder)], stdout=subprocess.PIPE, text=True,
                             env=environment)
    assert child.stdout is not None
    first = json.loads(child.stdout.readline())
    cold_start = time.perf_counter() - started
    figures = json.loads(child.stdout.readline())
    if child.wait() != 0 or not first.get("ready"):
        raise SystemExit(f"bench-scale: the serving process failed on {folder}")
    return {"cold_start_s": round(cold_start, 2), **figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    args = parser.parse_args()
    for n in [int(s) for s in args.sizes.split(",")]:
        folder = BENCH / f"{n}-v{FORMAT}"
        if not (folder / "collaborative.npz").exists():
            folder.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            build(n, folder)
            print(f"bench-scale: {n} items built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        print(json.dumps({"items": n, **serve(folder)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
