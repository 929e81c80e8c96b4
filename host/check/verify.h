// host/check/verify.h - checking a conversion against its source.
//
// Verify() re-reads a converted checkpoint and compares it with the
// checkpoint it came from, tensor by tensor, without trusting anything the
// converter kept in memory:
//
//   HF -> MaxText    the plan is rebuilt from the HF source (same plugin,
//                    same rules, the scan layout the output records); each
//                    MaxText slice is read back, mapped through the inverse
//                    ops to HF layout and compared with the HF tensor.
//   MaxText -> HF    the plan is rebuilt from the Orbax source; each HF
//                    output tensor is read back, mapped through the forward
//                    ops to MaxText layout and compared with the MaxText
//                    slice.
//
// Rules whose ops cannot be inverted (plugin transforms such as FP8 or MXFP4
// dequantization), rules declared lossy and, to MaxText, rules with
// arithmetic (scale, add: the output is where their one rounding happened)
// are compared the other way round: the source is mapped forward and
// compared with the stored output.
//
// Work goes slice by slice (one layer, one expert) on `threads` threads
// within a memory budget, as in conversion: memory is bounded by the budget
// (or the largest slice, which runs alone), never by the model.
//
// Exactness: a path is lossless when it only moves values (no Scale/Add, no
// plugin transform) and the output dtype holds every value of the source
// dtype (bf16 -> bf16, bf16 -> f32, f16 -> f32). Lossless tensors must match
// bit for bit. Other tensors went through one rounding to the narrower of the
// two dtypes; they must be within 1 ULP of it (`max_ulp` reports the largest
// distance seen). Either way NaN must meet NaN.
//
// On top of the values, every slice's axis fingerprints (fingerprint.h) are
// compared, catching mappings that are wrong in both directions.
#ifndef CKPTBRIDGE_HOST_CHECK_VERIFY_H_
#define CKPTBRIDGE_HOST_CHECK_VERIFY_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "host/base/dtype.h"
#include "host/base/status.h"
#include "host/check/fingerprint.h"
#include "host/engine/convert.h"
#include "host/engine/execute.h"
#include "host/plugin/loader.h"

namespace ckptbridge::check {

struct VerifyOptions {
  std::filesystem::path source;
  std::filesystem::path destination;
  // As for convert: the plugin and, for an Orbax source that ckptbridge did
  // not write, the HF config.
  std::string family;
  std::filesystem::path hf_config_file;
  std::string model_name;
  nlohmann::json plugin_options = nlohmann::json::object();
  int threads = 0;
  // Bytes the slices being compared may hold together (0: the engine's
  // default, a quarter of physical memory).
  uint64_t max_memory = 0;
  engine::Progress* progress = nullptr;
  const std::atomic<bool>* cancel = nullptr;
  // Relative tolerance of fingerprint profiles (bf16 rounding moves a
  // profile entry by well under 1%).
  double fingerprint_tolerance = 0.02;
};

// The comparison of one tensor (all its slices).
struct TensorCheck {
  std::string name;       // the tensor compared: HF name (inverse) or MaxText path (forward)
  std::string direction;  // "inverse" or "forward"
  DType source_dtype = DType::kInvalid;
  DType output_dtype = DType::kInvalid;
  DType ulp_dtype = DType::kInvalid;  // the dtype ULPs are counted in
  bool lossless = false;              // expected bit-exact
  uint64_t elements = 0;
  uint64_t differing = 0;   // elements not bit-identical
  uint64_t over_limit = 0;  // elements beyond the allowed ULPs
  uint64_t max_ulp = 0;
  uint64_t allowed_ulp = 0;
  double max_abs_error = 0;
  std::string first_bad;  // "index 12: 0.5 vs 0.25", for the message

  bool exact() const { return differing == 0; }
  bool ok() const { return over_limit == 0; }
};

struct VerifyReport {
  engine::Direction direction = engine::Direction::kToMaxText;  // of the conversion checked
  std::string plugin;                                           // "llama 0.1.0"
  std::string model_type;
  bool scan_layers = true;
  std::vector<TensorCheck> tensors;              // sorted by name
  std::vector<FingerprintFinding> fingerprints;  // failed fingerprints, sorted
  std::vector<std::string> structure;            // missing, extra or misshapen tensors
  std::vector<std::string> notes;                // what was not checked, and why
  uint64_t slices = 0;

  // No value beyond its rounding, no failed fingerprint, no structural gap.
  bool ok() const;
  size_t inexact() const;
};

// Compares `options.destination` with `options.source` (directions detected
// from what each path holds). Errors are for what cannot be compared at all
// (unreadable paths, no plugin); differences are in the report.
Result<VerifyReport> Verify(const VerifyOptions& options, const PluginRegistry& plugins);

// ULP distance between `a` and `b` once both are rounded to `dtype` (BF16,
// F16 or F32): how many representable values lie between them. NaN vs NaN is
// 0, NaN vs a number is UINT64_MAX.
uint64_t UlpDistance(DType dtype, float a, float b);

// Whether every value of `from` is exactly representable in `to`.
bool HoldsExactly(DType to, DType from);

}  // namespace ckptbridge::check

#endif  // CKPTBRIDGE_HOST_CHECK_VERIFY_H_
