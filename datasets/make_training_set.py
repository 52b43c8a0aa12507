"""Build datasets/skimage_sr/: the HR training and held-out validation photos for the bundled
default weights, from images that ship inside scikit-image (no download).

Run: python datasets/make_training_set.py. Deterministic; the output folder is not committed.
Validation photos (chelsea, coffee) are never used for training.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

OUT = Path(__file__).resolve().parent / "skimage_sr"
TRAIN = (
    "astronaut",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
    "page",
    "text",
    "camera",
    "clock",
)
VALIDATION = ("chelsea", "coffee")


def _load(name: str) -> np.ndarray:
    if name == "motorcycle_left":
        return data.stereo_motorcycle()[0]
    if name == "motorcycle_right":
        return data.stereo_motorcycle()[1]
    if name == "clock":
        return data.clock()
    return getattr(data, name)()


def _save(path: Path, image: np.ndarray) -> None:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (
            (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
            if image.dtype.kind == "f"
            else image.astype(np.uint8)
        )
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)  # models are trained on colour input
    cv2.imwrite(str(path), np.ascontiguousarray(image[..., :3][..., ::-1]))


def main() -> None:
    for split, names in (("train", TRAIN), ("val", VALIDATION)):
        folder = OUT / split
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            _save(folder / f"{name}.png", _load(name))


if __name__ == "__main__":
    main()
