// Which x86 vector instruction-set level the CPU kernels run at, shared by every op that carries
// per-level kernel copies (instance norm, padded convolution; see cpu/cpu_isa_kernels.h for how
// a kernel family is compiled once per level).
//
// Levels: 0 baseline (SSE2, or any non-x86 CPU), 1 AVX2 + FMA + F16C, 2 AVX-512 (F, BW, VL, DQ),
// 3 AVX-512 + AVX512-BF16 (level 2 plus the float -> bfloat16 conversion instructions). A family
// without a level-3 copy runs its level-2 one there.
// The level is the CPU's best, capped by STYLIZE_FAST_CPU_ISA = default | avx2 | avx512 |
// avx512_bf16 (else by torch's ATEN_CPU_CAPABILITY, whose avx512 also caps at level 2) when set;
// the cap comes from stylize_fast/config.py through csrc/config.h, so config.override switches it.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SF_BASELINE_CPU_ONLY)
// Per-level copies are compiled with `#pragma GCC target`; only GCC on x86-64 builds them.
// SF_BASELINE_CPU_ONLY (setup.py: STYLIZE_FAST_BASELINE_CPU_ONLY=1) builds the baseline copy
// alone: a build several times quicker, for machines where the CPU kernels' speed is not wanted.
#define SF_MULTI_ISA 1
#else
#define SF_MULTI_ISA 0
#endif

// What the per-level kernel bodies (cpu/cpu_vec.h and the *_kernels.h files) use; included here
// because those bodies are included inside namespaces.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
// Vector values never cross a non-inlined call between levels; silence GCC's note that their
// ABI would differ.
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12's _mm512_cvtps_ph / _mm512_cvtph_ps leave an intentionally undefined source vector;
// not our bug.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace stylize_fast {

// Highest level this CPU (and OS) supports.
int cpu_isa_supported();
// The level to run: cpu_isa_supported() capped by the environment (see above).
int cpu_isa_level();
// "default", "avx2", "avx512" or "avx512_bf16".
const char* cpu_isa_name(int level);

// The copy for the level in use among per-level copies by_level[0 .. N-1] (level k at index k);
// above N - 1 the highest copy runs.
template <typename T, std::size_t N>
const T& for_cpu_isa_level(const T* const (&by_level)[N]) {
  const int level = cpu_isa_level();
  return *by_level[level < int(N) ? level : int(N) - 1];
}

}  // namespace stylize_fast
