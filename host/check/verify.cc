#include "host/check/verify.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "host/base/file.h"
#include "host/base/numeric.h"
#include "host/check/open.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/safetensors/reader.h"
#include "host/plugin/adapter.h"

namespace ckptbridge::check {
namespace {

namespace fs = std::filesystem;
using engine::Chain;

using engine::Tensor;

int MantissaBits(DType d) {
  switch (d) {
    case DType::kF64:
      return 52;
    case DType::kF32:
      return 23;
    case DType::kF16:
      return 10;
    case DType::kBF16:
      return 7;
    case DType::kF8E4M3:
      return 3;
    case DType::kF8E5M2:
      return 2;
    default:
      return 0;
  }
}

DType Narrower(DType a, DType b) {
  const DType n = MantissaBits(a) <= MantissaBits(b) ? a : b;
  // ULPs are counted in the formats we can round to; 8-bit sources went
  // through a plugin transform, so the output's rounding is what counts.
  if (n == DType::kBF16 || n == DType::kF16 || n == DType::kF32) return n;
  return (a == DType::kBF16 || a == DType::kF16 || a == DType::kF32) && a != n ? a : b;
}

// A signed, monotonic integer for each float of `dtype`.
int64_t Ordered(DType dtype, float v) {
  uint64_t bits;
  int width;
  if (dtype == DType::kBF16) {
    bits = F32ToBf16(v);
    width = 16;
  } else if (dtype == DType::kF16) {
    bits = F32ToF16(v);
    width = 16;
  } else {
    bits = FloatBits(v);
    width = 32;
  }
  const uint64_t sign = uint64_t{1} << (width - 1);
  const int64_t magnitude = static_cast<int64_t>(bits & (sign - 1));
  return (bits & sign) ? -magnitude : magnitude;
}

std::string Text(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

bool HasArithmetic(const Chain& chain) {
  for (const engine::ChainStep& step : chain.steps) {
    if (step.op.kind == OpKind::kScale || step.op.kind == OpKind::kAdd ||
        step.op.kind == OpKind::kCustom) {
      return true;
    }
  }
  return false;
}

bool StartsWithCustom(const Chain& chain) {
  return !chain.steps.empty() && chain.steps[0].op.kind == OpKind::kCustom;
}

// The rule's slice axes of MaxText output `i` (stacked axes removed).
std::vector<int32_t> SliceAxes(const Rule& rule, size_t i) {
  std::vector<int32_t> axes = rule.mt_outputs[i].axis_meanings;
  if (axes.empty()) return axes;
  std::vector<int32_t> stacked;
  for (const StackAxis& s : rule.stack) stacked.push_back(s.mt_axis);
  std::sort(stacked.rbegin(), stacked.rend());
  for (int32_t a : stacked) {
    if (a >= 0 && static_cast<size_t>(a) < axes.size()) axes.erase(axes.begin() + a);
  }
  return axes;
}

// "layer 3, expert 1" for a slice, "" for an unstacked rule.
std::string SliceLabel(const Rule& rule, const std::vector<int64_t>& slice) {
  std::string s;
  for (size_t k = 0; k < rule.stack.size() && k < slice.size(); ++k) {
    const StackAxis& a = rule.stack[k];
    s += (s.empty() ? "" : ", ") +
         std::string(a.meaning == CKB_AXIS_EXPERTS ? "expert " : "layer ") +
         std::to_string(a.hf_start + a.hf_stride * slice[k]);
  }
  return s;
}

// A raw HF tensor of one unit.
struct RawTensor {
  std::string name;
  DType dtype = DType::kInvalid;
  Shape shape;
  const uint8_t* data = nullptr;
  safetensors::TensorBytes bytes;  // holds `data`
};

// The axis meanings of HF input `j` as the ops see it: without the leading
// axis when the rule stacks along it.
std::vector<int32_t> HfSliceAxes(const Rule& rule, size_t j) {
  std::vector<int32_t> axes = rule.hf_inputs[j].axis_meanings;
  for (const StackAxis& s : rule.stack) {
    if (s.hf_leading && !axes.empty()) axes.erase(axes.begin());
  }
  return axes;
}

Result<Tensor> Widen(DType dtype, const void* data, const Shape& shape) {
  Tensor t;
  t.shape = shape;
  t.data.resize(static_cast<size_t>(NumElementsUnchecked(shape)));
  CKB_RETURN_IF_ERROR(ToF32(dtype, data, t.data.data(), t.data.size()));
  return t;
}

// The true values of an FP8 weight with block scales ([R, C] weight and a
// [ceil(R/br), ceil(C/bc)] grid of scale_inv), computed here rather than by
// the plugin, so that a plugin that forgets the scales is caught.
std::optional<Tensor> HostDequantize(const std::vector<RawTensor>& in, const Shape& out_shape) {
  if (in.size() != 2) return std::nullopt;
  const RawTensor& w = in[0];
  const RawTensor& s = in[1];
  if (w.dtype != DType::kF8E4M3 && w.dtype != DType::kF8E5M2) return std::nullopt;
  if (w.shape.size() != 2 || s.shape.size() != 2 || w.shape != out_shape) return std::nullopt;
  if (!IsFloating(s.dtype) || !ReadableAsF32(s.dtype)) return std::nullopt;
  // Every block size b with ceil(n / b) == grid fits the shapes; blocks are
  // powers of two in practice (128 for DeepSeek), with a partial last block,
  // so take the largest power of two that fits, else the smallest size.
  int64_t block[2];
  for (int i = 0; i < 2; ++i) {
    const int64_t n = w.shape[i], grid = s.shape[i];
    if (grid < 1) return std::nullopt;
    const int64_t smallest = (n + grid - 1) / grid;
    if ((n + smallest - 1) / smallest != grid) return std::nullopt;
    block[i] = smallest;
    for (int64_t b = 1; b <= n; b *= 2) {
      if (b >= smallest && (n + b - 1) / b == grid) block[i] = b;
    }
  }
  Result<Tensor> weight = Widen(w.dtype, w.data, w.shape);
  Result<Tensor> scale = Widen(s.dtype, s.data, s.shape);
  if (!weight.ok() || !scale.ok()) return std::nullopt;
  const int64_t rows = w.shape[0], cols = w.shape[1];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      weight->data[r * cols + c] *= scale->data[(r / block[0]) * s.shape[1] + c / block[1]];
    }
  }
  return std::move(*weight);
}

class Verifier {
 public:
  Verifier(const VerifyOptions& options, Opened& opened)
      : options_(options), opened_(opened), plan_(opened.plan) {}

