"""HTTP routes. Mount with ``path("realtime/", include("realtime.urls"))``."""

from django.urls import path, re_path

from . import api_views, metrics, views
from .bayeux.http import bayeux_view

app_name = "realtime"

urlpatterns = [
    path("api/publish", views.publish_view, name="publish"),
    # The server API (docs/operations.md) and Prometheus metrics.
    path("api/<str:call>", api_views.api_view, name="api"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("token", views.token_view, name="token"),
    path("log/<path:channel>", views.log_view, name="log"),
    # Served by realtime.routing.http_urlpatterns in the ASGI router; this only explains.
    path("sse", views.sse_not_routed, name="sse"),
    # Bayeux long-polling and callback-polling; CometD appends /handshake, /connect...
    re_path(r"^bayeux(?:/(?P<suffix>[^/]*))?$", bayeux_view, name="bayeux"),
]
