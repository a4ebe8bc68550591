"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lite_model(tmp_path_factory) -> Path:
    """A random-weight `lite` model exported once per test session (~30 s CPU), fp32 ONNX."""
    import torch

    from model.body import DEFAULT_BODY_PATH, BodyModel
    from model.config import preset
    from model.network import build_fusemesh
    from training.export import export_onnx

    path = tmp_path_factory.getbasetemp() / "fusemesh_lite_random.fp32.onnx"
    if not path.exists():
        torch.manual_seed(0)
        body = BodyModel.from_file(DEFAULT_BODY_PATH)
        cfg = preset("lite")
        partial = path.with_name("partial_" + path.name)
        export_onnx(build_fusemesh(cfg, body).eval(), cfg, body, partial, "fp32", random_weights=True)
        partial.replace(path)
    return path
