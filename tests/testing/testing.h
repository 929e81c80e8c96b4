// tests/testing/testing.h - helpers shared by the end-to-end tests: temporary
// directories, running the CLI in-process, reading tensors back as f32 and
// generating small HF checkpoints.
#ifndef CKPTBRIDGE_TESTS_TESTING_TESTING_H_
#define CKPTBRIDGE_TESTS_TESTING_TESTING_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "host/base/dtype.h"
#include "host/base/shape.h"
#include "host/engine/maxtext_tree.h"
#include "tests/testing/temp_dir.h"

namespace ckptbridge::testing {

// tests/data (the source tree's copy of the fixtures and our own test data).
std::filesystem::path DataDir();
std::filesystem::path FixtureDir();  // tests/data/fixtures

// What one CLI run printed and returned.
struct CliRun {
  int exit_code = 0;
  std::string out;
  std::string err;
};
// Runs `ckptbridge <args...>` in-process.
CliRun RunCli(const std::vector<std::string>& args);

// A tensor as f32 values, with its stored dtype and shape.
struct Values {
  DType dtype = DType::kInvalid;
  Shape shape;
  std::vector<float> data;
};

// Every tensor of an HF folder, by name.
std::map<std::string, Values> ReadHf(const std::filesystem::path& dir);
// Every array of an Orbax item (root, step or item dir), by Orbax name.
std::map<std::string, Values> ReadOrbax(const std::filesystem::path& path);
// The raw bytes of every tensor of an HF folder, by name.
std::map<std::string, std::string> ReadHfBytes(const std::filesystem::path& dir);

// A small HF checkpoint: config.json plus tensors of random bf16-exact values.
struct HfTensorSpec {
  std::string name;
  Shape shape;
};
void WriteHfCheckpoint(const std::filesystem::path& dir, const nlohmann::json& config,
                       const std::vector<HfTensorSpec>& tensors, DType dtype, uint32_t seed,
                       uint64_t max_shard_bytes = uint64_t{3} << 30);

// The HF tensor list of a Llama/Mistral/Mixtral config.
std::vector<HfTensorSpec> LlamaFamilyTensors(const nlohmann::json& config);

// Rewrites the Linen MaxText item at `src` (as ckptbridge writes it) into
// `kind`'s tree layout at `dst_root`, adding an Adam moment (and, for NNX-SFT,
// an RNG leaf) the way MaxText's trainers save them, and step 1200.
void RelayoutMaxText(const std::filesystem::path& src, const std::filesystem::path& dst_root,
                     engine::TreeKind kind);

// f32 -> the value the dtype stores (rounded once, like the converter must).
float RoundTo(DType dtype, float value);

}  // namespace ckptbridge::testing

#endif  // CKPTBRIDGE_TESTS_TESTING_TESTING_H_
