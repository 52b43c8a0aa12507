"""Medical volumes: DICOM and NIfTI read slice-wise into float arrays in physical units, results written
back in the same format with the same geometry, next to 8-bit PNG previews.

Reading gives a :class:`MedicalVolume`: ``values`` is a float32 ``(slices, rows, columns)`` array in the
modality's own unit, with what is needed to write a result back:

* **DICOM** (pydicom): a single file, a multi-frame file, or a folder holding a series (searched
  recursively; files are grouped by *SeriesInstanceUID* and sorted along the slice normal from
  *ImagePositionPatient*, else by *InstanceNumber*). Values are ``stored * RescaleSlope +
  RescaleIntercept`` per slice (Hounsfield units for CT). PET in Bq/ml (``Units = BQML``) is converted
  to body-weight SUV when the header has the patient weight, injected dose, half-life and injection
  time (dose decayed to the series time for ``DecayCorrection = START``); it is converted back on write.
  *WindowCenter*/*WindowWidth* are kept per slice.
* **NIfTI** (nibabel, ``.nii`` / ``.nii.gz``): 2-D or 3-D, ``scl_slope``/``scl_inter`` applied; slices
  run along the third voxel axis and each slice is ``data[:, :, k].T`` (rows along the second voxel
  axis), which is the array order SimpleITK gives and the official Restore-RWKV scripts train on.
  ``cal_min``/``cal_max`` are the display window.

Before any voxel is read, :mod:`restorer.medical_checks` refuses volumes above a voxel limit and
rescale values that cannot be right (NaN, infinite, zero or absurd DICOM slopes and intercepts; the
like for NIfTI ``scl_slope``/``scl_inter``), and keeps pydicom's logged tracebacks off the terminal.

Writing (:func:`write_volume`) keeps the original header: NIfTI keeps its affine, sform/qform codes,
on-disk data type and ``scl_slope``/``scl_inter`` (re-fitted only when the result does not fit the
data type), with ``descrip`` marking the result as derived; DICOM keeps every attribute, stored
representation and rescale (re-fitted per slice only when needed), and gets a new *SeriesInstanceUID*,
new *SOPInstanceUID*\\ s, ``ImageType`` DERIVED\\SECONDARY, a *DerivationDescription* and a
*SourceImageSequence* pointing at the input image. A result on a finer in-plane grid (MRI
super-resolution) gets its pixel spacing divided and its first-pixel position moved as the
up-sampling's grid alignment says (``alignment``). Files are written atomically; an input is never
overwritten.

The task table (:data:`MEDICAL_TASKS`) says, for each medical task, which modality it expects, how its
values are normalised to the network's [0, 1] input (clip to the modality range, then linear, as the
official Restore-RWKV data code does) and how much larger its output is than its input.
"""

from __future__ import annotations

import copy
import datetime
import gzip
import io
import logging
import math
import os
import secrets
import shutil
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from restorer import io as rio
from restorer.errors import ImageReadError, ImageWriteError, UsageError
from restorer.medical_checks import (
    check_nifti_header,
    check_voxels,
    dicom_rescale,
    nifti_header,
    quiet_pydicom,
)
from restorer.medical_tasks import MEDICAL_TASKS, MODALITY_RANGES, MedicalTask

__all__ = [
    "DICOM_SUFFIXES",
    "DICOM_TOO_LONG",
    "EVALUATION_WINDOWS",
    "MEDICAL_TASKS",
    "MODALITY_RANGES",
    "MedicalTask",
    "MedicalVolume",
    "Window",
    "WrittenVolume",
    "damaged_dicom_header",
    "denormalize",
    "is_medical_path",
    "map_slices",
    "medical_metrics",
    "normalize",
    "output_target",
    "preview_window",
    "read_dicom_series",
    "read_volume",
    "read_volumes",
    "resolve_modality",
    "series_label",
    "volume_stem",
    "write_volume",
]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# Tasks, modalities and normalisation (facts: Restore-RWKV data/common.py)
# ----------------------------------------------------------------------------------------------------

MODALITY_UNITS: dict[str, str] = {"CT": "HU", "PET": "SUVbw", "MRI": "a.u."}

EVALUATION_WINDOWS: dict[str, tuple[float, float]] = {
    "CT": (-160.0, 240.0),  # abdomen window the official test truncates to before PSNR/SSIM
    "PET": (0.0, 20.0),
    "MRI": (0.0, 4095.0),
}
"""Range the official evaluation truncates output and label to before computing metrics."""

# DICOM (0008,0060) Modality -> our modality names.
DICOM_MODALITIES: dict[str, str] = {"CT": "CT", "MR": "MRI", "PT": "PET"}

DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom", ".ima"})
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


def _check_modality(modality: str) -> tuple[float, float]:
    try:
        return MODALITY_RANGES[modality]
    except KeyError:
        raise UsageError(f"Unknown modality '{modality}'; use one of {', '.join(MODALITY_RANGES)}") from None


def normalize(values: np.ndarray, modality: str) -> np.ndarray:
    """Physical values -> network input: clip to the modality range, map linearly to [0, 1] (float32)."""
    low, high = _check_modality(modality)
    values = np.clip(np.asarray(values, dtype=np.float32), low, high)
    return (values - np.float32(low)) / np.float32(high - low)


def denormalize(normalized: np.ndarray, modality: str) -> np.ndarray:
    """Network output in [0, 1] -> physical values, clipped to the modality range (float32)."""
    low, high = _check_modality(modality)
    values = np.asarray(normalized, dtype=np.float32) * np.float32(high - low) + np.float32(low)
    return np.clip(values, low, high)


def resolve_modality(task: str, volume: MedicalVolume | None = None, override: str | None = None) -> str:
    """The modality a task runs ``volume`` as: the task's own, else ``override``, else the file's.

    A file whose DICOM modality contradicts the task (an MR series given to ``ct_denoise``) is a
    :class:`UsageError`; so is ``all_in_one`` on a file that does not say its modality (NIfTI) without
    ``override``.
    """
    try:
        spec = MEDICAL_TASKS[task]
    except KeyError:
        raise UsageError(f"Unknown medical task '{task}'; use one of {', '.join(MEDICAL_TASKS)}") from None
    if override is not None:
        override = override.upper()
        override = DICOM_MODALITIES.get(override, override)
        _check_modality(override)
    file_modality = volume.modality if volume is not None else None
    modality = spec.modality or override or file_modality
    if modality is None:
        raise UsageError(
            f"Task '{task}' needs the modality of {volume.source if volume else 'the input'} "
            f"(the file does not say it): give one of {', '.join(MODALITY_RANGES)}"
        )
    for stated in (override, file_modality):
        if stated is not None and stated != modality:
            raise UsageError(
                f"{volume.source if volume else 'The input'} is {stated}, but task '{task}' expects "
                f"{modality}; choose the task for {stated} images"
            )
    return modality


