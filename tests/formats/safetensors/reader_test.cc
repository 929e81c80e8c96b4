#include "host/formats/safetensors/reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "host/base/numeric.h"
#include "tests/formats/safetensors/test_util.h"
#include "tests/testing/proc_maps.h"

namespace ckptbridge::safetensors {
namespace {

using ::ckptbridge::safetensors::testing::FixturePath;
using ::ckptbridge::safetensors::testing::ReadBytes;
using ::ckptbridge::safetensors::testing::SafetensorsBytes;
using ::ckptbridge::safetensors::testing::ScratchDir;
using ::ckptbridge::safetensors::testing::WriteBytes;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

namespace fs = std::filesystem;
using ::ckptbridge::testing::MappedBytesOf;

// Elements of a (possibly unaligned) tensor, loaded with memcpy.
template <typename T>
std::vector<T> Load(const File& file, const TensorInfo& tensor) {
  std::vector<T> values(tensor.num_bytes() / sizeof(T));
  std::memcpy(values.data(), file.Data(tensor), values.size() * sizeof(T));
  return values;
}

std::vector<float> LoadBf16(const File& file, const TensorInfo& tensor) {
  std::vector<float> values;
  for (uint16_t bits : Load<uint16_t>(file, tensor)) values.push_back(Bf16ToF32(bits));
  return values;
}

std::string Bytes(const File& file, const TensorInfo& tensor) {
  return std::string(reinterpret_cast<const char*>(file.Data(tensor)), tensor.num_bytes());
}

const TensorInfo& Get(const File& file, std::string_view name) {
  const TensorInfo* info = file.Find(name);
  EXPECT_NE(info, nullptr) << name;
  static const TensorInfo kMissing;
  return info ? *info : kMissing;
}

File OpenOrDie(const fs::path& path) {
  Result<File> file = File::Open(path);
  EXPECT_TRUE(file.ok()) << file.status().message();
  if (!file.ok()) std::abort();
  return std::move(file).value();
}

// ---------------------------------------------------------------------------
// Real files written by other tools.

// huggingface/safetensors samples: one dtype per file, values -3..2 (as the
// type's bit pattern for unsigned types).
// Opens hf-samples/<name>.safetensors and checks its one tensor `name`.
File OpenSample(const std::string& name, DType dtype) {
  File file = OpenOrDie(FixturePath("safetensors/hf-samples/samples/" + name + ".safetensors"));
  EXPECT_EQ(file.tensors().size(), 1u) << name;
  const TensorInfo& t = Get(file, name);
  EXPECT_EQ(t.dtype, dtype) << name;
  EXPECT_EQ(t.shape, Shape{6}) << name;
  EXPECT_EQ(t.begin, 0u) << name;
  EXPECT_EQ(t.num_bytes(), 6 * DTypeSize(dtype)) << name;
  EXPECT_THAT(file.header().metadata, ElementsAre(Pair("test", "a"))) << name;
  return file;
}

TEST(HfSamplesTest, EveryDTypeHoldsMinusThreeToTwo) {
  File u8 = OpenSample("B", DType::kU8);
  EXPECT_THAT(Load<uint8_t>(u8, Get(u8, "B")), ElementsAre(253, 254, 255, 0, 1, 2));
  File i8 = OpenSample("b", DType::kI8);
  EXPECT_THAT(Load<int8_t>(i8, Get(i8, "b")), ElementsAre(-3, -2, -1, 0, 1, 2));
  File u16 = OpenSample("H", DType::kU16);
  EXPECT_THAT(Load<uint16_t>(u16, Get(u16, "H")), ElementsAre(65533, 65534, 65535, 0, 1, 2));
  File i16 = OpenSample("h", DType::kI16);
  EXPECT_THAT(Load<int16_t>(i16, Get(i16, "h")), ElementsAre(-3, -2, -1, 0, 1, 2));
  File u32 = OpenSample("I", DType::kU32);
  EXPECT_THAT(Load<uint32_t>(u32, Get(u32, "I")),
              ElementsAre(4294967293u, 4294967294u, 4294967295u, 0u, 1u, 2u));
  File i32 = OpenSample("i", DType::kI32);
  EXPECT_THAT(Load<int32_t>(i32, Get(i32, "i")), ElementsAre(-3, -2, -1, 0, 1, 2));
  File f16 = OpenSample("e", DType::kF16);
  std::vector<float> halves;
  for (uint16_t bits : Load<uint16_t>(f16, Get(f16, "e"))) halves.push_back(F16ToF32(bits));
  EXPECT_THAT(halves, ElementsAre(-3.f, -2.f, -1.f, 0.f, 1.f, 2.f));
  File f32 = OpenSample("f", DType::kF32);
  EXPECT_THAT(Load<float>(f32, Get(f32, "f")), ElementsAre(-3.f, -2.f, -1.f, 0.f, 1.f, 2.f));
  File f64 = OpenSample("d", DType::kF64);
  EXPECT_THAT(Load<double>(f64, Get(f64, "d")), ElementsAre(-3., -2., -1., 0., 1., 2.));
}

TEST(HfSamplesTest, OverallHoldsAllNineTensorsBackToBack) {
  File file = OpenOrDie(FixturePath("safetensors/hf-samples/samples/overall.safetensors"));
  std::vector<std::string> names;
  for (const TensorInfo& t : file.tensors()) names.push_back(t.name);
  // Sorted by name: uppercase before lowercase.
  EXPECT_THAT(names, ElementsAre("B", "H", "I", "b", "d", "e", "f", "h", "i"));
  EXPECT_EQ(file.header().data_bytes, 168u);
  const TensorInfo& e = Get(file, "e");
  EXPECT_EQ(e.dtype, DType::kF16);
  EXPECT_EQ(e.begin, 96u);
  EXPECT_EQ(e.end, 108u);
  EXPECT_THAT(Load<double>(file, Get(file, "d")), ElementsAre(-3., -2., -1., 0., 1., 2.));
  EXPECT_THAT(Load<int32_t>(file, Get(file, "i")), ElementsAre(-3, -2, -1, 0, 1, 2));
  EXPECT_THAT(Load<uint16_t>(file, Get(file, "H")), ElementsAre(65533, 65534, 65535, 0, 1, 2));
  // Same bytes as the one-tensor file.
  File single = OpenOrDie(FixturePath("safetensors/hf-samples/samples/f.safetensors"));
  EXPECT_EQ(Bytes(file, Get(file, "f")), Bytes(single, single.tensors()[0]));
}

DType ExpectedJlDType(const std::string& name) {
  static const std::pair<std::string_view, DType> kPrefixes[] = {
      {"int64_", DType::kI64},          {"int32_", DType::kI32},
      {"int16_", DType::kI16},          {"int8_", DType::kI8},
      {"uint8_", DType::kU8},           {"float64_", DType::kF64},
      {"float32_", DType::kF32},        {"float16_", DType::kF16},
      {"bfloat16_", DType::kBF16},      {"float8_e4m3fn_", DType::kF8E4M3},
      {"float8_e5m2_", DType::kF8E5M2}, {"bool_", DType::kBool},
  };
  for (const auto& [prefix, dtype] : kPrefixes) {
    if (name.starts_with(prefix)) return dtype;
  }
  return DType::kInvalid;
}

Shape ExpectedJlShape(const std::string& name) {
  if (name.ends_with("_357")) return {3, 5, 7};
  if (name.ends_with("_35")) return {3, 5};
  if (name.ends_with("_3")) return {3};
  return {-1};
}

// Every tensor of the SafeTensors.jl corpus is named after its dtype and shape.
void ExpectJlNaming(const File& file) {
  for (const TensorInfo& t : file.tensors()) {
    EXPECT_EQ(t.dtype, ExpectedJlDType(t.name)) << file.path() << " " << t.name;
    EXPECT_EQ(t.shape, ExpectedJlShape(t.name)) << file.path() << " " << t.name;
  }
}

TEST(SafetensorsJlTest, NonShardedHasEveryDType) {
  File file = OpenOrDie(FixturePath("safetensors/safetensors-jl/non_sharded/model.safetensors"));
  EXPECT_EQ(file.tensors().size(), 36u);
  EXPECT_THAT(file.header().metadata, IsEmpty());
  EXPECT_EQ(file.header().header_bytes, 2528u);
  EXPECT_EQ(file.header().data_bytes, 4305u);
  ExpectJlNaming(file);

  EXPECT_THAT(Load<int64_t>(file, Get(file, "int64_3")), ElementsAre(64, 64, 30));
  EXPECT_THAT(LoadBf16(file, Get(file, "bfloat16_3")),
              ElementsAre(-0.82421875f, -0.373046875f, 0.84375f));
  const TensorInfo& e4m3 = Get(file, "float8_e4m3fn_3");
  EXPECT_EQ(e4m3.num_bytes(), 3u);
  EXPECT_EQ(Bytes(file, e4m3), "\xae\xa9\xb8");
  EXPECT_EQ(F8E4M3ToF32(file.Data(e4m3)[0]), -0.4375f);
  EXPECT_EQ(F8E4M3ToF32(file.Data(e4m3)[2]), -1.0f);
  const TensorInfo& e5m2 = Get(file, "float8_e5m2_3");
  EXPECT_EQ(Bytes(file, e5m2), "\xba\xb2\xba");
  EXPECT_EQ(F8E5M2ToF32(file.Data(e5m2)[1]), -0.1875f);
  const TensorInfo& b = Get(file, "bool_357");
  EXPECT_EQ(b.num_bytes(), 105u);
  EXPECT_EQ(b.end, 4305u);
  EXPECT_EQ(Bytes(file, b), std::string(105, '\0'));
}

TEST(SafetensorsJlTest, WithMetadataHasSameTensors) {
  File plain = OpenOrDie(FixturePath("safetensors/safetensors-jl/non_sharded/model.safetensors"));
  File file = OpenOrDie(
      FixturePath("safetensors/safetensors-jl/non_sharded/model.with_metadata.safetensors"));
  EXPECT_THAT(file.header().metadata,
              ElementsAre(Pair("test", "metadata"), Pair("version", "2.2")));
  ASSERT_EQ(file.tensors().size(), plain.tensors().size());
  for (const TensorInfo& t : plain.tensors()) {
    const TensorInfo& other = Get(file, t.name);
    EXPECT_EQ(other.dtype, t.dtype);
    EXPECT_EQ(other.shape, t.shape);
    EXPECT_EQ(Bytes(file, other), Bytes(plain, t)) << t.name;
  }
}

TEST(SafetensorsJlTest, NumpyFileHasNoBf16OrFp8) {
  File file =
      OpenOrDie(FixturePath("safetensors/safetensors-jl/non_sharded/model.numpy.safetensors"));
  EXPECT_EQ(file.tensors().size(), 27u);
  ExpectJlNaming(file);
  EXPECT_EQ(file.Find("bfloat16_3"), nullptr);
  EXPECT_EQ(file.Find("float8_e4m3fn_3"), nullptr);
  EXPECT_THAT(Load<int64_t>(file, Get(file, "int64_3")), ElementsAre(0, 1, 2));
  EXPECT_THAT(Load<uint8_t>(file, Get(file, "bool_3")), ElementsAre(0, 1, 0));
  EXPECT_EQ(Get(file, "bool_35").dtype, DType::kBool);
}

TEST(SafetensorsJlTest, TorchFiles) {
  File file = OpenOrDie(FixturePath("safetensors/safetensors-jl/torch.safetensors"));
  EXPECT_EQ(file.tensors().size(), 36u);
  ExpectJlNaming(file);
  EXPECT_THAT(Load<int64_t>(file, Get(file, "int64_3")), ElementsAre(91, 47, 39));
  EXPECT_EQ(Bytes(file, Get(file, "bfloat16_3")), "\x02\x3f\x25\x3f\x8f\x3f");
  EXPECT_THAT(Load<float>(file, Get(file, "float32_3")),
              ElementsAre(0.12125825881958008f, 0.05764610692858696f, 0.31537312269210815f));

  File with_metadata =
      OpenOrDie(FixturePath("safetensors/safetensors-jl/torch_metadata.safetensors"));
  EXPECT_THAT(with_metadata.header().metadata,
              ElementsAre(Pair("test", "metadata"), Pair("version", "2.2")));
  EXPECT_THAT(Load<int64_t>(with_metadata, Get(with_metadata, "int64_3")), ElementsAre(91, 47, 39));
}

TEST(SafetensorsJlTest, ShardedSetOpensThroughItsIndex) {
  const fs::path dir = FixturePath("safetensors/safetensors-jl/sharded");
  Result<std::unique_ptr<Checkpoint>> opened = Checkpoint::Open(dir);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  const Checkpoint& checkpoint = **opened;
  EXPECT_TRUE(checkpoint.has_index());
  EXPECT_EQ(checkpoint.tensors().size(), 36u);
  EXPECT_EQ(checkpoint.files().size(), 6u);
  EXPECT_EQ(checkpoint.files()[0]->path().filename(), "model-00001-of-00006.safetensors");
  EXPECT_EQ(checkpoint.total_bytes(), 4305u);  // = metadata.total_size
  EXPECT_THAT(checkpoint.warnings(), IsEmpty());
  for (size_t i = 1; i < checkpoint.tensors().size(); ++i) {
    EXPECT_LT(checkpoint.tensors()[i - 1].info->name, checkpoint.tensors()[i].info->name);
  }

  const CheckpointTensor* bf16 = checkpoint.Find("bfloat16_357");
  ASSERT_NE(bf16, nullptr);
  EXPECT_EQ(bf16->file->path().filename(), "model-00006-of-00006.safetensors");
  EXPECT_EQ(bf16->info->dtype, DType::kBF16);
  EXPECT_EQ(bf16->info->shape, (Shape{3, 5, 7}));
  EXPECT_EQ(checkpoint.Find("no_such_tensor"), nullptr);

  // The shards hold exactly the bytes of the single-file version.
  File plain = OpenOrDie(FixturePath("safetensors/safetensors-jl/non_sharded/model.safetensors"));
  for (const CheckpointTensor& t : checkpoint.tensors()) {
    const TensorInfo& expected = Get(plain, t.info->name);
    EXPECT_EQ(t.info->dtype, expected.dtype) << t.info->name;
    EXPECT_EQ(t.info->shape, expected.shape) << t.info->name;
    EXPECT_EQ(Bytes(*t.file, *t.info), Bytes(plain, expected)) << t.info->name;
  }
}

// Guards against a fixture being skipped: every .safetensors file we were
// given (except the deliberately broken one) must open.
TEST(FixtureCorpusTest, EveryFixtureParses) {
  int opened = 0;
  for (const auto& root : {FixturePath("safetensors"), FixturePath("hf")}) {
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
      if (entry.path().extension() != ".safetensors") continue;
      if (entry.path().parent_path().filename() == "malformed") continue;
      Result<File> file = File::Open(entry.path());
      EXPECT_TRUE(file.ok()) << file.status().message();
      if (file.ok()) {
        EXPECT_FALSE(file->tensors().empty()) << entry.path();
        for (const TensorInfo& t : file->tensors()) EXPECT_NE(t.dtype, DType::kInvalid);
      }
      ++opened;
    }
  }
  EXPECT_GE(opened, 27);
}

TEST(FixtureCorpusTest, AbuseAttemptIsRejected) {
  const fs::path path =
      FixturePath("safetensors/malformed/safetensors_abuse_attempt_1.safetensors");
  Result<File> file = File::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(file.status().message(),
            path.string() + ": header length 1000 exceeds the 80 bytes after the length prefix");
  EXPECT_EQ(ExitCodeFor(file.status()), 2);
}

TEST(MlxFixtureTest, TinyLlamaIsUnalignedAndOutOfOrder) {
  const fs::path dir = FixturePath("hf/mlxd-tiny_llama3");
  File file = OpenOrDie(dir / "model.safetensors");
  EXPECT_EQ(file.tensors().size(), 21u);
  EXPECT_EQ(file.header().header_bytes, 2122u);
  EXPECT_EQ(file.data_offset(), 2130u);
  EXPECT_NE(file.data_offset() % 8, 0u);           // the reason Data() may be unaligned
  EXPECT_THAT(file.header().metadata, IsEmpty());  // "__metadata__": null
  for (const TensorInfo& t : file.tensors()) EXPECT_EQ(t.dtype, DType::kBF16) << t.name;

  // Header keys are sorted, data is not: the first name is not the first data.
  EXPECT_EQ(file.tensors()[0].name, "lm_head.weight");
  EXPECT_EQ(file.tensors()[0].begin, 135424u);
  EXPECT_EQ(Get(file, "model.layers.1.post_attention_layernorm.weight").begin, 0u);

  EXPECT_EQ(Get(file, "lm_head.weight").shape, (Shape{256, 64}));
  EXPECT_EQ(Get(file, "model.embed_tokens.weight").shape, (Shape{256, 64}));
  EXPECT_EQ(Get(file, "model.layers.0.mlp.down_proj.weight").shape, (Shape{64, 128}));
  EXPECT_EQ(Get(file, "model.layers.1.mlp.gate_proj.weight").shape, (Shape{128, 64}));
  EXPECT_EQ(Get(file, "model.layers.0.self_attn.k_proj.weight").shape, (Shape{32, 64}));
  EXPECT_EQ(Get(file, "model.norm.weight").shape, Shape{64});

  EXPECT_THAT(LoadBf16(file, Get(file, "model.norm.weight")), ::testing::Each(1.0f));
  std::vector<float> embed = LoadBf16(file, Get(file, "model.embed_tokens.weight"));
  ASSERT_EQ(embed.size(), 256u * 64u);
  EXPECT_EQ(embed[0], 0.0269775390625f);
  EXPECT_EQ(embed[1], -0.00274658203125f);

  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_FALSE((*checkpoint)->has_index());
  EXPECT_EQ((*checkpoint)->tensors().size(), 21u);
  EXPECT_EQ((*checkpoint)->total_bytes(), 213632u);
}

TEST(TransformersFixtureTest, TinyGpt2) {
  const fs::path dir = FixturePath("hf/transformers-tiny_gpt2");
  File file = OpenOrDie(dir / "model.safetensors");
  EXPECT_THAT(file.header().metadata, ElementsAre(Pair("format", "pt")));
  EXPECT_EQ(file.tensors().size(), 16u);
  for (const TensorInfo& t : file.tensors()) EXPECT_EQ(t.dtype, DType::kF32) << t.name;
  EXPECT_EQ(Get(file, "wpe.weight").shape, (Shape{1024, 2}));
  EXPECT_EQ(Get(file, "wte.weight").shape, (Shape{21, 2}));
  EXPECT_EQ(Get(file, "h.0.attn.c_attn.weight").shape, (Shape{2, 6}));
  EXPECT_THAT(Load<float>(file, Get(file, "ln_f.weight")), ElementsAre(1.0f, 1.0f));
  EXPECT_THAT(Load<float>(file, Get(file, "h.0.attn.c_attn.bias")), ::testing::Each(0.0f));
  EXPECT_EQ(Load<float>(file, Get(file, "wte.weight"))[0], 0.03195413947105408f);

  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_EQ((*checkpoint)->tensors().size(), 16u);
  EXPECT_EQ((*checkpoint)->total_bytes(), 8672u);
  ASSERT_NE((*checkpoint)->Find("wpe.weight"), nullptr);
}

TEST(HfIndexFixtureTest, IndexWithoutWeightsNamesTheMissingShard) {
  const fs::path dir = FixturePath("hf-index/gpt-oss-20b");
  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(checkpoint.status().message(),
              AllOf(HasSubstr("model.safetensors.index.json"),
                    HasSubstr("'model-00000-of-00002.safetensors'"), HasSubstr("does not exist")));
}

// ---------------------------------------------------------------------------
// ParseHeader on hand-written headers.

constexpr std::string_view kLabel = "model-00002-of-00004.safetensors";

Status ParseError(std::string_view json, uint64_t data_bytes) {
  Result<Header> header = ParseHeader(json, data_bytes, kLabel);
  if (header.ok()) return Internal("parsed although it should not: " + std::string(json));
  return header.status();
}

MATCHER_P(IsInvalidArgument, message, "") {
  if (arg.code() != StatusCode::kInvalidArgument) {
    *result_listener << "code is " << StatusCodeName(arg.code()) << ": " << arg.message();
    return false;
  }
  if (arg.message() != std::string(kLabel) + ": " + message) {
    *result_listener << "message is \"" << arg.message() << "\"";
    return false;
  }
  return true;
}

TEST(ParseHeaderTest, AcceptsAValidHeader) {
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[3,5],"data_offsets":[8,38]},)"
      R"("b":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}   )";
  Result<Header> header = ParseHeader(json, 38, kLabel);
  ASSERT_TRUE(header.ok()) << header.status().message();
  EXPECT_EQ(header->header_bytes, json.size());
  EXPECT_EQ(header->data_bytes, 38u);
  EXPECT_THAT(header->metadata, ElementsAre(Pair("format", "pt")));
  ASSERT_EQ(header->tensors.size(), 2u);
  EXPECT_EQ(header->tensors[0].name, "b");  // sorted by name
  EXPECT_EQ(header->tensors[1].name, "w");
  EXPECT_EQ(header->tensors[1].dtype, DType::kBF16);
  EXPECT_EQ(header->tensors[1].shape, (Shape{3, 5}));
  EXPECT_EQ(header->tensors[1].begin, 8u);
  EXPECT_EQ(header->tensors[1].end, 38u);
}

