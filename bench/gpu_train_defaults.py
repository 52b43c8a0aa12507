"""Train every bundled default on one GPU in about ten minutes of wall time, and bring the weights back.

The one prepared command for a session that is lent a GPU (the ``device`` tool; see
``bench/run_gpu_train.sh``, which is what to give it). For each default it derives a GPU recipe from
the CPU one in ``options/train/`` (same network, data, loss and schedule shape; bigger batch and
patches, more iterations, bf16 autocast, several loader workers), fine-tunes from the shipped weights,
runs the four trainings at once on the one GPU (they are small: a 0.75 M and a 1.2 M parameter network),
then exports each run's EMA weights with ``weights/make_bundled.py``'s exporter (recipe, iterations,
wall time and device in the file's metadata) into ``--out``, with ``summary.json`` (per-run
iterations, seconds, final validation PSNR on the corpus's held-out photos).

The corpus must be there: ``python datasets/make_training_set.py`` rebuilds it from
``datasets/corpus/sources/`` (carry that folder: 11 MB) where ``apt-get`` cannot reach Debian.

    python bench/gpu_train_defaults.py --out $OUT [--minutes 10] [--only sr_x2 denoise]
    python bench/gpu_train_defaults.py --dry-run --out /tmp/gpu_dry   # CPU, 2 iterations each: the test
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "weights"))
sys.path.insert(0, str(ROOT))

from restorer import zoo  # noqa: E402

# task -> (CPU recipe to derive from, zoo model whose shipped file it starts from, GPU sizes)
# Iterations are sized for an H200 at about 8 min of training each, all four at once (an estimate from
# the CPU step times; the first real run's summary.json calibrates them).
DEFAULTS = {
    "sr_x2": dict(
        recipe="bundled_CRAFT_SRx2_corpus", model="craft-bundled", batch=32, gt_size=128, iters=6000, lr=2e-4,
    ),
    "sr_x3": dict(
        recipe="bundled_CRAFT_SRx2_corpus", model="craft-bundled", scale=3,
        batch=32, gt_size=189, iters=6000, lr=2e-4,
    ),
    "sr_x4": dict(
        recipe="bundled_CRAFT_SRx2_corpus", model="craft-bundled", scale=4,
        batch=32, gt_size=252, iters=6000, lr=2e-4,
    ),
    "denoise": dict(
        recipe="bundled_RestoreRWKV_denoise_sigma25_corpus",
        model="restore-rwkv-light", batch=32, gt_size=128, iters=6000, lr=2e-4,
    ),
}  # fmt: skip


def gpu_recipe(task: str, spec: dict, minutes: float, dry_run: bool) -> dict:
    """The GPU (or dry-run CPU) option dict derived from the task's CPU recipe."""
    opt = yaml.safe_load((ROOT / "options" / "train" / f"{spec['recipe']}.yml").read_text())
    opt = copy.deepcopy(opt)
    scale = int(spec.get("scale", opt.get("scale", 1)))
    opt["name"] = f"gpu_{task}"
    opt["scale"] = scale
    if "upscale" in opt["network_g"]:
        opt["network_g"]["upscale"] = scale
    opt["num_gpu"] = 0 if dry_run else 1
    iters = 2 if dry_run else max(100, int(spec["iters"] * minutes / 10.0))
    train = opt["datasets"]["train"]
    train["batch_size_per_gpu"] = 2 if dry_run else spec["batch"]
    train["gt_size"] = 64 if dry_run else spec["gt_size"]
    train["num_worker_per_gpu"] = 0 if dry_run else 3
    train["dataset_enlarge_ratio"] = 100
    train["prefetch_mode"] = None
    # Every shipped file fits its own task's network exactly: strict loading.
    start = ROOT / "restorer" / "bundled" / zoo.get_entry(spec["model"], scale).weight_file
    opt["path"] = {"pretrain_network_g": str(start), "strict_load_g": True, "resume_state": None}
    for dataset in opt["datasets"].values():  # runs start in their own folder: absolute data paths
        dataset["dataroot_gt"] = str(ROOT / dataset["dataroot_gt"])
    t = opt["train"]
    t["speed"] = {"autocast": "auto", "channels_last": True}
    t["optim_g"]["lr"] = spec["lr"]
    t["scheduler"] = {
        "type": "CosineAnnealingRestartLR",
        "periods": [iters],
        "restart_weights": [1],
        "eta_min": 1e-6,
    }
    t["total_iter"] = iters
    t["warmup_iter"] = -1 if dry_run else 100
    t["ema_decay"] = 0.999
    opt["val"]["val_freq"] = iters
    for metric in opt["val"]["metrics"].values():
        if metric.get("crop_border", 0):
            metric["crop_border"] = scale
    opt["logger"] = {
        "print_freq": 1 if dry_run else 100,
        "save_checkpoint_freq": iters,
        "use_tb_logger": False,
    }
    return opt


def _final_psnr(log: str) -> dict[str, float]:
    import re

    scores = {}
    for name, value in re.findall(r"Validation (\S+)\n\s+# psnr: ([0-9.]+)", log):
        scores[name] = float(value)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the weights and summary.json go")
    parser.add_argument("--minutes", type=float, default=8.0, help="training minutes per run (all at once)")
    parser.add_argument("--only", nargs="+", choices=sorted(DEFAULTS), help="a subset of the defaults")
    parser.add_argument("--dry-run", action="store_true", help="CPU, 2 iterations each, tiny batches")
    parser.add_argument("--device-label", default="1x NVIDIA H200", help="recorded in each file's metadata")
    args = parser.parse_args(argv)
    import make_bundled

    tasks = args.only or list(DEFAULTS)
    workdir = args.out / "runs"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.dry_run:
        env["OMP_NUM_THREADS"] = "1"
    procs = {}
    for task in tasks:
        opt = gpu_recipe(task, DEFAULTS[task], args.minutes, args.dry_run)
        opt_file = workdir / f"{opt['name']}.yml"
        opt_file.write_text(yaml.safe_dump(opt, sort_keys=False))
        log = open(workdir / f"{opt['name']}.log", "w")
        procs[task] = (
            subprocess.Popen(
                [sys.executable, "-m", "restorer", "train", "-opt", str(opt_file), "--auto_resume"],
                cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env,
            ),
            opt,
            time.perf_counter(),
        )  # fmt: skip
        if args.dry_run:  # one at a time on a CPU
            procs[task][0].wait()
    summary: dict = {"device": "cpu (dry run)" if args.dry_run else args.device_label, "runs": {}}
    failed = False
    for task, (proc, opt, start) in procs.items():
        code = proc.wait()
        log = (workdir / f"{opt['name']}.log").read_text(errors="replace")
        row = {
            "exit": code,
            "iterations": opt["train"]["total_iter"],
            "seconds": round(time.perf_counter() - start),
        }
        row["val_psnr"] = _final_psnr(log)
        if code == 0:
            checkpoint = workdir / "experiments" / opt["name"] / "models" / "net_g_latest.pth"
            target = make_bundled.export(
                task, DEFAULTS[task]["model"], f"bench/gpu_train_defaults.py ({task})", checkpoint,
                args.out, summary["device"],
            )  # fmt: skip
            row["weights"] = target.name
        else:
            failed = True
            row["log_tail"] = log[-2000:]
        summary["runs"][task] = row
        print(f"{task}: {row}", file=sys.stderr)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
