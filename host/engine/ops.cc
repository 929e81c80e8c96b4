#include "host/engine/ops.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <sstream>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace ckptbridge::engine {
namespace {

std::string Join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s;
}

std::string FloatText(float f) {
  std::ostringstream os;
  os.precision(9);
  os << f;
  return os.str();
}

Status BadOp(const OpSpec& op, const std::string& why) {
  return InvalidArgument(OpName(op) + ": " + why);
}

Status CheckAxis(const OpSpec& op, const Shape& shape) {
  if (op.axis < 0 || static_cast<size_t>(op.axis) >= shape.size()) {
    return BadOp(
        op, "axis " + std::to_string(op.axis) + " is out of range for shape " + ShapeString(shape));
  }
  return Status::Ok();
}

// Views a shape as [outer, shape[axis], inner].
struct AxisView {
  int64_t outer = 1;
  int64_t n = 1;
  int64_t inner = 1;
};
AxisView ViewAround(const Shape& shape, int axis) {
  AxisView v;
  for (int i = 0; i < axis; ++i) v.outer *= shape[i];
  v.n = shape[axis];
  for (size_t i = axis + 1; i < shape.size(); ++i) v.inner *= shape[i];
  return v;
}

}  // namespace

std::string OpName(const OpSpec& op) {
  switch (op.kind) {
    case OpKind::kTranspose:
      return "transpose([" + Join(op.values) + "])";
    case OpKind::kReshape:
      return "reshape([" + Join(op.values) + "])";
    case OpKind::kScale:
      return "scale(" + FloatText(op.factor) + ")";
    case OpKind::kAdd:
      return "add(" + FloatText(op.factor) + ")";
    case OpKind::kInterleave:
      return "interleave(axis " + std::to_string(op.axis) + ")";
    case OpKind::kDeinterleave:
      return "deinterleave(axis " + std::to_string(op.axis) + ")";
    case OpKind::kPad:
      return "pad(axis " + std::to_string(op.axis) + " to " + std::to_string(op.size) + ")";
    case OpKind::kTruncate:
      return "truncate(axis " + std::to_string(op.axis) + " to " + std::to_string(op.size) + ")";
    case OpKind::kConcat:
      return "concat(axis " + std::to_string(op.axis) + ")";
    case OpKind::kSplit:
      return "split(axis " + std::to_string(op.axis) + " into [" + Join(op.values) + "])";
    case OpKind::kCustom:
      return "custom(" + std::to_string(op.custom_id) + ")";
  }
  return "op(" + std::to_string(static_cast<int>(op.kind)) + ")";
}

