"""Instance config of the camera driver (the ``options`` of a camera in the edge config).

Checked once when the driver is built; unknown keys are refused. Either half may be left out: ``onvif_port: 0``
skips the ONVIF check, no ``rtsp_url`` skips the stream probe (the reading then says so in ``rtsp_error``, with
``no_rtsp_reason`` when given). The image checks read ``image_rtsp_url`` (a sub-stream), else ``rtsp_url``,
every ``image_check_interval_s`` (0: never).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from devices.driver import DriverConfig


class CameraConfig(DriverConfig):
    """Where one camera is and how to check it: ONVIF device service plus an RTSP stream probe."""

    host: str = Field(min_length=1, max_length=253, description="camera address (ONVIF device service host)")
    onvif_port: int = Field(default=80, ge=0, le=65535, description="HTTP port of the ONVIF service; 0: no ONVIF")
    onvif_path: str = Field(
        default="/onvif/device_service",
        pattern=r"^/[^\s]*$",
        description="path of the device service (ONVIF Core: the entry point is /onvif/device_service)",
    )
    onvif_scheme: Literal["http", "https"] = "http"
    username: str | None = Field(default=None, min_length=1, max_length=64)
    password: SecretStr | None = None
    auth: Literal["auto", "ws-security", "digest"] = Field(
        default="auto",
        description="how credentials are sent: a WS-Security digest token, HTTP Digest (RFC 7616), or auto: "
        "the token, and HTTP Digest too when the camera answers 401 with a Digest challenge",
    )
    onvif_timeout_s: float = Field(
        default=3.0, gt=0, le=60, description="budget of the whole ONVIF check (all its requests) per poll"
    )
    check_without_auth: bool = Field(
        default=True, description="first ask GetDeviceInformation without credentials (finds open cameras)"
    )
    adjust_clock: bool = Field(
        default=True,
        description="stamp the WS-Security token in the camera's time (from GetSystemDateAndTime), as cameras "
        "with a wrong clock refuse tokens 'created' too far from their own time",
    )
    verify_tls: bool = Field(default=True, description="check the camera's certificate when onvif_scheme is https")

    rtsp_url: str | None = Field(default=None, max_length=2048, description="stream to probe; None: no probe")
    rtsp_transport: Literal["auto", "udp", "tcp"] = Field(
        default="auto", description="auto: ffprobe's default (UDP, falling back to TCP)"
    )
    rtsp_timeout_s: float = Field(default=5.0, gt=0, le=120, description="ffprobe is killed after this long")
    rtsp_sample_packets: int = Field(
        default=30, ge=2, le=1000, description="video packets read to measure the bitrate (and frame rate)"
    )
    ffprobe: str = Field(default="ffprobe", min_length=1, description="name on PATH or absolute path of ffprobe")
    no_rtsp_reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="why this camera has no stream to probe (a camera without RTSP, no RTSP server in a "
        "simulation); reported as rtsp_error instead of 'no rtsp_url configured'. Only without rtsp_url.",
    )

    image_check_interval_s: float = Field(
        default=300.0,
        ge=0,
        le=86_400,
        description="seconds between two image checks (black, frozen, blurred, covered, view changed); 0: none",
    )
    image_rtsp_url: str | None = Field(
        default=None, max_length=2048, description="the stream the image checks read (a sub-stream); rtsp_url if unset"
    )
    image_sample_s: float = Field(
        default=3.0, ge=2, le=30, description="seconds of video each image check analyses (5 frames a second)"
    )
    image_timeout_s: float = Field(
        default=15.0, gt=0, le=120, description="an image check's ffmpeg is killed after this long (connect + sample)"
    )
    image_confirm_s: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="after a check that begins a change of a problem's state, or could not judge the picture, the "
        "next check comes after this rather than after image_check_interval_s",
    )
    image_reference_dir: Path | None = Field(
        default=None,
        description="folder where the camera's reference views are kept (an absolute path; made if missing); "
        "unset: kept in memory, learned again after each start of the agent",
    )
    snapshots: bool = Field(
        default=True,
        description="keep a JPEG of each image check's middle frame (320 px wide, colour) for the agent to send as "
        "a snapshot; no second stream is opened",
    )
    snapshot_quality: int = Field(
        default=4,
        ge=2,
        le=31,
        description="ffmpeg's -q:v of the snapshot JPEG: 2 best and largest .. 31 smallest (4: 10-30 kB at 320 px)",
    )
    ffmpeg: str = Field(default="ffmpeg", min_length=1, description="name on PATH or absolute path of ffmpeg")

    @field_validator("rtsp_url", "image_rtsp_url")
    @classmethod
    def _rtsp_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"rtsp", "rtsps"} or not parts.hostname:
            raise ValueError("must be an rtsp:// or rtsps:// URL with a host")
        return value

    @model_validator(mode="after")
    def _check_pairs(self) -> CameraConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: give both or neither")
        if self.rtsp_url is not None and self.no_rtsp_reason is not None:
            raise ValueError("no_rtsp_reason is for a camera without rtsp_url")
        if self.image_timeout_s <= self.image_sample_s:
            raise ValueError(
                f"image_timeout_s ({self.image_timeout_s:g}) must be longer than image_sample_s "
                f"({self.image_sample_s:g}): connecting takes time too"
            )
        if self.image_check_interval_s and self.image_confirm_s > self.image_check_interval_s:
            raise ValueError(
                f"image_confirm_s ({self.image_confirm_s:g}) must not be longer than image_check_interval_s "
                f"({self.image_check_interval_s:g})"
            )
        return self

    @property
    def onvif_enabled(self) -> bool:
        return self.onvif_port != 0

    @property
    def onvif_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.onvif_scheme}://{host}:{self.onvif_port}{self.onvif_path}"

    @property
    def image_url(self) -> str | None:
        """The stream the image checks read."""
        return self.image_rtsp_url or self.rtsp_url

    @property
    def image_checks_enabled(self) -> bool:
        return self.image_check_interval_s > 0 and self.image_url is not None

    @property
    def poll_budget_s(self) -> float:
        """The longest a poll can take: both checks run side by side, each within its own budget."""
        onvif = self.onvif_timeout_s if self.onvif_enabled else 0.0
        rtsp = self.rtsp_timeout_s if self.rtsp_url else 0.0
        return max(onvif, rtsp)
