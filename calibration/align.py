"""RGB-D alignment on the CPU, without the SDK's OpenGL depth engine.

(a) `ColorToDepthAligner`: for every depth pixel, unproject (cached xy table), move into the color
    camera, project with distortion, sample the color image. Output lives on the depth grid; this is
    the model's input alignment.
(b) `DepthToColorAligner`: splat every depth pixel into the color image with a z-buffer (nearest
    surface wins), for overlays in the color frame.

How (a) is fast: for a fixed depth pixel with ray r = (x, y, 1), the point at depth z lands in the
color camera at p_c = z (R r) + t, so its color pixel is a smooth function of the inverse depth
w = 1/z only. Once per calibration we fit, per depth pixel, a low-degree polynomial in w over the
working range [1/max_depth, 1/min_depth] (least squares on Chebyshev nodes; degree 3 unless that
leaves too many pixels on the exact path, then 4..6) and check its error on a
denser set of depths; pixels whose fit is worse than `max_fit_error_px`, or that leave the color
camera's calibrated field of view inside the range, are computed exactly every frame instead. Per
frame that leaves: w from the depth image and the Horner sum over interleaved (u, v) coefficients in one
compiled pass (`calibration._kernels`, numba), one `cv2.remap`, a few masks.

Frames and units: depth images are uint16 millimetres (0 = invalid), color images BGR(A) uint8,
pixel (0, 0) is the centre of the top-left pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from calibration.errors import CalibrationError
from calibration.rig import RgbdRig

_OUTSIDE = np.float32(-1.0e6)  # a color coordinate no image contains


@dataclass(frozen=True)
class AlignConfig:
    """Depth working range (mm; outside it a depth pixel is masked invalid), sampling, fit settings."""

    min_depth_mm: int = 250
    max_depth_mm: int = 10000
    interpolation: str = "linear"      # color sampling: "linear" or "nearest"
    poly_degree: Optional[int] = None   # None: the lowest of 3..6 that leaves <= 0.1 % pixels exact
    max_fit_error_px: float = 0.02      # pixels fitted worse than this are computed exactly per frame
    occlusion_check: bool = False       # (a) only: mask depth pixels hidden from the color camera
    occlusion_tolerance_mm: float = 20.0

    def __post_init__(self) -> None:
        if not (0 < self.min_depth_mm < self.max_depth_mm <= 65535):
            raise CalibrationError(f"need 0 < min_depth_mm < max_depth_mm <= 65535, got "
                                   f"{self.min_depth_mm}, {self.max_depth_mm}")
        if self.interpolation not in ("linear", "nearest"):
            raise CalibrationError(f"interpolation must be 'linear' or 'nearest', got {self.interpolation!r}")
        if self.poly_degree is not None and not 1 <= self.poly_degree <= 8:
            raise CalibrationError(f"poly_degree must be in 1..8 or None, got {self.poly_degree}")


def check_depth(depth_mm: np.ndarray, rig_depth_size: tuple[int, int], name: str = "depth_mm") -> None:
    """Clear errors for a depth image that is not uint16 (H, W) of the rig's depth size."""
    if not isinstance(depth_mm, np.ndarray):
        raise CalibrationError(f"{name} must be a numpy array, got {type(depth_mm).__name__}")
    if depth_mm.dtype != np.uint16:
        raise CalibrationError(f"{name} must be uint16 millimetres, got dtype {depth_mm.dtype}"
                               + (" (metres? multiply by 1000 and cast)" if depth_mm.dtype.kind == "f" else ""))
    w, h = rig_depth_size
    if depth_mm.shape != (h, w):
        raise CalibrationError(f"{name} has shape {depth_mm.shape}, the rig's depth camera is (H, W) = ({h}, {w})")


