// Per-instruction-set kernel body of the CPU padded convolution's direct kernel (the algorithm
// is described in padded_conv_cpu_direct.cpp).
//
// NOT an ordinary header: padded_conv_cpu_direct.cpp compiles it once per level through
// cpu/cpu_isa_kernels.h (levels 0-2), after cpu/cpu_vec.h, inside padded_conv_cpu's anonymous
// namespace; it relies on the declarations made there (Job, DType, KernelTable, round_up, ...).

using namespace vreg;  // VF, kLanes, vload / vstore / vset1 / vfma, keep_in_register

// Register blocking per level.
#if SF_ISA_LEVEL >= 2
constexpr int kAccVectors = 24;  // of 32 registers: the rest hold inputs and weights
constexpr int kMaxV = 8;
constexpr int64_t kMaxGroup = 8;  // 8 x 3 accumulators
constexpr int64_t kMaxLaneVectors = 2;  // channels in lanes: 2 x 12 accumulators
#elif SF_ISA_LEVEL == 1
constexpr int kAccVectors = 12;  // of 16 registers
constexpr int kMaxV = 6;
constexpr int64_t kMaxGroup = 4;  // 4 x 3 accumulators: fewer loads per FMA than 8 x 1
constexpr int64_t kMaxLaneVectors = 2;  // 2 x 6
#else
constexpr int kAccVectors = 8;  // of 16 registers; no FMA, so products need temporaries
constexpr int kMaxV = 4;
constexpr int64_t kMaxGroup = 4;
constexpr int64_t kMaxLaneVectors = 2;  // 2 x 4
#endif

// ---------------------------------------------------------------------------------------------
// Packing: one padded input row of every channel, as float.

// kLanes values at p as one float vector (cpu/cpu_vec.h converts: to_float, convert, ...).
inline VF load_lanes(const float* p) { return vload(p); }
inline VF load_lanes(const c10::BFloat16* p) { return bf16_to_float<VF>(p); }
inline VF load_lanes(const c10::Half* p) {
  alignas(64) float t[kLanes];
  convert(p, t, kLanes);
  return vload(t);
}

#if defined(__GNUC__) && !defined(__clang__)
#define SF_DIRECT_TRANSPOSE 1  // __builtin_shuffle is GCC's; other compilers pack one by one
// In-register transpose of kLanes x kLanes floats: stage D swaps bit D of the row index with
// bit D of the lane index (rows i and i + D exchange their off-diagonal D-blocks).
typedef int32_t IV __attribute__((vector_size(sizeof(VF))));
template <int D, bool kHigh, int... L>
constexpr IV stage_mask(std::integer_sequence<int, L...>) {
  return kHigh ? IV{((L & D) ? kLanes + L : L + D)...} : IV{((L & D) ? kLanes + L - D : L)...};
}
template <int D>
inline void transpose_stage(VF* r) {
  constexpr IV lo = stage_mask<D, false>(std::make_integer_sequence<int, kLanes>{});
  constexpr IV hi = stage_mask<D, true>(std::make_integer_sequence<int, kLanes>{});
#pragma GCC unroll 16
  for (int i = 0; i < kLanes; ++i) {
    if (i & D) continue;
    const VF a = r[i], b = r[i + D];
    r[i] = __builtin_shuffle(a, b, lo);
    r[i + D] = __builtin_shuffle(a, b, hi);
  }
}
inline void transpose(VF* r) {
  transpose_stage<1>(r);
  transpose_stage<2>(r);
  if constexpr (kLanes >= 8) transpose_stage<4>(r);
  if constexpr (kLanes >= 16) transpose_stage<8>(r);
}
// Lanes 0, 2, 4, ... then 1, 3, 5, ...: a vector's even and odd lanes, each in one half.
template <int... L>
constexpr IV split_mask(std::integer_sequence<int, L...>) {
  return IV{(L < kLanes / 2 ? 2 * L : 2 * (L - kLanes / 2) + 1)...};
}
#else
#define SF_DIRECT_TRANSPOSE 0
#endif

// Where padded column q of a packed row goes: plane q % SW, index q / SW (SW is 1 or 2).
inline int64_t slot_of(const Job& j, int64_t q) {
  return j.g.sw == 1 ? q : (q & 1) * j.pld + (q >> 1);
}

