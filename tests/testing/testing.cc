#include "tests/testing/testing.h"

#include <gtest/gtest.h>

#include <regex>
#include <sstream>

#include "host/base/file.h"
#include "host/base/numeric.h"
#include "host/cli/commands.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/safetensors/reader.h"
#include "host/formats/safetensors/writer.h"

namespace ckptbridge::testing {
namespace fs = std::filesystem;

fs::path DataDir() { return CKPTBRIDGE_TEST_DATA_DIR; }
fs::path FixtureDir() { return DataDir() / "fixtures"; }

CliRun RunCli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"ckptbridge"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::ostringstream out, err;
  CliRun run;
  run.exit_code = cli::RunCli(argv, out, err);
  run.out = out.str();
  run.err = err.str();
  return run;
}

std::map<std::string, Values> ReadHf(const fs::path& dir) {
  std::map<std::string, Values> result;
  auto ckpt = safetensors::Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status().message();
  if (!ckpt.ok()) return result;
  for (const auto& t : (*ckpt)->tensors()) {
    Values v;
    v.dtype = t.info->dtype;
    v.shape = t.info->shape;
    v.data.resize(static_cast<size_t>(NumElementsUnchecked(v.shape)));
    EXPECT_TRUE(ToF32(v.dtype, t.file->Data(*t.info), v.data.data(), v.data.size()).ok());
    result[t.info->name] = std::move(v);
  }
  return result;
}

std::map<std::string, std::string> ReadHfBytes(const fs::path& dir) {
  std::map<std::string, std::string> result;
  auto ckpt = safetensors::Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status().message();
  if (!ckpt.ok()) return result;
  for (const auto& t : (*ckpt)->tensors()) {
    result[t.info->name] =
        std::string(reinterpret_cast<const char*>(t.file->Data(*t.info)), t.info->num_bytes());
  }
  return result;
}

std::map<std::string, Values> ReadOrbax(const fs::path& path) {
  std::map<std::string, Values> result;
  auto item = orbax::ItemReader::Open(path);
  EXPECT_TRUE(item.ok()) << item.status().message();
  if (!item.ok()) return result;
  for (const auto& array : (*item)->arrays()) {
    Values v;
    v.dtype = array.metadata.dtype;
    v.shape = array.metadata.shape;
    const size_t n = static_cast<size_t>(NumElementsUnchecked(v.shape));
    std::string bytes(n * DTypeSize(v.dtype), '\0');
    Status read = (*item)->Reader(array)->ReadRegion(std::vector<int64_t>(v.shape.size(), 0),
                                                     v.shape, bytes.data());
    EXPECT_TRUE(read.ok()) << read.message();
    v.data.resize(n);
    EXPECT_TRUE(ToF32(v.dtype, bytes.data(), v.data.data(), n).ok());
    result[array.leaf->name()] = std::move(v);
  }
  return result;
}

float RoundTo(DType dtype, float value) {
  switch (dtype) {
    case DType::kBF16:
      return Bf16ToF32(F32ToBf16(value));
    case DType::kF16:
      return F16ToF32(F32ToF16(value));
    default:
      return value;
  }
}

void WriteHfCheckpoint(const fs::path& dir, const nlohmann::json& config,
                       const std::vector<HfTensorSpec>& tensors, DType dtype, uint32_t seed,
                       uint64_t max_shard_bytes) {
  fs::create_directories(dir);
  ASSERT_TRUE(WriteFile(dir / "config.json", config.dump(2)).ok());
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<safetensors::TensorWithData> data;
  for (const HfTensorSpec& spec : tensors) {
    const size_t n = static_cast<size_t>(NumElementsUnchecked(spec.shape));
    std::vector<float> values(n);
    for (float& x : values) x = RoundTo(DType::kBF16, normal(rng));
    std::string bytes(n * DTypeSize(dtype), '\0');
    ASSERT_TRUE(FromF32(dtype, values.data(), bytes.data(), n).ok());
    data.push_back({{spec.name, dtype, spec.shape}, std::move(bytes)});
  }
  Status written = safetensors::WriteCheckpoint(dir, data, max_shard_bytes);
  ASSERT_TRUE(written.ok()) << written.message();
}

