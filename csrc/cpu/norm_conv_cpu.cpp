// Normalize-on-load convolution on CPU (stylize_fast::norm_conv2d_fwd; contract in csrc/ops.cpp
// and stylize_fast/ops/norm_conv.py):
//   out = act(conv2d(pad(up(act_in(x * scale + shift)))) + bias + residual), and optionally the
//   instance-norm statistics of out.
//
// Per algorithm (the padded convolution's choice for this geometry, forward_algorithm):
//   winograd  the input transform reads x through the norm (and the padding / upsampling index
//             maps); the output transform adds the residual, applies the activation and gathers
//             the statistics as it stores: every activation crosses memory once.
//   direct    its row packing applies the norm while the row is in L1 (Johnson's last 9x9
//             layer); residual and statistics afterwards.
//   other     (the library's layers: strided 3x3 on channels_last, float64, ...) one pass builds
//             the normalised, upsampled and padded input, then oneDNN's convolution without
//             padding: still one pass fewer than norm + pad.
// Statistics the kernels do not gather come from the instance-norm statistics pass (one read).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#include "config.h"
#include "cpu/cpu_isa.h"
#include "cpu/instance_norm_cpu.h"
#include "cpu/padded_conv_cpu.h"

namespace stylize_fast {
namespace padded_conv_cpu {
namespace {

constexpr const char* kFn = "norm_conv2d_fwd";

// The flat apply, vectorised per instruction-set level (norm_apply_kernels.h).
struct KernelTable {
  void (*f32)(const float*, const float*, float*, const float*, const float*, int64_t, int,
              float);
  void (*bf16)(const c10::BFloat16*, const c10::BFloat16*, c10::BFloat16*, const float*,
               const float*, int64_t, int, float);
};

#define SF_ISA_BODY "cpu/norm_apply_kernels.h"
#include "cpu/cpu_isa_kernels.h"

// scale / shift: both absent, or (N, C) in the statistics dtype (float64 for float64 input,
// else float32), contiguous.
std::pair<at::Tensor, at::Tensor> check_norm(const at::Tensor& input,
                                             const c10::optional<at::Tensor>& scale,
                                             const c10::optional<at::Tensor>& shift) {
  const bool has_scale = scale.has_value() && scale->defined();
  const bool has_shift = shift.has_value() && shift->defined();
  TORCH_CHECK(has_scale == has_shift, kFn, ": scale and shift must be given together");
  if (!has_scale) return {};
  const auto acc = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"scale", *scale},
                                {"shift", *shift}}) {
    TORCH_CHECK(t.dim() == 2 && t.size(0) == input.size(0) && t.size(1) == input.size(1), kFn,
                ": ", name, " must have shape (N, C) = (", input.size(0), ", ", input.size(1),
                "), got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == acc, kFn, ": ", name, " must have dtype ", acc, " for ",
                input.scalar_type(), " input, got ", t.scalar_type());
    TORCH_CHECK(t.device() == input.device(), kFn, ": ", name, " is on ", t.device(),
                " but input is on ", input.device());
  }
  return {scale->contiguous(), shift->contiguous()};
}

// out = act(x * scale + shift) (+ residual) over n_pix pixels of `channels` contiguous values
// (one channels-last row), vectorisable loops per activation.
template <typename T, typename A, int ACT>
void apply_pixels(const T* x, const T* r, T* y, const A* sc, const A* sh, int64_t channels,
                  int64_t n_pix, int64_t xs, int64_t rs, int64_t ys, A slope) {
  if constexpr (std::is_same_v<A, float> &&
                (std::is_same_v<T, float> || std::is_same_v<T, c10::BFloat16>)) {
    const KernelTable& k = isa_kernel_table();
    for (int64_t p = 0; p < n_pix; ++p) {
      if constexpr (std::is_same_v<T, float>)
        k.f32(x + p * xs, r == nullptr ? nullptr : r + p * rs, y + p * ys, sc, sh, channels,
              ACT, slope);
      else
        k.bf16(x + p * xs, r == nullptr ? nullptr : r + p * rs, y + p * ys, sc, sh, channels,
               ACT, slope);
    }
    return;
  }
  for (int64_t p = 0; p < n_pix; ++p) {
    const T* xp = x + p * xs;
    T* yp = y + p * ys;
    const T* rp = r == nullptr ? nullptr : r + p * rs;
    for (int64_t c = 0; c < channels; ++c) {
      A t = static_cast<A>(xp[c]) * sc[c] + sh[c];
      if constexpr (ACT == 1) t = t < A(0) ? A(0) : t;
      if constexpr (ACT == 2) t = t < A(0) ? t * slope : t;
      if (rp != nullptr) t += static_cast<A>(rp[c]);
      yp[c] = static_cast<T>(t);
    }
  }
}

