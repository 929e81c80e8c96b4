#include "host/formats/safetensors/writer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "host/formats/safetensors/reader.h"
#include "tests/formats/safetensors/test_util.h"

namespace ckptbridge::safetensors {
namespace {

using ::ckptbridge::safetensors::testing::FixturePath;
using ::ckptbridge::safetensors::testing::ReadBytes;
using ::ckptbridge::safetensors::testing::ScratchDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

namespace fs = std::filesystem;

std::vector<std::string> Names(const PlannedShard& shard) {
  std::vector<std::string> names;
  for (const PlannedTensor& t : shard.tensors) names.push_back(t.spec.name);
  return names;
}

// Deterministic, distinct bytes for a tensor.
std::string Pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>(rng() & 0xff);
  return bytes;
}

// Checks a planned header without our reader: the length prefix, 8-byte
// alignment, compact JSON with __metadata__ first and entries in data order,
// offsets contiguous and aligned to the element size. Returns the parsed JSON.
nlohmann::ordered_json CheckHeaderIndependently(const PlannedShard& shard) {
  const std::string& header = shard.header;
  EXPECT_GE(header.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(header[i]);
  EXPECT_EQ(8 + n, header.size());
  EXPECT_EQ(header.size() % 8, 0u) << shard.file_name;
  const std::string json_text = header.substr(8);
  EXPECT_EQ(json_text.front(), '{');
  const size_t last = json_text.find_last_not_of(' ');
  EXPECT_EQ(json_text[last], '}');
  EXPECT_LT(json_text.size() - last - 1, 8u) << "padding longer than needed";
  const std::string compact = json_text.substr(0, last + 1);
  auto json = nlohmann::ordered_json::parse(compact);
  EXPECT_EQ(json.dump(), compact) << "header is not compact";

  auto it = json.begin();
  EXPECT_EQ(it.key(), "__metadata__");
  EXPECT_EQ(json["__metadata__"]["format"], "pt");
  ++it;
  uint64_t offset = 0;
  size_t index = 0;
  for (; it != json.end(); ++it, ++index) {
    if (index >= shard.tensors.size()) {
      ADD_FAILURE() << "extra entry " << it.key();
      break;
    }
    const PlannedTensor& t = shard.tensors[index];
    EXPECT_EQ(it.key(), t.spec.name);
    EXPECT_EQ((*it)["dtype"], std::string(SafetensorsName(t.spec.dtype)));
    EXPECT_EQ((*it)["shape"].get<Shape>(), t.spec.shape);
    const uint64_t begin = (*it)["data_offsets"][0].get<uint64_t>();
    const uint64_t end = (*it)["data_offsets"][1].get<uint64_t>();
    EXPECT_EQ(begin, offset) << t.spec.name;
    EXPECT_EQ(begin, t.begin);
    EXPECT_EQ(end, t.end);
    EXPECT_EQ(end - begin, NumElementsUnchecked(t.spec.shape) * DTypeSize(t.spec.dtype));
    EXPECT_EQ((header.size() + begin) % DTypeSize(t.spec.dtype), 0u)
        << t.spec.name << " is not naturally aligned in the file";
    offset = end;
  }
  EXPECT_EQ(index, shard.tensors.size());
  EXPECT_EQ(shard.file_bytes, header.size() + offset);
  return json;
}

TEST(PlanShardsTest, SplitsInNameOrderAndIsolatesOversizeTensors) {
  std::vector<TensorSpec> specs = {
      {"c", DType::kF32, {4}},   // 16 bytes
      {"a", DType::kBF16, {3}},  // 6
      {"f", DType::kU8, {1}},    // 1
      {"e", DType::kF64, {10}},  // 80: more than a shard on its own
      {"b", DType::kF32, {2}},   // 8
      {"d", DType::kI8, {5}},    // 5
  };
  Result<ShardPlan> plan = PlanShards(specs, 24);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  ASSERT_EQ(plan->shards.size(), 4u);
  EXPECT_EQ(plan->shards[0].file_name, "model-00001-of-00004.safetensors");
  EXPECT_EQ(plan->shards[1].file_name, "model-00002-of-00004.safetensors");
  EXPECT_EQ(plan->shards[3].file_name, "model-00004-of-00004.safetensors");
  // a+b = 14, +c would be 30 > 24; c+d = 21, +e too big; e alone; f.
  // Inside a shard: larger elements first.
  EXPECT_THAT(Names(plan->shards[0]), ElementsAre("b", "a"));
  EXPECT_THAT(Names(plan->shards[1]), ElementsAre("c", "d"));
  EXPECT_THAT(Names(plan->shards[2]), ElementsAre("e"));
  EXPECT_THAT(Names(plan->shards[3]), ElementsAre("f"));
  EXPECT_EQ(plan->shards[0].tensors[0].begin, 0u);
  EXPECT_EQ(plan->shards[0].tensors[0].end, 8u);
  EXPECT_EQ(plan->shards[0].tensors[1].begin, 8u);
  EXPECT_EQ(plan->shards[0].tensors[1].end, 14u);
  EXPECT_EQ(plan->total_tensor_bytes, 116u);
  EXPECT_THAT(plan->location, ElementsAre(Pair("a", Pair(0u, 1u)), Pair("b", Pair(0u, 0u)),
                                          Pair("c", Pair(1u, 0u)), Pair("d", Pair(1u, 1u)),
                                          Pair("e", Pair(2u, 0u)), Pair("f", Pair(3u, 0u))));
  for (const PlannedShard& shard : plan->shards) CheckHeaderIndependently(shard);
}

TEST(PlanShardsTest, ExactFitStaysInOneShard) {
  Result<ShardPlan> plan =
      PlanShards({{"a", DType::kU8, {12}}, {"b", DType::kU8, {12}}, {"c", DType::kU8, {1}}}, 24);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  ASSERT_EQ(plan->shards.size(), 2u);
  EXPECT_THAT(Names(plan->shards[0]), ElementsAre("a", "b"));
  EXPECT_THAT(Names(plan->shards[1]), ElementsAre("c"));
}

TEST(PlanShardsTest, OneShardIsModelSafetensors) {
  Result<ShardPlan> plan = PlanShards({{"w", DType::kBF16, {2, 3}}, {"s", DType::kF32, {}}},
                                      kDefaultMaxShardBytes, {{"source", "ckptbridge"}});
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  ASSERT_EQ(plan->shards.size(), 1u);
  EXPECT_EQ(plan->shards[0].file_name, "model.safetensors");
  nlohmann::ordered_json json = CheckHeaderIndependently(plan->shards[0]);
  EXPECT_EQ(json["__metadata__"],
            (nlohmann::ordered_json{{"format", "pt"}, {"source", "ckptbridge"}}));
  // Our own reader agrees with the header, and reads the metadata back.
  const PlannedShard& shard = plan->shards[0];
  Result<Header> header = ParseHeader(std::string_view(shard.header).substr(8),
                                      shard.file_bytes - shard.header.size(), "planned");
  ASSERT_TRUE(header.ok()) << header.status().message();
  EXPECT_THAT(header->metadata, ElementsAre(Pair("format", "pt"), Pair("source", "ckptbridge")));
  ASSERT_EQ(header->tensors.size(), 2u);
  EXPECT_EQ(header->tensors[0].name, "s");
  EXPECT_EQ(header->tensors[0].shape, Shape{});
}

TEST(PlanShardsTest, EveryDTypeMixIsNaturallyAligned) {
  const DType kAll[] = {DType::kBool, DType::kU8,     DType::kI8,     DType::kU16,
                        DType::kI16,  DType::kU32,    DType::kI32,    DType::kU64,
                        DType::kI64,  DType::kF16,    DType::kBF16,   DType::kF32,
                        DType::kF64,  DType::kF8E4M3, DType::kF8E5M2, DType::kF8E8M0};
  std::mt19937 rng(42);
  std::vector<TensorSpec> specs;
  for (int i = 0; i < 200; ++i) {
    Shape shape;
    for (int r = static_cast<int>(rng() % 4); r > 0; --r) shape.push_back(rng() % 7);
    specs.push_back({"t" + std::to_string(i), kAll[rng() % 16], shape});
  }
  for (uint64_t max : {uint64_t{1}, uint64_t{100}, uint64_t{1000}, kDefaultMaxShardBytes}) {
    SCOPED_TRACE(max);
    Result<ShardPlan> plan = PlanShards(specs, max);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    size_t tensors = 0;
    for (const PlannedShard& shard : plan->shards) {
      CheckHeaderIndependently(shard);
      tensors += shard.tensors.size();
      for (size_t i = 1; i < shard.tensors.size(); ++i) {
        const PlannedTensor& a = shard.tensors[i - 1];
        const PlannedTensor& b = shard.tensors[i];
        EXPECT_TRUE(
            DTypeSize(a.spec.dtype) > DTypeSize(b.spec.dtype) ||
            (DTypeSize(a.spec.dtype) == DTypeSize(b.spec.dtype) && a.spec.name < b.spec.name));
      }
      // No shard grows past the limit unless it holds a single tensor.
      if (shard.tensors.size() > 1) {
        EXPECT_LE(shard.tensors.back().end, max);
      }
    }
    EXPECT_EQ(tensors, specs.size());
    EXPECT_EQ(plan->location.size(), specs.size());
  }
}

TEST(PlanShardsTest, EmptyPlanIsOneEmptyFile) {
  Result<ShardPlan> plan = PlanShards({}, kDefaultMaxShardBytes);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  ASSERT_EQ(plan->shards.size(), 1u);
  EXPECT_EQ(plan->shards[0].file_name, "model.safetensors");
  EXPECT_THAT(plan->shards[0].tensors, IsEmpty());
  CheckHeaderIndependently(plan->shards[0]);
}

TEST(PlanShardsTest, RejectsBadInput) {
  Result<ShardPlan> duplicate =
      PlanShards({{"w", DType::kF32, {1}}, {"v", DType::kF32, {1}}, {"w", DType::kBF16, {2}}}, 100);
  ASSERT_FALSE(duplicate.ok());
  EXPECT_EQ(duplicate.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(duplicate.status().message(), "tensor 'w' appears twice in the safetensors output");

  Result<ShardPlan> reserved = PlanShards({{"__metadata__", DType::kF32, {1}}}, 100);
  EXPECT_EQ(reserved.status().message(), "tensor name '__metadata__' is reserved in safetensors");

  Result<ShardPlan> invalid = PlanShards({{"w", DType::kInvalid, {1}}}, 100);
  EXPECT_EQ(invalid.status().message(), "tensor 'w': invalid dtype");

  Result<ShardPlan> huge = PlanShards({{"w", DType::kF64, {int64_t{1} << 61}}}, 100);
  EXPECT_EQ(huge.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(huge.status().message(), "tensor 'w': shape [2305843009213693952] is too large");

  Result<ShardPlan> format = PlanShards({}, 100, {{"format", "np"}});
  EXPECT_EQ(format.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(format.status().message(), HasSubstr("format must stay 'pt'"));

  Result<ShardPlan> utf8 = PlanShards({{"bad\xff", DType::kF32, {1}}}, 100);
  EXPECT_EQ(utf8.status().code(), StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Writing.

std::vector<TensorWithData> SampleTensors() {
  std::vector<TensorWithData> tensors;
  auto add = [&](std::string name, DType dtype, Shape shape) {
    const size_t n = NumElementsUnchecked(shape) * DTypeSize(dtype);
    tensors.push_back({{std::move(name), dtype, std::move(shape)},
                       Pattern(n, static_cast<uint32_t>(tensors.size() + 1))});
  };
  add("model.layers.0.mlp.down_proj.weight", DType::kBF16, {16, 8});
  add("model.embed_tokens.weight", DType::kF32, {10, 8});
  add("model.norm.weight", DType::kBF16, {8});
  add("model.layers.0.self_attn.scale", DType::kF8E8M0, {3});
  add("lm_head.weight", DType::kF16, {10, 8});
  add("step", DType::kI64, {});
  add("empty", DType::kF32, {0, 4});
  add("mask", DType::kBool, {5});
  return tensors;
}

void ExpectReadsBack(const fs::path& dir, const std::vector<TensorWithData>& tensors) {
  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_THAT((*checkpoint)->warnings(), IsEmpty());
  ASSERT_EQ((*checkpoint)->tensors().size(), tensors.size());
  uint64_t total = 0;
  for (const TensorWithData& t : tensors) {
    const CheckpointTensor* read = (*checkpoint)->Find(t.spec.name);
    ASSERT_NE(read, nullptr) << t.spec.name;
    EXPECT_EQ(read->info->dtype, t.spec.dtype) << t.spec.name;
    EXPECT_EQ(read->info->shape, t.spec.shape) << t.spec.name;
    ASSERT_EQ(read->info->num_bytes(), t.bytes.size()) << t.spec.name;
    EXPECT_EQ(std::memcmp(read->file->Data(*read->info), t.bytes.data(), t.bytes.size()), 0)
        << t.spec.name;
    total += t.bytes.size();
  }
  EXPECT_EQ((*checkpoint)->total_bytes(), total);
  for (const auto& file : (*checkpoint)->files()) {
    EXPECT_THAT(file->header().metadata, ElementsAre(Pair("format", "pt")));
    EXPECT_EQ(file->data_offset() % 8, 0u);
  }
}

TEST(WriteCheckpointTest, ShardedRoundTripWithIndex) {
  ScratchDir dir;
  const std::vector<TensorWithData> tensors = SampleTensors();
  ASSERT_TRUE(WriteCheckpoint(dir.path(), tensors, 300).ok());
  Result<ShardPlan> plan = [&] {
    std::vector<TensorSpec> specs;
    for (const auto& t : tensors) specs.push_back(t.spec);
    return PlanShards(specs, 300);
  }();
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->shards.size(), 3u);
  for (const PlannedShard& shard : plan->shards) {
    EXPECT_EQ(fs::file_size(dir / shard.file_name), shard.file_bytes) << shard.file_name;
    // The header on disk is the planned one, byte for byte.
    EXPECT_EQ(ReadBytes(dir / shard.file_name).substr(0, shard.header.size()), shard.header);
  }
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));

  const std::string index_text = ReadBytes(dir / "model.safetensors.index.json");
  nlohmann::json index = nlohmann::json::parse(index_text);
  nlohmann::json weight_map = nlohmann::json::object();
  for (const auto& [name, location] : plan->location) {
    weight_map[name] = plan->shards[location.first].file_name;
  }
  const nlohmann::json expected = {{"metadata", {{"total_size", 768}}}, {"weight_map", weight_map}};
  EXPECT_EQ(index, expected);
  EXPECT_EQ(index_text, expected.dump(2) + "\n");  // indent 2, keys sorted
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["step"], "model-00003-of-00003.safetensors");

  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_TRUE((*checkpoint)->has_index());
  EXPECT_EQ((*checkpoint)->files().size(), 3u);
  ExpectReadsBack(dir.path(), tensors);
}

TEST(WriteCheckpointTest, SingleShardHasNoIndex) {
  ScratchDir dir;
  const std::vector<TensorWithData> tensors = SampleTensors();
  ASSERT_TRUE(WriteCheckpoint(dir / "out", tensors).ok());
  EXPECT_TRUE(fs::exists(dir / "out" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "out" / "model.safetensors.index.json"));
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir / "out")) files.push_back(entry.path());
  EXPECT_EQ(files.size(), 1u);
  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir / "out");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_FALSE((*checkpoint)->has_index());
  ExpectReadsBack(dir / "out", tensors);
}

