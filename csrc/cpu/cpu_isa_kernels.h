// Compiles one kernel family once per instruction-set level (cpu/cpu_isa.h) and picks the copy
// at run time: a build carries every level and runs on any x86-64 CPU (no -march=native).
//
// NOT an ordinary header (no include guard). A kernel file, inside its own (anonymous)
// namespace, declares `struct KernelTable` and whatever else its body reads, then
//
//   #define SF_ISA_BODY "cpu/foo_kernels.h"  // the body: ends with `const KernelTable kernel_table`
//   #define SF_ISA_MAX_LEVEL 3                // optional: 2 (default) or 3 (an AVX512-BF16 copy)
//   #include "cpu/cpu_isa_kernels.h"
//
// which gives namespaces isa_default, isa_avx2, isa_avx512 (and isa_avx512_bf16), each holding
// cpu/cpu_vec.h and the body compiled under `#pragma GCC target` for its level, with
// SF_ISA_LEVEL (0 .. 3) and SF_ISA_NAME ("default" ...) defined while it compiles, and
//
//   const KernelTable& isa_kernel_table();    // the copy for cpu_isa_level()
//
// Without GCC on x86-64 (SF_MULTI_ISA 0) only the baseline copy is built.

#ifndef SF_ISA_BODY
#error "define SF_ISA_BODY (the kernel body to compile per level) before including cpu_isa_kernels.h"
#endif
#ifndef SF_ISA_MAX_LEVEL
#define SF_ISA_MAX_LEVEL 2
#endif

namespace isa_default {
#define SF_ISA_LEVEL 0
#define SF_ISA_NAME "default"
#include "cpu/cpu_vec.h"
#include SF_ISA_BODY
#undef SF_ISA_NAME
#undef SF_ISA_LEVEL
}  // namespace isa_default

#if SF_MULTI_ISA
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace isa_avx2 {
#define SF_ISA_LEVEL 1
#define SF_ISA_NAME "avx2"
#include "cpu/cpu_vec.h"
#include SF_ISA_BODY
#undef SF_ISA_NAME
#undef SF_ISA_LEVEL
}  // namespace isa_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
namespace isa_avx512 {
#define SF_ISA_LEVEL 2
#define SF_ISA_NAME "avx512"
#include "cpu/cpu_vec.h"
#include SF_ISA_BODY
#undef SF_ISA_NAME
#undef SF_ISA_LEVEL
}  // namespace isa_avx512
#pragma GCC pop_options

#if SF_ISA_MAX_LEVEL >= 3
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")
namespace isa_avx512_bf16 {
#define SF_ISA_LEVEL 3
#define SF_ISA_NAME "avx512_bf16"
#include "cpu/cpu_vec.h"
#include SF_ISA_BODY
#undef SF_ISA_NAME
#undef SF_ISA_LEVEL
}  // namespace isa_avx512_bf16
#pragma GCC pop_options
#endif
#endif  // SF_MULTI_ISA

inline const KernelTable& isa_kernel_table() {
  static const KernelTable* const by_level[] = {
      &isa_default::kernel_table,
#if SF_MULTI_ISA
      &isa_avx2::kernel_table,
      &isa_avx512::kernel_table,
#if SF_ISA_MAX_LEVEL >= 3
      &isa_avx512_bf16::kernel_table,
#endif
#endif
  };
  return for_cpu_isa_level(by_level);
}

#undef SF_ISA_MAX_LEVEL
#undef SF_ISA_BODY
