#include "host/check/fingerprint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "ckptbridge/plugin_abi.h"

namespace ckptbridge::check {
namespace {

using Profile = std::vector<double>;

// Index of the first axis of `t` meaning `meaning`, or -1.
int FindAxis(const FingerprintTensor& t, int32_t meaning) {
  for (size_t a = 0; a < t.axes.size(); ++a) {
    if (t.axes[a] == meaning) return static_cast<int>(a);
  }
  return -1;
}

Profile Scaled(const Profile& p, double factor) {
  Profile out = p;
  for (double& v : out) v *= factor;
  return out;
}

// The first index where `a` and `b` differ beyond the tolerance, or -1.
// Entries far below the profile's largest one are compared with an absolute
// floor, so that rounding noise on near-zero rows does not count.
int64_t FirstMismatch(const Profile& a, const Profile& b, double tolerance) {
  if (a.size() != b.size()) return 0;
  double peak = 0;
  for (size_t i = 0; i < a.size(); ++i) peak = std::max({peak, std::abs(a[i]), std::abs(b[i])});
  const double floor = peak * tolerance * 1e-3;
  for (size_t i = 0; i < a.size(); ++i) {
    const double limit = tolerance * std::max(std::abs(a[i]), std::abs(b[i])) + floor;
    if (!(std::abs(a[i] - b[i]) <= limit)) return static_cast<int64_t>(i);
  }
  return -1;
}

Profile Sorted(Profile p) {
  std::sort(p.begin(), p.end());
  return p;
}

Profile Window(const Profile& p, size_t offset, size_t size) {
  return Profile(p.begin() + static_cast<std::ptrdiff_t>(offset),
                 p.begin() + static_cast<std::ptrdiff_t>(offset + size));
}

Profile Strided(const Profile& p, size_t start, size_t step) {
  Profile out;
  for (size_t i = start; i < p.size(); i += step) out.push_back(p[i]);
  return out;
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// "entry 3: 1.25 vs 0.5".
std::string Detail(const Profile& mt, const Profile& hf, int64_t at) {
  if (at < 0 || static_cast<size_t>(at) >= mt.size() || static_cast<size_t>(at) >= hf.size()) {
    return "lengths " + std::to_string(mt.size()) + " vs " + std::to_string(hf.size());
  }
  return "index " + std::to_string(at) + " has energy " + Num(mt[at]) + " in MaxText but " +
         Num(hf[at]) + " in HF";
}

// Which projection a tensor name says it is: 'g' gate, 'u' up, 0 neither.
char RoleOfMaxText(const std::string& name) {
  if (name.find("wi_0") != std::string::npos) return 'g';
  if (name.find("wi_1") != std::string::npos) return 'u';
  return 0;
}
char RoleOfHf(const std::string& name) {
  if (name.find("gate_up") != std::string::npos) return 0;  // both: decided by the piece
  if (name.find("gate_proj") != std::string::npos || name.find(".w1.") != std::string::npos) {
    return 'g';
  }
  if (name.find("up_proj") != std::string::npos || name.find(".w3.") != std::string::npos) {
    return 'u';
  }
  return 0;
}
const char* RoleName(char role) { return role == 'g' ? "gate" : "up"; }

class Comparer {
 public:
  Comparer(const std::vector<FingerprintTensor>& hf, const std::vector<FingerprintTensor>& mt,
           double scale, double tolerance)
      : hf_(hf), mt_(mt), factor_(scale * scale), tolerance_(tolerance) {}

  std::vector<FingerprintFinding> Run() {
    if (hf_.empty() || mt_.empty()) return {};
    for (const auto& t : hf_) {
      if (t.axes.size() != t.profiles.shape.size()) return {};
    }
    for (const auto& t : mt_) {
      if (t.axes.size() != t.profiles.shape.size()) return {};
    }
    if (hf_.size() == 1 && mt_.size() == 1) {
      CompareOne(hf_[0], mt_[0]);
      CheckRole(mt_[0], RoleOfHf(hf_[0].name), hf_[0].name);
    } else if (hf_.size() == 1) {
      CompareSplit();
    } else if (mt_.size() == 1) {
      CompareJoin();
    }
    return findings_;
  }

 private:
  void Add(const FingerprintTensor& mt, int axis, const std::string& message) {
    for (const FingerprintFinding& f : findings_) {
      if (f.tensor == mt.name && f.axis == axis) return;  // one finding per axis
    }
    const int32_t meaning = axis >= 0 ? mt.axes[axis] : CKB_AXIS_OTHER;
    findings_.push_back({mt.name, axis, AxisMeaningName(meaning),
                         mt.name + " axis " + std::to_string(axis) + " (" +
                             AxisMeaningName(meaning) + "): " + message});
  }

  void CompareOne(const FingerprintTensor& h, const FingerprintTensor& o) {
    for (size_t b = 0; b < o.axes.size(); ++b) {
      const int32_t m = o.axes[b];
      if (m == CKB_AXIS_OTHER || m == CKB_AXIS_FUSED || m == CKB_AXIS_LAYERS) continue;
      const Profile& actual = o.profiles.per_axis[b];
      const int a = FindAxis(h, m);
      if (a >= 0) {
        Profile expected = Scaled(h.profiles.per_axis[a], factor_);
        Compare(o, static_cast<int>(b), actual, expected, h.name, a, m == CKB_AXIS_HEAD_DIM);
        continue;
      }
      // HF fused rows (heads * head_dim) against MaxText [heads, head_dim].
      const int f = FindAxis(h, CKB_AXIS_FUSED);
      if (f < 0) continue;
      const Profile fused = Scaled(h.profiles.per_axis[f], factor_);
      int heads = FindAxis(o, CKB_AXIS_HEADS);
      if (heads < 0) heads = FindAxis(o, CKB_AXIS_KV_HEADS);
      const int dim = FindAxis(o, CKB_AXIS_HEAD_DIM);
      if (heads >= 0 && dim >= 0) {
        const size_t nh = o.profiles.per_axis[heads].size(), nd = o.profiles.per_axis[dim].size();
        if (nh * nd != fused.size()) continue;
        Profile per_head(nh, 0.0), per_dim(nd, 0.0);
        for (size_t i = 0; i < fused.size(); ++i) {
          per_head[i / nd] += fused[i];
          per_dim[i % nd] += fused[i];
        }
        if (static_cast<int>(b) == heads) {
          Compare(o, heads, actual, per_head, h.name, f, false);
        } else if (static_cast<int>(b) == dim) {
          Compare(o, dim, actual, per_dim, h.name, f, true);
        }
      } else if (fused.size() == actual.size()) {
        Compare(o, static_cast<int>(b), actual, fused, h.name, f, false);
      }
    }
  }

  // Compares profile `actual` of MaxText axis `b` with `expected` (from HF
  // tensor `hf_name` axis `a`). Padded or truncated axes compare their common
  // prefix.
  void Compare(const FingerprintTensor& o, int b, Profile actual, Profile expected,
               const std::string& hf_name, int a, bool as_multiset) {
    if (actual.size() != expected.size()) {
      const int32_t m = o.axes[b];
      if (m != CKB_AXIS_VOCAB && m != CKB_AXIS_MLP && m != CKB_AXIS_EMBED) return;
      const size_t n = std::min(actual.size(), expected.size());
      actual.resize(n);
      expected.resize(n);
    }
    if (as_multiset) {
      actual = Sorted(std::move(actual));
      expected = Sorted(std::move(expected));
    }
    const int64_t at = FirstMismatch(actual, expected, tolerance_);
    if (at < 0) return;
    std::string message = "does not match " + hf_name + " axis " + std::to_string(a) + " (" +
                          Detail(actual, expected, at) + ")";
    if (!as_multiset && Sorted(actual) == Sorted(expected)) {
      message += "; the same values in another order: a permuted axis";
    } else if (!as_multiset && FirstMismatch(Sorted(actual), Sorted(expected), tolerance_) < 0) {
      message += "; the same energies in another order: a permuted axis";
    } else if (actual.size() == expected.size() && ScaleExplains(actual, expected)) {
      message += "; off by a constant factor of " + Num(std::sqrt(Ratio(actual, expected))) +
                 ": a scale that was not applied (or applied twice)?";
    } else if (IsOtherAxis(o, b, hf_name, actual)) {
      message += "; it matches the energy of another HF axis: a transposed matrix?";
    }
    Add(o, b, message);
  }

  static double Ratio(const Profile& a, const Profile& b) {
    double sa = 0, sb = 0;
    for (double v : a) sa += v;
    for (double v : b) sb += v;
    return sb > 0 ? sa / sb : 0;
  }
  bool ScaleExplains(const Profile& a, const Profile& b) const {
    const double r = Ratio(a, b);
    if (!(r > 0) || std::abs(r - 1) < tolerance_) return false;
    return FirstMismatch(a, Scaled(b, r), tolerance_) < 0;
  }
  // Whether `actual` matches some other axis of the HF tensor `hf_name`.
  bool IsOtherAxis(const FingerprintTensor&, int, const std::string& hf_name,
                   const Profile& actual) const {
    for (const FingerprintTensor& h : hf_) {
      if (h.name != hf_name) continue;
      for (const Profile& p : h.profiles.per_axis) {
        if (p.size() == actual.size() && FirstMismatch(actual, Scaled(p, factor_), tolerance_) < 0)
          return true;
      }
    }
    return false;
  }

  // One HF tensor cut into several MaxText outputs.
  void CompareSplit() {
    const FingerprintTensor& h = hf_[0];
    const FingerprintTensor& first = mt_[0];
    for (size_t b = 0; b < first.axes.size(); ++b) {
      const int32_t m = first.axes[b];
      if (m == CKB_AXIS_OTHER || m == CKB_AXIS_FUSED || m == CKB_AXIS_LAYERS) continue;
      int a = FindAxis(h, m);
      if (a < 0) a = FindAxis(h, CKB_AXIS_FUSED);
      if (a < 0) continue;
      const Profile expected = Scaled(h.profiles.per_axis[a], factor_);
      std::vector<const Profile*> pieces;
      size_t total = 0;
      bool same_size = true;
      for (const FingerprintTensor& o : mt_) {
        const int ob = FindAxis(o, m);
        if (ob < 0) return;
        pieces.push_back(&o.profiles.per_axis[ob]);
        total += pieces.back()->size();
        same_size &= pieces.back()->size() == expected.size();
      }
      if (same_size) {
        // Not the split axis: every piece holds part of each index's energy.
        Profile sum(expected.size(), 0.0);
        for (const Profile* p : pieces) {
          for (size_t i = 0; i < sum.size(); ++i) sum[i] += (*p)[i];
        }
        const int64_t at = FirstMismatch(sum, expected, tolerance_);
        if (at >= 0) {
          Add(first, static_cast<int>(b),
              "summed over the " + std::to_string(mt_.size()) + " outputs, does not match " +
                  h.name + " axis " + std::to_string(a) + " (" + Detail(sum, expected, at) + ")");
        }
      } else if (total == expected.size()) {
        ComparePieces(h, a, expected, pieces, m);
      }
    }
  }

  // The split axis: output k must hold piece k of the HF axis, cut in halves
  // (contiguous) or interleaved (strided); then each piece's role.
  void ComparePieces(const FingerprintTensor& h, int a, const Profile& expected,
                     const std::vector<const Profile*>& pieces, int32_t m) {
    const size_t k_count = pieces.size();
    bool equal_pieces = true;
    for (const Profile* p : pieces) equal_pieces &= p->size() == pieces[0]->size();
    std::vector<Profile> halves, strided;
    size_t offset = 0;
    for (const Profile* p : pieces) {
      halves.push_back(Window(expected, offset, p->size()));
      offset += p->size();
    }
    if (equal_pieces) {
      for (size_t k = 0; k < k_count; ++k) strided.push_back(Strided(expected, k, k_count));
    }
    auto all_match = [&](const std::vector<Profile>& layout) {
      if (layout.size() != k_count) return false;
      for (size_t k = 0; k < k_count; ++k) {
        if (FirstMismatch(*pieces[k], layout[k], tolerance_) >= 0) return false;
      }
      return true;
    };
    const bool contiguous = all_match(halves);
    if (!contiguous && !all_match(strided)) {
      for (size_t k = 0; k < k_count; ++k) {
        const FingerprintTensor& o = mt_[k];
        const int ob = FindAxis(o, m);
        std::string message = "does not match its piece " + std::to_string(k) + " of " + h.name +
                              " axis " + std::to_string(a);
        for (size_t j = 0; j < k_count; ++j) {
          if (j != k && FirstMismatch(*pieces[k], halves[j], tolerance_) < 0) {
            message += "; it holds piece " + std::to_string(j) + " instead (swapped halves?)";
          }
        }
        if (FirstMismatch(*pieces[k], halves[k], tolerance_) >= 0) Add(o, ob, message);
      }
      return;
    }
    // Roles: a fused gate/up tensor holds the gate first (or at even rows).
    if (h.name.find("gate_up") != std::string::npos && k_count == 2) {
      for (size_t k = 0; k < 2; ++k) {
        const char role = k == 0 ? 'g' : 'u';
        const std::string where =
            std::string(contiguous ? (k == 0 ? "the first half" : "the second half")
                                   : (k == 0 ? "the even rows" : "the odd rows")) +
            " of " + h.name;
        CheckRole(mt_[k], role, where);
      }
    }
  }

  // Several HF tensors joined into one MaxText output.
  void CompareJoin() {
    const FingerprintTensor& o = mt_[0];
    for (size_t b = 0; b < o.axes.size(); ++b) {
      const int32_t m = o.axes[b];
      if (m == CKB_AXIS_OTHER || m == CKB_AXIS_FUSED || m == CKB_AXIS_LAYERS) continue;
      const Profile& actual = o.profiles.per_axis[b];
      std::vector<Profile> pieces;
      size_t total = 0;
      bool same_size = true;
      for (const FingerprintTensor& h : hf_) {
        int a = FindAxis(h, m);
        if (a < 0) a = FindAxis(h, CKB_AXIS_FUSED);
        if (a < 0) return;
        pieces.push_back(Scaled(h.profiles.per_axis[a], factor_));
        total += pieces.back().size();
        same_size &= pieces.back().size() == actual.size();
      }
      Profile expected;
      if (same_size) {
        expected.assign(actual.size(), 0.0);
        for (const Profile& p : pieces) {
          for (size_t i = 0; i < p.size(); ++i) expected[i] += p[i];
        }
      } else if (total == actual.size()) {
        for (const Profile& p : pieces) expected.insert(expected.end(), p.begin(), p.end());
      } else {
        continue;
      }
      const int64_t at = FirstMismatch(actual, expected, tolerance_);
      if (at >= 0) {
        Add(o, static_cast<int>(b),
            "does not match the " + std::to_string(hf_.size()) + " HF inputs joined in order, " +
                hf_[0].name + " first (" + Detail(actual, expected, at) + ")");
      }
    }
  }

  // A MaxText gate/up tensor must hold the HF projection of its role.
  void CheckRole(const FingerprintTensor& o, char hf_role, const std::string& source) {
    const char mt_role = RoleOfMaxText(o.name);
    if (!hf_role || !mt_role || hf_role == mt_role) return;
    int axis = FindAxis(o, CKB_AXIS_MLP);
    Add(o, axis,
        "holds the " + std::string(RoleName(hf_role)) + " projection (" + source +
            "), but MaxText's " + (mt_role == 'g' ? "wi_0" : "wi_1") + " is the " +
            RoleName(mt_role) + " projection: gate and up are swapped");
  }

  const std::vector<FingerprintTensor>& hf_;
  const std::vector<FingerprintTensor>& mt_;
  double factor_;
  double tolerance_;
  std::vector<FingerprintFinding> findings_;
};

}  // namespace

std::string AxisMeaningName(int32_t meaning) {
  switch (meaning) {
    case CKB_AXIS_EMBED:
      return "embed";
    case CKB_AXIS_VOCAB:
      return "vocab";
    case CKB_AXIS_HEADS:
      return "heads";
    case CKB_AXIS_KV_HEADS:
      return "kv_heads";
    case CKB_AXIS_HEAD_DIM:
      return "head_dim";
    case CKB_AXIS_MLP:
      return "mlp";
    case CKB_AXIS_EXPERTS:
      return "experts";
    case CKB_AXIS_LAYERS:
      return "layers";
    case CKB_AXIS_FUSED:
      return "fused";
    default:
      return "other";
  }
}

AxisProfiles ComputeProfiles(const engine::Tensor& tensor) {
  AxisProfiles p;
  p.shape = tensor.shape;
  const size_t rank = tensor.shape.size();
  p.per_axis.resize(rank);
  for (size_t a = 0; a < rank; ++a) p.per_axis[a].assign(static_cast<size_t>(tensor.shape[a]), 0);
  if (tensor.data.empty()) return p;
  if (rank == 0) {
    const double v = tensor.data[0];
    if (std::isfinite(v)) p.total = v * v;
    return p;
  }
  // Walk rows of the last axis with an odometer over the others: one add per
  // element and axis, no divisions.
  const int64_t inner = tensor.shape[rank - 1];
  std::vector<int64_t> index(rank, 0);
  std::vector<double>& last = p.per_axis[rank - 1];
  for (size_t row = 0; row * static_cast<size_t>(inner) < tensor.data.size(); ++row) {
    const float* x = tensor.data.data() + row * static_cast<size_t>(inner);
    double row_energy = 0;
    for (int64_t j = 0; j < inner; ++j) {
      const double v = x[j];
      if (!std::isfinite(v)) continue;
      const double e = v * v;
      last[static_cast<size_t>(j)] += e;
      row_energy += e;
    }
    p.total += row_energy;
    for (size_t a = 0; a + 1 < rank; ++a)
      p.per_axis[a][static_cast<size_t>(index[a])] += row_energy;
    for (size_t d = rank - 1; d-- > 0;) {
      if (++index[d] < tensor.shape[d]) break;
      index[d] = 0;
    }
  }
  return p;
}

std::vector<FingerprintFinding> CompareFingerprints(const std::vector<FingerprintTensor>& hf,
                                                    const std::vector<FingerprintTensor>& mt,
                                                    double scale, double relative_tolerance) {
  return Comparer(hf, mt, scale, relative_tolerance).Run();
}

}  // namespace ckptbridge::check
