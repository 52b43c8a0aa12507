"""Layers shared by the window-attention super-resolution architectures (HAT, DRCT, CRAFT, ...).

Conventions (as in BasicSR ``basicsr/archs/*_arch.py``):

* images / feature maps are ``(B, C, H, W)``;
* token sequences are ``(B, H*W, C)`` in row-major (raster) order;
* window tensors are ``(B*nW, wh, ww, C)`` with windows in row-major order over the image, batch-major.

Every function works on any device and floating dtype; nothing here is CPU specific. Module attribute
names follow the official repositories so that state-dict keys match (``mlp.fc1``, ``patch_embed.norm``,
``upsample.0`` ...).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DropPath",
    "drop_path",
    "Mlp",
    "PatchEmbed",
    "PatchUnEmbed",
    "Upsample",
    "UpsampleOneStep",
    "crop_to",
    "gather_relative_position_bias",
    "pad_to_multiple",
    "relative_position_index",
    "relative_position_index_overlap",
    "shifted_window_mask",
    "shifted_window_region_masks",
    "to_2tuple",
    "window_partition",
    "window_reverse",
]

SizeLike = int | tuple[int, int] | list[int]


def to_2tuple(size: SizeLike) -> tuple[int, int]:
    """Return ``(size, size)`` for an int, or the pair itself as a tuple of two ints."""
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {size!r}")
    return size  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# Window partition / reverse
# ------------------------------------------------------------------------------------------------


def window_partition(x: Tensor, window_size: SizeLike) -> Tensor:
    """Split a channels-last feature map into non-overlapping windows.

    Args:
        x: ``(B, H, W, C)``; ``H`` and ``W`` must be multiples of the window height / width.
        window_size: ``ws`` for square windows or ``(wh, ww)``.

    Returns:
        ``(B * nW, wh, ww, C)`` contiguous, with ``nW = (H // wh) * (W // ww)``; windows are ordered
        batch-major, then row-major over the window grid (the Swin / HAT order).
    """
    wh, ww = to_2tuple(window_size)
    b, h, w, c = x.shape
    if h % wh or w % ww:
        raise ValueError(f"feature size {h}x{w} is not a multiple of the window size {wh}x{ww}")
    x = x.view(b, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, wh, ww, c)


def window_reverse(windows: Tensor, window_size: SizeLike, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: ``(B * nW, wh, ww, C)`` (any trailing layout that views as this, e.g. ``(B*nW, wh*ww, C)``).
        window_size: ``ws`` or ``(wh, ww)``.
        h: feature height ``H`` (multiple of ``wh``).
        w: feature width ``W`` (multiple of ``ww``).

    Returns:
        ``(B, H, W, C)`` contiguous.
    """
    wh, ww = to_2tuple(window_size)
    n_h, n_w = h // wh, w // ww
    c = windows.shape[-1]
    b = windows.numel() // (n_h * n_w * wh * ww * c)
    x = windows.reshape(b, n_h, n_w, wh, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, c)


# ------------------------------------------------------------------------------------------------
# Relative position indices and bias
# ------------------------------------------------------------------------------------------------


def relative_position_index(window_size: SizeLike) -> Tensor:
    """Swin relative position index inside one window (HAT's ``calculate_rpi_sa``).

    ``index[i, j] = (dy + wh - 1) * (2 * ww - 1) + (dx + ww - 1)`` with ``(dy, dx) = pos_i - pos_j``, so it
    selects a row of a ``((2*wh-1) * (2*ww-1), heads)`` bias table.

    Args:
        window_size: ``ws`` or ``(wh, ww)``.

    Returns:
        ``LongTensor (N, N)`` with ``N = wh * ww``, values in ``[0, (2*wh-1)*(2*ww-1))``.
    """
    wh, ww = to_2tuple(window_size)
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)  # 2, N
    rel = coords[:, :, None] - coords[:, None, :]  # 2, N, N
    return (rel[0] + (wh - 1)) * (2 * ww - 1) + (rel[1] + (ww - 1))