// v holds padded columns q .. q + kLanes - 1 of a row: to their places, contiguous runs of
// kLanes (SW = 1) or two runs of kLanes / 2 (SW = 2: even lanes to one plane, odd to the other).
inline void store_columns(const Job& j, float* d, int64_t q, VF v) {
  if (j.g.sw == 1) return vstore(d + q, v);
#if SF_DIRECT_TRANSPOSE
  constexpr IV split = split_mask(std::make_integer_sequence<int, kLanes>{});
  v = __builtin_shuffle(v, split);
  __builtin_memcpy(d + slot_of(j, q), &v, sizeof(v) / 2);
  __builtin_memcpy(d + slot_of(j, q + 1), reinterpret_cast<const char*>(&v) + sizeof(v) / 2,
                   sizeof(v) / 2);
#else
  alignas(64) float t[kLanes];
  vstore(t, v);
  for (int i = 0; i < kLanes; ++i) d[slot_of(j, q + i)] = t[i];
#endif
}

// Padded columns [q0, q1) of channels [c0, c1), one value at a time.
template <typename S>
void pack_columns(const Job& j, const S* row, float* dst, int64_t cstride, int64_t q0, int64_t q1,
                  int64_t c0, int64_t c1) {
  const int64_t sc = j.xs[1], sw = j.xs[3];
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t col = j.src_col[q], at = slot_of(j, q);
    if (col < 0) {
      for (int64_t c = c0; c < c1; ++c) dst[c * cstride + at] = 0.f;
    } else {
      const S* px = row + col * sw;
      for (int64_t c = c0; c < c1; ++c) dst[c * cstride + at] = to_float(px[c * sc]);
    }
  }
}

// Padded row r of sample n, all channels, padded columns [0, wread): channel c goes to
// dst + c * cstride, column q to slot_of(q). Slots past those stay as they are (zero from the
// allocation).
template <typename S>
void pack_row(const Job& j, int64_t n, int64_t r, float* dst, int64_t cstride) {
  const Geometry& g = j.g;
  const int64_t sr = source_index(r, g.ph, g.h, j.mode);
  if (sr < 0) {  // a zero-padding row
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t p = 0; p < g.sw; ++p)
        std::memset(dst + c * cstride + p * j.pld, 0, sizeof(float) * j.pld);
    return;
  }
  const S* row = static_cast<const S*>(j.x) + n * j.xs[0] + sr * j.xs[2];
  const int64_t sc = j.xs[1], sw = j.xs[3];
  // Left padding [0, qa), image columns [qa, qb), right padding [qb, wread): a stride of 2
  // may leave the last column unread.
  const int64_t qa = std::min(g.pw, j.wread);
  const int64_t qb = std::max(qa, std::min(g.pw + g.w, j.wread));
  if (sc < sw) {
    // Channels innermost (channels_last): kLanes pixels x kLanes channels at a time, read
    // along the channels and transposed in registers; padding columns and leftovers one by one.
    const int64_t cv = SF_DIRECT_TRANSPOSE && sc == 1 ? g.c / kLanes * kLanes : 0;
    const int64_t qv = qa + (cv > 0 ? (qb - qa) / kLanes * kLanes : 0);
    pack_columns(j, row, dst, cstride, 0, qa, 0, g.c);
#if SF_DIRECT_TRANSPOSE
    for (int64_t q = qa; q < qv; q += kLanes) {
      const S* px = row + (q - g.pw) * sw;
      for (int64_t c = 0; c < cv; c += kLanes) {
        VF t[kLanes];
#pragma GCC unroll 16
        for (int p = 0; p < kLanes; ++p) t[p] = load_lanes(px + p * sw + c);
        transpose(t);
#pragma GCC unroll 16
        for (int k = 0; k < kLanes; ++k) store_columns(j, dst + (c + k) * cstride, q, t[k]);
      }
    }
#endif
    pack_columns(j, row, dst, cstride, qa, qv, cv, g.c);
    pack_columns(j, row, dst, cstride, qv, j.wread, 0, g.c);
    return;
  }
  for (int64_t c = 0; c < g.c; ++c) {
    const S* src = row + c * sc;
    float* d = dst + c * cstride;
    // Left and right padding through the index map, the image columns in between.
    for (int64_t q = 0; q < qa; ++q) {
      const int64_t col = j.src_col[q];
      d[slot_of(j, q)] = col < 0 ? 0.f : to_float(src[col * sw]);
    }
    for (int64_t q = qb; q < j.wread; ++q) {
      const int64_t col = j.src_col[q];
      d[slot_of(j, q)] = col < 0 ? 0.f : to_float(src[col * sw]);
    }
    if (sw == 1 && g.sw == 1) {
      convert(src, d + qa, qb - qa);
    } else if (sw == 1) {  // kLanes columns at a time, split between the planes
      int64_t q = qa;
      for (; q + kLanes <= qb; q += kLanes) store_columns(j, d, q, load_lanes(src + q - g.pw));
      for (; q < qb; ++q) d[slot_of(j, q)] = to_float(src[q - g.pw]);
    } else {
      for (int64_t q = qa; q < qb; ++q) d[slot_of(j, q)] = to_float(src[(q - g.pw) * sw]);
    }
  }
}

