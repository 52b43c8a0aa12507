"""Restore-RWKV architecture (fast: tiny configs, CPU; the published size on the meta device or @slow)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restorer.archs import build_network
from restorer.archs.restore_rwkv_arch import (
    DEFAULT_CONFIG,
    LIGHT_CONFIG,
    Block,
    OmniShift,
    Restore_RWKV,
    VRWKV_SpatialMix,
    count_parameters_paper,
)
from restorer.ops import bi_wkv_reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**over) -> Restore_RWKV:
    cfg = {
        "inp_channels": 1,
        "out_channels": 1,
        "dim": 4,
        "num_blocks": [1, 1, 1, 1],
        "num_refinement_blocks": 1,
    }
    cfg.update(over)
    return Restore_RWKV(**cfg)


def randomise_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial LayerNorm / gamma / conv bias values so every path matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln1.weight", "ln2.weight", "gamma1", "gamma2")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(("ln1.bias", "ln2.bias")) or (p.ndim == 1 and "spatial" not in name):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


# ------------------------------------------------------------------------------------------------
# official layout
# ------------------------------------------------------------------------------------------------


def test_published_default_layout():
    """Keys and shapes of the official default (fact sheet B1), built on the meta device."""
    with torch.device("meta"):
        net = build_network({"type": "Restore_RWKV", **DEFAULT_CONFIG})
    assert isinstance(net, Restore_RWKV)
    sd = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert len(sd) == 1114
    assert sum(p.numel() for p in net.parameters()) == 28_371_137
    assert sum(p.numel() for n, p in net.named_parameters() if "reparam" not in n) == 27_996_737
    assert count_parameters_paper(net) == 27_846_625
    expected = {
        "patch_embed.weight": (48, 1, 3, 3),
        "patch_embed.bias": (48,),
        "down1_2.body.0.weight": (24, 48, 3, 3),
        "down2_3.body.0.weight": (48, 96, 3, 3),
        "down3_4.body.0.weight": (96, 192, 3, 3),
        "up4_3.body.0.weight": (768, 384, 3, 3),
        "reduce_chan_level3.weight": (192, 384, 1, 1),
        "reduce_chan_level3.bias": (192,),
        "up3_2.body.0.weight": (384, 192, 3, 3),
        "reduce_chan_level2.weight": (96, 192, 1, 1),
        "up2_1.body.0.weight": (192, 96, 3, 3),
        "output.weight": (1, 96, 3, 3),
        "output.bias": (1,),
    }
    for key, shape in expected.items():
        assert sd[key] == shape, key
    counts = {"encoder_level1": 4, "encoder_level2": 6, "encoder_level3": 6, "latent": 8}
    counts |= {"decoder_level3": 6, "decoder_level2": 6, "decoder_level1": 4, "refinement": 4}
    widths = {"encoder_level1": 48, "encoder_level2": 96, "encoder_level3": 192, "latent": 384}
    widths |= {"decoder_level3": 192, "decoder_level2": 96, "decoder_level1": 96, "refinement": 96}
    for stage, n in counts.items():
        assert f"{stage}.{n - 1}.gamma1" in sd and f"{stage}.{n}.gamma1" not in sd, stage
        c = widths[stage]
        block = {k[len(f"{stage}.0.") :]: v for k, v in sd.items() if k.startswith(f"{stage}.0.")}
        assert block == block_layout(c), stage
    assert not any(k.startswith("reduce_chan_level1") for k in sd)  # level 1 keeps 2C channels


def block_layout(c: int) -> dict[str, tuple[int, ...]]:
    """One Block's keys (fact sheet B1, per-Block table)."""
    omni = {
        "alpha": (4,),
        "conv1x1.weight": (c, 1, 1, 1),
        "conv3x3.weight": (c, 1, 3, 3),
        "conv5x5.weight": (c, 1, 5, 5),
        "conv5x5_reparam.weight": (c, 1, 5, 5),
    }
    layout = {
        "gamma1": (c,),
        "gamma2": (c,),
        "ln1.weight": (c,),
        "ln1.bias": (c,),
        "ln2.weight": (c,),
        "ln2.bias": (c,),
        "att.spatial_decay": (2, c),
        "att.spatial_first": (2, c),
        "att.key.weight": (c, c),
        "att.value.weight": (c, c),
        "att.receptance.weight": (c, c),
        "att.output.weight": (c, c),
        "ffn.key.weight": (4 * c, c),
        "ffn.value.weight": (c, 4 * c),
        "ffn.receptance.weight": (c, c),
    }
    for k, v in omni.items():
        layout[f"att.omni_shift.{k}"] = v
        layout[f"ffn.omni_shift.{k}"] = v
    return layout


