"""DLGSANet: dynamic local and sparse global self-attention for lightweight image super-resolution.

Li et al., "DLGSANet: Lightweight Dynamic Local and Global Self-Attention Networks for Image
Super-Resolution" (ICCV 2023, arXiv 2301.02031).

Same parameters and state-dict keys as the official ``NeonLeexiang/DLGSANet``
``basicsr/archs/dlgsanet_arch.py`` (no buffers; ``mean`` is a plain attribute), so its BasicSR checkpoints
load with ``strict=True``, and the same math, including the test-time local converter (TLC) that the
official model applies in eval mode. Differences from the official code, none of which changes a result:

* the multi-head dynamic local self-attention (MHDLSA) runs the dynamic depth-wise convolution through
  :func:`restorer.ops.idynamic_dwconv` (plain PyTorch, any device and dtype) instead of the official CuPy
  CUDA kernel, which has no CPU path and compiles for float/double only;
* the official ``FeedForward`` calls ``F.gelu`` without importing ``F`` (a ``NameError``); the evident
  intent, exact-erf GELU, is used;
* TLC runs the attention of all windows of all images as one batch of GEMMs and accepts batches > 1 (each
  image gets the official batch-1 windows); the official code asserts batch 1;
* fp16 / bf16 work: the dynamic convolution accumulates in float32, and the TLC merge stays in the
  feature dtype (the official merge buffer is always float32).

Module overview (``C = dim``)::

    x -> (x - mean) * img_range -> overlap_embed (3x3, no bias)
      -> deep_feature_extraction: groups x BuildBlock [
             blocks x (IDynamicLayerBlock, SparseAttentionLayerBlock), 3x3 conv, + x
         ], 3x3 conv, + x
      -> upsample (3x3 conv + PixelShuffle) -> / img_range + mean

Input handling: any ``H, W >= 1``. Every layer is a "same"-padded convolution or a global / TLC-windowed
channel attention, so the network needs no size multiple and pads nothing (``window_multiple`` is 1).
No clamp.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restorer.archs.layers import ChannelLayerNorm, Upsample, UpsampleOneStep
from restorer.archs.registry import register
from restorer.ops import idynamic_dwconv

__all__ = ["DLGSANet", "tlc_window_starts"]


def _layer_norm(dim: int) -> ChannelLayerNorm:
    """The official ``LayerNorm(dim, LayerNorm_type='WithBias')`` (keys ``body.weight``, ``body.bias``)."""
    return ChannelLayerNorm(dim, "WithBias")


def _activation(name: str) -> nn.Module:
    """SparseGSA's score activation (official: ``'relu'``; ``'gelu'`` / ``'sigmoid'`` were ablations)."""
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "softmax":  # Restormer's MDTA (the official ``Attention`` class)
        return nn.Softmax(dim=-1)
    return nn.Identity()  # the official fallback for any other value


# ------------------------------------------------------------------------------------------------
# TLC: test-time local converter (megvii-research/TLC, as in the official grids / grids_inverse)
# ------------------------------------------------------------------------------------------------


def tlc_window_starts(size: int, kernel: int) -> tuple[list[int], int]:
    """Window starts along one axis of the official TLC ``grids`` and the window length.

    Windows of length ``k = min(size, kernel)``; ``n = ceil(size / k)`` of them, stepping by
    ``ceil((size - k) / (n - 1))``, the last one moved back to end at ``size``. The 2-D windows are all
    (row start, column start) pairs. Example: ``size=100, kernel=48`` gives ``([0, 26, 52], 48)``.
    """
    k = min(size, kernel)
    n = (size - 1) // k + 1
    step = k if n == 1 else math.ceil((size - k) / (n - 1) - 1e-8)
    starts, i = [], 0
    while True:
        if i + k >= size:
            starts.append(size - k)
            return starts, k
        starts.append(i)
        i += step


def _to_map(t: Tensor) -> Tensor:
    """Tokens ``(B, H, W, C)`` -> the same memory as a channels-last ``(B, C, H, W)`` map (a view)."""
    return t.permute(0, 3, 1, 2)


