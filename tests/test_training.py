"""Training through BasicSR's pipeline on CPU: the loss falls, resuming continues, EMA is saved,
and PyTorch's launcher runs two gloo processes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
import yaml
from skimage import data

from conftest import TINY_HAT

REPO = Path(__file__).resolve().parent.parent


def _options(total_iter: int, name: str = "tiny", print_freq: int = 1, save_freq: int = 10) -> dict:
    return {
        "name": name,
        "model_type": "HATModel",
        "scale": 2,
        "num_gpu": 0,
        "manual_seed": 0,
        "datasets": {
            "train": {
                "name": "mini",
                "type": "HRBicubicDataset",
                "dataroot_gt": "hr",
                "gt_size": 32,
                "use_hflip": True,
                "use_rot": True,
                "num_worker_per_gpu": 0,
                "batch_size_per_gpu": 4,
                "dataset_enlarge_ratio": 100,
            },
            "val": {"name": "val", "type": "HRBicubicDataset", "dataroot_gt": "val"},
        },
        "network_g": {**TINY_HAT, "upscale": 2},
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {
            "ema_decay": 0.9,
            "grad_clip": 1.0,
            "optim_g": {"type": "AdamW", "lr": 2e-3, "weight_decay": 0, "betas": [0.9, 0.99]},
            "scheduler": {"type": "MultiStepLR", "milestones": [1000], "gamma": 0.5},
            "total_iter": total_iter,
            "warmup_iter": -1,
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
        },
        "val": {
            "val_freq": save_freq,
            "save_img": False,
            "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": True}},
        },
        "logger": {"print_freq": print_freq, "save_checkpoint_freq": save_freq, "use_tb_logger": False},
    }


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "hr").mkdir()
    (tmp_path / "val").mkdir()
    cv2.imwrite(str(tmp_path / "hr" / "astronaut.png"), data.astronaut()[::2, ::2, ::-1])
    cv2.imwrite(str(tmp_path / "hr" / "coffee.png"), data.coffee()[::2, ::2, ::-1])
    cv2.imwrite(str(tmp_path / "val" / "chelsea.png"), data.chelsea()[:64, :64, ::-1])
    return tmp_path


def _train(workdir: Path, options: dict, *extra: str, launcher: list[str] | None = None) -> str:
    opt_file = workdir / f"{options['name']}_{options['train']['total_iter']}.yml"
    opt_file.write_text(yaml.safe_dump(options), encoding="utf-8")
    prefix = launcher or [sys.executable, "-m", "restorer", "train"]
    result = subprocess.run(
        [*prefix, "-opt", str(opt_file), *extra], cwd=workdir, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _losses(log: str) -> list[float]:
    return [float(v) for v in re.findall(r"l_pix: ([0-9.e+-]+)", log)]


def test_training_lowers_the_loss_and_saves_ema(workdir):
    log = _train(workdir, _options(total_iter=30, save_freq=30))
    losses = _losses(log)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    ckpt = torch.load(workdir / "experiments/tiny/models/net_g_latest.pth", weights_only=True)
    assert set(ckpt) == {"params", "params_ema"}
    differs = [k for k in ckpt["params"] if not torch.equal(ckpt["params"][k], ckpt["params_ema"][k])]
    assert "conv_first.weight" in differs
    assert re.search(r"# psnr: \d+\.\d+", log)  # validation ran with BasicSR's metric


def test_auto_resume_continues_from_the_saved_iteration(workdir):
    _train(workdir, _options(total_iter=10, save_freq=10))
    state_dir = workdir / "experiments/tiny/training_states"
    first = torch.load(state_dir / "10.state", weights_only=False)
    assert first["iter"] == 10
    log = _train(workdir, _options(total_iter=14, save_freq=2), "--auto_resume")
    assert "Resuming training from epoch: 0, iter: 10" in log
    assert [int(i) for i in re.findall(r"iter:\s+(\d+),", log)] == [11, 12, 13, 14]
    second = torch.load(state_dir / "14.state", weights_only=False)
    # Adam's step counters continue from 10 (a fresh optimizer would be at 4)
    assert {float(s["step"]) for s in second["optimizers"][0]["state"].values()} == {14.0}


def test_torchrun_two_gloo_processes(workdir):
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "restorer.train",
    ]
    log = _train(
        workdir, _options(total_iter=4, name="ddp", save_freq=4), "--launcher", "pytorch", launcher=launcher
    )
    assert "world_size: 2" in log
    assert (workdir / "experiments/ddp/models/net_g_latest.pth").is_file()


def test_missing_option_file_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "restorer", "train", "-opt", str(tmp_path / "nope.yml")],
        capture_output=True,
        text=True,
    )
    assert (
        result.returncode == 2
        and "option file not found" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_speed_options_and_safetensors_pretrain_train_and_log(workdir):
    """A recipe with train.speed (bf16 autocast where the CPU has it, channels_last) fine-tunes from a
    .safetensors file: the file's weights are what training starts from, and the loss is finite."""
    from safetensors.torch import save_file

    from restorer.archs import build_network
    from restorer.training.speed import cpu_supports_bf16

    torch.manual_seed(3)
    start = build_network({**TINY_HAT, "upscale": 2})
    save_file({k: v.contiguous() for k, v in start.state_dict().items()}, str(workdir / "start.safetensors"))
    options = _options(total_iter=4, name="fast", save_freq=4)
    options["path"]["pretrain_network_g"] = "start.safetensors"
    options["train"]["speed"] = {"autocast": "auto", "channels_last": True}
    options["train"]["optim_g"]["lr"] = 0.0  # weights must stay those of the file
    log = _train(workdir, options)
    assert "start.safetensors (safetensors)" in log
    expected = "bf16+channels_last" if cpu_supports_bf16() else "fp32+channels_last"
    assert f"Training step: {expected}" in log
    losses = _losses(log)
    assert len(losses) == 4 and all(0 < value < 1 for value in losses)
    saved = torch.load(workdir / "experiments/fast/models/net_g_latest.pth", weights_only=True)["params"]
    for key, value in start.state_dict().items():
        torch.testing.assert_close(saved[key], value)


def test_speed_options_are_checked():
    from restorer.training.speed import SpeedOptions

    cpu = torch.device("cpu")
    assert SpeedOptions.from_options(None, cpu) == SpeedOptions()
    with pytest.raises(ValueError, match="unknown option"):
        SpeedOptions.from_options({"autocats": "bf16"}, cpu)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        SpeedOptions.from_options({"autocast": "fp16"}, cpu)
    with pytest.raises(ValueError, match="must be bf16, fp16, auto"):
        SpeedOptions.from_options({"autocast": "int8"}, cpu)
