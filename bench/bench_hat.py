"""CPU forward benchmark: our HAT against the plain reference, same random weights, same run.

Prints one JSON object. Default: HAT-S x4 (official test config) on 1x3x64x64 and 1x3x128x128,
``torch.inference_mode``, 2 threads. Each model is timed in two interleaved passes (plain, ours, plain,
ours) of ``--runs`` timed runs each (after ``--warmup`` runs); the lower of its two medians is reported, so
that background load on a shared machine hurts both models alike.
``--quick``: a reduced config (2 RHAGs) on 1x3x64x64 only.

    python bench/bench_hat.py [--quick] [--threads 2] [--runs 3] [--warmup 1] [--sizes 64 128]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hat_plain_reference import build_plain_hat  # noqa: E402

from restorer import zoo  # noqa: E402
from restorer.archs import build_network  # noqa: E402

HAT_S_X4 = zoo.get_entry("hat-s", 4).network_options()  # the official configuration


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter non-trivial values (biases and bias tables too) so all paths matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def _time(model: torch.nn.Module, x: torch.Tensor, warmup: int, runs: int) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        for _ in range(warmup):
            out = model(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2-RHAG HAT-S x4, 64x64 only, 3 runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = dict(HAT_S_X4)
    if args.quick:
        cfg.update(depths=[6, 6], num_heads=[6, 6])
    sizes = args.sizes or ([64] if args.quick else [64, 128])
    runs = args.runs or 3

    torch.manual_seed(0)
    ours = build_network(cfg).eval()
    _randomise(ours)
    plain = build_plain_hat(cfg).eval()
    plain.load_state_dict(ours.state_dict(), strict=True)

    result: dict = {
        "config": "HAT-S x4" + (" (quick: 2 RHAGs)" if args.quick else ""),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "runs": runs,
        "warmup": args.warmup,
        "results": [],
    }
    gen = torch.Generator().manual_seed(1)
    for s in sizes:
        x = torch.rand(1, 3, s, s, generator=gen)
        # interleave the two models so that background load hits both alike
        t_plain, out_plain = _time(plain, x, args.warmup, runs)
        t_ours, out_ours = _time(ours, x, args.warmup, runs)
        t_plain2, _ = _time(plain, x, 0, runs)
        t_ours2, _ = _time(ours, x, 0, runs)
        t_plain, t_ours = min(t_plain, t_plain2), min(t_ours, t_ours2)
        result["results"].append(
            {
                "input": [1, 3, s, s],
                "plain_s": round(t_plain, 4),
                "ours_s": round(t_ours, 4),
                "speedup": round(t_plain / t_ours, 3),
                "time_saved_pct": round(100 * (1 - t_ours / t_plain), 1),
                "max_abs_diff": float((out_ours - out_plain).abs().max()),
                "plain_output_max_abs": float(out_plain.abs().max()),
                "output_shape": list(out_ours.shape),
            }
        )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
