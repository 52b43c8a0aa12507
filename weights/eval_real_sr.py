"""Score x4 super-resolution on real-world degradations: the held-out corpus photos degraded by the
training pipeline (Real-ESRGAN's second-order degradation, :mod:`restorer.training.real_sr`) with a
fixed seed per photo.

The low-quality set is written once to a folder (``HR/`` the photos as scored, ``LR/`` their degraded
versions, ``set.json`` what made them) and reused while the photos, the seed and the options are the
same, so every run scores the same inputs. They are the inputs ``RealSRValDataset`` gives the
recipe's validation. Methods: MATLAB bicubic, the shipped ``sr_x4`` default (``craft-bundled`` x4,
trained on bicubic inputs), and each ``--weights`` file (loaded strictly into ``--model``, CRAFT's
published x4 configuration by default). Metrics: PSNR and SSIM on the Y channel (BasicSR's, the SR
papers' protocol), LPIPS (AlexNet, v0.1; lower is better) and NIQE (no reference; BasicSR's, with the
pristine-image model its package ships; lower is better), all with ``scale`` pixels cropped at
each border. LPIPS needs torchvision's AlexNet file in the torch hub cache; without it the LPIPS
values are null and the report says why (``--lpips on`` makes that an error). JSON on stdout::

    python weights/eval_real_sr.py
    python weights/eval_real_sr.py --weights \\
        experiments/bundled_CRAFT_real_SRx4_corpus/models/net_g_latest.pth
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCALE = 4


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_rgb(path: Path) -> np.ndarray:
    """uint8 RGB of an 8-bit file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return np.ascontiguousarray(image[..., ::-1])


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise SystemExit(f"cannot write {path}")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def set_description(hr_dir: Path, seed: int, crop: int | None) -> dict[str, Any]:
    """What determines the degraded set: the photos (by content), the seed, the crop and the options."""
    from restorer import io as rio
    from restorer.training.real_sr import DEGRADATION_DEFAULTS, KERNEL_DEFAULTS

    paths, _ = rio.collect_images([hr_dir])
    if not paths:
        raise SystemExit(f"no images in {hr_dir}")
    return {
        "source": str(hr_dir),
        "photos": {p.name: _sha256(p) for p in paths},
        "seed": seed,
        "scale": SCALE,
        "crop": crop,
        "degradation": dict(DEGRADATION_DEFAULTS),
        "kernels": dict(KERNEL_DEFAULTS),
        "made_with": "restorer.training.real_sr.degrade_with_seed on the CPU, seed image_seed(seed, name)",
        "torch": torch.__version__,
    }


def prepare_set(
    hr_dir: Path, out_dir: Path, seed: int = 0, crop: int | None = None
) -> tuple[list[str], bool]:
    """Write ``out_dir/{HR,LR}/<name>.png`` and ``set.json`` unless they already describe this set.

    Returns the image names (``.png``) and whether anything was written. Each LR image is
    ``degrade_with_seed(hr, image_seed(seed, name))`` of the photo's centre ``crop`` (if given),
    mod-cropped to the scale: exactly the pair ``RealSRValDataset`` makes.
    """
    from restorer.training.real_sr import _read_rgb as read_photo
    from restorer.training.real_sr import degrade_with_seed, hr_crop, image_seed

    wanted = set_description(hr_dir, seed, crop)
    names = [Path(name).stem + ".png" for name in wanted["photos"]]
    manifest = out_dir / "set.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        recorded_without_torch = {k: v for k, v in recorded.items() if k != "torch"}
        if recorded_without_torch == {k: v for k, v in wanted.items() if k != "torch"} and all(
            (out_dir / sub / n).is_file() for sub in ("HR", "LR") for n in names
        ):
            return names, False
    for sub in ("HR", "LR"):
        for old in (out_dir / sub).glob("*.png") if (out_dir / sub).is_dir() else []:
            old.unlink()
    for source_name, name in zip(wanted["photos"], names):
        hr = hr_crop(read_photo(hr_dir / source_name), SCALE, crop)
        gt = torch.from_numpy(hr.transpose(2, 0, 1).copy()).float()
        lq = degrade_with_seed(gt, image_seed(seed, source_name), SCALE, device="cpu")
        _write_rgb(out_dir / "HR" / name, _to_uint8(hr))
        _write_rgb(out_dir / "LR" / name, _to_uint8(lq.numpy().transpose(1, 2, 0)))
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(wanted, indent=1) + "\n", encoding="utf-8")
    return names, True


