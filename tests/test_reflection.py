"""Reflection-removal training: synthesis models, the synthetic and UHDRR datasets, the recipe's losses,
ERRNet's discriminator, and RRFormerModel on BasicSR's pipeline (CPU, tiny network, random VGG19)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from scipy.signal import convolve2d
from skimage import data

from restorer.training import reflection as rf
from restorer.training.reflection import (
    DiscriminatorVGG,
    ReflectionPixelLoss,
    ReflectionVGGLoss,
    SyntheticReflectionDataset,
    UHDRRDataset,
    blur_reflection_synthesis,
    evaluate_against_input,
    gradient_l1,
    physical_reflection_synthesis,
    rasgan_discriminator_loss,
    rasgan_generator_loss,
    vignette_kernel,
    vignette_reflection_synthesis,
)

REPO = Path(__file__).resolve().parent.parent
TINY_RRFORMER = {
    "type": "RRFormer",
    "n_feats": 16,
    "embed_dim": 24,
    "img_size": 64,
    "depths": [2],
    "num_heads": [2],
    "window_size": 8,
    "drop_path_rate": 0.0,
    "vgg_weights": "random",
}


def _float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


# ------------------------------------------------------------------------------------------------
# Synthesis
# ------------------------------------------------------------------------------------------------


def test_blur_model_without_overflow_is_a_zero_padded_gaussian_sum():
    t = _float(data.astronaut()[:64, :80]) * 0.4
    r = _float(data.coffee()[:64, :80]) * 0.4  # T + R_b stays below 1: no overflow correction
    rng = np.random.default_rng(0)
    sigma = np.random.default_rng(0).uniform(2.0, 5.0)  # the draw the model will make
    t_out, r_blur, m = blur_reflection_synthesis(t, r, rng)
    k = cv2.getGaussianKernel(11, sigma)
    expected = np.stack([convolve2d(r[..., c], k @ k.T, mode="same") for c in range(3)], axis=-1)
    np.testing.assert_allclose(r_blur, expected, atol=1e-5)
    np.testing.assert_array_equal(t_out, t)
    np.testing.assert_allclose(m, t + r_blur, atol=1e-6)
    assert m.max() <= 1.0


def test_blur_model_removes_overflow():
    t = _float(data.astronaut()[:64, :80])
    r = _float(data.coffee()[:64, :80])
    rng = np.random.default_rng(1)
    _, r_blur, m = blur_reflection_synthesis(t, r, rng, gamma_range=(1.3, 1.3))
    assert 0.0 <= m.min() and m.max() <= 1.0 and 0.0 <= r_blur.min() and r_blur.max() <= 1.0
    np.testing.assert_allclose(m, np.clip(t + r_blur, 0, 1), atol=1e-6)
    # the reflection was darkened by the overflow correction: less than the plain blur
    k = cv2.getGaussianKernel(11, 3.0).astype(np.float32)
    plain = cv2.sepFilter2D(r, -1, k, k, borderType=cv2.BORDER_CONSTANT)
    assert r_blur.mean() < plain.mean()


def test_vignette_model():
    mask = vignette_kernel(560)
    assert mask.shape == (560, 560) and mask.max() == 1.0 and mask[0, 0] < 0.05
    np.testing.assert_allclose(mask, mask.T) and np.testing.assert_allclose(mask, mask[::-1, ::-1])
    t = _float(data.chelsea())  # 300 x 451
    r = _float(data.coffee()[:300, :451])
    t_out, r_vig, m = vignette_reflection_synthesis(t, r, np.random.default_rng(0))
    np.testing.assert_array_equal(t_out, t)  # the target is the untouched transmission
    assert m.shape == t.shape and 0.0 <= m.min() and m.max() <= 1.0
    assert np.abs(m - t).mean() > 0.01 and r_vig.max() <= 1.0
    big = np.full((600, 700, 3), 0.5, np.float32)  # larger than the public 560 px mask allows
    assert vignette_reflection_synthesis(big, big, np.random.default_rng(0))[2].shape == big.shape


def _physical(t, r, seed, **options):
    return physical_reflection_synthesis(t, r, np.random.default_rng(seed), **options)


def test_physical_model_adds_light_in_linear_space_and_clips_like_a_sensor():
    t = _float(data.astronaut()[:64, :80])
    r = _float(data.coffee()[:64, :80])
    plain = {"none_prob": 0.0, "blur_prob": 0.0, "ghost_prob": 0.0, "falloff_prob": 0.0}
    t_out, added, m = _physical(t, r, 0, strength_range=(0.3, 0.3), **plain)
    np.testing.assert_array_equal(t_out, t)  # the target is the untouched transmission
    expected = np.clip(t**2.2 + 0.3 * r**2.2, 0, 1) ** (1 / 2.2)
    np.testing.assert_allclose(m, expected, atol=1e-5)
    assert (m >= t - 1e-6).all()  # a reflection only adds light
    np.testing.assert_allclose(added, np.clip(m - t, 0, 1), atol=1e-6)
    white = np.ones_like(t)  # a saturated scene stays saturated, whatever is reflected
    np.testing.assert_array_equal(_physical(white, r, 0, **plain)[2], white)


def test_physical_model_pairs_without_reflection_are_the_photo_itself():
    t = _float(data.astronaut()[:64, :80])
    r = _float(data.coffee()[:64, :80])
    draws = [_physical(t, r, seed, none_prob=0.5) for seed in range(40)]
    untouched = [np.array_equal(m, t) and not added.any() for _, added, m in draws]
    assert 8 <= sum(untouched) <= 32  # about half, and only those pairs
    assert all(np.abs(m - t).max() > 1e-3 for (_, _, m), same in zip(draws, untouched) if not same)


def test_physical_model_strength_ghost_and_blur_act_as_named():
    t = np.full((64, 64, 3), 0.2, np.float32)
    r = np.zeros((64, 64, 3), np.float32)
    r[30:34, 30:34] = 1.0  # a small bright light
    plain = {"none_prob": 0.0, "blur_prob": 0.0, "ghost_prob": 0.0, "falloff_prob": 0.0}
    weak = _physical(t, r, 0, strength_range=(0.05, 0.05), **plain)[2]
    strong = _physical(t, r, 0, strength_range=(0.5, 0.5), **plain)[2]
    assert strong[32, 32, 0] > weak[32, 32, 0] > 0.2 + 1e-3
    ghosted = _physical(
        t, r, 0, strength_range=(0.5, 0.5), **{**plain, "ghost_prob": 1.0}, ghost_shift_range=(8.0, 8.0)
    )[2]
    lit = ghosted[..., 0] > 0.2 + 1e-3
    ys, xs = np.nonzero(lit)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) >= 10  # a second copy 8 px away
    blurred = _physical(t, r, 0, strength_range=(0.5, 0.5), **{**plain, "blur_prob": 1.0})[2]
    assert (blurred[..., 0] > 0.2 + 1e-3).sum() > (strong[..., 0] > 0.2 + 1e-3).sum()
    assert blurred[..., 0].max() < strong[..., 0].max()


# ------------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path):
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir(), val.mkdir()
    cv2.imwrite(str(train / "astronaut.png"), data.astronaut()[::4, ::4, ::-1])
    cv2.imwrite(str(train / "coffee.png"), data.coffee()[::4, ::4, ::-1])
    cv2.imwrite(str(train / "camera.png"), data.camera()[::4, ::4])  # gray
    cv2.imwrite(str(val / "chelsea.png"), data.chelsea()[:60, :90, ::-1])
    cv2.imwrite(str(val / "rocket.png"), data.rocket()[:40, :50, ::-1])
    return tmp_path


def test_synthetic_dataset_train_and_val(photos):
    train = SyntheticReflectionDataset(
        {"dataroot_gt": str(photos / "train"), "phase": "train", "gt_size": 48, "synthesis": "mixed"}
    )
    assert len(train) == 3
    sample = train[2]
    assert sample["lq"].shape == sample["gt"].shape == sample["reflection"].shape == (3, 48, 48)
    assert (sample["lq"] - sample["gt"]).abs().mean() > 0.005
    val = SyntheticReflectionDataset(
        {"dataroot_gt": str(photos / "val"), "phase": "val", "pairs_per_image": 2, "synthesis": "blur"}
    )
    assert len(val) == 4
    first, again, second = val[0], val[0], val[1]
    assert torch.equal(first["lq"], again["lq"])  # deterministic
    assert not torch.equal(first["lq"], second["lq"])  # a different pair of the same photo
    assert first["gt"].shape == (3, 60, 90) and torch.equal(first["gt"], second["gt"])
    names = [Path(val[i]["lq_path"]).name for i in range(len(val))]
    assert len(set(names)) == 4  # distinct names for BasicSR's saved images
    from basicsr.utils.registry import DATASET_REGISTRY

    assert DATASET_REGISTRY.get("SyntheticReflectionDataset") is SyntheticReflectionDataset


def test_synthetic_dataset_passes_the_physical_options(photos):
    options = {"dataroot_gt": str(photos / "val"), "phase": "val", "synthesis": "physical", "seed": 0}
    never = SyntheticReflectionDataset({**options, "none_prob": 1.0})
    always = SyntheticReflectionDataset({**options, "none_prob": 0.0, "strength_range": [0.5, 0.5]})
    for i in range(len(never)):
        assert torch.equal(never[i]["lq"], never[i]["gt"])
        assert (always[i]["lq"] - always[i]["gt"]).abs().mean() > 0.005


def _uhdrr_root(root: Path, phase: str = "train", uhd: str = "4k", cropped: bool = False) -> Path:
    base = root / "cropped" if cropped else root
    rng = np.random.default_rng(0)
    records = []
    for layer in UHDRRDataset.LAYERS:
        (base / layer).mkdir(parents=True, exist_ok=True)
    for i in range(2):
        t = rng.integers(0, 128, (72, 96, 3), dtype=np.uint8)
        cv2.imwrite(str(base / "transmission_layer" / f"{i}_t.png"), t)
        cv2.imwrite(str(base / "reflection_mask_layer" / f"{i}_r.png"), 255 - t)
        cv2.imwrite(str(base / "blended" / f"{i}_m.png"), 2 * t)  # blended = 2 T: alignment is checkable
        records.append(
            {
                "transmission_layer": f"{i}_t.png",
                "reflection_layer": f"{i}_r.png",
                "blended": f"{i}_m.png",
                "alpha": 0.7,
            }
        )
    name = f"{uhd}_test_crop_results_list.json" if cropped else f"{uhd}_{phase}_results_list.json"
    (base / name).write_text(json.dumps(records), encoding="utf-8")
    return root


def test_uhdrr_layout(tmp_path):
    root = _uhdrr_root(tmp_path / "uhdrr")
    train = UHDRRDataset({"dataroot": str(root), "uhd": "4k", "phase": "train", "gt_size": 32})
    sample = train[1]
    assert sample["lq"].shape == (3, 32, 32) and sample["alpha"] == pytest.approx(0.7)
    torch.testing.assert_close(sample["lq"], 2 * sample["gt"], atol=1e-6, rtol=0)  # aligned crops
    torch.testing.assert_close(sample["reflection"], 1 - sample["gt"], atol=1e-6, rtol=0)
    _uhdrr_root(tmp_path / "uhdrr", phase="test")
    test = UHDRRDataset({"dataroot": str(root), "uhd": "4k", "phase": "val"})
    assert test[0]["gt"].shape == (3, 72, 96)  # whole images outside training
    crops = _uhdrr_root(tmp_path / "uhd8k", uhd="8k", cropped=True)
    assert len(UHDRRDataset({"dataroot": str(crops), "uhd": "8k", "phase": "test", "cropped": True})) == 2
    with pytest.raises(FileNotFoundError, match="8k_train_results_list.json"):
        UHDRRDataset({"dataroot": str(root), "uhd": "8k", "phase": "train"})


# ------------------------------------------------------------------------------------------------
# Losses and discriminator
# ------------------------------------------------------------------------------------------------


def test_pixel_loss_is_mse_plus_gradient_l1():
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 16, 20), torch.rand(2, 3, 16, 20)
    dy = (pred.diff(dim=-2) - target.diff(dim=-2)).abs().mean()
    dx = (pred.diff(dim=-1) - target.diff(dim=-1)).abs().mean()
    torch.testing.assert_close(gradient_l1(pred, target), dy + dx)
    expected = 0.2 * F.mse_loss(pred, target) + 0.4 * (dy + dx)
    torch.testing.assert_close(ReflectionPixelLoss()(pred, target), expected)


def test_per_image_psnr_loss_is_minus_the_mean_psnr_and_weighs_each_image_alike():
    loss = rf.PerImagePSNRLoss(eps=1e-12)
    target = torch.full((2, 3, 8, 8), 0.5)
    pred = target.clone()
    pred[0] += 0.1  # MSE 1e-2: 20 dB
    pred[1] += 0.001  # MSE 1e-6: 60 dB
    assert loss(pred, target).item() == pytest.approx(-(20 + 60) / 2 / 10, abs=1e-4)
    pred.requires_grad_(True)
    loss(pred, target).backward()
    # a batch-mean MSE would push the 20 dB image 100x harder; here the nearly clean one is pushed harder
    assert pred.grad[1].abs().mean() > pred.grad[0].abs().mean()
    exact = rf.PerImagePSNRLoss()(target, target)  # the default eps bounds an exact pair (about 54 dB)
    assert torch.isfinite(exact) and exact.item() == pytest.approx(-5.41, abs=0.01)


def test_vgg_loss():
    torch.manual_seed(0)
    loss = ReflectionVGGLoss(vgg_weights="random")
    target = torch.rand(1, 3, 32, 32)
    assert loss(target, target).item() == 0.0
    pred = target.clone().requires_grad_(True)
    value = loss(pred + 0.05 * torch.randn_like(pred), target)
    assert value.item() > 0
    value.backward()
    assert pred.grad.abs().sum() > 0 and all(p.grad is None for p in loss.vgg.parameters())
    # a loss built around a deep enough VGG shares it instead of building another
    shared = ReflectionVGGLoss(vgg=loss.vgg)
    assert shared.vgg is loss.vgg


def test_rasgan_losses():
    real, fake = torch.tensor([[2.0], [1.0]]), torch.tensor([[-1.0], [0.0]])
    bce = F.binary_cross_entropy_with_logits
    d_expected = 0.5 * (
        bce(real - fake.mean(0), torch.ones(2, 1)) + bce(fake - real.mean(0), torch.zeros(2, 1))
    )
    g_expected = 0.5 * (
        bce(real - fake.mean(0), torch.zeros(2, 1)) + bce(fake - real.mean(0), torch.ones(2, 1))
    )
    torch.testing.assert_close(rasgan_discriminator_loss(real, fake), d_expected)
    torch.testing.assert_close(rasgan_generator_loss(real, fake), g_expected)
    assert rasgan_discriminator_loss(real, fake) < rasgan_discriminator_loss(fake, real)


def test_discriminator_layout():
    net = DiscriminatorVGG()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["body.0.weight"] == (64, 3, 3, 3) and shapes["body.3.weight"] == (64,)  # GroupNorm
    assert shapes["body.26.weight"] == (512, 512, 3, 3) and shapes["tail.1.weight"] == (1024, 512, 1, 1)
    assert shapes["tail.3.weight"] == (1, 1024, 1, 1)
    assert net(torch.rand(2, 3, 48, 40)).shape == (2, 1, 1, 1)


def test_evaluate_against_input_identity():
    val = SyntheticReflectionDataset({"dataroot_gt": str(REPO / "restorer" / "samples"), "phase": "val"})
    scores = evaluate_against_input(lambda x: x, torch.utils.data.Subset(val, [0]))
    assert scores["psnr_output"] == pytest.approx(scores["psnr_input"]) and scores["pairs"] == 1


# ------------------------------------------------------------------------------------------------
# Training through BasicSR
# ------------------------------------------------------------------------------------------------


def _options(name: str, total_iter: int, gan_start: int) -> dict:
    return {
        "name": name,
        "model_type": "RRFormerModel",
        "scale": 1,
        "num_gpu": 0,
        "manual_seed": 0,
        "datasets": {
            "train": {
                "name": "photos",
                "type": "SyntheticReflectionDataset",
                "dataroot_gt": "train",
                "gt_size": 32,
                "num_worker_per_gpu": 0,
                "batch_size_per_gpu": 2,
                "dataset_enlarge_ratio": 20,
            },
            "val": {"name": "held_out", "type": "SyntheticReflectionDataset", "dataroot_gt": "val"},
        },
        "network_g": dict(TINY_RRFORMER),
        "network_d": {"type": "DiscriminatorVGG", "in_channels": 3},
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {
            "optim_g": {"type": "Adam", "lr": 1e-3, "weight_decay": 0, "betas": [0.9, 0.999]},
            "optim_d": {"type": "Adam", "lr": 2e-4, "weight_decay": 0, "betas": [0.9, 0.999]},
            "scheduler": {"type": "MultiStepLR", "milestones": [10**9], "gamma": 1.0},
            "total_iter": total_iter,
            "warmup_iter": -1,
            "pixel_opt": {"type": "ReflectionPixelLoss", "loss_weight": 1.0},
            "perceptual_opt": {"type": "ReflectionVGGLoss", "loss_weight": 0.1},
            "gan_opt": {"type": "RaSGAN", "loss_weight": 0.01, "start_iter": gan_start},
        },
        "val": {
            "val_freq": total_iter,
            "save_img": False,
            "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 0, "test_y_channel": False}},
        },
        "logger": {"print_freq": 1, "save_checkpoint_freq": total_iter, "use_tb_logger": False},
    }


def _train(workdir: Path, opt: dict) -> str:
    opt_file = workdir / f"{opt['name']}.yml"
    opt_file.write_text(yaml.safe_dump(opt), encoding="utf-8")
    # restorer.training.register_all registers this module once the lead lists it; importing it
    # first keeps the test independent of that.
    code = (
        "import sys, restorer.training.reflection; from restorer.train import main; "
        f"sys.exit(main(['-opt', {str(opt_file)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_training_runs_with_gan_from_the_start_iteration(photos):
    log = _train(photos, _options("rr_tiny", total_iter=16, gan_start=12))
    iters = {int(i): line for i, line in re.findall(r"iter:\s+(\d+),(.*)", log)}
    assert sorted(iters) == list(range(1, 17))
    assert all("l_g_gan" not in iters[i] and "l_d" not in iters[i] for i in range(1, 13))
    assert all("l_g_gan" in iters[i] and "l_d" in iters[i] for i in range(13, 17))
    assert re.search(r"# psnr: \d+\.\d+", log)
    models = photos / "experiments" / "rr_tiny" / "models"
    g_state = torch.load(models / "net_g_latest.pth", weights_only=True)["params"]
    assert not any(k.startswith("vgg") for k in g_state)  # the public layout: no VGG keys
    from restorer.archs import build_network

    build_network(TINY_RRFORMER).load_state_dict(g_state, strict=True)
    d_state = torch.load(models / "net_d_latest.pth", weights_only=True)["params"]
    DiscriminatorVGG().load_state_dict(d_state, strict=True)


def test_model_step_fits_one_batch(photos):
    """RRFormerModel.optimize_parameters (pixel + VGG losses, RaSGAN from step 6) fits a fixed batch."""
    opt = _options("in_process", total_iter=24, gan_start=5)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    torch.manual_seed(0)
    model = rf.RRFormerModel(opt)
    assert model.cri_perceptual.vgg is model.net_g.vgg19  # the loss shares the generator's VGG19
    train = SyntheticReflectionDataset(
        {"dataroot_gt": str(photos / "train"), "phase": "train", "gt_size": 32}
    )
    np.random.seed(0)
    samples = [train[i] for i in range(2)]
    batch = {"lq": torch.stack([s["lq"] for s in samples]), "gt": torch.stack([s["gt"] for s in samples])}
    d_before = [p.clone() for p in model.net_d.parameters()]
    logs = []
    for step in range(1, 25):
        model.feed_data(batch)
        model.optimize_parameters(step)
        logs.append(dict(model.log_dict))
        if step == 5:  # the discriminator has not been trained before start_iter
            assert all(torch.equal(a, b) for a, b in zip(d_before, model.net_d.parameters(), strict=True))
    assert "l_g_gan" not in logs[4] and "l_g_gan" in logs[5] and "l_d" in logs[5]
    assert not all(torch.equal(a, b) for a, b in zip(d_before, model.net_d.parameters(), strict=True))
    # The output starts near 0 behind deconv3's ReLU, so fitting starts slowly (0.77x after 24 steps here).
    first, last = logs[0]["l_pix"], sum(log["l_pix"] for log in logs[-3:]) / 3
    assert last < 0.85 * first, (first, last)


def test_validation_runs_tiled_when_val_tile_is_set(photos):
    opt = _options("tiled_val", total_iter=1, gan_start=0)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt["val"].update(tile=64, tile_overlap=32)
    torch.manual_seed(0)
    model = rf.RRFormerModel(opt)
    val = SyntheticReflectionDataset({"dataroot_gt": str(photos / "val"), "phase": "val"})
    sample = val[0]  # 60 x 90, padded to 64 x 96: one row of two 64 px tiles
    model.feed_data({"lq": sample["lq"][None], "gt": sample["gt"][None]})
    calls = []
    hook = model.net_g.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape[-2:])))
    model.test()
    hook.remove()
    assert calls == [(64, 64)] * 2 and model.output.shape == (1, 3, 60, 90)
    assert model.net_g.training  # back in training mode afterwards


def test_model_class_is_registered():
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

    assert MODEL_REGISTRY.get("RRFormerModel") is rf.RRFormerModel
    assert ARCH_REGISTRY.get("DiscriminatorVGG") is DiscriminatorVGG
    assert LOSS_REGISTRY.get("ReflectionPixelLoss") is ReflectionPixelLoss
