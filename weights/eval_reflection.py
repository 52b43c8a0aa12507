"""Score reflection removal the way issue 19 asks: on held-out synthetic blends, and on photos with no
reflection at all (do no harm).

- **Blends**: each photo of ``--val-dir`` (default: the corpus's held-out validation photos) as the
  transmission, ``--pairs`` seeded blends per photo made with the physical synthesis
  (:func:`restorer.training.reflection_synthesis.physical_reflection_synthesis`, no reflection-free pairs),
  the reflection taken from another photo of the folder. ``--seed 0`` gives exactly the recipe's
  validation pairs (what checkpoints are chosen on); the default ``--seed 1`` gives other blends of the
  same photos, for the report. RGB PSNR / SSIM (uint8, no crop) of the untouched blend and of the model's
  output against the transmission.
- **Do no harm**: each photo of ``--clean-dir`` (default: ``--val-dir``; any folder of photos without
  reflections, Kodak24 for instance) run through the model as it is: RGB PSNR / SSIM of the output
  against its own input (the bar: at least 35 dB).

Inference is the tiled engine ``restorer infer`` uses (``--tile``, default the zoo's). JSON on stdout::

    python weights/eval_reflection.py --weights restorer/bundled/restorer_RRFormer_small_corpus.safetensors
    python weights/eval_reflection.py --weights experiments/bundled_RRFormer_corpus/models/net_g_latest.pth \\
        --clean-dir ../shared/data/Kodak24
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "rrformer-small"


def _scores(output: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    from restorer import metrics

    return (
        metrics.psnr(output, reference, 0, y_channel=False),
        metrics.ssim(output, reference, 0, y_channel=False),
    )


def _mean(rows: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def evaluate(
    weights: Path | None,
    model: str,
    val_dir: Path,
    clean_dir: Path,
    pairs: int,
    seed: int,
    tile: int | None,
) -> dict[str, Any]:
    """Per-blend and per-clean-photo scores plus their means (see the module docstring)."""
    import torch

    from restorer import io as rio
    from restorer import metrics
    from restorer.engine.runner import build_restorer
    from restorer.tasks import resolve
    from restorer.training.reflection import SyntheticReflectionDataset

    kwargs = {} if tile is None else {"tile": tile}
    restorer = build_restorer(resolve("reflection_removal", model), weights=weights, device="cpu", **kwargs)

    def run(pixels: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            out = restorer.run_tensor(pixels[None]).float().clamp(0, 1)
        return metrics.to_uint8(out[0].permute(1, 2, 0).cpu().numpy())

    dataset = SyntheticReflectionDataset(
        {
            "dataroot_gt": str(val_dir),
            "phase": "val",
            "synthesis": "physical",
            "none_prob": 0.0,
            "pairs_per_image": pairs,
            "seed": seed,
        }
    )
    blends = []
    for index in range(len(dataset)):
        sample = dataset[index]
        gt = metrics.to_uint8(sample["gt"].permute(1, 2, 0).numpy())
        blended = metrics.to_uint8(sample["lq"].permute(1, 2, 0).numpy())
        psnr_in, ssim_in = _scores(blended, gt)
        psnr_out, ssim_out = _scores(run(sample["lq"]), gt)
        blends.append(
            {
                "image": Path(sample["gt_path"]).stem,
                "pair": index % pairs,
                "psnr_input": psnr_in,
                "ssim_input": ssim_in,
                "psnr_output": psnr_out,
                "ssim_output": ssim_out,
            }
        )

    clean = []
    paths, _ = rio.collect_images([clean_dir])
    for path in paths:
        pixels = rio.read_image(path).pixels
        rgb = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
        as_float = np.ascontiguousarray(rgb, dtype=np.float32)  # read_image gives [0, 1] floats
        original = metrics.to_uint8(as_float)
        psnr, ssim = _scores(run(torch.from_numpy(as_float).permute(2, 0, 1).contiguous()), original)
        clean.append(
            {"image": path.stem, "size": f"{rgb.shape[1]}x{rgb.shape[0]}", "psnr": psnr, "ssim": ssim}
        )

    keys = ("psnr_input", "ssim_input", "psnr_output", "ssim_output")
    blend_mean = _mean(blends, keys)
    return {
        "weights": str(weights) if weights else None,
        "model": model,
        "blends": {
            "photos": str(val_dir),
            "pairs_per_photo": pairs,
            "seed": seed,
            "rows": blends,
            "mean": blend_mean,
            "gain_db": blend_mean["psnr_output"] - blend_mean["psnr_input"],
            "pairs_improved": sum(r["psnr_output"] > r["psnr_input"] for r in blends),
        },
        "do_no_harm": {
            "photos": str(clean_dir),
            "rows": clean,
            "mean": _mean(clean, ("psnr", "ssim")) if clean else None,
            "min_psnr": min((r["psnr"] for r in clean), default=None),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="checkpoint to score (default: the zoo's file)")
    parser.add_argument("--model", default=MODEL, help=f"zoo model the weights load into (default {MODEL})")
    parser.add_argument("--val-dir", type=Path, default=ROOT / "datasets" / "corpus" / "val")
    parser.add_argument("--clean-dir", type=Path, help="photos without reflections (default: --val-dir)")
    parser.add_argument("--pairs", type=int, default=4, help="blends per photo (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="0 = the recipe's validation blends (default 1)")
    parser.add_argument("--tile", type=int, help="tile size (default: the zoo's)")
    args = parser.parse_args(argv)
    report = evaluate(
        args.weights,
        args.model,
        args.val_dir,
        args.clean_dir or args.val_dir,
        args.pairs,
        args.seed,
        args.tile,
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
