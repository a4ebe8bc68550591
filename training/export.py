"""Export FuseMesh to one self-describing ONNX graph: RGB + depth crops -> encoders -> fusion -> IEF -> SMPL.

    python -m training.export --checkpoint run/last.pt --variants fp32 int8
    python -m training.export --preset lite --random-weights --variants fp32 fp16 int8 --out-dir /tmp/m

An existing file of the same name is not replaced without --overwrite (exit 2, one line naming it).

Library: `export_onnx(model, cfg, body, path, variant)` writes one file; `export_variants` writes several
from one torch export; `compare_with_torch` runs a file and measures its difference from the torch model.

The graph (`app.runtime` documents the contract and reads it): inputs rgb (B, 3, S, S) uint8, depth
(B, 1, S, S) float32 metres, ref_depth (B,) metres, stream_mask (B, 2) bool, and the IEF warm start
init_pose6d (B, 144), init_beta (B, 10), init_cam (B, 3); outputs theta, beta, cam, vertices, joints,
lsp_joints and pose6d (the regressor's final raw 6D pose, to feed the next frame); dynamic batch axis;
opset 18 through torch.onnx's dynamo exporter; one file with the weights inside (external data only
past protobuf's 2 GB limit). ONNX `metadata_props`
hold `app.runtime.ModelContract`: preset and model config, input size, normalisation of each stream,
joint names, body model id, sha256 and faces, variant, random-weights flag, training data summary,
git commit, export time and tool, and `warm_start` (the regressor's mean parameters, exactly its
buffers: fed as the warm start they reproduce the cold-start output); variants also carry `accuracy`
(JSON: difference from the torch model, both run from the mean, on a fixed synthetic set) and int8
files `calibration` (the frames it was calibrated on). `warm_start=False` writes the older graph
without the warm-start inputs (what files exported before issue #7 look like; the app reads both).

Variants (training/quantize.py): fp32; fp16 (heavy layers in half precision; for GPUs); int8 (static
QDQ, calibrated on synthetic frames). Calibration and evaluation frames come from `--calib-shards`
(training/synth shards), else the synthetic engine, else structured pseudo-frames (see quantize.py);
the evaluation set uses different samples (another seed / the frames after the calibration ones).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from app.runtime import (INPUT_NAMES, OUTPUT_NAMES, WARM_START_INPUTS, WARM_START_OUTPUT, WARM_START_SOURCES,
                         ModelContract, default_normalization, encode_faces)
from model.config import ModelConfig, config_to_dict
from training.quantize import FrameSet, synthetic_frames, to_fp16, to_int8

__all__ = ["VARIANTS", "ExportResult", "export_onnx", "export_variants", "export_fp32_proto", "build_contract",
           "compare_with_torch", "torch_outputs", "mean_init", "with_mean_init", "git_commit", "main"]

log = logging.getLogger(__name__)

VARIANTS = ("fp32", "fp16", "int8")
OPSET = 18
_REPO = Path(__file__).resolve().parents[1]
_OUTPUT_KEYS = {"theta": "theta", "beta": "beta", "cam": "cam", "vertices": "vertices", "joints": "joints",
                "lsp_joints": "lsp_joints", "pose6d": "pose6d"}  # ONNX output name -> FuseMeshOutput key
_PROTOBUF_LIMIT = 2_000_000_000


class _ExportGraph(nn.Module):
    """The older exported signature: four raw inputs -> the six outputs, in OUTPUT_NAMES order."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, ref_depth: torch.Tensor,
                stream_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(rgb, depth, ref_depth, stream_mask)
        return tuple(out[_OUTPUT_KEYS[name]] for name in OUTPUT_NAMES)


class _WarmStartGraph(nn.Module):
    """The exported signature with the IEF warm start: INPUT_NAMES + WARM_START_INPUTS -> OUTPUT_NAMES + pose6d."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, ref_depth: torch.Tensor, stream_mask: torch.Tensor,
                init_pose6d: torch.Tensor, init_beta: torch.Tensor, init_cam: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(rgb, depth, ref_depth, stream_mask, init_pose=init_pose6d, init_shape=init_beta,
                       init_cam=init_cam)
        return tuple(out[_OUTPUT_KEYS[name]] for name in OUTPUT_NAMES + (WARM_START_OUTPUT,))


def mean_init(model: nn.Module) -> dict[str, np.ndarray]:
    """{warm-start input: (1, n) float32}: the IEF regressor's mean parameters (its buffers), WARM_START_INPUTS order."""
    reg = model.regressor
    values = (reg.init_pose6d, reg.init_betas, reg.init_cam)
    return {name: v.detach().cpu().float().numpy().reshape(1, -1).copy() for name, v in zip(WARM_START_INPUTS, values)}


