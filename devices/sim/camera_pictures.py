"""What a simulated camera shows: a good picture or one of the image faults, each an ffmpeg ``lavfi`` source.

The RTSP simulator (:mod:`devices.sim.rtsp`) makes one short H.264 clip per picture with ffmpeg (the same size,
rate and bitrate for all, so a stream probe sees the same stream whatever the picture) and switches a stream
from one clip to another on command (:meth:`devices.sim.rtsp.RtspSimulator.set_picture`).

- ``good``: ``testsrc2``, a test pattern with moving parts (a diagonal bar, a clock, small squares) over fixed
  colour bars: a scene whose background holds still while something moves, as a street's does.
- ``black``: ``color=black``: a dead sensor, a cut video cable behind an encoder, a lens cap.
- ``frozen``: the first frame of ``good``, looped: frames keep coming but the picture never changes, as from a
  hung image pipeline repeating its last frame.
- ``blurred``: ``good`` through a Gaussian blur (sigma 6): a lens out of focus, fogged or smeared.
- ``covered``: a very dark brown, nearly flat picture with sensor noise, not pure black: a bag or a hand over
  the lens, light still leaking in.
- ``moved``: a shifted, magnified part of the same pattern: the camera turned or knocked to look elsewhere.
- ``night``: ``good`` as an infrared camera shows it at night: grey (no colour), dark and noisy but not black.
  Not a fault: the image checks must stay quiet for it on a camera whose profile says it switches to infrared.
"""

from __future__ import annotations

import enum
from typing import Final


class Picture(enum.StrEnum):
    """What a simulated stream shows (see the module docstring)."""

    GOOD = "good"
    BLACK = "black"
    FROZEN = "frozen"
    BLURRED = "blurred"
    COVERED = "covered"
    MOVED = "moved"
    NIGHT = "night"

    @property
    def is_fault(self) -> bool:
        return self not in (Picture.GOOD, Picture.NIGHT)


#: Each picture's lavfi source; ``{size}`` is ``size=WxH:rate=F``, ``{w}``/``{h}`` the width and height.
_SOURCES: Final[dict[Picture, str]] = {
    Picture.GOOD: "testsrc2={size}",
    Picture.BLACK: "color=c=black:{size}",
    # loop=-1 with size=1 repeats the first frame for ever (the source's own timestamps keep running).
    Picture.FROZEN: "testsrc2={size},loop=loop=-1:size=1:start=0",
    Picture.BLURRED: "testsrc2={size},gblur=sigma=6",
    # Temporal noise on every plane: a real sensor behind a cover still shows noise, so the picture moves a
    # little (it is not frozen) and is not pure black.
    Picture.COVERED: "color=c=0x2a2418:{size},noise=alls=6:allf=t",
    # The same pattern twice as large, a part of it off the centre: another view of the same kind.
    Picture.MOVED: "testsrc2=size={w2}x{h2}:rate={fps},crop={w}:{h}:{x}:{y}",
    # An infrared picture is monochrome (the camera drops its colour when the IR-cut filter opens), darker and
    # noisier; noise on luma only, so the chroma stays neutral as an IR camera's does.
    Picture.NIGHT: "testsrc2={size},hue=s=0,eq=brightness=-0.25:contrast=0.6,noise=c0s=8:c0f=t",
}


def lavfi_source(picture: Picture, width: int, height: int, fps: int) -> str:
    """The ``-f lavfi -i`` source of ``picture`` at this size and rate."""
    return _SOURCES[picture].format(
        size=f"size={width}x{height}:rate={fps}",
        w=width,
        h=height,
        w2=2 * width,
        h2=2 * height,
        x=width * 5 // 8,
        y=height * 5 // 8,
        fps=fps,
    )
