// The resume journal on its own: header and fingerprint checks, locking,
// torn lines, and a safetensors shard whose recorded tensors are verified,
// taken over, or redone when damaged.
#include "host/engine/journal.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "host/base/checksum.h"
#include "host/engine/staging.h"
#include "host/formats/safetensors/writer.h"
#include "tests/testing/temp_dir.h"

namespace ckptbridge::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const json kFingerprint = {{"source", {{"files", {{"model.safetensors", "100 bytes, mtime 7"}}}}},
                           {"options", {{"scan_layers", true}}}};

TEST(JournalTest, OpenFindsTheJournalCreatedForTheSameConversion) {
  testing::TempDir tmp;
  ASSERT_TRUE(Journal::Create(tmp.path(), kFingerprint).ok());
  Result<std::unique_ptr<Journal>> journal = Journal::Open(tmp.path(), kFingerprint);
  ASSERT_TRUE(journal.ok()) << journal.status().message();
  EXPECT_TRUE((*journal)->resumed());
  const Journal::Verified verified = (*journal)->Verify(1);
  EXPECT_EQ(verified.units, 0u);
  EXPECT_EQ(verified.bad_pieces, 0u);
}

TEST(JournalTest, AnotherConversionIsRefusedNamingTheDifference) {
  testing::TempDir tmp;
  ASSERT_TRUE(Journal::Create(tmp.path(), kFingerprint).ok());
  json other = kFingerprint;
  other["source"]["files"]["model.safetensors"] = "100 bytes, mtime 8";
  Result<std::unique_ptr<Journal>> journal = Journal::Open(tmp.path(), other);
  ASSERT_FALSE(journal.ok());
  EXPECT_EQ(journal.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(journal.status().message().find(
                "another conversion: source/files/model.safetensors was \"100 bytes, mtime 7\", "
                "now \"100 bytes, mtime 8\""),
            std::string::npos)
      << journal.status().message();

  other = kFingerprint;
  other["options"]["ocdbt"] = false;
  journal = Journal::Open(tmp.path(), other);
  ASSERT_FALSE(journal.ok());
  EXPECT_NE(journal.status().message().find("options/ocdbt was absent, now false"),
            std::string::npos)
      << journal.status().message();
}

TEST(JournalTest, MissingOrHeaderlessJournalIsNotFound) {
  testing::TempDir tmp;
  Result<std::unique_ptr<Journal>> journal = Journal::Open(tmp.path(), kFingerprint);
  ASSERT_FALSE(journal.ok());
  EXPECT_EQ(journal.status().code(), StatusCode::kNotFound);
  EXPECT_NE(journal.status().message().find("no journal"), std::string::npos);

  // Killed while writing the header: a torn first line.
  std::ofstream(tmp / kJournalFileName) << "1234abcd {\"journal\": 1, \"fing";
  journal = Journal::Open(tmp.path(), kFingerprint);
  ASSERT_FALSE(journal.ok());
  EXPECT_EQ(journal.status().code(), StatusCode::kNotFound);
  EXPECT_NE(journal.status().message().find("no header"), std::string::npos)
      << journal.status().message();

  // Lines with a good CRC but no usable header: a wrong type, no fingerprint.
  for (const std::string text :
       {"{\"journal\": \"1\", \"fingerprint\": {}}", "{\"journal\": 1}", "[1]"}) {
    char crc[9];
    std::snprintf(crc, sizeof crc, "%08x", ComputeCrc32c(text.data(), text.size()));
    std::ofstream(tmp / kJournalFileName) << crc << " " << text << "\n";
    journal = Journal::Open(tmp.path(), kFingerprint);
    ASSERT_FALSE(journal.ok()) << text;
    EXPECT_EQ(journal.status().code(), StatusCode::kNotFound);
    EXPECT_NE(journal.status().message().find("not a journal header"), std::string::npos)
        << journal.status().message();
  }
}

TEST(JournalTest, AJournalInUseIsNotTakenOver) {
  testing::TempDir tmp;
  Result<std::unique_ptr<Journal>> live = Journal::Create(tmp.path(), kFingerprint);
  ASSERT_TRUE(live.ok());
  Result<std::unique_ptr<Journal>> journal = Journal::Open(tmp.path(), kFingerprint);
  ASSERT_FALSE(journal.ok());
  EXPECT_EQ(journal.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(journal.status().message().find("still running"), std::string::npos);
  live->reset();
  EXPECT_TRUE(Journal::Open(tmp.path(), kFingerprint).ok());
}

TEST(StagingTest, LeftoversAreThoseOfTheDestinationOnly) {
  testing::TempDir tmp;
  for (const char* name :
       {"out.tmp-ckptbridge-0a1b", "out.orbax-checkpoint-tmp-2c3d", "out2.tmp-ckptbridge-4e5f",
        "out2.orbax-checkpoint-tmp-6a7b", "out.old"}) {
    fs::create_directory(tmp / name);
  }
  EXPECT_EQ(LeftoverStagingDirs(tmp / "out").size(), 2u);
  EXPECT_EQ(LeftoverStagingDirs(tmp / "out", StagedOutput::Kind::kOrbax),
            std::vector<fs::path>{tmp / "out.orbax-checkpoint-tmp-2c3d"});
  EXPECT_EQ(LeftoverStagingDirs(tmp / "out", StagedOutput::Kind::kHuggingFace),
            std::vector<fs::path>{tmp / "out.tmp-ckptbridge-0a1b"});
  EXPECT_EQ(LeftoverStagingDirs(tmp / "out2").size(), 2u);
}

class JournalShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<safetensors::ShardPlan> plan = safetensors::PlanShards(
        {{"a", DType::kF32, {64}}, {"b", DType::kF32, {32}}, {"c", DType::kBF16, {16}}}, 1 << 20);
    ASSERT_TRUE(plan.ok());
    plan_ = std::move(*plan);
  }
  std::string Bytes(size_t tensor, char fill) const {
    const auto& t = plan_.shards[0].tensors[tensor];
    return std::string(t.end - t.begin, fill);
  }
  // Runs units 0..2 (unit i writes tensor i; tensor 2 in two parts) through
  // the journal's hooks, the first `count` of them.
  Status Write(Journal& journal, size_t count, std::unique_ptr<safetensors::ShardWriter>* out) {
    ExecuteOptions options;
    journal.Install(options);
    CKB_ASSIGN_OR_RETURN(*out, options.open_shard(tmp_.path(), plan_.shards[0]));
    safetensors::ShardWriter& writer = **out;
    for (size_t unit = 0; unit < count; ++unit) {
      if (options.skip && options.skip(unit)) continue;
      CKB_RETURN_IF_ERROR(options.wrap(unit, [&]() -> Status {
        const std::string bytes = Bytes(unit, static_cast<char>('A' + unit));
        if (unit < 2) return writer.WriteTensor(unit, bytes.data(), bytes.size());
        CKB_RETURN_IF_ERROR(writer.WriteTensorPart(unit, 0, bytes.data(), 10));
        return writer.WriteTensorPart(unit, 10, bytes.data() + 10, bytes.size() - 10);
      }));
    }
    return Status::Ok();
  }
  // The shard file holds the planned header and every tensor's bytes.
  void ExpectWritten() const {
    std::ifstream in(tmp_ / "model.safetensors", std::ios::binary);
    const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const safetensors::PlannedShard& shard = plan_.shards[0];
    ASSERT_EQ(file.size(), shard.file_bytes);
    EXPECT_EQ(file.substr(0, shard.header.size()), shard.header);
    for (size_t i = 0; i < shard.tensors.size(); ++i) {
      const auto& t = shard.tensors[i];
      EXPECT_EQ(file.substr(shard.header.size() + t.begin, t.end - t.begin),
                Bytes(i, static_cast<char>('A' + i)))
          << t.spec.name;
    }
  }
  testing::TempDir tmp_;
  safetensors::ShardPlan plan_;
};

