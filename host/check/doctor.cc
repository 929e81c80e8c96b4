#include "host/check/doctor.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "host/base/file.h"
#include "host/base/json.h"
#include "host/engine/convert.h"
#include "host/engine/maxtext_tree.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/safetensors/reader.h"

namespace ckptbridge::check {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr size_t kMaxListed = 5;
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kTmpMarker = ".orbax-checkpoint-tmp";

std::string List(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < kMaxListed; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > kMaxListed) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

std::string Plural(size_t n, const std::string& word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

// The layer index in a name like "model.layers.12.mlp...", or -1.
int64_t LayerIndex(const std::string& name) {
  for (const std::string key : {".layers.", "layers."}) {
    size_t at = name.find(key);
    if (key == "layers." && at != 0) continue;
    if (at == std::string::npos) continue;
    at += key.size();
    size_t end = at;
    while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
    if (end > at && end < name.size() && name[end] == '.')
      return std::stoll(name.substr(at, end - at));
  }
  return -1;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool IsQuantizationTensor(const std::string& name) {
  for (const char* suffix : {"_scale_inv", "weight_scale", "_scales", "_blocks", ".scales",
                             ".biases", "input_scale", ".qweight", ".qzeros"}) {
    if (EndsWith(name, suffix)) return true;
  }
  return false;
}

// A config value at the top level or in text_config.
const json* ConfigValue(const json& config, const char* key) {
  if (!config.is_object()) return nullptr;
  if (config.contains(key)) return &config[key];
  if (config.contains("text_config") && config["text_config"].is_object() &&
      config["text_config"].contains(key)) {
    return &config["text_config"][key];
  }
  return nullptr;
}

struct TensorSeen {
  std::string file;
  DType dtype = DType::kInvalid;
  uint64_t bytes = 0;
};

class HfDoctor {
 public:
  HfDoctor(fs::path path, const PluginRegistry* plugins, DoctorReport& report)
      : path_(std::move(path)), plugins_(plugins), report_(report) {}

  void Run() {
    std::error_code ec;
    const bool single = fs::is_regular_file(path_, ec);
    dir_ = single ? path_.parent_path() : path_;
    ReadConfig(single);
    if (single) {
      ReadShard(path_);
    } else if (fs::exists(dir_ / kIndexName, ec)) {
      ReadIndexed();
    } else {
      std::vector<fs::path> files;
      for (const auto& entry : fs::directory_iterator(dir_, ec)) {
        if (entry.path().extension() == ".safetensors") files.push_back(entry.path());
      }
      std::sort(files.begin(), files.end());
      // As the reader does: model.safetensors alone when it is there.
      if (std::find(files.begin(), files.end(), dir_ / "model.safetensors") != files.end()) {
        for (const fs::path& f : files) {
          if (f.filename() != "model.safetensors") {
            Add(Severity::kWarning, "index-unused-shard",
                f.filename().string() +
                    " sits next to model.safetensors without an index; "
                    "only model.safetensors is read",
                "delete " + f.filename().string() + " if it is left over from another save");
          }
        }
        files = {dir_ / "model.safetensors"};
      }
      if (files.empty()) {
        Add(Severity::kError, "no-weights", dir_.string() + " holds no .safetensors file",
            "download the weights (*.safetensors) next to config.json");
      }
      for (const fs::path& f : files) ReadShard(f);
    }
    if (config_.is_object()) {
      CheckLayers();
      CheckTied();
      CheckQuantization();
      CheckDtype();
      CheckPlugin();
    }
    CheckFiles();
  }

 private:
  void Add(Severity severity, std::string code, std::string message, std::string fix) {
    report_.findings.push_back({severity, std::move(code), std::move(message), std::move(fix)});
  }

  void ReadConfig(bool single) {
    const fs::path file = dir_ / "config.json";
    std::error_code ec;
    if (!fs::exists(file, ec)) {
      Add(single ? Severity::kWarning : Severity::kError, "config-missing",
          "no config.json next to the weights in " + dir_.string(),
          "copy config.json from the model's release into " + dir_.string());
      return;
    }
    Result<std::string> text = ReadFile(file);
    if (!text.ok()) {
      Add(Severity::kError, "config-invalid", text.status().message(), "make config.json readable");
      return;
    }
    if (Result<json> parsed = ParseJsonText(*text, file.string()); parsed.ok()) {
      config_ = std::move(*parsed);
    } else {
      Add(Severity::kError, "config-invalid", parsed.status().message(),
          "restore config.json from the model's release");
    }
    if (!config_.is_null() && !config_.is_object()) {
      Add(Severity::kError, "config-invalid", file.string() + " is not a JSON object",
          "restore config.json from the model's release");
      config_ = json();
    }
  }

  // Reads one shard's header; returns false when the file is unusable.
  bool ReadShard(const fs::path& file) {
    Result<safetensors::File> opened = safetensors::File::Open(file);
    if (!opened.ok()) {
      Add(Severity::kError, "header-invalid", opened.status().message(),
          "download " + file.filename().string() + " again (it is truncated or not safetensors)");
      return false;
    }
    const std::string name = file.filename().string();
    const safetensors::File& f = *opened;
    if (!f.header().metadata.count("format")) ++files_without_format_;
    ++files_read_;
    size_t unaligned = 0;
    for (const safetensors::TensorInfo& t : f.tensors()) {
      const size_t size = std::max<size_t>(1, DTypeSize(t.dtype));
      if ((f.data_offset() + t.begin) % size != 0) ++unaligned;
      auto [it, inserted] = tensors_.emplace(t.name, TensorSeen{name, t.dtype, t.num_bytes()});
      if (!inserted) {
        duplicates_.push_back("'" + t.name + "' in " + it->second.file + " and " + name);
      }
      shard_of_[name].insert(t.name);
    }
    if (unaligned > 0) {
      unaligned_.push_back(name + " (" + Plural(unaligned, "tensor") + ", header of " +
                           std::to_string(f.header().header_bytes) + " bytes)");
    }
    return true;
  }

  void ReadIndexed() {
    const fs::path index_file = dir_ / kIndexName;
    json index;
    Result<json> parsed = ParseJsonFile(index_file);
    if (!parsed.ok()) {
      Add(Severity::kError, "index-invalid", parsed.status().message(),
          "restore " + std::string(kIndexName) + " from the model's release");
      return;
    }
    index = std::move(*parsed);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      Add(Severity::kError, "index-invalid", index_file.string() + " has no weight_map object",
          "restore " + std::string(kIndexName) + " from the model's release");
      return;
    }
    std::map<std::string, std::vector<std::string>> by_file;
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string()) continue;
      by_file[file.get<std::string>()].push_back(tensor);
      indexed_.insert(tensor);
    }
    std::vector<std::string> missing_files, stale, unlisted;
    std::error_code ec;
    for (const auto& [file, names] : by_file) {
      if (file.find('/') != std::string::npos || file == ".." || file.empty()) {
        Add(Severity::kError, "index-invalid",
            index_file.string() + " names shard '" + file + "' outside the folder",
            "fix the weight_map entry to a plain file name");
        continue;
      }
      if (!fs::exists(dir_ / file, ec)) {
        missing_files.push_back(file + " (" + Plural(names.size(), "tensor") + ")");
        // Tensors of a missing shard still count for the layer checks.
        for (const std::string& n : names)
          tensors_.emplace(n, TensorSeen{file, DType::kInvalid, 0});
        continue;
      }
      if (!ReadShard(dir_ / file)) continue;
      const std::set<std::string>& held = shard_of_[file];
      for (const std::string& n : names) {
        if (!held.count(n)) stale.push_back("'" + n + "' -> " + file);
      }
      for (const std::string& n : held) {
        if (!index["weight_map"].contains(n)) unlisted.push_back("'" + n + "' in " + file);
      }
    }
    if (!missing_files.empty()) {
      Add(Severity::kError, "index-missing-shard",
          Plural(missing_files.size(), "shard") + " listed in " + kIndexName +
              " are not in the folder: " + List(missing_files),
          "download the missing shards (a partial download?)");
    }
    if (!stale.empty()) {
      Add(Severity::kError, "index-stale-entry",
          Plural(stale.size(), "index entry") +
              " name tensors their shard does not hold: " + List(stale),
          "regenerate " + std::string(kIndexName) + " from the shard headers");
    }
    if (!unlisted.empty()) {
      Add(Severity::kWarning, "index-unlisted",
          Plural(unlisted.size(), "tensor") +
              " in the shards are not in the index and are "
              "ignored: " +
              List(unlisted),
          "add them to the weight_map if they belong to the model");
    }
    for (const auto& entry : fs::directory_iterator(dir_, ec)) {
      const std::string name = entry.path().filename().string();
      if (entry.path().extension() == ".safetensors" && !by_file.count(name)) {
        Add(Severity::kWarning, "index-unused-shard",
            name + " is not referenced by " + kIndexName + " (left over from another save?)",
            "delete " + name + " or regenerate the index");
      }
    }
    if (index.contains("metadata") && index["metadata"].is_object() &&
        index["metadata"].contains("total_size") && index["metadata"]["total_size"].is_number() &&
        missing_files.empty()) {
      uint64_t sum = 0;
      for (const auto& [n, t] : tensors_) sum += t.bytes;
      const auto total = index["metadata"]["total_size"].get<uint64_t>();
      if (total != sum) {
        Add(Severity::kWarning, "index-total-size",
            std::string(kIndexName) + " says total_size " + std::to_string(total) +
                " but the shards hold " + std::to_string(sum) + " tensor bytes",
            "regenerate the index (or ignore: readers do not use total_size)");
      }
    }
  }