TEST(ParseHeaderTest, AcceptsEveryDType) {
  const std::pair<const char*, DType> kAll[] = {
      {"BOOL", DType::kBool},      {"U8", DType::kU8},          {"I8", DType::kI8},
      {"U16", DType::kU16},        {"I16", DType::kI16},        {"U32", DType::kU32},
      {"I32", DType::kI32},        {"U64", DType::kU64},        {"I64", DType::kI64},
      {"F16", DType::kF16},        {"BF16", DType::kBF16},      {"F32", DType::kF32},
      {"F64", DType::kF64},        {"F8_E4M3", DType::kF8E4M3}, {"F8_E5M2", DType::kF8E5M2},
      {"F8_E8M0", DType::kF8E8M0},
  };
  for (const auto& [name, dtype] : kAll) {
    const size_t bytes = 2 * DTypeSize(dtype);
    std::string json = std::string(R"({"t":{"dtype":")") + name +
                       R"(","shape":[2],"data_offsets":[0,)" + std::to_string(bytes) + "]}}";
    Result<Header> header = ParseHeader(json, bytes, kLabel);
    ASSERT_TRUE(header.ok()) << name << ": " << header.status().message();
    EXPECT_EQ(header->tensors[0].dtype, dtype) << name;
  }
}

TEST(ParseHeaderTest, AcceptsEmptyTensorsScalarsAndEmptyFiles) {
  // Several empty tensors may share an offset, also with the next tensor's start.
  Result<Header> header = ParseHeader(R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
                                      R"("e1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                                      R"("e2":{"dtype":"BF16","shape":[3,0],"data_offsets":[4,4]},)"
                                      R"("e0":{"dtype":"I8","shape":[0,7],"data_offsets":[0,0]},)"
                                      R"("x":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                                      6, kLabel);
  ASSERT_TRUE(header.ok()) << header.status().message();
  EXPECT_EQ(header->tensors.size(), 5u);
  EXPECT_EQ(header->tensors[0].name, "e0");
  EXPECT_EQ(header->tensors[3].name, "s");
  EXPECT_EQ(header->tensors[3].shape, Shape{});

  Result<Header> empty = ParseHeader("{}", 0, kLabel);
  ASSERT_TRUE(empty.ok()) << empty.status().message();
  EXPECT_THAT(empty->tensors, IsEmpty());

  Result<Header> only_empty_tensors =
      ParseHeader(R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})", 0, kLabel);
  EXPECT_TRUE(only_empty_tensors.ok()) << only_empty_tensors.status().message();
}

