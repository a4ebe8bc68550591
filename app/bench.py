"""Per-frame latency of torch eager vs ONNX Runtime fp32 / fp16 / int8 for each preset, side by side.

    python -m app.bench                                      # presets lite + paper, variants fp32 fp16 int8, CPU
    python -m app.bench --presets lite --variants fp32 int8 --runs 50
    python -m app.bench --providers tensorrt cuda cpu        # GPU machine: ORT on the GPU, torch on cuda
    python -m app.bench --replay [--source clip.mkv] [--model M]   # end to end on a recording: app/replay_bench.py

Random weights (seed 0), batch 1, both streams on, the open body model by default. For each preset the
network is exported once per variant into a temporary folder (int8 calibrated on 16 structured
pseudo-frames: speed does not depend on them), then every engine runs the same 8 pseudo-frames:
torch eager = `net(...)` under inference_mode (fp32); ORT = `app.runtime.InferenceSession.run` as the
app calls it (HWC uint8 crop and float depth in, buffer copies and IO binding included). Reported:
p50 / p90 / min of per-frame wall time, throughput (1000 / mean ms: frames per second, one after another)
and the speed-up of p50 over torch eager's. CPU threads: torch.set_num_threads and ORT intra-op threads both = --threads.
Engines are timed round-robin (frame i on every engine, then frame i + 1), so a change in machine load
hits all of them alike; the load average is printed before and after: on a shared 2-core machine other
processes inflate every number (torch eager with 2 threads suffers most), so compare rows of one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

__all__ = ["main", "percentile", "time_interleaved"]


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0..100) with linear interpolation (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def time_interleaved(calls: Sequence[Callable[[int], Any]], runs: int, warmup: int) -> list[list[float]]:
    """Per-call milliseconds of each of `calls`, timed round-robin (frame i: calls[0](i), calls[1](i), ...)
    after `warmup` untimed rounds, so that a change in machine load hits every engine alike."""
    for i in range(warmup):
        for call in calls:
            call(i)
    times: list[list[float]] = [[] for _ in calls]
    for i in range(runs):
        for k, call in enumerate(calls):
            t0 = time.perf_counter()
            call(i)
            times[k].append(1000.0 * (time.perf_counter() - t0))
    return times


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _row(preset: str, engine: str, provider: str, mb: Optional[float], times: list[float],
         torch_p50: Optional[float]) -> dict[str, Any]:
    p50 = statistics.median(times) if times else float("nan")
    return {"preset": preset, "engine": engine, "provider": provider, "mb": mb, "p50": p50,
            "p90": percentile(times, 90) if times else float("nan"), "min": min(times, default=float("nan")),
            "fps": 1000.0 * len(times) / sum(times) if times else float("nan"),
            "speedup": (torch_p50 / p50) if torch_p50 else 1.0, "error": ""}


def _table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| preset | engine | provider | model MB | p50 ms | p90 ms | min ms | fps "
             "| speed-up vs torch eager (p50) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mb = "" if r.get("mb") is None else f"{r['mb']:.1f}"
        if r["error"]:
            lines.append(f"| {r['preset']} | {r['engine']} | {r['provider']} | {mb} | n/a | n/a | n/a | n/a "
                         f"| {r['error']} |")
        else:
            lines.append(f"| {r['preset']} | {r['engine']} | {r['provider']} | {mb} | {r['p50']:.1f} | {r['p90']:.1f} "
                         f"| {r['min']:.1f} | {r['fps']:.1f} | {r['speedup']:.2f}x |")
    return "\n".join(lines)


def bench_preset(name: str, body: Any, variants: Sequence[str], providers: Sequence[str], threads: int,
                 runs: int, warmup: int, torch_device: str, out_dir: Path,
                 note: Callable[[str], None], cuda_graph: bool = False) -> list[dict[str, Any]]:
    """Rows for one preset: torch eager first, then each ORT variant (all timed round-robin); with
    `cuda_graph`, each variant that runs on the CUDA provider once more as a replayed CUDA graph."""
    import torch

    from app.runtime import InferenceSession
    from model.config import preset
    from model.network import build_fusemesh
    from training.export import export_variants
    from training.quantize import pseudo_frames

    cfg = preset(name)
    S = cfg.input_size
    torch.manual_seed(0)
    net = build_fusemesh(cfg, body).eval()
    frames = pseudo_frames(S, 8, seed=3)

    t0 = time.perf_counter()
    calib = pseudo_frames(S, 16, seed=4) if "int8" in variants else None
    results = export_variants(net, cfg, body, out_dir, f"bench_{name}", variants, random_weights=True,
                              calib_frames=calib)
    note(f"{name}: exported {', '.join(variants)} in {time.perf_counter() - t0:.0f} s")

    dev = torch.device(torch_device)
    net_dev = net.to(dev)
    tensors = [tuple(torch.from_numpy(v).to(dev) for v in frames.feeds(i, i + 1).values()) for i in range(len(frames))]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def torch_call(i: int) -> None:
        with torch.inference_mode():
            net_dev(*tensors[i % len(tensors)])
        sync()

    Engine = tuple[str, str, Optional[float], Callable[[int], Any]]  # name, provider, file MB, call(i)
    engines: list[Engine] = [("torch eager fp32", str(dev), None, torch_call)]
    failed: list[dict[str, Any]] = []
    hwc = [np.ascontiguousarray(frames.rgb[i].transpose(1, 2, 0)) for i in range(len(frames))]
    depth = [frames.depth[i, 0] for i in range(len(frames))]
    for r in results:
        for graph in (False, True) if cuda_graph else (False,):
            label = f"ORT {r.variant}" + (" CUDA graph" if graph else "")
            try:
                sess = InferenceSession(r.path, providers=providers, cpu_threads=threads, warmup_runs=3 if graph else 1,
                                        cuda_graph=graph)
            except Exception as e:  # a variant the provider cannot run: show it, keep benchmarking
                row = _row(name, label, "-", r.size_mb, [], None)
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
                failed.append(row)
                continue
            if r is results[0] or graph:
                skipped = "; ".join(f"{k.replace('ExecutionProvider', '')}: {v}" for k, v in sess.skipped.items())
                note(f"{label}: running {sess.provider}; skipped {skipped or 'none'}")
            if graph and not sess.cuda_graph:
                continue  # the note says why; the same session without the graph is already a row

            def ort_call(i: int, sess: InferenceSession = sess) -> None:
                k = i % len(hwc)
                sess.run(hwc[k], depth[k], frames.ref_depth[k], (True, True))

            engines.append((label, sess.provider.replace("ExecutionProvider", ""), r.size_mb, ort_call))

    times = time_interleaved([e[3] for e in engines], runs, warmup)
    torch_p50 = statistics.median(times[0])
    rows = [_row(name, e[0], e[1], e[2], t, torch_p50) for e, t in zip(engines, times)]
    net_dev.to("cpu")
    return rows + failed


def main(argv: Optional[Sequence[str]] = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if "--replay" in args_in:  # the end-to-end benchmark has its own options
        from app.replay_bench import main as replay_main

        return replay_main([a for a in args_in if a != "--replay"])
    ap = argparse.ArgumentParser(prog="python -m app.bench", description=__doc__.splitlines()[0],
                                 epilog="--replay: the end-to-end replay benchmark instead (python -m app.replay_bench "
                                        "--help lists its options)")
    ap.add_argument("--presets", nargs="+", default=["lite", "paper"])
    ap.add_argument("--variants", nargs="+", default=["fp32", "fp16", "int8"], choices=["fp32", "fp16", "int8"])
    ap.add_argument("--providers", nargs="+", default=["cpu"], choices=["tensorrt", "cuda", "cpu"],
                    help="ORT provider preference (default: cpu)")
    ap.add_argument("--torch-device", default="auto", help="auto = cuda when ORT may use a GPU and torch sees one")
    ap.add_argument("--body", type=Path, default=None, help="body model file (default: the open body asset)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for torch and ORT")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--keep", type=Path, default=None, help="keep the exported files in this folder")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="also time each variant replayed as an ORT CUDA graph (CUDA provider only)")
    args = ap.parse_args(args_in)

    import logging

    import onnxruntime
    import torch

    from model.body import DEFAULT_BODY_PATH, BodyModel, BodyModelError
    from model.config import PRESETS

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    bad = [p for p in args.presets if p not in PRESETS]
    if bad:
        print(f"error: unknown preset {bad[0]!r}; presets: {sorted(PRESETS)}", file=sys.stderr)
        return 2
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        print("error: --threads and --runs must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    try:
        body = BodyModel.from_file(args.body or DEFAULT_BODY_PATH).eval()
    except BodyModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch_device = args.torch_device
    if torch_device == "auto":
        gpu_wanted = any(p in ("cuda", "tensorrt") for p in args.providers)
        torch_device = "cuda" if gpu_wanted and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads)

    notes: list[str] = []
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fusemesh_bench_") as tmp:
        out_dir = args.keep or Path(tmp)
        for name in args.presets:
            rows += bench_preset(name, body, args.variants, args.providers, args.threads, args.runs, args.warmup,
                                 torch_device, out_dir, notes.append, cuda_graph=args.cuda_graph)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"\nCPU: {_cpu_name()} ({os.cpu_count()} logical cores); GPU: {gpu}; threads {args.threads}; "
          f"torch {torch.__version__}; onnxruntime {onnxruntime.__version__}")
    print(f"body: {body.model_id} ({body.num_vertices} vertices); batch 1; random weights; {args.runs} timed runs "
          f"after {args.warmup} warm-up; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
          f"total {time.perf_counter() - t0:.0f} s")
    for n in dict.fromkeys(notes):
        print(f"- {n}")
    print()
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
