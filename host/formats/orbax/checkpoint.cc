#include "host/formats/orbax/checkpoint.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <system_error>
#include <utility>

#include "host/base/box.h"
#include "host/base/file.h"

namespace ckptbridge::orbax {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

constexpr std::string_view kTmpMarker = ".orbax-checkpoint-tmp";
constexpr std::string_view kMetadataFile = "_METADATA";
constexpr std::string_view kCheckpointMetadataFile = "_CHECKPOINT_METADATA";
constexpr std::string_view kCommitFile = "commit_success.txt";
constexpr std::string_view kOcdbtManifest = "manifest.ocdbt";
constexpr std::string_view kPyTreeHandler =
    "orbax.checkpoint._src.handlers.pytree_checkpoint_handler.PyTreeCheckpointHandler";

// ---------------------------------------------------------------------------
// Python-compatible text. Orbax writes its JSON with Python's json.dumps
// (", " and ": " separators, non-ASCII escaped) and keys _METADATA entries
// with str(tuple(keys)); we write the same so the files read like Orbax's.

// Python's repr() of a str: single quotes unless the text has a ' and no ".
std::string PyRepr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(1, quote);
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\\' || c == quote) {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  out += quote;
  return out;
}

// str(tuple(keys)): "('a',)" for one key, "('a', 'b')" for more.
std::string PyTuple(const std::vector<std::string>& keys) {
  std::string out = "(";
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i) out += ", ";
    out += PyRepr(keys[i]);
  }
  if (keys.size() == 1) out += ",";
  return out + ")";
}

template <typename J>
void DumpPython(const J& value, std::string& out) {
  // Invalid UTF-8 (say, a path from the file system) must not throw.
  auto scalar = [](const J& v) { return v.dump(-1, ' ', true, J::error_handler_t::replace); };
  if (value.is_object()) {
    out += '{';
    bool first = true;
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (!first) out += ", ";
      first = false;
      out += scalar(J(it.key()));
      out += ": ";
      DumpPython(it.value(), out);
    }
    out += '}';
  } else if (value.is_array()) {
    out += '[';
    for (size_t i = 0; i < value.size(); ++i) {
      if (i) out += ", ";
      DumpPython(value[i], out);
    }
    out += ']';
  } else {
    out += scalar(value);
  }
}

template <typename J>
std::string PythonJson(const J& value) {
  std::string out;
  DumpPython(value, out);
  return out;
}

// A JSON value kept in key order for PythonJson (custom metadata arrives
// with sorted keys; the round trip keeps them sorted).
ordered_json Ordered(const json& value) {
  return ordered_json::parse(value.dump(-1, ' ', false, json::error_handler_t::replace));
}

Result<json> ParseJsonFile(const fs::path& path) {
  CKB_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseMetadataJson(text, path.string());
}

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------
// Directories.

