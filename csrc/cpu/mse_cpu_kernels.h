// Per-instruction-set kernel bodies of the bfloat16 mean squared error (CPU): sums of
// (a - b)^2 over chunks of bfloat16 elements in float32 lanes, and the gradient
// scale * (a - b) rounded to bfloat16 once.
//
// NOT an ordinary header: mse_cpu.cpp compiles it once per instruction-set level through
// cpu/cpu_isa_kernels.h (levels 0-3), after cpu/cpu_vec.h, with KernelTable declared.

using vf = VecT<float>;

// sum over [begin, end) of (a - b)^2, the differences exact in float32 (bfloat16 values),
// the squares summed in 16 float32 lanes, then the lanes in double.
double sum_sq_diff(const c10::BFloat16* a, const c10::BFloat16* b, int64_t begin, int64_t end) {
  vf acc0{}, acc1{};
  int64_t i = begin;
  for (; i + 32 <= end; i += 32) {
    const vf d0 = bf16_to_float<vf>(a + i) - bf16_to_float<vf>(b + i);
    const vf d1 = bf16_to_float<vf>(a + i + 16) - bf16_to_float<vf>(b + i + 16);
    acc0 += d0 * d0;
    acc1 += d1 * d1;
  }
  alignas(64) float lanes[16];
  vstore(lanes, acc0 + acc1);
  double total = 0.0;
  for (int l = 0; l < 16; ++l) total += lanes[l];
  for (; i < end; ++i) {
    const float d = static_cast<float>(a[i]) - static_cast<float>(b[i]);
    total += double(d) * d;
  }
  return total;
}

// out[i] = bfloat16(scale * (a[i] - b[i])) over [begin, end).
void scaled_diff(const c10::BFloat16* a, const c10::BFloat16* b, float scale, int64_t begin,
                 int64_t end, c10::BFloat16* out) {
  alignas(64) float tmp[16];
  const vf s = vf{} + scale;
  int64_t i = begin;
  for (; i + 16 <= end; i += 16) {
    vstore(tmp, s * (bf16_to_float<vf>(a + i) - bf16_to_float<vf>(b + i)));
    convert(tmp, out + i, 16);
  }
  for (; i < end; ++i)
    out[i] = c10::BFloat16(scale * (static_cast<float>(a[i]) - static_cast<float>(b[i])));
}

const KernelTable kernel_table = {SF_ISA_NAME, &sum_sq_diff, &scaled_diff};
