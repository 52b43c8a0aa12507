"""Checks on medical files made from their headers, before any voxel is read, and a quiet pydicom.

* **Size** (:func:`check_voxels`): a volume's voxel count comes from its header (NIfTI ``dim``; DICOM
  *Rows* x *Columns* x frames over all files) and is refused above :data:`MAX_VOLUME_VOXELS`, or the
  ``max_voxels`` a caller passes (``restorer infer --max-voxels N``), before the data is loaded.
* **Rescale** (:func:`dicom_rescale`, :func:`check_nifti_header`): a slope or intercept that is not a
  finite number, a zero DICOM slope, a slope below :data:`MIN_RESCALE_SLOPE`, or one that maps the
  stored integer range beyond :data:`MAX_PHYSICAL_MAGNITUDE` is a damaged header. Left alone it gives
  NaN, infinite or all-zero slices and a result written with exit status 0. NIfTI keeps its own
  conventions (as nibabel reads them): ``scl_slope`` 0 or NaN means the data are not scaled.
* **pydicom's log** (:func:`quiet_pydicom`): pydicom logs a full traceback for every decoding plugin
  that fails before it raises; the caller's one-line error says the same, so those records are kept
  off the terminal and passed on, one line each, to this module's logger at INFO level (``-v``).
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from restorer.errors import ImageReadError

__all__ = [
    "MAX_PHYSICAL_MAGNITUDE",
    "MAX_VOLUME_VOXELS",
    "MIN_RESCALE_SLOPE",
    "check_nifti_header",
    "check_voxels",
    "dicom_rescale",
    "nifti_header",
    "quiet_pydicom",
]

log = logging.getLogger(__name__)

MAX_VOLUME_VOXELS: int = 2**28
"""Largest volume (slices x rows x columns of the input) a medical read accepts: 268 million voxels,
e.g. 512 x 512 x 1024. Its float32 values alone take 1 GiB, and the result as much again (16 times that
after ``mri_sr_x4``). Raise it at run time (``restorer.medical_checks.MAX_VOLUME_VOXELS = ...``) or per
call with ``max_voxels`` / ``restorer infer --max-voxels N`` (0: no limit)."""

MAX_PHYSICAL_MAGNITUDE: float = 1e12
"""Largest magnitude a rescaled stored value may reach. No modality comes near it (CT stays within
+-32768 HU even on extended scales, PET activity below 1e9 Bq/ml, 32-bit MR data below 4.3e9), and it is
far inside float32 (3.4e38), so a slope or intercept that reaches it is a damaged header."""

MIN_RESCALE_SLOPE: float = 1e-20
"""Smallest slope magnitude accepted. The smallest real ones are near 1e-12 (susceptibility maps stored
as plain numbers); far smaller ones flatten every slice to zero, in float32 below about 1e-38."""


def _describe(voxels: int, shape: tuple[int, ...]) -> str:
    return f"{' x '.join(str(n) for n in shape)} = {voxels:,} voxels"


def check_voxels(what: str, shape: tuple[int, ...], max_voxels: int | None = None) -> None:
    """Refuse a volume of ``shape`` (from its header) above the limit; ``what`` names it in the message.

    ``max_voxels`` None means :data:`MAX_VOLUME_VOXELS` (read at call time), 0 no limit.
    """
    limit = MAX_VOLUME_VOXELS if max_voxels is None else max_voxels
    voxels = math.prod(int(n) for n in shape)
    if limit and voxels > limit:
        raise ImageReadError(
            f"Cannot read {what}: {_describe(voxels, shape)} is more than the limit of {limit:,}; "
            "raise it with `restorer infer --max-voxels N` (0: no limit) or "
            "restorer.medical_checks.MAX_VOLUME_VOXELS if the machine has the memory"
        )


def _stored_range(header: Any) -> tuple[int, int]:
    """The stored integer range a DICOM header declares (*Bits Stored*, *Pixel Representation*)."""
    allocated = int(header.get("BitsAllocated", 16) or 16)
    bits = max(1, min(int(header.get("BitsStored", allocated) or allocated), 64))
    if int(header.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _check_rescale(
    where: str, slope: float, inter: float, stored: tuple[int, int], slope_tag: str, inter_tag: str
) -> None:
    """Refuse a finite, non-zero slope / finite intercept pair that is still absurd for ``stored``."""
    if abs(slope) < MIN_RESCALE_SLOPE:
        raise ImageReadError(
            f"Cannot use {where}: {slope_tag} {slope:g} is below {MIN_RESCALE_SLOPE:g}, which would "
            "flatten every slice to one value; the header is damaged"
        )
    # Python floats overflow to inf instead of raising, which still fails the comparison below.
    reach = max(abs(stored[0] * slope + inter), abs(stored[1] * slope + inter))
    if not reach <= MAX_PHYSICAL_MAGNITUDE:
        raise ImageReadError(
            f"Cannot use {where}: {slope_tag} {slope:g} with {inter_tag} {inter:g} maps the stored "
            f"values {stored[0]}..{stored[1]} to as far as {reach:.3g}, beyond +-{MAX_PHYSICAL_MAGNITUDE:g} "
            "(no modality's values come near it); the header is damaged"
        )


def _dicom_number(holder: Any, keyword: str, tag: str, default: float, where: str) -> float:
    value = holder.get(keyword)
    if value is None or value == "":  # absent or empty: the identity, as the standard's default
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):  # several values, or text that is not a number
        raise ImageReadError(
            f"Cannot use {where}: {keyword} {tag} is {str(value)!r}, not one number; the header is damaged"
        ) from None
    if not math.isfinite(number):
        raise ImageReadError(f"Cannot use {where}: {keyword} {tag} is {number}; the header is damaged")
    return number


def dicom_rescale(holder: Any, header: Any, where: str) -> tuple[float, float]:
    """``(slope, intercept)`` of ``holder`` (the dataset, or a functional group's Pixel Value
    Transformation item), checked against the stored range ``header`` declares.

    ``where`` names the file (and the item) in the messages. A zero slope is an error: it would make
    every pixel the intercept.
    """
    slope = _dicom_number(holder, "RescaleSlope", "(0028,1053)", 1.0, where)
    inter = _dicom_number(holder, "RescaleIntercept", "(0028,1052)", 0.0, where)
    if slope == 0:
        raise ImageReadError(
            f"Cannot use {where}: RescaleSlope (0028,1053) is 0, which would make every pixel "
            f"{inter:g}; the header is damaged"
        )
    _check_rescale(
        where, slope, inter, _stored_range(header), "RescaleSlope (0028,1053)", "RescaleIntercept (0028,1052)"
    )
    return slope, inter


def nifti_header(path: str | os.PathLike[str]) -> Any:
    """The NIfTI-1/2 header of ``path`` as stored (``None`` when it is neither), without nibabel's
    load-time handling: nibabel refuses some bad scalings with a terse message and resets others."""
    import nibabel as nib

    with nib.openers.ImageOpener(str(path)) as stream:
        block = stream.read(nib.Nifti2Header.sizeof_hdr)
    for klass in (nib.Nifti2Header, nib.Nifti1Header):
        if klass.may_contain_header(block):
            return klass.from_fileobj(io.BytesIO(block), check=False)
    return None


def check_nifti_header(path: Path, header: Any, max_voxels: int | None = None) -> None:
    """Size and scaling of a NIfTI header (see :func:`nifti_header`), before its data is read."""
    check_voxels(f"NIfTI {path}", tuple(header.get_data_shape()), max_voxels)
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    if slope == 0 or math.isnan(slope):  # the NIfTI (0) and nibabel (NaN) ways to say "not scaled"
        return
    where = f"NIfTI {path}"
    if math.isinf(slope):
        raise ImageReadError(f"Cannot use {where}: scl_slope is {slope}; the header is damaged")
    if not math.isfinite(inter):
        raise ImageReadError(
            f"Cannot use {where}: scl_inter is {inter} (with scl_slope {slope:g}); the header is damaged"
        )
    dtype = header.get_data_dtype()
    if dtype.kind in "iu" and dtype.itemsize <= 4:
        stored = (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    else:  # float data, or 64-bit integers whose whole range would fail any bound: the factors alone
        stored = (0, 1)
    _check_rescale(where, slope, inter, stored, "scl_slope", "scl_inter")


class _Forward(logging.Handler):
    """pydicom's records, one line each (no traceback), to this module's logger at INFO."""

    def emit(self, record: logging.LogRecord) -> None:
        log.info("pydicom: %s", " ".join(record.getMessage().split()))


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_propagate = True
_quiet_handler = _Forward()


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Keep pydicom's log records and warnings off the terminal while reading or decoding a file.

    The ``pydicom`` logger stops propagating to the application's handlers for the duration; its
    records, and the warnings raised meanwhile, go to :data:`log` at INFO, one line each. Both are
    restored afterwards, also when the read raises. Nested and concurrent uses share one change of
    the logger (Python's warning filters are process-wide, as :class:`warnings.catch_warnings` says).
    """
    global _quiet_depth, _quiet_propagate
    logger = logging.getLogger("pydicom")
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_propagate = logger.propagate
            logger.addHandler(_quiet_handler)
            logger.propagate = False
        _quiet_depth += 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for warning in caught:
                    log.info("pydicom: %s", " ".join(str(warning.message).split()))
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                logger.removeHandler(_quiet_handler)
                logger.propagate = _quiet_propagate
