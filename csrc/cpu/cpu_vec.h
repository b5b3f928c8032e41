// The vector layer of the CPU kernels at the instruction-set level SF_ISA_LEVEL: register-width
// float vectors (vreg), 64-byte vectors Vec<T> with the operations the kernels build on, and the
// conversions between float and bfloat16 / float16 (the only copy of them).
//
// NOT an ordinary header (no include guard): cpu/cpu_isa_kernels.h includes it in each per-level
// namespace, under the matching `#pragma GCC target`, before the kernel body.
//   vreg::VF   one register of float: __m512 (16 lanes) at level >= 2, __m256 (8) at level 1,
//              a 4-lane GCC vector at level 0; bodies that block for registers say
//              `using namespace vreg;` (padded_conv_cpu_direct / _wgrad kernels).
//   VecT<T>    64 bytes of float or double (GCC vector extension: one zmm, two ymm or four xmm),
//              for code written once for every level (instance norm, Winograd).

// ------------------------------------------------------------------------------------------
// One register of float

namespace vreg {
#if SF_ISA_LEVEL >= 2
using VF = __m512;
constexpr int kLanes = 16;
inline VF vzero() { return _mm512_setzero_ps(); }
inline VF vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, VF v) { _mm512_storeu_ps(p, v); }
inline VF vset1(float s) { return _mm512_set1_ps(s); }
inline VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
inline VF vadd(VF a, VF b) { return _mm512_add_ps(a, b); }
#elif SF_ISA_LEVEL == 1
using VF = __m256;
constexpr int kLanes = 8;
inline VF vzero() { return _mm256_setzero_ps(); }
inline VF vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, VF v) { _mm256_storeu_ps(p, v); }
inline VF vset1(float s) { return _mm256_set1_ps(s); }
inline VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
inline VF vadd(VF a, VF b) { return _mm256_add_ps(a, b); }
#else
typedef float VF __attribute__((vector_size(16)));
constexpr int kLanes = 4;
inline VF vzero() { return VF{}; }
inline VF vload(const float* p) {
  VF v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void vstore(float* p, VF v) { __builtin_memcpy(p, &v, sizeof(v)); }
inline VF vset1(float s) { return VF{} + s; }
inline VF vfma(VF a, VF b, VF c) { return a * b + c; }
inline VF vadd(VF a, VF b) { return a + b; }
#endif

// GCC otherwise folds a vector load into each FMA that uses it: several unaligned loads of the
// same vector instead of one, and the loop becomes load-bound.
inline void keep_in_register(VF& v) {
#if SF_ISA_LEVEL >= 2
  asm("" : "+v"(v));  // any of zmm0-31
#elif SF_ISA_LEVEL == 1
  asm("" : "+x"(v));  // ymm0-15
#else
  (void)v;
#endif
}

}  // namespace vreg

// ------------------------------------------------------------------------------------------
// 64-byte vectors

#ifndef SF_ALWAYS_INLINE
// For helpers that take or return 64-byte vectors: out of line, those go through memory at
// levels 0 and 1.
#define SF_ALWAYS_INLINE inline __attribute__((always_inline))
#endif

// Register-wide pieces. At levels 0 and 1 a 64-byte vector is four xmm / two ymm, and GCC 12
// handles some operations on the whole of it badly: a compare or a select is lowered lane by
// lane with branches, and a memcpy of it to memory goes through the stack (8-byte moves that
// defeat store forwarding). Those run on register-wide pieces instead, taken through a
// may_alias view so that the vector stays in registers.
#if SF_ISA_LEVEL >= 2
constexpr int kNativeBytes = 64;
#elif SF_ISA_LEVEL == 1
constexpr int kNativeBytes = 32;
#else
constexpr int kNativeBytes = 16;
#endif

template <typename W>
SF_ALWAYS_INLINE auto native_piece(const W& w, int k) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(w[0])>>;
  typedef T N __attribute__((vector_size(kNativeBytes), __may_alias__));
  return reinterpret_cast<const N*>(&w)[k];
}

// The R whose k-th register-wide piece is f(k-th pieces of w...).
template <typename R, typename F, typename... W>
SF_ALWAYS_INLINE R by_pieces(F f, const W&... w) {
  R out;
  for (int k = 0; k < int(sizeof(R)) / kNativeBytes; ++k) {
    const auto piece = f(native_piece(w, k)...);
    static_assert(sizeof(piece) == kNativeBytes);
    typedef std::remove_cv_t<decltype(piece)> P __attribute__((__may_alias__));
    reinterpret_cast<P*>(&out)[k] = piece;
  }
  return out;
}

