// Direct kernel of the CPU padded convolution, for stride-1 layers with few output channels
// (Johnson's last layer: 9x9, 32 -> 3, reflect pad 4), which the library (oneDNN) runs far
// below its usual rate; here all output channels of a block of pixels live in registers.
//
// Work: at::parallel_for over the flattened (n, output row) range. Each task keeps a ring of the
// KH padded input rows its current output row reads, per input channel, as float32 rows of
// stride ld (padded width rounded up, zero tail): packing a row applies the padding (every read
// goes through source_index) and the dtype conversion, and each input row is packed once per
// task. An output row is computed in blocks of V vectors of output columns: O x V accumulators
// stay in registers while the loop runs over (c, ky) rows and kx, each step one unaligned
// load per vector and one FMA per (o, vector) with a broadcast weight. The accumulators start
// at the bias and are rounded to the output dtype once, through out's strides.
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

// Most output channels the register blocking handles (accumulators = O x V vectors).
constexpr int64_t kMaxOut = 8;
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
  const float* w;        // [C][KH][KW][O]
  const float* bias;     // [O]
  const int64_t* src_col;  // [W + 2 pw]: source column of each padded column, -1 for zero
  int64_t wpad;          // W + 2 pw
  int64_t ld;            // stride of a packed row: >= round_up(WO, 16) + KW - 1, multiple of 16
};

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

int64_t packed_row_stride(const Geometry& g) {
  // The last column block may run past WO by up to one vector (16 lanes at most); its loads
  // stay inside the row and read the zero tail.
  return round_up(round_up(g.wo, 16) + g.kw - 1, 16);
}

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

RowsFn rows_kernel() {
#if SF_MULTI_ISA
  const int level = cpu_isa_level();
  if (level >= 2) return isa_avx512::run_rows;
  if (level == 1) return isa_avx2::run_rows;
#endif
  return isa_default::run_rows;
}

}  // namespace

// Where the library keeps up (measured, 2 threads on an AVX-512 machine: bench_direct_tmp.py),
// the layer stays with it.
bool direct_applies(const Geometry& g, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf) return false;
  if (g.sh != 1 || g.sw != 1 || g.o < 1 || g.o > kMaxOut) return false;
  if (g.c * g.kh * packed_row_stride(g) * int64_t(sizeof(float)) > kMaxRingBytes) return false;
  if (g.channels_last && dtype != at::kHalf) {  // the library's float16 runs 5-100x slower
    // A 1x1 convolution of channels_last input is one GEMM for the library, mostly faster.
    if (g.kh * g.kw == 1) return false;
    // oneDNN's bfloat16 dot-product kernels reach this kernel's float32 rate from 7 outputs on.
    if (dtype == at::kBFloat16 && g.o > 6) return false;
  }
  return true;
}

void direct_fwd(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                const Geometry& g, int64_t mode, at::Tensor& out) {
  TORCH_CHECK(direct_applies(g, input.scalar_type()), "padded_conv2d direct kernel: layer not "
              "handled (", g.o, " output channels, stride ", g.sh, "x", g.sw, ", dtype ",
              input.scalar_type(), ")");
  if (out.numel() == 0) return;
  // Weights as float [C][KH][KW][O]: the O weights of one tap are adjacent for the broadcasts.
  // Plain loops: small layers would otherwise spend more time in tensor ops than computing.
  std::vector<float> w(g.c * g.kh * g.kw * g.o), b(g.o, 0.f);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, weight.scalar_type(), "direct_fwd",
                                  [&] {
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    const auto ws = weight.strides();
    float* dst = w.data();
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t ky = 0; ky < g.kh; ++ky)
        for (int64_t kx = 0; kx < g.kw; ++kx)
          for (int64_t o = 0; o < g.o; ++o)
            *dst++ = static_cast<float>(wp[o * ws[0] + c * ws[1] + ky * ws[2] + kx * ws[3]]);
    if (bias.defined()) {
      const scalar_t* bp = bias.const_data_ptr<scalar_t>();
      for (int64_t o = 0; o < g.o; ++o) b[o] = static_cast<float>(bp[o * bias.stride(0)]);
    }
  });
  std::vector<int64_t> src_col(g.w + 2 * g.pw);
  for (int64_t j = 0; j < static_cast<int64_t>(src_col.size()); ++j)
    src_col[j] = source_index(j, g.pw, g.w, mode);

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
  job.w = w.data();
  job.bias = b.data();
  job.src_col = src_col.data();
  job.wpad = g.w + 2 * g.pw;
  job.ld = packed_row_stride(g);

  // Each task re-packs KH - 1 rows to fill its ring: give it at least KH output rows, and
  // enough work to pay for the parallel region.
  const int64_t row_fmas = std::max<int64_t>(1, g.c * g.kh * g.kw * g.o * g.wo);
  const int64_t grain = std::max(g.kh, (kMinTaskFmas + row_fmas - 1) / row_fmas);
  const RowsFn fn = rows_kernel();
  at::parallel_for(0, g.n * g.ho, grain,
                   [&](int64_t begin, int64_t end) { fn(job, begin, end); });
}

}  // namespace padded_conv_cpu
}  // namespace stylize_fast

