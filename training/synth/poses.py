"""Body poses for synthetic data: a joint-limit-aware random pose sampler and scripted motions.

Conventions (SMPL's): pose theta is (72,) axis-angle, joint-major (global orient first, then the 23
body joints in SMPL order), radians. Body frame: Y up, +Z forward (the way the person faces), +X the
subject's left. theta = 0 is the T-pose (arms horizontal, palms down). Signs that follow from this, and
that the limits below encode:

- hip flexion (thigh forward) is -x, knee flexion is +x, spine/neck forward bend is +x;
- left shoulder +z raises the left arm, right shoulder -z raises the right arm; arms down at the sides
  is about z = -1.3 (left) / +1.3 (right); left arm forward is -y, right arm forward is +y;
- left elbow flexion is -y, right elbow flexion +y (palms-down T-pose);
- left hip abduction is +z, right hip abduction is -z.

Per-joint limits are Euler XYZ (intrinsic) ranges in radians; each body joint's rotation is drawn inside
its box and converted to axis-angle. The breadth matters (training-probe lesson 1: overhead arms, deep
squats, one-leg stances, twists and bends must not be rare), so the sampler mixes independent draws with
whole-body templates (squat, lunge, one-leg stance, overhead reach, bend, twist, sit).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from training.datasets.joint_sets import flip_permutation

NUM_JOINTS = 24

# (joint index, name, (xmin, xmax), (ymin, ymax), (zmin, zmax)) — Euler XYZ radians, SMPL conventions.
JOINT_LIMITS: dict[int, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    1: ((-2.1, 0.5), (-0.6, 0.6), (-0.3, 1.0)),    # left_hip: flex -x, abduct +z
    2: ((-2.1, 0.5), (-0.6, 0.6), (-1.0, 0.3)),    # right_hip
    3: ((-0.3, 0.7), (-0.45, 0.45), (-0.3, 0.3)),  # spine1
    4: ((0.0, 2.4), (-0.1, 0.1), (-0.1, 0.1)),     # left_knee: flex +x
    5: ((0.0, 2.4), (-0.1, 0.1), (-0.1, 0.1)),     # right_knee
    6: ((-0.2, 0.5), (-0.4, 0.4), (-0.25, 0.25)),  # spine2
    7: ((-0.6, 0.7), (-0.3, 0.3), (-0.3, 0.3)),    # left_ankle
    8: ((-0.6, 0.7), (-0.3, 0.3), (-0.3, 0.3)),    # right_ankle
    9: ((-0.2, 0.4), (-0.3, 0.3), (-0.2, 0.2)),    # spine3
    10: ((-0.3, 0.3), (-0.1, 0.1), (-0.1, 0.1)),   # left_foot (toes)
    11: ((-0.3, 0.3), (-0.1, 0.1), (-0.1, 0.1)),   # right_foot
    12: ((-0.4, 0.6), (-0.6, 0.6), (-0.3, 0.3)),   # neck
    13: ((-0.2, 0.2), (-0.3, 0.3), (-0.3, 0.45)),  # left_collar
    14: ((-0.2, 0.2), (-0.3, 0.3), (-0.45, 0.3)),  # right_collar
    15: ((-0.4, 0.5), (-0.6, 0.6), (-0.3, 0.3)),   # head
    16: ((-1.2, 1.2), (-1.6, 0.8), (-1.45, 1.3)),  # left_shoulder: +z raises, -y forward
    17: ((-1.2, 1.2), (-0.8, 1.6), (-1.3, 1.45)),  # right_shoulder: -z raises, +y forward
    18: ((-0.6, 0.6), (-2.5, 0.0), (-0.2, 0.2)),   # left_elbow: flex -y
    19: ((-0.6, 0.6), (0.0, 2.5), (-0.2, 0.2)),    # right_elbow: flex +y
    20: ((-1.0, 1.0), (-0.4, 0.4), (-0.8, 0.8)),   # left_wrist
    21: ((-1.0, 1.0), (-0.4, 0.4), (-0.8, 0.8)),   # right_wrist
    22: ((-0.3, 0.3), (-0.2, 0.2), (-0.4, 0.4)),   # left_hand
    23: ((-0.3, 0.3), (-0.2, 0.2), (-0.4, 0.4)),   # right_hand
}

_LIMIT_LO = np.zeros((NUM_JOINTS, 3))
_LIMIT_HI = np.zeros((NUM_JOINTS, 3))
for _j, _box in JOINT_LIMITS.items():
    _LIMIT_LO[_j] = [b[0] for b in _box]
    _LIMIT_HI[_j] = [b[1] for b in _box]

# Left/right joint permutation of SMPL's 24 joints (for mirroring poses): the datasets' one.
SMPL_FLIP_PERM = flip_permutation("smpl")


def euler_to_theta(euler: np.ndarray) -> np.ndarray:
    """(..., 24, 3) intrinsic XYZ Euler angles (rad) -> (..., 72) axis-angle theta."""
    euler = np.asarray(euler, dtype=np.float64)
    flat = euler.reshape(-1, 3)
    rotvec = Rotation.from_euler("XYZ", flat).as_rotvec()
    return rotvec.reshape(euler.shape[:-2] + (NUM_JOINTS * 3,))


def theta_to_euler(theta: np.ndarray) -> np.ndarray:
    """(..., 72) axis-angle -> (..., 24, 3) intrinsic XYZ Euler angles (rad)."""
    theta = np.asarray(theta, dtype=np.float64)
    flat = theta.reshape(-1, 3)
    euler = Rotation.from_rotvec(flat).as_euler("XYZ")
    return euler.reshape(theta.shape[:-1] + (NUM_JOINTS, 3))


def clamp_to_limits(euler: np.ndarray) -> np.ndarray:
    """Clip body-joint Euler angles (..., 24, 3) to JOINT_LIMITS (the root is left untouched)."""
    out = np.array(euler, dtype=np.float64, copy=True)
    out[..., 1:, :] = np.clip(out[..., 1:, :], _LIMIT_LO[1:], _LIMIT_HI[1:])
    return out


# --------------------------------------------------------------------------------------------------
# Whole-body templates: Euler XYZ (24, 3) targets that random draws are blended towards.

def _template(**joints: tuple[float, float, float]) -> np.ndarray:
    names = {
        "l_hip": 1, "r_hip": 2, "spine1": 3, "l_knee": 4, "r_knee": 5, "spine2": 6, "l_ankle": 7,
        "r_ankle": 8, "spine3": 9, "neck": 12, "head": 15, "l_collar": 13, "r_collar": 14,
        "l_shoulder": 16, "r_shoulder": 17, "l_elbow": 18, "r_elbow": 19,
    }
    e = np.zeros((NUM_JOINTS, 3))
    for k, v in joints.items():
        e[names[k]] = v
    return e


ARMS_DOWN = dict(l_shoulder=(0.0, 0.0, -1.3), r_shoulder=(0.0, 0.0, 1.3))

POSE_TEMPLATES: dict[str, np.ndarray] = {
    "stand": _template(**ARMS_DOWN),
    "tpose": _template(),
    "squat": _template(l_hip=(-1.9, 0, 0.25), r_hip=(-1.9, 0, -0.25), l_knee=(2.2, 0, 0), r_knee=(2.2, 0, 0),
                       l_ankle=(0.5, 0, 0), r_ankle=(0.5, 0, 0), spine1=(0.35, 0, 0),
                       l_shoulder=(0, -1.2, -0.3), r_shoulder=(0, 1.2, 0.3)),
    "lunge": _template(l_hip=(-1.3, 0, 0.05), r_hip=(0.4, 0, -0.05), l_knee=(1.3, 0, 0), r_knee=(1.2, 0, 0),
                       **ARMS_DOWN),
    "one_leg": _template(l_hip=(-1.4, 0, 0.1), l_knee=(1.9, 0, 0), l_shoulder=(0, 0, 0.2), r_shoulder=(0, 0, -0.2)),
    "overhead": _template(l_shoulder=(0, 0, 1.25), r_shoulder=(0, 0, -1.25), l_collar=(0, 0, 0.3),
                          r_collar=(0, 0, -0.3)),
    "bend": _template(spine1=(0.6, 0, 0), spine2=(0.45, 0, 0), spine3=(0.35, 0, 0), l_hip=(-0.6, 0, 0),
                      r_hip=(-0.6, 0, 0), l_shoulder=(0, -0.6, -1.1), r_shoulder=(0, 0.6, 1.1)),
    "twist": _template(spine1=(0, 0.4, 0), spine2=(0, 0.35, 0), spine3=(0, 0.3, 0), neck=(0, 0.3, 0),
                       l_shoulder=(0, -0.8, -0.6), r_shoulder=(0, 0.3, 0.9), l_elbow=(0, -1.3, 0)),
    "sit": _template(l_hip=(-1.55, 0, 0.1), r_hip=(-1.55, 0, -0.1), l_knee=(1.55, 0, 0), r_knee=(1.55, 0, 0),
                     l_shoulder=(0, -0.5, -1.1), r_shoulder=(0, 0.5, 1.1), l_elbow=(0, -0.9, 0),
                     r_elbow=(0, 0.9, 0)),
    "side_lean": _template(spine1=(0, 0, 0.3), spine2=(0, 0, 0.25), l_shoulder=(0, 0, 1.2),
                           r_shoulder=(0, 0, 1.3), l_hip=(0, 0, 0.2)),
}


@dataclass(frozen=True)
class PoseSamplerConfig:
    """Mixture weights and spreads of the random pose sampler.

    template_prob: probability of drawing around a whole-body template (else independent joints).
    template_noise: std (rad) of Gaussian jitter around a template, per Euler angle.
    independent_spread: fraction of each joint's range used by independent draws (1.0 = full box,
        drawn from a Beta(2,2) so the middle of the range is favoured but the ends are reachable).
    flip_prob: probability of mirroring the pose left/right.
    """

    template_prob: float = 0.5
    template_noise: float = 0.18
    independent_spread: float = 1.0
    flip_prob: float = 0.5


def flip_euler(euler: np.ndarray) -> np.ndarray:
    """Mirror Euler XYZ poses (..., 24, 3) left<->right: swap sides and negate the y and z angles (exact)."""
    out = np.asarray(euler, dtype=np.float64)[..., SMPL_FLIP_PERM, :].copy()
    out[..., 1:] *= -1.0
    return out


def sample_body_euler(n: int, rng: np.random.Generator, config: PoseSamplerConfig = PoseSamplerConfig()) -> np.ndarray:
    """Draw n plausible body poses as intrinsic XYZ Euler angles (n, 24, 3), root zero, inside JOINT_LIMITS."""
    lo, hi = _LIMIT_LO, _LIMIT_HI
    mid = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo) * config.independent_spread
    u = rng.beta(2.0, 2.0, size=(n, NUM_JOINTS, 3)) * 2.0 - 1.0
    euler = mid + u * half
    names = list(POSE_TEMPLATES)
    use_template = rng.random(n) < config.template_prob
    picks = rng.integers(0, len(names), size=n)
    for i in np.nonzero(use_template)[0]:
        base = POSE_TEMPLATES[names[picks[i]]]
        euler[i] = base + rng.normal(0.0, config.template_noise, size=base.shape)
    euler[:, 0] = 0.0
    euler = clamp_to_limits(euler)
    flip = rng.random(n) < config.flip_prob
    euler[flip] = flip_euler(euler[flip])
    return euler


def sample_body_poses(n: int, rng: np.random.Generator, config: PoseSamplerConfig = PoseSamplerConfig()) -> np.ndarray:
    """Draw n plausible body poses. Returns theta (n, 72) axis-angle with a zero global orientation."""
    return euler_to_theta(sample_body_euler(n, rng, config))


# --------------------------------------------------------------------------------------------------
# Scripted motions: theta(t) and root translation(t) for sequences (recordings, demo clip).

@dataclass(frozen=True)
class MotionFrame:
    """One frame of a scripted motion: theta (72,) axis-angle (root = body yaw about +Y),
    transl (3,) metres in the body's floor frame (Y up, origin under the pelvis at t=0)."""

    theta: np.ndarray
    transl: np.ndarray


