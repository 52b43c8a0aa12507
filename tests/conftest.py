"""Shared fixtures: tiny HAT variants registered in the zoo for the duration of a test."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
import torch

from restorer import zoo

TINY_HAT = {
    "type": "HAT",
    "in_chans": 3,
    "img_size": 64,
    "window_size": 8,
    "compress_ratio": 3,
    "squeeze_factor": 6,
    "conv_scale": 0.01,
    "overlap_ratio": 0.5,
    "img_range": 1.0,
    "depths": [1],
    "embed_dim": 12,
    "num_heads": [2],
    "mlp_ratio": 2,
    "upsampler": "pixelshuffle",
    "resi_connection": "1conv",
}


def tiny_entry(scale: int, model: str = "tiny-hat") -> zoo.ZooEntry:
    base = zoo.get_entry("hat-s", scale)
    return dataclasses.replace(
        base,
        model=model,
        display_name=f"Tiny HAT ({model})",
        network_g=zoo._freeze({**TINY_HAT, "upscale": scale}),
        weight_file=f"{model}_x{scale}.pth",
        window_multiple=8,
    )


def _center_copy(conv: torch.nn.Conv2d, channels: int, repeat: int = 1, bias: float = 0.0) -> None:
    """Make ``conv`` copy its first ``channels`` inputs: output ``c * repeat + k`` = input ``c``."""
    with torch.no_grad():
        conv.weight.zero_()
        kh, kw = conv.weight.shape[-2:]
        for c in range(channels):
            for k in range(repeat):
                conv.weight[c * repeat + k, c, kh // 2, kw // 2] = 1.0
        conv.bias.zero_()
        conv.bias[: channels * repeat] = bias


def image_preserving_(net: torch.nn.Module, body_gain: float = 0.3) -> torch.nn.Module:
    """Turn a randomly initialised SR network into nearest-neighbour upscaling plus the body's
    random, context-dependent residual scaled by ``body_gain``.

    Works on the BasicSR layouts of our archs: first conv (``conv_first`` or
    ``overlap_embed.0.proj``), body output conv (``conv_after_body`` or the last layer of
    ``deep_feature_extraction``), and either ``conv_before_upsample`` + ``upsample`` + ``conv_last``
    or a one-step ``upsample`` (conv + pixel shuffle). A random network alone outputs a
    near-constant picture, which makes tests of alpha, tiling or colour meaningless; this keeps the
    picture while every attention layer still contributes.
    """
    c = 3
    first = net.conv_first if hasattr(net, "conv_first") else net.overlap_embed[0].proj
    body_out = net.conv_after_body if hasattr(net, "conv_after_body") else net.deep_feature_extraction[-1]
    two_stage = hasattr(net, "conv_before_upsample")
    offset = 1.0 if two_stage else 0.0  # +1 keeps features positive through LeakyReLU
    with torch.no_grad():
        first.weight.zero_()
        for ch in range(c):
            first.weight[ch, ch, first.weight.shape[-2] // 2, first.weight.shape[-1] // 2] = 1.0
        if first.bias is not None:
            first.bias.zero_()
            first.bias[:c] = offset
        body_out.weight.mul_(body_gain)
    stages = [m for m in net.upsample if isinstance(m, torch.nn.Conv2d)]
    shuffles = [m for m in net.upsample if isinstance(m, torch.nn.PixelShuffle)]
    if two_stage:
        _center_copy(net.conv_before_upsample[0], c)
        for conv, shuffle in zip(stages, shuffles):
            _center_copy(conv, c, repeat=shuffle.upscale_factor**2)
        _center_copy(net.conv_last, c, bias=-offset)
    else:
        _center_copy(stages[0], c, repeat=shuffles[0].upscale_factor ** 2)
    return net


def write_checkpoint(entry: zoo.ZooEntry, path: Path, seed: int = 0, key: str = "params_ema") -> Path:
    """An official-format checkpoint of an image-preserving random network (see above)."""
    from restorer.archs import build_network

    torch.manual_seed(seed)
    net = image_preserving_(build_network(entry.network_options()))
    torch.save({key: net.state_dict()}, path)
    return path


@pytest.fixture
def tiny_zoo(monkeypatch, tmp_path):
    """Adds 'tiny-hat' at x2/x3/x4 for every sr_x* task, with weights in a temporary weights folder."""
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    extra = {}
    for scale in (2, 3, 4):
        entry = tiny_entry(scale)
        extra[entry.key] = entry
        write_checkpoint(entry, weights_dir / entry.weight_file, seed=scale)
    monkeypatch.setattr(zoo, "ZOO", MappingProxyType({**extra, **zoo.ZOO}))
    monkeypatch.setenv("RESTORER_WEIGHTS_DIR", str(weights_dir))
    return weights_dir


@pytest.fixture
def rgb_image() -> np.ndarray:
    from skimage import data

    return data.astronaut()[100:148, 180:236]  # 48x56 uint8 RGB
