// The qwen plugin end to end: Qwen3 dense (the real MLX fixture and generated
// checkpoints), Qwen2.5 with q/k/v biases, Qwen3-MoE and Qwen3-Next, both
// directions, scanned and unscanned, bf16 and f32.
//
// Every MaxText tensor is checked against values computed here from the HF
// input with plain index arithmetic written from MaxText's mapping
// (shared/docs/maxtext-mapping.md §6.5, §6.6, §6.10) - never with the
// converter's ops. The generated checkpoints use deliberately unequal
// dimensions, so a swapped axis or a transposed-when-it-should-not-be tensor
// cannot pass. The way back must give every HF byte again: the mapping is pure
// layout, so this holds through bf16 as well as f32 (Qwen3-Next's A_log and
// dt_bias, kept in float32, come back as float32 with the same values).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "host/base/file.h"
#include "host/base/numeric.h"
#include "host/base/shape.h"
#include "host/plugin/adapter.h"
#include "host/plugin/loader.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::CliRun;
using testing::HfTensorSpec;
using testing::RunCli;
using testing::TempDir;
using testing::Values;

std::string S(int64_t v) { return std::to_string(v); }

json ReadConfig(const fs::path& dir) {
  Result<std::string> text = ReadFile(dir / "config.json");
  EXPECT_TRUE(text.ok());
  return json::parse(text.ok() ? *text : std::string("{}"));
}

// ---------------------------------------------------------------------------
// A config's dimensions, read the way transformers reads them (restated here,
// not taken from the plugin).
struct Model {
  std::string type;
  int64_t v = 0, vmt = 0, e = 0, layers = 0, nq = 0, nkv = 0, d = 0, f = 0;
  bool tied = false;
  int64_t x = 0, fm = 0;                                         // MoE
  int64_t cycle = 0, lkh = 0, lkd = 0, lvh = 0, lvd = 0, k = 0;  // Qwen3-Next

  bool next() const { return type == "qwen3_next"; }
  bool moe() const { return type == "qwen3_moe" || next(); }
  bool full_attention(int64_t l) const { return (l + 1) % cycle == 0; }
};

Model ReadModel(const json& c) {
  Model m;
  m.type = c["model_type"];
  m.v = c["vocab_size"];
  m.vmt = c.value("maxtext_vocab_size", m.v);
  m.e = c["hidden_size"];
  m.layers = c["num_hidden_layers"];
  m.nq = c["num_attention_heads"];
  m.nkv = c.value("num_key_value_heads", m.nq);
  // Qwen3Config defaults head_dim to 128, Qwen3NextConfig to 256.
  const int64_t default_d = m.type == "qwen3" ? 128 : m.next() ? 256 : m.e / m.nq;
  m.d = c.value("head_dim", default_d);
  m.f = c.value("intermediate_size", int64_t{0});
  m.tied = c.value("tie_word_embeddings", false);
  if (m.moe()) {
    m.x = c["num_experts"];
    m.fm = c["moe_intermediate_size"];
  }
  if (m.next()) {
    m.cycle = c.value("full_attention_interval", int64_t{0});
    if (m.cycle == 0) {
      for (size_t i = 0; i < c["layer_types"].size() && m.cycle == 0; ++i) {
        if (c["layer_types"][i] == "full_attention") m.cycle = static_cast<int64_t>(i) + 1;
      }
    }
    m.lkh = c["linear_num_key_heads"];
    m.lkd = c["linear_key_head_dim"];
    m.lvh = c["linear_num_value_heads"];
    m.lvd = c["linear_value_head_dim"];
    m.k = c["linear_conv_kernel_dim"];
  }
  return m;
}

// The HF tensors of a config, with the shapes transformers gives them (for
// Qwen3-Next: modeling_qwen3_next.py, not MaxText's broken shape table).
std::vector<HfTensorSpec> QwenTensors(const json& c, bool with_mtp = false) {
  const Model m = ReadModel(c);
  const int64_t e = m.e, d = m.d;
  std::vector<HfTensorSpec> t = {{"model.embed_tokens.weight", {m.v, e}},
                                 {"model.norm.weight", {e}}};
  if (!m.tied) t.push_back({"lm_head.weight", {m.v, e}});
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = "model.layers." + S(l) + ".";
    t.push_back({p + "input_layernorm.weight", {e}});
    t.push_back({p + "post_attention_layernorm.weight", {e}});
    if (!m.next() || m.full_attention(l)) {
      const int64_t q_rows = m.next() ? 2 * m.nq * d : m.nq * d;  // Qwen3-Next: query + gate
      t.push_back({p + "self_attn.q_proj.weight", {q_rows, e}});
      t.push_back({p + "self_attn.k_proj.weight", {m.nkv * d, e}});
      t.push_back({p + "self_attn.v_proj.weight", {m.nkv * d, e}});
      t.push_back({p + "self_attn.o_proj.weight", {e, m.nq * d}});
      if (m.type == "qwen2") {
        t.push_back({p + "self_attn.q_proj.bias", {m.nq * d}});
        t.push_back({p + "self_attn.k_proj.bias", {m.nkv * d}});
        t.push_back({p + "self_attn.v_proj.bias", {m.nkv * d}});
      } else {
        t.push_back({p + "self_attn.q_norm.weight", {d}});
        t.push_back({p + "self_attn.k_norm.weight", {d}});
      }
    } else {
      const int64_t kd = m.lkh * m.lkd, vd = m.lvh * m.lvd;
      t.push_back({p + "linear_attn.in_proj_qkvz.weight", {2 * kd + 2 * vd, e}});
      t.push_back({p + "linear_attn.in_proj_ba.weight", {2 * m.lvh, e}});
      t.push_back({p + "linear_attn.conv1d.weight", {2 * kd + vd, 1, m.k}});
      t.push_back({p + "linear_attn.A_log", {m.lvh}});
      t.push_back({p + "linear_attn.dt_bias", {m.lvh}});
      t.push_back({p + "linear_attn.norm.weight", {m.lvd}});
      t.push_back({p + "linear_attn.out_proj.weight", {e, vd}});
    }
    if (m.moe()) {
      t.push_back({p + "mlp.gate.weight", {m.x, e}});
      for (int64_t j = 0; j < m.x; ++j) {
        const std::string q = p + "mlp.experts." + S(j) + ".";
        t.push_back({q + "gate_proj.weight", {m.fm, e}});
        t.push_back({q + "up_proj.weight", {m.fm, e}});
        t.push_back({q + "down_proj.weight", {e, m.fm}});
      }
      if (m.next()) {
        t.push_back({p + "mlp.shared_expert.gate_proj.weight", {m.fm, e}});
        t.push_back({p + "mlp.shared_expert.up_proj.weight", {m.fm, e}});
        t.push_back({p + "mlp.shared_expert.down_proj.weight", {e, m.fm}});
        t.push_back({p + "mlp.shared_expert_gate.weight", {1, e}});
      }
    } else {
      t.push_back({p + "mlp.gate_proj.weight", {m.f, e}});
      t.push_back({p + "mlp.up_proj.weight", {m.f, e}});
      t.push_back({p + "mlp.down_proj.weight", {e, m.f}});
    }
  }
  if (with_mtp) {
    // What the Qwen3-Next releases also carry; MaxText has nowhere to put it.
    t.push_back({"mtp.fc.weight", {e, 2 * e}});
    t.push_back({"mtp.norm.weight", {e}});
    t.push_back({"mtp.layers.0.input_layernorm.weight", {e}});
  }
  return t;
}

// ---------------------------------------------------------------------------
// The MaxText tensors MaxText's converter would produce, computed directly.
// Qwen3-Next's gated-delta-net A_log and dt_bias are kept in float32 by
// their rules (Rule::KeepF32), whatever --save-dtype says; `name` is HF's
// or MaxText's.
bool KeptF32(const std::string& name) {
  for (const char* suffix : {".A_log", ".dt_bias"}) {
    const std::string_view s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      return true;
    }
  }
  return false;
}