// Normalize-on-load: a packed real row's values become act(x * scale + shift), channel by
// channel, while the row is in L1; zero-padding columns stay 0. The image columns are one
// contiguous run at stride 1 (vectors); padding columns and stride-2 planes go one by one.
void normalize_row(const Job& j, int64_t n, float* dst, int64_t cstride) {
  const Geometry& g = j.g;
  const int64_t qa = std::min(g.pw, j.wread);
  const int64_t qb = std::max(qa, std::min(g.pw + g.w, j.wread));
  const int64_t act = j.norm.activation;
  const float slope = j.norm.slope;
  for (int64_t c = 0; c < g.c; ++c) {
    float* d = dst + c * cstride;
    const int64_t nc = n * g.c + c;
    auto one = [&](int64_t q) {
      if (j.src_col[q] >= 0) d[slot_of(j, q)] = j.norm.apply(d[slot_of(j, q)], nc);
    };
    if (g.sw != 1) {
      for (int64_t q = 0; q < j.wread; ++q) one(q);
      continue;
    }
    for (int64_t q = 0; q < qa; ++q) one(q);
    for (int64_t q = qb; q < j.wread; ++q) one(q);
    const VF sc = vset1(j.norm.scale[nc]), sh = vset1(j.norm.shift[nc]);
    int64_t q = qa;
    for (; q + kLanes <= qb; q += kLanes) {
      VF v = vload(d + q) * sc + sh;
      if (act == 1) v = max0(v);
      else if (act == 2) v = v < VF{} ? v * slope : v;
      vstore(d + q, v);
    }
    for (; q < qb; ++q) one(q);
  }
}

// Padded row r of sample n into its ring slot (channel c at dst + c * cstride).
void pack_slot(const Job& j, int64_t n, int64_t r, float* dst, int64_t cstride) {
  switch (j.dtype) {
    case DType::kFloat: pack_row<float>(j, n, r, dst, cstride); break;
    case DType::kBFloat16: pack_row<c10::BFloat16>(j, n, r, dst, cstride); break;
    case DType::kHalf: pack_row<c10::Half>(j, n, r, dst, cstride); break;
  }
  if (j.norm.active() && source_index(r, j.g.ph, j.g.h, j.mode) >= 0)
    normalize_row(j, n, dst, cstride);
}

// ---------------------------------------------------------------------------------------------
// Prefetch: while an output row is computed, the input rows the next one adds are requested a
// few cache lines after each column block, so that packing them does not wait on memory.

class Prefetcher {
 public:
  // The source rows of padded rows [r0, r1) of sample n, over `steps` calls to step().
  void plan(const Job& j, int64_t n, int64_t r0, int64_t r1, int64_t steps) {
    const Geometry& g = j.g;
    const int64_t es = j.dtype == DType::kFloat ? 4 : 2;
    spans_.clear();
    cur_ = 0;
    off_ = 0;
    int64_t lines = 0;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t sr = source_index(r, g.ph, g.h, j.mode);
      if (sr < 0) continue;
      const char* row = static_cast<const char*>(j.x) + (n * j.xs[0] + sr * j.xs[2]) * es;
      if (j.xs[3] == 1) {  // one run per channel
        for (int64_t c = 0; c < g.c; ++c) spans_.push_back({row + c * j.xs[1] * es, g.w * es});
      } else if (j.xs[1] == 1 && j.xs[3] == g.c) {  // dense channels_last: one run
        spans_.push_back({row, g.w * g.c * es});
      }  // other layouts: no prefetch
    }
    for (const Span& s : spans_) lines += s.bytes / 64 + 2;
    per_step_ = (lines + steps - 1) / std::max<int64_t>(1, steps);
  }
  void clear() { spans_.clear(); }

  void step() {
    for (int64_t left = per_step_; left > 0 && cur_ < spans_.size(); ++cur_, off_ = 0) {
      const Span& s = spans_[cur_];
      for (; off_ < s.bytes && left > 0; off_ += 64, --left) __builtin_prefetch(s.p + off_, 0, 2);
      if (off_ < s.bytes) return;  // go on in this span next time
      __builtin_prefetch(s.p + s.bytes - 1, 0, 2);  // the last line
    }
  }

 private:
  struct Span {
    const char* p;
    int64_t bytes;
  };
  std::vector<Span> spans_;
  size_t cur_ = 0;
  int64_t off_ = 0, per_step_ = 0;
};

