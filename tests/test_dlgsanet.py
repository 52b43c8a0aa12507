"""DLGSANet architecture and the dynamic depth-wise convolution op (fast: tiny configs, CPU)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

import restorer.ops.dynamic_conv as dynamic_conv_module
from restorer.archs import build_network
from restorer.archs.dlgsanet_arch import DLGSANet, tlc_window_starts
from restorer.ops import idynamic_dwconv, idynamic_dwconv_reference

ROOT = Path(__file__).resolve().parents[1]


def _load_plain_reference():
    name = "dlgsanet_plain_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "dlgsanet_plain_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# network_g of the official option files (options/DLGSANet_SISR/*.yml), without dim/groups/blocks/scale.
OFFICIAL_BASE = {
    "type": "DLGSANet",
    "in_chans": 3,
    "buildblock_type": "sparseedge",
    "window_size": 7,
    "idynamic_num_heads": 6,
    "idynamic_ffn_type": "GDFN",
    "idynamic_ffn_expansion_factor": 2.0,
    "idynamic": True,
    "restormer_num_heads": 6,
    "restormer_ffn_type": "GDFN",
    "restormer_ffn_expansion_factor": 2.0,
    "tlc_flag": True,
    "activation": "relu",
    "body_norm": False,
    "img_range": 1.0,
    "upsampler": "pixelshuffledirect",
}
TLC_KERNEL = {2: 96, 3: 72, 4: 48}
CLASSIC = {"dim": 90, "groups": 6, "blocks": 4}
LIGHT = {"dim": 48, "groups": 4, "blocks": 3}
TINY = {"dim": 48, "groups": 3, "blocks": 3}


def official(variant: dict, scale: int) -> dict:
    return {**OFFICIAL_BASE, **variant, "upscale": scale, "tlc_kernel": TLC_KERNEL[scale]}


def tiny_cfg(**over) -> dict:
    cfg = {
        **OFFICIAL_BASE,
        "dim": 12,
        "groups": 2,
        "blocks": 1,
        "upscale": 2,
        "tlc_kernel": 16,  # windows overlap on the test sizes
    }
    cfg.update(over)
    return cfg


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere (norms, biases, temperatures too) at a scale that keeps outputs O(1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("temperature"):
                p.copy_(1 + torch.rand(p.shape, generator=gen))
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.7 / p[0].numel() ** 0.5))


def _pair(cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = build_network(cfg)
    randomise(model, seed)
    plain = _load_plain_reference().build_plain_dlgsanet(cfg)
    plain.load_state_dict(model.state_dict(), strict=True)
    return model, plain


# ------------------------------------------------------------------------------------------------
# restorer.ops.idynamic_dwconv
# ------------------------------------------------------------------------------------------------

OP_CASES = [
    # b, c, g, h, w, k, stride, padding, dilation
    (2, 12, 2, 9, 11, 7, 1, 3, 1),  # DLGSANet's use: 7x7, "same", 6 channels per group
    (1, 6, 3, 5, 4, 3, 1, 1, 1),
    (1, 8, 1, 10, 7, 5, 2, 2, 1),  # stride
    (1, 4, 2, 9, 9, 3, 1, 2, 2),  # dilation
    (1, 6, 6, 6, 5, 2, 1, 0, 1),  # even kernel, no padding, one channel per group
    (1, 4, 2, 3, 3, 7, 1, 3, 1),  # kernel larger than the image
    (1, 6, 2, 1, 1, 7, 1, 3, 1),  # 1x1 image
]


def _op_inputs(case, dtype=torch.float64, seed=0):
    b, c, g, h, w, k, s, p, d = case
    ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
    wo = (w + 2 * p - d * (k - 1) - 1) // s + 1
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=gen, dtype=dtype)
    weight = torch.randn(b, g, k, k, ho, wo, generator=gen, dtype=dtype)
    bias = torch.randn(c, generator=gen, dtype=dtype)
    return x, weight, bias, (s, p, d)


@pytest.mark.parametrize("case", OP_CASES)
def test_dynamic_conv_matches_formula_values_and_gradients(case):
    x, weight, bias, conv = _op_inputs(case)
    x.requires_grad_()
    weight.requires_grad_()
    bias.requires_grad_()
    ours = idynamic_dwconv(x, weight, bias, *conv)
    ref = idynamic_dwconv_reference(x, weight, bias, *conv)
    assert ours.shape == ref.shape and ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    grad_out = torch.randn_like(ref)
    g_ours = torch.autograd.grad(ours, (x, weight, bias), grad_out)
    g_ref = torch.autograd.grad(ref, (x, weight, bias), grad_out)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_dynamic_conv_non_contiguous_inputs():
    x, weight, bias, conv = _op_inputs((1, 12, 2, 10, 8, 3, 1, 0, 1))
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, column-major planes
    w_nc = weight.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not x_nc.is_contiguous() and not w_nc.is_contiguous()
    torch.testing.assert_close(
        idynamic_dwconv(x_nc, w_nc, bias, *conv), idynamic_dwconv_reference(x, weight, bias, *conv)
    )


def test_dynamic_conv_gradcheck():
    x, weight, bias, conv = _op_inputs((1, 4, 2, 5, 6, 3, 1, 1, 1))
    inputs = (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_())
    assert torch.autograd.gradcheck(lambda a, w, b: idynamic_dwconv(a, w, b, *conv), inputs)
    # gradient for only one of the inputs
    x2 = x.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: idynamic_dwconv(a, weight.detach(), None, *conv), (x2,))


def test_dynamic_conv_group_semantics():
    """Channel c uses the kernel of group c // (C // G): a kernel that is one-hot per group shows it."""
    b, c, g, h, w = 1, 6, 3, 4, 5
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    weight = torch.zeros(b, g, 3, 3, h, w, dtype=torch.float64)
    weight[:, 0, 1, 1] = 1.0  # identity for channels 0, 1
    weight[:, 1, 1, 2] = 1.0  # shift left for channels 2, 3: out[x] = in[x + 1]
    weight[:, 2, 0, 1] = 2.0  # 2 * shift down for channels 4, 5: out[y] = 2 * in[y - 1]
    out = idynamic_dwconv(x, weight, padding=1)
    torch.testing.assert_close(out[:, :2], x[:, :2])
    torch.testing.assert_close(out[:, 2:4, :, :-1], x[:, 2:4, :, 1:])
    assert out[:, 2:4, :, -1].abs().max() == 0  # zero padding
    torch.testing.assert_close(out[:, 4:, 1:], 2 * x[:, 4:, :-1])


