// `ckptbridge inspect`: what is in a checkpoint, tensor by tensor.
#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "host/base/checksum.h"
#include "host/base/file.h"
#include "host/base/json.h"
#include "host/cli/commands.h"
#include "host/cli/format.h"
#include "host/engine/convert.h"
#include "host/engine/receipt.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/safetensors/reader.h"

namespace ckptbridge::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kHelp = R"(Usage: ckptbridge inspect [options] PATH

Lists every tensor of a checkpoint - name, dtype, shape, bytes and where it is
stored - reading only headers and metadata (unless --checksums).

PATH is either
  a Hugging Face folder (or one .safetensors file): tensors come from
    model.safetensors.index.json and the shard headers, which are validated
    and cross-checked; the plugin that would convert it is named; or
  an Orbax/MaxText checkpoint: its root, a step directory or an items
    directory; shows the storage variant, whether layers are scanned, what
    ckptbridge recorded when it wrote it (source, plugin, MaxText model
    settings) and each array with its chunk shape and bytes on disk.

Either way, an output of `ckptbridge convert` shows its receipt: ckptbridge
and plugin versions, the rule-table hash, the flags, the dtype decisions,
the source files with their XXH3-128 hashes and, after `convert --verify`,
the verification result (`--json` includes the whole receipt).

Examples:
  ckptbridge inspect path/to/Llama-3.1-8B
  ckptbridge inspect --checksums out/mt/0/items
  ckptbridge inspect --json path/to/hf | jq '.tensors[].name'

Options)";

std::string Hex32(uint32_t v) {
  std::ostringstream os;
  os << std::hex << std::setw(8) << std::setfill('0') << v;
  return os.str();
}

std::string GroupedNumber(uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

json ShapeJson(const Shape& shape) { return json(shape); }

// The plugin line for a config.json, or why there is none.
std::string PluginFor(const json& config, const Result<PluginRegistry>& plugins) {
  if (!plugins.ok()) return "(plugins not loaded: " + plugins.status().message() + ")";
  std::string model_type;
  Result<const LoadedPlugin*> plugin = engine::SelectPlugin(*plugins, config, "", &model_type);
  if (!plugin.ok()) return "none (" + plugin.status().message() + ")";
  return (*plugin)->name + " " + (*plugin)->version + " (model_type " + model_type + ")";
}

// A receipt field as text: strings as they are, anything else as JSON, "?"
// when absent (a receipt from another version may lack it).
std::string Field(const json& object, const char* key) {
  if (!object.is_object() || !object.contains(key)) return "?";
  const json& value = object[key];
  return value.is_string() ? value.get<std::string>() : value.dump();
}

uint64_t Count(const json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_number_unsigned()) return 0;
  return object[key].get<uint64_t>();
}

// Source files shown by name and hash; the rest are counted.
constexpr size_t kReceiptFilesShown = 3;

// The "receipt" section of `inspect`: who converted this, from what, how,
// and whether it was verified.
void PrintReceipt(std::ostream& out, const Result<std::optional<json>>& found) {
  if (!found.ok()) {
    out << "  receipt   unreadable (" << found.status().message() << ")\n";
    return;
  }
  if (!found->has_value()) {
    out << "  receipt   none (not written by ckptbridge, or by a version without receipts)\n";
    return;
  }
  const json& r = **found;
  const json empty = json::object();
  auto part = [&](const char* key) -> const json& {
    return r.contains(key) && r[key].is_object() ? r[key] : empty;
  };
  const json& plugin = part("plugin");
  out << "  receipt   ckptbridge " << Field(part("ckptbridge"), "version") << ", plugin "
      << Field(plugin, "name") << " " << Field(plugin, "version") << " (ABI "
      << Field(plugin, "abi") << "), written " << Field(r, "written_at") << '\n';
  const json& rules = part("rules");
  out << "    rules     " << Field(rules, "hash") << " (" << Count(rules, "rules") << " rules, "
      << Count(rules, "ignores") << " ignores, " << Count(rules, "renames") << " renames)\n";
  std::string flags;
  for (const auto& [key, value] : part("flags").items()) {
    flags += (flags.empty() ? "" : " ") + key + "=" +
             (value.is_string() ? value.get<std::string>() : value.dump());
  }
  out << "    flags     " << flags << '\n';
  std::string dtypes;
  for (const auto& [dtype, decision] : part("dtypes").items()) {
    std::string from;
    if (decision.is_object() && decision.contains("from") && decision["from"].is_object()) {
      for (const auto& [source, n] : decision["from"].items()) {
        from += (from.empty() ? "" : ", ") + source + " x" + n.dump();
      }
    }
    dtypes += (dtypes.empty() ? "" : "; ") + dtype + " x" +
              std::to_string(Count(decision, "tensors")) + " (from " + from + ")";
  }
  out << "    dtypes    " << dtypes << '\n';
  const json& source = part("source");
  out << "    source    " << Field(source, "format") << " " << Field(source, "path") << ", "
      << Count(source, "file_count") << " files, " << HumanBytes(Count(source, "bytes")) << " ("
      << Field(source, "hash") << ")\n";
  if (source.contains("files") && source["files"].is_array()) {
    const json& files = source["files"];
    for (size_t i = 0; i < files.size() && i < kReceiptFilesShown; ++i) {
      out << "              " << Field(files[i], "xxh3_128") << "  " << Field(files[i], "path")
          << '\n';
    }
    if (files.size() > kReceiptFilesShown) {
      out << "              ... and " << files.size() - kReceiptFilesShown
          << " more (inspect --json lists them)\n";
    }
  }
  if (!r.contains("verification") || !r["verification"].is_object()) {
    out << "    verified  not run (convert --verify records it here)\n";
    return;
  }
  const json& v = r["verification"];
  out << "    verified  " << Field(v, "result") << " at " << Field(v, "verified_at");
  if (v.contains("error")) {
    out << ": " << Field(v, "error") << '\n';
    return;
  }
  out << ": " << Count(v, "tensors") << " tensors, " << Count(v, "exact") << " exact, "
      << Count(v, "within_rounding") << " within rounding, " << Count(v, "beyond_rounding")
      << " beyond, max ULP " << Count(v, "max_ulp") << ", " << Count(v, "fingerprint_failures")
      << " fingerprint failures\n";
}

