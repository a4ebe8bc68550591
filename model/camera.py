"""Camera maths and rotation conversions: batched, differentiable torch, ONNX-exportable.

No data-dependent Python control flow (only shape checks), so every function traces/exports with a
dynamic batch axis. Leading dimensions `...` may be any shape (including none) unless stated.

Rotations (radians; matrices act on column vectors, x' = R x):
    axis_angle_to_matrix (..., 3) -> (..., 3, 3)       smplx's batch_rodrigues
    matrix_to_axis_angle (..., 3, 3) -> (..., 3)       via a quaternion; stable near 0 and pi
    rot6d_to_matrix      (..., 6) -> (..., 3, 3)       Zhou et al. 2019, Gram-Schmidt
    matrix_to_rot6d      (..., 3, 3) -> (..., 6)       = (R[:, 0], R[:, 1]): first column, then second
Cameras (camera frame: OpenCV, x right, y down, z forward, metres; pixels: u right, v down):
    weak_perspective_project(points (B,N,3), cam (B,3) = (s, tx, ty)) -> (B,N,2)
        the paper's x = s * Pi(R X) + t, Pi = drop z; R is already in the points (global orientation).
        Output is normalised crop coordinates: [-1, 1] spans the square crop, (0, 0) is its centre.
    perspective_project(points (B,N,3), K (3,3) or (B,3,3)) -> (B,N,2) pixels
    weak_perspective_to_translation(cam (B,3), focal_px, crop_px) -> (B,3) camera-frame translation
        tz = 2 f / (crop_px * s) (SPIN's convention) and, because our weak projection adds t after the
        scale, tx/s, ty/s for x and y: a body placed at that translation projects with a pinhole camera
        (focal f, principal point at the crop centre) where the weak camera put it, up to depth relief.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from smplx.lbs import batch_rodrigues

__all__ = [
    "axis_angle_to_matrix", "matrix_to_axis_angle", "rot6d_to_matrix", "matrix_to_rot6d",
    "weak_perspective_project", "perspective_project", "weak_perspective_to_translation",
]


def _check_last(x: torch.Tensor, name: str, shape: tuple[int, ...]) -> None:
    if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape):]) != shape:
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, shape))}), got {tuple(x.shape)}")


# ---------------------------------------------------------------------- rotations
def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) radians -> rotation matrices (..., 3, 3) (Rodrigues, smplx's implementation)."""
    _check_last(axis_angle, "axis_angle", (3,))
    lead = axis_angle.shape[:-1]
    return batch_rodrigues(axis_angle.reshape(-1, 3)).reshape(*lead, 3, 3)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) as (w, x, y, z), sign arbitrary.

    Builds all four Shepperd candidates and keeps the one with the largest divisor (no branches), so it
    is accurate for every rotation, including angles near 0 and pi.
    """
    _check_last(matrix, "matrix", (3, 3))
    m = matrix
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 w^2, 4 x^2, 4 y^2, 4 z^2
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    two_abs = torch.sqrt(sq.clamp(min=1e-12))  # 2|w|, 2|x|, 2|y|, 2|z|; clamp keeps gradients finite
    # row k = 2 q_k * (w, x, y, z)
    cand = torch.stack([
        torch.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, sq[..., 2], m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, sq[..., 3]], dim=-1),
    ], dim=-2)
    cand = cand / (2.0 * two_abs.clamp(min=0.1)).unsqueeze(-1)  # row k now = sign(q_k) (w, x, y, z)
    pick = F.one_hot(two_abs.argmax(dim=-1), num_classes=4).to(cand.dtype)
    return (cand * pick.unsqueeze(-1)).sum(dim=-2)


_TAN_PI_8 = 0.41421356237309503


def _atan2_nonnegative(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """atan2(y, x) for y >= 0, x >= 0, not both 0 -> radians in [0, pi/2], from + - * / and Where only.

    ONNX Runtime's CUDA provider has no Atan kernel: an exported torch.atan2 runs on the CPU in the middle of
    the graph (a device -> host -> device copy every frame) and rules out CUDA-graph replay. Cephes' atanf
    instead: r = min/max in [0, 1], reduced to |t| <= tan(pi/8) by t = (r - 1)/(r + 1) (+ pi/4) above
    tan(pi/8), then an odd polynomial; error within ~2e-7 rad (float32 rounding).
    """
    big = torch.maximum(y, x).clamp(min=1e-30)
    r = torch.minimum(y, x) / big
    upper = r > _TAN_PI_8
    t = torch.where(upper, (r - 1.0) / (r + 1.0), r)
    z = t * t
    poly = (((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z - 3.33329491539e-1) * z * t + t
    at = poly + torch.where(upper, torch.full_like(t, math.pi / 4), torch.zeros_like(t))
    return torch.where(y > x, math.pi / 2 - at, at)


def quaternion_to_axis_angle(quaternion: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (..., 4) (w, x, y, z) -> axis-angle (..., 3), angle in [0, pi]."""
    _check_last(quaternion, "quaternion", (4,))
    sign = torch.where(quaternion[..., :1] < 0, -1.0, 1.0).to(quaternion.dtype)
    q = quaternion * sign  # w >= 0 so the angle is in [0, pi]
    xyz = q[..., 1:]
    n = torch.sqrt((xyz * xyz).sum(dim=-1, keepdim=True).clamp(min=1e-24))
    half = _atan2_nonnegative(n, q[..., :1])  # angle / 2, in [0, pi/2] (torch.atan2 without an Atan node)
    small = half < 1e-3
    # angle / sin(angle/2) = 2 half / sin(half); series 2 + half^2 / 3 when half is tiny
    safe_half = torch.where(small, torch.ones_like(half), half)
    factor = torch.where(small, 2.0 + half * half / 3.0, 2.0 * safe_half / torch.sin(safe_half))
    return xyz * factor


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3) radians, angle in [0, pi]."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """6D rotations (..., 6) = (first column, second column), not necessarily orthonormal -> (..., 3, 3).

    Gram-Schmidt (Zhou et al., "On the continuity of rotation representations", CVPR 2019):
    b1 = a1/|a1|, b2 = unit(a2 - (b1.a2) b1), b3 = b1 x b2; R = [b1 b2 b3] as columns.
    """
    _check_last(rot6d, "rot6d", (6,))
    a1, a2 = rot6d[..., 0:3], rot6d[..., 3:6]
    b1 = F.normalize(a1, dim=-1, eps=1e-8)
    b2 = F.normalize(a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1, dim=-1, eps=1e-8)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> 6D (..., 6) = (R[..., :, 0], R[..., :, 1])."""
    _check_last(matrix, "matrix", (3, 3))
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


