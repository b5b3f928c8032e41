// Winograd F(4x4, 3x3) padded convolution on CPU (float32, 3x3, stride 1).
//
// Each 4x4 block of outputs ("tile") needs a 6x6 patch of the padded input. With Lavin & Gray's
// transforms (points 0, +-1, +-2, infinity)
//     Y = A^T [ (G w G^T) . (B^T d B) ] A
// the 36 products per tile and channel pair replace 144 multiply-adds of the direct method:
// the convolution becomes 36 independent GEMMs, (tiles x C) . (C x O), in the transform domain.
// That is 4x fewer multiplications than the library's direct convolution, which already runs
// near this CPU's peak, so it is the only way left to make these layers (most of Johnson's
// generator) markedly faster.
//
// Padding is free: the input transform reads each 6x6 patch through the padding index map
// (source_index), so reflect / replicate / zeros padding never materialises.
//
// Work is split into blocks of tiles; each thread runs whole blocks: input transform -> 36 GEMMs
// -> output transform (+ bias), writing its tiles' outputs directly. The weight transform U
// (36 x C x O) is computed once per call. Narrow layers use blocks small enough that a block's
// transformed input V (36 x block x C) and products M (36 x block x O) stay in the core's L2
// cache; wide ones (U beyond L2, streamed once per block) larger blocks (block_size).
//
// Accuracy: F(4x4, 3x3) in float32 loses a few bits against direct summation (its transform
// constants reach 8 and 1/24); errors stay around 1e-5 relative to the output's scale, checked
// against float64 in tests/test_padded_conv_cpu_winograd.py. bfloat16 tensors are read into and
// computed in float32 (the transform-domain products never round to bfloat16, which would
// amplify the error), and rounded once on output. float64 and float16 use the library.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "config.h"
#include "cpu/cpu_isa.h"
#include "cpu/padded_conv_cpu.h"

