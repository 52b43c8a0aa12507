"""The ``denoise`` task: `restorer infer` keeps the size (scale 1) of colour and gray images, and
`restorer benchmark` adds seeded Gaussian noise (sigma 25) and scores RGB PSNR/SSIM with no crop."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from restorer import benchmark
from restorer.cli import main
from restorer.tasks import get_task

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_denoise_infer_keeps_the_size_of_colour_and_gray_images(tmp_path, tiny_rwkv_zoo, rgb_image):
    Image.fromarray(rgb_image).save(tmp_path / "photo.png")  # 48x56 RGB: not a multiple of 8 wide
    Image.fromarray(rgb_image[:, :, 1]).save(tmp_path / "gray.png")
    out = tmp_path / "out"
    argv = ["infer", "--task", "denoise", str(tmp_path / "photo.png"), str(tmp_path / "gray.png")]
    assert main([*argv, "-o", str(out), "-m", "tiny-rwkv-denoise", "-q"]) == 0
    colour = Image.open(out / "photo_out.png")
    gray = Image.open(out / "gray_out.png")
    assert colour.mode == "RGB" and colour.size == (56, 48)
    assert gray.mode == "L" and gray.size == (56, 48)
    result = np.asarray(colour).astype(np.float64)
    assert 0 < np.abs(result - rgb_image).mean() < 60  # changed, but still the picture (global residual)


def test_gaussian_noise_pair_is_seeded_per_image_with_sigma_25():
    rng = np.random.default_rng(1)
    photo = rng.integers(40, 215, size=(64, 72, 3), dtype=np.uint8)
    noisy, gt = benchmark.gaussian_noise_pair(photo, 1)
    assert gt is not None and np.array_equal(gt, photo)
    assert noisy.dtype == np.float32 and noisy.shape == photo.shape
    noise = noisy - photo / 255.0
    assert noise.std() * 255 == pytest.approx(25.0, rel=0.03)
    assert noisy.min() < 0 and noisy.max() > 1  # not clipped (the papers' protocol)
    again, _ = benchmark.gaussian_noise_pair(photo.copy(), 1)
    np.testing.assert_array_equal(noisy, again)  # same image, same noise, every run
    other = photo.copy()
    other[0, 0, 0] ^= 1
    assert not np.allclose(benchmark.gaussian_noise_pair(other, 1)[0] - other / 255.0, noise)
    gray = np.repeat(photo[:, :, :1], 3, axis=2)
    noisy_gray, _ = benchmark.gaussian_noise_pair(gray, 1)
    assert np.array_equal(noisy_gray[..., 0], noisy_gray[..., 2])  # a gray image gets gray noise


def test_denoise_metrics_are_rgb_without_crop():
    degradation = benchmark.degradation_for(get_task("denoise"))
    assert degradation is benchmark.GAUSSIAN_NOISE_25
    specs = benchmark.benchmark_metrics(
        1, rgb=True, y_channel=degradation.y_channel, crop_border=degradation.crop_border
    )
    assert [(s.name, s.crop_border, s.y_channel) for s in specs] == [
        ("psnr_rgb", 0, False),
        ("ssim_rgb", 0, False),
    ]
    # The super-resolution protocol is unchanged: Y channel, crop = scale.
    assert [(s.name, s.crop_border) for s in benchmark.benchmark_metrics(4)] == [("psnr_y", 4), ("ssim_y", 4)]


def test_denoise_benchmark_on_the_sample_set(tmp_path, tiny_rwkv_zoo, capsys):
    out = tmp_path / "report"
    argv = ["benchmark", "--task", "denoise", "-m", "tiny-rwkv-denoise"]
    argv += ["-d", str(REPO / "datasets" / "benchmark_sample"), "-o", str(out), "--plot", "-q"]
    assert main([*argv, "--no-baselines"]) == 0  # BM3D is slow; its row has a test of its own
    printed = capsys.readouterr()
    assert "PSNR (dB) / SSIM on RGB (not Y), crop border 0" in printed.out
    assert "Gaussian noise sigma 25" in printed.err and "bicubic" not in printed.err

    results = json.loads((out / "denoise.json").read_text())
    assert results["task"] == "denoise" and results["scale"] == 1
    assert results["protocol"]["channel"] == "RGB" and results["protocol"]["crop_border"] == 0
    scores = results["models"]["tiny-rwkv-denoise"]["datasets"]["benchmark_sample"]
    assert set(scores) == {"psnr_rgb", "ssim_rgb", "sec_per_image", "peak_memory_mb", "images"}
    assert set(scores["images"]) == {"cell", "chelsea", "coffee", "colorwheel", "logo"}
    for image_scores in scores["images"].values():
        assert set(image_scores) == {"psnr_rgb", "ssim_rgb"}
        # An untrained network near the identity leaves about the noise's own PSNR (20.2 dB at sigma 25).
        assert 10 < image_scores["psnr_rgb"] < 40 and 0 < image_scores["ssim_rgb"] < 1
    # The untouched input is scored too: sigma-25 noise alone is about 20.2 dB (a little more where
    # rounding to 8 bits clips it on saturated pixels).
    noisy = results["input"]["benchmark_sample"]
    assert set(noisy["images"]) == set(scores["images"])
    assert all(19.5 < s["psnr_rgb"] < 24 for s in noisy["images"].values())
    markdown = (out / "denoise.md").read_text()
    assert "| input (untouched) | - |" in markdown
    assert "benchmark_sample PSNR/SSIM (RGB)" in markdown and "(Y)" not in markdown
    assert (out / "denoise.png").is_file()
    assert "baselines" not in results


def test_denoise_benchmark_has_a_bm3d_row(tmp_path, tiny_rwkv_zoo, capsys):
    """BM3D (the bm3d package) at the known sigma is a row of the same run, gray and colour, and it
    clearly beats the noisy input."""
    pytest.importorskip("bm3d")
    from skimage import data

    folder = tmp_path / "Mini"
    folder.mkdir()
    cv2.imwrite(str(folder / "camera.png"), data.camera()[100:164, 200:264])  # a gray file
    cv2.imwrite(str(folder / "coffee.png"), data.coffee()[100:164, 200:264, ::-1])
    out = tmp_path / "report"
    argv = [
        "benchmark",
        "--task",
        "denoise",
        "-m",
        "tiny-rwkv-denoise",
        "-d",
        str(folder),
        "-o",
        str(out),
        "-q",
    ]
    assert main(argv) == 0
    assert "bm3d (baseline)" in capsys.readouterr().out
    results = json.loads((out / "denoise.json").read_text())
    bm3d_rows = results["baselines"]["bm3d"]["Mini"]["images"]
    noisy = results["input"]["Mini"]["images"]
    assert set(bm3d_rows) == {"camera", "coffee"}
    for stem in bm3d_rows:
        assert bm3d_rows[stem]["psnr_rgb"] > noisy[stem]["psnr_rgb"] + 4
