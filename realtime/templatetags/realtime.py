"""The ``realtime`` template tag library: ``{% load realtime %}`` then ``{% realtime %}``.

The tag renders what a page needs to use ``realtime.js``: a ``<meta name="realtime">``
element whose ``data-*`` attributes carry the WebSocket URL, a short-lived token for
the current user and the URL to renew it, and the module ``<script>`` itself. The page
then calls ``RealtimeClient.fromPage()``; no configuration sits in inline script, so a
strict Content-Security-Policy needs nothing but the nonce, which the script tag
carries when the request has one (``request.csp_nonce``, as set by django-csp and
Django's own CSP middleware).

``{% realtime connect=True %}`` loads ``connect.js`` instead, which imports
``realtime.js``, connects one client for the page, exposes it as ``window.realtime``
and fires ``realtime:ready`` on ``document`` once it is connected.

The HTML is built by plain functions, so projects that render pages some other way
(Jinja2, a component library) can call :func:`render_realtime` directly.
"""

from __future__ import annotations

from django import template
from django.http import HttpRequest
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..conf import settings
from ..tokens import token_for_request

register = template.Library()


def websocket_url(request: HttpRequest) -> str:
    """The absolute WebSocket URL on the host and scheme the page was served from."""
    scheme = "wss" if request.is_secure() else "ws"
    return f"{scheme}://{request.get_host()}{settings.WS_PATH}"


def realtime_meta(request: HttpRequest) -> SafeString:
    """The ``<meta name="realtime">`` element that ``RealtimeClient.fromPage()`` reads.

    A request the grant gives no token (an anonymous visitor, by default) gets no token
    URL either: its client connects anonymously at once, instead of asking the token
    endpoint on every page load for a token it would be refused (a 403 in the console).
    """
    granted = token_for_request(request)
    if granted is None:
        return format_html('<meta name="realtime" data-url="{}">', websocket_url(request))
    return format_html(
        '<meta name="realtime" data-url="{}" data-token="{}" data-expires="{}" data-token-url="{}">',
        websocket_url(request),
        granted[0],
        granted[1],
        reverse("realtime:token"),
    )


def realtime_script(request: HttpRequest, *, connect: bool = False) -> SafeString:
    """The module ``<script>`` for ``realtime.js`` (``connect.js`` with ``connect``),
    with the request's CSP nonce if any."""
    nonce = getattr(request, "csp_nonce", None)
    return format_html(
        '<script type="module" src="{}"{}></script>',
        static("realtime/connect.js" if connect else "realtime/realtime.js"),
        format_html(' nonce="{}"', nonce) if nonce else "",
    )


def render_realtime(request: HttpRequest, *, connect: bool = False) -> SafeString:
    """Everything ``{% realtime %}`` renders: the meta element, then the script.

    With ``connect``, the script connects a client for the page (``window.realtime``).
    """
    return format_html("{}\n{}", realtime_meta(request), realtime_script(request, connect=connect))


@register.simple_tag(takes_context=True, name="realtime")
def realtime_tag(context: template.Context, connect: bool = False) -> SafeString:
    request = context.get("request")
    if request is None:
        raise template.TemplateSyntaxError(
            "{% realtime %} needs the request in the template context: add "
            "django.template.context_processors.request to the context processors, "
            "or render with a request."
        )
    return render_realtime(request, connect=bool(connect))