@dataclass
class _MeanInitFrames(FrameSet):
    """A FrameSet whose ONNX feeds also carry the warm-start inputs at the mean (the cold start)."""

    init: dict[str, np.ndarray] = field(default_factory=dict)

    def feeds(self, start: int = 0, stop: Optional[int] = None) -> dict[str, np.ndarray]:
        f = super().feeds(start, stop)
        n = f["rgb"].shape[0]
        f.update({k: np.ascontiguousarray(np.repeat(v, n, axis=0)) for k, v in self.init.items()})
        return f


def with_mean_init(frames: FrameSet, init: Mapping[str, np.ndarray]) -> FrameSet:
    """`frames` whose `feeds()` add `init` ({input: (1, n)}) repeated per frame; for tools that run the raw
    ONNX graph (int8 calibration, accuracy checks) on a warm-start export."""
    if not init:
        return frames
    base = {f.name: getattr(frames, f.name) for f in dataclasses.fields(FrameSet)}
    return _MeanInitFrames(**base, init={k: np.asarray(v, np.float32).reshape(1, -1) for k, v in init.items()})


@dataclass
class ExportResult:
    """One written file: path, variant, size (MB), seconds spent, accuracy vs torch (may be empty)."""

    path: Path
    variant: str
    size_mb: float
    seconds: float
    accuracy: dict[str, Any] = field(default_factory=dict)