def test_dynamic_conv_row_bands_match(monkeypatch):
    """The CPU row-band blocking (forced to tiny bands) gives the same result, also with a stride."""
    for case in OP_CASES[:4]:
        x, weight, bias, conv = _op_inputs(case)
        full = idynamic_dwconv(x, weight, bias, *conv)
        monkeypatch.setattr(dynamic_conv_module, "_CPU_BAND_BYTES", 1)
        banded = idynamic_dwconv(x, weight, bias, *conv)
        monkeypatch.setattr(dynamic_conv_module, "_CPU_BAND_BYTES", 8 << 20)
        torch.testing.assert_close(banded, full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dynamic_conv_low_precision(dtype):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 12, 13, 10, generator=gen).to(dtype)
    weight = (0.3 * torch.randn(2, 2, 7, 7, 13, 10, generator=gen)).to(dtype)
    out = idynamic_dwconv(x, weight, padding=3)
    assert out.dtype == dtype
    ref = idynamic_dwconv_reference(x.double(), weight.double(), padding=3)
    # float32 accumulation: the error is about one rounding of the result, not 49 of them
    ulp = {torch.float32: 2**-23, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    assert (out.double() - ref).abs().max() <= ulp * ref.abs().max() + 1e-6
    xr, wr = x.clone().requires_grad_(), weight.clone().requires_grad_()
    idynamic_dwconv(xr, wr, padding=3).square().sum().backward()
    assert xr.grad.dtype == dtype and wr.grad.dtype == dtype
    assert torch.isfinite(xr.grad.float()).all() and torch.isfinite(wr.grad.float()).all()


def test_dynamic_conv_rejects_bad_arguments():
    x = torch.randn(1, 6, 5, 5)
    with pytest.raises(ValueError, match="divisible"):
        idynamic_dwconv(x, torch.randn(1, 4, 3, 3, 5, 5), padding=1)
    with pytest.raises(ValueError, match="output size"):
        idynamic_dwconv(x, torch.randn(1, 2, 3, 3, 5, 5), padding=0)
    with pytest.raises(ValueError, match="batch"):
        idynamic_dwconv(x, torch.randn(2, 2, 3, 3, 5, 5), padding=1)
    with pytest.raises(TypeError):
        idynamic_dwconv(x, torch.randn(1, 2, 3, 3, 5, 5, dtype=torch.float64), padding=1)


# ------------------------------------------------------------------------------------------------
# TLC windows
# ------------------------------------------------------------------------------------------------


def _official_starts(size: int, kernel: int) -> list[int]:
    """The official ``grids`` loop for one axis, transcribed."""
    k = min(size, kernel)
    num = (size - 1) // k + 1
    step = k if num == 1 else math.ceil((size - k) / (num - 1) - 1e-8)
    starts, i, last = [], 0, False
    while i < size and not last:
        if i + k >= size:
            i, last = size - k, True
        starts.append(i)
        i += step
    return starts


def test_tlc_window_starts():
    assert tlc_window_starts(100, 48) == ([0, 26, 52], 48)  # the fact-sheet example
    assert tlc_window_starts(64, 48) == ([0, 16], 48)
    assert tlc_window_starts(96, 48) == ([0, 48], 48)
    assert tlc_window_starts(40, 48) == ([0], 40)
    assert tlc_window_starts(1, 96) == ([0], 1)
    for size in range(1, 230):
        for kernel in (16, 48, 72, 96):
            starts, k = tlc_window_starts(size, kernel)
            assert starts == _official_starts(size, kernel)
            covered = torch.zeros(size)
            for s in starts:
                covered[s : s + k] += 1
            assert covered.min() >= 1 and starts[-1] + k == size


# ------------------------------------------------------------------------------------------------
# The model (tiny configs)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "shape"),
    [
        ({}, (1, 3, 37, 23)),  # TLC windows overlap in both directions
        ({}, (2, 3, 40, 17)),  # batch 2 (the official TLC asserts batch 1)
        ({"upscale": 3, "dim": 24, "window_size": 5, "blocks": 2}, (1, 3, 9, 30)),
        ({"upscale": 4, "groups": 1, "tlc_kernel": 8}, (1, 3, 19, 11)),
        ({"buildblock_type": "edge"}, (1, 3, 50, 33)),  # MDTA with its fixed TLC window 48
        (
            {
                "upsampler": "pixelshuffle",
                "upscale": 4,
                "body_norm": True,
                "idynamic": False,
                "idynamic_ffn_type": "BaseFFN",
                "restormer_ffn_type": "BaseFFN",
            },
            (1, 3, 20, 21),
        ),
        ({"upsampler": "", "activation": "gelu", "buildblock_type": "restormer"}, (1, 3, 11, 30)),
        ({"buildblock_type": "idynamic", "in_chans": 1, "img_range": 255.0}, (1, 1, 5, 7)),
        ({}, (1, 3, 1, 1)),
    ],
)
def test_matches_plain_reference(over, shape):
    cfg = tiny_cfg(**over)
    model, plain = _pair(cfg)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    scale = model.scale
    for train in (False, True):  # eval: TLC (official test path); train: global attention
        model.train(train)
        plain.train(train)
        with torch.inference_mode():
            ours, ref = model(x), plain(x)
        assert ours.shape == ref.shape == (shape[0], shape[1], shape[2] * scale, shape[3] * scale)
        assert ours.is_contiguous()
        assert ref.abs().max() > 0.3  # the weights do something
        assert (ours - ref).abs().max() < 1e-4


