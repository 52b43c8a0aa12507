"""CRAFT architecture (fast: tiny configs, CPU; the official configs only on the meta device or @slow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from restorer.archs import build_network
from restorer.archs.craft_arch import CRAFT, DynamicPosBias, relative_offsets
from restorer.archs.layers import (
    BiasFreeLayerNorm,
    ChannelLayerNorm,
    WithBiasLayerNorm,
    pad_symmetric_always,
    relative_position_index,
)

ROOT = Path(__file__).resolve().parents[1]


def _load_plain_reference():
    name = "craft_plain_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "craft_plain_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# network_g of options/train/CRAFT/train_CRAFT_SRx{2,3,4}_scratch.yml (= inference/inference_CRAFT.py)
OFFICIAL = {
    "type": "CRAFT",
    "in_chans": 3,
    "img_size": 64,
    "window_size": 16,
    "img_range": 1.0,
    "depths": [2, 2, 2, 2],
    "embed_dim": 48,
    "num_heads": [6, 6, 6, 6],
    "mlp_ratio": 2,
    "resi_connection": "1conv",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**over) -> dict:
    # embed 32: each SRWAB branch has 16 channels, so DynamicPosBias has pos_dim 1 as in the official
    # models; split (2, 4) and window_size 4 give a padding multiple of 4.
    cfg = {
        "type": "CRAFT",
        "upscale": 2,
        "in_chans": 3,
        "img_size": 64,
        "window_size": 4,
        "img_range": 1.0,
        "depths": [1, 1],
        "embed_dim": 32,
        "num_heads": [4, 2],
        "split_size_0": 2,
        "split_size_1": 4,
        "mlp_ratio": 2,
        "resi_connection": "1conv",
    }
    cfg.update(over)
    return cfg


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Large enough random values everywhere (norms, biases, temperatures) that every term matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("temperature"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen) * 2)
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1 or (p.ndim == 2 and p.shape[-1] == 1):  # biases, 1-feature DynamicPosBias
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / p[0].numel() ** 0.5))


def _pair(cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = build_network(cfg).eval()
    randomise(model, seed)
    plain = _load_plain_reference().build_plain_craft(cfg).eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    return model, plain


# ------------------------------------------------------------------------------------------------
# Shared layers added for CRAFT
# ------------------------------------------------------------------------------------------------


def test_channel_layer_norm_keys_and_math():
    norm = ChannelLayerNorm(6, "WithBias")
    assert set(norm.state_dict()) == {"body.weight", "body.bias"}
    assert isinstance(ChannelLayerNorm(6, "with_bias").body, WithBiasLayerNorm)  # CRAFT's top-level spelling
    bf = ChannelLayerNorm(6, "BiasFree")
    assert isinstance(bf.body, BiasFreeLayerNorm) and set(bf.state_dict()) == {"body.weight"}
    with torch.no_grad():
        norm.body.weight.normal_()
        norm.body.bias.normal_()
        bf.body.weight.normal_()
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    t = x.permute(0, 2, 3, 1)
    mu, var = t.mean(-1, keepdim=True), t.var(-1, keepdim=True, unbiased=False)
    expected = ((t - mu) / torch.sqrt(var + 1e-5) * norm.body.weight + norm.body.bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)
    expected_bf = (t / torch.sqrt(var + 1e-5) * bf.body.weight).permute(0, 3, 1, 2)
    torch.testing.assert_close(bf(x), expected_bf)


def test_relative_offsets_match_the_index():
    for win in ((4, 16), (16, 4), (2, 3)):
        offsets = relative_offsets(win)
        wh, ww = win
        assert offsets.shape == ((2 * wh - 1) * (2 * ww - 1), 2) and offsets.dtype == torch.float32
        index = relative_position_index(win)
        ys, xs = torch.arange(wh * ww) // ww, torch.arange(wh * ww) % ww
        rel = torch.stack([ys[:, None] - ys[None, :], xs[:, None] - xs[None, :]], dim=-1).float()
        assert torch.equal(offsets[index], rel)  # the row the index picks holds the pair's (dy, dx)


# ------------------------------------------------------------------------------------------------
# Construction, keys, checkpoints
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "n_params"), [(2, 737_756), (3, 744_251), (4, 753_344)])
def test_official_key_counts(scale, n_params):
    with torch.device("meta"):
        model = build_network({**OFFICIAL, "upscale": scale})
    sd = model.state_dict()
    assert len(sd) == 844
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert model.scale == scale and model.window_multiple == 16
    assert (
        sd["relative_position_index_h"].shape == (64, 64)
        and sd["relative_position_index_h"].dtype == torch.long
    )
    assert sd["relative_position_index_v"].shape == (64, 64)
    assert sd["biases_h"].shape == sd["biases_v"].shape == (217, 2) and sd["biases_h"].dtype == torch.float32
    assert list(sd)[:4] == ["relative_position_index_h", "relative_position_index_v", "biases_v", "biases_h"]
    assert sd["upsample.0.weight"].shape == (3 * scale**2, 48, 3, 3)
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    assert names == set(sd)  # every buffer persistent, nothing else
    assert "mean" not in sd
    shapes = {
        "layers.3.residual_group.srwa_blocks.3.qkv.weight": (144, 48),
        "layers.0.residual_group.srwa_blocks.0.get_v.weight": (48, 1, 3, 3),
        "layers.0.residual_group.srwa_blocks.1.attns.1.pos.pos_proj.weight": (1, 2),
        "layers.0.residual_group.srwa_blocks.1.attns.1.pos.pos1.0.weight": (1,),
        "layers.0.residual_group.srwa_blocks.1.attns.1.pos.pos3.2.weight": (3, 1),
        "layers.0.residual_group.srwa_blocks.0.mlp.fc1.weight": (96, 48),
        "layers.0.residual_group.hfer_blocks.1.fc.weight": (24, 24, 1, 1),
        "layers.0.residual_group.hfer_blocks.1.conv.weight": (24, 24, 3, 3),
        "layers.0.residual_group.hfer_blocks.1.last_fc.weight": (48, 48, 1, 1),
        "layers.0.residual_group.hf_blocks.1.norm1.body.weight": (48,),
        "layers.0.residual_group.hf_blocks.1.attn.temperature": (6, 1, 1),
        "layers.0.residual_group.hf_blocks.1.attn.kv.weight": (96, 48, 1, 1),
        "layers.0.residual_group.hf_blocks.1.attn.kv_dwconv.weight": (96, 1, 3, 3),
        "layers.0.residual_group.hf_blocks.1.ffn.project_in.weight": (254, 48, 1, 1),
        "layers.0.residual_group.hf_blocks.1.ffn.project_out.weight": (48, 127, 1, 1),
        "layers.0.conv.weight": (48, 48, 3, 3),
        "norm.body.weight": (48,),
        "conv_after_body.weight": (48, 48, 3, 3),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    # HFB convolutions are bias-free
    assert not any(
        k.startswith("layers.0.residual_group.hf_blocks.0.") and k.endswith("conv.bias") for k in sd
    )
    assert "layers.0.residual_group.hf_blocks.0.attn.q.bias" not in sd


def test_official_buffers_equal_plain_reference():
    model = CRAFT(**{k: v for k, v in OFFICIAL.items() if k != "type"}, upscale=4)
    sd = model.state_dict()
    assert torch.equal(sd["relative_position_index_h"], relative_position_index((4, 16)))
    assert torch.equal(sd["relative_position_index_v"], relative_position_index((16, 4)))
    assert sd["biases_h"][0].tolist() == [-3.0, -15.0] and sd["biases_h"][-1].tolist() == [3.0, 15.0]
    assert sd["biases_v"][0].tolist() == [-15.0, -3.0]
    plain = _load_plain_reference().build_plain_craft({**OFFICIAL, "upscale": 4})
    plain_sd = plain.state_dict()
    assert list(plain_sd) == list(sd)
    for key in ("relative_position_index_h", "relative_position_index_v", "biases_h", "biases_v"):
        assert torch.equal(sd[key], plain_sd[key]), key
    plain.load_state_dict(sd, strict=True)


def test_build_network_registry_and_validation():
    model = build_network(tiny_cfg(upsampler="pixelshuffledirect"))  # ignored, as in the official code
    assert isinstance(model, CRAFT) and model.pad_mode == "symmetric_always"
    from restorer.archs import registry

    assert registry.get("CRAFT") is CRAFT
    with pytest.raises(ValueError):
        build_network(tiny_cfg(num_heads=[3, 2]))  # 32 channels do not split into 3 heads
    with pytest.raises(ValueError):
        build_network(tiny_cfg(resi_connection="3conv"))
    with pytest.raises(ValueError):
        build_network(tiny_cfg(pad_mode="zeros"))
    with pytest.raises(ValueError):
        build_network(tiny_cfg())(torch.rand(1, 3, 8, 8), pad_mode="replicate")


def test_state_dict_round_trip(tmp_path):
    model, _ = _pair(tiny_cfg())
    path = tmp_path / "CRAFT_MODEL_X2.pth"
    torch.save({"params": model.state_dict()}, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert set(loaded) == {"params"}
    fresh = build_network(tiny_cfg()).eval()
    fresh.load_state_dict(loaded["params"], strict=True)
    x = torch.rand(1, 3, 12, 20)
    with torch.inference_mode():
        assert torch.equal(model(x), fresh(x))


# ------------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shapes(scale):
    model = build_network(tiny_cfg(upscale=scale, depths=[1], num_heads=[4])).eval()
    assert model.scale == scale and model.window_multiple == 4
    with torch.inference_mode():
        for mode in ("symmetric_always", "reflect"):
            assert model(torch.rand(1, 3, 16, 16), pad_mode=mode).shape == (1, 3, 16 * scale, 16 * scale)
            assert model(torch.rand(2, 3, 13, 7), pad_mode=mode).shape == (2, 3, 13 * scale, 7 * scale)
            assert model(torch.rand(1, 3, 1, 2), pad_mode=mode).shape == (1, 3, scale, 2 * scale)


@pytest.mark.parametrize(
    ("over", "shape", "pad_mode"),
    [
        ({}, (2, 3, 21, 37), "symmetric_always"),  # shifted blocks, two groups, batch 2
        ({}, (2, 3, 21, 37), "reflect"),
        ({}, (1, 3, 16, 16), "reflect"),  # already a multiple: no padding at all
        ({}, (1, 3, 3, 5), "symmetric_always"),  # pad > size: the flips repeat
        ({}, (1, 3, 3, 5), "reflect"),  # reflect runs out: replicate
        # pos_dim 3: the DynamicPosBias is a real function of the offsets, so the index matters
        ({"embed_dim": 96, "num_heads": [4], "depths": [1]}, (1, 3, 12, 16), "symmetric_always"),
        ({"split_size_0": 4, "split_size_1": 2, "depths": [2], "num_heads": [4]}, (1, 3, 10, 9), "reflect"),
        ({"split_size_0": 2, "split_size_1": 2, "window_size": 8, "upscale": 3}, (1, 3, 9, 14), "reflect"),
        (
            {"in_chans": 1, "img_range": 255.0, "resi_connection": "identity"},
            (1, 1, 8, 12),
            "symmetric_always",
        ),
    ],
)
def test_matches_plain_reference(over, shape, pad_mode):
    cfg = tiny_cfg(**over)
    model, plain = _pair(cfg)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours, ref = model(x, pad_mode=pad_mode), plain(x, pad_mode=pad_mode)
    s = cfg["upscale"]
    assert ours.shape == ref.shape == (shape[0], shape[1], shape[2] * s, shape[3] * s)
    assert ref.abs().max() > 0.5  # the weights do something
    assert (ours - ref).abs().max() < 1e-4 * max(1.0, float(ref.abs().max()))


def test_padding_conventions_differ_everywhere():
    cfg = tiny_cfg(depths=[1], num_heads=[4])
    model, plain = _pair(cfg)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        sym, refl = model(x), model(x, pad_mode="reflect")
        assert torch.equal(sym, model(x, pad_mode="symmetric_always"))  # the default
        model.pad_mode = "reflect"
        assert torch.equal(model(x), refl)
        assert (sym - plain(x, pad_mode="symmetric_always")).abs().max() < 1e-4
        assert (refl - plain(x, pad_mode="reflect")).abs().max() < 1e-4
    # HFB attention pools over the whole image, so even the centre moves.
    assert (sym - refl)[..., 8:24, 8:24].abs().max() > 1e-3
    # The symmetric padding is the inference script's flip concat, adding a full multiple here.
    padded = model.pad(x, "symmetric_always")
    flip = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :20]
    flip = torch.cat([flip, torch.flip(flip, [3])], 3)[:, :, :, :20]
    assert torch.equal(padded, flip)
    assert model.pad(x, "reflect") is x
    odd = x[..., :13, :7]  # CRAFT_Model.test: F.pad(..., 'reflect') only when needed
    assert torch.equal(model.pad(odd, "reflect"), torch.nn.functional.pad(odd, (0, 1, 0, 3), mode="reflect"))
    assert torch.equal(pad_symmetric_always(x, 4)[0], flip)


def test_dynamic_pos_bias_is_per_head_constant_at_official_width():
    # pos_dim = 24 // 4 // 4 = 1: every LayerNorm sees one feature and outputs its bias.
    pos = DynamicPosBias(24 // 4, 3)
    randomise(pos)
    table = pos(relative_offsets((4, 16)))
    assert table.shape == (217, 3)
    assert torch.equal(table, table[:1].expand_as(table))
    # pos_dim 3 (embed_dim 96): a real function of the offset. (With pos_dim 2 each LayerNorm output is
    # nearly +-1, so the table takes at most a few values.)
    wide = DynamicPosBias(48 // 4, 2)
    randomise(wide)
    table = wide(relative_offsets((2, 4)))
    assert len(torch.unique(table[:, 0])) > 5


def test_gradients_match_plain_reference():
    cfg = tiny_cfg(depths=[1], num_heads=[4], embed_dim=96)
    model, plain = _pair(cfg)
    model.train()
    plain.train()
    x = torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(3))
    model(x).square().mean().backward()
    plain(x).square().mean().backward()
    ref_grads = dict(plain.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_forward_matches_plain(scale):
    cfg = {**OFFICIAL, "upscale": scale}
    model, plain = _pair(cfg)
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        for mode in ("symmetric_always", "reflect"):
            ours, ref = model(x, pad_mode=mode), plain(x, pad_mode=mode)
            assert ours.shape == (1, 3, 40 * scale, 56 * scale)
            assert (ours - ref).abs().max() < 1e-4 * max(1.0, float(ref.abs().max()))
