#include "host/engine/journal.h"

#include <fcntl.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <thread>

#include "host/base/checksum.h"
#include "host/base/file.h"
#include "host/base/shape.h"
#include "host/engine/staging.h"

namespace ckptbridge::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kJournalFormat = 1;

// The pieces of the unit running on this thread (Journal::Run), or null
// outside a unit: the scalar `step`, array metadata and everything written
// at Finish are rewritten by every run and need no record.
thread_local std::vector<json>* t_pieces = nullptr;

std::string Hex8(uint32_t value) {
  char text[9];
  std::snprintf(text, sizeof text, "%08x", value);
  return text;
}

std::string HexBytes(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

Result<std::string> UnHex(std::string_view hex) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) return DataLoss("odd number of hex digits");
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = digit(hex[2 * i]), lo = digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return DataLoss("not a hex digit");
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

uint32_t Crc(std::string_view bytes) { return ComputeCrc32c(bytes.data(), bytes.size()); }

// JSON text that never throws: names come from the source and plugins, and
// invalid UTF-8 in one becomes U+FFFD (such a record then matches nothing
// on resume, and its unit is redone).
std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// "<crc> <json>\n": the CRC makes a torn or damaged line recognizable.
std::string Line(const json& record) {
  const std::string text = Dump(record);
  return Hex8(Crc(text)) + " " + text + "\n";
}

// The record of one complete line, or null when it is damaged.
json ParseLine(std::string_view line) {
  if (line.size() < 10 || line[8] != ' ') return nullptr;
  const std::string_view text = line.substr(9);
  if (Hex8(Crc(text)) != line.substr(0, 8)) return nullptr;
  json record = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return record.is_discarded() ? json(nullptr) : record;
}

std::string Show(const json& value) {
  std::string text = Dump(value);
  if (text.size() > 120) text = text.substr(0, 117) + "...";
  return text;
}

// The first difference between two fingerprints, "path was X, now Y";
// empty when they are equal.
std::string FirstDifference(const json& then, const json& now, const std::string& path) {
  if (then == now) return "";
  auto child = [&](const std::string& key) { return path.empty() ? key : path + "/" + key; };
  if (then.is_object() && now.is_object()) {
    for (const auto& [key, value] : then.items()) {
      if (!now.contains(key)) return child(key) + " was " + Show(value) + ", now absent";
      std::string difference = FirstDifference(value, now[key], child(key));
      if (!difference.empty()) return difference;
    }
    for (const auto& [key, value] : now.items()) {
      if (!then.contains(key)) return child(key) + " was absent, now " + Show(value);
    }
  }
  return (path.empty() ? std::string("the fingerprint") : path) + " was " + Show(then) + ", now " +
         Show(now);
}

// A path from the journal: relative and inside the staging directory.
Result<fs::path> InsideStaging(const fs::path& staging, const std::string& relative) {
  const fs::path path(relative);
  bool inside = !relative.empty() && path.is_relative();
  for (const fs::path& part : path) inside &= part != ".." && part != "." && !part.empty();
  if (!inside) return DataLoss("path '" + relative + "' leaves the staging directory");
  return staging / path;
}

// Reads back [offset, offset + length) of `path` (the whole file, which must
// have exactly `length` bytes, when `whole`) and compares its CRC-32C.
// Empty when intact, else what is wrong.
std::string CheckRange(const fs::path& path, uint64_t offset, uint64_t length, bool whole,
                       uint32_t expected) {
  Result<ReadOnlyFile> file = ReadOnlyFile::Open(path);
  if (!file.ok()) return file.status().message();
  const uint64_t size = file->size();
  if (whole ? size != length : size < offset || size - offset < length) {
    return path.string() + ": " + std::to_string(size) + " bytes, too short for bytes [" +
           std::to_string(offset) + ", " + std::to_string(offset + length) +
           ") the journal recorded";
  }
  Crc32c crc;
  std::string buffer(std::min<uint64_t>(length, uint64_t{1} << 20), '\0');
  for (uint64_t done = 0; done < length;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), length - done));
    const Status read = file->PRead(offset + done, buffer.data(), want);
    if (!read.ok()) return read.message();
    crc.Update(buffer.data(), want);
    done += want;
  }
  if (crc.value() != expected) {
    return path.string() + ": bytes [" + std::to_string(offset) + ", " +
           std::to_string(offset + length) + ") have CRC-32C " + Hex8(crc.value()) +
           ", the journal recorded " + Hex8(expected);
  }
  return "";
}

