// CUDA binding of stylize_fast::instance_norm_fwd / instance_norm_bwd (schemas in csrc/ops.cpp):
// argument checks, layout, allocation, schedule choice, launch on the current stream. The
// device code is in instance_norm_kernels.cu (no torch headers), conventions in docs/design.md,
// schedules and the bytes-moved model in docs/gpu.md.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <limits>
#include <optional>
#include <tuple>

#include "instance_norm_kernels.h"

namespace {

namespace sfc = stylize_fast::cuda;

sfc::ScalarKind scalar_kind(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return sfc::ScalarKind::kFloat32;
    case at::kHalf: return sfc::ScalarKind::kFloat16;
    case at::kBFloat16: return sfc::ScalarKind::kBFloat16;
    case at::kDouble: return sfc::ScalarKind::kFloat64;
    default:
      TORCH_CHECK(false, op, ": input must be float16, bfloat16, float32 or float64, got ",
                  t.scalar_type());
  }
}

at::ScalarType stats_type(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_input(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.dim() == 4, op, ": ", name, " must have 4 dimensions (N, C, H, W), got shape ",
              t.sizes());
}

// Returns the stride over n of a validated (C,) or (N, C) weight / bias, or 0 when absent.
int64_t check_affine(const std::optional<at::Tensor>& t, const at::Tensor& input, const char* op,
                     const char* name) {
  if (!t.has_value() || !t->defined()) return 0;
  const int64_t N = input.size(0), C = input.size(1);
  TORCH_CHECK(t->device() == input.device(), op, ": ", name, " is on ", t->device(),
              " but input is on ", input.device());
  TORCH_CHECK(t->scalar_type() == stats_type(input), op, ": ", name, " must have dtype ",
              stats_type(input), " (the statistics dtype of a ", input.scalar_type(),
              " input), got ", t->scalar_type());
  TORCH_CHECK(t->is_contiguous(), op, ": ", name, " must be contiguous");
  const bool per_channel = t->dim() == 1 && t->size(0) == C;
  const bool per_sample = t->dim() == 2 && t->size(0) == N && t->size(1) == C;
  TORCH_CHECK(per_channel || per_sample, op, ": ", name, " must have shape (C,) = (", C,
              ",) or (N, C) = (", N, ", ", C, "), got ", t->sizes());
  return per_sample ? C : 0;
}

void check_stats(const at::Tensor& t, const at::Tensor& input, const char* op, const char* name) {
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(),
              " but input is on ", input.device());
  TORCH_CHECK(t.scalar_type() == stats_type(input), op, ": ", name, " must have dtype ",
              stats_type(input), ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == input.size(0) && t.size(1) == input.size(1), op, ": ",
              name, " must have shape (N, C) = (", input.size(0), ", ", input.size(1), "), got ",
              t.sizes());
}

const void* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr() : nullptr;
}

sfc::Shape shape_of(const at::Tensor& x, at::MemoryFormat fmt) {
  sfc::Shape s;
  s.N = x.size(0);
  s.C = x.size(1);
  s.HW = x.size(2) * x.size(3);
  s.layout = fmt == at::MemoryFormat::ChannelsLast ? sfc::Layout::kNHWC : sfc::Layout::kNCHW;
  return s;
}

