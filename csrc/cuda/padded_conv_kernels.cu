// Device code of the fused padded convolution: forward, input gradient, weight gradient; the
// forward's normalize-on-load variant (norm_conv2d_fwd) and the merge of its output statistics.
// No torch headers; the interface and the algorithm are described in padded_conv_kernels.h.
//
// Each kernel is a shared-memory implicit GEMM: per K step of 16, every thread gathers 4 A and
// 4 B elements (its A row / B column is fixed, so the row's pixel decomposition is done once),
// converts them to the accumulation type and stores them in shared memory; then each thread
// multiplies a 4x4 micro-tile. Rows / columns of a micro-tile are 16 apart so that a warp's
// shared-memory reads are broadcasts. No tensor cores (optional in the issue); fp32 accumulation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "accumulate.h"
#include "padded_conv_kernels.h"

namespace stylize_fast {
namespace cuda {
namespace conv {
namespace {

using namespace device;  // accumulate.h: acc_t, to_acc, Cast

static_assert(kThreads == 4 * kTileM && kThreads == 4 * kTileN && kTileK == 16,
              "the loaders assume 256 threads = 64 rows x 4 k-lanes, 4 elements each");

// Padding index map: unpadded coordinate i -> source index, or -1 (zeros padding).
__device__ __forceinline__ int source_index(int i, int size, int mode) {
  if (mode == 1) {
    i = i < 0 ? -i : i;
    i = i >= size ? 2 * size - 2 - i : i;
  } else if (mode == 2) {
    i = min(max(i, 0), size - 1);
  }
  return (i >= 0 && i < size) ? i : -1;
}

// The v-th unpadded coordinate the index map sends to source pixel p (see the header):
// v = 0 is p; v = d in 1..pad is -d; v = pad + d is size - 1 + d. Returns whether it maps to p.
__device__ __forceinline__ bool variant_coord(int p, int size, int pad, int v, int mode,
                                              int& coord) {
  if (v == 0) {
    coord = p;
    return true;
  }
  const bool right = v > pad;
  const int d = right ? v - pad : v;
  coord = right ? size - 1 + d : -d;
  const int target = mode == 1 ? (right ? size - 1 - d : d) : (right ? size - 1 : 0);
  return p == target;
}

// Taps worth visiting for variant v: a border variant reads one coordinate c for all its
// pixels, so exactly the taps k with c + pad - k = o * stride, 0 <= o < out reach an output.
struct TapRange {
  int lo, step, count;
};
__device__ __forceinline__ TapRange tap_range(int v, int size, int pad, int k, int stride,
                                              int out) {
  if (v == 0) return {0, 1, k};
  const int c = v > pad ? size - 1 + (v - pad) : -v;
  int lo = max(c + pad - (out - 1) * stride, 0);
  const int hi = min(c + pad, k - 1);
  if (lo > hi) return {0, stride, 0};
  lo += (c + pad - lo) % stride;
  return {lo, stride, lo > hi ? 0 : (hi - lo) / stride + 1};
}

// grad_output element at offset y_off (in grad_output's strides) of pixel (n, oh, ow), channel
// co, through relu's mask: zero where the forward's output is <= 0 (as threshold_backward).
template <typename T>
__device__ __forceinline__ acc_t<T> masked_grad(const T* gy, int64_t y_off, const ConvShape& s,
                                                int64_t n, int co, int oh, int ow) {
  const acc_t<T> g = to_acc(gy[y_off]);
  if (s.activation != 1) return g;
  const T* out = static_cast<const T*>(s.out);
  const acc_t<T> o = to_acc(out[n * s.o_stride[0] + co * s.o_stride[1] + oh * s.o_stride[2] +
                                ow * s.o_stride[3]]);
  return o <= acc_t<T>(0) ? acc_t<T>(0) : g;
}

// acc[i][j] += sum_kk As[kk][ty + 16 i] * Bs[kk][tx + 16 j]
template <typename A>
__device__ __forceinline__ void mma_tile(const A (&As)[kTileK][kTileM],
                                         const A (&Bs)[kTileK][kTileN], A (&acc)[4][4], int tx,
                                         int ty) {
#pragma unroll
  for (int kk = 0; kk < kTileK; ++kk) {
    A a[4], b[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
    for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
  }
}

// The normalize-on-load map of one loaded element of channel ci (scale_n / shift_n: the
// row's image; nullptr: none). NaN passes both activations, as torch's.
template <typename A>
__device__ __forceinline__ A normalize_on_load(A v, const A* __restrict__ scale_n,
                                               const A* __restrict__ shift_n, int ci, int act,
                                               A slope) {
  if (scale_n == nullptr) return v;
  v = fma(v, scale_n[ci], shift_n[ci]);
  if (act == 1) return v < A(0) ? A(0) : v;
  if (act == 2) return v < A(0) ? v * slope : v;
  return v;
}

// Per-tile statistics of the norm conv's outputs (acc: this thread's stored values, rows
// ty + 16 i, columns tx + 16 j of the tile). For each image whose rows the tile holds (a tile
// straddles images where oh * ow is not a multiple of 64): its count, its mean and the sum of
// squared deviations from that mean (two passes over registers, so centred within the tile),
// per column, into slot blockIdx.x + image. As / Bs (free after the main loop) hold the 16
// per-thread partials of each column; every thread adds them in the same order, so the block
// agrees bitwise.
template <typename A>
__device__ __forceinline__ void tile_stats(const A (&acc)[4][4], A (&As)[kTileK][kTileM],
                                           A (&Bs)[kTileK][kTileN], const ConvShape& s,
                                           Moments<A>* __restrict__ partial, int m0, int co0,
                                           int tx, int ty) {
  const int M = static_cast<int>(s.n * s.oh * s.ow), HW = static_cast<int>(s.oh * s.ow);
  const int m_end = min(m0 + kTileM, M);
  const int c_out = static_cast<int>(s.c_out);
  const int img_last = (m_end - 1) / HW;
  for (int img = m0 / HW; img <= img_last; ++img) {  // block-uniform bounds
    const int lo = max(m0, img * HW) - m0, hi = min(m_end, img * HW + HW) - m0;
    const A count = A(hi - lo);
    A mean[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      A sum = A(0);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = ty + 16 * i;
        if (r >= lo && r < hi) sum += acc[i][j];
      }
      As[ty][tx + 16 * j] = sum;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      A sum = As[0][tx + 16 * j];
#pragma unroll
      for (int t = 1; t < 16; ++t) sum += As[t][tx + 16 * j];
      mean[j] = sum / count;
      A m2 = A(0);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = ty + 16 * i;
        const A d = acc[i][j] - mean[j];
        if (r >= lo && r < hi) m2 = fma(d, d, m2);
      }
      Bs[ty][tx + 16 * j] = m2;
    }
    // The next image's As writes come after this barrier, its Bs writes after the next one: no
    // third barrier needed.
    __syncthreads();
    if (ty == 0) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int co = co0 + tx + 16 * j;
        if (co >= c_out) continue;
        A m2 = Bs[0][tx + 16 * j];
#pragma unroll
        for (int t = 1; t < 16; ++t) m2 += Bs[t][tx + 16 * j];
        store_moments(partial + static_cast<int64_t>(blockIdx.x + img) * c_out + co,
                      Moments<A>{count, mean[j], m2});
      }
    }
  }
}

// kNorm: the normalize-on-load variant (norm_conv2d_fwd, NormArgs a); the plain instance ignores
// `a` and compiles to the plain forward.
template <typename T, bool kNorm>
__global__ void __launch_bounds__(kThreads)
    padded_conv_fwd_kernel(const T* __restrict__ x, const T* __restrict__ w,
                           const T* __restrict__ bias, T* __restrict__ y, const ConvShape s,
                           const NormArgs a) {
  using A = acc_t<T>;
  __shared__ A As[kTileK][kTileM];
  __shared__ A Bs[kTileK][kTileN];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int lr = tid % kTileM, lk = tid / kTileM;
  const int M = static_cast<int>(s.n * s.oh * s.ow);
  const int K = static_cast<int>(s.c_in) * s.kh * s.kw;
  const int m0 = blockIdx.x * kTileM, co0 = blockIdx.y * kTileN;

  // The A row (output pixel) and B column (output channel) this thread loads.
  const int m = m0 + lr;
  const bool row_ok = m < M;
  const int ow = row_ok ? m % static_cast<int>(s.ow) : 0;
  const int oh = row_ok ? (m / static_cast<int>(s.ow)) % static_cast<int>(s.oh) : 0;
  const int64_t n = row_ok ? m / static_cast<int>(s.ow * s.oh) : 0;
  const T* x_n = x + n * s.x_stride[0];
  const int ih0 = oh * s.stride_h - s.pad_h, iw0 = ow * s.stride_w - s.pad_w;
  const int co = co0 + lr;
  const bool col_ok = co < s.c_out;
  const T* w_co = w + (col_ok ? co : 0) * s.w_stride[0];
  const int c_in = static_cast<int>(s.c_in);
  const int up = s.up > 1 ? s.up : 1;
  // kNorm: the row's image's scale / shift (nullptr: no norm).
  const A* scale_n = nullptr;
  const A* shift_n = nullptr;
  A slope = A(0);
  if constexpr (kNorm) {
    if (a.scale != nullptr) {
      scale_n = static_cast<const A*>(a.scale) + n * s.c_in;
      shift_n = static_cast<const A*>(a.shift) + n * s.c_in;
    }
    slope = static_cast<A>(a.negative_slope);
  }

  A acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = A(0);

  for (int k0 = 0; k0 < K; k0 += kTileK) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int kk = lk + 4 * i, k = k0 + kk;
      A av = A(0), bv = A(0);
      if (k < K) {
        const int tap = k / c_in, ci = k - tap * c_in;
        const int kh = tap / s.kw, kw = tap - kh * s.kw;
        if (row_ok) {
          const int ih = source_index(ih0 + kh, static_cast<int>(s.h), s.mode);
          const int iw = source_index(iw0 + kw, static_cast<int>(s.w), s.mode);
          if (ih >= 0 && iw >= 0) {
            av = to_acc(x_n[ci * s.x_stride[1] + ih / up * s.x_stride[2] +
                            iw / up * s.x_stride[3]]);
            // Real pixels only: zero padding pads the normalised tensor.
            if constexpr (kNorm)
              av = normalize_on_load(av, scale_n, shift_n, ci, a.input_activation, slope);
          }
        }
        if (col_ok)
          bv = to_acc(w_co[ci * s.w_stride[1] + kh * s.w_stride[2] + kw * s.w_stride[3]]);
      }
      As[kk][lr] = av;
      Bs[kk][lr] = bv;
    }
    __syncthreads();
    mma_tile(As, Bs, acc, tx, ty);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int mi = m0 + ty + 16 * i;
    if (mi >= M) continue;
    const int owi = mi % static_cast<int>(s.ow);
    const int ohi = (mi / static_cast<int>(s.ow)) % static_cast<int>(s.oh);
    const int64_t ni = mi / static_cast<int>(s.ow * s.oh);
    T* y_pix = y + ni * s.y_stride[0] + ohi * s.y_stride[2] + owi * s.y_stride[3];
    const T* r_pix = nullptr;
    if constexpr (kNorm) {
      if (a.residual != nullptr)
        r_pix = static_cast<const T*>(a.residual) + ni * a.r_stride[0] + ohi * a.r_stride[2] +
                owi * a.r_stride[3];
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int coj = co0 + tx + 16 * j;
      if (coj >= s.c_out) continue;
      const A b = bias != nullptr ? to_acc(bias[coj]) : A(0);
      A v = acc[i][j] + b;
      if constexpr (kNorm) {
        if (r_pix != nullptr) v += to_acc(r_pix[coj * a.r_stride[1]]);
      }
      if (s.activation == 1) v = v < A(0) ? A(0) : v;  // relu; NaN passes, as torch.relu
      const T stored = Cast<T>::from(v);
      y_pix[coj * s.y_stride[1]] = stored;
      // The statistics are those of the stored (rounded) output, what the next layer reads.
      if constexpr (kNorm) acc[i][j] = to_acc(stored);
    }
  }
  if constexpr (kNorm) {
    if (a.stats_partial != nullptr)  // block-uniform: the barriers inside are safe
      tile_stats(acc, As, Bs, s, static_cast<Moments<A>*>(a.stats_partial), m0, co0, tx, ty);
  }
}

