"""Tile planning, feathered blending and out-of-memory retry, on small stand-in models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from restorer.archs.layers import pad_to_multiple
from restorer.engine.tiling import (
    TileSettings,
    _feather,
    count_tiles,
    plan_axis,
    run_tiled,
    run_tiled_with_oom_retry,
)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.mark.parametrize(
    "length,tile,overlap,multiple",
    [(160, 64, 16, 8), (512, 256, 32, 16), (176, 48, 16, 16), (1000, 96, 32, 8), (64, 64, 16, 16)],
)
def test_plan_axis_covers_evenly_with_aligned_equal_tiles(length, tile, overlap, multiple):
    spans = plan_axis(length, tile, overlap, multiple)
    assert spans[0].start == 0
    assert spans[-1].start + spans[-1].size == length
    for span in spans:
        assert span.size == min(tile, length)
        assert span.start % multiple == 0
    for left, right in zip(spans, spans[1:]):
        assert left.start + left.size - right.start >= overlap  # enough overlap everywhere
        assert right.start > left.start
        assert left.overlap_after == right.overlap_before


def test_plan_axis_has_no_tiny_remainder_tile():
    spans = plan_axis(16 * 21, 16 * 8, 32, 16)  # a naive grid would leave a 16 px sliver
    overlaps = [s.overlap_before for s in spans[1:]]
    assert max(overlaps) - min(overlaps) <= 16


def test_feather_ramps_are_complementary():
    overlap = 24
    left = _feather(64, 0, overlap)
    right = _feather(64, overlap, 0)
    torch.testing.assert_close(left[64 - overlap :] + right[:overlap], torch.ones(overlap))
    assert left[0] == 1 and right[-1] == 1  # no ramp at image borders


def test_tile_settings_round_to_window_multiple():
    assert TileSettings(100, 20).resolved(16) == (112, 32)
    assert TileSettings(0, None).resolved(16) == (0, 32)
    assert TileSettings(5, None).resolved(1) == (5, 2)  # overlap shrinks below the tile
    assert count_tiles(40, 40, TileSettings(0), 8) == 1


class PointwiseUpsampler(nn.Module):
    """No spatial context at all: tiled output must equal whole output exactly."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale
        self.mix = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return F.interpolate(self.mix(x), scale_factor=self.scale, mode="nearest")


class ContextUpsampler(nn.Module):
    """Small receptive field (two 3x3 convs) with pixel shuffle, like a CNN SR model. Like the
    real architectures it takes any size, reflect-padding to its multiple (4) and cropping back."""

    def __init__(self, scale: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 3 * scale**2, 3, padding=1)
        )
        self.up = nn.PixelShuffle(scale)

    def forward(self, x):
        h, w = x.shape[-2:]
        x, _ = pad_to_multiple(x, 4)
        out = self.up(self.body(x)) + F.interpolate(x, scale_factor=self.up.upscale_factor, mode="nearest")
        s = self.up.upscale_factor
        return out[..., : h * s, : w * s]


@torch.no_grad()
def test_pointwise_model_tiled_equals_whole():
    torch.manual_seed(0)
    model = PointwiseUpsampler(2)
    image = torch.rand(1, 3, 72, 100)
    whole = run_tiled(model, image, 2, 8, TileSettings(0))
    tiled = run_tiled(model, image, 2, 8, TileSettings(32, 16))
    assert whole.shape == (1, 3, 144, 200)
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


@torch.no_grad()
def test_cnn_tiled_matches_whole_and_reports_progress():
    torch.manual_seed(0)
    model = ContextUpsampler(3)
    image = torch.rand(1, 3, 97, 131)  # odd size: padded to the multiple, cropped back
    whole = run_tiled(model, image, 3, 4, TileSettings(0))
    calls = []
    tiled = run_tiled(model, image, 3, 4, TileSettings(40, 16), on_tile=lambda d, t: calls.append((d, t)))
    assert tiled.shape == whole.shape == (1, 3, 291, 393)
    total = calls[-1][1]
    assert total >= 9 and [c[0] for c in calls] == list(range(1, total + 1))
    # a receptive field of 2 px is far inside a 16 px overlap: only float noise differs
    assert psnr(tiled, whole) > 80