Result<std::vector<Shape>> InferShapes(const OpSpec& op, const std::vector<Shape>& in) {
  if (op.kind == OpKind::kConcat) {
    if (in.empty()) return BadOp(op, "no inputs");
    CKB_RETURN_IF_ERROR(CheckAxis(op, in[0]));
    Shape out = in[0];
    for (size_t i = 1; i < in.size(); ++i) {
      Shape a = in[i], b = in[0];
      if (a.size() != b.size()) {
        return BadOp(op, "input shapes " + ShapeString(in[0]) + " and " + ShapeString(in[i]) +
                             " differ in rank");
      }
      a[op.axis] = b[op.axis] = 0;
      if (a != b) {
        return BadOp(op, "input shapes " + ShapeString(in[0]) + " and " + ShapeString(in[i]) +
                             " differ off the concatenation axis");
      }
      out[op.axis] += in[i][op.axis];
    }
    return std::vector<Shape>{out};
  }
  if (op.kind == OpKind::kCustom) {
    for (int64_t d : op.values) {
      if (d < 0) return BadOp(op, "negative output dimension");
    }
    return std::vector<Shape>{Shape(op.values)};
  }
  if (in.size() != 1) {
    return BadOp(op, "takes one input, got " + std::to_string(in.size()));
  }
  const Shape& s = in[0];
  switch (op.kind) {
    case OpKind::kTranspose: {
      if (op.values.size() != s.size()) {
        return BadOp(op, "permutation has " + std::to_string(op.values.size()) +
                             " axes but the input " + ShapeString(s) + " has " +
                             std::to_string(s.size()));
      }
      std::vector<int64_t> sorted = op.values;
      std::sort(sorted.begin(), sorted.end());
      for (size_t i = 0; i < sorted.size(); ++i) {
        if (sorted[i] != static_cast<int64_t>(i)) return BadOp(op, "not a permutation");
      }
      Shape out(s.size());
      for (size_t i = 0; i < s.size(); ++i) out[i] = s[op.values[i]];
      return std::vector<Shape>{out};
    }
    case OpKind::kReshape: {
      CKB_ASSIGN_OR_RETURN(int64_t from, NumElements(s));
      Result<int64_t> to = NumElements(Shape(op.values));
      if (!to.ok()) return BadOp(op, to.status().message());
      if (*to != from) {
        return BadOp(op, "input " + ShapeString(s) + " has " + std::to_string(from) +
                             " elements, the new shape " + std::to_string(*to));
      }
      return std::vector<Shape>{Shape(op.values)};
    }
    case OpKind::kScale:
    case OpKind::kAdd:
      return std::vector<Shape>{s};
    case OpKind::kInterleave:
    case OpKind::kDeinterleave:
      CKB_RETURN_IF_ERROR(CheckAxis(op, s));
      if (s[op.axis] % 2 != 0) {
        return BadOp(
            op, "axis size " + std::to_string(s[op.axis]) + " of " + ShapeString(s) + " is odd");
      }
      return std::vector<Shape>{s};
    case OpKind::kPad:
    case OpKind::kTruncate: {
      CKB_RETURN_IF_ERROR(CheckAxis(op, s));
      const bool pad = op.kind == OpKind::kPad;
      if (pad ? op.size < s[op.axis] : (op.size > s[op.axis] || op.size < 0)) {
        return BadOp(op, std::string("cannot ") + (pad ? "pad" : "truncate") + " axis of size " +
                             std::to_string(s[op.axis]) + " in " + ShapeString(s) + " to " +
                             std::to_string(op.size));
      }
      Shape out = s;
      out[op.axis] = op.size;
      return std::vector<Shape>{out};
    }
    case OpKind::kSplit: {
      CKB_RETURN_IF_ERROR(CheckAxis(op, s));
      int64_t total = 0;
      std::vector<Shape> outs;
      for (int64_t piece : op.values) {
        if (piece < 0) return BadOp(op, "negative piece size");
        total += piece;
        Shape o = s;
        o[op.axis] = piece;
        outs.push_back(o);
      }
      if (total != s[op.axis] || outs.empty()) {
        return BadOp(op, "pieces add up to " + std::to_string(total) + " but the axis of " +
                             ShapeString(s) + " is " + std::to_string(s[op.axis]));
      }
      return outs;
    }
    default:
      break;
  }
  return BadOp(op, "unknown op kind");
}

Result<OpSpec> InvertOp(const OpSpec& op, const std::vector<Shape>& in) {
  OpSpec inv = op;
  switch (op.kind) {
    case OpKind::kTranspose:
      for (size_t i = 0; i < op.values.size(); ++i)
        inv.values[op.values[i]] = static_cast<int64_t>(i);
      return inv;
    case OpKind::kReshape:
      inv.values = in.at(0);
      return inv;
    case OpKind::kScale:
      inv.factor = op.inverse_factor;
      inv.inverse_factor = op.factor;
      return inv;
    case OpKind::kAdd:
      inv.factor = -op.factor;
      return inv;
    case OpKind::kInterleave:
      inv.kind = OpKind::kDeinterleave;
      return inv;
    case OpKind::kDeinterleave:
      inv.kind = OpKind::kInterleave;
      return inv;
    case OpKind::kPad:
      inv.kind = OpKind::kTruncate;
      inv.size = in.at(0).at(op.axis);
      return inv;
    case OpKind::kTruncate:
      inv.kind = OpKind::kPad;
      inv.size = in.at(0).at(op.axis);
      return inv;
    case OpKind::kConcat:
      inv.kind = OpKind::kSplit;
      inv.values.clear();
      for (const Shape& s : in) inv.values.push_back(s.at(op.axis));
      return inv;
    case OpKind::kSplit:
      inv.kind = OpKind::kConcat;
      inv.values.clear();
      return inv;
    case OpKind::kCustom:
      break;
  }
  return Unsupported(OpName(op) + " has no inverse");
}