#else  // SF_PADDED_CONV_DIRECT_BODY
// ---------------------------------------------------------------------------------------------
// Kernel body: included above once per SF_ISA_LEVEL, inside namespace isa_<level> (itself in
// padded_conv_cpu's anonymous namespace).

// One vector of float: 16, 8 or 4 lanes.
#if SF_ISA_LEVEL >= 2
using VF = __m512;
constexpr int kLanes = 16;
constexpr int kAccVectors = 24;  // of 32 registers: the rest hold inputs and weights
constexpr int kMaxV = 8;
inline VF vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, VF v) { _mm512_storeu_ps(p, v); }
inline VF vset1(float s) { return _mm512_set1_ps(s); }
inline VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
#elif SF_ISA_LEVEL == 1
using VF = __m256;
constexpr int kLanes = 8;
constexpr int kAccVectors = 12;  // of 16 registers
constexpr int kMaxV = 6;
inline VF vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, VF v) { _mm256_storeu_ps(p, v); }
inline VF vset1(float s) { return _mm256_set1_ps(s); }
inline VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
#else
typedef float VF __attribute__((vector_size(16)));
constexpr int kLanes = 4;
constexpr int kAccVectors = 8;  // of 16 registers; no FMA, so products need temporaries
constexpr int kMaxV = 4;
inline VF vload(const float* p) {
  VF v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void vstore(float* p, VF v) { __builtin_memcpy(p, &v, sizeof(v)); }
inline VF vset1(float s) { return VF{} + s; }
inline VF vfma(VF a, VF b, VF c) { return a * b + c; }
#endif

// GCC otherwise folds the input load into each of the O FMAs that use it: O unaligned loads
// instead of one, and the loop becomes load-bound.
inline void keep_in_register(VF& v) {
#if SF_ISA_LEVEL >= 2
  asm("" : "+v"(v));  // any of zmm0-31
#elif SF_ISA_LEVEL == 1
  asm("" : "+x"(v));  // ymm0-15
#else
  (void)v;
#endif
}

// Vectors of output columns per block for O output channels.
constexpr int vectors_for(int o) {
  return kAccVectors / o < 1 ? 1 : kAccVectors / o > kMaxV ? kMaxV : kAccVectors / o;
}

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
#else
#define SF_DIRECT_TRANSPOSE 0
#endif

// Padded columns [q0, q1) of channels [c0, c1), one value at a time.
template <typename S>
void pack_columns(const Job& j, const S* row, float* dst, int64_t cstride, int64_t q0, int64_t q1,
                  int64_t c0, int64_t c1) {
  const int64_t sc = j.xs[1], sw = j.xs[3];
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t col = j.src_col[q];
    if (col < 0) {
      for (int64_t c = c0; c < c1; ++c) dst[c * cstride + q] = 0.f;
    } else {
      const S* px = row + col * sw;
      for (int64_t c = c0; c < c1; ++c) dst[c * cstride + q] = to_float(px[c * sc]);
    }
  }
}