class ContiguousOnly(nn.Module):
    """Refuses strided tiles (as ``.view``-based attention blocks would) and records what it saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        assert x.is_contiguous()
        self.seen.append(tuple(x.shape))
        return x * 2


@torch.no_grad()
def test_strided_image_views_in_channels_last_canvas_out():
    """The runner hands over an HxWxC array as a (1, C, H, W) view and wants an HxWxC view back: no
    image-sized copies either way. Tiles reach the model contiguous; the weights still sum to one."""
    hwc = torch.rand(1, 64, 96, 3)  # a multiple of 8: no padding copy either
    image = hwc.permute(0, 3, 1, 2)  # what runner._to_tensor gives
    assert not image.is_contiguous()
    model = ContiguousOnly()
    tiled = run_tiled(model, image, 1, 8, TileSettings(32, 16))
    assert len(model.seen) > 4 and all(s[-2:] == (32, 32) for s in model.seen)
    torch.testing.assert_close(tiled, image * 2, atol=1e-6, rtol=0)
    canvas = run_tiled(model, torch.rand(1, 3, 64, 96), 1, 8, TileSettings(32, 16))
    assert canvas.permute(0, 2, 3, 1).is_contiguous()  # channels-last: HxWxC without a copy
    whole = run_tiled(model, image, 1, 8, TileSettings(0))
    torch.testing.assert_close(whole, image * 2)


@torch.no_grad()
def test_hard_paste_would_show_seams_where_feathering_does_not():
    """A check that the PSNR criterion can fail: overlap 0 leaves border errors at every seam."""
    torch.manual_seed(0)
    model = ContextUpsampler(2)
    image = torch.rand(1, 3, 128, 128)
    whole = run_tiled(model, image, 2, 8, TileSettings(0))
    seams = run_tiled(model, image, 2, 8, TileSettings(32, 0))
    feathered = run_tiled(model, image, 2, 8, TileSettings(32, 16))
    assert psnr(feathered, whole) > psnr(seams, whole) + 20


def test_oom_retry_halves_tile_until_it_fits():
    torch.manual_seed(0)
    model = PointwiseUpsampler(2)
    sizes = []

    def forward(x):
        sizes.append(x.shape[-1])
        if x.shape[-1] > 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model(x)

    messages = []
    image = torch.rand(1, 3, 128, 128)
    out, used = run_tiled_with_oom_retry(
        forward, image, 2, 8, TileSettings(128, 16), on_retry=messages.append
    )
    assert used.tile == 32
    assert len(messages) == 2 and "retrying with tile 64" in messages[0]
    torch.testing.assert_close(out, model(image), atol=1e-6, rtol=0)


def test_non_oom_errors_propagate():
    def forward(x):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_tiled_with_oom_retry(forward, torch.rand(1, 3, 16, 16), 1, 8, TileSettings(0))


def test_long_strips_tile_in_long_tiles_of_the_same_area():
    from restorer.engine.tiling import count_tiles, tile_shape

    # A 1 x 100000 strip with 64 px tiles: square tiles would be 16 x 64 (about 3,100 of them).
    assert tile_shape(16, 100000, 64, 16) == (16, 256)
    strip = TileSettings(64, 32)
    assert count_tiles(1, 100000, strip, 16) == count_tiles(100000, 1, strip, 16)
    assert count_tiles(1, 100000, TileSettings(64, 32), 16) < 500
    assert tile_shape(512, 512, 64, 16) == (64, 64)  # both sides long: square as before
    assert tile_shape(48, 100, 64, 16) == (48, 80)  # never more area than tile x tile
    assert 48 * 80 <= 64 * 64


def test_pointwise_model_on_a_strip_tiled_equals_whole():
    model = PointwiseUpsampler(2)
    image = torch.rand(1, 3, 5, 700)
    whole = run_tiled(model, image, 2, 8, TileSettings(0))
    tiled = run_tiled(model, image, 2, 8, TileSettings(32, 16))
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)
