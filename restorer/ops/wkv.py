"""Bidirectional WKV ("Bi-WKV", Vision-RWKV / Restore-RWKV) in plain PyTorch, O(T) time and memory.

The operator that Restore-RWKV's spatial mix runs through a custom CUDA kernel (``WKV.apply(w, u, k, v)``
in the official ``model/Restore_RWKV.py``), which has no CPU path. For every batch element ``b`` and
channel ``c`` (``w = w[c]``, ``u = u[c]``; the model passes ``w = spatial_decay / T``, ``u = spatial_first
/ T``)::

                 sum_{j != t} exp(-(|t - j| - 1) * w + k_j) * v_j  +  exp(u + k_t) * v_t
    y[b, t, c] = -----------------------------------------------------------------------
                 sum_{j != t} exp(-(|t - j| - 1) * w + k_j)        +  exp(u + k_t)

so every token is a softmax-weighted average of all values: keys enter through ``exp(k_j)``, the weight
decays (``w > 0``) or grows (``w < 0``) with the distance ``|t - j|``, the neighbours at distance 1 get the
undecayed ``exp(k_j)`` and the current token gets the bonus ``exp(u)`` instead. This is the paper's
formula (and the fact sheet's). The official CUDA kernels evaluate it in 64 token chunks and, inside a
chunk, differ from it by O(w) terms (below 1e-4 at model scale, where ``|spatial_decay|`` is a few units):
we implement the formula, not those deviations.

Algorithm (:func:`bi_wkv`, O(T L) time with ``L <= 32``, O(T) memory). The sequence is cut into chunks of
``L`` tokens, ``L`` chosen per call so that ``|w| L <= 8`` (large decays simply get shorter chunks):

* in-chunk: with ``r`` the chunk's largest key and ``a_l = e^(k_l - r) <= 1``, the whole in-chunk sum
  (both directions and the token itself) is ``a @ M`` for the per-channel ``L x L`` kernel
  ``M[l, i] = e^(w - w |i - l|)`` (``e^u`` on the diagonal), and the same product with ``a * v`` gives the
  numerator: one batched matrix product each, with two more columns for the chunk totals;
* across chunks: the sums carried in from the left and the right are computed in the log domain in
  float64 (``logcumsumexp`` over the ``T / L`` chunk totals), so no decay product over the sequence can
  overflow or underflow, whatever ``w T`` is; the numerator's totals are made positive for this by a
  per-sequence shift of the values, undone per chunk;
* each chunk combines its three parts relative to the largest of their log scales.

Every reference (chunk maxima, frames, the shift) cancels algebraically and is detached; autograd
differentiates the rest (matrix products, exp, logcumsumexp), which gives exact first-order gradients in
``w``, ``u``, ``k`` and ``v``, in O(T) memory. Float64 stays float64; float32 / float16 / bfloat16 are
computed in float32 (like the official op) and cast back.

Accuracy: exact up to rounding for any keys (no overflow at ``k`` = 1000) and any ``w`` (tested from 0 to
300 per token and ``|w| T`` up to 2000), and for ``|u|`` up to :data:`BONUS_LIMIT` (30 in float32);
beyond it one-token chunks (a pure log-domain scan, slower) keep it exact. The model's ``u =
spatial_first / T`` is tiny. Measured against the O(T^2) :func:`bi_wkv_reference` in
``tests/test_wkv.py``: about 1e-13 in float64 and 1e-6 in float32 for values of unit size.

Optional CUDA kernel: on a CUDA device and when no gradient is needed, :func:`bi_wkv` uses a compiled
forward kernel (``restorer/ops/wkv_cuda/``: exact running-max scans, 64 chunks per sequence), built on
first use with :mod:`torch.utils.cpp_extension` when a CUDA toolkit and a C++ compiler are found and then
checked once against this implementation. Any failure to build or to agree falls back to the PyTorch
path, logged once (``logging`` INFO); ``RESTORER_WKV_CUDA=0`` disables it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bi_wkv",
    "bi_wkv_channels_first",
    "bi_wkv_reference",
    "chunk_length",
    "cuda_kernel_status",
]

log = logging.getLogger(__name__)

#: Largest ``|w| * L`` inside a chunk: every position factor stays within ``e^(+-8)``.
CHUNK_DECAY_SPAN = 8.0
#: Longest chunk. In-chunk work is a ``L x (L + 2)`` matrix product per token row (``O(T L)`` flops, fast
#: GEMMs); cross-chunk work is a float64 ``logcumsumexp`` over ``T / L`` chunk totals.
MAX_CHUNK = 32
#: Largest ``|u|`` for chunked evaluation (float32 / float64). Beyond it the bonus can make one token's own
#: term exceed its neighbours' by more than the chunk-shared frame can represent, so one-token chunks are
#: used: the pure log-domain scan, exact for any ``u`` but several times slower.
BONUS_LIMIT = {torch.float32: 30.0, torch.float64: 300.0}


def chunk_length(
    seq_len: int, max_abs_w: float, max_abs_u: float = 0.0, dtype: torch.dtype = torch.float32
) -> int:
    """Tokens per chunk: ``min(seq_len, MAX_CHUNK)``, shortened so that ``|w| * L <= CHUNK_DECAY_SPAN``;
    1 when ``|u|`` exceeds :data:`BONUS_LIMIT` or a value is not finite."""
    if not (math.isfinite(max_abs_w) and math.isfinite(max_abs_u)):
        return 1
    if max_abs_u > BONUS_LIMIT.get(dtype, BONUS_LIMIT[torch.float32]):
        return 1
    length = min(seq_len, MAX_CHUNK)
    if max_abs_w > 0:
        length = min(length, int(CHUNK_DECAY_SPAN / max_abs_w))
    return max(1, length)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _logcumsumexp(x: Tensor, dim: int) -> Tensor:
    """``torch.logcumsumexp``; during ONNX export (which has no such operator) a log-domain Hillis-Steele
    scan: ``ceil(log2 n)`` steps of a stable ``logaddexp`` with the sequence shifted by 1, 2, 4, ...

    The export form needs finite ``x`` (here: logs of positive chunk totals); the shifted-in pad is -inf,
    which ``log1p(exp(-|x - pad|)) = 0`` absorbs without a select.
    """
    if not torch.onnx.is_in_onnx_export():
        return torch.logcumsumexp(x, dim)
    x = x.movedim(dim, -1)
    n, shift = x.shape[-1], 1
    while shift < n:
        prev = torch.cat([torch.full_like(x[..., :shift], -math.inf), x[..., :-shift]], -1)
        x = torch.maximum(x, prev) + torch.log1p(torch.exp(-(x - prev).abs()))
        shift *= 2
    return x.movedim(-1, dim)


def _bi_wkv_torch(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The O(T) PyTorch path on channels-first ``(B, C, T)`` tensors (see the module docstring).

    Per chunk of ``L`` tokens (``r`` = the chunk's largest key, ``a_l = e^(k_l - r)``):

    * in-chunk part: ``a @ M`` with the per-channel ``L x L`` kernel ``M[l, i] = e^(w - w |i - l|)``
      (``e^u`` on the diagonal), divided by its largest entry; two extra columns ``e^(+-w l)`` give the
      chunk's totals as seen from its neighbours, so one batched matrix product per sum does all in-chunk
      work (values too: ``(a * v) @ M``);
    * carries from the chunks to the left and right, ``log H_c`` / ``log G_c``, by ``logcumsumexp`` over
      the chunk totals in float64; a token ``i`` of chunk ``c`` receives ``e^(w - w i) H_c`` and
      ``e^(w - w (L - 1 - i)) G_c``;
    * the three parts are scaled by their largest log frame ``rho_c`` (per chunk) and added.

    Nothing overflows: ``|w| L <= 8`` bounds every position factor by ``e^8``, the kernel is divided by its
    largest entry and all frames are relative to ``rho_c``. Nothing that matters underflows: the chunk's
    largest key reaches every token of the chunk with a weight within ``e^(16 + |u|)`` of the frame, so a
    term below ``e^-87`` (float32) of the frame is negligible in every token's sum as long as ``|u|`` stays
    below :data:`BONUS_LIMIT` (otherwise :func:`chunk_length` returns 1 and each chunk is one token, for
    which the frame is exact).
    """
    dtype = _compute_dtype(k.dtype)
    w = w.to(dtype)
    u = u.to(dtype)
    k = k.to(dtype)
    v = v.to(dtype)
    b, c, t = k.shape
    max_w, max_u = (
        torch.stack([w.detach().abs().amax(), u.detach().abs().amax()]).tolist() if c else (0.0, 0.0)
    )
    length = chunk_length(t, max_w, max_u, dtype)
    n = -(-t // length)
    pad = n * length - t

    if pad:
        # Padding after the last token: e^(-inf) = 0 keeps it out of every sum.
        k = F.pad(k, (0, pad), value=-math.inf)
        v = F.pad(v, (0, pad), value=0.0)
    k4 = k.view(b, c, n, length)
    v4 = v.view(b, c, n, length)
    ref_key = k4.detach().amax(-1, keepdim=True)  # B, C, n, 1 (finite: every chunk holds a real token)
    # Without autograd, update temporaries in place (fewer allocations; same arithmetic).
    in_place = not (torch.is_grad_enabled() and any(x.requires_grad for x in (w, u, k, v)))
    a = (k4 - ref_key).exp_() if in_place else torch.exp(k4 - ref_key)
    av = a * v4

    # Per-channel in-chunk kernel and the two total columns.
    pos = torch.arange(length, device=k.device, dtype=dtype)
    dist = (pos[:, None] - pos[None, :]).abs()  # L, L
    expo = w.view(c, 1, 1) * (1 - dist)  # e^(w - w d) off the diagonal
    expo = torch.where(dist == 0, u.view(c, 1, 1), expo)  # e^u for the token itself
    kernel_max = expo.detach().amax((-2, -1))  # C
    w_pos = w.view(c, 1) * pos  # C, L
    columns = torch.stack([torch.exp(w_pos), torch.exp(-w_pos)], -1)  # C, L, 2: e^(w l), e^(-w l)
    matrix = torch.cat([torch.exp(expo - kernel_max.view(c, 1, 1)), columns], -1)  # C, L, L + 2
    zd = torch.matmul(a, matrix)  # B, C, n, L + 2
    zn = torch.matmul(av, matrix)
    den = zd[..., :length]
    num = zn[..., :length]

    if n > 1:
        f64 = torch.float64
        # The log-domain carry needs positive numerators: shift the values by a per-sequence constant
        # (N' = N + shift * D, per chunk) and subtract it again from the (per-chunk) carries afterwards.
        with torch.no_grad():
            real = v4.reshape(b, c, -1)[..., :t]
            v_min = real.amin(-1, keepdim=True)
            v_max = real.amax(-1, keepdim=True)
            spread = (v_max - v_min) + v_max.abs() + v_min.abs()
            shift = (0.25 * spread + torch.finfo(dtype).tiny * 2**30 - v_min).to(f64)  # B, C, 1
        w64 = w.to(f64).view(1, c, 1)
        w_chunk = w64 * length
        idx = torch.arange(n, device=k.device, dtype=f64)
        key64 = ref_key[..., 0].to(f64)  # B, C, n
        neg_inf = torch.full_like(key64[..., :1], -math.inf)

        def carries(total_past: Tensor, total_future: Tensor) -> tuple[Tensor, Tensor]:
            # log Q^past_c = r_c - w L + log sum_l a_l e^(w l): chunk c seen from the next chunk's start;
            # log H_c = logsumexp_{c' < c}(log Q_c' + w L c') - w L (c - 1).
            log_q = key64 - w_chunk + torch.log(total_past)
            lse = _logcumsumexp(log_q + w_chunk * idx, -1)
            log_h = torch.cat([neg_inf, lse[..., :-1] - w_chunk * idx[:-1]], -1)
            # log Q^future_c = r_c - w + log sum_l a_l e^(-w l): chunk c seen from the previous chunk's end;
            # log G_c = logsumexp_{c' > c}(log Q_c' - w L c') + w L (c + 1).
            log_q = key64 - w64 + torch.log(total_future)
            lse = _logcumsumexp((log_q - w_chunk * idx).flip(-1), -1).flip(-1)
            log_g = torch.cat([lse[..., 1:] + w_chunk * (idx[:-1] + 1), neg_inf], -1)
            return log_h + w64, log_g + w64  # with the e^w of every non-own weight

        tot_d = zd[..., length:].to(f64)  # B, C, n, 2
        tot_n = zn[..., length:].to(f64) + shift.unsqueeze(-1) * tot_d  # > 0
        past_d, future_d = carries(tot_d[..., 0], tot_d[..., 1])
        past_n, future_n = carries(tot_n[..., 0], tot_n[..., 1])
        frame_in = key64 + kernel_max.to(f64).view(1, c, 1)
        rho = torch.maximum(torch.maximum(frame_in, past_d), future_d).detach()

        def scale(frame: Tensor) -> Tensor:
            return torch.exp(frame - rho)

        s_past_d, s_future_d = scale(past_d), scale(future_d)
        # back to unshifted numerators: N = N' - shift * D (per chunk, where it is cheap)
        s_past_n = scale(past_n) - shift * s_past_d
        s_future_n = scale(future_n) - shift * s_future_d

        def col(x: Tensor) -> Tensor:
            return x.to(dtype).unsqueeze(-1)  # B, C, n, 1

        pos_past = torch.exp(-w_pos).view(1, c, 1, length)  # e^(-w i)
        pos_future = torch.exp(-w.view(c, 1) * (length - 1 - pos)).view(1, c, 1, length)  # e^(-w (L-1-i))
        alpha = col(scale(frame_in))
        if in_place:
            den = (col(s_past_d) * pos_past).addcmul_(col(s_future_d), pos_future).addcmul_(alpha, den)
            num = (col(s_past_n) * pos_past).addcmul_(col(s_future_n), pos_future).addcmul_(alpha, num)
        else:
            den = torch.addcmul(
                torch.addcmul(col(s_past_d) * pos_past, col(s_future_d), pos_future), alpha, den
            )
            num = torch.addcmul(
                torch.addcmul(col(s_past_n) * pos_past, col(s_future_n), pos_future), alpha, num
            )
    y = (num.div_(den) if in_place and n > 1 else num / den).reshape(b, c, n * length)
    return y[..., :t] if pad else y


def _check_args(w: Tensor, u: Tensor, k: Tensor, v: Tensor, channel_dim: int) -> None:
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"k and v must have the same 3-D shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    c = k.shape[channel_dim]
    if w.shape != (c,) or u.shape != (c,):
        raise ValueError(f"w and u must have shape ({c},), got {tuple(w.shape)} and {tuple(u.shape)}")
    if not (k.is_floating_point() and v.is_floating_point()):
        raise TypeError("k and v must be floating point tensors")


def bi_wkv_channels_first(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Bi-WKV on channels-first sequences (the layout the O(T) scans work in; no transposes).

    Args:
        w: ``(C,)`` decay per token (Restore-RWKV: ``spatial_decay[i] / T``).
        u: ``(C,)`` bonus of the current token (``spatial_first[i] / T``).
        k: ``(B, C, T)`` keys.
        v: ``(B, C, T)`` values.

    Returns:
        ``(B, C, T)`` in ``v``'s dtype.
    """
    _check_args(w, u, k, v, channel_dim=1)
    out_dtype = v.dtype
    if k.shape[-1] == 0:
        return v.clone()
    y = _maybe_cuda_kernel(w, u, k, v)
    if y is None:
        y = _bi_wkv_torch(w, u, k, v)
    return y.to(out_dtype)


def bi_wkv(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Bi-WKV with the official interface ``WKV.apply(w, u, k, v)`` (see the module docstring).

    Args:
        w: ``(C,)`` decay per token.
        u: ``(C,)`` bonus of the current token.
        k: ``(B, T, C)`` keys.
        v: ``(B, T, C)`` values.

    Returns:
        ``(B, T, C)`` in ``v``'s dtype; differentiable in all four inputs.
    """
    _check_args(w, u, k, v, channel_dim=2)
    return bi_wkv_channels_first(w, u, k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def bi_wkv_reference(w: Tensor, u: Tensor, k: Tensor, v: Tensor, block_rows: int | None = None) -> Tensor:
    """The formula, literally: an O(T^2) softmax over all tokens (tests and benchmarks only).

    Logits ``l[t, j] = -(|t - j| - 1) * w + k_j`` (``u + k_t`` on the diagonal);
    ``y_t = softmax_j(l[t]) . v``.
    Rows are processed ``block_rows`` at a time (default: all), so memory is ``B * C * block_rows * T``.

    Args:
        w, u: ``(C,)``.
        k, v: ``(B, T, C)``.
        block_rows: rows of the ``T x T`` logits per step.

    Returns:
        ``(B, T, C)`` in ``v``'s dtype (computed in it too); differentiable.
    """
    _check_args(w, u, k, v, channel_dim=2)
    b, t, c = k.shape
    kc = k.permute(0, 2, 1)  # B, C, T
    vc = v.permute(0, 2, 1)
    wc = w.view(1, c, 1, 1)
    uc = u.view(1, c, 1)
    cols = torch.arange(t, device=k.device)
    step = t if block_rows is None else max(1, int(block_rows))
    outs = []
    for r0 in range(0, t, step):
        rows = torch.arange(r0, min(t, r0 + step), device=k.device)
        dist = (rows[:, None] - cols[None, :]).abs().to(k.dtype)  # rows, T
        logits = -(dist - 1) * wc + kc.unsqueeze(2)  # B, C, rows, T
        diag = rows[:, None] == cols[None, :]
        own = (uc + kc[..., rows]).unsqueeze(-1)  # B, C, rows, 1
        logits = torch.where(diag, own, logits)
        weights = torch.softmax(logits, dim=-1)
        outs.append(torch.einsum("bcrt,bct->bcr", weights, vc))
    return torch.cat(outs, -1).permute(0, 2, 1)


# ------------------------------------------------------------------------------------------------
# Optional compiled CUDA forward kernel
# ------------------------------------------------------------------------------------------------


_CUDA_LOCK = threading.Lock()
_CUDA_STATE: dict = {"status": "unused", "module": None}
_CUDA_SOURCES = Path(__file__).with_name("wkv_cuda")


def cuda_kernel_status() -> str:
    """``'unused'`` (not tried yet), ``'ready'``, or why the PyTorch path is used instead."""
    return _CUDA_STATE["status"]


def _load_cuda_extension():
    """Build (or load the cached build of) the forward kernel; raises when it cannot."""
    if os.environ.get("RESTORER_WKV_CUDA", "1") == "0":
        raise RuntimeError("disabled by RESTORER_WKV_CUDA=0")
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        raise RuntimeError("no CUDA toolkit found (set CUDA_HOME)")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler ({compiler}) found")
    return cpp_extension.load(
        name="restorer_bi_wkv",
        sources=[str(_CUDA_SOURCES / "wkv_op.cpp"), str(_CUDA_SOURCES / "wkv_kernel.cu")],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3"],
        verbose=False,
    )


def _self_check(module, device: torch.device) -> float:
    """Largest difference between the kernel (float32) and the PyTorch path (float64) on random inputs."""
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for b, c, t in ((2, 8, 1), (2, 8, 63), (1, 8, 4099)):
        w = torch.randn(c, generator=gen, dtype=torch.float64) * 5 / t
        u = torch.randn(c, generator=gen, dtype=torch.float64) * 5 / t
        k = torch.randn(b, c, t, generator=gen, dtype=torch.float64) * 3
        v = torch.randn(b, c, t, generator=gen, dtype=torch.float64)
        args = [x.to(device) for x in (w, u, k, v)]
        expected = _bi_wkv_torch(*args)
        got = module.forward(*(x.float() for x in args)).double()
        worst = max(worst, float((got - expected).abs().max()))
    return worst


def _cuda_module(device: torch.device):
    """The built and checked extension, or ``None`` (the reason is logged once and kept in the status)."""
    if _CUDA_STATE["status"] == "ready":
        return _CUDA_STATE["module"]
    if _CUDA_STATE["status"] != "unused":
        return None
    with _CUDA_LOCK:
        if _CUDA_STATE["status"] != "unused":
            return _CUDA_STATE["module"]
        try:
            module = _load_cuda_extension()
            err = _self_check(module, device)
            if not err < 1e-4:
                raise RuntimeError(f"self-check failed: differs from the PyTorch path by {err:.3g}")
        except Exception as exc:  # any build / load / check failure: the PyTorch path stays correct
            _CUDA_STATE["status"] = (
                f"unavailable: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            )
            log.info(
                "Bi-WKV CUDA kernel not used (%s); using the PyTorch implementation", _CUDA_STATE["status"]
            )
            return None
        _CUDA_STATE.update(status="ready", module=module)
        log.info("Bi-WKV CUDA kernel ready")
        return module


def _maybe_cuda_kernel(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor | None:
    """The compiled kernel's result, or ``None`` when it does not apply (CPU, gradients, no build)."""
    if k.device.type != "cuda":
        return None
    if torch.is_grad_enabled() and any(x.requires_grad for x in (w, u, k, v)):
        return None
    module = _cuda_module(k.device)
    if module is None:
        return None
    dtype = _compute_dtype(k.dtype)
    return module.forward(*(x.to(dtype).contiguous() for x in (w, u, k, v)))
