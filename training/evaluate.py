"""Reconstruction error (PA-MPJPE, mm) per input mode, printed in the layout of the paper's Tables 1-4.

    python -m training.evaluate --checkpoint runs/fusion/last.pt --test PKU=data/test:kinect_v2_like:0.5:1
    python -m training.evaluate --checkpoint a.pt --checkpoint b.pt --label HMR_RGBD --label Fusion \\
        --test PKU=data/test:kinect_v2_like:0.5:1 --test CAD=data/test:kinect_v1_like:0:0.5
    python -m training.evaluate --onnx assets/models/fusemesh_lite.fp32.onnx --test SYN=data/test

Models: `--checkpoint` (training/checkpoint.py files, e.g. a run's last.pt) or `--onnx` (files from
training.export, run through app/runtime.py's InferenceSession on the CPU). Each model is a column.

Test sets (`--test NAME=FOLDER[:LABELS[:START:STOP]]`): a synthetic shard folder, optionally a sample
range, and the ground truth to score against:
- LABELS = smpl (default): the true LSP-14 joints of the rendered body;
- LABELS = kinect_v1_like / kinect_v2_like: that view's skeleton (training/data.py), scored on the 15
  canonical joints (the predicted SMPL joints' canonical subset), i.e. against the dataset's own
  annotation with its conventions, as the paper scores PKU-MMD / CAD-60;
- LABELS = skeleton: a real dataset converted by `python -m training.datasets.convert` (CAD-60), scored
  the same way against the skeleton it stores.
PA-MPJPE aligns each prediction to its target by a similarity transform (model/metrics.py), so the
target's frame and units do not matter.

Modes (rows): RGB = stream_mask [1, 0] (the depth stream's input is zero), D = [0, 1], RGB-D = [1, 1]
(`--modes rgb,depth,rgbd`; a model may be restricted with `--label NAME:rgb` for the single-stream
baselines, whose other rows print '-'). One test set gives the layout of Tables 1-2 (rows = modes);
several give that of Tables 3-4 (rows = "mode (set)").
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from model.metrics import pa_mpjpe
from model.uscg import CANONICAL_SMPL_INDEX

MODES: dict[str, tuple[bool, bool]] = {"rgb": (True, False), "depth": (False, True), "rgbd": (True, True)}
MODE_NAMES = {"rgb": "RGB", "depth": "D", "rgbd": "RGB-D"}

Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


# ------------------------------------------------------------------------------------ predictors
class TorchPredictor:
    """A FuseMesh in eval mode: (rgb u8 (B,3,S,S), depth m (B,1,S,S), ref (B,), mask (B,2) bool) ->
    (joints (B,24,3), lsp_joints (B,14,3)) float64 metres."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu") -> None:
        self.model, self.device = model.eval(), torch.device(device)
        self.input_size = int(model.input_size)

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray, depth: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = lambda x: torch.as_tensor(np.ascontiguousarray(x)).to(self.device)  # noqa: E731
        out = self.model(t(rgb), t(depth).float(), t(ref).float(), stream_mask=t(mask))
        return out["joints"].double().cpu().numpy(), out["lsp_joints"].double().cpu().numpy()


