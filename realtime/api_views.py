"""The server API over HTTP: ``/realtime/api/<call>``, JSON in and out.

Every call of ``realtime.api`` answers here, with the same arguments (a JSON object in
a POST body; query parameters on a GET, for the calls that change nothing) and the same
reply, with ``"ok": true`` added. Requests authenticate with ``Authorization: Bearer
<secret>`` of an admin key or of a read-write key valid on all channels
(``Principal.can_operate``); there are no cookies, so no CSRF check. Errors are the
socket's error frames with the matching HTTP status, through ``views.error_boundary``.
``POST /realtime/api/publish`` stays where it was (``realtime.views``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from . import api, auth, protocol
from .auth import Principal
from .conf import settings
from .errors import AccessDenied, ErrorCode, InvalidCredentials, InvalidData, MessageTooLarge, Unavailable
from .runtime import get_hub
from .views import error_boundary, error_response

# How a query parameter of a GET is read.
TEXT, INTEGER, NUMBER, BOOLEAN = "text", "integer", "number", "boolean"
FANOUT = {"timeout": NUMBER, "node": TEXT}
WHOSE = {"user": TEXT, "client": TEXT}


@dataclass(frozen=True)
class Call:
    function: Callable[..., Awaitable[dict]]
    # Whether GET may call it (it changes nothing).
    reads: bool
    # Parameter -> how a query parameter is read; required ones are listed again below.
    params: dict[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()


CALLS = {
    "info": Call(api.ainfo, True, FANOUT),
    "channels": Call(api.achannels, True, {"prefix": TEXT, "limit": INTEGER, **FANOUT}),
    "disconnect": Call(api.adisconnect, False, {**WHOSE, "reconnect": BOOLEAN, "reason": TEXT, **FANOUT}),
    "subscribe": Call(api.asubscribe, False, {"channel": TEXT, **WHOSE, **FANOUT}, ("channel",)),
    "unsubscribe": Call(api.aunsubscribe, False, {"channel": TEXT, **WHOSE, **FANOUT}, ("channel",)),
    "broadcast": Call(
        api.abroadcast, False, {"channels": TEXT, "event": TEXT, "data": TEXT}, ("channels", "event")
    ),
    "presence": Call(api.apresence, True, {"channel": TEXT}, ("channel",)),
    "presence_stats": Call(api.apresence_stats, True, {"channel": TEXT}, ("channel",)),
    "history": Call(
        api.ahistory, True, {"channel": TEXT, "since": INTEGER, "limit": INTEGER, "epoch": TEXT}, ("channel",)
    ),
    "history_remove": Call(api.ahistory_remove, False, {"channel": TEXT}, ("channel",)),
}


def _bearer(request) -> str:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise InvalidCredentials("send Authorization: Bearer <secret>")
    if len(secret) > protocol.MAX_SECRET_LENGTH or not protocol.is_encodable(secret):
        raise InvalidCredentials("unknown, revoked or expired key")
    return secret


async def operator(request) -> Principal:
    """The principal of the request's key, if it may use the server API."""
    principal = await auth.authenticate(_bearer(request))
    if not principal.can_operate:
        raise AccessDenied("the server API needs an admin key, or a read-write key on all channels")
    return principal


async def serve_here(request) -> None:
    """Start this process's hub if it serves ASGI, so that it is a server the API can
    reach from its first request on (a WSGI process has no hub to start)."""
    if getattr(request, "scope", None) is not None:
        try:
            await get_hub()
        except Unavailable:
            pass  # the call itself says so, if it needs the broker


def _from_query(request, call: Call) -> dict:
    arguments = {}
    for key, values in request.GET.lists():
        kind = call.params.get(key)
        if kind is None:
            raise InvalidData(f"unknown parameter {key!r}")
        value = values[-1]
        if kind == INTEGER:
            try:
                arguments[key] = int(value)
            except ValueError:
                raise InvalidData(f"{key} must be an integer") from None
        elif kind == NUMBER:
            try:
                arguments[key] = float(value)
            except ValueError:
                raise InvalidData(f"{key} must be a number") from None
        elif kind == BOOLEAN:
            if value not in ("true", "false"):
                raise InvalidData(f"{key} must be true or false")
            arguments[key] = value == "true"
        else:
            arguments[key] = value
    return arguments


def _from_body(request, call: Call) -> dict:
    limit = settings.MAX_MESSAGE_SIZE
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit or len(request.body) > limit:
        raise MessageTooLarge(f"bodies are limited to {limit} bytes")
    if not request.body.strip():
        return {}
    try:
        body = protocol.decode(request.body)
    except (ValueError, RecursionError):
        raise InvalidData("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidData("body must be a JSON object")
    unknown = sorted(set(body) - set(call.params))
    if unknown:
        raise InvalidData(f"unknown parameter {unknown[0]!r}")
    return body


@csrf_exempt
@error_boundary
async def api_view(request, call: str) -> HttpResponse:
    found = CALLS.get(call)
    if found is None:
        return error_response(ErrorCode.INVALID_DATA, 404, f"no server API call {call!r}")
    allowed = "GET, POST" if found.reads else "POST"
    if request.method not in allowed.split(", "):
        response = error_response(ErrorCode.INVALID_DATA, 405, f"use {' or '.join(allowed.split(', '))}")
        response["Allow"] = allowed
        return response
    await operator(request)
    arguments = _from_query(request, found) if request.method == "GET" else _from_body(request, found)
    for name in found.required:
        if name not in arguments:
            raise InvalidData(f"{name} is required")
    await serve_here(request)
    reply = await found.function(**arguments)
    response = JsonResponse({"ok": True, **reply}, json_dumps_params={"separators": (",", ":")})
    response["Cache-Control"] = "no-store"
    return response
