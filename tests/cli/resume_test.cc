// `convert --resume`, with the real binary: a conversion is SIGKILLed once
// its journal holds N lines (several N, both directions, OCDBT and plain
// zarr, several HF shards), resumed, and its output compared with an
// uninterrupted run's: HF files byte for byte, Orbax arrays through our
// reader plus every file outside OCDBT's randomly named data files. Then
// the ways a resume can meet a damaged or foreign staging directory.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "host/engine/staging.h"
#include "host/formats/orbax/checkpoint.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using testing::Exit;

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Complete lines in the journal of the (single) staging directory of `dst`.
size_t JournalLines(const fs::path& dst) {
  for (const fs::path& dir : engine::LeftoverStagingDirs(dst)) {
    const std::string text = ReadText(dir / engine::kJournalFileName);
    return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
  }
  return 0;
}

// Runs `ckptbridge args...`; with `kill_at_lines` > 0, SIGKILLs it as soon
// as the journal next to the destination (the last argument) holds that
// many lines. A run that was not killed must have exited on its own.
Exit RunBinary(const std::vector<std::string>& args, const fs::path& work,
               size_t kill_at_lines = 0) {
  testing::RunOptions options;
  if (kill_at_lines > 0) {
    options.signal_when = [&] { return JournalLines(args.back()) >= kill_at_lines; };
    options.poll = std::chrono::microseconds(100);
    options.timeout = std::chrono::seconds(120);
  }
  Exit out = testing::RunBinary(args, work, options);
  if (!out.killed) {
    EXPECT_TRUE(out.exited) << "signal " << out.code;
  }
  return out;
}

// Every regular file below `root` by relative path, OCDBT data files
// (random names) collapsed to "d/*" with empty content, like the OCDBT
// manifest and _CHECKPOINT_METADATA. Timestamps (the
// receipt's written_at) and `root`'s own path (commit_success.txt) are
// masked: they differ between any two runs.
std::map<std::string, std::string> Files(const fs::path& root) {
  static const std::regex kTimestamp("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z");
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    std::string name = entry.path().lexically_relative(root).generic_string();
    const size_t d = name.rfind("/d/");
    if (d != std::string::npos || name.rfind("d/", 0) == 0) {
      files[name.substr(0, d == std::string::npos ? 0 : d + 1) + "d/*"] = "";
      continue;
    }
    if (entry.path().filename() == "_CHECKPOINT_METADATA" ||
        entry.path().filename() == "manifest.ocdbt") {
      // Init and commit timestamps in nanoseconds; the manifest also points
      // into a randomly named data file. (OCDBT contents are compared
      // through the reader.)
      files[name] = "";
      continue;
    }
    std::string text = std::regex_replace(ReadText(entry.path()), kTimestamp, "<time>");
    for (size_t at = text.find(root.string()); at != std::string::npos;
         at = text.find(root.string(), at)) {
      text.replace(at, root.string().size(), "<root>");
    }
    files[name] = std::move(text);
  }
  return files;
}

// An Orbax output compared array by array through our reader: dtype,
// shape, chunking and values.
void ExpectSameOrbax(const fs::path& expected, const fs::path& actual) {
  auto a = orbax::ItemReader::Open(expected);
  auto b = orbax::ItemReader::Open(actual);
  ASSERT_TRUE(a.ok()) << a.status().message();
  ASSERT_TRUE(b.ok()) << b.status().message();
  ASSERT_EQ((*a)->arrays().size(), (*b)->arrays().size());
  for (size_t i = 0; i < (*a)->arrays().size(); ++i) {
    const auto& x = (*a)->arrays()[i];
    const auto& y = (*b)->arrays()[i];
    ASSERT_EQ(x.leaf->name(), y.leaf->name());
    EXPECT_EQ(x.metadata.ToJson(), y.metadata.ToJson()) << x.leaf->name();
  }
  const auto values_a = testing::ReadOrbax(expected);
  const auto values_b = testing::ReadOrbax(actual);
  ASSERT_EQ(values_a.size(), values_b.size());
  for (const auto& [name, values] : values_a) {
    ASSERT_TRUE(values_b.count(name)) << name;
    EXPECT_EQ(values_b.at(name).dtype, values.dtype) << name;
    EXPECT_EQ(values_b.at(name).shape, values.shape) << name;
    EXPECT_TRUE(values_b.at(name).data == values.data) << name;
  }
}

