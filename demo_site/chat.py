"""The demo chat's publish handler (``REALTIME["PUBLISH_HANDLERS"]``): what a browser
publishes on ``rooms/<room>`` passes through :func:`on_message` before anyone receives it.

It refuses messages with a banned word (the page shows why), stores the others (so a
room shows its last messages when it is opened, through the ``chat.recent`` RPC method
in ``demo_site.rpc``), adds the stored message's id to what subscribers receive, and
tells each ``@name`` mentioned, on their personal channel ``users/<id>``, once the
message is saved.
"""

from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.db import transaction

import realtime
from realtime.errors import InvalidData, Rejected

from .models import ChatMessage

BANNED_WORDS = ("spam",)
MENTION = re.compile(r"(?<![\w@])@([\w.+-]+)")
MAX_LENGTH = 1000


def on_message(publication) -> None:
    """Moderate, store and announce one chat message (a ``realtime.handlers.ClientPublication``)."""
    if publication.event != "chat":
        return  # typing indicators and the like pass unchanged
    data = publication.data
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise InvalidData('a chat message is {"text": "..."}')
    text = text.strip()[:MAX_LENGTH]
    for word in BANNED_WORDS:
        if re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE):
            raise Rejected(f"Messages may not contain the word “{word}”.", code="banned_word")
    if publication.user_id is None:
        raise Rejected("Log in to chat.")
    room = publication.channel.split("/", 1)[1]
    with transaction.atomic():
        message = ChatMessage.objects.create(room=room, user_id=publication.user_id, text=text)
        for user in _mentioned(text, publication.user_id):
            realtime.publish(
                f"users/{user.pk}",
                "mention",
                {"room": room, "from": publication.user["name"], "text": text, "message": message.pk},
                on_commit=True,
            )
    publication.data = {"text": text, "id": message.pk}


def _mentioned(text: str, author_id: int):
    names = {name.rstrip(".") for name in MENTION.findall(text)}
    if not names:
        return []
    User = get_user_model()
    found = User._default_manager.filter(**{f"{User.USERNAME_FIELD}__in": names}, is_active=True)
    return [user for user in found.exclude(pk=author_id)]
