"""Reproduce the structure of the paper's Tables 1-4 and Fig. 4 on synthetic data: `python -m training.ablate`.

    python -m training.ablate --out runs/ablation                    # CPU scale (~1 h on 2 idle cores)
    python -m training.ablate --out runs/ablation --scale gpu        # bigger data, longer runs, 128 px
    python -m training.ablate --out /tmp/abl --scale smoke           # minutes: procedural stick figures

Data (synthetic, training/synth): one training folder and one test folder (generated here unless
--train-data / --test-data are given). The training folder is split into two RGB-D "datasets" with
different skeleton conventions and frames (training/data.py SKELETON_VIEWS) plus an RGB-only part:

    CAD-like (kinect_v1_like: NITE joints, mm, tilted room frame)   train [0.0, 0.4)   test [0.0, 0.5)
    PKU-like (kinect_v2_like: Kinect v2 joints, m, camera space)   train [0.4, 0.8)   test [0.5, 1.0)
    RGB-only (COCO/LSP role: 2D keypoints only, zero depth)        train [0.8, 1.0)

Errors are PA-MPJPE (mm) against each test set's own skeleton (15 canonical joints), as the paper scores
PKU-MMD / CAD-60. RGB-D sources expose only 2D keypoints, depth and their skeleton: no SMPL ground truth.

Runs (all 2d + adv; each a `python -m training.train` subprocess with its own out dir, skipped when
already complete, so an interrupted ablation resumes):
    Tables 1-2 (trained on CAD-like + PKU-like, no RGB-only data):
        hmr_rgb[_drc]  (run.input rgb), hmr_d[_drc] (run.input depth), hmr_rgbd[_drc] (concat, both
        streams always), fusion[_drc] (dynamic fusion, p_miss 0.3)
    Table 3 (dynamic fusion): single-dataset 3D supervision (w_3d on the dataset's skeleton):
        3d_pku, 3d_cad; joint training on both: fusion (2d+adv), fusion_smpl (+ Lsmpl on USCG pseudo
        labels with the 100 mm gate), fusion_drc (+ rank), fusion_smpl_drc (+ both)
    Table 4: fusion_smpl_drc_rgb = fusion_smpl_drc + the RGB-only source (50/50 batches)
    Fig. 4: robustness heatmap of fusion vs hmr_rgbd on the CAD-like test set.

Outputs in --out: data/, uscg/ (USCG, labels, pass-rate reports), runs/<name>/, results.json, results.md
(the tables, the robustness PNG and a list of the paper's claimed directions with whether each holds).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SPLITS = {"cad": ("kinect_v1_like", (0.0, 0.4), (0.0, 0.5)), "pku": ("kinect_v2_like", (0.4, 0.8), (0.5, 1.0))}
RGB_SPLIT = (0.8, 1.0)
TESTS = (("PKU", "pku"), ("CAD", "cad"))  # table order: PKU-MMD first, as in the paper

SCALES: dict[str, dict[str, Any]] = {
    # n_train / n_test samples, steps per run, USCG steps, extra model overrides
    "smoke": {"n_train": 160, "n_test": 48, "steps": 30, "uscg_steps": 100, "procedural": True, "jobs": 2,
              "model": {"rgb_encoder": {"width": 8}, "depth_encoder": {"width": 8}, "fusion": {"hidden": [64, 64]},
                        "regressor": {"hidden": [64, 64]}, "uscg": {"n_layers": 4, "hidden": 128}},
              "batch": 16},
    "cpu": {"n_train": 2000, "n_test": 400, "steps": 500, "uscg_steps": 6000, "procedural": False, "jobs": 2,
            "model": {}, "batch": 32},
    "gpu": {"n_train": 40000, "n_test": 2000, "steps": 20000, "uscg_steps": 30000, "procedural": False, "jobs": 1,
            "model": {"input_size": 128, "rgb_encoder": {"width": 32}, "depth_encoder": {"width": 24},
                      "fusion": {"hidden": [512, 512]}, "regressor": {"hidden": [512, 512]},
                      "uscg": {"n_layers": 10, "hidden": 1024}},
            "batch": 40},
}


# ------------------------------------------------------------------------------------ the plan
@dataclass
class Variant:
    """One training run of the ablation."""

    name: str
    label: str  # column header
    input: str = "policy"
    dynamic: bool = True
    drc: bool = False
    smpl: bool = False
    w_3d: float = 0.0
    sets: tuple[str, ...] = ("cad", "pku")
    rgb_only: bool = False
    modes: tuple[str, ...] = ("rgb", "depth", "rgbd")


def plan() -> list[Variant]:
    """All runs (module docstring)."""
    out = []
    for drc in (False, True):
        tag, lab = ("_drc", " +DRC") if drc else ("", "")
        out += [Variant(f"hmr_rgb{tag}", f"HMR_RGB{lab}", input="rgb", dynamic=False, drc=drc, modes=("rgb",)),
                Variant(f"hmr_d{tag}", f"HMR_D{lab}", input="depth", dynamic=False, drc=drc, modes=("depth",)),
                Variant(f"hmr_rgbd{tag}", f"HMR_RGBD{lab}", dynamic=False, drc=drc, modes=("rgbd",)),
                Variant(f"fusion{tag}", f"Fusion{lab}", drc=drc)]
    out += [Variant("3d_pku", "2d+adv+3D PKU", w_3d=1.0, sets=("pku",)),
            Variant("3d_cad", "2d+adv+3D CAD", w_3d=1.0, sets=("cad",)),
            Variant("fusion_smpl", "2d+adv+smpl", smpl=True),
            Variant("fusion_smpl_drc", "2d+adv+smpl+rank", smpl=True, drc=True),
            Variant("fusion_smpl_drc_rgb", "+smpl+rank w/ RGB", smpl=True, drc=True, rgb_only=True)]
    return out


TABLES = {
    "Table 1 (PKU-like)": (["hmr_rgb", "hmr_d", "hmr_rgbd", "hmr_rgbd_drc", "fusion", "fusion_drc", "hmr_rgb_drc",
                            "hmr_d_drc"], ["PKU"]),
    "Table 2 (CAD-like)": (["hmr_rgb", "hmr_d", "hmr_rgbd", "hmr_rgbd_drc", "fusion", "fusion_drc", "hmr_rgb_drc",
                            "hmr_d_drc"], ["CAD"]),
    "Table 3 (cross-dataset; all dynamic fusion)": (["3d_pku", "3d_cad", "fusion", "fusion_smpl", "fusion_drc",
                                                     "fusion_smpl_drc"], ["PKU", "CAD"]),
    "Table 4 (w/o vs w/ RGB-only data)": (["fusion_smpl_drc", "fusion_smpl_drc_rgb"], ["PKU", "CAD"]),
}


def variant_config(base: dict[str, Any], v: Variant, data: dict[str, str], labels: dict[str, str], out_dir: Path,
                   steps: int, batch: int) -> dict[str, Any]:
    """The training config dict of one variant."""
    cfg = copy.deepcopy(base)
    model = cfg.setdefault("model", {})
    model.setdefault("fusion", {})["dynamic"] = v.dynamic
    loss = model.setdefault("loss", {})
    loss["w_drc"] = 1.0 if v.drc else 0.0
    loss["w_smpl"] = 1.0 if v.smpl else 0.0
    cfg.setdefault("objective", {})["w_3d"] = v.w_3d
    sources = []
    for s in v.sets:
        view, train_sel, _ = SPLITS[s]
        src = {"path": data["train"], "kind": "rgbd", "labels": view, "select": list(train_sel)}
        if v.smpl:
            src["smpl_labels"] = labels[s]
        sources.append(src)
    if v.rgb_only:
        sources.append({"path": data["train"], "kind": "rgb", "labels": "none", "select": list(RGB_SPLIT)})
    d = cfg.setdefault("data", {})
    d["sources"], d["batch_size"] = sources, batch
    r = cfg.setdefault("run", {})
    r.update(input=v.input, steps=steps, out_dir=str(out_dir))
    return cfg


# ------------------------------------------------------------------------------------ data
def merge_shard_folders(folders: Sequence[Path], out: Path) -> dict:
    """Concatenate shard folders into one (sample `index` renumbered 0..N-1); returns the manifest."""
    from training.synth.shards import FORMAT, VERSION, MANIFEST, SynthShards, write_shard

    out.mkdir(parents=True, exist_ok=True)
    shards, offset, first = [], 0, None
    for f in folders:
        ds = SynthShards(f)
        first = first or ds.manifest
        for k, entry in enumerate(ds.shards):
            arrays = dict(ds.shard(k))
            arrays["index"] = np.arange(offset, offset + entry.count, dtype=np.int64)
            name = f"shard-{len(shards):05d}.npz"
            sha = write_shard(out / name, arrays)
            shards.append({"file": name, "count": entry.count, "first_index": offset, "sha256": sha})
            offset += entry.count
    manifest = {k: v for k, v in (first or {}).items() if k not in ("shards", "counts")}
    manifest.update(format=FORMAT, version=VERSION, counts={"samples": offset, "shards": len(shards)},
                    shards=shards, merged_from=[str(f) for f in folders])
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def make_data(out: Path, n: int, size: int, seed: int, procedural: bool, workers: int = 2, chunk: int = 200,
              log: Any = print, body: str | None = None) -> Path:
    """A shard folder of n samples at `out` (reused when complete). The synthetic engine renders in chunks
    with their own seeds; a chunk that fails (e.g. a scene the engine cannot crop) is retried with the
    next seed, so one bad scene does not lose the data set."""
    from training.synth.shards import MANIFEST, SynthShards

    if (out / MANIFEST).is_file():
        try:
            if len(SynthShards(out)) == n:
                return out
        except ValueError:
            pass
    if procedural:
        from training.data import write_procedural_shards

        from model.body import BodyModel

        write_procedural_shards(out, n, size=size, seed=seed, shard_size=chunk,
                                body=BodyModel.from_file(body) if body else None)
        return out
    from training.synth.sample import SynthConfig
    from training.synth.shards import make_shards

    parts = []
    for k in range(math.ceil(n / chunk)):
        m = min(chunk, n - k * chunk)
        part = out.parent / f"{out.name}.part{k:03d}"
        if (part / MANIFEST).is_file() and len(SynthShards(part)) == m:
            parts.append(part)
            continue
        for attempt in range(5):
            s = seed * 100_003 + k * 101 + attempt
            try:
                t0 = time.perf_counter()
                make_shards(part, m, seed=s, config=SynthConfig(out_size=size), workers=workers, shard_size=chunk,
                            progress=False, overwrite=True)
                log(f"  data {out.name} chunk {k}: {m} samples (seed {s}) in {time.perf_counter() - t0:.0f} s")
                break
            except RuntimeError as e:
                log(f"  data {out.name} chunk {k}: seed {s} failed ({e}); retrying with another seed")
        else:
            raise RuntimeError(f"could not render chunk {k} of {out} in 5 attempts")
        parts.append(part)
    merge_shard_folders(parts, out)
    return out


# ------------------------------------------------------------------------------------ running
def run_complete(out_dir: Path, steps: int) -> bool:
    f = out_dir / "summary.json"
    if not f.is_file():
        return False
    try:
        return int(json.loads(f.read_text()).get("steps", -1)) == steps and (out_dir / "last.pt").is_file()
    except (ValueError, OSError):
        return False


def run_all(configs: dict[str, dict[str, Any]], jobs: int, body: str | None, log: Any = print) -> None:
    """Train every config (a dict) in `python -m training.train` subprocesses, `jobs` at a time."""
    import yaml

    pending = []
    for name, cfg in configs.items():
        out = Path(cfg["run"]["out_dir"])
        if run_complete(out, cfg["run"]["steps"]):
            log(f"  {name}: already trained, skipped")
            continue
        out.mkdir(parents=True, exist_ok=True)
        (out / "ablate_config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        resume = (out / "last.pt").is_file()
        cmd = [sys.executable, "-m", "training.train", "--config", str(out / "ablate_config.yaml"), "--no-progress"]
        if resume:
            cmd.append("--resume")
        if body:
            cmd += ["--body", body]
        pending.append((name, cmd, out))
    running: list[tuple[str, subprocess.Popen, float, Any]] = []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    while pending or running:
        while pending and len(running) < jobs:
            name, cmd, out = pending.pop(0)
            fh = open(out / "train.log", "a")
            running.append((name, subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), time.time(), fh))
            log(f"  {name}: started")
        time.sleep(2)
        for item in list(running):
            name, proc, t0, fh = item
            if proc.poll() is not None:
                fh.close()
                running.remove(item)
                if proc.returncode != 0:
                    raise RuntimeError(f"training run {name} failed (exit {proc.returncode}); see its train.log")
                log(f"  {name}: done in {time.time() - t0:.0f} s")


# ------------------------------------------------------------------------------------ directions
def directions(r: dict[str, dict[tuple[str, str], float]]) -> list[tuple[str, bool | None, str]]:
    """The paper's qualitative claims, each checked on the results: (claim, holds?, numbers)."""
    def g(run: str, test: str, mode: str) -> float | None:
        return r.get(run, {}).get((test, mode))

    def avg(run: str, mode: str) -> float | None:
        vals = [g(run, t, mode) for t, _ in TESTS]
        return float(np.mean(vals)) if all(v is not None for v in vals) else None

    out: list[tuple[str, bool | None, str]] = []

    def claim(text: str, a: float | None, b: float | None, tol: float = 0.0, name_a: str = "", name_b: str = "") -> None:
        if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
            out.append((text, None, "missing"))
            return
        out.append((text, a < b + tol, f"{name_a} {a:.1f} vs {name_b} {b:.1f} mm"))

    claim("DRC lowers the error of the concat baseline (RGB-D input, mean of both test sets)",
          avg("hmr_rgbd_drc", "rgbd"), avg("hmr_rgbd", "rgbd"), name_a="with DRC", name_b="without")
    for m in ("rgb", "depth", "rgbd"):
        claim(f"DRC lowers the fusion model's error with {m.upper()} input",
              avg("fusion_drc", m), avg("fusion", m), name_a="with DRC", name_b="without")
    claim("Fusion with RGB-D input is close to the concat baseline (within 5 %)",
          avg("fusion", "rgbd"), (avg("hmr_rgbd", "rgbd") or np.nan) * 1.05, name_a="fusion", name_b="1.05 x concat")
    claim("Fusion with depth-only input beats HMR_D (trained on depth only)",
          avg("fusion", "depth"), avg("hmr_d", "depth"), name_a="fusion D", name_b="HMR_D")
    claim("Fusion with DRC beats the concat baseline with DRC (RGB-D)",
          avg("fusion_drc", "rgbd"), avg("hmr_rgbd_drc", "rgbd"), name_a="fusion+DRC", name_b="concat+DRC")
    for t, s in TESTS:
        other_name = [n for n, k in TESTS if k != s][0]
        claim(f"A 3D-supervised model trained on {t}-like data is worse on {other_name}-like test data than on {t}-like",
              g(f"3d_{s}", t, "rgbd"), g(f"3d_{s}", other_name, "rgbd"), name_a=f"on {t}", name_b=f"on {other_name}")
    claim("Lsmpl (USCG pseudo labels) lowers the joint-training error (RGB-D)",
          avg("fusion_smpl", "rgbd"), avg("fusion", "rgbd"), name_a="+smpl", name_b="2d+adv")
    claim("smpl + rank is better than 2d+adv (RGB-D)", avg("fusion_smpl_drc", "rgbd"), avg("fusion", "rgbd"),
          name_a="+smpl+rank", name_b="2d+adv")
    claim("Joint training with USCG + DRC beats the single-dataset model tested cross-dataset (RGB-D, worst case)",
          _max(g("fusion_smpl_drc", "PKU", "rgbd"), g("fusion_smpl_drc", "CAD", "rgbd")),
          _min(g("3d_pku", "CAD", "rgbd"), g("3d_cad", "PKU", "rgbd")),
          name_a="joint (worse set)", name_b="cross-dataset (better)")
    for m in ("rgb", "depth", "rgbd"):
        claim(f"Adding RGB-only data lowers the error with {m.upper()} input",
              avg("fusion_smpl_drc_rgb", m), avg("fusion_smpl_drc", m), name_a="w/ RGB", name_b="w/o")
    return out


