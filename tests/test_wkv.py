"""The bidirectional WKV operator against the O(T^2) formula (fast: small channel counts, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

import restorer.ops.wkv as wkv
from restorer.ops import bi_wkv, bi_wkv_channels_first, bi_wkv_reference
from restorer.ops.wkv import chunk_length

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_inputs(b, t, c, decay=3.0, bonus=3.0, key_std=1.0, spike=0.0, seed=0, per_token=False):
    """float64 ``(w, u, k, v)``; ``w = decay * N(0,1) / T`` as in the model (or per token when asked)."""
    gen = torch.Generator().manual_seed(seed)
    scale = 1.0 if per_token else 1.0 / t
    w = torch.randn(c, generator=gen, dtype=torch.float64) * decay * scale
    u = torch.randn(c, generator=gen, dtype=torch.float64) * bonus * scale
    k = torch.randn(b, t, c, generator=gen, dtype=torch.float64) * key_std
    if spike:
        k[0, t // 3, 0] += spike
        k[-1, (2 * t) // 3, -1] -= spike
    v = torch.randn(b, t, c, generator=gen, dtype=torch.float64)
    return w, u, k, v


def naive_loop(w, u, k, v):
    """The formula as plain Python sums over one (b, c) pair at a time: an independent oracle for the
    vectorised reference itself."""
    b, t, c = k.shape
    out = torch.empty_like(v)
    for bi in range(b):
        for ci in range(c):
            for i in range(t):
                logits = [
                    (float(u[ci]) if j == i else -(abs(i - j) - 1) * float(w[ci])) + float(k[bi, j, ci])
                    for j in range(t)
                ]
                m = max(logits)
                weights = [math.exp(x - m) for x in logits]
                out[bi, i, ci] = sum(wj * float(v[bi, j, ci]) for j, wj in enumerate(weights)) / sum(weights)
    return out


def test_reference_is_the_formula():
    w, u, k, v = make_inputs(2, 9, 3, decay=2.0, bonus=2.0)
    torch.testing.assert_close(bi_wkv_reference(w, u, k, v), naive_loop(w, u, k, v), rtol=0, atol=1e-12)
    # row blocks give the same result
    torch.testing.assert_close(
        bi_wkv_reference(w, u, k, v, block_rows=4), bi_wkv_reference(w, u, k, v), rtol=0, atol=1e-14
    )


@pytest.mark.parametrize("t", [1, 2, 3, 31, 32, 33, 64, 100, 257])
def test_values_float64(t):
    w, u, k, v = make_inputs(2, t, 3, seed=t)
    torch.testing.assert_close(bi_wkv(w, u, k, v), bi_wkv_reference(w, u, k, v), rtol=0, atol=1e-12)


@pytest.mark.parametrize("t", [5, 64, 333])
def test_values_float32(t):
    w, u, k, v = make_inputs(2, t, 4, seed=t, key_std=2.0)
    y = bi_wkv(w.float(), u.float(), k.float(), v.float())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), bi_wkv_reference(w, u, k, v), rtol=0, atol=2e-6)


def test_single_token_is_its_value():
    w, u, k, v = make_inputs(3, 1, 5)
    torch.testing.assert_close(bi_wkv(w, u, k, v), v, rtol=0, atol=0)


def test_constant_values_are_kept():
    """Every output is a convex combination of the values: a constant sequence maps to itself."""
    w, u, k, _ = make_inputs(2, 200, 3, key_std=5.0)
    v = torch.full_like(k, -2.5)
    torch.testing.assert_close(bi_wkv(w, u, k, v), v, rtol=0, atol=1e-13)
    torch.testing.assert_close(bi_wkv(w, u, k, torch.zeros_like(k)), torch.zeros_like(k), rtol=0, atol=1e-300)


def test_channels_first_interface_and_checks():
    w, u, k, v = make_inputs(2, 50, 3)
    y = bi_wkv_channels_first(w, u, k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous())
    torch.testing.assert_close(y.transpose(1, 2), bi_wkv(w, u, k, v), rtol=0, atol=0)
    with pytest.raises(ValueError, match="same 3-D shape"):
        bi_wkv(w, u, k, v[:, :-1])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        bi_wkv(w[:2], u, k, v)


def test_chunk_length():
    assert chunk_length(10, 0.0) == 10
    assert chunk_length(10_000, 0.0) == wkv.MAX_CHUNK
    assert chunk_length(10_000, 1.0) == 8  # |w| L <= 8
    assert chunk_length(10_000, 100.0) == 1
    assert chunk_length(10_000, 0.0, 50.0, torch.float32) == 1  # large bonus: exact one-token chunks
    assert chunk_length(10_000, 0.0, 50.0, torch.float64) == wkv.MAX_CHUNK
    assert chunk_length(10_000, math.inf) == 1


# ------------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "max_chunk", "decay"),
    [
        (6, 32, 1.0),  # one chunk
        (23, 4, 1.0),  # several chunks, padded last chunk
        (24, 4, 1.0),  # several chunks, no padding
        (11, 32, 30.0),  # |w| = 30 / 11 per token: chunks of 2
        (7, 32, 60.0),  # |w| > 8 per token: one-token chunks (log-domain path)
    ],
)
def test_gradcheck_float64(monkeypatch, t, max_chunk, decay):
    monkeypatch.setattr(wkv, "MAX_CHUNK", max_chunk)
    w, u, k, v = make_inputs(1, t, 2, decay=decay, key_std=2.0, seed=t)
    args = tuple(x.clone().requires_grad_() for x in (w, u, k, v))
    assert torch.autograd.gradcheck(bi_wkv, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_match_reference(dtype):
    w, u, k, v = make_inputs(2, 150, 3, key_std=2.0, seed=3)
    grad_out = torch.randn(k.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ref_in = tuple(x.clone().requires_grad_() for x in (w, u, k, v))
    (bi_wkv_reference(*ref_in) * grad_out).sum().backward()
    ours_in = tuple(x.to(dtype).requires_grad_() for x in (w, u, k, v))
    (bi_wkv(*ours_in) * grad_out.to(dtype)).sum().backward()
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    for name, a, b in zip("wukv", ours_in, ref_in):
        scale = max(1.0, float(b.grad.abs().max()))
        err = float((a.grad.double() - b.grad).abs().max()) / scale
        assert err < tol, f"d/d{name}: relative error {err:.2e}"


# ------------------------------------------------------------------------------------------------
# long sequences and extreme values
# ------------------------------------------------------------------------------------------------


def test_long_sequence():
    """T = 4099 (a 64x64 level plus a ragged tail): many chunks, checked against the formula."""
    w, u, k, v = make_inputs(1, 4099, 1, decay=5.0, key_std=3.0, spike=25.0, seed=1)
    ref = bi_wkv_reference(w, u, k, v, block_rows=1024)
    torch.testing.assert_close(bi_wkv(w, u, k, v), ref, rtol=0, atol=1e-11)
    y32 = bi_wkv(w.float(), u.float(), k.float(), v.float())
    torch.testing.assert_close(y32.double(), ref, rtol=0, atol=5e-6)


@pytest.mark.parametrize(
    ("decay", "per_token"),
    [
        (1e-9, False),  # no decay at all
        (60.0, False),  # |spatial_decay| = 60: strong decay/growth over the sequence
        (2000.0, False),  # |w| T = 2000: e^(w T) is far outside float range
        (0.7, True),  # 0.7 per token: short chunks
        (12.0, True),  # 12 per token: one-token chunks
        (300.0, True),  # e^300 per token
    ],
)
def test_extreme_decay(decay, per_token):
    w, u, k, v = make_inputs(2, 300, 3, decay=decay, per_token=per_token, key_std=2.0, seed=5)
    ref = bi_wkv_reference(w, u, k, v)
    assert torch.isfinite(ref).all()
    y64 = bi_wkv(w, u, k, v)
    y32 = bi_wkv(w.float(), u.float(), k.float(), v.float())
    assert torch.isfinite(y32).all() and torch.isfinite(y64).all()
    torch.testing.assert_close(y64, ref, rtol=0, atol=1e-9)
    torch.testing.assert_close(y32.double(), ref, rtol=0, atol=5e-6)


@pytest.mark.parametrize("spike", [100.0, 1000.0])
def test_large_keys(spike):
    """Keys far beyond exp's range (float32 overflows at 88): one dominant key each way, wide spread."""
    w, u, k, v = make_inputs(2, 300, 3, decay=4.0, key_std=30.0, spike=spike, seed=7)
    ref = bi_wkv_reference(w, u, k, v)
    y32 = bi_wkv(w.float(), u.float(), k.float(), v.float())
    assert torch.isfinite(y32).all()
    torch.testing.assert_close(y32.double(), ref, rtol=0, atol=2e-5)
    torch.testing.assert_close(bi_wkv(w, u, k, v), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("bonus", [20.0, -20.0, 200.0, -200.0])
def test_large_bonus(bonus):
    w, u, k, v = make_inputs(2, 120, 3, key_std=20.0, seed=2)
    u = torch.full_like(u, bonus)
    ref = bi_wkv_reference(w, u, k, v)
    y32 = bi_wkv(w.float(), u.float(), k.float(), v.float())
    assert torch.isfinite(y32).all()
    torch.testing.assert_close(y32.double(), ref, rtol=0, atol=5e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    w, u, k, v = make_inputs(1, 200, 4, key_std=2.0)
    y = bi_wkv(*(x.to(dtype) for x in (w, u, k, v)))
    assert y.dtype == dtype
    expected = bi_wkv(*(x.to(dtype).float() for x in (w, u, k, v)))
    torch.testing.assert_close(y.float(), expected.to(dtype).float(), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# optional CUDA kernel
# ------------------------------------------------------------------------------------------------


def test_cpu_never_touches_the_cuda_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(wkv, "_load_cuda_extension", lambda: calls.append(1))
    w, u, k, v = make_inputs(1, 10, 2)
    bi_wkv(w, u, k, v)
    assert calls == []


class _FakeExtension:
    """Stands in for the compiled module: ``forward`` is the PyTorch path (optionally corrupted)."""

    def __init__(self, error: float = 0.0):
        self.error = error

    def forward(self, w, u, k, v):
        return wkv._bi_wkv_torch(w, u, k, v) + self.error


@pytest.mark.parametrize(
    ("loader", "expected"),
    [
        ("raises", "unavailable: RuntimeError: no CUDA toolkit"),
        ("wrong", "unavailable: RuntimeError: self-check failed"),
        ("right", "ready"),
    ],
)
def test_cuda_loader_falls_back_and_logs_once(monkeypatch, caplog, loader, expected):
    monkeypatch.setitem(wkv._CUDA_STATE, "status", "unused")
    monkeypatch.setitem(wkv._CUDA_STATE, "module", None)
    calls = []

    def load():
        calls.append(1)
        if loader == "raises":
            raise RuntimeError("no CUDA toolkit found (set CUDA_HOME)")
        return _FakeExtension(error=0.5 if loader == "wrong" else 0.0)

    monkeypatch.setattr(wkv, "_load_cuda_extension", load)
    with caplog.at_level("INFO", logger="restorer.ops.wkv"):
        first = wkv._cuda_module(torch.device("cpu"))
        second = wkv._cuda_module(torch.device("cpu"))
    assert calls == [1]  # tried once, whatever the outcome
    assert wkv.cuda_kernel_status().startswith(expected)
    assert (first is not None) == (loader == "right") and second is first
    assert len([r for r in caplog.records if "Bi-WKV CUDA kernel" in r.getMessage()]) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_reference():
    w, u, k, v = make_inputs(2, 4099, 8, decay=5.0, key_std=3.0, spike=25.0)
    ref = bi_wkv_reference(w, u, k, v, block_rows=512)
    dev = [x.float().cuda() for x in (w, u, k, v)]
    with torch.no_grad():
        y = bi_wkv(*dev)  # the compiled kernel when it builds, else the PyTorch path: both must agree
    torch.testing.assert_close(y.double().cpu(), ref, rtol=0, atol=2e-5)
    args = [x.clone().requires_grad_() for x in dev]
    bi_wkv(*args).sum().backward()  # gradients always take the PyTorch path
    assert all(torch.isfinite(a.grad).all() for a in args)
