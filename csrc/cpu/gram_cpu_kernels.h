// Per-instruction-set kernel bodies of the bfloat16 Gram matrix (CPU): G = F F^T of
// channels-last bfloat16 features, accumulated in float32, and its backward grad = M F.
//
// NOT an ordinary header: gram_cpu.cpp compiles it once per instruction-set level through
// cpu/cpu_isa_kernels.h (levels 0-3), after cpu/cpu_vec.h, with GramJob and KernelTable declared.
//
// Forward. G is the sum over pixels p of f_p f_p^T (f_p: the C channels of pixel p, contiguous
// in channels-last memory). Pixels are taken in chunks that stay in L2; each chunk is packed
// once and every tile of the upper triangle of G (kRows rows x 64 columns) is accumulated over
// it in registers, then the lower triangle is mirrored. Level 3 packs pixel pairs as bfloat16
// pairs and multiplies them with AVX512-BF16's dot product (vdpbf16ps: two exact bfloat16
// products added to each float32 lane); the other levels convert the chunk to float32 and use
// float32 multiply-adds. Either way every product is exact and sums are float32.
//
// Backward. grad[p] = M^T f_p for a float32 (C, C) matrix M (symmetric in use: scale (dG + dG^T)),
// kRows pixels x 64 output channels per register tile, float32 multiply-adds over the C input
// channels, rounded to bfloat16 once as stored.

using vf = VecT<float>;
constexpr int64_t kLanes = 16;
constexpr int64_t kCols = 64;  // columns of G (or output channels) per register tile
constexpr int kRows = 4;       // rows of G (or pixels) per register tile

// Chunk of pixels packed at a time (whole pairs): about 256 KB of packed data.
inline int64_t chunk_pixels(int64_t Cp) {
  return std::max<int64_t>(32, (256 * 1024 / 4 / Cp) & ~int64_t(1));
}

#if SF_ISA_LEVEL >= 3
// P[k][c] (c < Cp) = the bfloat16 pair (f[2k][c], f[2k + 1][c]) as one 32-bit word, low half
// first; zero past C and for the missing partner of an odd last pixel.
inline void pack_pairs(const uint16_t* f, int64_t C, int64_t Cp, int64_t pixels, uint32_t* P) {
  for (int64_t k = 0; 2 * k < pixels; ++k) {
    const uint16_t* a = f + 2 * k * C;
    const uint16_t* b = 2 * k + 1 < pixels ? a + C : nullptr;
    uint32_t* dst = P + k * Cp;
    int64_t c = 0;
    for (; c + 16 <= C; c += 16) {
      const __m512i lo =
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + c)));
      const __m512i hi = b == nullptr ? _mm512_setzero_si512()
                                      : _mm512_cvtepu16_epi32(_mm256_loadu_si256(
                                            reinterpret_cast<const __m256i*>(b + c)));
      _mm512_storeu_si512(dst + c, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
    for (; c < C; ++c) dst[c] = uint32_t(a[c]) | (b == nullptr ? 0u : uint32_t(b[c]) << 16);
    for (; c < Cp; ++c) dst[c] = 0;
  }
}

// G[i0 .. i0 + kRows)[j0 .. j0 + 64) += sum over the chunk's pairs (G rows Cp floats apart).
inline void tile_pairs(const uint32_t* P, int64_t pairs, int64_t Cp, int64_t i0, int64_t j0,
                       float* G) {
  __m512 acc[kRows][4];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_loadu_ps(G + (i0 + r) * Cp + j0 + 16 * v);
  for (int64_t k = 0; k < pairs; ++k) {
    const uint32_t* pk = P + k * Cp;
    __m512bh b[4];
    for (int v = 0; v < 4; ++v) b[v] = (__m512bh)_mm512_loadu_si512(pk + j0 + 16 * v);
    for (int r = 0; r < kRows; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(pk[i0 + r]));
      for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, b[v]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < 4; ++v) _mm512_storeu_ps(G + (i0 + r) * Cp + j0 + 16 * v, acc[r][v]);
}
#else
// P[p][c] (c < Cp) = f[p][c] as float32; zero past C.
inline void pack_floats(const uint16_t* f, int64_t C, int64_t Cp, int64_t pixels, float* P) {
  for (int64_t p = 0; p < pixels; ++p) {
    const c10::BFloat16* src = reinterpret_cast<const c10::BFloat16*>(f + p * C);
    float* dst = P + p * Cp;
    int64_t c = 0;
    for (; c + 16 <= C; c += 16) vstore(dst + c, bf16_to_float<vf>(src + c));
    for (; c < C; ++c) dst[c] = static_cast<float>(src[c]);
    for (; c < Cp; ++c) dst[c] = 0.0f;
  }
}

