"""The HTTP publish endpoint, for backends that are not Django.

``POST /realtime/api/publish`` with ``Authorization: Bearer <read-write secret>`` and
a JSON body ``{"channel": ..., "event": ..., "data": ...}``. It is CSRF-exempt because
it authenticates by key, never by cookie. Errors use the same codes as the WebSocket
protocol, with an HTTP status that matches (see docs/protocol.md).
"""

from __future__ import annotations

import json
import logging

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from . import auth, protocol, registry, tokens
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

logger = logging.getLogger("realtime")


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
    secret = _bearer(request)
    if len(secret) > protocol.MAX_SECRET_LENGTH or not protocol.is_encodable(secret):
        raise InvalidCredentials("unknown, revoked or expired key")
    principal = await auth.authenticate(secret)
    if not principal.can_write:
        raise AccessDenied("read-only access cannot publish")
    # Checked before the body is read, so an oversized body is refused unread.
    limit = settings.MAX_MESSAGE_SIZE
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit or len(request.body) > limit:
        raise MessageTooLarge(f"bodies are limited to {limit} bytes")
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
    await send_publication(name, command.event, command.data, info=info)
    return JsonResponse({"ok": True}, json_dumps_params={"separators": (",", ":")})


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
    except Exception:
        logger.exception("realtime: unexpected error in the publish endpoint")
        return JsonResponse({"err": "internal_error"}, status=500)


@require_GET
def token_view(request) -> JsonResponse:
    """A fresh signed token for the session's user, as the grant hook allows.

    The JS client calls this (``data-token-url``) when its token is missing or expired.
    """
    issued = tokens.token_for_request(request)
    if issued is None:
        response = JsonResponse({"err": "access_denied"}, status=403)
    else:
        token, expires = issued
        response = JsonResponse({"token": token, "expires": expires})
    response["Cache-Control"] = "no-store"
    return response
