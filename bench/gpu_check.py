"""The GPU path, proven in one command: every CUDA code path of the package, checked and timed (issue 18).

Prints one JSON report on stdout (logs go to stderr) and exits 1 if any check failed, 0 otherwise::

    python bench/gpu_check.py --device cuda --out results/gpu_check.json   # on a GPU machine (< 5 min, H200)
    python bench/gpu_check.py --device cpu                                 # dry run: CPU where CUDA would be
    python bench/gpu_check.py --device cpu --quick                         # CPU smoke test (tests/)

``bench/run_gpu_check.sh`` is the command to give the device tool. Nothing here needs the network: the
models get random weights (seeded) or the shipped ``restorer/bundled/restorer_*`` files, the images come from
``restorer/samples``. ``--device cpu`` runs every check with the CPU where CUDA would be, at small sizes
(the CUDA-only parts are reported as skipped, with the reason); ``--quick`` also cuts the random-weight
networks to one stage. ``--only NAME ...`` reruns some checks; ``--out FILE`` is rewritten after every
check, so a run stopped at a time limit still leaves what it did. ``--budget-s`` (CUDA: 270 s) is the
target the elastic parts (the 4K inputs of ``oom_retry`` and ``throughput``) shrink to meet.

Checks (each one recorded on its own; a failure is kept with its error and the others still run):

``environment``
    torch, CUDA, the device, the package's imports. On ``--device cuda`` without a GPU the rest is not run.
``device_selection``
    ``resolve_device`` (``auto``, ``cuda``, ``cuda:N``, an index past the last GPU), ``resolve_precision``
    (``auto`` per zoo architecture, the fp16 warning for models the zoo marks unsafe) and ``auto_tile``.
``zoo_tiled``
    One variant per architecture (HAT-S, DRCT, CRAFT, DLGSANet-light, Restore-RWKV-light, RRFormer small;
    S2LIC small as a plain forward), random weights saved to a checkpoint and loaded by ``build_restorer``,
    tiled on the device in fp32, bf16 and fp16, against the CPU fp32 output of the same weights and tiles:
    PSNR, relative error, no NaN/inf, no black or flat tiles. Precisions the zoo marks unsafe still run but
    only for information (``required: false``); they never fail the check.
``oom_retry``
    CUDA: the process's CUDA memory is capped (``torch.cuda.set_per_process_memory_fraction``) between what a
    256 px and a 512 px HAT-S x4 tile need, a 4K input is run with 512 px tiles, the engine must fall back
    to smaller tiles, and its output must equal the uncapped run with the tiles that fitted. CPU: skipped
    (no CUDA memory to cap); the same fallback is simulated with an injected out-of-memory error instead.
``wkv_cuda``
    CUDA: the Bi-WKV CUDA kernel builds at run time, passes its self-check, is what ``bi_wkv`` dispatches to
    without gradients, and matches the O(T) PyTorch scan (and the O(T^2) formula) in values; gradients (the
    PyTorch path on the GPU) match the formula's on the CPU in float64. CPU: skipped; the scan is still
    checked against the formula on the CPU.
``training``
    A few steps of each bundled recipe through ``RestorerSRModel`` (the recipe's network, optimizer, loss,
    gradient clipping, EMA and ``train.speed``, e.g. bf16 autocast + channels_last) on fixed batches cut
    from ``restorer/samples``: the loss must fall and stay finite.
``throughput``
    Input megapixels per second, tiled with the default tile and precision, for HAT-S x4, CRAFT x4 (the
    bundled x4 weights: CRAFT's published configuration), the bundled x2 CRAFT and the bundled denoiser, on
    a 3840x2160 input on the device (peak GPU memory too), next to CPU numbers of the same models measured
    in the same run on a small input. A device run projected to take too long gets a smaller input, said so.
``cli_infer``
    ``python -m restorer infer --device cuda ...`` (``--device cpu`` in the dry run) on ``restorer/samples``
    into a temporary folder: exit status 0, every output written at the right size and close to a
    bicubic / identity baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SAMPLES = ROOT / "restorer" / "samples"
RECIPES = (
    "options/train/bundled_CRAFT_SRx2_corpus.yml",
    "options/train/bundled_RestoreRWKV_denoise_sigma25_corpus.yml",
)
# One variant per architecture: (zoo key, tiled through the engine?)
ZOO_VARIANTS = (
    ("hat-s@x4", True),
    ("drct@x4", True),
    ("craft@x4", True),
    ("dlgsanet-light@x4", True),
    ("restore-rwkv-light@x1", True),
    ("rrformer-small@x1", True),
    ("s2lic-small-q1@x1", False),
)
# Throughput rows: (label, zoo key, weights: "random" or "shipped")
THROUGHPUT_ROWS = (
    ("HAT-S x4", "hat-s@x4", "random"),
    ("CRAFT x4 (bundled sr_x4 default)", "craft-bundled@x4", "shipped"),
    ("CRAFT x2 (bundled sr_x2 default)", "craft-bundled@x2", "shipped"),
    ("Restore-RWKV-light (bundled denoise default)", "restore-rwkv-light@x1", "shipped"),
)
# Pass criteria of a device output against the CPU fp32 output of the same weights and tiles.
CRITERIA = {
    "fp32": {"min_psnr_db": 50.0, "max_rel_err": 0.02},
    "bf16": {"min_psnr_db": 30.0, "max_rel_err": 0.15},
    "fp16": {"min_psnr_db": 30.0, "max_rel_err": 0.15},
}
PSNR_IDENTICAL = 999.0  # reported instead of infinity (JSON has none)

log = logging.getLogger("gpu_check")


# ------------------------------------------------------------------------------------------------
# Run configuration
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one run. ``cuda``: the real check; ``cpu``: the dry run; ``quick``: the CPU smoke test."""

    name: str
    zoo_size: tuple[int, int]  # (width, height) of the zoo check's input
    zoo_tile: int
    rrformer_size: tuple[int, int]
    rrformer_tile: int
    s2lic_size: tuple[int, int]
    shrink_networks: bool  # depth lists cut to one stage: the architecture's code runs, in seconds
    oom_size: tuple[int, int]
    train_steps: int
    train_batch: int | None  # None: the recipe's batch size
    train_gt: int | None  # None: the recipe's patch size
    throughput_size: tuple[int, int]
    throughput_cpu_size: dict[str, tuple[int, int]]
    throughput_row_limit_s: float
    wkv_lengths: tuple[int, ...]
    cli_tasks: tuple[str, ...]


