// CUDA device code of fused instance norm + activation (ops instance_norm_fwd / _bwd).
// No torch headers here: the binding (instance_norm_cuda.cpp) checks arguments, allocates and
// calls the launchers declared in instance_norm_kernels.h. Schedules, thresholds and the
// bytes-moved argument: instance_norm_kernels.h and docs/gpu.md.
//
// Numerics: every value is accumulated in float (double for float64 input). Variance is always
// centred: on-chip planes take the exact two-pass form from registers; looping and split planes
// combine centred moments of small chunks with Chan's formula, never E[x^2] - E[x]^2.
// Determinism: reductions (warp shuffles, then shared memory, then the per-split and per-sample
// partials) always combine in the same order; there are no atomics.
// Indexing: plane / sample / row offsets are 64-bit; only in-plane offsets of the on-chip
// schedule (< 8192 elements) are 32-bit.
#include "instance_norm_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "accumulate.h"

namespace stylize_fast {
namespace cuda {
namespace {

using namespace device;  // accumulate.h: accumulation types, moments, reductions

// Vectors each thread keeps in flight in the looping passes (memory-level parallelism).
constexpr int kUnroll = 4;
// Backward loops keep two tensors (x, dz) in flight; 8-wide half vectors at 4 deep would hold
// 64 fp32 values and hit the 128-register cap of a 512-thread block, so they go 2 deep.
template <int VEC>
constexpr int bwd_unroll() {
  return VEC >= 8 ? 2 : kUnroll;
}

// ---------------------------------------------------------------------------------------------
// Vector loads and stores

// VEC consecutive elements moved as one 16-byte (or narrower, VEC == 1) transaction.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC, typename A>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, A* out) {
  const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[k] = to_acc(pk.v[k]);
}

template <typename T, int VEC, typename A>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const A* in) {
  Pack<T, VEC> pk;
#pragma unroll
  for (int k = 0; k < VEC; ++k) pk.v[k] = Cast<T>::from(in[k]);
  *reinterpret_cast<Pack<T, VEC>*>(p) = pk;
}

// ---------------------------------------------------------------------------------------------
// Activation and its derivative (from the pre-activation value, recomputed in backward)

template <typename A>
__device__ __forceinline__ A activate(A v, int act, A slope) {
  if (act == 1) return v < A(0) ? A(0) : v;  // keeps NaN, like torch.relu
  if (act == 2) return v > A(0) ? v : v * slope;
  return v;
}

// d act / d pre, as torch's threshold_backward / leaky_relu_backward (pre > 0 passes the grad).
template <typename A>
__device__ __forceinline__ A activation_grad(A pre, int act, A slope) {
  if (act == 0) return A(1);
  return pre > A(0) ? A(1) : (act == 1 ? A(0) : slope);
}

template <typename A>
__device__ __forceinline__ A affine_at(const A* t, int64_t n, int64_t c, int64_t stride_n,
                                       A absent) {
  return t != nullptr ? t[n * stride_n + c] : absent;
}

// Block-index arithmetic in 32 bits: the binding keeps grids below 2^31 blocks and N * C below
// 2^31, and a 64-bit division is a slow subroutine call that also costs registers and stack.
__device__ __forceinline__ int64_t div32(int64_t a, int64_t b) {
  return int64_t(unsigned(a) / unsigned(b));
}

// ---------------------------------------------------------------------------------------------
// Kernel parameters (by value)

template <typename A>
struct FwdParams {
  A* mean;
  A* rstd;
  const A* weight;
  const A* bias;
  int64_t weight_stride_n, bias_stride_n;
  int64_t C, HW;
  A inv_hw;  // 1 / HW from the host: a float64 division on the device is a subroutine call
  A eps, slope;
  int act;
};

template <typename A>
struct BwdParams {
  const A* mean;
  const A* rstd;
  const A* weight;
  const A* bias;
  int64_t weight_stride_n, bias_stride_n;
  int64_t C, HW;
  A inv_hw;
  A slope;
  int act;
  A* sums;  // (N * C, 2): sum(g), sum(g * xhat)
};

// Per-(n, c) constants of the backward: xhat = (x - mean) * rstd, pre = xhat * w + b.
template <typename A>
struct BwdPlane {
  A mean, rstd, w, b;
};

template <typename A, typename P>
__device__ __forceinline__ BwdPlane<A> bwd_plane(const P& p, int64_t n, int64_t c) {
  const int64_t nc = n * p.C + c;
  return {p.mean[nc], p.rstd[nc], affine_at(p.weight, n, c, p.weight_stride_n, A(1)),
          affine_at(p.bias, n, c, p.bias_stride_n, A(0))};
}

// g = dL/dpre and xhat for one element.
template <typename A>
__device__ __forceinline__ void bwd_element(const BwdPlane<A>& q, A x, A dz, int act, A slope,
                                            A& xhat, A& g) {
  xhat = (x - q.mean) * q.rstd;
  g = dz * activation_grad(xhat * q.w + q.b, act, slope);
}

// ---------------------------------------------------------------------------------------------
// NCHW building blocks: one plane (or one split of it), 1-D block, VEC-element loads

template <typename T, int VEC, typename A>
__device__ __forceinline__ Moments<A> thread_plane_moments(const T* __restrict__ p, int64_t len) {
  Moments<A> m{A(0), A(0), A(0)};
  const int64_t step = int64_t(blockDim.x) * VEC;
  int64_t i = int64_t(threadIdx.x) * VEC;
  for (; i + (kUnroll - 1) * step < len; i += kUnroll * step) {
    A v[kUnroll * VEC];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load_vec<T, VEC>(p + i + u * step, v + u * VEC);
    m = combine(m, chunk_moments<kUnroll * VEC>(v));
  }
  for (; i < len; i += step) {
    A v[VEC];
    load_vec<T, VEC>(p + i, v);
    m = combine(m, chunk_moments<VEC>(v));
  }
  return m;
}

template <typename T, int VEC, typename A>
__device__ __forceinline__ void plane_apply(const T* __restrict__ x, T* __restrict__ y,
                                            int64_t len, A mean, A scale, A shift, int act,
                                            A slope) {
  const int64_t step = int64_t(blockDim.x) * VEC;
  int64_t i = int64_t(threadIdx.x) * VEC;
  for (; i + (kUnroll - 1) * step < len; i += kUnroll * step) {
    A v[kUnroll * VEC];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load_vec<T, VEC>(x + i + u * step, v + u * VEC);
#pragma unroll
    for (int k = 0; k < kUnroll * VEC; ++k) v[k] = activate((v[k] - mean) * scale + shift, act, slope);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) store_vec<T, VEC>(y + i + u * step, v + u * VEC);
  }
  for (; i < len; i += step) {
    A v[VEC];
    load_vec<T, VEC>(x + i, v);
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[k] = activate((v[k] - mean) * scale + shift, act, slope);
    store_vec<T, VEC>(y + i, v);
  }
}

