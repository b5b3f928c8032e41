// Per-instruction-set kernel body of the fused instance norm + activation (CPU).
//
// NOT an ordinary header: csrc/cpu/instance_norm_cpu.cpp compiles it once per instruction-set
// level through cpu/cpu_isa_kernels.h (levels 0-3: level 3 is level 2 with float -> bfloat16
// by vcvtne(2)ps2bf16), after cpu/cpu_vec.h (Vec<T>, conversions). It relies on the types
// declared before the include in the .cpp (index_t, Geometry, FwdJob, BwdJob, DType, kChunk,
// kMaxBlock, KernelTable).
//
// Inner loops use GCC/Clang vector extensions on 64-byte vectors (one zmm, two ymm or four xmm,
// as the level allows) with several independent accumulators, so reductions vectorise without
// -ffast-math and keep a fixed summation order (bit-reproducible for a given level).
// All arithmetic happens on float (double for float64) chunks of at most kChunk elements that
// stay in L1; bfloat16/float16 chunks are converted into a small buffer first, except on the
// NCHW forward path, which widens bfloat16 in registers (load_pairs / store_pairs).

// Activations, written once for scalars and vectors. relu keeps NaN (like torch.relu); the
// backward masks match PyTorch's: grad flows where the pre-activation is > 0, and is scaled by
// the slope elsewhere for leaky_relu.
template <int ACT, typename V, typename A>
SF_ALWAYS_INLINE V activate(V v, A slope) {
  if constexpr (ACT == 1) {
    if constexpr (std::is_arithmetic_v<V>) return v < V{} ? V{} : v;
    else return by_pieces<V>([](auto p) { return max0(p); }, v);
  } else if constexpr (ACT == 2) {
    if constexpr (std::is_arithmetic_v<V>) return v < V{} ? v * slope : v;
    else return by_pieces<V>([slope](auto p) { return p < decltype(p){} ? p * slope : p; }, v);
  } else {
    (void)slope;
    return v;
  }
}
template <int ACT, typename V, typename A>
SF_ALWAYS_INLINE V activation_grad(V pre, V g, A slope) {
  if constexpr (ACT == 1) {
    if constexpr (std::is_arithmetic_v<V>) return pre > V{} ? g : V{};
    else return by_pieces<V>([](auto p, auto q) { return p > decltype(p){} ? q : decltype(q){}; },
                             pre, g);
  } else if constexpr (ACT == 2) {
    if constexpr (std::is_arithmetic_v<V>) return pre > V{} ? g : g * slope;
    else return by_pieces<V>([slope](auto p, auto q) { return p > decltype(p){} ? q : q * slope; },
                             pre, g);
  } else {
    (void)pre;
    (void)slope;
    return g;
  }
}

// The n values at src as accumulation-dtype values: src itself when no conversion is needed,
// else converted into buf (>= n elements).
template <typename S, typename A>
inline const A* as_acc(const S* src, index_t n, A* buf) {
  if constexpr (std::is_same_v<S, A>) {
    (void)n;
    (void)buf;
    return src;
  } else {
    convert(src, buf, n);
    return buf;
  }
}

// rows x cw values (row stride ld) -> rows of stride ldb >= cw in buf, converted; the padding
// columns [cw, ldb) are zeroed (they are computed on and thrown away: keep them finite).
template <typename S, typename A>
inline void gather_rows(const S* src, index_t ld, A* buf, index_t ldb, index_t rows, index_t cw) {
  for (index_t r = 0; r < rows; ++r) {
    convert(src + r * ld, buf + r * ldb, cw);
    for (index_t j = cw; j < ldb; ++j) buf[r * ldb + j] = A(0);
  }
}

// The first cw values of each of rows rows of buf (stride ldb) -> dst (row stride ld).
template <typename A, typename S>
inline void scatter_rows(const A* buf, index_t ldb, S* dst, index_t ld, index_t rows, index_t cw) {
  for (index_t r = 0; r < rows; ++r) convert(buf + r * ldb, dst + r * ld, cw);
}

// ------------------------------------------------------------------------------------------
// Chunk kernels on contiguous values (NCHW: one stretch of a plane), n <= kChunk

// Exact two-pass mean and centred sum of squares of x[0, n).
template <typename A>
inline void contig_mean_m2(const A* __restrict x, index_t n, A& mean_out, A& m2_out) {
  using V = VecT<A>;
  constexpr index_t L = Vec<A>::lanes;
  V a0{}, a1{}, a2{}, a3{};
  index_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    a0 += vload(x + i);
    a1 += vload(x + i + L);
    a2 += vload(x + i + 2 * L);
    a3 += vload(x + i + 3 * L);
  }
  for (; i + L <= n; i += L) a0 += vload(x + i);
  A sum = hsum<A>((a0 + a1) + (a2 + a3));
  for (; i < n; ++i) sum += x[i];
  const A mean = sum / A(n);

  a0 = a1 = a2 = a3 = V{};
  i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    V d0 = vload(x + i) - mean, d1 = vload(x + i + L) - mean;
    V d2 = vload(x + i + 2 * L) - mean, d3 = vload(x + i + 3 * L) - mean;
    a0 += d0 * d0;
    a1 += d1 * d1;
    a2 += d2 * d2;
    a3 += d3 * d3;
  }
  for (; i + L <= n; i += L) {
    V d = vload(x + i) - mean;
    a0 += d * d;
  }
  A m2 = hsum<A>((a0 + a1) + (a2 + a3));
  for (; i < n; ++i) m2 += (x[i] - mean) * (x[i] - mean);
  mean_out = mean;
  m2_out = m2;
}