# ---------------------------------------------------------------------- cameras
def weak_perspective_project(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """x = s * (X, Y) + (tx, ty): points (B, N, 3) metres (rotation already applied), cam (B, 3) = (s, tx, ty).

    Returns (B, N, 2) normalised crop coordinates ([-1, 1] over the square crop, x right, y down).
    """
    _check_last(points, "points", (3,))
    _check_last(cam, "cam", (3,))
    if points.dim() != 3 or cam.dim() != 2 or cam.shape[0] != points.shape[0]:
        raise ValueError(f"points must be (B, N, 3) and cam (B, 3), got {tuple(points.shape)} and {tuple(cam.shape)}")
    s = cam[:, None, 0:1]
    t = cam[:, None, 1:3]
    return s * points[..., :2] + t


def perspective_project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection: points (B, N, 3) metres in the camera frame (z > 0 in front), K (3, 3) or (B, 3, 3).

    Returns (B, N, 2) pixels: u = fx X/Z + s Y/Z + cx, v = fy Y/Z + cy. No clamping of Z (a point at
    Z = 0 gives inf).
    """
    _check_last(points, "points", (3,))
    if points.dim() != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    if K.dim() == 2:
        _check_last(K, "K", (3, 3))
        Kb = K.unsqueeze(0)
    elif K.dim() == 3 and tuple(K.shape[1:]) == (3, 3) and K.shape[0] in (1, points.shape[0]):
        Kb = K
    else:
        raise ValueError(f"K must be (3, 3) or ({points.shape[0]}, 3, 3), got {tuple(K.shape)}")
    Kb = Kb.to(points.dtype)
    uvw = torch.matmul(points, Kb.transpose(-1, -2))  # (B, N, 3)
    return uvw[..., :2] / uvw[..., 2:3]


def weak_perspective_to_translation(cam: torch.Tensor, focal_px: float | torch.Tensor,
                                    crop_px: float | torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Weak camera (B, 3) = (s, tx, ty) on a square crop -> camera-frame translation (B, 3) metres.

    focal_px: focal length in pixels of the crop (float or (B,)); crop_px: crop side in pixels (float
    or (B,)). tz = 2 f / (crop_px * s) (SPIN), tx' = tx / s, ty' = ty / s (our projection adds t after
    scaling). The crop centre must sit on the principal point of the pinhole camera it is used with.
    s is clamped to >= eps.
    """
    _check_last(cam, "cam", (3,))
    if cam.dim() != 2:
        raise ValueError(f"cam must be (B, 3), got {tuple(cam.shape)}")
    f = torch.as_tensor(focal_px, dtype=cam.dtype, device=cam.device).reshape(-1)
    c = torch.as_tensor(crop_px, dtype=cam.dtype, device=cam.device).reshape(-1)
    s = cam[:, 0].clamp(min=eps)
    tz = 2.0 * f / (c * s)
    return torch.stack([cam[:, 1] / s, cam[:, 2] / s, tz], dim=-1)