void ExpectSameFiles(const fs::path& expected, const fs::path& actual) {
  const auto a = Files(expected);
  const auto b = Files(actual);
  std::set<std::string> names_a, names_b;
  for (const auto& [name, text] : a) names_a.insert(name);
  for (const auto& [name, text] : b) names_b.insert(name);
  ASSERT_EQ(names_a, names_b);
  for (const auto& [name, text] : a) EXPECT_TRUE(b.at(name) == text) << name << " differs";
  EXPECT_FALSE(b.count(engine::kJournalFileName));
}

class ResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // About 36 MiB of bf16 in 20 layers: ~200 units.
    const json config = testing::InterruptibleLlamaConfig(20);
    testing::WriteHfCheckpoint(tmp_ / "src", config, testing::LlamaFamilyTensors(config),
                               DType::kBF16, /*seed=*/9);
  }
  std::vector<std::string> ToMaxText(const fs::path& dst, const std::string& storage) const {
    return {"convert",
            "--to",
            "maxtext",
            storage,
            "--save-dtype",
            "float32",
            "--threads",
            "2",
            (tmp_ / "src").string(),
            dst.string()};
  }
  std::vector<std::string> ToHf(const fs::path& src, const fs::path& dst) const {
    return {"convert", "--to",      "hf", "--save-dtype", "float32",   "--max-shard-size",
            "4MiB",    "--threads", "2",  src.string(),   dst.string()};
  }
  static std::vector<std::string> Resume(std::vector<std::string> args) {
    args.insert(args.begin() + 1, "--resume");
    return args;
  }
  // Kills `args` at each journal length of `kill_at`, resumes, and compares
  // with `reference` (written by the same command uninterrupted).
  void KillAndResume(const std::vector<std::string>& args, const fs::path& reference, bool orbax,
                     std::initializer_list<size_t> kill_at) {
    const fs::path dst = args.back();
    int killed = 0;
    for (size_t lines : kill_at) {
      SCOPED_TRACE("killed at journal line " + std::to_string(lines));
      fs::remove_all(dst);
      Exit run = RunBinary(args, tmp_.path(), lines);
      if (!run.killed) {
        ASSERT_EQ(run.code, 0) << run.err;  // finished first: nothing to resume
        continue;
      }
      ++killed;
      ASSERT_FALSE(fs::exists(dst));
      ASSERT_EQ(engine::LeftoverStagingDirs(dst).size(), 1u);
      Exit resumed = RunBinary(Resume(args), tmp_.path());
      ASSERT_EQ(resumed.code, 0) << resumed.err;
      EXPECT_NE(resumed.err.find("note: resuming "), std::string::npos) << resumed.err;
      EXPECT_TRUE(engine::LeftoverStagingDirs(dst).empty());
      if (orbax) ExpectSameOrbax(reference, dst);
      ExpectSameFiles(reference, dst);
    }
    EXPECT_GE(killed, 2) << "the runs finished before they could be killed";
  }
  testing::TempDir tmp_;
};

TEST_F(ResumeTest, ToMaxTextOcdbtResumesToTheSameCheckpoint) {
  const std::vector<std::string> reference = ToMaxText(tmp_ / "ref", "--ocdbt");
  ASSERT_EQ(RunBinary(reference, tmp_.path()).code, 0);
  KillAndResume(ToMaxText(tmp_ / "out", "--ocdbt"), tmp_ / "ref", true, {1, 2, 40, 150});
}

