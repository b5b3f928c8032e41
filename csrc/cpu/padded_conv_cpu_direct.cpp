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
// The accumulators start at the bias and are rounded to the output dtype once. Outputs of
// kStreamBytes or more are written with non-temporal stores where those fill whole cache lines.
//
// Instruction sets: the kernel section at the bottom of this file is compiled three times (the
// file includes itself), each copy in its own namespace under `#pragma GCC target`: baseline
// (4-lane vectors), AVX2 + FMA + F16C (8 lanes), AVX-512 (16 lanes). cpu_isa_level() picks the
// copy per call (cpu/cpu_isa.h; STYLIZE_FAST_CPU_ISA caps it).
#ifndef SF_PADDED_CONV_DIRECT_BODY

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "cpu/cpu_isa.h"
#include "cpu/padded_conv_cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
// Vector values never cross a non-inlined call between levels; silence GCC's ABI note.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

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

#define SF_PADDED_CONV_DIRECT_BODY
namespace {

namespace isa_default {
#define SF_ISA_LEVEL 0
#include "padded_conv_cpu_direct.cpp"
#undef SF_ISA_LEVEL
}  // namespace isa_default

#if SF_MULTI_ISA
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace isa_avx2 {
#define SF_ISA_LEVEL 1
#include "padded_conv_cpu_direct.cpp"
#undef SF_ISA_LEVEL
}  // namespace isa_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
namespace isa_avx512 {
#define SF_ISA_LEVEL 2
#include "padded_conv_cpu_direct.cpp"
#undef SF_ISA_LEVEL
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

}  // namespace
#undef SF_PADDED_CONV_DIRECT_BODY

// ---------------------------------------------------------------------------------------------
// Entry points

namespace {

using RowsFn = void (*)(const Job&, int64_t, int64_t);

struct Kernel {
  RowsFn rows;
  int64_t max_group;         // most output channels per register block
  int (*vectors)(int);       // vectors of output columns per block for a group of that many
  int64_t lanes;             // floats per vector
  bool stream;               // has non-temporal stores
  int64_t max_lane_vectors;  // channels-in-lanes kernel: most vectors of outputs per block
};

Kernel rows_kernel() {
#if SF_MULTI_ISA
  const int level = cpu_isa_level();
  if (level >= 2)
    return {isa_avx512::run_rows, isa_avx512::kMaxGroup, isa_avx512::vectors_for, 16, true,
            isa_avx512::kMaxLaneVectors};
  if (level == 1)
    return {isa_avx2::run_rows, isa_avx2::kMaxGroup, isa_avx2::vectors_for, 8, true,
            isa_avx2::kMaxLaneVectors};
#endif
  return {isa_default::run_rows, isa_default::kMaxGroup, isa_default::vectors_for, 4, false,
          isa_default::kMaxLaneVectors};
}

// Largest group size for the output channels: kernel.max_group, or the largest size with one
// more vector per block where that wastes fewer accumulator slots on this layer -- partial
// groups (O not a multiple) and a partial last column block (WO not a multiple of the block).
int64_t group_size(const Kernel& kernel, const Geometry& g) {
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
// lanes blocks run faster (measured, AVX2: 8 outputs 0.85x, 32 and 64 outputs 1.03-1.09x;
// AVX-512: 16 outputs 1.0x, 32 outputs 1.02x).
constexpr int64_t kLanesMinOut = 16;

}  // namespace

// Where the library keeps up (measured, 2 threads on an AVX-512 machine, Zen 4:
// bench_direct_tmp.py, bench_direct2_tmp.py), the layer stays with it.
bool direct_applies(const Geometry& g, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf) return false;
  if (g.sh != g.sw || (g.sh != 1 && g.sh != 2)) return false;  // stride 1 or 2
  if (g.o < 1 || g.o > kMaxOut) return false;
  if (g.c * g.kh * packed_row_stride(g) * int64_t(sizeof(float)) > kMaxRingBytes) return false;
  const bool half = dtype == at::kHalf;  // the library's float16 runs 4-450x slower
  // A 1x1 convolution of channels_last input is one GEMM for the library, mostly faster.
  if (g.channels_last && g.kh * g.kw == 1 && !half) return false;
  if (g.o <= kFewOut) {
    // The library runs few outputs at a fraction of its rate (stride 2 too: 1.2-5.7x here),
    // but oneDNN's bfloat16 dot-product kernels on channels_last input reach this kernel's
    // float32 rate from 7 outputs on (stride 1).
    return !(g.channels_last && dtype == at::kBFloat16 && g.o > 6 && g.sh == 1);
  }
  // More outputs: the library runs near this kernel's rate (float32 ~200-215 GFLOP/s against
  // ~215-220 here), except from few input channels with kernels of 5x5 and up (Johnson's first
  // layer, 9x9 3 -> 32: 1.1-1.2x; 3x3 stride-1 layers stay with Winograd / the library), and
  // at stride 2 on NCHW input (1.1-1.8x) or from few input channels (1.1x); from 16 input
  // channels on channels_last input at stride 2 it ties or wins (0.7-1.02x). bfloat16:
  // oneDNN's dot products run at twice the float32 rate (0.5-0.9x here) except with one input
  // channel (1.4x) or few input channels at stride 2 (1.1-1.8x).
  const bool few_inputs = g.c <= 4;
  const bool stride2 = g.sh == 2;
  if (!stride2 && g.kh * g.kw < 25) return false;
  if (dtype == at::kBFloat16) return g.c == 1 || (stride2 && few_inputs);
  return few_inputs || (stride2 && (half || !g.channels_last));
}

void direct_fwd(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                const Geometry& g, int64_t mode, at::Tensor& out) {
  TORCH_CHECK(direct_applies(g, input.scalar_type()), "padded_conv2d direct kernel: layer not "
              "handled (", g.o, " output channels, stride ", g.sh, "x", g.sw, ", dtype ",
              input.scalar_type(), ")");
  if (out.numel() == 0) return;
  const Kernel kernel = rows_kernel();
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

  Job job;
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

  // Each task re-packs the rows of its first output row's window: give it enough output rows
  // that this is a fraction, and enough work to pay for the parallel region.
  const int64_t row_fmas = std::max<int64_t>(1, g.c * g.kh * g.kw * g.o * g.wo);
  const int64_t grain =
      std::max((g.kh + g.sh - 1) / g.sh, (kMinTaskFmas + row_fmas - 1) / row_fmas);
  const RowsFn fn = kernel.rows;
  at::parallel_for(0, g.n * g.ho, grain,
                   [&](int64_t begin, int64_t end) { fn(job, begin, end); });
}

}  // namespace padded_conv_cpu
}  // namespace stylize_fast

