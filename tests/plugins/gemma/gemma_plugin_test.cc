// The gemma plugin end to end: Gemma3 text (the real MLX fixture and
// generated checkpoints), Gemma3 with its SigLIP vision tower under both the
// released and transformers' tensor names, and Gemma2's local/global pairs,
// both directions, scanned and unscanned, bf16 and f32.
//
// Every MaxText tensor is checked against values computed here from the HF
// input, with plain index arithmetic and the arithmetic MaxText's hooks do
// (shared/docs/maxtext-mapping.md §6.2, §6.3): RMSNorm weights +1, the Gemma2
// query x f32(1/sqrt(head_dim)), the embedding x sqrt(hidden) (f32 for
// Gemma2, rounded to bfloat16 for Gemma3) with its rows padded or cut - never
// with the converter's ops. Like the rest of ckptbridge the result is rounded
// once to the saved dtype (MaxText rounds to the source dtype first, which
// only matters for --save-dtype float32 from a bfloat16 source). The way back
// is checked against values computed the way MaxText exports (-1, x sqrt(D),
// / normalizer), and with float32 saves it must give every HF byte again.
// The generated checkpoints use deliberately unequal dimensions, so a swapped
// axis or a transposed-when-it-should-not-be tensor cannot pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <tuple>
#include <utility>
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

bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// ---------------------------------------------------------------------------
// A config's dimensions, read the way transformers reads them (restated here,
// not taken from the plugin): Gemma2Config / Gemma3TextConfig defaults, and
// for model_type gemma3 the text_config and vision_config sub-configs.
struct Model {
  std::string type;
  int64_t v = 0, vmt = 0, e = 0, f = 0, layers = 0, nq = 0, nkv = 0, d = 0;
  bool vision = false;
  int64_t ev = 0, fv = 0, vlayers = 0, hv = 0, dv = 0, p = 0, c = 0, npos = 0;

  bool gemma2() const { return type == "gemma2"; }
  std::string text() const { return type == "gemma3" ? "model.language_model." : "model."; }
};

Model ReadModel(const json& top) {
  Model m;
  m.type = top["model_type"];
  const json& c = m.type == "gemma3" ? top["text_config"] : top;
  m.v = c.value("vocab_size", m.gemma2() ? 256000 : 262208);
  m.e = c["hidden_size"];
  m.f = c["intermediate_size"];
  m.layers = c["num_hidden_layers"];
  m.nq = c.value("num_attention_heads", 8);
  m.nkv = c.value("num_key_value_heads", 4);
  m.d = c.value("head_dim", 256);
  // MaxText's vocabularies: 256128 rows for Gemma2's 256000, 262144 for
  // Gemma3's 262208; ckptbridge's maxtext_vocab_size overrides.
  m.vmt = m.v;
  if (m.gemma2() && m.v == 256000) m.vmt = 256128;
  if (!m.gemma2() && m.v == 262208) m.vmt = 262144;
  m.vmt = top.value("maxtext_vocab_size", m.vmt);
  if (top.contains("vision_config")) {
    const json& vc = top["vision_config"];
    m.vision = true;
    m.ev = vc["hidden_size"];
    m.fv = vc["intermediate_size"];
    m.vlayers = vc["num_hidden_layers"];
    m.hv = vc["num_attention_heads"];
    m.dv = m.ev / m.hv;
    m.p = vc["patch_size"];
    m.c = vc.value("num_channels", 3);
    const int64_t side = vc["image_size"].get<int64_t>() / m.p;
    m.npos = side * side;
  }
  return m;
}

// How a checkpoint names its tensors. kPlain: Gemma2 and gemma3_text
// (model.*). kTransformers: multimodal Gemma3 as transformers holds and saves
// it (model.language_model.*, model.vision_tower.vision_model.*,
// model.multi_modal_projector.*). kReleased: the files Google published
// (language_model.model.*, vision_tower.vision_model.*, multi_modal_projector.*).
enum class Naming { kPlain, kTransformers, kReleased };

const std::vector<std::pair<std::string, std::string>>& ReleasedPrefixes() {
  static const std::vector<std::pair<std::string, std::string>> p = {
      {"model.language_model.", "language_model.model."},
      {"model.vision_tower.", "vision_tower."},
      {"model.multi_modal_projector.", "multi_modal_projector."}};
  return p;
}

// transformers' name -> the file's name.
std::string FileName(const std::string& name, Naming naming) {
  if (naming != Naming::kReleased) return name;
  for (const auto& [ours, theirs] : ReleasedPrefixes()) {
    if (StartsWith(name, ours)) return theirs + name.substr(ours.size());
  }
  return name;
}

// The file's name -> transformers' name.
template <typename T>
std::map<std::string, T> Canonical(std::map<std::string, T> tensors, Naming naming) {
  if (naming != Naming::kReleased) return tensors;
  std::map<std::string, T> out;
  for (auto& [name, value] : tensors) {
    std::string renamed = name;
    for (const auto& [ours, theirs] : ReleasedPrefixes()) {
      if (StartsWith(name, theirs)) {
        renamed = ours + name.substr(theirs.size());
        break;
      }
    }
    out.emplace(renamed, std::move(value));
  }
  return out;
}

bool IsVision(const std::string& name) {
  return StartsWith(name, "model.vision_tower.") ||
         StartsWith(name, "model.multi_modal_projector.");
}

template <typename T>
std::map<std::string, T> WithoutVision(std::map<std::string, T> tensors) {
  for (auto it = tensors.begin(); it != tensors.end();) {
    it = IsVision(it->first) ? tensors.erase(it) : std::next(it);
  }
  return tensors;
}

// The HF tensors of a config, with the shapes transformers gives them.
std::vector<HfTensorSpec> GemmaTensors(const json& config, Naming naming) {
  const Model m = ReadModel(config);
  const int64_t e = m.e, d = m.d;
  const std::string t = m.text();
  std::vector<HfTensorSpec> out = {{t + "embed_tokens.weight", {m.v, e}}, {t + "norm.weight", {e}}};
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = t + "layers." + S(l) + ".";
    for (const char* norm : {"input_layernorm", "post_attention_layernorm",
                             "pre_feedforward_layernorm", "post_feedforward_layernorm"}) {
      out.push_back({p + norm + ".weight", {e}});
    }
    out.push_back({p + "self_attn.q_proj.weight", {m.nq * d, e}});
    out.push_back({p + "self_attn.k_proj.weight", {m.nkv * d, e}});
    out.push_back({p + "self_attn.v_proj.weight", {m.nkv * d, e}});
    out.push_back({p + "self_attn.o_proj.weight", {e, m.nq * d}});
    if (!m.gemma2()) {
      out.push_back({p + "self_attn.q_norm.weight", {d}});
      out.push_back({p + "self_attn.k_norm.weight", {d}});
    }
    out.push_back({p + "mlp.gate_proj.weight", {m.f, e}});
    out.push_back({p + "mlp.up_proj.weight", {m.f, e}});
    out.push_back({p + "mlp.down_proj.weight", {e, m.f}});
  }
  if (m.vision) {
    const std::string v = "model.vision_tower.vision_model.";
    const int64_t ev = m.ev;
    out.push_back({v + "embeddings.patch_embedding.weight", {ev, m.c, m.p, m.p}});
    out.push_back({v + "embeddings.patch_embedding.bias", {ev}});
    out.push_back({v + "embeddings.position_embedding.weight", {m.npos, ev}});
    out.push_back({v + "post_layernorm.weight", {ev}});
    out.push_back({v + "post_layernorm.bias", {ev}});
    for (int64_t i = 0; i < m.vlayers; ++i) {
      const std::string p = v + "encoder.layers." + S(i) + ".";
      for (const char* norm : {"layer_norm1", "layer_norm2"}) {
        out.push_back({p + norm + ".weight", {ev}});
        out.push_back({p + norm + ".bias", {ev}});
      }
      for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
        out.push_back({p + "self_attn." + proj + ".weight", {ev, ev}});
        out.push_back({p + "self_attn." + proj + ".bias", {ev}});
      }
      out.push_back({p + "mlp.fc1.weight", {m.fv, ev}});
      out.push_back({p + "mlp.fc1.bias", {m.fv}});
      out.push_back({p + "mlp.fc2.weight", {ev, m.fv}});
      out.push_back({p + "mlp.fc2.bias", {ev}});
    }
    out.push_back({"model.multi_modal_projector.mm_input_projection_weight", {ev, e}});
    out.push_back({"model.multi_modal_projector.mm_soft_emb_norm.weight", {ev}});
  }
  for (HfTensorSpec& spec : out) spec.name = FileName(spec.name, naming);
  return out;
}

// ---------------------------------------------------------------------------
// MaxText's arithmetic, spelled out from param_mapping.py's hooks.

// Gemma2: np.float32(sqrt(hidden)); Gemma3: bfloat16(sqrt(hidden)).
float EmbeddingNormalizer(const Model& m) {
  const float root = static_cast<float>(std::sqrt(static_cast<double>(m.e)));
  return m.gemma2() ? root : testing::RoundTo(DType::kBF16, root);
}
// Gemma2's scale_query_layer: np.float32(1 / np.sqrt(head_dim)) in,
// np.float32(np.sqrt(head_dim)) out.
float QueryScale(const Model& m) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(m.d)));
}
float QueryUnscale(const Model& m) {
  return static_cast<float>(std::sqrt(static_cast<double>(m.d)));
}

