"""Compress images to ``.s2l`` bytes and back with an S2LIC model.

Typical use (the CLI, the web app and the benchmark all go through these calls)::

    codec = load_codec("s2lic-small-q2")            # zoo variant, weights from weights/
    data = compress_image(codec, pixels)             # HxWxC float32 in [0, 1] -> bytes
    restored = decompress_bytes(codec, data)         # -> HxWxC float32 in [0, 1]
    point = rd_point(codec, pixels)                  # bpp, PSNR, MS-SSIM, estimated bpp

Images of any size are padded (reflect, bottom/right) to a multiple of 64 and cropped back; the bit rate
counts the original pixels. Gray images are coded as RGB and come back gray.

Guarantees, each a test in ``tests/test_codec.py``:

* the decoder's reconstruction is bit-identical to the encoder's on the same machine and device type
  (:func:`compress_image` can return the encoder's reconstruction for the comparison);
* a file made with other weights, a truncated or corrupted file, or a non-``.s2l`` file raises a
  :class:`~restorer.errors.RestorerError` before any decoding; a file whose symbols the decoder cannot
  reproduce (another device type or platform) raises one after decoding instead of returning garbage.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from restorer.codec.container import S2LHeader, pack, unpack
from restorer.errors import RestorerError, UsageError
from restorer.metrics import MS_SSIM_MIN_SIDE, ms_ssim, psnr_all_channels

__all__ = [
    "Codec",
    "CodecMismatchError",
    "RDPoint",
    "bits_per_pixel",
    "codec_entries",
    "compress_image",
    "decompress_bytes",
    "estimated_bits",
    "load_codec",
    "measure_rd",
    "rd_point",
    "read_header",
    "resolve_codec_entry",
    "weights_fingerprint",
]

# CDF buffers are derived from the parameters by update(); they are not part of the weights identity.
_DERIVED_SUFFIXES = ("._quantized_cdf", "._offset", "._cdf_length", ".scale_table")
_QUALITY_NAME = re.compile(r"^(?P<family>.+)-q(?P<quality>\d+)$")


class CodecMismatchError(RestorerError):
    """A ``.s2l`` file that this model cannot decode (other weights, other platform)."""


def weights_fingerprint(model: torch.nn.Module) -> bytes:
    """8 bytes of SHA-256 over the model's parameters and persistent buffers (sorted by name).

    The CDF tables are left out: they are recomputed from the parameters by ``update()``. The same
    weights give the same fingerprint whatever file container they were read from.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.endswith(_DERIVED_SUFFIXES):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.digest()[:8]


@dataclass
class Codec:
    """An S2LIC model ready to code: eval mode, fresh CDF tables, its variant name and fingerprint.

    ``threads`` is the thread count of the entropy model when encoding (written to each file; decoding
    uses the file's value). Build with :func:`load_codec` or :meth:`from_model`.
    """

    model: torch.nn.Module
    variant: str
    fingerprint: bytes
    threads: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_model(cls, model: torch.nn.Module, variant: str = "custom", threads: int = 1) -> Codec:
        """Wrap an in-memory model (e.g. just trained): eval mode and ``update(force=True)``."""
        model.eval()
        model.update(force=True)
        device = next(model.parameters()).device
        return cls(model, variant, weights_fingerprint(model), threads, device)


# ------------------------------------------------------------------------------------------------
# Zoo lookup
# ------------------------------------------------------------------------------------------------


def codec_entries() -> list:
    """Zoo entries of the ``compress`` task (any entry whose ``tasks`` include it)."""
    from restorer import zoo

    return zoo.entries(task="compress")


def _split_quality(name: str) -> tuple[str, int | None]:
    match = _QUALITY_NAME.match(name)
    return (match["family"], int(match["quality"])) if match else (name, None)