std::vector<HfTensorSpec> LlamaFamilyTensors(const nlohmann::json& c) {
  const int64_t v = c["vocab_size"], e = c["hidden_size"], f = c["intermediate_size"];
  const int64_t layers = c["num_hidden_layers"], nq = c["num_attention_heads"];
  const int64_t nkv = c.value("num_key_value_heads", nq);
  const int64_t d = c.contains("head_dim") ? c["head_dim"].get<int64_t>() : e / nq;
  const bool tied = c.value("tie_word_embeddings", false);
  const bool moe = c.value("model_type", std::string()) == "mixtral";
  std::vector<HfTensorSpec> t = {{"model.embed_tokens.weight", {v, e}}, {"model.norm.weight", {e}}};
  if (!tied) t.push_back({"lm_head.weight", {v, e}});
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {e}});
    t.push_back({p + "post_attention_layernorm.weight", {e}});
    t.push_back({p + "self_attn.q_proj.weight", {nq * d, e}});
    t.push_back({p + "self_attn.k_proj.weight", {nkv * d, e}});
    t.push_back({p + "self_attn.v_proj.weight", {nkv * d, e}});
    t.push_back({p + "self_attn.o_proj.weight", {e, nq * d}});
    if (moe) {
      const int64_t x = c["num_local_experts"];
      t.push_back({p + "block_sparse_moe.gate.weight", {x, e}});
      for (int64_t j = 0; j < x; ++j) {
        const std::string q = p + "block_sparse_moe.experts." + std::to_string(j) + ".";
        t.push_back({q + "w1.weight", {f, e}});
        t.push_back({q + "w2.weight", {e, f}});
        t.push_back({q + "w3.weight", {f, e}});
      }
    } else {
      t.push_back({p + "mlp.gate_proj.weight", {f, e}});
      t.push_back({p + "mlp.up_proj.weight", {f, e}});
      t.push_back({p + "mlp.down_proj.weight", {e, f}});
    }
  }
  return t;
}

// Rewrites the Linen item at `src` into `kind`'s layout at `dst_root`, adding
// an optimizer moment and an RNG leaf, as MaxText's other trainers save them.
void RelayoutMaxText(const fs::path& src, const fs::path& dst_root, engine::TreeKind kind) {
  auto item = orbax::ItemReader::Open(src);
  ASSERT_TRUE(item.ok()) << item.status().message();
  auto writer = orbax::CheckpointWriter::Create(dst_root, orbax::WriteOptions());
  ASSERT_TRUE(writer.ok()) << writer.status().message();
  auto copy = [&](const orbax::ItemReader::ArrayEntry& array, std::vector<std::string> keys) {
    const orbax::ArrayMetadata& md = array.metadata;
    std::string bytes(static_cast<size_t>(NumElementsUnchecked(md.shape)) * DTypeSize(md.dtype),
                      '\0');
    ASSERT_TRUE((*item)
                    ->Reader(array)
                    ->ReadRegion(std::vector<int64_t>(md.shape.size(), 0), md.shape, bytes.data())
                    .ok());
    auto added = (*writer)->AddArray(keys, md.dtype, md.shape, md.shape);
    ASSERT_TRUE(added.ok()) << added.status().message();
    std::string name;
    for (const std::string& k : keys) name += (name.empty() ? "" : ".") + k;
    ASSERT_TRUE((*writer)->WriteChunk(name, std::vector<int64_t>(md.shape.size(), 0), bytes).ok());
  };
  for (const auto& array : (*item)->arrays()) {
    std::vector<std::string> keys = array.leaf->keys;
    if (keys[0] != "params") continue;  // step is re-added below
    keys.erase(keys.begin(), keys.begin() + 2);
    if (kind == engine::TreeKind::kLinen || kind == engine::TreeKind::kLinenSingleParams) {
      keys.insert(keys.begin(), "params");
      if (kind == engine::TreeKind::kLinen) keys.insert(keys.begin(), "params");
    } else {
      // NNX: `layers_3` is a list entry `layers`, `3`; leaves wrap a `value`.
      std::vector<std::string> nnx;
      for (const std::string& k : keys) {
        std::smatch m;
        if (std::regex_match(k, m, std::regex("(.*layers)_([0-9]+)"))) {
          nnx.push_back(m[1]);
          nnx.push_back(m[2]);
        } else {
          nnx.push_back(k);
        }
      }
      nnx.push_back("value");
      if (kind == engine::TreeKind::kNnxRl) nnx.insert(nnx.begin(), "base");
      keys = nnx;
    }
    copy(array, keys);
    // An Adam moment of the same parameter, as training checkpoints hold.
    if (array.leaf->name() == "params.params.decoder.decoder_norm.scale") {
      copy(array, {"opt_state", "0", "mu", "decoder", "decoder_norm", "scale"});
    }
  }
  const auto& first = (*item)->arrays().front();
  if (kind == engine::TreeKind::kNnxSft) copy(first, {"rngs", "params", "key"});
  ASSERT_TRUE((*writer)->AddScalar({"step"}, 1200).ok());
  ASSERT_TRUE((*writer)->Finish(nullptr).ok());
}

}  // namespace ckptbridge::testing
