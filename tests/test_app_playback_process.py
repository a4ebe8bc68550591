"""app.playback_process: recordings read by a child process that is restarted where it stopped.

The child is a real interpreter running pyk4a on the demo recording; its deaths are real (SIGKILL from
the test, or a child command that aborts), standing in for libk4arecord's own crashes
(docs/reliability.md).
"""
import os
import signal

import numpy as np
import pyk4a
import pytest

import app.playback_process as pp
from app.frames import SourceError
from app.sources import MkvSource

DEMO = os.path.join(os.path.dirname(__file__), "..", "assets", "demo", "demo.mkv")


@pytest.fixture(scope="module")
def reference():
    """Every capture of the demo read in this process: (color bytes, depth, color ts, depth ts)."""
    pb = pyk4a.PyK4APlayback(DEMO)
    pb.open()
    out = []
    while True:
        try:
            c = pb.get_next_capture()
        except EOFError:
            break
        out.append((np.array(c.color), np.array(c.depth), int(c.color_timestamp_usec), int(c.depth_timestamp_usec)))
    pb.close()
    return out


def _same(capture: pp.Capture, ref: tuple) -> bool:
    return (np.array_equal(capture.color, ref[0]) and np.array_equal(capture.depth, ref[1])
            and capture.color_timestamp_usec == ref[2] and capture.depth_timestamp_usec == ref[3])


def _kill_child(playback: pp.PlaybackProcess) -> None:
    playback._proc.send_signal(signal.SIGKILL)
    playback._proc.wait(timeout=10)


@pytest.mark.parametrize("isolated", [True, False])
def test_captures_header_and_seeks_match_pyk4a_in_process(reference, isolated):
    pb = pp.open_playback(DEMO, isolated=isolated)
    assert isinstance(pb, pp.PlaybackProcess if isolated else pp.InProcessPlayback)
    pb.open()
    try:
        ref = pyk4a.PyK4APlayback(DEMO)
        ref.open()
        assert pb.configuration == ref.configuration and pb.length == ref.length
        assert pb.calibration and pb.calibration_raw == ref.calibration_raw
        ref.close()
        got = []
        with pytest.raises(EOFError):
            while True:
                got.append(pb.get_next_capture())
        assert len(got) == len(reference) and all(_same(c, r) for c, r in zip(got, reference))
        pb.seek(reference[20][3], pyk4a.SeekOrigin.DEVICE_TIME)
        assert _same(pb.get_next_capture(), reference[20])
        pb.seek(0)
        assert _same(pb.get_next_capture(), reference[0])
        assert pb.restarts == 0
    finally:
        pb.close()
    assert getattr(pb, "_proc", None) is None


@pytest.mark.parametrize("kill_after", [0, 1, 17, 56])
def test_a_killed_reader_resumes_with_the_next_capture(reference, kill_after):
    pb = pp.PlaybackProcess(DEMO)
    pb.open()
    try:
        for i in range(kill_after):
            assert _same(pb.get_next_capture(), reference[i])
        _kill_child(pb)
        if kill_after < len(reference):
            assert _same(pb.get_next_capture(), reference[kill_after])
            for i in range(kill_after + 1, min(kill_after + 4, len(reference))):
                assert _same(pb.get_next_capture(), reference[i])
        assert pb.restarts == 1
    finally:
        pb.close()


def test_a_reader_killed_after_a_seek_or_at_the_end_comes_back_there(reference):
    pb = pp.PlaybackProcess(DEMO)
    pb.open()
    try:
        for _ in range(5):
            pb.get_next_capture()
        pb.seek(reference[40][3], pyk4a.SeekOrigin.DEVICE_TIME)
        _kill_child(pb)
        assert _same(pb.get_next_capture(), reference[40])
        pb.seek(0)
        _kill_child(pb)
        assert _same(pb.get_next_capture(), reference[0])
        pb.seek(reference[-1][3], pyk4a.SeekOrigin.DEVICE_TIME)
        assert _same(pb.get_next_capture(), reference[-1])
        with pytest.raises(EOFError):
            pb.get_next_capture()
        _kill_child(pb)
        with pytest.raises(EOFError):          # still at the end
            pb.get_next_capture()
        assert pb.restarts == 3
    finally:
        pb.close()


def test_mkv_source_replay_survives_reader_deaths_without_losing_frames(reference):
    src = MkvSource(DEMO, loop=True)
    try:
        ids, depths = [], []
        for k in range(len(reference) + 20):
            if k in (10, 57, 60):
                _kill_child(src._playback)
            frame = src.read(1.0)
            ids.append(frame.frame_id)
            depths.append(frame.depth_mm)
        n = len(reference)
        assert ids == [k % n for k in range(n + 20)]
        assert all(np.array_equal(d, reference[k % n][1]) for k, d in enumerate(depths))
        assert src._playback.restarts == 3 and src.loops == 1
    finally:
        src.close()


def test_a_reader_that_keeps_dying_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(pp, "_CHILD", "import os; os.abort()")
    with pytest.raises(SourceError, match="libk4arecord cannot open it"):
        MkvSource(DEMO)
    pb = pp.PlaybackProcess(DEMO)
    with pytest.raises(pyk4a.K4AException, match="crashed 3 times in a row"):
        pb.open()
    assert pb._proc is None


def test_mkv_source_reads_the_same_frames_in_process(reference, monkeypatch):
    """The non-POSIX path (no child process) through MkvSource, and its handle-less calibration call."""
    real = pp.open_playback
    monkeypatch.setattr(pp, "open_playback", lambda path, isolated=None: real(path, isolated=False))
    src = MkvSource(DEMO)
    try:
        assert isinstance(src._playback, pp.InProcessPlayback)
        src._playback.use_handle_less_calibration()
        depths = []
        while (frame := src.read(1.0)) is not None:
            depths.append(frame.depth_mm)
        assert len(depths) == len(reference) and all(np.array_equal(d, r[1]) for d, r in zip(depths, reference))
    finally:
        src.close()
