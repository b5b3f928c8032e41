// CPU driver for the emulated kernels: the logic of csrc/cuda/instance_norm_cuda.cpp (layout,
// vector width, plan, workspace) on CPU tensors, with the SM count as an argument so that small
// shapes reach every schedule.
#include <torch/extension.h>

#include "instance_norm_kernels.h"

namespace sfc = stylize_fast::cuda;

static sfc::ScalarKind kind_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return sfc::ScalarKind::kFloat32;
    case at::kHalf: return sfc::ScalarKind::kFloat16;
    case at::kBFloat16: return sfc::ScalarKind::kBFloat16;
    default: return sfc::ScalarKind::kFloat64;
  }
}
static sfc::Shape shape_of(const at::Tensor& x, at::MemoryFormat fmt) {
  sfc::Shape s;
  s.N = x.size(0); s.C = x.size(1); s.HW = x.size(2) * x.size(3);
  s.layout = fmt == at::MemoryFormat::ChannelsLast ? sfc::Layout::kNHWC : sfc::Layout::kNCHW;
  return s;
}
static int64_t stride_n(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->dim() == 2 ? t->size(1) : 0;
}
static const void* ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr() : nullptr;
}

// x is used as given: its data pointer decides the vector width. Returns the schedule too.
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::string> fwd(
    at::Tensor x, std::optional<at::Tensor> w, std::optional<at::Tensor> b, double eps,
    int64_t act, double slope, int64_t sm) {
  const auto fmt = x.suggest_memory_format();
  TORCH_CHECK(x.is_contiguous(fmt), "emulation driver: input must be dense");
  auto y = at::empty_like(x, fmt);
  auto so = x.options().dtype(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  auto mean = at::empty({x.size(0), x.size(1)}, so), rstd = at::empty({x.size(0), x.size(1)}, so);
  const auto s = shape_of(x, fmt);
  const auto kind = kind_of(x);
  const void* ptrs[] = {x.data_ptr(), y.data_ptr()};
  const auto plan = sfc::plan_instance_norm(
      s, sfc::choose_vec(kind, s.layout == sfc::Layout::kNCHW ? s.HW : s.C, ptrs, 2), int(sm));
  auto ws = at::empty({int64_t(sfc::workspace_bytes(s, plan, kind, 3)) + 1}, x.options().dtype(at::kByte));
  sfc::ForwardArgs a{};
  a.input = x.data_ptr(); a.output = y.data_ptr(); a.mean = mean.data_ptr(); a.rstd = rstd.data_ptr();
  a.weight = ptr(w); a.bias = ptr(b); a.weight_stride_n = stride_n(w); a.bias_stride_n = stride_n(b);
  a.eps = eps; a.activation = int(act); a.negative_slope = slope; a.workspace = ws.data_ptr();
  TORCH_CHECK(sfc::instance_norm_forward(kind, s, plan, a, nullptr) == cudaSuccess, "launch failed");
  return {y, mean, rstd, std::string(sfc::schedule_name(plan.schedule)) + "/vec" + std::to_string(plan.vec)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bwd(
    at::Tensor dz, at::Tensor x, std::optional<at::Tensor> w, std::optional<at::Tensor> b,
    at::Tensor mean, at::Tensor rstd, int64_t act, double slope, std::vector<bool> mask, int64_t sm) {
  const auto fmt = x.suggest_memory_format();
  TORCH_CHECK(x.is_contiguous(fmt) && dz.is_contiguous(fmt), "emulation driver: dense inputs");
  const auto s = shape_of(x, fmt);
  const auto kind = kind_of(x);
  auto dx = mask[0] ? at::empty_like(x, fmt) : x.new_empty({0});
  auto dw = mask[1] && w.has_value() ? at::empty_like(*w) : x.new_empty({0});
  auto db = mask[2] && b.has_value() ? at::empty_like(*b) : x.new_empty({0});
  auto sums = at::empty({s.N, s.C, 2}, mean.options());
  const void* ptrs[] = {x.data_ptr(), dz.data_ptr(), mask[0] ? dx.data_ptr() : nullptr};
  const auto plan = sfc::plan_instance_norm(
      s, sfc::choose_vec(kind, s.layout == sfc::Layout::kNCHW ? s.HW : s.C, ptrs, 3), int(sm));
  auto ws = at::empty({int64_t(sfc::workspace_bytes(s, plan, kind, 2)) + 1}, x.options().dtype(at::kByte));
  sfc::BackwardArgs a{};
  a.grad_output = dz.data_ptr(); a.input = x.data_ptr(); a.mean = mean.data_ptr(); a.rstd = rstd.data_ptr();
  a.weight = ptr(w); a.bias = ptr(b); a.weight_stride_n = stride_n(w); a.bias_stride_n = stride_n(b);
  a.activation = int(act); a.negative_slope = slope;
  a.grad_input = mask[0] ? dx.data_ptr() : nullptr; a.sums = sums.data_ptr();
  a.grad_weight = dw.numel() ? dw.data_ptr() : nullptr; a.grad_bias = db.numel() ? db.data_ptr() : nullptr;
  a.workspace = ws.data_ptr();
  TORCH_CHECK(sfc::instance_norm_backward(kind, s, plan, a, nullptr) == cudaSuccess, "launch failed");
  return {dx, dw, db};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwd", &fwd);
  m.def("bwd", &bwd);
}
