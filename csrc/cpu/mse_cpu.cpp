// Mean squared error of two bfloat16 tensors in float32 on CPU, for the content loss under
// bfloat16 autocast: mse_bf16(a, b) = mean((a - b)^2) as a float32 scalar, and
// mse_bf16_backward(grad, a, b) = grad * 2 (a - b) / numel in a's dtype and layout. Without it
// the loss casts both feature maps to float32 and runs four float32 passes. Differences of
// bfloat16 values are exact in float32; sums run in float32 lanes over fixed chunks, combined in
// double in chunk order (the same result for any thread count). Kernels: cpu/mse_cpu_kernels.h
// per instruction-set level. Python: stylize_fast/ops/mse.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "cpu/cpu_isa.h"

namespace stylize_fast {
namespace mse_cpu {
namespace {

struct KernelTable {
  const char* name;
  double (*sum_sq_diff)(const c10::BFloat16*, const c10::BFloat16*, int64_t, int64_t);
  void (*scaled_diff)(const c10::BFloat16*, const c10::BFloat16*, float, int64_t, int64_t,
                      c10::BFloat16*);
};

#define SF_ISA_BODY "cpu/mse_cpu_kernels.h"
#define SF_ISA_MAX_LEVEL 3
#include "cpu/cpu_isa_kernels.h"

constexpr int64_t kChunk = 1 << 16;  // elements per partial sum (fixed: deterministic)

// a and b: bfloat16, same sizes, both dense in the same memory order (read as flat arrays).
void check_pair(const char* fn, const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.scalar_type() == at::kBFloat16 && b.scalar_type() == at::kBFloat16, fn,
              ": a and b must be bfloat16, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(a.sizes() == b.sizes(), fn, ": a and b must have the same shape, got ", a.sizes(),
              " and ", b.sizes());
  TORCH_CHECK(a.is_non_overlapping_and_dense() && a.strides() == b.strides(), fn,
              ": a and b must be dense with the same strides (e.g. both contiguous or both "
              "channels-last), got ", a.strides(), " and ", b.strides());
}

at::Tensor mse_bf16_cpu(const at::Tensor& a, const at::Tensor& b) {
  check_pair("mse_bf16", a, b);
  const int64_t n = a.numel();
  TORCH_CHECK(n > 0, "mse_bf16: a and b must not be empty (the mean of nothing is undefined)");
  const auto* pa = a.const_data_ptr<c10::BFloat16>();
  const auto* pb = b.const_data_ptr<c10::BFloat16>();
  const KernelTable& k = isa_kernel_table();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      partial[c] = k.sum_sq_diff(pa, pb, c * kChunk, std::min(n, (c + 1) * kChunk));
  });
  double total = 0.0;
  for (const double p : partial) total += p;
  return at::scalar_tensor(total / double(n), a.options().dtype(at::kFloat));
}

at::Tensor mse_bf16_backward_cpu(const at::Tensor& grad, const at::Tensor& a,
                                 const at::Tensor& b) {
  check_pair("mse_bf16_backward", a, b);
  TORCH_CHECK(grad.numel() == 1, "mse_bf16_backward: grad must be a scalar, got shape ",
              grad.sizes());
  const int64_t n = a.numel();
  auto out = at::empty_like(a);  // a's strides (dense: preserve_format keeps them)
  TORCH_CHECK(out.strides() == a.strides(), "mse_bf16_backward: could not allocate the "
              "gradient in a's layout");
  if (n == 0) return out;
  const float scale = static_cast<float>(grad.item<double>() * 2.0 / double(n));
  const auto* pa = a.const_data_ptr<c10::BFloat16>();
  const auto* pb = b.const_data_ptr<c10::BFloat16>();
  auto* po = out.mutable_data_ptr<c10::BFloat16>();
  const KernelTable& k = isa_kernel_table();
  at::parallel_for(0, n, kChunk, [&](int64_t i0, int64_t i1) {
    k.scaled_diff(pa, pb, scale, i0, i1, po);
  });
  return out;
}

}  // namespace
}  // namespace mse_cpu

TORCH_LIBRARY_IMPL(stylize_fast, CPU, m) {
  m.impl("mse_bf16", &mse_cpu::mse_bf16_cpu);
  m.impl("mse_bf16_backward", &mse_cpu::mse_bf16_backward_cpu);
}

}  // namespace stylize_fast