// Merges the partials of one (image, output channel) per thread, tiles in order, in float64
// with the k-way form of Chan et al.'s formula, as norm_conv_triton.py's host merge:
// mean = sum(n_t mean_t) / n, M2 = sum(M2_t) + sum(n_t (mean_t - mean)^2);
// rstd = 1 / sqrt(M2 / n + eps), rounded once to the statistics dtype.
template <typename A>
__global__ void __launch_bounds__(kThreads)
    norm_conv_stats_kernel(const Moments<A>* __restrict__ partial, A* __restrict__ mean,
                           A* __restrict__ rstd, int images, int c_out, int hw, double eps) {
  const int idx = blockIdx.x * kThreads + threadIdx.x;
  if (idx >= images * c_out) return;
  const int img = idx / c_out, co = idx - img * c_out;
  const int t_first = img * hw / kTileM, t_last = (img * hw + hw - 1) / kTileM;
  const Moments<A>* first = partial + static_cast<int64_t>(t_first + img) * c_out + co;
  const Moments<A>* end = first + static_cast<int64_t>(t_last - t_first + 1) * c_out;
  double sum = 0.0;
  for (const Moments<A>* p = first; p != end; p += c_out)
    sum += static_cast<double>(p->n) * static_cast<double>(p->mean);
  const double mu = sum / hw;
  double m2 = 0.0;
  for (const Moments<A>* p = first; p != end; p += c_out) {
    const double d = static_cast<double>(p->mean) - mu;
    m2 += static_cast<double>(p->m2) + static_cast<double>(p->n) * d * d;
  }
  mean[idx] = static_cast<A>(mu);
  rstd[idx] = static_cast<A>(rsqrt_acc(m2 / hw + eps));
}

