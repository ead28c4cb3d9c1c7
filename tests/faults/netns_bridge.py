"""One end of the bridge between a network namespace and the broker, for the fault suite's link cut.

``python netns_bridge.py tcp-to-unix PORT SOCKET``: inside the namespace, accept TCP on 127.0.0.1:PORT (the
namespace's own loopback, where the agent connects) and carry each connection over the Unix socket SOCKET.
``python netns_bridge.py unix-to-tcp SOCKET PORT``: outside, accept on SOCKET and connect to 127.0.0.1:PORT (the
broker). A Unix socket is a file, so it crosses the namespace while no address outside loopback is used; taking
the namespace's loopback down then cuts the agent's link silently (no reset, no FIN), as a cut cable does.
Prints ``ready`` once listening; runs until killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.close()


def relay(open_upstream: Opener) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await open_upstream()
        except OSError:
            writer.transport.abort()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return handle


async def main(mode: str, source: str, target: str) -> None:
    if mode == "tcp-to-unix":
        server = await asyncio.start_server(
            relay(lambda: asyncio.open_unix_connection(target)), "127.0.0.1", int(source)
        )
    else:
        server = await asyncio.start_unix_server(
            relay(lambda: asyncio.open_connection("127.0.0.1", int(target))), source
        )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
