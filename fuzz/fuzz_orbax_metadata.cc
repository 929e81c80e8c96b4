// fuzz/fuzz_orbax_metadata.cc - an Orbax item's `_METADATA` (the PyTree
// metadata) through orbax::TreeMetadata::Parse.
//
// Checked on success: leaves are sorted by their dotted name with no name
// twice, each leaf's key types match its keys, and the tree re-serializes
// (ToJson) to text that parses back to the same leaves and flags.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "host/formats/orbax/checkpoint.h"

namespace {

using ckptbridge::orbax::LeafMetadata;
using ckptbridge::orbax::TreeMetadata;

bool SameLeaf(const LeafMetadata& a, const LeafMetadata& b) {
  return a.keys == b.keys && a.key_types == b.key_types && a.value_type == b.value_type &&
         a.skip_deserialize == b.skip_deserialize && a.write_shape == b.write_shape;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  constexpr std::string_view kLabel = "fuzz/_METADATA";
  ckptbridge::Result<TreeMetadata> tree = TreeMetadata::Parse(text, kLabel);
  if (!tree.ok()) {
    ckptbridge::fuzz::CheckRefusal(tree.status(), kLabel);
    return 0;
  }
  for (size_t i = 0; i < tree->leaves.size(); ++i) {
    const LeafMetadata& leaf = tree->leaves[i];
    FUZZ_CHECK(leaf.keys.size() == leaf.key_types.size());
    if (i > 0) FUZZ_CHECK(tree->leaves[i - 1].name() < leaf.name());
  }
  const std::string json = tree->ToJson();
  ckptbridge::Result<TreeMetadata> again = TreeMetadata::Parse(json, kLabel);
  if (!again.ok()) {
    std::fprintf(stderr, "ToJson output does not parse: %s\n%s\n", again.status().message().c_str(),
                 json.c_str());
    std::abort();
  }
  FUZZ_CHECK(again->leaves.size() == tree->leaves.size());
  for (size_t i = 0; i < tree->leaves.size(); ++i) {
    FUZZ_CHECK(SameLeaf(again->leaves[i], tree->leaves[i]));
  }
  FUZZ_CHECK(again->use_ocdbt == tree->use_ocdbt);
  FUZZ_CHECK(again->use_zarr3 == tree->use_zarr3);
  FUZZ_CHECK(again->store_array_data_equal_to_fill_value ==
             tree->store_array_data_equal_to_fill_value);
  return 0;
}