// The normalised, upsampled and padded input (N, C, h + 2 ph, w + 2 pw) in the input's dtype
// and memory format, in one pass (zero padding is 0; reflect / replicate read through the index
// maps, so the padding holds normalised pixels too). Without scale: the padded (upsampled) copy.
// Channels-last rows go a pixel at a time through apply_pixels' vectorisable channel loop.
template <typename T, typename A, int ACT>
void materialize_rows(const at::Tensor& input, const A* sc, const A* sh, A slope,
                      const Geometry& g, int64_t mode, const std::vector<int64_t>& cols,
                      at::Tensor& z, bool channels_last) {
  const int64_t hp = z.size(2), wp = z.size(3);
  const T* x = input.const_data_ptr<T>();
  T* y = z.data_ptr<T>();
  const auto xs = input.strides();
  const auto ys = z.strides();
  const bool dense = xs[1] == 1;  // channels contiguous in the input
  std::vector<A> ones(sc == nullptr ? g.c : 0, A(1)), zeros(sc == nullptr ? g.c : 0, A(0));
  // Channels-last rows without upsampling: the image columns are one run of W * C values in
  // both tensors; scale and shift repeated kRun times make it a flat loop over kRun pixels at a
  // time (few channels -- TextureNet's 8 -- would otherwise pay a call per pixel).
  constexpr int64_t kRun = 32;
  const bool flat = channels_last && dense && g.up == 1 && xs[3] == g.c && ys[3] == g.c;
  at::parallel_for(0, g.n * hp, 16, [&](int64_t b, int64_t e) {
    std::vector<T> gathered(dense ? 0 : g.c);
    std::vector<A> srun(flat ? kRun * g.c : 0), trun(flat ? kRun * g.c : 0);
    int64_t run_image = -1;
    for (int64_t i = b; i < e; ++i) {
      const int64_t n = i / hp, r = i % hp;
      const int64_t sr = source_index(r, g.ph, g.h, mode, g.up);
      T* yrow = y + n * ys[0] + r * ys[2];
      const T* xrow = x + n * xs[0] + std::max<int64_t>(sr, 0) * xs[2];
      const A* s = sc == nullptr ? ones.data() : sc + n * g.c;
      const A* t = sc == nullptr ? zeros.data() : sh + n * g.c;
      if (flat && sr >= 0) {
        if (run_image != n) {
          for (int64_t k = 0; k < kRun; ++k)
            for (int64_t c = 0; c < g.c; ++c) {
              srun[k * g.c + c] = s[c];
              trun[k * g.c + c] = t[c];
            }
          run_image = n;
        }
        const T* xp = xrow;
        T* yp = yrow + g.pw * ys[3];
        for (int64_t p0 = 0; p0 < g.w; p0 += kRun) {
          const int64_t values = std::min(kRun, g.w - p0) * g.c;
          apply_pixels<T, A, ACT>(xp + p0 * g.c, nullptr, yp + p0 * g.c, srun.data(),
                                  trun.data(), values, 1, 0, 0, 0, slope);
        }
      }
      if (channels_last) {
        for (int64_t q = 0; q < wp; ++q) {
          if (flat && sr >= 0 && q == g.pw) {  // the image columns: done above
            q = g.pw + g.w - 1;
            continue;
          }
          T* yp = yrow + q * ys[3];
          if (sr < 0 || cols[q] < 0) {
            std::fill(yp, yp + g.c, T(0));
            continue;
          }
          const T* xp = xrow + cols[q] * xs[3];
          if (!dense) {
            for (int64_t c = 0; c < g.c; ++c) gathered[c] = xp[c * xs[1]];
            xp = gathered.data();
          }
          apply_pixels<T, A, ACT>(xp, nullptr, yp, s, t, g.c, 1, 0, 0, 0, slope);
        }
        continue;
      }
      for (int64_t c = 0; c < g.c; ++c) {
        T* yp = yrow + c * ys[1];
        const T* xp = xrow + c * xs[1];
        for (int64_t q = 0; q < wp; ++q) {
          if (sr < 0 || cols[q] < 0) {
            yp[q] = T(0);
            continue;
          }
          A v = static_cast<A>(xp[cols[q] * xs[3]]) * s[c] + t[c];
          if constexpr (ACT == 1) v = v < A(0) ? A(0) : v;
          if constexpr (ACT == 2) v = v < A(0) ? v * slope : v;
          yp[q] = static_cast<T>(v);
        }
      }
    }
  });
}