namespace stylize_fast {
namespace padded_conv_cpu {
namespace {

struct WinogradJob {
  const void* x;        // input (N, C, H, W) with strides xs, float32 or bfloat16
  int64_t xs[4];
  const void* w;        // weight (O, C, 3, 3) with strides ws, the input's dtype
  int64_t ws[4];
  void* y;              // output (N, O, HO, WO) with strides ys, the input's dtype
  int64_t ys[4];
  float* U;             // transformed weights [36][Cpad][Opad]
  const float* bias;    // Opad floats or nullptr
  int64_t C, O, HO, WO, Cpad, Opad;
  int64_t tiles_w, tiles;   // tiles per row, per image
  int64_t block, blocks;    // tiles per block (a multiple of the kernel's row step); blocks per
                            // image with pack, else in all (blocks then span images)
  bool pack;                // channels not contiguous: blocks are tile-row segments, packed
  int64_t segments;         // with pack: blocks per tile row
  const int64_t* row_src;   // padded row -> source row, -1 for a zero row
  const int64_t* col_src;   // padded column -> source column, -1 for a zero column
  int64_t batch;            // images
  bool stream_u;            // U too large to stay in cache: written with streaming stores
  bool flip_taps;           // w[o, c, a, b] read as w[o, c, 2 - a, 2 - b] (input gradient)
  bool relu;                // max(0, .) on the outputs as they are stored
  int64_t pool;             // 1, or 2 / 4: pool x pool output blocks summed into one y pixel
  // Input gradient of a conv + ReLU: the forward's output, with x's strides (channels-last
  // input only); x is read as 0 where it is not > 0 (relu's backward fused into the load).
  const void* gate;
  // Normalize-on-load (norm_conv2d): per-(n, c) scale / shift padded to [N][Cpad] (zero past C,
  // so padded channels stay 0), read as act(x * scale + shift); nullptr: none.
  const float* nscale;
  const float* nshift;
  int64_t nact;            // 0 none, 1 relu, 2 leaky_relu
  float nslope;
  // Epilogue (norm_conv2d): residual added before the activation (the output's dtype, strides
  // rs), and statistics partials: piece p at partials + p * partial_floats holds {count, image,
  // K[Opad], sum (v - K)[Opad], sum (v - K)^2[Opad]}.
  const void* residual;
  int64_t rs[4];
  float* partials;
  int64_t partial_floats;
};

struct KernelTable {
  void (*weight_transform)(const WinogradJob&, int64_t, int64_t);  // float32 tensors
  void (*run_blocks)(const WinogradJob&, int64_t, int64_t);
  void (*weight_transform_bf16)(const WinogradJob&, int64_t, int64_t);  // bfloat16 tensors
  void (*run_blocks_bf16)(const WinogradJob&, int64_t, int64_t);
  int row_step;
};

// Per-thread buffers kept between calls (grown, never shrunk): a wide layer's U, V and M run to
// tens of MB (VGG's 512 -> 512 layer: U 38 MB on the calling thread, V and M 10 MB each per
// thread), and fresh allocations paid page faults and zeroing for all of it on every call,
// measured as long as the transforms and GEMMs themselves there. Contents are whatever the last
// call left: every element read is written first.
enum ScratchSlot { kScratchU, kScratchV, kScratchM, kScratchP, kScratchSlots };

// 64-byte aligned (streaming stores need it; the kernels' vectors then never split lines).
float* scratch(ScratchSlot slot, size_t n) {
  constexpr size_t kAlign = 64 / sizeof(float);
  thread_local std::vector<float> buffers[kScratchSlots];
  std::vector<float>& buffer = buffers[slot];
  if (buffer.size() < n + kAlign) {
    buffer.clear();
    buffer.shrink_to_fit();
    buffer.resize(n + kAlign);
  }
  const uintptr_t address = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((64 - address % 64) % 64) / sizeof(float);
}

#define SF_ISA_BODY "cpu/padded_conv_cpu_winograd_kernels.h"
#include "cpu/cpu_isa_kernels.h"

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// A transformed weight larger than this (half the L3) is streamed from memory by every block;
// below it (VGG's 256 -> 256 layer: 9.4 MB), blocks sized for L2 measure faster (U comes from
// L3).
constexpr int64_t kStreamedU = 16 * 1024 * 1024;

int64_t u_bytes(int64_t Cpad, int64_t Opad) {
  return 36 * Cpad * Opad * static_cast<int64_t>(sizeof(float));
}

// Tiles per block, a multiple of the micro-kernel's row step. Two limits:
//  - V and M of the whole block (36 points) within ~768 KB, inside a 1 MB L2 with room for a U
//    slice: the transforms and the GEMMs then exchange them through L2;
//  - for wide layers, whose transformed weight U (36 Cpad Opad floats) does not stay in L2 and
//    is streamed from L3 / memory once per block, at least enough tiles that one point's V_x
//    and M_x rows take ~512 KB: U's traffic is then amortised over that many tiles (the GEMM
//    reuses each U slice from L1 over the whole block, see gemm), while V and M go through L3.
// Blocks that span images (`total` tiles in all, channels-last input) are then evened out so
// that every thread gets the same number. STYLIZE_FAST_WINOGRAD_BLOCK overrides it (tuning
// only).
int64_t block_size(int64_t Cpad, int64_t Opad, int64_t total, bool even, int row_step) {
  const int64_t channel_bytes = (Cpad + Opad) * static_cast<int64_t>(sizeof(float));
  int64_t block = (768 * 1024) / (36 * channel_bytes) / row_step * row_step;
  if (u_bytes(Cpad, Opad) > kStreamedU)
    block = std::max<int64_t>(block, (512 * 1024) / channel_bytes);
  if (config::winograd_block() > 0) {
    block = config::winograd_block() / row_step * row_step;
    even = false;
  }
  block = std::max<int64_t>(row_step, block);
  if (even) {
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t blocks = round_up((total + block - 1) / block, threads);
    return round_up((total + blocks - 1) / blocks, row_step);
  }
  return std::min(block, round_up(total, row_step));
}
}  // namespace

bool winograd_applies(const Geometry& g, at::ScalarType dtype) {
  return (dtype == at::kFloat || dtype == at::kBFloat16) && g.kh == 3 && g.kw == 3 &&
         g.sh == 1 && g.sw == 1;
}

bool winograd_pays(const Geometry& g, at::ScalarType dtype, bool folded_upsample) {
  // bfloat16 tensors run float32 arithmetic here, against the library's bfloat16 convolution
  // at twice the float32 rate: only wide channels_last layers gain (measured against eager
  // F.pad + conv2d; figures in docs/benchmarks.md); NCHW loses. A folded upsampling also
  // saves the upsampled copy, its padded copy and their backward: JohnsonNet's 64 -> 32
  // upsampling layer in bfloat16 (batch 4, 128x128 in) measured 0.42x the eager trio forward +
  // backward, so there 32 channels on both sides pay.
  if (dtype == at::kBFloat16) {
    const int64_t least = folded_upsample ? 32 : 64;
    return g.channels_last && g.c >= least && g.o >= least;
  }
  // The transforms cost O(C + O) per tile, the GEMMs save O(C * O): with few channels the
  // library wins. channels_last feeds the transforms whole channel vectors (faster than the
  // library from 16 channels up); other layouts are packed a few rows at a time first, which
  // only layers with 64 channels and more on both sides repay (docs/benchmarks.md).
  if (g.channels_last) return g.c >= 16 && g.o >= 16;
  return g.c >= 64 && g.o >= 64;
}

namespace {

// The statistics partials of a run merged per image, in piece order (Chan et al.'s pairwise
// update in float64), into mean and rstd = 1 / sqrt(var + eps), (N, O) float32.
void merge_stats(const WinogradJob& j, const std::vector<float>& partials, const Geometry& g,
                 double eps, at::Tensor& mean, at::Tensor& rstd) {
  mean = at::empty({g.n, g.o}, at::kFloat);
  rstd = at::empty({g.n, g.o}, at::kFloat);
  std::vector<double> count(g.n, 0.0), m(g.n * g.o, 0.0), m2(g.n * g.o, 0.0);
  const int64_t pieces = static_cast<int64_t>(partials.size()) / j.partial_floats;
  for (int64_t p = 0; p < pieces; ++p) {
    const float* part = partials.data() + p * j.partial_floats;
    const double nb = part[0];
    if (nb == 0) continue;
    const int64_t n = static_cast<int64_t>(part[1]);
    const float* k = part + 2;
    const float* s1 = k + j.Opad;
    const float* s2 = s1 + j.Opad;
    const double na = count[n], total = na + nb;
    for (int64_t o = 0; o < g.o; ++o) {
      // The piece's own mean and centred sum of squares from its shifted sums.
      const double mb = double(k[o]) + double(s1[o]) / nb;
      const double m2b = std::max(0.0, double(s2[o]) - double(s1[o]) * double(s1[o]) / nb);
      double& ma = m[n * g.o + o];
      const double delta = mb - ma;
      ma += delta * nb / total;
      m2[n * g.o + o] += m2b + delta * delta * na * nb / total;
    }
    count[n] = total;
  }
  float* mp = mean.data_ptr<float>();
  float* rp = rstd.data_ptr<float>();
  for (int64_t i = 0; i < g.n * g.o; ++i) {
    mp[i] = static_cast<float>(m[i]);
    rp[i] = static_cast<float>(1.0 / std::sqrt(m2[i] / count[i / g.o] + eps));
  }
}

// winograd_fwd, the weight's taps read flipped with flip_taps.
void winograd_run(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                  const Geometry& g, int64_t mode, bool flip_taps, int64_t activation,
                  at::Tensor& out, const at::Tensor& gate = at::Tensor(), int64_t pool = 1,
                  const LoadNorm& norm = LoadNorm(), Epilogue* epi = nullptr) {
  const auto dtype = input.scalar_type();
  TORCH_CHECK((dtype == at::kFloat || dtype == at::kBFloat16) && weight.scalar_type() == dtype &&
                  out.scalar_type() == dtype,
              "winograd_fwd: float32 or bfloat16 tensors of one dtype expected");
  const bool bf16 = dtype == at::kBFloat16;
  const KernelTable& k = isa_kernel_table();
  // The transforms run along channels; other layouts are packed channels-last a few rows at a
  // time (pack_rows) and their outputs scattered element-wise.
  const at::Tensor& x = input;
  at::Tensor& y = out;
  WinogradJob j{};
  j.x = x.const_data_ptr();
  j.w = weight.const_data_ptr();
  j.y = y.data_ptr();
  for (int d = 0; d < 4; ++d) {
    j.xs[d] = x.stride(d);
    j.ws[d] = weight.stride(d);
    j.ys[d] = y.stride(d);
  }
  j.flip_taps = flip_taps;
  j.C = g.c;
  j.O = g.o;
  j.HO = g.ho;
  j.WO = g.wo;
  j.Cpad = round_up(g.c, 16);
  j.Opad = round_up(g.o, 16);
  const int64_t tiles_h = (g.ho + 3) / 4;
  j.tiles_w = (g.wo + 3) / 4;
  j.tiles = tiles_h * j.tiles_w;
  j.pack = x.stride(1) != 1;
  j.batch = g.n;
  j.block = block_size(j.Cpad, j.Opad, j.pack ? j.tiles_w : g.n * j.tiles, !j.pack, k.row_step);
  j.segments = (j.tiles_w + j.block - 1) / j.block;
  j.blocks = j.pack ? tiles_h * j.segments : (g.n * j.tiles + j.block - 1) / j.block;

  // Padded rows / columns the tiles read; those past the padded input only feed outputs past
  // the edge, which are never stored.
  std::vector<int64_t> rows(tiles_h * 4 + 2), cols(j.tiles_w * 4 + 2);
  for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i)
    rows[i] = i < g.h + 2 * g.ph ? source_index(i, g.ph, g.h, mode, g.up) : -1;
  for (int64_t i = 0; i < static_cast<int64_t>(cols.size()); ++i)
    cols[i] = i < g.w + 2 * g.pw ? source_index(i, g.pw, g.w, mode, g.up) : -1;
  j.row_src = rows.data();
  j.col_src = cols.data();
  j.relu = activation == kRelu;
  // Pooled stores sum whole blocks inside a tile: the pool divides the tile (4) and the output.
  TORCH_CHECK((pool == 1 || pool == 2 || pool == 4) && g.ho % pool == 0 && g.wo % pool == 0 &&
                  out.size(2) == g.ho / pool && out.size(3) == g.wo / pool &&
                  (pool == 1 || !j.relu),
              "winograd: pooled store needs pool 1, 2 or 4 dividing the output (", g.ho, " x ",
              g.wo, "), y of the pooled size and no activation");
  j.pool = pool;
  if (gate.defined()) {
    TORCH_CHECK(!j.pack && gate.scalar_type() == dtype && gate.sizes() == x.sizes() &&
                    same_strides(gate, x),
                "winograd: the ReLU gate must match the channels-last input's sizes and strides");
    j.gate = gate.const_data_ptr();
  }

