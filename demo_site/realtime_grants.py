"""Who gets which browser token in the demo (``REALTIME["TOKEN_GRANT"]``).

- staff: read-write on every channel;
- other logged-in users: read-write on ``rooms`` (the chat rooms ``rooms/<room>``), so
  their messages carry their name;
- anonymous visitors: a read-only token for ``metrics`` and ``news``, the public feeds.

A token names one access level, so a logged-in user's token is scoped to ``rooms``; the
public feeds are *anonymous read* channels, which every connection may read anyway.
"""

from __future__ import annotations

from realtime.tokens import Grant

CHAT_CHANNELS = ("rooms",)
PUBLIC_CHANNELS = ("metrics", "news")


def grant(request) -> Grant | None:
    user = request.user
    if user.is_staff:
        return Grant("read-write", ("*",))
    if user.is_authenticated:
        return Grant("read-write", CHAT_CHANNELS)
    return Grant("read-only", PUBLIC_CHANNELS)
