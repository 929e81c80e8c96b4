#include "host/engine/convert.h"

#include <algorithm>
#include <map>
#include <set>
#include <system_error>

#include "host/base/file.h"
#include "host/base/json.h"
#include "host/base/version.h"
#include "host/engine/journal.h"
#include "host/engine/maxtext_tree.h"
#include "host/engine/receipt.h"
#include "host/engine/staging.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/safetensors/reader.h"
#include "host/plugin/adapter.h"

namespace ckptbridge::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// JSON a plugin produced: bad JSON there is the plugin's fault, not the input's.
Result<json> ParsePluginJson(const std::string& text, const std::string& what) {
  Result<json> parsed = ParseJsonText(text, what);
  if (!parsed.ok()) return Internal(parsed.status().message());
  return parsed;
}

std::string PluginLabel(const LoadedPlugin& plugin) {
  return "plugin '" + plugin.name + "' " + plugin.version;
}

// "bfloat16" | "float32" | "source" -> the dtype (nullopt for source).
Result<std::optional<DType>> ParseSaveDType(const std::string& text, DType fallback) {
  if (text.empty()) return std::optional<DType>(fallback);
  if (text == "source") return std::optional<DType>();
  if (text == "bfloat16" || text == "bf16") return std::optional<DType>(DType::kBF16);
  if (text == "float32" || text == "f32" || text == "fp32")
    return std::optional<DType>(DType::kF32);
  if (text == "float16" || text == "f16" || text == "fp16")
    return std::optional<DType>(DType::kF16);
  return InvalidArgument("--save-dtype '" + text +
                         "' is not one of bfloat16, float32, float16, source");
}

void Notice(const ConvertObserver& observer, const std::string& line) {
  if (observer.notice) observer.notice(line);
}

void ReportIgnored(const ConvertObserver& observer, const Plan& plan) {
  for (const IgnoredGroup& group : plan.ignored) {
    std::string line = "skipped " + std::to_string(group.names.size()) + " tensor" +
                       (group.names.size() == 1 ? "" : "s") + " (" + group.reason +
                       "): " + group.names[0];
    if (group.names.size() > 1) line += ", ...";
    Notice(observer, line);
  }
}

// How a conversion runs its units: threads, budget, progress, cancellation,
// the plugin for custom ops, and where roundings are audited.
ExecuteOptions ConversionExecuteOptions(const ConvertOptions& options,
                                        const ConvertObserver& observer, const Adapter* adapter,
                                        CastAudit& audit) {
  ExecuteOptions exec;
  exec.threads = options.threads;
  exec.max_memory = MaxMemoryOrDefault(options.max_memory);
  exec.notice = [&observer](const std::string& line) { Notice(observer, line); };
  exec.progress = observer.progress;
  exec.cancel = observer.cancel;
  exec.adapter = adapter;
  exec.cast_audit = &audit;
  return exec;
}

// The options that shape how the output is stored: shard size to HF; OCDBT,
// zarr version and zstd level to MaxText. Part of both the resume
// fingerprint and the receipt's flags.
json OutputLayoutOptions(const ConvertOptions& options) {
  if (options.direction == Direction::kToHf) {
    return {{"max_shard_bytes", options.max_shard_bytes}};
  }
  return {{"ocdbt", options.ocdbt.value_or(true)},
          {"zarr3", options.zarr3.value_or(true)},
          {"zstd_level", options.zstd_level.value_or(orbax::kDefaultZstdLevel)}};
}

// The fingerprint of a conversion (journal.h): what a killed run and its
// resume must agree on for the pieces of one to serve the other.
json ConversionFingerprint(const ConvertOptions& options, const LoadedPlugin& plugin,
                           const std::string& model_type, bool scan, const json& hf_config,
                           const Plan& plan, json source_files) {
  std::error_code ec;
  json fingerprint = {
      {"ckptbridge", kVersion},
      {"direction", options.direction == Direction::kToHf ? "hf" : "maxtext"},
      {"plugin", plugin.name + " " + plugin.version},
      {"model_type", model_type},
      {"hf_config", hf_config},
      {"options", {{"scan_layers", scan}, {"plugin_options", options.plugin_options}}},
      {"source",
       {{"path", fs::absolute(options.source, ec).lexically_normal().string()},
        {"files", std::move(source_files)}}},
      {"plan", Journal::FingerprintPlan(plan)}};
  fingerprint["options"].update(OutputLayoutOptions(options));
  return fingerprint;
}