#else  // SF_PADDED_CONV_DIRECT_BODY
// ---------------------------------------------------------------------------------------------
// Kernel body: included above once per SF_ISA_LEVEL, inside namespace isa_<level> (itself in
// padded_conv_cpu's anonymous namespace).

#include "cpu/cpu_vec_f32.h"  // VF, kLanes, vload / vstore / vset1 / vfma, keep_in_register

// Register blocking per level.
#if SF_ISA_LEVEL >= 2
constexpr int kAccVectors = 24;  // of 32 registers: the rest hold inputs and weights
constexpr int kMaxV = 8;
constexpr int64_t kMaxGroup = 8;  // 8 x 3 accumulators
constexpr int64_t kMaxLaneVectors = 2;  // channels in lanes: 2 x 12 accumulators
#elif SF_ISA_LEVEL == 1
constexpr int kAccVectors = 12;  // of 16 registers
constexpr int kMaxV = 6;
constexpr int64_t kMaxGroup = 4;  // 4 x 3 accumulators: fewer loads per FMA than 8 x 1
constexpr int64_t kMaxLaneVectors = 2;  // 2 x 6
#else
constexpr int kAccVectors = 8;  // of 16 registers; no FMA, so products need temporaries
constexpr int kMaxV = 4;
constexpr int64_t kMaxGroup = 4;
constexpr int64_t kMaxLaneVectors = 2;  // 2 x 4
#endif

// ---------------------------------------------------------------------------------------------
// Packing: one padded input row of every channel, as float.

inline float to_float(float v) { return v; }
inline float to_float(c10::BFloat16 v) { return static_cast<float>(v); }
inline float to_float(c10::Half v) { return static_cast<float>(v); }