// The vector w to (unaligned) p, a register-wide piece at a time.
template <typename W>
SF_ALWAYS_INLINE void store_vec(void* p, const W& w) {
  if constexpr (sizeof(W) <= kNativeBytes) {
    __builtin_memcpy(p, &w, sizeof(W));
  } else {
    for (int k = 0; k < int(sizeof(W)) / kNativeBytes; ++k) {
      const auto piece = native_piece(w, k);
      __builtin_memcpy(static_cast<char*>(p) + k * kNativeBytes, &piece, kNativeBytes);
    }
  }
}

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(64)));
  static constexpr int64_t lanes = 16;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(64)));
  static constexpr int64_t lanes = 8;
};
template <typename T>
using VecT = typename Vec<T>::type;

template <typename T>
inline VecT<T> vload(const T* p) {
  VecT<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
SF_ALWAYS_INLINE void vstore(T* p, const VecT<T>& v) {
  store_vec(p, v);
}
// A store that bypasses the caches (p 64-byte aligned): for outputs far larger than the last
// level cache, it saves reading every output line before writing it (no read-for-ownership).
template <typename T>
inline void stream_store(T* p, VecT<T> v) {
#if SF_ISA_LEVEL >= 2
  if constexpr (std::is_same_v<T, float>) _mm512_stream_ps(p, reinterpret_cast<__m512&>(v));
  else _mm512_stream_pd(p, reinterpret_cast<__m512d&>(v));
#elif SF_ISA_LEVEL == 1
  if constexpr (std::is_same_v<T, float>) {
    _mm256_stream_ps(p, reinterpret_cast<__m256*>(&v)[0]);
    _mm256_stream_ps(p + 8, reinterpret_cast<__m256*>(&v)[1]);
  } else {
    _mm256_stream_pd(p, reinterpret_cast<__m256d*>(&v)[0]);
    _mm256_stream_pd(p + 4, reinterpret_cast<__m256d*>(&v)[1]);
  }
#elif defined(__SSE2__)
  if constexpr (std::is_same_v<T, float>) {
    for (int i = 0; i < 4; ++i) _mm_stream_ps(p + 4 * i, reinterpret_cast<__m128*>(&v)[i]);
  } else {
    for (int i = 0; i < 4; ++i) _mm_stream_pd(p + 2 * i, reinterpret_cast<__m128d*>(&v)[i]);
  }
#else
  vstore(p, v);
#endif
}

template <bool STREAM, typename T>
inline void store(T* p, VecT<T> v) {
  if constexpr (STREAM) stream_store(p, v);
  else vstore(p, v);
}

// Streamed stores are weakly ordered: fence them before another thread may read the output.
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

template <typename T>
inline bool aligned64(const T* p) {
  return (reinterpret_cast<uintptr_t>(p) & 63) == 0;
}

template <typename T>
inline T hsum(VecT<T> v) {
  T s = 0;
  for (int64_t i = 0; i < Vec<T>::lanes; ++i) s += v[i];
  return s;
}

// The same sum as a tree (lanes i and i + w added for w = 8, 4, 2, 1): 4 dependent adds
// instead of 16, for the short bfloat16 chunk loops where hsum's latency shows.
SF_ALWAYS_INLINE float hsum_tree(VecT<float> v) {
#if SF_ISA_LEVEL >= 2
  return _mm512_reduce_add_ps((__m512)v);  // the same tree, in registers
#endif
  float t[16];
  __builtin_memcpy(t, &v, sizeof(t));
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) t[i] += t[i + w];
  return t[0];
}

// max(0, p) on one register-wide piece. x86 MAX returns its second operand when either is NaN
// or both are zero, so this is exactly `p < 0 ? 0 : p` (NaN and -0 pass through, like
// torch.relu) in one instruction instead of a compare and a masked move.
template <typename N>
SF_ALWAYS_INLINE N max0(N p) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(p[0])>>;
  constexpr bool f32 = std::is_same_v<T, float>;