// Where a conversion writes: a new staging directory with a new journal,
// or with --resume the staging directory and journal an interrupted run of
// the same conversion left, re-verified.
struct Output {
  StagedOutput staged;
  std::unique_ptr<Journal> journal;
};

Result<Output> StartOutput(const ConvertOptions& options, StagedOutput::Kind kind,
                           const json& fingerprint, size_t units, const ConvertObserver& observer) {
  if (options.resume) {
    std::vector<std::string> refused;
    for (const fs::path& dir : LeftoverStagingDirs(options.destination, kind)) {
      Result<std::unique_ptr<Journal>> journal = Journal::Open(dir, fingerprint);
      if (!journal.ok()) {
        if (journal.status().code() == StatusCode::kInvalidArgument) {
          refused.push_back(journal.status().message());
        } else {
          Notice(observer, "not resuming " + dir.string() + ": " + journal.status().message());
        }
        continue;
      }
      CKB_ASSIGN_OR_RETURN(StagedOutput staged,
                           StagedOutput::Resume(dir, options.destination, options.overwrite));
      const Journal::Verified verified = (*journal)->Verify(options.threads);
      std::string line = "resuming " + dir.string() + ": " + std::to_string(verified.units) +
                         " of " + std::to_string(units) + " units done and verified (" +
                         std::to_string(verified.pieces) + " pieces)";
      if (verified.bad_pieces > 0) {
        line += "; " + std::to_string(verified.bad_pieces) +
                " pieces failed re-verification, so their " + std::to_string(verified.bad_units) +
                " units are redone (first: " + verified.first_problem + ")";
      }
      if (verified.damaged_lines > 0) {
        line += "; " + std::to_string(verified.damaged_lines) + " damaged journal lines ignored";
      }
      Notice(observer, line);
      return Output{std::move(staged), std::move(*journal)};
    }
    if (!refused.empty()) {
      return InvalidArgument("--resume: " + refused[0] +
                             "; delete it to start over, or convert without --resume");
    }
    Notice(observer, "nothing to resume next to " + options.destination.string() +
                         ": no interrupted run of this conversion; starting from scratch");
  }
  CKB_ASSIGN_OR_RETURN(StagedOutput staged,
                       StagedOutput::Begin(options.destination, options.overwrite, kind));
  CKB_ASSIGN_OR_RETURN(std::unique_ptr<Journal> journal,
                       Journal::Create(staged.staging(), fingerprint));
  return Output{std::move(staged), std::move(journal)};
}

ConvertSummary Summarize(const LoadedPlugin& plugin, const std::string& model_type, bool scan,
                         const Plan& plan, const fs::path& destination) {
  const bool to_maxtext = plan.direction == Direction::kToMaxText;
  ConvertSummary summary;
  summary.plugin = plugin.name + " " + plugin.version;
  summary.model_type = model_type;
  summary.scan_layers = scan;
  summary.tensors_read = to_maxtext ? plan.hf_tensors.size() : plan.mt_tensors.size();
  summary.tensors_written = to_maxtext ? plan.mt_tensors.size() : plan.hf_tensors.size();
  summary.bytes_read = plan.read_bytes;
  summary.bytes_written = plan.write_bytes;
  summary.destination = destination;
  summary.bytes_on_disk = DirectoryBytes(destination);
  return summary;
}

std::string RuleOptions(const ConvertOptions& convert, bool scan_layers) {
  json options = convert.plugin_options.is_object() ? convert.plugin_options : json::object();
  options["direction"] = convert.direction == Direction::kToHf ? "to_hf" : "to_maxtext";
  options["scan_layers"] = scan_layers;
  return options.dump();
}

