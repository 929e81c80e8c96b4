// host/engine/journal.h - resuming a conversion that was killed.
//
// Every conversion keeps a journal in its staging directory (staging.h):
// `<staging>/.ckptbridge-journal`. A run killed outright (SIGKILL, the OOM
// killer, a preempted machine, a power cut) leaves the staging directory and
// its journal behind; `convert --resume` finds them, re-verifies what the
// journal says was finished, takes it over and runs only the rest. The
// journal is removed before the output is committed, so it never appears in
// a finished checkpoint.
//
// The journal is text, one record per line, appended with one write() each:
//
//   <CRC-32C of the JSON, 8 hex digits> <JSON>\n
//
// A line that lacks its newline or whose CRC does not match (the torn last
// line of a killed run, or damage) is ignored: the units it would have
// recorded are simply run again. The first line is the header,
// {"journal": 1, "fingerprint": {...}}: what is converted and how (source
// files with sizes and mtimes, plugin and version, every option that shapes
// the output, the planned tensors and units). A journal whose fingerprint
// differs from the resuming run's is refused, naming the first difference.
// Every other line records one finished unit (execute.h) and every piece it
// wrote, each with its CRC-32C and where it is:
//
//   {"unit": 12, "pieces": [
//     {"kind": "chunk", "array": "params.params.decoder...", "index": [0, 3, 0],
//      "key": "<array>/c/0/3/0", "ocdbt": true,
//      "file": "0/items/d/<hex>", "data_file": "d/<hex>", "offset": 4096,
//      "length": 1234, "crc32c": 305419896},        an OCDBT value in a data file
//     {"kind": "chunk", ..., "ocdbt": true, "value": "<hex>", ...},
//                                                   an OCDBT value kept inline
//     {"kind": "chunk", ..., "ocdbt": false, "file": "0/items/<key>", ...},
//                                                   a zarr chunk file (whole)
//     {"kind": "tensor", "shard": "model-00001-of-00004.safetensors",
//      "file": "model-00001-of-00004.safetensors", "tensor": 3, "name": "...",
//      "offset": 0, "file_offset": 8192, "length": 65536, "whole": true, ...}
//   ]}
//
// A unit is recorded only after all of its pieces were written, and a unit
// is skipped on resume only when every piece reads back with its CRC; paths
// are relative to the staging directory. Writes are attributed to the unit
// running on the writing thread (a unit writes on the thread that runs it).
//
// The journal file is locked (flock) while a run uses it, so `--resume`
// never takes over the staging directory of a conversion that is still
// running. Lines are not fsync'ed: SIGKILL loses nothing the kernel already
// has, and after a power cut whatever did not reach the disk fails the
// re-verification and is redone.
#ifndef CKPTBRIDGE_HOST_ENGINE_JOURNAL_H_
#define CKPTBRIDGE_HOST_ENGINE_JOURNAL_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "host/base/status.h"
#include "host/engine/execute.h"
#include "host/engine/plan.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/safetensors/writer.h"

namespace ckptbridge::engine {

class Journal {
 public:
  // Starts the journal of a new run in `staging`, its first line recording
  // `fingerprint`, and locks it.
  static Result<std::unique_ptr<Journal>> Create(const std::filesystem::path& staging,
                                                 const nlohmann::json& fingerprint);

  // Takes over the journal an interrupted run left in `staging` and locks
  // it. Errors: NotFound when there is no journal or its header is
  // unreadable (the run died before writing it); FailedPrecondition when
  // another process holds it (a conversion still running); InvalidArgument
  // when it records another conversion: the message names the first
  // difference, its value then and now.
  static Result<std::unique_ptr<Journal>> Open(const std::filesystem::path& staging,
                                               const nlohmann::json& fingerprint);

  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // What re-verification found.
  struct Verified {
    size_t units = 0;           // units whose pieces all read back intact
    size_t pieces = 0;          // their pieces
    size_t bad_units = 0;       // recorded units to run again
    size_t bad_pieces = 0;      // pieces missing, short or with another CRC
    size_t damaged_lines = 0;   // lines ignored (torn or corrupt)
    std::string first_problem;  // the first bad piece, for the notice
  };
  // Reads back every piece the journal records (on `threads` threads, 0:
  // all cores) and checks its CRC. Only for an Open()ed journal.
  Verified Verify(int threads);

  bool resumed() const { return resumed_; }
  const std::filesystem::path& staging() const { return staging_; }

  // Records every chunk `writer` stores, and lets skipped units adopt the
  // chunks they wrote before. `writer` must outlive the run.
  void Attach(orbax::CheckpointWriter& writer);
  // Sets options.skip, .wrap and .open_shard (to HF: shards are reopened
  // when resuming, and record every tensor or part written).
  void Install(ExecuteOptions& options);

  // The fingerprint of the files below `root` (all of them, recursively,
  // or `names` only when given): {relative path: "<bytes> bytes, mtime
  // <ns>"}.
  static Result<nlohmann::json> FingerprintFiles(const std::filesystem::path& root,
                                                 const std::vector<std::string>& names = {});
  // The fingerprint of a plan: its output tensors (name -> dtype, shape,
  // chunking) and its units (count and a digest of their slices).
  static nlohmann::json FingerprintPlan(const Plan& plan);

 private:
  Journal(std::filesystem::path staging, int fd, bool resumed);
  Status Append(const nlohmann::json& record);
  bool Skip(size_t unit);
  Status Run(size_t unit, const std::function<Status()>& body);
  Result<std::unique_ptr<safetensors::ShardWriter>> OpenShard(
      const std::filesystem::path& dir, const safetensors::PlannedShard& shard);

  std::filesystem::path staging_;
  int fd_ = -1;
  bool resumed_ = false;
  std::mutex mutex_;  // serializes Append and guards shards_
  // Recorded units (the last record of each), and which of them verified.
  std::map<size_t, nlohmann::json> units_;
  std::map<size_t, bool> verified_;
  size_t damaged_lines_ = 0;
  orbax::CheckpointWriter* writer_ = nullptr;
  std::filesystem::path item_relative_;  // the item directory, relative to staging_
  std::map<std::string, safetensors::ShardWriter*> shards_;  // by file name
};

}  // namespace ckptbridge::engine

#endif  // CKPTBRIDGE_HOST_ENGINE_JOURNAL_H_
