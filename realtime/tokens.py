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

A token is checked when it is presented (:func:`authenticate`: the socket's ``auth``
and ``refresh``, the Bayeux handshake, the HTTP event log), against its signature and
expiry and against its user as the database has it now: the user must still exist and
be active. A token that ``TOKEN_GRANT`` gave (the token endpoint, the template tag) is
also held to the grant: the hook is run again for that user (with a
:class:`UserRequest`, which carries only ``user``), and the token gives at most what it
says and what the grant gives now. So a read-write token whose user lost staff is
read-only if the grant now says read-only, and refused if the grant gives no token.
(Tokens made by calling :func:`issue_token` directly are the caller's decision; only
their user is re-checked.) That is cached per user like keys (``REVALIDATE_INTERVAL``),
so a storm of presentations costs one query per user. Revalidation applies the same
checks to live connections every ``REVALIDATE_INTERVAL`` seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache

from asgiref.sync import sync_to_async
from django.core import signing
from django.utils.module_loading import import_string

from .auth import Principal
from .cache import TTLCache
from .conf import settings
from .errors import InvalidCredentials
from .names import validate_channel_name
from .protocol import ACCESS_LEVELS

logger = logging.getLogger("realtime")

SALT = "realtime.tokens"
ALL = "*"
USER_PLACEHOLDER = "{user}"
CACHE_MAX_ENTRIES = 10_000


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
    *,
    from_grant: bool = False,
) -> tuple[str, int]:
    """A signed token for ``user`` (or anonymous when None), and its expiry (unix seconds).

    ``session_ttl`` (default ``TOKEN_SESSION_TTL``) bounds how long a connection it
    authenticates stays authenticated without a refresh; None: until it logs out.
    Its user is re-checked whenever it is presented (still there, still active). With
    ``from_grant`` (how :func:`token_for_request` issues them) ``TOKEN_GRANT`` is run
    again as well, and the token gives no more than the grant gives then.
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
    if from_grant:
        payload["g"] = 1
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
    return issue_token(getattr(request, "user", None), grant.access, grant.channels, from_grant=True)


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
        from_grant=payload.get("g") == 1,
    )


# Re-checking a token against its user -----------------------------------------------


class UserRequest:
    """What ``TOKEN_GRANT`` is called with when a token is re-checked: only ``user``.

    A grant function that reads more of the request (the session, headers) must allow
    for their absence here (``getattr(request, "session", None)``).
    """

    __slots__ = ("user",)

    def __init__(self, user) -> None:
        self.user = user


# What a user's state can be, besides the Grant that TOKEN_GRANT gives now.
ACTIVE = "active"  # the user is there and active (the grant was not asked)
INACTIVE = "inactive"  # deleted or deactivated
FAILED = "failed"  # TOKEN_GRANT raised: refused, and logged


def user_state(user, regrant: bool) -> Grant | str | None:
    """INACTIVE, or (with ``regrant``) what the grant hook gives ``user`` now, or ACTIVE.

    ``user`` None is an anonymous visitor: always there, never inactive.
    """
    from django.contrib.auth.models import AnonymousUser

    if user is not None and not getattr(user, "is_active", True):
        return INACTIVE
    if not regrant:
        return ACTIVE
    try:
        return get_grant(UserRequest(AnonymousUser() if user is None else user))
    except Exception:
        logger.exception("realtime: TOKEN_GRANT failed re-checking a token; the token is refused")
        return FAILED


def load_states(wanted) -> dict[tuple[int | None, bool], Grant | str | None]:
    """:func:`user_state` for each ``(user_id, regrant)`` in ``wanted``, with one query."""
    from django.contrib.auth import get_user_model

    ids = {user_id for user_id, _ in wanted if user_id is not None}
    users = {user.pk: user for user in get_user_model()._default_manager.filter(pk__in=ids)} if ids else {}
    states = {}
    for user_id, regrant in wanted:
        if user_id is not None and user_id not in users:
            states[user_id, regrant] = INACTIVE
        else:
            states[user_id, regrant] = user_state(users.get(user_id), regrant)
    return states


def state_key(principal: Principal) -> tuple[int | None, bool] | None:
    """What :func:`load_states` needs to re-check a token's principal; None: nothing to check."""
    if principal.user_id is None and not principal.from_grant:
        return None
    return principal.user_id, principal.from_grant


def narrowed(principal: Principal, state: Grant | str | None) -> Principal | None:
    """``principal`` (a token's) as its user's state allows now; None if not at all.

    Only narrows: a token never gives more than it says, whatever the grant gives now.
    The same object comes back when nothing changed.
    """
    if state == ACTIVE:
        return principal
    if not isinstance(state, Grant):
        return None
    access = principal.access if state.access == "read-write" else "read-only"
    all_channels, names = principal.all_channels, principal.channel_names
    if ALL not in state.channels:
        granted = frozenset(_expand(state.channels, principal.user_id))
        names = granted if all_channels else names & granted
        all_channels = False
        if not names:
            return None
    if (access, all_channels, names) == (principal.access, principal.all_channels, principal.channel_names):
        return principal
    return replace(principal, access=access, all_channels=all_channels, channel_names=names)


cache = TTLCache(CACHE_MAX_ENTRIES)


def _load_state(key: tuple[int | None, bool]) -> Grant | str | None:
    return load_states([key])[key]


async def authenticate(token: str) -> Principal:
    """The principal a presented token stands for now; raises InvalidCredentials."""
    principal = verify_token(token)
    key = state_key(principal)
    if key is None:
        return principal
    state = await cache.load(key, lambda: sync_to_async(_load_state)(key))
    if state == INACTIVE:
        raise InvalidCredentials("the token's user is inactive")
    fresh = narrowed(principal, state)
    if fresh is None:
        raise InvalidCredentials("TOKEN_GRANT no longer gives this token")
    return fresh
