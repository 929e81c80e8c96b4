#include "host/formats/safetensors/reader.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <system_error>
#include <tuple>
#include <utility>

namespace ckptbridge::safetensors {
namespace {

using nlohmann::json;

// Dtypes of the safetensors spec that ckptbridge does not convert; named
// apart from typos so the user knows the file is valid but out of scope.
constexpr std::string_view kSpecOnlyDTypes[] = {"F4",          "F6_E2M3",     "F6_E3M2",
                                                "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"};

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

// A JSON value for an error message, cut short: the value may come from a
// hostile file of any size.
std::string Describe(const json& value) {
  constexpr size_t kMaxChars = 60;
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > kMaxChars) text = text.substr(0, kMaxChars) + "...";
  return text;
}

// nlohmann prefixes its messages with "[json.exception.parse_error.101] ";
// the user needs the part after it.
std::string JsonErrorText(const json::exception& e) {
  std::string_view text = e.what();
  if (size_t pos = text.find("] "); pos != std::string_view::npos) text.remove_prefix(pos + 2);
  return std::string(text);
}

std::string Range(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

// Parses `text` like json::parse but fails on a key repeated within one
// object, which nlohmann would silently resolve to the last value. `where`
// names the object holding the duplicate: "" for the top level, otherwise the
// top-level key it sits under.
struct DuplicateKey {
  std::string key;
  std::string where;
};

// Valid headers nest three levels deep (root, entry, shape); a hostile one
// of 100 MB of '[' would otherwise make the DOM parser allocate gigabytes.
constexpr int kMaxJsonDepth = 32;

bool NestsTooDeep(std::string_view text) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}

Result<json> ParseJsonNoDuplicates(std::string_view text, std::string_view label) {
  if (NestsTooDeep(text)) {
    return InvalidArgument(std::string(label) + ": invalid JSON: nested deeper than " +
                           std::to_string(kMaxJsonDepth) + " levels");
  }
  std::vector<std::set<std::string>> open_objects;
  std::string top_level_key;
  std::optional<DuplicateKey> duplicate;
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (open_objects.size() == 1) top_level_key = key;
        if (!open_objects.back().insert(key).second && !duplicate) {
          duplicate = DuplicateKey{key, open_objects.size() == 1 ? "" : top_level_key};
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  // nlohmann stops at a NUL byte as if the input ended there, so "{}\0<any
  // payload>" would pass; raw NUL is never valid JSON, strings escape it.
  if (size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return InvalidArgument(std::string(label) + ": invalid JSON: NUL byte at offset " +
                           std::to_string(nul));
  }
  json value;
  try {
    value = json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    return InvalidArgument(std::string(label) + ": invalid JSON: " + JsonErrorText(e));
  }
  if (duplicate) {
    std::string message(label);
    message += ": duplicate key " + Quote(duplicate->key);
    message += duplicate->where.empty() ? " in the header" : " in entry " + Quote(duplicate->where);
    return InvalidArgument(std::move(message));
  }
  return value;
}

// A non-negative JSON integer that fits in uint64, or nullopt.
std::optional<uint64_t> AsOffset(const json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  return std::nullopt;
}

Result<TensorInfo> ParseEntry(const std::string& name, const json& entry, uint64_t data_bytes,
                              const std::string& prefix) {
  auto error = [&](const std::string& what) { return InvalidArgument(prefix + what); };
  if (!entry.is_object()) {
    return error("expected an object with dtype, shape and data_offsets, found " + Describe(entry));
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) return error("missing '" + std::string(field) + "'");
  }
  TensorInfo info;
  info.name = name;

  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) return error("dtype must be a string, found " + Describe(dtype));
  const auto& dtype_name = dtype.get_ref<const std::string&>();
  std::optional<DType> parsed_dtype = DTypeFromSafetensorsName(dtype_name);
  if (!parsed_dtype) {
    bool spec_only = std::find(std::begin(kSpecOnlyDTypes), std::end(kSpecOnlyDTypes),
                               dtype_name) != std::end(kSpecOnlyDTypes);
    return error(spec_only ? "dtype " + Quote(dtype_name) + " is not supported"
                           : "unknown dtype " + Quote(dtype_name));
  }
  info.dtype = *parsed_dtype;

