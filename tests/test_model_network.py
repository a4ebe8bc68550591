"""model/encoders.py, regressor.py, network.py: shapes per preset and input mode, stream masking,
warm start, frame conventions, bad-input errors, exportability."""
from __future__ import annotations

import io
import math

import pytest
import torch
import torchvision

from model.body import DEFAULT_BODY_PATH, BodyModel
from model.camera import matrix_to_rot6d
from model.config import config_from_dict, preset
from model.encoders import ResNetEncoder, adapt_classifier_state
from model.network import build_fusemesh
from model.regressor import IEFRegressor
from tests.toy_body import write_toy_body

LSP_R_ANKLE, LSP_L_ANKLE, LSP_NECK, LSP_HEAD_TOP = 0, 5, 12, 13
MODES = {"rgbd": (True, True), "rgb": (True, False), "depth": (False, True)}


@pytest.fixture(scope="module")
def body(tmp_path_factory) -> BodyModel:
    return BodyModel.from_file(write_toy_body(tmp_path_factory.mktemp("body") / "toy.npz"))


def tiny_config():
    """A network small enough for millisecond forwards (same code paths as the presets)."""
    return config_from_dict({"preset": "lite", "input_size": 64, "rgb_encoder": {"width": 8},
                             "depth_encoder": {"width": 8}, "fusion": {"hidden": [32, 32]},
                             "regressor": {"hidden": [32, 32]}})


def inputs(size: int, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8)
    depth = 2.0 + torch.rand(batch, 1, size, size, generator=g)
    return rgb, depth, torch.full((batch,), 2.5)


# ------------------------------------------------------------------------------------- encoders
def test_width_64_encoder_is_torchvisions_resnet_without_the_head():
    enc = ResNetEncoder("resnet18", in_channels=3, width=64)
    tv = torchvision.models.resnet18()
    ours = {k: v.shape for k, v in enc.state_dict().items()}
    theirs = {k: v.shape for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert ours == theirs
    assert enc.feature_dim == 512 and enc(torch.randn(1, 3, 64, 64)).shape == (1, 512)


@pytest.mark.parametrize("arch, width, channels, dim", [
    ("resnet18", 32, 1, 256), ("resnet34", 16, 3, 128), ("resnet50", 64, 1, 2048), ("resnet50", 16, 3, 512)])
def test_encoder_feature_sizes(arch, width, channels, dim):
    enc = ResNetEncoder(arch, in_channels=channels, width=width)
    assert enc.conv1.in_channels == channels and enc.feature_dim == dim
    assert enc(torch.randn(2, channels, 64, 64)).shape == (2, dim)


def test_imagenet_weights_adapt_to_a_depth_encoder():
    """`pretrained=True` downloads; the adaptation it applies is checked here on torchvision's own layout."""
    tv = torchvision.models.resnet18()
    enc = ResNetEncoder("resnet18", in_channels=1, width=64)
    enc.load_state_dict(adapt_classifier_state(tv.state_dict(), in_channels=1))  # strict: keys and shapes fit
    torch.testing.assert_close(enc.conv1.weight, tv.conv1.weight.sum(dim=1, keepdim=True))
    grey = torch.rand(1, 1, 64, 64)
    tv.fc = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(enc.eval()(grey), tv.eval()(grey.expand(1, 3, 64, 64)), atol=1e-5, rtol=1e-4)


def test_encoder_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown encoder arch 'resnet101'"):
        ResNetEncoder("resnet101")
    with pytest.raises(ValueError, match="only for width 64"):
        ResNetEncoder("resnet18", width=32, pretrained=True)


# ------------------------------------------------------------------------------ shapes per preset
@pytest.mark.parametrize("name", ["lite", "paper"])
def test_output_shapes_for_every_preset_and_input_mode(name, body):
    cfg = preset(name)
    net = build_fusemesh(cfg, body).eval()
    rgb, depth, ref = inputs(cfg.input_size, batch=1)  # batch handling: see the tiny-network tests
    v = body.num_vertices
    expected = {"theta": (1, 72), "pose6d": (1, 144), "rotmat": (1, 24, 3, 3), "beta": (1, 10), "cam": (1, 3),
                "vertices": (1, v, 3), "joints": (1, 24, 3), "lsp_joints": (1, 14, 3), "lsp_2d": (1, 14, 2)}
    with torch.no_grad():
        for mode, (rgb_on, depth_on) in MODES.items():
            mask = torch.tensor([[rgb_on, depth_on]])
            out = net(rgb, depth, ref, stream_mask=mask)
            assert {k: tuple(t.shape) for k, t in out.items()} == expected, mode
            assert all(torch.isfinite(t).all() for t in out.values()), mode


def test_preset_sizes_match_the_paper_and_the_lite_budget(body):
    def params(cfg):
        net = build_fusemesh(cfg, body)
        return sum(p.numel() for n, p in net.named_parameters() if not n.startswith("body."))

    # two ResNet-50 trunks (2 x 23.5 M, first conv of the depth one has 1 channel) + 4096/2048 fusion + IEF
    assert params(preset("paper")) == pytest.approx(75.65e6, rel=0.01)
    assert 4 * params(preset("lite")) <= 25e6  # fp32 weights <= 25 MB


def test_checkpoint_holds_the_network_not_the_body_and_lite_fits_25_mb(body):
    net = build_fusemesh(preset("lite"), body)
    state = net.state_dict()
    assert state and not any(k.startswith("body.") for k in state)
    buf = io.BytesIO()
    torch.save(state, buf)
    assert len(buf.getvalue()) <= 25e6
    fresh = build_fusemesh(preset("lite"), body)
    assert not fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue()))).missing_keys
    torch.testing.assert_close(fresh.fusion.mlp[0].weight, net.fusion.mlp[0].weight)
    with pytest.raises(RuntimeError, match="fusion.mlp.0.weight"):  # network keys are still required
        fresh.load_state_dict({k: v for k, v in state.items() if not k.startswith("fusion.")})


