// MaxText's tree layouts: the same parameters saved as Linen, Linen with one
// params level, NNX-SFT (trailing `value`, list-indexed layers) and NNX-RL
// (`base` root), with optimizer state and RNG state beside them. Each must
// convert to the same HF checkpoint, and training state must be left out
// with a note.
#include "host/engine/maxtext_tree.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "host/base/file.h"
#include "tests/testing/testing.h"

namespace ckptbridge::engine {
namespace {

namespace fs = std::filesystem;
using testing::RunCli;
using testing::TempDir;

const fs::path kLlama = testing::FixtureDir() / "hf" / "mlxd-tiny_llama3";

class TreeKindTest : public ::testing::TestWithParam<TreeKind> {};

TEST_P(TreeKindTest, EveryLayoutConvertsToTheSameHfCheckpoint) {
  TempDir tmp;
  ASSERT_EQ(RunCli({"convert", "--to", "maxtext", "--quiet", "--no-scan-layers", "--save-dtype",
                    "float32", kLlama.string(), (tmp / "linen").string()})
                .exit_code,
            0);
  testing::RelayoutMaxText(tmp / "linen" / "0" / "items", tmp / "other", GetParam());

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
