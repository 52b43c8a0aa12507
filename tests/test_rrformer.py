"""RRFormer: the public DRNet layout, the intended math (a literal re-implementation as the oracle), the
Swin residual that the public code drops, injected VGG19 weights, and tiling. Random VGG19 weights
throughout; tiny widths except in the layout tests (meta device) and the slow test."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from restorer.archs import build_network
from restorer.archs.rrformer_arch import (
    HYPERCOLUMN_LAYERS,
    RECOMMENDED_TILE_OVERLAP,
    VGG19_FILE,
    VGG19_LAYERS,
    RRFormer,
    build_vgg19_features,
)
from restorer.engine.tiling import TileSettings, run_tiled
from restorer.errors import CheckpointError, RestorerError, WeightsNotFoundError

TINY = {
    "n_feats": 16,
    "embed_dim": 24,
    "img_size": 64,
    "patch_size": 4,
    "depths": [2, 2],
    "num_heads": [2, 2],
    "window_size": 8,
    "mlp_ratio": 2.0,
    "vgg_weights": "random",
}


def tiny(**overrides) -> RRFormer:
    torch.manual_seed(0)
    return RRFormer(**{**TINY, **overrides}).eval()


def photo(height: int, width: int) -> torch.Tensor:
    image = data.astronaut()[:height, :width]
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0


def visible_output_(model: RRFormer, image: torch.Tensor, std: float = 0.2) -> RRFormer:
    """Rescale ``deconv3`` so the output has ``std`` per channel around 0.5 on ``image``.

    A random network's output is a near-constant tiny value; a comparison of two such outputs says
    nothing. After this every difference in the features shows up at picture scale."""
    captured = {}

    def keep(module, inputs, output) -> None:  # returns None: a hook's return value replaces the output
        captured["pre"] = output.clone()  # before deconv3's in-place ReLU

    hook = model.deconv3.conv2d.register_forward_hook(keep)
    with torch.no_grad():
        model(image)
    hook.remove()
    pre = captured["pre"]
    mean, gain = pre.mean((0, 2, 3)), std / pre.std((0, 2, 3))
    conv = model.deconv3.conv2d
    with torch.no_grad():
        conv.weight.mul_(gain.view(-1, 1, 1, 1))
        conv.bias.copy_((conv.bias - mean) * gain + 0.5)
    return model


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double().clamp(0, 1) - b.double().clamp(0, 1)) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


# ------------------------------------------------------------------------------------------------
# A literal implementation of the intended network (concatenated hypercolumn, rolled windows with the
# full Swin mask, concatenated pyramid), reading the parameters of an RRFormer.
# ------------------------------------------------------------------------------------------------


def _swin_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = img.view(1, h // ws, ws, w // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    mask = win[:, None, :] - win[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _literal_block(blk, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, c = x.shape
    ws, shift, heads = blk.window_size, blk.shift_size, blk.attn.num_heads
    n = ws * ws
    y = blk.norm1(x).view(b, h, w, c)
    if shift:
        y = torch.roll(y, (-shift, -shift), (1, 2))
    win = y.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, c)
    qkv = blk.attn.qkv(win).reshape(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = (qkv[0] * blk.attn.scale) @ qkv[1].transpose(-2, -1)
    table, index = blk.attn.relative_position_bias_table, blk.attn.relative_position_index
    attn = attn + table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)[None]
    if shift:
        mask = _swin_mask(h, w, ws, shift)
        attn = (attn.view(b, -1, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    out = blk.attn.proj((attn.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(-1, n, c))
    out = out.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    x = x + out.reshape(b, h * w, c)
    return x + blk.mlp(blk.norm2(x))


def literal_forward(model: RRFormer, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    indices = [VGG19_LAYERS[n][0] for n in model.hypercolumn_layers]
    maps = model.vgg19(x, indices)
    hyper = [F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False) for m in maps]
    f = model.conv3(model.conv2(model.conv1(torch.cat([x, *hyper], dim=1))))
    body = model.swinir_block
    h2, w2 = f.shape[-2:]
    ws = body.window_size
    fp = F.pad(f, (0, (ws - w2 % ws) % ws, 0, (ws - h2 % ws) % ws), mode="reflect")
    b, c, hp, wp = fp.shape
    t = body.patch_embed(fp)
    for layer in body.layers:
        y = t
        for blk in layer.residual_group.blocks:
            y = _literal_block(blk, y, hp, wp)
        t = layer.conv(y.transpose(1, 2).reshape(b, c, hp, wp)).flatten(2).transpose(1, 2) + t
    feat = body.norm(t).transpose(1, 2).reshape(b, c, hp, wp)
    f = (body.conv_after_body(feat) + fp)[..., :h2, :w2]
    f = model.deconv2(model.deconv1(f))
    pyr = model.pyramid_module
    priors = [F.interpolate(stage(f), size=f.shape[-2:], mode="nearest") for stage in pyr.stages]
    f = pyr.relu(pyr.bottleneck(torch.cat([*priors, f], dim=1)))
    return model.deconv3(f)


# ------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------


def test_public_layout_and_parameter_counts():
    with torch.device("meta"):  # no weights needed, nothing allocated
        net = RRFormer()
    state = net.state_dict()
    count = {name: sum(p.numel() for p in mod.parameters()) for name, mod in net.named_children()}
    # the fact sheet's counts of the public DRNet (20.36 M, Swin block 17.06 M)
    assert round(sum(count.values()) / 1e6, 2) == 20.36 and round(count["swinir_block"] / 1e6, 2) == 17.06
    assert (round(count["conv1"] / 1e6, 3), round(count["conv2"] / 1e6, 3)) == (0.378, 0.590)
    assert (round(count["deconv1"] / 1e6, 3), round(count["pyramid_module"] / 1e6, 3)) == (0.983, 0.197)
    assert count["deconv3"] == 771
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["conv1.conv2d.weight"] == (256, 1475, 1, 1)
    assert shapes["deconv1.conv2d.weight"] == (240, 256, 4, 4)  # ConvTranspose: (in, out, k, k)
    assert shapes["pyramid_module.stages.3.1.weight"] == (64, 256, 1, 1)
    assert "pyramid_module.stages.0.1.bias" not in shapes
    assert shapes["swinir_block.layers.4.residual_group.blocks.5.attn_mask"] == (64, 64, 64)
    assert "swinir_block.layers.0.residual_group.blocks.0.attn_mask" not in shapes  # unshifted: None
    assert shapes["swinir_block.layers.0.residual_group.blocks.0.attn.relative_position_index"] == (64, 64)
    assert shapes["swinir_block.conv_last.weight"] == (3, 240, 3, 3)  # the public dead head, kept
    assert shapes["swinir_block.patch_embed.norm.weight"] == (240,)
    assert not any("vgg" in k for k in shapes)  # the public checkpoint has no VGG keys
    assert net.window_multiple == 32 and net.scale == 1


def test_registry_and_window_multiple():
    net = build_network({"type": "RRFormer", **TINY})
    assert isinstance(net, RRFormer) and net.window_multiple == 32
    small = tiny(hypercolumn_layers=["relu1_1", "relu2_1"], pyramid_scales=[4, 8], window_size=4)
    assert small.window_multiple == 8  # lcm(2 * 4 (Swin at half size), 2 (one VGG pool), 4, 8)


# ------------------------------------------------------------------------------------------------
# Math
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 80), (48, 72), (37, 45)])
@torch.no_grad()
def test_matches_the_literal_network(size):
    """Projected hypercolumn, window-order tokens, region masks and the sliced pyramid equal the literal
    concatenate / roll / full-mask version; (48, 72) pads the Swin features, (37, 45) the input."""
    h, w = size
    image = photo(64, 80)
    model = visible_output_(tiny(), image)
    x = photo(h, w)
    out = model(x)
    xp = F.pad(x, (0, w % 2, 0, h % 2), mode="reflect")
    ref = literal_forward(model, xp)[..., :h, :w]
    assert out.shape == (1, 3, h, w) and out.std() > 0.05
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=2e-5)


def test_swin_residual_is_applied_and_trains():
    x = photo(32, 32)
    model = visible_output_(tiny(), x).train()
    model(x).square().mean().backward()
    swin_grads = [p.grad for n, p in model.swinir_block.named_parameters() if "conv_last" not in n]
    assert all(g is not None and g.abs().sum() > 0 for g in swin_grads)
    assert all(p.grad is None for p in model.swinir_block.conv_last.parameters())  # frozen dead head

    public = tiny(swin_residual=False).train()  # the public code's identity block
    public.load_state_dict(model.state_dict())
    public(x).square().mean().backward()
    assert all(p.grad is None for p in public.swinir_block.parameters())
    with torch.no_grad():
        assert not torch.allclose(model.eval()(x), public.eval()(x))


def test_global_residual_starts_at_the_input_and_learns_a_correction():
    x = photo(40, 48)  # even, not a multiple of anything: padded and cropped back
    model = tiny(global_residual=True).train()
    with torch.no_grad():
        assert torch.equal(model.eval()(x), x)  # zero-initialised correction: the untouched input
    public = tiny()
    assert public.state_dict().keys() == model.state_dict().keys()  # same checkpoint layout
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = (x * 0.8).detach()
    losses = []
    for _ in range(3):
        optimiser.zero_grad()
        loss = (model(x) - target).abs().mean()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]  # the correction moves away from the identity
    with pytest.raises(ValueError, match="in_chans == out_chans"):
        RRFormer(**{**TINY, "out_chans": 1, "global_residual": True})


# ------------------------------------------------------------------------------------------------
# VGG19 weights
# ------------------------------------------------------------------------------------------------


def _torchvision_style_vgg(last_layer: str, seed: int = 3) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's keys (``features.<i>.*`` plus a classifier to ignore)."""
    vgg = build_vgg19_features("random", last_layer, seed)
    state = {f"features.{k}": v.clone() for k, v in vgg.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)
    return state