template <typename T, int VEC, typename A>
__device__ __forceinline__ void thread_plane_grad_sums(const T* __restrict__ dz,
                                                       const T* __restrict__ x, int64_t len,
                                                       const BwdPlane<A>& q, int act, A slope,
                                                       A (&s)[2]) {
  constexpr int U = bwd_unroll<VEC>();
  const int64_t step = int64_t(blockDim.x) * VEC;
  int64_t i = int64_t(threadIdx.x) * VEC;
  for (; i + (U - 1) * step < len; i += U * step) {
    A xv[U * VEC], dv[U * VEC];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      load_vec<T, VEC>(x + i + u * step, xv + u * VEC);
      load_vec<T, VEC>(dz + i + u * step, dv + u * VEC);
    }
#pragma unroll
    for (int k = 0; k < U * VEC; ++k) {
      A xhat, g;
      bwd_element(q, xv[k], dv[k], act, slope, xhat, g);
      s[0] += g;
      s[1] += g * xhat;
    }
  }
  for (; i < len; i += step) {
    A xv[VEC], dv[VEC];
    load_vec<T, VEC>(x + i, xv);
    load_vec<T, VEC>(dz + i, dv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      A xhat, g;
      bwd_element(q, xv[k], dv[k], act, slope, xhat, g);
      s[0] += g;
      s[1] += g * xhat;
    }
  }
}

// dx = rstd * w * (g - mean(g) - xhat * mean(g * xhat))
template <typename A>
struct DxCoef {
  A k, mean_g, mean_gx;
};

template <typename A>
__device__ __forceinline__ DxCoef<A> dx_coef(const BwdPlane<A>& q, A sum_g, A sum_gx, A inv_hw) {
  return {q.rstd * q.w, sum_g * inv_hw, sum_gx * inv_hw};
}

template <typename T, int VEC, typename A>
__device__ __forceinline__ void plane_dx(const T* __restrict__ dz, const T* __restrict__ x,
                                         T* __restrict__ dx, int64_t len, const BwdPlane<A>& q,
                                         const DxCoef<A>& k, int act, A slope) {
  constexpr int U = bwd_unroll<VEC>();
  const int64_t step = int64_t(blockDim.x) * VEC;
  int64_t i = int64_t(threadIdx.x) * VEC;
  for (; i + (U - 1) * step < len; i += U * step) {
    A xv[U * VEC], dv[U * VEC];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      load_vec<T, VEC>(x + i + u * step, xv + u * VEC);
      load_vec<T, VEC>(dz + i + u * step, dv + u * VEC);
    }
#pragma unroll
    for (int e = 0; e < U * VEC; ++e) {
      A xhat, g;
      bwd_element(q, xv[e], dv[e], act, slope, xhat, g);
      xv[e] = k.k * (g - k.mean_g - xhat * k.mean_gx);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) store_vec<T, VEC>(dx + i + u * step, xv + u * VEC);
  }
  for (; i < len; i += step) {
    A xv[VEC], dv[VEC];
    load_vec<T, VEC>(x + i, xv);
    load_vec<T, VEC>(dz + i, dv);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      A xhat, g;
      bwd_element(q, xv[e], dv[e], act, slope, xhat, g);
      xv[e] = k.k * (g - k.mean_g - xhat * k.mean_gx);
    }
    store_vec<T, VEC>(dx + i, xv);
  }
}

// ---------------------------------------------------------------------------------------------
// NCHW forward kernels

// (a) on chip: one block per (n, c); the plane is read once into registers.
template <typename T, int VEC>
__global__ void __launch_bounds__(kOnChipThreads)
    fwd_nchw_on_chip(const T* __restrict__ x, T* __restrict__ y, FwdParams<acc_t<T>> p) {
  using A = acc_t<T>;
  constexpr int kVecs = kOnChipItems / VEC;
  __shared__ A red[32];
  const int64_t nc = blockIdx.x;
  const int hw = int(p.HW);
  const T* xp = x + nc * p.HW;
  T* yp = y + nc * p.HW;
  A v[kOnChipItems];
  A s[1] = {A(0)};
#pragma unroll
  for (int r = 0; r < kVecs; ++r) {
    const int i = (r * int(blockDim.x) + int(threadIdx.x)) * VEC;
    if (i < hw) {
      load_vec<T, VEC>(xp + i, v + r * VEC);
#pragma unroll
      for (int k = 0; k < VEC; ++k) s[0] += v[r * VEC + k];
    }
  }
  block_sums<A, 1>(s, red);
  const A mean = s[0] * p.inv_hw;
  s[0] = A(0);
#pragma unroll
  for (int r = 0; r < kVecs; ++r) {
    const int i = (r * int(blockDim.x) + int(threadIdx.x)) * VEC;
    if (i < hw) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const A d = v[r * VEC + k] - mean;
        s[0] += d * d;
      }
    }
  }
  block_sums<A, 1>(s, red);
  const A rstd = rsqrt_acc(s[0] * p.inv_hw + p.eps);
  const int64_t n = div32(nc, p.C), c = nc - n * p.C;
  if (threadIdx.x == 0) {
    p.mean[nc] = mean;
    p.rstd[nc] = rstd;
  }
  const A scale = rstd * affine_at(p.weight, n, c, p.weight_stride_n, A(1));
  const A shift = affine_at(p.bias, n, c, p.bias_stride_n, A(0));
