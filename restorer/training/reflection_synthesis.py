"""Synthetic reflections: ``(transmission, reflection) -> (T, R_as_added, blended)`` on float32 HxWx3 RGB
in [0, 1], for training and measuring reflection removal on photos that have no real glass pairs.

- :func:`blur_reflection_synthesis`: CEILNet / ERRNet's model (a blurred reflection added, overflow removed);
- :func:`vignette_reflection_synthesis`: Zhang et al. (CVPR'18) / ERRNet's gamma, blur, vignette model;
- :func:`physical_reflection_synthesis`: a photo through glass in linear light: defocus, ghosting from the
  glass's two faces, reflectance and lighting falloff, sensor clipping, and pairs with no reflection.

No basicsr import: the benchmark's reflection rows use :func:`self_reflection_pair` at inference time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

__all__ = [
    "PHYSICAL_DEFAULTS",
    "SYNTHESIS_MODELS",
    "blur_reflection_synthesis",
    "physical_reflection_synthesis",
    "self_reflection_pair",
    "vignette_kernel",
    "vignette_reflection_synthesis",
]

Array = np.ndarray


def blur_reflection_synthesis(
    transmission: Array,
    reflection: Array,
    rng: np.random.Generator,
    kernel_size: int = 11,
    sigma_range: tuple[float, float] = (2.0, 5.0),
    gamma_range: tuple[float, float] = (1.3, 1.3),
) -> tuple[Array, Array, Array]:
    """CEILNet / ERRNet's model (``ReflectionSythesis_1``): a blurred reflection added, overflow removed.

    ``R_b = R * G`` (Gaussian kernel ``kernel_size`` x ``kernel_size``, ``sigma ~ U(sigma_range)``, per
    channel, zero beyond the border as ``convolve2d(mode='same')``), ``M = T + R_b``. When ``M`` exceeds
    1 somewhere: ``m = gamma * (mean of M over the entries > 1, minus 1)``, ``R_b = clip(R_b - m, 0, 1)``,
    ``M = clip(T + R_b, 0, 1)``.

    Returns ``(T, R_b, M)`` float32, shapes of ``transmission`` (``reflection`` must match it).
    """
    t = np.asarray(transmission, np.float32)
    r = np.asarray(reflection, np.float32)
    if t.shape != r.shape:
        raise ValueError(f"transmission {t.shape} and reflection {r.shape} must have the same shape")
    sigma = float(rng.uniform(*sigma_range))
    gamma = float(rng.uniform(*gamma_range))
    kernel = cv2.getGaussianKernel(kernel_size, sigma).astype(np.float32)
    # The 2-D kernel is the outer product of the 1-D one: separable filtering gives the same result.
    r_blur = cv2.sepFilter2D(r, -1, kernel, kernel, borderType=cv2.BORDER_CONSTANT)
    blended = t + r_blur
    over = blended[blended > 1]
    if over.size:
        shift = (float(over.mean()) - 1.0) * gamma
        r_blur = np.clip(r_blur - shift, 0.0, 1.0)
        blended = np.clip(t + r_blur, 0.0, 1.0)
    return t, r_blur.astype(np.float32), blended.astype(np.float32)


def vignette_kernel(size: int, nsig: float = 3.0) -> Array:
    """Zhang et al.'s ``gkern(size, nsig)``: a ``size x size`` Gaussian-like mask with maximum 1.

    ``k1`` = differences of the normal CDF over ``size`` equal steps spanning ``+-(nsig + step / 2)``;
    the mask is ``sqrt(outer(k1, k1))`` scaled to a maximum of 1.
    """
    from scipy.special import ndtr

    step = (2 * nsig + 1.0) / size
    edges = np.linspace(-nsig - step / 2.0, nsig + step / 2.0, size + 1)
    k1 = np.sqrt(np.diff(ndtr(edges)))
    mask = np.outer(k1, k1)
    return (mask / mask.max()).astype(np.float32)


def vignette_reflection_synthesis(
    transmission: Array,
    reflection: Array,
    rng: np.random.Generator,
    sigmas: Sequence[float] | None = None,
    mask_size: int = 560,
    nsig: float = 3.0,
) -> tuple[Array, Array, Array]:
    """Zhang et al. (CVPR'18) / ERRNet's ``ReflectionSythesis_2``: gamma, blur, overflow, vignette.

    In linear light (power 2.2): ``R`` blurred with ``sigma`` drawn from ``sigmas`` (default 80 values in
    [1, 5], kernel ``2 ceil(2 sigma) + 1``); per channel, ``R -= (max(1, mean of T + R where > 1) - 1) *
    (1.08 + U[0, 0.1))``, clipped to [0, 1]; multiplied by a random ``H x W`` window of a
    :func:`vignette_kernel` mask; ``M = R + T * (1 - U[0, 0.2))``; back with power 1 / 2.2, ``M`` clipped.
    The public code's mask is 560 px (images up to 549 px); for larger images the mask grows to
    ``max(H, W) + 11`` so any size works.

    Returns ``(T, R_vignetted, M)`` float32; ``T`` is the input transmission unchanged (the target).
    """
    t = np.asarray(transmission, np.float32)
    r = np.asarray(reflection, np.float32)
    if t.shape != r.shape:
        raise ValueError(f"transmission {t.shape} and reflection {r.shape} must have the same shape")
    sigmas = np.linspace(1, 5, 80) if sigmas is None else np.asarray(sigmas, np.float64)
    h, w = t.shape[:2]
    size = max(mask_size, h + 11, w + 11)
    sigma = float(sigmas[rng.integers(0, len(sigmas))])
    t_lin = np.power(t, 2.2)
    r_lin = np.power(r, 2.2)
    ksize = int(2 * math.ceil(2 * sigma) + 1)
    r_blur = cv2.GaussianBlur(r_lin, (ksize, ksize), sigma, sigma, 0)
    blended = r_blur + t_lin
    attenuation = 1.08 + rng.random() / 10.0
    for c in range(blended.shape[2]):
        over = blended[..., c] > 1
        mean = max(1.0, float((blended[..., c] * over).sum() / (over.sum() + 1e-6)))
        r_blur[..., c] -= (mean - 1.0) * attenuation
    r_blur = np.clip(r_blur, 0.0, 1.0)
    top = int(rng.integers(0, size - h - 10))
    left = int(rng.integers(0, size - w - 10))
    mask = vignette_kernel(size, nsig)[top : top + h, left : left + w, None]
    r_vig = r_blur * mask
    blended = r_vig + t_lin * (1.0 - rng.random() / 5.0)
    blended = np.clip(np.power(blended, 1 / 2.2), 0.0, 1.0)
    return t, np.power(r_vig, 1 / 2.2).astype(np.float32), blended.astype(np.float32)


PHYSICAL_DEFAULTS: dict[str, Any] = {
    "none_prob": 0.2,
    "strength_range": (0.04, 0.6),
    "blur_prob": 0.8,
    "blur_sigma_range": (0.5, 4.0),
    "ghost_prob": 0.5,
    "ghost_shift_range": (2.0, 10.0),
    "ghost_gain_range": (0.3, 0.8),
    "falloff_prob": 0.7,
}
"""The defaults of :func:`physical_reflection_synthesis` (the ``synthesis: physical`` dataset option)."""


def _shift(image: Array, dx: float, dy: float) -> Array:
    """``image`` moved by ``(dx, dy)`` pixels (bilinear, mirrored at the border)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def _falloff(height: int, width: int, rng: np.random.Generator) -> Array:
    """A smooth ``(H, W, 1)`` map in ``(0, 1]`` with maximum 1: how the reflection's strength varies.

    Either a window of a :func:`vignette_kernel` (a bright light or lit object seen off the glass's centre)
    or a linear ramp in a random direction from 1 down to ``U[0.2, 1)`` (a lit room on one side).
    """
    if rng.random() < 0.5:
        size = max(height, width) * 2 + 11
        top = int(rng.integers(0, size - height))
        left = int(rng.integers(0, size - width))
        mask = vignette_kernel(size, float(rng.uniform(1.5, 3.0)))[top : top + height, left : left + width]
        mask = mask / max(float(mask.max()), 1e-6)
    else:
        angle = float(rng.uniform(0, 2 * math.pi))
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = xs * math.cos(angle) + ys * math.sin(angle)
        ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
        low = float(rng.uniform(0.2, 1.0))
        mask = 1.0 - (1.0 - low) * ramp
    return mask[..., None].astype(np.float32)


def physical_reflection_synthesis(
    transmission: Array,
    reflection: Array,
    rng: np.random.Generator,
    none_prob: float = PHYSICAL_DEFAULTS["none_prob"],
    strength_range: tuple[float, float] = PHYSICAL_DEFAULTS["strength_range"],
    blur_prob: float = PHYSICAL_DEFAULTS["blur_prob"],
    blur_sigma_range: tuple[float, float] = PHYSICAL_DEFAULTS["blur_sigma_range"],
    ghost_prob: float = PHYSICAL_DEFAULTS["ghost_prob"],
    ghost_shift_range: tuple[float, float] = PHYSICAL_DEFAULTS["ghost_shift_range"],
    ghost_gain_range: tuple[float, float] = PHYSICAL_DEFAULTS["ghost_gain_range"],
    falloff_prob: float = PHYSICAL_DEFAULTS["falloff_prob"],
) -> tuple[Array, Array, Array]:
    """A photo taken through glass, modelled in linear light and clipped as a camera clips.

    In linear light (power 2.2) the reflected scene ``R`` is, in turn:

    - defocused (with ``blur_prob``): the camera focuses on the scene behind the glass, so the reflected
      one, at another distance, is out of focus; Gaussian, ``sigma ~ U(blur_sigma_range)``;
    - doubled (with ``ghost_prob``): thick glass reflects off both faces, a second copy shifted by
      ``U(ghost_shift_range)`` pixels in a random direction with gain ``U(ghost_gain_range)``, the two
      copies renormalised to the first's brightness;
    - scaled by the glass's reflectance times how the lighting falls across it: a strength drawn
      log-uniformly from ``strength_range`` (weak reflections are common, strong ones rare), times a
      smooth :func:`_falloff` map (with ``falloff_prob``);

    then added to the transmitted scene, ``M = T + a R``, clipped at 1 (the sensor saturates where a
    highlight is reflected over a bright scene) and taken back to display gamma. With ``none_prob`` the
    pair has no reflection at all (``M = T``): a model must learn to leave such photos alone.

    Returns ``(T, aR, M)`` float32 in display gamma; ``T`` is the input transmission unchanged (the target),
    ``aR`` the reflection as added (zero for a pair without one).
    """
    t = np.asarray(transmission, np.float32)
    r = np.asarray(reflection, np.float32)
    if t.shape != r.shape:
        raise ValueError(f"transmission {t.shape} and reflection {r.shape} must have the same shape")
    if rng.random() < none_prob:
        return t, np.zeros_like(t), t.copy()
    h, w = t.shape[:2]
    r_lin = np.power(r, 2.2)
    if rng.random() < blur_prob:
        sigma = float(rng.uniform(*blur_sigma_range))
        ksize = int(2 * math.ceil(3 * sigma) + 1)
        r_lin = cv2.GaussianBlur(r_lin, (ksize, ksize), sigma, sigma, cv2.BORDER_REFLECT101)
    if rng.random() < ghost_prob:
        distance = float(rng.uniform(*ghost_shift_range))
        angle = float(rng.uniform(0, 2 * math.pi))
        gain = float(rng.uniform(*ghost_gain_range))
        ghost = _shift(r_lin, distance * math.cos(angle), distance * math.sin(angle))
        r_lin = (r_lin + gain * ghost) / (1.0 + gain)
    low, high = strength_range
    strength = float(math.exp(rng.uniform(math.log(low), math.log(high))))
    weight = _falloff(h, w, rng) * strength if rng.random() < falloff_prob else np.float32(strength)
    added = r_lin * weight
    blended = np.clip(np.power(t, 2.2) + added, 0.0, 1.0)
    display = np.power(blended, 1 / 2.2).astype(np.float32)
    return t, np.clip(display - t, 0.0, 1.0).astype(np.float32), display


#: ``synthesis`` option values of :class:`~restorer.training.reflection.SyntheticReflectionDataset`.
SYNTHESIS_MODELS: dict[str, Callable[..., tuple[Array, Array, Array]]] = {
    "blur": blur_reflection_synthesis,
    "vignette": vignette_reflection_synthesis,
    "physical": physical_reflection_synthesis,
}


def self_reflection_pair(gt_u8: Array, seed: int = 0) -> tuple[Array, Array]:
    """A deterministic synthetic test pair from one clean photo: ``(blended, gt)``, both uint8.

    The reflection layer is the photo itself rotated by 180 degrees (no second image needed), put through
    :func:`blur_reflection_synthesis` with a generator seeded by ``seed``. For benchmarks on folders of
    clean photos; real blended / transmission pairs are preferable where they exist.
    """
    gt = np.ascontiguousarray(gt_u8[..., :3] if gt_u8.ndim == 3 else np.repeat(gt_u8[..., None], 3, 2))
    t = gt.astype(np.float32) / 255.0
    _, _, blended = blur_reflection_synthesis(t, t[::-1, ::-1].copy(), np.random.default_rng(seed))
    return (np.clip(blended, 0, 1) * 255.0).round().astype(np.uint8), gt
