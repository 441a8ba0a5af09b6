"""RPC: methods written in Django code, called by clients over the native socket and Bayeux.

Public API. Register a method, usually in a module your ``AppConfig.ready()`` imports::

    from realtime import rpc
    from realtime.errors import InvalidData, Rejected

    @rpc.method("echo", anonymous=True)
    def echo(request):
        return request.data

    @rpc.method("rooms.join")
    async def join(request):                    # request: an rpc.RpcRequest
        user = await request.auser()
        if not isinstance(request.data, dict):
            raise InvalidData("send {\\"room\\": ...}")
        ...
        return {"joined": True}

A client sends ``{"rpc": {"method": "echo", "data": ...}, "id": 1}`` and gets
``{"ok": true, "id": 1, "result": ...}``; a Bayeux client publishes to ``/service/echo``
(CometD's ``remoteCall("echo", ...)``) and gets the result as its reply's ``data``. A plain
function runs in Django's sync thread (it may use the ORM); an ``async def`` runs on the
event loop. Errors: ``method_not_found``; ``access_denied`` for an anonymous connection
when the method is not ``anonymous=True`` (or what the method raises);
``handler_timeout`` after ``HANDLER_TIMEOUT``; any ``RealtimeError`` the method raises
(``InvalidData``, ``AccessDenied``, ``Rejected`` with a code of the project's); and
``internal_error`` for anything else, logged. The connection stays open in every case.

``REALTIME["BAYEUX_SERVICES"]`` (``{"/service/echo": "myapp.services.echo"}``) registers
into the same registry: ``/service/<name>`` is the method ``<name>``, callable by
anonymous sessions as Bayeux services always were, and it takes precedence over a method
registered in code under the same name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.utils.module_loading import import_string

from . import protocol
from .auth import Principal, aget_user
from .conf import settings
from .errors import AccessDenied, MethodNotFound, RealtimeError
from .handlers import call_handler

logger = logging.getLogger("realtime")
SERVICE_PREFIX = "/service/"
_UNSET = object()


@dataclass(eq=False)
class RpcRequest:
    """One call of a method. Bayeux service handlers get the same object
    (``realtime.bayeux.services.ServiceRequest`` is this class)."""

    method: str  # "echo"
    data: Any
    principal: Principal | None  # None for an anonymous connection
    client: str  # the connection's public id (as shown in presence)
    protocol: str = "native"  # or "bayeux"
    _user: Any = field(default=_UNSET, repr=False)

    @property
    def channel(self) -> str:
        """The Bayeux service channel of the method: ``/service/echo``."""
        return SERVICE_PREFIX + self.method

    @property
    def user(self) -> dict | None:
        """The logged-in user of a browser token, as subscribers see publishers."""
        return self.principal.user if self.principal is not None else None

    @property
    def user_id(self) -> int | None:
        return self.principal.user_id if self.principal is not None else None

    async def auser(self):
        """The caller's Django user (one query, then kept), or None for keys and anonymous."""
        if self._user is _UNSET:
            self._user = await aget_user(self.user_id)
        return self._user


@dataclass(frozen=True)
class Method:
    name: str
    func: Callable[[RpcRequest], Any]
    anonymous: bool = False


_registry: dict[str, Method] = {}


def register(name: str, func: Callable | None = None, *, anonymous: bool = False):
    """Register ``func`` as the method ``name`` (``method`` is the decorator form).
    ``anonymous=True`` lets connections without credentials call it."""
    if not protocol.is_method_name(name):
        raise ValueError(f"{name!r} is not a method name (segments of A-Z a-z 0-9 _ - . joined by /)")

    def add(target: Callable) -> Callable:
        _registry[name] = Method(name, target, anonymous)
        return target

    return add if func is None else add(func)


def method(name: str, *, anonymous: bool = False):
    """Decorator: ``@rpc.method("echo", anonymous=True)``."""
    return register(name, anonymous=anonymous)


def unregister(name: str) -> None:
    _registry.pop(name, None)


def registered() -> dict[str, Method]:
    """Every method registered in code, by name (a copy)."""
    return dict(_registry)


@lru_cache(maxsize=64)
def _load(path: str):
    return import_string(path)


def reset() -> None:
    """Forget handlers loaded from ``BAYEUX_SERVICES`` (settings changed)."""
    _load.cache_clear()


def get(name: str) -> Method | None:
    """The method called ``name``: from ``BAYEUX_SERVICES`` first, then the code registry."""
    path = settings.BAYEUX_SERVICES.get(SERVICE_PREFIX + name)
    if path:
        return Method(name, _load(path), anonymous=True)
    return _registry.get(name)


async def call(name: str, data: Any, principal: Principal | None, client: str, via: str = "native") -> Any:
    """Call the method ``name`` and return its result, checked to encode as JSON within
    ``RPC_MAX_RESULT_SIZE``; raises the ``RealtimeError`` the client is to get."""
    found = get(name)
    if found is None:
        raise MethodNotFound(f"no method {name!r}")
    if principal is None and not found.anonymous:
        raise AccessDenied("authenticate first")
    request = RpcRequest(name, data, principal, client, via)
    result = await call_handler(found.func, request, f"the method {name!r}")
    try:
        size = len(protocol.encode(result).encode())
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError):
        logger.error("realtime: the method %r returned what JSON cannot encode: %r", name, type(result))
        raise RealtimeError(f"the method {name!r} returned what JSON cannot encode") from None
    if size > settings.RPC_MAX_RESULT_SIZE:
        logger.error("realtime: the method %r returned %s bytes, over RPC_MAX_RESULT_SIZE", name, size)
        limit = settings.RPC_MAX_RESULT_SIZE
        raise RealtimeError(f"the result of {name!r} is larger than RPC_MAX_RESULT_SIZE ({limit} bytes)")
    return result