def _to_tokens(x: Tensor) -> Tensor:
    """Channels-last ``(B, C, H, W)`` map -> ``(B, H, W, C)`` tokens (a view; contiguous when ``x`` is)."""
    return x.permute(0, 2, 3, 1)


def _conv_tokens(t: Tensor, conv: nn.Conv2d) -> Tensor:
    """Apply a (spatial or depth-wise) convolution to tokens through the channels-last map view."""
    return _to_tokens(conv(_to_map(t))).contiguous()


def _linear(t: Tensor, conv: nn.Conv2d, weight: Tensor | None = None) -> Tensor:
    """A 1x1 convolution on ``(..., C)`` tokens as one GEMM (``weight`` overrides ``conv.weight``)."""
    w = conv.weight if weight is None else weight
    return F.linear(t, w.reshape(w.shape[0], -1), conv.bias)


# ------------------------------------------------------------------------------------------------
# Blocks
#
# Inside the network the features are tokens ``(B, H, W, C)`` (contiguous), i.e. channels-last maps:
# 1x1 convolutions are GEMMs on the channel axis, the LayerNorms are plain ``F.layer_norm`` and the
# depth-wise / 3x3 convolutions run on channels-last views, which oneDNN executes several times faster on
# CPU than NCHW. Every block's ``forward`` takes and returns such tokens.
# ------------------------------------------------------------------------------------------------


class OverlapPatchEmbed(nn.Module):
    """3x3 convolution ``in_c -> embed_dim`` (no bias in DLGSANet); key ``proj``. NCHW in and out."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class FeedForward(nn.Module):
    """Restormer's gated-dconv feed-forward network (GDFN).

    ``project_in`` (1x1, ``C -> 2*hidden``) -> depth-wise 3x3 -> ``gelu(x1) * x2`` (halves of the channels,
    exact-erf GELU) -> ``project_out`` (1x1, ``hidden -> C``); ``hidden = int(C * ffn_expansion_factor)``.
    Shapes: tokens ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.hidden = hidden
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, t: Tensor) -> Tensor:
        t = _to_tokens(self.dwconv(_to_map(_linear(t, self.project_in))))  # contiguous channels-last
        gated = F.gelu(t[..., : self.hidden]).mul_(t[..., self.hidden :])  # gelu output is fresh: in place ok
        return _linear(gated, self.project_out)


