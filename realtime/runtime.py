"""What each event loop runs to serve connections: its hub, started on its broker,
with revalidation and the server API's operator attached.

Internal. Consumers and views call :func:`get_hub`; the first call on a loop creates
and starts the hub, and a hub whose start failed (Redis down) is forgotten, so the next
connection tries again.

Making a hub marks the process as one that serves (``realtime.broker.mark_serving``).
"""

from __future__ import annotations

import asyncio
import weakref

from .broker import get_broker, mark_serving
from .conf import settings
from .errors import Unavailable
from .hub import Hub
from .operations import Operator
from .revalidation import Revalidator

_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


async def _start(hub: Hub) -> None:
    # The operator first: the broker may deliver a command as soon as the hub started.
    Operator(hub)
    await hub.start()
    Revalidator(hub, settings.REVALIDATE_INTERVAL)


async def get_hub() -> Hub:
    """The hub of the running event loop, started on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        mark_serving()
        hub = _hubs[loop] = Hub(loop, get_broker())
        hub.started = loop.create_task(_start(hub))
    try:
        await asyncio.shield(hub.started)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        # Forget the failed hub, so that the next connection tries again (Redis may be back).
        if _hubs.get(loop) is hub:
            del _hubs[loop]
        hub.stop()
        raise Unavailable("the broker is unreachable") from error
    return hub


def hubs() -> list[Hub]:
    """The started hubs of this process (one per event loop that serves connections)."""
    return [
        hub
        for loop, hub in list(_hubs.items())
        if not loop.is_closed()
        and hub.started.done()
        and not hub.started.cancelled()
        and hub.started.exception() is None
    ]
