// Padded convolution on CPU: F.conv2d(F.pad(x, (pw, pw, ph, ph), mode), w, b, stride) without
// ever building the padded tensor.
//
// Design ("border fix-up"): the library convolution (oneDNN) is run once on the whole input with
// *zero* padding (ph, pw) -- oneDNN pads inside its kernels, no copy. Every output pixel whose
// receptive field lies inside the image is then already exact; only the output pixels within
// reach of the border (a band of ceil(p / s) rows / columns on each side) saw zeros where the
// mode wants reflected / replicated values. Those are recomputed and written over: their patches
// gathered through the padding index map (im2col of the border pixels only) times the weight,
// one GEMM per chunk of pixels -- O(perimeter) extra work. (Thin convolutions over the bands
// were the first design: oneDNN runs those 1-2 orders of magnitude below its rate.)
//
// The backward is the same identity read backwards. With P(x) = Z(x) + B(x) (zero padding plus
// the values that only live in the padding ring):
//   grad_input  = Z^T G + B^T G   -- Z^T G from the library's zero-padded backward (or our
//                                    kernels'); B^T G = the border pixels' patch gradients
//                                    (G W, one GEMM) restricted to the ring and folded (one
//                                    thread per (n, c) plane: deterministic, no atomics) onto
//                                    the reflected / replicated source pixels, summed in float32
//                                    and added to Z^T G once (half types: one more rounding,
//                                    not one per term);
//   grad_weight = wgrad(Z(x), gy) + G(border)^T B(patches)  (one GEMM), or our kernel's
//                 (padded_conv_cpu_wgrad.cpp, few output channels), which reads B directly;
//   grad_bias   = sum of gy.
// The four bands (top, bottom, and left / right between them) are disjoint and cover every
// output pixel that touches the ring, so each contribution is counted exactly once.
//
// Most layers are better served by kernels of our own, chosen per call by algorithm_for():
// a direct kernel (padded_conv_cpu_direct.cpp) for few output channels (the library runs
// Johnson's last 9x9 32->3 layer at a fifth of its usual rate), few input channels with large
// kernels and float32 stride-2 NCHW layers; and for 3x3 stride-1 layers Winograd F(4x4, 3x3)
// padded_conv_cpu_winograd.cpp: 4x fewer multiplications). STYLIZE_FAST_CONV_ALGO = auto |
// library | direct | winograd forces one (read on every call; tests use it);
// padded_conv2d_cpu_algorithm() says which one a call would run.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/core/MemoryFormat.h>
#include <c10/util/strides.h>
#include <torch/library.h>

#include <array>
#include <cstdlib>
#include <string>
#include <vector>

#include "cpu/padded_conv_cpu.h"

namespace stylize_fast {
namespace padded_conv_cpu {
namespace {

// One rectangle of output pixels [oh0, oh1) x [ow0, ow1) that needs the fix-up.
struct Band {
  int64_t oh0, oh1, ow0, ow1;
  bool empty() const { return oh1 <= oh0 || ow1 <= ow0; }
};

Geometry check_args(const char* fn, const at::Tensor& input, const at::Tensor& weight,
                    const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                    at::IntArrayRef padding, int64_t mode) {
  TORCH_CHECK(input.dim() == 4, fn, ": input must have 4 dimensions (N, C, H, W), got ",
              input.dim(), " with shape ", input.sizes());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              fn, ": input must be a floating-point tensor, got ", input.scalar_type());
  TORCH_CHECK(weight.dim() == 4, fn, ": weight must have 4 dimensions (O, C, KH, KW), got ",
              weight.dim(), " with shape ", weight.sizes());
  TORCH_CHECK(weight.size(1) == input.size(1), fn, ": weight has ", weight.size(1),
              " input channels (shape ", weight.sizes(), ") but input has ", input.size(1),
              " channels; groups=1 is required");
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), fn, ": weight dtype ",
              weight.scalar_type(), " must equal input dtype ", input.scalar_type());
  TORCH_CHECK(weight.device() == input.device(), fn, ": weight is on ", weight.device(),
              " but input is on ", input.device());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), fn,
                ": bias must have shape (O,) = (", weight.size(0), ",), got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == input.scalar_type(), fn, ": bias dtype ",
                bias->scalar_type(), " must equal input dtype ", input.scalar_type());
    TORCH_CHECK(bias->device() == input.device(), fn, ": bias is on ", bias->device(),
                " but input is on ", input.device());
  }
  TORCH_CHECK(stride.size() == 2 && stride[0] >= 1 && stride[1] >= 1, fn,
              ": stride must be two integers >= 1, got ", stride);
  TORCH_CHECK(padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0, fn,
              ": padding must be two integers >= 0, got ", padding);
  TORCH_CHECK(mode == kZeros || mode == kReflect || mode == kReplicate, fn,
              ": padding_mode must be 0 (zeros), 1 (reflect) or 2 (replicate), got ", mode);
  Geometry g{input.size(0), input.size(1), input.size(2), input.size(3),
             weight.size(0), weight.size(2), weight.size(3),
             stride[0], stride[1], padding[0], padding[1], 0, 0,
             input.suggest_memory_format() == at::MemoryFormat::ChannelsLast};
  if (mode == kReflect) {
    TORCH_CHECK(g.ph < g.h && g.pw < g.w, fn, ": reflect padding must be smaller than the "
                "input size in that dimension (as F.pad): padding (", g.ph, ", ", g.pw,
                ") for input of height ", g.h, " and width ", g.w);
  }
  if (mode == kReplicate) {
    TORCH_CHECK(g.h > 0 && g.w > 0, fn, ": replicate padding needs a non-empty input plane, "
                "got height ", g.h, " and width ", g.w);
  }
  const int64_t hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
  TORCH_CHECK(hp >= g.kh && wp >= g.kw, fn, ": padded input (", hp, " x ", wp,
              ") is smaller than the kernel (", g.kh, " x ", g.kw, ")");
  g.ho = (hp - g.kh) / g.sh + 1;
  g.wo = (wp - g.kw) / g.sw + 1;
  return g;
}