TEST(ParseHeaderTest, IgnoresUnknownFieldsAndNullMetadata) {
  Result<Header> header = ParseHeader(
      R"({"__metadata__":null,"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}})", 1,
      kLabel);
  ASSERT_TRUE(header.ok()) << header.status().message();
  EXPECT_THAT(header->metadata, IsEmpty());
}

TEST(ParseHeaderTest, RejectsNonObjects) {
  EXPECT_THAT(ParseError("[1,2]", 0),
              IsInvalidArgument("header is not a JSON object starting with '{'"));
  EXPECT_THAT(ParseError(" {}", 0),
              IsInvalidArgument("header is not a JSON object starting with '{'"));
  EXPECT_THAT(ParseError("", 0),
              IsInvalidArgument("header is not a JSON object starting with '{'"));
  Status bad = ParseError("{\"a\":1} x", 0);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr(std::string(kLabel) + ": invalid JSON: "));
  EXPECT_THAT(ParseError("{\"a\":", 0).message(), HasSubstr("invalid JSON"));
  EXPECT_THAT(ParseError("{\"a\":" + std::string(1000, '[') + std::string(1000, ']') + "}", 0),
              IsInvalidArgument("invalid JSON: nested deeper than 32 levels"));
  // Brackets inside strings do not count.
  Result<Header> brackets =
      ParseHeader(R"({"__metadata__":{"k":")" + std::string(100, '[') + R"(\""}})", 0, kLabel);
  EXPECT_TRUE(brackets.ok()) << brackets.status().message();
  // Invalid UTF-8 in a key.
  EXPECT_THAT(ParseError("{\"\xff\":1}", 0).message(), HasSubstr("invalid JSON"));
  // NUL padding is not the spaces the format allows.
  EXPECT_THAT(ParseError(std::string_view("{}\0\0", 4), 0),
              IsInvalidArgument("invalid JSON: NUL byte at offset 2"));
  // nlohmann alone would stop at the NUL and accept the rest unseen.
  EXPECT_THAT(ParseError(std::string_view("{}\0{\"x\":1}", 10), 0),
              IsInvalidArgument("invalid JSON: NUL byte at offset 2"));
}

