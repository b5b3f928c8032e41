// Per-instruction-set kernel bodies of the Winograd F(4x4, 3x3) padded convolution (CPU).
//
// NOT an ordinary header: padded_conv_cpu_winograd.cpp compiles it once per instruction-set
// level through cpu/cpu_isa_kernels.h (levels 0-2), after cpu/cpu_vec.h, with WinogradJob and
// KernelTable declared.
//
// Vectors are 16 floats (cpu/cpu_vec.h's VecT<float>; one zmm, two ymm or four xmm). Transforms run
// 16 channels at a time; the transform-domain products are 36 small GEMMs per block of tiles,
// done by a register-blocked micro-kernel (MR tiles x NV*16 output channels per step).

using vf = VecT<float>;
constexpr int64_t kLanes = 16;

#if SF_ISA_LEVEL >= 2
constexpr int kMR = 6, kNV = 4;  // 24 zmm accumulators of 32
#elif SF_ISA_LEVEL == 1
constexpr int kMR = 6, kNV = 1;  // 12 ymm accumulators of 16
#else
constexpr int kMR = 2, kNV = 1;  // 8 xmm accumulators of 16
#endif

// One float in every lane, loaded straight from memory (a broadcast load, not an add of zero
// and a register shuffle that would compete with the FMAs). Used by `uses` FMAs: with several,
// one broadcast kept in a register; with one, folded into the FMA.
template <int uses>
inline vf vsplat_load(const float* p) {
  const float s = *p;
  vf v = {s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
#if SF_ISA_LEVEL >= 2
  if constexpr (uses > 1) asm("" : "+v"(v));
#endif
  return v;
}

// U is stored in panels of kPanel output channels (the micro-kernel's width; the last ones
// kLanes wide when Opad is not a multiple), each panel's rows contiguous:
// U[x] = [panel][c][width]. A GEMM step then streams one panel slice sequentially, and a slice
// of kKC rows stays in L1 while it is reused over a block's tiles.
constexpr int64_t kPanel = kNV * kLanes;
constexpr int64_t kKC = 8192 / kPanel;  // input channels per slice: 32 KB of U

inline int64_t panel_width(const WinogradJob& j, int64_t o0) {
  return o0 - o0 % kPanel + kPanel <= j.Opad ? kPanel : kLanes;
}

// Where U[x][c][o0 .. o0 + kLanes) lives (o0 a multiple of kLanes).
inline float* u_at(const WinogradJob& j, int64_t x, int64_t c, int64_t o0) {
  const int64_t width = panel_width(j, o0);
  const int64_t p0 = width == kPanel ? o0 - o0 % kPanel : o0;
  return j.U + x * j.Cpad * j.Opad + p0 * j.Cpad + c * width + (o0 - p0);
}

// load16 / store16, bt6, patch_transform (B^T d B), gather16: shared with the weight gradient.
#include "cpu/winograd_transforms_kernels.h"

// out = A^T m for one 6-vector: the 4 outputs of a tile row.
inline void at6(const vf m[6], vf out[4]) {
  const vf p12 = m[1] + m[2], m12 = m[1] - m[2], p34 = m[3] + m[4], m34 = m[3] - m[4];
  out[0] = m[0] + p12 + p34;
  out[1] = m12 + 2.0f * m34;
  out[2] = p12 + 4.0f * p34;
  out[3] = m12 + 8.0f * m34 + m[5];
}

// out = G g for one 3-vector.
inline void g3(const vf g[3], vf out[6]) {
  out[0] = 0.25f * g[0];
  out[1] = (-1.0f / 6.0f) * (g[0] + g[1] + g[2]);
  out[2] = (-1.0f / 6.0f) * (g[0] - g[1] + g[2]);
  out[3] = (1.0f / 24.0f) * g[0] + (1.0f / 12.0f) * g[1] + (1.0f / 6.0f) * g[2];
  out[4] = (1.0f / 24.0f) * g[0] - (1.0f / 12.0f) * g[1] + (1.0f / 6.0f) * g[2];
  out[5] = g[2];
}

// U[xi][c][o] = (G w[o, c] G^T)[xi] (stored in panels, u_at; w's taps flipped with flip_taps)
// for input channels [c_begin, c_end), 16 output channels at a time; channels beyond C / O are
// zero so the GEMMs can run on padded sizes.
template <typename T>
void weight_transform(const WinogradJob& j, int64_t c_begin, int64_t c_end) {
  const T* w = static_cast<const T*>(j.w);
  const bool taps_contiguous = j.ws[3] == 1 && j.ws[2] == 3;
  // Output channels outermost: the inner loop over c reads each lane's weights sequentially and
  // writes each point's panel rows contiguously.
  for (int64_t o0 = 0; o0 < j.Opad; o0 += kLanes) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      // All 9 taps of the 16 lanes gathered first, then loaded: one wait for the scalar stores
      // to reach L1 instead of one per tap.
      alignas(64) float lane[9][kLanes];
      if (taps_contiguous && o0 + kLanes <= j.O && c < j.C) {
        const T* p = w + o0 * j.ws[0] + c * j.ws[1];
        for (int64_t l = 0; l < kLanes; ++l, p += j.ws[0])
          for (int k = 0; k < 9; ++k) lane[k][l] = to_float(p[j.flip_taps ? 8 - k : k]);
      } else {
        for (int64_t l = 0; l < kLanes; ++l) {
          const int64_t o = o0 + l;
          const bool inside = o < j.O && c < j.C;
          const T* p = w + o * j.ws[0] + c * j.ws[1];
          for (int a = 0; a < 3; ++a)
            for (int b = 0; b < 3; ++b) {
              const int64_t ra = j.flip_taps ? 2 - a : a, rb = j.flip_taps ? 2 - b : b;
              lane[a * 3 + b][l] = inside ? to_float(p[ra * j.ws[2] + rb * j.ws[3]]) : 0.0f;
            }
        }
      }
      vf g[3][3];
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) g[a][b] = vload(lane[a * 3 + b]);
      vf gg[6][3];  // G g (rows xi, columns b)
      for (int b = 0; b < 3; ++b) {
        const vf col[3] = {g[0][b], g[1][b], g[2][b]};
        vf out[6];
        g3(col, out);
        for (int x = 0; x < 6; ++x) gg[x][b] = out[x];
      }
      for (int x = 0; x < 6; ++x) {
        vf out[6];
        g3(gg[x], out);
        for (int v = 0; v < 6; ++v) {
          if (j.stream_u) stream_store(u_at(j, x * 6 + v, c, o0), out[v]);
          else vstore(u_at(j, x * 6 + v, c, o0), out[v]);
        }
      }
    }
  }
  if (j.stream_u) stream_fence();  // before other threads' GEMMs read U
}