// Empty when `piece` reads back intact, else what is wrong.
std::string CheckPiece(const fs::path& staging, const json& piece) {
  try {
    const uint32_t expected = piece.at("crc32c").get<uint32_t>();
    const uint64_t length = piece.at("length").get<uint64_t>();
    if (piece.contains("value")) {
      Result<std::string> value = UnHex(piece["value"].get<std::string>());
      if (!value.ok() || value->size() != length || Crc(*value) != expected) {
        return "the inline value of '" + piece.value("key", std::string()) +
               "' in the journal is damaged";
      }
      return "";
    }
    Result<fs::path> path = InsideStaging(staging, piece.at("file").get<std::string>());
    if (!path.ok()) return path.status().message();
    const bool whole = piece.at("kind") == "chunk" && !piece.at("ocdbt").get<bool>();
    const uint64_t offset = whole                          ? 0
                            : piece.at("kind") == "tensor" ? piece.at("file_offset").get<uint64_t>()
                                                           : piece.at("offset").get<uint64_t>();
    return CheckRange(*path, offset, length, whole, expected);
  } catch (const json::exception& e) {
    return std::string("a piece record is malformed: ") + e.what();
  }
}

int OpenLocked(const fs::path& path, int flags, Status* error) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = errno == ENOENT ? NotFound(path.string() +
                                        ": no journal (the interrupted run "
                                        "died before writing one)")
                             : ErrnoError(path.string(), errno);
    return -1;
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    *error = err == EWOULDBLOCK
                 ? FailedPrecondition(path.parent_path().string() +
                                      ": in use by a conversion that is still running")
                 : ErrnoError(path.string(), err);
    return -1;
  }
  return fd;
}

}  // namespace

Journal::Journal(fs::path staging, int fd, bool resumed)
    : staging_(std::move(staging)), fd_(fd), resumed_(resumed) {}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);  // also releases the lock
}

Result<std::unique_ptr<Journal>> Journal::Create(const fs::path& staging, const json& fingerprint) {
  Status error;
  const int fd =
      OpenLocked(staging / kJournalFileName, O_WRONLY | O_CREAT | O_EXCL | O_APPEND, &error);
  if (fd < 0) return error;
  std::unique_ptr<Journal> journal(new Journal(staging, fd, /*resumed=*/false));
  CKB_RETURN_IF_ERROR(journal->Append({{"journal", kJournalFormat}, {"fingerprint", fingerprint}}));
  return journal;
}

Result<std::unique_ptr<Journal>> Journal::Open(const fs::path& staging, const json& fingerprint) {
  const fs::path path = staging / kJournalFileName;
  Status error;
  const int fd = OpenLocked(path, O_RDWR | O_APPEND, &error);
  if (fd < 0) return error;
  std::unique_ptr<Journal> journal(new Journal(staging, fd, /*resumed=*/true));
  CKB_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  // A torn last line (no newline) is cut off, so that the next record
  // starts on a line of its own.
  const size_t complete = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  if (complete != text.size()) {
    if (::ftruncate(fd, static_cast<off_t>(complete)) != 0) {
      return ErrnoError(path.string(), errno);
    }
    text.resize(complete);
  }
  bool header = true;
  for (size_t start = 0; start < text.size();) {
    const size_t end = text.find('\n', start);
    const json record = ParseLine(std::string_view(text).substr(start, end - start));
    start = end + 1;
    if (header) {
      if (!record.is_object() || !record.contains("journal") ||
          record["journal"] != kJournalFormat || !record.contains("fingerprint")) {
        return NotFound(path.string() + ": the first line is not a journal header of format " +
                        std::to_string(kJournalFormat));
      }
      // Compared as written: through the same UTF-8 repair as the header.
      const std::string difference =
          FirstDifference(record["fingerprint"], json::parse(Dump(fingerprint)), "");
      if (!difference.empty()) {
        return InvalidArgument(staging.string() +
                               " holds an interrupted run of another conversion: " + difference);
      }
      header = false;
      continue;
    }
    if (!record.is_object() || !record.contains("unit") || !record["unit"].is_number_unsigned() ||
        !record.contains("pieces") || !record["pieces"].is_array()) {
      ++journal->damaged_lines_;
      continue;
    }
    journal->units_[record["unit"].get<size_t>()] = record;
  }
  if (header) return NotFound(path.string() + ": empty (the interrupted run wrote no header)");
  return journal;
}