def _max(*v: float | None) -> float | None:
    return None if any(x is None for x in v) else max(v)


def _min(*v: float | None) -> float | None:
    return None if any(x is None for x in v) else min(v)


# ------------------------------------------------------------------------------------ main
def ablate(out: Path, scale: str = "cpu", base_config: str | Path | None = None, train_data: str | None = None,
           test_data: str | None = None, body: str | None = None, jobs: int | None = None,
           steps: int | None = None, only: Sequence[str] | None = None, log: Any = print) -> dict[str, Any]:
    import yaml

    from training.evaluate import evaluate, load_predictor, make_test_set
    from training.robustness import robustness
    from training.uscg import generate, train_uscg
    from training.config import train_config_from_dict

    sc = SCALES[scale]
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    base = yaml.safe_load(Path(base_config or Path(__file__).parent / "configs" / "ablation.yaml").read_text()) or {}
    _deep_update(base.setdefault("model", {}), sc["model"])
    base_cfg = train_config_from_dict(base)
    size = base_cfg.model.input_size
    steps = steps or sc["steps"]
    jobs = jobs or sc["jobs"]
    timings: dict[str, float] = {}

    log(f"[1/5] data ({'procedural' if sc['procedural'] else 'synthetic engine'}, {size} px)")
    t0 = time.perf_counter()
    data = {"train": str(train_data or make_data(out / "data" / "train", sc["n_train"], size, 1, sc["procedural"],
                                                 log=log, body=body)),
            "test": str(test_data or make_data(out / "data" / "test", sc["n_test"], size, 2, sc["procedural"],
                                               log=log, body=body))}
    timings["data_s"] = time.perf_counter() - t0

    log("[2/5] USCG: train, then pseudo labels for the CAD-like and PKU-like training splits")
    t0 = time.perf_counter()
    uscg_dir = out / "uscg"
    uscg_cfg = copy.deepcopy(base)
    uscg_cfg.setdefault("uscg", {}).update(steps=sc["uscg_steps"], out=str(uscg_dir / "uscg.pt"))
    ucfg = train_config_from_dict(uscg_cfg)
    uscg_report: dict[str, Any] = {}
    if not (uscg_dir / "uscg.pt").is_file() or _uscg_step(uscg_dir / "uscg.pt") < sc["uscg_steps"]:
        uscg_report["train"] = train_uscg(ucfg, body=body, resume=(uscg_dir / "uscg.pt").is_file(), progress=False)
    labels = {}
    for s, (view, sel, _) in SPLITS.items():
        labels[s] = str(uscg_dir / f"{s}_labels.npz")
        uscg_report[s] = generate(uscg_dir / "uscg.pt", labels[s], data=data["train"], view=view, select=sel,
                                  body=body, verbose=False)
        log(uscg_report[s]["report"])
    timings["uscg_s"] = time.perf_counter() - t0

    log(f"[3/5] training runs ({steps} steps each, {jobs} at a time)")
    t0 = time.perf_counter()
    variants = [v for v in plan() if not only or v.name in only]
    configs = {v.name: variant_config(base, v, data, labels, out / "runs" / v.name, steps, sc["batch"]) for v in variants}
    run_all(configs, jobs, body, log)
    timings["train_s"] = time.perf_counter() - t0

    log("[4/5] evaluation")
    t0 = time.perf_counter()
    tests = {name: make_test_set(name, data["test"], SPLITS[key][0], SPLITS[key][2], input_size=size)
             for name, key in TESTS}
    results: dict[str, dict[tuple[str, str], float]] = {}
    predictors = {}
    for v in variants:
        predictors[v.name] = load_predictor(out / "runs" / v.name / "last.pt", body=body)
        results[v.name] = evaluate(predictors[v.name], list(tests.values()), v.modes)
    timings["eval_s"] = time.perf_counter() - t0

    log("[5/5] robustness heatmap and report")
    rob = None
    if "fusion" in predictors and "hmr_rgbd" in predictors:
        rob = robustness(predictors["fusion"], predictors["hmr_rgbd"], tests["CAD"], out / "robustness.png")
    labels_of = {v.name: v.label for v in variants}
    tables = []
    for title, (runs, sets) in TABLES.items():
        runs = [r for r in runs if r in results]
        if runs:
            tables.append(_table(title, runs, sets, results, labels_of))
    checks = directions(results)
    timings["total_s"] = time.perf_counter() - t_start
    summary = {
        "scale": scale, "steps": steps, "input_size": size, "data": data, "timings_s": timings,
        "uscg": {k: {kk: vv for kk, vv in v.items() if kk != "report"} if isinstance(v, dict) else v
                 for k, v in uscg_report.items()},
        "results_mm": {run: {f"{t}/{m}": round(x, 3) for (t, m), x in res.items()} for run, res in results.items()},
        "directions": [{"claim": c, "holds": h, "numbers": n} for c, h, n in checks],
        "robustness": rob,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    md = [f"# Ablation ({scale} scale, {steps} steps per run, {size} px)", "",
          *[f"```\n{t}\n```\n" for t in tables], "## Paper directions", "",
          *[f"- [{'x' if h else ' ' if h is False else '?'}] {c} ({n})" for c, h, n in checks], "",
          "## USCG pseudo labels", "", *[f"```\n{uscg_report[s]['report']}\n```" for s in SPLITS], "",
          f"Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())]
    (out / "results.md").write_text("\n".join(md) + "\n")
    log("\n".join(tables))
    return summary


def _uscg_step(path: Path) -> int:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True).get("step", 0))
    except Exception:  # noqa: BLE001 - a broken file is retrained
        return -1


def _table(title: str, runs: list[str], sets: list[str], results: dict, labels_of: dict[str, str]) -> str:
    from training.evaluate import results_table

    return results_table([results[r] for r in runs], [labels_of[r] for r in runs], sets, title=title)


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.ablate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", required=True, help="output folder (an interrupted ablation resumes there)")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--config", default=None, help="base training YAML (default training/configs/ablation.yaml)")
    p.add_argument("--train-data", default=None, help="existing shard folder to split (else generated)")
    p.add_argument("--test-data", default=None, help="existing shard folder for testing (else generated)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: the scale's)")
    p.add_argument("--jobs", type=int, default=None, help="training runs at a time (default: the scale's)")
    p.add_argument("--only", nargs="+", default=None, help="train/evaluate only these runs (names in the docstring)")
    p.add_argument("--body", default=None, help="body model file (default: the open body asset)")
    args = p.parse_args(argv)
    names = {v.name for v in plan()}
    if args.only and set(args.only) - names:
        print(f"error: unknown run {sorted(set(args.only) - names)[0]!r}; runs: {sorted(names)}", file=sys.stderr)
        return 2
    ablate(Path(args.out), args.scale, args.config, args.train_data, args.test_data, args.body, args.jobs,
           args.steps, args.only, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
