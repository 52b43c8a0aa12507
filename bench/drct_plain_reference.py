"""A deliberately plain implementation of DRCT's math: the speed baseline and the test oracle.

Written from the published definition (ming053l/DRCT ``drct/archs/DRCT_arch.py``, arXiv 2404.00722):
every Swin block does ``torch.roll`` + window partition, then per window
``softmax(q k^T * scale + bias + mask) v`` with explicit tensors, the bias gathered through the block's own
``relative_position_index`` buffer and the full ``(nW, N, N)`` shift mask (fill -100) built for the actual
input size; the RDG concatenates ``[x, x1, ..., x_{k-1}]``, and the ``adjust`` 1x1 convolutions run as
convolutions on NCHW maps. Module and buffer names equal the official ones (including the ``attn_mask``
buffers for ``img_size``), so the same state dict loads with ``strict=True`` here, in
``restorer.archs.drct_arch.DRCT`` and in the official class.

Input handling is implemented separately from ``restorer.archs.layers``:

* ``pad_mode='reflect'`` (default): pad at the bottom/right to a multiple of the window only when needed,
  reflect, then replicate for what reflect cannot supply;
* ``pad_mode='symmetric_always'``: the official ``inference.py`` padding,
  ``torch.cat([x, x.flip(d)], d)`` (repeated while the image is too short) cut to
  ``(size // ws + 1) * ws`` rows / columns.

Usage::

    model = build_plain_drct(network_g)  # network_g as in an official option file, with or without 'type'
    model.load_state_dict(state_dict, strict=True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PlainDRCT", "build_plain_drct"]


def _pad_reflect_then_replicate(x: Tensor, multiple: int) -> Tensor:
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    for dim, pad in ((-2, pad_h), (-1, pad_w)):
        size = x.shape[dim]
        refl = min(pad, size - 1)
        rest = pad - refl
        for amount, mode in ((refl, "reflect"), (rest, "replicate")):
            if amount > 0:
                spec = (0, amount, 0, 0) if dim == -1 else (0, 0, 0, amount)
                x = F.pad(x, spec, mode=mode)
    return x


def _pad_flip_always(x: Tensor, multiple: int) -> Tensor:
    for dim in (2, 3):
        size = x.shape[dim]
        target = (size // multiple + 1) * multiple
        out = x
        while out.shape[dim] < target:  # the official script does one cat; repeat for tiny images
            out = torch.cat([out, torch.flip(out, [dim])], dim)
        x = out.narrow(dim, 0, target)
    return x


def _partition(x: Tensor, ws: int) -> Tensor:
    """(B, H, W, C) -> (B*nW, ws, ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(-1, ws, ws, c)


def _reverse(windows: Tensor, ws: int, h: int, w: int) -> Tensor:
    """(B*nW, ws, ws, C) -> (B, H, W, C)."""
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(b, h, w, -1)


def _index(ws: int) -> Tensor:
    y, x = torch.div(torch.arange(ws * ws), ws, rounding_mode="floor"), torch.arange(ws * ws) % ws
    return (y[:, None] - y[None, :] + ws - 1) * (2 * ws - 1) + (x[:, None] - x[None, :] + ws - 1)


def _shift_mask(h: int, w: int, ws: int, shift: int) -> Tensor:
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = _partition(img, ws).view(-1, ws * ws)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _WindowAttention(nn.Module):
    def __init__(self, dim: int, ws: int, heads: int, qkv_bias: bool, qk_scale: float | None) -> None:
        super().__init__()
        self.ws, self.heads = ws, heads
        self.scale = qk_scale or (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        self.register_buffer("relative_position_index", _index(ws))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(bw, self.heads, n, n)
        attn = torch.softmax(attn, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class _SwinBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        res: tuple[int, int],
        heads: int,
        ws: int,
        shift: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
    ) -> None:
        super().__init__()
        if min(res) <= ws:
            ws, shift = min(res), 0
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _WindowAttention(dim, ws, heads, qkv_bias, qk_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer("attn_mask", _shift_mask(res[0], res[1], ws, shift) if shift else None)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        h, w = size
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = _partition(x, self.ws).view(-1, self.ws * self.ws, c)
        mask = _shift_mask(h, w, self.ws, self.shift).to(x) if self.shift else None
        windows = self.attn(windows, mask)
        x = _reverse(windows.view(-1, self.ws, self.ws, c), self.ws, h, w)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class _RDG(nn.Module):
    def __init__(self, dim, res, heads, ws, mlp_ratio, qkv_bias, qk_scale, gc) -> None:
        super().__init__()
        for k in range(5):
            d = dim + k * gc
            block = _SwinBlock(
                d,
                res,
                heads - d % heads,
                ws,
                0 if k % 2 == 0 else ws // 2,
                mlp_ratio if k < 3 else 1,
                qkv_bias,
                qk_scale,
            )
            self.add_module(f"swin{k + 1}", block)
            self.add_module(f"adjust{k + 1}", nn.Conv2d(d, gc if k < 4 else dim, 1))

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        b, _, _ = x.shape
        h, w = size
        feats = [x]
        out = x
        for k in range(1, 6):
            y = getattr(self, f"swin{k}")(torch.cat(feats, -1), size)
            y = y.transpose(1, 2).reshape(b, -1, h, w)  # tokens -> NCHW
            y = getattr(self, f"adjust{k}")(y)
            if k < 5:
                y = F.leaky_relu(y, 0.2)
            y = y.flatten(2).transpose(1, 2)  # NCHW -> tokens
            if k < 5:
                feats.append(y)
            out = y
        return out * 0.2 + x


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class PlainDRCT(nn.Module):
    """Plain DRCT: same constructor keys as the official class (unused ones accepted)."""

    pad_mode = "reflect"

    def __init__(
        self,
        img_size: int = 64,
        patch_size: int = 1,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        ape: bool = False,
        patch_norm: bool = True,
        upscale: int = 2,
        img_range: float = 1.0,
        upsampler: str = "",
        resi_connection: str = "1conv",
        gc: int = 32,
        **unused: Any,
    ) -> None:
        super().__init__()
        assert upsampler == "pixelshuffle"
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        patch = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        res = (size[0] // patch[0], size[1] // patch[1])
        self.ws = min(res) if min(res) <= window_size else window_size
        self.upscale = upscale
        self.img_range = img_range
        self.mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1) if in_chans == 3 else None
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = _PatchEmbed(embed_dim, patch_norm)
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, res[0] * res[1], embed_dim))
        self.layers = nn.ModuleList(
            _RDG(embed_dim, res, num_heads[i], window_size, mlp_ratio, qkv_bias, qk_scale, gc)
            for i in range(len(depths))
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = (
            nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) if resi_connection == "1conv" else nn.Identity()
        )
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, 64, 3, 1, 1), nn.LeakyReLU())
        ups: list[nn.Module] = []
        if upscale == 3:
            ups += [nn.Conv2d(64, 9 * 64, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            for _ in range(int(math.log2(upscale))):
                ups += [nn.Conv2d(64, 4 * 64, 3, 1, 1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*ups)
        self.conv_last = nn.Conv2d(64, in_chans, 3, 1, 1)

    def forward(self, x: Tensor, pad_mode: str | None = None) -> Tensor:
        mode = pad_mode or self.pad_mode
        h_in, w_in = x.shape[-2:]
        if mode == "reflect":
            x = _pad_reflect_then_replicate(x, self.ws)
        elif mode == "symmetric_always":
            x = _pad_flip_always(x, self.ws)
        else:
            raise ValueError(mode)
        mean = self.mean.to(x) if self.mean is not None else torch.zeros_like(x[:, :, :1, :1])
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        b, c, h, w = x.shape
        t = self.patch_embed(x)
        if hasattr(self, "absolute_pos_embed"):
            t = t + self.absolute_pos_embed
        for layer in self.layers:
            t = layer(t, (h, w))
        t = self.norm(t)
        feat = t.transpose(1, 2).reshape(b, c, h, w)
        x = self.conv_after_body(feat) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        x = x / self.img_range + mean
        return x[..., : h_in * self.upscale, : w_in * self.upscale]


def build_plain_drct(network_g: dict[str, Any]) -> PlainDRCT:
    """Build from an official ``network_g`` mapping (``type`` optional)."""
    opts = {k: v for k, v in network_g.items() if k != "type"}
    return PlainDRCT(**opts)
