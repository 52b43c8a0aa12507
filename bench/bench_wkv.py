"""CPU benchmark of the bidirectional WKV: our O(T) op against the O(T^2) formula, same inputs, same run.

Prints one JSON object. For T = 64^2, 128^2 and 256^2 tokens (the token counts of Restore-RWKV's level 1
on 64 / 128 / 256 pixel images), ``C = 48`` channels (the published model's level-1 width), batch 1,
float32, ``--threads`` threads:

* ours: forward time (``torch.inference_mode``), forward + backward time, and the peak memory of each,
  the largest difference from the reference (both float32);
* reference: :func:`restorer.ops.wkv.bi_wkv_reference`, the literal softmax over all ``T^2`` token pairs,
  computed 256 rows at a time so that its memory stays bounded (materialising all logits needs
  ``C * T^2 * 4`` bytes: 3.2 GB at 64^2, 52 GB at 128^2, 824 GB at 256^2, reported as
  ``full_matrix_bytes``, which is why it is never materialised). Its time grows with ``T^2``: where all
  channels would take more than ``--ref-budget`` seconds (estimated from a one-channel run) it runs on
  fewer channels, at least one, and the time is scaled to all channels (channels are independent and cost
  the same; ``ref_channels_run`` says how many ran); where one channel alone is estimated above
  ``--ref-cap`` seconds (256^2: about 16x the 128^2 time) it is skipped, with the estimate.

Peak memory is the growth of the process's peak resident set (``ru_maxrss``) during the first call,
each measurement in a fresh subprocess. Times are medians (and minima) of ``--runs`` calls after one
warm-up; ``cpu_s`` is the process CPU time of the same calls, which background load inflates less than
wall time. ``growth_per_4x_tokens`` gives the ratios of successive sizes (the aim: at most 4.5 per 4x
tokens, i.e. linear).

    python bench/bench_wkv.py [--threads 1] [--runs 7] [--channels 48] [--ref-budget 6] [--ref-cap 60]
        [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restorer.ops.wkv import bi_wkv_channels_first, bi_wkv_reference  # noqa: E402

SIDES = (64, 128, 256)
REF_BLOCK_ROWS = 256


def _inputs(t: int, c: int, seed: int = 0):
    """Model-scale inputs: ``w, u = N(0, 3^2) / T`` (``spatial_decay / T``), keys ``N(0, 2^2)``."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(c, generator=gen) * 3 / t
    u = torch.randn(c, generator=gen) * 3 / t
    k = torch.randn(1, c, t, generator=gen) * 2
    v = torch.randn(1, c, t, generator=gen)
    return w, u, k, v


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _measure(fn, runs: int) -> dict:
    """Peak memory growth of the first call, then median wall / CPU time of ``runs`` calls."""
    base = _rss_kib()
    fn()
    peak = max(0, _peak_kib() - base)
    walls, cpus = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {
        "wall_s": round(statistics.median(walls), 5),
        "min_s": round(min(walls), 5),
        "cpu_s": round(statistics.median(cpus), 5),
        "peak_mib": round(peak / 1024, 1),
    }


def child(mode: str, t: int, c: int, runs: int, threads: int) -> dict:
    """One measurement in this (fresh) process."""
    torch.set_num_threads(threads)
    w, u, k, v = _inputs(t, c)
    if mode == "forward":

        def fn():
            with torch.inference_mode():
                return bi_wkv_channels_first(w, u, k, v)

        return _measure(fn, runs)
    if mode == "train":
        params = [x.clone().requires_grad_() for x in (w, u, k, v)]
        grad = torch.randn(1, c, t, generator=torch.Generator().manual_seed(1))

        def fn():
            for p in params:
                p.grad = None
            bi_wkv_channels_first(*params).backward(grad)

        return _measure(fn, runs)
    if mode == "reference":
        kt, vt = k.transpose(1, 2), v.transpose(1, 2)

        def fn():
            with torch.inference_mode():
                return bi_wkv_reference(w, u, kt, vt, block_rows=REF_BLOCK_ROWS)

        result = _measure(fn, runs)
        with torch.inference_mode():
            ref = fn()
            ours = bi_wkv_channels_first(w, u, k, v).transpose(1, 2)
        result["max_abs_diff_ours_vs_ref"] = float((ours - ref).abs().max())
        return result
    raise ValueError(mode)


