#include "host/engine/receipt.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <ctime>
#include <map>
#include <set>
#include <system_error>

#include "host/base/file.h"
#include "host/base/json.h"
#include "host/base/version.h"
#include "host/engine/convert.h"

namespace ckptbridge::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// What the hasher maps at once: mapped pages count in the resident set, so
// a few MiB; the two windows after it are read ahead.
constexpr uint64_t kHashWindowBytes = uint64_t{4} << 20;
constexpr const char* kHashName = "xxh3-128";
constexpr size_t kHexDigits = 2 * sizeof(XXH128_canonical_t);  // 32
constexpr const char* kIndexFileName = "model.safetensors.index.json";

std::string Hex(const XXH128_hash_t& hash) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, hash);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(kHexDigits);
  for (unsigned char byte : canonical.digest) {
    out += kDigits[byte >> 4];
    out += kDigits[byte & 15];
  }
  return out;
}

// Canonical serialization: fixed-width little-endian integers, strings with
// their length first, so that no two rule sets serialize alike.
class Canon {
 public:
  void Tag(char tag) { out_ += tag; }
  void U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_ += static_cast<char>((v >> (8 * i)) & 0xff);
  }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void F32(float v) { U64(std::bit_cast<uint32_t>(v)); }
  void Str(const std::string& s) {
    U64(s.size());
    out_ += s;
  }
  template <typename T>
  void Ints(const std::vector<T>& values) {
    U64(values.size());
    for (T v : values) I64(static_cast<int64_t>(v));
  }
  void Decl(const TensorDecl& decl) {
    Tag('T');
    Str(decl.name);
    Ints(decl.dims);
    Ints(decl.axis_meanings);
  }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

// Writes `content` to `path` so that readers see the old file or the new
// one, never a mix: a temporary sibling, flushed, renamed over `path`.
Status ReplaceFileAtomically(const fs::path& path, const std::string& content) {
  const fs::path temp =
      path.parent_path() / ("." + path.filename().string() + ".tmp-" + RandomHex(8));
  Status written = WriteFile(temp, content);
  if (written.ok()) written = SyncFilesystemOf(temp);
  if (written.ok()) {
    std::error_code ec;
    fs::rename(temp, path, ec);
    if (ec) written = ErrnoError(temp.string() + " -> " + path.string() + ": rename", ec.value());
  }
  if (!written.ok()) {
    std::error_code ignored;
    fs::remove(temp, ignored);
    return written;
  }
  return SyncFilesystemOf(path.parent_path());
}

fs::path HfFolder(const fs::path& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) ? path : path.parent_path();
}

Result<SourceFile> Stat(const fs::path& path, const fs::path& base) {
  std::error_code ec;
  const uint64_t bytes = fs::file_size(path, ec);
  if (ec) return ErrnoError(path.string(), ec.value());
  return SourceFile{path.lexically_relative(base).generic_string(), path, bytes};
}

// The receipt's "source" object (without "format" and "path") for `files`
// and their hashes.
json SourceObject(const std::vector<SourceFile>& files, const std::vector<std::string>& hashes,
                  const std::string& digest) {
  json list = json::array();
  uint64_t total = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    list.push_back(
        {{"path", files[i].relative}, {"bytes", files[i].bytes}, {"xxh3_128", hashes[i]}});
    total += files[i].bytes;
  }
  return json{{"hash", kHashName},
              {"file_count", files.size()},
              {"bytes", total},
              {"files", std::move(list)},
              {"files_digest", digest}};
}

Result<json> HashAll(const std::vector<SourceFile>& files, const std::function<bool()>& stopped) {
  std::vector<std::string> hashes;
  std::string digest_input;
  for (const SourceFile& file : files) {
    CKB_ASSIGN_OR_RETURN(std::string hash, HashFile(file.path, stopped));
    digest_input += file.relative + '\0' + std::to_string(file.bytes) + '\0' + hash + '\n';
    hashes.push_back(std::move(hash));
  }
  return SourceObject(files, hashes, Xxh3Hex(digest_input.data(), digest_input.size()));
}

std::string DTypeName(DType dtype) { return std::string(ZarrName(dtype)); }

}  // namespace

std::string Xxh3Hex(const void* data, size_t size) { return Hex(XXH3_128bits(data, size)); }

