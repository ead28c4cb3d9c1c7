"""Restarts as production's systemd units make them, for the processes ``ioc demo`` runs.

A process that fails (a non-zero exit status, or killed by a signal other than SIGHUP, SIGINT, SIGTERM or
SIGPIPE: systemd.service(5), ``Restart=on-failure``) is started again after its unit's ``RestartSec``, unless
its status is in ``RestartPreventExitStatus`` (our units: 2, a bad config that a restart cannot fix). A clean
exit (status 0, or one of those four signals: ``kill <pid>``, ``systemctl stop``) is not a failure and is not
restarted. Starts are budgeted as systemd's ``StartLimitIntervalSec`` / ``StartLimitBurst`` do: a start that
would be the ``burst + 1``-th within ``interval`` seconds is not made, and the supervisor gives up on that
process. It then leaves the others running, as systemd does: each part of the system shows its own failure
(a gateway's will sets its site offline, agents keep their readings on disk while the broker is away), which is
what a drill on the demo is for.

The numbers per process kind are the units' (:data:`POLICIES`, each naming its source); a unit test reads the
project's unit templates and checks they still agree.
"""

from __future__ import annotations

import enum
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: systemd's own defaults where a unit sets none: ``RestartSec=100ms`` (systemd.service(5)),
#: ``DefaultStartLimitIntervalSec=10s`` and ``DefaultStartLimitBurst=5`` (systemd-system.conf(5)).
SYSTEMD_RESTART_SEC = 0.1
SYSTEMD_START_LIMIT_INTERVAL_S = 10.0
SYSTEMD_START_LIMIT_BURST = 5

#: Signals after which ``Restart=on-failure`` does not restart: a clean stop (systemd.service(5)).
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})


@dataclass(frozen=True)
class RestartPolicy:
    """``Restart=on-failure`` with a unit's ``RestartSec``, start budget and ``RestartPreventExitStatus``."""

    delay_s: float
    limit_interval_s: float
    limit_burst: int
    prevent_exit_status: frozenset[int] = frozenset()
    #: The unit these numbers come from, as the terminal names it.
    unit: str = ""


#: Process kind -> its restart policy. Sources:
#: - ``hub``: ansible/roles/hub/templates/ioc-hub.service.j2 (``Restart=on-failure``, ``RestartSec=5``,
#:   ``StartLimitIntervalSec=600``, ``StartLimitBurst=20``, ``RestartPreventExitStatus=2``; the budget is the
#:   agent's: systemd's default, 5 starts in 10 s, is never reached 5 s apart).
#: - ``edge``: ansible/roles/edge_agent/templates/ioc-edge.service.j2 (``RestartSec=5``,
#:   ``StartLimitIntervalSec=600``, ``StartLimitBurst=20``, ``RestartPreventExitStatus=2``).
#: - ``mosquitto``, ``influxd``: Debian 12's /lib/systemd/system/mosquitto.service and influxdb.service, which the
#:   ansible roles use as they are: ``Restart=on-failure`` and systemd's defaults (100 ms, 5 starts in 10 s).
#: - ``sim``: the simulators stand for field devices and have no unit; they get the agent's policy.
POLICIES: dict[str, RestartPolicy] = {
    "hub": RestartPolicy(5.0, 600.0, 20, frozenset({2}), "ioc-hub.service"),
    "edge": RestartPolicy(5.0, 600.0, 20, frozenset({2}), "ioc-edge.service"),
    "mosquitto": RestartPolicy(
        SYSTEMD_RESTART_SEC, SYSTEMD_START_LIMIT_INTERVAL_S, SYSTEMD_START_LIMIT_BURST, unit="mosquitto.service"
    ),
    "influxd": RestartPolicy(
        SYSTEMD_RESTART_SEC, SYSTEMD_START_LIMIT_INTERVAL_S, SYSTEMD_START_LIMIT_BURST, unit="influxdb.service"
    ),
    "sim": RestartPolicy(5.0, 600.0, 20, frozenset({2}), "ioc-edge.service's policy"),
}


def policy_for(name: str) -> RestartPolicy:
    """The policy of a demo process by its name: ``hub``, ``edge-<site>``, ``sim-<what>``, ``mosquitto``,
    ``influxd``."""
    kind = name.split("-", 1)[0]
    try:
        return POLICIES[kind]
    except KeyError:
        raise KeyError(f"no restart policy for {name!r}; kinds: {', '.join(POLICIES)}") from None


def describe_status(status: int) -> str:
    """``exit status 1`` or ``killed by SIGKILL``, from a :class:`subprocess.Popen` return code."""
    if status >= 0:
        return f"exit status {status}"
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"


def is_clean(status: int) -> bool:
    """A clean exit for ``Restart=on-failure``: status 0, or one of :data:`CLEAN_SIGNALS`."""
    return status == 0 or (status < 0 and -status in CLEAN_SIGNALS)


class StartFailed(RuntimeError):
    """A restart did not bring the process up; the message says why (and where its log is)."""


class State(enum.Enum):
    RUNNING = "running"
    #: Failed; started again at ``restart_at``.
    RESTARTING = "restarting"
    #: Exited cleanly: left down, as systemd leaves it.
    STOPPED = "stopped"
    #: Failed with a status a restart cannot fix (``RestartPreventExitStatus``): left down.
    NOT_RESTARTED = "not restarted"
    #: Failed more often than its start budget allows: left down.
    GAVE_UP = "gave up"