// What an HF tensor is, for the arithmetic MaxText does to it.
enum class Kind { kPlain, kRmsNorm, kQuery, kEmbedding };

Kind KindOf(const Model& m, const std::string& name) {
  const std::string t = m.text();
  if (name == t + "embed_tokens.weight") return Kind::kEmbedding;
  if (name == "model.multi_modal_projector.mm_soft_emb_norm.weight") return Kind::kRmsNorm;
  if (StartsWith(name, t) && (EndsWith(name, "layernorm.weight") ||
                              EndsWith(name, "_norm.weight") || name == t + "norm.weight")) {
    return Kind::kRmsNorm;
  }
  if (m.gemma2() && EndsWith(name, "self_attn.q_proj.weight")) return Kind::kQuery;
  return Kind::kPlain;
}

float ToMaxText(const Model& m, Kind kind, float x) {
  switch (kind) {
    case Kind::kRmsNorm:
      return x + 1.0f;
    case Kind::kQuery:
      return x * QueryScale(m);
    case Kind::kEmbedding:
      return x * EmbeddingNormalizer(m);
    case Kind::kPlain:
      break;
  }
  return x;
}

float ToHf(const Model& m, Kind kind, float y) {
  switch (kind) {
    case Kind::kRmsNorm:
      return y - 1.0f;
    case Kind::kQuery:
      return y * QueryUnscale(m);
    case Kind::kEmbedding:
      return y / EmbeddingNormalizer(m);
    case Kind::kPlain:
      break;
  }
  return y;
}

// ---------------------------------------------------------------------------
// The MaxText tensors MaxText's converter would produce, computed directly
// from the (transformers-named) HF tensors.
class Expected {
 public:
  Expected(const std::map<std::string, Values>& hf, const json& config, bool scan, DType dtype,
           bool multimodal)
      : hf_(hf), m_(ReadModel(config)), scan_(scan), dtype_(dtype) {
    Build(multimodal);
  }
  const std::map<std::string, Values>& tensors() const { return out_; }

 private:
  // Where HF layer l lands: its container and, when scanned, its index on
  // the stacked axis 1.
  struct Slot {
    std::string prefix;
    std::string suffix;  // Gemma2's _local / _global
    bool stacked = false;
    int64_t count = 0;
    int64_t index = 0;
  };
  Slot LayerSlot(int64_t l) const {
    if (m_.gemma2()) {
      // MaxText layer l/2 holds the pair; even HF layers are local.
      const std::string suffix = l % 2 == 0 ? "_local" : "_global";
      if (!scan_) return {"decoder.layers_" + S(l / 2) + ".", suffix, false, 0, 0};
      return {"decoder.layers.", suffix, true, m_.layers / 2, l / 2};
    }
    if (!scan_) return {"decoder.layers_" + S(l) + ".", "", false, 0, 0};
    const int64_t repeats = m_.layers / 6;
    if (l < repeats * 6)
      return {"decoder.layers.layers_" + S(l % 6) + ".", "", true, repeats, l / 6};
    return {"decoder.layers_remainder.layers_" + S(l - repeats * 6) + ".", "", false, 0, 0};
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
    if (t.shape.empty()) {
      t.dtype = dtype_;
      t.shape = shape;
      t.data.assign(static_cast<size_t>(NumElementsUnchecked(shape)), 0.0f);
    }
    ASSERT_EQ(t.shape, shape) << name;
    int64_t offset = 0;
    for (size_t i = 0; i < index.size(); ++i) offset = offset * shape[i] + index[i];
    t.data[static_cast<size_t>(offset)] = testing::RoundTo(dtype_, value);
  }
  void SetLayer(const Slot& s, const std::string& sub, Shape shape, std::vector<int64_t> index,
                float value) {
    if (s.stacked) {
      shape.insert(shape.begin() + 1, s.count);
      index.insert(index.begin() + 1, s.index);
    }
    Set(s.prefix + sub, shape, index, value);
  }

  // [n] with the MaxText arithmetic of its kind.
  void Copy(const Slot& s, const std::string& sub, const std::string& hf, int64_t n) {
    const std::vector<float>& w = At(hf);
    const Kind kind = KindOf(m_, hf);
    for (int64_t i = 0; i < n; ++i) SetLayer(s, sub, {n}, {i}, ToMaxText(m_, kind, w[i]));
  }
  // HF [out, in] -> MaxText [in, out].
  void Transposed(const Slot& s, const std::string& sub, const std::string& hf, int64_t out,
                  int64_t in) {
    const std::vector<float>& w = At(hf);
    for (int64_t i = 0; i < in; ++i)
      for (int64_t o = 0; o < out; ++o) SetLayer(s, sub, {in, out}, {i, o}, w[o * in + i]);
  }
  // HF [heads*dim, in] -> MaxText [in, heads, dim]: row h*dim+k is head h.
  void Heads(const Slot& s, const std::string& sub, const std::string& hf, int64_t in,
             int64_t heads, int64_t dim) {
    const std::vector<float>& w = At(hf);
    const Kind kind = KindOf(m_, hf);
    for (int64_t i = 0; i < in; ++i)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t k = 0; k < dim; ++k)
          SetLayer(s, sub, {in, heads, dim}, {i, h, k},
                   ToMaxText(m_, kind, w[(h * dim + k) * in + i]));
  }
  // HF [out, heads*dim] -> MaxText [heads, dim, out]: column h*dim+k is head h.
  void OutHeads(const Slot& s, const std::string& sub, const std::string& hf, int64_t out,
                int64_t heads, int64_t dim) {
    const std::vector<float>& w = At(hf);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t k = 0; k < dim; ++k)
        for (int64_t i = 0; i < out; ++i)
          SetLayer(s, sub, {heads, dim, out}, {h, k, i}, w[i * (heads * dim) + h * dim + k]);
  }

  void Build(bool multimodal) {
    const int64_t e = m_.e, v = m_.v, vmt = m_.vmt;
    const std::string t = m_.text();
    // Rows past the HF vocabulary are zeros; rows past MaxText's are cut.
    const std::vector<float>& emb = At(t + "embed_tokens.weight");
    for (int64_t r = 0; r < vmt; ++r)
      for (int64_t i = 0; i < e; ++i)
        Set("token_embedder.embedding", {vmt, e}, {r, i},
            r < v ? ToMaxText(m_, Kind::kEmbedding, emb[r * e + i]) : 0.0f);
    Copy({}, "decoder.decoder_norm.scale", t + "norm.weight", e);
    for (int64_t l = 0; l < m_.layers; ++l) DecoderLayer(l);
    if (multimodal) VisionTower();
  }

  void DecoderLayer(int64_t l) {
    const Slot s = LayerSlot(l);
    const std::string p = m_.text() + "layers." + S(l) + ".";
    const std::string x = s.suffix;
    const int64_t e = m_.e, d = m_.d, nq = m_.nq, nkv = m_.nkv, f = m_.f;
    Copy(s, "pre_self_attention_norm" + x + ".scale", p + "input_layernorm.weight", e);
    Copy(s, "post_self_attention_norm" + x + ".scale", p + "post_attention_layernorm.weight", e);
    Copy(s, "pre_ffw_norm" + x + ".scale", p + "pre_feedforward_layernorm.weight", e);
    Copy(s, "post_ffw_norm" + x + ".scale", p + "post_feedforward_layernorm.weight", e);
    const std::string a = "self_attention" + x + ".";
    Heads(s, a + "query.kernel", p + "self_attn.q_proj.weight", e, nq, d);
    Heads(s, a + "key.kernel", p + "self_attn.k_proj.weight", e, nkv, d);
    Heads(s, a + "value.kernel", p + "self_attn.v_proj.weight", e, nkv, d);
    OutHeads(s, a + "out.kernel", p + "self_attn.o_proj.weight", e, nq, d);
    if (!m_.gemma2()) {
      Copy(s, a + "query_norm.scale", p + "self_attn.q_norm.weight", d);
      Copy(s, a + "key_norm.scale", p + "self_attn.k_norm.weight", d);
    }
    const std::string mlp = "mlp" + x + ".";
    Transposed(s, mlp + "wi_0.kernel", p + "mlp.gate_proj.weight", f, e);
    Transposed(s, mlp + "wi_1.kernel", p + "mlp.up_proj.weight", f, e);
    Transposed(s, mlp + "wo.kernel", p + "mlp.down_proj.weight", e, f);
  }

  void VisionTower() {
    const int64_t ev = m_.ev, p = m_.p, c = m_.c, n = m_.npos, hv = m_.hv, dv = m_.dv;
    const std::string hf = "model.vision_tower.vision_model.";
    const Slot s{"vision_encoder.Gemma3VisionEncoderLayer_0.", "", false, 0, 0};
    // Conv weight [Ev, C, P, P] -> flax kernel [P, P, C, Ev].
    const std::vector<float>& patch = At(hf + "embeddings.patch_embedding.weight");
    for (int64_t i = 0; i < p; ++i)
      for (int64_t j = 0; j < p; ++j)
        for (int64_t ch = 0; ch < c; ++ch)
          for (int64_t o = 0; o < ev; ++o)
            SetLayer(s, "embedding.kernel", {p, p, c, ev}, {i, j, ch, o},
                     patch[((o * c + ch) * p + i) * p + j]);
    Copy(s, "embedding.bias", hf + "embeddings.patch_embedding.bias", ev);
    const std::vector<float>& pos = At(hf + "embeddings.position_embedding.weight");
    for (int64_t k = 0; k < n; ++k)
      for (int64_t i = 0; i < ev; ++i)
        SetLayer(s, "pos_embedding", {1, n, ev}, {0, k, i}, pos[k * ev + i]);
    Copy(s, "Transformer.encoder_norm.scale", hf + "post_layernorm.weight", ev);
    Copy(s, "Transformer.encoder_norm.bias", hf + "post_layernorm.bias", ev);
    for (int64_t l = 0; l < m_.vlayers; ++l) {
      const Slot b{s.prefix + "Transformer.encoderblock_" + S(l) + ".", "", false, 0, 0};
      const std::string q = hf + "encoder.layers." + S(l) + ".";
      Copy(b, "LayerNorm_0.scale", q + "layer_norm1.weight", ev);
      Copy(b, "LayerNorm_0.bias", q + "layer_norm1.bias", ev);
      Copy(b, "LayerNorm_1.scale", q + "layer_norm2.weight", ev);
      Copy(b, "LayerNorm_1.bias", q + "layer_norm2.bias", ev);
      const std::string a = "MultiHeadDotProductAttention_0.";
      for (auto [proj, name] :
           {std::pair<std::string, std::string>{"q", "query"}, {"k", "key"}, {"v", "value"}}) {
        Heads(b, a + name + ".kernel", q + "self_attn." + proj + "_proj.weight", ev, hv, dv);
        const std::vector<float>& bias = At(q + "self_attn." + proj + "_proj.bias");
        for (int64_t h = 0; h < hv; ++h)
          for (int64_t k = 0; k < dv; ++k)
            SetLayer(b, a + name + ".bias", {hv, dv}, {h, k}, bias[h * dv + k]);
      }
      OutHeads(b, a + "out.kernel", q + "self_attn.out_proj.weight", ev, hv, dv);
      Copy(b, a + "out.bias", q + "self_attn.out_proj.bias", ev);
      Transposed(b, "MlpBlockViT_0.Dense_0.kernel", q + "mlp.fc1.weight", m_.fv, ev);
      Copy(b, "MlpBlockViT_0.Dense_0.bias", q + "mlp.fc1.bias", m_.fv);
      Transposed(b, "MlpBlockViT_0.Dense_1.kernel", q + "mlp.fc2.weight", ev, m_.fv);
      Copy(b, "MlpBlockViT_0.Dense_1.bias", q + "mlp.fc2.bias", ev);
    }
    // The projector's matrix is a Parameter [Ev, E], not a Linear: no transpose.
    const Slot proj{"vision_encoder.VisionEmbedder_0.", "", false, 0, 0};
    const std::vector<float>& w = At("model.multi_modal_projector.mm_input_projection_weight");
    for (int64_t i = 0; i < ev; ++i)
      for (int64_t o = 0; o < m_.e; ++o)
        SetLayer(proj, "mm_input_projection.w", {ev, m_.e}, {i, o}, w[i * m_.e + o]);
    Copy(proj, "mm_soft_embedding_norm.scale",
         "model.multi_modal_projector.mm_soft_emb_norm.weight", ev);
  }

  const std::map<std::string, Values>& hf_;
  const Model m_;
  const bool scan_;
  const DType dtype_;
  std::map<std::string, Values> out_;
};

