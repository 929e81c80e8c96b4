// host/check/fingerprint.h - axis fingerprints: cheap per-axis statistics
// that catch a wrong mapping even when the round trip is symmetric.
//
// Comparing values through the rules' own inverse catches corruption, but
// not a rule that is wrong in both directions: a square matrix that should
// have been transposed, a head order permuted on import and un-permuted on
// export, a fused gate/up tensor cut into the wrong halves, an FP8 weight
// whose block scales were never applied (peers.md §4.2). Those all come back
// bit-exact.
//
// A fingerprint does not use the rule's ops. Every axis of a tensor gets an
// energy profile: profile[i] = sum of x^2 over all elements whose index along
// that axis is i. The rule declares what each axis means (embed, vocab,
// heads, head_dim, mlp, experts, fused); an axis that means the same thing on
// both sides must carry the same profile, up to the square of the declared
// Scale factors:
//
//   embed, vocab, mlp,        compared index by index (vocab and mlp as a
//   experts, heads, kv_heads  prefix when one side is padded)
//   head_dim                  compared as a sorted list: RoPE layouts permute
//                             within a head on purpose
//   fused (HF q_proj rows)    cut into heads x head_dim when the other side
//                             has those axes: per-head energy in order
//
// Where a rule splits one HF axis into several outputs (or joins several
// inputs), the non-split axes are compared as sums over the pieces and the
// split axis piece by piece. A fused gate/up tensor is also checked by role:
// MaxText's wi_0 is the gate projection and wi_1 the up projection, and
// the piece each holds must come from the HF gate half (first half, or even
// rows) or up half.
#ifndef CKPTBRIDGE_HOST_CHECK_FINGERPRINT_H_
#define CKPTBRIDGE_HOST_CHECK_FINGERPRINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "host/base/shape.h"
#include "host/engine/ops.h"

namespace ckptbridge::check {

// The energy profile of every axis of one tensor.
struct AxisProfiles {
  Shape shape;
  std::vector<std::vector<double>> per_axis;  // per_axis[a].size() == shape[a]
  double total = 0;                           // sum of x^2 over finite elements
};
AxisProfiles ComputeProfiles(const engine::Tensor& tensor);

// One side of a rule's slice: a tensor, what its axes mean (CKB_AXIS_*,
// empty when the rule declares nothing) and its profiles.
struct FingerprintTensor {
  std::string name;
  std::vector<int32_t> axes;
  AxisProfiles profiles;
};

// A fingerprint that does not match: the tensor and axis it is about.
struct FingerprintFinding {
  std::string tensor;   // the MaxText tensor
  int axis = -1;        // its axis (of the slice, without stacked axes)
  std::string meaning;  // "embed", "heads", ...
  std::string message;  // the whole sentence, naming both sides
};

// "embed", "heads", ...
std::string AxisMeaningName(int32_t meaning);

// Compares the HF side of one slice (`hf`, true values: dequantized where
// the source is quantized) with the MaxText side (`mt`) of the same slice.
// `scale` is the product of the rule's Scale factors (MaxText = HF * scale).
// `relative_tolerance` bounds |a - b| / max(|a|, |b|) per profile entry.
std::vector<FingerprintFinding> CompareFingerprints(const std::vector<FingerprintTensor>& hf,
                                                    const std::vector<FingerprintTensor>& mt,
                                                    double scale, double relative_tolerance);

}  // namespace ckptbridge::check

#endif  // CKPTBRIDGE_HOST_CHECK_FINGERPRINT_H_
