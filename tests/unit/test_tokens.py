"""User tokens (issue #14): off by default, the clients' key reads and writes any user, as a
server's key does; on (USER_TOKEN_SECRET), a route that names a user needs an x-user-token
binding that user, so a user's list (whose reasons name their history items) and their
profile's events are theirs alone. The API tests go through functions/api/app.py's handler
with the service over in-memory stores (tests/fakes.py)."""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

from model_build.collaborative import TrainingConfig, train
from model_build.data import Interaction
from ops import commands
from ops.__main__ import main as ops_main
from recsys import wiring
from recsys.events import Event
from recsys.index import ItemIndex
from recsys.live import LiveCatalog
from recsys.profile import Profile, apply_events
from recsys.release import COLLABORATIVE, ITEM_VECTORS, build_manifest
from recsys.settings import Settings
from recsys.tokens import Forbidden, Unauthenticated, UserTokens, parse_secrets, sign, verify
from tests.api_events import LambdaContext, api_event
from tests.fakes import (
    HashingEncoder,
    MemoryEventStream,
    MemoryItems,
    MemoryProfiles,
    MemoryReleases,
    memory_recommender,
)
from tests.unit.conftest import USER_TOKEN_SECRET

SECRET = "s" * 32
OTHER_SECRET = "o" * 32
NOW = 1_700_000_000
HISTORY_REASONS = {"similar_to_history", "chosen_alongside"}


# ---- the token itself ----------------------------------------------------------------

def test_a_token_binds_its_user_until_it_expires() -> None:
    token = sign(SECRET, "user.with.dots", NOW + 60)
    user, expiry, signature = token.rsplit(".", 2)
    assert (user, expiry, len(signature)) == ("user.with.dots", str(NOW + 60), 43) and "=" not in signature
    assert verify([SECRET], token, NOW) == "user.with.dots"
    assert verify([SECRET], token, NOW + 59.9) == "user.with.dots"
    with pytest.raises(Unauthenticated, match="expired"):
        verify([SECRET], token, NOW + 60)


@pytest.mark.parametrize("forge", [
    lambda t: t.replace("u-1.", "u-2.", 1),                        # another user, same signature
    lambda t: t.replace(f".{NOW + 60}.", f".{NOW + 10 ** 6}.", 1),  # a later expiry
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),              # one character of the signature
    lambda t: sign(OTHER_SECRET, "u-1", NOW + 60),                  # signed under another secret
])
def test_a_forged_token_does_not_verify(forge) -> None:
    with pytest.raises(Unauthenticated, match="signature does not verify"):
        verify([SECRET], forge(sign(SECRET, "u-1", NOW + 60)), NOW)


@pytest.mark.parametrize("token", [None, "", "u-1", "u-1.123", f"u-1.-5.{'A' * 43}", f".{NOW}.{'A' * 43}",
                                   f"u-1.{NOW}.{'A' * 42}", f"u-1.{NOW}.{'+' * 43}", "u" * 600 + f".{NOW}.{'A' * 43}"])
def test_a_missing_or_malformed_token_is_unauthenticated(token) -> None:
    with pytest.raises(Unauthenticated):
        verify([SECRET], token, NOW)


def test_rotation_the_first_secret_signs_and_each_verifies() -> None:
    rotating = UserTokens(parse_secrets(f"{OTHER_SECRET}, {SECRET}"), clock=lambda: NOW)
    old = sign(SECRET, "u-1", NOW + 60)
    assert rotating.require(old, ["u-1"]) == "u-1"
    new = rotating.sign("u-1", NOW + 60)
    assert new == sign(OTHER_SECRET, "u-1", NOW + 60) and rotating.require(new, ["u-1"]) == "u-1"
    with pytest.raises(Unauthenticated):
        UserTokens((OTHER_SECRET,), clock=lambda: NOW).require(old, ["u-1"])


def test_a_valid_token_for_another_user_is_forbidden() -> None:
    gate = UserTokens((SECRET,), clock=lambda: NOW)
    token = sign(SECRET, "u-1", NOW + 60)
    assert gate.require(token, []) == "u-1"
    with pytest.raises(Forbidden, match="for user u-1"):
        gate.require(token, ["u-1", "u-2"])
    with pytest.raises(Forbidden):
        gate.require(token, [1])


def test_tokens_are_off_unless_a_secret_is_set_and_a_short_secret_is_refused() -> None:
    assert wiring.user_tokens(Settings()) is None
    assert wiring.user_tokens(Settings.from_env({"USER_TOKEN_SECRET": SECRET})) == UserTokens((SECRET,))
    with pytest.raises(ValueError, match="at least 32 characters"):
        wiring.user_tokens(Settings(user_token_secret=f"{SECRET},short"))
    assert SECRET not in repr(Settings(user_token_secret=SECRET))


