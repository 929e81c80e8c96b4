#include "host/formats/orbax/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "host/base/box.h"
#include "host/base/numeric.h"
#include "tests/formats/orbax/test_util.h"

namespace ckptbridge::orbax {
namespace {

// The zarr.json CheckpointWriter writes: TensorStore's zarr v3 metadata with
// ckptbridge's default zstd level (kDefaultZstdLevel, where TensorStore says 3).
std::string WrittenZarr3Json(DType dtype, Shape shape, Shape chunk_shape) {
  ArrayMetadata m = ArrayMetadata::ForWrite(dtype, std::move(shape), std::move(chunk_shape));
  m.zstd_level = kDefaultZstdLevel;
  return m.ToZarr3Json();
}

using ::ckptbridge::orbax::testing::AsBytes;
using ::ckptbridge::orbax::testing::CompatFixture;
using ::ckptbridge::orbax::testing::FromBytes;
using ::ckptbridge::orbax::testing::OrbaxFixture;
using ::ckptbridge::orbax::testing::ReadBytes;
using ::ckptbridge::orbax::testing::ScratchDir;
using ::ckptbridge::orbax::testing::ValueOrFail;
using ::ckptbridge::orbax::testing::WriteBytes;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::json;
namespace fs = std::filesystem;

std::vector<std::string> Names(const ItemReader& item) {
  std::vector<std::string> names;
  for (const auto& array : item.arrays()) names.push_back(array.leaf->name());
  return names;
}

std::unique_ptr<ItemReader> OpenOrFail(const fs::path& path) {
  Result<std::unique_ptr<ItemReader>> item = ItemReader::Open(path);
  EXPECT_TRUE(item.ok()) << path << ": " << item.status().message();
  return item.ok() ? std::move(item).value() : nullptr;
}

template <typename T>
std::vector<T> ReadAll(const ItemReader& item, std::string_view name) {
  const ItemReader::ArrayEntry* entry = item.Find(name);
  EXPECT_NE(entry, nullptr) << name;
  if (!entry) return {};
  const Shape& shape = entry->metadata.shape;
  std::vector<T> out(static_cast<size_t>(NumElementsUnchecked(shape)));
  Status read =
      item.Reader(*entry)->ReadRegion(std::vector<int64_t>(shape.size(), 0), shape, out.data());
  EXPECT_TRUE(read.ok()) << read.message();
  return out;
}

// ---------------------------------------------------------------------------
// _METADATA

TEST(TreeMetadataTest, ParsesLegacyFixture) {
  const fs::path path = OrbaxFixture("legacy-aggregate_some.checkpoint/_METADATA");
  TreeMetadata tree = ValueOrFail(TreeMetadata::Parse(ReadBytes(path), path.string()));
  ASSERT_EQ(tree.leaves.size(), 4u);
  EXPECT_EQ(tree.leaves[0].name(), "a");
  EXPECT_EQ(tree.leaves[1].name(), "b");
  EXPECT_EQ(tree.leaves[2].name(), "c.a");
  EXPECT_EQ(tree.leaves[3].name(), "c.e");
  EXPECT_THAT(tree.leaves[2].keys, ElementsAre("c", "a"));
  EXPECT_THAT(tree.leaves[2].key_types, ElementsAre(kKeyTypeDict, kKeyTypeDict));
  EXPECT_EQ(tree.leaves[0].value_type, "np.ndarray");
  EXPECT_TRUE(tree.leaves[0].is_array());
  EXPECT_TRUE(tree.leaves[2].skip_deserialize);
  EXPECT_FALSE(tree.leaves[2].is_array());
  EXPECT_FALSE(tree.leaves[0].write_shape.has_value());
  EXPECT_FALSE(tree.use_ocdbt.has_value());
  EXPECT_FALSE(tree.use_zarr3);
  EXPECT_FALSE(tree.store_array_data_equal_to_fill_value);
  EXPECT_TRUE(tree.custom_metadata.is_null());
}

TEST(TreeMetadataTest, ParsesCurrentOrbaxFixture) {
  const fs::path path = CompatFixture("v1_checkpoints", "composite_checkpoint") / "state/_METADATA";
  TreeMetadata tree = ValueOrFail(TreeMetadata::Parse(ReadBytes(path), path.string()));
  ASSERT_EQ(tree.leaves.size(), 2u);
  EXPECT_EQ(tree.leaves[1].name(), "b.c");
  EXPECT_EQ(tree.leaves[1].value_type, "jax.Array");
  EXPECT_EQ(tree.leaves[1].write_shape, Shape{3});
  EXPECT_EQ(tree.use_ocdbt, true);
  EXPECT_TRUE(tree.use_zarr3);
  EXPECT_TRUE(tree.store_array_data_equal_to_fill_value);
}

TEST(TreeMetadataTest, ToJsonWritesOrbaxStyle) {
  TreeMetadata tree;
  LeafMetadata step;
  step.keys = {"step"};
  step.key_types = {kKeyTypeDict};
  step.value_type = "scalar";
  LeafMetadata kernel;
  kernel.keys = {"params", "layers", "0", "it's"};
  kernel.key_types = {kKeyTypeDict, kKeyTypeDict, kKeyTypeSequence, kKeyTypeDict};
  kernel.value_type = "jax.Array";
  kernel.write_shape = Shape{4, 2};
  tree.leaves = {step, kernel};
  tree.use_zarr3 = true;
  tree.custom_metadata = {{"scan_layers", true}};
  EXPECT_EQ(tree.ToJson(),
            "{\"tree_metadata\": {\"('params', 'layers', '0', \\\"it's\\\")\": "
            "{\"key_metadata\": [{\"key\": \"params\", \"key_type\": 2}, {\"key\": \"layers\", "
            "\"key_type\": 2}, {\"key\": \"0\", \"key_type\": 1}, {\"key\": \"it's\", "
            "\"key_type\": 2}], \"value_metadata\": {\"value_type\": \"jax.Array\", "
            "\"skip_deserialize\": false, \"write_shape\": [4, 2]}}, \"('step',)\": "
            "{\"key_metadata\": [{\"key\": \"step\", \"key_type\": 2}], \"value_metadata\": "
            "{\"value_type\": \"scalar\", \"skip_deserialize\": false}}}, \"use_zarr3\": true, "
            "\"store_array_data_equal_to_fill_value\": false, \"custom_metadata\": "
            "{\"scan_layers\": true}}");
  // Python's repr() switches to double quotes only for the key holding an
  // apostrophe.
}

TEST(TreeMetadataTest, ToJsonRoundTripsThroughParse) {
  TreeMetadata tree;
  for (const auto& keys : std::vector<std::vector<std::string>>{
           {"params", "params", "decoder", "x"}, {"opt_state"}, {"step"}, {"é", "\"q\""}}) {
    LeafMetadata leaf;
    leaf.keys = keys;
    leaf.key_types.assign(keys.size(), kKeyTypeDict);
    leaf.value_type = keys[0] == "opt_state" ? "Dict" : "np.ndarray";
    leaf.skip_deserialize = keys[0] == "opt_state";
    tree.leaves.push_back(leaf);
  }
  tree.use_ocdbt = false;
  tree.store_array_data_equal_to_fill_value = true;
  tree.custom_metadata = {{"b", {1, 2}}, {"a", "ünï"}};
  const std::string text = tree.ToJson();
  EXPECT_THAT(text, HasSubstr("\"('params', 'params', 'decoder', 'x')\": "));
  EXPECT_THAT(text, HasSubstr("\"('opt_state',)\": "));
  EXPECT_THAT(text, HasSubstr("\"use_ocdbt\": false"));
  // Python's json.dumps escapes non-ASCII.
  EXPECT_THAT(text, HasSubstr("\"a\": \"\\u00fcn\\u00ef\""));
  TreeMetadata parsed = ValueOrFail(TreeMetadata::Parse(text, "_METADATA"));
  ASSERT_EQ(parsed.leaves.size(), 4u);
  EXPECT_EQ(parsed.leaves[0].name(), "opt_state");
  EXPECT_EQ(parsed.leaves[1].name(), "params.params.decoder.x");
  EXPECT_EQ(parsed.leaves[3].name(), "é.\"q\"");
  EXPECT_EQ(parsed.use_ocdbt, false);
  EXPECT_FALSE(parsed.use_zarr3);
  EXPECT_TRUE(parsed.store_array_data_equal_to_fill_value);
  EXPECT_EQ(parsed.custom_metadata, tree.custom_metadata);
  EXPECT_EQ(parsed.ToJson(), text);
}

TEST(TreeMetadataTest, ErrorsNameTheEntryAndField) {
  const std::string ok_key = R"("key_metadata": [{"key": "a", "key_type": 2}])";
  struct Case {
    std::string text;
    std::string message;
  };
  const Case cases[] = {
      {"{\"use_zarr3\": true}", "_METADATA: missing tree_metadata"},
      {"[1]", "_METADATA: not a JSON object"},
      {"{\"tree_metadata\": {\"('a',)\": {" + ok_key +
           ", \"value_metadata\": {\"value_type\": \"jax.Array\"}}}}",
       "_METADATA: entry \"('a',)\": missing value_metadata.skip_deserialize"},
      {"{\"tree_metadata\": {\"('a',)\": {" + ok_key + "}}}",
       "_METADATA: entry \"('a',)\": missing value_metadata"},
      {"{\"tree_metadata\": {\"('a',)\": {\"value_metadata\": {}}}}",
       "_METADATA: entry \"('a',)\": missing key_metadata"},
      {"{\"tree_metadata\": {\"('a',)\": {\"key_metadata\": [{\"key\": \"a\", \"key_type\": 3}], "
       "\"value_metadata\": {\"value_type\": \"jax.Array\", \"skip_deserialize\": false}}}}",
       "_METADATA: entry \"('a',)\": key_metadata entry {\"key\":\"a\",\"key_type\":3} has no "
       "key_type 1 (sequence) or 2 (dict)"},
      {"{\"tree_metadata\": {\"('a',)\": {" + ok_key +
           ", \"value_metadata\": {\"value_type\": \"jax.Array\", \"skip_deserialize\": \"no\"}}}}",
       "_METADATA: entry \"('a',)\": value_metadata.skip_deserialize is not a bool"},
      {"{\"tree_metadata\": {\"('a',)\": {" + ok_key +
           ", \"value_metadata\": {\"value_type\": \"jax.Array\", \"skip_deserialize\": false, "
           "\"write_shape\": [-1]}}}}",
       "_METADATA: entry \"('a',)\": value_metadata.write_shape [-1] is not a shape"},
      {"{\"tree_metadata\": {}, \"use_zarr3\": 1}", "_METADATA: use_zarr3 is 1, not a bool"},
      {"{\"tree_metadata\": {\"x\": {\"key_metadata\": [{\"key\": \"a.b\", \"key_type\": 2}], "
       "\"value_metadata\": {\"value_type\": \"np.ndarray\", \"skip_deserialize\": false}}, "
       "\"y\": {\"key_metadata\": [{\"key\": \"a\", \"key_type\": 2}, {\"key\": \"b\", "
       "\"key_type\": 2}], \"value_metadata\": {\"value_type\": \"np.ndarray\", "
       "\"skip_deserialize\": false}}}}",
       "both name parameter 'a.b'"},
      {"{\"tree_metadata\": ", "_METADATA: invalid JSON at byte"},
  };
  for (const Case& c : cases) {
    Result<TreeMetadata> tree = TreeMetadata::Parse(c.text, "_METADATA");
    ASSERT_FALSE(tree.ok()) << c.text;
    EXPECT_EQ(tree.status().code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(tree.status().message(), HasSubstr(c.message)) << c.text;
  }
}

// ---------------------------------------------------------------------------
// Real checkpoints

TEST(LegacyFixtureTest, ReadsNonOcdbtZarr2Item) {
  const fs::path dir = OrbaxFixture("legacy-aggregate_some.checkpoint");
  std::unique_ptr<ItemReader> item = OpenOrFail(dir);
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(item->location().item_dir, dir);
  EXPECT_TRUE(item->location().step_dir.empty());
  EXPECT_FALSE(item->location().step.has_value());
  EXPECT_FALSE(item->uses_ocdbt());
  EXPECT_FALSE(item->uses_zarr3());
  EXPECT_TRUE(item->checkpoint_metadata().is_null());
  // c.a and c.e are skip_deserialize placeholders, not arrays.
  EXPECT_THAT(Names(*item), ElementsAre("a", "b"));
  const ItemReader::ArrayEntry* a = item->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->metadata.dtype, DType::kI64);
  EXPECT_EQ(a->metadata.shape, Shape{8});
  EXPECT_EQ(item->Find("c.a"), nullptr);
  EXPECT_EQ(item->Find("zzz"), nullptr);

  EXPECT_THAT(ReadAll<int64_t>(*item, "a"), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  EXPECT_THAT(ReadAll<int64_t>(*item, "b"),
              ElementsAre(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30));
  std::vector<int64_t> part(5);
  ASSERT_TRUE(item->Reader(*item->Find("b"))->ReadRegion({3}, {5}, part.data()).ok());
  EXPECT_THAT(part, ElementsAre(6, 8, 10, 12, 14));
}

// The OCDBT fixtures, read through ItemReader with their exact values.
// TensorStore wrote them: an OCDBT database at the item directory (merged
// from ocdbt.process_0), zarr v2 or v3 arrays.

const fs::path kMissingManifestFixture = OrbaxFixture(
    "orbax-compat/v0_checkpoints/direct_checkpoint/critical_metadata_alterations/"
    "missing_pytree_data_file_manifest.ocdbt");

// `a` = int32 0..7 and `b.c` = int32 [1, 2, 3], as Orbax's compatibility
// checkpoints hold them.
void ExpectCompatArrays(const ItemReader& item) {
  EXPECT_THAT(Names(item), ElementsAre("a", "b.c"));
  const ItemReader::ArrayEntry* a = item.Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->metadata.dtype, DType::kI32);
  EXPECT_EQ(a->metadata.shape, Shape{8});
  EXPECT_EQ(a->metadata.chunk_shape, Shape{8});
  EXPECT_EQ(a->leaf->value_type, "jax.Array");
  EXPECT_EQ(a->leaf->write_shape, Shape{8});
  EXPECT_THAT(ReadAll<int32_t>(item, "a"), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  EXPECT_THAT(ReadAll<int32_t>(item, "b.c"), ElementsAre(1, 2, 3));
  std::vector<int32_t> part(3);
  ASSERT_TRUE(item.Reader(*a)->ReadRegion({4}, {3}, part.data()).ok());
  EXPECT_THAT(part, ElementsAre(4, 5, 6));
}

TEST(OcdbtFixtureTest, ReadsV0DirectCheckpoint) {
  const fs::path dir = CompatFixture("v0_checkpoints", "direct_checkpoint");
  std::unique_ptr<ItemReader> item = OpenOrFail(dir);
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(item->location().item_dir, dir);
  EXPECT_TRUE(item->location().step_dir.empty());
  EXPECT_TRUE(item->uses_ocdbt());
  EXPECT_FALSE(item->uses_zarr3());
  EXPECT_EQ(item->tree().use_ocdbt, true);
  EXPECT_TRUE(item->tree().store_array_data_equal_to_fill_value);
  ExpectCompatArrays(*item);
  // The top-level database (one generation), not ocdbt.process_0 (four).
  ASSERT_NE(item->ocdbt(), nullptr);
  EXPECT_EQ(item->ocdbt()->manifest_path(), dir / "manifest.ocdbt");
  EXPECT_EQ(item->ocdbt()->version().generation, 1u);
  // What `inspect` shows as stored bytes: .zarray + the chunk.
  EXPECT_EQ(item->StoredBytes(*item->Find("a")), 164u + 41);
  EXPECT_EQ(item->StoredBytes(*item->Find("b.c")), 164u + 21);
  EXPECT_EQ(item->store().Describe("a/0"), dir.string() + " OCDBT key 'a/0'");
}

TEST(OcdbtFixtureTest, ReadsCompositeCheckpointsZarr2AndZarr3) {
  for (const char* version : {"v0_checkpoints", "v1_checkpoints"}) {
    SCOPED_TRACE(version);
    const fs::path dir = CompatFixture(version, "composite_checkpoint");
    std::unique_ptr<ItemReader> item = OpenOrFail(dir);
    ASSERT_NE(item, nullptr);
    EXPECT_EQ(item->location().item_dir, dir / "state");
    EXPECT_EQ(item->location().step_dir, dir);
    EXPECT_TRUE(item->uses_ocdbt());
    const bool v1 = std::string(version) == "v1_checkpoints";
    EXPECT_EQ(item->uses_zarr3(), v1);
    ExpectCompatArrays(*item);
    EXPECT_FALSE(item->checkpoint_metadata().is_null());
    if (v1) {
      EXPECT_EQ(item->Find("a")->metadata.format, ZarrFormat::kV3);
      EXPECT_EQ(item->StoredBytes(*item->Find("a")), 480u + 61);
    }
  }
}

TEST(OcdbtFixtureTest, ReadsTunixTwoDimensionalFloat32Chunks) {
  // _METADATA has no use_ocdbt: manifest.ocdbt says it.
  std::unique_ptr<ItemReader> item = OpenOrFail(OrbaxFixture("tunix-sft-step1"));
  ASSERT_NE(item, nullptr);
  EXPECT_FALSE(item->tree().use_ocdbt.has_value());
  EXPECT_TRUE(item->uses_ocdbt());
  EXPECT_FALSE(item->uses_zarr3());
  EXPECT_THAT(Names(*item),
              ElementsAre("w1.bias.value", "w1.kernel.value", "w2.bias.value", "w2.kernel.value"));
  const ItemReader::ArrayEntry* w1 = item->Find("w1.kernel.value");
  ASSERT_NE(w1, nullptr);
  EXPECT_EQ(w1->metadata.dtype, DType::kF32);
  EXPECT_EQ(w1->metadata.shape, (Shape{2, 4}));
  EXPECT_EQ(w1->metadata.chunk_shape, (Shape{1, 2}));
  EXPECT_THAT(ReadAll<float>(*item, "w1.kernel.value"),
              ElementsAre(0.7567299008369446f, -0.685700535774231f, -0.5688337087631226f,
                          -0.8757604956626892f, -0.6599427461624146f, 0.44935086369514465f,
                          0.5507537722587585f, -0.7722851037979126f));
  // Chunks [2, 1] of a [4, 2] array: each chunk is a column pair.
  EXPECT_THAT(ReadAll<float>(*item, "w2.kernel.value"),
              ElementsAre(0.6797945499420166f, 0.7079945802688599f, -0.22166717052459717f,
                          -0.414703905582428f, 0.20622818171977997f, 0.010248427279293537f,
                          0.3101186454296112f, -0.40491563081741333f));
  EXPECT_THAT(ReadAll<float>(*item, "w1.bias.value"), ElementsAre(0, 0, 0, 0));
  EXPECT_THAT(ReadAll<float>(*item, "w2.bias.value"), ElementsAre(0, 0));
  std::vector<float> corner(2);
  ASSERT_TRUE(item->Reader(*w1)->ReadRegion({1, 1}, {1, 2}, corner.data()).ok());
  EXPECT_THAT(corner, ElementsAre(0.44935086369514465f, 0.5507537722587585f));
}

TEST(OcdbtFixtureTest, MissingTopLevelManifestSaysSo) {
  // Orbax refuses this checkpoint; ocdbt.process_0/manifest.ocdbt is intact,
  // but Orbax never reads it instead, and neither do we.
  Result<std::unique_ptr<ItemReader>> item = ItemReader::Open(kMissingManifestFixture);
  ASSERT_FALSE(item.ok());
  EXPECT_EQ(item.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(item.status().message(),
            (kMissingManifestFixture / "manifest.ocdbt").string() +
                ": no such file, but _METADATA says the arrays are in an OCDBT database "
                "(use_ocdbt) whose manifest this must be; ocdbt.process_0 exist, but Orbax reads "
                "only the top-level database (the checkpoint was not finalized, or its manifest "
                "was deleted)");
}

TEST(OcdbtFixtureTest, WithoutUseOcdbtAndManifestTheArraysAreMissing) {
  ScratchDir dir;
  fs::copy(OrbaxFixture("tunix-sft-step1"), dir / "ckpt", fs::copy_options::recursive);
  fs::remove(dir / "ckpt/model_params/manifest.ocdbt");
  Result<std::unique_ptr<ItemReader>> item = ItemReader::Open(dir / "ckpt");
  ASSERT_FALSE(item.ok());
  EXPECT_EQ(item.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(item.status().message(),
            (dir / "ckpt/model_params/w1.bias.value/.zarray").string() +
                ": metadata of array 'w1.bias.value' listed in _METADATA is missing "
                "(ocdbt.process_0 exist, but there is no manifest.ocdbt: an unfinished OCDBT "
                "checkpoint?)");
}

TEST(OcdbtFixtureTest, CorruptNodeIsDataLossNamingTheFile) {
  ScratchDir dir;
  fs::copy(CompatFixture("v0_checkpoints", "direct_checkpoint"), dir / "item",
           fs::copy_options::recursive);
  const fs::path node = dir / "item/d/9f51d9b77c0c771353c577b65dc7bba5";
  std::string bytes = ReadBytes(node);
  bytes[100] ^= 1;
  WriteBytes(node, bytes);
  Result<std::unique_ptr<ItemReader>> item = ItemReader::Open(dir / "item");
  ASSERT_FALSE(item.ok());
  EXPECT_EQ(item.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(item.status().message(), StartsWith(node.string() + " at [0, +240): CRC-32C "
                                                                  "mismatch"));
}

TEST(OcdbtFixtureTest, ResolvesCompositeItems) {
  const fs::path v1 = CompatFixture("v1_checkpoints", "composite_checkpoint");
  ItemLocation location = ValueOrFail(ResolveItem(v1));
  EXPECT_EQ(location.item_dir, v1 / "state");
  EXPECT_EQ(location.step_dir, v1);
  // v0 composite: `metadata/` holds a JSON item without _METADATA.
  const fs::path v0 = CompatFixture("v0_checkpoints", "composite_checkpoint");
  EXPECT_EQ(ValueOrFail(ResolveItem(v0)).item_dir, v0 / "state");
  const fs::path tunix = OrbaxFixture("tunix-sft-step1");
  location = ValueOrFail(ResolveItem(tunix));
  EXPECT_EQ(location.item_dir, tunix / "model_params");
  EXPECT_EQ(location.step_dir, tunix);
  EXPECT_FALSE(location.step.has_value());  // "tunix-sft-step1" is not a step name
}

// ---------------------------------------------------------------------------
// Writing and reading back

struct SourceArray {
  std::vector<std::string> keys;
  DType dtype;
  Shape shape;
  Shape chunk_shape;
  std::string bytes;  // C order

  std::string name() const {
    std::string n;
    for (const std::string& k : keys) n += (n.empty() ? "" : ".") + k;
    return n;
  }
};

SourceArray MakeArray(std::vector<std::string> keys, DType dtype, Shape shape, Shape chunk_shape,
                      float offset) {
  SourceArray a{std::move(keys), dtype, std::move(shape), std::move(chunk_shape), {}};
  const size_t n = static_cast<size_t>(NumElementsUnchecked(a.shape));
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = static_cast<float>(i % 97) * 0.25f - 7.0f + offset;
  a.bytes.resize(n * DTypeSize(dtype));
  EXPECT_TRUE(FromF32(dtype, values.data(), a.bytes.data(), n).ok());
  return a;
}

// Calls f(index) for every index of `grid` (C order).
void ForEachIndex(const std::vector<int64_t>& grid,
                  const std::function<void(const std::vector<int64_t>&)>& f) {
  for (int64_t g : grid) {
    if (g == 0) return;
  }
  std::vector<int64_t> index(grid.size(), 0);
  for (;;) {
    f(index);
    size_t d = grid.size();
    for (;;) {
      if (d == 0) return;
      --d;
      if (++index[d] < grid[d]) break;
      index[d] = 0;
    }
  }
}

// The full (padded) chunk `index` of `a`.
std::string ChunkOf(const SourceArray& a, const std::vector<int64_t>& index) {
  const size_t element = DTypeSize(a.dtype);
  std::string chunk(static_cast<size_t>(NumElementsUnchecked(a.chunk_shape)) * element, '\0');
  std::vector<int64_t> origin(index.size());
  Shape extent(index.size());
  for (size_t i = 0; i < index.size(); ++i) {
    origin[i] = index[i] * a.chunk_shape[i];
    extent[i] = std::min(a.chunk_shape[i], a.shape[i] - origin[i]);
  }
  CopyBox(a.bytes.data(), a.shape, origin, chunk.data(), a.chunk_shape,
          std::vector<int64_t>(index.size(), 0), extent, element);
  return chunk;
}

// Declares `a` and writes its chunks from `threads` threads.
void WriteArray(CheckpointWriter& writer, const SourceArray& a, int threads = 3) {
  Result<ArrayMetadata> metadata = writer.AddArray(a.keys, a.dtype, a.shape, a.chunk_shape);
  ASSERT_TRUE(metadata.ok()) << metadata.status().message();
  std::vector<std::vector<int64_t>> indices;
  ForEachIndex(metadata->ChunkGrid(), [&](const std::vector<int64_t>& i) { indices.push_back(i); });
  std::vector<std::thread> workers;
  std::vector<Status> results(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (size_t i = t; i < indices.size(); i += threads) {
        Status s = writer.WriteChunk(a.name(), indices[i], ChunkOf(a, indices[i]));
        if (!s.ok()) results[t] = s;
      }
    });
  }
  for (auto& w : workers) w.join();
  for (const Status& s : results) EXPECT_TRUE(s.ok()) << s.message();
}

// Every box [origin, origin + extent) with extent >= 1 in every dimension.
void ForEachBox(const Shape& shape,
                const std::function<void(const std::vector<int64_t>&, const Shape&)>& f) {
  std::vector<int64_t> origin(shape.size()), extent(shape.size());
  std::function<void(size_t)> rec = [&](size_t d) {
    if (d == shape.size()) return f(origin, extent);
    for (origin[d] = 0; origin[d] < shape[d]; ++origin[d]) {
      for (extent[d] = 1; origin[d] + extent[d] <= shape[d]; ++extent[d]) rec(d + 1);
    }
  };
  rec(0);
}

class RoundTripTest : public ::testing::Test {
 protected:
  void SetUp() override {
    arrays_ = {
        MakeArray({"params", "params", "decoder", "x"}, DType::kBF16, {4, 3, 5}, {4, 1, 5}, 0),
        MakeArray({"params", "params", "decoder", "layers", "w"}, DType::kF32, {2, 6, 4, 3},
                  {1, 4, 4, 2}, 1),
        MakeArray({"params", "params", "token_embedder", "embedding"}, DType::kF32, {10}, {4}, 2),
        MakeArray({"params", "params", "norm"}, DType::kBF16, {7, 3}, {7, 3}, 3),
    };
    custom_ = {{"scan_layers", true}, {"nested", {{"b", {1, 2}}, {"a", "é"}}}};
    WriteOptions options;
    options.step = 0;
    Result<std::unique_ptr<CheckpointWriter>> writer = CheckpointWriter::Create(root(), options);
    ASSERT_TRUE(writer.ok()) << writer.status().message();
    EXPECT_EQ((*writer)->item_dir(), root() / "0" / "items");
    for (const SourceArray& a : arrays_) WriteArray(**writer, a);
    ASSERT_TRUE((*writer)->AddScalar({"step"}, 1234).ok());
    ASSERT_TRUE((*writer)->AddEmptyDict({"opt_state"}).ok());
    Status finished = (*writer)->Finish(custom_);
    ASSERT_TRUE(finished.ok()) << finished.message();
  }

  fs::path root() const { return dir_ / "ckpt"; }
  fs::path item_dir() const { return root() / "0" / "items"; }

  ScratchDir dir_;
  std::vector<SourceArray> arrays_;
  json custom_;
};

TEST_F(RoundTripTest, EveryBoxReadsBackTheSourceValues) {
  std::unique_ptr<ItemReader> item = OpenOrFail(root());
  ASSERT_NE(item, nullptr);
  EXPECT_THAT(Names(*item),
              ElementsAre("params.params.decoder.layers.w", "params.params.decoder.x",
                          "params.params.norm", "params.params.token_embedder.embedding", "step"));
  for (const SourceArray& a : arrays_) {
    const ItemReader::ArrayEntry* entry = item->Find(a.name());
    ASSERT_NE(entry, nullptr) << a.name();
    EXPECT_EQ(entry->metadata.dtype, a.dtype);
    EXPECT_EQ(entry->metadata.shape, a.shape);
    EXPECT_EQ(entry->metadata.chunk_shape, a.chunk_shape);
    EXPECT_EQ(entry->leaf->value_type, "np.ndarray");
    std::unique_ptr<ArrayReader> reader = item->Reader(*entry);
    const size_t element = DTypeSize(a.dtype);
    int boxes = 0;
    ForEachBox(a.shape, [&](const std::vector<int64_t>& origin, const Shape& extent) {
      const size_t bytes = static_cast<size_t>(NumElementsUnchecked(extent)) * element;
      std::string expected(bytes, '\0'), got(bytes, '\1');
      CopyBox(a.bytes.data(), a.shape, origin, expected.data(), extent,
              std::vector<int64_t>(extent.size(), 0), extent, element);
      Status read = reader->ReadRegion(origin, extent, got.data());
      ASSERT_TRUE(read.ok()) << read.message();
      ASSERT_EQ(got, expected) << a.name() << " at " << ShapeString(origin) << " extent "
                               << ShapeString(extent);
      ++boxes;
    });
    EXPECT_GT(boxes, 20) << a.name();
  }
  EXPECT_THAT(ReadAll<int64_t>(*item, "step"), ElementsAre(1234));
}

TEST_F(RoundTripTest, MetadataFilesSayWhatOrbaxExpects) {
  // _METADATA, read as plain JSON.
  const json metadata = json::parse(ReadBytes(item_dir() / "_METADATA"));
  const json& entries = metadata["tree_metadata"];
  ASSERT_EQ(entries.size(), 6u);
  EXPECT_EQ(entries["('params', 'params', 'decoder', 'x')"],
            json::parse(R"({"key_metadata": [{"key": "params", "key_type": 2},
              {"key": "params", "key_type": 2}, {"key": "decoder", "key_type": 2},
              {"key": "x", "key_type": 2}],
              "value_metadata": {"value_type": "np.ndarray", "skip_deserialize": false}})"));
  EXPECT_EQ(entries["('step',)"]["value_metadata"],
            json::parse(R"({"value_type": "scalar", "skip_deserialize": false})"));
  EXPECT_EQ(entries["('opt_state',)"]["value_metadata"],
            json::parse(R"({"value_type": "Dict", "skip_deserialize": true})"));
  EXPECT_EQ(metadata["use_ocdbt"], false);
  EXPECT_EQ(metadata["use_zarr3"], true);
  EXPECT_EQ(metadata["store_array_data_equal_to_fill_value"], true);
  EXPECT_EQ(metadata["custom_metadata"], custom_);
  EXPECT_THAT(ReadBytes(item_dir() / "_METADATA"),
              StartsWith("{\"tree_metadata\": {\"('opt_state',)\": {\"key_metadata\": "
                         "[{\"key\": \"opt_state\", \"key_type\": 2}], \"value_metadata\": "
                         "{\"value_type\": \"Dict\", \"skip_deserialize\": true}}, "));

  // _CHECKPOINT_METADATA
  const json step = json::parse(ReadBytes(root() / "0" / "_CHECKPOINT_METADATA"));
  EXPECT_EQ(step["item_handlers"],
            json::parse(R"({"items": "orbax.checkpoint._src.handlers.pytree_checkpoint_handler.)"
                        R"(PyTreeCheckpointHandler"})"));
  EXPECT_EQ(step["metrics"], json::object());
  EXPECT_EQ(step["performance_metrics"], json::object());
  EXPECT_EQ(step["custom_metadata"], custom_);
  ASSERT_TRUE(step["init_timestamp_nsecs"].is_number_integer());
  EXPECT_GT(step["init_timestamp_nsecs"].get<int64_t>(), int64_t{1'600'000'000} * 1'000'000'000);
  EXPECT_LE(step["init_timestamp_nsecs"].get<int64_t>(),
            step["commit_timestamp_nsecs"].get<int64_t>());

  // commit_success.txt in the step and item directories.
  EXPECT_EQ(ReadBytes(root() / "0" / "commit_success.txt"),
            "Checkpoint commit was successful to " + (root() / "0").string());
  EXPECT_EQ(ReadBytes(item_dir() / "commit_success.txt"),
            "Checkpoint commit was successful to " + item_dir().string());

  // The array files.
  EXPECT_EQ(ReadBytes(item_dir() / "params.params.decoder.x" / "zarr.json"),
            WrittenZarr3Json(DType::kBF16, {4, 3, 5}, {4, 1, 5}));
  EXPECT_TRUE(fs::is_regular_file(item_dir() / "params.params.decoder.x" / "c/0/2/0"));
  EXPECT_TRUE(fs::is_regular_file(item_dir() / "params.params.decoder.layers.w" / "c/1/1/0/1"));
  EXPECT_THAT(ReadBytes(item_dir() / "step" / "zarr.json"),
              HasSubstr("\"data_type\":\"int64\",\"fill_value\":0,\"node_type\":\"array\","
                        "\"shape\":[],"));
  EXPECT_TRUE(fs::is_regular_file(item_dir() / "step" / "c"));
  EXPECT_FALSE(fs::exists(item_dir() / "opt_state"));

  // ItemReader exposes the same.
  std::unique_ptr<ItemReader> item = OpenOrFail(item_dir());
  ASSERT_NE(item, nullptr);
  EXPECT_TRUE(item->uses_zarr3());
  EXPECT_FALSE(item->uses_ocdbt());
  EXPECT_EQ(item->tree().custom_metadata, custom_);
  EXPECT_EQ(item->checkpoint_metadata()["custom_metadata"], custom_);
  EXPECT_EQ(item->tree().leaves.size(), 6u);
}

TEST_F(RoundTripTest, ResolvesRootStepAndItemDirectories) {
  for (const fs::path& path :
       {root(), root() / "0", item_dir(), fs::path(item_dir().string() + "/")}) {
    ItemLocation location = ValueOrFail(ResolveItem(path), path.string());
    EXPECT_EQ(location.item_dir, item_dir()) << path;
    EXPECT_EQ(location.step_dir, root() / "0") << path;
    EXPECT_EQ(location.step, 0) << path;
  }
  // The highest step wins, by number, not by name; "<prefix>_<n>" counts too.
  fs::rename(root() / "0", root() / "5");
  fs::create_directories(root() / "10" / "items");
  fs::copy(root() / "5" / "items" / "_METADATA", root() / "10" / "items" / "_METADATA");
  fs::create_directories(root() / "ckpt_7" / "items");
  fs::copy(root() / "5" / "items" / "_METADATA", root() / "ckpt_7" / "items" / "_METADATA");
  fs::create_directories(root() / "11.orbax-checkpoint-tmp" / "items");
  fs::create_directories(root() / "metadata");
  ItemLocation location = ValueOrFail(ResolveItem(root()));
  EXPECT_EQ(location.item_dir, root() / "10" / "items");
  EXPECT_EQ(location.step, 10);
  fs::remove_all(root() / "10");
  location = ValueOrFail(ResolveItem(root()));
  EXPECT_EQ(location.item_dir, root() / "ckpt_7" / "items");
  EXPECT_EQ(location.step, 7);
}

TEST_F(RoundTripTest, RefusesUnfinishedCheckpoints) {
  const fs::path tmp = dir_ / "ckpt.orbax-checkpoint-tmp";
  fs::rename(root(), tmp);
  for (const fs::path& path : {tmp, tmp / "0", tmp / "0" / "items"}) {
    Result<ItemLocation> location = ResolveItem(path);
    ASSERT_FALSE(location.ok()) << path;
    EXPECT_EQ(location.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_THAT(location.status().message(), HasSubstr("unfinished checkpoint"));
    EXPECT_THAT(location.status().message(), HasSubstr(".orbax-checkpoint-tmp"));
    EXPECT_EQ(ItemReader::Open(path).status().code(), StatusCode::kFailedPrecondition);
  }
  // A root whose only step is unfinished says so.
  fs::create_directories(root());
  fs::rename(tmp / "0", root() / "0.orbax-checkpoint-tmp-1700000000");
  Result<ItemLocation> location = ResolveItem(root());
  ASSERT_FALSE(location.ok());
  EXPECT_EQ(location.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(location.status().message(),
            "no _METADATA, items/_METADATA or numeric step directory in " + root().string() +
                " (only unfinished steps: 0.orbax-checkpoint-tmp-1700000000)");
}

TEST_F(RoundTripTest, SeveralItemsNeedTheItemPath) {
  fs::create_directories(root() / "0" / "extra");
  fs::copy(item_dir() / "_METADATA", root() / "0" / "extra" / "_METADATA");
  fs::rename(item_dir(), root() / "0" / "model");
  Result<ItemLocation> location = ResolveItem(root() / "0");
  ASSERT_FALSE(location.ok());
  EXPECT_EQ(location.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(location.status().message(), (root() / "0").string() +
                                             ": several Orbax items (extra, model); pass the item "
                                             "directory, e.g. " +
                                             (root() / "0" / "extra").string());
  // Through the root too.
  EXPECT_EQ(ResolveItem(root()).status().code(), StatusCode::kInvalidArgument);
  // Naming the item works.
  std::unique_ptr<ItemReader> item = OpenOrFail(root() / "0" / "model");
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(item->location().step_dir, root() / "0");
  EXPECT_EQ(item->checkpoint_metadata()["custom_metadata"], custom_);
}

TEST_F(RoundTripTest, MissingChunkIsAnErrorWhenOrbaxSaysAllWereWritten) {
  const fs::path chunk = item_dir() / "params.params.decoder.x" / "c" / "0" / "1" / "0";
  ASSERT_TRUE(fs::remove(chunk));
  std::unique_ptr<ItemReader> item = OpenOrFail(root());
  ASSERT_NE(item, nullptr);
  std::unique_ptr<ArrayReader> reader = item->Reader(*item->Find("params.params.decoder.x"));
  std::vector<uint16_t> out(4 * 3 * 5);
  Status read = reader->ReadRegion({0, 0, 0}, {4, 3, 5}, out.data());
  EXPECT_EQ(read.code(), StatusCode::kDataLoss);
  EXPECT_THAT(read.message(), StartsWith(chunk.string() + ": chunk [0, 1, 0] of array "
                                                          "'params.params.decoder.x' is missing"));
  EXPECT_THAT(read.message(), HasSubstr("store_array_data_equal_to_fill_value"));

  // An older _METADATA without the flag: the missing chunk reads as zeros.
  TreeMetadata tree = ValueOrFail(TreeMetadata::Parse(ReadBytes(item_dir() / "_METADATA"), "m"));
  tree.store_array_data_equal_to_fill_value = false;
  WriteBytes(item_dir() / "_METADATA", tree.ToJson());
  item = OpenOrFail(root());
  ASSERT_NE(item, nullptr);
  reader = item->Reader(*item->Find("params.params.decoder.x"));
  read = reader->ReadRegion({0, 0, 0}, {4, 3, 5}, out.data());
  ASSERT_TRUE(read.ok()) << read.message();
  const std::vector<uint16_t> source = FromBytes<uint16_t>(arrays_[0].bytes);
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 3; ++j) {
      for (int k = 0; k < 5; ++k) {
        const int at = (i * 3 + j) * 5 + k;
        EXPECT_EQ(out[at], j == 1 ? 0 : source[at]) << i << j << k;
      }
    }
  }
}

TEST_F(RoundTripTest, ConsecutiveReadsOfOneChunkDecodeItOnce) {
  std::unique_ptr<ItemReader> item = OpenOrFail(root());
  ASSERT_NE(item, nullptr);
  std::unique_ptr<ArrayReader> reader =
      item->Reader(*item->Find("params.params.token_embedder.embedding"));
  std::vector<float> first(2), again(2);
  ASSERT_TRUE(reader->ReadRegion({4}, {2}, first.data()).ok());
  // The cached chunk answers even after its file is gone...
  ASSERT_TRUE(fs::remove(item_dir() / "params.params.token_embedder.embedding" / "c" / "1"));
  ASSERT_TRUE(reader->ReadRegion({6}, {2}, again.data()).ok());
  EXPECT_EQ(again, (std::vector<float>{-3.5f, -3.25f}));
  // ...until another chunk replaces it.
  ASSERT_TRUE(reader->ReadRegion({0}, {1}, first.data()).ok());
  EXPECT_EQ(reader->ReadRegion({4}, {1}, first.data()).code(), StatusCode::kDataLoss);
}

TEST_F(RoundTripTest, ReadRegionChecksTheBox) {
  std::unique_ptr<ItemReader> item = OpenOrFail(root());
  ASSERT_NE(item, nullptr);
  std::unique_ptr<ArrayReader> reader = item->Reader(*item->Find("params.params.norm"));
  std::vector<uint16_t> out(64);
  Status s = reader->ReadRegion({5, 0}, {3, 3}, out.data());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "array 'params.params.norm': region at [5, 0] of shape [3, 3] exceeds "
            "the array shape [7, 3]");
  EXPECT_EQ(reader->ReadRegion({-1, 0}, {1, 1}, out.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(reader->ReadRegion({0}, {1}, out.data()).code(), StatusCode::kInvalidArgument);
  // An empty box reads nothing.
  EXPECT_TRUE(reader->ReadRegion({7, 0}, {0, 3}, out.data()).ok());
}

TEST_F(RoundTripTest, MissingArrayMetadataNamesTheFile) {
  fs::remove(item_dir() / "params.params.norm" / "zarr.json");
  Result<std::unique_ptr<ItemReader>> item = ItemReader::Open(root());
  ASSERT_FALSE(item.ok());
  EXPECT_EQ(item.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(item.status().message(),
            (item_dir() / "params.params.norm" / "zarr.json").string() +
                ": metadata of array 'params.params.norm' listed in _METADATA is missing");
  fs::remove(item_dir() / "_METADATA");
  EXPECT_EQ(ItemReader::Open(item_dir()).status().code(), StatusCode::kNotFound);
}

// ---------------------------------------------------------------------------
// All four storage variants: OCDBT on/off x zarr v3/v2

struct Variant {
  bool ocdbt;
  bool zarr3;
};

std::string VariantName(const ::testing::TestParamInfo<Variant>& info) {
  return std::string(info.param.ocdbt ? "Ocdbt" : "Files") + (info.param.zarr3 ? "Zarr3" : "Zarr2");
}

// An array of pseudo-random values in [-1, 1): its chunks do not compress
// below 1024 bytes, so with OCDBT they are stored out of line.
SourceArray NoiseArray(std::vector<std::string> keys, DType dtype, Shape shape, Shape chunk_shape,
                       uint32_t seed) {
  SourceArray a{std::move(keys), dtype, std::move(shape), std::move(chunk_shape), {}};
  const size_t n = static_cast<size_t>(NumElementsUnchecked(a.shape));
  std::vector<float> values(n);
  uint32_t x = seed;
  for (float& v : values) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<float>(x >> 8) / static_cast<float>(1 << 23) - 1.0f;
  }
  a.bytes.resize(n * DTypeSize(dtype));
  EXPECT_TRUE(FromF32(dtype, values.data(), a.bytes.data(), n).ok());
  return a;
}

class StorageVariantTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    arrays_ = {
        MakeArray({"params", "params", "decoder", "x"}, DType::kBF16, {4, 3, 5}, {4, 1, 5}, 0),
        MakeArray({"params", "params", "decoder", "layers", "w"}, DType::kF32, {2, 6, 4, 3},
                  {1, 4, 4, 2}, 1),
        // Multi-chunk arrays whose chunks (6 KiB and 3 KiB) go out of line,
        // with partial edge chunks.
        NoiseArray({"params", "params", "token_embedder", "embedding"}, DType::kF32, {70, 50},
                   {32, 48}, 7),
        NoiseArray({"params", "params", "decoder", "mlp", "wi"}, DType::kBF16, {96, 64}, {48, 32},
                   11),
    };
    WriteOptions options;
    options.ocdbt = GetParam().ocdbt;
    options.zarr3 = GetParam().zarr3;
    // Several data files and B+tree levels even for this small item.
    options.ocdbt_target_data_file_size = 8 << 10;
    options.ocdbt_max_decoded_node_bytes = 600;
    Result<std::unique_ptr<CheckpointWriter>> writer = CheckpointWriter::Create(root(), options);
    ASSERT_TRUE(writer.ok()) << writer.status().message();
    for (const SourceArray& a : arrays_) WriteArray(**writer, a);
    if (options.ocdbt) {
      // Large chunks are in data files already; nothing names them yet.
      EXPECT_GT(DirectoryBytes(item_dir() / "d"), 15000u);
      EXPECT_FALSE(fs::exists(item_dir() / "manifest.ocdbt"));
    }
    ASSERT_TRUE((*writer)->AddScalar({"step"}, 1234).ok());
    ASSERT_TRUE((*writer)->AddEmptyDict({"opt_state"}).ok());
    Status finished = (*writer)->Finish({{"scan_layers", true}});
    ASSERT_TRUE(finished.ok()) << finished.message();
  }

  fs::path root() const { return dir_ / "ckpt"; }
  fs::path item_dir() const { return root() / "0" / "items"; }

  ScratchDir dir_;
  std::vector<SourceArray> arrays_;
};

TEST_P(StorageVariantTest, EveryValueReadsBack) {
  std::unique_ptr<ItemReader> item = OpenOrFail(root());
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(item->uses_ocdbt(), GetParam().ocdbt);
  EXPECT_EQ(item->uses_zarr3(), GetParam().zarr3);
  EXPECT_EQ(item->ocdbt() != nullptr, GetParam().ocdbt);
  EXPECT_THAT(Names(*item), ElementsAre("params.params.decoder.layers.w",
                                        "params.params.decoder.mlp.wi", "params.params.decoder.x",
                                        "params.params.token_embedder.embedding", "step"));
  for (const SourceArray& a : arrays_) {
    SCOPED_TRACE(a.name());
    const ItemReader::ArrayEntry* entry = item->Find(a.name());
    ASSERT_NE(entry, nullptr);
    EXPECT_EQ(entry->metadata.format, GetParam().zarr3 ? ZarrFormat::kV3 : ZarrFormat::kV2);
    EXPECT_EQ(entry->metadata.dtype, a.dtype);
    EXPECT_EQ(entry->metadata.shape, a.shape);
    EXPECT_EQ(entry->metadata.chunk_shape, a.chunk_shape);
    std::unique_ptr<ArrayReader> reader = item->Reader(*entry);
    std::string all(a.bytes.size(), '\1');
    ASSERT_TRUE(
        reader->ReadRegion(std::vector<int64_t>(a.shape.size(), 0), a.shape, all.data()).ok());
    EXPECT_TRUE(all == a.bytes);
    // A box across chunk edges.
    if (a.shape.size() == 2) {
      const std::vector<int64_t> origin = {a.shape[0] / 3, a.shape[1] / 4};
      const Shape extent = {a.shape[0] / 2, a.shape[1] / 2};
      const size_t element = DTypeSize(a.dtype);
      std::string expected(static_cast<size_t>(NumElementsUnchecked(extent)) * element, '\0');
      std::string got(expected.size(), '\1');
      CopyBox(a.bytes.data(), a.shape, origin, expected.data(), extent, {0, 0}, extent, element);
      ASSERT_TRUE(reader->ReadRegion(origin, extent, got.data()).ok());
      EXPECT_TRUE(got == expected);
    }
    EXPECT_GT(item->StoredBytes(*entry), 0u);
  }
  EXPECT_THAT(ReadAll<int64_t>(*item, "step"), ElementsAre(1234));
}

TEST_P(StorageVariantTest, StoresWhatOrbaxExpects) {
  const Variant v = GetParam();
  const json metadata = json::parse(ReadBytes(item_dir() / "_METADATA"));
  EXPECT_EQ(metadata["use_ocdbt"], v.ocdbt);
  EXPECT_EQ(metadata["use_zarr3"], v.zarr3);
  EXPECT_EQ(metadata["store_array_data_equal_to_fill_value"], true);
  EXPECT_TRUE(fs::exists(item_dir() / "commit_success.txt"));
  EXPECT_TRUE(fs::exists(root() / "0" / "_CHECKPOINT_METADATA"));
  std::unique_ptr<ItemReader> item = OpenOrFail(root());
  ASSERT_NE(item, nullptr);
  const KvStore& store = item->store();

  // Keys as TensorStore names them, in either storage.
  const std::string x = "params.params.decoder.x/";
  if (v.zarr3) {
    EXPECT_TRUE(*store.Contains(x + "zarr.json"));
    EXPECT_TRUE(*store.Contains(x + "c/0/2/0"));
    EXPECT_TRUE(*store.Contains("step/c"));
    EXPECT_EQ(ValueOrFail(store.Read(x + "zarr.json")),
              WrittenZarr3Json(DType::kBF16, {4, 3, 5}, {4, 1, 5}));
  } else {
    EXPECT_TRUE(*store.Contains(x + "0.2.0"));
    EXPECT_TRUE(*store.Contains("step/0"));
    EXPECT_FALSE(*store.Contains(x + "zarr.json"));
    EXPECT_EQ(ValueOrFail(store.Read(x + ".zarray")),
              "{\"chunks\":[4,1,5],\"compressor\":{\"id\":\"zstd\",\"level\":1},"
              "\"dimension_separator\":\".\",\"dtype\":\"bfloat16\",\"fill_value\":null,"
              "\"filters\":null,\"order\":\"C\",\"shape\":[4,3,5],\"zarr_format\":2}");
    EXPECT_EQ(ValueOrFail(store.Read("step/.zarray")),
              "{\"chunks\":[],\"compressor\":{\"id\":\"zstd\",\"level\":1},"
              "\"dimension_separator\":\".\",\"dtype\":\"<i8\",\"fill_value\":null,"
              "\"filters\":null,\"order\":\"C\",\"shape\":[],\"zarr_format\":2}");
  }

  if (!v.ocdbt) {
    EXPECT_FALSE(fs::exists(item_dir() / "manifest.ocdbt"));
    EXPECT_FALSE(fs::exists(item_dir() / "d"));
    EXPECT_TRUE(fs::is_directory(item_dir() / "params.params.decoder.x"));
    return;
  }
  // One database at the item directory, nothing else.
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(item_dir())) {
    entries.push_back(e.path().filename().string());
  }
  std::sort(entries.begin(), entries.end());
  EXPECT_THAT(entries, ElementsAre("_METADATA", "commit_success.txt", "d", "manifest.ocdbt"));
  const OcdbtReader* db = item->ocdbt();
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->manifest().config.max_decoded_node_bytes, 600u);
  EXPECT_EQ(db->manifest().config.max_inline_value_bytes, 1024u);
  EXPECT_GE(db->version().root_height, 1);
  size_t data_files = 0;
  for (const auto& e : fs::directory_iterator(item_dir() / "d")) {
    EXPECT_THAT(e.path().filename().string(), ::testing::MatchesRegex("[0-9a-f]{32}"));
    ++data_files;
  }
  EXPECT_GE(data_files, 3u);
  // Metadata inline, big chunks out of line, every key counted.
  EXPECT_FALSE(ValueOrFail(db->Locate(x + (v.zarr3 ? "zarr.json" : ".zarray"))).out_of_line);
  const std::string big_chunk =
      std::string("params.params.token_embedder.embedding/") + (v.zarr3 ? "c/1/0" : "1.0");
  EXPECT_TRUE(ValueOrFail(db->Locate(big_chunk)).out_of_line);
  size_t keys = 0;
  for (const SourceArray& a : arrays_) {
    keys += 1 + static_cast<size_t>(NumElementsUnchecked(
                    ArrayMetadata::ForWrite(a.dtype, a.shape, a.chunk_shape).ChunkGrid()));
  }
  keys += 2;  // step: metadata and its one chunk
  EXPECT_EQ(db->version().statistics.num_keys, keys);
  EXPECT_EQ(db->ListKeys().size(), keys);
  // The manifest was written before _METADATA.
  EXPECT_LE(fs::last_write_time(item_dir() / "manifest.ocdbt"),
            fs::last_write_time(item_dir() / "_METADATA"));
}

INSTANTIATE_TEST_SUITE_P(AllFour, StorageVariantTest,
                         ::testing::Values(Variant{false, true}, Variant{false, false},
                                           Variant{true, true}, Variant{true, false}),
                         VariantName);

// ---------------------------------------------------------------------------
// Writer contract

TEST(CheckpointWriterTest, ValidatesKeysChunksAndCompleteness) {
  ScratchDir dir;
  WriteOptions options;
  options.step = 3;
  std::unique_ptr<CheckpointWriter> writer =
      ValueOrFail(CheckpointWriter::Create(dir.path(), options));
  ASSERT_NE(writer, nullptr);
  EXPECT_EQ(writer->item_dir(), dir / "3" / "items");

  auto code = [](const Status& s) { return s.code(); };
  EXPECT_EQ(writer->AddArray({}, DType::kF32, {2}, {2}).status().code(),
            StatusCode::kInvalidArgument);
  Status dotted = writer->AddArray({"a", "b.c"}, DType::kF32, {2}, {2}).status();
  EXPECT_EQ(dotted.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(dotted.message(),
            "key path ('a', 'b.c'): key 'b.c' contains '.', which would make the dotted "
            "parameter name ambiguous");
  EXPECT_EQ(writer->AddArray({"a", ""}, DType::kF32, {2}, {2}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(writer->AddArray({".."}, DType::kF32, {2}, {2}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(writer->AddArray({"a/b"}, DType::kF32, {2}, {2}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(writer->AddArray({"a"}, DType::kF32, {2}, {0}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(writer->AddArray({"a"}, DType::kF32, {2, 2}, {2}).status().code(),
            StatusCode::kInvalidArgument);

  ASSERT_TRUE(writer->AddArray({"p", "w"}, DType::kF32, {3, 2}, {2, 2}).ok());
  Status twice = writer->AddArray({"p", "w"}, DType::kF32, {3, 2}, {2, 2}).status();
  EXPECT_EQ(twice.message(), "key path ('p', 'w') was added twice");
  EXPECT_EQ(writer->AddEmptyDict({"p"}).message(),
            "key path ('p',) clashes with ('p', 'w'): a leaf cannot also hold other leaves");
  EXPECT_EQ(code(writer->AddScalar({"p", "w", "x"}, 1)), StatusCode::kInvalidArgument);

  const std::string chunk(16, '\0');
  EXPECT_EQ(code(writer->WriteChunk("p.v", {0, 0}, chunk)), StatusCode::kNotFound);
  Status outside = writer->WriteChunk("p.w", {2, 0}, chunk);
  EXPECT_EQ(outside.message(), "array 'p.w': chunk [2, 0] lies outside the chunk grid [2, 1]");
  EXPECT_EQ(code(writer->WriteChunk("p.w", {0}, chunk)), StatusCode::kInvalidArgument);
  Status size = writer->WriteChunk("p.w", {0, 0}, chunk.substr(1));
  EXPECT_EQ(size.message(), "array 'p.w': chunk [0, 0] has 15 bytes, expected 16");

  ASSERT_TRUE(writer->WriteChunk("p.w", {1, 0}, chunk).ok());
  Status incomplete = writer->Finish(nullptr);
  EXPECT_EQ(incomplete.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(incomplete.message(),
            "cannot finish the checkpoint: array 'p.w' has 1 of 2 chunks unwritten (the first "
            "is [0, 0])");
  EXPECT_FALSE(fs::exists(dir / "3" / "items" / "_METADATA"));
  ASSERT_TRUE(writer->WriteChunk("p.w", {0, 0}, chunk).ok());
  ASSERT_TRUE(writer->Finish(nullptr).ok());
  EXPECT_EQ(code(writer->Finish(nullptr)), StatusCode::kFailedPrecondition);
  EXPECT_EQ(code(writer->WriteChunk("p.w", {0, 0}, chunk)), StatusCode::kFailedPrecondition);

  // custom_metadata null: null in _METADATA, {} in _CHECKPOINT_METADATA.
  const json metadata = json::parse(ReadBytes(dir / "3" / "items" / "_METADATA"));
  EXPECT_TRUE(metadata["custom_metadata"].is_null());
  EXPECT_EQ(json::parse(ReadBytes(dir / "3" / "_CHECKPOINT_METADATA"))["custom_metadata"],
            json::object());
  std::unique_ptr<ItemReader> item = OpenOrFail(dir.path());
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(item->location().step, 3);
  EXPECT_THAT(ReadAll<float>(*item, "p.w"), ElementsAre(0, 0, 0, 0, 0, 0));

  // A second writer into the same place refuses to mix items.
  EXPECT_EQ(CheckpointWriter::Create(dir.path(), options).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST(CheckpointWriterTest, ZstdLevelIsCheckedAndRecorded) {
  for (int bad : {0, -1, 23}) {
    ScratchDir dir;
    WriteOptions options;
    options.zstd_level = bad;
    Result<std::unique_ptr<CheckpointWriter>> writer =
        CheckpointWriter::Create(dir.path(), options);
    EXPECT_EQ(writer.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(writer.status().message(),
              "zstd level " + std::to_string(bad) + " is outside [1, 22]");
  }
  for (bool zarr3 : {true, false}) {
    ScratchDir dir;
    WriteOptions options;
    options.zarr3 = zarr3;
    options.zstd_level = 7;
    std::unique_ptr<CheckpointWriter> writer =
        ValueOrFail(CheckpointWriter::Create(dir.path(), options));
    ASSERT_TRUE(writer->AddArray({"p", "w"}, DType::kF32, {2, 3}, {2, 3}).ok());
    const std::vector<float> values = {1, 2, 3, 4, 5, 6};
    ASSERT_TRUE(writer->WriteChunk("p.w", {0, 0}, AsBytes(values)).ok());
    ASSERT_TRUE(writer->Finish(nullptr).ok());
    std::unique_ptr<ItemReader> item = OpenOrFail(dir.path());
    ASSERT_NE(item, nullptr);
    EXPECT_THAT(ReadAll<float>(*item, "p.w"), ElementsAre(1, 2, 3, 4, 5, 6));
    const json metadata =
        json::parse(ReadBytes(dir / "0" / "items" / "p.w" / (zarr3 ? "zarr.json" : ".zarray")));
    EXPECT_EQ(zarr3 ? metadata["codecs"][0]["configuration"]["codecs"][1]["configuration"]["level"]
                    : metadata["compressor"]["level"],
              7)
        << metadata.dump();
  }
}

TEST(ArrayReaderTest, PrefetchIsAHintThatChangesNothing) {
  // Prefetch asks the kernel to read chunks ahead; valid, invalid and empty
  // regions alike return nothing and leave what ReadRegion reads as it was.
  for (bool ocdbt : {false, true}) {
    ScratchDir dir;
    WriteOptions options;
    options.ocdbt = ocdbt;
    std::unique_ptr<CheckpointWriter> writer =
        ValueOrFail(CheckpointWriter::Create(dir.path(), options));
    ASSERT_TRUE(writer->AddArray({"p", "w"}, DType::kF32, {4, 600}, {2, 600}).ok());
    std::vector<float> values(2 * 600);
    for (int chunk = 0; chunk < 2; ++chunk) {
      for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(chunk * 10000 + i);
      ASSERT_TRUE(writer->WriteChunk("p.w", {chunk, 0}, AsBytes(values)).ok());
    }
    ASSERT_TRUE(writer->Finish(nullptr).ok());
    std::unique_ptr<ItemReader> item = OpenOrFail(dir.path());
    ASSERT_NE(item, nullptr);
    const std::unique_ptr<ArrayReader> reader = item->Reader(*item->Find("p.w"));
    reader->Prefetch({0, 0}, {4, 600});
    reader->Prefetch({3, 0}, {2, 600});   // past the end
    reader->Prefetch({0}, {4});           // wrong rank
    reader->Prefetch({0, 0}, {0, 600});   // empty
    reader->Prefetch({-1, 0}, {1, 600});  // negative origin
    item->store().Prefetch("p.w/no-such-key");
    std::vector<float> row(600);
    ASSERT_TRUE(reader->ReadRegion({3, 0}, {1, 600}, row.data()).ok());
    EXPECT_EQ(row[0], 10000.0f + 600) << (ocdbt ? "OCDBT" : "files");
    EXPECT_EQ(row[599], 10000.0f + 1199);
  }
}

TEST(ResolveItemTest, SaysWhatItExpected) {
  ScratchDir dir;
  Result<ItemLocation> location = ResolveItem(dir.path());
  EXPECT_EQ(location.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(location.status().message(),
            "no _METADATA, items/_METADATA or numeric step directory in " + dir.path().string());
  location = ResolveItem(dir / "absent");
  EXPECT_EQ(location.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(location.status().message(), HasSubstr("no such directory"));
  WriteBytes(dir / "file", "x");
  location = ResolveItem(dir / "file");
  EXPECT_EQ(location.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(location.status().message(), HasSubstr("not a directory"));
  // A numeric directory that holds no item.
  fs::create_directories(dir / "4" / "nothing");
  location = ResolveItem(dir.path());
  EXPECT_EQ(location.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(location.status().message(), HasSubstr((dir / "4").string()));
}

}  // namespace
}  // namespace ckptbridge::orbax