json ReceiptJson(const Result<std::optional<json>>& found) {
  if (!found.ok()) return {{"error", found.status().message()}};
  return found->has_value() ? **found : json(nullptr);
}

int InspectHf(const fs::path& path, bool as_json, bool checksums,
              const Result<PluginRegistry>& plugins, std::ostream& out, std::ostream& err) {
  Result<std::unique_ptr<safetensors::Checkpoint>> opened = safetensors::Checkpoint::Open(path);
  if (!opened.ok()) return ReportError(err, "inspect", opened.status());
  const safetensors::Checkpoint& ckpt = **opened;

  json config;
  const fs::path config_path =
      fs::is_directory(path) ? path / "config.json" : path.parent_path() / "config.json";
  if (fs::exists(config_path)) {
    Result<json> parsed = ParseJsonFile(config_path);
    if (parsed.ok()) {
      config = std::move(*parsed);
    } else {
      err << "ckptbridge inspect: note: " << parsed.status().message() << '\n';
    }
  }

  std::map<std::string, int> dtypes;
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"NAME", "DTYPE", "SHAPE", "BYTES", "FILE"});
  if (checksums) rows[0].push_back("CRC32C");
  json tensors = json::array();
  for (const safetensors::CheckpointTensor& t : ckpt.tensors()) {
    const std::string dtype(SafetensorsName(t.info->dtype));
    ++dtypes[dtype];
    const std::string file = t.file->path().filename().string();
    std::vector<std::string> row = {t.info->name, dtype, ShapeString(t.info->shape, true),
                                    std::to_string(t.info->num_bytes()), file};
    json entry = {{"name", t.info->name},
                  {"dtype", dtype},
                  {"shape", ShapeJson(t.info->shape)},
                  {"bytes", t.info->num_bytes()},
                  {"file", file}};
    if (checksums) {
      const std::string crc = Hex32(ComputeCrc32c(t.file->Data(*t.info), t.info->num_bytes()));
      row.push_back(crc);
      entry["crc32c"] = crc;
    }
    rows.push_back(std::move(row));
    tensors.push_back(std::move(entry));
  }
  std::string dtype_list;
  for (const auto& [name, count] : dtypes) {
    dtype_list += (dtype_list.empty() ? "" : ", ") + name + " x" + std::to_string(count);
  }
  const Result<std::optional<json>> receipt = engine::ReadHfReceipt(path, ckpt);

  if (as_json) {
    json doc = {{"format", "huggingface"},
                {"path", path.string()},
                {"files", json::array()},
                {"tensor_count", ckpt.tensors().size()},
                {"total_bytes", ckpt.total_bytes()},
                {"has_index", ckpt.has_index()},
                {"warnings", ckpt.warnings()},
                {"tensors", tensors}};
    for (const auto& f : ckpt.files()) doc["files"].push_back(f->path().filename().string());
    if (!config.is_null()) doc["plugin"] = PluginFor(config, plugins);
    doc["receipt"] = ReceiptJson(receipt);
    out << doc.dump(2) << '\n';
    return 0;
  }
  out << "Hugging Face checkpoint  " << path.string() << '\n';
  out << "  files     " << ckpt.files().size() << (ckpt.has_index() ? " (with index)" : "") << '\n';
  out << "  tensors   " << ckpt.tensors().size() << ", " << GroupedNumber(ckpt.total_bytes())
      << " bytes (" << HumanBytes(ckpt.total_bytes()) << "), " << dtype_list << '\n';
  if (config.is_null()) {
    out << "  config    no config.json\n";
  } else {
    out << "  plugin    " << PluginFor(config, plugins) << '\n';
  }
  for (const std::string& w : ckpt.warnings()) out << "  warning   " << w << '\n';
  PrintReceipt(out, receipt);
  out << '\n';
  PrintTable(out, rows);
  return 0;
}

