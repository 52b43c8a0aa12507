"""The tiled engine on every architecture: tiled output must match whole-image output (>= 45 dB)
on an image several tiles large, for networks whose attention layers really shape the output.

CRAFT is the hard case: its HFB attention pools statistics over the whole input, so no tiling can
be exact for it; it passes with the least margin (about 45.3 dB at 64 px tiles here)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from restorer.archs import build_network
from restorer.engine.tiling import TileSettings, count_tiles, run_tiled

from conftest import TINY_HAT, image_preserving_

TINY_NETWORKS = {
    "HAT": ({**TINY_HAT, "depths": [2, 2], "num_heads": [2, 2]}, 8),
    "DRCT": (
        {
            "type": "DRCT",
            "img_size": 64,
            "window_size": 8,
            "depths": [6, 6],
            "embed_dim": 12,
            "num_heads": [2, 2],
            "gc": 4,
            "mlp_ratio": 2,
            "upsampler": "pixelshuffle",
            "resi_connection": "1conv",
        },
        8,
    ),
    "CRAFT": (
        {
            "type": "CRAFT",
            "depths": [2],
            "embed_dim": 24,
            "num_heads": [2],
            "mlp_ratio": 2,
            "split_size_0": 2,
            "split_size_1": 8,
            "resi_connection": "1conv",
            "window_size": 8,
        },
        8,
    ),
    "DLGSANet": (
        {
            "type": "DLGSANet",
            "dim": 12,
            "groups": 1,
            "blocks": 1,
            "idynamic_num_heads": 6,
            "restormer_num_heads": 2,
            "tlc_flag": True,
            "tlc_kernel": 96,
            "upsampler": "pixelshuffledirect",
        },
        1,
    ),
}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double().clamp(0, 1) - b.double().clamp(0, 1)) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.mark.parametrize("arch", sorted(TINY_NETWORKS))
@torch.no_grad()
def test_tiled_matches_whole_image(arch):
    network_g, multiple = TINY_NETWORKS[arch]
    torch.manual_seed(0)
    net = build_network({**network_g, "upscale": 2})
    if hasattr(net, "pad_mode"):
        net.pad_mode = "reflect"  # compare tiling itself, not two padding conventions
    net = image_preserving_(net, body_gain=0.1).eval()
    photo = torch.from_numpy(data.astronaut()[64:256, 160:352].copy()).permute(2, 0, 1)[None].float() / 255
    settings = TileSettings(tile=64, overlap=16)
    assert count_tiles(*photo.shape[-2:], settings, multiple) >= 9

    whole = run_tiled(net, photo, 2, multiple, TileSettings(0))
    tiled = run_tiled(net, photo, 2, multiple, settings)
    # 192 = 3 x 64: without overlap the tiles abut exactly (a hard paste)
    hard_paste = run_tiled(net, photo, 2, multiple, TileSettings(tile=64, overlap=0))

    nearest = F.interpolate(photo, scale_factor=2, mode="nearest")
    # the network's context-dependent part is as large as a trained SR model's correction
    assert psnr(whole, nearest) < 30
    assert psnr(tiled, whole) >= 45
    assert psnr(tiled, whole) > psnr(hard_paste, whole) + 3  # overlap + feathering is what closes the gap
