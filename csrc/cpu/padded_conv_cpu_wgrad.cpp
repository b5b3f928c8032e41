// Weight gradient of the CPU padded convolution for layers with few output channels (Johnson's
// last layer: 9x9, 32 -> 3, reflect pad 4), computed straight from the unpadded input:
//
//   dW[o, c, ky, kx] = sum over n, y, x of  G[n, o, y, x] * Xpad[n, c, y SH + ky, x SW + kx]
//
// where Xpad is read through the padding index map (source_index): no padded copy, and no
// border correction afterwards. The library (oneDNN) runs this reduction at ~125 GFLOP/s here
// for 3 output channels and needs the padded input or four border corrections besides.
//
// Work: the (n, output row) range is cut into tasks of whole output rows of one sample; the cut
// depends only on the shape, so every thread count folds the same partial sums in the same
// order (bit-identical results). A task keeps a ring of the KH padded input rows its current
// output row reads, packed as float with channels in vector lanes, [C / lanes][padded column]
// [lanes] (channels past C are zero), and the output row's gradient as float [x][O]. Packing
// applies the padding map and the dtype conversion, and transposes NCHW input; each input row
// is packed once per task.
//
// Register block: og output channels x kg taps of one kernel row, each a vector of channels;
// for every output column x one vector load per tap, one broadcast per output channel and
// og x kg FMAs. The block sums a whole output row in registers, then adds into the task's
// float accumulators [KH][O][KW][C]; a task's sums go to a double partial, and the partials are
// summed over the tasks in order.
//
// Instruction sets: the kernel section at the bottom of this file is compiled three times (the
// file includes itself), as padded_conv_cpu_direct.cpp: baseline (4 lanes), AVX2 + FMA (8),
// AVX-512 (16); cpu_isa_level() picks the copy per call.
#ifndef SF_PADDED_CONV_WGRAD_BODY

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

// Most output channels the kernel takes (wgrad_applies has the measured rule).
constexpr int64_t kWgradMaxOut = 8;
// Tasks per call at most: bounds the partial sums (tasks x O x C x KH x KW doubles).
constexpr int64_t kMaxTasks = 64;
// Output rows per task at least: packing re-reads KH - 1 rows per task.
constexpr int64_t kMinTaskRows = 16;

