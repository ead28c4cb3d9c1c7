"""The store-and-forward outbox: :class:`edge.outbox.Outbox` on SQLite (:mod:`edge.outbox_store`), async.

Every SQLite call runs on one dedicated thread, so the event loop never waits for the disk, and the calls run
in the order they were made. Puts are grouped: while one write transaction is on its way to the disk, every
put arriving meanwhile joins the next one, so the cost of ``synchronous=FULL`` (one fsync per transaction) does
not grow with the number of devices. :meth:`SqliteOutbox.put` returns once its readings are durable: a
``kill -9`` or a power cut after that loses none of them.

``async with SqliteOutbox(path, ...)`` opens the file (creating its folder) and restores what a previous run
left, all of it as the backlog (a file that cannot be opened or created is a :class:`~edge.errors.ConfigError`
naming it; a damaged one is moved aside); leaving waits for pending writes, then closes it. ``path=":memory:"`` keeps
the outbox in memory (tests, embedding; nothing survives a restart).

The levels (readings, bytes, backlog) and drops go to :class:`edge.stats.EdgeStats` after every operation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

import msgspec

from edge.config import PublishConfig
from edge.errors import ConfigError
from edge.outbox import Lane, Queued
from edge.outbox_store import MEMORY, Appended, Levels, OutboxStore, OutboxStoreError
from edge.stats import EdgeStats
from wire.v1 import Reading

log = logging.getLogger(__name__)

#: Put times remembered for the live lane's batching delay; older puts count as "long ago" (sent at once).
#: The list is cleared at every connect attempt and trimmed as live readings go, so it stays short.
MAX_PUT_TIMES: Final = 4096

_T = TypeVar("_T")
_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Reading)


class SqliteOutbox:
    """The outbox on SQLite, bounded in bytes (``max_bytes``) and, if given, readings (``max_readings``)."""

    def __init__(self, path: Path | str, *, max_bytes: int, max_readings: int | None = None, stats: EdgeStats) -> None:
        self.path = str(path)
        self._max_bytes = max_bytes
        self._max_readings = max_readings
        self._stats = stats
        self._store: OutboxStore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._levels = Levels()
        self._changed = asyncio.Event()
        self._pending: list[bytes] = []
        self._pending_done: asyncio.Future[None] | None = None
        self._pending_since = 0.0
        self._writer: asyncio.Task[None] | None = None
        #: (last position of a write, monotonic time of its first put), for the live lane only.
        self._put_times: deque[tuple[int, float]] = deque()
        self._overflowing = False
        self._dropped_in_episode = 0
        self._failing = False

    # ------------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-outbox")
        try:
            self._store = await self._call(lambda: OutboxStore(self.path, self._max_bytes, self._max_readings))
        except BaseException as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            if isinstance(exc, OutboxStoreError):
                raise ConfigError(f"publish.outbox_path: {exc}") from exc
            raise
        self._sync_levels(0)
        where = "in memory" if self.path == MEMORY else self.path
        log.info(
            "outbox %s: at most %s; %d queued",
            where,
            describe_bounds(self._max_bytes, self._max_readings),
            len(self),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        writer = self._writer
        if writer is not None:
            await asyncio.shield(writer)
        store, executor = self._store, self._executor
        self._store = None
        if store is not None and executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, store.close)
        if executor is not None:
            executor.shutdown(wait=True)
        self._executor = None

    async def _call(self, fn: Callable[[], _T]) -> _T:
        if self._executor is None:
            raise RuntimeError("the outbox is not open (use `async with`)")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _require(self) -> OutboxStore:
        if self._store is None:
            raise RuntimeError("the outbox is not open (use `async with`)")
        return self._store

    # ------------------------------------------------------------------------------------------- levels

    def __len__(self) -> int:
        return self._levels.readings

    @property
    def nbytes(self) -> int:
        return self._levels.bytes

    @property
    def dropped(self) -> int:
        """Readings dropped (bounds, unreadable rows, failed writes) since the outbox was opened."""
        return self._levels.dropped

    def lane_len(self, lane: Lane) -> int:
        return self._levels.backlog if lane is Lane.BACKLOG else self._levels.live

    def live_enqueued_at(self) -> float | None:
        first = self._levels.live_first
        if first is None:
            return None
        times = self._put_times
        while times and times[0][0] < first:
            times.popleft()
        return times[0][1] if times else 0.0

    def _sync_levels(self, newly_dropped: int) -> None:
        store = self._require()
        self._levels = levels = store.levels
        stats = self._stats
        stats.outbox_readings = levels.readings
        stats.outbox_bytes = levels.bytes
        stats.outbox_backlog = levels.backlog
        if newly_dropped:
            stats.readings_dropped += newly_dropped
            self._dropped_in_episode += newly_dropped
            if not self._overflowing:
                self._overflowing = True
                log.warning(
                    "outbox full (%s): dropping the oldest readings until it drains",
                    describe_bounds(self._max_bytes, self._max_readings),
                )
        elif (
            self._overflowing
            and levels.bytes < 0.9 * self._max_bytes
            and (self._max_readings is None or levels.readings < 0.9 * self._max_readings)
        ):
            log.warning("outbox no longer full; %d readings were dropped meanwhile", self._dropped_in_episode)
            self._overflowing = False
            self._dropped_in_episode = 0

    # ------------------------------------------------------------------------------------------- writes

    async def put(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        self._require()
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.extend(_encoder.encode(r) for r in readings)
        self._stats.readings_queued += len(readings)
        if self._pending_done is None:
            self._pending_done = asyncio.get_running_loop().create_future()
        done = self._pending_done
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending(), name="edge-outbox-writer")
        # Shielded: a cancelled caller (a device task stopping) does not cancel the write of everyone's rows.
        await asyncio.shield(done)

    async def _write_pending(self) -> None:
        """Write what is pending, one transaction at a time, until nothing is (group commit)."""
        store = self._require()
        try:
            while self._pending:
                payloads, done, since = self._pending, self._pending_done, self._pending_since
                self._pending, self._pending_done = [], None
                try:
                    appended: Appended = await self._call(lambda p=payloads: store.append(p))  # type: ignore[misc]
                except OutboxStoreError as exc:
                    self._write_failed(exc, len(payloads))
                else:
                    self._write_ok(appended, since)
                finally:
                    if done is not None and not done.done():
                        done.set_result(None)
                self._changed.set()
        finally:
            self._writer = None

    def _write_ok(self, appended: Appended, since: float) -> None:
        if self._failing:
            log.warning("outbox %s: writing again", self.path)
            self._failing = False
        self._put_times.append((appended.last, since))
        if len(self._put_times) > MAX_PUT_TIMES:
            self._put_times.popleft()
        self._sync_levels(appended.dropped)

    def _write_failed(self, exc: OutboxStoreError, count: int) -> None:
        # The readings cannot be kept: they are lost, and counted as such. The agent goes on.
        self._stats.readings_dropped += count
        self._stats.outbox_write_errors += 1
        if not self._failing:
            self._failing = True
            log.error("%s; these readings are dropped (and counted) until writing works again", exc)
        self._sync_levels(0)

    async def start_backlog(self) -> int:
        store = self._require()
        await self._flush()
        count = await self._call(store.start_backlog)
        self._put_times.clear()
        self._sync_levels(0)
        return count

    async def _flush(self) -> None:
        writer = self._writer
        if writer is not None:
            await asyncio.shield(writer)

    # ------------------------------------------------------------------------------------------- reads

    async def peek(self, limit: int, lane: Lane) -> list[Queued]:
        store = self._require()
        backlog = lane is Lane.BACKLOG

        def read() -> tuple[list[Queued], int]:
            queued: list[Queued] = []
            damaged: list[int] = []
            for position, data in store.peek(limit, backlog):
                try:
                    queued.append(Queued(position, _decoder.decode(data)))
                except msgspec.DecodeError as exc:  # includes ValidationError
                    log.error("outbox %s: reading %d unreadable (%s); dropped", self.path, position, exc)  # noqa: TRY400
                    damaged.append(position)
            return queued, store.discard(damaged) if damaged else 0

        queued, dropped = await self._call(read)
        if dropped:
            self._sync_levels(dropped)
        return queued

    async def commit(self, through: int, lane: Lane) -> None:
        store = self._require()
        backlog = lane is Lane.BACKLOG
        try:
            await self._call(lambda: store.commit(through, backlog))
        except OutboxStoreError as exc:
            # They stay queued and go out again: a duplicate, never a loss.
            log.error("%s; they will be sent again", exc)  # noqa: TRY400 - the message says it all
        self._sync_levels(0)

    async def settle(self) -> None:
        # The writer writes until nothing is pending (group commit), so once it is done every put so far is in.
        writer = self._writer
        if writer is not None:
            await asyncio.shield(writer)

    async def wait(self, timeout_s: float | None) -> None:
        self._changed.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
        except TimeoutError:
            pass


def describe_bounds(max_bytes: int, max_readings: int | None) -> str:
    """``"256 MiB of readings"`` or ``"64 KiB of readings, 1000 readings"``: for logs and ``ioc edge check``."""
    text = f"{_size(max_bytes)} of readings"
    return text if max_readings is None else f"{text}, {max_readings} readings"


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}" if nbytes % scale == 0 else f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def outbox_for(publish: PublishConfig, stats: EdgeStats) -> SqliteOutbox:
    """The outbox a config asks for (not yet open): on disk at ``publish.outbox_path``, or in memory."""
    path = publish.outbox_path
    if path is None:
        log.warning("no publish.outbox_path: the outbox is in memory and does not survive a restart")
    return SqliteOutbox(
        MEMORY if path is None else path,
        max_bytes=publish.outbox_max_bytes,
        max_readings=publish.outbox_max,
        stats=stats,
    )
