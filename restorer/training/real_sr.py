"""Real-world super-resolution training on BasicSR's pipeline, on any device.

Real-ESRGAN's recipe (Wang et al., ICCVW 2021), as Real-HAT-GAN and Real-DRCT-GAN train with it:
low-quality inputs are synthesised on the fly from clean photos by a *second-order* degradation
(blur, random resize, Gaussian or Poisson noise, JPEG; then all of it again, with a final sinc
filter), first with a pixel loss only (PSNR-oriented), then optionally fine-tuned with perceptual and
GAN losses. BasicSR's own ``RealESRNetModel`` / ``RealESRGANModel`` put their JPEG simulator, their
sharpening filter and their training-pair queue on ``.cuda()``, so they cannot run on a CPU. The
classes here do the same degradation on ``self.device`` (CPU or CUDA) from BasicSR's own building
blocks: ``DiffJPEG``, ``USMSharp``, ``filter2D``, ``random_add_gaussian_noise_pt``,
``random_add_poisson_noise_pt``, ``random_mixed_kernels``, ``circular_lowpass_kernel`` and
``paired_random_crop``.

Registered names
----------------
Models (``MODEL_REGISTRY``):

- :class:`RealSRNetModel`: PSNR-oriented stage (pixel loss; perceptual too if given). It is
  :class:`~restorer.training.models.RestorerSRModel`, so ``train.speed``, ``grad_clip``, AdamW and
  ``.safetensors`` pretrained weights work as in every other recipe. ``gt_usm: true`` sharpens the
  target (and the photo the input is made from) with BasicSR's USM, as Real-ESRNet does; default off.
- :class:`RealSRGANModel`: GAN stage (Real-ESRGAN's ``optimize_parameters``: pixel, perceptual and
  GAN losses on the generator, then the discriminator on real and fake). As upstream, the input is
  made from the USM-sharpened photo and ``l1_gt_usm`` / ``percep_gt_usm`` / ``gan_gt_usm`` choose the
  sharpened or plain photo as each loss's target (default: sharpened, as the official files set).
- Aliases, so official option files run unchanged: ``RealHATMSEModel`` and ``RealDRCTMSEModel``
  (= :class:`RealSRNetModel`), ``RealHATGANModel`` and ``RealDRCTGANModel`` (= :class:`RealSRGANModel`),
  and ``RealESRNetModel`` / ``RealESRGANModel``. BasicSR registers its own two with a suffix
  (``RealESRNetModel_basicsr``), precisely so that a project can register the plain names (the
  Real-ESRGAN repository does); BasicSR's CUDA-only classes stay reachable under those suffixed names.
  A name already registered (the ``realesrgan`` or ``hat`` package imported first) is left to its
  owner; importing such a package *after* this module fails on BasicSR's duplicate-name check.

Datasets (``DATASET_REGISTRY``):

- :class:`RealSRDataset`, also registered as ``RealESRGANDataset``: an HR folder (or list of folders;
  ``meta_info`` optional) -> ``{'gt', 'kernel1', 'kernel2', 'sinc_kernel', 'gt_path'}``, the items of
  Real-ESRGAN's dataset. As with ``type`` above, BasicSR's own is ``RealESRGANDataset_basicsr`` (it
  needs a ``meta_info`` file; the HAT and DRCT repositories shadow it with a copy that scans the
  folder, which is what their YAMLs rely on). Extra options: ``crop_pad_size`` (the square each photo
  is cropped or reflect-padded to before degradation; upstream hard-codes 400), ``cache_images``,
  ``recursive``. Kernel options default to :data:`KERNEL_DEFAULTS`.
- :class:`RealSRValDataset`: validation pairs, an HR folder degraded by the same pipeline with a fixed
  seed per image (:func:`degrade_with_seed`), so every validation and ``weights/eval_real_sr.py`` see
  the same inputs.

The degradation options are read from the top level of the option file as upstream (``resize_prob``,
``noise_range``, ..., ``jpeg_range2``, ``gt_size``, ``queue_size``); a missing one takes the value of
the official Real-ESRGAN / Real-HAT-GAN x4 files (:data:`DEGRADATION_DEFAULTS`).

The official Real-HAT-GAN options (``train_Real_HAT_SRx4_mse_model.yml``,
``train_Real_HAT_GAN_SRx4_finetune_from_mse_model.yml``) run as they are on a GPU, with their data
paths. ``num_gpu: auto`` means the CPU where there is none. The GAN stage's perceptual loss needs
torchvision's ImageNet VGG19 file, which BasicSR reads from
``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` or the torch hub cache. A copy in restorer's
weights folders (``restorer weights download vgg19``) is used too. Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import os
import random
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils import data

from restorer._compat import ensure_basicsr_importable

ensure_basicsr_importable()

from basicsr.data.degradations import (  # noqa: E402
    circular_lowpass_kernel,
    random_add_gaussian_noise_pt,
    random_add_poisson_noise_pt,
    random_mixed_kernels,
)
from basicsr.data.transforms import augment, mod_crop, paired_random_crop  # noqa: E402
from basicsr.models.srgan_model import SRGANModel  # noqa: E402
from basicsr.utils import DiffJPEG, USMSharp, img2tensor  # noqa: E402
from basicsr.utils.img_process_util import filter2D  # noqa: E402
from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY  # noqa: E402

from restorer import io as rio  # noqa: E402
from restorer.errors import WeightsNotFoundError  # noqa: E402
from restorer.training.models import RestorerSRModel  # noqa: E402

__all__ = [
    "DEGRADATION_DEFAULTS",
    "KERNEL_DEFAULTS",
    "KernelSampler",
    "RealSRDataset",
    "RealSRGANModel",
    "RealSRNetModel",
    "RealSRValDataset",
    "SecondOrderDegradation",
    "SeparableUSMSharp",
    "TrainingPairPool",
    "degrade_with_seed",
    "image_seed",
    "seeded",
]

#: The second-order degradation of the official Real-ESRGAN x4 and Real-HAT-GAN x4 option files
#: (top-level keys of an option file).
DEGRADATION_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        # first degradation: resize up / down / keep, Gaussian (sigma on 0-255) or Poisson noise, JPEG
        "resize_prob": [0.2, 0.7, 0.1],
        "resize_range": [0.15, 1.5],
        "gaussian_noise_prob": 0.5,
        "noise_range": [1, 30],
        "poisson_scale_range": [0.05, 3],
        "gray_noise_prob": 0.4,
        "jpeg_range": [30, 95],
        # second degradation
        "second_blur_prob": 0.8,
        "resize_prob2": [0.3, 0.4, 0.3],
        "resize_range2": [0.3, 1.2],
        "gaussian_noise_prob2": 0.5,
        "noise_range2": [1, 25],
        "poisson_scale_range2": [0.05, 2.5],
        "gray_noise_prob2": 0.4,
        "jpeg_range2": [30, 95],
    }
)

_KERNEL_TYPES = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
_KERNEL_PROBS = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]

#: Blur and sinc kernels of the same files (dataset options).
KERNEL_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "blur_kernel_size": 21,
        "kernel_list": _KERNEL_TYPES,
        "kernel_prob": _KERNEL_PROBS,
        "sinc_prob": 0.1,
        "blur_sigma": [0.2, 3],
        "betag_range": [0.5, 4],
        "betap_range": [1, 2],
        "blur_kernel_size2": 21,
        "kernel_list2": _KERNEL_TYPES,
        "kernel_prob2": _KERNEL_PROBS,
        "sinc_prob2": 0.1,
        "blur_sigma2": [0.2, 1.5],
        "betag_range2": [0.5, 4],
        "betap_range2": [1, 2],
        "final_sinc_prob": 0.8,
    }
)

_RESIZE_MODES = ("area", "bilinear", "bicubic")


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """BasicSR's ``filter2D`` (per-image kernels, reflect padding). It reshapes with ``view``, so the
    input is made contiguous first: ``DiffJPEG`` returns a permuted layout that padding keeps."""
    return filter2D(x.contiguous(), kernel)


_SMALLEST_KERNEL = 7


def _resolved(options: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    options = options or {}
    return {key: options.get(key, default) for key, default in defaults.items()}


# ---------------------------------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------------------------------


def image_seed(seed: int, name: str) -> int:
    """The seed of one image of a fixed-seed set: from the base seed and the file name alone, so an
    image keeps its degradation whatever else is in the folder."""
    return (zlib.crc32(name.encode("utf-8")) + 7919 * int(seed)) % 2**32


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU, and ``device`` if CUDA), the
    three sources the degradation draws from; all are restored afterwards."""
    device = torch.device(device)
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


