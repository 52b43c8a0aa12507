"""Runner: device and precision choice, channel handling, alpha colour bleeding, the public API."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import restorer
from restorer.engine import runner
from restorer.errors import UsageError

from conftest import tiny_entry


def test_bleed_fills_only_transparent_pixels():
    rgb = np.zeros((8, 8, 3), np.float32)
    rgb[:, :4] = [1.0, 0.5, 0.25]
    alpha = np.zeros((8, 8), np.float32)
    alpha[:, :4] = 1.0
    out = runner.bleed_transparent_colors(rgb, alpha)
    np.testing.assert_array_equal(out[:, :4], rgb[:, :4])
    np.testing.assert_allclose(out[:, 4:], np.broadcast_to([1.0, 0.5, 0.25], (8, 4, 3)), atol=1e-6)


def test_precision_auto_is_fp32_on_cpu_and_explicit_choices_are_honoured():
    entry = tiny_entry(2)
    cpu = torch.device("cpu")
    assert runner.resolve_precision("auto", cpu, entry) is torch.float32
    assert runner.resolve_precision("bf16", cpu, entry) is torch.bfloat16
    with pytest.raises(UsageError, match="Unknown precision"):
        runner.resolve_precision("fp8", cpu, entry)


def test_device_parsing():
    assert runner.resolve_device("cpu").type == "cpu"
    assert runner.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError):
        runner.resolve_device("gpu please")


def test_gray_and_one_channel_paths(tiny_zoo):
    model = restorer.load_model("sr_x2", model="tiny-hat", device="cpu", tile=0)
    gray = np.random.default_rng(0).random((20, 24, 1), dtype=np.float32)
    out = model.run_array(gray)
    assert out.shape == (40, 48, 1)
    as_rgb = model.run_array(np.repeat(gray, 3, axis=2))
    np.testing.assert_allclose(out[..., 0], as_rgb @ runner._LUMA, atol=1e-5)
    # a one-channel model runs a colour image plane by plane
    one = dataclasses.replace(model.entry, in_channels=1, out_channels=1)
    calls = []
    model_one = dataclasses.replace(model, entry=one)
    model_one._forward = lambda x: (
        calls.append(x.shape[1]) or torch.nn.functional.interpolate(x, scale_factor=2)
    )
    assert model_one.run_array(np.repeat(gray, 3, axis=2)).shape == (40, 48, 3)
    assert calls == [1, 1, 1]


def test_public_restore_matches_loaded_model(tiny_zoo):
    pixels = np.random.default_rng(1).random((16, 16, 3), dtype=np.float32)
    direct = restorer.load_model("sr_x3", model="tiny-hat", device="cpu").run_array(pixels)
    assert restorer.restore(pixels, task="sr_x3", model="tiny-hat", device="cpu").shape == (48, 48, 3)
    np.testing.assert_array_equal(
        restorer.restore(pixels, task="sr_x3", model="tiny-hat", device="cpu"), direct
    )