@pytest.fixture
def empty_weight_dirs(monkeypatch, tmp_path):
    import restorer.weights

    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(restorer.weights, "weight_dirs", lambda: [folder])
    return folder


def test_missing_vgg19_file_is_a_clear_error(empty_weight_dirs):
    with pytest.raises(WeightsNotFoundError) as info:
        RRFormer(**{**TINY, "vgg_weights": None})
    message = str(info.value)
    assert isinstance(info.value, RestorerError)
    assert VGG19_FILE in message and "restorer weights download vgg19" in message
    assert str(empty_weight_dirs) in message and "https://download.pytorch.org/models/" in message
    with torch.device("meta"):  # meta builds (the loader's layout checks) never need the file
        RRFormer(**{**TINY, "vgg_weights": None})


def test_vgg19_file_found_in_the_weights_folder(empty_weight_dirs):
    layers = ["relu1_1", "relu2_1"]
    state = _torchvision_style_vgg("relu2_1")
    torch.save(state, empty_weight_dirs / VGG19_FILE)
    model = RRFormer(**{**TINY, "vgg_weights": None, "hypercolumn_layers": layers})
    assert len(model.vgg19.features) == VGG19_LAYERS["relu2_1"][0] + 1
    for k, v in model.vgg19.features.state_dict().items():
        assert torch.equal(v, state[f"features.{k}"]), k
    by_path = RRFormer(
        **{**TINY, "vgg_weights": str(empty_weight_dirs / VGG19_FILE), "hypercolumn_layers": layers}
    )
    by_dict = RRFormer(**{**TINY, "vgg_weights": state, "hypercolumn_layers": layers})
    x = photo(32, 32)
    torch.testing.assert_close(by_path.vgg19(x, [6])[0], by_dict.vgg19(x, [6])[0], rtol=0, atol=0)
    assert all(not p.requires_grad for p in by_dict.vgg19.parameters())


