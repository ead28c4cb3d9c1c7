"""The snapshots kept on disk: their index, the writer, and retention by age and by bytes.

One folder per camera, one file per snapshot, named so that the folder alone says what it holds and whose
(:mod:`hub.snapshots.files`): a restart rebuilds the index and every camera's and gateway's bytes from the
names and each folder's ``.gateway``, written before the first snapshot of a gateway's in that folder (again
when a camera moved to another gateway). A folder without it (written before it existed) counts as a gateway of
its own until its next snapshot.

Writes and removals run in a thread, one at a time (one lock), writes fed by a bounded queue, so the event loop
that ingests MQTT never waits for the disk; a snapshot that finds the queue full is dropped and counted (the
camera sends another at its next period). The index lives on the event loop only.

Retention (:meth:`SnapshotStore.enforce`, every ``snapshots.retention_check_s`` by :meth:`SnapshotStore.run`):
snapshots older than ``max_age_days`` go; then, while the total passes ``max_total_bytes``, the oldest snapshot
of the camera holding the most bytes within the gateway holding the most bytes. A gateway is the unit a captured
site box controls (every camera its birth announces, new ones at admission's rate), so a gateway that floods
evicts its own pictures until it holds no more than the next largest gateway, and a city under the bound loses
nothing. A camera is also bounded in files (``max_per_device``) and bytes (``max_bytes_per_device``), at every
write and at every retention check: its oldest go first.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.tasks import cancel_and_wait
from hub.snapshots.files import GATEWAY_FILE, MAX_PROBLEMS_CHARS, StoredSnapshot, remove_files, scan, write_file

__all__ = ["GATEWAY_FILE", "MAX_PROBLEMS_CHARS", "RetentionPolicy", "SnapshotStore", "StoreCounters", "StoredSnapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """The bounds of the snapshot folder (``snapshots`` settings)."""

    max_age_days: float = 14.0
    max_total_bytes: int = 10 * 1024**3
    max_per_device: int = 5000
    max_bytes_per_device: int = 256 * 1024**2


@dataclass(slots=True)
class StoreCounters:
    """What the store did since the hub started."""

    stored: int = 0
    stored_bytes: int = 0
    replaced: int = 0
    dropped_queue_full: int = 0
    write_errors: int = 0
    removed_age: int = 0
    removed_bytes: int = 0
    removed_device_bound: int = 0


@dataclass(slots=True)
class _Job:
    snap: StoredSnapshot
    data: bytes
    site: str
    gateway: str


@dataclass(slots=True)
class _Device:
    #: ``site/gateway`` of its snapshots, or ``?{device}`` when not known (a folder from before ``.gateway``).
    gateway: str
    #: sorted by ts, one per ts
    items: list[StoredSnapshot] = field(default_factory=list)
    #: the bytes of ``items``
    size: int = 0


StoredObserver = Callable[[str, str, StoredSnapshot], None]
"""Called on the event loop with ``(site, gateway, snapshot)`` once a snapshot is on disk; cheap, never raises."""


class SnapshotStore:
    """``async with SnapshotStore(folder, policy) as store``: the index loaded, the writer running."""

    def __init__(self, folder: Path, policy: RetentionPolicy | None = None, queue_size: int = 64) -> None:
        self.folder = folder
        self.policy = policy or RetentionPolicy()
        self.counters = StoreCounters()
        self._devices: dict[str, _Device] = {}
        #: The bytes each gateway's cameras hold (``site/gateway``, or ``?{device}`` when not known).
        self._gateway_bytes: dict[str, int] = {}
        #: The snapshots the index holds now, and their bytes.
        self.total_files = 0
        self.total_bytes = 0
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(queue_size)
        self._writer: asyncio.Task[None] | None = None
        #: One disk change at a time (the writer's, retention's): a folder emptied by retention loses its
        #: ``.gateway`` only if no write made it a camera's again meanwhile.
        self._disk = asyncio.Lock()
        self._observers: tuple[StoredObserver, ...] = ()
        self._write_error_logged = False
        self._dropping = False

    async def __aenter__(self) -> SnapshotStore:
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        found, gateways = await asyncio.to_thread(scan, self.folder)
        for snap in found:
            self._index(snap, gateways.get(snap.device) or f"?{snap.device}")
        log.info(
            "snapshots: %d in %s (%d cameras of %d gateways, %.1f MiB)",
            len(found),
            self.folder,
            len(self._devices),
            len(self._gateway_bytes),
            self.total_bytes / 1024**2,
        )
        self._writer = asyncio.create_task(self._write_loop(), name="hub-snapshot-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Write what is queued (bounded by the queue), then stop."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self._queue.join()
        await cancel_and_wait([writer])

    @property
    def cameras(self) -> int:
        """Cameras with a snapshot kept."""
        return len(self._devices)

    @property
    def queued(self) -> int:
        """Snapshots admitted and waiting for the writer."""
        return self._queue.qsize()

    def subscribe(self, observer: StoredObserver) -> None:
        self._observers = (*self._observers, observer)

    # ------------------------------------------------------------------------------------------ writing

    def put(self, site: str, gateway: str, snap: StoredSnapshot, data: bytes) -> bool:
        """Queue ``data`` to be written as ``snap``; False (counted) when the queue is full."""
        try:
            self._queue.put_nowait(_Job(snap, data, site, gateway))
        except asyncio.QueueFull:
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "snapshots: the write queue is full (%d): dropping snapshots until it has room (counted)",
                    self._queue.maxsize,
                )
            self.counters.dropped_queue_full += 1
            return False
        if self._dropping:
            self._dropping = False
            log.warning("snapshots: the write queue has room again (%d dropped)", self.counters.dropped_queue_full)
        return True

    async def _write_loop(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                async with self._disk:
                    await self._write(job)
            finally:
                self._queue.task_done()

    async def _write(self, job: _Job) -> None:
        snap = job.snap
        gateway = f"{job.site}/{job.gateway}"
        device = self._devices.get(snap.device)
        # The folder says whose it is before it holds a picture of that gateway's.
        marker = gateway if device is None or device.gateway != gateway else None
        try:
            await asyncio.to_thread(write_file, self.folder / snap.device, snap.name, job.data, marker)
        except OSError as exc:
            self.counters.write_errors += 1
            if not self._write_error_logged:
                self._write_error_logged = True
                log.error(  # noqa: TRY400 - the reason is the OSError's message; a traceback says nothing more
                    "snapshots: cannot write %s of %s: %s (logged once until a write works)",
                    snap.name,
                    snap.device,
                    exc,
                )
            return
        if self._write_error_logged:
            self._write_error_logged = False
            log.warning("snapshots: writing works again")
        gone = self._index(snap, gateway)
        self.counters.stored += 1
        self.counters.stored_bytes += snap.size
        excess = self._device_excess(snap.device)
        self.counters.removed_device_bound += len(excess)
        gone += excess
        if gone:
            await asyncio.to_thread(remove_files, self.folder, gone, set())
        for observer in self._observers:
            try:
                observer(job.site, job.gateway, snap)
            except Exception:
                log.exception("snapshots: observer %r failed", observer)

    # ------------------------------------------------------------------------------------------ index

    def _count(self, device: _Device, files: int, size: int) -> None:
        device.size += size
        self.total_files += files
        self.total_bytes += size
        self._add_gateway_bytes(device.gateway, size)

    def _add_gateway_bytes(self, gateway: str, size: int) -> None:
        left = self._gateway_bytes.get(gateway, 0) + size
        if left:
            self._gateway_bytes[gateway] = left
        else:
            self._gateway_bytes.pop(gateway, None)

    def _index(self, snap: StoredSnapshot, gateway: str) -> list[StoredSnapshot]:
        """Add ``snap`` of ``gateway``'s; return the entry it replaced (same device and ``ts``, another name) to
        remove. A camera that now comes from another gateway takes its bytes with it."""
        device = self._devices.get(snap.device)
        if device is None:
            device = self._devices[snap.device] = _Device(gateway)
        elif device.gateway != gateway:
            self._move(device, gateway)
        items = device.items
        i = bisect.bisect_left(items, snap.ts, key=lambda s: s.ts)
        gone: list[StoredSnapshot] = []
        if i < len(items) and items[i].ts == snap.ts:
            old = items[i]
            items[i] = snap
            self._count(device, 0, snap.size - old.size)
            self.counters.replaced += 1
            if old.name != snap.name:
                gone.append(old)
        else:
            items.insert(i, snap)
            self._count(device, 1, snap.size)
        return gone

    def _move(self, device: _Device, gateway: str) -> None:
        self._add_gateway_bytes(device.gateway, -device.size)
        device.gateway = gateway
        self._add_gateway_bytes(gateway, device.size)

    def _drop_oldest(self, device_id: str, n: int) -> list[StoredSnapshot]:
        """Take the ``n`` oldest snapshots of a camera out of the index (the camera goes with its last)."""
        device = self._devices[device_id]
        old = device.items[:n]
        del device.items[:n]
        if not device.items:
            del self._devices[device_id]
        self._count(device, -len(old), -sum(s.size for s in old))
        return old

    def _device_excess(self, device_id: str) -> list[StoredSnapshot]:
        """Take out of the index a camera's oldest past ``max_per_device`` files or ``max_bytes_per_device`` bytes
        (its newest stays, whatever its size)."""
        device = self._devices.get(device_id)
        if device is None:
            return []
        policy = self.policy
        items = device.items
        n = max(0, len(items) - policy.max_per_device)
        over = device.size - policy.max_bytes_per_device - sum(s.size for s in items[:n])
        while over > 0 and n < len(items) - 1:
            over -= items[n].size
            n += 1
        return self._drop_oldest(device_id, n) if n else []

    # ------------------------------------------------------------------------------------------ reading

    def devices(self) -> list[str]:
        return sorted(self._devices)

    def gateway_bytes(self) -> dict[str, int]:
        """The bytes each gateway's cameras hold now (``site/gateway``; ``?{device}`` for a camera whose folder
        does not say)."""
        return dict(self._gateway_bytes)

    def device_bytes(self, device_id: str) -> int:
        device = self._devices.get(device_id)
        return device.size if device is not None else 0

    def latest(self, device_id: str) -> StoredSnapshot | None:
        device = self._devices.get(device_id)
        return device.items[-1] if device is not None else None

    def history(self, device_id: str, limit: int, before_ts: int | None = None) -> tuple[int, list[StoredSnapshot]]:
        """The device's snapshot count and up to ``limit`` of them, newest first (older than ``before_ts``)."""
        device = self._devices.get(device_id)
        if device is None:
            return 0, []
        items = device.items
        end = len(items) if before_ts is None else bisect.bisect_left(items, before_ts, key=lambda s: s.ts)
        return len(items), items[max(0, end - limit) : end][::-1]

    def get(self, device_id: str, ts: int) -> StoredSnapshot | None:
        device = self._devices.get(device_id)
        if device is None:
            return None
        items = device.items
        i = bisect.bisect_left(items, ts, key=lambda s: s.ts)
        return items[i] if i < len(items) and items[i].ts == ts else None

    async def read(self, snap: StoredSnapshot) -> bytes | None:
        """The JPEG of ``snap``; None when it is gone (removed by retention meanwhile)."""
        try:
            return await asyncio.to_thread((self.folder / snap.device / snap.name).read_bytes)
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------------------------------------ retention

    def expired(self, now_ms: int) -> list[StoredSnapshot]:
        """Take out of the index what retention removes now: too old; past a camera's bounds; then, while over
        the total bytes, the oldest of the camera holding the most within the gateway holding the most."""
        policy = self.policy
        oldest_kept = now_ms - int(policy.max_age_days * 86_400_000)
        gone: list[StoredSnapshot] = []
        for device_id in list(self._devices):
            n = bisect.bisect_left(self._devices[device_id].items, oldest_kept, key=lambda s: s.ts)
            if n:
                gone += self._drop_oldest(device_id, n)
        self.counters.removed_age += len(gone)
        for device_id in list(self._devices):
            excess = self._device_excess(device_id)
            self.counters.removed_device_bound += len(excess)
            gone += excess
        if self.total_bytes > policy.max_total_bytes:
            by_bytes = self._shed(policy.max_total_bytes)
            self.counters.removed_bytes += len(by_bytes)
            gone += by_bytes
        return gone

    def _shed(self, bound: int) -> list[StoredSnapshot]:
        """Take snapshots out of the index until the total is within ``bound``: each time the oldest of the camera
        holding the most bytes (ties: the older picture) of the gateway holding the most (ties: by name).

        A max-heap of gateways and one of each gateway's cameras: only the entries of the camera and gateway just
        trimmed change, and they are popped and pushed again, so every entry is current."""
        cameras: dict[str, list[tuple[int, int, str]]] = {}
        for device_id, device in self._devices.items():
            cameras.setdefault(device.gateway, []).append((-device.size, device.items[0].ts, device_id))
        for heap in cameras.values():
            heapq.heapify(heap)
        gateways = [(-self._gateway_bytes.get(gateway, 0), gateway) for gateway in cameras]
        heapq.heapify(gateways)
        gone: list[StoredSnapshot] = []
        while self.total_bytes > bound and gateways:
            _, gateway = heapq.heappop(gateways)
            heap = cameras[gateway]
            _, _, device_id = heapq.heappop(heap)
            gone += self._drop_oldest(device_id, 1)
            trimmed = self._devices.get(device_id)
            if trimmed is not None:
                heapq.heappush(heap, (-trimmed.size, trimmed.items[0].ts, device_id))
            if heap:
                heapq.heappush(gateways, (-self._gateway_bytes.get(gateway, 0), gateway))
        return gone

    async def enforce(self, now_ms: int | None = None) -> int:
        """Apply retention now; the number of snapshots removed."""
        gone = self.expired(now_ms if now_ms is not None else int(time.time() * 1000))
        if gone:
            async with self._disk:
                # A write meanwhile may have put a picture of the same name back, or made an emptied folder a
                # camera's again: those stay.
                gone = [s for s in gone if _name_of(self.get(s.device, s.ts)) != s.name]
                emptied = {s.device for s in gone} - self._devices.keys()
                await asyncio.to_thread(remove_files, self.folder, gone, emptied)
        return len(gone)

    async def run(self, every_s: float) -> None:
        """Apply retention every ``every_s`` until cancelled."""
        while True:
            try:
                removed = await self.enforce()
                if removed:
                    log.info("snapshots: retention removed %d (%.1f MiB kept)", removed, self.total_bytes / 1024**2)
            except Exception:
                log.exception("snapshots: retention failed; trying again in %.0f s", every_s)
            await asyncio.sleep(every_s)


def _name_of(snap: StoredSnapshot | None) -> str | None:
    return snap.name if snap is not None else None