def test_tlc_changes_the_output_and_is_per_image():
    model, _ = _pair(tiny_cfg())
    model.eval()
    x = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        tlc = model(x)
        singles = torch.cat([model(x[:1]), model(x[1:])])
        for m in model.modules():
            if hasattr(m, "tlc_flag"):
                m.tlc_flag = False
        global_ = model(x)
        model.train()
        train = model(x)
    torch.testing.assert_close(tlc, singles, rtol=0, atol=1e-5)
    assert (tlc - global_).abs().max() > 1e-3
    torch.testing.assert_close(global_, train, rtol=0, atol=1e-5)


def test_gradients_match_plain_reference():
    model, plain = _pair(tiny_cfg(blocks=2))
    model.train()
    plain.train()
    x = torch.rand(1, 3, 14, 11)
    model(x).square().mean().backward()
    plain(x).square().mean().backward()
    ref_grads = dict(plain.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shapes_and_properties(scale):
    model = build_network(tiny_cfg(upscale=scale)).eval()
    assert isinstance(model, DLGSANet)
    assert model.scale == scale and model.window_multiple == 1
    for shape in [(1, 3, 7, 9), (2, 3, 33, 18)]:
        with torch.inference_mode():
            out = model(torch.rand(shape))
        assert out.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale)
    assert build_network(tiny_cfg(upsampler="")).scale == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward(dtype):
    model, _ = _pair(tiny_cfg())
    model.eval()
    x = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ref = model(x)
        out = model.to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    assert (out.float() - ref).abs().max() < tol * max(1.0, float(ref.abs().max()))


