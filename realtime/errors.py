"""Every error a client can see, with its wire code, in one place.

Code raises a subclass of :class:`RealtimeError`; the WebSocket consumer and the HTTP
endpoint turn it into ``{"err": code}`` at one boundary. The codes and close codes
here are the ones listed in ``docs/protocol.md`` (a test keeps the two in agreement).
"""

from __future__ import annotations

import enum
import re


class ErrorCode(enum.StrEnum):
    INVALID_DATA = "invalid_data"
    INVALID_CREDENTIALS = "invalid_credentials"
    ACCESS_DENIED = "access_denied"
    INVALID_CHANNEL_NAME = "invalid_channel_name"
    INVALID_CHANNEL = "invalid_channel"
    MESSAGE_TOO_LARGE = "message_too_large"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    ALREADY_AUTHENTICATED = "already_authenticated"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_AUTH_FAILURES = "too_many_auth_failures"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    HISTORY_DISABLED = "history_disabled"
    PRESENCE_DISABLED = "presence_disabled"
    UNAVAILABLE = "unavailable"
    UNKNOWN_OUTCOME = "unknown_outcome"
    INTERNAL_ERROR = "internal_error"
    METHOD_NOT_FOUND = "method_not_found"
    REJECTED = "rejected"
    HANDLER_TIMEOUT = "handler_timeout"


class CloseCode(enum.IntEnum):
    """WebSocket close codes. 1000 is a normal close; ours use the private 4000 range."""

    NORMAL = 1000
    TOO_MANY_INVALID_FRAMES = 4001
    TOO_MANY_AUTH_FAILURES = 4002
    ORIGIN_NOT_ALLOWED = 4003
    TOO_SLOW = 4004
    UNAVAILABLE = 4005
    STALE = 4006
    TOO_MANY_CONNECTIONS = 4007
    TOO_MANY_CONNECTIONS_FROM_ADDRESS = 4008
    SHUTTING_DOWN = 4009
    # The server API's disconnect: the first may reconnect (after a back-off), the
    # second must not (reconnecting unchanged would be disconnected again).
    DISCONNECTED = 4100
    DISCONNECTED_FOR_GOOD = 4101


class RealtimeError(Exception):
    """Base class: an error with a wire code that a client may be shown."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    http_status: int = 500

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.code.value)
        self.detail = detail


class InvalidData(RealtimeError):
    """The frame is not JSON, not an object, an unknown command, or a field is missing or mistyped."""

    code = ErrorCode.INVALID_DATA
    http_status = 400


class InvalidCredentials(RealtimeError):
    """The secret or token is unknown, revoked, expired, or does not grant the access asked for."""

    code = ErrorCode.INVALID_CREDENTIALS
    http_status = 401


class AccessDenied(RealtimeError):
    """Not authenticated, a read-only key publishing, or a channel outside the key's scope."""

    code = ErrorCode.ACCESS_DENIED
    http_status = 403


class InvalidChannelName(RealtimeError):
    """The channel name breaks the naming rules (see ``realtime.names``)."""

    code = ErrorCode.INVALID_CHANNEL_NAME
    http_status = 400


class InvalidChannel(RealtimeError):
    """No active channel covers this name."""

    code = ErrorCode.INVALID_CHANNEL
    http_status = 404


class MessageTooLarge(RealtimeError):
    """The frame or the publication is larger than ``MAX_MESSAGE_SIZE``."""

    code = ErrorCode.MESSAGE_TOO_LARGE
    http_status = 413


class TooManySubscriptions(RealtimeError):
    """The connection already holds ``MAX_SUBSCRIPTIONS`` subscriptions."""

    code = ErrorCode.TOO_MANY_SUBSCRIPTIONS
    http_status = 400


class AlreadyAuthenticated(RealtimeError):
    """``auth`` on an authenticated connection; ``logout`` first."""

    code = ErrorCode.ALREADY_AUTHENTICATED
    http_status = 400


class RateLimited(RealtimeError):
    """The connection sends frames faster than ``RATE_LIMIT``; the frame was dropped."""

    code = ErrorCode.RATE_LIMITED
    http_status = 429


class TooManyConnections(RealtimeError):
    """The process holds ``MAX_CONNECTIONS`` connections, or the client address
    ``MAX_CONNECTIONS_PER_ADDRESS`` (for event streams; WebSockets are closed with 4007/4008)."""

    code = ErrorCode.TOO_MANY_CONNECTIONS
    http_status = 429


class TooManyAuthFailures(RealtimeError):
    """This client address failed to authenticate ``AUTH_FAILURES_PER_ADDRESS`` times
    within ``AUTH_FAILURE_WINDOW``; credentials from it are refused unchecked for now."""

    code = ErrorCode.TOO_MANY_AUTH_FAILURES
    http_status = 429

    def __init__(self, detail: str = "", retry_after: float = 0.0) -> None:
        super().__init__(detail)
        # Seconds until the address may try again (an HTTP Retry-After).
        self.retry_after = retry_after


class HistoryDisabled(RealtimeError):
    """``history`` (or the HTTP log) on a channel that keeps no history."""

    code = ErrorCode.HISTORY_DISABLED
    http_status = 404


class PresenceDisabled(RealtimeError):
    """``presence`` on a channel without presence."""

    code = ErrorCode.PRESENCE_DISABLED
    http_status = 404


class Unavailable(RealtimeError):
    """The broker (Redis) did not take the request. A publication answered so was not
    delivered and never will be: retrying it cannot make a duplicate."""

    code = ErrorCode.UNAVAILABLE
    http_status = 503


class MethodNotFound(RealtimeError):
    """``rpc`` named a method that no handler is registered for (``realtime.rpc``)."""

    code = ErrorCode.METHOD_NOT_FOUND
    http_status = 404


class HandlerTimeout(RealtimeError):
    """A project's handler (publish handler, RPC method) took longer than ``HANDLER_TIMEOUT``."""

    code = ErrorCode.HANDLER_TIMEOUT
    http_status = 504


# Codes the JS client uses for failures it detects itself (realtime.js CLIENT_ERROR_CODES):
# a handler's own code must not be mistaken for one of them.
CLIENT_ERROR_CODES = frozenset({"timeout", "disconnected", "closed", "token_unavailable"})
_PROJECT_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class Rejected(RealtimeError):
    """A project's handler refused the request: a publish handler the publication, an RPC
    method its call. ``detail`` reaches the client as it is, so say why in words a user
    may read.

    The wire code is ``rejected``, or ``code`` when given: a project's own code such as
    ``"banned_word"`` (lower-case letters, digits and ``_``, at most 64 characters, not one
    of the JS client's own codes). Raise realtime's other errors (``AccessDenied``,
    ``InvalidData``...) where they say it better.
    """

    code = ErrorCode.REJECTED
    http_status = 403

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail)
        if code is not None:
            if not isinstance(code, str) or not _PROJECT_CODE.fullmatch(code) or code in CLIENT_ERROR_CODES:
                raise ValueError(f"{code!r} is not usable as an error code")
            self.code = code  # type: ignore[assignment]


class UnknownOutcome(RealtimeError):
    """The publication reached Redis but no answer came back (the connection was lost,
    or replicas did not confirm it in time): it may or may not have been delivered.
    Retry with the same idempotency key to learn which, without publishing twice."""

    code = ErrorCode.UNKNOWN_OUTCOME
    http_status = 504
