// Per-instruction-set kernel body of the CPU padded convolution's weight gradient (the
// algorithm is described in padded_conv_cpu_wgrad.cpp).
//
// NOT an ordinary header: padded_conv_cpu_wgrad.cpp compiles it once per level through
// cpu/cpu_isa_kernels.h (levels 0-2), after cpu/cpu_vec.h, inside padded_conv_cpu's anonymous
// namespace; it relies on RowArgs and KernelTable declared there.

using namespace vreg;  // VF, kLanes, vzero / vload / vstore / vset1 / vfma / vadd

// Accumulator registers per level: 9 taps x 3 outputs beside 1 input and the broadcasts of 32
// registers; 12 of 16; 8 of 16 without FMA (products need temporaries).
#if SF_ISA_LEVEL >= 2
constexpr int kAccRegs = 27;
#elif SF_ISA_LEVEL == 1
constexpr int kAccRegs = 12;
#else
constexpr int kAccRegs = 8;
#endif

// OG output channels x KG taps: sums over the output row in registers, then adds to acc.
// in: the first tap's vector of channels at column 0 (row [wread][lanes]); step: floats between
// consecutive output columns (SW lanes); grad: [WO][O] at the first output channel.
template <int OG, int KG>
inline void block(const float* in, int64_t step, const float* grad, int64_t O, int64_t wo,
                  float* acc, int64_t acc_o, int64_t acc_k) {
  VF a[OG][KG];
  for (int o = 0; o < OG; ++o)
    for (int k = 0; k < KG; ++k) a[o][k] = vzero();
  for (int64_t x = 0; x < wo; ++x) {
    VF gv[OG];
    for (int o = 0; o < OG; ++o) {
      gv[o] = vset1(grad[x * O + o]);
      keep_in_register(gv[o]);
    }
    const float* px = in + x * step;
    for (int k = 0; k < KG; ++k) {
      VF v = vload(px + k * kLanes);
      keep_in_register(v);
      for (int o = 0; o < OG; ++o) a[o][k] = vfma(gv[o], v, a[o][k]);
    }
  }
  for (int o = 0; o < OG; ++o)
    for (int k = 0; k < KG; ++k) {
      float* p = acc + o * acc_o + k * acc_k;
      vstore(p, vadd(vload(p), a[o][k]));
    }
}

using BlockFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t,
                         int64_t);

// The block for og x kg, both at most 9 and og x kg <= kAccRegs (nullptr otherwise).
template <int OG, int KG>
constexpr BlockFn block_or_null() {
  if constexpr (OG * KG <= kAccRegs) return &block<OG, KG>;
  else return nullptr;
}
template <int OG, int... KG>
constexpr std::array<BlockFn, 9> blocks_for(std::integer_sequence<int, KG...>) {
  return {block_or_null<OG, KG + 1>()...};
}
constexpr std::array<std::array<BlockFn, 9>, 8> kBlocks = {
    blocks_for<1>(std::make_integer_sequence<int, 9>{}),
    blocks_for<2>(std::make_integer_sequence<int, 9>{}),
    blocks_for<3>(std::make_integer_sequence<int, 9>{}),
    blocks_for<4>(std::make_integer_sequence<int, 9>{}),
    blocks_for<5>(std::make_integer_sequence<int, 9>{}),
    blocks_for<6>(std::make_integer_sequence<int, 9>{}),
    blocks_for<7>(std::make_integer_sequence<int, 9>{}),
    blocks_for<8>(std::make_integer_sequence<int, 9>{})};

// Splits n into parts of at most cap, sizes differing by at most one: part k is [b(k), b(k+1)).
inline int64_t parts(int64_t n, int64_t cap) { return (n + cap - 1) / cap; }
inline int64_t part_begin(int64_t n, int64_t np, int64_t k) { return k * n / np; }

void accumulate_row(const RowArgs& r) {
  // Output channels in groups of og <= 8 (all of them when they fit beside one tap), taps of a
  // kernel row in groups of kg <= 9, as many as the registers hold. Past 8 outputs, groups of
  // at most 6: 8 broadcasts beside 8 x 3 accumulators would spill at AVX-512 (measured 4x
  // slower for 16 outputs), 6 x 3 or 6 x 4 fit.
  const int64_t max_og = std::min<int64_t>(r.o, std::min<int64_t>(r.o > 8 ? 6 : 8, kAccRegs));
  const int64_t nog = parts(r.o, max_og);
  const int64_t og_cap = (r.o + nog - 1) / nog;
  const int64_t max_kg = std::min<int64_t>(9, kAccRegs / og_cap);
  const int64_t nkg = parts(r.kw, max_kg);
  const int64_t plane = r.wread * kLanes;
  for (int64_t ky = 0; ky < r.kh; ++ky) {
    for (int64_t cv = 0; cv < r.cp / kLanes; ++cv) {
      const float* in = r.rows[ky] + cv * plane;
      for (int64_t gi = 0; gi < nog; ++gi) {
        const int64_t o0 = part_begin(r.o, nog, gi), o1 = part_begin(r.o, nog, gi + 1);
        for (int64_t ki = 0; ki < nkg; ++ki) {
          const int64_t k0 = part_begin(r.kw, nkg, ki), k1 = part_begin(r.kw, nkg, ki + 1);
          const BlockFn fn = kBlocks[o1 - o0 - 1][k1 - k0 - 1];
          float* acc = r.acc + ((ky * r.o + o0) * r.kw + k0) * r.cp + cv * kLanes;
          fn(in + k0 * kLanes, r.sw * kLanes, r.grad + o0, r.o, r.wo, acc, r.kw * r.cp, r.cp);
        }
      }
    }
  }
}

const KernelTable kernel_table = {accumulate_row, kLanes};