  void CheckFiles() {
    if (!duplicates_.empty()) {
      Add(Severity::kError, "duplicate-tensor",
          Plural(duplicates_.size(), "tensor") + " appear in two shards: " + List(duplicates_),
          "delete the stale shard, or regenerate the index so each name has one home");
    }
    if (!unaligned_.empty()) {
      Add(Severity::kWarning, "unaligned-data",
          "tensor data is not aligned to its element size in " + List(unaligned_),
          "harmless for ckptbridge (it copies); loaders that map tensors in place want the header "
          "padded to 8 bytes: re-save with the safetensors library");
    }
    if (files_without_format_ > 0) {
      Add(Severity::kWarning, "format-metadata-missing",
          Plural(files_without_format_, "file") + " of " + std::to_string(files_read_) +
              " have no __metadata__ \"format\" entry",
          "some loaders (older transformers) refuse such files: re-save with "
          "metadata={\"format\": \"pt\"} (ckptbridge's HF output has it)");
    }
  }

  void CheckLayers() {
    const json* n = ConfigValue(config_, "num_hidden_layers");
    std::set<int64_t> layers;
    for (const auto& [name, t] : tensors_) {
      const int64_t i = LayerIndex(name);
      if (i >= 0) layers.insert(i);
    }
    if (layers.empty()) return;
    const int64_t max = *layers.rbegin();
    const int64_t declared = n && n->is_number_integer() ? n->get<int64_t>() : -1;
    const int64_t end = std::max(max + 1, declared);
    std::vector<std::string> holes;
    for (int64_t i = 0; i < end; ++i) {
      if (!layers.count(i) && (declared < 0 || i < declared)) holes.push_back(std::to_string(i));
    }
    if (!holes.empty()) {
      const bool all_after = declared > 0 && std::stoll(holes.front()) > max;
      Add(Severity::kError, all_after ? "layers-missing" : "layer-holes",
          all_after ? "config.json says num_hidden_layers " + std::to_string(declared) +
                          " but the weights stop at layer " + std::to_string(max)
                    : "layer " + std::string(holes.size() == 1 ? "index " : "indices ") +
                          List(holes) + " have no tensors",
          "download the missing shards, or fix num_hidden_layers in config.json");
    }
    if (declared >= 0 && max >= declared) {
      std::vector<std::string> extra;
      for (int64_t i : layers) {
        if (i >= declared) extra.push_back(std::to_string(i));
      }
      int64_t mtp = -1;
      for (const char* key : {"num_nextn_predict_layers", "mtp_num_hidden_layers"}) {
        if (const json* v = ConfigValue(config_, key); v && v->is_number_integer())
          mtp = v->get<int64_t>();
      }
      if (mtp == static_cast<int64_t>(extra.size())) {
        Add(Severity::kInfo, "mtp-layers",
            Plural(extra.size(), "multi-token-prediction layer") + " past num_hidden_layers " +
                std::to_string(declared) + ": " + List(extra),
            "converted only with --mtp; skipped (with a note) otherwise");
      } else {
        Add(Severity::kWarning, "mtp-layers-mismatch",
            "layers " + List(extra) + " are past num_hidden_layers " + std::to_string(declared) +
                (mtp < 0 ? " and config.json declares no MTP layers"
                         : " but config.json declares " + std::to_string(mtp) + " MTP layers"),
            "set num_nextn_predict_layers to " + std::to_string(extra.size()) +
                ", or remove the stale layers");
      }
    }
  }