// The HF tensors the way back must give: each value through MaxText's
// arithmetic, rounded to the MaxText dtype, back through MaxText's export
// arithmetic and rounded to the HF dtype; embedding rows MaxText cut come
// back as zeros.
std::map<std::string, Values> ExpectedBack(const std::map<std::string, Values>& hf,
                                           const json& config, DType mt_dtype, DType hf_dtype) {
  const Model m = ReadModel(config);
  std::map<std::string, Values> out;
  for (const auto& [name, source] : hf) {
    const Kind kind = KindOf(m, name);
    Values back = source;
    back.dtype = hf_dtype;
    for (size_t i = 0; i < back.data.size(); ++i) {
      const float in_maxtext = testing::RoundTo(mt_dtype, ToMaxText(m, kind, source.data[i]));
      back.data[i] = testing::RoundTo(hf_dtype, ToHf(m, kind, in_maxtext));
    }
    if (kind == Kind::kEmbedding && m.vmt < m.v) {
      std::fill(back.data.begin() + m.vmt * m.e, back.data.end(), 0.0f);
    }
    out.emplace(name, std::move(back));
  }
  return out;
}

// Names, dtypes, shapes and every value's bits.
void ExpectSameTensors(const std::map<std::string, Values>& expected,
                       const std::map<std::string, Values>& actual, const std::string& prefix) {
  std::vector<std::string> expected_names, actual_names;
  for (const auto& [name, v] : expected) expected_names.push_back(name);
  for (const auto& [name, v] : actual) {
    if (StartsWith(name, prefix)) actual_names.push_back(name);
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

CliRun ToMaxTextCli(const fs::path& src, const fs::path& dst, bool scan, const std::string& dtype,
                    bool multimodal = false) {
  // Not --quiet: the notes (skipped tensors) are part of what is checked.
  std::vector<std::string> args = {"convert", "--to", "maxtext",
                                   scan ? "--scan-layers" : "--no-scan-layers"};
  if (!dtype.empty()) {
    args.push_back("--save-dtype");
    args.push_back(dtype);
  }
  if (multimodal) args.push_back("--multimodal");
  args.push_back(src.string());
  args.push_back(dst.string());
  return RunCli(args);
}

// ---------------------------------------------------------------------------
// The real MLX-written Gemma3 text model (gemma3_text, 2 layers, hidden 64,
// 4 q / 2 kv heads, head_dim 16, vocab 256, bf16, tied). With two layers
// MaxText's scanned Gemma3 has no scanned block at all: both layers are
// remainder layers.

struct FixtureCase {
  bool scan;
  std::string save_dtype;
};

class RealGemma3Test : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(RealGemma3Test, MapsAsMaxTextAndComesBack) {
  const FixtureCase& c = GetParam();
  const fs::path src = testing::FixtureDir() / "hf" / "mlxd-tiny_gemma3";
  const json config = ReadConfig(src);
  ASSERT_EQ(config["model_type"], "gemma3_text");
  TempDir tmp;
  CliRun to_mt = ToMaxTextCli(src, tmp / "mt", c.scan, c.save_dtype);
  ASSERT_EQ(to_mt.exit_code, 0) << to_mt.err;
  EXPECT_NE(to_mt.out.find("with plugin gemma"), std::string::npos) << to_mt.out;

  const DType dtype = c.save_dtype == "float32" ? DType::kF32 : DType::kBF16;
  const auto hf = testing::ReadHf(src);
  const auto mt = testing::ReadOrbax(tmp / "mt" / "0" / "items");
  ExpectSameTensors(Expected(hf, config, c.scan, dtype, false).tensors(), mt, "params.params.");
  // Spot checks of the layout (E 64, 4 q / 2 kv heads, D 16).
  const std::string layer1 = c.scan ? "params.params.decoder.layers_remainder.layers_1."
                                    : "params.params.decoder.layers_1.";
  EXPECT_EQ(mt.at(layer1 + "self_attention.query.kernel").shape, (Shape{64, 4, 16}));
  EXPECT_EQ(mt.at(layer1 + "self_attention.out.kernel").shape, (Shape{4, 16, 64}));
  EXPECT_EQ(mt.at(layer1 + "self_attention.key_norm.scale").shape, (Shape{16}));
  for (const auto& [name, v] : mt) {
    EXPECT_FALSE(StartsWith(name, "params.params.decoder.layers.")) << name;
  }
  // sqrt(64) = 8 in bfloat16 too, and norms really are stored +1.
  EXPECT_EQ(mt.at("params.params.token_embedder.embedding").data[5],
            testing::RoundTo(dtype, hf.at("model.embed_tokens.weight").data[5] * 8.0f));
  EXPECT_EQ(mt.at("params.params.decoder.decoder_norm.scale").data[3],
            testing::RoundTo(dtype, hf.at("model.norm.weight").data[3] + 1.0f));

  CliRun to_hf = RunCli({"convert", "--to", "hf", "--quiet", (tmp / "mt" / "0" / "items").string(),
                         (tmp / "hf").string()});
  ASSERT_EQ(to_hf.exit_code, 0) << to_hf.err;
  ExpectSameTensors(ExpectedBack(hf, config, dtype, DType::kBF16), testing::ReadHf(tmp / "hf"), "");
  if (dtype == DType::kF32) {
    // Everything is exact in f32: every byte comes back.
    EXPECT_EQ(testing::ReadHfBytes(tmp / "hf"), testing::ReadHfBytes(src));
  }
  const json back = ReadConfig(tmp / "hf");
  EXPECT_EQ(back["model_type"], "gemma3_text");
  EXPECT_EQ(back["architectures"], json::array({"Gemma3ForCausalLM"}));
  EXPECT_EQ(back["torch_dtype"], "bfloat16");
  EXPECT_EQ(back["hidden_size"], 64);
}

INSTANTIATE_TEST_SUITE_P(Fixture, RealGemma3Test,
                         ::testing::Values(FixtureCase{true, ""}, FixtureCase{false, ""},
                                           FixtureCase{true, "float32"},
                                           FixtureCase{false, "float32"}),
                         [](const ::testing::TestParamInfo<FixtureCase>& info) {
                           return std::string(info.param.scan ? "scanned" : "unscanned") +
                                  (info.param.save_dtype.empty() ? "_bf16" : "_f32");
                         });

// ---------------------------------------------------------------------------
// Generated checkpoints of every variant.

json Gemma2Padded() {
  return {{"architectures", {"Gemma2ForCausalLM"}},
          {"model_type", "gemma2"},
          {"vocab_size", 50},
          {"maxtext_vocab_size", 64},
          {"hidden_size", 36},
          {"intermediate_size", 44},
          {"num_hidden_layers", 6},
          {"num_attention_heads", 6},
          {"num_key_value_heads", 2},
          {"head_dim", 12},
          {"query_pre_attn_scalar", 12},
          {"final_logit_softcapping", 30.0},
          {"attn_logit_softcapping", 50.0},
          {"sliding_window", 16},
          {"rms_norm_eps", 1e-6},
          {"torch_dtype", "bfloat16"}};
}

// sqrt(48) and 1/sqrt(20) are not exact in f32; no vocabulary padding.
json Gemma2Plain() {
  return {{"model_type", "gemma2"},   {"vocab_size", 40},       {"hidden_size", 48},
          {"intermediate_size", 40},  {"num_hidden_layers", 4}, {"num_attention_heads", 4},
          {"num_key_value_heads", 4}, {"head_dim", 20},         {"torch_dtype", "bfloat16"}};
}

// 8 layers: one scanned block of 6 and two remainder layers.
json Gemma3Text() {
  return {{"architectures", {"Gemma3ForCausalLM"}},
          {"model_type", "gemma3_text"},
          {"vocab_size", 70},
          {"hidden_size", 40},
          {"intermediate_size", 52},
          {"num_hidden_layers", 8},
          {"num_attention_heads", 6},
          {"num_key_value_heads", 2},
          {"head_dim", 12},
          {"sliding_window", 8},
          {"sliding_window_pattern", 6},
          {"rope_theta", 1000000.0},
          {"rope_local_base_freq", 10000.0},
          {"torch_dtype", "bfloat16"}};
}

// Multimodal, 13 layers (two scanned repeats and one remainder layer), a
// vocabulary MaxText cuts from 72 to 64 rows.
json Gemma3Multimodal() {
  return {{"architectures", {"Gemma3ForConditionalGeneration"}},
          {"model_type", "gemma3"},
          {"maxtext_vocab_size", 64},
          {"mm_tokens_per_image", 4},
          {"text_config",
           {{"model_type", "gemma3_text"},
            {"vocab_size", 72},
            {"hidden_size", 32},
            {"intermediate_size", 48},
            {"num_hidden_layers", 13},
            {"num_attention_heads", 4},
            {"num_key_value_heads", 1},
            {"head_dim", 10},
            {"rope_scaling", {{"factor", 8.0}, {"rope_type", "linear"}}}}},
          {"vision_config",
           {{"model_type", "siglip_vision_model"},
            {"hidden_size", 24},
            {"intermediate_size", 28},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 3},
            {"patch_size", 4},
            {"image_size", 12},
            {"num_channels", 3},
            {"vision_use_head", false}}},
          {"torch_dtype", "bfloat16"}};
}

// Exactly one block of 6 (no remainder), a vocabulary padded from 72 to 80.
json Gemma3MultimodalPadded() {
  json c = Gemma3Multimodal();
  c["maxtext_vocab_size"] = 80;
  c["text_config"]["num_hidden_layers"] = 6;
  return c;
}

struct Variant {
  std::string name;
  json config;
  Naming naming = Naming::kPlain;
  bool multimodal = false;
};

std::vector<Variant> Variants() {
  return {
      {"gemma2_vocab_padded", Gemma2Padded()},
      {"gemma2_inexact_scales", Gemma2Plain()},
      {"gemma3_text_block_and_remainder", Gemma3Text()},
      {"gemma3_released_names_multimodal_vocab_cut", Gemma3Multimodal(), Naming::kReleased, true},
      {"gemma3_released_names_text_only", Gemma3Multimodal(), Naming::kReleased, false},
      {"gemma3_transformers_names_multimodal_vocab_padded", Gemma3MultimodalPadded(),
       Naming::kTransformers, true},
      {"gemma3_transformers_names_text_only", Gemma3MultimodalPadded(), Naming::kTransformers,
       false}};
}

using GeneratedCase = std::tuple<Variant, bool, std::string>;

class GeneratedGemmaTest : public ::testing::TestWithParam<GeneratedCase> {};

TEST_P(GeneratedGemmaTest, MapsAsMaxTextAndComesBack) {
  const auto& [variant, scan, dtype] = GetParam();
  TempDir tmp;
  // Small shards, so the source is an index + shards set.
  testing::WriteHfCheckpoint(tmp / "src", variant.config,
                             GemmaTensors(variant.config, variant.naming), DType::kBF16,
                             /*seed=*/23, /*max_shard_bytes=*/24 << 10);
  CliRun to_mt = ToMaxTextCli(tmp / "src", tmp / "mt", scan, dtype, variant.multimodal);
  ASSERT_EQ(to_mt.exit_code, 0) << to_mt.err;
  const DType mt_dtype = dtype == "float32" ? DType::kF32 : DType::kBF16;
  const auto hf = Canonical(testing::ReadHf(tmp / "src"), variant.naming);
  ExpectSameTensors(Expected(hf, variant.config, scan, mt_dtype, variant.multimodal).tensors(),
                    testing::ReadOrbax(tmp / "mt"), "params.params.");
  const Model m = ReadModel(variant.config);
  if (m.vision && !variant.multimodal) {
    const size_t vision_tensors = 5 + 16 * static_cast<size_t>(m.vlayers) + 2;
    EXPECT_NE(to_mt.err.find("skipped " + std::to_string(vision_tensors) +
                             " tensors (vision tower and multimodal projector: converted only "
                             "with --multimodal)"),
              std::string::npos)
        << to_mt.err;
  }

  std::vector<std::string> back_args = {"convert", "--to", "hf", "--max-shard-size", "20KiB"};
  if (variant.multimodal) back_args.push_back("--multimodal");
  back_args.push_back((tmp / "mt").string());
  back_args.push_back((tmp / "hf").string());
  CliRun to_hf = RunCli(back_args);
  ASSERT_EQ(to_hf.exit_code, 0) << to_hf.err;
  // Export writes transformers' names, whatever the source called them.
  const auto converted = variant.multimodal ? hf : WithoutVision(hf);
  ExpectSameTensors(ExpectedBack(converted, variant.config, mt_dtype, DType::kBF16),
                    testing::ReadHf(tmp / "hf"), "");
  if (mt_dtype == DType::kF32 && m.vmt >= m.v) {
    auto source = Canonical(testing::ReadHfBytes(tmp / "src"), variant.naming);
    if (!variant.multimodal) source = WithoutVision(std::move(source));
    EXPECT_EQ(testing::ReadHfBytes(tmp / "hf"), source);
  }
  json config = ReadConfig(tmp / "hf");
  EXPECT_FALSE(config.contains("maxtext_vocab_size")) << "ckptbridge's own key leaks into HF";
  EXPECT_EQ(config["model_type"], variant.config["model_type"]);
  if (m.type == "gemma3") {
    EXPECT_EQ(config["text_config"], variant.config["text_config"]);
    EXPECT_EQ(config["vision_config"], variant.config["vision_config"]);
  }
  EXPECT_TRUE(config["architectures"].is_array());
}

INSTANTIATE_TEST_SUITE_P(Variants, GeneratedGemmaTest,
                         ::testing::Combine(::testing::ValuesIn(Variants()), ::testing::Bool(),
                                            ::testing::Values("bfloat16", "float32")),
                         [](const ::testing::TestParamInfo<GeneratedCase>& info) {
                           return std::get<0>(info.param).name +
                                  (std::get<1>(info.param) ? "_scanned_" : "_unscanned_") +
                                  std::get<2>(info.param);
                         });

// The MaxText layout in names and shapes, spelled out (so a regression names
// the tensor).
TEST(GemmaLayoutTest, Gemma2PairsLocalAndGlobal) {
  TempDir tmp;
  const json config = Gemma2Padded();
  testing::WriteHfCheckpoint(tmp / "src", config, GemmaTensors(config, Naming::kPlain),
                             DType::kBF16, 3);
  ASSERT_EQ(ToMaxTextCli(tmp / "src", tmp / "mt", true, "float32").exit_code, 0);
  ASSERT_EQ(ToMaxTextCli(tmp / "src", tmp / "mt1", false, "float32").exit_code, 0);
  const auto mt = testing::ReadOrbax(tmp / "mt");
  const std::string p = "params.params.decoder.layers.";
  // E 36, L/2 = 3 pairs, Nq 6, Nkv 2, D 12, F 44.
  EXPECT_EQ(mt.at(p + "self_attention_local.query.kernel").shape, (Shape{36, 3, 6, 12}));
  EXPECT_EQ(mt.at(p + "self_attention_global.out.kernel").shape, (Shape{6, 3, 12, 36}));
  EXPECT_EQ(mt.at(p + "self_attention_global.key.kernel").shape, (Shape{36, 3, 2, 12}));
  EXPECT_EQ(mt.at(p + "pre_ffw_norm_local.scale").shape, (Shape{36, 3}));
  EXPECT_EQ(mt.at(p + "mlp_global.wi_0.kernel").shape, (Shape{36, 3, 44}));
  EXPECT_EQ(mt.at(p + "mlp_local.wo.kernel").shape, (Shape{44, 3, 36}));
  EXPECT_EQ(mt.at("params.params.token_embedder.embedding").shape, (Shape{64, 36}));
  EXPECT_FALSE(mt.count("params.params.decoder.logits_dense.kernel"));
  // Pair 2's global layer is HF layer 5: post_ffw_norm_global[i 7][pair 2].
  const auto hf = testing::ReadHf(tmp / "src");
  EXPECT_EQ(mt.at(p + "post_ffw_norm_global.scale").data[7 * 3 + 2],
            hf.at("model.layers.5.post_feedforward_layernorm.weight").data[7] + 1.0f);
  const auto mt1 = testing::ReadOrbax(tmp / "mt1");
  EXPECT_EQ(mt1.at("params.params.decoder.layers_2.self_attention_local.query.kernel").shape,
            (Shape{36, 6, 12}));
  // Unscanned pair 1's local layer is HF layer 2.
  EXPECT_EQ(mt1.at("params.params.decoder.layers_1.pre_self_attention_norm_local.scale").data[4],
            hf.at("model.layers.2.input_layernorm.weight").data[4] + 1.0f);
  EXPECT_FALSE(mt1.count("params.params.decoder.layers_3.mlp_local.wi_0.kernel"));
}

TEST(GemmaLayoutTest, Gemma3BlocksOfSixAndRemainder) {
  TempDir tmp;
  const json config = Gemma3Multimodal();
  testing::WriteHfCheckpoint(tmp / "src", config, GemmaTensors(config, Naming::kReleased),
                             DType::kBF16, 5);
  ASSERT_EQ(ToMaxTextCli(tmp / "src", tmp / "mt", true, "float32", true).exit_code, 0);
  const auto mt = testing::ReadOrbax(tmp / "mt");
  const std::string b = "params.params.decoder.layers.layers_";
  const std::string r = "params.params.decoder.layers_remainder.layers_";
  // E 32, 13 layers = 2 repeats of 6 + 1, Nq 4, Nkv 1, D 10.
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(mt.at(b + S(i) + ".self_attention.query.kernel").shape, (Shape{32, 2, 4, 10}));
    EXPECT_EQ(mt.at(b + S(i) + ".self_attention.query_norm.scale").shape, (Shape{10, 2}));
  }
  EXPECT_EQ(mt.at(r + "0.self_attention.key.kernel").shape, (Shape{32, 1, 10}));
  EXPECT_EQ(mt.at(r + "0.mlp.wo.kernel").shape, (Shape{48, 32}));
  EXPECT_FALSE(mt.count(b + "6.self_attention.query.kernel"));
  EXPECT_FALSE(mt.count(r + "1.self_attention.query.kernel"));
  EXPECT_EQ(mt.at("params.params.token_embedder.embedding").shape, (Shape{64, 32}));
  // Block 3's second repetition is HF layer 9; the remainder layer is HF 12.
  const auto hf = testing::ReadHf(tmp / "src");
  EXPECT_EQ(mt.at(b + "3.self_attention.key_norm.scale").data[4 * 2 + 1],
            hf.at("language_model.model.layers.9.self_attn.k_norm.weight").data[4] + 1.0f);
  EXPECT_EQ(
      mt.at(r + "0.pre_ffw_norm.scale").data[6],
      hf.at("language_model.model.layers.12.pre_feedforward_layernorm.weight").data[6] + 1.0f);
  // The vision tower: Ev 24, 3 heads of 8, P 4, 9 positions.
  const std::string v = "params.params.vision_encoder.Gemma3VisionEncoderLayer_0.";
  EXPECT_EQ(mt.at(v + "embedding.kernel").shape, (Shape{4, 4, 3, 24}));
  EXPECT_EQ(mt.at(v + "pos_embedding").shape, (Shape{1, 9, 24}));
  const std::string a = v + "Transformer.encoderblock_1.MultiHeadDotProductAttention_0.";
  EXPECT_EQ(mt.at(a + "query.kernel").shape, (Shape{24, 3, 8}));
  EXPECT_EQ(mt.at(a + "value.bias").shape, (Shape{3, 8}));
  EXPECT_EQ(mt.at(a + "out.kernel").shape, (Shape{3, 8, 24}));
  EXPECT_EQ(mt.at(a + "out.bias").shape, (Shape{24}));
  EXPECT_EQ(mt.at(v + "Transformer.encoderblock_0.MlpBlockViT_0.Dense_0.kernel").shape,
            (Shape{24, 28}));
  EXPECT_EQ(mt.at("params.params.vision_encoder.VisionEmbedder_0.mm_input_projection.w").shape,
            (Shape{24, 32}));
  // No layer norm of the vision tower is shifted; the projector's RMSNorm is.
  EXPECT_EQ(mt.at(v + "Transformer.encoder_norm.scale").data[2],
            hf.at("vision_tower.vision_model.post_layernorm.weight").data[2]);
  EXPECT_EQ(
      mt.at("params.params.vision_encoder.VisionEmbedder_0.mm_soft_embedding_norm.scale").data[2],
      hf.at("multi_modal_projector.mm_soft_emb_norm.weight").data[2] + 1.0f);
}

