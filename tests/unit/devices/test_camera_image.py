"""The image checks without a stream: ffmpeg's filter output read (golden cases captured from the real ffmpeg
on the RTSP simulator, ``camera_image_cases/``), the command, the rules, the hysteresis, the thresholds file,
the options and the reference views.

Adding a golden case is adding a folder with ``stdout.txt`` (what ffmpeg's ``metadata`` filter printed) and
``expected.json`` (measures, mode and verdicts); ``camera_image_cases/capture.py`` captures them anew.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from devices.drivers import build_driver
from devices.drivers.camera import CameraConfig
from devices.drivers.camera.image_check import ImageCheckState, ImageResult
from devices.drivers.camera.image_filters import (
    ANALYSIS_FPS,
    FilterPlan,
    ImageMeasures,
    ImageOutputError,
    decoding_errors,
    ffmpeg_argv,
    filter_graph,
    measure,
    parse_metadata,
    png_size,
)
from devices.drivers.camera.image_profile import (
    Hysteresis,
    ImageCheckProfile,
    ImageLimits,
    Mode,
    Problem,
    Verdict,
    judge,
    load_image_profile,
)
from devices.drivers.camera.reference import ReferenceViews, camera_key
from devices.errors import DeviceConfigError
from devices.profile import METRIC_PATTERN, load_profile

CASES = Path(__file__).parent / "camera_image_cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "stdout.txt").is_file())
THRESHOLDS = ImageCheckProfile()
PROFILE = "camera-onvif-generic"


# --------------------------------------------------------------------------------------- golden cases


def test_there_is_a_case_per_picture() -> None:
    pictures = {json.loads((CASES / n / "expected.json").read_text())["picture"] for n in CASE_NAMES}
    assert pictures == {"good", "black", "frozen", "blurred", "covered", "moved", "night"}


@pytest.mark.parametrize("case", CASE_NAMES)
def test_golden_case(case: str) -> None:
    folder = CASES / case
    expected = json.loads((folder / "expected.json").read_text())
    stderr = (folder / "stderr.txt").read_text() if (folder / "stderr.txt").is_file() else ""
    assert len(decoding_errors(stderr)) == expected["decoding_errors"]
    if expected["decoding_errors"]:
        return  # not judged
    frames = parse_metadata((folder / "stdout.txt").read_text())
    measures = measure(frames, min_frames=8)
    assert {k: getattr(measures, k) for k in ImageMeasures.__slots__} == pytest.approx(expected["measures"])
    reference = Mode(expected["reference_mode"]) if expected["reference_mode"] else None
    judgement = judge(measures, THRESHOLDS, reference)
    assert judgement.mode.value == expected["mode"]
    assert {p.value: v.value for p, v in judgement.verdicts.items()} == expected["verdicts"]
    bad = {p.value for p, v in judgement.verdicts.items() if v is Verdict.BAD}
    assert set(judgement.reasons) == {Problem(p) for p in bad}


def test_each_fault_case_is_bad_for_its_own_problem_only() -> None:
    own = {
        "black": "image_black",
        "frozen": "image_frozen",
        "blurred": "image_blurred",
        "covered": "image_covered",
        "moved": "view_changed",
    }
    for case in CASE_NAMES:
        expected = json.loads((CASES / case / "expected.json").read_text())
        if expected["decoding_errors"]:
            continue
        verdicts = expected["verdicts"]
        bad = {name for name, verdict in verdicts.items() if verdict == "bad"}
        assert bad == ({own[case]} if case in own else set()), case


def test_the_reference_frame_is_a_small_grey_png() -> None:
    data = (CASES / "reference.png").read_bytes()
    assert png_size(data) == (160, 120)
    assert data[25] == 0  # IHDR colour type 0: greyscale (PNG specification, 11.2.2)


# --------------------------------------------------------------------------------------- parsing


def frame(n: int, **values: str) -> str:
    lines = [f"frame:{n:<4} pts:{n:<7} pts_time:{n / ANALYSIS_FPS:g}"]
    lines += [f"lavfi.{key.replace('__', '.')}={value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


BASE = {
    "signalstats__YAVG": "120",
    "signalstats__SATAVG": "100",
    "blackframe__pblack": "0",
    "siti__si": "100",
    "siti__ti": "20",
    "entropy__normalized_entropy__normal__Y": "0.5",
    "blur": "5",
}


def test_parse_metadata_keeps_each_frames_values_and_time() -> None:
    text = frame(0, **BASE) + frame(1, **BASE, freezedetect__freeze_start="0.2") + "junk line\nlavfi.no_value\n"
    frames = parse_metadata(text)
    assert len(frames) == 2
    assert frames[0]["pts_time"] == "0"
    assert frames[1]["lavfi.freezedetect.freeze_start"] == "0.2"
    assert frames[1]["lavfi.signalstats.YAVG"] == "120"
    assert parse_metadata("") == []
    assert parse_metadata("lavfi.blur=3\n") == []  # values before any frame line belong to no frame


def test_nan_and_missing_blur_give_no_blur() -> None:
    values = {**BASE, "blur": "-nan"}
    measures = measure(parse_metadata("".join(frame(n, **values) for n in range(6))), min_frames=5)
    assert measures.blur is None
    no_blur = {k: v for k, v in BASE.items() if k != "blur"}
    assert measure(parse_metadata("".join(frame(n, **no_blur) for n in range(6))), min_frames=5).blur is None


def test_medians_ignore_one_odd_frame() -> None:
    text = "".join(frame(n, **BASE) for n in range(4)) + frame(4, **{**BASE, "signalstats__YAVG": "16"})
    assert measure(parse_metadata(text), min_frames=5).luma == 120


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "0 frame(s) analysed, 5 needed"),
        ("".join(frame(n, **BASE) for n in range(4)), "4 frame(s) analysed, 5 needed"),
        (
            "".join(frame(n, **{k: v for k, v in BASE.items() if not k.startswith("siti")}) for n in range(5)),
            "ffmpeg printed no spatial_info, temporal_info",
        ),
    ],
)
def test_too_little_output_is_an_error(text: str, message: str) -> None:
    with pytest.raises(ImageOutputError, match=re.escape(message)):
        measure(parse_metadata(text), min_frames=5)


@pytest.mark.parametrize(
    ("events", "frozen_pct"),
    [
        ({}, 0.0),
        # A freeze from the first frame still on at the end: the whole sample (10 frames, 2 s).
        ({5: {"freezedetect__freeze_start": "0"}}, 100.0),
        # Frozen from 0.4 s to the end: 1.6 s of 2 s.
        ({7: {"freezedetect__freeze_start": "0.4"}}, 80.0),
        # Frozen 0 .. 1.2 s, then moving again: 60 %.
        ({5: {"freezedetect__freeze_start": "0"}, 6: {"freezedetect__freeze_end": "1.2"}}, 60.0),
    ],
)
def test_frozen_share(events: dict[int, dict[str, str]], frozen_pct: float) -> None:
    text = "".join(frame(n, **BASE, **events.get(n, {})) for n in range(10))
    assert measure(parse_metadata(text), min_frames=5).frozen_pct == frozen_pct


def test_decoding_errors_are_the_decoders_errors() -> None:
    stderr = (CASES / "lost-packets" / "stderr.txt").read_text()
    errors = decoding_errors(stderr)
    assert len(errors) == 8
    assert errors[:2] == ["corrupted macroblock 6 0 (total_coeff=16)", "error while decoding MB 6 0"]
    assert decoding_errors("") == []
    assert decoding_errors("[rtsp @ 0x1] [warning] Thread message queue blocking\n") == []
    # ffmpeg found the RTP port pair it picked taken and took another: overcome, not the picture's damage.
    assert decoding_errors((CASES / "stderr-port-in-use.txt").read_text()) == []


def test_png_size() -> None:
    data = (CASES / "reference.png").read_bytes()
    assert png_size(data) == (160, 120)
    assert png_size(b"GIF89a" + data[6:]) is None
    assert png_size(data[:20]) is None


# --------------------------------------------------------------------------------------- the command

PLAN = FilterPlan(black_luma_max=32, frozen_noise_db=-60, sample_frames=15)


def test_the_command_without_a_reference() -> None:
    argv = ffmpeg_argv(
        "/usr/bin/ffmpeg",
        "rtsp://cam/s2",
        transport="udp",
        io_timeout_s=31,
        plan=PLAN,
        frame_out=Path("/tmp/w/frame.png"),
        reference=None,
    )
    graph = argv[argv.index("-filter_complex") + 1]
    assert argv[: argv.index("-filter_complex") - 2] == [
        "/usr/bin/ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "level+error",
        "-threads",
        "1",
        "-rtsp_transport",
        "udp",
        "-timeout",
        "31000000",
        "-an",
        "-sn",
        "-dn",
        "-i",
        "rtsp://cam/s2",
    ]
    assert argv[argv.index("-filter_complex") + 2 :] == [
        *("-map", "[out]", "-frames:v", "15", "-f", "null", "-"),
        *("-map", "[keep]", "-frames:v", "1", "-update", "1", "-y", "/tmp/w/frame.png"),
    ]
    assert graph == (
        "[0:v]select='isnan(prev_selected_t)+gte(abs(t-prev_selected_t)\\,0.19)',setpts=N/(5*TB),settb=1/5,"
        "scale=320:-2,format=yuv420p,signalstats,blackframe=amount=0:threshold=32,freezedetect=n=-60dB:d=1,siti,"
        "entropy,blurdetect,scale=160:-2,format=gray,split[m][k];[m]metadata=mode=print:file=-[out];"
        "[k]trim=start_frame=7[keep]"
    )


def test_the_command_with_a_reference_compares_at_its_size() -> None:
    argv = ffmpeg_argv(
        "ffmpeg",
        "rtsp://cam/s2",
        transport="auto",
        io_timeout_s=5,
        plan=PLAN,
        frame_out=Path("f.png"),
        reference=(Path("/tmp/w/reference.png"), (160, 90)),
    )
    assert "-rtsp_transport" not in argv
    assert argv[argv.index("rtsp://cam/s2") + 1 : argv.index("rtsp://cam/s2") + 3] == ["-i", "/tmp/w/reference.png"]
    graph = filter_graph(PLAN, (160, 90))
    assert graph == argv[argv.index("-filter_complex") + 1]
    assert ",scale=160:90,format=gray,split[m][k];[1:v]format=gray,settb=1/5[ref];[m][ref]ssim,metadata=" in graph


# --------------------------------------------------------------------------------------- the rules


def measures(**changes: Any) -> ImageMeasures:
    good: dict[str, Any] = {
        "frames": 15,
        "luma": 120.0,
        "saturation": 100.0,
        "black_pct": 0.0,
        "spatial_info": 100.0,
        "temporal_info": 20.0,
        "entropy": 0.55,
        "blur": 5.0,
        "frozen_pct": 0.0,
        "view_ssim": 0.8,
    }
    return ImageMeasures(**(good | changes))


B, G, U = Verdict.BAD, Verdict.GOOD, Verdict.UNKNOWN


@pytest.mark.parametrize(
    ("changes", "reference", "mode", "expected"),
    [
        # black, covered, frozen, blurred, view_changed
        ({}, Mode.DAY, Mode.DAY, (G, G, G, G, G)),
        ({}, None, Mode.DAY, (G, G, G, G, U)),  # no reference view yet
        ({"black_pct": 98.0, "blur": None}, Mode.DAY, Mode.DAY, (B, U, U, U, U)),
        ({"black_pct": 97.9}, Mode.DAY, Mode.DAY, (G, G, G, G, G)),
        # Dark but not black: an unlit night scene with a few lamps.
        ({"luma": 25.0, "black_pct": 90.0}, Mode.DAY, Mode.DAY, (G, G, G, G, G)),
        ({"spatial_info": 12.0, "entropy": 0.35, "view_ssim": 0.3}, Mode.DAY, Mode.DAY, (G, B, G, U, U)),
        # Little detail but a wide histogram is not a covered lens (fog, a blank wall in good light).
        ({"spatial_info": 10.0, "entropy": 0.6}, Mode.DAY, Mode.DAY, (G, G, G, G, G)),
        ({"frozen_pct": 90.0}, Mode.DAY, Mode.DAY, (G, G, B, G, G)),
        ({"blur": 10.0, "view_ssim": 0.4}, Mode.DAY, Mode.DAY, (G, G, G, B, U)),
        ({"blur": None}, Mode.DAY, Mode.DAY, (G, G, G, U, G)),
        ({"view_ssim": 0.54}, Mode.DAY, Mode.DAY, (G, G, G, G, B)),
        # Night (no colour): the night limits; a day reference is not compared with.
        ({"saturation": 0.5, "blur": 11.0, "view_ssim": 0.3}, Mode.DAY, Mode.NIGHT, (G, G, G, G, U)),
        ({"saturation": 0.5, "blur": 12.0}, Mode.NIGHT, Mode.NIGHT, (G, G, G, B, U)),
        ({"saturation": 0.5, "view_ssim": 0.52}, Mode.NIGHT, Mode.NIGHT, (G, G, G, G, G)),
        ({"saturation": 0.5, "spatial_info": 8.0, "entropy": 0.3}, Mode.NIGHT, Mode.NIGHT, (G, B, G, U, U)),
    ],
)
def test_rules(changes: dict[str, Any], reference: Mode | None, mode: Mode, expected: tuple[Verdict, ...]) -> None:
    judgement = judge(measures(**changes), THRESHOLDS, reference)
    order = (Problem.BLACK, Problem.COVERED, Problem.FROZEN, Problem.BLURRED, Problem.VIEW_CHANGED)
    assert judgement.mode is mode
    assert tuple(judgement.verdicts[p] for p in order) == expected


def test_a_colour_camera_is_never_in_night_mode() -> None:
    colour = ImageCheckProfile(night_mode="none")
    assert judge(measures(saturation=0.0), colour, Mode.DAY).mode is Mode.DAY


def test_reasons_say_the_measure_and_the_limit() -> None:
    reasons = judge(measures(black_pct=99.5, blur=None), THRESHOLDS, Mode.DAY).reasons
    assert reasons == {Problem.BLACK: "99.5% of the picture black (limit 98%)"}
    reasons = judge(measures(view_ssim=0.3712), THRESHOLDS, Mode.DAY).reasons
    assert reasons == {Problem.VIEW_CHANGED: "SSIM 0.371 with the day reference view (limit 0.55)"}


# --------------------------------------------------------------------------------------- hysteresis


@pytest.mark.parametrize(
    ("raise_after", "clear_after", "verdicts", "states"),
    [
        (2, 2, "BBGGG", "01100"),
        # One bad check (a passing truck) raises nothing.
        (2, 2, "BGBGB", "00000"),
        # An unknown check neither counts nor breaks a run.
        (2, 2, "BUBGUG", "001110"),
        (1, 1, "BGB", "101"),
        (3, 2, "BBBGBGG", "0011110"),
        # A bad check while raised breaks the run towards clearing.
        (2, 3, "BBGGBGGG", "01111110"),
    ],
)
def test_hysteresis(raise_after: int, clear_after: int, verdicts: str, states: str) -> None:
    code = {"B": Verdict.BAD, "G": Verdict.GOOD, "U": Verdict.UNKNOWN}
    state = Hysteresis(raise_after, clear_after)
    seen = ""
    for letter in verdicts:
        before = state.active
        assert state.update(code[letter]) == (state.active != before)
        seen += str(int(state.active))
    assert seen == states


def test_hysteresis_pending_while_a_run_is_under_way() -> None:
    state = Hysteresis(2, 2)
    seen = [(state.active, state.pending)]
    for verdict in (Verdict.BAD, Verdict.BAD, Verdict.GOOD, Verdict.UNKNOWN):
        state.update(verdict)
        seen.append((state.active, state.pending))
    assert seen == [(False, False), (False, True), (True, False), (True, True), (True, True)]


# --------------------------------------------------------------------------------------- thresholds file


def test_the_shipped_thresholds_are_the_defaults_and_say_where_they_come_from() -> None:
    thresholds, source = load_image_profile(load_profile(PROFILE))
    assert thresholds == ImageCheckProfile()
    assert source == "devices/profiles/image-checks/camera-onvif-generic.yaml"


def test_a_profile_without_a_thresholds_file_gets_the_defaults(tmp_path: Path) -> None:
    thresholds, source = load_image_profile(load_profile(PROFILE), tmp_path)
    assert thresholds == ImageCheckProfile()
    assert source == f"defaults (no camera-onvif-generic.yaml in {tmp_path.name}/)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("day: {blur_min: 0}\n", "field 'day.blur_min': Input should be greater than 0"),
        ("night_mode: moonlight\n", "field 'night_mode'"),
        ("colour: red\n", "field 'colour': unknown key (not allowed)"),
        ("- 1\n", "must be a mapping of thresholds, not list"),
        ("day: [\n", "not valid YAML"),
    ],
)
def test_a_bad_thresholds_file_names_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / f"{PROFILE}.yaml"
    path.write_text(text)
    with pytest.raises(DeviceConfigError) as info:
        load_image_profile(load_profile(PROFILE), tmp_path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_a_thresholds_file_may_set_only_some_limits(tmp_path: Path) -> None:
    (tmp_path / f"{PROFILE}.yaml").write_text("raise_after: 3\nnight: {blur_min: 15}\n")
    thresholds, source = load_image_profile(load_profile(PROFILE), tmp_path)
    assert thresholds.raise_after == 3
    assert thresholds.night == ImageLimits(blur_min=15)
    assert source == str(tmp_path / f"{PROFILE}.yaml")


# --------------------------------------------------------------------------------------- options and plan


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_sample_s": 5, "image_timeout_s": 5}, "image_timeout_s (5) must be longer than image_sample_s (5)"),
        ({"image_check_interval_s": 30, "image_confirm_s": 60}, "image_confirm_s (60) must not be longer than"),
        ({"image_sample_s": 1}, "option 'image_sample_s'"),
        ({"image_rtsp_url": "http://h/s"}, "must be an rtsp:// or rtsps:// URL with a host"),
        ({"image_check_interval_s": -1}, "option 'image_check_interval_s'"),
    ],
)
def test_bad_image_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(DeviceConfigError) as info:
        build_driver("camera", {"host": "h", "rtsp_url": "rtsp://h/s", **options}, PROFILE)
    assert message in str(info.value)


def test_image_checks_read_the_sub_stream_when_given_and_can_be_off() -> None:
    main = CameraConfig(host="h", rtsp_url="rtsp://h/main")
    assert main.image_url == "rtsp://h/main"
    assert main.image_checks_enabled
    sub = CameraConfig(host="h", rtsp_url="rtsp://h/main", image_rtsp_url="rtsp://h/sub")
    assert sub.image_url == "rtsp://h/sub"
    assert not CameraConfig(host="h", rtsp_url="rtsp://h/main", image_check_interval_s=0).image_checks_enabled
    assert not CameraConfig(host="h").image_checks_enabled


def test_the_plan_line_of_the_image_checks_hides_credentials() -> None:
    options = {
        "host": "cam",
        "onvif_port": 0,
        "rtsp_url": "rtsp://ops:s3cret@cam/main",
        "image_rtsp_url": "rtsp://ops:s3cret@cam/sub",
        "image_reference_dir": "/var/lib/ioc-edge/views",
    }
    plan = build_driver("camera", options, PROFILE).describe_plan()
    assert plan[2] == (
        "image checks of rtsp://cam/sub every 300 s (sooner, after 60 s, to confirm a change): ffmpeg (auto), "
        "15 frames over 3 s, within 15 s; thresholds devices/profiles/image-checks/camera-onvif-generic.yaml; "
        "raised after 2, cleared after 2 checks; reference views in /var/lib/ioc-edge/views"
    )
    off = build_driver("camera", {**options, "image_check_interval_s": 0}, PROFILE).describe_plan()
    assert off[2] == "image checks: off (image_check_interval_s 0)"
    assert "s3cret" not in " ".join(plan + off)


def test_the_actions_follow_the_checks() -> None:
    both = build_driver("camera", {"host": "h", "rtsp_url": "rtsp://h/s"}, PROFILE)
    assert both.supported_actions() == {"restart", "accept_view"}  # type: ignore[attr-defined]
    image_only = build_driver("camera", {"host": "h", "onvif_port": 0, "rtsp_url": "rtsp://h/s"}, PROFILE)
    assert image_only.supported_actions() == {"accept_view"}  # type: ignore[attr-defined]
    assert image_only.problems() == {}  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------- metrics


def test_metric_names_fit_the_contract_and_no_value_is_missing_or_nan() -> None:
    result = ImageResult(
        ts_ms=1,
        state=ImageCheckState.OK,
        problems={p: p is Problem.FROZEN for p in Problem},
        measures=measures(blur=None, view_ssim=None),
        mode=Mode.DAY,
        check_ms=2500.0,
    )
    metrics = result.metrics()
    assert all(re.fullmatch(METRIC_PATTERN, name) for name in metrics)
    assert "image_blur" not in metrics
    assert "image_view_ssim" not in metrics
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in metrics.values())
    assert {p.value: metrics[p.value] for p in Problem} == {
        "image_black": 0,
        "image_frozen": 1,
        "image_blurred": 0,
        "image_covered": 0,
        "view_changed": 0,
    }
    assert metrics["image_night"] == 0
    assert metrics["image_check_state_name"] == "ok"


def test_a_failed_check_keeps_the_problem_states_and_says_why() -> None:
    result = ImageResult(5, ImageCheckState.FAILED, {p: p is Problem.BLACK for p in Problem}, "x" * 500)
    metrics = result.metrics()
    assert metrics["image_black"] == 1
    assert metrics["image_check_state"] == 1
    assert metrics["image_check_error"] == "x" * 300
    assert "image_luma" not in metrics
    assert "image_night" not in metrics


# --------------------------------------------------------------------------------------- reference views


def test_camera_key_drops_credentials_and_tells_streams_apart() -> None:
    key = camera_key("rtsp://ops:s3cret@10.0.0.5:554/Streaming/Channels/102")
    assert key.startswith("10.0.0.5_554-")
    assert "s3cret" not in key
    assert key == camera_key("rtsp://other:pw@10.0.0.5:554/Streaming/Channels/102")
    assert key != camera_key("rtsp://10.0.0.5:554/Streaming/Channels/101")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", key)


def test_reference_views_are_kept_on_disk_and_read_back(tmp_path: Path) -> None:
    png = (CASES / "reference.png").read_bytes()
    views = ReferenceViews(tmp_path / "views", "cam-1", "camera test")
    views.load()
    assert views.get(Mode.DAY) is None
    views.put(Mode.DAY, png)
    assert (tmp_path / "views" / "cam-1.day.png").read_bytes() == png
    again = ReferenceViews(tmp_path / "views", "cam-1", "camera test")
    again.load()
    assert again.get(Mode.DAY) == png
    assert again.get(Mode.NIGHT) is None
    again.clear()
    assert list((tmp_path / "views").iterdir()) == []


def test_a_file_that_is_not_a_png_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "cam-1.night.png").write_bytes(b"not a picture")
    views = ReferenceViews(tmp_path, "cam-1", "camera test")
    views.load()
    assert views.get(Mode.NIGHT) is None
    assert "is not a PNG; ignored" in caplog.text


def test_without_a_folder_views_live_in_memory() -> None:
    views = ReferenceViews(None, "cam-1", "camera test")
    views.load()
    views.put(Mode.DAY, b"\x89PNG")
    assert views.get(Mode.DAY) == b"\x89PNG"
    assert views.path(Mode.DAY) is None
