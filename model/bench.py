"""Benchmark per preset: parameters, fp32 weight size, GFLOPs and forward latency (markdown table).

    python -m model.bench                       # all presets on the CPU, body model from DEFAULT_BODY_PATH
    python -m model.bench --body toy.npz --presets lite --threads 2 --runs 50
    python -m model.bench --device cuda --dtype fp16 --batch 1 8   # GPU, autocast fp16, two batch sizes
    python -m model.bench --device cuda --cuda-graphs              # + each row replayed as a CUDA graph

Random weights, both streams on, eval mode, torch.inference_mode; batch 1 unless --batch. On CUDA each timed
forward is bracketed by torch.cuda.synchronize (wall clock of the whole forward, kernel launches included);
--dtype fp16/bf16 runs the forward under torch.autocast (weights stay fp32, as in training). FLOPs are counted with
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


DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def latency_ms(net: FuseMesh, inputs: tuple[torch.Tensor, ...], runs: int, warmup: int,
               autocast: torch.dtype | None = None, cuda_graph: bool = False) -> list[float]:
    """Wall-clock milliseconds of `runs` forwards after `warmup` untimed ones (on CUDA: synchronised, so
    each number covers the forward's kernels, not just their launch). `autocast`: None (fp32) or a dtype.
    cuda_graph: capture one forward as a CUDA graph after the warm-up and time its replays (the inputs
    are the graph's static buffers): what a serving loop pays once Python's kernel launches are gone."""
    device = inputs[0].device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast or torch.float32,
                                                enabled=autocast is not None):
        forward = lambda: net(*inputs)  # noqa: E731
        if cuda_graph:
            if device.type != "cuda":
                raise ValueError("cuda_graph needs CUDA inputs")
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(max(3, warmup)):
                    net(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                net(*inputs)
            forward, warmup = graph.replay, 3
        for i in range(warmup + runs):
            sync()
            t0 = time.perf_counter()
            forward()
            sync()
            if i >= warmup:
                times.append(1000.0 * (time.perf_counter() - t0))
    return times


def bench_preset(cfg: ModelConfig, body: torch.nn.Module, runs: int, warmup: int, device: str = "cpu",
                 dtype: str = "fp32", batch: int = 1, cuda_graph: bool = False) -> dict[str, float | str]:
    """One table row for `cfg` on `device` ('cpu' / 'cuda'), `dtype` (DTYPES key), `batch` frames per forward,
    eager or replayed as a CUDA graph."""
    net = build_fusemesh(cfg, body).eval().to(device)  # moves the shared `body` too: keep everything on `device`
    inputs = tuple(t.to(device) for t in example_inputs(cfg.input_size, batch))
    params, mb = weight_stats(net)
    gflops = count_gflops(net, inputs) / batch
    times = latency_ms(net, inputs, runs, warmup, DTYPES[dtype], cuda_graph)
    p50 = statistics.median(times)
    return {"preset": cfg.name, "input": f"{cfg.input_size}²", "device": device + (" graph" if cuda_graph else ""),
            "dtype": dtype, "batch": batch,
            "encoders": f"{cfg.rgb_encoder.arch}/{cfg.rgb_encoder.width} + {cfg.depth_encoder.arch}/{cfg.depth_encoder.width}",
            "fusion": "/".join(map(str, cfg.fusion.hidden)), "params_m": params / 1e6, "weights_mb": mb,
            "gflops": gflops, "p50_ms": p50, "min_ms": min(times), "fps": 1000.0 * batch / p50}


def markdown_table(rows: Sequence[dict[str, float | str]]) -> str:
    """Rows of `bench_preset` as a markdown table (GFLOPs per frame; p50/min per forward of `batch` frames)."""
    head = ("| preset | input | encoders (RGB + depth, arch/width) | fusion | params (M) | weights fp32 (MB) "
            "| GFLOPs | device | dtype | batch | p50 (ms) | min (ms) | frames/s at p50 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['input']} | {r['encoders']} | {r['fusion']} | {r['params_m']:.2f} | "
                     f"{r['weights_mb']:.1f} | {r['gflops']:.2f} | {r['device']} | {r['dtype']} | {r['batch']} | "
                     f"{r['p50_ms']:.2f} | {r['min_ms']:.2f} | {r['fps']:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from model.body import DEFAULT_BODY_PATH, BodyModel, BodyModelError

    ap = argparse.ArgumentParser(prog="python -m model.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=sorted(PRESETS), help="presets to measure")
    ap.add_argument("--body", type=Path, default=DEFAULT_BODY_PATH, help="body model file (.npz / SMPL .pkl)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["fp32"],
                    help="fp32, or autocast fp16 / bf16 (several: one row each)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1], help="frames per forward (several: one row each)")
    ap.add_argument("--cuda-graphs", action="store_true", help="on CUDA, also time each row replayed as a CUDA graph")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.device == "cpu" and any(d == "fp16" for d in args.dtype):
        print("error: fp16 autocast is a CUDA mode; on the CPU use fp32 or bf16", file=sys.stderr)
        return 2
    if args.cuda_graphs and args.device != "cuda":
        print("error: --cuda-graphs needs --device cuda", file=sys.stderr)
        return 2
    try:
        cfgs = [preset(p) for p in args.presets]
        body = BodyModel.from_file(args.body).eval()
    except (ValueError, BodyModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    graphs = (False, True) if args.cuda_graphs else (False,)
    rows = []
    for cfg in cfgs:
        for dt in args.dtype:
            for b in args.batch:
                for g in graphs:
                    try:
                        rows.append(bench_preset(cfg, body, args.runs, args.warmup, args.device, dt, b, g))
                    except RuntimeError as e:  # e.g. an op that cannot be captured in a CUDA graph
                        print(f"{cfg.name} {dt} batch {b}{' graph' if g else ''}: failed: {e}".splitlines()[0],
                              file=sys.stderr)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.threads} CPU threads"
    print(f"body: {args.body.name} ({body.num_vertices} vertices); {where}; torch {torch.__version__}; "
          f"{args.runs} runs after {args.warmup} warm-up\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
