"""training/config.py: typed, strict training configs on model/config's loader (one config system)."""
from __future__ import annotations

from pathlib import Path

import pytest

from training.config import (TrainConfig, apply_overrides, load_train_config, train_config_from_dict,
                             train_config_to_dict)

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def test_defaults_are_the_lite_preset_and_model_overrides_apply():
    cfg = train_config_from_dict({"model": {"input_size": 64, "fusion": {"p_miss": 0.2}}})
    assert isinstance(cfg, TrainConfig)
    assert cfg.model.name == "lite" and cfg.model.input_size == 64
    assert cfg.model.fusion.p_miss == 0.2 and cfg.model.rgb_encoder.width == 32  # rest of lite kept
    assert cfg.data.batch_size == 40 and cfg.data.rgb_fraction == 0.5  # paper sec. 4
    paper = train_config_from_dict({"model": {"preset": "paper"}})
    assert paper.model.rgb_encoder.arch == "resnet50" and paper.model.fusion.hidden == (4096, 2048)


@pytest.mark.parametrize("data, message", [
    ({"run": {"stesp": 3}}, "unknown config key 'run.stesp' (did you mean 'run.steps'?)"),
    ({"modle": {}}, "unknown config key 'modle' (did you mean 'model'?)"),
    ({"model": {"fusion": {"p_mis": 0.1}}}, "unknown config key 'model.fusion.p_mis' (did you mean 'model.fusion.p_miss'?)"),
    ({"model": {"preset": "lit"}}, "model.preset: unknown preset 'lit' (did you mean 'lite'?)"),
    ({"data": {"sources": [{"pth": "x"}]}}, "unknown config key 'data.sources[0].pth' (did you mean 'data.sources[0].path'?)"),
    ({"data": {"sources": [{"path": "x", "kind": "rgbdd"}]}}, "data.sources[0].kind: must be one of"),
    ({"data": {"sources": [{"kind": "rgb"}]}}, "data.sources[0].path: a source needs the path"),
    ({"data": {"sources": [{"path": "x", "select": [0.5, 0.2]}]}}, "data.sources[0].select: must be [start, stop)"),
    ({"model": {"fusion": {"p_miss": 0.7}}}, "model.fusion.p_miss: must be in [0, 0.5)"),
    ({"run": {"steps": "a"}}, "run.steps: expected an integer"),
    ({"run": {"amp": "fp8"}}, "run.amp: must be one of"),
    ({"data": {"rgb_fraction": 1.0}}, "data.rgb_fraction: must be in [0, 1)"),
])
def test_bad_configs_give_one_line_errors_naming_the_key(data, message):
    with pytest.raises(ValueError) as e:
        train_config_from_dict(data)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_depth_only_runs_refuse_rgb_only_sources():
    with pytest.raises(ValueError, match="run.input: 'depth' cannot use RGB-only sources"):
        train_config_from_dict({"run": {"input": "depth"}, "data": {"sources": [{"path": "x", "kind": "rgb"}]}})


def test_round_trip_through_a_dict_and_yaml(tmp_path):
    import yaml

    cfg = train_config_from_dict({
        "model": {"input_size": 96, "loss": {"w_drc": 0.0}},
        "data": {"sources": [{"path": "a", "labels": "kinect_v1_like", "smpl_labels": "l.npz", "select": [0, 0.5]},
                             {"path": "b", "kind": "rgb", "labels": "none"}]},
        "objective": {"w_3d": 2.0}, "run": {"steps": 7}})
    again = train_config_from_dict(train_config_to_dict(cfg))
    assert again == cfg
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(train_config_to_dict(cfg)))
    assert load_train_config(path) == cfg
    assert cfg.data.sources[0].select == (0.0, 0.5) and cfg.data.sources[1].kind == "rgb"


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim: {lr: 0.001, lrr: 2}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key 'optim.lrr' \(did you mean 'optim.lr'\?\)"):
        load_train_config(path)


def test_overrides_parse_yaml_values():
    data = apply_overrides({"run": {"steps": 5}}, ["run.steps=20", "model.fusion.hidden=[8, 8]", "data.flip_prob=0"])
    cfg = train_config_from_dict(data)
    assert cfg.run.steps == 20 and cfg.model.fusion.hidden == (8, 8) and cfg.data.flip_prob == 0.0
    with pytest.raises(ValueError, match="must look like section.key=value"):
        apply_overrides({}, ["run.steps"])


def test_exponent_numbers_without_a_dot_are_numbers():
    # PyYAML (YAML 1.1) reads 1e-3 as the string '1e-3'; `--set optim.lr=1e-3` used to be refused
    data = apply_overrides({}, ["optim.lr=1e-3", "optim.disc_lr=5E-5"])
    assert isinstance(data["optim"]["lr"], str)
    cfg = train_config_from_dict(data)
    assert cfg.optim.lr == 1e-3 and cfg.optim.disc_lr == 5e-5
    with pytest.raises(ValueError, match="optim.lr: expected a number"):
        train_config_from_dict({"optim": {"lr": "1e-3 please"}})
    with pytest.raises(ValueError, match="run.steps: expected an integer"):
        train_config_from_dict({"run": {"steps": "1e3"}})


@pytest.mark.parametrize("name, preset, size", [("lite.yaml", "lite", 128), ("paper.yaml", "paper", 224),
                                                ("paper_real.yaml", "paper", 224), ("ablation.yaml", "lite", 64)])
def test_shipped_configs_load(name, preset, size):
    cfg = load_train_config(CONFIGS / name)
    assert cfg.model.name == preset and cfg.model.input_size == size