// Output rows [0, top) touch the leading padding, rows [bottom, out) the trailing padding.
std::pair<int64_t, int64_t> border_extent(int64_t size, int64_t pad, int64_t k, int64_t s,
                                          int64_t out) {
  if (pad == 0) return {0, out};
  const int64_t top = std::min(out, (pad - 1) / s + 1);
  // First output index whose window reaches padded index pad + size.
  const int64_t v = pad + size - k + 1;
  const int64_t first = v <= 0 ? 0 : (v + s - 1) / s;
  return {top, std::max(top, std::min(out, first))};
}

std::vector<Band> border_bands(const Geometry& g) {
  auto [top, bottom] = border_extent(g.h, g.ph, g.kh, g.sh, g.ho);
  auto [left, right] = border_extent(g.w, g.pw, g.kw, g.sw, g.wo);
  std::vector<Band> bands = {{0, top, 0, g.wo}, {bottom, g.ho, 0, g.wo},
                             {top, bottom, 0, left}, {top, bottom, right, g.wo}};
  std::vector<Band> nonempty;
  for (const auto& b : bands)
    if (!b.empty()) nonempty.push_back(b);
  return nonempty;
}

// The output pixels the fix-up recomputes: every pixel of the border bands, in the order
// (band, row, column). Pixel p of the whole batch is pixel p % S of sample p / S.
struct BorderPixels {
  std::vector<int64_t> oy, ox;
  int64_t size() const { return static_cast<int64_t>(oy.size()); }
};

BorderPixels border_pixels(const Geometry& g) {
  BorderPixels bp;
  for (const Band& b : border_bands(g))
    for (int64_t y = b.oh0; y < b.oh1; ++y)
      for (int64_t x = b.ow0; x < b.ow1; ++x) {
        bp.oy.push_back(y);
        bp.ox.push_back(x);
      }
  return bp;
}

// Source row / column of every padded coordinate (-1: zero padding), and whether it lies in
// the padding ring rather than the image.
struct PadMap {
  std::vector<int64_t> row, col;
  std::vector<char> row_ring, col_ring;
};

PadMap pad_map(const Geometry& g, int64_t mode) {
  PadMap m;
  const int64_t hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
  for (int64_t i = 0; i < hp; ++i) {
    m.row.push_back(source_index(i, g.ph, g.h, mode));
    m.row_ring.push_back(i < g.ph || i >= g.ph + g.h);
  }
  for (int64_t j = 0; j < wp; ++j) {
    m.col.push_back(source_index(j, g.pw, g.w, mode));
    m.col_ring.push_back(j < g.pw || j >= g.pw + g.w);
  }
  return m;
}

