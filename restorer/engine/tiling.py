"""Tiled inference with bounded memory and no visible seams.

The whole image stays on the CPU; only tiles travel to the device. The image is padded once to
the model's window multiple, tiles are window multiples with window-aligned origins (so the
window partitions of neighbouring tiles coincide in their overlap), tiles along an axis are
spread evenly so no tiny remainder tile is left, and outputs are merged with cosine-feathered
weights normalised by their sum. Feathering uses only the middle half of each overlap: the outer
margin of a tile, the least reliable part of its output, gets no weight where a neighbour covers it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from restorer.archs.layers import pad_to_multiple

log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AxisSpan:
    """One tile's extent on one axis, and how much it overlaps its neighbours (input pixels)."""

    start: int
    size: int
    overlap_before: int
    overlap_after: int


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_axis(length: int, tile: int, overlap: int, multiple: int) -> list[AxisSpan]:
    """Evenly spread tiles of ``tile`` pixels over ``length`` (all multiples of ``multiple``).

    Every tile has the same size, starts on a multiple of ``multiple`` and overlaps its
    neighbours by at least ``overlap`` pixels; the first starts at 0 and the last ends at ``length``.
    """
    if length <= tile:
        return [AxisSpan(0, length, 0, 0)]
    if length % multiple or tile % multiple or overlap % multiple:
        raise ValueError("length, tile and overlap must be multiples of the window multiple")
    if overlap >= tile:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile size {tile}")
    units_length, units_tile, units_overlap = length // multiple, tile // multiple, overlap // multiple
    stride = units_tile - units_overlap
    count = math.ceil((units_length - units_tile) / stride) + 1
    step = (units_length - units_tile) / (count - 1)
    starts = [round(i * step) * multiple for i in range(count)]
    spans = []
    for i, start in enumerate(starts):
        before = starts[i - 1] + tile - start if i > 0 else 0
        after = start + tile - starts[i + 1] if i + 1 < count else 0
        spans.append(AxisSpan(start, tile, before, after))
    return spans


def _feather(size: int, before: int, after: int, device=None) -> torch.Tensor:
    """1-D weights over ``size`` output pixels: 1 inside, a raised-cosine ramp in the middle half
    of each overlap, 0 in the overlap's outer quarter. Complementary ramps of two neighbours
    over the same overlap sum to exactly 1."""
    weight = torch.ones(size, dtype=torch.float32, device=device)
    for overlap, ramp_at_start in ((before, True), (after, False)):
        if overlap <= 0:
            continue
        pos = torch.arange(overlap, dtype=torch.float32, device=device) + 0.5
        t = ((pos / overlap) - 0.25) * 2.0  # 0 at a quarter, 1 at three quarters of the overlap
        ramp = 0.5 - 0.5 * torch.cos(math.pi * t.clamp(0.0, 1.0))
        if ramp_at_start:
            weight[:overlap] *= ramp
        else:
            weight[size - overlap :] *= ramp.flip(0)
    return weight