class BaseFeedForward(nn.Module):
    """SwinIR-style MLP as 1x1 convolutions: ``body.0`` -> GELU -> ``body.2`` (unused by the releases).

    Shapes: tokens ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(self, dim: int, ffn_expansion_factor: float = 2, bias: bool = False) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.body = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=bias), nn.GELU(), nn.Conv2d(hidden, dim, 1, bias=bias)
        )

    def forward(self, t: Tensor) -> Tensor:
        return _linear(F.gelu(_linear(t, self.body[0])), self.body[2])


def _feed_forward(ffn_type: str, dim: int, factor: float) -> nn.Module:
    if ffn_type == "GDFN":
        return FeedForward(dim, factor, bias=False)
    if ffn_type == "BaseFFN":
        return BaseFeedForward(dim, factor, bias=True)
    raise NotImplementedError(f"Not supported FeedForward Net type{ffn_type}")


class IDynamicDWConv(nn.Module):
    """Hypernetwork + dynamic depth-wise convolution (DWNet's dynamic DW conv without norm/activation).

    The hypernetwork ``conv2(conv1(x))`` (1x1 ``C -> C//4``, depth-wise ``k x k``, 1x1 ``C//4 -> k*k*G``,
    all with bias) predicts, for every pixel, one ``k x k`` kernel per group of ``group_channels``
    consecutive channels; ``G = C // group_channels``. The kernels are applied to ``x`` as a zero-padded
    "same" depth-wise convolution (:func:`restorer.ops.idynamic_dwconv`). Note that ``group_channels`` (the
    official ``idynamic_num_heads``) is the number of channels per group, not the number of groups.

    ``forward`` is the official NCHW form, ``(B, C, H, W) -> (B, C, H, W)``;
    :class:`IDynamicDWConvBlock` calls :meth:`dynamic_conv` on its own layouts.
    """

    def __init__(self, channels: int, kernel_size: int, group_channels: int, bias: bool = True) -> None:
        super().__init__()
        if channels % group_channels:
            # The official kernel would index past the predicted weights.
            raise ValueError(f"dim {channels} must be a multiple of idynamic_num_heads {group_channels}")
        self.kernel_size = kernel_size
        self.channels = channels
        self.group_channels = group_channels
        self.groups = channels // group_channels
        reduced = channels // 4
        self.conv1 = nn.Sequential(
            nn.Conv2d(channels, reduced, 1, bias=bias),
            nn.Conv2d(reduced, reduced, kernel_size, padding=kernel_size // 2, groups=reduced, bias=bias),
        )
        self.conv2 = nn.Sequential(nn.Conv2d(reduced, kernel_size**2 * self.groups, 1, bias=bias))

    def dynamic_conv(self, x_planar: Tensor, hidden_tokens: Tensor) -> Tensor:
        """Predict the kernels from the hypernetwork's hidden tokens and apply them.

        Args:
            x_planar: ``(B, C, H, W)`` contiguous NCHW (the tap loop reads whole planes).
            hidden_tokens: ``conv1(x)`` as ``(B, H, W, C//4)`` tokens.

        Returns:
            ``(B, C, H, W)`` contiguous NCHW.
        """
        b, c, h, w = x_planar.shape
        k = self.kernel_size
        conv2 = self.conv2[0]
        w2 = conv2.weight.reshape(conv2.weight.shape[0], -1)  # G*k*k, C//4
        hid = hidden_tokens.reshape(b, h * w, -1)  # B, HW, C//4
        if conv2.bias is not None:
            # The bias enters the GEMM as an extra input channel of ones: adding it to the 8x-activation-sized
            # output (or baddbmm's broadcast copy) would cost a full pass over it.
            w2 = torch.cat([w2, conv2.bias[:, None]], dim=1)
            hid = torch.cat([hid, hid.new_ones(b, h * w, 1)], dim=2)
        # The GEMM writes the kernels tap-plane by tap-plane ((B, G*k*k, HW)), the layout the tap loop
        # reads, without a channels-last -> NCHW copy.
        kernels = torch.bmm(w2.expand(b, -1, -1), hid.transpose(1, 2))
        kernels = kernels.view(b, self.groups, k, k, h, w)
        return idynamic_dwconv(x_planar, kernels, stride=1, padding=(k - 1) // 2)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.conv1(x.contiguous(memory_format=torch.channels_last))
        return self.dynamic_conv(x.contiguous(), _to_tokens(hidden))


class IDynamicDWConvBlock(nn.Module):
    """MHDLSA: ``conv1(dynamic_dw(conv0(x)))`` with bias-free 1x1 ``conv0`` / ``conv1``.

    With ``dynamic=False`` the dynamic convolution is a static depth-wise ``k x k`` convolution (key
    ``conv``). Shapes: tokens ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(self, dim: int, window_size: int, dynamic: bool = True, heads: int = 6, bias: bool = True):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.dynamic = dynamic
        self.heads = heads
        self.conv0 = nn.Conv2d(dim, dim, 1, bias=False)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)
        if dynamic:
            self.conv = IDynamicDWConv(dim, kernel_size=window_size, group_channels=heads, bias=bias)
        else:
            self.conv = nn.Conv2d(dim, dim, window_size, 1, window_size // 2, groups=dim, bias=bias)

    def forward(self, t: Tensor) -> Tensor:
        b, h, w, c = t.shape
        w0 = self.conv0.weight.view(c, c)
        if not self.dynamic:
            return _linear(_conv_tokens(_linear(t, self.conv0), self.conv), self.conv1)
        hyper = self.conv.conv1
        # conv0 as a GEMM that writes NCHW planes (the dynamic convolution's layout) ...
        x0 = torch.matmul(w0, t.reshape(b, h * w, c).transpose(1, 2)).view(b, c, h, w)
        # ... and the hypernetwork's first 1x1 conv fused with conv0 (one small C//4 x C product), so that
        # it reads the contiguous tokens instead of the planes.
        w10 = hyper[0].weight.reshape(-1, c) @ w0
        hidden = _conv_tokens(_linear(t, hyper[0], w10), hyper[1])  # B, H, W, C//4
        y = self.conv.dynamic_conv(x0, hidden)  # B, C, H, W (NCHW)
        # conv1 as a GEMM that reads the planes and writes tokens.
        return torch.matmul(y.view(b, c, h * w).transpose(1, 2), self.conv1.weight.view(c, c).t()).view(
            b, h, w, c
        )


class SparseAttention(nn.Module):
    """SparseGSA: Restormer's transposed (channel) attention with ReLU instead of softmax, plus TLC.

    ``q, k, v`` = depth-wise 3x3 (1x1 ``C -> 3C`` (x)); per head, ``A = act(q_n k_n^T * temperature)`` is a
    ``(C/h x C/h)`` matrix of the channels' cosine similarities over the pixels (``q_n``, ``k_n``: every
    channel's spatial vector L2-normalised, ``F.normalize``), and the output is ``project_out(A v)``.

    In training, or when ``tlc_flag`` is false, the pixels are the whole image. In eval mode with ``tlc_flag``
    (the official test path), ``q, k, v`` are cut into overlapping ``tlc_kernel`` windows
    (:func:`tlc_window_starts`), attention runs per window, and the window outputs are averaged where they
    overlap; ``project_out`` is linear, so it is applied per window before the average here.

    Computation on pixel-major ``(L, C)`` tokens: one ``C x C`` Gram GEMM per window (its diagonal
    ``d x d`` blocks are the heads' matrices), normalised by the channel norms afterwards, and one GEMM
    with ``(project_out . blockdiag(A))^T``. fp16 normalises ``q`` and ``k`` first (the raw Gram could
    overflow).

    Shapes: tokens ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        bias: bool,
        tlc_flag: bool = True,
        tlc_kernel: int = 48,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be a multiple of restormer_num_heads {num_heads}")
        self.tlc_flag = tlc_flag
        self.dim = dim
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, 1, 1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.act = _activation(activation)
        self.kernel_size = [tlc_kernel, tlc_kernel]

    def _attend(self, qkv: Tensor) -> Tensor:
        """Attention + ``project_out`` (without its bias) over windows: ``(N, L, 3C) -> (N, L, C)``."""
        n, _, c3 = qkv.shape
        c = c3 // 3
        heads = self.num_heads
        d = c // heads
        q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
        normalise_first = qkv.dtype == torch.float16  # the raw Gram can exceed the fp16 range
        if normalise_first:
            q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        gram = torch.bmm(q.transpose(1, 2), k)  # N, C, C
        blocks = gram.view(n, heads, d, heads, d).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)  # N, h, d, d
        scores = blocks * self.temperature.to(qkv.dtype)
        if not normalise_first:
            # F.normalize divides by max(norm, 1e-12); dividing the Gram entries is the same up to rounding
            # and saves two passes over q and k.
            nq = torch.linalg.vector_norm(q, dim=1).clamp_min(1e-12).view(n, heads, d, 1)
            nk = torch.linalg.vector_norm(k, dim=1).clamp_min(1e-12).view(n, heads, 1, d)
            scores = scores / (nq * nk)
        attn = self.act(scores)
        # y_o = sum_c P[o, c] (A v)_c: fold project_out into the (per-window) channel mixing matrix.
        proj = self.project_out.weight.reshape(c, heads, d).to(qkv.dtype)
        mix = torch.einsum("ohi,nhij->nohj", proj, attn).reshape(n, c, c)  # N, C_out, C
        return torch.bmm(v, mix.transpose(1, 2))

    def _attend_tlc(self, qkv: Tensor) -> Tensor:
        """TLC: attention in overlapping windows, averaged: ``(B, H, W, 3C) -> (B, H, W, C)``."""
        b, h, w, c3 = qkv.shape
        rows, k1 = tlc_window_starts(h, self.kernel_size[0])
        cols, k2 = tlc_window_starts(w, self.kernel_size[1])
        if len(rows) == 1 and len(cols) == 1:  # one window covering the image: global attention
            return self._attend(qkv.view(b, h * w, c3)).view(b, h, w, -1)
        origins = [(i, j) for i in rows for j in cols]  # official (row-major) window order
        windows = torch.stack([qkv[:, i : i + k1, j : j + k2] for i, j in origins], dim=1)
        out_w = self._attend(windows.view(-1, k1 * k2, c3)).view(b, len(origins), k1, k2, -1)
        out = out_w.new_zeros(b, h, w, out_w.shape[-1])
        for n, (i, j) in enumerate(origins):
            out[:, i : i + k1, j : j + k2] += out_w[:, n]
        # The overlap count is the product of the per-axis counts.
        count_h = torch.zeros(h, dtype=out.dtype, device=out.device)
        count_w = torch.zeros(w, dtype=out.dtype, device=out.device)
        for i in rows:
            count_h[i : i + k1] += 1
        for j in cols:
            count_w[j : j + k2] += 1
        return out.div_((count_h[:, None] * count_w[None, :])[None, :, :, None])

    def forward(self, t: Tensor) -> Tensor:
        b, h, w, c = t.shape
        qkv = _conv_tokens(_linear(t, self.qkv), self.qkv_dwconv)  # B, H, W, 3C
        if self.training or not self.tlc_flag:
            out = self._attend(qkv.view(b, h * w, 3 * c)).view(b, h, w, c)
        else:
            out = self._attend_tlc(qkv)
        if self.project_out.bias is not None:
            out = out + self.project_out.bias
        return out


class IDynamicLayerBlock(nn.Module):
    """HDTB local half: ``x + MHDLSA(norm1 x)``, then ``+ FFN(norm2 x)``. Tokens ``(B, H, W, C)``."""

    def __init__(
        self,
        dim: int,
        window_size: int = 7,
        idynamic_num_heads: int = 6,
        idynamic_ffn_type: str = "GDFN",
        idynamic_ffn_expansion_factor: float = 2.0,
        idynamic: bool = True,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.norm1 = _layer_norm(dim)
        self.IDynamicDWConv = IDynamicDWConvBlock(
            dim, window_size, dynamic=idynamic, heads=idynamic_num_heads
        )
        self.norm2 = _layer_norm(dim)
        self.IDynamic_ffn = _feed_forward(idynamic_ffn_type, dim, idynamic_ffn_expansion_factor)

    def forward(self, t: Tensor) -> Tensor:
        # The branch outputs are fresh tensors that no backward needs: the residual adds go in place.
        t = self.IDynamicDWConv(self.norm1.body(t)).add_(t)
        return self.IDynamic_ffn(self.norm2.body(t)).add_(t)


class SparseAttentionLayerBlock(nn.Module):
    """HDTB global half: ``x + SparseGSA(norm3 x)``, then ``+ FFN(norm4 x)``. Tokens ``(B, H, W, C)``.

    ``activation='softmax'`` gives the official ``RestormerLayerBlock`` (Restormer's MDTA, TLC window always
    48), used only by the ablation block types.
    """

    def __init__(
        self,
        dim: int,
        restormer_num_heads: int = 6,
        restormer_ffn_type: str = "GDFN",
        restormer_ffn_expansion_factor: float = 2.0,
        tlc_flag: bool = True,
        tlc_kernel: int = 48,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.dim = dim
        self.norm3 = _layer_norm(dim)
        if activation == "softmax":
            tlc_kernel = 48  # the official RestormerLayerBlock never passes tlc_kernel on
        self.restormer_attn = SparseAttention(
            dim, restormer_num_heads, False, tlc_flag, tlc_kernel, activation=activation
        )
        self.norm4 = _layer_norm(dim)
        self.restormer_ffn = _feed_forward(restormer_ffn_type, dim, restormer_ffn_expansion_factor)

    def forward(self, t: Tensor) -> Tensor:
        t = self.restormer_attn(self.norm3.body(t)).add_(t)
        return self.restormer_ffn(self.norm4.body(t)).add_(t)


class BuildBlock(nn.Module):
    """RHDTG: ``x + conv3x3(blocks(x))``; ``body`` holds the blocks then the conv (official indices).

    ``buildblock_type``: ``'sparseedge'`` (released models: IDynamic + SparseGSA pairs), ``'edge'``
    (IDynamic + MDTA pairs), ``'idynamic'`` or ``'restormer'`` (one kind only). Tokens ``(B, H, W, C)``.
    """

    def __init__(
        self,
        dim: int,
        blocks: int = 3,
        buildblock_type: str = "edge",
        window_size: int = 7,
        idynamic_num_heads: int = 6,
        idynamic_ffn_type: str = "GDFN",
        idynamic_ffn_expansion_factor: float = 2.0,
        idynamic: bool = True,
        restormer_num_heads: int = 6,
        restormer_ffn_type: str = "GDFN",
        restormer_ffn_expansion_factor: float = 2.0,
        tlc_flag: bool = True,
        tlc_kernel: int = 48,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.dim = dim
        self.blocks = blocks
        self.buildblock_type = buildblock_type

        def local() -> nn.Module:
            return IDynamicLayerBlock(
                dim,
                window_size,
                idynamic_num_heads,
                idynamic_ffn_type,
                idynamic_ffn_expansion_factor,
                idynamic,
            )

        def global_(act: str) -> nn.Module:
            return SparseAttentionLayerBlock(
                dim,
                restormer_num_heads,
                restormer_ffn_type,
                restormer_ffn_expansion_factor,
                tlc_flag,
                tlc_kernel,
                act,
            )

        body: list[nn.Module] = []
        for _ in range(blocks):
            if buildblock_type == "sparseedge":
                body += [local(), global_(activation)]
            elif buildblock_type == "edge":
                body += [local(), global_("softmax")]
            elif buildblock_type == "idynamic":
                body.append(local())
            elif buildblock_type == "restormer":
                body.append(global_("softmax"))
            else:
                # The official model silently builds an empty group here; refuse instead.
                raise ValueError(f"unknown buildblock_type {buildblock_type!r}")
        body.append(nn.Conv2d(dim, dim, 3, 1, 1))
        self.body = nn.Sequential(*body)

    def forward(self, t: Tensor) -> Tensor:
        """Tokens ``(B, H, W, C) -> (B, H, W, C)``."""
        y = t
        for block in self.body[:-1]:
            y = block(y)
        return _conv_tokens(y, self.body[-1]) + t


# ------------------------------------------------------------------------------------------------
# DLGSANet
# ------------------------------------------------------------------------------------------------


@register
class DLGSANet(nn.Module):
    """DLGSANet (Light 48C4G3B, Tiny 48C3G3B, classic 90C6G4B, ...): see the module docstring.

    Every argument and default is the official one, so any official ``network_g`` builds unchanged (the
    released option files all use ``buildblock_type='sparseedge'`` and ``upsampler='pixelshuffledirect'``).

    Args:
        in_chans: image channels (output channels are the same).
        dim: feature channels ``C``.
        groups: residual hybrid dynamic-Transformer groups (RHDTG).
        blocks: hybrid dynamic-Transformer blocks (HDTB) per group.
        buildblock_type: ``'sparseedge'``, ``'edge'``, ``'idynamic'`` or ``'restormer'``.
        window_size: kernel size ``k`` of the dynamic convolution and of the hypernetwork's depth-wise conv.
        idynamic_num_heads: channels per dynamic-kernel group (``C // idynamic_num_heads`` groups).
        idynamic_ffn_type: ``'GDFN'`` or ``'BaseFFN'``.
        idynamic_ffn_expansion_factor: FFN hidden width factor of the local blocks.
        idynamic: dynamic (``True``) or static depth-wise ``k x k`` convolution.
        restormer_num_heads: attention heads of SparseGSA.
        restormer_ffn_type: ``'GDFN'`` or ``'BaseFFN'``.
        restormer_ffn_expansion_factor: FFN hidden width factor of the global blocks.
        tlc_flag: TLC in eval mode (the official test path; ``False``: global attention always).
        tlc_kernel: TLC window on the LR feature map (official: 96 / 72 / 48 for x2 / x3 / x4).
        activation: SparseGSA score activation (``'relu'``).
        upscale: scale factor.
        img_range: image range multiplier.
        upsampler: ``'pixelshuffledirect'`` (one conv + PixelShuffle), ``'pixelshuffle'`` (conv + LeakyReLU,
            2^n / 3 upsampler, conv) or ``''`` (same-size restoration, one conv).
        body_norm: LayerNorms before and after the groups.
        input_resolution: bookkeeping for the official FLOPs count; ignored.
        **kwargs: ignored with a warning (the official constructor swallows unknown keys silently).

    Shapes: ``(B, in_chans, H, W)`` float in ``[0, 1]``, any ``H, W >= 1`` ->
    ``(B, in_chans, H * scale, W * scale)``.
    """

    def __init__(
        self,
        in_chans: int = 3,
        dim: int = 60,
        groups: int = 4,
        blocks: int = 3,
        buildblock_type: str = "edge",
        window_size: int = 7,
        idynamic_num_heads: int = 6,
        idynamic_ffn_type: str = "GDFN",
        idynamic_ffn_expansion_factor: float = 2.0,
        idynamic: bool = True,
        restormer_num_heads: int = 6,
        restormer_ffn_type: str = "GDFN",
        restormer_ffn_expansion_factor: float = 2.0,
        tlc_flag: bool = True,
        tlc_kernel: int = 48,
        activation: str = "relu",
        upscale: int = 4,
        img_range: float = 1.0,
        upsampler: str = "",
        body_norm: bool = False,
        input_resolution: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            warnings.warn(f"DLGSANet: ignoring unknown options {sorted(kwargs)}", stacklevel=2)
        self.dim = dim
        self.img_range = img_range
        if in_chans == 3:
            self.mean = torch.tensor((0.4488, 0.4371, 0.4040), device="cpu").view(1, 3, 1, 1)  # not a buffer
        else:
            self.mean = torch.zeros(1, 1, 1, 1, device="cpu")
        self.upscale = upscale
        self.upsampler = upsampler
        self.tlc_flag = tlc_flag

        self.overlap_embed = nn.Sequential(OverlapPatchEmbed(in_chans, dim, bias=False))
        body: list[nn.Module] = []
        if body_norm:
            body.append(_layer_norm(dim))
        for _ in range(groups):
            body.append(
                BuildBlock(
                    dim,
                    blocks,
                    buildblock_type,
                    window_size,
                    idynamic_num_heads,
                    idynamic_ffn_type,
                    idynamic_ffn_expansion_factor,
                    idynamic,
                    restormer_num_heads,
                    restormer_ffn_type,
                    restormer_ffn_expansion_factor,
                    tlc_flag,
                    tlc_kernel,
                    activation,
                )
            )
        if body_norm:
            body.append(_layer_norm(dim))
        body.append(nn.Conv2d(dim, dim, 3, 1, 1))
        self.deep_feature_extraction = nn.Sequential(*body)

        num_feat = 64
        if upsampler == "pixelshuffledirect":
            self.upsample = UpsampleOneStep(upscale, dim, in_chans)
        elif upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True)
            )
            self.upsample = Upsample(upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        else:
            self.conv_last = nn.Conv2d(dim, in_chans, 3, 1, 1)

    @property
    def scale(self) -> int:
        """Upscaling factor (1 for ``upsampler=''``, which restores at the input size)."""
        return self.upscale if self.upsampler in ("pixelshuffledirect", "pixelshuffle") else 1

    @property
    def window_multiple(self) -> int:
        """Size multiple the input needs: 1 (no padding; TLC windows adapt to any size)."""
        return 1

    def forward_features(self, x: Tensor) -> Tensor:
        """``deep_feature_extraction(x) + x`` on a channels-last ``(B, C, H, W)`` map; returns the same."""
        t = _to_tokens(x)
        y = t
        for layer in self.deep_feature_extraction:
            if isinstance(layer, ChannelLayerNorm):
                y = layer.body(y)
            elif isinstance(layer, nn.Conv2d):
                y = _conv_tokens(y, layer)
            else:
                y = layer(y)
        return _to_map(y + t)

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolve ``(B, in_chans, H, W)`` in ``[0, 1]`` to ``(B, in_chans, H*scale, W*scale)``."""
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        x = ((x - mean) * self.img_range).contiguous(memory_format=torch.channels_last)
        x = self.forward_features(self.overlap_embed(x))
        if self.upsampler == "pixelshuffledirect":
            x = self.upsample(x)
        elif self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        else:
            x = self.conv_last(x)
        return (x / self.img_range + mean).contiguous()
