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


def test_self_ensemble_averages_the_eight_poses_through_the_tiled_engine(tiny_zoo):
    """--tta: each of the 8 flip/rotation poses goes through the engine and is turned back; the output is
    their mean (checked against whole-image forwards done by hand), tiled or not, on a non-square image."""
    model = restorer.load_model("sr_x2", model="tiny-hat", device="cpu", tile=0)
    pixels = np.random.default_rng(2).random((20, 28, 3), dtype=np.float32)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    expected = torch.zeros(1, 3, 40, 56)
    for flip, turns in runner.TTA_POSES:
        posed = torch.rot90(x.flip(-1) if flip else x, turns, dims=(-2, -1))
        out = torch.rot90(model.run_tensor(posed.contiguous()), -turns, dims=(-2, -1))
        expected += out.flip(-1) if flip else out
    expected /= 8
    plain = model.run_tensor(x)
    model.tta = True
    seen = []
    ensembled = model.run_tensor(x, on_tile=lambda done, total: seen.append((done, total)))
    torch.testing.assert_close(ensembled, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(ensembled, plain, atol=1e-4)  # the poses really differ for this network
    assert seen[-1][0] == seen[-1][1] and seen[-1][1] % 8 == 0
    tiled = restorer.load_model("sr_x2", model="tiny-hat", device="cpu", tile=16)
    tiled.tta = True
    torch.testing.assert_close(tiled.run_tensor(x), ensembled, atol=2e-3, rtol=0)