  // Normalize-on-load: scale / shift padded to Cpad channels per image.
  std::vector<float> nscale, nshift;
  if (norm.active()) {
    TORCH_CHECK(!gate.defined() && pool == 1, "winograd: normalize-on-load is a forward feature");
    nscale.assign(g.n * j.Cpad, 0.0f);
    nshift.assign(g.n * j.Cpad, 0.0f);
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t c = 0; c < g.c; ++c) {
        nscale[n * j.Cpad + c] = norm.scale[n * g.c + c];
        nshift[n * j.Cpad + c] = norm.shift[n * g.c + c];
      }
    j.nscale = nscale.data();
    j.nshift = nshift.data();
    j.nact = norm.activation;
    j.nslope = norm.slope;
  }
  std::vector<float> partials;
  if (epi != nullptr) {
    TORCH_CHECK(!gate.defined() && pool == 1, "winograd: the epilogue is a forward feature");
    if (epi->residual != nullptr) {
      j.residual = epi->residual;
      for (int d = 0; d < 4; ++d) j.rs[d] = epi->rs[d];
    }
    if (epi->stats) {
      j.partial_floats = 2 + 3 * j.Opad;
      const int64_t pieces = j.pack ? g.n * j.blocks : j.blocks + g.n;
      partials.assign(pieces * j.partial_floats, 0.0f);  // count 0: a piece never run
      j.partials = partials.data();
    }
  }