// n contiguous values -> float.
inline void convert_run(const float* src, float* dst, int64_t n) {
  std::memcpy(dst, src, sizeof(float) * n);
}
inline void convert_run(const c10::BFloat16* src, float* dst, int64_t n) {
  // bfloat16 -> float is exact: the 16 bits become the high half of the float.
  typedef uint16_t U16x16 __attribute__((vector_size(32)));
  typedef uint32_t U32x16 __attribute__((vector_size(64)));
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    U16x16 h;
    __builtin_memcpy(&h, s + i, sizeof(h));
    const U32x16 u = __builtin_convertvector(h, U32x16) << 16;
    __builtin_memcpy(dst + i, &u, sizeof(u));
  }
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
inline void convert_run(const c10::Half* src, float* dst, int64_t n) {
  int64_t i = 0;
#if SF_ISA_LEVEL >= 1
  // F16C, 8 at a time (GCC 12's 16-wide AVX-512 form trips -Wmaybe-uninitialized).
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

// kLanes values at p as one float vector.
inline VF load_lanes(const float* p) { return vload(p); }
inline VF load_lanes(const c10::BFloat16* p) {
  typedef uint16_t U16V __attribute__((vector_size(kLanes * 2)));
  typedef uint32_t U32V __attribute__((vector_size(kLanes * 4)));
  U16V h;
  __builtin_memcpy(&h, p, sizeof(h));
  const U32V u = __builtin_convertvector(h, U32V) << 16;
  VF f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
}
inline VF load_lanes(const c10::Half* p) {
  alignas(64) float t[kLanes];
  convert_run(p, t, kLanes);
  return vload(t);
}

#if defined(__GNUC__) && !defined(__clang__)
#define SF_DIRECT_TRANSPOSE 1  // __builtin_shuffle is GCC's; other compilers pack one by one
// In-register transpose of kLanes x kLanes floats: stage D swaps bit D of the row index with
// bit D of the lane index (rows i and i + D exchange their off-diagonal D-blocks).
typedef int32_t IV __attribute__((vector_size(sizeof(VF))));
template <int D, bool kHigh, int... L>
constexpr IV stage_mask(std::integer_sequence<int, L...>) {
  return kHigh ? IV{((L & D) ? kLanes + L : L + D)...} : IV{((L & D) ? kLanes + L - D : L)...};
}
template <int D>
inline void transpose_stage(VF* r) {
  constexpr IV lo = stage_mask<D, false>(std::make_integer_sequence<int, kLanes>{});
  constexpr IV hi = stage_mask<D, true>(std::make_integer_sequence<int, kLanes>{});
#pragma GCC unroll 16
  for (int i = 0; i < kLanes; ++i) {
    if (i & D) continue;
    const VF a = r[i], b = r[i + D];
    r[i] = __builtin_shuffle(a, b, lo);
    r[i + D] = __builtin_shuffle(a, b, hi);
  }
}
inline void transpose(VF* r) {
  transpose_stage<1>(r);
  transpose_stage<2>(r);
  if constexpr (kLanes >= 8) transpose_stage<4>(r);
  if constexpr (kLanes >= 16) transpose_stage<8>(r);
}
// Lanes 0, 2, 4, ... then 1, 3, 5, ...: a vector's even and odd lanes, each in one half.
template <int... L>
constexpr IV split_mask(std::integer_sequence<int, L...>) {
  return IV{(L < kLanes / 2 ? 2 * L : 2 * (L - kLanes / 2) + 1)...};
}
#else
#define SF_DIRECT_TRANSPOSE 0
#endif

// Where padded column q of a packed row goes: plane q % SW, index q / SW (SW is 1 or 2).
inline int64_t slot_of(const Job& j, int64_t q) {
  return j.g.sw == 1 ? q : (q & 1) * j.pld + (q >> 1);
}

// v holds padded columns q .. q + kLanes - 1 of a row: to their places, contiguous runs of
// kLanes (SW = 1) or two runs of kLanes / 2 (SW = 2: even lanes to one plane, odd to the other).
inline void store_columns(const Job& j, float* d, int64_t q, VF v) {
  if (j.g.sw == 1) return vstore(d + q, v);
#if SF_DIRECT_TRANSPOSE
  constexpr IV split = split_mask(std::make_integer_sequence<int, kLanes>{});
  v = __builtin_shuffle(v, split);
  __builtin_memcpy(d + slot_of(j, q), &v, sizeof(v) / 2);
  __builtin_memcpy(d + slot_of(j, q + 1), reinterpret_cast<const char*>(&v) + sizeof(v) / 2,
                   sizeof(v) / 2);
#else
  alignas(64) float t[kLanes];
  vstore(t, v);
  for (int i = 0; i < kLanes; ++i) d[slot_of(j, q + i)] = t[i];
#endif
}

// Padded columns [q0, q1) of channels [c0, c1), one value at a time.
template <typename S>
void pack_columns(const Job& j, const S* row, float* dst, int64_t cstride, int64_t q0, int64_t q1,
                  int64_t c0, int64_t c1) {
  const int64_t sc = j.xs[1], sw = j.xs[3];
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t col = j.src_col[q], at = slot_of(j, q);
    if (col < 0) {
      for (int64_t c = c0; c < c1; ++c) dst[c * cstride + at] = 0.f;
    } else {
      const S* px = row + col * sw;
      for (int64_t c = c0; c < c1; ++c) dst[c * cstride + at] = to_float(px[c * sc]);
    }
  }
}