Result<std::string> HashFile(const fs::path& path, const std::function<bool()>& stopped) {
  CKB_ASSIGN_OR_RETURN(const ReadOnlyFile file, ReadOnlyFile::Open(path));
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  if (!state || XXH3_128bits_reset(state.get()) != XXH_OK) {
    return Internal("cannot set up an XXH3 state");
  }
  // Hashed where it lies in the page cache, a window at a time, with the
  // next windows read ahead: read() into a buffer first cost a copy of every
  // byte (4% of a conversion's CPU time). The size is the one at open; a
  // file truncated while its window is hashed ends the process with SIGBUS,
  // as it would while the conversion reads it.
  file.WillNeed(0, 3 * kHashWindowBytes);
  for (uint64_t offset = 0; offset < file.size(); offset += kHashWindowBytes) {
    if (stopped && stopped()) return Cancelled(path.string() + ": hashing stopped");
    const uint64_t length = std::min<uint64_t>(kHashWindowBytes, file.size() - offset);
    file.WillNeed(offset + length, 2 * kHashWindowBytes);
    CKB_ASSIGN_OR_RETURN(const MappedRegion window, file.Map(offset, length, "hashing"));
    XXH3_128bits_update(state.get(), window.data(), window.size());
  }
  return Hex(XXH3_128bits_digest(state.get()));
}

std::string CanonicalRuleSet(const RuleSet& rules) {
  Canon c;
  c.Str("ckptbridge rules 1");
  c.U64(rules.rules.size());
  for (const Rule& rule : rules.rules) {
    c.Tag('R');
    c.U64(rule.flags);
    c.U64(rule.hf_inputs.size());
    for (const TensorDecl& decl : rule.hf_inputs) c.Decl(decl);
    c.U64(rule.mt_outputs.size());
    for (const TensorDecl& decl : rule.mt_outputs) c.Decl(decl);
    c.U64(rule.stack.size());
    for (const StackAxis& axis : rule.stack) {
      c.Tag('S');
      c.I64(axis.meaning);
      c.I64(axis.mt_axis);
      c.I64(axis.count);
      c.I64(axis.hf_start);
      c.I64(axis.hf_stride);
      c.U64(axis.hf_leading ? 1 : 0);
    }
    c.U64(rule.ops.size());
    for (const OpSpec& op : rule.ops) {
      c.Tag('O');
      c.I64(static_cast<int32_t>(op.kind));
      c.I64(op.axis);
      c.I64(op.custom_id);
      c.Ints(op.values);
      c.F32(op.factor);
      c.F32(op.inverse_factor);
      c.I64(op.size);
    }
  }
  c.U64(rules.ignores.size());
  for (const IgnoreRule& ignore : rules.ignores) {
    c.Tag('I');
    c.I64(ignore.side);
    c.Str(ignore.pattern);
  }
  c.U64(rules.renames.size());
  for (const RenameRule& rename : rules.renames) {
    c.Tag('N');
    c.I64(rename.side);
    c.Str(rename.from_prefix);
    c.Str(rename.to_prefix);
  }
  return std::move(c.out());
}

std::string RuleSetHash(const RuleSet& rules) {
  const std::string canonical = CanonicalRuleSet(rules);
  return std::string(kHashName) + ":" + Xxh3Hex(canonical.data(), canonical.size());
}

Result<std::vector<SourceFile>> HfSourceFiles(const safetensors::Checkpoint& source,
                                              const fs::path& config_path) {
  const fs::path base = HfFolder(source.path());
  std::vector<SourceFile> files;
  CKB_ASSIGN_OR_RETURN(SourceFile config, Stat(config_path, base));
  files.push_back(std::move(config));
  if (source.has_index()) {
    CKB_ASSIGN_OR_RETURN(SourceFile index, Stat(base / kIndexFileName, base));
    files.push_back(std::move(index));
  }
  for (const auto& shard : source.files()) {
    CKB_ASSIGN_OR_RETURN(SourceFile file, Stat(shard->path(), base));
    files.push_back(std::move(file));
  }
  std::sort(files.begin(), files.end(),
            [](const SourceFile& a, const SourceFile& b) { return a.relative < b.relative; });
  return files;
}

