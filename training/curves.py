"""Plot a training run's loss terms from its `scalars.csv`: `python -m training.curves runs/lite --out curves.png`.

One panel per scalar (raw values, thin, and a moving average over `--smooth` logged points), x = step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from training.train import read_scalars_csv

DEFAULT_SCALARS = ("loss", "loss_2d", "loss_smpl", "loss_drc", "loss_adv", "disc")


def plot_curves(run_dir: str | Path, out: str | Path, names: Sequence[str] = DEFAULT_SCALARS, smooth: int = 10,
                title: str = "") -> Path:
    """Write the PNG `out` for the scalars `names` found in `run_dir/scalars.csv`; returns its path.
    Raises FileNotFoundError without a scalars.csv and ValueError when none of `names` was logged."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    csv_path = Path(run_dir) / "scalars.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no scalars.csv (is {run_dir} a training.train out_dir?)")
    series = {n: read_scalars_csv(csv_path, n) for n in names}
    series = {n: s for n, s in series.items() if s}
    if not series:
        raise ValueError(f"{csv_path}: none of {', '.join(names)} was logged")
    cols = min(3, len(series))
    rows = int(np.ceil(len(series) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, s) in zip(axes.ravel(), series.items()):
        steps = np.array(sorted(s))
        values = np.array([s[k] for k in steps])
        ax.plot(steps, values, lw=0.6, alpha=0.4, color="tab:blue")
        if smooth > 1 and len(values) >= smooth:
            kernel = np.ones(smooth) / smooth
            ax.plot(steps[smooth - 1:], np.convolve(values, kernel, mode="valid"), lw=1.6, color="tab:blue")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(series):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.curves", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a training.train out_dir (holds scalars.csv)")
    p.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/curves.png)")
    p.add_argument("--names", nargs="+", default=list(DEFAULT_SCALARS), help="scalars to plot")
    p.add_argument("--smooth", type=int, default=10, help="moving-average window in logged points")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    try:
        out = plot_curves(args.run_dir, args.out or Path(args.run_dir) / "curves.png", args.names, args.smooth,
                          args.title)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
