"""The before/after grid of ``weights/README.md``'s real_sr_x4 section: real low-quality photos (JPEG files
as published inside Python packages, at their own resolution, not degraded by us) upscaled x4 by MATLAB
bicubic, by the bicubic-trained ``sr_x4`` default and by a real-world model.

Each row is one crop; the columns are the input (nearest-neighbour x4, to show its pixels), bicubic, the
``sr_x4`` default and ``--weights`` (loaded into ``--model``). The photos are held-out validation photos of
the corpus: no model here was trained on them. ::

    python weights/make_real_sr_grid.py --weights restorer/bundled/restorer_CRAFT_real_SRx4_corpus.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "weights"))

#: (label, where the file is inside its package, crop left, top, size) of each row.
CROPS = (
    ("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", 200, 158, 48),
    ("cheetah", "gradio", "media_assets/images/cheetah.jpg", 258, 128, 48),
    ("tower", "gradio", "media_assets/images/tower.jpg", 158, 208, 48),
)


def _photo(package: str, relative: str) -> np.ndarray:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed: it carries the photo {relative}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return np.ascontiguousarray(image[..., ::-1])


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    cv2.rectangle(tile, (0, 0), (tile.shape[1], 16), (0, 0, 0), -1)
    cv2.putText(tile, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def main(argv: list[str] | None = None) -> int:
    from eval_real_sr import SCALE, bicubic, model_method

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help="the real-world x4 model to show")
    parser.add_argument("--model", default="craft-bundled", help="zoo model the --weights file loads into")
    parser.add_argument("--label", default="real_sr_x4 CPU recipe", help="its column's title")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "weights" / "real_sr_x4_grid.png")
    args = parser.parse_args(argv)

    default = model_method("craft-bundled", None)
    real = model_method(args.model, args.weights)
    rows = []
    for label, package, relative, left, top, size in CROPS:
        lr = _photo(package, relative)[top : top + size, left : left + size]
        nearest = np.repeat(np.repeat(lr, SCALE, 0), SCALE, 1)
        columns = [
            (nearest, f"{label} (input)"),
            (bicubic(lr), "bicubic"),
            (default(lr), "sr_x4 default"),
            (real(lr), args.label),
        ]
        rows.append(np.concatenate([_label(t, text) for t, text in columns], axis=1))
    grid = np.concatenate(rows, axis=0)
    if not cv2.imwrite(
        str(args.output), np.ascontiguousarray(grid[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9]
    ):
        raise SystemExit(f"cannot write {args.output}")
    print(f"{args.output}  {grid.shape[1]}x{grid.shape[0]}  {args.output.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
