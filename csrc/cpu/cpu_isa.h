// Which x86 vector instruction-set level the CPU kernels run at, shared by every op that carries
// per-level kernel copies (instance norm, padded convolution).
//
// Levels: 0 baseline (SSE2, or any non-x86 CPU), 1 AVX2 + FMA + F16C, 2 AVX-512 (F, BW, VL, DQ),
// 3 AVX-512 + AVX512-BF16 (level 2 plus the float -> bfloat16 conversion instructions). Code
// without a level-3 copy runs its level-2 one there (test `level >= 2`).
// The level is the CPU's best, capped by STYLIZE_FAST_CPU_ISA = default | avx2 | avx512 |
// avx512_bf16 (else by torch's ATEN_CPU_CAPABILITY, whose avx512 also caps at level 2) when set;
// the cap comes from stylize_fast/config.py through csrc/config.h, so config.override switches it.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// Per-level copies are compiled with `#pragma GCC target`; only GCC on x86-64 builds them.
#define SF_MULTI_ISA 1
#else
#define SF_MULTI_ISA 0
#endif

namespace stylize_fast {

// Highest level this CPU (and OS) supports.
int cpu_isa_supported();
// The level to run: cpu_isa_supported() capped by the environment (see above).
int cpu_isa_level();
// "default", "avx2", "avx512" or "avx512_bf16".
const char* cpu_isa_name(int level);

}  // namespace stylize_fast
