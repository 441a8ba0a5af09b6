"""HTTP routes. Mount with ``path("realtime/", include("realtime.urls"))``."""

from django.urls import path

from . import views

app_name = "realtime"

urlpatterns = [
    path("api/publish", views.publish_view, name="publish"),
    path("token", views.token_view, name="token"),
    path("log/<path:channel>", views.log_view, name="log"),
]
