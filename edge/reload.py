"""``reload_config``: reread the agent's config file and apply its devices without restarting the process.

The file is read and checked exactly as at start (:func:`edge.config.load_config`, in a worker thread so the
event loop keeps polling); a file that does not pass raises :class:`~edge.errors.ConfigError` and nothing
changes. Otherwise, by device id: removed devices are stopped (their drivers closed), changed ones (any field
of their entry) are restarted with their new settings, added ones are started; unchanged ones keep running,
only going back to their configured interval if a ``set_interval`` changed it. The other devices are never
stopped.

What cannot change at run time is refused or reported: a different ``site`` or ``gateway`` is an error (the
agent's identity on the broker; restart it), changed ``broker``, ``publish`` or ``self_metrics`` settings are
named in the answer as not applied until a restart.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Final

from edge.config import EdgeConfig, load_config
from edge.errors import ConfigError
from edge.scheduler import Scheduler

log = logging.getLogger(__name__)

#: Sections applied only when the agent starts.
RESTART_SECTIONS: Final = ("broker", "publish", "self_metrics")


class ConfigReloader:
    """Applies the config file at ``path`` to a running ``scheduler``; ``config`` is the one running now."""

    def __init__(self, path: Path, config: EdgeConfig, scheduler: Scheduler) -> None:
        self.path = path
        self.config = config
        self._scheduler = scheduler
        self._lock = asyncio.Lock()

    async def __call__(self) -> tuple[str, dict[str, int]]:
        """Reload; returns a one-line account and the counts (added, removed, changed, unchanged)."""
        async with self._lock:
            return await self._reload()

    async def _reload(self) -> tuple[str, dict[str, int]]:
        new = await asyncio.to_thread(load_config, self.path)
        old = self.config
        if (new.site, new.gateway) != (old.site, old.gateway):
            raise ConfigError(
                f"{self.path}: site/gateway changed from {old.site}/{old.gateway} to {new.site}/{new.gateway}; "
                "that needs a restart of the agent (nothing was changed)"
            )
        before = {d.id: d for d in old.devices}
        after = {d.id: d for d in new.devices}
        plans = {p.id: p for p in new.device_plans()}
        removed = [i for i in before if i not in after]
        added = [i for i in after if i not in before]
        changed = [i for i in after if i in before and after[i] != before[i]]
        unchanged = [i for i in after if i in before and after[i] == before[i]]
        scheduler = self._scheduler
        for device in removed:
            await scheduler.remove(device)
        for device in changed:
            await scheduler.replace(plans[device], after[device].report)
        for device in added:
            await scheduler.add(plans[device], after[device].report)
        for device in unchanged:
            configured = after[device].interval_s
            if scheduler.poller(device).interval_s != configured:
                scheduler.set_interval(device, configured)
        self.config = new
        parts = [f"reloaded {self.path.name}"]
        for word, ids in (("added", added), ("removed", removed), ("changed", changed)):
            if ids:
                parts.append(f"{len(ids)} {word} ({', '.join(ids)})")
        parts.append(f"{len(unchanged)} unchanged")
        detail = ", ".join(parts)
        pending = [s for s in RESTART_SECTIONS if getattr(new, s) != getattr(old, s)]
        if pending:
            detail += f"; {', '.join(pending)} changed: applied at the next restart"
        log.info("%s", detail)
        counts = {"added": len(added), "removed": len(removed), "changed": len(changed), "unchanged": len(unchanged)}
        return detail, counts
