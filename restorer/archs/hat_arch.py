"""HAT: Hybrid Attention Transformer for image super-resolution.

Chen et al., "Activating More Pixels in Image Super-Resolution Transformer" (CVPR 2023, arXiv 2205.04437).

Same parameters, buffers and state-dict keys as the official ``XPixelGroup/HAT`` ``hat/archs/hat_arch.py``,
so the released checkpoints (``params_ema``) load with ``strict=True``, and the same math. The forward is
reorganised for speed; ``bench/hat_plain_reference.py`` is a literal implementation used as the oracle:

* window attention is the shared :class:`~restorer.archs.layers.WindowAttention`: it runs through
  :func:`torch.nn.functional.scaled_dot_product_attention` with the relative
  position bias (plus the shift mask) as an additive ``(1, heads, N, M)`` mask, so no ``(windows, heads, N,
  N)`` score tensor is materialised on backends with fused kernels;
* the cyclic shift and the window partition are one token gather (``index_select``) whose order puts the
  windows into four groups (interior, last column, last row, corner); each group shares one of the four
  distinct shift masks (:func:`~restorer.archs.layers.shifted_window_region_masks`), so the ``(nW, N, N)``
  mask is never built and the cost does not grow with the image;
* gather indices, wrapped relative-position indices and masks are computed once per forward and shared by
  every block; each block gathers its bias table once;
* OCAB keys/values are cut from a zero-padded channels-last map with ``Tensor.unfold`` views (one copy)
  instead of ``nn.Unfold`` + rearrange;
* convolutions on token maps run in channels-last memory, which avoids the NCHW round trips.

Input handling: any ``H, W >= 1``. The input is padded at the bottom/right to a multiple of
``window_size`` with reflect padding (replicate for what reflect cannot supply), which equals the official
test-time padding whenever that one works, and the output is cropped back to ``(H*scale, W*scale)``. No clamp.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint
from torch import Tensor, nn

from restorer.archs.layers import (
    DropPath,
    Mlp,
    PatchEmbed,
    PatchUnEmbed,
    Upsample,
    WindowAttention,
    WindowPartition,
    crop_to,
    gather_relative_position_bias,
    init_transformer_weights,
    make_window_partition,
    pad_to_multiple,
    relative_position_index,
    relative_position_index_overlap,
    shifted_window_region_masks,
)
from restorer.archs.registry import register

__all__ = ["HAT"]


# ------------------------------------------------------------------------------------------------
# Per-forward shared state
# ------------------------------------------------------------------------------------------------


@dataclass
class _Context:
    """Everything the blocks share within one forward (one feature size)."""

    h: int
    w: int
    plain: WindowPartition
    shifted: WindowPartition | None
    region_masks: Tensor | None  # (4, N, N), dtype of the features
    rpi_sa: Tensor  # (N, N) long
    rpi_oca: Tensor  # (N, M) long, with the official negative entries


# ------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------


class ChannelAttention(nn.Module):
    """RCAN channel attention: ``x * sigmoid(conv(relu(conv(avgpool(x)))))``; ``(B, C, H, W)`` in and out."""

    def __init__(self, num_feat: int, squeeze_factor: int = 16) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // squeeze_factor, 1, padding=0),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: conv3x3 (C -> C/compress) -> GELU -> conv3x3 -> channel attention.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, num_feat: int, compress_ratio: int = 3, squeeze_factor: int = 30) -> None:
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, squeeze_factor),
        )

    def forward(self, x: Tensor, scale: float = 1.0) -> Tensor:
        """``scale * CAB(x)``; the scale is folded into the ``(B, C, 1, 1)`` channel weights."""
        if scale == 1.0:
            return self.cab(x)
        feat = self.cab[2](self.cab[1](self.cab[0](x)))
        return feat * (self.cab[3].attention(feat) * scale)


class HAB(nn.Module):
    """Hybrid attention block: ``x + (S)W-MSA(LN x) + conv_scale * CAB(LN x)``, then ``+ MLP(LN)``.

    Shapes: ``(B, H*W, C) -> (B, H*W, C)``.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        compress_ratio: int = 3,
        squeeze_factor: int = 30,
        conv_scale: float = 0.01,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        if min(input_resolution) <= window_size:
            # Official behaviour: no shift when the nominal image fits in one window.
            self.shift_size = 0
        if not 0 <= self.shift_size < self.window_size:
            raise ValueError("shift_size must be in [0, window_size)")
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim,
            window_size=(window_size, window_size),
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.conv_scale = conv_scale
        self.conv_block = CAB(num_feat=dim, compress_ratio=compress_ratio, squeeze_factor=squeeze_factor)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: Tensor, ctx: _Context) -> Tensor:
        b, n_tok, c = x.shape
        xn = self.norm1(x)
        # CAB on the normalised map; channels-last memory, so no copies around the convolutions.
        conv_x = self.conv_block(xn.view(b, ctx.h, ctx.w, c).permute(0, 3, 1, 2), scale=self.conv_scale)
        conv_x = conv_x.permute(0, 2, 3, 1).reshape(b, n_tok, c)
        part = ctx.shifted if self.shift_size > 0 else ctx.plain
        attn_x = self.attn(xn, part, ctx.region_masks, ctx.rpi_sa)
        x = torch.add(x, self.drop_path(attn_x)).add_(conv_x)  # shortcut + attn + conv_scale * CAB
        return self.drop_path(self.mlp(self.norm2(x))).add_(x)