def check_color(color: np.ndarray, rig_color_size: tuple[int, int], name: str = "color_bgr") -> None:
    """Clear errors for a color image that is not uint8 (H, W, 3|4) of the rig's color size."""
    if not isinstance(color, np.ndarray):
        raise CalibrationError(f"{name} must be a numpy array, got {type(color).__name__}")
    if color.dtype != np.uint8:
        raise CalibrationError(f"{name} must be uint8, got dtype {color.dtype}")
    w, h = rig_color_size
    if color.ndim != 3 or color.shape[2] not in (3, 4) or color.shape[:2] != (h, w):
        raise CalibrationError(f"{name} has shape {color.shape}, the rig's color camera needs ({h}, {w}, 3) "
                               "BGR (or BGRA)")


class DepthPixelToColorMap:
    """Precomputed map: depth pixel + depth -> color pixel and color-frame z (see module docstring).

    Built once per (rig, depth range); read-only afterwards, so one instance may serve several threads.
    """

    def __init__(self, rig: RgbdRig, config: AlignConfig = AlignConfig()):
        self.rig = rig
        self.config = config
        xy, ray_valid = rig.depth.xy_table()
        hd, wd = ray_valid.shape
        R, t = rig.depth_to_color.R, rig.depth_to_color.t
        rays = np.concatenate([np.where(ray_valid[..., None], xy, 0.0), np.ones((hd, wd, 1))], axis=-1)
        a = (rays @ R.T).reshape(-1, 3)                 # p_c / z = a + t w, w = 1/z
        self._ax, self._ay, self._az = (np.ascontiguousarray(a[:, i]) for i in range(3))
        self._t = t
        self._ray_valid = ray_valid.reshape(-1)
        self.w_lo, self.w_hi = 1000.0 / config.max_depth_mm, 1000.0 / config.min_depth_mm
        self.a_z = self._az.astype(np.float32).reshape(hd, wd)  # z_c = a_z z + t_z

        n = hd * wd
        self.shape = (hd, wd)
        degrees = [config.poly_degree] if config.poly_degree is not None else [3, 4, 5, 6]
        for deg in degrees:
            coef, exact, fit_error = self._fit(deg)
            if exact.size <= 0.001 * n:
                break
        self.degree = deg
        self._coef_stack = np.stack(coef)                 # (deg + 1, Hd, Wd, 2) float32
        self.coef = list(self._coef_stack)                # (views)
        self._coef_stack.setflags(write=False)
        self.exact_index = exact
        self.fit_error_px = fit_error
        for arr in self.coef + [self.a_z]:
            arr.setflags(write=False)

    def _fit(self, deg: int) -> tuple[list[np.ndarray], np.ndarray, float]:
        """Least-squares polynomial of degree `deg` in w per depth pixel -> (coefficients, exact-path
        flat indices, worst fit error of the fitted pixels in px)."""
        config, rig = self.config, self.rig
        hd, wd = self.shape
        n_nodes = deg + 3
        cheb = np.cos(np.pi * (np.arange(n_nodes) + 0.5) / n_nodes)[::-1]
        nodes = self.w_lo + (cheb + 1.0) * 0.5 * (self.w_hi - self.w_lo)
        pinv = np.linalg.pinv(np.vander(nodes, deg + 1, increasing=True))  # (deg+1, n_nodes)
        n = hd * wd
        cu = np.zeros((deg + 1, n))
        cv = np.zeros((deg + 1, n))
        all_valid = self._ray_valid.copy()
        for k, w in enumerate(nodes):
            u, v, ok = self._exact(None, w)
            all_valid &= ok
            u[~ok] = 0.0
            v[~ok] = 0.0
            for j in range(deg + 1):
                cu[j] += pinv[j, k] * u
                cv[j] += pinv[j, k] * v
        # check the fit on the range ends and between the nodes (in increasing w), and find pixels
        # that stay well outside the color image over the whole range (margin: the largest step
        # between consecutive checks plus 2 px, so the path cannot cross the image unseen)
        checks = np.concatenate([[self.w_lo], 0.5 * (nodes[1:] + nodes[:-1]), [self.w_hi]])
        wc, hc = rig.color.size
        max_err = np.zeros(n)
        any_valid = np.zeros(n, dtype=bool)
        max_step = np.zeros(n)
        inside = np.full(n, -np.inf)  # largest signed distance into the color image seen, px
        prev_u = prev_v = None
        with np.errstate(invalid="ignore"):
            for w in checks:
                u, v, ok = self._exact(None, w)
                any_valid |= ok
                all_valid &= ok
                pu = cu[deg].copy()
                pv = cv[deg].copy()
                for j in range(deg - 1, -1, -1):
                    pu = pu * w + cu[j]
                    pv = pv * w + cv[j]
                err = np.maximum(np.abs(pu - u), np.abs(pv - v))
                max_err = np.where(ok, np.maximum(max_err, err), max_err)
                depth_in = np.minimum(np.minimum(u, wc - 1 - u), np.minimum(v, hc - 1 - v))
                inside = np.where(ok, np.maximum(inside, depth_in), inside)
                if prev_u is not None:
                    step = np.maximum(np.abs(u - prev_u), np.abs(v - prev_v))
                    max_step = np.where(ok & np.isfinite(step), np.maximum(max_step, step), max_step)
                    prev_u, prev_v = np.where(ok, u, prev_u), np.where(ok, v, prev_v)
                else:
                    prev_u, prev_v = np.where(ok, u, np.nan), np.where(ok, v, np.nan)
        never = ~(any_valid & self._ray_valid) | (inside < -(max_step + 2.0))
        exact = ~never & (~all_valid | (max_err > config.max_fit_error_px))
        for c in (cu, cv):
            c[:, never | exact] = 0.0
            c[0, never | exact] = _OUTSIDE
        # interleaved (Hd, Wd, 2) float32 coefficients: one Horner pass yields the (u, v) map cv2.remap wants
        coefs = [np.ascontiguousarray(np.stack([cu[j], cv[j]], axis=-1).reshape(hd, wd, 2), dtype=np.float32)
                 for j in range(deg + 1)]
        fitted = ~never & ~exact
        return coefs, np.flatnonzero(exact), float(max_err[fitted].max()) if fitted.any() else 0.0

    def color_z_mm(self, depth_mm: np.ndarray) -> np.ndarray:
        """Depth (Hd, Wd) uint16 mm -> z of the same points in the color camera frame (Hd, Wd) float32 mm."""
        return self.a_z * depth_mm.astype(np.float32) + np.float32(self._t[2] * 1000.0)

    def _exact(self, index: Optional[np.ndarray], w) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact color pixel u, v (float64) and valid for depth pixels `index` (None = all) at inverse depth w."""
        sl = slice(None) if index is None else index
        tx, ty, tz = self._t
        X, Y, Z = self._ax[sl] + tx * w, self._ay[sl] + ty * w, self._az[sl] + tz * w
        cam = self.rig.color
        with np.errstate(divide="ignore", invalid="ignore"):
            front = Z > 0
            inv_z = 1.0 / np.where(front, Z, 1.0)
            xd, yd, rs = cam.distort_xy(X * inv_z, Y * inv_z)
            ok = front & (rs <= cam.metric_radius ** 2) & self._ray_valid[sl]
        u = xd * cam.fx + cam.cx
        v = yd * cam.fy + cam.cy
        return u, v, ok

    def exact_uv(self, index: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact color pixels (N, 2) float64 (NaN if invalid) + valid (N,) for flat depth-pixel `index`
        at inverse depths `w` (N,) 1/m."""
        u, v, ok = self._exact(np.asarray(index), np.asarray(w, dtype=np.float64))
        uv = np.stack([u, v], axis=-1)
        uv[~ok] = np.nan
        return uv, ok

    def color_coordinates(self, depth_mm: np.ndarray, window: Optional[tuple[int, int, int, int]] = None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """Depth (Hd, Wd) uint16 mm -> (uv (Hd, Wd, 2) float32 color pixels, depth-in-range uint8 mask 0/255).

        Pixels without a valid projection get coordinates far outside the color image. window: (x0, y0,
        x1, y1), half-open depth pixels: only that part of depth_mm is read, and both outputs cover just
        the window, (y1 - y0, x1 - x0[, 2]), with the same values as the full frame's there.
        """
        cfg = self.config
        x0, y0, x1, y1 = (0, 0, self.shape[1], self.shape[0]) if window is None else window
        depth_mm = np.ascontiguousarray(depth_mm[y0:y1, x0:x1])
        uv = np.empty(depth_mm.shape + (2,), np.float32)
        depth_ok = np.empty(depth_mm.shape, np.uint8)
        from calibration import _kernels   # (numba; loaded on first use)
        _kernels.color_uv_kernel(depth_mm, self._coef_stack, y0, x0, cfg.min_depth_mm, cfg.max_depth_mm,
                                       np.float32(self.w_hi), uv, depth_ok)
        idx = self.exact_index
        if idx.size and window is not None:
            row, col = np.divmod(idx, self.shape[1])
            inside = (row >= y0) & (row < y1) & (col >= x0) & (col < x1)
            idx, local = idx[inside], (row[inside] - y0) * (x1 - x0) + (col[inside] - x0)
        else:
            local = idx
        if idx.size:
            d = depth_mm.reshape(-1)[local].astype(np.float32)
            with np.errstate(divide="ignore"):
                w = np.minimum(np.float32(1000.0) / d, np.float32(self.w_hi))     # 1/m, as in the kernel
            exact, ok = self.exact_uv(idx, w.astype(np.float64))
            uv.reshape(-1, 2)[local] = np.where(ok[:, None], exact, _OUTSIDE)
        return uv, depth_ok


class ColorToDepthAligner:
    """(a) Color image resampled onto the depth grid. Keeps no per-frame state (threads may share it).

    `__call__(color_bgr (Hc, Wc, 3|4) uint8, depth_mm (Hd, Wd) uint16)` ->
    `(aligned_color (Hd, Wd, 3) uint8 BGR, valid (Hd, Wd) bool)`; invalid pixels are black. A pixel is
    valid when its depth is inside the working range, its ray and color projection are inside both
    calibrated fields of view and the color image, and (with `occlusion_check`) it is not hidden from
    the color camera by a nearer surface.
    """

    def __init__(self, rig: RgbdRig, config: AlignConfig = AlignConfig()):
        self.rig = rig
        self.config = config
        self.map = DepthPixelToColorMap(rig, config)
        self._interp = cv2.INTER_LINEAR if config.interpolation == "linear" else cv2.INTER_NEAREST
        wc, hc = rig.color.size
        # bilinear needs both neighbours inside; nearest needs the rounded pixel inside
        m = 0.0 if config.interpolation == "linear" else 0.5
        self._lower = (-m, -m)
        self._upper = (wc - 1 + m - 1e-3 * m, hc - 1 + m - 1e-3 * m)
        self._depth_to_color: Optional[DepthToColorAligner] = None
        if config.occlusion_check:
            self._depth_to_color = DepthToColorAligner(rig, config, pixel_map=self.map)

    def __call__(self, color_bgr: np.ndarray, depth_mm: np.ndarray,
                 window: Optional[tuple[int, int, int, int]] = None) -> tuple[np.ndarray, np.ndarray]:
        """window: (x0, y0, x1, y1), half-open depth pixels: align only those (the same values as a full
        alignment there; black and invalid elsewhere). Not with `occlusion_check`, which needs the
        whole depth image."""
        check_color(color_bgr, self.rig.color.size)
        check_depth(depth_mm, self.rig.depth.size)
        if window is not None:
            hd, wd = self.map.shape
            x0, y0, x1, y1 = (int(v) for v in window)
            if not (0 <= x0 < x1 <= wd and 0 <= y0 < y1 <= hd):
                raise CalibrationError(f"window {window} is empty or outside the {wd}x{hd} depth image")
            if self._depth_to_color is not None:
                raise CalibrationError("ColorToDepthAligner: a window cannot be used with occlusion_check")
            # (OpenCV reads 1 x 1 arrays as scalars: compute at least 2 x 2 pixels, keep the window's)
            cx0, cy0 = min(x0, wd - 2), min(y0, hd - 2)
            cx1, cy1 = max(x1, cx0 + 2), max(y1, cy0 + 2)
            aligned_w, valid_w = self._align(color_bgr, depth_mm, (cx0, cy0, cx1, cy1))
            aligned = np.zeros((hd, wd, 3), np.uint8)
            valid = np.zeros((hd, wd), bool)
            aligned[y0:y1, x0:x1] = aligned_w[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
            valid[y0:y1, x0:x1] = valid_w[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
            return aligned, valid
        return self._align(color_bgr, depth_mm, None)

    def _align(self, color_bgr: np.ndarray, depth_mm: np.ndarray,
               window: Optional[tuple[int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
        uv, valid = self.map.color_coordinates(depth_mm, window)
        src = color_bgr if color_bgr.shape[2] == 3 else cv2.cvtColor(color_bgr, cv2.COLOR_BGRA2BGR)
        aligned = cv2.remap(src, uv, None, self._interp, borderMode=cv2.BORDER_CONSTANT)
        cv2.bitwise_and(valid, cv2.inRange(uv, self._lower, self._upper), dst=valid)
        if self._depth_to_color is not None:
            cv2.bitwise_and(valid, self._visible(depth_mm, uv), dst=valid)
        aligned = cv2.bitwise_and(aligned, aligned, mask=valid)
        return aligned, valid > 0

    def _visible(self, depth_mm: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """uint8 mask: 255 where the depth pixel's surface is the one the color camera sees."""
        zbuf = self._depth_to_color(depth_mm)
        seen = cv2.remap(zbuf, uv, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        z_c = self.map.color_z_mm(depth_mm)
        tol = np.maximum(np.float32(self.config.occlusion_tolerance_mm), np.float32(0.02) * z_c)
        seen = seen.astype(np.float32)
        return ((seen == 0) | (z_c <= seen + tol)).astype(np.uint8) * 255


class DepthToColorAligner:
    """(b) Depth re-rendered in the color camera: (Hd, Wd) uint16 mm -> (Hc, Wc) uint16 mm z in the
    color frame, 0 where no depth pixel lands. Each depth pixel covers the bounding box of its own
    projected footprint (precomputed per pixel from the map's Jacobian at 2 m, +10 %), so the denser
    color grid has no holes; where several land on one color pixel the nearest wins (z-buffer).
    Surfaces may grow by up to one color pixel at depth edges. Keeps no per-frame state.
    """

    def __init__(self, rig: RgbdRig, config: AlignConfig = AlignConfig(),
                 pixel_map: Optional[DepthPixelToColorMap] = None):
        self.rig = rig
        self.config = config
        self.map = pixel_map if pixel_map is not None else DepthPixelToColorMap(rig, config)
        ref_mm = int(np.clip(2000, config.min_depth_mm, config.max_depth_mm))
        uv, _ = self.map.color_coordinates(np.full(self.map.shape, ref_mm, dtype=np.uint16))
        uv = uv.astype(np.float64)
        uv[np.abs(uv) > 1e5] = np.nan  # pixels that never land in the image
        du_dy, du_dx = np.gradient(uv[..., 0])
        dv_dy, dv_dx = np.gradient(uv[..., 1])
        half_u = 0.55 * (np.abs(du_dx) + np.abs(du_dy))
        half_v = 0.55 * (np.abs(dv_dx) + np.abs(dv_dy))
        self.half_u = np.clip(np.nan_to_num(half_u, nan=0.5), 0.5, 8.0).astype(np.float32)
        self.half_v = np.clip(np.nan_to_num(half_v, nan=0.5), 0.5, 8.0).astype(np.float32)
        self._k = int(np.ceil(max(self.half_u.max(), self.half_v.max()) + 0.5))

    def __call__(self, depth_mm: np.ndarray) -> np.ndarray:
        check_depth(depth_mm, self.rig.depth.size)
        uv, valid = self.map.color_coordinates(depth_mm)
        wc, hc = self.rig.color.size
        sel = np.flatnonzero(valid.reshape(-1))
        u, v = uv[..., 0].reshape(-1)[sel], uv[..., 1].reshape(-1)[sel]
        hu, hv = self.half_u.reshape(-1)[sel], self.half_v.reshape(-1)[sel]
        inside = (u > -hu - 0.5) & (u < wc - 0.5 + hu) & (v > -hv - 0.5) & (v < hc - 0.5 + hv)
        sel, u, v, hu, hv = sel[inside], u[inside], v[inside], hu[inside], hv[inside]
        z = self.map.color_z_mm(depth_mm).reshape(-1)[sel]
        zbuf = np.full(hc * wc, np.inf, dtype=np.float32)
        ui, vi = np.rint(u).astype(np.int32), np.rint(v).astype(np.int32)
        for dy in range(-self._k, self._k + 1):
            y = vi + dy
            rows = (np.abs(y - v) <= hv) & (y >= 0) & (y < hc)
            row_start, r_u, r_ui, r_hu, r_z = y[rows] * wc, u[rows], ui[rows], hu[rows], z[rows]
            for dx in range(-self._k, self._k + 1):
                x = r_ui + dx
                keep = (np.abs(x - r_u) <= r_hu) & (x >= 0) & (x < wc)
                np.minimum.at(zbuf, row_start[keep] + x[keep], r_z[keep])
        zbuf[~np.isfinite(zbuf)] = 0.0
        return np.clip(np.rint(zbuf), 0, 65535).astype(np.uint16).reshape(hc, wc)


def align_color_to_depth_naive(rig: RgbdRig, color_bgr: np.ndarray, depth_mm: np.ndarray,
                               config: AlignConfig = AlignConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Reference (a) with nothing precomputed: unproject every depth pixel (iterative undistortion),
    transform, project, remap, in float64. Same outputs as `ColorToDepthAligner`, no occlusion check.
    """
    check_color(color_bgr, rig.color.size)
    check_depth(depth_mm, rig.depth.size)
    hd, wd = depth_mm.shape
    gu, gv = np.meshgrid(np.arange(wd, dtype=np.float64), np.arange(hd, dtype=np.float64))
    z = depth_mm.astype(np.float64) / 1000.0
    in_range = (depth_mm >= config.min_depth_mm) & (depth_mm <= config.max_depth_mm)
    xy, ray_ok = rig.depth.undistort_normalized(
        np.stack([(gu - rig.depth.cx) / rig.depth.fx, (gv - rig.depth.cy) / rig.depth.fy], axis=-1))
    pts = np.concatenate([xy * z[..., None], z[..., None]], axis=-1)
    uv, ok = rig.color.project_with_mask(rig.depth_to_color.apply(pts))
    wc, hc = rig.color.size
    m = 0.0 if config.interpolation == "linear" else 0.5
    with np.errstate(invalid="ignore"):
        valid = (in_range & ray_ok & ok & (uv[..., 0] >= -m) & (uv[..., 0] <= wc - 1 + m - 1e-3 * m)
                 & (uv[..., 1] >= -m) & (uv[..., 1] <= hc - 1 + m - 1e-3 * m))
    uv = np.where(valid[..., None], uv, _OUTSIDE).astype(np.float32)
    src = color_bgr if color_bgr.shape[2] == 3 else cv2.cvtColor(color_bgr, cv2.COLOR_BGRA2BGR)
    interp = cv2.INTER_LINEAR if config.interpolation == "linear" else cv2.INTER_NEAREST
    aligned = cv2.remap(src, uv[..., 0], uv[..., 1], interp, borderMode=cv2.BORDER_REPLICATE)
    aligned[~valid] = 0
    return aligned, valid