// The norm's activation on a normalised value (normalize-on-load), scalar and vector; as
// torch.relu / leaky_relu (NaN passes through).
inline float norm_value(const WinogradJob& j, float v) {
  return j.nact == 1 ? (v < 0.f ? 0.f : v) : j.nact == 2 ? (v < 0.f ? v * j.nslope : v) : v;
}
inline vf norm_vector(const WinogradJob& j, const vf& x, const vf& scale, const vf& shift) {
  const vf v = x * scale + shift;
  if (j.nact == 1) return by_pieces<vf>([](auto p) { return max0(p); }, v);
  if (j.nact == 2) {
    const float slope = j.nslope;
    return by_pieces<vf>([slope](auto p) { return p < decltype(p){} ? p * slope : p; }, v);
  }
  return v;
}

// Channels not contiguous (NCHW): the 6 padded input rows of a block's tiles (one tile row,
// columns [q0, q0 + ncols)) packed channels-last into P[i][k][c], c < Cpad (zeros past C), so
// the transform reads whole channel vectors. Read along rows, written with stride Cpad inside a
// buffer that stays in L2: one pass over the input instead of a gather per element.
template <typename T>
void pack_rows(const WinogradJob& j, int64_t n, int64_t r0, int64_t q0, int64_t ncols,
               float* P) {
  const T* xn = static_cast<const T*>(j.x) + n * j.xs[0];
  for (int i = 0; i < 6; ++i) {
    const int64_t r = j.row_src[r0 + i];
    float* prow = P + i * ncols * j.Cpad;
    for (int64_t c = 0; c < j.C; ++c) {
      float* dst = prow + c;
      if (r < 0) {
        for (int64_t k = 0; k < ncols; ++k) dst[k * j.Cpad] = 0.0f;
        continue;
      }
      const T* src = xn + c * j.xs[1] + r * j.xs[2];
      if (j.nscale != nullptr) {  // normalize-on-load: real pixels only, zero padding stays 0
        const float sc = j.nscale[n * j.Cpad + c], sh = j.nshift[n * j.Cpad + c];
        for (int64_t k = 0; k < ncols; ++k) {
          const int64_t q = j.col_src[q0 + k];
          dst[k * j.Cpad] = q < 0 ? 0.0f : norm_value(j, to_float(src[q * j.xs[3]]) * sc + sh);
        }
        continue;
      }
      for (int64_t k = 0; k < ncols; ++k) {
        const int64_t q = j.col_src[q0 + k];
        dst[k * j.Cpad] = q < 0 ? 0.0f : to_float(src[q * j.xs[3]]);
      }
    }
    if (j.Cpad > j.C)
      for (int64_t k = 0; k < ncols; ++k)
        std::memset(prow + k * j.Cpad + j.C, 0, sizeof(float) * (j.Cpad - j.C));
  }
}

