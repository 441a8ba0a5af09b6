"""Bayeux over HTTP: long-polling (POST) and callback-polling (JSONP over GET).

Mounted by ``realtime.urls`` at ``/realtime/bayeux``, with the suffixes CometD appends
(``/handshake``, ``/connect``, ...). A ``/meta/connect`` is held, without a thread,
until something is queued for its session or ``BAYEUX_TIMEOUT`` passes; the client's
other requests (subscribe, publish) travel beside it.

It is CSRF-exempt because it authenticates by what the handshake carries (a key's
secret or a signed token) and by the clientId, never by cookie. Browsers on other
origins are answered with CORS headers when their origin is allowed
(``REALTIME["ALLOWED_ORIGINS"]``), and refused otherwise.
"""

from __future__ import annotations

import logging
import re

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .. import stats
from ..addresses import client_address
from ..conf import settings
from ..errors import Unavailable
from ..origins import origin_allowed
from . import protocol as bayeux
from .protocol import BayeuxError
from .sessions import SUPERSEDED, get_server

logger = logging.getLogger("realtime")

JSONP_CALLBACK = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*\Z")
DEFAULT_CALLBACK = "jsonpcallback"
CORS_HEADERS = "Accept, Authorization, Content-Type, Pragma, X-Requested-With"


class HttpExchange:
    """One request's replies (the transport ``BayeuxServer.handle`` sends through)."""

    def __init__(self, address: str | None = None, secrets_allowed: bool = True) -> None:
        self.parts: list[str] = []
        self.address = address
        self.secrets_allowed = secrets_allowed

    def send_reply(self, reply: dict) -> None:
        self.parts.append(bayeux.encode(reply))

    def use(self, session, connect: bool) -> None:
        if connect:
            # The client polls over HTTP now: deliveries wait for its connects.
            session.attach(None)

    def handshake_failed(self) -> None:
        # Nothing closes (each request stands alone), but the metrics count it, and the
        # address's failures are counted (realtime.quotas).
        stats.counters.auth_failed("bayeux")


@csrf_exempt
async def bayeux_view(request, suffix: str = "") -> HttpResponse:
    origin = request.headers.get("Origin")
    if not origin_allowed(origin):
        return _refuse(BayeuxError(403, "origin_not_allowed"), 403)
    if request.method == "OPTIONS":
        return _cors(HttpResponse(status=200), origin, preflight=True)
    callback = None
    try:
        if request.method == "POST":
            messages = _posted_messages(request)
        elif request.method == "GET":
            name = request.GET.get("jsonp", DEFAULT_CALLBACK)
            if len(name) > 64 or not JSONP_CALLBACK.match(name):
                raise bayeux.invalid("jsonp must name a JavaScript function")
            callback = name
            messages = _joined(request.GET.getlist("message"))
        else:
            return _cors(_refuse(bayeux.invalid("use POST, or GET for callback-polling"), 405), origin)
    except BayeuxError as error:
        return _cors(_refuse(error, 400 if error.code != 413 else 413, callback), origin)
    try:
        server = await get_server()
    except Unavailable:
        down = BayeuxError(503, "unavailable")
        return _cors(
            _respond([bayeux.encode(bayeux.error_reply(m, down)) for m in messages], callback), origin
        )
    exchange = HttpExchange(
        client_address(request.scope) if hasattr(request, "scope") else request.META.get("REMOTE_ADDR"),
        request.method != "GET" or settings.BAYEUX_SECRETS_OVER_GET,
    )
    connect = await server.handle(messages, exchange)
    if connect is not None:
        message, session = connect
        now, timeout = server.connect_now(session, message, batched=len(messages) > 1)
        why = None if now else await session.hold(timeout)
        if why != SUPERSEDED:
            exchange.parts += session.drain()
        exchange.send_reply(server.connect_reply(session, message))
    return _cors(_respond(exchange.parts, callback), origin)


def _posted_messages(request) -> list:
    limit = settings.MAX_MESSAGE_SIZE
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise BayeuxError(413, "message_too_large", str(limit))
    if request.content_type == "application/x-www-form-urlencoded" and "message" in request.POST:
        # Faye's cross-origin long-polling: message=<json>, possibly repeated.
        return _joined(request.POST.getlist("message"))
    return bayeux.parse_payload(request.body, limit)


def _joined(values: list[str]) -> list:
    if not values:
        raise bayeux.invalid("no message parameter")
    messages: list = []
    for value in values:
        messages += bayeux.parse_payload(value, settings.MAX_MESSAGE_SIZE)
        if len(messages) > bayeux.MAX_BATCH:
            raise BayeuxError(413, "too_many_messages", str(bayeux.MAX_BATCH))
    return messages


def _respond(parts: list[str], callback: str | None, status: int = 200) -> HttpResponse:
    body = bayeux.batch(parts)
    if callback is None:
        response = HttpResponse(body, status=status, content_type="application/json; charset=utf-8")
    else:
        # /**/ keeps a callback name from being read as anything before it.
        response = HttpResponse(
            f"/**/{callback}({body});", status=status, content_type="text/javascript; charset=utf-8"
        )
        response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-cache, no-store"
    return response


def _refuse(error: BayeuxError, status: int, callback: str | None = None) -> HttpResponse:
    return _respond([bayeux.encode(bayeux.error_reply(None, error))], callback, status)


def _cors(response: HttpResponse, origin: str | None, preflight: bool = False) -> HttpResponse:
    if origin is None:
        return response
    response["Access-Control-Allow-Origin"] = origin
    response["Access-Control-Allow-Credentials"] = "true"
    response["Vary"] = "Origin"
    if preflight:
        response["Access-Control-Allow-Methods"] = "POST, GET, OPTIONS"
        response["Access-Control-Allow-Headers"] = CORS_HEADERS
        response["Access-Control-Max-Age"] = "86400"
    return response