def relative_position_index_overlap(window_size: int, overlap_win_size: int) -> Tensor:
    """Relative position index between a query window and its overlapping key window (HAT's OCAB).

    Reproduces the official ``calculate_rpi_oca`` **exactly**, including its negative entries: with
    ``ws`` the query window, ``ows`` the key window and ``(dy, dx) = pos_key - pos_query``,
    ``index = (dy + ws - ows + 1) * (ws + ows - 1) + (dx + ws - ows + 1)``. For ``ws=16, ows=24`` the
    values lie in ``[-880, 640]`` and address the ``((ws + ows - 1)**2, heads)`` table through negative
    (wrap-around) indexing, which is a bijection modulo the table length. Index with
    :func:`gather_relative_position_bias` (or any op that accepts negative indices).

    Args:
        window_size: query window side ``ws``.
        overlap_win_size: key window side ``ows`` (``int(ws * overlap_ratio) + ws`` in HAT).

    Returns:
        ``LongTensor (ws*ws, ows*ows)``.
    """
    ws, ows = int(window_size), int(overlap_win_size)
    c_ori = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    c_ext = torch.stack(torch.meshgrid(torch.arange(ows), torch.arange(ows), indexing="ij")).flatten(1)
    rel = c_ext[:, None, :] - c_ori[:, :, None]  # 2, ws*ws, ows*ows
    offset = ws - ows + 1
    return (rel[0] + offset) * (ws + ows - 1) + (rel[1] + offset)


def gather_relative_position_bias(table: Tensor, index: Tensor) -> Tensor:
    """Look up a relative position bias table through an index buffer.

    Args:
        table: ``(T, heads)`` bias table.
        index: integer tensor ``(N, M)``; negative entries wrap around (``-1`` is row ``T - 1``), as in
            PyTorch advanced indexing, which HAT's OCAB index relies on.

    Returns:
        ``(heads, N, M)`` contiguous, in ``table``'s dtype and device.
    """
    n, m = index.shape
    idx = index.reshape(-1).to(device=table.device, dtype=torch.long)
    idx = torch.where(idx < 0, idx + table.shape[0], idx)  # explicit wrap: fine for every backend
    # Gathering columns of the (heads, T) transpose writes the (heads, N, M) result contiguously, which is
    # several times faster than gathering rows and permuting, and gives SDPA a contiguous mask.
    return table.t().index_select(1, idx).view(-1, n, m)


# ------------------------------------------------------------------------------------------------
# Shifted-window attention masks
# ------------------------------------------------------------------------------------------------


def _region_labels(size: int, window: int, shift: int) -> Tensor:
    """Label each coordinate with its Swin mask region: 0 (body), 1 (last window, unshifted part), 2."""
    labels = torch.zeros(size, dtype=torch.long)
    labels[size - window : size - shift] = 1
    labels[size - shift :] = 2
    return labels


_MASK_CACHE: OrderedDict[tuple, Tensor] = OrderedDict()
_MASK_CACHE_SIZE = 4
_MASK_CACHE_LOCK = Lock()


def shifted_window_mask(
    h: int,
    w: int,
    window_size: SizeLike,
    shift_size: SizeLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cache: bool = True,
) -> Tensor:
    """Attention mask for shifted-window self-attention (Swin / HAT ``calculate_mask``).

    Args:
        h: feature height (multiple of ``wh``).
        w: feature width (multiple of ``ww``).
        window_size: ``ws`` or ``(wh, ww)``.
        shift_size: ``s`` or ``(sh, sw)``; ``0 <= s < ws``.
        device: device of the result.
        dtype: dtype of the result.
        cache: memoise the result (small LRU keyed by every argument). Cached tensors are shared:
            never modify the result in place.

    Returns:
        ``(nW, N, N)`` with ``N = wh * ww``: ``0`` where query and key come from the same image region,
        ``-100`` elsewhere (not ``-inf``, as in the official code).
    """
    wh, ww = to_2tuple(window_size)
    sh, sw = to_2tuple(shift_size)
    device = torch.device(device) if device is not None else torch.device("cpu")
    key = (h, w, wh, ww, sh, sw, device, dtype)
    if cache:
        with _MASK_CACHE_LOCK:
            hit = _MASK_CACHE.get(key)
            if hit is not None:
                _MASK_CACHE.move_to_end(key)
                return hit
    labels = _region_labels(h, wh, sh)[:, None] * 3 + _region_labels(w, ww, sw)[None, :]  # H, W
    windows = window_partition(labels[None, :, :, None], (wh, ww)).reshape(-1, wh * ww)  # nW, N
    mask = torch.zeros(windows.shape[0], wh * ww, wh * ww, dtype=dtype)
    mask.masked_fill_(windows[:, None, :] != windows[:, :, None], -100.0)
    mask = mask.to(device)
    if cache:
        with _MASK_CACHE_LOCK:
            _MASK_CACHE[key] = mask
            while len(_MASK_CACHE) > _MASK_CACHE_SIZE:
                _MASK_CACHE.popitem(last=False)
    return mask


