"""Datasets for same-size restoration (denoising, medical restoration) in BasicSR's pipeline.

``SyntheticPairDataset`` trains from clean data alone: each item is a clean image or slice and a
degraded copy made on the fly by one :mod:`restorer.training.degradations` pipeline.
``PairedSliceDataset`` reads low-/high-quality pairs stored under the same names in two folders, as
the Restore-RWKV datasets are (``<root>/<MOD>/train/LQ`` and ``.../HQ``).

Both return BasicSR's ``{'lq', 'gt', 'lq_path', 'gt_path'}`` with float32 ``(C, H, W)`` tensors in
[0, 1] and accept:

* files: images (PNG, JPEG, TIFF, ... read by :func:`restorer.io.read_image`), ``.npy`` (``H x W`` one
  slice, or ``slices x H x W``), NIfTI (``.nii``, ``.nii.gz``; slices along the third voxel axis, as
  :mod:`restorer.medical` reads them) and DICOM (``.dcm`` or files with the DICM marker; a multi-frame
  file is several slices); a volume contributes one item per slice. ``lq_path``/``gt_path`` of a
  slice is the file's path with ``_<slice>`` appended to its stem (BasicSR names saved images by it);
* ``modality``: ``none`` for photos (values are the [0, 1] pixels), or ``CT``, ``MRI``, ``PET``:
  NIfTI, DICOM and ``.npy`` values are physical (HU, a.u., SUV), 8/16-bit images are taken as already
  normalised to the modality range; physical values are clipped to
  :data:`restorer.medical.MODALITY_RANGES` and mapped to [0, 1] like the official data code.
  ``PairedSliceDataset`` also takes ``auto``: the modality is the path component named CT, PET or MRI
  (the official layout), else the DICOM *Modality*;
* ``channels``: 1 (photos become BT.601 luma) or 3 (gray data is repeated); default 3 for photos, 1
  for medical data;
* ``phase`` (BasicSR sets it): ``train`` crops a random ``gt_size`` patch (``use_hflip``/``use_rot``
  augment it); anything else uses whole images, deterministically (``val_seed``), and ``max_items``
  keeps that many items evenly spread over the set (the official validation uses 32 images);
* ``cache_images``: keep decoded slices in memory (small sets); ``recursive``: search sub-folders.

The network works at scale 1, so the option files' ``scale`` must be 1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch.utils import data

from restorer import io as rio
from restorer import medical
from restorer._compat import ensure_basicsr_importable
from restorer.errors import UsageError
from restorer.training.degradations import bicubic_upsample, build_degradation, kspace_zero_fill_upsample

ensure_basicsr_importable()

from basicsr.data.transforms import augment  # noqa: E402
from basicsr.utils.registry import DATASET_REGISTRY  # noqa: E402

__all__ = ["PairedSliceDataset", "SyntheticPairDataset", "collect_slices", "load_slice"]

_VOLUME_SUFFIXES = (".npy", *medical.NIFTI_SUFFIXES, *medical.DICOM_SUFFIXES)


@dataclass(frozen=True)
class SliceRef:
    """One 2-D item: a file and, for volumes, the slice index in it."""

    path: Path
    index: int
    count: int  # slices in the file

    @property
    def name_path(self) -> str:
        """The path BasicSR sees: the file's, with ``_<slice>`` added to the stem for volumes."""
        if self.count == 1:
            return str(self.path)
        name = self.path.name
        stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else self.path.stem
        return str(self.path.with_name(f"{stem}_{self.index:04d}{name[len(stem) :]}"))


def _is_data_file(path: Path) -> bool:
    name = path.name.lower()
    if name.startswith("."):
        return False
    return rio.is_image_file(path) or name.endswith(_VOLUME_SUFFIXES) or medical._has_dicom_marker(path)


def _slice_count(path: Path) -> int:
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            shape = np.load(path, mmap_mode="r").shape
            if len(shape) not in (2, 3):
                raise ValueError(f"shape {shape}: expected H x W or slices x H x W")
            return 1 if len(shape) == 2 else shape[0]
        if name.endswith(medical.NIFTI_SUFFIXES):
            shape = nib.load(str(path)).shape
            return 1 if len(shape) == 2 else shape[2]
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise UsageError(f"Cannot read {path}: {exc}") from exc
    if rio.is_image_file(path):
        return 1
    header = medical._dcmread(path, header_only=True)
    return int(header.get("NumberOfFrames", 1) or 1)


