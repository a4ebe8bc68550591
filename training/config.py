"""Typed, strict training configuration: dataclasses + YAML, built on model/config's loader (one system).

    cfg = load_train_config("training/configs/lite.yaml")
    cfg = train_config_from_dict({"model": {"preset": "lite", "input_size": 64}, "run": {"steps": 10}})

Layout (every section optional; unknown keys raise ValueError naming the nearest valid key, wrong types
and out-of-range values raise ValueError naming the key):

    model:      a `model.config.ModelConfig` section: `preset` (default 'lite') plus overrides. Its
                `loss` holds the weights of eq. (6): w_2d, w_smpl, w_drc, w_adv (0 = term off).
    objective:  training-only terms: w_3d (3D skeleton loss of the paper's "2d+adv+3D" baseline),
                smpl_global_orient (include the global orientation in Lsmpl when the label has one).
    data:       sources (list of SourceConfig), batch_size (global, over all ranks), rgb_fraction (share
                of each batch drawn from RGB-only sources, paper sec. 4: 0.5), augmentation, prior.
    optim:      Adam for the regressor and the discriminator.
    run:        steps, seed, device, AMP, input streams, logging/checkpoint cadence, out_dir.
    uscg:       training of the USCG (`python -m training.uscg train`).

A source is one shard folder (synthetic: `python -m training.synth make`; a real dataset converted by
`python -m training.datasets.convert`) seen in one way:

    {path: data/train, kind: rgbd, labels: kinect_v1_like, smpl_labels: out/v1_uscg.npz, select: [0.0, 0.5]}

kind: 'rgbd' (RGB + depth) or 'rgb' (RGB only: zero depth input, no DRC; the paper's COCO/LSP role).
labels: what 3D supervision the source exposes besides its 2D keypoints: 'smpl' (ground-truth SMPL,
AMASS-like), 'kinect_v1_like' / 'kinect_v2_like' (only a skeleton in that convention, see
training/data.py; SMPL targets then come from `smpl_labels`, the USCG's pseudo labels), 'skeleton' (a
converted real dataset's own stored skeleton, used the same way), or 'none'.
select: [start, stop) fractions of the folder's samples (disjoint splits of one folder).
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import ModelConfig, _build, _check, _merge, config_from_dict, config_to_dict, to_plain

SOURCE_KINDS = ("rgbd", "rgb")
SOURCE_LABELS = ("smpl", "kinect_v1_like", "kinect_v2_like", "skeleton", "none")
INPUT_MODES = ("policy", "rgb", "depth")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class SourceConfig:
    """One training source: a shard folder, its input kind, the labels it exposes and a sample range."""

    path: str = ""
    kind: str = "rgbd"
    labels: str = "smpl"
    smpl_labels: str = ""  # npz from `python -m training.uscg generate` ('' = none)
    select: tuple[float, ...] = (0.0, 1.0)  # [start, stop) fractions of the folder

    def __post_init__(self) -> None:
        _check(bool(self.path), "path", "a source needs the path of a shard folder")
        _check(self.kind in SOURCE_KINDS, "kind", f"must be one of {SOURCE_KINDS}, got {self.kind!r}")
        _check(self.labels in SOURCE_LABELS, "labels", f"must be one of {SOURCE_LABELS}, got {self.labels!r}")
        _check(len(self.select) == 2 and 0.0 <= self.select[0] < self.select[1] <= 1.0, "select",
               f"must be [start, stop) with 0 <= start < stop <= 1, got {list(self.select)}")


@dataclass
class DataConfig:
    """What a batch is made of and how samples are augmented."""

    sources: tuple[SourceConfig, ...] = ()
    batch_size: int = 40  # global batch (paper: 40), split evenly over DDP ranks
    rgb_fraction: float = 0.5  # share of RGB-only samples per batch when both kinds exist (paper: equal)
    workers: int = 0  # DataLoader worker processes per rank
    flip_prob: float = 0.5  # left-right mirror (image, 2D/3D joints, pose)
    color_jitter: float = 0.2  # +- relative brightness / contrast change of the RGB crop
    prior: str = ""  # folder of AMASS *_poses.npz for the adversarial prior ('' = synth pose sampler)
    prior_size: int = 4096  # poses in the discriminator's "real" bank

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(0.0 <= self.rgb_fraction < 1.0, "rgb_fraction", f"must be in [0, 1), got {self.rgb_fraction}")
        _check(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")
        _check(0.0 <= self.flip_prob <= 1.0, "flip_prob", f"must be in [0, 1], got {self.flip_prob}")
        _check(0.0 <= self.color_jitter < 1.0, "color_jitter", f"must be in [0, 1), got {self.color_jitter}")
        _check(self.prior_size >= 1, "prior_size", f"must be >= 1, got {self.prior_size}")


@dataclass
class ObjectiveConfig:
    """Training-only loss terms on top of `model.loss` (eq. (6) weights live there)."""

    w_3d: float = 0.0  # root-relative 3D skeleton L2 (metres); the paper's "2d+adv+3D" single-dataset baseline
    smpl_global_orient: bool = True  # include the global orientation in Lsmpl where the label has one
    #                                  (ground-truth SMPL only: USCG labels are in the dataset's own frame)

    def __post_init__(self) -> None:
        _check(self.w_3d >= 0, "w_3d", f"must be >= 0, got {self.w_3d}")


@dataclass
class OptimConfig:
    """Adam for the network and for the discriminator; optional cosine decay and gradient clipping."""

    lr: float = 1e-4  # paper: 1e-5 (for its much longer schedule)
    disc_lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "constant"  # 'constant' or 'cosine' (to 1 % of lr at run.steps)
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max global grad norm, 0 = off

    def __post_init__(self) -> None:
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(self.disc_lr > 0, "disc_lr", f"must be > 0, got {self.disc_lr}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.schedule in ("constant", "cosine"), "schedule",
               f"must be 'constant' or 'cosine', got {self.schedule!r}")
        _check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(self.grad_clip >= 0, "grad_clip", f"must be >= 0, got {self.grad_clip}")


@dataclass
class RunConfig:
    """How long, where and on what a run goes."""

    steps: int = 1000
    seed: int = 0
    device: str = "auto"  # 'auto' = cuda:LOCAL_RANK when available, else cpu
    amp: str = "auto"  # 'auto' = bf16 (fp16 + GradScaler without bf16) on CUDA, off on CPU
    input: str = "policy"  # 'policy': the model's fusion policy (dynamic / concat); 'rgb' or 'depth': one stream only
    threads: int = 0  # torch CPU threads per rank (0 = torch's default)
    log_every: int = 10
    ckpt_every: int = 500
    out_dir: str = "runs/default"
    # Seconds of training after which the run stops cleanly (checkpoint + summary; 0 = no limit). The cosine
    # schedule then follows whichever runs out first, steps or time, so a time-boxed run still anneals.
    time_limit_s: float = 0.0

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _check(self.device in DEVICES, "device", f"must be one of {DEVICES}, got {self.device!r}")
        _check(self.amp in AMP_MODES, "amp", f"must be one of {AMP_MODES}, got {self.amp!r}")
        _check(self.input in INPUT_MODES, "input", f"must be one of {INPUT_MODES}, got {self.input!r}")
        _check(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")
        _check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        _check(self.ckpt_every >= 1, "ckpt_every", f"must be >= 1, got {self.ckpt_every}")
        _check(bool(self.out_dir), "out_dir", "must not be empty")
        _check(self.time_limit_s >= 0, "time_limit_s", f"must be >= 0 (0 = no limit), got {self.time_limit_s}")


@dataclass
class UscgTrainConfig:
    """USCG training on (keypoints, SMPL) pairs (`python -m training.uscg train`)."""

    steps: int = 20000
    batch_size: int = 256
    lr: float = 1e-4
    amass: str = ""  # folder of AMASS *_poses.npz ('' = poses from the synth pose sampler)
    joint_noise_m: float = 0.01  # Gaussian noise on the input joints (skeleton trackers are noisy)
    tilt_deg: float = 30.0  # random camera pitch range (+-) of the training skeletons' global orientation
    beta_std: float = 1.0  # betas ~ N(0, beta_std^2), clipped at 2.5 (the synth scene sampler's law)
    ckpt_every: int = 1000
    out: str = "runs/uscg/uscg.pt"

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(self.joint_noise_m >= 0, "joint_noise_m", f"must be >= 0, got {self.joint_noise_m}")
        _check(0 <= self.tilt_deg <= 90, "tilt_deg", f"must be in [0, 90], got {self.tilt_deg}")
        _check(self.beta_std >= 0, "beta_std", f"must be >= 0, got {self.beta_std}")
        _check(self.ckpt_every >= 1, "ckpt_every", f"must be >= 1, got {self.ckpt_every}")


@dataclass
class TrainConfig:
    """A whole training run: the model (with loss weights) and everything training adds."""

    model: ModelConfig = field(default_factory=lambda: config_from_dict({"preset": "lite"}))
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    uscg: UscgTrainConfig = field(default_factory=UscgTrainConfig)

    def __post_init__(self) -> None:
        if self.run.input == "depth" and any(s.kind == "rgb" for s in self.data.sources):
            raise ValueError("run.input: 'depth' cannot use RGB-only sources (they have no depth); "
                             "remove them from data.sources")


_SECTIONS: dict[str, type] = {"objective": ObjectiveConfig, "data": DataConfig, "optim": OptimConfig,
                              "run": RunConfig, "uscg": UscgTrainConfig}


def train_config_from_dict(data: dict[str, Any] | None) -> TrainConfig:
    """TrainConfig from a nested dict (layout in the module docstring); missing keys take defaults."""
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"training config must be a mapping, got {type(data).__name__}")
    data = dict(data or {})
    valid = ["model", *_SECTIONS]
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown config key {str(key)!r}{hint}; valid keys: {sorted(valid)}")
    model_data = data.get("model") or {}
    if not isinstance(model_data, dict):
        raise ValueError(f"model: expected a mapping, got {model_data!r}")
    model_data = dict(model_data)
    model_data.setdefault("preset", "lite")
    try:
        model = config_from_dict(model_data)
    except ValueError as e:
        msg = str(e)
        if msg.startswith("unknown preset"):
            msg = f"model.preset: {msg}"
        elif msg.startswith("unknown config key"):
            msg = msg.replace("unknown config key '", "unknown config key 'model.", 1).replace(
                "did you mean '", "did you mean 'model.", 1)
        else:
            msg = f"model.{msg}"
        raise ValueError(msg) from None
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        raw = data.get(name) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{name}: expected a mapping, got {raw!r}")
        raw = dict(raw)
        sources = raw.pop("sources", None) if cls is DataConfig else None
        base = dataclasses.asdict(cls())
        merged = _merge(base, raw, cls, f"{name}.")
        if cls is DataConfig:
            merged["sources"] = []
        built = _build(cls, merged, f"{name}.")
        if cls is DataConfig and sources is not None:
            built = dataclasses.replace(built, sources=_build_sources(sources))
        sections[name] = built
    return TrainConfig(model=model, **sections)


def _build_sources(raw: Any) -> tuple[SourceConfig, ...]:
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"data.sources: expected a list of sources, got {raw!r}")
    out = []
    for i, entry in enumerate(raw):
        prefix = f"data.sources[{i}]."
        if not isinstance(entry, dict):
            raise ValueError(f"{prefix[:-1]}: expected a mapping, got {entry!r}")
        base = {f.name: f.default for f in dataclasses.fields(SourceConfig)}
        base["path"] = "?"  # placeholder so the merge can run before `path` is checked
        merged = _merge(base, entry, SourceConfig, prefix)
        if "path" not in entry:
            raise ValueError(f"{prefix}path: a source needs the path of a shard folder")
        out.append(_build(SourceConfig, merged, prefix))
    return tuple(out)


def load_train_config(path: str | Path) -> TrainConfig:
    """TrainConfig from a YAML file (yaml.safe_load); errors name the file and the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    data = yaml.safe_load(path.read_text())
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    try:
        return train_config_from_dict(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def train_config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) that `train_config_from_dict` turns back into `cfg`."""
    out: dict[str, Any] = {"model": config_to_dict(cfg.model)}
    for name in _SECTIONS:
        out[name] = to_plain(dataclasses.asdict(getattr(cfg, name)))
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (value parsed as YAML) to a config dict, e.g. run.steps=20."""
    import yaml

    data = dict(data or {})
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {k!r} is not a section")
        node[keys[-1]] = yaml.safe_load(text)
    return data
