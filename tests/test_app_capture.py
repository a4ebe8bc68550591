"""Live capture through the fake device, the latest-frame mailbox, the capture thread, stream health.

KinectSource runs its real code and pyk4a's real PyK4A/PyK4ACapture code; only the device functions of
pyk4a's native module are replaced (tests/fake_k4a.py).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.capture_thread import CaptureThread
from app.frames import RgbdFrame, SourceError, SourceTimeout, StreamStatus
from app.health import FrameChecks, StreamHealth
from app.mailbox import EndOfStream, LatestFrameMailbox
from app.sources import KinectSource, MkvSource
from calibration.rig import RgbdRig
from fake_k4a import CALIBRATION_JSON, T0_USEC, FakeDevice, FakeK4A, fake_color, fake_depth
from training.synth.k4a_writer import K4ARecordingConfig, K4ARecordingWriter

PERIOD_30 = 1_000_000 // 30
RIG_720_NFOV = RgbdRig.from_kinect_raw_json(CALIBRATION_JSON, "NFOV_UNBINNED", "720P")


def fake(monkeypatch, **switches) -> FakeDevice:
    device = FakeDevice(**switches)
    FakeK4A(device).install(monkeypatch)
    return device


# ------------------------------------------------------------------------------------------ KinectSource
def test_kinect_source_delivers_fake_device_frames(monkeypatch):
    device = fake(monkeypatch)
    with KinectSource(0) as source:
        assert source.is_live and source.name == "k4a:0" and source.rig == RIG_720_NFOV
        # config flags as the SDK receives them: MJPG(0), 720P(1), NFOV_UNBINNED(2), 30 fps(2), synchronized
        assert device.config[:5] == (0, 1, 2, 2, 1) and device.started and not device.imu_started
        frames = [source.read(0.5) for _ in range(3)]
    assert [f.frame_id for f in frames] == [0, 1, 2]
    assert [f.timestamp_usec for f in frames] == [T0_USEC + i * PERIOD_30 for i in range(3)]
    for i, f in enumerate(frames):
        assert (f.color_status, f.depth_status, f.source, f.rig) == (StreamStatus.OK, StreamStatus.OK, "k4a:0",
                                                                     RIG_720_NFOV)
        assert np.abs(f.color_bgr.astype(np.int16) - fake_color(i)).mean() < 2.5  # JPEG q90, decoded here
        assert np.array_equal(f.depth_mm, fake_depth(i))
    assert not device.started and device.close_count == device.open_count == 1


def test_kinect_source_bgra32_and_depth_off(monkeypatch):
    device = fake(monkeypatch)
    with KinectSource(0, color_format="BGRA32", depth_mode="OFF", fps=15) as source:
        assert device.config[:5] == (3, 1, 0, 1, 0)  # synchronized_images_only forced off with one stream
        f = source.read(0.5)
    assert np.array_equal(f.color_bgr, fake_color(0))
    assert (f.depth_status, f.depth_mm, f.streams) == (StreamStatus.OFF, None, "rgb")
    assert f.timestamp_usec == T0_USEC  # color time when there is no depth


def test_kinect_source_per_frame_faults_become_statuses(monkeypatch):
    fake(monkeypatch, no_color_at=frozenset({1}), corrupt_color_at=frozenset({2}), black_color_at=frozenset({3}),
         zero_depth_at=frozenset({4}), no_depth_at=frozenset({5}), old_at=frozenset({6}),
         timestamps_usec={8: T0_USEC + 7 * PERIOD_30})
    with KinectSource(0) as source:
        frames = [source.read(0.5) for _ in range(10)]
    assert [(f.color_status.value, f.depth_status.value) for f in frames] == [
        ("ok", "ok"), ("missing", "ok"), ("undecodable", "ok"), ("empty", "ok"), ("ok", "empty"),
        ("ok", "missing"), ("stale", "stale"), ("ok", "ok"), ("stale", "stale"), ("ok", "ok")]
    assert frames[5].timestamp_usec == T0_USEC + 5 * PERIOD_30  # color time stands in for missing depth


def test_host_stamps_on_another_clock_disable_the_age_check(monkeypatch):
    fake(monkeypatch, wall_clock_stamps=True)  # e.g. a K4A-compatible driver stamping with epoch time
    with KinectSource(0) as source:
        frames = [source.read(0.5) for _ in range(3)]
        assert source.checker.age_check is False
    assert all(f.streams == "rgbd" for f in frames)  # not every frame STALE


def test_kinect_timeouts_then_frames_continue(monkeypatch):
    fake(monkeypatch, timeout_attempts=frozenset({1, 2}))
    with KinectSource(0) as source:
        assert source.read(0.05).frame_id == 0
        t = time.monotonic()
        with pytest.raises(SourceTimeout, match=r"k4a:0: no capture within 0\.05 s"):
            source.read(0.05)
        assert time.monotonic() - t >= 0.04  # the read really waited for its timeout
        with pytest.raises(SourceTimeout):
            source.read(0.05)
        assert [source.read(0.05).frame_id for _ in range(2)] == [1, 2]


def test_kinect_unplugged_mid_run(monkeypatch):
    device = fake(monkeypatch, unplug_after=3)
    source = KinectSource(0)
    assert [source.read(0.5).frame_id for _ in range(3)] == [0, 1, 2]
    msg = r"k4a:0: device stopped delivering captures after 3 frames \(unplugged, USB error or power loss\)"
    with pytest.raises(SourceError, match=msg):
        source.read(0.5)
    with pytest.raises(SourceError, match=msg):  # and stays failed
        source.read(0.5)
    source.close()
    source.close()
    assert device.close_count == 1 and not device.started
    with pytest.raises(SourceError, match="k4a:0: source is closed"):
        source.read(0.5)


def test_kinect_open_and_start_failures(monkeypatch):
    device = fake(monkeypatch, fail_open=True)
    with pytest.raises(SourceError, match=r"k4a:0: cannot open the device \(in use by another program"):
        KinectSource(0)
    with pytest.raises(SourceError, match=r"k4a:1: no such device \(1 Azure Kinect device\(s\) connected\)"):
        KinectSource(1)
    device.fail_open, device.fail_start = False, True
    with pytest.raises(SourceError, match=r"k4a:0: cannot start the cameras \(color 720P MJPG, depth NFOV_UNBINNED, "
                                          r"30 fps\)"):
        KinectSource(0)
    assert device.open_count == device.close_count == 1  # the failed start released the device


def test_kinect_config_errors(monkeypatch):
    fake(monkeypatch)
    with pytest.raises(SourceError, match=r"fps must be 5, 15 or 30, got 60"):
        KinectSource(0, fps=60)
    with pytest.raises(SourceError, match=r"30 fps is not available with 3072P"):
        KinectSource(0, color_resolution="3072P")
    with pytest.raises(SourceError, match=r"color_format must be one of \('MJPG', 'BGRA32'\), got 'NV12'"):
        KinectSource(0, color_format="NV12")
    with pytest.raises(SourceError, match=r"depth_mode must be OFF or one of .* got 'NFOV'"):
        KinectSource(0, depth_mode="NFOV")
    with pytest.raises(SourceError, match="both color and depth are OFF"):
        KinectSource(0, color_resolution="OFF", depth_mode="OFF")


def test_k4a_dll_dir_errors(monkeypatch, tmp_path):
    fake(monkeypatch)
    monkeypatch.setenv("K4A_DLL_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(SourceError, match=r"K4A_DLL_DIR=.*nowhere' is not a folder"):
        KinectSource(0)
    monkeypatch.setenv("K4A_DLL_DIR", str(tmp_path))
    with pytest.raises(SourceError, match=r"K4A_DLL_DIR=.* has no libk4a\.so\*"):
        KinectSource(0)


# ------------------------------------------------------------------------------------------ mailbox
def frame(i: int) -> RgbdFrame:
    return RgbdFrame(i, i * 1000, None, None, RIG_720_NFOV, "test", StreamStatus.OFF, StreamStatus.MISSING)


def test_mailbox_latest_wins_and_counts_drops():
    box = LatestFrameMailbox()
    for i in range(5):
        box.put(frame(i))
    assert box.get(0.01).frame_id == 4
    assert (box.received, box.dropped, box.delivered, box.last_dropped_id) == (5, 4, 1, 3)
    t = time.monotonic()
    assert box.get(0.05) is None and time.monotonic() - t >= 0.04  # timeout, not EOF
    box.put(frame(5))
    box.close()
    assert box.get(0.01).frame_id == 5  # the last frame survives close
    with pytest.raises(EndOfStream):
        box.get(0.01)
    with pytest.raises(SourceError, match="mailbox is closed"):
        box.put(frame(6))


def test_mailbox_slow_consumer_drops_and_keeps_order():
    box = LatestFrameMailbox()
    got = []

    def consume():
        while True:
            try:
                f = box.get(1.0)
            except EndOfStream:
                return
            if f is not None:
                got.append(f.frame_id)
                time.sleep(0.02)  # 20 ms per frame, producer puts every ~1 ms

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(200):
        box.put(frame(i))
        time.sleep(0.001)
    box.close()
    consumer.join(5)
    assert not consumer.is_alive()
    assert got == sorted(got) and len(set(got)) == len(got) and got[-1] == 199  # newest frame always arrives
    assert box.dropped > 2 * box.delivered
    assert box.received == 200 == box.delivered + box.dropped and box.delivered == len(got)


def test_mailbox_put_wait_is_backpressure():
    box = LatestFrameMailbox()
    assert box.put_wait(frame(0), timeout=0.01)
    t = time.monotonic()
    assert box.put_wait(frame(1), timeout=0.05) is False and time.monotonic() - t >= 0.04
    threading.Timer(0.05, box.get).start()
    assert box.put_wait(frame(1), timeout=2.0)  # returns once the consumer took frame 0
    assert box.get(0.1).frame_id == 1 and box.dropped == 0 and box.received == 2


def test_mailbox_reports_producer_errors():
    box = LatestFrameMailbox()
    box.close(SourceError("k4a:0: device stopped delivering captures after 3 frames"))
    with pytest.raises(SourceError, match="after 3 frames"):
        box.get(0.1)
    other = LatestFrameMailbox()
    other.close(ValueError("boom"))
    with pytest.raises(SourceError, match="capture failed: ValueError: boom"):
        other.get(0.1)


# ------------------------------------------------------------------------------------------ capture thread
@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cap") / "clip.mkv"
    cal = CALIBRATION_JSON.encode()
    with K4ARecordingWriter(path, K4ARecordingConfig(color_format="MJPG", depth_mode="NFOV_UNBINNED"), cal) as w:
        for i in range(8):
            w.write(T0_USEC + i * PERIOD_30, color=fake_color(i), depth=fake_depth(i))
    return path


def drain(capture: CaptureThread, delay_s: float = 0.0, limit_s: float = 10.0) -> list[RgbdFrame]:
    """Consume until EndOfStream (re-raises SourceError), sleeping delay_s per frame."""
    frames, deadline = [], time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            f = capture.get(0.5)
        except EndOfStream:
            return frames
        if f is not None:
            frames.append(f)
            time.sleep(delay_s)
    raise AssertionError("no end of stream")


def test_replay_thread_delivers_every_frame_to_a_slow_consumer(clip):
    with CaptureThread(MkvSource(clip)) as capture:
        assert capture.every_frame and capture.name == f"capture:{clip}"
        frames = drain(capture, delay_s=0.03)
    assert [f.frame_id for f in frames] == list(range(8))
    assert capture.mailbox.dropped == 0 and capture.eof and capture.error is None
    assert capture.source._playback is None  # the thread closed its source


def test_live_thread_latest_frame_wins(monkeypatch):
    fake(monkeypatch, frame_interval_s=0.01)  # a 100 fps camera
    capture = CaptureThread(KinectSource(0, color_format="BGRA32"), read_timeout_s=0.1)
    assert not capture.every_frame
    got = []
    with capture:
        t_end = time.monotonic() + 0.8
        while time.monotonic() < t_end:
            f = capture.get(0.5)
            if f is not None:
                got.append(f.frame_id)
                time.sleep(0.06)  # a consumer at ~15 fps
    box = capture.mailbox
    assert got == sorted(got) and len(got) >= 5
    assert box.dropped > len(got)  # most camera frames were replaced unread
    assert box.received == capture.frames_read == box.delivered + box.dropped + int(box.pending)


def test_unplug_mid_run_reaches_the_consumer_as_a_clear_error(monkeypatch):
    device = fake(monkeypatch, unplug_after=5)
    capture = CaptureThread(KinectSource(0), every_frame=True)
    with capture:
        with pytest.raises(SourceError, match=r"k4a:0: device stopped delivering captures after 5 frames"):
            drain(capture)
    assert not capture.is_alive() and isinstance(capture.error, SourceError)
    assert capture.frames_read == 5 and device.close_count == device.open_count == 1


@pytest.mark.parametrize("stall_after, where", [(0, r"since start \(device never started streaming\?\)"),
                                                (3, "after frame 3")])
def test_device_that_stops_delivering_is_reported(monkeypatch, stall_after, where):
    device = fake(monkeypatch, stall_after=stall_after)
    capture = CaptureThread(KinectSource(0), every_frame=True, read_timeout_s=0.05, stall_timeout_s=0.3)
    with capture:
        t = time.monotonic()
        with pytest.raises(SourceError, match=r"k4a:0: no frame for 0\.\d s " + where):
            drain(capture)
        assert time.monotonic() - t < 2.0
    assert capture.timeouts >= 5 and not device.started


def test_driver_crash_is_reported_not_silent(monkeypatch):
    fake(monkeypatch, crash_at=2)
    with CaptureThread(KinectSource(0), every_frame=True) as capture:
        with pytest.raises(SourceError, match=r"k4a:0: capture crashed: RuntimeError: fake driver crash"):
            drain(capture)
    assert isinstance(capture.error.__cause__, RuntimeError)


def test_stop_returns_within_join_timeout(monkeypatch):
    device = fake(monkeypatch, stall_after=0)  # reads block for their whole timeout
    capture = CaptureThread(KinectSource(0), read_timeout_s=0.1, stall_timeout_s=60, join_timeout_s=1.0)
    capture.start()
    time.sleep(0.15)
    t = time.monotonic()
    assert capture.stop() is True
    assert time.monotonic() - t < 0.5 and not capture.is_alive()
    assert device.close_count == 1
    with pytest.raises(EndOfStream):
        capture.get(0.1)


def test_stuck_driver_stop_gives_up_after_join_timeout(monkeypatch):
    device = fake(monkeypatch, hang_s=0.8)  # the driver ignores the read timeout
    capture = CaptureThread(KinectSource(0), read_timeout_s=0.05, join_timeout_s=0.2)
    capture.start()
    time.sleep(0.05)
    t = time.monotonic()
    assert capture.stop() is False  # reported, not waited for forever
    assert time.monotonic() - t < 0.5 and capture.daemon
    capture.join(3.0)  # the stuck read returns eventually; the thread then ends and closes the device
    assert not capture.is_alive() and device.close_count == 1


def test_ctrl_c_in_the_consumer_stops_the_thread(monkeypatch):
    device = fake(monkeypatch, frame_interval_s=0.01)
    with pytest.raises(KeyboardInterrupt):
        with CaptureThread(KinectSource(0), read_timeout_s=0.05) as capture:
            capture.get(1.0)
            raise KeyboardInterrupt
    assert not capture.is_alive() and device.close_count == 1 and not device.started


def test_stop_before_start_releases_the_source(monkeypatch):
    device = fake(monkeypatch)
    capture = CaptureThread(KinectSource(0))
    assert capture.stop() is True and device.close_count == 1


# ------------------------------------------------------------------------------------------ stream health
def status_frame(i: int, color: str, depth: str) -> RgbdFrame:
    c, d = StreamStatus(color), StreamStatus(depth)
    return RgbdFrame(i, i, fake_color(0, 8, 8) if c.has_image else None, fake_depth(0, 4, 4) if d.has_image else None,
                     RIG_720_NFOV, "test", c, d)


def run_health(health: StreamHealth, pattern: list[tuple[str, str]]) -> list[str]:
    return [health.update(status_frame(i, c, d)).mode for i, (c, d) in enumerate(pattern)]


def test_health_hysteresis_ignores_flicker_and_switches_on_persistent_faults():
    ok, miss, bad = "ok", "missing", "undecodable"
    health = StreamHealth(drop_after=3, restore_after=5)
    # color flickers for 2 frames: no switch; then 3 in a row: switch on the 3rd
    pattern = [(ok, ok)] * 2 + [(miss, ok), (bad, ok)] + [(ok, ok)] + [(miss, ok)] * 3
    assert run_health(health, pattern) == ["rgbd"] * 7 + ["depth"]
    # color comes back: 4 good frames are not enough, the 5th restores; a bad frame resets the count
    pattern = [(ok, ok)] * 4 + [(miss, ok)] + [(ok, ok)] * 5
    assert run_health(health, pattern) == ["depth"] * 9 + ["rgbd"]
    assert health.mode_changes == 2


def test_health_first_frame_decides_and_modes_cover_all_cases():
    health = StreamHealth(drop_after=2, restore_after=2)
    assert run_health(health, [("off", "ok")] * 3) == ["depth"] * 3  # no color track: depth from frame 0
    health.reset()
    assert run_health(health, [("ok", "empty"), ("ok", "stale")]) == ["rgb", "rgb"]
    health.reset()
    report = health.update(status_frame(7, "missing", "missing"))
    assert (report.frame_id, report.mode, report.color_usable, report.depth_usable, report.changed) == \
        (7, "none", False, False, False)
    assert health.update(status_frame(8, "ok", "ok")).mode == "none"  # one good frame is not enough
    report = health.update(status_frame(9, "ok", "ok"))
    assert (report.mode, report.changed) == ("rgbd", True)


def test_health_and_checks_reject_bad_settings():
    with pytest.raises(ValueError, match="drop_after must be an int >= 1, got 0"):
        StreamHealth(drop_after=0)
    with pytest.raises(ValueError, match="restore_after must be an int >= 1, got 2.5"):
        StreamHealth(restore_after=2.5)
    with pytest.raises(ValueError, match=r"min_depth_valid_fraction must be in \[0, 1\], got 5"):
        FrameChecks(min_depth_valid_fraction=5)


# ------------------------------------------------------------------------------------------ real sensor
@pytest.mark.device
def test_real_kinect_streams_30_fps():
    """Needs an Azure Kinect on USB 3 (deselected in CI): 30 frames, both streams OK, ~33 ms apart."""
    with CaptureThread(KinectSource(0), every_frame=True, stall_timeout_s=10) as capture:
        frames = [capture.get(5.0) for _ in range(30)]
    assert all(f is not None and f.streams == "rgbd" for f in frames)
    steps = np.diff([f.timestamp_usec for f in frames])
    assert np.median(steps) == pytest.approx(33_333, abs=1_000)
    assert frames[0].rig.color.size == (1280, 720) and frames[0].depth_mm.shape == (576, 640)