// The command-line choices that shape the output, for the receipt.
json ReceiptFlags(const ConvertOptions& options, bool scan_layers) {
  const bool to_hf = options.direction == Direction::kToHf;
  json flags = {{"direction", to_hf ? "to_hf" : "to_maxtext"},
                {"scan_layers", scan_layers},
                {"save_dtype", options.save_dtype.empty() ? "default" : options.save_dtype},
                {"plugin_options", options.plugin_options}};
  if (!options.family.empty()) flags["family"] = options.family;
  flags.update(OutputLayoutOptions(options));
  if (to_hf) {
    std::error_code ec;
    if (!options.hf_config_file.empty()) {
      flags["hf_config"] = fs::absolute(options.hf_config_file, ec).lexically_normal().string();
    }
    if (!options.model_name.empty()) flags["model"] = options.model_name;
    if (!options.tokenizer_dir.empty()) {
      flags["tokenizer"] = fs::absolute(options.tokenizer_dir, ec).lexically_normal().string();
    }
  }
  return flags;
}

// What both directions record in the receipt about the conversion itself;
// the caller adds the source.
ReceiptInputs ConversionReceipt(const ConvertOptions& options, const LoadedPlugin& plugin,
                                const std::string& model_type, const RuleSet& rules,
                                const Plan& plan, bool scan) {
  ReceiptInputs receipt;
  receipt.plugin = &plugin;
  receipt.model_type = model_type;
  receipt.rules = &rules;
  receipt.plan = &plan;
  receipt.flags = ReceiptFlags(options, scan);
  return receipt;
}