Result<Chain> ResolveChain(const std::vector<OpSpec>& ops, const std::vector<Shape>& inputs) {
  Chain chain;
  chain.inputs = inputs;
  if (inputs.empty()) return InvalidArgument("a rule needs at least one input");
  std::vector<Shape> current = inputs;
  for (size_t i = 0; i < ops.size(); ++i) {
    const OpSpec& op = ops[i];
    if ((op.kind == OpKind::kConcat || op.kind == OpKind::kCustom) && i != 0) {
      return InvalidArgument(OpName(op) + " may only be the first op of a rule");
    }
    if (op.kind == OpKind::kSplit && i + 1 != ops.size()) {
      return InvalidArgument(OpName(op) + " may only be the last op of a rule");
    }
    if (current.size() > 1 && op.kind != OpKind::kConcat && op.kind != OpKind::kCustom) {
      return InvalidArgument("the rule has " + std::to_string(current.size()) +
                             " inputs, so its first op must be concat or custom, not " +
                             OpName(op));
    }
    CKB_ASSIGN_OR_RETURN(std::vector<Shape> next, InferShapes(op, current));
    chain.steps.push_back({op, current, next});
    current = std::move(next);
  }
  if (ops.empty() && inputs.size() != 1) {
    return InvalidArgument("the rule has " + std::to_string(inputs.size()) +
                           " inputs but no op that joins them");
  }
  chain.outputs = current;
  return chain;
}

Result<Chain> InvertChain(const Chain& chain) {
  std::vector<OpSpec> ops;
  for (auto it = chain.steps.rbegin(); it != chain.steps.rend(); ++it) {
    CKB_ASSIGN_OR_RETURN(OpSpec inv, InvertOp(it->op, it->in));
    ops.push_back(std::move(inv));
  }
  return ResolveChain(ops, chain.outputs);
}

namespace {

// Merges input axes that stay next to each other, in order, in the output
// (a [N, D, E] -> [E, N, D] transpose is a [N*D, E] -> [E, N*D] one), and
// drops axes of size 1. Returns the merged input shape and permutation.
void CoalesceAxes(const Shape& shape, const std::vector<int64_t>& perm, Shape& merged_shape,
                  std::vector<int64_t>& merged_perm) {
  std::vector<int64_t> kept;  // output order, input axes of size > 1
  for (int64_t axis : perm) {
    if (shape[axis] != 1) kept.push_back(axis);
  }
  // Runs of consecutive input axes in output order.
  std::vector<std::pair<int64_t, int64_t>> runs;  // (first input axis, last)
  for (int64_t axis : kept) {
    // Extend the current run when only axes of size 1 lie between.
    bool extends = !runs.empty() && runs.back().second < axis;
    for (int64_t k = extends ? runs.back().second + 1 : axis; k < axis; ++k) {
      extends &= shape[k] == 1;
    }
    if (extends) {
      runs.back().second = axis;
    } else {
      runs.emplace_back(axis, axis);
    }
  }
  // Number the runs by their position in the input.
  std::vector<size_t> by_input(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) by_input[i] = i;
  std::sort(by_input.begin(), by_input.end(),
            [&](size_t a, size_t b) { return runs[a].first < runs[b].first; });
  merged_shape.assign(runs.size(), 1);
  merged_perm.assign(runs.size(), 0);
  for (size_t pos = 0; pos < by_input.size(); ++pos) {
    const auto [first, last] = runs[by_input[pos]];
    for (int64_t k = first; k <= last; ++k) merged_shape[pos] *= shape[k];
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    merged_perm[i] = std::find(by_input.begin(), by_input.end(), i) - by_input.begin();
  }
}

constexpr int64_t kTile = 32;

// Transposes a rows x cols block: dst[c * dst_stride + r] = src[r * src_stride
// + c]. Scalar; the SIMD blocks below handle the full 8x8 (16-bit) and 4x4
// (32-bit) squares and leave the edges to this.
template <typename T>
void TransposeBlockScalar(const T* src, int64_t src_stride, T* dst, int64_t dst_stride,
                          int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[c * dst_stride + r] = src[r * src_stride + c];
  }
}

