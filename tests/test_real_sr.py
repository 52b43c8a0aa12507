"""Real-world SR training (restorer/training/real_sr.py): Real-ESRGAN's second-order degradation on the
CPU, fixed-seed validation pairs shared with weights/eval_real_sr.py, the device-agnostic pair pool,
smoke trainings of both model classes (the GAN one under the official Real-HAT-GAN names), and the
bundled recipes."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from skimage import data

from conftest import TINY_HAT

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "options" / "train" / "bundled_CRAFT_real_SRx4_corpus.yml"
GAN_RECIPE = REPO / "options" / "train" / "bundled_CRAFT_real_SRx4_corpus_gan.yml"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real_sr():
    from restorer.training import compat, register_all

    compat.apply()
    register_all()
    from restorer.training import real_sr

    return real_sr


def _write_photos(folder: Path, size: tuple[int, int] = (128, 128), count: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    sources = [data.astronaut(), data.coffee(), data.chelsea()]
    paths = []
    for i in range(count):
        rgb = sources[i % len(sources)][20 : 20 + h, 30 + 7 * i : 30 + 7 * i + w]
        paths.append(folder / f"photo{i}.png")
        cv2.imwrite(str(paths[-1]), rgb[..., ::-1])
    return paths


def _hr(size: int = 128) -> torch.Tensor:
    return torch.from_numpy(data.astronaut()[:size, 100 : 100 + size].transpose(2, 0, 1).copy()).float() / 255


# ------------------------------------------------------------------------------------------------
# The degradation
# ------------------------------------------------------------------------------------------------


def test_degradation_runs_on_the_cpu_and_a_seed_fixes_it(real_sr):
    hr = _hr()
    lq = real_sr.degrade_with_seed(hr, seed=3)
    assert lq.shape == (3, 32, 32) and lq.device.type == "cpu"
    assert 0.0 <= float(lq.min()) and float(lq.max()) <= 1.0
    torch.testing.assert_close(lq * 255, (lq * 255).round(), rtol=0, atol=1e-4)  # 8-bit values
    assert torch.equal(lq, real_sr.degrade_with_seed(hr, seed=3))
    assert not torch.equal(lq, real_sr.degrade_with_seed(hr, seed=4))
    # it is a degraded picture of the photo, not noise: closer to its bicubic shrink than to others
    small = torch.nn.functional.interpolate(hr[None], scale_factor=0.25, mode="area", antialias=False)[0]
    assert float((lq - small).abs().mean()) < 0.5 * float((lq - small.flip(-1)).abs().mean())


def test_a_seeded_degradation_leaves_the_global_random_states_alone(real_sr):
    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = draws()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    real_sr.degrade_with_seed(_hr(96), seed=9)
    assert draws() == expected


def test_batched_degradation_and_kernels(real_sr):
    sampler = real_sr.KernelSampler()
    random.seed(0), np.random.seed(0)
    drawn = [sampler.sample() for _ in range(30)]
    for kernels in drawn:
        assert set(kernels) == {"kernel1", "kernel2", "sinc_kernel"}
        for k in kernels.values():
            assert k.shape == (21, 21) and k.dtype == torch.float32
            assert abs(float(k.sum()) - 1.0) < 1e-4
    assert any(not torch.equal(d["sinc_kernel"], drawn[0]["sinc_kernel"]) for d in drawn)
    batch = torch.stack([_hr(96), _hr(96).flip(-1)])
    stacked = {key: torch.stack([drawn[i][key] for i in range(2)]) for key in drawn[0]}
    out = real_sr.SecondOrderDegradation(4)(batch, **stacked)
    assert out.shape == (2, 3, 24, 24)


def test_separable_usm_matches_basicsr(real_sr):
    from basicsr.utils import USMSharp

    x = torch.stack([_hr(96), _hr(96).flip(-2)])
    ours, theirs = real_sr.SeparableUSMSharp()(x), USMSharp()(x)
    assert float((theirs - x).abs().max()) > 0.05  # it does sharpen
    assert float((ours - theirs).abs().max()) < 1e-3
    assert float((ours - theirs).abs().mean()) < 1e-5
    assert set(real_sr.SeparableUSMSharp().state_dict()) == set(USMSharp().state_dict())


def test_pair_pool_mixes_batches_and_keeps_pairs_together(real_sr):
    pool = real_sr.TrainingPairPool(4)
    batches = [torch.full((2, 1, 2, 2), float(i)) for i in range(6)]
    seen = []
    for i, lq in enumerate(batches):
        out_lq, out_gt = pool.exchange(lq, lq * 10 + 1)
        assert torch.equal(out_gt, out_lq * 10 + 1)
        seen.append(sorted(out_lq[:, 0, 0, 0].tolist()))
        if i < 2:  # filling: the batch trains as it is
            assert torch.equal(out_lq, lq)
        else:  # from the pool: earlier pairs
            assert max(seen[-1]) < i
    assert pool.lq.device == batches[0].device
    with pytest.raises(ValueError, match="multiple of the batch size"):
        real_sr.TrainingPairPool(5).exchange(batches[0], batches[0])
    assert real_sr.TrainingPairPool(0).exchange(batches[1], batches[2])[0] is batches[1]


# ------------------------------------------------------------------------------------------------
# Registry, datasets and the evaluation set
# ------------------------------------------------------------------------------------------------


def test_names_official_option_files_use_resolve_to_ours(real_sr):
    from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

    for name in ("RealESRNetModel", "RealHATMSEModel", "RealDRCTMSEModel"):
        model = MODEL_REGISTRY.get(name)
        assert issubclass(model, real_sr.RealSRNetModel) and not issubclass(model, real_sr.RealSRGANModel)
    for name in ("RealESRGANModel", "RealHATGANModel", "RealDRCTGANModel"):
        assert issubclass(MODEL_REGISTRY.get(name), real_sr.RealSRGANModel)
    assert issubclass(DATASET_REGISTRY.get("RealESRGANDataset"), real_sr.RealSRDataset)
    # BasicSR's own (CUDA-only) classes stay reachable under their suffixed names
    assert "RealESRNetModel_basicsr" in MODEL_REGISTRY and "RealESRGANDataset_basicsr" in DATASET_REGISTRY


def test_training_dataset_items(real_sr, tmp_path):
    paths = _write_photos(tmp_path / "hr", size=(72, 100), count=2)
    opt = {"dataroot_gt": str(tmp_path / "hr"), "scale": 4, "crop_pad_size": 96, "use_rot": True}
    dataset = real_sr.RealSRDataset(opt)
    item = dataset[0]
    assert item["gt"].shape == (3, 96, 96)  # padded up to the square
    for key in ("kernel1", "kernel2", "sinc_kernel"):
        assert item[key].shape == (21, 21)
    (tmp_path / "meta.txt").write_text(f"{paths[1].name} (72,100,3)\n", encoding="utf-8")
    only = real_sr.RealSRDataset({**opt, "meta_info": str(tmp_path / "meta.txt")})
    assert only.paths == [paths[1]]
    with pytest.raises(ValueError, match="multiple of the scale"):
        real_sr.RealSRDataset({**opt, "crop_pad_size": 98})
    with pytest.raises(ValueError, match="lmdb"):
        real_sr.RealSRDataset({**opt, "io_backend": {"type": "lmdb"}})


def test_validation_pairs_are_the_evaluation_set(real_sr, tmp_path):
    sys.path.insert(0, str(REPO / "weights"))
    import eval_real_sr

    _write_photos(tmp_path / "val", size=(100, 92), count=2)
    val = real_sr.RealSRValDataset({"dataroot_gt": str(tmp_path / "val"), "scale": 4, "seed": 5})
    names, written = eval_real_sr.prepare_set(tmp_path / "val", tmp_path / "set", seed=5)
    assert written and names == ["photo0.png", "photo1.png"]
    for i, name in enumerate(names):
        item = val[i]
        assert item["gt"].shape == (3, 100, 92) and item["lq"].shape == (3, 25, 23)
        lr = cv2.imread(str(tmp_path / "set" / "LR" / name))[..., ::-1]
        np.testing.assert_array_equal(lr, (item["lq"].numpy().transpose(1, 2, 0) * 255).round())
    before = (tmp_path / "set" / "LR" / "photo0.png").stat().st_mtime_ns
    assert eval_real_sr.prepare_set(tmp_path / "val", tmp_path / "set", seed=5) == (names, False)
    assert (tmp_path / "set" / "LR" / "photo0.png").stat().st_mtime_ns == before
    assert eval_real_sr.prepare_set(tmp_path / "val", tmp_path / "set", seed=6)[1]  # new seed: rewritten
    report = eval_real_sr.evaluate(tmp_path / "set", names, {"bicubic": eval_real_sr.bicubic}, "off")
    bicubic = report["results"]["bicubic"]
    assert 15 < bicubic["psnr_y"] < 40 and bicubic["lpips"] is None
    assert bicubic["niqe"] is None  # 100 x 92 px: smaller than one NIQE block after the crop
    assert set(bicubic["per_image"]) == set(names)


def test_perceptual_loss_without_vgg19_is_a_clear_error(real_sr, tmp_path, monkeypatch):
    import basicsr.archs.vgg_arch as vgg_arch

    from restorer import metrics
    from restorer import weights as rw
    from restorer.errors import WeightsNotFoundError

    monkeypatch.chdir(tmp_path)  # BasicSR's relative experiments/pretrained_models/ path is absent here
    monkeypatch.setattr(metrics, "hub_checkpoint_dir", lambda: tmp_path / "hub")
    monkeypatch.setattr(rw, "find_auxiliary", lambda name: None)
    perceptual = {"type": "PerceptualLoss", "vgg_type": "vgg19"}
    with pytest.raises(WeightsNotFoundError, match="vgg19-dcbb9e9d.pth"):
        with real_sr._vgg19_for_basicsr(perceptual):
            pass
    copy = tmp_path / "vgg19-dcbb9e9d.pth"
    copy.write_bytes(b"")
    monkeypatch.setattr(rw, "find_auxiliary", lambda name: copy)
    original = vgg_arch.VGG_PRETRAIN_PATH
    with real_sr._vgg19_for_basicsr(perceptual):
        assert vgg_arch.VGG_PRETRAIN_PATH == str(copy)
    assert vgg_arch.VGG_PRETRAIN_PATH == original
    with real_sr._vgg19_for_basicsr(None):  # no perceptual loss: nothing needed
        pass


# ------------------------------------------------------------------------------------------------
# Smoke trainings (BasicSR's pipeline in a subprocess, as `restorer train` runs it)
# ------------------------------------------------------------------------------------------------

KERNEL_KEYS = {
    "blur_kernel_size": 21,
    "kernel_list": ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"],
    "kernel_prob": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sinc_prob": 0.1,
    "blur_sigma": [0.2, 3],
    "betag_range": [0.5, 4],
    "betap_range": [1, 2],
    "blur_kernel_size2": 21,
    "kernel_list2": ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"],
    "kernel_prob2": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sinc_prob2": 0.1,
    "blur_sigma2": [0.2, 1.5],
    "betag_range2": [0.5, 4],
    "betap_range2": [1, 2],
    "final_sinc_prob": 0.8,
}


def _options(name: str, model_type: str, total_iter: int) -> dict:
    return {
        "name": name,
        "model_type": model_type,
        "scale": 4,
        "num_gpu": 0,
        "manual_seed": 0,
        "gt_usm": True,
        "gt_size": 64,
        "queue_size": 4,
        "datasets": {
            "train": {
                "name": "mini",
                "type": "RealSRDataset",
                "dataroot_gt": "hr",
                "crop_pad_size": 96,
                "use_hflip": True,
                "use_rot": False,
                "num_worker_per_gpu": 0,
                "batch_size_per_gpu": 2,
                "dataset_enlarge_ratio": 10,
            },
            "val": {"name": "val", "type": "RealSRValDataset", "dataroot_gt": "val", "seed": 0},
        },
        "network_g": {**TINY_HAT, "upscale": 4},
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {
            "ema_decay": 0.9,
            "optim_g": {"type": "AdamW", "lr": 1e-3, "weight_decay": 0, "betas": [0.9, 0.99]},
            "scheduler": {"type": "MultiStepLR", "milestones": [1000], "gamma": 0.5},
            "total_iter": total_iter,
            "warmup_iter": -1,
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
        },
        "val": {
            "val_freq": 2,
            "save_img": False,
            "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 4, "test_y_channel": True}},
        },
        "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "use_tb_logger": False},
    }


@pytest.fixture
def workdir(tmp_path):
    _write_photos(tmp_path / "hr", size=(128, 128), count=3)
    _write_photos(tmp_path / "val", size=(64, 64), count=1)
    return tmp_path


def _train(workdir: Path, options: dict, *extra: str) -> str:
    opt_file = workdir / f"{options['name']}_{options['train']['total_iter']}.yml"
    opt_file.write_text(yaml.safe_dump(options), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "restorer", "train", "-opt", str(opt_file), *extra],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_psnr_stage_trains_saves_validates_and_resumes(workdir):
    log = _train(workdir, _options("real", "RealSRNetModel", total_iter=2))
    losses = [float(v) for v in re.findall(r"l_pix: ([0-9.e+-]+)", log)]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert re.search(r"# psnr: \d+\.\d+", log)
    models = workdir / "experiments/real/models"
    ckpt = torch.load(models / "net_g_latest.pth", weights_only=True)
    assert set(ckpt) == {"params", "params_ema"}
    assert (workdir / "experiments/real/training_states/2.state").is_file()

    log = _train(workdir, _options("real", "RealSRNetModel", total_iter=3), "--auto_resume")
    assert "Resuming training from epoch" in log and "iter: 2" in log
    assert re.search(r"iter:\s+3,", log)


def test_gan_stage_runs_under_the_official_real_hat_gan_names(workdir):
    """The keys of train_Real_HAT_GAN_SRx4_finetune_from_mse_model.yml with its type names as they are
    (model_type RealHATGANModel, RealESRGANDataset with io_backend and meta_info_file, num_gpu auto,
    the USM switches, UNetDiscriminatorSN, vanilla GAN loss); sizes tiny, no perceptual loss (its VGG19
    file is not here) and no EMA."""
    options = _options("real_gan", "RealHATGANModel", total_iter=2)
    options.pop("gt_usm")
    options.update({"num_gpu": "auto", "l1_gt_usm": True, "percep_gt_usm": True, "gan_gt_usm": False})
    options["datasets"]["train"].update(
        {"type": "RealESRGANDataset", "meta_info_file": "nope.txt", "io_backend": {"type": "disk"}}
    )
    options["datasets"]["train"].update(KERNEL_KEYS)
    options["network_d"] = {
        "type": "UNetDiscriminatorSN",
        "num_in_ch": 3,
        "num_feat": 8,
        "skip_connection": True,
    }
    options["path"]["param_key_g"] = "params_ema"
    train = options["train"]
    train.pop("ema_decay")
    train["optim_g"] = {"type": "Adam", "lr": 1e-4, "weight_decay": 0, "betas": [0.9, 0.99]}
    train["optim_d"] = {"type": "Adam", "lr": 1e-4, "weight_decay": 0, "betas": [0.9, 0.99]}
    train["gan_opt"] = {
        "type": "GANLoss",
        "gan_type": "vanilla",
        "real_label_val": 1.0,
        "fake_label_val": 0.0,
        "loss_weight": 0.1,
    }
    train.update({"net_d_iters": 1, "net_d_init_iters": 0})
    if torch.cuda.is_available():
        pytest.skip("num_gpu: auto would train on the GPU here")
    log = _train(workdir, options)
    for key in ("l_g_pix", "l_g_gan", "l_d_real", "l_d_fake"):
        assert len(re.findall(rf"{key}: ([0-9.e+-]+)", log)) == 2, key
    models = workdir / "experiments/real_gan/models"
    assert set(torch.load(models / "net_g_latest.pth", weights_only=True)) == {"params"}
    assert (models / "net_d_latest.pth").is_file()


# ------------------------------------------------------------------------------------------------
# The bundled recipes
# ------------------------------------------------------------------------------------------------


def _recipe(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", [RECIPE, GAN_RECIPE], ids=["psnr", "gan"])
def test_recipes_use_the_official_degradation_and_registered_classes(real_sr, path):
    from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

    opt = _recipe(path)
    assert {k: opt[k] for k in real_sr.DEGRADATION_DEFAULTS} == dict(real_sr.DEGRADATION_DEFAULTS)
    train = opt["datasets"]["train"]
    assert {k: train[k] for k in real_sr.KERNEL_DEFAULTS} == dict(real_sr.KERNEL_DEFAULTS)
    assert opt["model_type"] in MODEL_REGISTRY
    assert train["type"] in DATASET_REGISTRY and opt["datasets"]["val"]["type"] == "RealSRValDataset"
    assert opt["num_gpu"] == 0 and opt["scale"] == 4
    assert opt["queue_size"] % train["batch_size_per_gpu"] == 0
    assert train["crop_pad_size"] % 4 == 0 and train["crop_pad_size"] > opt["gt_size"]
    assert opt["gt_size"] % 4 == 0
    assert opt["datasets"]["val"]["dataroot_gt"] == "datasets/corpus/val"


def test_psnr_recipe_builds_craft_and_loads_its_start_strictly(real_sr):
    from safetensors.torch import load_file

    from restorer.archs import build_network

    opt = _recipe(RECIPE)
    assert opt["gt_size"] // opt["scale"] == 31  # CRAFT runs 31-pixel patches as 32 (32 would be 48)
    assert opt["train"]["pixel_opt"]["type"] == "L1Loss" and "perceptual_opt" not in opt["train"]
    net = build_network(dict(opt["network_g"]))
    assert sum(p.numel() for p in net.parameters()) == 753_344  # CRAFT x4, published configuration
    assert opt["path"]["strict_load_g"] is True
    net.load_state_dict(load_file(str(REPO / opt["path"]["pretrain_network_g"])), strict=True)
    with torch.inference_mode():
        assert net.eval()(torch.rand(1, 3, 31, 31)).shape == (1, 3, 124, 124)


def test_gan_recipe_builds_its_discriminator_for_its_patch_size(real_sr):
    # Training builds through BasicSR's registry, which also holds its own discriminators.
    from basicsr.archs import build_network

    opt = _recipe(GAN_RECIPE)
    assert opt["network_g"] == _recipe(RECIPE)["network_g"]
    assert opt["gt_size"] % 8 == 0  # the U-Net discriminator halves the size three times
    assert opt["path"]["pretrain_network_g"].startswith("experiments/bundled_CRAFT_real_SRx4_corpus/")
    net_d = build_network(dict(opt["network_d"]))
    with torch.inference_mode():
        assert net_d(torch.rand(1, 3, opt["gt_size"], opt["gt_size"])).shape == (1, 1, 120, 120)
    assert set(opt["train"]) >= {"pixel_opt", "perceptual_opt", "gan_opt", "optim_d"}
