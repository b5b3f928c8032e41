// Weight gradient of the CPU padded convolution for 3x3 stride-1 layers by Winograd F(4x4, 3x3)
// (the residual and upsampling layers of Johnson's generator, where the library's weight
// gradient dominated the generator's backward).
//
// The forward computes a 4x4 output tile as Y = A^T [ (G w G^T) . (B^T d B) ] A from the tile's
// 6x6 padded input patch d. Y is linear in w, so the weight gradient is its adjoint, summed over
// tiles (and images):
//
//     dW[o, c] = G^T [ sum over tiles of (A dY[o] A^T) . (B^T d[c] B) ] G
//
// exact in exact arithmetic (the tile's 16 output gradients times their 3x3 input windows).
// With E = A dY A^T (6x6 per tile and output channel) and V = B^T d B (6x6 per tile and input
// channel) the sum is 36 GEMMs, one per transform-domain point xi:
//     M[xi] (O x C) += E[xi]^T (O x tiles) . V[xi] (tiles x C),
// 36 multiply-adds per tile and channel pair against the direct method's 144.
//
// Work: the tiles of all images, in order, are cut into chunks whose transformed V and E of
// one point stay in L2 while that point's GEMM runs. Per chunk, the threads first transform the
// chunk's tiles (the input through the padding index map, source_index: no padded copy, no
// border correction), then run the GEMMs split into (point, block of output channels) tasks,
// each adding into its own rows of the float32 sums M [36][Opad][Cpad]. A sum is added to in
// chunk order and tile order whatever the thread count: results are bit-identical across thread
// counts. Last, dW = G^T M G in float64, rounded once to float32.
//
// Accuracy: the transforms' constants (up to 8 in A, 5 in B^T, 1/24 in G) cost a few bits
// against direct summation, as in the forward: errors around 1e-5 of the gradient's scale,
// checked against float64 in tests/test_padded_conv_cpu_wgrad.py. bfloat16 tensors are read
// into float32 and everything after is float32.
//
// Instruction sets: padded_conv_cpu_wgrad_winograd_kernels.h is compiled once per level by
// cpu/cpu_isa_kernels.h; cpu_isa_level() picks the copy per call.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/cpu_isa.h"
#include "cpu/padded_conv_cpu.h"

