"""Refuse an image job before it allocates memory it cannot have.

An 8000 x 8000 PNG of a few kilobytes decodes to 190 MB of samples and needs several gigabytes on its
way through the engine; at x4 the output canvas alone is 12 GB. Without a check the process grows until
the kernel kills it or ``MemoryError`` strikes half-way (the whole batch lost with it). The estimate
here is taken from the file's header before anything is decoded, and compared with the memory the
system says is available now.
"""

from __future__ import annotations

import os
from pathlib import Path

from restorer.errors import RestorerError

__all__ = ["MemoryBudgetError", "available_memory", "check_image_job", "image_job_bytes"]

_GIB = 2**30

# Bytes per input pixel and channel held at the peak of one job (engine/runner.py, engine/tiling.py):
# the float32 pixels, the tensor handed to the model and its padded copy on the input side; the float32
# output canvas, the post-processed copy and the quantised samples on the output side.
_INPUT_BYTES = 12
_OUTPUT_BYTES = 10


class MemoryBudgetError(RestorerError):
    """An image whose job would need more memory than the system has available."""


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (``MemAvailable``), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def image_job_bytes(height: int, width: int, scale: float) -> int:
    """Peak memory of restoring one ``height x width`` image at ``scale`` (colour counted as 3 channels:
    gray images run through colour models as three)."""
    pixels = height * width * 3
    return int(pixels * _INPUT_BYTES + pixels * scale * scale * _OUTPUT_BYTES)


def check_image_job(path: Path, height: int, width: int, scale: float, available: int | None = None) -> None:
    """Raise :class:`MemoryBudgetError` when the job cannot fit in the memory available now."""
    available = available_memory() if available is None else available
    if available is None:
        return
    need = image_job_bytes(height, width, scale)
    if need <= available:
        return
    per_pixel = need / (height * width)
    fits = int(available / per_pixel)
    out_w, out_h = round(width * scale), round(height * scale)
    raise MemoryBudgetError(
        f"{path}: a {width} x {height} image at x{scale:g} ({out_w} x {out_h} out) needs about "
        f"{need / _GIB:.1f} GiB and {available / _GIB:.1f} GiB is available; inputs up to about "
        f"{fits / 1e6:.1f} megapixels fit here (crop or downscale it, or free memory). Tiling (-t) "
        "bounds the model's working set, not the image and its output."
    )
