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
from types import SimpleNamespace
from urllib.parse import urlencode

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.utils.http import http_date, parse_etags, parse_http_date_safe
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from . import actions, cloudevents, keys, protocol, stats, tokens
from .addresses import client_address
from .auth import Principal
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
from .positions import Position

logger = logging.getLogger("realtime")


def error_response(code: ErrorCode, status: int, detail: str = "") -> HttpResponse:
    """An error in the socket's format (``protocol.error_frame``) with its HTTP status."""
    response = HttpResponse(
        protocol.error_frame(code, None, detail), status=status, content_type="application/json"
    )
    if code == ErrorCode.INVALID_CREDENTIALS:
        response["WWW-Authenticate"] = 'Bearer realm="realtime"'
    return response


def refusal(error: RealtimeError) -> HttpResponse:
    """The response for what a view raised (with Retry-After when waiting helps)."""
    response = error_response(error.code, error.http_status, error.detail)
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        response["Retry-After"] = str(max(1, round(retry_after)))
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
            if error.code == ErrorCode.INVALID_CREDENTIALS:
                stats.counters.auth_failed("http")
            return refusal(error)
        except Exception:
            logger.exception("realtime: unexpected error in %s", view.__name__)
            return error_response(ErrorCode.INTERNAL_ERROR, 500)

    return wrapper


def _bearer(header: str | None) -> str:
    scheme, _, secret = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise InvalidCredentials("send Authorization: Bearer <secret>")
    return secret.strip()


def request_address(request) -> str | None:
    """The client address of a request (``realtime.addresses``)."""
    scope = getattr(request, "scope", None)
    return client_address(scope) if scope is not None else request.META.get("REMOTE_ADDR")


async def publisher(authorization: str | None, address: str | None) -> Principal:
    """Who may publish with this ``Authorization`` header: a read-write key, or a
    read-write signed token (the JS client's SSE fallback publishes this way).

    Raises InvalidCredentials, TooManyAuthFailures or AccessDenied. Needs no body, so
    ``realtime.guard`` runs it before the body is read.
    """
    secret = _bearer(authorization)
    if len(secret) > protocol.MAX_TOKEN_LENGTH or not protocol.is_encodable(secret):
        raise InvalidCredentials("unknown, revoked or expired key")
    if secret.startswith(keys.SECRET_PREFIX):
        credentials = protocol.Auth(None, secret=secret)
    else:
        credentials = protocol.Auth(None, token=secret)
    principal = await actions.authenticate(credentials, address)
    if not principal.can_write:
        raise AccessDenied("read-only access cannot publish")
    return principal


async def _publish(request) -> JsonResponse:
    principal = await publisher(request.headers.get("Authorization"), request_address(request))
    # Without realtime.guard in front, Django has read the body already; the guard
    # refuses an oversized one unread.
    limit = settings.MAX_MESSAGE_SIZE
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    try:
        too_large = declared > limit or len(request.body) > limit
    except RequestDataTooBig:  # over Django's DATA_UPLOAD_MAX_MEMORY_SIZE
        too_large = True
    if too_large:
        raise MessageTooLarge(f"bodies are limited to {limit} bytes")
    incoming = _cloudevent(request)
    if incoming is not None:
        channel = _cloudevent_channel(request, incoming)
        publication = await actions.publish(
            principal, channel, incoming.type, incoming.data, incoming=incoming
        )
    else:
        try:
            body = protocol.decode(request.body)
        except protocol.NestingTooDeep as error:
            raise InvalidData(str(error)) from None
        except ValueError:
            raise InvalidData("body is not valid JSON") from None
        command = protocol.PARSERS["publish"](None, body)
        publication = await actions.publish(
            principal, command.channel, command.event, command.data, idempotency_key=command.idempotency_key
        )
    reply = {"ok": True}
    if publication.offset is not None:
        reply.update(offset=publication.offset, epoch=publication.epoch)
    return JsonResponse(reply, json_dumps_params={"separators": (",", ":")})


def _cloudevent(request) -> cloudevents.Incoming | None:
    """The CloudEvent a request carries, in structured or binary mode, or None for a
    plain publish body (``{"channel", "event", "data"}``)."""
    content_type = request.headers.get("Content-Type", "")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == cloudevents.BATCH:
        raise InvalidData("CloudEvents batches are not accepted: send one event per request")
    if kind == cloudevents.STRUCTURED:
        return cloudevents.parse_structured(request.body)
    headers = {
        name[3:].lower(): value for name, value in request.headers.items() if name.lower().startswith("ce-")
    }
    if "specversion" not in headers:
        return None
    return cloudevents.parse_binary(headers, content_type or None, request.body)


