"""Synthetic degradations (Gaussian noise, k-space undersampling and truncation, bicubic, low-dose CT,
low-count PET) and the datasets that make training pairs from clean or paired data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from skimage import data

from restorer import medical
from restorer.errors import UsageError
from restorer.training import degradations as deg
from restorer.training.restoration_data import PairedSliceDataset, SyntheticPairDataset


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------------------------
# Degradations
# ----------------------------------------------------------------------------------------------------


def test_gaussian_noise_level_seed_and_clipping():
    clean = np.full((128, 128, 3), 0.5, np.float32)
    noisy = deg.gaussian_noise(clean, 25, _rng(1))
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    assert np.std(noisy - clean) == pytest.approx(25 / 255, rel=0.02)
    assert abs(np.mean(noisy - clean)) < 0.002
    np.testing.assert_array_equal(noisy, deg.gaussian_noise(clean, 25, _rng(1)))  # fixed seed, fixed noise
    assert not np.array_equal(noisy, deg.gaussian_noise(clean, 25, _rng(2)))
    dark = deg.gaussian_noise(np.zeros((64, 64), np.float32), 50, _rng(0))
    assert dark.min() < -0.2  # the papers' protocol: not clipped
    eight_bit = deg.gaussian_noise(np.zeros((64, 64), np.float32), 50, _rng(0), quantize=True)
    assert eight_bit.min() == 0.0 and np.allclose(eight_bit * 255, np.round(eight_bit * 255), atol=1e-4)


def test_kspace_mask_keeps_the_centre_and_the_expected_share():
    masks = np.stack([deg.kspace_mask(320, 4, 0.08, _rng(seed)) for seed in range(200)])
    centre = slice((320 - 26 + 1) // 2, (320 - 26 + 1) // 2 + 26)
    assert masks[:, centre].all()
    assert masks.mean() == pytest.approx(1 / 4, abs=0.01)
    equispaced = deg.kspace_mask(64, 4, 0.125, _rng(0), pattern="equispaced")
    assert equispaced[28:36].all() and 16 <= equispaced.sum() <= 24
    with pytest.raises(ValueError, match="keeps more lines"):
        deg.kspace_mask(64, 8, 0.5, _rng(0))


def test_kspace_undersampling_removes_information_unless_fully_sampled():
    image = data.camera()[::4, ::4].astype(np.float32) / 255
    np.testing.assert_allclose(deg.kspace_undersample(image, 1, 0.5, _rng(0)), image, atol=1e-5)
    under = deg.kspace_undersample(image, 4, 0.08, _rng(0))
    assert under.shape == image.shape and under.dtype == np.float32 and under.min() >= 0
    assert 0.01 < np.sqrt(np.mean((under - image) ** 2)) < 0.2
    # the error is aliasing along the undersampled (column) direction: rows stay smooth
    assert not np.allclose(under, deg.kspace_undersample(image, 4, 0.08, _rng(1)))


def test_kspace_truncation_is_a_low_pass_on_the_same_grid():
    rows, cols = np.mgrid[0:64, 0:48]
    low = 2 + np.cos(2 * np.pi * 5 * rows / 64) + 0.5 * np.sin(2 * np.pi * 3 * cols / 48)
    high = 2 + np.cos(2 * np.pi * 20 * rows / 64)  # above the x2 cut-off (16 cycles)
    np.testing.assert_allclose(deg.kspace_truncate(low, 2), low, atol=1e-5)
    np.testing.assert_allclose(deg.kspace_truncate(high, 2), 2.0, atol=1e-5)
    image = data.camera()[::4, ::4].astype(np.float32) / 255
    truncated = deg.kspace_truncate(image, 4)
    assert truncated.shape == image.shape
    bright = deg.kspace_truncate(1 + image, 4)  # away from 0, where the magnitude step changes nothing
    np.testing.assert_allclose(deg.kspace_truncate(bright, 4), bright, atol=1e-5)  # a projection
    small = deg.kspace_downsample(image, 4)
    assert small.shape == (32, 32) and small.mean() == pytest.approx(image.mean(), abs=2e-3)
    np.testing.assert_allclose(deg.kspace_zero_fill_upsample(small, 4), truncated, atol=1e-6)
    up_down = deg.kspace_downsample(deg.kspace_zero_fill_upsample(1 + small, 4), 4)
    np.testing.assert_allclose(up_down, 1 + small, atol=1e-5)
    # zero-filling keeps the first pixel centre: every 2nd sample of an up-sampled band-limited image
    np.testing.assert_allclose(deg.kspace_zero_fill_upsample(low, 2)[::2, ::2], low, atol=1e-5)
    colour = deg.kspace_truncate(np.stack([image, 1 - image], axis=2), 2)
    assert colour.shape == (128, 128, 2)
    with pytest.raises(ValueError, match="multiple of the factor"):
        deg.kspace_downsample(np.zeros((30, 32)), 4)


def test_bicubic_degradation():
    image = data.camera()[::4, ::4].astype(np.float32) / 255
    assert deg.bicubic_downsample(image, 4).shape == (32, 32)
    blurred = deg.bicubic_degrade(image, 2)
    assert blurred.shape == image.shape
    assert 0.005 < np.sqrt(np.mean((blurred - image) ** 2)) < 0.1
    np.testing.assert_allclose(
        deg.bicubic_degrade(np.full((32, 32), 300.0), 2), 300.0, rtol=1e-5
    )  # HU: no clip


def _disk_phantom(n: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:n, 0:n] - n / 2 + 0.5
    radius = np.hypot(rows, cols)
    return np.where(radius < 0.45 * n, 40.0, -1000.0), radius


@pytest.mark.parametrize("method", ["projection", "image"])
def test_ct_low_dose_noise_grows_as_dose_falls(method):
    phantom, radius = _disk_phantom(64)
    np.testing.assert_array_equal(deg.ct_low_dose(phantom, 1.0, _rng(0), method=method), phantom)
    inside = radius < 0.3 * 64
    stds = {}
    for dose in (0.5, 0.25):
        noise = np.concatenate(
            [
                (deg.ct_low_dose(phantom, dose, _rng(seed), method=method) - phantom)[inside]
                for seed in range(8)
            ]
        )
        assert abs(noise.mean()) < 0.1 * noise.std()  # unbiased
        stds[dose] = noise.std()
    # inserted variance is (1/dose - 1) * exp(p) / I0: quarter vs half dose = sqrt(3 / 1)
    assert stds[0.25] / stds[0.5] == pytest.approx(np.sqrt(3), rel=0.08)
    fewer_photons = deg.ct_low_dose(
        phantom, 0.25, _rng(0), method=method, photons=deg.DEFAULT_PHOTONS[method] / 4
    )
    assert (fewer_photons - phantom)[inside].std() == pytest.approx(2 * stds[0.25], rel=0.15)


def test_ct_low_dose_projection_noise_reaches_air_and_image_noise_does_not():
    phantom, radius = _disk_phantom(64)
    air = radius > 0.48 * 64
    projection = deg.ct_low_dose(phantom, 0.25, _rng(0)) - phantom
    image = deg.ct_low_dose(phantom, 0.25, _rng(0), method="image") - phantom
    assert projection[air].std() > 0.3 * projection[~air].std()  # streaks cross the whole field
    # image method: each pixel its own ray through 200 mm, so std ratio air / tissue = exp(-p_tissue / 2)
    p_tissue = deg.MU_WATER_PER_MM * 1.04 * 200.0
    assert image[air].std() / image[radius < 0.4 * 64].std() == pytest.approx(np.exp(-p_tissue / 2), rel=0.1)
    with pytest.raises(ValueError, match="dose_fraction"):
        deg.ct_low_dose(phantom, 0.0, _rng(0))


def test_pet_low_count_is_unbiased_with_poisson_variance():
    suv = np.full((256, 256), 4.0)
    for fraction in (1.0, 0.25):
        low = deg.pet_low_count(suv, fraction, _rng(0), counts_per_unit=10.0)
        assert low.mean() == pytest.approx(4.0, rel=0.01)
        assert low.var() == pytest.approx(4.0 / (fraction * 10.0), rel=0.05)


def test_build_degradation_from_options():
    noise = deg.build_degradation({"type": "gaussian_noise", "sigma": 15})
    assert noise.domain == "unit" and noise.pointwise
    np.testing.assert_array_equal(
        noise(np.zeros((8, 8), np.float32), _rng(3)), deg.gaussian_noise(np.zeros((8, 8)), 15, _rng(3))
    )
    assert deg.build_degradation({"type": "ct_low_dose", "dose_fraction": 0.25}).domain == "physical"
    assert not deg.build_degradation({"type": "ct_low_dose", "dose_fraction": 0.25}).pointwise
    assert deg.build_degradation({"type": "ct_low_dose", "dose_fraction": 0.25, "method": "image"}).pointwise
    assert not deg.build_degradation({"type": "kspace_truncate", "factor": 2}).pointwise
    with pytest.raises(UsageError, match="Unknown degradation"):
        deg.build_degradation({"type": "jpeg"})
    with pytest.raises(UsageError, match="sigma"):
        deg.build_degradation({"type": "gaussian_noise"})
    with pytest.raises(UsageError, match="its options are"):
        deg.build_degradation({"type": "kspace_truncate", "factor": 2, "scale": 2})


# ----------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "astronaut.png"), data.astronaut()[::4, ::4, ::-1])  # 128 x 128 RGB
    cv2.imwrite(str(folder / "camera.png"), data.camera()[::4, ::4])  # 128 x 128 gray
    return folder


def _options(root, phase="train", **extra):
    options = {"name": "t", "phase": phase, "scale": 1, "dataroot_gt": str(root)}
    options["degradation"] = {"type": "gaussian_noise", "sigma": 25}
    if phase == "train":
        options.update(gt_size=48, use_hflip=True, use_rot=True)
    options.update(extra)
    return options


def test_synthetic_pairs_from_photos(photos):
    train = SyntheticPairDataset(_options(photos))
    assert len(train) == 2
    item = train[0]
    assert set(item) == {"lq", "gt", "lq_path", "gt_path"}
    assert item["lq"].shape == item["gt"].shape == (3, 48, 48)
    assert item["lq_path"].endswith("astronaut.png")
    assert float((item["lq"] - item["gt"]).std()) == pytest.approx(25 / 255, rel=0.1)

    val = SyntheticPairDataset(_options(photos, phase="val"))
    first, again = val[1], val[1]
    assert first["lq"].shape == (3, 128, 128)  # whole image, gray repeated to 3 channels
    assert np.array_equal(first["lq"].numpy(), again["lq"].numpy())  # deterministic validation
    assert np.array_equal(first["gt"][0].numpy(), first["gt"][2].numpy())
    assert not np.array_equal(first["lq"][0].numpy(), first["lq"][2].numpy())  # noise per channel
    other_seed = SyntheticPairDataset(_options(photos, phase="val", val_seed=1))[1]
    assert not np.array_equal(first["lq"].numpy(), other_seed["lq"].numpy())

    gray = SyntheticPairDataset(_options(photos, channels=1))[0]
    assert gray["lq"].shape == (1, 48, 48)
    mixed = SyntheticPairDataset(_options(photos, gray_probability=1.0))[0]
    lq = mixed["lq"].numpy()
    assert np.array_equal(lq[0], lq[1]) and np.array_equal(lq[0], lq[2])  # gray image, gray noise


def test_synthetic_pairs_from_medical_volumes(tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    volume = np.random.default_rng(0).uniform(-1000, 1000, size=(64, 64, 3)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / "a.nii.gz"))
    np.save(folder / "b.npy", np.full((2, 64, 64), 40.0, np.float32))  # two slices, in HU
    options = _options(folder, phase="val", modality="CT")
    options["degradation"] = {"type": "ct_low_dose", "dose_fraction": 0.5, "method": "image"}
    dataset = SyntheticPairDataset(options)
    assert len(dataset) == 5
    assert dataset[0]["gt_path"].endswith("a_0000.nii.gz") and dataset[4]["gt_path"].endswith("b_0001.npy")
    item = dataset[1]
    expected = np.clip((volume[:, :, 1].T.astype(np.float32) + 1024) / 4096, 0, 1)
    np.testing.assert_allclose(item["gt"][0].numpy(), expected, atol=1e-6)
    assert item["lq"].shape == (1, 64, 64) and not np.array_equal(item["lq"].numpy(), item["gt"].numpy())
    assert len(SyntheticPairDataset({**options, "max_items": 2})) == 2

    mri = _options(folder, modality="MRI", gt_size=32)
    mri["degradation"] = {"type": "kspace_truncate", "factor": 2}
    pair = SyntheticPairDataset(mri)[3]
    assert pair["lq"].shape == (1, 32, 32)
    odd = tmp_path / "odd"
    odd.mkdir()
    np.save(odd / "o.npy", np.full((67, 66), 900.0, np.float32))  # not a multiple of the factor 4
    mri4 = {**mri, "dataroot_gt": str(odd), "degradation": {"type": "kspace_truncate", "factor": 4}}
    assert SyntheticPairDataset(mri4)[0]["lq"].shape == (1, 32, 32)
    assert SyntheticPairDataset({**mri4, "phase": "val"})[0]["lq"].shape == (1, 64, 64)
    with pytest.raises(UsageError, match="set modality"):
        SyntheticPairDataset({**options, "modality": None})
    with pytest.raises(UsageError, match="scale: 1"):
        SyntheticPairDataset({**options, "scale": 2})


def test_paired_slices_with_modality_from_the_folder(tmp_path):
    root = tmp_path / "All-in-One"
    rng = np.random.default_rng(0)
    for modality, low, high in (("CT", -1024, 3072), ("PET", 0, 20)):
        for part in ("LQ", "HQ"):
            folder = root / modality / "train" / part
            folder.mkdir(parents=True)
            np.save(folder / "p1.npy", rng.uniform(low, high, size=(40, 40)).astype(np.float32))
    options = {
        "name": "pairs",
        "phase": "train",
        "scale": 1,
        "dataroot_lq": [str(root / m / "train" / "LQ") for m in ("CT", "PET")],
        "dataroot_gt": [str(root / m / "train" / "HQ") for m in ("CT", "PET")],
        "modality": "auto",
        "gt_size": 32,
    }
    dataset = PairedSliceDataset(options)
    assert len(dataset) == 2 and [p[2] for p in dataset.pairs] == ["CT", "PET"]
    item = dataset[1]
    assert item["lq"].shape == item["gt"].shape == (1, 32, 32)
    assert 0.0 <= float(item["gt"].min()) and float(item["gt"].max()) <= 1.0
    pet_gt = np.load(root / "PET" / "train" / "HQ" / "p1.npy") / 20.0
    assert any(
        np.allclose(item["gt"][0].numpy(), pet_gt[t : t + 32, s : s + 32], atol=1e-6)
        for t in range(9)
        for s in range(9)
    )  # the crop of the PET target, normalised by the PET range

    (root / "CT" / "train" / "LQ" / "extra.npy").write_bytes(
        (root / "CT" / "train" / "LQ" / "p1.npy").read_bytes()
    )
    with pytest.raises(UsageError, match="no high-quality counterpart"):
        PairedSliceDataset(options)


def test_paired_slices_upsample_small_inputs(tmp_path):
    for part, size in (("LQ", 16), ("HQ", 32)):
        (tmp_path / part).mkdir()
        np.save(tmp_path / part / "s.npy", np.full((size, size), 1000.0, np.float32))
    options = {
        "name": "sr",
        "phase": "val",
        "scale": 1,
        "dataroot_lq": str(tmp_path / "LQ"),
        "dataroot_gt": str(tmp_path / "HQ"),
        "modality": "MRI",
    }
    with pytest.raises(UsageError, match="upsample_lq"):
        PairedSliceDataset(options)[0]
    item = PairedSliceDataset({**options, "upsample_lq": "kspace"})[0]
    assert item["lq"].shape == (1, 32, 32)
    np.testing.assert_allclose(item["lq"].numpy(), 1000.0 / 4095.0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Restore-RWKV training option files
# ----------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
TRAIN_OPTIONS = REPO / "options" / "train"
RECIPES = sorted(p.name for p in TRAIN_OPTIONS.glob("RestoreRWKV_*.yml"))
BUNDLED = "bundled_RestoreRWKV_denoise_sigma25_cpu.yml"


def _parse(path: Path, root: Path, monkeypatch) -> dict:
    """The file through BasicSR's own option parser, as ``restorer train -opt`` reads it."""
    from restorer.training import register_all

    register_all()
    from basicsr.utils.options import parse_options

    monkeypatch.setattr(sys, "argv", ["train", "-opt", str(path)])
    opt, _ = parse_options(str(root), is_train=True)
    return opt


