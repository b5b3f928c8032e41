// Fused instance norm + activation on CPU: stylize_fast::instance_norm_fwd / instance_norm_bwd.
//
//   y = act((x - mean) * rstd * w + b),  mean / biased variance per (n, c) over H*W,
//   rstd = 1 / sqrt(var + eps);  act: 0 none, 1 relu, 2 leaky_relu (docs/design.md).
//
// Work decomposition (the same for forward and backward):
//   unit     the values whose statistics are independent: one (n, c) plane for NCHW; one sample
//            and a block of up to kMaxBlock channels for channels_last (rows of H*W pixels).
//   segment  a fixed stretch of seg_rows rows of a unit (65536 values), cut into L1-sized
//            chunks. Statistics of a segment: exact two-pass mean / centred sum of squares per
//            chunk, chunks folded in order with Chan's formula; segments folded in order.
//   task     (unit, segment). Segment sizes depend only on the shape, never on the thread
//            count, so every schedule folds the same numbers in the same order: results are
//            bit-identical across runs and thread counts (for one instruction-set level).
// Schedules:
//   fused    when units spread evenly over the threads: a thread runs the statistics pass of a
//            unit (or of a group of small units, up to kGroupBytes) and then its apply pass
//            back to back, so the second read hits cache.
//   split    otherwise (few big units, e.g. N*C = 1): statistics of all (unit, segment) tasks
//            in parallel, fold per unit, then apply in parallel. Each thread gets the same
//            task range in both passes and walks its segments backwards in the second, so the
//            data it read last is still in cache.
// Outputs larger than half the last-level cache are written with streaming stores (float /
// double; bfloat16 in the NCHW forward).
// The backward recomputes the activation mask from x, mean, rstd, w, b (the output is not
// saved), reduces sum(dz) and sum(dz * (x - mean)) per (n, c) the same way, and writes
//   dx = rstd*w * (dz - mean(dz) - xhat * mean(dz * xhat)) = k * (dz + c1*(x - mean) + c0).
// dgamma / dbeta come from per-(n, c) partial sums reduced over n in a fixed order: no atomics.
//
// Vector code: instance_norm_cpu_kernels.h is compiled here once per x86 level (baseline,
// AVX2, AVX-512, AVX-512 + BF16; cpu/cpu_isa_kernels.h) and the level is picked at run time
// from the CPU, so the build runs fast on any x86-64 machine. STYLIZE_FAST_CPU_ISA (or torch's ATEN_CPU_CAPABILITY) =
// default | avx2 | avx512 | avx512_bf16 caps the level (read on every call: tests switch it);
// instance_norm_cpu_isa() says which one runs. The avx512_bf16 level differs from the others
// only in how float becomes bfloat16 (cpu/cpu_vec.h: subnormals, NaN payloads).
// STYLIZE_FAST_CPU_STREAM_BYTES overrides the streaming-store threshold.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "config.h"
#include "cpu/instance_norm_cpu.h"
#include "cpu/cpu_isa.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__unix__)
#include <unistd.h>
#endif

