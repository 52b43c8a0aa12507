"""DRCT: Dense-residual-connected Transformer for image super-resolution.

Hsu, Lee, Chou, "DRCT: Saving Image Super-resolution away from Information Bottleneck" (CVPR Workshops /
NTIRE 2024, arXiv 2404.00722).

Same parameters, buffers and state-dict keys as the official ``ming053l/DRCT`` ``drct/archs/DRCT_arch.py``,
so the released checkpoints (``params_ema``) load with ``strict=True``, and the same math. The forward is
reorganised for speed; ``bench/drct_plain_reference.py`` is a literal implementation used as the oracle:

* window attention is the shared :class:`~restorer.archs.layers.WindowAttention` (SDPA with the relative
  position bias, plus one of four region masks for shifted windows, as an additive mask; no ``(nW, N, N)``
  mask);
* every operation of the body except attention works token by token, so the tokens stay in the order of
  the plain (unshifted) windows from the patch embedding to the final norm: unshifted blocks need no gather
  at all and shifted blocks one ``index_select`` each way;
* gather indices and region masks are computed once per forward and shared by every block; each block
  gathers its bias table (through its own ``relative_position_index`` buffer) once;
* the 1x1 ``adjust`` convolutions run as linear layers on the tokens (same weights), which avoids the
  token <-> NCHW round trips.

Structure (per RDG, ``C = embed_dim``, ``gc`` growth channels, ``h`` = ``num_heads[i]``): five Swin blocks
``swin1..5`` of widths ``C + (k-1) * gc`` with ``h - (width mod h)`` heads, shifts ``0, ws/2, 0, ws/2, 0``
and MLP ratios ``mlp_ratio, mlp_ratio, mlp_ratio, 1, 1``; block ``k`` sees the concatenation of the RDG
input and the previous ``adjust`` outputs; ``adjust1..4`` are 1x1 convs to ``gc`` followed by
LeakyReLU(0.2), ``adjust5`` maps back to ``C`` without activation; the RDG returns ``0.2 * x5 + x``. The
values in ``depths`` are ignored except for their count (and the official stochastic-depth schedule).

Buffers: every block has ``attn.relative_position_index`` ``(N, N)`` int64 and the shifted blocks
(``swin2``, ``swin4``) an ``attn_mask`` ``(nW, N, N)`` built for ``img_size`` (``(16, 256, 256)`` for the
official ``img_size=64``, ``window_size=16``): build with the official ``img_size`` or strict loading fails
on its shape. The stored mask is not used by the forward: masks are computed for the actual size (the
official model uses the stored one only when the input is exactly ``img_size``, where it is identical).

Input handling: any ``H, W >= 1``, two conventions (``DRCT.pad_mode`` or the ``pad_mode`` argument of
:meth:`DRCT.forward`):

* ``'reflect'`` (default): pad at the bottom/right to a multiple of the window only when needed, reflect
  (replicate for what reflect cannot supply): the BasicSR test path of the official repository
  (``drct/models/drct_model.py``, ``drct/test.py``);
* ``'symmetric_always'``: always pad ``(size // ws + 1) * ws - size`` (1..ws) with edge-repeating mirror
  images: the official ``inference.py`` / ``inference_fp16.py`` scripts.

The output is cropped back to ``(H*scale, W*scale)``. No clamp.
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
    init_transformer_weights,
    make_window_partition,
    pad_symmetric_always,
    pad_to_multiple,
    shifted_window_mask,
    shifted_window_region_masks,
)
from restorer.archs.registry import register

__all__ = ["DRCT", "PAD_MODES"]

#: Input padding conventions of :meth:`DRCT.forward` (see the module docstring).
PAD_MODES = ("reflect", "symmetric_always")


@dataclass
class _Context:
    """What the blocks share within one forward (one feature size); tokens are in plain-window order."""

    plain: WindowPartition  # identity (tokens are stored in this order)
    shifted: WindowPartition | None  # relative to the plain-window order
    region_masks: Tensor | None  # (4, N, N), dtype of the features


def _heads(dim: int, num_heads: int) -> int:
    """The official head rule of the RDG blocks: ``num_heads - (dim mod num_heads)``."""
    return num_heads - (dim % num_heads)


class SwinTransformerBlock(nn.Module):
    """Swin block: ``x + (S)W-MSA(LN x)``, then ``+ MLP(LN x)``; ``(B, L, C)`` in and out.

    Official rule: when the nominal ``input_resolution`` fits in one window (``min <= window_size``) the
    window shrinks to ``min(input_resolution)`` and the shift disappears. Shifted blocks register the
    ``attn_mask`` buffer for ``input_resolution`` (a checkpoint key), unshifted ones ``attn_mask = None``.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
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
        self.input_resolution = tuple(input_resolution)
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        if min(self.input_resolution) <= self.window_size:
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        if not 0 <= self.shift_size < self.window_size:
            raise ValueError("shift_size must be in [0, window_size)")
        if dim % num_heads:
            raise ValueError(
                f"DRCT: block width {dim} is not a multiple of its {num_heads} heads "
                "(the official model fails at run time with this embed_dim / gc / num_heads)"
            )
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim,
            window_size=self.window_size,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
            index_buffer=True,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        attn_mask = None
        if self.shift_size > 0:
            h, w = self.input_resolution
            if h % self.window_size or w % self.window_size:
                raise ValueError(
                    f"DRCT: img_size // patch_size = {self.input_resolution} is not a multiple of "
                    f"window_size {self.window_size}; the official model cannot be built either"
                )
            # Built on the default device (meta-device construction stays allocation free).
            attn_mask = shifted_window_mask(
                h, w, self.window_size, self.shift_size, device=torch.empty(0).device, cache=False
            )
        self.register_buffer("attn_mask", attn_mask)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, "
            f"window_size={self.window_size}, shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}"
        )

    def forward(self, x: Tensor, ctx: _Context) -> Tensor:
        part = ctx.shifted if self.shift_size > 0 else ctx.plain
        x = x + self.drop_path(self.attn(self.norm1(x), part, ctx.region_masks))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class RDG(nn.Module):
    """Residual dense group: five Swin blocks densely connected through ``adjust`` 1x1 convs.

    ``(B, L, C) -> (B, L, C)``, ``0.2 * x5 + x``. Only ``drop_path[0]`` of the group's stochastic-depth
    slice is used, for all five blocks (official).
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: float,
        norm_layer: Callable[[int], nn.Module],
        gc: int,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.gc = gc
        for k in range(1, 6):
            width = dim + (k - 1) * gc
            self.add_module(
                f"swin{k}",
                SwinTransformerBlock(
                    dim=width,
                    input_resolution=input_resolution,
                    num_heads=_heads(width, num_heads),
                    window_size=window_size,
                    shift_size=0 if k % 2 else window_size // 2,
                    mlp_ratio=mlp_ratio if k <= 3 else 1,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path,
                    norm_layer=norm_layer,
                ),
            )
            self.add_module(f"adjust{k}", nn.Conv2d(width, gc if k < 5 else dim, 1))
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: Tensor, ctx: _Context) -> Tensor:
        feats = [x]
        y = x
        for k in range(1, 6):
            inp = feats[0] if k == 1 else torch.cat(feats, dim=-1)
            adjust: nn.Conv2d = getattr(self, f"adjust{k}")
            y = getattr(self, f"swin{k}")(inp, ctx)
            y = F.linear(y, adjust.weight.flatten(1), adjust.bias)  # 1x1 conv on tokens
            if k < 5:
                feats.append(self.lrelu(y))
        return torch.add(x, y, alpha=0.2)


# ------------------------------------------------------------------------------------------------
# DRCT
# ------------------------------------------------------------------------------------------------


@register
class DRCT(nn.Module):
    """Dense-residual-connected Transformer (DRCT / DRCT-L / Real-DRCT-GAN).

    Every argument and default is the official one, so any official ``network_g`` builds unchanged.
    ``compress_ratio``, ``squeeze_factor``, ``conv_scale`` and ``overlap_ratio`` appear in the official
    option files but are unused (accepted and ignored, as in the official code); so is ``use_checkpoint``
    there (here: gradient checkpointing of the RDGs in training). ``num_feat`` is fixed to 64. Build with
    the official ``img_size=64``: it sets the shape of the ``attn_mask`` checkpoint buffers.

    Args:
        img_size: nominal training patch size (shapes the ``attn_mask`` buffers, ``ape``).
        patch_size: nominal patch size (1).
        in_chans: image channels (output channels are the same).
        embed_dim: feature channels ``C``.
        depths: one entry per RDG; the values only feed the stochastic-depth schedule.
        num_heads: base head count per RDG (block heads follow ``h - (width mod h)``).
        window_size: attention window ``ws``.
        compress_ratio: unused.
        squeeze_factor: unused.
        conv_scale: unused.
        overlap_ratio: unused.
        mlp_ratio: MLP ratio of ``swin1..3`` (``swin4``/``swin5`` use 1).
        qkv_bias: bias in the qkv projections.
        qk_scale: overrides ``head_dim ** -0.5``.
        drop_rate: dropout (training only).
        attn_drop_rate: attention dropout (training only).
        drop_path_rate: stochastic depth (training only).
        norm_layer: normalisation class.
        ape: absolute position embedding (the padded input must then be ``img_size``).
        patch_norm: LayerNorm after the patch embedding.
        use_checkpoint: gradient checkpointing of the RDGs in training.
        upscale: scale factor (``2**n`` or 3).
        img_range: image range multiplier.
        upsampler: only ``'pixelshuffle'`` (the official forward returns its input unchanged otherwise,
            which is rejected here).
        resi_connection: ``'1conv'`` or ``'identity'``.
        gc: growth channels of the dense connections.

    Shapes: ``(B, in_chans, H, W)`` float in ``[0, 1]`` with any ``H, W >= 1`` ->
    ``(B, in_chans, H * upscale, W * upscale)``.
    """

    #: Default input padding convention, one of :data:`PAD_MODES`; set per instance or pass to forward.
    pad_mode: str = "reflect"

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
        gc: int = 32,
    ) -> None:
        super().__init__()
        del compress_ratio, squeeze_factor, conv_scale  # unused, as in the official model
        if upsampler != "pixelshuffle":
            raise ValueError(
                f"DRCT: upsampler {upsampler!r} is not supported; the official models use 'pixelshuffle'"
            )
        if len(num_heads) < len(depths):
            raise ValueError("DRCT: num_heads needs one entry per RDG (len(depths))")
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
        self.gc = gc

        self.conv_first = nn.Conv2d(num_in_ch, embed_dim, 3, 1, 1)

        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.num_features = embed_dim
        self.mlp_ratio = mlp_ratio
        self.use_checkpoint = use_checkpoint
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
            group = dpr[sum(depths[:i]) : sum(depths[: i + 1])]
            self.layers.append(
                RDG(
                    dim=embed_dim,
                    input_resolution=(patches_resolution[0], patches_resolution[1]),
                    num_heads=num_heads[i],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=group[0] if group else 0.0,
                    norm_layer=norm_layer,
                    gc=gc,
                )
            )
        self.norm = norm_layer(self.num_features)
        if resi_connection == "1conv":
            self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        elif resi_connection == "identity":
            self.conv_after_body = nn.Identity()
        else:
            raise ValueError(f"resi_connection {resi_connection!r} is not supported ('1conv' or 'identity')")

        self.conv_before_upsample = nn.Sequential(
            nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True)
        )
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

        self.apply(init_transformer_weights)
        first = self.layers[0].swin1 if self.num_layers else None
        # The window actually used (the official rule shrinks it when img_size fits in one window).
        self._block_window = first.window_size if first is not None else window_size
        self._uses_shift = any(lay.swin2.shift_size > 0 for lay in self.layers)
        self._partition_cache: dict[tuple, tuple[WindowPartition, WindowPartition | None]] = {}

    @property
    def window_multiple(self) -> int:
        """Inputs are padded internally to a multiple of this (the attention window)."""
        return self._block_window

    @property
    def scale(self) -> int:
        """Upscaling factor."""
        return self.upscale

    def _context(self, h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple[_Context, Tensor]:
        """Shared state for an ``h x w`` feature map, and the raster -> plain-window token gather."""
        ws = self._block_window
        shift = ws // 2 if self._uses_shift else 0
        key = (h, w, ws, shift, device)
        parts = self._partition_cache.get(key)
        if parts is None:
            plain = make_window_partition(h, w, ws, 0, device)
            shifted = make_window_partition(h, w, ws, shift, device).relative_to(plain) if shift else None
            if len(self._partition_cache) >= 8:
                self._partition_cache.clear()
            parts = self._partition_cache[key] = (plain, shifted)
        plain, shifted = parts
        region_masks = shifted_window_region_masks(ws, shift, device=device, dtype=dtype) if shift else None
        ctx = _Context(plain.relative_to(plain), shifted, region_masks)
        return ctx, plain

    def forward_features(self, x: Tensor) -> Tensor:
        """Deep features: ``(B, C, H, W) -> (B, C, H, W)``, ``H, W`` multiples of :attr:`window_multiple`."""
        b, c, h, w = x.shape
        ctx, plain = self._context(h, w, x.dtype, x.device)
        x = self.patch_embed(x)
        if self.ape:
            if x.shape[1] != self.absolute_pos_embed.shape[1]:
                raise ValueError(
                    f"DRCT with ape=True needs a padded input of img_size {self.patch_embed.img_size}, "
                    f"got {h}x{w}"
                )
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        x = x.index_select(1, plain.perm)  # raster -> plain-window order (all later ops are per token)
        for layer in self.layers:
            if self.use_checkpoint and self.training:
                x = torch_checkpoint.checkpoint(layer, x, ctx, use_reentrant=False)
            else:
                x = layer(x, ctx)
        x = self.norm(x).index_select(1, plain.inv)
        return self.patch_unembed(x, (h, w))

    def forward(self, x: Tensor, pad_mode: str | None = None) -> Tensor:
        """Super-resolve ``(B, in_chans, H, W)`` in ``[0, 1]`` to ``(B, in_chans, H*scale, W*scale)``.

        Args:
            x: input batch, any ``H, W >= 1``.
            pad_mode: ``'reflect'`` or ``'symmetric_always'`` (see the module docstring); default
                :attr:`pad_mode`.
        """
        mode = self.pad_mode if pad_mode is None else pad_mode
        h, w = x.shape[-2:]
        if mode == "reflect":
            x, _ = pad_to_multiple(x, self._block_window)
        elif mode == "symmetric_always":
            x, _ = pad_symmetric_always(x, self._block_window)
        else:
            raise ValueError(f"DRCT: pad_mode {mode!r} is not one of {PAD_MODES}")
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_before_upsample(x)
        x = self.conv_last(self.upsample(x))
        x = x / self.img_range + mean
        return crop_to(x, h * self.upscale, w * self.upscale).contiguous()
