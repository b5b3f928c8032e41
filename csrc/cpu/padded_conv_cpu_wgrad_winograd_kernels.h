// Per-instruction-set kernel bodies of the Winograd weight gradient (the algorithm is described
// in padded_conv_cpu_wgrad_winograd.cpp).
//
// NOT an ordinary header: padded_conv_cpu_wgrad_winograd.cpp compiles it once per level through
// cpu/cpu_isa_kernels.h (levels 0-2), after cpu/cpu_vec.h, with WgradWinogradJob and
// KernelTable declared.
//
// Vectors are 16 floats (cpu/cpu_vec.h's VecT<float>; one zmm, two ymm or four xmm). Transforms
// run 16 channels at a time; the 36 transform-domain GEMMs use a register-blocked micro-kernel
// of MR output channels x NV * 16 input channels, summing over a chunk's tiles in registers.

using vf = VecT<float>;
constexpr int64_t kLanes = 16;

#if SF_ISA_LEVEL >= 2
constexpr int kMR = 6, kNV = 4;  // 24 zmm accumulators of 32
#elif SF_ISA_LEVEL == 1
constexpr int kMR = 6, kNV = 1;  // 12 ymm accumulators of 16
#else
constexpr int kMR = 2, kNV = 1;  // 8 xmm accumulators of 16
#endif

// A broadcast. (vf{} + s would keep a scalar add before it: 0 + s is not s for s = -0.)
inline vf vsplat(float s) { return vf{s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s}; }

// load16, bt6, patch_transform (B^T d B), gather16: the forward's input-side pieces.
#include "cpu/winograd_transforms_kernels.h"

// out = A e for one 4-vector of output gradients (A: 6 x 4, the transpose of the forward's
// output transform A^T; rows: points 0, 1, -1, 2, -2, infinity).
inline void a4(const vf e[4], vf out[6]) {
  const vf s02 = e[0] + e[2], s13 = e[1] + e[3];
  const vf t02 = e[0] + 4.0f * e[2], t13 = 2.0f * e[1] + 8.0f * e[3];
  out[0] = e[0];
  out[1] = s02 + s13;
  out[2] = s02 - s13;
  out[3] = t02 + t13;
  out[4] = t02 - t13;
  out[5] = e[3];
}

// V[xi][k][c] = (B^T d B)[xi] for chunk tiles [k_begin, k_end): d the tile's 6x6 padded input
// patch, read through the padding map (padded rows / columns past the input read as zero: they
// only meet output gradients past the edge, which are zero).
template <typename T>
void input_transform(const WgradWinogradJob& j, int64_t first, int64_t count, float* V) {
  const T* x = static_cast<const T*>(j.x);
  const bool contiguous = j.xs[1] == 1;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t tile = first + k;
    const int64_t n = tile / j.tiles, t = tile % j.tiles;
    const int64_t r0 = (t / j.tiles_w) * 4, q0 = (t % j.tiles_w) * 4;
    const T* rows[6];
    int64_t cols[6];
    for (int i = 0; i < 6; ++i) {
      const int64_t r = j.row_src[r0 + i];
      rows[i] = r < 0 ? nullptr : x + n * j.xs[0] + r * j.xs[2];
      const int64_t q = j.col_src[q0 + i];
      cols[i] = q < 0 ? -1 : q * j.xs[3];
    }
    for (int64_t c0 = 0; c0 < j.Cpad; c0 += kLanes) {
      const bool full = contiguous && c0 + kLanes <= j.C;
      vf d[6][6];
      for (int i = 0; i < 6; ++i)
        for (int q = 0; q < 6; ++q) {
          d[i][q] = rows[i] == nullptr || cols[q] < 0
                        ? vf{}
                        : gather16(rows[i] + cols[q], c0, j.C, j.xs[1], full);
        }
      vf out[6][6];
      patch_transform(d, out);
      for (int xi = 0; xi < 6; ++xi)
        for (int nu = 0; nu < 6; ++nu)
          vstore(V + ((xi * 6 + nu) * j.chunk + k) * j.Cpad + c0, out[xi][nu]);
    }
  }
}

