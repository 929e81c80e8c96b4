// host/engine/receipt.h - what a conversion was made from and how.
//
// Every output of `convert` carries a receipt: a JSON object that lets the
// user (or an auditor, months later) tell exactly which bytes went in and
// which code and settings turned them into the output:
//
//   format        1 (the receipt's own layout version)
//   written_at    UTC, ISO-8601 ("2026-11-23T12:34:56Z")
//   ckptbridge    {"version"}
//   plugin        {"name", "version", "abi": "1.2"}, plus "model_type"
//   rules         {"hash": "xxh3-128:<32 hex>", "rules", "ignores", "renames"}
//   flags         the command-line choices that shape the output (direction,
//                 scan_layers, save_dtype, storage variant, shard size, ...)
//   dtypes        per output dtype: how many tensors, and from which source
//                 dtypes ({"bfloat16": {"tensors": 290, "from": {"float32": 290}}};
//                 a tensor made of inputs of several dtypes counts under
//                 "bfloat16+float32")
//   source        {"format", "path", "hash": "xxh3-128", "file_count", "bytes",
//                  "files": [{"path", "bytes", "xxh3_128"}], "files_digest"}:
//                 files sorted by path (relative to the HF folder or the Orbax
//                 item); files_digest is the XXH3-128 of one line
//                 "path\0bytes\0hash\n" per file, so one value compares a whole
//                 source
//   verification  only once `convert --verify` ran: its outcome
//
// Where it lives:
//   Orbax    custom_metadata["ckptbridge"]["receipt"] in the item's _METADATA
//            (the step's _CHECKPOINT_METADATA repeats it as first written,
//            without verification).
//   HF       ckptbridge_receipt.json beside the shards (the whole receipt),
//            every shard's __metadata__["ckptbridge_receipt"] (a JSON string:
//            safetensors metadata values are strings) and, with several
//            shards, model.safetensors.index.json's metadata.ckptbridge_receipt.
//            The copies inside the shards and the index are written before
//            verification can run, so they never hold "verification"; they
//            leave out "written_at" too, so that converting the same input
//            the same way gives byte-identical shards; with more than
//            kMaxEmbeddedFiles source files they hold the counts and
//            files_digest instead of the list (a non-OCDBT Orbax source has a
//            file per chunk, which would bloat every shard header).
//   `strip` and `restack` keep their source's receipt as
//   custom_metadata["ckptbridge"]["source_receipt"]: it describes the
//   conversion that wrote their input, not the rewrite.
//
// Hashes are XXH3-128 (libxxhash), streamed through a fixed buffer: memory
// does not grow with the source. The rule-table hash covers a canonical
// serialization of every rule, ignore and rename the plugin returned for
// this conversion, so it changes exactly when the mapping does, and is the
// same across runs, machines and plugin builds that map alike.
#ifndef CKPTBRIDGE_HOST_ENGINE_RECEIPT_H_
#define CKPTBRIDGE_HOST_ENGINE_RECEIPT_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "host/base/status.h"
#include "host/engine/plan.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/safetensors/reader.h"
#include "host/plugin/loader.h"
#include "host/plugin/rules.h"