// What a kernel copy needs for one output row: the packed rows and gradient, and where to add.
struct RowArgs {
  const float* const* rows;  // [KH]: packed padded input row y SH + ky, [cv][wread][lanes]
  const float* grad;         // [WO][O]
  float* acc;                // [KH][O][KW][cp]
  int64_t o, kh, kw, sw, wo, wread, cp;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// The kernel, once per instruction-set level.

#define SF_PADDED_CONV_WGRAD_BODY
namespace {

namespace isa_default {
#define SF_ISA_LEVEL 0
#include "padded_conv_cpu_wgrad.cpp"
#undef SF_ISA_LEVEL
}  // namespace isa_default

#if SF_MULTI_ISA
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace isa_avx2 {
#define SF_ISA_LEVEL 1
#include "padded_conv_cpu_wgrad.cpp"
#undef SF_ISA_LEVEL
}  // namespace isa_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
namespace isa_avx512 {
#define SF_ISA_LEVEL 2
#include "padded_conv_cpu_wgrad.cpp"
#undef SF_ISA_LEVEL
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

}  // namespace
#undef SF_PADDED_CONV_WGRAD_BODY

// ---------------------------------------------------------------------------------------------
// Host side

namespace {

struct RowKernel {
  void (*row)(const RowArgs&);
  int64_t lanes;
};

RowKernel row_kernel() {
#if SF_MULTI_ISA
  const int level = cpu_isa_level();
  if (level >= 2) return {isa_avx512::accumulate_row, isa_avx512::kLanes};
  if (level == 1) return {isa_avx2::accumulate_row, isa_avx2::kLanes};
#endif
  return {isa_default::accumulate_row, isa_default::kLanes};
}

// Padded row r of sample n of x (any layout, strides xs) -> dst [cp / L][wread][L] as float,
// channels past C zero. src_col maps padded columns to input columns (-1: zero padding).
template <typename scalar_t>
void pack_input_row(const scalar_t* x, const int64_t* xs, const Geometry& g, int64_t n,
                    int64_t src_row, const int64_t* src_col, int64_t wread, int64_t cp,
                    int64_t L, float* dst) {
  const int64_t plane = wread * L;
  if (src_row < 0) {
    std::fill(dst, dst + cp * wread, 0.f);
    return;
  }
  if (cp != g.c) {  // zero the lanes past C once; the loops below write the others
    for (int64_t q = 0; q < wread; ++q)
      for (int64_t c = g.c; c < cp; ++c) dst[(c / L) * plane + q * L + c % L] = 0.f;
  }
  const scalar_t* row = x + n * xs[0] + src_row * xs[2];
  if (xs[1] == 1) {  // channels_last: a pixel's channels are contiguous
    for (int64_t q = 0; q < wread; ++q) {
      float* d = dst + q * L;
      if (src_col[q] < 0) {
        for (int64_t c = 0; c < g.c; ++c) d[(c / L) * plane + c % L] = 0.f;
        continue;
      }
      const scalar_t* px = row + src_col[q] * xs[3];
      for (int64_t c0 = 0; c0 < g.c; c0 += L) {
        float* dv = d + (c0 / L) * plane;
        const int64_t m = std::min(L, g.c - c0);
        for (int64_t l = 0; l < m; ++l) dv[l] = static_cast<float>(px[c0 + l]);
      }
    }
    return;
  }
  for (int64_t c = 0; c < g.c; ++c) {  // NCHW: one input row per channel
    const scalar_t* src = row + c * xs[1];
    float* d = dst + (c / L) * plane + c % L;
    for (int64_t q = 0; q < wread; ++q)
      d[q * L] = src_col[q] < 0 ? 0.f : static_cast<float>(src[src_col[q] * xs[3]]);
  }
}

// Output row y of sample n of grad_output -> dst [WO][O] as float.
template <typename scalar_t>
void pack_grad_row(const scalar_t* gy, const int64_t* gs, const Geometry& g, int64_t n,
                   int64_t y, float* dst) {
  const scalar_t* row = gy + n * gs[0] + y * gs[2];
  for (int64_t x = 0; x < g.wo; ++x)
    for (int64_t o = 0; o < g.o; ++o)
      dst[x * g.o + o] = static_cast<float>(row[o * gs[1] + x * gs[3]]);
}

}  // namespace

// Where it was measured faster than the library's weight gradient plus the border corrections
// (2 threads, AVX-512, 2026-11-24): 0.18-0.87x on 16 cases -- 1, 3, 4 and 8 outputs, 16-256
// inputs, 3x3 / 5x5 / 9x9, stride 1 and 2, float32 and bfloat16, NCHW and channels_last;
// 0.21-0.23x on Johnson's 9x9 32->3 layer. 1x1 kernels are one GEMM for the library; float64
// needs float64 arithmetic, which this kernel does not do.
bool wgrad_applies(const Geometry& g, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf) return false;
  if (g.o < 1 || g.o > kWgradMaxOut) return false;
  if (g.kh * g.kw < 9 || g.sh > 2 || g.sw > 2) return false;
  return g.n * g.ho * g.wo > 0 && g.c > 0;
}

at::Tensor wgrad(const at::Tensor& grad_output, const at::Tensor& input, const Geometry& g,
                 int64_t mode) {
  TORCH_CHECK(wgrad_applies(g, input.scalar_type()), "padded_conv2d weight-gradient kernel: "
              "layer not handled (", g.o, " output channels, kernel ", g.kh, "x", g.kw,
              ", stride ", g.sh, "x", g.sw, ", dtype ", input.scalar_type(), ")");
  const RowKernel kernel = row_kernel();
  const int64_t L = kernel.lanes;
  const int64_t cp = (g.c + L - 1) / L * L;
  const int64_t wread = (g.wo - 1) * g.sw + g.kw;
  std::vector<int64_t> src_col(wread);
  for (int64_t q = 0; q < wread; ++q) src_col[q] = source_index(q, g.pw, g.w, mode);

  // Tasks: whole output rows of one sample, the same cut for every thread count.
  const int64_t per_sample_max = std::max<int64_t>(1, kMaxTasks / g.n);
  const int64_t rows = std::max(kMinTaskRows, (g.ho + per_sample_max - 1) / per_sample_max);
  const int64_t blocks = (g.ho + rows - 1) / rows;
  const int64_t tasks = g.n * blocks;
  const int64_t nw = g.kh * g.o * g.kw * cp;
  std::vector<double> partial(tasks * nw);
  int64_t xs[4], gs[4];
  for (int d = 0; d < 4; ++d) {
    xs[d] = input.stride(d);
    gs[d] = grad_output.stride(d);
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "wgrad", [&] {
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    const scalar_t* gy = grad_output.const_data_ptr<scalar_t>();
    at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
      const int64_t row_floats = cp * wread;
      std::vector<float> ring(g.kh * row_floats), grad(g.wo * g.o), acc(nw);
      std::vector<const float*> window(g.kh);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / blocks;
        const int64_t y0 = (t % blocks) * rows, y1 = std::min(g.ho, y0 + rows);
        std::fill(acc.begin(), acc.end(), 0.f);
        int64_t packed = y0 * g.sh;  // padded rows [y0 SH, packed) are in the ring
        for (int64_t y = y0; y < y1; ++y) {
          const int64_t r0 = y * g.sh;
          for (int64_t r = std::max(packed, r0); r < r0 + g.kh; ++r)
            pack_input_row(x, xs, g, n, source_index(r, g.ph, g.h, mode), src_col.data(),
                           wread, cp, L, ring.data() + (r % g.kh) * row_floats);
          packed = r0 + g.kh;
          for (int64_t ky = 0; ky < g.kh; ++ky)
            window[ky] = ring.data() + ((r0 + ky) % g.kh) * row_floats;
          pack_grad_row(gy, gs, g, n, y, grad.data());
          kernel.row({window.data(), grad.data(), acc.data(), g.o, g.kh, g.kw, g.sw, g.wo,
                      wread, cp});
        }
        double* p = partial.data() + t * nw;
        for (int64_t i = 0; i < nw; ++i) p[i] = double(acc[i]);
      }
    });
  });

  // Sum the partials in task order, straight into (O, C, KH, KW).
  const at::ScalarType acc_dtype = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto out = at::empty({g.o, g.c, g.kh, g.kw}, input.options().dtype(acc_dtype));
  AT_DISPATCH_FLOATING_TYPES(acc_dtype, "wgrad_sum", [&] {
    scalar_t* dw = out.data_ptr<scalar_t>();
    at::parallel_for(0, g.o * g.c, 1, [&](int64_t b, int64_t e) {
      for (int64_t oc = b; oc < e; ++oc) {
        const int64_t o = oc / g.c, c = oc % g.c;
        for (int64_t ky = 0; ky < g.kh; ++ky)
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const int64_t i = ((ky * g.o + o) * g.kw + kx) * cp + c;
            double s = 0;
            for (int64_t t = 0; t < tasks; ++t) s += partial[t * nw + i];
            dw[((o * g.c + c) * g.kh + ky) * g.kw + kx] = scalar_t(s);
          }
      }
    });
  });
  return out;
}

}  // namespace padded_conv_cpu
}  // namespace stylize_fast

