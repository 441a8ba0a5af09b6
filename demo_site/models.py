"""The demo's own data: the chat messages its publish handler stores."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ChatMessage(models.Model):
    """A message said in a chat room (the channel ``rooms/<room>``), stored by the
    publish handler (``demo_site.chat.on_message``) as it is published."""

    room = models.SlugField(max_length=50)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages")
    text = models.TextField(max_length=1000)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["room", "-created_at"])]

    def __str__(self) -> str:
        return f"#{self.room} {self.user}: {self.text[:40]}"

    def as_dict(self) -> dict:
        """As the chat page shows it (the same shape as a live message's data and user)."""
        return {
            "id": self.pk,
            "text": self.text,
            "user": {"id": self.user_id, "name": self.user.get_username()},
            "time": self.created_at.isoformat(),
        }
