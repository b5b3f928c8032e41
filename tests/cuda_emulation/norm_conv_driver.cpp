// CPU driver for the emulated normalize-on-load convolution (padded_conv_kernels.cu with the
// forward's norm flag on, and the merge of its output statistics): the logic of
// csrc/cuda/norm_conv_cuda.cpp (output layout, element strides, the statistics partials and
// their merge) on CPU tensors. Arguments are assumed valid: the binding's checks are tested on
// the real op, here only the device code is under test.
#include <torch/extension.h>

#include "padded_conv_kernels.h"

namespace conv = stylize_fast::cuda::conv;

static conv::DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return conv::DType::kFloat32;
    case at::kHalf: return conv::DType::kFloat16;
    case at::kBFloat16: return conv::DType::kBFloat16;
    default: return conv::DType::kFloat64;
  }
}

static void set_strides(int64_t (&dst)[4], const at::Tensor& t) {
  for (int d = 0; d < 4; ++d) dst[d] = t.stride(d);
}

// Returns (output, mean, rstd); mean / rstd are (0,) when stats_eps < 0.
std::tuple<at::Tensor, at::Tensor, at::Tensor> fwd(
    at::Tensor x, std::optional<at::Tensor> scale, std::optional<at::Tensor> shift,
    int64_t input_activation, double negative_slope, at::Tensor w,
    std::optional<at::Tensor> bias, std::vector<int64_t> stride, std::vector<int64_t> padding,
    int64_t mode, int64_t activation, int64_t up, std::optional<at::Tensor> residual,
    double stats_eps) {
  conv::ConvShape s{};
  s.n = x.size(0);
  s.c_in = x.size(1);
  s.h = x.size(2) * up;  // the upsampled sizes (ConvShape::up)
  s.w = x.size(3) * up;
  s.up = int(up);
  s.c_out = w.size(0);
  s.kh = int(w.size(2));
  s.kw = int(w.size(3));
  s.stride_h = int(stride[0]);
  s.stride_w = int(stride[1]);
  s.pad_h = int(padding[0]);
  s.pad_w = int(padding[1]);
  s.oh = (s.h + 2 * s.pad_h - s.kh) / s.stride_h + 1;
  s.ow = (s.w + 2 * s.pad_w - s.kw) / s.stride_w + 1;
  s.mode = int(mode);
  s.activation = int(activation);
  set_strides(s.x_stride, x);
  set_strides(s.w_stride, w);
  auto y = at::empty({s.n, s.c_out, s.oh, s.ow}, x.options(), x.suggest_memory_format());
  set_strides(s.y_stride, y);

  conv::NormArgs a;
  at::Tensor sc, sh;
  if (scale.has_value()) {
    sc = scale->contiguous();
    sh = shift->contiguous();
    a.scale = sc.data_ptr();
    a.shift = sh.data_ptr();
  }
  a.input_activation = int(input_activation);
  a.negative_slope = negative_slope;
  if (residual.has_value()) {
    a.residual = residual->data_ptr();
    set_strides(a.r_stride, *residual);
  }
  const auto stats = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const bool want_stats = stats_eps >= 0;
  at::Tensor partial;
  if (want_stats) {
    partial = at::empty({conv::stat_slots(s), s.c_out, 3}, x.options().dtype(stats));
    a.stats_partial = partial.data_ptr();
  }
  at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  TORCH_CHECK(conv::norm_conv2d_forward(dtype_of(x), s, a, x.data_ptr(), w.data_ptr(),
                                        b.defined() ? b.data_ptr() : nullptr, y.data_ptr(),
                                        nullptr) == cudaSuccess,
              "forward launch failed");
  const auto opts = x.options().dtype(stats);
  at::Tensor mean = want_stats ? at::empty({s.n, s.c_out}, opts) : at::empty({0}, opts);
  at::Tensor rstd = at::empty_like(mean);
  if (want_stats)
    TORCH_CHECK(conv::norm_conv2d_stats(dtype_of(x), s, partial.data_ptr(), stats_eps,
                                        mean.data_ptr(), rstd.data_ptr(),
                                        nullptr) == cudaSuccess,
                "statistics launch failed");
  return {y, mean, rstd};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("fwd", &fwd); }
