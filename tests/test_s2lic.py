"""S2LIC architecture: shapes, layout, SwinV2 attention against a literal reference, checkerboard
helpers, entropy tables, checkpoint loading, and (slow) the published configuration."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from restorer.archs.layers import window_partition, window_reverse
from restorer.archs.s2lic_arch import (
    RSTB,
    S2LIC,
    ckbd_anchor,
    ckbd_nonanchor,
    ckbd_squeeze,
    ckbd_unsqueeze,
    get_scale_table,
)

from conftest import TINY_S2LIC

TINY = TINY_S2LIC


def tiny_model(seed: int = 0, **overrides) -> S2LIC:
    torch.manual_seed(seed)
    return S2LIC(**{**TINY, **overrides})


def test_forward_shapes_and_every_parameter_learns():
    model = tiny_model()
    x = torch.rand(2, 3, 64, 128)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y_likelihoods"].shape == (2, 40, 4, 8)
    assert out["likelihoods"]["z_likelihoods"].shape == (2, 16, 1, 2)
    rate = sum(-torch.log2(v).sum() for v in out["likelihoods"].values())
    (rate + out["x_hat"].square().mean()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None and not n.endswith("quantiles")]
    assert no_grad == []
    model.aux_loss().backward()
    assert model.entropy_bottleneck.quantiles.grad is not None


def test_size_must_be_multiple_of_64():
    with pytest.raises(ValueError, match="multiples of 64"):
        tiny_model()(torch.rand(1, 3, 64, 96))


def test_checkerboard_helpers():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6) + 1
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    anchor = (rows + cols) % 2 == 1  # (even, odd) and (odd, even): MLIC's anchor parity
    assert torch.equal(ckbd_anchor(x) != 0, anchor.expand_as(x))
    assert torch.equal(ckbd_anchor(x) + ckbd_nonanchor(x), x)
    for is_anchor in (True, False):
        sq = ckbd_squeeze(x, is_anchor)
        assert sq.shape == (2, 3, 4, 3)
        half = ckbd_anchor(x) if is_anchor else ckbd_nonanchor(x)
        assert torch.equal(ckbd_unsqueeze(sq, is_anchor), half)
        assert torch.equal(sq[:, :, 0], x[:, :, 0, 1::2] if is_anchor else x[:, :, 0, 0::2])


def _reference_swinv2_block(blk, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Literal SwinV2 block (roll, partition, full (nW, N, N) mask, softmax), for comparison."""
    attn = blk.attn
    b, _, c = x.shape
    ws, shift, heads = blk.window_size, blk.shift_size, attn.num_heads
    t = x.view(b, h, w, c)
    if shift:
        t = torch.roll(t, (-shift, -shift), (1, 2))
    win = window_partition(t, ws).view(-1, ws * ws, c)
    qkv = F.linear(win, attn.qkv.weight, torch.cat((attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias)))
    q, k, v = qkv.reshape(win.shape[0], ws * ws, 3, heads, -1).permute(2, 0, 3, 1, 4)
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    logits = logits * torch.clamp(attn.logit_scale, max=math.log(100.0)).exp() + attn.position_bias()[None]
    if shift:
        img = torch.zeros(1, h, w, 1)
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                img[:, hs, wsl, :] = cnt
                cnt += 1
        mw = window_partition(img, ws).view(-1, ws * ws)
        mask = (mw[:, None, :] - mw[:, :, None]).ne(0).float() * -100.0
        logits = logits.view(b, -1, heads, ws * ws, ws * ws) + mask[None, :, None]
        logits = logits.view(-1, heads, ws * ws, ws * ws)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(-1, ws * ws, c)
    out = window_reverse(attn.proj(out).view(-1, ws, ws, c), ws, h, w)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    x = x + blk.norm1(out.reshape(b, h * w, c))
    return x + blk.norm2(blk.mlp(x))


def test_swinv2_blocks_match_literal_reference():
    torch.manual_seed(1)
    rstb = RSTB(dim=16, depth=2, num_heads=2, window_size=8).eval()
    with torch.no_grad():
        for p in rstb.parameters():  # move away from the init so biases and scales matter
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 16, 16, 24)
    with torch.no_grad():
        tokens = x.flatten(2).transpose(1, 2)
        for blk in rstb.residual_group.blocks:
            tokens = _reference_swinv2_block(blk, tokens, 16, 24)
        expected = tokens.transpose(1, 2).reshape(x.shape) + x
        assert rstb.residual_group.blocks[1].shift_size == 4
        torch.testing.assert_close(rstb(x), expected, rtol=1e-4, atol=1e-4)


def test_log_spaced_position_coordinates():
    attn = RSTB(dim=8, depth=1, num_heads=2, window_size=8).residual_group.blocks[0].attn
    table = attn.relative_coords_table
    assert table.shape == (1, 15, 15, 2)
    # the largest offset (7) is scaled to 8, then log2(1 + 8) / log2(8)
    assert table.abs().max().item() == pytest.approx(math.log2(9) / 3)
    assert table[0, 7, 8, 1].item() == pytest.approx(math.log2(1 + 8 / 7) / 3)
    assert table[0, 7, 7].abs().sum().item() == 0.0