// Padded row r of sample n, all channels, padded columns [0, wread): channel c goes to
// dst + c * cstride, column q to slot_of(q). Slots past those stay as they are (zero from the
// allocation).
template <typename S>
void pack_row(const Job& j, int64_t n, int64_t r, float* dst, int64_t cstride) {
  const Geometry& g = j.g;
  const int64_t sr = source_index(r, g.ph, g.h, j.mode);
  if (sr < 0) {  // a zero-padding row
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t p = 0; p < g.sw; ++p)
        std::memset(dst + c * cstride + p * j.pld, 0, sizeof(float) * j.pld);
    return;
  }
  const S* row = static_cast<const S*>(j.x) + n * j.xs[0] + sr * j.xs[2];
  const int64_t sc = j.xs[1], sw = j.xs[3];
  // Left padding [0, qa), image columns [qa, qb), right padding [qb, wread): a stride of 2
  // may leave the last column unread.
  const int64_t qa = std::min(g.pw, j.wread);
  const int64_t qb = std::max(qa, std::min(g.pw + g.w, j.wread));
  if (sc < sw) {
    // Channels innermost (channels_last): kLanes pixels x kLanes channels at a time, read
    // along the channels and transposed in registers; padding columns and leftovers one by one.
    const int64_t cv = SF_DIRECT_TRANSPOSE && sc == 1 ? g.c / kLanes * kLanes : 0;
    const int64_t qv = qa + (cv > 0 ? (qb - qa) / kLanes * kLanes : 0);
    pack_columns(j, row, dst, cstride, 0, qa, 0, g.c);
#if SF_DIRECT_TRANSPOSE
    for (int64_t q = qa; q < qv; q += kLanes) {
      const S* px = row + (q - g.pw) * sw;
      for (int64_t c = 0; c < cv; c += kLanes) {
        VF t[kLanes];
#pragma GCC unroll 16
        for (int p = 0; p < kLanes; ++p) t[p] = load_lanes(px + p * sw + c);
        transpose(t);
#pragma GCC unroll 16
        for (int k = 0; k < kLanes; ++k) store_columns(j, dst + (c + k) * cstride, q, t[k]);
      }
    }
#endif
    pack_columns(j, row, dst, cstride, qa, qv, cv, g.c);
    pack_columns(j, row, dst, cstride, qv, j.wread, 0, g.c);
    return;
  }
  for (int64_t c = 0; c < g.c; ++c) {
    const S* src = row + c * sc;
    float* d = dst + c * cstride;
    // Left and right padding through the index map, the image columns in between.
    for (int64_t q = 0; q < qa; ++q) {
      const int64_t col = j.src_col[q];
      d[slot_of(j, q)] = col < 0 ? 0.f : to_float(src[col * sw]);
    }
    for (int64_t q = qb; q < j.wread; ++q) {
      const int64_t col = j.src_col[q];
      d[slot_of(j, q)] = col < 0 ? 0.f : to_float(src[col * sw]);
    }
    if (sw == 1 && g.sw == 1) {
      convert_run(src, d + qa, qb - qa);
    } else if (sw == 1) {  // kLanes columns at a time, split between the planes
      int64_t q = qa;
      for (; q + kLanes <= qb; q += kLanes) store_columns(j, d, q, load_lanes(src + q - g.pw));
      for (; q < qb; ++q) d[slot_of(j, q)] = to_float(src[q - g.pw]);
    } else {
      for (int64_t q = qa; q < qb; ++q) d[slot_of(j, q)] = to_float(src[(q - g.pw) * sw]);
    }
  }
}

// Padded row r of sample n into its ring slot (channel c at dst + c * cstride).
void pack_slot(const Job& j, int64_t n, int64_t r, float* dst, int64_t cstride) {
  switch (j.dtype) {
    case DType::kFloat: return pack_row<float>(j, n, r, dst, cstride);
    case DType::kBFloat16: return pack_row<c10::BFloat16>(j, n, r, dst, cstride);
    case DType::kHalf: return pack_row<c10::Half>(j, n, r, dst, cstride);
  }
}

// ---------------------------------------------------------------------------------------------
// Prefetch: while an output row is computed, the input rows the next one adds are requested a
// few cache lines after each column block, so that packing them does not wait on memory.

class Prefetcher {
 public:
  // The source rows of padded rows [r0, r1) of sample n, over `steps` calls to step().
  void plan(const Job& j, int64_t n, int64_t r0, int64_t r1, int64_t steps) {
    const Geometry& g = j.g;
    const int64_t es = j.dtype == DType::kFloat ? 4 : 2;
    spans_.clear();
    cur_ = 0;
    off_ = 0;
    int64_t lines = 0;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t sr = source_index(r, g.ph, g.h, j.mode);
      if (sr < 0) continue;
      const char* row = static_cast<const char*>(j.x) + (n * j.xs[0] + sr * j.xs[2]) * es;
      if (j.xs[3] == 1) {  // one run per channel
        for (int64_t c = 0; c < g.c; ++c) spans_.push_back({row + c * j.xs[1] * es, g.w * es});
      } else if (j.xs[1] == 1 && j.xs[3] == g.c) {  // dense channels_last: one run
        spans_.push_back({row, g.w * g.c * es});
      }  // other layouts: no prefetch
    }
    for (const Span& s : spans_) lines += s.bytes / 64 + 2;
    per_step_ = (lines + steps - 1) / std::max<int64_t>(1, steps);
  }
  void clear() { spans_.clear(); }

  void step() {
    for (int64_t left = per_step_; left > 0 && cur_ < spans_.size(); ++cur_, off_ = 0) {
      const Span& s = spans_[cur_];
      for (; off_ < s.bytes && left > 0; off_ += 64, --left) __builtin_prefetch(s.p + off_, 0, 2);
      if (off_ < s.bytes) return;  // go on in this span next time
      __builtin_prefetch(s.p + s.bytes - 1, 0, 2);  // the last line
    }
  }

 private:
  struct Span {
    const char* p;
    int64_t bytes;
  };
  std::vector<Span> spans_;
  size_t cur_ = 0;
  int64_t off_ = 0, per_step_ = 0;
};

