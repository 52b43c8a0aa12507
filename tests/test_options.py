"""Test option files: generated from the zoo, and `restorer test -opt` runs BasicSR-format files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml
from skimage import data

from restorer import zoo
from restorer._compat import ensure_basicsr_importable
from restorer.cli import main

from conftest import TINY_HAT, tiny_entry, write_checkpoint

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "options"))
import make_test_options  # noqa: E402


def test_committed_test_options_are_generated_from_the_zoo():
    folder = REPO / "options" / "test"
    expected = {
        f"{make_test_options.option_name(e)}.yml": make_test_options.render(e)
        for e in make_test_options.sr_entries()
    }
    committed = {p.name: p.read_text(encoding="utf-8") for p in folder.glob("*.yml")}
    assert sorted(committed) == sorted(expected), "run python options/make_test_options.py"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} is stale: run python options/make_test_options.py"
    opt = yaml.safe_load(committed["HAT-S_SRx4.yml"])
    assert opt["network_g"] == zoo.get_entry("hat-s", 4).network_options()
    assert opt["path"]["param_key_g"] == "params_ema" and opt["val"]["metrics"]["psnr"]["crop_border"] == 4


def _write_u8(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rgb[..., ::-1])


def test_restorer_test_runs_an_option_file_with_basicsr_metrics(tmp_path, monkeypatch, capsys):
    ensure_basicsr_importable()
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils.matlab_functions import imresize

    monkeypatch.chdir(tmp_path)
    hr_dir, lr_dir = Path("datasets/Mini/GTmod2"), Path("datasets/Mini/LRbicx2")
    for stem, photo in (("astronaut", data.astronaut()[:60, :52]), ("coffee", data.coffee()[:44, :64])):
        _write_u8(hr_dir / f"{stem}.png", photo)
        lr = imresize(photo.astype(np.float64) / 255.0, 0.5)
        _write_u8(lr_dir / f"{stem}.png", (np.clip(lr, 0, 1) * 255).round().astype(np.uint8))
    write_checkpoint(tiny_entry(2), tmp_path / "tiny.pth", key="params")
    option = {
        "name": "tiny_test",
        "scale": 2,
        "num_gpu": 0,
        "datasets": {"test_1": {"name": "Mini", "dataroot_gt": str(hr_dir), "dataroot_lq": str(lr_dir)}},
        "network_g": {**TINY_HAT, "upscale": 2},
        "path": {"pretrain_network_g": "tiny.pth", "strict_load_g": True},
        "val": {
            "save_img": True,
            "metrics": {
                "psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": True},
                "ssim": {"type": "calculate_ssim", "crop_border": 2, "test_y_channel": True},
            },
        },
    }
    Path("opt.yml").write_text(yaml.safe_dump(option), encoding="utf-8")
    assert main(["test", "-opt", "opt.yml", "-q"]) == 0
    assert "Mini" in capsys.readouterr().out
    results = json.loads(Path("results/tiny_test/metrics.json").read_text())
    mini = results["datasets"]["Mini"]
    for stem in ("astronaut", "coffee"):
        sr = cv2.imread(f"results/tiny_test/visualization/Mini/{stem}_tiny_test.png")
        gt = cv2.imread(str(hr_dir / f"{stem}.png"))
        assert sr.shape == gt.shape
        assert abs(mini["images"][stem]["psnr"] - calculate_psnr(sr, gt, 2, test_y_channel=True)) < 1e-10
        assert abs(mini["images"][stem]["ssim"] - calculate_ssim(sr, gt, 2, test_y_channel=True)) < 1e-10
    assert abs(mini["psnr"] - np.mean([mini["images"][s]["psnr"] for s in ("astronaut", "coffee")])) < 1e-12
    assert 15 < mini["psnr"] < 60  # an image-preserving network: a real, finite PSNR


def test_restorer_test_errors_are_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["test", "-opt", "missing.yml"]) == 2
    Path("bad.yml").write_text("just: text\n")
    assert main(["test", "-opt", "bad.yml"]) == 2
    assert "no network_g" in capsys.readouterr().err