  Result<VerifyReport> Run() {
    VerifyReport report;
    report.direction = plan_.direction;
    report.plugin = opened_.plugin_label;
    report.model_type = opened_.model_type;
    report.scan_layers = opened_.scan;
    CheckStructure(report);

    backward_.resize(plan_.rules.size());
    for (size_t r = 0; r < plan_.rules.size(); ++r) {
      const engine::PlannedRule& rule = plan_.rules[r];
      // Layout-only rules are checked through their inverse. Arithmetic
      // (scale, add) is checked forward, where its one rounding happened: an
      // add of 1 to a tiny value cannot be undone to within an ULP of it.
      if (plan_.direction == engine::Direction::kToMaxText && !HasArithmetic(rule.forward) &&
          !rule.rule.lossy()) {
        Result<Chain> back = engine::InvertChain(rule.forward);
        if (back.ok()) backward_[r] = std::move(*back);
      }
    }

    engine::ExecuteOptions exec;
    exec.threads = options_.threads;
    exec.progress = options_.progress;
    exec.cancel = options_.cancel;
    exec.max_memory = engine::MaxMemoryOrDefault(options_.max_memory);
    // Both sides of a slice are held at once: about twice what converting
    // it takes.
    CKB_RETURN_IF_ERROR(engine::ForEachUnit(
        plan_.units.size(), exec, [&](size_t i) { return plan_.units[i].bytes; },
        [&](size_t i) { return CheckUnit(plan_.units[i]); },
        [&](size_t i) { return 2 * engine::UnitMemory(plan_, plan_.units[i]); }));

    report.slices = plan_.units.size();
    for (auto& [name, check] : checks_) report.tensors.push_back(std::move(check));
    for (auto& [key, finding] : findings_) report.fingerprints.push_back(std::move(finding));
    report.notes.insert(report.notes.end(), notes_.begin(), notes_.end());
    return report;
  }