#if SF_ISA_LEVEL >= 2
  if constexpr (f32) return (N)_mm512_max_ps(_mm512_setzero_ps(), (__m512)p);
  else return (N)_mm512_max_pd(_mm512_setzero_pd(), (__m512d)p);
#elif SF_ISA_LEVEL == 1
  if constexpr (f32) return (N)_mm256_max_ps(_mm256_setzero_ps(), (__m256)p);
  else return (N)_mm256_max_pd(_mm256_setzero_pd(), (__m256d)p);
#elif defined(__SSE2__)
  if constexpr (f32) return (N)_mm_max_ps(_mm_setzero_ps(), (__m128)p);
  else return (N)_mm_max_pd(_mm_setzero_pd(), (__m128d)p);
#else
  (void)f32;
  return p < N{} ? N{} : p;
#endif
}

// ------------------------------------------------------------------------------------------
// Conversions between float and bfloat16 / float16
//
// float -> bfloat16 rounds to nearest even at every level. Levels 0-2 are bit-identical to
// c10::BFloat16(float). Level 3 uses the AVX512-BF16 instructions, which differ in two corner
// cases: a subnormal float becomes a signed zero (c10 rounds it to a bfloat16 subnormal), and a
// NaN keeps its sign and payload, quieted (c10 gives 0x7FC0). It stays a NaN either way.

typedef uint16_t U16x16 __attribute__((vector_size(32)));
typedef uint32_t U32x16 __attribute__((vector_size(64)));
typedef float F32x16 __attribute__((vector_size(64)));

// Integer vectors with as many lanes as the float vector FV (F32x16, vreg::VF, ...).
template <typename FV>
struct LanesOf {
  static constexpr int n = int(sizeof(FV) / sizeof(float));
  typedef uint16_t u16 __attribute__((vector_size(2 * n)));
  typedef uint32_t u32 __attribute__((vector_size(4 * n)));
};
template <typename FV>
using U16Of = typename LanesOf<FV>::u16;
template <typename FV>
using U32Of = typename LanesOf<FV>::u32;

template <typename T>
inline float to_float(T v) {
  return static_cast<float>(v);
}

// sizeof(FV) / 4 bfloat16 values at p as floats. Exact: the 16 bits become the high half of
// the float.
template <typename FV>
SF_ALWAYS_INLINE FV bf16_to_float(const c10::BFloat16* p) {
  U16Of<FV> h;
  __builtin_memcpy(&h, p, sizeof(h));
  return (FV)(__builtin_convertvector(h, U32Of<FV>) << 16);
}

// c10::BFloat16(float) on integer bits (round to nearest even, NaN -> 0x7FC0), the bfloat16
// left in the high half of each lane (the low half is garbage).
template <typename FV>
SF_ALWAYS_INLINE U32Of<FV> bf16_round_hi(const FV& f) {
  using U = U32Of<FV>;
  const U u = (U)f;  // a vector cast reinterprets the bits
  const U r = u + 0x7FFFu + ((u >> 16) & 1u);
  // The add above would carry a NaN's payload into the exponent (even into the sign).
  return by_pieces<U>(
      [](auto fp, auto rp) { return fp != fp ? decltype(rp){} + 0x7FC00000u : rp; }, f, r);
}
// The same, packed: one bfloat16 per lane.
template <typename FV>
SF_ALWAYS_INLINE U16Of<FV> float_to_bf16(const FV& f) {
  return __builtin_convertvector(bf16_round_hi(f) >> 16, U16Of<FV>);
}

inline void convert(const c10::BFloat16* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) store_vec(dst + i, bf16_to_float<F32x16>(src + i));
  for (; i < n; ++i) {
    uint32_t w = uint32_t(src[i].x) << 16;
    __builtin_memcpy(dst + i, &w, sizeof(w));
  }
}

inline void convert(const float* src, c10::BFloat16* dst, int64_t n) {
  uint16_t* d = reinterpret_cast<uint16_t*>(dst);
  int64_t i = 0;
#if SF_ISA_LEVEL >= 3
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                        (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
  if (i < n) {  // masked, so that the tail rounds like the body
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(d + i, m,
                             (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i)));
  }
#else
  for (; i + 16 <= n; i += 16) {
    F32x16 f;
    __builtin_memcpy(&f, src + i, sizeof(f));
    store_vec(d + i, float_to_bf16(f));
  }
  for (; i < n; ++i) d[i] = c10::BFloat16(src[i]).x;
#endif
}

