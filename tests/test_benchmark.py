"""`restorer benchmark` and `restorer datasets prepare`: layouts, LR generation, the papers' protocol,
reports, several models in one run, and agreement with `restorer test -opt`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import pytest
import yaml
from skimage import data

from restorer import benchmark, zoo
from restorer._compat import ensure_basicsr_importable
from restorer.cli import main
from restorer.errors import RestorerError, UsageError
from restorer.tasks import TaskSpec

from conftest import TINY_HAT, tiny_entry, write_checkpoint

REPO = Path(__file__).resolve().parent.parent


def _write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return path


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


# Two small photos whose sizes are not multiples of 2, 3 or 4, so mod-cropping matters.
PHOTOS = {"astronaut": data.astronaut()[90:141, 180:239], "coffee": data.coffee()[60:107, 250:305]}


def _expected_pair(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Mod-crop + BasicSR imresize + rounding, computed here independently of restorer."""
    ensure_basicsr_importable()
    from basicsr.data.transforms import mod_crop
    from basicsr.utils.matlab_functions import imresize

    gt = mod_crop(hr, scale)
    lr = imresize(gt.astype(np.float64) / 255.0, 1 / scale)
    return np.clip(np.round(lr * 255.0), 0, 255).astype(np.uint8), gt


@pytest.fixture
def two_tiny_models(tiny_zoo, monkeypatch):
    """'tiny-hat' (from tiny_zoo) and 'tiny-hat-b' (other random weights) at x2, both with weights."""
    other = tiny_entry(2, model="tiny-hat-b")
    write_checkpoint(other, tiny_zoo / other.weight_file, seed=11)
    monkeypatch.setattr(zoo, "ZOO", MappingProxyType({other.key: other, **zoo.ZOO}))
    return tiny_zoo


