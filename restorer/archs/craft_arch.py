"""CRAFT: Cross-Refinement Adaptive Feature modulation Transformer for lightweight image super-resolution.

Li et al., "Feature Modulation Transformer: Cross-Refinement of Global Representation via High-Frequency
Prior for Image Super-Resolution" (ICCV 2023).

Same parameters, buffers and state-dict keys as the official ``AVC2-UESTC/CRAFT-SR``
``basicsr/archs/craft_arch.py``, so the released checkpoints (``CRAFT_MODEL_X{2,3,4}.pth``, key ``params``)
load with ``strict=True``, and the same math. The forward is reorganised for speed;
``bench/craft_plain_reference.py`` is a literal implementation used as the oracle:

* features stay channels-last ``(B, H, W, C)`` from ``conv_first`` to the upsampler: 1x1 convolutions run
  as ``F.linear`` on the token layout and 3x3 / depthwise convolutions run on dense channels-last maps
  (permuted views; depthwise convs are also several times faster on CPU in that layout), so the
  NCHW <-> token round trips of the official code disappear;
* each rectangular-window branch gathers its (cyclically shifted) windows straight out of the ``qkv``
  output with one ``index_select`` (roll + partition folded into one index, computed once per input size)
  and attends through :func:`torch.nn.functional.scaled_dot_product_attention`; the branch outputs are
  gathered back and added into the LCM (depthwise ``get_v``) output in place, so there is no roll, no
  ``cat`` and no extra buffer before ``proj``. There is no shift mask: the official code uses none;
* the DynamicPosBias MLP is evaluated from its parameters in every block, as in the official code, and
  passed to SDPA as a ``(1, heads, N, N)`` additive mask. (With the official widths its LayerNorms act on
  a single feature, so the bias is one constant per head, which softmax ignores; it is still computed
  faithfully and costs little);
* HFB's transposed attention normalises per channel on the token layout, forms the per-head ``d x d``
  Gram matrices with one batched matmul, and folds ``project_out`` into the attention weights
  (``project_out(A v) = (W_out A) v``), so applying the attention and the projection is one ``C x C``
  matmul over the image instead of two.

Input handling: any ``H, W >= 1``. The network needs sides that are multiples of
``lcm(window_size, split_size_0, split_size_1)`` (16 for the official models); ``pad_mode`` chooses between
the two official conventions (see :class:`CRAFT`). The output is cropped back to ``(H*scale, W*scale)``.
No clamp.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restorer.archs.layers import (
    ChannelLayerNorm,
    Mlp,
    UpsampleOneStep,
    crop_to,
    gather_relative_position_bias,
    init_transformer_weights,
    pad_symmetric_always,
    pad_to_multiple,
    relative_position_index,
    window_partition,
)
from restorer.archs.registry import register

__all__ = ["CRAFT", "PAD_MODES"]

#: ``'symmetric_always'``: ``inference/inference_CRAFT.py`` (README numbers, spandrel); ``'reflect'``:
#: ``CRAFT_Model.test`` (BasicSR validation).
PAD_MODES = ("symmetric_always", "reflect")


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def relative_offsets(window_size: tuple[int, int]) -> Tensor:
    """The ``biases_h`` / ``biases_v`` buffers: every relative offset ``(dy, dx)`` inside a window.

    Args:
        window_size: ``(wh, ww)``.

    Returns:
        float32 ``((2*wh-1) * (2*ww-1), 2)``; row ``(dy + wh - 1) * (2*ww - 1) + (dx + ww - 1)`` holds
        ``(dy, dx)``, i.e. the row that :func:`~restorer.archs.layers.relative_position_index` selects.
    """
    wh, ww = window_size
    dy = torch.arange(1 - wh, wh)
    dx = torch.arange(1 - ww, ww)
    grid = torch.stack(torch.meshgrid(dy, dx, indexing="ij"))  # 2, 2wh-1, 2ww-1
    return grid.flatten(1).t().contiguous().float()


def _conv_cl(conv: nn.Module, x: Tensor) -> Tensor:
    """Apply an NCHW convolution to a channels-last map: ``(B, H, W, Cin) -> (B, H, W, Cout)`` contiguous."""
    # Dense channels-last input: a strided slice (e.g. V out of qkv) sends CPU depthwise convs down a
    # path that is ~10x slower than the copy this costs.
    y = conv(x.contiguous().permute(0, 3, 1, 2))  # channels-last NCHW view; convs keep the layout
    return y.permute(0, 2, 3, 1).contiguous()  # no copy when the conv returned channels-last memory


def _normalize_space(x: Tensor) -> Tensor:
    """``F.normalize(x, dim=1)`` for ``(B, L, C)``: unit L2 norm over the tokens of every channel.

    In float32 / float64 the sum of squares is ~3x faster on CPU than ``F.normalize``'s norm kernel over a
    non-innermost dimension; low-precision inputs keep ``F.normalize`` (whose norm accumulates in float32
    on GPU, where squaring in fp16 first could overflow).
    """
    if x.dtype not in (torch.float32, torch.float64):
        return F.normalize(x, dim=1)
    return x / x.square().sum(1, keepdim=True).sqrt().clamp_min(1e-12)


def _pointwise(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """A 1x1 convolution as a Linear over the last (channel) dimension of ``(..., Cin)``."""
    return F.linear(x, conv.weight.view(conv.out_channels, conv.in_channels), conv.bias)


@dataclass
class _RectPartition:
    """Token order of one rectangular-window layout: ``tokens[:, perm]`` are the windows, ``inv`` undoes."""

    perm: Tensor
    inv: Tensor


def _rect_partition(
    h: int, w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device
) -> _RectPartition:
    """``torch.roll(x, (-shift[0], -shift[1]))`` followed by the ``window`` partition, as one gather index."""
    rows = (torch.arange(h, device="cpu") + shift[0]) % h  # roll by -s: rolled[i] = x[(i + s) % h]
    cols = (torch.arange(w, device="cpu") + shift[1]) % w
    flat = (rows[:, None] * w + cols[None, :])[None, :, :, None]
    perm = window_partition(flat, window).reshape(-1)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device="cpu")
    return _RectPartition(perm.to(device), inv.to(device))


@dataclass
class _Context:
    """Everything the blocks share within one forward (one padded feature size)."""

    h: int
    w: int
    plain: tuple[_RectPartition, _RectPartition]  # H-branch, V-branch
    shifted: tuple[_RectPartition, _RectPartition]
    rpi: tuple[Tensor, Tensor]  # (N, N) long each
    biases: tuple[Tensor, Tensor]  # (T, 2) float each


# ------------------------------------------------------------------------------------------------
# SRWAB: shift rectangle window attention block
# ------------------------------------------------------------------------------------------------


class DynamicPosBias(nn.Module):
    """Dynamic relative position bias (CrossFormer): MLP from an offset ``(dy, dx)`` to one bias per head.

    Non-residual form, as CRAFT builds it: ``pos3(pos2(pos1(pos_proj(offsets))))``, each ``posK`` being
    ``LayerNorm -> ReLU -> Linear`` (keys ``pos1.0`` / ``pos1.2`` ...).

    Args:
        dim: ``4 * pos_dim``; the official code passes ``branch_dim // 4``, so ``pos_dim = branch_dim // 16``.
        num_heads: heads of the branch.

    Shapes: ``(T, 2) -> (T, num_heads)``.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pos_dim = dim // 4
        self.pos_proj = nn.Linear(2, self.pos_dim)
        self.pos1 = nn.Sequential(
            nn.LayerNorm(self.pos_dim), nn.ReLU(inplace=True), nn.Linear(self.pos_dim, self.pos_dim)
        )
        self.pos2 = nn.Sequential(
            nn.LayerNorm(self.pos_dim), nn.ReLU(inplace=True), nn.Linear(self.pos_dim, self.pos_dim)
        )
        self.pos3 = nn.Sequential(
            nn.LayerNorm(self.pos_dim), nn.ReLU(inplace=True), nn.Linear(self.pos_dim, self.num_heads)
        )

    def forward(self, biases: Tensor) -> Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(biases))))


