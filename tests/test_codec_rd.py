"""RD evaluation of codecs (restorer.codec.rd): Bjontegaard delta rate, matched-rate interpolation, and
`restorer benchmark --task compress` on a tiny random-init codec."""

from __future__ import annotations

import json
from types import MappingProxyType

import numpy as np
import pytest
import torch
from skimage import data

from restorer import zoo
from restorer.codec.rd import bd_rate, interpolate_at_rate, pillow_point

from conftest import TINY_S2LIC

# A made-up concave RD curve (bpp, PSNR) with 5 points.
CURVE = [(0.1, 26.0), (0.2, 28.6), (0.4, 31.0), (0.8, 33.9), (1.6, 36.4)]


def test_bd_rate_of_a_curve_against_itself_is_zero():
    result = bd_rate(CURVE, CURVE)
    assert result["bd_rate_percent"] == pytest.approx(0.0, abs=1e-9)
    assert result["fit"] == "anchor cubic, codec cubic" and result["reason"] is None


def test_bd_rate_at_half_the_rate_is_minus_50_percent():
    half = [(r / 2, p) for r, p in CURVE]
    assert bd_rate(CURVE, half)["bd_rate_percent"] == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(half, CURVE)["bd_rate_percent"] == pytest.approx(100.0, abs=1e-6)


def test_bd_rate_two_points_is_linear_and_says_so():
    two = [(0.2 / 2, 28.6), (0.8 / 2, 33.9)]
    result = bd_rate(CURVE, two)
    assert result["fit"] == "anchor cubic, codec linear" and "linear" in result["reason"]
    assert -60 < result["bd_rate_percent"] < -40  # a chord under a concave curve: near -50 %


def test_bd_rate_without_enough_points_or_overlap_is_none():
    one = bd_rate(CURVE, [(0.3, 30.0)])
    assert one["bd_rate_percent"] is None and "fewer than 2" in one["reason"]
    apart = bd_rate(CURVE, [(0.3, 40.0), (0.6, 42.0)])
    assert apart["bd_rate_percent"] is None and "no overlap" in apart["reason"]


def test_matched_rate_interpolation():
    curve = [{"bpp": r, "psnr": p} for r, p in CURVE]
    for r, p in CURVE:  # exact on the known points
        assert interpolate_at_rate(curve, r) == pytest.approx(p, abs=1e-12)
    middle = float(np.sqrt(0.2 * 0.4))  # half-way in log-bpp
    assert interpolate_at_rate(curve, middle) == pytest.approx((28.6 + 31.0) / 2, abs=1e-9)
    assert interpolate_at_rate(curve, 0.05) is None and interpolate_at_rate(curve, 2.0) is None


def test_pillow_point_measures_the_real_file():
    image = data.astronaut()[:96, :128].copy()
    low, high = pillow_point(image, "JPEG", 10), pillow_point(image, "JPEG", 90)
    assert low["bpp"] == pytest.approx(8 * low["bytes"] / (96 * 128))
    assert low["bpp"] < high["bpp"] and low["psnr"] < high["psnr"]
    assert low["ms_ssim"] is None  # 96 px side: too small for MS-SSIM


@pytest.fixture
def tiny_codec_zoo(monkeypatch, tmp_path):
    """Two tiny random-init codec variants (tiny-s2lic-q1/q2) with weights on disk."""
    from restorer.archs.s2lic_arch import S2LIC

    options = {"type": "S2LIC", **TINY_S2LIC}
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    extra = {}
    for seed, quality in enumerate((1, 2)):
        entry = zoo.ZooEntry(
            model=f"tiny-s2lic-q{quality}",
            display_name=f"Tiny S2LIC (q{quality})",
            arch="S2LIC",
            scale=1,
            network_g=zoo._freeze(options),
            weight_file=f"tiny-s2lic-q{quality}.pth",
            param_key="params",
            published="tests",
            paper="",
            window_multiple=64,
            tasks=("compress",),
        )
        extra[entry.key] = entry
        torch.manual_seed(seed)
        model = S2LIC(**TINY_S2LIC).eval()
        model.update(force=True)
        torch.save({"params": model.state_dict()}, weights_dir / entry.weight_file)
    monkeypatch.setattr(zoo, "ZOO", MappingProxyType({**extra, **zoo.ZOO}))
    monkeypatch.setenv("RESTORER_WEIGHTS_DIR", str(weights_dir))
    return weights_dir


def test_benchmark_compress_writes_json_and_plot(tiny_codec_zoo, tmp_path, capsys):
    from restorer import io as rio
    from restorer.cli import main

    images = tmp_path / "set"
    images.mkdir()
    rio.write_image(images / "a.png", data.astronaut()[:40, :48].astype(np.float32) / 255)
    rio.write_image(images / "b.png", data.coffee()[:32, :70].astype(np.float32) / 255)
    out = tmp_path / "out"
    argv = ["benchmark", "--task", "compress", "-d", str(images), "-m", "tiny-s2lic", "-o", str(out)]
    assert main([*argv, "--plot", "--device", "cpu", "-q"]) == 0
    results = json.loads((out / "compress.json").read_text())
    assert results["task"] == "compress" and results["kind"] == "codec"
    assert set(results["models"]) == {"tiny-s2lic-q1", "tiny-s2lic-q2"}  # the family: both rate points
    row = results["models"]["tiny-s2lic-q1"]["datasets"]["set"]["images"]["a"]
    assert {"bytes", "bpp", "psnr", "ms_ssim", "jpeg_psnr_at_bpp", "webp_psnr_at_bpp"} <= set(row)
    assert row["bpp"] == pytest.approx(8 * row["bytes"] / (40 * 48)) and row["ms_ssim"] is None
    jpeg = results["anchors"]["jpeg"]["set"]
    assert set(jpeg["images"]) == {"a", "b"} and len(jpeg["mean"]) == len(jpeg["images"]["a"]) > 2
    bd = results["bd_rate_vs_jpeg"]["tiny-s2lic"]["set"]
    assert set(bd) == {"points", "mean", "images"} and set(bd["mean"]) >= {"bd_rate_percent", "reason"}
    # A random-init model: its rate or its quality may lie outside JPEG's range; then a reason is given.
    assert bd["mean"]["bd_rate_percent"] is not None or bd["mean"]["reason"]
    assert (out / "compress.md").is_file()
    png = (out / "compress.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "BD-rate vs JPEG" in capsys.readouterr().out


def test_benchmark_compress_rejects_restoration_options(tiny_codec_zoo, tmp_path):
    from restorer.benchmark import ModelRequest, run_benchmark
    from restorer.errors import UsageError

    with pytest.raises(UsageError, match="--tile"):
        run_benchmark("compress", [ModelRequest("tiny-s2lic")], [str(tmp_path)], tile=64)
