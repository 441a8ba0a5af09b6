"""WebSocket routes, for the project's ``URLRouter``.

``websocket_urlpatterns`` serves the native protocol at ``/realtime/ws``; mount
:class:`~realtime.consumers.RealtimeConsumer` elsewhere to change the path.
"""

from django.urls import path

from .consumers import RealtimeConsumer

websocket_urlpatterns = [
    path("realtime/ws", RealtimeConsumer.as_asgi(), name="realtime-ws"),
]