 private:
  void CheckStructure(VerifyReport& report) {
    for (const std::string& s : opened_.structure) report.structure.push_back(s);
  }

  // Reads the MaxText slices of `unit`, as f32, in the rule's output order.
  Result<std::vector<Tensor>> ReadMaxText(const engine::PlannedRule& rule, const engine::Unit& unit,
                                          std::vector<DType>& dtypes) const {
    std::vector<Tensor> out;
    for (size_t i = 0; i < rule.rule.mt_outputs.size(); ++i) {
      const orbax::ItemReader::ArrayEntry* entry =
          opened_.maxtext.tree.Find(rule.rule.mt_outputs[i].name);
      if (!entry) {
        return NotFound("the MaxText checkpoint has no '" + rule.rule.mt_outputs[i].name + "'");
      }
      const Shape& shape = entry->metadata.shape;
      std::vector<int64_t> origin(shape.size(), 0);
      Shape extent = shape;
      for (size_t k = 0; k < rule.rule.stack.size(); ++k) {
        const int32_t axis = rule.rule.stack[k].mt_axis;
        origin[axis] = unit.slice[k];
        extent[axis] = 1;
      }
      const DType dtype = entry->metadata.dtype;
      std::string bytes(static_cast<size_t>(NumElementsUnchecked(extent)) * DTypeSize(dtype), '\0');
      const std::unique_ptr<orbax::ArrayReader> reader = opened_.maxtext.item->Reader(*entry);
      CKB_RETURN_IF_ERROR(reader->ReadRegion(origin, extent, bytes.data()));
      Result<Tensor> t = Widen(dtype, bytes.data(), rule.mt_slice_shapes[i]);
      if (!t.ok()) return t.status().WithContext(entry->leaf->name());
      out.push_back(std::move(*t));
      dtypes.push_back(dtype);
    }
    return out;
  }

  Result<std::vector<RawTensor>> ReadHfRaw(const engine::Unit& unit) const {
    std::vector<RawTensor> out;
    const bool source = plan_.direction == engine::Direction::kToMaxText;
    for (size_t idx : unit.hf_tensors) {
      const engine::HfTensor& hf = plan_.hf_tensors[idx];
      const std::string& name = source ? hf.source_name : hf.name;
      const safetensors::CheckpointTensor* t = opened_.hf->Find(name);
      if (!t) return NotFound(opened_.hf->path().string() + " has no tensor '" + name + "'");
      // The planned dtype is the output's; the part is cut by the file's.
      engine::HfTensor stored = hf;
      stored.dtype = t->info->dtype;
      const engine::HfPart part = engine::UnitHfPart(stored, unit);
      CKB_ASSIGN_OR_RETURN(safetensors::TensorBytes bytes,
                           t->file->ReadRange(*t->info, part.byte_offset, part.num_bytes));
      RawTensor raw{hf.name, t->info->dtype, part.shape, bytes.data(), std::move(bytes)};
      out.push_back(std::move(raw));
    }
    return out;
  }

