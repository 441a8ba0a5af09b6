"""The demo's pages: home, a chat with rooms, and a live metrics dashboard."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from . import metrics

ROOMS = ("lobby", "random", "dev")


def home(request):
    return render(request, "home.html")


@login_required
def chat(request, room: str = ROOMS[0]):
    if room not in ROOMS:
        raise Http404("No such room.")
    return render(request, "chat.html", {"rooms": ROOMS, "room": room})


def dashboard(request):
    # Without Redis nothing outside this process can publish here, so the server
    # samples itself; with Redis, `manage.py demo_metrics` may publish as well.
    metrics.ensure_publisher()
    return render(request, "dashboard.html", {"channel": metrics.CHANNEL, "event": metrics.EVENT})
