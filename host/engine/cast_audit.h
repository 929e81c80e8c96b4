// host/engine/cast_audit.h - what rounding to a narrower dtype did to the values.
//
// The engine works in f32 and rounds once, when it writes (numeric.h). Where
// the output dtype is narrower than f32 (bfloat16, float16) that rounding
// loses precision, and a finite value beyond the dtype's range becomes +-Inf:
// a model that loads and produces garbage. CastFromF32() does the rounding and
// measures it in the same pass, four lanes at a time, so that the audited
// cast runs as fast as numeric.h's plain one (bench/kernels_bench.cc:
// BM_F32ToBf16Audited against BM_F32ToBf16Plain, and the F16 pair).
//
// Per output tensor, CastAudit keeps (every slice of it merged):
//   elements        values rounded
//   max_abs_error   max |rounded - value| over finite values that stayed finite
//   max_rel_error   the same divided by |value|, over nonzero finite values
//                   (a value flushed to zero counts as relative error 1)
//   overflows       finite values that became +-Inf, with the largest magnitude
//   nans            NaN values (NaN stays NaN: reported, never an error)
//   underflows      nonzero finite values that became zero
//
// Policy: an overflow is an error (StatusCode::kInvalidArgument, exit 2)
// naming the tensor, the count, the largest magnitude and the dtype, unless
// the caller allows lossy casts; then Inf is written and reported.
//
// Thread safety: CastAudit::Record may be called from any thread; the units
// of one tensor (its layers, its experts) record concurrently.
#ifndef CKPTBRIDGE_HOST_ENGINE_CAST_AUDIT_H_
#define CKPTBRIDGE_HOST_ENGINE_CAST_AUDIT_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "host/base/dtype.h"
#include "host/base/status.h"

namespace ckptbridge::engine {

// The measurements of one or more narrowing casts into one dtype.
struct CastStats {
  uint64_t elements = 0;
  double max_abs_error = 0;
  double max_rel_error = 0;
  uint64_t overflows = 0;
  double max_overflow_magnitude = 0;  // largest |value| that became Inf
  uint64_t nans = 0;
  uint64_t underflows = 0;

  void Merge(const CastStats& other);
  bool exact() const { return max_abs_error == 0 && overflows == 0 && underflows == 0; }
};

// True when rounding f32 into `dtype` can lose information (bfloat16,
// float16): the casts CastFromF32 measures.
bool NarrowsF32(DType dtype);

// Rounds `n` f32 values into `dtype` at `dst` exactly as FromF32 does
// (numeric.h) and, when NarrowsF32(dtype), adds what the rounding did to
// `stats`. Other dtypes (float32, float64) are copied or widened without a
// measurement. Errors: a dtype FromF32 cannot write (Unsupported).
Status CastFromF32(DType dtype, const float* src, void* dst, size_t n, CastStats& stats);

// The statistics of one output tensor.
struct TensorCast {
  std::string name;
  DType dtype = DType::kInvalid;  // the output dtype
  CastStats stats;
};

// The audit of one run: per output tensor, every narrowing cast merged.
class CastAudit {
 public:
  explicit CastAudit(bool allow_overflow = false) : allow_overflow_(allow_overflow) {}

  // Merges the measurement of one slice of tensor `name` (written as
  // `dtype`). Returns the overflow error described above when this slice
  // overflowed, unless overflows are allowed; its count is what the tensor's
  // slices recorded so far (the run stops at the first error).
  Status Record(const std::string& name, DType dtype, const CastStats& slice);

  // The tensors that were narrowed, in the order they were first recorded.
  std::vector<TensorCast> Tensors() const;

  bool allow_overflow() const { return allow_overflow_; }

 private:
  const bool allow_overflow_;
  mutable std::mutex mutex_;
  std::vector<TensorCast> tensors_;
  std::map<std::string, size_t> index_;
};

// What a whole audit says, for a one-line summary.
struct CastAuditSummary {
  size_t tensors = 0;  // tensors rounded to a narrower dtype
  size_t inexact = 0;  // of which some value changed
  double worst_rel_error = 0;
  std::string worst_tensor;  // where worst_rel_error was seen ("" if all exact)
  uint64_t overflows = 0;
  uint64_t nans = 0;
  uint64_t underflows = 0;
};
CastAuditSummary Summarize(const std::vector<TensorCast>& tensors);

// "cast audit: 290 tensors rounded to a narrower dtype (12 inexact), worst
// max relative error 3.9e-03 in 'x'; 0 overflows to Inf, 0 NaN, 0 flushed
// to zero".
std::string SummaryLine(const CastAuditSummary& summary);

// The full table as JSON: {"allow_lossy", "summary": {...}, "tensors":
// [{"name", "dtype", "elements", "max_abs_error", "max_rel_error",
// "overflows", "max_overflow_magnitude", "nans", "underflows"}, ...]}.
nlohmann::json CastAuditJson(const std::vector<TensorCast>& tensors, bool allow_lossy);

}  // namespace ckptbridge::engine

#endif  // CKPTBRIDGE_HOST_ENGINE_CAST_AUDIT_H_
