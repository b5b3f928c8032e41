// Per-instruction-set body of the normalize-on-load convolution's flat apply (CPU):
// y[i] = act(x[i] * s[i] + t[i]) (+ r[i]) over a run of n values, float32 or bfloat16 tensors,
// float32 arithmetic, one rounding to bfloat16 (as c10::BFloat16(float)). s and t hold each
// value's scale and shift (per channel, repeated over the run's pixels by the caller).
//
// NOT an ordinary header: norm_conv_cpu.cpp compiles it once per instruction-set level through
// cpu/cpu_isa_kernels.h, after cpu/cpu_vec.h, with KernelTable declared.

using vf = VecT<float>;

constexpr int64_t kLanes = 16;
// load16 / store16: 16 float32 / bfloat16 values as floats, and back (rounded once).
#include "cpu/winograd_transforms_kernels.h"

template <typename T, int ACT>
void apply_run(const T* x, const T* r, T* y, const float* s, const float* t, int64_t n,
               float slope) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    vf v = load16(x + i) * vload(s + i) + vload(t + i);
    if constexpr (ACT == 1) v = by_pieces<vf>([](auto p) { return max0(p); }, v);
    if constexpr (ACT == 2)
      v = by_pieces<vf>([slope](auto p) { return p < decltype(p){} ? p * slope : p; }, v);
    if (r != nullptr) v += load16(r + i);
    store16(y + i, v);
  }
  for (; i < n; ++i) {
    float v = static_cast<float>(x[i]) * s[i] + t[i];
    if constexpr (ACT == 1) v = v < 0.f ? 0.f : v;
    if constexpr (ACT == 2) v = v < 0.f ? v * slope : v;
    if (r != nullptr) v += static_cast<float>(r[i]);
    y[i] = static_cast<T>(v);
  }
}

template <typename T>
void apply_any(const T* x, const T* r, T* y, const float* s, const float* t, int64_t n,
               int act, float slope) {
  if (act == 1) apply_run<T, 1>(x, r, y, s, t, n, slope);
  else if (act == 2) apply_run<T, 2>(x, r, y, s, t, n, slope);
  else apply_run<T, 0>(x, r, y, s, t, n, slope);
}

const KernelTable kernel_table = {&apply_any<float>, &apply_any<c10::BFloat16>};