# ============================================================================== provenance
def git_commit(repo: Path = _REPO) -> str:
    """HEAD commit of the repository ('-dirty' when tracked files changed), or 'unknown'."""
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_contract(cfg: ModelConfig, body: Any, variant: str, *, random_weights: bool,
                   training_data: Optional[Mapping[str, Any]] = None,
                   extra: Optional[Mapping[str, str]] = None, commit: Optional[str] = None,
                   warm_start_mean: Optional[Mapping[str, np.ndarray]] = None) -> ModelContract:
    """The metadata contract of a FuseMesh export of `cfg` with `body` (a model.body.BodyModel).

    warm_start_mean: {warm-start input: (1, n)} (`mean_init(model)`) for a graph with the warm-start
    inputs; None for the older graph without them."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    S, V = int(cfg.input_size), int(body.num_vertices)
    faces = np.asarray(body.faces)
    data = dict(training_data or {})
    if random_weights:
        data.setdefault("random_weights", True)
        data.setdefault("note", "untrained random weights: for tests and benchmarks only")
    nb = int(getattr(body, "num_betas", 10))
    inputs: dict[str, Any] = {
        "rgb": {"shape": ["batch", 3, S, S], "dtype": "uint8", "what": "RGB person crop, 0..255"},
        "depth": {"shape": ["batch", 1, S, S], "dtype": "float32", "what": "aligned depth crop, metres, 0 = invalid"},
        "ref_depth": {"shape": ["batch"], "dtype": "float32",
                      "what": "person reference depth, metres (model.preprocess.reference_depth)"},
        "stream_mask": {"shape": ["batch", 2], "dtype": "bool", "what": "[rgb_on, depth_on]"},
    }
    outputs: dict[str, Any] = {
        "theta": {"shape": ["batch", 72], "what": "SMPL pose, axis-angle, radians"},
        "beta": {"shape": ["batch", nb], "what": "SMPL shape coefficients"},
        "cam": {"shape": ["batch", 3], "what": "weak-perspective camera (s, tx, ty), crop coords in [-1, 1]"},
        "vertices": {"shape": ["batch", V, 3], "what": "mesh vertices, metres, camera-aligned body frame"},
        "joints": {"shape": ["batch", 24, 3], "what": "SMPL joints (joint_names order), metres"},
        "lsp_joints": {"shape": ["batch", 14, 3], "what": "LSP-14 joints (lsp_joint_names order), metres"},
    }
    warm: dict[str, Any] = {}
    if warm_start_mean is not None:
        mean = {n: np.asarray(warm_start_mean[n], np.float32).reshape(-1) for n in WARM_START_INPUTS}
        for n, what in (("init_pose6d", "IEF start pose, 24 x 6D (model/camera.py), e.g. the last frame's pose6d"),
                        ("init_beta", "IEF start shape, e.g. the last frame's beta"),
                        ("init_cam", "IEF start weak camera (s, tx, ty), e.g. the last frame's cam")):
            inputs[n] = {"shape": ["batch", int(mean[n].size)], "dtype": "float32", "what": what}
        outputs[WARM_START_OUTPUT] = {"shape": ["batch", int(mean["init_pose6d"].size)],
                                      "what": "the regressor's final raw 6D pose (feeds init_pose6d next frame)"}
        warm = {"inputs": dict(WARM_START_SOURCES),
                "mean": {n: [float(x) for x in v] for n, v in mean.items()},  # float32 -> float64: exact in JSON
                "what": "IEF initial values; the mean reproduces the cold-start output"}
    return ModelContract(
        preset=cfg.name, variant=variant, input_size=S, normalization=default_normalization(),
        joint_names=tuple(body.joint_names), lsp_joint_names=_lsp_names(),
        body_model_id=str(body.model_id), body_model_sha256=str(body.sha256), body_num_vertices=V,
        body_num_faces=int(faces.shape[0]), body_faces=encode_faces(faces), random_weights=bool(random_weights),
        inputs=inputs, outputs=outputs, warm_start=warm, training_data=data, model_config=config_to_dict(cfg),
        git_commit=commit if commit is not None else git_commit(),
        exported_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        export_tool=f"training.export (torch {torch.__version__}, opset {OPSET})",
        extra=dict(extra or {}),
    )


def _lsp_names() -> tuple[str, ...]:
    from model.body import LSP_JOINT_NAMES

    return tuple(LSP_JOINT_NAMES)


def _set_metadata(model: Any, contract: ModelContract) -> None:
    del model.metadata_props[:]
    for key, value in contract.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = (f"FuseMesh {contract.preset} ({contract.variant}): RGB-D crops -> SMPL mesh. "
                        "Contract in metadata_props; read with app.runtime.")


def _save(model: Any, path: Path) -> None:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() < _PROTOBUF_LIMIT:  # write then rename: a reader never sees half a file
        partial = path.with_name(path.name + ".partial")
        onnx.save_model(model, str(partial))
        partial.replace(path)
    else:  # only past protobuf's limit: weights in a sidecar next to the file
        log.warning("%s: model exceeds 2 GB, writing weights to %s.data", path.name, path.name)
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")


# ================================================================================== export
def export_fp32_proto(model: nn.Module, input_size: int, opset: int = OPSET, warm_start: bool = True) -> Any:
    """torch.onnx (dynamo) export of `model` (a FuseMesh) -> fp32 onnx.ModelProto without metadata.
    warm_start: with the IEF warm-start inputs and the pose6d output (False: the older 4-input graph)."""
    S = int(input_size)
    g = torch.Generator().manual_seed(0)
    example: tuple[torch.Tensor, ...] = (
        torch.randint(0, 256, (2, 3, S, S), generator=g, dtype=torch.uint8),  # batch 2: 1 would specialise
        2.5 + 0.3 * torch.rand(2, 1, S, S, generator=g), torch.full((2,), 2.5),
        torch.tensor([[True, True], [True, False]]))
    input_names, output_names = list(INPUT_NAMES), list(OUTPUT_NAMES)
    if warm_start:
        example += tuple(torch.from_numpy(v).repeat(2, 1) for v in mean_init(model).values())
        input_names += list(WARM_START_INPUTS)
        output_names.append(WARM_START_OUTPUT)
    batch = torch.export.Dim("batch", min=1, max=1024)
    graph = (_WarmStartGraph(model) if warm_start else _ExportGraph(model)).cpu()
    was_training = model.training
    graph.eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name: batch will not be used.*")
            program = torch.onnx.export(graph, example, dynamo=True, opset_version=opset, external_data=False,
                                        input_names=input_names, output_names=output_names,
                                        dynamic_shapes=tuple({0: batch} for _ in input_names), verbose=False)
    finally:
        model.train(was_training)
    return program.model_proto


def export_onnx(model: nn.Module, cfg: ModelConfig, body: Any, path: str | Path, variant: str = "fp32", *,
                random_weights: bool = False, training_data: Optional[Mapping[str, Any]] = None,
                calib_frames: Optional[FrameSet] = None, eval_frames: Optional[FrameSet] = None,
                fp32_proto: Any = None, extra_metadata: Optional[Mapping[str, str]] = None,
                warm_start: bool = True) -> ExportResult:
    """Write `model` (built from `cfg` with `body`) as one ONNX file of `variant` to `path`.

    int8 needs `calib_frames` (defaults to 32 pseudo-frames, logged). With `eval_frames` the file is run
    on them before saving and the difference from torch is stored as metadata `accuracy` (JSON).
    `fp32_proto` reuses an earlier `export_fp32_proto` result (it is not modified; its inputs decide
    whether the file has the warm start). warm_start=False: the older graph without warm-start inputs.
    """
    import onnx

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    if int(getattr(model, "input_size", cfg.input_size)) != int(cfg.input_size):
        raise ValueError(f"model input size {model.input_size} differs from cfg.input_size {cfg.input_size}")
    t0 = time.perf_counter()
    path = Path(path)
    base = fp32_proto if fp32_proto is not None else export_fp32_proto(model, cfg.input_size, warm_start=warm_start)
    has_warm = [i.name for i in base.graph.input][len(INPUT_NAMES):] == list(WARM_START_INPUTS)
    warm_mean = mean_init(model) if has_warm else None
    extra = dict(extra_metadata or {})
    if variant == "fp32":
        proto = onnx.ModelProto()
        proto.CopyFrom(base)
    elif variant == "fp16":
        copy = onnx.ModelProto()
        copy.CopyFrom(base)
        proto = to_fp16(copy)
    else:
        if calib_frames is None:
            log.warning("int8 export without calibration frames: using 32 structured pseudo-frames")
            calib_frames = synthetic_frames(cfg.input_size, 32, seed=1, allow_engine=False)
        if calib_frames.size != cfg.input_size:
            raise ValueError(f"calibration frames are {calib_frames.size}px, the model takes {cfg.input_size}px")
        with tempfile.TemporaryDirectory(prefix="fusemesh_int8_") as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save_model(base, str(src))
            to_int8(src, dst, with_mean_init(calib_frames, warm_mean or {}))
            proto = onnx.load(str(dst))
        extra["calibration"] = json.dumps({"frames": len(calib_frames), "source": calib_frames.source,
                                           "method": "static QDQ, MinMax, per-channel s8 weights, u8 activations; "
                                                     "encoders + fusion quantised, regressor and body float"})
    contract = build_contract(cfg, body, variant, random_weights=random_weights, training_data=training_data,
                              extra=extra, warm_start_mean=warm_mean)
    _set_metadata(proto, contract)
    accuracy: dict[str, Any] = {}
    if eval_frames is not None:
        accuracy = compare_with_torch(model, proto.SerializeToString(), eval_frames)
        contract = build_contract(cfg, body, variant, random_weights=random_weights, training_data=training_data,
                                  extra={**extra, "accuracy": json.dumps(accuracy, sort_keys=True)},
                                  commit=contract.git_commit, warm_start_mean=warm_mean)
        _set_metadata(proto, contract)
    _save(proto, path)
    return ExportResult(path=path, variant=variant, size_mb=path.stat().st_size / 1e6,
                        seconds=time.perf_counter() - t0, accuracy=accuracy)


def export_variants(model: nn.Module, cfg: ModelConfig, body: Any, out_dir: str | Path, stem: str,
                    variants: Sequence[str] = VARIANTS, warm_start: bool = True, **kwargs: Any) -> list[ExportResult]:
    """`export_onnx` for each variant from one torch export: files `out_dir/stem.<variant>.onnx`."""
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variant {bad[0]!r}; choose from {VARIANTS}")
    t0 = time.perf_counter()
    base = export_fp32_proto(model, cfg.input_size, warm_start=warm_start)
    first = time.perf_counter() - t0
    results = []
    for i, v in enumerate(variants):
        r = export_onnx(model, cfg, body, Path(out_dir) / f"{stem}.{v}.onnx", v, fp32_proto=base, **kwargs)
        if i == 0:
            r.seconds += first
        results.append(r)
    return results


# ================================================================================= checking
@torch.inference_mode()
def torch_outputs(model: nn.Module, frames: FrameSet, batch: int = 8) -> dict[str, np.ndarray]:
    """The torch model's outputs on `frames` (eval mode, batches of `batch`), keyed by ONNX output name."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {n: [] for n in OUTPUT_NAMES}
    try:
        for i in range(0, len(frames), batch):
            f = frames.feeds(i, i + batch)
            out = model(torch.from_numpy(f["rgb"]), torch.from_numpy(f["depth"]), torch.from_numpy(f["ref_depth"]),
                        torch.from_numpy(f["stream_mask"]))
            for n in OUTPUT_NAMES:
                parts[n].append(out[_OUTPUT_KEYS[n]].cpu().numpy())
    finally:
        model.train(was_training)
    return {n: np.concatenate(v) for n, v in parts.items()}