// kLanes floats -> p, rounded to S (to nearest even, as static_cast<S>); kStream: through a
// non-temporal store, p aligned to the vector's size.
template <bool kStream>
inline void store_lanes(float* p, VF v) {
#if SF_ISA_LEVEL >= 2
  if constexpr (kStream) return _mm512_stream_ps(p, v);
#elif SF_ISA_LEVEL == 1
  if constexpr (kStream) return _mm256_stream_ps(p, v);
#endif
  vstore(p, v);
}
// kLanes 16-bit values -> p.
template <bool kStream, typename H>
inline void store_halves(H* p, const void* h) {
#if SF_ISA_LEVEL >= 2
  if constexpr (kStream)
    return _mm256_stream_si256(reinterpret_cast<__m256i*>(p),
                               _mm256_loadu_si256(static_cast<const __m256i*>(h)));
#elif SF_ISA_LEVEL == 1
  if constexpr (kStream)
    return _mm_stream_si128(reinterpret_cast<__m128i*>(p),
                            _mm_loadu_si128(static_cast<const __m128i*>(h)));
#endif
  __builtin_memcpy(p, h, kLanes * 2);
}
template <bool kStream>
inline void store_lanes(c10::BFloat16* p, VF v) {
  const auto h = float_to_bf16(v);
  store_halves<kStream>(p, &h);
}
template <bool kStream>
inline void store_lanes(c10::Half* p, VF v) {
  alignas(64) float t[kLanes];
  vstore(t, v);
#if SF_ISA_LEVEL >= 1
  alignas(32) uint16_t h[kLanes];
  for (int i = 0; i < kLanes; i += 8)
    _mm_store_si128(reinterpret_cast<__m128i*>(h + i),
                    _mm256_cvtps_ph(_mm256_load_ps(t + i), _MM_FROUND_TO_NEAREST_INT));
  store_halves<kStream>(p, h);
#else
  for (int i = 0; i < kLanes; ++i) p[i] = static_cast<c10::Half>(t[i]);
#endif
}

// A row tile (O rows of WO floats, stride ldt) -> out[n, :, y, :]. kStream: the vector stores
// are non-temporal (the caller checked that they are all aligned).
template <typename S, bool kStream>
void store_row(const Job& j, S* base, const float* tile, int64_t ldt) {
  const int64_t nout = j.g.o, cols = j.g.wo;
  const int64_t so = j.ys[1], sw = j.ys[3];
  if (so < sw) {
    // Channels innermost (channels_last): write along the channels, kLanes columns x kLanes
    // channels transposed in registers at a time, the rest one by one.
    int64_t q = 0;
#if SF_DIRECT_TRANSPOSE
    if (so == 1) {
      const int64_t ov = nout / kLanes * kLanes;
      for (; q + kLanes <= cols; q += kLanes) {
        for (int64_t o = 0; o < ov; o += kLanes) {
          VF t[kLanes];
#pragma GCC unroll 16
          for (int k = 0; k < kLanes; ++k) t[k] = vload(tile + (o + k) * ldt + q);
          transpose(t);
#pragma GCC unroll 16
          for (int k = 0; k < kLanes; ++k) store_lanes<kStream>(base + (q + k) * sw + o, t[k]);
        }
        for (int64_t k = 0; k < kLanes; ++k) {
          S* d = base + (q + k) * sw;
          for (int64_t o = ov; o < nout; ++o) d[o] = static_cast<S>(tile[o * ldt + q + k]);
        }
      }
    }
#endif
    for (; q < cols; ++q) {
      S* d = base + q * sw;
      const float* t = tile + q;
      for (int64_t o = 0; o < nout; ++o) d[o * so] = static_cast<S>(t[o * ldt]);
    }
    return;
  }
  for (int64_t o = 0; o < nout; ++o) {
    S* d = base + o * so;
    const float* t = tile + o * ldt;
    if (sw == 1) {
      int64_t q = 0;
      for (; q + kLanes <= cols; q += kLanes) store_lanes<kStream>(d + q, vload(t + q));
      for (; q < cols; ++q) d[q] = static_cast<S>(t[q]);
    } else {
      for (int64_t q = 0; q < cols; ++q) d[q * sw] = static_cast<S>(t[q]);
    }
  }
}

