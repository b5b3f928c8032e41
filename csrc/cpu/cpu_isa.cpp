#include "cpu/cpu_isa.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

namespace stylize_fast {
namespace {

int parse_level(const char* name, const char* value) {
  const std::string v(value);
  if (v == "default") return 0;
  if (v == "avx2") return 1;
  if (v == "avx512") return 2;
  if (v == "avx512_bf16") return 3;
  TORCH_CHECK(std::strcmp(name, "ATEN_CPU_CAPABILITY") == 0, "environment variable ", name,
              " must be one of default, avx2, avx512, avx512_bf16 (or unset), got '", v, "'");
  return 3;  // torch's other capability names (sve, zvector, ...) do not cap x86 levels
}

}  // namespace

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
  int level = cpu_isa_supported();
  for (const char* name : {"STYLIZE_FAST_CPU_ISA", "ATEN_CPU_CAPABILITY"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') {
      level = std::min(level, parse_level(name, value));
      break;
    }
  }
  return level;
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
