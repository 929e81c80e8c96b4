#include "host/formats/orbax/ocdbt.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <new>
#include <set>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>

#include "host/base/file.h"

namespace ckptbridge::orbax {
namespace {

namespace fs = std::filesystem;
using ocdbt::BtreeGeneration;
using ocdbt::BtreeNode;
using ocdbt::DataRef;
using ocdbt::EncodedNode;
using ocdbt::InteriorEntry;
using ocdbt::LeafEntry;
using ocdbt::Manifest;

constexpr std::string_view kManifestName = "manifest.ocdbt";
// A manifest holds a config, at most 2^16 inline versions and a few
// version-node references: far below these limits.
constexpr uint64_t kMaxManifestFileBytes = uint64_t{256} << 20;
constexpr uint64_t kMaxManifestBodyBytes = uint64_t{256} << 20;
// The keys of a checkpoint's tree: a parameter name and a chunk index each,
// a few MB even for the largest models.
constexpr uint64_t kMaxTotalKeyBytes = uint64_t{1} << 30;

// A key or path as it may be printed: non-printable bytes as \xNN.
std::string Printable(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '\'' || c == '\\') {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

std::string Quoted(std::string_view s) { return "'" + Printable(s) + "'"; }

std::string Range(uint64_t offset, uint64_t length) {
  return "[" + std::to_string(offset) + ", +" + std::to_string(length) + ")";
}

// Why a data file path read from a database could name something outside
// the database directory; empty when it cannot.
std::string UnsafePathReason(std::string_view path) {
  if (path.empty()) return "it is empty";
  if (path.size() > ocdbt::kMaxPathLength) {
    return "it has " + std::to_string(path.size()) + " bytes, more than " +
           std::to_string(ocdbt::kMaxPathLength);
  }
  if (path.find('\0') != std::string_view::npos) return "it contains a NUL byte";
  if (path.front() == '/') return "it is absolute";
  size_t start = 0;
  for (;;) {
    const size_t slash = path.find('/', start);
    const std::string_view part = path.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part.empty()) return "it has an empty path component";
    if (part == "." || part == "..") return "it has a \"" + std::string(part) + "\" component";
    if (slash == std::string_view::npos) return "";
    start = slash + 1;
  }
}

Status CheckDataPath(std::string_view path, std::string_view label) {
  const std::string why = UnsafePathReason(path);
  if (why.empty()) return Status::Ok();
  return DataLoss(std::string(label) + ": data file path \"" + Printable(path) +
                  "\" is not inside the database directory (" + why + ")");
}

// DataLoss when `file`, a path below `dir` that names no ".." component,
// still leads outside `dir` through a symlink (a database from the internet
// could otherwise make us read any file the user can).
Status CheckNoSymlinkEscape(const fs::path& file, const fs::path& dir) {
  std::error_code ec;
  const fs::path target = fs::canonical(file, ec);
  if (ec) return Status::Ok();  // missing: reading it says so
  const fs::path root = fs::canonical(dir, ec);
  if (ec) return ErrnoError(dir.string(), ec.value());
  auto t = target.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++t) {
    if (t == target.end() || *t != *r) {
      return DataLoss(file.string() + ": a symlink to " + target.string() +
                      ", outside the database directory " + dir.string());
    }
  }
  return Status::Ok();
}

// Closes a descriptor when it goes out of scope.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

// `length` bytes at `offset` of the file at `path`, which a database
// references (`what` says how). A missing file or a range past its end is
// DataLoss: the database promised those bytes. They are read into the
// `length` bytes that `allocate(length)` returns.
Status ReadRangeInto(const fs::path& path, uint64_t offset, uint64_t length, std::string_view what,
                     const std::function<char*(size_t)>& allocate) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return DataLoss(path.string() + ": no such file (" + std::string(what) + ")");
    }
    return ErrnoError(path.string(), err);
  }
  FdCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoError(path.string(), errno);
  if (!S_ISREG(st.st_mode)) {
    return DataLoss(path.string() + ": not a regular file (" + std::string(what) + ")");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (offset > size || length > size - offset) {
    return DataLoss(path.string() + ": " + std::string(what) + " at " + Range(offset, length) +
                    " lies past the end of the " + std::to_string(size) + "-byte file");
  }
  char* out = nullptr;
  try {
    out = allocate(static_cast<size_t>(length));
  } catch (const std::bad_alloc&) {
    return ResourceExhausted(path.string() + ": out of memory: cannot allocate " +
                             std::to_string(length) + " bytes for " + std::string(what));
  }
  uint64_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd, out + done, static_cast<size_t>(length - done),
                              static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(path.string(), errno);
    }
    if (n == 0) {
      return DataLoss(path.string() + ": the file ended while reading " + std::string(what) +
                      " at " + Range(offset, length));
    }
    done += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Result<std::string> ReadRange(const fs::path& path, uint64_t offset, uint64_t length,
                              std::string_view what) {
  std::string out;
  CKB_RETURN_IF_ERROR(ReadRangeInto(path, offset, length, what, [&](size_t n) {
    out.resize(n);
    return out.data();
  }));
  return out;
}