template <typename S>
void store_row(const Job& j, int64_t n, int64_t y, const float* tile, int64_t ldt) {
  S* base = static_cast<S*>(j.y) + n * j.ys[0] + y * j.ys[2];
  // Vector stores go to base + o so + q (o any, q a multiple of kLanes) when sw is 1, else to
  // base + q sw + o (o a multiple of kLanes) when so is 1: all aligned if base and the stride
  // between them are.
  // Streaming stores should fill whole cache lines back to back: a line written in parts far
  // apart goes to memory in parts. Rows (sw = 1) are written in order; channels_last pixels
  // one vector per line only where a vector is a line.
  constexpr int64_t kBytes = kLanes * int64_t(sizeof(S));
  const int64_t step = j.ys[3] == 1 ? j.ys[1] : j.ys[1] == 1 && kBytes % 64 == 0 ? j.ys[3] : 1;
  if (j.stream && reinterpret_cast<uintptr_t>(base) % kBytes == 0 &&
      step * int64_t(sizeof(S)) % kBytes == 0)
    return store_row<S, SF_ISA_LEVEL >= 1>(j, base, tile, ldt);
  store_row<S, false>(j, base, tile, ldt);
}

inline void store_row_any(const Job& j, int64_t n, int64_t y, const float* tile, int64_t ldt) {
  switch (j.dtype) {
    case DType::kFloat: return store_row<float>(j, n, y, tile, ldt);
    case DType::kBFloat16: return store_row<c10::BFloat16>(j, n, y, tile, ldt);
    case DType::kHalf: return store_row<c10::Half>(j, n, y, tile, ldt);
  }
}

// ---------------------------------------------------------------------------------------------
// Compute

// O output channels x V vectors of output columns from column col of one output row.
// rows: the C * KH packed rows that output row reads (channel-major); tap kx of a row starts at
// xoff[kx]; w: [C * KH][KW][O]. The result (bias included) goes to tile: O rows of stride ldt.
template <int O, int V>
void block(const float* const* rows, int64_t nrows, int64_t kw, const int64_t* xoff,
           const float* w, const float* bias, int64_t col, float* tile, int64_t ldt) {
  VF acc[O][V];
#pragma GCC unroll 8
  for (int o = 0; o < O; ++o) {
    const VF b = vset1(bias[o]);
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[o][v] = b;
  }
  for (int64_t i = 0; i < nrows; ++i) {
    const float* row = rows[i] + col;
    const float* wi = w + i * kw * O;
    for (int64_t kx = 0; kx < kw; ++kx) {
      const float* p = row + xoff[kx];
      // Live registers: O x V accumulators, min(O, V) operands held across the step, and one
      // operand in flight, so the smaller of inputs / weights is the one held.
      if constexpr (O <= V) {
        VF wb[O];
#pragma GCC unroll 8
        for (int o = 0; o < O; ++o) wb[o] = vset1(wi[kx * O + o]);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          VF xv = vload(p + v * kLanes);
          keep_in_register(xv);
#pragma GCC unroll 8
          for (int o = 0; o < O; ++o) acc[o][v] = vfma(xv, wb[o], acc[o][v]);
        }
      } else {
        VF xv[V];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          VF t = vload(p + v * kLanes);
          keep_in_register(t);
          xv[v] = t;
        }
#pragma GCC unroll 8
        for (int o = 0; o < O; ++o) {
          const VF wb = vset1(wi[kx * O + o]);
#pragma GCC unroll 8
          for (int v = 0; v < V; ++v) acc[o][v] = vfma(xv[v], wb, acc[o][v]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int o = 0; o < O; ++o) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) vstore(tile + o * ldt + v * kLanes, acc[o][v]);
  }
}

// Vectors of output columns per block for O output channels.
constexpr int vectors_for(int o) {
  return kAccVectors / o < 1 ? 1 : kAccVectors / o > kMaxV ? kMaxV : kAccVectors / o;
}