#pragma unroll
  for (int r = 0; r < kVecs; ++r) {
    const int i = (r * int(blockDim.x) + int(threadIdx.x)) * VEC;
    if (i < hw) {
      A o[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) o[k] = activate((v[r * VEC + k] - mean) * scale + shift, p.act, p.slope);
      store_vec<T, VEC>(yp + i, o);
    }
  }
}

// (b) looped: one block per (n, c); statistics pass, then apply pass.
template <typename T, int VEC>
__global__ void __launch_bounds__(kPlaneThreads)
    fwd_nchw_looped(const T* __restrict__ x, T* __restrict__ y, FwdParams<acc_t<T>> p) {
  using A = acc_t<T>;
  __shared__ Moments<A> red[32];
  const int64_t nc = blockIdx.x;
  const T* xp = x + nc * p.HW;
  const Moments<A> m = block_moments(thread_plane_moments<T, VEC, A>(xp, p.HW), red);
  const A rstd = rsqrt_acc(m.m2 * p.inv_hw + p.eps);
  const int64_t n = div32(nc, p.C), c = nc - n * p.C;
  if (threadIdx.x == 0) {
    p.mean[nc] = m.mean;
    p.rstd[nc] = rstd;
  }
  const A scale = rstd * affine_at(p.weight, n, c, p.weight_stride_n, A(1));
  const A shift = affine_at(p.bias, n, c, p.bias_stride_n, A(0));
  plane_apply<T, VEC, A>(xp, y + nc * p.HW, p.HW, m.mean, scale, shift, p.act, p.slope);
}

// (c) split, step 1: block (nc, s) writes the centred moments of its chunk.
template <typename T, int VEC>
__global__ void __launch_bounds__(kPlaneThreads)
    fwd_nchw_partial(const T* __restrict__ x, Moments<acc_t<T>>* __restrict__ partial,
                     int64_t HW, int64_t splits, int64_t chunk) {
  using A = acc_t<T>;
  __shared__ Moments<A> red[32];
  const int64_t nc = div32(blockIdx.x, splits), s = blockIdx.x - nc * splits;
  const int64_t begin = s * chunk;
  const int64_t len = (HW - begin) < chunk ? (HW - begin) : chunk;
  const Moments<A> m = block_moments(thread_plane_moments<T, VEC, A>(x + nc * HW + begin, len), red);
  if (threadIdx.x == 0) store_moments(partial + blockIdx.x, m);
}

// (c) split, step 2 (both layouts): combine each (n, c)'s splits in order -> mean, rstd.
template <typename A>
__global__ void fwd_finalize(const Moments<A>* __restrict__ partial, A* __restrict__ mean,
                             A* __restrict__ rstd, int64_t NC, int64_t splits, A inv_hw, A eps) {
  for (int64_t nc = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; nc < NC;
       nc += int64_t(gridDim.x) * blockDim.x) {
    Moments<A> m = partial[nc * splits];
    for (int64_t s = 1; s < splits; ++s) m = combine(m, partial[nc * splits + s]);
    mean[nc] = m.mean;
    rstd[nc] = rsqrt_acc(m.m2 * inv_hw + eps);
  }
}

// (c) split, step 3: block (nc, s) normalises its chunk.
template <typename T, int VEC>
__global__ void __launch_bounds__(kPlaneThreads)
    fwd_nchw_apply(const T* __restrict__ x, T* __restrict__ y, FwdParams<acc_t<T>> p,
                   int64_t splits, int64_t chunk) {
  using A = acc_t<T>;
  const int64_t nc = div32(blockIdx.x, splits), s = blockIdx.x - nc * splits;
  const int64_t begin = s * chunk;
  const int64_t len = (p.HW - begin) < chunk ? (p.HW - begin) : chunk;
  const int64_t n = div32(nc, p.C), c = nc - n * p.C;
  const A mean = p.mean[nc];
  const A scale = p.rstd[nc] * affine_at(p.weight, n, c, p.weight_stride_n, A(1));
  const A shift = affine_at(p.bias, n, c, p.bias_stride_n, A(0));
  const int64_t off = nc * p.HW + begin;
  plane_apply<T, VEC, A>(x + off, y + off, len, mean, scale, shift, p.act, p.slope);
}

// ---------------------------------------------------------------------------------------------
// NCHW backward kernels

// (a) on chip: x and dz read once into registers; sums, then dx.
template <typename T, int VEC>
__global__ void __launch_bounds__(kOnChipThreads)
    bwd_nchw_on_chip(const T* __restrict__ dz, const T* __restrict__ x, T* __restrict__ dx,
                     BwdParams<acc_t<T>> p) {
  using A = acc_t<T>;
  constexpr int kVecs = kOnChipItems / VEC;
  __shared__ A red[64];
  const int64_t nc = blockIdx.x;
  const int64_t n = div32(nc, p.C), c = nc - n * p.C;
  const int hw = int(p.HW);
  const BwdPlane<A> q = bwd_plane<A>(p, n, c);
  const T* xp = x + nc * p.HW;
  const T* dzp = dz + nc * p.HW;
  A xhat[kOnChipItems], g[kOnChipItems];
  A s[2] = {A(0), A(0)};
#pragma unroll
  for (int r = 0; r < kVecs; ++r) {
    const int i = (r * int(blockDim.x) + int(threadIdx.x)) * VEC;
    if (i < hw) {
      A dv[VEC];
      load_vec<T, VEC>(xp + i, xhat + r * VEC);
      load_vec<T, VEC>(dzp + i, dv);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const int e = r * VEC + k;
        bwd_element(q, xhat[e], dv[k], p.act, p.slope, xhat[e], g[e]);
        s[0] += g[e];
        s[1] += g[e] * xhat[e];
      }
    }
  }
  block_sums<A, 2>(s, red);
  if (threadIdx.x == 0) {
    p.sums[2 * nc] = s[0];
    p.sums[2 * nc + 1] = s[1];
  }
  if (dx == nullptr) return;
  const DxCoef<A> k = dx_coef(q, s[0], s[1], p.inv_hw);
  T* dxp = dx + nc * p.HW;