inline void convert(const c10::Half* src, float* dst, int64_t n) {
  int64_t i = 0;
#if SF_ISA_LEVEL >= 1
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
#endif
#if SF_ISA_LEVEL >= 2
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));
#elif SF_ISA_LEVEL >= 1
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
#endif
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

inline void convert(const float* src, c10::Half* dst, int64_t n) {
  int64_t i = 0;
#if SF_ISA_LEVEL >= 1
  uint16_t* d = reinterpret_cast<uint16_t*>(dst);
#endif
#if SF_ISA_LEVEL >= 2
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(src + i),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif SF_ISA_LEVEL >= 1
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; ++i) dst[i] = c10::Half(src[i]);
}

// One vector of float from / to 16 bfloat16 or float16 values (same rounding as convert()).
SF_ALWAYS_INLINE F32x16 load_as_float(const c10::BFloat16* p) {
  return bf16_to_float<F32x16>(p);
}
SF_ALWAYS_INLINE void store_from_float(c10::BFloat16* p, F32x16 f) {
#if SF_ISA_LEVEL >= 3
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh((__m512)f));
#else
  store_vec(p, float_to_bf16(f));
#endif
}
inline F32x16 load_as_float(const c10::Half* p) {
  F32x16 f;
  convert(p, reinterpret_cast<float*>(&f), 16);
  return f;
}
inline void store_from_float(c10::Half* p, F32x16 f) {
  convert(reinterpret_cast<const float*>(&f), p, 16);
}

// 32 bfloat16 values as two float vectors: even = elements 0, 2, ..., 30 and odd = 1, 3, ..., 31.
// Each 32-bit lane holds an even value in its low half and the next odd one in its high half,
// so a shift and a mask widen both; loading 16 values in order needs a cross-lane widening.
SF_ALWAYS_INLINE void load_pairs(const c10::BFloat16* p, F32x16& even, F32x16& odd) {
  U32x16 u;
  __builtin_memcpy(&u, p, sizeof(u));
  even = (F32x16)(u << 16);
  odd = (F32x16)(u & 0xFFFF0000u);
}

#if SF_ISA_LEVEL >= 3
// Word k of the packed [even 0..15 | odd 0..15] that goes to position j: even j/2 or odd j/2.
alignas(64) constexpr uint16_t kInterleavePairs[32] = {
    0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
#endif

// 64 bytes to p, bypassing the caches when STREAM (p then 64-byte aligned).
template <bool STREAM>
SF_ALWAYS_INLINE void store_bytes64(void* p, U32x16 w) {
  if constexpr (STREAM) {
#if SF_ISA_LEVEL >= 2
    _mm512_stream_si512(static_cast<__m512i*>(p), (__m512i)w);
#elif SF_ISA_LEVEL == 1
    _mm256_stream_si256(static_cast<__m256i*>(p), reinterpret_cast<__m256i*>(&w)[0]);
    _mm256_stream_si256(static_cast<__m256i*>(p) + 1, reinterpret_cast<__m256i*>(&w)[1]);
#elif defined(__SSE2__)
    for (int k = 0; k < 4; ++k)
      _mm_stream_si128(static_cast<__m128i*>(p) + k, reinterpret_cast<__m128i*>(&w)[k]);
#else
    store_vec(p, w);
#endif
  } else {
    store_vec(p, w);
  }
}

// The inverse of load_pairs, rounding to bfloat16 (one instruction for all 32 at level 3).
template <bool STREAM = false>
SF_ALWAYS_INLINE void store_pairs(c10::BFloat16* p, F32x16 even, F32x16 odd) {
#if SF_ISA_LEVEL >= 3
  const __m512i packed = (__m512i)_mm512_cvtne2ps_pbh((__m512)odd, (__m512)even);
  store_bytes64<STREAM>(p, (U32x16)_mm512_permutexvar_epi16(
                                 _mm512_load_si512(kInterleavePairs), packed));
#else
  store_bytes64<STREAM>(p, (bf16_round_hi(even) >> 16) | (bf16_round_hi(odd) & 0xFFFF0000u));
#endif
}

template <typename T>
inline void convert(const T* src, T* dst, int64_t n) {
  __builtin_memcpy(dst, src, sizeof(T) * n);
}

