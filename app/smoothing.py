"""Temporal smoothing of body estimates: the One Euro filter (Casiez, Roussel & Vogel, CHI 2012), vectorised.

Runs on the inference worker's thread (one `BodySmoother` per tracked person; not thread-safe). numpy only.

One Euro: an exponential low-pass whose cutoff rises with speed, so still poses lose their jitter and
fast motion keeps little lag. Per step with interval dt (seconds):

    dx  = (x - x_prev_filtered) / dt,   dx_hat = lowpass(dx, alpha(d_cutoff))
    fc  = min_cutoff + beta * |dx_hat|,  x_hat = lowpass(x, alpha(fc)),   alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))

min_cutoff in Hz, beta in 1 / (unit of x), d_cutoff in Hz. `OneEuroFilter` filters arrays of any fixed
shape element-wise; with `shared=True` one speed (the largest |dx_hat| of the array) sets one cutoff for
all elements, so the parts of one body move together.

`BodySmoother` applies three filters to a body estimate:
- pose: theta (72,) axis-angle -> 24 unit quaternions kept in one hemisphere frame to frame (axis-angle
  itself jumps at pi), filtered (shared speed in rad/s-ish quaternion units), renormalised, back to
  axis-angle. The same per-frame alpha low-passes the body-frame vertices and joints, so the mesh
  follows the smoothed pose (the app has no body model to re-pose it: an approximation that is exact
  while the filter passes the motion and a blend of nearby meshes otherwise);
- shape: beta (10,) (a person's shape does not change: low cutoff);
- translation: transl (3,) metres, shared speed in m/s.
A time step <= 0 (repeated or backwards timestamps) or longer than `max_gap_s` restarts the filters
(after a gap, or when the person was lost, the first estimate is taken as is).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = ["OneEuroParams", "OneEuroFilter", "SmoothingConfig", "BodySmoother", "axis_angle_to_quaternion",
           "quaternion_to_axis_angle"]


@dataclass(frozen=True)
class OneEuroParams:
    """min_cutoff (Hz) > 0, beta >= 0 (1 / unit of the signal), d_cutoff (Hz) > 0."""

    min_cutoff: float = 1.0
    beta: float = 0.0
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.beta >= 0):
            raise ValueError(f"One Euro parameters need min_cutoff > 0, d_cutoff > 0, beta >= 0; got "
                             f"{self.min_cutoff}, {self.d_cutoff}, {self.beta}")


def _alpha(cutoff, dt: float):
    """Smoothing factor of an exponential low-pass with cutoff (Hz, scalar or array) at step dt (s)."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over an array of fixed shape. `__call__(x, t_s)` -> filtered copy (float64).

    shared: one speed (max |dx_hat|) for the whole array. `alpha` holds the last step's smoothing
    factor (scalar when shared, else per element; 1.0 after a restart).
    """

    def __init__(self, params: OneEuroParams = OneEuroParams(), shared: bool = False, max_gap_s: float = 0.5):
        if not max_gap_s > 0:
            raise ValueError(f"max_gap_s must be > 0, got {max_gap_s}")
        self.params = params
        self.shared = bool(shared)
        self.max_gap_s = float(max_gap_s)
        self.reset()

    def reset(self) -> None:
        self._x: Optional[np.ndarray] = None
        self._dx: Optional[np.ndarray] = None
        self._t: Optional[float] = None
        self.alpha = 1.0

    @property
    def value(self) -> Optional[np.ndarray]:
        """The last filtered value (None before the first call)."""
        return self._x

    def set_value(self, x: np.ndarray) -> None:
        """Replace the filtered state after a step (e.g. renormalised quaternions); same shape as before."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or x.shape != self._x.shape:
            raise ValueError("set_value needs a previous step of the same shape")
        self._x = x.copy()

    def step_alpha(self, x: np.ndarray, t_s: float) -> tuple[np.ndarray, object]:
        """Filter x at time t_s; returns (filtered, alpha used)."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("OneEuroFilter input contains NaN or inf")
        t_s = float(t_s)
        if self._x is None or self._x.shape != x.shape or self._t is None:
            return self._restart(x, t_s)
        dt = t_s - self._t
        if not 0 < dt <= self.max_gap_s:
            return self._restart(x, t_s)
        p = self.params
        dx = (x - self._x) / dt
        a_d = _alpha(p.d_cutoff, dt)
        dx_hat = self._dx + a_d * (dx - self._dx)
        speed = float(np.max(np.abs(dx_hat))) if self.shared else np.abs(dx_hat)
        a = _alpha(p.min_cutoff + p.beta * speed, dt)
        x_hat = self._x + a * (x - self._x)
        self._x, self._dx, self._t = x_hat, dx_hat, t_s
        self.alpha = float(a) if self.shared else a
        return x_hat.copy(), self.alpha

    def __call__(self, x: np.ndarray, t_s: float) -> np.ndarray:
        return self.step_alpha(x, t_s)[0]

    def _restart(self, x: np.ndarray, t_s: float) -> tuple[np.ndarray, float]:
        self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t_s
        self.alpha = 1.0
        return x.copy(), 1.0


# ---------------------------------------------------------------------------------------- rotations
def axis_angle_to_quaternion(aa: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle (radians) -> (..., 4) unit quaternions (w, x, y, z), w >= 0."""
    aa = np.asarray(aa, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(half) / angle, with its series near 0
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(angle > 1e-8, np.sin(half) / np.where(angle > 1e-8, angle, 1.0), 0.5 - angle ** 2 / 48.0)
    q = np.concatenate([np.cos(half), aa * k], axis=-1)
    return q * np.where(q[..., :1] < 0, -1.0, 1.0)


def quaternion_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z), any norm > 0 and sign -> (..., 3) axis-angle, angle in [0, pi]."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = q * np.where(q[..., :1] < 0, -1.0, 1.0)
    xyz = q[..., 1:]
    s = np.linalg.norm(xyz, axis=-1, keepdims=True)
    half = np.arctan2(s, q[..., :1])
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(s > 1e-8, 2.0 * half / np.where(s > 1e-8, s, 1.0), 2.0 + half ** 2 / 3.0)
    return xyz * k