TEST(ParseHeaderTest, RejectsDuplicateKeys) {
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                         R"("t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                         2),
              IsInvalidArgument("duplicate key 't' in the header"));
  EXPECT_THAT(
      ParseError(R"({"t":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", 1),
      IsInvalidArgument("duplicate key 'dtype' in entry 't'"));
  EXPECT_THAT(ParseError(R"({"__metadata__":{"a":"1","a":"2"}})", 0),
              IsInvalidArgument("duplicate key 'a' in entry '__metadata__'"));
  EXPECT_THAT(ParseError(R"({"__metadata__":{},"__metadata__":{}})", 0),
              IsInvalidArgument("duplicate key '__metadata__' in the header"));
}

TEST(ParseHeaderTest, RejectsBadMetadata) {
  EXPECT_THAT(ParseError(R"({"__metadata__":{"format":"pt","step":3}})", 0),
              IsInvalidArgument("__metadata__ must map strings to strings, but 'step' is 3"));
  EXPECT_THAT(ParseError(R"({"__metadata__":["pt"]})", 0),
              IsInvalidArgument("__metadata__ must map strings to strings, found [\"pt\"]"));
}

TEST(ParseHeaderTest, RejectsMalformedEntries) {
  EXPECT_THAT(
      ParseError(R"({"t":"U8"})", 0),
      IsInvalidArgument(
          "tensor 't': expected an object with dtype, shape and data_offsets, found \"U8\""));
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"U8","data_offsets":[0,1]}})", 1),
              IsInvalidArgument("tensor 't': missing 'shape'"));
  EXPECT_THAT(ParseError(R"({"t":{"dtype":8,"shape":[1],"data_offsets":[0,1]}})", 1),
              IsInvalidArgument("tensor 't': dtype must be a string, found 8"));
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"U8","shape":3,"data_offsets":[0,3]}})", 3),
              IsInvalidArgument("tensor 't': shape must be an array of integers, found 3"));
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", 1),
              IsInvalidArgument("tensor 't': shape must be an array of integers, found [1.5]"));
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", 1),
              IsInvalidArgument("tensor 't': data_offsets must be [begin, end] with non-negative "
                                "integers, found [0,1,2]"));
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 1),
              IsInvalidArgument("tensor 't': data_offsets must be [begin, end] with non-negative "
                                "integers, found [-1,0]"));
}