TEST(WriteCheckpointTest, RejectsWrongByteCounts) {
  ScratchDir dir;
  std::vector<TensorWithData> tensors = SampleTensors();
  tensors[0].bytes.pop_back();
  Status status = WriteCheckpoint(dir.path(), tensors);
  EXPECT_EQ(status.code(), StatusCode::kInternal);
  EXPECT_THAT(
      status.message(),
      HasSubstr("tensor 'model.layers.0.mlp.down_proj.weight': got 255 bytes but dtype BF16 "
                "shape [16, 8] needs 256"));
}

// Real MLX data (unaligned, out of order) through the writer and back.
TEST(WriteCheckpointTest, RewritesTheMlxFixtureByteForByte) {
  Result<File> source = File::Open(FixturePath("hf/mlxd-tiny_llama3/model.safetensors"));
  ASSERT_TRUE(source.ok()) << source.status().message();
  std::vector<TensorWithData> tensors;
  for (const TensorInfo& t : source->tensors()) {
    tensors.push_back({{t.name, t.dtype, t.shape},
                       std::string(reinterpret_cast<const char*>(source->Data(t)), t.num_bytes())});
  }
  ScratchDir dir;
  ASSERT_TRUE(WriteCheckpoint(dir.path(), tensors, 64 * 1024).ok());
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  ExpectReadsBack(dir.path(), tensors);
}

class ShardWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<ShardPlan> plan =
        PlanShards({{"a", DType::kF32, {4}}, {"b", DType::kBF16, {2}}, {"c", DType::kU8, {3}}},
                   kDefaultMaxShardBytes);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    plan_ = std::move(plan).value();
  }
  const PlannedShard& shard() const { return plan_.shards[0]; }
  fs::path ShardPath() const { return dir_ / "model.safetensors"; }

  ScratchDir dir_;
  ShardPlan plan_;
};

TEST_F(ShardWriterTest, CreateWritesTheHeaderAndSizesTheFile) {
  Result<std::unique_ptr<ShardWriter>> writer = ShardWriter::Create(dir_.path(), shard());
  ASSERT_TRUE(writer.ok()) << writer.status().message();
  EXPECT_EQ(fs::file_size(ShardPath()), shard().file_bytes);
  EXPECT_EQ(ReadBytes(ShardPath()).substr(0, shard().header.size()), shard().header);
}

TEST_F(ShardWriterTest, RewritesTheHeaderOnlyWithOneOfTheSameLength) {
  // Metadata known late (a receipt's hashes) replaces a placeholder of the
  // same length; anything longer or shorter would move every tensor.
  Result<ShardPlan> placeholder = PlanShards({{"a", DType::kF32, {4}}}, kDefaultMaxShardBytes,
                                             {{"receipt", std::string(32, '0')}});
  Result<ShardPlan> hashed = PlanShards({{"a", DType::kF32, {4}}}, kDefaultMaxShardBytes,
                                        {{"receipt", std::string(32, 'f')}});
  Result<ShardPlan> longer = PlanShards({{"a", DType::kF32, {4}}}, kDefaultMaxShardBytes,
                                        {{"receipt", std::string(40, 'f')}});
  ASSERT_TRUE(placeholder.ok() && hashed.ok() && longer.ok());
  Result<std::unique_ptr<ShardWriter>> writer =
      ShardWriter::Create(dir_.path(), placeholder->shards[0]);
  ASSERT_TRUE(writer.ok()) << writer.status().message();
  ASSERT_TRUE((*writer)->WriteTensor(0, "0123456789abcdef", 16).ok());

  const Status moved = (*writer)->RewriteHeader(longer->shards[0].header);
  EXPECT_EQ(moved.code(), StatusCode::kInternal);
  EXPECT_EQ(moved.message(), ShardPath().string() + ": a rewritten header of " +
                                 std::to_string(longer->shards[0].header.size()) +
                                 " bytes would move the tensors planned after " +
                                 std::to_string(placeholder->shards[0].header.size()) +
                                 " header bytes");

  ASSERT_TRUE((*writer)->RewriteHeader(hashed->shards[0].header).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  Result<File> file = File::Open(ShardPath());
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_EQ(file->header().metadata.at("receipt"), std::string(32, 'f'));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file->Data(*file->Find("a"))), 16),
            "0123456789abcdef");
}