def _cloudevent_channel(request, incoming: cloudevents.Incoming) -> str:
    """Where a CloudEvent goes: its ``channel`` extension attribute, or ``?channel=``."""
    query = request.GET.get("channel")
    if incoming.channel is not None and query is not None and incoming.channel != query:
        raise InvalidData("the channel attribute and ?channel= name different channels")
    channel = incoming.channel if incoming.channel is not None else query
    if channel is None:
        raise InvalidData("name the channel: the channel extension attribute, or ?channel=")
    return channel


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
    credential = _bearer(header)
    if len(credential) > protocol.MAX_TOKEN_LENGTH or not protocol.is_encodable(credential):
        raise InvalidCredentials("unknown, revoked or expired credentials")
    if credential.startswith(keys.SECRET_PREFIX):
        credentials = protocol.Auth(None, secret=credential, access="read-only")
    else:
        credentials = protocol.Auth(None, token=credential, access="read-only")
    return await actions.authenticate(credentials, request_address(request))


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
    position = page.position
    # A page at fixed offsets never changes once full, within the epoch the URL names;
    # the page still filling (or one whose URL names no epoch) changes with each
    # publication (or after an epoch change) and is revalidated.
    immutable = (
        epoch == position.epoch
        and page.complete
        and len(page.offsets) == limit
        and page.offsets[0] == since + 1
        and settings.LOG_MAX_AGE > 0
    )
    # The page changes only with the stream's epoch, the offsets it spans, and whether
    # it reaches back to `since` (its last offset, once full); its newest publication's
    # time is its age.
    head = "full" if immutable else f"{position.offset}:{page.complete}"
    version = f"{position.epoch}:{since}:{limit}:{page.offsets[:1]}:{page.offsets[-1:]}:{head}"
    etag = '"' + hashlib.sha256(version.encode()).hexdigest()[:32] + '"'
    if immutable:
        # Nothing in it may depend on where the stream stands now: it says where the page
        # ends, and always where the next one starts.
        last = page.offsets[-1]
        page = SimpleNamespace(frames=page.frames, position=Position(last, position.epoch), complete=True,
                               next=last, last_time=page.last_time)  # fmt: skip
    if _not_modified(request, etag, page.last_time):
        response = HttpResponse(status=304, content_type="application/json")
    else:
        body = protocol.history_reply(None, name, page)
        # The same object the WebSocket history reply carries, without "ok".
        response = HttpResponse(body[len('{"ok":true,"history":') : -1], content_type="application/json")
        if request.method == "HEAD":
            length = len(response.content)
            response.content = b""
            response["Content-Length"] = str(length)
    response["ETag"] = etag
    if page.last_time is not None:
        response["Last-Modified"] = http_date(page.last_time)
    if page.next is not None:
        query = urlencode({"since": page.next, "limit": limit, "epoch": position.epoch})
        response["Link"] = f'<{request.path}?{query}>; rel="next"'
    # Public where anonymous clients may read: the same for everybody, so shared caches
    # (a CDN) may keep it. Private otherwise: what a client sees depends on its credentials.
    scope = "public" if info.anonymous_read else "private"
    if immutable:
        max_age = settings.LOG_MAX_AGE
        if info.history_ttl:
            max_age = min(max_age, info.history_ttl)  # caches keep it no longer than the channel
        response["Cache-Control"] = f"{scope}, max-age={max_age}, immutable"
    elif info.anonymous_read:
        # Kept by shared caches, and revalidated with the ETag on every request.
        response["Cache-Control"] = "public, max-age=0, must-revalidate"
    else:
        response["Cache-Control"] = "private, no-cache"
    if not info.anonymous_read:
        response["Vary"] = "Authorization"
    return response


def _not_modified(request, etag: str, last_time: float | None) -> bool:
    """RFC 9110 section 13.2.2: If-None-Match (weak comparison, ``*`` included) decides
    when present; If-Modified-Since only without it."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = parse_etags(if_none_match)
        return tags == ["*"] or any(tag.removeprefix("W/") == etag for tag in tags)
    if_modified_since = request.headers.get("If-Modified-Since")
    if if_modified_since is None or last_time is None:
        return False
    since = parse_http_date_safe(if_modified_since)
    return since is not None and int(last_time) <= since


@require_http_methods(["GET", "HEAD"])
@error_boundary
async def log_view(request, channel: str) -> HttpResponse:
    """A channel's stored publications: ``?since=N&limit=L[&epoch=E]``."""
    return await _log(request, channel)


def sse_not_routed(request) -> HttpResponse:
    """Django was asked for the event stream: the ASGI router does not mount it."""
    return error_response(
        ErrorCode.UNAVAILABLE,
        501,
        "the event stream is an ASGI app: add realtime.routing.http_urlpatterns to the http "
        "branch of your ProtocolTypeRouter (docs/protocol.md, Server-sent events)",
    )


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
