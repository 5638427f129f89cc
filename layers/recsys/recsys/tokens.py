"""User tokens: a signed, expiring binding of a request to one user (off unless a secret is set).

The clients' API key is shared by every caller of the client API, so it says nothing about
which user a request is for. With a secret configured (USER_TOKEN_SECRET), a route that names
a user takes an `x-user-token` header that your server minted for that user:

    <user_id>.<expires_at>.<signature>

`expires_at` is unix seconds (decimal digits), `signature` the unpadded base64url
HMAC-SHA256 of `<user_id>.<expires_at>` under the secret. User ids may hold dots; the last
two dots split the token. The setting may hold several secrets, comma-separated: tokens are
signed with the first and accepted under any, so a secret is rotated without a window in
which good tokens fail (see README, "User tokens").
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

TOKEN_HEADER = "x-user-token"
MIN_SECRET_LENGTH = 32
MAX_TOKEN_LENGTH = 512  # a 128-character id, 12 digits, 43 of signature, with room
_EXPIRY = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class Unauthenticated(PermissionError):
    """No token, or one that does not verify (malformed, forged, expired): a 401."""
    code = "unauthenticated"


class Forbidden(PermissionError):
    """A valid token for another user than the request names: a 403."""
    code = "forbidden"


def parse_secrets(setting: str) -> tuple[str, ...]:
    """The secrets of the setting, signing one first; empty when tokens are off. Raises
    ValueError for a secret shorter than MIN_SECRET_LENGTH (a misconfiguration, refused
    rather than served)."""
    secrets = tuple(s.strip() for s in setting.split(",") if s.strip())
    short = [n for n, s in enumerate(secrets) if len(s) < MIN_SECRET_LENGTH]
    if short:
        raise ValueError(f"USER_TOKEN_SECRET: each secret must be at least {MIN_SECRET_LENGTH} characters "
                         f"(secret {', '.join(str(n + 1) for n in short)} is shorter)")
    return secrets


def _signature(secret: str, user_id: str, expires_at: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), f"{user_id}.{expires_at}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(secret: str, user_id: str, expires_at: int) -> str:
    """A token binding `user_id` until `expires_at` (unix seconds)."""
    if not user_id or "," in secret:
        raise ValueError("sign takes one secret and a non-empty user id")
    if not 0 < expires_at < 10 ** 12:
        raise ValueError("expires_at is unix seconds")
    return f"{user_id}.{int(expires_at)}.{_signature(secret, user_id, str(int(expires_at)))}"


def verify(secrets: Iterable[str], token: str | None, now: float) -> str:
    """The user id a token binds, if it is signed under one of `secrets` and not expired;
    raises Unauthenticated saying which of those it is not."""
    if not token:
        raise Unauthenticated(f"this route needs an {TOKEN_HEADER} header for the user it names")
    parts = token.rsplit(".", 2) if len(token) <= MAX_TOKEN_LENGTH else []
    if len(parts) != 3 or not parts[0] or not _EXPIRY.fullmatch(parts[1]) or not _SIGNATURE.fullmatch(parts[2]):
        raise Unauthenticated(f"the {TOKEN_HEADER} is not <user_id>.<expiry>.<signature>")
    user_id, expires_at, given = parts
    # Every secret is tried (no early exit), so the time taken says nothing about which one matched.
    matched = [hmac.compare_digest(_signature(s, user_id, expires_at), given) for s in secrets]
    if not any(matched):
        raise Unauthenticated(f"the {TOKEN_HEADER} signature does not verify")
    if int(expires_at) <= now:
        raise Unauthenticated(f"the {TOKEN_HEADER} expired")
    return user_id


@dataclass(frozen=True)
class UserTokens:
    """The check a client route makes when tokens are on: the token verifies, and it binds
    every user the request names."""
    secrets: tuple[str, ...]
    clock: Callable[[], float] = field(default=time.time)

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("UserTokens needs at least one secret")

    def require(self, token: str | None, user_ids: Iterable[object]) -> str:
        """The bound user id; raises Unauthenticated (no valid token) or Forbidden (a valid
        token, and the request names another user: every event of a batch must be the bound
        user's)."""
        bound = verify(self.secrets, token, self.clock())
        if any(user_id != bound for user_id in user_ids):
            raise Forbidden(f"the {TOKEN_HEADER} is for user {bound}; this request names another user")
        return bound

    def sign(self, user_id: str, expires_at: int) -> str:
        return sign(self.secrets[0], user_id, expires_at)
