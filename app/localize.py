"""Person localisation from one depth image: floor plane, human-sized clusters, tracking.

Runs on the inference worker's thread (one `PersonLocalizer` per worker; not thread-safe). Input is the
raw depth image of the depth camera (uint16 mm, 0 = invalid) and that camera's intrinsics; output is a
`Detection` in depth-image pixels (bbox + full-resolution mask) or None when nobody is in view.

Frames: points are metres in the depth camera frame (OpenCV: x right, y down, z forward).

Steps (numpy + OpenCV; 640x576 NFOV with a tracked floor: ~4.3 ms wall median, ~5 ms when the floor
has to be found again (RANSAC), on the 2-core dev VM; without a floor (segments instead of the grid,
RANSAC every frame) ~8.5 ms on a 2x2-binned clip; `python -m app.localize` measures it):

1. Subsample the depth image (every `stride`-th pixel; default: ~160 samples across) and unproject with
   the calibration's undistorted ray table.
2. Floor: the lowest large plausible floor plane. RANSAC hypotheses are half triplets drawn anywhere and
   half local triplets (three samples within 3-24 grid steps of each other), so a floor that is only a
   few per cent of the view, or mostly dropouts, is still hit. A hypothesis is plausible only if its
   normal is within `floor_max_tilt_deg` of the camera's up axis (-y, so walls never win), it lies at
   least `floor_min_height_m` below the camera, explains >= `floor_min_fraction` of the samples, and
   has at most `floor_max_below_fraction` of them more than `floor_below_m` underneath it (a floor
   carries the scene; a box top, a table top or a plane cutting through walls and ceiling has much of
   the scene below it). Among plausible hypotheses with at least 60 % of the best inlier count the
   lowest is kept (a table top is not the floor); it is refined twice by least squares on its inliers
   and checked again. The plane is tracked: while it still explains enough samples and stays plausible
   it is reused (and re-fitted to the new inliers) without RANSAC.
3. With a floor: everything above it (height > `floor_clearance_m`) and below a visible ceiling (a height
   band >= 2 m holding a large horizontal area, or the top of the scene when the walls end in a band
   holding half that area with nothing above it; else below max_top_m + 0.6 m) is projected to a
   bird's-eye grid on the floor plane (`cell_m` cells) weighted by the surface area each sample covers
   ((stride z)^2 / (fx fy) m^2, so distant people are not thinner); occupied cells are closed (3x3) and
   split into connected components (8-connected). Arms in front of the torso fall in the torso's cells,
   so a person is one blob even where the depth image has jumps; two people a cell apart are two blobs.
   No plausible floor (hidden, e.g. a low sensor looking up): "up" is the camera's -y, and blobs are
   depth-continuous segments of the sample grid instead (4-neighbours joined when their depths differ
   by at most max(segment_min_jump_m, the step of a surface seen at segment_max_grazing_deg)), which
   cuts a person from the walls behind them; walls and ceiling form one large segment.
4. Human-sized blobs: top (highest point above the floor; without a floor: vertical extent along -y, at
   least `no_floor_min_top_m`, since furniture cut by the image border cannot be told from a crouching
   person without heights) in [min_top_m, max_top_m], footprint (bird's-eye extent) <= max_footprint_m
   and <= top / min_top_to_footprint (a table is wider than tall), visible area >= min_area_m2, with a
   floor no flat top (at most `max_flat_top_m2` of surface within 2.4 cm of the blob's top: a box or
   cabinet seen from above), and not filling the view (samples reaching the left and right image borders
   and the top or bottom one: a wall or board close to the sensor).
5. Choice: with a track (the previous detection, or `prior_xyz` from the previous mesh) the blob whose
   centroid is nearest to it in the floor plane, if within `track_gate_m`; otherwise the one with the
   lowest cost  range_m + centre_weight_m * |azimuth (rad)|  (near and central wins).
6. Mask at full resolution: with a floor, the depth pixels (inside the target's sample box, one stride
   of margin, extended down by the floor clearance) that fall in the target's cells and are above the
   floor's noise band (half floor_inlier_m; in the floor-clearance band only in cells the person itself
   occupies), so the feet are included and the floor around them is not; without one, the pixels whose
   block's sample is in the target segment and whose depth is within the jump tolerance of it. bbox uses
   pixel edges like the training labels: (min col - 0.5, min row - 0.5, max col + 0.5, max row + 0.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from calibration.intrinsics import CameraIntrinsics

__all__ = ["Detection", "FloorPlane", "LocalizeConfig", "PersonLocalizer"]

_UP = np.array([0.0, -1.0, 0.0])  # camera up (y points down in the OpenCV camera frame)


@dataclass(frozen=True)
class LocalizeConfig:
    """Localisation thresholds (metres unless stated).

    stride: sample every stride-th depth pixel (None: about 160 samples across the image: NFOV unbinned
    every 4th pixel, 2x2 binned every 2nd; at 4 m that is one sample per 3-4 cm, under a cell).
    min_range_m / max_range_m: depths outside are ignored. floor_*: see the module docstring; floor_
    min_fraction is the share of valid samples the floor must explain; floor_clearance_m: points lower
    than this above the floor are floor; ceiling_min_area_m2: a 4 cm height band >= 2 m above the floor
    holding this much surface is a ceiling (everything from 5 cm below it up is ignored). cell_m:
    bird's-eye cell size; min_cell_area_m2: a cell with less visible surface is empty. Person:
    min_top_m..max_top_m, max_footprint_m, top >= min_top_to_footprint x footprint (people are taller
    than wide, even in a T-pose; tables and sofas are not), min_area_m2. Choice: centre_weight_m
    (metres of range one radian off-axis costs), track_gate_m (largest floor-plane distance from the
    track for a tracked match), track_frames (a track older than this many calls is forgotten).
    floor_max_below_fraction / floor_below_m: a floor may have at most that share of the samples more than
    floor_below_m below it; floor_min_height_m: least camera height above a floor. segment_max_grazing_deg
    / segment_min_jump_m: depth continuity of the no-floor segments; no_floor_min_top_m: least vertical
    extent of a person without a floor; max_flat_top_m2: most surface a person may show within 2.4 cm of
    its top (with a floor). seed: RANSAC's random generator.
    """

    stride: Optional[int] = None
    min_range_m: float = 0.25
    max_range_m: float = 6.0
    floor_max_tilt_deg: float = 45.0
    floor_inlier_m: float = 0.04
    floor_min_fraction: float = 0.03
    floor_max_below_fraction: float = 0.05
    floor_below_m: float = 0.12
    floor_min_height_m: float = 0.3
    floor_ransac_iters: int = 96
    floor_ransac_samples: int = 2048
    floor_clearance_m: float = 0.05
    ceiling_min_area_m2: float = 0.3
    cell_m: float = 0.05
    min_cell_area_m2: float = 0.0015
    min_top_m: float = 0.7
    max_top_m: float = 2.4
    max_footprint_m: float = 2.0
    min_top_to_footprint: float = 0.7
    min_area_m2: float = 0.08
    max_flat_top_m2: float = 0.03
    centre_weight_m: float = 1.0
    track_gate_m: float = 0.6
    track_frames: int = 15
    segment_max_grazing_deg: float = 10.0
    no_floor_min_top_m: float = 0.85
    segment_min_jump_m: float = 0.04
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stride is not None and (isinstance(self.stride, bool) or int(self.stride) != self.stride
                                        or self.stride < 1):
            raise ValueError(f"LocalizeConfig.stride must be an int >= 1 or None, got {self.stride!r}")
        if not 0 <= self.min_range_m < self.max_range_m:
            raise ValueError(f"LocalizeConfig needs 0 <= min_range_m < max_range_m, got "
                             f"{self.min_range_m}, {self.max_range_m}")
        if not 0 < self.floor_max_tilt_deg < 90:
            raise ValueError(f"LocalizeConfig.floor_max_tilt_deg must be in (0, 90), got {self.floor_max_tilt_deg}")
        for name in ("floor_inlier_m", "cell_m", "min_cell_area_m2", "min_area_m2", "track_gate_m",
                     "ceiling_min_area_m2", "min_top_to_footprint", "max_footprint_m", "floor_below_m",
                     "segment_min_jump_m", "max_flat_top_m2", "floor_min_height_m", "no_floor_min_top_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LocalizeConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.min_top_m < self.max_top_m:
            raise ValueError(f"LocalizeConfig needs 0 < min_top_m < max_top_m, got {self.min_top_m}, {self.max_top_m}")
        if not 0 <= self.floor_max_below_fraction < 1:
            raise ValueError(f"LocalizeConfig.floor_max_below_fraction must be in [0, 1), got "
                             f"{self.floor_max_below_fraction}")
        if not 0 < self.segment_max_grazing_deg < 90:
            raise ValueError(f"LocalizeConfig.segment_max_grazing_deg must be in (0, 90), got "
                             f"{self.segment_max_grazing_deg}")
        if self.floor_ransac_iters < 1 or self.floor_ransac_samples < 3 or self.track_frames < 1:
            raise ValueError("LocalizeConfig: floor_ransac_iters, track_frames must be >= 1 and "
                             "floor_ransac_samples >= 3")


@dataclass(frozen=True)
class FloorPlane:
    """Plane n . p + d = 0 in the depth camera frame; n (3,) unit, pointing up; d = camera height (m).

    `height(points)` is the signed height above the floor (metres).
    """

    normal: np.ndarray
    d: float
    inlier_fraction: float

    def height(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) metres -> (...) metres above the floor."""
        p = np.asarray(points, dtype=np.float64)
        return _dot3(p[..., 0], p[..., 1], p[..., 2], self.normal) + self.d


