// CUDA binding of stylize_fast::padded_conv2d_fwd / padded_conv2d_bwd (schemas in csrc/ops.cpp):
// argument checks, allocation, launch on the current stream, error check after every launch.
// The device code (implicit GEMM with the padding index map) is in padded_conv_kernels.cu (no
// torch headers); its algorithm is described in padded_conv_kernels.h. Inputs of any strides
// are read in place (the kernels take element strides); outputs follow
// input.suggest_memory_format(), as F.conv2d's do.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <limits>
#include <optional>
#include <tuple>

#include "padded_conv_kernels.h"
#include "padded_conv_upsample.h"

namespace {

namespace conv = stylize_fast::cuda::conv;
using stylize_fast::check_upsample;

conv::DType dtype_of(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return conv::DType::kFloat32;
    case at::kHalf: return conv::DType::kFloat16;
    case at::kBFloat16: return conv::DType::kBFloat16;
    case at::kDouble: return conv::DType::kFloat64;
    default:
      TORCH_CHECK(false, op, ": input must be float16, bfloat16, float32 or float64, got ",
                  t.scalar_type());
  }
}

void check_tensor(const at::Tensor& t, const at::Tensor& input, const char* op,
                  const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(),
              " but input is on ", input.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": ", name, " must have the input's "
              "dtype ", input.scalar_type(), ", got ", t.scalar_type());
}