def _ort_outputs(model_file: str | Path | bytes, frames: FrameSet, batch: int = 8,
                 threads: int = 0) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    src = model_file if isinstance(model_file, bytes) else str(model_file)
    sess = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    warm = [i.name for i in sess.get_inputs()][len(INPUT_NAMES):]
    init: dict[str, np.ndarray] = {}
    if warm:  # a warm-start graph runs from the mean stored in its metadata: the cold start
        init = ModelContract.from_metadata(sess.get_modelmeta().custom_metadata_map).warm_start_mean()
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(0, len(frames), batch):
        feeds = frames.feeds(i, i + batch)
        n_frames = feeds["rgb"].shape[0]
        feeds.update({k: np.repeat(v, n_frames, axis=0) for k, v in init.items() if k not in feeds})
        for n, a in zip(names, sess.run(None, feeds)):
            parts[n].append(a)
    return {n: np.concatenate(v) for n, v in parts.items()}


def compare_with_torch(model: nn.Module, model_file: str | Path | bytes, frames: FrameSet,
                       batch: int = 8) -> dict[str, Any]:
    """Run the ONNX model (CPU) and the torch model on `frames`; differences of the ONNX outputs from torch.

    Returns vertices_max_abs_m, joints_max_abs_m, mpjpe_mm and pa_mpjpe_mm (24 joints, ONNX vs torch, mean
    over frames), and with labelled frames pa_mpjpe_vs_labels_mm {torch, onnx, change}.
    """
    from model.metrics import mpjpe, pa_mpjpe

    ref = torch_outputs(model, frames, batch)
    got = _ort_outputs(model_file, frames, batch)
    t = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in ref.items()}
    o = {k: torch.from_numpy(np.asarray(got[k], np.float32)) for k in OUTPUT_NAMES}
    result: dict[str, Any] = {
        "frames": len(frames), "source": frames.source,
        "vertices_max_abs_m": float((o["vertices"] - t["vertices"]).abs().max()),
        "joints_max_abs_m": float((o["joints"] - t["joints"]).abs().max()),
        "mpjpe_mm": float(mpjpe(o["joints"], t["joints"]).mean()),
        "pa_mpjpe_mm": float(pa_mpjpe(o["joints"], t["joints"]).mean()),
    }
    if frames.joints3d is not None:
        gt = torch.from_numpy(frames.joints3d)
        a, b = float(pa_mpjpe(t["joints"], gt).mean()), float(pa_mpjpe(o["joints"], gt).mean())
        result["pa_mpjpe_vs_labels_mm"] = {"torch": a, "onnx": b, "change": b - a}
    return result


