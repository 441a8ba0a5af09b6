"""Signed browser tokens: what a page gives its browser instead of a key secret.

A token is signed with Django's signing machinery (``SECRET_KEY``, with
``SECRET_KEY_FALLBACKS`` honoured) and says who the user is, which channels it may use,
with which access, until when. Nothing is stored: the server checks the signature.
No secret that can publish ever reaches a browser; a token that can publish is bound
to a user, and every publication made with it carries that user, set by the server.

Who gets which token is the project's decision: ``REALTIME["TOKEN_GRANT"]`` names a
function ``grant(request) -> Grant | None``. The default lets staff publish everywhere,
lets logged-in users read everywhere, and gives anonymous visitors no token (they can
still read channels marked for anonymous readers).

Tokens are checked when a connection authenticates. A live connection then stays
authenticated until it logs out, or until the user is deactivated or deleted (the
hub's revalidation checks); expiry only limits how long a token can be presented.
With ``REALTIME["TOKEN_SESSION_TTL"]`` a token also says until when a connection it
authenticated may stay authenticated (``"e"``): before then the client sends
``{"refresh": {"token": ...}}`` with a fresh one, or the connection becomes anonymous.

A grant's channel may hold ``{user}``, replaced by the user's id when the token is
issued: ``Grant("read-only", ("users/{user}",))`` (an anonymous visitor's token leaves
such entries out). Channels under a row with *personal sub-channels* need no entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from django.core import signing
from django.utils.module_loading import import_string

from .auth import Principal
from .conf import settings
from .errors import InvalidCredentials
from .names import validate_channel_name
from .protocol import ACCESS_LEVELS

SALT = "realtime.tokens"
ALL = "*"
USER_PLACEHOLDER = "{user}"


@dataclass(frozen=True)
class Grant:
    """What a token gives: an access level on some channels (``("*",)`` for all)."""

    access: str = "read-only"
    channels: tuple[str, ...] = (ALL,)


def default_grant(request) -> Grant | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return Grant("read-write") if user.is_staff else Grant("read-only")


@lru_cache(maxsize=8)
def _load(path: str):
    return import_string(path)


def get_grant(request) -> Grant | None:
    return _load(settings.TOKEN_GRANT)(request)


def reset() -> None:
    """Forget loaded grant functions (settings changed)."""
    _load.cache_clear()


def issue_token(
    user,
    access: str = "read-only",
    channels=(ALL,),
    ttl: float | None = None,
    session_ttl: float | None = None,
) -> tuple[str, int]:
    """A signed token for ``user`` (or anonymous when None), and its expiry (unix seconds).

    ``session_ttl`` (default ``TOKEN_SESSION_TTL``) bounds how long a connection it
    authenticates stays authenticated without a refresh; None: until it logs out.
    """
    if access not in ACCESS_LEVELS:
        raise ValueError(f"access must be one of {ACCESS_LEVELS}")
    authenticated = user is not None and user.is_authenticated
    channels = _expand(channels, user.pk if authenticated else None)
    for name in channels:
        if name != ALL:
            validate_channel_name(name)
    now = time.time()
    expires = int(now + (settings.TOKEN_TTL if ttl is None else ttl))
    payload = {
        "u": user.pk if authenticated else None,
        "n": user.get_username() if authenticated else "",
        "a": access,
        "c": channels,
        "x": expires,
    }
    session_ttl = settings.TOKEN_SESSION_TTL if session_ttl is None else session_ttl
    if session_ttl is not None:
        payload["e"] = int(now + session_ttl)
    return signing.dumps(payload, salt=SALT, compress=True), expires


def _expand(channels, user_id) -> list[str]:
    """Grant entries with ``{user}`` in them, for this user (left out for anonymous tokens)."""
    expanded = []
    for name in channels:
        if USER_PLACEHOLDER in name:
            if user_id is None:
                continue
            name = name.replace(USER_PLACEHOLDER, str(user_id))
        expanded.append(name)
    return expanded


def token_for_request(request) -> tuple[str, int] | None:
    """The token the grant hook allows for this request's user, or None."""
    grant = get_grant(request)
    if grant is None:
        return None
    return issue_token(getattr(request, "user", None), grant.access, grant.channels)


def verify_token(token: str) -> Principal:
    """The principal a token stands for; InvalidCredentials if forged, malformed or expired."""
    try:
        payload = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        raise InvalidCredentials("the token is not valid") from None
    try:
        user_id, user_name = payload["u"], payload["n"]
        access, channels, expires = payload["a"], payload["c"], payload["x"]
        if access not in ACCESS_LEVELS or not isinstance(channels, list) or not isinstance(expires, int):
            raise TypeError
    except (KeyError, TypeError):
        raise InvalidCredentials("the token is not valid") from None
    now = time.time()
    if expires <= now:
        raise InvalidCredentials("the token has expired")
    ends = payload.get("e")
    if ends is not None and (isinstance(ends, bool) or not isinstance(ends, int)):
        raise InvalidCredentials("the token is not valid")
    if ends is not None and ends <= now:
        raise InvalidCredentials("the token's session has ended; fetch a fresh token")
    return Principal(
        key_id=None,
        name=user_name,
        access=access,
        all_channels=ALL in channels,
        channel_names=frozenset(channels) - {ALL},
        user_id=user_id,
        user_name=user_name,
        # For a token: when the authentication it gives a live connection ends.
        expires_at=datetime.fromtimestamp(ends, UTC) if ends is not None else None,
    )