// kLanes floats -> p, rounded to S (to nearest even, as static_cast<S>); kStream: through a
// non-temporal store, p aligned to the vector's size.
template <bool kStream>
inline void store_lanes(float* p, VF v) {
#if SF_ISA_LEVEL >= 2
  if constexpr (kStream) return _mm512_stream_ps(p, v);
#elif SF_ISA_LEVEL == 1
  if constexpr (kStream) return _mm256_stream_ps(p, v);
#endif
  vstore(p, v);
}
// kLanes 16-bit values -> p.
template <bool kStream, typename H>
inline void store_halves(H* p, const void* h) {
#if SF_ISA_LEVEL >= 2
  if constexpr (kStream)
    return _mm256_stream_si256(reinterpret_cast<__m256i*>(p),
                               _mm256_loadu_si256(static_cast<const __m256i*>(h)));
#elif SF_ISA_LEVEL == 1
  if constexpr (kStream)
    return _mm_stream_si128(reinterpret_cast<__m128i*>(p),
                            _mm_loadu_si128(static_cast<const __m128i*>(h)));
#endif
  __builtin_memcpy(p, h, kLanes * 2);
}
template <bool kStream>
inline void store_lanes(c10::BFloat16* p, VF v) {
  typedef uint16_t U16V __attribute__((vector_size(kLanes * 2)));
  typedef uint32_t U32V __attribute__((vector_size(kLanes * 4)));
  typedef int32_t I32V __attribute__((vector_size(kLanes * 4)));
  U32V u;
  __builtin_memcpy(&u, &v, sizeof(u));
  U32V r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const I32V nan = v != v;  // c10 turns every NaN into 0x7fc0
  r = (r & ~U32V(nan)) | ((U32V{} + 0x7fc0u) & U32V(nan));
  const U16V h = __builtin_convertvector(r, U16V);
  store_halves<kStream>(p, &h);
}
template <bool kStream>
inline void store_lanes(c10::Half* p, VF v) {
  alignas(64) float t[kLanes];
  vstore(t, v);
#if SF_ISA_LEVEL >= 1
  alignas(32) uint16_t h[kLanes];
  for (int i = 0; i < kLanes; i += 8)
    _mm_store_si128(reinterpret_cast<__m128i*>(h + i),
                    _mm256_cvtps_ph(_mm256_load_ps(t + i), _MM_FROUND_TO_NEAREST_INT));
  store_halves<kStream>(p, h);
#else
  for (int i = 0; i < kLanes; ++i) p[i] = static_cast<c10::Half>(t[i]);
#endif
}

// A row tile (O rows of WO floats, stride ldt) -> out[n, :, y, :]. kStream: the vector stores
// are non-temporal (the caller checked that they are all aligned).
template <typename S, bool kStream>
void store_row(const Job& j, S* base, const float* tile, int64_t ldt) {
  const int64_t nout = j.g.o, cols = j.g.wo;
  const int64_t so = j.ys[1], sw = j.ys[3];
  if (so < sw) {
    // Channels innermost (channels_last): write along the channels, kLanes columns x kLanes
    // channels transposed in registers at a time, the rest one by one.
    int64_t q = 0;
#if SF_DIRECT_TRANSPOSE
    if (so == 1) {
      const int64_t ov = nout / kLanes * kLanes;
      for (; q + kLanes <= cols; q += kLanes) {
        for (int64_t o = 0; o < ov; o += kLanes) {
          VF t[kLanes];
#pragma GCC unroll 16
          for (int k = 0; k < kLanes; ++k) t[k] = vload(tile + (o + k) * ldt + q);
          transpose(t);
#pragma GCC unroll 16
          for (int k = 0; k < kLanes; ++k) store_lanes<kStream>(base + (q + k) * sw + o, t[k]);
        }
        for (int64_t k = 0; k < kLanes; ++k) {
          S* d = base + (q + k) * sw;
          for (int64_t o = ov; o < nout; ++o) d[o] = static_cast<S>(tile[o * ldt + q + k]);
        }
      }
    }
#endif
    for (; q < cols; ++q) {
      S* d = base + q * sw;
      const float* t = tile + q;
      for (int64_t o = 0; o < nout; ++o) d[o * so] = static_cast<S>(t[o * ldt]);
    }
    return;
  }
  for (int64_t o = 0; o < nout; ++o) {
    S* d = base + o * so;
    const float* t = tile + o * ldt;
    if (sw == 1) {
      int64_t q = 0;
      for (; q + kLanes <= cols; q += kLanes) store_lanes<kStream>(d + q, vload(t + q));
      for (; q < cols; ++q) d[q] = static_cast<S>(t[q]);
    } else {
      for (int64_t q = 0; q < cols; ++q) d[q * sw] = static_cast<S>(t[q]);
    }
  }
}

