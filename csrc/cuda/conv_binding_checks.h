// Argument checks shared by the CUDA convolution bindings (padded_conv_cuda.cpp,
// norm_conv_cuda.cpp): dtype, device, the geometry every padded convolution validates (its
// ConvShape, h and w upsampled), strides into the kernels' arrays, launch errors. Each message
// names the op (`op`) and the argument.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <limits>

#include "padded_conv_kernels.h"
#include "padded_conv_upsample.h"

namespace stylize_fast {
namespace cuda {
namespace conv {

inline DType dtype_of(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kDouble: return DType::kFloat64;
    default:
      TORCH_CHECK(false, op, ": input must be float16, bfloat16, float32 or float64, got ",
                  t.scalar_type());
  }
}

inline void check_tensor(const at::Tensor& t, const at::Tensor& input, const char* op,
                  const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(),
              " but input is on ", input.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": ", name, " must have the input's "
              "dtype ", input.scalar_type(), ", got ", t.scalar_type());
}

// Validates input / weight / stride / padding / mode / upsample and returns the shape (strides
// not set; h, w the upsampled sizes with a folded upsampling).
inline ConvShape check_conv(const at::Tensor& input, const at::Tensor& weight,
                           at::IntArrayRef stride, at::IntArrayRef padding, int64_t padding_mode,
                           int64_t upsample, const char* op) {
  stylize_fast::check_upsample(op, upsample);
  TORCH_CHECK(input.is_cuda(), op, ": input must be a CUDA tensor, got device ", input.device());
  TORCH_CHECK(input.dim() == 4, op, ": input must have 4 dimensions (N, C, H, W), got shape ",
              input.sizes());
  dtype_of(input, op);
  check_tensor(weight, input, op, "weight");
  TORCH_CHECK(weight.dim() == 4, op, ": weight must have 4 dimensions (C_out, C_in, KH, KW), "
              "got shape ", weight.sizes());
  TORCH_CHECK(weight.size(1) == input.size(1), op, ": weight.shape[1] (", weight.size(1),
              ") must equal the input's channels (", input.size(1), "); only groups=1 is "
              "supported");
  TORCH_CHECK(stride.size() == 2 && stride[0] >= 1 && stride[1] >= 1, op,
              ": stride must be 2 integers >= 1, got ", stride);
  TORCH_CHECK(padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0, op,
              ": padding must be 2 integers >= 0, got ", padding);
  TORCH_CHECK(padding_mode >= 0 && padding_mode <= 2, op,
              ": padding_mode must be 0 (zeros), 1 (reflect) or 2 (replicate), got ",
              padding_mode);
  const int64_t H = input.size(2) * upsample, W = input.size(3) * upsample;
  TORCH_CHECK(padding_mode != 1 || (padding[0] < H && padding[1] < W), op, ": reflect padding ",
              padding, " must be smaller than the input's spatial size (", H, ", ", W, ")");
  TORCH_CHECK(padding_mode != 2 || input.numel() > 0 || (padding[0] == 0 && padding[1] == 0), op,
              ": replicate padding needs a non-empty input");
  const int64_t KH = weight.size(2), KW = weight.size(3);
  TORCH_CHECK(H + 2 * padding[0] >= KH && W + 2 * padding[1] >= KW, op, ": padded input (",
              H + 2 * padding[0], ", ", W + 2 * padding[1], ") is smaller than the kernel (", KH,
              ", ", KW, ")");
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  ConvShape s{};
  s.n = input.size(0);
  s.c_in = input.size(1);
  s.h = H;
  s.w = W;
  s.c_out = weight.size(0);
  s.oh = (H + 2 * padding[0] - KH) / stride[0] + 1;
  s.ow = (W + 2 * padding[1] - KW) / stride[1] + 1;
  // Pixel and reduction indices are int32 inside the kernels; pointer offsets are int64.
  // (+ n: norm_conv2d's per-(tile, image) statistics slots; n * c_out: its statistics.)
  TORCH_CHECK(s.n * H * W <= kIntMax && s.n * s.oh * s.ow + s.n <= kIntMax &&
                  s.n * s.c_out <= kIntMax &&
                  s.c_in * KH * KW <= kIntMax && s.c_out * KH * KW <= kIntMax &&
                  padding[0] <= kIntMax / 4 && padding[1] <= kIntMax / 4 &&
                  upsample <= kIntMax &&
                  stride[0] <= kIntMax && stride[1] <= kIntMax,
              op, ": sizes too large for the CUDA kernels (N*H*W and N*OH*OW must be < 2^31)");
  s.kh = static_cast<int>(KH);
  s.kw = static_cast<int>(KW);
  s.stride_h = static_cast<int>(stride[0]);
  s.stride_w = static_cast<int>(stride[1]);
  s.pad_h = static_cast<int>(padding[0]);
  s.pad_w = static_cast<int>(padding[1]);
  s.mode = static_cast<int>(padding_mode);
  s.up = static_cast<int>(upsample);
  return s;
}

inline void set_strides(int64_t (&dst)[4], const at::Tensor& t) {
  for (int d = 0; d < 4; ++d) dst[d] = t.stride(d);
}

inline void check_launch(cudaError_t err, const char* op, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, op, ": launching the ", kernel, " kernel failed: ",
              cudaGetErrorString(err));
}

}  // namespace conv
}  // namespace cuda
}  // namespace stylize_fast
