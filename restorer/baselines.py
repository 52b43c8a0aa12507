"""Classical denoising baselines for additive Gaussian noise of known sigma (0-255 scale), grayscale and
colour, each tuned for that sigma, for comparisons with learned denoisers.

* :func:`nlm_opencv`: OpenCV's fast non-local means (``fastNlMeansDenoising`` for gray,
  ``fastNlMeansDenoisingColored`` for colour, which filters in CIELAB). OpenCV takes 8-bit images, so
  the noisy input is clipped and rounded to 8 bits first (what a noisy 8-bit file would hold).
* :func:`nlm_skimage`: scikit-image's ``denoise_nl_means`` on the float image with the noise
  ``sigma`` given (its distance subtracts the expected noise term), ``fast_mode``.
* :func:`wavelet_skimage`: scikit-image's ``denoise_wavelet`` (BayesShrink or VisuShrink, soft
  thresholds, YCbCr for colour) with the noise ``sigma`` given rather than estimated.

How they are tuned: :func:`tune` runs a grid search per (sigma, channels) on centre crops of the
training photos (``datasets/skimage_sr/train``, made by ``datasets/make_training_set.py``; the
validation photos are never used), with fixed-seed noise, maximising mean PSNR; the winners are in
:data:`TUNED` (regenerate with ``python -m restorer.baselines``). Parameters are stored relative to
sigma (``h = h_factor * sigma``), so a sigma between tuned ones uses the factors of the nearest tuned
sigma. :func:`best_classical_denoise` applies the method that won the tuning for that sigma and
channel count, or, given the clean image, all of them and returns the best (an oracle choice: the
strongest classical baseline a learned model can be compared with).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from skimage.restoration import denoise_nl_means, denoise_wavelet

from restorer.errors import UsageError
from restorer.metrics import psnr_all_channels

__all__ = [
    "METHODS",
    "TUNED",
    "BaselineResult",
    "best_classical_denoise",
    "nlm_opencv",
    "nlm_skimage",
    "tune",
    "tuned_parameters",
    "wavelet_skimage",
]


def _as_hwc(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise UsageError(f"expected an H x W, H x W x 1 or H x W x 3 image, got shape {image.shape}")
    return image


def nlm_opencv(
    noisy: np.ndarray,
    sigma: float,
    h_factor: float,
    color_factor: float = 1.0,
    template: int = 7,
    search: int = 21,
) -> np.ndarray:
    """OpenCV fast non-local means with ``h = h_factor * sigma`` (and ``hColor = color_factor * h``).

    ``noisy``: float ``H x W (x 1|3)`` RGB in [0, 1]; returns float32 ``H x W x C`` in [0, 1].
    """
    image = _as_hwc(noisy)
    samples = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    h = float(h_factor * sigma)
    if image.shape[2] == 1:
        out = cv2.fastNlMeansDenoising(samples[:, :, 0], None, h, template, search)[:, :, None]
    else:
        bgr = np.ascontiguousarray(samples[:, :, ::-1])
        out = cv2.fastNlMeansDenoisingColored(bgr, None, h, h * color_factor, template, search)[:, :, ::-1]
    return out.astype(np.float32) / 255.0


def nlm_skimage(
    noisy: np.ndarray, sigma: float, h_factor: float, patch_size: int = 5, patch_distance: int = 6
) -> np.ndarray:
    """scikit-image non-local means (``fast_mode``), noise sigma given, ``h = h_factor * sigma``."""
    image = _as_hwc(noisy)
    s = sigma / 255.0
    out = denoise_nl_means(
        image,
        h=h_factor * s,
        sigma=s,
        patch_size=patch_size,
        patch_distance=patch_distance,
        fast_mode=True,
        channel_axis=-1,
    )
    return np.clip(out, 0.0, 1.0).astype(np.float32).reshape(image.shape)


def wavelet_skimage(
    noisy: np.ndarray, sigma: float, method: str, wavelet: str, sigma_factor: float = 1.0
) -> np.ndarray:
    """scikit-image wavelet denoising (soft thresholds; YCbCr for colour) with ``sigma_factor * sigma``.

    ``method`` is ``'BayesShrink'`` or ``'VisuShrink'``. VisuShrink's universal threshold removes
    too much at the true sigma, so its tuned ``sigma_factor`` is usually well below 1.
    """
    image = _as_hwc(noisy)
    color = image.shape[2] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pywt's "level too high" note for small crops
        out = denoise_wavelet(
            image if color else image[:, :, 0],
            sigma=sigma_factor * sigma / 255.0,
            wavelet=wavelet,
            mode="soft",
            method=method,
            rescale_sigma=True,
            convert2ycbcr=color,
            channel_axis=-1 if color else None,
        )
    return np.clip(out, 0.0, 1.0).astype(np.float32).reshape(image.shape)


METHODS: dict[str, Callable[..., np.ndarray]] = {
    "nlm_opencv": nlm_opencv,
    "nlm_skimage": nlm_skimage,
    "wavelet_skimage": wavelet_skimage,
}

# Grids searched by tune(); every parameter not listed keeps its default.
# Grids searched by tune(); every parameter not listed keeps its default. A first pass (OpenCV colour
# h_factor 0.5-1.3, color_factor 0.5-1.0, template 5/7; scikit-image h_factor 0.5-1.0) put the colour
# optima at grid edges (color_factor 1.0, template 5 everywhere, h_factor 0.5 for scikit-image at
# sigma 50), so these grids reach past them.
GRIDS: dict[str, dict[int, dict[str, Sequence[Any]]]] = {
    "nlm_opencv": {
        1: {"h_factor": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3], "template": [5, 7]},
        3: {
            "h_factor": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
            "color_factor": [1.0, 1.5, 2.0, 3.0],
            "template": [3, 5],
        },
    },
    "nlm_skimage": {c: {"h_factor": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]} for c in (1, 3)},
    "wavelet_skimage": {
        c: {
            "method": ["BayesShrink", "VisuShrink"],
            "wavelet": ["db1", "db2", "sym4", "db4"],
            "sigma_factor": [0.25, 0.35, 0.5, 0.7, 1.0, 1.4],
        }
        for c in (1, 3)
    },
}

TUNED: dict[tuple[int, int], dict[str, Any]] = {
    (15, 1): {
        "nlm_opencv": {"params": {"h_factor": 1.1, "template": 5}, "psnr": 31.568},
        "nlm_skimage": {"params": {"h_factor": 0.7}, "psnr": 32.013},
        "wavelet_skimage": {
            "params": {"method": "BayesShrink", "wavelet": "db1", "sigma_factor": 1.0},
            "psnr": 30.034,
        },
        "best": "nlm_skimage",
    },
    (25, 1): {
        "nlm_opencv": {"params": {"h_factor": 1.0, "template": 5}, "psnr": 28.61},
        "nlm_skimage": {"params": {"h_factor": 0.7}, "psnr": 29.169},
        "wavelet_skimage": {
            "params": {"method": "BayesShrink", "wavelet": "db1", "sigma_factor": 1.0},
            "psnr": 27.406,
        },
        "best": "nlm_skimage",
    },
    (50, 1): {
        "nlm_opencv": {"params": {"h_factor": 0.8, "template": 7}, "psnr": 24.203},
        "nlm_skimage": {"params": {"h_factor": 0.7}, "psnr": 25.116},
        "wavelet_skimage": {
            "params": {"method": "BayesShrink", "wavelet": "db1", "sigma_factor": 1.0},
            "psnr": 24.444,
        },
        "best": "nlm_skimage",
    },
    (15, 3): {
        "nlm_opencv": {"params": {"h_factor": 0.6, "color_factor": 1.5, "template": 3}, "psnr": 31.174},
        "nlm_skimage": {"params": {"h_factor": 0.7}, "psnr": 32.557},
        "wavelet_skimage": {
            "params": {"method": "BayesShrink", "wavelet": "db1", "sigma_factor": 1.0},
            "psnr": 31.732,
        },
        "best": "nlm_skimage",
    },
    (25, 3): {
        "nlm_opencv": {"params": {"h_factor": 0.7, "color_factor": 1.0, "template": 3}, "psnr": 28.218},
        "nlm_skimage": {"params": {"h_factor": 0.6}, "psnr": 30.039},
        "wavelet_skimage": {
            "params": {"method": "BayesShrink", "wavelet": "db1", "sigma_factor": 1.0},
            "psnr": 28.912,
        },
        "best": "nlm_skimage",
    },
    (50, 3): {
        "nlm_opencv": {"params": {"h_factor": 0.6, "color_factor": 1.0, "template": 5}, "psnr": 24.144},
        "nlm_skimage": {"params": {"h_factor": 0.5}, "psnr": 26.289},
        "wavelet_skimage": {
            "params": {"method": "BayesShrink", "wavelet": "db1", "sigma_factor": 1.0},
            "psnr": 25.532,
        },
        "best": "nlm_skimage",
    },
}
"""``(sigma, channels)`` -> ``{method: {'params': {...}, 'psnr': mean dB on the tuning crops}, 'best':
method}``, from :func:`tune` (see the module docstring)."""


def tuned_parameters(sigma: float, channels: int) -> dict[str, Any]:
    """The tuning entry for ``channels`` at the tuned sigma nearest ``sigma``."""
    candidates = [s for s, c in TUNED if c == channels]
    if not candidates:
        raise UsageError(
            f"no tuned baseline parameters for {channels}-channel images; run python -m restorer.baselines"
        )
    nearest = min(candidates, key=lambda s: (abs(s - sigma), s))
    return TUNED[(nearest, channels)]


@dataclass(frozen=True)
class BaselineResult:
    """A baseline's output (float32 ``H x W x C`` in [0, 1]), which method made it and with what."""

    image: np.ndarray
    method: str
    params: Mapping[str, Any]
    psnr: float | None = None  # against the clean image, when it was given


