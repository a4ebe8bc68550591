"""Render docs/body.png: the open body (beta = 0) in three poses, front and side views (dev tool).

    python -m assets.tools.render_body_sheet [--body assets/body/open_body_neutral.npz] [--out docs/body.png]

The body is posed by the project's own `model.body.BodyModel` (smplx LBS), so the picture shows what
FuseMesh's code produces. Rendering is CPU-only: Open3D's `RaycastingScene` casts orthographic rays,
hits are shaded by interpolated vertex normals, and the 24 joints are drawn on top (red skeleton).
Panels share one scale (px per metre) and are labelled; composition is numpy + OpenCV.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.geometry import vertex_normals

# body_pose (23 joints x 3, axis-angle, radians) in SMPL's convention: index = SMPL joint - 1.
_J = {name: i for i, name in enumerate((
    "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
))}


def demo_poses() -> dict[str, np.ndarray]:
    """Name -> (69,) body_pose. T-pose, a walking step, and a reach (left arm up, right arm forward)."""
    def pose(**rotvecs: tuple[float, float, float]) -> np.ndarray:
        p = np.zeros((23, 3))
        for name, rv in rotvecs.items():
            p[_J[name]] = np.radians(rv)
        return p.reshape(-1)

    return {
        "T-pose (theta = 0)": pose(),
        "walk": pose(
            left_shoulder=(0, 0, -70), right_shoulder=(0, 0, 70),   # arms down (about +z raises the left arm)
            left_elbow=(0, -30, 0), right_elbow=(0, 30, 0),
            left_hip=(-30, 0, 0), left_knee=(20, 0, 0),             # left leg forward (about -x)
            right_hip=(15, 0, 0), right_knee=(35, 0, 0), right_ankle=(-10, 0, 0),
        ),
        "reach": pose(
            left_shoulder=(0, 0, 60),                               # left arm up: +z at the left shoulder
            right_shoulder=(0, 80, 0), right_elbow=(0, 20, 0),      # right arm forward: +y at the right shoulder
            spine1=(10, 0, 0), head=(-15, 20, 0),
            left_hip=(-60, 0, 0), left_knee=(90, 0, 0),             # left knee raised
        ),
    }


@dataclass(frozen=True)
class View:
    """Orthographic view: rays travel along `forward`; image right = `right`, image up = `up` (world)."""

    name: str
    forward: tuple[float, float, float]
    right: tuple[float, float, float]
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)


FRONT = View("front", forward=(0.0, 0.0, -1.0), right=(1.0, 0.0, 0.0))   # camera in front, subject faces us
SIDE = View("side", forward=(-1.0, 0.0, 0.0), right=(0.0, 0.0, -1.0))    # camera at the subject's left


@dataclass(frozen=True)
class PanelSpec:
    width_px: int = 440
    height_px: int = 520
    px_per_m: float = 230.0


def orthographic_rays(view: View, centre: np.ndarray, spec: PanelSpec) -> np.ndarray:
    """(H, W, 6) float32 rays (origin xyz, direction xyz), world metres, centred on `centre` (3,)."""
    f, r, u = (np.asarray(a, dtype=np.float64) for a in (view.forward, view.right, view.up))
    xs = (np.arange(spec.width_px) + 0.5 - spec.width_px / 2) / spec.px_per_m
    ys = (spec.height_px / 2 - np.arange(spec.height_px) - 0.5) / spec.px_per_m
    X, Y = np.meshgrid(xs, ys)
    origins = centre + X[..., None] * r + Y[..., None] * u - 5.0 * f
    dirs = np.broadcast_to(f, origins.shape)
    return np.concatenate([origins, dirs], axis=-1).astype(np.float32)


def render_panel(vertices: np.ndarray, faces: np.ndarray, joints: np.ndarray, parents: list[int],
                 view: View, centre: np.ndarray, spec: PanelSpec) -> np.ndarray:
    """(H, W, 3) uint8 BGR image of the mesh (normal-shaded) with the skeleton drawn on top."""
    import cv2
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)),
                        o3d.core.Tensor(faces.astype(np.uint32)))
    hit = scene.cast_rays(o3d.core.Tensor(orthographic_rays(view, centre, spec)))
    prim = hit["primitive_ids"].numpy()
    uv = hit["primitive_uvs"].numpy()
    mask = prim != scene.INVALID_ID
    img = np.full((spec.height_px, spec.width_px, 3), 255.0)
    if mask.any():
        vn = vertex_normals(vertices, faces)
        tri = faces[prim[mask]]
        u, v = uv[mask, 0:1], uv[mask, 1:2]
        n = (1 - u - v) * vn[tri[:, 0]] + u * vn[tri[:, 1]] + v * vn[tri[:, 2]]
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        to_cam = -np.asarray(view.forward)
        key = to_cam + 0.6 * np.asarray(view.up) + 0.4 * np.asarray(view.right)
        key /= np.linalg.norm(key)
        shade = 0.25 + 0.55 * np.clip(n @ key, 0, 1) + 0.2 * np.clip(n @ to_cam, 0, 1)
        base = np.array([150.0, 175.0, 215.0])  # BGR skin-ish
        img[mask] = shade[:, None] * base
    img = img.astype(np.uint8)
    # skeleton overlay
    r, up = np.asarray(view.right), np.asarray(view.up)
    px = np.stack([(joints - centre) @ r * spec.px_per_m + spec.width_px / 2,
                   spec.height_px / 2 - (joints - centre) @ up * spec.px_per_m], axis=1)
    px = np.round(px).astype(int)
    for j, p in enumerate(parents):
        if p >= 0:
            cv2.line(img, tuple(px[p]), tuple(px[j]), (40, 40, 200), 2, cv2.LINE_AA)
    for q in px:
        cv2.circle(img, tuple(q), 3, (0, 0, 160), -1, cv2.LINE_AA)
    return img


def label(img: np.ndarray, text: str) -> np.ndarray:
    """Copy of `img` with `text` written in its top-left corner."""
    import cv2

    out = img.copy()
    cv2.putText(out, text, (10, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (30, 30, 30), 2, cv2.LINE_AA)
    return out


def render_sheet(body_path: Path, spec: PanelSpec = PanelSpec()) -> np.ndarray:
    """(H, W, 3) uint8 BGR sheet: one column per demo pose, rows front / side."""
    import torch

    from model.body import BodyModel

    body = BodyModel.from_file(body_path)
    poses = demo_poses()
    body_pose = torch.tensor(np.stack(list(poses.values())), dtype=torch.float32)
    with torch.no_grad():
        out = body(betas=torch.zeros(len(poses), body.num_betas), body_pose=body_pose)
    verts, joints = out.vertices.numpy().astype(np.float64), out.joints.numpy().astype(np.float64)
    faces = np.asarray(body.faces)
    parents = list(body.parents)
    lo, hi = verts[0].min(0), verts[0].max(0)
    centre = np.array([0.0, 0.5 * (lo[1] + hi[1]), 0.0])  # same framing for every panel
    rows = []
    for view in (FRONT, SIDE):
        row = [label(render_panel(v, faces, j, parents, view, centre, spec), f"{name} - {view.name}")
               for name, v, j in zip(poses, verts, joints)]
        rows.append(np.concatenate(row, axis=1))
    sheet = np.concatenate(rows, axis=0)
    # thin separators between panels
    sheet[spec.height_px - 1: spec.height_px + 1] = 120
    for c in range(1, len(poses)):
        sheet[:, c * spec.width_px - 1: c * spec.width_px + 1] = 120
    footer = np.full((34, sheet.shape[1], 3), 255, dtype=np.uint8)
    footer = label(footer, f"{body.model_id}: {body.num_vertices} vertices, beta = 0, "
                           f"height {body.rest_height():.3f} m; red = 24 SMPL joints")
    return np.concatenate([sheet, footer], axis=0)


def main(argv: list[str] | None = None) -> None:
    import cv2

    from model.body import DEFAULT_BODY_PATH, BodyModelError

    p = argparse.ArgumentParser(description="Render the open body sheet (docs/body.png).")
    p.add_argument("--body", type=Path, default=DEFAULT_BODY_PATH)
    p.add_argument("--out", type=Path, default=Path("docs/body.png"))
    args = p.parse_args(argv)
    try:
        sheet = render_sheet(args.body)
    except BodyModelError as e:
        raise SystemExit(f"error: {e}") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), sheet):
        raise SystemExit(f"could not write {args.out}")
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