// block<O, nv> for a run-time nv in [1, V].
template <int O, int V>
inline void block_n(int nv, const float* const* rows, int64_t nrows, int64_t kw,
                    const int64_t* xoff, const float* w, const float* bias, int64_t col,
                    float* tile, int64_t ldt) {
  if constexpr (V > 1) {
    if (nv < V) return block_n<O, V - 1>(nv, rows, nrows, kw, xoff, w, bias, col, tile, ldt);
  }
  block<O, V>(rows, nrows, kw, xoff, w, bias, col, tile, ldt);
}

// One group of O output channels across an output row: blocks of V = vectors_for(O) vectors,
// the last one shorter; a few prefetches after each.
template <int O>
void group_row(const float* const* rows, int64_t nrows, int64_t kw, const int64_t* xoff,
               const float* w, const float* bias, int64_t wo, float* tile, int64_t ldt,
               Prefetcher& pf) {
  constexpr int V = vectors_for(O);
  constexpr int64_t kStep = int64_t(V) * kLanes;
  int64_t col = 0;
  for (; col + kStep <= wo; col += kStep) {
    block<O, V>(rows, nrows, kw, xoff, w, bias, col, tile + col, ldt);
    pf.step();
  }
  if (col < wo) {
    const int nv = static_cast<int>((wo - col + kLanes - 1) / kLanes);
    block_n<O, V>(nv, rows, nrows, kw, xoff, w, bias, col, tile + col, ldt);
  }
}

using GroupRowFn = void (*)(const float* const*, int64_t, int64_t, const int64_t*, const float*,
                            const float*, int64_t, float*, int64_t, Prefetcher&);

template <int... I>
constexpr std::array<GroupRowFn, sizeof...(I)> group_row_table(std::integer_sequence<int, I...>) {
  return {&group_row<I + 1>...};
}
static_assert(kMaxGroup <= 8, "block unrolls at most 8 output channels");
constexpr auto kGroupRows = group_row_table(std::make_integer_sequence<int, int(kMaxGroup)>{});

// ---------------------------------------------------------------------------------------------
// Channels-in-lanes kernel, for channels_last outputs with whole vectors of output channels: a
// block is OV vectors of output channels x P pixels, each step one load per vector of weights
// and one broadcast per pixel; the pixels go straight to the output, channels contiguous.

constexpr int pixels_for(int ov) {
  return kAccVectors / ov > kMaxPixels ? int(kMaxPixels) : kAccVectors / ov;
}

// OV vectors of output channels x P pixels from column col: rows, xoff as block(); w:
// [C * KH][KW][OV kLanes]. The result (bias included) goes to tile: [P][OV kLanes].
template <int OV, int P>
void lanes_block(const float* const* rows, int64_t nrows, int64_t kw, const int64_t* xoff,
                 const float* w, const float* bias, int64_t col, float* tile) {
  constexpr int OG = OV * kLanes;
  VF acc[OV][P];
#pragma GCC unroll 4
  for (int v = 0; v < OV; ++v) {
    const VF b = vload(bias + v * kLanes);
#pragma GCC unroll 24
    for (int p = 0; p < P; ++p) acc[v][p] = b;
  }
  for (int64_t i = 0; i < nrows; ++i) {
    const float* row = rows[i] + col;
    const float* wi = w + i * kw * OG;
    for (int64_t kx = 0; kx < kw; ++kx) {
      const float* x = row + xoff[kx];
      VF wv[OV];
#pragma GCC unroll 4
      for (int v = 0; v < OV; ++v) {
        wv[v] = vload(wi + kx * OG + v * kLanes);
        keep_in_register(wv[v]);
      }
#pragma GCC unroll 24
      for (int p = 0; p < P; ++p) {
        const VF xb = vset1(x[p]);
#pragma GCC unroll 4
        for (int v = 0; v < OV; ++v) acc[v][p] = vfma(wv[v], xb, acc[v][p]);
      }
    }
  }
#pragma GCC unroll 24
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 4
    for (int v = 0; v < OV; ++v) vstore(tile + p * OG + v * kLanes, acc[v][p]);
  }
}