  const json& shape = entry["shape"];
  if (!shape.is_array()) {
    return error("shape must be an array of integers, found " + Describe(shape));
  }
  for (const json& dim : shape) {
    if (dim.is_number_unsigned() &&
        dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return error("shape " + Describe(shape) + " is too large");
    }
    if (!dim.is_number_integer()) {
      return error("shape must be an array of integers, found " + Describe(shape));
    }
    info.shape.push_back(dim.get<int64_t>());
  }
  Result<int64_t> needed = NumBytes(info.shape, DTypeSize(info.dtype));
  if (!needed.ok()) return needed.status().WithContext(prefix.substr(0, prefix.size() - 2));

  const json& offsets = entry["data_offsets"];
  std::optional<uint64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = AsOffset(offsets[0]);
    end = AsOffset(offsets[1]);
  }
  if (!begin || !end) {
    return error("data_offsets must be [begin, end] with non-negative integers, found " +
                 Describe(offsets));
  }
  info.begin = *begin;
  info.end = *end;
  if (info.begin > info.end)
    return error("data_offsets " + Range(info.begin, info.end) + " end before they begin");
  if (info.end > data_bytes) {
    return error("data_offsets " + Range(info.begin, info.end) + " exceed the " +
                 std::to_string(data_bytes) + "-byte data section");
  }
  if (info.num_bytes() != static_cast<uint64_t>(*needed)) {
    return error("data_offsets span " + std::to_string(info.num_bytes()) + " bytes but dtype " +
                 std::string(SafetensorsName(info.dtype)) + " shape " + ShapeString(info.shape) +
                 " needs " + std::to_string(*needed));
  }
  return info;
}

// The tensors, in data order, must tile the data section exactly: a hole
// could hide a second payload (polyglot files), an overlap lets one write
// change two tensors.
Status CheckTiling(std::vector<const TensorInfo*> by_offset, uint64_t data_bytes,
                   const std::string& label) {
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  uint64_t next = 0;
  const TensorInfo* previous = nullptr;  // the last non-empty tensor
  for (const TensorInfo* t : by_offset) {
    if (t->begin > next) {
      return InvalidArgument(label + ": bytes " + Range(next, t->begin) +
                             " of the data section belong to no tensor (hole before tensor " +
                             Quote(t->name) + ")");
    }
    if (t->begin < next) {
      return InvalidArgument(label + ": tensor " + Quote(t->name) + ": data_offsets " +
                             Range(t->begin, t->end) + " overlap tensor " + Quote(previous->name) +
                             " at " + Range(previous->begin, previous->end));
    }
    if (t->end > t->begin) {
      next = t->end;
      previous = t;
    }
  }
  if (next != data_bytes) {
    if (by_offset.empty()) {
      return InvalidArgument(label + ": the header lists no tensors but the data section has " +
                             std::to_string(data_bytes) + " bytes");
    }
    return InvalidArgument(label + ": the tensors end at byte " + std::to_string(next) +
                           " but the data section has " + std::to_string(data_bytes) + " bytes (" +
                           std::to_string(data_bytes - next) + " trailing bytes)");
  }
  return Status::Ok();
}

uint64_t ReadLittleEndian64(const uint8_t* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

template <typename T>
const T* FindByName(const std::vector<T>& sorted, std::string_view name,
                    std::string_view (*name_of)(const T&)) {
  auto it = std::lower_bound(sorted.begin(), sorted.end(), name,
                             [&](const T& t, std::string_view n) { return name_of(t) < n; });
  if (it == sorted.end() || name_of(*it) != name) return nullptr;
  return &*it;
}

// Whether `path` is `dir` or below it (both canonical).
bool IsWithin(const std::filesystem::path& path, const std::filesystem::path& dir) {
  auto p = path.begin();
  for (auto d = dir.begin(); d != dir.end(); ++d, ++p) {
    if (p == path.end() || *p != *d) return false;
  }
  return true;
}

// A file found in checkpoint folder `dir` must not be a symlink out of it: a
// downloaded folder could otherwise make us read (and copy into the output)
// any file the user can read. The one layout that links outside on purpose,
// the Hugging Face cache (<repo>/snapshots/<revision>/<file> ->
// ../../blobs/<hash>), is followed into its own blobs folder.
Status CheckInsideFolder(const std::filesystem::path& file, const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_symlink(fs::symlink_status(file, ec))) return Status::Ok();
  const fs::path target = fs::canonical(file, ec);
  if (ec) return Status::Ok();  // a dangling link: opening it says so
  const fs::path folder = fs::canonical(dir, ec);
  if (ec) return ErrnoError(dir.string(), ec.value());
  if (IsWithin(target, folder)) return Status::Ok();
  if (folder.parent_path().filename() == "snapshots" &&
      IsWithin(target, folder.parent_path().parent_path() / "blobs")) {
    return Status::Ok();
  }
  return InvalidArgument(file.string() + ": a symlink to " + target.string() +
                         ", outside the checkpoint folder " + dir.string());
}

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(std::string_view("/\\\0", 3)) == std::string::npos;
}

}  // namespace