bool IsFile(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

bool IsDirectory(const fs::path& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

// `path` without "." / ".." detours or a trailing separator.
fs::path Clean(const fs::path& path) {
  fs::path clean = path.lexically_normal();
  if (clean.has_relative_path() && clean.filename().empty()) clean = clean.parent_path();
  return clean;
}

fs::path ParentOf(const fs::path& clean) {
  if (clean.has_parent_path() && clean.filename() != "..") return clean.parent_path();
  std::error_code ec;
  return Clean(fs::absolute(clean, ec)).parent_path();
}

// The step of a step directory name: "<n>" or "<prefix>_<n>" (Orbax's
// step.py name formats); nullopt for any other name.
std::optional<int64_t> StepFromName(const std::string& name) {
  const size_t underscore = name.rfind('_');
  const std::string digits = underscore == std::string::npos ? name : name.substr(underscore + 1);
  if (digits.empty() || digits.size() > 18) return std::nullopt;
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoll(digits);
}

// Sorted names of the subdirectories of `dir`.
std::vector<std::string> Subdirectories(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_directory(type_ec)) names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The per-process OCDBT databases Orbax writes while saving
// ("ocdbt.process_0", ...), sorted.
std::vector<std::string> ProcessDatabases(const fs::path& item_dir) {
  std::vector<std::string> names;
  for (const std::string& name : Subdirectories(item_dir)) {
    if (name.rfind("ocdbt.process_", 0) == 0) names.push_back(name);
  }
  return names;
}

// The item inside step directory `step_dir`: `items/`, or the one
// subdirectory holding _METADATA (composite checkpoints name items freely,
// e.g. `state/` or `model_params/`).
Result<ItemLocation> ResolveInStep(const fs::path& step_dir) {
  ItemLocation location;
  location.step_dir = step_dir;
  location.step = StepFromName(step_dir.filename().string());
  if (IsFile(step_dir / "items" / kMetadataFile)) {
    location.item_dir = step_dir / "items";
    return location;
  }
  std::vector<std::string> items;
  for (const std::string& name : Subdirectories(step_dir)) {
    if (name.find(kTmpMarker) == std::string::npos && IsFile(step_dir / name / kMetadataFile)) {
      items.push_back(name);
    }
  }
  if (items.size() > 1) {
    return InvalidArgument(step_dir.string() + ": several Orbax items (" + JoinNames(items) +
                           "); pass the item directory, e.g. " + (step_dir / items[0]).string());
  }
  if (items.empty()) {
    return NotFound("no _METADATA, items/_METADATA or item subdirectory in step directory " +
                    step_dir.string());
  }
  location.item_dir = step_dir / items[0];
  return location;
}

// ---------------------------------------------------------------------------
// _METADATA parsing.

Result<LeafMetadata> ParseEntry(const std::string& entry_key, const json& entry,
                                std::string_view label) {
  const std::string where = std::string(label) + ": entry \"" + entry_key + "\": ";
  if (!entry.is_object()) return InvalidArgument(where + "not an object");
  LeafMetadata leaf;
  auto key_metadata = entry.find("key_metadata");
  if (key_metadata == entry.end()) return InvalidArgument(where + "missing key_metadata");
  if (!key_metadata->is_array()) return InvalidArgument(where + "key_metadata is not an array");
  for (const json& key : *key_metadata) {
    if (!key.is_object() || !key.contains("key") || !key["key"].is_string()) {
      return InvalidArgument(where + "key_metadata entry " + key.dump() + " has no string \"key\"");
    }
    const json* type = key.contains("key_type") ? &key["key_type"] : nullptr;
    if (!type || !type->is_number_integer() ||
        (*type != kKeyTypeSequence && *type != kKeyTypeDict)) {
      return InvalidArgument(where + "key_metadata entry " + key.dump() +
                             " has no key_type 1 (sequence) or 2 (dict)");
    }
    leaf.keys.push_back(key["key"].get<std::string>());
    leaf.key_types.push_back(type->get<int>());
  }
  auto value_metadata = entry.find("value_metadata");
  if (value_metadata == entry.end()) return InvalidArgument(where + "missing value_metadata");
  if (!value_metadata->is_object()) {
    return InvalidArgument(where + "value_metadata is not an object");
  }
  auto value_type = value_metadata->find("value_type");
  if (value_type == value_metadata->end()) {
    return InvalidArgument(where + "missing value_metadata.value_type");
  }
  if (!value_type->is_string()) {
    return InvalidArgument(where + "value_metadata.value_type is not a string");
  }
  leaf.value_type = value_type->get<std::string>();
  auto skip = value_metadata->find("skip_deserialize");
  if (skip == value_metadata->end()) {
    return InvalidArgument(where + "missing value_metadata.skip_deserialize");
  }
  if (!skip->is_boolean()) {
    return InvalidArgument(where + "value_metadata.skip_deserialize is not a bool");
  }
  leaf.skip_deserialize = skip->get<bool>();
  auto write_shape = value_metadata->find("write_shape");
  if (write_shape != value_metadata->end() && !write_shape->is_null()) {
    Shape shape;
    bool valid = write_shape->is_array();
    if (valid) {
      for (const json& d : *write_shape) {
        valid = valid && d.is_number_integer() && d.get<int64_t>() >= 0;
        if (valid) shape.push_back(d.get<int64_t>());
      }
    }
    if (!valid) {
      return InvalidArgument(where + "value_metadata.write_shape " + write_shape->dump() +
                             " is not a shape");
    }
    leaf.write_shape = std::move(shape);
  }
  return leaf;
}

Result<bool> OptionalBool(const json& root, std::string_view name, bool default_value,
                          std::string_view label) {
  auto it = root.find(name);
  if (it == root.end() || it->is_null()) return default_value;
  if (!it->is_boolean()) {
    return InvalidArgument(std::string(label) + ": " + std::string(name) + " is " + it->dump() +
                           ", not a bool");
  }
  return it->get<bool>();
}

// ---------------------------------------------------------------------------
// Writer helpers.

Status CheckKeyPath(const std::vector<std::string>& keys) {
  if (keys.empty()) return InvalidArgument("empty key path");
  for (const std::string& key : keys) {
    std::string why;
    if (key.empty()) {
      why = "is empty";
    } else if (key == "." || key == "..") {
      why = "is not a usable directory name";
    } else if (key.find('.') != std::string::npos) {
      why = "contains '.', which would make the dotted parameter name ambiguous";
    } else if (key.find('/') != std::string::npos) {
      why = "contains '/'";
    } else if (key.find('\0') != std::string::npos) {
      why = "contains a NUL byte";
    }
    if (!why.empty()) {
      return InvalidArgument("key path " + PyTuple(keys) + ": key " + PyRepr(key) + " " + why);
    }
  }
  return Status::Ok();
}

LeafMetadata DictLeaf(const std::vector<std::string>& keys, std::string value_type,
                      bool skip_deserialize) {
  LeafMetadata leaf;
  leaf.keys = keys;
  leaf.key_types.assign(keys.size(), kKeyTypeDict);
  leaf.value_type = std::move(value_type);
  leaf.skip_deserialize = skip_deserialize;
  return leaf;
}

std::string CommitText(const fs::path& dir) {
  return "Checkpoint commit was successful to " + dir.string();
}

}  // namespace

// ---------------------------------------------------------------------------
// LeafMetadata / TreeMetadata

std::string LeafMetadata::name() const {
  std::string out;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i) out += '.';
    out += keys[i];
  }
  return out;
}

