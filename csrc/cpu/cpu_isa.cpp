#include "cpu/cpu_isa.h"

#include "config.h"

#include <algorithm>

namespace stylize_fast {

int cpu_isa_supported() {
  static const int level = [] {
#if SF_MULTI_ISA
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return __builtin_cpu_supports("avx512bf16") ? 3 : 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
      return 1;
#endif
    return 0;
  }();
  return level;
}

int cpu_isa_level() {
  const int level = cpu_isa_supported();
  const int cap = config::cpu_isa_cap();  // stylize_fast/config.py: STYLIZE_FAST_CPU_ISA
  return cap < 0 ? level : std::min(level, cap);
}

const char* cpu_isa_name(int level) {
  switch (level) {
    case 0: return "default";
    case 1: return "avx2";
    case 2: return "avx512";
    default: return "avx512_bf16";
  }
}

}  // namespace stylize_fast