# ==================================================================================== CLI
def _load_model(args: argparse.Namespace) -> tuple[nn.Module, ModelConfig, Any, bool, dict]:
    from model.body import BodyModel
    from model.config import preset
    from model.network import build_fusemesh
    from training.checkpoint import load_checkpoint

    body = BodyModel.from_file(args.body)
    if args.checkpoint is not None:
        model, cfg, meta = load_checkpoint(args.checkpoint, body=body)
        summary = dict(meta.get("train_summary") or {})
        summary.setdefault("checkpoint", Path(args.checkpoint).name)
        return model, cfg, body, False, summary
    cfg = preset(args.preset)
    torch.manual_seed(args.seed)
    return build_fusemesh(cfg, body).eval(), cfg, body, True, {"seed": args.seed}


def _table(results: Sequence[ExportResult]) -> str:
    lines = ["| variant | file | MB | export s | max abs vertices vs torch (m) | MPJPE vs torch (mm) "
             "| PA-MPJPE vs torch (mm) | PA-MPJPE change vs labels (mm) |", "|" + "---|" * 8]
    for r in results:
        a = r.accuracy
        lab = a.get("pa_mpjpe_vs_labels_mm", {}).get("change")
        fmt = (lambda x, f: "n/a" if x is None else format(x, f))
        lines.append(f"| {r.variant} | {r.path.name} | {r.size_mb:.1f} | {r.seconds:.1f} | "
                     f"{fmt(a.get('vertices_max_abs_m'), '.2e')} | {fmt(a.get('mpjpe_mm'), '.3f')} | "
                     f"{fmt(a.get('pa_mpjpe_mm'), '.3f')} | {fmt(lab, '+.3f')} |")
    return "\n".join(lines)