// CRC-32C of an array's logical bytes (C order), read one slab of the first
// axis at a time so memory stays at one slab.
Result<uint32_t> ArrayChecksum(const orbax::ArrayReader& reader) {
  const orbax::ArrayMetadata& md = reader.metadata();
  Crc32c crc;
  const size_t element = DTypeSize(md.dtype);
  if (md.shape.empty()) {
    std::string bytes(element, '\0');
    CKB_RETURN_IF_ERROR(reader.ReadRegion({}, {}, bytes.data()));
    crc.Update(bytes.data(), bytes.size());
    return crc.value();
  }
  // C order means reading whole rows of axis 0. One row can cut through
  // every chunk of the grid, so read as many rows as one chunk holds (capped
  // at 64 MiB): each chunk is then decoded about once instead of once per row.
  const uint64_t row_bytes =
      static_cast<uint64_t>(NumElementsUnchecked(md.shape)) / md.shape[0] * element;
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>((uint64_t{64} << 20) / row_bytes));
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(md.chunk_shape[0], cap));
  for (int64_t i = 0; i < md.shape[0]; i += rows) {
    Shape slab = md.shape;
    slab[0] = std::min(rows, md.shape[0] - i);
    std::string bytes(static_cast<size_t>(NumElementsUnchecked(slab)) * element, '\0');
    std::vector<int64_t> origin(md.shape.size(), 0);
    origin[0] = i;
    CKB_RETURN_IF_ERROR(reader.ReadRegion(origin, slab, bytes.data()));
    crc.Update(bytes.data(), bytes.size());
  }
  return crc.value();
}

void PrintYaml(std::ostream& out, const json& object, const std::string& indent) {
  for (const auto& [key, value] : object.items())
    out << indent << key << ": " << value.dump() << '\n';
}

