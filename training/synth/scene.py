"""Scene sampling for synthetic RGB-D data: room, sensor pose, people, occluders, furniture, lights.

World frame (used only to build scenes): metres, right-handed, **Y up**, the floor is the plane y = 0.
The depth camera sits at (0, h, 0); with zero yaw it looks along world +Z. Camera frames are OpenCV's
(x right, y down, z forward); a level camera looking along +Z has camera x = -world X, camera y =
-world Y, camera z = world Z (`_LEVEL_CAMERA`). `SensorPose.R_cw`, `.t_cw` map world points into the
*depth* camera frame (the reference "camera frame" of every label): p_cam = R_cw @ p_world + t_cw.

People are described by SMPL parameters: `theta` (72,) axis-angle whose root entry is the body's yaw
about world +Y (body frame: Y up, +Z facing, +X the subject's left, so body axes = world axes rotated
by that yaw), and `floor_xz`, the world (x, z) under the pelvis. The body is placed on the floor by the
caller once it is posed (`ground_body`): its lowest vertex touches y = 0.

Everything random is drawn from the `numpy.random.Generator` passed in, so a scene is a pure function of
(seed, config). Geometry of the room and boxes is produced as a `TriangleSoup` (world frame) with
per-vertex texture coordinates and per-face materials and object labels; bodies are added by the
caller (training/synth/sample.py) after posing them with the body model.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from calibration.rig import rigid_transform
from training.synth.appearance import (BodyAppearance, BodyRegions, Material, sample_body_appearance,
                                       sample_surface_material)
from training.synth.depth_noise import DEPTH_MODE_RANGE_M
from training.synth.poses import MOTIONS, PoseSamplerConfig, sample_body_poses, scripted_motion
from training.synth.rand import Choices, uniform

__all__ = [
    "SceneConfig", "SensorPose", "Room", "Box", "PersonSpec", "Lighting", "Scene", "TriangleSoup",
    "OBJ_BACKGROUND", "OBJ_TARGET", "OBJ_PERSON", "OBJ_FURNITURE", "sample_scene", "sample_person",
    "sample_room", "static_triangles", "ground_body", "yaw_matrix", "sensor_pose", "concat_soups",
]

# object labels of triangles (TriangleSoup.face_object)
OBJ_BACKGROUND, OBJ_TARGET, OBJ_PERSON, OBJ_FURNITURE = 0, 1, 2, 3

_LEVEL_CAMERA = np.diag([-1.0, -1.0, 1.0])  # columns: camera x, y, z axes in world coordinates (yaw 0, level)


@dataclass(frozen=True)
class SceneConfig:
    """Ranges and probabilities of the scene sampler (angles in degrees, lengths in metres).

    depth_modes / color_resolutions: (name, weight) pairs; Azure Kinect mode names. Every pair costs a
        one-off alignment table per worker (WFOV_UNBINNED ~6 s, NFOV_UNBINNED ~2 s on a quiet core), so
        the defaults leave out WFOV_UNBINNED (15 fps, 2.2 m range) and the 4:3 / >1080p color modes;
        add them here when wanted (e.g. ("WFOV_UNBINNED", 0.1), ("1536P", 0.1)).
    distance_m: horizontal sensor -> person distance; clipped per depth mode to its operating range
        minus `range_margin_m`, so the person is (mostly) measurable.
    sensor_height_m: sensor height above the floor; aim_height_m: height of the point the sensor is
        aimed at, at the person; aim_noise_deg: extra random pitch; roll_std_deg: sensor roll.
    in_frame_fraction: the person's horizontal angle is uniform in +- this fraction of the half field of
        view; with out_of_frame_prob it is instead at 0.85-1.15 of the half field of view (partly outside).
    beta_std, beta_clip: betas ~ N(0, beta_std^2 I) clipped to +- beta_clip.
    motion_prob: probability of a scripted-motion frame instead of a sampled pose.
    occluder_prob: probability of an occluder (box, table or cabinet) between sensor and person.
    second_person_prob: probability of a second (unlabelled) person.
    clutter_boxes: (min, max) number of random boxes/tables in the room.
    room_margin_m: (min, max) free space added around sensor and person to place walls.
    room_height_m: ceiling height range.
    pattern_prob: probability a garment has a procedural pattern.
    """

    depth_modes: tuple[tuple[str, float], ...] = (
        ("NFOV_UNBINNED", 0.6), ("NFOV_2X2BINNED", 0.15), ("WFOV_2X2BINNED", 0.25))
    color_resolutions: tuple[tuple[str, float], ...] = (("720P", 0.85), ("1080P", 0.15))
    distance_m: tuple[float, float] = (1.0, 4.5)
    range_margin_m: float = 0.3
    sensor_height_m: tuple[float, float] = (0.5, 2.0)
    aim_height_m: tuple[float, float] = (0.5, 1.3)
    aim_noise_deg: float = 6.0
    roll_std_deg: float = 3.0
    in_frame_fraction: float = 0.75
    out_of_frame_prob: float = 0.12
    beta_std: float = 1.0
    beta_clip: float = 2.5
    motion_prob: float = 0.2
    occluder_prob: float = 0.3
    second_person_prob: float = 0.15
    clutter_boxes: tuple[int, int] = (0, 6)
    room_margin_m: tuple[float, float] = (0.4, 3.0)
    room_height_m: tuple[float, float] = (2.4, 3.2)
    pattern_prob: float = 0.45
    pose: PoseSamplerConfig = field(default_factory=PoseSamplerConfig)

    def __post_init__(self) -> None:
        from calibration.kinect import COLOR_RESOLUTIONS, DEPTH_MODES
        for name, table, pairs in (("depth_modes", DEPTH_MODES, self.depth_modes),
                                   ("color_resolutions", COLOR_RESOLUTIONS, self.color_resolutions)):
            if not pairs:
                raise ValueError(f"SceneConfig.{name} needs at least one (name, weight) pair")
            for mode, weight in pairs:
                if mode not in table or (name == "depth_modes" and mode not in DEPTH_MODE_RANGE_M):
                    valid = [m for m in table if name != "depth_modes" or m in DEPTH_MODE_RANGE_M]
                    raise ValueError(f"SceneConfig.{name}: unknown mode {mode!r} (valid: {', '.join(valid)})")
                if not weight >= 0:
                    raise ValueError(f"SceneConfig.{name}: weight of {mode!r} must be >= 0, got {weight}")
            if sum(w for _, w in pairs) <= 0:
                raise ValueError(f"SceneConfig.{name}: weights must not all be 0")
        for name in ("distance_m", "sensor_height_m", "aim_height_m", "room_margin_m", "room_height_m"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"SceneConfig.{name} must be (min, max) with 0 <= min <= max, got {(lo, hi)}")
        if self.distance_m[0] < 0.5:
            raise ValueError(f"SceneConfig.distance_m must start at >= 0.5 m, got {self.distance_m}")
        if self.room_height_m[0] <= self.sensor_height_m[1]:
            raise ValueError("SceneConfig.room_height_m must start above the highest sensor_height_m")
        for name in ("out_of_frame_prob", "motion_prob", "occluder_prob", "second_person_prob", "pattern_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SceneConfig.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0 < self.in_frame_fraction <= 1:
            raise ValueError(f"SceneConfig.in_frame_fraction must be in (0, 1], got {self.in_frame_fraction}")
        lo, hi = self.clutter_boxes
        if not 0 <= lo <= hi <= 50:
            raise ValueError(f"SceneConfig.clutter_boxes must be (min, max) with 0 <= min <= max <= 50, got {(lo, hi)}")
        if self.beta_clip <= 0 or self.beta_std < 0:
            raise ValueError("SceneConfig.beta_clip must be > 0 and beta_std >= 0")


# ------------------------------------------------------------------------------------------ data types
@dataclass(frozen=True)
class SensorPose:
    """World -> depth camera: p_cam = R_cw @ p_world + t_cw. Also the sampled height (m), pitch (deg,
    positive = tilted down), roll (deg) and yaw (deg) for reference."""

    R_cw: np.ndarray
    t_cw: np.ndarray
    height_m: float
    pitch_deg: float
    roll_deg: float
    yaw_deg: float = 0.0

    def to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """(..., 3) world metres -> (..., 3) depth-camera metres."""
        return rigid_transform(points_world, self.R_cw, self.t_cw)

    def direction_to_camera(self, dirs_world: np.ndarray) -> np.ndarray:
        """(..., 3) world directions -> depth-camera directions."""
        return np.asarray(dirs_world, dtype=np.float64) @ self.R_cw.T


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation about +Y by `yaw` radians (3x3)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def sensor_pose(height_m: float, pitch_deg: float, roll_deg: float = 0.0, yaw_deg: float = 0.0) -> SensorPose:
    """The depth camera at (0, height, 0), turned by yaw about world Y, tilted down by pitch, rolled."""
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    pitch = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(p), -math.sin(p)], [0.0, math.sin(p), math.cos(p)]])
    roll = np.array([[math.cos(r), -math.sin(r), 0.0], [math.sin(r), math.cos(r), 0.0], [0.0, 0.0, 1.0]])
    R_wc = yaw_matrix(math.radians(yaw_deg)) @ pitch @ roll @ _LEVEL_CAMERA   # (scipy's Rotation: ~0.1 ms a call)
    # R_wc's columns are the camera axes in world coordinates; pitch about the camera-aligned X tilts +Z
    # (forward) towards -Y (down) for positive angles.
    position = np.array([0.0, height_m, 0.0])
    R_cw = R_wc.T
    return SensorPose(R_cw=R_cw, t_cw=-R_cw @ position, height_m=float(height_m), pitch_deg=float(pitch_deg),
                      roll_deg=float(roll_deg), yaw_deg=float(yaw_deg))


@dataclass(frozen=True)
class Room:
    """A box-shaped room: rectangle [x0, x1] x [z0, z1] in the room frame (the world turned by `yaw` rad
    about Y), floor y = 0, ceiling at `height`. Materials: floor, ceiling, walls (x0, x1, z0, z1 sides)."""

    x0: float
    x1: float
    z0: float
    z1: float
    height: float
    yaw: float
    floor: Material
    ceiling: Material
    walls: tuple[Material, Material, Material, Material]

    def to_room(self, points_world: np.ndarray) -> np.ndarray:
        return np.asarray(points_world) @ yaw_matrix(self.yaw)   # inverse rotation (row vectors)

    def contains_xz(self, xz_world: np.ndarray, margin: float = 0.0) -> bool:
        p = self.to_room(np.array([xz_world[0], 0.0, xz_world[1]]))
        return bool(self.x0 + margin <= p[0] <= self.x1 - margin and self.z0 + margin <= p[2] <= self.z1 - margin)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in its own frame: centre (3,) world metres, size (3,) full extents (x, y, z),
    turned by `yaw` rad about world Y. role: 'clutter' | 'occluder' | 'table' | 'cabinet' | 'seat'."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    material: Material
    role: str = "clutter"


@dataclass(frozen=True)
class PersonSpec:
    """One person: betas (10,); theta (72,) axis-angle, root = yaw about world +Y; floor_xz (2,) world
    (x, z) under the pelvis; appearance; target: the labelled person; motion: (name, t) if scripted."""

    betas: np.ndarray
    theta: np.ndarray
    floor_xz: np.ndarray
    appearance: BodyAppearance
    target: bool = True
    motion: tuple[str, float] | None = None


@dataclass(frozen=True)
class Lighting:
    """ambient (3,) linear RGB; directions (k, 3) unit vectors in the world pointing *towards* each light;
    colors (k, 3) linear RGB intensities (Lambertian: radiance = albedo * (ambient + sum c max(0, n.l)))."""

    ambient: np.ndarray
    directions: np.ndarray
    colors: np.ndarray


@dataclass(frozen=True)
class Scene:
    """A sampled scene: sensor modes and pose, room, boxes, people (people[0] is the target), lights."""

    depth_mode: str
    color_resolution: str
    sensor: SensorPose
    room: Room
    boxes: tuple[Box, ...]
    people: tuple[PersonSpec, ...]
    lighting: Lighting

    @property
    def target(self) -> PersonSpec:
        return self.people[0]


# ------------------------------------------------------------------------------------------ sampling
@functools.lru_cache(maxsize=64)
def _weighted(pairs: tuple[tuple[str, float], ...]) -> Choices[str]:
    w = np.array([w for _, w in pairs], dtype=np.float64)
    return Choices([n for n, _ in pairs], w / w.sum())


def _choice(rng: np.random.Generator, pairs: Sequence[tuple[str, float]]) -> str:
    """A name of (name, weight) pairs with probability weight / sum (the draw of rng.choice)."""
    return _weighted(tuple((str(n), float(w)) for n, w in pairs)).draw(rng)


_SIGN_PICK = Choices([-1.0, 1.0])
_OCCLUDER_PICK = Choices(["box", "table", "cabinet"], [0.5, 0.3, 0.2])


def sample_person(rng: np.random.Generator, config: SceneConfig, regions: BodyRegions, floor_xz: np.ndarray,
                  target: bool = True, num_betas: int = 10) -> PersonSpec:
    """Random betas, pose (sampler or a scripted-motion frame), yaw over 360 degrees and appearance."""
    betas = np.clip(rng.normal(0.0, config.beta_std, size=num_betas), -config.beta_clip, config.beta_clip)
    motion = None
    if rng.random() < config.motion_prob:
        name = str(MOTIONS[int(rng.integers(len(MOTIONS)))])
        t = float(uniform(rng, 0.0, 8.0))
        theta = scripted_motion(name, t).theta.copy()
        motion = (name, t)
    else:
        theta = sample_body_poses(1, rng, config.pose)[0]
    yaw = uniform(rng, -math.pi, math.pi)
    # root = yaw about world Y composed with the pose's own root rotation (scripted motions turn)
    theta[:3] = Rotation.from_matrix(yaw_matrix(yaw) @ Rotation.from_rotvec(theta[:3]).as_matrix()).as_rotvec()
    appearance = sample_body_appearance(rng, regions, config.pattern_prob)
    return PersonSpec(betas=betas.astype(np.float64), theta=theta.astype(np.float64),
                      floor_xz=np.asarray(floor_xz, dtype=np.float64), appearance=appearance, target=target,
                      motion=motion)


def sample_room(rng: np.random.Generator, config: SceneConfig, keep_inside_xz: Sequence[np.ndarray]) -> Room:
    """A room around the sensor (at x = z = 0) and the given world (x, z) points, random yaw and materials.

    The wall behind the sensor is close (0.2-1.5 m); the others leave room_margin_m around everything.
    """
    yaw = uniform(rng, -math.pi, math.pi)
    pts = np.array([[0.0, 0.0, 0.0]] + [[p[0], 0.0, p[1]] for p in keep_inside_xz]) @ yaw_matrix(yaw)
    lo, hi = config.room_margin_m
    x0 = pts[:, 0].min() - uniform(rng, lo, hi)
    x1 = pts[:, 0].max() + uniform(rng, lo, hi)
    z0 = pts[:, 2].min() - uniform(rng, lo, hi)
    z1 = pts[:, 2].max() + uniform(rng, lo, hi)
    height = uniform(rng, *config.room_height_m)
    walls = tuple(sample_surface_material(rng, "wall") for _ in range(4))
    if rng.random() < 0.6:  # often all walls share one paint
        walls = (walls[0],) * 4
    ceiling = Material(color=(0.8, 0.8, 0.8), ir_reflectance=0.7)
    return Room(x0=float(x0), x1=float(x1), z0=float(z0), z1=float(z1), height=float(height), yaw=float(yaw),
                floor=sample_surface_material(rng, "floor"), ceiling=ceiling, walls=walls)  # type: ignore[arg-type]


def _sample_lighting(rng: np.random.Generator) -> Lighting:
    tint = lambda: np.clip(np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.08, 3) + uniform(rng, -0.12, 0.12) *  # noqa: E731
                           np.array([1.0, 0.0, -1.0]), 0.6, 1.4)
    ambient = uniform(rng, 0.12, 0.45) * tint()
    k = int(rng.integers(1, 4))
    elev = np.radians(rng.uniform(15, 85, k))
    azim = rng.uniform(-math.pi, math.pi, k)
    dirs = np.stack([np.cos(elev) * np.sin(azim), np.sin(elev), np.cos(elev) * np.cos(azim)], axis=1)
    colors = np.stack([uniform(rng, 0.35, 1.0) * tint() for _ in range(k)]) * (1.2 / math.sqrt(k))
    return Lighting(ambient=ambient, directions=dirs, colors=colors)


def _box(rng: np.random.Generator, center_xz: np.ndarray, size: tuple[float, float, float], yaw: float,
         material: Material, role: str, base_y: float = 0.0) -> Box:
    return Box(center=(float(center_xz[0]), float(base_y + size[1] / 2), float(center_xz[1])),
               size=tuple(float(s) for s in size), yaw=float(yaw), material=material, role=role)


def _table(rng: np.random.Generator, center_xz: np.ndarray, yaw: float, material: Material) -> list[Box]:
    w, d = uniform(rng, 0.7, 1.4), uniform(rng, 0.5, 0.9)
    h, top = uniform(rng, 0.68, 0.8), uniform(rng, 0.025, 0.05)
    leg = uniform(rng, 0.04, 0.07)
    boxes = [_box(rng, center_xz, (w, top, d), yaw, material, "table", base_y=h - top)]
    R = yaw_matrix(yaw)
    for sx in (-1, 1):
        for sz in (-1, 1):
            off = R @ np.array([sx * (w / 2 - leg), 0.0, sz * (d / 2 - leg)])
            boxes.append(_box(rng, center_xz + off[[0, 2]], (leg, h - top, leg), yaw, material, "table"))
    return boxes


def _occluder(rng: np.random.Generator, target_xz: np.ndarray, lateral: np.ndarray) -> list[Box]:
    """A box, table or cabinet between the sensor (origin) and the target, partly covering the person."""
    dist = float(np.linalg.norm(target_xz))
    frac = uniform(rng, 0.35, 0.75)
    # keep >= 0.45 m from the person and >= 0.5 m from the sensor
    along = float(np.clip(frac * dist, 0.5, max(0.5, dist - 0.45)))
    direction = target_xz / max(dist, 1e-9)
    kind = _OCCLUDER_PICK.draw(rng)
    material = sample_surface_material(rng, "box")
    yaw = math.atan2(direction[0], direction[1]) + rng.normal(0, 0.3)
    if kind == "cabinet":   # tall and narrow, off to one side: hides a side of the body
        side = _SIGN_PICK.draw(rng) * uniform(rng, 0.15, 0.45)
        center = direction * along + lateral * side
        size = (uniform(rng, 0.3, 0.6), uniform(rng, 1.4, 2.1), uniform(rng, 0.3, 0.6))
        return [_box(rng, center, size, yaw, material, "cabinet")]
    center = direction * along + lateral * uniform(rng, -0.35, 0.35)
    if kind == "table":
        return _table(rng, center, yaw, material)
    size = (uniform(rng, 0.4, 1.1), uniform(rng, 0.4, 1.2), uniform(rng, 0.3, 0.7))
    return [_box(rng, center, size, yaw, material, "occluder")]


def sample_scene(rng: np.random.Generator, config: SceneConfig, regions: BodyRegions,
                 half_fov: Callable[[str], tuple[float, float]], num_betas: int = 10) -> Scene:
    """Sample one scene. half_fov(depth_mode) -> (horizontal, vertical) half field of view of that depth
    camera in radians (from the calibration; the sampler aims the sensor so the person is in view)."""
    depth_mode = _choice(rng, config.depth_modes)
    color_resolution = _choice(rng, config.color_resolutions)
    half_h, _ = half_fov(depth_mode)
    rmin, rmax = DEPTH_MODE_RANGE_M[depth_mode]
    d_lo = max(config.distance_m[0], rmin + config.range_margin_m)
    d_hi = max(d_lo, min(config.distance_m[1], rmax - config.range_margin_m))
    dist = uniform(rng, d_lo, d_hi)
    height = uniform(rng, *config.sensor_height_m)
    aim_y = uniform(rng, *config.aim_height_m)
    pitch = math.degrees(math.atan2(height - aim_y, dist)) + rng.normal(0.0, config.aim_noise_deg)
    roll = rng.normal(0.0, config.roll_std_deg)
    if rng.random() < config.out_of_frame_prob:
        alpha = _SIGN_PICK.draw(rng) * uniform(rng, 0.85, 1.15) * half_h
    else:
        alpha = uniform(rng, -1.0, 1.0) * config.in_frame_fraction * half_h
    sensor = sensor_pose(height, pitch, roll, yaw_deg=0.0)
    # horizontal distance along the viewing direction `alpha` off the optical axis (world +Z)
    target_xz = np.array([dist * math.sin(alpha), dist * math.cos(alpha)])
    people = [sample_person(rng, config, regions, target_xz, target=True, num_betas=num_betas)]
    lateral = np.array([target_xz[1], -target_xz[0]]) / max(np.linalg.norm(target_xz), 1e-9)

    others: list[np.ndarray] = []
    if rng.random() < config.second_person_prob:
        for _ in range(10):
            d2 = uniform(rng, 1.0, max(1.5, d_hi + 1.0))
            a2 = uniform(rng, -0.95, 0.95) * half_h
            xz = np.array([d2 * math.sin(a2), d2 * math.cos(a2)])
            if np.linalg.norm(xz - target_xz) > 0.75:
                others.append(xz)
                break
    for xz in others:
        people.append(sample_person(rng, config, regions, xz, target=False, num_betas=num_betas))

    boxes: list[Box] = []
    if rng.random() < config.occluder_prob:
        boxes += _occluder(rng, target_xz, lateral)
    room = sample_room(rng, config, [target_xz, *others])
    n_clutter = int(rng.integers(config.clutter_boxes[0], config.clutter_boxes[1] + 1))
    avoid = [np.zeros(2), target_xz, *others]
    R_room = yaw_matrix(room.yaw)
    for _ in range(n_clutter):
        for _attempt in range(8):
            p_room = np.array([uniform(rng, room.x0, room.x1), 0.0, uniform(rng, room.z0, room.z1)])
            xz = (R_room @ p_room)[[0, 2]]
            if min(np.linalg.norm(xz - a) for a in avoid) > 0.7:
                break
        else:
            continue
        material = sample_surface_material(rng, "box")
        yaw = room.yaw + (rng.normal(0, 0.1) if rng.random() < 0.7 else uniform(rng, -math.pi, math.pi))
        if rng.random() < 0.25:
            boxes += _table(rng, xz, yaw, material)
        else:
            size = (uniform(rng, 0.2, 1.2), uniform(rng, 0.15, 1.6), uniform(rng, 0.2, 0.8))
            boxes.append(_box(rng, xz, size, yaw, material, "clutter"))
            if rng.random() < 0.2:   # a smaller box stacked on top
                top = (size[0] * uniform(rng, 0.4, 0.9), uniform(rng, 0.1, 0.5), size[2] * uniform(rng, 0.4, 0.9))
                boxes.append(_box(rng, xz, top, yaw + rng.normal(0, 0.2), sample_surface_material(rng, "box"),
                                  "clutter", base_y=size[1]))
    return Scene(depth_mode=depth_mode, color_resolution=color_resolution, sensor=sensor, room=room,
                 boxes=tuple(boxes), people=tuple(people), lighting=_sample_lighting(rng))


# ------------------------------------------------------------------------------------------ geometry
@dataclass
class TriangleSoup:
    """Triangles with appearance, in one frame. vertices (N, 3) float64 metres; faces (F, 3) int64;
    texcoords (N, 3) metres (see training.synth.appearance); face_material (F,) index into `materials`;
    face_object (F,) OBJ_* label; face_person (F,) index into Scene.people or -1."""

    vertices: np.ndarray
    faces: np.ndarray
    texcoords: np.ndarray
    face_material: np.ndarray
    face_object: np.ndarray
    face_person: np.ndarray
    materials: list[Material]

    @classmethod
    def empty(cls) -> "TriangleSoup":
        return cls(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3)), np.zeros(0, np.int32),
                   np.zeros(0, np.int8), np.zeros(0, np.int16), [])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def transformed(self, R: np.ndarray, t: np.ndarray) -> "TriangleSoup":
        """Same soup with vertices mapped by p -> R p + t (texture coordinates unchanged)."""
        return dataclasses.replace(self, vertices=rigid_transform(self.vertices, R, t))


def concat_soups(soups: Sequence[TriangleSoup]) -> TriangleSoup:
    """One soup from several (indices and material ids are offset)."""
    verts, faces, tex, fmat, fobj, fper, mats = [], [], [], [], [], [], []
    nv = 0
    for s in soups:
        verts.append(s.vertices)
        faces.append(s.faces + nv)
        tex.append(s.texcoords)
        fmat.append(s.face_material + len(mats))
        fobj.append(s.face_object)
        fper.append(s.face_person)
        mats.extend(s.materials)
        nv += len(s.vertices)
    if not soups:
        return TriangleSoup.empty()
    return TriangleSoup(np.concatenate(verts), np.concatenate(faces), np.concatenate(tex),
                        np.concatenate(fmat).astype(np.int32), np.concatenate(fobj).astype(np.int8),
                        np.concatenate(fper).astype(np.int16), mats)


def _quad_soup(corners: np.ndarray, uv: np.ndarray, materials: Sequence[Material], obj: np.ndarray) -> TriangleSoup:
    """Q quads as a soup: corners (Q, 4, 3) in order around each quad, uv (Q, 4, 2) metres in the quad's
    plane, one material and object label per quad (materials listed once each, by identity, in order of
    first use). Quad q is triangles (0, 1, 2), (0, 2, 3) of its corners, faces 2q and 2q + 1."""
    q = corners.shape[0]
    if q == 0:
        return TriangleSoup.empty()
    index: dict[int, int] = {}
    unique: list[Material] = []
    mat = np.empty(q, np.int32)
    for k, m in enumerate(materials):
        mat[k] = index.setdefault(id(m), len(unique))
        if mat[k] == len(unique):
            unique.append(m)
    tex = np.zeros((4 * q, 3))
    tex[:, :2] = uv.reshape(-1, 2)
    faces = (np.array([[0, 1, 2], [0, 2, 3]])[None] + 4 * np.arange(q)[:, None, None]).reshape(-1, 3)
    return TriangleSoup(np.ascontiguousarray(corners, dtype=np.float64).reshape(-1, 3), faces, tex,
                        np.repeat(mat, 2), np.repeat(np.asarray(obj, np.int8), 2), np.full(2 * q, -1, np.int16),
                        unique)


# A unit box's 6 faces as quads (corners in [-1, 1]^3, all wound alike: (b - a) x (c - a) points into the
# box; the renderers turn normals toward the ray) and, per face, which two box axes span its (u, v).
_BOX_QUADS = np.array([
    [[1, -1, -1], [1, -1, 1], [1, 1, 1], [1, 1, -1]],        # +x: u = z, v = y
    [[-1, -1, 1], [-1, -1, -1], [-1, 1, -1], [-1, 1, 1]],    # -x
    [[1, -1, 1], [-1, -1, 1], [-1, 1, 1], [1, 1, 1]],        # +z: u = x, v = y
    [[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1]],    # -z
    [[-1, 1, -1], [1, 1, -1], [1, 1, 1], [-1, 1, 1]],        # +y: u = x, v = z
    [[-1, -1, 1], [1, -1, 1], [1, -1, -1], [-1, -1, -1]],    # -y
], dtype=np.float64)
_BOX_UV_AXES = np.array([[2, 1], [2, 1], [0, 1], [0, 1], [0, 2], [0, 2]])


def _box_quads(boxes: Sequence[Box]) -> tuple[np.ndarray, np.ndarray]:
    """Corners (6B, 4, 3) world and uv (6B, 4, 2) of the boxes' faces (box by box, _BOX_QUADS order)."""
    center = np.array([b.center for b in boxes], np.float64)                    # (B, 3)
    local = _BOX_QUADS[None] * (np.array([b.size for b in boxes], np.float64) / 2)[:, None, None, :]
    R_t = np.stack([yaw_matrix(b.yaw).T for b in boxes])[:, None]                # (B, 1, 3, 3)
    world = local @ R_t + center[:, None, None, :]
    uv = np.take_along_axis(local, np.broadcast_to(_BOX_UV_AXES[None, :, None, :], local.shape[:3] + (2,)), axis=3)
    uv = uv + center[:, None, None, :2]
    return world.reshape(-1, 4, 3), uv.reshape(-1, 4, 2)