// contig_mean_m2 reading bfloat16 in registers (no float buffer to write and read twice): the
// even and odd elements of each 32 values (load_pairs) go to separate accumulators. Same
// two-pass arithmetic. The accumulators are register-wide pieces: 64-byte vectors carried
// around a loop live on the stack at levels 0 and 1 (see by_pieces).
inline void contig_mean_m2_bf16(const c10::BFloat16* __restrict x, index_t n, float& mean_out,
                                float& m2_out) {
  constexpr int P = 64 / kNativeBytes;  // pieces per 32 values
  typedef float N __attribute__((vector_size(kNativeBytes)));
  typedef uint32_t NU __attribute__((vector_size(kNativeBytes)));
  // Piece k of the even / odd elements of the 32 values at p.
  auto pair_piece = [](const c10::BFloat16* p, int k, N& even, N& odd) {
    NU u;
    __builtin_memcpy(&u, reinterpret_cast<const char*>(p) + k * kNativeBytes, sizeof(u));
    even = (N)(u << 16);
    odd = (N)(u & 0xFFFF0000u);
  };
  // hsum_tree((a[0] + a[1]) + (a[2] + a[3])) of the 64-byte vectors the pieces make up.
  auto total = [](const N (&a)[4][P]) {
    F32x16 t;
    typedef float NA __attribute__((vector_size(kNativeBytes), __may_alias__));
    for (int k = 0; k < P; ++k)
      reinterpret_cast<NA*>(&t)[k] = (a[0][k] + a[1][k]) + (a[2][k] + a[3][k]);
    return hsum_tree(t);
  };
  N a[4][P] = {};
  index_t i = 0;
  for (; i + 64 <= n; i += 64) {
    for (int k = 0; k < P; ++k) {
      N e0, o0, e1, o1;
      pair_piece(x + i, k, e0, o0);
      pair_piece(x + i + 32, k, e1, o1);
      a[0][k] += e0;
      a[1][k] += o0;
      a[2][k] += e1;
      a[3][k] += o1;
    }
  }
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < P; ++k) {
      N e, o;
      pair_piece(x + i, k, e, o);
      a[0][k] += e;
      a[1][k] += o;
    }
  }
  float sum = total(a);
  for (index_t k = i; k < n; ++k) sum += static_cast<float>(x[k]);
  const float mean = sum / float(n);

  for (auto& row : a)
    for (auto& piece : row) piece = N{};
  i = 0;
  for (; i + 64 <= n; i += 64) {
    for (int k = 0; k < P; ++k) {
      N e0, o0, e1, o1;
      pair_piece(x + i, k, e0, o0);
      pair_piece(x + i + 32, k, e1, o1);
      e0 -= mean;
      o0 -= mean;
      e1 -= mean;
      o1 -= mean;
      a[0][k] += e0 * e0;
      a[1][k] += o0 * o0;
      a[2][k] += e1 * e1;
      a[3][k] += o1 * o1;
    }
  }
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < P; ++k) {
      N e, o;
      pair_piece(x + i, k, e, o);
      e -= mean;
      o -= mean;
      a[0][k] += e * e;
      a[1][k] += o * o;
    }
  }
  float m2 = total(a);
  for (; i < n; ++i) {
    const float d = static_cast<float>(x[i]) - mean;
    m2 += d * d;
  }
  mean_out = mean;
  m2_out = m2;
}

// The pre-activation, written once so forward and backward round it identically.
template <typename V, typename A>
SF_ALWAYS_INLINE V pre_activation(V x, A mean, A scale, A shift) {
  return (x - mean) * scale + shift;
}
template <typename V>
SF_ALWAYS_INLINE V pre_activation_v(V x, V mean, V scale, V shift) {
  return (x - mean) * scale + shift;
}

template <int ACT, bool STREAM, typename A>
inline void contig_apply(const A* __restrict x, A* __restrict y, index_t n, A mean, A scale,
                         A shift, A slope) {
  constexpr index_t L = Vec<A>::lanes;
  index_t i = 0;
  if constexpr (STREAM) {
    for (; i < n && !aligned64(y + i); ++i)
      y[i] = activate<ACT>(pre_activation(x[i], mean, scale, shift), slope);
  }
  for (; i + L <= n; i += L)
    store<STREAM>(y + i, activate<ACT>(pre_activation(vload(x + i), mean, scale, shift), slope));
  for (; i < n; ++i) y[i] = activate<ACT>(pre_activation(x[i], mean, scale, shift), slope);
}

// contig_apply for bfloat16 / float16 storage: converts in registers, no buffer round trip.
template <int ACT, bool STREAM, typename S>
inline void contig_apply_half(const S* __restrict x, S* __restrict y, index_t n, float mean,
                              float scale, float shift, float slope) {
  index_t i = 0;
  if constexpr (std::is_same_v<S, c10::BFloat16>) {
    if constexpr (STREAM) {
      // Up to the first 64-byte aligned output (bfloat16 tensors are 2-byte aligned).
      const index_t misalign = index_t(reinterpret_cast<uintptr_t>(y) & 63);
      const index_t head = std::min(n, ((64 - misalign) & 63) / 2);
      if (head > 0) contig_apply_half<ACT, false>(x, y, head, mean, scale, shift, slope);
      i = head;
    }
    for (; i + 32 <= n; i += 32) {
      F32x16 e, o;
      load_pairs(x + i, e, o);
      store_pairs<STREAM>(y + i, activate<ACT>(pre_activation(e, mean, scale, shift), slope),
                          activate<ACT>(pre_activation(o, mean, scale, shift), slope));
    }
  }
  for (; i + 16 <= n; i += 16)
    store_from_float(y + i, activate<ACT>(pre_activation(load_as_float(x + i), mean, scale, shift),
                                          slope));
  if (i < n) {  // through a zero-padded vector, so that the tail rounds like the body
    alignas(64) S in[16], out[16];
    std::memset(in, 0, sizeof(in));
    std::memcpy(in, x + i, sizeof(S) * (n - i));
    store_from_float(out, activate<ACT>(pre_activation(load_as_float(in), mean, scale, shift),
                                        slope));
    std::memcpy(y + i, out, sizeof(S) * (n - i));
  }
}