// A whole manifest file, refusing absurd sizes before reading them.
Result<std::string> ReadManifestFile(const fs::path& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) {
      return NotFound(path.string() + ": no such file");
    }
    return ErrnoError(path.string(), ec.value());
  }
  if (size > kMaxManifestFileBytes) {
    return DataLoss(path.string() + ": " + std::to_string(size) +
                    " bytes, too large for an OCDBT manifest");
  }
  return ReadRange(path, 0, size, "OCDBT manifest");
}

Result<Manifest> DecodeManifestFile(const fs::path& path) {
  CKB_ASSIGN_OR_RETURN(std::string bytes, ReadManifestFile(path));
  CKB_ASSIGN_OR_RETURN(
      std::string body,
      ocdbt::DecodeEnvelope(bytes, ocdbt::kManifestMagic, kMaxManifestBodyBytes, path.string()));
  return ocdbt::DecodeManifestBody(body, path.string());
}

// The generation of a numbered manifest file name ("manifest." + 16
// lowercase hex digits), or 0 for any other name.
uint64_t NumberedGeneration(std::string_view name) {
  constexpr std::string_view kPrefix = "manifest.";
  if (name.size() != kPrefix.size() + 16 || name.substr(0, kPrefix.size()) != kPrefix) return 0;
  uint64_t generation = 0;
  for (char c : name.substr(kPrefix.size())) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return 0;
    }
    generation = (generation << 4) | static_cast<uint64_t>(digit);
  }
  return generation;
}

// The decoded size a node may have: TensorStore keeps nodes near
// max_decoded_node_bytes (a single entry, up to a 1 MiB inline value, may
// exceed it), so twice that plus slack is generous; 0 means "no limit".
uint64_t MaxNodeBodyBytes(const ocdbt::Config& config) {
  if (config.max_decoded_node_bytes == 0) return uint64_t{1} << 30;
  return std::max<uint64_t>(uint64_t{64} << 20,
                            2 * uint64_t{config.max_decoded_node_bytes} + (uint64_t{2} << 20));
}

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// ---------------------------------------------------------------------------
// OcdbtReader

// The state of one walk over the tree.
struct OcdbtReader::Walk {
  OcdbtReader& reader;
  uint64_t max_body_bytes;
  const std::string* last_key = nullptr;
  // Nodes already read, by (canonical file, offset, length). A version's tree
  // never shares a node between two parents; a hostile one that does could
  // make a few nodes stand for 2^height leaves.
  std::set<std::tuple<std::string, uint64_t, uint64_t>> visited;
  // Bytes of all keys kept so far: prefix compression plus zstd let a small
  // database spell out far more key bytes than any real checkpoint has.
  uint64_t key_bytes = 0;