PLANS = {
    "cuda": Plan(
        name="cuda",
        zoo_size=(192, 128),
        zoo_tile=64,
        rrformer_size=(320, 256),
        rrformer_tile=128,
        s2lic_size=(256, 192),
        shrink_networks=False,
        oom_size=(3840, 2160),
        train_steps=20,
        train_batch=None,
        train_gt=None,
        throughput_size=(3840, 2160),
        throughput_cpu_size={"hat-s@x4": (128, 128)},  # others: (256, 256)
        throughput_row_limit_s=40.0,
        wkv_lengths=(1, 63, 257, 4099),
        cli_tasks=("sr_x4", "denoise"),
    ),
    "cpu": Plan(
        name="cpu",
        zoo_size=(64, 48),
        zoo_tile=32,
        rrformer_size=(128, 96),
        rrformer_tile=64,
        s2lic_size=(128, 64),
        shrink_networks=False,
        oom_size=(96, 64),
        train_steps=6,
        train_batch=2,
        train_gt=48,
        throughput_size=(128, 128),
        throughput_cpu_size={},
        throughput_row_limit_s=60.0,
        wkv_lengths=(1, 63, 257),
        cli_tasks=("sr_x4", "denoise"),
    ),
    "quick": Plan(
        name="quick",
        zoo_size=(64, 48),
        zoo_tile=32,
        rrformer_size=(128, 96),
        rrformer_tile=64,
        s2lic_size=(64, 64),
        shrink_networks=True,
        oom_size=(96, 64),
        train_steps=4,
        train_batch=2,
        train_gt=32,
        throughput_size=(64, 64),
        throughput_cpu_size={},
        throughput_row_limit_s=20.0,
        wkv_lengths=(1, 63, 130),
        cli_tasks=("sr_x4",),
    ),
}


@dataclasses.dataclass
class Context:
    device: torch.device
    plan: Plan
    tmp: Path
    deadline: float  # time.monotonic() after which elastic work shrinks

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def time_left(self) -> float:
        return self.deadline - time.monotonic()


class Skip(Exception):
    """A check that does not apply here; its message is the reason."""


class CheckFailed(AssertionError):
    """A check ran and its result is wrong."""


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return round(float(value), digits)


def _sig(value: float) -> float | None:
    """``value`` to three significant digits (errors from 1e-16 to 1)."""
    return float(f"{value:.3g}") if math.isfinite(value) else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def sample_image(width: int, height: int, name: str = "astronaut_face.png") -> torch.Tensor:
    """A sample photo resized to ``width`` x ``height``: (1, 3, H, W) float32 CPU in [0, 1]."""
    import cv2

    bgr = cv2.imread(str(SAMPLES / name), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(SAMPLES / name)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    rgb = np.clip(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].contiguous()


def shrink_options(options: dict[str, Any]) -> dict[str, Any]:
    """The same architecture with one stage of at most two blocks (``--quick``: seconds on a CPU)."""
    out = dict(options)
    for key in ("depths", "num_heads"):
        value = out.get(key)
        if isinstance(value, list) and len(value) > 1 and out.get("type") != "S2LIC":
            out[key] = value[:1]
    if isinstance(out.get("depths"), list) and out.get("type") != "S2LIC":
        out["depths"] = [min(int(d), 2) for d in out["depths"]]
    for key in ("groups", "blocks"):
        if isinstance(out.get(key), int):
            out[key] = 1
    return out


def variant(key: str, plan: Plan, shipped: bool = False):
    """The zoo entry ``key``; with random weights and ``--quick``, its network shrunk."""
    from restorer import zoo

    entry = zoo.ZOO[key]
    if plan.shrink_networks and not shipped:
        entry = dataclasses.replace(entry, network_g=shrink_options(entry.network_options()))
    return entry


def random_checkpoint(entry, folder: Path, seed: int = 0) -> Path:
    """An official-format checkpoint of ``entry``'s network with seeded random weights."""
    from restorer.archs import build_network

    torch.manual_seed(seed)
    net = build_network(entry.network_options())
    path = folder / f"random_{entry.model}_x{entry.scale}.pth"
    torch.save({entry.param_key: net.state_dict()}, path)
    return path


def compare(output: torch.Tensor, reference: torch.Tensor, cell: int) -> dict[str, Any]:
    """PSNR (data range 1, unclamped), error relative to the reference's spread, non-finite values, and
    ``cell`` x ``cell`` blocks that came out black or flat where the reference is not."""
    out = output.detach().double().cpu()
    ref = reference.detach().double().cpu()
    if out.shape != ref.shape:
        raise CheckFailed(f"output shape {tuple(out.shape)} != reference shape {tuple(ref.shape)}")
    finite = torch.isfinite(out)
    nonfinite = int((~finite).sum())
    diff = torch.where(finite, out - ref, torch.zeros_like(out))
    mse = float(diff.pow(2).mean())
    psnr = PSNR_IDENTICAL if mse == 0 else min(PSNR_IDENTICAL, 10 * math.log10(1.0 / mse))
    spread = float((ref - ref.mean()).pow(2).mean().sqrt())
    rel = math.sqrt(mse) / max(spread, 1e-12)
    h, w = out.shape[-2:]
    black = flat = 0
    worst_cell = PSNR_IDENTICAL
    cells = 0
    for y in range(0, h, cell):
        for x in range(0, w, cell):
            o = out[..., y : y + cell, x : x + cell]
            r = ref[..., y : y + cell, x : x + cell]
            cells += 1
            if not torch.isfinite(o).all():
                continue
            if float(o.abs().mean()) < 0.02 and float(r.abs().mean()) > 0.05:
                black += 1
            elif float(o.std()) < 1e-6 and float(r.std()) > 1e-4:
                flat += 1
            cell_mse = float((o - r).pow(2).mean())
            if cell_mse > 0:
                worst_cell = min(worst_cell, 10 * math.log10(1.0 / cell_mse))
    return {
        "psnr_db": _round(psnr, 2),
        "worst_cell_psnr_db": _round(worst_cell, 2),
        "rel_err": _round(rel, 6),
        "max_abs_err": _round(float(diff.abs().max()), 6),
        "nonfinite": nonfinite,
        "black_cells": black,
        "flat_cells": flat,
        "cells": cells,
    }


def judge(metrics: dict[str, Any], precision: str) -> list[str]:
    """What is wrong with ``metrics`` under the ``precision``'s criteria (empty: nothing)."""
    crit = CRITERIA[precision]
    problems = []
    if metrics["nonfinite"]:
        problems.append(f"{metrics['nonfinite']} NaN/inf values")
    if metrics["black_cells"] or metrics["flat_cells"]:
        problems.append(f"{metrics['black_cells']} black and {metrics['flat_cells']} flat cells")
    if metrics["psnr_db"] is None or metrics["psnr_db"] < crit["min_psnr_db"]:
        problems.append(f"PSNR {metrics['psnr_db']} dB < {crit['min_psnr_db']}")
    if metrics["rel_err"] is None or metrics["rel_err"] > crit["max_rel_err"]:
        problems.append(f"relative error {metrics['rel_err']} > {crit['max_rel_err']}")
    return problems


def tiled_run(restorer, image: torch.Tensor) -> tuple[torch.Tensor, float]:
    _sync(restorer.device)
    start = time.perf_counter()
    out = restorer.run_tensor(image)
    _sync(restorer.device)
    return out, time.perf_counter() - start


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) < 2000 else text[:2000] + " ..."


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------