// transformers 5.8 and later save the vision tower without `vision_model.`.
TEST(GemmaNamesTest, VisionTowerWithoutVisionModelLevel) {
  TempDir tmp;
  const json config = Gemma3MultimodalPadded();
  std::vector<HfTensorSpec> tensors = GemmaTensors(config, Naming::kTransformers);
  for (HfTensorSpec& t : tensors) {
    const std::string level = "model.vision_tower.vision_model.";
    if (StartsWith(t.name, level)) t.name = "model.vision_tower." + t.name.substr(level.size());
  }
  testing::WriteHfCheckpoint(tmp / "src", config, tensors, DType::kBF16, 7);
  CliRun run = ToMaxTextCli(tmp / "src", tmp / "mt", true, "float32", true);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto mt = testing::ReadOrbax(tmp / "mt");
  const auto hf = testing::ReadHf(tmp / "src");
  EXPECT_EQ(mt.at("params.params.vision_encoder.Gemma3VisionEncoderLayer_0.Transformer."
                  "encoderblock_1.LayerNorm_1.bias")
                .data[3],
            hf.at("model.vision_tower.encoder.layers.1.layer_norm2.bias").data[3]);
}

// A MaxText checkpoint with a vision encoder exports text-only without
// --multimodal (the vision arrays are skipped with a note), as MaxText's
// to_huggingface does with use_multimodal=false.
TEST(GemmaNamesTest, TextOnlyExportOfAMultimodalCheckpoint) {
  TempDir tmp;
  const json config = Gemma3MultimodalPadded();
  testing::WriteHfCheckpoint(tmp / "src", config, GemmaTensors(config, Naming::kTransformers),
                             DType::kBF16, 9);
  ASSERT_EQ(ToMaxTextCli(tmp / "src", tmp / "mt", false, "float32", true).exit_code, 0);
  CliRun text = RunCli({"convert", "--to", "hf", (tmp / "mt").string(), (tmp / "hf").string()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.err.find("tensors (vision tower and multimodal projector: converted only with "
                          "--multimodal)"),
            std::string::npos)
      << text.err;
  EXPECT_EQ(testing::ReadHfBytes(tmp / "hf"), WithoutVision(testing::ReadHfBytes(tmp / "src")));
  CliRun all = RunCli(
      {"convert", "--to", "hf", "--multimodal", (tmp / "mt").string(), (tmp / "hf-all").string()});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_EQ(testing::ReadHfBytes(tmp / "hf-all"), testing::ReadHfBytes(tmp / "src"));
}

// --multimodal asks for vision towers of families that have one; Gemma2 and
// gemma3_text have none, so it changes nothing.
TEST(GemmaNamesTest, MultimodalOnATextOnlyFamilyChangesNothing) {
  TempDir tmp;
  const json config = Gemma2Plain();
  testing::WriteHfCheckpoint(tmp / "src", config, GemmaTensors(config, Naming::kPlain),
                             DType::kBF16, 4);
  ASSERT_EQ(ToMaxTextCli(tmp / "src", tmp / "mt", true, "float32", true).exit_code, 0);
  ExpectSameTensors(
      Expected(testing::ReadHf(tmp / "src"), config, true, DType::kF32, false).tensors(),
      testing::ReadOrbax(tmp / "mt"), "params.params.");
}

// ---------------------------------------------------------------------------
// The plugin asked directly: presets, MaxText settings, op factors,
// full-size shapes and every refusal.

const LoadedPlugin& Plugin() {
  static const LoadedPlugin plugin = [] {
    Result<LoadedPlugin> p = LoadPlugin(CKB_GEMMA_PLUGIN_FILE);
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

RuleSet RulesOf(const json& config, bool scan, bool multimodal = false,
                const std::string& direction = "to_maxtext") {
  std::unique_ptr<Adapter> adapter = AdapterFor(config);
  if (!adapter) return {};
  const json options = {
      {"direction", direction}, {"scan_layers", scan}, {"multimodal", multimodal}};
  Result<RuleSet> rules = adapter->Rules(options.dump());
  EXPECT_TRUE(rules.ok()) << rules.status().message();
  return rules.ok() ? *rules : RuleSet{};
}

// The rule writing MaxText tensor `mt` (with its full, stacked shape).
const Rule* RuleFor(const RuleSet& rules, const std::string& mt) {
  for (const Rule& rule : rules.rules) {
    for (const TensorDecl& t : rule.mt_outputs) {
      if (t.name == mt) return &rule;
    }
  }
  ADD_FAILURE() << "no rule writes " << mt;
  return nullptr;
}

Shape MtShape(const RuleSet& rules, const std::string& mt) {
  const Rule* rule = RuleFor(rules, mt);
  return rule ? rule->mt_outputs.at(0).dims : Shape{};
}

const OpSpec* OpOf(const Rule* rule, OpKind kind) {
  if (!rule) return nullptr;
  for (const OpSpec& op : rule->ops) {
    if (op.kind == kind) return &op;
  }
  return nullptr;
}

// Every key of MaxText's configs/models/<name>.yml (at the commit the mapping
// doc cites), as the settings a user needs to train on the result.
std::map<std::string, json> MaxTextYmls() {
  auto gemma2 = [](int64_t emb, int64_t q, int64_t kv, int64_t mlp, int64_t layers,
                   int64_t head_dim) {
    return json{{"base_emb_dim", emb},
                {"base_num_query_heads", q},
                {"base_num_kv_heads", kv},
                {"base_mlp_dim", mlp},
                {"base_num_decoder_layers", layers},
                {"head_dim", head_dim},
                {"mlp_activations", {"gelu", "linear"}},
                {"vocab_size", 256128},
                {"decoder_block", "gemma2"},
                {"normalization_layer_epsilon", 1e-6},
                {"logits_via_embedding", true},
                {"final_logits_soft_cap", 30.0},
                {"attn_logits_soft_cap", 50.0},
                {"sliding_window_size", 4096},
                {"use_post_attn_norm", true},
                {"use_post_ffw_norm", true}};
  };
  auto gemma3 = [](int64_t layers, int64_t emb, int64_t q, int64_t kv, int64_t mlp,
                   int64_t head_dim) {
    return json{{"base_num_decoder_layers", layers},
                {"base_emb_dim", emb},
                {"base_num_query_heads", q},
                {"base_num_kv_heads", kv},
                {"base_mlp_dim", mlp},
                {"head_dim", head_dim},
                {"mlp_activations", {"gelu", "linear"}},
                {"vocab_size", 262144},
                {"decoder_block", "gemma3"},
                {"normalization_layer_epsilon", 1e-6},
                {"logits_via_embedding", true},
                {"sliding_window_size", 1024},
                {"use_post_attn_norm", true},
                {"use_post_ffw_norm", true},
                {"local_rope_max_timescale", 10000.0},
                {"rope_max_timescale", 1000000.0},
                {"rope_linear_scaling_factor", 8.0},
                {"vision_encoder_block", "gemma3"},
                {"image_size_for_vit", 896},
                {"num_channels_for_vit", 3},
                {"patch_size_for_vit", 14},
                {"conv_stride_for_vit", 14},
                {"hidden_size_for_vit", 1152},
                {"intermediate_size_for_vit", 4304},
                {"num_hidden_layers_for_vit", 27},
                {"num_attention_heads_for_vit", 16},
                {"image_placeholder", "<start_of_image>"}};
  };
  return {{"gemma2-2b", gemma2(2304, 8, 4, 9216, 13, 256)},
          {"gemma2-9b", gemma2(3584, 16, 8, 14336, 21, 256)},
          {"gemma2-27b", gemma2(4608, 32, 16, 36864, 23, 128)},
          {"gemma3-4b", gemma3(34, 2560, 8, 4, 10240, 256)},
          {"gemma3-12b", gemma3(48, 3840, 16, 8, 15360, 256)},
          {"gemma3-27b", gemma3(62, 5376, 32, 16, 21504, 128)}};
}

TEST(GemmaPresetTest, EveryPresetGivesMaxTextsModelSettings) {
  const std::map<std::string, json> ymls = MaxTextYmls();
  const std::set<std::string> presets(Plugin().model_presets.begin(), Plugin().model_presets.end());
  std::set<std::string> want;
  for (const auto& [name, yml] : ymls) want.insert(name);
  EXPECT_EQ(presets, want);
  for (const std::string& name : presets) {
    SCOPED_TRACE(name);
    const json settings = MaxTextSettings(PresetOf(name));
    for (const auto& [key, value] : ymls.at(name).items()) {
      EXPECT_EQ(settings.value(key, json()), value) << key;
    }
  }
  Result<std::string> unknown = PresetConfig(Plugin(), "gemma4-31b");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("unknown model 'gemma4-31b'"), std::string::npos);
}

TEST(GemmaPresetTest, PluginsCommandListsTheFamilies) {
  CliRun run = RunCli({"plugins", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const json doc = json::parse(run.out);
  json gemma;
  for (const json& p : doc["plugins"]) {
    if (p["name"] == "gemma") gemma = p;
  }
  ASSERT_TRUE(gemma.is_object()) << run.out;
  EXPECT_EQ(gemma["model_types"], json({"gemma2", "gemma3", "gemma3_text"}));
  EXPECT_EQ(gemma["architectures"],
            json({"Gemma2ForCausalLM", "Gemma3ForConditionalGeneration", "Gemma3ForCausalLM"}));
  EXPECT_EQ(gemma["version"], "0.1.0");
  EXPECT_EQ(gemma["presets"], json({"gemma2-27b", "gemma2-2b", "gemma2-9b", "gemma3-12b",
                                    "gemma3-27b", "gemma3-4b"}));
}

// --model NAME gives the export its HF config when the checkpoint has none
// of its own: here the preset's full size disagrees with a tiny checkpoint,
// which is refused naming both shapes.
TEST(GemmaPresetTest, ModelFlagUsesThePreset) {
  TempDir tmp;
  ASSERT_EQ(ToMaxTextCli(testing::FixtureDir() / "hf" / "mlxd-tiny_gemma3", tmp / "mt", false, "")
                .exit_code,
            0);
  CliRun run = RunCli({"convert", "--to", "hf", "--model", "gemma3-4b", (tmp / "mt").string(),
                       (tmp / "hf").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("has shape [256, 64] but plugin 'gemma'"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("expects [262144, 2560]"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(tmp / "hf"));
}

// mapping doc §6.2: scanned gemma2-2b, and the factors of its ops.
TEST(GemmaFullSizeTest, Gemma2_2b) {
  const json config = PresetOf("gemma2-2b");
  const RuleSet rules = RulesOf(config, true);
  const std::string p = "decoder.layers.";
  EXPECT_EQ(MtShape(rules, p + "self_attention_local.query.kernel"), (Shape{2304, 13, 8, 256}));
  EXPECT_EQ(MtShape(rules, p + "self_attention_global.out.kernel"), (Shape{8, 13, 256, 2304}));
  EXPECT_EQ(MtShape(rules, p + "pre_self_attention_norm_global.scale"), (Shape{2304, 13}));
  EXPECT_EQ(MtShape(rules, p + "mlp_local.wi_0.kernel"), (Shape{2304, 13, 9216}));
  EXPECT_EQ(MtShape(rules, p + "mlp_global.wo.kernel"), (Shape{9216, 13, 2304}));
  // Local layers are HF 0, 2, ..., 24; global 1, 3, ..., 25.
  const Rule* local = RuleFor(rules, p + "mlp_local.wo.kernel");
  const Rule* global = RuleFor(rules, p + "mlp_global.wo.kernel");
  ASSERT_TRUE(local && global);
  EXPECT_EQ(local->stack.at(0).hf_start, 0);
  EXPECT_EQ(local->stack.at(0).hf_stride, 2);
  EXPECT_EQ(global->stack.at(0).hf_start, 1);
  EXPECT_EQ(global->stack.at(0).hf_stride, 2);
  EXPECT_EQ(global->hf_inputs.at(0).name, "model.layers.{layer}.mlp.down_proj.weight");
  // 256000 rows padded to 256128, times f32(sqrt(2304)) = 48.
  const Rule* embedding = RuleFor(rules, "token_embedder.embedding");
  ASSERT_TRUE(embedding);
  EXPECT_EQ(embedding->hf_inputs.at(0).dims, (Shape{256000, 2304}));
  EXPECT_EQ(embedding->mt_outputs.at(0).dims, (Shape{256128, 2304}));
  EXPECT_FALSE(embedding->lossy());
  const OpSpec* scale = OpOf(embedding, OpKind::kScale);
  ASSERT_TRUE(scale);
  EXPECT_EQ(scale->factor, 48.0f);
  EXPECT_EQ(scale->inverse_factor, 1.0f / 48.0f);
  // The query: x f32(1/16) in, x 16 out.
  const OpSpec* query =
      OpOf(RuleFor(rules, p + "self_attention_global.query.kernel"), OpKind::kScale);
  ASSERT_TRUE(query);
  EXPECT_EQ(query->factor, 0.0625f);
  EXPECT_EQ(query->inverse_factor, 16.0f);
  // Every RMSNorm +1, the key not scaled.
  EXPECT_EQ(OpOf(RuleFor(rules, p + "post_ffw_norm_local.scale"), OpKind::kAdd)->factor, 1.0f);
  EXPECT_EQ(OpOf(RuleFor(rules, "decoder.decoder_norm.scale"), OpKind::kAdd)->factor, 1.0f);
  EXPECT_EQ(OpOf(RuleFor(rules, p + "self_attention_local.key.kernel"), OpKind::kScale), nullptr);
  // Unscanned: 13 pairs; pair 12 holds HF layers 24 and 25.
  const RuleSet flat = RulesOf(config, false);
  EXPECT_EQ(RuleFor(flat, "decoder.layers_12.mlp_global.wi_1.kernel")->hf_inputs.at(0).name,
            "model.layers.25.mlp.up_proj.weight");
  EXPECT_EQ(RuleFor(flat, "decoder.layers_12.mlp_local.wi_1.kernel")->hf_inputs.at(0).name,
            "model.layers.24.mlp.up_proj.weight");
}

// Gemma2-27b: head_dim 128, so the query factors are not powers of two; the
// way out multiplies by f32(sqrt(128)), as MaxText does.
TEST(GemmaFullSizeTest, Gemma2_27bQueryFactors) {
  const RuleSet rules = RulesOf(PresetOf("gemma2-27b"), true);
  const OpSpec* query =
      OpOf(RuleFor(rules, "decoder.layers.self_attention_local.query.kernel"), OpKind::kScale);
  ASSERT_TRUE(query);
  EXPECT_EQ(query->factor, static_cast<float>(1.0 / std::sqrt(128.0)));
  EXPECT_EQ(query->inverse_factor, static_cast<float>(std::sqrt(128.0)));
  EXPECT_EQ(MtShape(rules, "decoder.layers.self_attention_local.query.kernel"),
            (Shape{4608, 23, 32, 128}));
}

// mapping doc §6.3: scanned gemma3-4b with the vision tower.
TEST(GemmaFullSizeTest, Gemma3_4b) {
  const json config = PresetOf("gemma3-4b");
  const RuleSet rules = RulesOf(config, true, true);
  for (int b = 0; b < 6; ++b) {
    const std::string p = "decoder.layers.layers_" + S(b) + ".";
    EXPECT_EQ(MtShape(rules, p + "self_attention.query.kernel"), (Shape{2560, 5, 8, 256}));
    EXPECT_EQ(MtShape(rules, p + "self_attention.query_norm.scale"), (Shape{256, 5}));
    const Rule* rule = RuleFor(rules, p + "mlp.wi_0.kernel");
    ASSERT_TRUE(rule);
    EXPECT_EQ(rule->stack.at(0).hf_start, b);
    EXPECT_EQ(rule->stack.at(0).hf_stride, 6);
    EXPECT_EQ(rule->stack.at(0).count, 5);
    EXPECT_EQ(rule->hf_inputs.at(0).name,
              "model.language_model.layers.{layer}.mlp.gate_proj.weight");
  }
  for (int r = 0; r < 4; ++r) {
    const std::string p = "decoder.layers_remainder.layers_" + S(r) + ".";
    EXPECT_EQ(MtShape(rules, p + "self_attention.query.kernel"), (Shape{2560, 8, 256}));
    EXPECT_EQ(RuleFor(rules, p + "self_attention.key_norm.scale")->hf_inputs.at(0).name,
              "model.language_model.layers." + S(30 + r) + ".self_attn.k_norm.weight");
  }
  // No query scaling for Gemma3; sqrt(2560) = 50.596 rounds to 50.5 in bf16.
  EXPECT_EQ(
      OpOf(RuleFor(rules, "decoder.layers.layers_0.self_attention.query.kernel"), OpKind::kScale),
      nullptr);
  const Rule* embedding = RuleFor(rules, "token_embedder.embedding");
  ASSERT_TRUE(embedding);
  EXPECT_EQ(OpOf(embedding, OpKind::kScale)->factor, 50.5f);
  EXPECT_EQ(OpOf(embedding, OpKind::kScale)->inverse_factor, static_cast<float>(1.0 / 50.5));
  EXPECT_EQ(embedding->mt_outputs.at(0).dims, (Shape{262144, 2560}));
  // Vision: Ev 1152, 16 heads of 72, P 14, (896/14)^2 = 4096 positions.
  const std::string v = "vision_encoder.Gemma3VisionEncoderLayer_0.";
  EXPECT_EQ(MtShape(rules, v + "embedding.kernel"), (Shape{14, 14, 3, 1152}));
  EXPECT_EQ(MtShape(rules, v + "pos_embedding"), (Shape{1, 4096, 1152}));
  const std::string a = v + "Transformer.encoderblock_26.MultiHeadDotProductAttention_0.";
  EXPECT_EQ(MtShape(rules, a + "query.kernel"), (Shape{1152, 16, 72}));
  EXPECT_EQ(MtShape(rules, a + "key.bias"), (Shape{16, 72}));
  EXPECT_EQ(MtShape(rules, a + "out.kernel"), (Shape{16, 72, 1152}));
  EXPECT_EQ(MtShape(rules, v + "Transformer.encoderblock_26.MlpBlockViT_0.Dense_1.kernel"),
            (Shape{4304, 1152}));
  EXPECT_EQ(MtShape(rules, "vision_encoder.VisionEmbedder_0.mm_input_projection.w"),
            (Shape{1152, 2560}));
  const Rule* patch = RuleFor(rules, v + "embedding.kernel");
  ASSERT_TRUE(patch);
  EXPECT_EQ(patch->hf_inputs.at(0).dims, (Shape{1152, 3, 14, 14}));
  EXPECT_EQ(OpOf(patch, OpKind::kTranspose)->values, (std::vector<int64_t>{2, 3, 1, 0}));
  // The released names are read as transformers' names.
  std::map<std::string, std::string> renames;
  for (const RenameRule& r : rules.renames) renames[r.from_prefix] = r.to_prefix;
  EXPECT_EQ(renames["language_model.model."], "model.language_model.");
  EXPECT_EQ(renames["vision_tower."], "model.vision_tower.");
  EXPECT_EQ(renames["multi_modal_projector."], "model.multi_modal_projector.");
  // Text-only: no vision rule, and the vision tensors are known and skipped.
  const RuleSet text = RulesOf(config, true, false);
  for (const Rule& rule : text.rules) {
    EXPECT_FALSE(StartsWith(rule.mt_outputs.at(0).name, "vision_encoder."))
        << rule.mt_outputs[0].name;
  }
  std::set<std::string> ignored;
  for (const IgnoreRule& i : text.ignores) ignored.insert(i.pattern);
  EXPECT_TRUE(ignored.count("model.vision_tower.*"));
  EXPECT_TRUE(ignored.count("vision_encoder.*"));
}

// The released Gemma3 checkpoints have 262208 rows (transformers' default
// vocab_size, which their text_config leaves out); MaxText keeps 262144.
TEST(GemmaFullSizeTest, Gemma3ReleasedVocabularyIsCut) {
  json config = PresetOf("gemma3-12b");
  for (const char* key : {"vocab_size", "num_attention_heads", "num_key_value_heads", "head_dim"}) {
    config["text_config"].erase(key);
  }
  config["text_config"]["num_attention_heads"] = 16;
  config["text_config"]["num_key_value_heads"] = 8;
  const RuleSet rules = RulesOf(config, false);
  const Rule* embedding = RuleFor(rules, "token_embedder.embedding");
  ASSERT_TRUE(embedding);
  EXPECT_EQ(embedding->hf_inputs.at(0).dims, (Shape{262208, 3840}));
  EXPECT_EQ(embedding->mt_outputs.at(0).dims, (Shape{262144, 3840}));
  EXPECT_TRUE(embedding->lossy());
  // head_dim defaults to 256 (Gemma3TextConfig).
  EXPECT_EQ(MtShape(rules, "decoder.layers_47.self_attention.query.kernel"),
            (Shape{3840, 16, 256}));
  EXPECT_EQ(MaxTextSettings(config)["vocab_size"], 262144);
  // sqrt(3840) = 61.97 -> 62 in bf16.
  EXPECT_EQ(OpOf(embedding, OpKind::kScale)->factor, 62.0f);
}

TEST(GemmaConfigTest, ExportedConfigIsTheSourcesWithoutOurKey) {
  const json source = Gemma3Multimodal();
  std::unique_ptr<Adapter> adapter = AdapterFor(source);
  ASSERT_TRUE(adapter);
  Result<std::string> text = adapter->TranslateConfig(CKB_TO_HF);
  ASSERT_TRUE(text.ok()) << text.status().message();
  json expected = source;
  expected.erase("maxtext_vocab_size");
  EXPECT_EQ(json::parse(*text), expected);
  const json settings = MaxTextSettings(source);
  EXPECT_EQ(settings["vocab_size"], 64);
  EXPECT_EQ(settings["base_num_decoder_layers"], 13);
  EXPECT_EQ(settings["rope_linear_scaling_factor"], 8.0);
  EXPECT_EQ(settings["hidden_size_for_vit"], 24);
  EXPECT_EQ(settings["image_size_for_vit"], 12);
  // Gemma2: MaxText counts pairs.
  const json g2 = MaxTextSettings(Gemma2Padded());
  EXPECT_EQ(g2["base_num_decoder_layers"], 3);
  EXPECT_EQ(g2["sliding_window_size"], 16);
  EXPECT_EQ(g2["decoder_block"], "gemma2");
  EXPECT_FALSE(g2.contains("hidden_size_for_vit"));
  // The fixture: no vision, defaults of Gemma3TextConfig where it is silent.
  const json fixture =
      MaxTextSettings(ReadConfig(testing::FixtureDir() / "hf" / "mlxd-tiny_gemma3"));
  EXPECT_EQ(fixture["decoder_block"], "gemma3");
  EXPECT_EQ(fixture["vocab_size"], 256);
  EXPECT_EQ(fixture["head_dim"], 16);
  EXPECT_EQ(fixture["sliding_window_size"], 4);
  EXPECT_EQ(fixture["rope_max_timescale"], 1000000.0);
  EXPECT_EQ(fixture["mlp_activations"], json({"gelu", "linear"}));
  EXPECT_FALSE(fixture.contains("vision_encoder_block"));
  // transformers 5 writes RoPE settings per attention type under
  // rope_parameters.
  json v5 = Gemma3Text();
  for (const char* key : {"rope_theta", "rope_local_base_freq"}) v5.erase(key);
  v5["rope_parameters"] = {
      {"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 500000.0}}},
      {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 20000.0}}}};
  const json v5_settings = MaxTextSettings(v5);
  EXPECT_EQ(v5_settings["rope_max_timescale"], 500000.0);
  EXPECT_EQ(v5_settings["local_rope_max_timescale"], 20000.0);
  EXPECT_EQ(v5_settings["rope_linear_scaling_factor"], 8.0);
  json g2v5 = Gemma2Plain();
  g2v5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 30000.0}};
  EXPECT_EQ(MaxTextSettings(g2v5)["rope_max_timescale"], 30000.0);
}

// ---------------------------------------------------------------------------
// Refusals: each names the key and both sides.

struct Refusal {
  std::string name;
  json config;
  std::string message;
  bool multimodal = false;
};

json With(json c, const std::string& key, json value) {
  c[key] = std::move(value);
  return c;
}
json WithText(json c, const std::string& key, json value) {
  c["text_config"][key] = std::move(value);
  return c;
}
json WithVision(json c, const std::string& key, json value) {
  c["vision_config"][key] = std::move(value);
  return c;
}
json Without(json c, const std::string& key) {
  c.erase(key);
  return c;
}

class GemmaRefusalTest : public ::testing::TestWithParam<Refusal> {};

TEST_P(GemmaRefusalTest, IsRefusedWithTheReason) {
  const Refusal& r = GetParam();
  Result<std::unique_ptr<Adapter>> adapter =
      Adapter::Create(Plugin(), r.config["model_type"].get<std::string>(), r.config.dump());
  Status status = adapter.ok() ? Status::Ok() : adapter.status();
  if (adapter.ok()) {
    const json options = {{"direction", "to_maxtext"}, {"multimodal", r.multimodal}};
    status = (*adapter)->Rules(options.dump()).status();
  }
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(r.message), std::string::npos) << status.message();
}

INSTANTIATE_TEST_SUITE_P(
    Configs, GemmaRefusalTest,
    ::testing::Values(
        Refusal{"gemma2_odd_layers", With(Gemma2Plain(), "num_hidden_layers", 5),
                "config.json: num_hidden_layers 5 is odd, but one layer of MaxText's gemma2 "
                "decoder block holds a pair of HF layers"},
        Refusal{"gemma2_vocab_cut", With(Gemma2Padded(), "maxtext_vocab_size", 40),
                "config.json: maxtext_vocab_size 40 is smaller than vocab_size 50; MaxText's "
                "gemma2 embedding can be padded, not cut"},
        Refusal{"gqa", With(Gemma3Text(), "num_key_value_heads", 4),
                "config.json: num_attention_heads 6 is not a multiple of num_key_value_heads 4"},
        Refusal{"text_config_gqa", WithText(Gemma3Multimodal(), "num_key_value_heads", 3),
                "config.json: text_config: num_attention_heads 4 is not a multiple of "
                "num_key_value_heads 3"},
        Refusal{"attention_bias", With(Gemma2Plain(), "attention_bias", true),
                "config.json: attention_bias is true, but MaxText's gemma2 decoder block has no "
                "attention bias parameters"},
        Refusal{"untied", With(Gemma3Text(), "tie_word_embeddings", false),
                "config.json: tie_word_embeddings is false, but MaxText's gemma3 decoder block "
                "computes the logits from the embedding"},
        Refusal{"untied_text_config", WithText(Gemma3Multimodal(), "tie_word_embeddings", false),
                "config.json: text_config: tie_word_embeddings is false"},
        Refusal{"mlx_quantized", With(Gemma3Text(), "quantization", {{"bits", 4}}),
                "this checkpoint holds MLX-quantized weights"},
        Refusal{"quantization_config",
                With(Gemma2Plain(), "quantization_config", {{"quant_method", "gptq"}}),
                "quantization_config.quant_method 'gptq'"},
        Refusal{"no_text_config", Without(Gemma3Multimodal(), "text_config"),
                "config.json: missing object 'text_config'"},
        Refusal{"missing_hidden_size", Without(Gemma2Plain(), "hidden_size"),
                "config.json: missing integer 'hidden_size'"},
        Refusal{"zero_layers", WithText(Gemma3Multimodal(), "num_hidden_layers", 0),
                "config.json: text_config: 'num_hidden_layers' must be positive, got 0"},
        Refusal{"rope_yarn",
                With(Gemma3Text(), "rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}),
                "config.json: rope_scaling: rope_type 'yarn', but MaxText's gemma3 decoder block "
                "has only linear RoPE scaling"},
        Refusal{"rope_parameters_yarn",
                With(Gemma3Text(), "rope_parameters",
                     {{"full_attention", {{"rope_type", "yarn"}, {"factor", 4.0}}}}),
                "config.json: rope_parameters: full_attention: rope_type 'yarn'"},
        Refusal{"sliding_window_text", With(Gemma2Plain(), "sliding_window", "wide"),
                "config.json: 'sliding_window' must be a number or null, got \"wide\""},
        Refusal{"multimodal_without_vision_config", Without(Gemma3Multimodal(), "vision_config"),
                "--multimodal: config.json has no vision_config", true},
        Refusal{"vision_patches", WithVision(Gemma3Multimodal(), "image_size", 14),
                "--multimodal: config.json: vision_config: image_size 14 is not a multiple of "
                "patch_size 4",
                true},
        Refusal{"vision_heads", WithVision(Gemma3Multimodal(), "num_attention_heads", 5),
                "--multimodal: config.json: vision_config: hidden_size 24 is not a multiple of "
                "num_attention_heads 5",
                true},
        Refusal{"vision_head", WithVision(Gemma3Multimodal(), "vision_use_head", true),
                "--multimodal: config.json: vision_config: vision_use_head is true, but MaxText's "
                "gemma3 vision encoder has no attention-pooling head",
                true},
        Refusal{"vision_size", WithVision(Gemma3Multimodal(), "hidden_size", -24),
                "--multimodal: config.json: vision_config: 'hidden_size' must be positive, got -24",
                true}),
    [](const ::testing::TestParamInfo<Refusal>& info) { return info.param.name; });

// A vision_config the plugin cannot convert does not stand in the way of
// converting the text model.
TEST(GemmaRefusalTest, UnusableVisionConfigStillConvertsText) {
  const json config = WithVision(Gemma3Multimodal(), "vision_use_head", true);
  const RuleSet rules = RulesOf(config, true, false);
  EXPECT_FALSE(rules.rules.empty());
  EXPECT_FALSE(MaxTextSettings(config).contains("hidden_size_for_vit"));
}

// Through the CLI: exit code 2 and nothing at the destination.
TEST(GemmaRefusalCliTest, OddGemma2LayerCount) {
  TempDir tmp;
  json config = Gemma2Plain();
  config["num_hidden_layers"] = 3;
  json even = config;
  even["num_hidden_layers"] = 4;
  std::vector<HfTensorSpec> tensors = GemmaTensors(even, Naming::kPlain);
  tensors.erase(
      std::remove_if(tensors.begin(), tensors.end(),
                     [](const HfTensorSpec& t) { return StartsWith(t.name, "model.layers.3."); }),
      tensors.end());
  testing::WriteHfCheckpoint(tmp / "src", config, tensors, DType::kBF16, 1);
  CliRun run = ToMaxTextCli(tmp / "src", tmp / "mt", true, "");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("num_hidden_layers 3 is odd"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(tmp / "mt"));
}

TEST(GemmaRefusalCliTest, VisionTensorsWithoutVisionConfig) {
  // A config.json without vision_config cannot size the tower: with
  // --multimodal that is an error, without it the tensors are still only
  // skipped.
  TempDir tmp;
  json config = Gemma3MultimodalPadded();
  testing::WriteHfCheckpoint(tmp / "src", Without(config, "vision_config"),
                             GemmaTensors(config, Naming::kReleased), DType::kBF16, 2);
  CliRun refused = ToMaxTextCli(tmp / "src", tmp / "mt", true, "", true);
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.err.find("--multimodal: config.json has no vision_config"), std::string::npos)
      << refused.err;
  CliRun text = ToMaxTextCli(tmp / "src", tmp / "mt", true, "");
  EXPECT_EQ(text.exit_code, 0) << text.err;
}

}  // namespace
}  // namespace ckptbridge