  // Loads the node `ref` (a path below `transitive`) of height `height`
  // whose keys start with `prefix` and are at least `inclusive_min`.
  Status Node(const DataRef& ref, const std::string& transitive, uint8_t height,
              const std::string& prefix, const std::string& inclusive_min,
              std::string_view referrer) {
    const std::string path = transitive + ref.file.FullPath();
    CKB_RETURN_IF_ERROR(CheckDataPath(path, referrer));
    const fs::path file = reader.dir_ / path;
    const std::string label = file.string() + " at " + Range(ref.offset, ref.length);
    std::error_code ec;
    const fs::path canonical = fs::weakly_canonical(file, ec);
    if (!visited.emplace(ec ? file.string() : canonical.string(), ref.offset, ref.length).second) {
      return DataLoss(label + ": b+tree node referenced a second time, by " +
                      std::string(referrer) + " (the nodes of a tree are never shared)");
    }
    CKB_RETURN_IF_ERROR(CheckNoSymlinkEscape(file, reader.dir_));
    CKB_ASSIGN_OR_RETURN(std::string encoded,
                         ReadRange(file, ref.offset, ref.length,
                                   "b+tree node referenced by " + std::string(referrer)));
    CKB_ASSIGN_OR_RETURN(std::string body, ocdbt::DecodeEnvelope(encoded, ocdbt::kBtreeNodeMagic,
                                                                 max_body_bytes, label));
    CKB_ASSIGN_OR_RETURN(BtreeNode node, ocdbt::DecodeBtreeNodeBody(body, label));
    if (node.height != height) {
      return DataLoss(label + ": b+tree node of height " + std::to_string(node.height) + ", but " +
                      std::string(referrer) + " expects height " + std::to_string(height));
    }
    const std::string& first_key = node.height == 0 ? node.leaves[0].key : node.children[0].key;
    if (prefix + first_key < inclusive_min) {
      return DataLoss(label + ": first key " + Quoted(prefix + first_key) +
                      " sorts before the lower bound " + Quoted(inclusive_min) + " that " +
                      std::string(referrer) + " gives it");
    }
    ++reader.num_nodes_;
    // Files named in this node are relative to the base path of the file
    // it was read from.
    const std::string inner = transitive + ref.file.base_path;
    if (inner.size() > ocdbt::kMaxPathLength) {
      return DataLoss(label + ": transitive base path of " + std::to_string(inner.size()) +
                      " bytes exceeds the limit of " + std::to_string(ocdbt::kMaxPathLength));
    }
    if (node.height == 0) {
      for (LeafEntry& entry : node.leaves) {
        std::string key = prefix + entry.key;
        key_bytes += key.size();
        if (key_bytes > kMaxTotalKeyBytes) {
          return DataLoss(label + ": the keys of the tree add up to more than " +
                          std::to_string(kMaxTotalKeyBytes) + " bytes");
        }
        if (last_key && key <= *last_key) {
          return DataLoss(label + ": key " + Quoted(key) + " does not sort after " +
                          Quoted(*last_key) + " (keys must increase across the whole tree)");
        }
        Value value;
        if (entry.out_of_line) {
          value.out_of_line = true;
          value.data = inner + entry.ref.file.FullPath();
          CKB_RETURN_IF_ERROR(CheckDataPath(value.data, label + ": value of key " + Quoted(key)));
          value.offset = entry.ref.offset;
          value.length = entry.ref.length;
        } else {
          value.data = std::move(entry.value);
        }
        auto it =
            reader.values_.emplace_hint(reader.values_.end(), std::move(key), std::move(value));
        last_key = &it->first;
      }
      return Status::Ok();
    }
    const std::string child_referrer = "b+tree node " + label;
    for (const InteriorEntry& entry : node.children) {
      const std::string child_prefix =
          prefix + entry.key.substr(0, entry.subtree_common_prefix_length);
      CKB_RETURN_IF_ERROR(Node(entry.child, inner, static_cast<uint8_t>(height - 1), child_prefix,
                               prefix + entry.key, child_referrer));
    }
    return Status::Ok();
  }
};

