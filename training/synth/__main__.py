"""Command line of the synthetic data engine (thin: parses arguments, calls training.synth library code).

    python -m training.synth make   --n 10000 --out data/synth --workers 2 [--seed 0] [--size 224]
    python -m training.synth record --motion walk --seconds 10 --out clip.mkv [--fps 30]
    python -m training.synth sheet  --out docs/synth.png [--n 8]
    python -m training.synth bench  [--n 160] [--workers 2] [--size 224]
    python -m training.synth bench --against OTHER_CHECKOUT [--rounds 24]

Common options: --body PATH (SMPL-format body file; default assets/body/open_body_neutral.npz),
--config FILE.yaml (SynthConfig overrides, strict: unknown keys are errors), --seed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence


def _load_config(path: Optional[Path], size: Optional[int]):
    from training.synth.sample import config_from_dict
    data = {}
    if path is not None:
        import yaml
        if not path.is_file():
            raise ValueError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
    if size is not None:
        data = {**data, "out_size": size}
    return config_from_dict(data)


def _body_path(arg: Optional[Path]) -> Path:
    from model.body import DEFAULT_BODY_PATH
    path = arg or DEFAULT_BODY_PATH
    if not path.is_file():
        raise FileNotFoundError(f"body model not found: {path} (build the open body with "
                                f"assets/tools/build_open_body.py, or pass --body PATH)")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.synth", description="FuseMesh synthetic RGB-D data")
    sub = parser.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--body", type=Path, default=None, help="body model file (.npz or SMPL .pkl)")
        p.add_argument("--config", type=Path, default=None, help="YAML with SynthConfig overrides")
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("make", help="generate labelled training shards")
    common(p)
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--out", type=Path, required=True, help="output folder (shards + manifest.json)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=None, help="crop size in pixels (default 224)")
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("record", help="render a scripted motion into an Azure Kinect .mkv + .gt.npz")
    common(p)
    p.add_argument("--motion", default="walk", help="a motion (walk, wave, squat, reach, turn, sit) or a "
                                                    "program like walk:4,wave:3")
    p.add_argument("--seconds", type=float, default=10.0, help="length for a single motion")
    p.add_argument("--out", type=Path, required=True, help="output .mkv (its folder must exist)")
    p.add_argument("--fps", type=int, default=30, choices=(5, 15, 30))
    p.add_argument("--depth-mode", default="NFOV_UNBINNED")
    p.add_argument("--color-resolution", default="720P")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--no-masks", action="store_true", help="leave per-frame masks out of the sidecar")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("sheet", help="draw a contact sheet of samples (color, depth, keypoints, mask)")
    common(p)
    p.add_argument("--out", type=Path, default=Path("docs/synth.png"))
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--columns", type=int, default=4)

    p = sub.add_parser("bench", help="print labelled samples/s (1 process, and --workers processes)")
    common(p)
    p.add_argument("--n", type=int, default=160)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--against", type=Path, default=None, metavar="CHECKOUT",
                   help="instead: CPU per sample of this checkout and another FuseMesh checkout on the same "
                        "samples, in turns chunk by chunk (default config and body of each; --size applies)")
    p.add_argument("--rounds", type=int, default=24, help="chunks per checkout with --against")

    args = parser.parse_args(argv)
    try:
        if args.cmd == "make":
            from training.synth.shards import make_shards
            cfg = _load_config(args.config, args.size)
            manifest = make_shards(args.out, args.n, seed=args.seed, config=cfg, body_path=_body_path(args.body),
                                   workers=args.workers, shard_size=args.shard_size,
                                   progress=not args.no_progress, overwrite=args.overwrite)
            c = manifest["counts"]
            print(f"wrote {c['samples']} samples in {c['shards']} shards to {args.out} "
                  f"(scene attempts {c['scene_attempts']}, modes {c['depth_mode']})")
        elif args.cmd == "record":
            from model.body import BodyModel
            from training.synth.record import SequenceSpec, parse_motion, record_sequence
            from training.synth.sample import SynthEngine
            steps = parse_motion(args.motion, args.seconds)
            spec = SequenceSpec(steps=tuple(steps), fps=args.fps, depth_mode=args.depth_mode.upper(),
                                color_resolution=args.color_resolution.upper(), seed=args.seed,
                                jpeg_quality=args.jpeg_quality, masks=not args.no_masks)
            engine = SynthEngine(BodyModel.from_file(_body_path(args.body)), _load_config(args.config, None))
            summary = record_sequence(args.out, engine, spec, overwrite=args.overwrite, progress=True)
            print(f"wrote {summary.path} ({summary.frames} frames, {summary.seconds:g} s) and {summary.sidecar}; "
                  f"{summary.frames / summary.render_s:.1f} frames/s")
        elif args.cmd == "sheet":
            from training.synth.shards import write_contact_sheet
            path = write_contact_sheet(args.out, _body_path(args.body), _load_config(args.config, args.size),
                                       n=args.n, seed=args.seed, columns=args.columns)
            print(f"wrote {path}")
        elif args.against is not None:
            from training.synth.paired import compare_checkouts
            compare_checkouts(args.against, rounds=args.rounds, out_size=args.size or 224, seed=args.seed)
        else:
            from training.synth.shards import benchmark
            benchmark(_body_path(args.body), _load_config(args.config, args.size), n=args.n,
                      workers=args.workers, seed=args.seed, out=sys.stdout)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
