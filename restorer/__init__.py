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
    task: str | None = None,
    model: str | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    precision: str = "auto",
    tile: int | None = None,
    tile_overlap: int | None = None,
) -> Restorer:
    """Resolve ``task``/``model`` through the router and load the model with its weights.

    ``load_model(weights="x.pth")`` recognises the file's architecture, variant and scale from its
    state dict (no ``model`` or ``task`` needed); ``weights="x.onnx"`` (from ``restorer export``) runs
    with ONNX Runtime. ``str()`` of the result says what was loaded.
    """
    from restorer import tasks
    from restorer import weights as rw
    from restorer.engine.onnx_runner import is_onnx_file
    from restorer.engine.runner import build_restorer
    from restorer.errors import UsageError

    if is_onnx_file(weights):  # an exported file describes itself; it runs with ONNX Runtime
        from restorer.engine.onnx_runner import build_onnx_restorer, onnx_entry_for_task

        found = onnx_entry_for_task(weights, task)
        if model is not None and model.lower() != found.model:
            raise UsageError(f"{weights} holds {found.model}, not {model}.")
        return build_onnx_restorer(weights, device, precision, tile, tile_overlap)
    if weights is not None and model is None:
        from restorer.detect import entry_for_task, inspect_checkpoint

        found = entry_for_task(inspect_checkpoint(weights), task)
        task, model = task or found.tasks[0], found.model
    if task is None:
        raise UsageError("load_model needs a task, or weights= a checkpoint file to recognise.")
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
