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
from dataclasses import dataclass
from threading import Lock

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "init_transformer_weights",
    "BiasFreeLayerNorm",
    "ChannelLayerNorm",
    "WithBiasLayerNorm",
    "DropPath",
    "drop_path",
    "Mlp",
    "PatchEmbed",
    "PatchUnEmbed",
    "Upsample",
    "UpsampleOneStep",
    "WindowAttention",
    "WindowPartition",
    "crop_to",
    "gather_relative_position_bias",
    "make_window_partition",
    "pad_to_multiple",
    "pad_symmetric",
    "pad_symmetric_always",
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
# Shifted-window attention (fast path shared by HAT, DRCT, ...)
# ------------------------------------------------------------------------------------------------


@dataclass
class WindowPartition:
    """Token order of one window layout: ``tokens[:, perm]`` are the windows, ``[:, inv]`` undoes it.

    ``perm`` / ``inv`` of ``None`` mean the tokens are already in this window order (no gather needed).
    ``groups`` lists ``(first_window, end_window, region)``: the windows in ``[first, end)`` all use the
    shift mask ``region`` of :func:`shifted_window_region_masks` (``0`` = no mask).
    """

    perm: Tensor | None
    inv: Tensor | None
    groups: list[tuple[int, int, int]]

    @property
    def is_identity(self) -> bool:
        return self.perm is None

    def relative_to(self, base: WindowPartition) -> WindowPartition:
        """This layout for tokens that are stored in ``base``'s window order instead of raster order.

        A model that keeps its tokens in the order of one layout (say the plain windows) then needs no
        gather at all for blocks of that layout, and one gather each way for the other layout.
        """
        if base is self:
            return WindowPartition(None, None, list(self.groups))
        if base.perm is None:
            return self
        if self.perm is None:
            raise ValueError("relative_to needs a partition expressed in raster order")
        # stored = raster[base.perm]; wanted = raster[self.perm] = stored[base.inv[self.perm]]
        return WindowPartition(base.inv[self.perm], self.inv[base.perm], list(self.groups))


def make_window_partition(
    h: int, w: int, window_size: int, shift: int, device: torch.device | str | None = None
) -> WindowPartition:
    """Token gather order for the (cyclically shifted) window partition of an ``h x w`` raster.

    Equals ``torch.roll(x, (-shift, -shift))`` followed by :func:`window_partition`, as one index. Shifted
    windows are grouped as interior / last window column / last window row / bottom-right corner, which
    matches the four masks of :func:`shifted_window_region_masks`; unshifted windows form one group.

    Args:
        h: raster height (multiple of ``window_size``).
        w: raster width (multiple of ``window_size``).
        window_size: square window side ``ws``.
        shift: cyclic shift ``0 <= shift < ws``.
        device: device of the index tensors.
    """
    ws = int(window_size)
    if h % ws or w % ws:
        raise ValueError(f"feature size {h}x{w} is not a multiple of the window size {ws}")
    rows = (torch.arange(h, device="cpu") + shift) % h  # roll by -shift: shifted[i] = x[(i + shift) % h]
    cols = (torch.arange(w, device="cpu") + shift) % w
    flat = (rows[:, None] * w + cols[None, :])[None, :, :, None]  # 1, h, w, 1
    nh, nw = h // ws, w // ws
    win = window_partition(flat, ws).view(nh, nw, ws * ws)
    if shift == 0:
        perm = win.reshape(-1)
        groups = [(0, nh * nw, 0)]
    else:
        parts = [
            (win[: nh - 1, : nw - 1], 0),
            (win[: nh - 1, nw - 1 :], 1),
            (win[nh - 1 :, : nw - 1], 2),
            (win[nh - 1 :, nw - 1 :], 3),
        ]
        chunks, groups, start = [], [], 0
        for part, region in parts:
            n = part.shape[0] * part.shape[1]
            if n == 0:
                continue
            chunks.append(part.reshape(-1))
            groups.append((start, start + n, region))
            start = start + n  # not +=: traced for ONNX export, start is a tensor that the tuple above holds
        perm = torch.cat(chunks)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device="cpu")
    device = torch.device(device) if device is not None else torch.device("cpu")
    return WindowPartition(perm.to(device), inv.to(device), groups)