// Padded row r of sample n, all channels: channel c goes to dst + c * cstride, columns
// [0, W + 2 pw). Columns past that stay as they are (zero from the allocation).
template <typename S>
void pack_row(const Job& j, int64_t n, int64_t r, float* dst, int64_t cstride) {
  const Geometry& g = j.g;
  const int64_t sr = source_index(r, g.ph, g.h, j.mode);
  if (sr < 0) {  // a zero-padding row
    for (int64_t c = 0; c < g.c; ++c) std::memset(dst + c * cstride, 0, sizeof(float) * j.wpad);
    return;
  }
  const S* row = static_cast<const S*>(j.x) + n * j.xs[0] + sr * j.xs[2];
  const int64_t sc = j.xs[1], sw = j.xs[3];
  if (sc < sw) {
    // Channels innermost (channels_last): kLanes pixels x kLanes channels at a time, read
    // along the channels and transposed in registers; padding columns and leftovers one by one.
    const int64_t cv = SF_DIRECT_TRANSPOSE && sc == 1 ? g.c / kLanes * kLanes : 0;
    const int64_t qv = g.pw + (cv > 0 ? g.w / kLanes * kLanes : 0);
    pack_columns(j, row, dst, cstride, 0, g.pw, 0, g.c);
#if SF_DIRECT_TRANSPOSE
    for (int64_t q = g.pw; q < qv; q += kLanes) {
      const S* px = row + (q - g.pw) * sw;
      for (int64_t c = 0; c < cv; c += kLanes) {
        VF t[kLanes];
#pragma GCC unroll 16
        for (int p = 0; p < kLanes; ++p) t[p] = load_lanes(px + p * sw + c);
        transpose(t);
#pragma GCC unroll 16
        for (int k = 0; k < kLanes; ++k) vstore(dst + (c + k) * cstride + q, t[k]);
      }
    }
#endif
    pack_columns(j, row, dst, cstride, g.pw, qv, cv, g.c);
    pack_columns(j, row, dst, cstride, qv, j.wpad, 0, g.c);
    return;
  }
  for (int64_t c = 0; c < g.c; ++c) {
    const S* src = row + c * sc;
    float* d = dst + c * cstride;
    // Left and right padding through the index map, the image columns in between.
    for (int64_t q = 0; q < g.pw; ++q) {
      const int64_t col = j.src_col[q];
      d[q] = col < 0 ? 0.f : to_float(src[col * sw]);
    }
    for (int64_t q = g.pw + g.w; q < j.wpad; ++q) {
      const int64_t col = j.src_col[q];
      d[q] = col < 0 ? 0.f : to_float(src[col * sw]);
    }
    if (sw == 1) {
      convert_run(src, d + g.pw, g.w);
    } else {
      for (int64_t q = 0; q < g.w; ++q) d[g.pw + q] = to_float(src[q * sw]);
    }
  }
}

inline void pack_row_any(const Job& j, int64_t n, int64_t r, float* dst, int64_t cstride) {
  switch (j.dtype) {
    case DType::kFloat: return pack_row<float>(j, n, r, dst, cstride);
    case DType::kBFloat16: return pack_row<c10::BFloat16>(j, n, r, dst, cstride);
    case DType::kHalf: return pack_row<c10::Half>(j, n, r, dst, cstride);
  }
}

// ---------------------------------------------------------------------------------------------
// Output: a tile of O rows x cols values (row stride ldt) -> out[n, :, y, col0 : col0 + cols].

template <typename S>
void store_tile(const Job& j, int64_t n, int64_t y, int64_t col0, int64_t cols, const float* tile,
                int64_t ldt) {
  S* base = static_cast<S*>(j.y) + n * j.ys[0] + y * j.ys[2] + col0 * j.ys[3];
  const int64_t sw = j.ys[3];
  for (int64_t o = 0; o < j.g.o; ++o) {
    S* d = base + o * j.ys[1];
    const float* t = tile + o * ldt;
    if (sw == 1) {
      for (int64_t q = 0; q < cols; ++q) d[q] = static_cast<S>(t[q]);
    } else {
      for (int64_t q = 0; q < cols; ++q) d[q * sw] = static_cast<S>(t[q]);
    }
  }
}

inline void store_tile_any(const Job& j, int64_t n, int64_t y, int64_t col0, int64_t cols,
                           const float* tile, int64_t ldt) {
  switch (j.dtype) {
    case DType::kFloat: return store_tile<float>(j, n, y, col0, cols, tile, ldt);
    case DType::kBFloat16: return store_tile<c10::BFloat16>(j, n, y, col0, cols, tile, ldt);
    case DType::kHalf: return store_tile<c10::Half>(j, n, y, col0, cols, tile, ldt);
  }
}

// ---------------------------------------------------------------------------------------------
// Compute