Result<ConvertSummary> ToMaxText(const ConvertOptions& options, const PluginRegistry& plugins,
                                 const ConvertObserver& observer) {
  if (!options.hf_config_file.empty() || !options.model_name.empty() ||
      !options.tokenizer_dir.empty()) {
    return InvalidArgument(
        "--hf-config, --model and --tokenizer apply to --to hf; an HF source brings its own "
        "config.json");
  }
  const fs::path config_path = fs::is_directory(options.source)
                                   ? options.source / "config.json"
                                   : options.source.parent_path() / "config.json";
  if (!fs::exists(config_path)) {
    return NotFound(options.source.string() +
                    ": no config.json (an HF checkpoint folder has config.json next to its "
                    ".safetensors files)");
  }
  CKB_ASSIGN_OR_RETURN(json hf_config, ParseJsonFile(config_path));
  CKB_ASSIGN_OR_RETURN(std::unique_ptr<safetensors::Checkpoint> source,
                       safetensors::Checkpoint::Open(options.source));
  for (const std::string& warning : source->warnings()) Notice(observer, warning);

  std::string model_type;
  CKB_ASSIGN_OR_RETURN(const LoadedPlugin* plugin,
                       SelectPlugin(plugins, hf_config, options.family, &model_type));
  CKB_ASSIGN_OR_RETURN(std::unique_ptr<Adapter> adapter,
                       Adapter::Create(*plugin, model_type, hf_config.dump()));
  const bool scan = options.scan_layers.value_or(true);
  CKB_ASSIGN_OR_RETURN(RuleSet rules, adapter->Rules(RuleOptions(options, scan)));
  CKB_ASSIGN_OR_RETURN(std::string maxtext_text, adapter->TranslateConfig(CKB_TO_MAXTEXT));
  CKB_ASSIGN_OR_RETURN(json maxtext_config, ParsePluginJson(maxtext_text, PluginLabel(*plugin)));

  ToMaxTextOptions plan_options;
  CKB_ASSIGN_OR_RETURN(plan_options.save_dtype, ParseSaveDType(options.save_dtype, DType::kBF16));
  plan_options.max_unit_memory = UnitMemoryLimit(MaxMemoryOrDefault(options.max_memory));
  CKB_ASSIGN_OR_RETURN(Plan plan,
                       PlanToMaxText(rules, *source, plan_options, PluginLabel(*plugin)));
  ReportIgnored(observer, plan);
  if (observer.planned) observer.planned(plan);

  // The source files the plan reads, for the resume fingerprint.
  const fs::path source_root = config_path.parent_path();
  std::vector<std::string> source_names = {"config.json"};
  for (const auto& file : source->files()) {
    source_names.push_back(file->path().lexically_relative(source_root).generic_string());
  }
  CKB_ASSIGN_OR_RETURN(json source_files, Journal::FingerprintFiles(source_root, source_names));
  CKB_ASSIGN_OR_RETURN(Output output,
                       StartOutput(options, StagedOutput::Kind::kOrbax,
                                   ConversionFingerprint(options, *plugin, model_type, scan,
                                                         hf_config, plan, std::move(source_files)),
                                   plan.units.size(), observer));
  StagedOutput& staged = output.staged;
  orbax::WriteOptions write_options;
  write_options.resume = output.journal->resumed();
  write_options.ocdbt = options.ocdbt.value_or(true);
  write_options.zarr3 = options.zarr3.value_or(true);
  write_options.zstd_level = options.zstd_level.value_or(orbax::kDefaultZstdLevel);
  write_options.final_root = staged.destination();
  CKB_ASSIGN_OR_RETURN(std::unique_ptr<orbax::CheckpointWriter> writer,
                       orbax::CheckpointWriter::Create(staged.staging(), write_options));
  output.journal->Attach(*writer);
  CastAudit audit(options.allow_lossy);
  ExecuteOptions exec = ConversionExecuteOptions(options, observer, adapter.get(), audit);
  // The receipt names every byte read: hash the source on a thread of its
  // own while the units read it (the page cache serves both).
  CKB_ASSIGN_OR_RETURN(std::vector<SourceFile> receipt_files, HfSourceFiles(*source, config_path));
  SourceHasher hasher(std::move(receipt_files), observer.cancel);
  output.journal->Install(exec);
  CKB_RETURN_IF_ERROR(WriteMaxText(plan, *source, *writer, exec));
  CKB_RETURN_IF_ERROR(writer->AddScalar({"step"}, 0));
  CKB_RETURN_IF_ERROR(writer->AddEmptyDict({"opt_state"}));

  std::map<std::string, int> source_dtypes;
  for (const HfTensor& t : plan.hf_tensors) ++source_dtypes[std::string(SafetensorsName(t.dtype))];
  std::error_code ec;
  json record = {
      {"version", kVersion},
      {"plugin", {{"name", plugin->name}, {"version", plugin->version}}},
      {"model_type", model_type},
      {"hf_config", hf_config},
      {"maxtext_config", maxtext_config},
      {"source",
       {{"path", fs::absolute(options.source, ec).lexically_normal().string()},
        {"tensors", plan.hf_tensors.size()},
        {"bytes", plan.read_bytes},
        {"dtypes", source_dtypes}}},
      {"save_dtype", options.save_dtype.empty() ? "bfloat16" : options.save_dtype},
  };
  ReceiptInputs receipt = ConversionReceipt(options, *plugin, model_type, rules, plan, scan);
  receipt.source_format = "huggingface";
  receipt.source_path = options.source;
  CKB_ASSIGN_OR_RETURN(receipt.source_files, hasher.Wait());
  record[kReceiptKey] = BuildReceipt(receipt);
  json custom = {{"scan_layers", scan}, {kMetadataKey, record}};
  CKB_RETURN_IF_ERROR(writer->Finish(custom));
  writer.reset();
  CKB_RETURN_IF_ERROR(staged.Commit());

  ConvertSummary summary = Summarize(*plugin, model_type, scan, plan, staged.destination());
  summary.casts = audit.Tensors();
  return summary;
}

