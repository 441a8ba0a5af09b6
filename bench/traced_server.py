"""An ASGI server with tracemalloc on, for bench/profile.py.

    python bench/traced_server.py PREFIX .venv/bin/uvicorn demo_site.asgi:application ...

Runs uvicorn with the given arguments; each SIGUSR1 writes a tracemalloc snapshot to
PREFIX.1, PREFIX.2, ... and then an empty PREFIX.N.done beside it.
"""

from __future__ import annotations

import signal
import sys
import tracemalloc

prefix, command = sys.argv[1], sys.argv[2:]
taken = 0


def dump(signum, frame) -> None:
    global taken
    taken += 1
    path = f"{prefix}.{taken}"
    tracemalloc.take_snapshot().dump(path)
    open(path + ".done", "w").close()


if __name__ == "__main__":
    tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["uvicorn", *command[1:]]
    from uvicorn.main import main

    main()
