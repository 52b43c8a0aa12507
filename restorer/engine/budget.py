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

__all__ = [
    "MemoryBudgetError",
    "available_memory",
    "check_codec_job",
    "check_image_job",
    "codec_job_bytes",
    "image_job_bytes",
]

_GIB = 2**30

# Bytes per input pixel and channel held at the peak of one job (engine/runner.py, engine/tiling.py):
# the float32 pixels, the tensor handed to the model and its padded copy on the input side; the float32
# output canvas, the post-processed copy and the quantised samples on the output side.
_INPUT_BYTES = 12
_OUTPUT_BYTES = 10

# S2LIC codes the whole image at once (no tiles), so its peak grows with the pixels and the width N of
# its transforms' features. Measured (peak resident growth, CPU, 256-512 px squares): ~430 bytes a
# pixel for N=16 (the tests' tiny model), ~1,400 for s2lic-small (N=64), ~3,000 for the published
# N=192; encoding and decoding alike. base + per-feature x N covers each with some room; pixels are
# counted after padding to the latent multiple (64), as the model sees them.
_CODEC_BASE_BYTES = 200
_CODEC_FEATURE_BYTES = 20
_CODEC_MULTIPLE = 64


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


def _amount(size: float) -> str:
    """Bytes as GiB, or MiB below one GiB (a lowered budget would otherwise read "0.0 GiB")."""
    return f"{size / _GIB:.1f} GiB" if size >= _GIB else f"{size / 2**20:.1f} MiB"


def _pixels(count: int) -> str:
    """Megapixels, with two significant digits below 0.1 (a lowered budget would read "0.0")."""
    return f"{count / 1e6:.1f} megapixels" if count >= 100_000 else f"{count / 1e6:.2g} megapixels"


def image_job_bytes(height: int, width: int, scale: float) -> int:
    """Peak memory of restoring one ``height x width`` image at ``scale`` (colour counted as 3 channels:
    gray images run through colour models as three)."""
    pixels = height * width * 3
    return int(pixels * _INPUT_BYTES + pixels * scale * scale * _OUTPUT_BYTES)


def _shortfall(need: int, available: int | None) -> tuple[int, int] | None:
    """``(need, available)`` when a job needing ``need`` bytes does not fit in ``available`` (default: the
    memory available now); ``None`` when it fits or the available memory cannot be known."""
    available = available_memory() if available is None else available
    if available is None or need <= available:
        return None
    return need, available


def check_image_job(path: Path, height: int, width: int, scale: float, available: int | None = None) -> None:
    """Raise :class:`MemoryBudgetError` when the job cannot fit in the memory available now."""
    shortfall = _shortfall(image_job_bytes(height, width, scale), available)
    if shortfall is None:
        return
    need, available = shortfall
    per_pixel = need / (height * width)
    fits = int(available / per_pixel)
    out_w, out_h = round(width * scale), round(height * scale)
    raise MemoryBudgetError(
        f"{path}: a {width} x {height} image at x{scale:g} ({out_w} x {out_h} out) needs about "
        f"{_amount(need)} and {_amount(available)} is available; inputs up to about "
        f"{_pixels(fits)} fit here (crop or downscale it, or free memory). Tiling (-t) "
        "bounds the model's working set, not the image and its output."
    )


def codec_job_bytes(height: int, width: int, features: int) -> int:
    """Peak memory of coding (or decoding) one ``height x width`` image with an S2LIC model whose
    transforms have ``features`` channels (its ``N``)."""
    padded_h = -(-height // _CODEC_MULTIPLE) * _CODEC_MULTIPLE
    padded_w = -(-width // _CODEC_MULTIPLE) * _CODEC_MULTIPLE
    return padded_h * padded_w * (_CODEC_BASE_BYTES + _CODEC_FEATURE_BYTES * features)


def check_codec_job(
    path: Path,
    height: int,
    width: int,
    features: int,
    *,
    decoding: bool = False,
    available: int | None = None,
) -> None:
    """Raise :class:`MemoryBudgetError` when coding (``decoding``: decoding) a ``height x width`` image
    with an S2LIC model of ``features`` channels cannot fit in the memory available now."""
    shortfall = _shortfall(codec_job_bytes(height, width, features), available)
    if shortfall is None:
        return
    need, available = shortfall
    fits = int(available / (need / max(1, height * width)))
    if decoding:
        advice = "decode it where more memory is free"
        what = f"the file declares a {width} x {height} image, which"
    else:
        advice = "crop or downscale it, or free memory"
        what = f"a {width} x {height} image"
    raise MemoryBudgetError(
        f"{path}: {what} needs about {_amount(need)} to {'decode' if decoding else 'compress'} "
        f"and {_amount(available)} is available; images up to about {_pixels(fits)} "
        f"fit here ({advice})."
    )
