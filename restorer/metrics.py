"""Image-quality metrics with the protocol SR papers use.

PSNR and SSIM are BasicSR's own ``calculate_psnr`` / ``calculate_ssim`` (not re-implemented), fed
the way BasicSR's validation feeds them: uint8-rounded HWC images in BGR order, so the Y channel is
BT.601 studio swing computed from the right weights.

LPIPS is the ``lpips`` package with the AlexNet trunk (``version='0.1'``, the metric setting). The
package ships only its linear heads; the AlexNet ImageNet weights are torchvision's, which lpips
would download on first use. Here they are read only from the torch hub cache and never downloaded:
when the file is not there, :func:`load_lpips` says which file is missing and where it goes.

MS-SSIM (for the compression task) is ``pytorch_msssim.ms_ssim`` on RGB images.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

from restorer._compat import require_extra
from restorer.errors import RestorerError, WeightsNotFoundError

# torchvision's AlexNet IMAGENET1K_V1 weights: the file lpips' trunk loads through torch.hub.
ALEXNET_WEIGHT_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_WEIGHT_FILE}"


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 with clamping and rounding, as BasicSR's ``tensor2img`` does."""
    return (np.clip(pixels, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _bgr(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb[..., ::-1])


def psnr_all_channels(output: np.ndarray, target: np.ndarray, clip_output: bool = False) -> float:
    """PSNR (dB) over every pixel and channel: no crop, no colour conversion, no rounding.

    uint8 images have peak 255, float images peak 1 (``[0, 1]``). ``clip_output`` clips ``output`` to
    that range first (a float restoration may overshoot it); the target is taken as it is. ``inf`` when
    identical. For the SR papers' protocol (Y channel, crop, uint8 rounding) use :func:`psnr`.
    """
    a, b = np.asarray(output), np.asarray(target)
    if a.shape != b.shape:
        raise RestorerError(f"PSNR needs images of equal shape, got {a.shape} and {b.shape}.")
    peak = 255.0 if a.dtype == np.uint8 else 1.0
    a = a.astype(np.float64)
    if clip_output:
        a = np.clip(a, 0.0, peak)
    mse = float(np.mean((a - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(peak**2 / mse))


def psnr(output_rgb: np.ndarray, target_rgb: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """BasicSR ``calculate_psnr`` on uint8 RGB (or gray) arrays of equal shape."""
    require_extra("basicsr", "bench", "BasicSR's PSNR")
    from basicsr.metrics import calculate_psnr

    return float(
        calculate_psnr(_bgr(output_rgb), _bgr(target_rgb), crop_border, "HWC", test_y_channel=y_channel)
    )


def ssim(output_rgb: np.ndarray, target_rgb: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """BasicSR ``calculate_ssim`` on uint8 RGB (or gray) arrays of equal shape."""
    require_extra("basicsr", "bench", "BasicSR's SSIM")
    from basicsr.metrics import calculate_ssim

    return float(
        calculate_ssim(_bgr(output_rgb), _bgr(target_rgb), crop_border, "HWC", test_y_channel=y_channel)
    )


# ---------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------


def hub_checkpoint_dir() -> Path:
    """Where torch.hub keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints`` (default
    ``~/.cache/torch/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def lpips_linear_weights_path(net: str = "alex", version: str = "0.1") -> Path:
    """The linear-head weights that ship inside the ``lpips`` package."""
    lpips = require_extra("lpips", "bench", "LPIPS (--lpips)")

    return Path(lpips.__file__).resolve().parent / "weights" / f"v{version}" / f"{net}.pth"


def _alexnet_missing_message(path: Path) -> str:
    return (
        f"LPIPS needs torchvision's AlexNet ImageNet weights, '{ALEXNET_WEIGHT_FILE}' (about 233 MB), "
        f"and it is not in the torch hub cache: {path} does not exist. restorer never downloads at run "
        f"time; fetch it once from {ALEXNET_URL} (e.g. `curl -L -o {path} {ALEXNET_URL}`) and put it in "
        f"{path.parent}/ (the folder follows $TORCH_HOME), or run without --lpips."
    )


def load_lpips(device: str = "cpu"):
    """``lpips.LPIPS(net='alex', version='0.1')`` in eval mode on ``device``, built without the network.

    The trunk is created without weights (``pnet_rand=True``, so torchvision downloads nothing) and
    then loaded, strictly, from the hub-cache copy of torchvision's AlexNet weights; the linear heads
    come from the file shipped inside the lpips package. Raises :class:`WeightsNotFoundError` naming
    the missing file and where it goes.
    """
    require_extra("lpips", "bench", "LPIPS (--lpips)")  # the package before its weight files
    alexnet_path = hub_checkpoint_dir() / ALEXNET_WEIGHT_FILE
    if not alexnet_path.is_file():
        raise WeightsNotFoundError(_alexnet_missing_message(alexnet_path))
    linear_path = lpips_linear_weights_path()
    if not linear_path.is_file():
        raise WeightsNotFoundError(
            f"LPIPS linear weights not found: {linear_path} should ship inside the lpips package; "
            "reinstall it (`pip install --force-reinstall lpips`)."
        )
    return _build_lpips(str(device), str(alexnet_path))


@functools.lru_cache(maxsize=4)
def _build_lpips(device: str, alexnet_file: str):
    import lpips
    import torch

    alexnet_path = Path(alexnet_file)

    with warnings.catch_warnings():  # torchvision's deprecation notes on `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    try:
        features = torch.load(str(alexnet_path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise WeightsNotFoundError(
            f"Cannot read {alexnet_path} ({type(exc).__name__}); delete it and fetch it again from "
            f"{ALEXNET_URL}."
        ) from exc
    # lpips splits torchvision's `features` Sequential into slices that keep the layer indices:
    # features.<i>.weight lives at net.slice<k>.<i>.weight.
    trunk_state = {}
    for slice_name, block in model.net.named_children():
        for index, _ in block.named_children():
            for param in ("weight", "bias"):
                key = f"features.{index}.{param}"
                if key in features:
                    trunk_state[f"{slice_name}.{index}.{param}"] = features[key]
    try:
        model.net.load_state_dict(trunk_state, strict=True)
    except RuntimeError as exc:
        raise WeightsNotFoundError(
            f"{alexnet_path} is not torchvision's AlexNet ({str(exc).splitlines()[0]}); fetch it again "
            f"from {ALEXNET_URL}."
        ) from None
    return model.eval().requires_grad_(False).to(device)


def lpips_distance(
    output_rgb: np.ndarray, target_rgb: np.ndarray, crop_border: int = 0, device: str = "cpu"
) -> float:
    """LPIPS (AlexNet, v0.1) between two uint8 RGB (or gray) HxWxC images; lower is closer.

    ``crop_border`` pixels are dropped on every side first, as for PSNR/SSIM. Inputs go to the
    network as RGB in [-1, 1], the range lpips expects.
    """
    import torch

    if output_rgb.shape != target_rgb.shape:
        raise RestorerError(
            f"LPIPS needs images of equal shape, got {output_rgb.shape} and {target_rgb.shape}."
        )
    model = load_lpips(device)

    def as_tensor(image: np.ndarray) -> torch.Tensor:
        rgb = _bgr(image)[..., ::-1]  # gray -> 3 channels, back in RGB order
        if crop_border:
            rgb = rgb[crop_border:-crop_border, crop_border:-crop_border]
        tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()
        return (tensor / 127.5 - 1.0)[None].to(device)

    with torch.inference_mode():
        return float(model(as_tensor(output_rgb), as_tensor(target_rgb)).item())


def lpips_metric(output_rgb: np.ndarray, target_rgb: np.ndarray, crop_border: int, y_channel: bool = False):
    """LPIPS with the signature of the other metric functions; LPIPS is always on RGB."""
    if y_channel:
        raise RestorerError("LPIPS is computed on RGB images; remove test_y_channel from its metric.")
    return lpips_distance(output_rgb, target_rgb, crop_border)


# ---------------------------------------------------------------------------------------------
# MS-SSIM
# ---------------------------------------------------------------------------------------------


MS_SSIM_MIN_SIDE = 161
"""The smallest image side :func:`ms_ssim` takes: its five scales (four 2x downsamplings of an 11 px
window) need the smaller side above 160 px."""


def ms_ssim(a, b) -> float:
    """MS-SSIM (``pytorch_msssim.ms_ssim``, 5 scales, 11x11 Gaussian window) of two RGB images.

    ``a`` and ``b`` are HxWx3 arrays (uint8 in [0, 255], or float in [0, 1]) or (N, 3, H, W) float
    tensors in [0, 1], as CompressAI evaluates codecs. The smaller side must exceed 160 pixels (the
    four 2x downsamplings). Returns the mean over the batch.
    """
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    def as_batch(image) -> tuple[torch.Tensor, float]:
        if isinstance(image, torch.Tensor):
            tensor = image.float()
            return (tensor if tensor.ndim == 4 else tensor[None]), 1.0
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise RestorerError(f"MS-SSIM takes HxWx3 RGB images, got shape {array.shape}.")
        data_range = 255.0 if array.dtype == np.uint8 else 1.0
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).double()[None], data_range

    x, range_x = as_batch(a)
    y, range_y = as_batch(b)
    if range_x != range_y:
        raise RestorerError("MS-SSIM needs both images in the same range (both uint8 or both float).")
    if x.shape != y.shape:
        raise RestorerError(
            f"MS-SSIM needs images of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    if min(x.shape[-2:]) <= 160:
        raise RestorerError(
            f"MS-SSIM needs both sides larger than 160 pixels (4 downsamplings of an 11x11 window), "
            f"got {x.shape[-1]}x{x.shape[-2]}."
        )
    y = y.to(x.dtype)
    return float(_ms_ssim(x, y, data_range=range_x, size_average=True).item())


# BasicSR metric ``type`` names in an option file's ``val.metrics`` -> our functions.
METRIC_FUNCTIONS = {"calculate_psnr": psnr, "calculate_ssim": ssim, "calculate_lpips": lpips_metric}