  void CheckTied() {
    bool has_embed = false, has_head = false;
    for (const auto& [name, t] : tensors_) {
      has_embed |= name.find("embed_tokens") != std::string::npos;
      has_head |= name.rfind("lm_head.", 0) == 0 || name.find(".lm_head.") != std::string::npos;
    }
    if (!has_embed) return;
    const json* tie = ConfigValue(config_, "tie_word_embeddings");
    if (tie && tie->is_boolean() && tie->get<bool>() && has_head) {
      Add(Severity::kWarning, "tied-with-lm-head",
          "tie_word_embeddings is true but lm_head is present; it will be ignored",
          "set tie_word_embeddings to false if the head was trained separately");
    } else if (tie && tie->is_boolean() && !tie->get<bool>() && !has_head) {
      Add(Severity::kError, "untied-without-lm-head",
          "tie_word_embeddings is false but there is no lm_head.weight",
          "set tie_word_embeddings to true if the embedding is the output layer, or restore "
          "lm_head.weight");
    } else if (!tie && !has_head) {
      Add(Severity::kInfo, "tied-implicit",
          "config.json does not say tie_word_embeddings and there is no lm_head: the embedding "
          "is the output layer",
          "add \"tie_word_embeddings\": true to config.json to make it explicit");
    }
  }

