"""Restore-RWKV: linear-complexity RWKV U-Net for (medical) image restoration.

Yang et al., "Restore-RWKV: Efficient and Effective Medical Image Restoration with RWKV" (IEEE JBHI;
arXiv 2407.11087).

Same parameters and state-dict keys as the official ``Yaziwel/Restore-RWKV`` ``model/Restore_RWKV.py``
(class ``Restore_RWKV``), so a checkpoint saved by the official training script (a plain state dict,
``Generator_best.pth``) loads with ``strict=True``, and the same math. Differences from the official code,
none of which changes a result:

* the bidirectional WKV runs through :func:`restorer.ops.wkv.bi_wkv_channels_first` (plain PyTorch, O(T),
  any device, float32 / float64 / half) instead of the official JIT-compiled CUDA kernel, which cannot
  even be imported without CUDA. It computes the paper's formula; the official kernels agree with it to
  about 1e-4 at model scale (see :mod:`restorer.ops.wkv`);
* Omni-Shift in eval mode convolves with the re-parameterised 5x5 kernel computed from the branches on
  every call (a ``C x 25`` sum), which is the official eval output (the official module recomputes
  ``conv5x5_reparam`` at its first eval forward); :meth:`OmniShift.reparameterize` writes that kernel into
  ``conv5x5_reparam`` (as the official script's checkpoints, saved after a validation pass, hold it);
  nothing is mutated during ``forward``;
* features stay channels-last inside each level (zero-copy NCHW views), keys and values are produced
  channels-first for the WKV scans, and the column-major scan transposes in memory instead of through
  ``einops``;
* any ``H, W``: the input is padded to a multiple of 8 (reflect, bottom/right) and the output cropped
  back; the official model needs multiples of 8;
* the 2025 ``forward(inp, label)`` shortcut that returns the L1 loss, and its parameter-free ``loss_fun``
  submodule, are left out (training computes losses outside the network). The 2024 code had an unused
  depth-wise ``att.dwconv`` in every block; ``legacy_dwconv=True`` adds it so checkpoints from that
  version load strictly too.

Module overview (``C = dim``; every ``Block`` is Re-WKV spatial mix + channel mix)::

    x -> patch_embed (3x3) -> encoder_level1 (C) -> down1_2 -> encoder_level2 (2C) -> down2_3
      -> encoder_level3 (4C) -> down3_4 -> latent (8C)
      -> up4_3, cat enc3, reduce_chan_level3 -> decoder_level3 (4C)
      -> up3_2, cat enc2, reduce_chan_level2 -> decoder_level2 (2C)
      -> up2_1, cat enc1 (no reduction)      -> decoder_level1 (2C) -> refinement (2C)
      -> output (3x3, 2C -> out_channels) + x

Variants (``restorer/zoo.py``): the published default ``dim=48, num_blocks=[4, 6, 6, 8],
num_refinement_blocks=4`` (27.85 M parameters under the paper's counting, 28.37 M elements in the state
dict) and :data:`LIGHT_CONFIG`, our choice for the unpublished 1.16 M-parameter light model.

The receptive field is global (every WKV scan spans its whole level) and the decay is divided by the
token count (``w = spatial_decay / (H W)``), so the output depends on the whole image and on its size:
tiled inference or extra padding changes every pixel somewhat, as in the official model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restorer.archs.layers import crop_to, pad_to_multiple
from restorer.archs.registry import register
from restorer.ops.wkv import bi_wkv_channels_first

__all__ = [
    "DEFAULT_CONFIG",
    "LIGHT_CONFIG",
    "SIZE_MULTIPLE",
    "Block",
    "OmniShift",
    "Restore_RWKV",
    "VRWKV_ChannelMix",
    "VRWKV_SpatialMix",
    "count_parameters_paper",
]

#: Three 2x down-samplings: the network needs sides that are multiples of 8.
SIZE_MULTIPLE = 8

#: The official defaults (``Restore_RWKV()`` in ``model/Restore_RWKV.py``; single-channel medical images).
DEFAULT_CONFIG = {
    "inp_channels": 1,
    "out_channels": 1,
    "dim": 48,
    "num_blocks": [4, 6, 6, 8],
    "num_refinement_blocks": 4,
}

#: Our light configuration. The paper reports a light model of 1.16 M parameters but publishes no
#: configuration (the official code has only the defaults; issue #20 asking for it is unanswered), and
#: many depth / width combinations reach that size. We chose width 16 (16 -> 32 -> 64 -> 128 channels)
#: with one Block on levels 1-2, two on levels 3-4 and one refinement Block: 1,156,961 parameters under
#: the paper's counting (one 5x5 kernel per Omni-Shift; 1,202,969 state-dict elements), and few Blocks at
#: full resolution, which keeps it fast on a CPU. Not the authors' model: its weights are ours to train.
LIGHT_CONFIG = {
    "inp_channels": 1,
    "out_channels": 1,
    "dim": 16,
    "num_blocks": [1, 1, 2, 2],
    "num_refinement_blocks": 1,
}


# ------------------------------------------------------------------------------------------------
# Omni-Shift
# ------------------------------------------------------------------------------------------------


class OmniShift(nn.Module):
    """Omnidirectional token shift: ``a0 x + a1 dw1x1(x) + a2 dw3x3(x) + a3 dw5x5(x)`` (depth-wise, no bias).

    Training uses the four branches (the official training-time form). Eval uses the equivalent single
    depth-wise 5x5 convolution with the re-parameterised kernel
    ``K = a0 delta + a1 pad2(W1) + a2 pad1(W3) + a3 W5`` (the official inference form), computed from the
    branches on every call, so the output never depends on a stale ``conv5x5_reparam``.

    Keys: ``alpha`` (4), ``conv1x1.weight`` (C,1,1,1), ``conv3x3.weight`` (C,1,3,3), ``conv5x5.weight``
    (C,1,5,5), ``conv5x5_reparam.weight`` (C,1,5,5).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)`` (any memory format; channels-last stays channels-last).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.conv1x1 = nn.Conv2d(dim, dim, kernel_size=1, groups=dim, bias=False)
        self.conv3x3 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.conv5x5 = nn.Conv2d(dim, dim, kernel_size=5, padding=2, groups=dim, bias=False)
        self.alpha = nn.Parameter(torch.randn(4))
        self.conv5x5_reparam = nn.Conv2d(dim, dim, kernel_size=5, padding=2, groups=dim, bias=False)

    def reparam_weight(self) -> Tensor:
        """The fused ``(C, 1, 5, 5)`` kernel; differentiable in ``alpha`` and the three branch kernels."""
        w1 = F.pad(self.conv1x1.weight, (2, 2, 2, 2))
        w3 = F.pad(self.conv3x3.weight, (1, 1, 1, 1))
        identity = F.pad(torch.ones_like(self.conv1x1.weight), (2, 2, 2, 2))
        a = self.alpha
        return a[0] * identity + a[1] * w1 + a[2] * w3 + a[3] * self.conv5x5.weight

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Write the fused kernel into ``conv5x5_reparam.weight`` (official eval-time checkpoints hold it)."""
        self.conv5x5_reparam.weight.copy_(self.reparam_weight())

    def forward_branches(self, x: Tensor) -> Tensor:
        """The training-time four-branch form."""
        a = self.alpha
        return a[0] * x + a[1] * self.conv1x1(x) + a[2] * self.conv3x3(x) + a[3] * self.conv5x5(x)

    def forward_reparam(self, x: Tensor) -> Tensor:
        """The inference form: one depth-wise 5x5 convolution with :meth:`reparam_weight`."""
        return F.conv2d(x, self.reparam_weight().to(x.dtype), padding=2, groups=self.dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_branches(x) if self.training else self.forward_reparam(x)


def _omni_shift_tokens(shift: OmniShift, x: Tensor) -> Tensor:
    """Omni-Shift on a channels-last token map ``(B, H, W, C)``; returns a contiguous ``(B, H, W, C)``."""
    y = shift(x.contiguous().permute(0, 3, 1, 2))  # NCHW view in channels-last memory: convs keep it
    return y.permute(0, 2, 3, 1).contiguous()  # no copy when the conv returned channels-last memory


def _linear_channels_first(x: Tensor, weight: Tensor) -> Tensor:
    """``Linear(x)`` for ``x`` of shape ``(B, T, Cin)``, returned channels-first ``(B, Cout, T)`` contiguous.

    One GEMM with a transposed operand instead of a GEMM plus a transpose copy.
    """
    return torch.matmul(weight, x.transpose(1, 2))


# ------------------------------------------------------------------------------------------------
# Spatial mix (Re-WKV) and channel mix
# ------------------------------------------------------------------------------------------------


class VRWKV_SpatialMix(nn.Module):  # noqa: N801 (official name)
    """Re-WKV attention: Omni-Shift, then key / value / receptance, then two Bi-WKV scans.

    Scan 0 runs over row-major tokens ``(h w)`` with ``w = spatial_decay[0] / T``, ``u = spatial_first[0] /
    T`` (``T = H * W`` of this level); scan 1 runs over column-major tokens ``(w h)`` with row 1 of both
    parameters, on the same keys and on scan 0's output as values. The result, gated by ``sigmoid(r)``,
    goes through ``output``.

    Keys: ``spatial_decay``, ``spatial_first`` (2, C); ``key``, ``value``, ``receptance``, ``output`` (C, C)
    without bias; ``omni_shift.*``; with ``legacy_dwconv`` also the unused ``dwconv.weight`` (C, 1, 3, 3) of
    the 2024 code.

    Shapes: ``forward`` takes and returns channels-last ``(B, H, W, C)``.
    """

    recurrence = 2

    def __init__(self, n_embd: int, legacy_dwconv: bool = False) -> None:
        super().__init__()
        self.n_embd = n_embd
        if legacy_dwconv:  # present (and unused) in the 2024 official code
            self.dwconv = nn.Conv2d(n_embd, n_embd, kernel_size=3, padding=1, groups=n_embd, bias=False)
        self.omni_shift = OmniShift(n_embd)
        self.key = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(n_embd, n_embd, bias=False)
        self.receptance = nn.Linear(n_embd, n_embd, bias=False)
        self.output = nn.Linear(n_embd, n_embd, bias=False)
        self.spatial_decay = nn.Parameter(torch.randn(self.recurrence, n_embd))
        self.spatial_first = nn.Parameter(torch.randn(self.recurrence, n_embd))

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        t = h * w
        xs = _omni_shift_tokens(self.omni_shift, x).view(b, t, c)
        k = _linear_channels_first(xs, self.key.weight)  # B, C, T (row-major tokens)
        v = _linear_channels_first(xs, self.value.weight)
        gate = torch.sigmoid(self.receptance(xs))  # B, T, C
        v = bi_wkv_channels_first(self.spatial_decay[0] / t, self.spatial_first[0] / t, k, v)
        # Scan 1: the same keys and scan 0's output, reordered to column-major (w h) tokens.
        k_cols = k.view(b, c, h, w).transpose(-1, -2).reshape(b, c, t)
        v_cols = v.view(b, c, h, w).transpose(-1, -2).reshape(b, c, t)
        v_cols = bi_wkv_channels_first(self.spatial_decay[1] / t, self.spatial_first[1] / t, k_cols, v_cols)
        y = v_cols.view(b, c, w, h).permute(0, 3, 2, 1)  # B, H, W, C view (back to row-major)
        return self.output(gate.view(b, h, w, c) * y)


class VRWKV_ChannelMix(nn.Module):  # noqa: N801 (official name)
    """Channel mix: Omni-Shift, then ``sigmoid(receptance(xs)) * value(relu(key(xs))^2)`` (hidden ``4C``).

    Keys: ``key.weight`` (hC, C), ``value.weight`` (C, hC), ``receptance.weight`` (C, C), ``omni_shift.*``.
    Shapes: channels-last ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(self, n_embd: int, hidden_rate: int = 4) -> None:
        super().__init__()
        self.n_embd = n_embd
        hidden = int(hidden_rate * n_embd)
        self.key = nn.Linear(n_embd, hidden, bias=False)
        self.omni_shift = OmniShift(n_embd)
        self.receptance = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(hidden, n_embd, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        xs = _omni_shift_tokens(self.omni_shift, x)
        kv = self.value(torch.square(torch.relu(self.key(xs))))
        return torch.sigmoid(self.receptance(xs)) * kv


class Block(nn.Module):
    """``x + gamma1 * att(ln1(x))``, then ``x + gamma2 * ffn(ln2(x))`` (LayerNorms over channels, eps 1e-5).

    Keys: ``ln1.*``, ``ln2.*``, ``gamma1``, ``gamma2`` (C); ``att.*`` (:class:`VRWKV_SpatialMix`); ``ffn.*``
    (:class:`VRWKV_ChannelMix`).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; the result is in channels-last memory (a zero-copy view of the
    token map), and a channels-last input is read without a copy.
    """

    def __init__(self, n_embd: int, hidden_rate: int = 4, legacy_dwconv: bool = False) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.att = VRWKV_SpatialMix(n_embd, legacy_dwconv=legacy_dwconv)
        self.ffn = VRWKV_ChannelMix(n_embd, hidden_rate)
        self.gamma1 = nn.Parameter(torch.ones(n_embd))
        self.gamma2 = nn.Parameter(torch.ones(n_embd))

    def forward(self, x: Tensor) -> Tensor:
        t = x.permute(0, 2, 3, 1).contiguous()  # B, H, W, C
        t = t + self.gamma1 * self.att(self.ln1(t))
        t = t + self.gamma2 * self.ffn(self.ln2(t))
        return t.permute(0, 3, 1, 2)


class _Downsample(nn.Module):
    """3x3 conv ``C -> C/2`` (no bias) + PixelUnshuffle(2): ``(B, C, H, W) -> (B, 2C, H/2, W/2)``."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class _Upsample(nn.Module):
    """3x3 conv ``C -> 2C`` (no bias) + PixelShuffle(2): ``(B, C, H, W) -> (B, C/2, 2H, 2W)``."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False), nn.PixelShuffle(2)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def _blocks(n: int, width: int, legacy_dwconv: bool) -> nn.Sequential:
    return nn.Sequential(*[Block(width, legacy_dwconv=legacy_dwconv) for _ in range(n)])


# ------------------------------------------------------------------------------------------------
# Network
# ------------------------------------------------------------------------------------------------


@register
class Restore_RWKV(nn.Module):  # noqa: N801 (official name)
    """The Restore-RWKV U-Net (see the module docstring). Official argument names and defaults.

    Args:
        inp_channels: image channels in (1 for the medical models, 3 for colour).
        out_channels: channels out; the global residual adds the input, so this equals ``inp_channels``
            (or ``inp_channels == 1``, broadcast, as in the official code).
        dim: channels ``C`` of level 1 (levels 2-4 have ``2C, 4C, 8C``; decoder level 1 and the
            refinement run at ``2C``).
        num_blocks: Blocks of levels 1-4 (the decoder mirrors levels 1-3).
        num_refinement_blocks: Blocks after decoder level 1.
        legacy_dwconv: add the unused ``att.dwconv`` of the 2024 official code (for its checkpoints).

    ``forward``: ``(B, inp_channels, H, W)`` with any ``H, W >= 1`` -> ``(B, out_channels, H, W)``; no clamp.
    """

    def __init__(
        self,
        inp_channels: int = 1,
        out_channels: int = 1,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        legacy_dwconv: bool = False,
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4:
            raise ValueError(f"num_blocks needs 4 entries (levels 1-4), got {list(num_blocks)}")
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be even (the down-sampling halves it), got {dim}")
        if out_channels != inp_channels and inp_channels != 1:
            raise ValueError(
                f"the global residual adds the input: out_channels ({out_channels}) must equal inp_channels "
                f"({inp_channels}) unless inp_channels is 1"
            )
        self.inp_channels = inp_channels
        self.out_channels = out_channels
        self.window_multiple = SIZE_MULTIPLE
        n1, n2, n3, n4 = (int(n) for n in num_blocks)
        c1, c2, c3, c4 = dim, dim * 2, dim * 4, dim * 8

        self.patch_embed = nn.Conv2d(inp_channels, c1, kernel_size=3, padding=1, bias=True)
        self.encoder_level1 = _blocks(n1, c1, legacy_dwconv)
        self.down1_2 = _Downsample(c1)
        self.encoder_level2 = _blocks(n2, c2, legacy_dwconv)
        self.down2_3 = _Downsample(c2)
        self.encoder_level3 = _blocks(n3, c3, legacy_dwconv)
        self.down3_4 = _Downsample(c3)
        self.latent = _blocks(n4, c4, legacy_dwconv)

        self.up4_3 = _Upsample(c4)
        self.reduce_chan_level3 = nn.Conv2d(c4, c3, kernel_size=1, bias=True)
        self.decoder_level3 = _blocks(n3, c3, legacy_dwconv)
        self.up3_2 = _Upsample(c3)
        self.reduce_chan_level2 = nn.Conv2d(c3, c2, kernel_size=1, bias=True)
        self.decoder_level2 = _blocks(n2, c2, legacy_dwconv)
        self.up2_1 = _Upsample(c2)  # concatenated with level 1: 2C channels, no reduction (official)
        self.decoder_level1 = _blocks(n1, c2, legacy_dwconv)
        self.refinement = _blocks(int(num_refinement_blocks), c2, legacy_dwconv)
        self.output = nn.Conv2d(c2, out_channels, kernel_size=3, padding=1, bias=True)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Write every Omni-Shift's fused kernel into its ``conv5x5_reparam`` (as in official checkpoints)."""
        for m in self.modules():
            if isinstance(m, OmniShift):
                m.reparameterize()

    def forward_padded(self, x: Tensor) -> Tensor:
        """The official forward on ``(B, inp_channels, H, W)`` with ``H, W`` multiples of 8."""
        x = x.contiguous(memory_format=torch.channels_last)
        enc1 = self.encoder_level1(self.patch_embed(x))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1))
        dec1 = self.refinement(dec1)
        return (self.output(dec1) + x).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        """Restore ``(B, inp_channels, H, W)`` (any ``H, W``): reflect-pad to a multiple of 8, crop back."""
        h, w = x.shape[-2:]
        padded, _ = pad_to_multiple(x, SIZE_MULTIPLE)
        return crop_to(self.forward_padded(padded), h, w)


def count_parameters_paper(model: nn.Module) -> int:
    """Parameters as the paper counts them: each Omni-Shift as its single re-parameterised 5x5 kernel.

    (The official ``__main__`` asks to keep only the 5x5 convolution in Omni-Shift before counting.)
    """
    total = 0
    for name, p in model.named_parameters():
        if ".omni_shift." in f".{name}":
            if name.endswith("conv5x5_reparam.weight"):
                total += p.numel()
            continue
        total += p.numel()
    return total
