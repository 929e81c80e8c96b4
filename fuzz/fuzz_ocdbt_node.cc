// fuzz/fuzz_ocdbt_node.cc - OCDBT B+tree nodes and version-tree nodes (from
// the `d/<hex>` data files) through ocdbt::DecodeEnvelope,
// DecodeBtreeNodeBody and DecodeVersionTreeNodeBody.
//
// The first byte picks the structure (even: B+tree node, odd: version-tree
// node) and, divided by two, the input mode of ocdbt_fuzz_util.h. Checked on
// success: a B+tree node has 1..2^20 strictly increasing keys, inline values
// within the inline limit, and re-encodes to a body that decodes to the same
// node.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/ocdbt_fuzz_util.h"

namespace {

namespace ocdbt = ckptbridge::orbax::ocdbt;
using ckptbridge::fuzz::CheckRefusal;
using ckptbridge::fuzz::OcdbtMode;

constexpr std::string_view kLabel = "fuzz/d/0123 at [0, +1)";

void BtreeNode(OcdbtMode mode, std::string_view input) {
  ckptbridge::Result<std::string> body =
      ckptbridge::fuzz::OcdbtBody(mode, input, ocdbt::kBtreeNodeMagic, kLabel);
  if (!body.ok()) return;
  ckptbridge::Result<ocdbt::BtreeNode> node = ocdbt::DecodeBtreeNodeBody(*body, kLabel);
  if (!node.ok()) {
    CheckRefusal(node.status(), kLabel);
    return;
  }
  const bool leaf = node->height == 0;
  const size_t n = leaf ? node->leaves.size() : node->children.size();
  FUZZ_CHECK(n >= 1 && n <= ocdbt::kMaxNodeArity);
  FUZZ_CHECK(leaf ? node->children.empty() : node->leaves.empty());
  for (size_t i = 0; i < n; ++i) {
    const std::string& key = leaf ? node->leaves[i].key : node->children[i].key;
    FUZZ_CHECK(key.size() <= ocdbt::kMaxKeyLength);
    if (i > 0) FUZZ_CHECK((leaf ? node->leaves[i - 1].key : node->children[i - 1].key) < key);
    if (leaf && !node->leaves[i].out_of_line) {
      FUZZ_CHECK(node->leaves[i].value.size() <= ocdbt::kMaxInlineValueLength);
    }
    if (!leaf) FUZZ_CHECK(node->children[i].subtree_common_prefix_length <= key.size());
  }
  ckptbridge::Result<std::string> encoded = ocdbt::EncodeBtreeNodeBody(*node);
  FUZZ_CHECK(encoded.ok());
  ckptbridge::Result<ocdbt::BtreeNode> again = ocdbt::DecodeBtreeNodeBody(*encoded, kLabel);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == *node);
}

void VersionNode(OcdbtMode mode, std::string_view input) {
  ckptbridge::Result<std::string> body =
      ckptbridge::fuzz::OcdbtBody(mode, input, ocdbt::kVersionTreeNodeMagic, kLabel);
  if (!body.ok()) return;
  ckptbridge::Result<ocdbt::VersionTreeNode> node = ocdbt::DecodeVersionTreeNodeBody(*body, kLabel);
  if (!node.ok()) {
    CheckRefusal(node.status(), kLabel);
    return;
  }
  FUZZ_CHECK(node->height == 0 ? !node->leaves.empty() : !node->children.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const auto mode = static_cast<OcdbtMode>((data[0] >> 1) % 3);
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    BtreeNode(mode, input);
  } else {
    VersionNode(mode, input);
  }
  return 0;
}
