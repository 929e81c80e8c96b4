// host/formats/orbax/ocdbt_format.h - the bytes of an OCDBT database
// (TensorStore's "optionally-cooperative distributed B+tree"), which Orbax
// uses to keep all keys of an item in a few files.
//
// A database directory holds `manifest.ocdbt` and data files `d/<32 hex>`.
// The manifest names the B+tree root of the latest version; B+tree nodes
// and out-of-line values live in the data files at (file, offset, length).
// This header encodes and decodes each structure; ocdbt.h does the I/O.
// Layouts: shared/docs/orbax-format.md §4 and TensorStore's
// kvstore/ocdbt/format/*.
//
// Every structure except a value sits in an envelope:
//
//   magic (u32 big endian) | total length (u64 LE) | version varint (0) |
//   compression varint (0 raw, 1 zstd) | body (raw or one zstd frame) |
//   CRC-32C of everything before it (u32 LE)
//
// Decoders are written for hostile input: every count, length and offset is
// checked before use, nothing is allocated from an unchecked size, and any
// violation is a DataLoss error that starts with the caller's `label` (the
// file, and where in it), then says which field is wrong and both sides of
// the mismatch. Encoders produce exactly TensorStore's bytes for the same
// structure, so a decoded body re-encodes to itself.
#ifndef CKPTBRIDGE_HOST_FORMATS_ORBAX_OCDBT_FORMAT_H_
#define CKPTBRIDGE_HOST_FORMATS_ORBAX_OCDBT_FORMAT_H_

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "host/base/status.h"

namespace ckptbridge::orbax::ocdbt {

inline constexpr uint32_t kManifestMagic = 0x0cdb3a2a;
inline constexpr uint32_t kBtreeNodeMagic = 0x0cdb20de;
inline constexpr uint32_t kVersionTreeNodeMagic = 0x0cdb1234;

inline constexpr size_t kMaxKeyLength = 65535;
inline constexpr size_t kMaxPathLength = 65535;
inline constexpr uint64_t kMaxNodeArity = uint64_t{1} << 20;
inline constexpr uint64_t kMaxInlineValueLength = uint64_t{1} << 20;
// The most key bytes (full keys, prefixes included) one decoded B+tree node
// may hold. TensorStore keeps a node's estimated decoded size, keys included,
// near max_decoded_node_bytes (Orbax: 100 MB); shared key prefixes make more
// a decompression bomb.
inline constexpr uint64_t kMaxNodeKeyBytes = uint64_t{256} << 20;
inline constexpr int kMinZstdLevel = -131072;
inline constexpr int kMaxZstdLevel = 22;

enum class ManifestKind : uint8_t {
  kSingle = 0,    // versions live in manifest.ocdbt itself (what Orbax writes)
  kNumbered = 1,  // manifest.ocdbt holds the config only; versions in manifest.<16 hex>
};

// The database configuration, stored at the start of every manifest.
struct Config {
  std::array<uint8_t, 16> uuid{};
  ManifestKind manifest_kind = ManifestKind::kSingle;
  uint32_t max_inline_value_bytes = 1024;
  uint32_t max_decoded_node_bytes = 100000000;
  uint8_t version_tree_arity_log2 = 4;
  bool zstd = true;        // compression of manifests and nodes
  int32_t zstd_level = 0;  // 0: libzstd's default (3)

  // What Orbax asks TensorStore for (tensorstore_utils.py), with a random
  // uuid: single manifest, 1024-byte inline limit, 100000000-byte nodes,
  // arity 16, zstd level 0.
  static Config ForOrbax();

  friend bool operator==(const Config&, const Config&) = default;
};

// A data file: `base_path` + `relative_path`, relative to the database
// directory, except that files named inside a node read through a file with
// base path B are relative to B (the "transitive path", see ocdbt.h).
struct DataFileId {
  std::string base_path;
  std::string relative_path;

  std::string FullPath() const { return base_path + relative_path; }
  friend auto operator<=>(const DataFileId&, const DataFileId&) = default;
};

// `length` bytes at `offset` of `file`. The "missing" reference (offset and
// length 2^64-1) marks the root of an empty tree.
struct DataRef {
  DataFileId file;
  uint64_t offset = 0;
  uint64_t length = 0;

  static DataRef Missing();
  bool IsMissing() const;
  friend bool operator==(const DataRef&, const DataRef&) = default;
};

// Totals over a subtree, stored with every reference to a B+tree node.
struct Statistics {
  uint64_t num_keys = 0;
  uint64_t num_tree_bytes = 0;            // encoded sizes of all nodes
  uint64_t num_indirect_value_bytes = 0;  // lengths of all out-of-line values

  Statistics& operator+=(const Statistics& other);
  friend bool operator==(const Statistics&, const Statistics&) = default;
};

// One version ("generation") of the tree, as stored inline in a manifest or
// in a version-tree leaf.
struct BtreeGeneration {
  uint64_t generation = 0;  // 1, 2, ...
  uint8_t root_height = 0;  // 0: the root is a leaf
  DataRef root;
  Statistics statistics;
  uint64_t commit_time = 0;  // nanoseconds since the Unix epoch

  friend bool operator==(const BtreeGeneration&, const BtreeGeneration&) = default;
};

// A reference to a version-tree node (older generations).
struct VersionNodeRef {
  uint64_t generation = 0;  // the latest generation below it
  DataRef location;
  uint64_t num_generations = 0;
  uint64_t commit_time = 0;  // the earliest commit below it
  uint8_t height = 0;        // stored only in a manifest's list