at::Tensor materialize(const at::Tensor& input, const at::Tensor& scale, const at::Tensor& shift,
                       int64_t act, double slope, const Geometry& g, int64_t mode) {
  const int64_t hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
  const auto fmt = input.suggest_memory_format();
  at::Tensor z = at::empty({g.n, g.c, hp, wp}, input.options().memory_format(fmt));
  std::vector<int64_t> cols(wp);
  for (int64_t q = 0; q < wp; ++q) cols[q] = source_index(q, g.pw, g.w, mode, g.up);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), kFn, [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const acc_t* sc = scale.defined() ? scale.const_data_ptr<acc_t>() : nullptr;
    const acc_t* sh = shift.defined() ? shift.const_data_ptr<acc_t>() : nullptr;
    const acc_t s = static_cast<acc_t>(slope);
    if (act == 1) materialize_rows<scalar_t, acc_t, 1>(input, sc, sh, s, g, mode, cols, z, cl);
    else if (act == 2) materialize_rows<scalar_t, acc_t, 2>(input, sc, sh, s, g, mode, cols, z, cl);
    else materialize_rows<scalar_t, acc_t, 0>(input, sc, sh, s, g, mode, cols, z, cl);
  });
  return z;
}

// The instance norm applied from known statistics, with an optional residual: one read of x
// (and of the residual), one write; the inference path of a norm whose output something other
// than a convolution consumes (a residual sum).
at::Tensor instance_norm_apply_cpu(const at::Tensor& input, const at::Tensor& scale_in,
                                   const at::Tensor& shift_in, int64_t activation,
                                   double negative_slope,
                                   const c10::optional<at::Tensor>& residual_opt) {
  constexpr const char* fn = "instance_norm_apply";
  TORCH_CHECK(input.dim() == 4, fn, ": input must be (N, C, H, W), got ", input.sizes());
  TORCH_CHECK(activation >= 0 && activation <= 2, fn, ": activation must be 0, 1 or 2, got ",
              activation);
  const auto [scale, shift] = check_norm(input, scale_in, shift_in);
  TORCH_CHECK(scale.defined(), fn, ": scale and shift are required");
  const auto fmt = input.suggest_memory_format();
  const at::Tensor x = input.contiguous(fmt);
  at::Tensor residual;
  if (residual_opt.has_value() && residual_opt->defined()) {
    TORCH_CHECK(residual_opt->sizes() == input.sizes() &&
                    residual_opt->scalar_type() == input.scalar_type(),
                fn, ": residual must have the input's shape and dtype");
    residual = residual_opt->contiguous(fmt);
  }
  at::Tensor out = at::empty_like(x, fmt);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  if (out.numel() == 0) return out;
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), fn, [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* rp = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = out.data_ptr<scalar_t>();
    const acc_t* sc = scale.const_data_ptr<acc_t>();
    const acc_t* sh = shift.const_data_ptr<acc_t>();
    const acc_t slope = static_cast<acc_t>(negative_slope);
    auto run = [&](auto act_tag, int64_t b, int64_t e) {
      constexpr int ACT = decltype(act_tag)::value;
      if (cl) {  // units: (n, block of kPix pixels), one flat run: scale / shift repeated
        constexpr int64_t kPix = 32;
        const int64_t blocks = (HW + kPix - 1) / kPix;
        std::vector<acc_t> srun(kPix * C), trun(kPix * C);
        int64_t run_image = -1;
        for (int64_t u = b; u < e; ++u) {
          const int64_t n = u / blocks, p0 = (u % blocks) * kPix;
          if (n != run_image) {
            for (int64_t k = 0; k < kPix; ++k)
              for (int64_t c = 0; c < C; ++c) {
                srun[k * C + c] = sc[n * C + c];
                trun[k * C + c] = sh[n * C + c];
              }
            run_image = n;
          }
          const int64_t off = (n * HW + p0) * C;
          apply_pixels<scalar_t, acc_t, ACT>(xp + off, rp ? rp + off : nullptr, yp + off,
                                             srun.data(), trun.data(),
                                             std::min(kPix, HW - p0) * C, 1, 0, 0, 0, slope);
        }
      } else {  // units: planes (n, c); one "pixel" of HW values with one scale
        for (int64_t u = b; u < e; ++u) {
          const int64_t off = u * HW;
          for (int64_t i = 0; i < HW; ++i) {
            acc_t t = static_cast<acc_t>(xp[off + i]) * sc[u] + sh[u];
            if constexpr (ACT == 1) t = t < acc_t(0) ? acc_t(0) : t;
            if constexpr (ACT == 2) t = t < acc_t(0) ? t * slope : t;
            if (rp != nullptr) t += static_cast<acc_t>(rp[off + i]);
            yp[off + i] = static_cast<scalar_t>(t);
          }
        }
      }
    };
    const int64_t units = cl ? N * ((HW + 31) / 32) : N * C;
    at::parallel_for(0, units, cl ? 64 : 1, [&](int64_t b, int64_t e) {
      if (activation == 1) run(std::integral_constant<int, 1>{}, b, e);
      else if (activation == 2) run(std::integral_constant<int, 2>{}, b, e);
      else run(std::integral_constant<int, 0>{}, b, e);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_conv2d_fwd_cpu(
    const at::Tensor& input, const c10::optional<at::Tensor>& scale_opt,
    const c10::optional<at::Tensor>& shift_opt, int64_t input_activation, double negative_slope,
    const at::Tensor& weight, const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, int64_t mode, int64_t activation, int64_t upsample,
    const c10::optional<at::Tensor>& residual_opt, double stats_eps) {
  const Geometry g = check_conv_args(kFn, input, weight, bias, stride, padding, mode, upsample);
  TORCH_CHECK(activation == kNoActivation || activation == kRelu, kFn,
              ": activation must be 0 (none) or 1 (relu), got ", activation);
  TORCH_CHECK(input_activation >= 0 && input_activation <= 2, kFn,
              ": input_activation must be 0 (none), 1 (relu) or 2 (leaky_relu), got ",
              input_activation);
  TORCH_CHECK(g.up == 1 || (g.sh == 1 && g.sw == 1), kFn, ": upsample = ", g.up,
              " needs stride 1, got stride (", g.sh, ", ", g.sw, ")");
  const auto [scale, shift] = check_norm(input, scale_opt, shift_opt);
  TORCH_CHECK(scale.defined() || input_activation == 0, kFn,
              ": input_activation needs scale and shift (the input's norm)");
  at::Tensor residual;
  if (residual_opt.has_value() && residual_opt->defined()) {
    residual = *residual_opt;
    TORCH_CHECK(residual.dim() == 4 && residual.size(0) == g.n && residual.size(1) == g.o &&
                    residual.size(2) == g.ho && residual.size(3) == g.wo,
                kFn, ": residual must have the output's shape (", g.n, ", ", g.o, ", ", g.ho,
                ", ", g.wo, "), got ", residual.sizes());
    TORCH_CHECK(residual.scalar_type() == input.scalar_type() &&
                    residual.device() == input.device(),
                kFn, ": residual must have the input's dtype and device");
  }
  const auto fmt = input.suggest_memory_format();
  const auto dtype = input.scalar_type();
  const auto acc = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor b = bias.has_value() ? *bias : at::Tensor();
  Algorithm algorithm = input.numel() > 0 ? forward_algorithm(g, dtype) : Algorithm::kLibrary;
  // The library's layers need the padded normalised input built first; in float32 the direct
  // kernel normalises its packed rows instead (measured on par with the library on the strided
  // channels-last layers it leaves to it, docs/benchmarks.md), so it takes them where it can
  // and no algorithm is forced. (bfloat16 stays with oneDNN's dot products, twice as fast.)
  if (algorithm == Algorithm::kLibrary && scale.defined() && g.up == 1 && dtype == at::kFloat &&
      config::conv_algo() != config::ConvAlgo::kLibrary && direct_supports(g, dtype))
    algorithm = Algorithm::kDirect;

  LoadNorm norm;
  if (scale.defined() && acc == at::kFloat) {
    norm.scale = scale.const_data_ptr<float>();
    norm.shift = shift.const_data_ptr<float>();
    norm.activation = input_activation;
    norm.slope = static_cast<float>(negative_slope);
  }
  at::Tensor out, mean, rstd;
  bool act_done = false, residual_done = false, stats_done = false;
  if (algorithm == Algorithm::kWinograd) {
    out = at::empty({g.n, g.o, g.ho, g.wo}, input.options().memory_format(fmt));
    Epilogue epi;
    if (residual.defined()) {
      epi.residual = residual.const_data_ptr();
      for (int d = 0; d < 4; ++d) epi.rs[d] = residual.stride(d);
    }
    epi.stats = stats_eps >= 0;
    epi.eps = stats_eps;
    winograd_fwd(input, weight, b, g, mode, out, activation, norm, &epi);
    mean = epi.mean;
    rstd = epi.rstd;
    act_done = residual_done = stats_done = true;
  } else if (algorithm == Algorithm::kDirect && g.up == 1) {
    out = at::empty({g.n, g.o, g.ho, g.wo}, input.options().memory_format(fmt));
    // The activation comes after the residual: in the kernel's store only without one; then
    // the kernel also gathers the statistics, row by row as they are stored.
    act_done = !residual.defined();
    std::vector<float> row_stats;
    if (act_done && stats_eps >= 0) row_stats.resize(g.n * g.ho * 3 * g.o);
    direct_fwd(input, weight, b, g, mode, out, act_done ? activation : kNoActivation, norm,
               row_stats.empty() ? nullptr : row_stats.data());
    if (!row_stats.empty()) {
      merge_row_statistics(row_stats.data(), g, stats_eps, mean, rstd);
      stats_done = true;
    }
  } else {
    const at::Tensor z = materialize(input, scale, shift, input_activation, negative_slope, g,
                                     mode);
    out = at::convolution(z, weight, bias, {g.sh, g.sw}, {0, 0}, {1, 1}, false, {0, 0}, 1)
              .contiguous(fmt);
  }
  if (residual.defined() && !residual_done) out.add_(residual);
  if (activation == kRelu && !act_done) out.relu_();
  const bool post_stats = stats_eps >= 0 && !stats_done;
  if (post_stats) {
    std::tie(mean, rstd) = instance_norm_cpu::instance_norm_stats(out, stats_eps);
  } else if (stats_eps < 0) {
    mean = at::empty({0}, input.options().dtype(acc));
    rstd = at::empty({0}, input.options().dtype(acc));
  }
  return {out, mean, rstd};
}

}  // namespace

TORCH_LIBRARY_IMPL(stylize_fast, CPU, m) {
  m.impl("norm_conv2d_fwd", &norm_conv2d_fwd_cpu);
  m.impl("instance_norm_apply", &instance_norm_apply_cpu);
}

}  // namespace padded_conv_cpu
}  // namespace stylize_fast
