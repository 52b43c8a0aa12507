"""CPU time per image: ONNX Runtime against PyTorch, the same model and weights in the same run.

Exports the model to a temporary ONNX file (``restorer export``'s code path), then restores one image
through the tiled engine with each backend (``Restorer.run_array``: padding, tiles, blending included),
the same tile size and thread count for both. Each backend is timed in two interleaved passes (torch,
onnxruntime, torch, onnxruntime) of ``--runs`` runs after ``--warmup`` runs; the lower of its two medians
is reported, so that background load on a shared machine hurts both alike (fastest single runs and the
load average before and after are reported too). Prints one JSON object.

Default: the bundled CRAFT x2 (``craft-bundled``) on ``restorer/samples/astronaut_face.png`` (96x96),
whole image (``--tile 0``), 2 threads.

    python bench/bench_onnx.py [--model craft-bundled] [--scale 2] [--weights FILE] [--image PNG]
        [--tile 0] [--threads 2] [--runs 3] [--warmup 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restorer import io as rio  # noqa: E402
from restorer import zoo  # noqa: E402
from restorer.engine.onnx_runner import build_onnx_restorer  # noqa: E402
from restorer.engine.runner import Restorer, build_restorer  # noqa: E402
from restorer.export import export_onnx  # noqa: E402

DEFAULT_IMAGE = Path(__file__).resolve().parents[1] / "restorer" / "samples" / "astronaut_face.png"


def _time(restorer: Restorer, pixels: np.ndarray, warmup: int, runs: int) -> tuple[list[float], np.ndarray]:
    out = None
    for _ in range(warmup):
        out = restorer.run_array(pixels)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = restorer.run_array(pixels)
        times.append(time.perf_counter() - t0)
    assert out is not None
    return times, out


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="craft-bundled")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--weights", help="weight file (default: the model's, from the weights folders)")
    ap.add_argument("--image", default=str(DEFAULT_IMAGE))
    ap.add_argument("--tile", type=int, default=0, help="engine tile (0: whole image); traced size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)

    import onnxruntime

    torch.set_num_threads(args.threads)  # ONNX Runtime's session takes the same count (OnnxModel)
    entry = zoo.get_entry(args.model, args.scale)
    pixels = rio.read_image(args.image).pixels
    height, width = pixels.shape[:2]
    with_torch = build_restorer(entry, args.weights, device="cpu", precision="fp32", tile=args.tile)
    export_tile = args.tile or max(height, width)
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        exported = export_onnx(with_torch.model, entry, Path(folder) / "model.onnx", tile=export_tile)
        export_s = time.perf_counter() - t0
        # A fixed-tile graph sets the engine's tile itself; an any-size one runs with the torch tile.
        with_ort = build_onnx_restorer(
            exported.path, device="cpu", tile=None if exported.info.tile else args.tile
        )
        result: dict = {
            "model": f"{entry.display_name} x{entry.scale} (--model {entry.model})",
            "weights": str(with_torch.weights),
            "image": f"{Path(args.image).name} {width}x{height}",
            "engine_tile": with_torch.tile.tile,
            "onnx_graph": f"fixed tile {exported.info.tile}" if exported.info.tile else "any input size",
            "onnx_file_mib": round(exported.path.stat().st_size / 2**20, 2),
            "export_s": round(export_s, 2),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "runs": args.runs,
            "warmup": args.warmup,
            "loadavg_before": _loadavg(),
        }
        with torch.inference_mode():
            runs_torch, out_torch = _time(with_torch, pixels, args.warmup, args.runs)
            runs_ort, out_ort = _time(with_ort, pixels, args.warmup, args.runs)
            runs_torch2, _ = _time(with_torch, pixels, 0, args.runs)
            runs_ort2, _ = _time(with_ort, pixels, 0, args.runs)
    t_torch = min(statistics.median(runs_torch), statistics.median(runs_torch2))
    t_ort = min(statistics.median(runs_ort), statistics.median(runs_ort2))
    result.update(
        {
            "pytorch_s_per_image": round(t_torch, 4),
            "onnxruntime_s_per_image": round(t_ort, 4),
            "speedup_onnxruntime_vs_pytorch": round(t_torch / t_ort, 3),
            "pytorch_min_s": round(min(runs_torch + runs_torch2), 4),
            "onnxruntime_min_s": round(min(runs_ort + runs_ort2), 4),
            "max_abs_diff_output": float(np.abs(out_ort - out_torch).max()),
            "export_check_max_abs_diff": exported.max_abs_diff,
            "output_shape": list(out_torch.shape),
            "loadavg_after": _loadavg(),
        }
    )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
