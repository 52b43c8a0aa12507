"""Datasets for BasicSR's training pipeline.

``HRBicubicDataset`` trains from a folder of high-resolution images alone: LR images are made on
the fly with MATLAB-style bicubic downscaling (BasicSR's ``imresize``, antialiasing on) and rounded
to 8 bits, exactly how benchmark LR images are made, so training matches the test degradation.
For LR/HR folder pairs use BasicSR's own ``PairedImageDataset``.
"""

from __future__ import annotations

import numpy as np
from torch.utils import data

from restorer._compat import ensure_basicsr_importable

ensure_basicsr_importable()

from basicsr.data.transforms import augment, mod_crop  # noqa: E402
from basicsr.utils import img2tensor  # noqa: E402
from basicsr.utils.matlab_functions import imresize  # noqa: E402
from basicsr.utils.registry import DATASET_REGISTRY  # noqa: E402

from restorer import io as rio  # noqa: E402


def bicubic_lr(hr_rgb: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')`` of a float [0, 1] HxWxC image, rounded to 8 bits."""
    lr = imresize(hr_rgb.astype(np.float64), 1.0 / scale)
    return (np.clip(lr, 0.0, 1.0) * 255.0).round().astype(np.float32) / 255.0


@DATASET_REGISTRY.register()
class HRBicubicDataset(data.Dataset):
    """HR folder -> ``{'lq', 'gt', 'lq_path', 'gt_path'}`` with bicubic LR made on the fly.

    Options (BasicSR style): ``dataroot_gt`` (a folder, or a list of folders), ``scale``,
    ``phase``; for training ``gt_size`` (HR patch size; random crop), ``use_hflip``, ``use_rot``;
    ``cache_images`` keeps decoded images in memory (for small sets).
    Validation images are mod-cropped to the scale and used whole. Tensors are RGB (3, h, w) in [0, 1].
    """

    def __init__(self, opt: dict) -> None:
        super().__init__()
        self.opt = opt
        self.scale = int(opt["scale"])
        roots = opt["dataroot_gt"]
        roots = [roots] if isinstance(roots, str) else list(roots)
        self.paths, _ = rio.collect_images(roots, recursive=bool(opt.get("recursive", False)))
        if not self.paths:
            raise ValueError(f"No images found in {', '.join(map(str, roots))}")
        self.train = opt.get("phase") == "train"
        # Small photo sets are re-read for every patch; decoding dominates unless kept in memory.
        self._cache: dict[int, np.ndarray] | None = {} if opt.get("cache_images", False) else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        hr = self._cache.get(index) if self._cache is not None else None
        if hr is None:
            image = rio.read_image(path)
            hr = image.pixels if image.pixels.shape[2] == 3 else np.repeat(image.pixels, 3, axis=2)
            if self._cache is not None:
                self._cache[index] = hr
        if self.train:
            size = int(self.opt["gt_size"]) // self.scale * self.scale
            h, w = hr.shape[:2]
            if h < size or w < size:
                raise ValueError(f"{path} ({w}x{h}) is smaller than gt_size {size}")
            top = np.random.randint(0, h - size + 1)
            left = np.random.randint(0, w - size + 1)
            hr = hr[top : top + size, left : left + size]
            hr = augment(hr, self.opt.get("use_hflip", True), self.opt.get("use_rot", True))
        else:
            hr = mod_crop(hr, self.scale)
        hr = np.ascontiguousarray(hr)
        lr = bicubic_lr(hr, self.scale)
        gt_t, lq_t = img2tensor([hr, lr], bgr2rgb=False, float32=True)
        return {"lq": lq_t, "gt": gt_t, "lq_path": str(path), "gt_path": str(path)}
