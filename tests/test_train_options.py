"""Training option files: generated from the zoo and the official recipes, valid for BasicSR's
training pipeline, and one of them (and its x2 -> x4 fine-tuning chain) runs end to end on a CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
import yaml
from skimage import data

from restorer import zoo

from conftest import TINY_HAT

REPO = Path(__file__).resolve().parent.parent
FOLDER = REPO / "options" / "train"
sys.path.insert(0, str(REPO / "options"))
import make_train_options  # noqa: E402


def _committed() -> dict[str, str]:
    """Generated files in options/train (hand-written recipes there lack the generator's mark)."""
    texts = {p.name: p.read_text(encoding="utf-8") for p in FOLDER.glob("*.yml")}
    return {name: text for name, text in texts.items() if make_train_options.MARK in text}


def _load(name: str) -> dict:
    return yaml.safe_load((FOLDER / name).read_text(encoding="utf-8"))


def test_committed_train_options_are_generated_from_the_zoo():
    entries = make_train_options.trainable_entries()
    expected = {f"{make_train_options.option_name(e)}.yml": make_train_options.render(e) for e in entries}
    committed = _committed()
    assert sorted(committed) == sorted(expected), "run python options/make_train_options.py"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} is stale: run python options/make_train_options.py"
    # every published HAT/DRCT/CRAFT/DLGSANet variant has a recipe, except the GAN-trained ones;
    # the bundled defaults have hand-written ones
    for entry in zoo.ZOO.values():
        if entry.arch in make_train_options.ARCHS:
            has_file = f"{make_train_options.option_name(entry)}.yml" in committed
            skipped = entry.model in make_train_options.GAN_MODELS | make_train_options.OWN_RECIPES
            assert has_file != skipped, entry.key
    for scale in (2, 3, 4):
        assert (FOLDER / f"bundled_CRAFT_SRx{scale}_cpu.yml").is_file()


def test_every_file_parses_with_the_zoo_network_and_registered_classes():
    from restorer.training import register_all

    register_all()
    from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

    for entry in make_train_options.trainable_entries():
        name = f"{make_train_options.option_name(entry)}.yml"
        opt = _load(name)
        assert opt["name"] == Path(name).stem
        assert opt["network_g"] == entry.network_options(), name
        assert opt["scale"] == entry.scale == opt["network_g"]["upscale"]
        assert opt["model_type"] in MODEL_REGISTRY, name
        assert opt["datasets"]["train"]["type"] in DATASET_REGISTRY, name
        assert opt["datasets"]["val_1"]["type"] in DATASET_REGISTRY, name
        assert opt["num_gpu"] == "auto" and opt["logger"]["use_tb_logger"] is False
        assert "meta_info_file" not in opt["datasets"]["train"]
        pretrain = opt["path"]["pretrain_network_g"]
        if pretrain is not None:  # a fine-tuning stage: the stage it starts from is named
            run = pretrain.split("/")[1]
            assert pretrain == f"experiments/{run}/models/net_g_latest.pth"
            assert (FOLDER / f"{run}.yml").is_file() or "ImageNet_from_scratch" in run, name


def test_official_recipes():
    hat_s2, hat4 = _load("train_HAT-S_SRx2.yml"), _load("train_HAT_SRx4.yml")
    assert hat_s2["train"]["optim_g"] == {"type": "Adam", "lr": 2e-4, "weight_decay": 0, "betas": [0.9, 0.99]}
    assert hat_s2["train"]["total_iter"] == 500000 and hat_s2["train"]["ema_decay"] == 0.999
    assert (
        hat_s2["datasets"]["train"]["gt_size"] == 128
        and hat_s2["datasets"]["train"]["batch_size_per_gpu"] == 4
    )
    # x4 fine-tunes the x2 run (non-strict: the x4 up-sampler has layers the x2 checkpoint lacks)
    assert hat4["path"]["pretrain_network_g"] == "experiments/train_HAT_SRx2/models/net_g_latest.pth"
    assert hat4["path"]["strict_load_g"] is False and hat4["train"]["optim_g"]["lr"] == 1e-4
    assert hat4["train"]["total_iter"] == 250000
    imagenet = _load("train_HAT-L_SRx4_ImageNet-pretrain.yml")
    assert imagenet["train"]["optim_g"]["lr"] == 1e-5 and imagenet["path"]["param_key_g"] == "params_ema"
    assert "train_HAT-L_SRx4_ImageNet_from_scratch" in imagenet["path"]["pretrain_network_g"]
    assert _load("train_DRCT_SRx4.yml")["path"]["pretrain_network_g"] is None  # README: no x2 pretraining
    craft = _load("train_CRAFT_MODEL_X3.yml")
    assert craft["model_type"] == "CRAFT_Model" and craft["train"]["ema_decay"] == 0
    assert (
        craft["datasets"]["train"]["batch_size_per_gpu"] == 16
        and craft["datasets"]["train"]["gt_size"] == 192
    )
    for entry in zoo.entries("DLGSANet"):
        opt = _load(f"{make_train_options.option_name(entry)}.yml")
        assert (
            opt["train"]["optim_g"]["lr"] == 5e-4 and opt["datasets"]["train"]["gt_size"] == 48 * entry.scale
        )
        assert opt["val"]["metrics"]["psnr"]["crop_border"] == 4