int InspectOrbax(const fs::path& path, bool as_json, bool checksums, std::ostream& out,
                 std::ostream& err) {
  Result<std::unique_ptr<orbax::ItemReader>> opened = orbax::ItemReader::Open(path);
  if (!opened.ok()) return ReportError(err, "inspect", opened.status());
  const orbax::ItemReader& item = **opened;
  const json& custom = item.tree().custom_metadata;
  const json* record = nullptr;
  if (custom.is_object() && custom.contains(engine::kMetadataKey))
    record = &custom[engine::kMetadataKey];

  std::vector<std::vector<std::string>> rows;
  rows.push_back({"NAME", "DTYPE", "SHAPE", "BYTES", "CHUNK", "STORED"});
  if (checksums) rows[0].push_back("CRC32C");
  json tensors = json::array();
  uint64_t total = 0, stored_total = 0;
  for (const orbax::ItemReader::ArrayEntry& array : item.arrays()) {
    const orbax::ArrayMetadata& md = array.metadata;
    const std::string name = array.leaf->name();
    const uint64_t bytes =
        static_cast<uint64_t>(NumElementsUnchecked(md.shape)) * DTypeSize(md.dtype);
    const uint64_t stored = item.StoredBytes(array);
    total += bytes;
    stored_total += stored;
    std::vector<std::string> row = {name,
                                    std::string(ZarrName(md.dtype)),
                                    ShapeString(md.shape, true),
                                    std::to_string(bytes),
                                    ShapeString(md.chunk_shape, true),
                                    std::to_string(stored)};
    json entry = {{"name", name},
                  {"dtype", ZarrName(md.dtype)},
                  {"shape", ShapeJson(md.shape)},
                  {"bytes", bytes},
                  {"chunk_shape", ShapeJson(md.chunk_shape)},
                  {"stored_bytes", stored},
                  {"file", name}};
    if (checksums) {
      Result<uint32_t> crc = ArrayChecksum(*item.Reader(array));
      if (!crc.ok()) return ReportError(err, "inspect", crc.status());
      row.push_back(Hex32(*crc));
      entry["crc32c"] = Hex32(*crc);
    }
    rows.push_back(std::move(row));
    tensors.push_back(std::move(entry));
  }
  const std::string storage = std::string(item.uses_zarr3() ? "zarr3" : "zarr2") +
                              (item.uses_ocdbt() ? " in OCDBT" : ", no OCDBT");
  const Result<std::optional<json>> receipt =
      engine::OrbaxReceipt(custom, (item.location().item_dir / "_METADATA").string());
  std::string layers = "unknown";
  if (custom.is_object() && custom.contains("scan_layers") && custom["scan_layers"].is_boolean()) {
    layers = custom["scan_layers"].get<bool>() ? "scanned" : "unscanned";
  }

  if (as_json) {
    json doc = {{"format", "orbax"},         {"path", item.location().item_dir.string()},
                {"storage", storage},        {"layers", layers},
                {"total_bytes", total},      {"stored_bytes", stored_total},
                {"custom_metadata", custom}, {"tensors", tensors}};
    if (item.location().step) doc["step"] = *item.location().step;
    doc["receipt"] = ReceiptJson(receipt);
    out << doc.dump(2) << '\n';
    return 0;
  }
  out << "Orbax checkpoint  " << item.location().item_dir.string() << '\n';
  if (item.location().step) out << "  step      " << *item.location().step << '\n';
  out << "  storage   " << storage << '\n';
  out << "  layers    " << layers << '\n';
  out << "  tensors   " << item.arrays().size() << " arrays, " << GroupedNumber(total) << " bytes ("
      << HumanBytes(total) << "), " << HumanBytes(stored_total) << " on disk\n";
  if (record && record->is_object()) {
    const json& r = *record;
    out << "  written   by ckptbridge " << r.value("version", std::string("?"));
    if (r.contains("plugin") && r["plugin"].is_object()) {
      out << ", plugin " << r["plugin"].value("name", std::string("?")) << " "
          << r["plugin"].value("version", std::string("?"));
    }
    out << ", model_type " << r.value("model_type", std::string("?")) << '\n';
    if (r.contains("source") && r["source"].is_object()) {
      out << "  source    " << r["source"].value("path", std::string("?")) << '\n';
    }
    if (r.contains("maxtext_config") && r["maxtext_config"].is_object()) {
      out << "  MaxText model settings (a model .yml):\n";
      PrintYaml(out, r["maxtext_config"], "    ");
    }
  }
  PrintReceipt(out, receipt);
  out << '\n';
  PrintTable(out, rows);
  return 0;
}

bool LooksLikeOrbax(const fs::path& path) { return orbax::ResolveItem(path).ok(); }

}  // namespace

int RunInspectCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  po::options_description options(kHelp);
  options.add_options()("help,h", "Show this help")("json", po::bool_switch(),
                                                    "Print one JSON document instead of a table")(
      "checksums", po::bool_switch(),
      "Also read every tensor and print the CRC-32C of its bytes (compare two checkpoints "
      "with it)");
  AddPluginOptions(options);
  po::options_description hidden;
  hidden.add_options()("path", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("path", -1);
  po::variables_map vars;
  if (!ParseArgs(args, "inspect", all, positional, vars, err)) return 2;
  if (vars.count("help")) {
    out << options << '\n';
    return 0;
  }
  const std::vector<std::string> paths =
      vars.count("path") ? vars["path"].as<std::vector<std::string>>() : std::vector<std::string>{};
  if (paths.size() != 1) {
    err << "ckptbridge inspect: expected one PATH\nsee `ckptbridge inspect --help`\n";
    return 2;
  }
  const fs::path path = paths[0];
  const bool as_json = vars["json"].as<bool>();
  const bool checksums = vars["checksums"].as<bool>();
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return ReportError(err, "inspect", NotFound(path.string() + ": no such file or directory"));
  }
  if (LooksLikeOrbax(path)) return InspectOrbax(path, as_json, checksums, out, err);
  bool has_safetensors = fs::is_regular_file(path, ec);
  if (fs::is_directory(path, ec)) {
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      has_safetensors |= entry.path().extension() == ".safetensors";
    }
  }
  if (!has_safetensors) {
    // Say what an Orbax reader would have wanted too.
    Result<orbax::ItemLocation> item = orbax::ResolveItem(path);
    return ReportError(
        err, "inspect",
        InvalidArgument(path.string() +
                        ": neither a Hugging Face checkpoint (no .safetensors files) nor an Orbax "
                        "checkpoint (" +
                        item.status().message() + ")"));
  }
  Result<PluginRegistry> plugins = DiscoverPlugins(vars);
  return InspectHf(path, as_json, checksums, plugins, out, err);
}

}  // namespace ckptbridge::cli
