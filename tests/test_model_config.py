"""model/config.py: presets, strict YAML/dict loading with nearest-key suggestions, round trip."""
from __future__ import annotations

import pytest

from model.config import (ModelConfig, PRESETS, config_from_dict, config_to_dict, load_config, preset)


def test_presets_hold_the_papers_architecture_and_the_lite_choice():
    paper = preset("paper")
    assert (paper.rgb_encoder.arch, paper.depth_encoder.arch) == ("resnet50", "resnet50")
    assert paper.fusion.hidden == (4096, 2048) and paper.fusion.p_miss == 0.3 and paper.fusion.dynamic
    assert paper.regressor.n_iter == 3 and paper.input_size == 224
    assert paper.uscg.n_layers == 10 and paper.uscg.quality_threshold_mm == 100.0
    assert not paper.rgb_encoder.pretrained  # nothing downloads by default
    lite = preset("lite")
    assert lite.name == "lite" and lite.input_size == 128
    assert lite.rgb_encoder.arch == "resnet18" and lite.rgb_encoder.width < 64
    assert set(PRESETS) == {"paper", "lite"}
    assert preset("paper") is not preset("paper")  # fresh objects, no shared mutable state


def test_baseline_policy_trains_without_dropping_streams():
    cfg = config_from_dict({"fusion": {"dynamic": False}})
    assert cfg.fusion.p_miss == 0.3 and cfg.fusion.train_p_miss == 0.0
    assert preset("paper").fusion.train_p_miss == 0.3


@pytest.mark.parametrize("data, needle", [
    ({"fusoin": {}}, "did you mean 'fusion'"),
    ({"fusion": {"p_mis": 0.2}}, "did you mean 'fusion.p_miss'"),
    ({"loss": {"w_2D": 1.0}}, "did you mean 'loss.w_2d'"),
    ({"rgb_encoder": {"arhc": "resnet18"}}, "did you mean 'rgb_encoder.arch'"),
    ({"preset": "lit"}, "did you mean 'lite'"),
])
def test_unknown_keys_name_the_nearest_valid_key(data, needle):
    with pytest.raises(ValueError, match=needle):
        config_from_dict(data)


@pytest.mark.parametrize("data, needle", [
    ({"fusion": {"p_miss": 0.5}}, r"fusion\.p_miss: must be in \[0, 0.5\)"),
    ({"input_size": 100}, "input_size: must be a positive multiple of 32"),
    ({"input_size": "224"}, "input_size: expected an integer"),
    ({"fusion": {"hidden": 4096}}, "fusion.hidden: expected a list"),
    ({"fusion": {"dynamic": "yes"}}, "fusion.dynamic: expected true/false"),
    ({"rgb_encoder": {"arch": "resnet101"}}, "rgb_encoder.arch: must be one of"),
    ({"rgb_encoder": {"width": 32, "pretrained": True}}, "rgb_encoder.pretrained: ImageNet weights exist only for width 64"),
    ({"loss": {"drc_window": 4}}, "loss.drc_window: must be a positive odd number"),
    ({"regressor": 3}, "regressor: expected a mapping"),
])
def test_bad_values_give_one_line_errors_naming_the_key(data, needle):
    with pytest.raises(ValueError, match=needle) as err:
        config_from_dict(data)
    assert "\n" not in str(err.value)


def test_yaml_overrides_a_preset_and_round_trips(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("preset: lite\nfusion:\n  p_miss: 0.2\n  hidden: [256, 128]\nloss:\n  drc_margin_m: 0.02\n")
    cfg = load_config(path)
    assert isinstance(cfg, ModelConfig)
    assert cfg.name == "lite" and cfg.input_size == 128
    assert cfg.fusion.p_miss == 0.2 and cfg.fusion.hidden == (256, 128)
    assert cfg.loss.drc_margin_m == 0.02 and cfg.loss.w_2d == preset("lite").loss.w_2d
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert config_from_dict(config_to_dict(preset("paper"))) == preset("paper")


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("regresor: {n_iter: 2}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown config key 'regresor' \(did you mean 'regressor'\?\)"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="top level must be a mapping"):
        load_config(path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == preset("paper")