// sum(dz) and sum(dz * (x - mean)), dz = grad_y * act'(pre).
template <int ACT, typename A>
inline void contig_bwd_sums(const A* __restrict x, const A* __restrict g, index_t n, A mean,
                            A scale, A shift, A slope, A& sum_dz, A& sum_dz_xc) {
  using V = VecT<A>;
  constexpr index_t L = Vec<A>::lanes;
  V s0{}, s1{}, p0{}, p1{};
  index_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    V x0 = vload(x + i), x1 = vload(x + i + L);
    V dz0 = activation_grad<ACT>(pre_activation(x0, mean, scale, shift), vload(g + i), slope);
    V dz1 = activation_grad<ACT>(pre_activation(x1, mean, scale, shift), vload(g + i + L), slope);
    s0 += dz0;
    s1 += dz1;
    p0 += dz0 * (x0 - mean);
    p1 += dz1 * (x1 - mean);
  }
  for (; i + L <= n; i += L) {
    V x0 = vload(x + i);
    V dz0 = activation_grad<ACT>(pre_activation(x0, mean, scale, shift), vload(g + i), slope);
    s0 += dz0;
    p0 += dz0 * (x0 - mean);
  }
  A s = hsum<A>(s0 + s1), p = hsum<A>(p0 + p1);
  for (; i < n; ++i) {
    A dz = activation_grad<ACT>(pre_activation(x[i], mean, scale, shift), g[i], slope);
    s += dz;
    p += dz * (x[i] - mean);
  }
  sum_dz = s;
  sum_dz_xc = p;
}

// dx = k * (dz + c1 * (x - mean) + c0) (see instance_norm_cpu.cpp: bwd_finalize).
template <int ACT, bool STREAM, typename A>
inline void contig_bwd_apply(const A* __restrict x, const A* __restrict g, A* __restrict dx,
                             index_t n, A mean, A scale, A shift, A slope, A k, A c1, A c0) {
  constexpr index_t L = Vec<A>::lanes;
  index_t i = 0;
  if constexpr (STREAM) {
    for (; i < n && !aligned64(dx + i); ++i) {
      A dz = activation_grad<ACT>(pre_activation(x[i], mean, scale, shift), g[i], slope);
      dx[i] = k * (dz + c1 * (x[i] - mean) + c0);
    }
  }
  for (; i + L <= n; i += L) {
    auto xv = vload(x + i);
    auto dz = activation_grad<ACT>(pre_activation(xv, mean, scale, shift), vload(g + i), slope);
    store<STREAM>(dx + i, k * (dz + c1 * (xv - mean) + c0));
  }
  for (; i < n; ++i) {
    A dz = activation_grad<ACT>(pre_activation(x[i], mean, scale, shift), g[i], slope);
    dx[i] = k * (dz + c1 * (x[i] - mean) + c0);
  }
}

// ------------------------------------------------------------------------------------------
// Chunk kernels on rows of a channel block (channels_last: rows of cwp channels, stride ld),
// cwp a multiple of the vector width; per-channel results in arrays of cwp.

// Row by row with NV vector accumulators held in registers: reads the chunk as one sequential
// stream (the common channel counts: cwp / lanes = 1, 2, 4 or 8).
template <index_t NV, typename A>
inline void rows_mean_m2_fixed(const A* __restrict x, index_t ld, index_t rows,
                               A* __restrict mean_out, A* __restrict m2_out) {
  using V = VecT<A>;
  constexpr index_t L = Vec<A>::lanes;
  V acc[NV] = {};
  for (index_t r = 0; r < rows; ++r)
    for (index_t v = 0; v < NV; ++v) acc[v] += vload(x + r * ld + v * L);
  V mean[NV];
  for (index_t v = 0; v < NV; ++v) {
    mean[v] = acc[v] / A(rows);
    acc[v] = V{};
  }
  for (index_t r = 0; r < rows; ++r) {
    for (index_t v = 0; v < NV; ++v) {
      V d = vload(x + r * ld + v * L) - mean[v];
      acc[v] += d * d;
    }
  }
  for (index_t v = 0; v < NV; ++v) {
    vstore(mean_out + v * L, mean[v]);
    vstore(m2_out + v * L, acc[v]);
  }
}

template <typename A>
inline void rows_mean_m2(const A* __restrict x, index_t ld, index_t rows, index_t cwp,
                         A* __restrict mean_out, A* __restrict m2_out) {
  using V = VecT<A>;
  constexpr index_t L = Vec<A>::lanes;
  switch (cwp / L) {
    case 1: return rows_mean_m2_fixed<1>(x, ld, rows, mean_out, m2_out);
    case 2: return rows_mean_m2_fixed<2>(x, ld, rows, mean_out, m2_out);
    case 4: return rows_mean_m2_fixed<4>(x, ld, rows, mean_out, m2_out);
    case 8: return rows_mean_m2_fixed<8>(x, ld, rows, mean_out, m2_out);
    default: break;
  }
  for (index_t j = 0; j < cwp; j += L) {
    const A* xj = x + j;
    V a0{}, a1{}, a2{}, a3{};
    index_t r = 0;
    for (; r + 4 <= rows; r += 4) {
      a0 += vload(xj + r * ld);
      a1 += vload(xj + (r + 1) * ld);
      a2 += vload(xj + (r + 2) * ld);
      a3 += vload(xj + (r + 3) * ld);
    }
    for (; r < rows; ++r) a0 += vload(xj + r * ld);
    const V mean = ((a0 + a1) + (a2 + a3)) / A(rows);
    a0 = a1 = a2 = a3 = V{};
    r = 0;
    for (; r + 4 <= rows; r += 4) {
      V d0 = vload(xj + r * ld) - mean, d1 = vload(xj + (r + 1) * ld) - mean;
      V d2 = vload(xj + (r + 2) * ld) - mean, d3 = vload(xj + (r + 3) * ld) - mean;
      a0 += d0 * d0;
      a1 += d1 * d1;
      a2 += d2 * d2;
      a3 += d3 * d3;
    }
    for (; r < rows; ++r) {
      V d = vload(xj + r * ld) - mean;
      a0 += d * d;
    }
    vstore(mean_out + j, mean);
    vstore(m2_out + j, (a0 + a1) + (a2 + a3));
  }
}

