"""Benchmark: color -> depth alignment per frame, precomputed vs naive (prints numbers; not a test).

    python -m calibration.bench [--frames 200] [--depth-mode NFOV_UNBINNED] [--color-resolution 720P]

Frames are a synthetic scene (wall, floor, box) rendered through the default Kinect rig. Three
implementations produce the same output:
  fast   ColorToDepthAligner: per-pixel polynomial in inverse depth (precomputed) + cv2.remap
         (also timed with nearest-pixel instead of bilinear color sampling)
  exact  precomputed xy table; per frame exact float64 transform + distortion + cv2.remap
  naive  nothing precomputed: per frame iterative undistortion of every depth pixel, then as exact
Times are wall-clock per frame (min and median); the machine's other load shows in the median.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from calibration import default_rig
from calibration.align import AlignConfig, ColorToDepthAligner, DepthToColorAligner, align_color_to_depth_naive
from calibration.synthetic import render_rgbd


def _time(fn: Callable[[], object], frames: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.min(times) * 1e3), float(np.median(times) * 1e3)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calibration.bench", description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200, help="timed frames for the fast path")
    p.add_argument("--naive-frames", type=int, default=5, help="timed frames for the naive path")
    p.add_argument("--depth-mode", default="NFOV_UNBINNED")
    p.add_argument("--color-resolution", default="720P")
    args = p.parse_args(argv)

    rig = default_rig(args.depth_mode, args.color_resolution)
    print(f"rig: depth {rig.depth_mode} {rig.depth.width}x{rig.depth.height}, color {rig.color_resolution} "
          f"{rig.color.width}x{rig.color.height}; cpus {os.cpu_count()}, cv2 threads {cv2.getNumThreads()}, "
          f"load avg {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    rig.depth.xy_table()
    t_table = time.perf_counter() - t0
    t0 = time.perf_counter()
    aligner = ColorToDepthAligner(rig)
    t_build = time.perf_counter() - t0
    print(f"precompute: xy table {t_table * 1e3:.0f} ms, polynomial map {t_build * 1e3:.0f} ms "
          f"(fit error <= {aligner.map.fit_error_px:.4f} px, {aligner.map.exact_index.size} pixels on the exact path)")

    frame = render_rgbd(rig)
    color, depth = frame.color_bgr, frame.depth_mm
    pixel_map = aligner.map
    n = depth.size
    index = np.arange(n)
    lower, upper = (0.0, 0.0), (rig.color.width - 1.0, rig.color.height - 1.0)

    def exact() -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore"):
            w = 1000.0 / depth.reshape(-1).astype(np.float64)
        uv, ok = pixel_map.exact_uv(index, w)
        cfg = aligner.config
        ok &= (depth.reshape(-1) >= cfg.min_depth_mm) & (depth.reshape(-1) <= cfg.max_depth_mm)
        uv = np.where(ok[:, None], uv, -1e6).astype(np.float32).reshape(depth.shape + (2,))
        out = cv2.remap(color, uv, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        valid = cv2.inRange(uv, lower, upper)
        return cv2.bitwise_and(out, out, mask=valid), valid > 0

    fast_out, fast_valid = aligner(color, depth)
    ex_out, ex_valid = exact()
    naive_out, naive_valid = align_color_to_depth_naive(rig, color, depth)
    both = fast_valid & naive_valid
    diff = np.abs(fast_out.astype(int) - naive_out)[both].max(axis=-1)
    print(f"agreement fast vs naive: valid masks equal on {np.mean(fast_valid == naive_valid) * 100:.3f}% of "
          f"pixels; colors within 2 levels on {np.mean(diff <= 2) * 100:.3f}% of valid pixels")
    print(f"agreement fast vs exact: valid masks equal on {np.mean(fast_valid == ex_valid) * 100:.3f}%")

    fast = _time(lambda: aligner(color, depth), args.frames)
    nearest_aligner = ColorToDepthAligner(rig, AlignConfig(interpolation="nearest"))
    nearest = _time(lambda: nearest_aligner(color, depth), args.frames)
    ex = _time(exact, max(5, args.frames // 10))
    naive = _time(lambda: align_color_to_depth_naive(rig, color, depth), args.naive_frames)
    d2c = DepthToColorAligner(rig, AlignConfig(), pixel_map=aligner.map)
    d2c_t = _time(lambda: d2c(depth), max(5, args.frames // 10))
    print(f"color->depth {rig.color.width}x{rig.color.height} -> {rig.depth.width}x{rig.depth.height}, ms/frame "
          f"(min / median):")
    print(f"  fast (precomputed)   {fast[0]:8.2f} / {fast[1]:8.2f}   goal <= 5 ms (bilinear color sampling)")
    print(f"  fast, nearest        {nearest[0]:8.2f} / {nearest[1]:8.2f}   (interpolation='nearest')")
    print(f"  exact (xy table)     {ex[0]:8.2f} / {ex[1]:8.2f}   ratio exact/fast {ex[0] / fast[0]:6.1f}x")
    print(f"  naive (per frame)    {naive[0]:8.2f} / {naive[1]:8.2f}   ratio naive/fast {naive[0] / fast[0]:6.1f}x")
    print(f"depth->color z-buffer splat: {d2c_t[0]:.2f} / {d2c_t[1]:.2f} ms/frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
