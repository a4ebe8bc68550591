"""FuseMesh checkpoints: one file that rebuilds its model alone (config + weights + body model identity).

    save_checkpoint("run/last.pt", model, cfg, body, {"train_summary": {"dataset": "synth-v1", "steps": 2000}})
    model, cfg, meta = load_checkpoint("run/last.pt")               # body from DEFAULT_BODY_PATH
    model, cfg, meta = load_checkpoint("run/last.pt", body=body)    # refused if body's sha256 differs

File layout (torch.save of plain data, loadable with `torch.load(weights_only=True)`):
    format "fusemesh.checkpoint", version 1,
    model_config: config_to_dict(cfg)                      (model/config.py; rebuilt with config_from_dict)
    state_dict: the network's weights (FuseMesh leaves out the body model's buffers)
    body_model: {"id": body.model_id, "sha256": body.sha256, "num_vertices": V}
    train_summary: {...} (what the model was trained on; {} if not given), plus any other `extra` keys.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from model.config import ModelConfig, config_from_dict, config_to_dict

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint", "slim_checkpoint", "FORMAT",
           "VERSION"]

FORMAT = "fusemesh.checkpoint"
VERSION = 1
_RESERVED = ("format", "version", "model_config", "state_dict", "body_model")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, malformed or made for another body model (one line, names the file)."""


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: ModelConfig, body: Any,
                    extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a checkpoint of `model` (built from `cfg` and `body`) to `path`; returns the path.

    extra: more top-level entries of plain data (dict/list/str/int/float/bool/None/tensors), usually
    {"train_summary": {...}}; may not reuse a reserved key.
    """
    extra = dict(extra or {})
    clash = [k for k in extra if k in _RESERVED]
    if clash:
        raise ValueError(f"extra key {clash[0]!r} is reserved in a checkpoint (reserved: {_RESERVED})")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {
        "format": FORMAT, "version": VERSION,
        "model_config": config_to_dict(cfg),
        "state_dict": state,
        "body_model": {"id": str(getattr(body, "model_id", "")), "sha256": str(getattr(body, "sha256", "")),
                       "num_vertices": int(getattr(body, "num_vertices", 0))},
        "train_summary": {},
        **extra,
    }
    return _save_atomically(ckpt, Path(path))


def _save_atomically(obj: dict[str, Any], path: Path) -> Path:
    """torch.save to a temporary file next to `path`, then rename it over `path` (never a torn file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's dict (weights_only unpickling: no code runs), validated; raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for unsafe content, RuntimeError/EOFError for corrupt files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable FuseMesh checkpoint "
                              f"({type(e).__name__}: {first[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a FuseMesh checkpoint (no format {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')!r} is not supported "
                              f"(expected {VERSION})")
    for key in ("model_config", "state_dict", "body_model"):
        if not isinstance(ckpt.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint entry {key!r} is missing or not a mapping")
    return ckpt


def load_checkpoint(path: str | Path, body: Any = None) -> tuple[torch.nn.Module, ModelConfig, dict[str, Any]]:
    """Rebuild (model in eval mode, cfg, meta) from a checkpoint.

    body: a model.body.BodyModel; None loads DEFAULT_BODY_PATH. Its sha256 must equal the one recorded at
    save time (a network regresses parameters of one body model), else CheckpointError names both.
    meta: every entry except state_dict and model_config (body_model, train_summary, extra keys).
    """
    from model.body import DEFAULT_BODY_PATH, BodyModel
    from model.network import build_fusemesh

    path = Path(path)
    ckpt = read_checkpoint(path)
    try:
        cfg = config_from_dict(ckpt["model_config"])
    except ValueError as e:
        raise CheckpointError(f"{path}: model_config is invalid ({e})") from None
    want = ckpt["body_model"]
    if body is None:
        body = BodyModel.from_file(DEFAULT_BODY_PATH)
        if want.get("sha256") and body.sha256 != want["sha256"]:
            raise CheckpointError(
                f"{path}: trained with body model {want.get('id')!r} (sha256 {str(want['sha256'])[:12]}...), but the "
                f"default body {DEFAULT_BODY_PATH.name} has sha256 {body.sha256[:12]}...; pass that body model")
    elif want.get("sha256") and getattr(body, "sha256", None) != want["sha256"]:
        raise CheckpointError(
            f"{path}: body model mismatch: checkpoint wants {want.get('id')!r} sha256 {str(want['sha256'])[:12]}..., "
            f"got {getattr(body, 'model_id', '?')!r} sha256 {str(getattr(body, 'sha256', ''))[:12]}...")
    model = build_fusemesh(cfg, body)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit its model_config ({' '.join(first[:2])[:300]})") from None
    model.eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "model_config")}
    return model, cfg, meta


def slim_checkpoint(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Copy checkpoint `src` to `dst` without its training state (optimizers, discriminator), floating
    weights stored as `dtype`: the small file to commit or share, which still rebuilds the model
    (`load_checkpoint` casts nothing: load_state_dict copies into the float32 model) and starts new runs
    (`python -m training.train --init-from dst`). Returns dst."""
    ckpt = read_checkpoint(src)
    slim = {k: v for k, v in ckpt.items() if k != "train_state"}
    slim["state_dict"] = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    slim.setdefault("train_summary", {})
    if isinstance(slim["train_summary"], dict):
        slim["train_summary"] = {**slim["train_summary"], "weights_dtype": str(dtype).replace("torch.", "")}
    return _save_atomically(slim, Path(dst))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.checkpoint",
                                description="Checkpoint tools. slim: drop the training state, store weights "
                                            "as fp16 (or --dtype float32).")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("slim", help="weights-only copy of a checkpoint")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    args = p.parse_args(argv)
    try:
        out = slim_checkpoint(args.src, args.dst, getattr(torch, args.dtype))
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
