"""Reference outputs of every shipped default, for tests/test_golden.py.

A silent change in the shipped weights or in the engine (padding, tiling, precision, colour handling)
changes what users get without any error. Each shipped zoo entry (those with a sha256) is run here on
one small fixed input and its output stored as a 16-bit PNG, with the weights' sha256 beside it in
``golden.json``. Run this again, deliberately, when a shipped file is replaced::

    python tests/golden/make_golden.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

SIGMA = 25


def golden_input(task_kind: str, scale: int) -> np.ndarray:
    """The fixed input of one kind of default: a crop of scikit-image's astronaut (float32 HxWx3)."""
    from skimage import data

    crop = data.astronaut()[96:160, 200:264].astype(np.float32) / 255.0  # 64 x 64: face and helmet
    if task_kind == "sr":
        import cv2

        return cv2.resize(crop, (64 // scale, 64 // scale), interpolation=cv2.INTER_AREA)
    if task_kind == "denoise":
        noise = np.random.default_rng(0).normal(0.0, SIGMA / 255.0, crop.shape).astype(np.float32)
        return crop + noise
    return crop


def shipped_entries() -> list:
    from restorer import zoo

    return sorted((e for e in zoo.ZOO.values() if e.sha256), key=lambda e: e.key)


def kind_of(entry) -> str:
    if entry.arch == "S2LIC":
        return "codec"
    return "denoise" if "denoise" in entry.tasks else "sr"


def run_default(entry) -> np.ndarray:
    """The output a user gets from ``entry`` on its golden input (CPU, fp32, whole image)."""
    kind = kind_of(entry)
    image = golden_input(kind, entry.scale)
    if kind == "codec":
        from restorer.codec.api import compress_image, decompress_bytes, load_codec

        codec = load_codec(entry.model)
        return decompress_bytes(codec, compress_image(codec, image))
    from restorer import load_model

    restorer = load_model(task=entry.tasks[0], model=entry.model, device="cpu", precision="fp32")
    return restorer.run_array(np.ascontiguousarray(image, dtype=np.float32))


def golden_name(entry) -> str:
    return f"{entry.model}_x{entry.scale}.png"


def main() -> int:
    import torch

    from restorer import io as rio

    torch.set_num_threads(1)
    record = {}
    for entry in shipped_entries():
        output = run_default(entry)
        rio.write_image(HERE / golden_name(entry), output, bit_depth=16)
        record[golden_name(entry)] = entry.sha256
        print(f"{golden_name(entry)}: {output.shape}")
    (HERE / "golden.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
