// bench/synth_checkpoint - writes a synthetic Hugging Face checkpoint of a
// given size, shaped like a real model family, for throughput and memory
// measurements.
//
//   synth_checkpoint --family llama --size 1GiB --out /tmp/llama-1g
//
// Widths are fixed per size class (hidden 2048 for >= 256 MiB, smaller below),
// and the layer count is chosen so the bf16 tensors add up to about --size.
// Values are pseudo-random bf16 (xorshift), so zstd sees realistic entropy.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "host/base/file.h"
#include "host/base/numeric.h"
#include "host/cli/format.h"
#include "host/formats/safetensors/writer.h"

namespace {

using namespace ckptbridge;
using nlohmann::json;

struct Shapes {
  int64_t vocab, hidden, mlp, heads, kv_heads, head_dim, layers, experts;
};

uint64_t LayerParams(const Shapes& s) {
  const uint64_t attn =
      2 * s.hidden * s.heads * s.head_dim + 2 * s.hidden * s.kv_heads * s.head_dim;
  const uint64_t mlp = 3 * s.hidden * s.mlp * std::max<int64_t>(1, s.experts);
  const uint64_t router = s.experts ? s.hidden * s.experts : 0;
  return attn + mlp + router + 2 * s.hidden;
}

Shapes Choose(const std::string& family, uint64_t bytes) {
  Shapes s{};
  s.hidden = bytes >= (uint64_t{256} << 20) ? 2048 : 512;
  s.head_dim = 64;
  s.heads = s.hidden / s.head_dim;
  s.kv_heads = std::max<int64_t>(1, s.heads / 4);
  s.mlp = s.hidden * 11 / 4;
  s.vocab = 32000;
  s.experts = family == "mixtral" ? 8 : 0;
  if (s.experts) s.mlp = s.hidden;
  const uint64_t fixed = 2 * static_cast<uint64_t>(s.vocab * s.hidden) + s.hidden;
  const double per_layer = static_cast<double>(LayerParams(s)) * 2;
  const double layers = (static_cast<double>(bytes) - 2.0 * fixed) / per_layer;
  s.layers = std::max<int64_t>(1, std::llround(layers));
  return s;
}

struct Rng {
  uint64_t state;
  uint32_t Next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<uint32_t>(state);
  }
};

std::string RandomBf16(int64_t n, Rng& rng) {
  std::string bytes(static_cast<size_t>(n) * 2, '\0');
  for (int64_t i = 0; i < n; ++i) {
    // Uniform in (-1, 1), scaled like initialized weights.
    const float f = (static_cast<float>(rng.Next() >> 8) / 8388608.0f - 1.0f) * 0.05f;
    const uint16_t h = F32ToBf16(f);
    std::memcpy(&bytes[static_cast<size_t>(i) * 2], &h, 2);
  }
  return bytes;
}