Journal::Verified Journal::Verify(int threads) {
  std::vector<size_t> ids;
  for (const auto& [unit, record] : units_) ids.push_back(unit);
  std::vector<size_t> bad(ids.size(), 0);
  std::vector<std::string> problems(ids.size());
  const int workers =
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  tbb::task_arena arena(workers);
  arena.execute([&] {
    tbb::parallel_for(size_t{0}, ids.size(), [&](size_t i) {
      for (const json& piece : units_.at(ids[i])["pieces"]) {
        std::string problem = CheckPiece(staging_, piece);
        if (problem.empty()) continue;
        if (bad[i]++ == 0) problems[i] = std::move(problem);
      }
    });
  });
  Verified result;
  result.damaged_lines = damaged_lines_;
  for (size_t i = 0; i < ids.size(); ++i) {
    verified_[ids[i]] = bad[i] == 0;
    const size_t pieces = units_.at(ids[i])["pieces"].size();
    if (bad[i] == 0) {
      ++result.units;
      result.pieces += pieces;
    } else {
      ++result.bad_units;
      result.bad_pieces += bad[i];
      if (result.first_problem.empty()) result.first_problem = problems[i];
    }
  }
  return result;
}

Status Journal::Append(const json& record) {
  const std::string line = Line(record);
  std::lock_guard<std::mutex> lock(mutex_);
  // One write() per line: O_APPEND places it whole after the others.
  for (size_t done = 0; done < line.size();) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError((staging_ / kJournalFileName).string(), errno);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status Journal::Run(size_t unit, const std::function<Status()>& body) {
  std::vector<json> pieces;
  std::vector<json>* const outer = t_pieces;  // a unit TBB ran inside another one's wait
  t_pieces = &pieces;
  Status status = body();
  t_pieces = outer;
  if (!status.ok()) return status;
  return Append({{"unit", unit}, {"pieces", std::move(pieces)}});
}

bool Journal::Skip(size_t unit) {
  const auto verified = verified_.find(unit);
  if (verified == verified_.end() || !verified->second) return false;
  const json& pieces = units_.at(unit)["pieces"];
  try {
    // All or nothing: a unit that cannot take over every piece runs again.
    for (const json& piece : pieces) {
      if (piece.at("kind") == "chunk") {
        if (!writer_) return false;
        continue;
      }
      std::lock_guard<std::mutex> lock(mutex_);
      const auto shard = shards_.find(piece.at("shard").get<std::string>());
      if (shard == shards_.end()) return false;
      const safetensors::PlannedShard& planned = shard->second->shard();
      const size_t index = piece.at("tensor").get<size_t>();
      if (index >= planned.tensors.size()) return false;
      const safetensors::PlannedTensor& tensor = planned.tensors[index];
      const uint64_t offset = piece.at("offset").get<uint64_t>();
      // A header of another length (the plan or the metadata changed) moves
      // every tensor: what the journal says is then somewhere else.
      if (tensor.spec.name != piece.at("name").get<std::string>() ||
          piece.at("file_offset").get<uint64_t>() !=
              planned.header.size() + tensor.begin + offset) {
        return false;
      }
    }
    for (const json& piece : pieces) {
      Status adopted;
      if (piece.at("kind") == "chunk") {
        const std::vector<int64_t> index = piece.at("index").get<std::vector<int64_t>>();
        if (piece.at("ocdbt").get<bool>()) {
          orbax::ocdbt::LeafEntry entry;
          entry.key = piece.at("key").get<std::string>();
          if (piece.contains("value")) {
            Result<std::string> value = UnHex(piece["value"].get<std::string>());
            if (!value.ok()) return false;
            entry.value = std::move(*value);
          } else {
            entry.out_of_line = true;
            entry.ref.file.relative_path = piece.at("data_file").get<std::string>();
            entry.ref.offset = piece.at("offset").get<uint64_t>();
            entry.ref.length = piece.at("length").get<uint64_t>();
          }
          adopted = writer_->AdoptChunk(piece.at("array").get<std::string>(), index, &entry);
        } else {
          adopted = writer_->AdoptChunk(piece.at("array").get<std::string>(), index, nullptr);
        }
      } else {
        safetensors::ShardWriter* shard = nullptr;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          shard = shards_.at(piece.at("shard").get<std::string>());
        }
        adopted = shard->Adopt(piece.at("tensor").get<size_t>(), piece.at("offset").get<uint64_t>(),
                               piece.at("length").get<uint64_t>(), piece.at("whole").get<bool>());
      }
      if (!adopted.ok()) return false;
    }
  } catch (const json::exception&) {
    return false;
  }
  return true;
}