Result<std::vector<SourceFile>> OrbaxSourceFiles(const orbax::ItemReader& item) {
  const fs::path& base = item.location().item_dir;
  std::vector<SourceFile> files;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    CKB_ASSIGN_OR_RETURN(SourceFile file, Stat(it->path(), base));
    files.push_back(std::move(file));
  }
  if (ec) return ErrnoError(base.string() + ": listing the item's files", ec.value());
  std::sort(files.begin(), files.end(),
            [](const SourceFile& a, const SourceFile& b) { return a.relative < b.relative; });
  return files;
}

json UnhashedSourceFiles(const std::vector<SourceFile>& files) {
  const std::string zeros(kHexDigits, '0');
  return SourceObject(files, std::vector<std::string>(files.size(), zeros), zeros);
}

SourceHasher::SourceHasher(std::vector<SourceFile> files, const std::atomic<bool>* cancel)
    : files_(std::move(files)), cancel_(cancel) {
  result_ = std::async(std::launch::async, [this] {
    return HashAll(files_, [this] { return stop_.load() || (cancel_ && cancel_->load()); });
  });
}

SourceHasher::~SourceHasher() {
  stop_ = true;
  if (result_.valid()) result_.wait();
}

Result<json> SourceHasher::Wait() {
  if (!result_.valid()) return Internal("SourceHasher::Wait called twice");
  return result_.get();
}

json DtypeDecisions(const Plan& plan) {
  const bool to_maxtext = plan.direction == Direction::kToMaxText;
  const size_t outputs = to_maxtext ? plan.mt_tensors.size() : plan.hf_tensors.size();
  std::vector<std::set<DType>> sources(outputs);
  for (const Unit& unit : plan.units) {
    const PlannedRule& rule = plan.rules[unit.rule];
    const std::vector<size_t>& out = to_maxtext ? rule.mt_tensors : unit.hf_tensors;
    const std::vector<size_t>& in = to_maxtext ? unit.hf_tensors : rule.mt_tensors;
    for (size_t o : out) {
      for (size_t i : in) {
        sources[o].insert(to_maxtext ? plan.hf_tensors[i].dtype : plan.mt_tensors[i].dtype);
      }
    }
  }
  std::map<std::string, std::pair<size_t, std::map<std::string, size_t>>> by_dtype;
  for (size_t o = 0; o < outputs; ++o) {
    const DType dtype = to_maxtext ? plan.mt_tensors[o].dtype : plan.hf_tensors[o].dtype;
    std::string from;
    for (DType d : sources[o]) from += (from.empty() ? "" : "+") + DTypeName(d);
    auto& [count, froms] = by_dtype[DTypeName(dtype)];
    ++count;
    ++froms[from.empty() ? "none" : from];
  }
  json decisions = json::object();
  for (const auto& [dtype, entry] : by_dtype) {
    decisions[dtype] = {{"tensors", entry.first}, {"from", entry.second}};
  }
  return decisions;
}

