"""Settings for the plain Channels baseline (bench/baselines/channels_app.py).

The channels_redis pub/sub layer on the ``REDIS_URL`` that bench/run.py starts, with the
same host options as demo_site/settings.py. No database, no apps beyond what the
consumer needs.
"""

import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
DATABASES: dict = {}
USE_TZ = True
ASGI_APPLICATION = "bench.baselines.channels_app.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [{"address": os.environ["REDIS_URL"], "socket_connect_timeout": 5, "socket_timeout": 5}],
        },
    }
}
