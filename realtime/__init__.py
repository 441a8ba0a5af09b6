"""realtime: publish/subscribe channels over WebSocket for Django.

``realtime.publish(channel, event, data)`` and ``await realtime.apublish(...)`` are
the server-side API. They are imported lazily so that importing this package has no
side effects and does not need Django settings.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["publish", "apublish", "__version__"]


def __getattr__(name: str):
    if name in ("publish", "apublish"):
        from . import publishing as module

        return getattr(module, name)
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")
