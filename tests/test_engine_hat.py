"""The tiled engine on HAT: tiled output must match whole-image output (>= 45 dB) on an image
several tiles large, for a network whose attention layers really shape the output."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from skimage import data

from restorer.archs import build_network
from restorer.engine.tiling import TileSettings, count_tiles, run_tiled

from conftest import TINY_HAT, image_preserving_


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double().clamp(0, 1) - b.double().clamp(0, 1)) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@torch.no_grad()
def test_hat_tiled_matches_whole_image():
    torch.manual_seed(0)
    net = build_network({**TINY_HAT, "depths": [2, 2], "num_heads": [2, 2], "upscale": 2})
    net = image_preserving_(net, body_gain=0.2).eval()
    photo = torch.from_numpy(data.astronaut()[64:256, 160:352].copy()).permute(2, 0, 1)[None].float() / 255
    settings = TileSettings(tile=64, overlap=16)
    assert count_tiles(*photo.shape[-2:], settings, 8) >= 9
    # 192 = 3 x 64: without overlap the tiles abut exactly (a hard paste)

    whole = run_tiled(net, photo, 2, 8, TileSettings(0))
    tiled = run_tiled(net, photo, 2, 8, settings)
    hard_paste = run_tiled(net, photo, 2, 8, TileSettings(tile=64, overlap=0))

    # the network's context-dependent part is far from negligible ...
    nearest = F.interpolate(photo, scale_factor=2, mode="nearest")
    assert psnr(whole, nearest) < 30
    # ... tiles without overlap show it at the seams, feathered overlapping tiles do not
    assert psnr(hard_paste, whole) < 45
    assert psnr(tiled, whole) >= 45
