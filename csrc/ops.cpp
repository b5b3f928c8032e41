// Operator schemas of stylize_fast: declared once, here. Each backend registers its kernels in
// its own translation unit with TORCH_LIBRARY_IMPL(stylize_fast, CPU|CUDA, m):
//   csrc/cpu/instance_norm_cpu.cpp     csrc/cuda/instance_norm_cuda.cpp (+ .cu)
//   csrc/cpu/padded_conv_cpu.cpp       csrc/cuda/padded_conv_cuda.cpp   (+ .cu)
//   csrc/cpu/gram_cpu.cpp, csrc/cpu/mse_cpu.cpp   (CPU only)
// csrc/autograd.cpp registers autograd (Autograd key); Python (stylize_fast/ops/*.py) adds
// register_fake.
//
// Conventions shared by every backend (see docs/design.md):
//   activation:   0 = none, 1 = relu, 2 = leaky_relu (negative_slope used only by 2)
//   padding_mode: 0 = zeros, 1 = reflect, 2 = replicate
//   padded_conv2d's activation: 0 = none, 1 = relu (applied in the kernels' output store; its
//     backward masks grad_output with output > 0, so it takes the forward's output; 2 is
//     reserved for leaky_relu, not implemented yet)
//   padded_conv2d's upsample: nearest upsampling of the input by this integer factor before the
//     padding (upsample_nearest2d's index rule, source = virtual // upsample); 1 = none. The CPU
//     kernel folds it into the input read where its algorithm reads through index maps
//     (Winograd's forward and weight gradient); other paths upsample first
//     (csrc/padded_conv_upsample.h). grad_input has the (small) input's shape.
//   statistics (mean, rstd) are float32, float64 for float64 input, shape (N, C)
//   weight / bias reach kernels already contiguous and in the statistics dtype, shape (C,) or (N, C)
//   outputs are allocated as at::empty_like(input, input.suggest_memory_format())
//   gradients not asked for in output_mask come back as empty tensors of shape (0,)
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import stylize_fast._C` loads this shared library, which runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "stylize_fast operator library", -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(stylize_fast, m) {
  m.def(
      "instance_norm_fwd(Tensor input, Tensor? weight, Tensor? bias, float eps, int activation, "
      "float negative_slope) -> (Tensor output, Tensor mean, Tensor rstd)");
  m.def(
      "instance_norm_bwd(Tensor grad_output, Tensor input, Tensor? weight, Tensor? bias, "
      "Tensor mean, Tensor rstd, int activation, float negative_slope, bool[3] output_mask) "
      "-> (Tensor grad_input, Tensor grad_weight, Tensor grad_bias)");
  m.def(
      "padded_conv2d_fwd(Tensor input, Tensor weight, Tensor? bias, int[2] stride, "
      "int[2] padding, int padding_mode, int activation=0, int upsample=1) -> Tensor");
  m.def(
      "padded_conv2d_bwd(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[2] padding, int padding_mode, bool[3] output_mask, Tensor? output=None, "
      "int activation=0, int upsample=1) -> (Tensor grad_input, Tensor grad_weight, "
      "Tensor grad_bias)");
  // Normalize-on-load convolution (stylize_fast/ops/norm_conv.py has the full contract):
  //   out = act(conv2d(pad(up(act_in(input * scale[n, c] + shift[n, c])))) + bias + residual)
  // scale / shift: (N, C) in the statistics dtype, or both absent (a plain convolution); zero
  // padding pads the normalised tensor (stays 0). input_activation: 0 none, 1 relu, 2
  // leaky_relu (negative_slope); activation: 0 none, 1 relu (after the residual). upsample:
  // nearest, stride 1 only. stats_eps >= 0: mean and rstd = 1 / sqrt(var + stats_eps) of out
  // ((N, O), statistics dtype, biased variance), else both (0,).
  m.def(
      "norm_conv2d_fwd(Tensor input, Tensor? scale, Tensor? shift, int input_activation, "
      "float negative_slope, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int padding_mode, int activation, int upsample, Tensor? residual, float stats_eps) -> "
      "(Tensor output, Tensor mean, Tensor rstd)");
  // The instance norm from known per-(n, c) scale / shift (the norm_conv2d map) plus an optional
  // residual of the input's shape: out = act(input * scale + shift) + residual (CPU).
  m.def(
      "instance_norm_apply(Tensor input, Tensor scale, Tensor shift, int activation, "
      "float negative_slope, Tensor? residual) -> Tensor");
  // Instance-norm statistics alone (one read): mean and rstd = 1 / sqrt(var + eps), (N, C).
  m.def("instance_norm_stats(Tensor input, float eps) -> (Tensor mean, Tensor rstd)");
  // The Gram matrix of channels-last bfloat16 features in float32 (the style loss under bfloat16
  // autocast; CPU): gram_bf16(F) = F F^T (N, C, C); gram_bf16_backward(M, F) = M^T F in F's
  // dtype and layout (csrc/cpu/gram_cpu.cpp, stylize_fast/ops/gram.py).
  m.def("gram_bf16(Tensor features) -> Tensor");
  m.def("gram_bf16_backward(Tensor m, Tensor features) -> Tensor");
  // Mean squared error of two bfloat16 tensors as a float32 scalar (the content loss under
  // bfloat16 autocast; CPU): mse_bf16_backward(grad, a, b) = grad * 2 (a - b) / numel in a's
  // dtype and layout (csrc/cpu/mse_cpu.cpp, stylize_fast/ops/mse.py).
  m.def("mse_bf16(Tensor a, Tensor b) -> Tensor");
  m.def("mse_bf16_backward(Tensor grad, Tensor a, Tensor b) -> Tensor");
  // True when this library was compiled with the CUDA kernels (csrc/cuda).
  m.def("compiled_with_cuda() -> bool", []() -> bool {
#ifdef STYLIZE_FAST_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
}
