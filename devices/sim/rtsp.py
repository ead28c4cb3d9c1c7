"""RTSP streams from a real RTSP server: Debian's VLC looping a clip made with ffmpeg.

``async with RtspSimulator(["cam-1", "cam-2"]) as sim:`` makes a short H.264 test clip with ``ffmpeg``
(``testsrc2``, the size, rate and bitrate of :class:`ClipSpec`), writes a VLM configuration with one repeating
broadcast per stream name, and starts one ``cvlc`` serving them all over RTSP (RTP over UDP; VLC's RTSP
server does not offer TCP interleaving) on one port: ``sim.url("cam-1")``. Started means every stream
answers ``DESCRIBE`` with ``200``.

VLC refuses to run as root, so as root it runs as ``nobody`` (the clip and its configuration sit in a
world-readable temporary folder). It is started with ``PR_SET_PDEATHSIG`` so that it dies with the process
that started it, even one killed with SIGKILL (prctl(2): the signal follows the death of the starting thread;
start it from the main thread or a long-lived event loop thread).

``cvlc`` and ``ffmpeg`` are optional on a host: without them :meth:`start` raises :class:`RtspUnavailable`
with the reason (``sim.unavailable_reason``), and ``ioc sim camera`` reports it instead of a stream URL.
Knobs: :meth:`stop` and :meth:`start` again (same port: the camera's RTSP server goes away and comes back),
:meth:`kill` (SIGKILL, a crash), per stream :meth:`freeze`/:meth:`unfreeze` (RTSP answers, no video flows: a
hung encoder) and :meth:`stop_stream`/:meth:`start_stream` (that stream answers 404), and the image faults:
:meth:`set_picture` switches a stream to another clip (black, frozen, blurred, covered, moved, or an infrared
night picture: :mod:`devices.sim.camera_pictures`), made with ffmpeg the first time it is asked for and kept
across a restart of the server. The per-stream knobs are VLM commands sent through VLC's telnet interface, on
loopback with a random password.

The clip repeats with VLC's ``input-repeat`` rather than VLM's ``loop``: ``loop`` restarts the input at the
clip's end, and VLC's RTP output then ends every client's session with an RTCP BYE (RFC 3550, 6.6), so a client
reading a few seconds of frames (the camera driver's image checks) was cut off at each end of the clip;
``input-repeat`` rewinds the input within the session (the timestamps step back by about a second, which
clients take in their stride).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from common.child_process import die_with_parent
from devices.sim.camera_pictures import Picture, lavfi_source

log = logging.getLogger(__name__)

#: The user VLC runs as when we are root (VLC exits at once when started as root).
UNPRIVILEGED_USER: Final = "nobody"
#: How long making the clip may take.
CLIP_TIMEOUT_S: Final = 60.0
#: How long VLC has to serve every stream.
DEFAULT_START_TIMEOUT_S: Final = 20.0
#: How long stopping waits after SIGTERM before SIGKILL.
STOP_TIMEOUT_S: Final = 5.0
#: Stream names end up in a URL path and in VLM commands: keep them plain.
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
#: VLC's telnet control interface listens here only, whatever address the streams use.
CONTROL_HOST: Final = "127.0.0.1"
#: How long one control command may take.
CONTROL_TIMEOUT_S: Final = 5.0
#: How many times a stream's clip repeats (VLC's ``input-repeat``): see the module docstring.
REPEATS: Final = 65535


class RtspUnavailable(Exception):
    """The RTSP simulator cannot run here (no VLC, no ffmpeg, VLC failed to start); the message says why."""


@dataclass(frozen=True, slots=True)
class ClipSpec:
    """The test clip: what a probe of the stream should find (codec h264, this size and frame rate)."""

    width: int = 320
    height: int = 240
    fps: int = 15
    seconds: int = 4
    bitrate_kbps: int = 300

    def ffmpeg_argv(self, ffmpeg: str, out: Path, picture: Picture = Picture.GOOD) -> list[str]:
        """An H.264 clip of ``picture`` (``good``: ``testsrc2``, a moving test pattern), one keyframe a second,
        no B-frames."""
        return [
            ffmpeg,
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            lavfi_source(picture, self.width, self.height, self.fps),
            "-t",
            str(self.seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            str(self.fps),
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            f"{self.bitrate_kbps}k",
            str(out),
        ]


def find_tool(name: str) -> str | None:
    """``name`` as an absolute path (``/``-containing names are taken as paths), or None."""
    if os.sep in name:
        return name if Path(name).is_file() and os.access(name, os.X_OK) else None
    return shutil.which(name)


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now (VLC needs a number; the race with other programs is accepted)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def rtsp_status(host: str, port: int, name: str, timeout_s: float = 2.0) -> int | None:
    """The status code of ``DESCRIBE rtsp://host:port/name``, or None when nothing answers."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                request = f"DESCRIBE rtsp://{host}:{port}/{name} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
                writer.write(request.encode())
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    parts = line.decode("latin-1").split(" ")
    if len(parts) >= 2 and parts[0].startswith("RTSP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def _check_clip(out: Path, returncode: int | None, stderr: bytes) -> None:
    """Raise :class:`RtspUnavailable` with ffmpeg's last word unless ``out`` was made; make it readable to VLC."""
    if returncode != 0 or not out.exists():
        detail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"status {returncode}"]
        raise RtspUnavailable(f"RTSP server unavailable: ffmpeg could not make the clip: {detail[0]}")
    out.chmod(0o644)