def check_environment(ctx: Context) -> dict[str, Any]:
    details: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    with contextlib.suppress(Exception):
        details["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    from restorer._compat import ensure_basicsr_importable

    ensure_basicsr_importable()
    versions = {}
    for module in ("numpy", "cv2", "basicsr", "compressai", "torchvision"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "?")
        except Exception as exc:  # reported; the checks that need it fail on their own
            versions[module] = f"missing: {_error_text(exc)}"
    details["packages"] = versions
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        details.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            capability=".".join(map(str, torch.cuda.get_device_capability(0))),
            gpu_memory_gib=_round(props.total_memory / 2**30, 1),
            bf16_supported=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
        )
    from restorer.archs import register_all

    register_all()  # every architecture imports
    if ctx.cuda and not torch.cuda.is_available():
        raise CheckFailed("--device cuda, but torch.cuda.is_available() is False", details)
    return details


def check_device_selection(ctx: Context) -> dict[str, Any]:
    from restorer import zoo
    from restorer.engine.runner import auto_tile, resolve_device, resolve_precision
    from restorer.errors import UsageError

    details: dict[str, Any] = {}
    problems = []

    def expect_error(spec: str, fragment: str) -> None:
        try:
            got = resolve_device(spec)
        except UsageError as exc:
            details[f"resolve_device({spec!r})"] = f"UsageError: {exc}"
            if fragment not in str(exc):
                problems.append(f"resolve_device({spec!r}) error lacks {fragment!r}: {exc}")
            return
        details[f"resolve_device({spec!r})"] = str(got)
        problems.append(f"resolve_device({spec!r}) gave {got}, expected an error")

    auto = resolve_device("auto")
    details["resolve_device('auto')"] = str(auto)
    if ctx.cuda:
        count = torch.cuda.device_count()
        for spec in ("cuda", "cuda:0"):
            got = resolve_device(spec)
            details[f"resolve_device({spec!r})"] = str(got)
            if got.type != "cuda" or got.index != 0:
                problems.append(f"resolve_device({spec!r}) gave {got}")
        if auto.type != "cuda":
            problems.append(f"resolve_device('auto') gave {auto} on a CUDA machine")
        expect_error(f"cuda:{count}", "only")
    else:
        if auto.type != "cpu" and not torch.cuda.is_available():
            problems.append(f"resolve_device('auto') gave {auto} without CUDA")
        if not torch.cuda.is_available():
            expect_error("cuda", "no CUDA GPU")
    device = ctx.device
    details["auto_tile"] = auto_tile(device)
    precisions = {}
    for key, _ in ZOO_VARIANTS:
        entry = zoo.ZOO[key]
        got = str(resolve_precision("auto", device, entry)).replace("torch.", "")
        precisions[key] = got
        if device.type == "cpu":
            expected = "float32"
        elif entry.supports_bf16 and torch.cuda.is_bf16_supported():
            expected = "bfloat16"
        elif entry.supports_fp16:
            expected = "float16"
        else:
            expected = "float32"
        if got != expected:
            problems.append(f"auto precision of {key}: {got}, expected {expected}")
    details["auto_precision"] = precisions
    # the fp16 guard: an explicit fp16 on a model the zoo marks unsafe is honoured, with a warning
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    runner_log = logging.getLogger("restorer.engine.runner")
    runner_log.addHandler(handler)
    try:
        dtype = resolve_precision("fp16", device, zoo.ZOO["hat-s@x4"])
    finally:
        runner_log.removeHandler(handler)
    warned = any("fp16" in r.getMessage() for r in records)
    details["fp16_guard"] = {"dtype": str(dtype).replace("torch.", ""), "warned": warned}
    if dtype != torch.float16 or not warned:
        problems.append("explicit fp16 on HAT-S: expected float16 with a warning")
    if problems:
        raise CheckFailed("; ".join(problems))
    return details


def check_zoo_tiled(ctx: Context) -> dict[str, Any]:
    from restorer.engine.runner import build_restorer

    plan = ctx.plan
    items: dict[str, Any] = {}
    failures = []
    for key, tiled in ZOO_VARIANTS:
        start = time.perf_counter()
        item: dict[str, Any] = {}
        items[key] = item
        try:
            entry = variant(key, plan)
            item["network_shrunk"] = plan.shrink_networks
            if not tiled:
                item.update(_zoo_plain_forward(ctx, entry))
            else:
                item.update(_zoo_tiled_one(ctx, entry, build_restorer))
            bad = [
                f"{p}: {r['error']}"
                for p, r in item["precisions"].items()
                if r.get("required") and r.get("error")
            ]
            bad += [
                f"{p}: {'; '.join(r['problems'])}"
                for p, r in item["precisions"].items()
                if r.get("required") and r.get("problems")
            ]
            item["status"] = "failed" if bad else "passed"
            if bad:
                failures.append(f"{key}: {' | '.join(bad)}")
        except Exception as exc:
            item["status"] = "failed"
            item["error"] = _error_text(exc)
            failures.append(f"{key}: {item['error']}")
        item["seconds"] = _round(time.perf_counter() - start, 2)
        _free(ctx.device)
    details = {"criteria": CRITERIA, "items": items}
    if failures:
        raise CheckFailed("; ".join(failures), details)
    return details


def _precision_plan(entry) -> list[tuple[str, bool, str | None]]:
    """(precision, required, note) for the device runs of ``entry``."""
    rows = [("fp32", True, None)]
    rows.append(
        ("bf16", entry.supports_bf16, None if entry.supports_bf16 else "zoo: not bf16-safe (info only)")
    )
    rows.append(
        ("fp16", entry.supports_fp16, None if entry.supports_fp16 else "zoo: not fp16-safe (info only)")
    )
    return rows