  void CheckQuantization() {
    const json* qc = ConfigValue(config_, "quantization_config");
    const bool has_qc = qc && qc->is_object();
    const bool mlx = config_.contains("quantization") && config_["quantization"].is_object();
    std::vector<std::string> quant;
    std::vector<std::string> fp8_unscaled;
    for (const auto& [name, t] : tensors_) {
      const bool packed = t.dtype == DType::kU32 || t.dtype == DType::kU8 || t.dtype == DType::kI8;
      if (IsQuantizationTensor(name) || packed || t.dtype == DType::kF8E4M3 ||
          t.dtype == DType::kF8E5M2) {
        quant.push_back(name);
      }
      if ((t.dtype == DType::kF8E4M3 || t.dtype == DType::kF8E5M2) &&
          !tensors_.count(name + "_scale_inv") && !tensors_.count(name + "_scale") &&
          EndsWith(name, "weight")) {
        if (!tensors_.count(name.substr(0, name.size() - 6) + "weight_scale")) {
          fp8_unscaled.push_back(name);
        }
      }
    }
    if (mlx) {
      const json& q = config_["quantization"];
      Add(Severity::kError, "mlx-quantized",
          "MLX-quantized weights (" + std::to_string(q.value("bits", 0)) + "-bit, group size " +
              std::to_string(q.value("group_size", 0)) +
              "): packed integers and scales, not the original weights",
          "convert the unquantized release, or dequantize first (mlx_lm.convert --dequantize)");
    } else if (has_qc && quant.empty() && !tensors_.empty()) {
      Add(Severity::kError, "quantization-config-without-tensors",
          "config.json has quantization_config (quant_method '" +
              qc->value("quant_method", std::string("?")) +
              "') but no tensor is quantized (no scales, no 8-bit or packed dtypes)",
          "remove quantization_config from config.json: these weights are not quantized");
    } else if (!has_qc && !quant.empty()) {
      Add(Severity::kError, "quantized-without-config",
          Plural(quant.size(), "tensor") + " look quantized (" + List(quant) +
              ") but config.json has no quantization_config",
          "restore quantization_config from the model's release");
    }
    if (!fp8_unscaled.empty()) {
      Add(Severity::kError, "fp8-scale-missing",
          Plural(fp8_unscaled.size(), "FP8 weight") + " have no scale tensor (" +
              List(fp8_unscaled) + "): cast without it, the values are wrong by the block scales",
          "download the *_scale_inv tensors with the weights");
    }
  }

