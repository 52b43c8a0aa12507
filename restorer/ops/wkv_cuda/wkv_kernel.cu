// Bi-WKV forward kernel for restorer.ops.wkv (inference only; gradients use the PyTorch path).
//
// y_t = [e^w (Past_t + Fut_t) + e^(u + k_t) v_t] / [same with v = 1], where
// Past_t = sum_{j<t} e^(-w (t - j) + k_j) [1, v_j] and Fut_t the same to the right.
//
// One block per (batch, channel) sequence, one thread per chunk of L = ceil(T / blockDim) tokens.
// Every sum is kept as a running-max triple (m, d, n): the true sum is e^m * [d, n] with d >= 1 whenever
// the sum is not empty, so nothing overflows or underflows whatever w, u and k are (no subtraction of
// terms either, unlike the official kernels). Phase 1: each thread summarises its chunk (both
// directions); phase 2: each thread merges the summaries of the chunks before / after it (carries);
// phase 3: a forward scan stores every token's past, a backward scan combines it with the future.
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>

namespace {

constexpr int kMaxChunks = 64;

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }

template <typename F>
struct Sum {
  F m, d, n;  // value = e^m * [d, n]; empty: m = -inf, d = n = 0
  __device__ __forceinline__ void clear() {
    m = -INFINITY;
    d = 0;
    n = 0;
  }
  // this += e^x * [1, val]
  __device__ __forceinline__ void add(F x, F val) {
    if (x <= m) {
      const F e = exp_(x - m);
      d += e;
      n += e * val;
    } else {
      const F e = exp_(m - x);  // 0 when empty
      d = d * e + 1;
      n = n * e + val;
      m = x;
    }
  }
  // this += other
  __device__ __forceinline__ void merge(F om, F od, F on) {
    if (od == 0) return;
    if (om <= m) {
      const F e = exp_(om - m);
      d += od * e;
      n += on * e;
    } else {
      const F e = exp_(m - om);
      d = d * e + od;
      n = n * e + on;
      m = om;
    }
  }
  // this *= e^(-w * steps)
  __device__ __forceinline__ void decay(F w, int steps) {
    if (d != 0) m -= w * static_cast<F>(steps);
  }
};

template <typename F>
__global__ void bi_wkv_forward_kernel(const int C, const int T, const int L, const F* __restrict__ w_,
                                      const F* __restrict__ u_, const F* __restrict__ k_,
                                      const F* __restrict__ v_, F* __restrict__ y_,
                                      F* __restrict__ state_) {
  const int seq = blockIdx.x;  // b * C + c
  const int c = seq % C;
  const int j = threadIdx.x;
  const int chunks = blockDim.x;
  const size_t offset = static_cast<size_t>(seq) * T;
  const size_t plane = static_cast<size_t>(gridDim.x) * T;
  const F* k = k_ + offset;
  const F* v = v_ + offset;
  F* y = y_ + offset;
  F* past_m = state_ + offset;
  F* past_d = past_m + plane;
  F* past_n = past_d + plane;
  const F w = w_[c];
  const F u = u_[c];
  const int start = min(T, j * L);
  const int end = min(T, start + L);

  __shared__ F pm[kMaxChunks], pd[kMaxChunks], pn[kMaxChunks];
  __shared__ F fm[kMaxChunks], fd[kMaxChunks], fn[kMaxChunks];
  __shared__ int len[kMaxChunks];

  // Phase 1: this chunk's total seen from the next chunk's start (past) / previous chunk's end (future).
  Sum<F> s;
  s.clear();
  for (int t = start; t < end; ++t) {
    s.add(k[t], v[t]);
    s.decay(w, 1);
  }
  pm[j] = s.m;
  pd[j] = s.d;
  pn[j] = s.n;
  s.clear();
  for (int t = end - 1; t >= start; --t) {
    s.add(k[t], v[t]);
    s.decay(w, 1);
  }
  fm[j] = s.m;
  fd[j] = s.d;
  fn[j] = s.n;
  len[j] = end - start;
  __syncthreads();

  // Phase 2: carries. H_{i+1} = e^(-w len_i) H_i + P_i;  G_{i-1} = e^(-w len_i) G_i + F_i.
  Sum<F> past;
  past.clear();
  for (int i = 0; i < j; ++i) {
    past.decay(w, len[i]);
    past.merge(pm[i], pd[i], pn[i]);
  }
  Sum<F> future;
  future.clear();
  for (int i = chunks - 1; i > j; --i) {
    future.decay(w, len[i]);
    future.merge(fm[i], fd[i], fn[i]);
  }

  // Phase 3: store each token's past, then combine with its future, right to left.
  for (int t = start; t < end; ++t) {
    past_m[t] = past.m;
    past_d[t] = past.d;
    past_n[t] = past.n;
    past.add(k[t], v[t]);
    past.decay(w, 1);
  }
  for (int t = end - 1; t >= start; --t) {
    const F pmt = past_m[t] + w;  // e^w on every non-own weight
    const F fmt = future.m + w;
    const F own = u + k[t];
    const F ref = fmax(fmax(pmt, fmt), own);  // finite: own is
    const F ep = past_d[t] != 0 ? exp_(pmt - ref) : F(0);
    const F ef = future.d != 0 ? exp_(fmt - ref) : F(0);
    const F eo = exp_(own - ref);
    const F den = past_d[t] * ep + future.d * ef + eo;
    const F num = past_n[t] * ep + future.n * ef + eo * v[t];
    y[t] = num / den;
    future.add(k[t], v[t]);
    future.decay(w, 1);
  }
}

}  // namespace

void bi_wkv_forward_launch(const torch::Tensor& w, const torch::Tensor& u, const torch::Tensor& k,
                           const torch::Tensor& v, torch::Tensor& y, torch::Tensor& state) {
  const at::cuda::OptionalCUDAGuard guard(k.device());
  const int B = static_cast<int>(k.size(0));
  const int C = static_cast<int>(k.size(1));
  const int T = static_cast<int>(k.size(2));
  const int chunks = T < kMaxChunks ? T : kMaxChunks;
  const int L = (T + chunks - 1) / chunks;
  const dim3 grid(B * C);
  const dim3 block(chunks);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "bi_wkv_forward", [&] {
    bi_wkv_forward_kernel<scalar_t><<<grid, block, 0, stream>>>(
        C, T, L, w.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
        v.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), state.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