// kUp: the folded upsampling factor, 1 (none), 2 (the generators' x2, a constant) or 0 (any,
// ConvShape::up). Instantiations of their own, so that the plain kernel keeps the registers it
// had. The loop over the upsampled pixels costs a few: under the compiler's default (64 here)
// the folded float / half / bfloat16 instances spill, so they ask for 3 blocks per SM (80
// registers, no spill); float64 (gradcheck only) keeps the default, which leaves it 94.
template <typename T, int kUp>
constexpr int kFoldMinBlocks = kUp == 1 || sizeof(T) == 8 ? 0 : 3;

template <typename T, int kUp>
__global__ void __launch_bounds__(kThreads, kFoldMinBlocks<T, kUp>)
    padded_conv_bwd_input_kernel(const T* __restrict__ gy, const T* __restrict__ w,
                                 T* __restrict__ gx, const ConvShape s, int variants_h,
                                 int variants_w) {
  using A = acc_t<T>;
  __shared__ A As[kTileK][kTileM];
  __shared__ A Bs[kTileK][kTileN];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int lr = tid % kTileM, lk = tid / kTileM;
  const int H = static_cast<int>(s.h), W = static_cast<int>(s.w);
  const int OH = static_cast<int>(s.oh), OW = static_cast<int>(s.ow);
  // Rows are the stored input's pixels: (H / up, W / up) with a folded upsampling.
  const int up = kUp == 0 ? s.up : kUp;
  const int HS = H / up, WS = W / up;
  const int M = static_cast<int>(s.n) * HS * WS;
  const int c_out = static_cast<int>(s.c_out);
  const int m0 = blockIdx.x * kTileM, ci0 = blockIdx.y * kTileN;

  // The A row (stored input pixel) and B column (input channel) this thread loads.
  const int m = m0 + lr;
  const bool row_ok = m < M;
  const int pws = row_ok ? m % WS : 0;
  const int phs = row_ok ? (m / WS) % HS : 0;
  const int64_t n = row_ok ? m / (WS * HS) : 0;
  const T* gy_n = gy + n * s.y_stride[0];
  const int ci = ci0 + lr;
  const bool col_ok = ci < s.c_in;
  const T* w_ci = w + (col_ok ? ci : 0) * s.w_stride[1];

  A acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = A(0);

  // Folded upsampling: each upsampled row / column that repeats the stored pixel, its variants
  // in turn (qh = sub-row * variants_h + variant; one loop each way keeps the registers).
  for (int qh = 0; qh < up * variants_h; ++qh) {
    const int vh = qh % variants_h, ph = phs * up + qh / variants_h;
    int ih;
    const bool ok_h = variant_coord(ph, H, s.pad_h, vh, s.mode, ih);
    const TapRange th = tap_range(vh, H, s.pad_h, s.kh, s.stride_h, OH);
    for (int qw = 0; qw < up * variants_w; ++qw) {
      const int vw = qw % variants_w, pw = pws * up + qw / variants_w;
      int iw;
      const bool ok_w = variant_coord(pw, W, s.pad_w, vw, s.mode, iw);
      const TapRange tw = tap_range(vw, W, s.pad_w, s.kw, s.stride_w, OW);
      const bool ok = row_ok && ok_h && ok_w;
      // Border variants reach few pixels: the whole block skips a pass none of its rows gets.
      if (!__syncthreads_or(ok)) continue;
      const int K = th.count * tw.count * c_out;
      for (int k0 = 0; k0 < K; k0 += kTileK) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int kk = lk + 4 * i, k = k0 + kk;
          A av = A(0), bv = A(0);
          if (k < K) {
            const int tap = k / c_out, co = k - tap * c_out;
            const int th_i = tap / tw.count, tw_i = tap - th_i * tw.count;
            const int kh = th.lo + th_i * th.step, kw = tw.lo + tw_i * tw.step;
            if (ok) {
              const int oh_s = ih + s.pad_h - kh, ow_s = iw + s.pad_w - kw;  // o * stride
              if (oh_s >= 0 && ow_s >= 0 && oh_s % s.stride_h == 0 && ow_s % s.stride_w == 0) {
                const int oh = oh_s / s.stride_h, ow = ow_s / s.stride_w;
                if (oh < OH && ow < OW)
                  av = masked_grad(gy_n, co * s.y_stride[1] + oh * s.y_stride[2] +
                                             ow * s.y_stride[3], s, n, co, oh, ow);
              }
            }
            if (col_ok)
              bv = to_acc(w_ci[co * s.w_stride[0] + kh * s.w_stride[2] + kw * s.w_stride[3]]);
          }
          As[kk][lr] = av;
          Bs[kk][lr] = bv;
        }
        __syncthreads();
        mma_tile(As, Bs, acc, tx, ty);
        __syncthreads();
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int mi = m0 + ty + 16 * i;
    if (mi >= M) continue;
    const int wi = mi % WS, hi = (mi / WS) % HS;
    const int64_t ni = mi / (WS * HS);
    T* gx_pix = gx + ni * s.x_stride[0] + hi * s.x_stride[2] + wi * s.x_stride[3];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int cij = ci0 + tx + 16 * j;
      if (cij < s.c_in) gx_pix[cij * s.x_stride[1]] = Cast<T>::from(acc[i][j]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    padded_conv_bwd_weight_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                  acc_t<T>* __restrict__ weight_partial,
                                  acc_t<T>* __restrict__ bias_partial,
                                  const ConvShape s, int64_t rows_per_split) {
  using A = acc_t<T>;
  __shared__ A As[kTileK][kTileM];
  __shared__ A Bs[kTileK][kTileN];
  __shared__ A bias_lanes[4][kTileM];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int lr = tid % kTileM, lk = tid / kTileM;
  const int H = static_cast<int>(s.h), W = static_cast<int>(s.w);
  const int OH = static_cast<int>(s.oh), OW = static_cast<int>(s.ow);
  const int M = static_cast<int>(s.n) * OH * OW;
  const int taps = s.kh * s.kw;
  const int J = static_cast<int>(s.c_in) * taps;  // columns: (c_in, kh, kw)
  const int co0 = blockIdx.x * kTileM, j0 = blockIdx.y * kTileN;
  const int split = blockIdx.z;
  const int m_begin = static_cast<int>(split * rows_per_split);
  const int m_end = min(M, static_cast<int>(m_begin + rows_per_split));

  // The A row (output channel) and B column ((c_in, kh, kw)) this thread loads.
  const int co = co0 + lr;
  const bool row_ok = co < s.c_out;
  const T* gy_co = gy + (row_ok ? co : 0) * s.y_stride[1];
  const int j = j0 + lr;
  const bool col_ok = j < J;
  const int ci = col_ok ? j / taps : 0;
  const int tap = col_ok ? j - ci * taps : 0;
  const int kh = tap / s.kw, kw = tap - kh * s.kw;
  const T* x_ci = x + ci * s.x_stride[1];
  const int up = s.up > 1 ? s.up : 1;

  A acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) acc[i][jj] = A(0);
  A bias_sum = A(0);

  for (int k0 = m_begin; k0 < m_end; k0 += kTileK) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int kk = lk + 4 * i, mk = k0 + kk;
      A av = A(0), bv = A(0);
      if (mk < m_end) {
        const int ow = mk % OW, oh = (mk / OW) % OH;
        const int64_t n = mk / (OW * OH);
        if (row_ok)
          av = masked_grad(gy_co, n * s.y_stride[0] + oh * s.y_stride[2] + ow * s.y_stride[3],
                           s, n, co, oh, ow);
        if (col_ok) {
          const int ih = source_index(oh * s.stride_h + kh - s.pad_h, H, s.mode);
          const int iw = source_index(ow * s.stride_w + kw - s.pad_w, W, s.mode);
          if (ih >= 0 && iw >= 0)
            bv = to_acc(x_ci[n * s.x_stride[0] + ih / up * s.x_stride[2] +
                             iw / up * s.x_stride[3]]);
        }
      }
      bias_sum += av;
      As[kk][lr] = av;
      Bs[kk][lr] = bv;
    }
    __syncthreads();
    mma_tile(As, Bs, acc, tx, ty);
    __syncthreads();
  }

  A* part = weight_partial + split * s.c_out * J;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int coi = co0 + ty + 16 * i;
    if (coi >= s.c_out) continue;
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
      const int jc = j0 + tx + 16 * jj;
      if (jc < J) part[static_cast<int64_t>(coi) * J + jc] = acc[i][jj];
    }
  }
  if (bias_partial != nullptr && blockIdx.y == 0) {
    // The 4 k-lanes of each row add up in a fixed order: deterministic.
    bias_lanes[lk][lr] = bias_sum;
    __syncthreads();
    if (tid < kTileM && co0 + tid < s.c_out)
      bias_partial[split * s.c_out + co0 + tid] =
          ((bias_lanes[0][tid] + bias_lanes[1][tid]) + bias_lanes[2][tid]) + bias_lanes[3][tid];
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T>
cudaError_t forward_typed(const ConvShape& s, const void* x, const void* w, const void* bias,
                          void* y, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(s.n * s.oh * s.ow, kTileM)),
                  static_cast<unsigned>(ceil_div(s.c_out, kTileN)));
  padded_conv_fwd_kernel<T, false><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias),
      static_cast<T*>(y), s, NormArgs{});
  return cudaGetLastError();
}