void Journal::Attach(orbax::CheckpointWriter& writer) {
  writer_ = &writer;
  item_relative_ = writer.item_dir().lexically_relative(staging_);
  writer.set_chunk_observer([this](const orbax::CheckpointWriter::WrittenChunk& chunk) {
    if (!t_pieces) return;
    json piece = {{"kind", "chunk"},
                  {"array", chunk.array},
                  {"index", chunk.index},
                  {"key", chunk.key},
                  {"ocdbt", chunk.entry != nullptr},
                  {"length", chunk.value.size()},
                  {"crc32c", Crc(chunk.value)}};
    if (!chunk.entry) {
      piece["file"] = (item_relative_ / std::string(chunk.key)).generic_string();
    } else if (!chunk.entry->out_of_line) {
      piece["value"] = HexBytes(chunk.value);
    } else {
      const std::string data_file = chunk.entry->ref.file.FullPath();
      piece["data_file"] = data_file;
      piece["file"] = (item_relative_ / data_file).generic_string();
      piece["offset"] = chunk.entry->ref.offset;
    }
    t_pieces->push_back(std::move(piece));
  });
}

Result<std::unique_ptr<safetensors::ShardWriter>> Journal::OpenShard(
    const fs::path& dir, const safetensors::PlannedShard& shard) {
  CKB_ASSIGN_OR_RETURN(std::unique_ptr<safetensors::ShardWriter> writer,
                       resumed_ ? safetensors::ShardWriter::Reopen(dir, shard)
                                : safetensors::ShardWriter::Create(dir, shard));
  safetensors::ShardWriter* raw = writer.get();
  const std::string file = (dir / shard.file_name).lexically_relative(staging_).generic_string();
  raw->set_observer([raw, file](const safetensors::ShardWriter::Written& written) {
    if (!t_pieces) return;
    const safetensors::PlannedShard& planned = raw->shard();
    t_pieces->push_back({{"kind", "tensor"},
                         {"shard", planned.file_name},
                         {"file", file},
                         {"tensor", written.tensor_index},
                         {"name", planned.tensors[written.tensor_index].spec.name},
                         {"offset", written.offset},
                         {"file_offset", written.file_offset},
                         {"length", written.bytes.size()},
                         {"whole", written.whole},
                         {"crc32c", Crc(written.bytes)}});
  });
  std::lock_guard<std::mutex> lock(mutex_);
  shards_[shard.file_name] = raw;
  return writer;
}

void Journal::Install(ExecuteOptions& options) {
  if (resumed_) options.skip = [this](size_t unit) { return Skip(unit); };
  options.wrap = [this](size_t unit, const std::function<Status()>& body) {
    return Run(unit, body);
  };
  options.open_shard = [this](const fs::path& dir, const safetensors::PlannedShard& shard) {
    return OpenShard(dir, shard);
  };
}

Result<json> Journal::FingerprintFiles(const fs::path& root,
                                       const std::vector<std::string>& names) {
  std::vector<fs::path> files;
  std::error_code ec;
  if (names.empty()) {
    for (auto it = fs::recursive_directory_iterator(root, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_regular_file(ec)) files.push_back(it->path());
    }
    if (ec) return ErrnoError(root.string(), ec.value());
  } else {
    for (const std::string& name : names) files.push_back(root / name);
  }
  json out = json::object();
  for (const fs::path& file : files) {
    const uint64_t size = fs::file_size(file, ec);
    if (ec) return ErrnoError(file.string(), ec.value());
    const auto mtime = fs::last_write_time(file, ec);
    if (ec) return ErrnoError(file.string(), ec.value());
    const auto nanos =
        std::chrono::duration_cast<std::chrono::nanoseconds>(mtime.time_since_epoch()).count();
    out[file.lexically_relative(root).generic_string()] =
        std::to_string(size) + " bytes, mtime " + std::to_string(nanos);
  }
  return out;
}

json Journal::FingerprintPlan(const Plan& plan) {
  json maxtext = json::object(), hf = json::object();
  for (const MtTensor& t : plan.mt_tensors) {
    std::string text = std::string(SafetensorsName(t.dtype)) + " " + ShapeString(t.shape);
    if (plan.direction == Direction::kToMaxText) text += " chunks " + ShapeString(t.chunk_shape);
    maxtext[t.name] = text;
  }
  for (const HfTensor& t : plan.hf_tensors) {
    hf[t.name] = std::string(SafetensorsName(t.dtype)) + " " + ShapeString(t.shape);
  }
  Crc32c digest;
  for (const Unit& unit : plan.units) {
    std::string text = std::to_string(unit.rule) + ":" + ShapeString(unit.slice) + ":";
    for (size_t t : unit.hf_tensors) text += std::to_string(t) + ",";
    text += ";";
    digest.Update(text.data(), text.size());
  }
  return {{"maxtext_tensors", maxtext},
          {"hf_tensors", hf},
          {"units", {{"count", plan.units.size()}, {"digest", Hex8(digest.value())}}}};
}

}  // namespace ckptbridge::engine