TEST_F(ShardWriterTest, RejectsMisuse) {
  Result<std::unique_ptr<ShardWriter>> created = ShardWriter::Create(dir_.path(), shard());
  ASSERT_TRUE(created.ok()) << created.status().message();
  ShardWriter& writer = **created;
  const std::string a(16, 'a');

  Status wrong_size = writer.WriteTensor(0, a.data(), 15);
  EXPECT_EQ(wrong_size.code(), StatusCode::kInternal);
  EXPECT_EQ(wrong_size.message(),
            ShardPath().string() + ": tensor 'a': got 15 bytes but dtype F32 shape [4] needs 16");

  ASSERT_TRUE(writer.WriteTensor(0, a.data(), 16).ok());
  Status twice = writer.WriteTensor(0, a.data(), 16);
  EXPECT_EQ(twice.code(), StatusCode::kInternal);
  EXPECT_EQ(twice.message(), ShardPath().string() + ": tensor 'a' written twice");

  Status out_of_range = writer.WriteTensor(3, a.data(), 1);
  EXPECT_EQ(out_of_range.code(), StatusCode::kInternal);
  EXPECT_THAT(out_of_range.message(), HasSubstr("tensor index 3 out of range"));

  ASSERT_TRUE(writer.WriteTensor(2, "ccc", 3).ok());
  Status unfinished = writer.Finish();
  EXPECT_EQ(unfinished.code(), StatusCode::kInternal);
  EXPECT_EQ(unfinished.message(), ShardPath().string() + ": 1 of 3 tensors never written: 'b'");

  ASSERT_TRUE(writer.WriteTensor(1, "bbbb", 4).ok());
  ASSERT_TRUE(writer.Finish().ok());
  Result<File> file = File::Open(ShardPath());
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file->Data(*file->Find("b"))), 4), "bbbb");
}