class RectWindowAttention(nn.Module):
    """Attention of one SRWAB branch in rectangular windows (the official ``Attention_regular``).

    Holds only the DynamicPosBias (``pos``); ``qkv`` / ``proj`` belong to the block.

    Args:
        dim: branch channels (half of the block's).
        idx: ``0`` H-branch, ``s0 x s1`` windows (height x width); ``1`` V-branch, ``s1 x s0`` windows.
        split_size: ``(s0, s1)``.
        num_heads: branch heads (half of the block's).
        qk_scale: overrides ``head_dim ** -0.5``.
    """

    def __init__(
        self, dim: int, idx: int, split_size: Sequence[int], num_heads: int, qk_scale: float | None = None
    ) -> None:
        super().__init__()
        if idx not in (0, 1):
            raise ValueError(f"idx must be 0 (H-branch) or 1 (V-branch), got {idx}")
        self.dim = dim
        self.idx = idx
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        s0, s1 = split_size
        self.h_sp, self.w_sp = (s0, s1) if idx == 0 else (s1, s0)
        self.pos = DynamicPosBias(dim // 4, num_heads)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window=({self.h_sp}, {self.w_sp}), num_heads={self.num_heads}"

    def forward(self, qkv: Tensor, part: _RectPartition, rpi: Tensor, biases: Tensor) -> Tensor:
        """Attend within the (shifted) windows of ``part``.

        Args:
            qkv: ``(B, L, 3, dim)`` in raster order (a strided view of the block's ``qkv`` output).
            part: window order (plain or shifted) of this branch.
            rpi: ``(N, N)`` relative position index.
            biases: ``(T, 2)`` offsets fed to the DynamicPosBias MLP.

        Returns:
            ``(B, L, dim)`` in **window order** (``part.perm`` order); gather with ``part.inv``.
        """
        b, n_tok = qkv.shape[:2]
        heads = self.num_heads
        n = self.h_sp * self.w_sp
        d = self.dim // heads
        # One gather does roll + window partition and makes q, k, v contiguous per window.
        t = qkv.index_select(1, part.perm).view(b * (n_tok // n), n, 3, heads, d)
        q, k, v = (t.select(2, i).transpose(1, 2) for i in range(3))  # (B*nW, heads, N, d) views
        bias = gather_relative_position_bias(self.pos(biases.to(qkv.dtype)), rpi)  # heads, N, N
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0), scale=self.scale)
        # SDPA returns (B*nW, N, heads, d) memory on its fused paths, so this is a view there.
        return o.transpose(1, 2).reshape(b, n_tok, self.dim)


class SRWAB(nn.Module):
    """Shift rectangle window attention block.

    ``x + proj(cat(Hwin-attn, Vwin-attn) + get_v(V))``, then ``+ MLP(LN)``. Half of the channels attend in
    ``s0 x s1`` windows, the other half in ``s1 x s0`` windows; ``shift_size`` rolls them (no mask).

    Args:
        dim: channels ``C``.
        num_heads: heads of the block (each branch gets ``num_heads // 2``).
        split_size: ``(s0, s1)``.
        shift_size: ``(0, 0)`` or ``(s0 // 2, s1 // 2)``.
        mlp_ratio: MLP hidden = ``C * mlp_ratio``.
        qkv_bias: bias in ``qkv``.
        qk_scale: overrides ``head_dim ** -0.5``.
        act_layer: MLP activation.
        norm_layer: token normalisation (``nn.LayerNorm``).

    Shapes: ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        split_size: Sequence[int] = (2, 2),
        shift_size: Sequence[int] = (0, 0),
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.shift_size = tuple(shift_size)
        self.mlp_ratio = mlp_ratio
        self.norm1 = norm_layer(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.branch_num = 2
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)  # LCM
        self.attns = nn.ModuleList(
            [
                RectWindowAttention(
                    dim // 2, idx=i, split_size=split_size, num_heads=num_heads // 2, qk_scale=qk_scale
                )
                for i in range(self.branch_num)
            ]
        )
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer)

    def forward(self, x: Tensor, ctx: _Context) -> Tensor:
        b, h, w, c = x.shape
        half = c // 2
        qkv = self.qkv(self.norm1(x))  # B, H, W, 3C
        # LCM on the un-rolled V (the official get_v runs before the cyclic shift); its fresh output is the
        # buffer the two attention branches are added into.
        out = _conv_cl(self.get_v, qkv[..., 2 * c :])
        out_halves = out.view(b, h * w, 2, half)
        qkv = qkv.view(b, h * w, 3, 2, half)
        parts = ctx.shifted if any(self.shift_size) else ctx.plain
        exporting = torch.onnx.is_in_onnx_export()
        branches = []
        for i, attn in enumerate(self.attns):
            o = attn(qkv[:, :, :, i], parts[i], ctx.rpi[i], ctx.biases[i])  # window order
            o = o.index_select(1, parts[i].inv)  # back to raster, rolled back
            if exporting:
                branches.append(o)
            else:
                out_halves[:, :, i].add_(o)
        if branches:  # ONNX export does not carry an in-place add into a view back to its base: add a copy
            out = out + torch.stack(branches, 2).view(b, h, w, c)
        x = self.proj(out).add_(x)  # fresh tensors: in-place adds are autograd-safe here
        return self.mlp(self.norm2(x)).add_(x)


# ------------------------------------------------------------------------------------------------
# HFERB and HFB
# ------------------------------------------------------------------------------------------------


class HFERB(nn.Module):
    """High-frequency enhancement residual block.

    ``x + last_fc(cat(GELU(conv3x3(x[..., :C/2])), GELU(fc(maxpool3x3(x[..., C/2:])))))``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mid_dim = dim // 2
        self.dim = dim
        self.act = nn.GELU()
        self.last_fc = nn.Conv2d(self.dim, self.dim, 1)
        self.fc = nn.Conv2d(self.mid_dim, self.mid_dim, 1)  # high-frequency enhancement branch
        self.max_pool = nn.MaxPool2d(3, 1, 1)
        self.conv = nn.Conv2d(self.mid_dim, self.mid_dim, 3, 1, 1)  # local feature extraction branch

    def forward(self, x: Tensor) -> Tensor:
        mid = self.mid_dim
        lfe = self.act(_conv_cl(self.conv, x[..., :mid]))
        pooled = self.max_pool(x[..., mid:].permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        hfe = self.act(_pointwise(pooled, self.fc))
        return _pointwise(torch.cat([lfe, hfe], dim=-1), self.last_fc).add_(x)


class HFAttention(nn.Module):
    """HFB's transposed (channel) attention with the high-frequency map as query (the official ``Attention``).

    ``q = dw3x3(1x1(high))`` (``high`` is not normalised), ``k, v = dw3x3(1x1(low))``; per head, q and k
    are L2-normalised over space, ``A = softmax(q k^T * temperature)`` is ``d x d`` and the output is
    ``project_out(A v)``. All convolutions are bias-free in CRAFT.

    Args:
        dim: channels ``C``.
        num_heads: heads (``C / num_heads`` channels each).
        bias: bias in the convolutions.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dim = dim
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim, bias=bias)
        self.kv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.kv_dwconv = nn.Conv2d(
            dim * 2, dim * 2, kernel_size=3, stride=1, padding=1, groups=dim * 2, bias=bias
        )
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        """``low``: normalised ``(B, H, W, C)``; ``high``: ``(B, H, W, C)``. Returns ``(B, H, W, C)``."""
        b, h, w, c = low.shape
        heads = self.num_heads
        d = c // heads
        n_tok = h * w
        q = _conv_cl(self.q_dwconv, _pointwise(high, self.q)).view(b, n_tok, c)
        kv = _conv_cl(self.kv_dwconv, _pointwise(low, self.kv)).view(b, n_tok, 2 * c)
        # The official L2 normalisation over (h w) for each (head, channel) is per channel: dim 1 here.
        # (Normalising before the product, not dividing the Gram afterwards, keeps the sums over the image
        # bounded by 1, which matters in fp16 on large images.)
        q = _normalize_space(q)
        k = _normalize_space(kv[..., :c])
        v = kv[..., c:]
        # Per-head d x d Gram matrices over space: (B, heads, d, L) @ (B, heads, L, d).
        attn = q.view(b, n_tok, heads, d).permute(0, 2, 3, 1) @ k.view(b, n_tok, heads, d).transpose(1, 2)
        attn = torch.softmax(attn * self.temperature, dim=-1)  # B, heads, d, d
        # project_out(A v) per token = v @ (W_out A_blockdiag)^T: fold the projection into a C x C matrix.
        w_out = self.project_out.weight.view(c, heads, d)
        mix = torch.einsum("ohi,bhij->bohj", w_out, attn).reshape(b, c, c)
        out = torch.matmul(v, mix.transpose(1, 2))
        if self.project_out.bias is not None:
            out = out + self.project_out.bias
        return out.view(b, h, w, c)


class FeedForward(nn.Module):
    """Gated-dconv feed-forward: ``project_out(GELU(x1) * x2)``, ``x1, x2 = dw3x3(project_in(x))``.

    Args:
        dim: channels ``C``.
        ffn_expansion_factor: hidden = ``int(C * factor)``.
        bias: bias in the convolutions.

    Shapes: ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool = False) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.hid_fea = hidden
        self.dim = dim
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(
            hidden * 2, hidden * 2, kernel_size=3, stride=1, padding=1, groups=hidden * 2, bias=bias
        )
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        y = _conv_cl(self.dwconv, _pointwise(x, self.project_in))
        hidden = self.hid_fea
        # GELU on a strided channel slice is ~5x slower on CPU than copying the slice first.
        gated = F.gelu(y[..., :hidden].contiguous()).mul_(y[..., hidden:])
        return _pointwise(gated, self.project_out)


class HFB(nn.Module):
    """Hybrid fusion block: ``x = low + attn(LN(low), high)``, then ``x + FFN(LN(x))``.

    Args:
        dim: channels ``C``.
        num_heads: heads of the transposed attention.
        ffn_expansion_factor: FFN expansion (2.66 in CRAFT).
        bias: bias in the convolutions (False in CRAFT).
        layer_norm_type: ``'WithBias'`` or ``'BiasFree'`` (keys ``norm1.body.*``, ``norm2.body.*``).

    Shapes: ``(B, H, W, C), (B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: str = "WithBias",
    ) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, layer_norm_type)
        self.attn = HFAttention(dim, num_heads, bias)
        self.norm2 = ChannelLayerNorm(dim, layer_norm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)
        self.dim = dim

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        x = self.attn(self.norm1.body(low), high).add_(low)
        return self.ffn(self.norm2.body(x)).add_(x)


# ------------------------------------------------------------------------------------------------
# Groups
# ------------------------------------------------------------------------------------------------


class CRFB(nn.Module):
    """Cross-refinement fusion block: for each ``i``, ``x = HFB(SRWAB(SRWAB(x)), HFERB(x))``.

    ``2 * depth`` SRWABs (unshifted / shifted alternating), ``depth`` HFERBs and ``depth`` HFBs.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        split_size_0: int = 7,
        split_size_1: int = 7,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.depth = depth
        split = (split_size_0, split_size_1)
        shift = (split_size_0 // 2, split_size_1 // 2)
        self.srwa_blocks = nn.ModuleList(
            [
                SRWAB(
                    dim=dim,
                    num_heads=num_heads,
                    split_size=split,
                    shift_size=(0, 0) if i % 2 == 0 else shift,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    norm_layer=norm_layer,
                )
                for i in range(2 * depth)
            ]
        )
        self.hfer_blocks = nn.ModuleList([HFERB(dim) for _ in range(depth)])
        self.hf_blocks = nn.ModuleList(
            [
                HFB(
                    dim=dim,
                    num_heads=num_heads,
                    ffn_expansion_factor=2.66,
                    bias=False,
                    layer_norm_type="WithBias",
                )
                for _ in range(depth)
            ]
        )

    def forward(self, x: Tensor, ctx: _Context) -> Tensor:
        for i in range(self.depth):
            low = self.srwa_blocks[2 * i + 1](self.srwa_blocks[2 * i](x, ctx), ctx)
            high = self.hfer_blocks[i](x)  # from the block input, not from ``low``
            x = self.hf_blocks[i](low, high)
        return x


class RCRFG(nn.Module):
    """Residual cross-refinement fusion group: ``x + conv3x3(CRFB(x))``; ``(B, H, W, C)`` in and out."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        split_size_0: int = 2,
        split_size_1: int = 2,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.residual_group = CRFB(
            dim=dim,
            depth=depth,
            num_heads=num_heads,
            split_size_0=split_size_0,
            split_size_1=split_size_1,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            norm_layer=norm_layer,
        )
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: Tensor, ctx: _Context) -> Tensor:
        return _conv_cl(self.conv, self.residual_group(x, ctx)).add_(x)


# ------------------------------------------------------------------------------------------------
# CRAFT
# ------------------------------------------------------------------------------------------------


@register
class CRAFT(nn.Module):
    """Cross-Refinement Adaptive Feature modulation Transformer (lightweight SR, x2 / x3 / x4).

    Every official argument and default is accepted, so any official ``network_g`` builds unchanged. The
    official class swallows ``img_size`` and ``window_size`` through ``**kwargs``; here they are explicit:
    ``img_size`` is unused (nothing in CRAFT depends on it) and ``window_size`` is the padding multiple of
    the official test paths (16), combined with the split sizes into :attr:`window_multiple`.

    **Padding** (``pad_mode``). Because the HFB attention pools over the whole image, the padding changes
    every output pixel, not only the borders, so the two official conventions give different outputs:

    * ``'symmetric_always'`` (default): ``inference/inference_CRAFT.py``, which produced the README's
      published PSNR/SSIM: always append ``(size // m + 1) * m - size`` rows / columns (``1 .. m``, a full
      ``m`` when the size is already a multiple) of mirror images that repeat the edge (``torch.flip``
      concat). It is also what spandrel (chaiNNer and others) does inside its CRAFT forward. It is the
      default because it reproduces the published numbers and the outputs users of other tools see; the
      cost is up to ``m`` extra rows and columns of compute.
    * ``'reflect'``: ``CRAFT_Model.test`` (BasicSR validation during training): reflect-pad to a multiple
      only when needed (replicate for what reflect cannot supply on tiny inputs).

    Pass ``pad_mode`` to the constructor, set the attribute, or override per call in :meth:`forward`.

    Args:
        in_chans: image channels (output channels are the same).
        embed_dim: feature channels ``C``.
        depths: CRFB depth per group (each depth unit = 2 SRWAB + 1 HFERB + 1 HFB).
        num_heads: heads per group (HFB uses all, each SRWAB branch half).
        split_size_0: rectangle window short side ``s0``.
        split_size_1: rectangle window long side ``s1``.
        mlp_ratio: SRWAB MLP hidden = ``C * mlp_ratio``.
        qkv_bias: bias in the SRWAB ``qkv``.
        qk_scale: overrides ``head_dim ** -0.5``.
        norm_layer: SRWAB token normalisation.
        upscale: scale factor (any integer; one conv + PixelShuffle).
        img_range: image range multiplier.
        upsampler: ignored, as in the official code (the upsampler is always UpsampleOneStep).
        resi_connection: ``'1conv'`` or ``'identity'`` (``conv_after_body``).
        img_size: unused (accepted because the official option files pass it).
        window_size: padding multiple of the official test paths.
        pad_mode: ``'symmetric_always'`` or ``'reflect'`` (see above).

    Shapes: ``(B, in_chans, H, W)`` float in ``[0, 1]`` with any ``H, W >= 1`` ->
    ``(B, in_chans, H * upscale, W * upscale)``.
    """

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        split_size_0: int = 4,
        split_size_1: int = 16,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        upscale: int = 2,
        img_range: float = 1.0,
        upsampler: str = "",
        resi_connection: str = "1conv",
        img_size: int | Sequence[int] = 64,
        window_size: int = 16,
        pad_mode: str = "symmetric_always",
    ) -> None:
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"CRAFT: embed_dim {embed_dim} must be even (two attention branches)")
        for heads in num_heads:
            if heads < 2 or embed_dim % heads or (embed_dim // 2) % (heads // 2):
                raise ValueError(
                    f"CRAFT: num_heads {heads} does not divide embed_dim {embed_dim} "
                    "(HFB uses num_heads heads, each SRWAB branch num_heads // 2 on embed_dim // 2 channels)"
                )
        if len(num_heads) != len(depths):
            raise ValueError("CRAFT: depths and num_heads must have the same length")
        if resi_connection not in ("1conv", "identity"):
            raise ValueError(
                f"CRAFT: resi_connection {resi_connection!r} is not supported ('1conv' or 'identity')"
            )
        self.split_size = (split_size_0, split_size_1)
        self.window_size = window_size
        self.img_size = img_size
        self.pad_mode = pad_mode
        self._check_pad_mode(pad_mode)
        num_in_ch = num_out_ch = in_chans
        self.num_feat = 64  # official attribute, unused
        self.num_out_ch = num_out_ch
        self.img_range = img_range
        if in_chans == 3:
            self.mean = torch.tensor((0.4488, 0.4371, 0.4040), device="cpu").view(1, 3, 1, 1)  # not a buffer
        else:
            self.mean = torch.zeros(1, 1, 1, 1, device="cpu")
        self.upscale = upscale
        self.upsampler = upsampler

        # Persistent buffers, official names and registration order (the checkpoints hold them).
        h_win = (split_size_0, split_size_1)
        v_win = (split_size_1, split_size_0)
        self.register_buffer("relative_position_index_h", relative_position_index(h_win))
        self.register_buffer("relative_position_index_v", relative_position_index(v_win))
        self.register_buffer("biases_v", relative_offsets(v_win))
        self.register_buffer("biases_h", relative_offsets(h_win))

        self.conv_first = nn.Conv2d(num_in_ch, embed_dim, 3, 1, 1)
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.num_features = embed_dim
        self.mlp_ratio = mlp_ratio
        self.layers = nn.ModuleList(
            [
                RCRFG(
                    dim=embed_dim,
                    depth=depths[i],
                    num_heads=num_heads[i],
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    split_size_0=split_size_0,
                    split_size_1=split_size_1,
                    norm_layer=norm_layer,
                )
                for i in range(self.num_layers)
            ]
        )
        self.norm = ChannelLayerNorm(self.num_features, "WithBias")
        if resi_connection == "1conv":
            self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        else:
            self.conv_after_body = nn.Identity()
        self.upsample = UpsampleOneStep(upscale, embed_dim, num_out_ch)

        self.apply(init_transformer_weights)
        self._partition_cache: dict[tuple, tuple[tuple[_RectPartition, ...], tuple[_RectPartition, ...]]] = {}

    @staticmethod
    def _check_pad_mode(mode: str) -> None:
        if mode not in PAD_MODES:
            raise ValueError(f"CRAFT: pad_mode {mode!r} is not one of {PAD_MODES}")

    @property
    def window_multiple(self) -> int:
        """Input sides are padded internally to a multiple of this (16 for the official models)."""
        return math.lcm(self.window_size, *self.split_size)

    @property
    def scale(self) -> int:
        """Upscaling factor."""
        return self.upscale

    def _context(self, h: int, w: int, device: torch.device) -> _Context:
        """Window gather orders for an ``h x w`` feature map (multiples of both split sizes)."""
        s0, s1 = self.split_size
        key = (h, w, device)
        parts = self._partition_cache.get(key)
        if parts is None:
            shift = (s0 // 2, s1 // 2)
            plain = (
                _rect_partition(h, w, (s0, s1), (0, 0), device),
                _rect_partition(h, w, (s1, s0), (0, 0), device),
            )
            shifted = (
                _rect_partition(h, w, (s0, s1), shift, device),
                _rect_partition(h, w, (s1, s0), (shift[1], shift[0]), device),
            )
            if len(self._partition_cache) >= 8:
                self._partition_cache.clear()
            parts = self._partition_cache[key] = (plain, shifted)
        return _Context(
            h,
            w,
            parts[0],
            parts[1],
            (self.relative_position_index_h, self.relative_position_index_v),
            (self.biases_h, self.biases_v),
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """Deep features: ``(B, C, H, W) -> (B, C, H, W)`` (channels-last memory), sides multiples of the
        split sizes."""
        _, _, h, w = x.shape
        ctx = self._context(h, w, x.device)
        x = x.permute(0, 2, 3, 1).contiguous()  # B, H, W, C (no copy for channels-last input)
        for layer in self.layers:
            x = layer(x, ctx)
        return self.norm.body(x).permute(0, 3, 1, 2)

    def pad(self, x: Tensor, pad_mode: str | None = None) -> Tensor:
        """Pad ``(B, C, H, W)`` at the bottom/right by the given (default: this model's) convention."""
        mode = self.pad_mode if pad_mode is None else pad_mode
        self._check_pad_mode(mode)
        if mode == "symmetric_always":
            return pad_symmetric_always(x, self.window_multiple)[0]
        return pad_to_multiple(x, self.window_multiple)[0]

    def forward(self, x: Tensor, pad_mode: str | None = None) -> Tensor:
        """Super-resolve ``(B, in_chans, H, W)`` in ``[0, 1]`` to ``(B, in_chans, H*scale, W*scale)``.

        ``pad_mode`` overrides :attr:`pad_mode` for this call.
        """
        h, w = x.shape[-2:]
        x = self.pad(x, pad_mode)
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x.contiguous(memory_format=torch.channels_last))
        feat = self.conv_after_body(self.forward_features(x)) + x
        x = self.upsample(feat)
        x = x / self.img_range + mean
        return crop_to(x, h * self.upscale, w * self.upscale).contiguous()