def resolve_codec_entry(model: str | None = None, quality: int | None = None, weights_available=None):
    """The zoo entry to code with.

    Codec variants are named ``<family>-q<N>`` (``s2lic-small-q2``): quality ``N`` is one rate point, higher
    means more bits. ``model`` is a family (``s2lic-small``; with ``quality``, or the highest quality
    whose weights are present) or a full variant name. Without ``model``, the first family of the
    ``compress`` task's preference order with weights present is used.
    """
    entries = codec_entries()
    if not entries:
        raise UsageError("No compression models are registered in the zoo.")
    by_name = {e.model: e for e in entries}
    families: dict[str, dict[int, object]] = {}
    for e in entries:
        family, q = _split_quality(e.model)
        families.setdefault(family, {})[q if q is not None else 0] = e
    available = weights_available or (lambda entry: True)

    if model is not None and model.lower() in by_name and quality is None:
        return by_name[model.lower()]
    if model is not None:
        family = _split_quality(model.lower())[0] if model.lower() in by_name else model.lower()
        if family not in families:
            names = ", ".join(sorted(families))
            raise UsageError(f"Unknown compression model '{model}'. Models: {names} (see `restorer models`).")
        candidates = [families[family]]
    else:
        order = _preferred_families(list(families))
        candidates = [families[f] for f in order]
        with_weights = [c for c in candidates if any(available(e) for e in c.values())]
        candidates = with_weights[:1] or candidates[:1]
    levels = candidates[0]
    if quality is not None:
        if quality not in levels:
            family = _split_quality(next(iter(levels.values())).model)[0]
            raise UsageError(
                f"{family} has no quality {quality} (qualities: {', '.join(map(str, sorted(levels)))})."
            )
        return levels[quality]
    present = [q for q in sorted(levels) if available(levels[q])]
    return levels[(present or sorted(levels))[-1]]


def _preferred_families(families: list[str]) -> list[str]:
    try:
        from restorer.tasks import TASKS

        preferred = list(TASKS["compress"].preferred)
    except (ImportError, KeyError, AttributeError):
        preferred = []
    ranked = [f for f in preferred if f in families]
    return ranked + [f for f in families if f not in ranked]


def load_codec(
    model: str | None = None,
    quality: int | None = None,
    weights: str | None = None,
    device: str | torch.device = "cpu",
    threads: int = 1,
) -> Codec:
    """Build a zoo codec variant, load its weights strictly and ``update(force=True)`` its tables."""
    from restorer import weights as rw
    from restorer.archs import build_network

    entry = resolve_codec_entry(model, quality, weights_available=None if weights else rw.is_available)
    path = rw.require_weights(entry, weights)
    net = build_network(entry.network_options())
    state = rw.unwrap_state_dict(rw.read_checkpoint(path), entry.param_key)
    net.resize_entropy_buffers(state)  # checkpoints saved after update() carry filled CDF buffers
    rw.load_into(net, state, entry, source=f"Weight file {path}")
    net = net.to(torch.device(device))
    codec = Codec.from_model(net, entry.model, threads)
    return codec


# ------------------------------------------------------------------------------------------------
# Coding
# ------------------------------------------------------------------------------------------------


def _as_codec(codec_or_model) -> Codec:
    if isinstance(codec_or_model, Codec):
        return codec_or_model
    return Codec.from_model(codec_or_model)


def _to_rgb_float(image: np.ndarray) -> tuple[np.ndarray, int]:
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3) or 0 in array.shape[:2]:
        raise UsageError(f"An image to compress is HxWx3 (RGB) or HxWx1 (gray), got shape {array.shape}.")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        array = np.clip(array.astype(np.float32), 0.0, 1.0)
    else:
        raise UsageError(f"Unsupported pixel type {array.dtype} (use uint8, uint16 or float in [0, 1]).")
    channels = array.shape[2]
    return (np.repeat(array, 3, axis=2) if channels == 1 else array), channels


def _padded_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    from restorer.archs.layers import pad_to_multiple
    from restorer.archs.s2lic_arch import LATENT_MULTIPLE

    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(device)
    return pad_to_multiple(x, LATENT_MULTIPLE)[0]


def _to_image(x_hat: torch.Tensor, height: int, width: int, channels: int) -> np.ndarray:
    from restorer.io import to_gray

    out = x_hat[0, :, :height, :width].clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float32)
    return np.ascontiguousarray(to_gray(out) if channels == 1 else out)


