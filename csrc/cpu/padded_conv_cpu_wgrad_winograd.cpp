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
// Work: the tiles of all images, in order, are cut into at most 16 tasks (a cut that depends
// only on the shape; fewer for wide layers, whose sums are large). Each task sums into its own
// float32 M [36][Opad][Cpad], and the tasks' sums are added in task order in float64 at the
// end: bit-identical results for every thread count, and no thread waits for another before
// the end (on a loaded machine a descheduled thread then delays only its own tasks). A task
// runs its tiles a chunk at a time: the chunk's input patches are transformed (read through
// the padding index map, source_index: no padded copy and no border correction) into
// V [36][chunk][Cpad], its output gradients into E [36][chunk][Opad], then the 36 GEMMs add
// E[xi]^T V[xi] into M[xi]; a chunk's V and E fit in L2, where the GEMMs find them. Last,
// dW = G^T M G in float64, rounded once to float32. Scratch is kept per thread between calls.
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
  int64_t total;             // tiles over all images
  int64_t task_tiles;        // tiles per task (the last one may have fewer)
  int64_t chunk;             // tiles transformed and multiplied at a time
};

struct KernelTable {
  // run_task(job, task, V, E, M): V [36][chunk][Cpad], E [36][chunk][Opad] scratch, M
  // [36][Opad][Cpad] the task's sums.
  void (*run_task)(const WgradWinogradJob&, int64_t, float*, float*, float*);  // float32
  void (*run_task_bf16)(const WgradWinogradJob&, int64_t, float*, float*, float*);
};

#define SF_ISA_BODY "cpu/padded_conv_cpu_wgrad_winograd_kernels.h"
#include "cpu/cpu_isa_kernels.h"

// Tasks per call at most, tiles per task at least, and the most bytes the tasks' sums (tasks x
// 36 x Opad x Cpad floats) may take: each task writes its sums once per chunk, and they are
// read once more at the end; wide layers get fewer tasks.
constexpr int64_t kMaxTasks = 16;
constexpr int64_t kMinTaskTiles = 64;
constexpr int64_t kSumBytes = 16 << 20;

