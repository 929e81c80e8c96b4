#include "host/formats/orbax/zarr.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zstd.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "host/base/checksum.h"
#include "host/base/numeric.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/orbax/kvstore.h"
#include "tests/formats/orbax/test_util.h"

namespace ckptbridge::orbax {
namespace {

using ::ckptbridge::orbax::testing::AsBytes;
using ::ckptbridge::orbax::testing::Extracted;
using ::ckptbridge::orbax::testing::FromBytes;
using ::ckptbridge::orbax::testing::LittleEndian32;
using ::ckptbridge::orbax::testing::LittleEndian64;
using ::ckptbridge::orbax::testing::ReadBytes;
using ::ckptbridge::orbax::testing::ValueOrFail;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr uint64_t kMissing = ~uint64_t{0};

// A zstd frame of `data`; `content_size` false leaves the size out of the
// header, as TensorStore's zarr v2 writer does.
std::string Zstd(std::string_view data, bool content_size = true, int level = 3) {
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, content_size ? 1 : 0);
  std::string out(ZSTD_compressBound(data.size()), '\0');
  const size_t n = ZSTD_compress2(cctx.get(), out.data(), out.size(), data.data(), data.size());
  EXPECT_FALSE(ZSTD_isError(n)) << ZSTD_getErrorName(n);
  out.resize(n);
  return out;
}

std::string Crc(std::string_view index) {
  return LittleEndian32(ComputeCrc32c(index.data(), index.size()));
}

std::vector<int32_t> ZeroToSeven() { return {0, 1, 2, 3, 4, 5, 6, 7}; }

// ---------------------------------------------------------------------------
// Real zarr v3 bytes written by TensorStore (orbax v1 fixture, array `a`:
// int32 [8] = 0..7, one shard `a/c/0`).

class RealZarr3Test : public ::testing::Test {
 protected:
  void SetUp() override {
    json_text_ = ReadBytes(Extracted("v1_a_zarr.json"));
    shard_ = ReadBytes(Extracted("v1_a_c_0.bin"));
    ASSERT_EQ(shard_.size(), 61u);
    metadata_ = ValueOrFail(ArrayMetadata::ParseZarr3(json_text_, "a/zarr.json"));
  }