TEST(ParseHeaderTest, RejectsUnknownDTypes) {
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}})", 1),
              IsInvalidArgument("tensor 't': dtype 'F4' is not supported"));
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"C64","shape":[2],"data_offsets":[0,16]}})", 16),
              IsInvalidArgument("tensor 't': dtype 'C64' is not supported"));
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"bf16","shape":[2],"data_offsets":[0,4]}})", 4),
              IsInvalidArgument("tensor 't': unknown dtype 'bf16'"));
}

TEST(ParseHeaderTest, RejectsBadShapes) {
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"U8","shape":[4,-1],"data_offsets":[0,0]}})", 0),
              IsInvalidArgument("tensor 't': negative dimension in shape [4, -1]"));
  // 2^40 * 2^40 elements overflow the element count.
  EXPECT_THAT(
      ParseError(R"({"t":{"dtype":"U8","shape":[1099511627776,1099511627776],)"
                 R"("data_offsets":[0,0]}})",
                 0),
      IsInvalidArgument("tensor 't': shape [1099511627776, 1099511627776] has too many elements"));
  // Fits as elements, overflows as bytes.
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"F64","shape":[2305843009213693952],)"
                         R"("data_offsets":[0,0]}})",
                         0),
              IsInvalidArgument("tensor 't': shape [2305843009213693952] is too large"));
  EXPECT_THAT(ParseError(R"({"t":{"dtype":"U8","shape":[18446744073709551615],)"
                         R"("data_offsets":[0,0]}})",
                         0),
              IsInvalidArgument("tensor 't': shape [18446744073709551615] is too large"));
}

