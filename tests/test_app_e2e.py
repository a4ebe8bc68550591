"""End to end: `python -m app` on a synthetic Azure Kinect recording with its ground-truth sidecar.

The clip is rendered by `training.synth.record` (a person walking in a sampled room, NFOV 2x2 binned
depth + 720p MJPG color, written by libk4arecord) and read back by the real MkvSource; the model is a
random-weight `lite` export run by ONNX Runtime. Variants of the clip with a stream removed from a
frame on are re-recorded from it with `training.synth.k4a_writer`. Only the live device is faked
(tests/fake_k4a.py, pyk4a's native device functions) for the unplugged-camera case.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main
from training.synth.k4a_writer import K4ARecordingConfig, K4ARecordingWriter, read_sidecar, write_sidecar

pytestmark = pytest.mark.slow  # renders a clip (~10 s) and exports a model (~30 s CPU) once per session

REPO = Path(__file__).resolve().parent.parent
CALIBRATION = REPO / "assets" / "calibration" / "azure_kinect_default.json"
N_FRAMES, CUT = 10, 6  # clip length; the variants lose a stream from frame CUT on


def rerecord(src: Path, dst: Path, drop: str | None = None, from_frame: int = 0, color_track: bool = True) -> Path:
    """Copy a recording capture by capture (same timestamps, depth bit-exact, color re-encoded), leaving out
    `drop` ("color" | "depth") from capture `from_frame` on (color_track=False: no color track at all);
    the sidecar is copied too."""
    from pyk4a import PyK4APlayback

    pb = PyK4APlayback(src)
    pb.open()
    config = K4ARecordingConfig(color_format="MJPG" if color_track else None, color_resolution="720P",
                                depth_mode="NFOV_2X2BINNED", fps=15)
    with K4ARecordingWriter(dst, config, CALIBRATION.read_bytes()) as writer:
        i = 0
        while True:
            try:
                cap = pb.get_next_capture()
            except EOFError:
                break
            color = cv2.imdecode(np.asarray(cap.color).reshape(-1), cv2.IMREAD_COLOR)
            depth = cap.depth
            ts = int(cap.depth_timestamp_usec)
            if (i >= from_frame and drop == "color") or not color_track:
                color = None
            if i >= from_frame and drop == "depth":
                depth = None
            writer.write(ts, color=color, depth=depth)
            i += 1
    pb.close()
    gt = read_sidecar(src)
    write_sidecar(dst, gt.timestamps_usec, **gt.arrays)
    return dst


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    from model.body import DEFAULT_BODY_PATH, BodyModel
    from training.synth.record import SequenceSpec, record_sequence
    from training.synth.sample import SynthConfig, SynthEngine

    folder = tmp_path_factory.mktemp("clips")
    engine = SynthEngine(BodyModel.from_file(DEFAULT_BODY_PATH), SynthConfig())
    spec = SequenceSpec(steps=(("walk", N_FRAMES / 15),), fps=15, depth_mode="NFOV_2X2BINNED",
                        color_resolution="720P", seed=7)
    summary = record_sequence(folder / "walk.mkv", engine, spec)
    assert summary.frames == N_FRAMES
    return {"full": summary.path,
            "no_color": rerecord(summary.path, folder / "no_color.mkv", "color", CUT),
            "no_depth": rerecord(summary.path, folder / "no_depth.mkv", "depth", CUT),
            "depth_only": rerecord(summary.path, folder / "depth_only.mkv", color_track=False)}


def run(args: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------- replay
def test_replay_writes_outputs_for_every_frame(clips, lite_model, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(["--source", clips["full"], "--model", lite_model, "--providers", "cpu", "--headless",
                     "--out", out, "--meshes", "ply", "--no-progress"], capsys)
    assert code == 0, err
    gt = read_sidecar(clips["full"])
    with np.load(out / "results.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["timestamps_usec"], gt.timestamps_usec)      # every frame, in order
        assert z["frame_ids"].tolist() == list(range(N_FRAMES))
        assert z["modes"].tolist() == ["rgbd"] * N_FRAMES
        assert z["valid"].all()
        assert float(z["mocap_framerate"]) == pytest.approx(15.0, rel=1e-3)
        bbox, pelvis = z["bbox"], z["joints"][:, 0]
    # the person box is the ground truth's: flying pixels at the silhouette make the truth a few px wider, and
    # in this clip a table hides the knees, so a shin seen below it is not always joined to the person
    truth = gt.arrays["bbox_depth"]
    assert np.abs(bbox[:, 1] - truth[:, 1]).max() <= 3                                   # top (head) edge
    assert np.abs((bbox[:, 0] + bbox[:, 2]) - (truth[:, 0] + truth[:, 2])).max() / 2 <= 10  # horizontal centre
    assert np.count_nonzero(np.abs(bbox - truth).max(axis=1) <= 8) >= 0.7 * N_FRAMES
    # metric placement: random weights guess the pose, but the body stands where the person is
    assert np.abs(pelvis[:, 2] - gt.arrays["joints3d"][:, 0, 2]).max() < 0.35
    rows = jsonl(out / "frames.jsonl")
    assert len(rows) == N_FRAMES and all(r["body"] is not None for r in rows)
    # every stage is timed, the MJPEG decode in the source and the overlay's render included
    assert all(set(r["timings_ms"]) == {"capture", "decode", "align", "crop", "infer", "post", "render"} for r in rows)
    assert min(r["timings_ms"]["decode"] for r in rows) > 0.1 and min(r["timings_ms"]["render"] for r in rows) > 0.1
    assert len(list((out / "meshes").glob("mesh_*.ply"))) == N_FRAMES
    assert f"Frames: {N_FRAMES}" in (out / "motion.bvh").read_text()
    video = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == N_FRAMES
    video.release()
    assert f"{N_FRAMES} frames, {N_FRAMES} with a body (rgbd {N_FRAMES})" in err
    # outputs are never replaced without --overwrite
    before = (out / "results.npz").read_bytes()
    code, err = run(["--source", clips["full"], "--model", lite_model, "--providers", "cpu", "--headless",
                     "--out", out, "--no-progress"], capsys)
    assert code == 2 and "already exists (pass --overwrite to replace)" in err and "Traceback" not in err
    assert (out / "results.npz").read_bytes() == before
    code, err = run(["--source", clips["full"], "--model", lite_model, "--providers", "cpu", "--headless",
                     "--out", out, "--no-progress", "--overwrite", "--max-frames", "4", "--mode", "depth"], capsys)
    assert code == 0, err
    with np.load(out / "results.npz") as z:
        assert z["modes"].tolist() == ["depth"] * 4 and z["requested_modes"].tolist() == ["depth"] * 4
    assert "warm-started" not in err  # off by default
    # warm start: every frame after the first continues the track of the one person walking
    code, err = run(["--source", clips["full"], "--model", lite_model, "--providers", "cpu", "--headless",
                     "--out", tmp_path / "warm", "--no-progress", "--no-overlay", "--warm-start"], capsys)
    assert code == 0, err
    assert f"{N_FRAMES} frames, {N_FRAMES} with a body (rgbd {N_FRAMES}), {N_FRAMES - 1} warm-started" in err


@pytest.mark.parametrize("drop, fallback", [("color", "depth"), ("depth", "rgb")])
def test_a_stream_removed_mid_clip_switches_mode_on_exactly_those_frames(clips, lite_model, tmp_path, capsys, drop,
                                                                         fallback):
    out = tmp_path / "out"
    code, err = run(["--source", clips[f"no_{drop}"], "--model", lite_model, "--providers", "cpu", "--headless",
                     "--out", out, "--no-overlay", "--no-progress"], capsys)
    assert code == 0, err
    with np.load(out / "results.npz") as z:
        assert z["modes"].tolist() == ["rgbd"] * CUT + [fallback] * (N_FRAMES - CUT)
        assert z["valid"].all()  # the run completes with a body on every frame
    rows = jsonl(out / "frames.jsonl")
    if drop == "depth":  # no depth: the person box comes from the previous frame's mesh
        assert {r["message"] for r in rows[CUT:]} == {"no depth: person box from the previous mesh"}


def test_a_track_absent_from_the_start_runs_in_the_other_mode(clips, lite_model, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(["--source", clips["depth_only"], "--model", lite_model, "--providers", "cpu", "--headless",
                     "--out", out, "--no-progress"], capsys)
    assert code == 0, err
    assert "no color stream; running depth-only" in err
    with np.load(out / "results.npz") as z:
        assert z["modes"].tolist() == ["depth"] * N_FRAMES and z["valid"].all()
    assert (out / "overlay.mp4").exists()  # drawn over the depth image


# ---------------------------------------------------------------------------------------- bad input
def test_corrupt_truncated_and_missing_inputs_are_clear_errors(clips, lite_model, tmp_path, capsys):
    base = ["--model", lite_model, "--providers", "cpu", "--headless", "--no-progress"]
    bad = tmp_path / "garbage.mkv"
    bad.write_bytes(os.urandom(4096))
    half = tmp_path / "half.mkv"
    data = clips["full"].read_bytes()
    half.write_bytes(data[: len(data) // 2])
    cases = [(bad, "not a Matroska file"), (half, "libk4arecord cannot open it"),
             (tmp_path / "missing.mkv", "recording not found"), (tmp_path / "nothing", "no such file or folder")]
    for source, message in cases:
        out = tmp_path / f"out_{source.stem}"
        code, err = run(["--source", source, "--out", out, *base], capsys)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fusemesh: error: ") and message in lines[0]
        assert not out.exists()  # nothing written for an input that never opened
    junk_model = tmp_path / "junk.onnx"
    junk_model.write_bytes(os.urandom(2048))
    for model, message in ((tmp_path / "none.onnx", "model file not found"), (junk_model, "")):
        code, err = run(["--source", clips["full"], "--out", tmp_path / "m", "--model", model, "--headless"], capsys)
        assert code == 3 and err.startswith("fusemesh: error: ") and message in err and "Traceback" not in err
    code, err = run(["--source", clips["full"], "--headless", "--model", lite_model], capsys)
    assert code == 2 and "--headless needs --out DIR" in err
    code, err = run(["--mode", "infrared"], capsys)
    assert code == 2 and "invalid choice" in err


def test_missing_calibration_names_the_fix(clips, lite_model, tmp_path, capsys):
    from pyk4a import Config, PyK4APlayback, PyK4ARecord

    pb = PyK4APlayback(clips["full"])
    pb.open()
    cfg = pb.configuration
    dst = tmp_path / "nocal.mkv"  # PyK4ARecord without a device writes no calibration attachment
    rec = PyK4ARecord(dst, Config(color_resolution=cfg["color_resolution"], color_format=cfg["color_format"],
                                  depth_mode=cfg["depth_mode"], camera_fps=cfg["camera_fps"]))
    rec.create()
    for _ in range(3):
        rec.write_capture(pb.get_next_capture())
    rec.flush()
    rec.close()
    pb.close()
    base = ["--source", dst, "--model", lite_model, "--providers", "cpu", "--headless", "--no-progress"]
    code, err = run([*base, "--out", tmp_path / "a"], capsys)
    assert code == 2 and "no calibration" in err and "--calibration FILE" in err
    code, err = run([*base, "--out", tmp_path / "b", "--calibration", CALIBRATION, "--no-overlay"], capsys)
    assert code == 0, err
    with np.load(tmp_path / "b" / "results.npz") as z:
        assert len(z["frame_ids"]) == 3


def test_unplugged_camera_keeps_the_outputs_so_far(lite_model, tmp_path, capsys, monkeypatch):
    from fake_k4a import FakeDevice, FakeK4A

    FakeK4A(FakeDevice(unplug_after=5, frame_interval_s=0.02)).install(monkeypatch)
    out = tmp_path / "live"
    code, err = run(["--model", lite_model, "--providers", "cpu", "--headless", "--out", out, "--no-overlay"], capsys)
    assert code == 2
    assert "k4a:0: device stopped delivering captures after 5 frames (unplugged" in err
    with np.load(out / "results.npz") as z:   # the fake scene has nobody in it: frames without a body
        n = len(z["frame_ids"])
        assert 1 <= n <= 5 and not z["valid"].any()
    assert len(jsonl(out / "frames.jsonl")) == n
    assert {r["message"] for r in jsonl(out / "frames.jsonl")} == {"no person in view"}


def test_no_kinect_falls_back_to_the_demo_recording(clips, lite_model, tmp_path, capsys, monkeypatch):
    import k4a_module

    import app.cli

    monkeypatch.setattr(k4a_module, "device_get_installed_count", lambda: 0)  # no device plugged in
    monkeypatch.setattr(app.cli, "DEMO_RECORDING", tmp_path / "nowhere" / "demo.mkv")
    base = ["--model", lite_model, "--providers", "cpu", "--headless", "--no-overlay", "--no-progress"]
    code, err = run([*base, "--out", tmp_path / "a"], capsys)
    assert code == 2 and "no Azure Kinect" in err and "no demo recording" in err
    monkeypatch.setattr(app.cli, "DEMO_RECORDING", clips["full"])
    code, err = run([*base, "--out", tmp_path / "b", "--max-frames", "2"], capsys)
    assert code == 0 and "playing the demo recording" in err


def test_ctrl_c_exits_130_with_complete_outputs(clips, lite_model, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "app", "--source", str(clips["full"]), "--loop", "--model",
                             str(lite_model), "--providers", "cpu", "--headless", "--out", str(out), "--no-overlay",
                             "--no-progress"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            frames = out / "frames.jsonl"
            if frames.exists() and frames.read_text().count("\n") >= N_FRAMES + 3:  # looped once
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    rows = jsonl(out / "frames.jsonl")
    with np.load(out / "results.npz", allow_pickle=False) as z:
        assert len(z["frame_ids"]) == len(rows) >= N_FRAMES + 3
        assert z["frame_ids"][:N_FRAMES + 1].tolist() == list(range(N_FRAMES)) + [0]  # loop restarts ids
    assert f"Frames: {len(rows)}" in (out / "motion.bvh").read_text()


# ---------------------------------------------------------------------------------------- ground truth
def test_headless_replay_prints_pa_mpjpe_against_the_sidecar(clips, lite_model, tmp_path, capsys):
    """The sidecar next to the clip is found by default; each frame's printed error is the PA-MPJPE of the
    joints written to results.npz against the sidecar's joints (checked here with plain numpy)."""
    out = tmp_path / "gt"
    code = main([str(a) for a in ["--source", clips["full"], "--model", lite_model, "--providers", "cpu",
                                  "--headless", "--out", out, "--no-progress", "--no-overlay"]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "scoring against" in captured.err
    lines = [line for line in captured.out.splitlines() if line.startswith("frame ")]
    assert len(lines) == N_FRAMES
    printed = np.array([float(line.split("PA-MPJPE")[1].split("mm")[0]) for line in lines])
    gt = read_sidecar(clips["full"]).arrays["joints3d"].astype(np.float64)
    with np.load(out / "results.npz") as z:
        pred = z["joints"].astype(np.float64)
    expected = []
    for p, g in zip(pred, gt):
        p0, g0 = p - p.mean(0), g - g.mean(0)
        u, s, vt = np.linalg.svd(g0.T @ p0)
        D = np.diag([1, 1, np.sign(np.linalg.det(u @ vt))])
        R, scale = u @ D @ vt, np.trace(np.diag(s) @ D) / (p0 ** 2).sum()
        expected.append(1000 * np.linalg.norm(scale * p0 @ R.T + g.mean(0) - g, axis=1).mean())
    # results.npz holds the smoothed joints the scorer saw (same arrays); printed with 0.1 mm resolution
    np.testing.assert_allclose(printed, expected, atol=0.06)
    summary = [line for line in captured.out.splitlines() if line.startswith("PA-MPJPE vs")]
    assert len(summary) == 1 and f"{N_FRAMES}/{N_FRAMES} frames" in summary[0]
    assert f"mean {np.mean(expected):.1f} mm" in summary[0]
    # --no-gt: nothing scored; a broken --gt file: one line, exit 2
    code = main([str(a) for a in ["--source", clips["full"], "--model", lite_model, "--providers", "cpu",
                                  "--headless", "--out", tmp_path / "nogt", "--no-progress", "--no-overlay",
                                  "--no-gt", "--max-frames", "2"]])
    captured = capsys.readouterr()
    assert code == 0 and "PA-MPJPE" not in captured.out
    bad = tmp_path / "bad.gt.npz"
    bad.write_bytes(b"junk")
    code = main([str(a) for a in ["--source", clips["full"], "--model", lite_model, "--providers", "cpu",
                                  "--headless", "--out", tmp_path / "badgt", "--no-progress", "--gt", bad]])
    captured = capsys.readouterr()
    assert code == 2 and str(bad) in captured.err and "Traceback" not in captured.err


def test_output_folder_removed_mid_run_is_one_clear_line(clips, lite_model, tmp_path):
    """The output folder vanishes mid-run (a removed folder, an unplugged disk): writes to the open
    frames.jsonl would still succeed into a deleted file, so the writer checks before every frame. Exit 2,
    one line saying what happened, no traceback, no claim that files hold rows."""
    import shutil

    out = tmp_path / "unplugged"
    app = subprocess.Popen([sys.executable, "-m", "app", "--source", str(clips["full"]), "--loop", "--max-frames",
                            "400", "--model", str(lite_model), "--providers", "cpu", "--headless", "--out", str(out),
                            "--no-overlay", "--no-progress", "--no-gt"], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120 and app.poll() is None:
            if (out / "frames.jsonl").is_file() and len((out / "frames.jsonl").read_bytes().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert app.poll() is None, app.communicate()[1][-2000:]
        shutil.rmtree(out)
        _, err = app.communicate(timeout=120)
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()
    assert app.returncode == 2, err[-2000:]
    assert "Traceback" not in err and "removed or unmounted" in err, err[-2000:]
    assert "holds all" not in err and not out.exists()


def test_disk_full_mid_run_is_one_line_and_keeps_complete_outputs(clips, lite_model, tmp_path):
    """A file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with EFBIG like a full disk) stops the
    run part-way: exit 2 with one line, frames.jsonl holds only whole lines and results.npz reads back."""
    import resource

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (9_000, 9_000))

    out = tmp_path / "full"
    r = subprocess.run([sys.executable, "-m", "app", "--source", str(clips["full"]), "--model", str(lite_model),
                        "--providers", "cpu", "--headless", "--out", str(out), "--no-overlay", "--no-progress",
                        "--no-gt"], cwd=REPO, preexec_fn=limit, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "frames.jsonl" in errors[0] and "Traceback" not in r.stderr
    rows = jsonl(out / "frames.jsonl")                                  # every line parses: no torn line
    assert 0 < len(rows) < N_FRAMES and [row["row"] for row in rows] == list(range(len(rows)))
    with np.load(out / "results.npz") as z:
        assert 0 < len(z["frame_ids"]) <= len(rows)
        assert z["frame_ids"].tolist() == [row["frame_id"] for row in rows][:len(z["frame_ids"])]
