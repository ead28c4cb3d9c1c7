"""The snapshot store and intake of a running hub, from its settings, with their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from common.tasks import cancel_and_wait
from hub.config import SnapshotSettings
from hub.ingest.admission import Admission
from hub.snapshots.intake import SnapshotIntake, SnapshotRules
from hub.snapshots.store import RetentionPolicy, SnapshotStore

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running_snapshots(
    settings: SnapshotSettings, admission: Admission, registry_kind: Callable[[str], str | None]
) -> AsyncIterator[SnapshotIntake]:
    """The intake (with its store, ``.store``) and the retention task, until the block exits; then what is queued
    is written (the store's exit) and a temporary folder (``snapshots.dir`` unset) removed. ``registry_kind``:
    the kind the registry recorded for a device (:class:`SnapshotIntake`)."""
    tmp: Path | None = None
    folder = settings.dir
    if folder is None:
        tmp = folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="ioc-hub-snapshots-"))
        log.warning("snapshots.dir is not set: snapshots go to a temporary folder (%s), removed at stop", folder)
    try:
        policy = RetentionPolicy(
            max_age_days=settings.max_age_days,
            max_total_bytes=settings.max_total_bytes,
            max_per_device=settings.max_per_device,
            max_bytes_per_device=settings.max_bytes_per_device,
        )
        async with SnapshotStore(folder, policy, settings.queue_size) as store:
            retention = asyncio.create_task(store.run(settings.retention_check_s), name="hub-snapshot-retention")
            try:
                rules = SnapshotRules(
                    frozenset(settings.kinds),
                    settings.burst,
                    settings.max_per_minute,
                    settings.min_side,
                    settings.max_side,
                )
                yield SnapshotIntake(admission, store, rules, registry_kind=registry_kind)
            finally:
                await cancel_and_wait([retention])
    finally:
        if tmp is not None:
            await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)
