"""Training-step benchmark of the bundled recipes: each speed option against plain fp32 eager, same run.

Prints one JSON object. For every recipe (default: the bundled CRAFT x2 and Restore-RWKV-light
denoise option files) and every mode (``fp32`` eager; ``bf16`` autocast; ``channels_last``;
``bf16+channels_last``; ``compile`` / ``bf16+compile`` with ``--compile``), it builds the recipe's
network from the same seed, trains ``--steps`` steps on the same fixed batches (the recipe's batch
size and patch size, L1 loss, AdamW at the recipe's rate, gradient clipping as the recipe sets it) and
reports iterations per second (median over the timed steps, after ``--warmup``) and the mean loss of
the last quarter of the steps, so a mode that speeds up but learns worse shows it. ``speedup`` is
against ``fp32`` of the same recipe in the same run; modes are interleaved to share background load.

    python bench/bench_train_step.py [--threads 1] [--steps 40] [--warmup 5] [--compile]
        [--recipes options/train/A.yml ...] [--modes fp32 bf16 ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restorer.archs import build_network  # noqa: E402
from restorer.training.speed import SpeedOptions, cpu_supports_bf16  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPES = (
    "options/train/bundled_CRAFT_SRx2_cpu.yml",
    "options/train/bundled_RestoreRWKV_denoise_sigma25_cpu.yml",
)
MODES = {
    "fp32": SpeedOptions(),
    "bf16": SpeedOptions(autocast="bf16"),
    "channels_last": SpeedOptions(channels_last=True),
    "bf16+channels_last": SpeedOptions(autocast="bf16", channels_last=True),
    "compile": SpeedOptions(compile=True),
    "bf16+compile": SpeedOptions(autocast="bf16", compile=True),
}


def _batches(opt: dict, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed smooth-ish random (lq, gt) batches of the recipe's shapes (same for every mode)."""
    train = opt["datasets"]["train"]
    scale = int(opt.get("scale", 1))
    batch = int(train["batch_size_per_gpu"])
    gt_size = int(train["gt_size"]) // scale * scale
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        coarse = torch.rand(batch, 3, gt_size // 8, gt_size // 8, generator=gen)
        gt = torch.nn.functional.interpolate(coarse, size=(gt_size, gt_size), mode="bicubic").clamp(0, 1)
        gt = (gt + 0.05 * torch.rand(gt.shape, generator=gen)).clamp(0, 1)
        if scale > 1:
            lq = torch.nn.functional.interpolate(gt, scale_factor=1 / scale, mode="bicubic", antialias=True)
        else:
            lq = gt + 25 / 255 * torch.randn(gt.shape, generator=gen)
        out.append((lq.clamp(0, 1) if scale > 1 else lq, gt))
    return out


def _run(opt: dict, mode: SpeedOptions, batches, warmup: int) -> dict:
    torch.manual_seed(0)
    net = build_network(dict(opt["network_g"]))
    net.train()
    optim_opt = opt["train"]["optim_g"]
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=float(optim_opt["lr"]), betas=tuple(optim_opt.get("betas", (0.9, 0.999)))
    )
    clip = float(opt["train"].get("grad_clip") or 0)
    step = mode.wrap(net)
    times, losses = [], []
    for i, (lq, gt) in enumerate(batches):
        lq, gt = mode.input(lq), mode.input(gt)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with mode.autocast_context():
            out = step(lq)
        loss = torch.nn.functional.l1_loss(out.float(), gt)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        elapsed = time.perf_counter() - t0
        if i >= warmup:
            times.append(elapsed)
        losses.append(float(loss))
    tail = losses[-max(1, len(losses) // 4) :]
    return {
        "it_per_s": round(1.0 / statistics.median(times), 4),
        "median_step_s": round(statistics.median(times), 4),
        "final_loss": round(statistics.fmean(tail), 5),
        "first_loss": round(losses[0], 5),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES))
    parser.add_argument("--modes", nargs="+", default=["fp32", "bf16", "channels_last", "bf16+channels_last"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile modes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    modes = list(args.modes) + (["compile", "bf16+compile"] if args.compile else [])
    if not cpu_supports_bf16():
        modes = [m for m in modes if "bf16" not in m]
    report: dict = {
        "benchmark": "training step, bundled recipes",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_bf16": cpu_supports_bf16(),
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "recipes": {},
    }
    for recipe in args.recipes:
        opt = yaml.safe_load((ROOT / recipe).read_text())
        batches = _batches(opt, args.steps, seed=1)
        results = {}
        for name in modes:
            results[name] = _run(opt, MODES[name], batches, args.warmup)
            print(f"{Path(recipe).stem} {name}: {results[name]}", file=sys.stderr)
        base = results["fp32"]["it_per_s"] if "fp32" in results else None
        for row in results.values():
            if base:
                row["speedup"] = round(row["it_per_s"] / base, 3)
        report["recipes"][Path(recipe).stem] = results
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