def _walk_euler(phase: float) -> np.ndarray:
    s, c = np.sin(phase), np.cos(phase)
    e = POSE_TEMPLATES["stand"].copy()
    e[1, 0] = -0.45 * s                      # left thigh swings forward when s > 0
    e[2, 0] = 0.45 * s
    e[4, 0] = 0.15 + 0.55 * max(0.0, -c)     # knees bend during swing
    e[5, 0] = 0.15 + 0.55 * max(0.0, c)
    e[16, 1] = -0.35 * (-s)                  # arms swing opposite to legs (left arm forward = -y)
    e[17, 1] = 0.35 * s
    e[18, 1] = -0.3
    e[19, 1] = 0.3
    e[3, 1] = 0.08 * s                       # torso counter-rotation
    return e


def _motion_euler(motion: str, t: float) -> tuple[np.ndarray, float, np.ndarray]:
    """Euler (24,3), yaw (rad) and translation (3,) of `motion` at time t seconds."""
    yaw, transl = 0.0, np.zeros(3)
    if motion == "walk":
        phase = 2 * np.pi * 0.9 * t
        e = _walk_euler(phase)
        transl = np.array([0.0, 0.02 * abs(np.sin(phase)), 0.0])
        # walk a 1.2 m loop left-right across the view
        yaw = np.pi / 2 if (t % 8.0) < 4.0 else -np.pi / 2
        x = 0.3 * (t % 8.0) if (t % 8.0) < 4.0 else 1.2 - 0.3 * ((t % 8.0) - 4.0)
        transl[0] = x - 0.6
    elif motion == "wave":
        e = POSE_TEMPLATES["stand"].copy()
        e[17] = (0.0, 0.1, -0.9)                 # right arm raised to the side
        e[19, 1] = 1.3 + 0.5 * np.sin(2 * np.pi * 1.5 * t)
    elif motion == "squat":
        k = 0.5 - 0.5 * np.cos(2 * np.pi * 0.4 * t)
        e = (1 - k) * POSE_TEMPLATES["stand"] + k * POSE_TEMPLATES["squat"]
        transl = np.array([0.0, -0.45 * k, 0.0])
    elif motion == "reach":
        k = 0.5 - 0.5 * np.cos(2 * np.pi * 0.35 * t)
        e = (1 - k) * POSE_TEMPLATES["stand"] + k * POSE_TEMPLATES["overhead"]
        e[3, 0] = -0.15 * k
    elif motion == "turn":
        e = _walk_euler(2 * np.pi * 0.6 * t) * 0.5 + POSE_TEMPLATES["stand"] * 0.5
        yaw = (2 * np.pi / 6.0) * t          # one full turn every 6 s
    elif motion == "sit":
        k = np.clip(1.5 * (0.5 - 0.5 * np.cos(2 * np.pi * 0.25 * t)), 0.0, 1.0)
        e = (1 - k) * POSE_TEMPLATES["stand"] + k * POSE_TEMPLATES["sit"]
        transl = np.array([0.0, -0.42 * k, -0.25 * k])
    else:
        raise ValueError(f"unknown motion {motion!r}; choose one of {sorted(MOTIONS)}")
    return e, yaw, transl