Status CopyTokenizerFiles(const fs::path& from, const fs::path& to,
                          const ConvertObserver& observer) {
  std::vector<std::string> copied;
  for (const std::string& name : TokenizerFileNames()) {
    std::error_code ec;
    if (!fs::is_regular_file(from / name, ec)) continue;
    fs::copy_file(from / name, to / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return ErrnoError((from / name).string(), ec.value());
    copied.push_back(name);
  }
  if (copied.empty()) {
    Notice(observer, "no tokenizer files found in " + from.string());
  } else {
    std::string list;
    for (const std::string& n : copied) list += (list.empty() ? "" : ", ") + n;
    Notice(observer, "copied tokenizer files from " + from.string() + ": " + list);
  }
  return Status::Ok();
}

// The source files of a to-HF conversion, for its receipt: the item's files
// and the --hf-config file, recorded relative to the item.
Result<std::vector<SourceFile>> HfReceiptFiles(const ConvertOptions& options,
                                               const orbax::ItemReader& item) {
  CKB_ASSIGN_OR_RETURN(std::vector<SourceFile> files, OrbaxSourceFiles(item));
  if (!options.hf_config_file.empty()) {
    std::error_code ec;
    const fs::path config = fs::absolute(options.hf_config_file, ec).lexically_normal();
    const uint64_t bytes = fs::file_size(config, ec);
    if (ec) return ErrnoError(options.hf_config_file.string(), ec.value());
    files.push_back(
        {config.lexically_relative(fs::absolute(item.location().item_dir, ec)).generic_string(),
         config, bytes});
  }
  return files;
}

// ckptbridge_receipt.json beside the shards, and the receipt in the index's
// metadata when there is an index.
Status WriteHfReceipt(const fs::path& dir, const json& receipt, const json& embedded) {
  CKB_RETURN_IF_ERROR(WriteFile(dir / kReceiptFileName, receipt.dump(2) + "\n"));
  const fs::path index_path = dir / "model.safetensors.index.json";
  std::error_code ec;
  if (!fs::exists(index_path, ec)) return Status::Ok();
  CKB_ASSIGN_OR_RETURN(json index, ParseJsonFile(index_path));
  if (!index.is_object() || !index.contains("metadata") || !index["metadata"].is_object()) {
    return Internal(index_path.string() + ": the index just written has no metadata object");
  }
  index["metadata"][kReceiptMetadataKey] = embedded;
  return WriteFile(index_path, index.dump(2) + "\n");
}

Result<ConvertSummary> ToHf(const ConvertOptions& options, const PluginRegistry& plugins,
                            const ConvertObserver& observer) {
  if (options.ocdbt || options.zarr3) {
    return InvalidArgument(
        "--ocdbt/--no-ocdbt and --zarr3/--no-zarr3 apply to --to maxtext; an Orbax source says "
        "itself how it is stored");
  }
  if (options.zstd_level) {
    return InvalidArgument("--zstd-level applies to --to maxtext; safetensors are not compressed");
  }
  CKB_ASSIGN_OR_RETURN(MaxTextSource source, OpenMaxTextSource(options.source));
  const orbax::ItemReader* item = source.item.get();
  const json* record = source.record;
  bool scan = source.scan;
  if (options.scan_layers && source.recorded_scan &&
      *options.scan_layers != *source.recorded_scan) {
    return InvalidArgument(
        std::string(options.scan_layers.value() ? "--scan-layers" : "--no-scan-layers") +
        " contradicts the checkpoint, which records scan_layers=" +
        (*source.recorded_scan ? "true" : "false"));
  }
  if (options.scan_layers) scan = *options.scan_layers;
  CKB_ASSIGN_OR_RETURN(ModelChoice model,
                       IdentifyModel(source, options.hf_config_file, options.model_name,
                                     options.family, plugins, observer));
  const LoadedPlugin* plugin = model.plugin;
  const std::string& model_type = model.model_type;
  const json& hf_config = model.hf_config;
  CKB_ASSIGN_OR_RETURN(std::unique_ptr<Adapter> adapter,
                       Adapter::Create(*plugin, model_type, hf_config.dump()));
  CKB_ASSIGN_OR_RETURN(RuleSet rules, adapter->Rules(RuleOptions(options, scan)));
  CKB_ASSIGN_OR_RETURN(std::string config_text, adapter->TranslateConfig(CKB_TO_HF));
  CKB_ASSIGN_OR_RETURN(json out_config, ParsePluginJson(config_text, PluginLabel(*plugin)));

  // Export dtype: --save-dtype, else the config's torch_dtype, else bfloat16
  // (never float32 by accident: that doubles the output for nothing).
  DType default_dtype = DType::kBF16;
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (out_config.contains(key) && out_config[key].is_string()) {
      if (auto d = DTypeFromTorchName(out_config[key].get<std::string>())) default_dtype = *d;
    }
  }
  ToHfOptions plan_options;
  CKB_ASSIGN_OR_RETURN(plan_options.save_dtype, ParseSaveDType(options.save_dtype, default_dtype));
  plan_options.max_unit_memory = UnitMemoryLimit(MaxMemoryOrDefault(options.max_memory));
  CKB_ASSIGN_OR_RETURN(Plan plan, PlanToHf(rules, *item, plan_options, PluginLabel(*plugin)));
  ReportIgnored(observer, plan);
  if (observer.planned) observer.planned(plan);

  // torch_dtype names the dtype of most of the weights: tensors a rule
  // keeps in float32 (CKB_RULE_KEEP_F32) do not make a bfloat16 model a float32 one.
  std::map<DType, uint64_t> written;
  for (const HfTensor& t : plan.hf_tensors) {
    written[t.dtype] += static_cast<uint64_t>(NumElementsUnchecked(t.shape)) * DTypeSize(t.dtype);
  }
  if (!written.empty()) {
    const auto most =
        std::max_element(written.begin(), written.end(),
                         [](const auto& a, const auto& b) { return a.second < b.second; });
    const std::string name(ZarrName(most->first));
    out_config["torch_dtype"] = name;
    if (out_config.contains("dtype")) out_config["dtype"] = name;
  }

  CKB_ASSIGN_OR_RETURN(json source_files, Journal::FingerprintFiles(item->location().item_dir));
  CKB_ASSIGN_OR_RETURN(Output output,
                       StartOutput(options, StagedOutput::Kind::kHuggingFace,
                                   ConversionFingerprint(options, *plugin, model_type, scan,
                                                         hf_config, plan, std::move(source_files)),
                                   plan.units.size(), observer));
  StagedOutput& staged = output.staged;
  CastAudit audit(options.allow_lossy);
  ExecuteOptions exec = ConversionExecuteOptions(options, observer, adapter.get(), audit);
  // Every shard header carries the receipt, with the source's hashes. The
  // source is hashed beside the conversion (which reads the same bytes); the
  // headers are planned around hashes of zeros, as long as the real ones,
  // and overwritten with the real ones once every tensor is written.
  CKB_ASSIGN_OR_RETURN(std::vector<SourceFile> files, HfReceiptFiles(options, *item));
  ReceiptInputs inputs = ConversionReceipt(options, *plugin, model_type, rules, plan, scan);
  inputs.source_format = "orbax";
  inputs.source_path = item->location().item_dir;
  inputs.source_files = UnhashedSourceFiles(files);
  const json unhashed = EmbeddedReceipt(BuildReceipt(inputs));
  SourceHasher hasher(std::move(files), observer.cancel);
  json receipt, embedded;
  auto hashed = [&]() -> Result<std::map<std::string, std::string>> {
    CKB_ASSIGN_OR_RETURN(inputs.source_files, hasher.Wait());
    receipt = BuildReceipt(inputs);
    embedded = EmbeddedReceipt(receipt);
    return std::map<std::string, std::string>{{kReceiptMetadataKey, embedded.dump()}};
  };
  output.journal->Install(exec);
  CKB_RETURN_IF_ERROR(WriteHf(plan, *item, staged.staging(), options.max_shard_bytes, exec,
                              {{kReceiptMetadataKey, unhashed.dump()}}, hashed));
  CKB_RETURN_IF_ERROR(WriteHfReceipt(staged.staging(), receipt, embedded));
  CKB_RETURN_IF_ERROR(WriteFile(staged.staging() / "config.json", out_config.dump(2) + "\n"));

  fs::path tokenizer_dir = options.tokenizer_dir;
  if (tokenizer_dir.empty() && record && record->contains("source")) {
    const json& source = (*record)["source"];
    if (source.is_object() && source.contains("path") && source["path"].is_string()) {
      fs::path recorded = source["path"].get<std::string>();
      std::error_code ec;
      if (fs::is_directory(recorded, ec)) {
        tokenizer_dir = recorded;
      } else {
        Notice(observer, "the source folder recorded in the checkpoint (" + recorded.string() +
                             ") is gone; pass --tokenizer DIR to copy tokenizer files");
      }
    }
  }
  if (!tokenizer_dir.empty()) {
    CKB_RETURN_IF_ERROR(CopyTokenizerFiles(tokenizer_dir, staged.staging(), observer));
  } else if (!record) {
    Notice(observer, "no tokenizer files copied (pass --tokenizer DIR)");
  }
  CKB_RETURN_IF_ERROR(staged.Commit());

  ConvertSummary summary = Summarize(*plugin, model_type, scan, plan, staged.destination());
  summary.casts = audit.Tensors();
  return summary;
}

}  // namespace