bool LeafMetadata::is_array() const {
  return !skip_deserialize &&
         (value_type == "jax.Array" || value_type == "np.ndarray" || value_type == "scalar");
}

Result<TreeMetadata> TreeMetadata::Parse(std::string_view text, std::string_view label) {
  CKB_ASSIGN_OR_RETURN(json root, ParseMetadataJson(text, label));
  if (!root.is_object()) return InvalidArgument(std::string(label) + ": not a JSON object");
  TreeMetadata tree;
  auto entries = root.find("tree_metadata");
  if (entries == root.end()) return InvalidArgument(std::string(label) + ": missing tree_metadata");
  if (!entries->is_object()) {
    return InvalidArgument(std::string(label) + ": tree_metadata is not an object");
  }
  for (auto it = entries->begin(); it != entries->end(); ++it) {
    CKB_ASSIGN_OR_RETURN(LeafMetadata leaf, ParseEntry(it.key(), it.value(), label));
    tree.leaves.push_back(std::move(leaf));
  }
  std::stable_sort(
      tree.leaves.begin(), tree.leaves.end(),
      [](const LeafMetadata& a, const LeafMetadata& b) { return a.name() < b.name(); });
  // Arrays are stored under their dotted name, so two leaves must not share it.
  for (size_t i = 1; i < tree.leaves.size(); ++i) {
    if (tree.leaves[i - 1].name() == tree.leaves[i].name()) {
      return InvalidArgument(std::string(label) + ": entries " + PyTuple(tree.leaves[i - 1].keys) +
                             " and " + PyTuple(tree.leaves[i].keys) + " both name parameter '" +
                             tree.leaves[i].name() + "'");
    }
  }

  auto use_ocdbt = root.find("use_ocdbt");
  if (use_ocdbt != root.end() && !use_ocdbt->is_null()) {
    if (!use_ocdbt->is_boolean()) {
      return InvalidArgument(std::string(label) + ": use_ocdbt is " + use_ocdbt->dump() +
                             ", not a bool");
    }
    tree.use_ocdbt = use_ocdbt->get<bool>();
  }
  CKB_ASSIGN_OR_RETURN(tree.use_zarr3, OptionalBool(root, "use_zarr3", false, label));
  CKB_ASSIGN_OR_RETURN(tree.store_array_data_equal_to_fill_value,
                       OptionalBool(root, "store_array_data_equal_to_fill_value", false, label));
  if (auto custom = root.find("custom_metadata"); custom != root.end()) {
    tree.custom_metadata = *custom;
  }
  return tree;
}

std::string TreeMetadata::ToJson() const {
  // Python flattens dicts in sorted key order: write entries in that order.
  std::vector<const LeafMetadata*> ordered;
  for (const LeafMetadata& leaf : leaves) ordered.push_back(&leaf);
  std::stable_sort(ordered.begin(), ordered.end(),
                   [](const LeafMetadata* a, const LeafMetadata* b) { return a->keys < b->keys; });
  ordered_json entries = ordered_json::object();
  for (const LeafMetadata* leaf : ordered) {
    ordered_json key_metadata = ordered_json::array();
    for (size_t i = 0; i < leaf->keys.size(); ++i) {
      const int type = i < leaf->key_types.size() ? leaf->key_types[i] : kKeyTypeDict;
      key_metadata.push_back({{"key", leaf->keys[i]}, {"key_type", type}});
    }
    ordered_json value_metadata = {{"value_type", leaf->value_type},
                                   {"skip_deserialize", leaf->skip_deserialize}};
    if (leaf->write_shape) value_metadata["write_shape"] = *leaf->write_shape;
    entries[PyTuple(leaf->keys)] = {{"key_metadata", key_metadata},
                                    {"value_metadata", value_metadata}};
  }
  ordered_json root = {{"tree_metadata", entries}};
  if (use_ocdbt) root["use_ocdbt"] = *use_ocdbt;
  root["use_zarr3"] = use_zarr3;
  root["store_array_data_equal_to_fill_value"] = store_array_data_equal_to_fill_value;
  root["custom_metadata"] = Ordered(custom_metadata);
  return PythonJson(root);
}

// ---------------------------------------------------------------------------
// ResolveItem