template <typename S>
void store_row(const Job& j, int64_t n, int64_t y, const float* tile, int64_t ldt) {
  S* base = static_cast<S*>(j.y) + n * j.ys[0] + y * j.ys[2];
  // Vector stores go to base + o so + q (o any, q a multiple of kLanes) when sw is 1, else to
  // base + q sw + o (o a multiple of kLanes) when so is 1: all aligned if base and the stride
  // between them are.
  // Streaming stores should fill whole cache lines back to back: a line written in parts far
  // apart goes to memory in parts. Rows (sw = 1) are written in order; channels_last pixels
  // one vector per line only where a vector is a line.
  constexpr int64_t kBytes = kLanes * int64_t(sizeof(S));
  const int64_t step = j.ys[3] == 1 ? j.ys[1] : j.ys[1] == 1 && kBytes % 64 == 0 ? j.ys[3] : 1;
  if (j.stream && reinterpret_cast<uintptr_t>(base) % kBytes == 0 &&
      step * int64_t(sizeof(S)) % kBytes == 0)
    return store_row<S, SF_ISA_LEVEL >= 1>(j, base, tile, ldt);
  store_row<S, false>(j, base, tile, ldt);
}

inline void store_row_any(const Job& j, int64_t n, int64_t y, const float* tile, int64_t ldt) {
  switch (j.dtype) {
    case DType::kFloat: return store_row<float>(j, n, y, tile, ldt);
    case DType::kBFloat16: return store_row<c10::BFloat16>(j, n, y, tile, ldt);
    case DType::kHalf: return store_row<c10::Half>(j, n, y, tile, ldt);
  }
}

// ---------------------------------------------------------------------------------------------
// Compute

// O output channels x V vectors of output columns from column col of one output row.
// rows: the C * KH packed rows that output row reads (channel-major); tap kx of a row starts at
// xoff[kx]; w: [C * KH][KW][O]. The result (bias included) goes to tile: O rows of stride ldt.
template <int O, int V>
void block(const float* const* rows, int64_t nrows, int64_t kw, const int64_t* xoff,
           const float* w, const float* bias, int64_t col, float* tile, int64_t ldt) {
  VF acc[O][V];
#pragma GCC unroll 8
  for (int o = 0; o < O; ++o) {
    const VF b = vset1(bias[o]);
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[o][v] = b;
  }
  for (int64_t i = 0; i < nrows; ++i) {
    const float* row = rows[i] + col;
    const float* wi = w + i * kw * O;
    for (int64_t kx = 0; kx < kw; ++kx) {
      const float* p = row + xoff[kx];
      // Live registers: O x V accumulators, min(O, V) operands held across the step, and one
      // operand in flight, so the smaller of inputs / weights is the one held.
      if constexpr (O <= V) {
        VF wb[O];
#pragma GCC unroll 8
        for (int o = 0; o < O; ++o) wb[o] = vset1(wi[kx * O + o]);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          VF xv = vload(p + v * kLanes);
          keep_in_register(xv);
#pragma GCC unroll 8
          for (int o = 0; o < O; ++o) acc[o][v] = vfma(xv, wb[o], acc[o][v]);
        }
      } else {
        VF xv[V];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          VF t = vload(p + v * kLanes);
          keep_in_register(t);
          xv[v] = t;
        }
#pragma GCC unroll 8
        for (int o = 0; o < O; ++o) {
          const VF wb = vset1(wi[kx * O + o]);
#pragma GCC unroll 8
          for (int v = 0; v < V; ++v) acc[o][v] = vfma(xv[v], wb, acc[o][v]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int o = 0; o < O; ++o) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) vstore(tile + o * ldt + v * kLanes, acc[o][v]);
  }
}

// Vectors of output columns per block for O output channels.
constexpr int vectors_for(int o) {
  return kAccVectors / o < 1 ? 1 : kAccVectors / o > kMaxV ? kMaxV : kAccVectors / o;
}

// block<O, nv> for a run-time nv in [1, V].
template <int O, int V>
inline void block_n(int nv, const float* const* rows, int64_t nrows, int64_t kw,
                    const int64_t* xoff, const float* w, const float* bias, int64_t col,
                    float* tile, int64_t ldt) {
  if constexpr (V > 1) {
    if (nv < V) return block_n<O, V - 1>(nv, rows, nrows, kw, xoff, w, bias, col, tile, ldt);
  }
  block<O, V>(rows, nrows, kw, xoff, w, bias, col, tile, ldt);
}