# ----------------------------------------------------------------------------------------------------
# The volume
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A display window in physical units (DICOM VOI window, NIfTI cal_min/cal_max)."""

    center: float
    width: float

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        return self.center + self.width / 2


@dataclass
class _DicomItem:
    """One DICOM file of a volume: its header (pixel data removed), frames and rescale per frame."""

    path: Path
    dataset: Dataset
    frames: int
    slopes: np.ndarray
    intercepts: np.ndarray
    rescale_at: str  # where the rescale was found: top | shared | frame | none


@dataclass
class _DicomNative:
    items: list[_DicomItem]
    unit_factor: float  # physical file values * unit_factor = values (SUV conversion; else 1)
    from_folder: bool


@dataclass
class _NiftiNative:
    image_class: type
    header: Any
    affine: np.ndarray
    disk_shape: tuple[int, ...]
    dtype: np.dtype
    slope: float
    inter: float
    gz: bool


@dataclass
class MedicalVolume:
    """A DICOM series / file or a NIfTI image, slice-wise, in physical units.

    Attributes:
        values: float32 ``(slices, rows, columns)``: HU for CT, SUV (body weight) for PET when the
            header allows the conversion, the stored units otherwise.
        kind: ``'dicom'`` or ``'nifti'``.
        source: the file or folder read.
        modality: ``'CT'``, ``'MRI'``, ``'PET'`` (from DICOM *Modality*), or ``None`` (NIfTI, others).
        units: unit of ``values`` (``'HU'``, ``'SUVbw'``, ``'BQML'``, ... or ``''`` when unknown).
        windows: per slice, the display window the file stores, or ``None``.
        pixel_spacing: ``(between rows, between columns)`` in mm.
        photometric: ``'MONOCHROME1'`` (bright is low) or ``'MONOCHROME2'``.
        notes: things the user should know (an unconverted PET unit, clipped values on write).
        label: output name stem when the source name alone is ambiguous (several series in a folder).
    """

    values: np.ndarray
    kind: Literal["dicom", "nifti"]
    source: Path
    modality: str | None
    units: str
    windows: list[Window | None]
    pixel_spacing: tuple[float, float]
    photometric: str = "MONOCHROME2"
    description: str = ""
    notes: list[str] = field(default_factory=list)
    label: str = ""
    native: _DicomNative | _NiftiNative | None = field(default=None, repr=False)

    @property
    def num_slices(self) -> int:
        return int(self.values.shape[0])

    @property
    def name(self) -> str:
        """A file-name stem for outputs: the file name without its medical suffix, or the folder name."""
        return self.label or volume_stem(self.source)

    def iter_slices(self) -> Iterator[np.ndarray]:
        """Each slice, ``rows x columns`` float32, in slice order."""
        yield from self.values


def is_medical_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like NIfTI (by suffix) or DICOM (suffix, or the 'DICM' marker)."""
    path = Path(path)
    lower = path.name.lower()
    if lower.endswith(NIFTI_SUFFIXES) or path.suffix.lower() in DICOM_SUFFIXES:
        return True
    return path.is_file() and _has_dicom_marker(path)