Result<ItemLocation> ResolveItem(const fs::path& path) {
  const fs::path dir = Clean(path);
  for (const fs::path& part : dir) {
    if (part.string().find(kTmpMarker) != std::string::npos) {
      return FailedPrecondition(path.string() + ": unfinished checkpoint ('" + part.string() +
                                "' contains " + std::string(kTmpMarker) +
                                ", so Orbax never finalized it)");
    }
  }
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    return NotFound(path.string() +
                    ": no such directory (expected an Orbax checkpoint, step or item directory)");
  }
  if (!IsDirectory(dir)) {
    return NotFound(path.string() +
                    ": not a directory (expected an Orbax checkpoint, step or item directory)");
  }

  // An item directory (what MaxText's load_parameters_path names).
  if (IsFile(dir / kMetadataFile)) {
    ItemLocation location;
    location.item_dir = dir;
    const fs::path parent = ParentOf(dir);
    if (!parent.empty() && parent != dir && IsFile(parent / kCheckpointMetadataFile)) {
      location.step_dir = parent;
      location.step = StepFromName(parent.filename().string());
    }
    return location;
  }
  // A step directory.
  if (IsFile(dir / "items" / kMetadataFile)) return ResolveInStep(dir);

  std::vector<std::string> items;
  std::vector<std::string> unfinished;
  std::optional<int64_t> best_step;
  std::string best_name;
  for (const std::string& name : Subdirectories(dir)) {
    if (name.find(kTmpMarker) != std::string::npos) {
      unfinished.push_back(name);
      continue;
    }
    if (IsFile(dir / name / kMetadataFile)) {
      items.push_back(name);
      continue;
    }
    const std::optional<int64_t> step = StepFromName(name);
    if (step && (!best_step || *step > *best_step)) {
      best_step = step;
      best_name = name;
    }
  }
  // A composite step directory (items with their own names).
  if (!items.empty()) return ResolveInStep(dir);
  // A checkpoint root: the latest finalized step.
  if (best_step) return ResolveInStep(dir / best_name);
  std::string message =
      "no _METADATA, items/_METADATA or numeric step directory in " + path.string();
  if (!unfinished.empty()) message += " (only unfinished steps: " + JoinNames(unfinished) + ")";
  return NotFound(std::move(message));
}

// ---------------------------------------------------------------------------
// ArrayReader

Status ArrayReader::ReadStoredChunk(const std::vector<int64_t>& index, char* out) const {
  const std::string key = name_ + "/" + metadata_.ChunkKey(index);
  CKB_ASSIGN_OR_RETURN(const std::optional<MappedRegion> mapped, store_->Map(key));
  if (mapped) {
    // Decoded from the page cache: no copy of the stored bytes, and no
    // buffer to hold them.
    return DecodeChunk(
        metadata_, std::string_view(reinterpret_cast<const char*>(mapped->data()), mapped->size()),
        store_->Describe(key), out);
  }
  ScratchBuffer value;
  CKB_RETURN_IF_ERROR(store_->ReadInto(key, value));
  return DecodeChunk(metadata_, value.view(), store_->Describe(key), out);
}

Result<std::shared_ptr<const ScratchBuffer>> ArrayReader::Chunk(
    const std::vector<int64_t>& index) const {
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cached_chunk_ && cached_index_ == index) return cached_chunk_;
  }
  const std::string key = name_ + "/" + metadata_.ChunkKey(index);
  auto chunk = std::make_shared<ScratchBuffer>(metadata_.ChunkBytes());
  const Status read = ReadStoredChunk(index, chunk->data());
  if (read.code() == StatusCode::kNotFound) {
    if (!fill_missing_) {
      return DataLoss(store_->Describe(key) + ": chunk " + ShapeString(index) + " of array '" +
                      name_ +
                      "' is missing, and _METADATA says every chunk was written "
                      "(store_array_data_equal_to_fill_value)");
    }
    // Never written: reads as the fill value, as in TensorStore.
    CKB_ASSIGN_OR_RETURN(const std::string filled,
                         FillValueChunk(metadata_, store_->Describe(key)));
    std::memcpy(chunk->data(), filled.data(), filled.size());
  } else if (!read.ok()) {
    return read;
  }
  std::lock_guard<std::mutex> lock(cache_mutex_);
  cached_index_ = index;
  cached_chunk_ = chunk;
  return std::shared_ptr<const ScratchBuffer>(std::move(chunk));
}

Result<std::optional<ArrayReader::ChunkSpan>> ArrayReader::Span(const std::vector<int64_t>& origin,
                                                                const Shape& shape) const {
  const Shape& array_shape = metadata_.shape;
  const size_t rank = array_shape.size();
  if (origin.size() != rank || shape.size() != rank) {
    return InvalidArgument("array '" + name_ + "': region at " + ShapeString(origin) +
                           " of shape " + ShapeString(shape) + " does not match the array's rank " +
                           std::to_string(rank));
  }
  for (size_t i = 0; i < rank; ++i) {
    if (origin[i] < 0 || shape[i] < 0 || origin[i] > array_shape[i] ||
        shape[i] > array_shape[i] - origin[i]) {
      return InvalidArgument("array '" + name_ + "': region at " + ShapeString(origin) +
                             " of shape " + ShapeString(shape) + " exceeds the array shape " +
                             ShapeString(array_shape));
    }
    if (shape[i] == 0) return std::optional<ChunkSpan>();
  }
  ChunkSpan span;
  span.first.resize(rank);
  span.last.resize(rank);
  for (size_t i = 0; i < rank; ++i) {
    span.first[i] = origin[i] / metadata_.chunk_shape[i];
    span.last[i] = (origin[i] + shape[i] - 1) / metadata_.chunk_shape[i];
  }
  return std::optional<ChunkSpan>(std::move(span));
}

bool ArrayReader::ChunkSpan::Next(std::vector<int64_t>& index) const {
  for (size_t d = index.size(); d > 0; --d) {
    if (++index[d - 1] <= last[d - 1]) return true;
    index[d - 1] = first[d - 1];
  }
  return false;
}