def test_vgg19_file_that_does_not_fit(tmp_path):
    state = _torchvision_style_vgg("relu1_1")  # too shallow for relu2_1
    with pytest.raises(CheckpointError, match="missing 5.weight"):
        RRFormer(**{**TINY, "vgg_weights": state, "hypercolumn_layers": ["relu2_1"]})
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        RRFormer(**{**TINY, "vgg_weights": str(tmp_path / "nope.pth")})


def test_state_dict_round_trip_and_device_moves():
    a, b = tiny(), tiny(vgg_seed=0)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.01 * torch.randn_like(p))
    b.load_state_dict(a.state_dict(), strict=True)
    x = photo(32, 48)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    a.double()  # the VGG19 outside the state dict moves with the module
    assert a.vgg19.features[0].weight.dtype == torch.float64
    with torch.no_grad():
        assert a(x.double()).dtype == torch.float64


def test_vgg_in_checkpoint_variant_round_trips():
    a = tiny(vgg_in_checkpoint=True, vgg_seed=1, hypercolumn_layers=["relu1_1", "relu2_1"])
    keys = [k for k in a.state_dict() if k.startswith("vgg.")]
    assert "vgg.features.5.weight" in keys and "vgg.features.10.weight" not in keys
    b = tiny(vgg_in_checkpoint=True, vgg_seed=2, hypercolumn_layers=["relu1_1", "relu2_1"])
    assert not torch.equal(a.vgg19.features[0].weight, b.vgg19.features[0].weight)
    b.load_state_dict(a.state_dict(), strict=True)
    assert torch.equal(a.vgg19.features[5].weight, b.vgg19.features[5].weight)
    assert all(not p.requires_grad for p in b.vgg.parameters())


# ------------------------------------------------------------------------------------------------
# Tiling
# ------------------------------------------------------------------------------------------------


def test_tiled_inference_has_no_visible_seams():
    """Through the shared engine with the recommended overlap, tiled == whole within 40 dB on a 2 x 2
    grid of tiles. (Three hypercolumn layers keep the test fast; the bench checks the public configuration.)
    Both sides exceed the tile: a side shorter than it would give long tiles, which overlap by themselves."""
    image = photo(224, 384)
    model = visible_output_(tiny(hypercolumn_layers=HYPERCOLUMN_LAYERS[:3]), image)
    assert model.window_multiple == 32
    with torch.no_grad():
        whole = model(image)
    tiled = run_tiled(model, image, 1, model.window_multiple, TileSettings(192, RECOMMENDED_TILE_OVERLAP))
    assert tiled.shape == whole.shape
    assert psnr(tiled, whole) >= 40.0
    # the check is sensitive: abutting tiles (no overlap) leave visible seams
    abutting = run_tiled(model, image, 1, model.window_multiple, TileSettings(192, 0))
    assert psnr(abutting, whole) < 35.0


@pytest.mark.slow
@torch.no_grad()
def test_public_configuration_runs_and_loads_strictly():
    net = RRFormer(vgg_weights="random").eval()
    other = RRFormer(vgg_weights="random")
    other.load_state_dict(net.state_dict(), strict=True)
    x = photo(64, 96)
    out = net(x)
    assert out.shape == x.shape and out.min() >= 0
    assert list(net.hypercolumn_layers) == list(HYPERCOLUMN_LAYERS)
