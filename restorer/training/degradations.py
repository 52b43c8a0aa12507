"""Synthetic degradations: a low-quality input made from a clean image, slice or volume, so a network
can be trained from clean data alone (:class:`restorer.training.restoration_data.SyntheticPairDataset`).

Every function takes a float array ``H x W`` or ``H x W x C`` (channels are degraded independently
where that is physical) and returns a new float32 array; randomness comes only from the
``numpy.random.Generator`` passed in, so a fixed seed gives fixed pairs (validation).

* :func:`gaussian_noise`: additive white Gaussian noise, ``sigma`` on the 0-255 scale like denoising
  papers (DnCNN, SwinIR, Restormer): ``noisy = clean + N(0, (sigma / 255)^2)`` on [0, 1] images, not
  clipped (their protocol); ``clip=True`` and ``quantize=True`` give what an 8-bit noisy file holds.
* MRI, in k-space (2-D FFT of a magnitude image taken as the object, phase zero):
  :func:`kspace_undersample` keeps a Cartesian set of phase-encoding columns (a fully sampled centre
  fraction plus random or equispaced columns for an ``acceleration``) and returns the magnitude of the
  zero-filled inverse FFT; :func:`kspace_downsample` keeps the central ``1/factor`` of k-space (a
  low-resolution acquisition of the same field of view); :func:`kspace_zero_fill_upsample` is its
  inverse-grid step (zero-filling to ``factor`` times the matrix, the standard MR interpolation); and
  :func:`kspace_truncate` is the two in a row: the low-resolution image on the high-resolution grid,
  which is how super-resolution training pairs are made and what a low-resolution input looks like
  after the ``mri_sr_x*`` tasks' up-sampling step.
* :func:`bicubic_downsample` / :func:`bicubic_degrade`: MATLAB ``imresize`` bicubic (antialiased)
  down-sampling, and down-then-up back to the original grid.
* :func:`ct_low_dose`: low-dose CT from a normal-dose slice in HU, by noise insertion on line
  integrals (Poisson counting noise in its Gaussian approximation: a ray with ``I0 * exp(-p)``
  expected photons has ``var(p) = exp(p) / I0``; going from dose 1 to ``dose_fraction`` adds
  ``(1 / dose_fraction - 1) * exp(p) / I0``). ``method='projection'`` does this in a parallel-beam
  sinogram (scikit-image ``radon``) and adds the filtered back-projection of the noise alone, so the
  noise has CT's streaky, ramp-filtered texture and depends on all rays through each pixel.
  ``method='image'`` is the projection-free approximation: each pixel is treated as its own ray
  through ``path_length_mm`` of material with that pixel's attenuation, so the noise is white and
  grows with the pixel's density but has no streaks or correlation, and air is nearly noise-free
  (unlike a real scan). It is much faster; use it only where that difference does not matter.
* :func:`pet_low_count`: the image-domain Poisson approximation of a low-count PET scan
  (``Poisson(fraction * counts_per_unit * x) / (fraction * counts_per_unit)``), white noise without
  the correlations an iterative reconstruction gives.

:func:`build_degradation` turns a BasicSR-style option mapping (``{'type': 'gaussian_noise', 'sigma':
25}``) into a :class:`Degradation`, which also says in which value domain it works.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from restorer.errors import UsageError

__all__ = [
    "DEGRADATIONS",
    "MU_WATER_PER_MM",
    "Degradation",
    "bicubic_degrade",
    "bicubic_downsample",
    "bicubic_upsample",
    "build_degradation",
    "ct_low_dose",
    "gaussian_noise",
    "kspace_downsample",
    "kspace_mask",
    "kspace_truncate",
    "kspace_undersample",
    "kspace_zero_fill_upsample",
    "pet_low_count",
]

MU_WATER_PER_MM = 0.0192
"""Linear attenuation of water at about 70 keV (the effective energy of a 120 kVp beam), per mm."""


def _per_channel(image: np.ndarray, op: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return op(image)
    if image.ndim == 3:
        return np.stack([op(image[:, :, c]) for c in range(image.shape[2])], axis=2)
    raise ValueError(f"expected an H x W or H x W x C array, got shape {image.shape}")


# ----------------------------------------------------------------------------------------------------
# Gaussian noise
# ----------------------------------------------------------------------------------------------------


def gaussian_noise(
    image: np.ndarray, sigma: float, rng: np.random.Generator, clip: bool = False, quantize: bool = False
) -> np.ndarray:
    """``image`` in [0, 1] plus white Gaussian noise of standard deviation ``sigma / 255``.

    ``clip`` limits the result to [0, 1]; ``quantize`` rounds it to 8-bit levels (implies ``clip``).
    """
    image = np.asarray(image, dtype=np.float32)
    noisy = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma / 255.0)
    if clip or quantize:
        noisy = np.clip(noisy, 0.0, 1.0)
    if quantize:
        noisy = np.round(noisy * 255.0) / np.float32(255.0)
    return noisy.astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# MRI k-space
# ----------------------------------------------------------------------------------------------------


def kspace_mask(
    columns: int,
    acceleration: float,
    center_fraction: float,
    rng: np.random.Generator,
    pattern: Literal["random", "equispaced"] = "random",
) -> np.ndarray:
    """Boolean mask over the ``columns`` phase-encoding lines of a centred k-space.

    The central ``round(columns * center_fraction)`` lines are always kept. ``random`` keeps each other
    line with the probability that makes the expected total ``columns / acceleration``;
    ``equispaced`` keeps every ``acceleration``-th line from a random offset (both as fastMRI's mask
    functions).
    """
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    num_low = int(round(columns * center_fraction))
    if num_low > columns / acceleration:
        raise ValueError(
            f"center_fraction {center_fraction} keeps more lines than acceleration {acceleration} allows"
        )
    mask = np.zeros(columns, dtype=bool)
    start = (columns - num_low + 1) // 2
    mask[start : start + num_low] = True
    if pattern == "random":
        probability = (columns / acceleration - num_low) / max(columns - num_low, 1)
        mask |= rng.uniform(size=columns) < probability
    elif pattern == "equispaced":
        step = max(int(round(acceleration)), 1)
        mask[int(rng.integers(0, step)) :: step] = True
    else:
        raise ValueError(f"pattern must be 'random' or 'equispaced', not {pattern!r}")
    return mask


def kspace_undersample(
    image: np.ndarray,
    acceleration: float,
    center_fraction: float,
    rng: np.random.Generator,
    pattern: Literal["random", "equispaced"] = "random",
) -> np.ndarray:
    """Cartesian undersampling along the columns: ``|IFFT(mask * FFT(image))|`` (zero-filled), float32."""

    def undersample(plane: np.ndarray) -> np.ndarray:
        kspace = np.fft.fftshift(np.fft.fft2(plane.astype(np.float64), norm="ortho"))
        mask = kspace_mask(plane.shape[1], acceleration, center_fraction, rng, pattern)
        kspace *= mask[None, :]
        return np.abs(np.fft.ifft2(np.fft.ifftshift(kspace), norm="ortho")).astype(np.float32)

    return _per_channel(image, undersample)


def _crop_spectrum(plane: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Keep the ``size`` lowest frequencies of ``plane`` along ``axis`` (unnormalised DFT, no shift).

    For even ``size`` the result's Nyquist bin gets the sum of the two bins at +-size/2 (both alias to
    it on the coarser grid), so real input stays real and cropping a zero-filled spectrum
    (:func:`_pad_spectrum`, which splits that bin evenly) gives back the original exactly.
    """
    n = plane.shape[axis]
    spectrum = np.fft.fft(plane, axis=axis, norm="forward")
    half = size // 2
    keep = np.take(spectrum, np.r_[0 : size - half, n - half : n], axis=axis)
    if size % 2 == 0 and size < n:
        nyquist = np.take(spectrum, [n - half], axis=axis) + np.take(spectrum, [half], axis=axis)
        index = [slice(None)] * plane.ndim
        index[axis] = slice(size - half, size - half + 1)
        keep[tuple(index)] = nyquist
    return np.fft.ifft(keep, axis=axis, norm="forward")