TEST_F(ShardWriterTest, WritesATensorInPartsAndChecksThatThePartsAddUp) {
  Result<std::unique_ptr<ShardWriter>> created = ShardWriter::Create(dir_.path(), shard());
  ASSERT_TRUE(created.ok()) << created.status().message();
  ShardWriter& writer = **created;

  // 'a' (16 bytes) in four pieces, out of order.
  ASSERT_TRUE(writer.WriteTensorPart(0, 12, "DDDD", 4).ok());
  ASSERT_TRUE(writer.WriteTensorPart(0, 0, "AAAA", 4).ok());
  ASSERT_TRUE(writer.WriteTensorPart(0, 8, "CCCC", 4).ok());

  Status outside = writer.WriteTensorPart(0, 14, "xxxx", 4);
  EXPECT_EQ(outside.code(), StatusCode::kInternal);
  EXPECT_EQ(outside.message(),
            ShardPath().string() + ": tensor 'a': bytes [14, 18) lie outside its 16 bytes");
  Status whole_after_parts = writer.WriteTensor(0, std::string(16, 'a').data(), 16);
  EXPECT_EQ(whole_after_parts.code(), StatusCode::kInternal);
  EXPECT_EQ(whole_after_parts.message(),
            ShardPath().string() + ": tensor 'a' written whole and in parts");
  ASSERT_TRUE(writer.WriteTensor(1, "bbbb", 4).ok());
  Status part_after_whole = writer.WriteTensorPart(1, 0, "b", 1);
  EXPECT_EQ(part_after_whole.message(),
            ShardPath().string() + ": tensor 'b' written whole and in parts");
  ASSERT_TRUE(writer.WriteTensor(2, "ccc", 3).ok());

  // Three of four pieces: 'a' is not complete.
  Status unfinished = writer.Finish();
  EXPECT_EQ(unfinished.code(), StatusCode::kInternal);
  EXPECT_EQ(unfinished.message(), ShardPath().string() + ": 1 of 3 tensors never written: 'a'");

  ASSERT_TRUE(writer.WriteTensorPart(0, 4, "BBBB", 4).ok());
  Status too_much = writer.WriteTensorPart(0, 4, "BBBB", 4);
  EXPECT_EQ(too_much.message(),
            ShardPath().string() + ": tensor 'a': pieces add up to more than 16 bytes");
}