Result<std::unique_ptr<OcdbtReader>> OcdbtReader::Open(const fs::path& dir) {
  std::unique_ptr<OcdbtReader> reader(new OcdbtReader(dir));
  CKB_RETURN_IF_ERROR(reader->LoadManifest());
  CKB_RETURN_IF_ERROR(reader->LoadTree());
  return reader;
}

Status OcdbtReader::LoadManifest() {
  manifest_path_ = dir_ / kManifestName;
  CKB_ASSIGN_OR_RETURN(manifest_, DecodeManifestFile(manifest_path_));
  if (manifest_.config.manifest_kind == ocdbt::ManifestKind::kSingle) return Status::Ok();

  // Numbered: manifest.ocdbt holds the config; the versions are in the
  // numbered manifest with the highest generation.
  uint64_t latest = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    latest = std::max(latest, NumberedGeneration(it->path().filename().string()));
  }
  if (ec) return ErrnoError(dir_.string(), ec.value());
  if (latest == 0) {
    return DataLoss(manifest_path_.string() +
                    ": the config says versions are kept in numbered manifests, but " +
                    dir_.string() + " has no manifest.<16 hex digits> file");
  }
  const fs::path numbered_path = dir_ / ocdbt::NumberedManifestName(latest);
  CKB_ASSIGN_OR_RETURN(Manifest numbered, DecodeManifestFile(numbered_path));
  ocdbt::Config expected = manifest_.config;
  expected.manifest_kind = ocdbt::ManifestKind::kSingle;
  if (!(numbered.config == expected)) {
    return DataLoss(numbered_path.string() + ": its config differs from " +
                    manifest_path_.string() + "'s");
  }
  if (numbered.versions.back().generation != latest) {
    return DataLoss(numbered_path.string() + ": latest generation " +
                    std::to_string(numbered.versions.back().generation) +
                    " differs from the generation in the file name, " + std::to_string(latest));
  }
  manifest_path_ = numbered_path;
  manifest_ = std::move(numbered);
  return Status::Ok();
}

Status OcdbtReader::LoadTree() {
  const BtreeGeneration& latest = version();
  if (latest.root.IsMissing()) return Status::Ok();  // an empty database
  Walk walk{*this, MaxNodeBodyBytes(manifest_.config), nullptr, {}, 0};
  return walk.Node(latest.root, "", latest.root_height, "", "",
                   "the manifest " + manifest_path_.string() + " (generation " +
                       std::to_string(latest.generation) + ")");
}

Status OcdbtReader::ReadValue(std::string_view key,
                              const std::function<char*(size_t)>& allocate) const {
  auto it = values_.find(key);
  if (it == values_.end()) {
    return NotFound(dir_.string() + ": no key " + Quoted(key) + " in the OCDBT database");
  }
  const Value& value = it->second;
  if (!value.out_of_line) {
    char* out = allocate(value.data.size());
    if (!value.data.empty()) std::memcpy(out, value.data.data(), value.data.size());
    return Status::Ok();
  }
  CKB_RETURN_IF_ERROR(CheckNoSymlinkEscape(dir_ / value.data, dir_));
  return ReadRangeInto(dir_ / value.data, value.offset, value.length,
                       "value of OCDBT key " + Quoted(key), allocate);
}

Result<std::string> OcdbtReader::Read(std::string_view key) const {
  std::string out;
  CKB_RETURN_IF_ERROR(ReadValue(key, [&](size_t n) {
    out.resize(n);
    return out.data();
  }));
  return out;
}

Status OcdbtReader::ReadInto(std::string_view key, ScratchBuffer& out) const {
  return ReadValue(key, [&](size_t n) {
    out.Resize(n);
    return out.data();
  });
}