#if defined(__SSE2__)
// 8x8 16-bit elements (bf16/f16 as stored) in three rounds of unpacks: pairs,
// quads, halves. 8 loads, 24 shuffles, 8 stores for 128 bytes, where the
// scalar loop makes 64 strided stores.
inline void Transpose8x8x16(const uint16_t* src, int64_t src_stride, uint16_t* dst,
                            int64_t dst_stride) {
  __m128i r[8];
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * src_stride));
  }
  const __m128i t0 = _mm_unpacklo_epi16(r[0], r[1]), t1 = _mm_unpackhi_epi16(r[0], r[1]);
  const __m128i t2 = _mm_unpacklo_epi16(r[2], r[3]), t3 = _mm_unpackhi_epi16(r[2], r[3]);
  const __m128i t4 = _mm_unpacklo_epi16(r[4], r[5]), t5 = _mm_unpackhi_epi16(r[4], r[5]);
  const __m128i t6 = _mm_unpacklo_epi16(r[6], r[7]), t7 = _mm_unpackhi_epi16(r[6], r[7]);
  const __m128i u0 = _mm_unpacklo_epi32(t0, t2), u1 = _mm_unpackhi_epi32(t0, t2);
  const __m128i u2 = _mm_unpacklo_epi32(t1, t3), u3 = _mm_unpackhi_epi32(t1, t3);
  const __m128i u4 = _mm_unpacklo_epi32(t4, t6), u5 = _mm_unpackhi_epi32(t4, t6);
  const __m128i u6 = _mm_unpacklo_epi32(t5, t7), u7 = _mm_unpackhi_epi32(t5, t7);
  const __m128i o[8] = {_mm_unpacklo_epi64(u0, u4), _mm_unpackhi_epi64(u0, u4),
                        _mm_unpacklo_epi64(u1, u5), _mm_unpackhi_epi64(u1, u5),
                        _mm_unpacklo_epi64(u2, u6), _mm_unpackhi_epi64(u2, u6),
                        _mm_unpacklo_epi64(u3, u7), _mm_unpackhi_epi64(u3, u7)};
  for (int i = 0; i < 8; ++i) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i * dst_stride), o[i]);
  }
}

// 4x4 32-bit elements (f32, or raw 32-bit words), the classic SSE shuffle.
inline void Transpose4x4x32(const void* src_v, int64_t src_stride, void* dst_v,
                            int64_t dst_stride) {
  const auto* src = static_cast<const float*>(src_v);
  auto* dst = static_cast<float*>(dst_v);
  __m128 r0 = _mm_loadu_ps(src), r1 = _mm_loadu_ps(src + src_stride);
  __m128 r2 = _mm_loadu_ps(src + 2 * src_stride), r3 = _mm_loadu_ps(src + 3 * src_stride);
  _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
  _mm_storeu_ps(dst, r0);
  _mm_storeu_ps(dst + dst_stride, r1);
  _mm_storeu_ps(dst + 2 * dst_stride, r2);
  _mm_storeu_ps(dst + 3 * dst_stride, r3);
}
#endif

