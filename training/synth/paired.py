"""CPU per sample of this checkout against another one, on the same samples, in turns.

A shared 2-core VM drifts by +-25 % within minutes, more than most speed changes are worth, so runs of two
versions one after the other compare minutes, not code. Here each checkout runs in its own warm process
(its own imports, ray tables and numba cache) and the two take turns chunk by chunk (`CHUNK` samples of the
same data set indices, the order swapped every round), never at the same time; each chunk's process CPU
time is measured inside its process. Drift then hits both alike, and the per-chunk ratios show the
difference and its spread. The other checkout needs only the public `SynthEngine(body, SynthConfig(...))`
and `make_samples(seed, indices)`, so older versions can be measured too.

CLI: `python -m training.synth bench --against /path/to/other/checkout [--rounds 24]`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

__all__ = ["compare_checkouts"]

HERE = Path(__file__).resolve().parents[2]   # this checkout's root

# run in the checkout's root: one warm engine, then one chunk per line read (its first index), answering
# the chunk's process CPU seconds
_WORKER = r"""
import sys, time
sys.path.insert(0, '.')
import cv2, torch
torch.set_num_threads(1)
cv2.setNumThreads(1)
from model.body import DEFAULT_BODY_PATH, BodyModel
from training.synth.sample import CHUNK, SynthConfig, SynthEngine
engine = SynthEngine(BodyModel.from_file(DEFAULT_BODY_PATH), SynthConfig(out_size=int(sys.argv[1])))
seed = int(sys.argv[2])
engine.make_samples(seed + 1, list(range(CHUNK)))
print('ready', CHUNK, flush=True)
for line in sys.stdin:
    start = int(line)
    t0 = time.process_time()
    engine.make_samples(seed, list(range(start, start + CHUNK)))
    print(time.process_time() - t0, flush=True)
"""


def _start(checkout: Path, out_size: int, seed: int) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(out_size), str(seed)], cwd=checkout, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline().split()
    if len(first) != 2 or first[0] != "ready":
        proc.kill()
        raise RuntimeError(f"{checkout}: the synthetic engine did not start (see its error above)")
    return proc, int(first[1])


def compare_checkouts(other: str | Path, rounds: int = 24, out_size: int = 224, seed: int = 7,
                      out: TextIO | None = None) -> dict[str, Any]:
    """CPU ms per sample of this checkout and `other` (a FuseMesh checkout folder) on the same chunks of
    data set `seed`, `rounds` chunks each, in turns. Prints a report to `out`; returns medians (ms per
    sample), the per-chunk ratios this / other, and the ratio of the totals."""
    out = out or sys.stdout
    other = Path(other).resolve()
    if not (other / "training" / "synth" / "sample.py").is_file():
        raise FileNotFoundError(f"not a FuseMesh checkout (no training/synth/sample.py): {other}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    procs, chunks = zip(*(_start(c, out_size, seed) for c in (HERE, other)))
    if chunks[0] != chunks[1]:
        raise RuntimeError(f"the checkouts use different chunk sizes ({chunks[0]} and {chunks[1]})")
    chunk = chunks[0]
    ms: list[list[float]] = [[], []]
    try:
        from tqdm import tqdm
        for r in tqdm(range(rounds), desc="paired chunks", unit="round", file=out):
            for k in ((0, 1) if r % 2 == 0 else (1, 0)):
                procs[k].stdin.write(f"{chunk * (r + 1)}\n")
                procs[k].stdin.flush()
                answer = procs[k].stdout.readline()
                if not answer:
                    raise RuntimeError(f"{(HERE, other)[k]}: the engine process ended (see its error above)")
                ms[k].append(float(answer) / chunk * 1000.0)
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            p.wait(timeout=60)
    this, that = np.array(ms[0]), np.array(ms[1])
    ratio = this / that
    result = {"this_ms": float(np.median(this)), "other_ms": float(np.median(that)),
              "ratio_median": float(np.median(ratio)), "ratio_q25": float(np.percentile(ratio, 25)),
              "ratio_q75": float(np.percentile(ratio, 75)), "ratio_total": float(this.sum() / that.sum()),
              "rounds": rounds, "chunk": chunk}
    print(f"paired CPU per sample ({rounds} chunks of {chunk} each, {out_size} px crops, in turns): "
          f"this checkout {result['this_ms']:.1f} ms, {other} {result['other_ms']:.1f} ms (medians); "
          f"this / other per chunk {result['ratio_median']:.3f} (quartiles {result['ratio_q25']:.3f}-"
          f"{result['ratio_q75']:.3f}), totals {result['ratio_total']:.3f}", file=out)
    return result