class RtspSimulator:
    """VLC serving one looping clip under several stream names (see the module docstring)."""

    def __init__(
        self,
        streams: Sequence[str] = ("cam-1",),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clip: ClipSpec | None = None,
        cvlc: str = "cvlc",
        ffmpeg: str = "ffmpeg",
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        if not streams:
            raise ValueError("at least one stream name")
        for name in streams:
            if not name or not set(name) <= _NAME_CHARS:
                raise ValueError(f"stream name {name!r}: letters, digits, '-' and '_' only")
        if len(set(streams)) != len(streams):
            raise ValueError("stream names must be unique")
        self.streams = tuple(streams)
        self.host = host
        self.port = port
        self.clip = clip or ClipSpec()
        self.cvlc = cvlc
        self.ffmpeg = ffmpeg
        self.start_timeout_s = start_timeout_s
        self.unavailable_reason = ""
        self._workdir: Path | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log_file: Path | None = None
        self._control_port = 0
        self._control_password = secrets.token_hex(8)
        self.frozen: set[str] = set()
        self.stopped_streams: set[str] = set()
        #: What each stream shows (kept across a restart: a covered lens stays covered).
        self.pictures: dict[str, Picture] = dict.fromkeys(self.streams, Picture.GOOD)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def url(self, name: str) -> str:
        if name not in self.streams:
            raise KeyError(name)
        return f"rtsp://{self.host}:{self.port}/{name}"

    @property
    def clip_path(self) -> Path | None:
        """The clip of the good picture (once made)."""
        return self.picture_path(Picture.GOOD)

    def picture_path(self, picture: Picture) -> Path | None:
        """Where the clip of ``picture`` is (or will be) kept; None before the working folder exists."""
        if self._workdir is None:
            return None
        return self._workdir / ("clip.mp4" if picture is Picture.GOOD else f"clip-{picture.value}.mp4")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def describe(self) -> dict[str, object]:
        """What ``ioc sim camera`` prints: the stream URLs and the clip, or why there is no stream."""
        if self.unavailable_reason:
            return {"available": False, "reason": self.unavailable_reason}
        return {
            "available": True,
            "transport": "udp",
            "urls": {name: self.url(name) for name in self.streams},
            "clip": {
                "codec": "h264",
                "width": self.clip.width,
                "height": self.clip.height,
                "fps": self.clip.fps,
                "bitrate_kbps": self.clip.bitrate_kbps,
            },
        }

    async def start(self) -> None:
        """Make the clip (first time), start VLC, wait until every stream answers. :class:`RtspUnavailable`."""
        if self.running:
            return
        try:
            await self._start()
        except RtspUnavailable as exc:
            self.unavailable_reason = str(exc)
            await self.stop()
            raise
        self.unavailable_reason = ""

    async def _start(self) -> None:
        cvlc = find_tool(self.cvlc)
        if cvlc is None:
            raise RtspUnavailable(
                f"RTSP server unavailable: {self.cvlc!r} not found (Debian packages vlc-bin, vlc-plugin-base)"
            )
        workdir = await self._prepare()
        if not self.port:
            self.port = free_port(self.host)
        conf = workdir / "streams.vlm"
        for picture in set(self.pictures.values()):
            await self._ensure_clip(picture)
        conf.write_text(self._vlm(), encoding="utf-8")
        conf.chmod(0o644)
        self._log_file = workdir / "vlc.log"
        if not self._control_port:
            self._control_port = free_port(CONTROL_HOST)
        argv = [cvlc, "-I", "dummy", "--no-stats", "--rtsp-host", self.host, "--vlm-conf", str(conf)]
        # VLM commands at run time (the freeze/stop knobs) go through VLC's telnet interface, on loopback only.
        argv += ["--extraintf", "telnet", "--telnet-host", CONTROL_HOST, "--telnet-port", str(self._control_port)]
        argv += ["--telnet-password", self._control_password]
        kwargs: dict[str, object] = {}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir / "home"), "LANG": "C"}
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(UNPRIVILEGED_USER)
            except KeyError:
                raise RtspUnavailable(
                    f"RTSP server unavailable: VLC refuses root and there is no user {UNPRIVILEGED_USER!r} to run it as"
                ) from None
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            os.chown(workdir / "home", user.pw_uid, user.pw_gid)
        with self._log_file.open("ab") as log_out:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_out,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=workdir,
                    start_new_session=True,
                    preexec_fn=die_with_parent(os.getpid()),
                    **kwargs,  # type: ignore[arg-type]
                )
            except OSError as exc:
                raise RtspUnavailable(f"RTSP server unavailable: cannot run {cvlc}: {exc.strerror or exc}") from exc
        log.info(
            "VLC (pid %d) serving %d stream(s) on rtsp://%s:%d", self._proc.pid, len(self.streams), self.host, self.port
        )
        await self._wait_ready()

    async def _prepare(self) -> Path:
        """The world-readable working folder with the clip in it (made once)."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="ioc-rtsp-sim-"))
            self._workdir.chmod(0o755)
            (self._workdir / "home").mkdir()
        await self._ensure_clip(Picture.GOOD)
        return self._workdir

    async def _ensure_clip(self, picture: Picture) -> Path:
        """The clip of ``picture``, made now if it was not yet."""
        clip = self.picture_path(picture)
        assert clip is not None, "the working folder is made first"
        if not clip.exists():
            await self._make_clip(clip, picture)
        return clip

    async def _make_clip(self, out: Path, picture: Picture) -> None:
        ffmpeg = find_tool(self.ffmpeg)
        if ffmpeg is None:
            raise RtspUnavailable(
                f"RTSP server unavailable: {self.ffmpeg!r} not found to make the clip (Debian package ffmpeg)"
            )
        proc = await asyncio.create_subprocess_exec(
            *self.clip.ffmpeg_argv(ffmpeg, out, picture),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(CLIP_TIMEOUT_S):
                _, stderr = await proc.communicate()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        _check_clip(out, proc.returncode, stderr)

    def _vlm(self) -> str:
        lines: list[str] = []
        for name in self.streams:
            clip = self.picture_path(self.pictures[name])
            lines += [
                f"new {name} broadcast enabled",
                f"setup {name} input {clip}",
                # 65535 repeats (three days of a 4 s clip): VLC's largest documented use is "-1: for ever",
                # which VLM options do not take; the module docstring says why not ``loop``.
                f"setup {name} option input-repeat={REPEATS}",
                f"setup {name} output #rtp{{sdp=rtsp://{self.host}:{self.port}/{name}}}",
            ]
        lines += [f"control {name} play" for name in self.streams]
        return "\n".join(lines) + "\n"

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        pending = list(self.streams)
        while pending:
            if not self.running:
                raise RtspUnavailable(f"RTSP server unavailable: VLC exited at start; {self._log_tail()}")
            if time.monotonic() > deadline:
                raise RtspUnavailable(
                    f"RTSP server unavailable: streams {', '.join(pending)} not served within "
                    f"{self.start_timeout_s:g} s; {self._log_tail()}"
                )
            if await rtsp_status(self.host, self.port, pending[0], timeout_s=1.0) == 200:
                pending.pop(0)
                continue
            await asyncio.sleep(0.1)

    def _log_tail(self) -> str:
        if self._log_file is None:
            return "no log"
        try:
            lines = self._log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "no log"
        errors = [line for line in lines if " error:" in line or "refuse" in line.lower()]
        return "last VLC errors: " + (" | ".join(errors[-3:]) if errors else "none logged")

    async def stop(self) -> None:
        """SIGTERM VLC (SIGKILL after :data:`STOP_TIMEOUT_S`) and reap it; the clip is kept for a restart."""
        proc, self._proc = self._proc, None
        self.frozen.clear()
        self.stopped_streams.clear()
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def freeze(self, name: str) -> None:
        """The stream stops sending video while RTSP still answers (a hung encoder): a probe then waits in vain."""
        if name not in self.frozen:
            await self._vlm_command(f"control {self._stream(name)} pause")  # VLM's pause toggles
            self.frozen.add(name)

    async def unfreeze(self, name: str) -> None:
        """Video flows again."""
        if name in self.frozen:
            await self._vlm_command(f"control {self._stream(name)} pause")
            self.frozen.discard(name)

    async def set_picture(self, name: str, picture: Picture) -> None:
        """Stream ``name`` shows ``picture`` from now on (its clip is made first if needed, which takes a
        second or two). Clients reading the stream at that moment see it end (VLC restarts the stream's input);
        the next ``DESCRIBE`` gets the new picture. A frozen (paused) stream plays again."""
        self._stream(name)
        clip = await self._ensure_clip(picture)
        for command in (
            f"control {name} stop",
            f"setup {name} inputdel all",
            f"setup {name} input {clip}",
            f"control {name} play",
        ):
            await self._vlm_command(command)
        self.pictures[name] = picture
        self.frozen.discard(name)
        self.stopped_streams.discard(name)

    async def stop_stream(self, name: str) -> None:
        """This stream goes away (RTSP answers 404 for it); the others keep running."""
        await self._vlm_command(f"control {self._stream(name)} stop")
        self.stopped_streams.add(name)
        self.frozen.discard(name)

    async def start_stream(self, name: str) -> None:
        """A stream stopped with :meth:`stop_stream` plays again."""
        await self._vlm_command(f"control {self._stream(name)} play")
        self.stopped_streams.discard(name)

    def _stream(self, name: str) -> str:
        if name not in self.streams:
            raise KeyError(name)
        if not self.running:
            raise RuntimeError("the RTSP server is not running")
        return name

    async def _vlm_command(self, command: str) -> None:
        """Log in to VLC's telnet interface and run one VLM command; :class:`RuntimeError` if VLC does not take it."""
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(CONTROL_HOST, self._control_port)
                try:
                    await reader.readuntil(b"Password: ")
                    writer.write(self._control_password.encode() + b"\n")
                    await reader.readuntil(b"> ")
                    writer.write(command.encode() + b"\n")
                    answer = await reader.readuntil(b"> ")
                finally:
                    writer.close()
                    with contextlib.suppress(ConnectionError):
                        await writer.wait_closed()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise RuntimeError(f"VLC did not take {command!r}: {exc!r}") from exc
        if b"error" in answer.lower() or b"unknown" in answer.lower():
            raise RuntimeError(f"VLC refused {command!r}: {answer.decode(errors='replace').strip()}")
        log.info("VLC: %s", command)

    async def kill(self) -> None:
        """SIGKILL VLC at once (a crashed RTSP server) and reap it."""
        proc, self._proc = self._proc, None
        self.frozen.clear()
        self.stopped_streams.clear()
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()

    async def close(self) -> None:
        """Stop VLC and remove the working folder."""
        await self.stop()
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
