"""Azure Kinect recordings of synthetic sequences: a scripted motion in a sampled room, rendered full frame.

    python -m training.synth record --motion walk --seconds 10 --out clip.mkv

writes `clip.mkv` (a real K4A recording: MJPG color + DEPTH16, calibration.json attachment, opened by
`pyk4a.PyK4APlayback`) and `clip.gt.npz`, the ground truth keyed by device timestamp (µs):

    betas (N,10), theta (N,72) global orient in the depth camera frame, transl (N,3), joints3d (N,24,3),
    lsp3d (N,14,3) metres; joints2d_depth (N,24,2) / lsp2d_depth (N,14,2) depth px, *_vis_depth (N,..);
    joints2d_color / lsp2d_color and *_vis_color likewise in the color image; bbox_depth (N,4) visible-
    person box (depth px edges, NaN if hidden); visible_px (N,); mask_depth (N,Hd,Wd) bool.

Each frame is rendered at full resolution in both cameras (no crop shortcuts): depth through the
sensor model, color through the color sensor model with one camera setting for the whole sequence and
JPEG-compressed once, by the MJPG writer. The person follows `poses.motion_program` (a motion name or
a program "walk:4,wave:3"), starting roughly facing the sensor 1.6-3.2 m away, and is kept on the floor
frame by frame. Frame k's noise uses its own generator (seed, k), so any frame can be re-rendered alone.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from scipy.spatial.transform import Rotation

from training.synth.k4a_writer import K4ARecordingConfig, K4ARecordingWriter, RecordingError, write_sidecar
from training.synth.poses import MOTIONS, motion_program
from training.synth.render import sample_color_sensor
from training.synth.sample import Frame, SynthEngine
from training.synth.scene import Scene

__all__ = ["SequenceSpec", "parse_motion", "sequence_scene", "render_sequence", "record_sequence", "RecordingSummary"]

_SCENE_SALT = 0x5E0
_FRAME_SALT = 0xF4A


def parse_motion(text: str, seconds: Optional[float] = None) -> list[tuple[str, float]]:
    """'walk' (+ seconds) or 'walk:4,wave:3' -> [(motion, seconds), ...]; ValueError naming the problem."""
    steps: list[tuple[str, float]] = []
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError("motion is empty; give a name (walk) or a program (walk:4,wave:3)")
    for part in parts:
        name, _, dur = part.partition(":")
        name = name.strip()
        if name not in MOTIONS:
            raise ValueError(f"unknown motion {name!r}; choose from {', '.join(MOTIONS)}")
        if dur:
            try:
                d = float(dur)
            except ValueError:
                raise ValueError(f"motion step {part!r}: duration {dur!r} is not a number of seconds") from None
        elif len(parts) == 1 and seconds is not None:
            d = float(seconds)
        else:
            raise ValueError(f"motion step {part!r} needs a duration (name:seconds)")
        if not d > 0:
            raise ValueError(f"motion step {part!r}: duration must be > 0 s")
        steps.append((name, d))
    return steps


@dataclass(frozen=True)
class SequenceSpec:
    """What to record: motion steps [(name, seconds)], fps (5, 15, 30), Kinect modes, seed, first
    device timestamp (µs), MJPG quality, and whether the sidecar stores per-frame masks."""

    steps: tuple[tuple[str, float], ...]
    fps: int = 30
    depth_mode: str = "NFOV_UNBINNED"
    color_resolution: str = "720P"
    seed: int = 0
    start_usec: int = 1_000_000
    jpeg_quality: int = 90
    masks: bool = True

    @property
    def seconds(self) -> float:
        return float(sum(d for _, d in self.steps))

    @property
    def num_frames(self) -> int:
        return max(1, int(math.floor(self.seconds * self.fps + 1e-9)))

    def timestamp(self, k: int) -> int:
        return int(self.start_usec + round(k * 1_000_000 / self.fps))


def sequence_scene(engine: SynthEngine, spec: SequenceSpec) -> Scene:
    """The sequence's room, sensor, person and lights: a scene sampled for the spec's modes, with the
    person 1.6-3.2 m away (within the mode's range), roughly facing the sensor, no out-of-frame start."""
    from training.synth.depth_noise import DEPTH_MODE_RANGE_M
    base = engine.config.scene
    lo, hi = DEPTH_MODE_RANGE_M[spec.depth_mode]
    d_hi = max(1.2, min(3.2, hi - 0.6))
    cfg = dataclasses.replace(
        base, depth_modes=((spec.depth_mode, 1.0),), color_resolutions=((spec.color_resolution, 1.0),),
        distance_m=(max(1.0, min(1.6, d_hi)), d_hi), motion_prob=0.0, out_of_frame_prob=0.0, in_frame_fraction=0.25,
        room_margin_m=(1.5, 3.5), aim_height_m=(0.8, 1.1), occluder_prob=min(base.occluder_prob, 0.15))
    rng = np.random.default_rng([int(spec.seed), _SCENE_SALT])
    scene = engine.sample_scene(rng, cfg)
    target = scene.target
    to_sensor = -np.array([target.floor_xz[0], target.floor_xz[1]])
    yaw = math.atan2(to_sensor[0], to_sensor[1]) + rng.normal(0.0, math.radians(20))
    theta = target.theta.copy()
    theta[:3] = [0.0, yaw, 0.0]   # base heading; the motion's own root rotation is applied per frame
    return dataclasses.replace(scene, people=(dataclasses.replace(target, theta=theta, motion=None),)
                               + tuple(scene.people[1:]))


def _frame_scene(scene: Scene, program, t: float) -> Scene:
    target = scene.target
    yaw = float(target.theta[1])
    mf = program(t)
    theta = mf.theta.copy()
    theta[:3] = (Rotation.from_rotvec([0.0, yaw, 0.0]) * Rotation.from_rotvec(mf.theta[:3])).as_rotvec()
    c, s = math.cos(yaw), math.sin(yaw)
    dx, dz = mf.transl[0], mf.transl[2]       # body floor frame -> world (yaw about +Y)
    floor_xz = target.floor_xz + np.array([c * dx + s * dz, -s * dx + c * dz])
    person = dataclasses.replace(target, theta=theta, floor_xz=floor_xz)
    return dataclasses.replace(scene, people=(person,) + tuple(scene.people[1:]))


def render_sequence(engine: SynthEngine, spec: SequenceSpec, frames: Optional[range] = None,
                    batch: int = 32) -> Iterator[tuple[int, Frame]]:
    """Yield (device timestamp µs, full-frame Frame) for the spec's frames (default all), in order."""
    scene = sequence_scene(engine, spec)
    program = motion_program(list(spec.steps))
    color_spec = sample_color_sensor(np.random.default_rng([int(spec.seed), _SCENE_SALT, 1]),
                                     engine.config.color_sensor)
    frames = range(spec.num_frames) if frames is None else frames
    ks = list(frames)
    for start in range(0, len(ks), batch):
        part = ks[start:start + batch]
        scenes = [_frame_scene(scene, program, k / spec.fps) for k in part]
        posed = engine.pose(scenes)
        for k, sc, people in zip(part, scenes, posed):
            rng = np.random.default_rng([int(spec.seed), _FRAME_SALT, k])
            frame, _ = engine.render_frame(sc, people, rng, crop_only=False, jpeg=False, color_spec=color_spec)
            yield spec.timestamp(k), frame


@dataclass(frozen=True)
class RecordingSummary:
    path: Path
    sidecar: Path
    frames: int
    seconds: float
    render_s: float


def record_sequence(path: str | Path, engine: SynthEngine, spec: SequenceSpec, *, overwrite: bool = False,
                    progress: bool = False) -> RecordingSummary:
    """Render the sequence and write `path` (.mkv) plus its ground-truth sidecar; returns a summary."""
    import time
    path = Path(path)
    if path.suffix.lower() != ".mkv":
        raise RecordingError(f"output must be a .mkv file, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    engine.rig(spec.depth_mode, spec.color_resolution)   # fails early (one line) on an unknown mode
    calibration = engine.config.calibration_path.read_bytes()
    config = K4ARecordingConfig(color_format="MJPG", color_resolution=spec.color_resolution,
                                depth_mode=spec.depth_mode, fps=spec.fps, jpeg_quality=spec.jpeg_quality)
    motion = ",".join(f"{m}:{d:g}" for m, d in spec.steps)
    tags = {"FUSEMESH_SYNTH_MOTION": motion, "FUSEMESH_SYNTH_SEED": str(spec.seed),
            "FUSEMESH_BODY_MODEL": str(getattr(engine.body, "model_id", ""))}
    gt: dict[str, list[Any]] = {k: [] for k in (
        "betas", "theta", "transl", "joints3d", "lsp3d", "joints2d_depth", "joints_vis_depth", "lsp2d_depth",
        "lsp_vis_depth", "joints2d_color", "joints_vis_color", "lsp2d_color", "lsp_vis_color", "bbox_depth",
        "visible_px")}
    if spec.masks:
        gt["mask_depth"] = []
    stamps = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=spec.num_frames, unit="frame", desc="record")
    t0 = time.perf_counter()
    with K4ARecordingWriter(path, config, calibration, tags=tags, overwrite=overwrite) as writer:
        for ts, f in render_sequence(engine, spec):
            writer.write(ts, color=f.color_bgr, depth=f.depth_mm)
            stamps.append(ts)
            p = f.person
            row = dict(betas=p.betas, theta=p.theta, transl=p.transl, joints3d=p.joints, lsp3d=p.lsp,
                       joints2d_depth=f.joints2d_depth, joints_vis_depth=f.joints_vis_depth,
                       lsp2d_depth=f.lsp2d_depth, lsp_vis_depth=f.lsp_vis_depth, joints2d_color=f.joints2d_color,
                       joints_vis_color=f.joints_vis_color, lsp2d_color=f.lsp2d_color, lsp_vis_color=f.lsp_vis_color,
                       bbox_depth=f.bbox, visible_px=f.visible_px)
            if spec.masks:
                row["mask_depth"] = f.mask
            for k, v in row.items():
                gt[k].append(v)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    arrays = {k: np.stack([np.asarray(v) for v in vs]).astype(np.float32 if np.asarray(vs[0]).dtype.kind == "f"
                                                                else np.asarray(vs[0]).dtype)
              for k, vs in gt.items()}
    sidecar = write_sidecar(path, np.asarray(stamps, np.int64), **arrays)
    return RecordingSummary(path=path, sidecar=sidecar, frames=len(stamps), seconds=spec.seconds, render_s=elapsed)
