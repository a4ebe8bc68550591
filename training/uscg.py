"""Train the USCG and generate pseudo SMPL labels: `python -m training.uscg train|generate`.

    python -m training.uscg train --config training/configs/lite.yaml [--set uscg.steps=2000] [--resume]
    python -m training.uscg generate --uscg runs/uscg/uscg.pt --data data/train --view kinect_v1_like \\
        --select 0 0.5 --out runs/uscg/v1_labels.npz
    python -m training.uscg generate --uscg runs/uscg/uscg.pt --pku-mmd 0002-L.txt --out pku_labels.npz
    python -m training.uscg generate --uscg runs/uscg/uscg.pt --cad60 0512164529.txt --out cad_labels.npz
    python -m training.uscg generate --uscg runs/uscg/uscg.pt --data data/cad60 --view skeleton --out cad60.npz

train: (keypoints, SMPL) pairs made on the fly (paper sec. 3.3, eq. (2)). Body poses come from AMASS
(`uscg.amass`: a folder of *_poses.npz, read with training/datasets/amass.py) or, without it, from the
synth pose sampler (training/synth/poses.py); betas ~ N(0, beta_std^2) clipped at 2.5; the global
orientation is a camera view of an upright body: yaw uniform over 360 deg, pitch +- `tilt_deg`, roll
+- tilt_deg / 3, in FuseMesh's camera frame (x right, y down, z forward). The input is the canonical
15-joint set (model/uscg.py) of the posed body plus Gaussian noise (`joint_noise_m`); the loss is
model.uscg.uscg_loss (rotation-matrix parameter L2 + cycle_weight x joint cycle). Pairs and cycle use
`SkeletonLayer`, the body's joints without its mesh (exact, and ~30x faster per step on a CPU than
posing 13k vertices; the gate in `generate` still runs the full body model). The state file
(`uscg.out`) holds the USCG weights, optimizer state, step and the model config; `--resume` continues.

generate: skeletons of a skeleton-only dataset -> canonical joints in metres with OpenCV axes -> USCG ->
pseudo [beta, theta] with the quality gate (PA-MPJPE(J, X(G(J))) <= threshold, paper: 100 mm). Writes
an npz (index, theta (N,72), betas (N,10), accepted (N,), err_mm (N,), threshold_mm) and prints a
pass-rate report. For synthetic views, where the truth is known, the report adds the pseudo label's
error against the true SMPL joints. `--view skeleton` reads the skeletons a converted real dataset stores
(`python -m training.datasets.convert`), indexed like its samples, so the npz is that folder's
`smpl_labels`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from model.camera import axis_angle_to_matrix
from model.uscg import USCG, canonical_joints, uscg_loss

FORMAT = "fusemesh.uscg_state"


# ------------------------------------------------------------------------------------ training pairs
def camera_orientations(n: int, rng: np.random.Generator, tilt_deg: float) -> np.ndarray:
    """(n, 3) axis-angle global orientations: an upright body seen by a camera (yaw 360 deg, pitch +- tilt,
    roll +- tilt/3), camera frame x right, y down, z forward."""
    yaw = rng.uniform(-np.pi, np.pi, n)
    pitch = np.deg2rad(rng.uniform(-tilt_deg, tilt_deg, n))
    roll = np.deg2rad(rng.uniform(-tilt_deg / 3, tilt_deg / 3, n))
    r = (Rotation.from_euler("z", roll[:, None]) * Rotation.from_euler("x", pitch[:, None])
         * Rotation.from_euler("x", np.pi) * Rotation.from_euler("y", yaw[:, None]))
    return r.as_rotvec()


class PoseSource:
    """Body poses (n, 72) with zero global orientation: AMASS frames or the synth pose sampler."""

    def __init__(self, amass_dir: str = "") -> None:
        self.bank: np.ndarray | None = None
        if amass_dir:
            from training.datasets.amass import read_amass_npz

            files = sorted(Path(amass_dir).rglob("*_poses.npz"))
            if not files:
                raise FileNotFoundError(f"uscg.amass: no AMASS *_poses.npz under {amass_dir}")
            self.bank = np.concatenate([read_amass_npz(f).smpl_pose() for f in files])
            self.bank[:, :3] = 0.0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.bank is not None:
            return self.bank[rng.integers(0, self.bank.shape[0], n)].copy()
        from training.synth.poses import sample_body_poses

        return sample_body_poses(n, rng)


class SkeletonLayer(torch.nn.Module):
    """The body model's 24 joints without its mesh: J(beta) = J_regressor (v_template + shapedirs beta),
    posed by forward kinematics (smplx.lbs.batch_rigid_transform). The same joints as the body's forward
    (SMPL's joints do not depend on the pose blend shapes), ~100x cheaper for a 13k-vertex body: the
    USCG's training pairs and its cycle term need joints only. rotmat (B,24,3,3), betas (B,nb) -> (B,24,3)."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        jr = body.J_regressor.detach().float()
        self.register_buffer("j_template", jr @ body.v_template.detach().float())  # (24, 3)
        self.register_buffer("j_shapedirs", torch.einsum("jv,vcb->jcb", jr, body.shapedirs.detach().float()))
        self.parents = body.parents

    def forward(self, rotmat: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        from smplx.lbs import batch_rigid_transform

        joints = self.j_template + torch.einsum("jcb,nb->njc", self.j_shapedirs, betas)
        posed, _ = batch_rigid_transform(rotmat, joints, self.parents, dtype=rotmat.dtype)
        return posed


@torch.no_grad()
def make_pairs(body: Any, poses: PoseSource, n: int, rng: np.random.Generator, tilt_deg: float,
               beta_std: float, noise_m: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """n training pairs: (noisy canonical joints (n,15,3), clean canonical joints, rotmat (n,24,3,3), betas (n,10)).
    `body`: a BodyModel or its SkeletonLayer."""
    theta = poses.sample(n, rng)
    theta[:, :3] = camera_orientations(n, rng, tilt_deg)
    nb = int(body.j_shapedirs.shape[-1]) if isinstance(body, SkeletonLayer) else int(getattr(body, "num_betas", 10))
    betas = np.clip(rng.normal(0.0, beta_std, (n, nb)), -2.5, 2.5)
    rot = axis_angle_to_matrix(torch.as_tensor(theta, dtype=torch.float32).reshape(n, 24, 3))
    b = torch.as_tensor(betas, dtype=torch.float32)
    if isinstance(body, SkeletonLayer):
        joints = body(rot, b)
    else:
        joints = body(betas=b, body_pose=rot[:, 1:], global_orient=rot[:, :1], pose2rot=False).joints
    clean = canonical_joints(joints)
    noisy = clean + torch.as_tensor(rng.normal(0.0, noise_m, clean.shape), dtype=torch.float32)
    return noisy, clean, rot, b


# ------------------------------------------------------------------------------------ state files
def save_uscg(path: Path, uscg: USCG, opt: torch.optim.Optimizer | None, step: int, cfg: Any, body: Any) -> Path:
    from training.config import train_config_to_dict

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = train_config_to_dict(cfg)
    state = {k: v for k, v in uscg.state_dict().items() if not k.startswith("body.")}
    data = {"format": FORMAT, "version": 1, "step": int(step), "model_config": d["model"], "uscg_train": d["uscg"],
            "body": {"model_id": str(getattr(body, "model_id", "")), "sha256": str(getattr(body, "sha256", "")),
                     "source": str(getattr(body, "source", "") or "")},
            "uscg": state, "optimizer": opt.state_dict() if opt is not None else {}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    tmp.replace(path)
    return path


def load_uscg(path: str | Path, body: Any = None) -> tuple[USCG, dict[str, Any]]:
    """(USCG in eval mode, the state dict as saved) from a `train` state file; body as in training.state."""
    from model.config import config_from_dict
    from model.network import build_uscg
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"USCG state not found: {path}")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a USCG state file (format {data.get('format') if isinstance(data, dict) else None!r})")
    body = body_for_state(data, body)
    uscg = build_uscg(config_from_dict(data["model_config"]), body)
    missing, unexpected = uscg.load_state_dict(data["uscg"], strict=False)
    bad = [k for k in missing if not k.startswith("body.")] + list(unexpected)
    if bad:
        raise ValueError(f"{path}: USCG weights do not fit the configured network ({bad[:3]} ...)")
    return uscg.eval(), data


def body_for_state(data: dict[str, Any], body: Any = None) -> Any:
    """The body model a state file was made with: `body` (a BodyModel or a path) if given, else the
    recorded source file, else DEFAULT_BODY_PATH; ValueError if its sha256 differs from the recorded one."""
    from model.body import DEFAULT_BODY_PATH, BodyModel

    info = data.get("body", {})
    if body is None:
        src = Path(info.get("source") or "")
        body = BodyModel.from_file(src if src.is_file() else DEFAULT_BODY_PATH)
    elif isinstance(body, (str, Path)):
        body = BodyModel.from_file(body)
    want = info.get("sha256", "")
    if want and getattr(body, "sha256", "") and body.sha256 != want:
        raise ValueError(f"body model {getattr(body, 'source', '?')} (sha256 {body.sha256[:12]}) is not the one "
                         f"the USCG was trained with ({info.get('model_id')!r}, sha256 {want[:12]}); pass --body")
    return body


# ------------------------------------------------------------------------------------ train
def train_uscg(cfg: Any, body: Any = None, resume: bool = False, progress: bool = True,
               val_size: int = 512) -> dict[str, float]:
    """Train per cfg.model.uscg / cfg.uscg; returns validation numbers (PA-MPJPE of the cycle, pass rate)."""
    from model.body import DEFAULT_BODY_PATH, BodyModel
    from model.network import build_uscg

    if body is None or isinstance(body, (str, Path)):
        body = BodyModel.from_file(body or DEFAULT_BODY_PATH)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    u = cfg.uscg
    torch.manual_seed(cfg.run.seed)
    uscg = build_uscg(cfg.model, body)
    opt = torch.optim.Adam([p for n, p in uscg.named_parameters() if not n.startswith("body.")], lr=u.lr)
    out = Path(u.out)
    start = 0
    if resume:
        loaded, data = load_uscg(out, body)
        uscg.load_state_dict(loaded.state_dict())
        opt.load_state_dict(data["optimizer"])
        start = int(data["step"])
    poses = PoseSource(u.amass)
    skeleton = SkeletonLayer(body)  # joints only: the cycle term does not need the mesh
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=u.steps, initial=start, unit="step", desc="uscg", dynamic_ncols=True)
    uscg.train()
    for step in range(start, u.steps):
        rng = np.random.default_rng([cfg.run.seed, step, 4242])
        noisy, clean, rot, betas = make_pairs(skeleton, poses, u.batch_size, rng, u.tilt_deg, u.beta_std,
                                              u.joint_noise_m)
        pred = uscg(noisy)
        cycled = canonical_joints(skeleton(pred.rotmat, pred.betas))  # = uscg.cycle_joints, without the mesh
        loss, parts = uscg_loss(pred, cycled, clean, rot, betas, cfg.model.uscg.cycle_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.set_postfix(loss=f"{loss.item():.4f}", cycle_mm=f"{1000 * (parts['cycle'].item() / 15) ** 0.5:.0f}",
                            refresh=False)
            bar.update(1)
        if (step + 1) % u.ckpt_every == 0 or step + 1 == u.steps:
            save_uscg(out, uscg, opt, step + 1, cfg, body)
    if bar is not None:
        bar.close()
    uscg.eval()
    rng = np.random.default_rng([cfg.run.seed, 999_999])
    noisy, clean, rot, betas = make_pairs(skeleton, poses, val_size, rng, u.tilt_deg, u.beta_std, u.joint_noise_m)
    _, accepted, err = uscg.generate(noisy)  # the gate through the full body model, as `generate` runs it
    res = {"val_cycle_pa_mpjpe_mm": float(err.mean()), "val_pass_rate": float(accepted.float().mean()),
           "steps": u.steps}
    return res


# ------------------------------------------------------------------------------------ generate
def skeletons_from_view(folder: str | Path, view: str, select: Sequence[float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index (N,), canonical joints (N,15,3) m OpenCV axes, true SMPL joints (N,24,3)) of a synthetic view,
    or (view 'skeleton') of a converted real dataset's stored skeletons (true joints NaN)."""
    from training.data import read_skeleton_source

    a, v, skel = read_skeleton_source(folder, view, select)  # 'skeleton': a converted real dataset (truth NaN)
    return a["index"].astype(np.int64), v.canonical(skel), a["joints3d"].astype(np.float64)


def skeletons_from_file(path: str | Path, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """(index (N,) = frame * people + person, canonical joints (N,15,3) m OpenCV axes) of a PKU-MMD or
    CAD-60 skeleton file (tracked people only)."""
    from training.datasets.joint_sets import to_canonical

    if fmt == "pku_mmd":
        from training.datasets.pku_mmd import read_pku_mmd_skeleton

        seq, set_name = read_pku_mmd_skeleton(path), "kinect_v2"
    else:
        from training.datasets.cad60 import read_cad60_skeleton

        seq, set_name = read_cad60_skeleton(path).skeleton, "kinect_v1"
    seq = seq.to_opencv()
    t, p = seq.valid.shape
    idx = np.flatnonzero(seq.valid.reshape(-1))
    joints = seq.joints.reshape(t * p, -1, 3)[idx]
    return idx.astype(np.int64), to_canonical(joints, set_name)


def generate_labels(uscg: USCG, canon: np.ndarray, threshold_mm: float, batch: int = 512) -> dict[str, np.ndarray]:
    """Run the USCG with its quality gate over canonical joints (N, 15, 3) metres."""
    thetas, betas, acc, errs, joints = [], [], [], [], []
    with torch.no_grad():
        for s in range(0, canon.shape[0], batch):
            j = torch.as_tensor(canon[s:s + batch], dtype=torch.float32)
            out, accepted, err = uscg.generate(j, threshold_mm)
            thetas.append(out.theta.numpy())
            betas.append(out.betas.numpy())
            acc.append(accepted.numpy())
            errs.append(err.numpy())
            body = uscg.body(betas=out.betas, body_pose=out.rotmat[:, 1:], global_orient=out.rotmat[:, :1], pose2rot=False)
            joints.append(body.joints.numpy())
    return {"theta": np.concatenate(thetas).astype(np.float32), "betas": np.concatenate(betas).astype(np.float32),
            "accepted": np.concatenate(acc).astype(bool), "err_mm": np.concatenate(errs).astype(np.float32),
            "joints": np.concatenate(joints)}


def pass_rate_report(name: str, labels: dict[str, np.ndarray], threshold_mm: float,
                     truth_err_mm: np.ndarray | None = None) -> str:
    """The printed report of `generate`."""
    n = labels["accepted"].shape[0]
    k = int(labels["accepted"].sum())
    e = labels["err_mm"]
    lines = [f"USCG pseudo labels for {name}: {n} skeletons",
             f"  accepted (cycle PA-MPJPE <= {threshold_mm:g} mm): {k} / {n} = {100.0 * k / max(n, 1):.1f} %",
             f"  cycle PA-MPJPE (mm): mean {e.mean():.1f}, median {np.median(e):.1f}, p90 {np.percentile(e, 90):.1f}, "
             f"max {e.max():.1f}"]
    if truth_err_mm is not None:
        acc = labels["accepted"]
        lines.append(f"  pseudo label vs true SMPL joints, PA-MPJPE (mm): all {truth_err_mm.mean():.1f}, "
                     f"accepted {truth_err_mm[acc].mean() if acc.any() else float('nan'):.1f}, "
                     f"rejected {truth_err_mm[~acc].mean() if (~acc).any() else float('nan'):.1f}")
    return "\n".join(lines)


def generate(uscg_path: str | Path, out: str | Path, *, data: str | None = None, view: str = "",
             select: Sequence[float] = (0.0, 1.0), pku_mmd: str | None = None, cad60: str | None = None,
             threshold_mm: float | None = None, body: Any = None, verbose: bool = True) -> dict[str, Any]:
    """Pseudo labels for one skeleton-only dataset (see the module docstring); returns a summary dict."""
    from model.metrics import pa_mpjpe

    uscg, _ = load_uscg(uscg_path, body)
    thr = float(uscg.quality_threshold_mm if threshold_mm is None else threshold_mm)
    truth = None
    if data:
        if not view:
            raise ValueError("--data needs --view (kinect_v1_like, kinect_v2_like, or skeleton for a converted real dataset)")
        index, canon, true_joints = skeletons_from_view(data, view, select)
        name = f"{view} of {data} [{select[0]:g}, {select[1]:g})"
    elif pku_mmd or cad60:
        index, canon = skeletons_from_file(pku_mmd or cad60, "pku_mmd" if pku_mmd else "cad60")
        name = str(pku_mmd or cad60)
    else:
        raise ValueError("give --data DIR --view NAME, --pku-mmd FILE or --cad60 FILE")
    if index.size == 0:
        raise ValueError(f"{name}: no skeletons to label")
    labels = generate_labels(uscg, canon, thr)
    if data and np.isfinite(true_joints).all():
        t = torch.as_tensor(true_joints, dtype=torch.float32)
        p = torch.as_tensor(labels["joints"], dtype=torch.float32)
        truth = pa_mpjpe(p, t).numpy()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, index=index, theta=labels["theta"], betas=labels["betas"], accepted=labels["accepted"],
             err_mm=labels["err_mm"], threshold_mm=np.float32(thr))
    report = pass_rate_report(name, labels, thr, truth)
    if verbose:
        print(report)
    return {"n": int(index.size), "accepted": int(labels["accepted"].sum()),
            "pass_rate": float(labels["accepted"].mean()), "cycle_mm_mean": float(labels["err_mm"].mean()),
            "truth_mm_mean": float(truth.mean()) if truth is not None else None, "out": str(out), "report": report}


# ------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.uscg", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the USCG on (keypoints, SMPL) pairs")
    t.add_argument("--config", required=True, help="training YAML (its model.uscg and uscg sections)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from uscg.out")
    t.add_argument("--body", default=None, help="body model file (default: the open body asset)")
    t.add_argument("--no-progress", action="store_true")
    g = sub.add_parser("generate", help="pseudo SMPL labels for a skeleton-only dataset, with the quality gate")
    g.add_argument("--uscg", required=True, help="state file written by `train`")
    g.add_argument("--out", required=True, help="output .npz")
    g.add_argument("--data", help="synthetic shard folder (with --view)")
    g.add_argument("--view", default="", help="kinect_v1_like or kinect_v2_like (synthetic), skeleton (a converted real dataset)")
    g.add_argument("--select", nargs=2, type=float, default=(0.0, 1.0), metavar=("START", "STOP"),
                   help="fraction range of the folder's samples")
    g.add_argument("--pku-mmd", help="a PKU-MMD skeleton .txt")
    g.add_argument("--cad60", help="a CAD-60 skeleton .txt")
    g.add_argument("--threshold", type=float, default=None, help="gate in mm (default: the model config's, 100)")
    g.add_argument("--body", default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "train":
            import yaml

            from training.config import apply_overrides, train_config_from_dict

            path = Path(args.config)
            if not path.is_file():
                raise FileNotFoundError(f"training config not found: {path}")
            cfg = train_config_from_dict(apply_overrides(yaml.safe_load(path.read_text()) or {}, args.set))
            t0 = time.perf_counter()
            res = train_uscg(cfg, body=args.body, resume=args.resume, progress=not args.no_progress)
            print(json.dumps({**res, "seconds": round(time.perf_counter() - t0, 1), "out": cfg.uscg.out}))
        else:
            generate(args.uscg, args.out, data=args.data, view=args.view, select=args.select,
                     pku_mmd=args.pku_mmd, cad60=args.cad60, threshold_mm=args.threshold, body=args.body)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
