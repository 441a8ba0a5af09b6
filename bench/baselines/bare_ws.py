"""The ceiling: a bare Python ``websockets`` server using ``broadcast()``, no Django.

    .venv/bin/python bench/baselines/bare_ws.py PORT

Answers realtime's native frames (docs/protocol.md) just far enough for the load
generator: ``auth`` is accepted without a check, ``subscribe`` adds the connection to
an in-process set per channel, and ``publish`` encodes the ``{"message": ...}`` frame
once and hands it to ``websockets.asyncio.server.broadcast``. No database, no Redis,
no validation: the cost of the WebSocket server itself.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from websockets.asyncio.server import broadcast, serve

channels: dict[str, set] = {}


def ok(frame: dict) -> str:
    return json.dumps(
        {"ok": True, "id": frame["id"]} if "id" in frame else {"ok": True}, separators=(",", ":")
    )


async def handler(ws) -> None:
    mine: set[str] = set()
    try:
        async for text in ws:
            frame = json.loads(text)
            if "publish" in frame:
                pub = frame["publish"]
                message = {"message": {"channel": pub["channel"], "event": pub["event"], "data": pub["data"]}}
                broadcast(channels.get(pub["channel"], ()), json.dumps(message, separators=(",", ":")))
            elif "subscribe" in frame:
                name = frame["subscribe"]["channel"]
                channels.setdefault(name, set()).add(ws)
                mine.add(name)
            await ws.send(ok(frame))
    finally:
        for name in mine:
            channels[name].discard(ws)


async def main(port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None, backlog=2048):
        await stop


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
