"""Azure Kinect depth-sensor model: turns an ideal rendered z-depth into what the sensor would report.

Input is a rendered depth camera image: z-depth in metres along the depth camera's optical axis (camera
frame x right, y down, z forward), 0 or inf where no surface was hit, optionally with camera-frame
surface normals and 850 nm reflectance (diffuse albedo in [0, 1]). Output is the sensor's DEPTH16 image:
uint16 millimetres, 0 = invalid. Effects, in the order applied:

1. random error, Gaussian, i.i.d. per pixel, standard deviation (mm)
       sigma = mode_scale * (sigma_floor + sigma_gain * (z / 1 m)^sigma_exponent * sqrt(rho_ref / rho_eff))
   capped at sigma_max (the spec's 17 mm), rho_eff = max(reflectance * cos(incidence), 0.01): a time-of-flight
   camera's noise grows as its return signal (∝ reflectance * cos / z^2) falls. Binned modes average
   2x2 pixels (mode_scale 0.5). Defaults give 1.4 / 3.0 / 5.2 / 7.3 mm at 1 / 2 / 3 / 3.86 m head-on at
   reflectance 0.5, and 13 mm at 3.86 m for a 15 % reflector: inside the spec's "random error <= 17 mm"
   (for 15-95 % reflectivity). They are plausible, not fitted to a FuseMesh device.
2. systematic error (mm), deterministic in z: offset + per_m * z + wiggle_amplitude * sin(2 pi z / period)
   (the "wiggling" of continuous-wave ToF). Defaults stay well inside the spec's 11 mm + 0.1 % of distance.
3. flying pixels: at depth discontinuities (a neighbour within `edge_width_px` is farther or nearer by
   more than max(edge_threshold_m, edge_threshold_rel * z), or has no hit), a pixel is invalidated with
   `edge_invalid_prob`, else becomes a mixed return with `flying_pixel_prob`: depth z + a (z_other - z),
   a ~ U(0, 1), z_other the farthest (or nearest) neighbour on the other side of the jump (none when the
   other side is a no-hit pixel: silhouettes against nothing only lose pixels).
4. dropouts: grazing incidence (needs normals; probability ramps linearly from 0 at grazing_start_deg
   to 1 at grazing_full_deg), dark surfaces (reflectance < dark_reflectance read 0 with
   dark_dropout_prob), specular pixels (mask from the renderer) with specular_dropout_prob.
5. 1 mm quantisation (rounding; the DEPTH16 unit).
6. invalid (0) where nothing was hit or the measured depth is outside the mode's operating range
   (`DEPTH_MODE_RANGE_M`, e.g. NFOV unbinned 0.5-3.86 m).

Not modelled: multipath, spatially correlated noise, temporal noise correlation, IR saturation,
the radial (not z) direction of ToF noise. Normals must be unit vectors (sample-checked).

Gaussian draws are inverse-CDF lookups of uniform 16-bit numbers (65536 equal-probability quantiles of
N(0, 1); tails cut at 4.3 sigma, variance 0.9997), about twice as fast as Generator.standard_normal here.
z-only terms (sigma's distance term, the systematic error) come from per-millimetre tables.

Speed: vectorised numpy (OpenCV for the min/max filters) into scratch buffers that a `DepthNoiseModel`
allocates once (on the CI VMs, touching fresh pages cost more than the maths: ~2 us per 4 KiB page).
640x576 on the shared 2-core dev VM (load average 4-5 while measuring): depth only 5-6 ms at best,
~11 ms median; with normals and reflectance 9-13 ms (a bare Generator.standard_normal of the same size:
3.6 ms at best, 8-11 ms median, for scale).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

import cv2
import numpy as np

__all__ = [
    "DEPTH_MODE_RANGE_M", "DepthNoiseConfig", "DepthNoiseModel", "SPEC_RANDOM_SIGMA_MAX_MM", "apply_depth_noise",
    "default_intrinsics", "noise_sigma_mm", "spec_systematic_bound_mm", "systematic_error_mm",
]

# Azure Kinect hardware spec (Microsoft "Azure Kinect DK hardware specifications", depth camera).
SPEC_RANDOM_SIGMA_MAX_MM = 17.0        # random error: standard deviation <= 17 mm
SPEC_SYSTEMATIC_MM = 11.0              # systematic error < 11 mm + 0.1 % of distance
SPEC_SYSTEMATIC_FRACTION = 0.001


class _ModeSpec(NamedTuple):
    range_m: tuple[float, float]  # operating range (metres), spec at 850 nm, 15-95 % reflectivity
    width: int                    # native image width (px)
    focal_px: float               # typical focal length at the native width (px)
    sigma_scale: float            # noise relative to unbinned (2x2 binning averages 4 pixels)


_MODES: Mapping[str, _ModeSpec] = MappingProxyType({
    "NFOV_UNBINNED": _ModeSpec((0.5, 3.86), 640, 504.0, 1.0),
    "NFOV_2X2BINNED": _ModeSpec((0.5, 5.46), 320, 252.0, 0.5),
    "WFOV_UNBINNED": _ModeSpec((0.25, 2.21), 1024, 504.0, 1.0),
    "WFOV_2X2BINNED": _ModeSpec((0.25, 2.88), 512, 252.0, 0.5),
})
# Operating range per depth mode, (min, max) metres.
DEPTH_MODE_RANGE_M: Mapping[str, tuple[float, float]] = MappingProxyType(
    {mode: spec.range_m for mode, spec in _MODES.items()})

_RHO_EFF_MIN = 0.01


def _prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"DepthNoiseConfig.{name} must be a probability in [0, 1], got {value}")


@dataclass(frozen=True)
class DepthNoiseConfig:
    """Parameters of the Azure Kinect depth model (units in the names; see the module docstring).

    depth_mode: "NFOV_UNBINNED" | "NFOV_2X2BINNED" | "WFOV_UNBINNED" | "WFOV_2X2BINNED": picks the
        operating range (`DEPTH_MODE_RANGE_M`), the noise scale and the default intrinsics.
    range_m: (min, max) metres overriding the mode's operating range; None = the mode's.
    sigma_floor_mm, sigma_gain_mm, sigma_exponent: random error sigma = floor + gain * (z/1 m)^exponent
        at `reference_reflectance`, head-on (times the mode's scale, times sqrt(rho_ref / rho_eff)).
    sigma_max_mm: cap on sigma (mm); the spec's 17 mm.
    reference_reflectance: reflectance (0..1) at which sigma_gain_mm holds; also assumed when none given.
    systematic_offset_mm, systematic_per_m_mm, wiggle_amplitude_mm, wiggle_period_m: systematic error
        offset + per_m * z + amplitude * sin(2 pi z / period), mm (z in metres).
    edge_threshold_m, edge_threshold_rel: a neighbour differing by more than max(m, rel * z) is a
        discontinuity; edge_width_px: neighbourhood radius (px) that counts as "at the edge".
    edge_invalid_prob: probability an edge pixel reads 0; flying_pixel_prob: probability a remaining
        edge pixel reads a mixed depth between the two surfaces.
    grazing_start_deg, grazing_full_deg: incidence angles (deg, 0 = head-on) where the invalid
        probability starts to rise from 0 and reaches 1 (needs normals).
    dark_reflectance, dark_dropout_prob: pixels with reflectance below the threshold read 0 with this
        probability (needs reflectance). specular_dropout_prob: same for the renderer's specular mask.
    """

    depth_mode: str = "NFOV_UNBINNED"
    range_m: tuple[float, float] | None = None
    sigma_floor_mm: float = 0.5
    sigma_gain_mm: float = 0.9
    sigma_exponent: float = 1.5
    sigma_max_mm: float = SPEC_RANDOM_SIGMA_MAX_MM
    reference_reflectance: float = 0.5
    systematic_offset_mm: float = 1.0
    systematic_per_m_mm: float = 0.5
    wiggle_amplitude_mm: float = 1.5
    wiggle_period_m: float = 0.6
    edge_threshold_m: float = 0.04
    edge_threshold_rel: float = 0.02
    edge_width_px: int = 1
    edge_invalid_prob: float = 0.5
    flying_pixel_prob: float = 0.4
    grazing_start_deg: float = 65.0
    grazing_full_deg: float = 87.0
    dark_reflectance: float = 0.05
    dark_dropout_prob: float = 0.7
    specular_dropout_prob: float = 0.8

    def __post_init__(self) -> None:
        if self.depth_mode not in _MODES:
            raise ValueError(f"DepthNoiseConfig.depth_mode must be one of {list(_MODES)}, got {self.depth_mode!r}")
        if self.range_m is not None:
            if len(self.range_m) != 2 or not 0 < self.range_m[0] < self.range_m[1] <= 65.535:
                raise ValueError(f"DepthNoiseConfig.range_m must be (min, max) metres with 0 < min < max "
                                 f"<= 65.535, got {self.range_m}")
        for name in ("sigma_floor_mm", "sigma_gain_mm", "sigma_exponent", "wiggle_amplitude_mm",
                     "edge_threshold_m", "edge_threshold_rel", "dark_reflectance"):
            if getattr(self, name) < 0:
                raise ValueError(f"DepthNoiseConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("sigma_max_mm", "wiggle_period_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DepthNoiseConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.reference_reflectance <= 1:
            raise ValueError(f"DepthNoiseConfig.reference_reflectance must be in (0, 1], "
                             f"got {self.reference_reflectance}")
        if isinstance(self.edge_width_px, bool) or not isinstance(self.edge_width_px, int) \
                or not 1 <= self.edge_width_px <= 5:
            raise ValueError(f"DepthNoiseConfig.edge_width_px must be an int in 1..5, got {self.edge_width_px!r}")
        if not 0 <= self.grazing_start_deg < self.grazing_full_deg <= 90:
            raise ValueError(f"DepthNoiseConfig needs 0 <= grazing_start_deg < grazing_full_deg <= 90, "
                             f"got {self.grazing_start_deg}, {self.grazing_full_deg}")
        for name in ("edge_invalid_prob", "flying_pixel_prob", "dark_dropout_prob", "specular_dropout_prob"):
            _prob(name, getattr(self, name))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DepthNoiseConfig":
        """Build from a plain mapping (e.g. parsed YAML); an unknown key is an error naming the closest."""
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(allowed)}"
                raise ValueError(f"DepthNoiseConfig: unknown key {key!r}{hint}")
        values = dict(data)
        if values.get("range_m") is not None:
            values["range_m"] = tuple(values["range_m"])
        return cls(**values)

    @property
    def operating_range_m(self) -> tuple[float, float]:
        """(min, max) metres that the sensor reports; outside reads 0."""
        return self.range_m if self.range_m is not None else _MODES[self.depth_mode].range_m


# ---------------------------------------------------------------------------------------------------

def _distance_term_mm(z: np.ndarray, config: DepthNoiseConfig) -> np.ndarray:
    """mode_scale * sigma_gain * (z / 1 m)^exponent, float32 mm: the part of sigma that reflectance scales."""
    scale = _MODES[config.depth_mode].sigma_scale * config.sigma_gain_mm
    return (np.float32(scale) * np.power(np.maximum(z, 0), np.float32(config.sigma_exponent))).astype(np.float32)


def _combine_sigma(distance_term: np.ndarray, config: DepthNoiseConfig, rho: np.ndarray | None,
                   cos: np.ndarray | None) -> np.ndarray:
    """sigma (mm) = min(mode_scale * floor + distance_term * sqrt(rho_ref / rho_eff), sigma_max), computed
    in place in `distance_term` (a contiguous float32 array); rho_eff = max(rho * cos, 0.01) with rho =
    rho_ref and cos = 1 where not given (rho, cos broadcast to its shape). The formula is
    `_kernels.depth_sigma`, which the per-pixel model uses too."""
    from training.synth import _kernels   # (numba; loaded on first use)

    flat = distance_term.reshape(-1)
    dummy = np.zeros(1, np.float32)
    r = dummy if rho is None else np.ascontiguousarray(np.broadcast_to(rho, distance_term.shape)).reshape(-1)
    c = dummy if cos is None else np.ascontiguousarray(np.broadcast_to(cos, distance_term.shape)).reshape(-1)
    _kernels.sigma_kernel(flat, r, c, rho is not None, cos is not None, *_sigma_constants(config), flat)
    return distance_term


def _sigma_constants(config: DepthNoiseConfig) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    """(rho_ref, rho_eff floor, mode_scale * sigma_floor, sigma_max) as float32, for `_kernels.depth_sigma`."""
    return (np.float32(config.reference_reflectance), np.float32(_RHO_EFF_MIN),
            np.float32(_MODES[config.depth_mode].sigma_scale * config.sigma_floor_mm), np.float32(config.sigma_max_mm))


def noise_sigma_mm(depth_m: Any, config: DepthNoiseConfig, reflectance: Any = None,
                   cos_incidence: Any = None) -> np.ndarray:
    """Random-error standard deviation (mm, float32, shape of depth_m) at z-depth `depth_m` (metres).

    reflectance: 0..1 (None = config.reference_reflectance); cos_incidence: cosine between the viewing
    ray and the surface normal (None = head-on, 1).
    """
    z = np.asarray(depth_m, np.float32)
    rho = None if reflectance is None else np.asarray(reflectance, np.float32)
    cos = None if cos_incidence is None else np.asarray(cos_incidence, np.float32)
    shape = np.broadcast_shapes(z.shape, *(a.shape for a in (rho, cos) if a is not None))
    distance = np.array(np.broadcast_to(_distance_term_mm(z, config), shape), dtype=np.float32)
    return _combine_sigma(distance, config, rho, cos)


def systematic_error_mm(depth_m: Any, config: DepthNoiseConfig) -> np.ndarray:
    """Deterministic depth bias (mm, float32) at z-depth `depth_m` (metres): measured = true + bias."""
    z = np.asarray(depth_m, np.float32)
    bias = np.float32(config.systematic_offset_mm) + np.float32(config.systematic_per_m_mm) * z
    if config.wiggle_amplitude_mm:
        phase = np.float32(2 * math.pi / config.wiggle_period_m) * z
        bias = bias + np.float32(config.wiggle_amplitude_mm) * np.sin(phase)
    return bias.astype(np.float32, copy=False)


def spec_systematic_bound_mm(depth_m: Any) -> np.ndarray:
    """The spec's bound on systematic error (mm) at distance `depth_m` (metres): 11 mm + 0.1 %."""
    return SPEC_SYSTEMATIC_MM + SPEC_SYSTEMATIC_FRACTION * 1000.0 * np.asarray(depth_m, np.float64)


_LUT_SIZE = 65536  # one entry per millimetre of the DEPTH16 range


def _depth_luts(config: DepthNoiseConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-millimetre tables (float32, 65536) of the distance term of sigma and of the systematic error:
    z-only functions looked up instead of evaluated per pixel (power/sin dominate the cost otherwise).
    Cached on the fields they depend on (the edge and dropout probabilities vary per rendered grid)."""
    return _depth_luts_of(config.depth_mode, config.sigma_gain_mm, config.sigma_exponent, config.systematic_offset_mm,
                          config.systematic_per_m_mm, config.wiggle_amplitude_mm, config.wiggle_period_m)


@functools.lru_cache(maxsize=16)
def _depth_luts_of(depth_mode: str, sigma_gain_mm: float, sigma_exponent: float, systematic_offset_mm: float,
                   systematic_per_m_mm: float, wiggle_amplitude_mm: float, wiggle_period_m: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    config = DepthNoiseConfig(depth_mode=depth_mode, sigma_gain_mm=sigma_gain_mm, sigma_exponent=sigma_exponent,
                              systematic_offset_mm=systematic_offset_mm, systematic_per_m_mm=systematic_per_m_mm,
                              wiggle_amplitude_mm=wiggle_amplitude_mm, wiggle_period_m=wiggle_period_m)
    z = np.arange(_LUT_SIZE, dtype=np.float32) / np.float32(1000.0)
    return _distance_term_mm(z, config), systematic_error_mm(z, config)


@functools.lru_cache(maxsize=1)
def normal_quantiles() -> np.ndarray:
    """Phi^-1((i + 0.5) / 65536) for i < 65536, float32: an equal-probability table of N(0, 1)."""
    from scipy.special import ndtri  # local: only the table needs it

    return ndtri((np.arange(_LUT_SIZE, dtype=np.float64) + 0.5) / _LUT_SIZE).astype(np.float32)


def default_intrinsics(config: DepthNoiseConfig, height: int, width: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) px of a typical Azure Kinect depth camera in `config.depth_mode`, scaled to width,
    principal point at the image centre. Pass the real calibration's values when you have them."""
    spec = _MODES[config.depth_mode]
    f = spec.focal_px * width / spec.width
    return (f, f, (width - 1) / 2.0, (height - 1) / 2.0)


# ---------------------------------------------------------------------------------------------------

def _as_depth(depth_m: Any) -> np.ndarray:
    z = np.asarray(depth_m)
    if z.ndim != 2 or z.size == 0:
        raise ValueError(f"depth_m must be a non-empty (H, W) array, got shape {z.shape}")
    if not np.issubdtype(z.dtype, np.floating):
        raise ValueError(f"depth_m must be float metres (0 or inf = no hit), got dtype {z.dtype}")
    z = z.astype(np.float32, copy=False)
    lowest = z.min()  # NaN propagates
    if np.isnan(lowest):
        raise ValueError("depth_m contains NaN; use 0 or inf for pixels with no hit")
    if lowest < 0:
        raise ValueError("depth_m contains negative depths; z-depth is >= 0 metres")
    return z


def _check_normals(normals: Any, shape: tuple[int, int], hit: np.ndarray) -> np.ndarray:
    """Shape/dtype check, and unit length on a sparse sample of hit pixels (a full check would cost as
    much as the incidence computation; non-normalised normals are the usual mistake)."""
    n = np.asarray(normals)
    if n.shape != shape + (3,) or not np.issubdtype(n.dtype, np.floating):
        raise ValueError(f"normals_cam must be a float array of shape {shape + (3,)} (H, W, 3), "
                         f"got {n.dtype} {n.shape}")
    flat = n.reshape(-1, 3)
    sample = np.arange(0, flat.shape[0], 257)
    sample = sample[hit.ravel()[sample]]
    length2 = np.einsum("ij,ij->i", flat[sample], flat[sample], dtype=np.float64)
    if sample.size and not np.all(np.abs(length2 - 1.0) < 1e-3):  # also catches NaN
        raise ValueError("normals_cam must be unit vectors at pixels with a hit")
    return n


def _check_reflectance(reflectance: Any, shape: tuple[int, int]) -> np.ndarray:
    rho = np.asarray(reflectance)
    if rho.shape != shape:
        raise ValueError(f"reflectance must have shape {shape} (H, W), got {rho.shape}")
    if not np.issubdtype(rho.dtype, np.number):
        raise ValueError(f"reflectance must be numeric in [0, 1], got dtype {rho.dtype}")
    if not (rho.min() >= 0 and rho.max() <= 1):  # also catches NaN
        raise ValueError("reflectance must be in [0, 1] everywhere")
    return rho


def _check_intrinsics(intrinsics: Any) -> tuple[float, float, float, float]:
    try:
        fx, fy, cx, cy = (float(v) for v in intrinsics)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"intrinsics must be (fx, fy, cx, cy) in pixels, got {intrinsics!r}") from exc
    if not (fx > 0 and fy > 0):
        raise ValueError(f"intrinsics (fx, fy, cx, cy) need fx, fy > 0, got {intrinsics}")
    return fx, fy, cx, cy


def _other_side(z: np.ndarray, idx: np.ndarray, config: DepthNoiseConfig) -> np.ndarray:
    """For edge pixels `idx` (flat): depth (m) of the surface across the jump (the farthest neighbour if
    it is farther than the nearest hit neighbour is near, else that nearest one); NaN if the only
    discontinuity is a no-hit neighbour (nothing to mix with). z: (H, W) metres, 0 = no hit."""
    r = config.edge_width_px
    h, w = z.shape
    rows, cols = np.divmod(idx, w)
    offsets = np.arange(-r, r + 1)
    # Clipping repeats border pixels that are inside the window anyway: max/min are unchanged.
    rr = np.clip(rows[:, None, None] + offsets[None, :, None], 0, h - 1)
    cc = np.clip(cols[:, None, None] + offsets[None, None, :], 0, w - 1)
    win = z[rr, cc].reshape(idx.size, -1)
    zc = z.ravel()[idx]
    far = win.max(axis=1)
    near = np.where(win > 0, win, np.float32(np.inf)).min(axis=1)
    up, down = far - zc, zc - near
    thr = np.maximum(np.float32(config.edge_threshold_m), np.float32(config.edge_threshold_rel) * zc)
    other = np.where(up >= down, far, near)
    return np.where(np.maximum(up, down) > thr, other, np.float32(np.nan)).astype(np.float32)


class DepthNoiseModel:
    """The Azure Kinect depth model as a reusable sensor: `model(depth_m, normals, reflectance, rng)`.

    Identical results to `apply_depth_noise` (which uses one of these per thread). The per-frame scratch
    images (22 bytes per pixel, 8 MB at 640x576) are allocated once, for the largest frame seen, and
    reused by every later frame or crop: on the CI's VMs touching fresh pages costs more than the
    arithmetic. Not thread-safe: one instance per thread.
    """

    def __init__(self, config: DepthNoiseConfig):
        if not isinstance(config, DepthNoiseConfig):
            raise TypeError(f"config must be a DepthNoiseConfig, got {type(config).__name__}")
        self.config = config
        self._capacity = 0    # pixels the flat scratch buffers can hold
        self._ray_key: tuple | None = None

    def _workspace(self, shape: tuple[int, int]) -> None:
        """(H, W) views onto flat scratch buffers that only grow: crops of varying size reuse them."""
        n = shape[0] * shape[1]
        if n > self._capacity:
            self._flat_f32 = [np.empty(n, np.float32) for _ in range(5)]
            self._flat_bool = [np.empty(n, bool) for _ in range(2)]
            self._capacity = n
            self._ray_key = None
        view = lambda buf: buf[:n].reshape(shape)  # noqa: E731 - contiguous prefix, no copy
        self._z, self._meas, self._a, self._b, self._cos = (view(buf) for buf in self._flat_f32)
        self._valid, self._mask = (view(buf) for buf in self._flat_bool)
        self._shape = shape

    def __call__(self, depth_m: Any, normals_cam: Any, reflectance: Any, rng: np.random.Generator, *,
                 intrinsics: tuple[float, float, float, float] | None = None, specular: Any = None) -> np.ndarray:
        """See `apply_depth_noise`. Returns a new (H, W) uint16 image (mm, 0 = invalid)."""
        return self._run(self.config, depth_m, normals_cam, reflectance, rng, intrinsics, specular)

    def _run(self, cfg: DepthNoiseConfig, depth_m: Any, normals_cam: Any, reflectance: Any,
             rng: np.random.Generator, intrinsics: tuple[float, float, float, float] | None,
             specular: Any) -> np.ndarray:
        """The model with `cfg` (the scratch buffers do not depend on the config)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                            f"got {type(rng).__name__}")
        z = _as_depth(depth_m)
        shape = z.shape
        rho = None if reflectance is None else _check_reflectance(reflectance, shape)
        k = None if normals_cam is None else _check_intrinsics(intrinsics or default_intrinsics(cfg, *shape))
        if specular is not None:
            specular = np.asarray(specular)
            if specular.shape != shape or specular.dtype != bool:
                raise ValueError(f"specular must be a bool mask of shape {shape}, "
                                 f"got {specular.dtype} {specular.shape}")
        self._workspace(shape)
        meas, b, valid, mask = self._meas, self._b, self._valid, self._mask

        if z.max() == np.inf:  # no hit as inf -> 0, in our own buffer
            np.copyto(self._z, z)
            np.isinf(z, out=mask)
            np.copyto(self._z, 0, where=mask)
            z = self._z
        np.greater(z, 0, out=valid)
        normals = None if normals_cam is None else _check_normals(normals_cam, shape, valid)

        # 1-2. random error, N(0, 1) by inverse-CDF lookup of 16-bit uniforms (65536 equal-probability
        # quantiles, tails cut at +-4.3 sigma; ~2x faster than Generator.standard_normal here), with sigma
        # from the incidence angle, reflectance and per-millimetre tables of z; then the systematic error.
        # One compiled pass (training.synth._kernels.depth_error_kernel); cos kept for the dropouts below.
        from training.synth import _kernels
        rng.random(out=b, dtype=np.float32)
        distance_lut, bias_lut = _depth_luts(cfg)
        none = np.zeros((1, 1, 3), np.float32)     # (placeholders for inputs not given)
        dx, dy, inv_ray = self._rays(k) if normals is not None else (none[0, 0], none[0, 0], none[0])
        cos = self._cos if normals is not None else None
        _kernels.depth_error_kernel(z, b, normal_quantiles(), distance_lut, bias_lut,
                                    none[..., 0] if rho is None else rho, rho is not None,
                                    none if normals is None else normals, normals is not None,
                                    dx, dy, inv_ray, *_sigma_constants(cfg), meas, self._cos)

        # 3. depth discontinuities: invalid or flying (mixed) pixels.
        edges = self._edges(z, cfg)
        if edges.size:
            u = rng.random(edges.size, dtype=np.float32)
            alpha = rng.random(edges.size, dtype=np.float32)
            drop = u < np.float32(cfg.edge_invalid_prob)
            p_fly = cfg.edge_invalid_prob + (1.0 - cfg.edge_invalid_prob) * cfg.flying_pixel_prob
            fly = ~drop & (u < np.float32(p_fly))
            if fly.any():
                fly_idx = edges[fly]
                other = _other_side(z, fly_idx, cfg)
                mixable = np.isfinite(other)
                fly_idx, other, alpha = fly_idx[mixable], other[mixable], alpha[fly][mixable]
                zf = z.ravel()[fly_idx]
                meas.ravel()[fly_idx] += np.float32(1000.0) * alpha * (other - zf)  # keeps its own error
            valid.ravel()[edges[drop]] = False

        # 4. dropouts (grazing angle, dark, specular), drawn only where they can happen.
        if cos is not None:
            np.less(cos, np.float32(math.cos(math.radians(cfg.grazing_start_deg))), out=mask)
            mask &= valid
            cand = np.flatnonzero(mask)
            if cand.size:
                angle = np.degrees(np.arccos(cos.ravel()[cand]))
                span = cfg.grazing_full_deg - cfg.grazing_start_deg
                p = np.clip((angle - cfg.grazing_start_deg) / span, 0.0, 1.0)
                valid.ravel()[cand[rng.random(cand.size) < p]] = False
        if rho is not None and cfg.dark_dropout_prob > 0:
            np.less(rho, cfg.dark_reflectance, out=mask)
            mask &= valid
            cand = np.flatnonzero(mask)
            if cand.size:
                valid.ravel()[cand[rng.random(cand.size) < cfg.dark_dropout_prob]] = False
        if specular is not None and cfg.specular_dropout_prob > 0:
            np.logical_and(valid, specular, out=mask)
            cand = np.flatnonzero(mask)
            if cand.size:
                valid.ravel()[cand[rng.random(cand.size) < cfg.specular_dropout_prob]] = False

        # 5-6. 1 mm quantisation, then the operating range on the measured value.
        np.rint(meas, out=meas)
        lo, hi = cfg.operating_range_m
        np.greater_equal(meas, np.float32(lo * 1000.0), out=mask)
        valid &= mask
        np.less_equal(meas, np.float32(hi * 1000.0), out=mask)
        valid &= mask
        meas *= valid
        return meas.astype(np.uint16)

    def _rays(self, k: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Viewing rays (dx (W,), dy (H,), 1) of the pixels for intrinsics k and 1 / their length (H, W),
        float32 (cached for the last intrinsics and frame size)."""
        h, w = self._shape
        fx, fy, cx, cy = k
        dx = (np.arange(w, dtype=np.float32) - np.float32(cx)) / np.float32(fx)
        dy = (np.arange(h, dtype=np.float32) - np.float32(cy)) / np.float32(fy)
        if self._ray_key != (k, self._shape):
            rx, ry = dx[None, :], dy[:, None]
            self._inv_ray = (1.0 / np.sqrt(rx * rx + ry * ry + np.float32(1.0))).astype(np.float32)
            self._ray_key = (k, self._shape)
        return dx, dy, self._inv_ray

    def _edges(self, z: np.ndarray, cfg: DepthNoiseConfig) -> np.ndarray:
        """Flat indices of hit pixels at a discontinuity: within edge_width_px of a pixel that is farther
        or nearer by more than max(edge_threshold_m, edge_threshold_rel * z), or that has no hit."""
        kernel = np.ones((2 * cfg.edge_width_px + 1,) * 2, np.uint8)
        far = cv2.dilate(z, kernel, dst=self._a)   # farthest neighbour (no-hit = 0 never wins)
        near = cv2.erode(z, kernel, dst=self._b)   # nearest neighbour; 0 if a no-hit pixel is nearby
        far -= z
        np.subtract(z, near, out=near)
        np.maximum(far, near, out=far)             # the larger jump, either way
        thr = np.multiply(z, np.float32(cfg.edge_threshold_rel), out=near)
        np.maximum(thr, np.float32(cfg.edge_threshold_m), out=thr)
        np.greater(far, thr, out=self._mask)
        self._mask &= self._valid
        return np.flatnonzero(self._mask)


_PER_THREAD = threading.local()  # one DepthNoiseModel (its scratch buffers) per thread, any config


def apply_depth_noise(depth_m: Any, normals_cam: Any, reflectance: Any, config: DepthNoiseConfig,
                      rng: np.random.Generator, *, intrinsics: tuple[float, float, float, float] | None = None,
                      specular: Any = None) -> np.ndarray:
    """What an Azure Kinect would report for an ideal depth image: (H, W) uint16 mm, 0 = invalid.

    depth_m: (H, W) float ideal z-depth, metres, depth camera frame; 0 or inf = no hit.
    normals_cam: (H, W, 3) unit surface normals in the camera frame (either sign; pixels without a hit
        may hold anything) or None (no grazing-angle effects, noise as head-on).
    reflectance: (H, W) 850 nm reflectance in [0, 1] or None (config.reference_reflectance, no dark dropouts).
    rng: the only source of randomness; same seed and inputs -> identical output.
    intrinsics: (fx, fy, cx, cy) px of the depth image, used for viewing rays; None = `default_intrinsics`.
    specular: (H, W) bool mask of specular/mirror-like pixels or None.

    Reuses one `DepthNoiseModel`'s scratch buffers per thread (whatever the config), so calling this per
    frame is as fast as holding a model.
    """
    if not isinstance(config, DepthNoiseConfig):
        raise TypeError(f"config must be a DepthNoiseConfig, got {type(config).__name__}")
    model = getattr(_PER_THREAD, "model", None)
    if model is None:
        model = _PER_THREAD.model = DepthNoiseModel(config)
    return model._run(config, depth_m, normals_cam, reflectance, rng, intrinsics, specular)
