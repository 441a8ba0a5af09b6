from unittest import mock

import pytest
from django.contrib.auth.models import AnonymousUser
from django.template import Context, Template, TemplateSyntaxError
from django.test import RequestFactory

from realtime.templatetags.realtime import render_realtime
from realtime.tokens import Grant, issue_token

NOW = 1_700_000_000
SCRIPT = '<script type="module" src="/static/realtime/realtime.js"></script>'


@pytest.fixture
def frozen_time():
    """Tokens carry a signing timestamp and an expiry: freeze both so the HTML is exact."""
    with mock.patch("time.time", return_value=float(NOW)):
        yield


def anonymous(request):
    request.user = AnonymousUser()
    return request


@pytest.fixture
def rf():
    return RequestFactory()


def test_anonymous_page_gets_no_token(rf):
    request = anonymous(rf.get("/"))

    assert render_realtime(request) == (
        '<meta name="realtime" data-url="ws://testserver/realtime/ws">\n' + SCRIPT
    )


def test_https_page_connects_with_wss(rf, settings):
    settings.ALLOWED_HOSTS = ["example.com"]
    request = anonymous(rf.get("/", secure=True, headers={"host": "example.com"}))

    assert render_realtime(request) == (
        '<meta name="realtime" data-url="wss://example.com/realtime/ws">\n' + SCRIPT
    )


def test_ws_path_comes_from_settings(rf, settings):
    settings.REALTIME = {"WS_PATH": "/live/socket"}
    request = anonymous(rf.get("/"))

    assert render_realtime(request).startswith(
        '<meta name="realtime" data-url="ws://testserver/live/socket">'
    )


def test_logged_in_user_gets_a_token(rf, django_user_model, frozen_time):
    user = django_user_model(pk=3, username="alice")
    request = rf.get("/")
    request.user = user
    token, expires = issue_token(user, "read-only", ("*",), from_grant=True)

    assert render_realtime(request) == (
        f'<meta name="realtime" data-url="ws://testserver/realtime/ws" data-token="{token}" '
        f'data-expires="{expires}" data-token-url="/realtime/token">\n' + SCRIPT
    )
    assert expires == NOW + 300


def test_grant_hook_decides_the_token(rf, settings, frozen_time):
    settings.REALTIME = {"TOKEN_GRANT": "tests.test_templatetags.news_reader"}
    request = anonymous(rf.get("/"))
    token, expires = issue_token(None, "read-only", ("news",), from_grant=True)

    assert render_realtime(request) == (
        f'<meta name="realtime" data-url="ws://testserver/realtime/ws" data-token="{token}" '
        f'data-expires="{expires}" data-token-url="/realtime/token">\n' + SCRIPT
    )


def news_reader(request):
    return Grant("read-only", ("news",))


def test_script_carries_the_csp_nonce(rf):
    request = anonymous(rf.get("/"))
    request.csp_nonce = "r4nd0m"

    assert render_realtime(request).endswith(
        '\n<script type="module" src="/static/realtime/realtime.js" nonce="r4nd0m"></script>'
    )


def test_attribute_values_are_escaped(rf, settings):
    settings.REALTIME = {"WS_PATH": '/ws"><script>'}
    request = anonymous(rf.get("/"))

    assert 'data-url="ws://testserver/ws&quot;&gt;&lt;script&gt;"' in render_realtime(request)


def test_tag_renders_the_same_html(rf):
    request = anonymous(rf.get("/"))
    template = Template("{% load realtime %}{% realtime %}")

    assert template.render(Context({"request": request})) == render_realtime(request)


def test_tag_without_request_says_what_is_missing():
    template = Template("{% load realtime %}{% realtime %}")

    with pytest.raises(TemplateSyntaxError, match="context_processors.request"):
        template.render(Context({}))


CONNECT_SCRIPT = '<script type="module" src="/static/realtime/connect.js"></script>'


def test_connect_loads_the_script_that_connects_a_client_for_the_page(rf):
    request = anonymous(rf.get("/"))

    assert render_realtime(request, connect=True) == (
        '<meta name="realtime" data-url="ws://testserver/realtime/ws">\n' + CONNECT_SCRIPT
    )


def test_connect_script_carries_the_csp_nonce(rf):
    request = anonymous(rf.get("/"))
    request.csp_nonce = "r4nd0m"

    assert render_realtime(request, connect=True).endswith(
        '\n<script type="module" src="/static/realtime/connect.js" nonce="r4nd0m"></script>'
    )


def test_tag_with_connect_renders_the_same_html(rf):
    request = anonymous(rf.get("/"))
    template = Template("{% load realtime %}{% realtime connect=True %}")

    assert template.render(Context({"request": request})) == render_realtime(request, connect=True)


def test_tag_with_connect_false_renders_the_plain_script(rf):
    request = anonymous(rf.get("/"))
    template = Template("{% load realtime %}{% realtime connect=False %}")

    assert template.render(Context({"request": request})).endswith("\n" + SCRIPT)


def test_tag_refuses_an_unknown_option():
    with pytest.raises(TemplateSyntaxError, match="unexpected keyword argument 'conect'"):
        Template("{% load realtime %}{% realtime conect=True %}")
