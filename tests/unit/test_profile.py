"""recsys.profile: event weights and how events fold into a profile."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from recsys import bloom
from recsys.events import Event
from recsys.profile import DEFAULT_CONFIG, VETO, Profile, ProfileConfig, apply_events, positive_items

DIM = 8
T0 = 1_700_000_000.0
BASIS = np.eye(DIM, dtype=np.float32)
VECTORS = {f"i{n}": BASIS[n] for n in range(DIM)}


_ids = itertools.count()


def ev(event_type: str = "click", item: str | None = "i0", at: float = T0, **fields) -> Event:
    return Event(event_id=f"e{next(_ids)}", user_id="u", type=event_type, timestamp=at, item_id=item, **fields)


def vector_of(event: Event) -> np.ndarray | None:
    if event.type == "search":
        return BASIS[7]
    return VECTORS.get(event.item_id)


def fold(*events: Event, config: ProfileConfig = DEFAULT_CONFIG) -> Profile:
    profile = Profile("u")
    apply_events(profile, events, vector_of, config)
    return profile


# ---- weights -------------------------------------------------------------

def test_weights_rise_with_commitment() -> None:
    w = DEFAULT_CONFIG.weight
    assert 0 < w(ev("view")) < w(ev("click")) < w(ev("add_to_cart")) < w(ev("purchase"))


def test_dwell_raises_a_clicks_weight_and_saturates() -> None:
    w = DEFAULT_CONFIG.weight
    short, medium, long_, huge = (w(ev(dwell_seconds=d)) for d in (5, 60, 600, 86_400))
    assert w(ev()) == DEFAULT_CONFIG.click
    assert DEFAULT_CONFIG.click < short < medium < long_ <= huge
    assert huge == pytest.approx(DEFAULT_CONFIG.click * (1 + DEFAULT_CONFIG.dwell_boost))


def test_ratings_are_centred_on_the_users_own_mean() -> None:
    w = DEFAULT_CONFIG.weight
    assert w(ev("rating", value=1.0)) < 0 < w(ev("rating", value=4.5))
    neutral = DEFAULT_CONFIG.rating_prior_mean - DEFAULT_CONFIG.rating_tolerance
    assert w(ev("rating", value=neutral)) == 0
    assert w(ev("rating", value=5)) > w(ev("rating", value=4))
    generous = fold(*[ev("rating", "i1", T0 + n, value=5.0) for n in range(20)])
    assert w(ev("rating", value=3.0), generous) < 0 < w(ev("rating", value=3.0)), \
        "a 3 from someone who gives 5s is a poor mark; from a new user it is not"
    harsh = fold(*[ev("rating", "i1", T0 + n, value=2.0) for n in range(20)])
    assert w(ev("rating", value=3.0), harsh) > 0


def test_a_bounce_is_a_weak_negative_and_hide_and_dislike_exclude() -> None:
    w = DEFAULT_CONFIG.weight
    assert -w(ev("click")) < w(ev("click", dwell_seconds=1.0)) < 0
    assert w(ev("dislike")) < w(ev("hide")) < 0
    profile = fold(ev("hide", "i3"), ev("dislike", "i4", T0 + 1))
    assert {"i3", "i4"} <= profile.consumed
    assert profile.long_term[3] < 0 and profile.long_term[4] < 0


# ---- apply_events --------------------------------------------------------

def test_long_term_accumulates_item_vectors() -> None:
    profile = fold(ev("purchase", "i0"), ev("view", "i1", T0 + 1))
    np.testing.assert_allclose(profile.long_term[:2], [3.0, 0.3], rtol=1e-5)
    assert np.allclose(profile.long_term[2:], 0)


def test_events_are_applied_in_time_order_whatever_the_input_order() -> None:
    events = [ev("view", f"i{n}", T0 + 60 * n) for n in range(4)]
    forward, backward = fold(*events), fold(*reversed(events))
    np.testing.assert_allclose(forward.session, backward.session)
    assert backward.recent_items == ["i3", "i2", "i1", "i0"]
    assert backward.last_event_at == T0 + 180
    # session decays older events: the latest one weighs most
    assert np.argmax(backward.session) == 3


def test_session_restarts_after_the_gap_but_long_term_keeps_everything() -> None:
    gap = DEFAULT_CONFIG.session_gap_seconds
    within = fold(ev("click", "i0"), ev("click", "i1", T0 + gap))
    assert within.session[0] > 0 and within.session[1] > 0
    after = fold(ev("click", "i0"), ev("click", "i1", T0 + gap + 1))
    np.testing.assert_allclose(after.session, BASIS[1])
    assert after.session_started_at == T0 + gap + 1
    assert after.long_term[0] > 0 and after.long_term[1] > 0


def test_search_moves_the_session_but_not_long_term() -> None:
    profile = fold(ev("click", "i0"), ev("search", None, T0 + 1, query="jazz"))
    assert profile.session[7] == pytest.approx(DEFAULT_CONFIG.search)
    assert profile.long_term[7] == 0
    assert profile.event_count == 2
    assert profile.recent_items == ["i0"]


def test_recent_items_most_recent_first_deduped_and_bounded() -> None:
    config = ProfileConfig(recent_items=3)
    items = ["i0", "i1", "i2", "i1", "i3", "i4"]
    profile = fold(*(ev("view", item, T0 + n) for n, item in enumerate(items)), config=config)
    assert profile.recent_items == ["i4", "i3", "i1"]
    assert profile.consumed == set(items)


def test_consumed_beyond_its_bytes_is_still_remembered_by_the_filter() -> None:
    profile = fold(*(ev("view", f"i{n}", T0 + n) for n in range(5)), config=ProfileConfig(consumed_bytes=4))
    assert profile.consumed == {"i0", "i1"}
    assert profile.consumed_filter is not None and len(profile.consumed_filter.to_bytes()) == bloom.BYTES
    assert all(profile.has_consumed(f"i{n}") for n in range(5)) and not profile.has_consumed("i7")


def test_recent_items_and_history_are_bounded_by_bytes() -> None:
    config = ProfileConfig(recent_items_bytes=3 * 4, history_bytes=3 * (3 + 5))
    profile = fold(*(ev("view", f"i{n:02d}", T0 + n) for n in range(10)), config=config)
    assert profile.recent_items == ["i09", "i08", "i07"]
    assert list(profile.history) == ["i07", "i08", "i09"]


# ---- the collaborative history: positive choices only ----------------------

def test_negative_feedback_is_never_a_positive_choice() -> None:
    profile = fold(ev("purchase", "i0"), ev("view", "i1", T0 + 1), ev("click", "i2", T0 + 2, dwell_seconds=90),
                   ev("click", "i3", T0 + 3, dwell_seconds=2), ev("hide", "i4", T0 + 4), ev("dislike", "i5", T0 + 5),
                   ev("rating", "i6", T0 + 6, value=5.0), ev("rating", "i7", T0 + 7, value=1.0),
                   ev("search", None, T0 + 8, query="jazz"))
    choices = dict(profile.choices())
    assert list(choices) == ["i6", "i2", "i1", "i0"]
    assert choices["i1"] < choices["i2"] < choices["i0"]
    assert profile.history["i4"] == profile.history["i5"] == VETO and profile.history["i3"] < 0
    assert profile.history["i7"] < 0
    assert {f"i{n}" for n in range(8)} <= profile.consumed, "negatives are still never recommended back"
    events = [ev("purchase", "i0"), ev("hide", "i1"), ev("rating", "i2", value=1.0), ev("rating", "i3", value=4.0)]
    assert positive_items(events) == {"i0", "i3"}


def test_a_hidden_or_disliked_item_stays_out_of_the_choices_whatever_comes_after() -> None:
    profile = fold(ev("dislike", "i0"), ev("purchase", "i0", T0 + 1), ev("purchase", "i1", T0 + 2),
                   ev("hide", "i1", T0 + 3))
    assert profile.choices() == []


def test_an_item_without_a_vector_is_still_recorded() -> None:
    profile = fold(ev("purchase", "unencoded"))
    assert profile.long_term is None and profile.session is None
    assert profile.recent_items == ["unencoded"]
    assert "unencoded" in profile.consumed
    assert profile.event_count == 1
    assert profile.last_event_at == T0


def test_long_term_halves_an_old_event_after_one_half_life() -> None:
    half_life = DEFAULT_CONFIG.long_term_half_life_days * 86_400
    profile = fold(ev("click", "i0"), ev("click", "i1", T0 + half_life))
    np.testing.assert_allclose(profile.long_term[:2], [0.5, 1.0], rtol=1e-5)


def test_applying_in_two_batches_matches_one_batch() -> None:
    events = [ev("click", "i0"), ev("view", "i1", T0 + 86_400 * 10), ev("purchase", "i2", T0 + 86_400 * 11)]
    one = fold(*events)
    two = fold(*events[:1])
    apply_events(two, events[1:], vector_of)
    np.testing.assert_allclose(one.long_term, two.long_term, rtol=1e-6)
    assert one.event_count == two.event_count == 3


def test_session_active_follows_the_last_event() -> None:
    profile = fold(ev("click", "i0"))
    gap = DEFAULT_CONFIG.session_gap_seconds
    assert profile.session_active(T0 + gap)
    assert not profile.session_active(T0 + gap + 1)
    assert not Profile("new").session_active(T0)


def test_an_event_delivered_twice_moves_the_profile_once() -> None:
    events = [ev("click", "i0"), ev("purchase", "i1", T0 + 60), ev("search", None, T0 + 90, query="q")]
    profile = fold(*events)
    before = (profile.long_term.copy(), profile.session.copy(), profile.event_count, list(profile.applied_events))
    assert apply_events(profile, events, vector_of) == []
    np.testing.assert_array_equal(profile.long_term, before[0])
    np.testing.assert_array_equal(profile.session, before[1])
    assert (profile.event_count, profile.applied_events) == (before[2], before[3])


def test_remembered_event_ids_are_bounded() -> None:
    config = ProfileConfig(remembered_events=3)
    profile = fold(*[ev("view", "i1", T0 + n) for n in range(5)], config=config)
    assert len(profile.applied_events) == 3


@pytest.mark.parametrize("seed", range(5))
def test_late_events_give_the_same_long_term_vector_as_in_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = list(VECTORS)
    events = [ev(str(rng.choice(["view", "click", "add_to_cart", "purchase"])), str(rng.choice(items)),
                 T0 + float(t)) for t in np.sort(rng.uniform(0, 200 * 86_400, 40))]
    in_order = fold(*events)
    shuffled = Profile("u")
    order = rng.permutation(len(events))
    for chunk in np.array_split(order, 7):
        apply_events(shuffled, [events[i] for i in chunk], vector_of)
    np.testing.assert_allclose(shuffled.long_term, in_order.long_term, rtol=1e-4, atol=1e-6)
    assert shuffled.last_event_at == in_order.last_event_at and shuffled.event_count == in_order.event_count
    assert shuffled.session_started_at <= shuffled.last_event_at
    assert shuffled.consumed == in_order.consumed


def test_a_late_event_inside_the_session_gap_joins_the_session() -> None:
    profile = fold(ev("click", "i0", T0 + 600))
    apply_events(profile, [ev("click", "i1", T0)], vector_of)
    assert profile.session_started_at == T0 and profile.session[1] > 0
    stale = fold(ev("click", "i0", T0 + 3 * 3600))
    apply_events(stale, [ev("click", "i1", T0)], vector_of)
    assert stale.session[1] == 0 and stale.long_term[1] > 0, "a late event from an old session stays out of this one"


# ---- an encoder change (issue #13) -------------------------------------------

def test_vectors_of_another_encoder_read_as_absent_and_the_item_history_stays() -> None:
    from recsys.profile import in_encoder

    profile = fold(ev("purchase", "i1"), ev("click", "i2", at=T0 + 10))
    profile.encoder_version = "old"
    read = in_encoder(profile, "new", DIM)
    assert read is not None and read.long_term is None and read.session is None
    assert read.history == profile.history and read.consumed == profile.consumed
    assert profile.long_term is not None, "the stored profile is not changed by reading it"
    profile.encoder_version = "new"
    assert in_encoder(profile, "new", DIM) is profile


def test_a_profile_from_before_encoder_versions_keeps_vectors_of_the_encoders_dimension() -> None:
    from recsys.profile import in_encoder

    profile = fold(ev("purchase", "i1"))
    assert profile.encoder_version is None
    assert in_encoder(profile, "any", DIM) is profile
    assert in_encoder(profile, "any", DIM * 2).long_term is None


def test_events_after_an_encoder_change_start_the_vectors_afresh_in_the_new_space() -> None:
    from recsys.profile import adopt_encoder

    profile = fold(ev("purchase", "i1"))
    profile.encoder_version = "old"
    adopt_encoder(profile, "new", DIM)
    apply_events(profile, [ev("click", "i3", at=T0 + 60)], vector_of)
    assert profile.encoder_version == "new"
    assert np.argmax(profile.long_term) == 3 and profile.long_term[1] == 0.0, "nothing of the old space is mixed in"
    assert "i1" in profile.history, "the old choice still counts for the collaborative models"


def test_refolding_from_the_raw_events_gives_the_vectors_a_live_fold_gives() -> None:
    from recsys.profile import refold_vectors

    events = [ev("purchase", "i1"), ev("click", "i2", at=T0 + 100), ev("dislike", "i4", at=T0 + 200),
              ev("search", None, at=T0 + 300, query="zombies")]
    live = fold(*events)
    stale = fold(*events)
    stale.long_term, stale.session, stale.encoder_version = np.ones(DIM * 2, dtype=np.float32), None, "old"
    history, count = dict(stale.history), stale.event_count
    refold_vectors(stale, reversed(events), vector_of, "new")
    assert stale.encoder_version == "new" and stale.history == history and stale.event_count == count
    np.testing.assert_allclose(stale.long_term, live.long_term, atol=1e-6)
    np.testing.assert_allclose(stale.session, live.session, atol=1e-6)