namespace stylize_fast {
namespace instance_norm_cpu {
namespace {

using index_t = int64_t;

constexpr index_t kChunk = 2048;      // values per chunk: 8 KiB of float, stays in L1
constexpr index_t kSegChunks = 32;    // chunks per segment (65536 values)
constexpr index_t kMaxBlock = 128;    // channels per channels_last unit
constexpr index_t kMinTaskValues = 32768;  // below this per thread, run serially
constexpr index_t kGroupBytes = 256 << 10;  // input read per group of small units (L2: 1 MiB+)

enum class DType { kFloat, kDouble, kBFloat16, kHalf };

template <typename S>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

struct Geometry {
  index_t N, C, HW;
  bool channels_last;
  index_t block;       // channels per unit: 1 (NCHW) or min(C, kMaxBlock) (channels_last)
  index_t blocks;      // units per sample
  index_t units;       // N * blocks
  index_t chunk_rows;  // rows per chunk
  index_t seg_rows;    // rows per segment
  index_t segs;        // segments per unit
  index_t tasks() const { return units * segs; }
};

struct TaskPos {
  index_t unit, seg, n, c0, cw, r0, r1;  // rows [r0, r1) of channels [c0, c0 + cw) of sample n
};

inline TaskPos locate(const Geometry& g, index_t t) {
  TaskPos p;
  // One segment per unit is the common case; skip a 64-bit division there (it runs per task).
  p.unit = g.segs == 1 ? t : t / g.segs;
  p.seg = g.segs == 1 ? 0 : t % g.segs;
  p.n = p.unit / g.blocks;
  p.c0 = (p.unit % g.blocks) * g.block;
  p.cw = std::min(g.block, g.C - p.c0);
  p.r0 = p.seg * g.seg_rows;
  p.r1 = std::min(g.HW, p.r0 + g.seg_rows);
  return p;
}

inline index_t round_up(index_t v, index_t m) { return (v + m - 1) / m * m; }

// Chan et al.'s pairwise update: fold a block (count nb, mean mb, m2b) into (na, ma, m2a).
inline void chan_combine(double& na, double& ma, double& m2a, double nb, double mb, double m2b) {
  if (nb == 0) return;
  if (na == 0) {  // the update below, for an empty (na, ma, m2a), without its 2 divisions
    na = nb;
    ma = mb;
    m2a = m2b;
    return;
  }
  const double n = na + nb;
  const double delta = mb - ma;
  ma += delta * (nb / n);
  m2a += m2b + delta * delta * (na * nb / n);
  na = n;
}

// mean, rstd, weight, bias are in the accumulation dtype (float, double for float64 input);
// seg_* hold one value per (task, channel of the unit): index t * block + j.
struct FwdJob {
  Geometry g;
  DType dtype;
  int act;
  double slope;
  const void* x;
  void* y;
  const void* mean;  // (N, C), written by fwd_finalize before the apply pass
  const void* rstd;
  const void* weight;  // (C,) or (N, C) or null
  const void* bias;
  bool weight_per_sample, bias_per_sample;
  double* seg_mean;
  double* seg_m2;
  bool stream_output;  // write the output with streaming (non-temporal) stores
};

struct BwdJob {
  Geometry g;
  DType dtype;
  int act;
  double slope;
  const void* x;
  const void* grad_output;
  void* grad_input;
  const void* mean;
  const void* rstd;
  const void* weight;
  const void* bias;
  bool weight_per_sample, bias_per_sample;
  double* seg_sum_dz;
  double* seg_sum_dz_xc;
  const void* coef;  // (N, C, 3): k, c1, c0 of dx, written by bwd_finalize
  bool stream_output;
};

struct KernelTable {
  const char* name;
  void (*fwd_stats)(const FwdJob&, index_t, index_t);
  void (*fwd_apply)(const FwdJob&, index_t, index_t);
  void (*bwd_sums)(const BwdJob&, index_t, index_t);
  void (*bwd_apply)(const BwdJob&, index_t, index_t);
};

// ---------------------------------------------------------------------------------------------
// The kernels, once per instruction-set level.

#define SF_ISA_BODY "cpu/instance_norm_cpu_kernels.h"
#define SF_ISA_MAX_LEVEL 3
#include "cpu/cpu_isa_kernels.h"

// The table for the level in use (cpu/cpu_isa.h: the CPU's best, capped by the environment).
const KernelTable& kernels() { return isa_kernel_table(); }

// ---------------------------------------------------------------------------------------------
// Shapes and schedules

Geometry make_geometry(index_t N, index_t C, index_t HW, bool channels_last, DType dtype) {
  Geometry g;
  g.N = N;
  g.C = C;
  g.HW = HW;
  g.channels_last = channels_last;
  if (channels_last) {
    const index_t lanes = dtype == DType::kDouble ? 8 : 16;
    g.block = std::min(C, kMaxBlock);
    g.blocks = (C + g.block - 1) / g.block;
    g.chunk_rows = kChunk / round_up(g.block, lanes);
  } else {
    g.block = 1;
    g.blocks = C;
    g.chunk_rows = kChunk;
  }
  g.units = N * g.blocks;
  g.seg_rows = g.chunk_rows * kSegChunks;
  g.segs = std::max<index_t>(1, (HW + g.seg_rows - 1) / g.seg_rows);
  return g;
}

// Channels_last with C not a multiple of the vector width (C = 3, 8, 24, 40, ...: the texture
// network's blocks, an RGB input): a sample's slab of H*W pixels x C channels is the same memory
// as rows of P = lcm(C, lanes) values, and column j of those rows holds channel j % C. The
// kernels run on that view (P "pseudo-channels" of whole vectors, read in place) and the
// statistics of the P / C columns of each channel are folded afterwards; the per-row gather
// into padded vectors it replaces ran several times slower than a copy. Needs H*W to fill whole rows
// (H*W % (P / C) == 0) and P <= kMaxBlock; returns P, or 0 when the view does not apply.
index_t periodic_width(index_t C, index_t HW, bool channels_last, DType dtype) {
  const index_t lanes = dtype == DType::kDouble ? 8 : 16;
  if (!channels_last || C % lanes == 0) return 0;
  const index_t P = C / std::gcd(C, lanes) * lanes;
  if (P > kMaxBlock || HW % (P / C) != 0) return 0;
  return P;
}

// (C,) or (N, C) -> (P,) or (N, P), column j taking channel j % C (undefined stays undefined).
at::Tensor expand_periodic(const at::Tensor& t, index_t C, index_t P) {
  if (!t.defined()) return t;
  const at::Tensor index = at::arange(P, t.options().dtype(at::kLong)).remainder(C);
  return t.index_select(t.dim() - 1, index).contiguous();
}

// Geometry of the problem the kernels see: the periodic view when P != 0.
Geometry kernel_geometry(index_t N, index_t C, index_t HW, bool channels_last, DType dtype,
                         index_t P) {
  return P ? make_geometry(N, P, HW * C / P, true, dtype)
           : make_geometry(N, C, HW, channels_last, dtype);
}

// stats(t0, t1) and apply(t0, t1) run tasks; finalize(u) folds the segments of unit u.
// unit_bytes: the bytes one unit reads per pass (all its input tensors).
void run_schedule(const Geometry& g, index_t unit_bytes,
                  const std::function<void(index_t, index_t)>& stats,
                  const std::function<void(index_t)>& finalize,
                  const std::function<void(index_t, index_t)>* apply) {
  const index_t threads = at::get_num_threads();
  const index_t S = g.segs;
  const bool fused = S == 1 || g.units % threads == 0 || g.units >= 4 * threads;
  if (fused) {
    const index_t grain = std::max<index_t>(1, kMinTaskValues / std::max<index_t>(1, g.HW * g.block));
    // Small units go in groups of up to kGroupBytes: the statistics pass of the group, then its
    // apply pass, which still finds the group in L2. Per-call costs (dispatch, the streaming
    // fence) are paid once per group instead of once per plane (they show on small planes).
    const index_t group = std::max<index_t>(1, kGroupBytes / std::max<index_t>(1, unit_bytes));
    at::parallel_for(0, g.units, grain, [&](index_t u0, index_t u1) {
      for (index_t a = u0; a < u1; a += group) {
        const index_t b = std::min(u1, a + group);
        stats(a * S, b * S);
        for (index_t u = a; u < b; ++u) finalize(u);
        if (apply) (*apply)(a * S, b * S);
      }
    });
    return;
  }
  at::parallel_for(0, g.tasks(), 1, [&](index_t t0, index_t t1) { stats(t0, t1); });
  for (index_t u = 0; u < g.units; ++u) finalize(u);
  if (apply) at::parallel_for(0, g.tasks(), 1, [&](index_t t0, index_t t1) { (*apply)(t0, t1); });
}

// Columns j, j + C, j + 2C, ... of a unit are one channel (C = real_C; the periodic view), or
// every column is its own channel (real_C = 0). Writes the real channels' mean / rstd to
// mean_out / rstd_out ((N, real_C)) and every column's to job.mean / job.rstd ((N, g.C)).
template <typename A>
void fwd_finalize(const FwdJob& job, index_t u, double eps, index_t real_C, void* mean_out,
                  void* rstd_out) {
  const Geometry& g = job.g;
  const TaskPos p = locate(g, u * g.segs);
  A* mean = static_cast<A*>(const_cast<void*>(job.mean));
  A* rstd = static_cast<A*>(const_cast<void*>(job.rstd));
  const index_t channels = real_C ? real_C : p.cw;
  const index_t reps = real_C ? p.cw / real_C : 1;
  for (index_t c = 0; c < channels; ++c) {
    double count = 0, m = 0, m2 = 0;
    for (index_t k = 0; k < reps; ++k) {
      const index_t j = c + k * channels;
      for (index_t s = 0; s < g.segs; ++s) {
        const index_t t = u * g.segs + s;
        const double rows = double(std::min(g.seg_rows, g.HW - s * g.seg_rows));
        chan_combine(count, m, m2, rows, job.seg_mean[t * g.block + j], job.seg_m2[t * g.block + j]);
      }
    }
    const A mean_c = A(m), rstd_c = A(1.0 / std::sqrt(m2 / count + eps));
    for (index_t k = 0; k < reps; ++k) {
      const index_t nc = p.n * g.C + p.c0 + c + k * channels;
      mean[nc] = mean_c;
      rstd[nc] = rstd_c;
    }
    if (real_C) {
      static_cast<A*>(mean_out)[p.n * real_C + c] = mean_c;
      static_cast<A*>(rstd_out)[p.n * real_C + c] = rstd_c;
    }
  }
}

// As fwd_finalize: columns j, j + C, ... of the periodic view are one channel (C = real_C);
// dgamma / dbeta are per real channel ((N, real_C), or (N, g.C) without the view), the dx
// coefficients per column.
template <typename A>
void bwd_finalize(const BwdJob& job, index_t u, index_t real_C, double* dgamma, double* dbeta) {
  const Geometry& g = job.g;
  const TaskPos p = locate(g, u * g.segs);
  const A* rstd = static_cast<const A*>(job.rstd);
  const A* weight = static_cast<const A*>(job.weight);
  A* coef = static_cast<A*>(const_cast<void*>(job.coef));
  const index_t channels = real_C ? real_C : p.cw;
  const index_t reps = real_C ? p.cw / real_C : 1;
  const double count = double(g.HW) * double(reps);  // values per channel
  for (index_t c = 0; c < channels; ++c) {
    double sum_dz = 0, sum_dz_xc = 0;
    for (index_t k = 0; k < reps; ++k) {
      const index_t j = c + k * channels;
      for (index_t s = 0; s < g.segs; ++s) {
        const index_t t = u * g.segs + s;
        sum_dz += job.seg_sum_dz[t * g.block + j];
        sum_dz_xc += job.seg_sum_dz_xc[t * g.block + j];
      }
    }
    const index_t col = p.c0 + c, nc = p.n * g.C + col;  // the channel's first column
    const double r = double(rstd[nc]);
    const double w = weight ? double(weight[job.weight_per_sample ? nc : col]) : 1.0;
    const double sum_dz_xhat = sum_dz_xc * r;
    const double k = r * w;
    // dz - mean(dz) is formed before scaling by k, so it cancels exactly where it should
    // (H*W = 1: dz == mean(dz), dx == 0).
    const A c_k = A(k), c_1 = A(-r * (sum_dz_xhat / count)), c_0 = A(-(sum_dz / count));
    for (index_t rep = 0; rep < reps; ++rep) {
      const index_t ncj = nc + rep * channels;
      coef[3 * ncj] = c_k;
      coef[3 * ncj + 1] = c_1;
      coef[3 * ncj + 2] = c_0;
    }
    const index_t out = real_C ? p.n * real_C + c : nc;
    dgamma[out] = sum_dz_xhat;
    dbeta[out] = sum_dz;
  }
}

// The last-level cache of this CPU's cores, in bytes: sysfs's per-instance size (glibc's
// sysconf(_SC_LEVEL3_CACHE_SIZE) reports 320 MiB on a 32 MiB-L3 EPYC VM: the whole package's).
int64_t last_level_cache_bytes() {
  static const int64_t bytes = [] {
#if defined(__linux__)
    for (int index = 3; index >= 2; --index) {
      const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
      std::FILE* f = std::fopen((dir + "/size").c_str(), "r");
      if (f == nullptr) continue;
      long long value = 0;
      char unit = 0;
      const int got = std::fscanf(f, "%lld%c", &value, &unit);
      std::fclose(f);
      if (got >= 1 && value > 0) {
        if (unit == 'K') value <<= 10;
        else if (unit == 'M') value <<= 20;
        return int64_t(value);
      }
    }
#endif
    long size = -1;
#if defined(_SC_LEVEL3_CACHE_SIZE)
    size = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    return size > 0 ? int64_t(size) : int64_t(32) << 20;
  }();
  return bytes;
}

// Outputs at least this large are written with streaming stores: the input (at least as large)
// and the output together exceed the last-level cache, so the output's first lines are evicted
// before a consumer could read them, and streaming saves reading every output line before
// overwriting it. Measured against a clone of the input (docs/benchmarks.md): streamed
// wins for outputs of twice the cache, cold or warm, while an output of a quarter of it is
// faster cached when warm, so the line is not lower. STYLIZE_FAST_CPU_STREAM_BYTES overrides it
// (tests set 0 to cover the streaming path).
int64_t stream_threshold_bytes() {
  const int64_t forced = config::cpu_stream_bytes();
  return forced >= 0 ? forced : last_level_cache_bytes() / 2;
}

// Whether the output can be streamed: large enough, and a float / double output written in place
// with 64-byte aligned rows for channels_last (NCHW planes align themselves), or the NCHW
// bfloat16 forward output (its vector stores are 64 bytes of rounded values).
bool use_streaming(const at::Tensor& out, const Geometry& g, bool forward) {
  const bool bf16_nchw_fwd = forward && out.scalar_type() == at::kBFloat16 && !g.channels_last;
  if (out.scalar_type() != at::kFloat && out.scalar_type() != at::kDouble && !bf16_nchw_fwd)
    return false;
  if (int64_t(out.nbytes()) < stream_threshold_bytes()) return false;
  if (!g.channels_last) return true;
  return (reinterpret_cast<uintptr_t>(out.data_ptr()) & 63) == 0 &&
         (g.C * int64_t(out.element_size())) % 64 == 0;
}

// ---------------------------------------------------------------------------------------------
// Argument checks

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat;
    case at::kDouble: return DType::kDouble;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kHalf;
    default: break;
  }
  TORCH_CHECK(false, "instance_norm (cpu): input must be float32, float64, bfloat16 or float16, got ",
              t.scalar_type());
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_input(const char* fn, const at::Tensor& input) {
  TORCH_CHECK(input.dim() == 4, fn, ": input must have 4 dimensions (N, C, H, W), got ",
              input.dim(), " with shape ", input.sizes());
  TORCH_CHECK(input.device().is_cpu(), fn, ": input must be a CPU tensor, got ", input.device());
  dtype_of(input);
}

// weight / bias: absent, or (C,) / (N, C) in the statistics dtype on the input's device.
// Returns a contiguous tensor (undefined when absent).
at::Tensor check_affine(const char* fn, const char* name, const c10::optional<at::Tensor>& t,
                        const at::Tensor& input) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  const int64_t N = input.size(0), C = input.size(1);
  TORCH_CHECK(t->device() == input.device(), fn, ": ", name, " is on ", t->device(),
              " but input is on ", input.device());
  const auto acc = acc_type(input.scalar_type());
  TORCH_CHECK(t->scalar_type() == acc, fn, ": ", name, " must have dtype ", acc, " for ",
              input.scalar_type(), " input, got ", t->scalar_type());
  const bool per_channel = t->dim() == 1 && t->size(0) == C;
  const bool per_sample = t->dim() == 2 && t->size(0) == N && t->size(1) == C;
  TORCH_CHECK(per_channel || per_sample, fn, ": ", name, " must have shape (C,) = (", C,
              ",) or (N, C) = (", N, ", ", C, "), got ", t->sizes());
  return t->contiguous();
}

void check_scalars(const char* fn, double eps, int64_t activation) {
  TORCH_CHECK(eps >= 0, fn, ": eps must be >= 0, got ", eps);
  TORCH_CHECK(activation >= 0 && activation <= 2, fn,
              ": activation must be 0 (none), 1 (relu) or 2 (leaky_relu), got ", activation);
}

// ---------------------------------------------------------------------------------------------
// Ops

// The forward; with_output false: the statistics pass alone (instance_norm_stats), the output
// comes back undefined.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(
    const char* fn, const at::Tensor& input, const c10::optional<at::Tensor>& weight_opt,
    const c10::optional<at::Tensor>& bias_opt, double eps, int64_t activation,
    double negative_slope, bool with_output) {
  check_input(fn, input);
  check_scalars(fn, eps, activation);
  const at::Tensor weight = check_affine(fn, "weight", weight_opt, input);
  const at::Tensor bias = check_affine(fn, "bias", bias_opt, input);

  const int64_t N = input.size(0), C = input.size(1), HW = input.size(2) * input.size(3);
  const auto fmt = input.suggest_memory_format();
  const auto acc = acc_type(input.scalar_type());
  at::Tensor output = with_output ? at::empty_like(input, fmt) : at::Tensor();
  at::Tensor mean = at::empty({N, C}, input.options().dtype(acc));
  at::Tensor rstd = at::empty({N, C}, input.options().dtype(acc));
  if (N * C == 0) return {output, mean, rstd};
  if (HW == 0) {  // statistics of nothing, as torch.var_mean gives them
    mean.fill_(std::numeric_limits<double>::quiet_NaN());
    rstd.fill_(std::numeric_limits<double>::quiet_NaN());
    return {output, mean, rstd};
  }
  const at::Tensor x = input.contiguous(fmt);
  const DType dtype = dtype_of(input);
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  const index_t P = periodic_width(C, HW, channels_last, dtype);
  const Geometry g = kernel_geometry(N, C, HW, channels_last, dtype, P);
  std::vector<double> seg_mean(g.tasks() * g.block), seg_m2(g.tasks() * g.block);
  // Per-column statistics and parameters of the periodic view (the real ones without it).
  const at::Tensor mean_k = P ? at::empty({N, P}, mean.options()) : mean;
  const at::Tensor rstd_k = P ? at::empty({N, P}, rstd.options()) : rstd;
  const at::Tensor weight_k = P ? expand_periodic(weight, C, P) : weight;
  const at::Tensor bias_k = P ? expand_periodic(bias, C, P) : bias;

  FwdJob job{g, dtype, int(activation), negative_slope, x.const_data_ptr(),
             with_output ? output.data_ptr() : nullptr,
             mean_k.data_ptr(), rstd_k.data_ptr(),
             weight_k.defined() ? weight_k.const_data_ptr() : nullptr,
             bias_k.defined() ? bias_k.const_data_ptr() : nullptr,
             weight.defined() && weight.dim() == 2, bias.defined() && bias.dim() == 2,
             seg_mean.data(), seg_m2.data(),
             with_output && use_streaming(output, g, /*forward=*/true)};
  const KernelTable& k = kernels();
  std::function<void(index_t, index_t)> stats = [&](index_t t0, index_t t1) {
    k.fwd_stats(job, t0, t1);
  };
  std::function<void(index_t, index_t)> apply = [&](index_t t0, index_t t1) {
    k.fwd_apply(job, t0, t1);
  };
  std::function<void(index_t)> finalize = [&](index_t u) {
    if (acc == at::kDouble) fwd_finalize<double>(job, u, eps, P ? C : 0, mean.data_ptr(), rstd.data_ptr());
    else fwd_finalize<float>(job, u, eps, P ? C : 0, mean.data_ptr(), rstd.data_ptr());
  };
  run_schedule(g, g.HW * g.block * int64_t(input.element_size()), stats, finalize,
               with_output ? &apply : nullptr);
  return {output, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_fwd(
    const at::Tensor& input, const c10::optional<at::Tensor>& weight_opt,
    const c10::optional<at::Tensor>& bias_opt, double eps, int64_t activation,
    double negative_slope) {
  return forward("instance_norm_fwd (cpu)", input, weight_opt, bias_opt, eps, activation,
                 negative_slope, true);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_bwd(
    const at::Tensor& grad_output, const at::Tensor& input,
    const c10::optional<at::Tensor>& weight_opt, const c10::optional<at::Tensor>& bias_opt,
    const at::Tensor& mean_in, const at::Tensor& rstd_in, int64_t activation,
    double negative_slope, std::array<bool, 3> output_mask) {
  constexpr const char* fn = "instance_norm_bwd (cpu)";
  check_input(fn, input);
  check_scalars(fn, 0.0, activation);
  TORCH_CHECK(grad_output.sizes() == input.sizes(), fn, ": grad_output must have the input's shape ",
              input.sizes(), ", got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), fn,
              ": grad_output must have the input's dtype ", input.scalar_type(), ", got ",
              grad_output.scalar_type());
  TORCH_CHECK(grad_output.device() == input.device(), fn, ": grad_output is on ",
              grad_output.device(), " but input is on ", input.device());
  const at::Tensor weight = check_affine(fn, "weight", weight_opt, input);
  const at::Tensor bias = check_affine(fn, "bias", bias_opt, input);
  const int64_t N = input.size(0), C = input.size(1), HW = input.size(2) * input.size(3);
  const auto acc = acc_type(input.scalar_type());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"mean", mean_in},
                                {"rstd", rstd_in}}) {
    TORCH_CHECK(t.device() == input.device(), fn, ": ", name, " is on ", t.device(),
                " but input is on ", input.device());
    TORCH_CHECK(t.scalar_type() == acc, fn, ": ", name, " must have dtype ", acc, ", got ",
                t.scalar_type());
    TORCH_CHECK(t.dim() == 2 && t.size(0) == N && t.size(1) == C, fn, ": ", name,
                " must have shape (N, C) = (", N, ", ", C, "), got ", t.sizes());
  }

  const auto fmt = input.suggest_memory_format();
  const bool want_input = output_mask[0];
  const bool want_weight = output_mask[1] && weight.defined();
  const bool want_bias = output_mask[2] && bias.defined();
  at::Tensor grad_input = want_input ? at::empty_like(input, fmt) : input.new_empty({0});
  at::Tensor grad_weight = want_weight ? at::empty_like(weight) : input.new_empty({0}, input.options().dtype(acc));
  at::Tensor grad_bias = want_bias ? at::empty_like(bias) : input.new_empty({0}, input.options().dtype(acc));
  if (!want_input && !want_weight && !want_bias) return {grad_input, grad_weight, grad_bias};
  if (N * C * HW == 0) {  // empty sums
    if (want_weight) grad_weight.zero_();
    if (want_bias) grad_bias.zero_();
    return {grad_input, grad_weight, grad_bias};
  }

  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor gy = grad_output.contiguous(fmt);
  const at::Tensor mean = mean_in.contiguous();
  const at::Tensor rstd = rstd_in.contiguous();
  const DType dtype = dtype_of(input);
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  const index_t P = periodic_width(C, HW, channels_last, dtype);
  const Geometry g = kernel_geometry(N, C, HW, channels_last, dtype, P);
  std::vector<double> seg_sum_dz(g.tasks() * g.block), seg_sum_dz_xc(g.tasks() * g.block);
  std::vector<double> dgamma(N * C), dbeta(N * C);
  at::Tensor coef = at::empty({N, g.C, 3}, input.options().dtype(acc));
  // The periodic view's per-column statistics and parameters (forward: the same view).
  const at::Tensor mean_k = P ? expand_periodic(mean, C, P) : mean;
  const at::Tensor rstd_k = P ? expand_periodic(rstd, C, P) : rstd;
  const at::Tensor weight_k = P ? expand_periodic(weight, C, P) : weight;
  const at::Tensor bias_k = P ? expand_periodic(bias, C, P) : bias;

  BwdJob job{g, dtype, int(activation), negative_slope, x.const_data_ptr(), gy.const_data_ptr(),
             want_input ? grad_input.data_ptr() : nullptr, mean_k.const_data_ptr(),
             rstd_k.const_data_ptr(), weight_k.defined() ? weight_k.const_data_ptr() : nullptr,
             bias_k.defined() ? bias_k.const_data_ptr() : nullptr,
             weight.defined() && weight.dim() == 2, bias.defined() && bias.dim() == 2,
             seg_sum_dz.data(), seg_sum_dz_xc.data(), coef.data_ptr(),
             want_input && use_streaming(grad_input, g, /*forward=*/false)};
  const KernelTable& k = kernels();
  std::function<void(index_t, index_t)> sums = [&](index_t t0, index_t t1) {
    k.bwd_sums(job, t0, t1);
  };
  std::function<void(index_t, index_t)> apply = [&](index_t t0, index_t t1) {
    k.bwd_apply(job, t0, t1);
  };
  std::function<void(index_t)> finalize = [&](index_t u) {
    if (acc == at::kDouble) bwd_finalize<double>(job, u, P ? C : 0, dgamma.data(), dbeta.data());
    else bwd_finalize<float>(job, u, P ? C : 0, dgamma.data(), dbeta.data());
  };
  run_schedule(g, 2 * g.HW * g.block * int64_t(input.element_size()), sums, finalize,
               want_input ? &apply : nullptr);

  // (N, C) partials -> the parameter's shape, summing over n in order.
  auto reduce_into = [&](at::Tensor& out, const std::vector<double>& part) {
    const bool per_sample = out.dim() == 2;
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "instance_norm_bwd_reduce", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      if (per_sample) {
        for (int64_t i = 0; i < N * C; ++i) o[i] = scalar_t(part[i]);
        return;
      }
      for (int64_t c = 0; c < C; ++c) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n) s += part[n * C + c];
        o[c] = scalar_t(s);
      }
    });
  };
  if (want_weight) reduce_into(grad_weight, dgamma);
  if (want_bias) reduce_into(grad_bias, dbeta);
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> instance_norm_stats(const at::Tensor& input, double eps) {
  TORCH_CHECK(eps >= 0, "instance_norm_stats (cpu): eps must be >= 0, got ", eps);
  auto result = forward("instance_norm_stats (cpu)", input, c10::nullopt, c10::nullopt, eps, 0,
                        0.0, false);
  return {std::get<1>(result), std::get<2>(result)};
}

}  // namespace instance_norm_cpu
}  // namespace stylize_fast

TORCH_LIBRARY_IMPL(stylize_fast, CPU, m) {
  m.impl("instance_norm_stats", &stylize_fast::instance_norm_cpu::instance_norm_stats);
  m.impl("instance_norm_fwd", &stylize_fast::instance_norm_cpu::instance_norm_fwd);
  m.impl("instance_norm_bwd", &stylize_fast::instance_norm_cpu::instance_norm_bwd);
}

// Introspection for tests and `stylize-fast info`: which vector level the CPU kernels use now.
TORCH_LIBRARY_FRAGMENT(stylize_fast, m) {
  m.def("instance_norm_cpu_isa() -> str",
        []() -> std::string { return stylize_fast::instance_norm_cpu::kernels().name; });
}