TEST_F(JournalShardTest, VerifiedUnitsAreTakenOverAndDamagedOnesRedone) {
  {
    auto journal = Journal::Create(tmp_.path(), kFingerprint);
    ASSERT_TRUE(journal.ok());
    std::unique_ptr<safetensors::ShardWriter> writer;
    ASSERT_TRUE(Write(**journal, 3, &writer).ok());
    // Killed before Finish; then a torn line.
  }
  // Every piece carries the CRC-32C of its bytes (base/checksum.h's).
  std::ifstream lines(tmp_ / kJournalFileName);
  size_t checked = 0;
  for (std::string line; std::getline(lines, line);) {
    const json record = json::parse(line.substr(9));
    for (const json& piece : record.value("pieces", json::array())) {
      const size_t tensor = piece["tensor"].get<size_t>();
      const std::string bytes =
          Bytes(tensor, static_cast<char>('A' + tensor))
              .substr(piece["offset"].get<size_t>(), piece["length"].get<size_t>());
      EXPECT_EQ(piece["crc32c"].get<uint32_t>(), ComputeCrc32c(bytes.data(), bytes.size()));
      ++checked;
    }
  }
  EXPECT_EQ(checked, 4u);
  std::ofstream(tmp_ / kJournalFileName, std::ios::app) << "0000 {\"unit\": 1";

  // Damage tensor b (unit 1) on disk.
  const auto& b = plan_.shards[0].tensors[1];
  {
    std::fstream file(tmp_ / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(plan_.shards[0].header.size() + b.begin + 3));
    file.put('Z');
  }

  auto journal = Journal::Open(tmp_.path(), kFingerprint);
  ASSERT_TRUE(journal.ok()) << journal.status().message();
  const Journal::Verified verified = (*journal)->Verify(2);
  EXPECT_EQ(verified.units, 2u) << verified.first_problem;
  EXPECT_EQ(verified.pieces, 3u);  // a, and c in two parts
  EXPECT_EQ(verified.bad_units, 1u);
  EXPECT_EQ(verified.bad_pieces, 1u);
  EXPECT_EQ(verified.damaged_lines, 0u);  // the torn line was the last one: cut off
  EXPECT_NE(verified.first_problem.find("have CRC-32C"), std::string::npos)
      << verified.first_problem;

  std::unique_ptr<safetensors::ShardWriter> writer;
  ASSERT_TRUE(Write(**journal, 3, &writer).ok());
  Status finished = writer->Finish();
  ASSERT_TRUE(finished.ok()) << finished.message();

  ExpectWritten();
  // The journal now records unit 1 again, after the cut-off torn line.
  journal->reset();
  auto again = Journal::Open(tmp_.path(), kFingerprint);
  ASSERT_TRUE(again.ok());
  const Journal::Verified all = (*again)->Verify(1);
  EXPECT_EQ(all.units, 3u);
  EXPECT_EQ(all.bad_pieces, 0u);
  EXPECT_EQ(all.damaged_lines, 0u);
}