// The input pixels that receive ring terms in the backward (the sources of padding rows, any
// column, and the sources of padding columns, any row), each with a slot in a float
// accumulator: their terms are summed there and added to grad_input once, so that a
// half-precision gradient is rounded once rather than after every term. Slots: rows first
// (row_slot[r] * W + col), then the columns of the other rows (R * W + r * Q + col_slot[col]).
struct RingSlots {
  std::vector<int64_t> row_slot, col_slot;  // -1: not a source of the ring
  std::vector<int64_t> cols;                // the columns with col_slot >= 0
  int64_t rows = 0, w = 0, total = 0;
  int64_t slot(int64_t r, int64_t c) const {
    return row_slot[r] >= 0 ? row_slot[r] * w + c
                            : rows * w + r * static_cast<int64_t>(cols.size()) + col_slot[c];
  }
};

RingSlots ring_slots(const Geometry& g, const PadMap& m) {
  RingSlots s;
  s.row_slot.assign(g.h, -1);
  s.col_slot.assign(g.w, -1);
  for (size_t i = 0; i < m.row.size(); ++i)
    if (m.row_ring[i] && m.row[i] >= 0 && s.row_slot[m.row[i]] < 0)
      s.row_slot[m.row[i]] = s.rows++;
  for (size_t j = 0; j < m.col.size(); ++j)
    if (m.col_ring[j] && m.col[j] >= 0 && s.col_slot[m.col[j]] < 0) {
      s.col_slot[m.col[j]] = static_cast<int64_t>(s.cols.size());
      s.cols.push_back(m.col[j]);
    }
  s.w = g.w;
  s.total = s.rows * g.w + g.h * static_cast<int64_t>(s.cols.size());
  return s;
}

// Work below this many elements runs on the calling thread: a parallel region costs more than
// copying a few patches, and far more when the cores are oversubscribed.
constexpr int64_t kParallelGrain = 1 << 15;
// Patches (and their gradients) are built and multiplied in chunks of at most this many bytes:
// small next to any activation, so the fix-up never raises the call's peak memory much (the
// GEMMs stay efficient down to ~100 rows).
constexpr int64_t kPatchChunkBytes = int64_t(1) << 20;

// Column order of the patch rows: taps outer and channels inner when the input's channels are
// contiguous (channels_last), so that reads and writes both run along memory; channels outer
// otherwise. weight_matrix() orders the weight's columns the same way.
bool taps_major(const at::Tensor& x) { return x.stride(1) == 1 && x.size(1) > 1; }

int64_t patch_column(const Geometry& g, bool taps_first, int64_t c, int64_t ky, int64_t kx) {
  return taps_first ? (ky * g.kw + kx) * g.c + c : (c * g.kh + ky) * g.kw + kx;
}

// The weight as an (O, K) matrix in the accumulation dtype, columns in patch order.
at::Tensor weight_matrix(const at::Tensor& weight, const Geometry& g, bool taps_first,
                         at::ScalarType acc) {
  const auto w = taps_first ? weight.permute({0, 2, 3, 1}) : weight;
  return w.to(acc).contiguous().view({g.o, g.c * g.kh * g.kw});
}

// The border pixels [p0, p1) as rows of patches (im2col through the padding index map), in the
// accumulation dtype: row p - p0, column patch_column(c, ky, kx) holds Xpad[n, c, oy SH + ky,
// ox SW + kx]. ring_only: values inside the image are zero (the zero-padded library pass
// covered them).
template <typename scalar_t, typename acc_t>
void gather_patches(const at::Tensor& x, const Geometry& g, const PadMap& m,
                    const BorderPixels& bp, int64_t p0, int64_t p1, bool ring_only, acc_t* out) {
  const int64_t K = g.c * g.kh * g.kw, S = bp.size();
  const bool taps_first = taps_major(x);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const auto xs = x.strides();
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, K));
  at::parallel_for(p0, p1, grain, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t n = p / S, iy0 = bp.oy[p % S] * g.sh, ix0 = bp.ox[p % S] * g.sw;
      acc_t* row = out + (p - p0) * K;
      const scalar_t* sample = xp + n * xs[0];
      for (int64_t ky = 0; ky < g.kh; ++ky) {
        const int64_t iy = iy0 + ky, sr = m.row[iy];
        for (int64_t kx = 0; kx < g.kw; ++kx) {
          const int64_t ix = ix0 + kx, sc = m.col[ix];
          const bool skip = sr < 0 || sc < 0 || (ring_only && !m.row_ring[iy] && !m.col_ring[ix]);
          const scalar_t* px = sample + (skip ? 0 : sr * xs[2] + sc * xs[3]);
          if (taps_first) {
            acc_t* dst = row + (ky * g.kw + kx) * g.c;
            for (int64_t c = 0; c < g.c; ++c) dst[c] = skip ? acc_t(0) : static_cast<acc_t>(px[c]);
          } else {
            acc_t* dst = row + ky * g.kw + kx;
            const int64_t step = g.kh * g.kw;
            for (int64_t c = 0; c < g.c; ++c)
              dst[c * step] = skip ? acc_t(0) : static_cast<acc_t>(px[c * xs[1]]);
          }
        }
      }
    }
  });
}

