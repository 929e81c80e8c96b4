// The receipt's building blocks: file hashes against a one-shot XXH3 of the
// whole file, the rule-table hash (stable, and sensitive to every field that
// shapes a conversion), the embedded copy, and the errors of reading and
// updating receipts.
#include "host/engine/receipt.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xxhash.h>

#include <atomic>
#include <functional>
#include <random>
#include <string>

#include "host/base/file.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/xxh3.h"

namespace ckptbridge::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  return bytes;
}

TEST(ReceiptHashTest, FileHashMatchesOneShotHashAcrossWindowBoundaries) {
  testing::TempDir tmp;
  // Empty, smaller than the 4 MiB window, exactly one window, one byte past
  // it, and several with a tail.
  for (size_t size :
       {size_t{0}, size_t{1000}, size_t{4} << 20, (size_t{4} << 20) + 1, (size_t{21} << 19) + 13}) {
    const std::string bytes = RandomBytes(size, static_cast<uint32_t>(size));
    const fs::path path = tmp / ("f" + std::to_string(size));
    ASSERT_TRUE(WriteFile(path, bytes).ok());
    Result<std::string> hash = HashFile(path);
    ASSERT_TRUE(hash.ok()) << hash.status().message();
    EXPECT_EQ(*hash, testing::Xxh3Of(bytes)) << size;
    EXPECT_EQ(Xxh3Hex(bytes.data(), bytes.size()), testing::Xxh3Of(bytes));
  }
  // The published XXH3-128 of no bytes.
  EXPECT_EQ(Xxh3Hex("", 0), "99aa06d3014798d86001c324468d497f");
}

TEST(ReceiptHashTest, MissingFileIsAnErrorNamingIt) {
  testing::TempDir tmp;
  Result<std::string> hash = HashFile(tmp / "gone.safetensors");
  ASSERT_FALSE(hash.ok());
  EXPECT_THAT(hash.status().message(), HasSubstr("gone.safetensors"));
}

TEST(ReceiptHashTest, DirectoryIsAnErrorNamingIt) {
  testing::TempDir tmp;
  fs::create_directories(tmp / "shard.safetensors");
  Result<std::string> hash = HashFile(tmp / "shard.safetensors");
  ASSERT_FALSE(hash.ok());
  EXPECT_THAT(hash.status().message(), HasSubstr("shard.safetensors: not a regular file"));
}

TEST(ReceiptHashTest, StoppedHashingIsCancelled) {
  testing::TempDir tmp;
  ASSERT_TRUE(WriteFile(tmp / "f", RandomBytes(3 << 20, 1)).ok());
  Result<std::string> hash = HashFile(tmp / "f", [] { return true; });
  ASSERT_FALSE(hash.ok());
  EXPECT_EQ(hash.status().code(), StatusCode::kCancelled);

  std::atomic<bool> cancel{true};
  SourceHasher hasher({{"f", tmp / "f", 3 << 20}}, &cancel);
  Result<json> files = hasher.Wait();
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), StatusCode::kCancelled);
}

TEST(ReceiptHashTest, HasherListsEveryFileWithItsHash) {
  testing::TempDir tmp;
  const std::string a = RandomBytes(5000, 2), b = RandomBytes(70, 3);
  ASSERT_TRUE(WriteFile(tmp / "a", a).ok());
  ASSERT_TRUE(WriteFile(tmp / "b", b).ok());
  SourceHasher hasher({{"a", tmp / "a", a.size()}, {"sub/b", tmp / "b", b.size()}});
  Result<json> files = hasher.Wait();
  ASSERT_TRUE(files.ok()) << files.status().message();
  EXPECT_EQ((*files)["hash"], "xxh3-128");
  EXPECT_EQ((*files)["file_count"], 2);
  EXPECT_EQ((*files)["bytes"], a.size() + b.size());
  EXPECT_EQ((*files)["files"][0],
            json({{"path", "a"}, {"bytes", 5000}, {"xxh3_128", testing::Xxh3Of(a)}}));
  EXPECT_EQ((*files)["files"][1]["path"], "sub/b");
  EXPECT_EQ((*files)["files"][1]["xxh3_128"], testing::Xxh3Of(b));
  EXPECT_EQ((*files)["files_digest"].get<std::string>().size(), 32u);

  // What a to-HF shard header is planned around before the hashes are
  // known: the same object with zeros, exactly as long once serialised.
  const json unhashed =
      UnhashedSourceFiles({{"a", tmp / "a", a.size()}, {"sub/b", tmp / "b", b.size()}});
  EXPECT_EQ(unhashed["files"][0],
            json({{"path", "a"}, {"bytes", 5000}, {"xxh3_128", std::string(32, '0')}}));
  EXPECT_EQ(unhashed["files_digest"], std::string(32, '0'));
  EXPECT_EQ(unhashed.dump().size(), files->dump().size());
  json same_but_hashes = unhashed;
  same_but_hashes["files"][0]["xxh3_128"] = (*files)["files"][0]["xxh3_128"];
  same_but_hashes["files"][1]["xxh3_128"] = (*files)["files"][1]["xxh3_128"];
  same_but_hashes["files_digest"] = (*files)["files_digest"];
  EXPECT_EQ(same_but_hashes, *files);

  SourceHasher missing({{"gone", tmp / "gone", 1}});
  Result<json> failed = missing.Wait();
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("gone"));
}