// One group of OV vectors of output channels across an output row; out: the row's first pixel
// at the group's first channel, pixels sw apart. kStream: non-temporal stores (aligned). relu:
// max(0, .) on each vector as it is stored.
template <int OV, typename S, bool kStream>
void lanes_row(const float* const* rows, int64_t nrows, int64_t kw, const int64_t* xoff,
               const float* w, const float* bias, int64_t wo, void* out, int64_t sw,
               Prefetcher& pf, bool relu) {
  constexpr int P = pixels_for(OV), OG = OV * kLanes;
  alignas(64) float tile[P * OG];
  S* base = static_cast<S*>(out);
  for (int64_t col = 0; col < wo; col += P) {
    // The last block computes P pixels too (reading the planes' zero tails), stores fewer.
    lanes_block<OV, P>(rows, nrows, kw, xoff, w, bias, col, tile);
    const int np = static_cast<int>(std::min<int64_t>(P, wo - col));
    for (int p = 0; p < np; ++p) {
      S* d = base + (col + p) * sw;
#pragma GCC unroll 4
      for (int v = 0; v < OV; ++v) {
        const VF value = vload(tile + p * OG + v * kLanes);
        store_lanes<kStream>(d + v * kLanes, relu ? max0(value) : value);
      }
    }
    pf.step();
  }
}

using LanesRowFn = void (*)(const float* const*, int64_t, int64_t, const int64_t*, const float*,
                            const float*, int64_t, void*, int64_t, Prefetcher&, bool);

template <typename S, bool kStream, int... I>
constexpr std::array<LanesRowFn, sizeof...(I)> lanes_row_table(std::integer_sequence<int, I...>) {
  return {&lanes_row<I + 1, S, kStream>...};
}
static_assert(kMaxLaneVectors <= 4, "lanes_block unrolls at most 4 vectors of outputs");
constexpr auto kLaneSeq = std::make_integer_sequence<int, int(kMaxLaneVectors)>{};
// [dtype][stream][OV - 1]
constexpr std::array<LanesRowFn, kMaxLaneVectors> kLanesRows[3][2] = {
    {lanes_row_table<float, false>(kLaneSeq), lanes_row_table<float, SF_ISA_LEVEL >= 1>(kLaneSeq)},
    {lanes_row_table<c10::BFloat16, false>(kLaneSeq),
     lanes_row_table<c10::BFloat16, SF_ISA_LEVEL >= 1>(kLaneSeq)},
    {lanes_row_table<c10::Half, false>(kLaneSeq),
     lanes_row_table<c10::Half, SF_ISA_LEVEL >= 1>(kLaneSeq)}};

// Output row (n, y) with the channels-in-lanes kernel.
void lanes_output_row(const Job& j, const float* const* rows, int64_t n, int64_t y,
                      Prefetcher& pf) {
  const Geometry& g = j.g;
  const int64_t es = j.dtype == DType::kFloat ? 4 : 2;
  const int d = j.dtype == DType::kFloat ? 0 : j.dtype == DType::kBFloat16 ? 1 : 2;
  char* row = static_cast<char*>(j.y) + (n * j.ys[0] + y * j.ys[2]) * es;
  for (int64_t k = 0; k < j.ngroups; ++k) {
    const int64_t o0 = j.groups[k], og = j.groups[k + 1] - o0;
    char* out = row + o0 * es;
    // Streaming stores where every pixel's channels of the group fill whole cache lines.
    const bool stream = j.stream && reinterpret_cast<uintptr_t>(out) % 64 == 0 &&
                        og * es % 64 == 0 && j.ys[3] * es % 64 == 0;
    kLanesRows[d][stream][og / kLanes - 1](rows, g.c * g.kh, g.kw, j.xoff,
                                            j.w + o0 * g.c * g.kh * g.kw, j.bias + o0, g.wo,
                                            out, j.ys[3], pf, j.relu);
  }
}

// max(0, .) on count floats (a multiple of kLanes: the row tile's rows are padded to ldt).
inline void relu_tile(float* t, int64_t count) {
  for (int64_t i = 0; i < count; i += kLanes) vstore(t + i, max0(vload(t + i)));
}

// Output rows [begin, end) of the flattened (n, y) range.
// Statistics of output row (n, y) as stored (norm_conv2d's epilogue): per channel the row's
// first value K and the sums of (v - K) and (v - K)^2 in float32, read back while the row is
// in cache, into j.row_stats[(n * HO + y) * 3 O ...]: K[O], S1[O], S2[O].
template <typename S>
void row_statistics(const Job& j, int64_t n, int64_t y) {
  const Geometry& g = j.g;
  const S* row = static_cast<const S*>(j.y) + n * j.ys[0] + y * j.ys[2];
  float* k = j.row_stats + (n * g.ho + y) * 3 * g.o;
  float* s1 = k + g.o;
  float* s2 = s1 + g.o;
  for (int64_t o = 0; o < g.o; ++o) {
    k[o] = to_float(row[o * j.ys[1]]);
    s1[o] = 0.f;
    s2[o] = 0.f;
  }
  if (j.ys[1] == 1) {  // channels contiguous: the channel loop vectorises
    for (int64_t x = 0; x < g.wo; ++x) {
      const S* px = row + x * j.ys[3];
      for (int64_t o = 0; o < g.o; ++o) {
        const float d = to_float(px[o]) - k[o];
        s1[o] += d;
        s2[o] += d * d;
      }
    }
    return;
  }
  for (int64_t o = 0; o < g.o; ++o) {
    const S* pc = row + o * j.ys[1];
    float a = 0.f, b = 0.f;
    for (int64_t x = 0; x < g.wo; ++x) {
      const float d = to_float(pc[x * j.ys[3]]) - k[o];
      a += d;
      b += d * d;
    }
    s1[o] = a;
    s2[o] = b;
  }
}