const std::vector<std::string>& TokenizerFileNames() {
  static const std::vector<std::string> names = {"tokenizer.json",
                                                 "tokenizer_config.json",
                                                 "special_tokens_map.json",
                                                 "generation_config.json",
                                                 "tokenizer.model",
                                                 "added_tokens.json",
                                                 "vocab.json",
                                                 "merges.txt",
                                                 "chat_template.jinja",
                                                 "chat_template.json",
                                                 "preprocessor_config.json",
                                                 "processor_config.json"};
  return names;
}

Result<const LoadedPlugin*> SelectPlugin(const PluginRegistry& plugins, const json& hf_config,
                                         std::string_view family, std::string* model_type) {
  std::string type;
  if (hf_config.is_object() && hf_config.contains("model_type") &&
      hf_config["model_type"].is_string()) {
    type = hf_config["model_type"].get<std::string>();
  }
  std::string architecture;
  if (hf_config.is_object() && hf_config.contains("architectures") &&
      hf_config["architectures"].is_array() && !hf_config["architectures"].empty() &&
      hf_config["architectures"][0].is_string()) {
    architecture = hf_config["architectures"][0].get<std::string>();
  }
  if (!family.empty()) {
    const LoadedPlugin* plugin = plugins.FindByName(family);
    if (!plugin) {
      return NotFound("--family '" + std::string(family) + "': no such plugin (" +
                      plugins.Summary() + ")");
    }
    bool serves = false;
    for (const std::string& t : plugin->model_types) serves |= t == type;
    *model_type = serves ? type : plugin->model_types.at(0);
    return plugin;
  }
  if (!type.empty()) {
    if (const LoadedPlugin* plugin = plugins.FindByModelType(type)) {
      *model_type = type;
      return plugin;
    }
  }
  if (!architecture.empty()) {
    if (const LoadedPlugin* plugin = plugins.FindByArchitecture(architecture)) {
      // Serve the plugin's type that goes with this architecture when it is
      // the same position in both lists; otherwise its first type.
      *model_type = plugin->model_types.at(0);
      for (size_t i = 0; i < plugin->architectures.size() && i < plugin->model_types.size(); ++i) {
        if (plugin->architectures[i] == architecture) *model_type = plugin->model_types[i];
      }
      return plugin;
    }
  }
  std::string what = type.empty() ? std::string("no model_type") : "model_type '" + type + "'";
  if (!architecture.empty()) what += " (" + architecture + ")";
  return Unsupported("config.json has " + what +
                     ", which no plugin converts; found: " + plugins.Summary());
}

