// fuzz/fuzz_ocdbt_manifest.cc - OCDBT `manifest.ocdbt` files through
// ocdbt::DecodeEnvelope and ocdbt::DecodeManifestBody (input modes:
// ocdbt_fuzz_util.h).
//
// Checked on success: the manifest holds what the format promises (a
// single-kind manifest has versions with increasing generations) and
// re-encodes to a body that decodes to the same manifest.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/ocdbt_fuzz_util.h"

namespace {

namespace ocdbt = ckptbridge::orbax::ocdbt;
using ckptbridge::fuzz::CheckRefusal;
using ckptbridge::fuzz::OcdbtMode;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const auto mode = static_cast<OcdbtMode>(data[0] % 3);
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  constexpr std::string_view kLabel = "fuzz/manifest.ocdbt";
  ckptbridge::Result<std::string> body =
      ckptbridge::fuzz::OcdbtBody(mode, input, ocdbt::kManifestMagic, kLabel);
  if (!body.ok()) return 0;
  ckptbridge::Result<ocdbt::Manifest> manifest = ocdbt::DecodeManifestBody(*body, kLabel);
  if (!manifest.ok()) {
    CheckRefusal(manifest.status(), kLabel);
    return 0;
  }
  if (manifest->config.manifest_kind == ocdbt::ManifestKind::kSingle) {
    FUZZ_CHECK(!manifest->versions.empty());
    for (size_t i = 1; i < manifest->versions.size(); ++i) {
      FUZZ_CHECK(manifest->versions[i - 1].generation < manifest->versions[i].generation);
    }
  } else {
    FUZZ_CHECK(manifest->versions.empty());
  }
  ckptbridge::Result<std::string> encoded = ocdbt::EncodeManifestBody(*manifest);
  FUZZ_CHECK(encoded.ok());
  ckptbridge::Result<ocdbt::Manifest> again = ocdbt::DecodeManifestBody(*encoded, kLabel);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == *manifest);
  return 0;
}
