// Direct kernel of the CPU padded convolution, for layers the library (oneDNN) runs below its
// usual rate: few output channels (Johnson's last layer: 9x9, 32 -> 3, reflect pad 4), few input
// channels (Johnson's first layer: 9x9, 3 -> 32) and stride-2 layers on NCHW input (Johnson's
// downsampling 3x3 convolutions); direct_applies has the measured rule.
//
// Work: at::parallel_for over the flattened (n, output row) range. Each task keeps a ring of the
// KH padded input rows its current output row reads, per input channel, as float32 rows: packing
// a row applies the padding (every read goes through source_index) and the dtype conversion,
// and each input row is packed once per task. For stride 2 a packed row is two planes of stride
// pld, the even padded columns then the odd ones (each followed by a zero tail), so that tap kx
// of output columns j, j + 1, ... reads plane kx % 2 at j + kx / 2, ...: contiguous loads as at
// stride 1 (one plane, the padded row itself). Output row y reads padded rows y SH .. y SH +
// KH - 1; the ring advances by SH rows per output row. While an output row is computed, the
// source rows the next one adds are prefetched a few cache lines after each column block.
//
// Two register blockings; both keep og x V vector accumulators in registers while the loop runs
// over the (c, ky) rows and kx, for a group of og output channels (the output channels are split
// into groups, sizes differing by at most one; every group reads the same packed rows, packed
// once per row; a group's weights, [C][KH][KW][og], stay in L1 while it sweeps the row):
//  - output columns in lanes (any output): a block is og <= kMaxGroup channels x V vectors of
//    output columns; each step one unaligned load per vector of inputs and one FMA per
//    (o, vector) with a broadcast weight. The accumulators go to a row tile of all O channels,
//    written through out's strides (channels_last: transposed in registers) once the row is done.
//  - output channels in lanes (channels_last output, O a multiple of 16 floats): a block is
//    og = V vectors of channels x P pixels; each step one load per vector of weights and one
//    broadcast per pixel. The pixels go straight to the output, channels contiguous.
// The accumulators start at the bias and are rounded to the output dtype once (after the
// activation, when there is one). Outputs of
// kStreamBytes or more are written with non-temporal stores where those fill whole cache lines.
//
// Instruction sets: the kernel body (padded_conv_cpu_direct_kernels.h) is compiled once per
// level by cpu/cpu_isa_kernels.h: baseline (4-lane vectors), AVX2 + FMA + F16C (8 lanes),
// AVX-512 (16 lanes). cpu_isa_level() picks the copy per call (cpu/cpu_isa.h;
// STYLIZE_FAST_CPU_ISA caps it).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "cpu/cpu_isa.h"
#include "cpu/padded_conv_cpu.h"