std::string UtcTimestamp(std::chrono::system_clock::time_point time) {
  const std::time_t t = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

json BuildReceipt(const ReceiptInputs& in) {
  json source = in.source_files.is_object() ? in.source_files : json::object();
  source["format"] = in.source_format;
  std::error_code ec;
  source["path"] = fs::absolute(in.source_path, ec).lexically_normal().string();
  json receipt = {
      {"format", kReceiptFormat},
      {"written_at", UtcTimestamp(in.written_at)},
      {"ckptbridge", {{"version", kVersion}}},
      {"model_type", in.model_type},
      {"flags", in.flags},
      {"source", std::move(source)},
  };
  if (in.plugin) {
    receipt["plugin"] = {
        {"name", in.plugin->name},
        {"version", in.plugin->version},
        {"abi", std::to_string(in.plugin->abi_major) + "." + std::to_string(in.plugin->abi_minor)}};
  }
  if (in.rules) {
    receipt["rules"] = {{"hash", RuleSetHash(*in.rules)},
                        {"rules", in.rules->rules.size()},
                        {"ignores", in.rules->ignores.size()},
                        {"renames", in.rules->renames.size()}};
  }
  if (in.plan) receipt["dtypes"] = DtypeDecisions(*in.plan);
  return receipt;
}

json EmbeddedReceipt(const json& receipt) {
  json embedded = receipt;
  // Without the time, the shards of two runs over the same input are the
  // same bytes, and a resumed run plans the same shard headers.
  embedded.erase("written_at");
  embedded.erase("verification");
  if (embedded.contains("source") && embedded["source"].is_object()) {
    json& source = embedded["source"];
    if (source.contains("files") && source["files"].is_array() &&
        source["files"].size() > kMaxEmbeddedFiles) {
      source.erase("files");
      source["files_listed"] = false;
    }
  }
  return embedded;
}

Status RecordVerification(const fs::path& destination, Direction direction,
                          const json& verification) {
  if (direction == Direction::kToHf) {
    const fs::path path = destination / kReceiptFileName;
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      return FailedPrecondition(destination.string() + ": no " + kReceiptFileName +
                                " to record the verification in");
    }
    CKB_ASSIGN_OR_RETURN(json receipt, ParseJsonFile(path));
    if (!receipt.is_object()) {
      return InvalidArgument(path.string() + ": the receipt is " + receipt.type_name() +
                             ", not an object");
    }
    receipt["verification"] = verification;
    return ReplaceFileAtomically(path, receipt.dump(2) + "\n");
  }
  CKB_ASSIGN_OR_RETURN(orbax::ItemLocation location, orbax::ResolveItem(destination));
  const fs::path path = location.item_dir / "_METADATA";
  CKB_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  CKB_ASSIGN_OR_RETURN(orbax::TreeMetadata tree, orbax::TreeMetadata::Parse(text, path.string()));
  json& custom = tree.custom_metadata;
  if (!custom.is_object() || !custom.contains(kMetadataKey) || !custom[kMetadataKey].is_object() ||
      !custom[kMetadataKey].contains(kReceiptKey) ||
      !custom[kMetadataKey][kReceiptKey].is_object()) {
    return FailedPrecondition(path.string() + ": no custom_metadata." + kMetadataKey + "." +
                              kReceiptKey + " to record the verification in");
  }
  custom[kMetadataKey][kReceiptKey]["verification"] = verification;
  return ReplaceFileAtomically(path, tree.ToJson());
}

Result<std::optional<json>> ReadHfReceipt(const fs::path& dir,
                                          const safetensors::Checkpoint& checkpoint) {
  const fs::path folder = HfFolder(dir);
  std::error_code ec;
  auto object = [](json value, const std::string& where) -> Result<std::optional<json>> {
    if (!value.is_object()) {
      return InvalidArgument(where + ": the receipt is " + value.type_name() + ", not an object");
    }
    return std::optional<json>(std::move(value));
  };
  if (fs::exists(folder / kReceiptFileName, ec)) {
    CKB_ASSIGN_OR_RETURN(json receipt, ParseJsonFile(folder / kReceiptFileName));
    return object(std::move(receipt), (folder / kReceiptFileName).string());
  }
  if (checkpoint.has_index()) {
    const fs::path index_path = folder / kIndexFileName;
    CKB_ASSIGN_OR_RETURN(json index, ParseJsonFile(index_path));
    if (index.is_object() && index.contains("metadata") && index["metadata"].is_object() &&
        index["metadata"].contains(kReceiptMetadataKey)) {
      return object(index["metadata"][kReceiptMetadataKey],
                    index_path.string() + ": metadata." + kReceiptMetadataKey);
    }
  }
  for (const auto& file : checkpoint.files()) {
    const auto& metadata = file->header().metadata;
    auto it = metadata.find(kReceiptMetadataKey);
    if (it == metadata.end()) continue;
    const std::string where =
        file->path().string() + ": __metadata__." + std::string(kReceiptMetadataKey);
    CKB_ASSIGN_OR_RETURN(json receipt, ParseJsonText(it->second, where));
    return object(std::move(receipt), where);
  }
  return std::optional<json>();
}

Result<std::optional<json>> OrbaxReceipt(const json& custom_metadata, const std::string& label) {
  if (!custom_metadata.is_object() || !custom_metadata.contains(kMetadataKey)) {
    return std::optional<json>();
  }
  const json& record = custom_metadata[kMetadataKey];
  if (!record.is_object() || !record.contains(kReceiptKey)) return std::optional<json>();
  const json& receipt = record[kReceiptKey];
  if (!receipt.is_object()) {
    return InvalidArgument(label + ": custom_metadata." + kMetadataKey + "." + kReceiptKey +
                           " is " + receipt.type_name() + ", not an object");
  }
  return std::optional<json>(receipt);
}

}  // namespace ckptbridge::engine