int Usage(const char* message) {
  std::cerr << "synth_checkpoint: " << message
            << "\nusage: synth_checkpoint --family llama|mixtral --size SIZE --out DIR\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string family = "llama", size_text, out;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) return Usage(("missing value for " + arg).c_str());
    if (arg == "--family")
      family = argv[++i];
    else if (arg == "--size")
      size_text = argv[++i];
    else if (arg == "--out")
      out = argv[++i];
    else
      return Usage(("unknown option " + arg).c_str());
  }
  if (size_text.empty() || out.empty()) return Usage("--size and --out are required");
  if (family != "llama" && family != "mixtral") return Usage("--family must be llama or mixtral");
  Result<uint64_t> size = cli::ParseSize(size_text, "--size");
  if (!size.ok()) return Usage(size.status().message().c_str());

  const Shapes s = Choose(family, *size);
  json config = {
      {"architectures", {family == "mixtral" ? "MixtralForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", family},
      {"vocab_size", s.vocab},
      {"hidden_size", s.hidden},
      {"intermediate_size", s.mlp},
      {"num_hidden_layers", s.layers},
      {"num_attention_heads", s.heads},
      {"num_key_value_heads", s.kv_heads},
      {"head_dim", s.head_dim},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 500000.0},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"}};
  if (s.experts) {
    config["num_local_experts"] = s.experts;
    config["num_experts_per_tok"] = 2;
  } else {
    config["rope_scaling"] = {{"rope_type", "llama3"},
                              {"factor", 8.0},
                              {"low_freq_factor", 1.0},
                              {"high_freq_factor", 4.0},
                              {"original_max_position_embeddings", 8192}};
  }

  std::vector<safetensors::TensorSpec> specs;
  auto add = [&](std::string name, Shape shape) {
    specs.push_back({std::move(name), DType::kBF16, std::move(shape)});
  };
  add("model.embed_tokens.weight", {s.vocab, s.hidden});
  add("model.norm.weight", {s.hidden});
  add("lm_head.weight", {s.vocab, s.hidden});
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {s.hidden});
    add(p + "post_attention_layernorm.weight", {s.hidden});
    add(p + "self_attn.q_proj.weight", {s.heads * s.head_dim, s.hidden});
    add(p + "self_attn.k_proj.weight", {s.kv_heads * s.head_dim, s.hidden});
    add(p + "self_attn.v_proj.weight", {s.kv_heads * s.head_dim, s.hidden});
    add(p + "self_attn.o_proj.weight", {s.hidden, s.heads * s.head_dim});
    if (s.experts) {
      add(p + "block_sparse_moe.gate.weight", {s.experts, s.hidden});
      for (int64_t e = 0; e < s.experts; ++e) {
        const std::string q = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
        add(q + "w1.weight", {s.mlp, s.hidden});
        add(q + "w2.weight", {s.hidden, s.mlp});
        add(q + "w3.weight", {s.mlp, s.hidden});
      }
    } else {
      add(p + "mlp.gate_proj.weight", {s.mlp, s.hidden});
      add(p + "mlp.up_proj.weight", {s.mlp, s.hidden});
      add(p + "mlp.down_proj.weight", {s.hidden, s.mlp});
    }
  }

  const std::filesystem::path dir = out;
  if (Status st = CreateDirectories(dir); !st.ok()) return Usage(st.message().c_str());
  Result<safetensors::ShardPlan> plan = safetensors::PlanShards(specs, uint64_t{1} << 30);
  if (!plan.ok()) return Usage(plan.status().message().c_str());
  Rng rng{0x9e3779b97f4a7c15ull};
  for (const safetensors::PlannedShard& shard : plan->shards) {
    auto writer = safetensors::ShardWriter::Create(dir, shard);
    if (!writer.ok()) return Usage(writer.status().message().c_str());
    for (size_t i = 0; i < shard.tensors.size(); ++i) {
      const std::string bytes = RandomBf16(NumElementsUnchecked(shard.tensors[i].spec.shape), rng);
      if (Status st = (*writer)->WriteTensor(i, bytes.data(), bytes.size()); !st.ok()) {
        return Usage(st.message().c_str());
      }
    }
    if (Status st = (*writer)->Finish(); !st.ok()) return Usage(st.message().c_str());
  }
  if (plan->shards.size() > 1) {
    if (Status st = safetensors::WriteIndex(dir, *plan); !st.ok())
      return Usage(st.message().c_str());
  }
  if (Status st = WriteFile(dir / "config.json", config.dump(2) + "\n"); !st.ok()) {
    return Usage(st.message().c_str());
  }
  std::cout << "wrote " << dir.string() << ": " << family << ", " << s.layers << " layers, hidden "
            << s.hidden << ", " << specs.size() << " tensors, "
            << cli::HumanBytes(plan->total_tensor_bytes) << " in " << plan->shards.size()
            << " shard(s)\n";
  return 0;
}
