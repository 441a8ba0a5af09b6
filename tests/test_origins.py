import pytest

from realtime.origins import origin_allowed, origin_from_scope

GARBAGE = [
    "",
    "null",
    "localhost",
    "localhost:8000",
    "//localhost",
    "http://",
    "http:///path",
    "https://:443",
    "ftp://localhost",
    "ws://localhost",
    "wss://localhost",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "data:text/html,hi",
    "chrome-extension://abcdef",
    "http://[::1",
    "http://[not-an-ip]",
    "http://localhost]",
]


@pytest.fixture
def dev(settings):
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = []
    settings.REALTIME = {}
    return settings


@pytest.fixture
def prod(settings):
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = [".example.com"]
    settings.REALTIME = {}
    return settings


def allow_origins(settings, origins):
    settings.REALTIME = {"ALLOWED_ORIGINS": origins}


# No Origin ---------------------------------------------------------------------------


def test_clients_without_an_origin_are_allowed(prod):
    assert origin_allowed(None)


def test_clients_without_an_origin_are_allowed_even_with_no_origins_configured(settings):
    allow_origins(settings, [])
    assert origin_allowed(None)


# Derived from ALLOWED_HOSTS ----------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:8000",
        "http://localhost",
        "https://localhost:8443",
        "http://app.localhost:3000",
        "http://127.0.0.1",
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
    ],
)
def test_debug_without_allowed_hosts_allows_local_development_origins(dev, origin):
    assert origin_allowed(origin)


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://127.0.0.2", "http://localhost.evil.example", "http://10.0.0.1"]
)
def test_debug_without_allowed_hosts_rejects_other_origins(dev, origin):
    assert not origin_allowed(origin)


def test_without_debug_an_empty_allowed_hosts_allows_no_browser(settings):
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = []
    settings.REALTIME = {}
    assert not origin_allowed("http://localhost:8000")


def test_debug_with_allowed_hosts_uses_only_those(dev):
    dev.ALLOWED_HOSTS = ["example.com"]
    assert origin_allowed("https://example.com")
    assert not origin_allowed("http://localhost:8000")


@pytest.mark.parametrize(
    "origin",
    ["https://example.com", "http://example.com", "https://www.example.com", "https://a.b.example.com:8443"],
)
def test_allowed_hosts_patterns_allow_the_domain_and_its_subdomains(prod, origin):
    assert origin_allowed(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "https://example.com.evil.net",
        "https://notexample.com",
        "https://example.org",
        "https://evil.net/example.com",
    ],
)
def test_allowed_hosts_patterns_reject_lookalikes(prod, origin):
    assert not origin_allowed(origin)


def test_exact_allowed_host_does_not_cover_subdomains(prod):
    prod.ALLOWED_HOSTS = ["example.com"]
    assert origin_allowed("https://example.com:8000")
    assert not origin_allowed("https://www.example.com")


def test_allowed_hosts_wildcard_allows_any_web_origin(prod):
    prod.ALLOWED_HOSTS = ["*"]
    assert origin_allowed("https://anything.example")
    assert not origin_allowed("ftp://anything.example")


def test_host_matching_ignores_case(prod):
    assert origin_allowed("https://WWW.Example.COM")


# REALTIME["ALLOWED_ORIGINS"] -------------------------------------------------------------


def test_configured_exact_origin_is_allowed(prod):
    allow_origins(prod, ["https://app.example.net"])
    assert origin_allowed("https://app.example.net")


@pytest.mark.parametrize(
    "origin",
    [
        "http://app.example.net",
        "https://app.example.net:8443",
        "https://www.app.example.net",
        "https://app.example.net.evil",
    ],
)
def test_configured_exact_origin_must_match_scheme_host_and_port(prod, origin):
    allow_origins(prod, ["https://app.example.net"])
    assert not origin_allowed(origin)


def test_configured_origin_with_a_port_matches_only_that_port(prod):
    allow_origins(prod, ["http://localhost:3000"])
    assert origin_allowed("http://localhost:3000")
    assert not origin_allowed("http://localhost:8000")


def test_configured_origin_may_end_with_a_slash(prod):
    allow_origins(prod, ["https://app.example.net/"])
    assert origin_allowed("https://app.example.net")


def test_configured_origins_replace_allowed_hosts(prod):
    allow_origins(prod, ["https://app.example.net"])
    assert not origin_allowed("https://www.example.com")


def test_configured_host_pattern_allows_any_scheme_and_port(prod):
    allow_origins(prod, [".example.org"])
    assert origin_allowed("https://example.org")
    assert origin_allowed("http://www.example.org:8000")
    assert not origin_allowed("https://example.org.evil.net")
    assert not origin_allowed("https://badexample.org")


def test_configured_plain_host_allows_only_that_host(prod):
    allow_origins(prod, ["example.org"])
    assert origin_allowed("https://example.org")
    assert not origin_allowed("https://www.example.org")


def test_configured_ipv6_host_is_written_in_brackets_as_in_allowed_hosts(prod):
    allow_origins(prod, ["[::1]"])
    assert origin_allowed("http://[::1]:3000")
    assert not origin_allowed("http://[::2]:3000")


def test_configured_star_allows_any_web_origin(prod):
    allow_origins(prod, ["*"])
    assert origin_allowed("https://anything.example")
    assert origin_allowed("http://127.0.0.1:1234")


def test_an_empty_configured_list_allows_no_browser(prod):
    allow_origins(prod, [])
    assert not origin_allowed("https://www.example.com")


def test_several_configured_origins_are_each_allowed(prod):
    allow_origins(prod, ["https://a.example.net", ".b.example.net", "http://localhost:3000"])
    assert origin_allowed("https://a.example.net")
    assert origin_allowed("https://x.b.example.net")
    assert origin_allowed("http://localhost:3000")
    assert not origin_allowed("https://c.example.net")


# Garbage -------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", GARBAGE)
def test_garbage_and_non_web_origins_are_rejected_by_allowed_hosts(prod, origin):
    prod.ALLOWED_HOSTS = ["*"]
    assert not origin_allowed(origin)


@pytest.mark.parametrize("origin", GARBAGE)
def test_garbage_and_non_web_origins_are_rejected_even_with_star(prod, origin):
    allow_origins(prod, ["*"])
    assert not origin_allowed(origin)


@pytest.mark.parametrize("origin", GARBAGE)
def test_garbage_and_non_web_origins_are_rejected_in_debug(dev, origin):
    assert not origin_allowed(origin)


# origin_from_scope -----------------------------------------------------------------------


def test_origin_from_scope_reads_the_origin_header():
    scope = {"headers": [(b"host", b"example.com"), (b"origin", b"https://example.com")]}
    assert origin_from_scope(scope) == "https://example.com"


def test_origin_from_scope_without_the_header_is_none():
    assert origin_from_scope({"headers": [(b"host", b"example.com")]}) is None


def test_origin_from_scope_without_headers_is_none():
    assert origin_from_scope({"type": "websocket"}) is None


def test_origin_from_scope_returns_the_first_origin_header():
    scope = {"headers": [(b"origin", b"https://a.example"), (b"origin", b"https://b.example")]}
    assert origin_from_scope(scope) == "https://a.example"


def test_origin_from_scope_decodes_any_bytes_as_latin_1():
    scope = {"headers": [(b"origin", b"https://caf\xe9.example")]}
    assert origin_from_scope(scope) == "https://café.example"


def test_origin_from_scope_and_origin_allowed_work_together(dev):
    scope = {"headers": [(b"origin", b"http://localhost:8000")]}
    assert origin_allowed(origin_from_scope(scope))