def _existing_files(out_dir: Path, stem: str, variants: Sequence[str]) -> list[Path]:
    """The files an export of `variants` as `out_dir/stem.<variant>.onnx` would replace (with .data sidecars)."""
    paths = [Path(out_dir) / f"{stem}.{v}.onnx" for v in variants]
    return [p for q in paths for p in (q, q.with_name(q.name + ".data")) if p.exists()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    from model.body import DEFAULT_BODY_PATH, BodyModelError
    from model.config import PRESETS
    from training.checkpoint import CheckpointError

    ap = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="training checkpoint (training/checkpoint.py)")
    src.add_argument("--preset", choices=sorted(PRESETS), help="export a preset (needs --random-weights)")
    ap.add_argument("--random-weights", action="store_true", help="untrained weights (tests, benchmarks)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed of the random weights")
    ap.add_argument("--body", type=Path, default=DEFAULT_BODY_PATH, help="body model file (.npz / SMPL .pkl)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--out-dir", type=Path, default=_REPO / "assets" / "models")
    ap.add_argument("--name", default=None, help="file stem (default fusemesh_<preset>[_random])")
    ap.add_argument("--calib-shards", type=Path, default=None, help="training/synth shard folder for int8 "
                    "calibration and the evaluation set")
    ap.add_argument("--calib-frames", type=int, default=32)
    ap.add_argument("--eval-frames", type=int, default=16, help="fixed synthetic set for accuracy (0 = skip)")
    ap.add_argument("--pseudo-frames", action="store_true", help="skip the synth engine; use pseudo-frames")
    ap.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                    help="leave out the IEF warm-start inputs (the older 4-input graph)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing files of the same name in --out-dir")
    args = ap.parse_args(argv)
    if args.preset is not None and not args.random_weights:
        ap.error("--preset exports untrained weights: add --random-weights (or use --checkpoint)")
    if args.checkpoint is not None and args.random_weights:
        ap.error("--random-weights cannot be combined with --checkpoint")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("training", "app"):
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        model, cfg, body, random_w, summary = _load_model(args)
        S = cfg.input_size
        stem = args.name or f"fusemesh_{cfg.name}" + ("_random" if random_w else "")
        existing = [] if args.overwrite else _existing_files(args.out_dir, stem, args.variants)
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            print(f"error: {existing[0]}{more}: already exists (pass --overwrite to replace)", file=sys.stderr)
            return 2
        need_calib = "int8" in args.variants
        use_engine = not args.pseudo_frames
        calib = (synthetic_frames(S, args.calib_frames, shards=args.calib_shards, body=body, seed=1,
                                  allow_engine=use_engine) if need_calib else None)
        evals = (synthetic_frames(S, args.eval_frames, shards=args.calib_shards, body=body, seed=2,
                                  start=args.calib_frames, allow_engine=use_engine) if args.eval_frames > 0 else None)
        results = export_variants(model, cfg, body, args.out_dir, stem, args.variants, random_weights=random_w,
                                  training_data=summary, calib_frames=calib, eval_frames=evals,
                                  warm_start=args.warm_start)
    except (ValueError, BodyModelError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\n{cfg.name} ({S}px), body {body.model_id} ({body.num_vertices} vertices), "
          f"{'RANDOM WEIGHTS' if random_w else 'trained'}; eval set: {evals.source if evals else 'none'}\n")
    print(_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
