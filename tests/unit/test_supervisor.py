"""``ioc.supervisor``: restarts as systemd's ``Restart=on-failure`` makes them, table-driven on a clock the test
moves; and its policies are still the units' (the project's templates, Debian's units where installed)."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ioc.supervisor import (
    POLICIES,
    SYSTEMD_RESTART_SEC,
    SYSTEMD_START_LIMIT_BURST,
    SYSTEMD_START_LIMIT_INTERVAL_S,
    RestartPolicy,
    StartFailed,
    State,
    Supervised,
    Supervisor,
    describe_status,
    is_clean,
    policy_for,
)

ROOT = Path(__file__).parents[2]
KILLED = -signal.SIGKILL


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Process:
    """A process the test kills and starts at will: ``status`` None while running."""

    pid: int = 100
    status: int | None = None
    #: What each start does: None starts it, an int is an exit status at once, a StartFailed is raised.
    starts: list[int | StartFailed | None] = field(default_factory=list)
    answers: bool = True

    def restart(self) -> int:
        outcome = self.starts.pop(0) if self.starts else None
        if isinstance(outcome, StartFailed):
            raise outcome
        self.pid += 1
        self.status = outcome
        return self.pid


def supervise(
    policy: RestartPolicy, *, ready: bool = False
) -> tuple[Process, Supervisor, list[str], Clock, Supervised]:
    clock, proc = Clock(), Process()
    lines: list[str] = []
    entry = Supervised(
        "hub",
        policy,
        exit_status=lambda: proc.status,
        pid=lambda: proc.pid,
        restart=proc.restart,
        log_path=Path("/logs/hub.log"),
        ready=(lambda: proc.answers) if ready else None,
    )
    return proc, Supervisor([entry], lines.append, clock), lines, clock, entry


HUB = POLICIES["hub"]
BROKER = POLICIES["mosquitto"]


@pytest.mark.parametrize(
    ("status", "text", "clean"),
    [
        (0, "exit status 0", True),
        (1, "exit status 1", False),
        (2, "exit status 2", False),
        (-signal.SIGKILL, "killed by SIGKILL", False),
        (-signal.SIGSEGV, "killed by SIGSEGV", False),
        (-signal.SIGABRT, "killed by SIGABRT", False),
        (-signal.SIGTERM, "killed by SIGTERM", True),
        (-signal.SIGINT, "killed by SIGINT", True),
        (-signal.SIGHUP, "killed by SIGHUP", True),
        (-signal.SIGPIPE, "killed by SIGPIPE", True),
    ],
)
def test_exit_statuses_as_restart_on_failure_reads_them(status: int, text: str, clean: bool) -> None:
    assert describe_status(status) == text
    assert is_clean(status) is clean


def test_a_killed_process_is_restarted_after_its_delay_and_said_so() -> None:
    proc, sup, lines, clock, entry = supervise(HUB)
    assert sup.poll() is False
    proc.status = KILLED
    assert sup.poll() is True
    assert lines == ["hub (pid 100) died: killed by SIGKILL; restarting in 5 s (ioc-hub.service: RestartSec)"]
    assert sup.down() == {"hub": "restarting"}
    assert sup.next_due() == clock.now + 5
    clock.now += 4.9
    assert sup.poll() is False  # not before RestartSec
    clock.now += 0.1
    assert sup.poll() is True
    assert lines[-1] == "hub is back (pid 101), 5.0 s after it went down"
    assert (sup.running("hub"), sup.down(), sup.failed(), entry.restarts) == (True, {}, {}, 1)


def test_with_a_ready_probe_it_is_back_only_when_it_answers() -> None:
    proc, sup, lines, clock, _ = supervise(HUB, ready=True)
    proc.status, proc.answers = KILLED, False
    sup.poll()
    clock.now += 5
    sup.poll()
    assert lines[-1] == "hub started again (pid 101); waiting for it to answer"
    clock.now += 2
    sup.poll()
    assert lines[-1].startswith("hub started again")
    proc.answers = True
    sup.poll()
    assert lines[-1] == "hub is back (pid 101), 7.0 s after it went down"
    sup.poll()
    assert len(lines) == 3  # said once


@pytest.mark.parametrize(
    ("status", "said", "failed"),
    [
        (0, "hub (pid 100) stopped: exit status 0; not restarted (ioc-hub.service: Restart=on-failure)", {}),
        (
            -signal.SIGTERM,
            "hub (pid 100) stopped: killed by SIGTERM; not restarted (ioc-hub.service: Restart=on-failure)",
            {},
        ),
        (
            2,
            (
                "hub (pid 100) died: exit status 2; not restarted (ioc-hub.service: RestartPreventExitStatus=2, a "
                "restart cannot fix it); see /logs/hub.log"
            ),
            {"hub": "failed: exit status 2"},
        ),
    ],
)
def test_a_clean_stop_or_a_prevented_status_is_not_restarted(status: int, said: str, failed: dict[str, str]) -> None:
    proc, sup, lines, clock, _ = supervise(HUB)
    proc.status = status
    sup.poll()
    clock.now += 3600
    sup.poll()
    assert lines == [said]
    assert sup.failed() == failed
    assert not sup.running("hub")
    assert sup.next_due() is None


def test_a_process_that_fails_at_once_every_time_is_given_up_on_after_its_burst() -> None:
    # Debian's mosquitto.service: systemd's defaults, 100 ms apart, 5 starts in 10 s.
    proc, sup, lines, clock, entry = supervise(BROKER)
    proc.starts = [1] * 10
    proc.status = 1
    for _ in range(20):
        sup.poll()
        clock.now += SYSTEMD_RESTART_SEC
    assert entry.state is State.GAVE_UP
    assert entry.restarts == SYSTEMD_START_LIMIT_BURST - 1  # the first start counts
    assert lines[-1] == (
        "hub (pid 104) died: exit status 1; giving up on it after 5 starts within 10 s (mosquitto.service: "
        "StartLimitBurst=5, StartLimitIntervalSec=10); see /logs/hub.log. The rest goes on."
    )
    assert sup.failed() == {"hub": "gave up: 5 starts within 10 s"}


def test_the_agents_budget_allows_20_starts_in_600_s() -> None:
    proc, sup, _, clock, entry = supervise(POLICIES["edge"])
    proc.starts = [KILLED] * 30
    proc.status = KILLED
    while entry.state is not State.GAVE_UP and clock.now < 2000:
        sup.poll()
        clock.now += 0.5
    assert entry.restarts == 19
    assert clock.now < 1000 + 600


def test_failures_spaced_beyond_the_budget_are_restarted_for_ever() -> None:
    # 20 starts in 600 s: a failure every 40 s (19 starts at most in any 600 s) never exhausts it.
    proc, sup, _, clock, entry = supervise(POLICIES["edge"])
    for _ in range(100):
        proc.status = KILLED
        sup.poll()
        clock.now += 5
        sup.poll()
        assert entry.state is State.RUNNING
        clock.now += 35
    assert entry.restarts == 100


def test_a_start_that_fails_counts_and_is_tried_again_after_the_delay() -> None:
    proc, sup, lines, clock, entry = supervise(HUB)
    proc.starts = [StartFailed("port in use"), None]
    proc.status = KILLED
    sup.poll()
    clock.now += 5
    sup.poll()
    assert lines[-1] == "hub did not start again: port in use; restarting in 5 s (ioc-hub.service: RestartSec)"
    assert entry.state is State.RESTARTING
    clock.now += 5
    sup.poll()
    assert (entry.state, entry.restarts, proc.pid) == (State.RUNNING, 2, 101)
    assert lines[-1] == "hub is back (pid 101), 10.0 s after it went down"


def test_one_process_given_up_on_leaves_the_others_supervised() -> None:
    clock = Clock()
    lines: list[str] = []
    broker, hub = Process(pid=10, starts=[1] * 10), Process(pid=20)

    def entry(name: str, p: Process) -> Supervised:
        return Supervised(name, policy_for(name), lambda: p.status, lambda: p.pid, p.restart, Path(f"/{name}.log"))

    sup = Supervisor([entry("mosquitto", broker), entry("hub", hub)], lines.append, clock)
    broker.status = 1
    for _ in range(40):
        sup.poll()
        clock.now += 0.25
    assert sup.failed() == {"mosquitto": "gave up: 5 starts within 10 s"}
    hub.status = KILLED
    sup.poll()
    clock.now += 5
    sup.poll()
    assert sup.running("hub")
    assert sup.down() == {"mosquitto": "gave up: 5 starts within 10 s"}


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("hub", "hub"),
        ("edge-ben-thanh", "edge"),
        ("sim-city", "sim"),
        ("mosquitto", "mosquitto"),
        ("influxd", "influxd"),
    ],
)
def test_each_demo_process_has_its_kinds_policy(name: str, kind: str) -> None:
    assert policy_for(name) is POLICIES[kind]


def unit_settings(path: Path) -> dict[str, str]:
    """``Key=value`` lines of a systemd unit (or its Jinja template: no setting of ours is templated)."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"([A-Za-z]+)=(.*)", line.strip()):
            out[m[1]] = m[2]
    return out