TEST_F(ResumeTest, ToMaxTextZarrFilesResumesToTheSameCheckpoint) {
  const std::vector<std::string> reference = ToMaxText(tmp_ / "ref", "--no-ocdbt");
  ASSERT_EQ(RunBinary(reference, tmp_.path()).code, 0);
  KillAndResume(ToMaxText(tmp_ / "out", "--no-ocdbt"), tmp_ / "ref", true, {1, 30, 120});
}

TEST_F(ResumeTest, ToHfShardsResumeByteForByte) {
  ASSERT_EQ(RunBinary(ToMaxText(tmp_ / "mt", "--ocdbt"), tmp_.path()).code, 0);
  ASSERT_EQ(RunBinary(ToHf(tmp_ / "mt", tmp_ / "ref"), tmp_.path()).code, 0);
  size_t shards = 0;
  for (const auto& entry : fs::directory_iterator(tmp_ / "ref")) {
    shards += entry.path().extension() == ".safetensors";
  }
  ASSERT_GE(shards, 5u);
  KillAndResume(ToHf(tmp_ / "mt", tmp_ / "out"), tmp_ / "ref", false, {1, 20, 100});
}

TEST_F(ResumeTest, ToHfTensorsWrittenInPartsResumeByteForByte) {
  // A budget below the embedding's slice cuts it into row blocks: each writes
  // a part of an HF tensor (ShardWriter::WriteTensorPart), recorded as such.
  ASSERT_EQ(RunBinary(ToMaxText(tmp_ / "mt", "--ocdbt"), tmp_.path()).code, 0);
  auto args = [&](const fs::path& dst) {
    std::vector<std::string> a = ToHf(tmp_ / "mt", dst);
    a.insert(a.begin() + 1, {"--max-memory", "6MiB"});
    return a;
  };
  ASSERT_EQ(RunBinary(args(tmp_ / "ref"), tmp_.path()).code, 0);
  Exit run = RunBinary(args(tmp_ / "out"), tmp_.path(), 40);
  ASSERT_TRUE(run.killed) << run.err;
  const auto dirs = engine::LeftoverStagingDirs(tmp_ / "out");
  ASSERT_EQ(dirs.size(), 1u);
  EXPECT_NE(ReadText(dirs[0] / engine::kJournalFileName).find("\"whole\":false"),
            std::string::npos);
  Exit resumed = RunBinary(Resume(args(tmp_ / "out")), tmp_.path());
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  ExpectSameFiles(tmp_ / "ref", tmp_ / "out");
}

// Kills a to-MaxText run after `lines` journal lines; returns its staging
// directory.
fs::path KilledRun(const std::vector<std::string>& args, const fs::path& work, size_t lines) {
  Exit run = RunBinary(args, work, lines);
  EXPECT_TRUE(run.killed) << run.err;
  const auto dirs = engine::LeftoverStagingDirs(args.back());
  EXPECT_EQ(dirs.size(), 1u);
  return dirs.empty() ? fs::path() : dirs[0];
}

TEST_F(ResumeTest, CorruptedPiecesAreRedone) {
  for (const std::string storage : {"--ocdbt", "--no-ocdbt"}) {
    SCOPED_TRACE(storage);
    fs::remove_all(tmp_ / "ref");
    fs::remove_all(tmp_ / "out");
    ASSERT_EQ(RunBinary(ToMaxText(tmp_ / "ref", storage), tmp_.path()).code, 0);
    const std::vector<std::string> args = ToMaxText(tmp_ / "out", storage);
    const fs::path staging = KilledRun(args, tmp_.path(), 60);
    ASSERT_FALSE(staging.empty());
    // Flip one byte of two recorded pieces stored in files.
    std::istringstream journal(ReadText(staging / engine::kJournalFileName));
    std::string line;
    int corrupted = 0;
    while (corrupted < 2 && std::getline(journal, line)) {
      const json record = json::parse(line.substr(9));
      if (!record.contains("pieces")) continue;
      for (const json& piece : record["pieces"]) {
        if (!piece.contains("file")) continue;
        const uint64_t offset =
            piece.value("offset", uint64_t{0}) + piece["length"].get<uint64_t>() / 2;
        std::fstream file(staging / piece["file"].get<std::string>(),
                          std::ios::in | std::ios::out | std::ios::binary);
        file.seekg(static_cast<std::streamoff>(offset));
        const char byte = static_cast<char>(file.get() ^ 0x5a);
        file.seekp(static_cast<std::streamoff>(offset));
        file.put(byte);
        ++corrupted;
        break;
      }
    }
    ASSERT_EQ(corrupted, 2);
    Exit resumed = RunBinary(Resume(args), tmp_.path());
    ASSERT_EQ(resumed.code, 0) << resumed.err;
    EXPECT_NE(resumed.err.find("2 pieces failed re-verification, so their 2 units are redone"),
              std::string::npos)
        << resumed.err;
    ExpectSameOrbax(tmp_ / "ref", tmp_ / "out");
    ExpectSameFiles(tmp_ / "ref", tmp_ / "out");
  }
}

