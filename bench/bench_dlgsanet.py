"""CPU forward benchmark: our DLGSANet against the plain reference, same random weights, same run.

Prints one JSON object. Default: DLGSANet-Light x4 (48C4G3B) and the classic DLGSANet x4 (90C6G4B), official
option values (eval mode, so TLC with tlc_kernel 48 is on), on 1x3x64x64 and 1x3x128x128,
``torch.inference_mode``, 2 threads; then the dynamic depth-wise convolution alone (C=48 and C=90, 7x7
kernels, 6 channels per group) against the literal reference and the ``F.unfold`` formulation of the plain
model. Each model is timed in two interleaved passes (plain, ours, plain, ours) of ``--runs`` timed runs
each (after ``--warmup`` runs); the lower of its two medians is reported, so that background load on a
shared machine hurts both alike. ``--quick``: 64x64 only.

    python bench/bench_dlgsanet.py [--quick] [--threads 2] [--runs 3] [--warmup 1] [--sizes 64 128]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlgsanet_plain_reference import build_plain_dlgsanet, plain_dynamic_dwconv  # noqa: E402

from restorer import zoo  # noqa: E402
from restorer.archs import build_network  # noqa: E402
from restorer.ops import idynamic_dwconv, idynamic_dwconv_reference  # noqa: E402

CONFIGS = {  # the official configurations, from the zoo
    "DLGSANet-Light x4 (48C4G3B)": zoo.get_entry("dlgsanet-light", 4).network_options(),
    "DLGSANet x4 (90C6G4B)": zoo.get_entry("dlgsanet", 4).network_options(),
}


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values for the 1-D parameters (norms, biases, temperatures) so all paths matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight") or name.endswith("temperature"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def _median_time(fn: Callable[[], torch.Tensor], warmup: int, runs: int) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        for _ in range(warmup):
            out = fn()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _compare(
    fast: Callable, slow: Callable, warmup: int, runs: int
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Interleaved timing (slow, fast, slow, fast); the lower median of each."""
    t_slow, out_slow = _median_time(slow, warmup, runs)
    t_fast, out_fast = _median_time(fast, warmup, runs)
    t_slow2, _ = _median_time(slow, 0, runs)
    t_fast2, _ = _median_time(fast, 0, runs)
    return min(t_fast, t_fast2), min(t_slow, t_slow2), out_fast, out_slow


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64x64 only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    sizes = args.sizes or ([64] if args.quick else [64, 128])
    result: dict = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "runs": args.runs,
        "warmup": args.warmup,
        "models": [],
        "dynamic_conv": [],
    }
    gen = torch.Generator().manual_seed(1)
    for name, cfg in CONFIGS.items():
        torch.manual_seed(0)
        ours = build_network(cfg).eval()
        _randomise(ours)
        plain = build_plain_dlgsanet(cfg).eval()
        plain.load_state_dict(ours.state_dict(), strict=True)
        for s in sizes:
            x = torch.rand(1, 3, s, s, generator=gen)
            t_ours, t_plain, out_ours, out_plain = _compare(
                lambda x=x, m=ours: m(x), lambda x=x, m=plain: m(x), args.warmup, args.runs
            )
            result["models"].append(
                {
                    "config": name,
                    "input": [1, 3, s, s],
                    "plain_s": round(t_plain, 4),
                    "ours_s": round(t_ours, 4),
                    "speedup": round(t_plain / t_ours, 2),
                    "max_abs_diff": float((out_ours - out_plain).abs().max()),
                    "plain_output_max_abs": float(out_plain.abs().max()),
                    "output_shape": list(out_ours.shape),
                }
            )

    for c, s in [(48, 64), (90, 64)] + ([] if args.quick else [(48, 128), (90, 128)]):
        g = c // 6
        x = torch.randn(1, c, s, s, generator=gen)
        w = torch.randn(1, g, 7, 7, s, s, generator=gen)
        ops = {
            "naive_reference": lambda x=x, w=w: idynamic_dwconv_reference(x, w, padding=3),
            "unfold_plain": lambda x=x, w=w: plain_dynamic_dwconv(x, w, padding=3),
        }
        entry: dict = {"channels": c, "groups": g, "kernel": 7, "input": [1, c, s, s]}
        for label, slow in ops.items():
            t_ours, t_slow, out_ours, out_slow = _compare(
                lambda x=x, w=w: idynamic_dwconv(x, w, padding=3), slow, args.warmup, max(args.runs, 5)
            )
            entry[f"{label}_ms"] = round(t_slow * 1e3, 2)
            entry["ours_ms"] = round(min(t_ours * 1e3, entry.get("ours_ms", float("inf"))), 2)
            entry[f"speedup_vs_{label}"] = round(t_slow / t_ours, 1)
            entry[f"max_abs_diff_vs_{label}"] = float((out_ours - out_slow).abs().max())
        result["dynamic_conv"].append(entry)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
