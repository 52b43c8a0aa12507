"""Dynamic depth-wise convolution (per-pixel, per-group kernels) in plain PyTorch.

This is the operation that DLGSANet's MHDLSA (and DWNet, "On the Connection between Local Attention and
Dynamic Depth-wise Convolution", ICLR 2022) runs through a CuPy CUDA kernel (``_idynamic_cuda`` in the
official ``dlgsanet_idynamicdwconv_util.py``), which has no CPU path and compiles for float/double only.
Here it runs on any device and floating dtype, with the same argument semantics:

* ``input``: ``(B, C, H, W)``;
* ``weight``: ``(B, G, kh, kw, Ho, Wo)``, one ``kh x kw`` kernel per sample, group and output pixel;
  channel ``c`` uses group ``g(c) = c // (C // G)``, i.e. each contiguous block of ``C // G`` channels
  shares a kernel (the hypernetwork's ``(B, G*kh*kw, Ho, Wo)`` output viewed as ``(B, G, kh, kw, Ho, Wo)``);
* ``out[b, c, y, x] = bias[c] + sum_{i, j} weight[b, g(c), i, j, y, x] *
  input[b, c, y*sh - ph + i*dh, x*sw - pw + j*dw]`` with zeros outside the image; no normalisation.

Implementation (:func:`idynamic_dwconv`): a loop over the ``kh*kw`` kernel taps. The input is zero-padded
once; each tap multiplies a shifted (strided) view of it by that tap's weight plane, broadcast over the
channels of a group, and accumulates in place (on CPU band of rows by band of rows, so that the accumulator
stays in cache). Memory stays ``O(activation)`` (an ``F.unfold`` formulation
needs ``kh*kw`` times the activation: 49x for DLGSANet) and it is several times faster on CPU (see
``bench/bench_dlgsanet.py``). Half-precision inputs (fp16 / bf16) are accumulated in float32 and the result
is cast back. The backward pass is an explicit tap loop too (no ``kh*kw``-sized saved tensors);
:func:`idynamic_dwconv_reference` is a literal gather of the formula above for tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["idynamic_dwconv", "idynamic_dwconv_reference"]

IntPair = int | tuple[int, int]


def _pair(v: IntPair) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types (49 products summed in fp16/bf16 lose several bits), else the dtype itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check(input: Tensor, weight: Tensor, stride, padding, dilation) -> tuple:
    if input.dim() != 4 or weight.dim() != 6:
        raise ValueError(
            f"expected input (B, C, H, W) and weight (B, G, kh, kw, Ho, Wo), got {tuple(input.shape)} and "
            f"{tuple(weight.shape)}"
        )
    b, c, h, w = input.shape
    wb, g, kh, kw, ho, wo = weight.shape
    if wb != b:
        raise ValueError(f"batch mismatch: input {b}, weight {wb}")
    if g < 1 or c % g:
        raise ValueError(f"channels {c} are not divisible by the {g} weight groups")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    exp_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    exp_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if (ho, wo) != (exp_h, exp_w):
        raise ValueError(
            f"weight output size {ho}x{wo} does not match the convolution output size {exp_h}x{exp_w} "
            f"(input {h}x{w}, kernel {kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw}, dilation {dh}x{dw})"
        )
    return (sh, sw), (ph, pw), (dh, dw)


def _tap(xp: Tensor, i: int, j: int, ho: int, wo: int, stride, dilation) -> Tensor:
    """The ``(.., Ho, Wo)`` strided view of the padded input that kernel tap ``(i, j)`` reads."""
    (sh, sw), (dh, dw) = stride, dilation
    r0, c0 = i * dh, j * dw
    return xp[..., r0 : r0 + (ho - 1) * sh + 1 : sh, c0 : c0 + (wo - 1) * sw + 1 : sw]


# On CPU the taps are accumulated band of output rows by band of output rows, each band's accumulator being
# about this many bytes: all kh*kw taps then hit a cache-resident band (L2/L3) instead of streaming the whole
# map from memory kh*kw times: 1.3-1.8x faster for 256x256 maps (C = 48 / 90), no change for small ones.
_CPU_BAND_BYTES = 8 << 20


def _forward(input: Tensor, weight: Tensor, stride, padding, dilation) -> Tensor:
    b, c, h, w = input.shape
    _, g, kh, kw, ho, wo = weight.shape
    ph, pw = padding
    sh = stride[0]
    xp = F.pad(input, (pw, pw, ph, ph)) if ph or pw else input
    xp = xp.reshape(b, g, c // g, xp.shape[-2], xp.shape[-1])
    acc = _accumulate_dtype(input.dtype)
    out = torch.empty((b, g, c // g, ho, wo), dtype=acc, device=input.device)
    # mul(out=) would round a half-precision first product before the cast, so then start from zero.
    first_mul = acc == input.dtype
    if not first_mul:
        out.zero_()
    band = ho
    if input.device.type == "cpu":
        band = max(1, _CPU_BAND_BYTES // (b * c * wo * out.element_size()))
    for r0 in range(0, ho, band):
        r1 = min(ho, r0 + band)
        o = out[..., r0:r1, :] if band < ho else out
        xb = xp[..., r0 * sh :, :]  # the rows band r0.. reads start at r0 * sh
        for i in range(kh):
            for j in range(kw):
                win = _tap(xb, i, j, r1 - r0, wo, stride, dilation)  # B, G, C/G, rows, Wo (view)
                wt = weight[:, :, i, j, r0:r1].unsqueeze(2)  # B, G, 1, rows, Wo (view)
                if first_mul and i == 0 and j == 0:
                    torch.mul(win, wt, out=o)
                else:
                    o.addcmul_(win, wt)
    return out.view(b, c, ho, wo)


def _forward_traceable(input: Tensor, weight: Tensor, stride, padding, dilation) -> Tensor:
    """:func:`_forward` without ``out=`` or in-place writes, which ONNX export cannot record (same taps,
    same order of summation; no row bands: an exported graph has no cache to tune for)."""
    b, c, h, w = input.shape
    _, g, kh, kw, ho, wo = weight.shape
    ph, pw = padding
    xp = F.pad(input, (pw, pw, ph, ph)) if ph or pw else input
    xp = xp.reshape(b, g, c // g, xp.shape[-2], xp.shape[-1])
    out = None
    for i in range(kh):
        for j in range(kw):
            term = _tap(xp, i, j, ho, wo, stride, dilation) * weight[:, :, i, j].unsqueeze(2)
            out = term if out is None else out + term
    return out.reshape(b, c, ho, wo)


class _IDynamicDWConv(torch.autograd.Function):
    """Tap-loop forward and backward; saves only ``input`` and ``weight``."""

    @staticmethod
    def forward(ctx, input: Tensor, weight: Tensor, stride, padding, dilation) -> Tensor:
        ctx.save_for_backward(input, weight)
        ctx.conv = (stride, padding, dilation)
        return _forward(input, weight, stride, padding, dilation).to(input.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        input, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conv
        b, c, h, w = input.shape
        _, g, kh, kw, ho, wo = weight.shape
        (ph, pw) = padding
        acc = _accumulate_dtype(input.dtype)
        go = grad_out.to(acc).reshape(b, g, c // g, ho, wo)
        grad_input = grad_weight = None
        if ctx.needs_input_grad[0]:
            # Transposed tap loop: every tap scatters grad_out * its weight back onto the window it read.
            gxp = torch.zeros((b, g, c // g, h + 2 * ph, w + 2 * pw), dtype=acc, device=input.device)
            for i in range(kh):
                for j in range(kw):
                    _tap(gxp, i, j, ho, wo, stride, dilation).addcmul_(go, weight[:, :, i, j].unsqueeze(2))
            grad_input = gxp[..., ph : ph + h, pw : pw + w].reshape(b, c, h, w).to(input.dtype)
        if ctx.needs_input_grad[1]:
            xp = F.pad(input, (pw, pw, ph, ph)) if ph or pw else input
            xp = xp.reshape(b, g, c // g, xp.shape[-2], xp.shape[-1])
            grad_weight = torch.empty((b, g, kh, kw, ho, wo), dtype=acc, device=input.device)
            for i in range(kh):
                for j in range(kw):
                    torch.sum(
                        go * _tap(xp, i, j, ho, wo, stride, dilation), dim=2, out=grad_weight[:, :, i, j]
                    )
            grad_weight = grad_weight.to(weight.dtype)
        return grad_input, grad_weight, None, None, None


def idynamic_dwconv(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> Tensor:
    """Dynamic depth-wise convolution with per-pixel, per-group kernels (see the module docstring).

    Args:
        input: ``(B, C, H, W)``.
        weight: ``(B, G, kh, kw, Ho, Wo)``; ``C`` must be a multiple of ``G``; same dtype and device.
        bias: optional ``(C,)`` added to every output pixel.
        stride: ``s`` or ``(sh, sw)``.
        padding: zero padding ``p`` or ``(ph, pw)`` (DLGSANet: ``(k - 1) // 2``, "same" output).
        dilation: ``d`` or ``(dh, dw)``.

    Returns:
        ``(B, C, Ho, Wo)`` in ``input``'s dtype, with ``Ho = (H + 2ph - dh(kh-1) - 1) // sh + 1`` (same for
        ``Wo``), which must equal the weight's spatial size. Differentiable in ``input``, ``weight`` and
        ``bias`` (first order).
    """
    stride, padding, dilation = _check(input, weight, stride, padding, dilation)
    if weight.dtype != input.dtype:
        raise TypeError(f"input dtype {input.dtype} and weight dtype {weight.dtype} differ")
    if torch.onnx.is_in_onnx_export():
        out = _forward_traceable(input, weight, stride, padding, dilation)
    elif torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad):
        out = _IDynamicDWConv.apply(input, weight, stride, padding, dilation)
    else:
        out = _forward(input, weight, stride, padding, dilation).to(input.dtype)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1).to(out.dtype)
    return out


def idynamic_dwconv_reference(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> Tensor:
    """The formula, gathered literally (index arithmetic of the official CUDA kernel); for tests only.

    Builds the ``(B, C, kh, kw, Ho, Wo)`` tensor of every input sample each output reads (zero where the
    index falls outside the image), multiplies it by the group's kernel repeated over its channels and sums
    the taps. Memory ``kh*kw`` times the output. Same arguments and result as :func:`idynamic_dwconv`.
    """
    (sh, sw), (ph, pw), (dh, dw) = _check(input, weight, stride, padding, dilation)
    b, c, h, w = input.shape
    _, g, kh, kw, ho, wo = weight.shape
    dev = input.device
    h_in = torch.arange(ho, device=dev)[None, :] * sh - ph + torch.arange(kh, device=dev)[:, None] * dh
    w_in = torch.arange(wo, device=dev)[None, :] * sw - pw + torch.arange(kw, device=dev)[:, None] * dw
    valid_h = (h_in >= 0) & (h_in < h)  # kh, Ho
    valid_w = (w_in >= 0) & (w_in < w)  # kw, Wo
    rows = h_in.clamp(0, h - 1)[:, None, :, None]  # kh, 1, Ho, 1
    cols = w_in.clamp(0, w - 1)[None, :, None, :]  # 1, kw, 1, Wo
    samples = input[:, :, rows, cols]  # B, C, kh, kw, Ho, Wo
    mask = (valid_h[:, None, :, None] & valid_w[None, :, None, :]).to(input.dtype)
    group_of_channel = torch.arange(c, device=dev) // (c // g)
    kernels = weight[:, group_of_channel]  # B, C, kh, kw, Ho, Wo
    out = (samples * mask * kernels).sum(dim=(2, 3))
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