# ---------------------------------------------------------------------------------------------------
# Kernels (per image, as the dataset draws them) and the batched degradation (on the model's device)
# ---------------------------------------------------------------------------------------------------


class KernelSampler:
    """Draws the three kernels of one training image, as Real-ESRGAN's dataset does.

    Blur kernels (first and second degradation): an odd size from 7 to ``blur_kernel_size``; with
    probability ``sinc_prob`` a circular low-pass (sinc) kernel with a cutoff in [pi/3, pi] (in
    [pi/5, pi] from size 13 on), otherwise BasicSR's ``random_mixed_kernels`` (isotropic, anisotropic,
    generalised and plateau Gaussians, any rotation); zero-padded to ``blur_kernel_size``. The final
    kernel is a sinc kernel (cutoff in [pi/3, pi]) with probability ``final_sinc_prob``, otherwise the
    identity (a centred pulse). Randomness: Python's ``random`` and NumPy's global generator, which
    BasicSR's loader seeds per worker.
    """

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.opt = _resolved(options, KERNEL_DEFAULTS)
        for key in ("blur_kernel_size", "blur_kernel_size2"):
            size = int(self.opt[key])
            if size < _SMALLEST_KERNEL or size % 2 == 0:
                raise ValueError(f"{key} must be odd and at least {_SMALLEST_KERNEL}, got {size}")
        if self.opt["blur_kernel_size"] != self.opt["blur_kernel_size2"]:
            raise ValueError("blur_kernel_size and blur_kernel_size2 must be equal (kernels are batched)")
        self.size = int(self.opt["blur_kernel_size"])
        pulse = np.zeros((self.size, self.size), np.float32)
        pulse[self.size // 2, self.size // 2] = 1.0
        self._pulse = pulse

    def _random_size(self) -> int:
        return random.choice(range(_SMALLEST_KERNEL, self.size + 1, 2))

    def _blur(self, suffix: str) -> np.ndarray:
        o = self.opt
        size = self._random_size()
        if np.random.uniform() < o[f"sinc_prob{suffix}"]:
            lowest_cutoff = np.pi / 3 if size < 13 else np.pi / 5
            kernel = circular_lowpass_kernel(np.random.uniform(lowest_cutoff, np.pi), size, pad_to=0)
        else:
            sigma = o[f"blur_sigma{suffix}"]
            kernel = random_mixed_kernels(
                o[f"kernel_list{suffix}"],
                o[f"kernel_prob{suffix}"],
                size,
                sigma,
                sigma,
                [-np.pi, np.pi],
                o[f"betag_range{suffix}"],
                o[f"betap_range{suffix}"],
                noise_range=None,
            )
        pad = (self.size - size) // 2
        return np.pad(kernel, pad)

    def _final_sinc(self) -> np.ndarray:
        if np.random.uniform() < self.opt["final_sinc_prob"]:
            size = self._random_size()
            return circular_lowpass_kernel(np.random.uniform(np.pi / 3, np.pi), size, pad_to=self.size)
        return self._pulse

    def sample(self) -> dict[str, torch.Tensor]:
        """``{'kernel1', 'kernel2', 'sinc_kernel'}``: float32 tensors of ``blur_kernel_size`` squared."""
        kernels = {"kernel1": self._blur(""), "kernel2": self._blur("2"), "sinc_kernel": self._final_sinc()}
        return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in kernels.items()}