// grad_output at the border pixels [p0, p1) as (pixels, O) in the accumulation dtype.
template <typename scalar_t, typename acc_t>
void gather_grad(const at::Tensor& gy, const Geometry& g, const BorderPixels& bp, int64_t p0,
                 int64_t p1, acc_t* out) {
  const int64_t S = bp.size();
  const scalar_t* gp = gy.const_data_ptr<scalar_t>();
  const auto gs = gy.strides();
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, g.o));
  at::parallel_for(p0, p1, grain, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t n = p / S, y = bp.oy[p % S], x = bp.ox[p % S];
      const scalar_t* px = gp + n * gs[0] + y * gs[2] + x * gs[3];
      for (int64_t o = 0; o < g.o; ++o) out[(p - p0) * g.o + o] = static_cast<acc_t>(px[o * gs[1]]);
    }
  });
}

at::ScalarType acc_type_of(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

int64_t patch_chunk_rows(const Geometry& g) {
  return std::max<int64_t>(1, kPatchChunkBytes / (g.c * g.kh * g.kw * int64_t(sizeof(float))));
}

// The forward fix-up: the border pixels of out recomputed from their true-padded patches, one
// GEMM per chunk of pixels (oneDNN runs the bands' thin convolutions 1-2 orders of magnitude
// below its rate).
void fix_forward_border(const at::Tensor& input, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias, const Geometry& g, int64_t mode,
                        at::Tensor& out) {
  const BorderPixels bp = border_pixels(g);
  const int64_t P = g.n * bp.size(), K = g.c * g.kh * g.kw;
  if (P == 0) return;
  const PadMap m = pad_map(g, mode);
  const auto acc = acc_type_of(input.scalar_type());
  const auto opts = input.options().dtype(acc).memory_format(at::MemoryFormat::Contiguous);
  const auto wt = weight_matrix(weight, g, taps_major(input), acc).t();
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->to(acc) : at::Tensor();
  const int64_t rows = patch_chunk_rows(g), S = bp.size();
  auto patches = at::empty({std::min(rows, P), K}, opts);
  const auto os = out.strides();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fix_forward",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    scalar_t* op = out.data_ptr<scalar_t>();
    for (int64_t p0 = 0; p0 < P; p0 += rows) {
      const int64_t p1 = std::min(P, p0 + rows);
      auto pt = patches.narrow(0, 0, p1 - p0);
      gather_patches<scalar_t, acc_t>(input, g, m, bp, p0, p1, false, pt.data_ptr<acc_t>());
      const auto y = b.defined() ? at::addmm(b, pt, wt) : at::mm(pt, wt);  // (pixels, O)
      const acc_t* yp = y.const_data_ptr<acc_t>();
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t n = p / S, oy = bp.oy[p % S], ox = bp.ox[p % S];
        for (int64_t o = 0; o < g.o; ++o)
          op[n * os[0] + o * os[1] + oy * os[2] + ox * os[3]] =
              static_cast<scalar_t>(yp[(p - p0) * g.o + o]);
      }
    }
  });
}