// A few vectors of channels with their parameters held in registers across the rows (the
// general loop re-reads them from L1 for every vector: 3 extra loads per store).
template <int ACT, bool STREAM, index_t NV, typename A>
inline void rows_apply_fixed(const A* __restrict x, index_t ldx, A* __restrict y, index_t ldy,
                             index_t rows, const A* mean, const A* scale, const A* shift,
                             A slope) {
  using V = VecT<A>;
  constexpr index_t L = Vec<A>::lanes;
  V m[NV], sc[NV], sh[NV];
  for (index_t v = 0; v < NV; ++v) {
    m[v] = vload(mean + v * L);
    sc[v] = vload(scale + v * L);
    sh[v] = vload(shift + v * L);
  }
  for (index_t r = 0; r < rows; ++r)
    for (index_t v = 0; v < NV; ++v)
      store<STREAM>(y + r * ldy + v * L,
                    activate<ACT>(pre_activation_v(vload(x + r * ldx + v * L), m[v], sc[v], sh[v]),
                                  slope));
}

template <int ACT, bool STREAM, typename A>
inline void rows_apply(const A* __restrict x, index_t ldx, A* __restrict y, index_t ldy,
                       index_t rows, index_t cwp, const A* mean, const A* scale, const A* shift,
                       A slope) {
  constexpr index_t L = Vec<A>::lanes;
  switch (cwp / L) {
    case 1: return rows_apply_fixed<ACT, STREAM, 1>(x, ldx, y, ldy, rows, mean, scale, shift, slope);
    case 2: return rows_apply_fixed<ACT, STREAM, 2>(x, ldx, y, ldy, rows, mean, scale, shift, slope);
    case 3: return rows_apply_fixed<ACT, STREAM, 3>(x, ldx, y, ldy, rows, mean, scale, shift, slope);
    case 4: return rows_apply_fixed<ACT, STREAM, 4>(x, ldx, y, ldy, rows, mean, scale, shift, slope);
#if SF_ISA_LEVEL >= 2
    // 32 zmm registers hold the parameters of up to 8 vectors (128 float channels: the
    // generator's residual blocks) with room for the row's temporaries.
    case 6: return rows_apply_fixed<ACT, STREAM, 6>(x, ldx, y, ldy, rows, mean, scale, shift, slope);
    case 8: return rows_apply_fixed<ACT, STREAM, 8>(x, ldx, y, ldy, rows, mean, scale, shift, slope);
#endif
    default: break;
  }
  for (index_t r = 0; r < rows; ++r) {
    for (index_t j = 0; j < cwp; j += L) {
      auto v = pre_activation_v(vload(x + r * ldx + j), vload(mean + j), vload(scale + j),
                                vload(shift + j));
      store<STREAM>(y + r * ldy + j, activate<ACT>(v, slope));
    }
  }
}

// Row by row, NV vectors of channels: one sequential stream through the chunk. With more than
// four vectors the per-channel parameters are re-read from L1 each row (holding them too would
// need 5 NV registers and spill).
template <int ACT, index_t NV, typename A>
inline void rows_bwd_sums_fixed(const A* __restrict x, index_t ldx, const A* __restrict g,
                                index_t ldg, index_t rows, const A* mean, const A* scale,
                                const A* shift, A slope, A* __restrict sum_dz,
                                A* __restrict sum_dz_xc) {
  using V = VecT<A>;
  constexpr index_t L = Vec<A>::lanes;
  constexpr bool hold = NV <= 4;
  V m[NV], sc[NV], sh[NV], s[NV] = {}, q[NV] = {};
  for (index_t v = 0; v < NV; ++v) {
    m[v] = vload(mean + v * L);
    sc[v] = vload(scale + v * L);
    sh[v] = vload(shift + v * L);
  }
  for (index_t r = 0; r < rows; ++r) {
    for (index_t v = 0; v < NV; ++v) {
      const V mv = hold ? m[v] : vload(mean + v * L);
      const V scv = hold ? sc[v] : vload(scale + v * L);
      const V shv = hold ? sh[v] : vload(shift + v * L);
      V x0 = vload(x + r * ldx + v * L);
      V dz = activation_grad<ACT>(pre_activation_v(x0, mv, scv, shv),
                                  vload(g + r * ldg + v * L), slope);
      s[v] += dz;
      q[v] += dz * (x0 - mv);
    }
  }
  for (index_t v = 0; v < NV; ++v) {
    vstore(sum_dz + v * L, s[v]);
    vstore(sum_dz_xc + v * L, q[v]);
  }
}