Result<MaxTextSource> OpenMaxTextSource(const fs::path& path) {
  MaxTextSource source;
  CKB_ASSIGN_OR_RETURN(source.item, orbax::ItemReader::Open(path));
  CKB_ASSIGN_OR_RETURN(source.tree, MaxTextTree::Build(*source.item));
  const json& custom = source.item->tree().custom_metadata;
  if (custom.is_object() && custom.contains(kMetadataKey) && custom[kMetadataKey].is_object()) {
    source.record = &custom[kMetadataKey];
  }
  // MaxText and ckptbridge both record custom_metadata.scan_layers.
  if (custom.is_object() && custom.contains("scan_layers") && custom["scan_layers"].is_boolean()) {
    source.recorded_scan = custom["scan_layers"].get<bool>();
  }
  source.scan = source.recorded_scan.value_or(source.tree.LooksScanned());
  return source;
}

Result<ModelChoice> IdentifyModel(const MaxTextSource& source, const fs::path& hf_config_file,
                                  const std::string& model_name, const std::string& family,
                                  const PluginRegistry& plugins, const ConvertObserver& observer) {
  // An explicit flag wins over what we recorded.
  ModelChoice model;
  std::string chosen_family = family;
  if (!hf_config_file.empty()) {
    CKB_ASSIGN_OR_RETURN(model.hf_config, ParseJsonFile(hf_config_file));
    if (source.record) {
      Notice(observer, "using " + hf_config_file.string() +
                           " instead of the HF config recorded in the checkpoint");
    }
  } else if (!model_name.empty()) {
    const LoadedPlugin* plugin = plugins.FindByPreset(model_name);
    if (!plugin) {
      return NotFound("--model '" + model_name + "' is not a preset of any plugin (" +
                      plugins.Summary() + "); `ckptbridge plugins` lists the presets");
    }
    CKB_ASSIGN_OR_RETURN(std::string text, PresetConfig(*plugin, model_name));
    CKB_ASSIGN_OR_RETURN(model.hf_config, ParsePluginJson(text, PluginLabel(*plugin)));
    if (chosen_family.empty()) chosen_family = plugin->name;
  } else if (source.record && source.record->contains("hf_config") &&
             (*source.record)["hf_config"].is_object()) {
    model.hf_config = (*source.record)["hf_config"];
  } else {
    return InvalidArgument(
        source.item->location().item_dir.string() +
        ": this checkpoint does not record its Hugging Face config (it was not written by "
        "ckptbridge); pass --hf-config FILE (the model's config.json) or --model NAME (a MaxText "
        "model name such as llama3.1-8b; `ckptbridge plugins` lists them)");
  }
  CKB_ASSIGN_OR_RETURN(model.plugin,
                       SelectPlugin(plugins, model.hf_config, chosen_family, &model.model_type));
  return model;
}

