"""Typed, strict model configuration: dataclasses, presets `paper` and `lite`, YAML loading.

Pure data (no torch import). `model.network.build_*` maps a `ModelConfig` to modules.

    cfg = preset("lite")
    cfg = load_config("my.yaml")          # {preset: lite, fusion: {p_miss: 0.2}} -> lite with one change
    cfg = config_from_dict({"preset": "paper", "loss": {"drc_margin_m": 0.02}})

Unknown keys raise ValueError naming the nearest valid key; wrong types and out-of-range values raise
ValueError naming the key.

Presets:
- `paper`: the seed paper (sec. 4): 2 x ResNet-50 (2048-d each), fusion FC 4096 -> 2048 (the text's
  "4086" is a typo), p_miss 0.3, HMR's IEF regressor (2 x 1024, 3 iterations), 224 x 224 crops.
- `lite`: fits a 2-core CPU for training and >= 30 fps inference, weights <= 25 MB fp32:
  128 x 128 crops (a standing person 2.5-4 m from an Azure Kinect (NFOV, f ~ 504 px) gives square
  crops of ~270-430 depth pixels, so 128 keeps one sample per 2-3 pixels; the CPU training probe
  learned well at 128); RGB encoder ResNet-18 at half width (32, 256-d features), depth encoder
  ResNet-18 at width 24 (192-d; depth images are smooth, and the 25 MB budget is mostly spent in the
  encoders' last stages: two width-32 encoders plus these heads would be 27 MB); fusion 512 -> 512;
  regressor 2 x 512. 5.55 M parameters = 22.2 MB fp32, 0.52 GFLOPs per frame with the 13.5k-vertex
  open body; `python -m model.bench` measures latency.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# a number in exponent notation without a dot, e.g. 1e-3, which YAML 1.1 loaders leave as a string
_YAML11_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")

ENCODER_ARCHS = ("resnet18", "resnet34", "resnet50")


@dataclass
class EncoderConfig:
    """One image encoder (torchvision ResNet trunk, see model/encoders.py)."""

    arch: str = "resnet50"
    width: int = 64  # first-stage channels; 64 = torchvision's network
    pretrained: bool = False  # ImageNet weights via torchvision (downloads; width 64 only)

    def __post_init__(self) -> None:
        _check(self.arch in ENCODER_ARCHS, "arch", f"must be one of {ENCODER_ARCHS}, got {self.arch!r}")
        _check(self.width >= 1, "width", f"must be >= 1, got {self.width}")
        _check(not self.pretrained or self.width == 64, "pretrained",
               f"ImageNet weights exist only for width 64 (width is {self.width})")


@dataclass
class FusionConfig:
    """Feature fusion FC layers and the stream-dropping training policy (paper 3.2)."""

    hidden: tuple[int, ...] = (4096, 2048)
    dynamic: bool = True  # False = the paper's plain-concatenation baseline (p_miss ignored)
    p_miss: float = 0.3  # per-stream drop probability in training; < 0.5

    def __post_init__(self) -> None:
        _check(len(self.hidden) >= 1 and min(self.hidden) >= 1, "hidden", f"needs positive sizes, got {self.hidden}")
        _check(0.0 <= self.p_miss < 0.5, "p_miss", f"must be in [0, 0.5), got {self.p_miss}")

    @property
    def train_p_miss(self) -> float:
        """The drop probability training uses: p_miss with the dynamic policy, 0 for the baseline."""
        return self.p_miss if self.dynamic else 0.0


@dataclass
class RegressorConfig:
    """HMR's iterative error feedback regressor."""

    hidden: tuple[int, ...] = (1024, 1024)
    n_iter: int = 3
    dropout: float = 0.5

    def __post_init__(self) -> None:
        _check(len(self.hidden) >= 1 and min(self.hidden) >= 1, "hidden", f"needs positive sizes, got {self.hidden}")
        _check(self.n_iter >= 1, "n_iter", f"must be >= 1, got {self.n_iter}")
        _check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class DiscriminatorConfig:
    """HMR's factorised adversarial prior."""

    joint_hidden: tuple[int, ...] = (32, 32)  # shared per-joint rotation embedding
    pose_hidden: tuple[int, ...] = (1024, 1024)  # full-pose discriminator on all joint embeddings
    shape_hidden: tuple[int, ...] = (10, 5)  # shape discriminator

    def __post_init__(self) -> None:
        for name in ("joint_hidden", "pose_hidden", "shape_hidden"):
            v = getattr(self, name)
            _check(len(v) >= 1 and min(v) >= 1, name, f"needs positive sizes, got {v}")


