"""A stand-in for InfluxDB's HTTP API on loopback, for the tests of the hub's InfluxDB client (tests/unit/hub/
test_hub_influx.py, test_hub_influx_v2.py, test_hub_ingest.py, test_vn_aqi.py): an HTTP/1.1 server that records
each request and answers it as the test says (the next of ``answers``, then ``answer(request)``), with keep-alive
or closing the connection after each answer (``Connection: close``)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

#: How long a server that closes after one answer waits for its request.
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Seen:
    """One request: its line's parts, its headers (names lower-case) and its body."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


#: An answer: status, extra headers, body; None: never answer (the connection is held until the client gives up).
Answer = tuple[int, dict[str, str], bytes] | None


def no_content(_: Seen) -> Answer:
    """InfluxDB's answer to a write it took: 204."""
    return 204, {}, b""


@dataclass
class LocalInflux:
    """The server's state: what it got (``requests``, ``connections``) and how it answers."""

    answer: Callable[[Seen], Answer | Awaitable[Answer]] = no_content
    answers: list[Answer] = field(default_factory=list)
    keep_alive: bool = True
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    url: str = ""
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection: ``asyncio.start_server``'s callback."""
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        timeout_s = None if self.keep_alive else READ_TIMEOUT_S
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
                line, *lines = head.decode("latin-1").split("\r\n")
                method, target, version = line.split(" ")
                headers = {name.strip().lower(): value.strip() for name, value in (x.split(":", 1) for x in lines if x)}
                body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout_s)
                seen = Seen(method, target, version, headers, body)
                self.requests.append(seen)
                if self.answers:
                    answer = self.answers.pop(0)
                else:
                    found = self.answer(seen)
                    answer = await found if inspect.isawaitable(found) else found
                if answer is None:
                    await reader.read()  # until the client gives up
                    return
                status, extra, content = answer
                head_lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Content-Length: {len(content)}"]
                head_lines += [f"{name}: {value}" for name, value in extra.items()]
                if not self.keep_alive:
                    head_lines.append("Connection: close")
                writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1") + content)
                await writer.drain()
                if not self.keep_alive:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection (or gave up on an answer)
        finally:
            self._handlers.discard(task)
            writer.close()


@contextlib.asynccontextmanager
async def local_influx(
    answer: Callable[[Seen], Answer | Awaitable[Answer]] = no_content, *, keep_alive: bool = True
) -> AsyncIterator[LocalInflux]:
    """A :class:`LocalInflux` listening on 127.0.0.1 (a free port; its ``url``); on leaving, the connections still
    open are dropped."""
    fake = LocalInflux(answer=answer, keep_alive=keep_alive)
    listener = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    async with listener:
        yield fake
        handlers = list(fake._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