class Expected {
 public:
  Expected(const std::map<std::string, Values>& hf, const json& config, bool scan, DType dtype)
      : hf_(hf), m_(ReadModel(config)), scan_(scan), dtype_(dtype) {
    Build();
  }
  const std::map<std::string, Values>& tensors() const { return out_; }

 private:
  // Where HF layer l lands: its container and, when scanned, its index on
  // the stacked axis 1.
  struct Slot {
    std::string prefix;
    bool stacked = false;
    int64_t count = 0;
    int64_t index = 0;
  };
  Slot LayerSlot(int64_t l) const {
    if (!scan_) return {"decoder.layers_" + S(l) + ".", false, 0, 0};
    if (m_.next()) {
      // Cycle position b = l % C in block layer_{b}, repetition l / C.
      return {"decoder.layers.layer_" + S(l % m_.cycle) + ".", true, m_.layers / m_.cycle,
              l / m_.cycle};
    }
    return {"decoder.layers.", true, m_.layers, l};
  }

  const std::vector<float>& At(const std::string& name) const {
    auto it = hf_.find(name);
    if (it == hf_.end()) {
      ADD_FAILURE() << "the HF source lacks " << name;
      static const std::vector<float> none;
      return none;
    }
    return it->second.data;
  }

  void Set(const std::string& name, const Shape& shape, const std::vector<int64_t>& index,
           float value) {
    Values& t = out_["params.params." + name];
    const DType dtype = KeptF32(name) ? DType::kF32 : dtype_;
    if (t.shape.empty()) {
      t.dtype = dtype;
      t.shape = shape;
      t.data.assign(static_cast<size_t>(NumElementsUnchecked(shape)), 0.0f);
    }
    ASSERT_EQ(t.shape, shape) << name;
    int64_t offset = 0;
    for (size_t i = 0; i < index.size(); ++i) offset = offset * shape[i] + index[i];
    t.data[static_cast<size_t>(offset)] = testing::RoundTo(dtype, value);
  }
  // A value of one layer's tensor; the layer axis goes in at 1 when scanned.
  void SetLayer(const Slot& s, const std::string& sub, Shape shape, std::vector<int64_t> index,
                float value) {
    if (s.stacked) {
      shape.insert(shape.begin() + 1, s.count);
      index.insert(index.begin() + 1, s.index);
    }
    Set(s.prefix + sub, shape, index, value);
  }

  // [n] copied.
  void Copy(const Slot& s, const std::string& sub, const std::string& hf, int64_t n) {
    const std::vector<float>& w = At(hf);
    for (int64_t i = 0; i < n; ++i) SetLayer(s, sub, {n}, {i}, w[i]);
  }
  // HF [out, in] -> MaxText [in, out].
  void Transposed(const Slot& s, const std::string& sub, const std::string& hf, int64_t out,
                  int64_t in) {
    const std::vector<float>& w = At(hf);
    for (int64_t i = 0; i < in; ++i)
      for (int64_t o = 0; o < out; ++o) SetLayer(s, sub, {in, out}, {i, o}, w[o * in + i]);
  }
  // HF q/k/v [heads*dim, E] -> MaxText [E, heads, dim]: row h*dim+k is head h.
  void Heads(const Slot& s, const std::string& sub, const std::string& hf, int64_t heads,
             int64_t dim) {
    const std::vector<float>& w = At(hf);
    const int64_t e = m_.e;
    for (int64_t i = 0; i < e; ++i)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t k = 0; k < dim; ++k)
          SetLayer(s, sub, {e, heads, dim}, {i, h, k}, w[(h * dim + k) * e + i]);
  }
  // Per-expert HF [out, in] -> MaxText [X, in, out] (experts on axis 0).
  void Experts(const Slot& s, const std::string& sub, const std::string& layer,
               const std::string& proj, int64_t out, int64_t in) {
    for (int64_t j = 0; j < m_.x; ++j) {
      const std::vector<float>& w = At(layer + "mlp.experts." + S(j) + "." + proj + ".weight");
      for (int64_t i = 0; i < in; ++i)
        for (int64_t o = 0; o < out; ++o)
          SetLayer(s, sub, {m_.x, in, out}, {j, i, o}, w[o * in + i]);
    }
  }

  void Build() {
    const int64_t e = m_.e, v = m_.v, vmt = m_.vmt;
    // Embedding rows past the HF vocabulary are zeros (pad_embedding_layer).
    const std::vector<float>& emb = At("model.embed_tokens.weight");
    for (int64_t r = 0; r < vmt; ++r)
      for (int64_t i = 0; i < e; ++i)
        Set("token_embedder.embedding", {vmt, e}, {r, i}, r < v ? emb[r * e + i] : 0.0f);
    const std::vector<float>& norm = At("model.norm.weight");
    for (int64_t i = 0; i < e; ++i) Set("decoder.decoder_norm.scale", {e}, {i}, norm[i]);
    if (!m_.tied) {
      const std::vector<float>& lm = At("lm_head.weight");
      for (int64_t i = 0; i < e; ++i)
        for (int64_t r = 0; r < vmt; ++r)
          Set("decoder.logits_dense.kernel", {e, vmt}, {i, r}, r < v ? lm[r * e + i] : 0.0f);
    }
    for (int64_t l = 0; l < m_.layers; ++l) {
      if (m_.next()) {
        NextLayer(l);
      } else {
        DecoderLayer(l);
      }
    }
  }

  void DecoderLayer(int64_t l) {
    const Slot s = LayerSlot(l);
    const std::string p = "model.layers." + S(l) + ".";
    const int64_t e = m_.e, d = m_.d, nq = m_.nq, nkv = m_.nkv;
    Copy(s, "pre_self_attention_layer_norm.scale", p + "input_layernorm.weight", e);
    Copy(s, "post_self_attention_layer_norm.scale", p + "post_attention_layernorm.weight", e);
    Heads(s, "self_attention.query.kernel", p + "self_attn.q_proj.weight", nq, d);
    Heads(s, "self_attention.key.kernel", p + "self_attn.k_proj.weight", nkv, d);
    Heads(s, "self_attention.value.kernel", p + "self_attn.v_proj.weight", nkv, d);
    // o_proj [E, Nq*D] -> out [Nq, D, E]: column h*D+k is head h.
    const std::vector<float>& o = At(p + "self_attn.o_proj.weight");
    for (int64_t h = 0; h < nq; ++h)
      for (int64_t k = 0; k < d; ++k)
        for (int64_t i = 0; i < e; ++i)
          SetLayer(s, "self_attention.out.kernel", {nq, d, e}, {h, k, i},
                   o[i * (nq * d) + h * d + k]);
    if (m_.type == "qwen2") {
      for (auto [proj, name, n] : {std::tuple<std::string, std::string, int64_t>{"q", "query", nq},
                                   {"k", "key", nkv},
                                   {"v", "value", nkv}}) {
        const std::vector<float>& b = At(p + "self_attn." + proj + "_proj.bias");
        for (int64_t h = 0; h < n; ++h)
          for (int64_t k = 0; k < d; ++k)
            SetLayer(s, "self_attention." + name + ".bias", {n, d}, {h, k}, b[h * d + k]);
      }
    } else {
      Copy(s, "self_attention.query_norm.scale", p + "self_attn.q_norm.weight", d);
      Copy(s, "self_attention.key_norm.scale", p + "self_attn.k_norm.weight", d);
    }
    if (m_.moe()) {
      Transposed(s, "moe_block.gate.kernel", p + "mlp.gate.weight", m_.x, e);
      Experts(s, "moe_block.wi_0", p, "gate_proj", m_.fm, e);
      Experts(s, "moe_block.wi_1", p, "up_proj", m_.fm, e);
      Experts(s, "moe_block.wo", p, "down_proj", e, m_.fm);
    } else {
      Transposed(s, "mlp.wi_0.kernel", p + "mlp.gate_proj.weight", m_.f, e);
      Transposed(s, "mlp.wi_1.kernel", p + "mlp.up_proj.weight", m_.f, e);
      Transposed(s, "mlp.wo.kernel", p + "mlp.down_proj.weight", e, m_.f);
    }
  }

  void NextLayer(int64_t l) {
    const Slot s = LayerSlot(l);
    const std::string p = "model.layers." + S(l) + ".";
    const int64_t e = m_.e, d = m_.d, nq = m_.nq, nkv = m_.nkv;
    Copy(s, "input_layernorm.scale", p + "input_layernorm.weight", e);
    Copy(s, "post_attention_layernorm.scale", p + "post_attention_layernorm.weight", e);
    if (m_.full_attention(l)) {
      // q_proj rows: per head, D query rows then D gate rows.
      Heads(s, "attention.attention.query.kernel", p + "self_attn.q_proj.weight", nq, 2 * d);
      Heads(s, "attention.attention.key.kernel", p + "self_attn.k_proj.weight", nkv, d);
      Heads(s, "attention.attention.value.kernel", p + "self_attn.v_proj.weight", nkv, d);
      Transposed(s, "attention.attention.out.kernel", p + "self_attn.o_proj.weight", e, nq * d);
      Copy(s, "attention.attention.query_norm.scale", p + "self_attn.q_norm.weight", d);
      Copy(s, "attention.attention.key_norm.scale", p + "self_attn.k_norm.weight", d);
    } else {
      const int64_t kd = m_.lkh * m_.lkd, vd = m_.lvh * m_.lvd, conv = 2 * kd + vd;
      Transposed(s, "attention.in_proj_qkvz.kernel", p + "linear_attn.in_proj_qkvz.weight",
                 2 * kd + 2 * vd, e);
      Transposed(s, "attention.in_proj_ba.kernel", p + "linear_attn.in_proj_ba.weight", 2 * m_.lvh,
                 e);
      // torch conv [C, 1, K] -> flax [K, 1, C].
      const std::vector<float>& w = At(p + "linear_attn.conv1d.weight");
      for (int64_t k = 0; k < m_.k; ++k)
        for (int64_t c = 0; c < conv; ++c)
          SetLayer(s, "attention.conv1d.kernel", {m_.k, 1, conv}, {k, 0, c}, w[c * m_.k + k]);
      Copy(s, "attention.A_log", p + "linear_attn.A_log", m_.lvh);
      Copy(s, "attention.dt_bias", p + "linear_attn.dt_bias", m_.lvh);
      Copy(s, "attention.norm.rms_norm.scale", p + "linear_attn.norm.weight", m_.lvd);
      Transposed(s, "attention.out_proj.kernel", p + "linear_attn.out_proj.weight", e, vd);
    }
    Transposed(s, "mlp.routed_experts.gate.kernel", p + "mlp.gate.weight", m_.x, e);
    Experts(s, "mlp.routed_experts.wi_0", p, "gate_proj", m_.fm, e);
    Experts(s, "mlp.routed_experts.wi_1", p, "up_proj", m_.fm, e);
    Experts(s, "mlp.routed_experts.wo", p, "down_proj", e, m_.fm);
    Transposed(s, "mlp.shared_expert.wi_0.kernel", p + "mlp.shared_expert.gate_proj.weight", m_.fm,
               e);
    Transposed(s, "mlp.shared_expert.wi_1.kernel", p + "mlp.shared_expert.up_proj.weight", m_.fm,
               e);
    Transposed(s, "mlp.shared_expert.wo.kernel", p + "mlp.shared_expert.down_proj.weight", e,
               m_.fm);
    Transposed(s, "mlp.shared_expert_gate.kernel", p + "mlp.shared_expert_gate.weight", 1, e);
  }

  const std::map<std::string, Values>& hf_;
  const Model m_;
  const bool scan_;
  const DType dtype_;
  std::map<std::string, Values> out_;
};

