"""The ``reflection_removal`` task end to end with a tiny random RRFormer (random VGG19): `restorer infer`
keeps the size through tiles, and `restorer benchmark` scores RGB PSNR/SSIM with no crop, on real
transmission / blended pairs where a set has them and on seeded self-reflection blends otherwise, with
the untouched input as the row to beat."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from restorer import benchmark
from restorer import metrics as rmetrics
from restorer.cli import main
from restorer.tasks import get_task

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_self_reflection_pair_is_seeded_by_the_image_and_blends_a_visible_reflection():
    photo = data.astronaut()[:64, :80]
    other = data.coffee()[:64, :80]
    blended, gt = benchmark.reflection_pair(photo)
    again, _ = benchmark.reflection_pair(photo.copy())
    assert np.array_equal(blended, again) and np.array_equal(gt, photo)  # same pixels, same blend
    assert blended.dtype == np.uint8 and blended.shape == photo.shape
    assert not np.array_equal(benchmark.reflection_pair(other)[0], blended)
    assert 8 < rmetrics.psnr(blended, gt, 0, y_channel=False) < 35  # a reflection is there, the scene too
    with pytest.raises(Exception, match="scale-1 task"):
        benchmark.reflection_pair(photo, 2)
    degradation = benchmark.degradation_for(get_task("reflection_removal"))
    assert degradation is benchmark.SELF_REFLECTION
    assert (degradation.y_channel, degradation.crop_border) == (False, 0)


def test_infer_reflection_removal_keeps_the_size_through_tiles(tmp_path, tiny_rrformer_zoo):
    photo = data.astronaut()[:100, :140]  # not a multiple of the window (32): padded and cropped back
    Image.fromarray(photo).save(tmp_path / "window.png")
    out = tmp_path / "out"
    argv = ["infer", "--task", "reflection_removal", str(tmp_path / "window.png"), "-m", "tiny-rrformer"]
    assert main([*argv, "-o", str(out), "-t", "64", "-q"]) == 0
    result = Image.open(out / "window_out.png")
    assert result.mode == "RGB" and result.size == (140, 100)
    assert np.isfinite(np.asarray(result, dtype=np.float64)).all()


def test_benchmark_on_clean_photos_blends_them_and_scores_the_input_too(tmp_path, tiny_rrformer_zoo, capsys):
    out = tmp_path / "report"
    argv = ["benchmark", "--task", "reflection_removal", "-m", "tiny-rrformer", "--tile", "64"]
    argv += ["-d", str(REPO / "datasets" / "benchmark_sample"), "-o", str(out), "-q"]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "PSNR (dB) / SSIM on RGB (not Y), crop border 0" in printed.out
    assert "180-degree rotation" in printed.err

    results = json.loads((out / "reflection_removal.json").read_text())
    assert results["protocol"]["channel"] == "RGB" and results["protocol"]["crop_border"] == 0
    assert results["test_sets"]["benchmark_sample"]["layout"] == "HR + blended"
    model = results["models"]["tiny-rrformer"]["datasets"]["benchmark_sample"]
    blended = results["input"]["benchmark_sample"]
    assert (
        set(model["images"]) == set(blended["images"]) == {"cell", "chelsea", "coffee", "colorwheel", "logo"}
    )
    for stem, scores in blended["images"].items():  # the input row is the blend itself, made the same way
        gt = benchmark._read_rgb_u8(REPO / "datasets" / "benchmark_sample" / "HR" / f"{stem}.png")
        assert scores["psnr_rgb"] == pytest.approx(
            rmetrics.psnr(benchmark.reflection_pair(gt)[0], gt, 0, y_channel=False)
        )
    assert "| input (untouched) | - |" in (out / "reflection_removal.md").read_text()


def test_benchmark_reads_real_transmission_and_blended_pairs(tmp_path, tiny_rrformer_zoo):
    root = tmp_path / "pairs"
    (root / "transmission_layer").mkdir(parents=True)
    (root / "blended").mkdir()
    rng = np.random.default_rng(0)
    expected = {}
    for stem, picture in (("scene1", data.astronaut()[:64, :96]), ("scene2", data.coffee()[:64, :96])):
        glare = np.clip(picture.astype(np.int16) + rng.integers(0, 60, picture.shape), 0, 255).astype(
            np.uint8
        )
        Image.fromarray(picture).save(root / "transmission_layer" / f"{stem}.png")
        Image.fromarray(glare).save(root / "blended" / f"{stem}.png")
        expected[stem] = rmetrics.psnr(glare, picture, 0, y_channel=False)
    results = benchmark.run_benchmark(
        "reflection_removal", [benchmark.ModelRequest("tiny-rrformer")], [root], tile=64, progress=False
    )
    assert results["test_sets"]["pairs"]["layout"].startswith("transmission_layer + blended")
    assert results["test_sets"]["pairs"]["lr"] != "generated"
    for stem, value in expected.items():  # the stored blends were read, not synthesised
        assert results["input"]["pairs"]["images"][stem]["psnr_rgb"] == pytest.approx(value)