// One group of O output channels across an output row: blocks of V = vectors_for(O) vectors,
// the last one shorter; a few prefetches after each.
template <int O>
void group_row(const float* const* rows, int64_t nrows, int64_t kw, const int64_t* xoff,
               const float* w, const float* bias, int64_t wo, float* tile, int64_t ldt,
               Prefetcher& pf) {
  constexpr int V = vectors_for(O);
  constexpr int64_t kStep = int64_t(V) * kLanes;
  int64_t col = 0;
  for (; col + kStep <= wo; col += kStep) {
    block<O, V>(rows, nrows, kw, xoff, w, bias, col, tile + col, ldt);
    pf.step();
  }
  if (col < wo) {
    const int nv = static_cast<int>((wo - col + kLanes - 1) / kLanes);
    block_n<O, V>(nv, rows, nrows, kw, xoff, w, bias, col, tile + col, ldt);
  }
}

using GroupRowFn = void (*)(const float* const*, int64_t, int64_t, const int64_t*, const float*,
                            const float*, int64_t, float*, int64_t, Prefetcher&);

template <int... I>
constexpr std::array<GroupRowFn, sizeof...(I)> group_row_table(std::integer_sequence<int, I...>) {
  return {&group_row<I + 1>...};
}
static_assert(kMaxGroup <= 8, "block unrolls at most 8 output channels");
constexpr auto kGroupRows = group_row_table(std::make_integer_sequence<int, int(kMaxGroup)>{});

// ---------------------------------------------------------------------------------------------
// Channels-in-lanes kernel, for channels_last outputs with whole vectors of output channels: a
// block is OV vectors of output channels x P pixels, each step one load per vector of weights
// and one broadcast per pixel; the pixels go straight to the output, channels contiguous.

constexpr int pixels_for(int ov) {
  return kAccVectors / ov > kMaxPixels ? int(kMaxPixels) : kAccVectors / ov;
}

// OV vectors of output channels x P pixels from column col: rows, xoff as block(); w:
// [C * KH][KW][OV kLanes]. The result (bias included) goes to tile: [P][OV kLanes].
template <int OV, int P>
void lanes_block(const float* const* rows, int64_t nrows, int64_t kw, const int64_t* xoff,
                 const float* w, const float* bias, int64_t col, float* tile) {
  constexpr int OG = OV * kLanes;
  VF acc[OV][P];
#pragma GCC unroll 4
  for (int v = 0; v < OV; ++v) {
    const VF b = vload(bias + v * kLanes);
#pragma GCC unroll 24
    for (int p = 0; p < P; ++p) acc[v][p] = b;
  }
  for (int64_t i = 0; i < nrows; ++i) {
    const float* row = rows[i] + col;
    const float* wi = w + i * kw * OG;
    for (int64_t kx = 0; kx < kw; ++kx) {
      const float* x = row + xoff[kx];
      VF wv[OV];
#pragma GCC unroll 4
      for (int v = 0; v < OV; ++v) {
        wv[v] = vload(wi + kx * OG + v * kLanes);
        keep_in_register(wv[v]);
      }
#pragma GCC unroll 24
      for (int p = 0; p < P; ++p) {
        const VF xb = vset1(x[p]);
#pragma GCC unroll 4
        for (int v = 0; v < OV; ++v) acc[v][p] = vfma(wv[v], xb, acc[v][p]);
      }
    }
  }
#pragma GCC unroll 24
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 4
    for (int v = 0; v < OV; ++v) vstore(tile + p * OG + v * kLanes, acc[v][p]);
  }
}

// One group of OV vectors of output channels across an output row; out: the row's first pixel
// at the group's first channel, pixels sw apart. kStream: non-temporal stores (aligned).
template <int OV, typename S, bool kStream>
void lanes_row(const float* const* rows, int64_t nrows, int64_t kw, const int64_t* xoff,
               const float* w, const float* bias, int64_t wo, void* out, int64_t sw,
               Prefetcher& pf) {
  constexpr int P = pixels_for(OV), OG = OV * kLanes;
  alignas(64) float tile[P * OG];
  S* base = static_cast<S*>(out);
  for (int64_t col = 0; col < wo; col += P) {
    // The last block computes P pixels too (reading the planes' zero tails), stores fewer.
    lanes_block<OV, P>(rows, nrows, kw, xoff, w, bias, col, tile);
    const int np = static_cast<int>(std::min<int64_t>(P, wo - col));
    for (int p = 0; p < np; ++p) {
      S* d = base + (col + p) * sw;
#pragma GCC unroll 4
      for (int v = 0; v < OV; ++v)
        store_lanes<kStream>(d + v * kLanes, vload(tile + p * OG + v * kLanes));
    }
    pf.step();
  }
}

using LanesRowFn = void (*)(const float* const*, int64_t, int64_t, const int64_t*, const float*,
                            const float*, int64_t, void*, int64_t, Prefetcher&);