// O output channels x V vectors of output columns from column col of one output row.
// rows: the C * KH packed rows that output row reads (channel-major); w: [C * KH][KW][O].
// The result (bias included) goes to tile: O rows of stride ldt.
template <int O, int V>
void block(const float* const* rows, int64_t nrows, int64_t kw, const float* w,
           const float* bias, int64_t col, float* tile, int64_t ldt) {
  VF acc[O][V];
#pragma GCC unroll 8
  for (int o = 0; o < O; ++o) {
    const VF b = vset1(bias[o]);
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[o][v] = b;
  }
  for (int64_t i = 0; i < nrows; ++i) {
    const float* p = rows[i] + col;
    const float* wi = w + i * kw * O;
    for (int64_t kx = 0; kx < kw; ++kx) {
      // Live registers: O x V accumulators, min(O, V) operands held across the step, and one
      // operand in flight, so the smaller of inputs / weights is the one held.
      if constexpr (O <= V) {
        VF wb[O];
#pragma GCC unroll 8
        for (int o = 0; o < O; ++o) wb[o] = vset1(wi[kx * O + o]);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          VF xv = vload(p + kx + v * kLanes);
          keep_in_register(xv);
#pragma GCC unroll 8
          for (int o = 0; o < O; ++o) acc[o][v] = vfma(xv, wb[o], acc[o][v]);
        }
      } else {
        VF xv[V];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          VF t = vload(p + kx + v * kLanes);
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

// block<O, nv> for a run-time nv in [1, V].
template <int O, int V>
inline void block_n(int nv, const float* const* rows, int64_t nrows, int64_t kw, const float* w,
                    const float* bias, int64_t col, float* tile, int64_t ldt) {
  if constexpr (V > 1) {
    if (nv < V) return block_n<O, V - 1>(nv, rows, nrows, kw, w, bias, col, tile, ldt);
  }
  block<O, V>(rows, nrows, kw, w, bias, col, tile, ldt);
}

// Output rows [begin, end) of the flattened (n, y) range.
template <int O>
void rows_for(const Job& j, int64_t begin, int64_t end) {
  const Geometry& g = j.g;
  const int64_t kh = g.kh, ld = j.ld, nrows = g.c * g.kh;
  constexpr int V = vectors_for(O);
  constexpr int64_t kStep = int64_t(V) * kLanes;
  // Ring of packed rows, [C][KH][ld]: padded row r lives in slot r % KH. Zeroed so the tail
  // past W + 2 pw (read by the last column block, never stored) is finite.
  std::vector<float> storage(nrows * ld + 16, 0.f);
  float* ring = storage.data() + (16 - reinterpret_cast<uintptr_t>(storage.data()) / 4 % 16) % 16;
  std::vector<const float*> rows(nrows);
  alignas(64) float tile[O * kStep];

  for (int64_t t = begin; t < end;) {
    const int64_t n = t / g.ho, y0 = t % g.ho, y1 = std::min(g.ho, y0 + (end - t));
    for (int64_t r = y0; r < y0 + kh - 1; ++r) pack_row_any(j, n, r, ring + (r % kh) * ld, kh * ld);
    for (int64_t y = y0; y < y1; ++y) {
      const int64_t r = y + kh - 1;
      pack_row_any(j, n, r, ring + (r % kh) * ld, kh * ld);
      for (int64_t c = 0; c < g.c; ++c)
        for (int64_t ky = 0; ky < kh; ++ky)
          rows[c * kh + ky] = ring + (c * kh + (y + ky) % kh) * ld;
      for (int64_t col = 0; col < g.wo; col += kStep) {
        const int64_t cols = std::min(kStep, g.wo - col);
        const int nv = static_cast<int>((cols + kLanes - 1) / kLanes);
        block_n<O, V>(nv, rows.data(), nrows, g.kw, j.w, j.bias, col, tile, kStep);
        store_tile_any(j, n, y, col, cols, tile, kStep);
      }
    }
    t += y1 - y0;
  }
}

void run_rows(const Job& j, int64_t begin, int64_t end) {
  switch (j.g.o) {
    case 1: return rows_for<1>(j, begin, end);
    case 2: return rows_for<2>(j, begin, end);
    case 3: return rows_for<3>(j, begin, end);
    case 4: return rows_for<4>(j, begin, end);
    case 5: return rows_for<5>(j, begin, end);
    case 6: return rows_for<6>(j, begin, end);
    case 7: return rows_for<7>(j, begin, end);
    case 8: return rows_for<8>(j, begin, end);
    default: TORCH_CHECK(false, "padded_conv2d direct kernel: ", j.g.o, " output channels");
  }
}
static_assert(kMaxOut == 8, "run_rows dispatches 1..8 output channels");

#undef SF_DIRECT_TRANSPOSE

#endif  // SF_PADDED_CONV_DIRECT_BODY
