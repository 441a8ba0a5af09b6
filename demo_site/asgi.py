"""ASGI entry point: Django for HTTP, realtime's consumers for WebSockets and SSE.

Serve with ``daphne demo_site.asgi:application`` or
``uvicorn demo_site.asgi:application``; see docs/deployment.md.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from realtime.guard import guard  # noqa: E402
from realtime.routing import http_urlpatterns, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Server-sent events at /realtime/sse; everything else is Django's, behind the guard:
        # realtime's HTTP endpoints refuse oversized and unauthenticated bodies unread.
        "http": URLRouter([*http_urlpatterns, re_path(r"", guard(django_asgi_app))]),
        # realtime checks the Origin itself (allowing clients that send none).
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