def _pad_spectrum(plane: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Zero-fill ``plane``'s spectrum along ``axis`` to ``size`` samples (the inverse grid step of
    :func:`_crop_spectrum`; an even-length Nyquist bin is split evenly between +-n/2)."""
    n = plane.shape[axis]
    spectrum = np.fft.fft(plane, axis=axis, norm="forward")
    half = n // 2
    shape = list(plane.shape)
    shape[axis] = size
    padded = np.zeros(shape, dtype=np.complex128)
    low = [slice(None)] * plane.ndim
    high = [slice(None)] * plane.ndim
    low[axis], high[axis] = slice(0, n - half), slice(size - half, size)
    padded[tuple(low)] = np.take(spectrum, np.r_[0 : n - half], axis=axis)
    padded[tuple(high)] = np.take(spectrum, np.r_[n - half : n], axis=axis)
    if n % 2 == 0 and size > n:
        nyquist = np.take(spectrum, [n - half], axis=axis) / 2
        at_minus, at_plus = list(low), list(low)
        at_minus[axis], at_plus[axis] = slice(size - half, size - half + 1), slice(half, half + 1)
        padded[tuple(at_minus)] = nyquist
        padded[tuple(at_plus)] = nyquist
    return np.fft.ifft(padded, axis=axis, norm="forward")


def _check_divisible(shape: tuple[int, ...], factor: int) -> None:
    if factor < 1 or shape[0] % factor or shape[1] % factor:
        raise ValueError(f"image size {shape[1]}x{shape[0]} is not a multiple of the factor {factor}")


def kspace_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """The low-resolution magnitude image of the same field of view: central ``1/factor`` of k-space.

    ``H x W`` -> ``H/factor x W/factor`` (sizes must divide); intensities keep their scale (the mean is
    preserved), float32.
    """
    _check_divisible(np.shape(image), factor)

    def down(plane: np.ndarray) -> np.ndarray:
        h, w = plane.shape
        low = _crop_spectrum(_crop_spectrum(plane.astype(np.float64), 0, h // factor), 1, w // factor)
        return np.abs(low).astype(np.float32)

    return _per_channel(image, down)


def kspace_zero_fill_upsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Zero-filled k-space interpolation to ``factor`` times the matrix, magnitude, float32.

    The first pixel centre stays in place (``alignment='origin'`` in :func:`restorer.medical.write_volume`).
    """

    def up(plane: np.ndarray) -> np.ndarray:
        h, w = plane.shape
        high = _pad_spectrum(_pad_spectrum(plane.astype(np.float64), 0, h * factor), 1, w * factor)
        return np.abs(high).astype(np.float32)

    return _per_channel(image, up)