// The backward fix-up (B^T G and wgrad(B(x), G), see the top of the file), one GEMM per chunk
// of border pixels for each. grad_input (when defined) gets the ring contributions folded onto
// their source pixels: summed per source pixel in the accumulation dtype (one thread per (n, c)
// plane or channel block, pixels in a fixed order -- deterministic, no atomics), then added to
// grad_input once, so that a half-precision gradient is rounded once. grad_weight_acc (when
// defined): (O, C, KH, KW) contiguous, accumulation dtype.
void fix_backward_border(const at::Tensor& gy, const at::Tensor& input, const at::Tensor& weight,
                         const Geometry& g, int64_t mode, at::Tensor& grad_input,
                         at::Tensor& grad_weight_acc) {
  const BorderPixels bp = border_pixels(g);
  const int64_t P = g.n * bp.size(), K = g.c * g.kh * g.kw, S = bp.size();
  if (P == 0) return;
  const PadMap m = pad_map(g, mode);
  const auto acc = acc_type_of(input.scalar_type());
  const auto opts = input.options().dtype(acc).memory_format(at::MemoryFormat::Contiguous);
  const bool taps_first = taps_major(input);
  const auto wmat = weight_matrix(weight, g, taps_first, acc);
  const int64_t rows = patch_chunk_rows(g);
  auto gyp = at::empty({std::min(rows, P), g.o}, opts);
  at::Tensor patches, gw, dp_buf;
  if (grad_weight_acc.defined()) {
    patches = at::empty({std::min(rows, P), K}, opts);
    gw = at::zeros({g.o, K}, opts);  // corrections in patch order, added once at the end
  }
  // grad_input's ring terms, summed in the accumulation dtype per (sample, slot, channel) --
  // (sample, channel, slot) for NCHW -- and added to grad_input once at the end.
  RingSlots slots;
  at::Tensor ring_acc;
  if (grad_input.defined()) {
    dp_buf = at::empty({std::min(rows, P), K}, opts);
    slots = ring_slots(g, m);
    ring_acc = at::zeros({g.n * slots.total * g.c}, opts);
  }
  const int64_t T = slots.total;
  auto acc_offset = [&](int64_t n, int64_t slot, int64_t c) {
    return taps_first ? (n * T + slot) * g.c + c : (n * g.c + c) * T + slot;
  };
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fix_backward",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t p0 = 0; p0 < P; p0 += rows) {
      const int64_t p1 = std::min(P, p0 + rows);
      auto gt = gyp.narrow(0, 0, p1 - p0);
      gather_grad<scalar_t, acc_t>(gy, g, bp, p0, p1, gt.data_ptr<acc_t>());
      if (grad_weight_acc.defined()) {
        auto pt = patches.narrow(0, 0, p1 - p0);
        gather_patches<scalar_t, acc_t>(input, g, m, bp, p0, p1, true, pt.data_ptr<acc_t>());
        gw.addmm_(gt.t(), pt);
      }
      if (!grad_input.defined()) continue;
      auto dp = dp_buf.narrow(0, 0, p1 - p0);
      at::mm_out(dp, gt, wmat);  // (pixels, K): each patch's gradient
      const acc_t* dpp = dp.const_data_ptr<acc_t>();
      acc_t* ra = ring_acc.data_ptr<acc_t>();
      const int64_t n0 = p0 / S, n1 = (p1 - 1) / S + 1;
      // Units of (sample, block of channels): one channel for NCHW, 32 adjacent ones when they
      // are contiguous. Every element gets its contributions in (pixel, ky, kx) order whatever
      // the unit or thread: deterministic.
      const int64_t cb = taps_first ? std::min<int64_t>(32, g.c) : 1;
      const int64_t blocks = (g.c + cb - 1) / cb;
      const int64_t grain = std::max<int64_t>(
          1, kParallelGrain / std::max<int64_t>(1, (p1 - p0) * g.kh * g.kw * cb));
      at::parallel_for(n0 * blocks, n1 * blocks, grain, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          const int64_t n = t / blocks, c0 = t % blocks * cb, c1 = std::min(g.c, c0 + cb);
          for (int64_t p = std::max(p0, n * S); p < std::min(p1, (n + 1) * S); ++p) {
            const int64_t iy0 = bp.oy[p % S] * g.sh, ix0 = bp.ox[p % S] * g.sw;
            const acc_t* src = dpp + (p - p0) * K;
            for (int64_t ky = 0; ky < g.kh; ++ky) {
              const int64_t iy = iy0 + ky, sr = m.row[iy];
              if (sr < 0) continue;
              for (int64_t kx = 0; kx < g.kw; ++kx) {
                const int64_t ix = ix0 + kx, sc = m.col[ix];
                if (sc < 0 || (!m.row_ring[iy] && !m.col_ring[ix])) continue;
                const int64_t slot = slots.slot(sr, sc);
                for (int64_t c = c0; c < c1; ++c)
                  ra[acc_offset(n, slot, c)] += src[patch_column(g, taps_first, c, ky, kx)];
              }
            }
          }
        }
      });
    }
    if (!grad_input.defined()) return;
    // Z^T G (already in grad_input) + the ring terms, rounded once.
    const acc_t* ra = ring_acc.const_data_ptr<acc_t>();
    scalar_t* gi = grad_input.data_ptr<scalar_t>();
    const auto gs = grad_input.strides();
    const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, T));
    at::parallel_for(0, g.n * g.c, grain, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t n = t / g.c, c = t % g.c;
        scalar_t* plane = gi + n * gs[0] + c * gs[1];
        auto add = [&](int64_t r, int64_t col) {
          scalar_t& dst = plane[r * gs[2] + col * gs[3]];
          const acc_t ring = ra[acc_offset(n, slots.slot(r, col), c)];
          dst = static_cast<scalar_t>(static_cast<acc_t>(dst) + ring);
        };
        for (int64_t r = 0; r < g.h; ++r) {
          if (slots.row_slot[r] >= 0) {
            for (int64_t col = 0; col < g.w; ++col) add(r, col);
          } else {
            for (const int64_t col : slots.cols) add(r, col);
          }
        }
      }
    });
  });
  if (gw.defined()) {
    const auto corr = taps_first ? gw.view({g.o, g.kh, g.kw, g.c}).permute({0, 3, 1, 2})
                                 : gw.view({g.o, g.c, g.kh, g.kw});
    grad_weight_acc.add_(corr);
  }
}

