"""training.synth.k4a_writer: recordings written with libk4arecord, read back with pyk4a.PyK4APlayback."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pyk4a import CalibrationType, ColorResolution, DepthMode, FPS, ImageFormat, PyK4APlayback
from pyk4a.errors import K4AException

from training.synth.k4a_writer import (K4ARecordingConfig, K4ARecordingWriter, RecordingError, read_sidecar,
                                       sidecar_path, write_sidecar)

ASSETS = Path(__file__).parent / "assets"
CALIBRATION_FILE = ASSETS / "k4a_calibration_min.json"
SHARED_CALIBRATION_FILE = Path(__file__).parent.parent / "assets" / "calibration" / "azure_kinect_default.json"
N_FRAMES = 10
T0_USEC = 2_000_000  # first device timestamp


@pytest.fixture(scope="module")
def calibration_json() -> bytes:
    return CALIBRATION_FILE.read_bytes()


def color_frame(i: int, height: int, width: int) -> np.ndarray:
    """A smooth, textured BGR test picture that changes with i (JPEG-friendly, like a rendering)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 128 + 100 * np.sin(x / 37.0 + i)
    img[..., 1] = 128 + 100 * np.cos(y / 23.0 - 0.5 * i)
    img[..., 2] = 255 * (x + y) / (width + height)
    cv2.circle(img, (width // 2 + 20 * i, height // 2), height // 5, (30, 200, 90), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def plane_frame(i: int, height: int, width: int) -> np.ndarray:
    """uint16 image with the extremes 0 and 65535 and arbitrary byte patterns (checks byte order)."""
    rng = np.random.default_rng(1000 + i)
    img = rng.integers(0, 65536, size=(height, width), dtype=np.uint16)
    img[0, 0], img[0, 1], img[-1, -1] = 0, 65535, 0x0102
    return img


def expected_pinhole(calibration: dict, location: str, mode: tuple) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels for a recording mode, from the raw (unitized) calibration document.

    mode = ((binned_w, binned_h), (crop_x, crop_y)): the SDK's per-mode scaling and crop; the raw
    principal point is 0-cornered, OpenCV's is 0-centred (hence -0.5).
    """
    cam = next(c for c in calibration["CalibrationInformation"]["Cameras"] if c["Location"] == location)
    cx, cy, fx, fy = cam["Intrinsics"]["ModelParameters"][:4]
    (bw, bh), (ox, oy) = mode
    return fx * bw, fy * bh, cx * bw - ox - 0.5, cy * bh - oy - 0.5


# SDK per-mode geometry (binned resolution, crop offset) for the modes used below.
DEPTH_MODE_GEOMETRY = {"NFOV_UNBINNED": ((1024, 1024), (192, 180)), "NFOV_2X2BINNED": ((512, 512), (96, 90)),
                       "WFOV_2X2BINNED": ((512, 512), (0, 0))}
COLOR_MODE_GEOMETRY = {"720P": ((1280, 960), (0, 120))}

CASES = {
    "mjpg+depth": K4ARecordingConfig(color_format="MJPG", color_resolution="720P", depth_mode="NFOV_UNBINNED",
                                     fps=30),
    "bgra+depth": K4ARecordingConfig(color_format="BGRA32", color_resolution="720P",
                                     depth_mode="NFOV_2X2BINNED", fps=15),
    "depth-only": K4ARecordingConfig(color_format=None, depth_mode="WFOV_2X2BINNED", fps=30),
    "mjpg+depth+ir": K4ARecordingConfig(color_format="MJPG", color_resolution="720P",
                                        depth_mode="NFOV_UNBINNED", fps=5, ir=True),
}


def write_clip(path: Path, config: K4ARecordingConfig, calibration_json: bytes, n: int = N_FRAMES) -> list:
    frames = []
    period = 1_000_000 // config.fps
    with K4ARecordingWriter(path, config, calibration_json, tags={"FUSEMESH_SEQUENCE": "unit-test"}) as writer:
        for i in range(n):
            ts = T0_USEC + i * period
            color = color_frame(i, *config.color_size) if config.has_color else None
            if color is not None and config.color_format == "BGRA32":
                color = np.dstack([color, np.full(config.color_size, 200 + i, np.uint8)])
            depth = plane_frame(i, *config.depth_size) if config.has_depth else None
            ir = plane_frame(100 + i, *config.depth_size) if config.ir else None
            writer.write(ts, color=color, depth=depth, ir=ir)
            frames.append((ts, color, depth, ir))
        assert writer.frames_written == n
    return frames


def read_all(playback: PyK4APlayback) -> list:
    captures = []
    while True:
        try:
            captures.append(playback.get_next_capture())
        except EOFError:
            return captures


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


@pytest.mark.parametrize("case", list(CASES))
def test_clip_reads_back_with_pyk4a(tmp_path, calibration_json, case):
    config = CASES[case]
    path = tmp_path / f"{case}.mkv"
    frames = write_clip(path, config, calibration_json)

    with PyK4APlayback(path) as playback:
        conf = playback.configuration
        # pyk4a hands the configuration back as ints (IntEnums in pyk4a-bundle 1.5): compare as ints.
        assert int(conf["depth_mode"]) == DepthMode[config.depth_mode]
        assert int(conf["camera_fps"]) == FPS[f"FPS_{config.fps}"]
        if config.has_color:
            assert int(conf["color_resolution"]) == ColorResolution[f"RES_{config.color_resolution}"]
            assert int(conf["color_format"]) == ImageFormat[f"COLOR_{config.color_format}"]
        else:
            assert int(conf["color_resolution"]) == ColorResolution.OFF
        assert conf["color_track_enabled"] == config.has_color
        assert conf["depth_track_enabled"] is True
        assert conf["start_timestamp_offset_usec"] == T0_USEC
        assert playback.length == frames[-1][0] - T0_USEC

        # Calibration: the attachment is there and the SDK's per-mode intrinsics follow from our JSON.
        written = json.loads(calibration_json)
        assert json.loads(playback.calibration_raw) == written
        K = playback.calibration.get_camera_matrix(CalibrationType.DEPTH)
        fx, fy, cx, cy = expected_pinhole(written, "CALIBRATION_CameraLocationD0",
                                          DEPTH_MODE_GEOMETRY[config.depth_mode])
        np.testing.assert_allclose([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], [fx, fy, cx, cy], atol=1e-3)
        if config.has_color:
            Kc = playback.calibration.get_camera_matrix(CalibrationType.COLOR)
            fx, fy, cx, cy = expected_pinhole(written, "CALIBRATION_CameraLocationPV0",
                                              COLOR_MODE_GEOMETRY[config.color_resolution])
            np.testing.assert_allclose([Kc[0, 0], Kc[1, 1], Kc[0, 2], Kc[1, 2]], [fx, fy, cx, cy], atol=1e-3)

        captures = read_all(playback)

    assert len(captures) == N_FRAMES
    for cap, (ts, color, depth, ir) in zip(captures, frames):
        assert cap.depth.dtype == np.uint16
        np.testing.assert_array_equal(cap.depth, depth)  # bit-exact, byte order included
        assert cap.depth_timestamp_usec == ts
        if config.ir:
            np.testing.assert_array_equal(cap.ir, ir)
            assert cap.ir_timestamp_usec == ts
        else:
            assert cap.ir is None
        if config.color_format is None:
            assert cap.color is None
        elif config.color_format == "MJPG":
            assert cap.color_timestamp_usec == ts
            decoded = cv2.imdecode(cap.color, cv2.IMREAD_COLOR)  # MJPG playback: the JPEG bytes
            assert decoded.shape == color.shape
            assert psnr(decoded, color) > 30.0
        else:
            assert cap.color_timestamp_usec == ts
            np.testing.assert_array_equal(cap.color, color)  # BGRA32 is stored raw


def test_tags_and_bgr_input_for_bgra_recording(tmp_path, calibration_json):
    path = tmp_path / "bgr.mkv"
    config = K4ARecordingConfig(color_format="BGRA32", depth_mode="OFF")
    bgr = color_frame(0, *config.color_size)
    with K4ARecordingWriter(path, config, calibration_json, tags={"FUSEMESH_MOTION": "walk-3s"}) as writer:
        writer.write(0, color=bgr)
    assert b"FUSEMESH_MOTION" in path.read_bytes() and b"walk-3s" in path.read_bytes()
    with PyK4APlayback(path) as playback:
        assert int(playback.configuration["depth_mode"]) == DepthMode.OFF
        (cap,) = read_all(playback)
    np.testing.assert_array_equal(cap.color[..., :3], bgr)
    assert np.all(cap.color[..., 3] == 255)


def test_passive_ir_recording(tmp_path, calibration_json):
    path = tmp_path / "pir.mkv"
    config = K4ARecordingConfig(color_format=None, depth_mode="PASSIVE_IR", ir=True, fps=15)
    ir = plane_frame(7, 1024, 1024)
    with K4ARecordingWriter(path, config, calibration_json) as writer:
        writer.write(123, ir=ir)
        with pytest.raises(RecordingError, match="no depth track"):
            writer.write(456, depth=np.zeros((1024, 1024), np.uint16))
    with PyK4APlayback(path) as playback:
        assert int(playback.configuration["depth_mode"]) == DepthMode.PASSIVE_IR
        (cap,) = read_all(playback)
    np.testing.assert_array_equal(cap.ir, ir)
    assert cap.depth is None and cap.ir_timestamp_usec == 123


def test_file_is_valid_after_an_error_inside_the_with_block(tmp_path, calibration_json):
    path = tmp_path / "partial.mkv"
    config = K4ARecordingConfig(color_format=None)
    with pytest.raises(ZeroDivisionError):
        with K4ARecordingWriter(path, config, calibration_json) as writer:
            for i in range(3):
                writer.write(1000 + i, depth=plane_frame(i, 576, 640))
            1 / 0
    assert writer.closed
    with PyK4APlayback(path) as playback:
        captures = read_all(playback)
    assert [c.depth_timestamp_usec for c in captures] == [1000, 1001, 1002]
    with pytest.raises(RecordingError, match="closed"):
        writer.write(2000, depth=plane_frame(0, 576, 640))
    writer.close()  # idempotent


def test_shared_default_calibration_round_trips(tmp_path):
    if not SHARED_CALIBRATION_FILE.exists():
        pytest.skip("assets/calibration/azure_kinect_default.json not written yet")
    raw = SHARED_CALIBRATION_FILE.read_bytes()
    path = tmp_path / "shared.mkv"
    with K4ARecordingWriter(path, K4ARecordingConfig(color_format=None), raw) as writer:
        writer.write(0, depth=plane_frame(0, 576, 640))
    with PyK4APlayback(path) as playback:
        assert json.loads(playback.calibration_raw) == json.loads(raw)
        K = playback.calibration.get_camera_matrix(CalibrationType.DEPTH)
    fx, fy, cx, cy = expected_pinhole(json.loads(raw), "CALIBRATION_CameraLocationD0",
                                      DEPTH_MODE_GEOMETRY["NFOV_UNBINNED"])
    np.testing.assert_allclose([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], [fx, fy, cx, cy], atol=1e-3)


# -- bad input -----------------------------------------------------------------------------------------

def test_missing_output_folder_is_a_clear_error(tmp_path, calibration_json):
    with pytest.raises(RecordingError, match="output folder does not exist"):
        K4ARecordingWriter(tmp_path / "nope" / "clip.mkv", K4ARecordingConfig(), calibration_json)


def test_existing_file_needs_overwrite(tmp_path, calibration_json):
    path = tmp_path / "clip.mkv"
    path.write_bytes(b"keep me")
    with pytest.raises(RecordingError, match="already exists"):
        K4ARecordingWriter(path, K4ARecordingConfig(color_format=None), calibration_json)
    assert path.read_bytes() == b"keep me"
    with K4ARecordingWriter(path, K4ARecordingConfig(color_format=None), calibration_json, overwrite=True) as w:
        w.write(0, depth=np.zeros((576, 640), np.uint16))
    with PyK4APlayback(path) as playback:
        assert len(read_all(playback)) == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth=np.zeros((288, 320), np.uint16)), r"depth must have shape \(576, 640\)"),
    (dict(depth=np.zeros((576, 640), np.float32)), "depth must be uint16"),
    (dict(color=np.zeros((1080, 1920, 3), np.uint8)), r"color must have shape \(720, 1280, 3\)"),
    (dict(color=np.zeros((720, 1280, 4), np.uint8)), r"color must have shape \(720, 1280, 3\)"),
    (dict(color=np.zeros((720, 1280, 3), np.float32)), "color must be uint8"),
    (dict(ir=np.zeros((576, 640), np.uint16)), "ir=False"),
    (dict(), "at least one of color, depth, ir"),
])
def test_bad_frames_are_rejected(tmp_path, calibration_json, kwargs, message):
    with K4ARecordingWriter(tmp_path / "c.mkv", K4ARecordingConfig(), calibration_json) as writer:
        with pytest.raises(RecordingError, match=message):
            writer.write(0, **kwargs)
        assert writer.frames_written == 0


def test_timestamps_must_increase(tmp_path, calibration_json):
    with K4ARecordingWriter(tmp_path / "t.mkv", K4ARecordingConfig(color_format=None), calibration_json) as w:
        depth = np.zeros((576, 640), np.uint16)
        w.write(100, depth=depth)
        with pytest.raises(RecordingError, match="must increase: 100 after 100"):
            w.write(100, depth=depth)
        with pytest.raises(RecordingError, match="must be an int"):
            w.write(200.0, depth=depth)
        w.write(101, depth=depth)
        assert w.frames_written == 2
    with K4ARecordingWriter(tmp_path / "u.mkv", K4ARecordingConfig(color_format=None), calibration_json) as w:
        with pytest.raises(RecordingError, match=">= 0"):
            w.write(-1, depth=depth)


def test_color_given_to_depth_only_recording(tmp_path, calibration_json):
    with K4ARecordingWriter(tmp_path / "d.mkv", K4ARecordingConfig(color_format=None), calibration_json) as w:
        with pytest.raises(RecordingError, match="no color track"):
            w.write(0, color=np.zeros((720, 1280, 3), np.uint8))


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth_mode="NFOV"), "depth_mode must be one of"),
    (dict(color_resolution="4K"), "color_resolution must be one of"),
    (dict(color_format="YUY2"), "color_format must be one of"),
    (dict(fps=25), "fps must be one of"),
    (dict(depth_mode="WFOV_UNBINNED", fps=30), "max 15"),
    (dict(color_resolution="3072P", fps=30), "max 15"),
    (dict(depth_mode="OFF", ir=True), "ir=True needs a depth_mode"),
    (dict(depth_mode="PASSIVE_IR"), "set ir=True"),
    (dict(color_format=None, depth_mode="OFF"), "nothing to record"),
])
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(RecordingError, match=message):
        K4ARecordingConfig(**kwargs)


def test_config_from_dict_is_strict():
    assert K4ARecordingConfig.from_dict({"depth_mode": "WFOV_2X2BINNED", "fps": 15}).depth_size == (512, 512)
    with pytest.raises(RecordingError, match="unknown key 'deph_mode'; did you mean 'depth_mode'"):
        K4ARecordingConfig.from_dict({"deph_mode": "NFOV_UNBINNED"})


@pytest.mark.parametrize("calibration, message", [
    (b"{not json", "not valid JSON"),
    (b'{"Cameras": []}', "no 'CalibrationInformation'"),
    (b'{"CalibrationInformation": {"Cameras": []}}', "not accepted by the Azure Kinect SDK"),
])
def test_bad_calibration_is_rejected(tmp_path, calibration, message):
    path = tmp_path / "c.mkv"
    with pytest.raises(RecordingError, match=message):
        K4ARecordingWriter(path, K4ARecordingConfig(), calibration)
    assert not path.exists()


@pytest.mark.parametrize("tags, message", [
    ({"K4A_DEVICE_SERIAL_NUMBER": "1"}, "reserved"),
    ({"lower case": "1"}, "A-Z"),
    ({"OK": 3}, "must be a str"),
])
def test_bad_tags_are_rejected(tmp_path, calibration_json, tags, message):
    with pytest.raises(RecordingError, match=message):
        K4ARecordingWriter(tmp_path / "c.mkv", K4ARecordingConfig(), calibration_json, tags=tags)


@pytest.mark.parametrize("keep", [0.01, 0.5, 0.99])
def test_truncated_recording_makes_playback_raise(tmp_path, calibration_json, keep):
    """A cut-off file (e.g. a copy interrupted mid-way) does not open: the SDK reads the cues and the
    segment size written at close, so `PyK4APlayback.open()` raises pyk4a's K4AException
    ("Cannot open file ...") rather than returning a partial clip."""
    full = tmp_path / "full.mkv"
    write_clip(full, CASES["depth-only"], calibration_json, n=4)
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * keep)])
    playback = PyK4APlayback(cut)
    with pytest.raises(K4AException, match="Cannot open file"):
        playback.open()


def test_unclosed_recording_makes_playback_raise(tmp_path, calibration_json):
    """A writer that never reaches close() (killed process) leaves a file without cues: unreadable."""
    path = tmp_path / "open.mkv"
    writer = K4ARecordingWriter(path, CASES["depth-only"], calibration_json)
    try:
        for i in range(4):
            writer.write(i * 33_333, depth=plane_frame(i, 512, 512))
        snapshot = tmp_path / "snapshot.mkv"
        snapshot.write_bytes(path.read_bytes())
    finally:
        writer.close()
    with pytest.raises(K4AException, match="Cannot open file"):
        PyK4APlayback(snapshot).open()
    with PyK4APlayback(path) as playback:  # the closed original is fine
        assert len(read_all(playback)) == 4


# -- ground-truth sidecar ------------------------------------------------------------------------------

def test_sidecar_round_trip_keyed_by_timestamp(tmp_path):
    mkv = tmp_path / "clip.mkv"
    ts = np.array([2_000_000, 2_033_333, 2_066_666])
    joints = np.arange(3 * 24 * 3, dtype=np.float32).reshape(3, 24, 3)
    pose = np.linspace(0, 1, 3 * 72).reshape(3, 72)
    out = write_sidecar(mkv, ts, joints=joints, pose=pose)
    assert out == tmp_path / "clip.gt.npz" == sidecar_path(mkv)
    gt = read_sidecar(mkv)
    assert len(gt) == 3 and gt.timestamps_usec.dtype == np.int64
    np.testing.assert_array_equal(gt.timestamps_usec, ts)
    frame = gt.frame(2_033_333)
    np.testing.assert_array_equal(frame["joints"], joints[1])
    np.testing.assert_array_equal(frame["pose"], pose[1])
    assert frame["joints"].dtype == np.float32
    with pytest.raises(RecordingError, match="no ground truth at timestamp 2033334"):
        gt.frame(2_033_334)


@pytest.mark.parametrize("ts, arrays, message", [
    ([0, 2, 1], dict(a=np.zeros(3)), "strictly increasing"),
    ([0, 1], dict(a=np.zeros(3)), "must have 2 rows"),
    ([0.0, 1.0], dict(a=np.zeros(2)), "integer"),
    ([0, 1], dict(), "at least one"),
    ([0, 1], dict(a=np.array(["x", "y"])), "must be numeric"),
])
def test_sidecar_bad_input(tmp_path, ts, arrays, message):
    with pytest.raises(RecordingError, match=message):
        write_sidecar(tmp_path / "clip.mkv", ts, **arrays)


def test_sidecar_path_rules(tmp_path):
    assert sidecar_path("a/b/clip.gt.npz") == Path("a/b/clip.gt.npz")
    with pytest.raises(RecordingError, match="expected a .mkv"):
        sidecar_path("clip.mp4")
    with pytest.raises(RecordingError, match="not found"):
        read_sidecar(tmp_path / "missing.mkv")
