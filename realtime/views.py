"""The HTTP publish endpoint, for backends that are not Django.

``POST /realtime/api/publish`` with ``Authorization: Bearer <read-write secret>`` and
a JSON body ``{"channel": ..., "event": ..., "data": ...}``. It is CSRF-exempt because
it authenticates by key, never by cookie. Errors use the same codes as the WebSocket
protocol, with an HTTP status that matches (see docs/protocol.md).
"""

from __future__ import annotations

import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from . import auth, protocol, registry
from .conf import settings
from .errors import (
    AccessDenied,
    InvalidChannel,
    InvalidCredentials,
    InvalidData,
    MessageTooLarge,
    RealtimeError,
)
from .names import validate_channel_name
from .permissions import get_policy
from .publishing import send_publication


def _error(error: RealtimeError) -> JsonResponse:
    body = {"err": error.code.value}
    if error.detail and error.detail != error.code.value:
        body["detail"] = error.detail
    response = JsonResponse(body, status=error.http_status)
    if isinstance(error, InvalidCredentials):
        response["WWW-Authenticate"] = 'Bearer realm="realtime"'
    return response


def _bearer(request) -> str:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise InvalidCredentials("send Authorization: Bearer <secret>")
    return secret.strip()


async def _publish(request) -> JsonResponse:
    principal = await auth.authenticate(_bearer(request))
    if not principal.can_write:
        raise AccessDenied("read-only access cannot publish")
    if len(request.body) > settings.MAX_MESSAGE_SIZE:
        raise MessageTooLarge(f"bodies are limited to {settings.MAX_MESSAGE_SIZE} bytes")
    try:
        body = json.loads(request.body, parse_constant=protocol._reject_constant)
    except (ValueError, RecursionError):
        raise InvalidData("body is not valid JSON") from None
    command = protocol.PARSERS["publish"](None, body)
    name = validate_channel_name(command.channel)
    info = await registry.aresolve(name)
    if info is None:
        raise InvalidChannel(f"no active channel covers {name!r}")
    if not get_policy().can_publish(principal, info):
        raise AccessDenied("channel is outside this key's scope")
    await send_publication(name, command.event, command.data)
    return JsonResponse({"ok": True})


@csrf_exempt
async def publish_view(request) -> JsonResponse:
    if request.method != "POST":
        response = JsonResponse({"err": "invalid_data", "detail": "use POST"}, status=405)
        response["Allow"] = "POST"
        return response
    try:
        return await _publish(request)
    except RealtimeError as error:
        return _error(error)