# ---------------------------------------------------------------------------------------------
# LR generation and layouts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_generated_lr_equals_basicsr_imresize_exactly(scale):
    hr = PHOTOS["astronaut"]
    lq, gt = benchmark.bicubic_pair(hr, scale)
    expected_lq, expected_gt = _expected_pair(hr, scale)
    assert gt.shape == (51 // scale * scale, 59 // scale * scale, 3)
    np.testing.assert_array_equal(gt, expected_gt)
    assert lq.dtype == np.uint8 and lq.shape == (51 // scale, 59 // scale, 3)
    np.testing.assert_array_equal(lq, expected_lq)


def _make_layout(root: Path, layout: str, scale: int, with_lr: bool = True) -> None:
    for stem, photo in PHOTOS.items():
        lq, gt = _expected_pair(photo, scale)
        if layout == "basicsr":
            _write_rgb(root / f"GTmod{scale}" / f"{stem}.png", gt)
            lr_path = root / f"LRbicx{scale}" / f"{stem}.png"
        elif layout == "basicsr12":
            _write_rgb(root / "GTmod12" / f"{stem}.png", _expected_pair(photo, 12)[1])
            lq = _expected_pair(_expected_pair(photo, 12)[1], scale)[0]
            lr_path = root / f"LRbicx{scale}" / f"{stem}.png"
        elif layout == "edsr":
            _write_rgb(root / "HR" / f"{stem}.png", photo)
            lr_path = root / "LR_bicubic" / f"X{scale}" / f"{stem}x{scale}.png"
        else:  # flat
            _write_rgb(root / f"{stem}.png", photo)
            lr_path = root / "LR_bicubic" / f"X{scale}" / f"{stem}.png"
        if with_lr:
            _write_rgb(lr_path, lq)


@pytest.mark.parametrize(
    "layout, name, hr_folder, lr_folder",
    [
        ("basicsr", "BasicSR", "GTmod4", "LRbicx4"),
        ("basicsr12", "BasicSR", "GTmod12", "LRbicx4"),
        ("edsr", "HR + LR_bicubic", "HR", "LR_bicubic/X4"),
        ("flat", "flat HR folder", ".", "LR_bicubic/X4"),
    ],
)
def test_each_layout_is_discovered(tmp_path, layout, name, hr_folder, lr_folder):
    root = tmp_path / "Set2"
    _make_layout(root, layout, 4)
    found = benchmark.discover(root, 4)
    assert found.name == "Set2"
    assert found.layout == name
    assert found.hr_dir == (root / hr_folder if hr_folder != "." else root)
    assert found.lr_dir == root / lr_folder
    assert not found.lr_generated
    assert [p.stem for p in found.pairs] == ["astronaut", "coffee"]
    for pair in found.pairs:
        assert pair.hr.parent == found.hr_dir and pair.lr.parent == found.lr_dir
        assert pair.lr.stem in (pair.stem, f"{pair.stem}x4")


def test_an_hr_folder_given_directly_is_named_after_its_set(tmp_path):
    _make_layout(tmp_path / "Set2", "basicsr", 4, with_lr=False)
    found = benchmark.discover(tmp_path / "Set2" / "GTmod4", 4)
    assert found.name == "Set2" and found.layout == "flat HR folder" and found.lr_generated


def test_missing_lr_folder_is_generated_and_prepare_writes_it(tmp_path):
    root = tmp_path / "Set2"
    _make_layout(root, "edsr", 4, with_lr=False)
    found = benchmark.discover(root, 4)
    assert found.lr_generated and all(p.lr is None for p in found.pairs)
    samples = list(benchmark.load_samples(found.pairs, 4, benchmark.BICUBIC))
    for sample in samples:
        expected_lq, expected_gt = _expected_pair(PHOTOS[sample.stem], 4)
        np.testing.assert_array_equal(sample.gt, expected_gt)
        np.testing.assert_array_equal(sample.lq, expected_lq.astype(np.float32) / 255.0)

    assert main(["datasets", "prepare", str(root), "--scale", "4", "--scale", "2", "-q"]) == 0
    for scale in (4, 2):
        prepared = benchmark.discover(root, scale)
        assert not prepared.lr_generated and prepared.lr_dir == root / "LR_bicubic" / f"X{scale}"
        for pair in prepared.pairs:
            np.testing.assert_array_equal(_read_rgb(pair.lr), _expected_pair(PHOTOS[pair.stem], scale)[0])
    # A second run keeps what is there.
    _, written = benchmark.prepare(root, 4)
    assert written == []


def test_missing_hr_folder_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "Set2"
    _make_layout(root, "basicsr", 4)
    for path in (root / "GTmod4").iterdir():
        path.unlink()
    (root / "GTmod4").rmdir()
    with pytest.raises(
        UsageError, match=r"No HR \(ground-truth\) images in .*Set2.*GTmod4/.*It has: LRbicx4/"
    ):
        benchmark.discover(root, 4)
    assert main(["benchmark", "--task", "sr_x4", "-d", str(root), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No HR (ground-truth) images") and "Traceback" not in err
    assert main(["benchmark", "--task", "sr_x4", "-d", str(tmp_path / "nowhere"), "-q"]) == 2
    assert "Dataset folder not found" in capsys.readouterr().err


def test_an_incomplete_lr_folder_is_an_error_not_a_silent_mix(tmp_path):
    root = tmp_path / "Set2"
    _make_layout(root, "basicsr", 4)
    (root / "LRbicx4" / "coffee.png").unlink()
    with pytest.raises(UsageError, match="No LR image for coffee.png.*restorer datasets prepare"):
        benchmark.discover(root, 4)


def test_degradation_is_a_per_task_hook(monkeypatch):
    sr = TaskSpec("sr_x3", "image", 3, "", ())
    assert benchmark.degradation_for(sr) is benchmark.BICUBIC
    denoise = TaskSpec("denoise_test", "image", 1, "", ())
    with pytest.raises(UsageError, match="no benchmark degradation"):
        benchmark.degradation_for(denoise)
    noisy = benchmark.Degradation(
        "noise",
        lambda s: (benchmark.Layout("noisy", "GT", "noisy"),),
        lambda gt, s: (gt, gt),
        lambda st, s: (st,),
    )
    monkeypatch.setattr(benchmark, "DEGRADATIONS", {})
    benchmark.register_degradation("denoise_test", noisy)
    assert benchmark.degradation_for(denoise) is noisy


def test_lr_that_does_not_belong_to_its_gt_is_an_error(tmp_path, tiny_zoo):
    root = tmp_path / "Set2"
    _make_layout(root, "basicsr", 2)
    # An x4 LR image in the x2 folder: the output would be half the GT size.
    _write_rgb(root / "LRbicx2" / "coffee.png", _expected_pair(PHOTOS["coffee"], 4)[0])
    with pytest.raises(RestorerError, match="LR and GT do not belong together"):
        benchmark.run_benchmark("sr_x2", [benchmark.ModelRequest("tiny-hat")], [root], progress=False)


def test_peak_memory_on_cpu_sees_an_allocation_inside_the_block():
    # A larger block before the measurement puts the lifetime peak above anything inside it, as
    # earlier tests or models do: the short burst inside must still be seen.
    earlier = np.ones(256 * 2**20, np.uint8)
    del earlier
    meter = benchmark.PeakMemory("cpu")
    with meter:
        block = np.ones(64 * 2**20, np.uint8)  # 64 MiB, touched
        del block
    assert meter.measure == "cpu_peak_rss_growth"
    assert 48 * 2**20 < meter.peak_bytes < 512 * 2**20


# ---------------------------------------------------------------------------------------------
# The command: protocol, reports, several models
# ---------------------------------------------------------------------------------------------


def test_benchmark_two_models_one_table_json_markdown_plot(tmp_path, two_tiny_models, capsys):
    ensure_basicsr_importable()
    from basicsr.metrics import calculate_psnr, calculate_ssim

    flat = tmp_path / "Flat2"
    _make_layout(flat, "flat", 2, with_lr=False)  # LR made on the fly
    basicsr_set = tmp_path / "Mini"
    _make_layout(basicsr_set, "basicsr", 2)
    out = tmp_path / "report"
    argv = ["benchmark", "--task", "sr_x2", "-m", "tiny-hat", "-m", "tiny-hat-b", "-d", str(flat)]
    argv += ["-d", str(basicsr_set), "-o", str(out), "--plot", "--rgb", "--save-images", str(tmp_path / "sr")]
    assert main([*argv, "-q"]) == 0
    printed = capsys.readouterr()
    table = printed.out
    assert "tiny-hat " in table and "tiny-hat-b" in table and "Flat2 PSNR/SSIM (Y)" in table
    assert "Mini PSNR/SSIM (Y)" in table and "peak MiB (CPU RSS growth)" in table
    assert "making LR images with MATLAB bicubic" in printed.err  # said for Flat2 only
    assert "Mini:" not in printed.err

    from restorer.archs import build_network

    tiny_params = sum(p.numel() for p in build_network(tiny_entry(2).network_options()).parameters())
    results = json.loads((out / "sr_x2.json").read_text())
    assert results["task"] == "sr_x2" and results["scale"] == 2
    assert results["memory_measure"] == "cpu_peak_rss_growth"
    assert set(results["models"]) == {"tiny-hat", "tiny-hat-b"}
    set_keys = {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "sec_per_image", "peak_memory_mb", "images"}
    for name, model in results["models"].items():
        assert set(model) == {"display_name", "weights", "params_m", "datasets"}
        assert model["params_m"] == pytest.approx(tiny_params / 1e6, rel=1e-9)
        assert model["weights"] == str(two_tiny_models / f"{name}_x2.pth")
        assert set(model["datasets"]) == {"Flat2", "Mini"}
        for set_name, scores in model["datasets"].items():
            assert set(scores) == set_keys
            assert set(scores["images"]) == {"astronaut", "coffee"}
            assert scores["sec_per_image"] > 0
            for stem, image_scores in scores["images"].items():
                assert set(image_scores) == {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}
                # The saved output, scored by BasicSR itself against the mod-cropped GT, crop = scale.
                sr = cv2.imread(str(tmp_path / "sr" / name / set_name / f"{stem}.png"))
                gt = _expected_pair(PHOTOS[stem], 2)[1][..., ::-1].copy()
                assert sr.shape == gt.shape
                assert image_scores["psnr_y"] == pytest.approx(
                    calculate_psnr(sr, gt, 2, test_y_channel=True), abs=1e-10
                )
                assert image_scores["ssim_y"] == pytest.approx(
                    calculate_ssim(sr, gt, 2, test_y_channel=True), abs=1e-10
                )
                assert image_scores["psnr_rgb"] == pytest.approx(calculate_psnr(sr, gt, 2), abs=1e-10)
                assert image_scores["psnr_y"] != pytest.approx(
                    calculate_psnr(sr, gt, 0, test_y_channel=True), abs=1e-6
                )
            assert scores["psnr_y"] == pytest.approx(
                np.mean([s["psnr_y"] for s in scores["images"].values()]), abs=1e-12
            )
            assert 15 < scores["psnr_y"] < 60
        # Generated LR (Flat2) and stored LR made the same way (Mini) give the same numbers.
        assert model["datasets"]["Flat2"]["images"] == model["datasets"]["Mini"]["images"]
    first, second = (results["models"][m]["datasets"]["Mini"]["psnr_y"] for m in ("tiny-hat", "tiny-hat-b"))
    assert first != second  # two different networks really ran

    markdown = (out / "sr_x2.md").read_text()
    assert "| model | params (M) |" in markdown and "| tiny-hat-b |" in markdown
    png = cv2.imread(str(out / "sr_x2.png"))
    assert png is not None and png.shape[0] > 200


def test_benchmark_runs_on_the_shipped_sample_set(tmp_path, tiny_zoo, capsys):
    out = tmp_path / "report"
    argv = [
        "benchmark",
        "--task",
        "sr_x4",
        "-m",
        "tiny-hat",
        "-d",
        str(REPO / "datasets" / "benchmark_sample"),
    ]
    assert main([*argv, "-o", str(out), "--tile", "32", "-q"]) == 0
    results = json.loads((out / "sr_x4.json").read_text())
    scores = results["models"]["tiny-hat"]["datasets"]["benchmark_sample"]
    assert set(scores["images"]) == {"cell", "chelsea", "coffee", "colorwheel", "logo"}
    assert results["test_sets"]["benchmark_sample"]["lr"] == "generated"


def test_weights_and_model_arguments_are_checked(tmp_path, two_tiny_models, capsys):
    root = tmp_path / "Set2"
    _make_layout(root, "flat", 2, with_lr=False)
    base = ["benchmark", "--task", "sr_x2", "-d", str(root), "-q", "-o", str(tmp_path / "r")]
    assert main([*base, "-m", "tiny-hat", "-m", "tiny-hat-b", "--weights", "x.pth"]) == 2
    assert "--weights goes with one --model" in capsys.readouterr().err
    assert main([*base, "-m", "no-such-model"]) == 2
    assert "not available for task 'sr_x2'" in capsys.readouterr().err
    # One model, two checkpoints: both rows are kept, named after their files.
    weights = str(two_tiny_models / "tiny-hat_x2.pth")
    other = str(two_tiny_models / "tiny-hat-b_x2.pth")  # same architecture, other weights
    assert main([*base, "-m", f"tiny-hat={weights}", "-m", f"tiny-hat={other}"]) == 0
    results = json.loads((tmp_path / "r" / "sr_x2.json").read_text())
    assert set(results["models"]) == {"tiny-hat=tiny-hat_x2.pth", "tiny-hat=tiny-hat-b_x2.pth"}


def test_lpips_without_weights_fails_before_any_model_runs(tmp_path, tiny_zoo, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    root = tmp_path / "Set2"
    _make_layout(root, "flat", 2, with_lr=False)
    assert main(["benchmark", "--task", "sr_x2", "-m", "tiny-hat", "-d", str(root), "--lpips", "-q"]) == 1
    err = capsys.readouterr().err
    assert "alexnet-owt-7be5be79.pth" in err and str(tmp_path / "torch" / "hub" / "checkpoints") in err


# ---------------------------------------------------------------------------------------------
# restorer test -opt and restorer benchmark: one code path, the same numbers
# ---------------------------------------------------------------------------------------------


def test_restorer_test_and_benchmark_give_the_same_numbers(tmp_path, tiny_zoo, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "Mini"
    _make_layout(root, "basicsr", 2, with_lr=False)
    assert main(["datasets", "prepare", str(root), "--scale", "2", "-q"]) == 0  # writes LRbicx2/
    option = {
        "name": "same_numbers",
        "scale": 2,
        "num_gpu": 0,
        "datasets": {
            "test_1": {
                "name": "Mini",
                "dataroot_gt": str(root / "GTmod2"),
                "dataroot_lq": str(root / "LRbicx2"),
            }
        },
        "network_g": {**TINY_HAT, "upscale": 2},
        "path": {"pretrain_network_g": str(tiny_zoo / "tiny-hat_x2.pth"), "param_key_g": "params_ema"},
        "val": {
            "save_img": False,
            "metrics": {
                "psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": True},
                "ssim": {"type": "calculate_ssim", "crop_border": 2, "test_y_channel": True},
            },
        },
    }
    Path("opt.yml").write_text(yaml.safe_dump(option), encoding="utf-8")
    assert main(["test", "-opt", "opt.yml", "-q"]) == 0
    tested = json.loads(Path("results/same_numbers/metrics.json").read_text())["datasets"]["Mini"]
    assert (
        main(["benchmark", "--task", "sr_x2", "-m", "tiny-hat", "-d", str(root), "--json", "b.json", "-q"])
        == 0
    )
    benched = json.loads(Path("b.json").read_text())["models"]["tiny-hat"]["datasets"]["Mini"]
    assert set(tested["images"]) == set(benched["images"]) == {"astronaut", "coffee"}
    for stem, scores in tested["images"].items():
        assert scores["psnr"] == benched["images"][stem]["psnr_y"]
        assert scores["ssim"] == benched["images"][stem]["ssim_y"]
    assert tested["psnr"] == benched["psnr_y"] and tested["ssim"] == benched["ssim_y"]

    # An option file whose LR folder is missing gets the same LR made in memory: same numbers.
    option["datasets"]["test_1"]["dataroot_lq"] = str(root / "LRbicx2_absent")
    option["name"] = "made_lr"
    Path("opt2.yml").write_text(yaml.safe_dump(option), encoding="utf-8")
    assert main(["test", "-opt", "opt2.yml", "-q"]) == 0
    made = json.loads(Path("results/made_lr/metrics.json").read_text())["datasets"]["Mini"]
    assert made["images"] == tested["images"]


def test_option_file_lpips_metric_type_is_understood(tmp_path):
    specs = benchmark.option_metrics(
        {"lpips": {"type": "calculate_lpips", "crop_border": 4}, "psnr": {"type": "calculate_psnr"}}, "x.yml"
    )
    assert [(s.name, s.type, s.crop_border, s.y_channel) for s in specs] == [
        ("lpips", "calculate_lpips", 4, False),
        ("psnr", "calculate_psnr", 0, False),
    ]
    with pytest.raises(UsageError, match="Unsupported metric type 'calculate_niqe'"):
        benchmark.option_metrics({"niqe": {"type": "calculate_niqe"}}, "x.yml")


# ---------------------------------------------------------------------------------------------
# The shipped sample set
# ---------------------------------------------------------------------------------------------


def test_sample_set_is_generated_by_its_script_and_shares_no_training_photo():
    sys.path.insert(0, str(REPO / "datasets"))
    try:
        import make_benchmark_samples
        import make_training_set
    finally:
        sys.path.remove(str(REPO / "datasets"))
    sources = {loader for loader, _, _ in make_benchmark_samples.CROPS.values()}
    assert not sources & set(make_training_set.TRAIN)
    corpus_train = {
        how.removeprefix("skimage.data.")
        for name, _, how in make_training_set.PYTHON_PHOTOS
        if name not in make_training_set.VALIDATION
    }
    assert not sources & corpus_train
    assert not sources & {"cat"}  # skimage's cat is chelsea under another name
    folder = REPO / "datasets" / "benchmark_sample" / "HR"
    committed = sorted(p.name for p in folder.iterdir())
    expected = make_benchmark_samples.sample_images()
    assert committed == sorted(f"{name}.png" for name in expected)
    for name, rgb in expected.items():
        np.testing.assert_array_equal(_read_rgb(folder / f"{name}.png"), rgb)
        assert 200 <= min(rgb.shape[:2]) and max(rgb.shape[:2]) <= 400


def test_bicubic_baseline_row_is_matlab_bicubic_of_the_same_inputs(tmp_path, tiny_zoo, capsys):
    """Super-resolution reports carry a bicubic row scored like the models (unless --no-baselines)."""
    ensure_basicsr_importable()
    from basicsr.metrics import calculate_psnr

    flat = tmp_path / "Flat2"
    _make_layout(flat, "flat", 2, with_lr=False)
    out = tmp_path / "report"
    argv = ["benchmark", "--task", "sr_x2", "-m", "tiny-hat", "-d", str(flat), "-o", str(out), "-q"]
    assert main(argv) == 0
    assert "bicubic (baseline)" in capsys.readouterr().out
    results = json.loads((out / "sr_x2.json").read_text())
    rows = results["baselines"]["bicubic"]["Flat2"]
    for stem, scores in rows["images"].items():
        lr, gt = _expected_pair(PHOTOS[stem], 2)
        up = benchmark.bicubic_upscale(lr, 2)
        assert scores["psnr_y"] == pytest.approx(
            calculate_psnr(up[..., ::-1], gt[..., ::-1], 2, test_y_channel=True), abs=1e-10
        )
    assert "| bicubic (baseline) | - |" in (out / "sr_x2.md").read_text()
    assert main([*argv, "--no-baselines"]) == 0
    assert "baselines" not in json.loads((out / "sr_x2.json").read_text())


def test_benchmark_tta_adds_the_plus_rows(tmp_path, tiny_zoo, capsys):
    flat = tmp_path / "Flat2"
    _make_layout(flat, "flat", 2, with_lr=False)
    out = tmp_path / "report"
    argv = ["benchmark", "--task", "sr_x2", "-m", "tiny-hat", "-d", str(flat), "-o", str(out), "-q"]
    assert main([*argv, "--tta", "--no-baselines"]) == 0
    results = json.loads((out / "sr_x2.json").read_text())
    assert set(results["models"]) == {"tiny-hat", "tiny-hat+"}
    plain, ensembled = (results["models"][k]["datasets"]["Flat2"] for k in ("tiny-hat", "tiny-hat+"))
    assert plain["psnr_y"] != ensembled["psnr_y"]
    assert "x8 self-ensemble" in results["models"]["tiny-hat+"]["display_name"]
