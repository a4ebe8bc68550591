"""One training update of FuseMesh: eq. (6) with the dynamic fusion policy, the discriminator step, AMP, DDP.

    trainer = Trainer(cfg, body, device, rank=0, world_size=1)
    scalars = trainer.step(batch, step)        # batch: training.data.collate output; step: 0-based

Per step (all randomness is seeded by (run.seed, step, rank), so a resumed run repeats a straight one):
1. stream mask (B, 2) [rgb_on, depth_on]: the model's policy (`FeatureFusion.sample_mask`: p_miss per
   stream, never both; p_miss = 0 for the concat baseline), or fixed by `run.input` ('rgb' / 'depth'
   for the single-stream baselines). RGB-only samples always get [1, 0]: their depth input is zero.
2. forward, losses (fp32), eq. (6): w_2d L2d + w_smpl Lsmpl + w_drc Ldrc + w_adv Ladv, plus the
   training-only w_3d L3d:
   - L2d: L1 on the 14 LSP joints (normalised crop coordinates), visibility-masked;
   - Lsmpl: squared L2 on body-joint rotation matrices + betas against the sample's SMPL target
     (ground truth or USCG pseudo label that passed the gate); the global orientation only where the
     label is in the camera frame (`objective.smpl_global_orient`, ground truth only);
   - Ldrc: depth ranking of the LSP joints read from the *input* depth map at the annotated 2D
     keypoints (visible joints of samples that have depth; the depth is data, so it supervises even
     when the policy hid the depth stream);
   - L3d: root-relative (mid-hip) squared distance between the predicted SMPL joints and a dataset
     skeleton's joints at their SMPL partners, in the dataset's own frame (the "2d+adv+3D" baseline);
   - Ladv: HMR's LSGAN generator loss through the discriminator (its weights frozen for this pass).
3. backward (GradScaler for fp16), optional clipping, Adam step with the scheduled learning rate.
4. discriminator step (when w_adv > 0): real (rotations, betas) from the prior bank vs the detached
   prediction.

DDP: the network and the discriminator are wrapped in DistributedDataParallel (gradients all-reduced;
BatchNorm statistics broadcast from rank 0 each forward; the body model's constant buffers are
excluded from that broadcast). Reported scalars are averaged over ranks. Runs on the calling thread.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from model.camera import axis_angle_to_matrix
from model.losses import (adv_discriminator_loss, adv_generator_loss, combine_losses, drc_loss,
                          keypoint_2d_loss, smpl_param_loss)
from model.network import build_discriminator, build_fusemesh

HIPS = (1, 2)  # SMPL left_hip, right_hip: the root of the 3D skeleton loss (both Kinect skeletons have hips)


def step_seed(seed: int, step: int, rank: int, salt: int) -> int:
    """A 63-bit seed for (run seed, step, rank, purpose)."""
    return int(np.random.SeedSequence([int(seed), int(step), int(rank), int(salt)]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def skeleton_3d_loss(pred_joints: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     valid: torch.Tensor) -> torch.Tensor:
    """Root-relative 3D joint loss: pred (B, 24, 3) SMPL joints, target (B, 24, 3) metres in the dataset's
    frame at the SMPL partner joints, mask (B, 24) joints present, valid (B,) samples with a skeleton.
    Both sets are centred on their mid-hips; mean over present joints of the squared distance (m^2)."""
    p = pred_joints - pred_joints[:, list(HIPS)].mean(1, keepdim=True)
    t = target - target[:, list(HIPS)].mean(1, keepdim=True)
    w = (mask & valid[:, None]).to(p.dtype)
    return ((p - t) ** 2).sum(-1).mul(w).sum() / w.sum().clamp(min=1.0)


# ------------------------------------------------------------------------------------ prior bank
@dataclass
class PriorBank:
    """'Real' samples for the discriminator: body rotations (N, 23, 3, 3) and betas (N, 10)."""

    rotmat: torch.Tensor
    betas: torch.Tensor

    def sample(self, batch: int, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, self.rotmat.shape[0], (batch,), generator=generator)
        return self.rotmat[idx].to(device), self.betas[idx].to(device)


def build_prior_bank(size: int, seed: int, amass_dir: str = "", num_betas: int = 10) -> PriorBank:
    """`size` poses: frames of AMASS *_poses.npz under `amass_dir` (their betas too), or the synth pose
    sampler's poses with betas ~ N(0, 1) clipped at 2.5 (the synth scene sampler's law)."""
    rng = np.random.default_rng([int(seed), 31337])
    if amass_dir:
        from training.datasets.amass import read_amass_npz

        files = sorted(Path(amass_dir).rglob("*_poses.npz"))
        if not files:
            raise FileNotFoundError(f"data.prior: no AMASS *_poses.npz under {amass_dir}")
        poses, betas = [], []
        for f in files:
            seq = read_amass_npz(f)
            p = seq.smpl_pose()
            poses.append(p)
            betas.append(np.repeat(seq.smpl_betas(num_betas)[None], p.shape[0], 0))
        pose_all, beta_all = np.concatenate(poses), np.concatenate(betas)
        pick = rng.choice(pose_all.shape[0], size=size, replace=pose_all.shape[0] < size)
        theta, b = pose_all[pick], beta_all[pick]
    else:
        from training.synth.poses import sample_body_poses

        theta = sample_body_poses(size, rng)
        b = np.clip(rng.normal(0.0, 1.0, (size, num_betas)), -2.5, 2.5)
    rot = axis_angle_to_matrix(torch.as_tensor(theta, dtype=torch.float32).reshape(size, 24, 3))[:, 1:]
    return PriorBank(rotmat=rot.contiguous(), betas=torch.as_tensor(b, dtype=torch.float32))


# ------------------------------------------------------------------------------------ trainer
def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for run.amp on `device` (None = full precision)."""
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


