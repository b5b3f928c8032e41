// STUB (being written): the direct kernel of the CPU padded convolution.
#include "cpu/padded_conv_cpu.h"

namespace stylize_fast {
namespace padded_conv_cpu {

bool direct_applies(const Geometry&, at::ScalarType) { return false; }
void direct_fwd(const at::Tensor&, const at::Tensor&, const at::Tensor&, const Geometry&, int64_t,
              at::Tensor&) {
  TORCH_CHECK(false, "direct_fwd: not built");
}

}  // namespace padded_conv_cpu
}  // namespace stylize_fast