# ---- through the API's handler -------------------------------------------------------

@pytest.fixture(scope="module")
def world():
    """A release with a collaborative model, and user u-1 with a history: their list's reasons
    name the history items behind each item-item score."""
    encoder, dim = HashingEncoder(16), 16
    rng = np.random.default_rng(5)
    ids = [f"i{n}" for n in range(40)]
    vectors = encoder.encode([f"item {n % 5} genre {n % 3} word{n}" for n in range(40)])
    interactions = [Interaction(f"t{u}", ids[int(i)], 4.5, 1_000 + 10 * t)
                    for u in range(30) for t, i in enumerate(rng.choice(30, size=6, replace=False))]
    index = ItemIndex(dim)
    index.extend(ids, vectors, np.array([sum(r.item_id == i for r in interactions) for i in ids], dtype=np.float32))
    model = train(interactions, index, TrainingConfig(ease_l2=10.0, neighbours=8, factors=4, als_iterations=2))
    files = {ITEM_VECTORS: index.to_npz(model_version=encoder.version, updated_at=0.0),
             COLLABORATIVE: model.to_npz(), "model.onnx": b"-", "tokenizer.json": b"{}",
             "encoder.json": b'{"model_version": "%s", "dim": %d}' % (encoder.version.encode(), dim)}
    releases = MemoryReleases()
    releases.publish("v1", files, build_manifest("v1", files, created_at=1.0))
    profiles = MemoryProfiles()
    profile = Profile("u-1")
    apply_events(profile, [Event(f"e{n}", "u-1", "purchase", time.time() - 100 + n, item)
                           for n, item in enumerate(["i0", "i1", "i2"])], index.vector)
    profiles.save(profile)
    items = MemoryItems()
    return encoder, LiveCatalog(releases, items, encoder.version, dim), items, profiles


@pytest.fixture()
def served(world, monkeypatch):
    """Installs the in-memory recommender in an API module; returns its event stream."""
    def install(module) -> MemoryEventStream:
        stream = MemoryEventStream()
        encoder, catalog, items, profiles = world
        monkeypatch.setattr(module, "recommender", memory_recommender(encoder, catalog, items, profiles, stream))
        return stream
    return install


def call(module, path: str, method: str = "GET", body: object = None, token: str | None = None,
         path_parameters: dict[str, str] | None = None) -> tuple[int, dict, dict[str, list[str]]]:
    event = api_event(path, method=method, body=None if body is None else json.dumps(body),
                      path_parameters=path_parameters, headers={"X-User-Token": token} if token else None)
    response = module.lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"]), response.get("multiValueHeaders") or {}


def recommendations(module, user: str, token: str | None = None) -> tuple[int, dict, dict]:
    return call(module, f"/users/{user}/recommendations", token=token, path_parameters={"user_id": user})


def named_history(body: dict) -> set[str]:
    return {i for item in body.get("items", []) for r in item["reasons"] if r["type"] in HISTORY_REASONS
            for i in r.get("items", [])}


def user_token(user: str, lifetime: int = 3600, secret: str = USER_TOKEN_SECRET) -> str:
    return sign(secret, user, int(time.time()) + lifetime)


def purchase(user: str, event_id: str) -> dict:
    return {"event_id": event_id, "user_id": user, "type": "purchase", "item_id": "i3"}


def test_tokens_off_the_key_is_trusted_for_every_user(api_module, served) -> None:
    stream = served(api_module)
    status, body, _ = recommendations(api_module, "u-1")
    assert status == 200 and named_history(body) & {"i0", "i1", "i2"}, body
    status, body, _ = call(api_module, "/events", "POST", {"events": [purchase("u-1", "a"), purchase("u-9", "b")]})
    assert status == 202 and body["accepted"] == 2 and {e.user_id for e in stream.events} >= {"u-1", "u-9"}
    spec = json.loads(api_module.SPEC)
    assert "user_token" not in spec["components"]["securitySchemes"]


def test_tokens_on_the_users_own_token_gets_their_list_with_its_history(api_module_with_user_tokens, served) -> None:
    module = api_module_with_user_tokens
    served(module)
    status, body, _ = recommendations(module, "u-1", user_token("u-1"))
    assert status == 200 and named_history(body) & {"i0", "i1", "i2"}, body
    status, body, _ = call(module, "/users/u-1/rank", "POST", {"item_ids": ["i3", "i4"]}, user_token("u-1"),
                           {"user_id": "u-1"})
    assert status == 200 and {i["item_id"] for i in body["items"]} == {"i3", "i4"}


