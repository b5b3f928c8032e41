// Padded convolution on CPU: F.conv2d(F.pad(x, (pw, pw, ph, ph), mode), w, b, stride) without
// ever building the padded tensor. This file: the legality checks, the choice of algorithm per
// call, the forward / backward entry points and their registration.
//
// Algorithms, chosen per call by algorithm_for():
//   library   oneDNN with zero padding, then the border pixels recomputed with the true padding
//             ("border fix-up", padded_conv_cpu_library.cpp; its backward likewise);
//   direct    padded_conv_cpu_direct.cpp, for few output channels (the library runs Johnson's
//             last 9x9 32->3 layer far below its usual rate), few input channels with large
//             kernels and float32 stride-2 NCHW layers;
//   winograd  padded_conv_cpu_winograd.cpp, F(4x4, 3x3) for 3x3 stride-1 layers (4x fewer
//             multiplications).
// The backward's input gradient is a zero-padded stride-1 convolution of grad_output (direct or
// Winograd where they apply), plus the library file's border corrections; its weight gradient
// for few output channels is padded_conv_cpu_wgrad.cpp's kernel, for 3x3 stride-1 layers
// padded_conv_cpu_wgrad_winograd.cpp's.
// STYLIZE_FAST_CONV_ALGO = auto | library | direct | winograd forces one (through config.h;
// tests use config.override); padded_conv2d_cpu_algorithm() says which one a call would run.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <cstdlib>
#include <string>
#include <tuple>

#include "config.h"
#include "cpu/padded_conv_cpu.h"
#include "padded_conv_upsample.h"

namespace stylize_fast {
namespace padded_conv_cpu {
namespace {

Geometry check_args(const char* fn, const at::Tensor& input, const at::Tensor& weight,
                    const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                    at::IntArrayRef padding, int64_t mode, int64_t up = 1) {
  check_upsample(fn, up);
  TORCH_CHECK(input.dim() == 4, fn, ": input must have 4 dimensions (N, C, H, W), got ",
              input.dim(), " with shape ", input.sizes());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              fn, ": input must be a floating-point tensor, got ", input.scalar_type());
  TORCH_CHECK(weight.dim() == 4, fn, ": weight must have 4 dimensions (O, C, KH, KW), got ",
              weight.dim(), " with shape ", weight.sizes());
  TORCH_CHECK(weight.size(1) == input.size(1), fn, ": weight has ", weight.size(1),
              " input channels (shape ", weight.sizes(), ") but input has ", input.size(1),
              " channels; groups=1 is required");
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), fn, ": weight dtype ",
              weight.scalar_type(), " must equal input dtype ", input.scalar_type());
  TORCH_CHECK(weight.device() == input.device(), fn, ": weight is on ", weight.device(),
              " but input is on ", input.device());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), fn,
                ": bias must have shape (O,) = (", weight.size(0), ",), got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == input.scalar_type(), fn, ": bias dtype ",
                bias->scalar_type(), " must equal input dtype ", input.scalar_type());
    TORCH_CHECK(bias->device() == input.device(), fn, ": bias is on ", bias->device(),
                " but input is on ", input.device());
  }
  TORCH_CHECK(stride.size() == 2 && stride[0] >= 1 && stride[1] >= 1, fn,
              ": stride must be two integers >= 1, got ", stride);
  TORCH_CHECK(padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0, fn,
              ": padding must be two integers >= 0, got ", padding);
  TORCH_CHECK(mode == kZeros || mode == kReflect || mode == kReplicate, fn,
              ": padding_mode must be 0 (zeros), 1 (reflect) or 2 (replicate), got ", mode);
  Geometry g{input.size(0), input.size(1), input.size(2), input.size(3),
             weight.size(0), weight.size(2), weight.size(3),
             stride[0], stride[1], padding[0], padding[1], 0, 0,
             input.suggest_memory_format() == at::MemoryFormat::ChannelsLast};
  // With upsampling, the geometry is the upsampled (virtual) input's (Geometry::up).
  g.h *= up;
  g.w *= up;
  g.up = up;
  if (mode == kReflect) {
    TORCH_CHECK(g.ph < g.h && g.pw < g.w, fn, ": reflect padding must be smaller than the "
                "input size in that dimension (as F.pad): padding (", g.ph, ", ", g.pw,
                ") for input of height ", g.h, " and width ", g.w);
  }
  if (mode == kReplicate) {
    TORCH_CHECK(g.h > 0 && g.w > 0, fn, ": replicate padding needs a non-empty input plane, "
                "got height ", g.h, " and width ", g.w);
  }
  const int64_t hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
  TORCH_CHECK(hp >= g.kh && wp >= g.kw, fn, ": padded input (", hp, " x ", wp,
              ") is smaller than the kernel (", g.kh, " x ", g.kw, ")");
  g.ho = (hp - g.kh) / g.sh + 1;
  g.wo = (wp - g.kw) / g.sw + 1;
  return g;
}

