// Bi-WKV forward (inference) for restorer.ops.wkv: argument checks and the Python binding.
// The kernel is in wkv_kernel.cu; see restorer/ops/wkv.py for the formula.
#include <torch/extension.h>

void bi_wkv_forward_launch(const torch::Tensor& w, const torch::Tensor& u, const torch::Tensor& k,
                           const torch::Tensor& v, torch::Tensor& y, torch::Tensor& state);

// w, u: (C,); k, v: (B, C, T) channels-first, contiguous, float32 or float64, on one CUDA device.
// Returns y: (B, C, T).
torch::Tensor bi_wkv_forward(torch::Tensor w, torch::Tensor u, torch::Tensor k, torch::Tensor v) {
  TORCH_CHECK(k.is_cuda() && v.is_cuda() && w.is_cuda() && u.is_cuda(), "bi_wkv: tensors must be on CUDA");
  TORCH_CHECK(k.dim() == 3 && k.sizes() == v.sizes(), "bi_wkv: k and v must be (B, C, T)");
  TORCH_CHECK(w.dim() == 1 && u.dim() == 1 && w.size(0) == k.size(1) && u.size(0) == k.size(1),
              "bi_wkv: w and u must be (C,)");
  TORCH_CHECK(k.scalar_type() == v.scalar_type() && k.scalar_type() == w.scalar_type() &&
                  k.scalar_type() == u.scalar_type(),
              "bi_wkv: all inputs must have one dtype");
  TORCH_CHECK(k.scalar_type() == torch::kFloat32 || k.scalar_type() == torch::kFloat64,
              "bi_wkv: float32 or float64 only");
  w = w.contiguous();
  u = u.contiguous();
  k = k.contiguous();
  v = v.contiguous();
  auto y = torch::empty_like(v);
  // Per token, the running (max, denominator, numerator) of its past: 3 values.
  auto state = torch::empty({3, k.size(0), k.size(1), k.size(2)}, v.options());
  if (k.numel() > 0) {
    bi_wkv_forward_launch(w, u, k, v, y, state);
  }
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &bi_wkv_forward, "Bi-WKV forward, (B, C, T) channels-first (CUDA)");
}