def kspace_truncate(image: np.ndarray, factor: int) -> np.ndarray:
    """Low-resolution acquisition shown on the original grid: ``zero_fill(downsample(image))``, same size."""
    return kspace_zero_fill_upsample(kspace_downsample(image, factor), factor)


# ----------------------------------------------------------------------------------------------------
# Bicubic
# ----------------------------------------------------------------------------------------------------


def _imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """BasicSR's MATLAB-style bicubic ``imresize`` (imported here: inference need not load BasicSR)."""
    from restorer._compat import ensure_basicsr_importable

    ensure_basicsr_importable()
    from basicsr.utils.matlab_functions import imresize

    return np.asarray(imresize(np.asarray(image, dtype=np.float32), scale), dtype=np.float32)


def bicubic_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """MATLAB ``imresize(image, 1/factor, 'bicubic')`` with antialiasing (BasicSR's), float32, unclipped."""
    _check_divisible(np.shape(image), factor)
    return _imresize(image, 1.0 / factor)


def bicubic_upsample(image: np.ndarray, factor: int) -> np.ndarray:
    """MATLAB ``imresize(image, factor, 'bicubic')`` (BasicSR's), float32, unclipped."""
    return _imresize(image, float(factor))


def bicubic_degrade(image: np.ndarray, factor: int) -> np.ndarray:
    """Bicubic down-sampling by ``factor`` and bicubic up-sampling back to the original size."""
    return bicubic_upsample(bicubic_downsample(image, factor), factor)


