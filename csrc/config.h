// Runtime options of the C++ kernels, set from Python: stylize_fast/config.py reads the
// STYLIZE_FAST_* environment variables once, validates them and pushes them here through the
// op stylize_fast::set_option (at import and from config.override). Kernels read them on every
// call: plain atomic loads, no environment lookup or string parsing per call.
#pragma once

#include <cstdint>
#include <string>

namespace stylize_fast {
namespace config {

// Forced convolution algorithm (STYLIZE_FAST_CONV_ALGO); kAuto picks per layer.
enum class ConvAlgo : int { kAuto = 0, kLibrary = 1, kDirect = 2, kWinograd = 3 };

// Cap on the vector instruction-set level (cpu/cpu_isa.h levels 0..3); -1: no cap.
int cpu_isa_cap();
// Streaming-store threshold in bytes (STYLIZE_FAST_CPU_STREAM_BYTES); -1: automatic.
int64_t cpu_stream_bytes();
ConvAlgo conv_algo();
// Winograd tiles per block (STYLIZE_FAST_WINOGRAD_BLOCK); 0: automatic.
int64_t winograd_block();

// Sets one option from its string form ("" means the default); a bad name or value raises with
// the variable's name. Names: cpu_isa, cpu_stream_bytes, conv_algo, winograd_block.
void set_option(const std::string& name, const std::string& value);
// The option's current value in the same string form ("" when automatic), for tests.
std::string get_option(const std::string& name);

}  // namespace config
}  // namespace stylize_fast