MOTIONS = ("walk", "wave", "squat", "reach", "turn", "sit")


def scripted_motion(motion: str, t: float) -> MotionFrame:
    """The pose of a scripted motion at time t (s). Motions: walk, wave, squat, reach, turn, sit."""
    euler, yaw, transl = _motion_euler(motion, float(t))
    euler = clamp_to_limits(euler)
    euler[0] = 0.0
    theta = euler_to_theta(euler)
    theta[:3] = Rotation.from_euler("Y", yaw).as_rotvec()
    return MotionFrame(theta=theta, transl=np.asarray(transl, dtype=np.float64))


def _blend_theta(theta_a: np.ndarray, theta_b: np.ndarray, k: float) -> np.ndarray:
    """Per-joint geodesic interpolation between two (72,) axis-angle poses, k in [0, 1]."""
    ra = Rotation.from_rotvec(theta_a.reshape(NUM_JOINTS, 3))
    rb = Rotation.from_rotvec(theta_b.reshape(NUM_JOINTS, 3))
    delta = (ra.inv() * rb).as_rotvec()
    return (ra * Rotation.from_rotvec(k * delta)).as_rotvec().reshape(-1)


def motion_program(steps: list[tuple[str, float]]) -> Callable[[float], MotionFrame]:
    """Chain motions: steps = [(motion, seconds), ...]; returns f(t) -> MotionFrame (clamped at the end).

    Consecutive motions are blended over 0.5 s (per-joint geodesic interpolation) so the sequence has
    no jumps.
    """
    if not steps:
        raise ValueError("motion_program needs at least one (motion, seconds) step")
    starts = np.cumsum([0.0] + [d for _, d in steps])

    def at(t: float) -> MotionFrame:
        t = float(np.clip(t, 0.0, starts[-1] - 1e-6))
        i = int(np.searchsorted(starts, t, side="right") - 1)
        motion, _ = steps[i]
        frame = scripted_motion(motion, t - starts[i])
        blend_t = t - starts[i]
        if i > 0 and blend_t < 0.5:
            prev = scripted_motion(steps[i - 1][0], starts[i] - starts[i - 1])
            k = blend_t / 0.5
            theta = _blend_theta(prev.theta, frame.theta, k)
            return MotionFrame(theta=theta, transl=(1 - k) * prev.transl + k * frame.transl)
        return frame

    return at