namespace stylize_fast {
namespace padded_conv_cpu {
namespace {

// Most output channels the direct kernel takes (split into register-sized groups; measured up
// to 256), and up to how many it takes whatever the other dimensions (one register block at
// AVX-512).
constexpr int64_t kMaxOut = 256;
constexpr int64_t kFewOut = 8;
// Per-thread packed rows (C x KH x ld floats) above this go to the library instead.
constexpr int64_t kMaxRingBytes = int64_t(64) << 20;
// A parallel task gets at least this many multiply-adds.
constexpr int64_t kMinTaskFmas = int64_t(1) << 20;

enum class DType { kFloat, kBFloat16, kHalf };

struct Job {
  Geometry g;
  int64_t mode;
  DType dtype;
  const void* x;
  int64_t xs[4];  // input strides (elements)
  void* y;
  int64_t ys[4];  // output strides
  const float* w;          // per group k: [C][KH][KW][og] at w + o0(k) * C * KH * KW
  const float* bias;       // [O]
  const int64_t* groups;   // [ngroups + 1]: group k is output channels [groups[k], groups[k+1])
  int64_t ngroups;
  const int64_t* src_col;  // [wread]: source column of each padded column, -1 for zero
  const int64_t* xoff;     // [KW]: where tap kx starts in a packed row, (kx % SW) pld + kx / SW
  int64_t wread;           // padded columns any output reads: (WO - 1) SW + KW
  int64_t pld;             // stride of one plane (multiple of 16), past the zero tail
  int64_t ld;              // stride of a packed row: SW planes
  bool stream;             // write the output around the caches (non-temporal stores)
  bool lanes;              // output channels in vector lanes (channels_last output)
  bool relu;               // max(0, .) on the outputs as they are stored
  LoadNorm norm;           // normalize-on-load (norm_conv2d): applied to each packed row
  float* row_stats;        // norm_conv2d's epilogue: per output row statistics, or nullptr
};

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Most output columns one block of the channels-in-lanes kernel computes.
constexpr int64_t kMaxPixels = 24;

int64_t plane_stride(const Geometry& g) {
  // The last column block may run past WO by up to one vector (16 lanes at most), or one block
  // of pixels; its loads stay inside the plane and read the zero tail.
  return round_up(round_up(g.wo, 16) + kMaxPixels + (g.kw - 1) / g.sw, 16);
}

int64_t packed_row_stride(const Geometry& g) { return g.sw * plane_stride(g); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// The kernel, once per instruction-set level.

namespace {

using RowsFn = void (*)(const Job&, int64_t, int64_t);

struct KernelTable {
  RowsFn rows;
  int64_t max_group;         // most output channels per register block
  int (*vectors)(int);       // vectors of output columns per block for a group of that many
  int64_t lanes;             // floats per vector
  bool stream;               // has non-temporal stores
  int64_t max_lane_vectors;  // channels-in-lanes kernel: most vectors of outputs per block
};

#define SF_ISA_BODY "cpu/padded_conv_cpu_direct_kernels.h"
#include "cpu/cpu_isa_kernels.h"

}  // namespace

// ---------------------------------------------------------------------------------------------
// Entry points

namespace {

// Largest group size for the output channels: kernel.max_group, or the largest size with one
// more vector per block where that wastes fewer accumulator slots on this layer -- partial
// groups (O not a multiple) and a partial last column block (WO not a multiple of the block).
int64_t group_size(const KernelTable& kernel, const Geometry& g) {
  const int64_t vectors = (g.wo + kernel.lanes - 1) / kernel.lanes;
  auto use = [&](int64_t cap) {  // fraction of the og x V slots doing useful work
    const int64_t ngroups = (g.o + cap - 1) / cap, size = (g.o + ngroups - 1) / ngroups;
    const int64_t v = kernel.vectors(static_cast<int>(size));
    const int64_t blocks = (vectors + v - 1) / v;
    return double(g.o) / double(ngroups * size) * double(vectors) / double(blocks * v);
  };
  const int v0 = kernel.vectors(static_cast<int>(kernel.max_group));
  int64_t alt = kernel.max_group;
  while (alt > 1 && kernel.vectors(static_cast<int>(alt)) == v0) --alt;
  return alt < kernel.max_group && use(alt) > use(kernel.max_group) + 1e-9 ? alt
                                                                          : kernel.max_group;
}

// Outputs of at least this many bytes go around the caches: the next layer reads them from
// memory anyway, and the write then costs no read for ownership.
constexpr int64_t kStreamBytes = int64_t(4) << 20;
// Fewest output channels for the channels-in-lanes kernel: with fewer the output-columns-in-
// lanes blocks run faster (measured on AVX2 and AVX-512, docs/benchmarks.md).
constexpr int64_t kLanesMinOut = 16;

}  // namespace

// Where the library keeps up (measured, 2 threads on an AVX-512 machine, Zen 4; the figures are
// in docs/benchmarks.md), the layer stays with it.
bool direct_supports(const Geometry& g, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf) return false;
  if (g.sh != g.sw || (g.sh != 1 && g.sh != 2)) return false;  // stride 1 or 2
  if (g.o < 1 || g.o > kMaxOut) return false;
  return g.c * g.kh * packed_row_stride(g) * int64_t(sizeof(float)) <= kMaxRingBytes;
}

bool direct_applies(const Geometry& g, at::ScalarType dtype) {
  if (!direct_supports(g, dtype)) return false;
  const bool half = dtype == at::kHalf;  // the library's float16 runs far slower
  // A 1x1 convolution of channels_last input is one GEMM for the library, mostly faster.
  if (g.channels_last && g.kh * g.kw == 1 && !half) return false;
  if (g.o <= kFewOut) {
    // The library runs few outputs at a fraction of its rate (stride 2 too),
    // but oneDNN's bfloat16 dot-product kernels on channels_last input reach this kernel's
    // float32 rate from 7 outputs on (stride 1).
    return !(g.channels_last && dtype == at::kBFloat16 && g.o > 6 && g.sh == 1);
  }
  // More outputs: the library runs near this kernel's rate, except from few input channels
  // with kernels of 5x5 and up (Johnson's first layer, 9x9 3 -> 32; 3x3 stride-1 layers stay
  // with Winograd / the library), and at stride 2 on NCHW input or from few input channels;
  // from 16 input channels on channels_last input at stride 2 it ties or wins. bfloat16:
  // oneDNN's dot products run at twice the float32 rate, faster than this kernel, except with
  // one input channel or few input channels at stride 2.
  const bool few_inputs = g.c <= 4;
  const bool stride2 = g.sh == 2;
  if (!stride2 && g.kh * g.kw < 25) return false;
  if (dtype == at::kBFloat16) return g.c == 1 || (stride2 && few_inputs);
  return few_inputs || (stride2 && (half || !g.channels_last));
}

void direct_fwd(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                const Geometry& g, int64_t mode, at::Tensor& out, int64_t activation,
                const LoadNorm& norm, float* row_stats) {
  TORCH_CHECK(direct_supports(g, input.scalar_type()), "padded_conv2d direct kernel: layer not "
              "handled (", g.o, " output channels, stride ", g.sh, "x", g.sw, ", dtype ",
              input.scalar_type(), ")");
  if (out.numel() == 0) return;
  const KernelTable& kernel = isa_kernel_table();
  // channels_last output with whole vectors of output channels: the channels-in-lanes kernel,
  // which writes pixels straight from its registers.
  const bool lanes = out.stride(1) == 1 && g.o % kernel.lanes == 0 && g.o >= kLanesMinOut;
  // Output-channel groups of at most max_group channels (lanes: whole vectors), sizes
  // differing by at most one (vector).
  const int64_t unit = lanes ? kernel.lanes : 1;
  const int64_t units = g.o / unit;
  const int64_t max_group = lanes ? kernel.max_lane_vectors : group_size(kernel, g);
  const int64_t ngroups = (units + max_group - 1) / max_group;
  std::vector<int64_t> groups(ngroups + 1);
  for (int64_t k = 0; k <= ngroups; ++k) groups[k] = k * units / ngroups * unit;
  // Weights as float, per group [C][KH][KW][og]: the og weights of one tap are adjacent for the
  // broadcasts, and a group's weights are contiguous.
  // Plain loops: small layers would otherwise spend more time in tensor ops than computing.
  std::vector<float> w(g.c * g.kh * g.kw * g.o), b(g.o, 0.f);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, weight.scalar_type(), "direct_fwd",
                                  [&] {
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    const auto ws = weight.strides();
    float* dst = w.data();
    for (int64_t k = 0; k < ngroups; ++k)
      for (int64_t c = 0; c < g.c; ++c)
        for (int64_t ky = 0; ky < g.kh; ++ky)
          for (int64_t kx = 0; kx < g.kw; ++kx)
            for (int64_t o = groups[k]; o < groups[k + 1]; ++o)
              *dst++ = static_cast<float>(wp[o * ws[0] + c * ws[1] + ky * ws[2] + kx * ws[3]]);
    if (bias.defined()) {
      const scalar_t* bp = bias.const_data_ptr<scalar_t>();
      for (int64_t o = 0; o < g.o; ++o) b[o] = static_cast<float>(bp[o * bias.stride(0)]);
    }
  });