TEST(ParseHeaderTest, RejectsBadOffsets) {
  EXPECT_THAT(
      ParseError(R"({"model.norm.weight":{"dtype":"BF16","shape":[50],"data_offsets":[0,100]}})",
                 64),
      IsInvalidArgument(
          "tensor 'model.norm.weight': data_offsets [0, 100) exceed the 64-byte data section"));
  EXPECT_THAT(ParseError(R"({"x":{"dtype":"BF16","shape":[3,5],"data_offsets":[0,10]}})", 10),
              IsInvalidArgument(
                  "tensor 'x': data_offsets span 10 bytes but dtype BF16 shape [3, 5] needs 30"));
  EXPECT_THAT(ParseError(R"({"x":{"dtype":"U8","shape":[0],"data_offsets":[5,2]}})", 10),
              IsInvalidArgument("tensor 'x': data_offsets [5, 2) end before they begin"));
  // An end past 2^64 - 1 is not an offset at all.
  EXPECT_THAT(
      ParseError(R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1e30]}})", 10).message(),
      HasSubstr("tensor 'x': data_offsets must be [begin, end]"));
}

TEST(ParseHeaderTest, RejectsHolesOverlapsAndTrailingBytes) {
  // Hole between two tensors.
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}})",
                         10),
              IsInvalidArgument(
                  "bytes [4, 6) of the data section belong to no tensor (hole before tensor 'b')"));
  // Hole at the start.
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6),
              IsInvalidArgument(
                  "bytes [0, 2) of the data section belong to no tensor (hole before tensor 'a')"));
  // Overlap.
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                         6),
              IsInvalidArgument("tensor 'b': data_offsets [2, 6) overlap tensor 'a' at [0, 4)"));
  // Two names for the same bytes.
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
                         4),
              IsInvalidArgument("tensor 'b': data_offsets [0, 4) overlap tensor 'a' at [0, 4)"));
  // An empty tensor inside another tensor's bytes (the reference rejects it too).
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                         R"("e":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}})",
                         4),
              IsInvalidArgument("tensor 'e': data_offsets [2, 2) overlap tensor 'a' at [0, 4)"));
  // Trailing bytes after the last tensor.
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 7),
              IsInvalidArgument(
                  "the tensors end at byte 4 but the data section has 7 bytes (3 trailing bytes)"));
  EXPECT_THAT(ParseError(R"({"__metadata__":{"format":"pt"}})", 16),
              IsInvalidArgument("the header lists no tensors but the data section has 16 bytes"));
}

// ---------------------------------------------------------------------------
// File::Open on hand-built files.

TEST(FileTest, OpensAHandBuiltFileWithUnalignedData) {
  ScratchDir dir;
  // A 3-byte header: data starts at byte 11.
  std::string header = R"({"v":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  float values[2] = {1.5f, -2.25f};
  WriteBytes(dir / "x.safetensors",
             SafetensorsBytes(header, std::string_view(reinterpret_cast<char*>(values), 8)));
  File file = OpenOrDie(dir / "x.safetensors");
  EXPECT_EQ(file.data_offset(), 8 + header.size());
  EXPECT_NE(file.data_offset() % 4, 0u);
  EXPECT_EQ(file.path(), dir / "x.safetensors");
  const TensorInfo& v = Get(file, "v");
  file.Prefetch(v);
  EXPECT_THAT(Load<float>(file, v), ElementsAre(1.5f, -2.25f));
}

TEST(FileTest, RejectsShortFilesAndBadLengths) {
  ScratchDir dir;
  WriteBytes(dir / "short.safetensors", std::string_view("\x02\0\0\0\0", 5));
  Result<File> short_file = File::Open(dir / "short.safetensors");
  ASSERT_FALSE(short_file.ok());
  EXPECT_EQ(short_file.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(short_file.status().message(),
            (dir / "short.safetensors").string() +
                ": file is 5 bytes, too short for the 8-byte header length of a safetensors file");

  WriteBytes(dir / "empty.safetensors", "");
  EXPECT_THAT(File::Open(dir / "empty.safetensors").status().message(),
              HasSubstr("file is 0 bytes"));

  WriteBytes(dir / "past.safetensors", testing::LittleEndian64(20) + "{}");
  Result<File> past = File::Open(dir / "past.safetensors");
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(past.status().message(), (dir / "past.safetensors").string() +
                                         ": header length 20 exceeds the 2 bytes after the "
                                         "length prefix");

  WriteBytes(dir / "huge.safetensors", testing::LittleEndian64(uint64_t{1} << 63) + "{}");
  Result<File> huge = File::Open(dir / "huge.safetensors");
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().message(),
            (dir / "huge.safetensors").string() +
                ": header length 9223372036854775808 exceeds the limit of 100000000 bytes");

  // The header check runs on the file too, naming it.
  WriteBytes(dir / "trailing.safetensors",
             SafetensorsBytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "xy"));
  Result<File> trailing = File::Open(dir / "trailing.safetensors");
  ASSERT_FALSE(trailing.ok());
  EXPECT_EQ(trailing.status().message(),
            (dir / "trailing.safetensors").string() +
                ": the tensors end at byte 1 but the data section has 2 bytes (1 trailing bytes)");
}

TEST(FileTest, MissingFileIsNotFound) {
  ScratchDir dir;
  Result<File> file = File::Open(dir / "nope.safetensors");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr("nope.safetensors"));
}