  void CheckDtype() {
    std::map<DType, uint64_t> bytes;
    for (const auto& [name, t] : tensors_) {
      if (t.dtype == DType::kInvalid || IsQuantizationTensor(name) || !IsFloating(t.dtype) ||
          DTypeSize(t.dtype) == 1) {
        continue;
      }
      bytes[t.dtype] += t.bytes;
    }
    if (bytes.empty()) return;
    DType actual = bytes.begin()->first;
    for (const auto& [d, n] : bytes) {
      if (n > bytes[actual]) actual = d;
    }
    const json* declared = ConfigValue(config_, "torch_dtype");
    if (!declared) declared = ConfigValue(config_, "dtype");
    const std::string actual_name(ZarrName(actual));
    if (!declared || !declared->is_string()) {
      Add(Severity::kInfo, "torch-dtype-missing",
          "config.json has no torch_dtype; the weights are mostly " + actual_name,
          "add \"torch_dtype\": \"" + actual_name + "\" (export to HF uses it as the default)");
      return;
    }
    const std::optional<DType> d = DTypeFromTorchName(declared->get<std::string>());
    if (d && *d != actual) {
      Add(Severity::kWarning, "torch-dtype-mismatch",
          "config.json says torch_dtype " + declared->get<std::string>() +
              " but the weights are mostly " + actual_name,
          "set torch_dtype to \"" + actual_name + "\", or pass --save-dtype to choose the output");
    }
  }

  void CheckPlugin() {
    if (!plugins_) return;
    std::string model_type;
    Result<const LoadedPlugin*> plugin = engine::SelectPlugin(*plugins_, config_, "", &model_type);
    if (!plugin.ok()) {
      Add(Severity::kError, "no-plugin", plugin.status().message(),
          "install a plugin for this family (--plugin FILE), or pass --family if another serves "
          "it");
    }
  }

  fs::path path_;
  fs::path dir_;
  const PluginRegistry* plugins_;
  DoctorReport& report_;
  json config_;
  std::map<std::string, TensorSeen> tensors_;
  std::map<std::string, std::set<std::string>> shard_of_;
  std::set<std::string> indexed_;
  std::vector<std::string> duplicates_;
  std::vector<std::string> unaligned_;
  size_t files_without_format_ = 0;
  size_t files_read_ = 0;
};

bool HasTmpComponent(const fs::path& path) {
  for (const fs::path& part : path) {
    if (part.string().find(kTmpMarker) != std::string::npos) return true;
  }
  return false;
}

