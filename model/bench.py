"""CPU benchmark per preset: parameters, fp32 weight size, GFLOPs and forward latency (markdown table).

    python -m model.bench                       # all presets, body model from DEFAULT_BODY_PATH
    python -m model.bench --body toy.npz --presets lite --threads 2 --runs 50

Random weights, batch 1, both streams on, eval mode, torch.inference_mode. FLOPs are counted with
torch.utils.flop_counter (convolutions and matrix products; 1 multiply-add = 2 FLOPs) for the whole
forward, SMPL layer included. "weights" counts the network's parameters and its own buffers (BatchNorm
statistics, mean parameters) in fp32, not the body model's buffers (those ship with the body file).
Latency is the median (and the minimum) of `--runs` timed forwards after `--warmup` untimed ones, with
torch.set_num_threads(--threads). Numbers depend on the machine and on its load (on a busy 2-core
machine, 2 torch threads contend badly: the minimum, or --threads 1, is then the steadier number).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from model.config import PRESETS, ModelConfig, preset
from model.network import FuseMesh, build_fusemesh


def example_inputs(size: int, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random raw inputs: rgb (B, 3, S, S) uint8, depth (B, 1, S, S) metres around 2.5 m, ref (B,) metres."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8)
    depth = 2.5 + 0.3 * torch.rand(batch, 1, size, size, generator=g)
    return rgb, depth, torch.full((batch,), 2.5)


def weight_stats(net: FuseMesh) -> tuple[int, float]:
    """(parameter count, fp32 megabytes of parameters + own buffers, body model excluded)."""
    params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("body."))
    buffers = sum(b.numel() for n, b in net.named_buffers() if not n.startswith("body.") and b.is_floating_point())
    return params, 4 * (params + buffers) / 1e6


def count_gflops(net: FuseMesh, inputs: tuple[torch.Tensor, ...]) -> float:
    """Forward GFLOPs for `inputs` (torch.utils.flop_counter)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(*inputs)
    return counter.get_total_flops() / 1e9


def latency_ms(net: FuseMesh, inputs: tuple[torch.Tensor, ...], runs: int, warmup: int) -> list[float]:
    """Wall-clock milliseconds of `runs` forwards after `warmup` untimed ones."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            net(*inputs)
            if i >= warmup:
                times.append(1000.0 * (time.perf_counter() - t0))
    return times


def bench_preset(cfg: ModelConfig, body: torch.nn.Module, runs: int, warmup: int) -> dict[str, float | str]:
    """One table row for `cfg`."""
    net = build_fusemesh(cfg, body).eval()
    inputs = example_inputs(cfg.input_size)
    params, mb = weight_stats(net)
    times = latency_ms(net, inputs, runs, warmup)
    p50 = statistics.median(times)
    return {"preset": cfg.name, "input": f"{cfg.input_size}²",
            "encoders": f"{cfg.rgb_encoder.arch}/{cfg.rgb_encoder.width} + {cfg.depth_encoder.arch}/{cfg.depth_encoder.width}",
            "fusion": "/".join(map(str, cfg.fusion.hidden)), "params_m": params / 1e6, "weights_mb": mb,
            "gflops": count_gflops(net, inputs), "p50_ms": p50, "min_ms": min(times), "fps": 1000.0 / p50}


def markdown_table(rows: Sequence[dict[str, float | str]]) -> str:
    head = ("| preset | input | encoders (RGB + depth, arch/width) | fusion | params (M) | weights fp32 (MB) "
            "| GFLOPs | CPU p50 (ms) | CPU min (ms) | fps at p50 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['input']} | {r['encoders']} | {r['fusion']} | {r['params_m']:.2f} | "
                     f"{r['weights_mb']:.1f} | {r['gflops']:.2f} | {r['p50_ms']:.1f} | {r['min_ms']:.1f} | {r['fps']:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from model.body import DEFAULT_BODY_PATH, BodyModel, BodyModelError

    ap = argparse.ArgumentParser(prog="python -m model.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=sorted(PRESETS), help="presets to measure")
    ap.add_argument("--body", type=Path, default=DEFAULT_BODY_PATH, help="body model file (.npz / SMPL .pkl)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args(argv)
    try:
        cfgs = [preset(p) for p in args.presets]
        body = BodyModel.from_file(args.body).eval()
    except (ValueError, BodyModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows = [bench_preset(cfg, body, args.runs, args.warmup) for cfg in cfgs]
    print(f"body: {args.body.name} ({body.num_vertices} vertices); batch 1; {args.threads} threads; "
          f"torch {torch.__version__}; {args.runs} runs\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