def _fake_data(root: Path, dataset: dict) -> None:
    """Tiny data of the kind ``dataset`` expects, under ``root`` at its data paths."""
    modality = str(dataset.get("modality") or "none").upper()
    rng = np.random.default_rng(0)
    if "modalities" in dataset:  # the official layout of several modalities
        root_name, split = dataset["dataroot"], dataset["split"]
        dataset["dataroot_lq"] = [f"{root_name}/{m}/{split}/LQ" for m in dataset["modalities"]]
        dataset["dataroot_gt"] = [f"{root_name}/{m}/{split}/HQ" for m in dataset["modalities"]]
        dataset["dataroot"] = str(root / root_name)
    for key in ("dataroot_gt", "dataroot_lq"):
        if key not in dataset:
            continue
        folders = dataset[key] if isinstance(dataset[key], list) else [dataset[key]]
        for folder in folders:
            target = root / folder
            target.mkdir(parents=True, exist_ok=True)
            if dataset["type"] == "PairedSliceDataset":
                name = next(m for m in ("CT", "PET", "MRI") if m in Path(folder).parts)
                low, high = medical.MODALITY_RANGES[name]
                np.save(target / "s1.npy", rng.uniform(low, high, size=(2, 136, 136)).astype(np.float32))
            elif modality == "MRI":
                volume = rng.uniform(0, 4095, size=(136, 136, 2)).astype(np.int16)
                nib.save(nib.Nifti1Image(volume, np.eye(4)), str(target / "vol.nii.gz"))
            else:
                cv2.imwrite(str(target / "photo.png"), data.astronaut()[:136, :136, ::-1])
        dataset[key] = (
            [str(root / f) for f in folders] if isinstance(dataset[key], list) else str(root / folders[0])
        )
    if "modalities" in dataset:  # the dataset finds its folders from dataroot: test that path
        del dataset["dataroot_lq"], dataset["dataroot_gt"]


