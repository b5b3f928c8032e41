// CUDA binding of stylize_fast::norm_conv2d_fwd (schema and contract: csrc/ops.cpp,
// stylize_fast/ops/norm_conv.py): argument checks, allocation, launches on the current stream,
// error check after every launch. The device code is the padded convolution's forward kernel
// with its normalize-on-load flag on, plus the merge of its per-tile output statistics
// (padded_conv_kernels.cu; algorithm in padded_conv_kernels.h). Inputs of any strides are read
// in place; the output follows input.suggest_memory_format(), as padded_conv2d_fwd's does.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "conv_binding_checks.h"
#include "padded_conv_kernels.h"

namespace {

namespace conv = stylize_fast::cuda::conv;
constexpr const char* kOp = "norm_conv2d_fwd";

// The padded convolution's geometry checks (conv_binding_checks.h) plus the norm conv's own:
// upsampling needs stride 1. Returns the shape, strides not set; h, w upsampled.
conv::ConvShape check_geometry(const at::Tensor& input, const at::Tensor& weight,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               int64_t padding_mode, int64_t upsample) {
  conv::ConvShape s = conv::check_conv(input, weight, stride, padding, padding_mode, upsample,
                                       kOp);
  TORCH_CHECK(upsample == 1 || (stride[0] == 1 && stride[1] == 1), kOp, ": upsample=", upsample,
              " needs stride 1, got stride ", stride);
  return s;
}

void check_device(const at::Tensor& t, const at::Tensor& input, const char* name) {
  TORCH_CHECK(t.is_cuda(), kOp, ": ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.device() == input.device(), kOp, ": ", name, " is on ", t.device(),
              " but input is on ", input.device());
}

// scale / shift: (N, C_in) in the statistics dtype; returned contiguous (the kernel indexes
// n * C_in + c).
at::Tensor check_norm_tensor(const at::Tensor& t, const at::Tensor& input,
                             at::ScalarType stats, const char* name) {
  check_device(t, input, name);
  TORCH_CHECK(t.scalar_type() == stats, kOp, ": ", name, " must be in the statistics dtype ",
              stats, " (float64 for float64 input, else float32), got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == input.size(0) && t.size(1) == input.size(1), kOp,
              ": ", name, " must have shape (", input.size(0), ", ", input.size(1),
              ") (the input's (N, C)), got ", t.sizes());
  return t.contiguous();
}


std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_conv2d_fwd_cuda(
    const at::Tensor& input, const std::optional<at::Tensor>& scale,
    const std::optional<at::Tensor>& shift, int64_t input_activation, double negative_slope,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, int64_t padding_mode, int64_t activation, int64_t upsample,
    const std::optional<at::Tensor>& residual, double stats_eps) {
  conv::ConvShape s = check_geometry(input, weight, stride, padding, padding_mode, upsample);
  const at::ScalarType stats = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  conv::NormArgs a;

  // All checks before the first launch: a failing check cannot leave a kernel in flight.
  const bool has_scale = scale.has_value() && scale->defined();
  const bool has_shift = shift.has_value() && shift->defined();
  TORCH_CHECK(has_scale == has_shift, kOp, ": scale and shift must be given together (the "
              "input's norm) or both be None, got ", has_scale ? "scale" : "shift", " alone");
  TORCH_CHECK(input_activation >= 0 && input_activation <= 2, kOp,
              ": input_activation must be 0 (none), 1 (relu) or 2 (leaky_relu), got ",
              input_activation);
  TORCH_CHECK(input_activation == 0 || has_scale, kOp, ": input_activation=", input_activation,
              " needs scale and shift (the input's norm)");
  at::Tensor sc, sh;
  if (has_scale) {
    sc = check_norm_tensor(*scale, input, stats, "scale");
    sh = check_norm_tensor(*shift, input, stats, "shift");
    a.scale = sc.const_data_ptr();
    a.shift = sh.const_data_ptr();
  }
  a.input_activation = static_cast<int>(input_activation);
  a.negative_slope = negative_slope;
  TORCH_CHECK(activation == 0 || activation == 1, kOp,
              ": activation must be 0 (none) or 1 (relu), got ", activation);
  s.activation = static_cast<int>(activation);
  const bool has_bias = bias.has_value() && bias->defined();
  at::Tensor b;
  if (has_bias) {
    conv::check_tensor(*bias, input, kOp, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.c_out, kOp, ": bias must have shape (",
                s.c_out, ",), got ", bias->sizes());
    b = bias->contiguous();
  }
  const bool has_residual = residual.has_value() && residual->defined();
  if (has_residual) {
    conv::check_tensor(*residual, input, kOp, "residual");
    TORCH_CHECK(residual->dim() == 4 && residual->size(0) == s.n &&
                    residual->size(1) == s.c_out && residual->size(2) == s.oh &&
                    residual->size(3) == s.ow,
                kOp, ": residual must have the output's shape (", s.n, ", ", s.c_out, ", ",
                s.oh, ", ", s.ow, "), got ", residual->sizes());
    a.residual = residual->const_data_ptr();  // read in place through its own strides
    conv::set_strides(a.r_stride, *residual);
  }
  const bool want_stats = stats_eps >= 0;  // NaN: none, as any negative

  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor out = at::empty({s.n, s.c_out, s.oh, s.ow}, input.options(),
                             input.suggest_memory_format());
  // Distinct (0,) tensors without statistics (outputs may not alias each other).
  const auto stats_options = input.options().dtype(stats);
  at::Tensor mean = want_stats ? at::empty({s.n, s.c_out}, stats_options)
                               : at::empty({0}, stats_options);
  at::Tensor rstd = at::empty_like(mean);
  if (out.numel() == 0) return {out, mean, rstd};

  conv::set_strides(s.x_stride, input);
  conv::set_strides(s.w_stride, weight);
  conv::set_strides(s.y_stride, out);
  const conv::DType dtype = conv::dtype_of(input, kOp);
  at::Tensor partial;
  if (want_stats) {
    // {count, mean, m2} per (slot, channel); every slot read by the merge is written first.
    partial = at::empty({conv::stat_slots(s), s.c_out, 3}, input.options().dtype(stats));
    a.stats_partial = partial.mutable_data_ptr();
  }
  conv::check_launch(conv::norm_conv2d_forward(dtype, s, a, input.const_data_ptr(),
                                               weight.const_data_ptr(),
                                               has_bias ? b.const_data_ptr() : nullptr,
                                               out.mutable_data_ptr(), stream),
                     kOp, "forward");
  if (want_stats)
    conv::check_launch(conv::norm_conv2d_stats(dtype, s, partial.const_data_ptr(), stats_eps,
                                               mean.mutable_data_ptr(), rstd.mutable_data_ptr(),
                                               stream),
                       kOp, "statistics");
  return {out, mean, rstd};
}

}  // namespace

TORCH_LIBRARY_IMPL(stylize_fast, CUDA, m) {
  m.impl("norm_conv2d_fwd", &norm_conv2d_fwd_cuda);
}