void check_launchable(const sfc::Shape& s, const sfc::Plan& plan, const char* op) {
  constexpr int64_t kMaxGrid = std::numeric_limits<int32_t>::max();
  const int64_t blocks = s.layout == sfc::Layout::kNCHW ? s.N * s.C * plan.splits
                                                        : s.N * plan.channel_tiles * plan.splits;
  TORCH_CHECK(blocks <= kMaxGrid, op, ": N * C = ", s.N * s.C, " is too large for one launch");
}

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_fwd_cuda(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, double eps, int64_t activation,
    double negative_slope) {
  constexpr const char* op = "stylize_fast::instance_norm_fwd (CUDA)";
  check_input(input, op, "input");
  const sfc::ScalarKind kind = scalar_kind(input, op);
  TORCH_CHECK(eps >= 0, op, ": eps must be non-negative, got ", eps);
  TORCH_CHECK(activation >= 0 && activation <= 2, op,
              ": activation must be 0 (none), 1 (relu) or 2 (leaky_relu), got ", activation);
  const int64_t weight_stride = check_affine(weight, input, op, "weight");
  const int64_t bias_stride = check_affine(bias, input, op, "bias");
  const c10::cuda::CUDAGuard guard(input.device());

  const at::MemoryFormat fmt = input.suggest_memory_format();
  const at::Tensor x = input.contiguous(fmt);
  at::Tensor output = at::empty_like(input, fmt);
  const auto stats_opts = input.options().dtype(stats_type(input));
  at::Tensor mean = at::empty({input.size(0), input.size(1)}, stats_opts);
  at::Tensor rstd = at::empty({input.size(0), input.size(1)}, stats_opts);
  const sfc::Shape s = shape_of(x, fmt);
  if (s.N * s.C == 0) return {output, mean, rstd};
  if (s.HW == 0) {  // statistics of an empty plane, as torch.var_mean: NaN
    mean.fill_(std::numeric_limits<double>::quiet_NaN());
    rstd.fill_(std::numeric_limits<double>::quiet_NaN());
    return {output, mean, rstd};
  }

  const void* ptrs[] = {x.data_ptr(), output.data_ptr()};
  const int vec = sfc::choose_vec(kind, s.layout == sfc::Layout::kNCHW ? s.HW : s.C, ptrs, 2);
  const sfc::Plan plan = sfc::plan_instance_norm(s, vec, sm_count());
  check_launchable(s, plan, op);
  at::Tensor workspace;
  const size_t ws_bytes = sfc::workspace_bytes(s, plan, kind, 3);
  if (ws_bytes > 0) workspace = at::empty({int64_t(ws_bytes)}, input.options().dtype(at::kByte));

  sfc::ForwardArgs args{};
  args.input = x.data_ptr();
  args.output = output.data_ptr();
  args.mean = mean.data_ptr();
  args.rstd = rstd.data_ptr();
  args.weight = optional_ptr(weight);
  args.bias = optional_ptr(bias);
  args.weight_stride_n = weight_stride;
  args.bias_stride_n = bias_stride;
  args.eps = eps;
  args.activation = int(activation);
  args.negative_slope = negative_slope;
  args.workspace = ws_bytes > 0 ? workspace.data_ptr() : nullptr;
  C10_CUDA_CHECK(sfc::instance_norm_forward(kind, s, plan, args,
                                            at::cuda::getCurrentCUDAStream().stream()));
  return {output, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_bwd_cuda(
    const at::Tensor& grad_output, const at::Tensor& input,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& mean, const at::Tensor& rstd, int64_t activation, double negative_slope,
    std::array<bool, 3> output_mask) {
  constexpr const char* op = "stylize_fast::instance_norm_bwd (CUDA)";
  check_input(input, op, "input");
  check_input(grad_output, op, "grad_output");
  const sfc::ScalarKind kind = scalar_kind(input, op);
  TORCH_CHECK(grad_output.sizes() == input.sizes(), op, ": grad_output must have the shape of ",
              "input ", input.sizes(), ", got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), op,
              ": grad_output must have input's dtype ", input.scalar_type(), ", got ",
              grad_output.scalar_type());
  TORCH_CHECK(grad_output.device() == input.device(), op, ": grad_output is on ",
              grad_output.device(), " but input is on ", input.device());
  TORCH_CHECK(activation >= 0 && activation <= 2, op,
              ": activation must be 0 (none), 1 (relu) or 2 (leaky_relu), got ", activation);
  check_stats(mean, input, op, "mean");
  check_stats(rstd, input, op, "rstd");
  const int64_t weight_stride = check_affine(weight, input, op, "weight");
  const int64_t bias_stride = check_affine(bias, input, op, "bias");
  const bool has_weight = weight.has_value() && weight->defined();
  const bool has_bias = bias.has_value() && bias->defined();
  const c10::cuda::CUDAGuard guard(input.device());

  const at::MemoryFormat fmt = input.suggest_memory_format();
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor dz = grad_output.contiguous(fmt);
  const at::Tensor mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  const bool want_dx = output_mask[0];
  const bool want_dw = output_mask[1] && has_weight;
  const bool want_db = output_mask[2] && has_bias;
  at::Tensor grad_input = want_dx ? at::empty_like(input, fmt) : input.new_empty({0});
  at::Tensor grad_weight = want_dw ? at::empty_like(*weight) : input.new_empty({0});
  at::Tensor grad_bias = want_db ? at::empty_like(*bias) : input.new_empty({0});
  const sfc::Shape s = shape_of(x, fmt);
  if (!want_dx && !want_dw && !want_db) return {grad_input, grad_weight, grad_bias};
  if (s.N * s.C == 0 || s.HW == 0) {  // sums over empty planes
    if (want_dw) grad_weight.zero_();
    if (want_db) grad_bias.zero_();
    return {grad_input, grad_weight, grad_bias};
  }

  const auto stats_opts = input.options().dtype(stats_type(input));
  at::Tensor sums = at::empty({s.N, s.C, 2}, stats_opts);
  const void* ptrs[] = {x.data_ptr(), dz.data_ptr(), want_dx ? grad_input.data_ptr() : nullptr};
  const int vec = sfc::choose_vec(kind, s.layout == sfc::Layout::kNCHW ? s.HW : s.C, ptrs, 3);
  const sfc::Plan plan = sfc::plan_instance_norm(s, vec, sm_count());
  check_launchable(s, plan, op);
  at::Tensor workspace;
  const size_t ws_bytes = sfc::workspace_bytes(s, plan, kind, 2);
  if (ws_bytes > 0) workspace = at::empty({int64_t(ws_bytes)}, input.options().dtype(at::kByte));

  sfc::BackwardArgs args{};
  args.grad_output = dz.data_ptr();
  args.input = x.data_ptr();
  args.mean = mean_c.data_ptr();
  args.rstd = rstd_c.data_ptr();
  args.weight = optional_ptr(weight);
  args.bias = optional_ptr(bias);
  args.weight_stride_n = weight_stride;
  args.bias_stride_n = bias_stride;
  args.activation = int(activation);
  args.negative_slope = negative_slope;
  args.grad_input = want_dx ? grad_input.data_ptr() : nullptr;
  args.sums = sums.data_ptr();
  args.grad_weight = want_dw ? grad_weight.data_ptr() : nullptr;
  args.grad_bias = want_db ? grad_bias.data_ptr() : nullptr;
  args.workspace = ws_bytes > 0 ? workspace.data_ptr() : nullptr;
  C10_CUDA_CHECK(sfc::instance_norm_backward(kind, s, plan, args,
                                             at::cuda::getCurrentCUDAStream().stream()));
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(stylize_fast, CUDA, m) {
  m.impl("instance_norm_fwd", &instance_norm_fwd_cuda);
  m.impl("instance_norm_bwd", &instance_norm_bwd_cuda);
}