def _zoo_tiled_one(ctx: Context, entry, build_restorer) -> dict[str, Any]:
    plan = ctx.plan
    if entry.arch == "RRFormer":
        size, tile = plan.rrformer_size, plan.rrformer_tile
    else:
        size, tile = plan.zoo_size, plan.zoo_tile
    image = sample_image(*size)
    weights = random_checkpoint(entry, ctx.tmp)
    reference = build_restorer(entry, weights, device="cpu", precision="fp32", tile=tile)
    tiles = reference.tile_count(size[1], size[0])
    ref_out, ref_s = tiled_run(reference, image)
    result: dict[str, Any] = {
        "input": list(size),
        "tile": list(reference.tile.resolved(entry.window_multiple)),
        "tiles": tiles,
        "cpu_fp32_s": _round(ref_s, 3),
        "precisions": {},
    }
    if tiles < 2:
        raise CheckFailed(f"the input gives {tiles} tile(s): the check needs several")
    cell = max(8, tile * entry.scale // 2)
    del reference
    for precision, required, note in _precision_plan(entry):
        row: dict[str, Any] = {"required": required}
        if note:
            row["note"] = note
        result["precisions"][precision] = row
        if not required and not ctx.cuda:
            row["skipped"] = "info only (the zoo marks this precision unsafe): runs on CUDA only"
            continue
        try:
            if precision == "fp32" and not ctx.cuda:
                out, seconds = ref_out, ref_s
                row["note"] = "dry run: the device is the CPU, so this run is the reference itself"
            else:
                restorer = build_restorer(
                    entry, weights, device=str(ctx.device), precision=precision, tile=tile
                )
                out, seconds = tiled_run(restorer, image)
                del restorer
            row["seconds"] = _round(seconds, 3)
            row.update(compare(out, ref_out, cell))
            problems = judge(row, precision)
            if problems:
                row["problems"] = problems
        except Exception as exc:
            row["error"] = _error_text(exc)
        _free(ctx.device)
    return result


def _zoo_plain_forward(ctx: Context, entry) -> dict[str, Any]:
    """S2LIC: the whole codec network's training-style forward (x_hat and likelihoods), no tiling."""
    from restorer.archs import build_network

    width, height = ctx.plan.s2lic_size
    image = sample_image(width, height)
    torch.manual_seed(0)
    net = build_network(entry.network_options()).eval()
    with torch.no_grad():
        start = time.perf_counter()
        ref = net(image)
        ref_s = time.perf_counter() - start

    def bits(out) -> float:
        return float(
            sum((-torch.log2(v.double().clamp_min(1e-9))).sum() for v in out["likelihoods"].values())
        )

    ref_bits = bits(ref)
    result: dict[str, Any] = {"input": [width, height], "cpu_fp32_s": _round(ref_s, 3), "precisions": {}}
    for precision, required, note in _precision_plan(entry):
        row: dict[str, Any] = {"required": required}
        if note:
            row["note"] = note
        result["precisions"][precision] = row
        if not required and not ctx.cuda:
            row["skipped"] = "info only (the zoo marks this precision unsafe): runs on CUDA only"
            continue
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        try:
            model = build_network(entry.network_options())
            model.load_state_dict(net.state_dict())
            model = model.eval().to(ctx.device, dtype)
            with torch.no_grad():
                _sync(ctx.device)
                start = time.perf_counter()
                out = model(image.to(ctx.device, dtype))
                _sync(ctx.device)
                row["seconds"] = _round(time.perf_counter() - start, 3)
            row.update(compare(out["x_hat"].float(), ref["x_hat"], 32))
            row["bits_rel_diff"] = _round(abs(bits(out) - ref_bits) / max(ref_bits, 1e-9), 6)
            problems = judge(row, precision)
            if problems:
                row["problems"] = problems
            del model, out
        except Exception as exc:
            row["error"] = _error_text(exc)
        _free(ctx.device)
    return result


def check_oom_retry(ctx: Context) -> dict[str, Any]:
    if ctx.cuda:
        return _oom_cuda(ctx)
    details = _oom_simulated(ctx)
    raise Skip(
        "needs CUDA: a CPU has no device memory to cap with torch.cuda.set_per_process_memory_fraction; "
        "the engine's fallback was simulated instead with an injected out-of-memory error (details)",
        details,
    )


def _oom_simulated(ctx: Context) -> dict[str, Any]:
    from restorer.engine.runner import build_restorer
    from restorer.engine.tiling import TileSettings

    entry = variant("hat-s@x4", ctx.plan)
    width, height = ctx.plan.oom_size
    image = sample_image(width, height)
    weights = random_checkpoint(entry, ctx.tmp)
    restorer = build_restorer(entry, weights, device="cpu", precision="fp32", tile=64)
    limit = 32 * 32
    real_forward = restorer._forward
    refused = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] * x.shape[-2] > limit:
            refused.append(tuple(x.shape[-2:]))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by bench/gpu_check.py)")
        return real_forward(x)

    messages: list[str] = []
    restorer._forward = forward  # type: ignore[method-assign]
    restorer.on_message = messages.append
    capped, capped_s = tiled_run(restorer, image)
    used = restorer.tile
    restorer._forward = real_forward  # type: ignore[method-assign]
    restorer.tile = TileSettings(used.tile, used.overlap)
    plain, plain_s = tiled_run(restorer, image)
    equal = bool(torch.equal(capped, plain))
    details = {
        "simulated": True,
        "input": [width, height],
        "first_tile": 64,
        "tile_after_retry": used.tile,
        "refused_tiles": len(refused),
        "messages": messages,
        "bitwise_equal": equal,
        "max_abs_diff": _round(float((capped - plain).abs().max()), 8),
        "seconds": {"capped": _round(capped_s, 3), "uncapped": _round(plain_s, 3)},
    }
    if not messages or used.tile >= 64:
        raise CheckFailed(f"no fallback to smaller tiles (tile {used.tile}, messages {messages})", details)
    if not equal:
        raise CheckFailed("output after the fallback differs from the plain run with the same tiles", details)
    return details


