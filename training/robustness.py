"""The paper's Fig. 4: test-time p_miss of RGB x p_miss of depth -> error, fusion vs concat, as a PNG.

    python -m training.robustness --fusion runs/fusion/last.pt --concat runs/concat/last.pt \\
        --test CAD=data/test:kinect_v1_like:0:0.5 --out docs/robustness.png
    python -m training.robustness --fusion assets/models/fusion.fp32.onnx --concat runs/concat/last.pt ...

Models: training checkpoints (torch) or exported .onnx files (training.export; run by app.runtime's
InferenceSession on the CPU with `allow_no_streams=True`, since the "none" state below feeds a frame with
both streams off, which the app itself refuses).

At test time each sample's RGB input is dropped with probability p_rgb and, independently, its depth
input with p_depth (both may be dropped: an all-zero input). The heatmap cell is the mean PA-MPJPE (mm)
over the test set. Instead of sampling masks, each sample is run once in each of the 4 stream states
(both, RGB only, depth only, none) and the cell holds the exact expectation

    E[err] = (1-p_r)(1-p_d) e_both + (1-p_r) p_d e_rgb + p_r (1-p_d) e_depth + p_r p_d e_none,

what the paper's random dropping converges to, without Monte Carlo noise. Panels: (a) the concat
baseline (HMR_RGBD), (b) the dynamic fusion model, (c) the gain (a) - (b) (positive = fusion better).
A JSON file with the grids is written beside the PNG.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

STATES = ((True, True), (True, False), (False, True), (False, False))  # both, RGB only, depth only, none


class OnnxStatePredictor:
    """An exported .onnx file through app.runtime.InferenceSession (CPU) that also runs the "none" state
    (both streams off). Same call as training.evaluate's predictors: (rgb u8 (B,3,S,S), depth m
    (B,1,S,S), ref (B,), mask (B,2) bool) -> (joints (B,24,3), lsp_joints (B,14,3)) float64 metres."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from app.runtime import InferenceSession

        self.session = InferenceSession(path, providers=("cpu",), cpu_threads=threads, warmup_runs=0,
                                        allow_no_streams=True)
        self.input_size = int(self.session.input_size)

    def __call__(self, rgb: np.ndarray, depth: np.ndarray, ref: np.ndarray, mask: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        out = self.session.run(rgb, depth.astype(np.float32), ref.astype(np.float32), mask.astype(bool))
        return out["joints"].astype(np.float64), out["lsp_joints"].astype(np.float64)


def load_model(path: str | Path, body: Any = None) -> Any:
    """A predictor for every stream state: OnnxStatePredictor for an .onnx file, else training.evaluate's
    torch predictor for a checkpoint."""
    if Path(path).suffix.lower() == ".onnx":
        return OnnxStatePredictor(path)
    from training.evaluate import load_predictor

    return load_predictor(path, body=body)


def state_errors(predict: Any, test: Any, batch: int = 64) -> np.ndarray:
    """(N, 4) PA-MPJPE mm of every test sample in the 4 STATES (training.evaluate predictor and TestSet)."""
    from training.evaluate import per_sample_errors

    return np.stack([per_sample_errors(predict, test, s, batch) for s in STATES], axis=1)


def expected_grid(errors: np.ndarray, p_rgb: Sequence[float], p_depth: Sequence[float]) -> np.ndarray:
    """(len(p_rgb), len(p_depth)) mean expected error for per-sample state errors (N, 4) (module docstring)."""
    e = np.asarray(errors, dtype=np.float64).mean(axis=0)  # the expectation is linear: average first
    pr = np.asarray(p_rgb, dtype=np.float64)[:, None]
    pd = np.asarray(p_depth, dtype=np.float64)[None, :]
    if np.any((pr < 0) | (pr > 1)) or np.any((pd < 0) | (pd > 1)):
        raise ValueError("probabilities must be in [0, 1]")
    return ((1 - pr) * (1 - pd) * e[0] + (1 - pr) * pd * e[1] + pr * (1 - pd) * e[2] + pr * pd * e[3])


def plot_heatmaps(grids: dict[str, np.ndarray], p_rgb: Sequence[float], p_depth: Sequence[float], out: str | Path,
                  title: str = "") -> Path:
    """Three panels (concat, fusion, gain = concat - fusion) with cell values, saved as a PNG; one panel
    (the fusion model's) when `grids` has no "concat"."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if "concat" in grids:
        panels = [("(a) HMR$_{RGBD}$ (concat)", grids["concat"], "viridis"),
                  ("(b) Fusion (ours)", grids["fusion"], "viridis"),
                  ("(c) gain (a) $-$ (b)", grids["concat"] - grids["fusion"], "RdBu")]
    else:
        panels = [("Fusion", grids["fusion"], "viridis")]
    vmin = min(float(g.min()) for k, g in grids.items())
    vmax = max(float(g.max()) for k, g in grids.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    axes = axes[0]
    for ax, (name, grid, cmap) in zip(axes, panels):
        if cmap == "RdBu":
            lim = max(1e-6, float(np.abs(grid).max()))
            im = ax.imshow(grid, cmap=cmap, vmin=-lim, vmax=lim, origin="lower")
        else:
            im = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if cmap != "RdBu" else "black")
        ax.set_xticks(range(len(p_depth)), [f"{p:.1f}" for p in p_depth])
        ax.set_yticks(range(len(p_rgb)), [f"{p:.1f}" for p in p_rgb])
        ax.set_xlabel("p_miss of depth (test)")
        ax.set_ylabel("p_miss of RGB (test)")
        ax.set_title(name)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="PA-MPJPE (mm)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def robustness(fusion: Any, concat: Any, test: Any, out: str | Path, steps: int = 6, batch: int = 64,
               title: str = "") -> dict[str, Any]:
    """Predictors (training.evaluate) for both models (concat may be None: the fusion model alone) + a
    TestSet -> PNG and JSON; returns the grids."""
    p = np.linspace(0.0, 1.0, steps)
    errs = {"fusion": state_errors(fusion, test, batch)}
    if concat is not None:
        errs["concat"] = state_errors(concat, test, batch)
    grids = {k: expected_grid(v, p, p) for k, v in errs.items()}
    png = plot_heatmaps(grids, p, p, out, title or f"Error under missing streams on {test.name}")
    result = {"p": p.tolist(), "test": test.name, "n": int(errs["fusion"].shape[0]),
              "state_means_mm": {k: dict(zip(("both", "rgb_only", "depth_only", "none"), v.mean(0).round(3).tolist()))
                                 for k, v in errs.items()},
              "grids_mm": {k: np.round(v, 3).tolist() for k, v in grids.items()}, "png": str(png)}
    Path(png).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.robustness", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fusion", required=True, help="checkpoint or exported .onnx of the dynamic fusion model")
    p.add_argument("--concat", default=None,
                   help="checkpoint or exported .onnx of the concat baseline (HMR_RGBD); without it, one panel")
    p.add_argument("--test", required=True, help="NAME=FOLDER[:LABELS[:START:STOP]] (see training.evaluate)")
    p.add_argument("--out", default="robustness.png", help="PNG path (a .json with the numbers goes beside it)")
    p.add_argument("--steps", type=int, default=6, help="grid points per axis from 0 to 1 (default 6: step 0.2)")
    p.add_argument("--body", default=None)
    p.add_argument("--batch", type=int, default=64)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from app.runtime import ModelFileError
    from training.evaluate import make_test_set, parse_test_spec

    args = build_parser().parse_args(argv)
    try:
        if args.steps < 2:
            raise ValueError("--steps must be >= 2")
        fusion = load_model(args.fusion, body=args.body)
        concat = load_model(args.concat, body=args.body) if args.concat else None
        name, folder, labels, select = parse_test_spec(args.test)
        test = make_test_set(name, folder, labels, select, input_size=fusion.input_size)
        res = robustness(fusion, concat, test, args.out, args.steps, args.batch)
    except (ValueError, FileNotFoundError, ModelFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {res['png']} ({res['n']} samples); mean error per stream state (mm):")
    for k, v in res["state_means_mm"].items():
        print(f"  {k:7s} " + ", ".join(f"{s} {x:.1f}" for s, x in v.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
