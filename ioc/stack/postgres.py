"""PostgreSQL (Debian 12: 15) for the local stack: the hub's relational database when several hubs share one.

::

    with PostgresServer(state_dir) as pg:
        url = pg.url()                     # postgresql+psycopg://ioc:...@127.0.0.1:PORT/ioc
        pg.create_database("test_1234")

``initdb`` makes a cluster in ``state_dir/postgres/data`` (once; kept across starts, with its password in
``state_dir/postgres.password``, 0600), then ``postgres`` listens on a free loopback port, its unix socket in
``state_dir/postgres``. The superuser is ``ioc`` with a generated password (SCRAM on TCP and on the socket).

PostgreSQL refuses to run as root. As root, initdb and postgres run as the ``postgres`` system user (the Debian
package creates it; else ``nobody``): the folder is chowned to that user, so every folder above ``state_dir``
must be enterable by it (``/tmp/pytest-of-root`` is not; the test fixture uses a folder of its own under
``/tmp``). The server dies with the runner (``PR_SET_PDEATHSIG``) and :meth:`PostgresServer.stop` stops it for
sure: a fast shutdown (SIGINT: open sessions are cut), then SIGTERM and SIGKILL (:class:`ChildProcess`).

By default the cluster trades durability for speed (``fsync``, ``full_page_writes`` and ``synchronous_commit``
off: a power cut may lose or corrupt it; a crash of postgres itself does not): it is a local test and demo
database. ``durable=True`` keeps PostgreSQL's defaults.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import secrets
import signal
import subprocess
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import quote

from ioc.stack.errors import StackError
from ioc.stack.packages import find_lib_file, install_command
from ioc.stack.process import DEFAULT_STOP_TIMEOUT_S, ChildProcess
from ioc.stack.runner import DEFAULT_READY_TIMEOUT_S, HOST, free_ports

log = logging.getLogger(__name__)

#: The users PostgreSQL runs as when we are root, in order of preference.
UNPRIVILEGED_USERS: Final = ("postgres", "nobody")
#: The cluster's superuser, the hub's account in the local stack.
SUPERUSER: Final = "ioc"
#: How long ``initdb`` may take (a few seconds on two cores).
INITDB_TIMEOUT_S: Final = 120.0
#: How long one ``psql`` or ``pg_isready`` call may take.
CLIENT_TIMEOUT_S: Final = 15.0
#: How long a fast shutdown (SIGINT) may take before SIGTERM, then SIGKILL.
FAST_SHUTDOWN_TIMEOUT_S: Final = 10.0
#: Database names the helpers accept (no quoting games): PostgreSQL's plain identifiers.
_DB_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_START_ATTEMPTS: Final = 3


def pg_binary(name: str) -> Path:
    """``/usr/lib/postgresql/<newest>/bin/<name>``; :class:`StackError` naming the package when missing."""
    found = find_lib_file(f"postgresql/*/bin/{name}")
    if found is None:
        raise StackError(
            f"PostgreSQL's {name} not found (Debian package postgresql); run `ioc stack ensure` as root or: "
            f"{install_command(['postgresql'])}"
        )
    return found


def postgres_available() -> str | None:
    """None when the PostgreSQL server binaries are here, else why not (for a skip or an "unavailable")."""
    try:
        for name in ("initdb", "postgres", "pg_isready", "psql"):
            pg_binary(name)
    except StackError as exc:
        return str(exc)
    return None


def run_as_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: None (ourselves) unless we are root, then ``postgres`` or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise StackError(f"PostgreSQL refuses to run as root and none of the users {UNPRIVILEGED_USERS} exists")


def check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """:class:`StackError` unless ``user`` may enter every folder above ``path`` (mode bits; ACLs ignored)."""
    groups = {user.pw_gid} | set(os.getgrouplist(user.pw_name, user.pw_gid))
    for folder in reversed(path.parents):
        st = folder.stat()
        if st.st_uid == user.pw_uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            raise StackError(
                f"PostgreSQL runs as user {user.pw_name!r} (it refuses root), who cannot enter {folder} "
                f"(mode {st.st_mode & 0o777:o}); put the state folder {path.parent} somewhere it can reach"
            )


@dataclass(frozen=True)
class PostgresEndpoints:
    """Where a running :class:`PostgresServer` listens, and its superuser."""

    host: str
    port: int
    socket_dir: Path
    database: str
    user: str
    password: str = field(repr=False)

    def url(self, database: str | None = None, driver: str = "psycopg") -> str:
        """A SQLAlchemy URL (``postgresql+psycopg://ioc:PW@127.0.0.1:PORT/DB``), as the hub's ``registry.url``."""
        db = database or self.database
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"postgresql+{driver}://{credentials}@{self.host}:{self.port}/{db}"


class PostgresServer:
    """A sync context manager running one PostgreSQL cluster under ``state_dir``; yields :class:`PostgresEndpoints`.

    ``database`` is created on start when missing. Logs go to ``state_dir/postgres.log``. ``ready_timeout``:
    how long the server has to accept connections; ``stop_timeout``: how long SIGTERM may take before SIGKILL.
    """

    def __init__(
        self,
        state_dir: Path,
        database: str = "ioc",
        *,
        durable: bool = False,
        ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        _check_name(database)
        self.state_dir = Path(state_dir).resolve()
        self.base = self.state_dir / "postgres"
        self.data_dir = self.base / "data"
        self.log_path = self.state_dir / "postgres.log"
        self.database = database
        self.durable = durable
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._proc: ChildProcess | None = None
        self.endpoints: PostgresEndpoints | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> PostgresEndpoints:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> PostgresEndpoints:
        """initdb when needed, start the server, wait until it accepts logins, create the database."""
        if self.endpoints is not None:
            raise StackError(f"the PostgreSQL server in {self.base} is already running")
        reason = postgres_available()
        if reason is not None:
            raise StackError(reason)
        user = run_as_user()
        try:
            # As root the server runs as another user, who must be able to pass through the state folder.
            self.state_dir.mkdir(mode=0o700 if user is None else 0o711, parents=True, exist_ok=True)
            if user is not None:
                check_reachable(self.base, user)
            password = self._init_cluster(user)
        except OSError as exc:
            raise StackError(f"cannot prepare PostgreSQL's folder {self.base}: {exc}") from exc
        try:
            port = self._start_server(user)
            ep = PostgresEndpoints(HOST, port, self.base, self.database, SUPERUSER, password)
            self.endpoints = ep
            self.create_database(self.database)
        except BaseException:
            self.stop()
            raise
        log.info("postgres up (pid %d) on %s:%d, database %s, data in %s", self.pid, HOST, port, ep.database, self.base)
        return ep

    def check_alive(self) -> None:
        """:class:`StackError` (with the log's tail) if the running server has exited."""
        if self._proc is not None and not self._proc.running():
            raise self._proc.failure("exited while the stack was running")

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGTERM and SIGKILL if it lingers. Idempotent; the data stays."""
        proc, self._proc = self._proc, None
        self.endpoints = None
        if proc is None:
            return
        if proc.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            deadline = time.monotonic() + FAST_SHUTDOWN_TIMEOUT_S
            while proc.running() and time.monotonic() < deadline:
                time.sleep(0.05)
        proc.stop(self.stop_timeout)
        log.info("postgres (pid %d) in %s stopped", proc.pid, self.base)

    def kill(self) -> None:
        """SIGKILL the server (a crash; its backends notice and exit). The data stays."""
        proc, self._proc = self._proc, None
        self.endpoints = None
        if proc is not None:
            proc.kill()

    # ------------------------------------------------------------------------------------------ databases

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE`` unless it exists (owned by the superuser)."""
        _check_name(name)
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip()  # noqa: S608 - checked name
        if exists != "1":
            self.psql(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        """``DROP DATABASE IF EXISTS ... WITH (FORCE)``: sessions still connected to it are cut."""
        _check_name(name)
        if name == "postgres":
            raise StackError("refusing to drop the maintenance database 'postgres'")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, sql: str, database: str = "postgres", timeout: float = CLIENT_TIMEOUT_S) -> str:
        """Run one statement with ``psql`` over TCP as the superuser; its unaligned output, or :class:`StackError`."""
        ep = self._running()
        argv = [str(pg_binary("psql")), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", ep.host, "-p", str(ep.port), "-U", ep.user, "-d", database, "-c", sql]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PGPASSWORD": ep.password}
        env["PGCONNECT_TIMEOUT"] = str(max(1, int(timeout)))
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv; names checked by _check_name
                argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"psql {sql!r} on {ep.host}:{ep.port} did not finish within {timeout:.0f} s") from exc
        if done.returncode != 0:
            raise StackError(f"psql {sql!r} failed: {done.stderr.decode(errors='replace').strip()[:500]}")
        return done.stdout.decode(errors="replace")

    # ------------------------------------------------------------------------------------------ internals

    def _running(self) -> PostgresEndpoints:
        if self.endpoints is None:
            raise StackError(f"the PostgreSQL server in {self.base} is not running")
        return self.endpoints

    def _init_cluster(self, user: pwd.struct_passwd | None) -> str:
        """Run initdb unless the cluster exists; return the superuser's password (kept beside, 0600)."""
        password_file = self.state_dir / "postgres.password"
        self.base.mkdir(mode=0o700, exist_ok=True)
        self.base.chmod(0o700)
        if user is not None:
            os.chown(self.base, user.pw_uid, user.pw_gid)
        if (self.data_dir / "PG_VERSION").is_file():
            try:
                return password_file.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                raise StackError(
                    f"{self.data_dir} holds a cluster but {password_file} is gone; delete {self.base} to start afresh"
                ) from None
        password = secrets.token_urlsafe(24)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password + "\n")
        # initdb reads the password from a file it can open: one in its own folder, gone once it is done.
        pwfile = self.base / "initdb.pw"
        pwfile.write_text(password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        argv = [str(pg_binary("initdb")), "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}"]
        argv += ["--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-instructions"]
        if not self.durable:
            argv.append("--no-sync")
        try:
            done = subprocess.run(  # noqa: S603 - argv built from the resolved binary and our own paths
                argv,
                env=_child_env(),
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=INITDB_TIMEOUT_S,
                check=False,
                user=user.pw_uid if user is not None else None,
                group=user.pw_gid if user is not None else None,
                extra_groups=[] if user is not None else None,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"initdb into {self.data_dir} did not finish within {INITDB_TIMEOUT_S:.0f} s") from exc
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()[-20:]
            raise StackError(f"initdb into {self.data_dir} failed with status {done.returncode}:\n" + "\n".join(out))
        log.info("initdb: new PostgreSQL cluster in %s (running as %s)", self.data_dir, _who(user))
        return password

    def _server_argv(self, port: int) -> list[str]:
        settings = {
            "listen_addresses": HOST,
            "port": str(port),
            "unix_socket_directories": str(self.base),
            "max_connections": "100",
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        if not self.durable:
            settings |= {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}
        argv = [str(pg_binary("postgres")), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _start_server(self, user: pwd.struct_passwd | None) -> int:
        run_as = (user.pw_uid, user.pw_gid) if user is not None else None
        for attempt in range(1, _START_ATTEMPTS + 1):
            (port,) = free_ports(1)
            proc = ChildProcess("postgres", self._server_argv(port), self.log_path, cwd=self.base, user=run_as)
            self._proc = proc
            try:
                self._wait_ready(proc, port)
            except StackError:
                if attempt < _START_ATTEMPTS and not proc.running() and "already in use" in proc.log_tail().lower():
                    log.info("port %d was taken before postgres bound it; trying another", port)
                    proc.stop(self.stop_timeout)
                    continue
                raise
            return port
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_ready(self, proc: ChildProcess, port: int) -> None:
        """Until ``ready_timeout``: ``pg_isready`` says the server accepts connections."""
        deadline = time.monotonic() + self.ready_timeout
        argv = [str(pg_binary("pg_isready")), "-q", "-h", HOST, "-p", str(port), "-t", "1"]
        last = "no answer"
        while time.monotonic() < deadline:
            if not proc.running():
                raise proc.failure("exited during start-up")
            try:
                done = subprocess.run(  # noqa: S603 - fixed argv
                    argv, env=_child_env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=5, check=False
                )
            except subprocess.TimeoutExpired:
                last = "pg_isready timed out"
            else:
                if done.returncode == 0:
                    return
                last = f"pg_isready status {done.returncode}"
            time.sleep(0.1)
        raise proc.failure(f"did not accept connections on {HOST}:{port} within {self.ready_timeout:.0f} s ({last})")


def _check_name(name: str) -> None:
    if not _DB_NAME.fullmatch(name):
        raise StackError(f"database name {name!r}: use 1 to 63 of a-z, 0-9 and _, not starting with a digit")


def _child_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _who(user: pwd.struct_passwd | None) -> str:
    return user.pw_name if user is not None else "the current user"
