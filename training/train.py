"""Train FuseMesh: `python -m training.train --config X.yaml [--resume] [--set run.steps=200 ...]`.

Single process:        python -m training.train --config training/configs/lite.yaml
Distributed (DDP):     torchrun --nproc_per_node 2 -m training.train --config training/configs/lite.yaml

Under torchrun (WORLD_SIZE > 1 in the environment) every rank joins the process group (nccl on CUDA,
gloo on CPU), reads its share of each batch through `DistributedSampler`s (training/data.py), and
DistributedDataParallel averages gradients. Rank 0 alone shows the tqdm bar, writes scalars
(`scalars.csv`, and TensorBoard event files in tb/ when `tensorboard` is importable) and checkpoints.

Outputs in run.out_dir: config.yaml (resolved); last.pt, a training/checkpoint.py checkpoint (rebuilds its
model alone: `training.checkpoint.load_checkpoint`) whose extra `train_state` entry (optimizer, scaler and
discriminator state, step, training config) makes it resumable; scalars.csv and TensorBoard events (tb/);
summary.json (steps, throughput, final scalars, per-rank weight digests: equal digests = ranks in sync).

`--resume` continues from out_dir/last.pt (or `--resume PATH`): the same data order, stream masks,
dropout and optimizer state as an uninterrupted run (all randomness is seeded per step).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from training.config import TrainConfig, apply_overrides, train_config_from_dict, train_config_to_dict


@dataclass
class TrainResult:
    """What `train` returns: per-step scalars of this run (steps start..stop), paths, digests."""

    history: list[dict[str, float]] = field(default_factory=list)
    start_step: int = 0
    out_dir: Path = Path(".")
    checkpoint: Path | None = None
    digests: list[str] = field(default_factory=list)
    samples_per_s: float = 0.0
    model: Any = None
    end_step: int = 0  # the step count of the last update (== run.steps unless stopped early)
    stopped: str = ""  # why the run stopped before run.steps ("" = it did not)


# ------------------------------------------------------------------------------------ distribution
@dataclass
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    created: bool = False  # this call initialised the process group (and destroys it at the end)


def init_distributed(device_kind: str) -> DistEnv:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        created = True
    return DistEnv(rank=dist.get_rank(), local_rank=local, world_size=dist.get_world_size(), created=created)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("run.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def weight_digest(model: torch.nn.Module) -> str:
    """sha256 (16 hex) over the network's parameters (names and float32 bytes)."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------ scalars
class ScalarLog:
    """Rank 0's scalar sink: always `scalars.csv` (step, name, value; on resume, rows after the resume step
    are dropped), plus TensorBoard event files in `tb/` (torch.utils.tensorboard) when `tensorboard` imports.
    `path` is the CSV, `tb_dir` the event folder or None."""

    def __init__(self, out_dir: Path, start_step: int, use_tensorboard: bool | None = None) -> None:
        self.writer = None
        self.tb_dir: Path | None = None
        if use_tensorboard is None:
            try:
                import tensorboard  # noqa: F401
                use_tensorboard = True
            except ImportError:
                use_tensorboard = False
        if use_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb_dir = out_dir / "tb"
            self.writer = SummaryWriter(str(self.tb_dir), purge_step=start_step + 1 if start_step else None)
        self.path = out_dir / "scalars.csv"
        rows: list[list[str]] = []
        if start_step and self.path.is_file():
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.reader(fh)][1:]
            rows = [r for r in rows if int(r[0]) <= start_step]
        self.fh = open(self.path, "w", newline="")
        self.csv = csv.writer(self.fh)
        self.csv.writerow(["step", "name", "value"])
        self.csv.writerows(rows)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(f"train/{k}", v, step)
        for k, v in sorted(scalars.items()):
            self.csv.writerow([step, k, f"{v:.9g}"])
        self.fh.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.fh.close()


def read_scalars_csv(path: str | Path, name: str = "loss") -> dict[int, float]:
    """{step: value} of one scalar from a `scalars.csv`."""
    with open(path, newline="") as fh:
        return {int(r["step"]): float(r["value"]) for r in csv.DictReader(fh) if r["name"] == name}


