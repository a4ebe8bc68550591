"""training/bench.py and the Trainer's CPU memory format (channels-last: same numbers, faster convolutions)."""
from __future__ import annotations

import numpy as np
import torch

from model.body import DEFAULT_BODY_PATH, BodyModel
from training.bench import bench_preset, main, random_batch
from training.config import train_config_from_dict
from training.loop import Trainer


def _conv_weight(model: torch.nn.Module) -> torch.Tensor:
    return next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_cpu_training_runs_channels_last_with_the_same_numbers():
    body = BodyModel.from_file(DEFAULT_BODY_PATH)
    cfg = train_config_from_dict({"model": {"preset": "lite", "input_size": 64}, "data": {"prior_size": 64},
                                  "run": {"steps": 2}})
    batch = random_batch(4, 64)
    results = []
    for contiguous in (False, True):
        torch.manual_seed(0)
        assert Trainer(cfg, body, "cpu").channels_last  # the CPU default
        torch.manual_seed(0)
        tr = Trainer(cfg, body, "cpu", channels_last=False if contiguous else None)
        w = _conv_weight(tr.model)
        assert w.is_contiguous(memory_format=torch.contiguous_format if contiguous else torch.channels_last)
        assert w.is_contiguous() == contiguous
        results.append([tr.step(batch, i)["loss"] for i in range(2)])
    assert np.allclose(results[0], results[1], rtol=1e-4), results


def test_bench_compares_memory_formats(capsys):
    assert main(["--presets", "lite", "--input-size", "64", "--batch", "2", "--steps", "1", "--warmup", "0",
                 "--devices", "cpu", "--compare-memory-format"]) == 0
    out = capsys.readouterr().out
    assert "| channels-last |" in out and "| contiguous |" in out
    assert "lite: channels-last / contiguous = " in out
    body = BodyModel.from_file(DEFAULT_BODY_PATH)
    assert bench_preset("lite", 2, 1, 0, "cpu", body, 64, contiguous=True)["memory"] == "contiguous"
