"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest


_EXPORT_RANDOM_LITE = """
import sys, torch
from pathlib import Path
from model.body import DEFAULT_BODY_PATH, BodyModel
from model.config import preset
from model.network import build_fusemesh
from training.export import export_onnx
torch.manual_seed(0)
body = BodyModel.from_file(DEFAULT_BODY_PATH)
cfg = preset("lite")
export_onnx(build_fusemesh(cfg, body).eval(), cfg, body, Path(sys.argv[1]), "fp32", random_weights=True)
"""


@pytest.fixture(scope="session")
def lite_model(tmp_path_factory) -> Path:
    """A random-weight `lite` model exported once per test session (~30 s CPU), fp32 ONNX.

    The export runs in a child process: torch's exporter imports triton, whose bundled LLVM crashes a
    process that already rendered through Mesa's EGL (llvmpipe's LLVM), as the viewer tests do."""
    import subprocess
    import sys

    path = tmp_path_factory.getbasetemp() / "fusemesh_lite_random.fp32.onnx"
    if not path.exists():
        partial = path.with_name("partial_" + path.name)
        subprocess.run([sys.executable, "-c", _EXPORT_RANDOM_LITE, str(partial)], check=True, timeout=600,
                       cwd=Path(__file__).resolve().parents[1])
        partial.replace(path)
    return path