void check_activation(const char* fn, int64_t activation) {
  TORCH_CHECK(activation == kNoActivation || activation == kRelu, fn,
              ": activation must be 0 (none) or 1 (relu), got ", activation,
              activation == 2 ? " (leaky_relu is not implemented for the padded convolution)" : "");
}


const char* algorithm_name(Algorithm a) {
  return a == Algorithm::kDirect ? "direct" : a == Algorithm::kWinograd ? "winograd" : "library";
}

// STYLIZE_FAST_CONV_ALGO as config.h holds it: "" (auto), "library", "direct" or "winograd".
std::string forced_algorithm() {
  switch (config::conv_algo()) {
    case config::ConvAlgo::kLibrary: return "library";
    case config::ConvAlgo::kDirect: return "direct";
    case config::ConvAlgo::kWinograd: return "winograd";
    default: return "";
  }
}

// The forward algorithm for this call: STYLIZE_FAST_CONV_ALGO when set, else the fastest that
// applies (direct for few output channels, Winograd for 3x3 stride 1, else the library).
Algorithm algorithm_for(const Geometry& g, at::ScalarType dtype) {
  const std::string forced = forced_algorithm();
  if (forced.empty()) {
    if (direct_applies(g, dtype)) return Algorithm::kDirect;
    if (winograd_applies(g, dtype) && winograd_pays(g, dtype, g.up > 1))
      return Algorithm::kWinograd;
    return Algorithm::kLibrary;
  }
  if (forced == "direct") {
    TORCH_CHECK(direct_applies(g, dtype), "padded_conv2d_fwd: STYLIZE_FAST_CONV_ALGO=direct but "
                "the direct kernel does not handle this layer (", g.o, " output channels, kernel ",
                g.kh, "x", g.kw, ", stride ", g.sh, "x", g.sw, ", dtype ", dtype, ")");
    return Algorithm::kDirect;
  }
  if (forced == "winograd") {
    TORCH_CHECK(winograd_applies(g, dtype), "padded_conv2d_fwd: STYLIZE_FAST_CONV_ALGO=winograd "
                "but Winograd F(4x4, 3x3) does not handle this layer (kernel ", g.kh, "x", g.kw,
                ", stride ", g.sh, "x", g.sw, ", dtype ", dtype, ")");
    return Algorithm::kWinograd;
  }
  return Algorithm::kLibrary;
}

// The input gradient's zero-padded part, Z^T G, is itself a stride-1 convolution of grad_output
// with the flipped, transposed weight and padding k - 1 - p: geometry of that convolution.
Geometry input_grad_geometry(const Geometry& g) {
  return {g.n, g.o, g.ho, g.wo, g.c, g.kh, g.kw, 1, 1, g.kh - 1 - g.ph, g.kw - 1 - g.pw,
          g.h, g.w, g.channels_last};
}

// Algorithm for the backward's input gradient: the direct kernel or Winograd where one applies
// and pays (or is forced and applies), else the library. Never an error: the backward has no
// other algorithm to force.
Algorithm input_grad_algorithm_for(const Geometry& g, at::ScalarType dtype) {
  if (g.sh != 1 || g.sw != 1 || g.ph > g.kh - 1 || g.pw > g.kw - 1) return Algorithm::kLibrary;
  const Geometry d = input_grad_geometry(g);
  const std::string forced = forced_algorithm();
  const bool direct = direct_applies(d, dtype);
  const bool winograd = winograd_applies(d, dtype);
  if (forced == "direct") return direct ? Algorithm::kDirect : Algorithm::kLibrary;
  if (forced == "winograd") return winograd ? Algorithm::kWinograd : Algorithm::kLibrary;
  if (forced == "library") return Algorithm::kLibrary;
  if (direct) return Algorithm::kDirect;
  return winograd && winograd_pays(d, dtype, g.up > 1) ? Algorithm::kWinograd
                                                       : Algorithm::kLibrary;
}

