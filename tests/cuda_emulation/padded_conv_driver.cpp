// CPU driver for the emulated padded-conv kernels: the logic of csrc/cuda/padded_conv_cuda.cpp
// (output layout, element strides, weight-gradient split and the fixed-order sum of its
// partials) on CPU tensors. Arguments are assumed valid: the binding's checks are tested on the
// real op, here only the device code is under test.
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

static conv::ConvShape shape_of(const at::Tensor& x, const at::Tensor& w,
                                std::vector<int64_t> stride, std::vector<int64_t> padding,
                                int64_t mode, int64_t up) {
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
  set_strides(s.x_stride, x);
  set_strides(s.w_stride, w);
  return s;
}

// activation: 0 none, 1 relu (the kernels' epilogue); up: nearest upsampling folded into the
// loads (1 = none).
at::Tensor fwd(at::Tensor x, at::Tensor w, std::optional<at::Tensor> bias,
               std::vector<int64_t> stride, std::vector<int64_t> padding, int64_t mode,
               int64_t activation, int64_t up) {
  conv::ConvShape s = shape_of(x, w, stride, padding, mode, up);
  s.activation = int(activation);
  auto y = at::empty({s.n, s.c_out, s.oh, s.ow}, x.options(), x.suggest_memory_format());
  set_strides(s.y_stride, y);
  at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  TORCH_CHECK(conv::padded_conv2d_forward(dtype_of(x), s, x.data_ptr(), w.data_ptr(),
                                          b.defined() ? b.data_ptr() : nullptr, y.data_ptr(),
                                          nullptr) == cudaSuccess,
              "forward launch failed");
  return y;
}

// Returns grad_input, grad_weight, grad_bias and the number of weight-gradient splits. With
// activation 1 the kernels read gy through relu's mask, out (the forward's output) > 0.
std::tuple<at::Tensor, at::Tensor, at::Tensor, int64_t> bwd(
    at::Tensor gy, at::Tensor x, at::Tensor w, std::vector<int64_t> stride,
    std::vector<int64_t> padding, int64_t mode, bool with_bias, std::optional<at::Tensor> out,
    int64_t activation, int64_t up) {
  conv::ConvShape s = shape_of(x, w, stride, padding, mode, up);
  set_strides(s.y_stride, gy);
  if (activation != 0) {
    s.activation = int(activation);
    s.out = out->data_ptr();
    set_strides(s.o_stride, *out);
  }
  auto gx = at::empty(x.sizes(), x.options(), x.suggest_memory_format());
  conv::ConvShape sx = s;
  set_strides(sx.x_stride, gx);
  TORCH_CHECK(conv::padded_conv2d_backward_input(dtype_of(x), sx, gy.data_ptr(), w.data_ptr(),
                                                 gx.data_ptr(), nullptr) == cudaSuccess,
              "input-gradient launch failed");
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const conv::WeightSplit split = conv::weight_split(s);
  auto wp = at::empty({split.splits, s.c_out, s.c_in, s.kh, s.kw}, x.options().dtype(acc));
  auto bp = at::empty({split.splits, s.c_out}, x.options().dtype(acc));
  TORCH_CHECK(conv::padded_conv2d_backward_weight(dtype_of(x), s, split, gy.data_ptr(),
                                                  x.data_ptr(), wp.data_ptr(),
                                                  with_bias ? bp.data_ptr() : nullptr,
                                                  nullptr) == cudaSuccess,
              "weight-gradient launch failed");
  auto gb = with_bias ? bp.sum(0).to(w.scalar_type()) : x.new_empty({0});
  return {gx, wp.sum(0).to(w.scalar_type()), gb, int64_t(split.splits)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwd", &fwd);
  m.def("bwd", &bwd);
}
