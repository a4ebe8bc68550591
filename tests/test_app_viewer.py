"""Viewer, 3D scene, live plots and headless overlay, all without a display.

Open3D's legacy Visualizer(visible=False) renders through EGL (Mesa) when there is no display; pyqtgraph
runs on Qt's offscreen platform (set below, before anything imports Qt). The input is built by hand: the
open body posed by `model.body` (arms lowered), turned to face the sensor and standing 2.5 m in front
of it on a floor 1 m below the camera, in front of a wall at 4 m; its depth and color images are ray-cast
through the default Azure Kinect rig with Open3D (no worker, no ONNX).

Run as a script to regenerate the documentation screenshot:  python -m tests.test_app_viewer docs/app.png
"""
from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import (pyqtgraph / PySide6)

import queue
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
import torch

from app.frames import RgbdFrame, StreamStatus
from app.headless import HeadlessError, HeadlessRenderer, OverlayRenderer, OverlayStyle, vertex_normals
from app.plots import LivePlots, RateMeter, StatsHistory
from app.results import STAGES, BodyEstimate, FrameResult, InputMode
from app.scene3d import MODE_COLORS, OffscreenView, Scene3D, SceneConfig, check_parents, sensor_view
from app.viewer import KEY_ACTIONS, KEY_BINDINGS, Viewer, ViewerConfig, help_text, run_viewer
from calibration import default_rig
from calibration.intrinsics import CameraIntrinsics
from calibration.rig import RgbdRig
from calibration.synthetic import Plane, render_rgbd
from model.body import DEFAULT_BODY_PATH, SMPL_PARENTS, BodyModel

PELVIS, SPINE2, L_KNEE, R_KNEE, SPINE3 = 0, 6, 4, 5, 9
INSIDE_JOINTS = (PELVIS, 3, SPINE2, SPINE3, L_KNEE, R_KNEE, 1, 2)  # joints well inside the torso and legs
FLOOR_Y = 1.0
DISTANCE = 2.5


# ---------------------------------------------------------------------------------------- input
@dataclass
class Person:
    rig: RgbdRig
    faces: np.ndarray      # (F, 3)
    vertices: np.ndarray   # (V, 3) m, depth camera frame
    joints: np.ndarray     # (24, 3) m, depth camera frame
    depth: np.ndarray      # (576, 640) uint16 mm
    color: np.ndarray      # (720, 1280, 3) uint8 BGR