// Validates input / weight / stride / padding / mode / upsample and returns the shape (strides
// not set; h, w the upsampled sizes with a folded upsampling).
conv::ConvShape check_conv(const at::Tensor& input, const at::Tensor& weight,
                           at::IntArrayRef stride, at::IntArrayRef padding, int64_t padding_mode,
                           int64_t upsample, const char* op) {
  check_upsample(op, upsample);
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
  conv::ConvShape s{};
  s.n = input.size(0);
  s.c_in = input.size(1);
  s.h = H;
  s.w = W;
  s.c_out = weight.size(0);
  s.oh = (H + 2 * padding[0] - KH) / stride[0] + 1;
  s.ow = (W + 2 * padding[1] - KW) / stride[1] + 1;
  // Pixel and reduction indices are int32 inside the kernels; pointer offsets are int64.
  TORCH_CHECK(s.n * H * W <= kIntMax && s.n * s.oh * s.ow <= kIntMax &&
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

void set_strides(int64_t (&dst)[4], const at::Tensor& t) {
  for (int d = 0; d < 4; ++d) dst[d] = t.stride(d);
}

void check_activation(int64_t activation, const char* op) {
  TORCH_CHECK(activation == 0 || activation == 1, op,
              ": activation must be 0 (none) or 1 (relu), got ", activation,
              activation == 2 ? " (leaky_relu is not implemented for the padded convolution)" : "");
}

void check_launch(cudaError_t err, const char* op, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, op, ": launching the ", kernel, " kernel failed: ",
              cudaGetErrorString(err));
}

at::Tensor padded_conv2d_fwd_cuda(const at::Tensor& input, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                  at::IntArrayRef padding, int64_t padding_mode,
                                  int64_t activation, int64_t upsample) {
  constexpr const char* op = "padded_conv2d_fwd";
  conv::ConvShape s = check_conv(input, weight, stride, padding, padding_mode, upsample, op);
  check_activation(activation, op);
  s.activation = static_cast<int>(activation);
  const bool has_bias = bias.has_value() && bias->defined();
  at::Tensor b;
  if (has_bias) {
    check_tensor(*bias, input, op, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.c_out, op, ": bias must have shape (",
                s.c_out, ",), got ", bias->sizes());
    b = bias->contiguous();
  }
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor out = at::empty({s.n, s.c_out, s.oh, s.ow}, input.options(),
                             input.suggest_memory_format());
  if (out.numel() == 0) return out;
  set_strides(s.x_stride, input);
  set_strides(s.w_stride, weight);
  set_strides(s.y_stride, out);
  check_launch(conv::padded_conv2d_forward(dtype_of(input, op), s, input.const_data_ptr(),
                                           weight.const_data_ptr(),
                                           has_bias ? b.const_data_ptr() : nullptr,
                                           out.mutable_data_ptr(),
                                           at::cuda::getCurrentCUDAStream()),
               op, "forward");
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> padded_conv2d_bwd_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, int64_t padding_mode,
    std::array<bool, 3> output_mask, const std::optional<at::Tensor>& output,
    int64_t activation, int64_t upsample) {
  constexpr const char* op = "padded_conv2d_bwd";
  conv::ConvShape s = check_conv(input, weight, stride, padding, padding_mode, upsample, op);
  check_tensor(grad_output, input, op, "grad_output");
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == s.n &&
                  grad_output.size(1) == s.c_out && grad_output.size(2) == s.oh &&
                  grad_output.size(3) == s.ow,
              op, ": grad_output must have shape (", s.n, ", ", s.c_out, ", ", s.oh, ", ", s.ow,
              "), got ", grad_output.sizes());
  check_activation(activation, op);
  if (activation != 0) {
    // relu's mask, output > 0, is read by the gradient kernels as they load grad_output.
    TORCH_CHECK(output.has_value() && output->defined(), op,
                ": with an activation, output (the forward's result) must be given");
    check_tensor(*output, input, op, "output");
    TORCH_CHECK(output->sizes() == grad_output.sizes(), op, ": output must have grad_output's "
                "shape ", grad_output.sizes(), ", got ", output->sizes());
    s.activation = static_cast<int>(activation);
    s.out = output->const_data_ptr();
    set_strides(s.o_stride, *output);
  }
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const conv::DType dtype = dtype_of(input, op);
  set_strides(s.x_stride, input);
  set_strides(s.w_stride, weight);
  set_strides(s.y_stride, grad_output);
  // Distinct (0,) tensors for gradients not asked for (outputs may not alias each other).
  at::Tensor grad_input = input.new_empty({0});
  at::Tensor grad_weight = input.new_empty({0});
  at::Tensor grad_bias = input.new_empty({0});

  if (output_mask[0]) {
    grad_input = at::empty(input.sizes(), input.options(), input.suggest_memory_format());
    if (grad_input.numel() > 0) {
      if (grad_output.numel() == 0) {
        grad_input.zero_();
      } else {
        conv::ConvShape sx = s;
        set_strides(sx.x_stride, grad_input);
        check_launch(conv::padded_conv2d_backward_input(dtype, sx, grad_output.const_data_ptr(),
                                                        weight.const_data_ptr(),
                                                        grad_input.mutable_data_ptr(), stream),
                     op, "input-gradient");
      }
    }
  }
  if (output_mask[1] || output_mask[2]) {
    const at::ScalarType acc = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    if (grad_output.numel() == 0 || input.numel() == 0) {
      if (output_mask[1]) grad_weight = at::zeros_like(weight, at::MemoryFormat::Contiguous);
      if (output_mask[2]) grad_bias = at::zeros({s.c_out}, weight.options());
    } else {
      const conv::WeightSplit split = conv::weight_split(s);
      const at::Tensor weight_partial =
          at::empty({split.splits, s.c_out, s.c_in, s.kh, s.kw}, input.options().dtype(acc));
      at::Tensor bias_partial;
      if (output_mask[2]) bias_partial = at::empty({split.splits, s.c_out},
                                                   input.options().dtype(acc));
      check_launch(conv::padded_conv2d_backward_weight(
                       dtype, s, split, grad_output.const_data_ptr(), input.const_data_ptr(),
                       weight_partial.mutable_data_ptr(),
                       output_mask[2] ? bias_partial.mutable_data_ptr() : nullptr, stream),
                   op, "weight-gradient");
      // Partials summed over the split dimension: fixed order, deterministic.
      if (output_mask[1]) grad_weight = weight_partial.sum(0).to(weight.scalar_type());
      if (output_mask[2]) grad_bias = bias_partial.sum(0).to(weight.scalar_type());
    }
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(stylize_fast, CUDA, m) {
  m.impl("padded_conv2d_fwd", &padded_conv2d_fwd_cuda);
  m.impl("padded_conv2d_bwd", &padded_conv2d_bwd_cuda);
}
