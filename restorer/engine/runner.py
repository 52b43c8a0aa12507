"""Run a model over images and folders: device, precision, tiling, alpha, bit depth, progress.

``Restorer`` holds one loaded model; ``process_files`` drives it over many files, writing each
output atomically and carrying on past a bad file, which it reports at the end. ``plan_jobs`` decides
every output name first (see :mod:`restorer.engine.output_plan`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from restorer import io as rio
from restorer.engine.budget import check_image_job
from restorer.engine.output_plan import OutputPlan, PlannedOutput, gather, plan_outputs
from restorer.engine.tiling import TileSettings, count_tiles, run_tiled_with_oom_retry
from restorer.errors import OutputExistsError, RestorerError, UsageError, one_line_message
from restorer.zoo import ZooEntry

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
ALPHA_MODES = ("model", "bicubic")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# BT.601 luma, the weights OpenCV uses for RGB -> gray.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a device that exists, or a clear error."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"Unknown device '{spec}'. Use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"Device '{spec}' requested, but no CUDA GPU is available. Use --device cpu.")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UsageError(
                f"Device '{spec}' requested, but only {torch.cuda.device_count()} CUDA device(s) exist "
                f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})."
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError("Device 'mps' requested, but Apple MPS is not available.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"Unsupported device '{spec}'. Use auto, cpu, cuda or cuda:N.")
    return device


def resolve_precision(precision: str, device: torch.device, entry: ZooEntry) -> torch.dtype:
    """``auto``: fp32 on CPU; on a GPU bf16 where the GPU and model support it, else fp16 where the
    model is safe in fp16, else fp32. An explicit choice is honoured (with a warning when the zoo
    marks the model unsafe at that precision)."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise UsageError(f"Unknown precision '{precision}'. Use one of: {', '.join(PRECISIONS)}.")
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        if entry.supports_bf16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if entry.supports_fp16:
            return torch.float16
        return torch.float32
    if precision == "fp16" and not entry.supports_fp16:
        log.warning("%s is not marked safe in fp16 (it may give black or NaN patches).", entry.display_name)
    if precision == "bf16" and not entry.supports_bf16:
        log.warning("%s is not marked safe in bf16.", entry.display_name)
    return _DTYPES[precision]


def auto_tile(device: torch.device) -> int:
    """A tile size (input pixels) that keeps memory bounded: by free memory on a GPU, 256 on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        gib = free / 2**30
        return 512 if gib >= 16 else 384 if gib >= 8 else 256 if gib >= 4 else 128
    return 256


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HxWxC float32 -> (1, C, H, W), a view of the pixels (channels-last strides): no image-sized copy;
    the tiler copies each tile to contiguous memory."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]


def _to_array(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) -> HxWxC float32 clipped to [0, 1]; no copy when the tensor is channels-last (the
    tiler's output canvas is)."""
    return tensor[0].clamp_(0, 1).permute(1, 2, 0).contiguous().numpy()


def bleed_transparent_colors(rgb: np.ndarray, alpha: np.ndarray, passes: int = 6) -> np.ndarray:
    """Give fully transparent pixels the colour of nearby visible ones.

    Transparent pixels often hold black or arbitrary colour; a network would smear it into the
    visible edge and leave a dark fringe once alpha is re-attached. Normalised convolution at
    growing radii fills them from their neighbours without touching visible pixels.
    """
    visible = (alpha > 0).astype(np.float32)
    if visible.all() or not visible.any():
        return rgb
    filled = rgb * visible[..., None]
    weight = visible.copy()
    out = rgb.copy()
    hidden = visible == 0
    for i in range(passes):
        ksize = 2 ** (i + 1) + 1
        num = cv2.blur(filled, (ksize, ksize))
        den = cv2.blur(weight, (ksize, ksize))
        if num.ndim == 2:
            num = num[..., None]
        reach = hidden & (den > 1e-6)
        out[reach] = num[reach] / den[reach][:, None]
        filled = np.where(reach[..., None], out, filled)
        weight = np.where(reach, 1.0, weight).astype(np.float32)
        hidden = hidden & ~reach
        if not hidden.any():
            break
    return out


TTA_POSES = tuple((flip, turns) for flip in (False, True) for turns in range(4))
"""The eight poses of the self-ensemble: (horizontal flip first, then this many 90-degree turns)."""