template <typename T>
cudaError_t norm_forward_typed(const ConvShape& s, const NormArgs& a, const void* x,
                               const void* w, const void* bias, void* y, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(s.n * s.oh * s.ow, kTileM)),
                  static_cast<unsigned>(ceil_div(s.c_out, kTileN)));
  padded_conv_fwd_kernel<T, true><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias),
      static_cast<T*>(y), s, a);
  return cudaGetLastError();
}

template <typename A>
cudaError_t norm_stats_typed(const ConvShape& s, const void* partial, double eps, void* mean,
                             void* rstd, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(s.n * s.c_out, kThreads)));
  norm_conv_stats_kernel<A><<<grid, kThreads, 0, stream>>>(
      static_cast<const Moments<A>*>(partial), static_cast<A*>(mean), static_cast<A*>(rstd),
      static_cast<int>(s.n), static_cast<int>(s.c_out), static_cast<int>(s.oh * s.ow), eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_input_typed(const ConvShape& s, const void* gy, const void* w, void* gx,
                                 cudaStream_t stream) {
  const int64_t up = s.up > 1 ? s.up : 1;  // rows: the stored input's pixels
  const dim3 grid(static_cast<unsigned>(ceil_div(s.n * (s.h / up) * (s.w / up), kTileM)),
                  static_cast<unsigned>(ceil_div(s.c_in, kTileN)));
  const int variants_h = s.mode == 0 ? 1 : 1 + 2 * s.pad_h;
  const int variants_w = s.mode == 0 ? 1 : 1 + 2 * s.pad_w;
  const auto kernel = up == 1   ? padded_conv_bwd_input_kernel<T, 1>
                     : up == 2 ? padded_conv_bwd_input_kernel<T, 2>
                               : padded_conv_bwd_input_kernel<T, 0>;
  kernel<<<grid, kThreads, 0, stream>>>(static_cast<const T*>(gy), static_cast<const T*>(w),
                                        static_cast<T*>(gx), s, variants_h, variants_w);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_weight_typed(const ConvShape& s, const WeightSplit& split, const void* gy,
                                  const void* x, void* weight_partial, void* bias_partial,
                                  cudaStream_t stream) {
  using A = acc_t<T>;
  const dim3 grid(static_cast<unsigned>(ceil_div(s.c_out, kTileM)),
                  static_cast<unsigned>(ceil_div(s.c_in * s.kh * s.kw, kTileN)),
                  static_cast<unsigned>(split.splits));
  padded_conv_bwd_weight_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(gy), static_cast<const T*>(x), static_cast<A*>(weight_partial),
      static_cast<A*>(bias_partial), s, split.rows);
  return cudaGetLastError();
}

}  // namespace

