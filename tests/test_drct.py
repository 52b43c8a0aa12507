"""DRCT architecture and the shared window-attention layers it uses (fast: tiny configs, CPU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from restorer.archs import build_network
from restorer.archs.drct_arch import DRCT
from restorer.archs.layers import (
    WindowAttention,
    make_window_partition,
    pad_symmetric,
    pad_symmetric_always,
    relative_position_index,
    shifted_window_mask,
    shifted_window_region_masks,
    window_partition,
)

ROOT = Path(__file__).resolve().parents[1]


def _load_plain_reference():
    name = "drct_plain_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "drct_plain_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Official network_g of options/test/DRCT_SRx*.yml and DRCT-L_SRx*_ImageNet-pretrain.yml (without upscale).
OFFICIAL_BASE = {
    "type": "DRCT",
    "in_chans": 3,
    "img_size": 64,
    "window_size": 16,
    "compress_ratio": 3,
    "squeeze_factor": 30,
    "conv_scale": 0.01,
    "overlap_ratio": 0.5,
    "img_range": 1.0,
    "embed_dim": 180,
    "mlp_ratio": 2,
    "upsampler": "pixelshuffle",
    "resi_connection": "1conv",
}
DRCT_M = {"depths": [6] * 6, "num_heads": [6] * 6}
DRCT_L = {"depths": [6] * 12, "num_heads": [6] * 12}


def tiny_cfg(**over) -> dict:
    """24 channels, gc 8, heads 6: block widths 24/32/40/48/56 get 6/4/2/6/4 heads (the official pattern)."""
    cfg = {
        "type": "DRCT",
        "upscale": 2,
        "in_chans": 3,
        "img_size": 32,
        "window_size": 8,
        "compress_ratio": 3,
        "squeeze_factor": 30,
        "conv_scale": 0.01,
        "overlap_ratio": 0.5,
        "img_range": 1.0,
        "depths": [6, 6],
        "embed_dim": 24,
        "num_heads": [6, 6],
        "mlp_ratio": 2,
        "upsampler": "pixelshuffle",
        "resi_connection": "1conv",
        "gc": 8,
    }
    cfg.update(over)
    return cfg


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Large enough random values everywhere (bias tables, norms, biases) that every term matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / p[0].numel() ** 0.5))


def _pair(cfg: dict):
    torch.manual_seed(0)
    model = build_network(cfg).eval()
    randomise(model)
    plain = _load_plain_reference().build_plain_drct(cfg).eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    return model, plain


# ------------------------------------------------------------------------------------------------
# shared layers used by DRCT
# ------------------------------------------------------------------------------------------------


def test_pad_symmetric_matches_flip_concat_and_extends():
    x = torch.arange(20.0).view(1, 1, 4, 5)
    official = torch.cat([x, x.flip(2)], 2)[:, :, :7]
    official = torch.cat([official, official.flip(3)], 3)[..., :8]
    assert torch.equal(pad_symmetric(x, 3, 3), official)
    row = torch.tensor([[[[0.0, 1.0, 2.0]]]])
    # beyond one mirror image the pattern repeats: 0 1 2 | 2 1 0 | 0 1 2 | 2
    assert pad_symmetric(row, 0, 7).flatten().tolist() == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2]
    assert pad_symmetric(torch.ones(1, 1, 1, 1), 5, 2).shape == (1, 1, 6, 3)


@pytest.mark.parametrize(("size", "expected"), [(16, 16), (17, 15), (31, 1), (1, 15), (40, 8)])
def test_pad_symmetric_always_amounts(size, expected):
    y, (ph, pw) = pad_symmetric_always(torch.rand(1, 3, size, 20), 16)
    assert ph == expected and pw == 12
    assert y.shape == (1, 3, size + expected, 32)


def test_window_partition_relative_to_plain_order():
    h, w, ws, shift = 24, 16, 8, 4
    x = torch.randn(2, h * w, 3)
    plain = make_window_partition(h, w, ws, 0)
    shifted = make_window_partition(h, w, ws, shift)
    rel = shifted.relative_to(plain)
    stored = x.index_select(1, plain.perm)
    assert torch.equal(stored.index_select(1, rel.perm), x.index_select(1, shifted.perm))
    assert torch.equal(stored.index_select(1, rel.perm).index_select(1, rel.inv), stored)
    assert rel.groups == shifted.groups
    ident = plain.relative_to(plain)
    assert ident.perm is None and ident.inv is None and ident.groups == [(0, 6, 0)]
    # the shifted layout is torch.roll + window_partition (windows regrouped by mask region)
    ids = torch.roll(torch.arange(h * w).view(1, h, w, 1), (-shift, -shift), (1, 2))
    ref_rows = {tuple(r) for r in window_partition(ids, ws).view(-1, ws * ws).tolist()}
    assert {tuple(r) for r in shifted.perm.view(-1, ws * ws).tolist()} == ref_rows
    assert [g[2] for g in shifted.groups] == [0, 1, 2, 3]


def test_window_attention_index_buffer_is_optional():
    with_buf = WindowAttention(12, 4, 3, index_buffer=True)
    without = WindowAttention(12, (4, 4), 3)
    assert torch.equal(with_buf.state_dict()["relative_position_index"], relative_position_index(4))
    assert "relative_position_index" not in without.state_dict()
    without.load_state_dict({k: v for k, v in with_buf.state_dict().items() if "index" not in k})
    part = make_window_partition(8, 8, 4, 2)
    x = torch.randn(1, 64, 12)
    masks = shifted_window_region_masks(4, 2)
    torch.testing.assert_close(
        with_buf(x, part, masks), without(x, part, masks, rpi=relative_position_index(4)), rtol=0, atol=0
    )
    with pytest.raises(ValueError):
        WindowAttention(14, 4, 4)


# ------------------------------------------------------------------------------------------------
# DRCT
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shapes(scale):
    model = build_network(tiny_cfg(upscale=scale, depths=[6])).eval()
    assert isinstance(model, DRCT)
    assert model.scale == scale and model.window_multiple == 8
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16 * scale, 16 * scale)
        assert model(torch.rand(2, 3, 11, 19)).shape == (2, 3, 11 * scale, 19 * scale)
        assert model(torch.rand(1, 3, 3, 5)).shape == (1, 3, 3 * scale, 5 * scale)
        out = model(torch.rand(1, 3, 9, 1), pad_mode="symmetric_always")
        assert out.shape == (1, 3, 9 * scale, scale)


def test_build_network_registry_and_options():
    from restorer.archs import registry

    assert registry.get("DRCT") is DRCT
    model = build_network(tiny_cfg())
    # the unused official keys are accepted, the head rule and mlp ratios are the official ones
    blocks = [getattr(model.layers[0], f"swin{k}") for k in range(1, 6)]
    assert [b.dim for b in blocks] == [24, 32, 40, 48, 56]
    assert [b.attn.num_heads for b in blocks] == [6, 4, 2, 6, 4]
    assert [b.shift_size for b in blocks] == [0, 4, 0, 4, 0]
    assert [b.mlp.fc1.out_features for b in blocks] == [48, 64, 80, 48, 56]
    assert [b.attn_mask is None for b in blocks] == [True, False, True, False, True]
    assert model.layers[0].adjust5.weight.shape == (24, 56, 1, 1)
    assert model.layers[0].lrelu.negative_slope == 0.2
    assert model.conv_before_upsample[1].negative_slope == 0.01
    with pytest.raises(ValueError):
        build_network(tiny_cfg(upsampler=""))
    with pytest.raises(ValueError):
        build_network(tiny_cfg(embed_dim=14, num_heads=[6, 6]))  # 14 channels, 6 - 14 % 6 = 4 heads
    with pytest.raises(TypeError):
        build_network(tiny_cfg(not_an_option=1))
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 8, 8), pad_mode="zeros")


def test_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_network(tiny_cfg()).eval()
    randomise(model)
    path = tmp_path / "drct.pth"
    torch.save({"params_ema": model.state_dict()}, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    fresh = build_network(tiny_cfg()).eval()
    fresh.load_state_dict(loaded["params_ema"], strict=True)
    x = torch.rand(1, 3, 12, 20)
    with torch.inference_mode():
        assert torch.equal(model(x), fresh(x))
    # every buffer is persistent; the mask is the official one for img_size 32
    sd = loaded["params_ema"]
    assert {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()} == set(sd)
    assert sd["layers.1.swin4.attn_mask"].shape == (16, 64, 64)
    assert torch.equal(sd["layers.1.swin4.attn_mask"], shifted_window_mask(32, 32, 8, 4, cache=False))
    assert torch.equal(sd["layers.0.swin3.attn.relative_position_index"], relative_position_index(8))
    assert "layers.0.swin1.attn_mask" not in sd and "mean" not in sd


@pytest.mark.parametrize(
    ("over", "shape"),
    [
        ({}, (2, 3, 13, 21)),  # padding, shifted blocks (all four mask regions), two RDGs, batch 2
        ({"depths": [6]}, (1, 3, 32, 32)),  # == img_size: the official model uses its stored masks
        ({"upscale": 3, "window_size": 4, "depths": [6], "num_heads": [3], "gc": 6}, (1, 3, 13, 9)),
        ({"upscale": 4, "img_size": 8, "depths": [6], "in_chans": 1}, (1, 1, 8, 24)),  # img == ws: no shift
        ({"img_size": 4, "window_size": 8, "depths": [6]}, (1, 3, 7, 10)),  # window shrinks to 4
        ({"patch_norm": False, "resi_connection": "identity", "img_range": 255.0}, (1, 3, 12, 20)),
        ({"ape": True, "img_size": 16, "depths": [6]}, (1, 3, 13, 16)),
    ],
)
def test_matches_plain_reference(over, shape):
    cfg = tiny_cfg(**over)
    model, plain = _pair(cfg)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours, ref = model(x), plain(x)
    scale = cfg["upscale"]
    assert ours.shape == ref.shape == (shape[0], shape[1], shape[2] * scale, shape[3] * scale)
    assert ref.abs().max() > 0.5  # the weights do something
    assert (ours - ref).abs().max() < 1e-4


def test_padding_conventions():
    model, plain = _pair(tiny_cfg(depths=[6]))
    x = torch.rand(1, 3, 19, 16, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reflect = model(x)
        sym = model(x, pad_mode="symmetric_always")
        assert (sym - reflect).abs().max() > 1e-3  # different convention, different pixels
        assert (sym - plain(x, pad_mode="symmetric_always")).abs().max() < 1e-4
        assert (reflect - plain(x, pad_mode="reflect")).abs().max() < 1e-4
        model.pad_mode = "symmetric_always"  # per-instance default
        assert torch.equal(model(x), sym)
        # explicit official inference-script padding (one flip concat) then crop == symmetric_always
        xp = torch.cat([x, x.flip(2)], 2)[:, :, :24]  # (19 // 8 + 1) * 8
        xp = torch.cat([xp, xp.flip(3)], 3)[..., :24]  # a full window more for 16
        model.pad_mode = "reflect"
        assert (model(xp)[..., :38, :32] - sym).abs().max() < 1e-5
    assert DRCT.pad_mode == "reflect"


def test_stored_mask_is_not_needed():
    model, _ = _pair(tiny_cfg(depths=[6]))
    x = torch.rand(1, 3, 32, 32)  # == img_size
    with torch.inference_mode():
        before = model(x)
        for layer in model.layers:
            layer.swin2.attn_mask.zero_()
            layer.swin4.attn_mask.zero_()
        assert torch.equal(model(x), before)


def test_gradients_match_plain_reference():
    cfg = tiny_cfg(depths=[6], drop_path_rate=0.0, use_checkpoint=True)
    torch.manual_seed(0)
    model = build_network(cfg).train()
    randomise(model)
    plain = _load_plain_reference().build_plain_drct(cfg).train()
    plain.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 16)
    model(x).square().mean().backward()
    plain(x).square().mean().backward()
    ref_grads = dict(plain.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-3, atol=1e-5)


def test_bfloat16_forward_runs():
    model, _ = _pair(tiny_cfg(depths=[6]))
    x = torch.rand(1, 3, 12, 20)
    with torch.inference_mode():
        ref = model(x)
        out = model.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize(
    ("variant", "scale", "n_keys", "n_params"),
    [
        (DRCT_M, 2, 506, 13_991_867),
        (DRCT_M, 3, 506, 14_176_507),
        (DRCT_M, 4, 508, 14_139_579),
        (DRCT_L, 2, 998, 27_433_007),
        (DRCT_L, 3, 998, 27_617_647),
        (DRCT_L, 4, 1000, 27_580_719),
    ],
)
def test_official_key_counts(variant, scale, n_keys, n_params):
    with torch.device("meta"):
        model = build_network({**OFFICIAL_BASE, **variant, "upscale": scale})
    sd = model.state_dict()
    assert len(sd) == n_keys
    assert sum(p.numel() for p in model.parameters()) == n_params
    last = len(variant["depths"]) - 1
    for k, heads in zip(range(1, 6), (6, 4, 2, 6, 4)):
        assert sd[f"layers.{last}.swin{k}.attn.relative_position_bias_table"].shape == (961, heads)
        assert sd[f"layers.{last}.swin{k}.attn.relative_position_index"].shape == (256, 256)
        assert sd[f"layers.{last}.swin{k}.attn.relative_position_index"].dtype == torch.long
    assert sd["layers.0.swin2.attn_mask"].shape == (16, 256, 256)
    assert sd["layers.0.swin4.attn_mask"].dtype == torch.float32
    assert sd["layers.0.swin4.mlp.fc1.weight"].shape == (276, 276)
    assert sd["layers.0.swin3.mlp.fc1.weight"].shape == (488, 244)
    assert sd["layers.0.adjust1.weight"].shape == (32, 180, 1, 1)
    assert sd["layers.0.adjust5.weight"].shape == (180, 308, 1, 1)
    assert "layers.0.conv.weight" not in sd
    assert ("upsample.2.weight" in sd) == (scale == 4)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_drct_forward_matches_plain(scale):
    cfg = {**OFFICIAL_BASE, **DRCT_M, "upscale": scale}
    model, plain = _pair(cfg)
    sd = model.state_dict()
    assert torch.equal(sd["layers.5.swin2.attn_mask"], shifted_window_mask(64, 64, 16, 8, cache=False))
    x = torch.rand(1, 3, 40, 56)
    with torch.inference_mode():
        ours, ref = model(x), plain(x)
        assert ours.shape == (1, 3, 40 * scale, 56 * scale)
        assert (ours - ref).abs().max() < 1e-4 * max(1.0, float(ref.abs().max()))
        sym, sym_ref = model(x, pad_mode="symmetric_always"), plain(x, pad_mode="symmetric_always")
        assert (sym - sym_ref).abs().max() < 1e-4 * max(1.0, float(sym_ref.abs().max()))