TEST_F(ResumeTest, TornLastJournalLineIsIgnored) {
  ASSERT_EQ(RunBinary(ToMaxText(tmp_ / "ref", "--ocdbt"), tmp_.path()).code, 0);
  const std::vector<std::string> args = ToMaxText(tmp_ / "out", "--ocdbt");
  const fs::path staging = KilledRun(args, tmp_.path(), 30);
  ASSERT_FALSE(staging.empty());
  {
    // What a write cut short leaves: half a record, no newline.
    std::ofstream journal(staging / engine::kJournalFileName, std::ios::app | std::ios::binary);
    journal << "0badc0de {\"unit\": 7, \"pieces\": [{\"kind\": \"chu";
  }
  Exit resumed = RunBinary(Resume(args), tmp_.path());
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("note: resuming "), std::string::npos) << resumed.err;
  ExpectSameOrbax(tmp_ / "ref", tmp_ / "out");
  ExpectSameFiles(tmp_ / "ref", tmp_ / "out");
}

TEST_F(ResumeTest, JournalOfAnotherConversionIsRefused) {
  const std::vector<std::string> args = ToMaxText(tmp_ / "out", "--ocdbt");
  const fs::path staging = KilledRun(args, tmp_.path(), 10);
  ASSERT_FALSE(staging.empty());
  std::vector<std::string> other = Resume(args);
  other[other.size() - 5] = "bfloat16";  // --save-dtype float32 -> bfloat16
  ASSERT_EQ(other[other.size() - 6], "--save-dtype");
  Exit refused = RunBinary(other, tmp_.path());
  EXPECT_EQ(refused.code, 2) << refused.err;
  EXPECT_NE(
      refused.err.find("holds an interrupted run of another conversion: plan/maxtext_tensors/"),
      std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find("was \"F32 "), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("now \"BF16 "), std::string::npos) << refused.err;
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
  EXPECT_TRUE(fs::exists(staging / engine::kJournalFileName)) << "the staging dir was touched";

  // Another storage variant is another conversion too.
  std::vector<std::string> zarr = Resume(args);
  zarr[4] = "--no-ocdbt";
  ASSERT_EQ(args[3], "--ocdbt");
  Exit refused_zarr = RunBinary(zarr, tmp_.path());
  EXPECT_EQ(refused_zarr.code, 2) << refused_zarr.err;
  EXPECT_NE(refused_zarr.err.find("options/ocdbt was true, now false"), std::string::npos)
      << refused_zarr.err;
}

TEST_F(ResumeTest, NothingToResumeStartsAFreshRun) {
  Exit run = RunBinary(Resume(ToMaxText(tmp_ / "out", "--ocdbt")), tmp_.path());
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.err.find("nothing to resume next to"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(tmp_ / "out" / engine::kJournalFileName));
  EXPECT_TRUE(engine::LeftoverStagingDirs(tmp_ / "out").empty());
  EXPECT_FALSE(testing::ReadOrbax(tmp_ / "out").empty());
}

}  // namespace
}  // namespace ckptbridge