def test_hat_s_x2_has_every_key_basicsr_training_reads():
    opt = _load("train_HAT-S_SRx2.yml")
    for key in (
        "name",
        "model_type",
        "scale",
        "num_gpu",
        "manual_seed",
        "path",
        "val",
        "logger",
        "network_g",
    ):
        assert key in opt, key
    train_set = opt["datasets"]["train"]
    for key in ("type", "dataroot_gt", "dataroot_lq", "gt_size", "batch_size_per_gpu", "num_worker_per_gpu"):
        assert key in train_set, key
    for key in ("optim_g", "scheduler", "total_iter", "pixel_opt", "ema_decay"):
        assert key in opt["train"], key
    assert {"val_freq", "metrics"} <= set(opt["val"])
    assert {"print_freq", "save_checkpoint_freq"} <= set(opt["logger"])
    assert "resume_state" in opt["path"] and "strict_load_g" in opt["path"]
    assert opt["train"]["scheduler"]["type"] in ("MultiStepLR", "CosineAnnealingRestartLR")


def _tiny_run(opt: dict) -> dict:
    """The official file with tiny data and network: HR-only data, 2 iterations on the CPU."""
    opt["datasets"]["train"] = {
        "name": "mini",
        "type": "HRBicubicDataset",
        "dataroot_gt": "hr",
        "gt_size": 32,
        "use_hflip": True,
        "use_rot": True,
        "use_shuffle": True,
        "num_worker_per_gpu": 0,
        "batch_size_per_gpu": 2,
        "dataset_enlarge_ratio": 10,
        "prefetch_mode": None,
    }
    opt["datasets"]["val_1"] = {"name": "val", "type": "HRBicubicDataset", "dataroot_gt": "val"}
    opt["network_g"] = {**TINY_HAT, "upscale": opt["scale"]}
    opt["num_gpu"] = 0
    opt["train"]["total_iter"] = 2
    opt["val"]["val_freq"] = 2
    opt["logger"].update(print_freq=1, save_checkpoint_freq=2)
    return opt


def _train(workdir: Path, opt: dict) -> str:
    opt_file = workdir / f"{opt['name']}.yml"
    opt_file.write_text(yaml.safe_dump(opt), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "restorer", "train", "-opt", str(opt_file)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "hr").mkdir()
    (tmp_path / "val").mkdir()
    cv2.imwrite(str(tmp_path / "hr" / "astronaut.png"), data.astronaut()[::4, ::4, ::-1])
    cv2.imwrite(str(tmp_path / "hr" / "coffee.png"), data.coffee()[::4, ::4, ::-1])
    cv2.imwrite(str(tmp_path / "val" / "chelsea.png"), data.chelsea()[:48, :48, ::-1])
    return tmp_path


def test_hat_s_x2_then_x4_finetune_run_end_to_end(workdir):
    x2 = _tiny_run(_load("train_HAT-S_SRx2.yml"))
    _train(workdir, x2)
    x2_ckpt = workdir / "experiments/train_HAT-S_SRx2/models/net_g_latest.pth"
    assert set(torch.load(x2_ckpt, weights_only=True)) == {"params", "params_ema"}

    # the x4 file fine-tunes that checkpoint, as written (relative path, non-strict load)
    x4 = _tiny_run(_load("train_HAT-S_SRx4.yml"))
    log = _train(workdir, x4)
    assert "Loading HAT model from experiments/train_HAT-S_SRx2/models/net_g_latest.pth" in log
    x4_state = torch.load(workdir / "experiments/train_HAT-S_SRx4/models/net_g_latest.pth", weights_only=True)
    assert "upsample.2.weight" in x4_state["params"]
