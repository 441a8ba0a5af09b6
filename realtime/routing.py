"""WebSocket routes, for the project's ``URLRouter``.

``websocket_urlpatterns`` serves the native protocol at ``/realtime/ws`` and Bayeux at
``/realtime/bayeux`` (with the suffixes CometD may append); mount
:class:`~realtime.consumers.RealtimeConsumer` or
:class:`~realtime.bayeux.consumer.BayeuxConsumer` elsewhere to change the paths.
"""

from django.urls import path, re_path

from .bayeux.consumer import BayeuxConsumer
from .consumers import RealtimeConsumer

websocket_urlpatterns = [
    path("realtime/ws", RealtimeConsumer.as_asgi(), name="realtime-ws"),
    re_path(r"^realtime/bayeux(?:/[^/]*)?$", BayeuxConsumer.as_asgi(), name="realtime-bayeux"),
]