def _run_child(mode: str, t: int, c: int, runs: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(t), str(c), str(runs), str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--channels", type=int, default=48)
    ap.add_argument("--ref-budget", type=float, default=6.0, help="aim for one reference call (channels)")
    ap.add_argument("--ref-cap", type=float, default=60.0, help="skip the reference above this per channel")
    ap.add_argument("--quick", action="store_true", help="64^2 and 128^2 only, 3 runs")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        mode, t, c, runs, threads = args.child
        print(json.dumps(child(mode, int(t), int(c), int(runs), int(threads))))
        return {}

    sides = SIDES[:2] if args.quick else SIDES
    runs = 3 if args.quick else args.runs
    c = args.channels
    result: dict = {
        "op": f"Bi-WKV, (B, C, T) = (1, {c}, T), float32",
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "runs": runs,
        "loadavg_before": _loadavg(),
        "results": [],
    }
    per_channel_ref_s = None  # seconds per channel of one reference call, at the last T measured
    last_t = None
    for side in sides:
        t = side * side
        row: dict = {"T": t, "image": f"{side}x{side}"}
        row["ours_forward"] = _run_child("forward", t, c, runs, args.threads)
        row["ours_forward_backward"] = _run_child("train", t, c, max(1, runs // 2), args.threads)
        row["full_matrix_bytes"] = c * t * t * 4
        # Reference: estimate from the previous size (T^2 scaling) or a one-channel probe.
        if per_channel_ref_s is None:
            probe = _run_child("reference", t, 1, 1, args.threads)
            per_channel_ref_s = probe["wall_s"]
            last_t = t
        one_channel = per_channel_ref_s * (t / last_t) ** 2
        estimate = one_channel * c
        ref_channels = min(c, max(1, int(args.ref_budget // one_channel)))
        if one_channel <= args.ref_cap:
            ref = _run_child("reference", t, ref_channels, 1, args.threads)
            scale = c / ref_channels
            per_channel_ref_s, last_t = ref["wall_s"] / ref_channels, t
            row["reference"] = {
                "wall_s": round(ref["wall_s"] * scale, 3),
                "cpu_s": round(ref["cpu_s"] * scale, 3),
                "ref_channels_run": ref_channels,
                "extrapolated_to_all_channels": ref_channels < c,
                "peak_mib_blocked": ref["peak_mib"],
                "max_abs_diff_ours_vs_ref": ref["max_abs_diff_ours_vs_ref"],
            }
            row["speedup_vs_reference"] = round(row["reference"]["wall_s"] / row["ours_forward"]["wall_s"], 1)
            row["speedup_vs_reference_cpu"] = round(
                row["reference"]["cpu_s"] / row["ours_forward"]["cpu_s"], 1
            )
        else:
            row["reference"] = {
                "skipped": True,
                "why": (
                    f"O(T^2): estimated {estimate:.0f} s for one call ({one_channel:.0f} s per channel, "
                    f"over the {args.ref_cap:.0f} s cap); materialising its logits would need "
                    f"{row['full_matrix_bytes'] / 2**30:.0f} GiB"
                ),
                "estimated_wall_s": round(estimate, 1),
            }
        result["results"].append(row)
    res = result["results"]
    growth = []
    for a, b in zip(res, res[1:]):
        growth.append(
            {
                "from_T": a["T"],
                "to_T": b["T"],
                "forward_wall": round(b["ours_forward"]["wall_s"] / a["ours_forward"]["wall_s"], 2),
                "forward_best": round(b["ours_forward"]["min_s"] / a["ours_forward"]["min_s"], 2),
                "forward_cpu": round(b["ours_forward"]["cpu_s"] / a["ours_forward"]["cpu_s"], 2),
                "forward_backward_cpu": round(
                    b["ours_forward_backward"]["cpu_s"] / a["ours_forward_backward"]["cpu_s"], 2
                ),
                "forward_peak_mib": round(
                    b["ours_forward"]["peak_mib"] / max(a["ours_forward"]["peak_mib"], 0.1), 2
                ),
            }
        )
    result["growth_per_4x_tokens"] = growth
    result["loadavg_after"] = _loadavg()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
