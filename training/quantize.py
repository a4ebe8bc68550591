"""Reduced-precision variants of an exported FuseMesh graph, and the synthetic frames they are built and judged on.

    frames = synthetic_frames(size=128, n=32, shards=None, body=body, seed=1)   # shards > synth engine > pseudo
    fp16 = to_fp16(fp32_model_proto)                                       # ModelProto
    to_int8(fp32_path, int8_path, frames)                                  # static QDQ, calibrated on frames

Which nodes change: only learned layers, found by the module scopes torch.onnx's dynamo exporter writes
on every node (`namespace` metadata; `heavy_nodes`): fp16 converts the RGB/depth encoders, the fusion
MLP and the regressor's MLP and decoders; int8 the encoders' last stages. Input normalisation, the
rotation maths of the regressor and SMPL skinning stay float32: depth in metres would lose 2 mm steps
at 2.5 m in fp16, and vertices/joints keep full precision.

- fp16: a mixed-precision pass of our own. ORT's `onnxruntime.transformers.float16` converter casts
  graph inputs and outputs through fp16 even with `keep_io_types=True` when the nodes reading them are
  blocked (so depth and vertices would still be rounded), and it names its cast nodes twice when a
  blocked node reads a graph input (an invalid model, seen with 1.31). Here, heavy-node initialisers
  become fp16, and one Cast is inserted on each tensor crossing the heavy region's border.
- int8: `onnxruntime.quantization.quantize_static`, QDQ format, per-channel int8 weights, uint8
  activations (MinMax calibration) on the Conv nodes of the depth encoder's layer3 + layer4 and the RGB
  encoder's layer4. Everything before them, the fusion MLP and the IEF regressor stay float. Measured on the
  bundled lite weights (PA-MPJPE of the int8 graph vs the fp32 graph, 64 held-out frames, 32 calibration
  frames), quantising one group alone: depth stem 17.3 mm, depth layer1 27.6, layer2 1.0, layer3 0.6,
  layer4 0.3; RGB stem 3.4, layer1 2.9, layer2 2.0, layer3 1.9, layer4 1.0; fusion 1.3. The depth stem
  reads depth relative to the person in [-1.5, 1.5] m, where 8 bits are 12 mm steps, coarser than the
  body's relief; errors of the groups add up (all of them: 38 mm; all but the depth stem and layer1:
  5.4 mm; layer3 + layer4 of both: 1.9-2.5 mm; depth layer3-4 + RGB layer4: 1.4-1.5 mm, depending on
  the calibration frames). The price: on the 2-core CPU this int8 graph is only ~5-15 % faster than the
  fp32 one (whole encoders: ~25 %). The regressor's
  iterations feed errors back (13 mm from its Gemms alone on a random network). Dynamic int8 was 2-4x
  slower than fp32 on this CPU (notes/stack.md) and is not offered.

Synthetic frames (`FrameSet`), in order of preference:
1. `--calib-shards DIR`: .npz shards of training/synth (arrays rgb (N,S,S,3) uint8, depth_mm (N,S,S)
   uint16, mask (N,S,S) bool, joints3d (N,24,3) metres), resampled to the model's input size if needed;
2. frames rendered by the synthetic engine (training/synth/sample.py, Open3D; ~2 s/frame on 2 busy cores);
3. structured pseudo-frames (`pseudo_frames`): a blocky person silhouette in front of a wall, with
   clothing colours, sensor-like depth holes and noise. No labels; enough to calibrate activation ranges
   and to compare a variant with fp32, not to measure accuracy against ground truth.
Every set mixes stream masks like the app sees them: both streams on, RGB only and depth only.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from model.preprocess import reference_depth

__all__ = [
    "FrameSet", "synthetic_frames", "shard_frames", "engine_frames", "pseudo_frames", "stream_mask_pattern",
    "heavy_nodes", "to_fp16", "to_int8",
]

log = logging.getLogger(__name__)

# module scopes (torch.onnx namespace paths below the export wrapper's `net.`) that hold the learned heavy part
_HEAVY_SCOPE = re.compile(r"^net\.(rgb_encoder|depth_encoder|fusion|regressor\.(mlp|dec_\w+))(\.|$)")
# int8: the depth encoder's last two stages and the RGB encoder's last one (per-group sensitivity: module docstring)
_INT8_SCOPE = re.compile(r"^net\.(rgb_encoder\.layer4|depth_encoder\.(layer3|layer4))(\.|$)")
_QUANT_OPS = ("Conv", "Gemm", "MatMul")


# ============================================================================== synthetic frames
@dataclass
class FrameSet:
    """Raw network inputs for N frames (the ONNX graph's inputs) plus optional labels.

    rgb (N, 3, S, S) uint8 RGB; depth (N, 1, S, S) float32 metres (0 = invalid); ref_depth (N,) float32
    metres; stream_mask (N, 2) bool [rgb_on, depth_on]; joints3d (N, 24, 3) metres (camera frame) or None;
    source: where the frames came from (one line, stored in the model's metadata).
    """

    rgb: np.ndarray
    depth: np.ndarray
    ref_depth: np.ndarray
    stream_mask: np.ndarray
    joints3d: Optional[np.ndarray]
    source: str

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def size(self) -> int:
        return int(self.rgb.shape[-1])

    def feeds(self, start: int = 0, stop: Optional[int] = None) -> dict[str, np.ndarray]:
        """ONNX Runtime feed dict for frames [start, stop)."""
        sl = slice(start, stop)
        return {"rgb": np.ascontiguousarray(self.rgb[sl]), "depth": np.ascontiguousarray(self.depth[sl]),
                "ref_depth": np.ascontiguousarray(self.ref_depth[sl]),
                "stream_mask": np.ascontiguousarray(self.stream_mask[sl])}


def stream_mask_pattern(n: int) -> np.ndarray:
    """(n, 2) bool: a fixed mix of 3/5 both streams, 1/5 RGB only, 1/5 depth only (frame i by i % 5)."""
    m = np.ones((n, 2), np.bool_)
    k = np.arange(n) % 5
    m[k == 3, 1] = False
    m[k == 4, 0] = False
    return m


def _from_crops(rgb_hwc: np.ndarray, depth_mm: np.ndarray, mask: Optional[np.ndarray],
                joints3d: Optional[np.ndarray], size: int, source: str) -> FrameSet:
    """Build a FrameSet from per-frame HWC crops (resampled to `size` if they differ)."""
    n = rgb_hwc.shape[0]
    if rgb_hwc.shape[1:3] != (size, size):
        import cv2

        rgb_hwc = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in rgb_hwc])
        depth_mm = np.stack([cv2.resize(d, (size, size), interpolation=cv2.INTER_NEAREST) for d in depth_mm])
        if mask is not None:
            mask = np.stack([cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
                             for m in mask])
    depth_m = depth_mm.astype(np.float32) * np.float32(0.001)
    refs = []
    for i in range(n):
        person = mask[i] if mask is not None and mask[i].any() else None
        try:
            refs.append(reference_depth(depth_m[i], person))
        except ValueError:  # no valid depth at all: the depth stream carries nothing for this frame
            refs.append(2.5)
    return FrameSet(rgb=np.ascontiguousarray(rgb_hwc.transpose(0, 3, 1, 2)), depth=depth_m[:, None],
                    ref_depth=np.asarray(refs, np.float32), stream_mask=stream_mask_pattern(n),
                    joints3d=None if joints3d is None else np.asarray(joints3d, np.float32), source=source)


def shard_frames(folder: str | Path, size: int, n: int, start: int = 0) -> FrameSet:
    """Frames [start, start + n) from a folder of training/synth .npz shards (sorted by file name).

    Reads `shard-*.npz` (or any *.npz) files directly, so a manifest is not required. Raises ValueError
    naming the folder/file when it has no shards, too few samples, or lacks an array.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: calibration shard folder not found")
    files = sorted(folder.glob("shard-*.npz")) or sorted(folder.glob("*.npz"))
    if not files:
        raise ValueError(f"{folder}: no .npz shards in it")
    need = ("rgb", "depth_mm")
    parts: dict[str, list[np.ndarray]] = {"rgb": [], "depth_mm": [], "mask": [], "joints3d": []}
    seen = 0
    for f in files:
        if seen >= start + n:
            break
        with np.load(f, allow_pickle=False) as data:
            missing = [k for k in need if k not in data.files]
            if missing:
                raise ValueError(f"{f}: shard lacks array {missing[0]!r} (has {sorted(data.files)})")
            count = int(data["rgb"].shape[0])
            lo, hi = max(0, start - seen), min(count, start + n - seen)
            if hi > lo:
                for k in parts:
                    if k in data.files:
                        parts[k].append(np.asarray(data[k][lo:hi]))
            seen += count
    got = sum(len(p) for p in parts["rgb"])
    if got < n:
        raise ValueError(f"{folder}: shards hold {seen} samples, need {start + n}")
    rgb = np.concatenate(parts["rgb"])
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{folder}: shard rgb must be (N, S, S, 3) uint8, got {rgb.shape} {rgb.dtype}")
    mask = np.concatenate(parts["mask"]) if len(parts["mask"]) == len(parts["rgb"]) else None
    joints = np.concatenate(parts["joints3d"]) if len(parts["joints3d"]) == len(parts["rgb"]) else None
    return _from_crops(rgb, np.concatenate(parts["depth_mm"]), mask, joints, size,
                       f"synthetic shards {folder} [{start}:{start + n}]")


def engine_frames(body: Any, size: int, n: int, seed: int) -> FrameSet:
    """n frames rendered now by the synthetic engine (training/synth/sample.py) at crop size `size`."""
    from training.synth.sample import SynthConfig, SynthEngine

    engine = SynthEngine(body, SynthConfig(out_size=int(size)))
    samples = engine.make_samples(int(seed), list(range(n)))
    return _from_crops(np.stack([s.rgb for s in samples]), np.stack([s.depth_mm for s in samples]),
                       np.stack([s.mask for s in samples]), np.stack([s.joints3d for s in samples]), size,
                       f"synthetic engine, seed {seed}, {n} frames, body {getattr(body, 'model_id', '?')}")


def pseudo_frames(size: int, n: int, seed: int = 0) -> FrameSet:
    """n structured pseudo-frames (no labels): a person-like silhouette of boxes (torso, head, arms, legs)
    at 2-4 m in front of a wall 0.8-2.5 m behind, floor below; clothing/skin/background colours with
    texture noise; depth with ~1 % noise and dropouts along the silhouette edge and at random."""
    rng = np.random.default_rng([int(seed), 7919])
    S = int(size)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S  # (S, S) in [0, 1)
    rgb = np.empty((n, S, S, 3), np.uint8)
    depth_mm = np.empty((n, S, S), np.uint16)
    masks = np.empty((n, S, S), np.bool_)
    for i in range(n):
        z = rng.uniform(2.0, 4.0)
        wall = z + rng.uniform(0.8, 2.5)
        cx = 0.5 + rng.uniform(-0.06, 0.06)
        lean = rng.uniform(-0.08, 0.08)
        arm = rng.uniform(-0.25, 0.25)  # arm raise, as a vertical offset of the hands
        parts = [  # (x0, x1, y0, y1) in crop units, relative to the centre line
            (-0.09, 0.09, 0.22, 0.55),  # torso
            (-0.05, 0.05, 0.10, 0.21),  # head
            (-0.08, -0.01, 0.55, 0.92), (0.01, 0.08, 0.55, 0.92),  # legs
            (-0.25, -0.09, 0.24 + min(arm, 0), 0.30 + max(arm, 0) * 0.5),  # arms
            (0.09, 0.25, 0.24 - max(arm, 0), 0.30 - min(arm, 0) * 0.5),
        ]
        person = np.zeros((S, S), np.bool_)
        region = np.full((S, S), -1, np.int8)
        for k, (x0, x1, y0, y1) in enumerate(parts):
            shift = lean * (yy - 0.5)
            inside = (xx - cx - shift >= x0) & (xx - cx - shift <= x1) & (yy >= y0) & (yy <= y1)
            person |= inside
            region[inside] = k
        floor = yy > 0.9
        d = np.where(floor, z + (1.0 - yy) * 3.0, wall).astype(np.float32)
        bulge = 0.12 * np.cos(np.clip((xx - cx) / 0.1, -1.5, 1.5))  # body surface nearer in the middle
        d = np.where(person, z - bulge, d)
        d *= 1.0 + 0.01 * rng.standard_normal((S, S)).astype(np.float32)
        edge = person ^ np.roll(person, 1, axis=1) | person ^ np.roll(person, 1, axis=0)
        holes = edge & (rng.random((S, S)) < 0.5) | (rng.random((S, S)) < 0.01)
        d[holes] = 0.0
        depth_mm[i] = np.clip(d * 1000.0, 0, 65535).astype(np.uint16)
        masks[i] = person
        bg = rng.uniform(60, 200, 3) * (0.8 + 0.4 * yy[..., None])
        shirt, pants, skin = rng.uniform(20, 235, 3), rng.uniform(20, 200, 3), np.array([200.0, 150, 120])
        colour = bg.copy()
        for k, c in ((0, shirt), (1, skin), (2, pants), (3, pants), (4, shirt), (5, shirt)):
            colour[region == k] = c
        colour += rng.normal(0, 8, (S, S, 3))
        rgb[i] = np.clip(colour, 0, 255).astype(np.uint8)
    return _from_crops(rgb, depth_mm, masks, None, S,
                       f"pseudo-frames (structured, unlabelled), seed {seed}, {n} frames")


def synthetic_frames(size: int, n: int, *, shards: Optional[str | Path] = None, body: Any = None,
                     seed: int = 0, start: int = 0, allow_engine: bool = True) -> FrameSet:
    """The best available synthetic set: shards if given, else the synth engine (needs `body`), else
    pseudo-frames (logged as such). `seed`/`start` pick disjoint sets for calibration and evaluation."""
    if shards is not None:
        return shard_frames(shards, size, n, start=start)
    if allow_engine and body is not None:
        try:
            return engine_frames(body, size, n, seed)
        except Exception as e:  # engine unavailable (Open3D missing, API changed): say so, fall back
            log.warning("synthetic engine unavailable (%s: %s); using structured pseudo-frames",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    return pseudo_frames(size, n, seed)


# ================================================================================= graph regions
def _scopes(node: Any) -> list[str]:
    """Module paths of a node from the exporter's `namespace` metadata (': W/net: FuseMesh/net.fusion: ...')."""
    for p in node.metadata_props:
        if p.key == "namespace":
            return [seg.split(":")[0].strip() for seg in p.value.split("/")]
    return []


def heavy_nodes(model: Any, scope: "re.Pattern[str]" = _HEAVY_SCOPE) -> set[str]:
    """Names of the nodes in the encoders, fusion MLP and regressor MLP/decoders of an exported graph
    (or under another module-path pattern `scope`).

    Raises ValueError when the graph carries no module scopes (not exported by training.export)."""
    names = {n.name for n in model.graph.node if any(scope.match(s) for s in _scopes(n))}
    if not names:
        raise ValueError("graph has no nodes scoped under net.rgb_encoder/depth_encoder/fusion/regressor: "
                         "export it with training.export")
    return names


# ========================================================================================= fp16
def to_fp16(model: Any) -> Any:
    """Copy of an fp32 ModelProto with the heavy nodes in float16 (IO and the rest stay float32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    heavy = heavy_nodes(model)
    float_tensors = {vi.name for vi in list(g.value_info) + list(g.input) + list(g.output)
                     if vi.type.tensor_type.elem_type == TensorProto.FLOAT}
    inits = {t.name: t for t in g.initializer}
    float_tensors |= {name for name, t in inits.items() if t.data_type == TensorProto.FLOAT}
    produced_by_heavy = {o for n in g.node if n.name in heavy for o in n.output}
    for n in g.node:  # Constant nodes inside the region: their outputs are float tensors too
        if n.name in heavy and n.op_type == "Constant":
            float_tensors |= set(n.output)
    graph_outputs = {o.name for o in g.output}
    consumers_outside = {i for n in g.node if n.name not in heavy for i in n.input} | graph_outputs

    new_nodes, to16, init16 = [], {}, {}

    def as_fp16(name: str) -> str:
        if name in init16:
            return init16[name]
        if name in inits and name not in produced_by_heavy:
            arr = numpy_helper.to_array(inits[name]).astype(np.float16)
            init16[name] = name + "__fp16"
            g.initializer.append(numpy_helper.from_array(arr, init16[name]))
            return init16[name]
        if name not in to16:
            to16[name] = name + "__to_fp16"
            new_nodes.append(helper.make_node("Cast", [name], [to16[name]], to=TensorProto.FLOAT16,
                                              name=f"fp16_in_{len(to16)}"))
        return to16[name]

    inner: dict[str, str] = {}  # heavy float output -> its fp16 name (original name = fp32 cast of it)
    for n in g.node:
        if n.name not in heavy:
            new_nodes.append(n)
            continue
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        for k, name in enumerate(n.input):
            if not name or name not in float_tensors:
                continue
            n.input[k] = inner[name] if name in inner else as_fp16(name)
        casts = []
        for k, name in enumerate(n.output):
            if name not in float_tensors:
                continue
            inner[name] = name + "__fp16"
            n.output[k] = inner[name]
            if name in consumers_outside:
                casts.append(helper.make_node("Cast", [inner[name]], [name], to=TensorProto.FLOAT,
                                              name=f"fp16_out_{len(inner)}"))
        for a in n.attribute:  # e.g. Cast(to=FLOAT) inside the region now produces fp16
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
        new_nodes.append(n)
        new_nodes.extend(casts)
    used = {i for n in new_nodes for i in n.input}
    keep = [t for t in g.initializer if t.name in used or t.name in graph_outputs]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]  # stale float types inside the region; ONNX Runtime infers them again
    onnx.checker.check_model(model)
    return model


# ========================================================================================= int8
def to_int8(fp32_path: str | Path, out_path: str | Path, frames: FrameSet,
            op_types: Sequence[str] = _QUANT_OPS) -> Path:
    """Static int8 QDQ model of the Conv/Gemm/MatMul nodes of the encoders' last two stages (module
    docstring), calibrated (MinMax) on `frames`."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if len(frames) == 0:
        raise ValueError("int8 calibration needs at least one frame")
    model = onnx.load(str(fp32_path), load_external_data=False)
    heavy = heavy_nodes(model, _INT8_SCOPE)
    nodes = [n.name for n in model.graph.node if n.name in heavy and n.op_type in op_types]
    del model

    class _Reader(CalibrationDataReader):
        """One frame per feed, in order; rewind() starts over."""

        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = (frames.feeds(i, i + 1) for i in range(len(frames)))

    out_path = Path(out_path)
    root = logging.getLogger()
    quiet = _DropMessages("pre-processing before quantization", "Created a copy of bias input")
    root.addFilter(quiet)
    try:
        quantize_static(str(fp32_path), str(out_path), _Reader(), quant_format=QuantFormat.QDQ,
                        nodes_to_quantize=nodes, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    finally:
        root.removeFilter(quiet)
    return out_path


class _DropMessages(logging.Filter):
    """Hides quantize_static's root-logger advice that does not apply here: the exporter's graph is already
    optimised (BatchNorm and constants folded), and ORT's pre-processing would rename the nodes whose
    module scopes pick what to quantize."""

    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(f in msg for f in self.fragments)
