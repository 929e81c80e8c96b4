// host/check/doctor.h - linting a checkpoint before work starts.
//
// Doctor() reads what a checkpoint says about itself - config.json, the
// index, every shard header, an Orbax item's metadata - and reports each
// inconsistency as a finding with a one-line fix. It never stops at the
// first problem and never reads tensor data.
//
// HF folder (or one .safetensors file):
//   config-missing / config-invalid        no or unparsable config.json
//   header-invalid                         a shard header the reader rejects
//   index-invalid, index-missing-shard,    model.safetensors.index.json vs the
//   index-stale-entry, index-unlisted,     shard headers: files that are not
//   index-unused-shard, index-total-size   there, keys a shard does not hold,
//                                          tensors or files it does not list
//   duplicate-tensor                       one name in two shards
//   layer-holes, layers-missing            layer indices with gaps, fewer
//                                          layers than num_hidden_layers
//   mtp-layers, mtp-layers-mismatch        layers past num_hidden_layers
//                                          (multi-token prediction)
//   tied-with-lm-head,                     tie_word_embeddings vs lm_head
//   untied-without-lm-head, tied-implicit
//   quantized-without-config,              quantization_config vs the
//   quantization-config-without-tensors,   tensors present
//   fp8-scale-missing, mlx-quantized
//   torch-dtype-mismatch, torch-dtype-missing   torch_dtype vs actual dtypes
//   unaligned-data                         tensors not aligned to their size
//   format-metadata-missing                no __metadata__.format
//   no-plugin                              no plugin serves model_type
//
// Orbax checkpoint:
//   orbax-temporary, orbax-leftover-temporary   unfinished saves
//   orbax-item-name       a step whose item is not `items` (pass it directly)
//   orbax-unreadable      _METADATA, zarr metadata or OCDBT manifest broken
//   orbax-several-steps   which step is read
//   orbax-no-use-ocdbt    an older _METADATA without use_ocdbt
//   orbax-not-maxtext     no MaxText parameters in the tree
//   orbax-no-hf-config    not written by ckptbridge: convert needs --hf-config
#ifndef CKPTBRIDGE_HOST_CHECK_DOCTOR_H_
#define CKPTBRIDGE_HOST_CHECK_DOCTOR_H_

#include <filesystem>
#include <string>
#include <vector>

#include "host/base/status.h"
#include "host/check/open.h"
#include "host/plugin/loader.h"

namespace ckptbridge::check {

enum class Severity { kError, kWarning, kInfo };
std::string_view SeverityName(Severity severity);  // "error", "warning", "info"

struct Finding {
  Severity severity = Severity::kInfo;
  std::string code;     // stable identifier, e.g. "index-missing-shard"
  std::string message;  // what is wrong, naming the file and tensor
  std::string fix;      // one line: what to do about it
};

struct DoctorReport {
  PathKind kind = PathKind::kUnknown;
  std::vector<Finding> findings;
  size_t Count(Severity severity) const;
  bool Has(const std::string& code) const;
};

// Lints the checkpoint at `path`. `plugins` (optional) adds the no-plugin
// check. NotFound when `path` does not exist; everything else is a finding.
Result<DoctorReport> Doctor(const std::filesystem::path& path, const PluginRegistry* plugins);

}  // namespace ckptbridge::check

#endif  // CKPTBRIDGE_HOST_CHECK_DOCTOR_H_