# --------------------------------------------------------------------------------- stream masking
def test_a_dropped_stream_is_an_exact_zero_input(body):
    torch.manual_seed(0)
    net = build_fusemesh(tiny_config(), body).eval()
    rgb_a, depth_a, ref = inputs(64, seed=1)
    rgb_b, depth_b, _ = inputs(64, seed=2)
    rgb_only, depth_only = torch.tensor([[True, False]] * 2), torch.tensor([[False, True]] * 2)
    with torch.no_grad():
        # a masked stream's content does not matter ...
        torch.testing.assert_close(net(rgb_a, depth_a, ref, depth_only)["theta"],
                                   net(rgb_b, depth_a, ref, depth_only)["theta"])
        torch.testing.assert_close(net(rgb_a, depth_a, ref, rgb_only)["theta"],
                                   net(rgb_a, depth_b, ref, rgb_only)["theta"])
        # ... it is the same as feeding all-zero normalised input (invalid depth = 0)
        torch.testing.assert_close(net(rgb_a, depth_a, ref, rgb_only)["theta"],
                                   net(rgb_a, torch.zeros_like(depth_a), ref)["theta"])
        # and an unmasked stream matters
        assert not torch.allclose(net(rgb_a, depth_a, ref)["theta"], net(rgb_b, depth_a, ref)["theta"])


def test_training_mask_comes_from_the_configured_policy(body):
    dyn = build_fusemesh(tiny_config(), body)
    m = dyn.sample_stream_mask(4000, torch.Generator().manual_seed(0))
    assert (~m[:, 0]).float().mean().item() == pytest.approx(0.3, abs=0.03) and m.any(1).all()
    base = build_fusemesh(config_from_dict({"preset": "lite", "fusion": {"dynamic": False}}), body)
    assert base.sample_stream_mask(1000).all()


# ------------------------------------------------------------------------ regressor and frames
def test_mean_initialisation_is_an_upright_person_facing_the_camera(body):
    net = build_fusemesh(tiny_config(), body).eval()
    with torch.no_grad():
        out = net(*inputs(64), n_iter=0)  # no correction: the buffers' mean parameters
    torch.testing.assert_close(out["theta"][:, :3], torch.tensor([[math.pi, 0.0, 0.0]] * 2))
    torch.testing.assert_close(out["theta"][:, 3:], torch.zeros(2, 69), atol=1e-6, rtol=0)
    assert torch.equal(out["beta"], torch.zeros(2, 10))
    lsp2d = out["lsp_2d"][0]
    assert lsp2d[LSP_HEAD_TOP, 1] < lsp2d[LSP_NECK, 1] < lsp2d[LSP_R_ANKLE, 1]  # y down: head on top
    assert lsp2d[LSP_R_ANKLE, 0] < lsp2d[LSP_L_ANKLE, 0]  # facing the camera: right side on image left
    assert lsp2d.abs().max() < 1.0  # centred mean camera keeps the body inside the crop
    joints = out["joints"][0]
    assert joints[15, 1] < joints[0, 1]  # camera frame: head above pelvis means smaller y
    # eq. (1): x = s * Pi(R X) + t with the rotation already in the joints
    s, t = out["cam"][:, :1, None], out["cam"][:, None, 1:]
    torch.testing.assert_close(out["lsp_2d"], s * out["lsp_joints"][..., :2] + t)


