"""realtime's lifecycle signals: Django signals a project connects receivers to.

Public API. Each signal is documented in ``docs/hooks.md`` with its arguments and where
it fires. Receivers may be plain functions or ``async def``; they run off the hot path,
in a per-process queue (``realtime.events``): a receiver that raises is logged, one that
is slow delays the signals behind it (up to ``SIGNAL_TIMEOUT`` each), and neither ever
delays delivery to subscribers. ::

    from django.dispatch import receiver
    from realtime import signals

    @receiver(signals.disconnected)
    async def gone(sender, client, principal, code, reason, **kwargs):
        ...

Per connection, in the process that serves it (``sender`` is the consumer class:
``realtime.consumers.RealtimeConsumer`` or ``realtime.bayeux.sessions.Session``; every
one gets ``client``, the connection's public id, ``protocol``, ``"native"`` or
``"bayeux"``, and ``principal``, a ``realtime.auth.Principal`` or None):
"""

from __future__ import annotations

from django.dispatch import Signal

#: A connection was accepted (a native WebSocket opened, a Bayeux session handshook).
#: Extra argument: ``scope`` (the ASGI scope; None for Bayeux sessions).
connected = Signal()
#: A connection authenticated with a key or a token, or renewed its token with ``refresh``.
#: Extra argument: ``refreshed`` (True for a ``refresh``).
authenticated = Signal()
#: A connection ended. Extra arguments: ``code`` (the WebSocket close code, None for a
#: Bayeux session) and ``reason`` (``docs/hooks.md`` lists them).
disconnected = Signal()
#: A connection subscribed to ``channel`` (a channel name or a pattern such as ``rooms/*``).
subscribed = Signal()
#: A subscription ended. Extra arguments: ``channel`` and ``reason`` (``client``: the client
#: unsubscribed; ``closed``: the connection ended; ``logout`` or a logout notice's reason;
#: an ``unsubscribed`` notice's reason).
unsubscribed = Signal()
#: A client publication was accepted (after the publish handler). Extra arguments:
#: ``channel``, ``event``, ``data`` and ``row`` (the ``registry.ChannelInfo`` covering it).
client_published = Signal()

# Cluster-wide, from presence (channels with presence only): each fires once for the
# whole cluster, in the process whose presence update saw the change. ``sender`` is
# ``realtime.hub.Hub``; every one gets ``channel``.

#: The first member joined a channel with presence.
channel_occupied = Signal()
#: The last member left a channel with presence (unsubscribed, disconnected, or its
#: process died and its entry expired).
channel_vacated = Signal()
#: A member (a user, or a connection without one) joined. Extra argument: ``member``,
#: ``{"client": ..., "user": {"id": ..., "name": ...} or None}``.
member_joined = Signal()
#: A member's last connection left. Extra argument: ``member``, as for member_joined.
member_left = Signal()

CONNECTION_SIGNALS = (connected, authenticated, disconnected, subscribed, unsubscribed, client_published)
CLUSTER_SIGNALS = (channel_occupied, channel_vacated, member_joined, member_left)