@dataclass
class Restorer:
    """One loaded image-to-image model, ready to run on any image size."""

    entry: ZooEntry
    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    tile: TileSettings = field(default_factory=TileSettings)
    on_message: Callable[[str], None] | None = None
    weights: Path | None = None  # the file the weights came from
    tta: bool = False  # x8 self-ensemble: flips and 90-degree rotations, outputs averaged

    @property
    def scale(self) -> int:
        return self.entry.scale

    def __str__(self) -> str:
        entry = self.entry
        source = f" from {self.weights}" if self.weights else ""
        dtype = str(self.dtype).replace("torch.", "")
        what = f"{entry.display_name} x{self.scale} ({entry.arch}, --model {entry.model})"
        return f"{what}{source} on {self.device} ({dtype})"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def run_tensor(self, x: torch.Tensor, on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """(1, C, H, W) float32 CPU in [0, 1] -> (1, C', H·s, W·s) float32 CPU (not clamped).

        With ``tta`` the x8 self-ensemble (the "+" rows of the HAT and DRCT papers): the input in each of
        the eight flip/rotation poses goes through the same tiled engine, each output is turned back and
        the eight are averaged; memory stays bounded (one pose at a time, plus the running sum).
        """
        if not self.tta:
            return self._run_tiled(x, on_tile)
        total: torch.Tensor | None = None
        for pose, (flip, turns) in enumerate(TTA_POSES):

            def progress(done: int, count: int, pose: int = pose) -> None:
                if on_tile is not None:
                    on_tile(pose * count + done, len(TTA_POSES) * count)

            posed = torch.rot90(x.flip(-1) if flip else x, turns, dims=(-2, -1))
            out = torch.rot90(self._run_tiled(posed.contiguous(), progress), -turns, dims=(-2, -1))
            out = out.flip(-1) if flip else out
            total = out.contiguous() if total is None else total.add_(out)
        return total.div_(len(TTA_POSES))

    def _run_tiled(self, x: torch.Tensor, on_tile: Callable[[int, int], None] | None) -> torch.Tensor:
        out, used = run_tiled_with_oom_retry(
            self._forward,
            x,
            self.scale,
            self.entry.window_multiple,
            self.tile,
            self.device,
            self.dtype,
            on_tile=on_tile,
            on_retry=self.on_message,
        )
        self.tile = used  # keep the size that fitted for the next image
        return out

    def tile_count(self, height: int, width: int) -> int:
        return count_tiles(height, width, self.tile, self.entry.window_multiple)

    def run_array(self, pixels: np.ndarray, on_tile=None) -> np.ndarray:
        """HxWxC float32 in [0, 1] (C = 1 or 3, RGB) -> (H·s)x(W·s)xC float32 in [0, 1].

        Gray images go through a colour model as three equal channels and come back gray;
        colour images through a one-channel model go channel by channel.
        """
        channels = pixels.shape[2]
        model_in = self.entry.in_channels
        if channels == model_in:
            out = _to_array(self.run_tensor(_to_tensor(pixels), on_tile))
        elif channels == 1 and model_in == 3:
            rgb = _to_array(self.run_tensor(_to_tensor(np.repeat(pixels, 3, axis=2)), on_tile))
            out = (rgb @ _LUMA)[..., None]
        elif model_in == 1:
            planes = [self.run_tensor(_to_tensor(pixels[..., c : c + 1]), on_tile) for c in range(channels)]
            out = _to_array(torch.cat(planes, dim=1))
        else:
            raise RestorerError(
                f"{self.entry.display_name} takes {model_in} channels, the image has {channels}."
            )
        return out

    def run_image(
        self,
        image: rio.LoadedImage,
        alpha_mode: str = "model",
        outscale: float | None = None,
        on_tile=None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Restore a loaded image; returns (pixels, alpha) at the output size, float32 in [0, 1]."""
        pixels = image.pixels
        alpha = image.alpha
        if alpha is not None:
            pixels = bleed_transparent_colors(pixels, alpha)
        out = self.run_array(pixels, on_tile)
        out_alpha = None
        if alpha is not None:
            if alpha_mode == "bicubic":
                h, w = out.shape[:2]
                out_alpha = np.clip(cv2.resize(alpha, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)
            else:
                gray_out = self.run_array(alpha[..., None], on_tile)
                out_alpha = gray_out[..., 0]
        if outscale and outscale != self.scale:
            h = max(1, round(image.height * outscale))
            w = max(1, round(image.width * outscale))
            out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LANCZOS4)
            if out.ndim == 2:
                out = out[..., None]
            out = np.clip(out, 0, 1)
            if out_alpha is not None:
                out_alpha = np.clip(cv2.resize(out_alpha, (w, h), interpolation=cv2.INTER_LANCZOS4), 0, 1)
        return out, out_alpha


def build_restorer(
    entry: ZooEntry,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    precision: str = "auto",
    tile: int | None = None,
    tile_overlap: int | None = None,
    on_message: Callable[[str], None] | None = None,
    tta: bool = False,
) -> Restorer:
    """Build ``entry``'s network, load its weights strictly, and place it on the device."""
    from restorer import weights as rw
    from restorer.archs import build_network

    path = rw.require_weights(entry, weights)
    torch_device = resolve_device(device)
    dtype = resolve_precision(precision, torch_device, entry)
    model = build_network(entry.network_options())
    rw.load_checkpoint(model, path, entry)
    if hasattr(model, "pad_mode"):
        model.pad_mode = entry.pad_mode  # the zoo states which official padding convention is used
    model.eval().requires_grad_(False).to(device=torch_device, dtype=dtype)
    if tile is None:
        cpu_default = entry.cpu_tile if torch_device.type == "cpu" else None
        tile = cpu_default or auto_tile(torch_device)
    if tile_overlap is None:
        tile_overlap = entry.tile_overlap  # the zoo knows how far a model sees
    if tile < 0:
        raise UsageError(f"--tile must be 0 (whole image) or a positive size, got {tile}.")
    if tile_overlap is not None and tile_overlap < 0:
        raise UsageError(f"--tile-overlap must be >= 0, got {tile_overlap}.")
    return Restorer(
        entry, model, torch_device, dtype, TileSettings(tile, tile_overlap), on_message, path, tta
    )


Job = PlannedOutput
"""One input file, the folder its output goes to and (when planned) the output's name."""


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    kept: list[tuple[Path, Path]] = field(default_factory=list)
    """(input, output) pairs not processed because the output exists (no ``overwrite``)."""
    renamed: list[tuple[Path, Path]] = field(default_factory=list)
    """(input, output) pairs written under a name changed to keep apart inputs that share a name."""


def plan_jobs(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    recursive: bool = False,
    suffix: str = "",
    ext: str = "auto",
    overwrite: bool = False,
) -> OutputPlan:
    """Expand files and folders into an output plan (``plan.outputs`` are the jobs, ``plan.skipped``
    the non-image files). Files found in sub-folders keep their relative folder under ``out_dir``;
    inputs that would still share an output name get distinct ones, an existing output is kept unless
    ``overwrite``, and earlier outputs inside ``out_dir`` are not taken as inputs."""
    fixed_ext = None
    if ext.lower().lstrip(".") != "auto":
        fixed_ext = rio.canonical_ext(ext)
        if fixed_ext is None:
            choices = ", ".join(("auto", *rio.OUTPUT_EXTS))
            raise UsageError(f"Unknown output format {ext!r}; choose one of: {choices}")
    unreadable: list[tuple[Path, str]] = []
    candidates, skipped = gather(inputs, out_dir, recursive=recursive, unreadable=unreadable)
    plan = plan_outputs(candidates, out_dir, suffix=suffix, ext=fixed_ext, overwrite=overwrite)
    plan.skipped = skipped
    plan.failed.extend(unreadable)  # reported with the other failures; the readable files still run
    return plan


def process_files(
    restorer: Restorer,
    jobs: Sequence[Job],
    suffix: str = "",
    ext: str = "auto",
    alpha_mode: str = "model",
    outscale: float | None = None,
    progress: bool = True,
    quality: int = 95,
    *,
    protect: Sequence[str | os.PathLike] | None = None,
    overwrite: bool = True,
) -> Report:
    """Restore every job's file and write it atomically; a bad file is recorded and skipped.

    A job with a planned name (from :func:`plan_jobs`) is written as ``NAME.EXT``, otherwise as
    ``STEM_SUFFIX.EXT``. ``protect`` lists files never written over (default: the jobs' inputs). With
    ``overwrite=False`` a job whose output exists is skipped before its model runs (``report.kept``).
    """
    from tqdm import tqdm

    report = Report()
    protect = list(protect) if protect is not None else [job.source for job in jobs]
    bar = tqdm(jobs, unit="img", disable=not progress, dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(job.source.name[-40:])
        target = None
        try:
            size = rio.probe_size(job.source)
            if size is not None:  # refuse before decoding what cannot fit
                check_image_job(job.source, *size, outscale or restorer.scale)
            image = rio.read_image(job.source)
            out_ext = rio.resolve_output_ext(ext, image)
            target = job.target(out_ext, suffix)
            if not overwrite and os.path.lexists(target):
                raise OutputExistsError.at(target)
            tiles = restorer.tile_count(image.height, image.width)
            tile_bar = tqdm(total=tiles, unit="tile", leave=False, disable=not progress or tiles < 2)

            def on_tile(done: int, total: int, _bar=tile_bar) -> None:
                _bar.total = total
                _bar.n = done
                _bar.refresh()

            try:
                pixels, alpha = restorer.run_image(image, alpha_mode, outscale, on_tile)
            finally:
                tile_bar.close()
            bit_depth, icc_profile = image.bit_depth, image.icc_profile
            del image  # its float pixels are 12 bytes a pixel: not kept alive while the output is encoded
            rio.write_image(
                target,
                pixels,
                alpha,
                bit_depth=bit_depth,
                quality=quality,
                protect=protect,
                overwrite=overwrite,
                icc_profile=icc_profile,
            )
            report.written.append(target)
            if job.renamed:
                report.renamed.append((job.source, target))
        except OutputExistsError:
            report.kept.append((job.source, target))
            bar.write(f"note: skipping {job.source}: {target} already exists (--overwrite replaces it)")
        except RestorerError as exc:
            report.failed.append((job.source, str(exc)))
            bar.write(f"error: {exc}")
        except Exception as exc:  # keep going past one bad file (MemoryError included); reported at the end
            message = one_line_message(exc)
            report.failed.append((job.source, message))
            bar.write(f"error: {job.source}: {message}")
    bar.close()
    return report
