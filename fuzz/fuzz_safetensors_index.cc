// fuzz/fuzz_safetensors_index.cc - model.safetensors.index.json through
// safetensors::Checkpoint::Open.
//
// A scratch folder holds the six real shards of the SafeTensors.jl sharded
// fixture (their index is the main seed); each input becomes the folder's
// model.safetensors.index.json. Checked on success: every tensor comes from a
// shard directly inside the folder (an index must never reach outside it),
// names are sorted and unique, and total_bytes adds up. Refusals must be
// bad-input errors.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "host/base/file.h"
#include "host/formats/safetensors/reader.h"

namespace {

namespace fs = std::filesystem;
namespace st = ckptbridge::safetensors;

fs::path ScratchFolder() {
  static const fs::path dir = [] {
    const fs::path d =
        fs::temp_directory_path() / ("ckptbridge-fuzz-index-" + std::to_string(getpid()));
    fs::create_directories(d);
    const fs::path shards =
        fs::path(CKPTBRIDGE_SOURCE_DIR) / "tests/data/fixtures/safetensors/safetensors-jl/sharded";
    for (const auto& entry : fs::directory_iterator(shards)) {
      if (entry.path().extension() == ".safetensors") {
        fs::copy_file(entry.path(), d / entry.path().filename(),
                      fs::copy_options::overwrite_existing);
      }
    }
    // Removed when the fuzzer exits normally.
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(
          fs::temp_directory_path() / ("ckptbridge-fuzz-index-" + std::to_string(getpid())), ec);
    });
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path dir = ScratchFolder();
  FUZZ_CHECK(ckptbridge::WriteFile(dir / "model.safetensors.index.json",
                                   std::string_view(reinterpret_cast<const char*>(data), size))
                 .ok());
  ckptbridge::Result<std::unique_ptr<st::Checkpoint>> checkpoint = st::Checkpoint::Open(dir);
  if (!checkpoint.ok()) {
    ckptbridge::fuzz::CheckRefusal(checkpoint.status(), "");
    return 0;
  }
  FUZZ_CHECK((*checkpoint)->has_index());
  uint64_t total = 0;
  const st::TensorInfo* previous = nullptr;
  for (const st::CheckpointTensor& t : (*checkpoint)->tensors()) {
    FUZZ_CHECK(t.file->path().parent_path() == dir);
    if (previous) FUZZ_CHECK(previous->name < t.info->name);
    previous = t.info;
    total += t.info->num_bytes();
  }
  FUZZ_CHECK(total == (*checkpoint)->total_bytes());
  return 0;
}