WeightSplit weight_split(const ConvShape& s) {
  const int64_t rows = s.n * s.oh * s.ow;
  const int64_t base = ceil_div(s.c_out, kTileM) * ceil_div(s.c_in * s.kh * s.kw, kTileN);
  // Enough blocks for ~2 waves on a 132-SM GPU, each reducing at least 16 K steps.
  int64_t splits = ceil_div(264, base);
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, ceil_div(rows, 16 * kTileK)));
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, 1024));
  const int64_t per = ceil_div(ceil_div(std::max<int64_t>(rows, 1), splits), kTileK) * kTileK;
  return {static_cast<int>(ceil_div(std::max<int64_t>(rows, 1), per)), per};
}

cudaError_t padded_conv2d_forward(DType dtype, const ConvShape& s, const void* x, const void* w,
                                  const void* bias, void* y, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return forward_typed<float>(s, x, w, bias, y, stream);
    case DType::kFloat16: return forward_typed<__half>(s, x, w, bias, y, stream);
    case DType::kBFloat16: return forward_typed<__nv_bfloat16>(s, x, w, bias, y, stream);
    case DType::kFloat64: return forward_typed<double>(s, x, w, bias, y, stream);
  }
  return cudaErrorInvalidValue;
}

int64_t stat_slots(const ConvShape& s) { return ceil_div(s.n * s.oh * s.ow, kTileM) + s.n; }

