"""ASGI entry point: Django for HTTP, realtime's consumer for WebSockets.

Serve with ``daphne demo_site.asgi:application`` or
``uvicorn demo_site.asgi:application``; see docs/deployment.md.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from realtime.guard import guard  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # realtime's HTTP endpoints refuse oversized and unauthenticated bodies unread.
        "http": guard(django_asgi_app),
        # realtime checks the Origin itself (allowing clients that send none).
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