namespace ckptbridge::engine {

inline constexpr int kReceiptFormat = 1;
// custom_metadata["ckptbridge"][kReceiptKey] in an Orbax output.
inline constexpr const char* kReceiptKey = "receipt";
// The __metadata__ key in each shard and the index's metadata key.
inline constexpr const char* kReceiptMetadataKey = "ckptbridge_receipt";
// The file beside the shards of an HF output.
inline constexpr const char* kReceiptFileName = "ckptbridge_receipt.json";
// Source files listed in the copies embedded in shards and the index.
inline constexpr size_t kMaxEmbeddedFiles = 256;

// The XXH3-128 of `data` as 32 lowercase hex digits (XXH128_canonical_t's
// big-endian byte order, as `xxh128sum` prints it).
std::string Xxh3Hex(const void* data, size_t size);

// The XXH3-128 of a file's bytes as 32 lowercase hex digits (the same as
// Xxh3Hex of the whole content), hashed through 4 MiB mapped windows of the
// file as it was when opened. `stopped`, when given and true between two
// windows, abandons the hashing (Cancelled). A directory or other
// non-regular file is InvalidArgument.
Result<std::string> HashFile(const std::filesystem::path& path,
                             const std::function<bool()>& stopped = {});

// The canonical serialization of `rules` (the bytes RuleSetHash hashes):
// tagged, length-prefixed, little-endian, floats by their bit patterns, in
// the order the plugin gave them. Ignore reasons are left out: they are
// prose for the user and change nothing the conversion does.
std::string CanonicalRuleSet(const RuleSet& rules);
// "xxh3-128:<hex>" of CanonicalRuleSet(rules).
std::string RuleSetHash(const RuleSet& rules);

// One file a conversion read.
struct SourceFile {
  std::string relative;  // as recorded: relative to the source folder
  std::filesystem::path path;
  uint64_t bytes = 0;
};

// The files an HF source is made of: config.json, the index (when the
// tensors were found through one) and every shard, sorted by name.
Result<std::vector<SourceFile>> HfSourceFiles(const safetensors::Checkpoint& source,
                                              const std::filesystem::path& config_path);
// Every regular file below an Orbax item directory, sorted by relative path.
Result<std::vector<SourceFile>> OrbaxSourceFiles(const orbax::ItemReader& item);

// What SourceHasher::Wait() returns for `files`, with every hash all zeros:
// the same length once serialised, so that a safetensors header planned
// around it can be written before the hashes are known and overwritten in
// place once they are (to HF: the shard headers carry the receipt).
nlohmann::json UnhashedSourceFiles(const std::vector<SourceFile>& files);

// Hashes files on a thread of its own, so that hashing overlaps the
// conversion that reads the same files. Destroying a hasher that was not
// waited for stops it (between 1 MiB reads) and joins the thread; so does
// `cancel` becoming true (Wait() then returns Cancelled).
class SourceHasher {
 public:
  explicit SourceHasher(std::vector<SourceFile> files, const std::atomic<bool>* cancel = nullptr);
  ~SourceHasher();
  SourceHasher(const SourceHasher&) = delete;
  SourceHasher& operator=(const SourceHasher&) = delete;

  // Waits for the hashes: the receipt's "source" object without "format"
  // and "path" (file_count, bytes, hash, files, files_digest). The first
  // unreadable file is the error.
  Result<nlohmann::json> Wait();

 private:
  std::vector<SourceFile> files_;
  const std::atomic<bool>* cancel_;
  std::atomic<bool> stop_{false};
  std::future<Result<nlohmann::json>> result_;
};

// Per output dtype, how many tensors and from which source dtypes (see
// above), from a finished plan.
nlohmann::json DtypeDecisions(const Plan& plan);

// `time` as "YYYY-MM-DDTHH:MM:SSZ".
std::string UtcTimestamp(std::chrono::system_clock::time_point time);

struct ReceiptInputs {
  const LoadedPlugin* plugin = nullptr;
  std::string model_type;
  const RuleSet* rules = nullptr;
  const Plan* plan = nullptr;
  nlohmann::json flags = nlohmann::json::object();
  std::string source_format;  // "huggingface" or "orbax"
  std::filesystem::path source_path;
  nlohmann::json source_files;  // SourceHasher::Wait()
  std::chrono::system_clock::time_point written_at = std::chrono::system_clock::now();
};
nlohmann::json BuildReceipt(const ReceiptInputs& inputs);

// The copy of `receipt` embedded in shards and the index: no verification,
// no written_at, and no file list beyond kMaxEmbeddedFiles files.
nlohmann::json EmbeddedReceipt(const nlohmann::json& receipt);

// Records `verification` (what `convert --verify` found) in the receipt of
// the committed output at `destination`, replacing any earlier one. Orbax:
// the item's _METADATA is rewritten; HF: ckptbridge_receipt.json. Either way
// through a temporary file renamed over the old one, so the output is never
// seen half-written. An output without a receipt is FailedPrecondition.
Status RecordVerification(const std::filesystem::path& destination, Direction direction,
                          const nlohmann::json& verification);

// The receipt of an HF folder: ckptbridge_receipt.json when present, else
// the index's metadata, else the first shard's __metadata__; nullopt when
// none of them has one (a checkpoint ckptbridge did not write). A receipt
// that is present but not a JSON object is InvalidArgument naming the file.
Result<std::optional<nlohmann::json>> ReadHfReceipt(const std::filesystem::path& dir,
                                                    const safetensors::Checkpoint& checkpoint);
// The receipt in an Orbax item's custom metadata; nullopt when absent, and
// InvalidArgument naming `label` (the _METADATA file) when not an object.
Result<std::optional<nlohmann::json>> OrbaxReceipt(const nlohmann::json& custom_metadata,
                                                   const std::string& label);

}  // namespace ckptbridge::engine

#endif  // CKPTBRIDGE_HOST_ENGINE_RECEIPT_H_
