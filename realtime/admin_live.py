"""The live view in the admin: server processes, busiest channels, presence, and actions.

``/admin/realtime/channel/live/`` (linked from the channel list) is a page that polls
two JSON views every few seconds, and posts its actions to a third, all through the
server API (``realtime.api``). They are admin views: staff only, with the channel
model's *view* permission to look and its *change* permission to act; the action view
is CSRF-protected like any admin form.
"""

from __future__ import annotations

import asyncio
import json

from asgiref.sync import async_to_sync
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, JsonResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

from . import api
from .api_views import serve_here
from .errors import InvalidData, RealtimeError

BUSIEST = 20


def _answer(call) -> JsonResponse:
    try:
        reply = call()
    except RealtimeError as error:
        body = {"err": error.code.value, **({"detail": error.detail} if error.detail else {})}
        return JsonResponse(body, status=error.http_status)
    return JsonResponse({"ok": True, **reply})


def _ensure_hub(request) -> None:
    async_to_sync(serve_here)(request)


def page(model_admin, request):
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Live view"),
        "opts": model_admin.opts,
        "can_act": model_admin.has_change_permission(request),
        "busiest": BUSIEST,
    }
    return TemplateResponse(request, "admin/realtime/live.html", context)


def data(model_admin, request):
    """Processes and the busiest channels, in one reply."""
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    _ensure_hub(request)

    async def both():
        # At once: a process that does not answer costs one timeout, not two.
        info, channels = await asyncio.gather(
            api.ainfo(), api.achannels(request.GET.get("prefix", ""), limit=BUSIEST)
        )
        return {"info": info, "channels": channels}

    return _answer(async_to_sync(both))


def presence(model_admin, request):
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    return _answer(lambda: api.presence(request.GET.get("channel", "")))


ACTIONS = {
    "disconnect": lambda body: api.disconnect(
        user=body.get("user") or None,
        client=body.get("client") or None,
        reconnect=bool(body.get("reconnect")),
        reason=str(body.get("reason") or ""),
    ),
    "unsubscribe": lambda body: api.unsubscribe(
        body.get("channel", ""), user=body.get("user") or None, client=body.get("client") or None
    ),
}


def act(model_admin, request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not model_admin.has_change_permission(request):
        raise PermissionDenied
    _ensure_hub(request)

    def run():
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise InvalidData("the body is not JSON") from None
        action = ACTIONS.get(body.get("action")) if isinstance(body, dict) else None
        if action is None:
            raise InvalidData("action must be disconnect or unsubscribe")
        return action(body)

    return _answer(run)