template <int ACT, typename A>
inline void rows_bwd_sums(const A* __restrict x, index_t ldx, const A* __restrict g, index_t ldg,
                          index_t rows, index_t cwp, const A* mean, const A* scale,
                          const A* shift, A slope, A* __restrict sum_dz,
                          A* __restrict sum_dz_xc) {
  using V = VecT<A>;
  constexpr index_t L = Vec<A>::lanes;
#define SF_BWD_SUMS_FIXED(NV)                                                                    \
  return rows_bwd_sums_fixed<ACT, NV>(x, ldx, g, ldg, rows, mean, scale, shift, slope, sum_dz,  \
                                      sum_dz_xc)
  switch (cwp / L) {
    case 1: SF_BWD_SUMS_FIXED(1);
    case 2: SF_BWD_SUMS_FIXED(2);
    case 3: SF_BWD_SUMS_FIXED(3);
    case 4: SF_BWD_SUMS_FIXED(4);
    case 6: SF_BWD_SUMS_FIXED(6);
    case 8: SF_BWD_SUMS_FIXED(8);
    default: break;
  }
#undef SF_BWD_SUMS_FIXED
  for (index_t j = 0; j < cwp; j += L) {
    const V m = vload(mean + j), sc = vload(scale + j), sh = vload(shift + j);
    V s0{}, s1{}, p0{}, p1{};
    index_t r = 0;
    for (; r + 2 <= rows; r += 2) {
      V x0 = vload(x + r * ldx + j), x1 = vload(x + (r + 1) * ldx + j);
      V dz0 = activation_grad<ACT>(pre_activation_v(x0, m, sc, sh), vload(g + r * ldg + j), slope);
      V dz1 = activation_grad<ACT>(pre_activation_v(x1, m, sc, sh),
                                   vload(g + (r + 1) * ldg + j), slope);
      s0 += dz0;
      s1 += dz1;
      p0 += dz0 * (x0 - m);
      p1 += dz1 * (x1 - m);
    }
    for (; r < rows; ++r) {
      V x0 = vload(x + r * ldx + j);
      V dz0 = activation_grad<ACT>(pre_activation_v(x0, m, sc, sh), vload(g + r * ldg + j), slope);
      s0 += dz0;
      p0 += dz0 * (x0 - m);
    }
    vstore(sum_dz + j, s0 + s1);
    vstore(sum_dz_xc + j, p0 + p1);
  }
}

// As rows_apply_fixed: up to four vectors of channels, the six parameters in registers.
template <int ACT, bool STREAM, index_t NV, typename A>
inline void rows_bwd_apply_fixed(const A* __restrict x, index_t ldx, const A* __restrict g,
                                 index_t ldg, A* __restrict dx, index_t ldd, index_t rows,
                                 const A* mean, const A* scale, const A* shift, A slope,
                                 const A* k, const A* c1, const A* c0) {
  using V = VecT<A>;
  constexpr index_t L = Vec<A>::lanes;
  V m[NV], sc[NV], sh[NV], kv[NV], c1v[NV], c0v[NV];
  for (index_t v = 0; v < NV; ++v) {
    m[v] = vload(mean + v * L);
    sc[v] = vload(scale + v * L);
    sh[v] = vload(shift + v * L);
    kv[v] = vload(k + v * L);
    c1v[v] = vload(c1 + v * L);
    c0v[v] = vload(c0 + v * L);
  }
  for (index_t r = 0; r < rows; ++r) {
    for (index_t v = 0; v < NV; ++v) {
      const V xv = vload(x + r * ldx + v * L);
      const V dz = activation_grad<ACT>(pre_activation_v(xv, m[v], sc[v], sh[v]),
                                        vload(g + r * ldg + v * L), slope);
      store<STREAM>(dx + r * ldd + v * L, kv[v] * (dz + c1v[v] * (xv - m[v]) + c0v[v]));
    }
  }
}

template <int ACT, bool STREAM, typename A>
inline void rows_bwd_apply(const A* __restrict x, index_t ldx, const A* __restrict g, index_t ldg,
                           A* __restrict dx, index_t ldd, index_t rows, index_t cwp,
                           const A* mean, const A* scale, const A* shift, A slope, const A* k,
                           const A* c1, const A* c0) {
  constexpr index_t L = Vec<A>::lanes;
#define SF_BWD_APPLY_FIXED(NV)                                                                   \
  return rows_bwd_apply_fixed<ACT, STREAM, NV>(x, ldx, g, ldg, dx, ldd, rows, mean, scale,      \
                                               shift, slope, k, c1, c0)
  switch (cwp / L) {
    case 1: SF_BWD_APPLY_FIXED(1);
    case 2: SF_BWD_APPLY_FIXED(2);
    case 3: SF_BWD_APPLY_FIXED(3);
    case 4: SF_BWD_APPLY_FIXED(4);
    default: break;
  }
#undef SF_BWD_APPLY_FIXED
  for (index_t r = 0; r < rows; ++r) {
    for (index_t j = 0; j < cwp; j += L) {
      auto m = vload(mean + j);
      auto xv = vload(x + r * ldx + j);
      auto dz = activation_grad<ACT>(
          pre_activation_v(xv, m, vload(scale + j), vload(shift + j)), vload(g + r * ldg + j),
          slope);
      store<STREAM>(dx + r * ldd + j,
                    vload(k + j) * (dz + vload(c1 + j) * (xv - m) + vload(c0 + j)));
    }
  }
}

// ------------------------------------------------------------------------------------------
// Tasks. A task is one segment (rows [s * seg_rows, ...)) of one unit (a plane for NCHW, a
// block of channels of one sample for channels_last); see Geometry in the .cpp.

template <typename A>
inline A param_or(const void* p, bool per_sample, index_t n, index_t c, index_t C, A dflt) {
  if (p == nullptr) return dflt;
  return static_cast<const A*>(p)[per_sample ? n * C + c : c];
}

// Per-channel (mean, scale = rstd * w, shift = b) of a unit, in the accumulation dtype.
template <typename A, typename Job>
inline void unit_params(const Job& job, const TaskPos& p, A* mean, A* scale, A* shift) {
  const Geometry& g = job.g;
  const A* mean_nc = static_cast<const A*>(job.mean);
  const A* rstd_nc = static_cast<const A*>(job.rstd);
  for (index_t j = 0; j < p.cw; ++j) {
    const index_t c = p.c0 + j;
    mean[j] = mean_nc[p.n * g.C + c];
    scale[j] = rstd_nc[p.n * g.C + c] *
               param_or<A>(job.weight, job.weight_per_sample, p.n, c, g.C, A(1));
    shift[j] = param_or<A>(job.bias, job.bias_per_sample, p.n, c, g.C, A(0));
  }
}