Result<std::optional<MappedRegion>> OcdbtReader::Map(std::string_view key) const {
  auto none = [] { return std::optional<MappedRegion>(); };
  const Result<ValueLocation> at = Locate(key);
  if (!at.ok() || !at->out_of_line || at->size == 0) return none();
  if (!CheckNoSymlinkEscape(at->file, dir_).ok()) return none();
  // A range past the end of the file fails to map, like a missing file to
  // open; ReadInto says which.
  Result<ReadOnlyFile> file = ReadOnlyFile::Open(at->file);
  if (!file.ok()) return none();
  Result<MappedRegion> region =
      file->Map(at->offset, at->size, "value of OCDBT key " + Quoted(key));
  if (region.status().code() == StatusCode::kResourceExhausted) return region.status();
  if (!region.ok()) return none();
  return std::optional<MappedRegion>(std::move(*region));
}

void OcdbtReader::Prefetch(std::string_view key) const {
  auto it = values_.find(key);
  if (it == values_.end() || !it->second.out_of_line) return;
  AdviseWillNeed(dir_ / it->second.data, it->second.offset, it->second.length);
}

Result<bool> OcdbtReader::Contains(std::string_view key) const {
  return values_.find(key) != values_.end();
}

Status OcdbtReader::Write(std::string_view key, std::string_view) {
  return FailedPrecondition(dir_.string() + ": cannot write key " + Quoted(key) +
                            ": the OCDBT database is open read-only");
}

std::string OcdbtReader::Describe(std::string_view key) const {
  std::string out = dir_.string() + " OCDBT key " + Quoted(key);
  auto it = values_.find(key);
  if (it != values_.end() && it->second.out_of_line) {
    out += " (" + (dir_ / it->second.data).string() + " at " +
           Range(it->second.offset, it->second.length) + ")";
  }
  return out;
}

std::vector<std::string> OcdbtReader::ListKeys(std::string_view prefix) const {
  std::vector<std::string> keys;
  for (auto it = values_.lower_bound(prefix);
       it != values_.end() && std::string_view(it->first).substr(0, prefix.size()) == prefix;
       ++it) {
    keys.push_back(it->first);
  }
  return keys;
}

uint64_t OcdbtReader::StoredBytes(std::string_view prefix) const {
  uint64_t total = 0;
  for (auto it = values_.lower_bound(prefix);
       it != values_.end() && std::string_view(it->first).substr(0, prefix.size()) == prefix;
       ++it) {
    total += it->second.out_of_line ? it->second.length : it->second.data.size();
  }
  return total;
}

Result<OcdbtReader::ValueLocation> OcdbtReader::Locate(std::string_view key) const {
  auto it = values_.find(key);
  if (it == values_.end()) {
    return NotFound(dir_.string() + ": no key " + Quoted(key) + " in the OCDBT database");
  }
  ValueLocation location;
  location.out_of_line = it->second.out_of_line;
  if (location.out_of_line) {
    location.size = it->second.length;
    location.file = dir_ / it->second.data;
    location.offset = it->second.offset;
  } else {
    location.size = it->second.data.size();
  }
  return location;
}

// ---------------------------------------------------------------------------
// OcdbtWriter

OcdbtWriter::OcdbtWriter(fs::path dir, const OcdbtWriteOptions& options)
    : dir_(std::move(dir)), options_(options), config_(ocdbt::Config::ForOrbax()) {
  config_.max_decoded_node_bytes = options.max_decoded_node_bytes;
  config_.max_inline_value_bytes = options.max_inline_value_bytes;
}

Result<std::unique_ptr<OcdbtWriter>> OcdbtWriter::Create(const fs::path& dir,
                                                         const OcdbtWriteOptions& options) {
  if (options.target_data_file_size == 0) {
    return InvalidArgument("ocdbt: target_data_file_size must be positive");
  }
  if (options.max_inline_value_bytes > ocdbt::kMaxInlineValueLength) {
    return InvalidArgument(
        "ocdbt: max_inline_value_bytes " + std::to_string(options.max_inline_value_bytes) +
        " exceeds the format's limit of " + std::to_string(ocdbt::kMaxInlineValueLength));
  }
  std::error_code ec;
  if (options.resume) {
    fs::remove(dir / kManifestName, ec);
    if (ec) return ErrnoError((dir / kManifestName).string(), ec.value());
  }
  if (fs::exists(dir / kManifestName, ec)) {
    return FailedPrecondition((dir / kManifestName).string() +
                              ": already exists; an OCDBT database is written only once");
  }
  CKB_RETURN_IF_ERROR(CreateDirectories(dir));
  return std::unique_ptr<OcdbtWriter>(new OcdbtWriter(dir, options));
}