// The input transform reads the input straight from memory (a layer's input is far larger
// than the caches): each tile asks for the pixels of the tile kPrefetchTiles ahead that it does
// not share with the tiles before it (its last 4 columns), so the loads find them in cache.
constexpr int64_t kPrefetchTiles = 2;

template <typename T>
inline void prefetch_tile(const WinogradJob& j, const T* xn, int64_t t) {
  const int64_t r0 = (t / j.tiles_w) * 4, q0 = (t % j.tiles_w) * 4;
  const int64_t bytes = j.C * static_cast<int64_t>(sizeof(T));
  for (int i = 0; i < 6; ++i) {
    const int64_t r = j.row_src[r0 + i];
    if (r < 0) continue;
    for (int k = 2; k < 6; ++k) {
      const int64_t q = j.col_src[q0 + k];
      if (q < 0) continue;
      const char* p = reinterpret_cast<const char*>(xn + r * j.xs[2] + q * j.xs[3]);
      for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b);
    }
  }
}

// V[xi][t][c] = (B^T d B)[xi] for the tiles [t_begin, t_begin + count) of image n, in rows
// [0, count) of V (rows of one point j.block apart). With P (NCHW input), the tiles lie in one
// tile row and d is read from the packed rows.
template <typename T>
void input_transform(const WinogradJob& j, int64_t n, int64_t t_begin, int64_t count, float* V,
                     float* P) {
  const T* xn = static_cast<const T*>(j.x) + n * j.xs[0];
  // The ReLU gate (input gradient of a conv + ReLU; never with P): same strides as x.
  const T* gn = j.gate == nullptr ? nullptr : static_cast<const T*>(j.gate) + n * j.xs[0];
  const bool channels_contiguous = j.xs[1] == 1;
  int64_t ncols = 0;
  if (P != nullptr) {
    ncols = count * 4 + 2;
    pack_rows<T>(j, n, (t_begin / j.tiles_w) * 4, (t_begin % j.tiles_w) * 4, ncols, P);
  }
  for (int64_t tb = 0; tb < count; ++tb) {
    const int64_t t = t_begin + tb;
    const int64_t r0 = (t / j.tiles_w) * 4, q0 = (t % j.tiles_w) * 4;
    if (P == nullptr && tb + kPrefetchTiles < count) prefetch_tile<T>(j, xn, t + kPrefetchTiles);
    const T* rows[6];
    const float* packed[6];
    int64_t cols[6];
    for (int i = 0; i < 6; ++i) {
      if (P != nullptr) {
        packed[i] = P + (i * ncols + tb * 4) * j.Cpad;
        rows[i] = xn;  // unused
        cols[i] = i * j.Cpad;
        continue;
      }
      const int64_t r = j.row_src[r0 + i];
      rows[i] = r < 0 ? nullptr : xn + r * j.xs[2];
      const int64_t q = j.col_src[q0 + i];
      cols[i] = q < 0 ? -1 : q * j.xs[3];
    }
    for (int64_t c0 = 0; c0 < j.Cpad; c0 += kLanes) {
      const bool full = channels_contiguous && c0 + kLanes <= j.C;
      // Normalize-on-load (never with P, whose rows pack_rows normalised already).
      const bool norm = j.nscale != nullptr && P == nullptr;
      const vf nsc = norm ? vload(j.nscale + n * j.Cpad + c0) : vf{};
      const vf nsh = norm ? vload(j.nshift + n * j.Cpad + c0) : vf{};
      vf d[6][6];
      for (int i = 0; i < 6; ++i)
        for (int k = 0; k < 6; ++k) {
          if (P != nullptr) {
            d[i][k] = vload(packed[i] + cols[k] + c0);
          } else if (rows[i] == nullptr || cols[k] < 0) {
            d[i][k] = vf{};
          } else {
            d[i][k] = gather16(rows[i] + cols[k], c0, j.C, j.xs[1], full);
            if (norm) d[i][k] = norm_vector(j, d[i][k], nsc, nsh);
            if (gn != nullptr) {  // relu's backward: the gradient where the output was > 0
              const vf gate = gather16(gn + (rows[i] - xn) + cols[k], c0, j.C, j.xs[1], full);
              d[i][k] = by_pieces<vf>(
                  [](auto g, auto v) { return g > decltype(g){} ? v : decltype(v){}; }, gate,
                  d[i][k]);
            }
          }
        }
      vf out[6][6];
      patch_transform(d, out);
      for (int x = 0; x < 6; ++x)
        for (int v = 0; v < 6; ++v)
          vstore(V + ((x * 6 + v) * j.block + tb) * j.Cpad + c0, out[x][v]);
    }
  }
}