void ExpectSameTensors(const std::map<std::string, Values>& expected,
                       const std::map<std::string, Values>& actual) {
  std::vector<std::string> expected_names, actual_names;
  for (const auto& [name, v] : expected) expected_names.push_back(name);
  for (const auto& [name, v] : actual) {
    if (name.rfind("params.params.", 0) == 0) actual_names.push_back(name);
  }
  ASSERT_EQ(expected_names, actual_names);
  for (const auto& [name, want] : expected) {
    const Values& got = actual.at(name);
    EXPECT_EQ(got.dtype, want.dtype) << name;
    ASSERT_EQ(got.shape, want.shape) << name;
    size_t mismatches = 0;
    for (size_t i = 0; i < want.data.size(); ++i) {
      if (FloatBits(got.data[i]) != FloatBits(want.data[i]) && mismatches++ < 3) {
        ADD_FAILURE() << name << "[" << i << "]: got " << got.data[i] << ", want " << want.data[i];
      }
    }
    EXPECT_EQ(mismatches, 0u) << name;
  }
}

// An export of a bfloat16 source, tensor by tensor: byte for byte, but for
// the tensors kept in float32, which come back as float32 holding the
// source's values exactly.
void ExpectRoundTrip(const fs::path& exported, std::map<std::string, std::string> want,
                     const fs::path& source) {
  std::map<std::string, std::string> got = testing::ReadHfBytes(exported);
  const auto got_values = testing::ReadHf(exported);
  const auto source_values = testing::ReadHf(source);
  for (auto it = want.begin(); it != want.end();) {
    if (!KeptF32(it->first)) {
      ++it;
      continue;
    }
    ASSERT_TRUE(got_values.count(it->first)) << it->first;
    EXPECT_EQ(got_values.at(it->first).dtype, DType::kF32) << it->first;
    EXPECT_EQ(got_values.at(it->first).data, source_values.at(it->first).data) << it->first;
    got.erase(it->first);
    it = want.erase(it);
  }
  EXPECT_EQ(got, want);
}

// Every HF tensor but the ones MaxText cannot hold (Qwen3-Next's mtp.*).
std::map<std::string, std::string> ConvertibleBytes(const fs::path& dir) {
  std::map<std::string, std::string> bytes = testing::ReadHfBytes(dir);
  for (auto it = bytes.begin(); it != bytes.end();) {
    it = it->first.rfind("mtp.", 0) == 0 ? bytes.erase(it) : std::next(it);
  }
  return bytes;
}

CliRun ToMaxText(const fs::path& src, const fs::path& dst, bool scan, const std::string& dtype) {
  // Not --quiet: the notes (skipped tensors) are part of what is checked.
  std::vector<std::string> args = {"convert", "--to", "maxtext",
                                   scan ? "--scan-layers" : "--no-scan-layers"};
  if (!dtype.empty()) {
    args.push_back("--save-dtype");
    args.push_back(dtype);
  }
  args.push_back(src.string());
  args.push_back(dst.string());
  return RunCli(args);
}

// ---------------------------------------------------------------------------
// The real MLX-written Qwen3 (untied, q/k norms, GQA 4/2, head_dim 16).

struct FixtureCase {
  bool scan;
  std::string save_dtype;
};

class RealQwen3Test : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(RealQwen3Test, MapsAsMaxTextAndComesBackByteForByte) {
  const FixtureCase& c = GetParam();
  const fs::path src = testing::FixtureDir() / "hf" / "mlxd-tiny_qwen3";
  TempDir tmp;
  CliRun to_mt = ToMaxText(src, tmp / "mt", c.scan, c.save_dtype);
  ASSERT_EQ(to_mt.exit_code, 0) << to_mt.err;
  EXPECT_NE(to_mt.out.find("with plugin qwen"), std::string::npos) << to_mt.out;