Result<ConvertSummary> Convert(const ConvertOptions& options, const PluginRegistry& plugins,
                               const ConvertObserver& observer) {
  if (options.source.empty() || options.destination.empty()) {
    return InvalidArgument("convert needs a source and a destination");
  }
  std::error_code ec;
  if (!fs::exists(options.source, ec)) {
    return NotFound(options.source.string() + ": no such file or directory");
  }
  const fs::path src = fs::weakly_canonical(options.source, ec);
  const fs::path dst = fs::weakly_canonical(options.destination, ec);
  if (src == dst || (!ec && src.string().rfind(dst.string() + "/", 0) == 0)) {
    return InvalidArgument("the destination " + options.destination.string() +
                           " would overwrite the source");
  }
  // A run killed outright (SIGKILL, power loss) cannot remove its staging
  // directory. Say so rather than delete it: another conversion to the same
  // destination may be writing it right now.
  const std::vector<fs::path> leftovers = LeftoverStagingDirs(options.destination);
  if (!leftovers.empty() && !options.resume) {
    std::string list;
    for (const fs::path& p : leftovers) list += (list.empty() ? "" : " ") + p.string();
    Notice(observer, std::to_string(leftovers.size()) +
                         " unfinished output(s) of an interrupted earlier run lie next to the "
                         "destination; --resume continues one of this same conversion, or "
                         "delete them once no other conversion writes there: " +
                         list);
  }
  return options.direction == Direction::kToMaxText ? ToMaxText(options, plugins, observer)
                                                    : ToHf(options, plugins, observer);
}

}  // namespace ckptbridge::engine