def bicubic(lr_rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(lr, 4, 'bicubic')`` (BasicSR's), uint8."""
    from restorer._compat import ensure_basicsr_importable

    ensure_basicsr_importable()
    from basicsr.utils.matlab_functions import imresize

    return _to_uint8(imresize(lr_rgb.astype(np.float64) / 255.0, SCALE))


def model_method(model: str, weights: Path | None):
    from restorer import zoo
    from restorer.engine.runner import build_restorer

    restorer = build_restorer(zoo.get_entry(model, SCALE), weights, device="cpu", precision="fp32", tile=0)

    def run(lr_rgb: np.ndarray) -> np.ndarray:
        return _to_uint8(restorer.run_array(lr_rgb.astype(np.float32) / 255.0))

    return run


def lpips_scorer(mode: str):
    """``(scorer or None, note)``: LPIPS between uint8 RGB images with the border crop, or why not."""
    from restorer import metrics
    from restorer.errors import WeightsNotFoundError

    if mode == "off":
        return None, "not computed (--lpips off)"
    try:
        metrics.load_lpips("cpu")
    except WeightsNotFoundError as exc:
        if mode == "on":
            raise SystemExit(str(exc)) from None
        return None, f"not computed: {exc}"
    note = f"LPIPS AlexNet v0.1 (lpips package), RGB, crop_border {SCALE}; lower is better"
    return (lambda out, ref: metrics.lpips_distance(out, ref, crop_border=SCALE)), note


NIQE_BLOCK = 96  # BasicSR's block size: an image needs one whole block after the border crop


def niqe(rgb: np.ndarray) -> float | None:
    """NIQE of an output (no reference needed; lower is better): BasicSR's, with the pristine-image model
    its package ships, so it runs with no download where LPIPS cannot. ``None`` for an image smaller
    than one NIQE block after the border crop."""
    if min(rgb.shape[:2]) - 2 * SCALE < NIQE_BLOCK:
        return None
    from restorer._compat import ensure_basicsr_importable

    ensure_basicsr_importable()
    from basicsr.metrics.niqe import calculate_niqe

    return float(
        calculate_niqe(np.ascontiguousarray(rgb[..., ::-1]), SCALE, input_order="HWC", convert_to="y")
    )


def evaluate(
    out_dir: Path, names: list[str], methods: dict[str, Any], lpips_mode: str = "auto"
) -> dict[str, Any]:
    from restorer import metrics

    lpips, lpips_note = lpips_scorer(lpips_mode)
    pairs = [(_read_rgb(out_dir / "LR" / n), _read_rgb(out_dir / "HR" / n)) for n in names]
    results: dict[str, Any] = {}
    for label, method in methods.items():
        per_image = {}
        for name, (lr, hr) in zip(names, pairs):
            out = method(lr)
            if out.shape != hr.shape:
                raise SystemExit(f"{label}: output {out.shape} for {name}, expected {hr.shape}")
            per_image[name] = {
                "psnr_y": metrics.psnr(out, hr, SCALE, y_channel=True),
                "ssim_y": metrics.ssim(out, hr, SCALE, y_channel=True),
                "lpips": lpips(out, hr) if lpips else None,
                "niqe": niqe(out),
            }
        keys = ("psnr_y", "ssim_y", "niqe", "lpips") if lpips else ("psnr_y", "ssim_y", "niqe")
        summary = {"lpips": None, "niqe": None} | {
            k: float(np.mean([v[k] for v in per_image.values()]))
            for k in keys
            if all(v[k] is not None for v in per_image.values())
        }
        results[label] = {**summary, "per_image": per_image}
    return {
        "metrics": {
            "psnr_y": f"BasicSR calculate_psnr, Y channel, crop_border {SCALE}",
            "ssim_y": f"BasicSR calculate_ssim, Y channel, crop_border {SCALE}",
            "lpips": lpips_note,
            "niqe": f"BasicSR calculate_niqe (no reference; Y channel, crop_border {SCALE}); lower is better",
        },
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, nargs="*", default=[], help="weight files to score")
    parser.add_argument("--model", default="craft-bundled", help="zoo model the --weights files load into")
    parser.add_argument("--hr", type=Path, default=ROOT / "datasets/corpus/val", help="held-out photos")
    parser.add_argument(
        "--set-dir",
        type=Path,
        default=ROOT / "datasets/corpus/val_real_x4",
        help="where the degraded set goes",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop", type=int, default=None, help="centre crop of each photo (HR pixels)")
    parser.add_argument("--lpips", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--no-default", action="store_true", help="skip the shipped craft-bundled x4")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    names, written = prepare_set(args.hr, args.set_dir, args.seed, args.crop)
    methods: dict[str, Any] = {"bicubic": bicubic}
    if not args.no_default:
        methods["craft-bundled x4 (sr_x4 default, bicubic-trained)"] = model_method("craft-bundled", None)
    for path in args.weights:
        methods[str(path)] = model_method(args.model, path)
    report = {
        "set": {
            "folder": str(args.set_dir),
            "photos": str(args.hr),
            "images": len(names),
            "seed": args.seed,
            "crop": args.crop,
            "written_now": written,
        },
        **evaluate(args.set_dir, names, methods, args.lpips),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
