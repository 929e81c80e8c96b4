// MaxText's tree layouts: the same parameters saved as Linen, Linen with one
// params level, NNX-SFT (trailing `value`, list-indexed layers) and NNX-RL
// (`base` root), with optimizer state and RNG state beside them. Each must
// convert to the same HF checkpoint, and training state must be left out
// with a note.
#include "host/engine/maxtext_tree.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "host/base/file.h"
#include "tests/testing/testing.h"

namespace ckptbridge::engine {
namespace {

namespace fs = std::filesystem;
using testing::RunCli;
using testing::TempDir;

const fs::path kLlama = testing::FixtureDir() / "hf" / "mlxd-tiny_llama3";

// Rewrites the Linen item at `src` into `kind`'s layout at `dst_root`, adding
// an optimizer moment and an RNG leaf, as MaxText's other trainers save them.
void Relayout(const fs::path& src, const fs::path& dst_root, TreeKind kind) {
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
    if (kind == TreeKind::kLinen || kind == TreeKind::kLinenSingleParams) {
      keys.insert(keys.begin(), "params");
      if (kind == TreeKind::kLinen) keys.insert(keys.begin(), "params");
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
      if (kind == TreeKind::kNnxRl) nnx.insert(nnx.begin(), "base");
      keys = nnx;
    }
    copy(array, keys);
    // An Adam moment of the same parameter, as training checkpoints hold.
    if (array.leaf->name() == "params.params.decoder.decoder_norm.scale") {
      copy(array, {"opt_state", "0", "mu", "decoder", "decoder_norm", "scale"});
    }
  }
  const auto& first = (*item)->arrays().front();
  if (kind == TreeKind::kNnxSft) copy(first, {"rngs", "params", "key"});
  ASSERT_TRUE((*writer)->AddScalar({"step"}, 1200).ok());
  ASSERT_TRUE((*writer)->Finish(nullptr).ok());
}

class TreeKindTest : public ::testing::TestWithParam<TreeKind> {};

TEST_P(TreeKindTest, EveryLayoutConvertsToTheSameHfCheckpoint) {
  TempDir tmp;
  ASSERT_EQ(RunCli({"convert", "--to", "maxtext", "--quiet", "--no-scan-layers", "--save-dtype",
                    "float32", kLlama.string(), (tmp / "linen").string()})
                .exit_code,
            0);
  Relayout(tmp / "linen" / "0" / "items", tmp / "other", GetParam());

  auto item = orbax::ItemReader::Open(tmp / "other");
  ASSERT_TRUE(item.ok()) << item.status().message();
  Result<MaxTextTree> tree = MaxTextTree::Build(**item);
  ASSERT_TRUE(tree.ok()) << tree.status().message();
  EXPECT_EQ(tree->kind(), GetParam());
  EXPECT_FALSE(tree->LooksScanned());
  EXPECT_EQ(tree->params().size(), 21u);
  ASSERT_NE(tree->Find("decoder.layers_1.self_attention.query.kernel"), nullptr);
  EXPECT_NE(std::find(tree->training_state().begin(), tree->training_state().end(), "step"),
            tree->training_state().end());

  testing::CliRun run =
      RunCli({"convert", "--to", "hf", "--hf-config", (kLlama / "config.json").string(),
              (tmp / "other").string(), (tmp / "hf").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(testing::ReadHfBytes(tmp / "hf"), testing::ReadHfBytes(kLlama));
  // The optimizer moment (and NNX's RNG state) are dropped, with a note.
  const std::string skipped =
      GetParam() == TreeKind::kNnxSft ? "skipped 2 tensors" : "skipped 1 tensor";
  EXPECT_NE(run.err.find(skipped + " (training state, not a model parameter): "
                                   "opt_state.0.mu.decoder.decoder_norm.scale"),
            std::string::npos)
      << run.err;
}

INSTANTIATE_TEST_SUITE_P(Kinds, TreeKindTest,
                         ::testing::Values(TreeKind::kLinen, TreeKind::kLinenSingleParams,
                                           TreeKind::kNnxSft, TreeKind::kNnxRl),
                         [](const ::testing::TestParamInfo<TreeKind>& info) {
                           std::string name(TreeKindName(info.param));
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

TEST(MaxTextTreeTest, ScannedLayoutsIncludingNumberedBlocks) {
  TempDir tmp;
  ASSERT_EQ(
      RunCli({"convert", "--to", "maxtext", "--quiet", kLlama.string(), (tmp / "mt").string()})
          .exit_code,
      0);
  auto item = orbax::ItemReader::Open(tmp / "mt");
  ASSERT_TRUE(item.ok());
  Result<MaxTextTree> tree = MaxTextTree::Build(**item);
  ASSERT_TRUE(tree.ok());
  EXPECT_TRUE(tree->LooksScanned());
  EXPECT_EQ(tree->kind(), TreeKind::kLinen);
}

TEST(MaxTextTreeTest, AnItemWithoutParametersIsRefused) {
  TempDir tmp;
  auto writer = orbax::CheckpointWriter::Create(tmp.path(), orbax::WriteOptions());
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->AddScalar({"step"}, 0).ok());
  ASSERT_TRUE((*writer)->Finish(nullptr).ok());
  auto item = orbax::ItemReader::Open(tmp.path());
  ASSERT_TRUE(item.ok()) << item.status().message();
  Result<MaxTextTree> tree = MaxTextTree::Build(**item);
  ASSERT_FALSE(tree.ok());
  EXPECT_NE(tree.status().message().find("no model parameters found"), std::string::npos);
}

}  // namespace
}  // namespace ckptbridge::engine
