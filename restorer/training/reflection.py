"""Reflection removal on BasicSR's training pipeline: synthetic pairs, the UHDRR loader, the RRFormer
recipe's losses, ERRNet's VGG-style discriminator and the model class.

Registered here (import this module, or :func:`restorer.training.register_all`):

- datasets (``DATASET_REGISTRY``): :class:`SyntheticReflectionDataset` (blended images made on the fly
  from any folder of clean photos) and :class:`UHDRRDataset` (the UHDRR4K / UHDRR8K layout);
- losses (``LOSS_REGISTRY``): :class:`ReflectionPixelLoss` (0.2 MSE + 0.4 gradient L1) and
  :class:`ReflectionVGGLoss` (ERRNet's weighted VGG19 feature L1);
- architecture (``ARCH_REGISTRY``): :class:`DiscriminatorVGG` (ERRNet's ``disc_vgg``);
- model (``MODEL_REGISTRY``): :class:`RRFormerModel`.

The recipe (ERRNet's defaults, which the RRFormer code keeps): ``L_G = pixel + 0.1 VGG + lambda_gan
G_RaSGAN`` with ``lambda_gan = 0`` for the first 20 epochs and 0.01 after; the discriminator's RaSGAN
loss is scaled by the same ``lambda_gan`` and is not trained while it is 0; Adam (0.9, 0.999), lr 2e-4,
constant, for G and D. BasicSR counts iterations, not epochs: ``train.gan_opt.start_iter`` is the
iteration after which the GAN terms switch on (20 epochs = ``20 * len(train set) / batch``).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils import data

from restorer._compat import ensure_basicsr_importable

ensure_basicsr_importable()

from basicsr.utils import img2tensor  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY  # noqa: E402

from restorer import io as rio  # noqa: E402
from restorer.archs.rrformer_arch import VGG19_LAYERS, VGG19Features, build_vgg19_features  # noqa: E402
from restorer.training.models import RestorerSRModel  # noqa: E402
from restorer.training.reflection_synthesis import (  # noqa: E402
    PHYSICAL_DEFAULTS,
    SYNTHESIS_MODELS,
    blur_reflection_synthesis,
    physical_reflection_synthesis,
    self_reflection_pair,
    vignette_kernel,
    vignette_reflection_synthesis,
)

__all__ = [
    "DiscriminatorVGG",
    "PerImagePSNRLoss",
    "ReflectionPixelLoss",
    "ReflectionVGGLoss",
    "RRFormerModel",
    "SYNTHESIS_MODELS",
    "SyntheticReflectionDataset",
    "UHDRRDataset",
    "blur_reflection_synthesis",
    "evaluate_against_input",
    "physical_reflection_synthesis",
    "gradient_l1",
    "rasgan_discriminator_loss",
    "rasgan_generator_loss",
    "self_reflection_pair",
    "vignette_kernel",
    "vignette_reflection_synthesis",
]

Array = np.ndarray

# ------------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------------


def _rgb(pixels: Array) -> Array:
    return pixels if pixels.shape[2] == 3 else np.repeat(pixels, 3, axis=2)


def _fit(image: Array, height: int, width: int, rng: np.random.Generator) -> Array:
    """A random ``height x width`` window of ``image``, enlarged first (bicubic) when it is smaller."""
    h, w = image.shape[:2]
    if h < height or w < width:
        factor = max(height / h, width / w)
        image = cv2.resize(
            image, (math.ceil(w * factor), math.ceil(h * factor)), interpolation=cv2.INTER_CUBIC
        ).clip(0, 1)
        h, w = image.shape[:2]
    top = int(rng.integers(0, h - height + 1))
    left = int(rng.integers(0, w - width + 1))
    return image[top : top + height, left : left + width]


def _paths(roots: str | Sequence[str], recursive: bool) -> list[Path]:
    roots = [roots] if isinstance(roots, str) else list(roots)
    paths, _ = rio.collect_images(roots, recursive=recursive)
    if not paths:
        raise ValueError(f"No images found in {', '.join(map(str, roots))}")
    return paths


@DATASET_REGISTRY.register()
class SyntheticReflectionDataset(data.Dataset):
    """Clean photos -> ``{'lq': blended, 'gt': transmission, 'reflection', 'lq_path', 'gt_path'}``.

    Each sample takes a transmission layer from ``dataroot_gt`` and a reflection layer from another
    photo (``dataroot_reflection``, default the same folders) and blends them with one of
    :data:`SYNTHESIS_MODELS`. Tensors are RGB ``(3, h, w)`` in ``[0, 1]``.

    Options (BasicSR style):
        dataroot_gt: folder (or list) of clean photos. ``dataroot_reflection``: reflection photos.
        synthesis: ``'blur'``, ``'vignette'``, ``'physical'`` or ``'mixed'`` (default: blur or vignette,
            ``vignette_prob``, default 0.5).
        sigma_range, gamma_range, kernel_size: the blur model's options (defaults 2..5, 1.3, 11).
        The physical model's options are the keys of
            :data:`~restorer.training.reflection_synthesis.PHYSICAL_DEFAULTS` (``none_prob``, ...).
        phase: ``'train'``: random ``gt_size`` crops of both layers, ``use_hflip`` (default true) and
            ``use_rot`` (default false), fresh random synthesis per sample. Otherwise (validation /
            test): the whole transmission photo, ``pairs_per_image`` (default 1) deterministic pairs per
            photo, seeded by ``seed`` (default 0) and the pair index, reflections from other photos.
        cache_images: keep decoded photos in memory (small sets). recursive: read sub-folders.
    """

    def __init__(self, opt: dict) -> None:
        super().__init__()
        self.opt = opt
        recursive = bool(opt.get("recursive", False))
        self.paths = _paths(opt["dataroot_gt"], recursive)
        reflection_roots = opt.get("dataroot_reflection")
        self.reflection_paths = _paths(reflection_roots, recursive) if reflection_roots else self.paths
        self.train = opt.get("phase") == "train"
        self.synthesis = opt.get("synthesis", "mixed")
        if self.synthesis not in (*SYNTHESIS_MODELS, "mixed"):
            raise ValueError(
                f"synthesis {self.synthesis!r} is not one of {', '.join(SYNTHESIS_MODELS)}, mixed"
            )
        self.pairs_per_image = 1 if self.train else int(opt.get("pairs_per_image", 1))
        self._cache: dict[Path, Array] | None = {} if opt.get("cache_images", False) else None

    def __len__(self) -> int:
        return len(self.paths) * self.pairs_per_image

    def _read(self, path: Path) -> Array:
        image = self._cache.get(path) if self._cache is not None else None
        if image is None:
            image = _rgb(rio.read_image(path).pixels)
            if self._cache is not None:
                self._cache[path] = image
        return image

    def _model(self, rng: np.random.Generator) -> str:
        if self.synthesis != "mixed":
            return self.synthesis
        return "vignette" if rng.random() < float(self.opt.get("vignette_prob", 0.5)) else "blur"

    def _reflection_path(self, t_path: Path, rng: np.random.Generator) -> Path:
        others = [p for p in self.reflection_paths if p != t_path] or self.reflection_paths
        return others[int(rng.integers(0, len(others)))]

    def __getitem__(self, index: int) -> dict:
        t_index, pair = divmod(index, self.pairs_per_image)
        t_path = self.paths[t_index]
        if self.train:
            # Seeded from NumPy's global state, which BasicSR seeds per run and per loader worker.
            rng = np.random.default_rng(np.random.randint(0, 2**31 - 1, size=2))
        else:
            rng = np.random.default_rng([int(self.opt.get("seed", 0)), index])
        transmission = self._read(t_path)
        reflection = self._read(self._reflection_path(t_path, rng))
        if self.train:
            size = int(self.opt["gt_size"])
            transmission = _fit(transmission, size, size, rng)
            reflection = _fit(reflection, size, size, rng)
            if self.opt.get("use_hflip", True) and rng.random() < 0.5:
                transmission = transmission[:, ::-1]
            if self.opt.get("use_rot", False) and rng.random() < 0.5:
                transmission = transmission.transpose(1, 0, 2)
                reflection = reflection.transpose(1, 0, 2)
            if rng.random() < 0.5:  # reflections are seen mirrored through glass as often as not
                reflection = reflection[:, ::-1]
        else:
            reflection = _fit(reflection, *transmission.shape[:2], rng)
        transmission = np.ascontiguousarray(transmission, dtype=np.float32)
        reflection = np.ascontiguousarray(reflection, dtype=np.float32)
        model = self._model(rng)
        if model == "blur":
            kwargs = {
                "kernel_size": int(self.opt.get("kernel_size", 11)),
                "sigma_range": tuple(self.opt.get("sigma_range", (2.0, 5.0))),
                "gamma_range": tuple(self.opt.get("gamma_range", (1.3, 1.3))),
            }
        elif model == "physical":
            kwargs = {
                key: tuple(self.opt[key]) if isinstance(default, tuple) else float(self.opt[key])
                for key, default in PHYSICAL_DEFAULTS.items()
                if key in self.opt
            }
        else:
            kwargs = {}
        t, r, m = SYNTHESIS_MODELS[model](transmission, reflection, rng, **kwargs)
        gt, lq, refl = img2tensor([t, m, r], bgr2rgb=False, float32=True)
        name = (
            t_path
            if self.pairs_per_image == 1
            else t_path.with_name(f"{t_path.stem}_pair{pair}{t_path.suffix}")
        )
        return {"lq": lq, "gt": gt, "reflection": refl, "lq_path": str(name), "gt_path": str(t_path)}


@DATASET_REGISTRY.register()
class UHDRRDataset(data.Dataset):
    """The UHDRR4K / UHDRR8K layout -> ``{'lq': blended, 'gt': transmission, 'reflection', 'alpha', ...}``.

    ``<dataroot>/{transmission_layer, reflection_mask_layer, blended}/`` plus
    ``<dataroot>/<uhd>_<phase>_results_list.json``: a list of records with keys ``transmission_layer``,
    ``reflection_layer`` (a file in ``reflection_mask_layer/``), ``blended`` and ``alpha``. With
    ``cropped: true`` everything is read from ``<dataroot>/cropped/`` and the list is
    ``<uhd>_test_crop_results_list.json`` (the 8K test set cut into four 4K crops; metrics are averaged
    over crops).

    Options: ``dataroot``, ``uhd`` (``'4k'`` or ``'8k'``), ``phase`` (``'train'`` or ``'test'``; BasicSR's
    ``'val'`` reads the test list), ``list_file`` (overrides the JSON name), ``cropped``, ``gt_size``
    (training crop, default 256, the public code's), ``use_hflip`` (default false, as public),
    ``max_dataset_size``. Training samples one aligned random crop of the full-resolution images; other
    phases return whole images.
    """

    LAYERS = ("transmission_layer", "reflection_mask_layer", "blended")

    def __init__(self, opt: dict) -> None:
        super().__init__()
        self.opt = opt
        root = Path(opt["dataroot"])
        self.train = opt.get("phase") == "train"
        uhd = str(opt.get("uhd", "4k")).lower()
        if opt.get("cropped", False):
            root = root / "cropped"
            default_list = f"{uhd}_test_crop_results_list.json"
        else:
            default_list = f"{uhd}_{'train' if self.train else 'test'}_results_list.json"
        list_file = root / opt.get("list_file", default_list)
        if not list_file.is_file():
            raise FileNotFoundError(
                f"UHDRR list {list_file} not found: expected {root}/ with {', '.join(self.LAYERS)}/ and "
                f"{default_list} (the UHDRR4K/8K release layout)"
            )
        records = json.loads(list_file.read_text(encoding="utf-8"))
        needed = {"transmission_layer", "reflection_layer", "blended"}
        for i, record in enumerate(records):
            if not needed <= set(record):
                raise ValueError(f"{list_file} record {i} lacks {sorted(needed - set(record))}")
        limit = opt.get("max_dataset_size")
        self.records = records[: int(limit)] if limit else records
        self.root = root

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        t_path = self.root / "transmission_layer" / record["transmission_layer"]
        r_path = self.root / "reflection_mask_layer" / record["reflection_layer"]
        m_path = self.root / "blended" / record["blended"]
        t, r, m = (_rgb(rio.read_image(p).pixels) for p in (t_path, r_path, m_path))
        if self.train:
            size = int(self.opt.get("gt_size", 256))
            h, w = t.shape[:2]
            if h < size or w < size:
                raise ValueError(f"{t_path} ({w}x{h}) is smaller than gt_size {size}")
            top, left = np.random.randint(0, h - size + 1), np.random.randint(0, w - size + 1)
            t, r, m = (a[top : top + size, left : left + size] for a in (t, r, m))
            if self.opt.get("use_hflip", False) and np.random.rand() < 0.5:
                t, r, m = (a[:, ::-1] for a in (t, r, m))
        gt, lq, refl = img2tensor([np.ascontiguousarray(a) for a in (t, m, r)], bgr2rgb=False, float32=True)
        alpha = float(record.get("alpha", float("nan")))
        return {
            "lq": lq,
            "gt": gt,
            "reflection": refl,
            "alpha": alpha,
            "lq_path": str(m_path),
            "gt_path": str(t_path),
        }


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------


def gradient_l1(pred: Tensor, target: Tensor) -> Tensor:
    """ERRNet's ``GradientLoss``: L1 of the vertical differences + L1 of the horizontal ones."""
    dy = F.l1_loss(pred[..., 1:, :] - pred[..., :-1, :], target[..., 1:, :] - target[..., :-1, :])
    dx = F.l1_loss(pred[..., 1:] - pred[..., :-1], target[..., 1:] - target[..., :-1])
    return dy + dx


@LOSS_REGISTRY.register()
class ReflectionPixelLoss(nn.Module):
    """``loss_weight * (mse_weight * MSE + gradient_weight * gradient L1)`` (ERRNet: 0.2 and 0.4)."""

    def __init__(
        self, loss_weight: float = 1.0, mse_weight: float = 0.2, gradient_weight: float = 0.4
    ) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.mse_weight = mse_weight
        self.gradient_weight = gradient_weight

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        loss = self.mse_weight * F.mse_loss(pred, target) + self.gradient_weight * gradient_l1(pred, target)
        return self.loss_weight * loss


@LOSS_REGISTRY.register()
class PerImagePSNRLoss(nn.Module):
    """``loss_weight * mean_i log10(MSE_i + eps)``: minus each image's PSNR / 10, averaged over the batch.

    A batch-mean pixel loss is ruled by the pairs with strong reflections (their errors are largest), so a
    model learns to remove an average reflection and spoils the weak ones; the benchmark averages PSNR per
    image, where a small change to a nearly clean photo costs as many dB as a large one to a strong blend.
    This loss weighs every image as that average does. ``eps`` (default a quarter of a squared 8-bit
    level, about 54 dB) bounds the gradient of a pair that is already exact (a pair with no reflection).
    ``pred`` / ``target``: ``(B, C, H, W)``.
    """

    def __init__(self, loss_weight: float = 1.0, eps: float = (0.5 / 255) ** 2) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        mse = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        return self.loss_weight * torch.log10(mse + self.eps).mean()


#: ERRNet's VGG loss layers and weights: relu1_1 .. relu5_1, ``[1/2.6, 1/4.8, 1/3.7, 1/5.6, 10/1.5]``.
VGG_LOSS_WEIGHTS = {
    "relu1_1": 1 / 2.6,
    "relu2_1": 1 / 4.8,
    "relu3_1": 1 / 3.7,
    "relu4_1": 1 / 5.6,
    "relu5_1": 10 / 1.5,
}


@LOSS_REGISTRY.register()
class ReflectionVGGLoss(nn.Module):
    """ERRNet's ``VGGLoss``: ``loss_weight * sum_l w_l * L1(phi_l(pred), phi_l(target).detach())``.

    ``phi`` is the frozen VGG19 with ImageNet mean/std normalisation (applied for this loss only; the
    hypercolumn uses raw input). ``vgg``: an existing :class:`VGG19Features` reaching the deepest layer
    (RRFormerModel shares the generator's); otherwise one is built from ``vgg_weights`` (``None`` =
    torchvision's ImageNet file, ``'random'``, a path) and ``vgg_seed``.
    """

    def __init__(
        self,
        loss_weight: float = 0.1,
        layer_weights: Mapping[str, float] | None = None,
        vgg_weights: Any = None,
        vgg_seed: int = 0,
        normalize: bool = True,
        vgg: VGG19Features | None = None,
    ) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        weights = dict(layer_weights or VGG_LOSS_WEIGHTS)
        self.layers = sorted(weights, key=lambda n: VGG19_LAYERS[n][0])
        self.layer_weights = [float(weights[n]) for n in self.layers]
        self.indices = [VGG19_LAYERS[n][0] for n in self.layers]
        if vgg is None or len(vgg.features) <= max(self.indices):
            vgg = build_vgg19_features(vgg_weights, self.layers[-1], vgg_seed)
        self.vgg = vgg
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.normalize:
            pred = (pred - self.mean) / self.std
            target = (target - self.mean) / self.std
        pred_feats = self.vgg(pred, self.indices)
        with torch.no_grad():
            target_feats = self.vgg(target, self.indices)
        loss = sum(
            w * F.l1_loss(p, t) for w, p, t in zip(self.layer_weights, pred_feats, target_feats, strict=True)
        )
        return self.loss_weight * loss


def rasgan_discriminator_loss(pred_real: Tensor, pred_fake: Tensor) -> Tensor:
    """Relativistic average GAN (ERRNet's ``DiscLossRa``), discriminator side, BCE with logits:
    ``0.5 * [BCE(D(T) - mean D(T_hat), 1) + BCE(D(T_hat) - mean D(T), 0)]`` (means over the batch)."""
    real = pred_real - pred_fake.mean(dim=0, keepdim=True)
    fake = pred_fake - pred_real.mean(dim=0, keepdim=True)
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    )