@dataclass
class Detection:
    """The person found in one depth image.

    bbox: (4,) float64 x0, y0, x1, y1 pixel edges in depth-image pixels; mask: (H, W) bool person pixels;
    centroid: (3,) metres, camera frame, area-weighted mean of the person's visible surface; top_m: top
    of the person above the floor (vertical extent without a floor); area_m2: visible surface;
    n_candidates: human-sized blobs seen; tracked: chosen by the track / prior (else near-and-central);
    floor: the floor plane used (None: not in view).
    """

    bbox: np.ndarray
    mask: np.ndarray
    centroid: np.ndarray
    top_m: float
    area_m2: float
    n_candidates: int
    tracked: bool
    floor: Optional[FloorPlane]

    @property
    def pixels(self) -> int:
        return int(np.count_nonzero(self.mask))


def _dot3(x: np.ndarray, y: np.ndarray, z: np.ndarray, v: np.ndarray) -> np.ndarray:
    """v . (x, y, z) elementwise (no BLAS call: its thread start-up dominates at these sizes)."""
    return x * float(v[0]) + y * float(v[1]) + z * float(v[2])


class PersonLocalizer:
    """Finds the person in depth images of one camera. Owned by one thread (the inference worker).

    camera: the depth camera's intrinsics (images must have its size). Keeps the floor plane and the
    target's track between calls; `reset()` forgets both (new source, seek).
    """

    def __init__(self, camera: CameraIntrinsics, config: LocalizeConfig = LocalizeConfig()):
        if not isinstance(camera, CameraIntrinsics):
            raise TypeError(f"camera must be CameraIntrinsics, got {type(camera).__name__}")
        self.camera = camera
        self.config = config
        w, h = camera.size
        self.stride = int(config.stride) if config.stride is not None else max(1, int(round(w / 160)))
        xy, ray_ok = camera.xy_table()
        self._xy_full = xy.astype(np.float32)
        self._ray_ok_full = ray_ok
        s = self.stride
        self._xs = np.ascontiguousarray(xy[::s, ::s, 0])  # float64
        self._ys = np.ascontiguousarray(xy[::s, ::s, 1])
        self._ray_ok = np.ascontiguousarray(ray_ok[::s, ::s])
        ok_r, ok_c = np.nonzero(self._ray_ok)  # the sampled grid's valid-ray extent: the view's borders
        self._view = (int(ok_r.min()), int(ok_r.max()), int(ok_c.min()), int(ok_c.max())) if ok_r.size else (0, 0, 0, 0)
        self._area_k = float(s * s) / (camera.fx * camera.fy)
        self._rng = np.random.default_rng(config.seed)
        self.floor: Optional[FloorPlane] = None
        self._track: Optional[np.ndarray] = None
        self._track_age = 0
        self.floor_refits = 0
        self.last_blobs: dict[str, np.ndarray] = {}  # per blob of the last call: top_m, footprint_m, area_m2,
        # centroid, human_sized (diagnostics)

    def reset(self) -> None:
        """Forget the floor and the track."""
        self.floor = None
        self._track = None
        self._track_age = 0
        self._rng = np.random.default_rng(self.config.seed)

    # ------------------------------------------------------------------ main entry
    def __call__(self, depth_mm: np.ndarray, prior_xyz: Optional[np.ndarray] = None) -> Optional[Detection]:
        """Depth (H, W) uint16 mm -> the person's Detection, or None when no human-sized blob is in view.

        prior_xyz: (3,) metres, camera frame: where the person was (e.g. the previous mesh's pelvis);
        overrides the internal track for this call.
        """
        cfg, cam = self.config, self.camera
        if not isinstance(depth_mm, np.ndarray) or depth_mm.dtype != np.uint16 or depth_mm.ndim != 2:
            got = f"{depth_mm.dtype} {depth_mm.shape}" if isinstance(depth_mm, np.ndarray) else type(depth_mm).__name__
            raise ValueError(f"depth_mm must be an (H, W) uint16 array in millimetres, got {got}")
        if depth_mm.shape != (cam.height, cam.width):
            raise ValueError(f"depth_mm is {depth_mm.shape[1]}x{depth_mm.shape[0]} but the depth camera is "
                             f"{cam.width}x{cam.height}")
        s = self.stride
        z = depth_mm[::s, ::s].astype(np.float32) * np.float32(0.001)
        valid = self._ray_ok & (z > cfg.min_range_m) & (z < cfg.max_range_m)
        rows, cols = np.nonzero(valid)
        if rows.size < 10:
            self._age_track()
            return None
        zv = z[rows, cols].astype(np.float64)
        pts = np.stack([self._xs[rows, cols] * zv, self._ys[rows, cols] * zv, zv])  # (3, N) float64 rows

        floor = self._update_floor(pts, rows, cols)
        if floor is not None:
            up = floor.normal
            h = _dot3(*pts, up) + floor.d
            above = (h > cfg.floor_clearance_m) & (h < self._ceiling(h, zv))
        else:
            up = _UP
            h_raw = _dot3(*pts, up)
            h = h_raw - float(h_raw.min())
            above = np.ones(h.shape, bool)
        if np.count_nonzero(above) < 10:
            self._age_track()
            return None

        e2 = np.array([0.0, 0.0, 1.0]) - up[2] * up
        e2 /= np.linalg.norm(e2)
        e1 = np.cross(up, e2)
        P = pts[:, above]
        a, b = _dot3(*P, e1), _dot3(*P, e2)
        area = (zv[above] ** 2) * self._area_k
        if floor is not None:
            # bird's-eye grid on the floor plane
            a0, b0 = float(a.min()), float(b.min())
            na = min(int((a.max() - a0) / cfg.cell_m) + 1, 1024)
            nb = min(int((b.max() - b0) / cfg.cell_m) + 1, 1024)
            ia = np.minimum(((a - a0) / cfg.cell_m).astype(np.int32), na - 1)
            ib = np.minimum(((b - b0) / cfg.cell_m).astype(np.int32), nb - 1)
            cell = ib * na + ia
            occ_area = np.bincount(cell, weights=area, minlength=na * nb)
            occupied = (occ_area >= cfg.min_cell_area_m2).reshape(nb, na).astype(np.uint8)
            closed = cv2.morphologyEx(occupied, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
            n_lab, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
            point_occupied = occupied.reshape(-1)[cell].astype(bool)  # points in sparse cells are noise
            lab = np.where(point_occupied, labels.reshape(-1)[cell], 0).astype(np.intp)
            foot = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]) * cfg.cell_m
        else:
            # no floor: depth-continuous segments of the sample grid (a person is cut from the walls behind)
            n_lab, segments = self._segments(z, valid)
            lab = segments[rows, cols].astype(np.intp)
            lab_area = np.bincount(lab, weights=area, minlength=n_lab)
            lab = np.where(lab_area[lab] >= cfg.min_cell_area_m2, lab, 0)  # specks are noise
            foot = np.maximum(self._spread(a, lab, n_lab), self._spread(b, lab, n_lab))
        if n_lab <= 1:
            self._age_track()
            return None

        # per-blob statistics
        blob_area = np.bincount(lab, weights=area, minlength=n_lab)
        top = np.full(n_lab, -np.inf)
        bottom = np.full(n_lab, np.inf)
        hp = h[above]
        np.maximum.at(top, lab, hp)
        np.minimum.at(bottom, lab, hp)
        sums = np.stack([np.bincount(lab, weights=area * P[k], minlength=n_lab) for k in range(3)], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            centroid = sums / blob_area[:, None]
        extent_top = top if floor is not None else top - bottom
        blocked = self._fills_the_view(rows[above], cols[above], lab, n_lab, self._view)
        min_top = cfg.min_top_m if floor is not None else max(cfg.min_top_m, cfg.no_floor_min_top_m)
        ok = ((extent_top >= min_top) & (extent_top <= cfg.max_top_m) & (foot <= cfg.max_footprint_m)
              & (extent_top >= cfg.min_top_to_footprint * foot) & (blob_area >= cfg.min_area_m2) & ~blocked)
        flat_top = np.zeros(n_lab)
        if floor is not None:  # a flat top (a table, a box, a cabinet seen from above) is not a person
            flat = hp >= top[lab] - 0.6 * cfg.floor_inlier_m
            flat_top = np.bincount(lab[flat], weights=area[flat], minlength=n_lab)
            ok &= flat_top <= cfg.max_flat_top_m2
        ok[0] = False
        candidates = np.flatnonzero(ok)
        self.last_blobs = {"top_m": extent_top[1:], "footprint_m": foot[1:], "area_m2": blob_area[1:],
                           "flat_top_m2": flat_top[1:], "centroid": centroid[1:], "human_sized": ok[1:]}
        if candidates.size == 0:
            self._age_track()
            return None

        # choice: track / prior, else near and central
        target, tracked = None, False
        ref = np.asarray(prior_xyz, dtype=np.float64).reshape(3) if prior_xyz is not None else self._track
        if ref is not None and np.all(np.isfinite(ref)):
            dv = centroid[candidates] - ref
            dv -= np.outer(dv @ up, up)  # distance in the floor plane
            dist = np.linalg.norm(dv, axis=1)
            best = int(np.argmin(dist))
            if dist[best] <= cfg.track_gate_m:
                target, tracked = int(candidates[best]), True
        if target is None:
            c = centroid[candidates]
            rng_m = np.linalg.norm(c, axis=1)
            azimuth = np.abs(np.arctan2(c @ e1, c @ e2))
            target = int(candidates[np.argmin(rng_m + cfg.centre_weight_m * azimuth)])

        sel = lab == target
        if floor is not None:
            mask = self._full_mask(depth_mm, rows[above][sel], cols[above][sel], float(zv[above][sel].min()),
                                   labels, occupied, target, floor, e1, e2, a0, b0, na, nb)
        else:
            mask = self._segment_mask(depth_mm, z, segments, target, rows[sel], cols[sel])
        if not mask.any():
            self._age_track()
            return None
        rr = np.flatnonzero(mask.any(axis=1))
        cc = np.flatnonzero(mask.any(axis=0))
        bbox = np.array([cc[0] - 0.5, rr[0] - 0.5, cc[-1] + 0.5, rr[-1] + 0.5], dtype=np.float64)
        self._track = centroid[target].copy()
        self._track_age = 0
        return Detection(bbox=bbox, mask=mask, centroid=centroid[target].copy(), top_m=float(extent_top[target]),
                         area_m2=float(blob_area[target]), n_candidates=int(candidates.size), tracked=tracked,
                         floor=floor)

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _fills_the_view(rows: np.ndarray, cols: np.ndarray, lab: np.ndarray, n_lab: int,
                        view: tuple[int, int, int, int]) -> np.ndarray:
        """(n_lab,) bool: blobs whose samples reach the left *and* right borders of the view (the sampled
        grid's valid rays: view = first/last row, first/last column) and its top or bottom one. That is a
        surface blocking the view (a wall or a board close to the sensor), not a person: someone that close
        fills the crop with a fragment the model cannot use either."""
        r0, r1, c0, c1 = view
        lo_c = np.full(n_lab, c1 + 10, np.int64)
        hi_c = np.full(n_lab, c0 - 10, np.int64)
        lo_r = np.full(n_lab, r1 + 10, np.int64)
        hi_r = np.full(n_lab, r0 - 10, np.int64)
        np.minimum.at(lo_c, lab, cols)
        np.maximum.at(hi_c, lab, cols)
        np.minimum.at(lo_r, lab, rows)
        np.maximum.at(hi_r, lab, rows)
        return (lo_c <= c0 + 1) & (hi_c >= c1 - 1) & ((lo_r <= r0 + 1) | (hi_r >= r1 - 1))

    @staticmethod
    def _spread(values: np.ndarray, lab: np.ndarray, n_lab: int) -> np.ndarray:
        """(n_lab,) max - min of `values` per label (0 for empty labels)."""
        hi = np.full(n_lab, -np.inf)
        lo = np.full(n_lab, np.inf)
        np.maximum.at(hi, lab, values)
        np.minimum.at(lo, lab, values)
        return np.where(hi >= lo, hi - lo, 0.0)

    def _jump_tolerance(self, z: np.ndarray) -> np.ndarray:
        """Largest depth step (m) between neighbouring samples at depth z (m) of one surface: a surface
        seen at segment_max_grazing_deg or steeper, at least segment_min_jump_m (sensor noise)."""
        cfg = self.config
        k = self.stride / min(self.camera.fx, self.camera.fy) / math.tan(math.radians(cfg.segment_max_grazing_deg))
        return np.maximum(np.float32(cfg.segment_min_jump_m), np.float32(k) * z)

    def _segments(self, z: np.ndarray, valid: np.ndarray) -> tuple[int, np.ndarray]:
        """Depth-continuous segments of the sample grid: z (gh, gw) metres, valid (gh, gw) bool ->
        (number of labels, (gh, gw) int32 labels, 0 = invalid). Neighbours (4-connected) are joined when
        their depths differ by at most `_jump_tolerance`; the graph is labelled by OpenCV on a grid of
        twice the size whose odd pixels are the edges."""
        gh, gw = z.shape
        zz = np.where(valid, z, np.float32(0))
        eh = valid[:, 1:] & valid[:, :-1] & (np.abs(zz[:, 1:] - zz[:, :-1])
                                             <= self._jump_tolerance(np.minimum(zz[:, 1:], zz[:, :-1])))
        ev = valid[1:, :] & valid[:-1, :] & (np.abs(zz[1:, :] - zz[:-1, :])
                                             <= self._jump_tolerance(np.minimum(zz[1:, :], zz[:-1, :])))
        graph = np.zeros((2 * gh - 1, 2 * gw - 1), np.uint8)
        graph[::2, ::2] = valid
        graph[::2, 1::2] = eh
        graph[1::2, ::2] = ev
        n, labels = cv2.connectedComponents(graph, connectivity=4)
        return int(n), labels[::2, ::2]

    def _segment_mask(self, depth_mm: np.ndarray, z: np.ndarray, segments: np.ndarray, target: int,
                      rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Full-resolution mask of segment `target` (no floor): pixels whose sample (the top-left one of
        their stride x stride block) is in the segment and whose depth is within the jump tolerance of it."""
        cfg, s = self.config, self.stride
        H, W = depth_mm.shape
        mask = np.zeros((H, W), dtype=bool)
        if rows.size == 0:
            return mask
        y0, y1 = int(rows.min()) * s, min(H, (int(rows.max()) + 1) * s)
        x0, x1 = int(cols.min()) * s, min(W, (int(cols.max()) + 1) * s)
        zf = depth_mm[y0:y1, x0:x1].astype(np.float32) * np.float32(0.001)
        gy = np.arange(y0, y1) // s
        gx = np.arange(x0, x1) // s
        zs = z[np.ix_(gy, gx)]
        keep = (segments[np.ix_(gy, gx)] == target) & self._ray_ok_full[y0:y1, x0:x1]
        keep &= (zf > cfg.min_range_m) & (zf < cfg.max_range_m) & (np.abs(zf - zs) <= self._jump_tolerance(zs))
        mask[y0:y1, x0:x1] = keep
        return mask

    def _age_track(self) -> None:
        self._track_age += 1
        if self._track_age > self.config.track_frames:
            self._track = None

    def _ceiling(self, h: np.ndarray, z: np.ndarray) -> float:
        """Height (m) above which points are ignored: a visible ceiling (the height band >= 2 m holding at
        least ceiling_min_area_m2 of surface within 4 cm) minus 5 cm, else max_top_m + 0.6 m."""
        cfg = self.config
        limit = cfg.max_top_m + 0.6
        high = h > 2.0
        if not np.any(high):
            return limit
        bins = np.arange(2.0, limit + 0.04, 0.04)
        area, _ = np.histogram(h[high], bins=bins, weights=z[high] ** 2 * self._area_k)
        if area.size and area.max() >= cfg.ceiling_min_area_m2:
            return float(bins[int(np.argmax(area >= cfg.ceiling_min_area_m2))]) - 0.05
        # a ceiling with many dropouts: the highest band holding half that surface is the top of the scene
        # (the walls end there: less than 0.02 m^2 of surface above it)
        strong = np.flatnonzero(area >= 0.5 * cfg.ceiling_min_area_m2)
        if strong.size:
            band_top = float(bins[strong[-1] + 1])
            w = z[high] ** 2 * self._area_k
            if float(w[h[high] >= band_top].sum()) < 0.02:
                return float(bins[strong[-1]]) - 0.05
        return limit

    def _update_floor(self, pts: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> Optional[FloorPlane]:
        """Reuse the tracked floor while it is still a plausible floor, else RANSAC; None if none is found.

        pts: (3, N) metres, the valid samples; rows, cols: (N,) their positions in the sample grid."""
        cfg = self.config
        n = pts.shape[1]
        sub = pts if n <= cfg.floor_ransac_samples else pts[:, self._rng.choice(n, cfg.floor_ransac_samples,
                                                                                replace=False)]
        sub = np.ascontiguousarray(sub.T)  # (M, 3)
        if self.floor is not None:
            h = _dot3(sub[:, 0], sub[:, 1], sub[:, 2], self.floor.normal) + self.floor.d
            frac = float(np.mean(np.abs(h) < cfg.floor_inlier_m))
            below = float(np.mean(h < -cfg.floor_below_m))
            if (frac >= max(cfg.floor_min_fraction, 0.7 * self.floor.inlier_fraction)
                    and below <= cfg.floor_max_below_fraction and self.floor.d >= cfg.floor_min_height_m):
                refit = self._refine(sub, self.floor.normal, self.floor.d)
                if refit is not None:
                    self.floor = FloorPlane(refit[0], refit[1], self.floor.inlier_fraction)
                return self.floor
        self.floor = self._ransac(sub, pts, rows, cols)
        self.floor_refits += 1
        return self.floor

    def _hypotheses(self, sub: np.ndarray, pts: np.ndarray, rows: np.ndarray, cols: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RANSAC triplets (3 x (K, 3) points): half drawn anywhere in `sub`, half local (the 2nd and 3rd
        points within 3-24 samples of the 1st in the sample grid, taken from all valid samples `pts` at
        rows, cols), so a floor that covers only a few per cent of the view is still hit: three points
        drawn anywhere lie on a 5 % floor once in 8000 tries, three neighbours about as often as the
        first one does."""
        cfg = self.config
        m, k = sub.shape[0], cfg.floor_ransac_iters
        k_local = k // 2
        idx = self._rng.integers(0, m, size=(k - k_local, 3))
        p0, p1, p2 = sub[idx[:, 0]], sub[idx[:, 1]], sub[idx[:, 2]]
        if k_local == 0 or rows.size < 3:
            return p0, p1, p2
        gh, gw = self._xs.shape
        index = np.full((gh, gw), -1, np.int64)
        index[rows, cols] = np.arange(rows.size)
        tries = 4 * k_local
        first = self._rng.integers(0, rows.size, size=tries)
        radius = self._rng.integers(3, 25, size=(tries, 1))
        off = self._rng.uniform(-1.0, 1.0, size=(tries, 4)) * radius
        r1 = np.clip(rows[first] + np.rint(off[:, 0]).astype(np.int64), 0, gh - 1)
        c1 = np.clip(cols[first] + np.rint(off[:, 1]).astype(np.int64), 0, gw - 1)
        r2 = np.clip(rows[first] + np.rint(off[:, 2]).astype(np.int64), 0, gh - 1)
        c2 = np.clip(cols[first] + np.rint(off[:, 3]).astype(np.int64), 0, gw - 1)
        i1, i2 = index[r1, c1], index[r2, c2]
        ok = np.flatnonzero((i1 >= 0) & (i2 >= 0) & (i1 != first) & (i2 != first) & (i1 != i2))[:k_local]
        q = pts.T
        return (np.concatenate([p0, q[first[ok]]]), np.concatenate([p1, q[i1[ok]]]),
                np.concatenate([p2, q[i2[ok]]]))

    def _ransac(self, sub: np.ndarray, pts: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> Optional[FloorPlane]:
        """The lowest strong plausible floor among RANSAC hypotheses, refined; None if there is none.

        Plausible: normal within floor_max_tilt_deg of the camera's up, below the camera, explaining at
        least floor_min_fraction of the samples and with at most floor_max_below_fraction of them more
        than floor_below_m below it (a floor has the scene on top of it; a box top, a ramp through the
        walls or a tilted wall has a large part of it underneath)."""
        cfg = self.config
        m = sub.shape[0]
        if m < 3:
            return None
        p0, p1, p2 = self._hypotheses(sub, pts, rows, cols)
        nrm = np.cross(p1 - p0, p2 - p0)
        length = np.linalg.norm(nrm, axis=1)
        good = length > 1e-9
        nrm = nrm[good] / length[good, None]
        p0 = p0[good]
        nrm *= np.where(nrm @ _UP < 0, -1.0, 1.0)[:, None]  # point up
        cos_tilt = math.cos(math.radians(cfg.floor_max_tilt_deg))
        d = -np.einsum("ij,ij->i", nrm, p0)
        keep = (nrm @ _UP >= cos_tilt) & (d >= cfg.floor_min_height_m)  # near-horizontal, below the camera
        nrm, d = nrm[keep], d[keep]
        if nrm.shape[0] == 0:
            return None
        res = sub[:, 0:1] * nrm[:, 0] + sub[:, 1:2] * nrm[:, 1] + sub[:, 2:3] * nrm[:, 2] + d  # (M, K) heights
        counts = (np.abs(res) < cfg.floor_inlier_m).sum(axis=0)
        below = (res < -cfg.floor_below_m).sum(axis=0)
        counts = np.where(below <= cfg.floor_max_below_fraction * m, counts, 0)
        best = counts.max()
        if best < cfg.floor_min_fraction * m:
            return None
        strong = np.flatnonzero(counts >= 0.6 * best)
        pick = int(strong[np.argmax(d[strong])])  # the lowest strong plane
        normal, dist = nrm[pick], float(d[pick])
        for _ in range(2):  # local hypotheses have short baselines: refine twice
            refit = self._refine(sub, normal, dist)
            if refit is None:
                return None
            normal, dist = refit
        h = _dot3(sub[:, 0], sub[:, 1], sub[:, 2], normal) + dist
        frac = float(np.mean(np.abs(h) < cfg.floor_inlier_m))
        if (frac < cfg.floor_min_fraction or float(np.mean(h < -cfg.floor_below_m)) > cfg.floor_max_below_fraction
                or dist < cfg.floor_min_height_m):
            return None
        return FloorPlane(normal, dist, frac)

    def _refine(self, pts: np.ndarray, normal: np.ndarray, d: float) -> Optional[tuple[np.ndarray, float]]:
        """Least-squares plane through the inliers (of points (M, 3)) of (normal, d); None if it tilts past
        the limit."""
        cfg = self.config
        inl = pts[np.abs(_dot3(pts[:, 0], pts[:, 1], pts[:, 2], normal) + d) < cfg.floor_inlier_m]
        if inl.shape[0] < 3:
            return None
        c = inl.mean(axis=0)
        q = inl - c
        _, _, vt = np.linalg.svd(q.T @ q)
        n = vt[-1]
        if n @ _UP < 0:
            n = -n
        if n @ _UP < math.cos(math.radians(cfg.floor_max_tilt_deg)):
            return None
        return n, float(-n @ c)

    def _full_mask(self, depth_mm: np.ndarray, rows: np.ndarray, cols: np.ndarray, z_near: float, labels: np.ndarray,
                   occupied: np.ndarray, target: int, floor: Optional[FloorPlane], e1: np.ndarray, e2: np.ndarray,
                   a0: float, b0: float, na: int, nb: int) -> np.ndarray:
        """Full-resolution mask inside the target's sample box (+ the feet below it): pixels in the target's
        cells above the floor clearance, or in its occupied cells and above the floor's noise band (half
        floor_inlier_m), so feet are kept and the floor around them is not."""
        cfg, s = self.config, self.stride
        H, W = depth_mm.shape
        mask = np.zeros((H, W), dtype=bool)
        if rows.size == 0:
            return mask
        feet = 0  # rows below the lowest sample that the floor-clearance band can add (the feet)
        if floor is not None:
            feet = int(math.ceil(cfg.floor_clearance_m * self.camera.fy / max(z_near, cfg.min_range_m, 0.1)))
        y0, y1 = max(0, int(rows.min()) * s - s), min(H, int(rows.max()) * s + 2 * s + feet)
        x0, x1 = max(0, int(cols.min()) * s - s), min(W, int(cols.max()) * s + 2 * s)
        z = depth_mm[y0:y1, x0:x1].astype(np.float32) * np.float32(0.001)
        xy = self._xy_full[y0:y1, x0:x1]
        valid = self._ray_ok_full[y0:y1, x0:x1] & (z > cfg.min_range_m) & (z < cfg.max_range_m)
        X, Y = xy[..., 0] * z, xy[..., 1] * z
        low = None
        if floor is not None:
            h = X * floor.normal[0] + Y * floor.normal[1] + z * floor.normal[2] + floor.d
            valid &= h > 0.5 * cfg.floor_inlier_m
            low = h <= cfg.floor_clearance_m
        a = X * e1[0] + Y * e1[1] + z * e1[2]
        b = X * e2[0] + Y * e2[1] + z * e2[2]
        ia = np.floor((a - a0) / cfg.cell_m)
        ib = np.floor((b - b0) / cfg.cell_m)
        inside = valid & (ia >= 0) & (ia < na) & (ib >= 0) & (ib < nb)
        flat = np.where(inside, ib * na + ia, 0).astype(np.int64)
        keep = inside & (labels.reshape(-1)[flat] == target)
        if low is not None:
            keep &= ~low | occupied.reshape(-1)[flat].astype(bool)
        mask[y0:y1, x0:x1] = keep
        return mask


def _bench() -> None:  # pragma: no cover - a benchmark script, prints numbers
    """`python -m app.localize`: time the localiser on a synthetic NFOV frame (box person, floor, wall)."""
    import time

    from calibration import default_rig

    for mode in ("NFOV_UNBINNED", "NFOV_2X2BINNED", "WFOV_2X2BINNED"):
        cam = default_rig(mode, "720P").depth
        xy, ok = cam.xy_table()
        x, y = xy[..., 0], xy[..., 1]
        # floor 1.0 m below the camera, wall at 5 m, a 0.5 x 1.7 x 0.3 m "person" at 2.5 m
        with np.errstate(divide="ignore", invalid="ignore"):
            z_floor = np.where(y > 0, 1.0 / y, np.inf)
        z = np.minimum(z_floor, 5.0)
        body = (np.abs(x * 2.5 - 0.1) < 0.25) & (y * 2.5 > 1.0 - 1.7) & (y * 2.5 < 1.0)
        z = np.where(body, 2.5, z)
        depth = np.where(ok & np.isfinite(z), np.rint(z * 1000), 0).astype(np.uint16)
        loc = PersonLocalizer(cam)
        loc(depth)
        wall, cpu = [], []
        for _ in range(50):
            t, c = time.perf_counter(), time.process_time()
            det = loc(depth)
            wall.append((time.perf_counter() - t) * 1e3)
            cpu.append((time.process_time() - c) * 1e3)
        refit = []
        for _ in range(10):
            loc.floor = None
            t = time.perf_counter()
            loc(depth)
            refit.append((time.perf_counter() - t) * 1e3)
        print(f"{mode:15s} {cam.width}x{cam.height} (stride {loc.stride}): median {np.median(wall):.2f} ms wall "
              f"(p90 {np.percentile(wall, 90):.2f}), {np.median(cpu):.2f} ms CPU, floor tracked; "
              f"{np.median(refit):.2f} ms wall with a floor RANSAC; "
              f"bbox {None if det is None else np.round(det.bbox, 1).tolist()}")


if __name__ == "__main__":  # pragma: no cover
    _bench()
