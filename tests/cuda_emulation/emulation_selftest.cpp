// Self-test of cuda_host_emulation.h (tests/test_cuda_emulation_tools.py compiles and runs it):
// __syncthreads_or over many consecutive calls with one, none or all threads voting, a
// __shfl_down_sync tree sum, shared memory per block and early-returning threads. Prints "ok".
#include <cstdio>
#include <vector>

#include "cuda_host_emulation.h"

constexpr int kThreads = 128;

// result[round] = __syncthreads_or(thread `voter(round)` votes); voter -1: nobody, -2: everybody.
__global__ void or_kernel(int rounds, int* result) {
  for (int r = 0; r < rounds; ++r) {
    const int voter = r % 5 == 0 ? -1 : (r % 7 == 0 ? -2 : (r * 37) % kThreads);
    const bool vote = voter == -2 || int(threadIdx.x) == voter;
    const int any = __syncthreads_or(vote);
    if (threadIdx.x == (r % kThreads)) result[blockIdx.x * rounds + r] = any;
  }
}

// Per block: sum of threadIdx.x over the block via warp shuffles and shared memory.
__global__ void sum_kernel(int* out) {
  __shared__ int warp_sums[kThreads / 32];
  int v = int(threadIdx.x) + int(blockIdx.x);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x >= 32) return;  // early return: the others must not deadlock
  if (threadIdx.x == 0) {
    int t = 0;
    for (int w = 0; w < kThreads / 32; ++w) t += warp_sums[w];
    out[blockIdx.x] = t;
  }
}

int main() {
  const int rounds = 40, blocks = 2;
  std::vector<int> result(rounds * blocks, -1);
  sf_emu::launch([&] { or_kernel(rounds, result.data()); }, dim3(blocks), dim3(kThreads));
  for (int b = 0; b < blocks; ++b)
    for (int r = 0; r < rounds; ++r) {
      const int want = r % 5 == 0 ? 0 : 1;
      if (result[b * rounds + r] != want) {
        std::printf("__syncthreads_or: block %d round %d gave %d, want %d\n", b, r,
                    result[b * rounds + r], want);
        return 1;
      }
    }
  std::vector<int> sums(blocks, -1);
  sf_emu::launch([&] { sum_kernel(sums.data()); }, dim3(blocks), dim3(kThreads));
  for (int b = 0; b < blocks; ++b) {
    const int want = kThreads * (kThreads - 1) / 2 + kThreads * b;
    if (sums[b] != want) {
      std::printf("block sum: block %d gave %d, want %d\n", b, sums[b], want);
      return 1;
    }
  }
  std::printf("ok\n");
  return 0;
}