def _overlapping_windows_gathered(kv: Tensor, nh: int, nw: int, ows: int, ws: int) -> Tensor:
    """``kv.unfold(1, ows, ws).unfold(2, ows, ws)`` (channels last) as two gathers, for ONNX export: the
    exporter cannot record ``Tensor.unfold`` here. ``(B, Hp, Wp, C) -> (B, nh, nw, ows, ows, C)``."""
    b, _, wp, c = kv.shape
    rows = (torch.arange(nh)[:, None] * ws + torch.arange(ows)[None, :]).reshape(-1).to(kv.device)
    cols = (torch.arange(nw)[:, None] * ws + torch.arange(ows)[None, :]).reshape(-1).to(kv.device)
    kv = kv.index_select(1, rows).index_select(2, cols)  # B, nh*ows, nw*ows, C
    return kv.view(b, nh, ows, nw, ows, c).permute(0, 1, 3, 2, 4, 5)


class OCAB(nn.Module):
    """Overlapping cross-attention block: ``ws x ws`` query windows attend to ``ows x ows`` key windows.

    Key/value windows are cut with stride ``ws`` from the map zero-padded by ``(ows - ws) // 2`` (the
    official ``nn.Unfold`` semantics). Shapes: ``(B, H*W, C) -> (B, H*W, C)``.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        window_size: int,
        overlap_ratio: float,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        mlp_ratio: float = 2,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.overlap_win_size = int(window_size * overlap_ratio) + window_size
        self.pad = (self.overlap_win_size - window_size) // 2
        self.norm1 = norm_layer(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window_size + self.overlap_win_size - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: Tensor, ctx: _Context) -> Tensor:
        b, n_tok, c = x.shape
        h, w = ctx.h, ctx.w
        ws, ows, heads = self.window_size, self.overlap_win_size, self.num_heads
        d = c // heads
        nh, nw = h // ws, w // ws
        n, m = ws * ws, ows * ows

        qkv = self.qkv(self.norm1(x)).view(b, h, w, 3 * c)
        q = qkv[..., :c].reshape(b, nh, ws, nw, ws, heads, d)
        q = q.permute(0, 1, 3, 5, 2, 4, 6).reshape(b * nh * nw, heads, n, d)
        kv = F.pad(qkv[..., c:], (0, 0, self.pad, self.pad, self.pad, self.pad))  # zero pad H and W
        if torch.onnx.is_in_onnx_export():
            kv = _overlapping_windows_gathered(kv, nh, nw, ows, ws)  # b, nh, nw, ows, ows, 2c
        else:
            kv = kv.unfold(1, ows, ws).unfold(2, ows, ws).permute(0, 1, 2, 4, 5, 3)  # views
        kv = kv.reshape(b * nh * nw, m, 2, heads, d)
        k = kv[:, :, 0].transpose(1, 2)
        v = kv[:, :, 1].transpose(1, 2)

        bias = gather_relative_position_bias(self.relative_position_bias_table, ctx.rpi_oca).to(q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0), scale=self.scale)
        o = o.view(b, nh, nw, heads, ws, ws, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, n_tok, c)
        x = self.proj(o).add_(x)  # fresh tensors: in-place adds are autograd-safe here
        return self.mlp(self.norm2(x)).add_(x)


class AttenBlocks(nn.Module):
    """``depth`` HABs (shift 0 / ``ws // 2`` alternating) followed by one OCAB; ``(B, L, C)`` in and out."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        compress_ratio: int,
        squeeze_factor: int,
        conv_scale: float,
        overlap_ratio: float,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float | Sequence[float] = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            [
                HAB(
                    dim=dim,
                    input_resolution=input_resolution,
                    num_heads=num_heads,
                    window_size=window_size,
                    shift_size=0 if (i % 2 == 0) else window_size // 2,
                    compress_ratio=compress_ratio,
                    squeeze_factor=squeeze_factor,
                    conv_scale=conv_scale,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path[i] if isinstance(drop_path, Sequence) else drop_path,
                    norm_layer=norm_layer,
                )
                for i in range(depth)
            ]
        )
        self.overlap_attn = OCAB(
            dim=dim,
            input_resolution=input_resolution,
            window_size=window_size,
            overlap_ratio=overlap_ratio,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            mlp_ratio=mlp_ratio,
            norm_layer=norm_layer,
        )

    def forward(self, x: Tensor, ctx: _Context) -> Tensor:
        for blk in self.blocks:
            if self.use_checkpoint and self.training:
                x = torch_checkpoint.checkpoint(blk, x, ctx, use_reentrant=False)
            else:
                x = blk(x, ctx)
        return self.overlap_attn(x, ctx)


