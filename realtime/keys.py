"""Access-key secrets: generated here, shown once, stored only as a keyed hash.

A secret is ``rt_`` followed by 43 URL-safe characters (256 random bits). The database
keeps ``HMAC-SHA256(SECRET_KEY, secret)``: a leaked database does not give working
secrets, and checking a secret costs one HMAC (a few microseconds) plus an indexed
lookup, so an auth storm stays cheap. Slow password hashes (PBKDF2, argon2) exist for
low-entropy passwords; with 256 random bits they would only add CPU.

Rotating ``SECRET_KEY`` keeps keys working as long as the old value is listed in
``SECRET_KEY_FALLBACKS``, just as Django's signed cookies do.
"""

from __future__ import annotations

import hmac
import secrets

from django.conf import settings
from django.utils.crypto import salted_hmac

SECRET_PREFIX = "rt_"
SALT = "realtime.keys.AccessKey"
DISPLAY_LENGTH = 10


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str, key: str | None = None) -> str:
    return salted_hmac(SALT, secret, secret=key, algorithm="sha256").hexdigest()


def candidate_hashes(secret: str) -> list[str]:
    """Hashes of ``secret`` under SECRET_KEY and each of SECRET_KEY_FALLBACKS."""
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return [hash_secret(secret, key) for key in keys]


def hashes_match(stored: str, candidates: list[str]) -> bool:
    """Constant-time check that ``stored`` is one of ``candidates``."""
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(stored, candidate)
    return found


def display_prefix(secret: str) -> str:
    """The first characters of a secret: enough to recognise it, too few to use it."""
    return secret[:DISPLAY_LENGTH]