# ---------------------------------------------------------------------------------------- body
@dataclass(frozen=True)
class SmoothingConfig:
    """enabled: False passes estimates through. pose / shape / transl: One Euro parameters (pose speed in
    quaternion units per second, ~ half the angular speed in rad/s; transl speed in m/s).
    max_gap_s: a longer gap between estimates restarts the filters."""

    enabled: bool = True
    pose: OneEuroParams = field(default_factory=lambda: OneEuroParams(min_cutoff=1.5, beta=0.8, d_cutoff=1.0))
    shape: OneEuroParams = field(default_factory=lambda: OneEuroParams(min_cutoff=0.3, beta=0.0, d_cutoff=1.0))
    transl: OneEuroParams = field(default_factory=lambda: OneEuroParams(min_cutoff=1.0, beta=2.0, d_cutoff=1.0))
    max_gap_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("pose", "shape", "transl"):
            value = getattr(self, name)
            if not isinstance(value, OneEuroParams):
                raise ValueError(f"SmoothingConfig.{name} must be OneEuroParams, got {type(value).__name__}")
        if not self.max_gap_s > 0:
            raise ValueError(f"SmoothingConfig.max_gap_s must be > 0, got {self.max_gap_s}")


@dataclass
class SmoothedBody:
    """Smoothed parameters: theta (72,), beta (10,), transl (3,); vertices (V, 3) and joints (24, 3) in the
    body frame (no translation), metres."""

    theta: np.ndarray
    beta: np.ndarray
    transl: np.ndarray
    vertices: np.ndarray
    joints: np.ndarray


class BodySmoother:
    """Smooths one person's estimates over time (see the module docstring). `reset()` when the track is lost."""

    def __init__(self, config: SmoothingConfig = SmoothingConfig()):
        self.config = config
        self._pose = OneEuroFilter(config.pose, shared=True, max_gap_s=config.max_gap_s)
        self._shape = OneEuroFilter(config.shape, shared=True, max_gap_s=config.max_gap_s)
        self._transl = OneEuroFilter(config.transl, shared=True, max_gap_s=config.max_gap_s)
        self._mesh: Optional[tuple[np.ndarray, np.ndarray]] = None
        self._q_prev: Optional[np.ndarray] = None

    def reset(self) -> None:
        for f in (self._pose, self._shape, self._transl):
            f.reset()
        self._mesh = None
        self._q_prev = None

    def __call__(self, t_s: float, theta: np.ndarray, beta: np.ndarray, transl: np.ndarray, vertices: np.ndarray,
                 joints: np.ndarray) -> SmoothedBody:
        """One estimate at time t_s (seconds) -> smoothed body. Arrays as in SmoothedBody (unsmoothed)."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        if theta.size % 3:
            raise ValueError(f"theta must be (J*3,) axis-angle, got {theta.shape}")
        if not self.config.enabled:
            return SmoothedBody(theta.copy(), np.array(beta, dtype=np.float64), np.array(transl, dtype=np.float64),
                                np.array(vertices, dtype=np.float64), np.array(joints, dtype=np.float64))
        q = axis_angle_to_quaternion(theta.reshape(-1, 3))
        if self._q_prev is not None and self._q_prev.shape == q.shape:
            q = q * np.where(np.sum(q * self._q_prev, axis=-1, keepdims=True) < 0, -1.0, 1.0)  # same hemisphere
        q_hat, alpha = self._pose.step_alpha(q, t_s)
        q_hat /= np.linalg.norm(q_hat, axis=-1, keepdims=True)
        self._q_prev = q_hat
        self._pose.set_value(q_hat)  # keep the state on the unit sphere
        beta_hat = self._shape(np.asarray(beta, dtype=np.float64), t_s)
        transl_hat = self._transl(np.asarray(transl, dtype=np.float64), t_s)
        v = np.asarray(vertices, dtype=np.float64)
        j = np.asarray(joints, dtype=np.float64)
        if self._mesh is None or alpha == 1.0 or self._mesh[0].shape != v.shape:
            self._mesh = (v.copy(), j.copy())
        else:
            pv, pj = self._mesh
            self._mesh = (pv + alpha * (v - pv), pj + alpha * (j - pj))
        return SmoothedBody(theta=quaternion_to_axis_angle(q_hat).reshape(-1), beta=beta_hat, transl=transl_hat,
                            vertices=self._mesh[0].copy(), joints=self._mesh[1].copy())