Status ArrayReader::ReadRegion(const std::vector<int64_t>& origin, const Shape& shape,
                               void* out) const {
  CKB_ASSIGN_OR_RETURN(const std::optional<ChunkSpan> span, Span(origin, shape));
  if (!span) return Status::Ok();
  const size_t rank = origin.size();
  const size_t element = DTypeSize(metadata_.dtype);
  const Shape& chunk_shape = metadata_.chunk_shape;
  if (span->first == span->last && shape == chunk_shape) {
    // Exactly one stored chunk (a layer of a scanned array, say): decoded
    // straight into `out`, with no chunk buffer or copy between.
    const Status read = ReadStoredChunk(span->first, static_cast<char*>(out));
    if (read.code() != StatusCode::kNotFound) return read;
    // Missing: the general path below says what that means.
  }
  std::vector<int64_t> index = span->first;
  do {
    CKB_ASSIGN_OR_RETURN(std::shared_ptr<const ScratchBuffer> chunk, Chunk(index));
    // The part of the region inside this chunk.
    std::vector<int64_t> in_chunk(rank), in_out(rank);
    Shape extent(rank);
    for (size_t i = 0; i < rank; ++i) {
      const int64_t chunk_start = index[i] * chunk_shape[i];
      const int64_t lo = std::max(origin[i], chunk_start);
      const int64_t hi = std::min(origin[i] + shape[i], chunk_start + chunk_shape[i]);
      in_chunk[i] = lo - chunk_start;
      in_out[i] = lo - origin[i];
      extent[i] = hi - lo;
    }
    CopyBox(chunk->data(), chunk_shape, in_chunk, out, shape, in_out, extent, element);
  } while (span->Next(index));
  return Status::Ok();
}

void ArrayReader::Prefetch(const std::vector<int64_t>& origin, const Shape& shape) const {
  const Result<std::optional<ChunkSpan>> span = Span(origin, shape);
  if (!span.ok() || !*span) return;  // ReadRegion will say what is wrong
  std::vector<int64_t> index = (*span)->first;
  do {
    store_->Prefetch(name_ + "/" + metadata_.ChunkKey(index));
  } while ((*span)->Next(index));
}

// ---------------------------------------------------------------------------
// ItemReader

Result<std::unique_ptr<ItemReader>> ItemReader::Open(const fs::path& path) {
  auto reader = std::make_unique<ItemReader>();
  CKB_ASSIGN_OR_RETURN(reader->location_, ResolveItem(path));
  const fs::path& item_dir = reader->location_.item_dir;

  const fs::path metadata_path = item_dir / kMetadataFile;
  Result<std::string> text = ReadFile(metadata_path);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) {
      return NotFound(item_dir.string() + ": no _METADATA (not an Orbax item?)");
    }
    return text.status();
  }
  CKB_ASSIGN_OR_RETURN(reader->tree_, TreeMetadata::Parse(*text, metadata_path.string()));

  // A bare item keeps _CHECKPOINT_METADATA next to _METADATA.
  const fs::path checkpoint_metadata =
      (reader->location_.step_dir.empty() ? item_dir : reader->location_.step_dir) /
      kCheckpointMetadataFile;
  if (IsFile(checkpoint_metadata)) {
    CKB_ASSIGN_OR_RETURN(reader->checkpoint_metadata_, ParseJsonFile(checkpoint_metadata));
  }

  const TreeMetadata& tree = reader->tree_;
  reader->uses_ocdbt_ = tree.use_ocdbt.value_or(IsFile(item_dir / kOcdbtManifest));
  std::unique_ptr<KvStore> store;
  if (reader->uses_ocdbt_) {
    Result<std::unique_ptr<OcdbtReader>> db = OcdbtReader::Open(item_dir);
    if (!db.ok()) {
      if (db.status().code() != StatusCode::kNotFound) return db.status();
      // Orbax reads only the top-level database that finalizing a
      // checkpoint merges the per-process ones into.
      std::string message = (item_dir / kOcdbtManifest).string() +
                            ": no such file, but _METADATA says the arrays are in an OCDBT "
                            "database (use_ocdbt) whose manifest this must be";
      const std::vector<std::string> processes = ProcessDatabases(item_dir);
      if (!processes.empty()) {
        message += "; " + JoinNames(processes) +
                   " exist, but Orbax reads only the top-level database (the checkpoint was "
                   "not finalized, or its manifest was deleted)";
      }
      return NotFound(std::move(message));
    }
    reader->ocdbt_ = db->get();
    store = std::move(db).value();
  } else {
    store = std::make_unique<FileKvStore>(item_dir);
  }
  for (const LeafMetadata& leaf : tree.leaves) {
    if (!leaf.is_array()) continue;
    const std::string name = leaf.name();
    const std::string key = name + "/" + std::string(tree.use_zarr3 ? "zarr.json" : ".zarray");
    CKB_RETURN_IF_ERROR(
        ValidateKey(key).WithContext(metadata_path.string() + ": array '" + name + "'"));
    Result<std::string> array_text = store->Read(key);
    if (!array_text.ok()) {
      if (array_text.status().code() != StatusCode::kNotFound) return array_text.status();
      std::string hint;
      const std::string other = name + "/" + std::string(tree.use_zarr3 ? ".zarray" : "zarr.json");
      if (Result<bool> has_other = store->Contains(other); has_other.ok() && *has_other) {
        hint = std::string(" (but ") + other + " exists: use_zarr3 in _METADATA is " +
               (tree.use_zarr3 ? "true" : "false") + ")";
      }
      if (hint.empty() && !reader->uses_ocdbt_) {
        const std::vector<std::string> processes = ProcessDatabases(item_dir);
        if (!processes.empty()) {
          hint = " (" + JoinNames(processes) + " exist, but there is no " +
                 std::string(kOcdbtManifest) + ": an unfinished OCDBT checkpoint?)";
        }
      }
      return NotFound(store->Describe(key) + ": metadata of array '" + name +
                      "' listed in _METADATA is missing" + hint);
    }
    const std::string label = store->Describe(key);
    CKB_ASSIGN_OR_RETURN(ArrayMetadata metadata,
                         tree.use_zarr3 ? ArrayMetadata::ParseZarr3(*array_text, label)
                                        : ArrayMetadata::ParseZarr2(*array_text, label));
    reader->arrays_.push_back({&leaf, std::move(metadata)});
  }
  reader->store_ = std::move(store);
  return reader;
}