def _raycast(camera: CameraIntrinsics, vertices_cam: np.ndarray, faces: np.ndarray):
    """z-depth (H, W) metres (inf: miss) and face normals (H, W, 3) of a mesh seen by `camera`."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices_cam.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    xy, valid = camera.xy_table()
    rays = np.zeros(valid.shape + (6,), dtype=np.float32)
    rays[..., 3:5] = xy
    rays[..., 5] = 1.0
    hits = scene.cast_rays(o3d.core.Tensor(rays.reshape(-1, 6)))
    z = hits["t_hit"].numpy().reshape(valid.shape)
    z[~valid] = np.inf
    return z, hits["primitive_normals"].numpy().reshape(valid.shape + (3,))


def build_person(body_model: BodyModel, lean: float = 0.0) -> Person:
    rig = default_rig()
    pose = torch.zeros(1, 69)
    pose[0, 45:48] = torch.tensor([0.0, 0.0, -1.0])   # left shoulder (joint 16): arm down
    pose[0, 48:51] = torch.tensor([0.0, 0.0, 1.0])    # right shoulder (joint 17)
    pose[0, 51:54] = torch.tensor([0.0, -0.5, 0.0])   # left elbow: forearm a little forward
    pose[0, 0:3] = torch.tensor([-0.25, 0.0, 0.0])    # left hip: step forward
    pose[0, 9:12] = torch.tensor([0.3, 0.0, 0.0])     # left knee
    orient = torch.tensor([[np.pi, 0.0, lean]], dtype=torch.float32)  # SMPL Y-up, facing +Z -> camera frame
    with torch.no_grad():
        out = body_model(betas=torch.zeros(1, 10), body_pose=pose, global_orient=orient)
    v = out.vertices[0].numpy().astype(np.float64)
    j = out.joints[0].numpy().astype(np.float64)
    shift = np.array([0.0, FLOOR_Y - v[:, 1].max(), DISTANCE - j[PELVIS, 2]])
    shift[0] = -j[PELVIS, 0]
    v, j = v + shift, j + shift
    faces = np.load(DEFAULT_BODY_PATH)["f"]
    room = [Plane(point=(0, 0, 4.0), normal=(0, 0, -1), u_axis=(1, 0, 0), patch_m=0.4),
            Plane(point=(0, FLOOR_Y, 0), normal=(0, -1, 0), u_axis=(1, 0, 0), patch_m=0.5, patches=2, label_base=16)]
    bg = render_rgbd(rig, room)
    z, _ = _raycast(rig.depth, v, faces)
    depth = bg.depth_mm.copy()
    hit = np.isfinite(z)
    depth[hit] = np.rint(z[hit] * 1000.0).astype(np.uint16)
    zc, nc = _raycast(rig.color, rig.depth_to_color.apply(v), faces)
    color = (0.45 * bg.color_bgr).astype(np.uint8)  # darker room, so the person stands out
    hit = np.isfinite(zc)
    shade = 0.35 + 0.65 * np.abs(nc[..., 2][hit])
    color[hit] = (shade[:, None] * np.array([150.0, 120.0, 110.0])).astype(np.uint8)
    return Person(rig, faces, v, j, depth, color)


@pytest.fixture(scope="module")
def body_model() -> BodyModel:
    return BodyModel.from_file(DEFAULT_BODY_PATH)


@pytest.fixture(scope="module")
def person(body_model) -> Person:
    return build_person(body_model)


def make_frame(p: Person, frame_id: int = 0, color: bool = True, depth: bool = True) -> RgbdFrame:
    return RgbdFrame(frame_id=frame_id, timestamp_usec=1_000_000 + 33_333 * frame_id,
                     color_bgr=p.color if color else None, depth_mm=p.depth if depth else None, rig=p.rig,
                     source="synthetic", color_status=StreamStatus.OK if color else StreamStatus.MISSING,
                     depth_status=StreamStatus.OK if depth else StreamStatus.MISSING)


def make_result(p: Person, frame_id: int = 0, mode: InputMode = InputMode.RGBD, body: bool = True,
                offset=(0.0, 0.0, 0.0), infer_ms: float = 40.0, dropped: int = 0) -> FrameResult:
    estimate = None
    if body:
        off = np.asarray(offset, dtype=np.float64)
        estimate = BodyEstimate(theta=np.zeros(72), beta=np.zeros(10), transl=off, vertices=p.vertices + off,
                                joints=p.joints + off, cam=np.array([1.0, 0.0, 0.0]), bbox=np.zeros(4))
    return FrameResult(frame_id=frame_id, timestamp_usec=1_000_000 + 33_333 * frame_id, mode=mode,
                       requested_mode="auto", body=estimate, message="" if body else "no person found",
                       timings_ms={"capture": 1.0, "decode": 4.0, "align": 9.0, "crop": 1.5, "infer": infer_ms,
                                   "post": 2.0}, dropped_frames=dropped)


def is_mesh_orange(rgb: np.ndarray) -> np.ndarray:
    """Lit RGB-D mesh color (0.96, 0.62, 0.26) in a uint8 RGB image: strong red, some green, weak blue
    (the skeleton's red (1.0, 0.15, 0.35) has little green)."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] > 150) & (rgb[..., 1] > 110) & (rgb[..., 0] - rgb[..., 2] > 70)


def pixel(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    u, v = np.rint(np.asarray(uv)).astype(int).T
    return img[v, u]


# ---------------------------------------------------------------------------------------- scene3d
def test_scene_updates_geometry_in_place(person):
    scene = Scene3D(person.faces, SMPL_PARENTS, SceneConfig(cloud_stride=2))
    frame, result = make_frame(person), make_result(person)
    changed = scene.update(frame, result)
    assert changed == {"cloud", "mesh", "skeleton", "grid"}
    mesh_ptr = np.asarray(scene.mesh.vertices).__array_interface__["data"][0]
    cloud_ptr = np.asarray(scene.cloud.points).__array_interface__["data"][0]
    n_points = len(scene.cloud.points)
    assert n_points == (576 // 2) * (640 // 2)

    moved = make_result(person, frame_id=1, offset=(0.1, 0.0, 0.0), mode=InputMode.DEPTH)
    scene.update(make_frame(person, 1), moved)
    assert np.asarray(scene.mesh.vertices).__array_interface__["data"][0] == mesh_ptr
    assert np.asarray(scene.cloud.points).__array_interface__["data"][0] == cloud_ptr
    assert len(scene.cloud.points) == n_points
    np.testing.assert_allclose(np.asarray(scene.mesh.vertices), person.vertices + [0.1, 0, 0], atol=1e-9)
    np.testing.assert_allclose(np.asarray(scene.skeleton.points), person.joints + [0.1, 0, 0], atol=1e-9)
    assert len(scene.skeleton.lines) == 23
    np.testing.assert_allclose(np.asarray(scene.mesh.vertex_colors)[0], MODE_COLORS["depth"])

    # known point: the pelvis pixel (even coordinates survive stride 2) unprojects to its depth
    u, v = (int(c) // 2 * 2 for c in person.rig.depth.project(person.joints[PELVIS]))
    z = person.depth[v, u] / 1000.0
    expected = person.rig.depth.unproject(np.array([u, v], dtype=float), z)
    cloud = np.asarray(scene.cloud.points)
    assert np.min(np.linalg.norm(cloud - expected, axis=1)) < 1e-6
    # invalid pixels repeat a real point: no NaN, nothing at the camera centre, nothing beyond the wall
    assert np.isfinite(cloud).all() and cloud[:, 2].min() > 0.5 and cloud[:, 2].max() < 4.5
    # its color came from the aligned color image: the person is shaded BGR (150, 120, 110), i.e. RGB
    # in Open3D with blue / red = 150 / 110
    rgb = np.asarray(scene.cloud.colors)[np.argmin(np.linalg.norm(cloud - expected, axis=1))]
    assert rgb[2] / rgb[0] == pytest.approx(150 / 110, rel=0.05)
    assert rgb[1] / rgb[0] == pytest.approx(120 / 110, rel=0.05)

    # the floor grid follows the feet (camera y is down)
    assert np.allclose(np.asarray(scene.grid.points)[:, 1], scene.floor_y)
    assert abs(scene.floor_y - FLOOR_Y) < 1e-6


def test_scene_without_body_or_depth(person):
    scene = Scene3D(person.faces, SMPL_PARENTS)
    scene.update(make_frame(person), make_result(person))
    changed = scene.update(make_frame(person, 1, depth=False), make_result(person, 1, body=False))
    assert {"mesh", "skeleton", "cloud"} <= changed
    assert not scene.present["mesh"] and not scene.present["skeleton"] and not scene.present["cloud"]
    assert scene.drawn("grid") and not scene.drawn("mesh")
    # depth only: the cloud gets the gray ramp (r = g = b)
    scene.update(make_frame(person, 2, color=False), None)
    colors = np.asarray(scene.cloud.colors)
    assert scene.present["cloud"] and np.allclose(colors[:, 0], colors[:, 2])


def test_scene_rejects_bad_input(person):
    with pytest.raises(ValueError, match=r"faces must be an \(F, 3\)"):
        Scene3D(person.faces[:, :2], SMPL_PARENTS)
    with pytest.raises(ValueError, match="integers"):
        Scene3D(person.faces.astype(np.float32), SMPL_PARENTS)
    with pytest.raises(ValueError, match="parent must be an earlier joint"):
        check_parents([-1, 0, 5])
    scene = Scene3D(person.faces, SMPL_PARENTS)
    bad = make_result(person)
    bad.body.vertices = person.vertices[:6890]
    with pytest.raises(ValueError, match="faces and body model do not match"):
        scene.update(None, bad)
    bad = make_result(person)
    bad.body.joints = person.joints[:14]
    with pytest.raises(ValueError, match=r"body.joints must be \(24, 3\)"):
        scene.update(None, bad)


def test_offscreen_screenshot_shows_mesh_where_person_projects(person):
    scene = Scene3D(person.faces, SMPL_PARENTS)
    scene.update(make_frame(person), make_result(person))
    with OffscreenView(scene, person.rig.depth) as view:
        full = view.capture()
        assert full.shape == (576, 640, 3)
        background = (full == 255).all(axis=-1)
        assert background.mean() < 0.1  # the room's point cloud fills the image

        scene.toggle("cloud")
        img = view.capture()
        uv = view.view.project(person.joints[list(INSIDE_JOINTS)])
        assert is_mesh_orange(pixel(img, uv)).all()
        assert (img[5, 5] == 255).all()  # top-left corner: white background
        # the orange silhouette is where the vertices project with the view's K (pinhole, no distortion)
        mask = is_mesh_orange(img)
        ys, xs = np.nonzero(mask)
        proj = view.view.project(person.vertices)
        assert abs(xs.min() - proj[:, 0].min()) < 3 and abs(xs.max() - proj[:, 0].max()) < 3
        assert abs(ys.min() - proj[:, 1].min()) < 3 and abs(ys.max() - proj[:, 1].max()) < 3
        # the view's K is the depth camera's own pinhole matrix (within the half-pixel padding rounding)
        K = person.rig.depth.K
        assert abs(view.view.K[0, 2] - K[0, 2]) <= 0.5 and abs(view.view.K[1, 2] - K[1, 2]) <= 0.5
        assert abs(view.view.K[1, 1] - K[1, 1]) < 0.1

        scene.toggle("mesh")
        img = view.capture()
        assert not is_mesh_orange(pixel(img, uv)).any()
        # ... and the skeleton, hidden inside the mesh until now, shows along the spine
        spine = pixel(img, view.view.project(person.joints[[3, SPINE2, SPINE3]])).astype(int)
        assert (spine[:, 0] > 200).all() and (spine[:, 1] < 80).all()

        scene.toggle("mesh")
        scene.update(None, make_result(person, mode=InputMode.DEPTH))
        img = view.capture()
        blue = pixel(img, uv).astype(int)
        assert (blue[:, 2] - blue[:, 0] > 60).all()  # the depth-only mesh is blue


def test_sensor_view_fits_the_camera():
    cam = default_rig().depth
    view = sensor_view(cam, (1280, 720))
    assert view.K[1, 1] == pytest.approx(cam.fy * 720 / 576)
    assert (view.K[0, 2], view.K[1, 2]) == (639.5, 359.5)
    with pytest.raises(ValueError, match="positive"):
        sensor_view(cam, (0, 10))


# ---------------------------------------------------------------------------------------- viewer
def _viewer_config(tmp_path: Path, **changes) -> ViewerConfig:
    base = ViewerConfig(window_size=(640, 480), visible=False, every_result=True, close_at_end=True,
                        idle_sleep_s=0.0, screenshot_dir=tmp_path / "shots")
    return replace(base, **changes)


def test_viewer_shows_stream_handles_keys_and_saves_screenshots(person, tmp_path, capsys):
    items = [(make_frame(person, i), make_result(person, i, infer_ms=40.0 + i)) for i in range(4)]
    actions: list[str] = []
    viewer = Viewer(iter(items), person.faces, SMPL_PARENTS, on_key=actions.append, show_plots=True,
                    config=_viewer_config(tmp_path, close_at_end=False))
    try:
        assert "Q / Esc" in capsys.readouterr().out  # key list printed at start
        deadline = time.monotonic() + 30.0
        while not viewer.feed.ended and time.monotonic() < deadline:
            viewer.step()
        assert viewer.stats.received == 4 and viewer.stats.shown == 4 and viewer.stats.skipped == 0
        assert viewer.last[1].frame_id == 3
        np.testing.assert_allclose(viewer.plots.history.series()["infer_ms"], [40, 41, 42, 43])

        viewer.press("toggle_cloud")
        img = viewer.capture()
        assert img.shape == (480, 640, 3)
        uv = viewer.view.project(person.joints[list(INSIDE_JOINTS)])
        assert is_mesh_orange(pixel(img, uv)).all()

        # a key press from Open3D's callback is queued and handled by the next step
        viewer._key_callback("toggle_mesh")(None)
        assert viewer.step()
        assert not is_mesh_orange(pixel(viewer.capture(), uv)).any()

        paths = viewer.screenshot(tmp_path / "shot.png")
        assert [p.name for p in paths] == ["shot.png", "shot_plots.png"]
        shot = cv2.imread(str(paths[0]))
        assert shot.shape == (480, 640, 3) and shot.std() > 5
        plots = cv2.imread(str(paths[1]))
        assert plots is not None and plots.std() > 5

        viewer.press("pause")
        viewer.press("pause")
        viewer.press("record")
        viewer.press("record")
        viewer.press("mode_depth")
        viewer.press("screenshot")
        assert len(list((tmp_path / "shots").glob("*.png"))) == 2
        assert "cloud:off mesh:off" in viewer.status_text()
        viewer._key_callback("quit")(None)
        assert viewer.step() is False
    finally:
        viewer.close()
    assert actions == ["toggle_cloud", "toggle_mesh", "pause", "resume", "record_start", "record_stop",
                       "mode_depth", "screenshot", "quit"]
    assert set(actions) <= set(KEY_ACTIONS)
    assert not viewer.plots.is_visible


def test_viewer_queue_newest_wins_and_end_of_stream(person, tmp_path):
    q: queue.Queue = queue.Queue()
    for i in range(3):
        q.put(make_result(person, i))          # bare FrameResults: no point cloud
    q.put(None)                                 # end of stream
    stats = run_viewer(q, person.faces, SMPL_PARENTS, show_plots=False,
                       config=_viewer_config(tmp_path, every_result=False))
    assert stats.received == 1 and stats.skipped == 2


def test_viewer_reraises_producer_errors(person, tmp_path):
    def broken():
        yield make_frame(person), make_result(person)
        raise RuntimeError("worker died: model file missing")

    with pytest.raises(RuntimeError, match="worker died"):
        run_viewer(broken(), person.faces, SMPL_PARENTS, show_plots=False, config=_viewer_config(tmp_path))

    with pytest.raises(TypeError, match=r"FrameResult or \(RgbdFrame, FrameResult\)"):
        run_viewer(iter(["not a result"]), person.faces, SMPL_PARENTS, show_plots=False,
                   config=_viewer_config(tmp_path))


def test_viewer_refuses_a_window_without_display(person, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if not sys.platform.startswith("linux"):
        pytest.skip("display detection is Linux-only")
    with pytest.raises(RuntimeError, match="--headless"):
        Viewer(iter([]), person.faces, SMPL_PARENTS, config=ViewerConfig(visible=True))


def test_key_list():
    text = help_text()
    for binding in KEY_BINDINGS:
        assert binding.label in text
    codes = [c for b in KEY_BINDINGS for c in b.codes]
    assert len(codes) == len(set(codes))  # one action per key


# ---------------------------------------------------------------------------------------- plots
def test_rate_meter_and_history_known_values():
    meter = RateMeter(window_s=1.0)
    assert np.isnan(meter.tick(0.0))
    rates = [meter.tick(i * 0.05) for i in range(1, 41)]
    assert rates[-1] == pytest.approx(20.0)

    history = StatsHistory(length=10)
    rig = default_rig()
    depth = np.full((576, 640), 2000, np.uint16)
    for i in range(15):
        frame = RgbdFrame(i, i, None, depth, rig, "t", color_status=StreamStatus.MISSING)
        result = FrameResult(i, i, InputMode.DEPTH if i >= 10 else InputMode.RGBD, "auto", None,
                             timings_ms={"infer": 30.0, "crop": 2.0}, dropped_frames=i // 5)
        history.add(result, frame, now_s=i / 30, render_ms=5.0, skipped=1)
    s = history.series()
    assert len(history) == 10 and history.count == 15
    np.testing.assert_allclose(s["t_s"], np.arange(5, 15) / 30)
    np.testing.assert_allclose(s["fps"], 30.0)
    np.testing.assert_allclose(s["total_ms"], 37.0)       # infer + crop + the viewer's render
    np.testing.assert_allclose(s["render_ms"], 5.0)
    assert np.isnan(s["decode_ms"]).all()
    np.testing.assert_allclose(s["mode"], [3] * 5 + [2] * 5)
    np.testing.assert_allclose(s["dropped"], [1] * 5 + [2] * 5)
    np.testing.assert_allclose(s["color_ok"], 0.0)
    np.testing.assert_allclose(s["depth_ok"], 1.0)
    assert history.last_streams == "color missing, depth ok"
    with pytest.raises(TypeError, match="needs a FrameResult"):
        history.add("x")


def test_live_plots_offscreen(tmp_path):
    plots = LivePlots(history=100, show=True)
    try:
        for i in range(60):
            result = FrameResult(i, i, InputMode.RGB if i >= 30 else InputMode.RGBD, "auto", None,
                                 timings_ms={s: 2.0 for s in STAGES if s != "render"} | {"infer": 50.0})
            plots.add(result, now_s=i / 25.0, render_ms=8.0)
        plots.set_status("rgbd | frame 59")
        plots.refresh()
        plots.process_events()
        x, y = plots.curves["fps"].getData()
        assert len(x) == 60 and y[-1] == pytest.approx(25.0)
        _, total = plots.curves["total_ms"].getData()
        assert total[-1] == pytest.approx(5 * 2.0 + 50.0 + 8.0)
        _, mode = plots.curves["mode"].getData()
        assert mode[0] == 3 and mode[-1] == 1
        path = plots.grab(tmp_path / "plots.png")
        img = cv2.imread(str(path))
        assert img is not None and img.shape[0] > 300 and img.std() > 5
        assert plots.is_visible
    finally:
        plots.close()
    assert not plots.is_visible
    plots.close()  # idempotent


# ---------------------------------------------------------------------------------------- headless
def _letterbox(cam_size, out_size):
    s = min(out_size[0] / cam_size[0], out_size[1] / cam_size[1])
    nw, nh = round(cam_size[0] * s), round(cam_size[1] * s)
    return (out_size[0] - nw) // 2, (out_size[1] - nh) // 2, nw, nh


def test_overlay_draws_mesh_and_skeleton_where_person_projects(person):
    overlay = OverlayRenderer(person.faces, SMPL_PARENTS, size=(640, 360), style=OverlayStyle(skeleton=False))
    frame = make_frame(person)
    with_body = overlay.render(frame, make_result(person), fps=30.0)
    without = overlay.render(frame, make_result(person, body=False), fps=30.0)
    assert with_body.shape == (360, 640, 3) and with_body.dtype == np.uint8

    # color background: joints projected into the color camera (distortion included), letterboxed
    ox, oy, nw, nh = _letterbox(person.rig.color.size, (640, 360))
    cam = person.rig.color.scaled(nw, nh)
    uv = cam.project(person.rig.depth_to_color.apply(person.joints[list(INSIDE_JOINTS)])) + [ox, oy]
    body_px, plain_px = pixel(with_body, uv).astype(int), pixel(without, uv).astype(int)
    # the mesh tints the person's gray-blue toward orange (BGR: red up, blue down)
    assert ((body_px[:, 2] - plain_px[:, 2]) > 40).all() and ((plain_px[:, 0] - body_px[:, 0]) > 20).all()
    # far from the person and the label the two renders are the same pixels (the background)
    np.testing.assert_array_equal(with_body[300:, :100], without[300:, :100])
    # the label box (top left) is drawn
    assert with_body[12:40, 12:200].std() > 10

    # the skeleton: joint dots (BGR (60, 40, 240)) exactly where the joints project
    skeleton = OverlayRenderer(person.faces, SMPL_PARENTS, size=(640, 360)).render(frame, make_result(person))
    dots = pixel(skeleton, uv).astype(int)
    assert (np.abs(dots - [60, 40, 240]) < 40).all()

    # depth-only mode: depth background (gray) in the depth camera, blue mesh
    depth_img = overlay.render(frame, make_result(person, mode=InputMode.DEPTH), fps=30.0)
    ox, oy, nw, nh = _letterbox(person.rig.depth.size, (640, 360))
    cam = person.rig.depth.scaled(nw, nh)
    uv = cam.project(person.joints[list(INSIDE_JOINTS)]) + [ox, oy]
    px = pixel(depth_img, uv).astype(int)
    assert ((px[:, 0] - px[:, 2]) > 60).all()          # blue mesh (BGR)
    assert (depth_img[180, :ox - 2] == 0).all()         # letterbox bars are black
    # gray depth background: the wall (z = 4 m) above the head is 40 + 200 (1 - (4 - 0.3) / (6 - 0.3)) = 110
    u, v = np.rint(cam.project(person.joints[15]) + [ox, oy - 40]).astype(int)
    np.testing.assert_array_equal(depth_img[v, u], [110, 110, 110])


def test_vertex_normals_of_a_cube():
    mesh = o3d.geometry.TriangleMesh.create_box()
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    n = vertex_normals(v, f)
    outward = (v - 0.5) / np.linalg.norm(v - 0.5, axis=1, keepdims=True)
    assert np.all(np.sum(n * outward, axis=1) > 0.5)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-6)


def test_headless_writes_mp4_and_thumbnails(person, tmp_path):
    out = tmp_path / "run"
    frames = []
    with HeadlessRenderer(out, person.faces, SMPL_PARENTS, size=(640, 360), fps=30, thumbnail_every=4) as r:
        for i in range(10):
            mode = [InputMode.RGBD, InputMode.DEPTH, InputMode.RGB, InputMode.NONE][i % 4]
            frame = None if i == 5 else make_frame(person, i, color=mode is not InputMode.DEPTH)
            frames.append(r.add(frame, make_result(person, i, mode=mode, body=mode is not InputMode.NONE,
                                                   offset=(0.01 * i, 0, 0))))
        outputs = r.close()
    assert outputs.frames == 10 and outputs.video == out / "overlay.mp4"
    assert [p.name for p in outputs.thumbnails] == ["frame_000000.png", "frame_000004.png", "frame_000008.png"]
    for p in outputs.thumbnails:
        thumb = cv2.imread(str(p))
        assert thumb.shape == (270, 480, 3) and thumb.std() > 5
    cap = cv2.VideoCapture(str(outputs.video))
    try:
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
        decoded = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            decoded.append(img)
    finally:
        cap.release()
    assert len(decoded) == 10 and decoded[0].shape == (360, 640, 3)
    for written, read in zip(frames, decoded):  # lossy MPEG-4, but the same pictures
        assert np.abs(written.astype(int) - read.astype(int)).mean() < 12


def test_headless_bad_input(person, tmp_path):
    with pytest.raises(ValueError, match="even"):
        HeadlessRenderer(tmp_path / "a", person.faces, SMPL_PARENTS, size=(641, 360))
    (tmp_path / "file").write_text("x")
    with pytest.raises(HeadlessError, match="not a folder"):
        HeadlessRenderer(tmp_path / "file", person.faces, SMPL_PARENTS)
    r = HeadlessRenderer(tmp_path / "b", person.faces, SMPL_PARENTS, size=(320, 180))
    bad = make_result(person)
    bad.body.vertices = person.vertices[:100]
    with pytest.raises(ValueError, match="body.vertices"):
        r.add(make_frame(person), bad)
    with pytest.raises(TypeError, match="FrameResult"):
        r.add(make_frame(person), "result")
    r.close()
    with pytest.raises(HeadlessError, match="closed"):
        r.add(make_frame(person), make_result(person))


def test_overlay_label_shows_every_stage_time_including_decode(person):
    overlay = OverlayRenderer(person.faces, SMPL_PARENTS, size=(640, 360))
    result = make_result(person, 7)
    result.timings_ms["render"] = 12.25
    assert overlay.label_lines(result, 29.96) == [
        "RGB-D   30.0 fps  frame 7",
        "ms: capture 1.0  decode 4.0  align 9.0  crop 1.5  infer 40.0  post 2.0  render 12.2"]
    quiet = OverlayRenderer(person.faces, SMPL_PARENTS, size=(640, 360), style=OverlayStyle(timings=False))
    assert quiet.label_lines(result, 29.96) == ["RGB-D   30.0 fps  frame 7"]
    # the extra line is drawn: the label box is taller with it
    frame = make_frame(person)
    rows_with = np.flatnonzero((overlay.render(frame, result, fps=30.0)[:, 8:12] != quiet.render(
        frame, result, fps=30.0)[:, 8:12]).any(axis=(1, 2)))
    assert rows_with.size and rows_with.min() > 20  # below the first line


# ---------------------------------------------------------------------------------------- recording (R key)
def _read_take(folder: Path) -> list[int]:
    with np.load(folder / "results.npz", allow_pickle=False) as z:
        return z["frame_ids"].tolist()


def test_record_key_starts_and_stops_writing_outputs(person, tmp_path, capsys):
    from app.cli import RecordControl, ViewerControls
    from app.outputs import OutputWriter

    stamps = iter(["20261125_101500", "20261125_101507"])
    recorder = RecordControl(lambda folder: OutputWriter(folder, faces=person.faces), root=tmp_path / "recordings",
                             clock=lambda: next(stamps))
    modes: list[str] = []
    controls = ViewerControls(modes.append, recorder)
    results = [make_result(person, i, body=i != 2) for i in range(7)]
    controls.on_result(None, results[0])          # not recording yet: nothing is written
    assert not recorder.recording and not (tmp_path / "recordings").exists()
    controls.on_key("record_start")
    for r in results[1:4]:
        controls.on_result(None, r)
    controls.on_key("record_stop")
    controls.on_result(None, results[4])
    controls.on_key("mode_depth")
    controls.on_key("record_start")
    controls.on_result(None, results[5])
    controls.on_key("pause")                     # other actions do not touch the recording
    controls.on_result(None, results[6])
    recorder.close()
    first, second = tmp_path / "recordings" / "20261125_101500", tmp_path / "recordings" / "20261125_101507"
    assert recorder.takes == [first, second] and not recorder.recording and recorder.errors == []
    assert _read_take(first) == [1, 2, 3] and _read_take(second) == [5, 6]
    assert (first / "motion.bvh").is_file() and len((first / "frames.jsonl").read_text().splitlines()) == 3
    assert modes == ["depth"]
    err = capsys.readouterr().err
    assert f"fusemesh: recording to {first} (R stops)" in err
    assert f"fusemesh: recording stopped: 3 frames in {first}" in err
    assert f"fusemesh: recording stopped: 2 frames in {second}" in err


def test_record_key_with_out_records_from_the_start_then_takes_go_beside_it(person, tmp_path, capsys):
    from app.cli import RecordControl, ViewerControls
    from app.outputs import OutputError, OutputWriter

    out = tmp_path / "run"
    recorder = RecordControl(lambda folder: OutputWriter(folder), out=out, writer=OutputWriter(out),
                             clock=lambda: "20261125_101500")
    assert recorder.recording
    controls = ViewerControls(lambda mode: None, recorder)
    # the real viewer, offscreen, driven through its key callback: its first R is a stop
    viewer = Viewer([], person.faces, SMPL_PARENTS, on_key=controls.on_key, show_plots=False,
                    config=_viewer_config(tmp_path, start_recording=True))
    try:
        for i in range(2):
            controls.on_result(None, make_result(person, i))
        viewer._key_callback("record")(None)
        viewer.step()
        assert not viewer.recording and not recorder.recording
        controls.on_result(None, make_result(person, 2))  # between takes: dropped
        viewer._key_callback("record")(None)
        viewer.step()
        assert viewer.recording and recorder.recording
        controls.on_result(None, make_result(person, 3))
        assert "REC" in viewer.status_text()
    finally:
        viewer.close()
        recorder.close()
    take = tmp_path / "run_20261125_101500"
    assert recorder.takes == [out, take]
    assert _read_take(out) == [0, 1] and _read_take(take) == [3]
    # a take that cannot be opened is reported and the viewer goes on
    (tmp_path / "blocked").write_text("a file where the folder should go")
    broken = RecordControl(lambda folder: OutputWriter(folder), root=tmp_path / "blocked", clock=lambda: "x")
    assert broken.start() is None and not broken.recording
    assert isinstance(broken.errors[0], OutputError)
    assert "fusemesh: cannot record: " in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- window under Xvfb
_XVFB_SCRIPT = """
import json, os, sys
import tests.test_app_viewer as T
os.environ["QT_QPA_PLATFORM"] = "xcb"  # a real window for the plots too (the test module chose offscreen)
from app.viewer import Viewer, ViewerConfig
from model.body import BodyModel, DEFAULT_BODY_PATH, SMPL_PARENTS
p = T.build_person(BodyModel.from_file(DEFAULT_BODY_PATH))
items = [(T.make_frame(p, i), T.make_result(p, i)) for i in range(5)]
config = ViewerConfig(window_size=(640, 480), visible=True, every_result=True, close_at_end=False, idle_sleep_s=0.0)
viewer = Viewer(iter(items), p.faces, SMPL_PARENTS, show_plots=True, config=config)
try:
    while not viewer.feed.ended:
        viewer.step()
    viewer.press("toggle_cloud")  # the mesh alone, as in the offscreen test
    img = viewer.capture()
    uv = viewer.view.project(p.joints[list(T.INSIDE_JOINTS)])
    orange = T.is_mesh_orange(T.pixel(img, uv)).tolist()
    viewer._key_callback("toggle_mesh")(None)  # a key through Open3D's callback, handled by the next step
    viewer.step()
    hidden = T.is_mesh_orange(T.pixel(viewer.capture(), uv)).tolist()
    plots = viewer.plots.is_visible
    stats = viewer.stats
finally:
    viewer.close()
print(json.dumps({"display": os.environ.get("DISPLAY"), "shown": stats.shown, "orange": orange, "hidden": hidden,
                  "plots": plots, "shape": list(img.shape)}))
"""


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("xvfb-run") is None,
                    reason="xvfb-run is not installed (apt package xvfb): the window test needs an X server")
def test_window_viewer_runs_under_xvfb(tmp_path):
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # Qt wants one; Xvfb sessions have none
    r = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", sys.executable, "-c", _XVFB_SCRIPT],
                       capture_output=True, text=True, timeout=240, cwd=Path(__file__).resolve().parents[1], env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["display"] and got["display"].startswith(":")  # a real X display, not EGL offscreen
    assert got["shown"] == 5 and got["plots"] is True and got["shape"] == [480, 640, 3]
    assert all(got["orange"])  # the lit mesh is where the person's torso and legs project
    assert not any(got["hidden"])  # and gone after M


# ---------------------------------------------------------------------------------------- Ctrl-C, exit (issue #8)
def test_ctrl_c_ends_the_loop_then_raises_keyboard_interrupt(person, tmp_path):
    import signal
    import threading

    from app.viewer import CTRL_C_GRACE_S

    def endless():
        i = 0
        while True:
            yield make_frame(person, i), make_result(person, i)
            i += 1

    viewer = Viewer(endless(), person.faces, SMPL_PARENTS, show_plots=False,
                    config=_viewer_config(tmp_path, every_result=False, close_at_end=False, idle_sleep_s=0.005))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground `python -m app`
    try:
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            viewer.run()
        elapsed = time.monotonic() - t0
        timer.join()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the viewer's handler is gone
    finally:
        signal.signal(signal.SIGINT, previous)
    assert 0.9 < elapsed < 1.0 + CTRL_C_GRACE_S  # ended by the Ctrl-C, at the loop's next iteration
    assert viewer.stats.shown > 0 and viewer.vis is None and not viewer.step()  # window closed and released


_VOID_QT_CALLS = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QObject
obj = QObject()
before = sys.getrefcount(None)
for _ in range(before + 20000):  # more void Qt calls than None had references at the start
    obj.setObjectName("fusemesh")
print(sys.getrefcount(None) - before, flush=True)
"""


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal on CPython >= 3.12")
def test_void_qt_calls_leave_the_reference_count_of_none_alone():
    """PySide6 6.12.0 took one reference from None per call (none_dealloc mid-run or at exit, issue #8)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = subprocess.run([sys.executable, "-c", _VOID_QT_CALLS], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1], env=env)
    assert "Fatal Python error" not in r.stderr, r.stderr[-1500:]
    assert r.returncode == 0 and abs(int(r.stdout.split()[-1])) < 100, (r.stdout, r.stderr[-1500:])


@pytest.fixture
def xvfb_display():
    """A private Xvfb server (it picks a free display number itself); skips when Xvfb is not installed."""
    import shutil
    import subprocess

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt package xvfb): the window test needs an X server")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x1024x24", "-nolisten",
                               "tcp"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        number = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while not number.endswith(b"\n"):
                chunk = pipe.read(16)
                if not chunk:
                    pytest.skip("Xvfb did not start")
                number += chunk
        yield f":{number.decode().strip()}"
    finally:
        server.terminate()
        server.wait(10)


# `python -m app`, with Ctrl-C delivered even when pytest itself runs as a background job (SIGINT ignored)
_APP_WITH_CTRL_C = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "runpy.run_module('app', run_name='__main__', alter_sys=True)")
WINDOW_UP_S = 40.0  # PySide6 6.12 drained None in ~30 s of window time: the unfixed app aborted at exit


@pytest.mark.slow  # the session's lite export, then ~45 s of window time
def test_ctrl_c_in_the_window_exits_130_with_complete_outputs(xvfb_display, lite_model, tmp_path):
    import signal
    import subprocess

    from app.cli import DEMO_RECORDING, EXIT_INTERRUPTED

    frames = 57  # assets/demo/demo.mkv (its README)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(DISPLAY=xvfb_display, XDG_RUNTIME_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    command = [sys.executable, "-c", _APP_WITH_CTRL_C, "--source", str(DEMO_RECORDING), "--model", str(lite_model),
               "--threads", "1", "--out", str(out)]
    app = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    try:
        jsonl = out / "frames.jsonl"
        while time.monotonic() - t0 < 180 and app.poll() is None:  # the whole clip, then the window stays up
            if jsonl.is_file() and len(jsonl.read_bytes().splitlines()) >= frames \
                    and time.monotonic() - t0 >= WINDOW_UP_S:
                break
            time.sleep(0.2)
        assert app.poll() is None, app.communicate()[1][-2000:]  # still running: the window waits for the user
        app.send_signal(signal.SIGINT)
        _, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()
    assert "Fatal Python error" not in err, err[-2000:]
    assert app.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert f"fusemesh: {frames} frames, {frames} with a body" in err and "fusemesh: interrupted" in err
    assert f"fusemesh: recording stopped: {frames} frames in {out}" in err
    # complete outputs: every frame in each file, the files finished (not the last periodic rewrite)
    assert len(jsonl.read_bytes().splitlines()) == frames
    with np.load(out / "results.npz", allow_pickle=False) as z:
        assert z["frame_ids"].tolist() == list(range(frames)) and z["valid"].all()
    assert f"Frames: {frames}" in (out / "motion.bvh").read_text().splitlines()


# ---------------------------------------------------------------------------------------- docs/app.png
def _orbit(center: np.ndarray, yaw_deg: float, pitch_deg: float, distance: float) -> np.ndarray:
    """4x4 depth camera frame -> a camera on a sphere around `center` looking at it (OpenCV axes)."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    eye = center + distance * np.array([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), -np.cos(yaw) * np.cos(pitch)])
    z = (center - eye) / np.linalg.norm(center - eye)
    x = np.cross([0.0, 1.0, 0.0], z)  # y down
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = -R @ eye
    return out


def write_docs_screenshot(path: Path) -> Path:
    """docs/app.png: 3D view from the sensor and from the side, the headless overlay, the live plots."""
    body_model = BodyModel.from_file(DEFAULT_BODY_PATH)
    p = build_person(body_model)
    frame, result = make_frame(p, 120), make_result(p, 120)
    tiles = []
    scene = Scene3D(p.faces, SMPL_PARENTS)
    scene.update(frame, result)
    with OffscreenView(scene, p.rig.depth, background=(0.1, 0.1, 0.12), point_size=3.0) as view:
        tiles.append(("3D view from the sensor (C/M/K/G toggles)", view.capture()[..., ::-1]))
        view.set_pose(_orbit(p.joints[PELVIS], 50.0, 20.0, 2.8))
        tiles.append(("3D view, orbited (mouse)", view.capture()[..., ::-1]))
    overlay = OverlayRenderer(p.faces, SMPL_PARENTS, size=(1280, 720))
    tiles.append(("--headless overlay.mp4 frame", overlay.render(frame, result, fps=29.8)))
    plots = LivePlots(history=300, show=True, size=(640, 576))
    try:
        rng = np.random.default_rng(0)
        for i in range(240):
            mode = InputMode.DEPTH if 120 <= i < 170 else InputMode.RGBD
            r = make_result(p, i, mode=mode, infer_ms=float(38 + 4 * rng.random()), dropped=i // 60)
            r.timings_ms["align"] = 0.0 if mode is InputMode.DEPTH else 9.0 + rng.random()
            plots.add(r, now_s=i / 29.8 + 0.002 * rng.random(), render_ms=float(10 + 2 * rng.random()),
                      skipped=i // 100)
        plots.set_status("rgbd | frame 239 | cloud:on mesh:on skeleton:on grid:on | H: keys")
        plots_png = plots.grab(Path(path).with_suffix(".plots.tmp.png"))
        tiles.append(("live plots (pyqtgraph)", cv2.imread(str(plots_png))))
        plots_png.unlink()
    finally:
        plots.close()
    tile_w, tile_h = 640, 540
    canvas = np.full((2 * tile_h, 2 * tile_w, 3), 30, np.uint8)
    for k, (caption, img) in enumerate(tiles):
        s = min(tile_w / img.shape[1], (tile_h - 30) / img.shape[0])
        small = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        x0 = (k % 2) * tile_w + (tile_w - small.shape[1]) // 2
        y0 = (k // 2) * tile_h + 30
        canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
        cv2.putText(canvas, caption, ((k % 2) * tile_w + 10, (k // 2) * tile_h + 21), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6, (235, 235, 235), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), canvas):
        raise RuntimeError(f"cannot write {path}")
    return path


if __name__ == "__main__":
    print(write_docs_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/app.png")))