def _oom_cuda(ctx: Context) -> dict[str, Any]:
    from restorer.engine.runner import build_restorer
    from restorer.engine.tiling import TileSettings, count_tiles

    device = ctx.device
    entry = variant("hat-s@x4", ctx.plan)
    weights = random_checkpoint(entry, ctx.tmp)
    restorer = build_restorer(entry, weights, device=str(device), precision="auto", tile=512)
    dtype = restorer.dtype
    total = torch.cuda.get_device_properties(device).total_memory
    # Memory one tile needs: reserved bytes above the model's, from an empty cache.
    _free(device)
    base = torch.cuda.memory_reserved(device)
    peaks, tile_s = {}, {}
    for tile in (256, 512):
        x = torch.rand(1, 3, tile, tile, device=device, dtype=dtype)
        with torch.no_grad():
            restorer.model(x)  # warm-up (kernels, workspaces)
            _free(device)
            torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start = time.perf_counter()
            restorer.model(x)
            _sync(device)
            tile_s[tile] = time.perf_counter() - start
        peaks[tile] = torch.cuda.max_memory_reserved(device) - base
        del x
        _free(device)
    cap = base + math.sqrt(peaks[256] * peaks[512])
    fraction = cap / total
    # The input: 4K unless two passes with 256 px tiles would not fit the time left.
    width, height = ctx.plan.oom_size
    note = None
    for w, h in ((width, height), (1920, 1080), (960, 540)):
        projected = 2.2 * tile_s[256] * count_tiles(h, w, TileSettings(256), entry.window_multiple)
        width, height = w, h
        if projected < min(90.0, max(20.0, ctx.time_left() * 0.3)):
            break
    if (width, height) != ctx.plan.oom_size:
        note = f"input reduced from {ctx.plan.oom_size} to {(width, height)}: 4K projected too slow"
    image = sample_image(width, height)
    details: dict[str, Any] = {
        "model": "HAT-S x4 (random weights)",
        "dtype": str(dtype).replace("torch.", ""),
        "input": [width, height],
        "note": note,
        "tile_extra_reserved_gib": {str(k): _round(v / 2**30, 3) for k, v in peaks.items()},
        "tile_forward_s": {str(k): _round(v, 4) for k, v in tile_s.items()},
        "model_reserved_gib": _round(base / 2**30, 3),
        "cap_gib": _round(cap / 2**30, 3),
        "cap_fraction": _round(fraction, 6),
        "first_tile": 512,
    }
    messages: list[str] = []
    restorer.on_message = messages.append
    restorer.tile = TileSettings(512, None)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        capped, capped_s = tiled_run(restorer, image)
        details["capped_peak_reserved_gib"] = _round(torch.cuda.max_memory_reserved(device) / 2**30, 3)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        _free(device)
    used = restorer.tile
    details.update(messages=messages, tile_after_retry=used.tile, overlap_after_retry=used.overlap)
    plain, plain_s = tiled_run(restorer, image)  # uncapped, the tiles that fitted
    diff = (capped - plain).abs_()
    mse = float(diff.square().mean(dtype=torch.float64))
    details.update(
        bitwise_equal=bool(torch.equal(capped, plain)),
        max_abs_diff=_sig(float(diff.max())),
        psnr_db=PSNR_IDENTICAL if mse == 0 else _round(min(PSNR_IDENTICAL, 10 * math.log10(1 / mse)), 2),
        seconds={"capped": _round(capped_s, 2), "uncapped": _round(plain_s, 2)},
        tiles={"capped": count_tiles(height, width, used, entry.window_multiple)},
    )
    del capped, plain, diff
    if not messages or not used.tile or used.tile >= 512:
        raise CheckFailed(f"the capped run did not fall back to smaller tiles (tile {used.tile})", details)
    if not details["bitwise_equal"] and (details["max_abs_diff"] or 1.0) > 2e-2:
        raise CheckFailed("the capped output differs from the uncapped one with the same tiles", details)
    return details