@pytest.mark.skipif(not DEFAULT_BODY_PATH.exists(), reason="open body asset not built")
def test_lite_on_the_open_body_starts_upright_inside_the_crop():
    real = BodyModel.from_file(DEFAULT_BODY_PATH)
    net = build_fusemesh(preset("lite"), real).eval()
    with torch.no_grad():
        out = net(*inputs(128, batch=1), n_iter=0)
    assert out["vertices"].shape == (1, real.num_vertices, 3)
    lsp2d = out["lsp_2d"][0]
    assert lsp2d.abs().max() < 1.0 and lsp2d[LSP_HEAD_TOP, 1] < -0.6 and lsp2d[LSP_R_ANKLE, 1] > 0.6
    height = out["lsp_joints"][0, LSP_R_ANKLE, 1] - out["lsp_joints"][0, LSP_HEAD_TOP, 1]
    assert 1.4 < height < 1.9  # metres, y down


def test_warm_start_from_the_previous_frame(body):
    reg = IEFRegressor(feat_dim=16, hidden=(32,), n_iter=3, dropout=0.0)
    feat = torch.randn(2, 16)
    prev = reg(feat)
    again = reg(feat, init_pose=prev.pose6d, init_shape=prev.betas, init_cam=prev.cam, n_iter=0)
    torch.testing.assert_close(again.theta, prev.theta, atol=1e-5, rtol=0)
    assert torch.equal(again.betas, prev.betas) and torch.equal(again.cam, prev.cam)
    # the iterations are a chain: 3 steps = 1 step, then 2 more warm-started from it
    one = reg(feat, n_iter=1)
    torch.testing.assert_close(reg(feat, one.pose6d, one.betas, one.cam, n_iter=2).pose6d, prev.pose6d)
    with pytest.raises(ValueError, match="warm start must be init_pose"):
        reg(feat, init_pose=torch.zeros(2, 72))
    with pytest.raises(ValueError, match=r"warm start must be init_pose \(2, 144\)"):
        reg(feat, init_cam=torch.zeros(3, 3))  # previous frame had another batch size


def test_regressor_rotations_are_proper(body):
    reg = IEFRegressor(feat_dim=8, hidden=(16,), dropout=0.0)
    torch.nn.init.normal_(reg.dec_pose.weight, std=1.0)  # far from the mean
    out = reg(torch.randn(5, 8))
    eye = torch.eye(3).expand(5, 24, 3, 3)
    torch.testing.assert_close(out.rotmat @ out.rotmat.transpose(-1, -2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(out.rotmat), torch.ones(5, 24), atol=1e-5, rtol=0)
    # the 6D output and the matrices describe the same rotations
    torch.testing.assert_close(matrix_to_rot6d(out.rotmat)[..., :3],
                               torch.nn.functional.normalize(out.pose6d.reshape(5, 24, 6)[..., :3], dim=-1))


@pytest.mark.parametrize("bad, needle", [
    (lambda r, d, f: (r[:, :1], d, f), r"rgb must be \(B, 3, 64, 64\)"),
    (lambda r, d, f: (r[..., :32, :32], d, f), r"rgb must be \(B, 3, 64, 64\)"),
    (lambda r, d, f: (r, d[:1], f), r"depth must be \(2, 1, 64, 64\) metres"),
    (lambda r, d, f: (r, d, f[:1]), r"ref_depth must be \(2,\) metres"),
])
def test_bad_inputs_give_clear_errors(body, bad, needle):
    net = build_fusemesh(tiny_config(), body)
    with pytest.raises(ValueError, match=needle):
        net(*bad(*inputs(64)))
    with pytest.raises(ValueError, match=r"stream_mask must be \(2, 2\)"):
        net(*inputs(64), stream_mask=torch.ones(2, dtype=torch.bool))


@pytest.mark.slow
def test_forward_exports_with_a_dynamic_batch_axis(body):
    """No data-dependent Python branching: torch.export traces it once for any batch size."""
    net = build_fusemesh(tiny_config(), body).eval()
    rgb, depth, ref = inputs(64, batch=2)
    mask = torch.tensor([[True, False], [True, True]])
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(net, (rgb, depth, ref, mask), dynamic_shapes=({0: batch},) * 4)
    r3, d3, f3 = inputs(64, batch=3, seed=5)
    m3 = torch.tensor([[True, True], [False, True], [True, False]])
    with torch.no_grad():
        expected = net(r3, d3, f3, m3)
    got = ep.module()(r3, d3, f3, m3)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], msg=key)