@dataclass(frozen=True)
class TileSettings:
    """``tile`` in input pixels (0 = whole image), ``overlap`` in input pixels (None = default)."""

    tile: int = 0
    overlap: int | None = None

    def resolved(self, multiple: int) -> tuple[int, int]:
        """(tile, overlap) rounded to the window multiple; overlap defaults to two windows (>= 16 px)."""
        overlap = self.overlap if self.overlap is not None else max(2 * multiple, 16)
        overlap = _round_up(max(overlap, 0), multiple)
        tile = max(_round_up(self.tile, multiple), multiple) if self.tile > 0 else 0
        if tile and overlap >= tile:
            overlap = max(tile // 2 // multiple * multiple, 0)
        return tile, overlap


def tile_shape(padded_height: int, padded_width: int, tile: int, multiple: int) -> tuple[int, int]:
    """``(tile_h, tile_w)`` for an image of the given padded size: ``tile x tile``, except when one side
    is shorter than ``tile``. Then the tile spans that whole side and is longer along the other, with
    the same area (the memory a tile needs follows its area), so a 1 x 100000 strip runs in a few
    dozen tiles instead of thousands."""
    if padded_height <= tile < padded_width:
        long_side = tile * tile // padded_height // multiple * multiple
        return padded_height, min(max(long_side, tile), padded_width)
    if padded_width <= tile < padded_height:
        long_side = tile * tile // padded_width // multiple * multiple
        return min(max(long_side, tile), padded_height), padded_width
    return tile, tile


def count_tiles(height: int, width: int, settings: TileSettings, multiple: int) -> int:
    tile, overlap = settings.resolved(multiple)
    hp, wp = _round_up(height, multiple), _round_up(width, multiple)
    if tile == 0:
        return 1
    tile_h, tile_w = tile_shape(hp, wp, tile, multiple)
    return len(plan_axis(hp, tile_h, overlap, multiple)) * len(plan_axis(wp, tile_w, overlap, multiple))


def run_tiled(
    forward: Forward,
    image: torch.Tensor,
    scale: int,
    multiple: int,
    settings: TileSettings,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run ``forward`` over ``image`` (1, C, H, W, float, CPU) in tiles -> (1, C', H·s, W·s) float32 CPU.

    With more than one tile the result is a view of a channels-last canvas (``.contiguous()`` before
    ``.view``); the image may be any strided view (each tile is copied to contiguous memory).

    ``forward`` maps a (1, C, h, w) tile on ``device`` in ``dtype`` (h, w multiples of ``multiple``)
    to (1, C', h·s, w·s). When one tile covers the image, the image goes to ``forward`` unpadded:
    models pad any size themselves, by their official convention. ``on_tile(done, total)`` reports
    progress.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected a (1, C, H, W) image, got {tuple(image.shape)}")
    height, width = image.shape[-2:]
    device = torch.device(device)
    tile, overlap = settings.resolved(multiple)
    if tile == 0 or (tile >= _round_up(height, multiple) and tile >= _round_up(width, multiple)):
        # One pass: the model pads the image itself, with its own (official) convention.
        with torch.no_grad():
            result = forward(image.to(device=device, dtype=dtype).contiguous())
        if on_tile is not None:
            on_tile(1, 1)
        return result.float().cpu()
    padded, _ = pad_to_multiple(image, multiple)
    hp, wp = padded.shape[-2:]
    tile_h, tile_w = tile_shape(hp, wp, tile, multiple)
    rows = plan_axis(hp, tile_h, overlap, multiple)
    cols = plan_axis(wp, tile_w, overlap, multiple)
    total = len(rows) * len(cols)

    # Every row span meets every column span and each tile's weight is w_row (x) w_col, so the sum of the
    # weights is row_sum (x) col_sum: two 1-D vectors instead of an image-sized canvas.
    row_sum = torch.zeros(hp * scale, dtype=torch.float32)
    col_sum = torch.zeros(wp * scale, dtype=torch.float32)
    col_weights = [_feather(c.size * scale, c.overlap_before * scale, c.overlap_after * scale) for c in cols]
    for col, w_col in zip(cols, col_weights):
        col_sum[col.start * scale : (col.start + col.size) * scale] += w_col
    output: torch.Tensor | None = None
    done = 0
    for row in rows:
        w_row = _feather(row.size * scale, row.overlap_before * scale, row.overlap_after * scale)
        row_sum[row.start * scale : (row.start + row.size) * scale] += w_row
        for col, w_col in zip(cols, col_weights):
            piece = padded[..., row.start : row.start + row.size, col.start : col.start + col.size]
            with torch.no_grad():  # not inference_mode: callers may modify the result in place
                tile_in = piece.to(device, dtype, non_blocking=True).contiguous()  # .to keeps strides
                result = forward(tile_in)
            result = result.float().cpu()
            if output is None:
                # channels-last: the caller's HxWxC array is then a view, not another image-sized copy
                canvas = torch.zeros(1, hp * scale, wp * scale, result.shape[1], dtype=torch.float32)
                output = canvas.permute(0, 3, 1, 2)
            ys, xs = row.start * scale, col.start * scale
            region = (..., slice(ys, ys + row.size * scale), slice(xs, xs + col.size * scale))
            output[region] += result * (w_row[:, None] * w_col[None, :])
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    assert output is not None
    output.div_(row_sum.clamp_min_(1e-12)[:, None]).div_(col_sum.clamp_min_(1e-12))
    return output[..., : height * scale, : width * scale]


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error (CUDA, MPS, XPU)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_tiled_with_oom_retry(
    forward: Forward,
    image: torch.Tensor,
    scale: int,
    multiple: int,
    settings: TileSettings,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    on_tile: Callable[[int, int], None] | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> tuple[torch.Tensor, TileSettings]:
    """:func:`run_tiled`, halving the tile after an out-of-memory error until it fits.

    Returns the output and the settings that worked (so a caller can reuse them for the next image).
    """
    while True:
        try:
            return run_tiled(forward, image, scale, multiple, settings, device, dtype, on_tile), settings
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            tile, overlap = settings.resolved(multiple)
            current = tile or _round_up(max(image.shape[-2:]), multiple)
            smaller = (current // 2) // multiple * multiple
            if smaller < max(2 * multiple, 16):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            message = f"Out of memory with tile {current}; retrying with tile {smaller}."
            log.warning(message)
            if on_retry is not None:
                on_retry(message)
            overlap = min(overlap, max(smaller // 2 // multiple * multiple, 0))
            settings = TileSettings(tile=smaller, overlap=overlap)
