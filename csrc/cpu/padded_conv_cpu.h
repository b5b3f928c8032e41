// Shared by the CPU padded-convolution files:
//   padded_conv_cpu.cpp           the op (argument checks, algorithm choice, forward and
//                                 backward entry points) and its registration;
//   padded_conv_cpu_library.cpp   the library algorithm: oneDNN with zero padding plus the
//                                 border fix-up, forward and backward;
//   padded_conv_cpu_direct.cpp    direct kernel: few output channels (Johnson's last 9x9 32->3
//                                 layer, which the library runs far below peak), few input
//                                 channels with large kernels (the first 9x9 3->32 layer), and
//                                 float32 stride-2 layers in NCHW;
//   padded_conv_cpu_winograd.cpp  Winograd F(4x4, 3x3) for 3x3 stride-1 layers;
//   padded_conv_cpu_wgrad.cpp     the backward's weight gradient for few output channels;
//   padded_conv_cpu_wgrad_winograd.cpp  the backward's weight gradient for 3x3 stride-1 layers.
// The three kernels' vector code lives in padded_conv_cpu_{direct,winograd,wgrad}_kernels.h,
// compiled once per instruction-set level (cpu/cpu_isa_kernels.h).
// The kernels read the input through the padding index map (source_index) while they pack
// it, so no padded tensor exists at any point.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <tuple>
#include <utility>

