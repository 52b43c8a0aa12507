"""Classical denoising baselines: each tuned method denoises gray and colour images, the tuning table
covers the sigmas the comparison uses, and best_classical_denoise picks the tuned best."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from restorer import baselines
from restorer.errors import UsageError
from restorer.metrics import psnr_all_channels
from restorer.training.degradations import gaussian_noise


@pytest.fixture(scope="module")
def images() -> dict[int, np.ndarray]:
    rgb = data.astronaut()[60:156, 160:256].astype(np.float32) / 255  # 96 x 96 face and suit
    gray = data.camera()[40:136, 200:296].astype(np.float32)[:, :, None] / 255
    return {1: gray, 3: rgb}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("method", list(baselines.METHODS))
def test_each_tuned_method_removes_noise(images, method, channels):
    clean = images[channels]
    noisy = gaussian_noise(clean, 25, np.random.default_rng(0))
    params = baselines.tuned_parameters(25, channels)[method]["params"]
    out = baselines.METHODS[method](noisy, 25, **params)
    assert out.shape == clean.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    gain = psnr_all_channels(out, clean, clip_output=True) - psnr_all_channels(noisy, clean, clip_output=True)
    assert gain > 3.0, f"{method}: only {gain:.2f} dB better than the noisy input"


def test_tuning_table_covers_the_comparison():
    for sigma in (15, 25, 50):
        for channels in (1, 3):
            entry = baselines.TUNED[(sigma, channels)]
            assert entry["best"] == max(baselines.METHODS, key=lambda name: entry[name]["psnr"])
            for name in baselines.METHODS:
                grid = baselines.GRIDS[name][channels]
                assert set(entry[name]["params"]) == set(grid)
                assert all(value in grid[key] for key, value in entry[name]["params"].items())
    # noisier images denoise to lower PSNR
    assert baselines.TUNED[(15, 3)]["nlm_skimage"]["psnr"] > baselines.TUNED[(50, 3)]["nlm_skimage"]["psnr"]
    # a sigma between tuned ones uses the nearest one's factors
    assert baselines.tuned_parameters(30, 3) is baselines.TUNED[(25, 3)]
    assert baselines.tuned_parameters(45, 1) is baselines.TUNED[(50, 1)]


def test_best_classical_denoise_uses_the_tuning_winner_or_the_oracle(images):
    clean = images[3]
    noisy = gaussian_noise(clean, 25, np.random.default_rng(1))
    entry = baselines.tuned_parameters(25, 3)
    default = baselines.best_classical_denoise(noisy, 25)
    assert default.method == entry["best"] and default.psnr is None
    expected = baselines.METHODS[entry["best"]](noisy, 25, **entry[entry["best"]]["params"])
    np.testing.assert_array_equal(default.image, expected)

    oracle = baselines.best_classical_denoise(noisy, 25, clean=clean)
    scores = {
        name: psnr_all_channels(
            baselines.METHODS[name](noisy, 25, **entry[name]["params"]), clean, clip_output=True
        )
        for name in baselines.METHODS
    }
    assert oracle.method == max(scores, key=scores.get)
    assert oracle.psnr == pytest.approx(max(scores.values()))
    gray = baselines.best_classical_denoise(images[1][:, :, 0], 25)  # H x W input is accepted
    assert gray.image.shape == (96, 96, 1)
    with pytest.raises(UsageError, match="expected an H x W"):
        baselines.best_classical_denoise(np.zeros((8, 8, 2)), 25)


def test_tune_picks_the_best_grid_point(images, monkeypatch):
    small = [images[1][:48, :48], images[1][48:, 48:]]
    monkeypatch.setitem(baselines.GRIDS, "nlm_opencv", {1: {"h_factor": [0.3, 1.0, 3.0]}})
    monkeypatch.setitem(baselines.GRIDS, "nlm_skimage", {1: {"h_factor": [0.2, 0.7]}})
    monkeypatch.setitem(
        baselines.GRIDS,
        "wavelet_skimage",
        {1: {"method": ["BayesShrink"], "wavelet": ["db1"], "sigma_factor": [0.1, 1.0]}},
    )
    entry = baselines.tune(small, 25, seed=3)
    noisy = [gaussian_noise(image, 25, np.random.default_rng([3, i])) for i, image in enumerate(small)]
    for name in baselines.METHODS:
        grid = baselines.GRIDS[name][1]
        key = next(iter(k for k in grid if len(grid[k]) > 1))
        scores = {}
        for value in grid[key]:
            params = {k: (value if k == key else v[0]) for k, v in grid.items()}
            outputs = [baselines.METHODS[name](n, 25, **params) for n in noisy]
            scores[value] = np.mean(
                [psnr_all_channels(o, c, clip_output=True) for o, c in zip(outputs, small)]
            )
        assert entry[name]["params"][key] == max(scores, key=scores.get)
        assert entry[name]["psnr"] == pytest.approx(max(scores.values()), abs=1e-3)
