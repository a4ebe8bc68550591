"""Stress loop for the rare segmentation fault in Azure Kinect playback (docs/reliability.md).

Not a pytest module (it runs for minutes and ends in SIGSEGV / SIGABRT when the fault hits). It replays a
recording over and over through pyk4a alone, in ONE thread, with nothing else of FuseMesh loaded:

    python -X faulthandler tests/stress_k4a_playback.py --mode images --seconds 240
    python -X faulthandler tests/stress_k4a_playback.py --mode bare --seconds 240

Modes: ``bare`` only reads captures; ``images`` also takes each capture's color and depth arrays (what
every reader does); ``seek`` reads each capture by seeking just past the previous one (no read-ahead
across clusters). Prints frames, passes and ms per frame every 10 s; exit status 0 when the time ran out
without a fault.
"""
from __future__ import annotations

import argparse
import faulthandler
import sys
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo" / "demo.mkv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("bare", "images", "seek"), default="images")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--source", type=Path, default=DEMO, help="an Azure Kinect .mkv (default: the demo clip)")
    args = parser.parse_args(argv)
    faulthandler.enable()
    import pyk4a

    def open_playback():
        pb = pyk4a.PyK4APlayback(str(args.source))
        pb.open()
        return pb

    pb = open_playback()
    first = pb.get_next_capture()
    start = min(t for t in (first.color_timestamp_usec, first.depth_timestamp_usec) if t)
    del first
    pb.seek(0)
    t0 = last = time.time()
    frames = passes = 0
    previous = None
    while time.time() - t0 < args.seconds:
        if args.mode == "seek":
            pb.seek(0 if previous is None else previous + 1 - start)
        try:
            capture = pb.get_next_capture()
        except EOFError:
            passes += 1
            previous = None
            if args.mode != "seek":
                pb.close()
                pb = open_playback()
            continue
        if args.mode != "bare":
            _ = (capture.color, capture.depth)                    # taking the arrays is the point
            previous = max(capture.color_timestamp_usec, capture.depth_timestamp_usec)
        frames += 1
        if time.time() - last > 10:
            last = time.time()
            print(f"t={last - t0:.0f} s frames={frames} passes={passes} {(last - t0) / frames * 1e3:.2f} ms/frame",
                  flush=True)
    pb.close()
    print(f"no fault in {time.time() - t0:.0f} s: {frames} frames, {passes} passes ({args.mode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