// M[t][o] (+)= sum_c V[t][c] U[c][o] over one slice of input channels, for one panel of output
// channels and rows [0, rows) of one transform-domain point: V rows ldv apart, M rows ldm apart,
// the U panel slice packed (NV * kLanes floats a row). Register-blocked: kMR rows x NV vectors
// of accumulators, one broadcast of V and NV loads of U per kMR * NV FMAs.
template <int NV>
inline void gemm_panel(const float* V, const float* U, float* M, int64_t rows, int64_t kc,
                       int64_t ldv, int64_t ldm, bool accumulate) {
  constexpr int64_t ldu = NV * kLanes;
  for (int64_t t0 = 0; t0 < rows; t0 += kMR) {
    vf acc[kMR][NV];
    for (int r = 0; r < kMR; ++r)
      for (int v = 0; v < NV; ++v)
        acc[r][v] = accumulate ? vload(M + (t0 + r) * ldm + v * kLanes) : vf{};
    const float* vrow = V + t0 * ldv;
    const float* u = U;
    for (int64_t c = 0; c < kc; ++c, u += ldu) {
      vf uv[NV];
      for (int v = 0; v < NV; ++v) uv[v] = vload(u + v * kLanes);
      for (int r = 0; r < kMR; ++r) {
        const vf a = vsplat_load<NV>(vrow + r * ldv + c);
        for (int v = 0; v < NV; ++v) acc[r][v] += a * uv[v];
      }
    }
    for (int r = 0; r < kMR; ++r)
      for (int v = 0; v < NV; ++v) vstore(M + (t0 + r) * ldm + v * kLanes, acc[r][v]);
  }
}

// The block's 36 GEMMs, M_x = V_x U_x over rows [0, rows) (a multiple of kMR). Per point, slices
// of kKC input channels outermost: each U panel slice (32 KB) is loaded once into L1 and used
// for all of the block's tiles, the V slice (rows x kKC) stays in L2 across the panels, and M
// is accumulated slice by slice. Wide layers thus stream U once per block at L1 reuse, whatever
// the block size.
void gemm(const WinogradJob& j, const float* V, float* M, int64_t rows) {
  for (int64_t x = 0; x < 36; ++x) {
    const float* Vx = V + x * j.block * j.Cpad;
    float* Mx = M + x * j.block * j.Opad;
    for (int64_t c0 = 0; c0 < j.Cpad; c0 += kKC) {
      const int64_t kc = std::min(kKC, j.Cpad - c0);
      for (int64_t o0 = 0; o0 < j.Opad; o0 += panel_width(j, o0)) {
        const float* Up = u_at(j, x, c0, o0);
        if (panel_width(j, o0) == kPanel)
          gemm_panel<kNV>(Vx + c0, Up, Mx + o0, rows, kc, j.Cpad, j.Opad, c0 > 0);
        else
          gemm_panel<1>(Vx + c0, Up, Mx + o0, rows, kc, j.Cpad, j.Opad, c0 > 0);
      }
    }
  }
}