  const DType dtype = c.save_dtype == "float32" ? DType::kF32 : DType::kBF16;
  const auto mt = testing::ReadOrbax(tmp / "mt" / "0" / "items");
  ExpectSameTensors(Expected(testing::ReadHf(src), ReadConfig(src), c.scan, dtype).tensors(), mt);
  const std::string prefix =
      c.scan ? "params.params.decoder.layers." : "params.params.decoder.layers_1.";
  // Spot checks of the stacked shapes (E 64, 2 layers, 4 q / 2 kv heads, D 16).
  if (c.scan) {
    EXPECT_EQ(mt.at(prefix + "self_attention.query.kernel").shape, (Shape{64, 2, 4, 16}));
    EXPECT_EQ(mt.at(prefix + "self_attention.out.kernel").shape, (Shape{4, 2, 16, 64}));
    EXPECT_EQ(mt.at(prefix + "self_attention.key_norm.scale").shape, (Shape{16, 2}));
  } else {
    EXPECT_EQ(mt.at(prefix + "self_attention.key.kernel").shape, (Shape{64, 2, 16}));
  }

  CliRun to_hf = RunCli({"convert", "--to", "hf", "--quiet", (tmp / "mt" / "0" / "items").string(),
                         (tmp / "hf").string()});
  ASSERT_EQ(to_hf.exit_code, 0) << to_hf.err;
  EXPECT_EQ(testing::ReadHfBytes(tmp / "hf"), testing::ReadHfBytes(src));
  const json config = ReadConfig(tmp / "hf");
  EXPECT_EQ(config["model_type"], "qwen3");
  EXPECT_EQ(config["architectures"], json::array({"Qwen3ForCausalLM"}));
  EXPECT_EQ(config["torch_dtype"], "bfloat16");
  EXPECT_EQ(config["hidden_size"], 64);
}

INSTANTIATE_TEST_SUITE_P(Fixture, RealQwen3Test,
                         ::testing::Values(FixtureCase{true, ""}, FixtureCase{false, ""},
                                           FixtureCase{true, "float32"},
                                           FixtureCase{false, "float32"}),
                         [](const ::testing::TestParamInfo<FixtureCase>& info) {
                           return std::string(info.param.scan ? "scanned" : "unscanned") +
                                  (info.param.save_dtype.empty() ? "_bf16" : "_f32");
                         });

// ---------------------------------------------------------------------------
// Generated checkpoints of every variant.

struct Variant {
  std::string name;
  json config;
  bool mtp = false;  // add Qwen3-Next's mtp.* tensors to the source
};

json Qwen3Tied() {
  return {{"architectures", {"Qwen3ForCausalLM"}},
          {"model_type", "qwen3"},
          {"vocab_size", 50},
          {"hidden_size", 36},
          {"intermediate_size", 44},
          {"num_hidden_layers", 3},
          {"num_attention_heads", 6},
          {"num_key_value_heads", 2},
          {"head_dim", 10},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 1000000.0},
          {"tie_word_embeddings", true},
          {"torch_dtype", "bfloat16"}};
}

json Qwen3UntiedPadded() {
  return {{"model_type", "qwen3"},       {"vocab_size", 46},         {"maxtext_vocab_size", 64},
          {"hidden_size", 40},           {"intermediate_size", 52},  {"num_hidden_layers", 2},
          {"num_attention_heads", 4},    {"num_key_value_heads", 1}, {"head_dim", 14},
          {"tie_word_embeddings", false}};
}

// No head_dim: Qwen3Config's default of 128, not hidden_size / heads (12).
json Qwen3DefaultHeadDim() {
  return {{"model_type", "qwen3"},    {"vocab_size", 30},
          {"hidden_size", 24},        {"intermediate_size", 20},
          {"num_hidden_layers", 2},   {"num_attention_heads", 2},
          {"num_key_value_heads", 1}, {"tie_word_embeddings", false}};
}

json Qwen25Biases() {
  return {{"architectures", {"Qwen2ForCausalLM"}},
          {"model_type", "qwen2"},
          {"vocab_size", 44},
          {"hidden_size", 32},
          {"intermediate_size", 40},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 1000000.0},
          {"tie_word_embeddings", false},
          {"torch_dtype", "bfloat16"}};
}

json Qwen25TiedPadded() {
  return {{"model_type", "qwen2"},    {"vocab_size", 38},         {"maxtext_vocab_size", 48},
          {"hidden_size", 28},        {"intermediate_size", 36},  {"num_hidden_layers", 3},
          {"num_attention_heads", 7}, {"num_key_value_heads", 1}, {"tie_word_embeddings", true}};
}

json Qwen3Moe() {
  return {{"architectures", {"Qwen3MoeForCausalLM"}},
          {"model_type", "qwen3_moe"},
          {"vocab_size", 56},
          {"hidden_size", 40},
          {"intermediate_size", 52},
          {"moe_intermediate_size", 20},
          {"num_hidden_layers", 3},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"head_dim", 12},
          {"num_experts", 6},
          {"num_experts_per_tok", 2},
          {"norm_topk_prob", true},
          {"decoder_sparse_step", 1},
          {"mlp_only_layers", json::array()},
          {"tie_word_embeddings", false},
          {"torch_dtype", "bfloat16"}};
}

json Qwen3Next() {
  return {{"architectures", {"Qwen3NextForCausalLM"}},
          {"model_type", "qwen3_next"},
          {"vocab_size", 72},
          {"hidden_size", 48},
          {"intermediate_size", 60},
          {"num_hidden_layers", 8},
          {"full_attention_interval", 4},
          {"num_attention_heads", 6},
          {"num_key_value_heads", 2},
          {"head_dim", 16},
          {"linear_num_key_heads", 2},
          {"linear_key_head_dim", 12},
          {"linear_num_value_heads", 4},
          {"linear_value_head_dim", 14},
          {"linear_conv_kernel_dim", 3},
          {"num_experts", 5},
          {"num_experts_per_tok", 2},
          {"moe_intermediate_size", 18},
          {"shared_expert_intermediate_size", 18},
          {"partial_rotary_factor", 0.25},
          {"decoder_sparse_step", 1},
          {"mlp_only_layers", json::array()},
          {"tie_word_embeddings", false},
          {"torch_dtype", "bfloat16"}};
}

// A cycle of 3 given only by layer_types, tied embeddings, padded vocab.
json Qwen3NextLayerTypes() {
  json c = Qwen3Next();
  c.erase("full_attention_interval");
  c["num_hidden_layers"] = 6;
  c["layer_types"] = {"linear_attention", "linear_attention", "full_attention",
                      "linear_attention", "linear_attention", "full_attention"};
  c["hidden_size"] = 44;
  c["linear_num_key_heads"] = 1;
  c["linear_num_value_heads"] = 3;
  c["tie_word_embeddings"] = true;
  c["maxtext_vocab_size"] = 80;
  return c;
}

std::vector<Variant> Variants() {
  return {{"qwen3_tied", Qwen3Tied()},
          {"qwen3_untied_vocab_padded", Qwen3UntiedPadded()},
          {"qwen3_default_head_dim", Qwen3DefaultHeadDim()},
          {"qwen25_biases", Qwen25Biases()},
          {"qwen25_tied_vocab_padded", Qwen25TiedPadded()},
          {"qwen3_moe", Qwen3Moe()},
          {"qwen3_next", Qwen3Next(), true},
          {"qwen3_next_layer_types", Qwen3NextLayerTypes()}};
}

using GeneratedCase = std::tuple<Variant, bool, std::string>;

class GeneratedQwenTest : public ::testing::TestWithParam<GeneratedCase> {};