# ----------------------------------------------------------------------------------------------------
# Low-dose CT and low-count PET
# ----------------------------------------------------------------------------------------------------


DEFAULT_PHOTONS: dict[str, float] = {"projection": 5e6, "image": 1e4}
"""Default ``photons`` of :func:`ct_low_dose` per method (see there for the calibration)."""


def _hu_to_mu(hu: np.ndarray) -> np.ndarray:
    return np.maximum(MU_WATER_PER_MM * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0), 0.0)


def ct_low_dose(
    hu: np.ndarray,
    dose_fraction: float,
    rng: np.random.Generator,
    photons: float | None = None,
    method: Literal["projection", "image"] = "projection",
    pixel_size_mm: float = 0.7,
    views: int | None = None,
    path_length_mm: float = 200.0,
) -> np.ndarray:
    """A ``dose_fraction`` scan of the normal-dose slice ``hu`` (``H x W`` in HU), float32 HU.

    ``photons`` is the unattenuated photon count per ray at normal dose. It is the noise-level knob, not
    a physical count (the simulation has fewer views, a sharper filter and thinner rays than a
    scanner); the defaults (:data:`DEFAULT_PHOTONS`) make a quarter dose add about 30 HU standard
    deviation in water-like tissue, roughly the AAPM quarter-dose data: at the centre of a 300 mm
    soft-tissue disk on a 512 x 512, 0.7 mm grid (projection), or in a water pixel (image).

    ``method='projection'`` inserts noise into a parallel-beam sinogram of ``views`` angles over 180
    degrees (default: the image width) and adds the filtered back-projection of that noise (about 1 s
    for 256 x 256 and 5-10 s for 512 x 512 on one CPU core: make pairs once, or crop first);
    ``method='image'`` is the projection-free approximation described in the module docstring (each
    pixel its own ray through ``path_length_mm``). ``dose_fraction = 1`` returns the input unchanged.
    """
    if not 0 < dose_fraction <= 1:
        raise ValueError(f"dose_fraction must be in (0, 1], got {dose_fraction}")
    hu = np.asarray(hu, dtype=np.float64)
    if hu.ndim != 2:
        raise ValueError(f"ct_low_dose takes one H x W slice, got shape {hu.shape}")
    if method not in DEFAULT_PHOTONS:
        raise ValueError(f"method must be 'projection' or 'image', not {method!r}")
    photons = DEFAULT_PHOTONS[method] if photons is None else photons
    extra = 1.0 / dose_fraction - 1.0
    if extra == 0.0:
        return hu.astype(np.float32)
    mu = _hu_to_mu(hu)
    if method == "image":
        line_integral = mu * path_length_mm
        noise = np.sqrt(extra * np.exp(line_integral) / photons) * rng.standard_normal(hu.shape)
        return (hu + 1000.0 * noise / (path_length_mm * MU_WATER_PER_MM)).astype(np.float32)
    from skimage.transform import iradon, radon

    angles = np.linspace(0.0, 180.0, views or hu.shape[1], endpoint=False)
    sinogram = radon(mu * pixel_size_mm, theta=angles, circle=False)  # line integrals (dimensionless)
    noise = np.sqrt(extra * np.exp(sinogram) / photons) * rng.standard_normal(sinogram.shape)
    size = max(hu.shape)
    delta_mu = iradon(noise, theta=angles, filter_name="ramp", circle=False, output_size=size) / pixel_size_mm
    top, left = (size - hu.shape[0]) // 2, (size - hu.shape[1]) // 2
    delta_mu = delta_mu[top : top + hu.shape[0], left : left + hu.shape[1]]
    return (hu + 1000.0 * delta_mu / MU_WATER_PER_MM).astype(np.float32)