  // Whether every tensor of `unit` is present with the planned shape (the
  // structure check reports those that are not).
  bool Complete(const engine::Unit& unit) const {
    const engine::PlannedRule& rule = plan_.rules[unit.rule];
    for (const TensorDecl& out : rule.rule.mt_outputs) {
      const orbax::ItemReader::ArrayEntry* entry = opened_.maxtext.tree.Find(out.name);
      if (!entry || entry->metadata.shape != out.dims) return false;
    }
    const bool source = plan_.direction == engine::Direction::kToMaxText;
    for (size_t idx : unit.hf_tensors) {
      const engine::HfTensor& hf = plan_.hf_tensors[idx];
      const safetensors::CheckpointTensor* t = opened_.hf->Find(source ? hf.source_name : hf.name);
      if (!t || t->info->shape != hf.shape) return false;
    }
    return true;
  }

  Status CheckUnit(const engine::Unit& unit) {
    if (!Complete(unit)) return Status::Ok();
    const engine::PlannedRule& rule = plan_.rules[unit.rule];
    const Rule& r = rule.rule;
    std::vector<DType> mt_dtypes;
    CKB_ASSIGN_OR_RETURN(std::vector<Tensor> mt, ReadMaxText(rule, unit, mt_dtypes));
    CKB_ASSIGN_OR_RETURN(std::vector<RawTensor> raw, ReadHfRaw(unit));
    const bool custom = StartsWithCustom(rule.forward);
    std::vector<Tensor> hf;  // HF values as f32 (empty for custom rules)
    if (!custom) {
      for (const RawTensor& t : raw) {
        Result<Tensor> w = Widen(t.dtype, t.data, t.shape);
        if (!w.ok()) return w.status().WithContext(t.name);
        hf.push_back(std::move(*w));
      }
    }
    const std::string slice = SliceLabel(r, unit.slice);

    // Values.
    if (plan_.direction == engine::Direction::kToMaxText && !backward_[unit.rule].steps.empty()) {
      CKB_ASSIGN_OR_RETURN(std::vector<Tensor> back, engine::RunChain(backward_[unit.rule], mt));
      for (size_t j = 0; j < back.size() && j < hf.size(); ++j) {
        const DType out_dtype = mt_dtypes.empty() ? DType::kInvalid : mt_dtypes[0];
        Record(raw[j].name, "inverse", raw[j].dtype, out_dtype,
               HoldsExactly(out_dtype, raw[j].dtype), hf[j], back[j], slice);
      }
    } else if (plan_.direction == engine::Direction::kToMaxText && rule.forward.steps.empty() &&
               !r.lossy()) {
      // The identity: compare directly.
      Record(raw[0].name, "inverse", raw[0].dtype, mt_dtypes[0],
             HoldsExactly(mt_dtypes[0], raw[0].dtype), hf[0], mt[0], slice);
    } else if (plan_.direction == engine::Direction::kToMaxText) {
      // Plugin transforms and lossy rules: the source mapped forward.
      CKB_ASSIGN_OR_RETURN(std::vector<Tensor> expected, Forward(rule, raw, hf));
      for (size_t i = 0; i < expected.size() && i < mt.size(); ++i) {
        Record(r.mt_outputs[i].name, "forward", raw[0].dtype, mt_dtypes[i], false, expected[i],
               mt[i], slice);
      }
    } else {
      // MaxText -> HF: the HF output mapped forward again, against the source.
      CKB_ASSIGN_OR_RETURN(std::vector<Tensor> again, engine::RunChain(rule.forward, hf));
      const bool arithmetic = HasArithmetic(rule.forward);
      for (size_t i = 0; i < again.size() && i < mt.size(); ++i) {
        const DType out_dtype = raw.empty() ? DType::kInvalid : raw[0].dtype;
        Record(r.mt_outputs[i].name, "forward", mt_dtypes[i], out_dtype,
               !arithmetic && !r.lossy() && HoldsExactly(out_dtype, mt_dtypes[i]), mt[i], again[i],
               slice);
      }
    }

    // Fingerprints.
    bool add = false;
    double scale = 1.0;
    for (const engine::ChainStep& step : rule.forward.steps) {
      if (step.op.kind == OpKind::kScale) scale *= step.op.factor;
      add |= step.op.kind == OpKind::kAdd;
    }
    if (add) {
      Note("fingerprints skipped for rules with add(): an offset changes every energy");
      return Status::Ok();
    }
    std::vector<FingerprintTensor> hf_side, mt_side;
    if (custom) {
      std::optional<Tensor> truth = HostDequantize(raw, rule.forward.steps[0].out.at(0));
      if (!truth) {
        Note("fingerprints skipped for plugin transforms other than FP8 block scaling (" +
             engine::OpName(rule.forward.steps[0].op) + ")");
        return Status::Ok();
      }
      hf_side.push_back({raw[0].name, HfSliceAxes(r, 0), ComputeProfiles(*truth)});
    } else {
      for (size_t j = 0; j < hf.size(); ++j) {
        hf_side.push_back({raw[j].name, HfSliceAxes(r, j), ComputeProfiles(hf[j])});
      }
    }
    for (size_t i = 0; i < mt.size(); ++i) {
      mt_side.push_back({r.mt_outputs[i].name, SliceAxes(r, i), ComputeProfiles(mt[i])});
    }
    for (FingerprintFinding& f :
         CompareFingerprints(hf_side, mt_side, scale, options_.fingerprint_tolerance)) {
      if (!slice.empty()) f.message += " [" + slice + "]";
      std::lock_guard<std::mutex> lock(mutex_);
      findings_.emplace(f.tensor + "#" + std::to_string(f.axis), std::move(f));
    }
    return Status::Ok();
  }

