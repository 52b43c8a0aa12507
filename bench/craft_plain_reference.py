"""A deliberately plain implementation of CRAFT's math: the speed baseline and the test oracle.

Written from the published definition (AVC2-UESTC/CRAFT-SR ``basicsr/archs/craft_arch.py``, ICCV 2023):

* SRWAB: LayerNorm, one ``qkv`` Linear, channels split in two halves; the first half attends in
  ``s0 x s1`` (H-) windows, the second in ``s1 x s0`` (V-) windows, each with an explicit
  ``softmax(q k^T * scale + bias) v``; the bias comes from the DynamicPosBias MLP evaluated on the
  ``biases_h`` / ``biases_v`` buffers and gathered through ``relative_position_index_h`` / ``_v`` in every
  block. Odd blocks ``torch.roll`` the H-branch by ``(-s0/2, -s1/2)`` and the V-branch by
  ``(-s1/2, -s0/2)`` and roll back afterwards, **without any attention mask** (as in the official code).
  The depthwise ``get_v`` conv runs on the unshifted V and is added before ``proj``. Then ``+ MLP(LN)``.
* HFERB: ``x + last_fc(cat(GELU(conv3x3(x[:C/2])), GELU(fc(maxpool3(x[C/2:])))))``.
* HFB: Restormer transposed attention whose query comes from the (un-normalised) HFERB output:
  ``q = dw(1x1(high))``, ``k, v = dw(1x1(LN(low)))``, per head L2-normalised over space,
  ``softmax(q k^T * temperature) v``, ``project_out``; then a gated-dconv FFN. All bias-free.
* CRFB: for each ``i``: ``low = SRWAB(SRWAB(x))``, ``high = HFERB(x)``, ``x = HFB(low, high)``.
* Model: mean shift, ``conv_first``, groups ``x + conv(CRFB(x))``, channel LayerNorm ``norm``,
  ``conv_after_body`` + shallow features, one conv + PixelShuffle, mean shift back. No clamp.

Everything runs in NCHW with the official reshapes; module names equal the official ones, so the same
state dict loads with ``strict=True`` here, in ``restorer.archs.craft_arch.CRAFT`` and in the official class.

Input padding (the two official conventions, written out plainly):

* ``'symmetric_always'`` (``inference/inference_CRAFT.py``, the published numbers): always append
  ``(size // 16 + 1) * 16 - size`` rows / columns made of flipped copies of the image;
* ``'reflect'`` (``CRAFT_Model.test``, BasicSR validation): reflect-pad to a multiple of 16 only when needed.

For images too small for one flip / reflection, the flip repeats periodically and reflect continues by
replicate, so every size works (where the official scripts work, the results are identical).

Usage::

    model = build_plain_craft(network_g)  # network_g as in an official option file, with or without 'type'
    model.load_state_dict(state_dict, strict=True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PlainCRAFT", "build_plain_craft"]


# ------------------------------------------------------------------------------------------------
# Padding
# ------------------------------------------------------------------------------------------------


def _flip_pad_dim(x: Tensor, target: int, dim: int) -> Tensor:
    while x.shape[dim] < target:
        x = torch.cat([x, torch.flip(x, [dim])], dim)
    return x.narrow(dim, 0, target)


def _reflect_pad_dim(x: Tensor, pad: int, dim: int) -> Tensor:
    refl = min(pad, x.shape[dim] - 1)
    rest = pad - refl
    for amount, mode in ((refl, "reflect"), (rest, "replicate")):
        if amount > 0:
            spec = (0, amount, 0, 0) if dim == 3 else (0, 0, 0, amount)
            x = F.pad(x, spec, mode=mode)
    return x


def plain_pad(x: Tensor, multiple: int, mode: str) -> Tensor:
    """Pad ``(B, C, H, W)`` at the bottom/right by one of the two official conventions."""
    h, w = x.shape[-2:]
    if mode == "symmetric_always":
        x = _flip_pad_dim(x, (h // multiple + 1) * multiple, 2)
        return _flip_pad_dim(x, (w // multiple + 1) * multiple, 3)
    if mode == "reflect":
        x = _reflect_pad_dim(x, (multiple - h % multiple) % multiple, 2)
        return _reflect_pad_dim(x, (multiple - w % multiple) % multiple, 3)
    raise ValueError(f"unknown pad mode {mode!r}")


# ------------------------------------------------------------------------------------------------
# SRWAB
# ------------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DynamicPosBias(nn.Module):
    """MLP from a (dy, dx) offset to one bias per head (non-residual form)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        pos_dim = dim // 4
        self.pos_proj = nn.Linear(2, pos_dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, num_heads))

    def forward(self, biases: Tensor) -> Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(biases))))