def collect_slices(roots: str | Sequence[str], recursive: bool = False) -> list[SliceRef]:
    """Every slice of every data file under ``roots`` (files or folders), folders in natural order."""
    roots = [roots] if isinstance(roots, str | os.PathLike) else list(roots)
    files: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file():
            files.append(root)
            continue
        if not root.is_dir():
            raise UsageError(f"Data folder not found: {root}")
        found = sorted(
            (
                p
                for p in (root.rglob("*") if recursive else root.iterdir())
                if p.is_file() and _is_data_file(p)
            ),
            key=lambda p: rio._natural_key(str(p.relative_to(root))),
        )
        files.extend(found)
    slices = []
    for path in files:
        count = _slice_count(path)
        slices.extend(SliceRef(path, index, count) for index in range(count))
    return slices


def load_slice(ref: SliceRef, modality: str | None) -> np.ndarray:
    """The slice as float32 ``H x W x C``: [0, 1] pixels (``modality`` None) or physical values."""
    name = ref.path.name.lower()
    if rio.is_image_file(ref.path):
        pixels = rio.read_image(ref.path).pixels
        if modality is None:
            return pixels
        return medical.denormalize(rio.to_gray(pixels), modality)
    if name.endswith(".npy"):
        array = np.load(ref.path, mmap_mode="r")
        plane = array if array.ndim == 2 else array[ref.index]
    elif name.endswith(medical.NIFTI_SUFFIXES):
        proxy = nib.load(str(ref.path)).dataobj
        plane = (proxy[:, :] if len(proxy.shape) == 2 else proxy[:, :, ref.index]).T  # rows: 2nd voxel axis
        plane = plane.reshape(plane.shape[-2:]) if plane.ndim > 2 else plane
    else:
        plane = medical.read_volume(ref.path).values[ref.index]
    return np.asarray(plane, dtype=np.float32)[:, :, None]


def _set_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.shape[2] == channels:
        return image
    return rio.to_gray(image) if channels == 1 else np.repeat(image, channels, axis=2)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def _modality_option(value: Any, allow_auto: bool) -> str | None:
    if value is None or str(value).lower() == "none":
        return None
    text = str(value).upper()
    if allow_auto and text == "AUTO":
        return "AUTO"
    text = medical.DICOM_MODALITIES.get(text, text)
    if text not in medical.MODALITY_RANGES:
        choices = ["none", *medical.MODALITY_RANGES] + (["auto"] if allow_auto else [])
        raise UsageError(f"modality must be one of {', '.join(choices)}, not {value!r}")
    return text


class _SliceDataset(data.Dataset):
    """Shared option handling: phase, crop size, augmentation, item selection and caching."""

    def __init__(self, opt: dict, allow_auto: bool) -> None:
        super().__init__()
        self.opt = opt
        if int(opt.get("scale", 1)) != 1:
            raise UsageError(
                f"{type(self).__name__} makes same-size pairs; set scale: 1 (got {opt.get('scale')})"
            )
        self.train = opt.get("phase") == "train"
        self.modality = _modality_option(opt.get("modality"), allow_auto)
        self.channels = int(opt.get("channels") or (3 if self.modality is None else 1))
        if self.channels not in (1, 3):
            raise UsageError(f"channels must be 1 or 3, not {self.channels}")
        self.gt_size = int(opt["gt_size"]) if self.train else None
        self.val_seed = int(opt.get("val_seed", 0))
        self._cache: dict[tuple[Path, int], np.ndarray] | None = {} if opt.get("cache_images") else None

    def _select(self, count: int) -> list[int]:
        limit = self.opt.get("max_items")
        if self.train or not limit or int(limit) >= count:
            return list(range(count))
        return sorted(set(np.linspace(0, count - 1, int(limit)).round().astype(int).tolist()))

    def _load(self, ref: SliceRef, modality: str | None) -> np.ndarray:
        key = (ref.path, ref.index)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        image = load_slice(ref, modality)
        if self._cache is not None:
            self._cache[key] = image
        return image

    def _rng(self, index: int) -> np.random.Generator:
        if self.train:  # BasicSR seeds numpy in each worker; draw from it so runs repeat with manual_seed
            return np.random.default_rng(np.random.randint(0, 2**31 - 1))
        return np.random.default_rng([self.val_seed, index])

    def _crop_box(self, shape: tuple[int, ...], path: str) -> tuple[int, int, int]:
        size = self.gt_size
        h, w = shape[:2]
        if h < size or w < size:
            raise UsageError(f"{path} ({w}x{h}) is smaller than gt_size {size}")
        return np.random.randint(0, h - size + 1), np.random.randint(0, w - size + 1), size

    def _augment(self, *images: np.ndarray) -> list[np.ndarray]:
        hflip, rot = self.opt.get("use_hflip", False), self.opt.get("use_rot", False)
        result = augment(list(images), hflip, rot) if (hflip or rot) else list(images)
        return [np.ascontiguousarray(image) for image in result]

    def _normalized(self, image: np.ndarray, modality: str | None) -> np.ndarray:
        return image if modality is None else medical.normalize(image, modality)