RuleSet SampleRules() {
  RuleSet set;
  Rule rule;
  rule.flags = CKB_RULE_OPTIONAL;
  rule.hf_inputs.push_back(
      {"model.layers.{layer}.self_attn.q_proj.weight", {64, 32}, {CKB_AXIS_HEADS, CKB_AXIS_EMBED}});
  rule.mt_outputs.push_back({"decoder.layers.self_attention.query.kernel", {32, 2, 4, 16}, {}});
  rule.stack.push_back({CKB_AXIS_LAYERS, 1, 2, 0, 1});
  OpSpec transpose;
  transpose.kind = OpKind::kTranspose;
  transpose.values = {1, 0};
  OpSpec scale;
  scale.kind = OpKind::kScale;
  scale.factor = 0.25f;
  scale.inverse_factor = 4.0f;
  rule.ops = {transpose, scale};
  set.rules.push_back(rule);
  set.ignores.push_back({CKB_SIDE_HF, "model.rotary_emb.*", "computed at load time"});
  set.renames.push_back({CKB_SIDE_HF, "language_model.model.", "model.language_model."});
  return set;
}

TEST(RuleSetHashTest, StableAndGolden) {
  const RuleSet rules = SampleRules();
  const std::string hash = RuleSetHash(rules);
  EXPECT_EQ(hash, RuleSetHash(SampleRules()));
  EXPECT_THAT(hash, ::testing::StartsWith("xxh3-128:"));
  EXPECT_EQ(hash.size(), 9u + 32u);
  // The same rules hash the same in every build on every machine: a change
  // of this value means receipts of equal mappings no longer compare equal.
  EXPECT_EQ(hash, "xxh3-128:316ba305f4b6ca5413d04c712338e3f4");
}

TEST(RuleSetHashTest, EveryFieldThatShapesTheOutputChangesTheHash) {
  const std::string base = RuleSetHash(SampleRules());
  const std::vector<std::pair<std::string, std::function<void(RuleSet&)>>> edits = {
      {"flags", [](RuleSet& r) { r.rules[0].flags = 0; }},
      {"input name", [](RuleSet& r) { r.rules[0].hf_inputs[0].name += "x"; }},
      {"input dims",
       [](RuleSet& r) {
         r.rules[0].hf_inputs[0].dims = {32, 64};
       }},
      {"axis meaning", [](RuleSet& r) { r.rules[0].hf_inputs[0].axis_meanings[0] = CKB_AXIS_MLP; }},
      {"output name", [](RuleSet& r) { r.rules[0].mt_outputs[0].name = "decoder.x"; }},
      {"output dims", [](RuleSet& r) { r.rules[0].mt_outputs[0].dims[1] = 3; }},
      {"stack axis", [](RuleSet& r) { r.rules[0].stack[0].mt_axis = 0; }},
      {"stack count", [](RuleSet& r) { r.rules[0].stack[0].count = 3; }},
      {"stack start", [](RuleSet& r) { r.rules[0].stack[0].hf_start = 1; }},
      {"stack stride", [](RuleSet& r) { r.rules[0].stack[0].hf_stride = 2; }},
      {"stack leading", [](RuleSet& r) { r.rules[0].stack[0].hf_leading = true; }},
      {"op kind", [](RuleSet& r) { r.rules[0].ops[0].kind = OpKind::kReshape; }},
      {"op values",
       [](RuleSet& r) {
         r.rules[0].ops[0].values = {0, 1};
       }},
      {"op factor", [](RuleSet& r) { r.rules[0].ops[1].factor = 0.5f; }},
      {"op inverse", [](RuleSet& r) { r.rules[0].ops[1].inverse_factor = 2.0f; }},
      {"op axis", [](RuleSet& r) { r.rules[0].ops[1].axis = 1; }},
      {"op size", [](RuleSet& r) { r.rules[0].ops[1].size = 7; }},
      {"op order", [](RuleSet& r) { std::swap(r.rules[0].ops[0], r.rules[0].ops[1]); }},
      {"no ops", [](RuleSet& r) { r.rules[0].ops.clear(); }},
      {"extra rule", [](RuleSet& r) { r.rules.push_back(r.rules[0]); }},
      {"ignore side", [](RuleSet& r) { r.ignores[0].side = CKB_SIDE_MAXTEXT; }},
      {"ignore pattern", [](RuleSet& r) { r.ignores[0].pattern = "*"; }},
      {"rename from", [](RuleSet& r) { r.renames[0].from_prefix = "x."; }},
      {"rename to", [](RuleSet& r) { r.renames[0].to_prefix = "y."; }},
      {"no renames", [](RuleSet& r) { r.renames.clear(); }},
      // Moving a string boundary must not collide ("ab"+"c" vs "a"+"bc").
      {"boundary",
       [](RuleSet& r) {
         r.renames[0].from_prefix += r.renames[0].to_prefix.substr(0, 1);
         r.renames[0].to_prefix.erase(0, 1);
       }},
  };
  for (const auto& [what, edit] : edits) {
    RuleSet rules = SampleRules();
    edit(rules);
    EXPECT_NE(RuleSetHash(rules), base) << what;
  }
  // The reason of an ignore is prose: it changes nothing converted.
  RuleSet reworded = SampleRules();
  reworded.ignores[0].reason = "not a weight";
  EXPECT_EQ(RuleSetHash(reworded), base);
}

