// padded_conv2d's `upsample` argument: its check (the CPU entry points and the CUDA binding),
// and where a CPU algorithm cannot fold it into its input read, the input upsampled first
// (nearest, upsample_nearest2d's rule) and the gradient of the upsampled input summed back onto
// the pixels it repeats (upsample_nearest2d_backward: each sum rounded once).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace stylize_fast {

inline void check_upsample(const char* fn, int64_t upsample) {
  TORCH_CHECK(upsample >= 1, fn, ": upsample must be an integer >= 1 (1 = none), got ",
              upsample);
}

// input (N, C, H, W) -> (N, C, H * up, W * up), in input's suggested memory format.
inline at::Tensor upsampled_input(const at::Tensor& input, int64_t up) {
  const auto fmt = input.suggest_memory_format();
  return at::upsample_nearest2d(input, {input.size(2) * up, input.size(3) * up})
      .contiguous(fmt);
}

// grad of the upsampled input (N, C, H * up, W * up) -> grad of input (N, C, H, W), in the
// gradient's suggested memory format.
inline at::Tensor fold_upsampled_grad(const at::Tensor& grad, int64_t up) {
  const auto fmt = grad.suggest_memory_format();
  const int64_t h = grad.size(2) / up, w = grad.size(3) / up;
  return at::upsample_nearest2d_backward(grad, {grad.size(2), grad.size(3)},
                                         {grad.size(0), grad.size(1), h, w})
      .contiguous(fmt);
}

}  // namespace stylize_fast