// One tile of the plane transpose: whole SIMD squares where they fit, the
// scalar loop for the ragged right and bottom edges.
template <typename T>
void TransposeBlock(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                    int64_t cols) {
#if defined(__SSE2__)
  constexpr int64_t kSquare = sizeof(T) == 2 ? 8 : sizeof(T) == 4 ? 4 : 0;
  if constexpr (kSquare != 0) {
    const int64_t full_rows = rows / kSquare * kSquare, full_cols = cols / kSquare * kSquare;
    for (int64_t r = 0; r < full_rows; r += kSquare) {
      for (int64_t c = 0; c < full_cols; c += kSquare) {
        if constexpr (sizeof(T) == 2) {
          Transpose8x8x16(reinterpret_cast<const uint16_t*>(src + r * src_stride + c), src_stride,
                          reinterpret_cast<uint16_t*>(dst + c * dst_stride + r), dst_stride);
        } else {
          Transpose4x4x32(src + r * src_stride + c, src_stride, dst + c * dst_stride + r,
                          dst_stride);
        }
      }
    }
    if (full_cols < cols) {
      TransposeBlockScalar(src + full_cols, src_stride, dst + full_cols * dst_stride, dst_stride,
                           full_rows, cols - full_cols);
    }
    if (full_rows < rows) {
      TransposeBlockScalar(src + full_rows * src_stride, src_stride, dst + full_rows, dst_stride,
                           rows - full_rows, cols);
    }
    return;
  }
#endif
  TransposeBlockScalar(src, src_stride, dst, dst_stride, rows, cols);
}

// A whole kTile x kTile tile, through a small buffer. Rows of real weights
// are often a power of two apart (4096 bf16 = 8 KiB), so a tile's 32 source
// rows, and its 32 destination rows, fall into the same few cache sets and
// evict each other before every 16-byte piece of their lines is used: the
// 4096 x 4096 bf16 transpose ran at 0.66 GB/s. Copying the tile's rows into
// the buffer first reads each source line once, whole; transposing out of
// the buffer one band of destination rows at a time writes each destination
// line whole before the next.
template <typename T>
void TransposeFullTile(const T* src, int64_t src_stride, T* dst, int64_t dst_stride) {
  alignas(64) T tile[kTile * kTile];
  for (int64_t r = 0; r < kTile; ++r) {
    std::memcpy(tile + r * kTile, src + r * src_stride, kTile * sizeof(T));
  }
  constexpr int64_t kBand = sizeof(T) == 2 ? 8 : 4;  // the SIMD square
  for (int64_t c = 0; c < kTile; c += kBand) {
    TransposeBlock(tile + c, kTile, dst + c * dst_stride, dst_stride, kTile, kBand);
  }
}

}  // namespace