TEST_F(ShardWriterTest, PiecesOfOneTensorLandWhereTheyBelong) {
  Result<std::unique_ptr<ShardWriter>> created = ShardWriter::Create(dir_.path(), shard());
  ASSERT_TRUE(created.ok()) << created.status().message();
  ShardWriter& writer = **created;
  ASSERT_TRUE(writer.WriteTensorPart(0, 8, "CCCCDDDD", 8).ok());
  ASSERT_TRUE(writer.WriteTensorPart(0, 0, "AAAABBBB", 8).ok());
  ASSERT_TRUE(writer.WriteTensor(1, "bbbb", 4).ok());
  ASSERT_TRUE(writer.WriteTensorPart(2, 0, "ccc", 3).ok());
  ASSERT_TRUE(writer.Finish().ok());
  Result<File> file = File::Open(ShardPath());
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file->Data(*file->Find("a"))), 16),
            "AAAABBBBCCCCDDDD");
  Result<TensorBytes> middle = file->ReadRange(*file->Find("a"), 4, 8);
  ASSERT_TRUE(middle.ok()) << middle.status().message();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(middle->data()), middle->size()), "BBBBCCCC");
  Result<TensorBytes> past = file->ReadRange(*file->Find("a"), 12, 5);
  EXPECT_EQ(past.status().code(), StatusCode::kInternal);
  EXPECT_EQ(past.status().message(),
            ShardPath().string() + ": tensor 'a': bytes [12, 17) lie outside its 16 bytes");
}