TEST_P(GeneratedQwenTest, MapsAsMaxTextAndComesBackByteForByte) {
  const auto& [variant, scan, dtype] = GetParam();
  TempDir tmp;
  // Small shards, so the source is an index + shards set.
  testing::WriteHfCheckpoint(tmp / "src", variant.config, QwenTensors(variant.config, variant.mtp),
                             DType::kBF16, /*seed=*/11, /*max_shard_bytes=*/24 << 10);
  CliRun to_mt = ToMaxText(tmp / "src", tmp / "mt", scan, dtype);
  ASSERT_EQ(to_mt.exit_code, 0) << to_mt.err;
  const DType mt_dtype = dtype == "float32" ? DType::kF32 : DType::kBF16;
  ExpectSameTensors(
      Expected(testing::ReadHf(tmp / "src"), variant.config, scan, mt_dtype).tensors(),
      testing::ReadOrbax(tmp / "mt"));

  CliRun to_hf = RunCli({"convert", "--to", "hf", "--max-shard-size", "20KiB",
                         (tmp / "mt").string(), (tmp / "hf").string()});
  ASSERT_EQ(to_hf.exit_code, 0) << to_hf.err;
  ExpectRoundTrip(tmp / "hf", ConvertibleBytes(tmp / "src"), tmp / "src");
  json config = ReadConfig(tmp / "hf");
  EXPECT_FALSE(config.contains("maxtext_vocab_size")) << "ckptbridge's own key leaks into HF";
  EXPECT_EQ(config["vocab_size"], variant.config["vocab_size"]);
  EXPECT_EQ(config["model_type"], variant.config["model_type"]);
  EXPECT_TRUE(config["architectures"].is_array());
  if (variant.mtp) {
    EXPECT_NE(to_mt.err.find("skipped 3 tensors (multi-token-prediction"), std::string::npos)
        << to_mt.err;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, GeneratedQwenTest,
                         ::testing::Combine(::testing::ValuesIn(Variants()), ::testing::Bool(),
                                            ::testing::Values("bfloat16", "float32")),
                         [](const ::testing::TestParamInfo<GeneratedCase>& info) {
                           return std::get<0>(info.param).name +
                                  (std::get<1>(info.param) ? "_scanned_" : "_unscanned_") +
                                  std::get<2>(info.param);
                         });

// The MaxText layout in names and shapes, spelled out for the families whose
// containers differ from Llama's (so a regression names the tensor).
TEST(QwenLayoutTest, Qwen3NextScannedBlocksAreLayerUnderscoreB) {
  TempDir tmp;
  const json config = Qwen3Next();
  testing::WriteHfCheckpoint(tmp / "src", config, QwenTensors(config), DType::kBF16, 3);
  ASSERT_EQ(ToMaxText(tmp / "src", tmp / "mt", true, "float32").exit_code, 0);
  const auto mt = testing::ReadOrbax(tmp / "mt");
  const std::string b3 = "params.params.decoder.layers.layer_3.";
  const std::string b0 = "params.params.decoder.layers.layer_0.";
  // E 48, L' = 8/4 = 2, Nq 6, 2D 32, Kd 24, Vd 56, conv 104, X 5, Fm 18.
  EXPECT_EQ(mt.at(b3 + "attention.attention.query.kernel").shape, (Shape{48, 2, 6, 32}));
  EXPECT_EQ(mt.at(b3 + "attention.attention.out.kernel").shape, (Shape{96, 2, 48}));
  EXPECT_EQ(mt.at(b3 + "attention.attention.key_norm.scale").shape, (Shape{16, 2}));
  EXPECT_EQ(mt.at(b0 + "attention.conv1d.kernel").shape, (Shape{3, 2, 1, 104}));
  EXPECT_EQ(mt.at(b0 + "attention.in_proj_qkvz.kernel").shape, (Shape{48, 2, 160}));
  EXPECT_EQ(mt.at(b0 + "attention.in_proj_ba.kernel").shape, (Shape{48, 2, 8}));
  EXPECT_EQ(mt.at(b0 + "attention.A_log").shape, (Shape{4, 2}));
  EXPECT_EQ(mt.at(b0 + "attention.norm.rms_norm.scale").shape, (Shape{14, 2}));
  EXPECT_EQ(mt.at(b0 + "attention.out_proj.kernel").shape, (Shape{56, 2, 48}));
  EXPECT_EQ(mt.at(b0 + "mlp.routed_experts.wi_0").shape, (Shape{5, 2, 48, 18}));
  EXPECT_EQ(mt.at(b0 + "mlp.routed_experts.wo").shape, (Shape{5, 2, 18, 48}));
  EXPECT_EQ(mt.at(b0 + "mlp.routed_experts.gate.kernel").shape, (Shape{48, 2, 5}));
  EXPECT_EQ(mt.at(b0 + "mlp.shared_expert_gate.kernel").shape, (Shape{48, 2, 1}));
  EXPECT_FALSE(mt.count(b0 + "attention.attention.query.kernel"));
  EXPECT_FALSE(mt.count(b3 + "attention.in_proj_qkvz.kernel"));
  // Block 1's second repetition is HF layer 5: check one value directly.
  const auto hf = testing::ReadHf(tmp / "src");
  const Values& a_log = mt.at("params.params.decoder.layers.layer_1.attention.A_log");
  EXPECT_EQ(a_log.data[2 * 2 + 1], hf.at("model.layers.5.linear_attn.A_log").data[2]);
}

// A_log and dt_bias stay float32 under --save-dtype bfloat16, and `plan`
// says so before anything is written.
TEST(QwenNextTest, GatedDeltaNetDecayStaysFloat32) {
  TempDir tmp;
  const json config = Qwen3Next();
  testing::WriteHfCheckpoint(tmp / "src", config, QwenTensors(config), DType::kBF16, 19);
  CliRun plan =
      RunCli({"plan", "--to", "maxtext", "--save-dtype", "bfloat16", (tmp / "src").string()});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  size_t kept = 0;
  std::istringstream lines(plan.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("attention.A_log") == std::string::npos &&
        line.find("attention.dt_bias") == std::string::npos) {
      continue;
    }
    EXPECT_NE(line.find("float32"), std::string::npos) << line;
    ++kept;
  }
  EXPECT_EQ(kept, 6u) << plan.out;  // 3 linear-attention blocks x 2 tensors
  ASSERT_EQ(ToMaxText(tmp / "src", tmp / "mt", true, "bfloat16").exit_code, 0);
  const auto mt = testing::ReadOrbax(tmp / "mt");
  const std::string b0 = "params.params.decoder.layers.layer_0.";
  EXPECT_EQ(mt.at(b0 + "attention.A_log").dtype, DType::kF32);
  EXPECT_EQ(mt.at(b0 + "attention.dt_bias").dtype, DType::kF32);
  EXPECT_EQ(mt.at(b0 + "attention.out_proj.kernel").dtype, DType::kBF16);
}

TEST(QwenLayoutTest, Qwen3MoeExpertsThenLayers) {
  TempDir tmp;
  const json config = Qwen3Moe();
  testing::WriteHfCheckpoint(tmp / "src", config, QwenTensors(config), DType::kBF16, 5);
  ASSERT_EQ(ToMaxText(tmp / "src", tmp / "mt", true, "float32").exit_code, 0);
  ASSERT_EQ(ToMaxText(tmp / "src", tmp / "mt1", false, "float32").exit_code, 0);
  const auto mt = testing::ReadOrbax(tmp / "mt");
  const std::string p = "params.params.decoder.layers.";
  EXPECT_EQ(mt.at(p + "moe_block.wi_0").shape, (Shape{6, 3, 40, 20}));
  EXPECT_EQ(mt.at(p + "moe_block.wo").shape, (Shape{6, 3, 20, 40}));
  EXPECT_EQ(mt.at(p + "moe_block.gate.kernel").shape, (Shape{40, 3, 6}));
  EXPECT_EQ(mt.at(p + "self_attention.query_norm.scale").shape, (Shape{12, 3}));
  EXPECT_EQ(
      testing::ReadOrbax(tmp / "mt1").at("params.params.decoder.layers_2.moe_block.wi_1").shape,
      (Shape{6, 40, 20}));
  // wo[expert 4][layer 2][f 7][e 3] = experts.4.down_proj[e 3][f 7] of layer 2.
  const auto hf = testing::ReadHf(tmp / "src");
  EXPECT_EQ(mt.at(p + "moe_block.wo").data[((4 * 3 + 2) * 20 + 7) * 40 + 3],
            hf.at("model.layers.2.mlp.experts.4.down_proj.weight").data[3 * 20 + 7]);
}

