"""Settings for the demo project that hosts realtime.

Embedded defaults so that ``make run`` works on a fresh machine: SQLite, and the
in-memory channel layer unless ``REDIS_URL`` is set. Production values come from the
environment (see docs/deployment.md).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-insecure-key-change-me-in-production-0123456789")
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h]

INSTALLED_APPS = [
    "daphne",  # first: its runserver serves ASGI, WebSockets included
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "realtime",
    "demo_site",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_site.urls"
ASGI_APPLICATION = "demo_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DATABASE_PATH", str(BASE_DIR / "db.sqlite3")),
        # WAL lets server processes read while another process writes.
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "timeout": 20},
    }
}

REDIS_URL = os.environ.get("REDIS_URL", "")
# Redis Sentinel: comma-separated host:port of the sentinels, and the name of the master
# they watch (several comma-separated names: one shard each). REDIS_URL may then give
# the database, user and password (redis://:secret@/0); its host is not used.
REDIS_SENTINELS = os.environ.get("REDIS_SENTINELS", "")
REDIS_SENTINEL_MASTER = os.environ.get("REDIS_SENTINEL_MASTER", "mymaster")


def redis_hosts(urls: str, sentinels: str, masters: str) -> list[dict]:
    """channels_redis host dicts: one per comma-separated URL (several: shards), or
    one per Sentinel master name."""
    from urllib.parse import unquote, urlsplit

    # redis-py 8 would apply its own defaults; say what we want.
    timeouts = {"socket_connect_timeout": 5, "socket_timeout": 5}
    urls = [url.strip() for url in urls.split(",") if url.strip()]
    if not sentinels.strip():
        return [{"address": url, **timeouts} for url in urls]
    options = {}
    if urls:
        parts = urlsplit(urls[0])
        options = {"db": int(parts.path.strip("/") or 0)}
        if parts.username:
            options["username"] = unquote(parts.username)
        if parts.password:
            options["password"] = unquote(parts.password)
    addresses = []
    for entry in sentinels.split(","):
        host, _, port = entry.strip().rpartition(":")
        addresses.append((host or "127.0.0.1", int(port)))
    return [
        {
            "sentinels": addresses,
            "master_name": name.strip(),
            "sentinel_kwargs": dict(timeouts),
            **options,
            **timeouts,
        }
        for name in masters.split(",")
        if name.strip()
    ]


if REDIS_URL or REDIS_SENTINELS:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": redis_hosts(REDIS_URL, REDIS_SENTINELS, REDIS_SENTINEL_MASTER)},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

REALTIME = {
    # Browser tokens: who may read and write where (demo_site/realtime_grants.py).
    "TOKEN_GRANT": "demo_site.realtime_grants.grant",
    # Chat messages pass through the demo's handler: moderated, stored, mentions told.
    "PUBLISH_HANDLERS": {"rooms": "demo_site.chat.on_message"},
    # RPC methods are registered in code (demo_site/rpc.py); Bayeux clients reach them at
    # /service/echo, /service/whoami and /service/chat.recent.
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "realtime": {
            "handlers": ["console"],
            "level": os.environ.get("REALTIME_LOG_LEVEL", "INFO"),
            "propagate": False,
        }
    },
}