class RectAttention(nn.Module):
    """Attention in rectangular windows: ``idx 0`` windows are ``s0 x s1``, ``idx 1`` are ``s1 x s0``."""

    def __init__(self, dim: int, idx: int, split_size: Sequence[int], num_heads: int, qk_scale) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.h_sp, self.w_sp = (split_size[0], split_size[1]) if idx == 0 else (split_size[1], split_size[0])
        self.pos = DynamicPosBias(dim // 4, num_heads)

    def to_windows(self, t: Tensor, h: int, w: int) -> Tensor:
        """(B, H*W, C) -> (B*nW, heads, N, C/heads)."""
        b, _, c = t.shape
        t = t.transpose(1, 2).reshape(b, c, h // self.h_sp, self.h_sp, w // self.w_sp, self.w_sp)
        t = t.permute(0, 2, 4, 3, 5, 1).reshape(-1, self.h_sp * self.w_sp, c)
        return t.reshape(t.shape[0], t.shape[1], self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, h: int, w: int, rpi: Tensor, biases: Tensor) -> Tensor:
        """q, k, v: (B, H*W, C) -> (B, H, W, C)."""
        b, _, c = q.shape
        n = self.h_sp * self.w_sp
        q, k, v = (self.to_windows(t, h, w) for t in (q, k, v))
        attn = (q * self.scale) @ k.transpose(-2, -1)
        table = self.pos(biases)  # (T, heads)
        bias = table[rpi.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)
        attn = torch.softmax(attn + bias.unsqueeze(0), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, n, c)
        out = out.reshape(b, h // self.h_sp, w // self.w_sp, self.h_sp, self.w_sp, c)
        return out.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class SRWAB(nn.Module):
    def __init__(self, dim, num_heads, split_size, shift_size, mlp_ratio, qkv_bias, qk_scale, norm_layer):
        super().__init__()
        self.shift_size = shift_size
        self.norm1 = norm_layer(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.get_v = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.attns = nn.ModuleList(
            [RectAttention(dim // 2, i, split_size, num_heads // 2, qk_scale) for i in range(2)]
        )
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, h: int, w: int, params: dict[str, Tensor]) -> Tensor:
        b, l, c = x.shape
        half = c // 2
        shortcut = x
        qkv = self.qkv(self.norm1(x)).reshape(b, l, 3, c).permute(2, 0, 1, 3)  # 3, B, L, C
        v_img = qkv[2].transpose(1, 2).reshape(b, c, h, w)
        s0, s1 = self.shift_size
        branches = []
        for i, (rpi, biases) in enumerate(
            ((params["rpi_h"], params["biases_h"]), (params["rpi_v"], params["biases_v"]))
        ):
            part = qkv[..., i * half : (i + 1) * half]
            shift = (s0, s1) if i == 0 else (s1, s0)
            if s0 > 0 or s1 > 0:
                part = part.reshape(3, b, h, w, half)
                part = torch.roll(part, shifts=(-shift[0], -shift[1]), dims=(2, 3)).reshape(3, b, l, half)
            out = self.attns[i](part[0], part[1], part[2], h, w, rpi, biases)
            if s0 > 0 or s1 > 0:
                out = torch.roll(out, shifts=shift, dims=(1, 2))
            branches.append(out)
        attended = torch.cat(branches, dim=-1).reshape(b, l, c)
        lcm = self.get_v(v_img).permute(0, 2, 3, 1).reshape(b, l, c)
        x = shortcut + self.proj(attended + lcm)
        return x + self.mlp(self.norm2(x))


# ------------------------------------------------------------------------------------------------
# HFERB, HFB
# ------------------------------------------------------------------------------------------------


class HFERB(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        mid = dim // 2
        self.mid_dim = mid
        self.act = nn.GELU()
        self.last_fc = nn.Conv2d(dim, dim, 1)
        self.fc = nn.Conv2d(mid, mid, 1)
        self.max_pool = nn.MaxPool2d(3, 1, 1)
        self.conv = nn.Conv2d(mid, mid, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        lfe = self.act(self.conv(x[:, : self.mid_dim]))
        hfe = self.act(self.fc(self.max_pool(x[:, self.mid_dim :])))
        return x + self.last_fc(torch.cat([lfe, hfe], dim=1))


class WithBiasLayerNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + 1e-5) * self.weight + self.bias


class LayerNorm2d(nn.Module):
    """Channel LayerNorm on NCHW through the token layout (Restormer's ``LayerNorm`` with ``body``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = WithBiasLayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.body(x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).reshape(b, c, h, w)


class HFAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, 1, bias=False)
        self.q_dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False)
        self.kv = nn.Conv2d(dim, dim * 2, 1, bias=False)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, 3, 1, 1, groups=dim * 2, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        b, c, h, w = low.shape
        heads = self.num_heads
        q = self.q_dwconv(self.q(high))
        k, v = self.kv_dwconv(self.kv(low)).chunk(2, dim=1)
        q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.temperature, dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_expansion_factor: float) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class HFB(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = HFAttention(dim, num_heads)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = FeedForward(dim, 2.66)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        x = low + self.attn(self.norm1(low), high)
        return x + self.ffn(self.norm2(x))


# ------------------------------------------------------------------------------------------------
# Groups and model
# ------------------------------------------------------------------------------------------------


class CRFB(nn.Module):
    def __init__(self, dim, depth, num_heads, split_size, mlp_ratio, qkv_bias, qk_scale, norm_layer):
        super().__init__()
        self.depth = depth
        half_shift = (split_size[0] // 2, split_size[1] // 2)
        self.srwa_blocks = nn.ModuleList(
            [
                SRWAB(
                    dim,
                    num_heads,
                    split_size,
                    (0, 0) if i % 2 == 0 else half_shift,
                    mlp_ratio,
                    qkv_bias,
                    qk_scale,
                    norm_layer,
                )
                for i in range(2 * depth)
            ]
        )
        self.hfer_blocks = nn.ModuleList([HFERB(dim) for _ in range(depth)])
        self.hf_blocks = nn.ModuleList([HFB(dim, num_heads) for _ in range(depth)])

    def forward(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        b, c, h, w = x.shape
        for i in range(self.depth):
            low = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
            low = self.srwa_blocks[2 * i + 1](self.srwa_blocks[2 * i](low, h, w, params), h, w, params)
            low = low.reshape(b, h, w, c).permute(0, 3, 1, 2)
            high = self.hfer_blocks[i](x)
            x = self.hf_blocks[i](low, high)
        return x


class RCRFG(nn.Module):
    def __init__(self, dim, depth, num_heads, split_size, mlp_ratio, qkv_bias, qk_scale, norm_layer):
        super().__init__()
        self.residual_group = CRFB(
            dim, depth, num_heads, split_size, mlp_ratio, qkv_bias, qk_scale, norm_layer
        )
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return self.conv(self.residual_group(x, params)) + x


def _index_and_biases(wh: int, ww: int) -> tuple[Tensor, Tensor]:
    """Relative position index (N, N) and the (2wh-1)(2ww-1) x 2 table of (dy, dx) offsets."""
    ys = torch.div(torch.arange(wh * ww), ww, rounding_mode="floor")
    xs = torch.arange(wh * ww) % ww
    index = (ys[:, None] - ys[None, :] + wh - 1) * (2 * ww - 1) + (xs[:, None] - xs[None, :] + ww - 1)
    dy = torch.arange(1 - wh, wh).repeat_interleave(2 * ww - 1)
    dx = torch.arange(1 - ww, ww).repeat(2 * wh - 1)
    return index, torch.stack([dy, dx], dim=1).float()


class PlainCRAFT(nn.Module):
    """Plain CRAFT; same constructor arguments and state-dict keys as the official class.

    ``pad_mode``: ``'symmetric_always'`` (inference script, default) or ``'reflect'`` (BasicSR test);
    ``window_size`` is the padding multiple.
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
        norm_layer=nn.LayerNorm,
        upscale: int = 2,
        img_range: float = 1.0,
        upsampler: str = "",
        resi_connection: str = "1conv",
        img_size: Any = 64,
        window_size: int = 16,
        pad_mode: str = "symmetric_always",
    ) -> None:
        super().__init__()
        s0, s1 = split_size_0, split_size_1
        self.multiple = math.lcm(window_size, s0, s1)
        self.pad_mode = pad_mode
        self.img_range = img_range
        self.upscale = upscale
        mean = (0.4488, 0.4371, 0.4040) if in_chans == 3 else (0.0,)
        self.mean = torch.tensor(mean, device="cpu").view(1, -1, 1, 1)
        index_h, biases_h = _index_and_biases(s0, s1)
        index_v, biases_v = _index_and_biases(s1, s0)
        self.register_buffer("relative_position_index_h", index_h)
        self.register_buffer("relative_position_index_v", index_v)
        self.register_buffer("biases_v", biases_v)
        self.register_buffer("biases_h", biases_h)
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.layers = nn.ModuleList(
            [
                RCRFG(embed_dim, d, nh, (s0, s1), mlp_ratio, qkv_bias, qk_scale, norm_layer)
                for d, nh in zip(depths, num_heads)
            ]
        )
        self.norm = LayerNorm2d(embed_dim)
        if resi_connection == "1conv":
            self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        else:
            self.conv_after_body = nn.Identity()
        self.upsample = nn.Sequential(
            nn.Conv2d(embed_dim, upscale**2 * in_chans, 3, 1, 1), nn.PixelShuffle(upscale)
        )

    def forward(self, x: Tensor, pad_mode: str | None = None) -> Tensor:
        h, w = x.shape[-2:]
        x = plain_pad(x, self.multiple, pad_mode or self.pad_mode)
        mean = self.mean.to(x)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        params = {
            "rpi_h": self.relative_position_index_h,
            "rpi_v": self.relative_position_index_v,
            "biases_h": self.biases_h,
            "biases_v": self.biases_v,
        }
        feat = x
        for layer in self.layers:
            feat = layer(feat, params)
        x = self.conv_after_body(self.norm(feat)) + x
        x = self.upsample(x) / self.img_range + mean
        return x[..., : h * self.upscale, : w * self.upscale]


def build_plain_craft(network_g: dict[str, Any], **extra: Any) -> PlainCRAFT:
    """Build from an official ``network_g`` mapping (``type`` is ignored)."""
    opts = {k: v for k, v in network_g.items() if k != "type"}
    opts.update(extra)
    return PlainCRAFT(**opts)
