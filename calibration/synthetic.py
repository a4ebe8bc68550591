"""Analytic test scenes ray-cast through a rig's real (distorted) cameras: planes, boxes, checkerboards.

Used by tests, the benchmark and the checkerboard self-check; no people here. The world frame is the
depth camera frame (metres). Every pixel's ray comes from the camera's exact undistortion table, so a
rendered image is what that calibrated camera would see, distortion included.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from calibration.intrinsics import CameraIntrinsics
from calibration.rig import Extrinsics, RgbdRig


@dataclass(frozen=True)
class Plane:
    """Infinite plane through `point` with unit `normal`; labels are square patches of `patch_m` along
    `u_axis` and normal x u_axis, numbered `label_base + (i mod n) * n + (j mod n)` with n = `patches`."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]
    u_axis: tuple[float, float, float]
    patch_m: float = 0.25
    patches: int = 4
    label_base: int = 0


@dataclass(frozen=True)
class Box:
    """Axis-aligned (in the world frame) box: centre and half sizes in metres; the face with outward
    normal +x, -x, +y, -y, +z, -z gets label `label_base + 0..5`."""

    center: tuple[float, float, float]
    half_size: tuple[float, float, float]
    label_base: int = 100


@dataclass
class Render:
    """z (H, W) float64 metres along the camera's optical axis (NaN = no hit), label (H, W) int32 (-1)."""

    z: np.ndarray
    label: np.ndarray
    points_world: np.ndarray = field(repr=False)