def rasgan_generator_loss(pred_real: Tensor, pred_fake: Tensor) -> Tensor:
    """The generator side of :func:`rasgan_discriminator_loss`: the labels swapped."""
    real = pred_real - pred_fake.mean(dim=0, keepdim=True)
    fake = pred_fake - pred_real.mean(dim=0, keepdim=True)
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real, torch.zeros_like(real))
        + F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    )


# ------------------------------------------------------------------------------------------------
# Discriminator
# ------------------------------------------------------------------------------------------------


@ARCH_REGISTRY.register()
class DiscriminatorVGG(nn.Module):
    """ERRNet's ``Discriminator_VGG`` (``disc_vgg``): unconditional, one logit per image.

    ``body``: 3x3 convs ``in -> 64`` (LeakyReLU 0.2), then ``64 s2, 128, 128 s2, 256, 256 s2, 512, 512 s2,
    512, 512 s2``, each followed by GroupNorm(32) and LeakyReLU 0.2; ``tail``: global average pool, 1x1
    ``512 -> 1024``, LeakyReLU 0.2, 1x1 ``1024 -> 1`` (no sigmoid). Keys ``body.<i>`` / ``tail.<i>`` as in
    ERRNet, so its ``netD`` state dicts load. Kaiming-normal (fan_in) conv weights, as ERRNet initialises it.

    Shapes: ``(B, in_channels, H, W) -> (B, 1, 1, 1)``, any ``H, W >= 1``.
    """

    def __init__(self, in_channels: int = 3, num_groups: int = 32) -> None:
        super().__init__()
        body: list[nn.Module] = [nn.Conv2d(in_channels, 64, 3, padding=1), nn.LeakyReLU(0.2)]
        plan = ((64, 64, 2), (64, 128, 1), (128, 128, 2), (128, 256, 1), (256, 256, 2), (256, 512, 1))
        plan += ((512, 512, 2), (512, 512, 1), (512, 512, 2))
        for c_in, c_out, stride in plan:
            body += [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(num_groups, c_out), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*body)
        self.tail = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(512, 1024, 1), nn.LeakyReLU(0.2), nn.Conv2d(1024, 1, 1)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(self.body(x))


