#include "config.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>

namespace stylize_fast {
namespace config {
namespace {

std::atomic<int> g_cpu_isa_cap{-1};
std::atomic<int64_t> g_cpu_stream_bytes{-1};
std::atomic<int> g_conv_algo{int(ConvAlgo::kAuto)};
std::atomic<int64_t> g_winograd_block{0};

// A decimal integer >= minimum, or "" for `unset`.
int64_t parse_int(const char* variable, const std::string& value, int64_t minimum, int64_t unset) {
  if (value.empty()) return unset;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  TORCH_CHECK(*end == '\0' && errno == 0 && v >= minimum, variable, " must be ",
              minimum == 1 ? "a positive integer" : "an integer >= 0", " (or unset), got '", value,
              "'");
  return v;
}

}  // namespace

int cpu_isa_cap() { return g_cpu_isa_cap.load(std::memory_order_relaxed); }
int64_t cpu_stream_bytes() { return g_cpu_stream_bytes.load(std::memory_order_relaxed); }
ConvAlgo conv_algo() { return ConvAlgo(g_conv_algo.load(std::memory_order_relaxed)); }
int64_t winograd_block() { return g_winograd_block.load(std::memory_order_relaxed); }

void set_option(const std::string& name, const std::string& value) {
  if (name == "cpu_isa") {
    int cap = -1;
    if (value == "default") cap = 0;
    else if (value == "avx2") cap = 1;
    else if (value == "avx512") cap = 2;
    else if (value == "avx512_bf16") cap = 3;
    else TORCH_CHECK(value.empty(), "STYLIZE_FAST_CPU_ISA must be one of default, avx2, avx512, "
                     "avx512_bf16 (or unset), got '", value, "'");
    g_cpu_isa_cap.store(cap);
  } else if (name == "cpu_stream_bytes") {
    g_cpu_stream_bytes.store(parse_int("STYLIZE_FAST_CPU_STREAM_BYTES", value, 0, -1));
  } else if (name == "conv_algo") {
    ConvAlgo algo = ConvAlgo::kAuto;
    if (value == "library") algo = ConvAlgo::kLibrary;
    else if (value == "direct") algo = ConvAlgo::kDirect;
    else if (value == "winograd") algo = ConvAlgo::kWinograd;
    else TORCH_CHECK(value.empty() || value == "auto", "STYLIZE_FAST_CONV_ALGO must be one of "
                     "auto, library, direct, winograd (or unset), got '", value, "'");
    g_conv_algo.store(int(algo));
  } else if (name == "winograd_block") {
    g_winograd_block.store(parse_int("STYLIZE_FAST_WINOGRAD_BLOCK", value, 1, 0));
  } else {
    TORCH_CHECK(false, "set_option: unknown option '", name, "'; expected one of cpu_isa, "
                "cpu_stream_bytes, conv_algo, winograd_block");
  }
}

std::string get_option(const std::string& name) {
  static const char* const kIsa[] = {"default", "avx2", "avx512", "avx512_bf16"};
  static const char* const kAlgo[] = {"", "library", "direct", "winograd"};
  if (name == "cpu_isa") return cpu_isa_cap() < 0 ? "" : kIsa[cpu_isa_cap()];
  if (name == "cpu_stream_bytes")
    return cpu_stream_bytes() < 0 ? "" : std::to_string(cpu_stream_bytes());
  if (name == "conv_algo") return kAlgo[int(conv_algo())];
  if (name == "winograd_block")
    return winograd_block() == 0 ? "" : std::to_string(winograd_block());
  TORCH_CHECK(false, "get_option: unknown option '", name, "'; expected one of cpu_isa, "
              "cpu_stream_bytes, conv_algo, winograd_block");
}

}  // namespace config
}  // namespace stylize_fast

// Python's stylize_fast.config pushes its validated values through this op.
TORCH_LIBRARY_FRAGMENT(stylize_fast, m) {
  m.def("set_option(str name, str value) -> ()", &stylize_fast::config::set_option);
  m.def("get_option(str name) -> str", &stylize_fast::config::get_option);
}
