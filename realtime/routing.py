"""WebSocket routes, and the event stream's HTTP route, for the project's ``URLRouter``.

``websocket_urlpatterns`` serves the native protocol at ``/realtime/ws`` and Bayeux at
``/realtime/bayeux`` (with the suffixes CometD may append); mount
:class:`~realtime.consumers.RealtimeConsumer` or
:class:`~realtime.bayeux.consumer.BayeuxConsumer` elsewhere to change the paths.

``http_urlpatterns`` serves server-sent events at ``/realtime/sse``: put it before
Django in the ``http`` branch of the project's ``ProtocolTypeRouter``::

    "http": URLRouter([*http_urlpatterns, re_path(r"", django_asgi_app)]),
"""

from django.urls import path, re_path

from .bayeux.consumer import BayeuxConsumer
from .consumers import RealtimeConsumer
from .sse.stream import app as event_stream

websocket_urlpatterns = [
    path("realtime/ws", RealtimeConsumer.as_asgi(), name="realtime-ws"),
    re_path(r"^realtime/bayeux(?:/[^/]*)?$", BayeuxConsumer.as_asgi(), name="realtime-bayeux"),
]

http_urlpatterns = [
    path("realtime/sse", event_stream, name="realtime-sse"),
]
