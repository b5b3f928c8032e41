// One vector of float at the instruction-set level SF_ISA_LEVEL, and the few operations the
// padded-convolution kernels build on (padded_conv_cpu_direct.cpp, padded_conv_cpu_wgrad.cpp).
//
// NOT an ordinary header (no include guard): a kernel file includes it inside each of its
// per-level namespaces, under the matching `#pragma GCC target` (see cpu/cpu_isa.h):
//   level >= 2  __m512, 16 lanes;  level 1  __m256, 8 lanes;  level 0  4-lane GCC vector.

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