# ------------------------------------------------------------------------------------------------
# Model class
# ------------------------------------------------------------------------------------------------


@MODEL_REGISTRY.register()
class RRFormerModel(RestorerSRModel):
    """Reflection removal with the RRFormer / ERRNet recipe on BasicSR's pipeline.

    ``train`` options (see ``options/train/RRFormer_*.yml``):

    - ``pixel_opt``: ``ReflectionPixelLoss`` (or any BasicSR pixel loss);
    - ``perceptual_opt``: ``ReflectionVGGLoss`` (``loss_weight`` 0.1). Without ``vgg_weights`` it uses the
      generator's own frozen VGG19 when that reaches relu5_1, else one built like the generator's
      (``network_g.vgg_weights`` / ``vgg_seed``);
    - ``gan_opt``: ``{type: RaSGAN, loss_weight: 0.01, start_iter: N}``: relativistic average GAN with
      ``network_d`` (default ``DiscriminatorVGG``) for iterations ``> start_iter``; the discriminator loss
      is scaled by ``loss_weight`` too (``scale_d_loss``, default true, as ERRNet) and the discriminator is
      not trained before ``start_iter``; ``optim_d`` as ``optim_g``;
    - ``optim_g`` / ``optim_d``: Adam (0.9, 0.999), lr 2e-4 in the recipe; ``scheduler``; ``ema_decay``
      (0 in the recipe); ``grad_clip``.

    Checkpoints: ``net_g_*.pth`` (``params`` [+ ``params_ema``]: the public layout, no VGG) and, with
    ``gan_opt``, ``net_d_*.pth``. Validation is SRModel's (BasicSR metrics on the whole image).
    """

    def init_training_settings(self) -> None:
        train_opt = self.opt["train"]
        self.net_g.train()
        self.ema_decay = train_opt.get("ema_decay", 0)
        if self.ema_decay > 0:
            from basicsr.archs import build_network

            self.net_g_ema = build_network(self.opt["network_g"]).to(self.device)
            load_path = self.opt["path"].get("pretrain_network_g", None)
            if load_path is not None:
                self.load_network(
                    self.net_g_ema, load_path, self.opt["path"].get("strict_load_g", True), "params_ema"
                )
            else:
                self.model_ema(0)
            self.net_g_ema.eval()

        self.cri_pix = self._pixel_loss(train_opt.get("pixel_opt"))
        self.cri_perceptual = self._vgg_loss(train_opt.get("perceptual_opt"))
        if self.cri_pix is None and self.cri_perceptual is None:
            raise ValueError("RRFormerModel needs pixel_opt and/or perceptual_opt")

        gan_opt = dict(train_opt.get("gan_opt") or {})
        self.gan_weight = float(gan_opt.get("loss_weight", 0.0))
        self.gan_start_iter = int(gan_opt.get("start_iter", 0))
        self.scale_d_loss = bool(gan_opt.get("scale_d_loss", True))
        self.net_d = None
        if gan_opt:
            if gan_opt.get("type", "RaSGAN") != "RaSGAN":
                raise ValueError(f"gan_opt.type {gan_opt['type']!r}: only RaSGAN (ERRNet's) is implemented")
            from basicsr.archs import build_network

            self.net_d = self.model_to_device(
                build_network(self.opt.get("network_d") or {"type": "DiscriminatorVGG"})
            )
            self.print_network(self.net_d)
            load_path = self.opt["path"].get("pretrain_network_d", None)
            if load_path is not None:
                param_key = self.opt["path"].get("param_key_d", "params")
                self.load_network(
                    self.net_d, load_path, self.opt["path"].get("strict_load_d", True), param_key
                )
            self.net_d.train()
        self.setup_optimizers()
        self.setup_schedulers()

    def _pixel_loss(self, opt: Mapping | None) -> nn.Module | None:
        if not opt:
            return None
        from basicsr.losses import build_loss

        return build_loss(dict(opt)).to(self.device)

    def _vgg_loss(self, opt: Mapping | None) -> nn.Module | None:
        if not opt:
            return None
        opt = dict(opt)
        loss_type = opt.pop("type", "ReflectionVGGLoss")
        if loss_type != "ReflectionVGGLoss":
            from basicsr.losses import build_loss

            return build_loss({"type": loss_type, **opt}).to(self.device)
        net = self.get_bare_model(self.net_g)
        if "vgg_weights" not in opt:
            shared = getattr(net, "vgg19", None)
            if shared is not None:
                opt["vgg"] = shared
            network_opt = self.opt["network_g"]
            opt["vgg_weights"] = network_opt.get("vgg_weights")
            opt.setdefault("vgg_seed", network_opt.get("vgg_seed", 0))
        return ReflectionVGGLoss(**opt).to(self.device)

    def setup_optimizers(self) -> None:
        # SRModel.setup_optimizers pops optim_g's type in place: copy it first for the default optim_d.
        optim_opt = dict(self.opt["train"].get("optim_d") or self.opt["train"]["optim_g"])
        super().setup_optimizers()
        if self.net_d is not None:
            optim_type = optim_opt.pop("type")
            self.optimizer_d = self.get_optimizer(optim_type, self.net_d.parameters(), **optim_opt)
            self.optimizers.append(self.optimizer_d)

    def optimize_parameters(self, current_iter: int) -> None:
        speed = self.speed  # train.speed: bf16 autocast / channels_last, as the SR models
        with speed.autocast_context():
            self.output = self._net_g_call(speed.input(self.lq))
        self.output = self.output.float()
        losses: OrderedDict[str, Tensor] = OrderedDict()
        gan_on = self.net_d is not None and self.gan_weight > 0 and current_iter > self.gan_start_iter

        if gan_on:  # ERRNet's order: the discriminator step first, on the detached output
            self.net_d.requires_grad_(True)
            self.optimizer_d.zero_grad()
            l_d = rasgan_discriminator_loss(*self._discriminate(self.output.detach()))
            (l_d * self.gan_weight if self.scale_d_loss else l_d).backward()
            self.optimizer_d.step()
            losses["l_d"] = l_d.detach()

        self.optimizer_g.zero_grad()
        if self.cri_pix is not None:
            losses["l_pix"] = self.cri_pix(self.output, self.gt)
        if self.cri_perceptual is not None:
            losses["l_vgg"] = self.cri_perceptual(self.output, self.gt)
        total = sum(v for k, v in losses.items() if k != "l_d")
        if gan_on:
            self.net_d.requires_grad_(False)
            l_g_gan = rasgan_generator_loss(*self._discriminate(self.output))
            losses["l_g_gan"] = l_g_gan
            total = total + self.gan_weight * l_g_gan
        total.backward()
        max_norm = float(self.opt["train"].get("grad_clip") or 0)
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), max_norm)
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(losses)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def test(self) -> None:
        """SRModel's test, tiled through the shared engine when ``val.tile`` is set (whole 4K / 8K
        validation images do not fit in memory otherwise); ``val.tile_overlap`` as ``--tile-overlap``."""
        val_opt = self.opt.get("val") or {}
        tile = int(val_opt.get("tile") or 0)
        if not tile:
            return super().test()
        from restorer.engine.tiling import TileSettings, run_tiled

        net = self.net_g_ema if hasattr(self, "net_g_ema") else self.get_bare_model(self.net_g)
        was_training = net.training
        net.eval()
        settings = TileSettings(tile, val_opt.get("tile_overlap"))
        multiple = getattr(net, "window_multiple", 1)
        outputs = [
            run_tiled(net, self.lq[i : i + 1].cpu(), 1, multiple, settings, self.device)
            for i in range(len(self.lq))
        ]
        self.output = torch.cat(outputs).to(self.device)
        net.train(was_training)

    def _discriminate(self, fake: Tensor) -> tuple[Tensor, Tensor]:
        """``(D(gt), D(fake))`` from one forward: DistributedDataParallel allows one forward per
        backward, and GroupNorm works per image, so batching the two changes nothing."""
        pred = self.net_d(torch.cat([self.gt, fake], dim=0))
        return pred[: self.gt.shape[0]], pred[self.gt.shape[0] :]

    def save(self, epoch: int, current_iter: int) -> None:
        if hasattr(self, "net_g_ema"):
            self.save_network(
                [self.net_g, self.net_g_ema], "net_g", current_iter, param_key=["params", "params_ema"]
            )
        else:
            self.save_network(self.net_g, "net_g", current_iter)
        if self.net_d is not None:
            self.save_network(self.net_d, "net_d", current_iter)
        self.save_training_state(epoch, current_iter)