  friend bool operator==(const VersionNodeRef&, const VersionNodeRef&) = default;
};

struct Manifest {
  Config config;
  // Empty for a numbered-kind manifest.ocdbt (config only); otherwise at
  // least one, generations increasing, the last one is the current tree.
  std::vector<BtreeGeneration> versions;
  std::vector<VersionNodeRef> version_nodes;  // heights strictly decreasing

  friend bool operator==(const Manifest&, const Manifest&) = default;
};

// A version-tree node: leaf entries (height 0) or references to children.
struct VersionTreeNode {
  uint8_t arity_log2 = 4;
  uint8_t height = 0;
  std::vector<BtreeGeneration> leaves;
  std::vector<VersionNodeRef> children;  // `height` is height - 1 for each
};

// A B+tree leaf entry: the key (relative to the node's implicit prefix) and
// either the value itself or where it is.
struct LeafEntry {
  std::string key;
  bool out_of_line = false;
  std::string value;  // inline only
  DataRef ref;        // out-of-line only

  uint64_t value_size() const { return out_of_line ? ref.length : value.size(); }
  friend bool operator==(const LeafEntry&, const LeafEntry&) = default;
};

// A B+tree interior entry. `key` (relative to the node's implicit prefix P)
// is the inclusive lower bound of the child's keys; the child's implicit
// prefix is P + key[0, subtree_common_prefix_length), and the child stores
// its keys without it.
struct InteriorEntry {
  std::string key;
  uint32_t subtree_common_prefix_length = 0;
  DataRef child;
  Statistics statistics;

  friend bool operator==(const InteriorEntry&, const InteriorEntry&) = default;
};

// A decoded B+tree node, keys as stored (relative to its implicit prefix).
struct BtreeNode {
  uint8_t height = 0;                   // 0: leaf
  std::vector<LeafEntry> leaves;        // height 0
  std::vector<InteriorEntry> children;  // height > 0

  friend bool operator==(const BtreeNode&, const BtreeNode&) = default;
};

// ---------------------------------------------------------------------------
// Envelope

// Wraps `body` in the envelope with `magic`, compressing it with `config`'s
// compression (one zstd frame that records its size, as TensorStore writes).
Result<std::string> EncodeEnvelope(uint32_t magic, std::string_view body, const Config& config);

// Checks the envelope of `encoded` (magic, total length, version 0,
// compression 0 or 1, CRC-32C) and returns the body, decompressed. A body
// that would decode to more than `max_body_bytes` is DataLoss (not an
// allocation). Errors start with `label`.
Result<std::string> DecodeEnvelope(std::string_view encoded, uint32_t magic,
                                   uint64_t max_body_bytes, std::string_view label);

// ---------------------------------------------------------------------------
// Bodies (inside the envelope). Encoders fail only for values the format
// cannot hold (a key over 65535 bytes, an empty node, ...), with Internal or
// InvalidArgument; decoders fail with DataLoss naming `label` and the field.

Result<std::string> EncodeManifestBody(const Manifest& manifest);
Result<Manifest> DecodeManifestBody(std::string_view body, std::string_view label);

Result<std::string> EncodeBtreeNodeBody(const BtreeNode& node);
Result<BtreeNode> DecodeBtreeNodeBody(std::string_view body, std::string_view label);

Result<VersionTreeNode> DecodeVersionTreeNodeBody(std::string_view body, std::string_view label);

// The file name of numbered manifest `generation`: "manifest.%016x".
std::string NumberedManifestName(uint64_t generation);

// ---------------------------------------------------------------------------
// Building a B+tree the way TensorStore does (btree_node_encoder.cc).

// TensorStore's estimate of a leaf entry's decoded size, which decides where
// nodes split: 16 + key + (inline value size, or 16 + data file path).
uint64_t EstimateLeafEntrySize(const LeafEntry& entry);
// The same for an interior entry: 56 + key + child data file path.
uint64_t EstimateInteriorEntrySize(const InteriorEntry& entry);

// An encoded node and what its parent needs to point at it.
struct EncodedNode {
  std::string encoded;                  // the enveloped node
  std::string inclusive_min_key;        // full key of the first entry
  uint32_t excluded_prefix_length = 0;  // the node's implicit prefix length
  Statistics statistics;                // including its own encoded size
};

// Splits entries with full keys (sorted, unique) into nodes of height
// `height` exactly as TensorStore's BtreeNodeEncoder::Finalize does: sizes
// estimated as above, each node at most `config.max_decoded_node_bytes`
// unless a single entry (leaves) or two (interior nodes) exceed it. When
// everything fits one node and `may_be_root`, that node is the root (no
// excluded prefix); otherwise each node drops the prefix its keys share
// (for interior nodes, at most the smallest subtree_common_prefix_length).
// Interior entries' keys are full keys and their subtree_common_prefix_length
// counts from the start of the full key.
Result<std::vector<EncodedNode>> EncodeLeafNodes(const Config& config,
                                                 const std::vector<LeafEntry>& entries,
                                                 bool may_be_root);
Result<std::vector<EncodedNode>> EncodeInteriorNodes(const Config& config, uint8_t height,
                                                     const std::vector<InteriorEntry>& entries,
                                                     bool may_be_root);

}  // namespace ckptbridge::orbax::ocdbt

#endif  // CKPTBRIDGE_HOST_FORMATS_ORBAX_OCDBT_FORMAT_H_
