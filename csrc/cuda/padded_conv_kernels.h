// Interface between the CUDA device code of the fused padded convolution
// (padded_conv_kernels.cu, compiled by nvcc WITHOUT torch headers) and its torch binding
// (padded_conv_cuda.cpp). Plain C++ types only.
//
// Algorithm (the same as stylize_fast/ops/padded_conv_triton.py): implicit GEMM on 64x64 tiles
// staged through shared memory, 256 threads each accumulating a 4x4 micro-tile in fp32 (fp64 for
// float64). The padding is applied by the loads through the padding index map
// (reflect i<0 -> -i, i>=H -> 2H-2-i; replicate clamps; zeros masks); no padded tensor is built.
//   forward      : M = (n, oh, ow), N = c_out, K = (kh, kw, c_in)
//   input grad   : M = (n, h, w),   N = c_in,  K = (variant, kh, kw, c_out): every input pixel
//                  gathers the gradient of each padded coordinate the index map sends to it
//                  (itself, and at the border its mirrored / replicated coordinates); border
//                  variants no pixel of a tile receives are skipped tile-wide. One writer per
//                  element, fixed order: deterministic, no atomics.
//   activation   : relu in the forward's store; the backward kernels read grad_output through
//                  the mask output > 0 (ConvShape::activation / out).
//   upsample     : nearest upsampling folded into the loads (ConvShape::up): h, w are the
//                  upsampled sizes, a source coordinate i reads stored pixel i / up; the input
//                  gradient's rows are the stored pixels, each gathering for the up x up
//                  upsampled pixels that repeat it (no upsampled tensor or gradient is built).
//   weight grad  : M = c_out, N = (c_in, kh, kw), K = (n, oh, ow) split into `splits` ranges;
//                  each block writes its partial, the binding sums them in a fixed order. The
//                  bias gradient comes from the same grad_output tiles.
//   norm conv    : the forward with the instance norm of its input applied by the loads
//                  (norm_conv2d_fwd, NormArgs): a real pixel's element (reflect / replicate
//                  included) becomes act_in(x * scale[n, c] + shift[n, c]) in the accumulation
//                  type, zero padding stays 0; the epilogue adds bias, then the residual, then
//                  relu. Output statistics: each block writes, per image its 64 rows touch and
//                  per column, the count, mean and M2 of its stored outputs (centred within the
//                  block); norm_conv2d_stats merges an image's tiles in tile order, in
//                  float64 (Chan's formula, k-way form). The algorithm of
//                  stylize_fast/ops/norm_conv_triton.py, whose tiles never straddle images.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace stylize_fast {
namespace cuda {
namespace conv {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// Tile sizes of every kernel (M x N x K per step) and threads per block.
constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 16;
constexpr int kThreads = 256;

// Sizes, element strides (N, C, H, W order) and padding of one convolution. Pixel counts
// (n * h * w, n * oh * ow) must fit in int32: the binding checks it.
struct ConvShape {
  int64_t n, c_in, h, w, c_out, oh, ow;
  int kh, kw, stride_h, stride_w, pad_h, pad_w;
  int mode;                 // 0 zeros, 1 reflect, 2 replicate
  int64_t x_stride[4];      // input / grad_input
  int64_t w_stride[4];      // weight (c_out, c_in, kh, kw)
  int64_t y_stride[4];      // output / grad_output
  // Activation (csrc/ops.cpp): 0 none, 1 relu. Forward: applied to each output as it is
  // stored. Backward: grad_output counts only where the forward's output (out, element strides
  // o_stride, grad_output's shape) is > 0, masked as it is loaded (no masked copy).
  int activation;
  const void* out;
  int64_t o_stride[4];
  // Nearest upsampling folded into the loads: h and w above are the upsampled sizes, x_stride
  // (and grad_input) the stored input's of (h / up, w / up). 0 or 1: none.
  int up;
};

// How the weight gradient's reduction over (n, oh, ow) is split: `splits` blocks along z, each
// reducing `rows` (a multiple of kTileK) rows. A function of the shape only (deterministic).
struct WeightSplit {
  int splits;
  int64_t rows;
};
WeightSplit weight_split(const ConvShape& s);

// Every launcher returns the launch status (cudaGetLastError after each launch).
// bias may be nullptr.
cudaError_t padded_conv2d_forward(DType dtype, const ConvShape& s, const void* x, const void* w,
                                  const void* bias, void* y, cudaStream_t stream);
cudaError_t padded_conv2d_backward_input(DType dtype, const ConvShape& s, const void* grad_y,
                                         const void* w, void* grad_x, cudaStream_t stream);
// weight_partial: (splits, c_out, c_in, kh, kw) contiguous, float (double for kFloat64);
// bias_partial: (splits, c_out) of the same dtype, or nullptr to skip the bias gradient.
cudaError_t padded_conv2d_backward_weight(DType dtype, const ConvShape& s,
                                          const WeightSplit& split, const void* grad_y,
                                          const void* x, void* weight_partial,
                                          void* bias_partial, cudaStream_t stream);

// The normalize-on-load forward's extra arguments (ConvShape::activation is the output's; its
// `out` / o_stride are unused). Statistics arrays are in the accumulation type: float, double
// for kFloat64.
struct NormArgs {
  const void* scale = nullptr;  // (n, c_in) contiguous, or nullptr: a plain convolution
  const void* shift = nullptr;  // (n, c_in) contiguous (with scale)
  int input_activation = 0;     // 0 none, 1 relu, 2 leaky_relu(negative_slope); needs scale
  double negative_slope = 0.0;
  const void* residual = nullptr;  // output's shape and dtype, element strides r_stride; or null
  int64_t r_stride[4] = {0, 0, 0, 0};
  // nullptr: no statistics. Else (stat_slots(s), c_out) x {count, mean, m2}: the partial of
  // tile t (64 output pixels) and image n is slot t + n. A slot where an image starts exactly
  // at a tile start is never written (and never read).
  void* stats_partial = nullptr;
};
int64_t stat_slots(const ConvShape& s);

// y = act(conv(pad(up(act_in(x * scale + shift)))) + bias + residual); with a.stats_partial,
// the per-tile partials of y's statistics (merge them with norm_conv2d_stats).
cudaError_t norm_conv2d_forward(DType dtype, const ConvShape& s, const NormArgs& a,
                                const void* x, const void* w, const void* bias, void* y,
                                cudaStream_t stream);
// mean, rstd = 1 / sqrt(var + eps): (n, c_out) in the accumulation type, biased variance,
// each from its image's partials merged in tile order in float64 (deterministic, no atomics).
cudaError_t norm_conv2d_stats(DType dtype, const ConvShape& s, const void* stats_partial,
                              double eps, void* mean, void* rstd, cudaStream_t stream);

}  // namespace conv
}  // namespace cuda
}  // namespace stylize_fast
