"""A deliberately plain implementation of DLGSANet's math: the speed baseline and the test oracle.

Written from the published definition (NeonLeexiang/DLGSANet ``basicsr/archs/dlgsanet_arch.py`` and the
index arithmetic of the CUDA kernel in ``dlgsanet_idynamicdwconv_util.py``):

* the channel LayerNorm is the explicit ``(x - mean) / sqrt(var + 1e-5) * weight + bias`` on tokens;
* the dynamic depth-wise convolution is ``F.unfold`` (zero padding) of the input to ``(B, C*k*k, H*W)``
  multiplied by the per-pixel group kernels repeated over each group's channels, summed over the taps;
* SparseGSA normalises ``q`` and ``k`` with ``F.normalize`` before the Gram matrix, as in the official code;
* TLC cuts the windows one by one in the official order (``grids``), runs attention per window and adds
  them back one by one with an explicit count map (``grids_inverse``), for each image of the batch.

Module names equal the official ones, so the same state dict loads with ``strict=True`` here, in
``restorer.archs.dlgsanet_arch.DLGSANet`` and in the official class. No padding anywhere (the network
takes any size).

Usage::

    model = build_plain_dlgsanet(network_g)  # network_g as in an official option file, with or without 'type'
    model.load_state_dict(state_dict, strict=True)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PlainDLGSANet", "build_plain_dlgsanet", "plain_dynamic_dwconv"]


def plain_dynamic_dwconv(x: Tensor, weight: Tensor, padding: int) -> Tensor:
    """Stride-1 dynamic depth-wise convolution by unfold: ``(B, C, H, W)``, ``(B, G, k, k, H, W)``."""
    b, c, h, w = x.shape
    g, k = weight.shape[1], weight.shape[2]
    cols = F.unfold(x, k, padding=padding).view(b, c, k * k, h * w)  # channel-major, then tap
    kernels = weight.reshape(b, g, k * k, h * w).repeat_interleave(c // g, dim=1)  # B, C, k*k, HW
    return (cols * kernels).sum(dim=2).view(b, c, h, w)


class _Norm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))


class LayerNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = _Norm(dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # B, HW, C
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        t = (t - mu) / torch.sqrt(var + 1e-5) * self.body.weight + self.body.bias
        return t.transpose(1, 2).reshape(b, c, h, w)


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_c: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, 3, 1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class FeedForward(nn.Module):
    def __init__(self, dim: int, factor: float) -> None:
        super().__init__()
        hidden = int(dim * factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dwconv(self.project_in(x))
        hidden = x.shape[1] // 2
        x1, x2 = x[:, :hidden], x[:, hidden:]
        gelu = 0.5 * x1 * (1.0 + torch.erf(x1 / math.sqrt(2.0)))
        return self.project_out(gelu * x2)


class BaseFeedForward(nn.Module):
    def __init__(self, dim: int, factor: float) -> None:
        super().__init__()
        hidden = int(dim * factor)
        self.body = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def _ffn(kind: str, dim: int, factor: float) -> nn.Module:
    return FeedForward(dim, factor) if kind == "GDFN" else BaseFeedForward(dim, factor)


class IDynamicDWConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int, group_channels: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = channels // group_channels
        r = channels // 4
        self.conv1 = nn.Sequential(
            nn.Conv2d(channels, r, 1), nn.Conv2d(r, r, kernel_size, padding=kernel_size // 2, groups=r)
        )
        self.conv2 = nn.Sequential(nn.Conv2d(r, kernel_size**2 * self.groups, 1))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.conv2(self.conv1(x))
        b, _, h, w = weight.shape
        k = self.kernel_size
        weight = weight.view(b, self.groups, k, k, h, w)
        return plain_dynamic_dwconv(x, weight, padding=(k - 1) // 2)


class IDynamicDWConvBlock(nn.Module):
    def __init__(self, dim: int, window_size: int, dynamic: bool, heads: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 1, bias=False)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)
        if dynamic:
            self.conv = IDynamicDWConv(dim, window_size, heads)
        else:
            self.conv = nn.Conv2d(dim, dim, window_size, 1, window_size // 2, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(self.conv(self.conv0(x)))


class SparseAttention(nn.Module):
    """Channel attention with the official TLC windowing (``activation='softmax'``: MDTA)."""

    def __init__(self, dim: int, num_heads: int, tlc_flag: bool, tlc_kernel: int, activation: str) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.tlc_flag = tlc_flag
        self.activation = activation
        self.kernel = tlc_kernel
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, 1, 1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def _act(self, a: Tensor) -> Tensor:
        if self.activation == "relu":
            return torch.clamp(a, min=0)
        if self.activation == "gelu":
            return F.gelu(a)
        if self.activation == "sigmoid":
            return torch.sigmoid(a)
        if self.activation == "softmax":
            return torch.softmax(a, dim=-1)
        return a

    def _attention(self, qkv: Tensor) -> Tensor:
        """``(N, 3C, h, w) -> (N, C, h, w)``."""
        n, c3, h, w = qkv.shape
        c = c3 // 3
        heads = self.num_heads
        q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
        q = F.normalize(q.reshape(n, heads, c // heads, h * w), dim=-1)
        k = F.normalize(k.reshape(n, heads, c // heads, h * w), dim=-1)
        v = v.reshape(n, heads, c // heads, h * w)
        attn = self._act(torch.matmul(q, k.transpose(-2, -1)) * self.temperature)
        return torch.matmul(attn, v).reshape(n, c, h, w)

    def _tlc(self, qkv: Tensor) -> Tensor:
        """The official grids / grids_inverse, one image at a time."""
        _, c3, h, w = qkv.shape
        k1, k2 = min(h, self.kernel), min(w, self.kernel)
        num_row, num_col = (h - 1) // k1 + 1, (w - 1) // k2 + 1
        step_i = k1 if num_row == 1 else math.ceil((h - k1) / (num_row - 1) - 1e-8)
        step_j = k2 if num_col == 1 else math.ceil((w - k2) / (num_col - 1) - 1e-8)
        outs = []
        for img in qkv.split(1, dim=0):
            parts, idxes = [], []
            i, last_i = 0, False
            while i < h and not last_i:
                j = 0
                if i + k1 >= h:
                    i, last_i = h - k1, True
                last_j = False
                while j < w and not last_j:
                    if j + k2 >= w:
                        j, last_j = w - k2, True
                    parts.append(img[:, :, i : i + k1, j : j + k2])
                    idxes.append((i, j))
                    j += step_j
                i += step_i
            out = self._attention(torch.cat(parts, dim=0))
            preds = torch.zeros(1, c3 // 3, h, w, dtype=qkv.dtype)
            count = torch.zeros(1, 1, h, w, dtype=qkv.dtype)
            for cnt, (i, j) in enumerate(idxes):
                preds[0, :, i : i + k1, j : j + k2] += out[cnt]
                count[0, 0, i : i + k1, j : j + k2] += 1.0
            outs.append(preds / count)
        return torch.cat(outs, dim=0)

    def forward(self, x: Tensor) -> Tensor:
        qkv = self.qkv_dwconv(self.qkv(x))
        out = self._attention(qkv) if self.training or not self.tlc_flag else self._tlc(qkv)
        return self.project_out(out)


class IDynamicLayerBlock(nn.Module):
    def __init__(self, dim: int, o: dict[str, Any]) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.IDynamicDWConv = IDynamicDWConvBlock(
            dim, o["window_size"], o["idynamic"], o["idynamic_num_heads"]
        )
        self.norm2 = LayerNorm(dim)
        self.IDynamic_ffn = _ffn(o["idynamic_ffn_type"], dim, o["idynamic_ffn_expansion_factor"])

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.IDynamicDWConv(self.norm1(x))
        return x + self.IDynamic_ffn(self.norm2(x))


class SparseAttentionLayerBlock(nn.Module):
    def __init__(self, dim: int, o: dict[str, Any], activation: str, tlc_kernel: int) -> None:
        super().__init__()
        self.norm3 = LayerNorm(dim)
        self.restormer_attn = SparseAttention(
            dim, o["restormer_num_heads"], o["tlc_flag"], tlc_kernel, activation
        )
        self.norm4 = LayerNorm(dim)
        self.restormer_ffn = _ffn(o["restormer_ffn_type"], dim, o["restormer_ffn_expansion_factor"])

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.restormer_attn(self.norm3(x))
        return x + self.restormer_ffn(self.norm4(x))


class BuildBlock(nn.Module):
    def __init__(self, dim: int, o: dict[str, Any]) -> None:
        super().__init__()
        body: list[nn.Module] = []
        kind = o["buildblock_type"]
        for _ in range(o["blocks"]):
            if kind in ("sparseedge", "edge", "idynamic"):
                body.append(IDynamicLayerBlock(dim, o))
            if kind == "sparseedge":
                body.append(SparseAttentionLayerBlock(dim, o, o["activation"], o["tlc_kernel"]))
            elif kind in ("edge", "restormer"):
                body.append(SparseAttentionLayerBlock(dim, o, "softmax", 48))
        body.append(nn.Conv2d(dim, dim, 3, 1, 1))
        self.body = nn.Sequential(*body)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class PlainDLGSANet(nn.Module):
    def __init__(self, o: dict[str, Any]) -> None:
        super().__init__()
        dim, in_chans = o["dim"], o["in_chans"]
        self.o = o
        self.img_range = o["img_range"]
        self.mean = (
            torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1) if in_chans == 3 else torch.zeros(1)
        )
        self.overlap_embed = nn.Sequential(OverlapPatchEmbed(in_chans, dim))
        body: list[nn.Module] = [LayerNorm(dim)] if o["body_norm"] else []
        body += [BuildBlock(dim, o) for _ in range(o["groups"])]
        body += [LayerNorm(dim)] if o["body_norm"] else []
        body.append(nn.Conv2d(dim, dim, 3, 1, 1))
        self.deep_feature_extraction = nn.Sequential(*body)
        s = o["upscale"]
        if o["upsampler"] == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(dim, s * s * in_chans, 3, 1, 1), nn.PixelShuffle(s))
        elif o["upsampler"] == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, 64, 3, 1, 1), nn.LeakyReLU(inplace=True))
            if s == 3:
                ups: list[nn.Module] = [nn.Conv2d(64, 9 * 64, 3, 1, 1), nn.PixelShuffle(3)]
            else:
                ups = []
                for _ in range(int(math.log2(s))):
                    ups += [nn.Conv2d(64, 4 * 64, 3, 1, 1), nn.PixelShuffle(2)]
            self.upsample = nn.Sequential(*ups)
            self.conv_last = nn.Conv2d(64, in_chans, 3, 1, 1)
        else:
            self.conv_last = nn.Conv2d(dim, in_chans, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        mean = self.mean.to(x)
        x = (x - mean) * self.img_range
        x = self.overlap_embed(x)
        x = self.deep_feature_extraction(x) + x
        if self.o["upsampler"] == "pixelshuffledirect":
            x = self.upsample(x)
        elif self.o["upsampler"] == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        else:
            x = self.conv_last(x)
        return x / self.img_range + mean


_DEFAULTS: dict[str, Any] = {
    "in_chans": 3,
    "dim": 60,
    "groups": 4,
    "blocks": 3,
    "buildblock_type": "edge",
    "window_size": 7,
    "idynamic_num_heads": 6,
    "idynamic_ffn_type": "GDFN",
    "idynamic_ffn_expansion_factor": 2.0,
    "idynamic": True,
    "restormer_num_heads": 6,
    "restormer_ffn_type": "GDFN",
    "restormer_ffn_expansion_factor": 2.0,
    "tlc_flag": True,
    "tlc_kernel": 48,
    "activation": "relu",
    "upscale": 4,
    "img_range": 1.0,
    "upsampler": "",
    "body_norm": False,
}


def build_plain_dlgsanet(network_g: dict[str, Any]) -> PlainDLGSANet:
    """Build from an official ``network_g`` mapping (``type`` and ``input_resolution`` are ignored)."""
    opts = {k: v for k, v in network_g.items() if k not in ("type", "input_resolution")}
    return PlainDLGSANet({**_DEFAULTS, **opts})
