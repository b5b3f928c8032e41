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

#include "conv_binding_checks.h"
#include "padded_conv_kernels.h"

namespace {

namespace conv = stylize_fast::cuda::conv;
using conv::check_conv;
using conv::check_launch;
using conv::check_tensor;
using conv::dtype_of;
using conv::set_strides;

void check_activation(int64_t activation, const char* op) {
  TORCH_CHECK(activation == 0 || activation == 1, op,
              ": activation must be 0 (none) or 1 (relu), got ", activation,
              activation == 2 ? " (leaky_relu is not implemented for the padded convolution)" : "");
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