@pytest.mark.parametrize(("token", "status", "message"), [
    (None, 401, "needs an x-user-token"),
    (lambda: user_token("u-1", lifetime=-1), 401, "expired"),
    (lambda: user_token("u-1", secret="x" * 32), 401, "does not verify"),
    (lambda: user_token("u-2").replace("u-2.", "u-1.", 1), 401, "does not verify"),
    (lambda: "garbage", 401, "is not <user_id>"),
    (lambda: user_token("u-2"), 403, "for user u-2"),
])
def test_tokens_on_no_list_and_no_history_without_the_users_token(api_module_with_user_tokens, served, token,
                                                                    status, message) -> None:
    module = api_module_with_user_tokens
    served(module)
    given = token() if token else None
    for got, body, headers in (recommendations(module, "u-1", given),
                               call(module, "/users/u-1/rank", "POST", {"item_ids": ["i3"]}, given,
                                    {"user_id": "u-1"})):
        assert got == status and set(body) == {"error"} and message in body["error"]["message"], body
        assert body["error"]["code"] == ("unauthenticated" if status == 401 else "forbidden")
        assert not {"i0", "i1", "i2"} & set(json.dumps(body).split('"'))
        assert status != 401 or headers.get("WWW-Authenticate") == ['UserToken header="x-user-token"']


def test_tokens_on_every_event_of_a_batch_must_be_the_bound_users(api_module_with_user_tokens, served) -> None:
    module = api_module_with_user_tokens
    stream = served(module)
    status, body, _ = call(module, "/events", "POST", {"events": [purchase("u-1", "a"), purchase("u-2", "b")]},
                           user_token("u-1"))
    assert (status, body["error"]["code"]) == (403, "forbidden") and stream.events == []
    status, body, _ = call(module, "/events", "POST", {"events": [purchase("u-1", "a")]})
    assert status == 401 and stream.events == []
    status, body, _ = call(module, "/events", "POST", {"events": [purchase("u-1", "a"), purchase("u-1", "b"),
                                                                  {"event_id": "c", "type": "click"}]},
                           user_token("u-1"))
    assert status == 202 and body["accepted"] == 2 and [e["code"] for e in body["errors"]] == ["invalid_event"]
    assert {e.user_id for e in stream.events} == {"u-1"}


def test_tokens_on_admin_and_userless_routes_need_none(api_module_with_user_tokens, served) -> None:
    module = api_module_with_user_tokens
    served(module)
    status, body, _ = call(module, "/users/u-1", path_parameters={"user_id": "u-1"})
    assert status == 200 and body["user_id"] == "u-1"
    assert call(module, "/items/i3/similar", path_parameters={"item_id": "i3"})[0] == 200
    assert call(module, "/trending")[0] == 200
    spec = json.loads(module.SPEC)
    assert spec["components"]["securitySchemes"]["user_token"]["name"] == "x-user-token"
    for path, method in (("/users/{user_id}/recommendations", "get"), ("/users/{user_id}/rank", "post"),
                         ("/events", "post")):
        assert spec["paths"][path][method]["security"] == [{"client_key": [], "user_token": []}]
    assert spec["paths"]["/users/{user_id}"]["get"]["security"] == [{"admin_key": []}]


# ---- the ops command -----------------------------------------------------------------

def test_ops_mints_a_token_the_api_accepts(monkeypatch, capsys) -> None:
    minted = commands.user_token(Settings(user_token_secret=f"{SECRET},{OTHER_SECRET}"), "u-1", 60, now=NOW)
    assert minted == {"user_id": "u-1", "expires_at": NOW + 60, "header": "x-user-token",
                      "token": sign(SECRET, "u-1", NOW + 60)}
    with pytest.raises(RuntimeError, match="set USER_TOKEN_SECRET"):
        commands.user_token(Settings(), "u-1")
    with pytest.raises(ValueError, match="user ids"):
        commands.user_token(Settings(user_token_secret=SECRET), "a/b")
    with pytest.raises(ValueError, match="lasts"):
        commands.user_token(Settings(user_token_secret=SECRET), "u-1", commands.USER_TOKEN_MAX_SECONDS + 1)
    monkeypatch.setenv("USER_TOKEN_SECRET", SECRET)
    monkeypatch.setattr(sys, "argv", ["ops", "user-token", "u-7", "--seconds", "120"])
    assert ops_main() == 0
    printed = json.loads(capsys.readouterr().out)
    assert UserTokens((SECRET,)).require(printed["token"], ["u-7"]) == "u-7"
    assert time.time() + 100 < printed["expires_at"] <= time.time() + 120
