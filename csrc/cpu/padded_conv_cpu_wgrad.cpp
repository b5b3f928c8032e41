// Weight gradient of the CPU padded convolution for layers with few output channels (up to 16;
// Johnson's last layer: 9x9, 32 -> 3, reflect pad 4), computed straight from the unpadded input:
//
//   dW[o, c, ky, kx] = sum over n, y, x of  G[n, o, y, x] * Xpad[n, c, y SH + ky, x SW + kx]
//
// where Xpad is read through the padding index map (source_index): no padded copy, and no
// border correction afterwards. The library (oneDNN) runs this reduction well below its usual
// rate for 3 output channels and needs the padded input or four border corrections besides.
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
// Instruction sets: the kernel body (padded_conv_cpu_wgrad_kernels.h) is compiled once per level
// by cpu/cpu_isa_kernels.h: baseline (4 lanes), AVX2 + FMA (8), AVX-512 (16); cpu_isa_level()
// picks the copy per call.

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

namespace stylize_fast {
namespace padded_conv_cpu {
namespace {

// Most output channels the kernel takes (wgrad_applies has the measured rule).
constexpr int64_t kWgradMaxOut = 16;
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

namespace {

// One kernel copy: adds one output row's products (RowArgs) into the accumulators.
struct KernelTable {
  void (*row)(const RowArgs&);
  int64_t lanes;  // floats per vector: the packed rows' channel blocking
};

#define SF_ISA_BODY "cpu/padded_conv_cpu_wgrad_kernels.h"
#include "cpu/cpu_isa_kernels.h"

}  // namespace

// ---------------------------------------------------------------------------------------------
// Host side

namespace {

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
// (2 threads, AVX-512; figures in docs/benchmarks.md): 1, 3, 4 and 8 outputs, 16-256
// inputs, 3x3 / 5x5 / 9x9, stride 1 and 2, float32 and bfloat16, NCHW and channels_last,
// and Johnson's 9x9 32->3 layer. 1x1 kernels are one GEMM for the library; float64
// needs float64 arithmetic, which this kernel does not do. 9-16 outputs (1 thread, AVX-512,
// channels_last, interleaved ratios on a loaded machine): 5x5 and 9x9 kernels 1.9-2.7x, 3x3
// stride 1 with 9-12 outputs 1.15-1.4x, from 16 inputs; 3x3 with 13-16 outputs, 3x3 stride 2
// and fewer than 16 inputs lose or tie.
bool wgrad_applies(const Geometry& g, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf) return false;
  if (g.o < 1 || g.o > kWgradMaxOut) return false;
  if (g.kh * g.kw < 9 || g.sh > 2 || g.sw > 2) return false;
  if (g.o > 8) {
    if (g.c < 16) return false;
    const bool small_kernel = g.kh * g.kw < 25;
    if (small_kernel && (g.o > 12 || g.sh != 1 || g.sw != 1)) return false;
  }
  return g.n * g.ho * g.wo > 0 && g.c > 0;
}

at::Tensor wgrad(const at::Tensor& grad_output, const at::Tensor& input, const Geometry& g,
                 int64_t mode) {
  TORCH_CHECK(wgrad_applies(g, input.scalar_type()), "padded_conv2d weight-gradient kernel: "
              "layer not handled (", g.o, " output channels, kernel ", g.kh, "x", g.kw,
              ", stride ", g.sh, "x", g.sw, ", dtype ", input.scalar_type(), ")");
  const KernelTable& kernel = isa_kernel_table();
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
