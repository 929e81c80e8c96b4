// host/formats/orbax/kvstore.h - the key-value view of an Orbax item.
//
// TensorStore (and so Orbax) stores every array as keys under the array's
// parameter name: `<name>/zarr.json` and `<name>/c/0/1` for zarr v3,
// `<name>/.zarray` and `<name>/0.1` for zarr v2. Without OCDBT each key is a
// file below the item directory; with OCDBT all keys live in one database.
// Code above this interface does not care which.
//
// Keys are validated before use: no empty key, no leading '/', no empty, "."
// or ".." path component, no NUL byte. A hostile key therefore can never
// name a file outside the item directory.
#ifndef CKPTBRIDGE_HOST_FORMATS_ORBAX_KVSTORE_H_
#define CKPTBRIDGE_HOST_FORMATS_ORBAX_KVSTORE_H_

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "host/base/file.h"
#include "host/base/memory_budget.h"
#include "host/base/status.h"

namespace ckptbridge::orbax {

// InvalidArgument naming the key when it could escape its store.
Status ValidateKey(std::string_view key);

class KvStore {
 public:
  virtual ~KvStore() = default;

  // The value stored at `key`; NotFound when there is none.
  virtual Result<std::string> Read(std::string_view key) const = 0;
  // The same into `out`, a buffer reused from one value to the next
  // (base/memory_budget.h). By default a copy of Read's.
  virtual Status ReadInto(std::string_view key, ScratchBuffer& out) const;
  // The value at `key` as a read-only mapping of the file that holds it,
  // when the value is a range of one file that can be mapped (an OCDBT value
  // stored out of line); std::nullopt otherwise, or when anything about the
  // value is wrong: ReadInto then reads the value or says what is wrong.
  // Running out of address space (ulimit -v) is an error (ResourceExhausted):
  // reading into a buffer instead would only fail less clearly. Decoding
  // straight from the page cache spares copying the value into a buffer
  // first. The file's size is checked when it is mapped; a file truncated
  // while its mapping is read ends the process with SIGBUS, as for mapped
  // safetensors shards. By default std::nullopt.
  virtual Result<std::optional<MappedRegion>> Map(std::string_view key) const {
    (void)key;
    return std::optional<MappedRegion>();
  }
  // Whether `key` holds a value.
  virtual Result<bool> Contains(std::string_view key) const = 0;
  // Stores `value` at `key`, replacing any previous value. Safe to call from
  // several threads for different keys.
  virtual Status Write(std::string_view key, std::string_view value) = 0;
  // Where `key` lives, for messages ("<dir>/<key>").
  virtual std::string Describe(std::string_view key) const = 0;
  // Hints that `key` will be read soon: a store on disk asks the kernel to
  // read its bytes ahead (AdviseWillNeed), so that reading overlaps the
  // work before it. No effect on results; unknown keys are ignored.
  virtual void Prefetch(std::string_view key) const { (void)key; }
};

// Keys as files below a directory (Orbax without OCDBT). Write creates
// parent directories as needed. Read refuses (InvalidArgument) a key that a
// symlink inside the directory leads outside it.
class FileKvStore final : public KvStore {
 public:
  explicit FileKvStore(std::filesystem::path root) : root_(std::move(root)) {}

  Result<std::string> Read(std::string_view key) const override;
  Result<bool> Contains(std::string_view key) const override;
  Status Write(std::string_view key, std::string_view value) override;
  std::string Describe(std::string_view key) const override;
  void Prefetch(std::string_view key) const override;

  const std::filesystem::path& root() const { return root_; }

 private:
  std::filesystem::path root_;
};

}  // namespace ckptbridge::orbax

#endif  // CKPTBRIDGE_HOST_FORMATS_ORBAX_KVSTORE_H_
