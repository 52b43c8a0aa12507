"""Export a bundled training run to ``restorer/bundled/*.safetensors`` and measure it against its baseline.

Run from the repository root after the recipe it names, for example::

    python datasets/make_training_set.py
    restorer train -opt options/train/bundled_CRAFT_SRx2_cpu.yml
    python weights/make_bundled.py --scale 2
    python weights/make_bundled.py --denoise     # after bundled_RestoreRWKV_denoise_sigma25_cpu{,_stage2}.yml
    python weights/make_bundled.py --reflection  # after bundled_RRFormer_cpu.yml

It reads the run's EMA weights (``params_ema``), loads them strictly into the zoo's
``craft-bundled`` network, writes ``restorer/bundled/<weight_file>`` (safetensors, tensors only, with the
recipe and iteration in the metadata), prints the file's sha256 for the zoo, and prints the
validation table of ``weights/README.md``: Y-PSNR / SSIM (BT.601, crop = scale, outputs rounded to
uint8, BasicSR's functions) of the model and of MATLAB-bicubic upscaling on the held-out photos,
whose LR inputs are made the same way as in training (mod-crop, MATLAB bicubic, uint8). For the
denoiser (``--denoise``) the baseline is the tuned classical denoiser of ``restorer.baselines``; for
reflection removal (``--reflection``) it is the untouched blended input, on held-out synthetic pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
MODEL = "craft-bundled"
DENOISE_MODEL = "restore-rwkv-light"
REFLECTION_MODEL = "rrformer-small"


def evaluate(scale: int, val_dir: Path, weights_file: Path | None = None) -> list[dict]:
    """Per-image Y-PSNR/SSIM of the bundled model and of bicubic on ``val_dir``."""
    from restorer import io as rio
    from restorer import metrics
    from restorer.benchmark import bicubic_pair, bicubic_upscale
    from restorer.engine.runner import build_restorer
    from restorer.tasks import resolve

    entry = resolve(f"sr_x{scale}", MODEL)
    restorer = build_restorer(entry, weights=weights_file, device="cpu", tile=0)
    rows = []
    for path in sorted(val_dir.iterdir()):
        if path.suffix.lower() not in rio.IMAGE_EXTENSIONS:
            continue
        hr = metrics.to_uint8(rio.to_rgb(rio.read_image(path).pixels))
        lr, hr = bicubic_pair(hr, scale)
        sr = metrics.to_uint8(restorer.run_array(lr.astype(np.float32) / 255.0))
        bic = bicubic_upscale(lr, scale)
        row = {"image": path.stem, "size": f"{hr.shape[1]}x{hr.shape[0]}"}
        for name, out in (("model", sr), ("bicubic", bic)):
            row[f"{name}_psnr_y"] = metrics.psnr(out, hr, scale)
            row[f"{name}_ssim_y"] = metrics.ssim(out, hr, scale)
        rows.append(row)
    return rows


def markdown_table(scale: int, rows: list[dict]) -> str:
    lines = [
        f"| x{scale} image | size (HR) | model Y-PSNR | bicubic Y-PSNR | gain | model SSIM | bicubic SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gain = r["model_psnr_y"] - r["bicubic_psnr_y"]
        lines.append(
            f"| {r['image']} | {r['size']} | {r['model_psnr_y']:.2f} | {r['bicubic_psnr_y']:.2f} | "
            f"{gain:+.2f} | {r['model_ssim_y']:.4f} | {r['bicubic_ssim_y']:.4f} |"
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k.endswith(("_y",))}
    lines.append(
        f"| **mean** | | {mean['model_psnr_y']:.2f} | {mean['bicubic_psnr_y']:.2f} | "
        f"{mean['model_psnr_y'] - mean['bicubic_psnr_y']:+.2f} | {mean['model_ssim_y']:.4f} | "
        f"{mean['bicubic_ssim_y']:.4f} |"
    )
    return "\n".join(lines)


def training_wall_time(run_dir: Path) -> float:
    """Seconds of training in a BasicSR run folder: the span of each ``train_*.log`` (one per start or
    resume), from its first to its last timestamped line, added up."""
    import datetime
    import re

    stamp = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ INFO: ")
    total = 0.0
    for log in sorted(run_dir.glob("train_*.log")):
        times = [
            datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
            for line in log.read_text(errors="replace").splitlines()
            if (m := stamp.match(line))
        ]
        if len(times) > 1:
            total += (times[-1] - times[0]).total_seconds()
    return total


def export(
    task: str, model: str, recipe: str, checkpoint: Path, out_dir: Path, device: str = "CPU (2 cores)"
) -> Path:
    """Write the run's EMA weights as the zoo's safetensors file; returns its path. The metadata records
    the recipe, total iterations, training wall time (all resumed pieces) and device."""
    from restorer import weights as rw
    from restorer.archs import build_network
    from restorer.tasks import resolve

    entry = resolve(task, model)
    raw = rw.read_checkpoint(checkpoint)
    state = rw.unwrap_state_dict(raw, "params_ema")
    network = build_network(entry.network_options())
    network.load_state_dict(state, strict=True)  # the exported file must load strictly
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in network.state_dict().items()}
    metadata = {
        "format": "pt",
        "model": entry.model,
        "arch": entry.arch,
        "task": task,
        "recipe": recipe,
        "iterations": rw.training_iteration(checkpoint),
        "wall_time_s": f"{training_wall_time(checkpoint.parent.parent):.0f}",
        "device": device,
        "weights": "EMA (params_ema)",
    }
    return rw.save_safetensors(tensors, out_dir / entry.weight_file, metadata)


DENOISE_SIGMA = 25


def evaluate_denoise(val_dir: Path, weights_file: Path | None = None) -> list[dict]:
    """Per-image PSNR of the bundled denoiser and the tuned classical baseline, colour and gray.

    Noise: white Gaussian, sigma 25 on the 0-255 scale, float and unclipped (as the baselines were
    tuned and the recipe validates), fixed per image (seed ``[0, index]``); gray = BT.601 luma with
    gray noise. PSNR over all channels on [0, 1] floats, outputs clipped (``psnr_all_channels``).
    """
    from restorer import baselines
    from restorer import io as rio
    from restorer.engine.runner import build_restorer
    from restorer.metrics import psnr_all_channels
    from restorer.tasks import resolve
    from restorer.training.degradations import gaussian_noise

    restorer = build_restorer(resolve("denoise", DENOISE_MODEL), weights=weights_file, device="cpu", tile=0)
    rows = []
    paths = [p for p in sorted(val_dir.iterdir()) if p.suffix.lower() in rio.IMAGE_EXTENSIONS]
    for index, path in enumerate(paths):
        pixels = rio.read_image(path).pixels
        for mode, clean in (("colour", rio.to_rgb(pixels)), ("gray", rio.to_gray(pixels))):
            noisy = gaussian_noise(clean, DENOISE_SIGMA, np.random.default_rng([0, index]))
            restored = restorer.run_array(noisy)
            classical = baselines.best_classical_denoise(noisy, DENOISE_SIGMA)
            rows.append(
                {
                    "image": path.stem,
                    "mode": mode,
                    "size": f"{clean.shape[1]}x{clean.shape[0]}",
                    "noisy_psnr": psnr_all_channels(noisy, clean, clip_output=True),
                    "model_psnr": psnr_all_channels(restored, clean, clip_output=True),
                    "classical_psnr": psnr_all_channels(classical.image, clean, clip_output=True),
                    "classical_method": classical.method,
                }
            )
    return rows


def denoise_table(rows: list[dict]) -> str:
    lines = [
        "| image | mode | size | noisy PSNR | model PSNR | classical PSNR (method) | gain over classical |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['mode']} | {r['size']} | {r['noisy_psnr']:.2f} | {r['model_psnr']:.2f} | "
            f"{r['classical_psnr']:.2f} ({r['classical_method']}) | "
            f"{r['model_psnr'] - r['classical_psnr']:+.2f} |"
        )
    for mode in ("colour", "gray"):
        sel = [r for r in rows if r["mode"] == mode]
        mean = {
            k: float(np.mean([r[k] for r in sel])) for k in ("noisy_psnr", "model_psnr", "classical_psnr")
        }
        lines.append(
            f"| **mean** | {mode} | | {mean['noisy_psnr']:.2f} | {mean['model_psnr']:.2f} | "
            f"{mean['classical_psnr']:.2f} | {mean['model_psnr'] - mean['classical_psnr']:+.2f} |"
        )
    return "\n".join(lines)


def evaluate_reflection(val_dir: Path, weights_file: Path | None = None) -> list[dict]:
    """Per-pair RGB PSNR / SSIM (uint8, crop 0) of the model and of the untouched blended input against
    the transmission layer, on the recipe's validation pairs: 4 fixed synthetic pairs per held-out photo
    (mixed blur / vignette synthesis, seed 0, reflections from the other held-out photo), whole images."""
    from torch.utils.data import Subset

    from restorer.engine.runner import build_restorer
    from restorer.tasks import resolve
    from restorer.training.reflection import SyntheticReflectionDataset, evaluate_against_input

    restorer = build_restorer(
        resolve("reflection_removal", REFLECTION_MODEL), weights=weights_file, device="cpu", tile=0
    )
    options = {"dataroot_gt": str(val_dir), "phase": "val", "synthesis": "mixed", "pairs_per_image": 4}
    dataset = SyntheticReflectionDataset({**options, "seed": 0})
    rows = []
    for index in range(len(dataset)):
        sample = dataset[index]
        scores = evaluate_against_input(restorer.run_tensor, Subset(dataset, [index]))
        rows.append(
            {
                "image": Path(sample["gt_path"]).stem,
                "pair": index % dataset.pairs_per_image,
                "size": f"{sample['gt'].shape[-1]}x{sample['gt'].shape[-2]}",
                **{k: v for k, v in scores.items() if k != "pairs"},
            }
        )
    return rows


def reflection_table(rows: list[dict]) -> str:
    lines = [
        "| image | pair | size | input PSNR / SSIM | model PSNR / SSIM | gain (dB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['pair']} | {r['size']} | {r['psnr_input']:.2f} / {r['ssim_input']:.4f} | "
            f"{r['psnr_output']:.2f} / {r['ssim_output']:.4f} | {r['psnr_output'] - r['psnr_input']:+.2f} |"
        )
    mean = {
        k: float(np.mean([r[k] for r in rows]))
        for k in ("psnr_input", "psnr_output", "ssim_input", "ssim_output")
    }
    lines.append(
        f"| **mean** | | | {mean['psnr_input']:.2f} / {mean['ssim_input']:.4f} | "
        f"{mean['psnr_output']:.2f} / {mean['ssim_output']:.4f} | "
        f"{mean['psnr_output'] - mean['psnr_input']:+.2f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--scale", type=int, choices=(2, 3, 4), help="the craft-bundled sr_xS model")
    which.add_argument("--denoise", action="store_true", help="the restore-rwkv-light denoise model")
    which.add_argument("--reflection", action="store_true", help="the rrformer-small reflection model")
    parser.add_argument("--checkpoint", type=Path, help="default: the recipe's net_g_latest.pth")
    parser.add_argument(
        "--run", help="the recipe (options/train/RUN.yml) whose experiment to export (default: the first one)"
    )
    parser.add_argument("--device-label", default="CPU (2 cores)", help="recorded in the file's metadata")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "restorer" / "bundled")
    parser.add_argument("--val-dir", type=Path, default=ROOT / "datasets" / "skimage_sr" / "val")
    parser.add_argument("--json", type=Path, help="also write the per-image numbers here")
    parser.add_argument("--eval-only", action="store_true", help="measure the file already in --out-dir")
    args = parser.parse_args(argv)

    from restorer import weights as rw
    from restorer.tasks import resolve

    if args.denoise:  # stage 3 (corpus) fine-tunes stage 2, which fine-tunes stage 1
        task, model, run = "denoise", DENOISE_MODEL, "bundled_RestoreRWKV_denoise_sigma25_corpus"
    elif args.reflection:
        task, model, run = "reflection_removal", REFLECTION_MODEL, "bundled_RRFormer_cpu"
    else:
        task, model, run = f"sr_x{args.scale}", MODEL, f"bundled_CRAFT_SRx{args.scale}_cpu"
        if args.scale == 2:  # the x2 default is the corpus fine-tune of the _cpu run
            run = "bundled_CRAFT_SRx2_corpus"
    run = args.run or run
    checkpoint = args.checkpoint or ROOT / "experiments" / run / "models" / "net_g_latest.pth"
    if args.eval_only:
        target = args.out_dir / resolve(task, model).weight_file
    else:
        target = export(task, model, f"options/train/{run}.yml", checkpoint, args.out_dir, args.device_label)
    print(f"{target}  sha256={rw.sha256_of(target)}")
    if args.denoise:
        rows = evaluate_denoise(args.val_dir, target)
        print(denoise_table(rows))
    elif args.reflection:
        rows = evaluate_reflection(args.val_dir, target)
        print(reflection_table(rows))
    else:
        rows = evaluate(args.scale, args.val_dir, target)
        print(markdown_table(args.scale, rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