const ItemReader::ArrayEntry* ItemReader::Find(std::string_view name) const {
  auto it = std::lower_bound(
      arrays_.begin(), arrays_.end(), name,
      [](const ArrayEntry& entry, std::string_view n) { return entry.leaf->name() < n; });
  if (it == arrays_.end() || it->leaf->name() != name) return nullptr;
  return &*it;
}

std::unique_ptr<ArrayReader> ItemReader::Reader(const ArrayEntry& entry) const {
  return std::make_unique<ArrayReader>(store_.get(), entry.leaf->name(), entry.metadata,
                                       !tree_.store_array_data_equal_to_fill_value);
}

uint64_t ItemReader::StoredBytes(const ArrayEntry& entry) const {
  const std::string name = entry.leaf->name();
  if (ocdbt_) return ocdbt_->StoredBytes(name + "/");
  return DirectoryBytes(location_.item_dir / name);
}

// ---------------------------------------------------------------------------
// CheckpointWriter

Result<std::unique_ptr<CheckpointWriter>> CheckpointWriter::Create(const fs::path& root,
                                                                   const WriteOptions& options) {
  if (options.step < 0) {
    return InvalidArgument("checkpoint step " + std::to_string(options.step) + " is negative");
  }
  if (options.zstd_level < kMinWriteZstdLevel || options.zstd_level > kMaxWriteZstdLevel) {
    return InvalidArgument("zstd level " + std::to_string(options.zstd_level) + " is outside [" +
                           std::to_string(kMinWriteZstdLevel) + ", " +
                           std::to_string(kMaxWriteZstdLevel) + "]");
  }
  auto writer = std::make_unique<CheckpointWriter>();
  writer->options_ = options;
  writer->step_dir_ = root / std::to_string(options.step);
  writer->item_dir_ = writer->step_dir_ / "items";
  if (options.resume) {
    for (const fs::path& done :
         {writer->item_dir_ / kMetadataFile, writer->item_dir_ / kCommitFile,
          writer->step_dir_ / kCheckpointMetadataFile, writer->step_dir_ / kCommitFile}) {
      std::error_code ec;
      fs::remove(done, ec);
      if (ec) return ErrnoError(done.string(), ec.value());
    }
  }
  if (IsFile(writer->item_dir_ / kMetadataFile)) {
    return FailedPrecondition(writer->item_dir_.string() + ": already holds an Orbax item");
  }
  CKB_RETURN_IF_ERROR(CreateDirectories(writer->item_dir_));
  if (options.ocdbt) {
    OcdbtWriteOptions ocdbt_options;
    ocdbt_options.target_data_file_size = options.ocdbt_target_data_file_size;
    ocdbt_options.max_decoded_node_bytes = options.ocdbt_max_decoded_node_bytes;
    ocdbt_options.resume = options.resume;
    CKB_ASSIGN_OR_RETURN(std::unique_ptr<OcdbtWriter> db,
                         OcdbtWriter::Create(writer->item_dir_, ocdbt_options));
    writer->ocdbt_ = db.get();
    writer->store_ = std::move(db);
  } else {
    writer->store_ = std::make_unique<FileKvStore>(writer->item_dir_);
  }
  writer->init_timestamp_nsecs_ = NowNanos();
  return writer;
}

