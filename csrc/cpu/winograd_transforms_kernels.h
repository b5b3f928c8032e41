// The Winograd F(4x4, 3x3) pieces the forward (padded_conv_cpu_winograd_kernels.h) and the
// weight gradient (padded_conv_cpu_wgrad_winograd_kernels.h) share: 16-channel loads and stores
// of float32 / bfloat16 tensors, the input transform B^T d B of a 6x6 patch, and the gather of
// one 16-channel vector of a patch through the padding map.
//
// NOT an ordinary header (no include guard): each of those kernel bodies includes it once per
// instruction-set level, after `using vf = VecT<float>` and `kLanes`.

// Tensors are float32 or bfloat16; all arithmetic is float32 (cpu/cpu_vec.h converts).
template <typename T>
inline vf load16(const T* p) {
  if constexpr (std::is_same_v<T, float>) return vload(p);
  else return bf16_to_float<vf>(p);
}

template <typename T>
inline void store16(T* p, const vf& v) {
  if constexpr (std::is_same_v<T, float>) {
    vstore(p, v);
  } else {
    const U16x16 h = float_to_bf16(v);
    __builtin_memcpy(p, &h, sizeof(h));
  }
}

// out = B^T d for one 6-vector (rows of B^T: interpolation points 0, +-1, +-2, infinity).
inline void bt6(const vf d[6], vf out[6]) {
  out[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
  out[1] = d[3] + d[4] - 4.0f * (d[1] + d[2]);
  out[2] = d[4] - d[3] + 4.0f * (d[1] - d[2]);
  out[3] = d[4] - d[2] + 2.0f * (d[3] - d[1]);
  out[4] = d[4] - d[2] + 2.0f * (d[1] - d[3]);
  out[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}

// out[xi][nu] = (B^T d B)[xi][nu] of one 6x6 patch of 16-channel vectors d[row][column].
inline void patch_transform(const vf d[6][6], vf out[6][6]) {
  vf tmp[6][6];  // B^T d: tmp[xi][column]
  for (int k = 0; k < 6; ++k) {
    const vf col[6] = {d[0][k], d[1][k], d[2][k], d[3][k], d[4][k], d[5][k]};
    vf t[6];
    bt6(col, t);
    for (int x = 0; x < 6; ++x) tmp[x][k] = t[x];
  }
  for (int x = 0; x < 6; ++x) bt6(tmp[x], out[x]);
}

// Channels [c0, c0 + 16) of the pixel at p (channels `stride` apart; zero past C): one vector
// load when `full` (contiguous channels, all 16 inside), else lane by lane.
template <typename T>
inline vf gather16(const T* p, int64_t c0, int64_t C, int64_t stride, bool full) {
  if (full) return load16(p + c0);
  alignas(64) float lane[kLanes];
  for (int64_t l = 0; l < kLanes; ++l)
    lane[l] = c0 + l < C ? to_float(p[(c0 + l) * stride]) : 0.0f;
  return vload(lane);
}