def test_scale_indexes_equal_compressai_build_indexes():
    model = tiny_model()
    model.update(force=True)
    scales = torch.cat([torch.linspace(-1, 300, 2000), get_scale_table(), get_scale_table() * 1.0001])
    ours = model._scale_indexes(scales.view(1, 1, 1, -1))
    theirs = model.gaussian_conditional.build_indexes(scales.view(1, 1, 1, -1))
    assert torch.equal(ours, theirs)


def test_update_and_reload_after_update():
    model = tiny_model()
    assert not model.tables_ready()
    assert model.update(force=True)
    assert model.tables_ready()
    assert not model.update()  # without force nothing changes (CompressAI semantics)
    state = model.state_dict()
    assert state["entropy_bottleneck._quantized_cdf"].numel() > 0
    fresh = tiny_model(seed=5)
    fresh.load_state_dict(state, strict=True)  # CDF buffers of another size: resized, not a mismatch
    fresh.update(force=True)
    assert model.table_fingerprint() == fresh.table_fingerprint()
    with_derived = dict(state)
    with_derived["g_a1.residual_group.blocks.0.attn.relative_position_index"] = torch.zeros(64, 64)
    fresh.load_state_dict(with_derived, strict=True)  # SwinV2-style derived buffers are dropped


def test_released_layout_versus_figure_layout():
    figure = tiny_model()
    released = tiny_model(intra_slice_context=False)
    keys_fig, keys_rel = set(figure.state_dict()), set(released.state_dict())
    assert not any("context_nonanchor" in k for k in keys_rel)
    assert any(k.startswith("channel_wise_context_nonanchor.0.") for k in keys_fig)
    assert not any(k.startswith("channel_wise_context.0.") for k in keys_fig | keys_rel)  # None at 0
    sc, m = 8, 40
    assert released.entropy_parameters_nonanchor[0].fusion[0].in_channels == 2 * m
    assert figure.entropy_parameters_nonanchor[0].fusion[0].in_channels == 2 * m + 3 * sc
    assert figure.lrp_anchor[4].lrp_transform[0].in_channels == m + 5 * sc


def test_nonanchor_parameters_see_decoded_anchors_only_in_figure_layout():
    """Causality of the checkerboard: the anchor parameters of slice i never depend on slice i; the
    non-anchor parameters depend on its anchors exactly when intra_slice_context is on."""
    for intra in (True, False):
        model = tiny_model(intra_slice_context=intra).eval()
        hp = torch.randn(1, 80, 4, 8)
        prev = [torch.randn(1, 8, 4, 8)]
        anchors = [ckbd_anchor(torch.randn(1, 8, 4, 8)) for _ in range(2)]
        with torch.no_grad():
            ctx_a = model._anchor_context(1, prev, hp)
            outs = [model._nonanchor_context(1, prev, a, hp, ctx_a) for a in anchors]
        assert torch.equal(outs[0], outs[1]) != intra


def test_published_configuration_layout():
    with torch.device("meta"):
        model = S2LIC()
    n_params = sum(p.numel() for p in model.parameters())
    assert model.N == 192 and model.M == 320 and model.slice_ch == 32
    assert model.g_a5.residual_group.blocks[2].attn.num_heads == 16
    assert len(model.g_s1.residual_group.blocks) == 3 and len(model.g_s5.residual_group.blocks) == 1
    assert model.entropy_parameters_anchor[1].fusion[0].in_channels == 736
    assert model.lrp_nonanchor[9].lrp_transform[0].in_channels == 640
    assert model.global_inter_context[3].da.num_heads == 3
    assert 60e6 < n_params < 120e6, n_params
    keys = set(model.state_dict())
    for key in (
        "enh.forw_enh.layers.0.conv5.weight",
        "g_a1.residual_group.blocks.0.attn.cpb_mlp.0.weight",
        "g_a1.residual_group.blocks.0.attn.logit_scale",
        "g_a1.residual_group.blocks.0.attn.q_bias",
        "h_s.increase.2.0.weight",
        "entropy_parameters_nonanchor.9.fusion.6.weight",
        "lrp_anchor.0.lrp_transform.4.weight",
        "channel_wise_context.1.proj.weight",
        "global_inter_context.9.da.conv_offset.0.weight",
        "entropy_bottleneck.quantiles",
        "gaussian_conditional.scale_table",
    ):
        assert key in keys, key


@pytest.mark.slow
def test_published_configuration_trains_and_codes():
    from restorer.codec.api import Codec, compress_image, decompress_bytes
    from restorer.training.compression import RateDistortionLoss

    torch.manual_seed(0)
    model = S2LIC()
    optimizer = torch.optim.Adam(
        [p for n, p in model.named_parameters() if not n.endswith("quantiles")], 1e-4
    )
    x = torch.rand(2, 3, 64, 64)
    losses = RateDistortionLoss(0.0483)(model(x), x)
    losses["loss"].backward()
    optimizer.step()
    assert torch.isfinite(losses["loss"])
    codec = Codec.from_model(model, "s2lic-test")
    image = (torch.rand(70, 100, 3).numpy() * 255).astype("uint8")
    data, reconstruction = compress_image(codec, image, return_reconstruction=True)
    assert torch.equal(torch.from_numpy(decompress_bytes(codec, data)), torch.from_numpy(reconstruction))
