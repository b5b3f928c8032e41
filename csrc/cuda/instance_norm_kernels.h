// Interface between the CUDA device code of fused instance norm + activation
// (instance_norm_kernels.cu, compiled by nvcc WITHOUT torch headers) and its torch binding
// (instance_norm_cuda.cpp). Plain C++ types only, so both sides compile quickly and nvcc never
// sees ATen.
//
// Schedules (the algorithms of stylize_fast/ops/instance_norm_triton.py, whose names are
// one_pass / looped / split; differences are listed in docs/gpu.md):
//   kOnChip : NCHW plane of <= kOnChipMaxElems elements, one block per (n, c), plane held in
//             registers: 1 read + 1 write (backward: 2 reads + 1 write).
//   kLooped : one block per (n, c) (NCHW) or per (n, channel tile) (channels_last) looping over
//             the plane: a statistics pass (Chan-combined centred moments), then an apply pass.
//   kSplit  : few large planes: each plane split over `splits` blocks; partial moments ->
//             finalize (fixed-order combination) -> apply.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace stylize_fast {
namespace cuda {

enum class ScalarKind : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };
enum class Layout : int { kNCHW = 0, kNHWC = 1 };
enum class Schedule : int { kOnChip = 0, kLooped = 1, kSplit = 2 };

inline const char* schedule_name(Schedule s) {
  return s == Schedule::kOnChip ? "on_chip" : s == Schedule::kLooped ? "looped" : "split";
}

inline int element_size(ScalarKind k) {
  return k == ScalarKind::kFloat64 ? 8 : k == ScalarKind::kFloat32 ? 4 : 2;
}

// A plane this small is held in registers: at most kOnChipThreads threads x kOnChipItems values.
constexpr int kOnChipItems = 16;
constexpr int kOnChipThreads = 512;
constexpr int64_t kOnChipMaxElems = int64_t(kOnChipItems) * kOnChipThreads;  // 8192
// Threads of the looping / split NCHW kernels and of every channels_last kernel.
constexpr int kPlaneThreads = 512;
constexpr int kTileThreads = 256;
// Splitting planes only pays when one block per plane (or channel tile) would leave SMs idle:
// below kSplitBelowBlocksPerSM blocks per SM (Triton: SPLIT_BELOW_GROUPS = 256 on a 132-SM H100)
// each plane is split to aim at kSplitTargetBlocksPerSM blocks per SM in all (Triton:
// SPLIT_TARGET_PROGRAMS = 1024), at most kSplitMaxSplits per plane (Triton: SPLIT_MAX = 64),
// each split keeping at least kSplitMinElems elements (NCHW; Triton: LOOP_CHUNK_ELEMENTS) or
// kSplitMinRows rows (channels_last) so the partial pass still streams.
constexpr int kSplitBelowBlocksPerSM = 2;
constexpr int kSplitTargetBlocksPerSM = 8;
constexpr int64_t kSplitMaxSplits = 64;
constexpr int64_t kSplitMinElems = 4096;
constexpr int64_t kSplitMinRows = 128;

struct Shape {
  int64_t N = 0, C = 0, HW = 0;
  Layout layout = Layout::kNCHW;
};

