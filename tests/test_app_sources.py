"""app.sources / app.frames: .mkv replay and folder sources on real files written in tmp_path.

Recordings are written by libk4arecord (training.synth.k4a_writer) or re-recorded with pyk4a's own
PyK4ARecord, then read back through pyk4a.PyK4APlayback by MkvSource: nothing in the file path is faked.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pyk4a import Config, PyK4APlayback, PyK4ARecord

from app.frames import RgbdFrame, SourceError, StreamStatus
from app.health import StreamHealth
from app.sources import FolderSource, FrameSource, MkvSource, open_source
from calibration.rig import RgbdRig
from fake_k4a import fake_color, fake_depth
from training.synth.k4a_writer import K4ARecordingConfig, K4ARecordingWriter

REPO = Path(__file__).resolve().parent.parent
CAL_PATH = REPO / "assets" / "calibration" / "azure_kinect_default.json"
CAL_JSON = CAL_PATH.read_bytes()
T0 = 1_000_000
PERIOD_30 = 1_000_000 // 30
N = 12
MJPG_720 = K4ARecordingConfig(color_format="MJPG", color_resolution="720P", depth_mode="NFOV_UNBINNED", fps=30)


def expected_rig(depth_mode: str = "NFOV_UNBINNED", color_resolution: str = "720P") -> RgbdRig:
    return RgbdRig.from_kinect_raw_json(CAL_JSON, depth_mode, color_resolution)


def write_clip(path: Path, config: K4ARecordingConfig = MJPG_720, n: int = N, color_until: int | None = None,
               timestamps: list[int] | None = None) -> Path:
    """Frame i: fake_color(i) / fake_depth(i) at T0 + i * period (color only for i < color_until)."""
    period = 1_000_000 // config.fps
    ch, cw = config.color_size
    dh, dw = config.depth_size
    with K4ARecordingWriter(path, config, CAL_JSON) as writer:
        for i in range(n):
            color = fake_color(i, ch, cw) if config.has_color and (color_until is None or i < color_until) else None
            depth = fake_depth(i, dh, dw) if config.has_depth else None
            writer.write(timestamps[i] if timestamps else T0 + i * period, color=color, depth=depth)
    return path


def rerecord(dst: Path, picks: list[tuple[Path, int]]) -> Path:
    """Record capture `i` of recording `path` for each (path, i) in `picks`, with pyk4a's PyK4ARecord (all
    inputs share one configuration). Without a device it writes no calibration attachment, like a
    recording made by a tool that forgot it. The SDK stores captures sorted by timestamp."""
    playbacks, captures = {}, {}
    for path in dict.fromkeys(path for path, _ in picks):
        playbacks[path] = PyK4APlayback(path)
        playbacks[path].open()
        captures[path] = []
        while True:
            try:
                captures[path].append(playbacks[path].get_next_capture())
            except EOFError:
                break
    cfg = next(iter(playbacks.values())).configuration
    record = PyK4ARecord(dst, Config(color_resolution=cfg["color_resolution"], color_format=cfg["color_format"],
                                     depth_mode=cfg["depth_mode"], camera_fps=cfg["camera_fps"],
                                     synchronized_images_only=False))
    record.create()
    for path, i in picks:
        record.write_capture(captures[path][i])
    record.flush()
    record.close()
    for playback in playbacks.values():
        playback.close()
    return dst


def read_all(source: FrameSource) -> list[RgbdFrame]:
    frames = []
    while (frame := source.read(1.0)) is not None:
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("mkv") / "clip.mkv")


# ------------------------------------------------------------------------------------------ mkv replay
def test_mkv_reads_every_frame_with_ids_timestamps_calibration_and_images(clip):
    with MkvSource(clip) as source:
        assert isinstance(source, FrameSource)
        assert source.is_live is False and source.name == str(clip)
        assert source.rig == expected_rig()
        frames = read_all(source)
        assert source.read(1.0) is None  # EOF stays EOF
    assert [f.frame_id for f in frames] == list(range(N))
    assert [f.timestamp_usec for f in frames] == [T0 + i * PERIOD_30 for i in range(N)]
    for i, f in enumerate(frames):
        assert (f.color_status, f.depth_status) == (StreamStatus.OK, StreamStatus.OK)
        assert f.rig == expected_rig() and f.source == str(clip) and f.streams == "rgbd"
        assert f.depth_mm.dtype == np.uint16 and np.array_equal(f.depth_mm, fake_depth(i))
        assert f.color_bgr.shape == (720, 1280, 3) and f.color_bgr.dtype == np.uint8
        err = np.abs(f.color_bgr.astype(np.int16) - fake_color(i)).astype(np.float64)
        assert err.mean() < 2.0 and np.percentile(err, 99) < 12  # JPEG q95
        assert not f.color_bgr.flags.writeable and not f.depth_mm.flags.writeable


def test_mkv_bgra32_color_is_bit_exact(tmp_path):
    cfg = K4ARecordingConfig(color_format="BGRA32", color_resolution="720P", depth_mode="NFOV_2X2BINNED", fps=15)
    path = write_clip(tmp_path / "bgra.mkv", cfg, n=4)
    with MkvSource(path) as source:
        frames = read_all(source)
        assert source.rig == expected_rig("NFOV_2X2BINNED")
    assert [f.timestamp_usec for f in frames] == [T0 + i * (1_000_000 // 15) for i in range(4)]
    for i, f in enumerate(frames):
        assert np.array_equal(f.color_bgr, fake_color(i))
        assert np.array_equal(f.depth_mm, fake_depth(i, 288, 320))


def test_seek_by_frame_and_time_land_on_the_right_frame(clip):
    with MkvSource(clip) as source:
        assert source.read().frame_id == 0
        assert source.n_frames == N
        assert source.read().frame_id == 1  # building the index kept the read position
        source.seek_frame(7)
        f = source.read()
        assert (f.frame_id, f.timestamp_usec) == (7, T0 + 7 * PERIOD_30)
        assert np.array_equal(f.depth_mm, fake_depth(7))
        source.seek_frame(2)  # backwards: not reported as a stale timestamp
        f = source.read()
        assert (f.frame_id, f.color_status, f.depth_status) == (2, StreamStatus.OK, StreamStatus.OK)
        assert np.array_equal(f.depth_mm, fake_depth(2))
        # 3 * 33333 us = 0.099999 s < 0.1 s: the first frame at or after 0.1 s is frame 4
        assert source.seek_time(0.1) == 4
        assert source.read().frame_id == 4
        assert source.seek_time(0.0999) == 3
        assert source.seek_time(0) == 0
        source.seek_frame(N - 1)
        assert source.read().frame_id == N - 1 and source.read() is None
        with pytest.raises(SourceError, match=r"frame 12 is out of range \(the recording has 12 frames\)"):
            source.seek_frame(N)
        with pytest.raises(SourceError, match="past the last frame"):
            source.seek_time(5.0)
        with pytest.raises(SourceError, match="seek time must be"):
            source.seek_time(-1)
        source.seek_frame(5)  # seeking after EOF works again
        assert source.read().frame_id == 5


def test_start_frame_and_loop_restart(clip):
    with MkvSource(clip, loop=True, start_frame=N - 2) as source:
        frames = [source.read() for _ in range(N + 4)]
    ids = [f.frame_id for f in frames]
    assert ids == [N - 2, N - 1] + list(range(N)) + [0, 1]
    assert source.loops == 2
    assert frames[2].timestamp_usec == T0  # device time restarts with the clip...
    assert all(f.color_status is StreamStatus.OK and f.depth_status is StreamStatus.OK for f in frames)  # ...not stale


def test_realtime_pacing_follows_device_time_and_drops_when_late(clip):
    with MkvSource(clip, realtime=True) as source:
        start = time.monotonic()
        frames = read_all(source)
        elapsed = time.monotonic() - start
    ids = [f.frame_id for f in frames]
    assert ids[0] == 0 and ids == sorted(ids) and len(ids) + source.dropped == N
    assert source.dropped <= 2  # a fast consumer keeps (almost) every frame; a loaded CI box may lose one
    assert elapsed >= (ids[-1] * PERIOD_30) / 1e6 - 0.01  # it waited for device time to pass

    with MkvSource(clip, realtime=True) as source:  # a consumer 3x slower than the camera
        got = []
        while (f := source.read(1.0)) is not None:
            got.append(f.frame_id)
            time.sleep(0.1)
    assert got[0] == 0 and got == sorted(got)
    assert source.dropped == N - len(got) and source.dropped >= 4


def test_replay_default_is_deterministic(clip):
    with MkvSource(clip) as a, MkvSource(clip) as b:
        fa, fb = read_all(a), read_all(b)
    assert [f.frame_id for f in fa] == [f.frame_id for f in fb]
    assert all(np.array_equal(x.color_bgr, y.color_bgr) for x, y in zip(fa, fb))


# ------------------------------------------------------------------------------------------ recording faults
def test_depth_only_recording_has_color_off(tmp_path):
    path = write_clip(tmp_path / "depth.mkv", K4ARecordingConfig(color_format=None, depth_mode="NFOV_UNBINNED"), n=3)
    with MkvSource(path) as source:
        frames = read_all(source)
    assert [(f.color_status, f.depth_status) for f in frames] == [(StreamStatus.OFF, StreamStatus.OK)] * 3
    assert all(f.color_bgr is None and f.streams == "depth" for f in frames)
    assert np.array_equal(frames[2].depth_mm, fake_depth(2))
    assert source.rig.depth == expected_rig().depth


def test_color_only_recording_has_depth_off(tmp_path):
    path = write_clip(tmp_path / "color.mkv", K4ARecordingConfig(color_format="MJPG", depth_mode="OFF"), n=3)
    with MkvSource(path) as source:
        frames = read_all(source)
    assert [(f.color_status, f.depth_status) for f in frames] == [(StreamStatus.OK, StreamStatus.OFF)] * 3
    assert [f.timestamp_usec for f in frames] == [T0, T0 + PERIOD_30, T0 + 2 * PERIOD_30]  # color time
    assert all(f.depth_mm is None and f.streams == "rgb" for f in frames)


def test_color_track_that_stops_mid_clip_drops_to_depth_after_hysteresis(tmp_path):
    path = write_clip(tmp_path / "stops.mkv", n=10, color_until=5)
    health = StreamHealth(drop_after=3, restore_after=5)
    with MkvSource(path) as source:
        frames = read_all(source)
    assert [f.color_status for f in frames] == [StreamStatus.OK] * 5 + [StreamStatus.MISSING] * 5
    assert all(f.depth_status is StreamStatus.OK for f in frames)
    modes = [health.update(f).mode for f in frames]
    assert modes == ["rgbd"] * 7 + ["depth"] * 3  # the 3rd missing color frame (id 7) switches
    assert health.mode_changes == 1


def test_corrupt_jpeg_frames_are_undecodable_and_do_not_thrash(tmp_path, monkeypatch):
    real_imencode = cv2.imencode
    count = {"n": 0}

    def imencode(ext, img, params=None):  # the writer JPEG-encodes with cv2: frames 3 and 4 get garbage
        i = count["n"]
        count["n"] += 1
        if i in (3, 4):
            return True, np.frombuffer(b"\xff\xd8\xff\xe0 not really a jpeg" * 20, np.uint8).copy()
        return real_imencode(ext, img, params)

    monkeypatch.setattr(cv2, "imencode", imencode)
    path = write_clip(tmp_path / "corrupt.mkv", n=8)
    monkeypatch.undo()
    health = StreamHealth(drop_after=3)
    with MkvSource(path) as source:
        frames = read_all(source)
    statuses = [f.color_status for f in frames]
    assert statuses == [StreamStatus.OK] * 3 + [StreamStatus.UNDECODABLE] * 2 + [StreamStatus.OK] * 3
    assert frames[3].color_bgr is None and np.array_equal(frames[3].depth_mm, fake_depth(3))
    assert frames[3].streams == "depth"
    assert {health.update(f).mode for f in frames} == {"rgbd"} and health.mode_changes == 0


def test_recording_without_calibration_needs_one(tmp_path, clip):
    path = rerecord(tmp_path / "nocal.mkv", [(clip, i) for i in range(N)])
    with pytest.raises(SourceError, match=r"nocal\.mkv: the recording has no calibration \(no calibration\.json "
                                          r"attachment\); pass calibration="):
        MkvSource(path)
    with MkvSource(path, calibration=CAL_PATH) as source:  # the documented fallback: raw Kinect JSON
        frames = read_all(source)
        assert source.rig == expected_rig()
    assert [f.frame_id for f in frames] == list(range(N))
    assert np.array_equal(frames[5].depth_mm, fake_depth(5))
    rig_file = tmp_path / "rig.json"  # ... or our own rig JSON
    expected_rig().save(rig_file)
    with MkvSource(path, calibration=rig_file) as source:
        assert source.rig == expected_rig() and source.read().frame_id == 0


def test_repeated_and_backwards_timestamps_are_stale(tmp_path, clip):
    # captures re-recorded out of order: the SDK sorts them, so 2 and 3 come twice in a row
    path = rerecord(tmp_path / "back.mkv", [(clip, i) for i in [0, 1, 2, 3, 4, 5, 2, 3, 6, 7]])
    with MkvSource(path, calibration=CAL_PATH) as source:
        frames = read_all(source)
    ts = [(f.timestamp_usec - T0) // PERIOD_30 for f in frames]
    assert ts == [0, 1, 2, 2, 3, 3, 4, 5, 6, 7]
    stale = [i for i, f in enumerate(frames) if f.color_status is StreamStatus.STALE]
    assert stale == [3, 5] == [i for i, f in enumerate(frames) if f.depth_status is StreamStatus.STALE]
    assert frames[3].depth_mm is not None  # a stale image is still delivered


def test_seek_onto_a_repeated_timestamp_lands_on_the_right_capture(tmp_path, clip):
    other = tmp_path / "other.mkv"  # same timestamps, different pictures: fake_depth(i + 100)
    with K4ARecordingWriter(other, MJPG_720, CAL_JSON) as writer:
        for i in range(4):
            writer.write(T0 + i * PERIOD_30, color=fake_color(i + 100), depth=fake_depth(i + 100))
    path = rerecord(tmp_path / "dup.mkv", [(clip, 0), (clip, 1), (clip, 2), (other, 2), (clip, 3)])
    with MkvSource(path, calibration=CAL_PATH) as source:
        frames = read_all(source)
        assert [f.depth_status.value for f in frames] == ["ok", "ok", "ok", "stale", "ok"]
        assert np.array_equal(frames[3].depth_mm, fake_depth(102))
        for i, expected in [(3, 102), (2, 2), (4, 3), (3, 102)]:
            source.seek_frame(i)
            f = source.read()
            assert f.frame_id == i and np.array_equal(f.depth_mm, fake_depth(expected))
        assert source.seek_time(2 * PERIOD_30 / 1e6) == 2  # the first capture at that time


def test_timestamp_gap_is_counted_not_an_error(tmp_path, clip):
    path = rerecord(tmp_path / "gap.mkv", [(clip, i) for i in [0, 1, 2, 8, 9]])
    with MkvSource(path, calibration=CAL_PATH) as source:
        frames = read_all(source)
        assert source.checker.gaps == 1
    assert [f.frame_id for f in frames] == [0, 1, 2, 3, 4]
    assert [(f.timestamp_usec - T0) // PERIOD_30 for f in frames] == [0, 1, 2, 8, 9]
    assert all(f.streams == "rgbd" for f in frames)


@pytest.mark.parametrize("keep", [0, 3, 200, 0.3, 0.7, -40])
def test_truncated_recording_is_a_clear_error(tmp_path, clip, keep):
    data = clip.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    path = tmp_path / "cut.mkv"
    path.write_bytes(data[:n])
    expected = "not a Matroska file" if n < 4 else "libk4arecord cannot open it (truncated or unfinished"
    with pytest.raises(SourceError, match=r"cut\.mkv: " + re_escape(expected)):
        MkvSource(path)


def re_escape(text: str) -> str:
    import re
    return re.escape(text)


def test_not_matroska_and_missing_files(tmp_path):
    text = tmp_path / "notes.mkv"
    text.write_text("hello, not a video")
    with pytest.raises(SourceError, match=r"notes\.mkv: not a Matroska file \(starts with b'hell'"):
        MkvSource(text)
    other = tmp_path / "other.mkv"
    other.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(1000))  # Matroska magic, no K4A content
    with pytest.raises(SourceError, match="libk4arecord cannot open it"):
        MkvSource(other)
    with pytest.raises(SourceError, match=r"missing\.mkv: recording not found"):
        MkvSource(tmp_path / "missing.mkv")


def test_open_source_dispatch(tmp_path, clip):
    with open_source(str(clip)) as source:
        assert isinstance(source, MkvSource)
    folder = make_folder(tmp_path / "ds", n=1)
    with open_source(folder) as source:
        assert isinstance(source, FolderSource)
    with pytest.raises(SourceError, match=r"bad device spec 'k4a:x'"):
        open_source("k4a:x")
    with pytest.raises(SourceError, match=r"nope\.avi: no such file or folder"):
        open_source(tmp_path / "nope.avi")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(SourceError, match=r"a\.txt: not a source"):
        open_source(tmp_path / "a.txt")


def test_closed_source_read_is_an_error(clip):
    source = MkvSource(clip)
    source.close()
    source.close()  # idempotent
    with pytest.raises(SourceError, match="source is closed"):
        source.read()


# ------------------------------------------------------------------------------------------ folder
def make_folder(root: Path, n: int = 4, color_ext: str = ".png", calibration: str = "rig",
                timestamps: list[int] | None = None) -> Path:
    """color/00000i<ext> = fake_color(i), depth/00000i.png = fake_depth(i), calibration.json."""
    (root / "color").mkdir(parents=True)
    (root / "depth").mkdir()
    for i in range(n):
        cv2.imwrite(str(root / "color" / f"{i:06d}{color_ext}"), fake_color(i))
        cv2.imwrite(str(root / "depth" / f"{i:06d}.png"), fake_depth(i))
    if calibration == "rig":
        expected_rig().save(root / "calibration.json")
    elif calibration == "raw":
        (root / "calibration.json").write_bytes(CAL_JSON)
    if timestamps is not None:
        (root / "timestamps.txt").write_text("# device time, us\n" + "\n".join(map(str, timestamps)) + "\n")
    return root


def test_folder_source_reads_the_dataset_layout(tmp_path):
    ts = [5_000, 38_000, 71_000, 104_000]
    folder = make_folder(tmp_path / "ds", timestamps=ts)
    with FolderSource(folder) as source:
        assert source.rig == expected_rig() and len(source) == 4
        frames = read_all(source)
    assert [f.frame_id for f in frames] == [0, 1, 2, 3]
    assert [f.timestamp_usec for f in frames] == ts
    for i, f in enumerate(frames):
        assert np.array_equal(f.color_bgr, fake_color(i))  # PNG: lossless
        assert np.array_equal(f.depth_mm, fake_depth(i))
        assert f.streams == "rgbd"


def test_folder_raw_kinect_calibration_and_jpeg_and_default_timestamps(tmp_path):
    folder = make_folder(tmp_path / "ds", n=2, color_ext=".jpg", calibration="raw")
    with FolderSource(folder, fps=15) as source:
        assert source.rig == expected_rig("NFOV_UNBINNED", "720P")  # modes inferred from the image sizes
        frames = read_all(source)
    assert [f.timestamp_usec for f in frames] == [0, 66_667]
    assert np.abs(frames[1].color_bgr.astype(np.int16) - fake_color(1)).mean() < 3


def test_folder_stream_faults_are_statuses(tmp_path):
    folder = make_folder(tmp_path / "ds", n=6)
    (folder / "color" / "000001.png").unlink()                         # missing color
    (folder / "color" / "000002.png").write_bytes(b"\x89PNG garbage")  # undecodable color
    cv2.imwrite(str(folder / "color" / "000003.png"), np.zeros((720, 1280, 3), np.uint8))  # black
    cv2.imwrite(str(folder / "depth" / "000004.png"), np.zeros((576, 640), np.uint16))     # all zero
    sparse = np.zeros((576, 640), np.uint16)
    sparse[:5, :] = 1000  # 0.9 % valid < 2 %
    cv2.imwrite(str(folder / "depth" / "000005.png"), sparse)
    with FolderSource(folder) as source:
        frames = read_all(source)
    assert [(f.color_status.value, f.depth_status.value) for f in frames] == [
        ("ok", "ok"), ("missing", "ok"), ("undecodable", "ok"), ("empty", "ok"), ("ok", "empty"), ("ok", "empty")]
    assert frames[3].color_bgr is not None and frames[4].depth_mm is not None  # blank images still delivered
    assert [f.streams for f in frames] == ["rgbd", "depth", "depth", "depth", "rgb", "rgb"]


def test_folder_backwards_timestamp_and_loop(tmp_path):
    folder = make_folder(tmp_path / "ds", n=4, timestamps=[100, 200, 150, 300])
    with FolderSource(folder, loop=True) as source:
        frames = [source.read() for _ in range(6)]
    assert [f.frame_id for f in frames] == [0, 1, 2, 3, 0, 1]
    assert [f.depth_status.value for f in frames] == ["ok", "ok", "stale", "ok", "ok", "ok"]
    assert source.loops == 1


def test_folder_bad_input_messages(tmp_path):
    with pytest.raises(SourceError, match=r"nothing: folder not found"):
        FolderSource(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"empty: no color/ or depth/ subfolder"):
        FolderSource(tmp_path / "empty")
    nocal = make_folder(tmp_path / "nocal", n=1, calibration="none")
    with pytest.raises(SourceError, match=r"nocal: no calibration\.json"):
        FolderSource(nocal)
    with FolderSource(nocal, calibration=CAL_PATH) as source:  # fallback: calibration given explicitly
        assert source.rig == expected_rig()
    bad8 = make_folder(tmp_path / "bad8", n=2)
    cv2.imwrite(str(bad8 / "depth" / "000001.png"), np.full((576, 640), 200, np.uint8))
    with FolderSource(bad8) as source:
        source.read()
        with pytest.raises(SourceError, match=r"000001\.png: depth PNGs must be 16-bit single-channel millimetres, "
                                              r"got uint8"):
            source.read()
    ts = make_folder(tmp_path / "ts", n=2, timestamps=[1, 2, 3])
    with pytest.raises(SourceError, match=r"timestamps\.txt: 3 timestamps for 2 frames"):
        FolderSource(ts)
    (ts / "timestamps.txt").write_text("10\nlater\n")
    with pytest.raises(SourceError, match=r"timestamps\.txt:2: expected an integer timestamp"):
        FolderSource(ts)
    small = tmp_path / "small"
    (small / "depth").mkdir(parents=True)
    cv2.imwrite(str(small / "depth" / "0.png"), np.ones((48, 64), np.uint16))
    (small / "calibration.json").write_bytes(CAL_JSON)
    with pytest.raises(SourceError, match=r"raw Kinect calibration needs Kinect image sizes"):
        FolderSource(small)
    expected_rig().save(small / "calibration.json")
    with pytest.raises(SourceError, match=r"small: depth images are 64x48 but the calibration's depth camera is "
                                          r"640x576"):
        FolderSource(small)
    (small / "calibration.json").write_text(json.dumps({"format": "fusemesh.rgbd_rig", "versoin": 1}))
    with pytest.raises(SourceError, match=r"bad calibration: .*versoin"):
        FolderSource(small)


# ------------------------------------------------------------------------------------------ frames
def test_rgbd_frame_validates_images_against_statuses():
    rig = expected_rig()
    depth = fake_depth(0)
    with pytest.raises(ValueError, match="color_bgr is None but its status is OK"):
        RgbdFrame(0, 0, None, depth, rig, "t")
    with pytest.raises(ValueError, match=r"depth_mm must be a \(H, W\) uint16 array, got float32"):
        RgbdFrame(0, 0, None, depth.astype(np.float32), rig, "t", color_status=StreamStatus.MISSING)
    with pytest.raises(ValueError, match="depth_mm is given but its status is MISSING"):
        RgbdFrame(0, 0, None, depth, rig, "t", StreamStatus.OFF, StreamStatus.MISSING)
    frame = RgbdFrame(3, 9, None, depth, rig, "t", color_status="undecodable")
    assert frame.color_status is StreamStatus.UNDECODABLE and frame.streams == "depth"
    assert depth.flags.writeable and not frame.depth_mm.flags.writeable  # caller's array untouched


# ------------------------------------------------------------------------------------------ decode timing
def test_frames_carry_the_decode_time_of_their_images(clip, tmp_path):
    import time

    with MkvSource(clip) as source:
        for _ in range(3):
            t0 = time.perf_counter()
            f = source.read(1.0)
            wall_ms = (time.perf_counter() - t0) * 1e3
            # a 1280x720 JPEG takes milliseconds to decode, inside the read
            assert f.decode_ms is not None and 0.1 < f.decode_ms <= wall_ms
            assert f.host_time_s <= time.perf_counter() - f.decode_ms / 1e3  # taken before the decode
    depth_only = write_clip(tmp_path / "depth.mkv", K4ARecordingConfig(color_format=None, depth_mode="NFOV_UNBINNED"),
                            n=1)
    with MkvSource(depth_only) as source:
        assert source.read(1.0).decode_ms is None  # nothing to decode: raw DEPTH16
    folder = make_folder(tmp_path / "ds", n=1)
    with FolderSource(folder) as source:
        t0 = time.perf_counter()
        f = source.read(1.0)
        wall_ms = (time.perf_counter() - t0) * 1e3
    assert 0.0 < f.decode_ms <= wall_ms  # reading + decoding the two PNGs