  // The source HF slice mapped forward, plugin transform included.
  Result<std::vector<Tensor>> Forward(const engine::PlannedRule& rule,
                                      const std::vector<RawTensor>& raw,
                                      std::vector<Tensor> hf) const {
    if (!StartsWithCustom(rule.forward)) return engine::RunChain(rule.forward, std::move(hf));
    std::vector<TensorRef> inputs;
    std::vector<std::vector<uint64_t>> aligned;
    aligned.reserve(raw.size());
    for (const RawTensor& t : raw) {
      const size_t bytes = static_cast<size_t>(NumElementsUnchecked(t.shape)) * DTypeSize(t.dtype);
      aligned.emplace_back((bytes + 7) / 8);
      std::memcpy(aligned.back().data(), t.data, bytes);
      inputs.push_back({t.dtype, t.shape, aligned.back().data()});
    }
    Tensor out;
    out.shape = rule.forward.steps[0].out.at(0);
    out.data.resize(static_cast<size_t>(NumElementsUnchecked(out.shape)));
    CKB_RETURN_IF_ERROR(opened_.adapter->ApplyCustom(rule.forward.steps[0].op.custom_id, inputs,
                                                     {{DType::kF32, out.shape, out.data.data()}}));
    std::vector<Tensor> first;
    first.push_back(std::move(out));
    return engine::RunChain(rule.forward, std::move(first), 1);
  }

