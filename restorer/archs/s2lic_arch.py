"""S2LIC: learned image compression with SwinV2 transforms and an adaptive channel-wise + global-inter
attention context (ACGC) entropy model in a parallel checkerboard.

Wang, Liang, Liang, Fu, "S2LIC: Learned Image Compression with the SwinV2 Block, Adaptive Channel-wise
and Global-inter Attention Context", arXiv 2403.14471.

What is published and what is reconstructed
-------------------------------------------
The official repository (``wyq2021/S2LIC``) holds one file, ``code/s2lic.py``, which imports layers that
were never released (``RSTB``, ``HyperAnalysis``, ``HyperSynthesis``, ``EnhModule``, ``ACCTX``, ``AGCTX``,
``EntropyParameters``, ``LatentResidualPrediction``, the ``ckbd`` helpers), and no checkpoint. So:

* **From the official file** [R]: the top-level structure and attribute names (``enh``, ``g_a0``..``g_a6``,
  ``h_a``, ``h_s``, ``g_s0``..``g_s6``, ``entropy_bottleneck``, ``gaussian_conditional``,
  ``channel_wise_context``, ``global_inter_context``, ``entropy_parameters_anchor`` / ``_nonanchor``,
  ``lrp_anchor`` / ``_nonanchor``), N=192, M=320, 10 slices of ``M // 10`` channels, depths
  ``[1, 2, 3, 1, 1]``, heads ``[4, 8, 16, 16, 16]``, window 8, MLP ratio 4, stochastic depth
  ``linspace(0, 0.1)``, the entropy-parameter input widths (``2M`` for slice 0, ``2M + 3 * slice_ch``
  after), the LRP input widths (``M + (i + 1) * slice_ch``), the context output widths (64 channel-wise,
  32 global-inter, heads ``slice_ch * i // 32``), the order anchor -> LRP -> non-anchor -> LRP, and the
  compress/decompress flow (one rANS stream for all 20 half-slices).
* **From the ancestors the README credits** [R there, I that S2LIC uses them unchanged]: ``EnhModule``
  (InvCompress), the ``RSTB`` wrapper and ``conv``/``deconv`` (TIC), ``HyperAnalysis``/``HyperSynthesis``,
  ``EntropyParameters``, ``LatentResidualPrediction`` and the checkerboard helpers (MLIC++), the SwinV2
  block (microsoft/Swin-Transformer).
* **Reconstructed from the paper's figures** [I]: ``ACCTX`` and ``AGCTX``. Each class docstring says which
  part is the figure's and which is our choice.
* **Paper versus code**: the entropy figure feeds the decoded anchors of the current slice into the
  non-anchor context; the released code does not. ``intra_slice_context=True`` (default) builds the
  figure's version with two extra context lists (``channel_wise_context_nonanchor``,
  ``global_inter_context_nonanchor``) whose input is ``[y_hat_<i, anchor_hat_i]``; ``False`` gives exactly
  the released layout.

Entropy coding is CompressAI's (``EntropyBottleneck``, ``GaussianConditional``, buffered rANS); CompressAI
is imported lazily because importing it costs seconds. The coding path runs one function for the
encoder and the decoder (:meth:`S2LIC._code_y`), differing only in where the integer symbols come from,
so every tensor the decoder builds is computed by the same operations on the same shapes as the
encoder's. See :func:`deterministic_entropy_coding` for the remaining conditions of bit-exact decoding.

Shapes: input ``(1 or B, 3, H, W)`` in ``[0, 1]`` with ``H, W`` multiples of 64 (the codec pads);
``y``: ``(B, M, H/16, W/16)``; ``z``: ``(B, N, H/64, W/64)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restorer.archs.layers import (
    DropPath,
    Mlp,
    PatchEmbed,
    PatchUnEmbed,
    WindowPartition,
    gather_relative_position_bias,
    init_transformer_weights,
    make_window_partition,
    relative_position_index,
    shifted_window_region_masks,
    to_2tuple,
)
from restorer.archs.registry import register

__all__ = [
    "ACCTX",
    "AGCTX",
    "LATENT_MULTIPLE",
    "S2LIC",
    "CodedLatents",
    "DecodeMismatchError",
    "DeformableGlobalAttention",
    "EnhModule",
    "EntropyParameters",
    "HyperAnalysis",
    "HyperSynthesis",
    "LatentResidualPrediction",
    "RSTB",
    "ckbd_anchor",
    "ckbd_nonanchor",
    "ckbd_squeeze",
    "ckbd_unsqueeze",
    "deterministic_entropy_coding",
    "get_scale_table",
]

LATENT_MULTIPLE = 64
"""Image sides must be multiples of this: y is at 1/16 (windows of 8 at 1/8, even checkerboard width at
1/16) and z at 1/64."""

# Ballé's scale table: log-spaced scales from 0.11 to 256. CompressAI and the official file use 64
# levels; every predicted scale is snapped up to the next level, which costs 4.2 % of the rate over the
# model's own estimate (s2lic-small, corpus photos; bench/codec_train_vs_coded.py). 256 levels cost
# 1.0 % for tables 4x the size (still a few hundred kB). ``.s2l`` files record the level count, so files
# written with 64 (format version 1) still decode.
SCALES_MIN, SCALES_MAX = 0.11, 256.0
SCALES_LEVELS = 256
LEGACY_SCALES_LEVELS = 64

# Names of buffers that are pure functions of the configuration (recomputed, never loaded). SwinV2
# checkpoints carry them; we drop them from incoming state dicts.
_DERIVED_BUFFERS = ("relative_coords_table", "relative_position_index", "attn_mask")
# CompressAI buffers whose size depends on update(): resized to the incoming tensors before loading.
_EB_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")
_GC_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def get_scale_table(low: float = SCALES_MIN, high: float = SCALES_MAX, levels: int = SCALES_LEVELS) -> Tensor:
    """``exp(linspace(ln low, ln high, levels))``: the GaussianConditional's scale table."""
    return torch.exp(torch.linspace(math.log(low), math.log(high), levels))


# ------------------------------------------------------------------------------------------------
# Small convolution helpers (TIC / MLIC ``conv``, ``deconv``, CompressAI ``conv3x3``, ``subpel_conv3x3``)
# ------------------------------------------------------------------------------------------------


def conv(in_ch: int, out_ch: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    """Conv2d with ``padding = kernel_size // 2`` (halves the size for stride 2 and even sides)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(in_ch: int, out_ch: int, kernel_size: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """ConvTranspose2d with ``padding = k // 2``, ``output_padding = stride - 1`` (exact x2 for stride 2)."""
    return nn.ConvTranspose2d(
        in_ch, out_ch, kernel_size, stride=stride, output_padding=stride - 1, padding=kernel_size // 2
    )


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1)