// t with the canonical strides of fmt (size-1 dims included, as at::empty makes them), so that
// the result always matches the fake kernel; copies only when the library chose otherwise.
at::Tensor in_format(const at::Tensor& t, at::MemoryFormat fmt) {
  const bool canonical =
      fmt == at::MemoryFormat::ChannelsLast
          ? t.strides() == at::IntArrayRef(c10::get_channels_last_strides_2d(t.sizes()))
          : t.strides() == at::IntArrayRef(c10::contiguous_strides(t.sizes()));
  if (canonical) return t;
  auto want = at::empty(t.sizes(), t.options().memory_format(fmt));
  want.copy_(t);
  return want;
}

const std::array<int64_t, 2> kNoPad = {0, 0};
const std::array<int64_t, 2> kDilation = {1, 1};

const char* algorithm_name(Algorithm a) {
  return a == Algorithm::kDirect ? "direct" : a == Algorithm::kWinograd ? "winograd" : "library";
}

// STYLIZE_FAST_CONV_ALGO, checked: "" (unset or auto), "library", "direct" or "winograd".
std::string forced_algorithm() {
  const char* env = std::getenv("STYLIZE_FAST_CONV_ALGO");
  std::string forced = env == nullptr ? "" : env;
  if (forced == "auto") forced.clear();
  TORCH_CHECK(forced.empty() || forced == "library" || forced == "direct" || forced == "winograd",
              "environment variable STYLIZE_FAST_CONV_ALGO must be one of auto, library, "
              "direct, winograd (or unset), got '", forced, "'");
  return forced;
}

// The forward algorithm for this call: STYLIZE_FAST_CONV_ALGO when set, else the fastest that
// applies (direct for few output channels, Winograd for 3x3 stride 1, else the library).
Algorithm algorithm_for(const Geometry& g, at::ScalarType dtype) {
  const std::string forced = forced_algorithm();
  if (forced.empty()) {
    if (direct_applies(g, dtype)) return Algorithm::kDirect;
    if (winograd_applies(g, dtype) && winograd_pays(g, dtype)) return Algorithm::kWinograd;
    return Algorithm::kLibrary;
  }
  if (forced == "direct") {
    TORCH_CHECK(direct_applies(g, dtype), "padded_conv2d_fwd: STYLIZE_FAST_CONV_ALGO=direct but "
                "the direct kernel does not handle this layer (", g.o, " output channels, kernel ",
                g.kh, "x", g.kw, ", stride ", g.sh, "x", g.sw, ", dtype ", dtype, ")");
    return Algorithm::kDirect;
  }
  if (forced == "winograd") {
    TORCH_CHECK(winograd_applies(g, dtype), "padded_conv2d_fwd: STYLIZE_FAST_CONV_ALGO=winograd "
                "but Winograd F(4x4, 3x3) does not handle this layer (kernel ", g.kh, "x", g.kw,
                ", stride ", g.sh, "x", g.sw, ", dtype ", dtype, ")");
    return Algorithm::kWinograd;
  }
  return Algorithm::kLibrary;
}

// The input gradient's zero-padded part, Z^T G, is itself a stride-1 convolution of grad_output
// with the flipped, transposed weight and padding k - 1 - p: geometry of that convolution.
Geometry input_grad_geometry(const Geometry& g) {
  return {g.n, g.o, g.ho, g.wo, g.c, g.kh, g.kw, 1, 1, g.kh - 1 - g.ph, g.kw - 1 - g.pw,
          g.h, g.w, g.channels_last};
}