namespace {

// Transposes `shape`-shaped elements of type T from `src` into `dst` (which
// holds as many). One kernel for f32 tensors and for raw 16- and 32-bit
// elements moved without a cast (TransposeElements).
template <typename T>
void TransposeKernel(const T* src, const Shape& in_shape, const std::vector<int64_t>& perm,
                     T* dst) {
  const int64_t total = NumElementsUnchecked(in_shape);
  if (total == 0) return;
  Shape shape;
  std::vector<int64_t> p;
  CoalesceAxes(in_shape, perm, shape, p);
  const size_t rank = shape.size();
  bool identity = true;
  for (size_t i = 0; i < rank; ++i) identity &= p[i] == static_cast<int64_t>(i);
  if (identity) {
    std::copy(src, src + total, dst);
    return;
  }

  // Strides of each input axis in the input and in the output.
  const std::vector<int64_t> in_strides = RowMajorStrides(shape);
  Shape merged_out(rank);
  for (size_t i = 0; i < rank; ++i) merged_out[i] = shape[p[i]];
  const std::vector<int64_t> out_by_pos = RowMajorStrides(merged_out);
  std::vector<int64_t> out_strides(rank);
  for (size_t i = 0; i < rank; ++i) out_strides[p[i]] = out_by_pos[i];

  const size_t inner = rank - 1;  // input innermost axis (input stride 1)
  if (p.back() == static_cast<int64_t>(inner)) {
    // The innermost axis stays innermost: copy whole rows, walking the
    // output in order.
    const int64_t row = shape[inner];
    std::vector<int64_t> index(rank, 0);
    int64_t offset = 0;
    for (int64_t o = 0; o < total; o += row) {
      std::copy(src + offset, src + offset + row, dst + o);
      for (int64_t d = static_cast<int64_t>(rank) - 2; d >= 0; --d) {
        const int64_t axis = p[d];
        offset += in_strides[axis];
        if (++index[d] < merged_out[d]) break;
        offset -= in_strides[axis] * merged_out[d];
        index[d] = 0;
      }
    }
    return;
  }

  // Otherwise two axes matter for the cache: the input's innermost (`inner`)
  // and the output's innermost (`outer` = p.back()). For every index of the
  // other axes, transpose the (outer, inner) plane in 32x32 tiles so that
  // both the reads and the writes stay within a few cache lines.
  const size_t outer = static_cast<size_t>(p.back());
  const int64_t n_outer = shape[outer], n_inner = shape[inner];
  const int64_t in_outer = in_strides[outer], out_inner = out_strides[inner];
  std::vector<size_t> rest;
  for (size_t k = 0; k < rank; ++k) {
    if (k != outer && k != inner) rest.push_back(k);
  }
  std::vector<int64_t> index(rest.size(), 0);
  int64_t in_base = 0, out_base = 0;
  for (;;) {
    for (int64_t a0 = 0; a0 < n_outer; a0 += kTile) {
      const int64_t a1 = std::min(n_outer, a0 + kTile);
      for (int64_t z0 = 0; z0 < n_inner; z0 += kTile) {
        const int64_t z1 = std::min(n_inner, z0 + kTile);
        if (a1 - a0 == kTile && z1 - z0 == kTile) {
          TransposeFullTile(src + in_base + a0 * in_outer + z0, in_outer,
                            dst + out_base + z0 * out_inner + a0, out_inner);
        } else {
          TransposeBlock(src + in_base + a0 * in_outer + z0, in_outer,
                         dst + out_base + z0 * out_inner + a0, out_inner, a1 - a0, z1 - z0);
        }
      }
    }
    size_t k = rest.size();
    for (;;) {
      if (k == 0) return;
      --k;
      const size_t axis = rest[k];
      in_base += in_strides[axis];
      out_base += out_strides[axis];
      if (++index[k] < shape[axis]) break;
      in_base -= in_strides[axis] * shape[axis];
      out_base -= out_strides[axis] * shape[axis];
      index[k] = 0;
    }
  }
}

}  // namespace

Tensor Transpose(const Tensor& in, const std::vector<int64_t>& perm) {
  Tensor out;
  out.shape.resize(in.shape.size());
  for (size_t i = 0; i < in.shape.size(); ++i) out.shape[i] = in.shape[perm[i]];
  out.data.resize(in.data.size());
  TransposeKernel(in.data.data(), in.shape, perm, out.data.data());
  return out;
}

bool IsLayoutOnly(const Chain& chain) {
  if (chain.inputs.size() != 1 || chain.outputs.size() != 1) return false;
  for (const ChainStep& step : chain.steps) {
    if (step.op.kind != OpKind::kTranspose && step.op.kind != OpKind::kReshape) return false;
  }
  return true;
}

