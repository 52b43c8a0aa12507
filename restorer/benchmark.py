"""Evaluation runs with the papers' protocol: ``restorer benchmark`` and ``restorer test -opt``.

Both commands feed the same loop, :func:`evaluate`: each test pair's LR input goes through a
loaded :class:`~restorer.engine.runner.Restorer` (so ``--tile`` works), the output is rounded to
uint8, GT is cropped to LR x scale (as BasicSR's ``PairedImageDataset`` does in validation), and
the metrics are BasicSR's own functions (:mod:`restorer.metrics`). Same data and weights give the
same numbers through either command.

- ``restorer benchmark`` finds a test set's layout itself (:func:`discover`): BasicSR's
  ``GTmod{s}/`` (or ``GTmod12/``) + ``LRbicx{s}/``, the common ``HR/`` + ``LR_bicubic/X{s}/``, or a
  flat folder of HR images. Where no LR folder exists, LR images are made the way the published
  LR sets were: mod-crop HR to the scale, MATLAB bicubic with antialiasing (BasicSR's
  ``imresize``), rounded to uint8. ``restorer datasets prepare`` writes them once (:func:`prepare`).
  Metrics: Y-channel (BT.601) PSNR and SSIM with ``crop_border = scale``; optionally RGB ones and
  LPIPS.
- ``restorer test -opt FILE`` runs a BasicSR test option file unchanged (:func:`run_option_file`):
  ``network_g`` builds the network, ``path.pretrain_network_g`` / ``param_key_g`` load the
  weights, and ``val.metrics`` say which metrics, crop and channel.

How a task's LR inputs are made is a per-task hook (:class:`Degradation`, :func:`degradation_for`):
bicubic downscaling for the super-resolution tasks; scale-1 restoration tasks and codecs register
their own, with their metric protocol. ``denoise`` (:data:`GAUSSIAN_NOISE_25`) adds Gaussian noise of
sigma 25 (0-255 scale) seeded per image and is scored on RGB with no crop, as denoising papers do.
``reflection_removal`` (:data:`SELF_REFLECTION`) reads real transmission / blended pairs where a set has
them and otherwise blends each photo with its own 180-degree rotation; RGB, no crop, as the UHDRR and
SIR2 papers score.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import re
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from restorer import io as rio
from restorer import metrics as rmetrics
from restorer import zoo
from restorer.errors import RestorerError, UsageError

if TYPE_CHECKING:
    from restorer.engine.distributed import Shard
    from restorer.engine.runner import Restorer
    from restorer.tasks import TaskSpec

# ---------------------------------------------------------------------------------------------
# Degradations: how a task's test inputs are made from ground truth, and where stored ones live
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """One way a test set is laid out on disk: an HR folder and, beside it, its LR folder.

    ``hr`` and ``lr`` are relative to the test set's root; ``hr == "."`` is a flat folder of HR
    images (the root itself).
    """

    name: str
    hr: str
    lr: str


@dataclass(frozen=True)
class Degradation:
    """A task's test degradation.

    ``layouts(scale)`` lists the folder layouts in the order they are tried; ``make_pair(gt, scale)``
    turns a uint8 HxWx3 RGB ground truth into ``(lq, gt)``, both uint8 (``gt`` possibly cropped);
    ``lr_stems(stem, scale)`` are the file stems a stored LR image of HR ``stem`` may carry.
    ``make_pair`` may also return ``lq`` as float32 in [0, 1] (not clipped), for degradations whose
    protocol does not round the input to 8 bits (Gaussian noise).

    The metric protocol: PSNR/SSIM on the Y channel (``y_channel``, keys ``psnr_y``/``ssim_y``) or on RGB
    (keys ``psnr_rgb``/``ssim_rgb``), with ``crop_border`` pixels cropped (``None`` = the scale);
    ``inputs`` says in words how missing inputs are made (for the notes and reports); ``baselines``
    names the classical methods (:data:`BASELINES`) scored as rows beside the models.
    """

    name: str
    layouts: Callable[[int], tuple[Layout, ...]]
    make_pair: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
    lr_stems: Callable[[str, int], tuple[str, ...]]
    y_channel: bool = True
    crop_border: int | None = None
    inputs: str = ""
    baselines: tuple[str, ...] = ()


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop bottom/right so both sides are multiples of ``scale`` (BasicSR's ``mod_crop``)."""
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def bicubic_lr(hr_u8: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')`` (antialiasing on) of a uint8 HxWxC image, as uint8.

    ``hr_u8`` should already be mod-cropped (see :func:`bicubic_pair`). BasicSR's ``imresize``
    works on [0, 1] floats; the result is clipped and rounded to the nearest 8-bit level, the way
    the published LR sets and our training LR (``restorer.training.data``) are made.
    """
    from restorer._compat import require_extra

    require_extra("basicsr", "bench", "BasicSR's MATLAB bicubic imresize")
    from basicsr.utils.matlab_functions import imresize

    lr = imresize(hr_u8.astype(np.float64) / 255.0, 1.0 / scale, antialiasing=True)
    return (np.clip(lr, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def bicubic_upscale(lr_u8: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(lr, scale, 'bicubic')`` of a uint8 image, as uint8: the bicubic baseline."""
    from restorer._compat import require_extra

    require_extra("basicsr", "bench", "BasicSR's MATLAB bicubic imresize")
    from basicsr.utils.matlab_functions import imresize

    up = imresize(lr_u8.astype(np.float64) / 255.0, float(scale))
    return (np.clip(up, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def bicubic_pair(gt_u8: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lq, gt)``: ``gt`` mod-cropped to ``scale`` and its MATLAB-bicubic LR, both uint8."""
    gt = np.ascontiguousarray(mod_crop(gt_u8, scale))
    return bicubic_lr(gt, scale), gt


def _bicubic_layouts(scale: int) -> tuple[Layout, ...]:
    layouts = [Layout("BasicSR", f"GTmod{scale}", f"LRbicx{scale}")]
    if 12 % scale == 0 and scale != 12:  # BasicSR's packed test sets: one GTmod12 for x2, x3, x4
        layouts.append(Layout("BasicSR", "GTmod12", f"LRbicx{scale}"))
    layouts.append(Layout("HR + LR_bicubic", "HR", f"LR_bicubic/X{scale}"))
    layouts.append(Layout("flat HR folder", ".", f"LR_bicubic/X{scale}"))
    return tuple(layouts)


def _bicubic_lr_stems(stem: str, scale: int) -> tuple[str, ...]:
    # BasicSR names LR like HR; EDSR's and SwinIR's packs add the scale ("babyx4.png").
    return (stem, f"{stem}x{scale}")


BICUBIC = Degradation("bicubic", _bicubic_layouts, bicubic_pair, _bicubic_lr_stems, baselines=("bicubic",))

# Task name -> its degradation. Image tasks with scale > 1 default to BICUBIC; scale-1 tasks
# (denoising, reflection removal) and codecs register theirs here.
DEGRADATIONS: dict[str, Degradation] = {}


def register_degradation(task: str, degradation: Degradation) -> None:
    """Make ``degradation`` the test degradation of ``task`` (replacing any earlier one)."""
    DEGRADATIONS[task] = degradation


DENOISE_SIGMA = 25.0
DENOISE_FOLDER = f"noisy_sigma{DENOISE_SIGMA:g}"


def gaussian_noise_pair(gt_u8: np.ndarray, scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, gt)``: ``gt`` plus Gaussian noise of sigma 25 on the 0-255 scale, float32, not clipped or
    rounded (:func:`restorer.training.degradations.gaussian_noise`, the DnCNN / SwinIR / Restormer
    protocol).

    The noise is seeded from the image's own pixels, so an image gets the same noise in every run,
    whatever the test set's order or file names. A gray image (three equal channels) gets gray noise,
    as the bundled model's gray training patches do, so it stays a grayscale denoising test.
    """
    from restorer.training.degradations import gaussian_noise

    if scale != 1:
        raise UsageError(f"Gaussian denoising is a scale-1 task, not x{scale}.")
    gt = np.ascontiguousarray(gt_u8)
    rng = np.random.default_rng([zlib.crc32(gt.tobytes()), *gt.shape])
    clean = gt.astype(np.float32) / 255.0
    if gt.ndim == 3 and gt.shape[2] == 3 and (gt == gt[..., :1]).all():
        noisy = np.repeat(gaussian_noise(clean[..., :1], DENOISE_SIGMA, rng), 3, axis=2)
    else:
        noisy = gaussian_noise(clean, DENOISE_SIGMA, rng)
    return noisy, gt


def _denoise_layouts(scale: int) -> tuple[Layout, ...]:
    return (
        Layout("HR + noisy", "HR", DENOISE_FOLDER),
        Layout("GT + noisy", "GT", DENOISE_FOLDER),
        Layout("flat HR folder", ".", DENOISE_FOLDER),
    )


GAUSSIAN_NOISE_25 = Degradation(
    "gaussian_noise_sigma25",
    _denoise_layouts,
    gaussian_noise_pair,
    lambda stem, scale: (stem,),
    y_channel=False,
    crop_border=0,
    inputs="Gaussian noise sigma 25 (0-255 scale), seeded per image, not clipped",
    baselines=("bm3d",),
)


def reflection_pair(gt_u8: np.ndarray, scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(blended, gt)`` for a clean photo: the photo itself rotated by 180 degrees as the reflection, put
    through the blur synthesis model (:func:`restorer.training.reflection.self_reflection_pair`), seeded
    from the image's own pixels so every run tests the same blend. Both uint8 RGB."""
    from restorer.training.reflection import self_reflection_pair

    if scale != 1:
        raise UsageError(f"Reflection removal is a scale-1 task, not x{scale}.")
    gt = np.ascontiguousarray(gt_u8)
    return self_reflection_pair(gt, seed=zlib.crc32(gt.tobytes()) ^ zlib.crc32(repr(gt.shape).encode()))


def _reflection_layouts(scale: int) -> tuple[Layout, ...]:
    # Real pairs first: UHDRR4K/8K's and SIR2's folder names, then the short T / M naming; clean photos
    # (HR/ or a flat folder) get synthetic blends (stored in blended/ by `restorer datasets prepare`).
    return (
        Layout("transmission_layer + blended (UHDRR, SIR2)", "transmission_layer", "blended"),
        Layout("T + M", "T", "M"),
        Layout("HR + blended", "HR", "blended"),
        Layout("flat folder of clean photos", ".", "blended"),
    )


SELF_REFLECTION = Degradation(
    "self_reflection",
    _reflection_layouts,
    reflection_pair,
    lambda stem, scale: (stem,),
    y_channel=False,
    crop_border=0,
    inputs="blended with its own 180-degree rotation as the reflection (blur model), seeded per image",
)


def degradation_for(spec: TaskSpec) -> Degradation:
    """The test degradation of a task: registered, else bicubic for image tasks with scale > 1."""
    if spec.name in DEGRADATIONS:
        return DEGRADATIONS[spec.name]
    if spec.kind == "image" and spec.scale > 1:
        return BICUBIC
    raise UsageError(
        f"Task '{spec.name}' ({spec.kind}, x{spec.scale}) has no benchmark degradation yet; "
        f"tasks with one: {', '.join(_benchmark_tasks())}."
    )


register_degradation("denoise", GAUSSIAN_NOISE_25)
register_degradation("reflection_removal", SELF_REFLECTION)


def _benchmark_tasks() -> list[str]:
    from restorer.tasks import TASKS

    return [
        name
        for name, spec in TASKS.items()
        if name in DEGRADATIONS or (spec.kind == "image" and spec.scale > 1)
    ]


# ---------------------------------------------------------------------------------------------
# Test-set discovery
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePair:
    """One test image: its key (the GT stem, else the LR stem), GT file and LR file (None = make it)."""

    stem: str
    hr: Path | None
    lr: Path | None


@dataclass(frozen=True)
class TestSet:
    """A test set found on disk: where its HR and LR images are, and how they pair up."""

    name: str
    root: Path
    layout: str
    scale: int
    hr_dir: Path
    lr_dir: Path
    pairs: tuple[ImagePair, ...]

    @property
    def lr_generated(self) -> bool:
        """True when no stored LR exists, so LR images are made from HR on the fly."""
        return any(p.lr is None for p in self.pairs)


_HR_FOLDER_NAMES = re.compile(r"^(HR|GT|GTmod\d+|original)$", re.IGNORECASE)


def _set_name(root: Path) -> str:
    root = root.resolve()
    # A flat folder that is itself a set's HR folder ("Set5/GTmod4") is named after the set.
    return root.parent.name if _HR_FOLDER_NAMES.match(root.name) and root.parent.name else root.name


def _images_in(folder: Path) -> list[Path]:
    return rio.collect_images([folder])[0] if folder.is_dir() else []


def _lr_by_stem(lr_dir: Path) -> dict[str, Path]:
    return {p.stem: p for p in _images_in(lr_dir)}


def match_lr(
    hr_images: Sequence[Path], lr_dir: Path, scale: int, degradation: Degradation, root: Path | None = None
) -> list[ImagePair]:
    """Pair HR images with the LR images of ``lr_dir``; LR is None for all when the folder is absent.

    Every HR image needs its LR image once the folder exists: a partial LR folder is an error that
    says how to complete it, never a silent mix of stored and generated inputs.
    """
    if not lr_dir.is_dir():
        return [ImagePair(p.stem, p, None) for p in hr_images]
    available = _lr_by_stem(lr_dir)
    pairs = []
    for hr in hr_images:
        candidates = degradation.lr_stems(hr.stem, scale)
        lr = next((available[s] for s in candidates if s in available), None)
        if lr is None:
            raise UsageError(
                f"No LR image for {hr.name} in {lr_dir} (looked for "
                f"{' or '.join(c + '.*' for c in candidates)}). Write the missing ones with "
                f"`restorer datasets prepare {root or lr_dir.parent} --scale {scale}`, or delete the "
                "folder to have LR images made in memory."
            )
        pairs.append(ImagePair(hr.stem, hr, lr))
    return pairs


def _find_hr(root: Path, scale: int, degradation: Degradation) -> tuple[Layout, Path, list[Path]]:
    """The first layout whose HR folder holds images: (layout, HR folder, HR images)."""
    if not root.is_dir():
        raise UsageError(f"Dataset folder not found: {root}")
    layouts = degradation.layouts(scale)
    for layout in layouts:
        hr_dir = root if layout.hr == "." else root / layout.hr
        hr_images = _images_in(hr_dir)
        if hr_images:
            return layout, hr_dir, hr_images
    expected = ", ".join(f"{lay.hr}/" if lay.hr != "." else "image files directly in it" for lay in layouts)
    present = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())
    found = f" It has: {', '.join(present)}." if present else " It is empty."
    raise UsageError(
        f"No HR (ground-truth) images in {root}: expected one of {expected}.{found} "
        "Benchmarks need the HR images; see datasets/README.md for where the standard sets are published."
    )


def discover(root: str | os.PathLike, scale: int, degradation: Degradation = BICUBIC) -> TestSet:
    """Find a test set's layout (in ``degradation.layouts(scale)`` order) and pair its images."""
    root = Path(root)
    layout, hr_dir, hr_images = _find_hr(root, scale, degradation)
    lr_dir = root / layout.lr
    pairs = match_lr(hr_images, lr_dir, scale, degradation, root)
    return TestSet(_set_name(root), root, layout.name, scale, hr_dir, lr_dir, tuple(pairs))


def prepare(
    root: str | os.PathLike,
    scale: int,
    degradation: Degradation = BICUBIC,
    overwrite: bool = False,
    progress: bool = False,
) -> tuple[TestSet, list[Path]]:
    """Write the LR images a test set lacks into its layout's LR folder; returns (set, files written).

    Existing LR files are kept unless ``overwrite``. LR files are PNG named like their HR image.
    """
    from tqdm import tqdm

    root = Path(root)
    layout, _, hr_images = _find_hr(root, scale, degradation)
    lr_dir = root / layout.lr
    existing = _lr_by_stem(lr_dir)
    written: list[Path] = []
    for hr in tqdm(hr_images, desc=f"{root.name} x{scale}", unit="img", disable=not progress):
        stored = next((existing[s] for s in degradation.lr_stems(hr.stem, scale) if s in existing), None)
        if stored is not None and not overwrite:
            continue
        target = (
            stored if stored is not None and stored.suffix.lower() == ".png" else lr_dir / f"{hr.stem}.png"
        )
        lq, _ = degradation.make_pair(_read_rgb_u8(hr), scale)
        if lq.dtype != np.uint8:
            raise UsageError(
                f"The {degradation.name} inputs are not 8-bit images (the protocol keeps them unrounded), "
                "so they are not stored; benchmarks make them in memory."
            )
        rio.write_image(target, lq.astype(np.float32) / 255.0, protect=hr_images)
        written.append(target)
    return discover(root, scale, degradation), written


# ---------------------------------------------------------------------------------------------
# The shared evaluation loop
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """One metric as BasicSR's ``val.metrics`` states it: result key, function type, crop, channel."""

    name: str
    type: str
    crop_border: int = 0
    y_channel: bool = False

    def __call__(self, output_u8: np.ndarray, gt_u8: np.ndarray, device: str = "cpu") -> float:
        if self.type == "calculate_lpips":
            if self.y_channel:
                raise UsageError("LPIPS is computed on RGB images; remove test_y_channel from its metric.")
            return rmetrics.lpips_distance(output_u8, gt_u8, self.crop_border, device)
        function = rmetrics.METRIC_FUNCTIONS.get(self.type)
        if function is None:
            raise UsageError(
                f"Unsupported metric type {self.type!r}; use one of {', '.join(rmetrics.METRIC_FUNCTIONS)}."
            )
        return function(output_u8, gt_u8, self.crop_border, self.y_channel)


def benchmark_metrics(
    scale: int,
    rgb: bool = False,
    lpips: bool = False,
    *,
    y_channel: bool = True,
    crop_border: int | None = None,
) -> list[MetricSpec]:
    """The papers' protocol: Y-channel PSNR/SSIM, ``crop_border = scale``; optional RGB and LPIPS.

    A task whose degradation says otherwise (denoising: ``y_channel=False``, ``crop_border=0``) gets
    RGB PSNR/SSIM as its main metrics (``rgb`` then adds nothing).
    """
    crop = scale if crop_border is None else crop_border
    specs = []
    if y_channel:
        specs += [
            MetricSpec("psnr_y", "calculate_psnr", crop, True),
            MetricSpec("ssim_y", "calculate_ssim", crop, True),
        ]
    if rgb or not y_channel:
        specs += [
            MetricSpec("psnr_rgb", "calculate_psnr", crop, False),
            MetricSpec("ssim_rgb", "calculate_ssim", crop, False),
        ]
    if lpips:
        specs.append(MetricSpec("lpips", "calculate_lpips", crop, False))
    return specs


def option_metrics(metric_opts: Mapping[str, Mapping[str, Any]], source: str) -> list[MetricSpec]:
    """``val.metrics`` of an option file as :class:`MetricSpec` (unknown types are an error)."""
    specs = []
    for name, metric in metric_opts.items():
        kind = (metric or {}).get("type")
        if kind not in rmetrics.METRIC_FUNCTIONS:
            raise UsageError(
                f"Unsupported metric type {kind!r} in {source}; "
                f"use one of {', '.join(rmetrics.METRIC_FUNCTIONS)}."
            )
        specs.append(
            MetricSpec(
                name, kind, int(metric.get("crop_border", 0)), bool(metric.get("test_y_channel", False))
            )
        )
    return specs


@dataclass
class Sample:
    """One test input: LR pixels (float32 HxWx3 RGB in [0, 1]) and GT (uint8 HxWx3 RGB, or None)."""

    stem: str
    lq: np.ndarray
    gt: np.ndarray | None
    lq_path: Path | None = None
    gt_path: Path | None = None


def _read_rgb(path: Path) -> np.ndarray:
    """A file's colour pixels as 3 channels (BasicSR reads test images with IMREAD_COLOR)."""
    return rio.to_rgb(rio.read_image(path).pixels)


def _read_rgb_u8(path: Path) -> np.ndarray:
    return rmetrics.to_uint8(_read_rgb(path))


def load_samples(pairs: Iterable[ImagePair], scale: int, degradation: Degradation) -> Iterator[Sample]:
    """Read each pair; where the LR file is missing, make LR (and crop GT) with the degradation."""
    for pair in pairs:
        gt = _read_rgb_u8(pair.hr) if pair.hr is not None else None
        if pair.lr is None:
            if gt is None:
                raise RestorerError(f"{pair.stem}: neither an LR nor an HR image.")
            lq_made, gt = degradation.make_pair(gt, scale)
            # uint8 like the published LR sets, or float32 for protocols that keep it (Gaussian noise)
            lq = lq_made.astype(np.float32) / 255.0 if lq_made.dtype == np.uint8 else lq_made
        else:
            lq = _read_rgb(pair.lr)
        yield Sample(pair.stem, lq, gt, pair.lr, pair.hr)


class PeakMemory:
    """Peak memory of the code run inside ``with``: CUDA max allocated on a GPU (weights included);
    on a CPU, the growth of the process's resident set over its size at the start (weights already
    loaded). On Linux the kernel's high-water mark is reset at the start (``clear_refs``), so even a
    burst shorter than the sampling period is seen; elsewhere the set is sampled every few
    milliseconds and checked against the lifetime peak."""

    def __init__(self, device) -> None:
        self.device = device
        self.cuda = getattr(device, "type", str(device)).startswith("cuda")
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def measure(self) -> str:
        return "cuda_max_allocated" if self.cuda else "cpu_peak_rss_growth"

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _release_free_heap()
        self._start_rss = _current_rss() or 0
        self._start_max = _max_rss()
        self._hwm_reset = _reset_high_water_mark()
        self._sampled = self._start_rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            rss = _current_rss()
            if rss is not None and rss > self._sampled:
                self._sampled = rss

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        peak = self._sampled
        end_max = _max_rss()
        if end_max > self._start_max:  # the process reached a new lifetime peak inside the block
            peak = max(peak, end_max)
        if self._hwm_reset:
            peak = max(peak, _high_water_mark() or 0)
        self.peak_bytes = max(0, peak - self._start_rss)


def _release_free_heap() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so the RSS at the start of a
    measurement is what is in use: without it, memory freed by an earlier model stays resident and
    hides the next model's growth."""
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): the measurement is only coarser
            pass


def _current_rss() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak resident set (Linux >= 4.0, ``echo 5 > /proc/self/clear_refs``), so
    ``VmHWM`` becomes the peak from now on. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return _high_water_mark() is not None


def _high_water_mark() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _max_rss() -> int:
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


@dataclass
class EvalResult:
    """Per-image scores of one model on one test set, with timing and peak memory."""

    images: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    count: int = 0
    peak_memory_bytes: int = 0
    memory_measure: str = ""

    @property
    def sec_per_image(self) -> float:
        return self.seconds / max(self.count, 1)

    def mean(self, metric: str) -> float:
        return float(np.mean([scores[metric] for scores in self.images.values()]))


def evaluate(
    restorer: Restorer,
    samples: Iterable[Sample],
    metrics: Sequence[MetricSpec],
    *,
    total: int | None = None,
    desc: str = "",
    progress: bool = True,
    save_dir: Path | None = None,
    save_suffix: str = "",
    protect: Sequence[Path] = (),
) -> EvalResult:
    """Restore every sample, round to uint8, crop GT to LR x scale, and score with ``metrics``.

    Only the model's run is timed. Outputs are saved as ``save_dir/<LR stem><save_suffix>.png``
    when ``save_dir`` is given. GT must be the LR image times the scale, up to a mod-crop
    remainder (less than ``scale`` pixels per side); anything else means LR and GT do not belong
    together and is an error.
    """
    from tqdm import tqdm

    result = EvalResult()
    scale = restorer.scale
    metric_device = "cuda" if restorer.device.type == "cuda" else "cpu"
    samples = iter(samples)
    first = next(samples, None)
    if first is None:
        return result
    # Untimed and unmeasured: one run on a small crop (lazy initialisation, kernel choice) and the
    # metric modules' import, so neither the first image's time nor its memory carries them.
    restorer.run_array(first.lq[:32, :32])
    rmetrics.psnr(np.zeros((8, 8, 3), np.uint8), np.ones((8, 8, 3), np.uint8), 0)
    meter = PeakMemory(restorer.device)
    result.memory_measure = meter.measure
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False)
    with meter:
        for sample in itertools.chain([first], samples):
            start = time.perf_counter()
            output = restorer.run_array(sample.lq)
            result.seconds += time.perf_counter() - start
            result.count += 1
            bar.update()
            out_u8 = rmetrics.to_uint8(output)
            if save_dir is not None:
                stem = sample.lq_path.stem if sample.lq_path is not None else sample.stem
                target = save_dir / f"{stem}{save_suffix}.png"
                rio.write_image(target, out_u8.astype(np.float32) / 255.0, protect=protect)
            if sample.gt is None or not metrics:
                continue
            gt = _gt_for_output(sample, out_u8.shape, scale)
            result.images[sample.stem] = {spec.name: spec(out_u8, gt, metric_device) for spec in metrics}
    bar.close()
    result.peak_memory_bytes = meter.peak_bytes
    return result


INPUT_ROW = "input (untouched)"
"""The row of scale-1 reports that scores the degraded input itself against the ground truth: the bar a
restoration model has to clear (noisy vs clean, blended vs transmission)."""


def _bicubic_baseline(lq: np.ndarray, scale: int) -> np.ndarray:
    return bicubic_upscale(rmetrics.to_uint8(lq), scale).astype(np.float32) / 255.0


def _bm3d_baseline(lq: np.ndarray, scale: int) -> np.ndarray:
    """BM3D (the ``bm3d`` package, Mäkinen et al.'s reference implementation) at the known sigma 25:
    ``bm3d`` on gray images (three equal channels), ``bm3d_rgb`` on colour ones."""
    import bm3d

    sigma = DENOISE_SIGMA / 255.0
    if (lq == lq[..., :1]).all():
        gray = np.asarray(bm3d.bm3d(lq[..., 0].astype(np.float64), sigma_psd=sigma), dtype=np.float32)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(bm3d.bm3d_rgb(lq.astype(np.float64), sigma_psd=sigma), dtype=np.float32)


@dataclass(frozen=True)
class Baseline:
    """A classical method scored as a row beside the models: ``run(lq, scale) -> output`` (float32
    HxWx3 in [0, 1], before rounding), and the package it needs (None: always available)."""

    name: str
    run: Callable[[np.ndarray, int], np.ndarray]
    needs: str | None = None


BASELINES: dict[str, Baseline] = {
    "bicubic": Baseline("bicubic", _bicubic_baseline),
    "bm3d": Baseline("bm3d", _bm3d_baseline, needs="bm3d"),
}


def available_baselines(names: Iterable[str], on_message: Callable[[str], None]) -> list[Baseline]:
    """The named baselines whose package is installed; a note for each one that is not."""
    out = []
    for name in names:
        baseline = BASELINES[name]
        if baseline.needs and importlib.util.find_spec(baseline.needs) is None:
            on_message(
                f"no '{name}' row: its package ({baseline.needs}) is not installed "
                '(pip install "restorer[bench]")'
            )
            continue
        out.append(baseline)
    return out


def score_baseline(
    baseline: Baseline, samples: Iterable[Sample], metrics: Sequence[MetricSpec], scale: int
) -> dict[str, Any]:
    """A baseline's metrics on each sample, in the schema of a model's dataset summary."""
    images: dict[str, dict[str, float]] = {}
    seconds, count = 0.0, 0
    for sample in samples:
        start = time.perf_counter()
        out_u8 = rmetrics.to_uint8(baseline.run(sample.lq, scale))
        seconds += time.perf_counter() - start
        count += 1
        if sample.gt is None:
            continue
        gt = _gt_for_output(sample, out_u8.shape, scale)
        images[sample.stem] = {spec.name: spec(out_u8, gt, "cpu") for spec in metrics}
    summary: dict[str, Any] = {
        spec.name: float(np.mean([scores[spec.name] for scores in images.values()]))
        if images
        else float("nan")
        for spec in metrics
    }
    summary["sec_per_image"] = seconds / max(count, 1)
    summary["images"] = images
    return summary


def score_inputs(samples: Iterable[Sample], metrics: Sequence[MetricSpec]) -> dict[str, Any]:
    """Scale-1 tasks: the metrics of each input (rounded to uint8 like an output) against its GT: the
    identity as a baseline. Returns ``{metric: mean, ..., "images": {stem: {metric: value}}}``."""
    summary = score_baseline(Baseline("input", lambda lq, scale: lq), samples, metrics, 1)
    del summary["sec_per_image"]
    return summary


def _gt_for_output(sample: Sample, out_shape: tuple[int, ...], scale: int) -> np.ndarray:
    gt = sample.gt
    out_h, out_w = out_shape[:2]
    gt_h, gt_w = gt.shape[:2]
    if not (0 <= gt_h - out_h < scale and 0 <= gt_w - out_w < scale):
        name = sample.gt_path.name if sample.gt_path is not None else sample.stem
        lq_h, lq_w = sample.lq.shape[:2]
        raise RestorerError(
            f"{name} is {gt_w}x{gt_h}, but its LR image is {lq_w}x{lq_h}, which x{scale} gives "
            f"{out_w}x{out_h}: LR and GT do not belong together (wrong scale or a different crop)."
        )
    return gt[:out_h, :out_w]


# ---------------------------------------------------------------------------------------------
# restorer test -opt FILE
# ---------------------------------------------------------------------------------------------


def load_options(path: str | os.PathLike) -> dict[str, Any]:
    """Read a BasicSR option file; a clear error when it is missing or not a YAML mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"Option file not found: {path}")
    try:
        opt = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(opt, dict) or "network_g" not in opt:
        raise UsageError(f"{path} is not a BasicSR option file (no network_g section).")
    return opt


def entry_for_network(network_g: dict[str, Any], weight_file: str, param_key: str, name: str) -> zoo.ZooEntry:
    """The zoo entry with exactly this ``network_g`` (for its name and flags), else an ad-hoc one."""
    for entry in zoo.ZOO.values():
        if entry.network_options() == network_g:
            return dataclasses.replace(entry, weight_file=weight_file, param_key=param_key)
    import torch

    from restorer.archs import build_network

    with torch.device("meta"):
        net = build_network(network_g)
    return zoo.ZooEntry(
        model="custom",
        display_name=name,
        arch=network_g["type"],
        scale=int(getattr(net, "scale", network_g.get("upscale", 1))),
        network_g=zoo._freeze(network_g),
        weight_file=weight_file,
        param_key=param_key,
        published="(option file)",
        paper="",
        window_multiple=int(getattr(net, "window_multiple", 1)),
        in_channels=int(network_g.get("in_chans", 3)),
        out_channels=int(network_g.get("in_chans", 3)),
    )


def pair_images(lq_dir: Path, gt_dir: Path | None, scale: int = 1) -> list[ImagePair]:
    """LR images of a folder with their GT (BasicSR's ``filename_tmpl: '{}'``; ``NAMEx{scale}`` LR
    names also match GT ``NAME``). Keyed by the GT stem where there is GT."""
    if not lq_dir.is_dir():
        raise UsageError(f"LR folder not found: {lq_dir}")
    lq_images = _images_in(lq_dir)
    if gt_dir is None:
        return [ImagePair(p.stem, None, p) for p in lq_images]
    if not gt_dir.is_dir():
        raise UsageError(f"HR (ground-truth) folder not found: {gt_dir}")
    by_stem = {p.stem: p for p in _images_in(gt_dir)}
    pairs = []
    for lq in lq_images:
        gt = by_stem.get(lq.stem)
        if gt is None and lq.stem.endswith(f"x{scale}"):
            gt = by_stem.get(lq.stem[: -len(f"x{scale}")])
        if gt is None:
            raise UsageError(f"No ground-truth image for {lq.name} in {gt_dir}")
        pairs.append(ImagePair(gt.stem, gt, lq))
    return pairs


def _option_pairs(ds: Mapping[str, Any], scale: int, on_message: Callable[[str], None]) -> list[ImagePair]:
    gt_root = Path(ds["dataroot_gt"]) if ds.get("dataroot_gt") else None
    lq_root = Path(ds["dataroot_lq"]) if ds.get("dataroot_lq") else None
    if (lq_root is None or not lq_root.is_dir()) and gt_root is not None and gt_root.is_dir():
        # No stored LR: make it like the published sets (mod-crop + MATLAB bicubic), in memory.
        on_message(
            f"{lq_root or 'dataroot_lq'} not found: making LR images from {gt_root} "
            f"with MATLAB bicubic x{scale}"
        )
        return [ImagePair(p.stem, p, None) for p in _images_in(gt_root)]
    if lq_root is None:
        raise UsageError(
            f"Dataset {ds.get('name', '?')} has neither dataroot_lq nor an existing dataroot_gt."
        )
    return pair_images(lq_root, gt_root, scale)


def run_option_file(
    path: str | os.PathLike,
    device: str = "auto",
    precision: str = "fp32",
    tile: int | None = None,
    results_root: str | os.PathLike = "results",
    progress: bool = True,
    on_message: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run a BasicSR test option file; returns ``{"name", "model", "scale", "datasets": {name: {...}}}``.

    Each dataset's entry holds the mean of every ``val.metrics`` entry under its name, ``images``
    (per-image scores) and ``sec_per_image``. Restored images go to
    ``results_root/<name>/visualization/<dataset>/`` when ``val.save_img``; the numbers to
    ``results_root/<name>/metrics.json``.
    """
    from restorer.engine.runner import build_restorer

    note = on_message or (lambda message: print(f"note: {message}", file=sys.stderr))
    opt = load_options(path)
    name = str(opt.get("name") or Path(path).stem)
    network_g = dict(opt["network_g"])
    path_opt = opt.get("path") or {}
    weight_path = path_opt.get("pretrain_network_g")
    if not weight_path:
        raise UsageError(f"{path}: path.pretrain_network_g is not set; it names the weight file to test.")
    param_key = path_opt.get("param_key_g") or "params"
    entry = entry_for_network(network_g, Path(weight_path).name, param_key, name)
    scale = int(opt.get("scale") or entry.scale)
    tile_opt = opt.get("tile") or {}
    if tile is None and tile_opt:
        tile = int(tile_opt.get("tile_size", 0))
    overlap = 2 * int(tile_opt["tile_pad"]) if tile_opt.get("tile_pad") is not None else None
    if device == "auto" and opt.get("num_gpu") == 0:
        device = "cpu"  # the option file's own "CPU mode"
    restorer = build_restorer(entry, weight_path, device, precision, tile if tile is not None else 0, overlap)
    if restorer.scale != scale:
        raise UsageError(f"{path}: scale {scale} does not match the network's upscale {restorer.scale}.")

    val = opt.get("val") or {}
    metrics = option_metrics(val.get("metrics") or {}, str(path))
    save_img = bool(val.get("save_img", False))
    suffix = val.get("suffix") or name
    out_root = Path(results_root) / name
    results: dict[str, Any] = {"name": name, "model": entry.display_name, "scale": scale, "datasets": {}}
    for ds in (opt.get("datasets") or {}).values():
        ds_name = ds.get("name", "dataset")
        pairs = _option_pairs(ds, scale, note)
        evaluated = evaluate(
            restorer,
            load_samples(pairs, scale, BICUBIC),
            metrics,
            total=len(pairs),
            desc=ds_name,
            progress=progress,
            save_dir=out_root / "visualization" / ds_name if save_img else None,
            save_suffix=f"_{suffix}",
            protect=[p for pair in pairs for p in (pair.lr, pair.hr) if p is not None],
        )
        summary: dict[str, Any] = {"images": evaluated.images, "sec_per_image": evaluated.sec_per_image}
        if evaluated.images:
            for spec in metrics:
                summary[spec.name] = evaluated.mean(spec.name)
        results["datasets"][ds_name] = summary
    out_root.mkdir(parents=True, exist_ok=True)
    _write_text(out_root / "metrics.json", json.dumps(results, indent=2))
    return results


# ---------------------------------------------------------------------------------------------
# restorer benchmark
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRequest:
    """A model to benchmark: its command-line name (None = the task's default) and weight file."""

    model: str | None = None
    weights: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRequest:
        """``NAME`` or ``NAME=WEIGHTS_FILE``."""
        name, _, weights = text.partition("=")
        if not name:
            raise UsageError(f"--model {text!r}: give a model name, optionally NAME=WEIGHTS_FILE.")
        return cls(name, weights or None)


def _unique_sets(test_sets: list[TestSet]) -> list[TestSet]:
    seen: dict[str, int] = {}
    out = []
    for ts in test_sets:
        count = seen.get(ts.name, 0)
        seen[ts.name] = count + 1
        out.append(ts if count == 0 else dataclasses.replace(ts, name=f"{ts.name}#{count + 1}"))
    return out


def run_benchmark(
    task: str,
    models: Sequence[ModelRequest],
    datasets: Sequence[str | os.PathLike],
    *,
    device: str = "auto",
    precision: str = "fp32",
    tile: int = 0,
    tile_overlap: int | None = None,
    rgb: bool = False,
    lpips: bool = False,
    save_images: str | os.PathLike | None = None,
    progress: bool = True,
    on_message: Callable[[str], None] | None = None,
    baselines: bool = True,
    tta: bool = False,
    shard: Shard | None = None,
) -> dict[str, Any]:
    """Evaluate each model on each test set; returns the results in the JSON schema::

    {"task", "scale", "memory_measure", "test_sets": {set: {"path", "layout", "lr", "images"}},
     ["input": {set: {metric, ..., "images": {stem: {metric}}}}]  (scale-1 tasks: the untouched input)
     ["baselines": {name: {set: {metric, ..., "sec_per_image", "images"}}}]  (bicubic, bm3d, ...)
     "models": {name: {"display_name", "weights", "params_m",   (with tta, also "name+": the x8 ensemble)
                       "datasets": {set: {"psnr_y", "ssim_y", ["psnr_rgb", "ssim_rgb"], ["lpips"],
                                          "sec_per_image", "peak_memory_mb",
                                          "images": {stem: {"psnr_y", "ssim_y", ...}}}}}}}

    With ``shard`` (``--distributed``) this process scores its share of each test set's images; the
    per-image scores of all processes are joined, so every process returns the whole results.
    """
    from restorer import tasks
    from restorer import weights as rw
    from restorer.engine.distributed import SINGLE
    from restorer.engine.runner import build_restorer

    note = on_message or (lambda message: print(f"note: {message}", file=sys.stderr))
    shard = shard or SINGLE
    spec = tasks.get_task(task)
    if spec.kind == "codec":  # rate-distortion, not restoration: restorer.codec.rd's schema
        unsupported = [
            flag
            for flag, used in (
                ("--tile", bool(tile)),
                ("--lpips", lpips),
                ("--save-images", save_images is not None),
                ("--precision", precision not in ("fp32", "auto")),
                ("--distributed", shard.active),
            )
            if used
        ]
        if unsupported:
            raise UsageError(
                f"{', '.join(unsupported)} do not apply to the '{task}' task "
                "(codecs run whole images in fp32)."
            )
        return run_codec_benchmark(models, datasets, device=device, progress=progress, on_message=note)
    degradation = degradation_for(spec)
    scale = spec.scale
    if not datasets:
        raise UsageError("Give at least one --dataset DIR.")
    test_sets = _unique_sets([discover(d, scale, degradation) for d in datasets])
    metrics = benchmark_metrics(
        scale, rgb=rgb, lpips=lpips, y_channel=degradation.y_channel, crop_border=degradation.crop_border
    )
    if lpips:
        rmetrics.load_lpips("cpu")  # fail before any model runs when the AlexNet weights are missing
    requests = list(models) or [ModelRequest()]
    entries = []
    for request in requests:
        available = None if request.weights else rw.is_available
        entry = tasks.resolve(task, request.model, weights_available=available)
        rw.require_weights(entry, request.weights)  # every model's weights before the first one runs
        entries.append((request, entry))
    names = [entry.model for _, entry in entries]
    for ts in test_sets:
        if ts.lr_generated and degradation.inputs:
            note(
                f"{ts.name}: no {ts.lr_dir.relative_to(ts.root)}/ folder; making the inputs in memory: "
                f"{degradation.inputs}"
            )
        elif ts.lr_generated:
            note(
                f"{ts.name}: no {ts.lr_dir.relative_to(ts.root)}/ folder; making LR images with "
                f"MATLAB bicubic x{scale} in memory "
                f"(`restorer datasets prepare {ts.root} --scale {scale}` writes them once)"
            )

    results: dict[str, Any] = {
        "task": spec.name,
        "scale": scale,
        "memory_measure": "",
        "protocol": {
            "channel": "Y" if degradation.y_channel else "RGB",
            "crop_border": scale if degradation.crop_border is None else degradation.crop_border,
            "degradation": degradation.name,
            "inputs": degradation.inputs or f"MATLAB bicubic x{scale}",
        },
        "test_sets": {
            ts.name: {
                "path": str(ts.root),
                "layout": ts.layout,
                "lr": "generated" if ts.lr_generated else str(ts.lr_dir),
                "images": len(ts.pairs),
            }
            for ts in test_sets
        },
        "models": {},
    }
    mine = {ts.name: shard.part(ts.pairs) for ts in test_sets}  # this process's images of each set

    def joined(ts: TestSet, summary: dict[str, Any], count: int | None = None) -> dict[str, Any]:
        count = len(mine[ts.name]) if count is None else count
        return shard.merge_scores(summary, count, [pair.stem for pair in ts.pairs])

    if scale == 1:
        results["input"] = {
            ts.name: joined(ts, score_inputs(load_samples(mine[ts.name], scale, degradation), metrics))
            for ts in test_sets
        }
    if baselines:
        for baseline in available_baselines(degradation.baselines, note):
            results.setdefault("baselines", {})[baseline.name] = {
                ts.name: joined(
                    ts,
                    score_baseline(baseline, load_samples(mine[ts.name], scale, degradation), metrics, scale),
                )
                for ts in test_sets
            }
    for request, entry in entries:
        key = entry.model
        if names.count(entry.model) > 1 and request.weights:  # one model, several checkpoints
            key = f"{entry.model}={Path(request.weights).name}"
        if key in results["models"]:
            key = f"{key}#{len(results['models']) + 1}"
        restorer = build_restorer(
            entry, request.weights, device, precision, tile, tile_overlap, on_message=note
        )
        for ensemble in (False, True) if tta else (False,):
            restorer.tta = ensemble
            row_key = f"{key}+" if ensemble else key  # the papers' "+" rows: x8 self-ensemble
            model_result: dict[str, Any] = {
                "display_name": entry.display_name + (" (x8 self-ensemble)" if ensemble else ""),
                "weights": str(rw.require_weights(entry, request.weights)),
                "params_m": sum(p.numel() for p in restorer.model.parameters()) / 1e6,
                "datasets": {},
            }
            for ts in test_sets:
                save_dir = Path(save_images) / row_key / ts.name if save_images else None
                evaluated = evaluate(
                    restorer,
                    load_samples(mine[ts.name], scale, degradation),
                    metrics,
                    total=len(mine[ts.name]),
                    desc=f"{row_key} {ts.name}",
                    progress=progress,
                    save_dir=save_dir,
                    protect=[p for pair in ts.pairs for p in (pair.lr, pair.hr) if p is not None],
                )
                summary: dict[str, Any] = {spec_.name: evaluated.mean(spec_.name) for spec_ in metrics}
                summary["sec_per_image"] = evaluated.sec_per_image
                summary["peak_memory_mb"] = evaluated.peak_memory_bytes / 2**20
                summary["images"] = evaluated.images
                model_result["datasets"][ts.name] = joined(ts, summary, evaluated.count)
                results["memory_measure"] = evaluated.memory_measure or results["memory_measure"]
            results["models"][row_key] = model_result
        del restorer
    return results


# ---------------------------------------------------------------------------------------------
# Reports: text table, Markdown, JSON, bar chart
# ---------------------------------------------------------------------------------------------

_MEMORY_LABELS = {
    "cuda_max_allocated": "peak MiB (CUDA max allocated)",
    "cpu_peak_rss_growth": "peak MiB (CPU RSS growth)",
}


def _cell_groups(results: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    first = next(iter(next(iter(results["models"].values()))["datasets"].values()), {})
    groups = [("PSNR/SSIM (Y)", ["psnr_y", "ssim_y"])] if "psnr_y" in first or not first else []
    if "psnr_rgb" in first:
        groups.append(("PSNR/SSIM (RGB)", ["psnr_rgb", "ssim_rgb"]))
    if "lpips" in first:
        groups.append(("LPIPS", ["lpips"]))
    return groups


def _format_cell(summary: Mapping[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        value = summary[key]
        parts.append(f"{value:.2f}" if key.startswith("psnr") else f"{value:.4f}")
    return "/".join(parts)


def table_rows(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: model, params (M), one PSNR/SSIM cell per test set (and per extra metric
    group), seconds per image over all sets, peak memory over all sets; scale-1 tasks end with the
    untouched input's row (:data:`INPUT_ROW`)."""
    set_names = list(results["test_sets"])
    groups = _cell_groups(results)
    header = ["model", "params (M)"]
    for label, _ in groups:
        header += [f"{name} {label}" for name in set_names]
    header += ["s/image", _MEMORY_LABELS.get(results.get("memory_measure", ""), "peak MiB")]
    rows = []
    counts = [results["test_sets"][n]["images"] for n in set_names]
    for key, model in results["models"].items():
        row = [key, f"{model['params_m']:.2f}"]
        for _, keys in groups:
            row += [_format_cell(model["datasets"][name], keys) for name in set_names]
        seconds = sum(model["datasets"][n]["sec_per_image"] * c for n, c in zip(set_names, counts))
        row.append(f"{seconds / max(sum(counts), 1):.3f}")
        row.append(f"{max(model['datasets'][n]['peak_memory_mb'] for n in set_names):.0f}")
        rows.append(row)
    for name, per_set in (results.get("baselines") or {}).items():
        row = [f"{name} (baseline)", "-"]
        for _, keys in groups:
            row += [_format_cell(per_set[set_name], keys) for set_name in set_names]
        seconds = sum(per_set[n]["sec_per_image"] * c for n, c in zip(set_names, counts))
        rows.append(row + [f"{seconds / max(sum(counts), 1):.3f}", "-"])
    if results.get("input"):
        row = [INPUT_ROW, "-"]
        for _, keys in groups:
            row += [_format_cell(results["input"][name], keys) for name in set_names]
        rows.append(row + ["-", "-"])
    return header, rows


def _protocol_line(results: Mapping[str, Any]) -> str:
    protocol = results.get("protocol") or {}
    if protocol.get("channel", "Y") == "Y":
        return (
            f"Task {results['task']} (x{results['scale']}): PSNR (dB) / SSIM on the Y channel (BT.601), "
            f"crop border {protocol.get('crop_border', results['scale'])}, outputs rounded to uint8 "
            "(BasicSR's calculate_psnr / calculate_ssim)."
        )
    return (
        f"Task {results['task']} (x{results['scale']}): PSNR (dB) / SSIM on RGB (not Y), crop border "
        f"{protocol.get('crop_border', 0)}, outputs rounded to uint8 (BasicSR's calculate_psnr / "
        f"calculate_ssim); inputs: {protocol.get('inputs', '')}."
    )


def format_table(results: Mapping[str, Any]) -> str:
    """The results as an aligned text table with the protocol on top."""
    if results.get("kind") == "codec":
        from restorer.codec.rd import rd_markdown

        return rd_markdown(results)
    header, rows = table_rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [_protocol_line(results)]
    lines.append(
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    )
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        )
    return "\n".join(lines)


def to_markdown(results: Mapping[str, Any]) -> str:
    """The results as a Markdown table, with the protocol and the test sets below it."""
    header, rows = table_rows(results)
    lines = [f"## Benchmark: {results['task']}", "", _protocol_line(results), ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    for name, info in results["test_sets"].items():
        made = (results.get("protocol") or {}).get("inputs", "MATLAB bicubic")
        if made.startswith("MATLAB bicubic"):
            made = "MATLAB bicubic"  # the SR wording, unchanged
        lr = f"LR made with {made}" if info["lr"] == "generated" else f"LR from {info['lr']}"
        lines.append(f"- {name}: {info['images']} images, {info['layout']} layout at `{info['path']}`, {lr}.")
    return "\n".join(lines) + "\n"


def plot(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """A grouped bar chart PNG: PSNR and SSIM (Y, or RGB where the task's protocol says) per test set,
    one bar per model (and a gray one for the untouched input of scale-1 tasks)."""
    from restorer._compat import require_extra

    matplotlib = require_extra("matplotlib", "bench", "--plot")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    set_names = list(results["test_sets"])
    series = {name: model["datasets"] for name, model in results["models"].items()}
    if results.get("input"):
        series[INPUT_ROW] = results["input"]
    model_names = list(series)
    fig, axes = plt.subplots(
        1, 2, figsize=(max(6.0, 1.6 * len(set_names) * max(1, len(model_names)) / 2 + 4), 4)
    )
    width = 0.8 / max(len(model_names), 1)
    x = np.arange(len(set_names))
    rgb_only = (results.get("protocol") or {}).get("channel") == "RGB"
    panels = (
        (("psnr_rgb", "PSNR-RGB (dB)"), ("ssim_rgb", "SSIM-RGB"))
        if rgb_only
        else (("psnr_y", "PSNR-Y (dB)"), ("ssim_y", "SSIM-Y"))
    )
    for ax, (metric, label) in zip(axes, panels):
        values_all = []
        for i, name in enumerate(model_names):
            values = [series[name][s][metric] for s in set_names]
            values_all += values
            colour = "lightgray" if name == INPUT_ROW else None
            bars = ax.bar(
                x + (i - (len(model_names) - 1) / 2) * width, values, width, label=name, color=colour
            )
            # The axis does not start at 0 (differences are tenths of a dB), so print the values.
            ax.bar_label(
                bars, fmt="%.2f" if metric.startswith("psnr") else "%.4f", fontsize="x-small", padding=2
            )
        finite = [v for v in values_all if np.isfinite(v)]
        if finite:  # start the axis near the data so differences of a few tenths are visible
            low, high = min(finite), max(finite)
            pad = max((high - low) * 0.5, 0.05 * abs(high) if metric.startswith("psnr") else 0.02)
            ax.set_ylim(max(0.0, low - pad), high + pad * 0.5)
        ax.set_xticks(x, set_names)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{results['task']} (x{results['scale']})")
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target


def codec_variants(models: Sequence[ModelRequest]) -> list[tuple[str, str | None]]:
    """The codec variants (and weight files) that ``--model`` requests name, as ``(variant, weights)``.

    A family name (``s2lic-small``) means each of its quality levels whose weights are present; a full
    variant name (``s2lic-small-q1``) means that one; no ``--model`` means the ``compress`` task's preferred
    family with weights present.
    """
    from restorer import weights as rw
    from restorer.codec.api import _split_quality, codec_entries, resolve_codec_entry

    by_name = {e.model: e for e in codec_entries()}
    out: list[tuple[str, str | None]] = []
    for request in models or [ModelRequest()]:
        name = (request.model or "").lower() or None
        if name in by_name:
            out.append((name, request.weights))
            continue
        if request.weights:
            raise UsageError(
                f"--model {request.model}=WEIGHTS needs a full variant name (e.g. {request.model}-q1), "
                "one weight file per rate point."
            )
        family = _split_quality(resolve_codec_entry(name, weights_available=rw.is_available).model)[0]
        levels = sorted(
            (e for e in by_name.values() if _split_quality(e.model)[0] == family),
            key=lambda e: _split_quality(e.model)[1] or 0,
        )
        present = [e.model for e in levels if rw.is_available(e)]
        if not present:
            missing = ", ".join(e.weight_file for e in levels)
            folders = ", ".join(str(d) for d in rw.weight_dirs())
            raise UsageError(f"No weights for any quality of {family}: expected {missing} in {folders}.")
        out += [(variant, None) for variant in present]
    return list(dict.fromkeys(out))


def run_codec_benchmark(
    models: Sequence[ModelRequest],
    datasets: Sequence[str | os.PathLike],
    *,
    device: str = "auto",
    progress: bool = True,
    on_message: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Rate-distortion benchmark of codec models (``--task compress``); see
    :func:`restorer.codec.rd.evaluate_rd` for the schema."""
    from restorer import weights as rw
    from restorer.codec.api import load_codec
    from restorer.codec.rd import evaluate_rd
    from restorer.engine.runner import resolve_device

    target = resolve_device(device)
    codecs, info = {}, {}
    for variant, weights in codec_variants(models):
        codec = load_codec(variant, weights=weights, device=target)
        entry = zoo.get_entry(variant, 1)
        codecs[variant] = codec
        info[variant] = {
            "display_name": entry.display_name,
            "weights": str(weights or rw.find_weights(entry)),
            "fingerprint": codec.fingerprint.hex(),
            "params_m": round(sum(p.numel() for p in codec.model.parameters()) / 1e6, 3),
            "device": str(target),
        }
    report = (lambda text: print(f"  {text}", file=sys.stderr)) if progress else None
    return evaluate_rd(datasets, codecs, model_info=info, on_image=report)


def _write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file, so an interruption leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_reports(
    results: Mapping[str, Any],
    json_path: str | os.PathLike | None = None,
    markdown_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
) -> list[Path]:
    """Write the JSON, Markdown and (when asked) bar-chart files; returns the paths written."""
    if results.get("kind") == "codec":
        from restorer.codec.rd import write_rd_reports

        return write_rd_reports(results, json_path, markdown_path, plot_path)
    written = []
    if json_path:
        written.append(_write_text(Path(json_path), json.dumps(results, indent=2) + "\n"))
    if markdown_path:
        written.append(_write_text(Path(markdown_path), to_markdown(results)))
    if plot_path:
        written.append(plot(results, plot_path))
    return written
