"""Camera intrinsics with the Azure Kinect's Brown-Conrady rational distortion: project / unproject.

Conventions (the SDK's and OpenCV's): pixel (0, 0) is the *centre* of the top-left pixel; camera frame
is x right, y down, z forward; 3D points are metres. Normalised coordinates are (x/z, y/z).

Distortion model (k4a `transformation_project_internal`, identical to OpenCV's rational model when
codx = cody = 0), with xp = x - codx, yp = y - cody, r2 = xp^2 + yp^2:

    d  = (1 + k1 r2 + k2 r2^2 + k3 r2^3) / (1 + k4 r2 + k5 r2^2 + k6 r2^3)
    xd = xp d + p2 (r2 + 2 xp^2) + t p1 xp yp + codx        t = 2 (Brown-Conrady), 1 (Rational6KT)
    yd = yp d + p1 (r2 + 2 yp^2) + t p2 xp yp + cody
    u  = fx xd + cx,  v = fy yd + cy

Points with r2 > metric_radius^2 are outside the calibrated field of view and are reported invalid
(NaN + mask), never extrapolated. Unprojection inverts the model with vectorised Gauss-Newton (the
SDK's iterative scheme, in float64).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from calibration.errors import CalibrationError

MODELS = ("brown_conrady", "rational_6kt")
_DIST_FIELDS = ("k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2", "codx", "cody")


def as_float_array(values: Any, last_dim: int, name: str) -> np.ndarray:
    """`values` as a float64 array of shape (..., last_dim); CalibrationError naming `name` otherwise."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{name} must be numeric, got {type(values).__name__}") from exc
    if arr.ndim == 0 or arr.shape[-1] != last_dim:
        raise CalibrationError(f"{name} must have shape (..., {last_dim}), got {arr.shape}")
    return arr