class WindowAttention(nn.Module):
    """Window multi-head self-attention with relative position bias (Swin W-MSA / SW-MSA), fast form.

    Parameter names are the official Swin / HAT / DRCT ones (``relative_position_bias_table``, ``qkv``,
    ``proj``). Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` with the
    bias (plus, for shifted windows, one of the four region masks) as an additive ``(1, heads, N, N)``
    mask, one call per window group of the :class:`WindowPartition`; the window gather is one
    ``index_select`` and the ``(nW, N, N)`` mask is never built. Same math as the official
    ``softmax(q k^T * scale + bias + mask) v`` (mask fill ``-100``).

    Args:
        dim: channels ``C`` (a multiple of ``num_heads``).
        window_size: ``ws`` or ``(wh, ww)``.
        num_heads: heads.
        qkv_bias: bias in ``qkv``.
        qk_scale: overrides ``head_dim ** -0.5``.
        attn_drop: attention dropout probability (training only).
        proj_drop: output dropout probability (training only).
        index_buffer: register the Swin ``relative_position_index`` ``(N, N)`` int64 buffer (persistent,
            as in Swin / DRCT, whose checkpoints hold one per block); without it the caller passes the
            index to :meth:`forward` (HAT keeps one top-level buffer for all blocks).
    """

    def __init__(
        self,
        dim: int,
        window_size: SizeLike,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        index_buffer: bool = False,
    ) -> None:
        super().__init__()
        window_size = to_2tuple(window_size)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads)
        )
        if index_buffer:
            self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"

    def forward(
        self,
        x: Tensor,
        part: WindowPartition,
        region_masks: Tensor | None = None,
        rpi: Tensor | None = None,
    ) -> Tensor:
        """Attend within windows.

        Args:
            x: ``(B, L, C)`` normalised tokens, in the order ``part`` is expressed against (raster order,
                or the stored window order for a partition made with :meth:`WindowPartition.relative_to`).
            part: window layout of this block (from :func:`make_window_partition`).
            region_masks: ``(4, N, N)`` from :func:`shifted_window_region_masks`; needed when ``part`` has
                shifted groups.
            rpi: ``(N, N)`` relative position index; default: this module's ``relative_position_index``.

        Returns:
            ``(B, L, C)`` in the same token order as ``x`` (after ``proj``).
        """
        b, n_tok, c = x.shape
        heads = self.num_heads
        n = self.window_size[0] * self.window_size[1]
        n_win = n_tok // n
        if part.perm is not None:
            x = x.index_select(1, part.perm)
        qkv = self.qkv(x).view(b, n_win, n, 3, heads, c // heads)
        index = rpi if rpi is not None else self.relative_position_index
        bias = gather_relative_position_bias(self.relative_position_bias_table, index).to(qkv.dtype)
        dropout = self.attn_drop if self.training else 0.0

        outs = []
        for start, end, region in part.groups:
            ng = end - start
            grp = qkv[:, start:end] if ng != n_win else qkv
            q, k, v = (grp[:, :, :, i].transpose(2, 3).reshape(b * ng, heads, n, -1) for i in range(3))
            if region == 0:
                mask = bias
            else:
                if region_masks is None:
                    raise ValueError("shifted windows need region_masks")
                mask = bias + region_masks[region].to(bias.dtype)
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask.unsqueeze(0), dropout_p=dropout, scale=self.scale
            )
            outs.append(o.view(b, ng, heads, n, -1).transpose(2, 3))  # B, ng, N, heads, d
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        out = self.proj(out.reshape(b, n_tok, c))
        if part.inv is not None:
            out = out.index_select(1, part.inv)
        return self.proj_drop(out)


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


def _symmetric_indices(size: int, pad: int) -> Tensor:
    """``0 .. size + pad - 1`` folded into ``[0, size)`` by mirrors that repeat the edge sample.

    ``size=3, pad=7``: ``0 1 2 | 2 1 0 | 0 1 2 | 2`` (period ``2 * size``).
    """
    i = torch.arange(size + pad, device="cpu") % (2 * size)
    return torch.where(i < size, i, 2 * size - 1 - i)


