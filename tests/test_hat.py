"""HAT architecture and the shared window-attention layers (fast: tiny configs, CPU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from restorer.archs import build_network
from restorer.archs.hat_arch import HAT
from restorer.archs.layers import (
    Mlp,
    PatchEmbed,
    PatchUnEmbed,
    Upsample,
    UpsampleOneStep,
    crop_to,
    gather_relative_position_bias,
    pad_to_multiple,
    relative_position_index,
    relative_position_index_overlap,
    shifted_window_mask,
    shifted_window_region_masks,
    window_partition,
    window_reverse,
)

ROOT = Path(__file__).resolve().parents[1]


def _load_plain_reference():
    name = "hat_plain_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "hat_plain_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


OFFICIAL_BASE = {
    "type": "HAT",
    "in_chans": 3,
    "img_size": 64,
    "window_size": 16,
    "conv_scale": 0.01,
    "overlap_ratio": 0.5,
    "img_range": 1.0,
    "mlp_ratio": 2,
    "upsampler": "pixelshuffle",
    "resi_connection": "1conv",
}
HAT_S = {
    "embed_dim": 144,
    "depths": [6] * 6,
    "num_heads": [6] * 6,
    "compress_ratio": 24,
    "squeeze_factor": 24,
}
HAT_M = {"embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6, "compress_ratio": 3, "squeeze_factor": 30}
HAT_L = {
    "embed_dim": 180,
    "depths": [6] * 12,
    "num_heads": [6] * 12,
    "compress_ratio": 3,
    "squeeze_factor": 30,
}


def tiny_cfg(**over) -> dict:
    cfg = {
        "type": "HAT",
        "upscale": 2,
        "in_chans": 3,
        "img_size": 32,
        "window_size": 8,
        "compress_ratio": 3,
        "squeeze_factor": 4,
        "conv_scale": 0.01,
        "overlap_ratio": 0.5,
        "img_range": 1.0,
        "depths": [2, 2],
        "embed_dim": 24,
        "num_heads": [2, 3],
        "mlp_ratio": 2,
        "upsampler": "pixelshuffle",
        "resi_connection": "1conv",
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


# ------------------------------------------------------------------------------------------------
# layers.py
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ws", [4, (4, 16), (16, 4)])
def test_window_partition_round_trip(ws):
    x = torch.randn(2, 16, 32, 5)
    wins = window_partition(x, ws)
    wh, ww = (ws, ws) if isinstance(ws, int) else ws
    assert wins.shape == (2 * (16 // wh) * (32 // ww), wh, ww, 5)
    # window k of batch 1 is the k-th block in row-major order
    n_w = 32 // ww
    k = 3
    r, c = divmod(k, n_w)
    nwin = (16 // wh) * n_w
    torch.testing.assert_close(wins[nwin + k], x[1, r * wh : (r + 1) * wh, c * ww : (c + 1) * ww])
    assert torch.equal(window_reverse(wins, ws, 16, 32), x)
    assert torch.equal(window_reverse(wins.reshape(wins.shape[0], -1, 5), ws, 16, 32), x)


def test_window_partition_rejects_bad_size():
    with pytest.raises(ValueError):
        window_partition(torch.zeros(1, 10, 16, 1), 4)


def test_pad_to_multiple_reflect_and_noop():
    x = torch.randn(1, 2, 10, 12)
    y, pads = pad_to_multiple(x, 16)
    assert pads == (6, 4) and y.shape == (1, 2, 16, 16)
    torch.testing.assert_close(y, F.pad(x, (0, 4, 0, 6), mode="reflect"))
    z, pads = pad_to_multiple(x, (5, 4))
    assert z is x and pads == (0, 0)
    assert torch.equal(crop_to(y, 10, 12), x)


def test_pad_to_multiple_replicate_fallback():
    x = torch.arange(15.0).view(1, 1, 3, 5)
    y, pads = pad_to_multiple(x, 16)
    assert pads == (13, 11) and y.shape == (1, 1, 16, 16)
    assert torch.equal(y[..., :3, :5], x)
    # rows: 0 1 2 | reflect 1 0 | replicate 0 ...
    assert torch.equal(y[0, 0, 3, :5], x[0, 0, 1])
    assert torch.equal(y[0, 0, 4, :5], x[0, 0, 0])
    assert torch.equal(y[0, 0, 15, :5], x[0, 0, 0])
    # columns: 0..4 | reflect 3 2 1 0 | replicate 0 ...
    assert torch.equal(y[0, 0, :3, 5], x[0, 0, :, 3])
    assert torch.equal(y[0, 0, :3, 8], x[0, 0, :, 0])
    assert torch.equal(y[0, 0, :3, 15], x[0, 0, :, 0])
    one, pads = pad_to_multiple(torch.ones(1, 3, 1, 1), 8)
    assert pads == (7, 7) and torch.equal(one, torch.ones(1, 3, 8, 8))


def test_relative_position_index_square_and_rectangular():
    idx = relative_position_index(16)
    assert idx.shape == (256, 256) and idx.dtype == torch.long
    assert idx.min() == 0 and idx.max() == 31 * 31 - 1
    assert torch.all(idx.diagonal() == 15 * 31 + 15)
    rect = relative_position_index((4, 16))
    assert rect.shape == (64, 64) and rect.max() == 7 * 31 - 1
    # query (y=3, x=0), key (y=0, x=15): dy = 3, dx = -15
    i, j = 3 * 16 + 0, 0 * 16 + 15
    assert rect[i, j] == (3 + 3) * 31 + (-15 + 15)
    assert torch.equal(relative_position_index((8, 8)), relative_position_index(8))


def test_relative_position_index_overlap_official_values():
    idx = relative_position_index_overlap(16, 24)
    assert idx.shape == (256, 576) and idx.dtype == torch.long
    assert idx.min() == -880 and idx.max() == 640
    assert int((idx < 0).sum()) == 92_800
    # distinct (dy, dx) offsets map to distinct rows of the 39*39 table after wrap-around
    assert len(torch.unique(idx % 1521)) == 1521
    # query (0,0), key (0,0): (0 - 7) * 39 + (0 - 7)
    assert idx[0, 0] == -7 * 39 - 7


def test_gather_relative_position_bias_accepts_negative_indices():
    table = torch.randn(1521, 3)
    idx = relative_position_index_overlap(16, 24)
    bias = gather_relative_position_bias(table, idx)
    assert bias.shape == (3, 256, 576) and bias.is_contiguous()
    torch.testing.assert_close(bias, table[idx.view(-1)].view(256, 576, 3).permute(2, 0, 1), rtol=0, atol=0)


def _official_style_mask(h, w, ws, s):
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
        for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws).view(-1, ws * ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def test_shifted_window_mask_and_regions():
    mask = shifted_window_mask(24, 32, 8, 4, cache=False)
    assert mask.shape == (12, 64, 64)
    assert torch.equal(mask, _official_style_mask(24, 32, 8, 4))
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert shifted_window_mask(24, 32, 8, 4) is shifted_window_mask(24, 32, 8, 4)  # memoised
    regions = shifted_window_region_masks(8, 4)
    grid = mask.view(3, 4, 64, 64)
    for r in range(3):
        for c in range(4):
            expected = regions[(2 if r == 2 else 0) + (1 if c == 3 else 0)]
            assert torch.equal(grid[r, c], expected)
    rect = shifted_window_mask(8, 32, (4, 16), (2, 8), cache=False)
    assert rect.shape == (4, 64, 64)


def test_modules_keys_and_shapes():
    mlp = Mlp(8, 16)
    assert set(mlp.state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    up = Upsample(4, 8)
    assert set(up.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert up(torch.zeros(1, 8, 3, 5)).shape == (1, 8, 12, 20)
    up3 = Upsample(3, 8)
    assert up3[0].weight.shape == (72, 8, 3, 3) and up3(torch.zeros(1, 8, 2, 2)).shape == (1, 8, 6, 6)
    with pytest.raises(ValueError):
        Upsample(5, 8)
    one = UpsampleOneStep(4, 8, 3)
    assert one[0].weight.shape == (48, 8, 3, 3) and one(torch.zeros(1, 8, 2, 3)).shape == (1, 3, 8, 12)
    emb = PatchEmbed(64, 1, 8, 8, torch.nn.LayerNorm)
    assert set(emb.state_dict()) == {"norm.weight", "norm.bias"}
    x = torch.randn(2, 8, 3, 5)
    tokens = PatchEmbed(64, 1, 8, 8, None)(x)
    assert tokens.shape == (2, 15, 8)
    assert torch.equal(PatchUnEmbed(64, 1, 8, 8)(tokens, (3, 5)), x)
    assert len(PatchUnEmbed(64, 1, 8, 8).state_dict()) == 0


# ------------------------------------------------------------------------------------------------
# HAT
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shapes(scale):
    model = build_network(tiny_cfg(upscale=scale, depths=[1], num_heads=[2])).eval()
    assert model.scale == scale and model.window_multiple == 8
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16 * scale, 16 * scale)
        assert model(torch.rand(2, 3, 21, 37)).shape == (2, 3, 21 * scale, 37 * scale)
        assert model(torch.rand(1, 3, 3, 5)).shape == (1, 3, 3 * scale, 5 * scale)


def test_absolute_position_embedding():
    model = build_network(tiny_cfg(ape=True, img_size=16)).eval()
    assert model.state_dict()["absolute_pos_embed"].shape == (1, 256, 24)
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 13, 16)).shape == (1, 3, 26, 32)  # padded to img_size
        with pytest.raises(ValueError):
            model(torch.rand(1, 3, 24, 16))


def test_build_network_and_registry():
    model = build_network(tiny_cfg())
    assert isinstance(model, HAT)
    from restorer.archs import registry

    assert registry.get("HAT") is HAT
    with pytest.raises(ValueError):
        build_network(tiny_cfg(upsampler=""))


def test_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_network(tiny_cfg()).eval()
    randomise(model)
    path = tmp_path / "hat.pth"
    torch.save({"params_ema": model.state_dict()}, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    fresh = build_network(tiny_cfg()).eval()
    fresh.load_state_dict(loaded["params_ema"], strict=True)
    x = torch.rand(1, 3, 20, 24)
    with torch.inference_mode():
        assert torch.equal(model(x), fresh(x))


@pytest.mark.parametrize(
    ("variant", "scale", "n_keys", "n_params"),
    [
        (HAT_S, 4, 864, 9_621_183),
        (HAT_S, 2, 862, 9_473_471),
        (HAT_M, 4, 864, 20_772_507),
        (HAT_M, 3, 862, 20_809_435),
        (HAT_L, 4, 1710, 40_846_575),
    ],
)
def test_official_key_counts(variant, scale, n_keys, n_params):
    with torch.device("meta"):
        model = build_network({**OFFICIAL_BASE, **variant, "upscale": scale})
    sd = model.state_dict()
    assert len(sd) == n_keys
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert sd["relative_position_index_SA"].shape == (256, 256)
    assert sd["relative_position_index_OCA"].shape == (256, 576)
    assert sd["layers.0.residual_group.blocks.0.attn.relative_position_bias_table"].shape == (961, 6)
    assert sd["layers.0.residual_group.overlap_attn.relative_position_bias_table"].shape == (1521, 6)
    assert "mean" not in sd


def test_official_hat_s_buffers_and_names():
    model = build_network({**OFFICIAL_BASE, **HAT_S, "upscale": 4})
    sd = model.state_dict()
    oca = sd["relative_position_index_OCA"]
    assert oca.dtype == torch.long and int((oca < 0).sum()) == 92_800 and oca.min() == -880
    assert torch.equal(sd["relative_position_index_SA"], relative_position_index(16))
    # every buffer is persistent and every state-dict entry is a parameter or such a buffer
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    assert names == set(sd)
    expected = [
        "conv_first.weight",
        "patch_embed.norm.weight",
        "layers.5.residual_group.blocks.5.conv_block.cab.3.attention.3.weight",
        "layers.0.residual_group.blocks.1.mlp.fc2.bias",
        "layers.0.residual_group.overlap_attn.qkv.weight",
        "layers.0.conv.weight",
        "norm.bias",
        "conv_after_body.weight",
        "conv_before_upsample.0.weight",
        "upsample.0.weight",
        "upsample.2.weight",
        "conv_last.weight",
    ]
    for key in expected:
        assert key in sd, key
    assert sd["layers.0.residual_group.blocks.0.conv_block.cab.0.weight"].shape == (6, 144, 3, 3)
    assert sd["layers.0.residual_group.blocks.0.conv_block.cab.3.attention.1.weight"].shape == (6, 144, 1, 1)
    assert model.conv_before_upsample[1].negative_slope == 0.01
    plain = _load_plain_reference().build_plain_hat({**OFFICIAL_BASE, **HAT_S, "upscale": 4})
    plain.load_state_dict(sd, strict=True)


@pytest.mark.parametrize(
    ("over", "shape"),
    [
        ({}, (2, 3, 21, 37)),  # needs padding, shifted blocks, two RHAGs, batch 2
        ({}, (1, 3, 32, 32)),  # multiple of the window, no padding
        ({"upscale": 3, "window_size": 4, "depths": [3], "num_heads": [3]}, (1, 3, 13, 9)),
        ({"img_size": 8, "depths": [2], "num_heads": [2]}, (1, 3, 16, 8)),  # img_size == ws: no shift
        ({"upscale": 4, "depths": [2], "num_heads": [2], "in_chans": 1}, (1, 1, 8, 24)),
        ({"patch_norm": False, "resi_connection": "identity", "img_range": 255.0}, (1, 3, 12, 20)),
    ],
)
def test_matches_plain_reference(over, shape):
    torch.manual_seed(0)
    cfg = tiny_cfg(**over)
    model = build_network(cfg).eval()
    randomise(model)
    plain = _load_plain_reference().build_plain_hat(cfg).eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours, ref = model(x), plain(x)
    scale = cfg["upscale"]
    assert ours.shape == ref.shape == (shape[0], shape[1], shape[2] * scale, shape[3] * scale)
    assert ref.abs().max() > 0.5  # the weights do something
    assert (ours - ref).abs().max() < 1e-4


def test_gradients_match_plain_reference():
    torch.manual_seed(0)
    cfg = tiny_cfg(depths=[2], num_heads=[2], drop_path_rate=0.0)
    model = build_network(cfg).train()
    randomise(model)
    plain = _load_plain_reference().build_plain_hat(cfg).train()
    plain.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 16)
    model(x).square().mean().backward()
    plain(x).square().mean().backward()
    ref_grads = dict(plain.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_hat_s_forward_matches_plain(scale):
    torch.manual_seed(0)
    cfg = {**OFFICIAL_BASE, **HAT_S, "upscale": scale}
    model = build_network(cfg).eval()
    randomise(model)
    plain = _load_plain_reference().build_plain_hat(cfg).eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 40, 56)
    with torch.inference_mode():
        ours, ref = model(x), plain(x)
    assert ours.shape == (1, 3, 40 * scale, 56 * scale)
    assert (ours - ref).abs().max() < 1e-4 * max(1.0, float(ref.abs().max()))