Result<DataRef> OcdbtWriter::Append(std::string_view bytes) {
  std::shared_ptr<DataFile> file;
  uint64_t offset = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Each thread appends to a file of its own: writes to one file take its
    // inode lock in turn, and threads sharing a file spent their time
    // waiting for each other's copies into the page cache. Start a new file
    // when the value would take a non-empty one past the target size (a
    // larger value gets a file to itself).
    std::shared_ptr<DataFile>& current = current_[std::this_thread::get_id()];
    const uint64_t used = current ? current->size : 0;
    if (!current || (used > 0 && used + bytes.size() > options_.target_data_file_size)) {
      CKB_RETURN_IF_ERROR(CreateDirectories(dir_ / "d"));
      auto next = std::make_shared<DataFile>();
      std::error_code ec;
      do {
        next->relative_path = "d/" + RandomHex(32);
      } while (fs::exists(dir_ / next->relative_path, ec));
      CKB_ASSIGN_OR_RETURN(next->file, OutputFile::Create(dir_ / next->relative_path));
      files_.push_back(next);
      current = std::move(next);
    }
    file = current;
    offset = file->size;
    file->size += bytes.size();
  }
  CKB_RETURN_IF_ERROR(file->file.PWrite(offset, bytes.data(), bytes.size()));
  DataRef ref;
  ref.file.relative_path = file->relative_path;
  ref.offset = offset;
  ref.length = bytes.size();
  return ref;
}

Status OcdbtWriter::Write(std::string_view key, std::string_view value) {
  return WriteEntry(key, value).status();
}

Status OcdbtWriter::Adopt(LeafEntry entry) {
  if (entry.key.empty() || entry.key.size() > ocdbt::kMaxKeyLength) {
    return InvalidArgument(dir_.string() + ": OCDBT key of " + std::to_string(entry.key.size()) +
                           " bytes (must be 1 to " + std::to_string(ocdbt::kMaxKeyLength) + ")");
  }
  if (entry.out_of_line) {
    const fs::path relative = entry.ref.file.FullPath();
    bool inside = !relative.empty() && relative.is_relative();
    for (const fs::path& part : relative) inside &= part != ".." && part != "." && !part.empty();
    if (!inside) {
      return InvalidArgument(dir_.string() + ": OCDBT key " + Quoted(entry.key) + ": data file " +
                             Quoted(relative.string()) + " does not lie inside the database");
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) {
    return FailedPrecondition(dir_.string() + ": OCDBT key " + Quoted(entry.key) +
                              " adopted after Finish()");
  }
  std::string key = entry.key;
  entries_.insert_or_assign(std::move(key), std::move(entry));
  return Status::Ok();
}

Result<LeafEntry> OcdbtWriter::WriteEntry(std::string_view key, std::string_view value) {
  if (key.empty() || key.size() > ocdbt::kMaxKeyLength) {
    return InvalidArgument(dir_.string() + ": OCDBT key of " + std::to_string(key.size()) +
                           " bytes (must be 1 to " + std::to_string(ocdbt::kMaxKeyLength) + ")");
  }
  auto finished = [&] {
    return FailedPrecondition(dir_.string() + ": OCDBT key " + Quoted(key) +
                              " written after Finish()");
  };
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return finished();
  }
  LeafEntry entry;
  entry.key = std::string(key);
  if (value.size() > options_.max_inline_value_bytes) {
    CKB_ASSIGN_OR_RETURN(entry.ref, Append(value));
    entry.out_of_line = true;
  } else {
    entry.value = std::string(value);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return finished();
  entries_.insert_or_assign(std::string(key), entry);
  return entry;
}

Result<std::string> OcdbtWriter::Read(std::string_view key) const {
  DataRef ref;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end()) {
      return NotFound(dir_.string() + ": no key " + Quoted(key) + " written to the OCDBT database");
    }
    if (!it->second.out_of_line) return it->second.value;
    ref = it->second.ref;
  }
  return ReadRange(dir_ / ref.file.FullPath(), ref.offset, ref.length,
                   "value of OCDBT key " + Quoted(key));
}

