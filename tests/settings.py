"""Test settings: the demo settings, with REALTIME taken from the environment.

Server processes started by the suite get their REALTIME limits through
``REALTIME_TEST_SETTINGS`` (JSON), so one suite can run servers with different limits.
"""

import json
import os

from demo_site.settings import *  # noqa: F403

REALTIME = json.loads(os.environ.get("REALTIME_TEST_SETTINGS", "{}"))
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Extra apps for server processes, e.g. the receivers of tests/hooks_support.py.
INSTALLED_APPS = [*INSTALLED_APPS, *json.loads(os.environ.get("REALTIME_TEST_APPS", "[]"))]  # noqa: F405