#pragma unroll
  for (int r = 0; r < kVecs; ++r) {
    const int i = (r * int(blockDim.x) + int(threadIdx.x)) * VEC;
    if (i < hw) {
      A o[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const int e = r * VEC + j;
        o[j] = k.k * (g[e] - k.mean_g - xhat[e] * k.mean_gx);
      }
      store_vec<T, VEC>(dxp + i, o);
    }
  }
}

// (b) looped: reduction pass over (x, dz), then dx pass.
template <typename T, int VEC>
__global__ void __launch_bounds__(kPlaneThreads)
    bwd_nchw_looped(const T* __restrict__ dz, const T* __restrict__ x, T* __restrict__ dx,
                    BwdParams<acc_t<T>> p) {
  using A = acc_t<T>;
  __shared__ A red[64];
  const int64_t nc = blockIdx.x;
  const int64_t n = div32(nc, p.C), c = nc - n * p.C;
  const BwdPlane<A> q = bwd_plane<A>(p, n, c);
  const int64_t off = nc * p.HW;
  A s[2] = {A(0), A(0)};
  thread_plane_grad_sums<T, VEC, A>(dz + off, x + off, p.HW, q, p.act, p.slope, s);
  block_sums<A, 2>(s, red);
  if (threadIdx.x == 0) {
    p.sums[2 * nc] = s[0];
    p.sums[2 * nc + 1] = s[1];
  }
  if (dx == nullptr) return;
  plane_dx<T, VEC, A>(dz + off, x + off, dx + off, p.HW, q, dx_coef(q, s[0], s[1], p.inv_hw), p.act,
                      p.slope);
}

// (c) split, step 1: block (nc, s) writes the sums of its chunk.
template <typename T, int VEC>
__global__ void __launch_bounds__(kPlaneThreads)
    bwd_nchw_partial(const T* __restrict__ dz, const T* __restrict__ x,
                     acc_t<T>* __restrict__ partial, BwdParams<acc_t<T>> p, int64_t splits,
                     int64_t chunk) {
  using A = acc_t<T>;
  __shared__ A red[64];
  const int64_t nc = div32(blockIdx.x, splits), s = blockIdx.x - nc * splits;
  const int64_t n = div32(nc, p.C), c = nc - n * p.C;
  const int64_t begin = s * chunk;
  const int64_t len = (p.HW - begin) < chunk ? (p.HW - begin) : chunk;
  const int64_t off = nc * p.HW + begin;
  A sums[2] = {A(0), A(0)};
  thread_plane_grad_sums<T, VEC, A>(dz + off, x + off, len, bwd_plane<A>(p, n, c), p.act, p.slope,
                                    sums);
  block_sums<A, 2>(sums, red);
  if (threadIdx.x == 0) {
    partial[2 * int64_t(blockIdx.x)] = sums[0];
    partial[2 * int64_t(blockIdx.x) + 1] = sums[1];
  }
}

// (c) split, step 2 (both layouts): add each (n, c)'s splits in order.
template <typename A>
__global__ void bwd_finalize(const A* __restrict__ partial, A* __restrict__ sums, int64_t NC,
                             int64_t splits) {
  for (int64_t nc = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; nc < NC;
       nc += int64_t(gridDim.x) * blockDim.x) {
    A s0 = A(0), s1 = A(0);
    for (int64_t s = 0; s < splits; ++s) {
      s0 += partial[2 * (nc * splits + s)];
      s1 += partial[2 * (nc * splits + s) + 1];
    }
    sums[2 * nc] = s0;
    sums[2 * nc + 1] = s1;
  }
}

// (c) split, step 3: block (nc, s) writes dx for its chunk.
template <typename T, int VEC>
__global__ void __launch_bounds__(kPlaneThreads)
    bwd_nchw_dx(const T* __restrict__ dz, const T* __restrict__ x, T* __restrict__ dx,
                BwdParams<acc_t<T>> p, int64_t splits, int64_t chunk) {
  using A = acc_t<T>;
  const int64_t nc = div32(blockIdx.x, splits), s = blockIdx.x - nc * splits;
  const int64_t n = div32(nc, p.C), c = nc - n * p.C;
  const int64_t begin = s * chunk;
  const int64_t len = (p.HW - begin) < chunk ? (p.HW - begin) : chunk;
  const int64_t off = nc * p.HW + begin;
  const BwdPlane<A> q = bwd_plane<A>(p, n, c);
  plane_dx<T, VEC, A>(dz + off, x + off, dx + off, len, q,
                      dx_coef(q, p.sums[2 * nc], p.sums[2 * nc + 1], p.inv_hw), p.act, p.slope);
}