# ------------------------------------------------------------------------------------ the run
def train(cfg: TrainConfig, resume: bool | str | Path = False, body: Any = None, progress: bool = True,
          use_tensorboard: bool | None = None, init_from: str | Path | None = None) -> TrainResult:
    """Run (or continue) training as configured; see the module docstring. Works under torchrun.

    resume: False, True (out_dir/last.pt) or a state file path. body: a BodyModel, a path, or None
    (model.body.DEFAULT_BODY_PATH). init_from: a checkpoint (training state or a slim weights-only file, e.g.
    the bundled assets/weights/fusemesh_lite.pt) whose network weights start a fresh run (new optimizer,
    step 0); its model config must equal cfg.model. Returns this process's TrainResult.
    """
    from model.body import DEFAULT_BODY_PATH, BodyModel
    from training.data import MixedBatchSampler, TrainingData, collate
    from training.loop import Trainer
    from training.checkpoint import read_checkpoint, save_checkpoint

    kind = "cuda" if cfg.run.device == "cuda" or (cfg.run.device == "auto" and torch.cuda.is_available()) else "cpu"
    env = init_distributed(kind)
    try:
        device = resolve_device(cfg.run.device, env.local_rank)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        out_dir = Path(cfg.run.out_dir)
        if env.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
        if body is None or isinstance(body, (str, Path)):
            body = BodyModel.from_file(body or DEFAULT_BODY_PATH)
        data = TrainingData.from_config(cfg.data, cfg.model.input_size, seed=cfg.run.seed)
        sampler = MixedBatchSampler(data.pools, cfg.data.batch_size, cfg.data.rgb_fraction, seed=cfg.run.seed,
                                    rank=env.rank, world_size=env.world_size)
        torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank (DDP broadcasts anyway)
        trainer = Trainer(cfg, body, device, rank=env.rank, world_size=env.world_size)

        start = 0
        if init_from is not None and not resume:
            init_weights(trainer, cfg, Path(init_from))
        if resume:
            path = out_dir / "last.pt" if resume is True else Path(resume)
            ck = read_checkpoint(path)
            if "train_state" not in ck:
                raise ValueError(f"{path}: a model checkpoint without training state (not written by training.train)")
            trainer.load_state_dict({**ck["train_state"], "model": ck["state_dict"]})
            start = int(ck["train_state"]["step"])
            if start >= cfg.run.steps:
                raise ValueError(f"{path} is at step {start}; run.steps is {cfg.run.steps}: nothing to do "
                                 f"(raise run.steps to continue)")
        log = None
        if env.rank == 0:
            import yaml

            (out_dir / "config.yaml").write_text(yaml.safe_dump(train_config_to_dict(cfg), sort_keys=False))
            log = ScalarLog(out_dir, start, use_tensorboard)
        loader = DataLoader(data, batch_sampler=sampler.steps(start, cfg.run.steps), collate_fn=collate,
                            num_workers=cfg.data.workers, pin_memory=device.type == "cuda")
        bar = _bar(cfg.run.steps, start, progress and env.rank == 0)
        result = TrainResult(start_step=start, out_dir=out_dir)
        ckpt = out_dir / "last.pt"
        t0, n_samples = time.perf_counter(), 0
        step, done, stopped = start, start, ""
        limit, used = cfg.run.time_limit_s, 0.0  # used: fraction of the limit spent after the last step
        for step, batch in zip(range(start, cfg.run.steps), loader):
            scalars = trainer.step(batch, step, used if limit else None)
            n_samples += int(batch["rgb"].shape[0]) * env.world_size
            result.history.append(scalars)
            done = step + 1
            if limit:
                used = _time_fraction(t0, limit, device, env.world_size)
                if used >= 1.0 and done < cfg.run.steps:
                    stopped = f"time limit {limit:g} s"
            last = done == cfg.run.steps or bool(stopped)
            if log is not None and (done % cfg.run.log_every == 0 or last):
                log.log(done, scalars)
            bar.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)
            bar.update(1)
            if done % cfg.run.ckpt_every == 0 or last:
                if env.rank == 0:
                    save_train_checkpoint(ckpt, trainer, cfg, body, done, save_checkpoint)
                if env.world_size > 1:
                    dist.barrier()
            if stopped:
                break
        bar.close()
        result.end_step, result.stopped = done, stopped
        elapsed = time.perf_counter() - t0
        result.samples_per_s = n_samples / elapsed if elapsed > 0 else 0.0
        result.checkpoint = ckpt
        digest = weight_digest(trainer.model)
        if env.world_size > 1:
            gathered: list[Any] = [None] * env.world_size
            dist.all_gather_object(gathered, digest)
            result.digests = [str(d) for d in gathered]
        else:
            result.digests = [digest]
        result.model = trainer.model
        if env.rank == 0:
            log.close()
            summary = {
                "steps": cfg.run.steps, "start_step": start, "end_step": done, "stopped": stopped or None, "world_size": env.world_size, "device": str(device),
                "amp": str(trainer.amp_dtype), "samples_per_s": round(result.samples_per_s, 3),
                "elapsed_s": round(elapsed, 3), "final": result.history[-1] if result.history else {},
                "rank_weight_digests": result.digests, "ranks_in_sync": len(set(result.digests)) == 1,
                "scalars": str(log.path), "tensorboard": str(log.tb_dir) if log.tb_dir else None,
                "checkpoint": str(ckpt),
            }
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        return result
    finally:
        if env.created and dist.is_initialized():
            dist.destroy_process_group()


