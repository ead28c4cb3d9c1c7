"""``ioc sim``: device simulators for tests, demos and bench work without hardware.

``ioc sim modbus --profile ID [--profile ID ...] [--host 127.0.0.1] [--port N] [--duration S]`` serves one
Modbus TCP unit per profile (unit ids 1..n, in order). As soon as it listens it prints one JSON line on stdout,
``{"host": ..., "port": ..., "units": [{"unit_id": 1, "profile": ...}, ...]}``, then serves until SIGINT,
SIGTERM or ``--duration`` seconds. Logs go to stderr; stdout carries only that line.

``ioc sim ntcip [--host 127.0.0.1] [--port N] [--community C] [--write-community C] [--duration S]`` serves one
simulated NTCIP 1203 sign over SNMPv2c (UDP) and prints ``{"host": ..., "port": ..., "community": ...,
"write_community": ...}`` the same way.

``ioc sim city --sites N --out DIR [--cameras-per-site N] [--no-rtsp] [--broker-host H] [--broker-port P]`` starts
N sites of sensors, signs and cameras (:mod:`devices.sim.city`), writes each gateway's edge config into DIR and
prints ``{"host": ..., "rtsp": ..., "sites": [{"site", "gateway", "district", "devices", "config", ...}]}``.

``ioc sim camera [--count N] [--host 127.0.0.1] [--username U] [--password P] [--no-auth] [--no-rtsp]
[--cvlc PATH] [--ffmpeg PATH] [--picture CAMERA=PICTURE ...] [--commands] [--duration S]`` serves N simulated
cameras: an ONVIF device service each and, where VLC and ffmpeg are installed, one RTSP server with a stream per
camera. It prints ``{"host": ..., "rtsp": {"available": ..., "urls"|"reason": ...}, "cameras": [{"name",
"onvif", "rtsp_url", "options"}, ...]}``, where ``options`` are the camera driver's options for an edge config
device entry. The image faults (:mod:`devices.sim.camera_pictures`): ``--picture cam-2=black`` starts a camera
with one; with ``--commands``, lines on stdin change them while it runs, ``picture cam-2 covered`` (``good``
brings the picture back), each answered by a log line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path

from common.tasks import cancel_and_wait
from devices.errors import DeviceConfigError
from devices.profile import available_profiles
from devices.sim.camera_pictures import Picture
from devices.sim.city import SimulatedCity
from devices.sim.modbus import ModbusSimulator
from devices.sim.ntcip import NtcipSimulator
from devices.sim.onvif import SimulatedCameras

log = logging.getLogger("devices.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="simulator", required=True, metavar="SIMULATOR")
    modbus = sub.add_parser(
        "modbus",
        help="serve simulated Modbus TCP devices, one unit per profile",
        description="Serve one Modbus TCP unit per --profile (unit ids 1..n in order). Prints one JSON line with "
        "the bound host, port and units as soon as it listens.",
    )
    modbus.add_argument(
        "--profile",
        dest="profiles",
        action="append",
        required=True,
        metavar="ID",
        help=f"profile id or YAML path; repeat for more units (shipped: {', '.join(available_profiles())})",
    )
    modbus.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    modbus.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default 0)")
    modbus.add_argument("--duration", type=float, default=None, metavar="S", help="stop by itself after S seconds")
    modbus.add_argument("--update-interval", type=float, default=1.0, metavar="S", help="value updates (default 1 s)")
    modbus.add_argument("--seed", type=int, default=None, help="seed of the random walks (repeatable runs)")

    ntcip = sub.add_parser(
        "ntcip",
        help="serve a simulated NTCIP 1203 sign (SNMPv2c over UDP)",
        description="Serve one simulated variable message sign speaking NTCIP 1203 over SNMPv2c. Prints one JSON "
        "line with the bound host, port and communities as soon as it listens.",
    )
    ntcip.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ntcip.add_argument("--port", type=int, default=0, help="UDP port; 0 picks a free one (default 0)")
    ntcip.add_argument("--community", default="public", help="read community (default public)")
    ntcip.add_argument("--write-community", default="administrator", help="write community (default administrator)")
    ntcip.add_argument("--duration", type=float, default=None, metavar="S", help="stop by itself after S seconds")
    ntcip.add_argument("--update-interval", type=float, default=1.0, metavar="S", help="value updates (default 1 s)")
    ntcip.add_argument("--seed", type=int, default=None, help="seed of the noise (repeatable runs)")
    _add_camera_arguments(sub)
    _add_city_arguments(sub)


def _add_city_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    city = sub.add_parser(
        "city",
        help="serve a simulated city: N sites of sensors, signs and cameras, and their edge configs",
        description="Start N sites' simulators (Modbus sensors, NTCIP signs, ONVIF/RTSP cameras) in this process, "
        "write each site's edge config to --out, print one JSON line with the sites, endpoints and config files.",
    )
    city.add_argument("--sites", type=int, default=3, help="number of sites, 1..100 (default 3)")
    city.add_argument("--out", type=Path, required=True, help="folder for the edge configs (created)")
    city.add_argument("--host", default="127.0.0.1", help="address the simulators listen on (default 127.0.0.1)")
    city.add_argument("--cameras-per-site", type=int, default=2, help="cameras per site, 0..10 (default 2)")
    city.add_argument("--no-rtsp", action="store_true", help="cameras without streams (no VLC)")
    city.add_argument("--broker-host", default="127.0.0.1", help="MQTT broker in the edge configs")
    city.add_argument("--broker-port", type=int, default=1883, help="MQTT port in the edge configs (default 1883)")
    city.add_argument("--seed", type=int, default=None, help="seed of the simulated values (repeatable runs)")
    city.add_argument("--duration", type=float, default=None, metavar="S", help="stop by itself after S seconds")


def _add_camera_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    camera = sub.add_parser(
        "camera",
        help="serve simulated IP cameras (ONVIF device service, RTSP stream from VLC)",
        description="Serve --count cameras: an ONVIF device service each (its own port) and, when VLC and ffmpeg "
        "are installed, one RTSP server with a looping test clip per camera. Prints one JSON line with the "
        "endpoints and each camera's driver options as soon as all listen.",
    )
    camera.add_argument("--count", type=int, default=1, help="number of cameras, 1..100 (default 1)")
    camera.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    camera.add_argument("--username", default="admin", help="ONVIF user (default admin)")
    camera.add_argument("--password", default="admin", help="ONVIF password (default admin)")
    camera.add_argument("--no-auth", action="store_true", help="answer GetDeviceInformation without credentials")
    camera.add_argument("--no-rtsp", action="store_true", help="serve no streams (ONVIF only)")
    camera.add_argument("--cvlc", default="cvlc", help="VLC's cvlc to run as the RTSP server (default: on PATH)")
    camera.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg to make the clip with (default: on PATH)")
    pictures = ", ".join(p.value for p in Picture)
    camera.add_argument(
        "--picture",
        action="append",
        default=[],
        metavar="CAMERA=PICTURE",
        help=f"start CAMERA (cam-1...) showing PICTURE: {pictures} (repeatable)",
    )
    camera.add_argument(
        "--commands",
        action="store_true",
        help="read commands on stdin while serving, one a line: 'picture CAMERA PICTURE'",
    )
    camera.add_argument("--duration", type=float, default=None, metavar="S", help="stop by itself after S seconds")


def main(args: argparse.Namespace) -> int:
    serve = {"modbus": _serve_modbus, "ntcip": _serve_ntcip, "camera": _serve_camera, "city": _serve_city}.get(
        args.simulator
    )
    if serve is None:
        log.error("unknown simulator %r", args.simulator)
        return 2
    try:
        return asyncio.run(serve(args))
    except (DeviceConfigError, ValueError) as exc:
        # A bad profile or option is the operator's to fix: the message names it, a traceback would not help.
        sys.stderr.write(f"ioc sim {args.simulator}: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"ioc sim {args.simulator}: {exc}\n")
        return 1


async def _serve_until_stopped(
    sim: ModbusSimulator | NtcipSimulator | SimulatedCameras | SimulatedCity, duration: float | None
) -> None:
    """Print the simulator's JSON line, then serve until SIGINT, SIGTERM or ``duration``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        # The parent (ioc demo, a test) reads this line to learn the port: write it at once, and only it.
        sys.stdout.write(json.dumps(sim.describe()) + "\n")
        sys.stdout.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _serve_ntcip(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise DeviceConfigError(f"--port must be 0..65535, not {args.port}")
    sim = NtcipSimulator(
        host=args.host,
        port=args.port,
        community=args.community,
        write_community=args.write_community,
        update_interval_s=args.update_interval,
        seed=args.seed,
    )
    async with sim:
        await _serve_until_stopped(sim, args.duration)
    log.info("NTCIP simulator stopped")
    return 0


async def _serve_modbus(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise DeviceConfigError(f"--port must be 0..65535, not {args.port}")
    sim = ModbusSimulator(
        args.profiles,
        host=args.host,
        port=args.port,
        update_interval_s=args.update_interval,
        seed=args.seed,
    )
    async with sim:
        await _serve_until_stopped(sim, args.duration)
    log.info("Modbus simulator stopped")
    return 0


async def _serve_camera(args: argparse.Namespace) -> int:
    pictures = [_picture_arg(text, "--picture") for text in args.picture]
    cameras = SimulatedCameras(
        args.count,
        host=args.host,
        username=args.username,
        password=args.password,
        auth_required=not args.no_auth,
        rtsp=not args.no_rtsp,
        cvlc=args.cvlc,
        ffmpeg=args.ffmpeg,
    )
    names = {camera.name for camera in cameras.cameras}
    for name, _ in pictures:
        if name not in names:
            raise DeviceConfigError(f"--picture: no camera {name!r} (cameras: {', '.join(sorted(names))})")
    async with cameras:
        if pictures and (cameras.rtsp is None or not cameras.rtsp.running):
            raise DeviceConfigError(f"--picture needs the RTSP server: {cameras.rtsp_reason}")
        for name, picture in pictures:
            assert cameras.rtsp is not None
            await cameras.rtsp.set_picture(name, picture)
        commands = asyncio.create_task(_camera_commands(cameras)) if args.commands else None
        try:
            await _serve_until_stopped(cameras, args.duration)
        finally:
            if commands is not None:
                await cancel_and_wait([commands])
                if commands.done() and not commands.cancelled():
                    commands.result()  # a command reader that failed (not a bad line: those are logged) is an error
    log.info("camera simulator stopped")
    return 0


def _picture_arg(text: str, what: str) -> tuple[str, Picture]:
    """``cam-1=black`` -> ``("cam-1", Picture.BLACK)``; :class:`DeviceConfigError` naming ``what`` was wrong."""
    name, sep, value = text.partition("=")
    try:
        picture = Picture(value)
    except ValueError:
        picture = None
    if not sep or not name or picture is None:
        known = ", ".join(p.value for p in Picture)
        raise DeviceConfigError(f"{what} {text!r}: CAMERA=PICTURE, PICTURE one of {known}")
    return name, picture


async def _camera_commands(cameras: SimulatedCameras) -> None:
    """Run ``picture CAMERA PICTURE`` lines from stdin until it ends (a bad line is logged, not fatal)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except ValueError as exc:  # a regular file: asyncio reads pipes, sockets and terminals only
        log.warning("no commands: stdin cannot be read as a stream (%s)", exc)
        return
    try:
        while line := await reader.readline():
            words = line.decode(errors="replace").split()
            if words:
                await _camera_command(cameras, words)
    finally:
        transport.close()


async def _camera_command(cameras: SimulatedCameras, words: list[str]) -> None:
    command = " ".join(words)
    if len(words) != 3 or words[0] != "picture":
        log.warning("command %r refused: commands are 'picture CAMERA PICTURE'", command)
        return
    if cameras.rtsp is None or not cameras.rtsp.running:
        log.warning("command %r refused: no RTSP server (%s)", command, cameras.rtsp_reason)
        return
    try:
        name, picture = _picture_arg(f"{words[1]}={words[2]}", "picture")
        await cameras.rtsp.set_picture(name, picture)
    except (DeviceConfigError, RuntimeError) as exc:
        log.warning("command %r refused: %s", command, exc)
    except KeyError:
        log.warning("command %r refused: no camera %r", command, words[1])
    else:
        log.info("camera %s now shows %s", name, picture.value)


async def _serve_city(args: argparse.Namespace) -> int:
    if not 1 <= args.broker_port <= 65535:
        raise DeviceConfigError(f"--broker-port must be 1..65535, not {args.broker_port}")
    city = SimulatedCity(
        args.sites, host=args.host, cameras_per_site=args.cameras_per_site, rtsp=not args.no_rtsp, seed=args.seed
    )
    async with city:
        city.write_configs(args.out, broker_host=args.broker_host, broker_port=args.broker_port)
        await _serve_until_stopped(city, args.duration)
    log.info("simulated city stopped")
    return 0