struct Plan {
  Schedule schedule = Schedule::kLooped;
  int vec = 1;          // elements per vector load: 16 / element size when aligned, else 1
  int threads = 512;    // threads per block (NCHW); channels_last uses tile_x * tile_y
  int tile_x = 32;      // channels_last: lanes along C, each loading `vec` channels
  int tile_y = 8;       // channels_last: rows of H*W handled side by side
  int64_t splits = 1;   // blocks per plane (kSplit), else 1
  int64_t chunk = 0;    // elements (NCHW) or rows (NHWC) per split, a multiple of vec (NCHW)
  int64_t channel_tiles = 1;  // channels_last: ceil(C / (tile_x * vec))
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// 16-byte vectors when every pointer is 16-byte aligned and the contiguous extent they are
// loaded along (H*W for NCHW, C for channels_last) is a multiple of the vector length, so no
// vector ever straddles a plane / pixel.
inline int choose_vec(ScalarKind kind, int64_t contiguous_extent, const void* const* ptrs,
                      int num_ptrs) {
  const int vec = 16 / element_size(kind);
  if (contiguous_extent % vec != 0) return 1;
  for (int i = 0; i < num_ptrs; ++i) {
    if (ptrs[i] != nullptr && reinterpret_cast<uintptr_t>(ptrs[i]) % 16 != 0) return 1;
  }
  return vec;
}

// Splits for `blocks` blocks of `extent` elements / rows each, or 1 when splitting does not pay.
inline int64_t split_count(int64_t blocks, int64_t extent, int64_t min_extent, int sm_count) {
  if (blocks >= int64_t(kSplitBelowBlocksPerSM) * sm_count) return 1;
  int64_t splits = ceil_div(int64_t(kSplitTargetBlocksPerSM) * sm_count, blocks);
  const int64_t most = extent / min_extent;
  if (splits > most) splits = most;
  if (splits > kSplitMaxSplits) splits = kSplitMaxSplits;
  return splits < 2 ? 1 : splits;
}

// The named shape heuristic ("choose_schedule" in the Triton twin), shared by forward and
// backward: on chip if the plane fits in registers, else split if few blocks would leave SMs
// idle, else looped.
inline Plan plan_instance_norm(const Shape& s, int vec, int sm_count) {
  Plan p;
  p.vec = vec;
  if (sm_count < 1) sm_count = 1;
  if (s.layout == Layout::kNCHW) {
    if (s.HW <= kOnChipMaxElems) {
      p.schedule = Schedule::kOnChip;
      const int64_t t = next_pow2(ceil_div(s.HW, kOnChipItems));
      p.threads = int(t < 32 ? 32 : t);
      return p;
    }
    p.threads = kPlaneThreads;
    p.schedule = Schedule::kLooped;
    p.chunk = s.HW;
    const int64_t splits = split_count(s.N * s.C, s.HW, kSplitMinElems, sm_count);
    if (splits > 1) {
      // vec-aligned chunks so that no vector straddles two splits
      p.chunk = ceil_div(ceil_div(s.HW, splits), vec) * vec;
      p.splits = ceil_div(s.HW, p.chunk);
      if (p.splits > 1) p.schedule = Schedule::kSplit;
    }
    return p;
  }
  // channels_last: lanes along C (coalesced), the rest of the block along H*W.
  const int64_t lanes = next_pow2(ceil_div(s.C, vec));
  p.tile_x = int(lanes < 32 ? lanes : 32);
  p.tile_y = kTileThreads / p.tile_x;
  p.threads = kTileThreads;
  p.channel_tiles = ceil_div(s.C, int64_t(p.tile_x) * vec);
  p.schedule = Schedule::kLooped;
  p.chunk = s.HW;
  const int64_t splits = split_count(s.N * p.channel_tiles, s.HW, kSplitMinRows, sm_count);
  if (splits > 1) {
    p.chunk = ceil_div(s.HW, splits);
    p.splits = ceil_div(s.HW, p.chunk);
    if (p.splits > 1) p.schedule = Schedule::kSplit;
  }
  return p;
}

// Workspace (bytes) the split schedule needs: partial moments (3 values) or partial sums
// (2 values) per (n, c, split), in the accumulation type.
inline size_t workspace_bytes(const Shape& s, const Plan& p, ScalarKind kind, int values) {
  if (p.schedule != Schedule::kSplit) return 0;
  const size_t acc = kind == ScalarKind::kFloat64 ? 8 : 4;
  return size_t(s.N * s.C * p.splits) * values * acc;
}

struct ForwardArgs {
  const void* input;     // (N, C, H, W) in `layout`, dtype `kind`
  void* output;          // same shape, layout and dtype
  void* mean;            // (N, C) accumulation type (float, double for float64)
  void* rstd;            // (N, C) accumulation type
  const void* weight;    // (C,) or (N, C) accumulation type, or nullptr
  const void* bias;      // (C,) or (N, C) accumulation type, or nullptr
  int64_t weight_stride_n;  // 0 for a (C,) weight, C for per-sample (N, C)
  int64_t bias_stride_n;    // 0 for a (C,) bias, C for per-sample (N, C)
  double eps;
  int activation;        // 0 none, 1 relu, 2 leaky_relu
  double negative_slope;
  void* workspace;       // workspace_bytes(..., 3) bytes, or nullptr when not split
};

struct BackwardArgs {
  const void* grad_output;  // (N, C, H, W) in `layout`
  const void* input;        // (N, C, H, W) in `layout`
  const void* mean;         // (N, C)
  const void* rstd;         // (N, C)
  const void* weight;       // (C,) / (N, C) or nullptr
  const void* bias;         // (C,) / (N, C) or nullptr
  int64_t weight_stride_n;  // 0 for (C,), C for (N, C); grad_weight has weight's shape
  int64_t bias_stride_n;    // 0 for (C,), C for (N, C); grad_bias has bias's shape
  int activation;
  double negative_slope;
  void* grad_input;         // (N, C, H, W) in `layout`, or nullptr when not requested
  void* sums;               // (N, C, 2): per-(n, c) sum(g), sum(g * xhat); always written
  void* grad_weight;        // (C,) or (N, C) like weight, or nullptr when not requested
  void* grad_bias;          // (C,) or (N, C) like bias, or nullptr when not requested
  void* workspace;          // workspace_bytes(..., 2) bytes, or nullptr when not split
};

// Each launcher enqueues its kernels on `stream` and returns the first launch error
// (cudaGetLastError after every launch), cudaSuccess otherwise.
cudaError_t instance_norm_forward(ScalarKind kind, const Shape& shape, const Plan& plan,
                                  const ForwardArgs& args, cudaStream_t stream);
cudaError_t instance_norm_backward(ScalarKind kind, const Shape& shape, const Plan& plan,
                                   const BackwardArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace stylize_fast