Result<bool> OcdbtWriter::Contains(std::string_view key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.find(key) != entries_.end();
}

std::string OcdbtWriter::Describe(std::string_view key) const {
  return dir_.string() + " OCDBT key " + Quoted(key);
}

std::vector<std::string> OcdbtWriter::DataFiles() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> paths;
  for (const auto& file : files_) paths.push_back(file->relative_path);
  return paths;
}

Status OcdbtWriter::Finish() {
  std::vector<LeafEntry> entries;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return FailedPrecondition(dir_.string() + ": OCDBT Finish() called twice");
    finished_ = true;
    entries.reserve(entries_.size());
    for (auto& [key, entry] : entries_) entries.push_back(std::move(entry));
    entries_.clear();
  }

  // Each encoded node goes into a data file; its parent points at it.
  auto write_nodes = [&](std::vector<EncodedNode> nodes) -> Result<std::vector<InteriorEntry>> {
    std::vector<InteriorEntry> refs;
    refs.reserve(nodes.size());
    for (EncodedNode& node : nodes) {
      InteriorEntry ref;
      CKB_ASSIGN_OR_RETURN(ref.child, Append(node.encoded));
      ref.key = std::move(node.inclusive_min_key);
      ref.subtree_common_prefix_length = node.excluded_prefix_length;
      ref.statistics = node.statistics;
      refs.push_back(std::move(ref));
    }
    return refs;
  };

  BtreeGeneration version;
  version.generation = 1;
  if (entries.empty()) {
    version.root = DataRef::Missing();
  } else {
    CKB_ASSIGN_OR_RETURN(std::vector<EncodedNode> leaves,
                         ocdbt::EncodeLeafNodes(config_, entries, /*may_be_root=*/true));
    entries.clear();
    CKB_ASSIGN_OR_RETURN(std::vector<InteriorEntry> level, write_nodes(std::move(leaves)));
    uint8_t height = 0;
    // Add levels until one node remains (TensorStore's WriteRootNode).
    while (level.size() > 1) {
      if (height == 255) return Internal(dir_.string() + ": OCDBT b+tree exceeds height 255");
      ++height;
      CKB_ASSIGN_OR_RETURN(std::vector<EncodedNode> nodes,
                           ocdbt::EncodeInteriorNodes(config_, height, level, true));
      CKB_ASSIGN_OR_RETURN(level, write_nodes(std::move(nodes)));
    }
    version.root = level[0].child;
    version.root_height = height;
    version.statistics = level[0].statistics;
  }
  version.commit_time = static_cast<uint64_t>(NowNanos());

  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& file : files_) CKB_RETURN_IF_ERROR(file->file.Close());
  }

  Manifest manifest;
  manifest.config = config_;
  manifest.versions = {version};
  CKB_ASSIGN_OR_RETURN(std::string body, ocdbt::EncodeManifestBody(manifest));
  CKB_ASSIGN_OR_RETURN(std::string encoded,
                       ocdbt::EncodeEnvelope(ocdbt::kManifestMagic, body, config_));
  // Written last and renamed into place: a reader sees the whole database
  // or none of it.
  const fs::path final_path = dir_ / kManifestName;
  const fs::path temp_path = dir_ / (std::string(kManifestName) + ".tmp-" + RandomHex(12));
  CKB_RETURN_IF_ERROR(WriteFile(temp_path, encoded));
  std::error_code ec;
  fs::rename(temp_path, final_path, ec);
  if (ec) {
    fs::remove(temp_path, ec);
    return ErrnoError(final_path.string(), ec.value());
  }
  version_ = version;
  return Status::Ok();
}

}  // namespace ckptbridge::orbax
