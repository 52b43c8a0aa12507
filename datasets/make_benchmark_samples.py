"""Rebuild datasets/benchmark_sample/HR/: a small test set so `restorer benchmark` runs on a fresh clone.

Run: python datasets/make_benchmark_samples.py. Deterministic (fixed crops, no randomness). The
images ship inside scikit-image, so nothing is downloaded. None of them is a training photo of
datasets/make_training_set.py; chelsea and coffee are its held-out validation photos (never
trained on), the others are used nowhere else. Only HR images are written, in the ``HR/`` layout:
`restorer benchmark` makes the LR inputs (mod-crop, MATLAB bicubic), and
`restorer datasets prepare datasets/benchmark_sample --scale 4` writes them to LR_bicubic/X4/.
Sizes are deliberately not all multiples of 12, so mod-cropping is exercised at every scale.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

OUT = Path(__file__).resolve().parent / "benchmark_sample" / "HR"

# name -> (scikit-image loader, rows, columns): crops of a few hundred pixels.
CROPS = {
    "chelsea": ("chelsea", slice(10, 292), slice(70, 372)),  # 282x302 cat: fur, whiskers
    "coffee": ("coffee", slice(30, 330), slice(140, 458)),  # 300x318 cup on a saucer
    "cell": ("cell", slice(230, 490), slice(280, 546)),  # 260x266 gray microscopy
    "logo": ("logo", slice(60, 330), slice(90, 382)),  # 270x292 graphics: lines, flat colour
    "colorwheel": ("colorwheel", slice(35, 335), slice(35, 335)),  # 300x300 smooth saturated hues
}


def _flatten(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 RGB: gray repeated, alpha composited on white (test sets are opaque RGB)."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float64) / 255.0
        return (image[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return image


def sample_images() -> dict[str, np.ndarray]:
    """The sample set's HR images, name -> uint8 HxWx3 RGB."""
    images = {}
    for name, (loader, rows, cols) in CROPS.items():
        images[name] = np.ascontiguousarray(_flatten(getattr(data, loader)())[rows, cols])
    return images


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rgb in sample_images().items():
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
        assert ok
        (OUT / f"{name}.png").write_bytes(buf.tobytes())


if __name__ == "__main__":
    main()
