// Device-side building blocks shared by the CUDA kernels (instance_norm_kernels.cu,
// padded_conv_kernels.cu): accumulation types and conversions, centred moments (Chan et al.'s
// pairwise merge) and deterministic warp / block reductions. Device code only: included by the
// .cu files (nvcc), never by the torch bindings (*.cpp); the CPU emulation of the tests
// (tests/cuda_emulation) compiles it with the host compiler.
//
// Every reduction combines in a fixed order (warp shuffle tree, then the warps in index order),
// so results are bitwise deterministic; there are no atomics.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace stylize_fast {
namespace cuda {
namespace device {

constexpr unsigned kFullMask = 0xffffffffu;

// ---------------------------------------------------------------------------------------------
// Accumulation types and conversions: float for float / half / bfloat16, double for double.

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccType<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
struct Cast;
template <>
struct Cast<float> {
  __device__ __forceinline__ static float from(float v) { return v; }
};
template <>
struct Cast<double> {
  __device__ __forceinline__ static double from(double v) { return v; }
};
template <>
struct Cast<__half> {
  __device__ __forceinline__ static __half from(float v) { return __float2half_rn(v); }
};
template <>
struct Cast<__nv_bfloat16> {
  __device__ __forceinline__ static __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
};

__device__ __forceinline__ float rsqrt_acc(float v) { return rsqrtf(v); }
__device__ __forceinline__ double rsqrt_acc(double v) { return rsqrt(v); }

// ---------------------------------------------------------------------------------------------
// Centred moments and block reductions

template <typename A>
struct Moments {
  A n, mean, m2;  // count, mean, sum of squared deviations from the mean
};

// Chan et al.'s pairwise combination; exact for empty sides.
template <typename A>
__device__ __forceinline__ Moments<A> combine(const Moments<A>& a, const Moments<A>& b) {
  const A n = a.n + b.n;
  if (n == A(0)) return a;
  const A d = b.mean - a.mean;
  const A f = b.n / n;
  return {n, a.mean + d * f, a.m2 + b.m2 + d * d * a.n * f};
}

// Field by field: a whole-struct store can go through local memory (a stack frame in ptxas -v).
template <typename A>
__device__ __forceinline__ void store_moments(Moments<A>* __restrict__ dst, const Moments<A>& m) {
  dst->n = m.n;
  dst->mean = m.mean;
  dst->m2 = m.m2;
}

// Two-pass moments of K values held in registers.
template <int K, typename A>
__device__ __forceinline__ Moments<A> chunk_moments(const A* v) {
  A s = A(0);
#pragma unroll
  for (int k = 0; k < K; ++k) s += v[k];
  const A mean = s * (A(1) / A(K));
  A m2 = A(0);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const A d = v[k] - mean;
    m2 += d * d;
  }
  return {A(K), mean, m2};
}

// Tree over the warp; the total is valid in lane 0.
template <typename A>
__device__ __forceinline__ Moments<A> warp_moments(Moments<A> m) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Moments<A> other;
    other.n = __shfl_down_sync(kFullMask, m.n, o);
    other.mean = __shfl_down_sync(kFullMask, m.mean, o);
    other.m2 = __shfl_down_sync(kFullMask, m.m2, o);
    m = combine(m, other);
  }
  return m;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(kFullMask, v, o);
  return v;
}

// Block total of a 1-D block (blockDim.x a multiple of 32, at most 1024), returned to every
// thread. All threads combine the per-warp results in the same order, so all agree bitwise.
template <typename A>
__device__ __forceinline__ Moments<A> block_moments(Moments<A> m, Moments<A>* smem /*[32]*/) {
  m = warp_moments(m);
  __syncthreads();  // smem may still be read by a previous reduction
  if ((threadIdx.x & 31) == 0) smem[threadIdx.x >> 5] = m;
  __syncthreads();
  Moments<A> total = smem[0];
  const int warps = blockDim.x >> 5;
  for (int w = 1; w < warps; ++w) total = combine(total, smem[w]);
  return total;
}

template <typename A, int K>
__device__ __forceinline__ void block_sums(A (&v)[K], A* smem /*[32 * K]*/) {
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = warp_sum(v[k]);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) smem[k * 32 + (threadIdx.x >> 5)] = v[k];
  }
  __syncthreads();
  const int warps = blockDim.x >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    A t = smem[k * 32];
    for (int w = 1; w < warps; ++w) t += smem[k * 32 + w];
    v[k] = t;
  }
}

// channels_last: reduce each thread's VEC per-channel values over threadIdx.y (the rows it
// shares its channels with); every thread gets its channels' totals, combined in row order.
template <typename A, int VEC>
__device__ __forceinline__ void column_moments(Moments<A> (&m)[VEC], Moments<A>* smem) {
  const int tx = threadIdx.x, TX = blockDim.x;
  __syncthreads();
#pragma unroll
  for (int k = 0; k < VEC; ++k) smem[(threadIdx.y * TX + tx) * VEC + k] = m[k];
  __syncthreads();
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    Moments<A> t = smem[tx * VEC + k];
    for (int y = 1; y < int(blockDim.y); ++y) t = combine(t, smem[(y * TX + tx) * VEC + k]);
    m[k] = t;
  }
}

template <typename A, int VEC>
__device__ __forceinline__ void column_sums(A (&s)[VEC][2], A* smem) {
  const int tx = threadIdx.x, TX = blockDim.x;
  __syncthreads();
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    smem[((threadIdx.y * TX + tx) * VEC + k) * 2] = s[k][0];
    smem[((threadIdx.y * TX + tx) * VEC + k) * 2 + 1] = s[k][1];
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    A t0 = smem[(tx * VEC + k) * 2], t1 = smem[(tx * VEC + k) * 2 + 1];
    for (int y = 1; y < int(blockDim.y); ++y) {
      t0 += smem[((y * TX + tx) * VEC + k) * 2];
      t1 += smem[((y * TX + tx) * VEC + k) * 2 + 1];
    }
    s[k][0] = t0;
    s[k][1] = t1;
  }
}

}  // namespace device
}  // namespace cuda
}  // namespace stylize_fast
