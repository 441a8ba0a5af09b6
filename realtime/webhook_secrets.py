"""Webhook signing secrets: generated here, shown once, kept encrypted, used to sign.

Unlike an access key's secret, which the server only ever compares (so it keeps a keyed
hash), a signing secret must be recovered by the server to compute each request's
HMAC. It is therefore stored **encrypted**, with Fernet (AES-128-CBC and HMAC-SHA256,
from ``cryptography``) under a key derived from ``SECRET_KEY``: a copy of the database
alone gives no usable secret, while a server with ``SECRET_KEY`` can sign. Whoever has
both the database and ``SECRET_KEY`` can recover the secrets; that is the trade-off of
any secret a server must use rather than check. Rotating ``SECRET_KEY`` keeps the
secrets readable as long as the old value is in ``SECRET_KEY_FALLBACKS`` (saving an
endpoint re-encrypts its secret under the current key).

A secret is ``whsec_`` followed by 43 URL-safe characters (256 random bits). Receivers
check ``X-Realtime-Signature: sha256=<hex>``, the HMAC-SHA256 of the raw request body
under the secret (:func:`signature`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from django.conf import settings
from django.utils.crypto import salted_hmac

SECRET_PREFIX = "whsec_"
SALT = "realtime.webhooks.secret"
DISPLAY_LENGTH = 12
SIGNATURE_HEADER = "X-Realtime-Signature"


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _fernet(key: str):
    from cryptography.fernet import Fernet

    digest = salted_hmac(SALT, "fernet", secret=key, algorithm="sha256").digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _fernets():
    from cryptography.fernet import MultiFernet

    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([_fernet(key) for key in keys])


def seal(secret: str) -> str:
    """``secret`` encrypted under the current ``SECRET_KEY``, for the database."""
    return _fernet(settings.SECRET_KEY).encrypt(secret.encode()).decode()


def unseal(sealed: str) -> str | None:
    """The secret ``seal`` encrypted, or None when no key in use can decrypt it (the
    ``SECRET_KEY`` it was sealed under is gone: regenerate the secret)."""
    from cryptography.fernet import InvalidToken

    try:
        return _fernets().decrypt(sealed.encode()).decode()
    except (InvalidToken, ValueError):
        return None


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_LENGTH]


def signature(secret: str, body: bytes) -> str:
    """The value of ``X-Realtime-Signature`` for ``body``: ``sha256=`` and the hex HMAC."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (in Python): a constant-time check of the header against the body."""
    return hmac.compare_digest(signature(secret, body), header or "")