def _has_dicom_marker(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            head = stream.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


# ----------------------------------------------------------------------------------------------------
# NIfTI
# ----------------------------------------------------------------------------------------------------

_NIFTI_READ_ERRORS = (
    nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, OSError, EOFError, ValueError,
    zlib.error, gzip.BadGzipFile,
)  # fmt: skip


def _check_gzip_stream(path: Path) -> None:
    """Read a ``.gz`` file to its end so its CRC and length are checked (nibabel may stop short)."""
    with gzip.open(path, "rb") as stream:
        while stream.read(1 << 22):
            pass


def _read_nifti(path: Path, max_voxels: int | None = None) -> MedicalVolume:
    try:
        header = nifti_header(path)
        if header is not None:  # size and scaling from the header, before any voxel is read
            check_nifti_header(path, header, max_voxels)
        if path.name.lower().endswith(".gz"):
            _check_gzip_stream(path)
        image = nib.load(str(path))
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
            raise ValueError(f"it is {type(image).__name__}, not NIfTI-1/2")
        dtype = image.get_data_dtype()
        if dtype.kind == "c" or dtype.names is not None:
            raise ValueError(f"data type {dtype} (complex or RGB) is not a scalar image")
        disk_shape = tuple(int(n) for n in image.shape)
        if len(disk_shape) > 3 and any(n != 1 for n in disk_shape[3:]):
            raise ImageReadError(
                f"Cannot read NIfTI {path}: shape {disk_shape} is 4-D (a time series or several "
                "volumes); split it into 3-D volumes first"
            )
        data = np.asarray(image.dataobj, dtype=np.float32)  # applies scl_slope / scl_inter
    except _NIFTI_READ_ERRORS as exc:
        detail = " ".join(str(exc).split())  # nibabel's messages may span lines
        raise ImageReadError(
            f"Cannot read NIfTI {path}: {detail}. The file is damaged or not a NIfTI image."
        ) from exc
    if data.ndim > 3:
        data = data.reshape(data.shape[:3])
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or min(data.shape) == 0:
        raise ImageReadError(f"Cannot read NIfTI {path}: unsupported shape {disk_shape}")
    bad = ~np.isfinite(data)
    if bad.any():  # one NaN would spread through a whole slice in the network
        slices = int(bad.any(axis=(0, 1)).sum())
        raise ImageReadError(
            f"Cannot use NIfTI {path}: {int(bad.sum())} NaN or infinite voxel(s) in {slices} of "
            f"{data.shape[2]} slice(s); replace them (e.g. with the background value) first"
        )
    slope = image.dataobj.slope if hasattr(image.dataobj, "slope") else 1.0
    inter = image.dataobj.inter if hasattr(image.dataobj, "inter") else 0.0
    header = image.header
    windows: list[Window | None] = [None] * data.shape[2]
    cal_min, cal_max = float(header["cal_min"]), float(header["cal_max"])
    if math.isfinite(cal_min) and math.isfinite(cal_max) and cal_max > cal_min:
        windows = [Window((cal_min + cal_max) / 2, cal_max - cal_min)] * data.shape[2]
    zooms = header.get_zooms()
    spacing = (float(zooms[1]) if len(zooms) > 1 else 1.0, float(zooms[0]))
    native = _NiftiNative(
        image_class=type(image),
        header=header.copy(),
        affine=np.array(image.affine, dtype=np.float64),
        disk_shape=disk_shape,
        dtype=np.dtype(dtype),
        slope=float(slope) if slope is not None and math.isfinite(slope) and slope != 0 else 1.0,
        inter=float(inter) if inter is not None and math.isfinite(inter) else 0.0,
        gz=path.name.lower().endswith(".gz"),
    )
    return MedicalVolume(
        values=np.ascontiguousarray(data.transpose(2, 1, 0)),
        kind="nifti",
        source=path,
        modality=None,
        units="",
        windows=windows,
        pixel_spacing=spacing,
        description=header["descrip"].item().decode("latin-1", "replace").strip("\x00 "),
        native=native,
    )


def _nifti_bytes(volume: MedicalVolume, values: np.ndarray, factor: int, shift: float, note: str) -> bytes:
    native: _NiftiNative = volume.native
    data = values.transpose(2, 1, 0)  # (i, j, k)
    if len(native.disk_shape) == 2:
        data = data[:, :, 0]
    elif len(native.disk_shape) > 3:
        data = data.reshape(data.shape + (1,) * (len(native.disk_shape) - 3))
    raw, slope, inter = _encode(data, native.slope, native.inter, native.dtype)
    affine = native.affine.copy()
    if factor != 1:
        old = native.affine[:3, :2].copy()
        affine[:3, :2] = old / factor
        affine[:3, 3] += shift * (old[:, 0] + old[:, 1])
    header = native.header.copy()
    image = native.image_class(raw, affine, header)
    # The constructor may recompute codes from the affine; keep the original file's ones.
    sform_code = int(native.header["sform_code"])
    qform_code = int(native.header["qform_code"])
    image.set_sform(affine, code=sform_code)
    image.set_qform(affine, code=qform_code)
    image.header.set_zooms(
        tuple(z / factor if axis < 2 else z for axis, z in enumerate(native.header.get_zooms()))
    )
    image.header.set_data_dtype(native.dtype)
    if native.dtype.kind in "iu" or slope != 1.0 or inter != 0.0:
        image.header.set_slope_inter(slope, inter)
    image.header["descrip"] = f"restorer {note} (derived)".encode("ascii", "replace")[:79]
    data_bytes = image.to_bytes()
    return gzip.compress(data_bytes, compresslevel=6, mtime=0) if native.gz else data_bytes


# ----------------------------------------------------------------------------------------------------
# DICOM
# ----------------------------------------------------------------------------------------------------


def _dcmread(path: Path, header_only: bool = False) -> Dataset:
    try:
        with quiet_pydicom():
            return pydicom.dcmread(str(path), stop_before_pixels=header_only)
    except InvalidDicomError as exc:
        raise ImageReadError(
            f"Cannot read DICOM {path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble)"
        ) from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ImageReadError(f"Cannot read DICOM {path}: the file is damaged ({exc})") from exc
    except MemoryError:
        raise ImageReadError(DICOM_TOO_LONG.format(path=path)) from None


DICOM_TOO_LONG = (
    "Cannot read DICOM {path}: the file is damaged (an element declares more data than can be held in memory)"
)
"""The error for a DICOM whose header holds an absurd element length (garbage after the 'DICM' marker):
pydicom allocates that length before reading, and under a memory limit that is a ``MemoryError``.
Caught around the read only, so that a genuine lack of memory elsewhere is not called a damaged file."""


def damaged_dicom_header(header: Dataset) -> str | None:
    """Why a DICOM header that has no image size (``Rows``) is a damaged file, or None when it is a
    complete object that simply holds no image (a DICOMDIR, a structured report, a presentation state),
    which a folder run skips.

    A file cut short after its 'DICM' marker or inside its header parses (pydicom reads what is there)
    to a dataset without a SOP class, the one element every DICOM object has; one cut inside the
    dataset may keep an image SOP class but lose ``Rows``."""
    if "Rows" in header or "DirectoryRecordSequence" in header:
        return None
    sop_class = header.get("SOPClassUID")
    if sop_class is None:
        return "the header is cut short or damaged (no SOP class and no image size)"
    name = UID(str(sop_class)).name
    if "Image Storage" in name:
        return f"the header is cut short or damaged (a {name} object without an image size)"
    return None


def _functional_item(ds: Dataset, frame: int, name: str) -> Dataset | None:
    """``name``'s first item for ``frame`` in a multi-frame functional group (per-frame, else shared)."""
    for group_name, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(group_name)
        items = groups[index].get(name) if groups and len(groups) > index else None
        if items:  # .get gives the sequence; indexing a Dataset by keyword gives its DataElement
            return items[0]
    return None


def _rescale(ds: Dataset, frames: int, path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-frame (slope, intercept) and where they are stored; damaged values are errors."""
    if "ModalityLUTSequence" in ds:
        raise ImageReadError(
            f"Cannot read DICOM {path}: a Modality LUT Sequence is not supported; only linear rescale is"
        )
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        slope, inter = dicom_rescale(ds, ds, f"DICOM {path}")
        return np.full(frames, slope), np.full(frames, inter), "top"
    slopes, intercepts, where = np.ones(frames), np.zeros(frames), "none"
    for frame in range(frames):
        item = _functional_item(ds, frame, "PixelValueTransformationSequence")
        if item is not None:
            per_frame = ds.get("PerFrameFunctionalGroupsSequence")
            in_frame = per_frame and "PixelValueTransformationSequence" in per_frame[frame]
            where = "frame" if in_frame else "shared"
            place = f"frame {frame + 1}'s" if in_frame else "the shared"
            slopes[frame], intercepts[frame] = dicom_rescale(
                item, ds, f"DICOM {path} ({place} Pixel Value Transformation)"
            )
    return slopes, intercepts, where


def _first_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _windows(ds: Dataset, frames: int, unit_factor: float) -> list[Window | None]:
    windows: list[Window | None] = []
    for frame in range(frames):
        source = ds if "WindowCenter" in ds else _functional_item(ds, frame, "FrameVOILUTSequence")
        center = _first_number(source.get("WindowCenter")) if source is not None else None
        width = _first_number(source.get("WindowWidth")) if source is not None else None
        ok = center is not None and width is not None and width > 0
        windows.append(Window(center * unit_factor, width * unit_factor) if ok else None)
    return windows


def _parse_dicom_time(date: str | None, time: str | None) -> datetime.datetime | None:
    """DA + TM (``YYYYMMDD``, ``HHMMSS.ffffff`` with optional parts) -> datetime, or None."""
    if not time:
        return None
    time = str(time).strip()
    digits, _, fraction = time.partition(".")
    digits = digits.ljust(6, "0")
    try:
        clock = datetime.time(int(digits[0:2]), int(digits[2:4]), int(digits[4:6]))
        day = (
            datetime.datetime.strptime(str(date).strip(), "%Y%m%d").date()
            if date
            else datetime.date(2000, 1, 1)
        )
    except ValueError:
        return None
    stamp = datetime.datetime.combine(day, clock)
    return stamp + datetime.timedelta(seconds=float(f"0.{fraction}") if fraction.isdigit() else 0.0)


def _suv_factor(ds: Dataset) -> float | None:
    """Bq/ml -> SUV (body weight) multiplier, or None when the header does not allow it.

    SUVbw = activity concentration * weight / injected dose, with the dose decayed from injection to the
    series start when ``DecayCorrection`` is START (the images are decay-corrected to that time), and
    not decayed for ADMIN. Tissue density is taken as 1 g/ml, as usual.
    """
    weight = _first_number(ds.get("PatientWeight"))
    info = ds.get("RadiopharmaceuticalInformationSequence")
    if not weight or not info:
        return None
    item = info[0]
    dose = _first_number(item.get("RadionuclideTotalDose"))
    half_life = _first_number(item.get("RadionuclideHalfLife"))
    if not dose or not half_life:
        return None
    correction = str(ds.get("DecayCorrection", "START")).upper()
    if correction == "START":
        start_dt = item.get("RadiopharmaceuticalStartDateTime")
        if start_dt:
            text = str(start_dt)
            injected = _parse_dicom_time(text[:8], text[8:])
        else:
            injected = _parse_dicom_time(ds.get("SeriesDate"), item.get("RadiopharmaceuticalStartTime"))
        scan = _parse_dicom_time(ds.get("SeriesDate"), ds.get("SeriesTime") or ds.get("AcquisitionTime"))
        if injected is None or scan is None:
            return None
        elapsed = (scan - injected).total_seconds()
        if elapsed < 0:  # injected before midnight, scanned after, without dates
            elapsed += 24 * 3600
        dose *= 2.0 ** (-elapsed / half_life)
    elif correction != "ADMIN":
        return None
    factor = weight * 1000.0 / dose
    return factor if math.isfinite(factor) and factor > 0 else None  # a damaged weight or dose: keep Bq/ml


def _sort_key(ds: Dataset) -> tuple[float, float]:
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    instance = float(_first_number(ds.get("InstanceNumber")) or 0)
    if position is not None and orientation is not None and len(orientation) == 6:
        row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
        return float(np.dot(np.cross(row, col), np.array(position, float))), instance
    return instance, 0.0


def _group_series(folder: Path) -> dict[str, list[tuple[Path, Dataset]]]:
    """DICOM image files under ``folder`` (recursive, hidden entries skipped), by SeriesInstanceUID."""
    series: dict[str, list[tuple[Path, Dataset]]] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith(".") or name.lower().endswith(NIFTI_SUFFIXES):
                continue
            if path.suffix.lower() not in DICOM_SUFFIXES and not _has_dicom_marker(path):
                continue  # README, images, anything else that is plainly not DICOM
            problem = rio.regular_file_problem(path)  # a .dcm FIFO would block dcmread
            if problem is not None:
                raise ImageReadError(f"Cannot read DICOM {path}: {problem}")
            header = _dcmread(path, header_only=True)
            if "Rows" not in header:
                problem = damaged_dicom_header(header)
                if problem is not None:
                    raise ImageReadError(f"Cannot read DICOM {path}: {problem}")
                continue  # DICOMDIR, structured reports, presentation states
            uid = str(header.get("SeriesInstanceUID", f"no-uid:{path.parent}"))
            series.setdefault(uid, []).append((path, header))
    return series


def read_dicom_series(
    paths: Sequence[Path], source: Path, from_folder: bool, *, max_voxels: int | None = None
) -> MedicalVolume:
    """One volume from the DICOM files of one series (any order: slices are sorted by position), read
    from ``source`` (the folder, or the single file when ``from_folder`` is false).

    The headers are read first: a volume above ``max_voxels`` (default
    :data:`restorer.medical_checks.MAX_VOLUME_VOXELS`; 0: no limit) or a damaged rescale is refused
    before any pixel data is read or decoded.
    """
    headers = [(path, _dcmread(path, header_only=True)) for path in paths]
    headers.sort(key=lambda item: _sort_key(item[1]))
    frame_counts = [int(_first_number(header.get("NumberOfFrames")) or 1) for _, header in headers]
    largest = [max(int(header.get(key) or 0) for _, header in headers) for key in ("Columns", "Rows")]
    what = f"DICOM {'series ' if from_folder else ''}{source}"
    check_voxels(what, (*largest, sum(frame_counts)), max_voxels)
    rescales = [_rescale(header, count, path) for (path, header), count in zip(headers, frame_counts)]
    items: list[_DicomItem] = []
    slices: list[np.ndarray] = []
    windows: list[Window | None] = []
    first = headers[0][1]
    modality_tag = str(first.get("Modality", "")).upper()
    modality = DICOM_MODALITIES.get(modality_tag)
    units, unit_factor, notes = MODALITY_UNITS.get(modality or "", ""), 1.0, []
    if modality == "PET":
        pet_units = str(first.get("Units", "")).upper()
        if pet_units == "BQML":
            factor = _suv_factor(first)
            if factor is None:
                units = "BQML"
                notes.append(
                    f"{source}: PET in Bq/ml without the weight/dose/time needed for SUV; values are "
                    "kept in Bq/ml, but the PET tasks expect SUV in [0, 20]"
                )
            else:
                unit_factor = factor
        elif pet_units not in ("GML", ""):
            units = pet_units
            notes.append(f"{source}: PET units {pet_units} are not SUV; the PET tasks expect SUV in [0, 20]")
    shape = None
    for (path, _), frames, (slopes, intercepts, where) in zip(headers, frame_counts, rescales):
        ds = _dcmread(path)
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise ImageReadError(
                f"Cannot read DICOM {path}: it has {ds.SamplesPerPixel} samples per pixel (colour); "
                "medical restoration needs grayscale images"
            )
        if "PixelData" not in ds:
            kind = (
                "float pixel data (not supported)"
                if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
                else "no pixel data"
            )
            raise ImageReadError(f"Cannot read DICOM {path}: it holds {kind}")
        try:
            with quiet_pydicom():  # pydicom logs a traceback per failing plugin; our message says it all
                pixels = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for missing decoders and damaged data
            raise ImageReadError(_decode_failure(ds, path, exc)) from exc
        pixels = pixels.reshape(frames, *pixels.shape[-2:])
        if shape is not None and pixels.shape[1:] != shape:
            raise ImageReadError(
                f"Cannot read DICOM series {source}: {path.name} is {pixels.shape[2]}x{pixels.shape[1]}, "
                f"other slices are {shape[1]}x{shape[0]}"
            )
        shape = pixels.shape[1:]
        physical = pixels.astype(np.float64) * slopes[:, None, None] + intercepts[:, None, None]
        slices.append((physical * unit_factor).astype(np.float32))
        windows.extend(_windows(ds, frames, unit_factor))
        del ds.PixelData  # keep the header only: the result replaces the pixels
        items.append(_DicomItem(path, ds, frames, slopes, intercepts, where))
    spacing = first.get("PixelSpacing") or _pixel_measures(first)
    spacing = (float(spacing[0]), float(spacing[1])) if spacing is not None else (1.0, 1.0)
    return MedicalVolume(
        values=np.concatenate(slices, axis=0),
        kind="dicom",
        source=source,
        modality=modality,
        units=units,
        windows=windows,
        pixel_spacing=spacing,
        photometric=str(first.get("PhotometricInterpretation", "MONOCHROME2")),
        description=str(first.get("SeriesDescription", "")),
        notes=notes,
        native=_DicomNative(items=items, unit_factor=unit_factor, from_folder=from_folder),
    )


def _decode_failure(ds: Dataset, path: Path, exc: Exception) -> str:
    """One line on why pixel data did not decode: a missing decoder (with what to install) or damage."""
    detail = " ".join(str(exc).split())  # pydicom lists each plugin's failure on its own line
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    hint = ""
    if syntax is not None and syntax.is_compressed:
        missing = isinstance(exc, NotImplementedError) or "missing dependencies" in detail
        install = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or python-gdcm"
        hint = (
            f"; it is compressed ({syntax.name}): install a decoder, e.g. {install}"
            if missing
            else f"; its compressed ({syntax.name}) data is damaged, or needs another decoder ({install})"
        )
    return f"Cannot read DICOM {path}: the pixel data cannot be decoded ({detail}){hint}"


def _pixel_measures(ds: Dataset) -> Any:
    item = _functional_item(ds, 0, "PixelMeasuresSequence")
    return item.get("PixelSpacing") if item is not None else None


def _stored_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _encode(
    values: np.ndarray, slope: float, inter: float, dtype: np.dtype
) -> tuple[np.ndarray, float, float]:
    """Physical values -> stored samples ``round((v - inter) / slope)`` of ``dtype`` (NIfTI).

    Integer types keep ``slope``/``inter`` when the samples fit the type; otherwise a new
    slope/intercept maps the values' range onto the whole type. Returns ``(samples, slope, inter)``.
    """
    values = np.asarray(values, dtype=np.float64)
    if dtype.kind == "f":
        return ((values - inter) / slope).astype(dtype), slope, inter
    low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
    samples = np.round((values - inter) / slope)
    if samples.size and (samples.min() < low or samples.max() > high):
        samples, slope, inter = _fit_full_range(values, dtype)
    return np.clip(samples, low, high).astype(dtype), slope, inter


def _fit_full_range(values: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, float, float]:
    """Stored samples spanning ``dtype``'s whole range for ``values`` (the finest linear rescale)."""
    low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
    vmin, vmax = float(values.min()), float(values.max())
    slope = (vmax - vmin) / (high - low) if vmax > vmin else 1.0
    inter = vmin - low * slope
    return np.round((np.asarray(values, np.float64) - inter) / slope), slope, inter


def _set_rescale(ds: Dataset, where: str, frame: int | None, slope: float, inter: float) -> None:
    def put(target: Dataset) -> None:
        target.RescaleSlope = f"{slope:.10g}"
        target.RescaleIntercept = f"{inter:.10g}"

    if where in ("top", "none"):
        put(ds)
        return
    if where == "shared":
        put(ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0])
        return
    frames = range(len(ds.PerFrameFunctionalGroupsSequence)) if frame is None else [frame]
    for index in frames:
        put(ds.PerFrameFunctionalGroupsSequence[index].PixelValueTransformationSequence[0])


def _move_first_pixel(holder: Dataset | None, orientation: Any, spacing: Any, shift: float) -> None:
    """Move ``holder``'s ImagePositionPatient by ``shift`` pixels along its rows and columns."""
    if holder is None or orientation is None or spacing is None or "ImagePositionPatient" not in holder:
        return
    rows_mm, cols_mm = float(spacing[0]), float(spacing[1])
    row_dir, col_dir = np.array(orientation[:3], float), np.array(orientation[3:], float)
    moved = np.array(holder.ImagePositionPatient, float) + shift * (cols_mm * row_dir + rows_mm * col_dir)
    holder.ImagePositionPatient = [f"{v:.10g}" for v in moved]


def _zoom_geometry(ds: Dataset, factor: int, shift: float) -> None:
    """Pixel spacing / ``factor``, first-pixel positions moved by ``shift`` old pixels (in place).

    Classic images keep geometry at the top level; enhanced multi-frame images in functional groups
    (spacing usually shared, positions per frame).
    """
    if shift != 0.0:
        _move_first_pixel(ds, ds.get("ImageOrientationPatient"), ds.get("PixelSpacing"), shift)
        for index, group in enumerate(ds.get("PerFrameFunctionalGroupsSequence") or []):
            plane = group.get("PlanePositionSequence")
            orientation = _functional_item(ds, index, "PlaneOrientationSequence")
            measures = _functional_item(ds, index, "PixelMeasuresSequence")
            _move_first_pixel(
                plane[0] if plane else None,
                orientation.get("ImageOrientationPatient") if orientation is not None else None,
                measures.get("PixelSpacing") if measures is not None else None,
                shift,
            )
    holders = [ds]
    for name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        holders += [
            group.PixelMeasuresSequence[0]
            for group in ds.get(name) or []
            if group.get("PixelMeasuresSequence")
        ]
    for holder in holders:
        spacing = holder.get("PixelSpacing")
        if spacing is not None:
            holder.PixelSpacing = [f"{float(spacing[0]) / factor:.10g}", f"{float(spacing[1]) / factor:.10g}"]


def _dicom_files(
    volume: MedicalVolume, values: np.ndarray, factor: int, shift: float, note: str
) -> list[tuple[str, bytes]]:
    native: _DicomNative = volume.native
    series_uid = generate_uid()
    outputs: list[tuple[str, bytes]] = []
    start = 0
    for item in native.items:
        original = item.dataset
        ds = copy.deepcopy(original)
        frames = values[start : start + item.frames] / native.unit_factor
        start += item.frames
        bits_allocated = int(ds.get("BitsAllocated", 16))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        bits_stored = int(ds.get("BitsStored", bits_allocated))
        if bits_allocated not in (8, 16):  # 1-bit or 32-bit storage: write 16-bit with a fitted rescale
            bits_allocated = bits_stored = 16
        dtype = np.dtype(f"{'i' if signed else 'u'}{bits_allocated // 8}")
        can_rescale = item.rescale_at != "none" or volume.modality in ("CT", "PET")
        # Stored samples with the file's own rescale, then the cheapest change that makes them fit:
        # none, a wider Bits Stored, a new rescale for this file, or (no rescale allowed) clipping.
        samples = np.round((frames - item.intercepts[:, None, None]) / item.slopes[:, None, None])
        stored_low, stored_high = _stored_range(bits_stored, signed)
        if samples.min() < stored_low or samples.max() > stored_high:
            alloc_low, alloc_high = _stored_range(bits_allocated, signed)
            if samples.min() >= alloc_low and samples.max() <= alloc_high:
                bits_stored = bits_allocated
            elif can_rescale:
                bits_stored = bits_allocated
                samples, slope, inter = _fit_full_range(frames, dtype)
                _set_rescale(ds, item.rescale_at if item.rescale_at != "none" else "top", None, slope, inter)
            else:
                outside = int(np.count_nonzero((samples < stored_low) | (samples > stored_high)))
                volume.notes.append(
                    f"{item.path.name}: {outside} values outside the stored range were clipped"
                )
        low, high = _stored_range(bits_stored, signed)
        encoded = np.clip(samples, low, high).astype(dtype)
        pixels = encoded if item.frames > 1 else encoded[0]
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is None or syntax.is_compressed or not syntax.is_little_endian or syntax.is_deflated:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.set_pixel_data(pixels, volume.photometric, bits_stored, generate_instance_uid=False)
        for name in ("SmallestImagePixelValue", "LargestImagePixelValue"):  # stale after restoration
            if name in ds:
                del ds[name]
        if factor != 1:
            _zoom_geometry(ds, factor, shift)
        _mark_derived(ds, original, series_uid, note)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        outputs.append((item.path.name, buffer.getvalue()))
    return outputs


def _mark_derived(ds: Dataset, original: Dataset, series_uid: str, note: str) -> None:
    """New series and instance UIDs, DERIVED image type, and a reference to the source image."""
    instance_uid = generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = instance_uid
    ds.file_meta.MediaStorageSOPInstanceUID = instance_uid
    if "SOPClassUID" in ds:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    image_type = list(ds.get("ImageType") or ["ORIGINAL", "PRIMARY"])
    image_type[0] = "DERIVED"
    if len(image_type) > 1:
        image_type[1] = "SECONDARY"
    else:
        image_type.append("SECONDARY")
    ds.ImageType = image_type
    ds.DerivationDescription = f"restorer {note}"[:1024]
    description = f"{original.get('SeriesDescription', '')} restorer {note}".strip()
    ds.SeriesDescription = description[:64]
    if "SOPClassUID" in original and "SOPInstanceUID" in original:
        source = Dataset()
        source.ReferencedSOPClassUID = original.SOPClassUID
        source.ReferencedSOPInstanceUID = original.SOPInstanceUID
        ds.SourceImageSequence = DicomSequence([source])


# ----------------------------------------------------------------------------------------------------
# Public reading
# ----------------------------------------------------------------------------------------------------


def read_volume(
    path: str | os.PathLike[str], series_uid: str | None = None, *, max_voxels: int | None = None
) -> MedicalVolume:
    """Read one NIfTI file, one DICOM file, or the DICOM series in a folder.

    A folder holding several series needs ``series_uid`` (the error lists them), or use
    :func:`read_volumes`. Damaged or unsupported files, damaged rescale values and volumes above
    ``max_voxels`` (default :data:`restorer.medical_checks.MAX_VOLUME_VOXELS`; 0: no limit) raise
    :class:`ImageReadError` saying why.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"No such file or folder: {path}")
    if not path.is_dir():
        problem = rio.regular_file_problem(path)  # a FIFO blocks the readers, a device never ends
        if problem is not None:
            raise ImageReadError(f"Cannot read {path}: {problem}")
    if path.is_dir():
        series = _group_series(path)
        if not series:
            raise ImageReadError(f"No DICOM images in folder {path}")
        if series_uid is None and len(series) > 1:
            listing = "; ".join(
                f"{uid} ({len(files)} files, {files[0][1].get('SeriesDescription', '') or 'no description'})"
                for uid, files in series.items()
            )
            raise UsageError(f"Folder {path} holds {len(series)} DICOM series; choose one: {listing}")
        uid = series_uid or next(iter(series))
        if uid not in series:
            raise UsageError(f"Series {uid} is not in folder {path}")
        return read_dicom_series([p for p, _ in series[uid]], path, from_folder=True, max_voxels=max_voxels)
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return _read_nifti(path, max_voxels)
    return read_dicom_series([path], path, from_folder=False, max_voxels=max_voxels)


def read_volumes(path: str | os.PathLike[str], *, max_voxels: int | None = None) -> list[MedicalVolume]:
    """Every volume at ``path``: a file gives one; a folder gives each NIfTI file and each DICOM series."""
    path = Path(path)
    if not path.is_dir():
        return [read_volume(path, max_voxels=max_voxels)]
    volumes = [
        _read_nifti(p, max_voxels)
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")
    ]
    by_folder: dict[Path, int] = {}
    found = list(_group_series(path).values())
    for files in found:
        folder = files[0][0].parent
        by_folder[folder] = by_folder.get(folder, 0) + 1
    for files in found:
        paths = [p for p, _ in files]
        volume = read_dicom_series(paths, paths[0].parent, from_folder=True, max_voxels=max_voxels)
        if by_folder[paths[0].parent] > 1:  # several series side by side: name each by its number
            volume.label = series_label(volume.source, files[0][1])
        volumes.append(volume)
    if not volumes:
        raise ImageReadError(f"No NIfTI files or DICOM images in folder {path}")
    return volumes


# ----------------------------------------------------------------------------------------------------
# Processing and writing
# ----------------------------------------------------------------------------------------------------


def map_slices(
    volume: MedicalVolume,
    restore: Callable[[np.ndarray], np.ndarray],
    modality: str,
    upscale: int = 1,
) -> np.ndarray:
    """Run ``restore`` on every slice in the network's value range and return physical values.

    ``upscale`` > 1 (the ``mri_sr_x*`` tasks) first brings each slice to the finer grid by k-space
    zero-filling, in physical units as the training pairs are made (write the result with
    ``alignment='origin'``). ``restore`` takes a normalised ``H x W x 1`` float32 slice in [0, 1] and
    returns ``H x W x 1`` (or ``H x W``); the result is ``(slices, H, W)`` float32 in the modality's units.
    """
    from restorer.training.degradations import kspace_zero_fill_upsample

    results = []
    for values in volume.iter_slices():
        if upscale > 1:
            values = kspace_zero_fill_upsample(values, upscale)
        output = np.asarray(restore(normalize(values, modality)[:, :, None]))
        results.append(denormalize(output.reshape(output.shape[:2]), modality))
    return np.stack(results)


def preview_window(
    volume: MedicalVolume, index: int, values: np.ndarray | None = None
) -> tuple[float, float]:
    """Display range of slice ``index``: the file's window, else the CT evaluation window for CT, else the
    0.5 / 99.5 percentiles of the volume (``values`` or the volume's own)."""
    window = volume.windows[index] if index < len(volume.windows) else None
    if window is not None:
        return window.low, window.high
    if volume.modality == "CT":
        return EVALUATION_WINDOWS["CT"]
    data = volume.values if values is None else values
    low, high = np.percentile(data, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def _preview_pixels(values: np.ndarray, window: tuple[float, float], inverted: bool) -> np.ndarray:
    low, high = window
    pixels = np.clip((values.astype(np.float32) - low) / max(high - low, 1e-6), 0.0, 1.0)
    return 1.0 - pixels if inverted else pixels


def output_target(volume: MedicalVolume, out_dir: str | os.PathLike[str], suffix: str = "restored") -> Path:
    """Where :func:`write_volume` puts ``volume``'s result in ``out_dir``: a file for NIfTI and single
    DICOM files (same suffix), a folder for a DICOM series."""
    out_dir = Path(out_dir)
    stem = f"{volume.name}_{suffix}" if suffix else volume.name
    if volume.kind == "nifti":
        return out_dir / f"{stem}{'.nii.gz' if volume.native.gz else '.nii'}"
    if volume.native.from_folder:
        return out_dir / stem
    return out_dir / f"{stem}{volume.source.suffix}"


@dataclass
class WrittenVolume:
    """What :func:`write_volume` wrote: the result (a file or a series folder) and the PNG previews."""

    target: Path
    files: list[Path]
    previews: list[Path]


def write_volume(
    volume: MedicalVolume,
    values: np.ndarray,
    target: str | os.PathLike[str],
    *,
    note: str,
    alignment: Literal["origin", "center"] = "origin",
    previews: Literal["all", "middle", "none"] = "all",
    protect: Collection[str | os.PathLike[str]] = (),
) -> WrittenVolume:
    """Write ``values`` (``(slices, H', W')`` in ``volume``'s units) like ``volume`` was stored.

    Args:
        target: a ``.nii``/``.nii.gz`` file for NIfTI, a file for a single DICOM file, a folder for a
            DICOM series (files keep the input file names). See :func:`output_target`.
        note: what was done, e.g. ``"ct_denoise restore-rwkv"``; it goes into the DICOM
            *DerivationDescription* / *SeriesDescription* and the NIfTI ``descrip``.
        alignment: for a result on a finer grid (``H' = f * H``): ``'origin'`` when the first pixel
            centre stays where it was (k-space zero-filling), ``'center'`` when the pixel grids share
            their outer edges (bicubic / OpenCV resizing: the first centre moves by ``(1/f - 1) / 2``
            old pixels along rows and columns).
        previews: ``'all'`` writes ``<target stem>_preview/<slice>.png`` for each slice, ``'middle'``
            one ``<target stem>_preview.png``, ``'none'`` nothing. 8-bit, windowed by
            :func:`preview_window`.
        protect: paths never to overwrite (the inputs are always protected).
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 3 or values.shape[0] != volume.num_slices:
        raise ImageWriteError(
            f"Cannot write {target}: expected {volume.num_slices} slices, got shape {values.shape}"
        )
    rows, cols = volume.values.shape[1:]
    factor = values.shape[1] // rows
    if values.shape[1] != factor * rows or values.shape[2] != factor * cols or factor < 1:
        raise ImageWriteError(
            f"Cannot write {target}: a {values.shape[2]}x{values.shape[1]} result does not fit the "
            f"{cols}x{rows} input at one integer scale"
        )
    if alignment not in ("origin", "center"):
        raise UsageError(f"alignment must be 'origin' or 'center', not {alignment!r}")
    shift = 0.0 if factor == 1 or alignment == "origin" else (1.0 / factor - 1.0) / 2.0
    target = Path(target)
    protected = [volume.source, *protect]
    if volume.kind == "dicom":
        protected.extend(item.path for item in volume.native.items)
    clash = rio._same_file(target, protected)
    if clash is not None:
        raise ImageWriteError(f"Refusing to write {target}: it would overwrite the input {clash}")

    if volume.kind == "nifti":
        try:
            data = _nifti_bytes(volume, values, factor, shift, note)
        except (ValueError, TypeError, nib.spatialimages.HeaderDataError) as exc:
            raise ImageWriteError(f"Cannot write NIfTI {target}: {exc}") from exc
        _write_file(target, data)
        files = [target]
    else:
        try:
            outputs = _dicom_files(volume, values, factor, shift, note)
        except (ValueError, TypeError, AttributeError, NotImplementedError) as exc:
            raise ImageWriteError(f"Cannot write DICOM {target}: {exc}") from exc
        if volume.native.from_folder:
            files = _write_folder(target, outputs)
        else:
            _write_file(target, outputs[0][1])
            files = [target]
    return WrittenVolume(target, files, _write_previews(volume, values, target, previews))


def _write_file(target: Path, data: bytes) -> None:
    try:
        rio.write_atomically(target, data)
    except OSError as exc:
        raise ImageWriteError(f"Cannot write {target}: {exc.strerror or exc}") from exc


def _write_folder(target: Path, outputs: list[tuple[str, bytes]]) -> list[Path]:
    """Write a series into a hidden temporary folder, then rename it to ``target`` (replacing an old
    result), so an interrupted run never leaves half a series under the final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name[:48]}.{secrets.token_hex(6)}.tmp"
    old = target.parent / f".{target.name[:48]}.{secrets.token_hex(6)}.old"
    try:
        temp.mkdir()
        for name, data in outputs:
            (temp / name).write_bytes(data)
        if target.exists():
            if not target.is_dir():
                raise ImageWriteError(f"Cannot write DICOM series {target}: a file of that name exists")
            target.rename(old)
        temp.rename(target)
    except OSError as exc:
        raise ImageWriteError(f"Cannot write DICOM series {target}: {exc.strerror or exc}") from exc
    finally:
        for leftover in (temp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return [target / name for name, _ in outputs]


def _write_previews(volume: MedicalVolume, values: np.ndarray, target: Path, mode: str) -> list[Path]:
    if mode == "none":
        return []
    if mode not in ("all", "middle"):
        raise UsageError(f"previews must be 'all', 'middle' or 'none', not {mode!r}")
    stem = volume.name if target == volume.source else volume_stem(target)
    inverted = volume.photometric == "MONOCHROME1"
    if mode == "middle":
        index = volume.num_slices // 2
        path = target.parent / f"{stem}_preview.png"
        pixels = _preview_pixels(values[index], preview_window(volume, index, values), inverted)
        return [rio.write_image(path, pixels)]
    folder = target.parent / f"{stem}_preview"
    digits = max(4, len(str(volume.num_slices - 1)))
    written = []
    for index, slice_values in enumerate(values):
        pixels = _preview_pixels(slice_values, preview_window(volume, index, values), inverted)
        written.append(rio.write_image(folder / f"{index:0{digits}d}.png", pixels))
    return written


def series_label(folder: Path, dataset: Dataset) -> str:
    """The name of one of several series side by side in ``folder``: ``<folder>_series<SeriesNumber>``,
    or the series UID's last 8 characters where the number is missing."""
    number = dataset.get("SeriesNumber")
    tail = str(number) if number not in (None, "") else str(dataset.SeriesInstanceUID)[-8:]
    return f"{volume_stem(folder)}_series{tail}"


def volume_stem(path: Path) -> str:
    """A medical file's name without its suffix (``scan.nii.gz`` -> ``scan``, ``s1.dcm`` -> ``s1``)."""
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, *DICOM_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# ----------------------------------------------------------------------------------------------------
# Evaluation (the official Restore-RWKV protocol)
# ----------------------------------------------------------------------------------------------------


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return (kernel[:, None] @ kernel[None, :])[None, None]


def medical_metrics(output: np.ndarray, label: np.ndarray, modality: str) -> dict[str, float]:
    """PSNR, SSIM and RMSE of one slice as the official Restore-RWKV test computes them.

    Both images are in physical units; they are truncated to :data:`EVALUATION_WINDOWS` (CT:
    [-160, 240] HU), PSNR uses ``data_range = label.max() - label.min()`` of the truncated label, SSIM
    an 11x11 Gaussian window (sigma 1.5) with zero padding and C1 = (0.01 R)^2, C2 = (0.03 R)^2,
    averaged over the whole map.
    """
    low, high = EVALUATION_WINDOWS[modality]
    x = torch.from_numpy(np.clip(np.asarray(output, np.float64), low, high))[None, None]
    y = torch.from_numpy(np.clip(np.asarray(label, np.float64), low, high))[None, None]
    data_range = float(y.max() - y.min())
    mse = float(((x - y) ** 2).mean())
    psnr = 10 * math.log10(data_range**2 / mse) if mse > 0 else math.inf
    window = _gaussian_window()
    pad = window.shape[-1] // 2
    mu_x, mu_y = F.conv2d(x, window, padding=pad), F.conv2d(y, window, padding=pad)
    var_x = F.conv2d(x * x, window, padding=pad) - mu_x**2
    var_y = F.conv2d(y * y, window, padding=pad) - mu_y**2
    cov = F.conv2d(x * y, window, padding=pad) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return {"psnr": psnr, "ssim": float(ssim_map.mean()), "rmse": math.sqrt(mse)}
