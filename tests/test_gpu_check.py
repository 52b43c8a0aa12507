"""bench/gpu_check.py, the prepared GPU check of issue 18: its comparison helpers, and its CPU dry run
(``--device cpu --quick``) end to end: every check reported, none failed, the CUDA-only ones skipped
with a reason."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_check.py"
CHECKS = {
    "environment",
    "device_selection",
    "wkv_cuda",
    "zoo_tiled",
    "oom_retry",
    "training",
    "throughput",
    "cli_infer",
}
CUDA_ONLY = {"wkv_cuda", "oom_retry"}
ARCHS = {
    "hat-s@x4",
    "drct@x4",
    "craft@x4",
    "dlgsanet-light@x4",
    "restore-rwkv-light@x1",
    "rrformer-small@x1",
    "s2lic-small-q1@x1",
}


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_check", None)


def test_script_lists_the_checks_and_architectures(gpu_check):
    assert set(gpu_check.CHECKS) == CHECKS
    assert set(gpu_check.CUDA_ONLY) == CUDA_ONLY
    assert {key for key, _ in gpu_check.ZOO_VARIANTS} == ARCHS
    from restorer import zoo

    for key in ARCHS | {key for _, key, _ in gpu_check.THROUGHPUT_ROWS}:
        assert key in zoo.ZOO


def test_compare_flags_black_cells_and_nan(gpu_check):
    gen = torch.Generator().manual_seed(0)
    ref = 0.3 + 0.4 * torch.rand(1, 3, 64, 64, generator=gen)
    same = gpu_check.compare(ref.clone(), ref, cell=16)
    assert same["psnr_db"] == gpu_check.PSNR_IDENTICAL and same["rel_err"] == 0.0
    assert not gpu_check.judge(same, "fp32")

    close = gpu_check.compare(ref + 1e-4 * torch.randn(ref.shape, generator=gen), ref, cell=16)
    assert close["psnr_db"] > 70 and not gpu_check.judge(close, "bf16")

    black = ref.clone()
    black[..., 16:32, 32:48] = 0.0  # one tile came out black (fp16 overflow, spandrel's "black blotches")
    black[..., 0, 0, 0] = float("nan")
    metrics = gpu_check.compare(black, ref, cell=16)
    assert metrics["black_cells"] == 1 and metrics["nonfinite"] == 1 and metrics["cells"] == 16
    problems = gpu_check.judge(metrics, "bf16")
    assert any("NaN" in p for p in problems) and any("black" in p for p in problems)


def test_shrink_keeps_the_architecture(gpu_check):
    from restorer import zoo

    hat = gpu_check.shrink_options(zoo.ZOO["hat-s@x4"].network_options())
    assert hat["type"] == "HAT" and hat["depths"] == [2] and hat["num_heads"] == [6]
    dlg = gpu_check.shrink_options(zoo.ZOO["dlgsanet-light@x4"].network_options())
    assert dlg["groups"] == 1 and dlg["blocks"] == 1
    s2lic = zoo.ZOO["s2lic-small-q1@x1"].network_options()
    assert gpu_check.shrink_options(s2lic) == s2lic  # five-stage lists are the architecture


@pytest.mark.slow  # about 30 s of CPU time, but minutes of wall time beside two training jobs on 2 cores
def test_cpu_dry_run(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads(proc.stdout)  # stdout is the report alone
    assert json.loads(out.read_text()) == report
    failed = {
        name: check.get("error") for name, check in report["checks"].items() if check["status"] == "failed"
    }
    assert not failed, failed
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["ok"] and report["dry_run"] and report["plan"] == "quick"
    assert set(report["checks"]) == CHECKS
    for name, check in report["checks"].items():
        if name in CUDA_ONLY:
            assert check["status"] == "skipped" and "CUDA" in check["reason"], (name, check)
        else:
            assert check["status"] == "passed", (name, check)

    zoo_items = report["checks"]["zoo_tiled"]["details"]["items"]
    assert set(zoo_items) == ARCHS
    for key, item in zoo_items.items():
        assert item["status"] == "passed", (key, item)
        assert "psnr_db" in item["precisions"]["fp32"]
        assert item["precisions"]["bf16"].get("psnr_db") or item["precisions"]["bf16"].get("skipped")
        if key != "s2lic-small-q1@x1":
            assert item["tiles"] > 1
    oom = report["checks"]["oom_retry"]["details"]
    assert oom["simulated"] and oom["tile_after_retry"] < oom["first_tile"] and oom["bitwise_equal"]
    assert report["checks"]["wkv_cuda"]["details"]["cpu_scan"]["bad"] == []
    for item in report["checks"]["training"]["details"]["items"].values():
        assert item["losses"][-1] < item["losses"][0]
    for item in report["checks"]["throughput"]["details"]["items"].values():
        assert item["on_device"]["input_mp_per_s"] > 0 and item["on_cpu"]["input_mp_per_s"] > 0
    cli = report["checks"]["cli_infer"]["details"]["items"]["sr_x4"]
    assert cli["returncode"] == 0 and len(cli["outputs"]) == 4 and " on cpu (" in cli["banner"]
