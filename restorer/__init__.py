"""restorer: image restoration and super-resolution behind one task router.

Public API (imported lazily, so ``restorer --help`` starts fast)::

    import restorer
    model = restorer.load_model("sr_x4", model="hat-s")   # a Restorer
    out = restorer.restore(pixels, task="sr_x4")           # HxWxC float32 in [0, 1] -> upscaled
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import numpy as np

    from restorer.engine.runner import Restorer


def load_model(
    task: str,
    model: str | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    precision: str = "auto",
    tile: int | None = None,
    tile_overlap: int | None = None,
) -> Restorer:
    """Resolve ``task``/``model`` through the router and load the model with its weights."""
    from restorer import tasks
    from restorer import weights as rw
    from restorer.engine.runner import build_restorer

    available = None if weights else rw.is_available
    entry = tasks.resolve(task, model, weights_available=available)
    return build_restorer(entry, weights, device, precision, tile, tile_overlap)


def restore(image: np.ndarray, task: str = "sr_x4", **load_options: Any) -> np.ndarray:
    """Restore one HxWxC (C = 1 or 3, RGB) float image in [0, 1]; returns the output array."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return load_model(task, **load_options).run_array(pixels)


__all__ = ["__version__", "load_model", "restore"]