def pad_symmetric(x: Tensor, pad_h: int, pad_w: int) -> Tensor:
    """Pad ``(..., H, W)`` at the bottom/right with mirror images that repeat the edge row/column.

    For ``pad <= size`` this is exactly ``torch.cat([x, x.flip(d)], d)[..., :size + pad]`` (the flip padding
    of the SwinIR / DRCT / CRAFT inference scripts, numpy ``'symmetric'``); larger pads continue the
    mirroring periodically, so any size ``>= 1`` works.
    """
    if pad_h > 0:
        x = x.index_select(-2, _symmetric_indices(x.shape[-2], pad_h).to(x.device))
    if pad_w > 0:
        x = x.index_select(-1, _symmetric_indices(x.shape[-1], pad_w).to(x.device))
    return x


def pad_symmetric_always(x: Tensor, multiple: SizeLike) -> tuple[Tensor, tuple[int, int]]:
    """The inference-script padding of SwinIR / DRCT / CRAFT: always ``(size // m + 1) * m - size``.

    That is ``1 .. m`` rows / columns (a full ``m`` when the size is already a multiple), filled by
    :func:`pad_symmetric`. Crop the result with :func:`crop_to`.

    Args:
        x: ``(B, C, H, W)``.
        multiple: ``m`` or ``(mh, mw)``.

    Returns:
        ``(x_padded, (pad_h, pad_w))``.
    """
    mh, mw = to_2tuple(multiple)
    h, w = x.shape[-2:]
    pad_h, pad_w = mh - h % mh, mw - w % mw
    return pad_symmetric(x, pad_h, pad_w), (pad_h, pad_w)


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


# ------------------------------------------------------------------------------------------------
# Restormer-style channel LayerNorm (CRAFT, DLGSANet, ...)
# ------------------------------------------------------------------------------------------------


class WithBiasLayerNorm(nn.Module):
    """LayerNorm over the last dimension with weight and bias, eps ``1e-5`` inside the square root.

    Restormer's ``WithBias_LayerNorm`` (``(x - mean) / sqrt(var + 1e-5) * weight + bias``, biased variance),
    which is exactly :func:`torch.nn.functional.layer_norm`. Keys ``weight``, ``bias``.

    Shapes: ``(..., C) -> (..., C)``.
    """

    def __init__(self, normalized_shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, 1e-5)


class BiasFreeLayerNorm(nn.Module):
    """Restormer's ``BiasFree_LayerNorm``: ``x / sqrt(var + 1e-5) * weight``, ``x`` **not** centred.

    The variance is still taken about the mean (biased). Key ``weight``. Shapes: ``(..., C) -> (..., C)``.
    """

    def __init__(self, normalized_shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: Tensor) -> Tensor:
        var = x.var(-1, keepdim=True, unbiased=False)
        return x * torch.rsqrt(var + 1e-5) * self.weight


class ChannelLayerNorm(nn.Module):
    """Restormer's ``LayerNorm(dim, LayerNorm_type)``: normalises the channels of an NCHW map.

    The parameters live in ``body`` (keys ``body.weight`` and, unless ``'BiasFree'``, ``body.bias``), as in
    Restormer / CRAFT checkpoints (``norm.body.weight`` ...). Any type other than ``'BiasFree'`` means with
    bias, as in the official code (CRAFT passes ``'with_bias'`` and ``'WithBias'``).

    ``forward`` takes ``(B, C, H, W)`` and returns ``(B, C, H, W)`` (channels-last memory: a permuted view of
    the token result). Code that keeps features channels-last calls ``body`` directly on ``(..., C)``.
    """

    def __init__(self, dim: int, layer_norm_type: str = "WithBias") -> None:
        super().__init__()
        self.body = BiasFreeLayerNorm(dim) if layer_norm_type == "BiasFree" else WithBiasLayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def init_transformer_weights(m: nn.Module) -> None:
    """Swin-family initialisation (``model.apply(init_transformer_weights)``): truncated-normal
    linear weights (std 0.02) with zero bias, unit LayerNorms. Only matters when training from
    scratch; loaded checkpoints overwrite it."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)