@dataclass(frozen=True)
class CameraIntrinsics:
    """One camera: image size (px), pinhole K (px), distortion (unitless), metric radius (normalised).

    `project` / `unproject` take and return any leading shape: (..., 3) metres <-> (..., 2) px.
    Instances are immutable and hashable; per-camera tables (`xy_table`) are cached by value.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    k4: float = 0.0
    k5: float = 0.0
    k6: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    codx: float = 0.0
    cody: float = 0.0
    metric_radius: float = math.inf
    model: str = "brown_conrady"

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not float(value).is_integer() or int(value) <= 0:
                raise CalibrationError(f"camera {name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("fx", "fy", "cx", "cy", *_DIST_FIELDS, "metric_radius"):
            try:
                value = float(getattr(self, name))
            except (TypeError, ValueError) as exc:
                raise CalibrationError(f"camera {name} must be a number, got {getattr(self, name)!r}") from exc
            if math.isnan(value) or (math.isinf(value) and name != "metric_radius"):
                raise CalibrationError(f"camera {name} must be finite, got {value}")
            object.__setattr__(self, name, value)
        if self.fx <= 0 or self.fy <= 0:
            raise CalibrationError(f"focal lengths must be > 0 px, got fx={self.fx}, fy={self.fy}")
        if self.metric_radius <= 0:
            raise CalibrationError(f"metric_radius must be > 0 (normalised units), got {self.metric_radius}")
        if self.model not in MODELS:
            raise CalibrationError(f"unknown distortion model {self.model!r}; expected one of {MODELS}")

    # ------------------------------------------------------------------ basic views
    @property
    def K(self) -> np.ndarray:
        """3x3 camera matrix (px), OpenCV layout."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, OpenCV order."""
        return (self.width, self.height)

    @property
    def has_distortion(self) -> bool:
        return any(getattr(self, n) != 0.0 for n in _DIST_FIELDS[:8])

    def opencv_dist_coeffs(self) -> np.ndarray:
        """(8,) OpenCV rational coefficients (k1, k2, p1, p2, k3, k4, k5, k6).

        Exact only for Brown-Conrady with codx = cody = 0 (every retail Azure Kinect); otherwise an error.
        """
        if self.model != "brown_conrady" or self.codx != 0.0 or self.cody != 0.0:
            raise CalibrationError(
                f"model {self.model!r} with centre of distortion ({self.codx}, {self.cody}) has no OpenCV equivalent")
        return np.array([self.k1, self.k2, self.p1, self.p2, self.k3, self.k4, self.k5, self.k6])

    # ------------------------------------------------------------------ distortion
    def distort_xy(self, x: np.ndarray, y: np.ndarray, jacobian: bool = False):
        """Low-level, no checks: normalised undistorted x, y (same-shape float arrays) -> distorted xd, yd
        and r2 (squared radius about the centre of distortion) [, Jacobian entries j00 j01 j10 j11]."""
        xp = x - self.codx
        yp = y - self.cody
        xp2, yp2, xyp = xp * xp, yp * yp, xp * yp
        rs = xp2 + yp2
        a = 1.0 + rs * (self.k1 + rs * (self.k2 + rs * self.k3))
        b = 1.0 + rs * (self.k4 + rs * (self.k5 + rs * self.k6))
        with np.errstate(divide="ignore", invalid="ignore"):
            bi = 1.0 / np.where(b != 0.0, b, 1.0)  # the SDK uses 1 when b == 0
        d = a * bi
        tau = 2.0 if self.model == "brown_conrady" else 1.0
        xd = xp * d + (rs + 2.0 * xp2) * self.p2 + tau * xyp * self.p1 + self.codx
        yd = yp * d + (rs + 2.0 * yp2) * self.p1 + tau * xyp * self.p2 + self.cody
        if not jacobian:
            return xd, yd, rs
        da = self.k1 + rs * (2.0 * self.k2 + 3.0 * self.k3 * rs)
        db = self.k4 + rs * (2.0 * self.k5 + 3.0 * self.k6 * rs)
        dd2 = 2.0 * (da * b - a * db) * bi * bi  # 2 * d(d)/d(r2)
        j00 = d + xp2 * dd2 + 6.0 * xp * self.p2 + tau * yp * self.p1
        j01 = xyp * dd2 + 2.0 * yp * self.p2 + tau * xp * self.p1
        j10 = xyp * dd2 + 2.0 * xp * self.p1 + tau * yp * self.p2
        j11 = d + yp2 * dd2 + 6.0 * yp * self.p1 + tau * xp * self.p2
        return xd, yd, rs, j00, j01, j10, j11

    def _distort(self, xy: np.ndarray):
        """Normalised undistorted (..., 2) -> (distorted (..., 2), r2 (...))."""
        xd, yd, rs = self.distort_xy(xy[..., 0], xy[..., 1])
        return np.stack([xd, yd], axis=-1), rs

    def distort_normalized(self, xy: Any) -> tuple[np.ndarray, np.ndarray]:
        """Undistorted normalised (..., 2) -> (distorted normalised (..., 2), valid (...) bool)."""
        xy = as_float_array(xy, 2, "normalised points")
        out, rs = self._distort(xy)
        valid = np.isfinite(rs) & (rs <= self.metric_radius ** 2)
        out[~valid] = np.nan
        return out, valid

    def undistort_normalized(self, xy_distorted: Any, max_iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Distorted normalised (..., 2) -> (undistorted normalised (..., 2), valid (...) bool).

        Gauss-Newton on the exact model from the SDK's closed-form first guess, as the SDK does: a point
        is invalid if an iterate leaves the metric radius or the final residual exceeds 1e-6 px.
        """
        xy_distorted = as_float_array(xy_distorted, 2, "distorted normalised points")
        shape = xy_distorted.shape[:-1]
        target = xy_distorted.reshape(-1, 2)
        n = len(target)
        result = np.full((n, 2), np.nan)
        best_err = np.full(n, np.inf)
        radius2 = self.metric_radius ** 2
        idx = np.flatnonzero(np.isfinite(target).all(axis=1))
        tx, ty = target[idx, 0], target[idx, 1]
        x, y = self._first_guess(tx, ty)
        with np.errstate(all="ignore"):
            for _ in range(max_iterations):
                if idx.size == 0:
                    break
                px, py, rs, j00, j01, j10, j11 = self.distort_xy(x, y, jacobian=True)
                rx, ry = tx - px, ty - py
                err = (rx * self.fx) ** 2 + (ry * self.fy) ** 2
                inside = rs <= radius2
                improved = inside & (err < best_err[idx])
                result[idx[improved], 0] = x[improved]
                result[idx[improved], 1] = y[improved]
                best_err[idx[improved]] = err[improved]
                best_err[idx[~inside]] = np.inf  # left the calibrated field of view: invalid (SDK rule)
                det = j00 * j11 - j01 * j10
                go = improved & (err > 1e-24) & (np.abs(det) > 1e-12)
                idx, tx, ty, x, y = idx[go], tx[go], ty[go], x[go], y[go]
                rx, ry, j00, j01, j10, j11, det = rx[go], ry[go], j00[go], j01[go], j10[go], j11[go], det[go]
                x = x + (j11 * rx - j01 * ry) / det
                y = y + (j00 * ry - j10 * rx) / det
        valid = best_err < 1e-12
        result[~valid] = np.nan
        return result.reshape(shape + (2,)), valid.reshape(shape)

    def _first_guess(self, xd: np.ndarray, yd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The SDK's closed-form approximate inverse (radial ratio, then first-order tangential)."""
        xp, yp = xd - self.codx, yd - self.cody
        rs = xp * xp + yp * yp
        a = 1.0 + rs * (self.k1 + rs * (self.k2 + rs * self.k3))
        b = 1.0 + rs * (self.k4 + rs * (self.k5 + rs * self.k6))
        with np.errstate(all="ignore"):
            di = b / np.where(a != 0.0, a, 1.0)
            x, y = xp * di, yp * di
            two_xy, xx, yy = 2.0 * x * y, x * x, y * y
            x = x - (yy + 3.0 * xx) * self.p2 - two_xy * self.p1 + self.codx
            y = y - (xx + 3.0 * yy) * self.p1 - two_xy * self.p2 + self.cody
        bad = ~(np.isfinite(x) & np.isfinite(y))
        x[bad] = xd[bad]
        y[bad] = yd[bad]
        return x, y

    # ------------------------------------------------------------------ project / unproject
    def project_with_mask(self, points_cam: Any) -> tuple[np.ndarray, np.ndarray]:
        """Points (..., 3) metres, this camera's frame -> (pixels (..., 2) float64, valid (...) bool).

        Invalid (NaN pixel): z <= 0, non-finite input, or outside the metric radius.
        """
        pts = as_float_array(points_cam, 3, "points_cam")
        z = pts[..., 2]
        with np.errstate(all="ignore"):
            ok = np.isfinite(pts).all(axis=-1) & (z > 0)
            xy = pts[..., :2] / np.where(ok, z, 1.0)[..., None]
            xy_d, rs = self._distort(xy)
            valid = ok & (rs <= self.metric_radius ** 2)
        uv = np.empty_like(xy_d)
        uv[..., 0] = xy_d[..., 0] * self.fx + self.cx
        uv[..., 1] = xy_d[..., 1] * self.fy + self.cy
        uv[~valid] = np.nan
        return uv, valid

    def project(self, points_cam: Any) -> np.ndarray:
        """Points (..., 3) metres, camera frame -> pixels (..., 2) with distortion; NaN where invalid."""
        return self.project_with_mask(points_cam)[0]

    def pixels_to_normalized(self, pixels: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (..., 2) -> (undistorted normalised rays (..., 2) at z = 1, valid (...) bool)."""
        px = as_float_array(pixels, 2, "pixels")
        xy_d = np.empty_like(px)
        xy_d[..., 0] = (px[..., 0] - self.cx) / self.fx
        xy_d[..., 1] = (px[..., 1] - self.cy) / self.fy
        return self.undistort_normalized(xy_d)

    def unproject_with_mask(self, pixels: Any, depth_m: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (..., 2) + z-depth (...) metres -> (points (..., 3) metres, valid (...) bool).

        Invalid (NaN point): depth <= 0 or non-finite, or a pixel outside the calibrated field of view.
        """
        xy, ray_ok = self.pixels_to_normalized(pixels)
        try:
            z = np.broadcast_to(np.asarray(depth_m, dtype=np.float64), xy.shape[:-1])
        except ValueError as exc:
            raise CalibrationError(
                f"depth_m shape {np.shape(depth_m)} does not match pixels shape {xy.shape}") from exc
        with np.errstate(invalid="ignore"):
            valid = ray_ok & np.isfinite(z) & (z > 0)
        pts = np.empty(xy.shape[:-1] + (3,))
        pts[..., :2] = xy * z[..., None]
        pts[..., 2] = z
        pts[~valid] = np.nan
        return pts, valid

    def unproject(self, pixels: Any, depth_m: Any) -> np.ndarray:
        """Pixels (..., 2) + z-depth (...) metres -> points (..., 3) metres; NaN where invalid."""
        return self.unproject_with_mask(pixels, depth_m)[0]

    def xy_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel undistorted rays: (xy (H, W, 2) float64 at z = 1, valid (H, W) bool), read-only.

        The SDK's "xy table": computed once per intrinsics value and cached (8 most recent cameras).
        """
        return _xy_table(self)

    # ------------------------------------------------------------------ derived cameras
    def scaled(self, width: int, height: int) -> "CameraIntrinsics":
        """Same camera with the image resized to (width, height) px (pixel-centre convention)."""
        sx, sy = width / self.width, height / self.height
        return dataclasses.replace(
            self, width=width, height=height, fx=self.fx * sx, fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5)

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "CameraIntrinsics":
        """Same camera seeing only the window [x0, x0 + width) x [y0, y0 + height) of the image."""
        return dataclasses.replace(self, width=width, height=height, cx=self.cx - x0, cy=self.cy - y0)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """Plain JSON-able dict; an infinite metric radius is written as null."""
        out = dataclasses.asdict(self)
        if math.isinf(self.metric_radius):
            out["metric_radius"] = None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "camera") -> "CameraIntrinsics":
        """Strict inverse of `to_dict`: an unknown key is an error naming the nearest valid key."""
        if not isinstance(data, Mapping):
            raise CalibrationError(f"{where} must be an object, got {type(data).__name__}")
        check_keys(data, [f.name for f in dataclasses.fields(cls)], where)
        kwargs = dict(data)
        if kwargs.get("metric_radius", 0.0) is None:
            kwargs["metric_radius"] = math.inf
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise CalibrationError(f"{where}: {exc}") from exc


def check_keys(data: Mapping[str, Any], allowed: list[str], where: str) -> None:
    """CalibrationError for the first unknown key, suggesting the closest allowed one."""
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(allowed)}"
            raise CalibrationError(f"{where}: unknown key {key!r}{hint}")


@functools.lru_cache(maxsize=8)
def _xy_table(cam: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(np.arange(cam.width, dtype=np.float64), np.arange(cam.height, dtype=np.float64))
    xy, valid = cam.pixels_to_normalized(np.stack([u, v], axis=-1))
    xy.setflags(write=False)
    valid.setflags(write=False)
    return xy, valid