def pet_low_count(
    image: np.ndarray, count_fraction: float, rng: np.random.Generator, counts_per_unit: float = 50.0
) -> np.ndarray:
    """Image-domain Poisson approximation of a ``count_fraction`` PET scan of ``image`` (SUV >= 0).

    Each pixel is a Poisson count with mean ``count_fraction * counts_per_unit * image``, scaled back;
    the input is taken as noise-free, so even ``count_fraction = 1`` adds noise.
    """
    if not 0 < count_fraction <= 1:
        raise ValueError(f"count_fraction must be in (0, 1], got {count_fraction}")
    scale = count_fraction * counts_per_unit
    mean = np.maximum(np.asarray(image, dtype=np.float64), 0.0) * scale
    return (rng.poisson(mean) / scale).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# Options -> degradation
# ----------------------------------------------------------------------------------------------------

Domain = Literal["unit", "physical", "any"]


@dataclass(frozen=True)
class Degradation:
    """A configured degradation: ``degradation(image, rng) -> low-quality image`` (same size).

    ``domain`` says which values it expects: ``'unit'`` pixel values in [0, 1] (Gaussian noise with a
    0-255 sigma), ``'physical'`` modality units (HU for CT, SUV for PET), ``'any'`` (linear operations:
    k-space, bicubic). ``pointwise`` degradations treat each pixel on its own (noise), so degrading a
    crop is the same as cropping a degraded image.
    """

    name: str
    domain: Domain
    pointwise: bool
    function: Callable[..., np.ndarray]  # module-level, so data-loader workers can pickle it
    options: Mapping[str, Any]

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.function(image, rng, **self.options)


def _gaussian(
    image: np.ndarray, rng: np.random.Generator, *, sigma: float, clip: bool = False, quantize: bool = False
):
    return gaussian_noise(image, sigma, rng, clip, quantize)


def _undersample(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    acceleration: float,
    center_fraction: float,
    pattern: str = "random",
):
    return kspace_undersample(image, acceleration, center_fraction, rng, pattern)


def _truncate(image: np.ndarray, rng: np.random.Generator, *, factor: int):
    return kspace_truncate(image, factor)


def _bicubic(image: np.ndarray, rng: np.random.Generator, *, factor: int):
    return bicubic_degrade(image, factor)


def _ct(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    dose_fraction: float,
    photons: float | None = None,
    method: str = "projection",
    pixel_size_mm: float = 0.7,
    views: int | None = None,
    path_length_mm: float = 200.0,
):
    options = dict(photons=photons, method=method, pixel_size_mm=pixel_size_mm, views=views)
    options["path_length_mm"] = path_length_mm
    return _per_channel(image, lambda plane: ct_low_dose(plane, dose_fraction, rng, **options))


def _pet(
    image: np.ndarray, rng: np.random.Generator, *, count_fraction: float, counts_per_unit: float = 50.0
):
    return pet_low_count(image, count_fraction, rng, counts_per_unit)


DEGRADATIONS: dict[str, tuple[Domain, Callable[..., np.ndarray]]] = {
    "gaussian_noise": ("unit", _gaussian),
    "kspace_undersample": ("any", _undersample),
    "kspace_truncate": ("any", _truncate),
    "bicubic": ("any", _bicubic),
    "ct_low_dose": ("physical", _ct),
    "pet_low_count": ("physical", _pet),
}
"""``type`` -> (value domain, ``function(image, rng, **options)``); the keyword-only parameters of
each function are its options."""


def build_degradation(options: Mapping[str, Any]) -> Degradation:
    """``{'type': NAME, **options}`` -> :class:`Degradation`; a clear error for unknown names or options."""
    options = dict(options)
    name = options.pop("type", None)
    if name not in DEGRADATIONS:
        raise UsageError(f"Unknown degradation type {name!r}; use one of {', '.join(DEGRADATIONS)}")
    domain, function = DEGRADATIONS[name]
    try:  # fail while reading the options, not later in a data-loader worker
        inspect.signature(function).bind(None, None, **options)
    except TypeError as exc:
        keywords = [p for p in inspect.signature(function).parameters if p not in ("image", "rng")]
        raise UsageError(f"Degradation '{name}': {exc}; its options are {', '.join(keywords)}") from None

    pointwise = name in ("gaussian_noise", "pet_low_count") or (
        name == "ct_low_dose" and options.get("method") == "image"
    )
    return Degradation(name, domain, pointwise, function, MappingProxyType(options))