def compress_image(
    codec_or_model, image: np.ndarray, *, return_reconstruction: bool = False, scale_levels: int | None = None
):
    """Code one image into the bytes of an ``.s2l`` file.

    Args:
        codec_or_model: a :class:`Codec` (or a bare S2LIC model, wrapped with ``Codec.from_model``).
        image: ``H x W x 3`` RGB or ``H x W x 1`` / ``H x W`` gray; uint8, uint16 or float in ``[0, 1]``.
        return_reconstruction: also return the encoder's reconstruction (the image the decoder will
            produce, bit for bit), ``H x W x C`` float32.
        scale_levels: levels of the Gaussian scale table (default ``SCALES_LEVELS``, 256); the file
            records it. Fewer levels snap each predicted scale further up: 64 (CompressAI's count)
            costs about 3 % more rate.

    Returns:
        ``bytes``, or ``(bytes, reconstruction)``.
    """
    from restorer.io import MAX_IMAGE_PIXELS

    codec = _as_codec(codec_or_model)
    rgb, channels = _to_rgb_float(image)
    height, width = rgb.shape[:2]
    if height * width > MAX_IMAGE_PIXELS:
        raise UsageError(f"Image of {width}x{height} pixels is larger than the limit ({MAX_IMAGE_PIXELS}).")
    model = codec.model
    from restorer.archs.s2lic_arch import SCALES_LEVELS

    model.use_scale_levels(SCALES_LEVELS if scale_levels is None else int(scale_levels))
    with torch.inference_mode():
        x = _padded_tensor(rgb, codec.device)
        coded = model.compress(x, threads=codec.threads)
        header = S2LHeader(
            variant=codec.variant,
            weights_fingerprint=codec.fingerprint,
            table_fingerprint=model.table_fingerprint()[:4],
            height=height,
            width=width,
            channels=channels,
            threads=codec.threads,
            device_kind=codec.device.type if codec.device.type in ("cpu", "cuda") else "other",
            y_shape=coded.y_shape,
            z_shape=coded.z_shape,
            digest=coded.digest,
            scale_levels=model.scale_levels,
        )
        data = pack(header, [coded.y_string, coded.z_string])
        if not return_reconstruction:
            return data
        reconstruction = _to_image(model.g_s(coded.y_hat), height, width, channels)
    return data, reconstruction


def read_header(data: bytes) -> S2LHeader:
    """The header of ``.s2l`` bytes (verified: magic, version, sizes and checksum)."""
    return unpack(data)[0]