// Qwen3-Next with a partial last cycle: unscanned works layer by layer;
// scanned is refused (MaxText would scan 6/4 = 1 cycle and drop two layers).
TEST(QwenNextTest, PartialCycleConvertsUnscannedOnly) {
  TempDir tmp;
  json config = Qwen3Next();
  config["num_hidden_layers"] = 6;
  testing::WriteHfCheckpoint(tmp / "src", config, QwenTensors(config), DType::kBF16, 13);
  CliRun scanned = ToMaxText(tmp / "src", tmp / "mt-scanned", true, "");
  EXPECT_EQ(scanned.exit_code, 2);
  EXPECT_NE(scanned.err.find("num_hidden_layers 6 is not a multiple of full_attention_interval 4"),
            std::string::npos)
      << scanned.err;
  EXPECT_FALSE(fs::exists(tmp / "mt-scanned"));

  CliRun run = ToMaxText(tmp / "src", tmp / "mt", false, "");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  ExpectSameTensors(Expected(testing::ReadHf(tmp / "src"), config, false, DType::kBF16).tensors(),
                    testing::ReadOrbax(tmp / "mt"));
  CliRun back =
      RunCli({"convert", "--to", "hf", "--quiet", (tmp / "mt").string(), (tmp / "hf").string()});
  ASSERT_EQ(back.exit_code, 0) << back.err;
  ExpectRoundTrip(tmp / "hf", testing::ReadHfBytes(tmp / "src"), tmp / "src");
}

// The export MaxText cannot do for Qwen3-Next: from a MaxText checkpoint and
// an explicit HF config, the HF tensors come out in transformers' shapes.
TEST(QwenNextTest, ExportsTransformersShapesFromAnExplicitConfig) {
  TempDir tmp;
  const json config = Qwen3Next();
  testing::WriteHfCheckpoint(tmp / "src", config, QwenTensors(config), DType::kBF16, 17);
  ASSERT_EQ(ToMaxText(tmp / "src", tmp / "mt", true, "float32").exit_code, 0);
  ASSERT_TRUE(WriteFile(tmp / "config.json", config.dump()).ok());
  CliRun run = RunCli({"convert", "--to", "hf", "--hf-config", (tmp / "config.json").string(),
                       (tmp / "mt").string(), (tmp / "hf").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto hf = testing::ReadHf(tmp / "hf");
  // Linear layers use the linear_* dims (Dv 14), not head_dim (16), which is
  // what MaxText's own shape table gets wrong.
  EXPECT_EQ(hf.at("model.layers.0.linear_attn.norm.weight").shape, (Shape{14}));
  EXPECT_EQ(hf.at("model.layers.0.linear_attn.out_proj.weight").shape, (Shape{48, 56}));
  EXPECT_EQ(hf.at("model.layers.0.linear_attn.conv1d.weight").shape, (Shape{104, 1, 3}));
  EXPECT_EQ(hf.at("model.layers.1.linear_attn.in_proj_qkvz.weight").shape, (Shape{160, 48}));
  EXPECT_EQ(hf.at("model.layers.2.linear_attn.in_proj_ba.weight").shape, (Shape{8, 48}));
  EXPECT_EQ(hf.at("model.layers.3.self_attn.q_proj.weight").shape, (Shape{192, 48}));
  EXPECT_EQ(hf.at("model.layers.7.self_attn.o_proj.weight").shape, (Shape{48, 96}));
  EXPECT_EQ(hf.at("model.layers.7.mlp.shared_expert_gate.weight").shape, (Shape{1, 48}));
  ExpectRoundTrip(tmp / "hf", testing::ReadHfBytes(tmp / "src"), tmp / "src");
}

// ---------------------------------------------------------------------------
// Refusals: each names the key and both sides.

struct Refusal {
  std::string name;
  json config;
  std::string message;
  std::vector<std::string> extra_args;
};

class QwenRefusalTest : public ::testing::TestWithParam<Refusal> {};

TEST_P(QwenRefusalTest, IsRefusedWithTheReason) {
  const Refusal& r = GetParam();
  TempDir tmp;
  // Tensors of the config with the refused key taken out, so only the key
  // itself can be the reason.
  json plain = r.config;
  for (const char* key : {"quantization_config", "attention_bias", "mlp_only_layers",
                          "maxtext_vocab_size", "decoder_sparse_step"}) {
    plain.erase(key);
  }
  if (plain["model_type"] == "qwen3_next") plain["shared_expert_intermediate_size"] = 18;
  testing::WriteHfCheckpoint(tmp / "src", r.config, QwenTensors(plain), DType::kBF16, 1);
  std::vector<std::string> args = {"convert", "--to", "maxtext"};
  args.insert(args.end(), r.extra_args.begin(), r.extra_args.end());
  args.push_back((tmp / "src").string());
  args.push_back((tmp / "mt").string());
  CliRun run = RunCli(args);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.err.find(r.message), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(tmp / "mt"));
}

json With(json c, const std::string& key, json value) {
  c[key] = std::move(value);
  return c;
}

INSTANTIATE_TEST_SUITE_P(
    Configs, QwenRefusalTest,
    ::testing::Values(
        Refusal{"fp8",
                With(Qwen3Tied(), "quantization_config",
                     {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}}),
                "quantization_config.quant_method 'fp8'",
                {}},
        Refusal{"qwen3_attention_bias",
                With(Qwen3Tied(), "attention_bias", true),
                "attention_bias is true, but MaxText's qwen3 decoder block has no attention bias",
                {}},
        Refusal{"moe_dense_layers",
                With(Qwen3Moe(), "mlp_only_layers", {1}),
                "mlp_only_layers [1] makes those layers dense",
                {}},
        Refusal{"moe_sparse_step",
                With(Qwen3Moe(), "decoder_sparse_step", 2),
                "decoder_sparse_step is 2",
                {}},
        Refusal{"next_shared_expert_size",
                With(Qwen3Next(), "shared_expert_intermediate_size", 22),
                "shared_expert_intermediate_size 22 differs from moe_intermediate_size 18",
                {}},
        Refusal{"vocab_cut",
                With(Qwen3Tied(), "maxtext_vocab_size", 40),
                "maxtext_vocab_size 40 is smaller than vocab_size 50",
                {}},
        Refusal{"next_mtp",
                Qwen3Next(),
                "--mtp: MaxText's qwen3_next decoder block has no",
                {"--mtp"}}),
    [](const ::testing::TestParamInfo<Refusal>& info) { return info.param.name; });

TEST(QwenRefusalTest, MlxQuantizedQwen3) {
  TempDir tmp;
  json config = Qwen3Tied();
  config["quantization"] = {{"group_size", 64}, {"bits", 4}};
  testing::WriteHfCheckpoint(tmp / "src", config, QwenTensors(Qwen3Tied()), DType::kBF16, 1);
  CliRun run = ToMaxText(tmp / "src", tmp / "mt", true, "");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("MLX 4-bit affine, group size 64"), std::string::npos) << run.err;
}

// ---------------------------------------------------------------------------
// The plugin asked directly: presets, MaxText settings, full-size shapes.

const LoadedPlugin& Plugin() {
  static const LoadedPlugin plugin = [] {
    Result<LoadedPlugin> p = LoadPlugin(CKB_QWEN_PLUGIN_FILE);
    EXPECT_TRUE(p.ok()) << p.status().message();
    return p.ok() ? *p : LoadedPlugin{};
  }();
  return plugin;
}

