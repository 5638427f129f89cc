"""recsys.popularity: decayed counters, weights, dedupe, the sequence watermark, trending."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from recsys.events import Event
from recsys.index import ItemIndex
from recsys.popularity import (
    DAY,
    DEFAULT_POPULARITY,
    LivePopularity,
    PopularityCounters,
    event_weight,
    trending,
)
from recsys.profile import DEFAULT_CONFIG
from recsys.ranking import trending as trending_items
from recsys.scoring import popularity
from tests.served import served_list as recommend

T0 = 1_500_000_000.0
HALF = DEFAULT_POPULARITY.popular_half_life_days * DAY


def purchase(n: int, item: str, t: float = T0) -> Event:
    return Event(event_id=f"e{n}", user_id=f"u{n % 7}", type="purchase", timestamp=t, item_id=item)


def records(events: list[Event | None], first: int = 1) -> list[tuple[str, Event | None]]:
    return [(str(first + n), e) for n, e in enumerate(events)]


def counts(counters: PopularityCounters) -> dict[str, float]:
    return dict(zip(counters.item_ids, counters.popular.tolist(), strict=True))


def test_weights_follow_the_profile_and_negatives_do_not_count() -> None:
    def weight(**fields) -> float:
        return event_weight(Event(event_id="e", user_id="u", timestamp=T0, **fields))

    assert weight(type="purchase", item_id="a") == DEFAULT_CONFIG.purchase
    assert weight(type="view", item_id="a") == DEFAULT_CONFIG.view
    assert weight(type="click", item_id="a", dwell_seconds=600) > weight(type="click", item_id="a") > 0
    assert weight(type="rating", item_id="a", value=5.0) == pytest.approx((5.0 - 3.5 + 1.0) * 0.8)
    for negative in (dict(type="hide", item_id="a"), dict(type="dislike", item_id="a"),
                     dict(type="click", item_id="a", dwell_seconds=1), dict(type="rating", item_id="a", value=1.0),
                     dict(type="search", query="zombies")):
        assert weight(**negative) == 0.0, negative


def test_sums_decay_by_half_lives_from_the_newest_event_time() -> None:
    counters = PopularityCounters()
    assert counters.apply(records([purchase(1, "a", T0), purchase(2, "b", T0 + HALF)])) == 2
    assert counters.reference_time == T0 + HALF
    assert counts(counters) == pytest.approx({"a": 1.5, "b": 3.0})
    recent_half = DEFAULT_POPULARITY.recent_half_life_days * DAY
    assert counters.recent.tolist() == pytest.approx([3.0 * 0.5 ** (HALF / recent_half), 3.0])
    # A later event moves the reference time and decays everything already there.
    counters.apply(records([purchase(3, "c", T0 + 2 * HALF)], first=3))
    assert counts(counters) == pytest.approx({"a": 0.75, "b": 1.5, "c": 3.0})
    # A late event (older than the reference time) counts, decayed; the reference time stays.
    counters.apply(records([purchase(4, "a", T0 + HALF)], first=4))
    assert counters.reference_time == T0 + 2 * HALF
    assert counts(counters)["a"] == pytest.approx(0.75 + 1.5)


def test_the_same_events_in_any_batching_give_the_same_counts() -> None:
    rng = np.random.default_rng(5)
    events = [purchase(n, f"i{rng.integers(8)}", T0 + float(rng.uniform(0, 60 * DAY))) for n in range(200)]
    whole = PopularityCounters()
    whole.apply(records(events))
    split = PopularityCounters()
    for start in range(0, 200, 37):
        split.apply(records(events[start:start + 37], first=1 + start))
    assert split.reference_time == whole.reference_time
    assert counts(split) == pytest.approx(counts(whole), rel=1e-9)


def test_records_at_or_below_the_watermark_change_nothing() -> None:
    counters = PopularityCounters()
    batch = records([purchase(n, "a") for n in range(5)], first=100)
    assert counters.apply(batch) == 5
    saved = counters.to_npz()
    assert counters.watermark == "104"
    assert counters.apply(batch) == 0
    assert counters.to_npz() == saved
    # A retry that starts inside the batch applies only what is past the watermark.
    assert counters.apply(batch[3:] + records([purchase(9, "b")], first=105)) == 1
    assert counts(counters) == pytest.approx({"a": 15.0, "b": 3.0})


def test_kinesis_sequence_numbers_compare_as_numbers() -> None:
    counters = PopularityCounters()
    counters.apply([("99", purchase(1, "a"))])
    assert counters.apply([("100", purchase(2, "a"))]) == 1
    assert counters.watermark == "100"
    with pytest.raises(ValueError, match="decimal digits"):
        counters.apply([("shardId-1", purchase(3, "a"))])


def test_an_event_id_counts_once_even_under_new_sequence_numbers() -> None:
    counters = PopularityCounters()
    counters.apply(records([purchase(1, "a"), purchase(1, "a"), purchase(2, "a")]))
    assert counters.apply(records([purchase(1, "a")], first=50)) == 0, "a resent or redriven event"
    assert counts(counters) == {"a": 6.0}
    assert counters.watermark == "50"


def test_two_users_events_under_one_event_id_both_count() -> None:
    counters = PopularityCounters()
    one = Event(event_id="same", user_id="u1", type="purchase", timestamp=T0, item_id="a")
    other = Event(event_id="same", user_id="u2", type="purchase", timestamp=T0, item_id="a")
    assert counters.apply(records([one, other, one])) == 2, "event ids are unique per user, as profiles dedupe"


def test_the_remembered_window_is_bounded() -> None:
    config = DEFAULT_POPULARITY.__class__(remembered_events=10)
    counters = PopularityCounters()
    counters.apply(records([purchase(n, "a") for n in range(25)]), config)
    assert len(counters.remembered) == 10
    assert counters.apply(records([purchase(24, "a")], first=100), config) == 0
    assert counters.apply(records([purchase(0, "a")], first=101), config) == 1, "forgotten: counts again"


def test_invalid_records_only_move_the_watermark() -> None:
    counters = PopularityCounters()
    assert counters.apply(records([None, None])) == 0
    assert counters.watermark == "2" and counters.item_ids == []


def test_items_that_decayed_away_are_forgotten() -> None:
    counters = PopularityCounters()
    counters.apply(records([purchase(1, "old", T0), purchase(2, "new", T0 + 20 * HALF)]))
    assert counters.item_ids == ["new"]


def test_npz_round_trip_is_exact_and_byte_stable() -> None:
    counters = PopularityCounters()
    counters.apply(records([purchase(n, f"item:{n % 3}", T0 + n) for n in range(10)], first=7))
    data = counters.to_npz()
    restored = PopularityCounters.from_npz(data)
    assert restored.to_npz() == data
    assert (restored.item_ids, restored.watermark, restored.reference_time) == \
        (counters.item_ids, counters.watermark, counters.reference_time)
    np.testing.assert_array_equal(restored.popular, counters.popular)
    np.testing.assert_array_equal(restored.remembered, counters.remembered)
    assert PopularityCounters.from_npz(PopularityCounters().to_npz()).item_ids == []


def test_shards_combine_at_the_newest_reference_time() -> None:
    one, two = PopularityCounters(), PopularityCounters()
    one.apply(records([purchase(1, "a", T0), purchase(2, "b", T0)]))
    two.apply(records([purchase(3, "a", T0 + HALF)]))
    live = LivePopularity.combine([one, two])
    assert live.reference_time == T0 + HALF
    assert dict(zip(live.item_ids, live.popular.tolist(), strict=True)) == pytest.approx({"a": 4.5, "b": 1.5})


def test_trending_is_the_pace_ratio_shrunk_for_thin_evidence() -> None:
    pace = DEFAULT_POPULARITY.popular_half_life_days / DEFAULT_POPULARITY.recent_half_life_days
    k = DEFAULT_POPULARITY.trending_pseudo_weight
    steady = 100.0
    scores = trending(np.array([steady, 30.0, 3.0]), np.array([steady / pace, 30.0, 3.0]))
    assert scores.tolist() == pytest.approx([steady / (steady + k), pace * 30 / 33, pace * 3 / 6])
    assert scores[1] > scores[2] > scores[0]


def basis_index() -> ItemIndex:
    index = ItemIndex(4)
    index.extend(["a", "b", "c", "d"], np.eye(4, dtype=np.float32), np.array([100.0, 50.0, 1.0, 0.0]),
                 [("Horror",), ("Comedy",), ("Horror",), ("Comedy",)])
    return index


def test_live_counts_replace_the_snapshot_counts_for_every_item() -> None:
    index = basis_index()
    assert [i for i, _ in recommend(index, None, None, k=2, now=T0)] == ["a", "b"]
    index.set_live_counts(["c", "d", "not-in-catalog"], np.array([5.0, 9.0, 99.0]), np.array([5.0, 1.0, 99.0]))
    assert index.counts.tolist() == [0.0, 0.0, 5.0, 9.0]
    assert [i for i, _ in recommend(index, None, None, k=2, now=T0)] == ["d", "c"]
    assert popularity(index).max() == 1.0


def test_trending_route_ranks_by_pace_and_filters_by_category() -> None:
    index = basis_index()
    assert trending_items(index, 10) == [], "no live counters yet: nothing is trending"
    index.set_live_counts(["a", "b", "c"], np.array([40.0, 20.0, 100.0]), np.array([40.0, 20.0, 5.0]))
    assert [i for i, _ in trending_items(index, 10)] == ["a", "b", "c"]
    assert [i for i, _ in trending_items(index, 1)] == ["a"]
    assert [i for i, _ in trending_items(index, 10, "Comedy")] == ["b"]
    assert trending_items(index, 10, "Western") == []


def test_the_neighbour_prior_follows_live_counts() -> None:
    index = basis_index()
    index.upsert("new", np.array([0.9, 0.1, 0.3, 0.0], dtype=np.float32) / np.float32(0.9539392))
    index.set_prior("new", k=2)
    row = index.rows["new"]
    assert index.popularity_counts[row] == pytest.approx((100 + 1) / 2), "mean of a and c, its nearest with counts"
    index.set_live_counts(["a", "c"], np.array([4.0, 2.0]), np.array([0.0, 0.0]))
    assert index.popularity_counts[row] == pytest.approx(3.0)
    index.set_live_counts(["new", "a"], np.array([10.0, 4.0]), np.array([0.0, 0.0]))
    assert index.popularity_counts[row] == 10.0, "its own evidence, once it is higher"


def shown(recommendation: str, items: list[str], t: float = T0) -> Event:
    return Event(event_id=recommendation, user_id="u1", type="impression", timestamp=t,
                 recommendation_id=recommendation, item_ids=tuple(items))


def impressions(counters: PopularityCounters) -> dict[str, float]:
    return dict(zip(counters.item_ids, counters.impressions.tolist(), strict=True))


def test_impressions_count_each_item_shown_and_not_popularity() -> None:
    counters = PopularityCounters()
    assert counters.apply(records([shown("r1", ["a", "b"]), shown("r2", ["b", "c"]), purchase(3, "a")])) == 3
    assert impressions(counters) == {"a": 1.0, "b": 2.0, "c": 1.0}
    assert counts(counters) == {"a": 3.0, "b": 0.0, "c": 0.0}, "being shown is not an interaction"
    assert counters.recent.tolist() == [3.0, 0.0, 0.0]
    # They decay with the long half-life, from the newest event time.
    counters.apply(records([shown("r3", ["c"], T0 + HALF)], first=10))
    assert impressions(counters) == pytest.approx({"a": 0.5, "b": 1.0, "c": 1.5})
    live = LivePopularity.combine([counters, counters])
    assert dict(zip(live.item_ids, live.impressions.tolist(), strict=True)) == pytest.approx(
        {"a": 1.0, "b": 2.0, "c": 3.0})


def test_a_replayed_or_resent_impression_counts_once_byte_for_byte() -> None:
    counters = PopularityCounters()
    batch = records([shown("r1", ["a", "b"]), shown("r2", ["b"])], first=100)
    assert counters.apply(batch) == 2
    saved = counters.to_npz()
    assert counters.apply(batch) == 0 and counters.to_npz() == saved, "a replay: below the watermark"
    assert counters.apply(records([shown("r1", ["a", "b"])], first=200)) == 0, "the same list resent"
    assert impressions(counters) == {"a": 1.0, "b": 2.0}
    restored = PopularityCounters.from_npz(counters.to_npz())
    np.testing.assert_array_equal(restored.impressions, counters.impressions)
    assert restored.to_npz() == counters.to_npz()


def test_counters_written_before_impressions_read_as_none_shown() -> None:
    counters = PopularityCounters()
    counters.apply(records([purchase(1, "a"), purchase(2, "b")]))
    old = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(counters.to_npz())) as new, zipfile.ZipFile(old, "w") as written:
        for name in new.namelist():
            if name != "impressions.npy":
                written.writestr(name, new.read(name))
    restored = PopularityCounters.from_npz(old.getvalue())
    assert counts(restored) == counts(counters) and impressions(restored) == {"a": 0.0, "b": 0.0}
    assert restored.apply(records([shown("r1", ["b", "c"])], first=10)) == 1
    assert impressions(restored) == {"a": 0.0, "b": 1.0, "c": 1.0}


def test_an_item_only_shown_is_kept_until_its_impressions_decay_away() -> None:
    counters = PopularityCounters()
    counters.apply(records([shown("r1", ["shown"], T0), purchase(2, "bought", T0)]))
    assert sorted(counters.item_ids) == ["bought", "shown"]
    counters.apply(records([purchase(3, "bought", T0 + 20 * HALF)], first=5))
    assert counters.item_ids == ["bought"]


def test_live_counts_bring_impressions_into_the_index() -> None:
    index = basis_index()
    assert index.impressions.tolist() == [0.0] * 4, "no counters yet: nothing shown"
    index.set_live_counts(["b", "c", "not-in-catalog"], np.array([0.0, 1.0, 1.0]), np.zeros(3),
                          np.array([30.0, 2.0, 7.0]))
    assert index.impressions.tolist() == [0.0, 30.0, 2.0, 0.0]
    index.set_live_counts(["c"], np.array([1.0]), np.zeros(1), np.array([4.0]))
    assert index.impressions.tolist() == [0.0, 0.0, 4.0, 0.0], "an item the counters no longer name was not shown"