class RHAG(nn.Module):
    """Residual hybrid attention group: ``x + embed(conv(unembed(blocks(x))))``; ``(B, L, C)`` in and out.

    ``resi_connection``: ``'1conv'`` (3x3 conv, key ``conv``) or ``'identity'``.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        compress_ratio: int,
        squeeze_factor: int,
        conv_scale: float,
        overlap_ratio: float,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float | Sequence[float] = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        use_checkpoint: bool = False,
        resi_connection: str = "1conv",
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.residual_group = AttenBlocks(
            dim=dim,
            input_resolution=input_resolution,
            depth=depth,
            num_heads=num_heads,
            window_size=window_size,
            compress_ratio=compress_ratio,
            squeeze_factor=squeeze_factor,
            conv_scale=conv_scale,
            overlap_ratio=overlap_ratio,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            drop=drop,
            attn_drop=attn_drop,
            drop_path=drop_path,
            norm_layer=norm_layer,
            use_checkpoint=use_checkpoint,
        )
        self.conv = _residual_conv(dim, resi_connection)

    def forward(self, x: Tensor, ctx: _Context) -> Tensor:
        b, n_tok, c = x.shape
        y = self.residual_group(x, ctx)
        y = self.conv(y.view(b, ctx.h, ctx.w, c).permute(0, 3, 1, 2))  # channels-last view, no copy
        return y.permute(0, 2, 3, 1).reshape(b, n_tok, c).add_(x)


def _residual_conv(dim: int, resi_connection: str) -> nn.Module:
    if resi_connection == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if resi_connection == "identity":
        return nn.Identity()
    raise ValueError(f"resi_connection {resi_connection!r} is not supported ('1conv' or 'identity')")


# ------------------------------------------------------------------------------------------------
# HAT
# ------------------------------------------------------------------------------------------------


@register
class HAT(nn.Module):
    """Hybrid Attention Transformer (HAT-S / HAT / HAT-L / Real-HAT-GAN).

    Every argument and default is the official one, so any official ``network_g`` builds unchanged;
    ``num_feat`` is fixed to 64 as in the official code. ``img_size`` only matters through the official
    rule "no shifted windows if ``img_size // patch_size <= window_size``" (and ``ape``); checkpoints do not
    depend on it otherwise. Build with ``img_size=64``.

    Args:
        img_size: nominal training patch size.
        patch_size: nominal patch size (1).
        in_chans: image channels (output channels are the same).
        embed_dim: feature channels ``C``.
        depths: HABs per RHAG.
        num_heads: heads per RHAG.
        window_size: attention window ``ws``.
        compress_ratio: CAB channel compression.
        squeeze_factor: channel-attention squeeze.
        conv_scale: weight of the CAB branch.
        overlap_ratio: OCAB key window is ``int(ws * overlap_ratio) + ws``.
        mlp_ratio: MLP hidden = ``C * mlp_ratio``.
        qkv_bias: bias in the qkv projections.
        qk_scale: overrides ``head_dim ** -0.5``.
        drop_rate: dropout (training only).
        attn_drop_rate: attention dropout (training only).
        drop_path_rate: stochastic depth (training only).
        norm_layer: normalisation class.
        ape: absolute position embedding (input must then be ``img_size`` after padding).
        patch_norm: LayerNorm after the patch embedding.
        use_checkpoint: gradient checkpointing of the HABs in training.
        upscale: scale factor (``2**n`` or 3).
        img_range: image range multiplier.
        upsampler: only ``'pixelshuffle'`` is implemented (as in the official forward; with any other value
            the official model returns its input unchanged, which is rejected here).
        resi_connection: ``'1conv'`` or ``'identity'``.

    Shapes: ``(B, in_chans, H, W)`` float in ``[0, 1]`` with any ``H, W >= 1`` ->
    ``(B, in_chans, H * upscale, W * upscale)``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 64,
        patch_size: int | tuple[int, int] = 1,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 7,
        compress_ratio: int = 3,
        squeeze_factor: int = 30,
        conv_scale: float = 0.01,
        overlap_ratio: float = 0.5,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        upscale: int = 2,
        img_range: float = 1.0,
        upsampler: str = "",
        resi_connection: str = "1conv",
    ) -> None:
        super().__init__()
        if upsampler != "pixelshuffle":
            raise ValueError(
                f"HAT: upsampler {upsampler!r} is not supported; the official models use 'pixelshuffle'"
            )
        overlap_win_size = int(window_size * overlap_ratio) + window_size
        if (overlap_win_size - window_size) % 2:
            raise ValueError(
                f"HAT: window_size {window_size} with overlap_ratio {overlap_ratio} gives an odd overlap; "
                "the official OCAB unfold then yields the wrong number of windows"
            )
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.overlap_ratio = overlap_ratio
        num_in_ch = num_out_ch = in_chans
        num_feat = 64
        self.img_range = img_range
        if in_chans == 3:
            self.mean = torch.tensor((0.4488, 0.4371, 0.4040), device="cpu").view(1, 3, 1, 1)  # not a buffer
        else:
            self.mean = torch.zeros(1, 1, 1, 1, device="cpu")
        self.upscale = upscale
        self.upsampler = upsampler

        self.register_buffer("relative_position_index_SA", relative_position_index(window_size))
        self.register_buffer(
            "relative_position_index_OCA", relative_position_index_overlap(window_size, overlap_win_size)
        )

        self.conv_first = nn.Conv2d(num_in_ch, embed_dim, 3, 1, 1)

        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.num_features = embed_dim
        self.mlp_ratio = mlp_ratio
        self.patch_embed = PatchEmbed(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=embed_dim,
            embed_dim=embed_dim,
            norm_layer=norm_layer if patch_norm else None,
        )
        num_patches = self.patch_embed.num_patches
        patches_resolution = self.patch_embed.patches_resolution
        self.patches_resolution = patches_resolution
        if min(patches_resolution) < window_size:
            raise ValueError(
                f"HAT: img_size // patch_size = {patches_resolution} is smaller than window_size "
                f"{window_size}; the official model then shrinks its windows and cannot run. "
                "Build with img_size=64."
            )
        self.patch_unembed = PatchUnEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=embed_dim, embed_dim=embed_dim
        )
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # meta-device safe
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(
                RHAG(
                    dim=embed_dim,
                    input_resolution=(patches_resolution[0], patches_resolution[1]),
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_size,
                    compress_ratio=compress_ratio,
                    squeeze_factor=squeeze_factor,
                    conv_scale=conv_scale,
                    overlap_ratio=overlap_ratio,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    norm_layer=norm_layer,
                    use_checkpoint=use_checkpoint,
                    resi_connection=resi_connection,
                )
            )
        self.norm = norm_layer(self.num_features)
        self.conv_after_body = _residual_conv(embed_dim, resi_connection)

        self.conv_before_upsample = nn.Sequential(
            nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True)
        )
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

        self.apply(init_transformer_weights)
        self._uses_shift = any(blk.shift_size > 0 for lay in self.layers for blk in lay.residual_group.blocks)
        self._partition_cache: dict[tuple, tuple[WindowPartition, WindowPartition | None]] = {}

    @property
    def window_multiple(self) -> int:
        """Inputs are padded internally to a multiple of this (the window size)."""
        return self.window_size

    @property
    def scale(self) -> int:
        """Upscaling factor."""
        return self.upscale

    def _context(self, h: int, w: int, dtype: torch.dtype, device: torch.device) -> _Context:
        """Gather orders, masks and wrapped indices for an ``h x w`` feature map (multiples of ``ws``)."""
        ws = self.window_size
        shift = self.shift_size if self._uses_shift else 0
        key = (h, w, shift, device)
        parts = self._partition_cache.get(key)
        if parts is None:
            plain = make_window_partition(h, w, ws, 0, device)
            shifted = make_window_partition(h, w, ws, shift, device) if shift else None
            if len(self._partition_cache) >= 8:
                self._partition_cache.clear()
            parts = self._partition_cache[key] = (plain, shifted)
        region_masks = shifted_window_region_masks(ws, shift, device=device, dtype=dtype) if shift else None
        return _Context(
            h,
            w,
            parts[0],
            parts[1],
            region_masks,
            self.relative_position_index_SA,
            self.relative_position_index_OCA,
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """Deep features: ``(B, C, H, W) -> (B, C, H, W)``, ``H, W`` multiples of ``window_size``."""
        b, c, h, w = x.shape
        ctx = self._context(h, w, x.dtype, x.device)
        x = self.patch_embed(x)
        if self.ape:
            if x.shape[1] != self.absolute_pos_embed.shape[1]:
                raise ValueError(
                    f"HAT with ape=True needs a padded input of img_size {self.patch_embed.img_size}, "
                    f"got {h}x{w}"
                )
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x, ctx)
        x = self.norm(x)
        return self.patch_unembed(x, (h, w))

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolve ``(B, in_chans, H, W)`` in ``[0, 1]`` to ``(B, in_chans, H*scale, W*scale)``."""
        h, w = x.shape[-2:]
        x, _ = pad_to_multiple(x, self.window_size)
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_before_upsample(x)
        x = self.conv_last(self.upsample(x))
        x = x / self.img_range + mean
        return crop_to(x, h * self.upscale, w * self.upscale).contiguous()