// Algorithm for the backward's weight gradient: the direct kernel (few output channels) or
// Winograd (3x3 stride 1) where it applies and pays, else the library. Forced, the named one
// where it applies, else the library.
Algorithm weight_grad_algorithm_for(const Geometry& g, at::ScalarType dtype) {
  const std::string forced = forced_algorithm();
  const bool winograd = wgrad_winograd_applies(g, dtype);
  if (forced == "library") return Algorithm::kLibrary;
  if (forced == "winograd") return winograd ? Algorithm::kWinograd : Algorithm::kLibrary;
  if (wgrad_applies(g, dtype)) return Algorithm::kDirect;
  if (forced.empty() && winograd && wgrad_winograd_pays(g, dtype)) return Algorithm::kWinograd;
  return Algorithm::kLibrary;
}

at::Tensor padded_conv2d_fwd_cpu(const at::Tensor& input, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, int64_t mode, int64_t activation,
                                 int64_t upsample) {
  const Geometry g =
      check_args("padded_conv2d_fwd", input, weight, bias, stride, padding, mode, upsample);
  check_activation("padded_conv2d_fwd", activation);
  const auto fmt = input.suggest_memory_format();
  const Algorithm algorithm = algorithm_for(g, input.scalar_type());
  // Winograd reads the input through index maps alone: the upsampling folds into them. Every
  // other algorithm gets the upsampled input.
  if (g.up > 1 && (algorithm != Algorithm::kWinograd || input.numel() == 0))
    return padded_conv2d_fwd_cpu(upsampled_input(input, g.up), weight, bias, stride, padding,
                                 mode, activation, 1);
  if (algorithm != Algorithm::kLibrary && input.numel() > 0) {
    auto out = at::empty({g.n, g.o, g.ho, g.wo}, input.options().memory_format(fmt));
    const at::Tensor b = bias.has_value() ? *bias : at::Tensor();
    // The activation is applied where the kernels store their outputs.
    if (algorithm == Algorithm::kDirect) direct_fwd(input, weight, b, g, mode, out, activation);
    else winograd_fwd(input, weight, b, g, mode, out, activation);
    return out;
  }
  at::Tensor out = library_fwd(input, weight, bias, g, mode);
  // The library path's epilogue: one in-place pass.
  if (activation == kRelu) out.relu_();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> padded_conv2d_bwd_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, int64_t mode,
    std::array<bool, 3> output_mask, const c10::optional<at::Tensor>& output,
    int64_t activation, int64_t upsample) {
  const Geometry g = check_args("padded_conv2d_bwd", input, weight, c10::nullopt, stride,
                                padding, mode, upsample);
  check_activation("padded_conv2d_bwd", activation);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.n &&
                  grad_output.size(1) == g.o && grad_output.size(2) == g.ho &&
                  grad_output.size(3) == g.wo,
              "padded_conv2d_bwd: grad_output must have shape (", g.n, ", ", g.o, ", ", g.ho,
              ", ", g.wo, "), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(),
              "padded_conv2d_bwd: grad_output dtype ", grad_output.scalar_type(),
              " must equal input dtype ", input.scalar_type());
  if (activation != kNoActivation) {
    TORCH_CHECK(output.has_value() && output->defined() &&
                    output->sizes() == grad_output.sizes() &&
                    output->scalar_type() == grad_output.scalar_type() &&
                    output->device() == grad_output.device(),
                "padded_conv2d_bwd: with an activation, output (the forward's result) must be "
                "given with grad_output's shape ", grad_output.sizes(), " and dtype ",
                grad_output.scalar_type());
  }
  const auto fmt = input.suggest_memory_format();
  if (g.up > 1) {
    // Folded upsampling needs the weight gradient from Winograd (it reads the input through
    // index maps) and an input gradient that reads no input (direct / Winograd); Winograd sums
    // the upsampled input's gradient onto the pixels as it stores it (factors 2 and 4), the
    // direct kernel's is summed afterwards. Otherwise: upsample first.
    const auto dtype = input.scalar_type();
    const bool folds =
        grad_output.numel() > 0 && input.numel() > 0 &&
        (!output_mask[1] || weight_grad_algorithm_for(g, dtype) == Algorithm::kWinograd) &&
        (!output_mask[0] || input_grad_algorithm_for(g, dtype) != Algorithm::kLibrary);
    if (!folds) {
      auto [gi, gw, gb] = padded_conv2d_bwd_cpu(grad_output, upsampled_input(input, g.up),
                                                weight, stride, padding, mode, output_mask,
                                                output, activation, 1);
      return {output_mask[0] ? fold_upsampled_grad(gi, g.up) : gi, gw, gb};
    }
  }
  // relu's backward, grad_output where output > 0 else 0: one masked pass (the copy the unfused
  // relu's backward would make), before the gradient kernels.
  const auto gy_in = grad_output.contiguous(fmt);
  const Algorithm input_grad_algorithm =
      output_mask[0] && gy_in.numel() > 0 ? input_grad_algorithm_for(g, input.scalar_type())
                                          : Algorithm::kLibrary;
  // Only a channels-last, zero-padded Winograd input gradient is asked for (a frozen layer, e.g.
  // the loss network's; other paddings fix the border from grad_output afterwards): relu's mask
  // is applied as the Winograd input transform loads grad_output, no masked copy.
  at::Tensor gate;
  if (activation == kRelu && mode == kZeros && input_grad_algorithm == Algorithm::kWinograd &&
      !output_mask[1] && !output_mask[2] && gy_in.stride(1) == 1) {
    auto gate_candidate = output->contiguous(fmt);
    if (same_strides(gate_candidate, gy_in)) gate = gate_candidate;
  }
  const bool gate_in_winograd = gate.defined();
  const auto gy = activation == kRelu && !gate_in_winograd
                      ? at::threshold_backward(gy_in, *output, 0).contiguous(fmt)
                      : gy_in;
  auto none = at::empty({0}, input.options());
  at::Tensor grad_input, grad_weight, grad_bias;
  std::array<bool, 3> library_mask = output_mask;
  // Our weight gradient reads through the padding map: no border correction for it after.
  const Algorithm weight_grad_algorithm =
      output_mask[1] && gy.numel() > 0 && input.numel() > 0
          ? weight_grad_algorithm_for(g, input.scalar_type())
          : Algorithm::kLibrary;
  const bool own_weight_grad = weight_grad_algorithm != Algorithm::kLibrary;
  if (own_weight_grad || (g.up > 1 && output_mask[2])) {
    // (With folded upsampling the library sees no input of the geometry's size: bias here.)
    library_mask[1] = library_mask[2] = false;
    if (output_mask[2]) grad_bias = gy.sum(at::IntArrayRef{0, 2, 3});
  }
  // Folded upsampling by 2 or 4: Winograd sums each up x up block of the upsampled input's
  // gradient as it stores it, so grad_input is the small input's from the start.
  const int64_t input_pool =
      g.up > 1 && input_grad_algorithm == Algorithm::kWinograd && 4 % g.up == 0 ? g.up : 1;
  if (input_grad_algorithm != Algorithm::kLibrary) {
    library_mask[0] = false;
    const Geometry d = input_grad_geometry(g);
    grad_input = at::empty({g.n, g.c, g.h / input_pool, g.w / input_pool},
                           input.options().memory_format(fmt));
    if (input_grad_algorithm == Algorithm::kWinograd) {
      winograd_input_grad(gy, weight, d, grad_input, gate, input_pool);
    } else {
      const auto flipped = weight.transpose(0, 1).flip({2, 3});  // (C, O, KH, KW)
      direct_fwd(gy, flipped, at::Tensor(), d, kZeros, grad_input);
    }
  }
  if (library_mask[0] || library_mask[1] || library_mask[2]) {
    auto [library_grad_input, library_grad_weight, library_grad_bias] =
        library_bwd_zero_padded(gy, input, weight.contiguous(fmt), g, library_mask);
    if (library_mask[0]) grad_input = library_grad_input;
    if (library_mask[1]) grad_weight = library_grad_weight;
    if (library_mask[2]) grad_bias = library_grad_bias;
  }
  const bool fix = mode != kZeros && (g.ph > 0 || g.pw > 0) && gy.numel() > 0;
  if (output_mask[0]) grad_input = in_format(grad_input, fmt);
  at::Tensor grad_weight_acc;
  const bool fix_weight = output_mask[1] && !own_weight_grad;
  if (own_weight_grad) {
    grad_weight_acc = weight_grad_algorithm == Algorithm::kWinograd
                          ? wgrad_winograd(gy, input, g, mode)
                          : wgrad(gy, input, g, mode);
  } else if (output_mask[1]) {
    // Corrections are summed in float32 (float64 for float64), rounded once at the end.
    grad_weight_acc = grad_weight.to(acc_type_of(input.scalar_type())).contiguous();
  }
  if (fix && (output_mask[0] || fix_weight)) {
    at::Tensor ring_grad_input = output_mask[0] ? grad_input : at::Tensor();
    at::Tensor ring_grad_weight = fix_weight ? grad_weight_acc : at::Tensor();
    // Folded upsampling: no weight fix here (Winograd's), and the ring terms go to the
    // upsampled input's gradient, which stands in for the input (its layout and dtype).
    fix_backward_border(gy, g.up > 1 ? grad_input : input, weight, g, mode, ring_grad_input,
                        ring_grad_weight, input_pool);
  }
  if (output_mask[0] && g.up > 1 && input_pool == 1)
    grad_input = fold_upsampled_grad(grad_input, g.up);
  if (output_mask[1]) grad_weight = grad_weight_acc.to(input.scalar_type()).contiguous();
  return {output_mask[0] ? grad_input : none, output_mask[1] ? grad_weight : none.clone(),
          output_mask[2] ? grad_bias.contiguous() : none.clone()};
}

