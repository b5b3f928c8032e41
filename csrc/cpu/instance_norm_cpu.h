// What other CPU ops use of the instance-norm kernels (csrc/cpu/instance_norm_cpu.cpp).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace stylize_fast {
namespace instance_norm_cpu {

// Per-(n, c) mean and rstd = 1 / sqrt(var + eps) of input (N, C, H, W): the forward's
// statistics pass alone (one read, centred segments merged in a fixed order), (N, C) in float32
// (float64 for float64 input). Also the op stylize_fast::instance_norm_stats.
std::tuple<at::Tensor, at::Tensor> instance_norm_stats(const at::Tensor& input, double eps);

}  // namespace instance_norm_cpu
}  // namespace stylize_fast