  Job job{};
  job.g = g;
  job.mode = mode;
  job.dtype = input.scalar_type() == at::kFloat      ? DType::kFloat
              : input.scalar_type() == at::kBFloat16 ? DType::kBFloat16
                                                     : DType::kHalf;
  job.x = input.const_data_ptr();
  job.y = out.data_ptr();
  for (int d = 0; d < 4; ++d) {
    job.xs[d] = input.stride(d);
    job.ys[d] = out.stride(d);
  }
  job.wread = (g.wo - 1) * g.sw + g.kw;
  job.pld = plane_stride(g);
  job.ld = packed_row_stride(g);
  std::vector<int64_t> src_col(job.wread), xoff(g.kw);
  for (int64_t q = 0; q < job.wread; ++q) src_col[q] = source_index(q, g.pw, g.w, mode);
  for (int64_t kx = 0; kx < g.kw; ++kx) xoff[kx] = kx % g.sw * job.pld + kx / g.sw;
  job.w = w.data();
  job.bias = b.data();
  job.groups = groups.data();
  job.ngroups = ngroups;
  job.src_col = src_col.data();
  job.xoff = xoff.data();
  job.stream = kernel.stream && out.numel() * int64_t(out.element_size()) >= kStreamBytes;
  job.lanes = lanes;
  job.relu = activation == kRelu;
  job.norm = norm;
  job.row_stats = row_stats;
  // Statistics read each row back right after it is stored: keep it in cache.
  if (row_stats != nullptr) job.stream = false;