class SecondOrderDegradation(nn.Module):
    """Real-ESRGAN's second-order degradation of a batch ``(B, 3, H, W)`` in [0, 1] -> ``(B, 3, H/s, W/s)``.

    Each order: blur with its kernel (the second with probability ``second_blur_prob``), resize by a
    random factor (up, down or keep by ``resize_prob``; area, bilinear or bicubic), Gaussian noise
    (probability ``gaussian_noise_prob``) or Poisson noise, each gray with probability
    ``gray_noise_prob``, then JPEG at a quality drawn per image. The second order resizes relative to
    the target size and ends, in either order with equal probability, with [resize to ``H/s x W/s``
    + the final sinc filter] and JPEG. The result is rounded to 8 bits. One resize factor and mode
    are shared by the batch (the training-pair pool mixes batches). It runs on whatever device its
    input and its ``DiffJPEG`` buffers are on; randomness: ``random``, NumPy's global generator and
    torch's generator of that device.
    """

    def __init__(self, scale: int, options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.scale = int(scale)
        self.opt = _resolved(options, DEGRADATION_DEFAULTS)
        self.jpeger = DiffJPEG(differentiable=False)

    def _resize(self, x: torch.Tensor, suffix: str, size_of: tuple[int, int] | None = None) -> torch.Tensor:
        """Random up/down/keep factor; relative to the current size, or to ``size_of`` when given."""
        direction = random.choices(["up", "down", "keep"], self.opt[f"resize_prob{suffix}"])[0]
        low, high = self.opt[f"resize_range{suffix}"]
        factor = {"up": lambda: np.random.uniform(1, high), "down": lambda: np.random.uniform(low, 1)}.get(
            direction, lambda: 1.0
        )()
        mode = random.choice(_RESIZE_MODES)
        if size_of is None:
            return F.interpolate(x, scale_factor=factor, mode=mode)
        h, w = size_of
        return F.interpolate(x, size=(int(h / self.scale * factor), int(w / self.scale * factor)), mode=mode)

    def _noise(self, x: torch.Tensor, suffix: str) -> torch.Tensor:
        gray = self.opt[f"gray_noise_prob{suffix}"]
        if np.random.uniform() < self.opt[f"gaussian_noise_prob{suffix}"]:
            return random_add_gaussian_noise_pt(
                x, sigma_range=self.opt[f"noise_range{suffix}"], clip=True, rounds=False, gray_prob=gray
            )
        return random_add_poisson_noise_pt(
            x, scale_range=self.opt[f"poisson_scale_range{suffix}"], gray_prob=gray, clip=True, rounds=False
        )

    def _jpeg(self, x: torch.Tensor, suffix: str) -> torch.Tensor:
        quality = x.new_zeros(x.size(0)).uniform_(*self.opt[f"jpeg_range{suffix}"])
        return self.jpeger(torch.clamp(x, 0, 1), quality=quality)

    def _to_target_size(self, x: torch.Tensor, size_of: tuple[int, int], sinc: torch.Tensor) -> torch.Tensor:
        h, w = size_of
        x = F.interpolate(x, size=(h // self.scale, w // self.scale), mode=random.choice(_RESIZE_MODES))
        return _filter(x, sinc)

    @torch.no_grad()
    def forward(
        self, hr: torch.Tensor, kernel1: torch.Tensor, kernel2: torch.Tensor, sinc_kernel: torch.Tensor
    ) -> torch.Tensor:
        size = tuple(hr.shape[-2:])
        out = _filter(hr, kernel1)
        out = self._resize(out, "")
        out = self._jpeg(self._noise(out, ""), "")

        if np.random.uniform() < self.opt["second_blur_prob"]:
            out = _filter(out, kernel2)
        out = self._resize(out, "2", size_of=size)
        out = self._noise(out, "2")
        if np.random.uniform() < 0.5:
            out = self._jpeg(self._to_target_size(out, size, sinc_kernel), "2")
        else:
            out = self._to_target_size(self._jpeg(out, "2"), size, sinc_kernel)
        return torch.clamp((out * 255.0).round(), 0, 255) / 255.0


class SeparableUSMSharp(USMSharp):
    """BasicSR's ``USMSharp`` (same kernel buffer, same formula) with its Gaussian blur done as two 1-D
    passes.

    USM: ``blur = G * img``; ``mask = |img - blur| * 255 > threshold``, blurred the same way;
    ``out = mask * clip(img + weight * (img - blur)) + (1 - mask) * img``. BasicSR convolves with the
    full 51 x 51 kernel: about 12 s on one CPU thread for a batch of eight 256-pixel crops. The kernel
    is the outer product of one 1-D Gaussian, so two 1-D passes over the same reflect-padded image
    give the same blur up to float rounding, in under 2 s (the mask's threshold can flip for a pixel
    within rounding of it; outputs agree within 1e-3, tested).
    """

    def __init__(self, radius: int = 50, sigma: float = 0) -> None:
        super().__init__(radius, sigma)
        # Row sums of outer(g, g) are g * sum(g) = g (OpenCV's Gaussian kernel sums to 1).
        self.register_buffer("kernel_1d", self.kernel[0].sum(dim=1).clone(), persistent=False)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        r = self.radius // 2
        x = F.pad(x.contiguous(), (r, r, r, r), mode="reflect").reshape(b * c, 1, h + 2 * r, w + 2 * r)
        x = F.conv2d(x, self.kernel_1d.view(1, 1, -1, 1))
        x = F.conv2d(x, self.kernel_1d.view(1, 1, 1, -1))
        return x.reshape(b, c, h, w)

    def forward(self, img: torch.Tensor, weight: float = 0.5, threshold: float = 10) -> torch.Tensor:
        residual = img - self._blur(img)
        soft_mask = self._blur((residual.abs() * 255 > threshold).to(img.dtype))
        sharp = torch.clamp(img + weight * residual, 0, 1)
        return soft_mask * sharp + (1 - soft_mask) * img


def degrade_with_seed(
    hr: torch.Tensor,
    seed: int,
    scale: int = 4,
    degradation: Mapping[str, Any] | None = None,
    kernels: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The low-quality version of ``hr`` (``(3, H, W)`` or ``(1, 3, H, W)``, [0, 1], H and W multiples of
    ``scale``) that ``seed`` determines: kernels drawn as :class:`KernelSampler` does, then
    :class:`SecondOrderDegradation`. The global random states are left as they were. Returns a CPU
    tensor of the input's rank, values on the 8-bit grid.
    """
    single = hr.dim() == 3
    batch = hr[None] if single else hr
    if batch.shape[-2] % scale or batch.shape[-1] % scale:
        raise ValueError(f"HR size {tuple(batch.shape[-2:])} is not a multiple of the scale {scale}")
    device = torch.device(device) if device is not None else batch.device
    degrade = SecondOrderDegradation(scale, degradation).to(device)
    sampler = KernelSampler(kernels)
    with seeded(seed, device):
        drawn = [sampler.sample() for _ in range(batch.size(0))]
        stacked = {k: torch.stack([d[k] for d in drawn]).to(device) for k in drawn[0]}
        lq = degrade(batch.float().to(device), **stacked).cpu()
    return lq[0] if single else lq


# ---------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------


def _read_rgb(path: Path) -> np.ndarray:
    pixels = rio.read_image(path).pixels
    return pixels if pixels.shape[2] == 3 else np.repeat(pixels, 3, axis=2)


def _image_paths(opt: Mapping[str, Any]) -> list[Path]:
    backend = (opt.get("io_backend") or {}).get("type", "disk")
    if backend != "disk":
        raise ValueError(
            f"io_backend {backend!r} is not supported here; use a folder, or BasicSR's own "
            "RealESRGANDataset_basicsr for LMDB"
        )
    roots = opt["dataroot_gt"]
    roots = [roots] if isinstance(roots, str) else list(roots)
    if opt.get("meta_info"):
        lines = Path(opt["meta_info"]).read_text(encoding="utf-8").splitlines()
        paths = [Path(roots[0]) / line.split(" ")[0] for line in lines if line.strip()]
    else:
        paths, _ = rio.collect_images(roots, recursive=bool(opt.get("recursive", False)))
    if not paths:
        raise ValueError(f"No images found in {', '.join(map(str, roots))}")
    return paths


@DATASET_REGISTRY.register()
class RealSRDataset(data.Dataset):
    """HR photos -> ``{'gt', 'kernel1', 'kernel2', 'sinc_kernel', 'gt_path'}`` (Real-ESRGAN's items).

    Options: ``dataroot_gt`` (folder or list; with ``meta_info``, a file of paths relative to the
    first), ``use_hflip`` (default true), ``use_rot`` (default false, as the official files set),
    ``crop_pad_size`` (default 400 as upstream: each photo is
    randomly cropped, or reflect-padded at the bottom and right, to this square before the model
    degrades it and crops ``gt_size`` from the result; a multiple of the scale), ``cache_images``
    (keep decoded photos in memory), ``recursive``, and the kernel options of :data:`KERNEL_DEFAULTS`.
    Tensors are RGB ``(3, h, w)`` in [0, 1]. ``io_backend`` other than disk is refused (LMDB:
    BasicSR's ``RealESRGANDataset_basicsr``); ``meta_info_file`` (official HAT YAMLs) is ignored, as
    the HAT repository's dataset ignores it.
    """

    def __init__(self, opt: dict) -> None:
        super().__init__()
        self.opt = opt
        self.paths = _image_paths(opt)
        self.kernels = KernelSampler(opt)
        self.crop_pad_size = int(opt.get("crop_pad_size", 400))
        scale = int(opt.get("scale", 1))
        if self.crop_pad_size % scale:
            raise ValueError(f"crop_pad_size {self.crop_pad_size} is not a multiple of the scale {scale}")
        # The first resize may shrink the crop to resize_range[0] of it; the second blur's reflect
        # padding (half a kernel) needs more pixels than that. 0.15 * 80 = 12 > 10.
        if self.crop_pad_size < 80:
            raise ValueError(f"crop_pad_size must be at least 80, got {self.crop_pad_size}")
        self._cache: dict[int, np.ndarray] | None = {} if opt.get("cache_images", False) else None

    def __len__(self) -> int:
        return len(self.paths)

    def _photo(self, index: int) -> np.ndarray:
        photo = self._cache.get(index) if self._cache is not None else None
        if photo is None:
            photo = _read_rgb(self.paths[index])
            if self._cache is not None:
                self._cache[index] = photo
        return photo

    def __getitem__(self, index: int) -> dict:
        hr = augment(self._photo(index), self.opt.get("use_hflip", True), self.opt.get("use_rot", False))
        size = self.crop_pad_size
        h, w = hr.shape[:2]
        if h < size or w < size:
            hr = np.pad(hr, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="reflect")
            h, w = hr.shape[:2]
        top, left = random.randint(0, h - size), random.randint(0, w - size)
        hr = np.ascontiguousarray(hr[top : top + size, left : left + size])
        gt = img2tensor([hr], bgr2rgb=False, float32=True)[0]
        return {"gt": gt, **self.kernels.sample(), "gt_path": str(self.paths[index])}


if "RealESRGANDataset" not in DATASET_REGISTRY:
    DATASET_REGISTRY.register()(
        type(
            "RealESRGANDataset",
            (RealSRDataset,),
            {"__doc__": "RealSRDataset under Real-ESRGAN's name (BasicSR's is RealESRGANDataset_basicsr)."},
        )
    )


@DATASET_REGISTRY.register()
class RealSRValDataset(data.Dataset):
    """HR photos -> ``{'lq', 'gt', 'lq_path', 'gt_path'}`` with ``lq`` from :func:`degrade_with_seed`.

    Options: ``dataroot_gt``, ``scale``, ``seed`` (default 0; each image's seed is
    :func:`image_seed` of it and the file name), ``crop_size`` (optional centre crop of the HR photo;
    else the whole photo, mod-cropped to the scale), ``degradation`` (overrides of
    :data:`DEGRADATION_DEFAULTS`) and the kernel options of :data:`KERNEL_DEFAULTS`. Pairs are made
    on the CPU once per process and kept. ``weights/eval_real_sr.py`` writes the same pairs to disk.
    """

    def __init__(self, opt: dict) -> None:
        super().__init__()
        self.opt = opt
        self.scale = int(opt["scale"])
        self.paths = _image_paths(opt)
        self.seed = int(opt.get("seed", 0))
        self._pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index not in self._pairs:
            path = self.paths[index]
            hr = hr_crop(_read_rgb(path), self.scale, self.opt.get("crop_size"))
            gt = img2tensor([hr], bgr2rgb=False, float32=True)[0]
            lq = degrade_with_seed(
                gt,
                image_seed(self.seed, path.name),
                self.scale,
                self.opt.get("degradation"),
                self.opt,
                device="cpu",
            )
            self._pairs[index] = (lq, gt)
        return self._pairs[index]

    def __getitem__(self, index: int) -> dict:
        lq, gt = self.pair(index)
        path = str(self.paths[index])
        return {"lq": lq, "gt": gt, "lq_path": path, "gt_path": path}


def hr_crop(hr: np.ndarray, scale: int, crop_size: int | None = None) -> np.ndarray:
    """The centre ``crop_size`` square of ``hr`` (when given and smaller), mod-cropped to ``scale``."""
    if crop_size:
        size = int(crop_size)
        h, w = hr.shape[:2]
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        hr = hr[top : top + size, left : left + size]
    return np.ascontiguousarray(mod_crop(hr, scale))


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------


class TrainingPairPool:
    """Real-ESRGAN's training-pair pool ("queue"), on the device of the tensors it is given.

    A batch shares one resize factor and mode, so batches are mixed: the first ``size / B`` batches
    only fill the pool (and train as they are); from then on each batch goes into the pool and a
    random ``B`` of the pool's pairs come out. ``size`` must be a multiple of the batch size; 0
    disables the pool. Not part of the training state: a resumed run refills it.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.lq: torch.Tensor | None = None
        self.gt: torch.Tensor | None = None
        self.filled = 0

    @torch.no_grad()
    def exchange(self, lq: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size <= 0:
            return lq, gt
        b = lq.size(0)
        if self.lq is None or self.gt is None:
            if self.size % b:
                raise ValueError(f"queue_size {self.size} is not a multiple of the batch size {b}")
            self.lq = lq.new_zeros((self.size, *lq.shape[1:]))
            self.gt = gt.new_zeros((self.size, *gt.shape[1:]))
        if self.filled < self.size:
            self.lq[self.filled : self.filled + b] = lq
            self.gt[self.filled : self.filled + b] = gt
            self.filled += b
            return lq, gt
        order = torch.randperm(self.size, device=self.lq.device)
        self.lq, self.gt = self.lq[order], self.gt[order]
        out_lq, out_gt = self.lq[:b].clone(), self.gt[:b].clone()
        self.lq[:b] = lq
        self.gt[:b] = gt
        return out_lq, out_gt


@MODEL_REGISTRY.register()
class RealSRNetModel(RestorerSRModel):
    """PSNR-oriented real-world SR: second-order degradation on ``self.device`` + RestorerSRModel.

    Training items must be :class:`RealSRDataset`'s (``gt`` and the three kernels); with
    ``high_order_degradation: false`` it trains from LR/HR pairs like any SR model. Validation
    always uses the dataset's pairs as they are.
    """

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        self.degradation = SecondOrderDegradation(opt["scale"], opt).to(self.device)
        self.usm_sharpener = SeparableUSMSharp().to(self.device)
        self.pair_pool = TrainingPairPool(opt.get("queue_size", 180))

    # Hooks: which photo the input is made from, and what the losses compare against.
    def _target_and_source(self, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.opt.get("gt_usm", False):
            gt = self.usm_sharpener(gt)
        return gt, gt

    def _after_pool(self) -> None:
        pass

    def _feed_pair(self, data: dict) -> None:
        super().feed_data(data)

    def _gt_size(self) -> int:
        size = self.opt.get("gt_size") or self.opt["datasets"]["train"].get("gt_size")
        if not size:
            raise ValueError("real-world SR training needs gt_size (top level of the option file)")
        return int(size)

    @torch.no_grad()
    def feed_data(self, data: dict) -> None:
        if not (self.is_train and self.opt.get("high_order_degradation", True)):
            self._feed_pair(data)
            return
        missing = [k for k in ("gt", "kernel1", "kernel2", "sinc_kernel") if k not in data]
        if missing:
            raise ValueError(
                f"{type(self).__name__} makes its inputs from RealSRDataset items; these lack "
                f"{', '.join(missing)} (or set high_order_degradation: false to train from pairs)"
            )
        gt, source = self._target_and_source(data["gt"].to(self.device))
        kernels = [data[k].to(self.device) for k in ("kernel1", "kernel2", "sinc_kernel")]
        lq = self.degradation(source, *kernels)
        gt, lq = paired_random_crop(gt, lq, self._gt_size(), self.opt["scale"])
        lq, self.gt = self.pair_pool.exchange(lq, gt)
        self.lq = lq.contiguous()
        self._after_pool()

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        self.is_train = False  # validation pairs are used as they are
        try:
            super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            self.is_train = True


_VGG19_FILE = "vgg19-dcbb9e9d.pth"


@contextlib.contextmanager
def _vgg19_for_basicsr(perceptual_opt: Mapping[str, Any] | None) -> Iterator[None]:
    """Let BasicSR's ``PerceptualLoss`` find torchvision's VGG19 file without a download.

    BasicSR reads ``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` if it exists, else asks
    torchvision, which reads the torch hub cache or downloads. Where neither has it, a copy in
    restorer's weights folders is handed to BasicSR for the loss's construction; where there is none
    at all, a clear error instead of a failed download.
    """
    import basicsr.archs.vgg_arch as vgg_arch

    from restorer.metrics import hub_checkpoint_dir

    wants_vgg19 = perceptual_opt and perceptual_opt.get("vgg_type", "vgg19") == "vgg19"
    in_hub = (hub_checkpoint_dir() / _VGG19_FILE).is_file()
    if not wants_vgg19 or in_hub or os.path.exists(vgg_arch.VGG_PRETRAIN_PATH):
        yield
        return
    from restorer.weights import find_auxiliary

    found = find_auxiliary("vgg19")
    if found is None or found.suffix != ".pth":
        raise WeightsNotFoundError(
            f"The perceptual loss (train.perceptual_opt) needs torchvision's ImageNet VGG19 weights, "
            f"'{_VGG19_FILE}', and it is in none of {vgg_arch.VGG_PRETRAIN_PATH}, {hub_checkpoint_dir()}/ "
            "or restorer's weights folders. Run `restorer weights download vgg19` (it uses the network) "
            "or copy the file to one of them; or train without perceptual_opt."
        )
    saved = vgg_arch.VGG_PRETRAIN_PATH
    vgg_arch.VGG_PRETRAIN_PATH = str(found)
    try:
        yield
    finally:
        vgg_arch.VGG_PRETRAIN_PATH = saved


@MODEL_REGISTRY.register()
class RealSRGANModel(RealSRNetModel, SRGANModel):
    """GAN fine-tuning of real-world SR (Real-ESRGAN / Real-HAT-GAN stage 2), on any device.

    ``network_d`` (e.g. BasicSR's ``UNetDiscriminatorSN``), ``optim_d``, ``gan_opt``, ``net_d_iters``,
    ``net_d_init_iters`` as BasicSR's ``SRGANModel``; ``pixel_opt`` and ``perceptual_opt`` optional.
    The input is made from the USM-sharpened photo; ``l1_gt_usm``, ``percep_gt_usm``, ``gan_gt_usm``
    (default true) choose each loss's target. ``train.speed`` applies to the generator and
    ``grad_clip`` to its gradients; the discriminator runs in fp32. Checkpoints hold ``net_g`` (with
    ``params_ema``) and ``net_d``.
    """

    def init_training_settings(self) -> None:
        with _vgg19_for_basicsr(self.opt["train"].get("perceptual_opt")):
            SRGANModel.init_training_settings(self)

    def _target_and_source(self, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gt, self.usm_sharpener(gt)

    def _after_pool(self) -> None:
        self.gt_usm = self.usm_sharpener(self.gt)

    def _feed_pair(self, data: dict) -> None:
        super()._feed_pair(data)
        if "gt" in data:
            self.gt_usm = self.usm_sharpener(self.gt)

    def _target(self, loss: str) -> torch.Tensor:
        return self.gt_usm if self.opt.get(f"{loss}_gt_usm", True) else self.gt

    def optimize_parameters(self, current_iter: int) -> None:
        speed = self.speed
        losses: OrderedDict[str, torch.Tensor] = OrderedDict()

        self.net_d.requires_grad_(False)
        self.optimizer_g.zero_grad()
        with speed.autocast_context():
            output = self._net_g_call(speed.input(self.lq))
        self.output = output.float()
        if current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters:
            if self.cri_pix:
                losses["l_g_pix"] = self.cri_pix(self.output, self._target("l1"))
            if self.cri_perceptual:
                percep, style = self.cri_perceptual(self.output, self._target("percep"))
                if percep is not None:
                    losses["l_g_percep"] = percep
                if style is not None:
                    losses["l_g_style"] = style
            losses["l_g_gan"] = self.cri_gan(self.net_d(self.output), True, is_disc=False)
            sum(losses.values()).backward()
            max_norm = float(self.opt["train"].get("grad_clip") or 0)
            if max_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), max_norm)
            self.optimizer_g.step()

        self.net_d.requires_grad_(True)
        self.optimizer_d.zero_grad()
        real = self.net_d(self._target("gan"))
        losses["l_d_real"] = self.cri_gan(real, True, is_disc=True)
        losses["out_d_real"] = real.detach().mean()
        losses["l_d_real"].backward()
        fake = self.net_d(self.output.detach().clone())
        losses["l_d_fake"] = self.cri_gan(fake, False, is_disc=True)
        losses["out_d_fake"] = fake.detach().mean()
        losses["l_d_fake"].backward()
        self.optimizer_d.step()

        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        self.log_dict = self.reduce_loss_dict(losses)


_ALIASES = {
    RealSRNetModel: ("RealESRNetModel", "RealHATMSEModel", "RealDRCTMSEModel"),
    RealSRGANModel: ("RealESRGANModel", "RealHATGANModel", "RealDRCTGANModel"),
}
for _base, _names in _ALIASES.items():
    for _alias in _names:
        if _alias not in MODEL_REGISTRY:
            MODEL_REGISTRY.register()(
                type(_alias, (_base,), {"__doc__": f"Alias of {_base.__name__} ({_alias})."})
            )
