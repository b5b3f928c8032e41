// The Gram matrix of bfloat16 features on CPU, for the perceptual loss's style term under
// bfloat16 autocast: gram_bf16(F) = F F^T in float32 (N, C, C) straight from channels-last
// bfloat16 features, and gram_bf16_backward(M, F) = M^T F in F's dtype and layout. Without it
// the loss casts every feature map to float32 and multiplies at the float32 rate; here the
// products are exact (bfloat16 x bfloat16 fits float32) and the sums float32, so the result is
// the float32 Gram of the same features. Kernels: cpu/gram_cpu_kernels.h, once per
// instruction-set level (level 3: AVX512-BF16 dot products). Python: stylize_fast/ops/gram.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/cpu_isa.h"

namespace stylize_fast {
namespace gram_cpu {
namespace {

struct GramJob {
  const uint16_t* f;  // features, (N, HW, C) bfloat16 bits (channels-last memory)
  int64_t N, HW, C, Cp;  // Cp: C rounded up to 64
  float* G;           // forward: (N, Cp, Cp) float32, zeroed
  const float* M;     // backward: (N, Cp, Cp) float32, zero past C
  uint16_t* out;      // backward: (N, HW, C) bfloat16 bits
};

struct KernelTable {
  const char* name;
  void (*gram_image)(const GramJob&, int64_t n);
  void (*gram_backward_rows)(const GramJob&, int64_t p_begin, int64_t p_end);
};

#define SF_ISA_BODY "cpu/gram_cpu_kernels.h"
#define SF_ISA_MAX_LEVEL 3
#include "cpu/cpu_isa_kernels.h"

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

void check_features(const char* fn, const at::Tensor& f) {
  TORCH_CHECK(f.dim() == 4, fn, ": features must have 4 dimensions (N, C, H, W), got shape ",
              f.sizes());
  TORCH_CHECK(f.scalar_type() == at::kBFloat16, fn, ": features must be bfloat16, got ",
              f.scalar_type());
  TORCH_CHECK(f.is_contiguous(at::MemoryFormat::ChannelsLast), fn,
              ": features must be channels-last contiguous (x.contiguous(memory_format="
              "torch.channels_last)), got strides ", f.strides());
}

at::Tensor gram_bf16_cpu(const at::Tensor& features) {
  check_features("gram_bf16", features);
  const int64_t N = features.size(0), C = features.size(1);
  const int64_t HW = features.size(2) * features.size(3), Cp = round_up(std::max<int64_t>(C, 1), 64);
  auto G = at::zeros({N, Cp, Cp}, features.options().dtype(at::kFloat));
  if (N > 0 && C > 0 && HW > 0) {
    GramJob j{static_cast<const uint16_t*>(features.const_data_ptr()), N, HW, C, Cp,
              G.data_ptr<float>(), nullptr, nullptr};
    const KernelTable& k = isa_kernel_table();
    at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n) k.gram_image(j, n);
    });
  }
  return Cp == C ? G : G.narrow(1, 0, C).narrow(2, 0, C).contiguous();
}

at::Tensor gram_bf16_backward_cpu(const at::Tensor& m, const at::Tensor& features) {
  check_features("gram_bf16_backward", features);
  const int64_t N = features.size(0), C = features.size(1);
  TORCH_CHECK(m.dim() == 3 && m.size(0) == N && m.size(1) == C && m.size(2) == C &&
                  m.scalar_type() == at::kFloat,
              "gram_bf16_backward: m must be a float32 (N, C, C) = (", N, ", ", C, ", ", C,
              ") tensor, got ", m.scalar_type(), " ", m.sizes());
  const int64_t HW = features.size(2) * features.size(3), Cp = round_up(std::max<int64_t>(C, 1), 64);
  auto out = at::empty_like(features, at::MemoryFormat::ChannelsLast);
  if (out.numel() == 0) return out;
  at::Tensor mp = m.contiguous();
  if (Cp != C) {
    mp = at::zeros({N, Cp, Cp}, m.options());
    mp.narrow(1, 0, C).narrow(2, 0, C).copy_(m);
  }
  GramJob j{static_cast<const uint16_t*>(features.const_data_ptr()), N, HW, C, Cp, nullptr,
            mp.const_data_ptr<float>(), static_cast<uint16_t*>(out.data_ptr())};
  const KernelTable& k = isa_kernel_table();
  // Tasks of whole 4-pixel tiles: the same results for any thread count.
  const int64_t grain = std::max<int64_t>(4, (1 << 22) / std::max<int64_t>(1, C * Cp) / 4 * 4);
  at::parallel_for(0, (N * HW + 3) / 4, std::max<int64_t>(1, grain / 4), [&](int64_t b, int64_t e) {
    k.gram_backward_rows(j, 4 * b, std::min(N * HW, 4 * e));
  });
  return out;
}

}  // namespace
}  // namespace gram_cpu

TORCH_LIBRARY_IMPL(stylize_fast, CPU, m) {
  m.impl("gram_bf16", &gram_cpu::gram_bf16_cpu);
  m.impl("gram_bf16_backward", &gram_cpu::gram_bf16_backward_cpu);
}

}  // namespace stylize_fast
