"""CPU forward benchmark: our CRAFT against the plain reference, same random weights, same run.

Prints one JSON object. Default: CRAFT x4 (official config) on 1x3x64x64 and 1x3x128x128,
``torch.inference_mode``, 2 threads, padding ``'symmetric_always'`` (the official inference script and
our default; the network then runs on 80x80 / 144x144). Each model is timed in two interleaved passes
(plain, ours, plain, ours) of ``--runs`` timed runs each (after ``--warmup`` runs); the lower of its two
medians is reported, so that background load on a shared machine hurts both models alike (the fastest
single run of each model and the load average before and after are reported too).
``--quick``: 1x3x64x64 only.

    python bench/bench_craft.py [--quick] [--threads 2] [--runs 5] [--warmup 2] [--sizes 64 128]
        [--pad-mode symmetric_always|reflect]
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

from craft_plain_reference import build_plain_craft  # noqa: E402

from restorer import zoo  # noqa: E402
from restorer.archs import build_network  # noqa: E402

CRAFT_X4 = zoo.get_entry("craft", 4).network_options()  # the official configuration


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter non-trivial values (biases, norms, temperatures too) so all paths matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            elif name.endswith("temperature"):
                p.copy_(1 + 0.5 * torch.rand(p.shape, generator=gen))


def _time(
    model: torch.nn.Module, x: torch.Tensor, warmup: int, runs: int, pad_mode: str
) -> tuple[list[float], torch.Tensor]:
    with torch.inference_mode():
        for _ in range(warmup):
            out = model(x, pad_mode=pad_mode)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = model(x, pad_mode=pad_mode)
            times.append(time.perf_counter() - t0)
    return times, out


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64x64 only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--pad-mode", default="symmetric_always", choices=["symmetric_always", "reflect"])
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    sizes = args.sizes or ([64] if args.quick else [64, 128])

    torch.manual_seed(0)
    ours = build_network(CRAFT_X4).eval()
    _randomise(ours)
    plain = build_plain_craft(CRAFT_X4).eval()
    plain.load_state_dict(ours.state_dict(), strict=True)

    result: dict = {
        "config": "CRAFT x4 (official)",
        "pad_mode": args.pad_mode,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "runs": args.runs,
        "warmup": args.warmup,
        "loadavg_before": _loadavg(),
        "results": [],
    }
    gen = torch.Generator().manual_seed(1)
    for s in sizes:
        x = torch.rand(1, 3, s, s, generator=gen)
        # interleave the two models so that background load hits both alike
        runs_plain, out_plain = _time(plain, x, args.warmup, args.runs, args.pad_mode)
        runs_ours, out_ours = _time(ours, x, args.warmup, args.runs, args.pad_mode)
        runs_plain2, _ = _time(plain, x, 0, args.runs, args.pad_mode)
        runs_ours2, _ = _time(ours, x, 0, args.runs, args.pad_mode)
        t_plain = min(statistics.median(runs_plain), statistics.median(runs_plain2))
        t_ours = min(statistics.median(runs_ours), statistics.median(runs_ours2))
        result["results"].append(
            {
                "input": [1, 3, s, s],
                "plain_s": round(t_plain, 4),
                "ours_s": round(t_ours, 4),
                "speedup": round(t_plain / t_ours, 3),
                "plain_min_s": round(min(runs_plain + runs_plain2), 4),
                "ours_min_s": round(min(runs_ours + runs_ours2), 4),
                "time_saved_pct": round(100 * (1 - t_ours / t_plain), 1),
                "max_abs_diff": float((out_ours - out_plain).abs().max()),
                "plain_output_max_abs": float(out_plain.abs().max()),
                "output_shape": list(out_ours.shape),
            }
        )
    result["loadavg_after"] = _loadavg()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
