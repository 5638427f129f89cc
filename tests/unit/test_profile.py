"""recsys.profile: event weights and how events fold into a profile."""
from __future__ import annotations

import numpy as np
import pytest

from recsys.events import Event
from recsys.profile import DEFAULT_CONFIG, Profile, ProfileConfig, apply_events

DIM = 8
T0 = 1_700_000_000.0
BASIS = np.eye(DIM, dtype=np.float32)
VECTORS = {f"i{n}": BASIS[n] for n in range(DIM)}


def ev(event_type: str = "click", item: str | None = "i0", at: float = T0, **fields) -> Event:
    return Event(event_id=f"e{at}", user_id="u", type=event_type, timestamp=at, item_id=item, **fields)


def vector_of(event: Event) -> np.ndarray | None:
    if event.type == "search":
        return BASIS[7]
    return VECTORS.get(event.item_id)


def fold(*events: Event, config: ProfileConfig = DEFAULT_CONFIG) -> Profile:
    return apply_events(Profile("u"), events, vector_of, config)


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


def test_ratings_are_centred() -> None:
    w = DEFAULT_CONFIG.weight
    assert w(ev("rating", value=1.0)) < 0 < w(ev("rating", value=4.5))
    assert w(ev("rating", value=DEFAULT_CONFIG.rating_centre)) == 0
    assert w(ev("rating", value=5)) > w(ev("rating", value=4))


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


def test_consumed_is_bounded() -> None:
    profile = fold(*(ev("view", f"i{n}", T0 + n) for n in range(5)), config=ProfileConfig(consumed_items=2))
    assert profile.consumed == {"i0", "i1"}


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
    two = apply_events(fold(*events[:1]), events[1:], vector_of)
    np.testing.assert_allclose(one.long_term, two.long_term, rtol=1e-6)
    assert one.event_count == two.event_count == 3


def test_session_active_follows_the_last_event() -> None:
    profile = fold(ev("click", "i0"))
    gap = DEFAULT_CONFIG.session_gap_seconds
    assert profile.session_active(T0 + gap)
    assert not profile.session_active(T0 + gap + 1)
    assert not Profile("new").session_active(T0)