def subpel_conv3x3(in_ch: int, out_ch: int, r: int = 1) -> nn.Sequential:
    """3x3 conv to ``out_ch * r**2`` then PixelShuffle(r) (keys ``0.weight``, ``0.bias``)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch * r**2, kernel_size=3, padding=1), nn.PixelShuffle(r))


def ste_round(x: Tensor) -> Tensor:
    """Rounding with a straight-through (identity) gradient."""
    return (torch.round(x) - x).detach() + x


# ------------------------------------------------------------------------------------------------
# Checkerboard helpers (MLIC ``utils/ckbd.py`` semantics) [R]
# Anchors are (even row, odd column) and (odd row, even column); non-anchors the other half.
# ------------------------------------------------------------------------------------------------


def _anchor_mask(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device)[:, None]
    cols = torch.arange(w, device=x.device)[None, :]
    return ((rows + cols) % 2 == 1).to(x.dtype)


def ckbd_anchor(x: Tensor) -> Tensor:
    """``x`` with the non-anchor positions set to zero. ``(B, C, H, W) -> (B, C, H, W)``."""
    return x * _anchor_mask(x)


def ckbd_nonanchor(x: Tensor) -> Tensor:
    """``x`` with the anchor positions set to zero. ``(B, C, H, W) -> (B, C, H, W)``."""
    return x * (1 - _anchor_mask(x))


def ckbd_squeeze(x: Tensor, anchor: bool) -> Tensor:
    """Pack one checkerboard half: ``(B, C, H, W) -> (B, C, H, W/2)`` (``H``, ``W`` even).

    Anchors: even rows keep their odd columns, odd rows their even columns; non-anchors the opposite.
    """
    first, second = (1, 0) if anchor else (0, 1)
    b, c, h, w = x.shape
    out = x.new_empty(b, c, h, w // 2)
    out[:, :, 0::2] = x[:, :, 0::2, first::2]
    out[:, :, 1::2] = x[:, :, 1::2, second::2]
    return out


def ckbd_unsqueeze(x: Tensor, anchor: bool) -> Tensor:
    """Inverse of :func:`ckbd_squeeze`, zeros at the other half: ``(B, C, H, W/2) -> (B, C, H, W)``."""
    first, second = (1, 0) if anchor else (0, 1)
    b, c, h, w2 = x.shape
    out = x.new_zeros(b, c, h, w2 * 2)
    out[:, :, 0::2, first::2] = x[:, :, 0::2]
    out[:, :, 1::2, second::2] = x[:, :, 1::2]
    return out


# ------------------------------------------------------------------------------------------------
# EnhModule (InvCompress ``EnhModule`` / ``EnhBlock`` / ``DenseBlock``) [R InvCompress; I for S2LIC]
# ------------------------------------------------------------------------------------------------


class DenseBlock(nn.Module):
    """Five 3x3 convs with dense concatenation (growth ``gc``), LeakyReLU 0.2 after the first four.

    Init as InvCompress: Xavier-normal x 0.1 for ``conv1..4``, zero for ``conv5``.
    Shapes: ``(B, channel_in, H, W) -> (B, channel_out, H, W)``.
    """

    def __init__(self, channel_in: int, channel_out: int, gc: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channel_in, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(channel_in + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(channel_in + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(channel_in + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(channel_in + 4 * gc, channel_out, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4):
            nn.init.xavier_normal_(layer.weight)
            layer.weight.data.mul_(0.1)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.conv5.weight)
        nn.init.zeros_(self.conv5.bias)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        return self.conv5(torch.cat((x, x1, x2, x3, x4), 1))


class EnhBlock(nn.Module):
    """``x + 0.2 * L(x)``, ``L`` = DenseBlock(3 -> nf), 1x1, 3x3, 1x1 (no activations), DenseBlock(nf -> 3).

    Starts as the identity (the last DenseBlock's ``conv5`` is zero). ``(B, 3, H, W) -> (B, 3, H, W)``.
    """

    def __init__(self, nf: int, gc: int = 32, channels: int = 3) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            DenseBlock(channels, nf, gc),
            nn.Conv2d(nf, nf, kernel_size=1),
            nn.Conv2d(nf, nf, kernel_size=3, padding=1),
            nn.Conv2d(nf, nf, kernel_size=1),
            DenseBlock(nf, channels, gc),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x) * 0.2


class EnhModule(nn.Module):
    """The "dense block" enhancement at the input and the output of the codec (the paper's figure).

    Two independent :class:`EnhBlock`: ``forw_enh`` before ``g_a`` and ``back_enh`` (``rev=True``) after
    ``g_s``. It is not invertible; ``rev`` only selects the second block [R InvCompress].
    """

    def __init__(self, nf: int = 64, gc: int = 32) -> None:
        super().__init__()
        self.forw_enh = EnhBlock(nf, gc)
        self.back_enh = EnhBlock(nf, gc)

    def forward(self, x: Tensor, rev: bool = False) -> Tensor:
        return self.back_enh(x) if rev else self.forw_enh(x)


# ------------------------------------------------------------------------------------------------
# Residual SwinV2 transformer block (RS2TB): TIC's RSTB wrapper around SwinV2 blocks
# ------------------------------------------------------------------------------------------------


def log_spaced_relative_coords(window_size: tuple[int, int]) -> Tensor:
    """SwinV2's continuous-position-bias inputs: ``(1, 2*wh-1, 2*ww-1, 2)``.

    Offsets ``d`` in ``[-(W-1), W-1]`` are scaled to ``d' = 8 d / (W-1)`` and mapped to
    ``sign(d') * log2(1 + |d'|) / log2(8)`` (no pretrained-window rescaling).
    """
    wh, ww = window_size
    dy = torch.arange(-(wh - 1), wh, dtype=torch.float32)
    dx = torch.arange(-(ww - 1), ww, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(dy, dx, indexing="ij")).permute(1, 2, 0).contiguous()[None]
    table[..., 0] /= max(wh - 1, 1)
    table[..., 1] /= max(ww - 1, 1)
    table *= 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


class WindowAttentionV2(nn.Module):
    """SwinV2 window attention: cosine attention with a learned per-head temperature and a
    log-spaced continuous position bias (CPB) [R SwinV2].

    ``A = cos(q, k) * exp(min(logit_scale, ln 100)) + 16 * sigmoid(cpb_mlp(coords))[rpi] + mask``. The
    ``qkv`` Linear has no bias; ``q_bias`` and ``v_bias`` are separate parameters (the k bias is zero).
    Keys as SwinV2: ``logit_scale``, ``cpb_mlp.{0,2}``, ``qkv``, ``q_bias``, ``v_bias``, ``proj``. The
    coordinate table and the index are non-persistent buffers (functions of the window size).

    Attention runs through SDPA per window group of a :class:`~restorer.archs.layers.WindowPartition`
    (the shared shifted-window machinery), with ``q`` pre-normalised and pre-scaled so SDPA's scale is 1.

    Shapes: ``(B, L, C)`` tokens in raster order -> ``(B, L, C)``.
    """

    def __init__(
        self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")
        self.dim = dim
        self.window_size = to_2tuple(window_size)
        self.num_heads = num_heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1))))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True), nn.Linear(512, num_heads, bias=False)
        )
        self.register_buffer(
            "relative_coords_table", log_spaced_relative_coords(self.window_size), persistent=False
        )
        self.register_buffer(
            "relative_position_index", relative_position_index(self.window_size), persistent=False
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> Tensor:
        """``(heads, N, N)``: ``16 * sigmoid`` of the CPB MLP gathered by the relative position index."""
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        return 16 * torch.sigmoid(gather_relative_position_bias(table, self.relative_position_index))

    def forward(self, x: Tensor, part: WindowPartition, region_masks: Tensor | None = None) -> Tensor:
        b, n_tok, c = x.shape
        heads = self.num_heads
        n = self.window_size[0] * self.window_size[1]
        n_win = n_tok // n
        if part.perm is not None:
            x = x.index_select(1, part.perm)
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).view(b, n_win, n, 3, heads, c // heads)
        logit_scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()  # heads, 1, 1
        pos_bias = self.position_bias().to(qkv.dtype)
        dropout = self.attn_drop if self.training else 0.0
        outs = []
        for start, end, region in part.groups:
            ng = end - start
            grp = qkv[:, start:end] if ng != n_win else qkv
            q, k, v = (grp[:, :, :, i].transpose(2, 3).reshape(b * ng, heads, n, -1) for i in range(3))
            q = F.normalize(q, dim=-1) * logit_scale
            k = F.normalize(k, dim=-1)
            mask = pos_bias if region == 0 else pos_bias + region_masks[region].to(pos_bias.dtype)
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask.unsqueeze(0), dropout_p=dropout, scale=1.0
            )
            outs.append(o.view(b, ng, heads, n, -1).transpose(2, 3))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        out = self.proj(out.reshape(b, n_tok, c))
        if part.inv is not None:
            out = out.index_select(1, part.inv)
        return out


class SwinV2Block(nn.Module):
    """SwinV2 block with res-post-norm: ``x + DropPath(LN(WMSA(x)))``, then ``x + DropPath(LN(MLP(x)))``.

    Keys ``norm1``, ``attn.*``, ``norm2``, ``mlp.fc1``, ``mlp.fc2`` [R SwinV2]. ``(B, L, C) -> (B, L, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 8,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.attn = WindowAttentionV2(dim, window_size, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop)
        self.norm1 = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=drop)

    def forward(self, x: Tensor, part: WindowPartition, region_masks: Tensor | None) -> Tensor:
        x = x + self.drop_path(self.norm1(self.attn(x, part, region_masks)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class BasicLayer(nn.Module):
    """``depth`` SwinV2 blocks, shift ``window_size // 2`` on odd blocks (key ``blocks.<i>``)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(
            SwinV2Block(
                dim,
                num_heads,
                window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i] if isinstance(drop_path, Sequence) else drop_path,
            )
            for i in range(depth)
        )

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        h, w = x_size
        ws = self.window_size
        shift = ws // 2
        device = x.device
        plain = make_window_partition(h, w, ws, 0, device)
        shifted = make_window_partition(h, w, ws, shift, device) if len(self.blocks) > 1 else None
        masks = shifted_window_region_masks(ws, shift, device=device, dtype=x.dtype) if shifted else None
        for blk in self.blocks:
            x = blk(x, shifted if blk.shift_size else plain, masks if blk.shift_size else None)
        return x


class RSTB(nn.Module):
    """Residual SwinV2 transformer block (RS2TB): ``FU(S2TB^depth(FE(x))) + x`` [R figure, TIC wrapper].

    FE / FU flatten to tokens and back (no parameters). Keys ``residual_group.blocks.<i>.*``.
    ``input_resolution`` is kept for signature parity with the official call; masks are built for the
    actual size. Shapes: ``(B, C, H, W) -> (B, C, H, W)``, ``H, W`` multiples of ``window_size``.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float | Sequence[float] = 0.0,
        input_resolution: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.residual_group = BasicLayer(
            dim, depth, num_heads, window_size, mlp_ratio, qkv_bias, drop, attn_drop, drop_path
        )
        self.patch_embed = PatchEmbed(embed_dim=dim)
        self.patch_unembed = PatchUnEmbed(embed_dim=dim)

    def forward(self, x: Tensor, x_size: tuple[int, int] | None = None) -> Tensor:
        x_size = tuple(x.shape[-2:]) if x_size is None else x_size
        tokens = self.residual_group(self.patch_embed(x), x_size)
        return self.patch_unembed(tokens, x_size) + x


# ------------------------------------------------------------------------------------------------
# Hyperprior, entropy parameters, latent residual prediction (MLIC++) [R MLIC++]
# ------------------------------------------------------------------------------------------------


class HyperAnalysis(nn.Module):
    """``h_a``: conv3x3 M->N, GELU, conv3x3, GELU, conv3x3 s2, GELU, conv3x3, GELU, conv3x3 s2.

    ``(B, M, h, w) -> (B, N, h/4, w/4)``; keys ``reduction.{0,2,4,6,8}``.
    """

    def __init__(self, M: int = 320, N: int = 192) -> None:
        super().__init__()
        self.reduction = nn.Sequential(
            conv3x3(M, N),
            nn.GELU(),
            conv3x3(N, N),
            nn.GELU(),
            conv3x3(N, N, stride=2),
            nn.GELU(),
            conv3x3(N, N),
            nn.GELU(),
            conv3x3(N, N, stride=2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.reduction(x)


class HyperSynthesis(nn.Module):
    """``h_s``: conv3x3 N->M, GELU, subpel x2, GELU, conv3x3 M->1.5M, GELU, subpel x2, GELU, conv3x3 -> 2M.

    ``(B, N, h, w) -> (B, 2M, 4h, 4w)`` = (hyper_scales, hyper_means); keys ``increase.*``.
    """

    def __init__(self, M: int = 320, N: int = 192) -> None:
        super().__init__()
        self.increase = nn.Sequential(
            conv3x3(N, M),
            nn.GELU(),
            subpel_conv3x3(M, M, 2),
            nn.GELU(),
            conv3x3(M, M * 3 // 2),
            nn.GELU(),
            subpel_conv3x3(M * 3 // 2, M * 3 // 2, 2),
            nn.GELU(),
            conv3x3(M * 3 // 2, M * 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.increase(x)


class EntropyParameters(nn.Module):
    """Point-wise fusion to (scales, means): 1x1 convs in -> 320 -> 256 -> 128 -> out with GELUs.

    Scales are raw outputs (the GaussianConditional lower-bounds them at 0.11). ``hidden`` defaults to
    MLIC++'s widths; small configurations pass narrower ones. Keys ``fusion.{0,2,4,6}``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (320, 256, 128)) -> None:
        super().__init__()
        widths = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(a, b, kernel_size=1), nn.GELU()]
        layers.append(nn.Conv2d(widths[-1], out_dim, kernel_size=1))
        self.fusion = nn.Sequential(*layers)

    def forward(self, params: Tensor) -> Tensor:
        return self.fusion(params)


class LatentResidualPrediction(nn.Module):
    """``0.5 * tanh(conv3x3(in -> 224) GELU conv3x3(-> 128) GELU conv3x3(-> out))`` (MLIC++ "new" LRP).

    Predicts the quantisation residual of the half-slice being decoded. Keys ``lrp_transform.{0,2,4}``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (224, 128)) -> None:
        super().__init__()
        widths = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [conv3x3(a, b), nn.GELU()]
        layers.append(conv3x3(widths[-1], out_dim))
        self.lrp_transform = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * torch.tanh(self.lrp_transform(x))


# ------------------------------------------------------------------------------------------------
# ACGC context (reconstructed from the paper's ACGC and global_slice figures)
# ------------------------------------------------------------------------------------------------


def _reduced(dim: int, ratio: int = 8, floor: int = 4) -> int:
    return max(dim // ratio, min(floor, dim))


class SpatialMap(nn.Module):
    """``S_Map``: 1x1 conv -> BN -> GELU -> 1x1 conv (to 1 channel) -> sigmoid; a spatial gate
    ``(B, C, H, W) -> (B, 1, H, W)``. Layer order from the ACGC figure [R figure]; widths (C/8) and the
    single output channel follow MixFormer's spatial interaction [I]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = _reduced(dim)
        self.body = nn.Sequential(
            nn.Conv2d(dim, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class ChannelMap(nn.Module):
    """``C_Map``: global average pool -> 1x1 conv -> BN -> GELU -> 1x1 conv -> sigmoid; a channel gate
    ``(B, C, H, W) -> (B, C, 1, 1)``. Layer order from the figure [R figure]; reduction C/8 [I].

    BatchNorm on pooled ``(B, C, 1, 1)`` features needs a training batch of at least 2.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = _reduced(dim)
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, dim, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class DeformableGlobalAttention(nn.Module):
    """DA of the global_slice figure: multi-head attention of every position to features sampled at
    deformable points of a coarse reference grid, then a 5x5 conv.

    From the figure [R figure]: queries ``W_q x``; offsets from the queries by DW-conv -> GELU -> 1x1 conv
    (2 channels per group); keys and values ``W_k``, ``W_v`` of the features bilinearly sampled at the
    reference points plus offsets; multi-head attention; Conv 5x5.
    Our choices [I, DAT-style (Xia et al., CVPR'22) without its offset LayerNorm and position bias]: one
    offset group per head; reference points at the centres of ``sample_stride`` x ``sample_stride`` cells
    (the offset DW-conv has that stride and kernel ``offset_kernel``); offsets ``tanh(.) * offset_range``
    cells; sampling with zero padding outside the map; scale ``head_dim ** -0.5``.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; ``ceil(H/s) * ceil(W/s)`` keys per head.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sample_stride: int = 4,
        offset_kernel: int = 5,
        offset_range: float = 2.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.sample_stride = sample_stride
        self.offset_range = offset_range
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.conv_offset = nn.Sequential(
            nn.Conv2d(
                self.head_dim,
                self.head_dim,
                offset_kernel,
                stride=sample_stride,
                padding=offset_kernel // 2,
                groups=self.head_dim,
            ),
            nn.GELU(),
            nn.Conv2d(self.head_dim, 2, 1, bias=False),
        )
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 5, padding=2)

    def sampling_grid(self, offsets: Tensor, h: int, w: int) -> Tensor:
        """``(BG, 2, Hk, Wk)`` raw offsets -> ``(BG, Hk, Wk, 2)`` grid_sample coordinates (x, y)."""
        s = self.sample_stride
        hk, wk = offsets.shape[-2:]
        delta = torch.tanh(offsets) * (self.offset_range * s)  # pixels
        ref_y = torch.arange(hk, device=offsets.device, dtype=offsets.dtype) * s + (s - 1) / 2
        ref_x = torch.arange(wk, device=offsets.device, dtype=offsets.dtype) * s + (s - 1) / 2
        pos_y = ref_y[:, None] + delta[:, 0]
        pos_x = ref_x[None, :] + delta[:, 1]
        # align_corners=False: pixel i covers [i, i + 1) -> normalised (2i + 1) / size - 1
        return torch.stack(((2 * pos_x + 1) / w - 1, (2 * pos_y + 1) / h - 1), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        g, d = self.num_heads, self.head_dim
        q = self.proj_q(x)
        offsets = self.conv_offset(q.reshape(b * g, d, h, w))
        grid = self.sampling_grid(offsets, h, w)
        sampled = F.grid_sample(
            x.reshape(b * g, d, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        sampled = sampled.reshape(b, c, *grid.shape[1:3])
        n_keys = sampled.shape[-2] * sampled.shape[-1]
        k = self.proj_k(sampled).reshape(b, g, d, n_keys).transpose(-1, -2)
        v = self.proj_v(sampled).reshape(b, g, d, n_keys).transpose(-1, -2)
        q = q.reshape(b, g, d, h * w).transpose(-1, -2)
        out = F.scaled_dot_product_attention(q, k, v)  # B, G, HW, d
        return self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class ACCTX(nn.Module):
    """Adaptive channel-wise context: ``AC(x) = CA(x) * S_Map(DW(x)) + DW(x) * C_Map(CA(x))``, then a 1x1
    projection to ``out_dim``.

    From the ACGC figure [R figure]: the two branches, their bidirectional gating, CA = conv3x3 -> GELU ->
    conv3x3 -> GELU. Our choices [I]: DW is a 3x3 depth-wise conv; CA keeps the width ``dim``; the output
    projection (the figure shows the result feeding the entropy parameters at ``out_dim`` = 64 channels).
    The official constructor's ``num_heads`` has no role in these convolutional branches and is not taken.

    Shapes: ``(B, dim, H, W) -> (B, out_dim, H, W)``; input = the decoded slices ``y_hat_<i``.
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.ca = nn.Sequential(conv3x3(dim, dim), nn.GELU(), conv3x3(dim, dim), nn.GELU())
        self.s_map = SpatialMap(dim)
        self.c_map = ChannelMap(dim)
        self.proj = nn.Conv2d(dim, out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        local = self.dw(x)
        channel = self.ca(x)
        return self.proj(channel * self.s_map(local) + local * self.c_map(channel))


class AGCTX(nn.Module):
    """Adaptive global-inter context: ``AG(x) = DA(x) * C_Map(DW(x)) + DW(x) * S_Map(DA(x))``, then a 1x1
    projection to ``out_dim``.

    From the ACGC figure [R figure]: the branches and gates; DA is :class:`DeformableGlobalAttention`.
    Our choices [I]: 3x3 depth-wise DW, the output projection. ``num_heads`` as in the official call
    (``slice_ch * i // 32``, i.e. head width 32).

    Shapes: ``(B, dim, H, W) -> (B, out_dim, H, W)``.
    """

    def __init__(self, dim: int, out_dim: int, num_heads: int, sample_stride: int = 4) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.da = DeformableGlobalAttention(dim, num_heads, sample_stride=sample_stride)
        self.s_map = SpatialMap(dim)
        self.c_map = ChannelMap(dim)
        self.proj = nn.Conv2d(dim, out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        local = self.dw(x)
        glob = self.da(x)
        return self.proj(glob * self.c_map(local) + local * self.s_map(glob))


# ------------------------------------------------------------------------------------------------
# Deterministic entropy coding
# ------------------------------------------------------------------------------------------------

_ENTROPY_LOCK = threading.RLock()


class DecodeMismatchError(RuntimeError):
    """The decoder's symbols differ from the encoder's (detected through the symbol digest)."""


@contextlib.contextmanager
def deterministic_entropy_coding(threads: int = 1) -> Iterator[None]:
    """Run the part of coding that computes the Gaussian parameters bit-exactly reproducibly.

    Why an encoder and a decoder could disagree, and what prevents it here:

    * the decoder must derive every scale and mean from exactly the tensors the encoder used: one code
      path (:meth:`S2LIC._code_y`) builds them for both, from the integer symbols, the same way;
    * a reduction's result depends on how it is split across threads (GEMM / conv blocking), so the
      hyper-synthesis, context, entropy-parameter and LRP networks run with a fixed thread count
      (``threads``, recorded in the file so the decoder uses the same one); the lock keeps concurrent
      coders in one process from changing it under each other;
    * TF32 / reduced-precision matmuls and non-deterministic or benchmark-selected cuDNN algorithms are
      switched off for the duration (fp32 "ieee" on every backend that has the setting);
    * scale -> table index uses ``bucketize`` (the same comparison as CompressAI's ``build_indexes``, whose
      loop is pathologically slow with several threads). Quantising scales before indexing would not
      help: it only moves the flip boundaries.

    Whatever remains (another device type, another CPU instruction set, another library version) is
    detected rather than prevented: the file carries a digest of the coded symbols and the decoder
    refuses to return an image when its symbols differ.
    """
    with _ENTROPY_LOCK:
        saved_threads = torch.get_num_threads()
        saved: list[tuple[object, str, object]] = []

        def set_attr(obj: object, name: str, value: object) -> None:
            if hasattr(obj, name):
                saved.append((obj, name, getattr(obj, name)))
                setattr(obj, name, value)

        try:
            torch.set_num_threads(max(1, int(threads)))
            set_attr(torch.backends.cudnn, "deterministic", True)
            set_attr(torch.backends.cudnn, "benchmark", False)
            for backend in (torch.backends.cuda.matmul, torch.backends.cudnn, torch.backends.mkldnn):
                if hasattr(backend, "fp32_precision"):
                    set_attr(backend, "fp32_precision", "ieee")
                else:
                    set_attr(backend, "allow_tf32", False)
            yield
        finally:
            for obj, name, value in reversed(saved):
                setattr(obj, name, value)
            torch.set_num_threads(saved_threads)


@dataclass
class CodedLatents:
    """The entropy-coded representation of one image (batch 1).

    ``y_string``: one rANS stream holding all half-slices in coding order; ``z_string``: the hyper-latent
    stream; shapes are ``(C, h, w)``; ``digest``: 8 bytes of SHA-256 over every coded symbol (int32,
    little-endian, coding order); ``y_hat``: the quantised latent ``(1, M, h, w)`` (decoder input of
    ``g_s``) when available.
    """

    y_string: bytes
    z_string: bytes
    y_shape: tuple[int, int, int]
    z_shape: tuple[int, int, int]
    digest: bytes
    y_hat: Tensor | None = None


def _pad_stream(data: bytes, n_symbols: int) -> bytes:
    """Zero padding behind a stream handed to the rANS decoder.

    CompressAI's decoder reads 32-bit words without bounds checks. A valid stream is never read past its
    end, but a stream decoded with other CDFs (a mismatch this module detects only afterwards) could be;
    the main decoding path reads at most one word per symbol, so this padding keeps such a decoder
    inside our buffer.
    """
    return data + bytes(4 * n_symbols + 4096)


class _SymbolSink:
    """Encoder side of :meth:`S2LIC._code_y`: buffers symbols and indexes for one rANS stream."""

    def __init__(self, cdfs: list, lengths: list, offsets: list, digest) -> None:
        from compressai.ans import BufferedRansEncoder

        self.encoder = BufferedRansEncoder()
        self.tables = (cdfs, lengths, offsets)
        self.digest = digest

    def code(self, indexes: Tensor, symbols: Tensor | None) -> Tensor:
        sym = symbols.to(torch.int32).cpu().contiguous()
        self.encoder.encode_with_indexes(sym.reshape(-1).tolist(), indexes.reshape(-1).tolist(), *self.tables)
        self.digest.update(sym.numpy().astype("<i4").tobytes())
        return symbols

    def finish(self) -> bytes:
        return self.encoder.flush()


class _SymbolSource:
    """Decoder side of :meth:`S2LIC._code_y`: reads the symbols of each half-slice from the stream."""

    def __init__(
        self, stream: bytes, n_symbols: int, cdfs: list, lengths: list, offsets: list, digest
    ) -> None:
        from compressai.ans import RansDecoder

        self.decoder = RansDecoder()
        self.decoder.set_stream(_pad_stream(stream, n_symbols))
        self.tables = (cdfs, lengths, offsets)
        self.digest = digest

    def code(self, indexes: Tensor, symbols: Tensor | None) -> Tensor:
        values = np.asarray(
            self.decoder.decode_stream(indexes.reshape(-1).tolist(), *self.tables), dtype="<i4"
        )
        self.digest.update(values.tobytes())
        return torch.from_numpy(values.astype(np.int32)).reshape(indexes.shape).to(indexes.device)


# ------------------------------------------------------------------------------------------------
# S2LIC
# ------------------------------------------------------------------------------------------------


@register
class S2LIC(nn.Module):
    """S2LIC learned image codec (see the module docstring for what is official and what is inferred).

    Args:
        N: channels of the transforms and of ``z`` (192 published).
        M: channels of ``y`` (320 published).
        num_slices: channel slices of ``y`` (10 published); ``M`` must be a multiple.
        depths: SwinV2 depths as the official list ``[g_a1, g_a3, g_a5, -, -]``; the decoder uses the
            reversed list (``g_s1, g_s3, g_s5`` = entries 2, 3, 4 of the reversed list) and the same
            ``linspace(0, drop_path_rate)`` slices as the official file.
        num_heads: heads per RS2TB, same convention.
        window_size: SwinV2 window (8).
        mlp_ratio: SwinV2 MLP ratio (4).
        qkv_bias: SwinV2 q/v biases.
        drop_path_rate: stochastic depth maximum (0.1).
        enh_channels: EnhModule width (64 published); ``enh_growth``: its dense growth (32).
        ep_hidden: EntropyParameters hidden widths (MLIC++: 320, 256, 128).
        lrp_hidden: LatentResidualPrediction hidden widths (MLIC++: 224, 128).
        ctx_head_dim: head width of the global-inter context (official ``slice_ch * i // 32``: 32).
        ctx_sample_stride: reference-grid stride of the deformable attention [I].
        intra_slice_context: non-anchors also see the decoded anchors of their own slice (the paper's
            figure); ``False`` is the released code's layout.
    """

    def __init__(
        self,
        N: int = 192,
        M: int = 320,
        num_slices: int = 10,
        depths: Sequence[int] = (1, 2, 3, 1, 1),
        num_heads: Sequence[int] = (4, 8, 16, 16, 16),
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        enh_channels: int = 64,
        enh_growth: int = 32,
        ep_hidden: Sequence[int] = (320, 256, 128),
        lrp_hidden: Sequence[int] = (224, 128),
        ctx_head_dim: int = 32,
        ctx_sample_stride: int = 4,
        intra_slice_context: bool = True,
    ) -> None:
        super().__init__()
        from restorer._compat import require_extra

        # compressai is the [codec] extra: a missing one is a one-line error naming it, wherever the
        # codec is built from (compress, decompress, benchmark, the web demo, detection).
        require_extra("compressai", "codec", "S2LIC (the learned codec)")
        from compressai.entropy_models import EntropyBottleneck, GaussianConditional

        if M % num_slices:
            raise ValueError(f"M={M} is not a multiple of num_slices={num_slices}")
        depths, num_heads = list(depths), list(num_heads)
        if len(depths) != 5 or len(num_heads) != 5:
            raise ValueError("depths and num_heads take the official 5-entry lists, e.g. [1, 2, 3, 1, 1]")
        self.N, self.M = int(N), int(M)
        self.num_slices = int(num_slices)
        self.slice_ch = M // num_slices
        self.intra_slice_context = bool(intra_slice_context)
        dpr = [float(v) for v in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]

        def rstb(stage: int, dep: list[int], heads: list[int]) -> RSTB:
            return RSTB(
                N,
                dep[stage],
                heads[stage],
                window_size,
                mlp_ratio,
                qkv_bias,
                drop_path=dpr[sum(dep[:stage]) : sum(dep[: stage + 1])],
            )

        self.enh = EnhModule(enh_channels, enh_growth)
        self.g_a0 = conv(3, N, kernel_size=5, stride=2)
        self.g_a1 = rstb(0, depths, num_heads)
        self.g_a2 = conv(N, N, kernel_size=3, stride=2)
        self.g_a3 = rstb(1, depths, num_heads)
        self.g_a4 = conv(N, N, kernel_size=3, stride=2)
        self.g_a5 = rstb(2, depths, num_heads)
        self.g_a6 = conv(N, M, kernel_size=3, stride=2)

        self.h_a = HyperAnalysis(M=M, N=N)
        self.h_s = HyperSynthesis(M=M, N=N)

        rdepths, rheads = depths[::-1], num_heads[::-1]
        self.g_s0 = deconv(M, N, kernel_size=3, stride=2)
        self.g_s1 = rstb(2, rdepths, rheads)
        self.g_s2 = deconv(N, N, kernel_size=3, stride=2)
        self.g_s3 = rstb(3, rdepths, rheads)
        self.g_s4 = deconv(N, N, kernel_size=3, stride=2)
        self.g_s5 = rstb(4, rdepths, rheads)
        self.g_s6 = subpel_conv3x3(N, 3, 2)

        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

        sc, S = self.slice_ch, self.num_slices

        def heads_for(dim: int) -> int:
            return max(1, dim // ctx_head_dim)

        def context_lists(dims: list[int]) -> tuple[nn.ModuleList, nn.ModuleList]:
            channel = nn.ModuleList(ACCTX(d, sc * 2) if d else None for d in dims)
            global_ = nn.ModuleList(
                AGCTX(d, sc, heads_for(d), sample_stride=ctx_sample_stride) if d else None for d in dims
            )
            return channel, global_

        self.channel_wise_context, self.global_inter_context = context_lists([sc * i for i in range(S)])
        with_ctx, hyper_only = 2 * M + 3 * sc, 2 * M
        self.entropy_parameters_anchor = nn.ModuleList(
            EntropyParameters(with_ctx if i else hyper_only, sc * 2, ep_hidden) for i in range(S)
        )
        if self.intra_slice_context:
            self.channel_wise_context_nonanchor, self.global_inter_context_nonanchor = context_lists(
                [sc * (i + 1) for i in range(S)]
            )
            self.entropy_parameters_nonanchor = nn.ModuleList(
                EntropyParameters(with_ctx, sc * 2, ep_hidden) for _ in range(S)
            )
        else:
            self.entropy_parameters_nonanchor = nn.ModuleList(
                EntropyParameters(with_ctx if i else hyper_only, sc * 2, ep_hidden) for i in range(S)
            )
        self.lrp_anchor = nn.ModuleList(
            LatentResidualPrediction(M + (i + 1) * sc, sc, lrp_hidden) for i in range(S)
        )
        self.lrp_nonanchor = nn.ModuleList(
            LatentResidualPrediction(M + (i + 1) * sc, sc, lrp_hidden) for i in range(S)
        )
        for name in ("g_a1", "g_a3", "g_a5", "g_s1", "g_s3", "g_s5"):
            getattr(self, name).apply(init_transformer_weights)

    # --------------------------------------------------------------------------------------------
    # Transforms
    # --------------------------------------------------------------------------------------------

    def g_a(self, x: Tensor) -> Tensor:
        """Analysis: ``(B, 3, H, W) -> y (B, M, H/16, W/16)``."""
        x = self.enh(x)
        x = self.g_a1(self.g_a0(x))
        x = self.g_a3(self.g_a2(x))
        x = self.g_a5(self.g_a4(x))
        return self.g_a6(x)

    def g_s(self, y_hat: Tensor) -> Tensor:
        """Synthesis: ``(B, M, h, w) -> (B, 3, 16h, 16w)`` (not clamped)."""
        x = self.g_s1(self.g_s0(y_hat))
        x = self.g_s3(self.g_s2(x))
        x = self.g_s5(self.g_s4(x))
        return self.enh(self.g_s6(x), rev=True)

    @staticmethod
    def check_size(h: int, w: int) -> None:
        if h % LATENT_MULTIPLE or w % LATENT_MULTIPLE:
            raise ValueError(
                f"S2LIC needs sides that are multiples of {LATENT_MULTIPLE}, got {h}x{w} (pad first)"
            )

    # --------------------------------------------------------------------------------------------
    # Context
    # --------------------------------------------------------------------------------------------

    def _anchor_context(self, i: int, previous: list[Tensor], hyper_params: Tensor) -> Tensor:
        if i == 0:
            return hyper_params
        prev = torch.cat(previous, dim=1)
        return torch.cat(
            [self.channel_wise_context[i](prev), self.global_inter_context[i](prev), hyper_params], dim=1
        )

    def _nonanchor_context(
        self, i: int, previous: list[Tensor], anchor_hat: Tensor, hyper_params: Tensor, anchor_ctx: Tensor
    ) -> Tensor:
        if not self.intra_slice_context:
            return anchor_ctx
        inp = torch.cat([*previous, anchor_hat], dim=1)
        return torch.cat(
            [
                self.channel_wise_context_nonanchor[i](inp),
                self.global_inter_context_nonanchor[i](inp),
                hyper_params,
            ],
            dim=1,
        )

    # --------------------------------------------------------------------------------------------
    # Training forward
    # --------------------------------------------------------------------------------------------

    def forward(self, x: Tensor, table_scales: bool = False) -> dict[str, object]:
        """Rate-distortion forward. ``x``: ``(B, 3, H, W)``, sides multiples of 64.

        ``table_scales=True`` (after :meth:`update`) evaluates the y likelihoods with the scales the coder
        uses (each snapped up to its scale-table entry), so ``-sum(log2 p)`` is the ideal size of the
        coded streams rather than the model's own (training) estimate.

        Returns ``{"x_hat": (B, 3, H, W), "likelihoods": {"y_likelihoods": (B, M, H/16, W/16),
        "z_likelihoods": (B, N, H/64, W/64)}}``. In training mode the likelihoods use additive noise and the
        reconstruction path straight-through rounding (mixed quantisation); in eval mode both round, so
        ``-sum(log2(likelihoods))`` estimates the coded size.
        """
        self.check_size(*x.shape[-2:])
        y = self.g_a(x)
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        z_offset = self.entropy_bottleneck._get_medians()
        z_hat = ste_round(z - z_offset) + z_offset
        hyper_params = self.h_s(z_hat)
        hyper_means = hyper_params.chunk(2, dim=1)[1]

        y_hat_slices: list[Tensor] = []
        y_likelihoods: list[Tensor] = []
        for i, y_slice in enumerate(y.chunk(self.num_slices, dim=1)):
            ctx_a = self._anchor_context(i, y_hat_slices, hyper_params)
            scales_a, means_a = self.entropy_parameters_anchor[i](ctx_a).chunk(2, dim=1)
            anchor_hat = ckbd_anchor(ste_round(y_slice - means_a) + means_a)
            lrp = self.lrp_anchor[i](torch.cat([hyper_means, *y_hat_slices, anchor_hat], dim=1))
            anchor_hat = anchor_hat + ckbd_anchor(lrp)

            ctx_n = self._nonanchor_context(i, y_hat_slices, anchor_hat, hyper_params, ctx_a)
            scales_n, means_n = self.entropy_parameters_nonanchor[i](ctx_n).chunk(2, dim=1)
            scales = ckbd_anchor(scales_a) + ckbd_nonanchor(scales_n)
            if table_scales:
                scales = self.gaussian_conditional.scale_table[self._scale_indexes(scales).long()]
            means = ckbd_anchor(means_a) + ckbd_nonanchor(means_n)
            _, likelihoods = self.gaussian_conditional(y_slice, scales, means)
            slice_hat = anchor_hat + ckbd_nonanchor(ste_round(y_slice - means_n) + means_n)
            lrp = self.lrp_nonanchor[i](torch.cat([hyper_means, *y_hat_slices, slice_hat], dim=1))
            y_hat_slices.append(slice_hat + ckbd_nonanchor(lrp))
            y_likelihoods.append(likelihoods)

        x_hat = self.g_s(torch.cat(y_hat_slices, dim=1))
        return {
            "x_hat": x_hat,
            "likelihoods": {"y_likelihoods": torch.cat(y_likelihoods, dim=1), "z_likelihoods": z_likelihoods},
        }

    def aux_loss(self) -> Tensor:
        """The EntropyBottleneck's quantile loss (train it with its own optimiser)."""
        return self.entropy_bottleneck.loss()

    # --------------------------------------------------------------------------------------------
    # Entropy-model tables
    # --------------------------------------------------------------------------------------------

    def update(
        self, scale_table: Tensor | None = None, force: bool = False, update_quantiles: bool = False
    ) -> bool:
        """Compute the CDF tables of the entropy models (after training, and after every load).

        Without ``force`` tables that already exist are kept silently (CompressAI's behaviour), so use
        ``force=True`` whenever weights may have changed. Returns whether anything was updated.
        """
        if scale_table is None:
            scale_table = get_scale_table()
        updated = self.gaussian_conditional.update_scale_table(scale_table, force=force)
        updated |= self.entropy_bottleneck.update(force=force, update_quantiles=update_quantiles)
        return bool(updated)

    @property
    def scale_levels(self) -> int:
        """Levels of the Gaussian conditional's scale table (0 before :meth:`update`)."""
        return int(self.gaussian_conditional.scale_table.numel())

    def use_scale_levels(self, levels: int) -> None:
        """Rebuild the Gaussian conditional's tables with ``levels`` scales, if they have another count
        (a file coded with other tables decodes only with the same ones)."""
        if self.scale_levels != levels or self.gaussian_conditional._offset.numel() == 0:
            self.gaussian_conditional.update_scale_table(get_scale_table(levels=levels), force=True)

    def tables_ready(self) -> bool:
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        return eb._offset.numel() > 0 and gc._offset.numel() > 0

    def table_fingerprint(self) -> bytes:
        """8 bytes of SHA-256 over the CDF tables, offsets, lengths, scale table and medians."""
        digest = hashlib.sha256()
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        for t in (
            eb._quantized_cdf,
            eb._offset,
            eb._cdf_length,
            eb._get_medians().detach(),
            gc._quantized_cdf,
            gc._offset,
            gc._cdf_length,
            gc.scale_table,
        ):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.digest()[:8]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load weights saved before or after :meth:`update` (CDF buffers of any size), from this module or
        from a SwinV2-style file carrying derived buffers. Call ``update(force=True)`` afterwards."""
        state = {k: v for k, v in state_dict.items() if k.rsplit(".", 1)[-1] not in _DERIVED_BUFFERS}
        self.resize_entropy_buffers(state)
        return super().load_state_dict(state, strict=strict, assign=assign)

    def resize_entropy_buffers(self, state: dict[str, Tensor]) -> None:
        """Give the CompressAI CDF buffers the shapes (and dtypes) they have in ``state``."""
        for module_name, names in (
            ("entropy_bottleneck", _EB_BUFFERS),
            ("gaussian_conditional", _GC_BUFFERS),
        ):
            module = getattr(self, module_name)
            for name in names:
                key = f"{module_name}.{name}"
                if key in state:
                    current = getattr(module, name)
                    module.register_buffer(
                        name, torch.empty(state[key].shape, dtype=state[key].dtype, device=current.device)
                    )

    def _scale_indexes(self, scales: Tensor) -> Tensor:
        """Index of the first table scale >= max(scale, bound): CompressAI's ``build_indexes``, as one
        ``bucketize`` (int32)."""
        gc = self.gaussian_conditional
        bound = gc.lower_bound_scale.bound.to(scales.dtype)
        table = gc.scale_table.to(device=scales.device, dtype=scales.dtype)
        return torch.bucketize(torch.maximum(scales, bound), table[:-1]).to(torch.int32)

    @staticmethod
    def _tables(module) -> tuple[list, list, list]:
        return (
            module._quantized_cdf.tolist(),
            module._cdf_length.reshape(-1).int().tolist(),
            module._offset.reshape(-1).int().tolist(),
        )

    # --------------------------------------------------------------------------------------------
    # Coding
    # --------------------------------------------------------------------------------------------

    def _code_y(self, hyper_params: Tensor, coder, y: Tensor | None = None) -> Tensor:
        """The slice loop of both sides: returns ``y_hat``. The encoder passes ``y`` and a sink (symbols
        = round(y - mean)); the decoder passes a source that reads them. Everything else is shared."""
        hyper_means = hyper_params.chunk(2, dim=1)[1]
        y_slices = y.chunk(self.num_slices, dim=1) if y is not None else [None] * self.num_slices

        def code_half(params: Tensor, y_slice: Tensor | None, anchor: bool) -> Tensor:
            scales, means = params.chunk(2, dim=1)
            scales_sq = ckbd_squeeze(scales, anchor)
            means_sq = ckbd_squeeze(means, anchor)
            indexes = self._scale_indexes(scales_sq)
            symbols = None
            if y_slice is not None:
                symbols = torch.round(ckbd_squeeze(y_slice, anchor) - means_sq).to(torch.int32)
            symbols = coder.code(indexes, symbols)
            return ckbd_unsqueeze(symbols.to(means_sq.dtype) + means_sq, anchor)

        y_hat_slices: list[Tensor] = []
        for i in range(self.num_slices):
            ctx_a = self._anchor_context(i, y_hat_slices, hyper_params)
            anchor_hat = code_half(self.entropy_parameters_anchor[i](ctx_a), y_slices[i], anchor=True)
            lrp = self.lrp_anchor[i](torch.cat([hyper_means, *y_hat_slices, anchor_hat], dim=1))
            anchor_hat = anchor_hat + ckbd_anchor(lrp)
            ctx_n = self._nonanchor_context(i, y_hat_slices, anchor_hat, hyper_params, ctx_a)
            slice_hat = anchor_hat + code_half(
                self.entropy_parameters_nonanchor[i](ctx_n), y_slices[i], anchor=False
            )
            lrp = self.lrp_nonanchor[i](torch.cat([hyper_means, *y_hat_slices, slice_hat], dim=1))
            y_hat_slices.append(slice_hat + ckbd_nonanchor(lrp))
        return torch.cat(y_hat_slices, dim=1)

    def _require_tables(self) -> None:
        if not self.tables_ready():
            raise RuntimeError("entropy tables are not initialised: call update(force=True) first")

    @torch.no_grad()
    def compress_latents(self, y: Tensor, z: Tensor, threads: int = 1) -> CodedLatents:
        """Entropy-code ``y (1, M, h, w)`` and ``z (1, N, h/4, w/4)`` into two rANS streams.

        Runs under :func:`deterministic_entropy_coding` with ``threads``; the decoder must use the same
        count. Returns the streams, shapes, symbol digest and the quantised latent ``y_hat``.
        """
        from compressai.ans import RansEncoder

        self._require_tables()
        if y.shape[0] != 1:
            raise ValueError("compress codes one image at a time (batch 1)")
        eb = self.entropy_bottleneck
        digest = hashlib.sha256()
        with deterministic_entropy_coding(threads):
            medians = eb._get_medians().detach().reshape(1, -1, 1, 1)
            z_symbols = torch.round(z - medians).to(torch.int32).cpu().contiguous()
            z_indexes = torch.arange(z.shape[1], dtype=torch.int32).view(1, -1, 1, 1).expand_as(z_symbols)
            z_string = RansEncoder().encode_with_indexes(
                z_symbols.reshape(-1).tolist(), z_indexes.reshape(-1).tolist(), *self._tables(eb)
            )
            digest.update(z_symbols.numpy().astype("<i4").tobytes())
            z_hat = z_symbols.to(device=z.device, dtype=z.dtype) + medians
            sink = _SymbolSink(*self._tables(self.gaussian_conditional), digest)
            y_hat = self._code_y(self.h_s(z_hat), sink, y)
            y_string = sink.finish()
        return CodedLatents(
            y_string=y_string,
            z_string=z_string,
            y_shape=tuple(y.shape[1:]),
            z_shape=tuple(z.shape[1:]),
            digest=digest.digest()[:8],
            y_hat=y_hat,
        )

    @torch.no_grad()
    def decompress_latents(
        self, coded: CodedLatents, threads: int = 1, device: torch.device | str = "cpu"
    ) -> Tensor:
        """Decode ``y_hat (1, M, h, w)`` from the streams. Raises :class:`DecodeMismatchError` when the
        decoded symbols do not match ``coded.digest`` (see :func:`deterministic_entropy_coding`)."""
        from compressai.ans import RansDecoder

        self._require_tables()
        eb = self.entropy_bottleneck
        c_z, h_z, w_z = coded.z_shape
        c_y, h_y, w_y = coded.y_shape
        if c_z != self.N or c_y != self.M or (h_y, w_y) != (4 * h_z, 4 * w_z):
            raise ValueError(f"latent shapes y {coded.y_shape} / z {coded.z_shape} do not fit this model")
        digest = hashlib.sha256()
        with deterministic_entropy_coding(threads):
            n_z = c_z * h_z * w_z
            z_indexes = torch.arange(c_z, dtype=torch.int32).view(-1, 1, 1).expand(c_z, h_z, w_z)
            values = RansDecoder().decode_with_indexes(
                _pad_stream(coded.z_string, n_z), z_indexes.reshape(-1).tolist(), *self._tables(eb)
            )
            z_symbols = np.asarray(values, dtype="<i4")
            digest.update(z_symbols.tobytes())
            medians = eb._get_medians().detach().reshape(1, -1, 1, 1).to(device)
            z_sym = torch.from_numpy(z_symbols.astype(np.int32)).reshape(1, c_z, h_z, w_z).to(device)
            z_hat = z_sym.to(medians.dtype) + medians
            source = _SymbolSource(
                coded.y_string, c_y * h_y * w_y, *self._tables(self.gaussian_conditional), digest
            )
            y_hat = self._code_y(self.h_s(z_hat), source)
        if digest.digest()[:8] != coded.digest:
            raise DecodeMismatchError(
                "the decoded symbols differ from the encoder's: the entropy model computed different "
                "Gaussian parameters here (another device type, CPU, library version or weights)"
            )
        return y_hat

    @torch.no_grad()
    def compress(self, x: Tensor, threads: int = 1) -> CodedLatents:
        """``x (1, 3, H, W)`` (sides multiples of 64) -> :class:`CodedLatents`."""
        self.check_size(*x.shape[-2:])
        y = self.g_a(x)
        return self.compress_latents(y, self.h_a(y), threads)

    @torch.no_grad()
    def decompress(self, coded: CodedLatents, threads: int = 1) -> Tensor:
        """:class:`CodedLatents` -> ``x_hat (1, 3, 16h, 16w)`` (not clamped)."""
        device = next(self.parameters()).device
        return self.g_s(self.decompress_latents(coded, threads, device))