namespace stylize_fast {
namespace padded_conv_cpu {
namespace {

struct WgradWinogradJob {
  const void* x;   // input (N, C, H, W) with strides xs, float32 or bfloat16
  int64_t xs[4];
  const void* gy;  // grad_output (N, O, HO, WO) with strides gs, the input's dtype
  int64_t gs[4];
  int64_t C, O, HO, WO, Cpad, Opad;
  int64_t tiles_w, tiles;    // tiles per row, per image
  const int64_t* row_src;    // padded row -> source row, -1 for a zero row
  const int64_t* col_src;    // padded column -> source column, -1 for a zero column
  float* V;                  // [36][chunk][Cpad]: transformed input of the chunk's tiles
  float* E;                  // [36][chunk][Opad]: transformed output gradient
  float* M;                  // [36][Opad][Cpad]: the sums
  int64_t chunk;             // tiles per chunk (buffer size)
  int64_t chunk_begin;       // first tile (over all images) of the current chunk
  int64_t count;             // tiles in the current chunk
  int64_t o_block, o_blocks; // GEMM tasks: output channels per task, tasks per point
};

struct KernelTable {
  void (*transform)(const WgradWinogradJob&, int64_t, int64_t);  // float32 tensors
  void (*transform_bf16)(const WgradWinogradJob&, int64_t, int64_t);
  void (*gemm)(const WgradWinogradJob&, int64_t, int64_t);
  int mr;  // output channels per micro-kernel step
};

#define SF_ISA_BODY "cpu/padded_conv_cpu_wgrad_winograd_kernels.h"
#include "cpu/cpu_isa_kernels.h"

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// G (6 x 3) of F(4x4, 3x3), as the forward's weight transform applies it.
constexpr double kG[6][3] = {{1.0 / 4, 0, 0},
                             {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                             {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                             {1.0 / 24, 1.0 / 12, 1.0 / 6},
                             {1.0 / 24, -1.0 / 12, 1.0 / 6},
                             {0, 0, 1}};

}  // namespace

bool wgrad_winograd_applies(const Geometry& g, at::ScalarType dtype) {
  return (dtype == at::kFloat || dtype == at::kBFloat16) && g.kh == 3 && g.kw == 3 &&
         g.sh == 1 && g.sw == 1 && g.n * g.ho * g.wo > 0 && g.c > 0 && g.o > 0;
}

bool wgrad_winograd_pays(const Geometry& g, at::ScalarType dtype) {
  (void)dtype;
  // Measured against the library's weight gradient plus its border corrections (2 threads,
  // AVX-512, JohnsonNet's layers, scratch figures in the commit message): channels_last with
  // 32 channels and more on both sides. Other layouts gather each channel element by element.
  return g.channels_last && g.c >= 32 && g.o >= 32;
}

at::Tensor wgrad_winograd(const at::Tensor& grad_output, const at::Tensor& input,
                          const Geometry& g, int64_t mode) {
  const auto dtype = input.scalar_type();
  TORCH_CHECK(wgrad_winograd_applies(g, dtype) && grad_output.scalar_type() == dtype,
              "padded_conv2d Winograd weight gradient: layer not handled (kernel ", g.kh, "x",
              g.kw, ", stride ", g.sh, "x", g.sw, ", dtype ", dtype, ")");
  const KernelTable& k = isa_kernel_table();
  WgradWinogradJob j{};
  j.x = input.const_data_ptr();
  j.gy = grad_output.const_data_ptr();
  for (int d = 0; d < 4; ++d) {
    j.xs[d] = input.stride(d);
    j.gs[d] = grad_output.stride(d);
  }
  j.C = g.c;
  j.O = g.o;
  j.HO = g.ho;
  j.WO = g.wo;
  j.Cpad = round_up(g.c, 16);
  j.Opad = round_up(g.o, 16);
  const int64_t tiles_h = (g.ho + 3) / 4;
  j.tiles_w = (g.wo + 3) / 4;
  j.tiles = tiles_h * j.tiles_w;
  const int64_t total = g.n * j.tiles;

  // Padded rows / columns the tiles read; those past the padded input meet only zero output
  // gradients.
  std::vector<int64_t> rows(tiles_h * 4 + 2), cols(j.tiles_w * 4 + 2);
  for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i)
    rows[i] = i < g.h + 2 * g.ph ? source_index(i, g.ph, g.h, mode) : -1;
  for (int64_t i = 0; i < static_cast<int64_t>(cols.size()); ++i)
    cols[i] = i < g.w + 2 * g.pw ? source_index(i, g.pw, g.w, mode) : -1;
  j.row_src = rows.data();
  j.col_src = cols.data();

  // A chunk: one point's V and E slices (chunk x (Cpad + Opad) floats) within ~256 KB of L2.
  j.chunk = std::clamp<int64_t>((256 * 1024) / (4 * (j.Cpad + j.Opad)), 16, 1024);
  j.chunk = std::min(j.chunk, total);
  // GEMM tasks: blocks of output channels, a multiple of the micro-kernel's rows, enough
  // tasks (36 per block) to keep every thread busy.
  const int64_t threads = at::get_num_threads();
  const int64_t want_blocks = std::max<int64_t>(1, (4 * threads + 35) / 36);
  j.o_block = round_up((g.o + want_blocks - 1) / want_blocks, k.mr);
  j.o_blocks = (g.o + j.o_block - 1) / j.o_block;

  std::vector<float> V(static_cast<size_t>(36 * j.chunk * j.Cpad));
  std::vector<float> E(static_cast<size_t>(36 * j.chunk * j.Opad));
  std::vector<float> M(static_cast<size_t>(36 * j.Opad * j.Cpad), 0.0f);
  j.V = V.data();
  j.E = E.data();
  j.M = M.data();
  const auto transform = dtype == at::kBFloat16 ? k.transform_bf16 : k.transform;
  for (int64_t begin = 0; begin < total; begin += j.chunk) {
    j.chunk_begin = begin;
    j.count = std::min(j.chunk, total - begin);
    at::parallel_for(0, j.count, 4, [&](int64_t b, int64_t e) { transform(j, b, e); });
    at::parallel_for(0, 36 * j.o_blocks, 1, [&](int64_t b, int64_t e) { k.gemm(j, b, e); });
  }

  // dW[o, c] = G^T M[., o, c] G, in float64.
  auto out = at::empty({g.o, g.c, 3, 3}, input.options().dtype(at::kFloat));
  float* dw = out.data_ptr<float>();
  const int64_t plane = j.Opad * j.Cpad;
  at::parallel_for(0, g.o * g.c, 64, [&](int64_t b, int64_t e) {
    for (int64_t oc = b; oc < e; ++oc) {
      const int64_t o = oc / g.c, c = oc % g.c;
      const float* m = M.data() + o * j.Cpad + c;
      double gm[3][6];  // G^T M
      for (int a = 0; a < 3; ++a)
        for (int nu = 0; nu < 6; ++nu) {
          double s = 0;
          for (int xi = 0; xi < 6; ++xi) s += kG[xi][a] * m[(xi * 6 + nu) * plane];
          gm[a][nu] = s;
        }
      for (int a = 0; a < 3; ++a)
        for (int b2 = 0; b2 < 3; ++b2) {
          double s = 0;
          for (int nu = 0; nu < 6; ++nu) s += gm[a][nu] * kG[nu][b2];
          dw[oc * 9 + a * 3 + b2] = static_cast<float>(s);
        }
    }
  });
  return out;
}

}  // namespace padded_conv_cpu
}  // namespace stylize_fast
