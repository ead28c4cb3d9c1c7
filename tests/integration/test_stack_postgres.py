"""ioc.stack.postgres: a real PostgreSQL started unprivileged, kept across restarts, stopped for sure.

The server of the session (fixture ``postgres``) answers for the quick checks; the lifecycle tests start their
own in a folder of their own under /tmp (as root, PostgreSQL runs as the ``postgres`` user, who cannot enter
pytest's /tmp/pytest-of-root).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ioc.stack import PostgresServer, StackError
from ioc.stack.packages import PACKAGES, find_lib_file
from ioc.stack.postgres import check_reachable, run_as_user

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


@pytest.fixture
def pg_dir(postgres: PostgresServer) -> Iterator[Path]:
    """An empty folder PostgreSQL's user can reach (``postgres`` only makes sure PostgreSQL is here)."""
    path = Path(tempfile.mkdtemp(prefix="ioc-test-pg-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it has exited all the same.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


def _wait_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_postgresql_is_an_optional_stack_package_found_in_its_versioned_folder() -> None:
    (package,) = [p for p in PACKAGES if p.name == "postgresql"]
    assert package.optional
    found = find_lib_file("postgresql/*/bin/postgres")
    assert found is not None
    assert found.parts[:3] == ("/", "usr", "lib")


def test_session_server_runs_unprivileged_and_serves_the_hub_url(postgres: PostgresServer) -> None:
    ep = postgres.endpoints
    assert ep is not None
    assert postgres.pid is not None
    user = run_as_user()
    assert _uid_of(postgres.pid) == (user.pw_uid if user is not None else os.getuid())
    assert _uid_of(postgres.pid) != 0
    assert ep.url().startswith(f"postgresql+psycopg://ioc:{ep.password}@127.0.0.1:{ep.port}/ioc")
    with psycopg.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.password, dbname="ioc") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("ioc",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=ep.host, port=ep.port, user=ep.user, password="wrong", dbname="ioc", connect_timeout=5)


def test_databases_are_created_once_dropped_with_their_sessions_and_names_checked(postgres: PostgresServer) -> None:
    ep = postgres.endpoints
    assert ep is not None
    postgres.create_database("scratch_db")
    postgres.create_database("scratch_db")  # a no-op the second time
    conn = psycopg.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.password, dbname="scratch_db")
    try:
        postgres.drop_database("scratch_db")  # cuts the open session
        assert postgres.psql("SELECT count(*) FROM pg_database WHERE datname = 'scratch_db'").strip() == "0"
    finally:
        conn.close()
    for bad in ("Bad", "x;drop", "1abc", ""):
        with pytest.raises(StackError, match="database name"):
            postgres.create_database(bad)


def test_a_restart_keeps_the_data_and_a_stop_cuts_open_sessions(pg_dir: Path) -> None:
    server = PostgresServer(pg_dir, database="kept")
    with server as ep:
        server.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (42)", database="kept")
        first_port = ep.port
        # An idle session left open (a hub's pool): the fast shutdown must not wait for it.
        idle = psycopg.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.password, dbname="kept")
        pid = server.pid
        assert pid is not None
    assert _wait_gone(pid)
    idle.close()
    assert "fast shutdown request" in (pg_dir / "postgres.log").read_text()
    with server as ep2:
        assert server.psql("SELECT v FROM t", database="kept").strip() == "42"
        assert ep2.password == ep.password
        assert ep2.port > 0
    assert first_port > 0


def test_an_unreachable_state_folder_is_refused_naming_the_folder(pg_dir: Path) -> None:
    user = run_as_user()
    if user is None:
        pytest.skip("not root: PostgreSQL runs as ourselves, every folder we own is reachable")
    closed = pg_dir / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(StackError, match=rf"cannot enter {closed} \(mode 700\)"):
        check_reachable(closed / "state" / "postgres", user)
    with pytest.raises(StackError, match="cannot enter"):
        PostgresServer(closed / "state").start()


@pytest.mark.slow
def test_a_killed_runner_takes_its_postgres_along(pg_dir: Path) -> None:
    """The runner is SIGKILLed (no clean-up): the parent-death signal, set after the switch to the unprivileged
    user (a switch clears it, prctl(2)), still stops the server."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from ioc.stack import PostgresServer
        server = PostgresServer(Path({str(pg_dir)!r}))
        server.start()
        print(server.pid, flush=True)
        time.sleep(600)
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout is not None
        line = runner.stdout.readline()
        assert line.strip().isdigit(), f"runner printed {line!r}"
        pid = int(line)
        assert not _gone(pid)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        assert _wait_gone(pid), f"postgres (pid {pid}) outlived its killed runner"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if runner.stdout is not None:
            runner.stdout.close()