@pytest.mark.parametrize("name", [*RECIPES, BUNDLED])
def test_restore_rwkv_option_files_parse_and_their_datasets_build(name, tmp_path, monkeypatch):
    from basicsr.data import build_dataset
    from basicsr.utils.registry import MODEL_REGISTRY

    from restorer.archs.restore_rwkv_arch import DEFAULT_CONFIG, LIGHT_CONFIG

    opt = _parse(TRAIN_OPTIONS / name, tmp_path, monkeypatch)
    assert opt["name"] == Path(name).stem and opt["scale"] == 1
    assert opt["model_type"] == "RestorerSRModel" and opt["model_type"] in MODEL_REGISTRY
    network = dict(opt["network_g"])
    assert network.pop("type") == "Restore_RWKV"
    channels = network["inp_channels"]
    config = LIGHT_CONFIG if name == BUNDLED else DEFAULT_CONFIG
    assert network == {**config, "inp_channels": channels, "out_channels": channels}
    for phase, dataset in opt["datasets"].items():
        _fake_data(tmp_path, dataset)
        built = build_dataset(dataset)
        item = built[0]
        assert item["lq"].shape[0] == item["gt"].shape[0] == channels, (name, phase)
        if phase == "train":
            assert item["gt"].shape[1:] == (dataset["gt_size"],) * 2
        else:
            assert item["gt"].shape[1:] == (136, 136)
    if name != BUNDLED:  # the paper's recipe
        train = opt["train"]
        assert train["optim_g"] == {
            "type": "Adam",
            "lr": 2e-4,
            "weight_decay": 0,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
        }
        assert train["scheduler"] == {
            "type": "CosineAnnealingRestartLR",
            "periods": [300000],
            "restart_weights": [1],
            "eta_min": 1e-6,
        }
        assert train["total_iter"] == 300000 and train["ema_decay"] == 0
        assert train["pixel_opt"]["type"] == "L1Loss" and opt["val"]["val_freq"] == 1000
        assert (
            opt["datasets"]["train"]["batch_size_per_gpu"] == 4 and opt["datasets"]["train"]["gt_size"] == 128
        )


