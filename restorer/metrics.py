"""Image-quality metrics with the protocol SR papers use.

PSNR and SSIM are BasicSR's own ``calculate_psnr`` / ``calculate_ssim`` (not re-implemented), fed
the way BasicSR's validation feeds them: uint8-rounded HWC images in BGR order, so the Y channel is
BT.601 studio swing computed from the right weights.
"""

from __future__ import annotations

import numpy as np

from restorer._compat import ensure_basicsr_importable


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 with clamping and rounding, as BasicSR's ``tensor2img`` does."""
    return (np.clip(pixels, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _bgr(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb[..., ::-1])


def psnr(output_rgb: np.ndarray, target_rgb: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """BasicSR ``calculate_psnr`` on uint8 RGB (or gray) arrays of equal shape."""
    ensure_basicsr_importable()
    from basicsr.metrics import calculate_psnr

    return float(
        calculate_psnr(_bgr(output_rgb), _bgr(target_rgb), crop_border, "HWC", test_y_channel=y_channel)
    )


def ssim(output_rgb: np.ndarray, target_rgb: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """BasicSR ``calculate_ssim`` on uint8 RGB (or gray) arrays of equal shape."""
    ensure_basicsr_importable()
    from basicsr.metrics import calculate_ssim

    return float(
        calculate_ssim(_bgr(output_rgb), _bgr(target_rgb), crop_border, "HWC", test_y_channel=y_channel)
    )


METRIC_FUNCTIONS = {"calculate_psnr": psnr, "calculate_ssim": ssim}