def _rays(camera: CameraIntrinsics, world_to_camera: Extrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xy, valid = camera.xy_table()
    d_cam = np.concatenate([np.where(valid[..., None], xy, 0.0), np.ones(valid.shape + (1,))], axis=-1)
    R, t = world_to_camera.R, world_to_camera.t
    origin = -R.T @ t
    return origin, d_cam @ R, valid  # world directions whose camera-frame z is 1


def render(camera: CameraIntrinsics, world_to_camera: Extrinsics,
           surfaces: Sequence[Union[Plane, Box]]) -> Render:
    """Ray-cast `surfaces` into `camera` placed at `world_to_camera`; nearest hit wins."""
    origin, d, valid = _rays(camera, world_to_camera)
    shape = valid.shape
    best = np.full(shape, np.inf)
    label = np.full(shape, -1, dtype=np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in surfaces:
            if isinstance(s, Plane):
                n = np.asarray(s.normal, float)
                n = n / np.linalg.norm(n)
                dist = np.where(valid, ((np.asarray(s.point) - origin) @ n) / (d @ n), np.inf)
                hit = (dist > 0) & (dist < best)
                p = origin + dist[..., None] * d
                ua = np.asarray(s.u_axis, float)
                ua = ua - (ua @ n) * n
                ua /= np.linalg.norm(ua)
                va = np.cross(n, ua)
                rel = p - np.asarray(s.point)
                i = np.floor(rel @ ua / s.patch_m).astype(np.int64) % s.patches
                j = np.floor(rel @ va / s.patch_m).astype(np.int64) % s.patches
                lab = s.label_base + i * s.patches + j
            elif isinstance(s, Box):
                c, h = np.asarray(s.center, float), np.asarray(s.half_size, float)
                o = origin - c
                t1 = (-h - o) / d
                t2 = (h - o) / d
                tnear = np.minimum(t1, t2)
                tfar = np.maximum(t1, t2)
                axis = np.argmax(tnear, axis=-1)
                t_in = np.take_along_axis(tnear, axis[..., None], -1)[..., 0]
                t_out = tfar.min(axis=-1)
                hit = valid & (t_out >= t_in) & (t_in > 0) & (t_in < best)
                dist = t_in
                sign_neg = np.take_along_axis(d, axis[..., None], -1)[..., 0] > 0  # entering through the -face
                lab = s.label_base + 2 * axis + sign_neg.astype(np.int64)
            else:
                raise TypeError(f"unknown surface {type(s).__name__}")
            best = np.where(hit, dist, best)
            label = np.where(hit, lab, label).astype(np.int32)
    hit_any = np.isfinite(best)
    z = np.where(hit_any, best, np.nan)
    points = origin + np.where(hit_any, best, 0.0)[..., None] * d
    points[~hit_any] = np.nan
    return Render(z=z, label=label, points_world=points)


def palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 BGR colors; the first 27 are well separated (every channel in {30, 130, 230})."""
    levels = np.array([30, 130, 230], dtype=np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(7)
    grid = grid[rng.permutation(len(grid))]
    return np.resize(grid, (n, 3)).astype(np.uint8)


def default_scene() -> list[Union[Plane, Box]]:
    """A wall 3 m away (16 colored patches), a floor 1 m below the camera, a 0.5 m box at ~1.8 m."""
    return [
        Plane(point=(0.0, 0.0, 3.0), normal=(0.0, 0.0, -1.0), u_axis=(1.0, 0.0, 0.0), patch_m=0.3, label_base=0),
        Plane(point=(0.0, 1.0, 0.0), normal=(0.0, -1.0, 0.0), u_axis=(1.0, 0.0, 0.0), patch_m=0.5, patches=1,
              label_base=16),
        Box(center=(0.1, 0.05, 1.8), half_size=(0.25, 0.25, 0.25), label_base=20),
    ]


@dataclass
class RgbdFrame:
    """One synthetic RGB-D frame with ground truth."""

    color_bgr: np.ndarray      # (Hc, Wc, 3) uint8
    depth_mm: np.ndarray       # (Hd, Wd) uint16
    depth_render: Render       # labels / z seen by the depth camera
    color_render: Render       # labels / z seen by the color camera


def render_rgbd(rig: RgbdRig, surfaces: Optional[Sequence[Union[Plane, Box]]] = None) -> RgbdFrame:
    """Render `surfaces` (default: `default_scene()`) into both cameras of `rig`: color = palette[label]."""
    surfaces = default_scene() if surfaces is None else surfaces
    rd = render(rig.depth, Extrinsics.identity(), surfaces)
    rc = render(rig.color, rig.depth_to_color, surfaces)
    colors = palette()
    color = np.where((rc.label >= 0)[..., None], colors[np.clip(rc.label, 0, None) % len(colors)], 0).astype(np.uint8)
    depth = np.where(np.isfinite(rd.z), np.rint(np.nan_to_num(rd.z) * 1000.0), 0)
    return RgbdFrame(color, np.clip(depth, 0, 65535).astype(np.uint16), rd, rc)


def render_checkerboard(camera: CameraIntrinsics, board_to_camera: Extrinsics, pattern: tuple[int, int],
                        square_m: float, blur_sigma: float = 0.6) -> np.ndarray:
    """Gray uint8 image of a checkerboard with `pattern` = (cols, rows) inner corners.

    Board frame: inner corner (i, j) at (i * square_m, j * square_m, 0), board in its z = 0 plane, with
    a one-square white margin around the squares, on a dark background. Box-filtered (anti-aliased)
    over each pixel's footprint, then a slight blur like real optics.
    """
    cols, rows = pattern
    world_to_camera = board_to_camera  # "world" = board frame here
    origin, d, valid = _rays(camera, world_to_camera)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = -origin[2] / d[..., 2]
        p = origin + s[..., None] * d
        a, b = p[..., 0] / square_m, p[..., 1] / square_m  # in squares
        hit = valid & (s > 0) & np.isfinite(a) & np.isfinite(b)
    a = np.where(hit, a, 0.0)
    b = np.where(hit, b, 0.0)
    # footprint of one pixel on the board, in squares (for the box filter)
    wa = np.abs(np.gradient(a, axis=1)) + np.abs(np.gradient(a, axis=0)) + 1e-6
    wb = np.abs(np.gradient(b, axis=1)) + np.abs(np.gradient(b, axis=0)) + 1e-6

    def tri(x: np.ndarray) -> np.ndarray:  # integral of the +-1 square wave of period 2 squares
        m = np.mod(x, 2.0)
        return np.where(m < 1.0, m, 2.0 - m)

    sa = (tri(a + wa / 2) - tri(a - wa / 2)) / wa
    sb = (tri(b + wb / 2) - tri(b - wb / 2)) / wb
    checker = 0.5 + 0.5 * sa * sb          # 1 = white
    in_squares = (a >= -1) & (a <= cols) & (b >= -1) & (b <= rows)
    on_board = (a >= -2) & (a <= cols + 1) & (b >= -2) & (b <= rows + 1)
    img = np.where(in_squares, 25.0 + 205.0 * checker, np.where(on_board, 230.0, 60.0))
    img = np.where(hit, img, 60.0)
    if blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def look_at_board(distance_m: float, yaw_deg: float, pitch_deg: float, roll_deg: float,
                  board_center_m: tuple[float, float], offset_m: tuple[float, float] = (0.0, 0.0)) -> Extrinsics:
    """Board -> camera pose: the board centre `distance_m` in front of the camera (shifted by `offset_m`
    in x, y), rotated by yaw (about y), pitch (about x), roll (about z) in degrees."""
    ry, rx, rz = np.radians([yaw_deg, pitch_deg, roll_deg])
    Ry = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    Rz = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    R = Ry @ Rx @ Rz
    c = np.array([board_center_m[0], board_center_m[1], 0.0])
    t = np.array([offset_m[0], offset_m[1], distance_m]) - R @ c
    return Extrinsics(R, t)