def test_restore_rwkv_task_recipes_cover_every_task():
    assert {
        "RestoreRWKV_ct_denoise.yml",
        "RestoreRWKV_mri_sr_x2.yml",
        "RestoreRWKV_mri_sr_x4.yml",
        "RestoreRWKV_pet_synthesis.yml",
        "RestoreRWKV_all_in_one.yml",
        "RestoreRWKV_denoise_sigma25_gray.yml",
        "RestoreRWKV_denoise_sigma25_color.yml",
    } <= set(RECIPES)
    mri4 = yaml.safe_load((TRAIN_OPTIONS / "RestoreRWKV_mri_sr_x4.yml").read_text())
    assert mri4["datasets"]["train"]["degradation"] == {"type": "kspace_truncate", "factor": 4}
    bundled = yaml.safe_load((TRAIN_OPTIONS / BUNDLED).read_text())
    assert bundled["datasets"]["train"]["degradation"] == {"type": "gaussian_noise", "sigma": 25}
    assert bundled["train"]["optim_g"]["type"] == "AdamW" and bundled["train"]["total_iter"] <= 5000
    assert bundled["datasets"]["train"]["dataroot_gt"] == "datasets/skimage_sr/train"


def test_bundled_denoise_recipe_trains_end_to_end(tmp_path):
    """The bundled CPU recipe through ``restorer train`` with tiny data, a tiny network, 2 iterations."""
    opt = yaml.safe_load((TRAIN_OPTIONS / BUNDLED).read_text())
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    cv2.imwrite(str(tmp_path / "train" / "astronaut.png"), data.astronaut()[::4, ::4, ::-1])
    cv2.imwrite(str(tmp_path / "val" / "chelsea.png"), data.chelsea()[:40, :48, ::-1])
    opt["datasets"]["train"].update(
        dataroot_gt="train", gt_size=32, num_worker_per_gpu=0, batch_size_per_gpu=2
    )
    for key in ("val_1", "val_2"):
        opt["datasets"][key]["dataroot_gt"] = "val"
    opt["network_g"].update(dim=4, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)
    opt["train"].update(total_iter=2, warmup_iter=-1)
    opt["val"]["val_freq"] = 2
    opt["logger"].update(print_freq=1, save_checkpoint_freq=2)
    (tmp_path / "opt.yml").write_text(yaml.safe_dump(opt))
    # register_all() does not list the dataset and arch modules yet: import them first
    code = (
        "import sys, restorer.training.restoration_data, restorer.archs.restore_rwkv_arch; "
        "from restorer.train import main; sys.exit(main(['-opt', 'opt.yml']))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "skimage_sr_val_color" in log and "skimage_sr_val_gray" in log and "psnr" in log
    saved = torch.load(
        tmp_path / "experiments" / opt["name"] / "models" / "net_g_latest.pth", weights_only=True
    )
    assert set(saved) == {"params", "params_ema"}
    assert saved["params"]["patch_embed.weight"].shape == (4, 3, 3, 3)