// Which algorithm a call with these (already checked) arguments runs: for the forward, or with
// input_grad / weight_grad for the backward's input / weight gradient ("direct" for the
// weight-gradient kernel of padded_conv_cpu_wgrad.cpp, "winograd" for
// padded_conv_cpu_wgrad_winograd.cpp's). Sizes rather than tensors, so that Python can
// ask while torch.compile traces with fake tensors.
std::string padded_conv2d_cpu_algorithm(at::IntArrayRef input_size, at::IntArrayRef weight_size,
                                        at::ScalarType dtype, bool channels_last,
                                        at::IntArrayRef stride, at::IntArrayRef padding,
                                        int64_t mode, bool input_grad, bool weight_grad,
                                        int64_t upsample) {
  TORCH_CHECK(input_size.size() == 4 && weight_size.size() == 4 && stride.size() == 2 &&
                  padding.size() == 2,
              "padded_conv2d_cpu_algorithm: expected 4 input sizes, 4 weight sizes, 2 strides "
              "and 2 paddings");
  check_upsample("padded_conv2d_cpu_algorithm", upsample);
  // With upsampling: the upsampled (virtual) input's geometry, as the op sees it.
  const int64_t h = input_size[2] * upsample, w = input_size[3] * upsample;
  Geometry g{input_size[0], input_size[1], h, w,
             weight_size[0], weight_size[2], weight_size[3],
             stride[0], stride[1], padding[0], padding[1],
             (h + 2 * padding[0] - weight_size[2]) / stride[0] + 1,
             (w + 2 * padding[1] - weight_size[3]) / stride[1] + 1, channels_last, upsample};
  (void)mode;  // every algorithm handles every mode
  TORCH_CHECK(!(input_grad && weight_grad),
              "padded_conv2d_cpu_algorithm: ask for input_grad or weight_grad, not both");
  if (weight_grad) return algorithm_name(weight_grad_algorithm_for(g, dtype));
  return algorithm_name(input_grad ? input_grad_algorithm_for(g, dtype) : algorithm_for(g, dtype));
}

}  // namespace

Geometry check_conv_args(const char* fn, const at::Tensor& input, const at::Tensor& weight,
                         const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, int64_t mode, int64_t up) {
  return check_args(fn, input, weight, bias, stride, padding, mode, up);
}

Algorithm forward_algorithm(const Geometry& g, at::ScalarType dtype) {
  return algorithm_for(g, dtype);
}

TORCH_LIBRARY_IMPL(stylize_fast, CPU, m) {
  m.impl("padded_conv2d_fwd", &padded_conv2d_fwd_cpu);
  m.impl("padded_conv2d_bwd", &padded_conv2d_bwd_cpu);
}

// Introspection for tests and benchmarks: the algorithm a CPU call would run.
TORCH_LIBRARY_FRAGMENT(stylize_fast, m) {
  m.def("padded_conv2d_cpu_algorithm(int[] input_size, int[] weight_size, ScalarType dtype, "
        "bool channels_last, int[2] stride, int[2] padding, int padding_mode, "
        "bool input_grad=False, bool weight_grad=False, int upsample=1) -> str",
        &padded_conv2d_cpu_algorithm);
}

}  // namespace padded_conv_cpu
}  // namespace stylize_fast