template <typename S, bool kStream, int... I>
constexpr std::array<LanesRowFn, sizeof...(I)> lanes_row_table(std::integer_sequence<int, I...>) {
  return {&lanes_row<I + 1, S, kStream>...};
}
static_assert(kMaxLaneVectors <= 4, "lanes_block unrolls at most 4 vectors of outputs");
constexpr auto kLaneSeq = std::make_integer_sequence<int, int(kMaxLaneVectors)>{};
// [dtype][stream][OV - 1]
constexpr std::array<LanesRowFn, kMaxLaneVectors> kLanesRows[3][2] = {
    {lanes_row_table<float, false>(kLaneSeq), lanes_row_table<float, SF_ISA_LEVEL >= 1>(kLaneSeq)},
    {lanes_row_table<c10::BFloat16, false>(kLaneSeq),
     lanes_row_table<c10::BFloat16, SF_ISA_LEVEL >= 1>(kLaneSeq)},
    {lanes_row_table<c10::Half, false>(kLaneSeq),
     lanes_row_table<c10::Half, SF_ISA_LEVEL >= 1>(kLaneSeq)}};

// Output row (n, y) with the channels-in-lanes kernel.
void lanes_output_row(const Job& j, const float* const* rows, int64_t n, int64_t y,
                      Prefetcher& pf) {
  const Geometry& g = j.g;
  const int64_t es = j.dtype == DType::kFloat ? 4 : 2;
  const int d = j.dtype == DType::kFloat ? 0 : j.dtype == DType::kBFloat16 ? 1 : 2;
  char* row = static_cast<char*>(j.y) + (n * j.ys[0] + y * j.ys[2]) * es;
  for (int64_t k = 0; k < j.ngroups; ++k) {
    const int64_t o0 = j.groups[k], og = j.groups[k + 1] - o0;
    char* out = row + o0 * es;
    // Streaming stores where every pixel's channels of the group fill whole cache lines.
    const bool stream = j.stream && reinterpret_cast<uintptr_t>(out) % 64 == 0 &&
                        og * es % 64 == 0 && j.ys[3] * es % 64 == 0;
    kLanesRows[d][stream][og / kLanes - 1](rows, g.c * g.kh, g.kw, j.xoff,
                                            j.w + o0 * g.c * g.kh * g.kw, j.bias + o0, g.wo,
                                            out, j.ys[3], pf);
  }
}

// Output rows [begin, end) of the flattened (n, y) range.
void run_rows(const Job& j, int64_t begin, int64_t end) {
  const Geometry& g = j.g;
  const int64_t kh = g.kh, ld = j.ld, nrows = g.c * g.kh, ldt = round_up(g.wo, kLanes);
  // Ring of packed rows, [C][KH][ld]: padded row r lives in slot r % KH. Zeroed so the tails
  // (read by the last column block, never stored) are finite.
  std::vector<float> storage(nrows * ld + 16, 0.f);
  float* ring = storage.data() + (16 - reinterpret_cast<uintptr_t>(storage.data()) / 4 % 16) % 16;
  std::vector<float> tile(j.lanes ? 0 : g.o * ldt);
  std::vector<const float*> rows(nrows);
  Prefetcher pf;
  int64_t row_blocks = 0;  // full column blocks per output row: the prefetch steps
  for (int64_t k = 0; k < j.ngroups; ++k) {
    const int og = int(j.groups[k + 1] - j.groups[k]);
    row_blocks += j.lanes ? (g.wo + pixels_for(og / kLanes) - 1) / pixels_for(og / kLanes)
                          : g.wo / (vectors_for(og) * kLanes);
  }

  for (int64_t t = begin; t < end;) {
    const int64_t n = t / g.ho, y0 = t % g.ho, y1 = std::min(g.ho, y0 + (end - t));
    int64_t next = y0 * g.sh;  // first padded row not in the ring yet
    for (int64_t y = y0; y < y1; ++y) {
      const int64_t top = y * g.sh;
      for (int64_t r = std::max(next, top); r < top + kh; ++r)
        pack_slot(j, n, r, ring + (r % kh) * ld, kh * ld);
      next = top + kh;
      for (int64_t c = 0; c < g.c; ++c)
        for (int64_t ky = 0; ky < kh; ++ky)
          rows[c * kh + ky] = ring + (c * kh + (top + ky) % kh) * ld;
      // The rows the next output row adds, fetched while this one is computed.
      if (y + 1 < y1) pf.plan(j, n, next, top + g.sh + kh, row_blocks);
      if (j.lanes) {
        lanes_output_row(j, rows.data(), n, y, pf);
        pf.clear();
        continue;
      }
      for (int64_t k = 0; k < j.ngroups; ++k) {
        const int64_t o0 = j.groups[k], og = j.groups[k + 1] - o0;
        kGroupRows[og - 1](rows.data(), nrows, g.kw, j.xoff, j.w + o0 * nrows * g.kw,
                           j.bias + o0, g.wo, tile.data() + o0 * ldt, ldt, pf);
      }
      pf.clear();
      store_row_any(j, n, y, tile.data(), ldt);
    }
    t += y1 - y0;
  }
#if SF_ISA_LEVEL >= 1
  if (j.stream) _mm_sfence();  // the non-temporal stores are visible before the task ends
#endif
}

#undef SF_DIRECT_TRANSPOSE

#endif  // SF_PADDED_CONV_DIRECT_BODY