def _wkv_inputs(b: int, c: int, t: int, seed: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(c, generator=gen, dtype=torch.float64) * 5 / max(t, 1)
    u = torch.randn(c, generator=gen, dtype=torch.float64) * 5 / max(t, 1)
    k = torch.randn(b, t, c, generator=gen, dtype=torch.float64) * 3
    v = torch.randn(b, t, c, generator=gen, dtype=torch.float64)
    return [x.to(dtype) for x in (w, u, k, v)]


def _wkv_grads(fn, args, upstream):
    leaves = [a.detach().clone().requires_grad_(True) for a in args]
    y = fn(*leaves)
    (y * upstream.to(y.device, y.dtype)).sum().backward()
    return y.detach(), [leaf.grad.detach() for leaf in leaves]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _wkv_scan_vs_formula(device: torch.device, lengths) -> dict[str, Any]:
    """The O(T) scan against the O(T^2) formula on ``device``: values and gradients, float64 and float32."""
    from restorer.ops import wkv

    rows = {}
    worst = {"values_f64": 0.0, "grads_f64": 0.0, "values_f32": 0.0, "grads_f32": 0.0}
    for t in lengths:
        if t > 1100:
            continue
        args = _wkv_inputs(2, 8, t, seed=t)
        upstream = torch.randn(2, t, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        ref_y, ref_g = _wkv_grads(wkv.bi_wkv_reference, args, upstream)  # CPU, float64
        for dtype, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
            dev_args = [a.to(device, dtype) for a in args]
            y, g = _wkv_grads(wkv.bi_wkv, dev_args, upstream)
            v_err = _rel(y, ref_y)
            g_err = max(_rel(a, b) for a, b in zip(g, ref_g))
            rows[f"T={t} {tag}"] = {"values_rel": _sig(v_err), "grads_rel": _sig(g_err)}
            worst[f"values_{tag}"] = max(worst[f"values_{tag}"], v_err)
            worst[f"grads_{tag}"] = max(worst[f"grads_{tag}"], g_err)
    limits = {"values_f64": 1e-9, "grads_f64": 1e-8, "values_f32": 1e-4, "grads_f32": 1e-3}
    bad = [f"{k} {worst[k]:.3g} > {limits[k]:g}" for k in limits if not worst[k] <= limits[k]]
    return {
        "cases": rows,
        "worst": {k: _sig(v) for k, v in worst.items()},
        "limits": limits,
        "bad": bad,
    }


def check_wkv_cuda(ctx: Context) -> dict[str, Any]:
    from restorer.ops import wkv

    if not ctx.cuda:
        dry = _wkv_scan_vs_formula(torch.device("cpu"), ctx.plan.wkv_lengths)
        if dry["bad"]:
            raise CheckFailed(
                "CPU scan differs from the formula: " + "; ".join(dry["bad"]), {"cpu_scan": dry}
            )
        raise Skip(
            "needs CUDA: the WKV kernel (restorer/ops/wkv_cuda) is built and run only on a CUDA device; "
            "the CPU O(T) scan was checked against the O(T^2) formula instead (details)",
            {"cpu_scan": dry},
        )
    device = ctx.device
    os.environ.setdefault("MAX_JOBS", str(min(16, os.cpu_count() or 4)))
    start = time.perf_counter()
    module = wkv._cuda_module(device)
    details: dict[str, Any] = {
        "build_and_self_check_s": _round(time.perf_counter() - start, 2),
        "status": wkv.cuda_kernel_status(),
    }
    if module is None:
        raise CheckFailed(f"kernel not available: {wkv.cuda_kernel_status()}", details)
    values = {}
    worst32 = worst64 = worst_formula = 0.0
    for t in ctx.plan.wkv_lengths:
        w, u, k, v = (x.to(device) for x in _wkv_inputs(2, 16, t, seed=t))
        kc, vc = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
        scan = wkv._bi_wkv_torch(w, u, kc, vc)  # float64 O(T) scan on the GPU
        k64 = module.forward(w, u, kc, vc)
        k32 = module.forward(*(x.float() for x in (w, u, kc, vc))).double()
        e64, e32 = float((k64 - scan).abs().max()), float((k32 - scan).abs().max())
        row = {"kernel_f64_vs_scan": _sig(e64), "kernel_f32_vs_scan": _sig(e32)}
        if t <= 4200:
            formula = wkv.bi_wkv_reference(w, u, k, v, block_rows=512).transpose(1, 2)
            ef = float((k64 - formula).abs().max())
            row["kernel_f64_vs_formula"] = _sig(ef)
            worst_formula = max(worst_formula, ef)
        values[f"T={t}"] = row
        worst32, worst64 = max(worst32, e32), max(worst64, e64)
    details["values"] = values
    # dispatch: bi_wkv without gradients is the kernel's output; with gradients the PyTorch scan
    w, u, k, v = (x.to(device).float() for x in _wkv_inputs(1, 48, 4096, seed=7))
    with torch.no_grad():
        dispatched = wkv.bi_wkv(w, u, k, v)
    direct = module.forward(w, u, k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()).transpose(
        1, 2
    )
    details["no_grad_dispatch_is_kernel"] = bool(torch.equal(dispatched, direct))
    with torch.enable_grad():
        scan_out = wkv.bi_wkv(*(x.clone().requires_grad_(True) for x in (w, u, k, v)))
    details["grad_path_vs_kernel_f32"] = _sig(float((scan_out.detach() - direct).abs().max()))
    grads = _wkv_scan_vs_formula(device, ctx.plan.wkv_lengths)
    details["gradients"] = grads
    # speed at a model-sized sequence (Restore-RWKV-light: 16..128 channels, 512x512 tokens)
    w, u, k, v = (x.to(device).float() for x in _wkv_inputs(1, 48, 512 * 512, seed=3))
    kc, vc = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
    timing = {}
    for name, fn in (("kernel", module.forward), ("pytorch_scan", wkv._bi_wkv_torch)):
        with torch.no_grad():
            fn(w, u, kc, vc)
            _sync(device)
            start = time.perf_counter()
            for _ in range(5):
                fn(w, u, kc, vc)
            _sync(device)
        timing[name] = _round((time.perf_counter() - start) / 5 * 1e3, 3)
    details["forward_ms_B1_C48_T262144"] = timing
    problems = []
    if not worst64 < 1e-9:
        problems.append(f"float64 kernel differs from the scan by {worst64:.3g}")
    if not worst32 < 1e-4:
        problems.append(f"float32 kernel differs from the scan by {worst32:.3g}")
    if not worst_formula < 1e-9:
        problems.append(f"float64 kernel differs from the formula by {worst_formula:.3g}")
    if not details["no_grad_dispatch_is_kernel"]:
        problems.append("bi_wkv without gradients did not return the kernel's output")
    if not (details["grad_path_vs_kernel_f32"] or 0) < 1e-4:
        problems.append("the gradient path's output differs from the kernel's")
    problems += grads["bad"]
    if problems:
        raise CheckFailed("; ".join(problems), details)
    return details


def _training_batch(opt: dict, plan: Plan, seed: int) -> dict[str, torch.Tensor]:
    """A fixed (lq, gt) batch of the recipe's kind cut from the sample photos."""
    import cv2

    train = opt["datasets"]["train"]
    scale = int(opt.get("scale", 1))
    batch = plan.train_batch or int(train["batch_size_per_gpu"])
    gt_size = (plan.train_gt or int(train["gt_size"])) // scale * scale
    rng = np.random.default_rng(seed)
    photos = []
    for path in sorted(SAMPLES.glob("*.png")):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        if min(rgb.shape[:2]) < gt_size:
            factor = gt_size / min(rgb.shape[:2]) + 0.01
            rgb = cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        photos.append(np.clip(rgb, 0, 1))
    crops = []
    for i in range(batch):
        photo = photos[i % len(photos)]
        y = int(rng.integers(0, photo.shape[0] - gt_size + 1))
        x = int(rng.integers(0, photo.shape[1] - gt_size + 1))
        crops.append(photo[y : y + gt_size, x : x + gt_size])
    gt = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    if scale > 1:
        lq = torch.nn.functional.interpolate(
            gt, scale_factor=1 / scale, mode="bicubic", antialias=True
        ).clamp(0, 1)
    else:
        degradation = train.get("degradation") or {}
        sigma = float(degradation.get("sigma", 25)) / 255.0
        lq = gt + sigma * torch.randn(gt.shape, generator=torch.Generator().manual_seed(seed))
    return {"lq": lq, "gt": gt}


def check_training(ctx: Context) -> dict[str, Any]:
    import yaml

    from restorer.archs import register_all

    register_all()
    from restorer.training.models import RestorerSRModel

    items: dict[str, Any] = {}
    failures = []
    for recipe in RECIPES:
        name = Path(recipe).stem
        item: dict[str, Any] = {"recipe": recipe}
        items[name] = item
        start = time.perf_counter()
        try:
            opt = yaml.safe_load((ROOT / recipe).read_text())
            opt.update(num_gpu=1 if ctx.cuda else 0, dist=False, is_train=True, rank=0, world_size=1)
            # random (seeded) start instead of the shipped weights, no warm-up: a few steps move the loss
            opt["path"] = {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None}
            warmup = opt["train"].get("warmup_iter", -1)
            batch = _training_batch(opt, ctx.plan, seed=0)
            if ctx.cuda:
                torch.cuda.reset_peak_memory_stats(ctx.device)
            torch.manual_seed(0)
            model = RestorerSRModel(opt)
            if model.device.type != ctx.device.type:
                raise CheckFailed(f"the model runs on {model.device}, expected {ctx.device.type}")
            speed = model.speed
            item.update(
                device=str(next(model.net_g.parameters()).device),
                speed=speed.describe(),
                recipe_speed=opt["train"].get("speed"),
                batch=list(batch["lq"].shape),
                gt=list(batch["gt"].shape),
                note=f"random init and warmup_iter {warmup} -> -1, so that {ctx.plan.train_steps} steps on "
                "one fixed batch move the loss; network, optimizer, loss, clipping, EMA, speed: the recipe's",
            )
            losses, times = [], []
            for step in range(1, ctx.plan.train_steps + 1):
                model.update_learning_rate(step, warmup_iter=-1)
                model.feed_data(batch)
                _sync(model.device)
                t0 = time.perf_counter()
                model.optimize_parameters(step)
                _sync(model.device)
                times.append(time.perf_counter() - t0)
                losses.append(float(model.log_dict["l_pix"]))
            finite = all(math.isfinite(x) for x in losses) and all(
                bool(torch.isfinite(p).all()) for p in model.net_g.parameters()
            )
            tail = losses[-2:]
            item.update(
                losses=[_round(x, 6) for x in losses],
                lr=model.get_current_learning_rate()[0],
                step_s_median=_round(float(np.median(times[1:] or times)), 4),
                first_step_s=_round(times[0], 3),
                output_dtype=str(model.output.dtype).replace("torch.", ""),
                ema=hasattr(model, "net_g_ema"),
            )
            if ctx.cuda:
                item["peak_gpu_memory_gib"] = _round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 3)
            problems = []
            if not finite:
                problems.append("non-finite loss or weights")
            if not sum(tail) / len(tail) < losses[0]:
                problems.append(f"loss did not fall: first {losses[0]:.5f}, last {tail}")
            expected_autocast = (opt["train"].get("speed") or {}).get("autocast")
            if ctx.cuda and expected_autocast in ("auto", "bf16") and speed.autocast != "bf16":
                problems.append(
                    f"recipe asks for {expected_autocast} autocast, the step ran {speed.describe()}"
                )
            item["status"] = "failed" if problems else "passed"
            if problems:
                item["problems"] = problems
                failures.append(f"{name}: {'; '.join(problems)}")
            del model
        except Exception as exc:
            item["status"] = "failed"
            item["error"] = _error_text(exc)
            failures.append(f"{name}: {item['error']}")
        item["seconds"] = _round(time.perf_counter() - start, 2)
        _free(ctx.device)
    details = {"items": items}
    if failures:
        raise CheckFailed("; ".join(failures), details)
    return details


def _measure(restorer, width: int, height: int, limit_s: float) -> dict[str, Any]:
    """Time one tiled run of a ``width`` x ``height`` input after a warm-up; halve both sides while the
    projected time exceeds ``limit_s``. The warm-up, timed a second time, is one full tile on a GPU and a
    small crop on a CPU (whose time grows with the pixels: the projection scales it by area)."""
    device = restorer.device
    multiple = restorer.entry.window_multiple
    tile, _ = restorer.tile.resolved(multiple)
    side = min(tile or max(width, height), max(width, height))
    if device.type != "cuda":
        side = min(side, max(64, multiple))
    x = sample_image(min(side, width), min(side, height))
    with torch.no_grad():
        restorer.run_tensor(x)  # warm-up: kernels, workspaces, cuDNN heuristics
        _sync(device)
        start = time.perf_counter()
        restorer.run_tensor(x)
        _sync(device)
        probe_s = time.perf_counter() - start
    requested = (width, height)
    while True:
        tile_pixels = min(tile or width, width) * min(tile or height, height)
        projected = probe_s * tile_pixels / (x.shape[-1] * x.shape[-2]) * restorer.tile_count(height, width)
        if projected * 1.15 <= limit_s or width * height <= 256 * 256:
            break
        width, height = max(64, width // 2), max(64, height // 2)
    image = sample_image(width, height)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out, seconds = tiled_run(restorer, image)
    mp = width * height / 1e6
    row = {
        "device": str(device),
        "dtype": str(restorer.dtype).replace("torch.", ""),
        "input": [width, height],
        "tile": list(restorer.tile.resolved(restorer.entry.window_multiple)),
        "tiles": restorer.tile_count(height, width),
        "seconds": _round(seconds, 3),
        "input_mp_per_s": _round(mp / seconds, 5),
        "output_mp_per_s": _round(mp * restorer.scale**2 / seconds, 5),
        "finite": bool(torch.isfinite(out).all()),
    }
    if (width, height) != requested:
        row["note"] = f"input reduced from {list(requested)}: projected over {limit_s:.0f} s"
    if device.type == "cuda":
        row["peak_gpu_allocated_gib"] = _round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        row["peak_gpu_reserved_gib"] = _round(torch.cuda.max_memory_reserved(device) / 2**30, 3)
    return row


def check_throughput(ctx: Context) -> dict[str, Any]:
    from restorer import weights as rw
    from restorer.engine.runner import build_restorer

    plan = ctx.plan
    items: dict[str, Any] = {}
    failures = []
    rows_left = len(THROUGHPUT_ROWS)
    for label, key, source in THROUGHPUT_ROWS:
        start = time.perf_counter()
        item: dict[str, Any] = {"model": key, "weights": source}
        items[label] = item
        try:
            entry = variant(key, plan, shipped=source == "shipped")
            path = rw.find_weights(entry) if source == "shipped" else None
            if path is None:  # speed does not depend on the weights' values
                if source == "shipped":
                    folders = ", ".join(str(d) for d in rw.weight_dirs())
                    item["weights"] = f"random: the shipped {entry.weight_file} is not in {folders}"
                path = random_checkpoint(entry, ctx.tmp)
            # the CLI check comes after this one: keep it 40 s
            budget = min(
                plan.throughput_row_limit_s, max(8.0, (ctx.time_left() - 40) / max(rows_left, 1) * 0.7)
            )
            restorer = build_restorer(entry, path, device=str(ctx.device))
            item["on_device"] = _measure(restorer, *plan.throughput_size, budget)
            del restorer
            _free(ctx.device)
            if ctx.cuda:
                cpu = build_restorer(entry, path, device="cpu")
                size = plan.throughput_cpu_size.get(key, (256, 256))
                item["on_cpu"] = _measure(cpu, *size, 10.0)
                item["on_cpu"]["threads"] = torch.get_num_threads()
                del cpu
                item["speedup_input_mp_per_s"] = _round(
                    item["on_device"]["input_mp_per_s"] / item["on_cpu"]["input_mp_per_s"], 2
                )
            else:
                item["on_cpu"] = dict(item["on_device"], threads=torch.get_num_threads())
                item["note"] = "dry run: the device is the CPU, at a small input instead of 3840x2160"
            if plan.shrink_networks and source == "random":
                item["network_shrunk"] = True
            if not item["on_device"]["finite"]:
                raise CheckFailed("non-finite output")
            item["status"] = "passed"
        except Exception as exc:
            item["status"] = "failed"
            item["error"] = _error_text(exc)
            failures.append(f"{label}: {item['error']}")
        rows_left -= 1
        item["seconds"] = _round(time.perf_counter() - start, 2)
        _free(ctx.device)
    details = {"input_requested": list(plan.throughput_size), "items": items}
    if failures:
        raise CheckFailed("; ".join(failures), details)
    return details


def _read_rgb(path: Path) -> np.ndarray:
    """An image as float RGB in [0, 1] (gray: 3 equal channels; alpha dropped; 8 or 16 bit)."""
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise CheckFailed(f"cannot read {path}")
    peak = 65535.0 if raw.dtype == np.uint16 else 255.0
    img = raw.astype(np.float32) / peak
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    return img[..., ::-1].copy()  # BGR -> RGB


def check_cli_infer(ctx: Context) -> dict[str, Any]:
    import cv2

    device_specs = {"sr_x4": "cuda", "denoise": "cuda:0"} if ctx.cuda else {"sr_x4": "cpu", "denoise": "cpu"}
    inputs = sorted(SAMPLES.glob("*.png"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    items: dict[str, Any] = {}
    failures = []
    for task in ctx.plan.cli_tasks:
        out_dir = ctx.tmp / f"cli_{task}"
        command = [
            sys.executable, "-m", "restorer", "infer", "--task", task, str(SAMPLES),
            "-o", str(out_dir), "--device", device_specs[task],
        ]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        item: dict[str, Any] = {
            "command": " ".join(["python", *command[1:]]).replace(str(ROOT) + "/", ""),
            "returncode": proc.returncode,
            "seconds": _round(time.perf_counter() - start, 2),
        }
        lines = [line.strip() for line in proc.stderr.replace("\r", "\n").splitlines()]
        lines = [line for line in lines if line and "|" not in line]  # progress bars out
        item["stderr_tail"] = "\n".join(lines)[-1500:]
        banner = next((line for line in lines if re.search(r" x\d+ on \S+ \(\w+\), \d+ image", line)), None)
        item["banner"] = banner
        items[task] = item
        problems = []
        if proc.returncode != 0:
            problems.append(f"exit status {proc.returncode}")
        scale = 4 if task == "sr_x4" else 1
        outputs = {}
        for src in inputs:
            found = sorted(out_dir.glob(f"{src.stem}_out.*")) or sorted(out_dir.rglob(f"{src.stem}*"))
            if not found:
                problems.append(f"no output for {src.name}")
                continue
            got, ref = _read_rgb(found[0]), _read_rgb(src)
            h, w = ref.shape[:2]
            if got.shape[:2] != (h * scale, w * scale):
                problems.append(f"{found[0].name}: {got.shape[:2]} != {(h * scale, w * scale)}")
                continue
            base = (
                cv2.resize(ref, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC) if scale > 1 else ref
            )
            mse = float(np.mean((np.clip(base, 0, 1) - got) ** 2))
            psnr = PSNR_IDENTICAL if mse == 0 else 10 * math.log10(1.0 / mse)
            outputs[found[0].name] = {
                "size": list(got.shape[:2][::-1]),
                "psnr_vs_baseline_db": _round(psnr, 2),
            }
            if psnr < 20.0:
                problems.append(
                    f"{found[0].name}: {psnr:.1f} dB against the {'bicubic' if scale > 1 else 'input'}"
                )
        item["outputs"] = outputs
        wanted = "cuda:0" if ctx.cuda else "cpu"
        if proc.returncode == 0 and (banner is None or f" on {wanted} (" not in banner):
            problems.append(f"the banner does not say the run was on {wanted}: {banner!r}")
        item["status"] = "failed" if problems else "passed"
        if problems:
            item["problems"] = problems
            failures.append(f"{task}: {'; '.join(problems)}")
    details = {"items": items}
    if failures:
        raise CheckFailed("; ".join(failures), details)
    return details


CHECKS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "environment": check_environment,
    "device_selection": check_device_selection,
    "wkv_cuda": check_wkv_cuda,
    "zoo_tiled": check_zoo_tiled,
    "oom_retry": check_oom_retry,
    "training": check_training,
    "throughput": check_throughput,
    "cli_infer": check_cli_infer,
}
CUDA_ONLY = ("wkv_cuda", "oom_retry")


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the CLI check's subprocesses)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_check(name: str, ctx: Context) -> dict[str, Any]:
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    record: dict[str, Any] = {}
    print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            details = CHECKS[name](ctx)
        record["status"] = "passed"
        record["details"] = details
    except Skip as exc:
        record["status"] = "skipped"
        record["reason"] = str(exc.args[0])
        if len(exc.args) > 1:
            record["details"] = exc.args[1]
    except Exception as exc:
        record["status"] = "failed"
        if isinstance(exc, CheckFailed):
            record["error"] = str(exc.args[0]) if exc.args else "check failed"
            if len(exc.args) > 1:
                record["details"] = exc.args[1]
        else:
            record["error"] = _error_text(exc)
            record["traceback"] = traceback.format_exc()[-4000:]
    record["seconds"] = _round(time.perf_counter() - start, 2)
    record["cpu_seconds"] = _round(_cpu_seconds() - cpu_start, 2)
    print(
        f"[gpu_check] {name}: {record['status']} ({record['seconds']} s, {record['cpu_seconds']} s CPU)",
        file=sys.stderr,
        flush=True,
    )
    if ctx.device.type == "cuda":
        with contextlib.suppress(Exception):
            torch.cuda.set_per_process_memory_fraction(1.0, ctx.device)
            _free(ctx.device)
    return record


def _write(path: str, report: dict[str, Any]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(target.name + ".tmp")
    scratch.write_text(json.dumps(report, indent=1, default=str) + "\n")
    scratch.replace(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: the dry run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and networks (CPU smoke test)")
    parser.add_argument("--out", help="also write the JSON report to this file")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), help="run these checks only")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="wall-clock target; elastic work shrinks to it (cuda: 270)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    plan = PLANS["quick" if args.quick else args.device]
    budget = args.budget_s or (270.0 if args.device == "cuda" else 600.0)
    started = time.monotonic()
    report: dict[str, Any] = {
        "tool": "bench/gpu_check.py",
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device_requested": args.device,
        "plan": plan.name,
        "dry_run": args.device != "cuda",
        "checks": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
        ctx = Context(device=device, plan=plan, tmp=Path(tmp), deadline=started + budget)
        names = args.only or list(CHECKS)
        if "environment" not in names:
            names = ["environment", *names]
        for name in names:
            if name != "environment" and report["checks"]["environment"]["status"] == "failed":
                report["checks"][name] = {
                    "status": "failed",
                    "error": "not run: the environment check failed",
                }
                continue
            report["checks"][name] = run_check(name, ctx)
            if args.out:  # so far: what a run stopped at its time limit still leaves
                _write(args.out, dict(report, partial=True))
    statuses = {name: check["status"] for name, check in report["checks"].items()}
    report["summary"] = {
        status: [n for n, s in statuses.items() if s == status] for status in ("passed", "failed", "skipped")
    }
    report["ok"] = not report["summary"]["failed"]
    report["seconds"] = _round(time.monotonic() - started, 1)
    if args.out:
        _write(args.out, report)
    print(json.dumps(report, indent=1, default=str), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