Result<Header> ParseHeader(std::string_view json_text, uint64_t data_bytes,
                           std::string_view label_view) {
  const std::string label(label_view);
  // The reference parser insists on '{' first (no leading whitespace, no BOM)
  // so that the type of the file is recognisable from its 9th byte.
  if (json_text.empty() || json_text.front() != '{') {
    return InvalidArgument(label + ": header is not a JSON object starting with '{'");
  }
  CKB_ASSIGN_OR_RETURN(json root, ParseJsonNoDuplicates(json_text, label));
  if (!root.is_object()) {
    return InvalidArgument(label + ": header is not a JSON object");
  }

  Header header;
  header.header_bytes = json_text.size();
  header.data_bytes = data_bytes;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      // MLX writes "__metadata__": null; the reference reader accepts it.
      if (value.is_null()) continue;
      if (!value.is_object()) {
        return InvalidArgument(label + ": __metadata__ must map strings to strings, found " +
                               Describe(value));
      }
      for (const auto& [meta_key, meta_value] : value.items()) {
        if (!meta_value.is_string()) {
          return InvalidArgument(label + ": __metadata__ must map strings to strings, but " +
                                 Quote(meta_key) + " is " + Describe(meta_value));
        }
        header.metadata.emplace(meta_key, meta_value.get<std::string>());
      }
      continue;
    }
    CKB_ASSIGN_OR_RETURN(TensorInfo info, ParseEntry(key, value, data_bytes,
                                                     label + ": tensor " + Quote(key) + ": "));
    header.tensors.push_back(std::move(info));
  }

  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(header.tensors.size());
  for (const TensorInfo& t : header.tensors) by_offset.push_back(&t);
  CKB_RETURN_IF_ERROR(CheckTiling(std::move(by_offset), data_bytes, label));

  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  return header;
}