Status CheckpointWriter::AddLeaf(LeafMetadata leaf, const ArrayMetadata* array) {
  CKB_RETURN_IF_ERROR(CheckKeyPath(leaf.keys));
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return FailedPrecondition("checkpoint writer: leaf added after Finish()");
  // A leaf cannot also be a container of other leaves.
  for (const LeafMetadata& other : leaves_) {
    const size_t common = std::min(other.keys.size(), leaf.keys.size());
    if (!std::equal(other.keys.begin(), other.keys.begin() + common, leaf.keys.begin())) continue;
    if (other.keys.size() == leaf.keys.size()) {
      return InvalidArgument("key path " + PyTuple(leaf.keys) + " was added twice");
    }
    return InvalidArgument("key path " + PyTuple(leaf.keys) + " clashes with " +
                           PyTuple(other.keys) + ": a leaf cannot also hold other leaves");
  }
  if (array) {
    const std::vector<int64_t> grid = array->ChunkGrid();
    written_[leaf.name()].assign(static_cast<size_t>(NumElementsUnchecked(grid)), false);
    arrays_[leaf.name()] = *array;
  }
  leaves_.push_back(std::move(leaf));
  return Status::Ok();
}

Result<ArrayMetadata> CheckpointWriter::AddArray(const std::vector<std::string>& keys, DType dtype,
                                                 const Shape& shape, const Shape& chunk_shape) {
  CKB_RETURN_IF_ERROR(CheckKeyPath(keys));
  const std::string name = DictLeaf(keys, "", false).name();
  const std::string what = "array '" + name + "'";
  if (DTypeSize(dtype) == 0) return InvalidArgument(what + ": invalid dtype");
  if (shape.size() != chunk_shape.size()) {
    return InvalidArgument(what + ": chunk shape " + ShapeString(chunk_shape) + " and shape " +
                           ShapeString(shape) + " differ in rank");
  }
  CKB_RETURN_IF_ERROR(NumElements(shape).status().WithContext(what));
  CKB_RETURN_IF_ERROR(NumBytes(chunk_shape, DTypeSize(dtype)).status().WithContext(what));
  for (int64_t c : chunk_shape) {
    if (c < 1) {
      return InvalidArgument(what + ": chunk shape " + ShapeString(chunk_shape) +
                             " has a dimension below 1");
    }
  }
  ArrayMetadata metadata = options_.zarr3 ? ArrayMetadata::ForWrite(dtype, shape, chunk_shape)
                                          : ArrayMetadata::ForWriteZarr2(dtype, shape, chunk_shape);
  metadata.zstd_level = options_.zstd_level;
  // The bitmap of written chunks must stay small.
  if (NumElementsUnchecked(metadata.ChunkGrid()) > (int64_t{1} << 32)) {
    return InvalidArgument(what + ": chunk shape " + ShapeString(chunk_shape) + " cuts shape " +
                           ShapeString(shape) + " into too many chunks");
  }
  CKB_RETURN_IF_ERROR(AddLeaf(DictLeaf(keys, "np.ndarray", false), &metadata));
  CKB_RETURN_IF_ERROR(
      store_->Write(name + "/" + std::string(metadata.MetadataKey()), metadata.ToJson()));
  return metadata;
}

Result<std::pair<const ArrayMetadata*, size_t>> CheckpointWriter::FindChunk(
    std::string_view name, const std::vector<int64_t>& index) {
  const std::string array_name(name);
  const ArrayMetadata* metadata = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return FailedPrecondition("checkpoint writer: chunk written after Finish()");
    auto it = arrays_.find(array_name);
    if (it == arrays_.end()) {
      return NotFound("array '" + array_name + "' was not declared with AddArray");
    }
    metadata = &it->second;  // map nodes are stable and never erased
  }
  const std::vector<int64_t> grid = metadata->ChunkGrid();
  bool inside = index.size() == grid.size();
  for (size_t i = 0; inside && i < grid.size(); ++i) inside = index[i] >= 0 && index[i] < grid[i];
  if (!inside) {
    return InvalidArgument("array '" + array_name + "': chunk " + ShapeString(index) +
                           " lies outside the chunk grid " + ShapeString(grid));
  }
  size_t flat = 0;
  for (size_t i = 0; i < grid.size(); ++i) flat = flat * grid[i] + index[i];
  return std::make_pair(metadata, flat);
}

Status CheckpointWriter::WriteChunk(std::string_view name, const std::vector<int64_t>& index,
                                    std::string_view chunk_bytes) {
  const std::string array_name(name);
  CKB_ASSIGN_OR_RETURN(auto found, FindChunk(name, index));
  const auto [metadata, flat] = found;
  if (chunk_bytes.size() != metadata->ChunkBytes()) {
    return InvalidArgument("array '" + array_name + "': chunk " + ShapeString(index) + " has " +
                           std::to_string(chunk_bytes.size()) + " bytes, expected " +
                           std::to_string(metadata->ChunkBytes()));
  }
  ScratchBuffer encoded;
  CKB_RETURN_IF_ERROR(EncodeChunk(*metadata, chunk_bytes, encoded));
  const std::string_view value = encoded.view();
  const std::string key = array_name + "/" + metadata->ChunkKey(index);
  std::optional<ocdbt::LeafEntry> entry;
  if (ocdbt_) {
    CKB_ASSIGN_OR_RETURN(entry, ocdbt_->WriteEntry(key, value));
  } else {
    CKB_RETURN_IF_ERROR(store_->Write(key, value));
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    written_[array_name][flat] = true;
  }
  if (chunk_observer_) chunk_observer_({name, index, key, value, entry ? &*entry : nullptr});
  return Status::Ok();
}