// out[n, o, 4 ty + a, 4 tx + b] = (A^T M A)[a][b] + bias[o], for the pixels inside the output
// (max(0, .) of it with j.relu). With j.pool > 1 (2 or 4: the input gradient of a folded
// upsampling) each pool x pool block of a tile is summed and stored as one pixel of y, which
// holds (HO / pool, WO / pool): blocks never straddle tiles, whose origins are multiples of 4.
//
// Epilogue extras (norm_conv2d): the residual is added before the activation; with `part` (a
// statistics partial, layout in WinogradJob) the stored values' count and shifted sums around
// K (the piece's first output, so the sums stay small against the spread) are accumulated.
template <typename T>
void output_transform(const WinogradJob& j, int64_t n, int64_t t_begin, int64_t count,
                      const float* M, float* part = nullptr) {
  T* yn = static_cast<T*>(j.y) + n * j.ys[0];
  const T* rn = j.residual == nullptr ? nullptr : static_cast<const T*>(j.residual) + n * j.rs[0];
  const bool residual_contiguous = j.rs[1] == 1;
  const bool channels_contiguous = j.ys[1] == 1;
  for (int64_t tb = 0; tb < count; ++tb) {
    const int64_t t = t_begin + tb;
    const int64_t y0 = (t / j.tiles_w) * 4, x0 = (t % j.tiles_w) * 4;
    const int64_t rows = std::min<int64_t>(4, j.HO - y0), cols = std::min<int64_t>(4, j.WO - x0);
    for (int64_t o0 = 0; o0 < j.Opad; o0 += kLanes) {
      vf tmp[4][6];  // A^T m: tmp[a][v]
      for (int v = 0; v < 6; ++v) {
        vf col[6];
        for (int x = 0; x < 6; ++x) col[x] = vload(M + ((x * 6 + v) * j.block + tb) * j.Opad + o0);
        vf out[4];
        at6(col, out);
        for (int a = 0; a < 4; ++a) tmp[a][v] = out[a];
      }
      const vf bias = j.bias == nullptr ? vf{} : vload(j.bias + o0);
      const bool full = channels_contiguous && o0 + kLanes <= j.O;
      auto store = [&](T* p, const vf& value) {
        if (full) {
          store16(p + o0, value);
        } else {
          alignas(64) float lane[kLanes];
          vstore(lane, value);
          for (int64_t l = 0; l < kLanes && o0 + l < j.O; ++l)
            p[(o0 + l) * j.ys[1]] = static_cast<T>(lane[l]);
        }
      };
      if (j.pool > 1) {
        vf sum[4][4] = {};
        for (int a = 0; a < rows; ++a) {
          vf out[4];
          at6(tmp[a], out);
          for (int b = 0; b < cols; ++b) sum[a / j.pool][b / j.pool] += out[b] + bias;
        }
        for (int a = 0; a < (rows + j.pool - 1) / j.pool; ++a)
          for (int b = 0; b < (cols + j.pool - 1) / j.pool; ++b)
            store(yn + (y0 / j.pool + a) * j.ys[2] + (x0 / j.pool + b) * j.ys[3], sum[a][b]);
        continue;
      }
      vf k{}, s1{}, s2{};
      if (part != nullptr) {
        s1 = vload(part + 2 + j.Opad + o0);
        s2 = vload(part + 2 + 2 * j.Opad + o0);
      }
      for (int a = 0; a < rows; ++a) {
        vf out[4];
        at6(tmp[a], out);
        T* prow = yn + (y0 + a) * j.ys[2];
        for (int b = 0; b < cols; ++b) {
          vf value = out[b] + bias;
          if (rn != nullptr)
            value += gather16(rn + (y0 + a) * j.rs[2] + (x0 + b) * j.rs[3], o0, j.O, j.rs[1],
                              residual_contiguous && o0 + kLanes <= j.O);
          if (j.relu) value = by_pieces<vf>([](auto piece) { return max0(piece); }, value);
          store(prow + (x0 + b) * j.ys[3], value);
          if (part != nullptr) {
            if (tb == 0 && a == 0 && b == 0) vstore(part + 2 + o0, value);  // the shift K
            if (a == 0 && b == 0) k = vload(part + 2 + o0);
            const vf dv = value - k;
            s1 += dv;
            s2 += dv * dv;
          }
        }
      }
      if (part != nullptr) {
        vstore(part + 2 + j.Opad + o0, s1);
        vstore(part + 2 + 2 * j.Opad + o0, s2);
      }
    }
  }
}