def static_triangles(scene: Scene) -> TriangleSoup:
    """Room (floor, ceiling, 4 walls) and boxes as a world-frame TriangleSoup (no people)."""
    r = scene.room
    h = r.height
    floor = np.array([[r.x0, 0, r.z0], [r.x1, 0, r.z0], [r.x1, 0, r.z1], [r.x0, 0, r.z1]], np.float64)
    ceil = floor + [0, h, 0]
    corners, uvs = [floor, ceil], [floor[:, [0, 2]], ceil[:, [0, 2]]]
    for xa, za, xb, zb in ((r.x0, r.z0, r.x0, r.z1), (r.x1, r.z0, r.x1, r.z1), (r.x0, r.z0, r.x1, r.z0),
                           (r.x0, r.z1, r.x1, r.z1)):
        corners.append(np.array([[xa, 0, za], [xb, 0, zb], [xb, h, zb], [xa, h, za]], np.float64))
        a0 = za if xa == xb else xa
        a1 = a0 + math.hypot(xb - xa, zb - za)
        uvs.append(np.array([[a0, 0], [a1, 0], [a1, h], [a0, h]], np.float64))
    room = np.stack(corners) @ yaw_matrix(r.yaw).T
    materials = [r.floor, r.ceiling, *r.walls]
    obj = [OBJ_BACKGROUND] * 6
    if scene.boxes:
        box_corners, box_uv = _box_quads(scene.boxes)
        room = np.concatenate([room, box_corners])
        uv = np.concatenate([np.stack(uvs), box_uv])
        materials += [b.material for b in scene.boxes for _ in range(6)]
        obj += [OBJ_FURNITURE] * (6 * len(scene.boxes))
    else:
        uv = np.stack(uvs)
    return _quad_soup(room, uv, materials, np.array(obj))


def ground_body(vertices: np.ndarray, joints: np.ndarray, floor_xz: np.ndarray) -> np.ndarray:
    """Translation (3,) that puts a posed body (body frame, root yaw applied, no translation) on the floor
    at `floor_xz`: lowest vertex at y = 0, pelvis joint (joints[0]) above (x, z)."""
    return np.array([floor_xz[0] - joints[0, 0], -float(vertices[:, 1].min()), floor_xz[1] - joints[0, 2]])