namespace {

Status CheckLayoutChain(const Chain& chain, size_t element_size, size_t bytes) {
  if (!IsLayoutOnly(chain)) return Internal("not a chain of transposes and reshapes");
  if (element_size != 2 && element_size != 4) {
    return Internal("layout chains move 2- or 4-byte elements, not " +
                    std::to_string(element_size));
  }
  const auto n = static_cast<size_t>(NumElementsUnchecked(chain.inputs[0]));
  if (bytes != n * element_size) {
    return Internal("layout chain: " + std::to_string(bytes) + " bytes for " + std::to_string(n) +
                    " elements of " + std::to_string(element_size));
  }
  return Status::Ok();
}

size_t CountTransposes(const Chain& chain) {
  return static_cast<size_t>(
      std::count_if(chain.steps.begin(), chain.steps.end(),
                    [](const ChainStep& step) { return step.op.kind == OpKind::kTranspose; }));
}

void TransposeElements(const ChainStep& step, size_t element_size, const char* src, char* dst) {
  if (element_size == 2) {
    TransposeKernel(reinterpret_cast<const uint16_t*>(src), step.in[0], step.op.values,
                    reinterpret_cast<uint16_t*>(dst));
  } else {
    TransposeKernel(reinterpret_cast<const uint32_t*>(src), step.in[0], step.op.values,
                    reinterpret_cast<uint32_t*>(dst));
  }
}

}  // namespace

Status RunLayoutChain(const Chain& chain, size_t element_size, ScratchBuffer& bytes) {
  CKB_RETURN_IF_ERROR(CheckLayoutChain(chain, element_size, bytes.size()));
  if (CountTransposes(chain) == 0) return Status::Ok();  // reshapes move nothing
  ScratchBuffer out;
  CKB_RETURN_IF_ERROR(RunLayoutChain(chain, element_size, bytes.view(), out));
  bytes.swap(out);
  return Status::Ok();
}

Status RunLayoutChain(const Chain& chain, size_t element_size, std::string_view in,
                      ScratchBuffer& out) {
  CKB_RETURN_IF_ERROR(CheckLayoutChain(chain, element_size, in.size()));
  size_t left = CountTransposes(chain);
  out.Resize(in.size());
  if (left == 0) {
    if (!in.empty()) std::memcpy(out.data(), in.data(), in.size());
    return Status::Ok();
  }
  // Each transpose reads the previous result and writes the other buffer;
  // the last one ends in `out`.
  ScratchBuffer scratch;
  const char* src = in.data();
  for (const ChainStep& step : chain.steps) {
    if (step.op.kind != OpKind::kTranspose) continue;  // a reshape moves nothing
    --left;
    ScratchBuffer& dst = src == out.data() ? scratch : out;
    dst.Resize(in.size());
    TransposeElements(step, element_size, src, dst.data());
    src = dst.data();
    if (left == 0 && &dst == &scratch) out.swap(scratch);
  }
  return Status::Ok();
}

void Scale(Tensor& t, float factor) {
  for (float& x : t.data) x *= factor;
}

void AddConstant(Tensor& t, float constant) {
  for (float& x : t.data) x += constant;
}

namespace {

// out[o][k][:] = in[o][source(k)][:] along `axis`, where the output axis has
// `out_n` entries and source(k) < 0 means zeros.
template <typename SourceFn>
Tensor GatherAxis(const Tensor& in, int axis, int64_t out_n, SourceFn source) {
  const AxisView v = ViewAround(in.shape, axis);
  Tensor out;
  out.shape = in.shape;
  out.shape[axis] = out_n;
  out.data.assign(static_cast<size_t>(v.outer * out_n * v.inner), 0.0f);
  for (int64_t o = 0; o < v.outer; ++o) {
    for (int64_t k = 0; k < out_n; ++k) {
      const int64_t s = source(k);
      if (s < 0) continue;
      std::memcpy(out.data.data() + (o * out_n + k) * v.inner,
                  in.data.data() + (o * v.n + s) * v.inner, sizeof(float) * v.inner);
    }
  }
  return out;
}

}  // namespace

Tensor Interleave(const Tensor& in, int axis) {
  const int64_t n = in.shape[axis], half = n / 2;
  // out[2j] = in[j], out[2j+1] = in[j + n/2]
  return GatherAxis(in, axis, n, [half](int64_t k) { return (k % 2) ? half + k / 2 : k / 2; });
}