// Blocks [begin, end) of the job's enumeration, with this thread's buffers. Channels-last
// input: block b holds tiles [b * block, (b + 1) * block) of all images' tiles in order (across
// tile rows and images: wide layers want blocks larger than one image). Other layouts: blocks
// are segments of one tile row of one image (what pack_rows packs).
template <typename T>
void run_blocks(const WinogradJob& j, int64_t begin, int64_t end) {
  float* const V = scratch(kScratchV, static_cast<size_t>(36 * j.block * j.Cpad));
  float* const M = scratch(kScratchM, static_cast<size_t>(36 * j.block * j.Opad));
  float* const P =
      j.pack ? scratch(kScratchP, static_cast<size_t>(6 * (j.block * 4 + 2) * j.Cpad)) : nullptr;
  // The block's pieces, one per image it touches: (image, first tile, tiles).
  struct Piece {
    int64_t n, t_begin, count;
  };
  std::vector<Piece> pieces;
  for (int64_t b = begin; b < end; ++b) {
    pieces.clear();
    if (j.pack) {
      const int64_t n = b / j.blocks, i = b % j.blocks;
      const int64_t row = i / j.segments, first = (i % j.segments) * j.block;
      pieces.push_back({n, row * j.tiles_w + first, std::min(j.block, j.tiles_w - first)});
    } else {
      const int64_t g0 = b * j.block, g1 = std::min(g0 + j.block, j.batch * j.tiles);
      for (int64_t g = g0; g < g1;) {
        const int64_t n = g / j.tiles, t = g % j.tiles, count = std::min(g1 - g, j.tiles - t);
        pieces.push_back({n, t, count});
        g += count;
      }
    }
    int64_t filled = 0;
    for (const Piece& p : pieces) {
      input_transform<T>(j, p.n, p.t_begin, p.count, V + filled * j.Cpad, P);
      filled += p.count;
    }
    // A partial last block: the GEMM runs whole kMR-row steps; rows past the tiles are zeroed
    // (their products are never stored).
    const int64_t rows = (filled + kMR - 1) / kMR * kMR;
    for (int64_t x = 0; x < 36 && rows > filled; ++x)
      std::memset(V + (x * j.block + filled) * j.Cpad, 0,
                  sizeof(float) * (rows - filled) * j.Cpad);
    gemm(j, V, M, rows);
    int64_t done = 0;
    for (const Piece& p : pieces) {
      // Statistics partial of this piece: packed blocks are per image (piece = block); a
      // channels-last block's pieces are its images, and block + image numbers them in order.
      float* part = nullptr;
      if (j.partials != nullptr) {
        part = j.partials + (j.pack ? b : b + p.n) * j.partial_floats;
        std::memset(part, 0, sizeof(float) * j.partial_floats);
        part[1] = static_cast<float>(p.n);
      }
      output_transform<T>(j, p.n, p.t_begin, p.count, M + done * j.Opad, part);
      if (part != nullptr) {
        int64_t stored = 0;  // outputs the piece stored (tiles clipped at the edges)
        for (int64_t t = p.t_begin; t < p.t_begin + p.count; ++t) {
          const int64_t ty = (t / j.tiles_w) * 4, tx = (t % j.tiles_w) * 4;
          stored += std::min<int64_t>(4, j.HO - ty) * std::min<int64_t>(4, j.WO - tx);
        }
        part[0] = static_cast<float>(stored);
      }
      done += p.count;
    }
  }
}

constexpr int kTileRows = kMR;
const KernelTable kernel_table = {&weight_transform<float>, &run_blocks<float>,
                                  &weight_transform<c10::BFloat16>, &run_blocks<c10::BFloat16>,
                                  kTileRows};