// E[xi][k][o] = (A e A^T)[xi] for chunk tiles [k_begin, k_end): e the tile's 4x4 block of
// grad_output, zero past the output's edge.
template <typename T>
void grad_transform(const WgradWinogradJob& j, int64_t first, int64_t count, float* E) {
  const T* gy = static_cast<const T*>(j.gy);
  const bool contiguous = j.gs[1] == 1;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t tile = first + k;
    const int64_t n = tile / j.tiles, t = tile % j.tiles;
    const int64_t y0 = (t / j.tiles_w) * 4, x0 = (t % j.tiles_w) * 4;
    const int64_t rows = std::min<int64_t>(4, j.HO - y0), cols = std::min<int64_t>(4, j.WO - x0);
    for (int64_t o0 = 0; o0 < j.Opad; o0 += kLanes) {
      const bool full = contiguous && o0 + kLanes <= j.O;
      vf e[4][4];
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) {
          if (a >= rows || b >= cols) {
            e[a][b] = vf{};
            continue;
          }
          const T* p = gy + n * j.gs[0] + (y0 + a) * j.gs[2] + (x0 + b) * j.gs[3];
          if (full) {
            e[a][b] = load16(p + o0);
          } else {
            alignas(64) float lane[kLanes];
            for (int64_t l = 0; l < kLanes; ++l)
              lane[l] = o0 + l < j.O ? to_float(p[(o0 + l) * j.gs[1]]) : 0.0f;
            e[a][b] = vload(lane);
          }
        }
      vf tmp[6][4];  // A e: tmp[xi][b]
      for (int b = 0; b < 4; ++b) {
        const vf col[4] = {e[0][b], e[1][b], e[2][b], e[3][b]};
        vf out[6];
        a4(col, out);
        for (int xi = 0; xi < 6; ++xi) tmp[xi][b] = out[xi];
      }
      for (int xi = 0; xi < 6; ++xi) {
        vf out[6];
        a4(tmp[xi], out);
        for (int nu = 0; nu < 6; ++nu)
          vstore(E + ((xi * 6 + nu) * j.chunk + k) * j.Opad + o0, out[nu]);
      }
    }
  }
}

// M[o][c] += sum_k E[k][o] V[k][c] for MR output channels x NV vectors of input channels, over
// the chunk's `count` tiles (one transform-domain point).
template <int MR, int NV>
void gemm_block(const float* E, const float* V, float* M, int64_t count, int64_t Opad,
                int64_t Cpad) {
  vf acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = vf{};
  for (int64_t k = 0; k < count; ++k) {
    vf in[NV];
    for (int v = 0; v < NV; ++v) in[v] = vload(V + k * Cpad + v * kLanes);
    for (int r = 0; r < MR; ++r) {
      const vf e = vsplat(E[k * Opad + r]);
      for (int v = 0; v < NV; ++v) acc[r][v] += e * in[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      float* p = M + r * Cpad + v * kLanes;
      vstore(p, vload(p) + acc[r][v]);
    }
}

using GemmFn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t);

template <int MR, int... NV>
constexpr std::array<GemmFn, kNV> gemm_row(std::integer_sequence<int, NV...>) {
  return {&gemm_block<MR, NV + 1>...};
}
template <int... MR>
constexpr std::array<std::array<GemmFn, kNV>, kMR> gemm_table(std::integer_sequence<int, MR...>) {
  return {gemm_row<MR + 1>(std::make_integer_sequence<int, kNV>{})...};
}
constexpr std::array<std::array<GemmFn, kNV>, kMR> kGemm =
    gemm_table(std::make_integer_sequence<int, kMR>{});

// All 36 points' GEMMs for `count` transformed tiles: M[xi] += E[xi]^T V[xi].
void gemm(const WgradWinogradJob& j, int64_t count, const float* V, const float* E, float* M) {
  for (int64_t xi = 0; xi < 36; ++xi) {
    const float* Ex = E + xi * j.chunk * j.Opad;
    const float* Vx = V + xi * j.chunk * j.Cpad;
    float* Mx = M + xi * j.Opad * j.Cpad;
    for (int64_t o = 0; o < j.O; o += kMR) {
      const int64_t mr = std::min<int64_t>(kMR, j.O - o);
      for (int64_t c = 0; c < j.Cpad; c += kNV * kLanes) {
        const int64_t nv = std::min<int64_t>(kNV, (j.Cpad - c) / kLanes);
        kGemm[mr - 1][nv - 1](Ex + o, Vx + c, Mx + o * j.Cpad + c, count, j.Opad, j.Cpad);
      }
    }
  }
}

// Task `task`: its tiles, chunk by chunk, transformed into V / E (this thread's buffers) and
// multiplied into M (the task's own sums, zero on entry).
template <typename T>
void run_task(const WgradWinogradJob& j, int64_t task, float* V, float* E, float* M) {
  const int64_t end = std::min(j.total, (task + 1) * j.task_tiles);
  for (int64_t first = task * j.task_tiles; first < end; first += j.chunk) {
    const int64_t count = std::min(j.chunk, end - first);
    input_transform<T>(j, first, count, V);
    grad_transform<T>(j, first, count, E);
    gemm(j, count, V, E, M);
  }
}

const KernelTable kernel_table = {&run_task<float>, &run_task<c10::BFloat16>};