TEST_F(JournalShardTest, AShardWhoseHeaderMovedIsRewritten) {
  {
    auto journal = Journal::Create(tmp_.path(), kFingerprint);
    ASSERT_TRUE(journal.ok());
    std::unique_ptr<safetensors::ShardWriter> writer;
    ASSERT_TRUE(Write(**journal, 3, &writer).ok());
  }
  // The resumed run plans a longer header (other metadata): every tensor
  // moves, so nothing recorded may be taken over.
  Result<safetensors::ShardPlan> moved = safetensors::PlanShards(
      {{"a", DType::kF32, {64}}, {"b", DType::kF32, {32}}, {"c", DType::kBF16, {16}}}, 1 << 20,
      {{"note", std::string(40, 'x')}});
  ASSERT_TRUE(moved.ok());
  ASSERT_NE(moved->shards[0].header.size(), plan_.shards[0].header.size());
  plan_ = std::move(*moved);
  auto journal = Journal::Open(tmp_.path(), kFingerprint);
  ASSERT_TRUE(journal.ok());
  EXPECT_EQ((*journal)->Verify(1).units, 3u);  // intact where they were written
  std::unique_ptr<safetensors::ShardWriter> writer;
  Status wrote = Write(**journal, 3, &writer);
  ASSERT_TRUE(wrote.ok()) << wrote.message();  // redone, not "written twice"
  ASSERT_TRUE(writer->Finish().ok());
  ExpectWritten();
}

}  // namespace
}  // namespace ckptbridge::engine