  std::string json_text_;
  std::string shard_;
  ArrayMetadata metadata_;
};

TEST_F(RealZarr3Test, ParsesTensorStoreMetadata) {
  EXPECT_EQ(metadata_.format, ZarrFormat::kV3);
  EXPECT_EQ(metadata_.dtype, DType::kI32);
  EXPECT_EQ(metadata_.shape, Shape{8});
  EXPECT_EQ(metadata_.chunk_shape, Shape{8});
  EXPECT_EQ(metadata_.inner_chunk_shape, Shape{8});
  EXPECT_TRUE(metadata_.sharded);
  EXPECT_TRUE(metadata_.zstd);
  EXPECT_EQ(metadata_.zstd_level, 3);
  EXPECT_TRUE(metadata_.index_crc32c);
  EXPECT_TRUE(metadata_.index_at_end);
  EXPECT_TRUE(metadata_.v3_default_keys);
  EXPECT_EQ(metadata_.v3_separator, '/');
  EXPECT_EQ(metadata_.fill_value, json(0));
  EXPECT_EQ(metadata_.MetadataKey(), "zarr.json");
  EXPECT_EQ(metadata_.ChunkKey({0}), "c/0");
  EXPECT_EQ(metadata_.ChunkGrid(), std::vector<int64_t>{1});
  EXPECT_EQ(metadata_.ChunkBytes(), 32u);
}

TEST_F(RealZarr3Test, ForWriteReproducesTheFileByteForByte) {
  EXPECT_EQ(ArrayMetadata::ForWrite(DType::kI32, {8}, {8}).ToZarr3Json(), json_text_);
  EXPECT_EQ(metadata_.ToZarr3Json(), json_text_);
}

TEST_F(RealZarr3Test, DecodesTheRealShard) {
  Result<std::string> chunk = DecodeChunk(metadata_, shard_, "a/c/0");
  ASSERT_TRUE(chunk.ok()) << chunk.status().message();
  EXPECT_THAT(FromBytes<int32_t>(*chunk), ElementsAreArray(ZeroToSeven()));
}

TEST_F(RealZarr3Test, EncodedShardHasTheSameLayoutAndDecodesIdentically) {
  const std::string values = AsBytes(ZeroToSeven());
  Result<std::string> encoded = EncodeChunk(metadata_, values);
  ASSERT_TRUE(encoded.ok()) << encoded.status().message();
  // [zstd frame with content size][offset 0][nbytes][crc], like the real shard.
  ASSERT_GT(encoded->size(), 20u);
  const size_t frame = encoded->size() - 20;
  EXPECT_EQ(encoded->substr(0, 4), shard_.substr(0, 4));  // zstd magic
  EXPECT_EQ(ZSTD_getFrameContentSize(encoded->data(), frame), 32u);
  EXPECT_EQ(encoded->substr(frame, 16), LittleEndian64(0) + LittleEndian64(frame));
  EXPECT_EQ(encoded->substr(frame + 16), Crc(encoded->substr(frame, 16)));

  Result<std::string> decoded = DecodeChunk(metadata_, *encoded, "encoded");
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(*decoded, values);
}

// Not part of the contract (any valid shard will do), but worth knowing: for
// such a small chunk zstd stores a raw block, so our shard is TensorStore's
// to the byte. If a libzstd upgrade changes this, the layout test above
// still holds.
TEST_F(RealZarr3Test, EncodingMatchesTensorStoreBytes) {
  Result<std::string> encoded = EncodeChunk(metadata_, AsBytes(ZeroToSeven()));
  ASSERT_TRUE(encoded.ok()) << encoded.status().message();
  EXPECT_EQ(*encoded, shard_);
}

TEST_F(RealZarr3Test, CrcCatchesAFlippedIndexByte) {
  for (size_t i = shard_.size() - 20; i < shard_.size(); ++i) {
    std::string corrupt = shard_;
    corrupt[i] ^= 0x01;
    Result<std::string> chunk = DecodeChunk(metadata_, corrupt, "a/c/0");
    ASSERT_FALSE(chunk.ok()) << "byte " << i;
    EXPECT_EQ(chunk.status().code(), StatusCode::kDataLoss);
    EXPECT_THAT(chunk.status().message(), HasSubstr("a/c/0: shard index CRC-32C mismatch"));
    EXPECT_THAT(chunk.status().message(), HasSubstr("stored 0x"));
    EXPECT_THAT(chunk.status().message(), HasSubstr("computed 0x"));
  }
}

TEST_F(RealZarr3Test, TruncatedShardIsDataLoss) {
  Result<std::string> chunk = DecodeChunk(metadata_, shard_.substr(0, 19), "a/c/0");
  ASSERT_FALSE(chunk.ok());
  EXPECT_EQ(chunk.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(chunk.status().message(), "a/c/0: shard of 19 bytes is shorter than its 20-byte index");
  // Cutting the frame short keeps a valid index whose range no longer fits.
  chunk = DecodeChunk(metadata_, shard_.substr(10), "a/c/0");
  ASSERT_FALSE(chunk.ok());
  EXPECT_EQ(chunk.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(chunk.status().message(), HasSubstr("outside the shard's data"));
}

// ---------------------------------------------------------------------------
// Real zarr v2 bytes written by TensorStore (orbax v0 fixture, array `a`).

TEST(RealZarr2Test, ParsesAndDecodesAFrameWithoutContentSize) {
  const std::string zarray = ReadBytes(Extracted("v0_a.zarray"));
  const std::string value = ReadBytes(Extracted("v0_a_0.bin"));
  ArrayMetadata m = ValueOrFail(ArrayMetadata::ParseZarr2(zarray, "a/.zarray"));
  EXPECT_EQ(m.format, ZarrFormat::kV2);
  EXPECT_EQ(m.dtype, DType::kI32);
  EXPECT_EQ(m.shape, Shape{8});
  EXPECT_EQ(m.chunk_shape, Shape{8});
  EXPECT_EQ(m.inner_chunk_shape, Shape{8});
  EXPECT_TRUE(m.zstd);
  EXPECT_EQ(m.zstd_level, 1);
  EXPECT_TRUE(m.fill_value.is_null());
  EXPECT_EQ(m.v2_separator, '.');
  EXPECT_EQ(m.MetadataKey(), ".zarray");
  EXPECT_EQ(m.ChunkKey({0}), "0");

  // TensorStore's v2 frames carry no content size.
  ASSERT_EQ(ZSTD_getFrameContentSize(value.data(), value.size()), ZSTD_CONTENTSIZE_UNKNOWN);
  Result<std::string> chunk = DecodeChunk(m, value, "a/0");
  ASSERT_TRUE(chunk.ok()) << chunk.status().message();
  EXPECT_THAT(FromBytes<int32_t>(*chunk), ElementsAreArray(ZeroToSeven()));

  Result<std::string> encoded = EncodeChunk(m, *chunk);
  ASSERT_TRUE(encoded.ok()) << encoded.status().message();
  EXPECT_EQ(*DecodeChunk(m, *encoded, "re-encoded"), *chunk);
}

TEST(RealZarr2Test, FrameThatDecodesToTooManyBytesIsDataLoss) {
  ArrayMetadata m =
      ValueOrFail(ArrayMetadata::ParseZarr2(ReadBytes(Extracted("v0_a.zarray")), "x"));
  m.shape = {4};
  m.chunk_shape = m.inner_chunk_shape = {4};
  Result<std::string> chunk = DecodeChunk(m, ReadBytes(Extracted("v0_a_0.bin")), "a/0");
  ASSERT_FALSE(chunk.ok());
  EXPECT_EQ(chunk.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(chunk.status().message(), HasSubstr("a/0: zstd frame decodes to more than"));
  EXPECT_THAT(chunk.status().message(), HasSubstr("16 bytes"));
}

// A real 2-D chunked array (tunix fixture `w1.kernel.value`: f32 [2, 4],
// chunks [1, 2]), read through ArrayReader from the extracted files.
TEST(RealZarr2Test, ReadsTunixTwoDimensionalChunkedArray) {
  FileKvStore store(Extracted("tunix"));
  const std::string name = "w1.kernel.value";
  ArrayMetadata m =
      ValueOrFail(ArrayMetadata::ParseZarr2(*store.Read(name + "/.zarray"), store.Describe(name)));
  EXPECT_EQ(m.dtype, DType::kF32);
  EXPECT_EQ(m.shape, (Shape{2, 4}));
  EXPECT_EQ(m.chunk_shape, (Shape{1, 2}));
  EXPECT_EQ(m.ChunkGrid(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(m.ChunkKey({1, 0}), "1.0");

  ArrayReader reader(&store, name, m);
  const std::vector<uint32_t> expected = {0x3f41b90d, 0xbf2f8a12, 0xbf119f16, 0xbf6031d7,
                                          0xbf28f202, 0x3ee61151, 0x3f0cfe33, 0xbf45b47a};
  std::vector<uint32_t> all(8);
  ASSERT_TRUE(reader.ReadRegion({0, 0}, {2, 4}, all.data()).ok());
  EXPECT_EQ(all, expected);
  EXPECT_FLOAT_EQ(BitsToFloat(all[0]), 0.7567299f);

  // A box across all four chunks: rows 0-1, columns 1-2.
  std::vector<uint32_t> box(4);
  ASSERT_TRUE(reader.ReadRegion({0, 1}, {2, 2}, box.data()).ok());
  EXPECT_THAT(box, ElementsAre(expected[1], expected[2], expected[5], expected[6]));
}

// ---------------------------------------------------------------------------
// Metadata we write.

TEST(ForWriteTest, TensorStoreConventionsPerDType) {
  const std::string bf16 =
      ArrayMetadata::ForWrite(DType::kBF16, {4, 3, 5}, {4, 1, 5}).ToZarr3Json();
  EXPECT_EQ(bf16,
            "{\"chunk_grid\":{\"configuration\":{\"chunk_shape\":[4,1,5]},\"name\":\"regular\"},"
            "\"chunk_key_encoding\":{\"name\":\"default\"},\"codecs\":[{\"configuration\":{"
            "\"chunk_shape\":[4,1,5],\"codecs\":[{\"configuration\":{\"endian\":\"little\"},"
            "\"name\":\"bytes\"},{\"configuration\":{\"checksum\":false,\"level\":3},\"name\":"
            "\"zstd\"}],\"index_codecs\":[{\"configuration\":{\"endian\":\"little\"},\"name\":"
            "\"bytes\"},{\"name\":\"crc32c\"}]},\"name\":\"sharding_indexed\"}],\"data_type\":"
            "\"bfloat16\",\"fill_value\":0.0,\"node_type\":\"array\",\"shape\":[4,3,5],"
            "\"zarr_format\":3}");
  // 1-byte types: TensorStore drops the bytes codec's configuration.
  const std::string u8 = ArrayMetadata::ForWrite(DType::kU8, {3}, {3}).ToZarr3Json();
  EXPECT_THAT(u8, HasSubstr("\"codecs\":[{\"name\":\"bytes\"},{\"configuration\""));
  EXPECT_THAT(u8, HasSubstr("\"fill_value\":0,"));
  // ...but the uint64 index still names its endian.
  EXPECT_THAT(u8, HasSubstr("\"index_codecs\":[{\"configuration\":{\"endian\":\"little\"}"));
  EXPECT_THAT(ArrayMetadata::ForWrite(DType::kBool, {3}, {3}).ToZarr3Json(),
              HasSubstr("\"fill_value\":false,"));
  EXPECT_THAT(ArrayMetadata::ForWrite(DType::kF32, {3}, {3}).ToZarr3Json(),
              HasSubstr("\"data_type\":\"float32\",\"fill_value\":0.0,"));
  // A Python int leaf: rank 0.
  const ArrayMetadata scalar = ArrayMetadata::ForWrite(DType::kI64, {}, {});
  EXPECT_THAT(scalar.ToZarr3Json(), HasSubstr("\"chunk_shape\":[]"));
  EXPECT_THAT(scalar.ToZarr3Json(), HasSubstr("\"shape\":[],"));
  EXPECT_EQ(scalar.ChunkKey({}), "c");
  EXPECT_TRUE(scalar.ChunkGrid().empty());
  EXPECT_EQ(scalar.ChunkBytes(), 8u);
}

// zarr v2 as TensorStore writes it for Orbax: the fixtures' .zarray text
// and chunk bytes are reproduced exactly.
TEST(ForWriteZarr2Test, ReproducesTensorStoreBytes) {
  const ArrayMetadata a = ArrayMetadata::ForWriteZarr2(DType::kI32, {8}, {8});
  EXPECT_EQ(a.ToZarr2Json(), ReadBytes(Extracted("v0_a.zarray")));
  EXPECT_EQ(a.ToJson(), a.ToZarr2Json());
  EXPECT_EQ(a.MetadataKey(), ".zarray");
  EXPECT_EQ(ValueOrFail(EncodeChunk(a, AsBytes(ZeroToSeven()))),
            ReadBytes(Extracted("v0_a_0.bin")));

  FileKvStore tunix(Extracted("tunix"));
  const ArrayMetadata w = ArrayMetadata::ForWriteZarr2(DType::kF32, {2, 4}, {1, 2});
  EXPECT_EQ(w.ToZarr2Json(), *tunix.Read("w1.kernel.value/.zarray"));
  for (const char* key : {"0.0", "0.1", "1.0", "1.1"}) {
    const std::string stored = *tunix.Read(std::string("w1.kernel.value/") + key);
    const std::string chunk = ValueOrFail(DecodeChunk(w, stored, key));
    EXPECT_EQ(ValueOrFail(EncodeChunk(w, chunk)), stored) << key;
  }
}

TEST(ForWriteZarr2Test, ConventionsAndRoundTrip) {
  const ArrayMetadata bf16 = ArrayMetadata::ForWriteZarr2(DType::kBF16, {4, 3, 5}, {4, 1, 5});
  EXPECT_EQ(bf16.ToZarr2Json(),
            "{\"chunks\":[4,1,5],\"compressor\":{\"id\":\"zstd\",\"level\":1},"
            "\"dimension_separator\":\".\",\"dtype\":\"bfloat16\",\"fill_value\":null,"
            "\"filters\":null,\"order\":\"C\",\"shape\":[4,3,5],\"zarr_format\":2}");
  EXPECT_EQ(bf16.ChunkKey({0, 2, 0}), "0.2.0");
  const ArrayMetadata scalar = ArrayMetadata::ForWriteZarr2(DType::kI64, {}, {});
  EXPECT_THAT(scalar.ToZarr2Json(), HasSubstr("\"chunks\":[],"));
  EXPECT_EQ(scalar.ChunkKey({}), "0");
  for (DType dtype :
       {DType::kBF16, DType::kF32, DType::kF16, DType::kI64, DType::kU8, DType::kBool}) {
    const ArrayMetadata m = ArrayMetadata::ForWriteZarr2(dtype, {7, 0, 3}, {2, 1, 3});
    const std::string text = m.ToZarr2Json();
    ArrayMetadata parsed = ValueOrFail(ArrayMetadata::ParseZarr2(text, "x"), text);
    EXPECT_EQ(parsed.dtype, dtype);
    EXPECT_EQ(parsed.shape, m.shape);
    EXPECT_EQ(parsed.chunk_shape, m.chunk_shape);
    EXPECT_EQ(parsed.zstd_level, 1);
    EXPECT_TRUE(parsed.fill_value.is_null());
    EXPECT_EQ(parsed.ToZarr2Json(), text);
  }
  // Frames without a content size, as TensorStore's v2 writer makes them.
  const std::string chunk(4 * 1 * 5 * 2, '\x11');
  const std::string frame = ValueOrFail(EncodeChunk(bf16, chunk));
  EXPECT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), ZSTD_CONTENTSIZE_UNKNOWN);
  EXPECT_EQ(ValueOrFail(DecodeChunk(bf16, frame, "x")), chunk);
}

TEST(ForWriteTest, ParseOfToZarr3JsonRoundTrips) {
  for (DType dtype : {DType::kBF16, DType::kF32, DType::kF16, DType::kI64, DType::kU8, DType::kBool,
                      DType::kF8E4M3}) {
    const ArrayMetadata m = ArrayMetadata::ForWrite(dtype, {7, 0, 3}, {2, 1, 3});
    const std::string text = m.ToZarr3Json();
    ArrayMetadata parsed = ValueOrFail(ArrayMetadata::ParseZarr3(text, "x"), text);
    EXPECT_EQ(parsed.dtype, dtype);
    EXPECT_EQ(parsed.shape, m.shape);
    EXPECT_EQ(parsed.chunk_shape, m.chunk_shape);
    EXPECT_EQ(parsed.inner_chunk_shape, m.inner_chunk_shape);
    EXPECT_EQ(parsed.fill_value, m.fill_value);
    EXPECT_EQ(parsed.ToZarr3Json(), text);
  }
}

TEST(ChunkKeyTest, EncodingsAndGrids) {
  ArrayMetadata m = ArrayMetadata::ForWrite(DType::kF32, {5, 0, 7}, {2, 3, 7});
  EXPECT_EQ(m.ChunkKey({0, 1, 2}), "c/0/1/2");
  EXPECT_EQ(m.ChunkGrid(), (std::vector<int64_t>{3, 0, 1}));
  EXPECT_EQ(m.ChunkBytes(), 2u * 3 * 7 * 4);
  m.v3_separator = '.';
  EXPECT_EQ(m.ChunkKey({0, 1, 2}), "c.0.1.2");
  m.v3_default_keys = false;
  EXPECT_EQ(m.ChunkKey({0, 1, 2}), "0.1.2");
  EXPECT_EQ(m.ChunkKey({}), "0");
  m.format = ZarrFormat::kV2;
  m.v2_separator = '/';
  EXPECT_EQ(m.ChunkKey({3, 4}), "3/4");
  m.v2_separator = '.';
  EXPECT_EQ(m.ChunkKey({3, 4}), "3.4");
  EXPECT_EQ(m.ChunkKey({}), "0");
}

// ---------------------------------------------------------------------------
// General sharding (older Orbax wrote several inner chunks per shard).

class ShardingTest : public ::testing::Test {
 protected:
  // f32 [4, 4] in one shard of 2x2 inner chunks of [2, 2].
  void SetUp() override {
    m_ = ArrayMetadata::ForWrite(DType::kF32, {4, 4}, {4, 4});
    m_.inner_chunk_shape = {2, 2};
    for (int i = 0; i < 16; ++i) values_.push_back(static_cast<float>(i) + 0.5f);
  }
  // The C-order bytes of inner chunk (r, c).
  std::string Inner(int r, int c) const {
    std::vector<float> out;
    for (int i = 0; i < 2; ++i) {
      for (int j = 0; j < 2; ++j) out.push_back(values_[(2 * r + i) * 4 + 2 * c + j]);
    }
    return AsBytes(out);
  }

  ArrayMetadata m_;
  std::vector<float> values_;
};

TEST_F(ShardingTest, DecodesHandBuiltShardWithAMissingInnerChunk) {
  // Inner chunks stored out of order, (1, 0) missing, (1, 1) without a
  // content size in its frame.
  const std::string c00 = Zstd(Inner(0, 0));
  const std::string c01 = Zstd(Inner(0, 1));
  const std::string c11 = Zstd(Inner(1, 1), /*content_size=*/false);
  const std::string data = c11 + c01 + c00;
  std::string index = LittleEndian64(c11.size() + c01.size()) + LittleEndian64(c00.size()) +
                      LittleEndian64(c11.size()) + LittleEndian64(c01.size()) +
                      LittleEndian64(kMissing) + LittleEndian64(kMissing) + LittleEndian64(0) +
                      LittleEndian64(c11.size());
  const std::string shard = data + index + Crc(index);

  m_.fill_value = "NaN";
  Result<std::string> decoded = DecodeChunk(m_, shard, "w/c/0/0");
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  const std::vector<float> out = FromBytes<float>(*decoded);
  ASSERT_EQ(out.size(), 16u);
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) {
      const float got = out[r * 4 + c];
      if (r >= 2 && c < 2) {
        EXPECT_TRUE(std::isnan(got)) << r << "," << c;
      } else {
        EXPECT_EQ(got, values_[r * 4 + c]) << r << "," << c;
      }
    }
  }

  // With fill value 0 (what Orbax writes) the hole reads as zeros.
  m_.fill_value = 0.0;
  decoded = DecodeChunk(m_, shard, "w/c/0/0");
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(FromBytes<float>(*decoded)[8], 0.0f);
  EXPECT_EQ(FromBytes<float>(*decoded)[13], 0.0f);
  EXPECT_EQ(FromBytes<float>(*decoded)[15], values_[15]);
}

TEST_F(ShardingTest, EncodeDecodeRoundTripForEveryLayout) {
  for (bool zstd : {true, false}) {
    for (bool at_end : {true, false}) {
      for (bool crc : {true, false}) {
        ArrayMetadata m = m_;
        m.zstd = zstd;
        m.index_at_end = at_end;
        m.index_crc32c = crc;
        const std::string bytes = AsBytes(values_);
        Result<std::string> encoded = EncodeChunk(m, bytes);
        ASSERT_TRUE(encoded.ok()) << encoded.status().message();
        if (!zstd) {
          EXPECT_EQ(encoded->size(), 64u + 4 * 16 + (crc ? 4 : 0));
        }
        Result<std::string> decoded = DecodeChunk(m, *encoded, "x");
        ASSERT_TRUE(decoded.ok()) << decoded.status().message();
        EXPECT_EQ(*decoded, bytes) << zstd << at_end << crc;
        // The metadata text says the same and parses back.
        ArrayMetadata parsed = ValueOrFail(ArrayMetadata::ParseZarr3(m.ToZarr3Json(), "x"));
        EXPECT_EQ(parsed.zstd, zstd);
        EXPECT_EQ(parsed.index_at_end, at_end);
        EXPECT_EQ(parsed.index_crc32c, crc);
        EXPECT_EQ(parsed.inner_chunk_shape, (Shape{2, 2}));
        EXPECT_EQ(*DecodeChunk(parsed, *encoded, "x"), bytes);
      }
    }
  }
}

TEST_F(ShardingTest, IndexStartLayoutIsReadFromMetadata) {
  m_.index_at_end = false;
  EXPECT_THAT(m_.ToZarr3Json(), HasSubstr("\"index_location\":\"start\""));
}

TEST_F(ShardingTest, OffsetOutOfRangeIsDataLoss) {
  const std::string c = Zstd(Inner(0, 0));
  std::string index;
  for (int i = 0; i < 4; ++i) index += LittleEndian64(0) + LittleEndian64(c.size());
  // Entry 2 points past the data.
  index.replace(32, 8, LittleEndian64(100));
  Result<std::string> decoded = DecodeChunk(m_, c + index + Crc(index), "w/c/0/0");
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(decoded.status().message(), HasSubstr("w/c/0/0: inner chunk 2: bytes [100, +"));
  EXPECT_THAT(decoded.status().message(),
              HasSubstr("outside the shard's data [0, " + std::to_string(c.size()) + ")"));
  // An offset + nbytes that overflows is caught too.
  index.replace(32, 16, LittleEndian64(1) + LittleEndian64(kMissing - 1));
  decoded = DecodeChunk(m_, c + index + Crc(index), "w/c/0/0");
  EXPECT_EQ(decoded.status().code(), StatusCode::kDataLoss);
}

TEST_F(ShardingTest, WrongDecompressedSizeIsDataLoss) {
  // Every entry points at a frame of 8 floats: twice the inner chunk.
  const std::string big = Zstd(Inner(0, 0) + Inner(0, 1));
  std::string index;
  for (int i = 0; i < 4; ++i) index += LittleEndian64(0) + LittleEndian64(big.size());
  Result<std::string> decoded = DecodeChunk(m_, big + index + Crc(index), "w/c/0/0");
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(decoded.status().message(),
            "w/c/0/0: inner chunk 0: zstd frame holds 32 bytes, expected 16");
  // Garbage instead of a frame.
  const std::string junk = "not a zstd frame";
  index.clear();
  for (int i = 0; i < 4; ++i) index += LittleEndian64(0) + LittleEndian64(junk.size());
  decoded = DecodeChunk(m_, junk + index + Crc(index), "w/c/0/0");
  EXPECT_EQ(decoded.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(decoded.status().message(), HasSubstr("not a zstd frame"));
}

TEST(PlainZarr3Test, NonShardedCodecsDecodeOneFramePerChunk) {
  const std::string text =
      R"({"zarr_format":3,"node_type":"array","shape":[3],"data_type":"int64",)"
      R"("chunk_grid":{"name":"regular","configuration":{"chunk_shape":[2]}},)"
      R"("chunk_key_encoding":{"name":"v2","configuration":{"separator":"."}},)"
      R"("fill_value":-1,"codecs":[{"name":"bytes","configuration":{"endian":"little"}},)"
      R"({"name":"zstd","configuration":{"level":5,"checksum":true}}]})";
  ArrayMetadata m = ValueOrFail(ArrayMetadata::ParseZarr3(text, "x/zarr.json"));
  EXPECT_FALSE(m.sharded);
  EXPECT_TRUE(m.zstd);
  EXPECT_EQ(m.zstd_level, 5);
  EXPECT_FALSE(m.v3_default_keys);
  EXPECT_EQ(m.ChunkKey({1}), "1");
  const std::vector<int64_t> values = {-5, 9};
  Result<std::string> encoded = EncodeChunk(m, AsBytes(values));
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(encoded->substr(0, 4), "\x28\xb5\x2f\xfd");
  EXPECT_EQ(FromBytes<int64_t>(*DecodeChunk(m, *encoded, "x")), values);
  // A missing chunk reads as -1.
  EXPECT_EQ(FromBytes<int64_t>(*FillValueChunk(m, "x")), (std::vector<int64_t>{-1, -1}));
  ArrayMetadata reparsed = ValueOrFail(ArrayMetadata::ParseZarr3(m.ToZarr3Json(), "again"));
  EXPECT_FALSE(reparsed.sharded);
  EXPECT_EQ(reparsed.ChunkKey({1}), "1");
}

// ---------------------------------------------------------------------------
// Fill values.

template <typename T>
std::vector<T> Fill(DType dtype, const json& fill_value) {
  ArrayMetadata m = ArrayMetadata::ForWrite(dtype, {2}, {2});
  m.fill_value = fill_value;
  Result<std::string> chunk = FillValueChunk(m, "x");
  EXPECT_TRUE(chunk.ok()) << fill_value.dump() << ": " << chunk.status().message();
  return chunk.ok() ? FromBytes<T>(*chunk) : std::vector<T>();
}

TEST(FillValueTest, ConvertsEveryJsonForm) {
  EXPECT_EQ(Fill<float>(DType::kF32, 1.5), (std::vector<float>{1.5f, 1.5f}));
  EXPECT_EQ(Fill<float>(DType::kF32, "Infinity")[0], std::numeric_limits<float>::infinity());
  EXPECT_EQ(Fill<float>(DType::kF32, "-Infinity")[1], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(Fill<float>(DType::kF32, "NaN")[0]));
  EXPECT_EQ(Fill<uint32_t>(DType::kF32, "0x7fc00001")[0], 0x7fc00001u);
  EXPECT_EQ(Fill<uint16_t>(DType::kBF16, -2.0)[0], 0xc000u);
  EXPECT_EQ(Fill<double>(DType::kF64, 0.25)[1], 0.25);
  EXPECT_EQ(Fill<int32_t>(DType::kI32, -7), (std::vector<int32_t>{-7, -7}));
  EXPECT_EQ(Fill<uint8_t>(DType::kU8, 255)[0], 255);
  EXPECT_EQ(Fill<int64_t>(DType::kI64, 3.0)[0], 3);
  EXPECT_EQ(Fill<uint8_t>(DType::kBool, true)[0], 1);
  EXPECT_EQ(Fill<int16_t>(DType::kI16, nullptr)[0], 0);
}

TEST(FillValueTest, RefusesValuesThatDoNotFit) {
  for (const auto& [dtype, fill] :
       std::vector<std::pair<DType, json>>{{DType::kU8, -1},
                                           {DType::kI8, 300},
                                           {DType::kI32, 1.5},
                                           {DType::kI32, "NaN"},
                                           {DType::kF32, "0x7fc0"},
                                           {DType::kF32, "nan"},
                                           {DType::kF32, json::array()}}) {
    ArrayMetadata m = ArrayMetadata::ForWrite(dtype, {2}, {2});
    m.fill_value = fill;
    const std::string text = m.ToZarr3Json();
    Result<ArrayMetadata> parsed = ArrayMetadata::ParseZarr3(text, "x/zarr.json");
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(parsed.status().message(), HasSubstr("x/zarr.json: fill_value " + fill.dump()));
  }
}

// ---------------------------------------------------------------------------
// Metadata we refuse.

// The v1 fixture's zarr.json with one edit.
std::string EditedZarr3(const std::function<void(json&)>& edit) {
  json j = json::parse(ReadBytes(Extracted("v1_a_zarr.json")));
  edit(j);
  return j.dump();
}

struct Refusal {
  std::string text;
  StatusCode code;
  std::string message;
};

void ExpectRefusals3(const std::vector<Refusal>& refusals) {
  for (const Refusal& r : refusals) {
    Result<ArrayMetadata> m = ArrayMetadata::ParseZarr3(r.text, "w/zarr.json");
    ASSERT_FALSE(m.ok()) << r.text;
    EXPECT_EQ(m.status().code(), r.code) << r.text << "\n" << m.status().message();
    EXPECT_THAT(m.status().message(), HasSubstr(r.message)) << r.text;
    EXPECT_EQ(m.status().message().rfind("w/zarr.json: ", 0), 0u) << m.status().message();
  }
}

TEST(ParseZarr3Test, RefusesWhatItCannotDecode) {
  json& (*inner)(json&) = [](json& j) -> json& { return j["codecs"][0]["configuration"]; };
  ExpectRefusals3({
      {"{\"zarr_format\": 3,", StatusCode::kInvalidArgument, "invalid JSON at byte"},
      {"[]", StatusCode::kInvalidArgument, "not a JSON object"},
      {EditedZarr3([](json& j) { j["zarr_format"] = 2; }), StatusCode::kInvalidArgument,
       "zarr_format is 2, expected 3"},
      {EditedZarr3([](json& j) { j["node_type"] = "group"; }), StatusCode::kInvalidArgument,
       "node_type is \"group\", expected \"array\""},
      {EditedZarr3([](json& j) { j.erase("fill_value"); }), StatusCode::kInvalidArgument,
       "missing fill_value"},
      {EditedZarr3([](json& j) { j["data_type"] = "complex64"; }), StatusCode::kUnsupported,
       "data_type \"complex64\" is not supported"},
      {EditedZarr3([](json& j) {
         j["shape"] = {8, 1};
       }),
       StatusCode::kInvalidArgument, "differ in rank"},
      {EditedZarr3([](json& j) { j["shape"] = {-1}; }), StatusCode::kInvalidArgument,
       "shape [-1] must hold non-negative integers"},
      {EditedZarr3([](json& j) { j["chunk_grid"]["name"] = "rectilinear"; }),
       StatusCode::kUnsupported, "chunk_grid \"rectilinear\" is not supported"},
      {EditedZarr3([](json& j) { j["chunk_key_encoding"]["name"] = "custom"; }),
       StatusCode::kUnsupported, "chunk_key_encoding \"custom\" is not supported"},
      {EditedZarr3([&](json& j) { inner(j)["codecs"][0]["configuration"]["endian"] = "big"; }),
       StatusCode::kUnsupported, "big-endian \"bytes\" codec is not supported"},
      {EditedZarr3([&](json& j) { inner(j)["codecs"][0].erase("configuration"); }),
       StatusCode::kInvalidArgument, "\"bytes\" codec has no \"endian\" for data type int32"},
      {EditedZarr3([&](json& j) { inner(j)["codecs"][1]["name"] = "gzip"; }),
       StatusCode::kUnsupported, "codec \"gzip\" inside sharding_indexed is not supported"},
      {EditedZarr3([&](json& j) {
         inner(j)["codecs"].insert(
             inner(j)["codecs"].begin(),
             json::object({{"name", "transpose"}, {"configuration", {{"order", {0}}}}}));
       }),
       StatusCode::kUnsupported, "codec \"transpose\" inside sharding_indexed is not supported"},
      {EditedZarr3([](json& j) {
         j["codecs"] = {{{"name", "transpose"}, {"configuration", {{"order", {0}}}}},
                        {{"name", "bytes"}, {"configuration", {{"endian", "little"}}}}};
       }),
       StatusCode::kUnsupported, "codec \"transpose\" is not supported"},
      {EditedZarr3([](json& j) {
         j["codecs"] = {{{"name", "bytes"}, {"configuration", {{"endian", "little"}}}},
                        {{"name", "blosc"}, {"configuration", json::object()}}};
       }),
       StatusCode::kUnsupported, "codec \"blosc\" is not supported"},
      {EditedZarr3([](json& j) {
         j["codecs"].push_back({{"name", "crc32c"}});
       }),
       StatusCode::kUnsupported, "codec \"crc32c\" after sharding_indexed is not supported"},
      {EditedZarr3([&](json& j) { inner(j)["chunk_shape"] = {3}; }), StatusCode::kInvalidArgument,
       "chunk_shape [3] does not divide the shard shape [8]"},
      {EditedZarr3([&](json& j) { inner(j)["index_location"] = "middle"; }),
       StatusCode::kInvalidArgument, "index_location \"middle\""},
      {EditedZarr3([&](json& j) { inner(j)["index_codecs"][1]["name"] = "md5"; }),
       StatusCode::kUnsupported, "codec \"md5\" in index_codecs is not supported"},
      {EditedZarr3([&](json& j) { inner(j)["codecs"][1]["configuration"]["level"] = 99; }),
       StatusCode::kInvalidArgument, "zstd level 99"},
      {EditedZarr3([](json& j) {
         j["storage_transformers"] = {{{"name", "x"}}};
       }),
       StatusCode::kUnsupported, "storage_transformers are not supported"},
  });
}

TEST(ParseZarr3Test, AcceptsVariantsOtherWritersUse) {
  // A 1-byte type with an explicit endian, index at the start, "." keys.
  const std::string text = EditedZarr3([](json& j) {
    j["data_type"] = "uint8";
    j["codecs"][0]["configuration"]["index_location"] = "start";
    j["chunk_key_encoding"] = {{"name", "default"}, {"configuration", {{"separator", "."}}}};
    j["attributes"] = {{"anything", 1}};
    j["dimension_names"] = {"x"};
  });
  ArrayMetadata m = ValueOrFail(ArrayMetadata::ParseZarr3(text, "x"));
  EXPECT_EQ(m.dtype, DType::kU8);
  EXPECT_FALSE(m.index_at_end);
  EXPECT_EQ(m.ChunkKey({2}), "c.2");
  EXPECT_THAT(m.ToZarr3Json(), HasSubstr("{\"configuration\":{\"separator\":\".\"},\"name\":"
                                         "\"default\"}"));
}

TEST(ParseZarr2Test, RefusesWhatItCannotDecode) {
  auto edited = [](const std::function<void(json&)>& edit) {
    json j = json::parse(ReadBytes(Extracted("v0_a.zarray")));
    edit(j);
    return j.dump();
  };
  const std::vector<Refusal> refusals = {
      {edited([](json& j) { j["zarr_format"] = 3; }), StatusCode::kInvalidArgument,
       "zarr_format is 3, expected 2"},
      {edited([](json& j) {
         j["compressor"] = {{"id", "blosc"}, {"cname", "lz4"}};
       }),
       StatusCode::kUnsupported, "compressor \"blosc\" is not supported"},
      {edited([](json& j) { j["order"] = "F"; }), StatusCode::kUnsupported,
       "order \"F\" is not supported"},
      {edited([](json& j) {
         j["filters"] = {{{"id", "delta"}}};
       }),
       StatusCode::kUnsupported, "filters [{\"id\":\"delta\"}] are not supported"},
      {edited([](json& j) { j["dtype"] = ">i4"; }), StatusCode::kUnsupported,
       "dtype \">i4\" is not supported"},
      {edited([](json& j) { j["dimension_separator"] = "-"; }), StatusCode::kInvalidArgument,
       "dimension_separator \"-\""},
      {edited([](json& j) { j["chunks"] = {0}; }), StatusCode::kInvalidArgument,
       "chunks [0] must hold positive integers"},
      {edited([](json& j) { j.erase("compressor"); }), StatusCode::kInvalidArgument,
       "missing compressor"},
  };
  for (const Refusal& r : refusals) {
    Result<ArrayMetadata> m = ArrayMetadata::ParseZarr2(r.text, "w/.zarray");
    ASSERT_FALSE(m.ok()) << r.text;
    EXPECT_EQ(m.status().code(), r.code) << r.text << "\n" << m.status().message();
    EXPECT_THAT(m.status().message(), HasSubstr("w/.zarray: " + r.message)) << r.text;
  }
}

TEST(ParseZarr2Test, UncompressedAndSlashSeparated) {
  const std::string text =
      R"({"chunks":[2,2],"compressor":null,"dimension_separator":"/","dtype":"bfloat16",)"
      R"("fill_value":"NaN","filters":null,"order":"C","shape":[3,3],"zarr_format":2})";
  ArrayMetadata m = ValueOrFail(ArrayMetadata::ParseZarr2(text, "x"));
  EXPECT_EQ(m.dtype, DType::kBF16);
  EXPECT_FALSE(m.zstd);
  EXPECT_EQ(m.ChunkKey({1, 0}), "1/0");
  const std::vector<uint16_t> values = {1, 2, 3, 4};
  EXPECT_EQ(*EncodeChunk(m, AsBytes(values)), AsBytes(values));
  EXPECT_EQ(FromBytes<uint16_t>(*DecodeChunk(m, AsBytes(values), "x")), values);
  Result<std::string> short_value = DecodeChunk(m, "abc", "x/1/0");
  EXPECT_EQ(short_value.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(short_value.status().message(), "x/1/0: 3 bytes, expected 8");
}

TEST(EncodeChunkTest, RefusesAChunkOfTheWrongSize) {
  const ArrayMetadata m = ArrayMetadata::ForWrite(DType::kBF16, {4, 3}, {4, 1});
  Result<std::string> encoded = EncodeChunk(m, std::string(7, '\0'));
  ASSERT_FALSE(encoded.ok());
  EXPECT_EQ(encoded.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(encoded.status().message(),
            "chunk of 7 bytes, expected 8 for chunk shape [4, 1] of bfloat16");
}

}  // namespace
}  // namespace ckptbridge::orbax
