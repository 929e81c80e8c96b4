// tests/check/check_testing.h - checkpoints for the check tests: the planted
// family's HF folders, and in-place corruption of a real one.
#ifndef CKPTBRIDGE_TESTS_CHECK_CHECK_TESTING_H_
#define CKPTBRIDGE_TESTS_CHECK_CHECK_TESTING_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "host/base/file.h"
#include "host/base/numeric.h"
#include "host/formats/safetensors/reader.h"
#include "host/formats/safetensors/writer.h"

namespace ckptbridge::check_testing {

// The planted family (tests/check/plugins/planted_plugin.cc): E == F so that
// down_proj is square, head_dim 8 so that the query scale rounds.
inline nlohmann::json PlantedConfig(const std::string& bug, bool fp8) {
  return {{"model_type", "planted"},  {"architectures", {"PlantedForCausalLM"}},
          {"vocab_size", 64},         {"hidden_size", 32},
          {"intermediate_size", 32},  {"num_hidden_layers", 2},
          {"num_attention_heads", 4}, {"head_dim", 8},
          {"planted_bug", bug},       {"fp8", fp8},
          {"fp8_block", 16},          {"torch_dtype", "bfloat16"}};
}

// Random bfloat16 bytes of `n` normal values.
inline std::string Bf16Bytes(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 0.5f);
  std::string bytes(n * 2, '\0');
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = F32ToBf16(dist(rng));
    std::memcpy(bytes.data() + 2 * i, &h, 2);
  }
  return bytes;
}

// Writes config.json and model.safetensors of a planted checkpoint.
inline void WritePlanted(const std::filesystem::path& dir, const std::string& bug, bool fp8,
                         uint32_t seed = 7) {
  const nlohmann::json c = PlantedConfig(bug, fp8);
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(WriteFile(dir / "config.json", c.dump(2)).ok());
  std::mt19937 rng(seed);
  const int64_t v = 64, e = 32, f = 32, nq = 4, d = 8;
  std::vector<safetensors::TensorWithData> tensors;
  auto bf16 = [&](const std::string& name, Shape shape) {
    const size_t n = static_cast<size_t>(NumElementsUnchecked(shape));
    tensors.push_back({{name, DType::kBF16, shape}, Bf16Bytes(n, rng)});
  };
  bf16("model.embed_tokens.weight", {v, e});
  bf16("model.norm.weight", {e});
  for (int layer = 0; layer < 2; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    bf16(p + "self_attn.q_proj.weight", {nq * d, e});
    bf16(p + "mlp.gate_up_proj.weight", {2 * f, e});
    bf16(p + "mlp.down_proj.weight", {e, f});
    if (fp8) {
      // FP8 E4M3 bytes, never NaN (S.1111.111), and block scales that differ.
      std::string w(static_cast<size_t>(f * e), '\0');
      std::uniform_int_distribution<int> byte(0, 0x7e);
      std::bernoulli_distribution sign(0.5);
      for (char& b : w) b = static_cast<char>(byte(rng) | (sign(rng) ? 0x80 : 0));
      tensors.push_back({{p + "mlp.extra_proj.weight", DType::kF8E4M3, {f, e}}, w});
      const float scales[4] = {0.3f, 2.0f, 4.0f, 0.25f};
      std::string s(sizeof scales, '\0');
      std::memcpy(s.data(), scales, sizeof scales);
      tensors.push_back({{p + "mlp.extra_proj.weight_scale_inv", DType::kF32, {2, 2}}, s});
    }
  }
  ASSERT_TRUE(safetensors::WriteCheckpoint(dir, tensors).ok());
}

// Flips the bits of byte `at` of tensor `name` in the .safetensors `file`.
inline void FlipByte(const std::filesystem::path& file, const std::string& name, uint64_t at) {
  uint64_t offset = 0;
  {
    Result<safetensors::File> f = safetensors::File::Open(file);
    ASSERT_TRUE(f.ok()) << f.status().message();
    const safetensors::TensorInfo* info = f->Find(name);
    ASSERT_NE(info, nullptr) << name;
    offset = f->data_offset() + info->begin + at;
  }
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(offset));
  char b = 0;
  io.read(&b, 1);
  b = static_cast<char>(b ^ 0x5a);
  io.seekp(static_cast<std::streamoff>(offset));
  io.write(&b, 1);
}

}  // namespace ckptbridge::check_testing

#endif  // CKPTBRIDGE_TESTS_CHECK_CHECK_TESTING_H_