def test_light_variant_size():
    with torch.device("meta"):
        net = Restore_RWKV(**LIGHT_CONFIG)
    assert count_parameters_paper(net) == 1_156_961  # the paper's 1.16 M
    assert sum(p.numel() for p in net.parameters()) == 1_202_969


def test_official_state_dict_loads_strictly_in_train_and_eval():
    src = randomise_(tiny(dim=6), seed=1)
    src.reparameterize()  # official checkpoints are saved after an eval pass: reparam kernels filled
    state = src.state_dict()
    for mode in (True, False):
        dst = tiny(dim=6).train(mode)
        dst.load_state_dict(state, strict=True)
        x = torch.rand(1, 1, 16, 16)
        torch.testing.assert_close(dst.eval()(x), src.eval()(x), rtol=0, atol=0)


def test_legacy_layout_with_unused_dwconv():
    legacy = tiny(legacy_dwconv=True)
    keys = set(legacy.state_dict())
    assert {k for k in keys if k.endswith("att.dwconv.weight")} == {
        f"{s}.0.att.dwconv.weight"
        for s in (
            "encoder_level1",
            "encoder_level2",
            "encoder_level3",
            "latent",
            "decoder_level3",
            "decoder_level2",
            "decoder_level1",
            "refinement",
        )
    }
    assert legacy.state_dict()["encoder_level1.0.att.dwconv.weight"].shape == (4, 1, 3, 3)
    with pytest.raises(RuntimeError, match="dwconv"):
        tiny().load_state_dict(legacy.state_dict(), strict=True)
    # the unused convolution changes nothing
    plain = tiny()
    plain.load_state_dict({k: v for k, v in legacy.state_dict().items() if ".dwconv." not in k}, strict=True)
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(plain.eval()(x), legacy.eval()(x), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# Omni-Shift: training-time branches == re-parameterised kernel
# ------------------------------------------------------------------------------------------------


def test_omni_shift_reparameterisation_is_exact():
    torch.manual_seed(0)
    shift = OmniShift(5).double()
    x = torch.randn(2, 5, 9, 11, dtype=torch.float64)
    branches = shift.train()(x)
    fused = shift.eval()(x)
    torch.testing.assert_close(fused, branches, rtol=0, atol=1e-13)
    torch.testing.assert_close(shift.forward_reparam(x), shift.forward_branches(x), rtol=0, atol=1e-13)
    # reparameterize() stores the kernel the official eval mode convolves with
    with torch.no_grad():
        shift.conv5x5_reparam.weight.zero_()
    shift.reparameterize()
    torch.testing.assert_close(shift.conv5x5_reparam(x), branches, rtol=0, atol=1e-13)
    # eval ignores a stale stored kernel (the official one is recomputed at the first eval forward)
    with torch.no_grad():
        shift.conv5x5_reparam.weight.add_(1.0)
    torch.testing.assert_close(shift.eval()(x), branches, rtol=0, atol=1e-13)


def test_omni_shift_channels_last_float32():
    torch.manual_seed(1)
    shift = OmniShift(8)
    x = torch.randn(1, 8, 12, 12).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(shift.eval()(x), shift.train()(x), rtol=1e-5, atol=1e-5)


def test_network_train_and_eval_agree():
    net = randomise_(tiny(inp_channels=3, out_channels=3, dim=6), seed=2).double()
    x = torch.rand(2, 3, 24, 16, dtype=torch.float64)
    torch.testing.assert_close(net.train()(x), net.eval()(x), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Re-WKV: the official token orders, against the O(T^2) formula
# ------------------------------------------------------------------------------------------------


def literal_spatial_mix(att: VRWKV_SpatialMix, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The official ``VRWKV_SpatialMix.forward`` written with token rearranges: ``(B, T, C) -> (B, T, C)``."""
    b, t, c = x.shape
    xs = att.omni_shift(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
    k, v = att.key(xs), att.value(xs)
    sr = torch.sigmoid(att.receptance(xs))
    v = bi_wkv_reference(att.spatial_decay[0] / t, att.spatial_first[0] / t, k, v)
    k = k.view(b, h, w, c).transpose(1, 2).reshape(b, t, c)  # (h w) -> (w h)
    v = v.view(b, h, w, c).transpose(1, 2).reshape(b, t, c)
    v = bi_wkv_reference(att.spatial_decay[1] / t, att.spatial_first[1] / t, k, v)
    v = v.view(b, w, h, c).transpose(1, 2).reshape(b, t, c)  # (w h) -> (h w)
    return att.output(sr * v)


@pytest.mark.parametrize("training", [True, False])
def test_spatial_mix_scan_orders(training):
    torch.manual_seed(3)
    att = VRWKV_SpatialMix(6).double().train(training)
    with torch.no_grad():
        att.spatial_decay.mul_(4)  # decay that matters over the scan (w T = +-4 or so)
    h, w = 5, 7  # non-square: row- and column-major orders differ
    x = torch.randn(2, h * w, 6, dtype=torch.float64)
    ours = att(x.view(2, h, w, 6)).reshape(2, h * w, 6)
    torch.testing.assert_close(ours, literal_spatial_mix(att, x, h, w), rtol=0, atol=1e-12)


def test_block_is_the_official_residual_form():
    torch.manual_seed(4)
    block = randomise_(Block(6), seed=4).double().eval()
    h, w = 4, 6
    x = torch.randn(1, 6, h, w, dtype=torch.float64)
    t = x.flatten(2).transpose(1, 2)
    t = t + block.gamma1 * literal_spatial_mix(block.att, block.ln1(t), h, w)
    xs = block.ffn.omni_shift(block.ln2(t).transpose(1, 2).reshape(1, 6, h, w)).flatten(2).transpose(1, 2)
    t = t + block.gamma2 * (
        torch.sigmoid(block.ffn.receptance(xs)) * block.ffn.value(F.relu(block.ffn.key(xs)) ** 2)
    )
    expected = t.transpose(1, 2).reshape(1, 6, h, w)
    torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# sizes, channels, gradients
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (7, 9), (13, 21), (32, 24)])
def test_any_size_pads_and_crops(size):
    net = randomise_(tiny(), seed=5).eval()
    x = torch.rand(1, 1, *size)
    with torch.inference_mode():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    h, w = size
    if h % 8 or w % 8:
        ph, pw = (-h) % 8, (-w) % 8
        if ph < h and pw < w:  # plain reflect padding, then the official network, then the crop
            padded = F.pad(x, (0, pw, 0, ph), mode="reflect")
            with torch.inference_mode():
                torch.testing.assert_close(y, net.forward_padded(padded)[..., :h, :w], rtol=0, atol=0)


@pytest.mark.parametrize(("cin", "cout"), [(1, 1), (3, 3), (1, 3)])
def test_channels(cin, cout):
    net = tiny(inp_channels=cin, out_channels=cout).eval()
    x = torch.rand(2, cin, 16, 8)
    with torch.inference_mode():
        y = net(x)
    assert y.shape == (2, cout, 16, 8)
    with torch.no_grad():
        net.output.weight.zero_()
        net.output.bias.zero_()
    with torch.inference_mode():
        torch.testing.assert_close(net(x), x.expand(2, cout, 16, 8))  # global residual


def test_channel_mismatch_is_rejected():
    with pytest.raises(ValueError, match="global residual"):
        tiny(inp_channels=3, out_channels=1)
    with pytest.raises(ValueError, match="even"):
        tiny(dim=5)


def test_gradients_reach_every_trained_parameter():
    net = randomise_(tiny(dim=4), seed=6).train()
    x = torch.rand(2, 1, 16, 16)
    target = torch.rand(2, 1, 16, 16)
    F.l1_loss(net(x), target).backward()
    for name, p in net.named_parameters():
        if name.endswith("conv5x5_reparam.weight"):
            assert p.grad is None, name  # inference-only kernel, as in the official training
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_half_and_double_dtypes():
    net = randomise_(tiny(), seed=7).eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.inference_mode():
        ref = net.double()(x.double())
        out_bf16 = net.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(out_bf16.double(), ref, rtol=0, atol=0.1)


@pytest.mark.slow
def test_published_default_runs():
    torch.manual_seed(0)
    net = Restore_RWKV(**DEFAULT_CONFIG).eval()
    x = torch.rand(1, 1, 64, 48)
    with torch.inference_mode():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