@dataclass
class USCGConfig:
    """Universal SMPL constraint generator (paper 3.3)."""

    n_layers: int = 10  # FC layers in total (ReLU between them)
    hidden: int = 1024
    quality_threshold_mm: float = 100.0  # PA-MPJPE(input, cycled joints) above this = rejected
    cycle_weight: float = 1.0  # weight of the joint cycle term in loss (2)

    def __post_init__(self) -> None:
        _check(self.n_layers >= 2, "n_layers", f"must be >= 2, got {self.n_layers}")
        _check(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")
        _check(self.quality_threshold_mm > 0, "quality_threshold_mm", f"must be > 0, got {self.quality_threshold_mm}")


@dataclass
class LossConfig:
    """Weights of eq. (6) and loss options. The paper does not state its lambdas; these follow HMR/SPIN."""

    w_2d: float = 5.0
    w_smpl: float = 1.0
    w_drc: float = 1.0
    w_adv: float = 0.1
    beta_weight: float = 1.0  # relative weight of betas inside Lsmpl (probe lesson 5: do not starve shape)
    drc_margin_m: float = 0.0  # DRC tie margin: |z_d,p - z_d,q| <= margin gives r = 0 (0 = the paper)
    drc_window: int = 5  # odd window (px) whose median valid depth is read at each 2D keypoint

    def __post_init__(self) -> None:
        for name in ("w_2d", "w_smpl", "w_drc", "w_adv", "beta_weight", "drc_margin_m"):
            _check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        _check(self.drc_window >= 1 and self.drc_window % 2 == 1, "drc_window",
               f"must be a positive odd number, got {self.drc_window}")


@dataclass
class ModelConfig:
    """The whole FuseMesh model: input size, both encoders, fusion, regressor, prior, USCG, losses."""

    name: str = "paper"
    input_size: int = 224  # square crop side (px) of both streams
    rgb_encoder: EncoderConfig = field(default_factory=EncoderConfig)
    depth_encoder: EncoderConfig = field(default_factory=EncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    regressor: RegressorConfig = field(default_factory=RegressorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    uscg: USCGConfig = field(default_factory=USCGConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        _check(self.input_size >= 32 and self.input_size % 32 == 0, "input_size",
               f"must be a positive multiple of 32, got {self.input_size}")


def _paper() -> ModelConfig:
    return ModelConfig(name="paper")


def _lite() -> ModelConfig:
    return ModelConfig(
        name="lite",
        input_size=128,
        rgb_encoder=EncoderConfig(arch="resnet18", width=32),
        depth_encoder=EncoderConfig(arch="resnet18", width=24),
        fusion=FusionConfig(hidden=(512, 512)),
        regressor=RegressorConfig(hidden=(512, 512)),
    )


PRESETS: dict[str, typing.Callable[[], ModelConfig]] = {"paper": _paper, "lite": _lite}


def preset(name: str) -> ModelConfig:
    """A fresh ModelConfig of the named preset ('paper' or 'lite')."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}{_suggest(name, PRESETS)}; presets: {sorted(PRESETS)}")
    return PRESETS[name]()


def config_from_dict(data: dict[str, Any] | None) -> ModelConfig:
    """ModelConfig from a nested dict: optional `preset` key (default 'paper'), other keys override it."""
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"config must be a mapping, got {type(data).__name__}")
    data = dict(data or {})
    base = dataclasses.asdict(preset(str(data.pop("preset", "paper"))))
    if "name" not in data:
        data["name"] = base["name"]
    return _build(ModelConfig, _merge(base, data, ModelConfig, ""), "")


def load_config(path: str | Path) -> ModelConfig:
    """ModelConfig from a YAML file (yaml.safe_load), same layout as `config_from_dict`."""
    import yaml

    text = Path(path).read_text()
    data = yaml.safe_load(text)
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    try:
        return config_from_dict(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def to_plain(v: Any) -> Any:
    """Nested dicts/tuples/lists as plain dicts and lists (for YAML/JSON/checkpoint metadata)."""
    if isinstance(v, dict):
        return {k: to_plain(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [to_plain(x) for x in v]
    return v


def config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) that `config_from_dict` turns back into `cfg`."""
    return to_plain(dataclasses.asdict(cfg))


# ---------------------------------------------------------------------------------------------------
def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ValueError(f"{key}: {msg}")


def _suggest(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _merge(base: dict[str, Any], over: dict[str, Any], cls: type, prefix: str) -> dict[str, Any]:
    """Recursively overlay `over` on `base`, rejecting keys that `cls` does not have."""
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for key, value in over.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=1, cutoff=0.5)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise ValueError(f"unknown config key {prefix + str(key)!r}{hint}; "
                             f"valid keys: {sorted(hints)}")
        sub = hints[key]
        if dataclasses.is_dataclass(sub):
            if not isinstance(value, dict):
                raise ValueError(f"{prefix + key}: expected a mapping, got {value!r}")
            out[key] = _merge(base[key], value, sub, f"{prefix}{key}.")
        else:
            out[key] = value
    return out


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass `cls` from a complete dict, checking and coercing types."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, prefix + key)
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{prefix}{e}") from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    origin = typing.get_origin(tp)
    if origin is tuple:
        (elem, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(elem, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"{key}: union types are not supported in configs")
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 (PyYAML) reads 1e-3 (no dot) as a string; it is meant as a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported config type {tp!r}")