TEST(ReceiptTest, EmbeddedCopyLeavesOutVerificationTimeAndLongFileLists) {
  json receipt = {{"format", kReceiptFormat},
                  {"written_at", "2026-01-01T00:00:00Z"},
                  {"verification", {{"result", "ok"}}},
                  {"source", {{"file_count", 2}, {"files", json::array({1, 2})}}}};
  json embedded = EmbeddedReceipt(receipt);
  EXPECT_FALSE(embedded.contains("verification"));
  EXPECT_FALSE(embedded.contains("written_at"));
  EXPECT_EQ(embedded["source"]["files"].size(), 2u);
  receipt["source"]["files"] = json::array();
  for (size_t i = 0; i <= kMaxEmbeddedFiles; ++i) receipt["source"]["files"].push_back(i);
  embedded = EmbeddedReceipt(receipt);
  EXPECT_FALSE(embedded["source"].contains("files"));
  EXPECT_EQ(embedded["source"]["files_listed"], false);
  EXPECT_EQ(embedded["source"]["file_count"], 2);
}

TEST(ReceiptTest, UtcTimestampIsIso8601) {
  EXPECT_EQ(UtcTimestamp(std::chrono::system_clock::from_time_t(0)), "1970-01-01T00:00:00Z");
  EXPECT_EQ(UtcTimestamp(std::chrono::system_clock::from_time_t(1795000000)),
            "2026-11-18T11:06:40Z");
}

TEST(ReceiptTest, RecordingAVerificationNeedsAReceipt) {
  testing::TempDir tmp;
  Status hf = RecordVerification(tmp.path(), Direction::kToHf, {{"result", "ok"}});
  ASSERT_FALSE(hf.ok());
  EXPECT_EQ(hf.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(hf.message(), HasSubstr("no ckptbridge_receipt.json"));

  ASSERT_TRUE(WriteFile(tmp / kReceiptFileName, "[1, 2]").ok());
  Status not_object = RecordVerification(tmp.path(), Direction::kToHf, {{"result", "ok"}});
  ASSERT_FALSE(not_object.ok());
  EXPECT_THAT(not_object.message(), HasSubstr("the receipt is array, not an object"));

  // An Orbax item written without a receipt (as by another tool).
  orbax::WriteOptions options;
  Result<std::unique_ptr<orbax::CheckpointWriter>> writer =
      orbax::CheckpointWriter::Create(tmp / "mt", options);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->AddScalar({"step"}, 0).ok());
  ASSERT_TRUE((*writer)->Finish({{"scan_layers", true}}).ok());
  Status orbax = RecordVerification(tmp / "mt", Direction::kToMaxText, {{"result", "ok"}});
  ASSERT_FALSE(orbax.ok());
  EXPECT_EQ(orbax.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(orbax.message(), HasSubstr("_METADATA: no custom_metadata.ckptbridge.receipt"));
}

TEST(ReceiptTest, OrbaxReceiptThatIsNotAnObjectIsAnError) {
  EXPECT_FALSE(OrbaxReceipt(json(nullptr), "m")->has_value());
  EXPECT_FALSE(OrbaxReceipt({{"ckptbridge", {{"version", "0.1.0"}}}}, "m")->has_value());
  Result<std::optional<json>> bad = OrbaxReceipt({{"ckptbridge", {{"receipt", 3}}}}, "x/_METADATA");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(
      bad.status().message(),
      HasSubstr("x/_METADATA: custom_metadata.ckptbridge.receipt is number, not an object"));
}

}  // namespace
}  // namespace ckptbridge::engine