def _time_fraction(t0: float, limit_s: float, device: torch.device, world_size: int) -> float:
    """Used fraction of the time limit since `t0` (perf_counter); under DDP the largest over ranks, so every
    rank follows the same schedule and stops at the same step."""
    frac = (time.perf_counter() - t0) / limit_s
    if world_size > 1:
        t = torch.tensor([frac], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        frac = float(t.item())
    return frac


def init_weights(trainer: Any, cfg: TrainConfig, path: Path) -> None:
    """Load the network weights of checkpoint `path` into `trainer.model` (any float dtype; strict keys).
    Raises ValueError naming the file when its model config differs from the run's."""
    from model.config import config_from_dict, config_to_dict
    from training.checkpoint import read_checkpoint

    ck = read_checkpoint(path)
    theirs, ours = config_to_dict(config_from_dict(ck["model_config"])), config_to_dict(cfg.model)
    if theirs != ours:
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise ValueError(f"{path}: its model config differs from the run's in {', '.join(diff)}")
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()},
                          strict=True)


def save_train_checkpoint(path: Path, trainer: Any, cfg: TrainConfig, body: Any, step: int, save: Any = None) -> Path:
    """training/checkpoint.py's file (rebuilds the model alone) + `train_state` (optimizers, scaler,
    discriminator, step, training config) and a `train_summary` for exports."""
    if save is None:
        from training.checkpoint import save_checkpoint as save
    state = trainer.state_dict()
    state.pop("model")
    state.update(step=int(step), train_config=train_config_to_dict(cfg))
    summary = {"steps": int(step), "sources": [f"{s.path} ({s.kind}, {s.labels}, {list(s.select)})"
                                               for s in cfg.data.sources],
               "input": cfg.run.input, "fusion": "dynamic" if cfg.model.fusion.dynamic else "concat",
               "loss": {k: getattr(cfg.model.loss, k) for k in ("w_2d", "w_smpl", "w_drc", "w_adv")},
               "w_3d": cfg.objective.w_3d}
    return save(path, trainer.model, cfg.model, body, {"train_state": state, "train_summary": summary})


def _bar(total: int, start: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", desc="train", dynamic_ncols=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1] + "\nConfig layout: training/config.py; "
                                "presets: training/configs/.")
    p.add_argument("--config", required=True, help="training YAML (training/config.py layout)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="STATE",
                   help="continue from run.out_dir/last.pt, or from STATE")
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from these network weights (e.g. assets/weights/fusemesh_lite.pt), fresh optimizer")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set run.steps=200 (repeatable; VALUE is YAML)")
    p.add_argument("--body", default=None, help="body model .npz/.pkl (default: the open body asset)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import yaml

    try:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        cfg = train_config_from_dict(apply_overrides(data, args.set))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {args.config}: {e}", file=sys.stderr)
        return 2
    if args.init_from and args.resume:
        print("error: --init-from starts a new run; --resume continues one: give one of them", file=sys.stderr)
        return 2
    try:
        result = train(cfg, resume=args.resume, body=args.body, progress=not args.no_progress,
                       init_from=args.init_from)
    except ValueError as e:  # CheckpointError, nothing-to-do resume, config mismatch of --init-from
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.history[-1] if result.history else {}
        why = f" (stopped early: {result.stopped})" if result.stopped else ""
        print(f"done: steps {result.start_step}->{result.end_step}{why}, {result.samples_per_s:.1f} samples/s, "
              f"final loss {last.get('loss', float('nan')):.4f}, state {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
