"""The snapshot JPEGs of every picture the RTSP simulator serves, through the camera driver's own image checks with
real ffmpeg: each a whole 320x240 JPEG within the contract's bound; their sizes are docs/cameras.md's figures
(``-s`` prints them):

    .venv/bin/python -m pytest tests/integration/devices/test_camera_snapshot_sizes.py -s -p no:cacheprovider

Not marked ``integration``: no broker or database is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator

import pytest

from devices.drivers.camera import CameraConfig, CameraDriver
from devices.drivers.camera.image_filters import jpeg_size
from devices.profile import load_profile
from devices.sim.camera_pictures import Picture
from devices.sim.rtsp import RtspSimulator
from wire.v1 import MAX_SNAPSHOT_BYTES

pytestmark = pytest.mark.slow

#: Snapshots measured per picture.
SAMPLES = 3
QUALITY = CameraConfig.model_fields["snapshot_quality"].default


@contextlib.asynccontextmanager
async def drivers(sim: RtspSimulator, names: list[str]) -> AsyncIterator[list[CameraDriver]]:
    made = [
        CameraDriver(
            CameraConfig(
                host="127.0.0.1",
                onvif_port=0,
                rtsp_url=sim.url(name),
                rtsp_transport="udp",
                rtsp_sample_packets=2,
                image_check_interval_s=2.0,
                image_confirm_s=2.0,
                image_sample_s=2.0,
                image_timeout_s=8.0,
            ),
            load_profile("camera-onvif-generic"),
        )
        for name in names
    ]
    try:
        for driver in made:
            await driver.open()
        yield made
    finally:
        for driver in made:
            await driver.close()


async def test_every_picture_makes_a_whole_small_jpeg() -> None:
    pictures = list(Picture)
    names = [f"cam-{picture.value}" for picture in pictures]
    sizes: dict[Picture, list[int]] = {picture: [] for picture in pictures}
    async with RtspSimulator(names) as sim:
        for picture, name in zip(pictures, names, strict=True):
            await sim.set_picture(name, picture)
        async with drivers(sim, names) as cameras, asyncio.timeout(180):
            while min(len(v) for v in sizes.values()) < SAMPLES:
                for picture, camera in zip(pictures, cameras, strict=True):
                    await camera.poll()
                    for frame in camera.frames():
                        assert jpeg_size(frame.jpeg) == (frame.width, frame.height) == (320, 240)
                        assert len(frame.jpeg) <= MAX_SNAPSHOT_BYTES
                        sizes[picture].append(len(frame.jpeg))
                await asyncio.sleep(1.0)
    print(f"\nsnapshot JPEG bytes at -q:v {QUALITY} (median, min..max of {SAMPLES}+ checks):")
    for picture, values in sizes.items():
        print(f"  {picture.value:8} {statistics.median(values):8.0f}  {min(values)}..{max(values)}")
    # One flat colour is a fraction of a picture with detail, and blurring takes detail away.
    assert max(sizes[Picture.BLACK]) < min(sizes[Picture.GOOD]) / 4
    assert statistics.median(sizes[Picture.BLURRED]) < statistics.median(sizes[Picture.GOOD])