def test_checkpoint_round_trip(tmp_path):
    cfg = tiny_cfg(blocks=2)
    model, _ = _pair(cfg, seed=5)
    path = tmp_path / "net_g_latest.pth"
    torch.save({"params": model.state_dict()}, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    fresh = build_network(cfg).eval()
    fresh.load_state_dict(loaded["params"], strict=True)
    model.eval()
    x = torch.rand(1, 3, 21, 26)
    with torch.inference_mode():
        assert torch.equal(fresh(x), model(x))


def test_unknown_option_warns():
    with pytest.warns(UserWarning, match="unknown options"):
        build_network(tiny_cfg(not_an_option=1))
    with pytest.raises(ValueError):
        build_network(tiny_cfg(dim=14))  # not a multiple of idynamic_num_heads


# ------------------------------------------------------------------------------------------------
# Published configurations
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "scale", "n_keys", "n_params"),
    [
        (CLASSIC, 2, 641, 4_733_724),
        (CLASSIC, 3, 641, 4_745_889),
        (CLASSIC, 4, 641, 4_762_920),
        (LIGHT, 2, 325, 745_188),
        (LIGHT, 3, 325, 751_683),
        (LIGHT, 4, 325, 760_776),
        (TINY, 2, 245, 565_710),
        (TINY, 3, 245, 572_205),
        (TINY, 4, 245, 581_298),
    ],
)
def test_official_key_counts(variant, scale, n_keys, n_params):
    with torch.device("meta"):
        model = build_network(official(variant, scale))
    sd = model.state_dict()
    assert len(sd) == n_keys
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert not list(model.buffers()) and "mean" not in sd
    dim = variant["dim"]
    groups = dim // 6
    pre = "deep_feature_extraction.0.body"
    expected = {
        "overlap_embed.0.proj.weight": (dim, 3, 3, 3),
        f"{pre}.0.norm1.body.weight": (dim,),
        f"{pre}.0.IDynamicDWConv.conv0.weight": (dim, dim, 1, 1),
        f"{pre}.0.IDynamicDWConv.conv.conv1.0.weight": (dim // 4, dim, 1, 1),
        f"{pre}.0.IDynamicDWConv.conv.conv1.1.weight": (dim // 4, 1, 7, 7),
        f"{pre}.0.IDynamicDWConv.conv.conv2.0.weight": (49 * groups, dim // 4, 1, 1),
        f"{pre}.0.IDynamicDWConv.conv.conv2.0.bias": (49 * groups,),
        f"{pre}.0.IDynamic_ffn.project_in.weight": (4 * dim, dim, 1, 1),
        f"{pre}.0.IDynamic_ffn.dwconv.weight": (4 * dim, 1, 3, 3),
        f"{pre}.0.IDynamic_ffn.project_out.weight": (dim, 2 * dim, 1, 1),
        f"{pre}.1.norm3.body.bias": (dim,),
        f"{pre}.1.restormer_attn.temperature": (6, 1, 1),
        f"{pre}.1.restormer_attn.qkv.weight": (3 * dim, dim, 1, 1),
        f"{pre}.1.restormer_attn.qkv_dwconv.weight": (3 * dim, 1, 3, 3),
        f"{pre}.1.restormer_attn.project_out.weight": (dim, dim, 1, 1),
        f"{pre}.{2 * variant['blocks']}.weight": (dim, dim, 3, 3),
        f"deep_feature_extraction.{variant['groups']}.bias": (dim,),
        "upsample.0.weight": (3 * scale**2, dim, 3, 3),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "overlap_embed.0.proj.bias" not in sd
    assert f"{pre}.0.IDynamicDWConv.conv0.bias" not in sd


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "scale"), [(LIGHT, 4), (TINY, 2), (CLASSIC, 4)])
def test_official_forward_matches_plain(variant, scale):
    cfg = official(variant, scale)
    model, plain = _pair(cfg)
    model.eval()
    plain.eval()
    x = torch.rand(1, 3, 50, 57, generator=torch.Generator().manual_seed(6))  # TLC windows at x4 (48)
    with torch.inference_mode():
        ours, ref = model(x), plain(x)
    assert ours.shape == (1, 3, 50 * scale, 57 * scale)
    assert (ours - ref).abs().max() < 1e-4 * max(1.0, float(ref.abs().max()))