inline void row_statistics_any(const Job& j, int64_t n, int64_t y) {
  switch (j.dtype) {
    case DType::kFloat: return row_statistics<float>(j, n, y);
    case DType::kBFloat16: return row_statistics<c10::BFloat16>(j, n, y);
    case DType::kHalf: return row_statistics<c10::Half>(j, n, y);
  }
}

void run_rows(const Job& j, int64_t begin, int64_t end) {
  const Geometry& g = j.g;
  const int64_t kh = g.kh, ld = j.ld, nrows = g.c * g.kh, ldt = round_up(g.wo, kLanes);
  // Ring of packed rows, [C][KH][ld]: padded row r lives in slot r % KH. Zeroed so the tails
  // (read by the last column block, never stored) are finite.
  std::vector<float> storage(nrows * ld + 16, 0.f);
  float* ring = storage.data() + (16 - reinterpret_cast<uintptr_t>(storage.data()) / 4 % 16) % 16;
  std::vector<float> tile(j.lanes ? 0 : g.o * ldt);
  std::vector<const float*> rows(nrows);
  Prefetcher pf;
  int64_t row_blocks = 0;  // full column blocks per output row: the prefetch steps
  for (int64_t k = 0; k < j.ngroups; ++k) {
    const int og = int(j.groups[k + 1] - j.groups[k]);
    row_blocks += j.lanes ? (g.wo + pixels_for(og / kLanes) - 1) / pixels_for(og / kLanes)
                          : g.wo / (vectors_for(og) * kLanes);
  }

  for (int64_t t = begin; t < end;) {
    const int64_t n = t / g.ho, y0 = t % g.ho, y1 = std::min(g.ho, y0 + (end - t));
    int64_t next = y0 * g.sh;  // first padded row not in the ring yet
    for (int64_t y = y0; y < y1; ++y) {
      const int64_t top = y * g.sh;
      for (int64_t r = std::max(next, top); r < top + kh; ++r)
        pack_slot(j, n, r, ring + (r % kh) * ld, kh * ld);
      next = top + kh;
      for (int64_t c = 0; c < g.c; ++c)
        for (int64_t ky = 0; ky < kh; ++ky)
          rows[c * kh + ky] = ring + (c * kh + (top + ky) % kh) * ld;
      // The rows the next output row adds, fetched while this one is computed.
      if (y + 1 < y1) pf.plan(j, n, next, top + g.sh + kh, row_blocks);
      if (j.lanes) {
        lanes_output_row(j, rows.data(), n, y, pf);
        pf.clear();
        if (j.row_stats != nullptr) row_statistics_any(j, n, y);
        continue;
      }
      for (int64_t k = 0; k < j.ngroups; ++k) {
        const int64_t o0 = j.groups[k], og = j.groups[k + 1] - o0;
        kGroupRows[og - 1](rows.data(), nrows, g.kw, j.xoff, j.w + o0 * nrows * g.kw,
                           j.bias + o0, g.wo, tile.data() + o0 * ldt, ldt, pf);
      }
      pf.clear();
      // The activation on the row tile, while it is in cache, before it is stored.
      if (j.relu) relu_tile(tile.data(), g.o * ldt);
      store_row_any(j, n, y, tile.data(), ldt);
      if (j.row_stats != nullptr) row_statistics_any(j, n, y);
    }
    t += y1 - y0;
  }
#if SF_ISA_LEVEL >= 1
  if (j.stream) _mm_sfence();  // the non-temporal stores are visible before the task ends
#endif
}

#undef SF_DIRECT_TRANSPOSE

const KernelTable kernel_table = {run_rows, kMaxGroup, vectors_for, kLanes, SF_ISA_LEVEL >= 1,
                                  kMaxLaneVectors};
