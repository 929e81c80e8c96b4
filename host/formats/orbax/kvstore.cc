#include "host/formats/orbax/kvstore.h"

#include <system_error>

#include "host/base/file.h"

namespace ckptbridge::orbax {
namespace {

Status BadKey(std::string_view key, std::string_view why) {
  std::string printable;
  for (char c : key) printable += c == '\0' ? std::string("\\0") : std::string(1, c);
  return InvalidArgument("invalid key \"" + printable + "\": " + std::string(why));
}

}  // namespace

Status ValidateKey(std::string_view key) {
  if (key.empty()) return BadKey(key, "empty");
  if (key.find('\0') != std::string_view::npos) return BadKey(key, "contains a NUL byte");
  if (key.front() == '/') return BadKey(key, "starts with '/'");
  size_t start = 0;
  for (;;) {
    const size_t slash = key.find('/', start);
    const std::string_view part =
        key.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part.empty()) return BadKey(key, "has an empty path component");
    if (part == "." || part == "..") {
      return BadKey(key, "has a \"" + std::string(part) + "\" path component");
    }
    if (slash == std::string_view::npos) return Status::Ok();
    start = slash + 1;
  }
}

Result<std::string> FileKvStore::Read(std::string_view key) const {
  CKB_RETURN_IF_ERROR(ValidateKey(key));
  const std::filesystem::path path = root_ / key;
  // A valid key can still leave the store through a symlink in the item.
  std::error_code ec;
  const std::filesystem::path target = std::filesystem::canonical(path, ec);
  if (!ec) {
    const std::filesystem::path root = std::filesystem::canonical(root_, ec);
    if (ec) return ErrnoError(root_.string(), ec.value());
    auto t = target.begin();
    for (auto r = root.begin(); r != root.end(); ++r, ++t) {
      if (t == target.end() || *t != *r) {
        return InvalidArgument(path.string() + ": a symlink to " + target.string() + ", outside " +
                               root_.string());
      }
    }
  }
  Result<std::string> content = ReadFile(path);
  if (!content.ok() && content.status().code() == StatusCode::kNotFound) {
    return NotFound(path.string() + ": no such file");
  }
  return content;
}

Status KvStore::ReadInto(std::string_view key, ScratchBuffer& out) const {
  CKB_ASSIGN_OR_RETURN(const std::string value, Read(key));
  out.Resize(0);
  out.Append(value);
  return Status::Ok();
}

void FileKvStore::Prefetch(std::string_view key) const {
  if (!ValidateKey(key).ok()) return;
  AdviseWillNeed(root_ / key, 0, 0);  // length 0: to the end of the file
}

Result<bool> FileKvStore::Contains(std::string_view key) const {
  CKB_RETURN_IF_ERROR(ValidateKey(key));
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(root_ / key, ec);
  if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory) {
    return ErrnoError(Describe(key), ec.value());
  }
  return std::filesystem::is_regular_file(status);
}

Status FileKvStore::Write(std::string_view key, std::string_view value) {
  CKB_RETURN_IF_ERROR(ValidateKey(key));
  const std::filesystem::path path = root_ / key;
  Status made = CreateDirectories(path.parent_path());
  if (!made.ok()) {
    // Another thread may have created the same directory at the same moment.
    std::error_code ec;
    if (!std::filesystem::is_directory(path.parent_path(), ec)) return made;
  }
  return WriteFile(path, value);
}

std::string FileKvStore::Describe(std::string_view key) const { return (root_ / key).string(); }

}  // namespace ckptbridge::orbax