  std::vector<float> bias_padded;
  if (bias.defined()) {
    bias_padded.assign(j.Opad, 0.0f);
    const auto b = bias.to(at::kFloat).contiguous();
    std::memcpy(bias_padded.data(), b.const_data_ptr<float>(), sizeof(float) * g.o);
    j.bias = bias_padded.data();
  }
  j.U = scratch(kScratchU, static_cast<size_t>(36 * j.Cpad * j.Opad));
  j.stream_u = u_bytes(j.Cpad, j.Opad) > kStreamedU;
  const auto weights = bf16 ? k.weight_transform_bf16 : k.weight_transform;
  const auto blocks = bf16 ? k.run_blocks_bf16 : k.run_blocks;
  at::parallel_for(0, j.Cpad, 8, [&](int64_t b, int64_t e) { weights(j, b, e); });
  at::parallel_for(0, j.pack ? g.n * j.blocks : j.blocks, 1,
                   [&](int64_t b, int64_t e) { blocks(j, b, e); });
  if (j.partials != nullptr) merge_stats(j, partials, g, epi->eps, epi->mean, epi->rstd);
}

}  // namespace

void winograd_fwd(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                  const Geometry& g, int64_t mode, at::Tensor& out, int64_t activation,
                  const LoadNorm& norm, Epilogue* epi) {
  winograd_run(input, weight, bias, g, mode, false, activation, out, at::Tensor(), 1, norm, epi);
}

bool same_strides(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  return true;
}

void winograd_input_grad(const at::Tensor& grad_output, const at::Tensor& weight,
                         const Geometry& d, at::Tensor& grad_input, const at::Tensor& gate,
                         int64_t pool) {
  // The (C, O, 3, 3) view of the weight, its taps flipped where the weight transform reads
  // them: no copy (a flip and a channels-last copy of VGG's 512 x 512 weight cost several ms).
  winograd_run(grad_output, weight.transpose(0, 1), at::Tensor(), d, kZeros, true, kNoActivation,
               grad_input, gate, pool);
}

}  // namespace padded_conv_cpu
}  // namespace stylize_fast
