"""User tokens on, over the local stack: the UserTokenSecret parameter reaches the API
function through the template, a token minted by `python -m ops user-token` (from the stack's
own environment) opens the user's routes through the gateway, and nothing else does. An empty
stack of its own (no demo): the token check comes before any catalog is needed."""
from __future__ import annotations

import secrets

from local_stack.client import ApiClient
from local_stack.stack import LocalStack, free_port
from ops import commands
from recsys.settings import Settings

KEY, ADMIN = "tokens-client-key", "tokens-admin-key"


def test_user_tokens_over_the_local_stack(encoder_model_dir, tmp_path) -> None:
    secret = secrets.token_urlsafe(48)
    with LocalStack(api_key=KEY, admin_key=ADMIN, port=free_port(), log_dir=tmp_path / "logs",
                    parameters={"UserTokenSecret": secret}) as stack:
        stack.ready()
        minted = commands.user_token(Settings.from_env(stack.environment_of("ApiFunction")), "ana")
        bare, ana = ApiClient(stack.url, KEY), ApiClient(stack.url, KEY, {minted["header"]: minted["token"]})
        status, body = bare.get("/users/ana/recommendations", k=5)
        assert (status, body["error"]["code"]) == (401, "unauthenticated"), body
        status, body = ana.get("/users/ana/recommendations", k=5)
        assert status == 200 and body["user_id"] == "ana", body
        status, body = ana.get("/users/bob/recommendations", k=5)
        assert (status, body["error"]["code"]) == (403, "forbidden"), body
        event = {"event_id": "e-1", "user_id": "ana", "type": "click", "item_id": "1"}
        status, body = ana.post("/events", {"events": [event, {**event, "event_id": "e-2", "user_id": "bob"}]})
        assert (status, body["error"]["code"]) == (403, "forbidden"), body
        status, body = ana.post("/events", {"events": [event]})
        assert (status, body["accepted"]) == (202, 1), body
        assert bare.get("/health")[0] == 200 and bare.get("/trending")[0] == 200
        assert ApiClient(stack.url, ADMIN).get("/users/ana")[0] == 200