class Trainer:
    """Owns the network, the discriminator, their optimizers and the AMP scaler; `step` runs one update.

    cfg: training.config.TrainConfig; body: model.body.BodyModel; device: where to train; rank /
    world_size: DDP position (world_size > 1 needs an initialised process group); prior: the
    discriminator's real bank (default: `build_prior_bank` from cfg.data); channels_last: run the network
    on channels-last tensors (None = on the CPU only, where oneDNN's convolutions are faster that way).
    """

    def __init__(self, cfg: Any, body: nn.Module, device: torch.device | str, rank: int = 0, world_size: int = 1,
                 prior: PriorBank | None = None, channels_last: bool | None = None) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.rank, self.world = int(rank), int(world_size)
        self.loss_cfg = cfg.model.loss
        self.model = build_fusemesh(cfg.model, body).to(self.device)
        # on CPUs, oneDNN's convolutions run ~14 % faster per step on channels-last tensors (lite, batch 32,
        # 2 threads: 44.6 vs 39.2 samples/s); weights keep their values, so checkpoints are unaffected
        self.channels_last = self.device.type == "cpu" if channels_last is None else bool(channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.disc = build_discriminator(cfg.model, int(getattr(body, "num_betas", 10))).to(self.device)
        self.use_adv = self.loss_cfg.w_adv > 0
        self.prior = prior if prior is not None or not self.use_adv else build_prior_bank(
            cfg.data.prior_size, cfg.run.seed, cfg.data.prior, int(getattr(body, "num_betas", 10)))
        o = cfg.optim
        self.opt = torch.optim.Adam(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=o.disc_lr, weight_decay=o.weight_decay)
        self.amp_dtype = resolve_amp(cfg.run.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.disc_scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.net: nn.Module = self.model
        self.disc_net: nn.Module = self.disc
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            body_buffers = [f"body.{n}" for n, _ in self.model.body.named_buffers()]
            DDP._set_params_and_buffers_to_ignore_for_model(self.model, body_buffers)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(self.model, device_ids=ids)  # default: rank 0's buffers (BN stats) synced per forward
            self.disc_net = DDP(self.disc, device_ids=ids)  # has no buffers

    # ---------------------------------------------------------------- schedule / masks
    def lr_at(self, step: int, base: float, progress: float | None = None) -> float:
        """Learning rate at 0-based `step`: linear warm-up, then cosine to 1 % of `base` over run.steps.
        `progress` (0..1, e.g. the used fraction of run.time_limit_s) moves the cosine further when it is
        ahead of step / run.steps."""
        o = self.cfg.optim
        f = 1.0
        if o.warmup_steps and step < o.warmup_steps:
            f = (step + 1) / o.warmup_steps
        if o.schedule == "cosine":
            t = min(1.0, max(step / max(1, self.cfg.run.steps), progress or 0.0))
            f *= 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
        return base * f

    def stream_mask(self, has_depth: torch.Tensor, step: int) -> torch.Tensor:
        """(B, 2) float [rgb_on, depth_on] for this step (see the module docstring)."""
        b = has_depth.shape[0]
        mode = self.cfg.run.input
        if mode == "rgb":
            mask = torch.tensor([[1.0, 0.0]]).expand(b, 2).clone()
        elif mode == "depth":
            mask = torch.tensor([[0.0, 1.0]]).expand(b, 2).clone()
        else:
            g = torch.Generator().manual_seed(step_seed(self.cfg.run.seed, step, self.rank, 1))
            mask = self.model.fusion.sample_mask(b, generator=g).float()
        rgb_only = ~has_depth.bool().cpu()
        mask[rgb_only] = torch.tensor([1.0, 0.0])
        return mask.to(self.device)

    # ---------------------------------------------------------------- the update
    def step(self, batch: dict[str, torch.Tensor], step: int, progress: float | None = None) -> dict[str, float]:
        """One update on `batch` at 0-based global step `step`; returns scalars averaged over ranks.
        `progress`: see `lr_at` (None: the schedule follows the step count alone)."""
        cfg, lc = self.cfg, self.loss_cfg
        dev = self.device
        b = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        if self.channels_last:
            b["rgb"] = b["rgb"].contiguous(memory_format=torch.channels_last)
            b["depth"] = b["depth"].contiguous(memory_format=torch.channels_last)
        mask = self.stream_mask(batch["has_depth"], step)
        torch.manual_seed(step_seed(cfg.run.seed, step, self.rank, 2))  # dropout
        self.model.train()
        self.disc.train()
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(step, cfg.optim.lr, progress)
        for group in self.disc_opt.param_groups:
            group["lr"] = self.lr_at(step, cfg.optim.disc_lr, progress)

        autocast = (torch.autocast(device_type=dev.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            out = self.net(b["rgb"], b["depth"], b["ref_depth"], stream_mask=mask)
        out = {k: v.float() for k, v in out.items()}
        terms: dict[str, torch.Tensor] = {}
        scalars: dict[str, torch.Tensor] = {}
        terms["2d"] = keypoint_2d_loss(out["lsp_2d"], b["kp2d"], b["vis2d"])
        if lc.w_smpl > 0:
            has = b["has_smpl"]
            body_term = smpl_param_loss(out["rotmat"][:, 1:], out["beta"], b["smpl_rotmat"][:, 1:],
                                        b["smpl_betas"], valid=has, beta_weight=lc.beta_weight)
            if cfg.objective.smpl_global_orient:
                glob = has & b["has_global"]
                body_term = body_term + smpl_param_loss(out["rotmat"][:, :1], out["beta"][:, :0],
                                                        b["smpl_rotmat"][:, :1], b["smpl_betas"][:, :0], valid=glob)
            terms["smpl"] = body_term
        if lc.w_drc > 0:
            vis = b["vis2d"] & b["has_depth"][:, None]
            terms["drc"] = drc_loss(out["lsp_joints"][..., 2], b["depth"], b["kp2d"], visibility=vis,
                                    margin_m=lc.drc_margin_m, window=lc.drc_window)
        if self.use_adv:
            for p in self.disc.parameters():
                p.requires_grad_(False)
            with autocast:
                fake_scores = self.disc(out["rotmat"][:, 1:], out["beta"])
            for p in self.disc.parameters():
                p.requires_grad_(True)
            terms["adv"] = adv_generator_loss(fake_scores.float())
        total = combine_losses(terms, lc)
        if cfg.objective.w_3d > 0:
            l3d = skeleton_3d_loss(out["joints"], b["skel24"], b["skel24_mask"], b["has_skel"])
            total = total + cfg.objective.w_3d * l3d
            scalars["loss_3d"] = l3d.detach()

        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            scalars["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip).detach()
        self.scaler.step(self.opt)
        self.scaler.update()

        if self.use_adv:
            g = torch.Generator().manual_seed(step_seed(cfg.run.seed, step, self.rank, 3))
            real_rot, real_betas = self.prior.sample(out["beta"].shape[0], g, dev)
            n_real = real_rot.shape[0]
            with autocast:  # one forward for both halves (one DDP forward per backward)
                scores = self.disc_net(torch.cat([real_rot, out["rotmat"][:, 1:].detach()]),
                                       torch.cat([real_betas, out["beta"].detach()]))
            d_loss = adv_discriminator_loss(scores[:n_real].float(), scores[n_real:].float())
            self.disc_opt.zero_grad(set_to_none=True)
            self.disc_scaler.scale(d_loss).backward()
            self.disc_scaler.step(self.disc_opt)
            self.disc_scaler.update()
            scalars["disc"] = d_loss.detach()

        scalars["loss"] = total.detach()
        for k, v in terms.items():
            scalars[f"loss_{k}"] = v.detach()
        scalars["rgb_on"] = mask[:, 0].mean()
        scalars["depth_on"] = mask[:, 1].mean()
        return self._reduce(scalars)

    def _reduce(self, scalars: dict[str, torch.Tensor]) -> dict[str, float]:
        names = sorted(scalars)
        vec = torch.stack([scalars[k].float().reshape(()) for k in names])
        if self.world > 1:
            dist.all_reduce(vec, op=dist.ReduceOp.SUM)
            vec = vec / self.world
        return dict(zip(names, vec.cpu().tolist()))

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "discriminator": self.disc.state_dict(),
                "optimizer": self.opt.state_dict(), "disc_optimizer": self.disc_opt.state_dict(),
                "scaler": self.scaler.state_dict(), "disc_scaler": self.disc_scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.disc.load_state_dict(state["discriminator"])
        self.opt.load_state_dict(state["optimizer"])
        self.disc_opt.load_state_dict(state["disc_optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if state.get("disc_scaler"):
            self.disc_scaler.load_state_dict(state["disc_scaler"])