  // Compares `want` (the source side) with `got` (the output mapped back).
  void Record(const std::string& name, const char* direction, DType source_dtype,
              DType output_dtype, bool lossless, const Tensor& want, const Tensor& got,
              const std::string& slice) {
    TensorCheck local;
    local.ulp_dtype = Narrower(source_dtype, output_dtype);
    local.allowed_ulp = lossless ? 0 : 1;
    local.elements = want.data.size();
    for (size_t i = 0; i < want.data.size() && i < got.data.size(); ++i) {
      const float a = want.data[i], b = got.data[i];
      if (FloatBits(a) == FloatBits(b) || (std::isnan(a) && std::isnan(b))) continue;
      ++local.differing;
      const uint64_t ulp = UlpDistance(local.ulp_dtype, a, b);
      local.max_ulp = std::max(local.max_ulp, ulp);
      const double err = std::abs(static_cast<double>(a) - static_cast<double>(b));
      if (std::isfinite(err)) local.max_abs_error = std::max(local.max_abs_error, err);
      if (lossless || ulp > local.allowed_ulp) {
        if (local.over_limit++ == 0) {
          local.first_bad = "element " + std::to_string(i) + (slice.empty() ? "" : " of " + slice) +
                            ": source " + Text(a) + ", converted " + Text(b) + " (" +
                            (ulp == UINT64_MAX ? std::string("NaN") : std::to_string(ulp)) +
                            " ULP)";
        }
      }
    }
    if (want.data.size() != got.data.size()) {
      ++local.over_limit;
      local.first_bad = "sizes differ: " + std::to_string(want.data.size()) + " vs " +
                        std::to_string(got.data.size());
    }
    std::lock_guard<std::mutex> lock(mutex_);
    auto [it, inserted] = checks_.try_emplace(name);
    TensorCheck& c = it->second;
    if (inserted) {
      c = local;
      c.name = name;
      c.direction = direction;
      c.source_dtype = source_dtype;
      c.output_dtype = output_dtype;
      c.lossless = lossless;
      return;
    }
    c.elements += local.elements;
    c.differing += local.differing;
    c.max_ulp = std::max(c.max_ulp, local.max_ulp);
    c.max_abs_error = std::max(c.max_abs_error, local.max_abs_error);
    if (c.over_limit == 0 && local.over_limit > 0) c.first_bad = local.first_bad;
    c.over_limit += local.over_limit;
  }

  void Note(const std::string& text) {
    std::lock_guard<std::mutex> lock(mutex_);
    notes_.insert(text);
  }

  const VerifyOptions& options_;
  Opened& opened_;
  const engine::Plan& plan_;
  std::vector<Chain> backward_;
  std::mutex mutex_;
  std::map<std::string, TensorCheck> checks_;
  std::map<std::string, FingerprintFinding> findings_;
  std::set<std::string> notes_;
};

}  // namespace

bool VerifyReport::ok() const {
  if (!structure.empty() || !fingerprints.empty()) return false;
  for (const TensorCheck& t : tensors) {
    if (!t.ok()) return false;
  }
  return true;
}

size_t VerifyReport::inexact() const {
  size_t n = 0;
  for (const TensorCheck& t : tensors) n += !t.exact();
  return n;
}

uint64_t UlpDistance(DType dtype, float a, float b) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na || nb) return na && nb ? 0 : std::numeric_limits<uint64_t>::max();
  const int64_t oa = Ordered(dtype, a), ob = Ordered(dtype, b);
  return static_cast<uint64_t>(oa > ob ? oa - ob : ob - oa);
}

bool HoldsExactly(DType to, DType from) {
  if (to == from) return true;
  const bool eight_bit = from == DType::kF8E4M3 || from == DType::kF8E5M2;
  switch (to) {
    case DType::kF64:
      return from == DType::kF32 || from == DType::kBF16 || from == DType::kF16 || eight_bit;
    case DType::kF32:
      return from == DType::kBF16 || from == DType::kF16 || eight_bit;
    case DType::kBF16:
    case DType::kF16:
      return eight_bit;
    default:
      return false;
  }
}

Result<VerifyReport> Verify(const VerifyOptions& options, const PluginRegistry& plugins) {
  OpenOptions open;
  open.source = options.source;
  open.destination = options.destination;
  open.family = options.family;
  open.hf_config_file = options.hf_config_file;
  open.model_name = options.model_name;
  open.plugin_options = options.plugin_options;
  CKB_ASSIGN_OR_RETURN(Opened opened, OpenPair(open, plugins));
  return Verifier(options, opened).Run();
}

}  // namespace ckptbridge::check