// dgamma / dbeta: per-sample parameters take the per-(n, c) sums as they are; (C,) parameters
// add them over n in order (deterministic, no atomics).
template <typename A>
__global__ void bwd_affine(const A* __restrict__ sums, A* __restrict__ grad_weight,
                           A* __restrict__ grad_bias, int64_t N, int64_t C, bool weight_per_sample,
                           bool bias_per_sample) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * C;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (grad_weight != nullptr && weight_per_sample) grad_weight[i] = sums[2 * i + 1];
    if (grad_bias != nullptr && bias_per_sample) grad_bias[i] = sums[2 * i];
    if (i < C) {
      const bool w = grad_weight != nullptr && !weight_per_sample;
      const bool b = grad_bias != nullptr && !bias_per_sample;
      if (!w && !b) continue;
      A gw = A(0), gb = A(0);
      for (int64_t n = 0; n < N; ++n) {
        gw += sums[2 * (n * C + i) + 1];
        gb += sums[2 * (n * C + i)];
      }
      if (w) grad_weight[i] = gw;
      if (b) grad_bias[i] = gb;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// channels_last building blocks. Block (tile_x, tile_y): lane x owns VEC consecutive channels
// c0 .. c0 + VEC - 1 of one sample (loads coalesced along C), row y walks H*W with stride tile_y.
// xn points at sample n: element (row r, channel c) is xn[r * C + c].

template <typename T, int VEC, typename A>
__device__ __forceinline__ void thread_rows_moments(const T* __restrict__ xn, int64_t C,
                                                    int64_t c0, int64_t r0, int64_t r1,
                                                    Moments<A> (&m)[VEC]) {
  const int64_t ystep = blockDim.y;
  int64_t r = r0 + threadIdx.y;
  for (; r + (kUnroll - 1) * ystep < r1; r += kUnroll * ystep) {
    A v[kUnroll][VEC];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load_vec<T, VEC>(xn + (r + u * ystep) * C + c0, v[u]);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      A col[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) col[u] = v[u][k];
      m[k] = combine(m[k], chunk_moments<kUnroll>(col));
    }
  }
  for (; r < r1; r += ystep) {
    A v[VEC];
    load_vec<T, VEC>(xn + r * C + c0, v);
#pragma unroll
    for (int k = 0; k < VEC; ++k) m[k] = combine(m[k], Moments<A>{A(1), v[k], A(0)});
  }
}

template <typename T, int VEC, typename A>
__device__ __forceinline__ void rows_apply(const T* __restrict__ xn, T* __restrict__ yn, int64_t C,
                                           int64_t c0, int64_t r0, int64_t r1, const A* mean,
                                           const A* scale, const A* shift, int act, A slope) {
  const int64_t ystep = blockDim.y;
  for (int64_t r = r0 + threadIdx.y; r < r1; r += ystep) {
    A v[VEC];
    load_vec<T, VEC>(xn + r * C + c0, v);
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[k] = activate((v[k] - mean[k]) * scale[k] + shift[k], act, slope);
    store_vec<T, VEC>(yn + r * C + c0, v);
  }
}

template <typename T, int VEC, typename A>
__device__ __forceinline__ void thread_rows_grad_sums(const T* __restrict__ dzn,
                                                      const T* __restrict__ xn, int64_t C,
                                                      int64_t c0, int64_t r0, int64_t r1,
                                                      const BwdPlane<A> (&q)[VEC], int act,
                                                      A slope, A (&s)[VEC][2]) {
  const int64_t ystep = blockDim.y;
  for (int64_t r = r0 + threadIdx.y; r < r1; r += ystep) {
    A xv[VEC], dv[VEC];
    load_vec<T, VEC>(xn + r * C + c0, xv);
    load_vec<T, VEC>(dzn + r * C + c0, dv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      A xhat, g;
      bwd_element(q[k], xv[k], dv[k], act, slope, xhat, g);
      s[k][0] += g;
      s[k][1] += g * xhat;
    }
  }
}

template <typename T, int VEC, typename A>
__device__ __forceinline__ void rows_dx(const T* __restrict__ dzn, const T* __restrict__ xn,
                                        T* __restrict__ dxn, int64_t C, int64_t c0, int64_t r0,
                                        int64_t r1, const BwdPlane<A> (&q)[VEC],
                                        const DxCoef<A> (&k)[VEC], int act, A slope) {
  const int64_t ystep = blockDim.y;
  for (int64_t r = r0 + threadIdx.y; r < r1; r += ystep) {
    A xv[VEC], dv[VEC];
    load_vec<T, VEC>(xn + r * C + c0, xv);
    load_vec<T, VEC>(dzn + r * C + c0, dv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      A xhat, g;
      bwd_element(q[j], xv[j], dv[j], act, slope, xhat, g);
      xv[j] = k[j].k * (g - k[j].mean_g - xhat * k[j].mean_gx);
    }
    store_vec<T, VEC>(dxn + r * C + c0, xv);
  }
}

// Block index -> (n, first channel of this thread, split).
struct TileIndex {
  int64_t n, c0, s;
};

__device__ __forceinline__ TileIndex tile_index(int64_t channel_tiles, int64_t splits, int vec) {
  const int64_t t = div32(blockIdx.x, splits), s = blockIdx.x - t * splits;
  const int64_t n = div32(t, channel_tiles), tile = t - n * channel_tiles;
  return {n, (tile * blockDim.x + threadIdx.x) * vec, s};
}

// ---------------------------------------------------------------------------------------------
// channels_last forward kernels