#else  // SF_PADDED_CONV_WGRAD_BODY
// ---------------------------------------------------------------------------------------------
// Kernel body: included above once per SF_ISA_LEVEL, inside namespace isa_<level>.

#include "cpu/cpu_vec_f32.h"  // VF, kLanes, vzero / vload / vstore / vset1 / vfma / vadd

// Accumulator registers per level: 9 taps x 3 outputs beside 1 input and the broadcasts of 32
// registers; 12 of 16; 8 of 16 without FMA (products need temporaries).
#if SF_ISA_LEVEL >= 2
constexpr int kAccRegs = 27;
#elif SF_ISA_LEVEL == 1
constexpr int kAccRegs = 12;
#else
constexpr int kAccRegs = 8;
#endif

// OG output channels x KG taps: sums over the output row in registers, then adds to acc.
// in: the first tap's vector of channels at column 0 (row [wread][lanes]); step: floats between
// consecutive output columns (SW lanes); grad: [WO][O] at the first output channel.
template <int OG, int KG>
inline void block(const float* in, int64_t step, const float* grad, int64_t O, int64_t wo,
                  float* acc, int64_t acc_o, int64_t acc_k) {
  VF a[OG][KG];
  for (int o = 0; o < OG; ++o)
    for (int k = 0; k < KG; ++k) a[o][k] = vzero();
  for (int64_t x = 0; x < wo; ++x) {
    VF gv[OG];
    for (int o = 0; o < OG; ++o) {
      gv[o] = vset1(grad[x * O + o]);
      keep_in_register(gv[o]);
    }
    const float* px = in + x * step;
    for (int k = 0; k < KG; ++k) {
      VF v = vload(px + k * kLanes);
      keep_in_register(v);
      for (int o = 0; o < OG; ++o) a[o][k] = vfma(gv[o], v, a[o][k]);
    }
  }
  for (int o = 0; o < OG; ++o)
    for (int k = 0; k < KG; ++k) {
      float* p = acc + o * acc_o + k * acc_k;
      vstore(p, vadd(vload(p), a[o][k]));
    }
}

using BlockFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t,
                         int64_t);

// The block for og x kg, both at most 9 and og x kg <= kAccRegs (nullptr otherwise).
template <int OG, int KG>
constexpr BlockFn block_or_null() {
  if constexpr (OG * KG <= kAccRegs) return &block<OG, KG>;
  else return nullptr;
}
template <int OG, int... KG>
constexpr std::array<BlockFn, 9> blocks_for(std::integer_sequence<int, KG...>) {
  return {block_or_null<OG, KG + 1>()...};
}
constexpr std::array<std::array<BlockFn, 9>, 8> kBlocks = {
    blocks_for<1>(std::make_integer_sequence<int, 9>{}),
    blocks_for<2>(std::make_integer_sequence<int, 9>{}),
    blocks_for<3>(std::make_integer_sequence<int, 9>{}),
    blocks_for<4>(std::make_integer_sequence<int, 9>{}),
    blocks_for<5>(std::make_integer_sequence<int, 9>{}),
    blocks_for<6>(std::make_integer_sequence<int, 9>{}),
    blocks_for<7>(std::make_integer_sequence<int, 9>{}),
    blocks_for<8>(std::make_integer_sequence<int, 9>{})};

// Splits n into parts of at most cap, sizes differing by at most one: part k is [b(k), b(k+1)).
inline int64_t parts(int64_t n, int64_t cap) { return (n + cap - 1) / cap; }
inline int64_t part_begin(int64_t n, int64_t np, int64_t k) { return k * n / np; }

void accumulate_row(const RowArgs& r) {
  // Output channels in groups of og <= 8 (all of them when they fit beside one tap), taps of a
  // kernel row in groups of kg <= 9, as many as the registers hold.
  const int64_t max_og = std::min<int64_t>(r.o, std::min<int64_t>(8, kAccRegs));
  const int64_t nog = parts(r.o, max_og);
  const int64_t og_cap = (r.o + nog - 1) / nog;
  const int64_t max_kg = std::min<int64_t>(9, kAccRegs / og_cap);
  const int64_t nkg = parts(r.kw, max_kg);
  const int64_t plane = r.wread * kLanes;
  for (int64_t ky = 0; ky < r.kh; ++ky) {
    for (int64_t cv = 0; cv < r.cp / kLanes; ++cv) {
      const float* in = r.rows[ky] + cv * plane;
      for (int64_t gi = 0; gi < nog; ++gi) {
        const int64_t o0 = part_begin(r.o, nog, gi), o1 = part_begin(r.o, nog, gi + 1);
        for (int64_t ki = 0; ki < nkg; ++ki) {
          const int64_t k0 = part_begin(r.kw, nkg, ki), k1 = part_begin(r.kw, nkg, ki + 1);
          const BlockFn fn = kBlocks[o1 - o0 - 1][k1 - k0 - 1];
          float* acc = r.acc + ((ky * r.o + o0) * r.kw + k0) * r.cp + cv * kLanes;
          fn(in + k0 * kLanes, r.sw * kLanes, r.grad + o0, r.o, r.wo, acc, r.kw * r.cp, r.cp);
        }
      }
    }
  }
}

#endif  // SF_PADDED_CONV_WGRAD_BODY