def shifted_window_region_masks(
    window_size: SizeLike,
    shift_size: SizeLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The four distinct per-window masks of shifted-window attention.

    After the cyclic shift only the windows in the last window row and/or last window column mix
    regions, so every window's mask in :func:`shifted_window_mask` is one of four patterns, for any
    image size. Attending window groups separately with these small masks avoids materialising
    ``(nW, N, N)``.

    Args:
        window_size: ``ws`` or ``(wh, ww)``.
        shift_size: ``s`` or ``(sh, sw)``.
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        ``(4, N, N)`` (shared, memoised), values ``0`` / ``-100``: ``[0]`` interior windows (all zero),
        ``[1]`` last window column (not last row), ``[2]`` last window row (not last column), ``[3]`` the
        bottom-right window.
    """
    wh, ww = to_2tuple(window_size)
    sh, sw = to_2tuple(shift_size)
    # The 2x2 window grid is exactly (interior, right, bottom, corner) in row-major order. Memoised (small):
    # do not modify the result in place.
    return shifted_window_mask(2 * wh, 2 * ww, (wh, ww), (sh, sw), device=device, dtype=dtype, cache=True)


# ------------------------------------------------------------------------------------------------
# Padding
# ------------------------------------------------------------------------------------------------


def _pad_dim(x: Tensor, pad: int, dim: int) -> Tensor:
    """Pad ``pad`` rows (dim=-2) or columns (dim=-1) at the end: reflect, then replicate the remainder."""
    if pad <= 0:
        return x
    size = x.shape[dim]
    reflect = min(pad, size - 1)
    if reflect > 0:
        spec = (0, reflect, 0, 0) if dim == -1 else (0, 0, 0, reflect)
        x = F.pad(x, spec, mode="reflect")
    rest = pad - reflect
    if rest > 0:
        spec = (0, rest, 0, 0) if dim == -1 else (0, 0, 0, rest)
        x = F.pad(x, spec, mode="replicate")
    return x


def pad_to_multiple(x: Tensor, multiple: SizeLike) -> tuple[Tensor, tuple[int, int]]:
    """Pad a batch of images at the bottom/right so that H and W become multiples of ``multiple``.

    Uses ``'reflect'`` (the official HAT / BasicSR test-time padding, applied only when needed). Reflect
    can supply at most ``size - 1`` rows; the part of the pad beyond that is filled by ``'replicate'``
    of the reflected border, so any size ``>= 1`` works.

    Args:
        x: ``(B, C, H, W)``.
        multiple: ``m`` or ``(mh, mw)``.

    Returns:
        ``(x_padded, (pad_h, pad_w))``; ``x_padded`` is ``x`` itself when no padding is needed.
    """
    mh, mw = to_2tuple(multiple)
    h, w = x.shape[-2:]
    pad_h = (mh - h % mh) % mh
    pad_w = (mw - w % mw) % mw
    if pad_h == 0 and pad_w == 0:
        return x, (0, 0)
    if pad_h < h and pad_w < w:
        return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect"), (pad_h, pad_w)
    return _pad_dim(_pad_dim(x, pad_h, -2), pad_w, -1), (pad_h, pad_w)


def crop_to(x: Tensor, height: int, width: int) -> Tensor:
    """Keep the top-left ``height x width`` of ``(..., H, W)`` (the crop matching :func:`pad_to_multiple`)."""
    if x.shape[-2] == height and x.shape[-1] == width:
        return x
    return x[..., :height, :width]


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    """Two-layer token MLP: ``fc1 -> act -> drop -> fc2 -> drop``.

    Args:
        in_features: input channels ``C``.
        hidden_features: hidden channels (default ``C``).
        out_features: output channels (default ``C``).
        act_layer: activation class (default exact GELU).
        drop: dropout probability (training only).

    Shapes: ``(..., C) -> (..., out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PatchEmbed(nn.Module):
    """Feature map to tokens (patch size 1 in practice): flatten, then optional LayerNorm ``norm``.

    Args:
        img_size: nominal image size (bookkeeping only).
        patch_size: nominal patch size (bookkeeping only; no patchification happens, as in HAT/SwinIR).
        in_chans: unused, kept for signature compatibility.
        embed_dim: channels ``C``.
        norm_layer: normalisation class or ``None``.

    Shapes: ``(B, C, H, W) -> (B, H*W, C)``.
    """

    def __init__(
        self,
        img_size: SizeLike = 224,
        patch_size: SizeLike = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        img_size = to_2tuple(img_size)
        patch_size = to_2tuple(patch_size)
        self.img_size = img_size
        self.patch_size = patch_size
        self.patches_resolution = [img_size[0] // patch_size[0], img_size[1] // patch_size[1]]
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x


class PatchUnEmbed(nn.Module):
    """Tokens to feature map; no parameters.

    Args:
        img_size: nominal image size (bookkeeping only).
        patch_size: nominal patch size (bookkeeping only).
        in_chans: unused.
        embed_dim: channels ``C``.
        norm_layer: ignored (HAT passes one but never uses it).

    Shapes: ``(B, H*W, C), (H, W) -> (B, C, H, W)``. The result is a view of the input when the input is
    contiguous (channels-last memory layout); call ``.contiguous()`` if NCHW memory is required.
    """

    def __init__(
        self,
        img_size: SizeLike = 224,
        patch_size: SizeLike = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        img_size = to_2tuple(img_size)
        patch_size = to_2tuple(patch_size)
        self.img_size = img_size
        self.patch_size = patch_size
        self.patches_resolution = [img_size[0] // patch_size[0], img_size[1] // patch_size[1]]
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        b, _, c = x.shape
        return x.transpose(1, 2).view(b, c, x_size[0], x_size[1])


class Upsample(nn.Sequential):
    """Conv + PixelShuffle upsampler (official indices: ``0`` conv, ``1`` shuffle, ``2`` conv, ...).

    Args:
        scale: ``2**n`` (n convs to ``4 * num_feat`` + ``PixelShuffle(2)``; ``1`` gives an empty module) or
            ``3`` (one conv to ``9 * num_feat`` + ``PixelShuffle(3)``).
        num_feat: channels.

    Shapes: ``(B, num_feat, H, W) -> (B, num_feat, H*scale, W*scale)``.
    """

    def __init__(self, scale: int, num_feat: int) -> None:
        m: list[nn.Module] = []
        if scale >= 1 and (scale & (scale - 1)) == 0:
            for _ in range(int(math.log2(scale))):
                m.append(nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1))
                m.append(nn.PixelShuffle(2))
        elif scale == 3:
            m.append(nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1))
            m.append(nn.PixelShuffle(3))
        else:
            raise ValueError(f"scale {scale} is not supported. Supported scales: 2^n and 3.")
        super().__init__(*m)


class UpsampleOneStep(nn.Sequential):
    """Lightweight single-step upsampler: conv to ``num_out_ch * scale**2`` then ``PixelShuffle(scale)``.

    Args:
        scale: any integer ``>= 1``.
        num_feat: input channels.
        num_out_ch: output channels.

    Shapes: ``(B, num_feat, H, W) -> (B, num_out_ch, H*scale, W*scale)``; keys ``0.weight``, ``0.bias``.
    """

    def __init__(self, scale: int, num_feat: int, num_out_ch: int) -> None:
        self.num_feat = num_feat
        super().__init__(nn.Conv2d(num_feat, (scale**2) * num_out_ch, 3, 1, 1), nn.PixelShuffle(scale))


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth per sample (identity in eval mode)."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    noise = torch.rand(shape, dtype=x.dtype, device=x.device).add_(keep).floor_()
    return x.div(keep) * noise


class DropPath(nn.Module):
    """Stochastic depth module (no parameters)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)