def _check_compatible(codec: Codec, header: S2LHeader) -> None:
    from restorer.archs.s2lic_arch import LATENT_MULTIPLE
    from restorer.io import MAX_IMAGE_PIXELS

    if header.weights_fingerprint != codec.fingerprint:
        raise CodecMismatchError(
            f"the file was made with other weights (variant '{header.variant}', weights "
            f"{header.weights_fingerprint.hex()}); the loaded model is '{codec.variant}' with weights "
            f"{codec.fingerprint.hex()}. Decode it with the weights that encoded it (--model / --weights)."
        )
    here = codec.device.type if codec.device.type in ("cpu", "cuda") else "other"
    if header.device_kind != here:
        raise CodecMismatchError(
            f"the file was encoded on a {header.device_kind} device and this model runs on {here}: the "
            f"entropy model must run on the same kind of device to decode exactly (use --device "
            f"{header.device_kind})."
        )
    if header.table_fingerprint != codec.model.table_fingerprint()[:4]:
        raise CodecMismatchError(
            "the entropy tables computed here differ from the encoder's (same weights, different platform "
            "or library version), so the file cannot be decoded exactly here."
        )
    if header.height * header.width > MAX_IMAGE_PIXELS:
        raise CodecMismatchError(
            f"the file declares a {header.width}x{header.height} image, above the limit."
        )
    pad_h = -(-header.height // LATENT_MULTIPLE) * LATENT_MULTIPLE
    pad_w = -(-header.width // LATENT_MULTIPLE) * LATENT_MULTIPLE
    model = codec.model
    expected_y = (model.M, pad_h // 16, pad_w // 16)
    expected_z = (model.N, pad_h // 64, pad_w // 64)
    if tuple(header.y_shape) != expected_y or tuple(header.z_shape) != expected_z:
        raise CodecMismatchError(
            f"the file's latent shapes y {header.y_shape}, z {header.z_shape} do not fit a "
            f"{header.width}x{header.height} image for this model (expected {expected_y}, {expected_z}); "
            "the file is corrupted."
        )


def decompress_bytes(codec_or_model, data: bytes) -> np.ndarray:
    """Decode the bytes of an ``.s2l`` file into ``H x W x C`` float32 in ``[0, 1]`` (C as encoded).

    Raises:
        S2LFormatError: not an ``.s2l`` file, unsupported version, truncated or corrupted.
        CodecMismatchError: made with other weights, or the symbols cannot be reproduced here.
    """
    from restorer.archs.s2lic_arch import CodedLatents, DecodeMismatchError

    codec = _as_codec(codec_or_model)
    header, streams = unpack(data)
    if len(streams) != 2:
        raise CodecMismatchError(f"an S2LIC file holds 2 streams, this one {len(streams)}; it is corrupted.")
    codec.model.use_scale_levels(header.scale_levels)
    _check_compatible(codec, header)
    coded = CodedLatents(
        y_string=streams[0],
        z_string=streams[1],
        y_shape=tuple(header.y_shape),
        z_shape=tuple(header.z_shape),
        digest=header.digest,
    )
    with torch.inference_mode():
        try:
            y_hat = codec.model.decompress_latents(coded, threads=header.threads, device=codec.device)
        except DecodeMismatchError as exc:
            raise CodecMismatchError(
                f"decoding failed: {exc}. Decode on the kind of machine that encoded it."
            ) from None
        x_hat = codec.model.g_s(y_hat)
    return _to_image(x_hat, header.height, header.width, header.channels)


# ------------------------------------------------------------------------------------------------
# Rates and quality
# ------------------------------------------------------------------------------------------------


def bits_per_pixel(num_bytes: int, height: int, width: int) -> float:
    """``8 * num_bytes / (height * width)``: the rate of a file over the original pixels."""
    return 8.0 * num_bytes / (height * width)


def estimated_bits(codec_or_model, image: np.ndarray, table_scales: bool = False) -> float:
    """The model's rate estimate, ``-sum(log2 likelihoods)`` of y and z in eval mode, in bits (for the
    padded image, as coded).

    ``table_scales=False``: the model's own estimate (what training minimises). ``True``: the same with
    every scale snapped up to the coder's table entry, i.e. the ideal size of the streams as coded; the
    two differ by how well the predicted scales fit the latents (about +0.2 % for a fitted model).
    """
    codec = _as_codec(codec_or_model)
    rgb, _ = _to_rgb_float(image)
    with torch.inference_mode():
        out = codec.model(_padded_tensor(rgb, codec.device), table_scales=table_scales)
    return float(sum(-torch.log2(v).sum().item() for v in out["likelihoods"].values()))


@dataclass(frozen=True)
class RDPoint:
    """One image coded at one rate: the file size and what it costs in quality."""

    num_bytes: int
    bpp: float
    estimated_bpp: float | None  # the model's own estimate; None where it was not computed
    psnr: float
    ms_ssim: float | None


def measure_rd(
    image: np.ndarray,
    data: bytes,
    decoded: np.ndarray,
    estimated_bpp: float | None = None,
    with_ms_ssim: bool = True,
) -> RDPoint:
    """The RD point of ``image`` coded as the ``.s2l`` bytes ``data`` that decode to ``decoded``.

    bpp is the file's bytes over the original pixels; PSNR is RGB on 8-bit (the decoded PNG against the
    8-bit original); MS-SSIM is RGB, ``None`` when a side is 160 px or less (too small for its five scales).
    """
    rgb, channels = _to_rgb_float(image)
    height, width = rgb.shape[:2]
    original8 = np.round(rgb[:, :, :channels] * 255.0).astype(np.uint8)
    decoded8 = np.round(np.clip(decoded, 0, 1) * 255).astype(np.uint8).reshape(original8.shape)
    quality_ms_ssim = None
    if with_ms_ssim and min(height, width) >= MS_SSIM_MIN_SIDE:
        to3 = (lambda a: np.repeat(a, 3, axis=2)) if channels == 1 else (lambda a: a)
        quality_ms_ssim = ms_ssim(to3(original8), to3(decoded8))
    return RDPoint(
        num_bytes=len(data),
        bpp=bits_per_pixel(len(data), height, width),
        estimated_bpp=estimated_bpp,
        psnr=psnr_all_channels(decoded8, original8),
        ms_ssim=quality_ms_ssim,
    )


def rd_point(codec_or_model, image: np.ndarray, with_ms_ssim: bool = True) -> RDPoint:
    """Code ``image`` and measure it (:func:`measure_rd`), with the model's estimated bpp."""
    codec = _as_codec(codec_or_model)
    data, reconstruction = compress_image(codec, image, return_reconstruction=True)
    height, width = np.asarray(image).shape[:2]
    estimated = estimated_bits(codec, image) / (height * width)
    return measure_rd(image, data, reconstruction, estimated, with_ms_ssim)