template <typename S>
void fwd_stats_nchw(const FwdJob& job, index_t t) {
  using A = typename AccOf<S>::type;
  const Geometry& g = job.g;
  const TaskPos p = locate(g, t);
  const S* x = static_cast<const S*>(job.x) + p.unit * g.HW;
  alignas(64) A buf[kChunk];
  double count = 0, mean = 0, m2 = 0;
  for (index_t r = p.r0; r < p.r1; r += kChunk) {
    const index_t len = std::min(kChunk, p.r1 - r);
    A cm, cm2;
    if constexpr (std::is_same_v<S, c10::BFloat16>) contig_mean_m2_bf16(x + r, len, cm, cm2);
    else contig_mean_m2(as_acc(x + r, len, buf), len, cm, cm2);
    chan_combine(count, mean, m2, double(len), double(cm), double(cm2));
  }
  job.seg_mean[t] = mean;
  job.seg_m2[t] = m2;
}

template <typename S>
void fwd_stats_nhwc(const FwdJob& job, index_t t) {
  using A = typename AccOf<S>::type;
  constexpr index_t L = Vec<A>::lanes;
  const Geometry& g = job.g;
  const TaskPos p = locate(g, t);
  const index_t cwp = round_up(p.cw, L);
  // Reading the tensor in place needs whole vectors of the right dtype; otherwise rows are
  // copied (converted, zero-padded to cwp) into buf first.
  const bool direct = std::is_same_v<S, A> && p.cw == cwp;
  const S* x = static_cast<const S*>(job.x) + p.n * g.HW * g.C + p.c0;
  alignas(64) A buf[kChunk];
  alignas(64) A cm[kMaxBlock], cm2[kMaxBlock];
  double mean[kMaxBlock] = {}, m2[kMaxBlock] = {};
  double count = 0;
  for (index_t r = p.r0; r < p.r1; r += g.chunk_rows) {
    const index_t rows = std::min(g.chunk_rows, p.r1 - r);
    if (direct) {
      rows_mean_m2(reinterpret_cast<const A*>(x + r * g.C), g.C, rows, cwp, cm, cm2);
    } else {
      gather_rows(x + r * g.C, g.C, buf, cwp, rows, p.cw);
      rows_mean_m2(buf, cwp, rows, cwp, cm, cm2);
    }
    // chan_combine for every channel at once: the chunk's count is the same for all of them,
    // so its two divisions are hoisted (they cost ~0.6 cycle per value at 128 channels
    // otherwise) and the loop vectorises; the arithmetic is exactly chan_combine's.
    const double nb = double(rows), n = count + nb;
    const double f_mean = nb / n, f_m2 = count * nb / n;
    for (index_t j = 0; j < p.cw; ++j) {
      const double delta = double(cm[j]) - mean[j];
      mean[j] += delta * f_mean;
      m2[j] += double(cm2[j]) + delta * delta * f_m2;
    }
    count = n;
  }
  double* seg_mean = job.seg_mean + t * g.block;
  double* seg_m2 = job.seg_m2 + t * g.block;
  for (index_t j = 0; j < p.cw; ++j) {
    seg_mean[j] = mean[j];
    seg_m2[j] = m2[j];
  }
}

// Apply passes walk their tasks (segments) backwards, so that the segment the statistics pass
// read last, still in cache, is used first; chunks inside a segment go forwards, which the
// hardware prefetchers follow. STREAM: streamed output stores (float / double, and bfloat16 in
// the NCHW forward).
template <int ACT, bool STREAM, typename S>
void fwd_apply_nchw(const FwdJob& job, index_t t) {
  using A = typename AccOf<S>::type;
  const Geometry& g = job.g;
  const TaskPos p = locate(g, t);
  const S* x = static_cast<const S*>(job.x) + p.unit * g.HW;
  S* y = static_cast<S*>(job.y) + p.unit * g.HW;
  A mean, scale, shift;
  unit_params<A>(job, p, &mean, &scale, &shift);
  const A slope = A(job.slope);
  alignas(64) A xbuf[kChunk];
  alignas(64) A ybuf[kChunk];
  if constexpr (!std::is_same_v<S, A>) {
    (void)xbuf;
    (void)ybuf;
    contig_apply_half<ACT, STREAM>(x + p.r0, y + p.r0, p.r1 - p.r0, mean, scale, shift, slope);
    return;
  }
  for (index_t r = p.r0; r < p.r1; r += kChunk) {
    const index_t len = std::min(kChunk, p.r1 - r);
    const A* xa = as_acc(x + r, len, xbuf);
    if constexpr (std::is_same_v<S, A>) {
      contig_apply<ACT, STREAM>(xa, y + r, len, mean, scale, shift, slope);
    } else {
      contig_apply<ACT, false>(xa, ybuf, len, mean, scale, shift, slope);
      convert(ybuf, y + r, len);
    }
  }
}

template <int ACT, bool STREAM, typename S>
void fwd_apply_nhwc(const FwdJob& job, index_t t) {
  using A = typename AccOf<S>::type;
  constexpr index_t L = Vec<A>::lanes;
  const Geometry& g = job.g;
  const TaskPos p = locate(g, t);
  const index_t cwp = round_up(p.cw, L);
  const bool direct = std::is_same_v<S, A> && p.cw == cwp;
  const index_t offset = p.n * g.HW * g.C + p.c0;
  const S* x = static_cast<const S*>(job.x) + offset;
  S* y = static_cast<S*>(job.y) + offset;
  alignas(64) A mean[kMaxBlock] = {}, scale[kMaxBlock] = {}, shift[kMaxBlock] = {};
  unit_params<A>(job, p, mean, scale, shift);
  const A slope = A(job.slope);
  alignas(64) A xbuf[kChunk];
  alignas(64) A ybuf[kChunk];
  const index_t R = g.chunk_rows;
  for (index_t r = p.r0; r < p.r1; r += R) {
    const index_t rows = std::min(R, p.r1 - r);
    if (direct) {
      rows_apply<ACT, STREAM>(reinterpret_cast<const A*>(x + r * g.C), g.C,
                      reinterpret_cast<A*>(y + r * g.C), g.C, rows, cwp, mean, scale, shift,
                      slope);
    } else {
      gather_rows(x + r * g.C, g.C, xbuf, cwp, rows, p.cw);
      rows_apply<ACT, false>(xbuf, cwp, ybuf, cwp, rows, cwp, mean, scale, shift, slope);
      scatter_rows(ybuf, cwp, y + r * g.C, g.C, rows, p.cw);
    }
  }
}

