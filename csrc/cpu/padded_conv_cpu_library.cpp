// The library algorithm of the CPU padded convolution ("border fix-up"): the library
// convolution (oneDNN) with zero padding, then the output pixels near the border recomputed
// with the true padding.
//
// Design: the library convolution is run once on the whole input with *zero* padding (ph, pw)
// -- oneDNN pads inside its kernels, no copy. Every output pixel whose receptive field lies
// inside the image is then already exact; only the output pixels within reach of the border (a
// band of ceil(p / s) rows / columns on each side) saw zeros where the mode wants reflected /
// replicated values. Those are recomputed and written over: their patches gathered through the
// padding index map (im2col of the border pixels only) times the weight, one GEMM per chunk of
// pixels -- O(perimeter) extra work. (Thin convolutions over the bands were the first design:
// oneDNN runs those 1-2 orders of magnitude below its rate.)
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
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/core/MemoryFormat.h>
#include <c10/util/strides.h>

#include <array>
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

const std::array<int64_t, 2> kNoPad = {0, 0};
const std::array<int64_t, 2> kDilation = {1, 1};

}  // namespace

at::ScalarType acc_type_of(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The backward fix-up (B^T G and wgrad(B(x), G), see the top of the file), one GEMM per chunk
// of border pixels for each. grad_input (when defined) gets the ring contributions folded onto
// their source pixels: summed per source pixel in the accumulation dtype (one thread per (n, c)
// plane or channel block, pixels in a fixed order -- deterministic, no atomics), then added to
// grad_input once, so that a half-precision gradient is rounded once. grad_weight_acc (when
// defined): (O, C, KH, KW) contiguous, accumulation dtype.
void fix_backward_border(const at::Tensor& gy, const at::Tensor& input, const at::Tensor& weight,
                         const Geometry& g, int64_t mode, at::Tensor& grad_input,
                         at::Tensor& grad_weight_acc, int64_t pool) {
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
          scalar_t& dst = plane[r / pool * gs[2] + col / pool * gs[3]];
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

at::Tensor library_fwd(const at::Tensor& input, const at::Tensor& weight,
                       const c10::optional<at::Tensor>& bias, const Geometry& g, int64_t mode) {
  const auto fmt = input.suggest_memory_format();
  // The weight in the input's layout keeps oneDNN from choosing another output layout.
  const auto w = weight.contiguous(fmt);
  const std::array<int64_t, 2> stride = {g.sh, g.sw}, padding = {g.ph, g.pw};
  at::Tensor out = at::convolution(input, w, bias, stride, padding, kDilation, false, kNoPad, 1);
  out = in_format(out, fmt);
  if (mode == kZeros || (g.ph == 0 && g.pw == 0) || out.numel() == 0) return out;
  fix_forward_border(input, weight, bias, g, mode, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> library_bwd_zero_padded(
    const at::Tensor& gy, const at::Tensor& input, const at::Tensor& weight, const Geometry& g,
    std::array<bool, 3> mask) {
  const std::array<int64_t, 1> bias_sizes = {g.o};
  const std::array<int64_t, 2> stride = {g.sh, g.sw}, padding = {g.ph, g.pw};
  return at::convolution_backward(
      gy, input, weight, mask[2] ? at::OptionalIntArrayRef(bias_sizes) : c10::nullopt, stride,
      padding, kDilation, false, kNoPad, 1, mask);
}

}  // namespace padded_conv_cpu
}  // namespace stylize_fast