def best_classical_denoise(
    noisy: np.ndarray, sigma: float, clean: np.ndarray | None = None
) -> BaselineResult:
    """The tuned classical baseline for Gaussian noise of ``sigma`` (0-255 scale).

    Without ``clean``: the method that won the tuning for this sigma and channel count. With ``clean``:
    every tuned method, and the one with the highest PSNR against ``clean`` (oracle selection).
    """
    image = _as_hwc(noisy)
    entry = tuned_parameters(sigma, image.shape[2])
    names = list(METHODS) if clean is not None else [entry["best"]]
    results = []
    for name in names:
        params = entry[name]["params"]
        output = METHODS[name](image, sigma, **params)
        score = psnr_all_channels(output, _as_hwc(clean), clip_output=True) if clean is not None else None
        results.append(BaselineResult(output, name, dict(params), score))
    return max(results, key=lambda r: r.psnr if r.psnr is not None else 0.0)


# ----------------------------------------------------------------------------------------------------
# Tuning
# ----------------------------------------------------------------------------------------------------


def tuning_crops(folder: str | Path, size: int = 128, channels: int = 3) -> list[np.ndarray]:
    """Centre ``size`` crops of every image in ``folder`` (gray: BT.601 luma), float32 in [0, 1]."""
    from restorer import io as rio

    paths, _ = rio.collect_images([folder])
    crops = []
    for path in paths:
        pixels = rio.read_image(path).pixels
        pixels = rio.to_gray(pixels) if channels == 1 else rio.to_rgb(pixels)
        h, w = pixels.shape[:2]
        top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
        crops.append(np.ascontiguousarray(pixels[top : top + size, left : left + size]))
    if not crops:
        raise UsageError(f"no images in {folder}; run python datasets/make_training_set.py")
    return crops