template <int ACT, typename S>
void bwd_sums_nchw(const BwdJob& job, index_t t) {
  using A = typename AccOf<S>::type;
  const Geometry& g = job.g;
  const TaskPos p = locate(g, t);
  const S* x = static_cast<const S*>(job.x) + p.unit * g.HW;
  const S* gy = static_cast<const S*>(job.grad_output) + p.unit * g.HW;
  A mean, scale, shift;
  unit_params<A>(job, p, &mean, &scale, &shift);
  const A slope = A(job.slope);
  alignas(64) A xbuf[kChunk];
  alignas(64) A gbuf[kChunk];
  double sum_dz = 0, sum_dz_xc = 0;
  for (index_t r = p.r0; r < p.r1; r += kChunk) {
    const index_t len = std::min(kChunk, p.r1 - r);
    A s, q;
    contig_bwd_sums<ACT>(as_acc(x + r, len, xbuf), as_acc(gy + r, len, gbuf), len, mean, scale,
                         shift, slope, s, q);
    sum_dz += double(s);
    sum_dz_xc += double(q);
  }
  job.seg_sum_dz[t] = sum_dz;
  job.seg_sum_dz_xc[t] = sum_dz_xc;
}

template <int ACT, typename S>
void bwd_sums_nhwc(const BwdJob& job, index_t t) {
  using A = typename AccOf<S>::type;
  constexpr index_t L = Vec<A>::lanes;
  const Geometry& g = job.g;
  const TaskPos p = locate(g, t);
  const index_t cwp = round_up(p.cw, L);
  const bool direct = std::is_same_v<S, A> && p.cw == cwp;
  const index_t offset = p.n * g.HW * g.C + p.c0;
  const S* x = static_cast<const S*>(job.x) + offset;
  const S* gy = static_cast<const S*>(job.grad_output) + offset;
  alignas(64) A mean[kMaxBlock] = {}, scale[kMaxBlock] = {}, shift[kMaxBlock] = {};
  unit_params<A>(job, p, mean, scale, shift);
  const A slope = A(job.slope);
  alignas(64) A xbuf[kChunk];
  alignas(64) A gbuf[kChunk];
  alignas(64) A s[kMaxBlock], q[kMaxBlock];
  double sum_dz[kMaxBlock] = {}, sum_dz_xc[kMaxBlock] = {};
  for (index_t r = p.r0; r < p.r1; r += g.chunk_rows) {
    const index_t rows = std::min(g.chunk_rows, p.r1 - r);
    if (direct) {
      rows_bwd_sums<ACT>(reinterpret_cast<const A*>(x + r * g.C), g.C,
                         reinterpret_cast<const A*>(gy + r * g.C), g.C, rows, cwp, mean, scale,
                         shift, slope, s, q);
    } else {
      gather_rows(x + r * g.C, g.C, xbuf, cwp, rows, p.cw);
      gather_rows(gy + r * g.C, g.C, gbuf, cwp, rows, p.cw);
      rows_bwd_sums<ACT>(xbuf, cwp, gbuf, cwp, rows, cwp, mean, scale, shift, slope, s, q);
    }
    for (index_t j = 0; j < p.cw; ++j) {
      sum_dz[j] += double(s[j]);
      sum_dz_xc[j] += double(q[j]);
    }
  }
  for (index_t j = 0; j < p.cw; ++j) {
    job.seg_sum_dz[t * g.block + j] = sum_dz[j];
    job.seg_sum_dz_xc[t * g.block + j] = sum_dz_xc[j];
  }
}

template <typename A>
inline void unit_coefs(const BwdJob& job, const TaskPos& p, A* k, A* c1, A* c0) {
  const A* coef = static_cast<const A*>(job.coef);
  for (index_t j = 0; j < p.cw; ++j) {
    const index_t nc = p.n * job.g.C + p.c0 + j;
    k[j] = coef[3 * nc];
    c1[j] = coef[3 * nc + 1];
    c0[j] = coef[3 * nc + 2];
  }
}

template <int ACT, bool STREAM, typename S>
void bwd_apply_nchw(const BwdJob& job, index_t t) {
  using A = typename AccOf<S>::type;
  const Geometry& g = job.g;
  const TaskPos p = locate(g, t);
  const S* x = static_cast<const S*>(job.x) + p.unit * g.HW;
  const S* gy = static_cast<const S*>(job.grad_output) + p.unit * g.HW;
  S* dx = static_cast<S*>(job.grad_input) + p.unit * g.HW;
  A mean, scale, shift, k, c1, c0;
  unit_params<A>(job, p, &mean, &scale, &shift);
  unit_coefs<A>(job, p, &k, &c1, &c0);
  const A slope = A(job.slope);
  alignas(64) A xbuf[kChunk];
  alignas(64) A gbuf[kChunk];
  alignas(64) A dbuf[kChunk];
  for (index_t r = p.r0; r < p.r1; r += kChunk) {
    const index_t len = std::min(kChunk, p.r1 - r);
    const A* xa = as_acc(x + r, len, xbuf);
    const A* ga = as_acc(gy + r, len, gbuf);
    if constexpr (std::is_same_v<S, A>) {
      contig_bwd_apply<ACT, STREAM>(xa, ga, dx + r, len, mean, scale, shift, slope, k, c1, c0);
    } else {
      contig_bwd_apply<ACT, false>(xa, ga, dbuf, len, mean, scale, shift, slope, k, c1, c0);
      convert(dbuf, dx + r, len);
    }
  }
}