// Algorithm for the backward's input gradient: the direct kernel or Winograd where one applies
// and pays (or is forced and applies), else the library. Never an error: the backward has no
// other algorithm to force.
Algorithm input_grad_algorithm_for(const Geometry& g, at::ScalarType dtype) {
  if (g.sh != 1 || g.sw != 1 || g.ph > g.kh - 1 || g.pw > g.kw - 1) return Algorithm::kLibrary;
  const Geometry d = input_grad_geometry(g);
  const std::string forced = forced_algorithm();
  const bool direct = direct_applies(d, dtype);
  const bool winograd = winograd_applies(d, dtype);
  if (forced == "direct") return direct ? Algorithm::kDirect : Algorithm::kLibrary;
  if (forced == "winograd") return winograd ? Algorithm::kWinograd : Algorithm::kLibrary;
  if (forced == "library") return Algorithm::kLibrary;
  if (direct) return Algorithm::kDirect;
  return winograd && winograd_pays(d, dtype) ? Algorithm::kWinograd : Algorithm::kLibrary;
}

// Algorithm for the backward's weight gradient: the kernel of our own where it applies
// (STYLIZE_FAST_CONV_ALGO=library or winograd keep the library's), else the library.
Algorithm weight_grad_algorithm_for(const Geometry& g, at::ScalarType dtype) {
  const std::string forced = forced_algorithm();
  if (forced == "library" || forced == "winograd") return Algorithm::kLibrary;
  return wgrad_applies(g, dtype) ? Algorithm::kDirect : Algorithm::kLibrary;
}

at::Tensor padded_conv2d_fwd_cpu(const at::Tensor& input, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, int64_t mode) {
  const Geometry g = check_args("padded_conv2d_fwd", input, weight, bias, stride, padding, mode);
  const auto fmt = input.suggest_memory_format();
  const Algorithm algorithm = algorithm_for(g, input.scalar_type());
  if (algorithm != Algorithm::kLibrary && input.numel() > 0) {
    auto out = at::empty({g.n, g.o, g.ho, g.wo}, input.options().memory_format(fmt));
    const at::Tensor b = bias.has_value() ? *bias : at::Tensor();
    if (algorithm == Algorithm::kDirect) direct_fwd(input, weight, b, g, mode, out);
    else winograd_fwd(input, weight, b, g, mode, out);
    return out;
  }
  // The weight in the input's layout keeps oneDNN from choosing another output layout.
  const auto w = weight.contiguous(fmt);
  at::Tensor out = at::convolution(input, w, bias, stride, padding, kDilation, false, kNoPad, 1);
  out = in_format(out, fmt);
  if (mode == kZeros || (g.ph == 0 && g.pw == 0) || out.numel() == 0) return out;
  fix_forward_border(input, weight, bias, g, mode, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> padded_conv2d_bwd_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, int64_t mode,
    std::array<bool, 3> output_mask) {
  const Geometry g =
      check_args("padded_conv2d_bwd", input, weight, c10::nullopt, stride, padding, mode);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.n &&
                  grad_output.size(1) == g.o && grad_output.size(2) == g.ho &&
                  grad_output.size(3) == g.wo,
              "padded_conv2d_bwd: grad_output must have shape (", g.n, ", ", g.o, ", ", g.ho,
              ", ", g.wo, "), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(),
              "padded_conv2d_bwd: grad_output dtype ", grad_output.scalar_type(),
              " must equal input dtype ", input.scalar_type());
  const auto fmt = input.suggest_memory_format();
  const auto w = weight.contiguous(fmt);
  const auto gy = grad_output.contiguous(fmt);
  const std::array<int64_t, 1> bias_sizes = {g.o};
  auto none = at::empty({0}, input.options());
  at::Tensor grad_input, grad_weight, grad_bias;
  const Algorithm input_grad_algorithm =
      output_mask[0] && gy.numel() > 0 ? input_grad_algorithm_for(g, input.scalar_type())
                                       : Algorithm::kLibrary;
  std::array<bool, 3> library_mask = output_mask;
  // Our weight gradient reads through the padding map: no border correction for it after.
  const bool own_weight_grad = output_mask[1] && gy.numel() > 0 && input.numel() > 0 &&
                               weight_grad_algorithm_for(g, input.scalar_type()) ==
                                   Algorithm::kDirect;
  if (own_weight_grad) {
    library_mask[1] = library_mask[2] = false;
    if (output_mask[2]) grad_bias = gy.sum(at::IntArrayRef{0, 2, 3});
  }
  if (input_grad_algorithm != Algorithm::kLibrary) {
    library_mask[0] = false;
    const Geometry d = input_grad_geometry(g);
    const auto flipped = weight.transpose(0, 1).flip({2, 3});  // (C, O, KH, KW)
    grad_input = at::empty({g.n, g.c, g.h, g.w}, input.options().memory_format(fmt));
    if (input_grad_algorithm == Algorithm::kWinograd)
      winograd_fwd(gy, flipped, at::Tensor(), d, kZeros, grad_input);
    else
      direct_fwd(gy, flipped, at::Tensor(), d, kZeros, grad_input);
  }
  if (library_mask[0] || library_mask[1] || library_mask[2]) {
    auto [library_grad_input, library_grad_weight, library_grad_bias] = at::convolution_backward(
        gy, input, w, library_mask[2] ? at::OptionalIntArrayRef(bias_sizes) : c10::nullopt,
        stride, padding, kDilation, false, kNoPad, 1, library_mask);
    if (library_mask[0]) grad_input = library_grad_input;
    if (library_mask[1]) grad_weight = library_grad_weight;
    if (library_mask[2]) grad_bias = library_grad_bias;
  }
  const bool fix = mode != kZeros && (g.ph > 0 || g.pw > 0) && gy.numel() > 0;
  if (output_mask[0]) grad_input = in_format(grad_input, fmt);
  at::Tensor grad_weight_acc;
  const bool fix_weight = output_mask[1] && !own_weight_grad;
  if (own_weight_grad) {
    grad_weight_acc = wgrad(gy, input, g, mode);
  } else if (output_mask[1]) {
    // Corrections are summed in float32 (float64 for float64), rounded once at the end.
    grad_weight_acc = grad_weight.to(acc_type_of(input.scalar_type())).contiguous();
  }
  if (fix && (output_mask[0] || fix_weight)) {
    at::Tensor ring_grad_input = output_mask[0] ? grad_input : at::Tensor();
    at::Tensor ring_grad_weight = fix_weight ? grad_weight_acc : at::Tensor();
    fix_backward_border(gy, input, weight, g, mode, ring_grad_input, ring_grad_weight);
  }
  if (output_mask[1]) grad_weight = grad_weight_acc.to(input.scalar_type()).contiguous();
  return {output_mask[0] ? grad_input : none, output_mask[1] ? grad_weight : none.clone(),
          output_mask[2] ? grad_bias.contiguous() : none.clone()};
}