def tune(clean_images: Sequence[np.ndarray], sigma: float, seed: int = 0) -> dict[str, Any]:
    """Grid-search every method's parameters for ``sigma`` on ``clean_images`` (one channel count).

    Noise is fixed per image (``seed``, image index) and not clipped; the score is the mean PSNR.
    Returns a :data:`TUNED` entry.
    """
    from restorer.training.degradations import gaussian_noise

    channels = _as_hwc(clean_images[0]).shape[2]
    noisy = [
        gaussian_noise(_as_hwc(image), sigma, np.random.default_rng([seed, i]))
        for i, image in enumerate(clean_images)
    ]
    entry: dict[str, Any] = {}
    for name, method in METHODS.items():
        grid = GRIDS[name][channels]
        best_params, best_score = None, -math.inf
        for values in itertools.product(*grid.values()):
            params = dict(zip(grid, values))
            score = float(
                np.mean(
                    [
                        psnr_all_channels(method(n, sigma, **params), c, clip_output=True)
                        for n, c in zip(noisy, clean_images)
                    ]
                )
            )
            if score > best_score:
                best_params, best_score = params, score
        entry[name] = {"params": best_params, "psnr": round(best_score, 3)}
    entry["best"] = max(METHODS, key=lambda name: entry[name]["psnr"])
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tune the classical denoising baselines (prints TUNED).")
    parser.add_argument("--folder", default="datasets/skimage_sr/train")
    parser.add_argument("--sigma", type=float, nargs="+", default=[15, 25, 50])
    parser.add_argument("--size", type=int, default=128, help="centre crop size used for tuning")
    args = parser.parse_args(argv)
    table = {}
    for channels in (1, 3):
        crops = tuning_crops(args.folder, args.size, channels)
        for sigma in args.sigma:
            table[(int(sigma), channels)] = tune(crops, sigma)
            print(
                f"sigma {sigma:g}, {channels} channel(s): {json.dumps(table[(int(sigma), channels)])}",
                flush=True,
            )
    print("TUNED = {")
    for key, value in table.items():
        print(f"    {key}: {value!r},")
    print("}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