# ------------------------------------------------------------------------------------------------
# Evaluation against the untouched input
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_against_input(forward: Callable[[Tensor], Tensor], dataset: data.Dataset) -> dict[str, float]:
    """RGB PSNR / SSIM (BasicSR functions, uint8, crop 0: the benchmark paper's protocol) of the model
    output and of the untouched blended input against the transmission layer, averaged over ``dataset``.

    ``forward`` maps ``(1, 3, H, W)`` in [0, 1] to the same shape (e.g. ``Restorer.run_tensor`` for tiled
    inference or a network). The paper's code truncates to uint8 where BasicSR rounds; rounding is used
    here for both numbers.
    """
    from restorer import metrics

    totals = {"psnr_input": 0.0, "psnr_output": 0.0, "ssim_input": 0.0, "ssim_output": 0.0}
    for i in range(len(dataset)):
        sample = dataset[i]
        lq, gt = sample["lq"][None], sample["gt"][None]
        out = forward(lq).float().clamp(0, 1)
        gt_u8, in_u8, out_u8 = (metrics.to_uint8(t[0].permute(1, 2, 0).cpu().numpy()) for t in (gt, lq, out))
        totals["psnr_input"] += metrics.psnr(in_u8, gt_u8, 0, y_channel=False)
        totals["psnr_output"] += metrics.psnr(out_u8, gt_u8, 0, y_channel=False)
        totals["ssim_input"] += metrics.ssim(in_u8, gt_u8, 0, y_channel=False)
        totals["ssim_output"] += metrics.ssim(out_u8, gt_u8, 0, y_channel=False)
    result = {k: v / len(dataset) for k, v in totals.items()}
    result["pairs"] = float(len(dataset))
    return result