namespace stylize_fast {
namespace padded_conv_cpu {

constexpr int64_t kZeros = 0, kReflect = 1, kReplicate = 2;
// The activation applied to the output (csrc/ops.cpp): none or relu.
constexpr int64_t kNoActivation = 0, kRelu = 1;

struct Geometry {
  int64_t n, c, h, w;      // input
  int64_t o, kh, kw;       // weight (O, C, KH, KW)
  int64_t sh, sw, ph, pw;  // stride, padding
  int64_t ho, wo;          // output
  bool channels_last;      // the input's suggested memory format is channels_last
  // Nearest upsampling folded into the input read: h and w above are then the upsampled
  // ("virtual") sizes, and the kernels read source pixel (virtual index) / up through the
  // index maps (source_index below). Only Winograd's forward and weight gradient read through
  // such maps alone; elsewhere padded_conv_cpu.cpp upsamples first.
  int64_t up = 1;
};

// Source index of padded coordinate i (0 <= i < size + 2 * pad) under reflect / replicate;
// for zeros, -1 when the coordinate lies in the padding.
inline int64_t source_index(int64_t i, int64_t pad, int64_t size, int64_t mode) {
  int64_t r = i - pad;
  if (r >= 0 && r < size) return r;
  if (mode == kZeros) return -1;
  if (mode == kReflect) {
    if (r < 0) r = -r;
    if (r >= size) r = 2 * (size - 1) - r;
    return r;
  }
  return r < 0 ? 0 : size - 1;
}

// The same for a virtual input upsampled `up` times (nearest) from a source of size / up:
// the source pixel that virtual pixel repeats.
inline int64_t source_index(int64_t i, int64_t pad, int64_t size, int64_t mode, int64_t up) {
  const int64_t r = source_index(i, pad, size, mode);
  return r < 0 ? r : r / up;
}

// The forward algorithms; padded_conv2d_fwd_cpu picks one per call (algorithm_for).
enum class Algorithm { kLibrary, kDirect, kWinograd };

// Argument checks of the padded convolution (its public op and norm_conv2d's) and the geometry
// they imply (upsampled sizes when up > 1); the forward algorithm for a geometry.
Geometry check_conv_args(const char* fn, const at::Tensor& input, const at::Tensor& weight,
                         const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, int64_t mode, int64_t up = 1);
Algorithm forward_algorithm(const Geometry& g, at::ScalarType dtype);

// Normalize-on-load (norm_conv2d, csrc/cpu/norm_conv_cpu.cpp): the kernels read every input
// pixel x (reflect / replicate padding included) as act(x * scale[n, c] + shift[n, c]), in
// float32; zero padding stays 0 (it pads the normalised tensor). scale == nullptr: none.
struct LoadNorm {
  const float* scale = nullptr;  // (N, C) contiguous
  const float* shift = nullptr;
  int64_t activation = 0;        // 0 none, 1 relu, 2 leaky_relu
  float slope = 0.01f;
  bool active() const { return scale != nullptr; }
  float apply(float x, int64_t nc) const {
    const float v = x * scale[nc] + shift[nc];
    // As torch.relu / leaky_relu: NaN passes through.
    return activation == 1 ? (v < 0.f ? 0.f : v) : activation == 2 ? (v < 0.f ? v * slope : v) : v;
  }
};

// Winograd's epilogue extras (norm_conv2d): a residual added before the activation, and the
// per-(n, o) statistics of the stored outputs. Statistics are gathered per piece of work
// (shifted sums in float32 around the piece's first output) and merged per image in piece order
// with Chan's formula in float64: deterministic whatever thread ran which piece.
struct Epilogue {
  const void* residual = nullptr;  // the output's dtype and shape, strides rs
  int64_t rs[4] = {0, 0, 0, 0};
  bool stats = false;
  double eps = 0.0;
  at::Tensor mean, rstd;  // outputs with stats: (N, O) float32
};

// The library algorithm (padded_conv_cpu_library.cpp). library_fwd: the whole forward, output
// in the input's suggested memory format. library_bwd_zero_padded: at::convolution_backward
// with zero padding for the gradients in mask (bias: the sum of gy). fix_backward_border adds
// the padding ring's share (B^T G folded onto the source pixels, and G(border)^T B(patches))
// to grad_input / grad_weight_acc ((O, C, KH, KW) contiguous, acc_type_of dtype); either may
// be undefined.
at::Tensor library_fwd(const at::Tensor& input, const at::Tensor& weight,
                       const c10::optional<at::Tensor>& bias, const Geometry& g, int64_t mode);
std::tuple<at::Tensor, at::Tensor, at::Tensor> library_bwd_zero_padded(
    const at::Tensor& gy, const at::Tensor& input, const at::Tensor& weight, const Geometry& g,
    std::array<bool, 3> mask);
// pool > 1: grad_input is the small input's of a folded upsampling (g.up = pool); a ring term
// of virtual pixel (r, c) is added to pixel (r / pool, c / pool).
void fix_backward_border(const at::Tensor& gy, const at::Tensor& input, const at::Tensor& weight,
                         const Geometry& g, int64_t mode, at::Tensor& grad_input,
                         at::Tensor& grad_weight_acc, int64_t pool = 1);
// t with the canonical strides of fmt (size-1 dims included, as at::empty makes them).
at::Tensor in_format(const at::Tensor& t, at::MemoryFormat fmt);
// Where sums and corrections accumulate: float64 for float64, else float32.
at::ScalarType acc_type_of(at::ScalarType t);

// Direct kernel (padded_conv_cpu_direct.cpp): whether it handles this geometry and dtype and
// beats the library there (measured rule, see the file).
bool direct_applies(const Geometry& g, at::ScalarType dtype);
// Whether it can run the layer at all (stride 1 or 2, at most 256 outputs, rows that fit):
// norm_conv2d runs it where the library would need the padded normalised input built first.
bool direct_supports(const Geometry& g, at::ScalarType dtype);
// out: (N, O, HO, WO), preallocated in the input's suggested memory format; every element is
// written. bias may be undefined. activation (kNoActivation / kRelu) is applied as outputs are
// stored.
void direct_fwd(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                const Geometry& g, int64_t mode, at::Tensor& out,
                int64_t activation = kNoActivation, const LoadNorm& norm = LoadNorm(),
                float* row_stats = nullptr);
// row_stats (norm_conv2d): (N * HO) x 3 O floats, per output row and channel its first stored
// value K, sum (v - K), sum (v - K)^2 (merged by merge_row_statistics).
void merge_row_statistics(const float* row_stats, const Geometry& g, double eps,
                          at::Tensor& mean, at::Tensor& rstd);

// Winograd F(4x4, 3x3) (padded_conv_cpu_winograd.cpp), same contract; winograd_applies says
// whether it can run (3x3, stride 1, float32 / bfloat16), winograd_pays whether it beats the
// library.
bool winograd_applies(const Geometry& g, at::ScalarType dtype);
// folded_upsample: the layer's input is upsampled in the read (the forward's g.up > 1, or the
// input gradient of such a layer, whose own geometry has up = 1).
bool winograd_pays(const Geometry& g, at::ScalarType dtype, bool folded_upsample = false);
// With norm / epi (norm_conv2d): the input read through the norm, the epilogue's residual
// and statistics (epi->mean, epi->rstd filled when epi->stats).
void winograd_fwd(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                  const Geometry& g, int64_t mode, at::Tensor& out,
                  int64_t activation = kNoActivation, const LoadNorm& norm = LoadNorm(),
                  Epilogue* epi = nullptr);
// The backward's zero-padded input gradient (d = input_grad_geometry(g)): winograd_fwd of
// grad_output with the transposed, flipped weight, read in place from weight (O, C, 3, 3).
// Whether a and b (same sizes) address their elements alike: equal strides wherever a size is
// above 1 (a size-1 dimension's stride never multiplies a non-zero index).
bool same_strides(const at::Tensor& a, const at::Tensor& b);
// pool > 1 (2 or 4; an input gradient of a folded upsampling, d's output being the upsampled
// input): grad_input is the small input's, each pool x pool block summed as it is stored.
void winograd_input_grad(const at::Tensor& grad_output, const at::Tensor& weight,
                         const Geometry& d, at::Tensor& grad_input,
                         const at::Tensor& gate = at::Tensor(), int64_t pool = 1);

// Weight gradient for few output channels (padded_conv_cpu_wgrad.cpp), read through the padding
// index map: wgrad_applies says whether it handles the layer and beats the library there;
// wgrad returns dW (O, C, KH, KW), contiguous, in float32 (float64 for float64 input).
bool wgrad_applies(const Geometry& g, at::ScalarType dtype);
at::Tensor wgrad(const at::Tensor& grad_output, const at::Tensor& input, const Geometry& g,
                 int64_t mode);

// Weight gradient of 3x3 stride-1 layers by Winograd F(4x4, 3x3)
// (padded_conv_cpu_wgrad_winograd.cpp), same contract as wgrad (float32 / bfloat16 tensors):
// wgrad_winograd_applies says whether it can run, wgrad_winograd_pays whether it beats the
// library.
bool wgrad_winograd_applies(const Geometry& g, at::ScalarType dtype);
bool wgrad_winograd_pays(const Geometry& g, at::ScalarType dtype);
at::Tensor wgrad_winograd(const at::Tensor& grad_output, const at::Tensor& input,
                          const Geometry& g, int64_t mode);

}  // namespace padded_conv_cpu
}  // namespace stylize_fast