cudaError_t norm_conv2d_forward(DType dtype, const ConvShape& s, const NormArgs& a,
                                const void* x, const void* w, const void* bias, void* y,
                                cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return norm_forward_typed<float>(s, a, x, w, bias, y, stream);
    case DType::kFloat16: return norm_forward_typed<__half>(s, a, x, w, bias, y, stream);
    case DType::kBFloat16: return norm_forward_typed<__nv_bfloat16>(s, a, x, w, bias, y, stream);
    case DType::kFloat64: return norm_forward_typed<double>(s, a, x, w, bias, y, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t norm_conv2d_stats(DType dtype, const ConvShape& s, const void* stats_partial,
                              double eps, void* mean, void* rstd, cudaStream_t stream) {
  if (dtype == DType::kFloat64)
    return norm_stats_typed<double>(s, stats_partial, eps, mean, rstd, stream);
  return norm_stats_typed<float>(s, stats_partial, eps, mean, rstd, stream);
}

cudaError_t padded_conv2d_backward_input(DType dtype, const ConvShape& s, const void* grad_y,
                                         const void* w, void* grad_x, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return backward_input_typed<float>(s, grad_y, w, grad_x, stream);
    case DType::kFloat16: return backward_input_typed<__half>(s, grad_y, w, grad_x, stream);
    case DType::kBFloat16:
      return backward_input_typed<__nv_bfloat16>(s, grad_y, w, grad_x, stream);
    case DType::kFloat64: return backward_input_typed<double>(s, grad_y, w, grad_x, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t padded_conv2d_backward_weight(DType dtype, const ConvShape& s,
                                          const WeightSplit& split, const void* grad_y,
                                          const void* x, void* weight_partial,
                                          void* bias_partial, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return backward_weight_typed<float>(s, split, grad_y, x, weight_partial, bias_partial,
                                          stream);
    case DType::kFloat16:
      return backward_weight_typed<__half>(s, split, grad_y, x, weight_partial, bias_partial,
                                           stream);
    case DType::kBFloat16:
      return backward_weight_typed<__nv_bfloat16>(s, split, grad_y, x, weight_partial,
                                                  bias_partial, stream);
    case DType::kFloat64:
      return backward_weight_typed<double>(s, split, grad_y, x, weight_partial, bias_partial,
                                           stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace conv
}  // namespace cuda
}  // namespace stylize_fast