TEST(FileTest, ReadRangeMapsOnlyTheSliceAndDataMapsTheWholeFileOnFirstUse) {
  ScratchDir dir;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  // An odd-length header, then a 16-page tensor and a small one.
  const size_t big = 16 * page;
  std::string data(big + 6, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 37 + 5) % 256);
  std::string header = R"({"big":{"dtype":"U8","shape":[)" + std::to_string(big) +
                       R"(],"data_offsets":[0,)" + std::to_string(big) +
                       R"(]},"small":{"dtype":"U16","shape":[3],"data_offsets":[)" +
                       std::to_string(big) + "," + std::to_string(big + 6) + "]}}";
  if (header.size() % 2 == 0) header += ' ';  // trailing spaces are allowed
  const fs::path path = dir / "x.safetensors";
  WriteBytes(path, SafetensorsBytes(header, data));
  File file = OpenOrDie(path);
  ASSERT_NE(file.data_offset() % 8, 0u);
  EXPECT_EQ(MappedBytesOf(path), 0u);  // the header is read, not mapped

  const TensorInfo& v = Get(file, "big");
  {
    // Two pages' worth from the middle of the tensor: at most three pages
    // of address space, however large the file.
    Result<TensorBytes> slice = file.ReadRange(v, 5 * page + 3, 2 * page);
    ASSERT_TRUE(slice.ok()) << slice.status().message();
    ASSERT_EQ(slice->size(), 2 * page);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(slice->data()), slice->size()),
              data.substr(5 * page + 3, 2 * page));
    EXPECT_LE(MappedBytesOf(path), 3 * page);
    EXPECT_GT(MappedBytesOf(path), 0u);
    // Views are movable and hold their own mapping.
    TensorBytes moved = std::move(*slice);
    EXPECT_EQ(moved.data()[0], static_cast<uint8_t>(data[5 * page + 3]));
  }
  EXPECT_EQ(MappedBytesOf(path), 0u);  // gone with the view

  // The whole second tensor, an empty range, and a view that outlives its File.
  const TensorInfo& s = Get(file, "small");
  Result<TensorBytes> small = file.ReadRange(s, 0, 6);
  ASSERT_TRUE(small.ok());
  Result<TensorBytes> none = file.ReadRange(s, 6, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_NE(none->data(), nullptr);
  EXPECT_EQ(none->size(), 0u);

  // Release before any Data() touches nothing; Data() then maps the file once.
  file.Release(v);
  EXPECT_EQ(Bytes(file, s), data.substr(big, 6));
  const uint64_t whole = (file.data_offset() + data.size() + page - 1) / page * page;
  EXPECT_EQ(MappedBytesOf(path), whole + page);  // + the view of "small"
  EXPECT_EQ(Bytes(file, v), data.substr(0, big));
  file.Release(v);
  EXPECT_EQ(Bytes(file, v), data.substr(0, big));  // still valid after Release
  EXPECT_EQ(MappedBytesOf(path), whole + page);

  { File gone = std::move(file); }
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(small->data()), 6), data.substr(big, 6));
}

TEST(FileTest, ReadRangeOutsideTheTensorIsInternalNamingBothSides) {
  ScratchDir dir;
  WriteBytes(dir / "x.safetensors",
             SafetensorsBytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                              R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                              "aaaabb"));
  File file = OpenOrDie(dir / "x.safetensors");
  Result<TensorBytes> past = file.ReadRange(Get(file, "a"), 2, 3);
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.status().code(), StatusCode::kInternal);
  EXPECT_EQ(past.status().message(), (dir / "x.safetensors").string() +
                                         ": tensor 'a': bytes [2, 5) lie outside its 4 bytes");
  EXPECT_FALSE(file.ReadRange(Get(file, "a"), 5, 0).ok());
  EXPECT_FALSE(file.ReadRange(Get(file, "a"), 1, ~uint64_t{0}).ok());
}

// ---------------------------------------------------------------------------
// Checkpoint::Open on hand-built folders.

std::string OneTensorFile(const std::string& name, std::string_view byte = "\x07") {
  return SafetensorsBytes(R"({"__metadata__":{"format":"pt"},")" + name +
                              R"(":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                          byte);
}

std::string TwoTensorFile(const std::string& a, const std::string& b) {
  return SafetensorsBytes(R"({")" + a + R"(":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},")" +
                              b + R"(":{"dtype":"U16","shape":[1],"data_offsets":[1,3]}})",
                          "\x01\x02\x03");
}

Status OpenError(const fs::path& path) {
  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(path);
  if (checkpoint.ok()) return Internal("opened although it should not: " + path.string());
  return checkpoint.status();
}

TEST(CheckpointTest, OpensASingleFilePath) {
  ScratchDir dir;
  WriteBytes(dir / "weights.safetensors", TwoTensorFile("b", "a"));
  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir / "weights.safetensors");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_FALSE((*checkpoint)->has_index());
  ASSERT_EQ((*checkpoint)->tensors().size(), 2u);
  EXPECT_EQ((*checkpoint)->tensors()[0].info->name, "a");
  EXPECT_EQ((*checkpoint)->tensors()[0].info->dtype, DType::kU16);
  EXPECT_EQ((*checkpoint)->total_bytes(), 3u);
  EXPECT_EQ((*checkpoint)->path(), dir / "weights.safetensors");
}

TEST(CheckpointTest, PrefersModelSafetensorsElseAllFilesSorted) {
  ScratchDir dir;
  WriteBytes(dir / "b.safetensors", OneTensorFile("from_b"));
  WriteBytes(dir / "a.safetensors", OneTensorFile("from_a"));
  WriteBytes(dir / "._a.safetensors", "AppleDouble junk");
  WriteBytes(dir / "notes.txt", "not a checkpoint");
  {
    Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir.path());
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
    ASSERT_EQ((*checkpoint)->files().size(), 2u);
    EXPECT_EQ((*checkpoint)->files()[0]->path().filename(), "a.safetensors");
    EXPECT_EQ((*checkpoint)->files()[1]->path().filename(), "b.safetensors");
    ASSERT_EQ((*checkpoint)->tensors().size(), 2u);
    EXPECT_EQ((*checkpoint)->Find("from_b")->file, (*checkpoint)->files()[1].get());
  }
  WriteBytes(dir / "model.safetensors", OneTensorFile("main"));
  {
    Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir.path());
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
    ASSERT_EQ((*checkpoint)->tensors().size(), 1u);
    EXPECT_EQ((*checkpoint)->tensors()[0].info->name, "main");
  }
}

TEST(CheckpointTest, RejectsANameInTwoFilesWithoutIndex) {
  ScratchDir dir;
  WriteBytes(dir / "part1.safetensors", TwoTensorFile("x", "shared"));
  WriteBytes(dir / "part2.safetensors", OneTensorFile("shared"));
  Status status = OpenError(dir.path());
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "tensor 'shared' is in both " + (dir / "part1.safetensors").string() +
                                  " and " + (dir / "part2.safetensors").string());
}

TEST(CheckpointTest, EmptyOrMissingFolderIsNotFound) {
  ScratchDir dir;
  WriteBytes(dir / "config.json", "{}");
  Status empty = OpenError(dir.path());
  EXPECT_EQ(empty.code(), StatusCode::kNotFound);
  EXPECT_EQ(empty.message(), "no .safetensors files in " + dir.path().string());

  Status missing = OpenError(dir / "nowhere");
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.message(), HasSubstr("nowhere"));
}