// (b) looped: block (n, channel tile) reduces over all H*W rows, then applies.
template <typename T, int VEC>
__global__ void __launch_bounds__(kTileThreads)
    fwd_nhwc_looped(const T* __restrict__ x, T* __restrict__ y, FwdParams<acc_t<T>> p,
                    int64_t channel_tiles) {
  using A = acc_t<T>;
  __shared__ Moments<A> red[kTileThreads * VEC];
  const TileIndex t = tile_index(channel_tiles, 1, VEC);
  const bool active = t.c0 < p.C;
  const int64_t off = t.n * p.HW * p.C;
  Moments<A> m[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) m[k] = Moments<A>{A(0), A(0), A(0)};
  if (active) thread_rows_moments<T, VEC, A>(x + off, p.C, t.c0, 0, p.HW, m);
  column_moments<A, VEC>(m, red);
  if (!active) return;
  A mean[VEC], scale[VEC], shift[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    const int64_t c = t.c0 + k;
    const A rstd = rsqrt_acc(m[k].m2 * p.inv_hw + p.eps);
    if (threadIdx.y == 0) {
      p.mean[t.n * p.C + c] = m[k].mean;
      p.rstd[t.n * p.C + c] = rstd;
    }
    mean[k] = m[k].mean;
    scale[k] = rstd * affine_at(p.weight, t.n, c, p.weight_stride_n, A(1));
    shift[k] = affine_at(p.bias, t.n, c, p.bias_stride_n, A(0));
  }
  rows_apply<T, VEC, A>(x + off, y + off, p.C, t.c0, 0, p.HW, mean, scale, shift, p.act, p.slope);
}

// (c) split, step 1: block (n, channel tile, s) writes its rows' per-channel moments.
template <typename T, int VEC>
__global__ void __launch_bounds__(kTileThreads)
    fwd_nhwc_partial(const T* __restrict__ x, Moments<acc_t<T>>* __restrict__ partial,
                     int64_t C, int64_t HW, int64_t channel_tiles, int64_t splits, int64_t chunk) {
  using A = acc_t<T>;
  __shared__ Moments<A> red[kTileThreads * VEC];
  const TileIndex t = tile_index(channel_tiles, splits, VEC);
  const bool active = t.c0 < C;
  const int64_t r0 = t.s * chunk, r1 = (r0 + chunk) < HW ? (r0 + chunk) : HW;
  Moments<A> m[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) m[k] = Moments<A>{A(0), A(0), A(0)};
  if (active) thread_rows_moments<T, VEC, A>(x + t.n * HW * C, C, t.c0, r0, r1, m);
  column_moments<A, VEC>(m, red);
  if (!active || threadIdx.y != 0) return;
#pragma unroll
  for (int k = 0; k < VEC; ++k) store_moments(partial + (t.n * C + t.c0 + k) * splits + t.s, m[k]);
}

// (c) split, step 3: block (n, channel tile, s) normalises its rows.
template <typename T, int VEC>
__global__ void __launch_bounds__(kTileThreads)
    fwd_nhwc_apply(const T* __restrict__ x, T* __restrict__ y, FwdParams<acc_t<T>> p,
                   int64_t channel_tiles, int64_t splits, int64_t chunk) {
  using A = acc_t<T>;
  const TileIndex t = tile_index(channel_tiles, splits, VEC);
  if (t.c0 >= p.C) return;
  const int64_t r0 = t.s * chunk, r1 = (r0 + chunk) < p.HW ? (r0 + chunk) : p.HW;
  A mean[VEC], scale[VEC], shift[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    const int64_t c = t.c0 + k;
    mean[k] = p.mean[t.n * p.C + c];
    scale[k] = p.rstd[t.n * p.C + c] * affine_at(p.weight, t.n, c, p.weight_stride_n, A(1));
    shift[k] = affine_at(p.bias, t.n, c, p.bias_stride_n, A(0));
  }
  const int64_t off = t.n * p.HW * p.C;
  rows_apply<T, VEC, A>(x + off, y + off, p.C, t.c0, r0, r1, mean, scale, shift, p.act, p.slope);
}

// ---------------------------------------------------------------------------------------------
// channels_last backward kernels

template <typename T, int VEC>
__global__ void __launch_bounds__(kTileThreads)
    bwd_nhwc_looped(const T* __restrict__ dz, const T* __restrict__ x, T* __restrict__ dx,
                    BwdParams<acc_t<T>> p, int64_t channel_tiles) {
  using A = acc_t<T>;
  __shared__ A red[kTileThreads * VEC * 2];
  const TileIndex t = tile_index(channel_tiles, 1, VEC);
  const bool active = t.c0 < p.C;
  const int64_t off = t.n * p.HW * p.C;
  BwdPlane<A> q[VEC];
  A s[VEC][2];
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    s[k][0] = s[k][1] = A(0);
    if (active) q[k] = bwd_plane<A>(p, t.n, t.c0 + k);
  }
  if (active) thread_rows_grad_sums<T, VEC, A>(dz + off, x + off, p.C, t.c0, 0, p.HW, q, p.act, p.slope, s);
  column_sums<A, VEC>(s, red);
  if (!active) return;
  DxCoef<A> k[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    if (threadIdx.y == 0) {
      p.sums[2 * (t.n * p.C + t.c0 + j)] = s[j][0];
      p.sums[2 * (t.n * p.C + t.c0 + j) + 1] = s[j][1];
    }
    k[j] = dx_coef(q[j], s[j][0], s[j][1], p.inv_hw);
  }
  if (dx == nullptr) return;
  rows_dx<T, VEC, A>(dz + off, x + off, dx + off, p.C, t.c0, 0, p.HW, q, k, p.act, p.slope);
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kTileThreads)
    bwd_nhwc_partial(const T* __restrict__ dz, const T* __restrict__ x,
                     acc_t<T>* __restrict__ partial, BwdParams<acc_t<T>> p, int64_t channel_tiles,
                     int64_t splits, int64_t chunk) {
  using A = acc_t<T>;
  __shared__ A red[kTileThreads * VEC * 2];
  const TileIndex t = tile_index(channel_tiles, splits, VEC);
  const bool active = t.c0 < p.C;
  const int64_t r0 = t.s * chunk, r1 = (r0 + chunk) < p.HW ? (r0 + chunk) : p.HW;
  const int64_t off = t.n * p.HW * p.C;
  BwdPlane<A> q[VEC];
  A s[VEC][2];
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    s[k][0] = s[k][1] = A(0);
    if (active) q[k] = bwd_plane<A>(p, t.n, t.c0 + k);
  }
  if (active) thread_rows_grad_sums<T, VEC, A>(dz + off, x + off, p.C, t.c0, r0, r1, q, p.act, p.slope, s);
  column_sums<A, VEC>(s, red);
  if (!active || threadIdx.y != 0) return;
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    const int64_t i = (t.n * p.C + t.c0 + k) * splits + t.s;
    partial[2 * i] = s[k][0];
    partial[2 * i + 1] = s[k][1];
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kTileThreads)
    bwd_nhwc_dx(const T* __restrict__ dz, const T* __restrict__ x, T* __restrict__ dx,
                BwdParams<acc_t<T>> p, int64_t channel_tiles, int64_t splits, int64_t chunk) {
  using A = acc_t<T>;
  const TileIndex t = tile_index(channel_tiles, splits, VEC);
  if (t.c0 >= p.C) return;
  const int64_t r0 = t.s * chunk, r1 = (r0 + chunk) < p.HW ? (r0 + chunk) : p.HW;
  const int64_t off = t.n * p.HW * p.C;
  BwdPlane<A> q[VEC];
  DxCoef<A> k[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    const int64_t nc = t.n * p.C + t.c0 + j;
    q[j] = bwd_plane<A>(p, t.n, t.c0 + j);
    k[j] = dx_coef(q[j], p.sums[2 * nc], p.sums[2 * nc + 1], p.inv_hw);
  }
  rows_dx<T, VEC, A>(dz + off, x + off, dx + off, p.C, t.c0, r0, r1, q, k, p.act, p.slope);
}