void DoctorOrbax(const fs::path& path, bool looks_orbax, DoctorReport& report) {
  auto add = [&](Severity s, std::string code, std::string message, std::string fix) {
    report.findings.push_back({s, std::move(code), std::move(message), std::move(fix)});
  };
  std::error_code ec;
  if (HasTmpComponent(fs::absolute(path, ec))) {
    add(Severity::kError, "orbax-temporary",
        path.string() + " is a temporary directory (" + kTmpMarker +
            "): the save that wrote it did not finish",
        "rerun the save, or point at the last committed step");
    return;
  }
  // Leftovers of interrupted saves next to committed steps.
  std::vector<std::string> leftovers, steps;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find(kTmpMarker) != std::string::npos) leftovers.push_back(name);
    if (!name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c));
        }))
      steps.push_back(name);
  }
  if (!leftovers.empty()) {
    add(Severity::kWarning, "orbax-leftover-temporary",
        "unfinished saves next to the checkpoint: " + List(leftovers),
        "delete them (they are never read, but hold disk space)");
  }
  if (steps.size() > 1) {
    std::sort(steps.begin(), steps.end(), [](const std::string& a, const std::string& b) {
      return std::stoll(a) < std::stoll(b);
    });
    add(Severity::kInfo, "orbax-several-steps",
        Plural(steps.size(), "step") + " (" + List(steps) + "); step " + steps.back() + " is read",
        "pass " + (path / steps.front()).string() + " to read another step");
  }
  Result<orbax::ItemLocation> location = orbax::ResolveItem(path);
  if (!location.ok()) {
    // A step whose item has another name (tunix: model_params).
    std::vector<std::string> items;
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      if (entry.is_directory() && fs::exists(entry.path() / "_METADATA", ec)) {
        items.push_back(entry.path().filename().string());
      }
    }
    if (!items.empty()) {
      add(Severity::kError, "orbax-item-name",
          path.string() + " is a step directory whose item is '" + items[0] +
              "', not 'items' (MaxText's name)",
          "pass " + (path / items[0]).string() + " itself");
    } else if (looks_orbax) {
      add(Severity::kError, "orbax-unreadable", location.status().message(),
          "point at an Orbax root, step or item directory");
    } else {
      add(Severity::kError, "unknown-layout",
          path.string() + " is neither a Hugging Face folder nor an Orbax checkpoint",
          "point at a folder with config.json and *.safetensors, or an Orbax root/step/item");
    }
    return;
  }
  if (!location->step_dir.empty() && location->item_dir.filename() != "items") {
    add(Severity::kInfo, "orbax-item-name",
        "the item of step " + location->step_dir.filename().string() + " is '" +
            location->item_dir.filename().string() + "', not 'items' (MaxText's name)",
        "give MaxText " + location->item_dir.string() + " itself as load_parameters_path");
  }
  Result<std::unique_ptr<orbax::ItemReader>> item = orbax::ItemReader::Open(path);
  if (!item.ok()) {
    add(Severity::kError, "orbax-unreadable", item.status().message(),
        "restore the missing or damaged file from the original save");
    return;
  }
  const orbax::ItemReader& reader = **item;
  if (!reader.tree().use_ocdbt) {
    add(Severity::kInfo, "orbax-no-use-ocdbt",
        "_METADATA has no use_ocdbt (an older Orbax); OCDBT " +
            std::string(reader.uses_ocdbt() ? "detected from manifest.ocdbt" : "not used"),
        "nothing to do");
  }
  Result<engine::MaxTextTree> tree = engine::MaxTextTree::Build(reader);
  if (!tree.ok()) {
    add(Severity::kInfo, "orbax-not-maxtext",
        "no MaxText parameters in " + reader.location().item_dir.string() + ": " +
            tree.status().message(),
        "convert --to hf needs a MaxText checkpoint (params.params.decoder..., or NNX)");
    return;
  }
  const json& custom = reader.tree().custom_metadata;
  if (!custom.is_object() || !custom.contains(engine::kMetadataKey)) {
    add(Severity::kInfo, "orbax-no-hf-config",
        "the checkpoint does not record its Hugging Face config (not written by ckptbridge)",
        "pass --hf-config FILE or --model NAME to convert --to hf");
  }
}

}  // namespace

std::string_view SeverityName(Severity severity) {
  switch (severity) {
    case Severity::kError:
      return "error";
    case Severity::kWarning:
      return "warning";
    case Severity::kInfo:
      break;
  }
  return "info";
}

size_t DoctorReport::Count(Severity severity) const {
  return static_cast<size_t>(std::count_if(
      findings.begin(), findings.end(), [&](const Finding& f) { return f.severity == severity; }));
}

bool DoctorReport::Has(const std::string& code) const {
  return std::any_of(findings.begin(), findings.end(),
                     [&](const Finding& f) { return f.code == code; });
}

Result<DoctorReport> Doctor(const fs::path& path, const PluginRegistry* plugins) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return NotFound(path.string() + ": no such file or directory");
  DoctorReport report;
  report.kind = DetectKind(path);
  if (report.kind == PathKind::kHf) {
    HfDoctor(path, plugins, report).Run();
  } else {
    DoctorOrbax(path, report.kind == PathKind::kOrbax, report);
  }
  std::stable_sort(report.findings.begin(), report.findings.end(),
                   [](const Finding& a, const Finding& b) { return a.severity < b.severity; });
  return report;
}

}  // namespace ckptbridge::check