// A buffer of at least n elements kept per thread between calls: the sums and transforms of a
// wide layer take megabytes, which fresh allocations would fault in page by page every call
// (measured: half the call's time, and most of its variance, on a loaded machine).
// 64-byte aligned: rows of 16 floats then fill whole cache lines.
template <typename T>
T* thread_scratch(size_t n) {
  static thread_local std::vector<T> buffer;
  const size_t pad = 64 / sizeof(T);
  if (buffer.size() < n + pad) buffer.resize(n + pad);
  const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
  return reinterpret_cast<T*>((address + 63) & ~std::uintptr_t{63});
}

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
  // Measured against the library's weight gradient plus its border corrections (AVX-512,
  // batch 4, interleaved ratios, 1 thread, on a loaded 2-core machine): float32 channels_last
  // 1.8-2.5x on JohnsonNet's 128->128, 128->64 and 64->32 layers and 2x at 32->32, 16
  // channels inconclusive (0.8-1.5x); NCHW (channels gathered element by element) 2.2-2.5x at
  // 64 and 128 channels, ~1.2x at 32; bfloat16, which the library computes at twice the
  // float32 rate, 1.2-1.5x from 64 channels on both sides, 0.9-1.0x at 64->32. With a folded
  // upsampling the library would need the upsampled input built: Winograd from 32 channels.
  if (dtype == at::kBFloat16) {
    const int64_t least = g.up > 1 ? 32 : 64;
    return g.channels_last && g.c >= least && g.o >= least;
  }
  if (g.channels_last) return g.c >= 32 && g.o >= 32;
  return g.c >= 64 && g.o >= 64;
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

  // Padded rows / columns the tiles read; those past the padded input meet only zero output
  // gradients.
  std::vector<int64_t> rows(tiles_h * 4 + 2), cols(j.tiles_w * 4 + 2);
  for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i)
    rows[i] = i < g.h + 2 * g.ph ? source_index(i, g.ph, g.h, mode, g.up) : -1;
  for (int64_t i = 0; i < static_cast<int64_t>(cols.size()); ++i)
    cols[i] = i < g.w + 2 * g.pw ? source_index(i, g.pw, g.w, mode, g.up) : -1;
  j.row_src = rows.data();
  j.col_src = cols.data();

  // Tasks: a fixed cut of the tiles (whatever the thread count), each summing into its own
  // float32 M; the tasks' sums are added in task order in float64 at the end. No thread waits
  // for another until then.
  j.total = g.n * j.tiles;
  const int64_t m_size = 36 * j.Opad * j.Cpad;
  int64_t tasks = std::clamp<int64_t>(
      std::min(j.total / kMinTaskTiles, kSumBytes / (4 * m_size)), 1, kMaxTasks);
  if (tasks > 4) tasks = tasks / 4 * 4;  // equal shares for 2 and 4 threads
  j.task_tiles = (j.total + tasks - 1) / tasks;
  // A chunk: its V and E (36 x chunk x (Cpad + Opad) floats) within ~768 KB, so the GEMMs read
  // them from L2 where the transforms left them; at least 32 tiles, over which each GEMM adds
  // into its sums M[xi] once.
  j.chunk = std::clamp<int64_t>((768 * 1024) / (36 * 4 * (j.Cpad + j.Opad)), 32, 512);
  j.chunk = std::min(j.chunk, j.task_tiles);
  // The tasks' sums (zeroed by each task) and the transforms' scratch: per-thread buffers.
  float* M = thread_scratch<float>(static_cast<size_t>(tasks * m_size));
  const size_t v_size = static_cast<size_t>(36 * j.chunk * j.Cpad);
  const size_t e_size = static_cast<size_t>(36 * j.chunk * j.Opad);
  const auto run = input.scalar_type() == at::kBFloat16 ? k.run_task_bf16 : k.run_task;
  at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
    // One buffer for V and E: the calling thread's M lives in the other scratch type.
    double* scratch = thread_scratch<double>((v_size + e_size + 1) / 2);
    float* V = reinterpret_cast<float*>(scratch);
    float* E = V + v_size;
    for (int64_t t = b; t < e; ++t) {
      float* m = M + t * m_size;
      std::fill(m, m + m_size, 0.0f);
      run(j, t, V, E, m);
    }
  });

  // The tasks' sums added in task order, in float64, streaming through them.
  // (The calling thread's V and E are done with: S reuses that buffer.)
  double* S = thread_scratch<double>(static_cast<size_t>(m_size));
  std::fill(S, S + m_size, 0.0);
  at::parallel_for(0, m_size, 4096, [&](int64_t b, int64_t e) {
    for (int64_t t = 0; t < tasks; ++t) {
      const float* m = M + t * m_size;
      for (int64_t i = b; i < e; ++i) S[i] += m[i];
    }
  });

  // dW[o, c] = G^T S[., o, c] G, in float64.
  auto out = at::empty({g.o, g.c, 3, 3}, input.options().dtype(at::kFloat));
  float* dw = out.data_ptr<float>();
  const int64_t plane = j.Opad * j.Cpad;
  at::parallel_for(0, g.o * g.c, 64, [&](int64_t b, int64_t e) {
    for (int64_t oc = b; oc < e; ++oc) {
      const int64_t o = oc / g.c, c = oc % g.c;
      const double* sum = S + o * j.Cpad + c;
      double gm[3][6];  // G^T M
      for (int a = 0; a < 3; ++a)
        for (int nu = 0; nu < 6; ++nu) {
          double s = 0;
          for (int xi = 0; xi < 6; ++xi) s += kG[xi][a] * sum[(xi * 6 + nu) * plane];
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