TEST_F(ShardWriterTest, WritesFromManyThreadsInAnyOrder) {
  std::vector<TensorSpec> specs;
  for (int i = 0; i < 64; ++i) {
    specs.push_back({"t" + std::to_string(i), i % 2 ? DType::kF32 : DType::kBF16, {i + 1, 3}});
  }
  Result<ShardPlan> plan = PlanShards(specs, kDefaultMaxShardBytes);
  ASSERT_TRUE(plan.ok());
  const PlannedShard& planned = plan->shards[0];
  Result<std::unique_ptr<ShardWriter>> writer = ShardWriter::Create(dir_.path(), planned);
  ASSERT_TRUE(writer.ok()) << writer.status().message();

  std::vector<std::string> data(planned.tensors.size());
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = Pattern(planned.tensors[i].end - planned.tensors[i].begin, static_cast<uint32_t>(i));
  }
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (size_t i = data.size(); i-- > 0;) {
        if (i % 4 != static_cast<size_t>(w)) continue;
        if (!(*writer)->WriteTensor(i, data[i].data(), data[i].size()).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  ASSERT_TRUE((*writer)->Finish().ok());

  Result<File> file = File::Open(ShardPath());
  ASSERT_TRUE(file.ok()) << file.status().message();
  for (size_t i = 0; i < planned.tensors.size(); ++i) {
    const TensorInfo* info = file->Find(planned.tensors[i].spec.name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(file->Data(*info)), info->num_bytes()),
              data[i]);
  }
}

TEST(WriteIndexTest, WritesSortedPrettyJson) {
  Result<ShardPlan> plan =
      PlanShards({{"z", DType::kU8, {4}}, {"a", DType::kU8, {4}}, {"m", DType::kU16, {1}}}, 4);
  ASSERT_TRUE(plan.ok());
  ScratchDir dir;
  ASSERT_TRUE(WriteIndex(dir.path(), *plan).ok());
  EXPECT_EQ(ReadBytes(dir / "model.safetensors.index.json"),
            "{\n"
            "  \"metadata\": {\n"
            "    \"total_size\": 10\n"
            "  },\n"
            "  \"weight_map\": {\n"
            "    \"a\": \"model-00001-of-00003.safetensors\",\n"
            "    \"m\": \"model-00002-of-00003.safetensors\",\n"
            "    \"z\": \"model-00003-of-00003.safetensors\"\n"
            "  }\n"
            "}\n");
}

}  // namespace
}  // namespace ckptbridge::safetensors