// Which algorithm a call with these (already checked) arguments runs: for the forward, or with
// input_grad / weight_grad for the backward's input / weight gradient ("direct" for the
// weight-gradient kernel of padded_conv_cpu_wgrad.cpp). Sizes rather than tensors, so that Python can
// ask while torch.compile traces with fake tensors.
std::string padded_conv2d_cpu_algorithm(at::IntArrayRef input_size, at::IntArrayRef weight_size,
                                        at::ScalarType dtype, bool channels_last,
                                        at::IntArrayRef stride, at::IntArrayRef padding,
                                        int64_t mode, bool input_grad, bool weight_grad) {
  TORCH_CHECK(input_size.size() == 4 && weight_size.size() == 4 && stride.size() == 2 &&
                  padding.size() == 2,
              "padded_conv2d_cpu_algorithm: expected 4 input sizes, 4 weight sizes, 2 strides "
              "and 2 paddings");
  Geometry g{input_size[0], input_size[1], input_size[2], input_size[3],
             weight_size[0], weight_size[2], weight_size[3],
             stride[0], stride[1], padding[0], padding[1],
             (input_size[2] + 2 * padding[0] - weight_size[2]) / stride[0] + 1,
             (input_size[3] + 2 * padding[1] - weight_size[3]) / stride[1] + 1, channels_last};
  (void)mode;  // every algorithm handles every mode
  TORCH_CHECK(!(input_grad && weight_grad),
              "padded_conv2d_cpu_algorithm: ask for input_grad or weight_grad, not both");
  if (weight_grad) return algorithm_name(weight_grad_algorithm_for(g, dtype));
  return algorithm_name(input_grad ? input_grad_algorithm_for(g, dtype) : algorithm_for(g, dtype));
}

}  // namespace

TORCH_LIBRARY_IMPL(stylize_fast, CPU, m) {
  m.impl("padded_conv2d_fwd", &padded_conv2d_fwd_cpu);
  m.impl("padded_conv2d_bwd", &padded_conv2d_bwd_cpu);
}

// Introspection for tests and benchmarks: the algorithm a CPU call would run.
TORCH_LIBRARY_FRAGMENT(stylize_fast, m) {
  m.def("padded_conv2d_cpu_algorithm(int[] input_size, int[] weight_size, ScalarType dtype, "
        "bool channels_last, int[2] stride, int[2] padding, int padding_mode, "
        "bool input_grad=False, bool weight_grad=False) -> str",
        &padded_conv2d_cpu_algorithm);
}

}  // namespace padded_conv_cpu
}  // namespace stylize_fast