  // Each task re-packs the rows of its first output row's window: give it enough output rows
  // that this is a fraction, and enough work to pay for the parallel region.
  const int64_t row_fmas = std::max<int64_t>(1, g.c * g.kh * g.kw * g.o * g.wo);
  const int64_t grain =
      std::max((g.kh + g.sh - 1) / g.sh, (kMinTaskFmas + row_fmas - 1) / row_fmas);
  const RowsFn fn = kernel.rows;
  at::parallel_for(0, g.n * g.ho, grain,
                   [&](int64_t begin, int64_t end) { fn(job, begin, end); });
}

void merge_row_statistics(const float* row_stats, const Geometry& g, double eps,
                          at::Tensor& mean, at::Tensor& rstd) {
  mean = at::empty({g.n, g.o}, at::kFloat);
  rstd = at::empty({g.n, g.o}, at::kFloat);
  float* mp = mean.data_ptr<float>();
  float* rp = rstd.data_ptr<float>();
  const double nb = double(g.wo);
  std::vector<double> m(g.o), m2(g.o);
  for (int64_t n = 0; n < g.n; ++n) {
    std::fill(m.begin(), m.end(), 0.0);
    std::fill(m2.begin(), m2.end(), 0.0);
    double count = 0;
    for (int64_t y = 0; y < g.ho; ++y) {  // rows in order (Chan et al.): deterministic
      const float* k = row_stats + (n * g.ho + y) * 3 * g.o;
      const float* s1 = k + g.o;
      const float* s2 = s1 + g.o;
      const double total = count + nb;
      for (int64_t o = 0; o < g.o; ++o) {
        const double mb = double(k[o]) + double(s1[o]) / nb;
        const double m2b = std::max(0.0, double(s2[o]) - double(s1[o]) * double(s1[o]) / nb);
        const double delta = mb - m[o];
        m[o] += delta * nb / total;
        m2[o] += m2b + delta * delta * count * nb / total;
      }
      count = total;
    }
    for (int64_t o = 0; o < g.o; ++o) {
      mp[n * g.o + o] = float(m[o]);
      rp[n * g.o + o] = float(1.0 / std::sqrt(m2[o] / count + eps));
    }
  }
}

}  // namespace padded_conv_cpu
}  // namespace stylize_fast
