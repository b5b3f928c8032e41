// Host emulation of the small part of CUDA that csrc/cuda/*_kernels.cu use, so that their device
// code can run, unchanged, on a CPU and be compared with the float64 reference on a machine
// without a GPU (python -m tests.cuda_emulation, or scripts/check_cuda_build.sh --emulate).
// NOT part of the extension build: nvcc never sees this file.
//
// Model: blocks run one after another; the threads of a block are OS threads, __syncthreads is a
// barrier over them, and __shfl_down_sync exchanges values through a per-warp buffer with a
// barrier over the warp's 32 lanes; __syncthreads_or is a barrier around a shared flag. __shared__ becomes a function-local static, which is shared
// by exactly one block at a time. Kernel launches `k<<<grid, block, smem, stream>>>(args)` are
// rewritten by the driver into sf_emu::launch([&] { k(args); }, grid, block, smem, stream).
// Emulated numerics: float / double as on the GPU (fast-math approximations aside), __half via
// _Float16, __nv_bfloat16 with round-to-nearest-even.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
using cudaStream_t = void*;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) { return e ? "invalid value" : "no error"; }

using std::fma;
using std::max;
using std::min;

inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
inline double rsqrt(double v) { return 1.0 / std::sqrt(v); }

struct __half {
  _Float16 v;
};
inline float __half2float(__half h) { return float(h.v); }
inline __half __float2half_rn(float f) { return __half{_Float16(f)}; }

struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = uint32_t(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return __nv_bfloat16{uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return __nv_bfloat16{uint16_t(u >> 16)};
}

namespace sf_emu {

struct Warp {
  double slot[32];
  std::barrier<> bar{32};
};

// Block-wide state: the __syncthreads barrier and three flags for __syncthreads_or (call g uses
// flag g % 3 and clears flag (g + 1) % 3, which no thread can be using then).
struct Block {
  explicit Block(unsigned threads) : bar(threads) {}
  std::barrier<> bar;
  std::atomic<int> any[3] = {0, 0, 0};
};

inline thread_local Block* this_block = nullptr;
inline thread_local unsigned or_calls = 0;
inline thread_local Warp* warp = nullptr;
inline thread_local int lane = 0;

template <typename F>
cudaError_t launch(F&& body, dim3 grid, dim3 block, size_t /*smem*/ = 0,
                   cudaStream_t /*stream*/ = nullptr) {
  const unsigned threads = block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || threads % 32 != 0) return cudaErrorInvalidValue;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block blk(threads);
        std::vector<std::unique_ptr<Warp>> warps;
        for (unsigned w = 0; w < threads / 32; ++w) warps.emplace_back(new Warp());
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned t = 0; t < threads; ++t) {
          pool.emplace_back([&, t] {
            threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            blockIdx = dim3(bx, by, bz);
            blockDim = block;
            gridDim = grid;
            this_block = &blk;
            or_calls = 0;
            warp = warps[t / 32].get();
            lane = int(t % 32);
            body();
            // a thread that returned early leaves the barriers the others may still use
            blk.bar.arrive_and_drop();
            warp->bar.arrive_and_drop();
          });
        }
        for (auto& th : pool) th.join();
      }
  return cudaSuccess;
}

}  // namespace sf_emu

inline void __syncthreads() { sf_emu::this_block->bar.arrive_and_wait(); }

inline int __syncthreads_or(int predicate) {
  sf_emu::Block& b = *sf_emu::this_block;
  const unsigned g = sf_emu::or_calls++;
  b.bar.arrive_and_wait();  // every thread has cleared this call's flag (in call g - 1)
  if (predicate) b.any[g % 3].store(1);
  b.bar.arrive_and_wait();
  const int result = b.any[g % 3].load();
  b.any[(g + 1) % 3].store(0);
  return result;
}

template <typename T>
T __shfl_down_sync(unsigned /*mask*/, T v, int offset) {
  sf_emu::Warp& w = *sf_emu::warp;
  w.slot[sf_emu::lane] = double(v);  // exact for float and double
  w.bar.arrive_and_wait();
  const T r = sf_emu::lane + offset < 32 ? T(w.slot[sf_emu::lane + offset]) : v;
  w.bar.arrive_and_wait();
  return r;
}
