"""Image-check thresholds of a camera model, and the rules that turn one check's measures into verdicts.

The thresholds of profile ``<id>`` are read from ``devices/profiles/image-checks/<id>.yaml`` (beside the
profiles, one file per camera profile; a profile without one gets :class:`ImageCheckProfile`'s defaults, which
are those of ``camera-onvif-generic``). They sit beside the profile rather than in it because the profile
model (:class:`devices.profile.Profile`) takes no driver-specific section yet. Checked once, when the driver is
built; an error names the file and the field.

The rules of one check (:func:`judge`), each giving ``bad``, ``good`` or ``unknown`` (no evidence either way:
the problem's state is held):

- **night**: with ``night_mode: infrared`` a picture without colour (mean saturation at most
  ``night_saturation_max``) is a night picture: the camera has opened its IR-cut filter. The ``night`` limits
  then apply, and the view is compared with the night reference. A dark picture is never a fault in itself:
  black is judged by the share of black pixels, not by the mean brightness.
- ``image_black``: at least ``black_pct_min`` % of the pixels darker than ``black_luma_max`` (0..255). A night
  picture, infrared or lit by street lamps, has lit parts and stays below that share.
- ``image_covered`` (unknown when black): little detail and a narrow histogram at once: spatial information at
  most ``covered_si_max`` and luma entropy at most ``covered_entropy_max``. A bag, a hand or paint over the lens.
- ``image_frozen`` (unknown when black: a black picture has nothing to move): at least ``frozen_pct_min`` % of
  the sample inside a freeze (no change above ``frozen_noise_db`` for a second or more).
- ``image_blurred`` (unknown when black, covered, or without any edge to measure): ``blurdetect`` at least
  ``blur_min``.
- ``view_changed`` (unknown when black, covered or blurred, and until there is a reference view for the
  mode): SSIM with the reference view below ``view_ssim_min``.

Hysteresis: a problem is raised after ``raise_after`` bad checks in a row and cleared after ``clear_after``
good ones; an unknown check neither counts nor breaks a run.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devices.drivers.camera.image_filters import ImageMeasures
from devices.errors import DeviceConfigError
from devices.profile import PROFILES_DIR, Profile, describe_validation_error

#: Where the image-check thresholds of the shipped profiles live: ``<profile id>.yaml``.
IMAGE_CHECKS_DIR: Final = PROFILES_DIR / "image-checks"


class Problem(enum.StrEnum):
    """The image problems, named as their metrics are."""

    BLACK = "image_black"
    FROZEN = "image_frozen"
    BLURRED = "image_blurred"
    COVERED = "image_covered"
    VIEW_CHANGED = "view_changed"


class Verdict(enum.Enum):
    BAD = "bad"
    GOOD = "good"
    UNKNOWN = "unknown"


class Mode(enum.StrEnum):
    """Which limits and which reference view apply to a picture."""

    DAY = "day"
    NIGHT = "night"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageLimits(_Strict):
    """The limits of one mode (day or night)."""

    black_pct_min: float = Field(default=98.0, gt=0, le=100, description="% of black pixels from which it is black")
    covered_si_max: float = Field(default=12.0, ge=0, description="spatial information (ITU-T P.910) at most")
    covered_entropy_max: float = Field(default=0.35, ge=0, le=1, description="normalised luma entropy at most")
    frozen_pct_min: float = Field(default=90.0, gt=0, le=100, description="% of the sample in a freeze")
    blur_min: float = Field(default=10.0, gt=0, description="blurdetect value from which it is blurred")
    view_ssim_min: float = Field(default=0.55, gt=0, lt=1, description="SSIM with the reference view at least")


class ImageCheckProfile(_Strict):
    """A camera model's image-check thresholds (see the module docstring)."""

    night_mode: Literal["infrared", "none"] = Field(
        default="infrared", description="infrared: the camera turns monochrome at night (IR-cut filter open)"
    )
    night_saturation_max: float = Field(default=3.0, ge=0, le=181, description="mean saturation of a night picture")
    black_luma_max: int = Field(default=32, ge=1, le=254, description="a pixel darker than this is black (0..255)")
    frozen_noise_db: float = Field(default=-60.0, ge=-90, le=-10, description="freezedetect noise tolerance")
    raise_after: int = Field(default=2, ge=1, le=20, description="bad checks in a row that raise a problem")
    clear_after: int = Field(default=2, ge=1, le=20, description="good checks in a row that clear it")
    day: ImageLimits = ImageLimits()
    night: ImageLimits = ImageLimits(covered_si_max=8.0, covered_entropy_max=0.3, blur_min=12.0, view_ssim_min=0.5)

    def limits(self, mode: Mode) -> ImageLimits:
        return self.night if mode is Mode.NIGHT else self.day


