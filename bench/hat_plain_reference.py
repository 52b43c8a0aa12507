"""A deliberately plain implementation of HAT's math: the speed baseline and the test oracle.

Written from the published definition (XPixelGroup/HAT ``hat/archs/hat_arch.py``): per window
``softmax(q k^T * scale + bias + mask) v`` with explicit tensors, the bias gathered through the index
buffers in every block, ``torch.roll`` + window partition for shifted windows with the full ``(nW, N, N)``
mask (fill -100) built for the actual input size, and ``nn.Unfold`` (zero padding) for the OCAB keys and
values. Module names equal the official ones, so the same state dict loads with ``strict=True`` here, in
``restorer.archs.hat_arch.HAT`` and in the official class.

Only the input handling is shared with our HAT: inputs whose sides are not multiples of the window are
padded at the bottom/right (reflect, replicate for what reflect cannot supply) and the output is cropped,
which is the official test-time padding whenever the official padding works.

Usage::

    model = build_plain_hat(network_g)  # network_g as in an official option file, with or without 'type'
    model.load_state_dict(state_dict, strict=True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PlainHAT", "build_plain_hat"]


def _pad_reflect_then_replicate(x: Tensor, multiple: int) -> tuple[Tensor, int, int]:
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
    return x, h, w


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


def _index_sa(ws: int) -> Tensor:
    y, x = torch.div(torch.arange(ws * ws), ws, rounding_mode="floor"), torch.arange(ws * ws) % ws
    return (y[:, None] - y[None, :] + ws - 1) * (2 * ws - 1) + (x[:, None] - x[None, :] + ws - 1)


def _index_oca(ws: int, ows: int) -> Tensor:
    # Official formula, negative values included: key minus query position, offset by ws - ows + 1.
    yq, xq = torch.div(torch.arange(ws * ws), ws, rounding_mode="floor"), torch.arange(ws * ws) % ws
    yk, xk = torch.div(torch.arange(ows * ows), ows, rounding_mode="floor"), torch.arange(ows * ows) % ows
    dy = yk[None, :] - yq[:, None] + ws - ows + 1
    dx = xk[None, :] - xq[:, None] + ws - ows + 1
    return dy * (ws + ows - 1) + dx


def _shift_mask(h: int, w: int, ws: int, shift: int) -> Tensor:
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = _partition(img, ws).view(-1, ws * ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class ChannelAttention(nn.Module):
    def __init__(self, num_feat: int, squeeze_factor: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // squeeze_factor, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    def __init__(self, num_feat: int, compress_ratio: int, squeeze_factor: int) -> None:
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, squeeze_factor),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.cab(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, ws: int, heads: int, qkv_bias: bool, qk_scale: float | None) -> None:
        super().__init__()
        self.ws, self.heads = ws, heads
        self.scale = qk_scale or (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, index: Tensor, mask: Tensor | None) -> Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)  # bw, heads, n, n
        bias = self.relative_position_bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = torch.softmax(attn, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class HAB(nn.Module):
    def __init__(
        self, dim, heads, ws, shift, compress_ratio, squeeze_factor, conv_scale, mlp_ratio, qkv_bias, qk_scale
    ):
        super().__init__()
        self.ws, self.shift, self.conv_scale = ws, shift, conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, heads, qkv_bias, qk_scale)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, size: tuple[int, int], index: Tensor, mask: Tensor) -> Tensor:
        h, w = size
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        conv_x = self.conv_block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = _partition(x, self.ws).view(-1, self.ws * self.ws, c)
        windows = self.attn(windows, index, mask if self.shift > 0 else None)
        x = _reverse(windows.view(-1, self.ws, self.ws, c), self.ws, h, w)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x.reshape(b, h * w, c) + conv_x * self.conv_scale
        return x + self.mlp(self.norm2(x))


class OCAB(nn.Module):
    def __init__(self, dim, ws, overlap_ratio, heads, qkv_bias, qk_scale, mlp_ratio):
        super().__init__()
        self.dim, self.ws, self.heads = dim, ws, heads
        self.ows = int(ws * overlap_ratio) + ws
        self.scale = qk_scale or (dim // heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.unfold = nn.Unfold(kernel_size=self.ows, stride=ws, padding=(self.ows - ws) // 2)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((ws + self.ows - 1) ** 2, heads))
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, size: tuple[int, int], index: Tensor) -> Tensor:
        h, w = size
        b, _, c = x.shape
        ws, ows, heads = self.ws, self.ows, self.heads
        shortcut = x
        qkv = self.qkv(self.norm1(x)).view(b, h, w, 3, c)
        q = qkv[:, :, :, 0]  # b, h, w, c
        k = qkv[:, :, :, 1].permute(0, 3, 1, 2)  # b, c, h, w
        v = qkv[:, :, :, 2].permute(0, 3, 1, 2)
        q_win = _partition(q.contiguous(), ws).view(-1, ws * ws, c)
        kv = self.unfold(torch.cat([k, v], dim=1))  # b, 2*c*ows*ows, nW
        nw = kv.shape[-1]
        kv = kv.view(b, 2, c, ows * ows, nw).permute(1, 0, 4, 3, 2).reshape(2, b * nw, ows * ows, c)
        k_win, v_win = kv[0], kv[1]
        bw = q_win.shape[0]
        d = c // heads
        qh = q_win.reshape(bw, ws * ws, heads, d).permute(0, 2, 1, 3)
        kh = k_win.reshape(bw, ows * ows, heads, d).permute(0, 2, 1, 3)
        vh = v_win.reshape(bw, ows * ows, heads, d).permute(0, 2, 1, 3)
        attn = (qh * self.scale) @ kh.transpose(-2, -1)
        bias = self.relative_position_bias_table[index.view(-1)].view(ws * ws, ows * ows, -1).permute(2, 0, 1)
        attn = torch.softmax(attn + bias.unsqueeze(0), dim=-1)
        out = (attn @ vh).transpose(1, 2).reshape(bw, ws * ws, c)
        out = _reverse(out.view(-1, ws, ws, c), ws, h, w).view(b, h * w, c)
        x = self.proj(out) + shortcut
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nn.Module):
    def __init__(
        self,
        dim,
        depth,
        heads,
        ws,
        shift_ok,
        cr,
        sf,
        conv_scale,
        overlap_ratio,
        mlp_ratio,
        qkv_bias,
        qk_scale,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                HAB(
                    dim,
                    heads,
                    ws,
                    ws // 2 if (i % 2 and shift_ok) else 0,
                    cr,
                    sf,
                    conv_scale,
                    mlp_ratio,
                    qkv_bias,
                    qk_scale,
                )
                for i in range(depth)
            ]
        )
        self.overlap_attn = OCAB(dim, ws, overlap_ratio, heads, qkv_bias, qk_scale, mlp_ratio)


class RHAG(nn.Module):
    def __init__(
        self,
        dim,
        depth,
        heads,
        ws,
        shift_ok,
        cr,
        sf,
        conv_scale,
        overlap_ratio,
        mlp_ratio,
        qkv_bias,
        qk_scale,
        resi,
    ):
        super().__init__()
        self.residual_group = AttenBlocks(
            dim, depth, heads, ws, shift_ok, cr, sf, conv_scale, overlap_ratio, mlp_ratio, qkv_bias, qk_scale
        )
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if resi == "1conv" else nn.Identity()


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else None


class PlainHAT(nn.Module):
    """HAT with the official keys and a literal forward. Takes the official ``network_g`` arguments."""

    def __init__(
        self,
        img_size: int = 64,
        patch_size: int = 1,
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
        norm_layer: Any = None,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        upscale: int = 2,
        img_range: float = 1.0,
        upsampler: str = "",
        resi_connection: str = "1conv",
    ) -> None:
        super().__init__()
        assert upsampler == "pixelshuffle" and not ape
        ws = window_size
        ows = int(ws * overlap_ratio) + ws
        self.ws, self.upscale, self.img_range = ws, upscale, img_range
        self.mean = (
            torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
            if in_chans == 3
            else torch.zeros(1, 1, 1, 1)
        )
        self.register_buffer("relative_position_index_SA", _index_sa(ws))
        self.register_buffer("relative_position_index_OCA", _index_oca(ws, ows))
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = _PatchEmbed(embed_dim, patch_norm)
        res = img_size // patch_size if isinstance(img_size, int) else min(img_size) // patch_size
        shift_ok = res > ws  # official: no shift when the nominal image fits in one window
        self.layers = nn.ModuleList(
            [
                RHAG(embed_dim, d, hd, ws, shift_ok, compress_ratio, squeeze_factor, conv_scale,
                     overlap_ratio, mlp_ratio, qkv_bias, qk_scale, resi_connection)
                for d, hd in zip(depths, num_heads)
            ]
        )  # fmt: skip
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = (
            nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) if resi_connection == "1conv" else nn.Identity()
        )
        num_feat = 64
        self.conv_before_upsample = nn.Sequential(
            nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True)
        )
        up: list[nn.Module] = []
        if upscale & (upscale - 1) == 0:
            for _ in range(int(math.log2(upscale))):
                up += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        else:
            assert upscale == 3
            up += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        self.upsample = nn.Sequential(*up)
        self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        self.shift_ok = shift_ok

    def forward_features(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        mask = _shift_mask(h, w, self.ws, self.ws // 2).to(x.device) if self.shift_ok else None
        x = x.flatten(2).transpose(1, 2)
        if self.patch_embed.norm is not None:
            x = self.patch_embed.norm(x)
        for layer in self.layers:
            y = x
            for blk in layer.residual_group.blocks:
                y = blk(y, (h, w), self.relative_position_index_SA, mask)
            y = layer.residual_group.overlap_attn(y, (h, w), self.relative_position_index_OCA)
            y = y.transpose(1, 2).contiguous().view(b, c, h, w)
            x = layer.conv(y).flatten(2).transpose(1, 2) + x
        x = self.norm(x)
        return x.transpose(1, 2).contiguous().view(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        x, h, w = _pad_reflect_then_replicate(x, self.ws)
        mean = self.mean.type_as(x)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        x = x / self.img_range + mean
        return x[..., : h * self.upscale, : w * self.upscale]


def build_plain_hat(network_g: dict[str, Any]) -> PlainHAT:
    """Build :class:`PlainHAT` from an official ``network_g`` mapping (a ``type`` key is ignored)."""
    opt = {k: v for k, v in network_g.items() if k != "type"}
    return PlainHAT(**opt)
