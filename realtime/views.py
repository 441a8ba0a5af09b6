"""HTTP endpoints: publishing for backends that are not Django, event logs, tokens.

``POST /realtime/api/publish`` with ``Authorization: Bearer <read-write secret>`` and
a JSON body ``{"channel": ..., "event": ..., "data": ...}``. It is CSRF-exempt because
it authenticates by key, never by cookie. ``GET /realtime/log/<channel>`` returns a
channel's stored publications. Errors use the same codes as the WebSocket protocol,
with an HTTP status that matches (see docs/protocol.md).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from urllib.parse import urlencode

from django.http import HttpResponse, JsonResponse
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from . import actions, auth, keys, protocol, tokens
from .broker import get_broker
from .conf import settings
from .errors import (
    AccessDenied,
    ErrorCode,
    HistoryDisabled,
    InvalidCredentials,
    InvalidData,
    MessageTooLarge,
    RealtimeError,
)
from .names import validate_channel_name

logger = logging.getLogger("realtime")


def error_response(code: ErrorCode, status: int, detail: str = "") -> HttpResponse:
    """An error in the socket's format (``protocol.error_frame``) with its HTTP status."""
    response = HttpResponse(
        protocol.error_frame(code, None, detail), status=status, content_type="application/json"
    )
    if code == ErrorCode.INVALID_CREDENTIALS:
        response["WWW-Authenticate"] = 'Bearer realm="realtime"'
    return response


def error_boundary(view):
    """Turn what an async view raises into an error response, in one place, as the
    WebSocket consumer does for frames: a ``RealtimeError`` becomes its code and
    status; anything else is logged and answered ``internal_error`` (500)."""

    @functools.wraps(view)
    async def wrapper(request, *args, **kwargs):
        try:
            return await view(request, *args, **kwargs)
        except RealtimeError as error:
            return error_response(error.code, error.http_status, error.detail)
        except Exception:
            logger.exception("realtime: unexpected error in %s", view.__name__)
            return error_response(ErrorCode.INTERNAL_ERROR, 500)

    return wrapper


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
        body = protocol.decode(request.body)
    except (ValueError, RecursionError):
        raise InvalidData("body is not valid JSON") from None
    command = protocol.PARSERS["publish"](None, body)
    publication = await actions.publish(
        principal, command.channel, command.event, command.data, command.idempotency_key
    )
    reply = {"ok": True}
    if publication.offset is not None:
        reply.update(offset=publication.offset, epoch=publication.epoch)
    return JsonResponse(reply, json_dumps_params={"separators": (",", ":")})


@csrf_exempt
@error_boundary
async def publish_view(request) -> HttpResponse:
    if request.method != "POST":
        response = error_response(ErrorCode.INVALID_DATA, 405, "use POST")
        response["Allow"] = "POST"
        return response
    return await _publish(request)


async def _reader(request):
    """The principal of ``Authorization: Bearer <secret or token>``, or None without one."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    credential = _bearer(request)
    if len(credential) > protocol.MAX_TOKEN_LENGTH or not protocol.is_encodable(credential):
        raise InvalidCredentials("unknown, revoked or expired credentials")
    if credential.startswith(keys.SECRET_PREFIX):
        return await auth.authenticate(credential, "read-only")
    return tokens.verify_token(credential).limited_to("read-only")


def _query_int(request, name: str, default: int, low: int, high: int) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidData(f"{name} must be an integer from {low} to {high}")
    return value


async def _log(request, channel: str) -> HttpResponse:
    name = validate_channel_name(channel)
    since = _query_int(request, "since", 0, 0, protocol.MAX_OFFSET)
    limit = _query_int(request, "limit", protocol.HISTORY_DEFAULT_LIMIT, 1, protocol.HISTORY_MAX_LIMIT)
    epoch = request.GET.get("epoch") or None
    if epoch is not None and (len(epoch) > protocol.MAX_EPOCH_LENGTH or not protocol.is_encodable(epoch)):
        raise InvalidData("epoch is not one this server issued")
    principal = await _reader(request)
    try:
        info = await actions.authorize_channel(principal, name)
    except AccessDenied:
        if principal is None:  # over HTTP, missing credentials are a 401
            raise InvalidCredentials("send Authorization: Bearer <secret or token>") from None
        raise
    if not info.has_history:
        raise HistoryDisabled(f"{name!r} keeps no history")
    page = await get_broker().history.read(name, info, since, limit, epoch)
    # The page changes only with the stream's epoch, the offsets it spans, and whether
    # it reaches back to `since`; the time of its last publication is its age.
    position = page.position
    version = f"{position.epoch}:{position.offset}:{page.offsets[:1]}:{page.offsets[-1:]}:{page.complete}"
    etag = '"' + hashlib.sha256(version.encode()).hexdigest()[:32] + '"'
    if etag in [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]:
        response = HttpResponse(status=304)
    else:
        body = protocol.history_reply(None, name, page)
        # The same object the WebSocket history reply carries, without "ok".
        response = HttpResponse(body[len('{"ok":true,"history":') : -1], content_type="application/json")
    response["ETag"] = etag
    if page.last_time is not None:
        response["Last-Modified"] = http_date(page.last_time)
    if page.next is not None:
        query = urlencode({"since": page.next, "limit": limit, **({"epoch": epoch} if epoch else {})})
        response["Link"] = f'<{request.path}?{query}>; rel="next"'
    # Private: what a client may see depends on its credentials. no-cache: revalidate
    # with the ETag each time (new publications change the answer).
    response["Cache-Control"] = "private, no-cache"
    response["Vary"] = "Authorization"
    return response


@require_GET
@error_boundary
async def log_view(request, channel: str) -> HttpResponse:
    """A channel's stored publications: ``?since=N&limit=L[&epoch=E]``."""
    return await _log(request, channel)


@require_GET
def token_view(request) -> JsonResponse:
    """A fresh signed token for the session's user, as the grant hook allows.

    The JS client calls this (``data-token-url``) when its token is missing or expired.
    """
    issued = tokens.token_for_request(request)
    if issued is None:
        response = error_response(ErrorCode.ACCESS_DENIED, 403)
    else:
        token, expires = issued
        response = JsonResponse({"token": token, "expires": expires})
    response["Cache-Control"] = "no-store"
    return response
