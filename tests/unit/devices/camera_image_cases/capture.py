"""Capture the golden cases of this folder from the real thing: ffmpeg reading the RTSP simulator.

``.venv/bin/python tests/unit/devices/camera_image_cases/capture.py [CASE ...]`` starts the RTSP simulator
(VLC) with one stream per picture, runs the camera driver's image-check command (``image_filters.ffmpeg_argv``,
the default thresholds) on each case's stream (all cases, or those named) and writes the case's ``stdout.txt``
(what ffmpeg's ``metadata`` filter printed), ``stderr.txt`` (its errors) and ``expected.json`` (the decoding
errors, and without any the measures and verdicts the driver takes from it, to be read and checked by a person
before committing: the unit test then pins them). ``reference.png`` is the frame the ``good`` case
kept (the second output of the command), used as the reference view of the cases that compare with one.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

from devices.drivers.camera.image_filters import (  # noqa: E402 - after the path is set
    FilterPlan,
    decoding_errors,
    ffmpeg_argv,
    measure,
    parse_metadata,
    png_size,
)
from devices.drivers.camera.image_profile import ImageCheckProfile, Mode, judge  # noqa: E402
from devices.sim.camera_pictures import Picture  # noqa: E402
from devices.sim.rtsp import RtspSimulator  # noqa: E402

HERE = Path(__file__).parent
THRESHOLDS = ImageCheckProfile()
PLAN = FilterPlan(THRESHOLDS.black_luma_max, THRESHOLDS.frozen_noise_db, sample_frames=15)
#: case folder -> (picture shown, compared with the reference view of this mode or not, extra input options)
CASES: dict[str, tuple[Picture, Mode | None, list[str]]] = {
    "good": (Picture.GOOD, None, []),
    "good-with-reference": (Picture.GOOD, Mode.DAY, []),
    "black": (Picture.BLACK, None, []),
    "frozen": (Picture.FROZEN, Mode.DAY, []),
    "blurred": (Picture.BLURRED, Mode.DAY, []),
    "covered": (Picture.COVERED, Mode.DAY, []),
    "moved": (Picture.MOVED, Mode.DAY, []),
    "night": (Picture.NIGHT, None, []),
    "night-with-day-reference": (Picture.NIGHT, Mode.DAY, []),
    # Lost packets, as over a lossy link: a receive buffer too small for a keyframe's burst of RTP packets.
    "lost-packets": (Picture.FROZEN, None, ["-buffer_size", "4096"]),
}


def run(url: str, frame_out: Path, reference: Path | None, extra: list[str]) -> tuple[str, str]:
    """ffmpeg's stdout and stderr for the driver's command on ``url`` (``extra`` before its ``-i``)."""
    ref = None
    if reference is not None:
        size = png_size(reference.read_bytes())
        assert size is not None
        ref = (reference, size)
    argv = ffmpeg_argv(
        "ffmpeg",
        url,
        transport="udp",
        io_timeout_s=10,
        plan=PLAN,
        frame_out=frame_out,
        reference=ref,
    )
    at = argv.index("-i")
    argv[at:at] = extra
    done = subprocess.run(argv, capture_output=True, check=True, timeout=30, text=True)
    return done.stdout, done.stderr


def expectation(case: str, stdout: str, stderr: str) -> dict[str, object]:
    picture, mode, _ = CASES[case]
    expected: dict[str, object] = {
        "picture": picture.value,
        "reference_mode": mode.value if mode else None,
        "decoding_errors": len(decoding_errors(stderr)),
    }
    if not expected["decoding_errors"]:
        measures = measure(parse_metadata(stdout), min_frames=8)
        judgement = judge(measures, THRESHOLDS, mode)
        expected["measures"] = {k: getattr(measures, k) for k in measures.__slots__}
        expected["mode"] = judgement.mode.value
        expected["verdicts"] = {p.value: v.value for p, v in judgement.verdicts.items()}
    return expected


async def main(cases: list[str]) -> None:
    names = {picture: f"cam-{picture.value}" for picture in Picture}
    async with RtspSimulator(list(names.values())) as sim:
        for picture, name in names.items():
            if picture is not Picture.GOOD:
                await sim.set_picture(name, picture)
        await asyncio.sleep(2)  # every stream plays its new clip
        with tempfile.TemporaryDirectory() as tmp:
            frame = Path(tmp) / "frame.png"
            if "good" in cases:
                run(sim.url(names[Picture.GOOD]), frame, None, [])
                shutil.copyfile(frame, HERE / "reference.png")
            for case in cases:
                picture, mode, extra = CASES[case]
                stdout, stderr = run(sim.url(names[picture]), frame, HERE / "reference.png" if mode else None, extra)
                folder = HERE / case
                folder.mkdir(exist_ok=True)
                (folder / "stdout.txt").write_text(stdout, encoding="utf-8")
                (folder / "stderr.txt").write_text(stderr, encoding="utf-8")
                expected = expectation(case, stdout, stderr)
                (folder / "expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
                print(case, json.dumps(expected.get("verdicts", expected["decoding_errors"])), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or list(CASES)))