json PresetOf(const std::string& name) {
  Result<std::string> text = PresetConfig(Plugin(), name);
  EXPECT_TRUE(text.ok()) << name << ": " << text.status().message();
  return text.ok() ? json::parse(*text) : json::object();
}

std::unique_ptr<Adapter> AdapterFor(const json& config) {
  Result<std::unique_ptr<Adapter>> adapter =
      Adapter::Create(Plugin(), config["model_type"].get<std::string>(), config.dump());
  EXPECT_TRUE(adapter.ok()) << adapter.status().message();
  return adapter.ok() ? std::move(*adapter) : nullptr;
}

json MaxTextSettings(const json& config) {
  std::unique_ptr<Adapter> adapter = AdapterFor(config);
  if (!adapter) return json::object();
  Result<std::string> text = adapter->TranslateConfig(CKB_TO_MAXTEXT);
  EXPECT_TRUE(text.ok()) << text.status().message();
  return text.ok() ? json::parse(*text) : json::object();
}

// Every key of MaxText's configs/models/<name>.yml (at the commit the mapping
// doc cites), as the settings a user needs to train on the result.
std::map<std::string, json> MaxTextYmls() {
  const json silu = {"silu", "linear"};
  auto dense = [&](std::string block, int64_t emb, int64_t q, int64_t kv, int64_t mlp,
                   int64_t layers, int64_t vocab, bool tied, double rope) {
    return json{{"decoder_block", block},
                {"base_emb_dim", emb},
                {"base_num_query_heads", q},
                {"base_num_kv_heads", kv},
                {"base_mlp_dim", mlp},
                {"base_num_decoder_layers", layers},
                {"head_dim", 128},
                {"mlp_activations", silu},
                {"vocab_size", vocab},
                {"normalization_layer_epsilon", 1e-6},
                {"rope_max_timescale", rope},
                {"use_qk_norm", block == "qwen3"},
                {"logits_via_embedding", tied},
                {"normalize_embedding_logits", false}};
  };
  auto moe = [&](int64_t emb, int64_t mlp, int64_t q, int64_t kv, int64_t layers, int64_t experts,
                 double rope) {
    return json{{"decoder_block", "qwen3_moe"},
                {"base_emb_dim", emb},
                {"base_mlp_dim", mlp},
                {"base_num_query_heads", q},
                {"base_num_kv_heads", kv},
                {"base_num_decoder_layers", layers},
                {"head_dim", 128},
                {"mlp_activations", silu},
                {"vocab_size", 151936},
                {"normalization_layer_epsilon", 1e-6},
                {"use_qk_norm", true},
                {"num_experts", experts},
                {"num_experts_per_tok", 8},
                {"base_moe_mlp_dim", mlp},
                {"norm_topk_prob", true},
                {"rope_max_timescale", rope}};
  };
  std::map<std::string, json> y;
  y["qwen2.5-1.5b"] = dense("qwen2", 1536, 12, 2, 8960, 28, 151936, true, 1e6);
  y["qwen2.5-7b"] = dense("qwen2", 3584, 28, 4, 18944, 28, 152064, false, 1e6);
  y["qwen2.5-14b"] = dense("qwen2", 5120, 40, 8, 13824, 48, 152064, false, 1e6);
  for (const char* name : {"qwen2.5-1.5b", "qwen2.5-7b", "qwen2.5-14b"}) {
    y[name]["attention_bias"] = true;
  }
  y["qwen3-0.6b"] = dense("qwen3", 1024, 16, 8, 3072, 28, 151936, true, 1e6);
  y["qwen3-1.7b"] = dense("qwen3", 2048, 16, 8, 6144, 28, 151936, true, 1e6);
  y["qwen3-1.7b-base"] = y["qwen3-1.7b"];
  y["qwen3-4b"] = dense("qwen3", 2560, 32, 8, 9728, 36, 151936, true, 1e6);
  y["qwen3-4b-base"] = y["qwen3-4b"];
  y["qwen3-4b-thinking-2507"] = dense("qwen3", 2560, 32, 8, 9728, 36, 151936, true, 5e6);
  y["qwen3-8b"] = dense("qwen3", 4096, 32, 8, 12288, 36, 151936, false, 1e6);
  y["qwen3-8b-base"] = y["qwen3-8b"];
  y["qwen3-14b"] = dense("qwen3", 5120, 40, 8, 17408, 40, 151936, false, 1e6);
  y["qwen3-14b-base"] = y["qwen3-14b"];
  y["qwen3-32b"] = dense("qwen3", 5120, 64, 8, 25600, 64, 151936, false, 1e6);
  y["qwen3-30b-a3b"] = moe(2048, 768, 32, 4, 48, 128, 1e7);
  y["qwen3-30b-a3b-base"] = moe(2048, 768, 32, 4, 48, 128, 1e6);
  y["qwen3-235b-a22b"] = moe(4096, 1536, 64, 4, 94, 128, 5e6);
  y["qwen3-480b-a35b"] = moe(6144, 2560, 96, 8, 62, 160, 1e7);
  y["qwen3-coder-480b-a35b"] = y["qwen3-480b-a35b"];
  y["qwen3-next-80b-a3b"] = {{"decoder_block", "qwen3_next"},
                             {"base_emb_dim", 2048},
                             {"base_num_decoder_layers", 48},
                             {"base_num_query_heads", 16},
                             {"base_num_kv_heads", 2},
                             {"head_dim", 256},
                             {"vocab_size", 151936},
                             {"normalization_layer_epsilon", 1e-6},
                             {"base_mlp_dim", 512},
                             {"base_moe_mlp_dim", 512},
                             {"num_experts", 512},
                             {"shared_experts", 1},
                             {"num_experts_per_tok", 10},
                             {"norm_topk_prob", true},
                             {"inhomogeneous_layer_cycle_interval", 4},
                             {"gdn_conv_kernel_dim", 4},
                             {"gdn_key_head_dim", 128},
                             {"gdn_value_head_dim", 128},
                             {"gdn_num_key_heads", 16},
                             {"gdn_num_value_heads", 32},
                             {"rope_max_timescale", 1e7},
                             {"partial_rotary_factor", 0.25}};
  return y;
}

TEST(QwenPresetTest, EveryPresetGivesMaxTextsModelSettings) {
  const std::map<std::string, json> ymls = MaxTextYmls();
  std::set<std::string> presets(Plugin().model_presets.begin(), Plugin().model_presets.end());
  for (const char* required : {"qwen3-0.6b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b",
                               "qwen3-30b-a3b", "qwen3-235b-a22b", "qwen3-next-80b-a3b"}) {
    EXPECT_TRUE(presets.count(required)) << required;
  }
  for (const std::string& name : presets) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(ymls.count(name)) << "no MaxText yml to compare with";
    const json settings = MaxTextSettings(PresetOf(name));
    for (const auto& [key, want] : ymls.at(name).items()) {
      EXPECT_EQ(settings.value(key, json()), want) << key;
    }
  }
  Result<std::string> unknown = PresetConfig(Plugin(), "qwen4-1t");
  EXPECT_FALSE(unknown.ok());
}