TEST(CheckpointTest, CorruptFileInFolderNamesTheFile) {
  ScratchDir dir;
  WriteBytes(dir / "model.safetensors", SafetensorsBytes(R"({"a":{"dtype":"F4"}})", ""));
  Status status = OpenError(dir.path());
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            (dir / "model.safetensors").string() + ": tensor 'a': missing 'shape'");
}

class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteBytes(dir_ / "model-00001-of-00002.safetensors", TwoTensorFile("a", "b"));
    WriteBytes(dir_ / "model-00002-of-00002.safetensors", OneTensorFile("c"));
  }
  void WriteIndex(const std::string& weight_map,
                  const std::string& metadata = R"("metadata":{"total_size":4},)") {
    WriteBytes(dir_ / "model.safetensors.index.json",
               "{" + metadata + R"("weight_map":)" + weight_map + "}");
  }
  std::string IndexPath() const { return (dir_ / "model.safetensors.index.json").string(); }

  ScratchDir dir_;
};

TEST_F(IndexTest, OpensTheListedTensors) {
  WriteIndex(R"({"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",)"
             R"("c":"model-00002-of-00002.safetensors"})");
  // A stale file the index does not name is not opened.
  WriteBytes(dir_ / "model.safetensors", "garbage");
  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_TRUE((*checkpoint)->has_index());
  EXPECT_EQ((*checkpoint)->files().size(), 2u);
  ASSERT_EQ((*checkpoint)->tensors().size(), 3u);
  EXPECT_EQ((*checkpoint)->total_bytes(), 4u);
  EXPECT_THAT((*checkpoint)->warnings(), IsEmpty());
  const CheckpointTensor* c = (*checkpoint)->Find("c");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->file->path().filename(), "model-00002-of-00002.safetensors");
  EXPECT_EQ(*c->file->Data(*c->info), 7);
}

TEST_F(IndexTest, WarnsAboutUnlistedTensorsAndTotalSize) {
  WriteIndex(R"({"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"})",
             R"("metadata":{"total_size":5},)");
  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  ASSERT_EQ((*checkpoint)->tensors().size(), 2u);
  EXPECT_EQ((*checkpoint)->Find("b"), nullptr);
  EXPECT_EQ((*checkpoint)->total_bytes(), 2u);
  EXPECT_THAT((*checkpoint)->warnings(),
              UnorderedElementsAre(
                  (dir_ / "model-00001-of-00002.safetensors").string() +
                      ": tensor 'b' is not listed in " + IndexPath() + ", ignored",
                  IndexPath() + ": metadata.total_size 5 differs from the 2 bytes of the listed "
                                "tensors"));
}

TEST_F(IndexTest, WorksWithoutMetadata) {
  WriteIndex(R"({"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",)"
             R"("c":"model-00002-of-00002.safetensors"})",
             "");
  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_THAT((*checkpoint)->warnings(), IsEmpty());
}

TEST_F(IndexTest, RejectsShardNamesOutsideTheFolder) {
  for (const std::string shard :
       {"../x.safetensors", "sub/x.safetensors", "/etc/passwd", "..", "", "a\\\\b.safetensors"}) {
    SCOPED_TRACE(shard);
    WriteIndex(R"({"a":"model-00001-of-00002.safetensors","evil":")" + shard + R"("})");
    Status status = OpenError(dir_.path());
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
    std::string unescaped = shard == "a\\\\b.safetensors" ? "a\\b.safetensors" : shard;
    EXPECT_EQ(status.message(), IndexPath() + ": weight_map entry 'evil' names shard '" +
                                    unescaped + "', which is not a plain file name in the folder");
  }
}

TEST_F(IndexTest, RejectsAListedTensorMissingFromItsShard) {
  WriteIndex(R"({"a":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"})");
  Status status = OpenError(dir_.path());
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), IndexPath() +
                                  ": tensor 'c' is listed in shard "
                                  "'model-00001-of-00002.safetensors', but " +
                                  (dir_ / "model-00001-of-00002.safetensors").string() +
                                  " has no such tensor");
}

TEST_F(IndexTest, RejectsAMissingShardFile) {
  WriteIndex(R"({"a":"model-00001-of-00002.safetensors","z":"model-00003-of-00002.safetensors"})");
  Status status = OpenError(dir_.path());
  EXPECT_EQ(status.code(), StatusCode::kNotFound);
  EXPECT_EQ(status.message(), IndexPath() +
                                  " lists shard 'model-00003-of-00002.safetensors' (for tensor "
                                  "'z') but " +
                                  (dir_ / "model-00003-of-00002.safetensors").string() +
                                  " does not exist");
}

TEST_F(IndexTest, RejectsMalformedIndexes) {
  WriteIndex(R"(["a"])");
  EXPECT_EQ(OpenError(dir_.path()).message(),
            IndexPath() + ": weight_map must map tensor names to shard file names, found [\"a\"]");
  WriteIndex(R"({"a":3})");
  EXPECT_EQ(OpenError(dir_.path()).message(),
            IndexPath() + ": weight_map entry 'a' must be a shard file name, found 3");
  WriteIndex(R"({"a":"model-00001-of-00002.safetensors","a":"model-00002-of-00002.safetensors"})");
  EXPECT_EQ(OpenError(dir_.path()).message(),
            IndexPath() + ": duplicate key 'a' in entry 'weight_map'");
  WriteBytes(dir_ / "model.safetensors.index.json", R"({"metadata":{}})");
  EXPECT_EQ(OpenError(dir_.path()).message(), IndexPath() + ": missing 'weight_map'");
  WriteBytes(dir_ / "model.safetensors.index.json", R"({"weight_map":)");
  Status truncated = OpenError(dir_.path());
  EXPECT_EQ(truncated.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(truncated.message(), HasSubstr(IndexPath() + ": invalid JSON: "));
}

TEST_F(IndexTest, IgnoresANonNumericTotalSizeWithAWarning) {
  WriteIndex(R"({"a":"model-00001-of-00002.safetensors"})", R"("metadata":{"total_size":"1"},)");
  Result<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_THAT((*checkpoint)->warnings(),
              ::testing::Contains(IndexPath() +
                                  ": metadata.total_size \"1\" is not a byte count, ignored"));
}

}  // namespace
}  // namespace ckptbridge::safetensors