// ---------------------------------------------------------------------------------------------
// Launchers

#define SF_RETURN_IF_LAUNCH_FAILED()              \
  do {                                            \
    const cudaError_t sf_err_ = cudaGetLastError(); \
    if (sf_err_ != cudaSuccess) return sf_err_;   \
  } while (0)

constexpr int kFinalizeThreads = 256;

inline unsigned grid_for(int64_t items, int threads) {
  int64_t blocks = ceil_div(items, threads);
  if (blocks > 65535) blocks = 65535;  // grid-stride loops cover the rest
  return unsigned(blocks < 1 ? 1 : blocks);
}

template <typename T, int VEC>
cudaError_t forward_impl(const Shape& s, const Plan& plan, const ForwardArgs& a,
                         cudaStream_t stream) {
  using A = acc_t<T>;
  const T* x = static_cast<const T*>(a.input);
  T* y = static_cast<T*>(a.output);
  FwdParams<A> p{static_cast<A*>(a.mean), static_cast<A*>(a.rstd),
                 static_cast<const A*>(a.weight), static_cast<const A*>(a.bias),
                 a.weight_stride_n, a.bias_stride_n, s.C, s.HW, A(1.0 / double(s.HW)), A(a.eps),
                 A(a.negative_slope), a.activation};
  const int64_t NC = s.N * s.C;
  if (s.layout == Layout::kNCHW) {
    if (plan.schedule == Schedule::kOnChip) {
      fwd_nchw_on_chip<T, VEC><<<unsigned(NC), plan.threads, 0, stream>>>(x, y, p);
      SF_RETURN_IF_LAUNCH_FAILED();
    } else if (plan.schedule == Schedule::kLooped) {
      fwd_nchw_looped<T, VEC><<<unsigned(NC), kPlaneThreads, 0, stream>>>(x, y, p);
      SF_RETURN_IF_LAUNCH_FAILED();
    } else {
      auto* partial = static_cast<Moments<A>*>(a.workspace);
      const unsigned blocks = unsigned(NC * plan.splits);
      fwd_nchw_partial<T, VEC><<<blocks, kPlaneThreads, 0, stream>>>(x, partial, s.HW,
                                                                     plan.splits, plan.chunk);
      SF_RETURN_IF_LAUNCH_FAILED();
      fwd_finalize<A><<<grid_for(NC, kFinalizeThreads), kFinalizeThreads, 0, stream>>>(
          partial, p.mean, p.rstd, NC, plan.splits, p.inv_hw, p.eps);
      SF_RETURN_IF_LAUNCH_FAILED();
      fwd_nchw_apply<T, VEC><<<blocks, kPlaneThreads, 0, stream>>>(x, y, p, plan.splits,
                                                                   plan.chunk);
      SF_RETURN_IF_LAUNCH_FAILED();
    }
    return cudaSuccess;
  }
  const dim3 block(plan.tile_x, plan.tile_y);
  const int64_t tiles = s.N * plan.channel_tiles;
  if (plan.schedule != Schedule::kSplit) {
    fwd_nhwc_looped<T, VEC><<<unsigned(tiles), block, 0, stream>>>(x, y, p, plan.channel_tiles);
    SF_RETURN_IF_LAUNCH_FAILED();
    return cudaSuccess;
  }
  auto* partial = static_cast<Moments<A>*>(a.workspace);
  const unsigned blocks = unsigned(tiles * plan.splits);
  fwd_nhwc_partial<T, VEC><<<blocks, block, 0, stream>>>(x, partial, s.C, s.HW,
                                                         plan.channel_tiles, plan.splits,
                                                         plan.chunk);
  SF_RETURN_IF_LAUNCH_FAILED();
  fwd_finalize<A><<<grid_for(NC, kFinalizeThreads), kFinalizeThreads, 0, stream>>>(
      partial, p.mean, p.rstd, NC, plan.splits, p.inv_hw, p.eps);
  SF_RETURN_IF_LAUNCH_FAILED();
  fwd_nhwc_apply<T, VEC><<<blocks, block, 0, stream>>>(x, y, p, plan.channel_tiles, plan.splits,
                                                       plan.chunk);
  SF_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

template <typename T, int VEC>
cudaError_t backward_impl(const Shape& s, const Plan& plan, const BackwardArgs& a,
                          cudaStream_t stream) {
  using A = acc_t<T>;
  const T* dz = static_cast<const T*>(a.grad_output);
  const T* x = static_cast<const T*>(a.input);
  T* dx = static_cast<T*>(a.grad_input);
  BwdParams<A> p{static_cast<const A*>(a.mean), static_cast<const A*>(a.rstd),
                 static_cast<const A*>(a.weight), static_cast<const A*>(a.bias),
                 a.weight_stride_n, a.bias_stride_n, s.C, s.HW, A(1.0 / double(s.HW)),
                 A(a.negative_slope),
                 a.activation, static_cast<A*>(a.sums)};
  const int64_t NC = s.N * s.C;
  if (s.layout == Layout::kNCHW) {
    if (plan.schedule == Schedule::kOnChip) {
      bwd_nchw_on_chip<T, VEC><<<unsigned(NC), plan.threads, 0, stream>>>(dz, x, dx, p);
      SF_RETURN_IF_LAUNCH_FAILED();
    } else if (plan.schedule == Schedule::kLooped) {
      bwd_nchw_looped<T, VEC><<<unsigned(NC), kPlaneThreads, 0, stream>>>(dz, x, dx, p);
      SF_RETURN_IF_LAUNCH_FAILED();
    } else {
      A* partial = static_cast<A*>(a.workspace);
      const unsigned blocks = unsigned(NC * plan.splits);
      bwd_nchw_partial<T, VEC><<<blocks, kPlaneThreads, 0, stream>>>(dz, x, partial, p,
                                                                     plan.splits, plan.chunk);
      SF_RETURN_IF_LAUNCH_FAILED();
      bwd_finalize<A><<<grid_for(NC, kFinalizeThreads), kFinalizeThreads, 0, stream>>>(
          partial, p.sums, NC, plan.splits);
      SF_RETURN_IF_LAUNCH_FAILED();
      if (dx != nullptr) {
        bwd_nchw_dx<T, VEC><<<blocks, kPlaneThreads, 0, stream>>>(dz, x, dx, p, plan.splits,
                                                                  plan.chunk);
        SF_RETURN_IF_LAUNCH_FAILED();
      }
    }
  } else {
    const dim3 block(plan.tile_x, plan.tile_y);
    const int64_t tiles = s.N * plan.channel_tiles;
    if (plan.schedule != Schedule::kSplit) {
      bwd_nhwc_looped<T, VEC><<<unsigned(tiles), block, 0, stream>>>(dz, x, dx, p,
                                                                     plan.channel_tiles);
      SF_RETURN_IF_LAUNCH_FAILED();
    } else {
      A* partial = static_cast<A*>(a.workspace);
      const unsigned blocks = unsigned(tiles * plan.splits);
      bwd_nhwc_partial<T, VEC><<<blocks, block, 0, stream>>>(dz, x, partial, p,
                                                             plan.channel_tiles, plan.splits,
                                                             plan.chunk);
      SF_RETURN_IF_LAUNCH_FAILED();
      bwd_finalize<A><<<grid_for(NC, kFinalizeThreads), kFinalizeThreads, 0, stream>>>(
          partial, p.sums, NC, plan.splits);
      SF_RETURN_IF_LAUNCH_FAILED();
      if (dx != nullptr) {
        bwd_nhwc_dx<T, VEC><<<blocks, block, 0, stream>>>(dz, x, dx, p, plan.channel_tiles,
                                                          plan.splits, plan.chunk);
        SF_RETURN_IF_LAUNCH_FAILED();
      }
    }
  }
  if (a.grad_weight != nullptr || a.grad_bias != nullptr) {
    bwd_affine<A><<<grid_for(NC, kFinalizeThreads), kFinalizeThreads, 0, stream>>>(
        p.sums, static_cast<A*>(a.grad_weight), static_cast<A*>(a.grad_bias), s.N, s.C,
        a.weight_stride_n != 0, a.bias_stride_n != 0);
    SF_RETURN_IF_LAUNCH_FAILED();
  }
  return cudaSuccess;
}

template <typename T>
cudaError_t forward_dtype(const Shape& s, const Plan& plan, const ForwardArgs& a,
                          cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  if (plan.vec == kVec) return forward_impl<T, kVec>(s, plan, a, stream);
  if (plan.vec == 1) return forward_impl<T, 1>(s, plan, a, stream);
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t backward_dtype(const Shape& s, const Plan& plan, const BackwardArgs& a,
                           cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  if (plan.vec == kVec) return backward_impl<T, kVec>(s, plan, a, stream);
  if (plan.vec == 1) return backward_impl<T, 1>(s, plan, a, stream);
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t instance_norm_forward(ScalarKind kind, const Shape& shape, const Plan& plan,
                                  const ForwardArgs& args, cudaStream_t stream) {
  switch (kind) {
    case ScalarKind::kFloat32: return forward_dtype<float>(shape, plan, args, stream);
    case ScalarKind::kFloat16: return forward_dtype<__half>(shape, plan, args, stream);
    case ScalarKind::kBFloat16: return forward_dtype<__nv_bfloat16>(shape, plan, args, stream);
    case ScalarKind::kFloat64: return forward_dtype<double>(shape, plan, args, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t instance_norm_backward(ScalarKind kind, const Shape& shape, const Plan& plan,
                                   const BackwardArgs& args, cudaStream_t stream) {
  switch (kind) {
    case ScalarKind::kFloat32: return backward_dtype<float>(shape, plan, args, stream);
    case ScalarKind::kFloat16: return backward_dtype<__half>(shape, plan, args, stream);
    case ScalarKind::kBFloat16: return backward_dtype<__nv_bfloat16>(shape, plan, args, stream);
    case ScalarKind::kFloat64: return backward_dtype<double>(shape, plan, args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace stylize_fast