TEST(QwenPresetTest, PluginsCommandListsTheFamilies) {
  CliRun run = RunCli({"plugins", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const json doc = json::parse(run.out);
  json qwen;
  for (const json& p : doc["plugins"]) {
    if (p["name"] == "qwen") qwen = p;
  }
  ASSERT_TRUE(qwen.is_object()) << run.out;
  EXPECT_EQ(qwen["model_types"], json({"qwen3", "qwen3_moe", "qwen3_next", "qwen2"}));
  EXPECT_EQ(qwen["architectures"], json({"Qwen3ForCausalLM", "Qwen3MoeForCausalLM",
                                         "Qwen3NextForCausalLM", "Qwen2ForCausalLM"}));
  EXPECT_EQ(qwen["version"], "0.1.0");
  EXPECT_TRUE(std::find(qwen["presets"].begin(), qwen["presets"].end(), "qwen3-next-80b-a3b") !=
              qwen["presets"].end());
}

// Shapes of every rule for a full-size model, by name.
struct RuleShapes {
  std::map<std::string, Shape> mt;
  std::map<std::string, Shape> hf;  // HF key templates ({layer}, {expert})
};

RuleShapes ShapesOf(const json& config, bool scan, const std::string& direction = "to_maxtext") {
  RuleShapes shapes;
  std::unique_ptr<Adapter> adapter = AdapterFor(config);
  if (!adapter) return shapes;
  const json options = {{"direction", direction}, {"scan_layers", scan}};
  Result<RuleSet> rules = adapter->Rules(options.dump());
  EXPECT_TRUE(rules.ok()) << rules.status().message();
  if (!rules.ok()) return shapes;
  for (const Rule& rule : rules->rules) {
    for (const TensorDecl& t : rule.mt_outputs) shapes.mt[t.name] = t.dims;
    for (const TensorDecl& t : rule.hf_inputs) shapes.hf[t.name] = t.dims;
  }
  return shapes;
}

// mapping doc §6.5: scanned qwen3-0.6b.
TEST(QwenFullSizeTest, Qwen3Dense06b) {
  const RuleShapes s = ShapesOf(PresetOf("qwen3-0.6b"), true);
  const std::string p = "decoder.layers.";
  EXPECT_EQ(s.mt.at(p + "self_attention.query.kernel"), (Shape{1024, 28, 16, 128}));
  EXPECT_EQ(s.mt.at(p + "self_attention.key.kernel"), (Shape{1024, 28, 8, 128}));
  EXPECT_EQ(s.mt.at(p + "self_attention.out.kernel"), (Shape{16, 28, 128, 1024}));
  EXPECT_EQ(s.mt.at(p + "self_attention.query_norm.scale"), (Shape{128, 28}));
  EXPECT_EQ(s.mt.at(p + "mlp.wi_0.kernel"), (Shape{1024, 28, 3072}));
  EXPECT_EQ(s.mt.at("token_embedder.embedding"), (Shape{151936, 1024}));
  EXPECT_FALSE(s.mt.count("decoder.logits_dense.kernel"));  // tied
  EXPECT_EQ(ShapesOf(PresetOf("qwen3-8b"), true).mt.at("decoder.logits_dense.kernel"),
            (Shape{4096, 151936}));
  // Qwen2.5: biases [N, D] per layer.
  const RuleShapes q25 = ShapesOf(PresetOf("qwen2.5-7b"), false);
  EXPECT_EQ(q25.mt.at("decoder.layers_27.self_attention.query.bias"), (Shape{28, 128}));
  EXPECT_EQ(q25.mt.at("decoder.layers_0.self_attention.key.bias"), (Shape{4, 128}));
  EXPECT_EQ(q25.hf.at("model.layers.0.self_attn.v_proj.bias"), (Shape{512}));
  EXPECT_FALSE(q25.mt.count("decoder.layers_0.self_attention.query_norm.scale"));
}

// mapping doc §6.6: scanned qwen3-30b-a3b.
TEST(QwenFullSizeTest, Qwen3Moe30bA3b) {
  const RuleShapes s = ShapesOf(PresetOf("qwen3-30b-a3b"), true);
  const std::string p = "decoder.layers.";
  EXPECT_EQ(s.mt.at(p + "moe_block.wi_0"), (Shape{128, 48, 2048, 768}));
  EXPECT_EQ(s.mt.at(p + "moe_block.gate.kernel"), (Shape{2048, 48, 128}));
  EXPECT_EQ(s.mt.at(p + "moe_block.wo"), (Shape{128, 48, 768, 2048}));
  EXPECT_EQ(s.hf.at("model.layers.{layer}.mlp.experts.{expert}.down_proj.weight"),
            (Shape{2048, 768}));
}

// mapping doc §6.10: scanned qwen3-next-80b-a3b, and the HF shapes of
// transformers (where MaxText's own table uses head_dim for the linear layers).
TEST(QwenFullSizeTest, Qwen3Next80bA3b) {
  const json config = PresetOf("qwen3-next-80b-a3b");
  const RuleShapes s = ShapesOf(config, true);
  const std::string b3 = "decoder.layers.layer_3.", b0 = "decoder.layers.layer_0.";
  EXPECT_EQ(s.mt.at(b3 + "attention.attention.query.kernel"), (Shape{2048, 12, 16, 512}));
  EXPECT_EQ(s.mt.at(b3 + "attention.attention.out.kernel"), (Shape{4096, 12, 2048}));
  EXPECT_EQ(s.mt.at(b0 + "attention.conv1d.kernel"), (Shape{4, 12, 1, 8192}));
  EXPECT_EQ(s.mt.at(b0 + "attention.A_log"), (Shape{32, 12}));
  EXPECT_EQ(s.mt.at(b0 + "attention.in_proj_qkvz.kernel"), (Shape{2048, 12, 12288}));
  EXPECT_EQ(s.mt.at(b0 + "attention.in_proj_ba.kernel"), (Shape{2048, 12, 64}));
  EXPECT_EQ(s.mt.at(b0 + "mlp.routed_experts.wi_0"), (Shape{512, 12, 2048, 512}));
  EXPECT_EQ(s.mt.at(b0 + "mlp.shared_expert_gate.kernel"), (Shape{2048, 12, 1}));
  const RuleShapes back = ShapesOf(config, false, "to_hf");
  EXPECT_EQ(back.hf.at("model.layers.0.linear_attn.norm.weight"), (Shape{128}));
  EXPECT_EQ(back.hf.at("model.layers.0.linear_attn.out_proj.weight"), (Shape{2048, 4096}));
  EXPECT_EQ(back.hf.at("model.layers.0.linear_attn.conv1d.weight"), (Shape{8192, 1, 4}));
  EXPECT_EQ(back.hf.at("model.layers.0.linear_attn.in_proj_qkvz.weight"), (Shape{12288, 2048}));
  EXPECT_EQ(back.hf.at("model.layers.47.self_attn.q_proj.weight"), (Shape{8192, 2048}));
  EXPECT_EQ(back.hf.at("model.layers.47.self_attn.o_proj.weight"), (Shape{2048, 4096}));
  EXPECT_FALSE(back.hf.count("model.layers.46.self_attn.q_proj.weight"));
  EXPECT_EQ(back.mt.at("decoder.layers_47.attention.attention.out.kernel"), (Shape{4096, 2048}));
}

TEST(QwenConfigTest, ExportedConfigIsTheSourcesWithoutOurKey) {
  const json source = Qwen3UntiedPadded();
  std::unique_ptr<Adapter> adapter = AdapterFor(source);
  ASSERT_TRUE(adapter);
  Result<std::string> text = adapter->TranslateConfig(CKB_TO_HF);
  ASSERT_TRUE(text.ok()) << text.status().message();
  json expected = source;
  expected.erase("maxtext_vocab_size");
  expected["architectures"] = {"Qwen3ForCausalLM"};
  EXPECT_EQ(json::parse(*text), expected);
  const json settings = MaxTextSettings(source);
  EXPECT_EQ(settings["vocab_size"], 64);
  EXPECT_EQ(settings["head_dim"], 14);
  EXPECT_EQ(settings["logits_via_embedding"], false);
  // A Qwen3-Next cycle given only by layer_types.
  EXPECT_EQ(MaxTextSettings(Qwen3NextLayerTypes())["inhomogeneous_layer_cycle_interval"], 3);
  // Qwen3's default head_dim.
  EXPECT_EQ(MaxTextSettings(Qwen3DefaultHeadDim())["head_dim"], 128);
}

}  // namespace
}  // namespace ckptbridge