@DATASET_REGISTRY.register()
class SyntheticPairDataset(_SliceDataset):
    """Clean data -> ``(degraded, clean)`` pairs made on the fly (see the module docstring).

    Options beyond the shared ones: ``dataroot_gt`` (folder(s) or files), ``degradation`` (a mapping
    for :func:`restorer.training.degradations.build_degradation`, e.g. ``{type: gaussian_noise,
    sigma: 25}``), ``gray_probability`` (3 channels only: this share of training items is made gray
    before degrading, so the noise is gray too; default 0), ``degrade_before_crop`` (default: true for
    degradations that look beyond a pixel, k-space, bicubic and CT projections; false for per-pixel
    noise, where cropping first is the same in distribution and much faster).
    """

    def __init__(self, opt: dict) -> None:
        super().__init__(opt, allow_auto=False)
        if "degradation" not in opt:
            raise UsageError(
                "SyntheticPairDataset needs a 'degradation' option, e.g. {type: gaussian_noise, sigma: 25}"
            )
        self.degradation = build_degradation(opt["degradation"])
        if self.degradation.domain == "physical" and self.modality is None:
            raise UsageError(f"Degradation '{self.degradation.name}' works in physical units: set modality")
        self.before_crop = bool(opt.get("degrade_before_crop", not self.degradation.pointwise))
        self.gray_probability = float(opt.get("gray_probability", 0.0)) if self.channels == 3 else 0.0
        self.factor = int(self.degradation.options.get("factor", 1))
        every = collect_slices(opt["dataroot_gt"], bool(opt.get("recursive", False)))
        if not every:
            raise UsageError(f"No images or volumes found in {opt['dataroot_gt']}")
        self.slices = [every[i] for i in self._select(len(every))]

    def __len__(self) -> int:
        return len(self.slices)

    def _degrade(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Degrade physical / [0, 1] values; returns the pair normalised to [0, 1]."""
        if self.degradation.domain == "unit":
            return self.degradation(self._normalized(clean, self.modality), rng)
        return self._normalized(self.degradation(clean, rng), self.modality)

    def __getitem__(self, index: int) -> dict:
        ref = self.slices[index]
        clean = self._load(ref, self.modality)
        h, w = clean.shape[:2]
        clean = clean[: h - h % self.factor, : w - w % self.factor]  # k-space / bicubic need multiples
        rng = self._rng(index)
        gray = self.gray_probability > 0 and rng.uniform() < self.gray_probability
        working_channels = 1 if gray else self.channels
        if self.train:
            top, left, size = self._crop_box(clean.shape, str(ref.path))
            if self.before_crop:
                clean = _set_channels(clean, working_channels)
                lq = self._degrade(clean, rng)[top : top + size, left : left + size]
                clean = clean[top : top + size, left : left + size]
            else:
                clean = _set_channels(clean[top : top + size, left : left + size], working_channels)
                lq = self._degrade(clean, rng)
            gt = self._normalized(clean, self.modality)
            lq, gt = self._augment(lq, gt)
        else:
            clean = _set_channels(clean, working_channels)
            lq, gt = self._degrade(clean, rng), self._normalized(clean, self.modality)
        lq, gt = _set_channels(lq, self.channels), _set_channels(gt, self.channels)
        return {
            "lq": _to_tensor(lq),
            "gt": _to_tensor(gt),
            "lq_path": ref.name_path,
            "gt_path": ref.name_path,
        }


@DATASET_REGISTRY.register()
class PairedSliceDataset(_SliceDataset):
    """Low-/high-quality pairs: the same relative file names under ``dataroot_lq`` and ``dataroot_gt``.

    ``dataroot_lq``/``dataroot_gt`` are folders (or, from Python, equally long lists of folders). The
    official layout of several modalities is ``dataroot`` with ``modalities`` (e.g. ``[PET, CT, MRI]``)
    and ``split`` (``train``, ``validation``, ``test``): pairs from ``<dataroot>/<MOD>/<split>/LQ`` and
    ``.../HQ`` (BasicSR's option parser accepts no list of folders in ``dataroot_*``).

    Pairs must have the same size, unless ``upsample_lq`` is ``kspace`` or ``bicubic``: then a
    low-quality slice ``factor`` times smaller is brought to the high-quality grid that way (as the
    ``mri_sr_x*`` tasks do at inference). Augmentation is off unless ``use_hflip``/``use_rot`` are set
    (the official recipe does not augment).
    """

    def __init__(self, opt: dict) -> None:
        super().__init__(opt, allow_auto=True)
        if "modalities" in opt:  # the official layout: <dataroot>/<MOD>/<split>/{LQ,HQ}
            root, split = Path(opt["dataroot"]), opt.get("split", "train")
            lq_roots = [str(root / modality / split / "LQ") for modality in opt["modalities"]]
            gt_roots = [str(root / modality / split / "HQ") for modality in opt["modalities"]]
        else:
            lq_roots, gt_roots = opt["dataroot_lq"], opt["dataroot_gt"]
            lq_roots = [lq_roots] if isinstance(lq_roots, str) else list(lq_roots)
            gt_roots = [gt_roots] if isinstance(gt_roots, str) else list(gt_roots)
        if len(lq_roots) != len(gt_roots):
            raise UsageError("dataroot_lq and dataroot_gt must list the same number of folders")
        self.upsample = opt.get("upsample_lq")
        if self.upsample not in (None, "kspace", "bicubic"):
            raise UsageError(f"upsample_lq must be kspace or bicubic, not {self.upsample!r}")
        pairs: list[tuple[SliceRef, SliceRef, str | None]] = []
        recursive = bool(opt.get("recursive", False))
        for lq_root, gt_root in zip(lq_roots, gt_roots):
            gt_slices = {
                (self._relative(s.path, gt_root), s.index): s for s in collect_slices(gt_root, recursive)
            }
            lq_slices = collect_slices(lq_root, recursive)
            missing = [s for s in lq_slices if (self._relative(s.path, lq_root), s.index) not in gt_slices]
            if missing:
                raise UsageError(
                    f"{missing[0].name_path} has no high-quality counterpart under {gt_root} "
                    f"({len(missing)} unpaired)"
                )
            for lq in lq_slices:
                gt = gt_slices[(self._relative(lq.path, lq_root), lq.index)]
                pairs.append((lq, gt, self._pair_modality(lq.path)))
        if not pairs:
            raise UsageError(f"No pairs found in {', '.join(lq_roots)} and {', '.join(gt_roots)}")
        self.pairs = [pairs[i] for i in self._select(len(pairs))]

    @staticmethod
    def _relative(path: Path, root: str | os.PathLike) -> Path:
        root = Path(root)
        return Path(path.name) if root.is_file() else path.relative_to(root)

    def _pair_modality(self, path: Path) -> str | None:
        if self.modality != "AUTO":
            return self.modality
        for part in reversed(path.parts[:-1]):
            named = medical.DICOM_MODALITIES.get(part.upper(), part.upper())
            if named in medical.MODALITY_RANGES:
                return named
        if path.name.lower().endswith(medical.DICOM_SUFFIXES) or medical._has_dicom_marker(path):
            tag = str(medical._dcmread(path, header_only=True).get("Modality", "")).upper()
            if tag in medical.DICOM_MODALITIES:
                return medical.DICOM_MODALITIES[tag]
        raise UsageError(
            f"modality auto: no CT, PET or MRI folder in {path} and no DICOM Modality; set modality"
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def _match_size(self, lq: np.ndarray, gt: np.ndarray, path: str) -> np.ndarray:
        if lq.shape[:2] == gt.shape[:2]:
            return lq
        factor = gt.shape[0] // lq.shape[0]
        fits = factor > 1 and gt.shape[0] == factor * lq.shape[0] and gt.shape[1] == factor * lq.shape[1]
        if not fits or self.upsample is None:
            raise UsageError(
                f"{path}: low-quality {lq.shape[1]}x{lq.shape[0]} does not match high-quality "
                f"{gt.shape[1]}x{gt.shape[0]}" + ("" if not fits else "; set upsample_lq: kspace or bicubic")
            )
        if self.upsample == "kspace":
            return kspace_zero_fill_upsample(lq, factor)
        return bicubic_upsample(lq, factor).reshape(gt.shape[:2] + lq.shape[2:])

    def __getitem__(self, index: int) -> dict:
        lq_ref, gt_ref, modality = self.pairs[index]
        gt = _set_channels(self._load(gt_ref, modality), self.channels)
        lq = _set_channels(self._load(lq_ref, modality), self.channels)
        lq = self._match_size(lq, gt, lq_ref.name_path)
        lq, gt = self._normalized(lq, modality), self._normalized(gt, modality)
        if self.train:
            top, left, size = self._crop_box(gt.shape, gt_ref.name_path)
            lq, gt = lq[top : top + size, left : left + size], gt[top : top + size, left : left + size]
            lq, gt = self._augment(lq, gt)
        return {
            "lq": _to_tensor(lq),
            "gt": _to_tensor(gt),
            "lq_path": lq_ref.name_path,
            "gt_path": gt_ref.name_path,
        }
