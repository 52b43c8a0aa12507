"""Rebuild restorer/samples/: small demo inputs cut from photos that ship with scikit-image.

Run: python datasets/make_samples.py. The output is deterministic (fixed crops, no randomness),
and covers the cases the tool must keep: RGB, grayscale, RGBA (alpha) and 16-bit.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

OUT = Path(__file__).resolve().parent.parent / "restorer" / "samples"


def _write(name: str, array: np.ndarray) -> None:
    """Write with OpenCV (BGR/BGRA order on disk), keeping dtype (uint8 or uint16)."""
    if array.ndim == 3:
        order = [2, 1, 0, 3][: array.shape[2]]
        array = array[..., order]
    ok, buf = cv2.imencode(".png", array)
    assert ok
    (OUT / name).write_bytes(buf.tobytes())


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    astronaut = data.astronaut()  # 512x512 RGB
    _write("astronaut_face.png", astronaut[40:136, 160:256])
    camera = data.camera()  # 512x512 gray
    _write("camera_gray.png", camera[60:140, 200:296])
    coffee = data.coffee()  # 400x600 RGB
    crop = coffee[100:172, 200:296]
    h, w = crop.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    radius = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    alpha = np.clip((1.0 - radius) * 4.0, 0, 1)
    rgba = np.dstack([crop, (alpha * 255).round().astype(np.uint8)])
    _write("coffee_cup_alpha.png", rgba)
    chelsea = data.chelsea()  # 300x451 RGB
    cat16 = (chelsea[60:140, 150:246].astype(np.uint16) * 257)[..., :3]
    _write("chelsea_16bit.png", cat16)


if __name__ == "__main__":
    main()