template <int ACT, bool STREAM, typename S>
void bwd_apply_nhwc(const BwdJob& job, index_t t) {
  using A = typename AccOf<S>::type;
  constexpr index_t L = Vec<A>::lanes;
  const Geometry& g = job.g;
  const TaskPos p = locate(g, t);
  const index_t cwp = round_up(p.cw, L);
  const bool direct = std::is_same_v<S, A> && p.cw == cwp;
  const index_t offset = p.n * g.HW * g.C + p.c0;
  const S* x = static_cast<const S*>(job.x) + offset;
  const S* gy = static_cast<const S*>(job.grad_output) + offset;
  S* dx = static_cast<S*>(job.grad_input) + offset;
  alignas(64) A mean[kMaxBlock] = {}, scale[kMaxBlock] = {}, shift[kMaxBlock] = {};
  alignas(64) A k[kMaxBlock] = {}, c1[kMaxBlock] = {}, c0[kMaxBlock] = {};
  unit_params<A>(job, p, mean, scale, shift);
  unit_coefs<A>(job, p, k, c1, c0);
  const A slope = A(job.slope);
  alignas(64) A xbuf[kChunk];
  alignas(64) A gbuf[kChunk];
  alignas(64) A dbuf[kChunk];
  const index_t R = g.chunk_rows;
  for (index_t r = p.r0; r < p.r1; r += R) {
    const index_t rows = std::min(R, p.r1 - r);
    if (direct) {
      rows_bwd_apply<ACT, STREAM>(reinterpret_cast<const A*>(x + r * g.C), g.C,
                          reinterpret_cast<const A*>(gy + r * g.C), g.C,
                          reinterpret_cast<A*>(dx + r * g.C), g.C, rows, cwp, mean, scale, shift,
                          slope, k, c1, c0);
    } else {
      gather_rows(x + r * g.C, g.C, xbuf, cwp, rows, p.cw);
      gather_rows(gy + r * g.C, g.C, gbuf, cwp, rows, p.cw);
      rows_bwd_apply<ACT, false>(xbuf, cwp, gbuf, cwp, dbuf, cwp, rows, cwp, mean, scale, shift, slope,
                          k, c1, c0);
      scatter_rows(dbuf, cwp, dx + r * g.C, g.C, rows, p.cw);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Entry points of this level: run tasks [t0, t1) (apply passes in reverse order).

template <typename F>
inline void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat: f(float{}); break;
    case DType::kDouble: f(double{}); break;
    case DType::kBFloat16: f(c10::BFloat16{}); break;
    case DType::kHalf: f(c10::Half{}); break;
  }
}

template <typename F>
inline void dispatch_act(int act, F&& f) {
  switch (act) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

void fwd_stats(const FwdJob& job, index_t t0, index_t t1) {
  dispatch_dtype(job.dtype, [&](auto tag) {
    using S = decltype(tag);
    for (index_t t = t0; t < t1; ++t) {
      if (job.g.channels_last) fwd_stats_nhwc<S>(job, t);
      else fwd_stats_nchw<S>(job, t);
    }
  });
}

// STREAM only where the output is written from registers: the storage dtype is the arithmetic
// dtype, or bfloat16 in the forward (contig_apply_half; job.stream_output is set for NCHW only).
template <typename S, typename Job, typename F>
inline void with_stream(const Job& job, F&& f) {
  if constexpr (std::is_same_v<S, typename AccOf<S>::type> ||
                (std::is_same_v<S, c10::BFloat16> && std::is_same_v<Job, FwdJob>)) {
    if (job.stream_output) {
      f(std::true_type{});
      stream_fence();
      return;
    }
  }
  f(std::false_type{});
}

void fwd_apply(const FwdJob& job, index_t t0, index_t t1) {
  dispatch_dtype(job.dtype, [&](auto tag) {
    using S = decltype(tag);
    dispatch_act(job.act, [&](auto act) {
      with_stream<S>(job, [&](auto stream) {
        constexpr int ACT = decltype(act)::value;
        constexpr bool STREAM = decltype(stream)::value;
        for (index_t t = t1 - 1; t >= t0; --t) {
          if (job.g.channels_last) fwd_apply_nhwc<ACT, STREAM, S>(job, t);
          else fwd_apply_nchw<ACT, STREAM, S>(job, t);
        }
      });
    });
  });
}

void bwd_sums(const BwdJob& job, index_t t0, index_t t1) {
  dispatch_dtype(job.dtype, [&](auto tag) {
    using S = decltype(tag);
    dispatch_act(job.act, [&](auto act) {
      for (index_t t = t0; t < t1; ++t) {
        if (job.g.channels_last) bwd_sums_nhwc<decltype(act)::value, S>(job, t);
        else bwd_sums_nchw<decltype(act)::value, S>(job, t);
      }
    });
  });
}

void bwd_apply(const BwdJob& job, index_t t0, index_t t1) {
  dispatch_dtype(job.dtype, [&](auto tag) {
    using S = decltype(tag);
    dispatch_act(job.act, [&](auto act) {
      with_stream<S>(job, [&](auto stream) {
        constexpr int ACT = decltype(act)::value;
        constexpr bool STREAM = decltype(stream)::value;
        for (index_t t = t1 - 1; t >= t0; --t) {
          if (job.g.channels_last) bwd_apply_nhwc<ACT, STREAM, S>(job, t);
          else bwd_apply_nchw<ACT, STREAM, S>(job, t);
        }
      });
    });
  });
}

const KernelTable kernel_table = {SF_ISA_NAME, &fwd_stats, &fwd_apply, &bwd_sums, &bwd_apply};