Status CheckpointWriter::AdoptChunk(std::string_view name, const std::vector<int64_t>& index,
                                    const ocdbt::LeafEntry* entry) {
  const std::string array_name(name);
  CKB_ASSIGN_OR_RETURN(auto found, FindChunk(name, index));
  const auto [metadata, flat] = found;
  const std::string key = array_name + "/" + metadata->ChunkKey(index);
  if ((ocdbt_ != nullptr) != (entry != nullptr)) {
    return InvalidArgument("array '" + array_name + "': chunk " + ShapeString(index) +
                           (ocdbt_ ? " has no OCDBT entry to adopt into the database"
                                   : " comes with an OCDBT entry, but the item has no database"));
  }
  if (entry) {
    if (entry->key != key) {
      return InvalidArgument("array '" + array_name + "': chunk " + ShapeString(index) +
                             " is stored at key '" + key + "', not '" + entry->key + "'");
    }
    CKB_RETURN_IF_ERROR(ocdbt_->Adopt(*entry));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  written_[array_name][flat] = true;
  return Status::Ok();
}

Status CheckpointWriter::AddScalar(const std::vector<std::string>& keys, int64_t value) {
  CKB_RETURN_IF_ERROR(CheckKeyPath(keys));
  LeafMetadata leaf = DictLeaf(keys, "scalar", false);
  const std::string name = leaf.name();
  ArrayMetadata metadata = options_.zarr3 ? ArrayMetadata::ForWrite(DType::kI64, {}, {})
                                          : ArrayMetadata::ForWriteZarr2(DType::kI64, {}, {});
  metadata.zstd_level = options_.zstd_level;
  CKB_RETURN_IF_ERROR(AddLeaf(std::move(leaf), &metadata));
  CKB_RETURN_IF_ERROR(
      store_->Write(name + "/" + std::string(metadata.MetadataKey()), metadata.ToJson()));
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<char>((static_cast<uint64_t>(value) >> (8 * i)) & 0xff);
  }
  return WriteChunk(name, {}, bytes);
}

Status CheckpointWriter::AddEmptyDict(const std::vector<std::string>& keys) {
  return AddLeaf(DictLeaf(keys, "Dict", true), nullptr);
}

Status CheckpointWriter::Finish(const json& custom_metadata) {
  TreeMetadata tree;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return FailedPrecondition("checkpoint writer: Finish() called twice");
    // _METADATA will say store_array_data_equal_to_fill_value, so Orbax
    // fails on any chunk we did not write: refuse now instead.
    for (const auto& [name, written] : written_) {
      const auto missing = std::count(written.begin(), written.end(), false);
      if (missing == 0) continue;
      const size_t first =
          static_cast<size_t>(std::find(written.begin(), written.end(), false) - written.begin());
      const std::vector<int64_t> grid = arrays_.at(name).ChunkGrid();
      std::vector<int64_t> index(grid.size());
      size_t rest = first;
      for (size_t i = grid.size(); i-- > 0;) {
        index[i] = static_cast<int64_t>(rest % static_cast<size_t>(grid[i]));
        rest /= static_cast<size_t>(grid[i]);
      }
      return FailedPrecondition("cannot finish the checkpoint: array '" + name + "' has " +
                                std::to_string(missing) + " of " + std::to_string(written.size()) +
                                " chunks unwritten (the first is " + ShapeString(index) + ")");
    }
    finished_ = true;
    tree.leaves = leaves_;
  }
  // The database is complete before _METADATA names it.
  if (ocdbt_) CKB_RETURN_IF_ERROR(ocdbt_->Finish());
  std::sort(tree.leaves.begin(), tree.leaves.end(),
            [](const LeafMetadata& a, const LeafMetadata& b) { return a.name() < b.name(); });
  tree.use_ocdbt = options_.ocdbt;
  tree.use_zarr3 = options_.zarr3;
  tree.store_array_data_equal_to_fill_value = true;
  tree.custom_metadata = custom_metadata;
  CKB_RETURN_IF_ERROR(WriteFile(item_dir_ / kMetadataFile, tree.ToJson()));

  ordered_json checkpoint = {
      {"item_handlers", {{"items", kPyTreeHandler}}},
      {"metrics", ordered_json::object()},
      {"performance_metrics", ordered_json::object()},
      {"init_timestamp_nsecs", init_timestamp_nsecs_},
      {"commit_timestamp_nsecs", NowNanos()},
      // Orbax writes {} when there is none.
      {"custom_metadata",
       custom_metadata.is_null() ? ordered_json::object() : Ordered(custom_metadata)},
  };
  CKB_RETURN_IF_ERROR(WriteFile(step_dir_ / kCheckpointMetadataFile, PythonJson(checkpoint)));
  // The text names where the checkpoint will be, not the staging directory.
  const fs::path final_step =
      options_.final_root.empty() ? step_dir_ : options_.final_root / step_dir_.filename();
  CKB_RETURN_IF_ERROR(
      WriteFile(item_dir_ / kCommitFile, CommitText(final_step / item_dir_.filename())));
  return WriteFile(step_dir_ / kCommitFile, CommitText(final_step));
}

}  // namespace ckptbridge::orbax