class OnnxPredictor:
    """An exported ONNX file through app.runtime.InferenceSession (CPU), same call as TorchPredictor."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from app.runtime import InferenceSession

        self.session = InferenceSession(path, providers=("cpu",), cpu_threads=threads, warmup_runs=0)
        self.input_size = int(self.session.input_size)

    def __call__(self, rgb: np.ndarray, depth: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.session.run(rgb, depth.astype(np.float32), ref.astype(np.float32), mask.astype(bool))
        return out["joints"].astype(np.float64), out["lsp_joints"].astype(np.float64)


def load_predictor(checkpoint: str | Path | None = None, onnx: str | Path | None = None, body: Any = None,
                   device: str = "cpu") -> Any:
    """TorchPredictor for a training/checkpoint.py file, or OnnxPredictor for an .onnx file."""
    if onnx is not None:
        return OnnxPredictor(onnx)
    from training.checkpoint import load_checkpoint

    if isinstance(body, (str, Path)):
        from model.body import BodyModel

        body = BodyModel.from_file(body)
    model, _, _ = load_checkpoint(checkpoint, body=body)
    return TorchPredictor(model.to(device), device)


# ------------------------------------------------------------------------------------ test sets
@dataclass
class TestSet:
    """A named evaluation set: a TrainingData with one source and no augmentation."""

    name: str
    data: Any  # training.data.TrainingData
    target: str  # 'lsp' or 'skeleton'


def parse_test_spec(spec: str) -> tuple[str, str, str, tuple[float, float]]:
    """'NAME=FOLDER[:LABELS[:START:STOP]]' -> (name, folder, labels, (start, stop))."""
    if "=" not in spec:
        raise ValueError(f"--test {spec!r}: expected NAME=FOLDER[:LABELS[:START:STOP]]")
    name, rest = spec.split("=", 1)
    parts = rest.split(":")
    folder, labels = parts[0], parts[1] if len(parts) > 1 and parts[1] else "smpl"
    select = (0.0, 1.0)
    if len(parts) == 4:
        select = (float(parts[2]), float(parts[3]))
    elif len(parts) not in (1, 2):
        raise ValueError(f"--test {spec!r}: expected NAME=FOLDER[:LABELS[:START:STOP]]")
    return name, folder, labels, select


def make_test_set(name: str, folder: str | Path, labels: str = "smpl", select: Sequence[float] = (0.0, 1.0),
                  input_size: int = 128) -> TestSet:
    from training.config import SourceConfig
    from training.data import SKELETON_LABELS, SKELETON_VIEWS, TrainingData, load_source

    if labels not in ("smpl", *SKELETON_LABELS):
        raise ValueError(f"test set {name}: labels must be 'smpl', 'skeleton' (a converted real dataset) or one "
                         f"of {sorted(SKELETON_VIEWS)}, got {labels!r}")
    src = load_source(SourceConfig(path=str(folder), kind="rgbd", labels=labels, select=tuple(select)), name=name)
    return TestSet(name, TrainingData([src], input_size), "skeleton" if labels in SKELETON_LABELS else "lsp")


# ------------------------------------------------------------------------------------ scoring
def per_sample_errors(predict: Predictor, test: TestSet, mask: Sequence[bool], batch: int = 64) -> np.ndarray:
    """(N,) PA-MPJPE in mm of every sample of `test` with both streams set by `mask` = (rgb_on, depth_on)."""
    from training.data import collate

    errs = []
    n = len(test.data)
    m = np.asarray(mask, dtype=bool)
    for s in range(0, n, batch):
        b = collate([test.data[i] for i in range(s, min(n, s + batch))])
        k = b["rgb"].shape[0]
        joints, lsp = predict(b["rgb"].numpy(), b["depth"].numpy(), b["ref_depth"].numpy(), np.tile(m, (k, 1)))
        if test.target == "lsp":
            pred, gt = lsp, b["lsp3d"].double().numpy()
        else:
            pred, gt = joints[:, list(CANONICAL_SMPL_INDEX)], b["canon"].double().numpy()
        errs.append(pa_mpjpe(torch.as_tensor(pred), torch.as_tensor(gt)).numpy())
    return np.concatenate(errs)


def evaluate(predict: Predictor, tests: Sequence[TestSet], modes: Sequence[str] = ("rgb", "depth", "rgbd"),
             batch: int = 64) -> dict[tuple[str, str], float]:
    """{(test name, mode): mean PA-MPJPE mm}."""
    out = {}
    for t in tests:
        for mode in modes:
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
            out[(t.name, mode)] = float(per_sample_errors(predict, t, MODES[mode], batch).mean())
    return out


def format_table(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[float | None]]], title: str = "",
                 decimals: int = 2) -> str:
    """A plain-text table like the paper's: first column the row label, '-' for a missing value."""
    head = ["Input", *columns]
    body = [[label, *("-" if v is None or not np.isfinite(v) else f"{v:.{decimals}f}" for v in vals)]
            for label, vals in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))  # noqa: E731
    out = [title] if title else []
    out += [line(head), "  ".join("-" * w for w in widths), *[line(r) for r in body]]
    return "\n".join(out)


def results_table(results: Sequence[dict[tuple[str, str], float]], labels: Sequence[str], tests: Sequence[str],
                  modes: Sequence[str] = ("rgb", "depth", "rgbd"), title: str = "") -> str:
    """Table 1/2 layout for one test set (rows = modes), Table 3/4 layout for several ("RGB (PKU)")."""
    rows = []
    for t in tests:
        for m in modes:
            label = MODE_NAMES[m] if len(tests) == 1 else f"{MODE_NAMES[m]} ({t})"
            rows.append((label, [r.get((t, m)) for r in results]))
    return format_table(labels, rows, title)


# ------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--checkpoint", action="append", default=[], help="training/checkpoint.py file (repeatable)")
    p.add_argument("--onnx", action="append", default=[], help="exported .onnx file (repeatable)")
    p.add_argument("--label", action="append", default=[],
                   help="column name per model, in order (checkpoints first); NAME:rgb,depth limits its modes")
    p.add_argument("--test", action="append", required=True, help="NAME=FOLDER[:LABELS[:START:STOP]] (repeatable)")
    p.add_argument("--modes", default="rgb,depth,rgbd", help="rows, comma-separated (rgb, depth, rgbd)")
    p.add_argument("--body", default=None, help="body model for checkpoints (default: the open body asset)")
    p.add_argument("--title", default="Reconstruction errors (PA-MPJPE, mm). Lower is better.")
    p.add_argument("--batch", type=int, default=64)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        paths = [("checkpoint", c) for c in args.checkpoint] + [("onnx", o) for o in args.onnx]
        if not paths:
            raise ValueError("give at least one --checkpoint or --onnx")
        if args.label and len(args.label) != len(paths):
            raise ValueError(f"{len(args.label)} --label for {len(paths)} models")
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ValueError(f"unknown mode {bad[0]!r} in --modes; expected {sorted(MODES)}")
        predictors, labels, model_modes = [], [], []
        for i, (kind, path) in enumerate(paths):
            pred = load_predictor(**{kind: path}, body=args.body)
            predictors.append(pred)
            label = args.label[i] if args.label else Path(path).parent.name or Path(path).stem
            name, _, only = label.partition(":")
            labels.append(name)
            model_modes.append([m for m in modes if not only or m in only.split(",")])
        sizes = {p.input_size for p in predictors}
        if len(sizes) != 1:
            raise ValueError(f"models take different input sizes {sorted(sizes)}; evaluate them separately")
        size = next(iter(sizes))
        tests = []
        for spec in args.test:
            name, folder, lab, select = parse_test_spec(spec)
            tests.append(make_test_set(name, folder, lab, select, input_size=size))
        results = [evaluate(p, tests, mm, args.batch) for p, mm in zip(predictors, model_modes)]
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(results_table(results, labels, [t.name for t in tests], modes, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