Result<File> File::Open(const std::filesystem::path& path) {
  CKB_ASSIGN_OR_RETURN(ReadOnlyFile opened, ReadOnlyFile::Open(path));
  const std::string label = path.string();
  const uint64_t size = opened.size();
  if (size < 8) {
    return InvalidArgument(label + ": file is " + std::to_string(size) +
                           " bytes, too short for the 8-byte header length of a safetensors file");
  }
  uint8_t prefix[8];
  CKB_RETURN_IF_ERROR(opened.PRead(0, prefix, sizeof prefix));
  const uint64_t header_bytes = ReadLittleEndian64(prefix);
  if (header_bytes > kMaxHeaderBytes) {
    return InvalidArgument(label + ": header length " + std::to_string(header_bytes) +
                           " exceeds the limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
  }
  if (header_bytes > size - 8) {
    return InvalidArgument(label + ": header length " + std::to_string(header_bytes) +
                           " exceeds the " + std::to_string(size - 8) +
                           " bytes after the length prefix");
  }
  // Read, not mapped: the header is parsed once and the mapping would only
  // take address space.
  std::string text;
  try {
    text.resize(static_cast<size_t>(header_bytes));
  } catch (const std::bad_alloc&) {
    return ResourceExhausted(label + ": cannot allocate " + std::to_string(header_bytes) +
                             " bytes for the header");
  }
  CKB_RETURN_IF_ERROR(opened.PRead(8, text.data(), text.size()));
  File file;
  CKB_ASSIGN_OR_RETURN(file.header_, ParseHeader(text, size - 8 - header_bytes, label));
  file.file_ = std::move(opened);
  return file;
}

const TensorInfo* File::Find(std::string_view name) const {
  return FindByName<TensorInfo>(header_.tensors, name,
                                [](const TensorInfo& t) -> std::string_view { return t.name; });
}

const MappedRegion& File::Whole() const {
  std::call_once(whole_->once, [this] {
    Result<MappedRegion> region = file_.Map(0, file_.size());
    if (!region.ok()) {
      // Data() has no way to report an error (see reader.h): say why, then stop.
      std::fprintf(stderr, "ckptbridge: %s\n", region.status().message().c_str());
      std::abort();
    }
    whole_->region = std::move(*region);
    whole_->mapped.store(true, std::memory_order_release);
  });
  return whole_->region;
}

const uint8_t* File::Data(const TensorInfo& tensor) const {
  return Whole().data() + data_offset() + tensor.begin;
}

void File::Release(const TensorInfo& tensor) const {
  // Only the mapping Data() made holds pages that outlive their reader.
  if (whole_->mapped.load(std::memory_order_acquire)) {
    whole_->region.DontNeed(data_offset() + tensor.begin, tensor.num_bytes());
  }
}

Result<TensorBytes> File::ReadRange(const TensorInfo& tensor, uint64_t offset,
                                    uint64_t length) const {
  const uint64_t size = tensor.num_bytes();
  if (offset > size || length > size - offset) {
    return Internal(path().string() + ": tensor '" + tensor.name + "': bytes [" +
                    std::to_string(offset) + ", " + std::to_string(offset + length) +
                    ") lie outside its " + std::to_string(size) + " bytes");
  }
  TensorBytes bytes;
  CKB_ASSIGN_OR_RETURN(bytes.region_, file_.Map(data_offset() + tensor.begin + offset, length,
                                                "tensor '" + tensor.name + "'"));
  return bytes;
}

void File::Prefetch(const TensorInfo& tensor) const { Prefetch(tensor, 0, tensor.num_bytes()); }

void File::Prefetch(const TensorInfo& tensor, uint64_t offset, uint64_t length) const {
  const uint64_t size = tensor.num_bytes();
  if (offset >= size) return;
  file_.WillNeed(data_offset() + tensor.begin + offset, std::min(length, size - offset));
}

namespace {

constexpr std::string_view kIndexName = "model.safetensors.index.json";

struct IndexContent {
  std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> shard
  std::optional<uint64_t> total_size;
  std::vector<std::string> warnings;
};

Result<IndexContent> ReadIndex(const std::filesystem::path& index_path) {
  const std::string label = index_path.string();
  CKB_ASSIGN_OR_RETURN(std::string text, ReadFile(index_path));
  CKB_ASSIGN_OR_RETURN(json root, ParseJsonNoDuplicates(text, label));
  if (!root.is_object()) return InvalidArgument(label + ": not a JSON object");
  if (!root.contains("weight_map")) return InvalidArgument(label + ": missing 'weight_map'");
  const json& weight_map = root["weight_map"];
  if (!weight_map.is_object()) {
    return InvalidArgument(label +
                           ": weight_map must map tensor names to shard file names, found " +
                           Describe(weight_map));
  }
  IndexContent index;
  for (const auto& [tensor, shard] : weight_map.items()) {
    if (!shard.is_string()) {
      return InvalidArgument(label + ": weight_map entry " + Quote(tensor) +
                             " must be a shard file name, found " + Describe(shard));
    }
    const auto& shard_name = shard.get_ref<const std::string&>();
    // The index comes from the internet: it must not reach outside the folder.
    if (!IsPlainFileName(shard_name)) {
      return InvalidArgument(label + ": weight_map entry " + Quote(tensor) + " names shard " +
                             Quote(shard_name) + ", which is not a plain file name in the folder");
    }
    index.weight_map.emplace_back(tensor, shard_name);
  }
  if (root.contains("metadata") && root["metadata"].is_object() &&
      root["metadata"].contains("total_size")) {
    const json& total = root["metadata"]["total_size"];
    if (std::optional<uint64_t> value = AsOffset(total)) {
      index.total_size = *value;
    } else {
      index.warnings.push_back(label + ": metadata.total_size " + Describe(total) +
                               " is not a byte count, ignored");
    }
  }
  return index;
}

}  // namespace

Result<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  auto checkpoint = std::make_unique<Checkpoint>();
  checkpoint->path_ = path;

  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    if (ec && ec != std::errc::no_such_file_or_directory)
      return ErrnoError(path.string(), ec.value());
    return NotFound(path.string() + ": no such file or directory");
  }

  // Name -> tensor, for the name space shared by all files.
  std::map<std::string_view, CheckpointTensor> tensors;
  // Files found in a folder (not a file path given directly) stay inside it.
  auto open_file = [&](const fs::path& file_path) -> Result<const File*> {
    if (fs::is_directory(status)) CKB_RETURN_IF_ERROR(CheckInsideFolder(file_path, path));
    CKB_ASSIGN_OR_RETURN(File file, File::Open(file_path));
    checkpoint->files_.push_back(std::make_unique<File>(std::move(file)));
    return checkpoint->files_.back().get();
  };

  const fs::path index_path = path / kIndexName;
  if (!fs::is_directory(status)) {
    CKB_ASSIGN_OR_RETURN(const File* file, open_file(path));
    for (const TensorInfo& t : file->tensors()) tensors.emplace(t.name, CheckpointTensor{&t, file});
  } else if (fs::exists(index_path, ec)) {
    checkpoint->has_index_ = true;
    CKB_ASSIGN_OR_RETURN(IndexContent index, ReadIndex(index_path));
    checkpoint->warnings_ = std::move(index.warnings);
    const std::string label = index_path.string();

    std::map<std::string, const File*> shards;  // sorted: files() in name order
    for (const auto& [tensor, shard] : index.weight_map) shards.emplace(shard, nullptr);
    for (auto& [shard, file] : shards) {
      const fs::path shard_path = path / shard;
      if (!fs::exists(shard_path, ec)) {
        // A named copy: clang before 16 cannot capture a structured binding.
        const std::string& name = shard;
        auto listed = std::find_if(index.weight_map.begin(), index.weight_map.end(),
                                   [&](const auto& entry) { return entry.second == name; });
        return NotFound(label + " lists shard " + Quote(shard) + " (for tensor " +
                        Quote(listed->first) + ") but " + shard_path.string() + " does not exist");
      }
      CKB_ASSIGN_OR_RETURN(file, open_file(shard_path));
    }

    uint64_t listed_bytes = 0;
    std::set<const TensorInfo*> listed;
    for (const auto& [tensor, shard] : index.weight_map) {
      const File* file = shards.at(shard);
      const TensorInfo* info = file->Find(tensor);
      if (!info) {
        return InvalidArgument(label + ": tensor " + Quote(tensor) + " is listed in shard " +
                               Quote(shard) + ", but " + file->path().string() +
                               " has no such tensor");
      }
      tensors.emplace(info->name, CheckpointTensor{info, file});
      listed.insert(info);
      listed_bytes += info->num_bytes();
    }
    // transformers loads only what the index lists; so do we, but say so.
    for (const auto& file : checkpoint->files_) {
      for (const TensorInfo& t : file->tensors()) {
        if (!listed.count(&t)) {
          checkpoint->warnings_.push_back(file->path().string() + ": tensor " + Quote(t.name) +
                                          " is not listed in " + label + ", ignored");
        }
      }
    }
    // Some tools store file sizes instead of tensor bytes: not worth failing.
    if (index.total_size && *index.total_size != listed_bytes) {
      checkpoint->warnings_.push_back(
          label + ": metadata.total_size " + std::to_string(*index.total_size) +
          " differs from the " + std::to_string(listed_bytes) + " bytes of the listed tensors");
    }
  } else {
    std::vector<fs::path> file_paths;
    if (fs::is_regular_file(path / "model.safetensors", ec)) {
      file_paths.push_back(path / "model.safetensors");
    } else {
      // The error_code overloads throughout: a folder we cannot list is a
      // Status, not an exception.
      for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        // Skips AppleDouble "._x.safetensors" files and other hidden leftovers.
        if (name.starts_with(".") || !name.ends_with(".safetensors")) continue;
        std::error_code entry_ec;
        if (it->is_regular_file(entry_ec)) file_paths.push_back(it->path());
      }
      if (ec) return ErrnoError(path.string(), ec.value());
      std::sort(file_paths.begin(), file_paths.end());
    }
    if (file_paths.empty()) return NotFound("no .safetensors files in " + path.string());
    for (const fs::path& file_path : file_paths) {
      CKB_ASSIGN_OR_RETURN(const File* file, open_file(file_path));
      for (const TensorInfo& t : file->tensors()) {
        auto [it, inserted] = tensors.emplace(t.name, CheckpointTensor{&t, file});
        if (!inserted) {
          return InvalidArgument("tensor " + Quote(t.name) + " is in both " +
                                 it->second.file->path().string() + " and " + file_path.string());
        }
      }
    }
  }

  checkpoint->tensors_.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    checkpoint->tensors_.push_back(tensor);
    checkpoint->total_bytes_ += tensor.info->num_bytes();
  }
  return checkpoint;
}

const CheckpointTensor* Checkpoint::Find(std::string_view name) const {
  return FindByName<CheckpointTensor>(
      tensors_, name, [](const CheckpointTensor& t) -> std::string_view { return t.info->name; });
}

}  // namespace ckptbridge::safetensors