@dataclass
class Supervised:
    """One process: how to read its exit status (None while it runs) and its pid, and how to start it again
    (returns the new pid, raises :class:`StartFailed`). ``ready`` (optional) tells when a started process
    serves again (the hub's API answers); until then it is reported as started, not back."""

    name: str
    policy: RestartPolicy
    exit_status: Callable[[], int | None]
    pid: Callable[[], int]
    restart: Callable[[], int]
    log_path: Path
    ready: Callable[[], bool] | None = None
    state: State = State.RUNNING
    #: Why it is down, for demo.json.
    reason: str = ""
    restarts: int = 0
    restart_at: float = 0.0
    down_since: float = 0.0
    awaiting_ready: bool = False
    starts: deque[float] = field(default_factory=deque)


class Supervisor:
    """Polls its processes and restarts those that failed, by their policies; says each change on ``say``.

    Call :meth:`poll` often (the demo: every half second, sooner when a restart is due, :meth:`next_due`). Not
    thread-safe: one loop drives it. ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        processes: Iterable[Supervised],
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self._clock = clock
        now = clock()
        self.processes: dict[str, Supervised] = {}
        for p in processes:
            p.starts.append(now)  # the first start counts in the budget, as in systemd
            self.processes[p.name] = p

    def poll(self) -> bool:
        """Notice exits, make the restarts that are due; True if a process changed (state or pid)."""
        changed = False
        for p in self.processes.values():
            if p.state is State.RUNNING:
                changed |= self._check(p)
            elif p.state is State.RESTARTING and self._clock() >= p.restart_at:
                self._start(p)
                changed = True
        return changed

    def next_due(self) -> float | None:
        """When the next restart is due (monotonic seconds), or None."""
        due = [p.restart_at for p in self.processes.values() if p.state is State.RESTARTING]
        return min(due) if due else None

    def failed(self) -> dict[str, str]:
        """Name -> why, for processes left down after a failure: given up on, or a status not to restart."""
        return {p.name: p.reason for p in self.processes.values() if p.state in (State.GAVE_UP, State.NOT_RESTARTED)}

    def down(self) -> dict[str, str]:
        """Name -> why, for every process not running now."""
        return {p.name: p.reason for p in self.processes.values() if p.state is not State.RUNNING}

    def running(self, name: str) -> bool:
        return self.processes[name].state is State.RUNNING

    # ------------------------------------------------------------------------------------------- internals

    def _check(self, p: Supervised) -> bool:
        status = p.exit_status()
        if status is None:
            if p.awaiting_ready and p.ready is not None and p.ready():
                p.awaiting_ready = False
                self._say(f"{p.name} is back (pid {p.pid()}), {self._clock() - p.down_since:.1f} s after it went down")
            return False
        now = self._clock()
        p.down_since = now
        p.awaiting_ready = False
        how = describe_status(status)
        unit = p.policy.unit
        if is_clean(status):
            p.state, p.reason = State.STOPPED, f"stopped: {how}"
            self._say(f"{p.name} (pid {p.pid()}) stopped: {how}; not restarted ({unit}: Restart=on-failure)")
        elif status in p.policy.prevent_exit_status:
            p.state, p.reason = State.NOT_RESTARTED, f"failed: {how}"
            self._say(
                f"{p.name} (pid {p.pid()}) died: {how}; not restarted ({unit}: RestartPreventExitStatus={status}, "
                f"a restart cannot fix it); see {p.log_path}"
            )
        else:
            self._schedule(p, now, f"{p.name} (pid {p.pid()}) died: {how}")
        return True

    def _schedule(self, p: Supervised, now: float, what: str) -> None:
        """Restart ``p`` after its delay, or give up if that start would exceed its budget (``what``: the
        failure, for the terminal)."""
        policy = p.policy
        # systemd counts the starts within StartLimitIntervalSec before the start it is about to make.
        window_start = now + policy.delay_s - policy.limit_interval_s
        while p.starts and p.starts[0] <= window_start:
            p.starts.popleft()
        if len(p.starts) >= policy.limit_burst:
            p.state = State.GAVE_UP
            p.reason = f"gave up: {len(p.starts)} starts within {policy.limit_interval_s:g} s"
            self._say(
                f"{what}; giving up on it after {len(p.starts)} starts within {policy.limit_interval_s:g} s "
                f"({policy.unit}: StartLimitBurst={policy.limit_burst}, "
                f"StartLimitIntervalSec={policy.limit_interval_s:g}); see {p.log_path}. The rest goes on."
            )
            return
        p.state, p.reason, p.restart_at = State.RESTARTING, "restarting", now + policy.delay_s
        self._say(f"{what}; restarting in {policy.delay_s:g} s ({policy.unit}: RestartSec)")

    def _start(self, p: Supervised) -> None:
        now = self._clock()
        p.starts.append(now)
        p.restarts += 1
        try:
            pid = p.restart()
        except StartFailed as exc:
            self._schedule(p, self._clock(), f"{p.name} did not start again: {exc}")
            return
        p.state, p.reason = State.RUNNING, ""
        if p.ready is None:
            self._say(f"{p.name} is back (pid {pid}), {self._clock() - p.down_since:.1f} s after it went down")
        else:
            p.awaiting_ready = True
            self._say(f"{p.name} started again (pid {pid}); waiting for it to answer")