inline vf splat(float s) { return vf{} + s; }

inline void tile_floats(const float* P, int64_t pixels, int64_t Cp, int64_t i0, int64_t j0,
                        float* G) {
  vf acc[kRows][4];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < 4; ++v) acc[r][v] = vload(G + (i0 + r) * Cp + j0 + 16 * v);
  for (int64_t p = 0; p < pixels; ++p) {
    const float* pp = P + p * Cp;
    vf b[4];
    for (int v = 0; v < 4; ++v) b[v] = vload(pp + j0 + 16 * v);
    for (int r = 0; r < kRows; ++r) {
      const vf a = splat(pp[i0 + r]);
      for (int v = 0; v < 4; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < 4; ++v) vstore(G + (i0 + r) * Cp + j0 + 16 * v, acc[r][v]);
}
#endif

// One image: G (Cp x Cp, zeroed by the caller) = F F^T over its HW pixels, upper triangle
// tiles accumulated chunk by chunk, then mirrored.
void gram_image(const GramJob& j, int64_t n) {
  const uint16_t* f = j.f + n * j.HW * j.C;
  float* G = j.G + n * j.Cp * j.Cp;
  const int64_t chunk = chunk_pixels(j.Cp);
#if SF_ISA_LEVEL >= 3
  std::vector<uint32_t> P(static_cast<size_t>((chunk / 2) * j.Cp));
#else
  std::vector<float> P(static_cast<size_t>(chunk * j.Cp));
#endif
  for (int64_t p0 = 0; p0 < j.HW; p0 += chunk) {
    const int64_t pixels = std::min(chunk, j.HW - p0);
#if SF_ISA_LEVEL >= 3
    pack_pairs(f + p0 * j.C, j.C, j.Cp, pixels, P.data());
#else
    pack_floats(f + p0 * j.C, j.C, j.Cp, pixels, P.data());
#endif
    for (int64_t i0 = 0; i0 < j.Cp; i0 += kRows)
      for (int64_t j0 = i0 / kCols * kCols; j0 < j.Cp; j0 += kCols) {
#if SF_ISA_LEVEL >= 3
        tile_pairs(P.data(), (pixels + 1) / 2, j.Cp, i0, j0, G);
#else
        tile_floats(P.data(), pixels, j.Cp, i0, j0, G);
#endif
      }
  }
  for (int64_t r = 1; r < j.Cp; ++r)
    for (int64_t c = 0; c < r; ++c) G[r * j.Cp + c] = G[c * j.Cp + r];
}

// grad rows [p_begin, p_end) of the N * HW pixels: grad[p][o] = sum_c f[p][c] M[n][c][o], M
// padded to (Cp, Cp) with zeros. Output columns outermost: a 64-column slice of M (C x 64
// floats) stays in cache over the task's pixels.
void gram_backward_rows(const GramJob& j, int64_t p_begin, int64_t p_end) {
  for (int64_t o0 = 0; o0 < j.Cp; o0 += kCols) {
    for (int64_t p0 = p_begin; p0 < p_end;) {
      const int64_t n = p0 / j.HW;
      // A register tile of up to kRows pixels of one image.
      const int64_t rows = std::min<int64_t>({kRows, p_end - p0, (n + 1) * j.HW - p0});
      const float* M = j.M + n * j.Cp * j.Cp;
      const c10::BFloat16* f = reinterpret_cast<const c10::BFloat16*>(j.f) + p0 * j.C;
      c10::BFloat16* out = reinterpret_cast<c10::BFloat16*>(j.out) + p0 * j.C;
      vf acc[kRows][4] = {};
      for (int64_t c = 0; c < j.C; ++c) {
        vf b[4];
        for (int v = 0; v < 4; ++v) b[v] = vload(M + c * j.Cp + o0 + 16 * v);
        for (int r = 0; r < kRows; ++r) {
          if (r >= rows) break;
          const vf a = vf{} + static_cast<float>(f[r * j.C + c]);
          for (int v = 0; v < 4; ++v) acc[r][v] += a * b[v];
        }
      }
      for (int r = 0; r < rows; ++r)
        for (int v = 0; v < 4; ++v) {
          const int64_t o = o0 + 16 * v;
          if (o >= j.C) break;
          alignas(64) float lane[kLanes];
          vstore(lane, acc[r][v]);
          convert(lane, out + r * j.C + o, std::min<int64_t>(kLanes, j.C - o));
        }
      p0 += rows;
    }
  }
}

const KernelTable kernel_table = {SF_ISA_NAME, &gram_image, &gram_backward_rows};