def assert_policy_is_the_units(policy: RestartPolicy, unit: dict[str, str], *, budget: bool = True) -> None:
    assert unit["Restart"] == "on-failure"
    assert policy.delay_s == float(unit.get("RestartSec", SYSTEMD_RESTART_SEC))
    prevent = frozenset(int(s) for s in unit.get("RestartPreventExitStatus", "").split())
    assert policy.prevent_exit_status == prevent
    if budget:
        assert policy.limit_interval_s == float(unit.get("StartLimitIntervalSec", SYSTEMD_START_LIMIT_INTERVAL_S))
        assert policy.limit_burst == int(unit.get("StartLimitBurst", SYSTEMD_START_LIMIT_BURST))


def test_the_agents_and_the_hubs_policies_are_their_units() -> None:
    edge = unit_settings(ROOT / "ansible/roles/edge_agent/templates/ioc-edge.service.j2")
    hub = unit_settings(ROOT / "ansible/roles/hub/templates/ioc-hub.service.j2")
    assert_policy_is_the_units(POLICIES["edge"], edge)
    assert_policy_is_the_units(POLICIES["hub"], hub)


@pytest.mark.parametrize(("kind", "unit"), [("mosquitto", "mosquitto.service"), ("influxd", "influxdb.service")])
def test_the_brokers_and_influxdbs_policies_are_debians_units(kind: str, unit: str) -> None:
    path = Path("/lib/systemd/system") / unit
    if not path.exists():
        pytest.skip(f"{path} is not installed (make packages installs it)")
    assert_policy_is_the_units(POLICIES[kind], unit_settings(path))
