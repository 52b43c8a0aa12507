"""CPU benchmark of the whole Restore-RWKV network: seconds per image, and the WKV scans' share.

Prints one JSON object. Default: the light variant (``restore-rwkv-light``, 1 channel, random weights) on
one 256x256 image, ``torch.inference_mode``, ``--threads`` threads, median (and minimum) of ``--runs``
forward passes after ``--warmup``; ``cpu_s`` is the process CPU time of the same passes (background load
inflates it less than wall time). One extra pass attributes CPU time to the WKV scans. Options:
``--default`` adds the published default model; ``--train`` adds one training step (forward, L1 loss,
backward) of the light model on a batch of 4 128x128 crops, the official training recipe's batch.

    python bench/bench_restore_rwkv.py [--threads 1] [--runs 3] [--warmup 1] [--size 256]
        [--default] [--train]
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import restorer.ops.wkv as wkv_module  # noqa: E402
from restorer.archs.restore_rwkv_arch import (  # noqa: E402
    DEFAULT_CONFIG,
    LIGHT_CONFIG,
    Restore_RWKV,
    count_parameters_paper,
)


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wkv_cpu_share(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """CPU seconds of one forward pass, and of the Bi-WKV calls inside it (counted by wrapping the op)."""
    spent = [0.0, 0]
    original = wkv_module._bi_wkv_torch

    def timed(*args):
        c0 = time.process_time()
        out = original(*args)
        spent[0] += time.process_time() - c0
        spent[1] += 1
        return out

    wkv_module._bi_wkv_torch = timed
    try:
        with torch.inference_mode():
            c0 = time.process_time()
            model(x)
            total = time.process_time() - c0
    finally:
        wkv_module._bi_wkv_torch = original
    return {"cpu_s": round(total, 3), "wkv_cpu_s": round(spent[0], 3), "wkv_calls": spent[1]}


def bench_forward(name: str, config: dict, size: int, runs: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = Restore_RWKV(**config).eval()
    x = torch.rand(1, config["inp_channels"], size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        for _ in range(warmup):
            out = model(x)
        walls, cpus = [], []
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            out = model(x)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return {
        "model": name,
        "config": config,
        "params_paper_count": count_parameters_paper(model),
        "params_state_dict": sum(p.numel() for p in model.parameters()),
        "input": list(x.shape),
        "output_shape": list(out.shape),
        "finite": bool(torch.isfinite(out).all()),
        "seconds": round(statistics.median(walls), 3),
        "min_seconds": round(min(walls), 3),
        "cpu_s": round(statistics.median(cpus), 3),
        "wkv_share_of_one_pass": _wkv_cpu_share(model, x),
    }


def bench_train_step(config: dict, batch: int, crop: int, runs: int) -> dict:
    torch.manual_seed(0)
    model = Restore_RWKV(**config).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(batch, config["inp_channels"], crop, crop, generator=gen)
    target = torch.rand(batch, config["out_channels"], crop, crop, generator=gen)
    walls = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.l1_loss(model(x), target).backward()
        opt.step()
        if i:  # the first step warms up
            walls.append(time.perf_counter() - t0)
    return {"batch": [batch, config["inp_channels"], crop, crop], "seconds_per_step": round(min(walls), 3)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--default", action="store_true", help="also the published default model")
    ap.add_argument("--train", action="store_true", help="also a training step of the light model")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    result: dict = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "loadavg_before": _loadavg(),
        "results": [bench_forward("restore-rwkv-light", LIGHT_CONFIG, args.size, args.runs, args.warmup)],
    }
    if args.default:
        result["results"].append(
            bench_forward("restore-rwkv", DEFAULT_CONFIG, args.size, args.runs, args.warmup)
        )
    if args.train:
        result["light_train_step"] = bench_train_step(LIGHT_CONFIG, batch=4, crop=128, runs=2)
    result["loadavg_after"] = _loadavg()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