Tensor Deinterleave(const Tensor& in, int axis) {
  const int64_t n = in.shape[axis], half = n / 2;
  // out[j] = in[2j], out[j + n/2] = in[2j+1]
  return GatherAxis(in, axis, n,
                    [half](int64_t k) { return k < half ? 2 * k : 2 * (k - half) + 1; });
}

Tensor Resize(const Tensor& in, int axis, int64_t size) {
  const int64_t n = in.shape[axis];
  return GatherAxis(in, axis, size, [n](int64_t k) { return k < n ? k : -1; });
}

Tensor Concat(const std::vector<Tensor>& in, int axis) {
  Tensor out;
  out.shape = in.at(0).shape;
  out.shape[axis] = 0;
  for (const Tensor& t : in) out.shape[axis] += t.shape[axis];
  const AxisView v = ViewAround(out.shape, axis);
  out.data.resize(static_cast<size_t>(v.outer * v.n * v.inner));
  for (int64_t o = 0; o < v.outer; ++o) {
    float* dst = out.data.data() + o * v.n * v.inner;
    for (const Tensor& t : in) {
      const int64_t block = t.shape[axis] * v.inner;
      std::memcpy(dst, t.data.data() + o * block, sizeof(float) * block);
      dst += block;
    }
  }
  return out;
}

std::vector<Tensor> Split(const Tensor& in, int axis, const std::vector<int64_t>& sizes) {
  const AxisView v = ViewAround(in.shape, axis);
  std::vector<Tensor> outs;
  int64_t start = 0;
  for (int64_t piece : sizes) {
    Tensor t;
    t.shape = in.shape;
    t.shape[axis] = piece;
    t.data.resize(static_cast<size_t>(v.outer * piece * v.inner));
    for (int64_t o = 0; o < v.outer; ++o) {
      std::memcpy(t.data.data() + o * piece * v.inner, in.data.data() + (o * v.n + start) * v.inner,
                  sizeof(float) * piece * v.inner);
    }
    start += piece;
    outs.push_back(std::move(t));
  }
  return outs;
}

Result<std::vector<Tensor>> RunChain(const Chain& chain, std::vector<Tensor> tensors,
                                     size_t first_step) {
  for (size_t i = first_step; i < chain.steps.size(); ++i) {
    const ChainStep& step = chain.steps[i];
    const OpSpec& op = step.op;
    if (tensors.size() != step.in.size()) {
      return Internal(OpName(op) + ": expected " + std::to_string(step.in.size()) +
                      " inputs, got " + std::to_string(tensors.size()));
    }
    for (size_t k = 0; k < tensors.size(); ++k) {
      if (tensors[k].shape != step.in[k]) {
        return Internal(OpName(op) + ": input " + ShapeString(tensors[k].shape) +
                        " does not match the planned " + ShapeString(step.in[k]));
      }
    }
    switch (op.kind) {
      case OpKind::kTranspose:
        tensors[0] = Transpose(tensors[0], op.values);
        break;
      case OpKind::kReshape:
        tensors[0].shape = op.values;
        break;
      case OpKind::kScale:
        Scale(tensors[0], op.factor);
        break;
      case OpKind::kAdd:
        AddConstant(tensors[0], op.factor);
        break;
      case OpKind::kInterleave:
        tensors[0] = Interleave(tensors[0], op.axis);
        break;
      case OpKind::kDeinterleave:
        tensors[0] = Deinterleave(tensors[0], op.axis);
        break;
      case OpKind::kPad:
      case OpKind::kTruncate:
        tensors[0] = Resize(tensors[0], op.axis, op.size);
        break;
      case OpKind::kConcat: {
        Tensor joined = Concat(tensors, op.axis);
        tensors.clear();
        tensors.push_back(std::move(joined));
        break;
      }
      case OpKind::kSplit:
        tensors = Split(tensors[0], op.axis, op.values);
        break;
      case OpKind::kCustom:
        return Internal("custom ops run in the executor, not in RunChain");
    }
  }
  return tensors;
}

}  // namespace ckptbridge::engine
