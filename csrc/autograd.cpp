// Autograd for the compiled ops, in C++ (TORCH_LIBRARY_IMPL(stylize_fast, Autograd, m)), for
// every device that has a kernel (CPU, CUDA).
//
// Why C++ and not torch.library.register_autograd: the Python registration runs Python on every
// call, even under no_grad, and more per forward+backward. On the small planes of a
// generator's deep layers that is a visible share of the op (docs/benchmarks.md). The
// semantics are those of the Python registration it replaces (ops/instance_norm.py and
// ops/padded_conv.py keep it for the Triton ops):
//   instance_norm_fwd  saves input, weight, bias, mean, rstd (not the output); mean and rstd are
//                      not differentiable; the backward recomputes the activation mask.
//   padded_conv2d_fwd  saves input and weight, and with an activation its output (the
//                      backward's mask is output > 0; the output is not saved otherwise);
//                      with upsample > 1 it saves the small input, never the upsampled one.
// Both backward calls ask only for the gradients autograd needs (output_mask). torch.compile
// traces through these kernels with the ops' fake (meta) implementations from Python.
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <tuple>

namespace stylize_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool present(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// The gradient edge of each optional tensor argument: autograd numbers edges over the tensor
// arguments that are present only.
struct Edges {
  int64_t input = 0, weight = -1, bias = -1;
  Edges(bool has_weight, bool has_bias) {
    int64_t next = 1;
    if (has_weight) weight = next++;
    if (has_bias) bias = next++;
  }
};

bool needs(AutogradContext* ctx, int64_t edge) { return edge >= 0 && ctx->needs_input_grad(edge); }

at::Tensor or_undefined(bool keep, const at::Tensor& t) { return keep ? t : at::Tensor(); }

c10::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt;
}

// ---------------------------------------------------------------------------------------------
// instance_norm_fwd(input, weight?, bias?, eps, activation, negative_slope) -> (out, mean, rstd)

class InstanceNormFunction : public torch::autograd::Function<InstanceNormFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const c10::optional<at::Tensor>& weight,
                               const c10::optional<at::Tensor>& bias, double eps,
                               int64_t activation, double negative_slope) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("stylize_fast::instance_norm_fwd", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const c10::optional<at::Tensor>&,
                             const c10::optional<at::Tensor>&, double, int64_t, double)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [output, mean, rstd] = op.call(input, weight, bias, eps, activation, negative_slope);
    ctx->save_for_backward({input, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()),
                            mean, rstd});
    ctx->mark_non_differentiable({mean, rstd});
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["negative_slope"] = negative_slope;
    return {output, mean, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("stylize_fast::instance_norm_bwd", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&,
                             const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
                             const at::Tensor&, const at::Tensor&, int64_t, double,
                             std::array<bool, 3>)>();
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1], &bias = saved[2];
    const Edges edges(weight.defined(), bias.defined());
    const std::array<bool, 3> mask{needs(ctx, edges.input), needs(ctx, edges.weight),
                                   needs(ctx, edges.bias)};
    variable_list result(6);  // one per forward argument; non-tensors get undefined
    if (!(mask[0] || mask[1] || mask[2])) return result;
    // grads[0] is defined: autograd materialises an unused output's gradient as zeros.
    auto [gi, gw, gb] = op.call(grads[0], input, optional_of(weight), optional_of(bias),
                                saved[3], saved[4], ctx->saved_data["activation"].toInt(),
                                ctx->saved_data["negative_slope"].toDouble(), mask);
    result[0] = or_undefined(mask[0], gi);
    result[1] = or_undefined(mask[1], gw);
    result[2] = or_undefined(mask[2], gb);
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_fwd_autograd(
    const at::Tensor& input, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, double eps, int64_t activation,
    double negative_slope) {
  variable_list out = InstanceNormFunction::apply(input, weight, bias, eps, activation,
                                                  negative_slope);
  return {out[0], out[1], out[2]};
}

// ---------------------------------------------------------------------------------------------
// padded_conv2d_fwd(input, weight, bias?, stride, padding, padding_mode, activation, upsample)
//   -> output

class PaddedConvFunction : public torch::autograd::Function<PaddedConvFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                               c10::IntArrayRef stride, c10::IntArrayRef padding,
                               int64_t padding_mode, int64_t activation, int64_t upsample) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("stylize_fast::padded_conv2d_fwd", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                           const c10::optional<at::Tensor>&, c10::IntArrayRef,
                                           c10::IntArrayRef, int64_t, int64_t, int64_t)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor output =
        op.call(input, weight, bias, stride, padding, padding_mode, activation, upsample);
    if (activation != 0)
      ctx->save_for_backward({input, weight, output});
    else
      ctx->save_for_backward({input, weight});
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["has_bias"] = present(bias);
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["padding_mode"] = padding_mode;
    ctx->saved_data["upsample"] = upsample;
    return {output};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("stylize_fast::padded_conv2d_bwd", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             c10::IntArrayRef, c10::IntArrayRef, int64_t, std::array<bool, 3>,
                             const c10::optional<at::Tensor>&, int64_t, int64_t)>();
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1];
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                   has_bias && ctx->needs_input_grad(2)};
    variable_list result(8);
    if (!(mask[0] || mask[1] || mask[2])) return result;
    const int64_t activation = ctx->saved_data["activation"].toInt();
    const c10::optional<at::Tensor> output =
        activation != 0 ? c10::optional<at::Tensor>(saved[2]) : c10::nullopt;
    const std::vector<int64_t> stride = ctx->saved_data["stride"].toIntVector();
    const std::vector<int64_t> padding = ctx->saved_data["padding"].toIntVector();
    auto [gi, gw, gb] = op.call(grads[0], input, weight, stride, padding,
                                ctx->saved_data["padding_mode"].toInt(), mask, output,
                                activation, ctx->saved_data["upsample"].toInt());
    result[0] = or_undefined(mask[0], gi);
    result[1] = or_undefined(mask[1], gw);
    result[2] = or_undefined(mask[2], gb);
    return result;
  }
};

at::Tensor padded_conv2d_fwd_autograd(const at::Tensor& input, const at::Tensor& weight,
                                      const c10::optional<at::Tensor>& bias,
                                      c10::IntArrayRef stride, c10::IntArrayRef padding,
                                      int64_t padding_mode, int64_t activation,
                                      int64_t upsample) {
  return PaddedConvFunction::apply(input, weight, bias, stride, padding, padding_mode,
                                   activation, upsample)[0];
}

}  // namespace
}  // namespace stylize_fast

TORCH_LIBRARY_IMPL(stylize_fast, Autograd, m) {
  m.impl("instance_norm_fwd", &stylize_fast::instance_norm_fwd_autograd);
  m.impl("padded_conv2d_fwd", &stylize_fast::padded_conv2d_fwd_autograd);
}