def load_image_profile(profile: Profile, folder: Path = IMAGE_CHECKS_DIR) -> tuple[ImageCheckProfile, str]:
    """The thresholds for ``profile`` (``<folder>/<profile id>.yaml``) and where they come from (the file, or
    "defaults (no ...)"). Raises :class:`DeviceConfigError` naming the file and the field."""
    path = folder / f"{profile.id}.yaml"
    if not path.is_file():
        return ImageCheckProfile(), f"defaults (no {path.name} in {folder.name}/)"
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeviceConfigError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise DeviceConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise DeviceConfigError(f"{path}: must be a mapping of thresholds, not {type(data).__name__}")
    try:
        thresholds = ImageCheckProfile.model_validate(data)
    except ValidationError as exc:
        raise DeviceConfigError(f"{path}: " + "; ".join(describe_validation_error(exc, data))) from None
    shipped = path.is_relative_to(PROFILES_DIR)
    return thresholds, str(path.relative_to(PROFILES_DIR.parent.parent)) if shipped else str(path)


@dataclass(frozen=True, slots=True)
class Judgement:
    """One check's verdict per problem, the mode it was judged in and why each bad verdict is bad."""

    mode: Mode
    verdicts: dict[Problem, Verdict]
    reasons: dict[Problem, str]


def mode_of(measures: ImageMeasures, thresholds: ImageCheckProfile) -> Mode:
    if thresholds.night_mode == "infrared" and measures.saturation <= thresholds.night_saturation_max:
        return Mode.NIGHT
    return Mode.DAY


def judge(measures: ImageMeasures, thresholds: ImageCheckProfile, reference_mode: Mode | None) -> Judgement:
    """The verdicts of one check (module docstring). ``reference_mode``: the mode of the reference view the
    measures were compared with (None: none was), so a view is judged only against its own mode's reference."""
    mode = mode_of(measures, thresholds)
    limits = thresholds.limits(mode)
    verdicts: dict[Problem, Verdict] = {}
    reasons: dict[Problem, str] = {}

    def decide(problem: Problem, bad: bool | None, reason: Callable[[], str]) -> Verdict:
        verdict = Verdict.UNKNOWN if bad is None else Verdict.BAD if bad else Verdict.GOOD
        verdicts[problem] = verdict
        if verdict is Verdict.BAD:
            reasons[problem] = reason()
        return verdict

    m = measures
    black = decide(
        Problem.BLACK,
        m.black_pct >= limits.black_pct_min,
        lambda: f"{m.black_pct:.3g}% of the picture black (limit {limits.black_pct_min:g}%)",
    )
    is_black = black is Verdict.BAD
    covered = decide(
        Problem.COVERED,
        None if is_black else m.spatial_info <= limits.covered_si_max and m.entropy <= limits.covered_entropy_max,
        lambda: (
            f"no detail: spatial information {m.spatial_info:.3g}, entropy {m.entropy:.3g} (limits "
            f"{limits.covered_si_max:g}, {limits.covered_entropy_max:g})"
        ),
    )
    decide(
        Problem.FROZEN,
        None if is_black else m.frozen_pct >= limits.frozen_pct_min,
        lambda: f"{m.frozen_pct:.3g}% of the sample frozen (limit {limits.frozen_pct_min:g}%)",
    )
    hidden = is_black or covered is Verdict.BAD
    blur = m.blur
    blurred = decide(
        Problem.BLURRED,
        None if hidden or blur is None else blur >= limits.blur_min,
        lambda: f"blur {blur:.3g} (limit {limits.blur_min:g})",
    )
    ssim = m.view_ssim
    comparable = not hidden and blurred is not Verdict.BAD and reference_mode is mode
    decide(
        Problem.VIEW_CHANGED,
        ssim < limits.view_ssim_min if comparable and ssim is not None else None,
        lambda: f"SSIM {ssim:.3g} with the {mode} reference view (limit {limits.view_ssim_min:g})",
    )
    return Judgement(mode, verdicts, reasons)


class Hysteresis:
    """One problem's state: raised after ``raise_after`` bad checks in a row, cleared after ``clear_after``
    good ones; an unknown verdict neither counts nor breaks a run."""

    def __init__(self, raise_after: int, clear_after: int) -> None:
        self.raise_after = raise_after
        self.clear_after = clear_after
        self.active = False
        #: Checks in a row that point away from the current state.
        self.streak = 0

    def update(self, verdict: Verdict) -> bool:
        """Take one check's verdict; True when the state changed."""
        if verdict is Verdict.UNKNOWN:
            return False
        against = (verdict is Verdict.GOOD) if self.active else (verdict is Verdict.BAD)
        if not against:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= (self.clear_after if self.active else self.raise_after):
            self.active = not self.active
            self.streak = 0
            return True
        return False

    @property
    def pending(self) -> bool:
        """A change has begun (a run under way) but is not yet confirmed."""
        return self.streak > 0

    def reset(self) -> None:
        self.active = False
        self.streak = 0
