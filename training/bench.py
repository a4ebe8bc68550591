"""Training throughput per preset (samples/s of full training steps), printed as a markdown table.

    python -m training.bench                                   # presets lite and paper, CPU (+ CUDA if present)
    python -m training.bench --presets lite --batch 32 --steps 10 --threads 2 --devices cpu

A step is `training.loop.Trainer.step`: forward, eq. (6) losses (L2d, Lsmpl, Ldrc, Ladv), backward, Adam,
and the discriminator step, with the dynamic fusion policy and a 50/50 RGB-D / RGB-only batch. Batches
are random tensors already in memory (data loading is not timed: shards are read from RAM by
training/data.py). AMP follows run.amp='auto' (bf16 on CUDA, off on CPU). The body model is the default
asset unless `--body` is given (its vertex count matters: LBS runs every step). Reported: median and
best samples/s over `--steps` timed steps after `--warmup` untimed ones. On a busy 2-core machine,
torch's 2 threads can be slower than 1: try `--threads 1`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Sequence

import torch

from model.camera import axis_angle_to_matrix


def random_batch(batch: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch in training.data.collate's layout with random content; the second half is RGB-only."""
    g = torch.Generator().manual_seed(seed)
    has_depth = torch.arange(batch) < batch - batch // 2
    depth = (2.5 + 0.3 * torch.rand(batch, 1, size, size, generator=g)) * has_depth[:, None, None, None]
    return {
        "rgb": torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8),
        "depth": depth.float(), "ref_depth": 2.5 * has_depth.float(), "has_depth": has_depth,
        "kp2d": torch.rand(batch, 14, 2, generator=g) * 1.6 - 0.8, "vis2d": torch.ones(batch, 14, dtype=torch.bool),
        "smpl_rotmat": axis_angle_to_matrix(0.3 * torch.randn(batch, 24, 3, generator=g)),
        "smpl_betas": torch.randn(batch, 10, generator=g), "has_smpl": torch.ones(batch, dtype=torch.bool),
        "has_global": torch.ones(batch, dtype=torch.bool),
        "skel24": torch.randn(batch, 24, 3, generator=g) * 0.3, "skel24_mask": torch.ones(batch, 24, dtype=torch.bool),
        "has_skel": torch.zeros(batch, dtype=torch.bool), "canon": torch.zeros(batch, 15, 3),
        "has_canon": torch.zeros(batch, dtype=torch.bool), "lsp3d": torch.zeros(batch, 14, 3),
        "joints3d": torch.zeros(batch, 24, 3), "source": torch.zeros(batch, dtype=torch.int64),
        "index": torch.arange(batch),
    }


def bench_preset(preset: str, batch: int, steps: int, warmup: int, device: str, body: torch.nn.Module,
                 input_size: int | None = None, contiguous: bool = False) -> dict[str, float]:
    """Time `steps` Trainer steps of `preset` on `device`; returns samples/s (median, best) and step ms.
    contiguous=True: the Trainer without its CPU default of channels-last tensors (for the comparison)."""
    from training.config import train_config_from_dict
    from training.loop import Trainer

    model = {"preset": preset}
    if input_size:
        model["input_size"] = input_size
    cfg = train_config_from_dict({"model": model, "data": {"batch_size": batch, "prior_size": 1024},
                                  "run": {"steps": warmup + steps, "device": device}})
    torch.manual_seed(0)
    trainer = Trainer(cfg, body.to(device), torch.device(device), channels_last=False if contiguous else None)
    b = random_batch(batch, cfg.model.input_size)
    times = []
    for i in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.step(b, i)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"samples_per_s": batch / med, "best_samples_per_s": batch / min(times), "step_ms": 1000 * med,
            "input_size": cfg.model.input_size, "amp": str(trainer.amp_dtype).replace("torch.", ""),
            "memory": "channels-last" if trainer.channels_last else "contiguous"}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["lite", "paper"])
    p.add_argument("--batch", type=int, default=0, help="batch size (default: 32 lite / 8 paper on CPU; 40 on CUDA)")
    p.add_argument("--input-size", type=int, default=0, help="override the preset's crop size")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if present)")
    p.add_argument("--body", default=None, help="body model file (default: the open body asset)")
    p.add_argument("--compare-memory-format", action="store_true",
                   help="CPU: also time each preset with contiguous (NCHW) tensors and print the ratio")
    args = p.parse_args(argv)
    from model.body import DEFAULT_BODY_PATH, BodyModel

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        print("error: --devices cuda but no CUDA device is available", file=sys.stderr)
        return 2
    body = BodyModel.from_file(args.body or DEFAULT_BODY_PATH)
    print(f"body {body.model_id} ({body.num_vertices} vertices), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name(0)}" if "cuda" in devices else ""))
    print("| preset | device | input | batch | AMP | memory | step (ms) | samples/s (median) | samples/s (best) |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for dev in devices:
        for preset in args.presets:
            batch = args.batch or (40 if dev == "cuda" else 32 if preset == "lite" else 8)
            runs = [False, True] if args.compare_memory_format and dev == "cpu" else [False]
            rates = []
            for contiguous in runs:
                r = bench_preset(preset, batch, args.steps, args.warmup, dev, body, args.input_size or None, contiguous)
                rates.append(r["samples_per_s"])
                print(f"| {preset} | {dev} | {r['input_size']} | {batch} | {r['amp']} | {r['memory']} | "
                      f"{r['step_ms']:.0f} | {r['samples_per_s']:.1f} | {r['best_samples_per_s']:.1f} |", flush=True)
            if len(rates) == 2:
                ratios.append(f"{preset}: channels-last / contiguous = {rates[0] / rates[1]:.2f}x")
    for line in ratios:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
